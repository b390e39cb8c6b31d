//! The storage side of the simulated cluster: what the PV controller, the external provisioner,
//! the pvc-protection and pv-protection controllers and the CSI snapshotter do with claims,
//! volumes and snapshots.
//!
//! Level-triggered: every relevant change runs [`Storage::reconcile`] over all claims and volumes,
//! which changes only what is not yet as it should be, so repeated runs settle.
//!
//! - A claim's StorageClass is its `spec.storageClassName`, else the default class (set at
//!   admission, or later while unbound); with neither it gets the immediately binding in-tree
//!   class [`IN_TREE_PROVISIONER`]. `storageClassName: ""` asks for a pre-made volume only.
//! - `WaitForFirstConsumer`: Pending until a pod that is not terminating mounts the claim.
//! - A VolumeSnapshot data source: Pending until the snapshot exists, is not being deleted, is
//!   `readyToUse`, its `restoreSize` fits in the request, and its driver is the class's
//!   provisioner (when both are known).
//! - Binding provisions `pvc-<claim uid>` and binds both ways; a claim naming a volume binds to
//!   it if that volume is free (or reserved for it) and fits.
//! - Why a claim is Pending is a core Event on the claim (`Warning ProvisioningFailed`,
//!   `Normal WaitForFirstConsumer`, `Warning FailedBinding`, …), as `kubectl describe` shows.
//! - Deletion: a claim keeps its `kubernetes.io/pvc-protection` finalizer while a scheduled pod
//!   that has not ended (terminating or not) mounts it; a volume whose claim is gone is Released, then deleted (reclaim policy
//!   `Delete`) or kept with its claimRef (`Retain`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::Shared;
use crate::controllers::{def, now};
use crate::quantity;
use crate::select::Selectors;
use crate::store::{Key, PV_PROTECTION, PVC_PROTECTION, Part};

/// The provisioner of the in-tree class that claims without a StorageClass get when no class
/// is the default: it binds at once. As a CSI driver it counts as unknown, so it never
/// conflicts with a snapshot's driver.
pub const IN_TREE_PROVISIONER: &str = "kubernetes.io/litemaas-testapi";

const DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
const DEFAULT_CLASS_BETA: &str = "storageclass.beta.kubernetes.io/is-default-class";
const DEFAULT_SNAPSHOT_CLASS: &str = "snapshot.storage.kubernetes.io/is-default-class";
const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn deleting(object: &Value) -> bool {
    !object["metadata"]["deletionTimestamp"].is_null()
}

/// Whether `pod` names `claim` among its volumes.
pub(crate) fn mounts(pod: &Value, claim: &str) -> bool {
    pod["spec"]["volumes"].as_array().is_some_and(|volumes| {
        volumes
            .iter()
            .any(|v| v["persistentVolumeClaim"]["claimName"] == json!(claim))
    })
}

/// The claims `pod` mounts.
pub(crate) fn claims_of(pod: &Value) -> Vec<String> {
    pod["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["persistentVolumeClaim"]["claimName"].as_str())
        .map(str::to_owned)
        .collect()
}

fn pod_ended(pod: &Value) -> bool {
    matches!(str_of(&pod["status"]["phase"]), "Succeeded" | "Failed")
}

/// Whether a pod has been scheduled to a node (`spec.nodeName`, or it runs already): only such
/// a pod can have a claim's volume mounted, so only such a pod holds a claim being deleted (a
/// pod still Pending for want of its claim does not).
fn pod_scheduled(pod: &Value) -> bool {
    !str_of(&pod["spec"]["nodeName"]).is_empty() || pod["status"]["phase"] == json!("Running")
}

/// The default StorageClass among `classes`: the newest one annotated as default (as the
/// `DefaultStorageClass` admission plugin picks when several are).
pub(crate) fn default_class<'a>(classes: impl Iterator<Item = &'a Value>) -> Option<String> {
    classes
        .filter(|c| {
            let a = &c["metadata"]["annotations"];
            a[DEFAULT_CLASS] == json!("true") || a[DEFAULT_CLASS_BETA] == json!("true")
        })
        .max_by(|a, b| {
            let created = |c: &Value| str_of(&c["metadata"]["creationTimestamp"]).to_owned();
            created(a)
                .cmp(&created(b))
                .then_with(|| str_of(&b["metadata"]["name"]).cmp(str_of(&a["metadata"]["name"])))
        })
        .and_then(|c| c["metadata"]["name"].as_str().map(str::to_owned))
}

