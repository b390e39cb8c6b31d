//! Reading the routes, auditing or applying, and the verdict that sets the exit code.

use anyhow::{Context, Result};
use litemaas_routes::{Finding, Policy, Route, Routes, Selection, audit};
use serde_json::json;

use crate::cli::{self, Command};
use crate::report;

/// Whether every audited route meets the policy (exit 0) or not (exit 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every route meets the policy.
    InPolicy,
    /// Some route does not (or, in a dry run, would be changed).
    OutOfPolicy,
}

/// Runs the subcommand.
pub async fn run(command: Command) -> Result<Verdict> {
    match command {
        Command::Audit(selection) => run_audit(&selection).await,
        Command::Apply { selection, dry_run } => run_apply(&selection, dry_run).await,
    }
}

/// The policy, the client and the selected routes; an empty selection is an error (a wrong
/// namespace or selector must not pass for "all good").
async fn read(selection: &cli::Selection) -> Result<(Policy, Routes, Vec<Route>)> {
    let policy = selection.policy()?;
    let client = litemaas_cli::kube_client(selection.context.as_deref()).await?;
    let routes = Routes::new(client, &selection.namespace);
    let which = selection.routes();
    let found = routes.list(&which).await?;
    if found.is_empty() {
        let matching = match &which {
            Selection::Labels(s) => format!(" matches -l {s}"),
            _ => String::new(),
        };
        anyhow::bail!(
            "no Route in namespace {}{matching}: nothing to audit (wrong namespace or selector?)",
            selection.namespace
        );
    }
    Ok((policy, routes, found))
}

/// Overrides naming no route, when every route was read (with a selector or names, an override
/// for a route left out is expected).
fn warn_unmatched(selection: &cli::Selection, policy: &Policy, findings: &[Finding]) {
    if selection.routes() != Selection::All {
        return;
    }
    for name in policy.unmatched_overrides(findings) {
        eprintln!("warning: --timeout {name}=… names no audited route (a typo?)");
    }
}

async fn run_audit(selection: &cli::Selection) -> Result<Verdict> {
    let (policy, _, found) = read(selection).await?;
    let findings = audit(&found, &policy);
    let out = findings.iter().filter(|f| !f.in_policy).count();
    if selection.json {
        println!(
            "{}",
            json!({
                "namespace": selection.namespace,
                "policy": policy,
                "routes": findings,
                "out_of_policy": out,
                "unmatched_overrides": policy.unmatched_overrides(&findings),
            })
        );
    } else {
        print!("{}", report::table(&findings));
    }
    warn_unmatched(selection, &policy, &findings);
    if out == 0 {
        eprintln!(
            "all {} route(s) in namespace {} meet the policy",
            findings.len(),
            selection.namespace
        );
        Ok(Verdict::InPolicy)
    } else {
        eprintln!(
            "{out} of {} route(s) in namespace {} out of policy; `litemaas-routes apply` with the same arguments sets them",
            findings.len(),
            selection.namespace
        );
        Ok(Verdict::OutOfPolicy)
    }
}

async fn run_apply(selection: &cli::Selection, dry_run: bool) -> Result<Verdict> {
    let (policy, routes, found) = read(selection).await?;
    let before = audit(&found, &policy);
    warn_unmatched(selection, &policy, &before);
    let changes = routes
        .apply(&found, &policy, dry_run)
        .await
        .with_context(|| if dry_run { "dry run" } else { "apply" })?;
    // Read back what the router will see: proof, not hope.
    let after = if dry_run || changes.is_empty() {
        None
    } else {
        Some(audit(&routes.list(&selection.routes()).await?, &policy))
    };
    let still_out: Vec<&str> = after
        .iter()
        .flatten()
        .filter(|f| !f.in_policy)
        .map(|f| f.name.as_str())
        .collect();
    let unchanged: Vec<&str> = before
        .iter()
        .filter(|f| !changes.iter().any(|c| c.name == f.name))
        .map(|f| f.name.as_str())
        .collect();
    if selection.json {
        println!(
            "{}",
            json!({
                "namespace": selection.namespace,
                "dry_run": dry_run,
                "policy": policy,
                "changes": changes,
                "unchanged": unchanged,
                "routes": after.as_ref().unwrap_or(&before),
                "still_out_of_policy": still_out,
            })
        );
    } else {
        print!("{}", report::changes(&changes, dry_run));
    }
    let ns = &selection.namespace;
    match (changes.len(), dry_run) {
        (0, _) => eprintln!(
            "nothing to change: all {} route(s) in namespace {ns} meet the policy",
            before.len()
        ),
        (n, true) => {
            eprintln!(
                "dry run: would set the timeout of {n} of {} route(s) in namespace {ns}; nothing was changed",
                before.len()
            );
            return Ok(Verdict::OutOfPolicy);
        }
        (n, false) => eprintln!(
            "set the timeout of {n} of {} route(s) in namespace {ns}; {} already met the policy",
            before.len(),
            unchanged.len()
        ),
    }
    if still_out.is_empty() {
        Ok(Verdict::InPolicy)
    } else {
        // Changed by someone else since our patch: say so, and let an alert fire.
        eprintln!(
            "warning: read back after the change, still out of policy: {}",
            still_out.join(", ")
        );
        Ok(Verdict::OutOfPolicy)
    }
}
