//! `litemaas-doctor`: every prerequisite of a LiteMaaS backup and restore, checked in order,
//! each failure with its fix; `--iam-policy BUCKET` prints the IAM policy and trust
//! relationship the tool needs.
//!
//! Reads like a table of contents: parse arguments, set up logs, then either print the IAM
//! policy or run the checks (`run`: the cluster's in `cluster`, S3's in `s3`, pg_dump's in
//! `postgres`) and print the report (`report`). Exit 0 only when every check passed.

mod check;
mod cli;
mod cluster;
mod iam;
mod postgres;
mod report;
mod run;
mod s3;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    if let Err(e) = litemaas_cli::logging::init(args.verbose, args.log_file.as_deref()) {
        eprintln!("litemaas-doctor: error: {e:#}");
        return ExitCode::FAILURE;
    }
    if let Some(bucket) = &args.iam_policy {
        return litemaas_cli::exit("litemaas-doctor", async {
            run::print_iam_policy(bucket, args.store.prefix.as_deref())
        });
    }
    let job = async move {
        if run::run(args).await? {
            Ok(())
        } else {
            anyhow::bail!("not every check passed: see the FAIL lines and their fixes")
        }
    };
    litemaas_cli::exit("litemaas-doctor", job)
}
