//! `litemaas-ls` end to end: against moto (dumps made by the real backup code, failures made as
//! a failed run leaves them), a local directory, and the test Kubernetes API server.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output, Stdio};

use bytes::Bytes;
use litemaas_backup::backup::{self, BackupOptions, BackupReport};
use litemaas_backup::catalog::{self, Selection};
use litemaas_backup::dump::{Compression, PgConnection, PgDump};
use litemaas_backup::prune::{self, DumpListing};
use litemaas_backup::retention::State;
use litemaas_backup::store::{LocalStore, ObjectStore, S3Store};
use litemaas_testkit::{PgCluster, S3Server};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

fn ls_cmd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_litemaas-ls"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::null());
    cmd
}

/// `litemaas-ls --bucket BUCKET` against moto.
fn ls_s3(bucket: &str) -> Command {
    let mut cmd = ls_cmd();
    cmd.envs(S3Server::shared().env())
        .args(["--bucket", bucket]);
    cmd
}

async fn output(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// A real backup of `db` into `store` under `prefix`, as taken at `at` (RFC 3339).
async fn backup(
    store: &dyn ObjectStore,
    db: &str,
    prefix: &str,
    at: &str,
    compression: Compression,
) -> BackupReport {
    let pg = PgCluster::shared();
    let source = PgDump::new(PgConnection::parse(&pg.url(db)).unwrap())
        .program(pg.bin_dir().join("pg_dump"));
    let mut options = BackupOptions::new(at.parse().unwrap());
    options.prefix = prefix.into();
    options.compression = compression;
    backup::run(&source, store, &options, &CancellationToken::new())
        .await
        .unwrap()
}

fn seeded_database(name: &str) -> String {
    let pg = PgCluster::shared();
    let db = pg.create_database(name).unwrap();
    pg.seed_sample(&db).unwrap();
    db
}

/// `(name, state)` of each listed dump, in the listing's order.
fn names_and_states(report: &Value) -> Vec<(String, String)> {
    report["dumps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap().to_owned(),
                d["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn dump<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["dumps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .unwrap()
}

/// The bucket: a complete dump of ours, one whose record is lost (failed), one whose
/// object no longer has the recorded size, the original tool's dump (legacy), an empty object,
/// foreign keys, an abandoned upload, and a second database's dumps.
#[tokio::test(flavor = "multi_thread")]
async fn a_bucket_of_ours_legacy_failed_and_foreign_keys_is_listed_newest_first() {
    let server = S3Server::shared();
    let bucket = server.new_bucket("ls").await.unwrap();
    let store = S3Store::new(server.client(), &bucket);
    let db = seeded_database("ls_main");
    let second = seeded_database("ls_litellm");
    let p = "litemaas-backups";

    let complete = backup(
        &store,
        &db,
        p,
        "2026-03-01T02:00:00Z",
        Compression::default(),
    )
    .await;
    // A run whose record write failed: the object carries our mark, but has no record.
    let failed = backup(
        &store,
        &db,
        p,
        "2026-02-01T02:00:00Z",
        Compression::Zstd { level: 3 },
    )
    .await;
    store.delete(&failed.record_key).await.unwrap();
    // An object replaced after its record was written.
    let replaced = backup(
        &store,
        &db,
        p,
        "2026-01-01T02:00:00Z",
        Compression::default(),
    )
    .await;
    store
        .put(&replaced.key, Bytes::from_static(b"not the recorded bytes"))
        .await
        .unwrap();
    // The original tool's dump (a plain PUT: no record, no mark) and an empty one.
    store
        .put(
            &format!("{p}/database-20251201-020000.sql.gz"),
            Bytes::from_static(b"legacy dump"),
        )
        .await
        .unwrap();
    store
        .put(
            &format!("{p}/database-20251101-020000.sql.gz"),
            Bytes::new(),
        )
        .await
        .unwrap();
    for other in [
        "litemaas-backups/notes.txt",
        "litemaas-backups/database-latest.sql.gz",
        "litemaas-backups/archive/database-20200101-000000.sql.gz",
        "elsewhere/database-20200101-000000.sql.gz",
    ] {
        store.put(other, Bytes::from_static(b"x")).await.unwrap();
    }
    // A crash left an upload (moto dates every upload 2010-11-10: abandoned).
    let upload = store
        .put_multipart(&format!("{p}/database-20260401-020000.sql.gz"))
        .await
        .unwrap();
    std::mem::forget(upload);
    // The second database, in its own folder as cluster backups keep it.
    let litellm = format!("{p}/litellm");
    let second_new = backup(
        &store,
        &second,
        &litellm,
        "2026-03-01T02:00:00Z",
        Compression::default(),
    )
    .await;
    backup(
        &store,
        &second,
        &litellm,
        "2026-02-01T02:00:00Z",
        Compression::default(),
    )
    .await;

    let mut cmd = ls_s3(&bucket);
    cmd.arg("--json");
    let report: Value = serde_json::from_str(&stdout(&output(cmd).await)).unwrap();
    let expected = [
        ("database-20260401-020000.sql.gz", "abandoned"),
        ("litellm/database-20260301-020000.sql.gz", "complete"),
        ("database-20260301-020000.sql.gz", "complete"),
        ("litellm/database-20260201-020000.sql.gz", "complete"),
        ("database-20260201-020000.sql.zst", "failed"),
        ("database-20260101-020000.sql.gz", "complete"),
        ("database-20251201-020000.sql.gz", "legacy"),
        ("database-20251101-020000.sql.gz", "empty"),
    ]
    .map(|(n, s)| (n.to_owned(), s.to_owned()));
    assert_eq!(names_and_states(&report), expected, "{report:#}");

    let c = dump(&report, "database-20260301-020000.sql.gz");
    assert_eq!(c["key"], complete.key);
    assert_eq!(c["size"], complete.bytes);
    assert_eq!(c["time"], "2026-03-01T02:00:00Z");
    assert_eq!(c["compression"], "gzip");
    assert_eq!(
        c["checksum"],
        json!({"status": "recorded", "sha256": complete.sha256})
    );
    assert_eq!(c["database"], db);
    assert_eq!(c["counts"], true);
    let f = dump(&report, "database-20260201-020000.sql.zst");
    assert_eq!(
        (&f["compression"], &f["checksum"]["status"], &f["counts"]),
        (&json!("zstd"), &json!("none"), &json!(false))
    );
    assert_eq!(f["size"], failed.bytes);
    let r = dump(&report, "database-20260101-020000.sql.gz");
    assert_eq!(r["checksum"]["status"], "size-mismatch");
    assert_eq!(r["checksum"]["recorded_bytes"], replaced.bytes);
    let l = dump(&report, "database-20251201-020000.sql.gz");
    assert_eq!(
        (&l["counts"], &l["checksum"]["status"]),
        (&json!(true), &json!("none"))
    );
    let second_dump = dump(&report, "litellm/database-20260301-020000.sql.gz");
    assert_eq!(second_dump["folder"], "litellm");
    assert_eq!(second_dump["database"], second);
    assert_eq!(
        dump(&report, "database-20260401-020000.sql.gz")["size"],
        Value::Null
    );

    // Foreign keys under the prefix: counted, not listed; the one outside it not even counted.
    assert_eq!(report["foreign_count"], 3);
    assert!(report.get("foreign").is_none());
    assert_eq!(report["uploads_listed"], true);

    // The summary names what restore --latest would take, by the same rule.
    let latest = catalog::choose(&store, p, &Selection::Latest)
        .await
        .unwrap();
    assert_eq!(report["summary"]["newest_dump"]["name"], latest.key);
    assert_eq!(latest.key, complete.key);
    assert_eq!(
        report["summary"]["newest_dump_by_folder"]["litellm"]["name"],
        second_new.key
    );

    // Retention sees every dump object as ls does: one rule (uploads are not objects yet).
    for folder in [p.to_owned(), litellm.clone()] {
        let items = prune::dump_items(&store, &folder, &DumpListing::default())
            .await
            .unwrap();
        let listed: Vec<(String, bool)> = report["dumps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| {
                d["size"].is_u64()
                    && d["key"].as_str().unwrap().rsplit_once('/').unwrap().0 == folder
            })
            .map(|d| {
                (
                    d["key"].as_str().unwrap().to_owned(),
                    d["counts"].as_bool().unwrap(),
                )
            })
            .collect();
        let mut pruned: Vec<(String, bool)> = items
            .iter()
            .map(|i| (i.id.clone(), i.state == State::Complete))
            .collect();
        pruned.sort_by(|a, b| b.0.cmp(&a.0));
        assert!(!pruned.is_empty());
        assert_eq!(listed, pruned, "{folder}");
    }

    // --all lists the foreign keys with the reason.
    let mut cmd = ls_s3(&bucket);
    cmd.args(["--json", "--all"]);
    let all: Value = serde_json::from_str(&stdout(&output(cmd).await)).unwrap();
    let foreign: Vec<&str> = all["foreign"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        foreign,
        [
            "litemaas-backups/archive/database-20200101-000000.sql.gz",
            "litemaas-backups/database-latest.sql.gz",
            "litemaas-backups/notes.txt",
        ]
    );

    // The table: the same order, a footer, and the summary line.
    let table = stdout(&output(ls_s3(&bucket)).await);
    let rows: Vec<&str> = table
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter(|k| k.contains("database-2"))
        .collect();
    assert_eq!(
        rows,
        expected.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        "{table}"
    );
    assert!(
        table.contains("3 other object(s) under the prefix are not dumps (--all shows them)"),
        "{table}"
    );
    assert!(!table.contains("notes.txt"), "{table}");
    let summary = table.lines().last().unwrap();
    assert!(
        summary.starts_with(&format!("newest usable dump: {} (", complete.key))
            && summary.contains(&format!("litellm: {} (", second_new.key)),
        "{table}"
    );
    let row = table
        .lines()
        .find(|l| l.ends_with("database-20260101-020000.sql.gz"))
        .unwrap();
    assert!(
        table.contains("WARNING: 1 dump(s) do not match their integrity record"),
        "{table}"
    );
    assert!(
        row.contains("MISMATCH") && row.starts_with("2026-01-01 02:00:00"),
        "{row}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_directory_is_listed_like_a_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path());
    let db = seeded_database("ls_local");
    let complete = backup(
        &store,
        &db,
        "",
        "2026-05-01T02:00:00Z",
        Compression::default(),
    )
    .await;
    let failed = backup(
        &store,
        &db,
        "",
        "2026-06-01T02:00:00Z",
        Compression::default(),
    )
    .await;
    store.delete(&failed.record_key).await.unwrap();
    std::fs::write(
        dir.path().join("database-20260401-020000.sql.gz"),
        b"legacy",
    )
    .unwrap();
    std::fs::write(dir.path().join("README.txt"), b"not a dump").unwrap();
    // A backup running now: its upload is in progress (the local store dates it truly).
    let running = store
        .put_multipart("database-20260701-020000.sql.gz")
        .await
        .unwrap();
    std::mem::forget(running);

    let mut cmd = ls_cmd();
    cmd.arg("--dest").arg(dir.path()).arg("--json");
    let report: Value = serde_json::from_str(&stdout(&output(cmd).await)).unwrap();
    let expected = [
        ("database-20260701-020000.sql.gz", "in-progress"),
        ("database-20260601-020000.sql.gz", "failed"),
        ("database-20260501-020000.sql.gz", "complete"),
        ("database-20260401-020000.sql.gz", "legacy"),
    ]
    .map(|(n, s)| (n.to_owned(), s.to_owned()));
    assert_eq!(names_and_states(&report), expected, "{report:#}");
    assert_eq!(report["foreign_count"], 1);
    assert_eq!(
        dump(&report, "database-20260501-020000.sql.gz")["checksum"],
        json!({"status": "recorded", "sha256": complete.sha256})
    );
    assert_eq!(report["summary"]["newest_dump"]["name"], complete.key);

    // A directory that does not exist is an error, not an empty listing.
    let mut cmd = ls_cmd();
    cmd.arg("--dest").arg(dir.path().join("missing"));
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("litemaas-ls: error: backup directory") && err.contains("missing"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_bucket_lists_nothing_and_succeeds() {
    let bucket = S3Server::shared().new_bucket("ls-empty").await.unwrap();
    let table = stdout(&output(ls_s3(&bucket)).await);
    assert!(
        table.contains("(none)") && table.ends_with("newest usable dump: NONE\n"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_bucket_is_one_clear_line_naming_it() {
    let mut cmd = ls_s3("litemaas-no-such-bucket");
    cmd.arg("--json");
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("litemaas-ls: error:") && err.contains("litemaas-no-such-bucket"),
        "{err}"
    );
}

/// Snapshots: ours ready, ours failed, someone else's of the claim, a volume restore's safety
/// snapshot, and one of another claim (hidden unless --all). kubectl is the witness of what is
/// there.
#[tokio::test(flavor = "multi_thread")]
async fn with_a_namespace_the_claims_snapshots_are_listed_newest_first() {
    use litemaas_testapi::{ControllerConfig, SnapshotBehavior, TestApiServer};
    let api = TestApiServer::start_with(ControllerConfig {
        snapshots: SnapshotBehavior::Never,
        ..ControllerConfig::default()
    })
    .await
    .unwrap();
    api.create_namespace("litemaas").unwrap();
    let claim = "postgres-storage-litellm-postgres-0";
    let ours = json!({"app": "litemaas-backup", "backup-type": "monthly"});
    let ready = json!({"readyToUse": true, "restoreSize": "10Gi"});
    for (name, labels, source, status, created) in [
        (
            "litemaas-snapshot-20260101-020000",
            ours.clone(),
            claim,
            ready.clone(),
            "2026-01-01T02:00:00Z",
        ),
        (
            "litemaas-snapshot-20260201-020000",
            ours.clone(),
            claim,
            ready.clone(),
            "2026-02-01T02:00:00Z",
        ),
        (
            "litemaas-snapshot-20260301-020000",
            ours.clone(),
            claim,
            json!({"readyToUse": false, "error": {"message": "CSI driver: quota exceeded"}}),
            "2026-03-01T02:00:00Z",
        ),
        (
            "nightly-by-hand",
            json!({}),
            claim,
            ready.clone(),
            "2026-02-15T00:00:00Z",
        ),
        (
            "litemaas-safety-20260220-100000",
            json!({"litemaas-backup/role": "safety"}),
            claim,
            ready.clone(),
            "2026-02-20T10:00:00Z",
        ),
        (
            "someone-elses",
            json!({}),
            "other-data",
            ready.clone(),
            "2026-02-25T00:00:00Z",
        ),
    ] {
        api.create_aged(
            "snapshot.storage.k8s.io",
            "volumesnapshots",
            "litemaas",
            json!({"metadata": {"name": name, "labels": labels},
                "spec": {"source": {"persistentVolumeClaimName": source}}, "status": status}),
            created,
        )
        .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &'static [&'static str]| {
        let mut cmd = ls_cmd();
        cmd.env("KUBECONFIG", api.kubeconfig_path())
            .arg("--dest")
            .arg(dir.path())
            .args(["--namespace", "litemaas"])
            .args(extra);
        output(cmd)
    };
    let report: Value = serde_json::from_str(&stdout(&run(&["--json"]).await)).unwrap();
    let snaps = report["snapshots"]["snapshots"].as_array().unwrap();
    let listed: Vec<(&str, &str, &str)> = snaps
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap(),
                s["origin"].as_str().unwrap(),
                s["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("litemaas-snapshot-20260301-020000", "ours", "failed"),
            ("litemaas-safety-20260220-100000", "safety", "complete"),
            ("nightly-by-hand", "foreign", "complete"),
            ("litemaas-snapshot-20260201-020000", "ours", "complete"),
            ("litemaas-snapshot-20260101-020000", "ours", "complete"),
        ],
        "{report:#}"
    );
    assert_eq!(snaps[0]["error"], "CSI driver: quota exceeded");
    assert_eq!(snaps[0]["ready_to_use"], false);
    assert_eq!(snaps[3]["restore_size"], "10Gi");
    assert_eq!(snaps[3]["schedule"], "monthly");
    assert_eq!(snaps[3]["created"], "2026-02-01T02:00:00Z");
    assert_eq!(report["snapshots"]["others_count"], 1);
    // The newest ready backup snapshot: not the failed one, not the safety or foreign ones.
    assert_eq!(
        report["summary"]["newest_snapshot"]["name"],
        "litemaas-snapshot-20260201-020000"
    );

    // kubectl sees the same backup snapshots.
    let out = api
        .kubectl()
        .args([
            "get",
            "volumesnapshots",
            "-n",
            "litemaas",
            "-l",
            "app=litemaas-backup",
            "-o",
            "name",
        ])
        .output()
        .unwrap();
    let mut witnessed: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.rsplit('/').next().unwrap().to_owned())
        .collect();
    witnessed.sort();
    let mut ours_listed: Vec<&str> = listed
        .iter()
        .filter(|s| s.1 == "ours")
        .map(|s| s.0)
        .collect();
    ours_listed.sort_unstable();
    assert_eq!(witnessed, ours_listed);

    let table = stdout(&run(&[]).await);
    assert!(
        table.contains("1 other snapshot(s) in the namespace"),
        "{table}"
    );
    assert!(!table.contains("someone-elses"), "{table}");
    assert!(
        table
            .lines()
            .last()
            .unwrap()
            .contains("newest ready snapshot: litemaas-snapshot-20260201-020000 ("),
        "{table}"
    );
    // --all shows the namespace's other snapshots too, in their place by age.
    let all = stdout(&run(&["--all"]).await);
    let names: Vec<&str> = all
        .lines()
        .filter(|l| l.starts_with("2026-"))
        .map(|l| {
            l.split_whitespace()
                .find(|w| {
                    w.starts_with("litemaas-") || w.ends_with("-by-hand") || w.ends_with("-elses")
                })
                .unwrap()
        })
        .collect();
    assert_eq!(
        names,
        [
            "litemaas-snapshot-20260301-020000",
            "someone-elses",
            "litemaas-safety-20260220-100000",
            "nightly-by-hand",
            "litemaas-snapshot-20260201-020000",
            "litemaas-snapshot-20260101-020000",
        ],
        "{all}"
    );
}

/// A listing refused (403 AccessDenied: an IAM policy without s3:ListBucket) is one line naming
/// the bucket and the missing permission's operation, and exit 1.
#[tokio::test(flavor = "multi_thread")]
async fn no_access_to_the_listing_is_one_clear_line_naming_the_bucket() {
    use litemaas_testkit::proxy::{Fault, FaultProxy, Nth, Op, Rule};
    let bucket = S3Server::shared().new_bucket("ls-denied").await.unwrap();
    let proxy = FaultProxy::start(S3Server::shared().endpoint()).unwrap();
    proxy.add_rule(Rule::new(Op::ListObjectsV2, Nth::Every, Fault::Status(403)));
    let mut cmd = ls_s3(&bucket);
    cmd.envs(proxy.env());
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("litemaas-ls: error:")
            && err.contains(&bucket)
            && err.contains("access denied"),
        "{err}"
    );
}

/// A store that cannot list multipart uploads (s3rver, some gateways: 501) is still listed,
/// with a warning that unfinished uploads are unknown, and says so in the JSON.
#[tokio::test(flavor = "multi_thread")]
async fn a_store_that_cannot_list_uploads_is_listed_with_a_warning() {
    use litemaas_testkit::proxy::{Fault, FaultProxy, Nth, Op, Rule};
    let bucket = S3Server::shared()
        .new_bucket("ls-no-uploads")
        .await
        .unwrap();
    let store = S3Store::new(S3Server::shared().client(), &bucket);
    store
        .put(
            "litemaas-backups/database-20251201-020000.sql.gz",
            Bytes::from_static(b"legacy dump"),
        )
        .await
        .unwrap();
    let proxy = FaultProxy::start(S3Server::shared().endpoint()).unwrap();
    proxy.add_rule(Rule::new(
        Op::ListMultipartUploads,
        Nth::Every,
        Fault::Status(501),
    ));
    let mut cmd = ls_s3(&bucket);
    cmd.envs(proxy.env()).arg("--json");
    let out = output(cmd).await;
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(err.contains("cannot list multipart uploads"), "{err}");
    assert_eq!(report["uploads_listed"], false);
    assert_eq!(report["dumps"][0]["state"], "legacy");
}

/// `(exit code, stderr)` of `litemaas-ls --dest DIR --stale LIMIT`.
async fn stale(dir: &std::path::Path, limit: &str) -> (Option<i32>, String) {
    let mut cmd = ls_cmd();
    cmd.arg("--dest").arg(dir).args(["--stale", limit]);
    let out = output(cmd).await;
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `days` ago, in the form `backup` takes: cut down to the second, never rounded up, so the
/// dump is at least `days` old when `ls` looks (rounding up made it 0.4 s younger than 40 days on
/// a fast machine, printed as `39d 23h`).
fn days_ago(days: i64) -> String {
    let then = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24 * days);
    jiff::Timestamp::from_second(then.as_second())
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_exits_2_when_the_newest_complete_dump_is_missing_or_too_old() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path());
    let db = seeded_database("ls_stale");

    let (code, err) = stale(dir.path(), "35d").await;
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("STALE: no usable dump at all (limit 35d)"),
        "{err}"
    );

    let old = backup(&store, &db, "", &days_ago(40), Compression::default()).await;
    // A younger run that failed (no integrity record) does not count.
    let failed = backup(&store, &db, "", &days_ago(1), Compression::default()).await;
    store.delete(&failed.record_key).await.unwrap();
    let (code, err) = stale(dir.path(), "35d").await;
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "STALE: newest dump {} is 40d old (limit 35d)",
            old.key
        )),
        "{err}"
    );
    let (code, err) = stale(dir.path(), "41d").await;
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains(&format!("ok: newest dump {} is 40d old", old.key)),
        "{err}"
    );

    // A second database's folder is checked on its own; --json carries the checks.
    backup(&store, &db, "", &days_ago(2), Compression::default()).await;
    backup(&store, &db, "second", &days_ago(50), Compression::default()).await;
    let mut cmd = ls_cmd();
    cmd.arg("--dest")
        .arg(dir.path())
        .args(["--stale", "35d", "--json"]);
    let out = output(cmd).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("ok: newest dump database-"), "{err}");
    assert!(
        err.contains("STALE: newest dump in second/ second/database-"),
        "{err}"
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["stale"]["limit_seconds"], 35 * 86_400);
    let stale_flags: Vec<_> = report["stale"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["stale"].clone())
        .collect();
    assert_eq!(stale_flags, [json!(false), json!(true)]);

    // An unusable limit is a usage error, exit 1 (clap's usual 2 would read as stale).
    let (code, err) = stale(dir.path(), "1mo").await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("months"), "{err}");
}
