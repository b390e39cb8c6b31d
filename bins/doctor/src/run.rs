//! The checks in the order of the issue, each group skipped when what it depends on failed.

use anyhow::Result;

use crate::check::Check;
use crate::cli::Args;
use crate::report::Report;
use crate::{cluster, postgres, s3};

/// Prints the IAM policy and trust relationship the tool needs for `bucket` (and `prefix`,
/// default `litemaas-backups`), as JSON; checks nothing.
pub fn print_iam_policy(bucket: &str, prefix: Option<&str>) -> Result<()> {
    let policy = crate::iam::iam_policy(bucket, prefix.unwrap_or("litemaas-backups"));
    println!("{}", serde_json::to_string_pretty(&policy)?);
    Ok(())
}

/// Runs every check and prints the report; `Ok(false)` when any did not pass.
pub async fn run(args: Args) -> Result<bool> {
    let mut checks = Vec::new();
    match &args.namespace {
        Some(ns) => {
            let options = cluster_options(&args, ns);
            let cluster = cluster::cluster_checks(ns, &options).await;
            checks.extend(cluster.checks);
            checks.extend(s3::s3_checks(&args.store).await);
            let target = args.pod.target(ns);
            checks.push(match (&cluster.client, &cluster.pod_blocked) {
                (Some(client), None) => postgres::pg_dump_in_pod(client.clone(), &target).await,
                (_, because) => Check::skipped(
                    "postgres.pg_dump",
                    format!(
                        "pg_dump in the database pod ({} in namespace {ns}) major version ≥ the server's",
                        target.selector
                    ),
                    because.as_deref().unwrap_or("no cluster access"),
                ),
            });
            match (&cluster.client, &cluster.routes_blocked) {
                (Some(client), None) => {
                    checks.extend(cluster::route_checks(client.clone(), ns, &options).await);
                }
                (_, because) => checks.push(Check::skipped(
                    "routes",
                    cluster::routes_what(ns, &options),
                    because.as_deref().unwrap_or("no cluster access"),
                )),
            }
        }
        None => {
            checks.extend(s3::s3_checks(&args.store).await);
            checks.push(postgres::pg_dump_local(&args.pg_dump, args.database_url.as_ref()).await);
        }
    }
    let report = Report::new(checks);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.text());
    }
    Ok(report.ok)
}

fn cluster_options(args: &Args, ns: &str) -> cluster::Options {
    let mut routes = litemaas_routes::Policy::new(args.routes_timeout);
    for (name, timeout) in &args.route_timeouts {
        routes = routes.with_override(name.clone(), *timeout);
    }
    cluster::Options {
        context: args.context.clone(),
        target: args.pod.target(ns),
        statefulset: args.statefulset.clone(),
        pvc_selector: args.pvc_selector.clone(),
        snapshot_class: args.snapshot_class.clone(),
        routes,
        route_selector: args.route_selector.clone(),
    }
}
