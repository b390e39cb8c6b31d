//! `?dryRun=All` (as `kubectl apply --dry-run=server` sends it): the write is checked and
//! answered as a real one would be, and nothing is stored, watched or logged.
#![allow(clippy::unwrap_used)]

use litemaas_testapi::TestApiServer;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn a_server_dry_run_answers_and_stores_nothing() {
    let server = TestApiServer::start().await.unwrap();
    server.create_namespace("litemaas").unwrap();
    server
        .create(
            "",
            "configmaps",
            "litemaas",
            json!({"metadata": {"name": "kept"}, "data": {"a": "1"}}),
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("objects.json");
    std::fs::write(
        &file,
        json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "new", "namespace": "litemaas"}, "data": {"b": "2"}},
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kept", "namespace": "litemaas"}, "data": {"a": "changed"}},
        ]})
        .to_string(),
    )
    .unwrap();
    let log = server.event_log().len();
    let out = server
        .kubectl()
        .args(["apply", "--dry-run=server", "--validate=false", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("configmap/new created (server dry run)"),
        "{said}"
    );
    assert!(
        said.contains("configmap/kept configured (server dry run)"),
        "{said}"
    );
    assert!(server.get("", "configmaps", "litemaas", "new").is_err());
    assert_eq!(
        server.get("", "configmaps", "litemaas", "kept").unwrap()["data"]["a"],
        "1"
    );
    assert_eq!(server.event_log().len(), log, "a dry run changed something");
    // A dry run of something invalid still fails, as a real write would.
    let out = server
        .kubectl()
        .args([
            "create",
            "configmap",
            "Not_Valid",
            "-n",
            "litemaas",
            "--dry-run=server",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
}
