//! Storage as a volume restore sees it: StorageClasses, provisioning and binding (also from a
//! snapshot), claim protection, reclaim policies, snapshots that die with their volume,
//! StatefulSet pods that wait for their claims, injected faults and the event log. kubectl is
//! the independent witness of the claims' and volumes' states.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Event, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use litemaas_testapi::{
    ControllerConfig, EventType, IN_TREE_PROVISIONER, LoggedEvent, SnapshotBehavior, TestApiServer,
};
use serde_json::{Value, json};

const NS: &str = "litemaas";
const STS: &str = "litellm-postgres";
const CLAIM: &str = "postgres-storage-litellm-postgres-0";
const RBD: &str = "openshift-storage.rbd.csi.ceph.com";
const CEPHFS: &str = "openshift-storage.cephfs.csi.ceph.com";

async fn server(config: ControllerConfig) -> TestApiServer {
    let server = TestApiServer::start_with(config).await.unwrap();
    server.create_namespace(NS).unwrap();
    server
}

/// Waits up to 10 s for `check`; panics naming `what`.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..400 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("not reached in 10 s: {what}");
}

fn kubectl(server: &TestApiServer, args: &[&str]) -> String {
    let out = server.kubectl().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn claim_json(name: &str, size: &str) -> Value {
    json!({"metadata": {"name": name, "labels": {"app": "litellm-postgres"}},
           "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}})
}

fn with_class(mut claim: Value, class: &str) -> Value {
    claim["spec"]["storageClassName"] = json!(class);
    claim
}

fn restored_from(mut claim: Value, snapshot: &str) -> Value {
    claim["spec"]["dataSource"] =
        json!({"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": snapshot});
    claim
}

fn create_claim(server: &TestApiServer, claim: Value) -> Value {
    server
        .create("", "persistentvolumeclaims", NS, claim)
        .unwrap()
}

fn storage_class(server: &TestApiServer, name: &str, provisioner: &str, extra: Value) {
    let mut class = json!({"metadata": {"name": name}, "provisioner": provisioner});
    json_patch::merge(&mut class, &extra);
    server
        .create("storage.k8s.io", "storageclasses", "", class)
        .unwrap();
}

fn claim_of(server: &TestApiServer, name: &str) -> Option<Value> {
    server.get("", "persistentvolumeclaims", NS, name).ok()
}

fn phase(server: &TestApiServer, name: &str) -> String {
    claim_of(server, name)
        .map(|c| c["status"]["phase"].as_str().unwrap_or("").to_owned())
        .unwrap_or_default()
}

fn pv_of(server: &TestApiServer, name: &str) -> Option<Value> {
    server.get("", "persistentvolumes", "", name).ok()
}

async fn bound(server: &TestApiServer, name: &str) -> Value {
    eventually(&format!("claim {name} Bound"), || {
        phase(server, name) == "Bound"
    })
    .await;
    claim_of(server, name).unwrap()
}

fn snapshots(client: kube::Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshot");
    Api::namespaced_with(client, NS, &ApiResource::from_gvk(&gvk))
}

fn snapshot_json(name: &str, claim: &str, class: Option<&str>) -> Value {
    let mut vs = json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
        "metadata": {"name": name}, "spec": {"source": {"persistentVolumeClaimName": claim}}});
    if let Some(class) = class {
        vs["spec"]["volumeSnapshotClassName"] = json!(class);
    }
    vs
}

async fn ready_snapshot(server: &TestApiServer, name: &str) -> Value {
    eventually(&format!("snapshot {name} ready"), || {
        server
            .get("snapshot.storage.k8s.io", "volumesnapshots", NS, name)
            .is_ok_and(|s| s["status"]["readyToUse"] == json!(true))
    })
    .await;
    server
        .get("snapshot.storage.k8s.io", "volumesnapshots", NS, name)
        .unwrap()
}

/// Waits until claim `name` stays Pending with a reason containing `wanted`.
async fn pending_because(server: &TestApiServer, name: &str, wanted: &str) {
    eventually(&format!("claim {name} Pending because {wanted:?}"), || {
        server
            .pending_reason(NS, name)
            .is_some_and(|r| r.message.contains(wanted))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(phase(server, name), "Pending", "{name}");
}

fn statefulset_json(replicas: i32, class: Option<&str>) -> Value {
    let mut template_spec =
        json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}});
    if let Some(class) = class {
        template_spec["storageClassName"] = json!(class);
    }
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": STS},
        "spec": {"replicas": replicas, "serviceName": STS,
            "selector": {"matchLabels": {"app": "litellm-postgres"}},
            "template": {"metadata": {"labels": {"app": "litellm-postgres"}},
                         "spec": {"containers": [{"name": "postgres", "image": "postgres:15"}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "postgres-storage", "labels": {"app": "litellm-postgres"}},
                                      "spec": template_spec}]}})
}

fn pod_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == json!("Ready") && c["status"] == json!("True"))
    })
}

fn pod_of(server: &TestApiServer, name: &str) -> Option<Value> {
    server.get("", "pods", NS, name).ok()
}

/// Replays the log: the resourceVersions at which the StatefulSet asked for replicas while
/// `claim` did not exist (once the claim had first appeared).
fn absent_while_scaled_up(log: &[LoggedEvent], claim: &str) -> Vec<u64> {
    let (mut replicas, mut present, mut seen) = (0, false, false);
    let mut violations = Vec::new();
    for e in log {
        if e.is("statefulsets", NS, STS) {
            replicas = if e.kind == EventType::Deleted {
                0
            } else {
                e.object["spec"]["replicas"].as_i64().unwrap_or(1)
            };
        }
        if e.is("persistentvolumeclaims", NS, claim) {
            present = e.kind != EventType::Deleted;
            seen = true;
        }
        if seen && replicas > 0 && !present {
            violations.push(e.resource_version);
        }
    }
    violations
}

