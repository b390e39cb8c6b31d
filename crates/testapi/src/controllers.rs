//! Simulated controllers: the CSI snapshotter, the StatefulSet controller with its pods and
//! claims, the kubelet's pod start-up, and the storage controllers of [`crate::storage`]
//! (provisioning, binding, protection, reclaim).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::Shared;
use crate::resources::{self, ResourceDef};
use crate::select::Selectors;
use crate::storage::{self, Source, Storage};
use crate::store::{Event, EventType, Key, Part};

/// What the simulated CSI snapshotter does with a new VolumeSnapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotBehavior {
    /// Becomes `readyToUse` after this delay.
    ReadyAfter(Duration),
    /// Never becomes ready.
    Never,
    /// Reports `status.error` with this message after a short delay.
    Fail(String),
    /// Reports `status.error` with this message, then (the CSI driver's retry succeeding)
    /// becomes `readyToUse` after the delay, the error left in place as the real controller
    /// leaves it (`status.error` is the *last* error, not the current one).
    FailThenReady(String, Duration),
}

/// How the simulated controllers behave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerConfig {
    /// The snapshotter.
    pub snapshots: SnapshotBehavior,
    /// How long a StatefulSet's pod takes from the moment every claim it mounts is Bound to
    /// Running and Ready (and how long a removed one terminates).
    pub pod_startup: Duration,
    /// Size reported as `restoreSize` when the source PVC asks for none.
    pub default_size: String,
    /// Storage on which deleting a volume deletes its snapshots: when a PersistentVolume whose
    /// reclaim policy is `Delete` goes, so do the VolumeSnapshots taken of it (found through
    /// their VolumeSnapshotContent's `spec.source.volumeHandle`). Default `false`.
    pub snapshots_die_with_volume: bool,
    /// StatefulSet pods start (Running) but never become Ready (a failing readiness probe).
    /// Default `false`.
    pub pods_never_ready: bool,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            snapshots: SnapshotBehavior::ReadyAfter(Duration::from_millis(200)),
            pod_startup: Duration::from_millis(100),
            default_size: "10Gi".into(),
            snapshots_die_with_volume: false,
            pods_never_ready: false,
        }
    }
}

pub(crate) fn def(group: &str, plural: &str) -> &'static ResourceDef {
    resources::RESOURCES
        .iter()
        .find(|r| r.group == group && r.plural == plural)
        .unwrap_or(&resources::RESOURCES[0])
}

pub(crate) fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Runs until the server shuts down, on the events of `events` (subscribed before the server
/// took its first request, so that nothing is missed).
pub(crate) async fn run(shared: Arc<Shared>, mut events: broadcast::Receiver<Event>) {
    let mut storage = Storage::default();
    resync(&shared, &mut storage);
    loop {
        let event = tokio::select! {
            () = shared.shutdown.cancelled() => return,
            event = events.recv() => match event {
                Ok(event) => event,
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Events were missed: look at everything again.
                    resync(&shared, &mut storage);
                    continue;
                }
                Err(_) => return,
            },
        };
        handle(&shared, &mut storage, &event);
    }
}

/// Every controller over every object.
fn resync(shared: &Arc<Shared>, storage: &mut Storage) {
    let sts_def = def("apps", "statefulsets");
    let (sets, _) = shared.store.list(sts_def, None, &Selectors::default());
    for sts in sets {
        let key = Key::new(
            sts_def,
            sts["metadata"]["namespace"].as_str().unwrap_or(""),
            sts["metadata"]["name"].as_str().unwrap_or(""),
        );
        reconcile_statefulset(shared, &key);
    }
    storage.reconcile(shared);
    start_pods(shared);
}

fn handle(shared: &Arc<Shared>, storage: &mut Storage, event: &Event) {
    let upsert = matches!(event.kind, EventType::Added | EventType::Modified);
    let deleted = event.kind == EventType::Deleted;
    match (event.key.group.as_str(), event.key.plural.as_str()) {
        ("snapshot.storage.k8s.io", "volumesnapshots") if event.kind == EventType::Added => {
            tokio::spawn(snapshot(shared.clone(), event.key.clone()));
        }
        ("snapshot.storage.k8s.io", "volumesnapshots") if deleted => {
            storage::snapshot_deleted(shared, &event.object);
        }
        ("", "persistentvolumes") if deleted => storage::volume_deleted(shared, &event.object),
        ("apps", "statefulsets") if upsert => reconcile_statefulset(shared, &event.key),
        ("", "pods") => {
            if let Some(owner) = owner_statefulset(&event.object) {
                let key = Key {
                    group: "apps".into(),
                    plural: "statefulsets".into(),
                    namespace: event.key.namespace.clone(),
                    name: owner,
                };
                if deleted || event.object["status"]["phase"] == json!("Pending") {
                    // A pod gone is made again; a pending one gets its missing claims.
                    reconcile_statefulset(shared, &key);
                } else {
                    update_statefulset_status(shared, &key);
                }
            }
        }
        ("", "persistentvolumeclaims") if deleted => {
            // A pending pod of a StatefulSet whose claim is gone gets a new, empty one.
            let sts_def = def("apps", "statefulsets");
            let (sets, _) =
                shared
                    .store
                    .list(sts_def, Some(&event.key.namespace), &Selectors::default());
            for sts in sets {
                let name = sts["metadata"]["name"].as_str().unwrap_or("");
                reconcile_statefulset(shared, &Key::new(sts_def, &event.key.namespace, name));
            }
        }
        _ => {}
    }
    if storage::relevant(&event.key.group, &event.key.plural) {
        storage.reconcile(shared);
        start_pods(shared);
    }
}

