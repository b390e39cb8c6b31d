//! Command-line arguments. Every flag also reads an environment variable; give a database URL
//! that holds a password through `LITEMAAS_DATABASE_URL` or a libpq password file, never as a
//! flag, since every user of the host can read a process's arguments.

use std::path::PathBuf;

use clap::Parser;
use litemaas_backup::dump::Compression;

/// Stream a pg_dump of the LiteMaaS database, compressed, into S3 (or a local directory).
#[derive(Debug, Parser)]
#[command(name = "litemaas-backup", version, about, long_about = None)]
pub struct Args {
    /// Database URL (postgres://user@host:port/db). Prefer the environment variable or
    /// ~/.pgpass for the password. Without it, libpq's PG* environment is used.
    #[arg(
        long,
        env = "LITEMAAS_DATABASE_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub database_url: Option<String>,

    /// S3 bucket; without it the backup goes to the local directory --dest.
    #[arg(long, env = "LITEMAAS_BUCKET")]
    pub bucket: Option<String>,

    /// Key prefix in the bucket [default: litemaas-backups]; none in a local --dest.
    #[arg(long, env = "LITEMAAS_PREFIX")]
    pub prefix: Option<String>,

    /// Local directory used when no bucket is given.
    #[arg(
        long,
        env = "LITEMAAS_DEST",
        default_value = "litemaas-backups",
        value_name = "DIR"
    )]
    pub dest: PathBuf,

    /// gzip[:1-9], zstd[:1-19] or none.
    #[arg(long, env = "LITEMAAS_COMPRESSION", default_value = "gzip")]
    pub compression: Compression,

    /// Compression threads (default: all cores).
    #[arg(long, env = "LITEMAAS_THREADS")]
    pub threads: Option<usize>,

    /// S3-compatible endpoint (ODF, MinIO); AWS_ENDPOINT_URL_S3 is read too.
    #[arg(long, env = "LITEMAAS_ENDPOINT_URL", value_name = "URL")]
    pub endpoint_url: Option<String>,

    /// AWS region (default: the AWS configuration chain).
    #[arg(long, env = "LITEMAAS_REGION")]
    pub region: Option<String>,

    /// Path-style S3 addressing (automatic for IP and localhost endpoints).
    #[arg(long, env = "LITEMAAS_PATH_STYLE")]
    pub path_style: bool,

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

    /// Print one JSON object describing the backup on stdout.
    #[arg(long, env = "LITEMAAS_JSON")]
    pub json: bool,

    /// Append logs to this file (the original tool used /var/log/litemaas-backup.log).
    #[arg(long, env = "LITEMAAS_LOG_FILE", value_name = "PATH")]
    pub log_file: Option<PathBuf>,

    /// More detail on stderr (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}
