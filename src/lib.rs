//! # litemaas-backup
//!
//! Backup and disaster recovery for LiteMaaS (LiteLLM on OpenShift). This crate is the facade:
//! it re-exports the library crates, each usable alone,
//!
//! - [`dump`] (`litemaas-dump`): `pg_dump` and other sources, streamed through compression
//!   with SHA-256;
//! - [`store`] (`litemaas-s3`): S3, local-directory and in-memory stores with bounded-memory
//!   multipart upload;
//! - [`retention`] (`litemaas-retention`): which backups to keep, as pure logic;
//!
//! and holds the jobs that join them: [`backup::run`], one streaming database backup whose
//! object becomes visible only after the dump is proven good, followed by its integrity record;
//! [`prune`], retention applied to the dumps in a store and cleanup of abandoned uploads; and
//! [`catalog`], which backup a restore reads ([`restore`] does the restore itself).
//!
//! With the `kube` feature (on by default), cluster mode too: [`cluster::run`] backs up a
//! namespace (in-pod dump, VolumeSnapshot, retention) holding the [`lock`] Lease, and
//! `snapshot` (`litemaas-snapshot`) manages VolumeSnapshots. Local-only users build without it
//! (`default-features = false`) and get no Kubernetes dependency at all.
//!
//! ```
//! use litemaas_backup::backup::{self, BackupOptions};
//! use litemaas_backup::dump::DumpStream;
//! use litemaas_backup::store::{MemoryStore, ObjectStore};
//! use tokio_util::sync::CancellationToken;
//!
//! # #[derive(Debug)] struct Fixed;
//! # #[async_trait::async_trait]
//! # impl litemaas_backup::dump::DumpSource for Fixed {
//! #     fn describe(&self) -> String { "fixed".into() }
//! #     fn database(&self) -> Option<String> { None }
//! #     async fn start(&self) -> litemaas_backup::dump::Result<DumpStream> {
//! #         Ok(DumpStream::from_reader(&b"SELECT 1;\n"[..]))
//! #     }
//! # }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! let store = MemoryStore::new();
//! let options = BackupOptions::new(jiff::Timestamp::from_second(1_767_225_600)?); // 2026-01-01
//! let report = backup::run(&Fixed, &store, &options, &CancellationToken::new()).await?;
//! assert_eq!(report.key, "litemaas-backups/database-20260101-000000.sql.gz");
//! assert!(store.head(&report.record_key).await.is_ok());
//! # Ok(()) }
//! ```

pub mod backup;
pub mod catalog;
#[cfg(feature = "kube")]
pub mod cluster;
pub mod inventory;
#[cfg(feature = "kube")]
pub mod lock;
pub mod prune;
pub mod record;

/// Dump sources and the compression pipeline (`litemaas-dump`).
pub use litemaas_dump as dump;
/// All-or-nothing restore of plain pg_dump backups (`litemaas-restore`).
pub use litemaas_restore as restore;
/// Retention planning (`litemaas-retention`).
pub use litemaas_retention as retention;
/// Object stores and multipart upload (`litemaas-s3`).
pub use litemaas_s3 as store;
/// VolumeSnapshots (`litemaas-snapshot`).
#[cfg(feature = "kube")]
pub use litemaas_snapshot as snapshot;
