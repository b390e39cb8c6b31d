//! The server as kubectl sees it: an independent, real client.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Output, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, PostParams};
use litemaas_testapi::TestApiServer;

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "kubectl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

const MANIFEST: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: litemaas-db, namespace: litemaas}
stringData: {}
data: {username: bGl0ZW1hYXM=, password: czNjcjN0, database: bGl0ZW1hYXM=}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: litellm-postgres, namespace: litemaas}
spec:
  replicas: 1
  serviceName: litellm-postgres
  selector: {matchLabels: {app: litellm-postgres}}
  template:
    metadata: {labels: {app: litellm-postgres}}
    spec:
      containers: [{name: postgres, image: postgres:15}]
  volumeClaimTemplates:
  - metadata: {name: postgres-storage, labels: {app: litellm-postgres}}
    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 10Gi}}}
"#;

async fn wait_for(mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("condition not reached in 5 s");
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_discovers_the_resources() {
    let server = TestApiServer::start().await.unwrap();
    let resources = ok(server
        .kubectl()
        .args(["api-resources", "--no-headers"])
        .output()
        .unwrap());
    for want in [
        "volumesnapshots",
        "volumesnapshotclasses",
        "routes",
        "statefulsets",
        "cronjobs",
        "leases",
        "roles",
    ] {
        assert!(
            resources.lines().any(|l| l.starts_with(want)),
            "{want} missing:\n{resources}"
        );
    }
    let version = ok(server
        .kubectl()
        .args(["version", "-o", "json"])
        .output()
        .unwrap());
    assert!(version.contains("v1.32.0"), "{version}");
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_and_kube_rs_agree_on_objects() {
    let server = TestApiServer::start().await.unwrap();
    server.create_namespace("litemaas").unwrap();
    let mut apply = server
        .kubectl()
        .args(["apply", "--validate=false", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    apply
        .stdin
        .take()
        .unwrap()
        .write_all(MANIFEST.as_bytes())
        .unwrap();
    let applied = ok(apply.wait_with_output().unwrap());
    assert!(
        applied.contains("secret/litemaas-db created")
            && applied.contains("statefulset.apps/litellm-postgres created"),
        "{applied}"
    );

    // kube-rs reads what kubectl wrote.
    let client = server.client().await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "litemaas");
    let secret = secrets.get("litemaas-db").await.unwrap();
    assert_eq!(secret.data.unwrap()["password"].0, b"s3cr3t");

    // The StatefulSet controller made a pod and its claim; kubectl sees them by label.
    wait_for(|| {
        let out = server
            .kubectl()
            .args([
                "get",
                "pods",
                "-n",
                "litemaas",
                "-l",
                "app=litellm-postgres",
                "-o",
                "jsonpath={.items[*].status.phase}",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout) == "Running"
    })
    .await;
    let claims = ok(server
        .kubectl()
        .args([
            "get",
            "pvc",
            "-n",
            "litemaas",
            "-o",
            "jsonpath={.items[*].metadata.name}:{.items[*].status.phase}",
        ])
        .output()
        .unwrap());
    assert_eq!(claims, "postgres-storage-litellm-postgres-0:Bound");

    // kubectl patch; kube-rs sees it, with a newer resourceVersion.
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "litemaas");
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("settings".into());
    let created = configmaps
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    ok(server
        .kubectl()
        .args([
            "patch",
            "configmap",
            "settings",
            "-n",
            "litemaas",
            "--type=merge",
            "-p",
            r#"{"data":{"k":"v"}}"#,
        ])
        .output()
        .unwrap());
    let patched = configmaps.get("settings").await.unwrap();
    assert_eq!(patched.data.as_ref().unwrap()["k"], "v");
    let rv = |m: &ConfigMap| {
        m.metadata
            .resource_version
            .clone()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    assert!(rv(&patched) > rv(&created));

    // Scale to zero: the pod terminates.
    ok(server
        .kubectl()
        .args([
            "scale",
            "statefulset",
            "litellm-postgres",
            "-n",
            "litemaas",
            "--replicas=0",
        ])
        .output()
        .unwrap());
    wait_for(|| {
        let out = server
            .kubectl()
            .args(["get", "pods", "-n", "litemaas", "-o", "name"])
            .output()
            .unwrap();
        out.status.success() && out.stdout.is_empty()
    })
    .await;

    // Delete, and the API says NotFound like the real one.
    ok(server
        .kubectl()
        .args(["delete", "secret", "litemaas-db", "-n", "litemaas"])
        .output()
        .unwrap());
    let out = server
        .kubectl()
        .args(["get", "secret", "litemaas-db", "-n", "litemaas"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(r#"secrets "litemaas-db" not found"#),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_exec_runs_the_command_with_the_pod_environment() {
    let server = TestApiServer::start().await.unwrap();
    server.create("", "pods", "default", serde_json::json!({"metadata": {"name": "db-0"}, "spec": {"containers": [{"name": "postgres"}]}})).unwrap();
    server.set_exec_env(
        "default",
        "db-0",
        vec![("GREETING".into(), "hello from the pod".into())],
    );
    let out = server
        .kubectl()
        .args([
            "exec",
            "db-0",
            "-c",
            "postgres",
            "--",
            "sh",
            "-c",
            "echo $GREETING; echo oops >&2; exit 3",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from the pod\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("oops"));

    let mut cat = server
        .kubectl()
        .args(["exec", "-i", "db-0", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    cat.stdin
        .take()
        .unwrap()
        .write_all(b"through stdin\n")
        .unwrap();
    let out = cat.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "through stdin\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let log = server.exec_log();
    assert_eq!(
        log[0].command,
        ["sh", "-c", "echo $GREETING; echo oops >&2; exit 3"]
    );
    assert_eq!(log[0].container.as_deref(), Some("postgres"));
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_get_watch_sees_changes_made_through_kube_rs() {
    let server = TestApiServer::start().await.unwrap();
    let mut watch = server
        .kubectl()
        .args(["get", "configmaps", "-w", "-o", "name"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let configmaps: Api<ConfigMap> = Api::default_namespaced(server.client().await.unwrap());
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("watched".into());
    configmaps
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    let line = tokio::task::spawn_blocking(move || lines.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(line, "configmap/watched");
    watch.kill().unwrap();
    watch.wait().unwrap();
}
