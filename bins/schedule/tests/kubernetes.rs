//! `litemaas-schedule kubernetes` end to end: the rendered objects go to the test Kubernetes API
//! server (kubectl as a witness, and `--apply`), and the CronJob's container — its command and
//! its environment, the S3 keys resolved from the Secret as the kubelet would — runs
//! `litemaas-backup` with the token of the ServiceAccount, holding only what the applied Role
//! grants through the RoleBinding, against a real PostgreSQL 15 behind a "pod" and the S3 test
//! server.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use litemaas_backup::store::{ObjectStore, S3Store};
use litemaas_testapi::{ControllerConfig, SnapshotBehavior, TestApiServer};
use litemaas_testkit::{PgCluster, S3Server, Webhook};
use serde_json::{Value, json};

const NS: &str = "litemaas";
const RBAC: &str = "rbac.authorization.k8s.io";
const NAME: &str = "litemaas-backup";
const IMAGE: &str = "registry.example.com/litemaas/litemaas-backup:0.1.0";

/// The litemaas-backup binary (it belongs to another package of the workspace).
///
/// `cargo test --workspace` (the test script) has built it beside this test's binary, with the
/// workspace's features. Only when it is missing (this package tested alone) is it built here:
/// `cargo build -p litemaas-backup-cli` on its own resolves other features and rebuilds much
/// of the dependency graph (minutes), so it must not run when the binary is there.
fn backup_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // target/debug/deps/kubernetes-<hash> → target/debug/litemaas-backup
        let exe = std::env::current_exe().unwrap();
        let bin = exe
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .join("litemaas-backup");
        if !bin.exists() {
            let status = Command::new(env!("CARGO"))
                .args([
                    "build",
                    "-q",
                    "-p",
                    "litemaas-backup-cli",
                    "--bin",
                    "litemaas-backup",
                ])
                .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
                .status()
                .unwrap();
            assert!(status.success(), "cargo build litemaas-backup failed");
        }
        bin
    })
    .clone()
}

struct Cluster {
    api: TestApiServer,
    store: S3Store,
    home: tempfile::TempDir,
}

async fn cluster(name: &str, namespaces: &[&str]) -> Cluster {
    let pg = PgCluster::shared();
    let db = pg.create_database(&name.replace('-', "_")).unwrap();
    pg.seed_sample(&db).unwrap();
    let api = TestApiServer::start_with(ControllerConfig {
        snapshots: SnapshotBehavior::ReadyAfter(Duration::from_millis(200)),
        ..ControllerConfig::default()
    })
    .await
    .unwrap();
    let s3 = S3Server::shared();
    let (key_id, secret_key) = s3.credentials();
    for ns in namespaces {
        api.create(
            "",
            "namespaces",
            "",
            json!({"metadata": {"name": ns, "labels": {"app": "litemaas"}}}),
        )
        .unwrap();
        api.create("", "secrets", ns, json!({"metadata": {"name": "litemaas-db"}, "stringData": {},
            "data": {"username": b64("postgres"), "password": b64(pg.password()), "database": b64(&db)}}))
            .unwrap();
        api.create(
            "",
            "secrets",
            ns,
            json!({"metadata": {"name": "litemaas-s3"},
            "data": {"AWS_ACCESS_KEY_ID": b64(key_id), "AWS_SECRET_ACCESS_KEY": b64(secret_key)}}),
        )
        .unwrap();
        api.create("", "pods", ns, json!({"metadata": {"name": "litellm-postgres-0", "labels": {"app": "litellm-postgres"}},
            "spec": {"containers": [{"name": "postgres"}]}, "status": {"phase": "Running"}}))
            .unwrap();
        let path = format!(
            "{}:{}",
            pg.bin_dir().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        api.set_exec_env(
            ns,
            "litellm-postgres-0",
            vec![
                ("PGHOST".into(), "127.0.0.1".into()),
                ("PGPORT".into(), pg.port().to_string()),
                ("PATH".into(), path),
            ],
        );
        api.create("", "persistentvolumeclaims", ns, json!({"metadata": {"name": "postgres-storage-litellm-postgres-0",
            "labels": {"app": "litellm-postgres"}}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}}}))
            .unwrap();
    }
    // Not ours: must be left alone.
    api.create_namespace("unrelated").unwrap();
    let store = S3Store::new(s3.client(), s3.new_bucket(name).await.unwrap());
    Cluster {
        api,
        store,
        home: tempfile::tempdir().unwrap(),
    }
}

