//! `litemaas-backup`: one streaming database backup, then retention.
//!
//! Reads like a table of contents: parse arguments, set up logs, then (in `run`) open the store,
//! stream the dump (cancelled cleanly on SIGINT/SIGTERM), apply retention only after success,
//! and report.

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
    litemaas_cli::exit("litemaas-backup", run::backup_then_prune(args))
}
