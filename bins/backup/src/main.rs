//! `litemaas-backup`: one streaming database backup, then retention; or, with `--namespace`,
//! the whole scheduled backup of a LiteMaaS namespace (dumps from the pod, a VolumeSnapshot,
//! retention for both).
//!
//! Reads like a table of contents: parse arguments, set up logs, then run one of the two jobs
//! (in `run`), cancelled cleanly on SIGINT/SIGTERM, and report: on stderr, and in the metrics
//! file and the notification, part by part.

mod cli;
mod run;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    let logging = litemaas_cli::logging::init(args.verbose, args.log_file.as_deref());
    let report = args.report.clone();
    let namespace = args.cluster.namespace.clone();
    // The metrics file and the notification are written whatever happens, even when logging
    // or a flag fails before anything started.
    litemaas_cli::report::exit_reporting(
        "litemaas-backup",
        &report,
        namespace.as_deref(),
        |run| async move {
            logging?;
            match args.cluster.namespace.clone() {
                Some(namespace) => run::cluster(args, namespace, run).await,
                None => run::backup_then_prune(args, run).await,
            }
        },
    )
}
