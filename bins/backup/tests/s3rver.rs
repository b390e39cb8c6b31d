//! `litemaas-backup` against s3rver 3.7.1, an S3 implementation independent of moto, with and
//! without checksums: the dump is downloaded with the `aws` CLI, checked against its record,
//! restored with `gunzip | psql` into an empty database and compared with `pg_dump`.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};

use litemaas_backup::record::IntegrityRecord;
use litemaas_backup::store::{ObjectStore, S3Store};
use litemaas_testkit::{PgCluster, S3Server};
use sha2::Digest;

async fn round_trip(name: &str, extra: &[&str]) {
    let s3 = S3Server::shared_s3rver();
    let store = S3Store::new(s3.client(), s3.new_bucket(name).await.unwrap());
    let pg = PgCluster::shared();
    let source_db = pg.create_database(&name.replace('-', "_")).unwrap();
    pg.seed_sample(&source_db).unwrap();
    // Enough for two parts of 5 MiB.
    pg.psql(
        &source_db,
        "CREATE TABLE filler AS SELECT g, md5(random()::text) || md5(random()::text) AS a \
         FROM generate_series(1, 150000) g",
    )
    .unwrap();
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_litemaas-backup"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .envs(s3.env())
        .env("LITEMAAS_DATABASE_URL", pg.url(&source_db))
        .env("LITEMAAS_PG_DUMP", pg.bin_dir().join("pg_dump"))
        .args(["--bucket", store.bucket(), "--part-size-mib", "5", "--json"])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let key = report["key"].as_str().unwrap();
    assert!(report["parts"].as_u64().unwrap() >= 2, "{report}");
    // The marks set on CreateMultipartUpload are on the object.
    let head = store.head(key).await.unwrap();
    assert!(
        head.metadata.contains_key("litemaas-backup")
            && head.metadata.contains_key("litemaas-backup-run"),
        "{head:?}"
    );

    // Download with the aws CLI, and check it against the report and the record.
    let local = home.path().join("dump.sql.gz");
    let cp = s3
        .aws_cli()
        .args(["s3", "cp", &format!("s3://{}/{key}", store.bucket())])
        .arg(&local)
        .output()
        .unwrap();
    assert!(
        cp.status.success(),
        "aws s3 cp: {}",
        String::from_utf8_lossy(&cp.stderr)
    );
    let gz = std::fs::read(&local).unwrap();
    let sha256 = hex::encode(sha2::Sha256::digest(&gz));
    assert_eq!(sha256, report["sha256"].as_str().unwrap());
    assert_eq!(gz.len() as u64, report["bytes"].as_u64().unwrap());
    let record: IntegrityRecord = serde_json::from_slice(
        &store
            .get_bytes(report["record_key"].as_str().unwrap())
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(record.sha256, sha256);

    // `gunzip | psql` into an empty database gives the same database.
    let target_db = pg
        .create_database(&format!("{}_dst", name.replace('-', "_")))
        .unwrap();
    let mut gunzip = Command::new("gunzip")
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
}

#[tokio::test(flavor = "multi_thread")]
async fn backs_up_to_s3rver_with_checksums_and_restores_identically() {
    round_trip("s3rver-checksums", &[]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn backs_up_to_s3rver_without_checksums_and_restores_identically() {
    round_trip("s3rver-nochecksums", &["--no-checksums"]).await;
}
