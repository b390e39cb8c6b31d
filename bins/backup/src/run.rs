//! Assembling the pieces from the arguments, and reporting.

use anyhow::{Context, Result, bail};
use litemaas_backup::backup::{self, BackupOptions, BackupReport};
use litemaas_backup::cluster::{self, ClusterOptions, ClusterReport};
use litemaas_backup::dump::{CompressOptions, PgConnection, PgDump};
use litemaas_backup::prune::{self, DumpListing, PruneReport};
use litemaas_backup::retention::RetentionOptions;
use litemaas_backup::store::UploadOptions;
use litemaas_cli::report::{Part, Run};
use serde::Serialize;

use crate::cli::Args;

/// What the run did, for `--json`.
#[derive(Serialize)]
struct Report<'a> {
    #[serde(flatten)]
    backup: &'a BackupReport,
    retention: Option<&'a PruneReport>,
}

/// The backup; then, only if it fully succeeded, retention on the dumps. Each part is recorded
/// in `run` as it ends.
pub async fn backup_then_prune(args: Args, run: Run) -> Result<()> {
    let now = jiff::Timestamp::now();
    let source = dump_source(&args)?;
    let database = database_name(&args);
    let store = args.store.open().await?;
    let cancel = litemaas_cli::cancel_on_signal();
    let deadline = litemaas_cli::cancel_after(&cancel, args.timeout.unsigned_abs());
    let progress = litemaas_cli::progress::Progress::bytes("dumping", None);
    let mut options = options(&args, now);
    options.progress = Some(progress.counter());
    let started = std::time::Instant::now();
    let result = backup::run(&source, store.as_ref(), &options, &cancel).await;
    progress.finish();
    run.part(match &result {
        Ok(r) => Part::ok("dump", &database)
            .took(millis(r.duration_ms))
            .stored(&r.key, r.bytes),
        Err(e) => {
            Part::failed("dump", &database, litemaas_cli::error_chain(e)).took(started.elapsed())
        }
    });
    let report = result
        .map_err(|e| {
            if deadline.load(std::sync::atomic::Ordering::SeqCst) {
                anyhow::anyhow!(e).context(format!(
                    "the deadline (--timeout {:#}) was reached",
                    args.timeout
                ))
            } else {
                anyhow::anyhow!(e)
            }
        })
        .context("retention skipped, nothing was deleted")?;
    print_backup(&report);
    if cancel.is_cancelled() {
        bail!(
            "a signal arrived as the backup {} completed: it is stored with its record, but retention was skipped and nothing was deleted",
            report.key
        );
    }

    let retention = if args.no_prune {
        None
    } else {
        let rules = args.retention.clone().or(RetentionOptions::dumps());
        let started = std::time::Instant::now();
        let pruned = prune::prune_dumps(
            store.as_ref(),
            &args.store.prefix(),
            &rules,
            &DumpListing::default(),
            now,
            false,
            &cancel,
        )
        .await;
        run.part(match &pruned {
            Ok(_) => Part::ok("retention", &database).took(started.elapsed()),
            Err(e) => Part::failed("retention", &database, litemaas_cli::error_chain(e))
                .took(started.elapsed()),
        });
        let pruned = pruned.with_context(|| {
            format!("the backup {} is stored, but retention failed", report.key)
        })?;
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

/// The database's name for the metrics: from the URL, else libpq's PGDATABASE, else PGUSER
/// (libpq's default), else empty.
fn database_name(args: &Args) -> String {
    args.database_url
        .as_ref()
        .and_then(|url| PgConnection::parse(url.expose()).ok()?.database())
        .or_else(|| std::env::var("PGDATABASE").ok())
        .or_else(|| std::env::var("PGUSER").ok())
        .unwrap_or_default()
}

fn millis(ms: u64) -> std::time::Duration {
    std::time::Duration::from_millis(ms)
}

fn dump_source(args: &Args) -> Result<PgDump> {
    let dump = match &args.database_url {
        Some(url) => PgDump::new(PgConnection::parse(url.expose())?),
        None => PgDump::from_libpq_env(),
    };
    Ok(dump
        .program(&args.pg_dump)
        .lock_wait_timeout(args.lock_wait_timeout.unsigned_abs()))
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

/// Cluster mode: everything the monthly cron job did, checked part by part.
pub async fn cluster(args: Args, namespace: String, run: Run) -> Result<()> {
    let now = jiff::Timestamp::now();
    let client = litemaas_cli::kube_client(args.cluster.context.as_deref()).await?;
    let store = args.store.open().await?;
    let c = &args.cluster;
    let mut options = ClusterOptions::litemaas(&namespace, now);
    options.target = c.pod.target(&namespace);
    options.lease.1 = c.lease.lease_duration.unsigned_abs();
    options.databases.clone_from(&c.databases);
    options.pvc_selector = (!c.no_snapshot).then(|| c.pvc_selector.clone());
    options.snapshot_class.clone_from(&c.snapshot_class);
    options.snapshot_timeout = c.snapshot_timeout.unsigned_abs();
    options.schedule.clone_from(&c.schedule_name);
    options.checkpoint = c.checkpoint;
    options.lock_wait_timeout = Some(args.lock_wait_timeout.unsigned_abs());
    options.backup = self::options(&args, now);
    options.dump_retention =
        (!args.no_prune).then(|| args.retention.clone().or(RetentionOptions::dumps()));
    options.snapshot_retention = (!args.no_prune).then(|| RetentionOptions {
        keep_last: Some(c.keep_snapshots),
        ..RetentionOptions::default()
    });
    let cancel = litemaas_cli::cancel_on_signal();
    let deadline = litemaas_cli::cancel_after(&cancel, args.timeout.unsigned_abs());
    let report = cluster::run(client, store.as_ref(), &options, &cancel).await?;
    record_cluster(&report, &run);
    print_cluster(&report);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    if !report.succeeded() {
        let mut failures = report.failures();
        if deadline.load(std::sync::atomic::Ordering::SeqCst) {
            failures.push(format!(
                "the deadline (--timeout {:#}) was reached",
                args.timeout
            ));
        }
        bail!(
            "{} part(s) of the backup failed: {}",
            failures.len(),
            failures.join("; ")
        );
    }
    Ok(())
}

/// Each part of a cluster run, for the metrics and the notification.
fn record_cluster(report: &ClusterReport, run: &Run) {
    fn part<T>(
        name: &'static str,
        database: &str,
        outcome: &cluster::Outcome<T>,
        ok: impl FnOnce(Part, &T) -> Part,
    ) -> Part {
        match (&outcome.ok, &outcome.error) {
            (Some(value), _) => ok(Part::ok(name, database), value),
            (None, error) => Part::failed(name, database, error.clone().unwrap_or_default()),
        }
    }
    let database = |part: &str| part.rsplit("dump of ").next().unwrap_or("").to_owned();
    for dump in &report.dumps {
        run.part(part("dump", &database(&dump.part), dump, |p, b| {
            p.took(millis(b.duration_ms)).stored(&b.key, b.bytes)
        }));
    }
    if let Some(snapshot) = &report.snapshot {
        run.part(part("snapshot", "", snapshot, |p, s| {
            let p = p.took(millis(s.duration_ms)).made(&s.name);
            match s.restore_size.as_deref().and_then(quantity_bytes) {
                Some(bytes) => p.stored(&s.name, bytes),
                None => p,
            }
        }));
    }
    for retention in &report.dump_retention {
        run.part(part(
            "retention",
            &database(&retention.part),
            retention,
            |p, _| p,
        ));
    }
    if let Some(retention) = &report.snapshot_retention {
        run.part(part("snapshot_retention", "", retention, |p, _| p));
    }
}

/// A Kubernetes quantity (`10Gi`, `500M`, `1073741824`) in bytes.
fn quantity_bytes(quantity: &str) -> Option<u64> {
    let digits = quantity.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let factor: u64 = match &quantity[digits.len()..] {
        "" => 1,
        "k" => 1000,
        "M" => 1000_u64.pow(2),
        "G" => 1000_u64.pow(3),
        "T" => 1000_u64.pow(4),
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return None,
    };
    digits.parse::<u64>().ok()?.checked_mul(factor)
}

/// One line per part, on stderr.
fn print_cluster(report: &ClusterReport) {
    for dump in &report.dumps {
        match (&dump.ok, &dump.error) {
            (Some(b), _) => eprintln!(
                "{}: stored {}/{} ({} bytes, sha256 {})",
                dump.part, b.store, b.key, b.bytes, b.sha256
            ),
            (_, Some(e)) => eprintln!("{}: FAILED: {e}", dump.part),
            _ => {}
        }
    }
    if let Some(s) = &report.snapshot {
        match (&s.ok, &s.error) {
            (Some(r), _) => eprintln!(
                "{}: readyToUse, restoreSize {}",
                s.part,
                r.restore_size.as_deref().unwrap_or("unknown")
            ),
            (_, Some(e)) => eprintln!("{}: FAILED: {e}", s.part),
            _ => {}
        }
    }
    for r in &report.dump_retention {
        if let Some(p) = &r.ok {
            eprintln!(
                "{}: kept {}, deleted {}",
                r.part,
                p.plan.keeps().count(),
                p.deleted.len()
            );
        }
    }
    if let Some(r) = &report.snapshot_retention
        && let Some(p) = &r.ok
    {
        eprintln!(
            "{}: kept {}, deleted {}",
            r.part,
            p.plan.keeps().count(),
            p.deleted.len()
        );
    }
    let attempted = !report.dump_retention.is_empty() || report.snapshot_retention.is_some();
    if !report.succeeded() && !attempted {
        eprintln!("retention skipped after a failure: nothing was deleted");
    }
    for r in report
        .dump_retention
        .iter()
        .map(|r| (&r.part, &r.error))
        .chain(
            report
                .snapshot_retention
                .iter()
                .map(|r| (&r.part, &r.error)),
        )
    {
        if let (part, Some(error)) = r {
            eprintln!("{part}: FAILED part-way: {error}");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn snapshot_sizes_are_read_in_bytes() {
        assert_eq!(super::quantity_bytes("10Gi"), Some(10 << 30));
        assert_eq!(super::quantity_bytes("500M"), Some(500_000_000));
        assert_eq!(super::quantity_bytes("1024"), Some(1024));
        assert_eq!(super::quantity_bytes("1.5Gi"), None);
        assert_eq!(super::quantity_bytes("10Xi"), None);
    }
}
