//! Cluster mode cancelled while its pg_dump waits behind a lock (issue 9): a signal or the
//! `--timeout` deadline must stop pg_dump *inside the pod*, not only drop the exec stream. The
//! test API server behaves like a kubelet here: a client that goes away only closes the
//! command's stdin, and everything the command started counts as running until it has exited
//! (`exec_running` / `wait_exec_idle`). The witnesses are outside the binary: the process table,
//! PostgreSQL's `pg_stat_activity`, the bucket on the S3 test server, and the Lease in the API.
//!
//! Every scenario runs with the pod's `sh` being dash (Debian's `/bin/sh`) and, when it is
//! installed, busybox.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use litemaas_backup::store::{ObjectStore, S3Store};
use litemaas_testapi::{ControllerConfig, SnapshotBehavior, TestApiServer};
use litemaas_testkit::{PgCluster, S3Server};
use serde_json::json;

const NS: &str = "litemaas";
const POD: &str = "litellm-postgres-0";
const LEASE: &str = "litemaas-backup";
/// How soon after the signal (or the deadline) everything must be over.
const PROMPTLY: Duration = Duration::from_secs(10);

/// The `sh` the pod's commands run with.
#[derive(Debug, Clone, Copy)]
enum Shell {
    /// The system's `sh` (dash on Debian).
    System,
    /// busybox's, through a directory first on the pod's PATH with `sh -> busybox`.
    Busybox,
}

fn shells() -> Vec<Shell> {
    if find_on_path("busybox").is_some() {
        vec![Shell::System, Shell::Busybox]
    } else {
        eprintln!("busybox is not installed: checked with the system sh only");
        vec![Shell::System]
    }
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

struct Cluster {
    api: TestApiServer,
    db: String,
    store: S3Store,
    home: tempfile::TempDir,
    shell: Shell,
}

async fn cluster(name: &str, shell: Shell) -> Cluster {
    let pg = PgCluster::shared();
    let db = pg.create_database(&name.replace('-', "_")).unwrap();
    pg.seed_sample(&db).unwrap();
    let api = TestApiServer::start_with(ControllerConfig {
        snapshots: SnapshotBehavior::ReadyAfter(Duration::from_millis(10)),
        ..ControllerConfig::default()
    })
    .await
    .unwrap();
    api.create_namespace(NS).unwrap();
    let mut data = std::collections::BTreeMap::new();
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
        json!({"metadata": {"name": POD, "labels": {"app": "litellm-postgres"}},
        "spec": {"containers": [{"name": "postgres"}]}, "status": {"phase": "Running"}}),
    )
    .unwrap();
    api.create("", "persistentvolumeclaims", NS, json!({"metadata": {"name": "postgres-storage-litellm-postgres-0",
        "labels": {"app": "litellm-postgres"}}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}}})).unwrap();
    let home = tempfile::tempdir().unwrap();
    set_exec_path(&api, home.path(), shell, None);
    let server = S3Server::shared();
    let store = S3Store::new(server.client(), server.new_bucket(name).await.unwrap());
    Cluster {
        api,
        db,
        store,
        home,
        shell,
    }
}

