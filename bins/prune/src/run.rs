//! Planning and applying retention, aborting stale uploads, and reporting.

use anyhow::{Context, Result};
use litemaas_backup::cluster::SnapshotPrune;
use litemaas_backup::cluster::{prune_snapshots, snapshot_selector};
use litemaas_backup::prune::{self, DumpListing, PruneReport};
use litemaas_backup::retention::RetentionOptions;
use litemaas_backup::snapshot::Snapshots;
use litemaas_backup::store::ObjectStore;
use litemaas_cli::report::{Part, Run};
use tokio_util::sync::CancellationToken;

use crate::cli::Args;

/// Retention for the dumps (and, with `--namespace`, the snapshots, holding the namespace's
/// Lease so that no backup or restore runs meanwhile); then the report. The dumps' and the
/// snapshots' retention are recorded in `run` (not in a dry run, which changes nothing).
pub async fn prune(args: Args, run: Run) -> Result<()> {
    let now = jiff::Timestamp::now();
    // A signal, or the Lease lost, stops the deleting between two objects.
    let stop = litemaas_cli::cancel_on_signal();
    let guard = match &args.namespace {
        Some(namespace) if !args.dry_run => {
            let client = litemaas_cli::kube_client(args.context.as_deref()).await?;
            Some(
                args.lease
                    .lock(client, namespace)
                    .acquire(&stop)
                    .await
                    .context("not pruning; nothing was deleted")?,
            )
        }
        _ => None,
    };
    let result = prune_holding(&args, now, &run, &stop).await;
    let Some(guard) = guard else { return result };
    let lost = guard.lost();
    guard.release().await;
    // Deleting stopped when the Lease was lost; what was deleted before followed the rules.
    match (lost, result) {
        (None, result) => result,
        (Some(lost), Ok(())) => Err(anyhow::anyhow!(
            "{lost} while pruning, after every delete was done: another run may be pruning now"
        )),
        (Some(lost), Err(e)) => Err(e.context(format!(
            "{lost} while pruning: deleting stopped there; another run may be pruning now"
        ))),
    }
}

/// Records a part's outcome in `run` (unless in a dry run) and passes it on.
fn record<T>(
    run: &Run,
    args: &Args,
    part: &'static str,
    started: std::time::Instant,
    result: Result<T>,
) -> Result<T> {
    if !args.dry_run {
        run.part(
            match &result {
                Ok(_) => Part::ok(part, ""),
                Err(e) => Part::failed(part, "", litemaas_cli::error_line(e)),
            }
            .took(started.elapsed()),
        );
    }
    result
}

async fn prune_holding(
    args: &Args,
    now: jiff::Timestamp,
    run: &Run,
    stop: &CancellationToken,
) -> Result<()> {
    let store = args.store.open().await?;
    store.check().await?;
    let prefix = args.store.prefix();
    let started = std::time::Instant::now();
    let (report, others) = record(
        run,
        args,
        "retention",
        started,
        prune_dumps(args, store.as_ref(), &prefix, now, stop).await,
    )?;

    let snapshots = match &args.namespace {
        Some(namespace) => {
            let started = std::time::Instant::now();
            let pruned = async {
                let client = litemaas_cli::kube_client(args.context.as_deref()).await?;
                let rules = RetentionOptions {
                    keep_last: Some(args.keep_snapshots),
                    ..RetentionOptions::default()
                };
                anyhow::Ok(
                    prune_snapshots(
                        &Snapshots::new(client, namespace),
                        &snapshot_selector(&args.schedule_name),
                        &rules,
                        now,
                        args.dry_run,
                        stop,
                    )
                    .await?,
                )
            }
            .await;
            Some(record(run, args, "snapshot_retention", started, pruned)?)
        }
        None => None,
    };
    print(args, store.as_ref(), &report, &others, snapshots.as_ref());
    // Stopped after the last delete (or in a dry run, which deletes nothing): still a stop.
    if stop.is_cancelled() {
        anyhow::bail!("stopped by a signal or a lost Lease; what was deleted is listed above");
    }
    Ok(())
}

/// The dumps of every database, and stale uploads.
async fn prune_dumps(
    args: &Args,
    store: &dyn ObjectStore,
    prefix: &str,
    now: jiff::Timestamp,
    stop: &CancellationToken,
) -> Result<(PruneReport, Vec<(String, PruneReport)>)> {
    let rules = args.retention.clone().or(RetentionOptions::dumps());
    let listing = DumpListing {
        last_modified_fallback: args.last_modified_fallback,
    };
    let mut report =
        prune::prune_dumps(store, prefix, &rules, &listing, now, args.dry_run, stop).await?;
    // The dumps of other databases, which cluster backups keep under `<prefix>/<database>/`.
    let mut others = Vec::new();
    for other in prune::dump_prefixes(store, prefix)
        .await?
        .into_iter()
        .skip(1)
    {
        let pruned = prune::prune_dumps(store, &other, &rules, &listing, now, args.dry_run, stop)
            .await
            .with_context(|| format!("pruning the dumps under {other}/"))?;
        others.push((other, pruned));
    }
    report.aborted_uploads = match prune::abort_stale_uploads(
        store,
        prefix,
        args.abort_uploads_older_than,
        now,
        args.dry_run,
    )
    .await
    {
        Ok(aborted) => aborted,
        // Some S3-compatible stores (s3rver, some gateways) cannot list uploads: retention
        // was applied all the same; say what could not be done.
        Err(e) if e.is_not_implemented() => {
            eprintln!(
                "warning: {} cannot list multipart uploads ({e}): abandoned uploads were not looked for",
                store.describe()
            );
            Vec::new()
        }
        Err(e) => return Err(e.into()),
    };
    Ok((report, others))
}

/// The plans on stdout (or JSON), the counts on stderr.
fn print(
    args: &Args,
    store: &dyn ObjectStore,
    report: &PruneReport,
    others: &[(String, PruneReport)],
    snapshots: Option<&SnapshotPrune>,
) {
    if args.json {
        let others: Vec<_> = others
            .iter()
            .map(|(prefix, report)| serde_json::json!({"prefix": prefix, "report": report}))
            .collect();
        let all =
            serde_json::json!({"dumps": report, "other_databases": others, "snapshots": snapshots});
        println!("{all}");
    } else {
        print!("{}", report.plan);
        for (prefix, other) in others {
            println!("{prefix}/:");
            print!("{}", other.plan);
        }
        if let Some(s) = &snapshots {
            print!("{}", s.plan);
        }
    }
    let verb = if args.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    eprintln!(
        "{}: kept {}, {verb} {} dump(s); {} {} abandoned upload(s)",
        store.describe(),
        report.plan.keeps().count(),
        report.plan.deletions().count(),
        if args.dry_run {
            "would abort"
        } else {
            "aborted"
        },
        report.aborted_uploads.len(),
    );
    for (prefix, other) in others {
        eprintln!(
            "{}/{prefix}/: kept {}, {verb} {} dump(s)",
            store.describe(),
            other.plan.keeps().count(),
            other.plan.deletions().count()
        );
    }
    if let (Some(s), Some(namespace)) = (snapshots, &args.namespace) {
        eprintln!(
            "snapshots in {namespace}: kept {}, {verb} {}",
            s.plan.keeps().count(),
            s.plan.deletions().count()
        );
    }
}
