//! Restoring a StatefulSet's volume from a VolumeSnapshot, the way an administrator would do it
//! by hand on a good day, with every step checked and every failure answered.
//!
//! A StatefulSet's `volumeClaimTemplates` cannot be edited, and a pod whose claim is missing gets
//! a fresh, EMPTY claim from the template. So the claim keeps its name and is swapped while no
//! pod runs:
//!
//! 1. **Check** (nothing changes): the snapshot exists, is `readyToUse`, is of this claim, and
//!    its class's CSI driver is the claim's; the StatefulSet, the claim (Bound) and its volume
//!    exist.
//! 2. **Scale down** to 0 through the scale subresource, remembering the replicas; wait until
//!    the pods are gone.
//! 3. **Safety snapshot** of the current claim (`litemaas-safety-YYYYMMDD-HHMMSS`, not labelled
//!    `app=litemaas-backup`, so retention never counts or deletes it), waited on until ready.
//! 4. **Retain** the bound volume: its reclaim policy is set to `Retain`, so that deleting the
//!    claim cannot delete the data (on some storage, its snapshots too).
//! 5. **Swap the claim**: delete it, create the claim of the same name from the snapshot
//!    (`dataSource`), with the class, access modes, volume mode and labels it had and a size of
//!    at least the snapshot's `restoreSize`; wait until Bound (or Pending under
//!    `WaitForFirstConsumer`, which binds when the pod comes).
//! 6. **Scale up** to the remembered replicas; wait until the pods are Running and Ready.
//!
//! A failure or a cancellation stops at its step and undoes what can be undone without risk:
//! before the claim is deleted, everything is put back (replicas, reclaim policy, an unfinished
//! safety snapshot) and the database runs on its own volume again; after it, nothing is scaled
//! up (a pod would get an empty claim), and the error says what state the cluster is in and
//! which command rolls back (a restore of the safety snapshot). After a successful swap the
//! previous volume is kept (Released, `Retain`) unless asked otherwise.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimSpec, Pod,
    TypedLocalObjectReference, VolumeResourceRequirements,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::{Snapshots, VolumeSnapshot, VolumeSnapshotClass};

/// Label that marks a snapshot as a safety snapshot taken before a volume restore.
pub const SAFETY_ROLE_LABEL: &str = "litemaas-backup/role";
/// Annotation on the previous volume: its reclaim policy before the restore set `Retain`.
pub const POLICY_ANNOTATION: &str = "litemaas-backup/reclaim-policy-before-restore";
/// Annotation on the StatefulSet while a restore holds it at 0: the replicas it had.
pub const REPLICAS_ANNOTATION: &str = "litemaas-backup/replicas-before-restore";

/// Which StatefulSet and claim to restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VolumeTarget {
    /// Namespace.
    pub namespace: String,
    /// The StatefulSet whose pods mount the claim.
    pub statefulset: String,
    /// The claim (`<template>-<statefulset>-<ordinal>`).
    pub claim: String,
}

impl VolumeTarget {
    /// LiteMaaS's database: StatefulSet `litellm-postgres`, claim
    /// `postgres-storage-litellm-postgres-0`.
    pub fn litemaas(namespace: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            statefulset: "litellm-postgres".into(),
            claim: "postgres-storage-litellm-postgres-0".into(),
        }
    }
}

/// Which snapshot to restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotChoice {
    /// This one (a backup snapshot or a safety snapshot of the claim).
    Named(String),
    /// The newest ready `app=litemaas-backup` snapshot of the claim.
    Latest,
}

/// How long each wait may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Pods gone after scaling down.
    pub scale_down: Duration,
    /// The safety snapshot ready.
    pub snapshot: Duration,
    /// The old claim gone and the new one Bound.
    pub bind: Duration,
    /// Pods Running and Ready after scaling up.
    pub ready: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            scale_down: Duration::from_secs(300),
            snapshot: Duration::from_secs(600),
            bind: Duration::from_secs(600),
            ready: Duration::from_secs(600),
        }
    }
}

/// Everything a volume restore needs to know.
#[derive(Debug, Clone)]
pub struct VolumeOptions {
    /// What to restore.
    pub target: VolumeTarget,
    /// From which snapshot.
    pub snapshot: SnapshotChoice,
    /// Take a safety snapshot of the current claim first (default: yes).
    pub safety_snapshot: bool,
    /// VolumeSnapshotClass of the safety snapshot (default: the cluster's default).
    pub safety_class: Option<String>,
    /// After a successful swap, give the previous volume its reclaim policy back (so that
    /// `Delete` deletes it) instead of keeping it.
    pub release_previous_volume: bool,
    /// How long each wait may take.
    pub timeouts: Timeouts,
    /// How often waits look again.
    pub poll: Duration,
    /// The run's time (names the safety snapshot).
    pub now: jiff::Timestamp,
}

impl VolumeOptions {
    /// Defaults for `target` and `snapshot` at `now`.
    pub fn new(target: VolumeTarget, snapshot: SnapshotChoice, now: jiff::Timestamp) -> Self {
        Self {
            target,
            snapshot,
            safety_snapshot: true,
            safety_class: None,
            release_previous_volume: false,
            timeouts: Timeouts::default(),
            poll: Duration::from_secs(1),
            now,
        }
    }
}

/// The steps, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// 1: check before changing anything.
    Check,
    /// 2: scale the StatefulSet to 0.
    ScaleDown,
    /// 3: snapshot the current claim.
    SafetySnapshot,
    /// 4: set the bound volume's reclaim policy to Retain.
    RetainVolume,
    /// 5: delete the claim and create it again from the snapshot.
    SwapClaim,
    /// 6: scale back up and wait for Ready.
    ScaleUp,
}

impl Step {
    /// 1 to 6.
    pub fn number(self) -> u8 {
        match self {
            Step::Check => 1,
            Step::ScaleDown => 2,
            Step::SafetySnapshot => 3,
            Step::RetainVolume => 4,
            Step::SwapClaim => 5,
            Step::ScaleUp => 6,
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Step::Check => "check",
            Step::ScaleDown => "scale down",
            Step::SafetySnapshot => "safety snapshot",
            Step::RetainVolume => "retain the volume",
            Step::SwapClaim => "swap the claim",
            Step::ScaleUp => "scale up",
        };
        write!(f, "step {}/6 ({name})", self.number())
    }
}

