//! `litemaas-prune`: show the retention plan for the dumps in a store and apply it; abort
//! multipart uploads a crash left behind; with `--namespace`, the same for the VolumeSnapshots.
//!
//! Table of contents: parse arguments, set up logs, then (in `run`) plan and delete
//! (`--dry-run`: only show), abort stale uploads, snapshots, report.

mod cli;
mod run;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    let logging = litemaas_cli::logging::init(args.verbose, args.log_file.as_deref());
    let report = args.report.clone();
    let namespace = args.namespace.clone();
    // The metrics file and the notification are written whatever happens.
    litemaas_cli::report::exit_reporting(
        "litemaas-prune",
        &report,
        namespace.as_deref(),
        |run| async move {
            logging?;
            run::prune(args, run).await
        },
    )
}
