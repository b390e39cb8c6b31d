//! `litemaas-prune` against the S3 test server (moto).
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output, Stdio};

use bytes::Bytes;
use litemaas_backup::prune::abort_stale_uploads;
use litemaas_backup::store::{LocalStore, ObjectStore, S3Store};
use litemaas_testkit::S3Server;
use serde_json::json;

fn prune_cmd(bucket: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_litemaas-prune"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(S3Server::shared().env())
        .args(["--bucket", bucket])
        .stdin(Stdio::null());
    cmd
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn month(i: usize) -> String {
    format!(
        "litemaas-backups/database-{}{:02}01-020000.sql.gz",
        2024 + i / 12,
        1 + i % 12
    )
}

fn record(key: &str) -> String {
    let (dir, name) = key.rsplit_once('/').unwrap();
    format!("{dir}/records/{name}.json")
}

async fn pending(store: &dyn ObjectStore) -> Vec<String> {
    store
        .list_pending_uploads("")
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.key)
        .collect()
}

async fn keys(store: &S3Store) -> Vec<String> {
    store
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect()
}

/// 20 monthly dumps (2024-01 … 2025-08): 0–4 made by the original tool (no record), 17 a failed
/// run of ours (whole, but no record: it carries our mark), 18 failed (empty), the rest ours
/// with records; plus keys that are not dumps.
async fn seeded_bucket() -> S3Store {
    let server = S3Server::shared();
    let store = S3Store::new(server.client(), server.new_bucket("prune").await.unwrap());
    for i in 0..20 {
        let key = month(i);
        match i {
            17 => {
                let upload = store
                    .put_multipart_with(&key, &litemaas_backup::record::ours())
                    .await
                    .unwrap();
                let mut writer = litemaas_backup::store::UploadWriter::new(
                    upload,
                    litemaas_backup::store::UploadOptions::default(),
                );
                writer
                    .write(Bytes::from_static(b"our dump, record lost"))
                    .await
                    .unwrap();
                writer.finish().await.unwrap();
            }
            18 => store.put(&key, Bytes::new()).await.unwrap(),
            0..=4 => store
                .put(&key, Bytes::from_static(b"legacy dump"))
                .await
                .unwrap(),
            _ => {
                store
                    .put(&key, Bytes::from_static(b"our dump"))
                    .await
                    .unwrap();
                store
                    .put(&record(&key), Bytes::from_static(b"{}"))
                    .await
                    .unwrap();
            }
        }
    }
    for other in [
        "litemaas-backups/notes.txt",
        "litemaas-backups/database-latest.sql.gz",
        "litemaas-backups/archive/database-20200101-000000.sql.gz",
        "other/database-20200101-000000.sql.gz",
    ] {
        store.put(other, Bytes::from_static(b"x")).await.unwrap();
    }
    store
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_monthly_dumps_leave_exactly_the_expected_survivors() {
    let store = seeded_bucket().await;
    let before = keys(&store).await;

    // A dry run shows the plan and changes nothing.
    let plan = ok(prune_cmd(store.bucket()).arg("--dry-run").output().unwrap());
    assert_eq!(
        plan.lines().filter(|l| l.starts_with("delete")).count(),
        8,
        "{plan}"
    );
    assert_eq!(keys(&store).await, before);

    let out = ok(prune_cmd(store.bucket()).arg("--json").output().unwrap());
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut deleted: Vec<String> = report["dumps"]["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    deleted.sort();
    // The 6 oldest complete dumps (12 newer complete ones are kept) and the 2 failed ones,
    // superseded by the complete dump of 2025-08.
    let mut expected: Vec<String> = (0..6).chain([17, 18]).map(month).collect();
    expected.sort();
    assert_eq!(deleted, expected);

    let mut survivors: Vec<String> = (6..17)
        .chain([19])
        .flat_map(|i| [month(i), record(&month(i))])
        .collect();
    survivors.extend(
        [
            "litemaas-backups/notes.txt",
            "litemaas-backups/database-latest.sql.gz",
            "litemaas-backups/archive/database-20200101-000000.sql.gz",
            "other/database-20200101-000000.sql.gz",
        ]
        .map(str::to_owned),
    );
    survivors.sort();
    assert_eq!(keys(&store).await, survivors);

    // Running it again deletes nothing more.
    let again: serde_json::Value = serde_json::from_str(&ok(prune_cmd(store.bucket())
        .arg("--json")
        .output()
        .unwrap()))
    .unwrap();
    assert_eq!(again["dumps"]["deleted"], serde_json::json!([]));
    assert_eq!(keys(&store).await, survivors);
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_flags_override_the_default() {
    let store = seeded_bucket().await;
    let out = ok(prune_cmd(store.bucket())
        .args(["--keep-last", "2", "--keep-yearly", "2", "--json"])
        .output()
        .unwrap());
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let kept: Vec<&str> = report["dumps"]["plan"]["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["action"] == "keep")
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    // last 2 complete: 2025-08 and 2025-05; yearly: 2025-08 and 2024-12.
    assert_eq!(kept, [month(19), month(16), month(11)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_multipart_uploads_are_aborted_and_fresh_ones_are_not() {
    // moto reports the same fixed `Initiated` (2010-11-10) for every upload, so ages are checked
    // on the local store, whose uploads carry their real start time; S3's listing and abort are
    // checked against moto below.
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path());
    let old = store
        .put_multipart("database-20250101-020000.sql.gz")
        .await
        .unwrap();
    std::mem::forget(old); // a crash
    let key_file = std::fs::read_dir(dir.path().join(".uploads"))
        .unwrap()
        .flatten()
        .find(|e| e.path().extension().is_some_and(|x| x == "key"))
        .unwrap()
        .path();
    let day_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(25 * 3600);
    std::fs::File::options()
        .write(true)
        .open(&key_file)
        .unwrap()
        .set_modified(day_ago)
        .unwrap();
    let fresh = store
        .put_multipart("database-20250201-020000.sql.gz")
        .await
        .unwrap();
    std::mem::forget(fresh); // a backup still running

    let aborted = abort_stale_uploads(
        &store,
        "",
        jiff::SignedDuration::from_hours(24),
        jiff::Timestamp::now(),
        false,
    )
    .await
    .unwrap();
    assert_eq!(
        aborted.iter().map(|u| u.key.as_str()).collect::<Vec<_>>(),
        ["database-20250101-020000.sql.gz"]
    );
    assert_eq!(pending(&store).await, ["database-20250201-020000.sql.gz"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_aborts_abandoned_s3_uploads_under_its_prefix_only() {
    let server = S3Server::shared();
    let store = S3Store::new(server.client(), server.new_bucket("uploads").await.unwrap());
    for key in [
        "litemaas-backups/database-20250101-020000.sql.gz",
        "elsewhere/x",
    ] {
        let upload = store.put_multipart(key).await.unwrap();
        std::mem::forget(upload);
    }
    // Dry run: listed, not aborted.
    let out = ok(prune_cmd(store.bucket())
        .args(["--dry-run", "--json"])
        .output()
        .unwrap());
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        report["dumps"]["aborted_uploads"].as_array().unwrap().len(),
        1
    );
    assert_eq!(store.list_pending_uploads("").await.unwrap().len(), 2);

    let out = ok(prune_cmd(store.bucket()).arg("--json").output().unwrap());
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        report["dumps"]["aborted_uploads"][0]["key"],
        "litemaas-backups/database-20250101-020000.sql.gz"
    );
    assert_eq!(pending(&store).await, ["elsewhere/x"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_bucket_is_one_clear_line() {
    let out = prune_cmd("litemaas-no-such-bucket").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("litemaas-prune: error:") && err.contains("litemaas-no-such-bucket"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_namespace_snapshots_are_pruned_too() {
    use litemaas_testapi::{ControllerConfig, SnapshotBehavior, TestApiServer};
    let api = TestApiServer::start_with(ControllerConfig {
        snapshots: SnapshotBehavior::Never,
        ..ControllerConfig::default()
    })
    .await
    .unwrap();
    api.create_namespace("litemaas").unwrap();
    // Five ready monthly snapshots, one failed after them, one unrelated.
    for (i, state) in [
        (1, "ready"),
        (2, "ready"),
        (3, "ready"),
        (4, "ready"),
        (5, "ready"),
        (6, "error"),
    ] {
        let name = format!("litemaas-snapshot-2025{i:02}01-020000");
        let status = if state == "ready" {
            json!({"readyToUse": true})
        } else {
            json!({"readyToUse": false, "error": {"message": "boom"}})
        };
        api.create_aged("snapshot.storage.k8s.io", "volumesnapshots", "litemaas",
            json!({"metadata": {"name": name, "labels": {"app": "litemaas-backup", "backup-type": "monthly"}}, "spec": {"source": {"persistentVolumeClaimName": "data"}}, "status": status}),
            &format!("2025-{i:02}-01T02:00:00Z")).unwrap();
    }
    api.create(
        "snapshot.storage.k8s.io",
        "volumesnapshots",
        "litemaas",
        json!({"metadata": {"name": "someone-elses"}, "spec": {}}),
    )
    .unwrap();
    // Ours, but of another schedule: never counted nor deleted by the monthly retention.
    api.create_aged("snapshot.storage.k8s.io", "volumesnapshots", "litemaas",
        json!({"metadata": {"name": "litemaas-snapshot-20240101-020000", "labels": {"app": "litemaas-backup", "backup-type": "weekly"}},
            "spec": {"source": {"persistentVolumeClaimName": "data"}}, "status": {"readyToUse": true}}),
        "2024-01-01T02:00:00Z").unwrap();
    let names = || -> Vec<String> {
        let out = api
            .kubectl()
            .args(["get", "volumesnapshots", "-n", "litemaas", "-o", "name"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| {
                l.trim_start_matches("volumesnapshot.snapshot.storage.k8s.io/")
                    .to_owned()
            })
            .collect()
    };
    let store = S3Store::new(
        S3Server::shared().client(),
        S3Server::shared().new_bucket("prune-snaps").await.unwrap(),
    );
    let run = |extra: &[&str]| {
        let mut cmd = prune_cmd(store.bucket());
        cmd.env("KUBECONFIG", api.kubeconfig_path())
            .args(["--namespace", "litemaas", "--json"])
            .args(extra);
        cmd.output()
    };
    let before = names();
    let dry: serde_json::Value = serde_json::from_str(&ok(run(&["--dry-run"]).unwrap())).unwrap();
    assert_eq!(
        dry["snapshots"]["plan"]["decisions"]
            .as_array()
            .unwrap()
            .len(),
        6
    );
    assert_eq!(names(), before);

    let report: serde_json::Value = serde_json::from_str(&ok(run(&[]).unwrap())).unwrap();
    let mut deleted: Vec<&str> = report["snapshots"]["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    deleted.sort();
    // The 3 newest ready ones are kept; the failed one is newer than any ready one, so it stays,
    // counting for nothing; unlabelled snapshots are not ours.
    assert_eq!(
        deleted,
        [
            "litemaas-snapshot-20250101-020000",
            "litemaas-snapshot-20250201-020000"
        ]
    );
    let mut left = names();
    left.sort();
    assert_eq!(
        left,
        [
            "litemaas-snapshot-20240101-020000", // weekly: another schedule's, left alone
            "litemaas-snapshot-20250301-020000",
            "litemaas-snapshot-20250401-020000",
            "litemaas-snapshot-20250501-020000",
            "litemaas-snapshot-20250601-020000",
            "someone-elses"
        ]
    );
}

/// A store without ListMultipartUploads (s3rver and some gateways answer NotImplemented):
/// retention is still applied, with a warning that abandoned uploads were not looked for.
#[tokio::test(flavor = "multi_thread")]
async fn a_store_that_cannot_list_uploads_is_still_pruned_with_a_warning() {
    use litemaas_testkit::proxy::{Fault, FaultProxy, Nth, Op, Rule};
    let store = seeded_bucket().await;
    let proxy = FaultProxy::start(S3Server::shared().endpoint()).unwrap();
    proxy.add_rule(Rule::new(
        Op::ListMultipartUploads,
        Nth::Every,
        Fault::Status(501),
    ));
    let out = prune_cmd(store.bucket())
        .envs(proxy.env())
        .arg("--json")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("cannot list multipart uploads") && err.contains("NotImplemented"),
        "{err}"
    );
    assert_eq!(proxy.count(Op::ListMultipartUploads), 1);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["dumps"]["deleted"].as_array().unwrap().len(), 8);
}

/// Cluster backups keep a second database's dumps under `<prefix>/<database>/`: pruned by the
/// same rules, each folder on its own; the records' folder is not mistaken for one, and a folder
/// of dumps without records (`archive/` in the seeded bucket) is left alone.
#[tokio::test(flavor = "multi_thread")]
async fn the_dumps_of_a_second_database_are_pruned_too() {
    let store = seeded_bucket().await;
    for i in 0..14 {
        let key = month(i).replace("litemaas-backups/", "litemaas-backups/litellm/");
        store
            .put(&key, Bytes::from_static(b"our dump"))
            .await
            .unwrap();
        store
            .put(&record(&key), Bytes::from_static(b"{}"))
            .await
            .unwrap();
    }
    let out = ok(prune_cmd(store.bucket()).arg("--json").output().unwrap());
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["dumps"]["deleted"].as_array().unwrap().len(), 8);
    let others = report["other_databases"].as_array().unwrap();
    assert_eq!(others.len(), 1, "{report}");
    assert_eq!(others[0]["prefix"], "litemaas-backups/litellm");
    let mut deleted: Vec<&str> = others[0]["report"]["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    deleted.sort_unstable();
    assert_eq!(
        deleted,
        [
            "litemaas-backups/litellm/database-20240101-020000.sql.gz",
            "litemaas-backups/litellm/database-20240201-020000.sql.gz"
        ]
    );
    let left = keys(&store).await;
    assert!(!left.contains(&deleted[0].to_owned()));
    assert!(!left.contains(&record(deleted[0])));
    assert!(left.contains(&"litemaas-backups/archive/database-20200101-000000.sql.gz".to_owned()));
}

/// The metrics file as Prometheus reads it: `(metric, part) → value` of litemaas-prune's series.
fn prune_metrics(path: &std::path::Path) -> Vec<(String, String, f64)> {
    let text = std::fs::read_to_string(path).unwrap();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .unwrap()
        .samples
        .into_iter()
        .map(|s| {
            assert_eq!(s.labels.get("program"), Some("litemaas-prune"));
            let v = match s.value {
                prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Counter(v) => v,
                other => panic!("{other:?}"),
            };
            (
                s.metric.clone(),
                s.labels.get("part").unwrap().to_owned(),
                v,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_record_retention_but_not_a_dry_run_and_keep_it_when_the_store_fails() {
    let store = seeded_bucket().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("litemaas-prune.prom");
    let get = |m: &[(String, String, f64)], metric: &str, part: &str| {
        m.iter()
            .find(|s| s.0 == format!("litemaas_backup_{metric}") && s.1 == part)
            .map(|s| s.2)
    };

    let mut cmd = prune_cmd(store.bucket());
    cmd.arg("--dry-run").arg("--metrics-file").arg(&file);
    ok(cmd.output().unwrap());
    let m = prune_metrics(&file);
    assert_eq!(get(&m, "last_attempt_success", "run"), Some(1.0));
    assert_eq!(
        get(&m, "attempts_total", "retention"),
        None,
        "a dry run prunes nothing"
    );

    let mut cmd = prune_cmd(store.bucket());
    cmd.arg("--metrics-file").arg(&file);
    ok(cmd.output().unwrap());
    let m = prune_metrics(&file);
    assert_eq!(get(&m, "last_attempt_success", "retention"), Some(1.0));
    let success = get(&m, "last_success_timestamp_seconds", "retention").unwrap();

    // The bucket is gone: the run fails before retention; its last success stays.
    let mut cmd = prune_cmd("no-such-bucket-for-prune-metrics");
    cmd.arg("--metrics-file").arg(&file);
    assert!(!cmd.output().unwrap().status.success());
    let m = prune_metrics(&file);
    assert_eq!(get(&m, "last_attempt_success", "run"), Some(0.0));
    assert_eq!(get(&m, "failures_total", "run"), Some(1.0));
    assert_eq!(
        get(&m, "last_success_timestamp_seconds", "retention"),
        Some(success)
    );
    assert_eq!(get(&m, "attempts_total", "retention"), Some(1.0));
}
