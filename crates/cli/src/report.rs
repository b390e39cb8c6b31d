//! What a job leaves behind for the people watching it: the metrics file and the notification,
//! both written on every outcome (success, failure, failure before anything started, a first
//! SIGINT/SIGTERM), by [`exit_reporting`], which every job binary's `main` calls in place of
//! [`exit`](crate::exit).
//!
//! Decisions, for the on-call engineer:
//! - A notification that cannot be delivered is a warning on stderr and in the log; it never
//!   changes the exit code (the job's outcome is what the exit code says, and the metrics file
//!   still reports it).
//! - A metrics file that cannot be written turns a successful run's exit code into 1, with a
//!   line saying the job itself succeeded: a monitor reading a stale file would otherwise alert
//!   on a schedule that works, or stop seeing one that does not. A `--metrics-file` in a
//!   directory that does not exist is refused before the job starts (nothing is done).
//! - A second signal exits at once (status 130) and writes nothing.
//! - The notification comes after the job and the metrics file, so it can delay the exit by at
//!   most four attempts of `--notify-timeout` plus 7 s of backoff; `--timeout` does not cover it.
//! - `--notify-on success` notifies only successes (a heartbeat for a dead man's switch such as
//!   healthchecks.io); `always` notifies both.
//!
//! ```
//! use clap::Parser;
//! use litemaas_cli::report::{Part, ReportArgs};
//!
//! #[derive(Parser)]
//! struct Args {
//!     #[command(flatten)]
//!     report: ReportArgs,
//! }
//! let args = Args::parse_from(["prog", "--metrics-file", "/var/lib/node_exporter/litemaas.prom"]);
//! assert_eq!(args.report.notify_on, litemaas_cli::report::NotifyOn::Failure);
//! let part = Part::ok("dump", "litellm").stored("litemaas-backups/x.sql.gz", 1024);
//! assert_eq!(part.bytes, Some(1024));
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::metrics::{Metrics, Sample};
use crate::notify::{Notifier, NotifyUrl};

/// `--metrics-file`, `--notify-url`, `--notify-on`, `--notify-timeout` (global: accepted after a
/// subcommand too).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Monitoring")]
pub struct ReportArgs {
    /// Write Prometheus metrics here after every run, atomically, mode 0644 (a `*.prom` file in
    /// node_exporter's textfile directory). Last success times are kept from the previous file.
    #[arg(
        long,
        env = "LITEMAAS_METRICS_FILE",
        value_name = "PATH",
        global = true
    )]
    pub metrics_file: Option<PathBuf>,

    /// POST a JSON summary of the run here (a Slack incoming webhook works). The URL may hold a
    /// token: give it through the environment variable, not as a flag; it is never printed.
    #[arg(
        long,
        env = "LITEMAAS_NOTIFY_URL",
        hide_env_values = true,
        value_name = "URL",
        global = true
    )]
    pub notify_url: Option<HiddenUrl>,

    /// When to notify: on failure, on success only (a heartbeat for a dead man's switch), or
    /// always.
    #[arg(
        long,
        env = "LITEMAAS_NOTIFY_ON",
        value_enum,
        default_value = "failure",
        global = true
    )]
    pub notify_on: NotifyOn,

    /// Timeout of each notification attempt (four attempts, 1 s, 2 s and 4 s apart, on
    /// connection errors, timeouts, 429 and 5xx).
    #[arg(
        long,
        env = "LITEMAAS_NOTIFY_TIMEOUT",
        default_value = "10s",
        value_name = "DURATION",
        global = true
    )]
    pub notify_timeout: jiff::SignedDuration,
}

/// A URL kept as given, shown as `***` in Debug output; checked by [`exit_reporting`], whose
/// error never repeats it (clap's would).
#[derive(Clone)]
pub struct HiddenUrl(String);

impl std::fmt::Debug for HiddenUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::str::FromStr for HiddenUrl {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// When to send a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NotifyOn {
    /// Only when the run fails.
    Failure,
    /// Only when the run succeeds.
    Success,
    /// After every run.
    Always,
}

impl NotifyOn {
    fn wants(self, succeeded: bool) -> bool {
        match self {
            NotifyOn::Failure => !succeeded,
            NotifyOn::Success => succeeded,
            NotifyOn::Always => true,
        }
    }
}

