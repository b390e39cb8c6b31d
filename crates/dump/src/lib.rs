//! # litemaas-dump
//!
//! Streams a database dump into compressed chunks, checking that the dump really succeeded.
//!
//! - [`DumpSource`] is the seam: [`PgDump`] runs `pg_dump --clean --if-exists` on this host (the
//!   password goes through the environment, never the command line); with the `kube` feature,
//!   `PodDump` runs it inside the database pod through the exec API (the password through
//!   stdin); any `AsyncRead` becomes a source with [`DumpStream::from_reader`].
//! - [`Encoded`] compresses on the fly ([`Compression`]: gzip on all cores, a gzip member per
//!   block that plain `gunzip` reads as one stream ([`GzipEngine`]), zstd, or none) and computes
//!   the SHA-256 and sizes of what is stored.
//! - A dump is good only when its [`DumpStream::completion`] returns `Ok` after the bytes end:
//!   `pg_dump`'s exit status, a signal, empty output or a missing completion marker all turn into
//!   an [`Error`]. The caller must not commit the bytes anywhere before that.
//!
//! ```
//! use futures::TryStreamExt;
//! use litemaas_dump::{CompressOptions, Compression, DumpStream, Encoded};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Any reader can be a source; a PgDump is used the same way.
//! let dump = DumpStream::from_reader(&b"-- my data\n"[..]);
//! let mut encoded = Encoded::new(dump.reader, Compression::default(), CompressOptions::default());
//! let mut stored = Vec::new();
//! while let Some(chunk) = encoded.try_next().await? {
//!     stored.extend_from_slice(&chunk); // an upload would go here
//! }
//! dump.completion.await?; // only now is it a backup
//! let summary = encoded.summary().expect("ended");
//! assert_eq!(summary.stored_bytes, stored.len() as u64);
//! assert_eq!(&stored[..2], &[0x1f, 0x8b]); // gzip
//! # Ok(()) }
//! ```

mod compress;
mod conn;
mod encode;
mod error;
mod pg;
#[cfg(feature = "kube")]
pub mod pod;
mod secret;
mod source;
pub mod tap;

pub use compress::{CompressOptions, Compression, GzipEngine, compress};
pub use conn::{PgConnection, redact};
pub use encode::{EncodeSummary, Encoded};
pub use error::{Error, Result};
pub use pg::PgDump;
#[cfg(feature = "kube")]
pub use pod::{PodDump, PodTarget};
pub use secret::Secret;
pub use source::{DumpInfo, DumpSource, DumpStream};
