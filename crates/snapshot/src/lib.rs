//! # litemaas-snapshot
//!
//! CSI `VolumeSnapshot`s of the database volume, checked rather than fired and forgotten:
//! [`Snapshots::create`] cuts one, [`Snapshots::wait_ready`] watches it (no sleep-polling) until
//! `readyToUse` (a `status.error` is logged but, as the external-snapshotter retries, not final)
//! and gives up after a timeout, naming the snapshot and the snapshotter's last error;
//! [`Snapshots::list`] and [`Snapshots::delete`] serve retention, whose view of a snapshot is
//! [`retention_item`]: complete only when ready, failed when not ready with an error.
//!
//! ```no_run
//! # async fn demo(client: kube::Client) -> Result<(), litemaas_snapshot::Error> {
//! use std::time::Duration;
//! use litemaas_snapshot::{snapshot_name, Snapshots};
//!
//! let snapshots = Snapshots::new(client, "litellm-rhpds");
//! let pvc = snapshots.find_pvc("app=litellm-postgres").await?;
//! let name = snapshot_name(jiff::Timestamp::now());
//! let labels = [("app", "litemaas-backup"), ("backup-type", "monthly")];
//! snapshots.create(&pvc, &name, &labels, None).await?;
//! let ready = snapshots.wait_ready(&name, Duration::from_secs(600)).await?;
//! println!("{name}: {:?}", ready.status.and_then(|s| s.restore_size));
//! # Ok(()) }
//! ```

mod types;
pub mod volume;

use std::time::Duration;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::wait::await_condition;
use litemaas_retention::{Item, State};

pub use types::{
    VolumeSnapshot, VolumeSnapshotClass, VolumeSnapshotError, VolumeSnapshotSource,
    VolumeSnapshotSpec, VolumeSnapshotStatus,
};

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong; every variant names the namespace and object.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No PVC matches the selector.
    #[error("no PersistentVolumeClaim with labels {selector} in namespace {namespace}")]
    NoPvc {
        /// Namespace.
        namespace: String,
        /// Label selector.
        selector: String,
    },
    /// The snapshotter reported an error.
    #[error("VolumeSnapshot {namespace}/{name} failed: {message}")]
    Failed {
        /// Namespace.
        namespace: String,
        /// Snapshot name.
        name: String,
        /// `status.error.message`.
        message: String,
    },
    /// It did not become ready in time (it is left in place, and never counts toward retention).
    #[error("VolumeSnapshot {namespace}/{name} was not readyToUse after {waited:?}")]
    Timeout {
        /// Namespace.
        namespace: String,
        /// Snapshot name.
        name: String,
        /// How long we waited.
        waited: Duration,
    },
    /// The Kubernetes API failed.
    #[error("{context}")]
    Kube {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// Watching the snapshot failed.
    #[error("watching VolumeSnapshot {namespace}/{name}")]
    Watch {
        /// Namespace.
        namespace: String,
        /// Snapshot name.
        name: String,
        /// The cause.
        #[source]
        source: kube::runtime::wait::Error,
    },
}

/// `litemaas-snapshot-YYYYMMDD-HHMMSS` (UTC), the original tool's naming.
pub fn snapshot_name(at: jiff::Timestamp) -> String {
    format!("litemaas-snapshot-{}", at.strftime("%Y%m%d-%H%M%S"))
}

/// Retention's view of a snapshot: time from `creationTimestamp`; complete when `readyToUse`
/// (even with a `status.error` left from an attempt the snapshotter retried past: that field is
/// the last error, not the current one); failed when not ready and reporting an error;
/// otherwise not ready.
pub fn retention_item(snapshot: &VolumeSnapshot) -> Item {
    let time = snapshot.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let status = snapshot.status.as_ref();
    let state = match status {
        Some(s) if s.ready_to_use == Some(true) => State::Complete,
        Some(s) if s.error.is_some() => State::Failed,
        _ => State::NotReady,
    };
    Item::new(
        snapshot.metadata.name.clone().unwrap_or_default(),
        time,
        state,
    )
}

/// Whether `snapshot` is one `litemaas-restore volume --latest` may restore for `claim`: taken
/// by this tool (`app=litemaas-backup`), of that claim, and `readyToUse`.
pub fn restorable_backup_of(snapshot: &VolumeSnapshot, claim: &str) -> bool {
    let labels = snapshot.metadata.labels.as_ref();
    labels.and_then(|l| l.get("app")).map(String::as_str) == Some("litemaas-backup")
        && snapshot.spec.source.persistent_volume_claim_name.as_deref() == Some(claim)
        && snapshot.status.as_ref().and_then(|s| s.ready_to_use) == Some(true)
}