/// One part of a run (see [`metrics`](crate::metrics) for the part names).
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    /// `dump`, `snapshot`, `retention`, …
    pub part: &'static str,
    /// The database, or empty.
    pub database: String,
    /// Whether it succeeded.
    pub succeeded: bool,
    /// How long it took, when measured.
    pub duration: Option<Duration>,
    /// What it stored: a key (or snapshot name) …
    pub key: Option<String>,
    /// … and its size in bytes.
    pub bytes: Option<u64>,
    /// Its error line, when it failed.
    pub error: Option<String>,
}

impl Part {
    /// A part that succeeded.
    pub fn ok(part: &'static str, database: &str) -> Self {
        Self {
            part,
            database: database.into(),
            succeeded: true,
            duration: None,
            key: None,
            bytes: None,
            error: None,
        }
    }

    /// A part that failed with `error`.
    pub fn failed(part: &'static str, database: &str, error: impl Into<String>) -> Self {
        Self {
            succeeded: false,
            error: Some(error.into()),
            ..Self::ok(part, database)
        }
    }

    /// With its duration.
    pub fn took(mut self, duration: Duration) -> Self {
        self.duration = Some(duration);
        self
    }

    /// With what it stored.
    pub fn stored(mut self, key: &str, bytes: u64) -> Self {
        self.key = Some(key.into());
        self.bytes = Some(bytes);
        self
    }

    /// With the name of what it made, without a size (a snapshot).
    pub fn made(mut self, name: &str) -> Self {
        self.key = Some(name.into());
        self
    }
}

/// Where a job records its parts as they end; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Run(Arc<Mutex<Vec<Part>>>);

impl Run {
    /// Records a part.
    pub fn part(&self, part: Part) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(part);
    }

    /// Records a part that was the whole job: its outcome is `result`'s, its duration the time
    /// since `started`.
    pub fn outcome<T>(
        &self,
        part: &'static str,
        database: &str,
        started: Instant,
        result: &anyhow::Result<T>,
    ) {
        self.part(
            match result {
                Ok(_) => Part::ok(part, database),
                Err(e) => Part::failed(part, database, crate::error_line(e)),
            }
            .took(started.elapsed()),
        );
    }

    /// The parts recorded so far.
    pub fn parts(&self) -> Vec<Part> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Like [`exit`](crate::exit), and then, whatever the outcome: the metrics file (`run` part and
/// every part the job recorded in its [`Run`]) and the notification. `namespace` labels both
/// (`None` in local mode).
pub fn exit_reporting<F>(
    program: &str,
    args: &ReportArgs,
    namespace: Option<&str>,
    job: impl FnOnce(Run) -> F,
) -> ExitCode
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    let started = jiff::Timestamp::now();
    let clock = Instant::now();
    let run = Run::default();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            return crate::fail(
                program,
                &anyhow::anyhow!(e).context("cannot start the async runtime"),
            );
        }
    };
    let mut metrics_usable = true;
    let result = runtime.block_on(async {
        let notifier = check(args, &mut metrics_usable)?;
        job(run.clone()).await.map(|()| notifier)
    });
    let notifier = match &result {
        Ok(n) => n.clone(),
        Err(_) => check(args, &mut true).ok().flatten(),
    };
    let mut result = result.map(|_| ());
    let ended = jiff::Timestamp::now();
    let duration = clock.elapsed();
    let parts = run.parts();
    let namespace = namespace.unwrap_or("");

    if let Some(path) = args.metrics_file.as_deref().filter(|_| metrics_usable) {
        let mut metrics = Metrics::load_previous(path);
        for part in &parts {
            metrics.record(
                &Sample::new(program, namespace, part.part, &part.database),
                ended,
                part.succeeded,
                part.duration,
                part.bytes,
            );
        }
        // No bytes for the whole run: they are per part (a dump's object, a snapshot's size).
        metrics.record(
            &Sample::new(program, namespace, "run", ""),
            ended,
            result.is_ok(),
            Some(duration),
            None,
        );
        if let Err(e) = metrics.write(path) {
            let e = anyhow::anyhow!(e).context("cannot write the metrics file");
            match &result {
                Ok(()) => {
                    result = Err(e.context(format!(
                        "{program} itself succeeded, but its metrics file was not updated"
                    )));
                }
                Err(_) => {
                    tracing::error!(target: crate::logging::FILE_ONLY, "{}", crate::error_line(&e));
                    eprintln!("{program}: error: {}", crate::error_line(&e));
                }
            }
        }
    }

    if let Some(notifier) = notifier.filter(|_| args.notify_on.wants(result.is_ok())) {
        let body = body(
            program, namespace, started, ended, duration, &result, &parts,
        );
        if let Err(e) = runtime.block_on(notifier.send(&body)) {
            tracing::warn!(target: crate::logging::FILE_ONLY, "{e}");
            eprintln!("{program}: warning: {e} (the exit code is the run's)");
        } else {
            tracing::info!("notification sent to {}", notifier.url.masked());
        }
    }

    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => crate::fail(program, &e),
    }
}

