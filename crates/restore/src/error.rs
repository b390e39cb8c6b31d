//! Errors of a restore. None of them ever holds a password.

use crate::Codec;
use crate::plain::FormatError;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong restoring a backup. Unless said otherwise (see
/// [`Error::CommitUnknown`]), the target database was left exactly as it was: nothing is
/// committed before every check passed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The backup holds no bytes at all.
    #[error("the backup is empty (0 bytes)")]
    Empty,
    /// Reading the stored bytes failed, or the decoder refused them (a truncated gzip or zstd
    /// stream, a bad gzip CRC or length, corrupt data).
    #[error("reading the backup failed")]
    Read {
        /// The cause (its message says which: `unexpected end of file`, `CRC computed does not match`, …).
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not in the codec the name or the record promises.
    #[error("the backup is {found} data, but {what} says {promised}", found = found.name(), promised = promised.name())]
    CodecMismatch {
        /// `its name "…"` or `its integrity record`.
        what: String,
        /// What was promised.
        promised: Codec,
        /// What the magic bytes show.
        found: Codec,
    },
    /// The stored bytes' SHA-256 is not the integrity record's.
    #[error(
        "the backup's SHA-256 is {found}, but its integrity record says {expected}: the object is corrupt"
    )]
    ChecksumMismatch {
        /// From the record.
        expected: String,
        /// Computed.
        found: String,
    },
    /// The stored size is not the record's.
    #[error("the backup holds {found} bytes, but its integrity record says {expected}")]
    SizeMismatch {
        /// From the record.
        expected: u64,
        /// Read.
        found: u64,
    },
    /// The SQL is not a whole pg_dump plain dump.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// psql could not be started, or talking to it failed.
    #[error("{context}")]
    Sink {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// psql reported an error (connection refused, bad password, an SQL error under
    /// `ON_ERROR_STOP`); the transaction was rolled back.
    #[error("{target}: psql failed ({status}): {message}{hint}")]
    Psql {
        /// The target, e.g. `database litemaas on db:5432`.
        target: String,
        /// `exit code 3`, …
        status: String,
        /// psql's error output, one line.
        message: String,
        /// What to do about it, when known (e.g. the setting to raise).
        hint: String,
    },
    /// COMMIT was sent but its outcome could not be learnt (the connection broke): the
    /// restore may or may not have been applied. The only error after which the target is
    /// not known to be unchanged.
    #[error(
        "{target}: COMMIT was sent but its outcome is unknown ({message}); check the database before doing anything else"
    )]
    CommitUnknown {
        /// The target.
        target: String,
        /// What psql said.
        message: String,
    },
    /// The restore was cancelled (SIGINT/SIGTERM) before COMMIT.
    #[error("cancelled before COMMIT")]
    Cancelled,
    /// A database for `--into` or a scratch database could not be created or dropped.
    #[error("{context}: {message}")]
    Database {
        /// What was being done.
        context: String,
        /// Why.
        message: String,
    },
    /// A row count after the restore differs from the dump's.
    #[error("table {table}: {found} row(s) after the restore, but {expected} in {source_name}")]
    RowCount {
        /// The table.
        table: String,
        /// Expected rows.
        expected: u64,
        /// Rows found.
        found: u64,
        /// Where the expected count comes from (`the dump`, `the integrity record`).
        source_name: String,
    },
    /// A bug, not a condition of the input or the target.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Whether the target database is known to be exactly as it was before.
    pub fn target_unchanged(&self) -> bool {
        !matches!(self, Error::CommitUnknown { .. })
    }
}
