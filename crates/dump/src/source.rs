//! The dump-source seam: anything that yields a dump as bytes and can say, once the bytes
//! end, whether they are a whole, good dump.

use std::fmt::Debug;
use std::pin::Pin;

use async_trait::async_trait;
use futures::future::BoxFuture;
use tokio::io::AsyncRead;

use crate::Result;

/// Facts about a finished dump, for the integrity record.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DumpInfo {
    /// The dump program and its version, e.g. `pg_dump 15.18`.
    pub tool_version: Option<String>,
    /// The database server's version as the dump reports it.
    pub server_version: Option<String>,
    /// The database that was dumped.
    pub database: Option<String>,
}

/// A dump in progress: read [`reader`](Self::reader) to its end, then await
/// [`completion`](Self::completion), which says whether the bytes are a good dump (exit status,
/// completeness). Never treat the bytes as a backup before `completion` returns `Ok`.
/// Dropping either half stops the dump.
pub struct DumpStream {
    /// The dump's bytes.
    pub reader: Pin<Box<dyn AsyncRead + Send>>,
    /// Resolves once the dump program has ended.
    pub completion: BoxFuture<'static, Result<DumpInfo>>,
}

impl DumpStream {
    /// A stream whose end means success: for sources with no exit status of their own.
    pub fn from_reader(reader: impl AsyncRead + Send + 'static) -> Self {
        Self {
            reader: Box::pin(reader),
            completion: Box::pin(async { Ok(DumpInfo::default()) }),
        }
    }
}

impl Debug for DumpStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DumpStream").finish_non_exhaustive()
    }
}

/// Where dumps come from: `pg_dump` on this host ([`PgDump`](crate::PgDump)), or inside a pod,
/// or any other program or reader.
#[async_trait]
pub trait DumpSource: Send + Sync + Debug {
    /// A human description, e.g. `pg_dump of litemaas on db:5432`.
    fn describe(&self) -> String;

    /// The name of the database dumped, if known before starting.
    fn database(&self) -> Option<String>;

    /// Starts a dump.
    ///
    /// # Errors
    /// The dump could not be started at all.
    async fn start(&self) -> Result<DumpStream>;
}
