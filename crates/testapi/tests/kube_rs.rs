//! The server as kube-rs sees it: API semantics, watches, exec, RBAC and the controllers.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, AttachParams, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::wait::await_condition;
use kube::runtime::{WatchStreamExt, watcher};
use litemaas_testapi::{ControllerConfig, Identity, Rule, SnapshotBehavior, TestApiServer};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn cm(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.into());
    cm.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect(),
    );
    cm
}

fn snapshots(client: kube::Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshot");
    Api::namespaced_with(client, ns, &ApiResource::from_gvk(&gvk))
}

fn api_error(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(status) => *status,
        other => panic!("not an API error: {other:?}"),
    }
}

#[tokio::test]
async fn objects_have_the_api_bookkeeping_and_errors() {
    let server = TestApiServer::start().await.unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(server.client().await.unwrap());
    let created = api
        .create(&PostParams::default(), &cm("a", &[]))
        .await
        .unwrap();
    let meta = &created.metadata;
    assert!(meta.uid.is_some() && meta.creation_timestamp.is_some());
    assert_eq!(meta.namespace.as_deref(), Some("default"));

    let err = api_error(
        api.create(&PostParams::default(), &cm("a", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "AlreadyExists"));
    let err = api_error(api.get("missing").await.unwrap_err());
    assert_eq!(
        (err.code, err.reason.as_str(), err.message.as_str()),
        (404, "NotFound", "configmaps \"missing\" not found")
    );

    // A replace from a stale copy conflicts.
    let mut first = created.clone();
    first.data = Some([("x".to_owned(), "1".to_owned())].into());
    api.replace("a", &PostParams::default(), &first)
        .await
        .unwrap();
    let err = api_error(
        api.replace("a", &PostParams::default(), &first)
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));

    // generateName.
    let mut generated = ConfigMap::default();
    generated.metadata.generate_name = Some("run-".into());
    let generated = api
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    assert!(generated.metadata.name.unwrap().starts_with("run-"));

    // A namespace that does not exist.
    let elsewhere: Api<ConfigMap> = Api::namespaced(server.client().await.unwrap(), "nowhere");
    let err = api_error(
        elsewhere
            .create(&PostParams::default(), &cm("b", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (err.code, err.message.as_str()),
        (404, "namespaces \"nowhere\" not found")
    );
}

#[tokio::test]
async fn selectors_and_patches() {
    let server = TestApiServer::start().await.unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(server.client().await.unwrap());
    for (name, app) in [
        ("one", "litemaas-backup"),
        ("two", "litellm-postgres"),
        ("three", "other"),
    ] {
        api.create(&PostParams::default(), &cm(name, &[("app", app)]))
            .await
            .unwrap();
    }
    let names = |list: kube::core::ObjectList<ConfigMap>| -> Vec<String> {
        let mut v: Vec<_> = list
            .items
            .into_iter()
            .map(|c| c.metadata.name.unwrap())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("app=litemaas-backup"))
                .await
                .unwrap()
        ),
        ["one"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("app in (litemaas-backup,other)"))
                .await
                .unwrap()
        ),
        ["one", "three"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("app notin (other),app"))
                .await
                .unwrap()
        ),
        ["one", "two"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().fields("metadata.name=two"))
                .await
                .unwrap()
        ),
        ["two"]
    );

    let pp = PatchParams::default();
    api.patch("one", &pp, &Patch::Merge(json!({"data": {"a": "1"}})))
        .await
        .unwrap();
    let patch: json_patch::Patch =
        serde_json::from_value(json!([{"op": "add", "path": "/data/b", "value": "2"}])).unwrap();
    api.patch("one", &pp, &Patch::<()>::Json(patch))
        .await
        .unwrap();
    api.patch(
        "one",
        &pp,
        &Patch::Strategic(json!({"metadata": {"labels": {"tier": "db"}}})),
    )
    .await
    .unwrap();
    let applied = api
        .patch("four", &PatchParams::apply("litemaas-test"), &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "four"}, "data": {"c": "3"}})))
        .await
        .unwrap();
    assert_eq!(applied.data.unwrap()["c"], "3");
    let one = api.get("one").await.unwrap();
    assert_eq!(
        one.data.unwrap(),
        [
            ("a".to_owned(), "1".to_owned()),
            ("b".to_owned(), "2".to_owned())
        ]
        .into()
    );
    assert_eq!(one.metadata.labels.unwrap()["tier"], "db");
    api.delete("one", &DeleteParams::default()).await.unwrap();
    assert!(api.get_opt("one").await.unwrap().is_none());
}

