//! `litemaas-restore --namespace`: psql inside the database "pod" of the test Kubernetes API
//! server (which, like a kubelet, only closes the command's stdin when an exec stream ends),
//! a real PostgreSQL 15 behind it, and the S3 test server.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use bytes::Bytes;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use litemaas_backup::backup::{self, BackupOptions};
use litemaas_backup::dump::{PgConnection, PgDump};
use litemaas_backup::store::{ObjectStore, S3Store};
use litemaas_testapi::TestApiServer;
use litemaas_testkit::{PgCluster, S3Server};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const NS: &str = "litemaas";

struct Pod {
    api: TestApiServer,
    db: String,
    store: S3Store,
    home: tempfile::TempDir,
}

async fn pod(name: &str) -> Pod {
    let pg = PgCluster::shared();
    let db = pg.create_database(&name.replace('-', "_")).unwrap();
    pg.seed_sample(&db).unwrap();
    let api = TestApiServer::start().await.unwrap();
    api.create_namespace(NS).unwrap();
    let mut data = BTreeMap::new();
    for (k, v) in [
        ("username", "postgres"),
        ("password", pg.password()),
        ("database", db.as_str()),
    ] {
        data.insert(k.to_owned(), ByteString(v.as_bytes().to_vec()));
    }
    let mut secret = Secret::default();
    secret.metadata.name = Some("litemaas-db".into());
    secret.data = Some(data);
    api.create("", "secrets", NS, serde_json::to_value(&secret).unwrap())
        .unwrap();
    api.create(
        "",
        "pods",
        NS,
        json!({"metadata": {"name": "litellm-postgres-0", "labels": {"app": "litellm-postgres"}},
        "spec": {"containers": [{"name": "postgres"}]}, "status": {"phase": "Running"}}),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        pg.bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    api.set_exec_env(
        NS,
        "litellm-postgres-0",
        vec![
            ("PGHOST".into(), "127.0.0.1".into()),
            ("PGPORT".into(), pg.port().to_string()),
            ("PATH".into(), path),
        ],
    );
    let server = S3Server::shared();
    let store = S3Store::new(server.client(), server.new_bucket(name).await.unwrap());
    Pod {
        api,
        db,
        store,
        home: tempfile::tempdir().unwrap(),
    }
}

impl Pod {
    fn restore(&self, extra: &[&str]) -> Output {
        self.restore_cmd(extra).output().unwrap()
    }

    fn restore_cmd(&self, extra: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_litemaas-restore"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("KUBECONFIG", self.api.kubeconfig_path())
            .envs(S3Server::shared().env())
            .args(["--namespace", NS, "--bucket", self.store.bucket()])
            .args(extra)
            .stdin(Stdio::null());
        cmd
    }

    async fn backup(&self) -> String {
        let pg = PgCluster::shared();
        let source = PgDump::new(PgConnection::parse(&pg.url(&self.db)).unwrap())
            .program(pg.bin_dir().join("pg_dump"));
        let options = BackupOptions::new(jiff::Timestamp::from_second(1_767_225_600).unwrap());
        backup::run(&source, &self.store, &options, &CancellationToken::new())
            .await
            .unwrap()
            .key
    }
}

fn change(db: &str) {
    PgCluster::shared()
        .psql(
            db,
            "INSERT INTO users (email) VALUES ('later@example.com'); DELETE FROM spend_logs WHERE request_id = 'req-2';",
        )
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn restores_in_the_pod_with_the_password_only_on_stdin() {
    let pg = PgCluster::shared();
    let p = pod("restore-pod").await;
    let original = pg.dump_for_comparison(&p.db).unwrap();
    let key = p.backup().await;
    change(&p.db);

    let out = p.restore(&["--key", &key, "--yes"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("in pod litemaas/litellm-postgres-0"), "{err}");
    assert_eq!(pg.dump_for_comparison(&p.db).unwrap(), original);
    let execs = p.api.exec_log();
    assert!(!execs.is_empty());
    for exec in &execs {
        let line = format!("{} {}", exec.command.join(" "), exec.request_uri);
        assert!(line.contains("psql"), "{line}");
        assert!(
            !line.contains(pg.password()),
            "password in an exec request: {line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn swaps_in_the_pod_after_loading_on_two_connections() {
    let pg = PgCluster::shared();
    let p = pod("restore-pod-swap").await;
    let original = pg.dump_for_comparison(&p.db).unwrap();
    let key = p.backup().await;
    change(&p.db);

    let out = p.restore(&[
        "--key",
        &key,
        "--swap",
        "--drop-previous",
        "--jobs",
        "2",
        "--yes",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("loaded on 2 connection(s)"), "{err}");
    assert_eq!(pg.dump_for_comparison(&p.db).unwrap(), original);
    let execs = p.api.exec_log();
    // The loader's two sessions beside the administrative ones.
    assert!(execs.len() >= 4, "{}", execs.len());
    for exec in &execs {
        let line = format!("{} {}", exec.command.join(" "), exec.request_uri);
        assert!(line.contains("psql"), "{line}");
        assert!(
            !line.contains(pg.password()),
            "password in an exec request: {line}"
        );
    }
    let left = pg
        .psql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_database WHERE datname LIKE '{}\\_%'",
                p.db
            ),
        )
        .unwrap();
    assert_eq!(left.trim(), "0", "no new or previous database left");
}

/// A dump cut inside a COPY block (at a row's end, so psql would end the COPY cleanly at end of
/// input): the exec'd psql gets its end of input, and nothing is committed, although the test
/// server (like a kubelet) lets psql run on after the stream closes.
#[tokio::test(flavor = "multi_thread")]
async fn a_cut_dump_in_the_pod_changes_nothing() {
    let pg = PgCluster::shared();
    let p = pod("restore-pod-cut").await;
    change(&p.db);
    let before = pg.dump_for_comparison(&p.db).unwrap();
    let out = pg
        .command("pg_dump")
        .args(["--clean", "--if-exists", "-d", &p.db])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let at = text.find("COPY public.spend_logs_2025").unwrap() + 3000;
    let cut = &text[..=text[..at].rfind('\n').unwrap()];
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(cut.as_bytes()).unwrap();
    let key = "litemaas-backups/database-20260101-000000.sql.gz";
    p.store
        .put(key, Bytes::from(gz.finish().unwrap()))
        .await
        .unwrap();

    let out = p.restore(&["--key", key, "--yes"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("ends inside the COPY data"), "{err}");
    assert!(
        p.api.wait_exec_idle(Duration::from_secs(30)).await,
        "psql in the pod did not end"
    );
    assert_eq!(pg.dump_for_comparison(&p.db).unwrap(), before);

    // A missing Secret is one clear line, and nothing runs in the pod.
    let runs = p.api.exec_log().len();
    let out = p.restore(&["--key", key, "--yes", "--secret", "no-such-secret"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("Secret litemaas/no-such-secret not found"),
        "{err}"
    );
    assert_eq!(p.api.exec_log().len(), runs);
}

/// A backup (or another restore) holds the namespace's Lease: the restore is refused before
/// anything runs in the pod.
#[tokio::test(flavor = "multi_thread")]
async fn a_held_lease_refuses_the_restore() {
    let pg = PgCluster::shared();
    let p = pod("restore-pod-lease").await;
    let key = p.backup().await;
    change(&p.db);
    let before = pg.dump_for_comparison(&p.db).unwrap();
    let now = jiff::Timestamp::now().to_string();
    p.api
        .create(
            "coordination.k8s.io",
            "leases",
            NS,
            json!({"metadata": {"name": "litemaas-backup"}, "spec": {"holderIdentity": "bastion-4242",
                "leaseDurationSeconds": 120, "acquireTime": now, "renewTime": now}}),
        )
        .unwrap();
    let out = p.restore(&["--key", &key, "--yes"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("a backup or restore is already running in namespace litemaas")
            && err.contains("bastion-4242")
            && err.contains("nothing was changed"),
        "{err}"
    );
    assert!(p.api.exec_log().is_empty(), "nothing ran in the pod");
    assert_eq!(pg.dump_for_comparison(&p.db).unwrap(), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restore_in_the_pod_stopped_while_waiting_for_a_lock_leaves_no_session_behind() {
    let pg = PgCluster::shared();
    let p = pod("restore-pod-lock").await;
    let key = p.backup().await;
    change(&p.db);
    let before = pg.dump_for_comparison(&p.db).unwrap();
    let blocker = pg
        .open_transaction(&p.db, "SELECT count(*) FROM spend_logs")
        .unwrap();
    let db = &p.db;
    let waiting = format!("datname = '{db}' AND wait_event_type = 'Lock'");
    let child = p
        // No lock-wait reports (0s): each would be an exec of its own, and the execs are counted.
        // -v: the steps of the stop (the session ended, psql's exit) are in a failure's output.
        .restore_cmd(&["--key", &key, "--yes", "--lock-wait-report", "0s", "-v"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    pg.sessions_until(&waiting, "the restore waiting for its lock", |n| n > 0);
    let execs = p.api.exec_log().len();

    // SAFETY: signalling our own child.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let stopped = std::time::Instant::now();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cancelled"), "{err}");
    assert!(stopped.elapsed() < Duration::from_secs(20), "{err}");
    // Ending the exec stream only closes psql's stdin in the pod, which a psql stuck in a
    // statement does not read: the restore ended its server session through an exec of its own.
    assert_eq!(p.api.exec_log().len(), execs + 1, "one more exec: the stop");
    pg.sessions_until(&waiting, "sessions waiting for a lock", |n| n == 0);
    pg.psql(
        &p.db,
        "SET lock_timeout = '2s'; SELECT count(*) FROM users; SELECT count(*) FROM api_keys;",
    )
    .unwrap();
    drop(blocker);
    assert_eq!(pg.dump_for_comparison(&p.db).unwrap(), before);
}