/// The snapshot a restore reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotInfo {
    /// Its name.
    pub name: String,
    /// `status.restoreSize`.
    pub restore_size: String,
    /// Its VolumeSnapshotClass.
    pub class: String,
    /// That class's CSI driver.
    pub driver: String,
    /// `creationTimestamp`.
    pub created: Option<String>,
}

/// What the check found and what the run will do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// What is restored.
    pub target: VolumeTarget,
    /// From what.
    pub snapshot: SnapshotInfo,
    /// The replicas the StatefulSet gets at the end: what it runs now, or what a failed
    /// restore noted before it scaled down.
    pub replicas: i32,
    /// The replicas it runs now.
    pub running: i32,
    /// The claim now (`None`: missing, as a failed swap can leave it).
    pub claim_uid: Option<String>,
    /// How the new claim is made (from the claim, or from the StatefulSet's template).
    pub claim: ClaimShape,
    /// The claim's provisioner / the volume's CSI driver.
    pub driver: String,
    /// `WaitForFirstConsumer` binding: the new claim binds when the pod comes.
    pub wait_for_first_consumer: bool,
    /// The bound volume now (`None` when the claim is not Bound: no safety snapshot then).
    pub volume: Option<String>,
    /// Its reclaim policy now.
    pub reclaim_policy: Option<String>,
    /// The claim's requested size now.
    pub size_now: String,
    /// The new claim's size (at least the snapshot's `restoreSize`).
    pub size_new: String,
    /// The safety snapshot's name, unless skipped (or nothing is Bound to snapshot).
    pub safety_snapshot: Option<String>,
    /// One line per step: what it touches.
    pub steps: Vec<String>,
}

/// What the claim is made of, besides its data: kept across the swap.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClaimShape {
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations, without the binding controllers' own.
    pub annotations: BTreeMap<String, String>,
    /// StorageClass.
    pub storage_class: Option<String>,
    /// Access modes.
    pub access_modes: Vec<String>,
    /// `Filesystem` or `Block`.
    pub volume_mode: Option<String>,
    /// Requested storage.
    pub size: String,
}

impl ClaimShape {
    fn of_claim(claim: &PersistentVolumeClaim) -> Self {
        let spec = claim.spec.clone().unwrap_or_default();
        Self {
            labels: claim.metadata.labels.clone().unwrap_or_default(),
            annotations: claim
                .metadata
                .annotations
                .iter()
                .flatten()
                .filter(|(k, _)| {
                    !(k.starts_with("pv.kubernetes.io/")
                        || k.starts_with("volume.kubernetes.io/")
                        || k.starts_with("volume.beta.kubernetes.io/")
                        || k.starts_with("litemaas-backup/")
                        || k.as_str() == "kubectl.kubernetes.io/last-applied-configuration")
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            storage_class: spec.storage_class_name,
            access_modes: spec.access_modes.unwrap_or_default(),
            volume_mode: spec.volume_mode,
            size: spec
                .resources
                .and_then(|r| r.requests)
                .and_then(|r| r.get("storage").map(|q| q.0.clone()))
                .unwrap_or_default(),
        }
    }

    /// From a `volumeClaimTemplates` entry (JSON), as the StatefulSet controller makes it.
    fn of_template(template: &serde_json::Value) -> Self {
        let strings = |v: &serde_json::Value| -> BTreeMap<String, String> {
            v.as_object()
                .into_iter()
                .flatten()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect()
        };
        let spec = &template["spec"];
        Self {
            labels: strings(&template["metadata"]["labels"]),
            annotations: strings(&template["metadata"]["annotations"]),
            storage_class: spec["storageClassName"].as_str().map(str::to_owned),
            access_modes: spec["accessModes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m.as_str().map(str::to_owned))
                .collect(),
            volume_mode: spec["volumeMode"].as_str().map(str::to_owned),
            size: spec["resources"]["requests"]["storage"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        }
    }
}

/// How one step went.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepReport {
    /// Which.
    pub step: Step,
    /// What it did (or why it failed).
    pub detail: String,
    /// Seconds it took.
    pub seconds: f64,
}

/// A finished restore.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VolumeReport {
    /// The plan carried out.
    pub plan: Plan,
    /// Each step.
    pub steps: Vec<StepReport>,
    /// The previous volume, kept unless released (`None` when there was none bound).
    pub previous_volume: Option<String>,
    /// Whether it was given its reclaim policy back.
    pub previous_volume_released: bool,
}

/// Why a volume restore did not finish.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VolumeError {
    /// The check refused: nothing was changed.
    #[error("not restoring the volume, nothing was changed: {reason}")]
    Refused {
        /// Why.
        reason: String,
    },
    /// A step failed or was interrupted.
    #[error("{step} failed: {cause}. State: {state}{}", rollback.as_ref().map(|r| format!(". To roll back: {r}")).unwrap_or_default())]
    Failed {
        /// Which step.
        step: Step,
        /// What went wrong.
        cause: String,
        /// What the cluster looks like now.
        state: String,
        /// The command that rolls back, when there is one.
        rollback: Option<String>,
        /// The steps that completed.
        done: Vec<StepReport>,
    },
}

impl VolumeError {
    fn refused(reason: impl Into<String>) -> Self {
        VolumeError::Refused {
            reason: reason.into(),
        }
    }
}

/// Bytes in a Kubernetes quantity (`10Gi`, `500M`, `1073741824`); `None` if unreadable.
pub fn quantity_bytes(quantity: &str) -> Option<u128> {
    let q = quantity.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let multiplier: u128 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        _ => return None,
    };
    match number.split_once('.') {
        None => number.parse::<u128>().ok()?.checked_mul(multiplier),
        Some((whole, fraction)) => {
            let whole: u128 = if whole.is_empty() {
                0
            } else {
                whole.parse().ok()?
            };
            let scale = 10_u128.checked_pow(u32::try_from(fraction.len()).ok()?)?;
            let fraction: u128 = fraction.parse().ok()?;
            Some(whole * multiplier + (fraction * multiplier).div_ceil(scale))
        }
    }
}

