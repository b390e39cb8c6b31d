//! What a monitor sees of `litemaas-backup`: the metrics file, read by a Prometheus text parser,
//! and the notification, received by a local HTTP server, on success and on each kind of
//! failure; no secret in either.
#![allow(clippy::unwrap_used)]

use litemaas_testkit::{PgCluster, Webhook};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const TOKEN: &str = "T0001/B0001/webhooksecrettoken";

/// The binary with a clean environment, backing up into `home/backups`.
fn backup_cmd(home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_litemaas-backup"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env(
            "LITEMAAS_PG_DUMP",
            PgCluster::shared().bin_dir().join("pg_dump"),
        )
        .env("LITEMAAS_DEST", home.join("backups"))
        .env("LITEMAAS_METRICS_FILE", home.join("litemaas-backup.prom"))
        .current_dir(home)
        .stdin(Stdio::null());
    cmd
}

fn sample_db(prefix: &str) -> String {
    let pg = PgCluster::shared();
    let db = pg.create_database(prefix).unwrap();
    pg.seed_sample(&db).unwrap();
    db
}

async fn output(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The metrics file as Prometheus reads it: (metric, part, database) → value.
fn scrape(home: &Path) -> Vec<(String, String, String, f64)> {
    let text = std::fs::read_to_string(home.join("litemaas-backup.prom")).unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    scrape
        .samples
        .into_iter()
        .map(|s| {
            let value = match s.value {
                prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Counter(v) => v,
                other => panic!("{} is untyped: {other:?}", s.metric),
            };
            assert_eq!(s.labels.get("program"), Some("litemaas-backup"));
            (
                s.metric,
                s.labels.get("part").unwrap().to_owned(),
                s.labels.get("database").unwrap().to_owned(),
                value,
            )
        })
        .collect()
}

fn value(samples: &[(String, String, String, f64)], metric: &str, part: &str) -> Option<f64> {
    let metric = format!("litemaas_backup_{metric}");
    samples
        .iter()
        .find(|s| s.0 == metric && s.1 == part)
        .map(|s| s.3)
}

/// A webhook receiver: answers 200, keeps each body; its URL holds a token.
async fn receiver() -> (String, Webhook) {
    let hook = Webhook::start(&format!("/services/{TOKEN}")).await.unwrap();
    (hook.url().to_owned(), hook)
}

/// The notifications received, as JSON.
fn received(hook: &Webhook) -> Vec<Value> {
    hook.bodies()
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect()
}

fn now() -> f64 {
    jiff::Timestamp::now().as_millisecond() as f64 / 1000.0
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_run_keeps_the_last_success_and_records_the_failure() {
    let home = tempfile::tempdir().unwrap();
    let db = sample_db("metrics_keep");
    let url = PgCluster::shared().url(&db);

    let before = now();
    let mut cmd = backup_cmd(home.path());
    cmd.env("LITEMAAS_DATABASE_URL", &url);
    let out = output(cmd).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let first = scrape(home.path());
    let success = value(&first, "last_success_timestamp_seconds", "dump").unwrap();
    assert!(success >= before.floor() && success <= now(), "{success}");
    assert!(
        first.iter().any(|s| s.1 == "dump" && s.2 == db),
        "{first:?}"
    );
    // The bytes stored are the object's size.
    let stored: u64 = walk(&home.path().join("backups"))
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "gz"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(
        value(&first, "last_success_stored_bytes", "dump"),
        Some(stored as f64)
    );
    for part in ["dump", "retention", "run"] {
        assert_eq!(
            value(&first, "last_attempt_success", part),
            Some(1.0),
            "{part}"
        );
        assert!(value(&first, "last_duration_seconds", part).unwrap() > 0.0);
    }

    // The same job, its pg_dump gone: the dump fails.
    let mut cmd = backup_cmd(home.path());
    cmd.env("LITEMAAS_DATABASE_URL", &url)
        .env("LITEMAAS_PG_DUMP", "/nonexistent/pg_dump");
    let out = output(cmd).await;
    assert!(!out.status.success());
    let second = scrape(home.path());
    assert_eq!(
        value(&second, "last_success_timestamp_seconds", "dump"),
        Some(success),
        "the last success is kept"
    );
    assert_eq!(
        value(&second, "last_success_stored_bytes", "dump"),
        Some(stored as f64)
    );
    assert_eq!(value(&second, "last_attempt_success", "dump"), Some(0.0));
    assert_eq!(value(&second, "last_attempt_success", "run"), Some(0.0));
    assert!(value(&second, "last_attempt_timestamp_seconds", "run").unwrap() >= success);
    assert_eq!(value(&second, "attempts_total", "dump"), Some(2.0));
    assert_eq!(value(&second, "failures_total", "dump"), Some(1.0));
    assert_eq!(value(&second, "failures_total", "run"), Some(1.0));
    // Retention did not run: its series are the first run's.
    assert_eq!(value(&second, "attempts_total", "retention"), Some(1.0));
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_cluster_writes_the_failed_run_and_notifies_without_secrets() {
    let home = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let kubeconfig = home.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\nusers: [{{name: u, user: {{token: kubetokensecret}}}}]\ncontexts: [{{name: x, context: {{cluster: c, user: u, namespace: litemaas}}}}]\ncurrent-context: x\n"
        ),
    )
    .unwrap();
    let (url, bodies) = receiver().await;
    let mut cmd = backup_cmd(home.path());
    cmd.env("KUBECONFIG", &kubeconfig)
        .env("LITEMAAS_NOTIFY_URL", &url)
        .env("LITEMAAS_TIMEOUT", "20s")
        .args(["--namespace", "litemaas", "--bucket", "b"]);
    let out = output(cmd).await;
    assert!(!out.status.success());
    let samples = scrape(home.path());
    assert_eq!(value(&samples, "last_attempt_success", "run"), Some(0.0));
    assert_eq!(
        value(&samples, "last_success_timestamp_seconds", "run"),
        Some(0.0),
        "never succeeded"
    );
    let text = std::fs::read_to_string(home.path().join("litemaas-backup.prom")).unwrap();
    assert!(text.contains(r#"namespace="litemaas""#), "{text}");

    let bodies = received(&bodies);
    assert_eq!(bodies.len(), 1, "one notification");
    let body = &bodies[0];
    assert_eq!(body["program"], "litemaas-backup");
    assert_eq!(body["outcome"], "failure");
    assert_eq!(body["namespace"], "litemaas");
    assert!(!body["host"].as_str().unwrap().is_empty());
    let error = body["error"].as_str().unwrap();
    assert!(
        stderr(&out).contains(&format!("litemaas-backup: error: {error}")),
        "the error line is the one printed: {error} / {}",
        stderr(&out)
    );
    for place in [body.to_string(), stderr(&out), text] {
        for secret in ["kubetokensecret", "webhooksecrettoken", "services/"] {
            assert!(!place.contains(secret), "{secret} in {place}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn success_is_notified_only_when_asked_and_says_what_was_stored() {
    let home = tempfile::tempdir().unwrap();
    let db = sample_db("notify_success");
    let pg = PgCluster::shared();
    let (url, bodies) = receiver().await;

    let mut cmd = backup_cmd(home.path());
    cmd.env("LITEMAAS_DATABASE_URL", pg.url(&db))
        .env("LITEMAAS_NOTIFY_URL", &url);
    let out = output(cmd).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(bodies.bodies().is_empty(), "default: failures only");

    let mut cmd = backup_cmd(home.path());
    cmd.env("LITEMAAS_DATABASE_URL", pg.url(&db))
        .env("LITEMAAS_NOTIFY_URL", &url)
        .env("LITEMAAS_DEST", home.path().join("second"))
        .args(["--notify-on", "success"]);
    let out = output(cmd).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let bodies = received(&bodies);
    assert_eq!(bodies.len(), 1);
    let body = &bodies[0];
    assert_eq!(body["outcome"], "success");
    assert_eq!(body["error"], Value::Null);
    let dump = &body["parts"][0];
    assert_eq!(dump["part"], "dump");
    assert_eq!(dump["database"], db.as_str());
    let key = dump["key"].as_str().unwrap();
    let size = std::fs::metadata(home.path().join("second").join(key))
        .unwrap()
        .len();
    assert_eq!(dump["bytes"], size);
    assert_eq!(body["parts"][1]["part"], "retention");
    assert!(!body.to_string().contains(pg.password()));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_undeliverable_notification_warns_and_keeps_the_exit_code() {
    let home = tempfile::tempdir().unwrap();
    let db = sample_db("notify_dead");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = backup_cmd(home.path());
    cmd.env("LITEMAAS_DATABASE_URL", PgCluster::shared().url(&db))
        .env(
            "LITEMAAS_NOTIFY_URL",
            format!("http://127.0.0.1:{port}/services/{TOKEN}"),
        )
        .args(["--notify-on", "always"]);
    let out = output(cmd).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("litemaas-backup: warning: notification to http://127.0.0.1:")
            && err.contains("after 4 attempt(s)"),
        "{err}"
    );
    assert!(!err.contains("webhooksecrettoken"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_monitoring_flags_are_one_line_and_nothing_is_backed_up() {
    let home = tempfile::tempdir().unwrap();
    let db = sample_db("metrics_bad_flags");
    let url = PgCluster::shared().url(&db);

    let mut cmd = backup_cmd(home.path());
    cmd.env("LITEMAAS_DATABASE_URL", &url)
        .env("LITEMAAS_METRICS_FILE", home.path().join("missing/x.prom"));
    let out = output(cmd).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--metrics-file") && stderr(&out).contains("missing"),
        "{}",
        stderr(&out)
    );
    assert!(
        !home.path().join("backups").exists(),
        "nothing was backed up"
    );

    // A URL that is not http(s): refused, never repeated; the metrics file says the run failed.
    let mut cmd = backup_cmd(home.path());
    cmd.env("LITEMAAS_DATABASE_URL", &url)
        .env("LITEMAAS_NOTIFY_URL", format!("hooks.example/{TOKEN}"));
    let out = output(cmd).await;
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("--notify-url") && !err.contains("webhooksecrettoken"),
        "{err}"
    );
    assert!(
        !home.path().join("backups").exists(),
        "nothing was backed up"
    );
    let samples = scrape(home.path());
    assert_eq!(value(&samples, "last_attempt_success", "run"), Some(0.0));
    assert_eq!(value(&samples, "attempts_total", "dump"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_still_writes_the_metrics_and_the_notification() {
    let home = tempfile::tempdir().unwrap();
    // A pg_dump that hangs, as one waiting behind a lock does.
    let fake = home.path().join("pg_dump");
    std::fs::write(&fake, "#!/bin/sh\nexec sleep 30\n").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (url, bodies) = receiver().await;
    let mut cmd = backup_cmd(home.path());
    cmd.env("LITEMAAS_PG_DUMP", &fake)
        .env(
            "LITEMAAS_DATABASE_URL",
            "postgres://litemaas@127.0.0.1:1/litellm",
        )
        .env("LITEMAAS_NOTIFY_URL", &url)
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let status = Command::new("kill")
        .args(["-s", "TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(!out.status.success());
    let samples = scrape(home.path());
    assert_eq!(value(&samples, "last_attempt_success", "dump"), Some(0.0));
    assert_eq!(value(&samples, "last_attempt_success", "run"), Some(0.0));
    assert!(
        samples.iter().any(|s| s.1 == "dump" && s.2 == "litellm"),
        "{samples:?}"
    );
    let bodies = received(&bodies);
    assert_eq!(bodies.len(), 1, "{}", stderr(&out));
    assert_eq!(bodies[0]["outcome"], "failure");
    assert_eq!(bodies[0]["parts"][0]["part"], "dump");
}
