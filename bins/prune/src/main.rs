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
    if let Err(e) = litemaas_cli::logging::init(args.verbose, args.log_file.as_deref()) {
        eprintln!("litemaas-prune: error: {e:#}");
        return ExitCode::FAILURE;
    }
    litemaas_cli::exit("litemaas-prune", run::prune(args))
}