/// A volume restore in one namespace.
#[derive(Clone)]
pub struct VolumeRestore {
    client: kube::Client,
    options: VolumeOptions,
}

impl std::fmt::Debug for VolumeRestore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeRestore")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

fn kube_cause(doing: &str, e: &kube::Error) -> String {
    match e {
        // kube's own text repeats the whole Status in Debug form.
        kube::Error::Api(status) => format!(
            "{doing}: {}: {} (HTTP {})",
            status.message, status.reason, status.code
        ),
        e => format!("{doing}: {e}"),
    }
}

impl VolumeRestore {
    /// A restore with `options`.
    pub fn new(client: kube::Client, options: VolumeOptions) -> Self {
        Self { client, options }
    }

    fn ns(&self) -> &str {
        &self.options.target.namespace
    }

    fn sts_api(&self) -> Api<StatefulSet> {
        Api::namespaced(self.client.clone(), self.ns())
    }

    fn claim_api(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), self.ns())
    }

    fn snapshots(&self) -> Snapshots {
        Snapshots::new(self.client.clone(), self.ns())
    }

    /// Step 1: checks everything and says what the run will do. Changes nothing (this is also
    /// the dry run).
    ///
    /// # Errors
    /// [`VolumeError::Refused`] naming what is wrong.
    pub async fn plan(&self) -> Result<Plan, VolumeError> {
        let t = &self.options.target;
        let refuse_kube =
            |doing: String| move |e: kube::Error| VolumeError::refused(kube_cause(&doing, &e));
        let sts = self
            .sts_api()
            .get_opt(&t.statefulset)
            .await
            .map_err(refuse_kube(format!(
                "reading StatefulSet {}/{}",
                t.namespace, t.statefulset
            )))?
            .ok_or_else(|| {
                VolumeError::refused(format!(
                    "StatefulSet {}/{} not found",
                    t.namespace, t.statefulset
                ))
            })?;
        // Read through JSON: the shape of StatefulSet.spec depends on the Kubernetes version
        // the binary chose (optional before 1.37).
        let spec = serde_json::to_value(&sts).unwrap_or_default()["spec"].take();
        let running = spec["replicas"]
            .as_i64()
            .and_then(|r| i32::try_from(r).ok())
            .unwrap_or(1);
        // A failed restore left the StatefulSet at 0 and noted the replicas it had.
        let noted = sts
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REPLICAS_ANNOTATION))
            .and_then(|r| r.parse::<i32>().ok());
        let replicas = match noted {
            Some(noted) if running == 0 => noted,
            _ => running,
        };
        let template = spec["volumeClaimTemplates"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| {
                c["metadata"]["name"].as_str().is_some_and(|name| {
                    t.claim
                        .strip_prefix(&format!("{name}-{}-", t.statefulset))
                        .is_some_and(|o| o.parse::<u32>().is_ok())
                })
            })
            .cloned()
            .ok_or_else(|| {
                VolumeError::refused(format!(
                    "claim {} is not one of StatefulSet {}'s volume claims",
                    t.claim, t.statefulset
                ))
            })?;
        let claim = self
            .claim_api()
            .get_opt(&t.claim)
            .await
            .map_err(refuse_kube(format!(
                "reading PersistentVolumeClaim {}/{}",
                t.namespace, t.claim
            )))?;
        let bound_to = claim.as_ref().and_then(|c| {
            let phase = c.status.as_ref().and_then(|s| s.phase.as_deref());
            let volume = c.spec.as_ref().and_then(|s| s.volume_name.clone());
            (phase == Some("Bound")).then_some(volume).flatten()
        });
        // Without a Bound claim, only a stopped StatefulSet is restored (the state a failed
        // swap leaves): with pods running, the claim is someone else's business.
        if bound_to.is_none() && running > 0 {
            return Err(VolumeError::refused(match &claim {
                None => format!(
                    "PersistentVolumeClaim {}/{} not found while StatefulSet {} runs {running} replica(s)",
                    t.namespace, t.claim, t.statefulset
                ),
                Some(c) => format!(
                    "PersistentVolumeClaim {}/{} is not Bound (phase {}) while StatefulSet {} runs",
                    t.namespace,
                    t.claim,
                    c.status
                        .as_ref()
                        .and_then(|s| s.phase.clone())
                        .unwrap_or_else(|| "unknown".into()),
                    t.statefulset
                ),
            }));
        }
        let shape = match &claim {
            Some(c) => ClaimShape::of_claim(c),
            None => ClaimShape::of_template(&template),
        };
        let pv = match &bound_to {
            Some(volume) => Some(
                Api::<PersistentVolume>::all(self.client.clone())
                    .get_opt(volume)
                    .await
                    .map_err(refuse_kube(format!("reading PersistentVolume {volume}")))?
                    .ok_or_else(|| {
                        VolumeError::refused(format!(
                            "PersistentVolume {volume} of claim {} not found",
                            t.claim
                        ))
                    })?,
            ),
            None => None,
        };
        let pv_spec = pv.and_then(|pv| pv.spec).unwrap_or_default();
        let classes = Api::<StorageClass>::all(self.client.clone());
        let class = match &shape.storage_class {
            Some(name) if !name.is_empty() => classes
                .get_opt(name)
                .await
                .map_err(refuse_kube(format!("reading StorageClass {name}")))?,
            _ => classes
                .list(&ListParams::default())
                .await
                .map_err(refuse_kube("listing StorageClasses".into()))?
                .items
                .into_iter()
                .find(|c| {
                    c.metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get("storageclass.kubernetes.io/is-default-class"))
                        .map(String::as_str)
                        == Some("true")
                }),
        };
        let driver = pv_spec
            .csi
            .as_ref()
            .map(|c| c.driver.clone())
            .or_else(|| class.as_ref().map(|c| c.provisioner.clone()))
            .ok_or_else(|| {
                VolumeError::refused(format!(
                    "cannot tell which CSI driver holds claim {}: it is not on a CSI volume and has no StorageClass",
                    t.claim
                ))
            })?;
        let wait_for_first_consumer = class
            .as_ref()
            .and_then(|c| c.volume_binding_mode.as_deref())
            == Some("WaitForFirstConsumer");
        let snapshot = self.choose_snapshot().await?;
        let info = self.snapshot_info(&snapshot, &driver).await?;
        let size_now = shape.size.clone();
        let size_new = match (
            quantity_bytes(&size_now),
            quantity_bytes(&info.restore_size),
        ) {
            (Some(now), Some(needed)) if needed > now => info.restore_size.clone(),
            (Some(_), Some(_)) => size_now.clone(),
            _ => {
                return Err(VolumeError::refused(format!(
                    "cannot compare the claim's size {size_now:?} with the snapshot's restoreSize {:?}",
                    info.restore_size
                )));
            }
        };
        // A safety snapshot needs a Bound claim to snapshot.
        let safety_snapshot = (self.options.safety_snapshot && bound_to.is_some()).then(|| {
            format!(
                "litemaas-safety-{}",
                self.options.now.strftime("%Y%m%d-%H%M%S")
            )
        });
        if let Some(name) = &safety_snapshot
            && self
                .snapshots()
                .api()
                .get_opt(name)
                .await
                .map_err(refuse_kube(format!("reading VolumeSnapshot {name}")))?
                .is_some()
        {
            return Err(VolumeError::refused(format!(
                "a VolumeSnapshot named {name} (the safety snapshot's name) already exists; try again in a second"
            )));
        }
        let reclaim_policy = bound_to.as_ref().map(|_| {
            pv_spec
                .persistent_volume_reclaim_policy
                .clone()
                .unwrap_or_else(|| "Delete".into())
        });
        let mut plan = Plan {
            target: t.clone(),
            snapshot: info,
            replicas,
            running,
            claim_uid: claim.as_ref().and_then(|c| c.metadata.uid.clone()),
            claim: shape,
            driver,
            wait_for_first_consumer,
            volume: bound_to,
            reclaim_policy,
            size_now,
            size_new,
            safety_snapshot,
            steps: Vec::new(),
        };
        plan.steps = describe(&plan);
        Ok(plan)
    }

    async fn choose_snapshot(&self) -> Result<VolumeSnapshot, VolumeError> {
        let t = &self.options.target;
        let source = |s: &VolumeSnapshot| s.spec.source.persistent_volume_claim_name.clone();
        let ready =
            |s: &VolumeSnapshot| s.status.as_ref().and_then(|st| st.ready_to_use) == Some(true);
        match &self.options.snapshot {
            SnapshotChoice::Named(name) => {
                let snapshot = self
                    .snapshots()
                    .api()
                    .get_opt(name)
                    .await
                    .map_err(|e| {
                        VolumeError::refused(kube_cause(
                            &format!("reading VolumeSnapshot {}/{name}", t.namespace),
                            &e,
                        ))
                    })?
                    .ok_or_else(|| {
                        VolumeError::refused(format!(
                            "VolumeSnapshot {}/{name} not found",
                            t.namespace
                        ))
                    })?;
                if source(&snapshot).as_deref() != Some(t.claim.as_str()) {
                    return Err(VolumeError::refused(format!(
                        "VolumeSnapshot {name} is a snapshot of {}, not of claim {}",
                        source(&snapshot)
                            .map_or_else(|| "no claim".into(), |c| format!("claim {c}")),
                        t.claim
                    )));
                }
                if !ready(&snapshot) {
                    let error = snapshot
                        .status
                        .as_ref()
                        .and_then(|s| s.error.as_ref())
                        .and_then(|e| e.message.clone());
                    return Err(VolumeError::refused(format!(
                        "VolumeSnapshot {name} is not readyToUse{}",
                        error.map(|e| format!(" (error: {e})")).unwrap_or_default()
                    )));
                }
                Ok(snapshot)
            }
            SnapshotChoice::Latest => {
                let list = self
                    .snapshots()
                    .api()
                    .list(&ListParams::default().labels("app=litemaas-backup"))
                    .await
                    .map_err(|e| VolumeError::refused(kube_cause("listing VolumeSnapshots", &e)))?;
                crate::newest_restorable(&list.items, &t.claim)
                    .cloned()
                    .ok_or_else(|| {
                        VolumeError::refused(format!(
                            "no ready app=litemaas-backup VolumeSnapshot of claim {} in namespace {}",
                            t.claim, t.namespace
                        ))
                    })
            }
        }
    }

    async fn snapshot_info(
        &self,
        snapshot: &VolumeSnapshot,
        driver: &str,
    ) -> Result<SnapshotInfo, VolumeError> {
        let name = snapshot.metadata.name.clone().unwrap_or_default();
        let classes = Api::<VolumeSnapshotClass>::all(self.client.clone());
        let class = match &snapshot.spec.volume_snapshot_class_name {
            Some(class) => classes
                .get_opt(class)
                .await
                .map_err(|e| VolumeError::refused(kube_cause(&format!("reading VolumeSnapshotClass {class}"), &e)))?
                .ok_or_else(|| VolumeError::refused(format!("VolumeSnapshotClass {class} of snapshot {name} not found")))?,
            // The snapshot controller fills in the default class; a snapshot without one was
            // taken with the default class for its driver.
            None => classes
                .list(&ListParams::default())
                .await
                .map_err(|e| VolumeError::refused(kube_cause("listing VolumeSnapshotClasses", &e)))?
                .items
                .into_iter()
                .find(|c| {
                    c.driver == driver
                        && c.metadata.annotations.as_ref().and_then(|a| a.get("snapshot.storage.kubernetes.io/is-default-class")).map(String::as_str)
                            == Some("true")
                })
                .ok_or_else(|| VolumeError::refused(format!(
                    "cannot tell which CSI driver holds snapshot {name}: it names no VolumeSnapshotClass and there is no default class for driver {driver}"
                )))?,
        };
        if class.driver != driver {
            return Err(VolumeError::refused(format!(
                "VolumeSnapshot {name} is held by CSI driver {} (class {}), but claim {} is on {driver}",
                class.driver,
                class.metadata.name.clone().unwrap_or_default(),
                self.options.target.claim
            )));
        }
        let restore_size = snapshot
            .status
            .as_ref()
            .and_then(|s| s.restore_size.clone())
            .ok_or_else(|| {
                VolumeError::refused(format!("VolumeSnapshot {name} reports no restoreSize"))
            })?;
        Ok(SnapshotInfo {
            name,
            restore_size,
            class: class.metadata.name.clone().unwrap_or_default(),
            driver: class.driver,
            created: snapshot
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string()),
        })
    }
}

