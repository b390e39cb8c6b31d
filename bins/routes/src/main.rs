//! `litemaas-routes`: audit the HAProxy timeout of every LiteMaaS route
//! (`haproxy.router.openshift.io/timeout`, desired 600s) and set it where it is missing, ignored
//! by the router, or too short.
//!
//! Table of contents: parse arguments (a usage error exits 1, as every error does: 2 is kept
//! for "routes out of policy"), set up logs, then (in `run`) list the routes, audit or apply,
//! report. Exit codes: 0 all routes meet the policy, 1 error, 2 some do not (audit, or a
//! dry-run apply that would change something).

mod cli;
mod report;
mod run;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = match cli::Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(u8::from(e.use_stderr()));
        }
    };
    if let Err(e) = litemaas_cli::logging::init(args.verbose, args.log_file.as_deref()) {
        eprintln!("litemaas-routes: error: {e:#}");
        return ExitCode::FAILURE;
    }
    let mut verdict = run::Verdict::InPolicy;
    let code = litemaas_cli::exit("litemaas-routes", async {
        verdict = run::run(args.command).await?;
        Ok(())
    });
    match verdict {
        run::Verdict::OutOfPolicy => ExitCode::from(2),
        run::Verdict::InPolicy => code,
    }
}
