//! `litemaas-restore volume`: the plan, the confirmation, the Lease, each step as it happens,
//! and the report.

use std::io::IsTerminal;

use anyhow::{Context, Result, bail};
use litemaas_backup::snapshot::volume::{
    Plan, SnapshotChoice, StepReport, Timeouts, VolumeOptions, VolumeRestore, VolumeTarget,
};

use crate::cli::VolumeArgs;

fn options(args: &VolumeArgs) -> VolumeOptions {
    let target = VolumeTarget {
        namespace: args.namespace.clone(),
        statefulset: args.statefulset.clone(),
        claim: args.claim.clone(),
    };
    let choice = match &args.snapshot {
        Some(name) => SnapshotChoice::Named(name.clone()),
        None => SnapshotChoice::Latest,
    };
    let mut options = VolumeOptions::new(target, choice, jiff::Timestamp::now());
    options.safety_snapshot = !args.no_safety_snapshot;
    options.safety_class.clone_from(&args.safety_snapshot_class);
    options.release_previous_volume = args.release_previous_volume;
    options.timeouts = Timeouts {
        scale_down: args.scale_down_timeout.unsigned_abs(),
        snapshot: args.snapshot_timeout.unsigned_abs(),
        bind: args.bind_timeout.unsigned_abs(),
        ready: args.ready_timeout.unsigned_abs(),
    };
    options.poll = args.poll_interval.unsigned_abs();
    options
}

fn print_plan(plan: &Plan) {
    eprintln!(
        "volume restore plan for claim {}/{} (StatefulSet {}, {} replica(s)):",
        plan.target.namespace, plan.target.claim, plan.target.statefulset, plan.replicas
    );
    for (n, step) in plan.steps.iter().enumerate() {
        eprintln!("  {}. {step}", n + 1);
    }
}

/// Asks for the namespace to be typed, unless `--yes`.
fn confirm(args: &VolumeArgs) -> Result<()> {
    if args.yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        bail!(
            "refusing to replace the volume of claim {}/{} without --yes (stdin is not a terminal); nothing was changed",
            args.namespace,
            args.claim
        );
    }
    eprint!(
        "This stops the database and replaces its volume. Type the namespace ({}) to go on: ",
        args.namespace
    );
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if answer.trim() != args.namespace {
        bail!("not confirmed; nothing was changed");
    }
    Ok(())
}

fn print_step(report: &StepReport) {
    eprintln!(
        "[{}] {} ({:.1} s)",
        report.step, report.detail, report.seconds
    );
}

/// Plans, confirms, takes the Lease, runs the steps, reports.
pub async fn run(args: VolumeArgs) -> Result<()> {
    let cancel = litemaas_cli::cancel_on_signal();
    let client = litemaas_cli::kube_client(args.context.as_deref()).await?;
    let restore = VolumeRestore::new(client.clone(), options(&args));
    let plan = restore.plan().await?;
    print_plan(&plan);
    if args.dry_run {
        if args.json {
            println!("{}", serde_json::to_string(&plan)?);
        }
        eprintln!("dry run: nothing was changed");
        return Ok(());
    }
    confirm(&args)?;
    // The backup's Lease: a backup and a restore never overlap. Losing it stops the run.
    let run = cancel.child_token();
    let guard = args
        .lease
        .lock(client, &args.namespace)
        .acquire(&run)
        .await
        .context("not restoring the volume; nothing was changed")?;
    // The plan may be stale after waiting for confirmation: check again under the Lease.
    let plan = match restore.plan().await {
        Ok(fresh) => fresh,
        Err(e) => {
            guard.release().await;
            return Err(e.into());
        }
    };
    let result = restore.execute(&plan, &run, &print_step).await;
    let lost = guard.lost();
    guard.release().await;
    let report = match (result, lost) {
        (Ok(report), _) => report,
        (Err(e), Some(lost)) => {
            return Err(
                anyhow::Error::new(e).context(format!("{lost}: the volume restore was stopped"))
            );
        }
        (Err(e), None) => return Err(e.into()),
    };
    eprintln!(
        "volume restore done: claim {}/{} holds VolumeSnapshot {}",
        plan.target.namespace, plan.target.claim, plan.snapshot.name
    );
    if let Some(safety) = &plan.safety_snapshot {
        eprintln!(
            "to go back to the volume as it was: litemaas-restore volume --namespace {} --snapshot {safety} --yes",
            plan.target.namespace
        );
    }
    match (&report.previous_volume, report.previous_volume_released) {
        (Some(volume), true) => eprintln!(
            "previous volume {volume}: reclaim policy {} given back (--release-previous-volume)",
            plan.reclaim_policy.as_deref().unwrap_or("Delete")
        ),
        (Some(volume), false) => eprintln!(
            "previous volume {volume} is kept (Released, reclaim policy Retain); delete it when satisfied: kubectl delete pv {volume}"
        ),
        (None, _) => {}
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}
