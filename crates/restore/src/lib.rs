//! # litemaas-restore
//!
//! All-or-nothing restore of plain `pg_dump` backups: a backup (any reader: an object from a
//! store, a downloaded file) → checks → a SQL sink (psql here, psql in the database pod, or
//! anything implementing [`SqlSink`]).
//!
//! A restore commits only when all of these are known before `COMMIT` is sent:
//!
//! 1. the stored stream ended cleanly (gzip's CRC-32 and length trailer, zstd's frames);
//! 2. the SHA-256 of the stored bytes equals the integrity record's (when one exists);
//! 3. the SQL ends with pg_dump's `-- PostgreSQL database dump complete` marker;
//! 4. psql, run with `ON_ERROR_STOP`, reported no error.
//!
//! That holds by construction (see [`restore()`]): the tool opens the transaction itself and
//! sends `COMMIT` only after the checks and after psql ran everything before it (so a restore
//! waiting for a lock can still be cancelled); psql is never run with `--single-transaction`,
//! whose end of input means COMMIT. Any failure, a cancellation, a killed tool or a dropped exec
//! stream ends psql's input without COMMIT, and PostgreSQL rolls everything back; a psql stuck
//! in a statement, which does not read that end, has its server session ended for it
//! ([`stop_backend`]). The clean
//! (DROP) section of a `--clean` dump is made harmless ([`plain::PlainFilter`]) while every
//! CREATE, COPY and ALTER after it keeps `ON_ERROR_STOP`.
//!
//! Memory stays flat whatever the dump's size: bytes flow through in 256 KiB chunks.
//!
//! ```
//! use std::io::Write;
//! use litemaas_restore::{MemorySink, RestoreOptions, restore};
//! use tokio_util::sync::CancellationToken;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dump = "--\n-- PostgreSQL database dump\n--\n\nCREATE TABLE public.t (x int);\n\
//!             COPY public.t (x) FROM stdin;\n1\n\\.\n\n--\n-- PostgreSQL database dump complete\n--\n\n";
//! let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
//! gz.write_all(dump.as_bytes())?;
//! let stored = gz.finish()?;
//!
//! let sink = MemorySink::new(); // LocalPsql::new(url) or PodPsql in real use
//! let report = restore(Box::pin(std::io::Cursor::new(stored)), &sink, &RestoreOptions::default(),
//!                      &CancellationToken::new()).await?;
//! assert_eq!(report.tables["public.t"], 1);
//! let sent = String::from_utf8(sink.sessions()[0].clone())?;
//! assert!(sent.starts_with("BEGIN;\n--\n-- PostgreSQL database dump\n"));
//! assert!(sent.ends_with("COMMIT;\nSELECT 'litemaas-restore: committed';\n"));
//! # Ok(()) }
//! ```

mod error;
mod input;
mod job;
pub mod parallel;
pub mod plain;
#[cfg(feature = "kube")]
mod pod;
mod sink;
pub mod swap;
mod verify;

pub use error::{Error, Result};
pub use input::{Codec, Expected};
pub use job::{APPLICATION_NAME, RestoreOptions, RestoreReport, restore};
#[cfg(feature = "kube")]
pub use pod::PodPsql;
pub use sink::{Ended, LocalPsql, MemorySink, SqlSession, SqlSink, stop_backend};
pub use verify::{
    ServerInfo, TableCount, count_rows, create_database, database_exists, drop_database,
    quote_ident, quote_literal, server_info,
};
