//! Command-line arguments. Every flag also reads an environment variable; give a database URL
//! that holds a password through `LITEMAAS_DATABASE_URL` or a libpq password file, never as a
//! flag, since every user of the host can read a process's arguments.

use std::path::PathBuf;

use clap::Parser;
use litemaas_backup::dump::Secret;
use litemaas_cli::StoreArgs;

/// Restore the LiteMaaS database from a backup, all or nothing: the backup is verified while it
/// streams (gzip/zstd trailer, SHA-256 against its integrity record, pg_dump's completion
/// marker) and the restore is committed only after every check and every statement passed;
/// otherwise the database is left exactly as it was.
#[derive(Debug, Parser)]
#[command(name = "litemaas-restore", version, about, long_about = None)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    /// A test restore instead (see `litemaas-restore verify --help`).
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub restore: RestoreArgs,

    #[command(flatten)]
    pub report: litemaas_cli::report::ReportArgs,

    /// Append logs to this file.
    #[arg(long, env = "LITEMAAS_LOG_FILE", value_name = "PATH", global = true)]
    pub log_file: Option<PathBuf>,

    /// More detail on stderr (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

/// Subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Restore a backup (default: the newest complete one) into a scratch database that is
    /// created and always dropped, check it (every table selectable, row counts as in the
    /// dump), and exit non-zero on any failure: the monthly proof that backups restore.
    Verify(VerifyArgs),

    /// Restore the database VOLUME from a VolumeSnapshot: scale the StatefulSet down, take a
    /// safety snapshot, keep the old volume (reclaim policy Retain), recreate the claim of the
    /// same name from the snapshot, scale back up. Each step is checked and reported; a failure
    /// says what state the cluster is in and which command rolls back.
    Volume(VolumeArgs),
}

/// `litemaas-restore volume --namespace NS (--snapshot NAME | --latest) [--yes] …`
#[derive(Debug, Clone, clap::Args)]
#[command(group = clap::ArgGroup::new("volume_which").required(true))]
pub struct VolumeArgs {
    /// The LiteMaaS namespace.
    #[arg(long, env = "LITEMAAS_NAMESPACE")]
    pub namespace: String,

    /// kubeconfig context (default: the current one, or the in-cluster service account).
    #[arg(long, env = "LITEMAAS_CONTEXT")]
    pub context: Option<String>,

    /// The VolumeSnapshot to restore (a backup snapshot, or a safety snapshot to roll back).
    #[arg(long, group = "volume_which", value_name = "NAME")]
    pub snapshot: Option<String>,

    /// The newest ready app=litemaas-backup snapshot of the claim.
    #[arg(long, group = "volume_which")]
    pub latest: bool,

    /// The StatefulSet whose pods mount the claim.
    #[arg(long, env = "LITEMAAS_STATEFULSET", default_value = "litellm-postgres")]
    pub statefulset: String,

    /// The claim to restore.
    #[arg(
        long,
        env = "LITEMAAS_CLAIM",
        default_value = "postgres-storage-litellm-postgres-0"
    )]
    pub claim: String,

    /// Do not snapshot the current volume first. A failed swap can then not be rolled back
    /// from a snapshot (the old volume is still kept).
    #[arg(long)]
    pub no_safety_snapshot: bool,

    /// VolumeSnapshotClass of the safety snapshot (default: the cluster's default class).
    #[arg(long, env = "LITEMAAS_SNAPSHOT_CLASS")]
    pub safety_snapshot_class: Option<String>,

    /// After a successful restore, give the previous volume its reclaim policy back (usually
    /// Delete, which deletes it and, on some storage, its snapshots) instead of keeping it.
    #[arg(long)]
    pub release_previous_volume: bool,

    /// Print the plan (each step and the objects it touches) and change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Go ahead without asking (needed when stdin is not a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,

    /// Print the report (or the plan, with --dry-run) as JSON on stdout.
    #[arg(long)]
    pub json: bool,

    /// How long the pods may take to go after scaling down.
    #[arg(long, default_value = "5m", value_name = "DURATION")]
    pub scale_down_timeout: jiff::SignedDuration,

    /// How long the safety snapshot may take to be ready.
    #[arg(long, default_value = "10m", value_name = "DURATION")]
    pub snapshot_timeout: jiff::SignedDuration,

    /// How long the old claim may take to go and the new one to bind.
    #[arg(long, default_value = "10m", value_name = "DURATION")]
    pub bind_timeout: jiff::SignedDuration,

    /// How long the pods may take to be Running and Ready after scaling up.
    #[arg(long, default_value = "10m", value_name = "DURATION")]
    pub ready_timeout: jiff::SignedDuration,

    /// How often each wait looks again.
    #[arg(long, default_value = "1s", value_name = "DURATION")]
    pub poll_interval: jiff::SignedDuration,

    #[command(flatten)]
    pub lease: litemaas_cli::LeaseArgs,
}

