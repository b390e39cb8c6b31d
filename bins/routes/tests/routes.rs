//! `litemaas-routes` end to end against the test API server, with kubectl as a witness.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::process::{Command, Output, Stdio};

use litemaas_testapi::{Identity, Rule, TestApiServer};
use serde_json::{Value, json};

const NS: &str = "litemaas";
const ANNOTATION: &str = "haproxy.router.openshift.io/timeout";

/// name, labels' app, path, termination, timeout annotation
type Fixture = (
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
);

const ROUTES: [Fixture; 8] = [
    ("litellm", "litellm", "", Some("edge"), Some("600s")),
    (
        "litemaas-backend",
        "litellm-backend",
        "/api",
        Some("edge"),
        Some("10min"),
    ),
    (
        "litemaas-frontend",
        "litellm-frontend",
        "",
        Some("edge"),
        None,
    ),
    ("litellm-ms", "litellm", "", None, Some("600")),
    ("litellm-zero", "litellm", "", Some("reencrypt"), Some("0")),
    ("litellm-mcp", "litellm-mcp", "", Some("edge"), Some("300s")),
    ("litellm-tls", "litellm", "", Some("passthrough"), None),
    ("litellm-huge", "litellm", "", Some("edge"), Some("30d")),
];

async fn server() -> TestApiServer {
    let server = TestApiServer::start().await.unwrap();
    server.create_namespace(NS).unwrap();
    for (name, app, path, termination, timeout) in ROUTES {
        let mut route = json!({
            "metadata": {"name": name, "labels": {"app": app}, "annotations": {"owner": "platform"}},
            "spec": {"host": format!("{name}.apps.example.com"), "to": {"kind": "Service", "name": name}},
        });
        if !path.is_empty() {
            route["spec"]["path"] = json!(path);
        }
        if let Some(t) = termination {
            route["spec"]["tls"] = json!({"termination": t});
        }
        if let Some(t) = timeout {
            route["metadata"]["annotations"][ANNOTATION] = json!(t);
        }
        server
            .create("route.openshift.io", "routes", NS, route)
            .unwrap();
    }
    server
}

fn routes(server: &TestApiServer, args: &[&str]) -> Output {
    routes_as(&server.kubeconfig_path(), args)
}

fn routes_as(kubeconfig: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_litemaas-routes"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("KUBECONFIG", kubeconfig)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8(out.stdout.clone()).unwrap(),
        String::from_utf8(out.stderr.clone()).unwrap(),
    )
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {:?}", text(out)))
}

