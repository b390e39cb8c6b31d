//! Command-line arguments. Every flag also reads an environment variable.

use std::path::PathBuf;

use clap::Parser;
use litemaas_backup::retention::RetentionOptions;
use litemaas_cli::StoreArgs;

/// Apply retention to LiteMaaS dumps (default: keep the last 12) and abort abandoned uploads.
/// The newest complete dump is never deleted; failed dumps never count toward the rules.
#[derive(Debug, Parser)]
#[command(name = "litemaas-prune", version, about, long_about = None)]
pub struct Args {
    #[command(flatten)]
    pub store: StoreArgs,

    #[command(flatten, next_help_heading = "Retention")]
    pub retention: RetentionOptions,

    /// Also apply retention to the VolumeSnapshots (app=litemaas-backup) in this namespace.
    #[arg(long, env = "LITEMAAS_NAMESPACE")]
    pub namespace: Option<String>,

    /// kubeconfig context (default: the current one, or the in-cluster service account).
    #[arg(long, env = "LITEMAAS_CONTEXT")]
    pub context: Option<String>,

    #[command(flatten)]
    pub lease: litemaas_cli::LeaseArgs,

    /// The backup-type label of the snapshots to prune (others are left alone).
    #[arg(long, env = "LITEMAAS_SCHEDULE_NAME", default_value = "monthly")]
    pub schedule_name: String,

    /// Snapshots to keep (ready ones; failed and unfinished ones never count).
    #[arg(long, env = "LITEMAAS_KEEP_SNAPSHOTS", default_value_t = 3)]
    pub keep_snapshots: u32,

    /// Show the plan; change nothing.
    #[arg(long, env = "LITEMAAS_DRY_RUN")]
    pub dry_run: bool,

    /// Abort multipart uploads under the prefix started longer ago than this.
    #[arg(
        long,
        env = "LITEMAAS_ABORT_UPLOADS_OLDER_THAN",
        default_value = "24h",
        value_name = "DURATION"
    )]
    pub abort_uploads_older_than: jiff::SignedDuration,

    /// Date dumps whose names hold no valid time by their LastModified (default: never delete them).
    #[arg(long, env = "LITEMAAS_LAST_MODIFIED_FALLBACK")]
    pub last_modified_fallback: bool,

    /// Print the plan and what was done as one JSON object on stdout.
    #[arg(long, env = "LITEMAAS_JSON")]
    pub json: bool,

    #[command(flatten)]
    pub report: litemaas_cli::report::ReportArgs,

    /// Append logs to this file.
    #[arg(long, env = "LITEMAAS_LOG_FILE", value_name = "PATH")]
    pub log_file: Option<PathBuf>,

    /// More detail on stderr (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}