fn b64(s: &str) -> String {
    // The API stores Secret data base64-encoded; k8s-openapi's ByteString does the encoding.
    let v = serde_json::to_value(k8s_openapi::ByteString(s.as_bytes().to_vec())).unwrap();
    v.as_str().unwrap().to_owned()
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

impl Cluster {
    /// `litemaas-schedule kubernetes` with the flags every test gives, then `extra`.
    fn schedule(&self, extra: &[&str]) -> Output {
        let s3 = S3Server::shared();
        Command::new(env!("CARGO_BIN_EXE_litemaas-schedule"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("KUBECONFIG", self.api.kubeconfig_path())
            .args([
                "kubernetes",
                "--image",
                IMAGE,
                "--bucket",
                self.store.bucket(),
            ])
            .args(["--endpoint-url", s3.endpoint(), "--region", "us-east-1"])
            .args(["--s3-secret", "litemaas-s3"])
            .args(extra)
            .output()
            .unwrap()
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        self.api.kubectl().args(args).output().unwrap()
    }

    /// Runs the applied CronJob's container once, as its ServiceAccount: its command (the
    /// binary built here), its environment with each secretKeyRef resolved from the Secret
    /// as the kubelet does, and a kubeconfig holding the ServiceAccount's token in place of
    /// the in-cluster one.
    async fn run_cron_job(&self, ns: &str) -> Output {
        let cron = self.api.get("batch", "cronjobs", ns, NAME).unwrap();
        let pod = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"];
        let sa = pod["serviceAccountName"].as_str().unwrap();
        let token = self.api.service_account_token(ns, sa).unwrap();
        let kubeconfig = self.home.path().join(format!("kubeconfig-{token}"));
        self.api.write_kubeconfig(&kubeconfig, &token, ns).unwrap();
        let container = &pod["containers"][0];
        let command: Vec<&str> = container["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(command[0], "litemaas-backup");
        let mut cmd = tokio::process::Command::new(backup_bin());
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("KUBECONFIG", &kubeconfig)
            // The pod has no AWS configuration files and no instance metadata.
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("LITEMAAS_SNAPSHOT_TIMEOUT", "10s")
            .args(&command[1..]);
        for var in container["env"].as_array().unwrap() {
            let name = var["name"].as_str().unwrap();
            if let Some(value) = var["value"].as_str() {
                let value = if name == "HOME" || name == "TMPDIR" {
                    self.home.path().to_str().unwrap()
                } else {
                    value
                };
                cmd.env(name, value);
            } else {
                let r = &var["valueFrom"]["secretKeyRef"];
                let secret = self
                    .api
                    .get("", "secrets", ns, r["name"].as_str().unwrap())
                    .unwrap();
                match secret["data"][r["key"].as_str().unwrap()].as_str() {
                    Some(encoded) => {
                        let bytes: k8s_openapi::ByteString =
                            serde_json::from_value(json!(encoded)).unwrap();
                        cmd.env(name, String::from_utf8(bytes.0).unwrap());
                    }
                    None => assert_eq!(r["optional"], json!(true), "{name} is missing"),
                }
            }
        }
        cmd.output().await.unwrap()
    }

    async fn keys(&self) -> Vec<String> {
        self.store
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect()
    }

    fn snapshots(&self, ns: &str) -> Vec<Value> {
        let out = self.kubectl(&["get", "volumesnapshots", "-n", ns, "-o", "json"]);
        assert!(out.status.success(), "{}", text(&out));
        let list: Value = serde_json::from_slice(&out.stdout).unwrap();
        list["items"].as_array().unwrap().clone()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_accepts_every_rendered_object_and_the_service_account_backs_up_end_to_end() {
    let c = cluster("schedule-k8s-e2e", &[NS]).await;
    let dir = tempfile::tempdir().unwrap();
    for (format, file) in [("yaml", "objects.yaml"), ("json", "objects.json")] {
        let out = c.schedule(&["--namespace", NS, "--output", format]);
        assert!(out.status.success(), "{}", text(&out));
        let path = dir.path().join(file);
        std::fs::write(&path, &out.stdout).unwrap();
        let rendered = String::from_utf8_lossy(&out.stdout);
        assert!(
            !rendered.contains(S3Server::shared().credentials().1),
            "a secret in the output"
        );
        for dry_run in ["--dry-run=client", "--dry-run=server"] {
            let dry = c.kubectl(&[
                "apply",
                dry_run,
                "--validate=false",
                "-o",
                "name",
                "-f",
                path.to_str().unwrap(),
            ]);
            assert!(dry.status.success(), "{format} {dry_run}: {}", text(&dry));
            let names = String::from_utf8_lossy(&dry.stdout);
            for object in [
                "serviceaccount/litemaas-backup",
                "role.rbac.authorization.k8s.io/litemaas-backup",
                "rolebinding.rbac.authorization.k8s.io/litemaas-backup",
                "cronjob.batch/litemaas-backup",
            ] {
                assert!(
                    names.contains(object),
                    "{format} {dry_run}: {object} missing in {names}"
                );
            }
        }
        assert!(
            c.api.get("batch", "cronjobs", NS, NAME).is_err(),
            "a dry run stored the CronJob"
        );
    }
    // Applied by kubectl, for real.
    let applied = c.kubectl(&[
        "apply",
        "--validate=false",
        "-f",
        dir.path().join("objects.yaml").to_str().unwrap(),
    ]);
    assert!(applied.status.success(), "{}", text(&applied));
    let cron = c.api.get("batch", "cronjobs", NS, NAME).unwrap();
    assert_eq!(cron["spec"]["schedule"], "0 2 1 * *");
    assert_eq!(cron["spec"]["timeZone"], "Etc/UTC");
    assert_eq!(cron["spec"]["concurrencyPolicy"], "Forbid");
    let job = &cron["spec"]["jobTemplate"]["spec"];
    assert_eq!(job["backoffLimit"], 0);
    // The Job outlives the tool's own 6 h deadline, so the tool cleans up.
    assert!(job["activeDeadlineSeconds"].as_i64().unwrap() > 6 * 3600);
    let container = &job["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], IMAGE);
    let security = &container["securityContext"];
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    assert!(
        security.get("runAsUser").is_none(),
        "OpenShift assigns the UID"
    );
    assert_eq!(
        job["template"]["spec"]["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );

    // The CronJob's run, as its ServiceAccount, succeeds: a dump in the bucket, a snapshot.
    let out = c.run_cron_job(NS).await;
    assert!(out.status.success(), "{}", text(&out));
    let keys = c.keys().await;
    assert!(
        keys.iter()
            .any(|k| k.starts_with("litemaas-backups/database-") && k.ends_with(".sql.gz")),
        "{keys:?}"
    );
    assert_eq!(c.snapshots(NS).len(), 1);
    // The Lease was released.
    assert!(
        c.api
            .get("coordination.k8s.io", "leases", NS, "litemaas-backup")
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_notify_secret_reaches_the_run_and_its_token_stays_in_the_secret() {
    let c = cluster("schedule-k8s-notify", &[NS]).await;
    let hook = Webhook::start("/services/T0/B0/notifysecrettoken")
        .await
        .unwrap();
    let apply = [
        "--namespace",
        NS,
        "--apply",
        "--notify-secret",
        "litemaas-notify",
        "--backup-arg=--notify-on=always",
    ];
    // Applied before the Secret exists: refused, naming it, and nothing is created (a run a
    // month later would fail on it).
    let early = c.schedule(&apply);
    assert!(!early.status.success());
    assert!(
        text(&early).contains(
            "--notify-secret litemaas-notify: namespace litemaas has no such Secret (create it with the key(s) LITEMAAS_NOTIFY_URL); nothing was applied"
        ),
        "{}",
        text(&early)
    );
    assert!(c.api.get("batch", "cronjobs", NS, NAME).is_err());
    assert!(c.api.get("", "serviceaccounts", NS, NAME).is_err());
    c.api
        .create(
            "",
            "secrets",
            NS,
            json!({"metadata": {"name": "litemaas-notify"},
                "data": {"LITEMAAS_NOTIFY_URL": b64(hook.url())}}),
        )
        .unwrap();
    let bad = c.schedule(&["--namespace", NS, "--notify-secret", "Notify_URL"]);
    assert!(!bad.status.success());
    assert!(
        text(&bad).contains("--notify-secret \"Notify_URL\""),
        "{}",
        text(&bad)
    );

    let out = c.schedule(&apply);
    assert!(out.status.success(), "{}", text(&out));
    let cron = c.api.get("batch", "cronjobs", NS, NAME).unwrap();
    assert!(
        !cron.to_string().contains("notifysecrettoken"),
        "the token is in the CronJob: {cron}"
    );
    let env = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["env"];
    let notify = env
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "LITEMAAS_NOTIFY_URL")
        .unwrap();
    assert_eq!(
        notify["valueFrom"]["secretKeyRef"],
        json!({"name": "litemaas-notify", "key": "LITEMAAS_NOTIFY_URL"})
    );

    // The run, with the Secret's value as the kubelet gives it, notifies the receiver.
    let out = c.run_cron_job(NS).await;
    assert!(out.status.success(), "{}", text(&out));
    let bodies = hook.bodies();
    assert_eq!(bodies.len(), 1, "{}", text(&out));
    let body: Value = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(body["outcome"], "success", "{body}");
    assert_eq!(body["namespace"], NS, "{body}");
    assert!(!text(&out).contains("notifysecrettoken"), "{}", text(&out));
}

/// The verbs of the applied Role, one (rule index, verb) each.
fn verbs_of(role: &Value) -> Vec<(usize, String, String)> {
    let mut out = Vec::new();
    for (i, rule) in role["rules"].as_array().unwrap().iter().enumerate() {
        let resource = rule["resources"][0].as_str().unwrap().to_owned();
        for verb in rule["verbs"].as_array().unwrap() {
            out.push((i, resource.clone(), verb.as_str().unwrap().to_owned()));
        }
    }
    out
}

/// A free Lease (no holder), so a run reads it and takes it over (get, update) rather than
/// only creating it, and 3 ready snapshots, so retention deletes one: every verb is used.
async fn prepare_run(c: &Cluster) {
    let _ = c
        .api
        .delete("coordination.k8s.io", "leases", NS, "litemaas-backup");
    c.api
        .create(
            "coordination.k8s.io",
            "leases",
            NS,
            json!({"metadata": {"name": "litemaas-backup"}, "spec": {}}),
        )
        .unwrap();
    for _ in 0..100 {
        let snaps = c.snapshots(NS);
        if snaps
            .iter()
            .all(|s| s["status"]["readyToUse"] == json!(true))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every verb of the rendered Role, removed in turn (3 snapshots and a free Lease beforehand,
/// so that retention deletes one and the Lease is read and taken over: every verb is used).
#[tokio::test(flavor = "multi_thread")]
async fn each_verb_removed_from_the_role_makes_the_run_fail_with_a_line_naming_it() {
    let c = cluster("schedule-k8s-verbs", &[NS]).await;
    let out = c.schedule(&["--namespace", NS, "--apply"]);
    assert!(out.status.success(), "{}", text(&out));
    let mut role = c.api.get(RBAC, "roles", NS, NAME).unwrap();
    // Replaced as a whole below, whatever its version.
    role["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    // Three snapshots first, with the whole Role.
    for _ in 0..3 {
        prepare_run(&c).await;
        let out = c.run_cron_job(NS).await;
        assert!(out.status.success(), "{}", text(&out));
        tokio::time::sleep(Duration::from_millis(1100)).await; // names carry the second
    }
    let mut not_needed = Vec::new();
    for (i, resource, verb) in verbs_of(&role) {
        let mut reduced = role.clone();
        let verbs = reduced["rules"][i]["verbs"].as_array_mut().unwrap();
        verbs.retain(|v| v != verb.as_str());
        c.api.replace(RBAC, "roles", NS, NAME, reduced).unwrap();
        prepare_run(&c).await;
        let out = c.run_cron_job(NS).await;
        c.api
            .replace(RBAC, "roles", NS, NAME, role.clone())
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        let named = stderr.lines().any(|l| {
            l.contains(&format!("cannot {verb} resource \"{resource}\"")) && !l.contains("Status {")
        });
        // Releasing the Lease is best effort by design: without `delete` the run succeeds,
        // warns naming the verb, and the Lease expires on its own. Every other verb is needed.
        let best_effort = resource == "leases" && verb == "delete";
        if !named || out.status.success() != best_effort {
            not_needed.push(format!("{verb} {resource}: {}", text(&out)));
        }
    }
    assert!(
        not_needed.is_empty(),
        "runs that did not fail naming the verb:\n{}",
        not_needed.join("\n---\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_apply_changes_nothing_and_namespaces_are_staggered() {
    let c = cluster("schedule-k8s-apply", &["team-a", "team-b", "team-c"]).await;
    let first = c.schedule(&["--namespace-selector", "app=litemaas", "--apply"]);
    assert!(first.status.success(), "{}", text(&first));
    let lines = String::from_utf8_lossy(&first.stdout).into_owned();
    assert_eq!(lines.matches(" created ").count(), 12, "{lines}");
    let log_before = c.api.event_log().len();
    let second = c.schedule(&["--namespace-selector", "app=litemaas", "--apply"]);
    assert!(second.status.success(), "{}", text(&second));
    let lines = String::from_utf8_lossy(&second.stdout).into_owned();
    assert_eq!(lines.matches(" unchanged ").count(), 12, "{lines}");
    assert_eq!(
        c.api.event_log().len(),
        log_before,
        "the second apply wrote something"
    );
    // Sorted by name, 15 minutes apart; the unrelated namespace got nothing.
    for (ns, schedule) in [
        ("team-a", "0 2 1 * *"),
        ("team-b", "15 2 1 * *"),
        ("team-c", "30 2 1 * *"),
    ] {
        let cron = c.api.get("batch", "cronjobs", ns, NAME).unwrap();
        assert_eq!(cron["spec"]["schedule"], schedule, "{ns}");
        let binding = c.api.get(RBAC, "rolebindings", ns, NAME).unwrap();
        assert_eq!(binding["subjects"][0]["namespace"], ns);
    }
    assert!(c.api.get("batch", "cronjobs", "unrelated", NAME).is_err());
    // A change is reported as such.
    let changed = c.schedule(&[
        "--namespace",
        "team-b",
        "--apply",
        "--schedule",
        "0 3 1 * *",
    ]);
    assert!(changed.status.success(), "{}", text(&changed));
    let lines = String::from_utf8_lossy(&changed.stdout).into_owned();
    assert!(
        lines.contains("cronjob.batch/litemaas-backup configured (namespace team-b)"),
        "{lines}"
    );
    assert_eq!(lines.matches(" unchanged ").count(), 3, "{lines}");
}

#[test]
fn bad_input_is_one_line_and_renders_nothing() {
    let bin = env!("CARGO_BIN_EXE_litemaas-schedule");
    for (args, says) in [
        (
            vec![
                "--namespace",
                "a",
                "--schedule",
                "*/5 2 1 * *",
                "--namespace",
                "b",
            ],
            "cannot stagger schedule",
        ),
        (
            vec!["--namespace", "a", "--timeout", "0s"],
            "--timeout must be positive",
        ),
        (
            vec![
                "--namespace",
                "a",
                "--service-account-annotation",
                "novalue",
            ],
            "is not KEY=VALUE",
        ),
        (
            vec!["--namespace", "LiteMaaS"],
            "--namespace \"LiteMaaS\" is not a valid Kubernetes name",
        ),
    ] {
        let out = Command::new(bin)
            .args([
                "kubernetes",
                "--image",
                IMAGE,
                "--bucket",
                "b",
                "--s3-secret",
                "s",
            ])
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(says),
            "{args:?}: {}",
            text(&out)
        );
    }
}

/// No image can be built here (no container engine): the Containerfile is checked instead.
/// Its final stage copies in every binary the CronJob calls (and every binary of the
/// workspace), to a directory on PATH, and runs as a numeric non-root user.
#[test]
fn the_containerfile_ships_every_binary_the_cron_job_calls_and_runs_as_non_root() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let containerfile = std::fs::read_to_string(format!("{root}/Containerfile")).unwrap();
    let last_from = containerfile.rfind("\nFROM ").unwrap();
    let (build, last) = containerfile.split_at(last_from);
    assert!(
        last.contains("FROM registry.access.redhat.com/ubi9/ubi-minimal"),
        "{last}"
    );
    let copied: Vec<&str> = last
        .lines()
        .filter(|l| l.starts_with("COPY --from=build "))
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    let users: Vec<&str> = last
        .lines()
        .filter_map(|l| l.strip_prefix("USER "))
        .collect();
    let user = users.last().expect("a USER in the final stage").trim();
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("a numeric USER");
    assert_ne!(uid, 0);

    // The CronJob's command, as rendered.
    let out = Command::new(env!("CARGO_BIN_EXE_litemaas-schedule"))
        .args([
            "kubernetes",
            "--image",
            IMAGE,
            "--bucket",
            "b",
            "--s3-secret",
            "s",
        ])
        .args(["--namespace", "a", "--output", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut called = Vec::new();
    for item in list["items"].as_array().unwrap() {
        if item["kind"] == "CronJob" {
            for c in item["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
            {
                called.push(c["command"][0].as_str().unwrap().to_owned());
            }
        }
    }
    assert!(!called.is_empty());
    // Every binary of the workspace ([[bin]] names in bins/*/Cargo.toml).
    for entry in std::fs::read_dir(format!("{root}/bins")).unwrap() {
        let manifest = std::fs::read_to_string(entry.unwrap().path().join("Cargo.toml")).unwrap();
        let bin = manifest.split("[[bin]]").nth(1).unwrap();
        let name = bin.lines().find_map(|l| l.strip_prefix("name = ")).unwrap();
        called.push(name.trim_matches('"').to_owned());
    }
    for bin in called {
        let target = format!("/usr/local/bin/{bin}");
        assert!(
            copied.contains(&target.as_str()),
            "{bin} is not copied to /usr/local/bin: {copied:?}"
        );
        assert!(
            build.contains(&format!("--bin {bin}")),
            "{bin} is not built"
        );
    }
}

#[test]
fn pod_identity_annotates_the_service_account_and_puts_no_keys_in_the_pod() {
    let role_arn = "arn:aws:iam::123456789012:role/litemaas-backup";
    let out = Command::new(env!("CARGO_BIN_EXE_litemaas-schedule"))
        .args([
            "kubernetes",
            "--image",
            IMAGE,
            "--bucket",
            "b",
            "--namespace",
            "a",
        ])
        .args([
            "--service-account-annotation",
            &format!("eks.amazonaws.com/role-arn={role_arn}"),
        ])
        .args(["--output", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let items = list["items"].as_array().unwrap();
    let sa = items
        .iter()
        .find(|i| i["kind"] == "ServiceAccount")
        .unwrap();
    assert_eq!(
        sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        role_arn
    );
    let cron = items.iter().find(|i| i["kind"] == "CronJob").unwrap();
    let container = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
    let env = container["env"].as_array().unwrap();
    assert!(
        env.iter()
            .all(|e| !e["name"].as_str().unwrap().starts_with("AWS_")),
        "{env:?}"
    );
    // Neither a Secret nor an identity: refused.
    let out = Command::new(env!("CARGO_BIN_EXE_litemaas-schedule"))
        .args([
            "kubernetes",
            "--image",
            IMAGE,
            "--bucket",
            "b",
            "--namespace",
            "a",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--s3-secret"),
        "{}",
        text(&out)
    );
}
