//! `litemaas-doctor --namespace` end to end, as a process, against the test Kubernetes API
//! server (its StatefulSet, storage and snapshot controllers, RBAC tokens and
//! SelfSubjectAccessReview), a real PostgreSQL 15 behind the "pod" (for the pg_dump line),
//! and a local --dest (for the store lines), with kubectl as a witness that each printed fix
//! works: a healthy namespace passes every line; each prerequisite removed in turn fails its
//! own line, with a fix, and no other line fails; an unreachable cluster is one failing line.
#![allow(clippy::unwrap_used)]

use std::process::Output;
use std::time::Duration;

use litemaas_testapi::{ControllerConfig, Identity, Rule, SnapshotBehavior, TestApiServer};
use litemaas_testkit::PgCluster;
use serde_json::{Value, json};

const NS: &str = "litemaas";
const STS: &str = "litellm-postgres";
const POD: &str = "litellm-postgres-0";
const CLAIM: &str = "postgres-storage-litellm-postgres-0";
const RBD: &str = "openshift-storage.rbd.csi.ceph.com";
const SA: &str = "system:serviceaccount:litemaas:litemaas-backup";

/// What the fixture leaves out or changes.
#[derive(Default, Clone, Copy)]
struct Setup {
    no_statefulset: bool,
    pod_pending: bool,
    no_secret: bool,
    secret_without: Option<&'static str>,
    in_tree_class: bool,
    no_snapshot_class: bool,
}

struct Cluster {
    api: TestApiServer,
    dir: tempfile::TempDir,
    kubeconfig: std::path::PathBuf,
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..400 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("not reached in 10 s: {what}");
}