#[tokio::test]
async fn the_status_subresource_is_separate_from_the_object() {
    let server = TestApiServer::start_with(ControllerConfig {
        snapshots: SnapshotBehavior::Never,
        ..ControllerConfig::default()
    })
    .await
    .unwrap();
    let api = snapshots(server.client().await.unwrap(), "default");
    let vs: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
        "metadata": {"name": "s"}, "spec": {"source": {"persistentVolumeClaimName": "data"}},
        "status": {"readyToUse": true}
    }))
    .unwrap();
    let created = api.create(&PostParams::default(), &vs).await.unwrap();
    assert!(
        created.data.get("status").is_none(),
        "status is not set by a create through the main resource"
    );
    api.patch_status(
        "s",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"readyToUse": false}})),
    )
    .await
    .unwrap();
    // A main-resource patch cannot change the status.
    api.patch(
        "s",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"readyToUse": true}, "metadata": {"labels": {"x": "y"}}})),
    )
    .await
    .unwrap();
    let got = api.get("s").await.unwrap();
    assert_eq!(got.data["status"]["readyToUse"], json!(false));
    assert_eq!(got.metadata.labels.unwrap()["x"], "y");
}

#[tokio::test]
async fn snapshots_become_ready_and_await_condition_sees_it() {
    let server = TestApiServer::start().await.unwrap();
    server
        .create(
            "",
            "persistentvolumeclaims",
            "default",
            json!({"metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "5Gi"}}}}),
        )
        .unwrap();
    let api = snapshots(server.client().await.unwrap(), "default");
    let vs: DynamicObject = serde_json::from_value(json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
        "metadata": {"name": "snap", "labels": {"app": "litemaas-backup"}}, "spec": {"source": {"persistentVolumeClaimName": "data"}}})).unwrap();
    api.create(&PostParams::default(), &vs).await.unwrap();
    let ready = |o: Option<&DynamicObject>| {
        o.is_some_and(|o| o.data["status"]["readyToUse"] == json!(true))
    };
    let done = tokio::time::timeout(
        Duration::from_secs(10),
        await_condition(api.clone(), "snap", ready),
    )
    .await
    .unwrap()
    .unwrap()
    .unwrap();
    assert_eq!(done.data["status"]["restoreSize"], json!("5Gi"));
    assert!(
        done.data["status"]["boundVolumeSnapshotContentName"]
            .as_str()
            .unwrap()
            .starts_with("snapcontent-")
    );

    // A claim restored from it binds once it is ready (here at once).
    server.create("", "persistentvolumeclaims", "default", json!({"metadata": {"name": "restored"},
        "spec": {"dataSource": {"kind": "VolumeSnapshot", "name": "snap", "apiGroup": "snapshot.storage.k8s.io"},
                 "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "5Gi"}}}})).unwrap();
    let mut phase = String::new();
    for _ in 0..100 {
        phase = server
            .get("", "persistentvolumeclaims", "default", "restored")
            .unwrap()["status"]["phase"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        if phase == "Bound" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(phase, "Bound");
}

#[tokio::test]
async fn failing_snapshots_report_an_error() {
    let server = TestApiServer::start_with(ControllerConfig {
        snapshots: SnapshotBehavior::Fail("csi: quota exceeded".into()),
        ..ControllerConfig::default()
    })
    .await
    .unwrap();
    let api = snapshots(server.client().await.unwrap(), "default");
    let vs: DynamicObject = serde_json::from_value(
        json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
        "metadata": {"name": "bad"}, "spec": {"source": {"persistentVolumeClaimName": "data"}}}),
    )
    .unwrap();
    api.create(&PostParams::default(), &vs).await.unwrap();
    let failed =
        |o: Option<&DynamicObject>| o.is_some_and(|o| o.data["status"]["error"].is_object());
    let got = tokio::time::timeout(Duration::from_secs(10), await_condition(api, "bad", failed))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        got.data["status"]["error"]["message"],
        json!("csi: quota exceeded")
    );
    assert_eq!(got.data["status"]["readyToUse"], json!(false));
}

#[tokio::test]
async fn watches_resume_from_a_resource_version() {
    let server = TestApiServer::start().await.unwrap();
    let client = server.client().await.unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    api.create(&PostParams::default(), &cm("before", &[]))
        .await
        .unwrap();
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    api.create(&PostParams::default(), &cm("after-1", &[]))
        .await
        .unwrap();
    api.delete("before", &DeleteParams::default())
        .await
        .unwrap();
    let mut stream = api
        .watch(&kube::api::WatchParams::default().timeout(5), &rv)
        .await
        .unwrap()
        .boxed();
    let mut seen = Vec::new();
    while let Some(event) = stream.try_next().await.unwrap() {
        match event {
            kube::core::WatchEvent::Added(c) => {
                seen.push(format!("ADDED {}", c.metadata.name.unwrap()))
            }
            kube::core::WatchEvent::Deleted(c) => {
                seen.push(format!("DELETED {}", c.metadata.name.unwrap()))
            }
            other => seen.push(format!("{other:?}")),
        }
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen, ["ADDED after-1", "DELETED before"]);

    // kube-runtime's watcher (list, then watch) sees later changes.
    let mut objects = watcher(api.clone(), watcher::Config::default())
        .applied_objects()
        .boxed();
    let first = objects.try_next().await.unwrap().unwrap();
    assert_eq!(first.metadata.name.as_deref(), Some("after-1"));
    api.create(&PostParams::default(), &cm("later", &[]))
        .await
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), objects.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(next.metadata.name.as_deref(), Some("later"));
}

#[tokio::test]
async fn attached_process_streams_stdin_stdout_and_the_exit_code() {
    let server = TestApiServer::start().await.unwrap();
    server
        .create(
            "",
            "pods",
            "default",
            json!({"metadata": {"name": "db-0"}, "spec": {"containers": [{"name": "postgres"}]}}),
        )
        .unwrap();
    server.set_exec_env("default", "db-0", vec![("SUFFIX".into(), "!".into())]);
    let pods: Api<Pod> = Api::default_namespaced(server.client().await.unwrap());
    let params = AttachParams::default()
        .container("postgres")
        .stdin(true)
        .stderr(true);
    let mut process = pods
        .exec(
            "db-0",
            [
                "sh",
                "-c",
                "read -r line; echo \"got $line$SUFFIX\"; echo warn >&2; exit 4",
            ],
            &params,
        )
        .await
        .unwrap();
    let mut stdin = process.stdin().unwrap();
    stdin.write_all(b"secret-from-stdin\n").await.unwrap();
    let mut stdout = process.stdout().unwrap();
    let mut stderr = process.stderr().unwrap();
    let status = process.take_status().unwrap();
    let (mut out, mut err) = (String::new(), String::new());
    let (a, b) = tokio::join!(
        stdout.read_to_string(&mut out),
        stderr.read_to_string(&mut err)
    );
    a.unwrap();
    b.unwrap();
    let status = status.await.unwrap();
    assert_eq!(out, "got secret-from-stdin!\n");
    assert_eq!(err, "warn\n");
    assert_eq!(status.reason.as_deref(), Some("NonZeroExitCode"));
    let code = &status.details.unwrap().causes.unwrap()[0];
    assert_eq!(
        (code.reason.as_deref(), code.message.as_deref()),
        (Some("ExitCode"), Some("4"))
    );
    process.join().await.unwrap();
    // What an audit log would show holds no stdin data.
    let log = server.exec_log();
    assert!(log[0].stdin && !log[0].request_uri.contains("secret-from-stdin"));
}

#[tokio::test]
async fn rbac_tokens_allow_what_their_role_grants_and_nothing_else() {
    let server = TestApiServer::start().await.unwrap();
    server.create_namespace("litemaas").unwrap();
    let role = json!({"rules": [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["litemaas-db"]},
    ]});
    server.add_token(
        "sa-token",
        Identity {
            user: "system:serviceaccount:litemaas:litemaas-backup".into(),
            namespace: Some("litemaas".into()),
            rules: Rule::from_role(&role),
        },
    );
    server
        .create(
            "",
            "configmaps",
            "litemaas",
            json!({"metadata": {"name": "c"}}),
        )
        .unwrap();
    let client = server
        .client_with_token("sa-token", "litemaas")
        .await
        .unwrap();
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "litemaas");
    configmaps.get("c").await.unwrap();
    configmaps.list(&ListParams::default()).await.unwrap();
    let err = api_error(
        configmaps
            .create(&PostParams::default(), &cm("new", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (403, "Forbidden"));
    assert!(
        err.message
            .contains("cannot create resource \"configmaps\""),
        "{}",
        err.message
    );
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), "litemaas");
    assert_eq!(api_error(secrets.get("other").await.unwrap_err()).code, 403);
    assert_eq!(
        api_error(secrets.get("litemaas-db").await.unwrap_err()).code,
        404
    ); // allowed, absent
    let elsewhere: Api<ConfigMap> = Api::namespaced(client, "default");
    assert_eq!(
        api_error(elsewhere.list(&ListParams::default()).await.unwrap_err()).code,
        403
    );
    let stranger: Api<ConfigMap> = Api::namespaced(
        server
            .client_with_token("unknown", "litemaas")
            .await
            .unwrap(),
        "litemaas",
    );
    assert_eq!(api_error(stranger.get("c").await.unwrap_err()).code, 401);
}
