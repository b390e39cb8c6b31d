//! # litemaas-cli
//!
//! The pieces every `litemaas-*` binary shares, so each `main.rs` stays a table of contents:
//! [`StoreArgs`] (where backups live: an S3 bucket or a local directory), [`logging::init`],
//! [`cancel_on_signal`], [`progress`] bars on a terminal, and [`exit`] (one clear line per
//! failure, non-zero exit); for the jobs, [`report::exit_reporting`], which also writes the
//! [`metrics`] file and sends the [`notify`] webhook on every outcome.
//!
//! ```
//! use clap::Parser;
//!
//! #[derive(Parser)]
//! struct Args {
//!     #[command(flatten)]
//!     store: litemaas_cli::StoreArgs,
//! }
//! let args = Args::parse_from(["prog", "--dest", "/var/backups/litemaas"]);
//! assert_eq!(args.store.prefix(), "");
//! ```

pub mod logging;
pub mod metrics;
pub mod notify;
pub mod progress;
pub mod report;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use litemaas_backup::store::{LocalStore, ObjectStore, S3Options, S3Store};
use tokio_util::sync::CancellationToken;

/// Where backups live. Every flag also reads an environment variable.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// S3 bucket; without it, the local directory --dest.
    #[arg(long, env = "LITEMAAS_BUCKET")]
    pub bucket: Option<String>,

    /// Key prefix in the bucket [default: litemaas-backups]; none in a local --dest.
    #[arg(long, env = "LITEMAAS_PREFIX")]
    pub prefix: Option<String>,

    /// Local directory used when no bucket is given.
    #[arg(
        long,
        env = "LITEMAAS_DEST",
        default_value = "litemaas-backups",
        value_name = "DIR"
    )]
    pub dest: PathBuf,

    /// S3-compatible endpoint (ODF, MinIO); AWS_ENDPOINT_URL_S3 is read too.
    #[arg(long, env = "LITEMAAS_ENDPOINT_URL", value_name = "URL")]
    pub endpoint_url: Option<String>,

    /// AWS region (default: the AWS configuration chain).
    #[arg(long, env = "LITEMAAS_REGION")]
    pub region: Option<String>,

    /// Path-style S3 addressing (automatic for IP and localhost endpoints).
    #[arg(long, env = "LITEMAAS_PATH_STYLE")]
    pub path_style: bool,

    /// Send no per-part CRC32 checksums, for S3-compatible stores that reject them (older Ceph
    /// RGW); the SHA-256 integrity record still covers every byte.
    #[arg(long, env = "LITEMAAS_NO_CHECKSUMS")]
    pub no_checksums: bool,
}

impl StoreArgs {
    /// The key prefix: as given, else `litemaas-backups` in a bucket (the original layout) and
    /// nothing in a local directory (the directory is already its own place).
    pub fn prefix(&self) -> String {
        match (&self.prefix, &self.bucket) {
            (Some(prefix), _) => prefix.trim_matches('/').to_owned(),
            (None, Some(_)) => "litemaas-backups".into(),
            (None, None) => String::new(),
        }
    }

    /// Opens the store (S3 credentials from the standard AWS chain).
    pub async fn open(&self) -> anyhow::Result<Arc<dyn ObjectStore>> {
        Ok(match &self.bucket {
            Some(bucket) => {
                let mut options = S3Options::new(bucket);
                options.region.clone_from(&self.region);
                options.endpoint_url.clone_from(&self.endpoint_url);
                options.force_path_style = self.path_style;
                options.checksums = !self.no_checksums;
                Arc::new(S3Store::connect(&options).await?)
            }
            None => Arc::new(LocalStore::new(&self.dest)),
        })
    }
}

/// Where the database pod and its credentials are, in cluster mode. The defaults are LiteMaaS's.
#[derive(Debug, Clone, clap::Args)]
pub struct PodArgs {
    /// Label selector of the database pods.
    #[arg(
        long,
        env = "LITEMAAS_POD_SELECTOR",
        default_value = "app=litellm-postgres"
    )]
    pub pod_selector: String,

    /// Container running PostgreSQL.
    #[arg(long, env = "LITEMAAS_CONTAINER", default_value = "postgres")]
    pub container: String,

    /// Secret with keys username, password, database.
    #[arg(long, env = "LITEMAAS_SECRET", default_value = "litemaas-db")]
    pub secret: String,
}

