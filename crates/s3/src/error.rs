//! The error type shared by every [`ObjectStore`](crate::ObjectStore) implementation.

use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong talking to a store. Every variant names the store and the key,
/// bucket or path concerned; none ever holds a credential. Causes are exposed through
/// [`std::error::Error::source`], not repeated in the message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The object does not exist.
    #[error("{store}: object {key:?} not found")]
    NotFound {
        /// The store, e.g. `s3://bucket` or `file:///var/backups`.
        store: String,
        /// The key that was asked for.
        key: String,
    },
    /// A write in [`PutMode::Create`](crate::PutMode::Create) found an object at its key, or
    /// another write to the key in progress (S3 `412 PreconditionFailed` or `409
    /// ConditionalRequestConflict` to `If-None-Match: *`): the object there was left untouched.
    /// Not worth a retry: the key is taken.
    #[error("{store}: {key:?} already exists (another writer created it); it was left untouched")]
    AlreadyExists {
        /// The store.
        store: String,
        /// The key.
        key: String,
    },
    /// The bucket does not exist (S3 `NoSuchBucket`).
    #[error("S3 bucket {bucket:?} does not exist (or is in another region)")]
    BucketNotFound {
        /// The bucket name.
        bucket: String,
    },
    /// The credentials were refused or lack a permission.
    #[error(
        "{store}: access denied during {operation}{}: {message} (check the credentials and the IAM policy)",
        on_key(key)
    )]
    AccessDenied {
        /// The store.
        store: String,
        /// The S3 operation, e.g. `UploadPart`.
        operation: &'static str,
        /// The key or prefix.
        key: String,
        /// The server's message (never a credential).
        message: String,
    },
    /// No usable credentials could be found.
    #[error(
        "{store}: no AWS credentials found (environment, profile, SSO, web identity, EC2 instance profile): {message}"
    )]
    NoCredentials {
        /// The store.
        store: String,
        /// What the credential chain said.
        message: String,
    },
    /// The store could not be reached (connection refused, DNS, TLS, timeout), after retries.
    #[error("{store}: cannot reach {endpoint} during {operation}: {message}")]
    Unreachable {
        /// The store.
        store: String,
        /// The endpoint that was tried.
        endpoint: String,
        /// The S3 operation.
        operation: &'static str,
        /// The transport's message.
        message: String,
    },
    /// Any other error answered by the service, after retries.
    #[error("{store}: {operation}{} failed: {code}: {message}", on_key(key))]
    Service {
        /// The store.
        store: String,
        /// The S3 operation.
        operation: &'static str,
        /// The key or prefix.
        key: String,
        /// The S3 error code (`EntityTooSmall`, `SlowDown`, …) or HTTP status.
        code: String,
        /// The server's message.
        message: String,
    },
    /// A key that cannot be stored safely (empty, absolute, `..`, control characters).
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey {
        /// The rejected key.
        key: String,
        /// Why.
        reason: &'static str,
    },
    /// A local file-system operation failed.
    #[error("{operation} {path}")]
    Io {
        /// What was being done (`create`, `write`, `fsync`, `rename`, …).
        operation: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The stream was longer than a multipart upload can hold (10,000 parts of at most 5 GiB).
    #[error("the stream is too large for one S3 object ({parts} parts of up to 5 GiB)")]
    TooLarge {
        /// Parts written so far.
        parts: u32,
    },
    /// A writer used after it finished or failed, or a part's task that died: a bug, not a
    /// condition of the store.
    #[error("internal error: {0}")]
    Internal(String),
    /// The store's configuration is unusable (no region, bad endpoint URL, …).
    #[error("invalid store configuration: {0}")]
    Config(String),
}

fn on_key(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!(" of {key:?}")
    }
}

impl Error {
    /// Whether trying the same operation again later may succeed (network trouble, throttling,
    /// server errors). Retries inside one operation are already done by the store.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unreachable { .. } => true,
            Error::Service { code, .. } => {
                matches!(
                    code.as_str(),
                    "SlowDown"
                        | "Throttling"
                        | "RequestTimeout"
                        | "InternalError"
                        | "ServiceUnavailable"
                ) || code.starts_with('5')
            }
            _ => false,
        }
    }

    /// Whether the store does not implement the operation (`NotImplemented`, HTTP 501; or
    /// `MethodNotAllowed`, HTTP 405, for a request S3 defines): some S3-compatible stores lack
    /// ListMultipartUploads, and s3rver 3.7.1 lacks AbortMultipartUpload too.
    pub fn is_not_implemented(&self) -> bool {
        matches!(self, Error::Service { code, .. }
            if matches!(code.as_str(), "NotImplemented" | "501" | "MethodNotAllowed" | "405"))
    }

    /// Whether a create-only write found its key taken ([`Error::AlreadyExists`]).
    pub fn is_already_exists(&self) -> bool {
        matches!(self, Error::AlreadyExists { .. })
    }

    pub(crate) fn io(
        operation: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            operation,
            path: path.into(),
            source,
        }
    }
}
