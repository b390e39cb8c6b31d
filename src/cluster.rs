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
                cancel,
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
                cancel,
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
/// count, failed and not-ready ones never do. Once `stop` is cancelled (a signal; a lost
/// Lease) nothing more is deleted.
///
/// # Errors
/// Listing or deleting failed, or `stop` was cancelled.
pub async fn prune_snapshots(
    snapshots: &Snapshots,
    selector: &str,
    rules: &RetentionOptions,
    now: jiff::Timestamp,
    dry_run: bool,
    stop: &CancellationToken,
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
        if stop.is_cancelled() {
            return Err(PruneSnapshotsError::Stopped { deleted });
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
    /// The run was stopped (a signal, or its Lease was lost) before every delete was done.
    #[error(
        "snapshot retention stopped (the run was cancelled: a signal, its deadline or a lost Lease){}",
        crate::prune::deleted_so_far(deleted)
    )]
    Stopped {
        /// Snapshots deleted before the stop.
        deleted: Vec<String>,
    },
}

// --- The RBAC the backup and the restore need (one list, for the doctor and the Role). ---

/// Which command needs an access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Need {
    /// `litemaas-backup --namespace` (and `litemaas-prune --namespace`) only.
    Backup,
    /// `litemaas-restore` (in the pod, or `volume`) only.
    Restore,
    /// Both.
    Both,
}

impl Need {
    /// Whether the scheduled backup (`litemaas-backup --namespace`) needs it: [`Need::Backup`]
    /// or [`Need::Both`]. The backup CronJob's Role holds exactly these entries.
    pub fn backup(self) -> bool {
        matches!(self, Need::Backup | Need::Both)
    }

    /// `backup`, `restore` or `backup and restore`.
    pub fn label(self) -> &'static str {
        match self {
            Need::Backup => "backup",
            Need::Restore => "restore",
            Need::Both => "backup and restore",
        }
    }
}

/// One verb on one resource that a command needs, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Access {
    /// API group (`""` for core).
    pub group: &'static str,
    /// Resource plural.
    pub resource: &'static str,
    /// Subresource (`exec`, `scale`), or `""`.
    pub subresource: &'static str,
    /// The verb.
    pub verb: &'static str,
    /// Namespaced (granted by a Role in the LiteMaaS namespace) or cluster-scoped (a
    /// ClusterRole).
    pub namespaced: bool,
    /// Which command needs it.
    pub need: Need,
    /// What the code does with it.
    pub why: &'static str,
}

impl Access {
    /// `pods/exec`, `statefulsets/scale`, `secrets`.
    pub fn resource_path(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.to_owned()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }

    /// As `oc create role --resource` takes it: `pods/exec`, `leases.coordination.k8s.io`,
    /// `statefulsets.apps/scale`.
    pub fn qualified(&self) -> String {
        let base = if self.group.is_empty() {
            self.resource.to_owned()
        } else {
            format!("{}.{}", self.resource, self.group)
        };
        if self.subresource.is_empty() {
            base
        } else {
            format!("{base}/{}", self.subresource)
        }
    }

    /// The check's id: `rbac.pods/exec.get`.
    pub fn id(&self) -> String {
        format!("rbac.{}.{}", self.resource_path(), self.verb)
    }
}

/// The API group of VolumeSnapshots and their classes.
pub const SNAPSHOTS: &str = "snapshot.storage.k8s.io";

/// One [`Access`] (a `const fn`, so lists of them can be constants).
pub const fn access(
    group: &'static str,
    resource: &'static str,
    subresource: &'static str,
    verb: &'static str,
    namespaced: bool,
    need: Need,
    why: &'static str,
) -> Access {
    Access {
        group,
        resource,
        subresource,
        verb,
        namespaced,
        need,
        why,
    }
}

