//! Cluster mode end to end: the test Kubernetes API server (with kubectl as a witness), a real
//! PostgreSQL 15 behind a "pod", and the S3 test server.
#![allow(clippy::unwrap_used)]

use std::process::Output;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use litemaas_backup::store::{ObjectStore, S3Store};
use litemaas_testapi::{ControllerConfig, SnapshotBehavior, TestApiServer};
use litemaas_testkit::{PgCluster, S3Server};
use serde_json::json;

const NS: &str = "litemaas";

struct Cluster {
    api: TestApiServer,
    db: String,
    store: S3Store,
    home: tempfile::TempDir,
}

#[derive(Default)]
struct Setup {
    no_pod: bool,
    no_pvc: bool,
    no_secret: bool,
    secret_without: Option<&'static str>,
    large: bool,
    /// `LITELLM_DATABASE_URL` in the Secret: a second database with its own user.
    litellm_url: Option<String>,
}

async fn cluster(name: &str, snapshots: SnapshotBehavior, setup: Setup) -> Cluster {
    let pg = PgCluster::shared();
    let db = pg.create_database(&name.replace('-', "_")).unwrap();
    pg.seed_sample(&db).unwrap();
    if setup.large {
        pg.psql(&db, "CREATE TABLE big AS SELECT g, (SELECT string_agg(md5(random()::text || g || h), '') FROM generate_series(1, 60) h) AS payload FROM generate_series(1, 20000) g").unwrap();
    }
    let api = TestApiServer::start_with(ControllerConfig {
        snapshots,
        ..ControllerConfig::default()
    })
    .await
    .unwrap();
    api.create_namespace(NS).unwrap();
    if !setup.no_secret {
        let mut data = std::collections::BTreeMap::new();
        for (k, v) in [
            ("username", "postgres"),
            ("password", pg.password()),
            ("database", db.as_str()),
        ] {
            if setup.secret_without != Some(k) {
                data.insert(k.to_owned(), ByteString(v.as_bytes().to_vec()));
            }
        }
        if let Some(url) = &setup.litellm_url {
            data.insert(
                "LITELLM_DATABASE_URL".into(),
                ByteString(url.as_bytes().to_vec()),
            );
        }
        let mut secret = Secret::default();
        secret.metadata.name = Some("litemaas-db".into());
        secret.data = Some(data);
        api.create("", "secrets", NS, serde_json::to_value(&secret).unwrap())
            .unwrap();
    }
    if !setup.no_pod {
        api.create("", "pods", NS, json!({"metadata": {"name": "litellm-postgres-0", "labels": {"app": "litellm-postgres"}},
            "spec": {"containers": [{"name": "postgres"}]}, "status": {"phase": "Running"}})).unwrap();
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
    }
    if !setup.no_pvc {
        api.create("", "persistentvolumeclaims", NS, json!({"metadata": {"name": "postgres-storage-litellm-postgres-0",
            "labels": {"app": "litellm-postgres"}}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}}})).unwrap();
    }
    let server = S3Server::shared();
    let store = S3Store::new(server.client(), server.new_bucket(name).await.unwrap());
    Cluster {
        api,
        db,
        store,
        home: tempfile::tempdir().unwrap(),
    }
}

impl Cluster {
    fn backup(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_litemaas-backup"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("KUBECONFIG", self.api.kubeconfig_path())
            .envs(S3Server::shared().env())
            .env("LITEMAAS_SNAPSHOT_TIMEOUT", "10s")
            .args(["--namespace", NS, "--bucket", self.store.bucket()]);
        cmd
    }

    async fn run(&self, extra: &[&str]) -> Output {
        self.backup().args(extra).output().await.unwrap()
    }

