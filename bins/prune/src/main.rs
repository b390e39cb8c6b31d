//! `litemaas-prune`: show the retention plan for the dumps in a store and apply it; abort
//! multipart uploads a crash left behind; with `--namespace`, the same for the VolumeSnapshots.
//!
//! Table of contents: parse arguments, set up logs, plan and delete (`--dry-run`: only show),
//! abort stale uploads, snapshots, report.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use litemaas_backup::cluster::prune_snapshots;
use litemaas_backup::prune::{self, DumpListing};
use litemaas_backup::retention::RetentionOptions;
use litemaas_backup::snapshot::Snapshots;
use litemaas_cli::StoreArgs;

/// Apply retention to LiteMaaS dumps (default: keep the last 12) and abort abandoned uploads.
/// The newest complete dump is never deleted; failed dumps never count toward the rules.
#[derive(Debug, Parser)]
#[command(name = "litemaas-prune", version, about, long_about = None)]
struct Args {
    #[command(flatten)]
    store: StoreArgs,

    #[command(flatten, next_help_heading = "Retention")]
    retention: RetentionOptions,

    /// Also apply retention to the VolumeSnapshots (app=litemaas-backup) in this namespace.
    #[arg(long, env = "LITEMAAS_NAMESPACE")]
    namespace: Option<String>,

    /// kubeconfig context (default: the current one, or the in-cluster service account).
    #[arg(long, env = "LITEMAAS_CONTEXT")]
    context: Option<String>,

    /// Snapshots to keep (ready ones; failed and unfinished ones never count).
    #[arg(long, env = "LITEMAAS_KEEP_SNAPSHOTS", default_value_t = 3)]
    keep_snapshots: u32,

    /// Show the plan; change nothing.
    #[arg(long, env = "LITEMAAS_DRY_RUN")]
    dry_run: bool,

    /// Abort multipart uploads under the prefix started longer ago than this.
    #[arg(
        long,
        env = "LITEMAAS_ABORT_UPLOADS_OLDER_THAN",
        default_value = "24h",
        value_name = "DURATION"
    )]
    abort_uploads_older_than: jiff::SignedDuration,

    /// Date dumps whose names hold no valid time by their LastModified (default: never delete them).
    #[arg(long, env = "LITEMAAS_LAST_MODIFIED_FALLBACK")]
    last_modified_fallback: bool,

    /// Print the plan and what was done as one JSON object on stdout.
    #[arg(long, env = "LITEMAAS_JSON")]
    json: bool,

    /// Append logs to this file.
    #[arg(long, env = "LITEMAAS_LOG_FILE", value_name = "PATH")]
    log_file: Option<PathBuf>,

    /// More detail on stderr (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = litemaas_cli::logging::init(args.verbose, args.log_file.as_deref()) {
        eprintln!("litemaas-prune: error: {e:#}");
        return ExitCode::FAILURE;
    }
    litemaas_cli::exit("litemaas-prune", prune(args))
}

async fn prune(args: Args) -> Result<()> {
    let now = jiff::Timestamp::now();
    let store = args.store.open().await?;
    store.check().await?;
    let prefix = args.store.prefix();
    let rules = args.retention.clone().or(RetentionOptions::dumps());
    let listing = DumpListing {
        last_modified_fallback: args.last_modified_fallback,
    };
    let mut report =
        prune::prune_dumps(store.as_ref(), &prefix, &rules, &listing, now, args.dry_run).await?;
    report.aborted_uploads = prune::abort_stale_uploads(
        store.as_ref(),
        &prefix,
        args.abort_uploads_older_than,
        now,
        args.dry_run,
    )
    .await?;

    let snapshots = match &args.namespace {
        Some(namespace) => {
            let client = litemaas_cli::kube_client(args.context.as_deref()).await?;
            let rules = RetentionOptions {
                keep_last: Some(args.keep_snapshots),
                ..RetentionOptions::default()
            };
            Some(
                prune_snapshots(
                    &Snapshots::new(client, namespace),
                    &rules,
                    now,
                    args.dry_run,
                )
                .await?,
            )
        }
        None => None,
    };

    if args.json {
        let all = serde_json::json!({"dumps": report, "snapshots": snapshots});
        println!("{all}");
    } else {
        print!("{}", report.plan);
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
    if let (Some(s), Some(namespace)) = (&snapshots, &args.namespace) {
        eprintln!(
            "snapshots in {namespace}: kept {}, {verb} {}",
            s.plan.keeps().count(),
            s.plan.deletions().count()
        );
    }
    Ok(())
}
