//! Command-line arguments. Every flag also reads an environment variable; give a database URL
//! that holds a password through `LITEMAAS_DATABASE_URL` or a libpq password file, never as a
//! flag, since every user of the host can read a process's arguments.

use std::path::PathBuf;

use clap::Parser;
use litemaas_backup::dump::{Compression, Secret};
use litemaas_backup::retention::RetentionOptions;
use litemaas_cli::StoreArgs;

/// Stream a pg_dump of the LiteMaaS database, compressed, into S3 (or a local directory), then
/// apply retention to the dumps (default: keep the last 12) — only if the backup succeeded.
#[derive(Debug, Parser)]
#[command(name = "litemaas-backup", version, about, long_about = None)]
pub struct Args {
    /// Database URL (postgres://user@host:port/db). Prefer the environment variable or
    /// ~/.pgpass for the password. Without it, libpq's PG* environment is used. Not with
    /// --namespace, which dumps inside the database pod.
    #[arg(
        long,
        env = "LITEMAAS_DATABASE_URL",
        hide_env_values = true,
        value_name = "URL",
        conflicts_with = "namespace"
    )]
    pub database_url: Option<Secret>,

    #[command(flatten)]
    pub store: StoreArgs,

    #[command(flatten, next_help_heading = "Cluster mode (with --namespace)")]
    pub cluster: ClusterArgs,

    /// gzip[:1-9], zstd[:1-19] or none.
    #[arg(long, env = "LITEMAAS_COMPRESSION", default_value = "gzip")]
    pub compression: Compression,

    /// Compression threads (default: all cores).
    #[arg(long, env = "LITEMAAS_THREADS")]
    pub threads: Option<usize>,

    /// Multipart part size in MiB (at least 5).
    #[arg(long, env = "LITEMAAS_PART_SIZE_MIB", default_value_t = 8, value_parser = clap::value_parser!(u32).range(5..=5120))]
    pub part_size_mib: u32,

    /// Parts uploading at once.
    #[arg(long, env = "LITEMAAS_PARALLEL_PARTS", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub parallel_parts: u32,

    /// The pg_dump program (match the server's major version or newer).
    #[arg(
        long,
        env = "LITEMAAS_PG_DUMP",
        default_value = "pg_dump",
        value_name = "PATH"
    )]
    pub pg_dump: PathBuf,

    /// Overall deadline of the run: past it, the run is cancelled as by SIGTERM (nothing half
    /// done is left, retention does not run).
    #[arg(
        long,
        env = "LITEMAAS_TIMEOUT",
        default_value = "6h",
        value_name = "DURATION"
    )]
    pub timeout: jiff::SignedDuration,

    /// Fail the dump, clearly, when a table's lock cannot be had within this time (a migration
    /// or a stuck transaction holding it), instead of waiting behind it for ever.
    #[arg(
        long,
        env = "LITEMAAS_LOCK_WAIT_TIMEOUT",
        default_value = "10m",
        value_name = "DURATION"
    )]
    pub lock_wait_timeout: jiff::SignedDuration,

    /// Retention rules for the dumps after a successful backup (default: --keep-last 12).
    #[command(flatten, next_help_heading = "Retention (after a successful backup)")]
    pub retention: RetentionOptions,

    /// Do not apply retention.
    #[arg(long, env = "LITEMAAS_NO_PRUNE")]
    pub no_prune: bool,

    /// Print one JSON object describing the backup on stdout.
    #[arg(long, env = "LITEMAAS_JSON")]
    pub json: bool,

    #[command(flatten)]
    pub report: litemaas_cli::report::ReportArgs,

    /// Append logs to this file (the original tool used /var/log/litemaas-backup.log).
    #[arg(long, env = "LITEMAAS_LOG_FILE", value_name = "PATH")]
    pub log_file: Option<PathBuf>,

    /// More detail on stderr (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// The whole scheduled backup of a namespace: dumps from the database pod, a VolumeSnapshot,
/// retention for both. Kubernetes access from the kubeconfig or the in-cluster service account.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// The LiteMaaS namespace; turns on cluster mode.
    #[arg(long, env = "LITEMAAS_NAMESPACE")]
    pub namespace: Option<String>,

    /// kubeconfig context (default: the current one, or the in-cluster service account).
    #[arg(long, env = "LITEMAAS_CONTEXT")]
    pub context: Option<String>,

    /// Database to dump; repeat for several (default: the Secret's `database`).
    #[arg(
        long = "database",
        env = "LITEMAAS_DATABASES",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    pub databases: Vec<String>,

    #[command(flatten)]
    pub pod: litemaas_cli::PodArgs,

    #[command(flatten)]
    pub lease: litemaas_cli::LeaseArgs,

    /// Label selector of the PVC to snapshot.
    #[arg(
        long,
        env = "LITEMAAS_PVC_SELECTOR",
        default_value = "app=litellm-postgres"
    )]
    pub pvc_selector: String,

    /// Do not take a VolumeSnapshot.
    #[arg(long, env = "LITEMAAS_NO_SNAPSHOT")]
    pub no_snapshot: bool,

    /// VolumeSnapshotClass (default: the cluster's default class).
    #[arg(long, env = "LITEMAAS_SNAPSHOT_CLASS")]
    pub snapshot_class: Option<String>,

    /// How long to wait for the snapshot to become readyToUse.
    #[arg(
        long,
        env = "LITEMAAS_SNAPSHOT_TIMEOUT",
        default_value = "10m",
        value_name = "DURATION"
    )]
    pub snapshot_timeout: jiff::SignedDuration,

    /// Run CHECKPOINT just before the snapshot (needs superuser or pg_checkpoint; a failure is
    /// reported and the snapshot is still taken).
    #[arg(long, env = "LITEMAAS_CHECKPOINT")]
    pub checkpoint: bool,

    /// The backup-type label of the snapshot.
    #[arg(long, env = "LITEMAAS_SCHEDULE_NAME", default_value = "monthly")]
    pub schedule_name: String,

    /// Snapshots to keep (ready ones; failed and unfinished ones never count).
    #[arg(long, env = "LITEMAAS_KEEP_SNAPSHOTS", default_value_t = 3)]
    pub keep_snapshots: u32,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::Args;

    #[test]
    fn debug_output_of_the_arguments_never_shows_the_database_url() {
        let args = Args::parse_from([
            "litemaas-backup",
            "--database-url",
            "postgres://u:hunter2@db/x",
        ]);
        assert_eq!(
            args.database_url.as_ref().map(|u| u.expose()),
            Some("postgres://u:hunter2@db/x")
        );
        assert!(!format!("{args:?}").contains("hunter2"));
    }
}
