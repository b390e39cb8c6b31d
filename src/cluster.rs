//! The whole scheduled backup of a LiteMaaS namespace, as the original monthly cron job did it,
//! done right: check everything first, take the lock, stream each database dump from the pod to
//! the store, cut a VolumeSnapshot and wait until it is ready, then apply retention to dumps and
//! snapshots — only when every part of this run succeeded: after any failure nothing is deleted
//! (what did succeed is kept). Every part reports its own outcome.

use std::time::Duration;

use litemaas_dump::pod::{PodCredentials, find_pod, read_credentials};
use litemaas_dump::{PodDump, PodTarget};
use litemaas_retention::{Action, RetentionOptions};
use litemaas_s3::ObjectStore;
use litemaas_snapshot::{Snapshots, retention_item, snapshot_name};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::backup::{self, BackupOptions, BackupReport};
use crate::lock::{self, LeaseLock};
use crate::prune::{self, DumpListing, PruneReport};

/// What to back up and how.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The database pod and its Secret.
    pub target: PodTarget,
    /// Databases to dump (empty: the Secret's `database`). The Secret's database goes to the
    /// prefix itself, any other to `<prefix>/<database>/`.
    pub databases: Vec<String>,
    /// The PVC to snapshot, by label; `None` skips the snapshot.
    pub pvc_selector: Option<String>,
    /// VolumeSnapshotClass (default: the cluster's default class).
    pub snapshot_class: Option<String>,
    /// How long to wait for `readyToUse`.
    pub snapshot_timeout: Duration,
    /// Run `CHECKPOINT` just before the snapshot (less WAL replay after a restore; needs a
    /// superuser or `pg_checkpoint`). A failed checkpoint is reported, and the snapshot is still taken.
    pub checkpoint: bool,
    /// The `backup-type` label (the original tool's `monthly`).
    pub schedule: String,
    /// `pg_dump --lock-wait-timeout`: a dump stuck behind a lock fails instead of waiting.
    pub lock_wait_timeout: Option<Duration>,
    /// Dump options (prefix, codec, upload, the run's time).
    pub backup: BackupOptions,
    /// Retention for dumps (the original: keep 12); `None` skips it.
    pub dump_retention: Option<RetentionOptions>,
    /// Retention for snapshots (the original: keep 3); `None` skips it.
    pub snapshot_retention: Option<RetentionOptions>,
    /// The Lease that keeps runs from overlapping, and how long it lives without renewal.
    pub lease: (String, Duration),
}

impl ClusterOptions {
    /// LiteMaaS's defaults in `namespace` for a run at `now`.
    pub fn litemaas(namespace: &str, now: jiff::Timestamp) -> Self {
        Self {
            target: PodTarget::litemaas(namespace),
            databases: Vec::new(),
            pvc_selector: Some("app=litellm-postgres".into()),
            snapshot_class: None,
            snapshot_timeout: Duration::from_secs(600),
            checkpoint: false,
            schedule: "monthly".into(),
            lock_wait_timeout: Some(Duration::from_secs(600)),
            backup: BackupOptions::new(now),
            dump_retention: Some(RetentionOptions::dumps()),
            snapshot_retention: Some(RetentionOptions::snapshots()),
            lease: ("litemaas-backup".into(), Duration::from_secs(120)),
        }
    }
}

/// One part's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome<T> {
    /// What the part is (`dump of litemaas`, `snapshot litemaas-snapshot-…`).
    pub part: String,
    /// Its result, if it succeeded.
    pub ok: Option<T>,
    /// Its error (the whole cause chain), if it failed.
    pub error: Option<String>,
}

impl<T> Outcome<T> {
    fn from<E: std::error::Error>(part: String, result: Result<T, E>) -> Self {
        match result {
            Ok(value) => Self {
                part,
                ok: Some(value),
                error: None,
            },
            Err(e) => Self {
                part,
                ok: None,
                error: Some(chain(&e)),
            },
        }
    }