impl PodArgs {
    /// The pod target in `namespace`.
    pub fn target(&self, namespace: &str) -> litemaas_backup::dump::PodTarget {
        let mut target = litemaas_backup::dump::PodTarget::litemaas(namespace);
        target.selector.clone_from(&self.pod_selector);
        target.container.clone_from(&self.container);
        target.secret.clone_from(&self.secret);
        target
    }
}

/// The namespace's Lease, which keeps backups, restores and prunes from overlapping.
#[derive(Debug, Clone, clap::Args)]
pub struct LeaseArgs {
    /// How long the Lease lives without renewal: a crashed run blocks the next one for at most
    /// this long, and a run that cannot renew it for two thirds of it stops.
    #[arg(
        long,
        env = "LITEMAAS_LEASE_DURATION",
        default_value = "2m",
        value_name = "DURATION"
    )]
    pub lease_duration: jiff::SignedDuration,
}

impl LeaseArgs {
    /// The Lease `litemaas-backup` in `namespace`, held by this process.
    pub fn lock(&self, client: kube::Client, namespace: &str) -> litemaas_backup::lock::LeaseLock {
        litemaas_backup::lock::LeaseLock::new(client, namespace, LEASE)
            .duration(self.lease_duration.unsigned_abs())
    }
}

/// The name of the Lease every binary takes in cluster mode.
pub const LEASE: &str = "litemaas-backup";

/// A Kubernetes client from the kubeconfig (`--context`, else its current context) or, inside a
/// pod, the service account.
pub async fn kube_client(context: Option<&str>) -> anyhow::Result<kube::Client> {
    use anyhow::Context;
    let config = match context {
        Some(context) => {
            let options = kube::config::KubeConfigOptions {
                context: Some(context.to_owned()),
                ..Default::default()
            };
            kube::Config::from_kubeconfig(&options)
                .await
                .with_context(|| format!("kubeconfig context {context}"))?
        }
        None => kube::Config::infer()
            .await
            .context("no Kubernetes configuration (kubeconfig or in-cluster)")?,
    };
    Ok(kube::Client::try_from(config)?)
}

/// A token cancelled by the first SIGINT or SIGTERM, so work in progress is aborted cleanly
/// rather than abandoned. A second signal exits at once (status 130), skipping the cleanup:
/// for a person who must stop the tool now. Nothing half-done can count even then: an
/// unfinished upload is never visible (and `litemaas-prune` aborts it later), and a restore's
/// psql sees the end of its input and rolls back.
pub fn cancel_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        tokio::select! {
            _ = int.recv() => tracing::warn!("SIGINT: cancelling (a second signal exits at once)"),
            _ = term.recv() => tracing::warn!("SIGTERM: cancelling (a second signal exits at once)"),
        }
        cancel.cancel();
        tokio::select! {
            _ = int.recv() => {},
            _ = term.recv() => {},
        }
        eprintln!("second signal: exiting at once, without cleaning up");
        std::process::exit(130);
    });
    token
}

/// Cancels `token` when `after` has passed (an overall deadline, so that nothing holds the
/// Lease or a connection for ever); the returned flag says whether the deadline was the cause.
pub fn cancel_after(
    token: &CancellationToken,
    after: std::time::Duration,
) -> Arc<std::sync::atomic::AtomicBool> {
    let reached = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (flag, cancel) = (reached.clone(), token.clone());
    tokio::spawn(async move {
        tokio::select! {
            () = tokio::time::sleep(after) => {
                tracing::warn!("the deadline ({after:?}) was reached: cancelling");
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
                cancel.cancel();
            }
            () = cancel.cancelled() => {}
        }
    });
    reached
}

/// Runs `main` on a multi-threaded runtime and turns its error into one line on stderr
/// (`<program>: error: <cause chain>`), also logged to the log file, and exit code 1.
pub fn exit(
    program: &str,
    main: impl std::future::Future<Output = anyhow::Result<()>>,
) -> ExitCode {
    exit_with(program, async { main.await.map(|()| ExitCode::SUCCESS) })
}

/// Like [`exit`], for a program whose success has more than one exit code (`litemaas-ls
/// --stale` exits 2 when backups are too old).
pub fn exit_with(
    program: &str,
    main: impl std::future::Future<Output = anyhow::Result<ExitCode>>,
) -> ExitCode {
    let result = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(main),
        Err(e) => Err(anyhow::anyhow!(e).context("cannot start the async runtime")),
    };
    match result {
        Ok(code) => code,
        Err(e) => fail(program, &e),
    }
}