/// One line per step, naming the objects it touches.
fn describe(plan: &Plan) -> Vec<String> {
    let t = &plan.target;
    let claim_now = match (&plan.claim_uid, &plan.volume) {
        (_, Some(volume)) => format!("claim {} ({}, volume {volume})", t.claim, plan.size_now),
        (Some(_), None) => format!("claim {} (not Bound: left by a failed restore)", t.claim),
        (None, None) => format!("claim {} (missing: left by a failed restore)", t.claim),
    };
    vec![
        format!(
            "check: VolumeSnapshot {} (restoreSize {}, class {}, driver {}) fits {claim_now}",
            plan.snapshot.name, plan.snapshot.restore_size, plan.snapshot.class, plan.driver
        ),
        if plan.running > 0 {
            format!(
                "scale down: StatefulSet {} from {} replica(s) to 0, wait until its pods are gone",
                t.statefulset, plan.running
            )
        } else {
            format!("scale down: StatefulSet {} is already at 0", t.statefulset)
        },
        match (&plan.safety_snapshot, &plan.volume) {
            (Some(name), _) => format!(
                "safety snapshot: VolumeSnapshot {name} of claim {}, wait until readyToUse",
                t.claim
            ),
            (None, Some(_)) => "safety snapshot: SKIPPED (--no-safety-snapshot): a failed swap cannot be rolled back from a snapshot".into(),
            (None, None) => "safety snapshot: none (no Bound claim to snapshot)".into(),
        },
        match (&plan.volume, plan.reclaim_policy.as_deref()) {
            (Some(volume), Some("Retain")) => {
                format!("retain the volume: PersistentVolume {volume} already has reclaim policy Retain")
            }
            (Some(volume), policy) => format!(
                "retain the volume: PersistentVolume {volume} reclaim policy {} -> Retain, so deleting the claim keeps the data",
                policy.unwrap_or("Delete")
            ),
            (None, _) => "retain the volume: no bound volume".into(),
        },
        format!(
            "swap the claim: {}create PersistentVolumeClaim {} from VolumeSnapshot {} ({}), wait until {}",
            if plan.claim_uid.is_some() { format!("delete PersistentVolumeClaim {}, ", t.claim) } else { String::new() },
            t.claim,
            plan.snapshot.name,
            plan.size_new,
            if plan.wait_for_first_consumer {
                "created (WaitForFirstConsumer: it binds when the pod starts)"
            } else {
                "Bound"
            }
        ),
        format!(
            "scale up: StatefulSet {} to {} replica(s), wait until Running and Ready",
            t.statefulset, plan.replicas
        ),
    ]
}

