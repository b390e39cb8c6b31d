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