/// The data source of the claim `claim` that existed when the StatefulSet last went from 0
/// replicas to more.
fn source_when_scaled_up(log: &[LoggedEvent], claim: &str) -> Option<Value> {
    let (mut replicas, mut current, mut at_scale_up) = (0, None::<Value>, None);
    for e in log {
        if e.is("persistentvolumeclaims", NS, claim) {
            current = (e.kind != EventType::Deleted).then(|| e.object.clone());
        }
        if e.is("statefulsets", NS, STS) {
            let now = e.object["spec"]["replicas"].as_i64().unwrap_or(1);
            if replicas == 0 && now > 0 {
                at_scale_up = Some(
                    current
                        .as_ref()
                        .map(|c| c["spec"]["dataSource"].clone())
                        .unwrap_or(Value::Null),
                );
            }
            replicas = now;
        }
    }
    at_scale_up
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_discovers_volumes_storage_classes_snapshot_contents_and_events() {
    let server = server(ControllerConfig::default()).await;
    let resources = kubectl(&server, &["api-resources", "--no-headers"]);
    for (name, namespaced) in [
        ("persistentvolumes", "false"),
        ("storageclasses", "false"),
        ("volumesnapshotcontents", "false"),
        ("events", "true"),
    ] {
        assert!(
            resources
                .lines()
                .any(|l| l.starts_with(name) && l.split_whitespace().any(|w| w == namespaced)),
            "{name} missing or wrongly scoped:\n{resources}"
        );
    }
    create_claim(&server, claim_json("data", "1Gi"));
    bound(&server, "data").await;
    // Cluster-scoped listing, by short name too.
    let volumes = kubectl(&server, &["get", "pv", "-o", "name"]);
    assert!(volumes.starts_with("persistentvolume/pvc-"), "{volumes}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_claim_without_a_class_binds_at_once_to_a_provisioned_volume() {
    let server = server(ControllerConfig::default()).await;
    let made = create_claim(&server, claim_json("data", "5Gi"));
    let uid = made["metadata"]["uid"].as_str().unwrap();
    let pvc = bound(&server, "data").await;
    let pv_name = format!("pvc-{uid}");
    assert_eq!(pvc["spec"]["volumeName"], json!(pv_name));
    // kube-rs reads the typed objects.
    let client = server.client().await.unwrap();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), NS);
    let claim = claims.get("data").await.unwrap();
    let status = claim.status.unwrap();
    assert_eq!(status.capacity.unwrap()["storage"].0, "5Gi");
    assert_eq!(status.access_modes.unwrap(), ["ReadWriteOnce"]);
    let volumes: Api<PersistentVolume> = Api::all(client);
    let pv = volumes.get(&pv_name).await.unwrap();
    let spec = pv.spec.unwrap();
    assert_eq!(spec.capacity.unwrap()["storage"].0, "5Gi");
    assert_eq!(spec.access_modes.unwrap(), ["ReadWriteOnce"]);
    assert_eq!(
        spec.persistent_volume_reclaim_policy.as_deref(),
        Some("Delete")
    );
    assert_eq!(spec.storage_class_name, None);
    let claim_ref = spec.claim_ref.unwrap();
    assert_eq!(
        (
            claim_ref.namespace.as_deref(),
            claim_ref.name.as_deref(),
            claim_ref.uid.as_deref()
        ),
        (Some(NS), Some("data"), Some(uid))
    );
    let csi = spec.csi.unwrap();
    assert_eq!(csi.driver, IN_TREE_PROVISIONER);
    assert!(!csi.volume_handle.is_empty());
    assert_eq!(pv.status.unwrap().phase.as_deref(), Some("Bound"));
    // kubectl agrees.
    let seen = kubectl(
        &server,
        &[
            "get",
            "pv",
            &pv_name,
            "-o",
            "jsonpath={.status.phase} {.spec.claimRef.namespace}/{.spec.claimRef.name} {.spec.claimRef.uid} {.spec.capacity.storage}",
        ],
    );
    assert_eq!(seen, format!("Bound {NS}/data {uid} 5Gi"));
    let seen = kubectl(
        &server,
        &[
            "get",
            "pvc",
            "data",
            "-n",
            NS,
            "-o",
            "jsonpath={.status.phase} {.spec.volumeName}",
        ],
    );
    assert_eq!(seen, format!("Bound {pv_name}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_default_storage_class_provisions_claims_that_name_none() {
    let server = server(ControllerConfig {
        snapshots: SnapshotBehavior::Never,
        ..ControllerConfig::default()
    })
    .await;
    // Made before there is a default class, and held Pending by its snapshot: it gets the
    // default class once there is one (the retroactive default StorageClass).
    create_claim(&server, restored_from(claim_json("early", "1Gi"), "snap"));
    pending_because(&server, "early", "not found").await;
    assert!(claim_of(&server, "early").unwrap()["spec"]["storageClassName"].is_null());
    storage_class(&server, "cephfs", CEPHFS, json!({}));
    storage_class(
        &server,
        "rbd",
        RBD,
        json!({"metadata": {"annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
               "reclaimPolicy": "Retain"}),
    );
    // Set at admission: the create's answer names it already.
    let made = create_claim(&server, claim_json("data", "1Gi"));
    assert_eq!(made["spec"]["storageClassName"], json!("rbd"));
    let claim = bound(&server, "data").await;
    assert_eq!(claim["spec"]["storageClassName"], json!("rbd"));
    let pv = pv_of(&server, claim["spec"]["volumeName"].as_str().unwrap()).unwrap();
    assert_eq!(pv["spec"]["storageClassName"], json!("rbd"));
    assert_eq!(pv["spec"]["csi"]["driver"], json!(RBD));
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], json!("Retain"));
    eventually("the early claim gets the default class", || {
        claim_of(&server, "early").unwrap()["spec"]["storageClassName"] == json!("rbd")
    })
    .await;
    server
        .create(
            "snapshot.storage.k8s.io",
            "volumesnapshots",
            NS,
            snapshot_json("snap", "data", None),
        )
        .unwrap();
    let snapshots = snapshots(server.client().await.unwrap());
    snapshots
        .patch_status(
            "snap",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"readyToUse": true, "restoreSize": "1Gi"}})),
        )
        .await
        .unwrap();
    let early = bound(&server, "early").await;
    let pv = pv_of(&server, early["spec"]["volumeName"].as_str().unwrap()).unwrap();
    assert_eq!(pv["spec"]["csi"]["driver"], json!(RBD));
    // A claim naming its class gets that one.
    create_claim(&server, with_class(claim_json("shared", "1Gi"), "cephfs"));
    let claim = bound(&server, "shared").await;
    let pv = pv_of(&server, claim["spec"]["volumeName"].as_str().unwrap()).unwrap();
    assert_eq!(pv["spec"]["csi"]["driver"], json!(CEPHFS));
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], json!("Delete"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_claim_whose_class_does_not_exist_stays_pending_with_a_reason() {
    let server = server(ControllerConfig::default()).await;
    create_claim(&server, with_class(claim_json("data", "1Gi"), "gp3"));
    pending_because(
        &server,
        "data",
        "storageclass.storage.k8s.io \"gp3\" not found",
    )
    .await;
    let reason = server.pending_reason(NS, "data").unwrap();
    assert_eq!(
        (reason.kind.as_str(), reason.reason.as_str()),
        ("Warning", "ProvisioningFailed")
    );
    // The reason is a core Event on the claim, for kube-rs and kubectl alike.
    let events: Api<Event> = Api::namespaced(server.client().await.unwrap(), NS);
    let listed = events
        .list(&ListParams::default().fields("involvedObject.name=data"))
        .await
        .unwrap();
    assert!(
        listed
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("ProvisioningFailed"))
    );
    let seen = kubectl(
        &server,
        &[
            "get",
            "events",
            "-n",
            NS,
            "--field-selector",
            "involvedObject.name=data",
            "-o",
            "jsonpath={.items[*].reason}",
        ],
    );
    assert_eq!(seen, "ProvisioningFailed");
    // The class appears: the claim binds.
    storage_class(&server, "gp3", "ebs.csi.aws.com", json!({}));
    bound(&server, "data").await;
    assert_eq!(server.pending_reason(NS, "data"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn wait_for_first_consumer_binds_only_when_a_running_pod_mounts_the_claim() {
    let server = server(ControllerConfig::default()).await;
    storage_class(
        &server,
        "local",
        "local.csi.example.com",
        json!({"volumeBindingMode": "WaitForFirstConsumer"}),
    );
    let mounting = |pod: &str, claim: &str| {
        json!({"metadata": {"name": pod, "finalizers": ["example.com/hold"]},
               "spec": {"containers": [{"name": "c"}],
                        "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": claim}}]}})
    };
    // No consumer: a pod that mounts another claim, one that mounts it but is terminating (made
    // so before the claim exists), and one that mounts it but has ended.
    server
        .create("", "pods", NS, mounting("other", "elsewhere"))
        .unwrap();
    server
        .create("", "pods", NS, mounting("leaving", "data"))
        .unwrap();
    let marked = server.delete("", "pods", NS, "leaving").unwrap();
    assert!(marked["metadata"]["deletionTimestamp"].is_string());
    let mut ended = mounting("ended", "data");
    ended["status"] = json!({"phase": "Succeeded"});
    server.create("", "pods", NS, ended).unwrap();
    create_claim(&server, with_class(claim_json("data", "1Gi"), "local"));
    pending_because(&server, "data", "waiting for first consumer").await;
    assert_eq!(
        server.pending_reason(NS, "data").unwrap().reason,
        "WaitForFirstConsumer"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(phase(&server, "data"), "Pending");
    // A consumer.
    server
        .create("", "pods", NS, mounting("consumer", "data"))
        .unwrap();
    bound(&server, "data").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restored_claim_binds_only_once_its_snapshot_exists_and_is_ready() {
    let server = server(ControllerConfig {
        snapshots: SnapshotBehavior::Never,
        ..ControllerConfig::default()
    })
    .await;
    let client = server.client().await.unwrap();
    create_claim(
        &server,
        restored_from(claim_json("restored", "10Gi"), "snap"),
    );
    pending_because(
        &server,
        "restored",
        "volumesnapshots.snapshot.storage.k8s.io \"snap\" not found",
    )
    .await;
    let api = snapshots(client);
    let vs: DynamicObject = serde_json::from_value(snapshot_json("snap", "source", None)).unwrap();
    api.create(&PostParams::default(), &vs).await.unwrap();
    pending_because(&server, "restored", "snapshot snap is not Ready").await;
    assert_eq!(
        server.pending_reason(NS, "restored").unwrap().reason,
        "ProvisioningFailed"
    );
    // The snapshotter (here the test) reports it ready.
    api.patch_status(
        "snap",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"readyToUse": true, "restoreSize": "10Gi"}})),
    )
    .await
    .unwrap();
    let claim = bound(&server, "restored").await;
    let pv = pv_of(&server, claim["spec"]["volumeName"].as_str().unwrap()).unwrap();
    assert_eq!(pv["status"]["phase"], json!("Bound"));
    // The log shows the order: ready first, bound after.
    let log = server.event_log();
    let ready_at = log
        .iter()
        .find(|e| {
            e.is("volumesnapshots", NS, "snap") && e.object["status"]["readyToUse"] == json!(true)
        })
        .unwrap()
        .resource_version;
    let bound_at = log
        .iter()
        .find(|e| {
            e.is("persistentvolumeclaims", NS, "restored")
                && e.object["status"]["phase"] == json!("Bound")
        })
        .unwrap()
        .resource_version;
    assert!(ready_at < bound_at);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restored_claim_smaller_than_the_snapshot_stays_pending() {
    let server = server(ControllerConfig::default()).await;
    create_claim(&server, claim_json("source", "10Gi"));
    bound(&server, "source").await;
    server
        .create(
            "snapshot.storage.k8s.io",
            "volumesnapshots",
            NS,
            snapshot_json("snap", "source", None),
        )
        .unwrap();
    let snap = ready_snapshot(&server, "snap").await;
    assert_eq!(snap["status"]["restoreSize"], json!("10Gi"));
    // 10G (decimal) is less than 10Gi.
    create_claim(
        &server,
        restored_from(claim_json("too-small", "10G"), "snap"),
    );
    pending_because(
        &server,
        "too-small",
        "requested volume size 10000000000 is less than the size 10737418240 for the source snapshot snap",
    )
    .await;
    // The same size in other units, and a larger one, bind.
    create_claim(
        &server,
        restored_from(claim_json("same", "10240Mi"), "snap"),
    );
    create_claim(&server, restored_from(claim_json("larger", "11Gi"), "snap"));
    bound(&server, "same").await;
    let larger = bound(&server, "larger").await;
    assert_eq!(larger["status"]["capacity"]["storage"], json!("11Gi"));
    assert_eq!(phase(&server, "too-small"), "Pending");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restored_claim_whose_provisioner_is_not_the_snapshot_driver_stays_pending() {
    let server = server(ControllerConfig::default()).await;
    storage_class(&server, "rbd", RBD, json!({}));
    storage_class(&server, "cephfs", CEPHFS, json!({}));
    server
        .create(
            "snapshot.storage.k8s.io",
            "volumesnapshotclasses",
            "",
            json!({"metadata": {"name": "rbd-snapclass"}, "driver": RBD, "deletionPolicy": "Delete"}),
        )
        .unwrap();
    create_claim(&server, with_class(claim_json("source", "10Gi"), "rbd"));
    let source = bound(&server, "source").await;
    server
        .create(
            "snapshot.storage.k8s.io",
            "volumesnapshots",
            NS,
            snapshot_json("snap", "source", Some("rbd-snapclass")),
        )
        .unwrap();
    let snap = ready_snapshot(&server, "snap").await;
    // The content records the driver and the source volume.
    let content_name = snap["status"]["boundVolumeSnapshotContentName"]
        .as_str()
        .unwrap();
    let content = server
        .get(
            "snapshot.storage.k8s.io",
            "volumesnapshotcontents",
            "",
            content_name,
        )
        .unwrap();
    let source_pv = pv_of(&server, source["spec"]["volumeName"].as_str().unwrap()).unwrap();
    assert_eq!(content["spec"]["driver"], json!(RBD));
    assert_eq!(
        content["spec"]["source"]["volumeHandle"],
        source_pv["spec"]["csi"]["volumeHandle"]
    );
    assert_eq!(content["spec"]["volumeSnapshotRef"]["name"], json!("snap"));

    create_claim(
        &server,
        with_class(
            restored_from(claim_json("wrong-driver", "10Gi"), "snap"),
            "cephfs",
        ),
    );
    pending_because(
        &server,
        "wrong-driver",
        &format!(
            "snapshot snap was taken by CSI driver {RBD}, which is not the provisioner {CEPHFS}"
        ),
    )
    .await;
    create_claim(
        &server,
        with_class(
            restored_from(claim_json("right-driver", "10Gi"), "snap"),
            "rbd",
        ),
    );
    bound(&server, "right-driver").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_claim_a_pod_mounts_waits_until_the_pod_is_gone() {
    let server = server(ControllerConfig::default()).await;
    create_claim(&server, claim_json("data", "1Gi"));
    let claim = bound(&server, "data").await;
    let pv_name = claim["spec"]["volumeName"].as_str().unwrap().to_owned();
    assert_eq!(
        claim["metadata"]["finalizers"],
        json!(["kubernetes.io/pvc-protection"])
    );
    server
        .create(
            "",
            "pods",
            NS,
            json!({"metadata": {"name": "db-0"}, "spec": {"containers": [{"name": "c"}],
              "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "data"}}]},
              "status": {"phase": "Running"}}),
        )
        .unwrap();
    kubectl(
        &server,
        &["delete", "pvc", "data", "-n", NS, "--wait=false"],
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Still there, terminating, and still bound to its volume.
    let seen = kubectl(
        &server,
        &[
            "get",
            "pvc",
            "data",
            "-n",
            NS,
            "-o",
            "jsonpath={.status.phase} {.metadata.finalizers[0]}",
        ],
    );
    assert_eq!(seen, "Bound kubernetes.io/pvc-protection");
    assert!(claim_of(&server, "data").unwrap()["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(
        pv_of(&server, &pv_name).unwrap()["status"]["phase"],
        json!("Bound")
    );
    // A new claim of the same name cannot be made meanwhile.
    let err = server
        .create("", "persistentvolumeclaims", NS, claim_json("data", "1Gi"))
        .unwrap_err();
    assert_eq!((err.code, err.reason), (409, "AlreadyExists"));
    // The pod goes: so does the claim, then (reclaim policy Delete) its volume.
    let pods: Api<Pod> = Api::namespaced(server.client().await.unwrap(), NS);
    pods.delete("db-0", &DeleteParams::default()).await.unwrap();
    eventually("the claim gone", || claim_of(&server, "data").is_none()).await;
    eventually("its volume gone", || pv_of(&server, &pv_name).is_none()).await;
    let out = server
        .kubectl()
        .args(["get", "pv", &pv_name])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    // The volume was Released before it went.
    let log = server.event_log();
    let phases: Vec<&str> = log
        .iter()
        .filter(|e| e.is("persistentvolumes", "", &pv_name))
        .map(|e| e.object["status"]["phase"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(phases.first(), Some(&"Bound"));
    assert!(phases.contains(&"Released"), "{phases:?}");
    assert_eq!(
        log.iter()
            .rfind(|e| e.is("persistentvolumes", "", &pv_name))
            .unwrap()
            .kind,
        EventType::Deleted
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_released_volume_is_deleted_or_kept_as_its_reclaim_policy_says() {
    let server = server(ControllerConfig::default()).await;
    create_claim(&server, claim_json("scratch", "1Gi"));
    let kept = create_claim(&server, claim_json("kept", "1Gi"));
    let scratch_pv = bound(&server, "scratch").await["spec"]["volumeName"]
        .as_str()
        .unwrap()
        .to_owned();
    let kept_pv = bound(&server, "kept").await["spec"]["volumeName"]
        .as_str()
        .unwrap()
        .to_owned();
    kubectl(
        &server,
        &[
            "patch",
            "pv",
            &kept_pv,
            "-p",
            r#"{"spec":{"persistentVolumeReclaimPolicy":"Retain"}}"#,
        ],
    );
    kubectl(&server, &["delete", "pvc", "scratch", "kept", "-n", NS]);
    assert!(claim_of(&server, "kept").is_none());
    eventually("the Delete volume gone", || {
        pv_of(&server, &scratch_pv).is_none()
    })
    .await;
    eventually("the Retain volume Released", || {
        pv_of(&server, &kept_pv).unwrap()["status"]["phase"] == json!("Released")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = kubectl(
        &server,
        &[
            "get",
            "pv",
            &kept_pv,
            "-o",
            "jsonpath={.status.phase} {.spec.persistentVolumeReclaimPolicy} {.spec.claimRef.name} {.spec.claimRef.uid}",
        ],
    );
    assert_eq!(
        seen,
        format!(
            "Released Retain kept {}",
            kept["metadata"]["uid"].as_str().unwrap()
        )
    );
    // A new claim of the same name gets a new volume; the retained one stays Released.
    let again = create_claim(&server, claim_json("kept", "1Gi"));
    let claim = bound(&server, "kept").await;
    assert_eq!(
        claim["spec"]["volumeName"],
        json!(format!(
            "pvc-{}",
            again["metadata"]["uid"].as_str().unwrap()
        ))
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        pv_of(&server, &kept_pv).unwrap()["status"]["phase"],
        json!("Released")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_claim_naming_a_retained_volume_binds_once_the_volume_is_freed() {
    let server = server(ControllerConfig::default()).await;
    let old = create_claim(&server, claim_json("data", "1Gi"));
    let pv_name = bound(&server, "data").await["spec"]["volumeName"]
        .as_str()
        .unwrap()
        .to_owned();
    kubectl(
        &server,
        &[
            "patch",
            "pv",
            &pv_name,
            "-p",
            r#"{"spec":{"persistentVolumeReclaimPolicy":"Retain"}}"#,
        ],
    );
    kubectl(&server, &["delete", "pvc", "data", "-n", NS]);
    eventually("Released", || {
        pv_of(&server, &pv_name).unwrap()["status"]["phase"] == json!("Released")
    })
    .await;
    // A copy of the old claim, with its bind-completed annotation and volumeName: the volume
    // still belongs to the old claim (uid), so the copy is misbound: Lost.
    let mut copy = claim_json("copy", "1Gi");
    copy["metadata"]["annotations"] = old["metadata"]["annotations"].clone();
    copy["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"] = json!("yes");
    copy["spec"]["volumeName"] = json!(pv_name);
    create_claim(&server, copy);
    eventually("the copy Lost", || phase(&server, "copy") == "Lost").await;
    assert_eq!(
        server.pending_reason(NS, "copy").unwrap().reason,
        "ClaimMisbound"
    );
    // A claim that names the volume stays Pending while the volume is claimed by the old uid.
    let mut named = claim_json("data", "1Gi");
    named["spec"]["volumeName"] = json!(pv_name);
    create_claim(&server, named);
    pending_because(&server, "data", "already bound to a different claim").await;
    // Freed (claimRef.uid removed: reserved for "data" by name): it binds.
    kubectl(
        &server,
        &[
            "patch",
            "pv",
            &pv_name,
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/spec/claimRef/uid"}]"#,
        ],
    );
    let claim = bound(&server, "data").await;
    assert_eq!(claim["spec"]["volumeName"], json!(pv_name));
    let pv = pv_of(&server, &pv_name).unwrap();
    assert_eq!(pv["spec"]["claimRef"]["uid"], claim["metadata"]["uid"]);
    assert_eq!(pv["status"]["phase"], json!("Bound"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_claims_spec_cannot_change_after_creation_except_its_size() {
    let server = server(ControllerConfig::default()).await;
    create_claim(&server, claim_json("data", "1Gi"));
    bound(&server, "data").await;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(server.client().await.unwrap(), NS);
    let err = claims
        .patch(
            "data",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"dataSource": {"apiGroup": "snapshot.storage.k8s.io",
                "kind": "VolumeSnapshot", "name": "snap"}}}),
            ),
        )
        .await
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("{err:?}")
    };
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert!(status.message.contains("spec is immutable after creation"));
    claims
        .patch(
            "data",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"resources": {"requests": {"storage": "2Gi"}}}})),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshots_die_with_their_volume_only_on_storage_that_says_so() {
    for (die, policy, survives) in [
        (true, "Delete", false),
        (true, "Retain", true),
        (false, "Delete", true),
    ] {
        let server = server(ControllerConfig {
            snapshots: SnapshotBehavior::ReadyAfter(Duration::from_millis(20)),
            snapshots_die_with_volume: die,
            ..ControllerConfig::default()
        })
        .await;
        create_claim(&server, claim_json("data", "1Gi"));
        let pv_name = bound(&server, "data").await["spec"]["volumeName"]
            .as_str()
            .unwrap()
            .to_owned();
        for name in ["monthly", "safety"] {
            server
                .create(
                    "snapshot.storage.k8s.io",
                    "volumesnapshots",
                    NS,
                    snapshot_json(name, "data", None),
                )
                .unwrap();
            ready_snapshot(&server, name).await;
        }
        // A snapshot of another volume is never touched.
        create_claim(&server, claim_json("other", "1Gi"));
        bound(&server, "other").await;
        server
            .create(
                "snapshot.storage.k8s.io",
                "volumesnapshots",
                NS,
                snapshot_json("unrelated", "other", None),
            )
            .unwrap();
        ready_snapshot(&server, "unrelated").await;

        kubectl(
            &server,
            &[
                "patch",
                "pv",
                &pv_name,
                "-p",
                &format!(r#"{{"spec":{{"persistentVolumeReclaimPolicy":"{policy}"}}}}"#),
            ],
        );
        kubectl(&server, &["delete", "pvc", "data", "-n", NS]);
        if policy == "Delete" {
            eventually("the volume gone", || pv_of(&server, &pv_name).is_none()).await;
        } else {
            eventually("the volume Released", || {
                pv_of(&server, &pv_name).unwrap()["status"]["phase"] == json!("Released")
            })
            .await;
        }
        if !survives {
            eventually("the snapshots of the volume gone", || {
                ["monthly", "safety"].iter().all(|name| {
                    server
                        .get("snapshot.storage.k8s.io", "volumesnapshots", NS, name)
                        .is_err()
                })
            })
            .await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let left = kubectl(&server, &["get", "volumesnapshots", "-n", NS, "-o", "name"]);
        let case = format!("die={die} policy={policy}");
        for name in ["monthly", "safety"] {
            assert_eq!(
                left.contains(&format!("/{name}\n")),
                survives,
                "{case}: {name} in {left:?}"
            );
        }
        assert!(left.contains("/unrelated\n"), "{case}: {left:?}");
        let contents = server
            .event_log()
            .into_iter()
            .filter(|e| e.plural == "volumesnapshotcontents" && e.kind == EventType::Deleted);
        assert_eq!(contents.count(), if survives { 0 } else { 2 }, "{case}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn statefulset_pods_start_only_once_their_claims_are_bound() {
    let server = server(ControllerConfig::default()).await;
    let sets: Api<StatefulSet> = Api::namespaced(server.client().await.unwrap(), NS);
    let sts: StatefulSet = serde_json::from_value(statefulset_json(1, Some("rbd"))).unwrap();
    sets.create(&PostParams::default(), &sts).await.unwrap();
    let pod = format!("{STS}-0");
    pending_because(
        &server,
        CLAIM,
        "storageclass.storage.k8s.io \"rbd\" not found",
    )
    .await;
    eventually("the pod says why it waits", || {
        pod_of(&server, &pod).is_some_and(|p| {
            p["status"]["conditions"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains(&format!("unbound PersistentVolumeClaim \"{CLAIM}\"")))
        })
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await; // > pod_startup
    let waiting = pod_of(&server, &pod).unwrap();
    assert_eq!(waiting["status"]["phase"], json!("Pending"));
    assert!(!pod_ready(&waiting));
    assert_eq!(
        sets.get(STS).await.unwrap().status.unwrap().ready_replicas,
        Some(0)
    );
    storage_class(&server, "rbd", RBD, json!({}));
    bound(&server, CLAIM).await;
    eventually("the pod Running and Ready", || {
        pod_of(&server, &pod)
            .is_some_and(|p| p["status"]["phase"] == json!("Running") && pod_ready(&p))
    })
    .await;
    eventually("readyReplicas 1", || {
        server.get("apps", "statefulsets", NS, STS).unwrap()["status"]["readyReplicas"] == json!(1)
    })
    .await;
    // It started after its claim was bound.
    let log = server.event_log();
    let bound_at = log
        .iter()
        .find(|e| {
            e.is("persistentvolumeclaims", NS, CLAIM)
                && e.object["status"]["phase"] == json!("Bound")
        })
        .unwrap()
        .resource_version;
    let running_at = log
        .iter()
        .find(|e| e.is("pods", NS, &pod) && e.object["status"]["phase"] == json!("Running"))
        .unwrap()
        .resource_version;
    assert!(bound_at < running_at);
}

#[tokio::test(flavor = "multi_thread")]
async fn pods_never_ready_keeps_statefulset_pods_running_but_not_ready() {
    let server = server(ControllerConfig {
        pods_never_ready: true,
        ..ControllerConfig::default()
    })
    .await;
    server
        .create("apps", "statefulsets", NS, statefulset_json(1, None))
        .unwrap();
    let pod = format!("{STS}-0");
    eventually("the pod Running", || {
        pod_of(&server, &pod).is_some_and(|p| p["status"]["phase"] == json!("Running"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let running = pod_of(&server, &pod).unwrap();
    assert!(!pod_ready(&running), "{running}");
    assert_eq!(
        server.get("apps", "statefulsets", NS, STS).unwrap()["status"]["readyReplicas"],
        json!(0)
    );
    let seen = kubectl(
        &server,
        &[
            "get",
            "pod",
            &pod,
            "-n",
            NS,
            "-o",
            "jsonpath={.status.phase} {.status.conditions[?(@.type==\"Ready\")].status}",
        ],
    );
    assert_eq!(seen, "Running False");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_claim_missing_while_replicas_are_above_zero_comes_back_empty_and_the_log_shows_it() {
    let server = server(ControllerConfig::default()).await;
    let client = server.client().await.unwrap();
    server
        .create("apps", "statefulsets", NS, statefulset_json(1, None))
        .unwrap();
    bound(&server, CLAIM).await;
    let first = claim_of(&server, CLAIM).unwrap();
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), NS);
    let scale = |n: i32| {
        let sets = sets.clone();
        async move {
            sets.patch_scale(
                STS,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": n}})),
            )
            .await
            .unwrap();
        }
    };
    scale(0).await;
    eventually("the pod gone", || {
        pod_of(&server, &format!("{STS}-0")).is_none()
    })
    .await;
    kubectl(&server, &["delete", "pvc", CLAIM, "-n", NS]);
    // The mistake: scaling up before the restored claim exists.
    scale(1).await;
    let replacement = bound(&server, CLAIM).await;
    assert_ne!(replacement["metadata"]["uid"], first["metadata"]["uid"]);
    assert!(
        replacement["spec"]["dataSource"].is_null(),
        "a fresh, empty claim"
    );
    let log = server.event_log();
    assert!(!absent_while_scaled_up(&log, CLAIM).is_empty());
    assert_eq!(source_when_scaled_up(&log, CLAIM), Some(Value::Null));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_claim_deleted_under_a_running_statefulset_is_replaced_by_an_empty_one_once_the_pod_goes()
{
    let server = server(ControllerConfig::default()).await;
    server
        .create("apps", "statefulsets", NS, statefulset_json(1, None))
        .unwrap();
    let pod = format!("{STS}-0");
    let first = bound(&server, CLAIM).await;
    let first_pv = first["spec"]["volumeName"].as_str().unwrap().to_owned();
    eventually("the pod Ready", || {
        pod_of(&server, &pod).is_some_and(|p| pod_ready(&p))
    })
    .await;
    assert_eq!(
        pod_of(&server, &pod).unwrap()["spec"]["nodeName"],
        json!("worker-0")
    );
    // The mistake: deleting the claim without scaling down. The running pod holds it.
    kubectl(&server, &["delete", "pvc", CLAIM, "-n", NS, "--wait=false"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = claim_of(&server, CLAIM).unwrap();
    assert!(held["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(held["metadata"]["uid"], first["metadata"]["uid"]);
    // The pod goes: the StatefulSet makes it again; the new pod, unscheduled, does not hold the
    // old claim, which goes; the pending pod then gets a fresh, EMPTY claim from the template.
    let pods: Api<Pod> = Api::namespaced(server.client().await.unwrap(), NS);
    pods.delete(&pod, &DeleteParams::default()).await.unwrap();
    eventually("a new claim of the same name, Bound", || {
        claim_of(&server, CLAIM).is_some_and(|c| {
            c["metadata"]["uid"] != first["metadata"]["uid"]
                && c["status"]["phase"] == json!("Bound")
        })
    })
    .await;
    let fresh = claim_of(&server, CLAIM).unwrap();
    assert!(fresh["spec"]["dataSource"].is_null());
    eventually("the new pod Ready", || {
        pod_of(&server, &pod).is_some_and(|p| pod_ready(&p))
    })
    .await;
    // The old volume (reclaim policy Delete) and its data are gone.
    eventually("the old volume gone", || {
        pv_of(&server, &first_pv).is_none()
    })
    .await;
    assert!(!absent_while_scaled_up(&server.event_log(), CLAIM).is_empty());
}

/// The restore a volume restore tool does, step by step, with kube-rs; then what the event log
/// proves about it.
#[tokio::test(flavor = "multi_thread")]
async fn a_volume_restore_done_in_order_keeps_the_claim_and_every_snapshot() {
    let server = server(ControllerConfig {
        snapshots: SnapshotBehavior::ReadyAfter(Duration::from_millis(50)),
        snapshots_die_with_volume: true,
        ..ControllerConfig::default()
    })
    .await;
    storage_class(
        &server,
        "rbd",
        RBD,
        json!({"metadata": {"annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
               "volumeBindingMode": "WaitForFirstConsumer", "allowVolumeExpansion": true}),
    );
    let client = server.client().await.unwrap();
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), NS);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), NS);
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let vs = snapshots(client.clone());
    server
        .create("apps", "statefulsets", NS, statefulset_json(1, None))
        .unwrap();
    let old = bound(&server, CLAIM).await;
    let old_pv = old["spec"]["volumeName"].as_str().unwrap().to_owned();
    // The backup to restore from, made months ago.
    vs.create(
        &PostParams::default(),
        &serde_json::from_value(snapshot_json("monthly", CLAIM, None)).unwrap(),
    )
    .await
    .unwrap();
    let monthly = ready_snapshot(&server, "monthly").await;
    let restore_size = monthly["status"]["restoreSize"]
        .as_str()
        .unwrap()
        .to_owned();

    // 1. Scale to 0 and wait for the pod to be gone.
    sets.patch_scale(
        STS,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 0}})),
    )
    .await
    .unwrap();
    eventually("the pod gone", || {
        pod_of(&server, &format!("{STS}-0")).is_none()
    })
    .await;
    // 2. A safety snapshot, ready.
    vs.create(
        &PostParams::default(),
        &serde_json::from_value(snapshot_json("safety", CLAIM, None)).unwrap(),
    )
    .await
    .unwrap();
    ready_snapshot(&server, "safety").await;
    // 3. Keep the volume.
    volumes
        .patch(
            &old_pv,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"persistentVolumeReclaimPolicy": "Retain"}})),
        )
        .await
        .unwrap();
    // 4. Delete the claim and wait until it is gone.
    claims
        .delete(CLAIM, &DeleteParams::default())
        .await
        .unwrap();
    eventually("the old claim gone", || claim_of(&server, CLAIM).is_none()).await;
    // 5. The same name, restored from the backup.
    let restored: PersistentVolumeClaim = serde_json::from_value(restored_from(
        with_class(claim_json(CLAIM, &restore_size), "rbd"),
        "monthly",
    ))
    .unwrap();
    claims
        .create(&PostParams::default(), &restored)
        .await
        .unwrap();
    // WaitForFirstConsumer: Pending until the pod comes back.
    pending_because(&server, CLAIM, "waiting for first consumer").await;
    // 6. Scale back up: the pod mounts the restored claim, which binds; the pod becomes Ready.
    sets.patch_scale(
        STS,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 1}})),
    )
    .await
    .unwrap();
    let new = bound(&server, CLAIM).await;
    eventually("the pod Ready", || {
        pod_of(&server, &format!("{STS}-0")).is_some_and(|p| pod_ready(&p))
    })
    .await;

    // What the event log proves.
    let log = server.event_log();
    assert_eq!(absent_while_scaled_up(&log, CLAIM), Vec::<u64>::new());
    assert_eq!(
        source_when_scaled_up(&log, CLAIM),
        Some(
            json!({"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "monthly"})
        )
    );
    // The claim was only deleted after the volume was set to Retain.
    let retained_at = log
        .iter()
        .find(|e| {
            e.is("persistentvolumes", "", &old_pv)
                && e.object["spec"]["persistentVolumeReclaimPolicy"] == json!("Retain")
        })
        .unwrap()
        .resource_version;
    let deleted_at = log
        .iter()
        .find(|e| e.is("persistentvolumeclaims", NS, CLAIM) && e.kind == EventType::Deleted)
        .unwrap()
        .resource_version;
    assert!(retained_at < deleted_at);
    // Nothing was lost: the old volume is Released with its claimRef, both snapshots remain,
    // and the new claim has a new volume.
    let kept = pv_of(&server, &old_pv).unwrap();
    assert_eq!(kept["status"]["phase"], json!("Released"));
    assert_eq!(kept["spec"]["claimRef"]["uid"], old["metadata"]["uid"]);
    assert_ne!(new["spec"]["volumeName"], json!(old_pv));
    let left = kubectl(&server, &["get", "volumesnapshots", "-n", NS, "-o", "name"]);
    assert_eq!(
        left,
        "volumesnapshot.snapshot.storage.k8s.io/monthly\nvolumesnapshot.snapshot.storage.k8s.io/safety\n"
    );
    assert!(
        !log.iter()
            .any(|e| e.plural == "volumesnapshots" && e.kind == EventType::Deleted)
    );
    // The controllers have settled: nothing changes any more.
    eventually("readyReplicas 1", || {
        server.get("apps", "statefulsets", NS, STS).unwrap()["status"]["readyReplicas"] == json!(1)
    })
    .await;
    let settled = server.event_log().len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later: Vec<_> = server.event_log().into_iter().skip(settled).collect();
    assert!(later.is_empty(), "still changing: {later:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn injected_faults_answer_with_a_status_and_change_nothing() {
    let server = server(ControllerConfig::default()).await;
    create_claim(&server, claim_json("data", "1Gi"));
    let pv_name = bound(&server, "data").await["spec"]["volumeName"]
        .as_str()
        .unwrap()
        .to_owned();
    let client = server.client().await.unwrap();
    // kube-rs 5 retries 429, 503 and 504 by default; this client does not, to see each answer.
    let mut config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(server.kubeconfig_path()).unwrap(),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    config.default_retry = false;
    let once: Api<PersistentVolume> = Api::all(kube::Client::try_from(config).unwrap());
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client, NS);
    let retain = Patch::Merge(json!({"spec": {"persistentVolumeReclaimPolicy": "Retain"}}));
    let api_status = |e: kube::Error| match e {
        kube::Error::Api(s) => *s,
        other => panic!("not an API error: {other:?}"),
    };
    let policy = || {
        pv_of(&server, &pv_name).unwrap()["spec"]["persistentVolumeReclaimPolicy"]
            .as_str()
            .unwrap()
            .to_owned()
    };

    // A status fault matches neither the main resource nor a GET.
    server.fail_next("PATCH", "persistentvolumes", Some("status"), 1, 500);
    server.fail_next("patch", "persistentvolumes", None, 1, 500);
    once.get(&pv_name).await.unwrap();
    let status = api_status(
        once.patch(&pv_name, &PatchParams::default(), &retain)
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (status.code, status.reason.as_str(), status.status),
        (
            500,
            "InternalError",
            Some(kube::core::response::StatusSummary::Failure)
        )
    );
    assert!(
        status.message.contains("Internal error occurred"),
        "{}",
        status.message
    );
    assert_eq!(policy(), "Delete", "nothing changed");
    assert_eq!(server.faults_pending(), 1);

    server.fail_next("PATCH", "persistentvolumes", None, 2, 503);
    let status = api_status(
        once.patch(&pv_name, &PatchParams::default(), &retain)
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (status.code, status.reason.as_str()),
        (503, "ServiceUnavailable")
    );
    assert_eq!(policy(), "Delete", "nothing changed");
    // The default client retries over the second 503 and succeeds.
    volumes
        .patch(&pv_name, &PatchParams::default(), &retain)
        .await
        .unwrap();
    assert_eq!(policy(), "Retain");
    assert_eq!(server.faults_pending(), 1);

    // 500 on a create: no claim.
    server.fail_next("POST", "persistentvolumeclaims", None, 1, 500);
    let fresh: PersistentVolumeClaim = serde_json::from_value(claim_json("fresh", "1Gi")).unwrap();
    let status = api_status(
        claims
            .create(&PostParams::default(), &fresh)
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (status.code, status.reason.as_str()),
        (500, "InternalError")
    );
    assert!(claim_of(&server, "fresh").is_none());

    // 409 on a delete, seen by kubectl: the claim stays.
    server.fail_next("DELETE", "persistentvolumeclaims", None, 1, 409);
    let out = server
        .kubectl()
        .args(["delete", "pvc", "data", "-n", NS])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the object has been modified"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(claim_of(&server, "data").unwrap()["metadata"]["deletionTimestamp"].is_null());
    // Only the status fault is left.
    assert_eq!(server.faults_pending(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_event_log_keeps_every_change_in_order_beyond_the_watch_history() {
    let server = server(ControllerConfig::default()).await;
    let before = server.event_log().len();
    for i in 0..20_050 {
        server
            .create(
                "",
                "configmaps",
                NS,
                json!({"metadata": {"name": format!("c{i}")}}),
            )
            .unwrap();
    }
    server.delete("", "configmaps", NS, "c0").unwrap();
    let log = server.event_log();
    assert_eq!(log.len(), before + 20_051);
    assert!(
        log.windows(2)
            .all(|w| w[0].resource_version < w[1].resource_version)
    );
    // The first change is still there (the namespace "default"), and each entry holds the object.
    assert!(log[0].is("namespaces", "", "default") && log[0].kind == EventType::Added);
    let first = log.iter().find(|e| e.is("configmaps", NS, "c0")).unwrap();
    assert_eq!(first.object["metadata"]["name"], json!("c0"));
    assert_eq!(
        first.object["metadata"]["resourceVersion"],
        json!(first.resource_version.to_string())
    );
    let last = log.last().unwrap();
    assert_eq!(
        (last.kind, last.name.as_str(), last.uid()),
        (
            EventType::Deleted,
            "c0",
            first.object["metadata"]["uid"].as_str().unwrap()
        )
    );
}