/// Every access `litemaas-backup --namespace` and `litemaas-restore` need, derived from the API
/// calls the code makes (src/cluster.rs, src/lock.rs, crates/dump/src/pod.rs,
/// crates/snapshot, crates/restore/src/pod.rs, bins/restore/src/volume.rs). ONE list:
/// `litemaas-doctor` asks the API server about each entry, and `litemaas-schedule kubernetes`
/// renders the scheduled backup's Role from the backup's entries ([`Need::backup`]; the
/// restore's are for the person or job that restores). Namespaced entries go in a Role in the
/// LiteMaaS namespace; the cluster-scoped ones (only the volume restore's) need a ClusterRole.
///
/// ```
/// use litemaas_backup::cluster::REQUIRED_ACCESS;
///
/// let exec: Vec<_> = REQUIRED_ACCESS
///     .iter()
///     .filter(|a| a.need.backup() && a.resource_path() == "pods/exec")
///     .map(|a| a.verb)
///     .collect();
/// assert_eq!(exec, ["get", "create"]);
/// ```
#[rustfmt::skip]
pub const REQUIRED_ACCESS: &[Access] = &[
    access("", "secrets", "", "get", true, Need::Both,
        "read Secret litemaas-db (username, password, database; dump::pod::read_credentials)"),
    access("", "pods", "", "list", true, Need::Both,
        "find the Running database pod by label (dump::pod::find_pod); the volume restore lists the StatefulSet's pods"),
    access("", "pods", "exec", "get", true, Need::Both,
        "run pg_dump / psql in the pod: the exec WebSocket upgrade is a GET"),
    access("", "pods", "exec", "create", true, Need::Both,
        "run pg_dump / psql in the pod: Kubernetes 1.35 and later also check create"),
    access("coordination.k8s.io", "leases", "", "create", true, Need::Both,
        "take the Lease litemaas-backup, so no two runs overlap (src/lock.rs)"),
    access("coordination.k8s.io", "leases", "", "get", true, Need::Both,
        "read the Lease: who holds it, is it expired"),
    access("coordination.k8s.io", "leases", "", "update", true, Need::Both,
        "renew the Lease, or take over an expired one (an update with a resourceVersion precondition)"),
    access("coordination.k8s.io", "leases", "", "delete", true, Need::Both,
        "release the Lease at the end of a run"),
    access("", "persistentvolumeclaims", "", "list", true, Need::Backup,
        "find the database claim by label to snapshot (Snapshots::find_pvc)"),
    access(SNAPSHOTS, "volumesnapshots", "", "create", true, Need::Both,
        "the backup's VolumeSnapshot; the volume restore's safety snapshot"),
    access(SNAPSHOTS, "volumesnapshots", "", "list", true, Need::Both,
        "wait until readyToUse (a watch starts with a list), retention of the last 3; --latest"),
    access(SNAPSHOTS, "volumesnapshots", "", "watch", true, Need::Both,
        "wait until the snapshot is readyToUse"),
    access(SNAPSHOTS, "volumesnapshots", "", "delete", true, Need::Both,
        "retention deletes snapshots beyond the last 3; the volume restore deletes an unfinished safety snapshot"),
    access(SNAPSHOTS, "volumesnapshots", "", "get", true, Need::Restore,
        "read the snapshot to restore from"),
    access("apps", "statefulsets", "", "get", true, Need::Restore,
        "read the database StatefulSet (replicas, claim template)"),
    access("apps", "statefulsets", "", "patch", true, Need::Restore,
        "note the replicas to come back to (an annotation) while scaled down"),
    access("apps", "statefulsets", "scale", "patch", true, Need::Restore,
        "scale the database to 0 and back"),
    access("", "persistentvolumeclaims", "", "get", true, Need::Restore,
        "read the database claim and wait until the new one is Bound"),
    access("", "persistentvolumeclaims", "", "delete", true, Need::Restore,
        "remove the claim being replaced"),
    access("", "persistentvolumeclaims", "", "create", true, Need::Restore,
        "create the claim of the same name from the snapshot"),
    access("", "persistentvolumes", "", "get", false, Need::Restore,
        "read the old volume's reclaim policy"),
    access("", "persistentvolumes", "", "patch", false, Need::Restore,
        "set the old volume to Retain, so the data survives the claim's deletion"),
    access("storage.k8s.io", "storageclasses", "", "get", false, Need::Restore,
        "read the claim's StorageClass (binding mode, provisioner)"),
    access("storage.k8s.io", "storageclasses", "", "list", false, Need::Restore,
        "find the default StorageClass for a claim that names none"),
    access(SNAPSHOTS, "volumesnapshotclasses", "", "get", false, Need::Restore,
        "read the safety snapshot's class"),
    access(SNAPSHOTS, "volumesnapshotclasses", "", "list", false, Need::Restore,
        "find the default VolumeSnapshotClass for the driver"),
];
