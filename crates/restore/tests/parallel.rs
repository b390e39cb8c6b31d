//! The parallel loader against a real PostgreSQL 15: the database it loads must dump exactly as
//! one loaded by `psql -f` (rows compared as sets within each table: a table loaded in pieces on
//! several connections keeps its rows, not their physical order), on the LiteMaaS sample, a
//! LiteLLM-like and a pagila-like schema, at 1 to 3 connections; what it does not understand
//! runs in order; a failing statement and a cut backup fail the load.
#![allow(missing_docs, clippy::unwrap_used)]

use std::io::Write;
use std::pin::Pin;

use litemaas_dump::PgConnection;
use litemaas_restore::parallel::{self, ParallelOptions, ParallelStats};
use litemaas_restore::{Error, LocalPsql, RestoreOptions};
use litemaas_testkit::PgCluster;
use tokio::io::AsyncRead;
use tokio_util::sync::CancellationToken;

fn pg() -> &'static PgCluster {
    let pg = PgCluster::shared();
    pg.ensure_role("pagila_reader", "").unwrap();
    pg.ensure_role("pagila_writer", "").unwrap();
    pg
}

fn source(prefix: &str, sql: &str) -> String {
    let pg = pg();
    let db = pg.create_database(prefix).unwrap();
    pg.run_script(&db, sql.as_bytes()).unwrap();
    db
}

fn pg_dump(db: &str, extra: &[&str]) -> Vec<u8> {
    let out = pg()
        .command("pg_dump")
        .args(["--clean", "--if-exists", "-d", db])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

/// `psql -f` of the dump into a new database: the reference.
fn psql_f(prefix: &str, dump: &[u8]) -> String {
    let pg = pg();
    let db = pg.create_database(prefix).unwrap();
    let path = std::env::temp_dir().join(format!("{db}.sql"));
    std::fs::write(&path, dump).unwrap();
    let out = pg
        .command("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &db, "-f"])
        .arg(&path)
        .output()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    db
}

async fn load(
    db: &str,
    stored: Vec<u8>,
    jobs: usize,
) -> litemaas_restore::Result<(litemaas_restore::RestoreReport, ParallelStats)> {
    let sink = LocalPsql::new(PgConnection::parse(&pg().url(db)).unwrap())
        .program(pg().bin_dir().join("psql"));
    let reader: Pin<Box<dyn AsyncRead + Send>> = Box::pin(std::io::Cursor::new(stored));
    parallel::load(
        reader,
        &sink,
        &RestoreOptions::default(),
        &ParallelOptions {
            jobs,
            // Small pieces: the bigger tables of the fixtures are loaded in several.
            chunk_bytes: 64 * 1024,
        },
        &CancellationToken::new(),
    )
    .await
}

/// A dump for comparison: the rows of each COPY block sorted (see the file's doc).
fn comparable(db: &str) -> String {
    let dump = pg().dump_for_comparison(db).unwrap();
    let mut out = Vec::new();
    let mut rows: Option<Vec<&str>> = None;
    for line in dump.lines() {
        match &mut rows {
            Some(r) if line == "\\." => {
                r.sort_unstable();
                out.append(r);
                out.push(line);
                rows = None;
            }
            Some(r) => r.push(line),
            None => {
                out.push(line);
                if line.starts_with("COPY ") && line.ends_with(" FROM stdin;") {
                    rows = Some(Vec::new());
                }
            }
        }
    }
    out.join("\n")
}

/// `pieces`: some table is big enough to be loaded in several pieces.
async fn same_as_psql_f(prefix: &str, sql: &str, pieces: bool) {
    let src = source(prefix, sql);
    let dump = pg_dump(&src, &[]);
    let reference = comparable(&psql_f(&format!("{prefix}-ref"), &dump));
    assert_eq!(reference, comparable(&src), "psql -f itself differs");
    for jobs in [1, 2, 3] {
        let db = pg().create_database(&format!("{prefix}-j{jobs}")).unwrap();
        let (report, stats) = load(&db, gzip(&dump), jobs).await.unwrap();
        assert_eq!(stats.serial_from, None, "jobs {jobs}: {stats:?}");
        // The phases are parts of the whole load, counted once each.
        let p = stats.phases;
        assert!(
            p.pre_data_ms + p.data_ms + p.post_data_ms <= report.duration_ms,
            "{p:?} in {} ms",
            report.duration_ms
        );
        assert!(
            report
                .checks
                .iter()
                .any(|c| c.contains("completion marker"))
        );
        if jobs > 1 {
            assert_eq!(stats.jobs, jobs, "{stats:?}");
            if pieces {
                assert!(stats.copy_pieces > report.tables.len() as u64, "{stats:?}");
            }
            assert!(stats.parallel_objects > 0, "{stats:?}");
        } else {
            assert_eq!(stats.jobs, 1);
        }
        let loaded = comparable(&db);
        if loaded != reference {
            let diff = reference.lines().zip(loaded.lines()).find(|(a, b)| a != b);
            panic!(
                "jobs {jobs}: the loaded database differs from psql -f's: first difference {diff:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_litemaas_sample_loads_as_psql_f_does() {
    same_as_psql_f("par-sample", litemaas_testkit::SAMPLE_SQL, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_litellm_like_database_loads_as_psql_f_does() {
    same_as_psql_f("par-litellm", litemaas_testkit::LITELLM_LIKE_SQL, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pagila_like_database_with_every_kind_of_object_loads_as_psql_f_does() {
    same_as_psql_f("par-pagila", litemaas_testkit::PAGILA_LIKE_SQL, true).await;
}

/// What the loader does not understand runs in order: the result is still psql's.
async fn falls_back(prefix: &str, sql: &str, dump_args: &[&str], why: &str) {
    let src = source(prefix, sql);
    let dump = pg_dump(&src, dump_args);
    let reference = comparable(&psql_f(&format!("{prefix}-ref"), &dump));
    let db = pg().create_database(&format!("{prefix}-par")).unwrap();
    let (_, stats) = load(&db, gzip(&dump), 3).await.unwrap();
    let reason = stats.serial_from.clone().unwrap_or_default();
    assert!(reason.contains(why), "{stats:?}");
    assert_eq!(comparable(&db), reference);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dump_of_inserts_runs_in_order() {
    falls_back(
        "par-inserts",
        litemaas_testkit::LITELLM_LIKE_SQL,
        &["--inserts"],
        "not a COPY block",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_objects_run_in_order() {
    let sql = format!(
        "{}\nSELECT lo_from_bytea(0, 'a large object');\n",
        litemaas_testkit::SAMPLE_SQL
    );
    falls_back("par-lo", &sql, &[], "objects of type BLOB").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_index_fails_the_load_with_psqls_error() {
    let src = source("par-fail", litemaas_testkit::LITELLM_LIKE_SQL);
    let dump = String::from_utf8(pg_dump(&src, &[])).unwrap().replace(
        "USING btree (\"startTime\");",
        "USING btree (\"no_such_column\");",
    );
    let db = pg().create_database("par-fail-par").unwrap();
    let err = load(&db, gzip(dump.as_bytes()), 2).await.unwrap_err();
    assert!(
        matches!(&err, Error::Psql { message, .. } if message.contains("no_such_column")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_backup_fails_the_load() {
    let src = source("par-cut", litemaas_testkit::LITELLM_LIKE_SQL);
    let stored = gzip(&pg_dump(&src, &[]));
    let db = pg().create_database("par-cut-par").unwrap();
    let err = load(&db, stored[..stored.len() / 2].to_vec(), 2)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Read { .. }), "{err}");
}
