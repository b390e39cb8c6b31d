//! Ephemeral PostgreSQL 15 clusters.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::sys;

/// Where Debian's PostgreSQL 15 binaries live (override with `LITEMAAS_TEST_PG_BIN`).
fn pg_bin() -> PathBuf {
    std::env::var_os("LITEMAAS_TEST_PG_BIN")
        .map_or_else(|| "/usr/lib/postgresql/15/bin".into(), PathBuf::from)
}

/// A PostgreSQL cluster in a temporary directory, listening on 127.0.0.1 with password
/// authentication (`postgres` / a random password). Stopped and removed on drop.
#[derive(Debug)]
pub struct PgCluster {
    dir: Option<tempfile::TempDir>,
    port: u16,
    password: String,
    bin: PathBuf,
    child: Mutex<Option<Child>>,
}

impl PgCluster {
    /// The cluster shared by every test of this test binary: started on first use, stopped and
    /// removed when the process exits.
    pub fn shared() -> &'static PgCluster {
        static SHARED: OnceLock<PgCluster> = OnceLock::new();
        SHARED.get_or_init(|| {
            let cluster = PgCluster::start().expect("start the test PostgreSQL cluster");
            let child = cluster.child.lock().unwrap().take();
            let dir = cluster.data_dir_root().to_path_buf();
            sys::at_exit(move || {
                if let Some(child) = child {
                    stop(child);
                }
                let _ = std::fs::remove_dir_all(dir);
            });
            cluster
        })
    }

    /// Starts a new cluster of its own.
    ///
    /// # Errors
    /// PostgreSQL 15 is missing (run `scripts/test-deps.sh`), or the cluster would not start.
    pub fn start() -> Result<PgCluster> {
        let bin = pg_bin();
        if !bin.join("initdb").exists() {
            bail!(
                "PostgreSQL 15 not found in {} (run scripts/test-deps.sh)",
                bin.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("litemaas-pg-")
            .tempdir()
            .context("create temp dir")?;
        let owner = if sys::is_root() {
            Some(
                sys::user_ids("postgres")
                    .context("user postgres missing (run scripts/test-deps.sh)")?,
            )
        } else {
            None
        };
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).context("chown temp dir")?;
        }
        let password = random_password();
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, &password).context("write pwfile")?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid))?;
        }
        let data = dir.path().join("data");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
            ])
            .args(["--locale=C.UTF-8", "--no-sync", "--no-instructions"])
            .arg(format!("--pwfile={}", pwfile.display()));
        as_owner(&mut initdb, owner);
        let out = initdb.output().context("run initdb")?;
        if !out.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let _ = std::fs::remove_file(&pwfile);
        let sock = dir.path().join("sock");
        std::fs::create_dir(&sock)?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&sock, Some(uid), Some(gid))?;
        }

        let mut last_err = None;
        for _ in 0..5 {
            let port = crate::free_port()?;
            let child = spawn_postgres(&bin, dir.path(), port, owner)?;
            let mut cluster = PgCluster {
                dir: None,
                port,
                password: password.clone(),
                bin: bin.clone(),
                child: Mutex::new(Some(child)),
            };
            match cluster.wait_ready(dir.path(), Duration::from_secs(20)) {
                Ok(()) => {
                    cluster.dir = Some(dir);
                    return Ok(cluster);
                }
                // Most likely another process took the port between our check and postgres' bind.
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("postgres did not start")))
    }

    fn wait_ready(&self, dir: &Path, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            let exited = self
                .child
                .lock()
                .unwrap()
                .as_mut()
                .map(Child::try_wait)
                .transpose()?
                .flatten();
            if let Some(status) = exited {
                self.child.lock().unwrap().take();
                let log = std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default();
                bail!("postgres exited with {status}: {log}");
            }
            let ok = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return Ok(());
            }
            if start.elapsed() > timeout {
                if let Some(child) = self.child.lock().unwrap().take() {
                    stop(child);
                }
                bail!("postgres not ready on port {} after {timeout:?}", self.port);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn data_dir_root(&self) -> &Path {
        self.dir
            .as_ref()
            .map(|d| d.path())
            .unwrap_or(Path::new("/nonexistent"))
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser `postgres`'s password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// A directory holding PostgreSQL's programs (`pg_dump`, `psql`, …).
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// `postgres://postgres:<password>@127.0.0.1:<port>/<db>`.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/{db}",
            self.password, self.port
        )
    }

    /// A command for one of PostgreSQL's programs with `PGHOST`, `PGPORT`, `PGUSER` and
    /// `PGPASSWORD` set for this cluster.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.env("PGHOST", "127.0.0.1")
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", "postgres")
            .env("PGPASSWORD", &self.password)
            .env_remove("PGDATABASE");
        cmd
    }

    /// Creates an empty database with a unique name starting with `prefix`.
    pub fn create_database(&self, prefix: &str) -> Result<String> {
        let name = crate::unique_name(prefix).replace('-', "_");
        self.psql("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(name)
    }

    /// Creates the role `name` with `options` (`LOGIN PASSWORD '…'`, say) unless it exists;
    /// safe when tests running at once ask for the same role (a concurrent `CREATE ROLE` fails
    /// with a unique violation rather than `duplicate_object`).
    pub fn ensure_role(&self, name: &str, options: &str) -> Result<()> {
        self.psql(
            "postgres",
            &format!(
                "DO $$ BEGIN CREATE ROLE {name} {options}; \
                 EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
            ),
        )
        .map(drop)
    }

    /// Another session (an application's, say) that runs `sql` in a transaction on `db` and
    /// keeps the transaction open, holding its locks, until the returned value is dropped.
    /// Returns once the session is past `sql`.
    ///
    /// # Errors
    /// psql could not start, or the session did not get past `sql` within 30 s.
    pub fn open_transaction(&self, db: &str, sql: &str) -> Result<OpenTransaction> {
        let name = crate::unique_name("holder");
        let child = self
            .command("psql")
            .env("PGAPPNAME", &name)
            .args(["-X", "-d", db, "-c"])
            .arg(format!("BEGIN; {sql}; SELECT pg_sleep(600);"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start psql")?;
        let mut holding = OpenTransaction {
            child,
            pid: 0,
            application_name: name.clone(),
            end: None,
        };
        // Past `sql`: sleeping (the multi-statement string shows from its start).
        let condition = format!("application_name = '{name}' AND wait_event = 'PgSleep'");
        self.sessions_until(&condition, &format!("the session of {name}"), |n| n > 0);
        holding.pid = self
            .psql(
                "postgres",
                &format!("SELECT pid FROM pg_stat_activity WHERE {condition}"),
            )?
            .trim()
            .parse()
            .context("its backend pid")?;
        // Killing psql does not end a backend in pg_sleep: it is terminated on drop.
        let mut end = self.command("psql");
        end.args(["-X", "-q", "-d", "postgres", "-c"])
            .arg(format!("SELECT pg_terminate_backend({})", holding.pid))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        holding.end = Some(end);
        Ok(holding)
    }

    /// Waits (at most 30 s) until the number of server sessions matching `condition` (SQL on
    /// `pg_stat_activity`) satisfies `done`; panics naming `what` otherwise.
    pub fn sessions_until(&self, condition: &str, what: &str, done: impl Fn(u64) -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let n: u64 = self
                .psql(
                    "postgres",
                    &format!("SELECT count(*) FROM pg_stat_activity WHERE {condition}"),
                )
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            if done(n) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: {n} session(s) after 30 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// `psql -X -q -v ON_ERROR_STOP=1 -d <db>` for this cluster.
    fn psql_command(&self, db: &str) -> Command {
        let mut cmd = self.command("psql");
        cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", db]);
        cmd
    }

    /// Runs SQL with `psql -X -v ON_ERROR_STOP=1 -At` and returns its standard output.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String> {
        let out = self
            .psql_command(db)
            .args(["-At", "-c", sql])
            .output()
            .context("run psql")?;
        if !out.status.success() {
            bail!(
                "psql on {db} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs an SQL script fed on standard input (`psql -v ON_ERROR_STOP=1 --single-transaction`).
    pub fn run_script(&self, db: &str, script: &[u8]) -> Result<String> {
        use std::io::Write;
        let mut child = self
            .psql_command(db)
            .arg("--single-transaction")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("run psql")?;
        let mut stdin = child.stdin.take().context("psql stdin")?;
        let script = script.to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&script));
        let out = child.wait_with_output()?;
        let _ = writer.join();
        if !out.status.success() {
            bail!(
                "psql script on {db} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Fills `db` with the LiteMaaS-like sample: jsonb, arrays, bytea, numeric, timestamptz,
    /// unicode text, a sequence, a view, a function, a trigger and a partitioned table.
    pub fn seed_sample(&self, db: &str) -> Result<()> {
        self.run_script(db, crate::SAMPLE_SQL.as_bytes()).map(drop)
    }

    /// `pg_dump` of `db` with the per-run `\restrict` key lines removed, for comparing two
    /// databases for equality.
    pub fn dump_for_comparison(&self, db: &str) -> Result<String> {
        let out = self
            .command("pg_dump")
            .args(["--no-owner", "-d", db])
            .output()
            .context("run pg_dump")?;
        if !out.status.success() {
            bail!(
                "pg_dump of {db} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
            .collect::<Vec<_>>()
            .join("\n"))
    }
}

fn spawn_postgres(bin: &Path, dir: &Path, port: u16, owner: Option<(u32, u32)>) -> Result<Child> {
    let log = std::fs::File::create(dir.join("postgres.log"))?;
    let mut cmd = Command::new(bin.join("postgres"));
    cmd.arg("-D")
        .arg(dir.join("data"))
        .arg("-p")
        .arg(port.to_string())
        .arg("-k")
        .arg(dir.join("sock"))
        .args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
        ])
        .args([
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=200",
            "-c",
            "log_min_messages=warning",
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    as_owner(&mut cmd, owner);
    sys::die_with_parent(&mut cmd, libc::SIGQUIT);
    sys::on_spawner_thread(move || cmd.spawn()).context("spawn postgres")
}

fn as_owner(cmd: &mut Command, owner: Option<(u32, u32)>) {
    use std::os::unix::process::CommandExt;
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid);
    }
}

/// Fast shutdown (SIGINT), then SIGQUIT if it lingers.
fn stop(mut child: Child) {
    let pid = child.id() as libc::pid_t;
    // SAFETY: signalling our own child process by pid.
    unsafe {
        libc::kill(pid, libc::SIGINT);
    }
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn random_password() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::from("pw-");
    for _ in 0..2 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if let Some(child) = self.child.lock().unwrap_or_else(|p| p.into_inner()).take() {
            stop(child);
        }
    }
}

/// A session holding a transaction open ([`PgCluster::open_transaction`]); ended when dropped.
#[derive(Debug)]
pub struct OpenTransaction {
    child: Child,
    /// The command that terminates its backend.
    end: Option<Command>,
    /// Its server backend's process id.
    pub pid: u32,
    /// Its `application_name`, unique to it.
    pub application_name: String,
}

impl Drop for OpenTransaction {
    fn drop(&mut self) {
        if let Some(end) = self.end.as_mut() {
            let _ = end.status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
