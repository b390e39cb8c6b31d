//! `litemaas-backup` against an S3 server that misbehaves: the fault-injecting proxy of the
//! testkit sits between the binary and moto, and every test asserts what is left in the bucket
//! (read from moto directly, not through the proxy).
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output, Stdio};

use bytes::Bytes;
use litemaas_backup::store::{ObjectStore, S3Store};
use litemaas_testkit::proxy::{Fault, FaultProxy, Nth, Op, Rule};
use litemaas_testkit::{PgCluster, S3Server};

struct Setup {
    proxy: FaultProxy,
    /// The bucket, read through moto directly.
    store: S3Store,
    db: String,
    home: tempfile::TempDir,
}

async fn setup(name: &str) -> Setup {
    let server = S3Server::shared();
    let proxy = FaultProxy::start(server.endpoint()).unwrap();
    let store = S3Store::new(server.client(), server.new_bucket(name).await.unwrap());
    let pg = PgCluster::shared();
    let db = pg.create_database(&name.replace('-', "_")).unwrap();
    pg.seed_sample(&db).unwrap();
    // Enough data for several parts of 5 MiB.
    pg.psql(
        &db,
        "CREATE TABLE filler AS SELECT g, md5(random()::text) || md5(random()::text) AS a, \
         md5(random()::text) AS b FROM generate_series(1, 400000) g",
    )
    .unwrap();
    Setup {
        proxy,
        store,
        db,
        home: tempfile::tempdir().unwrap(),
    }
}

impl Setup {
    fn backup(&self, extra: &[&str]) -> Output {
        let pg = PgCluster::shared();
        Command::new(env!("CARGO_BIN_EXE_litemaas-backup"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .envs(self.proxy.env())
            .env("LITEMAAS_DATABASE_URL", pg.url(&self.db))
            .env("LITEMAAS_PG_DUMP", pg.bin_dir().join("pg_dump"))
            .args(["--bucket", self.store.bucket(), "--part-size-mib", "5"])
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .unwrap()
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

    async fn open_uploads(&self) -> usize {
        self.store.list_pending_uploads("").await.unwrap().len()
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_errors_and_resets_on_parts_are_retried() {
    let s = setup("faults-transient").await;
    s.proxy
        .add_rule(Rule::new(Op::UploadPart, Nth::Nth(1), Fault::SlowDown));
    s.proxy
        .add_rule(Rule::new(Op::UploadPart, Nth::Nth(3), Fault::Status(500)));
    s.proxy.add_rule(Rule::new(
        Op::UploadPart,
        Nth::Nth(5),
        Fault::ResetBeforeResponse,
    ));
    let out = s.backup(&["--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let key = report["key"].as_str().unwrap();
    let faulted = s.proxy.log().iter().filter(|r| r.fault.is_some()).count();
    assert_eq!(faulted, 3, "every fault was met and ridden out");
    // The stored bytes are what was streamed: the record's SHA-256 matches what moto holds.
    let data = s.store.get_bytes(key).await.unwrap();
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&data))
    };
    assert_eq!(report["sha256"].as_str().unwrap(), digest);
    assert!(report["parts"].as_u64().unwrap() >= 2, "{report}");
    assert_eq!(s.open_uploads().await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn persistent_part_failures_leave_no_object_and_no_open_upload() {
    let s = setup("faults-persistent").await;
    s.proxy
        .add_rule(Rule::new(Op::UploadPart, Nth::Every, Fault::Status(500)));
    let out = s.backup(&[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("nothing is left at the key"),
        "{}",
        stderr(&out)
    );
    assert!(s.keys().await.is_empty(), "{:?}", s.keys().await);
    assert_eq!(s.open_uploads().await, 0);
}

/// Every record PUT fails: the run fails, the completed dump is deleted, and so nothing can
/// pass for a backup (before, the object stayed and retention counted it).
#[tokio::test(flavor = "multi_thread")]
async fn when_the_record_cannot_be_written_the_dump_is_deleted() {
    let s = setup("faults-record").await;
    // An older good backup that retention must never lose because of this run.
    let older = "litemaas-backups/database-20200101-000000.sql.gz";
    s.store
        .put(
            older,
            Bytes::from_static(b"an old dump of the original tool"),
        )
        .await
        .unwrap();
    s.proxy
        .add_rule(Rule::new(Op::PutObject, Nth::Every, Fault::Status(500)));
    let out = s.backup(&["--keep-last", "1"]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("integrity record") && err.contains("nothing is left at the key"),
        "{err}"
    );
    assert_eq!(s.keys().await, [older], "only the older dump remains");
    assert_eq!(s.open_uploads().await, 0);
}

/// CompleteMultipartUpload takes effect but its reply is lost, or S3 answers 200 with an error
/// inside: either way the run ends with a complete backup and its record, and says so.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_or_failed_completion_reply_still_ends_right() {
    for fault in [Fault::DropReplyAfterForwarding, Fault::CompleteErrorIn200] {
        let s = setup("faults-complete").await;
        s.proxy
            .add_rule(Rule::new(Op::CompleteMultipartUpload, Nth::Nth(1), fault));
        let out = s.backup(&["--json"]);
        assert!(out.status.success(), "{fault:?}: {}", stderr(&out));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let key = report["key"].as_str().unwrap().to_owned();
        let record = report["record_key"].as_str().unwrap().to_owned();
        let mut expected = vec![key.clone(), record];
        expected.sort();
        assert_eq!(s.keys().await, expected, "{fault:?}");
        assert_eq!(
            s.store.head(&key).await.unwrap().size,
            report["bytes"].as_u64().unwrap()
        );
        assert_eq!(s.open_uploads().await, 0, "{fault:?}");
    }
}

/// `--no-checksums` really sends no checksum header: the proxy refuses any request that has
/// one, as older Ceph RGW does. Without the flag the same store refuses the backup, and the
/// failed run leaves nothing.
#[tokio::test(flavor = "multi_thread")]
async fn no_checksums_sends_no_checksum_header() {
    let s = setup("faults-checksums").await;
    s.proxy.add_rule(Rule::new(
        Op::Other,
        Nth::Every,
        Fault::RejectChecksumHeaders,
    ));
    for op in [
        Op::CreateMultipartUpload,
        Op::UploadPart,
        Op::CompleteMultipartUpload,
        Op::PutObject,
    ] {
        s.proxy
            .add_rule(Rule::new(op, Nth::Every, Fault::RejectChecksumHeaders));
    }
    let refused = s.backup(&[]);
    assert!(!refused.status.success(), "{}", stderr(&refused));
    assert!(s.keys().await.is_empty());
    assert_eq!(s.open_uploads().await, 0);

    s.proxy.clear_log();
    let out = s.backup(&["--no-checksums"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = s.proxy.log();
    assert!(log.iter().any(|r| r.op == Op::UploadPart));
    for request in &log {
        assert!(
            request
                .headers
                .iter()
                .all(|(name, _)| !name.starts_with("x-amz-checksum-")
                    && name != "x-amz-sdk-checksum-algorithm"),
            "{:?} sent {:?}",
            request.op,
            request.headers
        );
    }
    assert_eq!(s.keys().await.len(), 2);
}