/// Why a claim is not bound: the core Event it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Why {
    warning: bool,
    reason: &'static str,
    message: String,
}

impl Why {
    fn normal(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            warning: false,
            reason,
            message: message.into(),
        }
    }
    fn warning(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            warning: true,
            reason,
            message: message.into(),
        }
    }
}

/// A claim's resolved StorageClass.
#[derive(Debug, Clone)]
struct Class {
    /// `None` for the in-tree class.
    name: Option<String>,
    provisioner: String,
    reclaim_policy: String,
    wait_for_consumer: bool,
}

impl Class {
    fn in_tree() -> Self {
        Self {
            name: None,
            provisioner: IN_TREE_PROVISIONER.into(),
            reclaim_policy: "Delete".into(),
            wait_for_consumer: false,
        }
    }

    fn of(object: &Value) -> Self {
        Self {
            name: object["metadata"]["name"].as_str().map(str::to_owned),
            provisioner: str_of(&object["provisioner"]).to_owned(),
            reclaim_policy: object["reclaimPolicy"]
                .as_str()
                .unwrap_or("Delete")
                .to_owned(),
            wait_for_consumer: object["volumeBindingMode"] == json!("WaitForFirstConsumer"),
        }
    }

    /// The provisioner as a CSI driver name, if it is one.
    fn driver(&self) -> Option<&str> {
        (!self.provisioner.is_empty() && self.provisioner != IN_TREE_PROVISIONER)
            .then_some(self.provisioner.as_str())
    }

    fn failed(&self, message: impl std::fmt::Display) -> Why {
        Why::warning(
            "ProvisioningFailed",
            format!(
                "failed to provision volume with StorageClass \"{}\": {message}",
                self.name.as_deref().unwrap_or("")
            ),
        )
    }
}

/// The storage controllers' memory: which reason each claim was last given, so that each is
/// reported once.
#[derive(Debug, Default)]
pub(crate) struct Storage {
    reported: HashMap<String, (&'static str, String)>,
}

impl Storage {
    /// Brings every claim and volume one step closer to where it should be.
    pub fn reconcile(&mut self, shared: &Shared) {
        let all = Selectors::default();
        let (claims, _) = shared
            .store
            .list(def("", "persistentvolumeclaims"), None, &all);
        let (pods, _) = shared.store.list(def("", "pods"), None, &all);
        for claim in claims {
            self.claim(shared, &pods, claim);
        }
        let (volumes, _) = shared.store.list(def("", "persistentvolumes"), None, &all);
        for volume in volumes {
            volume_step(shared, volume);
        }
        let uids: std::collections::HashSet<String> = shared
            .store
            .list(def("", "persistentvolumeclaims"), None, &all)
            .0
            .iter()
            .map(|c| str_of(&c["metadata"]["uid"]).to_owned())
            .collect();
        self.reported.retain(|uid, _| uids.contains(uid));
    }

