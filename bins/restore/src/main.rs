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
    let logging = litemaas_cli::logging::init(args.verbose, args.log_file.as_deref());
    let report = args.report.clone();
    let namespace = match &args.command {
        Some(cli::Command::Verify(verify)) => verify.target.namespace.clone(),
        Some(cli::Command::Volume(volume)) => Some(volume.namespace.clone()),
        None => args.restore.target.namespace.clone(),
    };
    // The metrics file and the notification are written whatever happens; the job is one part
    // (`restore`, `verify` or `volume_restore`).
    litemaas_cli::report::exit_reporting(
        "litemaas-restore",
        &report,
        namespace.as_deref(),
        |run| async move {
            logging?;
            let started = std::time::Instant::now();
            let (part, database, result) = match args.command {
                Some(cli::Command::Verify(verify)) => ("verify", None, run::verify(verify).await),
                Some(cli::Command::Volume(args)) => {
                    ("volume_restore", None, volume::run(args).await)
                }
                None => {
                    let into = args.restore.into.clone();
                    ("restore", into, run::restore(args.restore).await)
                }
            };
            run.outcome(part, database.as_deref().unwrap_or(""), started, &result);
            result
        },
    )
}