/// The failure's one line on stderr (and in the log file), and exit code 1.
fn fail(program: &str, e: &anyhow::Error) -> ExitCode {
    let line = error_line(e);
    tracing::error!(target: logging::FILE_ONLY, "{program} failed: {line}");
    eprintln!("{program}: error: {line}");
    ExitCode::FAILURE
}

/// An error and its causes on one line, `a: b: c`, as the binaries print it (see
/// [`error_chain`]).
pub fn error_line(e: &anyhow::Error) -> String {
    error_chain(e.as_ref())
}

/// An error and its causes, `a: b: c`. A Kubernetes API error reads `message: reason (HTTP
/// code)` rather than kube's own text, which repeats the whole `Status` in Debug form; a cause
/// whose text its parent already holds is not said twice.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(cause) = next {
        let (text, source) = match cause.downcast_ref::<kube::Error>() {
            // Its source is the Status just said.
            Some(kube::Error::Api(status)) => (
                // The form compact_kube_text gives it inside a library's message, so that
                // it is said once.
                format!(
                    "{}: {} (HTTP {})",
                    status.message, status.reason, status.code
                ),
                None,
            ),
            _ => (compact_kube_text(&cause.to_string()), cause.source()),
        };
        if !text.is_empty() && !parts.last().is_some_and(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = source;
    }
    parts.join(": ")
}

/// kube's text for an API error, `ApiError: {message}: {reason} ({Status:?})`, as libraries
/// embed it in their own messages, shortened to `{message}: {reason} (HTTP {code})`.
fn compact_kube_text(text: &str) -> String {
    const START: &str = " (Status { ";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(START) {
        out.push_str(&rest[..at]);
        // The Debug form ends at the parenthesis that closes " (": skip quoted strings, whose
        // quotes Debug escapes.
        let blob = &rest[at + 1..];
        let (mut depth, mut quoted, mut escaped, mut end) = (0usize, false, false, None);
        for (i, c) in blob.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                '(' if !quoted => depth += 1,
                ')' if !quoted => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(i);
                        break;
                    }
                }
                _ => {}
            }
        }
        let Some(end) = end else {
            out.push_str(&rest[at..]);
            rest = "";
            break;
        };
        let code = blob[..end]
            .split("code: ")
            .nth(1)
            .and_then(|c| c.split(|ch: char| !ch.is_ascii_digit()).next())
            .filter(|c| !c.is_empty());
        if let Some(code) = code {
            out.push_str(&format!(" (HTTP {code})"));
        }
        rest = &blob[end + 1..];
    }
    out.push_str(rest);
    out.replace("ApiError: ", "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kubernetes_api_error_is_one_short_line() {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure",
            "message": "secrets \"litemaas-db\" is forbidden: User \"x\" cannot get resource \"secrets\"",
            "reason": "Forbidden",
            "code": 403
        }))
        .expect("a Status");
        let e = anyhow::Error::new(kube::Error::Api(Box::new(status)))
            .context("reading Secret litemaas/litemaas-db");
        let line = error_line(&e);
        assert_eq!(
            line,
            "reading Secret litemaas/litemaas-db: secrets \"litemaas-db\" is forbidden: User \"x\" cannot get resource \"secrets\": Forbidden (HTTP 403)"
        );
    }

    /// A library that writes kube's error into its own message (`exec in pod …: {source}`).
    #[derive(Debug, thiserror::Error)]
    #[error("exec in pod litemaas/db-0: {source}")]
    struct Embedded {
        source: kube::Error,
    }

    #[test]
    fn a_kubernetes_api_error_inside_a_librarys_message_is_shortened_and_said_once() {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure",
            "message": "pods \"db-0\" is forbidden: User \"x\" cannot create resource \"pods/exec\" (a \")\" inside)",
            "reason": "Forbidden",
            "code": 403,
            "details": {"kind": "pods/exec"}
        }))
        .expect("a Status");
        let e = anyhow::Error::new(Embedded {
            source: kube::Error::Api(Box::new(status)),
        })
        .context("backup failed");
        assert_eq!(
            error_line(&e),
            "backup failed: exec in pod litemaas/db-0: pods \"db-0\" is forbidden: User \"x\" cannot create resource \"pods/exec\" (a \")\" inside): Forbidden (HTTP 403)"
        );
        assert_eq!(
            compact_kube_text("no status here (x)"),
            "no status here (x)"
        );
    }
}
