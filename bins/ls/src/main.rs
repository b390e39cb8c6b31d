//! `litemaas-ls`: what backups exist. The dumps in a store (S3 or a local directory), each with
//! its time, size, compression, whether a SHA-256 is recorded, and its state by the rule
//! retention and `--latest` use; with `--namespace`, the database volume's VolumeSnapshots.
//! Newest first, a table or `--json`, and a summary of the newest usable backup of each kind;
//! with `--stale AGE`, exit 2 when one of them is missing or older (`stale`).
//!
//! Table of contents: parse arguments, set up logs, then (in `run`) read the store and the
//! snapshots, and print them (`render` for the table).

mod cli;
mod render;
mod run;
mod stale;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Usage errors exit 1, not clap's 2: 2 means stale backups (`--stale`).
    let args = match cli::Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(u8::from(e.use_stderr()));
        }
    };
    if let Err(e) = litemaas_cli::logging::init(args.verbose, None) {
        eprintln!("litemaas-ls: error: {e:#}");
        return ExitCode::FAILURE;
    }
    litemaas_cli::exit_with("litemaas-ls", run::ls(args))
}
