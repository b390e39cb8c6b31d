//! `litemaas-prune` and multipart uploads on S3 stores: abandoned uploads aborted by their true
//! start time while a running backup's upload is left alone (moto, with the fault proxy as the
//! witness of start times, since moto reports one fixed time for all), and a store that cannot
//! list uploads at all (s3rver).
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use litemaas_backup::backup::{self, BackupOptions};
use litemaas_backup::dump::{PgConnection, PgDump};
use litemaas_backup::store::{ObjectStore, S3Store};
use litemaas_testkit::proxy::{Fault, FaultProxy, Nth, Op, Rule};
use litemaas_testkit::{PgCluster, S3Server};
use tokio_util::sync::CancellationToken;

fn prune_cmd(server: &S3Server, bucket: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_litemaas-prune"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(server.env())
        .args(["--bucket", bucket])
        .stdin(Stdio::null());
    cmd
}

async fn output(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

/// A crash a day ago left an upload; a backup is running now (held at its completion by the
/// proxy). Prune aborts the first and not the second, which then completes as a whole backup.
/// moto alone says both started on 2010-11-10, so a prune that ignored start times, or read
/// moto's, would abort both; the proxy reports the times it saw, back-dating the first.
#[tokio::test(flavor = "multi_thread")]
async fn stale_s3_uploads_are_aborted_by_their_true_start_time_and_a_running_backup_is_not() {
    let server = S3Server::shared();
    let bucket = server.new_bucket("stale").await.unwrap();
    let direct = S3Store::new(server.client(), &bucket);
    let proxy = FaultProxy::start(server.endpoint()).unwrap();
    let through = S3Store::new(proxy.client(), &bucket);

    let old_key = "litemaas-backups/database-20250101-020000.sql.gz";
    let mut old = through.put_multipart(old_key).await.unwrap();
    old.put_part(Bytes::from_static(b"half a dump"))
        .await
        .unwrap();
    std::mem::forget(old); // the crash
    proxy
        .set_initiated(old_key, SystemTime::now() - Duration::from_secs(25 * 3600))
        .unwrap();

    proxy.add_rule(Rule::new(
        Op::CompleteMultipartUpload,
        Nth::Nth(1),
        Fault::Hold,
    ));
    let pg = PgCluster::shared();
    let db = pg.create_database("stale_uploads").unwrap();
    pg.seed_sample(&db).unwrap();
    let source = PgDump::new(PgConnection::parse(&pg.url(&db)).unwrap())
        .program(pg.bin_dir().join("pg_dump"));
    let running = tokio::spawn(async move {
        let options = BackupOptions::new(jiff::Timestamp::now());
        backup::run(&source, &through, &options, &CancellationToken::new()).await
    });
    let p = std::sync::Arc::new(proxy);
    let waiter = p.clone();
    tokio::task::spawn_blocking(move || {
        waiter.wait_for(Op::CompleteMultipartUpload, 1, Duration::from_secs(120))
    })
    .await
    .unwrap()
    .unwrap();

    // What moto says on its own: one time for both, years ago.
    let straight = direct.list_pending_uploads("").await.unwrap();
    assert_eq!(straight.len(), 2, "{straight:?}");
    assert!(
        straight.iter().all(|u| u.initiated == straight[0].initiated
            && u.initiated < jiff::Timestamp::from_second(1_300_000_000).unwrap()),
        "{straight:?}"
    );
    let running_key = straight
        .iter()
        .map(|u| u.key.clone())
        .find(|k| k != old_key)
        .unwrap();

    let mut cmd = prune_cmd(server, &bucket);
    cmd.envs(p.env()).arg("--json");
    let out = output(cmd).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let aborted: Vec<&str> = report["dumps"]["aborted_uploads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["key"].as_str().unwrap())
        .collect();
    assert_eq!(aborted, [old_key]);
    let left: Vec<String> = direct
        .list_pending_uploads("")
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.key)
        .collect();
    assert_eq!(left, [running_key.as_str()]);

    // The running backup goes on to a whole backup.
    p.release();
    let report = running.await.unwrap().unwrap();
    assert_eq!(report.key, running_key);
    assert_eq!(direct.head(&report.key).await.unwrap().size, report.bytes);
    assert!(direct.head(&report.record_key).await.is_ok());
    assert!(direct.list_pending_uploads("").await.unwrap().is_empty());
}

/// s3rver 3.7.1 answers ListMultipartUploads with NotImplemented: retention is applied all the
/// same, with a warning that abandoned uploads were not looked for.
#[tokio::test(flavor = "multi_thread")]
async fn s3rver_is_pruned_with_a_warning_that_uploads_cannot_be_listed() {
    let server = S3Server::shared_s3rver();
    let bucket = server.new_bucket("prune").await.unwrap();
    let store = S3Store::new(server.client(), &bucket);
    let keys: Vec<String> = (0..14)
        .map(|i| {
            format!(
                "litemaas-backups/database-{}{:02}01-020000.sql.gz",
                2024 + i / 12,
                1 + i % 12
            )
        })
        .collect();
    for key in &keys {
        store
            .put(key, Bytes::from_static(b"our dump"))
            .await
            .unwrap();
        let (dir, name) = key.rsplit_once('/').unwrap();
        store
            .put(
                &format!("{dir}/records/{name}.json"),
                Bytes::from_static(b"{}"),
            )
            .await
            .unwrap();
    }
    // An abandoned upload that cannot be seen.
    let upload = store.put_multipart(&keys[13].replace("2025", "2026")).await;
    std::mem::forget(upload.unwrap());

    let mut cmd = prune_cmd(server, &bucket);
    cmd.arg("--json");
    let out = output(cmd).await;
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("cannot list multipart uploads") && err.contains("NotImplemented"),
        "{err}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut deleted: Vec<&str> = report["dumps"]["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    deleted.sort_unstable();
    assert_eq!(deleted, [keys[0].as_str(), keys[1].as_str()]);
    let left = store.list("litemaas-backups/database-").await.unwrap();
    assert_eq!(left.len(), 12);
    assert!(!left.iter().any(|m| m.key == keys[0] || m.key == keys[1]));
}
