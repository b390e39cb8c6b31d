//! `litemaas-restore volume` end to end against the test API server, whose storage behaves like
//! Kubernetes' (StatefulSet controller that makes a missing claim from its template, binding,
//! reclaim policies, claims from snapshots), with its event log and kubectl as witnesses.
#![allow(clippy::unwrap_used)]

use std::process::Output;
use std::time::Duration;

use litemaas_testapi::{ControllerConfig, EventType, SnapshotBehavior, TestApiServer};
use serde_json::{Value, json};

const NS: &str = "litemaas";
const STS: &str = "litellm-postgres";
const CLAIM: &str = "postgres-storage-litellm-postgres-0";
const RBD: &str = "openshift-storage.rbd.csi.ceph.com";
const BACKUP: &str = "litemaas-snapshot-20261101-020000";

struct Cluster {
    api: TestApiServer,
    home: tempfile::TempDir,
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

/// A StatefulSet with one Ready pod on a Bound claim of class `rbd` (reclaim Delete), and a ready
/// backup snapshot of it.
async fn cluster() -> Cluster {
    cluster_with(false, "Immediate").await
}

async fn cluster_with(snapshots_die_with_volume: bool, binding: &str) -> Cluster {
    let api = TestApiServer::start_with(ControllerConfig {
        snapshots: SnapshotBehavior::ReadyAfter(Duration::from_millis(100)),
        pod_startup: Duration::from_millis(50),
        snapshots_die_with_volume,
        ..ControllerConfig::default()
    })
    .await
    .unwrap();
    api.create_namespace(NS).unwrap();
    api.create(
        "storage.k8s.io",
        "storageclasses",
        "",
        json!({"metadata": {"name": "rbd"}, "provisioner": RBD, "reclaimPolicy": "Delete",
               "volumeBindingMode": binding}),
    )
    .unwrap();
    api.create(
        "snapshot.storage.k8s.io",
        "volumesnapshotclasses",
        "",
        json!({"metadata": {"name": "rbd-snapclass", "annotations": {"snapshot.storage.kubernetes.io/is-default-class": "true"}},
               "driver": RBD, "deletionPolicy": "Delete"}),
    )
    .unwrap();
    api.create("apps", "statefulsets", NS, json!({"metadata": {"name": STS},
        "spec": {"replicas": 1, "serviceName": STS,
            "selector": {"matchLabels": {"app": "litellm-postgres"}},
            "template": {"metadata": {"labels": {"app": "litellm-postgres"}},
                         "spec": {"containers": [{"name": "postgres", "image": "postgres:15"}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "postgres-storage", "labels": {"app": "litellm-postgres"}},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "rbd",
                         "resources": {"requests": {"storage": "10Gi"}}}}]}})).unwrap();
    let c = Cluster {
        api,
        home: tempfile::tempdir().unwrap(),
    };
    eventually("the database pod is Ready", || c.pod_ready()).await;
    c.snapshot(BACKUP, CLAIM, "2026-11-01T02:00:00Z", true);
    eventually("the backup snapshot is ready", || c.ready(BACKUP)).await;
    c
}

impl Cluster {
    fn get(&self, group: &str, plural: &str, ns: &str, name: &str) -> Option<Value> {
        self.api.get(group, plural, ns, name).ok()
    }

    fn claim(&self) -> Option<Value> {
        self.get("", "persistentvolumeclaims", NS, CLAIM)
    }

    fn pv(&self, name: &str) -> Option<Value> {
        self.get("", "persistentvolumes", "", name)
    }

    fn replicas(&self) -> i64 {
        self.get("apps", "statefulsets", NS, STS).unwrap()["spec"]["replicas"]
            .as_i64()
            .unwrap()
    }

