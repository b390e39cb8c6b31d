//! Command-line arguments. Every flag also reads an environment variable; give a database URL
//! that holds a password through `LITEMAAS_DATABASE_URL` or a libpq password file, never as a
//! flag, since every user of the host can read a process's arguments.

use std::path::PathBuf;

use clap::Parser;
use litemaas_backup::dump::Secret;
use litemaas_cli::{PodArgs, StoreArgs};
use litemaas_routes::Timeout;

/// Check every prerequisite of a LiteMaaS backup and restore, in order, each failure with its
/// fix: the cluster and who we are, the namespace, the database StatefulSet, pod, Secret and
/// claim, a VolumeSnapshotClass, RBAC, S3 (credentials, bucket, a probe under the prefix,
/// multipart clean-up), pg_dump's version, route timeouts. Changes nothing but a probe object,
/// which it deletes. Exit 0 only when every check passes.
#[derive(Debug, Parser)]
#[command(name = "litemaas-doctor", version, about, long_about = None)]
pub struct Args {
    /// The LiteMaaS namespace: check the cluster and pg_dump in the database pod. Without it,
    /// the local pg_dump is checked against --database-url's server.
    #[arg(long, env = "LITEMAAS_NAMESPACE")]
    pub namespace: Option<String>,

    /// kubeconfig context (default: the current one, or the in-cluster service account).
    #[arg(long, env = "LITEMAAS_CONTEXT")]
    pub context: Option<String>,

    #[command(flatten)]
    pub store: StoreArgs,

    #[command(flatten, next_help_heading = "Cluster (with --namespace)")]
    pub pod: PodArgs,

    /// The database StatefulSet.
    #[arg(long, env = "LITEMAAS_STATEFULSET", default_value = "litellm-postgres")]
    pub statefulset: String,

    /// Label selector of the claim the backup snapshots.
    #[arg(
        long,
        env = "LITEMAAS_PVC_SELECTOR",
        default_value = "app=litellm-postgres"
    )]
    pub pvc_selector: String,

    /// VolumeSnapshotClass the backup names (default: the driver's default class).
    #[arg(long, env = "LITEMAAS_SNAPSHOT_CLASS")]
    pub snapshot_class: Option<String>,

    /// The timeout every route should have at least (the same environment variables as
    /// litemaas-routes).
    #[arg(
        long,
        env = "LITEMAAS_ROUTE_TIMEOUT",
        default_value = "600s",
        value_name = "DURATION"
    )]
    pub routes_timeout: Timeout,

    /// A route's own timeout, NAME=DURATION (e.g. an MCP route at 300s); repeat for several.
    #[arg(
        long = "route-timeout",
        env = "LITEMAAS_ROUTE_TIMEOUTS",
        value_delimiter = ',',
        value_name = "NAME=DURATION",
        value_parser = litemaas_routes::Policy::parse_override
    )]
    pub route_timeouts: Vec<(String, Timeout)>,

    /// Label selector of the routes to check (default: every route in the namespace).
    #[arg(long, env = "LITEMAAS_ROUTE_SELECTOR")]
    pub route_selector: Option<String>,

    /// Database URL for the local pg_dump check (without --namespace). Prefer the environment
    /// variable or ~/.pgpass for the password.
    #[arg(
        long,
        env = "LITEMAAS_DATABASE_URL",
        hide_env_values = true,
        value_name = "URL",
        conflicts_with = "namespace"
    )]
    pub database_url: Option<Secret>,

    /// The pg_dump program checked without --namespace.
    #[arg(
        long,
        env = "LITEMAAS_PG_DUMP",
        default_value = "pg_dump",
        value_name = "PATH"
    )]
    pub pg_dump: PathBuf,

    /// Print the report as one JSON object on stdout.
    #[arg(long, env = "LITEMAAS_JSON")]
    pub json: bool,

    /// Print the IAM policy (for BUCKET and --prefix) and the EC2 trust relationship this tool
    /// needs, as JSON, and exit without checking anything.
    #[arg(long, value_name = "BUCKET")]
    pub iam_policy: Option<String>,

    /// Append logs to this file.
    #[arg(long, env = "LITEMAAS_LOG_FILE", value_name = "PATH")]
    pub log_file: Option<PathBuf>,

    /// More detail on stderr (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::Args;

    #[test]
    fn debug_output_of_the_arguments_never_shows_the_database_url() {
        let args = Args::parse_from([
            "litemaas-doctor",
            "--database-url",
            "postgres://u:hunter2@db/x",
        ]);
        assert!(!format!("{args:?}").contains("hunter2"));
    }

    #[test]
    fn route_overrides_parse() {
        let args = Args::parse_from([
            "litemaas-doctor",
            "--route-timeout",
            "litellm-mcp=300s",
            "--routes-timeout",
            "10m",
        ]);
        assert_eq!(args.route_timeouts[0].0, "litellm-mcp");
        assert_eq!(args.routes_timeout.as_millis(), 600_000);
    }
}