async fn snapshot(shared: Arc<Shared>, key: Key) {
    let vs = def("snapshot.storage.k8s.io", "volumesnapshots");
    let behavior = shared
        .controllers
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let (delay, error) = match &behavior.snapshots {
        SnapshotBehavior::Never => return,
        SnapshotBehavior::Fail(message) => {
            tokio::time::sleep(Duration::from_millis(100)).await;
            set_snapshot_status(
                &shared,
                &key,
                json!({"readyToUse": false, "error": {"message": message, "time": now()}}),
            );
            return;
        }
        SnapshotBehavior::ReadyAfter(delay) => (*delay, None),
        SnapshotBehavior::FailThenReady(message, delay) => {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let error = json!({"message": message, "time": now()});
            set_snapshot_status(&shared, &key, json!({"readyToUse": false, "error": error}));
            (*delay, Some(error))
        }
    };
    if !storage::sleep(&shared, delay).await {
        return;
    }
    // As the real snapshotter, it waits until the source claim is bound, and snapshots its volume.
    let mut reported = None;
    let (object, source) = loop {
        let Ok(object) = shared.store.get(vs, &key) else {
            return;
        };
        let claim = object["spec"]["source"]["persistentVolumeClaimName"]
            .as_str()
            .unwrap_or("");
        match storage::snapshot_source(&shared, &key.namespace, claim) {
            Source::Missing => break (object, None),
            Source::Volume(volume) => break (object, Some(volume)),
            Source::Unbound(message) => {
                if reported.as_ref() != Some(&message) {
                    set_snapshot_status(
                        &shared,
                        &key,
                        json!({"readyToUse": false, "error": {"message": message, "time": now()}}),
                    );
                    reported = Some(message);
                }
                if !storage::sleep(&shared, Duration::from_millis(50)).await {
                    return;
                }
            }
        }
    };
    let source_claim = object["spec"]["source"]["persistentVolumeClaimName"]
        .as_str()
        .unwrap_or("");
    let pvc = def("", "persistentvolumeclaims");
    let size = shared
        .store
        .get(pvc, &Key::new(pvc, &key.namespace, source_claim))
        .ok()
        .and_then(|p| {
            p["status"]["capacity"]["storage"]
                .as_str()
                .or_else(|| p["spec"]["resources"]["requests"]["storage"].as_str())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| behavior.default_size.clone());
    let content = storage::create_content(&shared, &object, source.as_ref(), &size);
    let mut status = json!({"readyToUse": true, "restoreSize": size, "creationTime": now(),
           "boundVolumeSnapshotContentName": content});
    if let Some(error) = error {
        status["error"] = error;
    }
    set_snapshot_status(&shared, &key, status);
}

fn set_snapshot_status(shared: &Shared, key: &Key, status: Value) {
    let vs = def("snapshot.storage.k8s.io", "volumesnapshots");
    if let Ok(mut object) = shared.store.get(vs, key) {
        object["status"] = status;
        if let Some(meta) = object["metadata"].as_object_mut() {
            meta.remove("resourceVersion");
        }
        let _ = shared.store.update(vs, key, object, Part::Status);
    }
}

fn owner_statefulset(pod: &Value) -> Option<String> {
    pod["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|o| o["kind"] == json!("StatefulSet"))
        .and_then(|o| o["name"].as_str().map(str::to_owned))
}

/// The claims of ordinal `ordinal` of a StatefulSet: each missing one is created from its
/// volumeClaimTemplate, EMPTY (kubernetes #42677), as the real controller does. Returns the
/// pod volumes that mount them.
fn ensure_claims(shared: &Shared, sts: &Value, ns: &str, ordinal: i64) -> Vec<Value> {
    let pvc_def = def("", "persistentvolumeclaims");
    let name = sts["metadata"]["name"].as_str().unwrap_or("");
    let template = &sts["spec"]["template"];
    let mut volumes = Vec::new();
    for vct in sts["spec"]["volumeClaimTemplates"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let template_name = vct["metadata"]["name"].as_str().unwrap_or("data");
        let claim = format!("{template_name}-{name}-{ordinal}");
        if shared
            .store
            .get(pvc_def, &Key::new(pvc_def, ns, &claim))
            .is_err()
        {
            let mut labels = template["metadata"]["labels"].clone();
            if let (Some(l), Some(extra)) = (
                labels.as_object_mut(),
                vct["metadata"]["labels"].as_object(),
            ) {
                l.extend(extra.clone());
            }
            let _ = shared.store.create(
                pvc_def,
                ns,
                json!({"metadata": {"name": claim, "labels": labels}, "spec": vct["spec"]}),
            );
        }
        volumes.push(json!({"name": template_name, "persistentVolumeClaim": {"claimName": claim}}));
    }
    volumes
}

fn ordinal_of(pod_name: &str) -> i64 {
    pod_name
        .rsplit('-')
        .next()
        .and_then(|o| o.parse::<i64>().ok())
        .unwrap_or(0)
}

fn reconcile_statefulset(shared: &Arc<Shared>, key: &Key) {
    let sts_def = def("apps", "statefulsets");
    let pod_def = def("", "pods");
    let Ok(sts) = shared.store.get(sts_def, key) else {
        return;
    };
    let desired = sts["spec"]["replicas"].as_i64().unwrap_or(1).max(0);
    let name = key.name.clone();
    let ns = key.namespace.clone();
    let template = &sts["spec"]["template"];
    let delay = shared
        .controllers
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .pod_startup;

    for ordinal in 0..desired {
        let pod_name = format!("{name}-{ordinal}");
        if let Ok(pod) = shared
            .store
            .get(pod_def, &Key::new(pod_def, &ns, &pod_name))
        {
            // A pending pod gets the claims it is missing (the real controller does so since
            // Kubernetes 1.27), a terminating one nothing.
            if pod["status"]["phase"] == json!("Pending")
                && pod["metadata"]["deletionTimestamp"].is_null()
            {
                ensure_claims(shared, &sts, &ns, ordinal);
            }
            continue;
        }
        let mut volumes = template["spec"]["volumes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for volume in ensure_claims(shared, &sts, &ns, ordinal) {
            volumes.retain(|v| v["name"] != volume["name"]);
            volumes.push(volume);
        }
        let mut labels = template["metadata"]["labels"].clone();
        if !labels.is_object() {
            labels = json!({});
        }
        labels["statefulset.kubernetes.io/pod-name"] = json!(pod_name);
        let mut spec = template["spec"].clone();
        spec["volumes"] = json!(volumes);
        let pod = json!({
            "metadata": {"name": pod_name, "labels": labels, "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "StatefulSet", "name": name, "uid": sts["metadata"]["uid"], "controller": true}]},
            "spec": spec,
            "status": {"phase": "Pending"},
        });
        // Started by `start_pods` once every claim it mounts is Bound.
        let _ = shared.store.create(pod_def, &ns, pod);
    }
    // Scale down: pods at ordinals at or above the desired count terminate after the delay.
    let (pods, _) = shared.store.list(pod_def, Some(&ns), &Selectors::default());
    for pod in pods {
        if owner_statefulset(&pod).as_deref() != Some(name.as_str()) {
            continue;
        }
        let pod_name = pod["metadata"]["name"].as_str().unwrap_or("").to_owned();
        if ordinal_of(&pod_name) >= desired && pod["metadata"]["deletionTimestamp"].is_null() {
            let key = Key::new(pod_def, &ns, &pod_name);
            let _ = shared.store.mark_deleted(pod_def, &key);
            let shared = shared.clone();
            let uid = pod["metadata"]["uid"].clone();
            tokio::spawn(async move {
                if storage::sleep(&shared, delay).await {
                    let _ = shared.store.delete_if(pod_def, &key, None, uid.as_str());
                }
            });
        }
    }
    update_statefulset_status(shared, key);
}

/// The node StatefulSet pods are scheduled to.
const NODE: &str = "worker-0";

/// The scheduler's and kubelet's side for StatefulSet pods: a Pending pod is scheduled once every claim it
/// mounts exists and is Bound (until then it says why not, as the scheduler does), and after
/// `pod_startup` it is Running and Ready (or Running and not Ready with `pods_never_ready`).
fn start_pods(shared: &Arc<Shared>) {
    let pod_def = def("", "pods");
    let pvc_def = def("", "persistentvolumeclaims");
    let (pods, _) = shared.store.list(pod_def, None, &Selectors::default());
    for pod in pods {
        if owner_statefulset(&pod).is_none()
            || !pod["metadata"]["deletionTimestamp"].is_null()
            || pod["status"]["phase"] != json!("Pending")
        {
            continue;
        }
        let scheduled = pod["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == json!("PodScheduled") && c["status"] == json!("True"))
        });
        if scheduled {
            continue; // starting
        }
        let ns = pod["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let name = pod["metadata"]["name"].as_str().unwrap_or("").to_owned();
        let unbound = storage::claims_of(&pod).into_iter().find_map(|claim| {
            match shared.store.get(pvc_def, &Key::new(pvc_def, &ns, &claim)) {
                Err(_) => Some(format!("persistentvolumeclaim \"{claim}\" not found")),
                Ok(c) if !c["metadata"]["deletionTimestamp"].is_null() => Some(format!(
                    "persistentvolumeclaim \"{claim}\" is being deleted"
                )),
                Ok(c) if c["status"]["phase"] != json!("Bound") => Some(format!(
                    "0/1 nodes are available: pod has unbound PersistentVolumeClaim \"{claim}\""
                )),
                Ok(_) => None,
            }
        });
        let key = Key::new(pod_def, &ns, &name);
        if let Some(message) = unbound {
            let mut updated = pod.clone();
            updated["status"] = json!({"phase": "Pending", "conditions": [{"type": "PodScheduled",
                "status": "False", "reason": "Unschedulable", "message": message}]});
            let _ = shared.store.update(pod_def, &key, updated, Part::Status);
            continue;
        }
        // Scheduled: bound to the node, then started after `pod_startup`.
        let mut bound = pod.clone();
        bound["spec"]["nodeName"] = json!(NODE);
        let Ok(mut bound) = shared.store.update(pod_def, &key, bound, Part::Main) else {
            continue;
        };
        bound["status"] = json!({"phase": "Pending", "conditions": [{"type": "PodScheduled",
            "status": "True", "lastTransitionTime": now()}]});
        if shared
            .store
            .update(pod_def, &key, bound, Part::Status)
            .is_err()
        {
            continue;
        }
        let shared = shared.clone();
        let uid = pod["metadata"]["uid"].clone();
        tokio::spawn(async move {
            let (delay, never_ready) = {
                let config = shared.controllers.read().unwrap_or_else(|p| p.into_inner());
                (config.pod_startup, config.pods_never_ready)
            };
            if !storage::sleep(&shared, delay).await {
                return;
            }
            let Ok(mut pod) = shared.store.get(pod_def, &key) else {
                return;
            };
            if pod["metadata"]["uid"] != uid || !pod["metadata"]["deletionTimestamp"].is_null() {
                return;
            }
            let time = now();
            let ready = if never_ready { "False" } else { "True" };
            let mut conditions = vec![
                json!({"type": "PodScheduled", "status": "True", "lastTransitionTime": time}),
                json!({"type": "Initialized", "status": "True", "lastTransitionTime": time}),
                json!({"type": "ContainersReady", "status": ready, "lastTransitionTime": time}),
                json!({"type": "Ready", "status": ready, "lastTransitionTime": time}),
            ];
            if never_ready {
                for c in &mut conditions[2..] {
                    c["reason"] = json!("ContainersNotReady");
                    c["message"] =
                        json!("containers with unready status: [readiness probe failed]");
                }
            }
            pod["status"] = json!({"phase": "Running", "podIP": "10.128.0.10", "hostIP": "10.0.0.10",
                "startTime": time, "conditions": conditions});
            let _ = shared.store.update(pod_def, &key, pod, Part::Status);
        });
    }
}

fn update_statefulset_status(shared: &Shared, key: &Key) {
    let sts_def = def("apps", "statefulsets");
    let pod_def = def("", "pods");
    let Ok(mut sts) = shared.store.get(sts_def, key) else {
        return;
    };
    let (pods, _) = shared
        .store
        .list(pod_def, Some(&key.namespace), &Selectors::default());
    let owned: Vec<_> = pods
        .iter()
        .filter(|p| owner_statefulset(p).as_deref() == Some(key.name.as_str()))
        .collect();
    let ready = owned
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter(|p| {
            p["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == json!("Ready") && c["status"] == json!("True"))
            })
        })
        .count();
    sts["status"] = json!({
        "observedGeneration": sts["metadata"]["generation"], "replicas": owned.len(), "readyReplicas": ready,
        "currentReplicas": owned.len(), "availableReplicas": ready, "updatedReplicas": owned.len(),
    });
    if let Some(meta) = sts["metadata"].as_object_mut() {
        meta.remove("resourceVersion");
    }
    let _ = shared.store.update(sts_def, key, sts, Part::Status);
}
