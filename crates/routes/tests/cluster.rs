//! `Routes` against the test API server, with kubectl as a witness.
#![allow(clippy::unwrap_used)]

use litemaas_routes::{Error, Policy, Routes, Selection, Status, TIMEOUT_ANNOTATION, Timeout};
use litemaas_testapi::TestApiServer;
use serde_json::{Value, json};

const NS: &str = "litemaas";
const GROUP: &str = "route.openshift.io";

fn route(name: &str, labels: Value, timeout: Option<&str>) -> Value {
    let mut annotations = json!({"openshift.io/host.generated": "true"});
    if let Some(t) = timeout {
        annotations[TIMEOUT_ANNOTATION] = json!(t);
    }
    json!({
        "apiVersion": "route.openshift.io/v1", "kind": "Route",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {"host": format!("{name}.apps.example.com"), "to": {"kind": "Service", "name": name, "weight": 100},
                 "port": {"targetPort": "http"}, "tls": {"termination": "edge", "insecureEdgeTerminationPolicy": "Redirect"},
                 "wildcardPolicy": "None"},
    })
}

async fn server() -> TestApiServer {
    let server = TestApiServer::start().await.unwrap();
    server.create_namespace(NS).unwrap();
    for (name, app, timeout) in [
        ("litellm", "litellm", Some("600s")),
        ("litemaas-backend", "litellm-backend", Some("10min")),
        ("litemaas-frontend", "litellm-frontend", None),
        ("litellm-mcp", "litellm-mcp", Some("300s")),
    ] {
        server
            .create(
                GROUP,
                "routes",
                NS,
                route(name, json!({"app": app}), timeout),
            )
            .unwrap();
    }
    server
}

fn names(routes: &[litemaas_routes::Route]) -> Vec<&str> {
    routes.iter().map(|r| r.name()).collect()
}