    /// Whether it succeeded.
    pub fn succeeded(&self) -> bool {
        self.ok.is_some()
    }
}

/// An error and its causes, `a: b: c`.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

/// A snapshot that became ready.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotReport {
    /// Its name.
    pub name: String,
    /// The PVC.
    pub pvc: String,
    /// `readyToUse`.
    pub ready: bool,
    /// `restoreSize`.
    pub restore_size: Option<String>,
    /// `CHECKPOINT` before it: `done`, or why it failed; `None` when not asked for.
    pub checkpoint: Option<String>,
    /// Wall time until ready.
    pub duration_ms: u64,
}

/// Snapshot retention's result.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotPrune {
    /// Every snapshot with its decision.
    pub plan: litemaas_retention::Plan,
    /// Deleted snapshots.
    pub deleted: Vec<String>,
}

/// What the run did, part by part.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterReport {
    /// One per database.
    pub dumps: Vec<Outcome<BackupReport>>,
    /// The snapshot, unless skipped.
    pub snapshot: Option<Outcome<SnapshotReport>>,
    /// Dump retention per prefix (only when every part succeeded).
    pub dump_retention: Vec<Outcome<PruneReport>>,
    /// Snapshot retention (only when every part succeeded).
    pub snapshot_retention: Option<Outcome<SnapshotPrune>>,
    /// A signal arrived: whatever was stored stays, retention was skipped.
    pub interrupted: bool,
    /// The Lease was lost (another run took it over, or it could not be renewed): the run
    /// stopped, retention was skipped.
    pub lease_lost: Option<String>,
}

impl ClusterReport {
    /// Whether every part succeeded.
    pub fn succeeded(&self) -> bool {
        !self.interrupted
            && self.lease_lost.is_none()
            && self.dumps.iter().all(Outcome::succeeded)
            && self.snapshot.as_ref().is_none_or(Outcome::succeeded)
            && self.dump_retention.iter().all(Outcome::succeeded)
            && self
                .snapshot_retention
                .as_ref()
                .is_none_or(Outcome::succeeded)
    }

    /// The failed parts, `part: error`.
    pub fn failures(&self) -> Vec<String> {
        let dumps = self.dumps.iter().map(|o| (&o.part, &o.error));
        let snapshot = self.snapshot.iter().map(|o| (&o.part, &o.error));
        let retention = self.dump_retention.iter().map(|o| (&o.part, &o.error));
        let snap_retention = self.snapshot_retention.iter().map(|o| (&o.part, &o.error));
        dumps
            .chain(snapshot)
            .chain(retention)
            .chain(snap_retention)
            .filter_map(|(part, error)| error.as_ref().map(|e| format!("{part}: {e}")))
            .chain(
                self.interrupted
                    .then(|| "interrupted by a signal: retention skipped".to_owned()),
            )
            .chain(
                self.lease_lost
                    .as_ref()
                    .map(|lost| format!("{lost}: the run stopped, retention skipped")),
            )
            .collect()
    }
}

