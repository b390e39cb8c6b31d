//! Errors of dump sources and of the encoding pipeline.

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong producing a dump. None of the variants ever holds a password.
/// Causes are exposed through [`std::error::Error::source`], not repeated in the message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database URL could not be understood. The URL is shown with its password hidden.
    #[error("invalid database URL {url}: {reason}")]
    InvalidUrl {
        /// The URL with any password replaced by `***`.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The dump program could not be started.
    #[error("cannot start {program}")]
    Spawn {
        /// The program, e.g. `pg_dump`.
        program: String,
        /// The cause (not found, permission denied, …).
        #[source]
        source: std::io::Error,
    },
    /// The dump program failed: a non-zero exit or a signal. Its output must not be used.
    #[error("{program} failed ({status}): {stderr}")]
    DumpFailed {
        /// The program.
        program: String,
        /// `exit code 1`, `killed by signal 9`, …
        status: String,
        /// The last lines it wrote to standard error.
        stderr: String,
    },
    /// The dump program exited successfully but its output cannot be a whole dump.
    #[error("{program} output is not a complete dump: {reason}")]
    Incomplete {
        /// The program.
        program: String,
        /// Empty output, missing completion marker, …
        reason: String,
    },
    /// No Running pod matches the selector.
    #[error(
        "no Running pod with labels {selector} in namespace {namespace} ({found} matching pod(s) in other phases)"
    )]
    NoPod {
        /// Namespace.
        namespace: String,
        /// Label selector.
        selector: String,
        /// Pods that match but are not Running.
        found: usize,
    },
    /// The credentials Secret does not exist.
    #[error("Secret {namespace}/{name} not found")]
    SecretMissing {
        /// Namespace.
        namespace: String,
        /// Secret name.
        name: String,
    },
    /// A key is missing from the credentials Secret (or is empty).
    #[error("Secret {namespace}/{name} has no (non-empty) key {key:?}")]
    SecretKeyMissing {
        /// Namespace.
        namespace: String,
        /// Secret name.
        name: String,
        /// The key.
        key: String,
    },
    /// The Kubernetes API failed.
    #[error("{context}")]
    Kube {
        /// What was being done.
        context: String,
        /// The cause (boxed: kube is an optional dependency of the crate's users).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Reading the dump, or compressing it, failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
