//! The backup job against real parts: PostgreSQL 15, pg_dump, and the S3 test server (moto).
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

use litemaas_backup::backup::{self, BackupError, BackupOptions};
use litemaas_backup::dump::{CompressOptions, Compression, PgConnection, PgDump};
use litemaas_backup::record::IntegrityRecord;
use litemaas_backup::store::{MIN_PART_SIZE, ObjectStore, S3Store, UploadOptions};
use litemaas_testkit::{PgCluster, S3Server};
use sha2::Digest;
use tokio_util::sync::CancellationToken;

fn pg_dump(pg: &PgCluster, db: &str) -> PgDump {
    PgDump::new(PgConnection::parse(&pg.url(db)).unwrap()).program(pg.bin_dir().join("pg_dump"))
}

async fn bucket(prefix: &str) -> S3Store {
    let server = S3Server::shared();
    S3Store::new(server.client(), server.new_bucket(prefix).await.unwrap())
}

/// A backup that must succeed.
async fn backup_ok(
    pg: &PgCluster,
    db: &str,
    store: &S3Store,
    options: &BackupOptions,
) -> backup::BackupReport {
    backup::run(&pg_dump(pg, db), store, options, &CancellationToken::new())
        .await
        .unwrap()
}

fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

#[tokio::test]
async fn round_trip_through_s3_restores_an_identical_database() {
    let pg = PgCluster::shared();
    let source_db = pg.create_database("roundtrip_src").unwrap();
    pg.seed_sample(&source_db).unwrap();
    let store = bucket("roundtrip").await;

    let report = backup::run(
        &pg_dump(pg, &source_db),
        &store,
        &BackupOptions::new(now()),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(
        report.key.starts_with("litemaas-backups/database-") && report.key.ends_with(".sql.gz")
    );

    // Download with the aws CLI, as an operator at 3 AM would.
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("dump.sql.gz");
    let out = S3Server::shared()
        .aws_cli()
        .args([
            "s3",
            "cp",
            &format!("s3://{}/{}", store.bucket(), report.key),
        ])
        .arg(&local)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "aws s3 cp: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gz = std::fs::read(&local).unwrap();
    assert_eq!(hex::encode(sha2::Sha256::digest(&gz)), report.sha256);
    assert_eq!(gz.len() as u64, report.bytes);

    // The record agrees, and names the versions.
    let record: IntegrityRecord =
        serde_json::from_slice(&store.get_bytes(&report.record_key).await.unwrap()).unwrap();
    assert_eq!(record.sha256, report.sha256);
    assert_eq!(record.dump.database.as_deref(), Some(source_db.as_str()));
    assert!(
        record
            .dump
            .server_version
            .as_deref()
            .unwrap()
            .starts_with("15."),
        "{record:?}"
    );

    // `gunzip | psql` into an empty database (the system gunzip, not our code).
    let target_db = pg.create_database("roundtrip_dst").unwrap();
    let mut gunzip = std::process::Command::new("gunzip")
        .arg("-c")
        .arg(&local)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let status = pg
        .command("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &target_db])
        .stdin(gunzip.stdout.take().unwrap())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(gunzip.wait().unwrap().success());
    assert_eq!(
        pg.dump_for_comparison(&source_db).unwrap(),
        pg.dump_for_comparison(&target_db).unwrap()
    );
    // And the listing the original tool used still shows exactly the dumps.
    let out = S3Server::shared()
        .aws_cli()
        .args([
            "s3",
            "ls",
            &format!("s3://{}/litemaas-backups/", store.bucket()),
        ])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    let dumps: Vec<_> = listing
        .lines()
        .filter(|l| l.contains("database-"))
        .collect();
    assert_eq!(dumps.len(), 1, "{listing}");
    assert!(
        dumps[0].ends_with(report.key.rsplit('/').next().unwrap()),
        "{listing}"
    );
}

/// ~90 MB of random hex text: ≥ 40 MiB after gzip, so the upload takes many 5 MiB parts.
fn seed_large(pg: &PgCluster, db: &str) {
    pg.psql(
        db,
        "CREATE TABLE blobs AS SELECT g AS id, (SELECT string_agg(md5(random()::text || g || h), '') \
         FROM generate_series(1, 90) h) AS payload FROM generate_series(1, 31000) g",
    )
    .unwrap();
}

/// A database of ~90 MB, its own bucket, and options with the smallest S3 parts.
async fn large_fixture(name: &str) -> (&'static PgCluster, String, S3Store, BackupOptions) {
    let pg = PgCluster::shared();
    let db = pg.create_database(name).unwrap();
    seed_large(pg, &db);
    let store = bucket(name).await;
    let mut options = BackupOptions::new(now());
    options.upload = UploadOptions {
        part_size: MIN_PART_SIZE,
        max_in_flight: 3,
        ..UploadOptions::default()
    };
    (pg, db, store, options)
}

#[tokio::test]
async fn a_large_dump_goes_up_in_many_parts_and_matches_its_digest() {
    let (pg, db, store, options) = large_fixture("large").await;
    let report = backup_ok(pg, &db, &store, &options).await;
    assert!(
        report.bytes >= 40 * 1024 * 1024,
        "only {} bytes compressed",
        report.bytes
    );
    assert!(report.parts >= 8, "{} parts", report.parts);

    let stored = store.get_bytes(&report.key).await.unwrap();
    assert_eq!(hex::encode(sha2::Sha256::digest(&stored)), report.sha256);
    let mut sql = Vec::new();
    flate2::read::MultiGzDecoder::new(&stored[..])
        .read_to_end(&mut sql)
        .unwrap();
    assert_eq!(sql.len() as u64, report.raw_bytes);
    assert!(
        sql.ends_with(b"\n")
            && String::from_utf8_lossy(&sql[sql.len() - 400..]).contains("dump complete")
    );
    assert!(store.list_pending_uploads("").await.unwrap().is_empty());
}

#[tokio::test]
async fn pg_dump_dying_mid_stream_stores_nothing() {
    let (pg, db, store, options) = large_fixture("killed").await;

    // Terminate pg_dump's backend while its COPY runs.
    let killer = {
        let db = db.clone();
        tokio::task::spawn_blocking(move || {
            for _ in 0..400 {
                let killed = pg
                    .psql(
                        "postgres",
                        &format!(
                            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                             WHERE datname = '{db}' AND application_name = 'pg_dump' AND query LIKE 'COPY%'"
                        ),
                    )
                    .unwrap();
                if killed.trim() != "0" {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            false
        })
    };
    let result = backup::run(
        &pg_dump(pg, &db),
        &store,
        &options,
        &CancellationToken::new(),
    )
    .await;
    assert!(killer.await.unwrap(), "the COPY was never seen");
    let err = result.unwrap_err();
    assert!(
        matches!(
            &err,
            BackupError::Dump {
                source: litemaas_backup::dump::Error::DumpFailed { .. },
                ..
            }
        ),
        "{err:?}"
    );
    let message = format!("{:#}", anyhow::Error::from(err));
    assert!(
        message.contains("pg_dump failed (exit code 1)") && message.contains("terminat"),
        "{message}"
    );
    assert!(
        store.list("").await.unwrap().is_empty(),
        "an object was left behind"
    );
    assert!(
        store.list_pending_uploads("").await.unwrap().is_empty(),
        "a multipart upload was left open"
    );
}

#[tokio::test]
async fn cancelling_mid_stream_aborts_the_upload() {
    let (pg, db, store, options) = large_fixture("cancel").await;
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        trigger.cancel();
    });
    let err = backup::run(&pg_dump(pg, &db), &store, &options, &cancel)
        .await
        .unwrap_err();
    assert!(matches!(err, BackupError::Cancelled { .. }), "{err:?}");
    assert!(store.list("").await.unwrap().is_empty());
    assert!(store.list_pending_uploads("").await.unwrap().is_empty());
}

#[tokio::test]
async fn zstd_and_uncompressed_dumps_are_named_and_readable() {
    let pg = PgCluster::shared();
    let db = pg.create_database("codecs").unwrap();
    pg.seed_sample(&db).unwrap();
    let store = bucket("codecs").await;
    for (compression, suffix) in [
        (Compression::Zstd { level: 3 }, ".sql.zst"),
        (Compression::None, ".sql"),
    ] {
        let mut options = BackupOptions::new(now());
        options.compression = compression;
        options.compress = CompressOptions {
            threads: 1,
            ..CompressOptions::default()
        };
        let report = backup_ok(pg, &db, &store, &options).await;
        assert!(report.key.ends_with(suffix), "{}", report.key);
        let stored = store.get_bytes(&report.key).await.unwrap();
        let sql = match compression {
            Compression::Zstd { .. } => {
                let mut out = Vec::new();
                tokio::io::AsyncReadExt::read_to_end(
                    &mut async_compression::tokio::bufread::ZstdDecoder::new(&stored[..]),
                    &mut out,
                )
                .await
                .unwrap();
                out
            }
            _ => stored.to_vec(),
        };
        assert!(String::from_utf8_lossy(&sql).contains("CREATE TABLE public.users"));
    }
}

#[tokio::test]
async fn an_existing_key_is_never_overwritten() {
    let pg = PgCluster::shared();
    let db = pg.create_database("exists").unwrap();
    pg.seed_sample(&db).unwrap();
    let store = bucket("exists").await;
    let options = BackupOptions::new(now());
    let first = backup_ok(pg, &db, &store, &options).await;
    let err = backup::run(
        &pg_dump(pg, &db),
        &store,
        &options,
        &CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, BackupError::Exists { .. }), "{err:?}");
    assert_eq!(store.head(&first.key).await.unwrap().size, first.bytes);
}
