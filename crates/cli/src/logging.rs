//! Logs: warnings (or more with -v) on stderr; everything from `info` up appended to the log
//! file, with UTC time stamps. `LITEMAAS_LOG` overrides the filter (`debug`, `litemaas=trace`).

use std::fs::OpenOptions;
use std::path::Path;
use std::sync::Mutex;

use anyhow::{Context, Result};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Events with this target go to the log file only (the binary prints its own line on stderr).
pub const FILE_ONLY: &str = "litemaas_backup::file_only";

/// Sets up logging for the process.
pub fn init(verbose: u8, log_file: Option<&Path>) -> Result<()> {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = |default: &str| {
        EnvFilter::try_from_env("LITEMAAS_LOG").unwrap_or_else(|_| {
            EnvFilter::new(format!(
                "{default},aws_config=error,aws_smithy_runtime=error,aws_sdk_s3=error,hyper=warn"
            ))
        })
    };
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .with_filter(filter(level))
        .with_filter(tracing_subscriber::filter::filter_fn(|m| {
            m.target() != FILE_ONLY
        }));
    let file = match log_file {
        Some(path) => {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open log file {}", path.display()))?;
            Some(
                tracing_subscriber::fmt::layer()
                    .with_writer(Mutex::new(file))
                    .with_ansi(false)
                    .with_filter(filter(if verbose > 1 { "debug" } else { "info" })),
            )
        }
        None => None,
    };
    tracing_subscriber::registry()
        .with(stderr)
        .with(file)
        .init();
    Ok(())
}