/// Why the run could not start. Nothing was created in any of these cases.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The pod or the Secret is not usable.
    #[error("cannot dump the database")]
    Dump(#[from] litemaas_dump::Error),
    /// The PVC to snapshot is not there.
    #[error("cannot snapshot the database volume")]
    Snapshot(#[from] litemaas_snapshot::Error),
    /// The store is not usable.
    #[error("the backup store is not usable")]
    Store(#[from] litemaas_s3::Error),
    /// Another run holds the lock.
    #[error("not starting")]
    Locked(#[from] lock::LockError),
}

/// Everything checked before anything is created.
struct Checked {
    credentials: PodCredentials,
    pod: String,
    pvc: Option<String>,
}

async fn preflight(
    client: &kube::Client,
    store: &dyn ObjectStore,
    options: &ClusterOptions,
) -> Result<Checked, ClusterError> {
    let credentials = read_credentials(client, &options.target).await?;
    let pod = find_pod(client, &options.target).await?;
    let pvc = match &options.pvc_selector {
        Some(selector) => Some(
            Snapshots::new(client.clone(), &options.target.namespace)
                .find_pvc(selector)
                .await?,
        ),
        None => None,
    };
    store.check().await?;
    Ok(Checked {
        credentials,
        pod,
        pvc,
    })
}

/// Runs the whole backup of a namespace.
///
/// # Errors
/// [`ClusterError`] when the run cannot start (nothing created); otherwise the report says,
/// part by part, what succeeded.
pub async fn run(
    client: kube::Client,
    store: &dyn ObjectStore,
    options: &ClusterOptions,
    cancel: &CancellationToken,
) -> Result<ClusterReport, ClusterError> {
    let checked = preflight(&client, store, options).await?;
    let ns = options.target.namespace.clone();
    // Losing the Lease stops the run as a signal does (`run` is cancelled, `cancel` is not).
    let signal = cancel;
    let cancel = &signal.child_token();
    let guard = LeaseLock::new(client.clone(), &ns, &options.lease.0)
        .duration(options.lease.1)
        .acquire(cancel)
        .await?;

    // Dumps, one object each.
    let databases = if options.databases.is_empty() {
        vec![checked.credentials.database.clone()]
    } else {
        options.databases.clone()
    };
    let mut dumps = Vec::new();
    for database in &databases {
        let mut backup_options = options.backup.clone();
        if *database != checked.credentials.database {
            backup_options.prefix = join(&options.backup.prefix, database);
        }
        let mut source = PodDump::new(
            client.clone(),
            &options.target,
            checked.pod.clone(),
            checked.credentials.for_database(database),
            Some(database.clone()),
        );
        if let Some(timeout) = options.lock_wait_timeout {
            source = source.lock_wait_timeout(timeout);
        }
        let result = backup::run(&source, store, &backup_options, cancel).await;
        dumps.push((
            backup_options.prefix,
            Outcome::from(format!("dump of {database}"), result),
        ));
    }

    // The snapshot, at the run's time stamp.
    let snapshots = Snapshots::new(client.clone(), &ns);
    let snapshot = match &checked.pvc {
        Some(pvc) if !cancel.is_cancelled() => {
            let name = snapshot_name(options.backup.now);
            let started = std::time::Instant::now();
            let labels = [
                ("app", "litemaas-backup"),
                ("backup-type", options.schedule.as_str()),
            ];
            let checkpoint = if options.checkpoint {
                let db = PodDump::new(
                    client.clone(),
                    &options.target,
                    checked.pod.clone(),
                    checked.credentials.clone(),
                    None,
                );
                let checkpoint = tokio::time::timeout(Duration::from_secs(120), db.checkpoint());
                Some(match checkpoint.await {
                    Err(_) => {
                        tracing::warn!(
                            "CHECKPOINT before the snapshot took over 2 minutes; taking the snapshot anyway"
                        );
                        "failed: no answer within 2 minutes".to_owned()
                    }
                    Ok(Ok(())) => "done".to_owned(),
                    Ok(Err(e)) => {
                        tracing::warn!(
                            "CHECKPOINT before the snapshot failed; taking the snapshot anyway: {}",
                            chain(&e)
                        );
                        format!("failed: {}", chain(&e))
                    }
                })
            } else {
                None
            };
            let cut = async {
                snapshots
                    .create(pvc, &name, &labels, options.snapshot_class.as_deref())
                    .await?;
                let ready = snapshots
                    .wait_ready(&name, options.snapshot_timeout)
                    .await?;
                Ok::<_, litemaas_snapshot::Error>(SnapshotReport {
                    name: name.clone(),
                    pvc: pvc.clone(),
                    ready: true,
                    restore_size: ready.status.and_then(|s| s.restore_size),
                    checkpoint,
                    duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                })
            };
            let part = format!("snapshot {name}");
            Some(tokio::select! {
                biased;
                () = cancel.cancelled() => Outcome {
                    part,
                    ok: None,
                    error: Some("cancelled while waiting; the snapshot is left to finish on its own and never counts until ready".into()),
                },
                result = cut => Outcome::from(part, result),
            })
        }
        _ => None,
    };

    // Retention only after a run in which every part succeeded: never delete after a failure.
    // ... and never after a signal.
    let all_good = dumps.iter().all(|(_, o)| o.succeeded())
        && snapshot.as_ref().is_none_or(Outcome::succeeded)
        && !cancel.is_cancelled();
    let mut dump_retention = Vec::new();
    if let Some(rules) = options.dump_retention.as_ref().filter(|_| all_good) {
        for (prefix, outcome) in &dumps {
            let result = prune::prune_dumps(
                store,
                prefix,
                rules,
                &DumpListing::default(),
                options.backup.now,
                false,
            )
            .await;
            dump_retention.push(Outcome::from(
                format!("dump retention in {}", outcome.part),
                result,
            ));
        }
    }
    let snapshot_retention = match (&options.snapshot_retention, &snapshot) {
        (Some(rules), Some(_)) if all_good => {
            let result = prune_snapshots(
                &snapshots,
                &snapshot_selector(&options.schedule),
                rules,
                options.backup.now,
                false,
            )
            .await;
            Some(Outcome::from("snapshot retention".into(), result))
        }
        _ => None,
    };
    let lease_lost = guard.lost().map(|lost| lost.to_string());
    guard.release().await;
    Ok(ClusterReport {
        dumps: dumps.into_iter().map(|(_, o)| o).collect(),
        snapshot,
        dump_retention,
        snapshot_retention,
        interrupted: signal.is_cancelled(),
        lease_lost,
    })
}

fn join(prefix: &str, database: &str) -> String {
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        database.to_owned()
    } else {
        format!("{prefix}/{database}")
    }
}

/// The label selector of the snapshots a schedule takes (and retention counts):
/// `app=litemaas-backup,backup-type=<schedule>`. Snapshots of other schedules, and safety
/// snapshots taken before a volume restore, are neither counted nor deleted.
pub fn snapshot_selector(schedule: &str) -> String {
    format!("app=litemaas-backup,backup-type={schedule}")
}

/// Applies `rules` to the snapshots `selector` picks (see [`snapshot_selector`]): ready ones
/// count, failed and not-ready ones never do.
///
/// # Errors
/// Listing or deleting failed.
pub async fn prune_snapshots(
    snapshots: &Snapshots,
    selector: &str,
    rules: &RetentionOptions,
    now: jiff::Timestamp,
    dry_run: bool,
) -> Result<SnapshotPrune, PruneSnapshotsError> {
    let items: Vec<_> = snapshots
        .list(selector)
        .await
        .map_err(|source| PruneSnapshotsError::Snapshot {
            deleted: Vec::new(),
            source,
        })?
        .iter()
        .map(retention_item)
        .collect();
    let plan = rules.plan(&items, now)?;
    let mut deleted = Vec::new();
    for decision in plan.decisions.iter().filter(|d| d.action == Action::Delete) {
        if dry_run {
            tracing::info!(
                snapshot = decision.id,
                reasons = decision.why(),
                "would delete"
            );
            continue;
        }
        if let Err(source) = snapshots.delete(&decision.id).await {
            return Err(PruneSnapshotsError::Snapshot { deleted, source });
        }
        tracing::info!(snapshot = decision.id, reasons = decision.why(), "deleted");
        deleted.push(decision.id.clone());
    }
    Ok(SnapshotPrune { plan, deleted })
}

/// Why snapshot retention stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PruneSnapshotsError {
    /// The API failed (listing, or a delete after `deleted` had gone).
    #[error("snapshot retention failed{}", crate::prune::deleted_so_far(deleted))]
    Snapshot {
        /// Snapshots deleted before the failure.
        deleted: Vec<String>,
        /// The cause.
        #[source]
        source: litemaas_snapshot::Error,
    },
    /// The rules are unusable.
    #[error("invalid retention options")]
    Options(#[from] litemaas_retention::Error),
}
