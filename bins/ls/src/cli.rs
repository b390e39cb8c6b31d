//! Command-line arguments. Every flag also reads an environment variable.

use clap::Parser;
use litemaas_cli::StoreArgs;

/// List the LiteMaaS backups that exist, newest first: dumps and VolumeSnapshots. Changes nothing.
///
/// Each dump with its time (from its name, UTC), size, compression, whether a SHA-256 is recorded
/// for exactly its size, and its state: complete (integrity record), legacy (the original tool's:
/// no record, not ours, not empty), failed (ours without a record), empty, in-progress or
/// abandoned (an open upload). Complete and legacy dumps count toward retention and for
/// `litemaas-restore --latest`; the others never do. With --namespace, the VolumeSnapshots of the
/// database claim and every one labelled app=litemaas-backup: ours, safety (a volume restore's)
/// or foreign. Exit 0 when the listing worked, even if empty; 1 on error (usage errors too); 2
/// when --stale finds a backup missing or too old.
#[derive(Debug, Parser)]
#[command(name = "litemaas-ls", version)]
pub struct Args {
    #[command(flatten)]
    pub store: StoreArgs,

    /// Also list the VolumeSnapshots in this namespace: every one of the database claim and
    /// every one labelled app=litemaas-backup.
    #[arg(long, env = "LITEMAAS_NAMESPACE")]
    pub namespace: Option<String>,

    /// kubeconfig context (default: the current one, or the in-cluster service account).
    #[arg(long, env = "LITEMAAS_CONTEXT")]
    pub context: Option<String>,

    /// The database's claim, whose snapshots are listed even when not ours.
    #[arg(
        long,
        env = "LITEMAAS_CLAIM",
        default_value = "postgres-storage-litellm-postgres-0"
    )]
    pub claim: String,

    /// Also show what is not a backup: objects under the prefix not named like dumps (and why),
    /// and the namespace's other snapshots. By default they are only counted.
    #[arg(long)]
    pub all: bool,

    /// Print everything as one JSON object on stdout.
    #[arg(long, env = "LITEMAAS_JSON")]
    pub json: bool,

    /// Exit 2 when the newest usable dump (of the main database and of each other database
    /// folder) or, with --namespace, the newest ready snapshot of ours is missing or older than
    /// this (35d, 36h, 5w): for a monitor that alerts on a schedule that silently stopped. Each
    /// kind gets a line on stderr, `STALE: …` or `ok: …`.
    #[arg(long, env = "LITEMAAS_STALE", value_name = "AGE")]
    pub stale: Option<crate::stale::MaxAge>,

    /// More detail on stderr (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}
