//! `litemaas-backup`: one streaming database backup.
//!
//! Reads like a table of contents: parse arguments, set up logs, build the dump source and the
//! store, run the backup (cancelled cleanly on SIGINT/SIGTERM), report.

mod cli;
mod logging;
mod run;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    if let Err(e) = logging::init(args.verbose, args.log_file.as_deref()) {
        eprintln!("litemaas-backup: error: {e:#}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("litemaas-backup: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run::backup(&args)) {
        Ok(report) => {
            run::print_report(&report, args.json);
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(target: logging::FILE_ONLY, "backup failed: {e:#}");
            eprintln!("litemaas-backup: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