/// Each route's (timeout annotation, resourceVersion) as kubectl sees them.
fn witness(server: &TestApiServer) -> BTreeMap<String, (Value, String)> {
    let out = server
        .kubectl()
        .args(["get", "routes", "-n", NS, "-o", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let meta = &r["metadata"];
            assert_eq!(
                meta["annotations"]["owner"], "platform",
                "other annotations kept"
            );
            (
                meta["name"].as_str().unwrap().to_owned(),
                (
                    meta["annotations"][ANNOTATION].clone(),
                    meta["resourceVersion"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect()
}

/// name → (status, effective, value)
fn verdicts(report: &Value) -> BTreeMap<String, (String, String)> {
    report["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().to_owned(),
                (
                    f["status"].as_str().unwrap().to_owned(),
                    f["effective"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect()
}

fn v(status: &str, effective: &str) -> (String, String) {
    (status.to_owned(), effective.to_owned())
}

const MCP: &str = "litellm-mcp=300s";

#[tokio::test(flavor = "multi_thread")]
async fn audit_reports_each_class_of_value_and_exits_2_when_a_route_is_out_of_policy() {
    let server = server().await;
    let out = routes(&server, &["audit", "-n", NS, "--timeout", MCP, "--json"]);
    assert_eq!(code(&out), 2, "{:?}", text(&out));
    let report = json_of(&out);
    assert_eq!(
        verdicts(&report),
        BTreeMap::from([
            ("litellm".into(), v("ok", "600s")),
            ("litemaas-backend".into(), v("ignored", "30s")),
            ("litemaas-frontend".into(), v("missing", "30s")),
            ("litellm-ms".into(), v("bare-milliseconds", "600ms")),
            ("litellm-zero".into(), v("ignored", "30s")),
            ("litellm-mcp".into(), v("ok", "300s")),
            ("litellm-tls".into(), v("ok", "3600s")),
            ("litellm-huge".into(), v("clipped", "2147483647ms")),
        ])
    );
    assert_eq!(report["out_of_policy"], 4);
    let backend = report["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "litemaas-backend")
        .unwrap();
    assert_eq!(backend["host"], "litemaas-backend.apps.example.com");
    assert_eq!(backend["path"], "/api");

    // The table says the same for people, with the reasons.
    let out = routes(&server, &["audit", "-n", NS, "--timeout", MCP]);
    assert_eq!(code(&out), 2);
    let (table, summary) = text(&out);
    for expected in [
        "litemaas-backend.apps.example.com/api",
        "IGNORED",
        "did you mean 10m?",
        "600 milliseconds (0.6 s)",
        "30s (default)",
        "3600s (default)",
        "passthrough: HAProxy runs it in TCP mode",
        "clips it to 2147483647ms",
    ] {
        assert!(table.contains(expected), "{expected:?} not in:\n{table}");
    }
    assert!(
        summary.contains("4 of 8 route(s) in namespace litemaas out of policy"),
        "{summary}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_its_override_the_mcp_route_is_below_the_default() {
    let server = server().await;
    let out = routes(&server, &["audit", "-n", NS, "litellm-mcp", "--json"]);
    assert_eq!(code(&out), 2);
    assert_eq!(
        verdicts(&json_of(&out)),
        BTreeMap::from([("litellm-mcp".into(), v("below", "300s"))])
    );
    let out = routes(
        &server,
        &["audit", "-n", NS, "litellm-mcp", "--timeout", MCP],
    );
    assert_eq!(code(&out), 0, "{:?}", text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_then_audit_is_clean_and_a_second_apply_changes_nothing() {
    let server = server().await;
    let before = witness(&server);
    let out = routes(&server, &["apply", "-n", NS, "--timeout", MCP]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    let (stdout, stderr) = text(&out);
    assert!(
        stdout.contains("litemaas-backend: set haproxy.router.openshift.io/timeout: 10min → 600s"),
        "{stdout}"
    );
    assert!(
        stderr.contains("set the timeout of 4 of 8 route(s)"),
        "{stderr}"
    );
    let after = witness(&server);
    for (name, (value, rv)) in &after {
        let (old_value, old_rv) = &before[name];
        match name.as_str() {
            "litemaas-backend" | "litemaas-frontend" | "litellm-ms" | "litellm-zero" => {
                assert_eq!(value, "600s", "{name}");
            }
            // In policy: not touched (a passthrough route keeps its 1h tunnel default, the
            // override keeps 300s, a clipped value is not lowered).
            _ => assert_eq!((value, rv), (old_value, old_rv), "{name}"),
        }
    }
    let out = routes(&server, &["audit", "-n", NS, "--timeout", MCP]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));

    let out = routes(&server, &["apply", "-n", NS, "--timeout", MCP, "--json"]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    assert_eq!(json_of(&out)["changes"], json!([]));
    assert!(
        text(&out).1.contains("nothing to change: all 8 route(s)"),
        "{:?}",
        text(&out)
    );
    assert_eq!(
        witness(&server),
        after,
        "the second apply changed something"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_shows_before_and_after_changes_nothing_and_exits_2() {
    let server = server().await;
    let before = witness(&server);
    let out = routes(&server, &["apply", "-n", NS, "--timeout", MCP, "--dry-run"]);
    assert_eq!(code(&out), 2, "{:?}", text(&out));
    let (stdout, stderr) = text(&out);
    for expected in [
        "litemaas-backend: would set haproxy.router.openshift.io/timeout: 10min → 600s (ignored; effective 30s → 600s)",
        "litemaas-frontend: would set haproxy.router.openshift.io/timeout: (none) → 600s (missing; effective 30s → 600s)",
        "litellm-ms: would set haproxy.router.openshift.io/timeout: 600 → 600s (bare-ms; effective 600ms → 600s)",
        "litellm-zero: would set haproxy.router.openshift.io/timeout: 0 → 600s",
    ] {
        assert!(stdout.contains(expected), "{expected:?} not in:\n{stdout}");
    }
    assert_eq!(stdout.lines().count(), 4, "{stdout}");
    assert!(stderr.contains("nothing was changed"), "{stderr}");
    assert_eq!(witness(&server), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_selector_or_names_limit_the_routes_and_a_missing_one_is_an_error() {
    let server = server().await;
    let out = routes(
        &server,
        &["audit", "-n", NS, "-l", "app=litellm-backend", "--json"],
    );
    assert_eq!(code(&out), 2);
    assert_eq!(
        verdicts(&json_of(&out)).into_keys().collect::<Vec<_>>(),
        ["litemaas-backend"]
    );
    let out = routes(
        &server,
        &[
            "audit",
            "-n",
            NS,
            "litellm",
            "litellm-tls",
            "--timeout",
            MCP,
        ],
    );
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    assert!(!text(&out).1.contains("warning"), "{:?}", text(&out));
    // Over the whole namespace, an override naming no route is probably a typo.
    let out = routes(
        &server,
        &["audit", "-n", NS, "--timeout", "litellm-mpc=300s"],
    );
    assert!(
        text(&out)
            .1
            .contains("warning: --timeout litellm-mpc=… names no audited route (a typo?)"),
        "{:?}",
        text(&out)
    );

    let before = witness(&server);
    let out = routes(&server, &["apply", "-n", NS, "litemaas-frontend", "nope"]);
    assert_eq!(code(&out), 1);
    assert_eq!(
        text(&out).1.trim(),
        "litemaas-routes: error: Route nope not found in namespace litemaas"
    );
    let out = routes(&server, &["apply", "-n", NS, "-l", "app=nothing"]);
    assert_eq!(code(&out), 1);
    assert!(
        text(&out)
            .1
            .contains("no Route in namespace litemaas matches -l app=nothing"),
        "{:?}",
        text(&out)
    );
    let out = routes(&server, &["audit", "-n", "empty"]);
    assert_eq!(code(&out), 1, "an empty namespace is no proof of anything");
    assert_eq!(witness(&server), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_values_are_refused_with_exit_1_and_change_nothing() {
    let server = server().await;
    let before = witness(&server);
    for (args, says) in [
        (
            &["--timeout-default", "600"][..],
            "the router would read 600 milliseconds",
        ),
        (&["--timeout-default", "10min"], "did you mean 10m?"),
        (&["--timeout-default", "0"], "not one the router accepts"),
        (&["--timeout", "litellm-mcp"], "is not NAME=TIMEOUT"),
        (
            &[
                "--timeout",
                "litellm-mcp=300s",
                "--timeout",
                "litellm-mcp=600s",
            ],
            "given twice",
        ),
    ] {
        let out = routes(&server, &[&["apply", "-n", NS][..], args].concat());
        assert_eq!(code(&out), 1, "{args:?}: {:?}", text(&out));
        assert!(text(&out).1.contains(says), "{args:?}: {:?}", text(&out));
    }
    assert_eq!(witness(&server), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_account_can_audit_and_its_apply_fails_naming_the_permission() {
    let server = server().await;
    server.add_token(
        "audit-token",
        Identity {
            user: "system:serviceaccount:litemaas:route-audit".into(),
            namespace: Some(NS.into()),
            rules: vec![Rule {
                api_groups: vec!["route.openshift.io".into()],
                resources: vec!["routes".into()],
                verbs: vec!["get".into(), "list".into()],
                resource_names: vec![],
            }],
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server
        .write_kubeconfig(&kubeconfig, "audit-token", NS)
        .unwrap();
    let before = witness(&server);
    let out = routes_as(&kubeconfig, &["audit", "-n", NS, "--timeout", MCP]);
    assert_eq!(code(&out), 2, "{:?}", text(&out));
    let out = routes_as(&kubeconfig, &["apply", "-n", NS, "--timeout", MCP]);
    assert_eq!(code(&out), 1, "{:?}", text(&out));
    let stderr = text(&out).1;
    // One line, with the server's message once (kube's own display repeats it in debug form).
    assert_eq!(
        stderr,
        "litemaas-routes: error: apply: cannot set the timeout of Route litemaas/litellm-ms (no route was changed): routes is forbidden: User \"system:serviceaccount:litemaas:route-audit\" cannot patch resource \"routes\" in API group \"route.openshift.io\" in the namespace \"litemaas\" (HTTP 403 Forbidden)\n"
    );
    assert_eq!(witness(&server), before);
}
