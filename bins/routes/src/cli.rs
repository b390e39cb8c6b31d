//! Command-line arguments. Every flag also reads an environment variable.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use litemaas_routes::{Policy, Timeout};

/// Audit and set the HAProxy timeout of LiteMaaS's OpenShift routes
/// (haproxy.router.openshift.io/timeout). Exit codes: 0 every route meets the policy, 1 error,
/// 2 some route does not.
#[derive(Debug, Parser)]
#[command(name = "litemaas-routes", version, about, long_about = None)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,

    /// Append logs to this file.
    #[arg(long, env = "LITEMAAS_LOG_FILE", value_name = "PATH", global = true)]
    pub log_file: Option<PathBuf>,

    /// More detail on stderr (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show every route's host and timeout as the router reads it; exit 2 if any is missing,
    /// ignored by the router, or below the desired value. Changes nothing.
    Audit(Selection),
    /// Set the timeout (with an explicit unit) on every route out of policy, by a merge patch
    /// of its annotations; routes in policy, longer timeouts included, are left alone.
    Apply {
        #[command(flatten)]
        selection: Selection,
        /// Show each change as before → after; change nothing (exit 2 if there is any).
        #[arg(long, env = "LITEMAAS_DRY_RUN")]
        dry_run: bool,
    },
}

/// Which routes, and the policy they are held to.
#[derive(Debug, clap::Args)]
pub struct Selection {
    /// Namespace of the routes.
    #[arg(short, long, env = "LITEMAAS_NAMESPACE")]
    pub namespace: String,

    /// kubeconfig context (default: the current one, or the in-cluster service account).
    #[arg(long, env = "LITEMAAS_CONTEXT")]
    pub context: Option<String>,

    /// Only the routes matching this label selector (e.g. app=litellm-backend).
    #[arg(
        short = 'l',
        long,
        env = "LITEMAAS_ROUTE_SELECTOR",
        conflicts_with = "names"
    )]
    pub selector: Option<String>,

    /// Only these routes (each must exist); default: every route in the namespace.
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,

    /// The desired (minimum) timeout of every route, with a unit.
    #[arg(
        long,
        env = "LITEMAAS_ROUTE_TIMEOUT",
        default_value = "600s",
        value_name = "TIMEOUT"
    )]
    pub timeout_default: Timeout,

    /// The desired timeout of one route, e.g. litellm-mcp=300s (repeatable; comma-separated
    /// in the environment variable).
    #[arg(
        long = "timeout",
        env = "LITEMAAS_ROUTE_TIMEOUTS",
        value_delimiter = ',',
        value_name = "NAME=TIMEOUT",
        value_parser = parse_override
    )]
    pub overrides: Vec<(String, Timeout)>,

    /// The router's default server timeout, which routes without a usable annotation get (the
    /// IngressController's tuningOptions.serverTimeout).
    #[arg(
        long,
        env = "LITEMAAS_ROUTER_SERVER_TIMEOUT",
        default_value = "30s",
        value_name = "TIMEOUT"
    )]
    pub router_server_timeout: Timeout,

    /// The router's default tunnel timeout, which passthrough routes without a usable
    /// annotation get (the IngressController's tuningOptions.tunnelTimeout).
    #[arg(
        long,
        env = "LITEMAAS_ROUTER_TUNNEL_TIMEOUT",
        default_value = "1h",
        value_name = "TIMEOUT"
    )]
    pub router_tunnel_timeout: Timeout,

    /// Print the result as one JSON object on stdout.
    #[arg(long, env = "LITEMAAS_JSON")]
    pub json: bool,
}

fn parse_override(text: &str) -> Result<(String, Timeout), litemaas_routes::ValueError> {
    Policy::parse_override(text)
}

impl Selection {
    /// The policy the flags describe.
    ///
    /// # Errors
    /// A route given two different overrides.
    pub fn policy(&self) -> anyhow::Result<Policy> {
        let mut policy = Policy::new(self.timeout_default);
        policy.router_server_timeout = self.router_server_timeout;
        policy.router_tunnel_timeout = self.router_tunnel_timeout;
        for (name, timeout) in &self.overrides {
            match policy.overrides.insert(name.clone(), *timeout) {
                Some(other) if other != *timeout => anyhow::bail!(
                    "--timeout {name}= is given twice, as {other} and {timeout}: give it once"
                ),
                _ => {}
            }
        }
        Ok(policy)
    }

    /// The routes to read.
    pub fn routes(&self) -> litemaas_routes::Selection {
        match (&self.selector, self.names.is_empty()) {
            (Some(selector), _) => litemaas_routes::Selection::Labels(selector.clone()),
            (None, false) => litemaas_routes::Selection::Names(self.names.clone()),
            (None, true) => litemaas_routes::Selection::All,
        }
    }
}
