//! `litemaas-restore` driven end to end against a real PostgreSQL 15 and the S3 test server
//! (moto). Every failure case asserts the target database byte-identical (by pg_dump) to what
//! it was before, and the witness test shows that the manual restore this replaces would have
//! changed it.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use litemaas_backup::backup::{self, BackupOptions};
use litemaas_backup::dump::{Compression, PgConnection, PgDump};
use litemaas_backup::store::{ObjectStore, S3Store};
use litemaas_testkit::{PgCluster, S3Server};
use tokio_util::sync::CancellationToken;

fn pg() -> &'static PgCluster {
    PgCluster::shared()
}

/// The binary with a clean environment: only what each test gives it.
fn restore_cmd(home: &Path, db: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_litemaas-restore"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("LITEMAAS_PSQL", pg().bin_dir().join("psql"))
        .env("LITEMAAS_DATABASE_URL", pg().url(db))
        .envs(S3Server::shared().env())
        .current_dir(home)
        .stdin(Stdio::null());
    cmd
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Exit non-zero with exactly one error line naming every one of `what`.
fn assert_one_clear_line(out: &Output, what: &[&str]) {
    let err = stderr(out);
    assert!(!out.status.success(), "expected failure; stderr: {err}");
    let lines: Vec<_> = err
        .lines()
        .filter(|l| l.starts_with("litemaas-restore: error:"))
        .collect();
    assert_eq!(lines.len(), 1, "stderr: {err}");
    for w in what {
        assert!(lines[0].contains(w), "{w:?} missing from {:?}", lines[0]);
    }
    assert!(out.stdout.is_empty(), "nothing on stdout after a failure");
}

/// Waits (at most 30 s) until a server session matches `condition` on pg_stat_activity;
/// `what` names it in the failure.
fn wait_for_activity(condition: &str, what: &str) {
    pg().sessions_until(condition, what, |n| n > 0);
}

fn sample_db(prefix: &str) -> String {
    let db = pg().create_database(prefix).unwrap();
    pg().seed_sample(&db).unwrap();
    db
}

async fn bucket(prefix: &str) -> S3Store {
    let server = S3Server::shared();
    S3Store::new(server.client(), server.new_bucket(prefix).await.unwrap())
}

/// A backup of `db` by the library, at `second` (Unix time), as litemaas-backup takes it.
async fn take_backup(db: &str, store: &S3Store, compression: Compression, second: i64) -> String {
    let source = PgDump::new(PgConnection::parse(&pg().url(db)).unwrap())
        .program(pg().bin_dir().join("pg_dump"));
    let mut options = BackupOptions::new(jiff::Timestamp::from_second(second).unwrap());
    options.compression = compression;
    backup::run(&source, store, &options, &CancellationToken::new())
        .await
        .unwrap()
        .key
}

/// A sample database's backup: `store` holds it under `key`, then `db` was [`change`]d.
struct Changed {
    home: tempfile::TempDir,
    store: S3Store,
    db: String,
    key: String,
}

async fn backed_up_then_changed(bucket_name: &str, db_prefix: &str) -> Changed {
    let home = tempfile::tempdir().unwrap();
    let store = bucket(bucket_name).await;
    let db = sample_db(db_prefix);
    let key = take_backup(&db, &store, Compression::default(), 1_767_225_600).await;
    change(&db);
    Changed {
        home,
        store,
        db,
        key,
    }
}

/// Changes `db` so that it differs from any backup of it taken before: a restore that
/// committed anything would show. (Objects the dump does not know, e.g. a table created
/// after the backup, are kept by a `pg_dump --clean` restore, so none is created here.)
fn change(db: &str) {
    pg().psql(
        db,
        "INSERT INTO users (email, display) VALUES ('later@example.com', 'after the backup'); \
         DELETE FROM spend_logs WHERE request_id = 'req-1'; ALTER TABLE users ADD COLUMN nickname text;",
    )
    .unwrap();
}

/// The plain SQL of a backup (`pg_dump --clean --if-exists` of `db`), as pg_dump writes it.
fn plain_dump(db: &str) -> Vec<u8> {
    let out = pg()
        .command("pg_dump")
        .args(["--clean", "--if-exists", "-d", db])
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn gzip_zstd_and_plain_backups_restore_over_the_live_database() {
    let home = tempfile::tempdir().unwrap();
    let store = bucket("restore-codecs").await;
    for (i, compression) in [
        Compression::default(),
        Compression::Zstd { level: 3 },
        Compression::None,
    ]
    .into_iter()
    .enumerate()
    {
        let db = sample_db("restore_codec");
        let original = pg().dump_for_comparison(&db).unwrap();
        let key = take_backup(&db, &store, compression, 1_767_225_600 + i as i64).await;
        change(&db);
        assert_ne!(pg().dump_for_comparison(&db).unwrap(), original);

        let out = restore_cmd(home.path(), &db)
            .args(["--bucket", store.bucket(), "--key", &key, "--yes", "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{compression}: {}", stderr(&out));
        assert_eq!(
            pg().dump_for_comparison(&db).unwrap(),
            original,
            "{compression}: the restored database is the backed-up one"
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["sha256_verified"], true);
        assert_eq!(report["tables"]["public.users"], 3);
        // The partitions' primary keys make two DROPs of the clean section fail on a live
        // database (PostgreSQL 15): harmless, reported, and the restore still exact.
        assert!(report["clean_warnings"].as_u64().unwrap() >= 1, "{report}");
        let err = stderr(&out);
        assert!(err.contains("about to REPLACE database"), "{err}");
        assert!(
            err.contains("SHA-256 matches the integrity record"),
            "{err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dump_made_like_the_original_tool_restores_with_a_warning() {
    let home = tempfile::tempdir().unwrap();
    let store = bucket("restore-legacy").await;
    let db = sample_db("restore_legacy");
    let original = pg().dump_for_comparison(&db).unwrap();
    // pg_dump > f; gzip f (the system gzip, with its file name in the header); aws s3 cp.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("database-20250101-020000.sql");
    std::fs::write(&file, plain_dump(&db)).unwrap();
    assert!(Command::new("gzip").arg(&file).status().unwrap().success());
    let key = "litemaas-backups/database-20250101-020000.sql.gz";
    let status = S3Server::shared()
        .aws_cli()
        .args(["s3", "cp", "--quiet"])
        .arg(dir.path().join("database-20250101-020000.sql.gz"))
        .arg(format!("s3://{}/{key}", store.bucket()))
        .status()
        .unwrap();
    assert!(status.success());
    change(&db);

    let out = restore_cmd(home.path(), &db)
        .args(["--bucket", store.bucket(), "--latest", "--yes"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("has no integrity record"),
        "{}",
        stderr(&out)
    );
    assert_eq!(pg().dump_for_comparison(&db).unwrap(), original);
}

#[tokio::test(flavor = "multi_thread")]
async fn into_a_new_database_leaves_the_live_one_alone() {
    let home = tempfile::tempdir().unwrap();
    let store = bucket("restore-into").await;
    let db = sample_db("restore_into");
    let original = pg().dump_for_comparison(&db).unwrap();
    let key = take_backup(&db, &store, Compression::default(), 1_767_225_600).await;
    change(&db);
    let live = pg().dump_for_comparison(&db).unwrap();
    let new_db = format!("{db}_restored");

    let out = restore_cmd(home.path(), &db)
        .args(["--bucket", store.bucket(), "--key", &key, "--into", &new_db])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(pg().dump_for_comparison(&new_db).unwrap(), original);
    assert_eq!(
        pg().dump_for_comparison(&db).unwrap(),
        live,
        "live database untouched"
    );

    // Again into the same name: refused, nothing changed.
    let out = restore_cmd(home.path(), &db)
        .args(["--bucket", store.bucket(), "--key", &key, "--into", &new_db])
        .output()
        .unwrap();
    assert_one_clear_line(&out, &[&new_db, "already exists", "nothing was changed"]);
    assert_eq!(pg().dump_for_comparison(&new_db).unwrap(), original);

    // A bad backup into a new database: the new database is dropped again.
    let bad = "litemaas-backups/database-20250101-000000.sql.gz";
    let mut cut = plain_dump(&db);
    cut.truncate(cut.len() / 2);
    store.put(bad, Bytes::from(gzip(&cut))).await.unwrap();
    let other = format!("{db}_bad");
    let out = restore_cmd(home.path(), &db)
        .args(["--bucket", store.bucket(), "--key", bad, "--into", &other])
        .output()
        .unwrap();
    assert_one_clear_line(&out, &[&format!("the new database {other} was dropped")]);
    let exists = pg()
        .psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_database WHERE datname = '{other}'"),
        )
        .unwrap();
    assert_eq!(exists.trim(), "0");
}

/// Bad inputs: each fails with one line, and the database is byte-identical to before.
#[tokio::test(flavor = "multi_thread")]
async fn bad_backups_change_nothing() {
    let Changed {
        home,
        store,
        db,
        key: good,
    } = backed_up_then_changed("restore-bad", "restore_bad").await;
    let before = pg().dump_for_comparison(&db).unwrap();
    let sql = plain_dump(&db);
    let text = String::from_utf8(sql.clone()).unwrap();

    // One byte flipped where only the SHA-256 sees it: the gzip header's MTIME field.
    let flipped_key = "litemaas-backups/database-20260102-000000.sql.gz";
    let mut flipped = store.get_bytes(&good).await.unwrap().to_vec();
    flipped[5] ^= 0x01;
    store.put(flipped_key, Bytes::from(flipped)).await.unwrap();
    let record = store
        .get_bytes(&litemaas_backup::record::record_key(&good))
        .await
        .unwrap();
    let record = String::from_utf8(record.to_vec())
        .unwrap()
        .replace("20260101-000000", "20260102-000000");
    store
        .put(
            &litemaas_backup::record::record_key(flipped_key),
            Bytes::from(record),
        )
        .await
        .unwrap();

    // Cut in the middle of the gzip stream.
    let truncated_key = "litemaas-backups/database-20260103-000000.sql.gz";
    let whole = gzip(&sql);
    store
        .put(
            truncated_key,
            Bytes::copy_from_slice(&whole[..whole.len() / 2]),
        )
        .await
        .unwrap();
    // A valid gzip of SQL cut inside a COPY block: no `\.`, no completion marker.
    let cut_key = "litemaas-backups/database-20260104-000000.sql.gz";
    // Cut at the end of a row, the worst case: psql ends the COPY cleanly at end of input.
    let in_copy = text.find("COPY public.spend_logs_2025").unwrap() + 2000;
    let in_copy = text[..in_copy].rfind('\n').unwrap() + 1;
    let cut_sql = &sql[..in_copy];
    store
        .put(cut_key, Bytes::from(gzip(cut_sql)))
        .await
        .unwrap();
    // Whole statements, but without the completion marker.
    let no_marker_key = "litemaas-backups/database-20260105-000000.sql.gz";
    let marker = text.find("-- PostgreSQL database dump complete").unwrap();
    store
        .put(no_marker_key, Bytes::from(gzip(&sql[..marker])))
        .await
        .unwrap();
    // zstd data under a gzip name.
    let zstd_key = "litemaas-backups/database-20260106-000000.sql.gz";
    let zst = {
        use tokio::io::AsyncReadExt;
        let mut out = Vec::new();
        async_compression::tokio::bufread::ZstdEncoder::new(&sql[..])
            .read_to_end(&mut out)
            .await
            .unwrap();
        out
    };
    store.put(zstd_key, Bytes::from(zst)).await.unwrap();
    // Not a dump at all.
    let junk_key = "litemaas-backups/database-20260107-000000.sql.gz";
    store
        .put(
            junk_key,
            Bytes::from(gzip(b"DROP TABLE users;\nSELECT 1;\n")),
        )
        .await
        .unwrap();

    let cases: [(&str, &[&str]); 7] = [
        (
            "litemaas-backups/database-20990101-000000.sql.gz",
            &["no backup at key"],
        ),
        (
            flipped_key,
            &["SHA-256", "corrupt", "the database is unchanged"],
        ),
        (
            truncated_key,
            &["unexpected end of file", "the database is unchanged"],
        ),
        (
            cut_key,
            &["ends inside the COPY data of table public.spend_logs_2025"],
        ),
        (no_marker_key, &["PostgreSQL database dump complete"]),
        (zstd_key, &["zstd data", "gzip"]),
        (junk_key, &["not a plain pg_dump dump"]),
    ];
    for (key, what) in cases {
        let out = restore_cmd(home.path(), &db)
            .args(["--bucket", store.bucket(), "--key", key, "--yes"])
            .output()
            .unwrap();
        assert_one_clear_line(&out, what);
        assert_eq!(
            pg().dump_for_comparison(&db).unwrap(),
            before,
            "{key} changed the database"
        );
    }

    // The same cut dump through the manual restore it replaces (`gunzip | psql -1` with
    // ON_ERROR_STOP) "succeeds" and commits a half database: the check above can fail.
    let witness = pg().create_database("witness").unwrap();
    let witness_before = pg().dump_for_comparison(&witness).unwrap();
    pg().run_script(&witness, cut_sql)
        .expect("psql -1 accepts a cut dump");
    assert_ne!(pg().dump_for_comparison(&witness).unwrap(), witness_before);
}

#[tokio::test(flavor = "multi_thread")]
async fn unusable_targets_are_one_clear_line() {
    let home = tempfile::tempdir().unwrap();
    let store = bucket("restore-target").await;
    let db = sample_db("restore_target");
    let key = take_backup(&db, &store, Compression::default(), 1_767_225_600).await;
    let before = pg().dump_for_comparison(&db).unwrap();
    let wrong_password = pg().url(&db).replace(pg().password(), "not-the-password");
    let port = litemaas_testkit::free_port().unwrap();
    for (url, what) in [
        (wrong_password, "password authentication failed"),
        (
            format!("postgres://postgres:x@127.0.0.1:{port}/{db}"),
            "Connection refused",
        ),
    ] {
        let out = restore_cmd(home.path(), &db)
            .env("LITEMAAS_DATABASE_URL", &url)
            .args(["--bucket", store.bucket(), "--key", &key, "--yes"])
            .output()
            .unwrap();
        assert_one_clear_line(&out, &[what, "nothing was changed"]);
        assert!(!stderr(&out).contains("not-the-password"));
    }
    // Without --yes and without a terminal: refused before anything.
    let out = restore_cmd(home.path(), &db)
        .args(["--bucket", store.bucket(), "--key", &key])
        .output()
        .unwrap();
    assert_one_clear_line(&out, &["without --yes", "nothing was changed"]);
    assert_eq!(pg().dump_for_comparison(&db).unwrap(), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn latest_skips_newer_failed_and_empty_dumps_and_other_keys() {
    let home = tempfile::tempdir().unwrap();
    let store = bucket("restore-latest").await;
    let db = sample_db("restore_latest");
    let original = pg().dump_for_comparison(&db).unwrap();
    take_backup(&db, &store, Compression::default(), 1_767_225_600).await;
    // Newer: a dump of ours whose record is missing (a failed run): it carries our mark, so
    // it is not mistaken for a record-less dump of the original tool.
    change(&db);
    let failed = take_backup(&db, &store, Compression::default(), 1_767_312_000).await;
    store
        .delete(&litemaas_backup::record::record_key(&failed))
        .await
        .unwrap();
    assert!(
        store
            .head(&failed)
            .await
            .unwrap()
            .metadata
            .contains_key("litemaas-backup")
    );
    // Newer: an empty dump (a failed run of the original tool) and a key not named like a dump.
    store
        .put(
            "litemaas-backups/database-20270101-000000.sql.gz",
            Bytes::new(),
        )
        .await
        .unwrap();
    store
        .put(
            "litemaas-backups/database-latest.sql.gz",
            Bytes::from_static(b"x"),
        )
        .await
        .unwrap();
    let out = restore_cmd(home.path(), &db)
        .args(["--bucket", store.bucket(), "--latest", "--yes", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["chosen"]["key"],
        "litemaas-backups/database-20260101-000000.sql.gz"
    );
    assert_eq!(pg().dump_for_comparison(&db).unwrap(), original);
}

/// Databases whose name starts with `prefix` (tests run at once: each uses its own names).
fn scratch_databases(prefix: &str) -> Vec<String> {
    pg().psql(
        "postgres",
        &format!("SELECT datname FROM pg_database WHERE datname LIKE '{prefix}%'"),
    )
    .unwrap()
    .lines()
    .map(str::to_owned)
    .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_passes_on_a_good_backup_fails_on_a_bad_one_and_leaves_no_scratch_database() {
    let home = tempfile::tempdir().unwrap();
    let store = bucket("restore-verify").await;
    let db = sample_db("restore_verify");
    let good = take_backup(&db, &store, Compression::default(), 1_767_225_600).await;
    let before = pg().dump_for_comparison(&db).unwrap();

    let out = restore_cmd(home.path(), &db)
        .args(["verify", "--bucket", store.bucket(), "--json"])
        .args(["--scratch", "scratch_verify_good"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["passed"], true);
    assert_eq!(report["scratch_dropped"], true);
    let tables = report["tables"].as_array().unwrap();
    let users = tables
        .iter()
        .find(|t| t["table"] == "public.users")
        .unwrap();
    assert_eq!(
        (users["rows"].as_i64(), users["expected"].as_u64()),
        (Some(3), Some(3))
    );
    assert!(tables.iter().all(|t| t["ok"] == true), "{report}");

    // The record's row counts are compared too: a record that counted 4 users fails verify.
    let record_key = litemaas_backup::record::record_key(&good);
    let mut record: serde_json::Value =
        serde_json::from_slice(&store.get_bytes(&record_key).await.unwrap()).unwrap();
    record["tables"]["public.users"] = 4.into();
    store
        .put(
            &record_key,
            Bytes::from(serde_json::to_vec(&record).unwrap()),
        )
        .await
        .unwrap();
    let out = restore_cmd(home.path(), &db)
        .args(["verify", "--bucket", store.bucket(), "--key", &good])
        .args(["--scratch", "scratch_verify_counts"])
        .output()
        .unwrap();
    assert_one_clear_line(&out, &["verify FAILED", "integrity record in public.users"]);
    store
        .put(
            &record_key,
            Bytes::from(
                serde_json::to_vec(&{
                    record["tables"]["public.users"] = 3.into();
                    record
                })
                .unwrap(),
            ),
        )
        .await
        .unwrap();

    // A newer dump cut inside COPY: verify --latest tries it and fails.
    let sql = plain_dump(&db);
    let text = String::from_utf8_lossy(&sql);
    let cut = text.find("COPY public.spend_logs_2025").unwrap() + 500;
    store
        .put(
            "litemaas-backups/database-20260201-000000.sql.gz",
            Bytes::from(gzip(&sql[..cut])),
        )
        .await
        .unwrap();
    let out = restore_cmd(home.path(), &db)
        .args(["verify", "--bucket", store.bucket()])
        .args(["--scratch", "scratch_verify_bad"])
        .output()
        .unwrap();
    assert_one_clear_line(&out, &["verify FAILED", "ends inside the COPY data"]);
    assert!(scratch_databases("scratch_verify").is_empty());
    assert_eq!(
        pg().dump_for_comparison(&db).unwrap(),
        before,
        "the source is never touched"
    );
}

/// SIGTERM in the middle of a restore: the live database is unchanged; in verify, the scratch
/// database is dropped.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_mid_restore_changes_nothing_and_drops_the_scratch_database() {
    let home = tempfile::tempdir().unwrap();
    let store = bucket("restore-signal").await;
    let db = sample_db("restore_signal");
    pg().psql(
        &db,
        "CREATE TABLE big AS SELECT g, md5(g::text) || repeat('x', 200) AS payload FROM generate_series(1, 200000) g",
    )
    .unwrap();
    let key = take_backup(&db, &store, Compression::default(), 1_767_225_600).await;
    change(&db);
    let before = pg().dump_for_comparison(&db).unwrap();

    // Restore, verify, and restore stopped by two signals (exit at once, no cleanup).
    for (verify, twice) in [(false, false), (true, false), (false, true)] {
        let mut cmd = restore_cmd(home.path(), &db);
        if verify {
            cmd.args(["verify", "--scratch", "scratch_signal"]);
        }
        cmd.args(["--bucket", store.bucket(), "--key", &key]);
        if !verify {
            cmd.arg("--yes");
        }
        let child = cmd.stderr(Stdio::piped()).spawn().unwrap();
        // Wait until the load is under way (its COPY is running), then SIGTERM.
        wait_for_activity("query LIKE 'COPY public.big%'", "the restore's COPY");
        // SAFETY: signalling our own child.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
            if twice {
                // A different signal, so that the two are not merged into one delivery.
                libc::kill(child.id() as i32, libc::SIGINT);
            }
        }
        let out = child.wait_with_output().unwrap();
        assert!(!out.status.success(), "verify={verify}: {}", stderr(&out));
        if twice {
            assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
            assert!(stderr(&out).contains("second signal"), "{}", stderr(&out));
        } else {
            assert!(stderr(&out).contains("cancelled"), "{}", stderr(&out));
        }
        assert_eq!(
            pg().dump_for_comparison(&db).unwrap(),
            before,
            "verify={verify}"
        );
        assert!(scratch_databases("scratch_signal").is_empty());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restore_stopped_while_waiting_for_a_lock_leaves_no_session_holding_locks() {
    let Changed {
        home,
        store,
        db,
        key,
    } = backed_up_then_changed("restore-lock", "restore_lock").await;
    let before = pg().dump_for_comparison(&db).unwrap();
    // An application's open transaction that read spend_logs: the restore's DROP of it waits,
    // holding the locks it took before (on the tables it dropped already, say).
    let blocker = pg()
        .open_transaction(&db, "SELECT count(*) FROM spend_logs")
        .unwrap();
    let waiting = format!(
        "datname = '{db}' AND wait_event_type = 'Lock' AND application_name = 'litemaas-restore'"
    );
    let child = restore_cmd(home.path(), &db)
        .args(["--bucket", store.bucket(), "--key", &key, "--yes"])
        .args(["--lock-wait-report", "1s"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_activity(&waiting, "the restore waiting for its lock");
    // Long enough for reports of who holds the lock (one a second), even on a loaded machine.
    std::thread::sleep(Duration::from_millis(3500));

    // SAFETY: signalling our own child.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let stopped = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("cancelled"), "{err}");
    assert!(
        err.contains("1 other session(s) are connected to it"),
        "the confirmation warns: {err}"
    );
    assert!(
        err.contains(&format!(
            "for a lock held by session {} ({}, from ",
            blocker.pid, blocker.application_name
        )),
        "the wait is reported, naming the blocker: {err}"
    );
    assert!(
        err.contains(&format!("SELECT pg_terminate_backend({});", blocker.pid)),
        "{err}"
    );
    assert!(
        stopped.elapsed() < Duration::from_secs(20),
        "the restore took {:?} to stop",
        stopped.elapsed()
    );
    // psql, stuck in the DROP, never read the end of its input: its server session was ended
    // for it, so nothing waits for a lock and every table is usable at once.
    pg().sessions_until(&waiting, "sessions waiting for a lock", |n| n == 0);
    pg().psql(
        &db,
        "SET lock_timeout = '2s'; SELECT count(*) FROM users; SELECT count(*) FROM api_keys;",
    )
    .unwrap();
    drop(blocker);
    assert_eq!(pg().dump_for_comparison(&db).unwrap(), before);
}

/// `(metric, part) → value` of the metrics file, as Prometheus reads it.
fn restore_metrics(path: &Path) -> Vec<(String, String, f64)> {
    let text = std::fs::read_to_string(path).unwrap();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .unwrap()
        .samples
        .into_iter()
        .map(|s| {
            assert_eq!(s.labels.get("program"), Some("litemaas-restore"));
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
async fn verify_is_a_part_of_the_metrics_whose_last_success_outlives_a_failure() {
    let home = tempfile::tempdir().unwrap();
    let store = bucket("restore-metrics").await;
    let db = sample_db("restore_metrics");
    take_backup(&db, &store, Compression::default(), 1_767_225_600).await;
    let file = home.path().join("litemaas-restore.prom");
    let get = |m: &[(String, String, f64)], metric: &str, part: &str| {
        m.iter()
            .find(|s| s.0 == format!("litemaas_backup_{metric}") && s.1 == part)
            .map(|s| s.2)
    };

    let out = restore_cmd(home.path(), &db)
        .args(["verify", "--bucket", store.bucket(), "--metrics-file"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let m = restore_metrics(&file);
    assert_eq!(get(&m, "last_attempt_success", "verify"), Some(1.0));
    assert_eq!(get(&m, "last_attempt_success", "run"), Some(1.0));
    let success = get(&m, "last_success_timestamp_seconds", "verify").unwrap();

    let out = restore_cmd(home.path(), &db)
        .args([
            "verify",
            "--bucket",
            store.bucket(),
            "--key",
            "no/such/key.sql.gz",
        ])
        .env("LITEMAAS_METRICS_FILE", &file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let m = restore_metrics(&file);
    assert_eq!(get(&m, "last_attempt_success", "verify"), Some(0.0));
    assert_eq!(
        get(&m, "last_success_timestamp_seconds", "verify"),
        Some(success)
    );
    assert_eq!(get(&m, "failures_total", "verify"), Some(1.0));
}

/// Owner, grants, settings and comment of a database, and whether it takes connections.
fn profile(db: &str) -> String {
    pg().psql(
        "postgres",
        &format!(
            "SELECT pg_get_userbyid(d.datdba), d.datacl, d.datallowconn, d.datconnlimit, \
               shobj_description(d.oid, 'pg_database'), \
               (SELECT string_agg(coalesce(pg_get_userbyid(nullif(s.setrole, 0)), '*') || ':' || array_to_string(s.setconfig, ','), ' ' ORDER BY s.setrole) \
                FROM pg_db_role_setting s WHERE s.setdatabase = d.oid) \
             FROM pg_database d WHERE d.datname = '{db}'"
        ),
    )
    .unwrap()
}

fn databases_like(prefix: &str) -> Vec<String> {
    pg().psql(
        "postgres",
        &format!("SELECT datname FROM pg_database WHERE datname LIKE '{prefix}%' ORDER BY 1"),
    )
    .unwrap()
    .lines()
    .map(str::to_owned)
    .collect()
}

/// A live database owned by its own role, with grants, settings and a comment.
fn dressed_db(prefix: &str, owner: &str) -> String {
    let db = sample_db(prefix);
    pg().ensure_role(owner, "LOGIN CREATEDB PASSWORD 'owner-pw'")
        .unwrap();
    pg().ensure_role("swap_reader", "").unwrap();
    pg().psql(
        "postgres",
        &format!(
            "ALTER DATABASE {db} OWNER TO {owner}; \
             REVOKE ALL ON DATABASE {db} FROM PUBLIC; \
             GRANT CONNECT, TEMPORARY ON DATABASE {db} TO swap_reader; \
             ALTER DATABASE {db} SET work_mem TO '7MB'; \
             ALTER DATABASE {db} SET search_path TO \"$user\", public; \
             ALTER ROLE swap_reader IN DATABASE {db} SET statement_timeout TO '5min'; \
             COMMENT ON DATABASE {db} IS 'LiteMaaS''s database'"
        ),
    )
    .unwrap();
    db
}

/// The previous database after a swap: refusing connections, and (once allowed again) holding
/// what the live database held before the swap (`content`), ready for a rollback.
fn assert_previous_kept(previous: &str, content: &str) {
    assert!(
        profile(previous).contains("|f|"),
        "the previous database refuses connections: {}",
        profile(previous)
    );
    pg().psql(
        "postgres",
        &format!("ALTER DATABASE {previous} ALLOW_CONNECTIONS true"),
    )
    .unwrap();
    assert_eq!(
        pg().dump_for_comparison(previous).unwrap(),
        content,
        "the previous database is kept as it was"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn swap_loads_in_parallel_and_swaps_in_keeping_owner_grants_settings_and_the_previous_database()
 {
    let home = tempfile::tempdir().unwrap();
    let store = bucket("restore-swap").await;
    let db = dressed_db("restore_swap", "swap_owner");
    let original = pg().dump_for_comparison(&db).unwrap();
    let key = take_backup(&db, &store, Compression::default(), 1_767_225_600).await;
    change(&db);
    let changed = pg().dump_for_comparison(&db).unwrap();
    let before = profile(&db);
    // A client connected to the live database: its session is ended by the swap.
    let client = pg()
        .command("psql")
        .args(["-X", "-d", &db, "-c", "SELECT pg_sleep(120)"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_activity(
        &format!("datname = '{db}' AND query LIKE '%pg_sleep%'"),
        "the client",
    );

    let out = restore_cmd(home.path(), &db)
        .args([
            "--bucket",
            store.bucket(),
            "--key",
            &key,
            "--swap",
            "--jobs",
            "2",
            "--yes",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["parallel"]["jobs"], 2, "{json}");
    let previous = json["swap"]["previous"].as_str().unwrap().to_owned();
    assert!(
        previous.starts_with(&format!("{db}_previous_")),
        "{previous}"
    );
    assert!(
        stderr(&out).contains(&format!("kept as {previous}")),
        "{}",
        stderr(&out)
    );

    assert_eq!(
        pg().dump_for_comparison(&db).unwrap(),
        original,
        "the backup's content is live"
    );
    assert_eq!(
        profile(&db),
        before,
        "owner, grants, settings and comment carried over"
    );
    assert_previous_kept(&previous, &changed);
    let client = client.wait_with_output().unwrap();
    assert!(
        !client.status.success(),
        "the live database's session was ended"
    );
    assert!(
        String::from_utf8_lossy(&client.stderr).contains("terminat"),
        "{}",
        String::from_utf8_lossy(&client.stderr)
    );
    assert_eq!(
        databases_like(&format!("{db}_restore_")),
        Vec::<String>::new()
    );

    // Again with --drop-previous, while databases already hold the names a restore in this
    // second and the next ones would take (left by a restore a moment ago, say): other names are
    // chosen, those databases are not touched, and only the live database and them remain.
    let now = jiff::Timestamp::now().as_second();
    let taken: Vec<String> = (0..12)
        .map(|s| {
            let stamp = jiff::Timestamp::from_second(now + s)
                .unwrap()
                .strftime("%Y%m%d_%H%M%S");
            format!("{db}_previous_{stamp}")
        })
        .filter(|name| *name != previous)
        .inspect(|name| {
            pg().psql("postgres", &format!("CREATE DATABASE {name}"))
                .unwrap();
        })
        .collect();
    let out = restore_cmd(home.path(), &db)
        .args([
            "--bucket",
            store.bucket(),
            "--key",
            &key,
            "--swap",
            "--drop-previous",
            "--yes",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let chosen = json["swap"]["previous"].as_str().unwrap();
    assert!(
        chosen.starts_with(&format!("{db}_previous_")) && chosen.ends_with("_2"),
        "a name beside the taken ones: {chosen}"
    );
    assert_eq!(pg().dump_for_comparison(&db).unwrap(), original);
    assert_eq!(profile(&db), before);
    let mut left = vec![previous];
    left.extend(taken);
    left.sort();
    assert_eq!(
        databases_like(&format!("{db}_")),
        left,
        "only the first run's previous database and the ones made beforehand are left"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_swap_that_fails_changes_nothing_and_leaves_no_database_behind() {
    let home = tempfile::tempdir().unwrap();
    let store = bucket("restore-swap-bad").await;
    let db = dressed_db("restore_swap_bad", "swap_owner2");
    let key = take_backup(&db, &store, Compression::default(), 1_767_225_600).await;
    change(&db);
    let live = pg().dump_for_comparison(&db).unwrap();
    let before = profile(&db);

    // A cut backup: the load fails, the new database is dropped.
    let bad = "litemaas-backups/database-20250101-000000.sql.gz";
    let mut cut = plain_dump(&db);
    cut.truncate(cut.len() / 2);
    store.put(bad, Bytes::from(gzip(&cut))).await.unwrap();
    let out = restore_cmd(home.path(), &db)
        .args(["--bucket", store.bucket(), "--key", bad, "--swap", "--yes"])
        .output()
        .unwrap();
    assert_one_clear_line(
        &out,
        &[
            &format!("the live database {db} was not touched"),
            "was dropped",
        ],
    );
    assert_eq!(pg().dump_for_comparison(&db).unwrap(), live);
    assert_eq!(profile(&db), before);
    assert_eq!(databases_like(&format!("{db}_")), Vec::<String>::new());

    // Another session holds a lock on the live database (an open transaction that commented
    // on it, from another database): the good backup loads, but the swap cannot get its lock
    // within --swap-lock-timeout, so nothing is renamed and connections are allowed again.
    let blocker = pg()
        .open_transaction("postgres", &format!("COMMENT ON DATABASE {db} IS 'held'"))
        .unwrap();
    let out = restore_cmd(home.path(), &db)
        .args([
            "--bucket",
            store.bucket(),
            "--key",
            &key,
            "--swap",
            "--swap-lock-timeout",
            "1s",
            "--yes",
        ])
        .output()
        .unwrap();
    drop(blocker);
    assert_one_clear_line(
        &out,
        &[
            "could not be swapped in",
            "nothing was renamed",
            "was dropped",
        ],
    );
    assert_eq!(pg().dump_for_comparison(&db).unwrap(), live);
    assert_eq!(profile(&db), before, "connections allowed again");
    assert_eq!(databases_like(&format!("{db}_")), Vec::<String>::new());
}

/// A psql that fails where a real one might, past the swap's point of no return. Its input
/// passes through unchanged (streamed: the loader's sessions keep working).
/// - `LOSE_ANSWER_AFTER`: a script containing this text runs, then psql exits 2 as if the
///   connection was lost before the answer arrived;
/// - `FAIL_FIRST_LINE`: a script whose first statement (after the session's question for its
///   backend's process id, which psql answers) contains this text does not run; psql exits 3
///   with an SQL error.
///
/// Each fault is logged to `$FAULT_LOG`, the witness that it happened.
fn faulty_psql(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("faulty-psql");
    std::fs::write(
        &path,
        format!(
            r#"#!/bin/sh
# psql's first line (the session's question for its backend's pid) goes through at once: the
# session waits for its answer before it sends anything else.
copy=$(mktemp)
failed=$(mktemp)
{{
  IFS= read -r pid || true
  printf '%s\n' "$pid"
  IFS= read -r first || true
  if [ -n "${{FAIL_FIRST_LINE:-}}" ]; then
    case "$first" in *"$FAIL_FIRST_LINE"*)
      printf '%s' "$first" >"$failed"
      cat >/dev/null
      exit 0;;
    esac
  fi
  printf '%s\n' "$first"
  cat
}} | tee "$copy" | '{psql}' "$@"
rc=$?
if [ -s "$failed" ]; then
  echo "failed: $(cat "$failed")" >>"$FAULT_LOG"
  rm -f "$copy" "$failed"
  echo "psql:<stdin>:2: ERROR:  injected failure" >&2
  exit 3
fi
rm -f "$failed"
if [ -n "${{LOSE_ANSWER_AFTER:-}}" ] && grep -qF -- "$LOSE_ANSWER_AFTER" "$copy"; then
  rm -f "$copy"
  echo "lost the answer to: $LOSE_ANSWER_AFTER" >>"$FAULT_LOG"
  echo "psql: error: connection to server was lost" >&2
  exit 2
fi
rm -f "$copy"
exit $rc
"#,
            psql = pg().bin_dir().join("psql").display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_swap_a_lost_answer_or_a_failed_drop_keeps_the_restore_and_says_so() {
    let home = tempfile::tempdir().unwrap();
    let store = bucket("restore-swap-late").await;
    let db = dressed_db("restore_swap_late", "swap_owner3");
    let original = pg().dump_for_comparison(&db).unwrap();
    let key = take_backup(&db, &store, Compression::default(), 1_767_225_600).await;
    let before = profile(&db);
    let psql = faulty_psql(home.path());
    let log = home.path().join("faults.log");
    let swap = |fault: (&str, &str)| {
        let out = restore_cmd(home.path(), &db)
            .env("LITEMAAS_PSQL", &psql)
            .env("FAULT_LOG", &log)
            .env(fault.0, fault.1)
            .args(["--bucket", store.bucket(), "--key", &key])
            .args([
                "--swap",
                "--drop-previous",
                "--jobs",
                "2",
                "--yes",
                "--json",
            ])
            .output()
            .unwrap();
        let faults = std::fs::read_to_string(&log).unwrap_or_default();
        std::fs::remove_file(&log).ok();
        (out, faults)
    };

    // The swap commits, then its answer is lost: pg_database is read back, both renames
    // happened, so the restore stands (exit 0, a warning) and --drop-previous still runs.
    change(&db);
    let (out, faults) = swap(("LOSE_ANSWER_AFTER", "RENAME TO"));
    assert_eq!(
        faults, "lost the answer to: RENAME TO\n",
        "the fault happened"
    );
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(
            "warning: the swap reported an error, but pg_database shows both renames happened"
        ),
        "{err}"
    );
    assert!(err.contains("connection to server was lost"), "{err}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["swap"]["previous_dropped"], true, "{json}");
    assert_eq!(pg().dump_for_comparison(&db).unwrap(), original);
    assert_eq!(profile(&db), before);
    assert_eq!(databases_like(&format!("{db}_")), Vec::<String>::new());

    // The swap commits, then dropping the previous database fails: the restore stands (exit
    // 0: running it again would restore twice), the warning names the database kept, and
    // --json says it was not dropped.
    change(&db);
    let changed = pg().dump_for_comparison(&db).unwrap();
    let (out, faults) = swap(("FAIL_FIRST_LINE", "DROP DATABASE"));
    assert!(
        faults.starts_with(&format!("failed: DROP DATABASE IF EXISTS \"{db}_previous_")),
        "the fault happened: {faults}"
    );
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["swap"]["previous_dropped"], false, "{json}");
    let previous = json["swap"]["previous"].as_str().unwrap().to_owned();
    assert!(
        err.contains(&format!(
            "warning: the restored database is in place, but dropping the previous one, {previous}, failed"
        )),
        "{err}"
    );
    assert!(err.contains("injected failure"), "{err}");
    assert_eq!(pg().dump_for_comparison(&db).unwrap(), original);
    assert_eq!(profile(&db), before);
    assert_eq!(databases_like(&format!("{db}_")), vec![previous.clone()]);
    assert_previous_kept(&previous, &changed);
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_over_the_live_database_in_place_is_refused() {
    let Changed {
        home,
        store,
        db,
        key,
    } = backed_up_then_changed("restore-jobs", "restore_jobs").await;
    let live = pg().dump_for_comparison(&db).unwrap();
    let out = restore_cmd(home.path(), &db)
        .args([
            "--bucket",
            store.bucket(),
            "--key",
            &key,
            "--jobs",
            "2",
            "--yes",
        ])
        .output()
        .unwrap();
    assert_one_clear_line(&out, &["--swap", "--into", "nothing was changed"]);
    assert_eq!(pg().dump_for_comparison(&db).unwrap(), live);
}