    fn claim(&mut self, shared: &Shared, pods: &[Value], claim: Value) {
        let pvc = def("", "persistentvolumeclaims");
        let ns = str_of(&claim["metadata"]["namespace"]).to_owned();
        let name = str_of(&claim["metadata"]["name"]).to_owned();
        let key = Key::new(pvc, &ns, &name);
        if deleting(&claim) {
            // pvc-protection: the finalizer goes once no scheduled pod that has not ended (even
            // a terminating one) mounts it.
            let in_use = pods.iter().any(|p| {
                str_of(&p["metadata"]["namespace"]) == ns
                    && mounts(p, &name)
                    && pod_scheduled(p)
                    && !pod_ended(p)
            });
            if !in_use && crate::store::finalizers(&claim).contains(&PVC_PROTECTION) {
                let mut updated = claim.clone();
                updated["metadata"]["finalizers"] = json!(
                    crate::store::finalizers(&claim)
                        .into_iter()
                        .filter(|f| *f != PVC_PROTECTION)
                        .collect::<Vec<_>>()
                );
                let _ = shared.store.update(pvc, &key, updated, Part::Main);
            }
            return;
        }
        let phase = str_of(&claim["status"]["phase"]);
        if phase == "Lost" {
            return;
        }
        let volume_name = str_of(&claim["spec"]["volumeName"]).to_owned();
        let bind_completed = claim["metadata"]["annotations"][BIND_COMPLETED] == json!("yes");
        if !volume_name.is_empty() && (phase == "Bound" || bind_completed) {
            self.bound_claim(shared, &claim, &key, &volume_name);
            return;
        }
        let outcome = if volume_name.is_empty() {
            self.provision(shared, pods, &claim, &key)
        } else {
            bind_named(shared, &claim, &key, &volume_name)
        };
        match outcome {
            Ok(Some(done)) => self.report(shared, &claim, &done),
            Ok(None) => {}
            Err(why) => {
                set_claim_status(shared, &key, &claim, json!({"phase": "Pending"}));
                self.report(shared, &claim, &why);
            }
        }
    }

    /// A claim that was bound: it stays so while its volume is there and bound to it.
    fn bound_claim(&mut self, shared: &Shared, claim: &Value, key: &Key, volume_name: &str) {
        let pv = def("", "persistentvolumes");
        let uid = str_of(&claim["metadata"]["uid"]);
        let lost = |why: Why| {
            let mut status = claim["status"].clone();
            status["phase"] = json!("Lost");
            set_claim_status(shared, key, claim, status);
            why
        };
        match shared.store.get(pv, &Key::new(pv, "", volume_name)) {
            Err(_) => {
                let why = lost(Why::warning(
                    "ClaimLost",
                    "Bound claim has lost reference to PersistentVolume. Data on the volume is lost!",
                ));
                self.report(shared, claim, &why);
            }
            Ok(volume) => {
                let bound_to = str_of(&volume["spec"]["claimRef"]["uid"]);
                if bound_to == uid {
                    set_claim_status(shared, key, claim, bound_status(claim, &volume));
                } else if bound_to.is_empty() {
                    // Reserved or free: finish the binding.
                    if let Err(why) = bind_named(shared, claim, key, volume_name) {
                        self.report(shared, claim, &why);
                    }
                } else {
                    let why = lost(Why::warning(
                        "ClaimMisbound",
                        "Two claims are bound to the same volume, this one is bound incorrectly",
                    ));
                    self.report(shared, claim, &why);
                }
            }
        }
    }