/// `litemaas-restore [--key K | --latest | --file F] [--into NEW_DB] [--yes] …`
#[derive(Debug, Clone, clap::Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub backup: BackupArgs,

    #[command(flatten)]
    pub target: TargetArgs,

    /// Restore into this new database (created; the command fails if it exists or the role
    /// lacks CREATEDB) and leave the live one untouched, so it can be inspected and switched to.
    #[arg(long, env = "LITEMAAS_RESTORE_INTO", value_name = "NEW_DB")]
    pub into: Option<String>,

    /// Replace the live database by loading the backup into a new database on several
    /// connections (--jobs), then swapping it in: connections to the live database refused
    /// and ended, both renamed in one transaction. The previous database is kept as
    /// <db>_previous_<time> (connections refused) for a rollback, unless --drop-previous.
    /// Without --swap the live database is replaced in one transaction on one connection.
    #[arg(long, conflicts_with = "into")]
    pub swap: bool,

    /// With --swap: how long the swap may wait for a lock on the live database (another
    /// session holding one) before it gives up and changes nothing.
    #[arg(
        long,
        default_value = "30s",
        value_name = "DURATION",
        requires = "swap"
    )]
    pub swap_lock_timeout: jiff::SignedDuration,

    /// Restoring in place: while the restore waits for a lock (an application still connected
    /// holds it), say this often which session holds it and how to end it (0s: never).
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    pub lock_wait_report: jiff::SignedDuration,

    /// With --swap: drop the previous database once the restored one is in place.
    #[arg(long, requires = "swap")]
    pub drop_previous: bool,

    /// Connections that load a new database (--into, --swap) [default: the cores available].
    /// 1 loads it in one transaction on one connection.
    #[arg(long, short = 'j', env = "LITEMAAS_RESTORE_JOBS", value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: Option<u16>,

    /// Replace the live database without asking (needed when stdin is not a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,

    /// Print one JSON object describing the restore on stdout.
    #[arg(long, env = "LITEMAAS_JSON")]
    pub json: bool,
}

/// `litemaas-restore verify [--key K | --latest | --file F] …`
#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub backup: BackupArgs,

    #[command(flatten)]
    pub target: TargetArgs,

    /// Name of the scratch database [default: litemaas_verify_<time>_<pid>].
    #[arg(long, env = "LITEMAAS_VERIFY_DATABASE", value_name = "NAME")]
    pub scratch: Option<String>,

    /// Connections that load the scratch database [default: the cores available]; 1 loads it
    /// in one transaction on one connection.
    #[arg(long, short = 'j', env = "LITEMAAS_RESTORE_JOBS", value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: Option<u16>,

    /// Print one JSON object describing the check on stdout.
    #[arg(long, env = "LITEMAAS_JSON")]
    pub json: bool,
}

/// Which backup, and where backups live.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "which", multiple = false)]
pub struct BackupArgs {
    /// The backup's key, prefix included, as `aws s3 ls` and the backup report show it.
    #[arg(long, group = "which")]
    pub key: Option<String>,

    /// The newest complete dump under the prefix (the default for verify).
    #[arg(long, group = "which")]
    pub latest: bool,

    /// A backup downloaded to this file (gzip, zstd or plain SQL).
    #[arg(long, group = "which", value_name = "PATH")]
    pub file: Option<PathBuf>,

    #[command(flatten)]
    pub store: StoreArgs,
}

/// Which database to restore into: in the database pod (`--namespace`) or by URL.
#[derive(Debug, Clone, clap::Args)]
pub struct TargetArgs {
    /// Database URL (postgres://user@host:port/db). Prefer the environment variable or
    /// ~/.pgpass for the password. Without it (and without --namespace), libpq's PG*
    /// environment is used.
    #[arg(
        long,
        env = "LITEMAAS_DATABASE_URL",
        hide_env_values = true,
        value_name = "URL",
        conflicts_with = "namespace"
    )]
    pub database_url: Option<Secret>,

    /// The LiteMaaS namespace: psql runs in the database pod through the exec API, with the
    /// Secret's credentials (the password through stdin).
    #[arg(long, env = "LITEMAAS_NAMESPACE")]
    pub namespace: Option<String>,

    /// kubeconfig context (default: the current one, or the in-cluster service account).
    #[arg(long, env = "LITEMAAS_CONTEXT")]
    pub context: Option<String>,

    /// The database to restore (default: the Secret's, or the URL's); another one (LiteLLM's)
    /// is restored with the Secret's login for it, as the backup dumps it.
    #[arg(long, env = "LITEMAAS_DATABASE", value_name = "NAME")]
    pub database: Option<String>,

    #[command(flatten)]
    pub pod: litemaas_cli::PodArgs,

    #[command(flatten)]
    pub lease: litemaas_cli::LeaseArgs,

    /// The psql program (local targets).
    #[arg(
        long,
        env = "LITEMAAS_PSQL",
        default_value = "psql",
        value_name = "PATH"
    )]
    pub psql: PathBuf,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Args, Command};

    #[test]
    fn debug_output_of_the_arguments_never_shows_the_database_url() {
        let args = Args::parse_from([
            "litemaas-restore",
            "--latest",
            "--database-url",
            "postgres://u:hunter2@db/x",
        ]);
        assert!(!format!("{args:?}").contains("hunter2"));
        let args = Args::parse_from(["litemaas-restore", "verify", "--key", "k"]);
        assert!(matches!(args.command, Some(Command::Verify(_))));
        assert!(
            Args::try_parse_from(["litemaas-restore", "--key", "a", "--latest"]).is_err(),
            "one backup at a time"
        );
    }
}
