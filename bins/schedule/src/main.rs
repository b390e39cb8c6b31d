//! `litemaas-schedule`: the monthly backup, scheduled where a LiteMaaS team runs things — a
//! crontab line on the bastion (`cron`), or a CronJob with least-privilege RBAC in the cluster
//! (`kubernetes`).
//!
//! Reads like a table of contents: parse arguments, set up logs, run the subcommand.

mod cron;
mod kubernetes;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Schedule the LiteMaaS backup: a bastion crontab line, or an in-cluster CronJob.
#[derive(Debug, Parser)]
#[command(name = "litemaas-schedule", version, about, long_about = None)]
struct Args {
    /// More logs (-v debug, -vv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The bastion: one crontab line per namespace that runs litemaas-backup itself.
    Cron(cron::Args),
    /// In the cluster: ServiceAccount, Role, RoleBinding and CronJob, rendered or applied.
    Kubernetes(kubernetes::Args),
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = litemaas_cli::logging::init(args.verbose, None) {
        eprintln!("litemaas-schedule: error: {e:#}");
        return ExitCode::FAILURE;
    }
    let job = async move {
        match args.command {
            Command::Cron(args) => cron::run(args).await,
            Command::Kubernetes(args) => kubernetes::run(args).await,
        }
    };
    litemaas_cli::exit("litemaas-schedule", job)
}