/// The newest (by creation time, then name) of `snapshots` that is a
/// [`restorable_backup_of`] `claim`: what `litemaas-restore volume --latest` restores and
/// `litemaas-ls` reports as the newest snapshot.
pub fn newest_restorable<'a>(
    snapshots: impl IntoIterator<Item = &'a VolumeSnapshot>,
    claim: &str,
) -> Option<&'a VolumeSnapshot> {
    snapshots
        .into_iter()
        .filter(|s| restorable_backup_of(s, claim))
        .max_by_key(|s| {
            (
                s.metadata.creation_timestamp.as_ref().map(|c| c.0),
                s.metadata.name.clone(),
            )
        })
}

/// Snapshots in one namespace.
#[derive(Clone)]
pub struct Snapshots {
    client: kube::Client,
    namespace: String,
}

impl std::fmt::Debug for Snapshots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshots")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Snapshots {
    /// Snapshots in `namespace`.
    pub fn new(client: kube::Client, namespace: impl Into<String>) -> Self {
        Self {
            client,
            namespace: namespace.into(),
        }
    }

    pub(crate) fn api(&self) -> Api<VolumeSnapshot> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn kube(&self, what: String) -> impl FnOnce(kube::Error) -> Error {
        move |source| Error::Kube {
            context: what,
            source,
        }
    }

    /// The first PVC (by name) with the labels, e.g. `app=litellm-postgres`.
    ///
    /// # Errors
    /// [`Error::NoPvc`] when there is none.
    pub async fn find_pvc(&self, selector: &str) -> Result<String> {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &self.namespace);
        let list = api
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(self.kube(format!(
                "listing PVCs {selector} in namespace {}",
                self.namespace
            )))?;
        let mut names: Vec<String> = list
            .items
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect();
        names.sort();
        names.into_iter().next().ok_or_else(|| Error::NoPvc {
            namespace: self.namespace.clone(),
            selector: selector.to_owned(),
        })
    }

    /// Creates a snapshot of `pvc` named `name` with `labels`, with `class` or the default class.
    ///
    /// # Errors
    /// The API refused (an existing name: 409).
    pub async fn create(
        &self,
        pvc: &str,
        name: &str,
        labels: &[(&str, &str)],
        class: Option<&str>,
    ) -> Result<VolumeSnapshot> {
        let mut snapshot = VolumeSnapshot::new(
            name,
            VolumeSnapshotSpec {
                source: VolumeSnapshotSource {
                    persistent_volume_claim_name: Some(pvc.to_owned()),
                    volume_snapshot_content_name: None,
                },
                volume_snapshot_class_name: class.map(str::to_owned),
            },
        );
        snapshot.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        let created = self
            .api()
            .create(&PostParams::default(), &snapshot)
            .await
            .map_err(self.kube(format!(
                "creating VolumeSnapshot {}/{name} of PVC {pvc}",
                self.namespace
            )))?;
        tracing::info!(
            namespace = self.namespace,
            name,
            pvc,
            "VolumeSnapshot created"
        );
        Ok(created)
    }

    /// Watches `name` until it is `readyToUse` or `timeout` passes.
    ///
    /// A `status.error` is not final: the external-snapshotter keeps retrying the CSI driver's
    /// CreateSnapshot after most errors and the snapshot may still become ready (with the old
    /// error left in place), so an error is logged and the wait goes on. The last error seen is
    /// what the failure reports when the time is up.
    ///
    /// # Errors
    /// [`Error::Failed`] with the snapshotter's last message when it reported one and the
    /// snapshot never became ready in time (or was deleted); [`Error::Timeout`] naming the
    /// snapshot otherwise.
    pub async fn wait_ready(&self, name: &str, timeout: Duration) -> Result<VolumeSnapshot> {
        let last_error = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
        let ready = {
            let last_error = last_error.clone();
            let name = name.to_owned();
            move |o: Option<&VolumeSnapshot>| {
                let status = o.and_then(|s| s.status.as_ref());
                if let Some(error) = status.and_then(|s| s.error.as_ref()) {
                    let message = error.message.clone().unwrap_or_else(|| "no message".into());
                    let mut last = last_error.lock().unwrap_or_else(|p| p.into_inner());
                    if last.as_deref() != Some(message.as_str()) {
                        tracing::warn!(
                            snapshot = name,
                            error = message,
                            "the snapshotter reported an error; it retries, so still waiting for readyToUse"
                        );
                        *last = Some(message);
                    }
                }
                status.is_some_and(|s| s.ready_to_use == Some(true)) || o.is_none()
            }
        };
        let waited = tokio::time::timeout(timeout, await_condition(self.api(), name, ready)).await;
        let last_error = last_error.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let found = match waited {
            Err(_) => {
                return Err(match last_error {
                    Some(message) => Error::Failed {
                        namespace: self.namespace.clone(),
                        name: name.to_owned(),
                        message: format!(
                            "{message} (still not readyToUse after {timeout:?} of the snapshotter's retries)"
                        ),
                    },
                    None => Error::Timeout {
                        namespace: self.namespace.clone(),
                        name: name.to_owned(),
                        waited: timeout,
                    },
                });
            }
            Ok(Err(source)) => {
                return Err(Error::Watch {
                    namespace: self.namespace.clone(),
                    name: name.to_owned(),
                    source,
                });
            }
            Ok(Ok(found)) => found,
        };
        found.ok_or_else(|| Error::Failed {
            namespace: self.namespace.clone(),
            name: name.to_owned(),
            message: match last_error {
                Some(message) => format!("it was deleted while waiting (last error: {message})"),
                None => "it was deleted while waiting".into(),
            },
        })
    }

    /// Snapshots with the labels, oldest first (by creationTimestamp, then name).
    ///
    /// # Errors
    /// The API failed.
    pub async fn list(&self, selector: &str) -> Result<Vec<VolumeSnapshot>> {
        let mut items = self
            .api()
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(self.kube(format!(
                "listing VolumeSnapshots {selector} in namespace {}",
                self.namespace
            )))?
            .items;
        items.sort_by(|a, b| {
            (
                a.metadata.creation_timestamp.as_ref().map(|t| t.0),
                &a.metadata.name,
            )
                .cmp(&(
                    b.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    &b.metadata.name,
                ))
        });
        Ok(items)
    }

    /// Deletes a snapshot (already gone is fine).
    ///
    /// # Errors
    /// The API failed.
    pub async fn delete(&self, name: &str) -> Result<()> {
        match self.api().delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(e) => Err(Error::Kube {
                context: format!("deleting VolumeSnapshot {}/{name}", self.namespace),
                source: e,
            }),
        }
    }

    /// The VolumeSnapshotClass for a CSI driver, if one exists (a prerequisite check).
    ///
    /// # Errors
    /// The API failed.
    pub async fn class_for_driver(&self, driver: &str) -> Result<Option<VolumeSnapshotClass>> {
        let api: Api<VolumeSnapshotClass> = Api::all(self.client.clone());
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(self.kube("listing VolumeSnapshotClasses".into()))?;
        Ok(list.items.into_iter().find(|c| c.driver == driver))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(
        name: &str,
        app: Option<&str>,
        claim: &str,
        ready: bool,
        created: &str,
    ) -> VolumeSnapshot {
        let labels = app.map_or_else(|| serde_json::json!({}), |a| serde_json::json!({"app": a}));
        serde_json::from_value(serde_json::json!({
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshot",
            "metadata": {"name": name, "labels": labels, "creationTimestamp": created},
            "spec": {"source": {"persistentVolumeClaimName": claim}},
            "status": {"readyToUse": ready}
        }))
        .unwrap()
    }

    #[test]
    fn the_newest_restorable_is_ours_of_the_claim_ready_and_newest_by_time_then_name() {
        let claim = "data-db-0";
        let list = [
            snapshot(
                "a-old",
                Some("litemaas-backup"),
                claim,
                true,
                "2026-01-01T00:00:00Z",
            ),
            snapshot(
                "b-tie",
                Some("litemaas-backup"),
                claim,
                true,
                "2026-02-01T00:00:00Z",
            ),
            snapshot(
                "c-tie",
                Some("litemaas-backup"),
                claim,
                true,
                "2026-02-01T00:00:00Z",
            ),
            snapshot(
                "d-not-ready",
                Some("litemaas-backup"),
                claim,
                false,
                "2026-03-01T00:00:00Z",
            ),
            snapshot("e-foreign", None, claim, true, "2026-03-01T00:00:00Z"),
            snapshot(
                "f-other-app",
                Some("velero"),
                claim,
                true,
                "2026-03-01T00:00:00Z",
            ),
            snapshot(
                "g-other-claim",
                Some("litemaas-backup"),
                "other",
                true,
                "2026-03-01T00:00:00Z",
            ),
        ];
        let newest = newest_restorable(&list, claim).unwrap();
        assert_eq!(newest.metadata.name.as_deref(), Some("c-tie"));
        assert!(newest_restorable(&list[3..], claim).is_none());
        assert!(restorable_backup_of(&list[0], claim));
        assert!(!restorable_backup_of(&list[0], "other"));
    }
}