    fn pod_ready(&self) -> bool {
        self.get("", "pods", NS, &format!("{STS}-0"))
            .is_some_and(|p| {
                p["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
    }

    fn ready(&self, snapshot: &str) -> bool {
        self.get("snapshot.storage.k8s.io", "volumesnapshots", NS, snapshot)
            .is_some_and(|s| s["status"]["readyToUse"] == json!(true))
    }

    fn snapshot(&self, name: &str, claim: &str, created: &str, ours: bool) {
        let labels = if ours {
            json!({"app": "litemaas-backup", "backup-type": "monthly"})
        } else {
            json!({})
        };
        self.api
            .create_aged(
                "snapshot.storage.k8s.io",
                "volumesnapshots",
                NS,
                json!({"metadata": {"name": name, "labels": labels},
                       "spec": {"source": {"persistentVolumeClaimName": claim}, "volumeSnapshotClassName": "rbd-snapclass"}}),
                created,
            )
            .unwrap();
    }

    fn restore(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_litemaas-restore"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("KUBECONFIG", self.api.kubeconfig_path())
            .args(["volume", "--namespace", NS, "--poll-interval", "50ms"]);
        cmd
    }

    async fn run(&self, args: &[&str]) -> Output {
        self.restore().args(args).output().await.unwrap()
    }

    /// Writes (not reads) the server logged after `from`.
    fn writes_since(&self, from: usize) -> Vec<String> {
        self.api.event_log()[from..]
            .iter()
            .filter(|e| e.plural != "events")
            .map(|e| format!("{:?} {}/{}", e.kind, e.plural, e.name))
            .collect()
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Replays the event log: the claim never missing (nor restored-but-unbound) while the
/// StatefulSet wants pods, and no pod created while the claim was missing.
fn assert_claim_never_missing_while_replicas(api: &TestApiServer) {
    let mut replicas = 1;
    let mut claim_present = true;
    for e in api.event_log() {
        match (e.plural.as_str(), e.kind) {
            ("statefulsets", _) => {
                replicas = e.object["spec"]["replicas"].as_i64().unwrap_or(replicas);
            }
            ("persistentvolumeclaims", EventType::Deleted) if e.name == CLAIM => {
                claim_present = false;
            }
            ("persistentvolumeclaims", EventType::Added) if e.name == CLAIM => {
                claim_present = true;
            }
            ("pods", EventType::Added) => assert!(claim_present, "a pod started without its claim"),
            _ => {}
        }
        assert!(
            claim_present || replicas == 0,
            "claim missing while the StatefulSet wants {replicas} replica(s) (rv {})",
            e.resource_version
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_latest_backup_snapshot_is_restored_in_order_and_the_old_volume_is_kept() {
    let c = cluster().await;
    let before = c.claim().unwrap();
    let old_volume = before["spec"]["volumeName"].as_str().unwrap().to_owned();
    let out = c.run(&["--latest", "--yes", "--json"]).await;
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    for step in 2..=6 {
        assert!(
            err.contains(&format!("[step {step}/6")),
            "step {step} reported: {err}"
        );
    }
    // The claim is new, from the backup snapshot, Bound to a new volume; kubectl agrees.
    let after = c.claim().unwrap();
    assert_ne!(after["metadata"]["uid"], before["metadata"]["uid"]);
    assert_eq!(after["spec"]["dataSource"]["name"], BACKUP);
    assert_eq!(after["status"]["phase"], "Bound");
    assert_eq!(after["metadata"]["labels"], before["metadata"]["labels"]);
    let kubectl = c
        .api
        .kubectl()
        .args([
            "get",
            "pvc",
            CLAIM,
            "-n",
            NS,
            "-o",
            "jsonpath={.spec.dataSource.name} {.status.phase}",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&kubectl.stdout),
        format!("{BACKUP} Bound")
    );
    // The old volume is kept, Released, Retain; the database runs again.
    let pv = c.pv(&old_volume).unwrap();
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    assert_eq!(pv["status"]["phase"], "Released");
    assert!(
        err.contains(&format!("kubectl delete pv {old_volume}")),
        "{err}"
    );
    assert_eq!(c.replicas(), 1);
    assert!(c.pod_ready());
    // The safety snapshot: ready, never counted by retention (not app=litemaas-backup).
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let safety = report["plan"]["safety_snapshot"]
        .as_str()
        .unwrap()
        .to_owned();
    let snap = c
        .get("snapshot.storage.k8s.io", "volumesnapshots", NS, &safety)
        .unwrap();
    assert_eq!(snap["status"]["readyToUse"], true);
    assert!(snap["metadata"]["labels"]["app"].is_null());
    assert!(err.contains(&format!("--snapshot {safety}")), "{err}");
    // The order, from the server's log.
    assert_claim_never_missing_while_replicas(&c.api);
    let log = c.api.event_log();
    let at =
        |pred: &dyn Fn(&litemaas_testapi::LoggedEvent) -> bool| log.iter().position(pred).unwrap();
    let scaled_down = at(&|e| e.plural == "statefulsets" && e.object["spec"]["replicas"] == 0);
    let safety_made = at(&|e| e.plural == "volumesnapshots" && e.name == safety);
    let retained = at(&|e| {
        e.plural == "persistentvolumes"
            && e.name == old_volume
            && e.object["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    });
    let deleted = at(&|e| {
        e.plural == "persistentvolumeclaims" && e.name == CLAIM && e.kind == EventType::Deleted
    });
    let recreated = deleted
        + log[deleted..]
            .iter()
            .position(|e| {
                e.plural == "persistentvolumeclaims"
                    && e.name == CLAIM
                    && e.kind == EventType::Added
            })
            .unwrap();
    let scaled_up = recreated
        + log[recreated..]
            .iter()
            .position(|e| e.plural == "statefulsets" && e.object["spec"]["replicas"] == 1)
            .unwrap();
    assert!(scaled_down < safety_made && safety_made < retained && retained < deleted);
    assert!(deleted < recreated && recreated < scaled_up);
    assert_eq!(log[recreated].object["spec"]["dataSource"]["name"], BACKUP);
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_snapshots_are_refused_and_nothing_changes() {
    let c = cluster().await;
    // Of another claim (ready), failed, not ready, missing. The simulated snapshotter acts on
    // a snapshot with the behaviour configured when it appears, so the order matters.
    c.api.create("", "persistentvolumeclaims", NS, json!({"metadata": {"name": "other"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "rbd", "resources": {"requests": {"storage": "1Gi"}}}})).unwrap();
    c.snapshot("someone-elses", "other", "2026-12-03T02:00:00Z", true);
    eventually("the foreign snapshot is ready", || c.ready("someone-elses")).await;
    c.api.set_controllers(ControllerConfig {
        snapshots: SnapshotBehavior::Fail("rbd: quota exceeded".into()),
        ..ControllerConfig::default()
    });
    c.snapshot(
        "litemaas-snapshot-20261202-020000",
        CLAIM,
        "2026-12-02T02:00:00Z",
        true,
    );
    eventually("the failed snapshot reports its error", || {
        c.get(
            "snapshot.storage.k8s.io",
            "volumesnapshots",
            NS,
            "litemaas-snapshot-20261202-020000",
        )
        .is_some_and(|s| !s["status"]["error"].is_null())
    })
    .await;
    c.api.set_controllers(ControllerConfig {
        snapshots: SnapshotBehavior::Never,
        ..ControllerConfig::default()
    });
    c.snapshot(
        "litemaas-snapshot-20261201-020000",
        CLAIM,
        "2026-12-01T02:00:00Z",
        true,
    );
    let from = c.api.event_log().len();
    for (snapshot, says) in [
        ("litemaas-snapshot-20261201-020000", "is not readyToUse"),
        ("litemaas-snapshot-20261202-020000", "rbd: quota exceeded"),
        (
            "someone-elses",
            "is a snapshot of claim other, not of claim postgres-storage-litellm-postgres-0",
        ),
        (
            "no-such-snapshot",
            "VolumeSnapshot litemaas/no-such-snapshot not found",
        ),
    ] {
        let out = c.run(&["--snapshot", snapshot, "--yes"]).await;
        let err = stderr(&out);
        assert!(!out.status.success(), "{snapshot}: {err}");
        assert!(
            err.contains("not restoring the volume, nothing was changed"),
            "{err}"
        );
        assert!(err.contains(says), "{snapshot}: {err}");
    }
    // --latest passes over the newer not-ready, failed and foreign ones.
    let out = c.run(&["--latest", "--dry-run", "--json"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["snapshot"]["name"], BACKUP);
    assert!(stderr(&out).contains("dry run: nothing was changed"));
    assert_eq!(
        c.writes_since(from),
        Vec::<String>::new(),
        "nothing was written"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_safety_snapshot_that_never_becomes_ready_puts_everything_back() {
    let c = cluster().await;
    let before = c.claim().unwrap();
    c.api.set_controllers(ControllerConfig {
        snapshots: SnapshotBehavior::Never,
        ..ControllerConfig::default()
    });
    let out = c
        .run(&["--snapshot", BACKUP, "--yes", "--snapshot-timeout", "1s"])
        .await;
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("step 3/6 (safety snapshot) failed"), "{err}");
    assert!(err.contains("nothing was changed"), "{err}");
    assert!(!err.contains("To roll back"), "{err}");
    let after = c.claim().unwrap();
    assert_eq!(after["metadata"]["uid"], before["metadata"]["uid"]);
    let pv = c
        .pv(before["spec"]["volumeName"].as_str().unwrap())
        .unwrap();
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Delete");
    assert_eq!(c.replicas(), 1);
    eventually("the database runs again", || c.pod_ready()).await;
    // The unfinished safety snapshot is gone; only the backup snapshot remains.
    let snaps: Vec<String> = c
        .api
        .event_log()
        .iter()
        .filter(|e| e.plural == "volumesnapshots" && e.kind == EventType::Added)
        .map(|e| e.name.clone())
        .collect();
    let safety = snaps
        .iter()
        .find(|n| n.starts_with("litemaas-safety-"))
        .unwrap();
    assert!(
        c.get("snapshot.storage.k8s.io", "volumesnapshots", NS, safety)
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_api_error_at_the_first_scale_puts_everything_back() {
    let c = cluster().await;
    c.api
        .fail_next("PATCH", "statefulsets", Some("scale"), 1, 500);
    let out = c.run(&["--latest", "--yes"]).await;
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("step 2/6 (scale down) failed"), "{err}");
    assert!(err.contains("nothing was changed"), "{err}");
    // The API's answer in one short clause, not kube's Debug dump of the Status.
    assert!(err.contains("(HTTP 500)"), "{err}");
    assert!(!err.contains("Status {"), "{err}");
    assert_eq!(c.replicas(), 1);
    assert_claim_never_missing_while_replicas(&c.api);
}

/// The claim cannot be created again after the old one is gone: the StatefulSet stays at 0 (a
/// pod would get an empty claim from the template), the error prints the rollback command, and
/// that command brings the database back from the safety snapshot.
#[tokio::test(flavor = "multi_thread")]
async fn a_claim_that_cannot_be_recreated_stops_at_zero_and_the_printed_rollback_works() {
    let c = cluster().await;
    let old_volume = c.claim().unwrap()["spec"]["volumeName"]
        .as_str()
        .unwrap()
        .to_owned();
    // Every attempt the restore makes (5) fails (500: kube-rs retries 503s on its own).
    c.api
        .fail_next("POST", "persistentvolumeclaims", None, 5, 500);
    let out = c.run(&["--latest", "--yes"]).await;
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("step 5/6 (swap the claim) failed"), "{err}");
    assert!(err.contains("left at 0 replicas"), "{err}");
    assert_eq!(c.replicas(), 0);
    assert!(c.claim().is_none());
    let pv = c.pv(&old_volume).unwrap();
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    assert_claim_never_missing_while_replicas(&c.api);
    let rollback = err
        .split("To roll back: ")
        .nth(1)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .to_owned();
    let args: Vec<&str> = rollback.split_whitespace().collect();
    assert_eq!(
        &args[..4],
        ["litemaas-restore", "volume", "--namespace", NS]
    );
    let safety = args[5].to_owned();
    // Run the printed command as printed (plus this test's poll interval).
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_litemaas-restore"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", c.home.path())
        .env("KUBECONFIG", c.api.kubeconfig_path())
        .args(&args[1..])
        .args(["--poll-interval", "50ms"]);
    let out = cmd.output().await.unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let claim = c.claim().unwrap();
    assert_eq!(claim["spec"]["dataSource"]["name"], json!(safety));
    assert_eq!(claim["status"]["phase"], "Bound");
    assert_eq!(
        c.replicas(),
        1,
        "back to the replicas noted before the failed run"
    );
    assert!(c.pod_ready());
    assert_claim_never_missing_while_replicas(&c.api);
}

#[tokio::test(flavor = "multi_thread")]
async fn pods_that_never_become_ready_are_reported_with_the_rollback() {
    let c = cluster().await;
    c.api.set_controllers(ControllerConfig {
        snapshots: SnapshotBehavior::ReadyAfter(Duration::from_millis(100)),
        pods_never_ready: true,
        ..ControllerConfig::default()
    });
    let out = c.run(&["--latest", "--yes", "--ready-timeout", "2s"]).await;
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("step 6/6 (scale up) failed"), "{err}");
    assert!(err.contains("its pods are not Ready"), "{err}");
    assert!(
        err.contains(
            "To roll back: litemaas-restore volume --namespace litemaas --snapshot litemaas-safety-"
        ),
        "{err}"
    );
    assert_eq!(c.claim().unwrap()["spec"]["dataSource"]["name"], BACKUP);
    assert_eq!(c.replicas(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_backup_holds_the_lease_and_the_restore_is_refused() {
    let c = cluster().await;
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    c.api
        .create("coordination.k8s.io", "leases", NS, json!({"metadata": {"name": "litemaas-backup"},
            "spec": {"holderIdentity": "bastion-1-4242", "leaseDurationSeconds": 120, "acquireTime": now, "renewTime": now}}))
        .unwrap();
    let from = c.api.event_log().len();
    let out = c.run(&["--latest", "--yes"]).await;
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("a backup or restore is already running"),
        "{err}"
    );
    assert!(err.contains("bastion-1-4242"), "{err}");
    assert_eq!(c.writes_since(from), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn without_yes_and_without_a_terminal_nothing_changes() {
    let c = cluster().await;
    let from = c.api.event_log().len();
    let out = c
        .restore()
        .args(["--latest"])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("without --yes"), "{}", stderr(&out));
    assert_eq!(c.writes_since(from), Vec::<String>::new());
}

/// On storage where deleting a volume deletes its snapshots, the claim's deletion must not
/// delete its volume: with the reclaim policy set to Retain first, the backup and the safety
/// snapshot survive the swap (and the claim from the backup binds).
#[tokio::test(flavor = "multi_thread")]
async fn where_snapshots_die_with_their_volume_the_retained_volume_keeps_them_alive() {
    let c = cluster_with(true, "Immediate").await;
    let out = c.run(&["--latest", "--yes", "--json"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let safety = report["plan"]["safety_snapshot"].as_str().unwrap();
    assert!(c.ready(BACKUP), "the backup snapshot survived");
    assert!(c.ready(safety), "the safety snapshot survived");
    assert_eq!(c.claim().unwrap()["status"]["phase"], "Bound");
}

/// WaitForFirstConsumer: the new claim stays Pending until the pod comes; the restore goes on
/// and ends with the claim Bound and the pod Ready.
#[tokio::test(flavor = "multi_thread")]
async fn a_wait_for_first_consumer_claim_binds_when_the_pod_comes() {
    let c = cluster_with(false, "WaitForFirstConsumer").await;
    let out = c.run(&["--latest", "--yes"]).await;
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("WaitForFirstConsumer"), "{err}");
    let claim = c.claim().unwrap();
    assert_eq!(claim["spec"]["dataSource"]["name"], BACKUP);
    assert_eq!(claim["status"]["phase"], "Bound");
    assert!(c.pod_ready());
    assert_claim_never_missing_while_replicas(&c.api);
}

/// SIGTERM while the safety snapshot is awaited: the run stops at that step and puts
/// everything back, as a failure would.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_the_safety_snapshot_puts_everything_back() {
    let c = cluster().await;
    let before = c.claim().unwrap();
    c.api.set_controllers(ControllerConfig {
        snapshots: SnapshotBehavior::Never,
        ..ControllerConfig::default()
    });
    let child = c
        .restore()
        .args(["--latest", "--yes", "--snapshot-timeout", "5m"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    eventually("the safety snapshot is requested", || {
        c.api
            .event_log()
            .iter()
            .any(|e| e.plural == "volumesnapshots" && e.name.starts_with("litemaas-safety-"))
    })
    .await;
    let pid = i32::try_from(child.id().unwrap()).unwrap();
    // SAFETY: sending a signal to our own child process.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("the run stops promptly")
        .unwrap();
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("step 3/6 (safety snapshot) failed"), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert!(err.contains("nothing was changed"), "{err}");
    assert_eq!(
        c.claim().unwrap()["metadata"]["uid"],
        before["metadata"]["uid"]
    );
    assert_eq!(c.replicas(), 1);
    assert!(
        c.get("coordination.k8s.io", "leases", NS, "litemaas-backup")
            .is_none()
    );
}

/// The snapshot disappears while the safety snapshot is taken: the new claim never binds. The run
/// stops at step 5 with the StatefulSet at 0 as soon as it sees the snapshot gone (not after the
/// ten-minute bind timeout), and the printed rollback restores the safety snapshot.
#[tokio::test(flavor = "multi_thread")]
async fn a_claim_that_never_binds_stops_at_zero_and_the_rollback_works() {
    let c = cluster().await;
    c.api.set_controllers(ControllerConfig {
        snapshots: SnapshotBehavior::ReadyAfter(Duration::from_secs(1)),
        pod_startup: Duration::from_millis(50),
        ..ControllerConfig::default()
    });
    let child = c
        .restore()
        .args(["--latest", "--yes", "--bind-timeout", "10m"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    eventually("the safety snapshot is requested", || {
        c.api
            .event_log()
            .iter()
            .any(|e| e.plural == "volumesnapshots" && e.name.starts_with("litemaas-safety-"))
    })
    .await;
    c.api
        .delete("snapshot.storage.k8s.io", "volumesnapshots", NS, BACKUP)
        .unwrap();
    // Far below the bind timeout: the run must notice that the claim can never bind.
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("the run waited for a claim whose snapshot is gone")
        .unwrap();
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("step 5/6 (swap the claim) failed"), "{err}");
    assert!(err.contains("is not Bound"), "{err}");
    assert!(
        err.contains(&format!(
            "it never will, VolumeSnapshot {BACKUP} was deleted"
        )),
        "{err}"
    );
    assert_eq!(c.replicas(), 0);
    assert_claim_never_missing_while_replicas(&c.api);
    let rollback = err
        .split("To roll back: ")
        .nth(1)
        .unwrap()
        .lines()
        .next()
        .unwrap();
    let args: Vec<&str> = rollback.split_whitespace().collect();
    assert_eq!(
        &args[..4],
        ["litemaas-restore", "volume", "--namespace", NS]
    );
    let out = c.restore().args(&args[4..]).output().await.unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let claim = c.claim().unwrap();
    assert_eq!(claim["spec"]["dataSource"]["name"], json!(args[5]));
    assert_eq!(claim["status"]["phase"], "Bound");
    assert_eq!(c.replicas(), 1);
    assert!(c.pod_ready());
    assert_claim_never_missing_while_replicas(&c.api);
}