/// The arguments checked before the job starts: the notifier, if any.
fn check(args: &ReportArgs, metrics_usable: &mut bool) -> anyhow::Result<Option<Notifier>> {
    if let Some(path) = &args.metrics_file {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => std::path::Path::new("."),
        };
        if path.file_name().is_none() || !dir.is_dir() {
            *metrics_usable = false;
            anyhow::bail!(
                "--metrics-file {}: no such directory {}; nothing was done",
                path.display(),
                dir.display()
            );
        }
    }
    let Some(url) = &args.notify_url else {
        return Ok(None);
    };
    let url: NotifyUrl = url.0.parse().map_err(|e| {
        anyhow::anyhow!("--notify-url (LITEMAAS_NOTIFY_URL): {e}; nothing was done")
    })?;
    let mut notifier = Notifier::new(url);
    notifier.timeout = args.notify_timeout.unsigned_abs();
    Ok(Some(notifier))
}

/// The notification's JSON: no secrets (the error line is the one printed on stderr).
fn body(
    program: &str,
    namespace: &str,
    started: jiff::Timestamp,
    ended: jiff::Timestamp,
    duration: Duration,
    result: &anyhow::Result<()>,
    parts: &[Part],
) -> serde_json::Value {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_default();
    let error = result.as_ref().err().map(crate::error_line);
    let outcome = if result.is_ok() { "success" } else { "failure" };
    let place = if namespace.is_empty() {
        format!("on {host}")
    } else {
        format!("in namespace {namespace} (host {host})")
    };
    let text = match &error {
        Some(e) => format!("{program} FAILED {place}: {e}"),
        None => format!(
            "{program} succeeded {place} in {:.0} s",
            duration.as_secs_f64()
        ),
    };
    serde_json::json!({
        "text": text,
        "program": program,
        "outcome": outcome,
        "namespace": namespace,
        "host": host,
        "started": started.to_string(),
        "ended": ended.to_string(),
        "duration_seconds": duration.as_secs_f64(),
        "error": error,
        "parts": parts.iter().map(|p| serde_json::json!({
            "part": p.part,
            "database": p.database,
            "outcome": if p.succeeded { "success" } else { "failure" },
            "duration_seconds": p.duration.map(|d| d.as_secs_f64()),
            "key": p.key,
            "bytes": p.bytes,
            "error": p.error,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser, Debug)]
    struct Args {
        #[command(flatten)]
        report: ReportArgs,
    }

    #[test]
    fn the_notify_url_never_shows_in_debug_output_nor_in_its_error() {
        let args = Args::parse_from(["p", "--notify-url", "ftp://hooks/T/secret"]);
        assert!(!format!("{args:?}").contains("secret"));
        let e = check(&args.report, &mut true).unwrap_err().to_string();
        assert!(e.contains("--notify-url") && !e.contains("secret"), "{e}");
    }

    #[test]
    fn a_metrics_file_in_a_missing_directory_is_refused() {
        let args = Args::parse_from(["p", "--metrics-file", "/nonexistent/dir/x.prom"]);
        let mut usable = true;
        let e = check(&args.report, &mut usable).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/dir"), "{e}");
        assert!(!usable);
    }

    #[test]
    fn the_body_names_the_failure_and_what_was_stored() {
        let now = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        let parts = [
            Part::ok("dump", "a").stored("k/a.sql.gz", 5),
            Part::failed("dump", "b", "pg_dump exited 1"),
        ];
        let b = body(
            "litemaas-backup",
            "ns",
            now,
            now,
            Duration::from_secs(2),
            &Err(anyhow::anyhow!("1 part(s) failed")),
            &parts,
        );
        assert_eq!(b["outcome"], "failure");
        assert_eq!(b["error"], "1 part(s) failed");
        assert_eq!(b["parts"][0]["key"], "k/a.sql.gz");
        assert_eq!(b["parts"][0]["bytes"], 5);
        assert_eq!(b["parts"][1]["error"], "pg_dump exited 1");
        assert!(
            b["text"]
                .as_str()
                .unwrap()
                .contains("FAILED in namespace ns")
        );
    }
}
