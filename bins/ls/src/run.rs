//! Reading the store and the snapshots, and printing them.

use std::process::ExitCode;

use anyhow::{Result, bail};
use litemaas_backup::inventory::{Inventory, SnapshotInventory, Summary};
use litemaas_backup::snapshot::Snapshots;

use crate::cli::Args;
use crate::{render, stale};

/// Lists the dumps (and, with `--namespace`, the snapshots) and prints them; with `--stale`,
/// exit code 2 when a kind of backup is missing or too old. Changes nothing.
pub async fn ls(args: Args) -> Result<ExitCode> {
    let now = jiff::Timestamp::now();
    // A directory that does not exist holds no backups: most likely a wrong --dest (or a
    // forgotten --bucket), which an empty listing would hide.
    if args.store.bucket.is_none() && !args.store.dest.is_dir() {
        bail!(
            "backup directory {} does not exist (give --bucket for S3, or --dest DIR)",
            args.store.dest.display()
        );
    }
    let store = args.store.open().await?;
    store.check().await?;
    let inventory = Inventory::read(store.as_ref(), &args.store.prefix(), now).await?;
    if !inventory.uploads_listed {
        eprintln!(
            "warning: {} cannot list multipart uploads: unfinished uploads are not shown",
            inventory.store
        );
    }
    let snapshots = match &args.namespace {
        Some(namespace) => {
            let client = litemaas_cli::kube_client(args.context.as_deref()).await?;
            let snapshots = Snapshots::new(client, namespace);
            Some(SnapshotInventory::read(&snapshots, namespace, &args.claim).await?)
        }
        None => None,
    };
    let mut summary = Summary::of(&inventory, now);
    if let Some(snapshots) = &snapshots {
        summary = summary.with_snapshots(snapshots, now);
    }
    let checks = args
        .stale
        .map(|limit| (limit, stale::checks(&summary, limit, snapshots.is_some())));
    let listing = render::Listing {
        inventory: &inventory,
        snapshots: snapshots.as_ref(),
        summary: &summary,
        now,
        all: args.all,
    };
    if args.json {
        let mut json = listing.json();
        if let Some((limit, checks)) = &checks {
            json["stale"] = serde_json::json!({"limit_seconds": limit.seconds, "checks": checks});
        }
        println!("{json}");
    } else {
        print!("{}", listing.table());
    }
    let Some((limit, checks)) = checks else {
        return Ok(ExitCode::SUCCESS);
    };
    for check in &checks {
        eprintln!("{}", check.line(limit));
    }
    Ok(if checks.iter().any(|c| c.stale) {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