/// A LiteMaaS namespace as the original deployment makes it: StorageClass `rbd` (a CSI
/// driver) and its default VolumeSnapshotClass, the StatefulSet (whose controller makes the
/// Bound claim and the pod), the Secret, and routes with their timeouts.
async fn cluster(setup: Setup) -> Cluster {
    let pg = PgCluster::shared();
    let api = TestApiServer::start_with(ControllerConfig {
        snapshots: SnapshotBehavior::ReadyAfter(Duration::from_millis(50)),
        pod_startup: if setup.pod_pending {
            Duration::from_secs(3600)
        } else {
            Duration::from_millis(20)
        },
        ..ControllerConfig::default()
    })
    .await
    .unwrap();
    api.create_namespace(NS).unwrap();
    let provisioner = if setup.in_tree_class {
        litemaas_testapi::IN_TREE_PROVISIONER
    } else {
        RBD
    };
    api.create(
        "storage.k8s.io",
        "storageclasses",
        "",
        json!({"metadata": {"name": "rbd"},
        "provisioner": provisioner, "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate"}),
    )
    .unwrap();
    if !setup.no_snapshot_class {
        api.create("snapshot.storage.k8s.io", "volumesnapshotclasses", "",
            json!({"metadata": {"name": "rbd-snapclass", "annotations": {"snapshot.storage.kubernetes.io/is-default-class": "true"}},
                   "driver": RBD, "deletionPolicy": "Delete"})).unwrap();
    }
    // The pod's commands reach the test PostgreSQL.
    let path = format!(
        "{}:{}",
        pg.bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    api.set_exec_env(
        NS,
        POD,
        vec![
            ("PGHOST".into(), "127.0.0.1".into()),
            ("PGPORT".into(), pg.port().to_string()),
            ("PATH".into(), path),
        ],
    );
    api.create("apps", "statefulsets", NS, json!({"metadata": {"name": STS},
        "spec": {"replicas": 1, "serviceName": STS,
            "selector": {"matchLabels": {"app": "litellm-postgres"}},
            "template": {"metadata": {"labels": {"app": "litellm-postgres"}},
                         "spec": {"containers": [{"name": "postgres", "image": "postgres:15"}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "postgres-storage", "labels": {"app": "litellm-postgres"}},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "rbd",
                         "resources": {"requests": {"storage": "10Gi"}}}}]}})).unwrap();
    let claim_bound = || {
        api.get("", "persistentvolumeclaims", NS, CLAIM)
            .is_ok_and(|c| c["status"]["phase"] == json!("Bound"))
    };
    eventually("the claim is Bound", claim_bound).await;
    if setup.pod_pending {
        eventually("the pod exists", || api.get("", "pods", NS, POD).is_ok()).await;
    } else {
        eventually("the pod is Running", || {
            api.get("", "pods", NS, POD)
                .is_ok_and(|p| p["status"]["phase"] == json!("Running"))
        })
        .await;
    }
    if setup.no_statefulset {
        // As `oc delete statefulset --cascade=orphan`: the pod and claim stay.
        api.delete("apps", "statefulsets", NS, STS).unwrap();
    }
    if !setup.no_secret {
        let mut data = serde_json::Map::new();
        for (k, v) in [
            ("username", "postgres"),
            ("password", pg.password()),
            ("database", "postgres"),
        ] {
            if setup.secret_without != Some(k) {
                data.insert(k.into(), json!(b64(v.as_bytes())));
            }
        }
        api.create(
            "",
            "secrets",
            NS,
            json!({"metadata": {"name": "litemaas-db"}, "data": data}),
        )
        .unwrap();
    }
    for (name, timeout) in [("litellm", "600s"), ("litemaas-frontend", "10m")] {
        api.create("route.openshift.io", "routes", NS, json!({"metadata": {"name": name,
            "annotations": {"haproxy.router.openshift.io/timeout": timeout}},
            "spec": {"host": format!("{name}.apps.example.com"), "to": {"kind": "Service", "name": name}}}))
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.kubeconfig_path();
    Cluster {
        api,
        dir,
        kubeconfig,
    }
}

fn b64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl Cluster {
    /// A token with every access the doctor, the backup and the restore use (cluster-wide, as
    /// a ClusterRoleBinding), except `verb` on `resource` (`pods/exec`), and a kubeconfig for it.
    fn restrict(&mut self, resource: &str, verb: &str) {
        const VERBS: [&str; 7] = [
            "get", "list", "watch", "create", "update", "patch", "delete",
        ];
        let all: &[(&str, &[&str])] = &[
            (
                "",
                &[
                    "namespaces",
                    "pods",
                    "pods/exec",
                    "secrets",
                    "persistentvolumeclaims",
                    "persistentvolumes",
                ],
            ),
            ("apps", &["statefulsets", "statefulsets/scale"]),
            ("coordination.k8s.io", &["leases"]),
            (
                "snapshot.storage.k8s.io",
                &["volumesnapshots", "volumesnapshotclasses"],
            ),
            ("storage.k8s.io", &["storageclasses"]),
            ("route.openshift.io", &["routes"]),
        ];
        let mut rules = Vec::new();
        for (group, resources) in all {
            for r in *resources {
                let verbs: Vec<String> = VERBS
                    .iter()
                    .filter(|v| !(*r == resource && **v == verb))
                    .map(|v| (*v).to_owned())
                    .collect();
                rules.push(Rule {
                    api_groups: vec![(*group).to_owned()],
                    resources: vec![(*r).to_owned()],
                    verbs,
                    resource_names: vec![],
                });
            }
        }
        self.api.add_token(
            "backup-token",
            Identity {
                user: SA.into(),
                namespace: None,
                rules,
            },
        );
        self.kubeconfig = self.dir.path().join("kubeconfig-backup");
        self.api
            .write_kubeconfig(&self.kubeconfig, "backup-token", NS)
            .unwrap();
    }

    async fn doctor(&self, args: &[&str]) -> Output {
        self.doctor_in(NS, args).await
    }

    async fn doctor_in(&self, namespace: &str, args: &[&str]) -> Output {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_litemaas-doctor"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("KUBECONFIG", &self.kubeconfig)
            .args(["--namespace", namespace, "--dest"])
            .arg(self.dir.path().join("backups"))
            .args(args)
            .output()
            .await
            .unwrap()
    }

    async fn report(&self, args: &[&str]) -> (Value, Output) {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.doctor(&all).await;
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (report, out)
    }

    /// Runs a printed fix with kubectl in place of oc, as the administrator. The test server
    /// has no OpenAPI document (so `apply` runs without validation) and reads no protobuf, which
    /// kubectl sends when it creates RBAC objects: those run with `--dry-run=client`, which
    /// still resolves each resource through discovery.
    fn run_fix(&self, fix: &str) {
        let command = fix
            .replace("oc ", "kubectl ")
            .replace("kubectl apply", "kubectl apply --validate=false");
        let command = if command.contains(" create role") || command.contains(" create clusterrole")
        {
            command
                .split(" && ")
                .map(|part| format!("{part} --dry-run=client -o name"))
                .collect::<Vec<_>>()
                .join(" && ")
        } else {
            command
        };
        let out = std::process::Command::new("sh")
            .args(["-c", &command])
            .env("KUBECONFIG", self.api.kubeconfig_path())
            .env("HOME", self.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn checks(report: &Value) -> &Vec<Value> {
    report["checks"].as_array().unwrap()
}

fn with(report: &Value, outcome: &str) -> Vec<String> {
    checks(report)
        .iter()
        .filter(|c| c["outcome"] == json!(outcome))
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

fn check<'a>(report: &'a Value, id: &str) -> &'a Value {
    checks(report)
        .iter()
        .find(|c| c["id"] == json!(id))
        .unwrap_or_else(|| panic!("no check {id}: {report:#}"))
}

/// Exactly `id` failed, with a fix; exit status 1; returns the fix.
fn only_failure(report: &Value, out: &Output, id: &str) -> String {
    assert_eq!(with(report, "fail"), vec![id.to_owned()], "{report:#}");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(report["ok"], json!(false));
    let fix = check(report, id)["fix"].as_str().unwrap().to_owned();
    assert!(!fix.is_empty());
    fix
}

const CLUSTER_IDS: [&str; 10] = [
    "cluster",
    "identity",
    "namespace",
    "statefulset",
    "pod",
    "secret",
    "secret.keys",
    "pvc",
    "pvc.csi",
    "snapshotclass",
];

#[tokio::test(flavor = "multi_thread")]
async fn a_healthy_namespace_passes_every_line_in_order_and_changes_nothing() {
    let c = cluster(Setup::default()).await;
    // The simulated controllers' last status updates land first.
    let mut before = c.api.event_log().len();
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = c.api.event_log().len();
        if now == before {
            break;
        }
        before = now;
    }
    let (report, out) = c.report(&[]).await;
    assert!(out.status.success(), "{report:#}");
    assert_eq!(report["ok"], json!(true));
    assert!(with(&report, "fail").is_empty() && with(&report, "skipped").is_empty());
    let ids: Vec<&str> = checks(&report)
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    // In the order: cluster lines, RBAC, the store, pg_dump, routes.
    assert_eq!(&ids[..CLUSTER_IDS.len()], &CLUSTER_IDS);
    let at = |id: &str| ids.iter().position(|i| *i == id).unwrap();
    assert!(at("snapshotclass") < at("rbac.pods/exec.get"));
    assert!(at("rbac.volumesnapshotclasses.list") < at("local.directory"));
    assert!(at("local.probe") < at("postgres.pg_dump"));
    assert!(at("postgres.pg_dump") < at("route.litellm"));
    assert_eq!(ids.last(), Some(&"route.litemaas-frontend"));
    assert_eq!(
        check(&report, "route.litemaas-frontend")["detail"],
        json!("haproxy.router.openshift.io/timeout: 10m (the router uses 600s)")
    );
    assert!(
        check(&report, "identity")["detail"]
            .as_str()
            .unwrap()
            .contains(litemaas_testapi::ADMIN_USER)
    );
    assert!(
        check(&report, "pvc.csi")["detail"]
            .as_str()
            .unwrap()
            .contains(RBD)
    );
    assert_eq!(report["summary"]["passed"], json!(ids.len()));
    // Nothing in the cluster changed (reviews are not stored), as the server's log and kubectl say.
    assert_eq!(c.api.event_log().len(), before);
    let roles = c
        .api
        .kubectl()
        .args(["get", "volumesnapshots,leases", "-n", NS, "-o", "name"])
        .output()
        .unwrap();
    assert!(roles.status.success());
    assert!(String::from_utf8_lossy(&roles.stdout).trim().is_empty());
    // No Secret value appears.
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains(PgCluster::shared().password()));

    // The text report: one line per check, the summary last.
    let out = c.doctor(&[]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().next().unwrap().starts_with("PASS [cluster] "),
        "{text}"
    );
    assert!(
        text.trim_end()
            .ends_with(&format!("{} passed, 0 failed, 0 skipped", ids.len()))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_namespace_fails_its_line_and_skips_what_is_inside_it() {
    let c = cluster(Setup::default()).await;
    let out = c.doctor_in("litemaas-typo", &["--json"]).await;
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let fix = only_failure(&report, &out, "namespace");
    assert!(fix.contains("oc new-project litemaas-typo"), "{fix}");
    for id in [
        "statefulset",
        "pod",
        "rbac.pods/exec.get",
        "postgres.pg_dump",
        "routes",
    ] {
        assert_eq!(check(&report, id)["outcome"], json!("skipped"), "{id}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_statefulset_fails_only_its_line() {
    let c = cluster(Setup {
        no_statefulset: true,
        ..Setup::default()
    })
    .await;
    let (report, out) = c.report(&[]).await;
    let fix = only_failure(&report, &out, "statefulset");
    assert!(fix.contains("--statefulset"), "{fix}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_that_is_not_running_fails_only_its_line() {
    let c = cluster(Setup {
        pod_pending: true,
        ..Setup::default()
    })
    .await;
    let (report, out) = c.report(&[]).await;
    let fix = only_failure(&report, &out, "pod");
    assert!(
        fix.contains(&format!("oc -n {NS} describe pod {POD}")),
        "{fix}"
    );
    assert!(
        check(&report, "pod")["detail"]
            .as_str()
            .unwrap()
            .contains("Pending")
    );
    assert_eq!(
        check(&report, "postgres.pg_dump")["outcome"],
        json!("skipped")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_secret_fails_its_line_and_its_keys_are_skipped() {
    let c = cluster(Setup {
        no_secret: true,
        ..Setup::default()
    })
    .await;
    let (report, out) = c.report(&[]).await;
    let fix = only_failure(&report, &out, "secret");
    assert!(fix.contains("create secret generic litemaas-db"), "{fix}");
    assert!(
        fix.contains("--from-file=password="),
        "the password stays off command lines: {fix}"
    );
    assert_eq!(check(&report, "secret.keys")["outcome"], json!("skipped"));
    assert_eq!(
        check(&report, "postgres.pg_dump")["outcome"],
        json!("skipped")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_missing_a_key_fails_only_the_keys_line_naming_the_key() {
    let c = cluster(Setup {
        secret_without: Some("password"),
        ..Setup::default()
    })
    .await;
    let (report, out) = c.report(&[]).await;
    let fix = only_failure(&report, &out, "secret.keys");
    assert!(
        check(&report, "secret.keys")["detail"]
            .as_str()
            .unwrap()
            .contains("\"password\"")
    );
    assert!(
        fix.contains(&format!(
            "oc -n {NS} set data secret/litemaas-db --from-file=password="
        )),
        "{fix}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_claim_without_the_label_fails_only_its_line_and_the_printed_fix_repairs_it() {
    let c = cluster(Setup::default()).await;
    let out = c
        .api
        .kubectl()
        .args(["label", "pvc", CLAIM, "-n", NS, "app-"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (report, out) = c.report(&[]).await;
    let fix = only_failure(&report, &out, "pvc");
    for id in ["pvc.csi", "snapshotclass"] {
        assert_eq!(check(&report, id)["outcome"], json!("skipped"));
    }
    // The fix names the claim and the label; run as printed (up to its first comment), it works.
    let command = fix
        .strip_prefix("label the database claim: ")
        .and_then(|f| f.split(" (").next())
        .unwrap();
    c.run_fix(command);
    let (report, out) = c.report(&[]).await;
    assert!(out.status.success(), "{report:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_claim_of_an_in_tree_class_fails_only_the_csi_line() {
    let c = cluster(Setup {
        in_tree_class: true,
        ..Setup::default()
    })
    .await;
    let (report, out) = c.report(&[]).await;
    let fix = only_failure(&report, &out, "pvc.csi");
    assert!(
        fix.contains("CSI StorageClass") && fix.contains("--no-snapshot"),
        "{fix}"
    );
    assert_eq!(check(&report, "snapshotclass")["outcome"], json!("skipped"));
}

#[tokio::test(flavor = "multi_thread")]
async fn no_snapshot_class_for_the_driver_fails_only_its_line_and_the_printed_fix_repairs_it() {
    let c = cluster(Setup {
        no_snapshot_class: true,
        ..Setup::default()
    })
    .await;
    let (report, out) = c.report(&[]).await;
    let fix = only_failure(&report, &out, "snapshotclass");
    assert!(fix.contains(RBD), "{fix}");
    c.run_fix(&fix);
    let (report, out) = c.report(&[]).await;
    assert!(out.status.success(), "{report:#}");
    // A class for the driver that is not the default: the fix annotates it.
    c.run_fix("kubectl annotate volumesnapshotclass openshift-storage-snapclass snapshot.storage.kubernetes.io/is-default-class- ");
    let (report, out) = c.report(&[]).await;
    let fix = only_failure(&report, &out, "snapshotclass");
    let command = fix.split(" (").next().unwrap();
    assert!(
        command.starts_with("oc annotate volumesnapshotclass"),
        "{fix}"
    );
    c.run_fix(command);
    let (_, out) = c.report(&[]).await;
    assert!(out.status.success());
}

/// With a token lacking exactly `verb` on `resource`: only its RBAC line fails, naming the
/// service account in a fix kubectl accepts.
async fn missing_access_fails_only_its_line(resource: &str, verb: &str) -> Value {
    let mut c = cluster(Setup::default()).await;
    c.restrict(resource, verb);
    let (report, out) = c.report(&[]).await;
    let id = format!("rbac.{resource}.{verb}");
    let fix = only_failure(&report, &out, &id);
    assert!(
        fix.contains("--serviceaccount=litemaas:litemaas-backup"),
        "{fix}"
    );
    assert!(
        check(&report, "identity")["detail"]
            .as_str()
            .unwrap()
            .contains(SA)
    );
    // The grant as printed is accepted by kubectl (Role and RoleBinding are created).
    c.run_fix(&fix);
    report
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_missing_get_on_pods_exec_fails_that_line() {
    let report = missing_access_fails_only_its_line("pods/exec", "get").await;
    // The in-pod pg_dump check cannot exec: skipped, not a second failure.
    assert_eq!(
        check(&report, "postgres.pg_dump")["outcome"],
        json!("skipped")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_missing_create_on_pods_exec_fails_that_line() {
    missing_access_fails_only_its_line("pods/exec", "create").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_missing_delete_on_volumesnapshots_fails_that_line() {
    missing_access_fails_only_its_line("volumesnapshots", "delete").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_missing_update_on_leases_fails_that_line() {
    missing_access_fails_only_its_line("leases", "update").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_missing_patch_on_persistentvolumes_fails_that_cluster_wide_line() {
    let report = missing_access_fails_only_its_line("persistentvolumes", "patch").await;
    let fix = check(&report, "rbac.persistentvolumes.patch")["fix"]
        .as_str()
        .unwrap();
    assert!(fix.contains("create clusterrole"), "{fix}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_route_without_the_timeout_fails_only_its_line_and_the_printed_fix_repairs_it() {
    let c = cluster(Setup::default()).await;
    c.api
        .create(
            "route.openshift.io",
            "routes",
            NS,
            json!({"metadata": {"name": "litellm-mcp"},
            "spec": {"host": "mcp.apps.example.com", "to": {"kind": "Service", "name": "mcp"}}}),
        )
        .unwrap();
    let (report, out) = c.report(&[]).await;
    let fix = only_failure(&report, &out, "route.litellm-mcp");
    let command = fix.split(" (").next().unwrap();
    assert!(
        command.ends_with("haproxy.router.openshift.io/timeout=600s"),
        "{fix}"
    );
    c.run_fix(command);
    let (report, out) = c.report(&[]).await;
    assert!(out.status.success(), "{report:#}");
    // An override of the policy for that route is honoured.
    let (report, out) = c.report(&["--route-timeout", "litellm-mcp=20m"]).await;
    only_failure(&report, &out, "route.litellm-mcp");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_cluster_is_one_failing_line_and_the_rest_is_skipped() {
    let c = cluster(Setup::default()).await;
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let kubeconfig = c.dir.path().join("kubeconfig-nowhere");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: gone\n  cluster:\n    server: http://127.0.0.1:{port}\n\
             contexts:\n- name: gone\n  context:\n    cluster: gone\n    user: u\ncurrent-context: gone\n\
             users:\n- name: u\n  user:\n    token: t\n"
        ),
    )
    .unwrap();
    let c = Cluster { kubeconfig, ..c };
    let (report, out) = c.report(&[]).await;
    let fix = only_failure(&report, &out, "cluster");
    assert!(fix.contains("oc login"), "{fix}");
    assert!(
        check(&report, "cluster")["detail"]
            .as_str()
            .unwrap()
            .contains("refused"),
        "the cause is named: {report:#}"
    );
    let skipped = with(&report, "skipped");
    for id in CLUSTER_IDS.iter().skip(1) {
        assert!(skipped.contains(&(*id).to_owned()), "{id} not skipped");
    }
    assert!(skipped.contains(&"rbac.leases.update".to_owned()));
    assert!(skipped.contains(&"postgres.pg_dump".to_owned()));
    assert!(skipped.contains(&"routes".to_owned()));
    // The local store lines do not depend on the cluster.
    assert_eq!(check(&report, "local.probe")["outcome"], json!("pass"));
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_credentials_fail_the_identity_line_and_skip_the_rest() {
    let mut c = cluster(Setup::default()).await;
    // A token the API server does not know (expired, or from another cluster).
    c.kubeconfig = c.dir.path().join("kubeconfig-expired");
    c.api
        .write_kubeconfig(&c.kubeconfig, "sha256~expired", NS)
        .unwrap();
    let (report, out) = c.report(&[]).await;
    let fix = only_failure(&report, &out, "identity");
    assert!(fix.contains("oc login --server=http://127.0.0.1:"), "{fix}");
    assert!(
        !out.stdout.windows(14).any(|w| w == b"sha256~expired"),
        "no token in the report"
    );
    assert_eq!(check(&report, "cluster")["outcome"], json!("pass"));
    for id in [
        "namespace",
        "pod",
        "rbac.pods/exec.get",
        "postgres.pg_dump",
        "routes",
    ] {
        assert_eq!(check(&report, id)["outcome"], json!("skipped"), "{id}");
    }
}

/// The doctor with a clean environment and no kubeconfig at all.
fn bare_doctor(home: &std::path::Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_litemaas-doctor"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("KUBECONFIG", home.join("no-such-kubeconfig"));
    cmd
}

#[test]
fn iam_policy_prints_the_policy_and_trust_as_json_and_checks_nothing() {
    let home = tempfile::tempdir().unwrap();
    let out = bare_doctor(home.path())
        .args(["--iam-policy", "maas-db-backup", "--namespace", NS])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = doc["policy"].to_string();
    for action in ["s3:AbortMultipartUpload", "s3:ListBucketMultipartUploads"] {
        assert!(text.contains(action), "{action} missing: {text}");
    }
    assert!(
        text.contains("arn:aws:s3:::maas-db-backup/litemaas-backups/*"),
        "{text}"
    );
    assert!(doc["trust"].to_string().contains("ec2.amazonaws.com"));
    // No check ran: no cluster line, although --namespace names one and no cluster exists.
    assert!(!String::from_utf8_lossy(&out.stdout).contains("\"cluster\""));
}

#[test]
fn without_a_namespace_only_the_local_checks_run() {
    let pg = PgCluster::shared();
    let home = tempfile::tempdir().unwrap();
    let out = bare_doctor(home.path())
        .env("LITEMAAS_DATABASE_URL", pg.url("postgres"))
        .arg("--pg-dump")
        .arg(pg.bin_dir().join("pg_dump"))
        .arg("--dest")
        .arg(home.path().join("backups"))
        .arg("--json")
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "{report:#}");
    let ids: Vec<&str> = checks(&report)
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.last(), Some(&"postgres.pg_dump"), "{ids:?}");
    assert!(
        !ids.iter()
            .any(|i| CLUSTER_IDS.contains(i) || i.starts_with("rbac.")),
        "{ids:?}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains(pg.password()));
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_the_doctor_may_not_list_fail_that_line_with_the_grant() {
    let mut c = cluster(Setup::default()).await;
    c.restrict("routes", "list");
    let (report, out) = c.report(&[]).await;
    let fix = only_failure(&report, &out, "routes");
    assert!(
        fix.contains("--resource=routes.route.openshift.io"),
        "{fix}"
    );
    c.run_fix(&fix.replace("\"$(oc whoami)\"", "someone"));
}