    /// Dynamic provisioning; `Ok(Some(event))` when a volume was made and bound.
    fn provision(
        &mut self,
        shared: &Shared,
        pods: &[Value],
        claim: &Value,
        key: &Key,
    ) -> Result<Option<Why>, Why> {
        let class = resolve_class(shared, claim, key)?;
        let ns = &key.namespace;
        if class.wait_for_consumer {
            let consumer = pods.iter().any(|p| {
                str_of(&p["metadata"]["namespace"]) == ns
                    && mounts(p, &key.name)
                    && !deleting(p)
                    && !pod_ended(p)
            });
            if !consumer {
                return Err(Why::normal(
                    "WaitForFirstConsumer",
                    "waiting for first consumer to be created before binding",
                ));
            }
        }
        let source = if claim["spec"]["dataSource"].is_object() {
            &claim["spec"]["dataSource"]
        } else {
            &claim["spec"]["dataSourceRef"]
        };
        if source["kind"] == json!("VolumeSnapshot") {
            let snapshot = str_of(&source["name"]);
            check_snapshot(shared, claim, ns, snapshot, &class).map_err(|e| {
                class.failed(format!(
                    "error getting handle for DataSource Type VolumeSnapshot by Name {snapshot}: {e}"
                ))
            })?;
        }
        let uid = str_of(&claim["metadata"]["uid"]);
        let pv_name = format!("pvc-{uid}");
        let pv = def("", "persistentvolumes");
        let pv_key = Key::new(pv, "", &pv_name);
        let volume = match shared.store.get(pv, &pv_key) {
            Ok(existing) if str_of(&existing["spec"]["claimRef"]["uid"]) == uid => existing,
            Ok(_) => {
                return Err(class.failed(format!(
                    "persistentvolumes \"{pv_name}\" already exists for another claim"
                )));
            }
            Err(_) => {
                let request = claim["spec"]["resources"]["requests"]["storage"].clone();
                let mut spec = json!({
                    "capacity": {"storage": request},
                    "accessModes": claim["spec"]["accessModes"],
                    "claimRef": claim_ref(claim),
                    "persistentVolumeReclaimPolicy": class.reclaim_policy,
                    "csi": {"driver": class.provisioner, "volumeHandle": format!("vol-{uid}"),
                            "fsType": "ext4"},
                    "volumeMode": claim["spec"]["volumeMode"].as_str().unwrap_or("Filesystem"),
                });
                if let Some(name) = &class.name {
                    spec["storageClassName"] = json!(name);
                }
                let object = json!({
                    "metadata": {"name": pv_name,
                                 "annotations": {"pv.kubernetes.io/provisioned-by": class.provisioner}},
                    "spec": spec,
                    "status": {"phase": "Bound"},
                });
                match shared.store.create(pv, "", object) {
                    Ok(created) => created,
                    Err(e) => return Err(class.failed(e.message)),
                }
            }
        };
        let mut updated = claim.clone();
        updated["spec"]["volumeName"] = json!(pv_name);
        let annotations = &mut updated["metadata"]["annotations"];
        annotations[BIND_COMPLETED] = json!("yes");
        annotations["pv.kubernetes.io/bound-by-controller"] = json!("yes");
        annotations["volume.kubernetes.io/storage-provisioner"] = json!(class.provisioner);
        let Ok(updated) =
            shared
                .store
                .update(def("", "persistentvolumeclaims"), key, updated, Part::Main)
        else {
            return Ok(None); // changed meanwhile: the change brings another pass
        };
        set_claim_status(shared, key, &updated, bound_status(&updated, &volume));
        Ok(Some(Why::normal(
            "ProvisioningSucceeded",
            format!("Successfully provisioned volume {pv_name}"),
        )))
    }