/// The route as kubectl sees it (tests run multi-threaded: this blocks one thread).
fn kubectl_route(server: &TestApiServer, name: &str) -> Value {
    let out = server
        .kubectl()
        .args(["get", "route", name, "-n", NS, "-o", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn list_selects_all_by_label_or_by_name_and_names_a_missing_route() {
    let server = server().await;
    let routes = Routes::new(server.client().await.unwrap(), NS);
    let all = routes.list(&Selection::All).await.unwrap();
    assert_eq!(
        names(&all),
        [
            "litellm",
            "litellm-mcp",
            "litemaas-backend",
            "litemaas-frontend"
        ]
    );
    assert_eq!(all[0].host(), Some("litellm.apps.example.com"));
    let backend = routes
        .list(&Selection::Labels("app=litellm-backend".into()))
        .await
        .unwrap();
    assert_eq!(names(&backend), ["litemaas-backend"]);
    let named = routes
        .list(&Selection::Names(vec![
            "litellm-mcp".into(),
            "litellm".into(),
            "litellm-mcp".into(),
        ]))
        .await
        .unwrap();
    assert_eq!(names(&named), ["litellm-mcp", "litellm"]);
    let missing = routes
        .list(&Selection::Names(vec!["litellm".into(), "nope".into()]))
        .await
        .unwrap_err();
    assert!(
        matches!(&missing, Error::NotFound { name, namespace } if name == "nope" && namespace == NS),
        "{missing:?}"
    );
    assert_eq!(
        missing.to_string(),
        "Route nope not found in namespace litemaas"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_patches_only_the_annotation_and_a_second_apply_changes_nothing() {
    let server = server().await;
    let routes = Routes::new(server.client().await.unwrap(), NS);
    let policy = Policy::default();
    let before: Vec<Value> = [
        "litellm",
        "litemaas-backend",
        "litemaas-frontend",
        "litellm-mcp",
    ]
    .iter()
    .map(|n| kubectl_route(&server, n))
    .collect();
    let found = routes.list(&Selection::All).await.unwrap();
    let changes = routes.apply(&found, &policy, false).await.unwrap();
    let changed: Vec<_> = changes
        .iter()
        .map(|c| {
            (
                c.name.as_str(),
                c.before.as_deref(),
                c.after.as_str(),
                c.reason,
            )
        })
        .collect();
    assert_eq!(
        changed,
        [
            ("litellm-mcp", Some("300s"), "600s", Status::Below),
            ("litemaas-backend", Some("10min"), "600s", Status::Ignored),
            ("litemaas-frontend", None, "600s", Status::Missing),
        ]
    );
    for mut old in before {
        let name = old["metadata"]["name"].as_str().unwrap().to_owned();
        let mut now = kubectl_route(&server, &name);
        let value = now["metadata"]["annotations"][TIMEOUT_ANNOTATION].take();
        assert_eq!(value, json!("600s"), "{name}");
        // Everything else is as it was: spec, labels, the other annotation.
        old["metadata"]["annotations"]
            .as_object_mut()
            .unwrap()
            .remove(TIMEOUT_ANNOTATION);
        now["metadata"]["annotations"]
            .as_object_mut()
            .unwrap()
            .remove(TIMEOUT_ANNOTATION);
        for v in [&mut old, &mut now] {
            v["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("resourceVersion");
        }
        assert_eq!(now, old, "{name}");
    }
    let modified = server.event_log().len();
    let again = routes.list(&Selection::All).await.unwrap();
    assert!(
        litemaas_routes::audit(&again, &policy)
            .iter()
            .all(|f| f.in_policy)
    );
    assert_eq!(routes.apply(&again, &policy, false).await.unwrap(), []);
    assert_eq!(
        server.event_log().len(),
        modified,
        "the second apply wrote something"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_changes_nothing_and_lists_what_it_would_change() {
    let server = server().await;
    let routes = Routes::new(server.client().await.unwrap(), NS);
    let found = routes.list(&Selection::All).await.unwrap();
    let writes = server.event_log().len();
    let policy = Policy::default().with_override("litellm-mcp", Timeout::from_secs(300));
    let changes = routes.apply(&found, &policy, true).await.unwrap();
    assert_eq!(
        changes
            .iter()
            .map(|c| (c.name.as_str(), c.applied))
            .collect::<Vec<_>>(),
        [("litemaas-backend", false), ("litemaas-frontend", false)]
    );
    assert_eq!(server.event_log().len(), writes);
    assert_eq!(
        kubectl_route(&server, "litemaas-backend")["metadata"]["annotations"][TIMEOUT_ANNOTATION],
        "10min"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_route_changed_after_it_was_read_is_judged_again_not_overwritten() {
    let server = server().await;
    let routes = Routes::new(server.client().await.unwrap(), NS);
    let found = routes
        .list(&Selection::Names(vec!["litemaas-frontend".into()]))
        .await
        .unwrap();
    // Someone sets a longer timeout between our read and our patch.
    let mut current = server
        .get(GROUP, "routes", NS, "litemaas-frontend")
        .unwrap();
    current["metadata"]["annotations"][TIMEOUT_ANNOTATION] = json!("900s");
    server
        .replace(GROUP, "routes", NS, "litemaas-frontend", current)
        .unwrap();
    let changes = routes
        .apply(&found, &Policy::default(), false)
        .await
        .unwrap();
    assert_eq!(changes, []);
    assert_eq!(
        kubectl_route(&server, "litemaas-frontend")["metadata"]["annotations"][TIMEOUT_ANNOTATION],
        "900s"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_patch_names_the_route_and_those_already_changed() {
    let server = server().await;
    let routes = Routes::new(server.client().await.unwrap(), NS);
    let found = routes.list(&Selection::All).await.unwrap();
    // litellm-mcp is patched, then litemaas-backend is gone: the run stops there.
    server
        .delete(GROUP, "routes", NS, "litemaas-backend")
        .unwrap();
    let e = routes
        .apply(&found, &Policy::default(), false)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Patch { name, changed, .. } if name == "litemaas-backend" && changed == &["litellm-mcp"]),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "cannot set the timeout of Route litemaas/litemaas-backend (already changed: litellm-mcp)"
    );
    assert!(
        kubectl_route(&server, "litemaas-frontend")["metadata"]["annotations"]
            .get(TIMEOUT_ANNOTATION)
            .is_none()
    );
}
