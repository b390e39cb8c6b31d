//! `litemaas-backup`: one streaming database backup, then retention; or, with `--namespace`,
//! the whole scheduled backup of a LiteMaaS namespace (dumps from the pod, a VolumeSnapshot,
//! retention for both).
//!
//! Reads like a table of contents: parse arguments, set up logs, then run one of the two jobs
//! (in `run`), cancelled cleanly on SIGINT/SIGTERM, and report.

mod cli;
mod run;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    if let Err(e) = litemaas_cli::logging::init(args.verbose, args.log_file.as_deref()) {
        eprintln!("litemaas-backup: error: {e:#}");
        return ExitCode::FAILURE;
    }
    let job = async move {
        match args.cluster.namespace.clone() {
            Some(namespace) => run::cluster(args, namespace).await,
            None => run::backup_then_prune(args).await,
        }
    };
    litemaas_cli::exit("litemaas-backup", job)
}