/// The running restore: what was done so far, for undoing and reporting.
struct Run<'a> {
    restore: &'a VolumeRestore,
    plan: &'a Plan,
    cancel: &'a CancellationToken,
    on_step: &'a (dyn Fn(&StepReport) + Send + Sync),
    done: Vec<StepReport>,
    scaled_down: bool,
    safety_ready: bool,
    retained: bool,
}

/// Why a wait ended without its condition.
enum WaitEnd {
    Cancelled,
    TimedOut,
    Api(String),
    /// The condition can no longer come true (e.g. the claim's source snapshot was deleted).
    Never(String),
}

/// Why a poll of a wait failed: the API, or a state from which the condition cannot be reached.
enum PollError {
    Api(kube::Error),
    Never(String),
}

impl From<kube::Error> for PollError {
    fn from(e: kube::Error) -> Self {
        PollError::Api(e)
    }
}

impl WaitEnd {
    fn cause(&self, what: &str, timeout: Duration) -> String {
        match self {
            WaitEnd::Cancelled => {
                format!("interrupted (signal, deadline or lost Lease) while waiting for {what}")
            }
            WaitEnd::TimedOut => format!("{what}: not after {timeout:?}"),
            WaitEnd::Api(e) => format!("{what}: {e}"),
            WaitEnd::Never(why) => format!("{what}: it never will, {why}"),
        }
    }
}

