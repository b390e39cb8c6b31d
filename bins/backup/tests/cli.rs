//! `litemaas-backup` driven end to end, as a platform engineer would run it.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use litemaas_backup::store::{LocalStore, ObjectStore, S3Store};
use litemaas_testkit::{PgCluster, S3Server};

/// The binary with a clean environment: only what each test gives it.
fn backup_cmd(home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_litemaas-backup"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env(
            "LITEMAAS_PG_DUMP",
            PgCluster::shared().bin_dir().join("pg_dump"),
        )
        .current_dir(home)
        .stdin(Stdio::null());
    cmd
}

fn with_s3(cmd: &mut Command) -> &mut Command {
    cmd.envs(S3Server::shared().env())
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Exit non-zero with exactly one line, which starts as every error line does and names `what`.
fn assert_one_clear_line(out: &Output, what: &[&str]) {
    assert!(
        !out.status.success(),
        "expected failure; stderr: {}",
        stderr(out)
    );
    let err = stderr(out);
    let lines: Vec<_> = err
        .lines()
        .filter(|l| l.starts_with("litemaas-backup: error:"))
        .collect();
    assert_eq!(lines.len(), 1, "stderr: {err}");
    for w in what {
        assert!(lines[0].contains(w), "{w:?} missing from {:?}", lines[0]);
    }
    assert!(out.stdout.is_empty(), "nothing on stdout after a failure");
}

async fn s3_bucket(prefix: &str) -> S3Store {
    let server = S3Server::shared();
    S3Store::new(server.client(), server.new_bucket(prefix).await.unwrap())
}

async fn assert_bucket_empty(store: &S3Store) {
    assert!(
        store.list("").await.unwrap().is_empty(),
        "objects left in {}",
        store.bucket()
    );
    assert!(
        store.list_pending_uploads("").await.unwrap().is_empty(),
        "uploads left open in {}",
        store.bucket()
    );
}

fn sample_db(prefix: &str) -> String {
    let pg = PgCluster::shared();
    let db = pg.create_database(prefix).unwrap();
    pg.seed_sample(&db).unwrap();
    db
}

#[tokio::test]
async fn backs_up_to_the_local_directory_by_default() {
    let pg = PgCluster::shared();
    let db = sample_db("cli_local");
    let home = tempfile::tempdir().unwrap();
    let out = backup_cmd(home.path())
        .env("LITEMAAS_DATABASE_URL", pg.url(&db))
        .arg("--json")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for field in ["key", "bytes", "sha256", "compression", "duration_ms"] {
        assert!(report.get(field).is_some(), "{field} missing from {report}");
    }
    let key = report["key"].as_str().unwrap();
    assert!(
        key.starts_with("database-") && key.ends_with(".sql.gz"),
        "{key}"
    );
    let file = home.path().join("litemaas-backups").join(key);
    assert!(file.is_file(), "{}", file.display());
    assert!(stderr(&out).contains("backup complete"), "{}", stderr(&out));
    // Plain gunzip reads it, and it is a whole dump.
    let gunzip = Command::new("gunzip")
        .arg("-c")
        .arg(&file)
        .output()
        .unwrap();
    assert!(gunzip.status.success());
    assert!(String::from_utf8_lossy(&gunzip.stdout).contains("PostgreSQL database dump complete"));
    let store = LocalStore::new(home.path().join("litemaas-backups"));
    let keys: Vec<_> = store
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(keys.len(), 2, "{keys:?}"); // the dump and its record
}

#[tokio::test]
async fn backs_up_to_s3_with_the_standard_aws_configuration() {
    let pg = PgCluster::shared();
    let db = sample_db("cli_s3");
    let store = s3_bucket("cli-s3").await;
    let home = tempfile::tempdir().unwrap();
    let out = with_s3(&mut backup_cmd(home.path()))
        .env("LITEMAAS_DATABASE_URL", pg.url(&db))
        .args([
            "--bucket",
            store.bucket(),
            "--json",
            "--compression",
            "zstd",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let key = report["key"].as_str().unwrap();
    assert!(
        key.starts_with("litemaas-backups/database-") && key.ends_with(".sql.zst"),
        "{key}"
    );
    assert_eq!(
        store.head(key).await.unwrap().size,
        report["bytes"].as_u64().unwrap()
    );
}

#[tokio::test]
async fn an_unreachable_s3_endpoint_fails_fast_and_names_it() {
    let db = sample_db("cli_unreach");
    let home = tempfile::tempdir().unwrap();
    let dead = format!(
        "http://127.0.0.1:{}",
        litemaas_testkit::free_port().unwrap()
    );
    let started = Instant::now();
    let out = with_s3(&mut backup_cmd(home.path()))
        .env("LITEMAAS_DATABASE_URL", PgCluster::shared().url(&db))
        .args(["--bucket", "any-bucket", "--endpoint-url", &dead])
        .output()
        .unwrap();
    assert_one_clear_line(&out, &["cannot reach", &dead]);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_missing_bucket_is_named_and_nothing_is_dumped() {
    let db = sample_db("cli_nobucket");
    let home = tempfile::tempdir().unwrap();
    let out = with_s3(&mut backup_cmd(home.path()))
        .env("LITEMAAS_DATABASE_URL", PgCluster::shared().url(&db))
        .args(["--bucket", "litemaas-no-such-bucket"])
        .output()
        .unwrap();
    assert_one_clear_line(&out, &["litemaas-no-such-bucket", "does not exist"]);
}

#[tokio::test]
async fn bad_credentials_are_refused_with_a_clear_error() {
    let db = sample_db("cli_badcreds");
    let strict = S3Server::start_with_auth().unwrap();
    let home = tempfile::tempdir().unwrap();
    let out = backup_cmd(home.path())
        .envs(strict.env())
        .env("LITEMAAS_DATABASE_URL", PgCluster::shared().url(&db))
        .args(["--bucket", "some-bucket"])
        .output()
        .unwrap();
    assert_one_clear_line(
        &out,
        &[
            "s3://some-bucket",
            "access denied",
            "HeadBucket",
            "credentials",
        ],
    );
    assert!(!stderr(&out).contains(litemaas_testkit::s3::SECRET_KEY));
}

#[tokio::test]
async fn missing_credentials_are_reported_as_such() {
    let db = sample_db("cli_nocreds");
    let home = tempfile::tempdir().unwrap();
    let out = backup_cmd(home.path())
        .env("LITEMAAS_DATABASE_URL", PgCluster::shared().url(&db))
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL_S3", S3Server::shared().endpoint())
        .args(["--bucket", "some-bucket"])
        .output()
        .unwrap();
    assert_one_clear_line(&out, &["credentials"]);
}

#[tokio::test]
async fn an_unreachable_database_fails_and_leaves_nothing() {
    let store = s3_bucket("cli-nodb").await;
    let home = tempfile::tempdir().unwrap();
    let port = litemaas_testkit::free_port().unwrap();
    let started = Instant::now();
    let out = with_s3(&mut backup_cmd(home.path()))
        .env(
            "LITEMAAS_DATABASE_URL",
            format!("postgres://app:pw@127.0.0.1:{port}/litemaas"),
        )
        .args(["--bucket", store.bucket()])
        .output()
        .unwrap();
    assert_one_clear_line(
        &out,
        &[
            "pg_dump",
            &format!("127.0.0.1:{port}"),
            "exit code 1",
            "nothing was stored",
        ],
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_bucket_empty(&store).await;
}

#[tokio::test]
async fn a_bad_database_url_is_refused_before_anything_starts() {
    let home = tempfile::tempdir().unwrap();
    for (url, what) in [
        ("mysql://root:hunter2@db/litemaas", "postgres://"),
        ("postgres://root:hunter2@db:port/litemaas", "invalid port"),
        ("hunter2", "invalid database URL"),
    ] {
        let out = backup_cmd(home.path())
            .env("LITEMAAS_DATABASE_URL", url)
            .output()
            .unwrap();
        assert_one_clear_line(&out, &["invalid database URL", what]);
        assert!(!stderr(&out).contains("hunter2"), "{}", stderr(&out));
    }
    assert!(
        !home.path().join("litemaas-backups").exists(),
        "nothing is created on bad input"
    );
}

#[test]
fn help_never_shows_the_database_url_from_the_environment() {
    let home = tempfile::tempdir().unwrap();
    let out = backup_cmd(home.path())
        .env("LITEMAAS_DATABASE_URL", "postgres://u:hunter2@db/x")
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("LITEMAAS_DATABASE_URL") && !help.contains("hunter2"),
        "{help}"
    );
}

#[tokio::test]
async fn the_password_never_appears_in_any_process_arguments_or_logs() {
    let pg = PgCluster::shared();
    let db = pg.create_database("cli_secret").unwrap();
    // Large enough that pg_dump runs for a while and can be watched.
    pg.psql(
        &db,
        "CREATE TABLE t AS SELECT g, md5(g::text) AS m FROM generate_series(1, 600000) g",
    )
    .unwrap();
    let store = s3_bucket("cli-secret").await;
    let home = tempfile::tempdir().unwrap();
    let log = home.path().join("backup.log");
    let mut child = with_s3(&mut backup_cmd(home.path()))
        .env("LITEMAAS_DATABASE_URL", pg.url(&db))
        .args([
            "--bucket",
            store.bucket(),
            "-vv",
            "--threads",
            "1",
            "--compression",
            "gzip:9",
        ])
        .arg("--log-file")
        .arg(&log)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let password = pg.password().to_owned();
    let mut saw_pg_dump = false;
    while child.try_wait().unwrap().is_none() {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            assert!(
                !cmdline.contains(&password),
                "password in the arguments of: {cmdline}"
            );
            saw_pg_dump |= cmdline.contains("pg_dump") && cmdline.contains(&db);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        saw_pg_dump,
        "pg_dump was never seen running; the scan proved nothing"
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("backup complete"), "{logged}");
    for text in [logged, stderr(&out)] {
        assert!(!text.contains(&password), "password in the log output");
    }
}

/// `n` complete monthly dumps from 2024-01, each with its record.
async fn seed_dumps(store: &S3Store, n: usize) -> Vec<String> {
    let mut keys = Vec::new();
    for i in 0..n {
        let name = format!(
            "database-{}{:02}01-020000.sql.gz",
            2024 + i / 12,
            1 + i % 12
        );
        let key = format!("litemaas-backups/{name}");
        store
            .put(&key, bytes::Bytes::from_static(b"dump"))
            .await
            .unwrap();
        store
            .put(
                &format!("litemaas-backups/records/{name}.json"),
                bytes::Bytes::from_static(b"{}"),
            )
            .await
            .unwrap();
        keys.push(key);
    }
    keys
}

#[tokio::test]
async fn a_failed_backup_deletes_nothing_and_says_so() {
    let store = s3_bucket("cli-failed-keeps").await;
    seed_dumps(&store, 15).await;
    let before = store.list("").await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let port = litemaas_testkit::free_port().unwrap();
    let out = with_s3(&mut backup_cmd(home.path()))
        .env(
            "LITEMAAS_DATABASE_URL",
            format!("postgres://app@127.0.0.1:{port}/litemaas"),
        )
        .args(["--bucket", store.bucket(), "--keep-last", "1"])
        .output()
        .unwrap();
    assert_one_clear_line(
        &out,
        &["retention skipped, nothing was deleted", "pg_dump failed"],
    );
    assert_eq!(store.list("").await.unwrap(), before);
}

#[tokio::test]
async fn a_successful_backup_then_applies_retention() {
    let pg = PgCluster::shared();
    let db = sample_db("cli_retention");
    let store = s3_bucket("cli-retention").await;
    let seeded = seed_dumps(&store, 12).await;
    let home = tempfile::tempdir().unwrap();
    let out = with_s3(&mut backup_cmd(home.path()))
        .env("LITEMAAS_DATABASE_URL", pg.url(&db))
        .args(["--bucket", store.bucket(), "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // 13 dumps, keep the last 12: the oldest one goes, with its record.
    assert_eq!(
        report["retention"]["deleted"],
        serde_json::json!([seeded[0]])
    );
    let keys: Vec<String> = store
        .list("litemaas-backups/")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert!(
        !keys.contains(&seeded[0])
            && !keys
                .iter()
                .any(|k| k.ends_with("database-20240101-020000.sql.gz.json"))
    );
    assert!(keys.contains(&report["key"].as_str().unwrap().to_owned()));
    assert_eq!(keys.iter().filter(|k| !k.contains("/records/")).count(), 12);
}

#[test]
fn cluster_mode_and_a_database_url_conflict_without_showing_the_url() {
    let home = tempfile::tempdir().unwrap();
    let out = backup_cmd(home.path())
        .env("LITEMAAS_DATABASE_URL", "postgres://u:hunter2@db/x")
        .args(["--namespace", "litemaas"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("cannot be used with") && !err.contains("hunter2"),
        "{err}"
    );
}

#[tokio::test]
async fn no_checksums_mode_backs_up_for_stores_that_reject_them() {
    let pg = PgCluster::shared();
    let db = sample_db("cli_nochecksums");
    let store = s3_bucket("cli-nochecksums").await;
    let home = tempfile::tempdir().unwrap();
    let out = with_s3(&mut backup_cmd(home.path()))
        .env("LITEMAAS_DATABASE_URL", pg.url(&db))
        .args(["--bucket", store.bucket(), "--no-checksums", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let key = report["key"].as_str().unwrap();
    assert_eq!(
        store.head(key).await.unwrap().size,
        report["bytes"].as_u64().unwrap()
    );
}

/// A table locked by another session (a migration at 2 AM): with `--lock-wait-timeout` the dump
/// fails clearly within that time instead of waiting behind the lock, and nothing is stored.
#[tokio::test]
async fn a_dump_stuck_behind_a_lock_fails_clearly() {
    let pg = PgCluster::shared();
    let db = sample_db("cli_lock");
    let store = s3_bucket("cli-lock").await;
    let home = tempfile::tempdir().unwrap();
    let mut locker = pg
        .command("psql")
        .args(["-X", "-q", "-d", &db, "-c"])
        .arg("BEGIN; LOCK TABLE users IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(60);")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while pg
        .psql(
            &db,
            "SELECT count(*) FROM pg_locks WHERE relation = 'users'::regclass AND mode = 'AccessExclusiveLock' AND granted",
        )
        .unwrap()
        .trim()
        != "1"
    {
        assert!(Instant::now() < deadline, "the lock was never taken");
        std::thread::sleep(Duration::from_millis(50));
    }
    let started = Instant::now();
    let out = with_s3(&mut backup_cmd(home.path()))
        .env("LITEMAAS_DATABASE_URL", pg.url(&db))
        .args(["--bucket", store.bucket(), "--lock-wait-timeout", "1s"])
        .output()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(30), "it waited");
    assert_one_clear_line(&out, &["pg_dump failed", "lock"]);
    assert_bucket_empty(&store).await;

    // Without a lock timeout, the overall deadline ends the run just as cleanly.
    let started = Instant::now();
    let out = with_s3(&mut backup_cmd(home.path()))
        .env("LITEMAAS_DATABASE_URL", pg.url(&db))
        .args(["--bucket", store.bucket(), "--lock-wait-timeout", "1h"])
        .args(["--timeout", "2s"])
        .output()
        .unwrap();
    let _ = locker.kill();
    let _ = locker.wait();
    assert!(started.elapsed() < Duration::from_secs(30), "it waited");
    assert_one_clear_line(
        &out,
        &["the deadline (--timeout 2s) was reached", "cancelled"],
    );
    assert_bucket_empty(&store).await;
}
