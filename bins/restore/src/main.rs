//! `litemaas-restore`: restore the database from a backup, all or nothing (`litemaas-restore
//! --key KEY --database-url … --yes`, or `--namespace NS` for psql in the database pod); or
//! `litemaas-restore verify`, a test restore into a scratch database that is always dropped; or
//! `litemaas-restore volume`, the database volume from a VolumeSnapshot.
//!
//! Reads like a table of contents: parse arguments, set up logs, run the chosen job (in `run`),
//! cancelled cleanly on SIGINT/SIGTERM, and report.

mod cli;
mod run;
mod volume;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    if let Err(e) = litemaas_cli::logging::init(args.verbose, args.log_file.as_deref()) {
        eprintln!("litemaas-restore: error: {e:#}");
        return ExitCode::FAILURE;
    }
    let job = async move {
        match args.command {
            Some(cli::Command::Verify(verify)) => run::verify(verify).await,
            Some(cli::Command::Volume(args)) => volume::run(args).await,
            None => run::restore(args.restore).await,
        }
    };
    litemaas_cli::exit("litemaas-restore", job)
}