impl Run<'_> {
    fn ns(&self) -> &str {
        &self.plan.target.namespace
    }

    fn rollback_command(&self) -> Option<String> {
        match (&self.plan.safety_snapshot, self.safety_ready) {
            (Some(name), true) => Some(format!(
                "litemaas-restore volume --namespace {} --snapshot {name} --yes",
                self.ns()
            )),
            _ => None,
        }
    }

    fn finish(&mut self, step: Step, detail: String, started: Instant) {
        let report = StepReport {
            step,
            detail,
            seconds: started.elapsed().as_secs_f64(),
        };
        (self.on_step)(&report);
        self.done.push(report);
    }

    /// Polls `check` until it returns `Some`, the timeout passes, or the run is cancelled.
    async fn wait<T, F, Fut>(&self, timeout: Duration, mut check: F) -> Result<T, WaitEnd>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>, PollError>>,
    {
        let until = Instant::now() + timeout;
        loop {
            let last_error = match check().await {
                Ok(Some(found)) => return Ok(found),
                Ok(None) => None,
                Err(PollError::Api(e)) => Some(e.to_string()),
                Err(PollError::Never(why)) => return Err(WaitEnd::Never(why)),
            };
            if Instant::now() >= until {
                return Err(last_error.map_or(WaitEnd::TimedOut, WaitEnd::Api));
            }
            tokio::select! {
                () = self.cancel.cancelled() => return Err(WaitEnd::Cancelled),
                () = tokio::time::sleep(self.restore.options.poll.min(until - Instant::now())) => {}
            }
        }
    }

    /// Scales the StatefulSet; `note` records (or, `None`, removes) the replicas to come back to.
    async fn scale(&self, replicas: i32, note: Option<i32>) -> Result<(), kube::Error> {
        let sts = self.restore.sts_api();
        let name = &self.plan.target.statefulset;
        let annotation = note.map(|n| n.to_string());
        let patch =
            serde_json::json!({"metadata": {"annotations": {REPLICAS_ANNOTATION: annotation}}});
        sts.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        let patch = serde_json::json!({"spec": {"replicas": replicas}});
        sts.patch_scale(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
    }

    async fn sts_pods(&self) -> Result<Vec<Pod>, kube::Error> {
        let pods: Api<Pod> = Api::namespaced(self.restore.client.clone(), self.ns());
        let sts = &self.plan.target.statefulset;
        Ok(pods
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|p| {
                p.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| o.kind == "StatefulSet" && &o.name == sts)
            })
            .collect())
    }

    async fn set_reclaim_policy(
        &self,
        volume: &str,
        policy: &str,
        remember: Option<&str>,
    ) -> Result<(), kube::Error> {
        let patch = serde_json::json!({
            "metadata": {"annotations": {POLICY_ANNOTATION: remember}},
            "spec": {"persistentVolumeReclaimPolicy": policy},
        });
        Api::<PersistentVolume>::all(self.restore.client.clone())
            .patch(volume, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
    }

    /// Before the claim is deleted: put everything back, and say how it went.
    async fn undo(&mut self) -> String {
        let mut problems = Vec::new();
        if self.retained
            && let (Some(volume), Some(policy)) = (&self.plan.volume, &self.plan.reclaim_policy)
            && let Err(e) = self.set_reclaim_policy(volume, policy, None).await
        {
            problems.push(format!(
                "could not set PersistentVolume {volume}'s reclaim policy back to {policy} ({e}); it is Retain"
            ));
        }
        if let Some(name) = &self.plan.safety_snapshot
            && !self.safety_ready
        {
            // An unfinished safety snapshot is of no use; a ready one is kept.
            let _ = self.restore.snapshots().delete(name).await;
        }
        if self.scaled_down {
            if let Err(e) = self.scale(self.plan.running, None).await {
                problems.push(format!(
                    "could not scale StatefulSet {} back to {} ({e}): run kubectl scale statefulset {} -n {} --replicas={}",
                    self.plan.target.statefulset,
                    self.plan.running,
                    self.plan.target.statefulset,
                    self.ns(),
                    self.plan.running
                ));
            } else {
                self.scaled_down = false;
            }
        }
        if problems.is_empty() {
            format!(
                "nothing was changed: claim {} was not touched and StatefulSet {} is back at {} replica(s)",
                self.plan.target.claim, self.plan.target.statefulset, self.plan.running
            )
        } else {
            format!(
                "claim {} was not touched, but {}",
                self.plan.target.claim,
                problems.join("; ")
            )
        }
    }

    async fn fail_before_swap(&mut self, step: Step, cause: String) -> VolumeError {
        let state = self.undo().await;
        VolumeError::Failed {
            step,
            cause,
            state,
            rollback: None,
            done: std::mem::take(&mut self.done),
        }
    }

    fn fail_after_delete(&mut self, step: Step, cause: String, state: String) -> VolumeError {
        let rollback = self.rollback_command();
        let previous = match &self.plan.volume {
            Some(volume) => format!(
                "; the previous data is on PersistentVolume {volume} (reclaim policy Retain)"
            ),
            None => String::new(),
        };
        let state = format!(
            "{state}; StatefulSet {} is left at 0 replicas (a pod would get an empty claim){previous}{}",
            self.plan.target.statefulset,
            if rollback.is_none() {
                "; no safety snapshot exists: restore a backup snapshot with litemaas-restore volume --latest"
            } else {
                ""
            }
        );
        VolumeError::Failed {
            step,
            cause,
            state,
            rollback,
            done: std::mem::take(&mut self.done),
        }
    }
}

