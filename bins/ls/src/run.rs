//! Reading the store and the snapshots, and printing them.

use anyhow::{Result, bail};
use litemaas_backup::inventory::{Inventory, SnapshotInventory, Summary};
use litemaas_backup::snapshot::Snapshots;

use crate::cli::Args;
use crate::render;

/// Lists the dumps (and, with `--namespace`, the snapshots) and prints them. Changes nothing.
pub async fn ls(args: Args) -> Result<()> {
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
    // `--stale DURATION` (another issue) compares `summary`'s ages with its limit here.
    let listing = render::Listing {
        inventory: &inventory,
        snapshots: snapshots.as_ref(),
        summary: &summary,
        now,
        all: args.all,
    };
    if args.json {
        println!("{}", listing.json());
    } else {
        print!("{}", listing.table());
    }
    Ok(())
}