    fn snapshots(&self) -> Vec<serde_json::Value> {
        let out = self
            .api
            .kubectl()
            .args([
                "get",
                "volumesnapshots",
                "-n",
                NS,
                "-l",
                "app=litemaas-backup",
                "-o",
                "json",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        list["items"].as_array().unwrap().clone()
    }

    async fn keys(&self) -> Vec<String> {
        self.store
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect()
    }

    /// `n` complete dumps and `m` ready snapshots from months ago.
    async fn history(&self, dumps: usize, snapshots: usize) {
        for i in 0..dumps {
            let name = format!("database-2024{:02}01-020000.sql.gz", i + 1);
            self.store
                .put(
                    &format!("litemaas-backups/{name}"),
                    bytes::Bytes::from_static(b"old dump"),
                )
                .await
                .unwrap();
            self.store
                .put(
                    &format!("litemaas-backups/records/{name}.json"),
                    bytes::Bytes::from_static(b"{}"),
                )
                .await
                .unwrap();
        }
        for i in 0..snapshots {
            let name = format!("litemaas-snapshot-2024{:02}01-020000", i + 1);
            self.api
                .create_aged("snapshot.storage.k8s.io", "volumesnapshots", NS, json!({"metadata": {"name": name, "labels": {"app": "litemaas-backup", "backup-type": "monthly"}},
                    "spec": {"source": {"persistentVolumeClaimName": "postgres-storage-litellm-postgres-0"}}}), &format!("2024-{:02}-01T02:00:00Z", i + 1))
                .unwrap();
        }
        // The simulated snapshotter makes them ready shortly; wait until it has.
        for _ in 0..100 {
            if self
                .snapshots()
                .iter()
                .all(|s| s["status"]["readyToUse"] == json!(true))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The system `gunzip`, not our code, reads what was stored.
fn gunzip(gz: Vec<u8>) -> Vec<u8> {
    let mut child = std::process::Command::new("gunzip")
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut input, &gz));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "gunzip failed");
    out.stdout
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_whole_run_backs_up_restorably_and_snapshots_with_the_labels() {
    let c = cluster(
        "cluster-ok",
        SnapshotBehavior::ReadyAfter(Duration::from_millis(300)),
        Setup::default(),
    )
    .await;
    let out = c.run(&["--json"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let key = report["dumps"][0]["ok"]["key"].as_str().unwrap();
    assert!(
        key.starts_with("litemaas-backups/database-") && key.ends_with(".sql.gz"),
        "{key}"
    );
    let snapshot = report["snapshot"]["ok"]["name"].as_str().unwrap();
    assert_eq!(
        &key["litemaas-backups/database-".len().."litemaas-backups/database-".len() + 15],
        &snapshot["litemaas-snapshot-".len()..],
        "same time stamp"
    );

    // The object restores to an identical database (plain gunzip, psql).
    let pg = PgCluster::shared();
    let gz = c.store.get_bytes(key).await.unwrap();
    let sql = gunzip(gz.to_vec());
    let restored = pg.create_database("cluster_restored").unwrap();
    pg.run_script(&restored, &sql).unwrap();
    assert_eq!(
        pg.dump_for_comparison(&c.db).unwrap(),
        pg.dump_for_comparison(&restored).unwrap()
    );

    // kubectl sees the snapshot, labelled and ready.
    let snaps = c.snapshots();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["metadata"]["name"], snapshot);
    assert_eq!(
        snaps[0]["metadata"]["labels"],
        json!({"app": "litemaas-backup", "backup-type": "monthly"})
    );
    assert_eq!(snaps[0]["status"]["readyToUse"], json!(true));

    // What the API server's audit log would hold: no password anywhere.
    let password = pg.password();
    let execs = c.api.exec_log();
    assert_eq!(execs.len(), 1);
    assert!(execs[0].command.iter().any(|a| a.contains("pg_dump")));
    assert!(
        !execs[0].command.iter().any(|a| a.contains(password))
            && !execs[0].request_uri.contains(password)
    );
    assert!(!stderr(&out).contains(password));
    // The lease is released.
    assert!(
        c.api
            .get("coordination.k8s.io", "leases", NS, "litemaas-backup")
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_that_never_becomes_ready_times_out_and_nothing_is_deleted() {
    let c = cluster("cluster-stuck", SnapshotBehavior::Never, Setup::default()).await;
    c.api.set_controllers(ControllerConfig::default());
    c.history(12, 3).await;
    c.api.set_controllers(ControllerConfig {
        snapshots: SnapshotBehavior::Never,
        ..ControllerConfig::default()
    });
    let before = c.keys().await;
    let out = c.run(&["--snapshot-timeout", "1s"]).await;
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("was not readyToUse after 1s") && err.contains("litemaas/litemaas-snapshot-"),
        "{err}"
    );
    assert!(err.contains("nothing was deleted"), "{err}");
    // The new dump is kept; no older dump or snapshot was deleted.
    let after = c.keys().await;
    assert!(before.iter().all(|k| after.contains(k)));
    assert_eq!(after.len(), before.len() + 2);
    assert_eq!(c.snapshots().len(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_snapshot_reports_its_message_and_nothing_is_deleted() {
    let c = cluster(
        "cluster-snapfail",
        SnapshotBehavior::ReadyAfter(Duration::from_millis(10)),
        Setup::default(),
    )
    .await;
    c.history(12, 3).await;
    c.api.set_controllers(ControllerConfig {
        snapshots: SnapshotBehavior::Fail("rbd: image is busy".into()),
        ..ControllerConfig::default()
    });
    let before = c.keys().await;
    let out = c.run(&["--snapshot-timeout", "2s"]).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("rbd: image is busy"),
        "{}",
        stderr(&out)
    );
    assert!(before.iter().all(|k| c.keys_blocking_contains(k)));
    assert_eq!(c.snapshots().len(), 4);
}

impl Cluster {
    fn keys_blocking_contains(&self, key: &str) -> bool {
        let store = self.store.clone();
        let key = key.to_owned();
        std::thread::spawn(move || {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(async move { store.head(&key).await.is_ok() })
        })
        .join()
        .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_after_a_good_run_deletes_the_13th_dump_and_the_4th_snapshot() {
    let c = cluster(
        "cluster-retention",
        SnapshotBehavior::ReadyAfter(Duration::from_millis(10)),
        Setup::default(),
    )
    .await;
    c.history(12, 3).await;
    let out = c.run(&["--json"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["dump_retention"][0]["ok"]["deleted"],
        json!(["litemaas-backups/database-20240101-020000.sql.gz"])
    );
    assert_eq!(
        report["snapshot_retention"]["ok"]["deleted"],
        json!(["litemaas-snapshot-20240101-020000"])
    );
    let names: Vec<String> = c
        .snapshots()
        .iter()
        .map(|s| s["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names.len(), 3);
    assert!(!names.contains(&"litemaas-snapshot-20240101-020000".to_owned()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_dump_deletes_nothing_and_leaves_nothing() {
    let c = cluster(
        "cluster-dumpfail",
        SnapshotBehavior::ReadyAfter(Duration::from_millis(10)),
        Setup {
            large: true,
            ..Setup::default()
        },
    )
    .await;
    c.history(12, 3).await;
    let before = c.keys().await;
    let pg = PgCluster::shared();
    let db = c.db.clone();
    let killer = tokio::task::spawn_blocking(move || {
        for _ in 0..1000 {
            let killed = pg
                .psql("postgres", &format!("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{db}' AND query LIKE 'COPY%'"))
                .unwrap();
            if killed.trim() != "0" {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    });
    let out = c.run(&["--part-size-mib", "5"]).await;
    assert!(killer.await.unwrap(), "the COPY was never seen");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("dump of") && err.contains("pg_dump") && err.contains("exit code"),
        "{err}"
    );
    assert!(err.contains("nothing was deleted"), "{err}");
    assert_eq!(c.keys().await, before, "no new object, nothing deleted");
    assert!(
        c.store.list_pending_uploads("").await.unwrap().is_empty(),
        "no multipart upload left open"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_pieces_are_one_clear_line_each_and_nothing_is_created() {
    for (setup, want) in [
        (
            Setup {
                no_pod: true,
                ..Setup::default()
            },
            "no Running pod with labels app=litellm-postgres in namespace litemaas",
        ),
        (
            Setup {
                no_pvc: true,
                ..Setup::default()
            },
            "no PersistentVolumeClaim with labels app=litellm-postgres in namespace litemaas",
        ),
        (
            Setup {
                no_secret: true,
                ..Setup::default()
            },
            "Secret litemaas/litemaas-db not found",
        ),
        (
            Setup {
                secret_without: Some("password"),
                ..Setup::default()
            },
            r#"Secret litemaas/litemaas-db has no (non-empty) key "password""#,
        ),
    ] {
        let c = cluster("cluster-missing", SnapshotBehavior::Never, setup).await;
        let out = c.run(&[]).await;
        assert!(!out.status.success());
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with("litemaas-backup: error:") && err.contains(want),
            "{want}: {err}"
        );
        assert!(c.keys().await.is_empty());
        assert!(c.snapshots().is_empty());
        assert!(
            c.api
                .get("coordination.k8s.io", "leases", NS, "litemaas-backup")
                .is_err()
        );
        assert!(c.api.exec_log().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_runs_at_once_one_proceeds_the_other_says_a_backup_is_running() {
    let c = cluster(
        "cluster-overlap",
        SnapshotBehavior::ReadyAfter(Duration::from_secs(3)),
        Setup::default(),
    )
    .await;
    let first = c
        .backup()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if c.api
            .get("coordination.k8s.io", "leases", NS, "litemaas-backup")
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = c.run(&[]).await;
    assert!(!second.status.success());
    let err = stderr(&second);
    assert!(
        err.contains("a backup or restore is already running in namespace litemaas"),
        "{err}"
    );
    let first = first.wait_with_output().await.unwrap();
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(c.snapshots().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_database_is_dumped_with_the_login_from_litellm_database_url() {
    let pg = PgCluster::shared();
    let db2 = pg.create_database("cluster_litellm").unwrap();
    let role = format!("{db2}_user");
    let role_password = "litellm-s3cret-pw";
    pg.psql("postgres", &format!("CREATE ROLE {role} LOGIN PASSWORD '{role_password}'; ALTER DATABASE {db2} OWNER TO {role}")).unwrap();
    pg.command("psql").env("PGUSER", &role).env("PGPASSWORD", role_password)
        .args(["-X", "-q", "-d", &db2, "-c", "CREATE TABLE \"LiteLLM_SpendLogs\" (request_id text PRIMARY KEY); INSERT INTO \"LiteLLM_SpendLogs\" VALUES ('chatcmpl-1')"])
        .status().unwrap();
    let url = format!("postgresql://{role}:{role_password}@litellm-postgres:5432/{db2}");
    let setup = Setup {
        litellm_url: Some(url),
        ..Setup::default()
    };
    let c = cluster(
        "cluster-two-dbs",
        SnapshotBehavior::ReadyAfter(Duration::from_millis(10)),
        setup,
    )
    .await;
    let out = c
        .run(&["--json", "--database", &c.db, "--database", &db2])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let first = report["dumps"][0]["ok"]["key"].as_str().unwrap();
    let second = report["dumps"][1]["ok"]["key"].as_str().unwrap();
    assert!(first.starts_with("litemaas-backups/database-"), "{first}");
    assert!(
        second.starts_with(&format!("litemaas-backups/{db2}/database-")),
        "{second}"
    );
    let gz = c.store.get_bytes(second).await.unwrap();
    let sql = String::from_utf8(gunzip(gz.to_vec())).unwrap();
    assert!(sql.contains("chatcmpl-1") && sql.contains("LiteLLM_SpendLogs"));
    // The second dump ran as the URL's user; neither password is in any exec request.
    let execs = c.api.exec_log();
    assert!(execs[1].command.contains(&role));
    for exec in &execs {
        let line = format!("{} {}", exec.command.join(" "), exec.request_uri);
        assert!(!line.contains(role_password) && !line.contains(pg.password()));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kubeconfig_context_is_chosen_by_name_and_a_wrong_one_is_named() {
    let c = cluster(
        "cluster-context",
        SnapshotBehavior::ReadyAfter(Duration::from_millis(10)),
        Setup::default(),
    )
    .await;
    let out = c.run(&["--context", "no-such-context"]).await;
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("kubeconfig context no-such-context"), "{err}");
    assert!(c.keys().await.is_empty());
    let out = c.run(&["--context", "testapi", "--no-snapshot"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(c.snapshots().is_empty(), "--no-snapshot takes none");
    assert_eq!(c.keys().await.len(), 2, "the dump and its record");
}

/// Another run takes the Lease over while this one waits for its snapshot: this run learns it
/// within a renewal period, stops, prunes nothing, and leaves the new holder's Lease alone.
#[tokio::test(flavor = "multi_thread")]
async fn a_lease_stolen_mid_run_stops_the_run_and_nothing_is_deleted() {
    let c = cluster(
        "cluster-stolen-lease",
        SnapshotBehavior::ReadyAfter(Duration::from_secs(60)),
        Setup::default(),
    )
    .await;
    c.history(12, 3).await;
    let before = c.keys().await;
    let run = c
        .backup()
        .args(["--lease-duration", "3s", "--snapshot-timeout", "90s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The dump is stored and the snapshot requested: the run now waits for readyToUse.
    for _ in 0..600 {
        if c.snapshots().len() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(c.snapshots().len(), 4, "the run's snapshot was requested");
    let mut lease = c
        .api
        .get("coordination.k8s.io", "leases", NS, "litemaas-backup")
        .unwrap();
    lease["spec"]["holderIdentity"] = json!("thief-host-9");
    c.api
        .replace(
            "coordination.k8s.io",
            "leases",
            NS,
            "litemaas-backup",
            lease,
        )
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(30), run.wait_with_output())
        .await
        .expect("the run stops well before its snapshot would be ready")
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("lost the lease litemaas/litemaas-backup to thief-host-9"),
        "{err}"
    );
    // Nothing was pruned: every old dump and snapshot is still there.
    let after = c.keys().await;
    for key in &before {
        assert!(after.contains(key), "{key} was deleted: {after:?}");
    }
    assert_eq!(c.snapshots().len(), 4);
    // The thief's lease is not released by the run that lost it.
    let lease = c
        .api
        .get("coordination.k8s.io", "leases", NS, "litemaas-backup")
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "thief-host-9");
}

/// The metrics file of a cluster run, as Prometheus reads it: (metric, part, database) → value.
fn metrics(path: &std::path::Path) -> Vec<(String, String, String, f64)> {
    let text = std::fs::read_to_string(path).unwrap();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .unwrap()
        .samples
        .into_iter()
        .map(|s| {
            assert_eq!(s.labels.get("namespace"), Some(NS));
            let v = match s.value {
                prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Counter(v) => v,
                other => panic!("{other:?}"),
            };
            let label = |k| s.labels.get(k).unwrap().to_owned();
            (s.metric.clone(), label("part"), label("database"), v)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_have_a_series_per_part_and_a_failed_snapshot_keeps_its_last_success() {
    let c = cluster(
        "cluster-metrics",
        SnapshotBehavior::ReadyAfter(Duration::from_millis(10)),
        Setup::default(),
    )
    .await;
    let file = c.home.path().join("litemaas.prom");
    let out = c
        .run(&["--metrics-file", file.to_str().unwrap(), "--json"])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let first = metrics(&file);
    let get = |m: &[(String, String, String, f64)], metric: &str, part: &str, db: &str| {
        m.iter()
            .find(|s| s.0 == format!("litemaas_backup_{metric}") && s.1 == part && s.2 == db)
            .map(|s| s.3)
    };
    let db = c.db.as_str();
    for (part, database) in [
        ("dump", db),
        ("snapshot", ""),
        ("retention", db),
        ("snapshot_retention", ""),
        ("run", ""),
    ] {
        assert_eq!(
            get(&first, "last_attempt_success", part, database),
            Some(1.0),
            "{part} {database}: {first:?}"
        );
    }
    assert_eq!(
        get(&first, "last_success_stored_bytes", "dump", db),
        report["dumps"][0]["ok"]["bytes"].as_f64()
    );
    let snapshot_success = get(&first, "last_success_timestamp_seconds", "snapshot", "").unwrap();

    c.api.set_controllers(ControllerConfig {
        snapshots: SnapshotBehavior::Fail("rbd: image is busy".into()),
        ..ControllerConfig::default()
    });
    // Dump names are to the second: the next run gets a name of its own.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let out = c
        .run(&[
            "--metrics-file",
            file.to_str().unwrap(),
            "--snapshot-timeout",
            "2s",
        ])
        .await;
    assert!(!out.status.success());
    let second = metrics(&file);
    assert_eq!(
        get(&second, "last_attempt_success", "snapshot", ""),
        Some(0.0)
    );
    assert_eq!(
        get(&second, "last_success_timestamp_seconds", "snapshot", ""),
        Some(snapshot_success)
    );
    assert_eq!(get(&second, "last_attempt_success", "run", ""), Some(0.0));
    assert_eq!(get(&second, "failures_total", "snapshot", ""), Some(1.0));
}
