//! Assembling the pieces from the arguments, and reporting.

use std::sync::Arc;

use anyhow::Result;
use litemaas_backup::backup::{self, BackupOptions, BackupReport};
use litemaas_backup::dump::{CompressOptions, PgConnection, PgDump};
use litemaas_backup::store::{LocalStore, ObjectStore, S3Options, S3Store, UploadOptions};
use tokio_util::sync::CancellationToken;

use crate::cli::Args;

/// Runs the backup the arguments describe.
pub async fn backup(args: &Args) -> Result<BackupReport> {
    let now = jiff::Timestamp::now();
    let source = dump_source(args)?;
    let store = store(args).await?;
    let options = options(args, now);
    let cancel = cancel_on_signal();
    Ok(backup::run(&source, store.as_ref(), &options, &cancel).await?)
}

fn dump_source(args: &Args) -> Result<PgDump> {
    let dump = match &args.database_url {
        Some(url) => PgDump::new(PgConnection::parse(url)?),
        None => PgDump::from_libpq_env(),
    };
    Ok(dump.program(&args.pg_dump))
}

async fn store(args: &Args) -> Result<Arc<dyn ObjectStore>> {
    Ok(match &args.bucket {
        Some(bucket) => {
            let mut options = S3Options::new(bucket);
            options.region.clone_from(&args.region);
            options.endpoint_url.clone_from(&args.endpoint_url);
            options.force_path_style = args.path_style;
            Arc::new(S3Store::connect(&options).await?)
        }
        None => Arc::new(LocalStore::new(&args.dest)),
    })
}

fn options(args: &Args, now: jiff::Timestamp) -> BackupOptions {
    let mut options = BackupOptions::new(now);
    // In a bucket the prefix keeps the original layout; a local --dest is already its own place.
    options.prefix = match (&args.prefix, &args.bucket) {
        (Some(prefix), _) => prefix.clone(),
        (None, Some(_)) => "litemaas-backups".into(),
        (None, None) => String::new(),
    };
    options.compression = args.compression;
    options.compress = CompressOptions {
        threads: args.threads.unwrap_or(CompressOptions::default().threads),
        ..CompressOptions::default()
    };
    options.upload = UploadOptions {
        part_size: args.part_size_mib as usize * 1024 * 1024,
        max_in_flight: args.parallel_parts as usize,
        ..UploadOptions::default()
    };
    options
}

/// A token cancelled by the first SIGINT or SIGTERM, so the upload is aborted, not abandoned.
fn cancel_on_signal() -> CancellationToken {
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
            _ = int.recv() => tracing::warn!("SIGINT: cancelling the backup"),
            _ = term.recv() => tracing::warn!("SIGTERM: cancelling the backup"),
        }
        cancel.cancel();
    });
    token
}

/// Human summary on stderr; with `--json`, one JSON object on stdout.
pub fn print_report(report: &BackupReport, json: bool) {
    if json {
        match serde_json::to_string(report) {
            Ok(line) => println!("{line}"),
            Err(e) => eprintln!("litemaas-backup: cannot print the report as JSON: {e}"),
        }
    }
    eprintln!(
        "backup complete: {}/{} ({} bytes {}, {} bytes of SQL, {} part(s), {:.1} s)\n  sha256 {}\n  record {}",
        report.store,
        report.key,
        report.bytes,
        report.compression,
        report.raw_bytes,
        report.parts,
        report.duration_ms as f64 / 1000.0,
        report.sha256,
        report.record_key,
    );
}