    /// Records `why` as a core Event on the claim, once per reason and message.
    fn report(&mut self, shared: &Shared, claim: &Value, why: &Why) {
        let uid = str_of(&claim["metadata"]["uid"]).to_owned();
        let entry = (why.reason, why.message.clone());
        if self.reported.get(&uid) == Some(&entry) {
            return;
        }
        self.reported.insert(uid.clone(), entry);
        let meta = &claim["metadata"];
        let time = now();
        let event = json!({
            "metadata": {"generateName": format!("{}.", str_of(&meta["name"]))},
            "involvedObject": {"kind": "PersistentVolumeClaim", "apiVersion": "v1",
                "namespace": meta["namespace"], "name": meta["name"], "uid": uid,
                "resourceVersion": meta["resourceVersion"]},
            "reason": why.reason,
            "message": why.message,
            "type": if why.warning { "Warning" } else { "Normal" },
            "count": 1,
            "firstTimestamp": time,
            "lastTimestamp": time,
            "source": {"component": "persistentvolume-controller"},
            "reportingComponent": "persistentvolume-controller",
        });
        let _ = shared
            .store
            .create(def("", "events"), str_of(&meta["namespace"]), event);
    }
}

fn claim_ref(claim: &Value) -> Value {
    let meta = &claim["metadata"];
    json!({"kind": "PersistentVolumeClaim", "apiVersion": "v1", "namespace": meta["namespace"],
           "name": meta["name"], "uid": meta["uid"]})
}

fn bound_status(claim: &Value, volume: &Value) -> Value {
    json!({"phase": "Bound", "accessModes": claim["spec"]["accessModes"],
           "capacity": {"storage": volume["spec"]["capacity"]["storage"]}})
}

/// Writes a claim's status if it differs (with the claim's resourceVersion as a precondition).
fn set_claim_status(shared: &Shared, key: &Key, claim: &Value, status: Value) {
    if claim["status"] == status {
        return;
    }
    let mut updated = claim.clone();
    updated["status"] = status;
    let _ = shared.store.update(
        def("", "persistentvolumeclaims"),
        key,
        updated,
        Part::Status,
    );
}

fn resolve_class(shared: &Shared, claim: &Value, key: &Key) -> Result<Class, Why> {
    let sc = def("storage.k8s.io", "storageclasses");
    match &claim["spec"]["storageClassName"] {
        Value::String(name) if name.is_empty() => Err(Why::warning(
            "FailedBinding",
            "no persistent volumes available for this claim and no storage class is set",
        )),
        Value::String(name) => shared
            .store
            .get(sc, &Key::new(sc, "", name))
            .map(|c| Class::of(&c))
            .map_err(|_| {
                Why::warning(
                    "ProvisioningFailed",
                    format!("storageclass.storage.k8s.io \"{name}\" not found"),
                )
            }),
        _ => {
            let (classes, _) = shared.store.list(sc, None, &Selectors::default());
            let Some(default) = default_class(classes.iter()) else {
                return Ok(Class::in_tree());
            };
            // The retroactive default StorageClass: an unbound claim without a class gets it.
            let mut updated = claim.clone();
            updated["spec"]["storageClassName"] = json!(default);
            let _ =
                shared
                    .store
                    .update(def("", "persistentvolumeclaims"), key, updated, Part::Main);
            classes
                .iter()
                .find(|c| c["metadata"]["name"] == json!(default))
                .map(Class::of)
                .ok_or_else(|| Why::warning("ProvisioningFailed", "the default class went away"))
        }
    }
}

/// The CSI driver that took a snapshot: its content's, else its class's.
fn snapshot_driver(shared: &Shared, snapshot: &Value) -> Option<String> {
    let vsc = def("snapshot.storage.k8s.io", "volumesnapshotcontents");
    let content = str_of(&snapshot["status"]["boundVolumeSnapshotContentName"]);
    let from_content = shared
        .store
        .get(vsc, &Key::new(vsc, "", content))
        .ok()
        .and_then(|c| c["spec"]["driver"].as_str().map(str::to_owned));
    from_content
        .or_else(|| {
            snapshot_class(shared, snapshot).and_then(|c| c["driver"].as_str().map(str::to_owned))
        })
        .filter(|d| !d.is_empty() && d != IN_TREE_PROVISIONER)
}

/// The VolumeSnapshotClass a snapshot names, if it exists.
fn snapshot_class(shared: &Shared, snapshot: &Value) -> Option<Value> {
    let vsclass = def("snapshot.storage.k8s.io", "volumesnapshotclasses");
    let name = snapshot["spec"]["volumeSnapshotClassName"].as_str()?;
    shared.store.get(vsclass, &Key::new(vsclass, "", name)).ok()
}

/// Whether a claim may be restored from `name` now; the external provisioner's reason if not.
fn check_snapshot(
    shared: &Shared,
    claim: &Value,
    ns: &str,
    name: &str,
    class: &Class,
) -> Result<(), String> {
    let vs = def("snapshot.storage.k8s.io", "volumesnapshots");
    let Ok(snapshot) = shared.store.get(vs, &Key::new(vs, ns, name)) else {
        return Err(format!(
            "error getting snapshot {name} from api server: volumesnapshots.snapshot.storage.k8s.io \"{name}\" not found"
        ));
    };
    if deleting(&snapshot) {
        return Err(format!("snapshot {name} is currently being deleted"));
    }
    if snapshot["status"]["readyToUse"] != json!(true) {
        return Err(format!("snapshot {name} is not Ready"));
    }
    let request = str_of(&claim["spec"]["resources"]["requests"]["storage"]);
    let restore = str_of(&snapshot["status"]["restoreSize"]);
    if !restore.is_empty() {
        let requested = quantity::parse(request)
            .ok_or_else(|| format!("the claim's storage request {request:?} is not a quantity"))?;
        let size = quantity::parse(restore).ok_or_else(|| {
            format!("the restoreSize {restore:?} of snapshot {name} is not a quantity")
        })?;
        if requested < size {
            return Err(format!(
                "requested volume size {requested} is less than the size {size} for the source snapshot {name}"
            ));
        }
    }
    if let (Some(driver), Some(provisioner)) = (snapshot_driver(shared, &snapshot), class.driver())
        && driver != provisioner
    {
        return Err(format!(
            "snapshot {name} was taken by CSI driver {driver}, which is not the provisioner {provisioner} of the claim's StorageClass"
        ));
    }
    Ok(())
}

/// Binds a claim to the volume it names, if that volume is free (or reserved for it) and fits.
fn bind_named(
    shared: &Shared,
    claim: &Value,
    key: &Key,
    volume_name: &str,
) -> Result<Option<Why>, Why> {
    let pv = def("", "persistentvolumes");
    let pv_key = Key::new(pv, "", volume_name);
    let failed = |message: String| Why::warning("FailedBinding", message);
    let Ok(volume) = shared.store.get(pv, &pv_key) else {
        return Err(failed(format!(
            "volume \"{volume_name}\" requested by the claim not found"
        )));
    };
    let reserved = &volume["spec"]["claimRef"];
    let uid = str_of(&claim["metadata"]["uid"]);
    let ref_uid = str_of(&reserved["uid"]);
    let reserved_for_it = reserved.is_null()
        || (str_of(&reserved["namespace"]) == key.namespace
            && str_of(&reserved["name"]) == key.name
            && (ref_uid.is_empty() || ref_uid == uid));
    if !reserved_for_it {
        return Err(failed(format!(
            "volume \"{volume_name}\" already bound to a different claim."
        )));
    }
    if deleting(&volume) {
        return Err(failed(format!("volume \"{volume_name}\" is being deleted")));
    }
    let request = quantity::parse(str_of(&claim["spec"]["resources"]["requests"]["storage"]));
    let capacity = quantity::parse(str_of(&volume["spec"]["capacity"]["storage"]));
    if let (Some(request), Some(capacity)) = (request, capacity)
        && capacity < request
    {
        return Err(failed(format!(
            "Cannot bind to requested volume \"{volume_name}\": requested PV is too small"
        )));
    }
    if str_of(&volume["spec"]["storageClassName"]) != str_of(&claim["spec"]["storageClassName"]) {
        return Err(failed(format!(
            "Cannot bind to requested volume \"{volume_name}\": storageClassName does not match"
        )));
    }
    let mut bound = volume.clone();
    bound["spec"]["claimRef"] = claim_ref(claim);
    let Ok(bound) = shared.store.update(pv, &pv_key, bound, Part::Main) else {
        return Ok(None);
    };
    let mut status = bound.clone();
    status["status"] = json!({"phase": "Bound"});
    let _ = shared.store.update(pv, &pv_key, status, Part::Status);
    let mut updated = claim.clone();
    updated["metadata"]["annotations"][BIND_COMPLETED] = json!("yes");
    let Ok(updated) =
        shared
            .store
            .update(def("", "persistentvolumeclaims"), key, updated, Part::Main)
    else {
        return Ok(None);
    };
    set_claim_status(shared, key, &updated, bound_status(&updated, &bound));
    Ok(None)
}

/// One step of the PV controller and pv-protection for a volume.
fn volume_step(shared: &Shared, volume: Value) {
    let pv = def("", "persistentvolumes");
    let name = str_of(&volume["metadata"]["name"]).to_owned();
    let key = Key::new(pv, "", &name);
    let phase = str_of(&volume["status"]["phase"]).to_owned();
    let set_phase = |volume: &Value, phase: &str| {
        if volume["status"]["phase"] != json!(phase) {
            let mut updated = volume.clone();
            updated["status"] = json!({"phase": phase});
            let _ = shared.store.update(pv, &key, updated, Part::Status);
        }
    };
    if deleting(&volume) {
        // pv-protection: a volume goes once it is not bound.
        if phase != "Bound" && crate::store::finalizers(&volume).contains(&PV_PROTECTION) {
            let mut updated = volume.clone();
            updated["metadata"]["finalizers"] = json!(
                crate::store::finalizers(&volume)
                    .into_iter()
                    .filter(|f| *f != PV_PROTECTION)
                    .collect::<Vec<_>>()
            );
            let _ = shared.store.update(pv, &key, updated, Part::Main);
            return;
        }
    }
    let claim_ref = &volume["spec"]["claimRef"];
    let uid = str_of(&claim_ref["uid"]);
    if claim_ref.is_null() || uid.is_empty() {
        // Free, or reserved for a claim by name.
        set_phase(&volume, "Available");
        return;
    }
    let pvc = def("", "persistentvolumeclaims");
    let claim = shared.store.get(
        pvc,
        &Key::new(
            pvc,
            str_of(&claim_ref["namespace"]),
            str_of(&claim_ref["name"]),
        ),
    );
    match claim {
        Ok(claim) if str_of(&claim["metadata"]["uid"]) == uid => {
            if claim["spec"]["volumeName"] == json!(name) {
                set_phase(&volume, "Bound");
            }
        }
        // Its claim is gone (or another of the same name took its place): released, then
        // reclaimed.
        _ => {
            if phase != "Released" && phase != "Failed" {
                set_phase(&volume, "Released");
                return;
            }
            if phase == "Released"
                && volume["spec"]["persistentVolumeReclaimPolicy"] == json!("Delete")
                && !deleting(&volume)
            {
                let _ = shared.store.delete(pv, &key);
            }
        }
    }
}

/// A volume is gone. If its reclaim policy was `Delete` its storage went with it, and on
/// storage whose snapshots die with their volume (`snapshots_die_with_volume`) so do the
/// snapshots taken of it.
pub(crate) fn volume_deleted(shared: &Shared, volume: &Value) {
    let die = shared
        .controllers
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .snapshots_die_with_volume;
    if !die || volume["spec"]["persistentVolumeReclaimPolicy"] != json!("Delete") {
        return;
    }
    let handle = str_of(&volume["spec"]["csi"]["volumeHandle"]);
    if handle.is_empty() {
        return;
    }
    let vsc = def("snapshot.storage.k8s.io", "volumesnapshotcontents");
    let vs = def("snapshot.storage.k8s.io", "volumesnapshots");
    let (contents, _) = shared.store.list(vsc, None, &Selectors::default());
    for content in contents
        .iter()
        .filter(|c| c["spec"]["source"]["volumeHandle"] == json!(handle))
    {
        let r = &content["spec"]["volumeSnapshotRef"];
        let _ = shared.store.delete_if(
            vs,
            &Key::new(vs, str_of(&r["namespace"]), str_of(&r["name"])),
            None,
            r["uid"].as_str(),
        );
        let _ = shared.store.delete(
            vsc,
            &Key::new(vsc, "", str_of(&content["metadata"]["name"])),
        );
    }
}

/// A snapshot is gone: its content goes too unless its deletion policy is `Retain`.
pub(crate) fn snapshot_deleted(shared: &Shared, snapshot: &Value) {
    let vsc = def("snapshot.storage.k8s.io", "volumesnapshotcontents");
    let name = format!("snapcontent-{}", str_of(&snapshot["metadata"]["uid"]));
    let key = Key::new(vsc, "", &name);
    if let Ok(content) = shared.store.get(vsc, &key)
        && content["spec"]["deletionPolicy"] != json!("Retain")
    {
        let _ = shared.store.delete(vsc, &key);
    }
}

/// What the snapshotter takes a snapshot of: the source claim's volume, once the claim is bound.
pub(crate) enum Source {
    /// No such claim: the snapshot is taken of nothing known (as the server always did).
    Missing,
    /// The claim exists but is not bound yet.
    Unbound(String),
    /// The claim's volume.
    Volume(Value),
}

/// The volume a snapshot of claim `claim` in `ns` is taken of.
pub(crate) fn snapshot_source(shared: &Shared, ns: &str, claim: &str) -> Source {
    let pvc = def("", "persistentvolumeclaims");
    let pv = def("", "persistentvolumes");
    let Ok(object) = shared.store.get(pvc, &Key::new(pvc, ns, claim)) else {
        return Source::Missing;
    };
    let volume = str_of(&object["spec"]["volumeName"]);
    if object["status"]["phase"] != json!("Bound") || volume.is_empty() {
        return Source::Unbound(format!(
            "the PVC {claim} is not yet bound to a PV, will not attempt to take a snapshot"
        ));
    }
    match shared.store.get(pv, &Key::new(pv, "", volume)) {
        Ok(volume) => Source::Volume(volume),
        Err(_) => Source::Unbound(format!(
            "the PV {volume} of PVC {claim} was not found, will not attempt to take a snapshot"
        )),
    }
}

/// Creates the VolumeSnapshotContent of a snapshot that just became ready, recording the source
/// volume's handle and its driver; returns the content's name.
pub(crate) fn create_content(
    shared: &Shared,
    snapshot: &Value,
    source: Option<&Value>,
    restore_size: &str,
) -> String {
    let vsc = def("snapshot.storage.k8s.io", "volumesnapshotcontents");
    let meta = &snapshot["metadata"];
    let uid = str_of(&meta["uid"]);
    let name = format!("snapcontent-{uid}");
    let class = snapshot_class(shared, snapshot).or_else(|| default_snapshot_class(shared, source));
    let driver = class
        .as_ref()
        .and_then(|c| c["driver"].as_str().map(str::to_owned))
        .or_else(|| source.and_then(|v| v["spec"]["csi"]["driver"].as_str().map(str::to_owned)))
        .unwrap_or_else(|| IN_TREE_PROVISIONER.to_owned());
    let mut spec = json!({
        "deletionPolicy": class.as_ref().and_then(|c| c["deletionPolicy"].as_str()).unwrap_or("Delete"),
        "driver": driver,
        "volumeSnapshotRef": {"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "namespace": meta["namespace"], "name": meta["name"], "uid": uid},
        "source": {},
    });
    if let Some(class) = &class {
        spec["volumeSnapshotClassName"] = class["metadata"]["name"].clone();
    }
    if let Some(volume) = source {
        spec["source"]["volumeHandle"] = volume["spec"]["csi"]["volumeHandle"].clone();
    }
    let bytes = quantity::parse(restore_size)
        .and_then(|b| u64::try_from(b).ok())
        .unwrap_or(0);
    let object = json!({
        "metadata": {"name": name},
        "spec": spec,
        "status": {"readyToUse": true, "restoreSize": bytes, "snapshotHandle": format!("snap-{uid}"),
                   "creationTime": jiff::Timestamp::now().as_nanosecond() as i64},
    });
    let _ = shared.store.create(vsc, "", object);
    name
}

/// The default VolumeSnapshotClass for the source volume's driver.
fn default_snapshot_class(shared: &Shared, source: Option<&Value>) -> Option<Value> {
    let driver = source?["spec"]["csi"]["driver"].as_str()?;
    let vsclass = def("snapshot.storage.k8s.io", "volumesnapshotclasses");
    let (classes, _) = shared.store.list(vsclass, None, &Selectors::default());
    classes.into_iter().find(|c| {
        c["driver"] == json!(driver)
            && c["metadata"]["annotations"][DEFAULT_SNAPSHOT_CLASS] == json!("true")
    })
}

/// Whether a change to an object of `plural` in `group` can change what the storage
/// controllers do.
pub(crate) fn relevant(group: &str, plural: &str) -> bool {
    matches!(
        (group, plural),
        ("", "persistentvolumeclaims" | "persistentvolumes" | "pods")
            | (
                "snapshot.storage.k8s.io",
                "volumesnapshots" | "volumesnapshotcontents" | "volumesnapshotclasses"
            )
            | ("storage.k8s.io", "storageclasses")
    )
}

/// Waits `delay` unless the server shuts down first; `false` if it did.
pub(crate) async fn sleep(shared: &Arc<Shared>, delay: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay) => true,
        () = shared.shutdown.cancelled() => false,
    }
}
