//! # litemaas-testkit
//!
//! Real parts for tests, started on loopback and removed afterwards:
//!
//! - [`PgCluster`]: an ephemeral PostgreSQL 15 cluster (initdb into a temporary directory as the
//!   `postgres` user, random free port, password authentication on TCP);
//! - [`S3Server`]: an S3-compatible server (moto 5.2.5, installed by `scripts/test-deps.sh`),
//!   shared by a test run, with one fresh bucket per test.
//!
//! Both have a `shared()` form that starts once per test binary and is stopped when the
//! process exits (an `atexit` hook, and a parent-death signal as a backstop).
//! [`proxy::FaultProxy`] goes in front of the S3 server to inject faults (SlowDown, resets,
//! stalls, lost replies). [`Webhook`] receives notifications.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! let pg = litemaas_testkit::PgCluster::shared();
//! let db = pg.create_database("example")?;
//! pg.psql(&db, "CREATE TABLE t (x int); INSERT INTO t VALUES (1);")?;
//! assert_eq!(pg.psql(&db, "SELECT count(*) FROM t")?.trim(), "1");
//! # Ok(()) }
//! ```
#![allow(unsafe_code)] // pre_exec, atexit and getpwnam: each use has a SAFETY note.
#![allow(clippy::unwrap_used)]

mod pg;
pub mod proxy;
pub mod s3;
mod sys;
mod webhook;

pub use pg::{OpenTransaction, PgCluster};
pub use s3::S3Server;
pub use webhook::Webhook;

use std::sync::atomic::{AtomicU64, Ordering};

/// The LiteMaaS-like sample schema and data (see [`PgCluster::seed_sample`]).
pub const SAMPLE_SQL: &str = include_str!("../sql/litemaas_sample.sql");

/// A LiteLLM-like schema and data: the proxy's Prisma tables (quoted mixed-case names, text
/// arrays, jsonb), indexes, foreign keys and a spend log of 12 000 rows.
pub const LITELLM_LIKE_SQL: &str = include_str!("../sql/litellm_like.sql");

/// A pagila-like schema and data holding every kind of object pg_dump writes (see the file's
/// header); needs the roles `pagila_reader` and `pagila_writer`.
pub const PAGILA_LIKE_SQL: &str = include_str!("../sql/pagila_like.sql");

/// A name unique within this machine for a while: `<prefix>-<pid>-<counter>`, lower case.
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        nanos % 10_000
    )
    .to_lowercase()
    .replace('_', "-")
}

/// Where `scripts/test-deps.sh` installs moto and the aws CLI.
pub fn test_home() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("LITEMAAS_TEST_HOME") {
        return dir.into();
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| "/tmp".into());
    cache.join("litemaas-backup")
}

/// A free TCP port on 127.0.0.1 (bound and released; the caller binds it next).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