impl VolumeRestore {
    /// Steps 2 to 6 of `plan` (see the module documentation). `on_step` is called as each step
    /// completes; `cancel` stops the run like a failure of the step in progress.
    ///
    /// # Errors
    /// [`VolumeError::Failed`] naming the step, the cluster's state and, once a safety snapshot
    /// exists, the command that rolls back.
    pub async fn execute(
        &self,
        plan: &Plan,
        cancel: &CancellationToken,
        on_step: &(dyn Fn(&StepReport) + Send + Sync),
    ) -> Result<VolumeReport, VolumeError> {
        let mut run = Run {
            restore: self,
            plan,
            cancel,
            on_step,
            done: Vec::new(),
            scaled_down: false,
            safety_ready: false,
            retained: false,
        };
        let t = &plan.target;
        let timeouts = self.options.timeouts;
        let interrupted = || "interrupted (signal, deadline or lost Lease)".to_owned();

        // 2. Scale down (noting the replicas, for a rollback run after a failure).
        let started = Instant::now();
        if cancel.is_cancelled() {
            return Err(run.fail_before_swap(Step::ScaleDown, interrupted()).await);
        }
        run.scaled_down = true; // a scale request may land even if its answer is lost
        if let Err(e) = run.scale(0, Some(plan.replicas)).await {
            let cause = kube_cause(&format!("scaling StatefulSet {} to 0", t.statefulset), &e);
            return Err(run.fail_before_swap(Step::ScaleDown, cause).await);
        }
        let gone = run
            .wait(timeouts.scale_down, || async {
                Ok(run.sts_pods().await?.is_empty().then_some(()))
            })
            .await;
        if let Err(end) = gone {
            let cause = end.cause(
                &format!("the pods of StatefulSet {} to be gone", t.statefulset),
                timeouts.scale_down,
            );
            return Err(run.fail_before_swap(Step::ScaleDown, cause).await);
        }
        run.finish(
            Step::ScaleDown,
            format!(
                "StatefulSet {} scaled from {} to 0; its pods are gone",
                t.statefulset, plan.running
            ),
            started,
        );

        // 3. Safety snapshot.
        let started = Instant::now();
        match &plan.safety_snapshot {
            Some(name) => {
                let labels = [
                    (SAFETY_ROLE_LABEL, "safety"),
                    ("app.kubernetes.io/managed-by", "litemaas-backup"),
                ];
                let snapshots = self.snapshots();
                if let Err(e) = snapshots
                    .create(
                        &t.claim,
                        name,
                        &labels,
                        self.options.safety_class.as_deref(),
                    )
                    .await
                {
                    return Err(run
                        .fail_before_swap(Step::SafetySnapshot, e.to_string())
                        .await);
                }
                let ready = tokio::select! {
                    () = cancel.cancelled() => Err(format!("{} while waiting for it to be ready", interrupted())),
                    ready = snapshots.wait_ready(name, timeouts.snapshot) => ready.map_err(|e| e.to_string()),
                };
                if let Err(cause) = ready {
                    let cause = format!("safety snapshot {name}: {cause}");
                    return Err(run.fail_before_swap(Step::SafetySnapshot, cause).await);
                }
                run.safety_ready = true;
                let detail = format!("VolumeSnapshot {name} of claim {} is readyToUse", t.claim);
                run.finish(Step::SafetySnapshot, detail, started);
            }
            None if plan.volume.is_some() => {
                tracing::warn!(
                    "no safety snapshot (--no-safety-snapshot): a failed swap cannot be rolled back from a snapshot"
                );
                run.finish(
                    Step::SafetySnapshot,
                    "SKIPPED (--no-safety-snapshot)".into(),
                    started,
                );
            }
            None => run.finish(
                Step::SafetySnapshot,
                "none: no Bound claim to snapshot".into(),
                started,
            ),
        }

        // 4. Retain the volume.
        let started = Instant::now();
        if cancel.is_cancelled() {
            return Err(run
                .fail_before_swap(Step::RetainVolume, interrupted())
                .await);
        }
        match (&plan.volume, plan.reclaim_policy.as_deref()) {
            (Some(volume), Some(policy)) if policy != "Retain" => {
                run.retained = true;
                if let Err(e) = run.set_reclaim_policy(volume, "Retain", Some(policy)).await {
                    let cause = kube_cause(
                        &format!("setting PersistentVolume {volume}'s reclaim policy to Retain"),
                        &e,
                    );
                    return Err(run.fail_before_swap(Step::RetainVolume, cause).await);
                }
                let detail =
                    format!("PersistentVolume {volume}: reclaim policy {policy} -> Retain");
                run.finish(Step::RetainVolume, detail, started);
            }
            (Some(volume), _) => {
                let detail = format!("PersistentVolume {volume} already has reclaim policy Retain");
                run.finish(Step::RetainVolume, detail, started);
            }
            (None, _) => run.finish(Step::RetainVolume, "no bound volume".into(), started),
        }

        // 5. Swap the claim.
        let started = Instant::now();
        if cancel.is_cancelled() {
            let cause = format!("{} before the claim was deleted", interrupted());
            return Err(run.fail_before_swap(Step::SwapClaim, cause).await);
        }
        let claims = self.claim_api();
        let old = match claims.get_opt(&t.claim).await {
            Ok(old) => old,
            Err(e) => {
                let cause = kube_cause(&format!("reading claim {}", t.claim), &e);
                return Err(run.fail_before_swap(Step::SwapClaim, cause).await);
            }
        };
        let old_uid = old.as_ref().and_then(|c| c.metadata.uid.clone());
        if old_uid != plan.claim_uid {
            let cause = format!(
                "claim {} changed since the check; someone else is at work",
                t.claim
            );
            return Err(run.fail_before_swap(Step::SwapClaim, cause).await);
        }
        if let Some(uid) = &old_uid {
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            if let Err(e) = claims.delete(&t.claim, &params).await {
                // Did it go through anyway (a lost answer)?
                if let Ok(Some(c)) = claims.get_opt(&t.claim).await
                    && c.metadata.uid.as_ref() == Some(uid)
                    && c.metadata.deletion_timestamp.is_none()
                {
                    let cause = kube_cause(&format!("deleting claim {}", t.claim), &e);
                    return Err(run.fail_before_swap(Step::SwapClaim, cause).await);
                }
            }
            let gone = run
                .wait(timeouts.bind, || async {
                    Ok(match claims.get_opt(&t.claim).await? {
                        Some(c) if c.metadata.uid.as_ref() == Some(uid) => None,
                        _ => Some(()),
                    })
                })
                .await;
            if let Err(end) = gone {
                let cause = end.cause(&format!("claim {} to be deleted", t.claim), timeouts.bind);
                let state = format!(
                    "claim {} is being deleted (something still uses it?)",
                    t.claim
                );
                return Err(run.fail_after_delete(Step::SwapClaim, cause, state));
            }
        }
        let new = restored_claim(plan);
        let mut created = false;
        let mut last_error = String::new();
        for attempt in 1..=5 {
            match claims.create(&PostParams::default(), &new).await {
                Ok(_) => {
                    created = true;
                    break;
                }
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    // Ours, if a lost answer hid a success; anything else is not ours to touch.
                    if let Ok(Some(c)) = claims.get_opt(&t.claim).await
                        && same_source(&c, plan)
                    {
                        created = true;
                    } else {
                        last_error = format!(
                            "a claim named {} appeared that this restore did not create",
                            t.claim
                        );
                    }
                    break;
                }
                Err(e) => last_error = e.to_string(),
            }
            if cancel.is_cancelled() {
                last_error = format!("{last_error}; {}", interrupted());
                break;
            }
            tokio::time::sleep(self.options.poll * attempt).await;
        }
        if !created {
            let cause = format!(
                "creating claim {} from VolumeSnapshot {}: {last_error}",
                t.claim, plan.snapshot.name
            );
            let state = format!(
                "claim {} is deleted and could not be created again",
                t.claim
            );
            return Err(run.fail_after_delete(Step::SwapClaim, cause, state));
        }
        let snapshots = run.restore.snapshots().api();
        let bound = run
            .wait(timeouts.bind, || async {
                let c = claims.get_opt(&t.claim).await?;
                let phase = c
                    .as_ref()
                    .and_then(|c| c.status.as_ref())
                    .and_then(|s| s.phase.clone());
                Ok(match phase.as_deref() {
                    Some("Bound") => Some("Bound"),
                    _ if plan.wait_for_first_consumer && c.is_some() => {
                        Some("Pending until the pod starts (WaitForFirstConsumer)")
                    }
                    _ => {
                        // A claim provisions from its snapshot only while the snapshot is
                        // there: once it is gone (or going), waiting longer cannot help.
                        let source = snapshots.get_opt(&plan.snapshot.name).await?;
                        match source {
                            None => {
                                return Err(PollError::Never(format!(
                                    "VolumeSnapshot {} was deleted",
                                    plan.snapshot.name
                                )));
                            }
                            Some(s) if s.metadata.deletion_timestamp.is_some() => {
                                return Err(PollError::Never(format!(
                                    "VolumeSnapshot {} is being deleted",
                                    plan.snapshot.name
                                )));
                            }
                            Some(_) => None,
                        }
                    }
                })
            })
            .await;
        let phase = match bound {
            Ok(phase) => phase,
            Err(end) => {
                let cause = end.cause(
                    &format!(
                        "claim {} (from VolumeSnapshot {}) to be Bound",
                        t.claim, plan.snapshot.name
                    ),
                    timeouts.bind,
                );
                let state = format!(
                    "claim {} exists, restored from VolumeSnapshot {}, but is not Bound",
                    t.claim, plan.snapshot.name
                );
                return Err(run.fail_after_delete(Step::SwapClaim, cause, state));
            }
        };
        let detail = format!(
            "claim {} created from VolumeSnapshot {} ({}): {phase}",
            t.claim, plan.snapshot.name, plan.size_new
        );
        run.finish(Step::SwapClaim, detail, started);

