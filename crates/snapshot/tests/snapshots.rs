//! Snapshots against the test API server and its simulated CSI snapshotter.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use litemaas_retention::State;
use litemaas_snapshot::{Error, Snapshots, retention_item, snapshot_name};
use litemaas_testapi::{ControllerConfig, SnapshotBehavior, TestApiServer};
use serde_json::json;

const LABELS: [(&str, &str); 2] = [("app", "litemaas-backup"), ("backup-type", "monthly")];

async fn server(snapshots: SnapshotBehavior) -> (TestApiServer, Snapshots) {
    let server = TestApiServer::start_with(ControllerConfig {
        snapshots,
        ..ControllerConfig::default()
    })
    .await
    .unwrap();
    server.create_namespace("litemaas").unwrap();
    server
        .create("", "persistentvolumeclaims", "litemaas", json!({"metadata": {"name": "postgres-storage-litellm-postgres-0",
            "labels": {"app": "litellm-postgres"}}, "spec": {"resources": {"requests": {"storage": "10Gi"}}}}))
        .unwrap();
    let snapshots = Snapshots::new(server.client().await.unwrap(), "litemaas");
    (server, snapshots)
}

#[tokio::test]
async fn a_snapshot_is_created_labelled_and_waited_for() {
    let (server, snapshots) =
        server(SnapshotBehavior::ReadyAfter(Duration::from_millis(300))).await;
    let pvc = snapshots.find_pvc("app=litellm-postgres").await.unwrap();
    let name = snapshot_name(jiff::Timestamp::from_second(1_765_863_537).unwrap());
    assert_eq!(name, "litemaas-snapshot-20251216-053857");
    snapshots
        .create(
            &pvc,
            &name,
            &LABELS,
            Some("ocs-storagecluster-rbdplugin-snapclass"),
        )
        .await
        .unwrap();
    let ready = snapshots
        .wait_ready(&name, Duration::from_secs(10))
        .await
        .unwrap();
    let status = ready.status.as_ref().unwrap();
    assert_eq!(
        (status.ready_to_use, status.restore_size.as_deref()),
        (Some(true), Some("10Gi"))
    );
    assert_eq!(retention_item(&ready).state, State::Complete);
    let stored = server
        .get(
            "snapshot.storage.k8s.io",
            "volumesnapshots",
            "litemaas",
            &name,
        )
        .unwrap();
    assert_eq!(stored["metadata"]["labels"]["backup-type"], "monthly");
    assert_eq!(
        stored["spec"]["source"]["persistentVolumeClaimName"],
        "postgres-storage-litellm-postgres-0"
    );
    assert_eq!(
        stored["spec"]["volumeSnapshotClassName"],
        "ocs-storagecluster-rbdplugin-snapclass"
    );
}

#[tokio::test]
async fn a_snapshot_that_never_becomes_ready_times_out_by_name() {
    let (_server, snapshots) = server(SnapshotBehavior::Never).await;
    snapshots
        .create(
            "postgres-storage-litellm-postgres-0",
            "stuck",
            &LABELS,
            None,
        )
        .await
        .unwrap();
    let err = snapshots
        .wait_ready("stuck", Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Timeout { name, .. } if name == "stuck"),
        "{err:?}"
    );
    assert!(err.to_string().contains("litemaas/stuck"), "{err}");
    let list = snapshots.list("app=litemaas-backup").await.unwrap();
    assert_eq!(retention_item(&list[0]).state, State::NotReady);
}

/// The external-snapshotter retries after an error and the snapshot may become ready, with
/// the old error left in `status.error`: the wait goes on, and the snapshot counts.
#[tokio::test]
async fn an_error_the_snapshotter_retries_past_is_not_final() {
    let (_server, snapshots) = server(SnapshotBehavior::FailThenReady(
        "rpc error: code = Unavailable desc = driver busy".into(),
        Duration::from_secs(1),
    ))
    .await;
    snapshots
        .create(
            "postgres-storage-litellm-postgres-0",
            "retried",
            &LABELS,
            None,
        )
        .await
        .unwrap();
    let ready = snapshots
        .wait_ready("retried", Duration::from_secs(30))
        .await
        .unwrap();
    let status = ready.status.unwrap();
    assert_eq!(status.ready_to_use, Some(true));
    assert!(
        status.error.is_some(),
        "the witness: the old error is still there"
    );
    let list = snapshots.list("app=litemaas-backup").await.unwrap();
    assert_eq!(retention_item(&list[0]).state, State::Complete);
}

/// An error that lasts is reported, with the snapshotter's message, when the time is up.
#[tokio::test]
async fn a_failed_snapshot_reports_its_error_when_the_time_is_up() {
    let (_server, snapshots) = server(SnapshotBehavior::Fail("rbd: image is busy".into())).await;
    snapshots
        .create(
            "postgres-storage-litellm-postgres-0",
            "broken",
            &LABELS,
            None,
        )
        .await
        .unwrap();
    let err = snapshots
        .wait_ready("broken", Duration::from_secs(2))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "VolumeSnapshot litemaas/broken failed: rbd: image is busy (still not readyToUse after 2s of the snapshotter's retries)"
    );
    let list = snapshots.list("app=litemaas-backup").await.unwrap();
    assert_eq!(retention_item(&list[0]).state, State::Failed);
}

#[tokio::test]
async fn snapshots_are_listed_oldest_first_and_deleted() {
    let (server, snapshots) = server(SnapshotBehavior::Never).await;
    for (name, created) in [
        ("b", "2025-02-01T00:00:00Z"),
        ("a", "2025-03-01T00:00:00Z"),
        ("c", "2025-01-01T00:00:00Z"),
    ] {
        let snapshot = json!({"metadata": {"name": name, "labels": {"app": "litemaas-backup"}},
                              "spec": {"source": {"persistentVolumeClaimName": "data"}}});
        server
            .create_aged(
                "snapshot.storage.k8s.io",
                "volumesnapshots",
                "litemaas",
                snapshot,
                created,
            )
            .unwrap();
    }
    server
        .create(
            "snapshot.storage.k8s.io",
            "volumesnapshots",
            "litemaas",
            json!({"metadata": {"name": "unrelated"}, "spec": {}}),
        )
        .unwrap();
    let names: Vec<_> = snapshots
        .list("app=litemaas-backup")
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.metadata.name.unwrap())
        .collect();
    assert_eq!(names, ["c", "b", "a"]);
    snapshots.delete("a").await.unwrap();
    snapshots.delete("a").await.unwrap(); // already gone
    assert_eq!(
        snapshots.list("app=litemaas-backup").await.unwrap().len(),
        2
    );
}

#[tokio::test]
async fn missing_pvcs_and_classes_are_reported() {
    let (server, snapshots) = server(SnapshotBehavior::Never).await;
    let err = snapshots.find_pvc("app=nothing").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "no PersistentVolumeClaim with labels app=nothing in namespace litemaas"
    );
    assert!(
        snapshots
            .class_for_driver("openshift-storage.rbd.csi.ceph.com")
            .await
            .unwrap()
            .is_none()
    );
    server
        .create(
            "snapshot.storage.k8s.io",
            "volumesnapshotclasses",
            "",
            json!({"metadata": {"name": "rbd"},
            "driver": "openshift-storage.rbd.csi.ceph.com", "deletionPolicy": "Delete"}),
        )
        .unwrap();
    let class = snapshots
        .class_for_driver("openshift-storage.rbd.csi.ceph.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(class.metadata.name.as_deref(), Some("rbd"));
}