/// The pod's environment: PostgreSQL's address, and a PATH with PostgreSQL's programs, the
/// chosen `sh` and, first, a replacement `pg_dump` when one is given.
fn set_exec_path(api: &TestApiServer, home: &Path, shell: Shell, pg_dump: Option<&str>) {
    use std::os::unix::fs::PermissionsExt;
    let pg = PgCluster::shared();
    let mut path = vec![pg.bin_dir().to_path_buf()];
    if let Shell::Busybox = shell {
        let dir = home.join("busybox-sh");
        if !dir.exists() {
            std::fs::create_dir(&dir).unwrap();
            std::os::unix::fs::symlink(find_on_path("busybox").unwrap(), dir.join("sh")).unwrap();
        }
        path.insert(0, dir);
    }
    if let Some(script) = pg_dump {
        let dir = home.join("fake-bin");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("pg_dump"), script).unwrap();
        std::fs::set_permissions(dir.join("pg_dump"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        path.insert(0, dir);
    }
    path.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    api.set_exec_env(
        NS,
        POD,
        vec![
            ("PGHOST".into(), "127.0.0.1".into()),
            ("PGPORT".into(), pg.port().to_string()),
            (
                "PATH".into(),
                std::env::join_paths(path)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            ),
        ],
    );
}

impl Cluster {
    fn backup(&self, extra: &[&str]) -> tokio::process::Child {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_litemaas-backup"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("KUBECONFIG", self.api.kubeconfig_path())
            .envs(S3Server::shared().env())
            .args(["--namespace", NS, "--bucket", self.store.bucket()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    }

    /// The pid of pg_dump's backend while it waits for a lock, once there is one.
    fn wait_for_blocked_dump(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let pids = PgCluster::shared()
                .psql(
                    "postgres",
                    &format!(
                        "SELECT pid FROM pg_stat_activity WHERE datname = '{}' AND application_name = 'pg_dump' AND wait_event_type = 'Lock'",
                        self.db
                    ),
                )
                .unwrap();
            if !pids.trim().is_empty() {
                return pids.trim().to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "{:?}: pg_dump never waited for the lock",
                self.shell
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// pg_dump's backends on the database (any state).
    fn dump_backends(&self) -> String {
        PgCluster::shared()
            .psql(
                "postgres",
                &format!(
                    "SELECT pid, state, wait_event_type FROM pg_stat_activity WHERE datname = '{}' AND application_name = 'pg_dump'",
                    self.db
                ),
            )
            .unwrap()
            .trim()
            .to_owned()
    }

    /// Everything a cancelled run must leave: no process in the pod, no backend, nothing in the
    /// bucket, no held Lease.
    async fn assert_nothing_left(&self, dump_pids: &[u32]) {
        let shell = self.shell;
        assert!(
            self.api.wait_exec_idle(PROMPTLY).await,
            "{shell:?}: a process of the dump still runs in the pod ({} exec'd command(s) with processes left; pg_dump processes: {:?})",
            self.api.exec_running(),
            pg_dump_processes(&self.db)
        );
        for pid in dump_pids {
            assert!(!alive(*pid), "{shell:?}: pg_dump {pid} still runs");
        }
        let deadline = Instant::now() + PROMPTLY;
        loop {
            let backends = self.dump_backends();
            if backends.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{shell:?}: pg_dump's backend is still there: {backends}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let keys: Vec<String> = self
            .store
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect();
        assert!(keys.is_empty(), "{shell:?}: objects left: {keys:?}");
        let pending = self.store.list_pending_uploads("").await.unwrap();
        assert!(
            pending.is_empty(),
            "{shell:?}: multipart uploads left open: {pending:?}"
        );
        assert_lease_released(&self.api);
    }
}

/// The Lease is gone, or held by nobody.
fn assert_lease_released(api: &TestApiServer) {
    if let Ok(lease) = api.get("coordination.k8s.io", "leases", NS, LEASE) {
        let holder = lease["spec"]["holderIdentity"].as_str().unwrap_or("");
        assert!(holder.is_empty(), "the Lease is still held: {lease}");
    }
}

/// Another session holding `ACCESS EXCLUSIVE` on `users` in an open transaction (a migration
/// at 2 AM); its backend is terminated on drop.
struct Locker {
    child: std::process::Child,
    db: String,
    app: String,
}

impl Locker {
    fn start(db: &str) -> Self {
        let pg = PgCluster::shared();
        let app = format!("litemaas-locker-{db}");
        let child = pg
            .command("psql")
            .env("PGAPPNAME", &app)
            .args(["-X", "-q", "-d", db, "-c"])
            .arg("BEGIN; LOCK TABLE users IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(600);")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let locker = Self {
            child,
            db: db.to_owned(),
            app,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !locker.holds_the_lock() {
            assert!(Instant::now() < deadline, "the lock was never taken");
            std::thread::sleep(Duration::from_millis(50));
        }
        locker
    }

    fn holds_the_lock(&self) -> bool {
        PgCluster::shared()
            .psql(
                &self.db,
                &format!(
                    "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE l.relation = 'users'::regclass AND l.mode = 'AccessExclusiveLock' AND l.granted AND a.application_name = '{}'",
                    self.app
                ),
            )
            .unwrap()
            .trim()
            == "1"
    }
}

impl Drop for Locker {
    fn drop(&mut self) {
        // Killing psql would leave its backend sleeping with the lock.
        let _ = PgCluster::shared().psql(
            "postgres",
            &format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{}'",
                self.app
            ),
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pids of the pg_dump processes dumping `db` (by their command line).
fn pg_dump_processes(db: &str) -> Vec<u32> {
    let wanted = format!("--dbname={db}");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let is_pg_dump = args
                .first()
                .is_some_and(|a| a.ends_with(b"pg_dump") && !a.ends_with(b"litemaas-dump"));
            (is_pg_dump && args.contains(&wanted.as_bytes()) && alive(pid)).then_some(pid)
        })
        .collect()
}

/// Whether `pid` is a live process (not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")).is_ok_and(
        |stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|state| state != "Z")
        },
    )
}

/// No process on this host has `secret` in its command line.
fn assert_in_no_command_line(secret: &str) {
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        assert!(
            !cmdline
                .windows(secret.len())
                .any(|w| w == secret.as_bytes()),
            "the password is in the command line of {}",
            entry.path().display()
        );
    }
}

fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("sh")
        .args(["-c", "kill -s \"$1\" \"$2\"", "signal", name])
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -s {name} {pid}");
}

/// Waits for the binary's exit (at most [`PROMPTLY`] after `since`): its stderr.
async fn exited(child: tokio::process::Child, since: Instant, shell: Shell) -> String {
    let out = tokio::time::timeout(PROMPTLY + Duration::from_secs(5), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{shell:?}: litemaas-backup did not exit"))
        .unwrap();
    let took = since.elapsed();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("{shell:?}: litemaas-backup exited {took:?} after the cause:\n{err}");
    assert!(took < PROMPTLY, "{shell:?}: exited {took:?} after: {err}");
    assert!(!out.status.success(), "{shell:?}: {err}");
    err
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_while_pg_dump_waits_for_a_lock_stops_it_in_the_pod_and_leaves_nothing() {
    for shell in shells() {
        let c = cluster(&format!("sig-term-{shell:?}").to_lowercase(), shell).await;
        let locker = Locker::start(&c.db);
        let run = c.backup(&["--lock-wait-timeout", "1h"]);
        let pid = run.id().unwrap();
        c.wait_for_blocked_dump();
        let dumps = pg_dump_processes(&c.db);
        assert_eq!(dumps.len(), 1, "{shell:?}: {dumps:?}");
        assert_in_no_command_line(PgCluster::shared().password());
        assert!(
            c.api
                .get("coordination.k8s.io", "leases", NS, LEASE)
                .is_ok(),
            "{shell:?}: the run holds the Lease"
        );

        let sent = Instant::now();
        signal(pid, "TERM");
        let err = exited(run, sent, shell).await;
        assert!(
            err.contains("SIGTERM") && err.contains("cancelled"),
            "{shell:?}: {err}"
        );
        let last = err.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("litemaas-backup: error:") && last.contains("cancelled"),
            "{shell:?}: {err}"
        );
        c.assert_nothing_left(&dumps).await;
        // Still locked: the dump ended because it was stopped, not because the lock went away.
        assert!(locker.holds_the_lock(), "{shell:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_deadline_while_pg_dump_waits_for_a_lock_stops_it_in_the_pod_and_leaves_nothing() {
    for shell in shells() {
        let c = cluster(&format!("sig-deadline-{shell:?}").to_lowercase(), shell).await;
        let locker = Locker::start(&c.db);
        let started = Instant::now();
        let run = c.backup(&["--lock-wait-timeout", "1h", "--timeout", "5s"]);
        c.wait_for_blocked_dump();
        let dumps = pg_dump_processes(&c.db);
        assert_eq!(dumps.len(), 1, "{shell:?}: {dumps:?}");
        let deadline = started + Duration::from_secs(5);
        assert!(Instant::now() < deadline, "{shell:?}: blocked too late");

        let err = exited(run, deadline, shell).await;
        assert!(
            err.contains("the deadline (--timeout 5s) was reached"),
            "{shell:?}: {err}"
        );
        assert!(
            err.lines()
                .last()
                .unwrap_or_default()
                .starts_with("litemaas-backup: error:"),
            "{shell:?}: {err}"
        );
        c.assert_nothing_left(&dumps).await;
        assert!(locker.holds_the_lock(), "{shell:?}");
    }
}

/// The normal path with the wrapper: the dump completes (stdin is closed only after pg_dump's
/// exit status, so it is not stopped early), and a failing pg_dump still fails the backup with
/// its exit code.
#[tokio::test(flavor = "multi_thread")]
async fn a_normal_dump_completes_and_a_failing_pg_dump_fails_with_its_exit_code() {
    for shell in shells() {
        let c = cluster(&format!("sig-normal-{shell:?}").to_lowercase(), shell).await;
        let out = c
            .backup(&["--json", "--no-snapshot"])
            .wait_with_output()
            .await
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{shell:?}: {err}");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let key = report["dumps"][0]["ok"]["key"].as_str().unwrap();
        let gz = c.store.get_bytes(key).await.unwrap();
        let sql = String::from_utf8(gunzip(&gz)).unwrap();
        assert!(
            sql.trim_end()
                .lines()
                .rev()
                .take(10)
                .any(|l| l == "-- PostgreSQL database dump complete"),
            "{shell:?}"
        );
        assert!(c.api.wait_exec_idle(PROMPTLY).await, "{shell:?}");
        assert_lease_released(&c.api);

        // pg_dump exits 1 (no such database): the wrapper passes that on, and so does the run.
        let out = c
            .backup(&["--no-snapshot", "--database", "no_such_database"])
            .wait_with_output()
            .await
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{shell:?}: {err}");
        assert!(
            err.contains("exit code 1") && err.contains("no_such_database"),
            "{shell:?}: {err}"
        );
        assert!(c.api.wait_exec_idle(PROMPTLY).await, "{shell:?}");
        assert_lease_released(&c.api);
        assert_eq!(
            c.store.list("").await.unwrap().len(),
            2,
            "{shell:?}: the first dump and its record only"
        );
    }
}

/// The library alone, with the exec connection kept (the runtime lives on, unlike the binary's
/// after a signal): dropping a dump's stream, as a cancelled backup does, closes the wrapper's
/// stdin at once over the stream (exec protocol v5), which stops pg_dump long before the
/// stopper would give up and drop the connection (`STOP_WAIT`, 15 s).
#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_dump_stream_stops_pg_dump_over_the_live_connection() {
    use litemaas_backup::dump::DumpSource;
    use litemaas_backup::dump::pod::{PodDump, PodTarget};
    for shell in shells() {
        let c = cluster(&format!("sig-drop-{shell:?}").to_lowercase(), shell).await;
        let _locker = Locker::start(&c.db);
        let client = c.api.client().await.unwrap();
        let dump = PodDump::discover(client, &PodTarget::litemaas(NS), None)
            .await
            .unwrap();
        let stream = dump.start().await.unwrap();
        c.wait_for_blocked_dump();
        let dumps = pg_dump_processes(&c.db);
        assert_eq!(dumps.len(), 1, "{shell:?}: {dumps:?}");

        drop(stream);
        assert!(
            c.api.wait_exec_idle(Duration::from_secs(5)).await,
            "{shell:?}: pg_dump still runs in the pod 5 s after its stream was dropped"
        );
        assert!(!alive(dumps[0]), "{shell:?}");
        let deadline = Instant::now() + PROMPTLY;
        while !c.dump_backends().is_empty() {
            assert!(
                Instant::now() < deadline,
                "{shell:?}: {}",
                c.dump_backends()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// As above with a "pg_dump" that writes without end and nothing read: the full stdout buffer
/// holds the exec stream, so the close gets through only because the dropped reader hands
/// stdout over to be drained (and, drained, this pg_dump would never end by itself).
#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_dump_stream_with_unread_output_still_stops_pg_dump() {
    use litemaas_backup::dump::DumpSource;
    use litemaas_backup::dump::pod::{PodDump, PodTarget};
    const ENDLESS: &str = "#!/bin/sh\nexec yes 'INSERT INTO t VALUES (1);'\n";
    for shell in shells() {
        let c = cluster(&format!("sig-unread-{shell:?}").to_lowercase(), shell).await;
        set_exec_path(&c.api, c.home.path(), shell, Some(ENDLESS));
        let client = c.api.client().await.unwrap();
        let dump = PodDump::discover(client, &PodTarget::litemaas(NS), None)
            .await
            .unwrap();
        let stream = dump.start().await.unwrap();
        // Time enough to fill every buffer between `yes` and the unread stdout.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(c.api.exec_running(), 1);

        drop(stream);
        assert!(
            c.api.wait_exec_idle(Duration::from_secs(5)).await,
            "{shell:?}: the endless pg_dump still runs 5 s after its stream was dropped"
        );
    }
}

/// The system `gunzip` reads what was stored.
fn gunzip(gz: &[u8]) -> Vec<u8> {
    let mut child = std::process::Command::new("gunzip")
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let gz = gz.to_vec();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut input, &gz));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "gunzip failed");
    out.stdout
}
