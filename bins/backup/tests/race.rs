//! Two runs of `litemaas-backup` writing the same key (two runs in the same second): the second
//! to complete must never replace the first's object or record. The fault proxy holds this
//! run's CompleteMultipartUpload while "another run" writes the key straight to moto, then lets
//! it go; moto 5.2.5 honours `If-None-Match: *` and refuses it with 412.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use litemaas_backup::store::{Metadata, ObjectStore, PutMode, S3Store};
use litemaas_testkit::proxy::{Fault, FaultProxy, Nth, Op, Rule};
use litemaas_testkit::{PgCluster, S3Server};

fn backup_cmd(proxy: &FaultProxy, db: &str, bucket: &str, home: &std::path::Path) -> Command {
    let pg = PgCluster::shared();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_litemaas-backup"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .envs(proxy.env())
        .env("LITEMAAS_DATABASE_URL", pg.url(db))
        .env("LITEMAAS_PG_DUMP", pg.bin_dir().join("pg_dump"))
        .args(["--bucket", bucket])
        .stdin(Stdio::null());
    cmd
}

fn record_key(key: &str) -> String {
    let (dir, name) = key.rsplit_once('/').unwrap();
    format!("{dir}/records/{name}.json")
}

/// The other run completes its dump and writes its record while this run's Complete is held:
/// this run fails with one line naming the key; the other run's object and record are
/// byte-identical afterwards; this run's upload is aborted, and nothing of it is deleted or
/// written at those keys.
#[tokio::test(flavor = "multi_thread")]
async fn another_run_writing_the_key_first_keeps_its_object_and_record() {
    let server = S3Server::shared();
    let store = S3Store::new(server.client(), server.new_bucket("race").await.unwrap());
    let proxy = FaultProxy::start(server.endpoint()).unwrap();
    let pg = PgCluster::shared();
    let db = pg.create_database("race").unwrap();
    pg.seed_sample(&db).unwrap();
    let home = tempfile::tempdir().unwrap();
    proxy.add_rule(Rule::new(
        Op::CompleteMultipartUpload,
        Nth::Nth(1),
        Fault::Hold,
    ));
    let child = backup_cmd(&proxy, &db, store.bucket(), home.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    proxy
        .wait_for(Op::CompleteMultipartUpload, 1, Duration::from_secs(120))
        .unwrap();
    let uploads = proxy.uploads();
    assert_eq!(uploads.len(), 1, "{uploads:?}");
    let key = uploads[0].0.clone();
    // The other run: its dump (with the tool's mark and a run mark of its own), then its record.
    let theirs = Bytes::from_static(b"the other run's dump, byte for byte");
    let their_record = Bytes::from_static(b"{\"the other run's\": \"record\"}");
    let metadata: Metadata = [
        ("litemaas-backup".to_owned(), "0.0.0".to_owned()),
        ("litemaas-backup-run".to_owned(), "the-other-run".to_owned()),
    ]
    .into();
    let mut upload = store
        .put_multipart_opts(&key, &metadata, PutMode::Create)
        .await
        .unwrap();
    upload.put_part(theirs.clone()).await.unwrap();
    upload.complete().await.unwrap();
    store
        .put_opts(&record_key(&key), their_record.clone(), PutMode::Create)
        .await
        .unwrap();
    proxy.release();

    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    let lines: Vec<_> = err
        .lines()
        .filter(|l| l.starts_with("litemaas-backup: error:"))
        .collect();
    assert_eq!(lines.len(), 1, "{err}");
    eprintln!("{}", lines[0]);
    assert!(
        lines[0].contains(&key) && lines[0].contains("another run"),
        "{}",
        lines[0]
    );
    assert!(out.stdout.is_empty());

    // Straight from moto: the other run's object and record, untouched.
    assert_eq!(store.get_bytes(&key).await.unwrap(), theirs);
    assert_eq!(store.head(&key).await.unwrap().metadata, metadata);
    assert_eq!(
        store.get_bytes(&record_key(&key)).await.unwrap(),
        their_record
    );
    let keys: Vec<_> = store
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(keys, [key.clone(), record_key(&key)]);
    assert!(store.list_pending_uploads("").await.unwrap().is_empty());

    // What this run sent: a create-only Complete (refused), the abort, and no delete and no
    // record write.
    let log = proxy.log();
    let complete = log
        .iter()
        .find(|r| r.op == Op::CompleteMultipartUpload)
        .unwrap();
    assert_eq!(complete.header("if-none-match"), Some("*"));
    assert_eq!(proxy.count(Op::AbortMultipartUpload), 1);
    assert_eq!(proxy.count(Op::DeleteObject), 0, "{:?}", proxy.ops());
    assert_eq!(proxy.count(Op::PutObject), 0, "{:?}", proxy.ops());
}

/// A run no other run disturbs asks for create-only writes where they matter: the dump's
/// CompleteMultipartUpload and the record's PutObject carry `If-None-Match: *`.
#[tokio::test(flavor = "multi_thread")]
async fn the_completion_and_the_record_are_create_only() {
    let server = S3Server::shared();
    let store = S3Store::new(server.client(), server.new_bucket("race-ok").await.unwrap());
    let proxy = FaultProxy::start(server.endpoint()).unwrap();
    let pg = PgCluster::shared();
    let db = pg.create_database("race_ok").unwrap();
    pg.seed_sample(&db).unwrap();
    let home = tempfile::tempdir().unwrap();
    let out = backup_cmd(&proxy, &db, store.bucket(), home.path())
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let record = report["record_key"].as_str().unwrap();
    let log = proxy.log();
    let conditional = |op: Op| {
        log.iter()
            .filter(|r| r.op == op)
            .map(|r| (r.path_and_query.clone(), r.header("if-none-match")))
            .collect::<Vec<_>>()
    };
    assert_eq!(conditional(Op::CompleteMultipartUpload).len(), 1);
    assert!(
        conditional(Op::CompleteMultipartUpload)
            .iter()
            .all(|(_, h)| *h == Some("*"))
    );
    let puts = conditional(Op::PutObject);
    assert_eq!(puts.len(), 1, "{puts:?}");
    assert!(puts[0].0.contains(record), "{puts:?}");
    assert_eq!(puts[0].1, Some("*"));
    for op in [Op::CreateMultipartUpload, Op::UploadPart] {
        assert!(conditional(op).iter().all(|(_, h)| h.is_none()), "{op:?}");
    }
}
