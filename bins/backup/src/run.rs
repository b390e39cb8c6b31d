//! Assembling the pieces from the arguments, and reporting.

use anyhow::{Context, Result};
use litemaas_backup::backup::{self, BackupOptions, BackupReport};
use litemaas_backup::dump::{CompressOptions, PgConnection, PgDump};
use litemaas_backup::prune::{self, DumpListing, PruneReport};
use litemaas_backup::retention::RetentionOptions;
use litemaas_backup::store::UploadOptions;
use serde::Serialize;

use crate::cli::Args;

/// What the run did, for `--json`.
#[derive(Serialize)]
struct Report<'a> {
    #[serde(flatten)]
    backup: &'a BackupReport,
    retention: Option<&'a PruneReport>,
}

/// The backup; then, only if it fully succeeded, retention on the dumps.
pub async fn backup_then_prune(args: Args) -> Result<()> {
    let now = jiff::Timestamp::now();
    let source = dump_source(&args)?;
    let store = args.store.open().await?;
    let cancel = litemaas_cli::cancel_on_signal();
    let report = backup::run(&source, store.as_ref(), &options(&args, now), &cancel)
        .await
        .context("retention skipped, nothing was deleted")?;
    print_backup(&report);

    let retention = if args.no_prune {
        None
    } else {
        let rules = args.retention.clone().or(RetentionOptions::dumps());
        let pruned = prune::prune_dumps(
            store.as_ref(),
            &args.store.prefix(),
            &rules,
            &DumpListing::default(),
            now,
            false,
        )
        .await
        .with_context(|| format!("the backup {} is stored, but retention failed", report.key))?;
        eprintln!(
            "retention: kept {}, deleted {}",
            pruned.plan.keeps().count(),
            pruned.deleted.len()
        );
        for key in &pruned.deleted {
            eprintln!("  deleted {key}");
        }
        Some(pruned)
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&Report {
                backup: &report,
                retention: retention.as_ref()
            })?
        );
    }
    Ok(())
}

fn dump_source(args: &Args) -> Result<PgDump> {
    let dump = match &args.database_url {
        Some(url) => PgDump::new(PgConnection::parse(url)?),
        None => PgDump::from_libpq_env(),
    };
    Ok(dump.program(&args.pg_dump))
}

fn options(args: &Args, now: jiff::Timestamp) -> BackupOptions {
    let mut options = BackupOptions::new(now);
    options.prefix = args.store.prefix();
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

/// The human summary, on stderr.
fn print_backup(report: &BackupReport) {
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