        // 6. Scale up.
        let started = Instant::now();
        let restored = format!(
            "claim {} is restored from VolumeSnapshot {}",
            t.claim, plan.snapshot.name
        );
        if let Err(e) = run.scale(plan.replicas, None).await {
            let cause = kube_cause(
                &format!("scaling StatefulSet {} to {}", t.statefulset, plan.replicas),
                &e,
            );
            return Err(VolumeError::Failed {
                step: Step::ScaleUp,
                cause,
                state: format!(
                    "{restored}; StatefulSet {} is still at 0: kubectl scale statefulset {} -n {} --replicas={}",
                    t.statefulset, t.statefulset, t.namespace, plan.replicas
                ),
                rollback: run.rollback_command(),
                done: std::mem::take(&mut run.done),
            });
        }
        let want = usize::try_from(plan.replicas).unwrap_or(0);
        let ready = run
            .wait(timeouts.ready, || async {
                let pods = run.sts_pods().await?;
                Ok((pods.iter().filter(|p| pod_ready(p)).count() >= want).then_some(()))
            })
            .await;
        if let Err(end) = ready {
            let cause = end.cause(
                &format!(
                    "{want} pod(s) of StatefulSet {} to be Running and Ready",
                    t.statefulset
                ),
                timeouts.ready,
            );
            return Err(VolumeError::Failed {
                step: Step::ScaleUp,
                cause,
                state: format!(
                    "{restored} and StatefulSet {} is at {} replica(s), but its pods are not Ready (kubectl describe pod -n {})",
                    t.statefulset, plan.replicas, t.namespace
                ),
                rollback: run.rollback_command(),
                done: std::mem::take(&mut run.done),
            });
        }
        let detail = format!(
            "StatefulSet {} at {} replica(s), Running and Ready",
            t.statefulset, plan.replicas
        );
        run.finish(Step::ScaleUp, detail, started);

        // The previous volume: kept, unless asked to give it its policy back.
        let mut released = false;
        if self.options.release_previous_volume
            && let (Some(volume), Some(policy)) = (&plan.volume, &plan.reclaim_policy)
            && policy != "Retain"
        {
            match run.set_reclaim_policy(volume, policy, None).await {
                Ok(()) => released = true,
                Err(e) => tracing::warn!(
                    volume,
                    "could not give the previous volume its reclaim policy back ({e}); it is kept (Retain)"
                ),
            }
        }
        Ok(VolumeReport {
            plan: plan.clone(),
            steps: run.done,
            previous_volume: plan.volume.clone(),
            previous_volume_released: released,
        })
    }
}

fn pod_ready(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    pod.metadata.deletion_timestamp.is_none()
        && status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn same_source(claim: &PersistentVolumeClaim, plan: &Plan) -> bool {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.data_source.as_ref())
        .is_some_and(|d| d.kind == "VolumeSnapshot" && d.name == plan.snapshot.name)
}

/// The claim again, same name and shape, from the snapshot.
fn restored_claim(plan: &Plan) -> PersistentVolumeClaim {
    let shape = &plan.claim;
    let mut claim = PersistentVolumeClaim::default();
    claim.metadata.name = Some(plan.target.claim.clone());
    claim.metadata.labels = Some(shape.labels.clone());
    let mut annotations = shape.annotations.clone();
    annotations.insert(
        "litemaas-backup/restored-from".into(),
        plan.snapshot.name.clone(),
    );
    claim.metadata.annotations = Some(annotations);
    claim.spec = Some(PersistentVolumeClaimSpec {
        access_modes: Some(shape.access_modes.clone()),
        storage_class_name: shape.storage_class.clone(),
        volume_mode: shape.volume_mode.clone(),
        resources: Some(VolumeResourceRequirements {
            requests: Some(BTreeMap::from([(
                "storage".to_owned(),
                Quantity(plan.size_new.clone()),
            )])),
            ..VolumeResourceRequirements::default()
        }),
        data_source: Some(TypedLocalObjectReference {
            api_group: Some("snapshot.storage.k8s.io".into()),
            kind: "VolumeSnapshot".into(),
            name: plan.snapshot.name.clone(),
        }),
        ..PersistentVolumeClaimSpec::default()
    });
    claim
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_are_read_as_kubernetes_reads_them() {
        assert_eq!(quantity_bytes("10Gi"), Some(10 << 30));
        assert_eq!(quantity_bytes("500M"), Some(500_000_000));
        assert_eq!(quantity_bytes("1073741824"), Some(1 << 30));
        assert_eq!(quantity_bytes("1.5Gi"), Some(3 << 29));
        assert_eq!(quantity_bytes("8k"), Some(8000));
        assert_eq!(quantity_bytes("10 GB"), None);
        assert_eq!(quantity_bytes("ten"), None);
    }

    #[test]
    fn steps_are_named_with_their_number() {
        assert_eq!(Step::SwapClaim.to_string(), "step 5/6 (swap the claim)");
    }
}
