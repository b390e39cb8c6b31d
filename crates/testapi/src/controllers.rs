//! Simulated controllers: the CSI snapshotter, the StatefulSet controller with its pods and
//! claims, and PVC binding (including claims restored from a snapshot).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::Shared;
use crate::resources::{self, ResourceDef};
use crate::select::Selectors;
use crate::store::{EventType, Key, Part};

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
    /// How long a new pod is Pending before Running and Ready (and a removed one terminates).
    pub pod_startup: Duration,
    /// Size reported as `restoreSize` when the source PVC asks for none.
    pub default_size: String,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            snapshots: SnapshotBehavior::ReadyAfter(Duration::from_millis(200)),
            pod_startup: Duration::from_millis(100),
            default_size: "10Gi".into(),
        }
    }
}

fn def(group: &str, plural: &str) -> &'static ResourceDef {
    resources::RESOURCES
        .iter()
        .find(|r| r.group == group && r.plural == plural)
        .unwrap_or(&resources::RESOURCES[0])
}

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Runs until the server shuts down.
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut events = shared.store.subscribe();
    loop {
        let event = tokio::select! {
            () = shared.shutdown.cancelled() => return,
            event = events.recv() => match event {
                Ok(event) => event,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return,
            },
        };
        let upsert = matches!(event.kind, EventType::Added | EventType::Modified);
        match (event.key.group.as_str(), event.key.plural.as_str()) {
            ("snapshot.storage.k8s.io", "volumesnapshots") if event.kind == EventType::Added => {
                tokio::spawn(snapshot(shared.clone(), event.key.clone()));
            }
            ("snapshot.storage.k8s.io", "volumesnapshots")
                if upsert && event.object["status"]["readyToUse"] == json!(true) =>
            {
                bind_restored_claims(&shared, &event.key.namespace, &event.key.name);
            }
            ("", "persistentvolumeclaims") if event.kind == EventType::Added => {
                bind_claim(&shared, &event.key, &event.object)
            }
            ("apps", "statefulsets") if upsert => reconcile_statefulset(&shared, &event.key),
            ("", "pods") if upsert || event.kind == EventType::Deleted => {
                if let Some(owner) = owner_statefulset(&event.object) {
                    let key = Key {
                        group: "apps".into(),
                        plural: "statefulsets".into(),
                        namespace: event.key.namespace.clone(),
                        name: owner,
                    };
                    update_statefulset_status(&shared, &key);
                }
            }
            _ => {}
        }
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
    tokio::time::sleep(delay).await;
    let Ok(object) = shared.store.get(vs, &key) else {
        return;
    };
    let source = object["spec"]["source"]["persistentVolumeClaimName"]
        .as_str()
        .unwrap_or("");
    let pvc = def("", "persistentvolumeclaims");
    let size = shared
        .store
        .get(pvc, &Key::new(pvc, &key.namespace, source))
        .ok()
        .and_then(|p| {
            p["spec"]["resources"]["requests"]["storage"]
                .as_str()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| behavior.default_size.clone());
    let mut status = json!({"readyToUse": true, "restoreSize": size, "creationTime": now(),
           "boundVolumeSnapshotContentName": format!("snapcontent-{}", object["metadata"]["uid"].as_str().unwrap_or(""))});
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

fn set_phase(shared: &Shared, key: &Key, phase: &str) {
    let pvc = def("", "persistentvolumeclaims");
    if let Ok(mut claim) = shared.store.get(pvc, key) {
        claim["status"] = json!({"phase": phase, "accessModes": claim["spec"]["accessModes"],
                                 "capacity": {"storage": claim["spec"]["resources"]["requests"]["storage"]}});
        if let Some(meta) = claim["metadata"].as_object_mut() {
            meta.remove("resourceVersion");
        }
        let _ = shared.store.update(pvc, key, claim, Part::Status);
    }
}

/// A new claim binds at once, unless it restores a snapshot that is not ready yet.
fn bind_claim(shared: &Shared, key: &Key, claim: &Value) {
    let source = &claim["spec"]["dataSource"];
    if source["kind"] == json!("VolumeSnapshot") {
        let vs = def("snapshot.storage.k8s.io", "volumesnapshots");
        let name = source["name"].as_str().unwrap_or("");
        let ready = shared
            .store
            .get(vs, &Key::new(vs, &key.namespace, name))
            .is_ok_and(|s| s["status"]["readyToUse"] == json!(true));
        set_phase(shared, key, if ready { "Bound" } else { "Pending" });
    } else {
        set_phase(shared, key, "Bound");
    }
}

fn bind_restored_claims(shared: &Shared, namespace: &str, snapshot: &str) {
    let pvc = def("", "persistentvolumeclaims");
    let (claims, _) = shared
        .store
        .list(pvc, Some(namespace), &Selectors::default());
    for claim in claims {
        let source = &claim["spec"]["dataSource"];
        if source["kind"] == json!("VolumeSnapshot")
            && source["name"] == json!(snapshot)
            && claim["status"]["phase"] != json!("Bound")
        {
            let name = claim["metadata"]["name"].as_str().unwrap_or("");
            set_phase(shared, &Key::new(pvc, namespace, name), "Bound");
        }
    }
}

fn owner_statefulset(pod: &Value) -> Option<String> {
    pod["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|o| o["kind"] == json!("StatefulSet"))
        .and_then(|o| o["name"].as_str().map(str::to_owned))
}

fn reconcile_statefulset(shared: &Arc<Shared>, key: &Key) {
    let sts_def = def("apps", "statefulsets");
    let pod_def = def("", "pods");
    let pvc_def = def("", "persistentvolumeclaims");
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
        if shared
            .store
            .get(pod_def, &Key::new(pod_def, &ns, &pod_name))
            .is_ok()
        {
            continue;
        }
        let mut volumes = template["spec"]["volumes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for vct in sts["spec"]["volumeClaimTemplates"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let template_name = vct["metadata"]["name"].as_str().unwrap_or("data");
            let claim = format!("{template_name}-{name}-{ordinal}");
            if shared
                .store
                .get(pvc_def, &Key::new(pvc_def, &ns, &claim))
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
                    &ns,
                    json!({"metadata": {"name": claim, "labels": labels}, "spec": vct["spec"]}),
                );
            }
            volumes.retain(|v| v["name"] != json!(template_name));
            volumes.push(
                json!({"name": template_name, "persistentVolumeClaim": {"claimName": claim}}),
            );
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
        if shared.store.create(pod_def, &ns, pod).is_ok() {
            let shared = shared.clone();
            let key = Key::new(pod_def, &ns, &pod_name);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                if let Ok(mut pod) = shared.store.get(pod_def, &key) {
                    pod["status"] = json!({"phase": "Running", "podIP": "10.128.0.10", "startTime": now(),
                        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now()}]});
                    if let Some(meta) = pod["metadata"].as_object_mut() {
                        meta.remove("resourceVersion");
                    }
                    let _ = shared.store.update(pod_def, &key, pod, Part::Status);
                }
            });
        }
    }
    // Scale down: pods at ordinals at or above the desired count terminate after the delay.
    let (pods, _) = shared.store.list(pod_def, Some(&ns), &Selectors::default());
    for pod in pods {
        if owner_statefulset(&pod).as_deref() != Some(name.as_str()) {
            continue;
        }
        let pod_name = pod["metadata"]["name"].as_str().unwrap_or("").to_owned();
        let ordinal = pod_name
            .rsplit('-')
            .next()
            .and_then(|o| o.parse::<i64>().ok())
            .unwrap_or(0);
        if ordinal >= desired && pod["metadata"]["deletionTimestamp"].is_null() {
            let mut terminating = pod.clone();
            terminating["metadata"]["deletionTimestamp"] = json!(now());
            terminating["metadata"]
                .as_object_mut()
                .map(|m| m.remove("resourceVersion"));
            let key = Key::new(pod_def, &ns, &pod_name);
            let _ = shared.store.update(pod_def, &key, terminating, Part::Main);
            let shared = shared.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = shared.store.delete(pod_def, &key);
            });
        }
    }
    update_statefulset_status(shared, key);
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
