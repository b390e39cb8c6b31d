//! The SQL-sink seam: where restored SQL goes. [`LocalPsql`] runs `psql` on this host; with the
//! `kube` feature, [`PodPsql`](crate::PodPsql) runs it in the database pod; [`MemorySink`] keeps
//! what it is sent, for tests.
//!
//! A sink only carries bytes and reports how psql ended; the protocol that makes a restore
//! all-or-nothing (`BEGIN`, the dump, `COMMIT` only after the checks) is the job's, in
//! [`restore`](crate::restore()), the same for every sink.

use std::fmt::Debug;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use litemaas_dump::PgConnection;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

use crate::{Error, Result};

/// How many trailing lines of psql's output are kept.
const KEEP_LINES: usize = 40;

/// How a psql session ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ended {
    /// psql exited 0.
    pub success: bool,
    /// `exit code 3`, `killed by signal 9`, `no exit status`, …
    pub status: String,
    /// The last lines psql wrote to standard output (query results with `-At`).
    pub stdout: Vec<String>,
    /// The last lines psql wrote to standard error (errors, warnings).
    pub stderr: Vec<String>,
    /// Warnings psql printed, counted over the whole session (not only the kept lines).
    pub warnings: u64,
}

/// One psql reading a script from its input, with `ON_ERROR_STOP` and without
/// `--single-transaction` (so that the end of input never commits anything).
#[async_trait]
pub trait SqlSession: Send {
    /// Sends more of the script.
    ///
    /// # Errors
    /// psql is gone (it stopped at an error, or could not connect): call
    /// [`finish`](Self::finish) to learn why.
    async fn write(&mut self, data: Bytes) -> std::io::Result<()>;

    /// Waits until psql has run everything sent so far: sends `SELECT 'litemaas-sync N';` (a
    /// query, so that it also works under pg_dump's `\restrict`) and waits for its line on
    /// psql's output. Never call it inside a `COPY … FROM stdin` block.
    ///
    /// # Errors
    /// psql is gone before it answered (it stopped at an error): call
    /// [`finish`](Self::finish) to learn why.
    async fn sync(&mut self) -> std::io::Result<()>;

    /// The process id of this session's server backend, once psql reported it (sessions
    /// start by asking), so that [`stop_backend`] can end a session whose psql is stuck in a
    /// statement (waiting for a lock, say) and so does not read the end of its input.
    fn backend_pid(&self) -> Option<u32> {
        None
    }

    /// Lines the session sent psql itself before any [`write`](Self::write) (its question for
    /// the backend's pid): psql's line numbers count them.
    fn preamble_lines(&self) -> u64 {
        0
    }

    /// Ends the input and waits until psql has exited.
    async fn finish(self: Box<Self>) -> Result<Ended>;
}

/// Where restored SQL goes: a database reached through psql.
#[async_trait]
pub trait SqlSink: Send + Sync + Debug {
    /// A human description, e.g. `database litemaas on db:5432`.
    fn describe(&self) -> String;

    /// The database name, if known (`None`: libpq's default).
    fn database(&self) -> Option<String>;

    /// The same server and login, another database.
    fn with_database(&self, database: &str) -> Box<dyn SqlSink>;

    /// Runs a short script (`ON_ERROR_STOP`, unaligned tuples-only output) and returns its
    /// standard output.
    ///
    /// # Errors
    /// [`Error::Psql`] with psql's message.
    async fn query(&self, sql: &str) -> Result<String>;

    /// Starts a psql session reading a script from its input.
    async fn start(&self) -> Result<Box<dyn SqlSession>>;
}

/// Runs one script to its end through `sink`: for short administrative scripts.
pub(crate) async fn run_script(sink: &dyn SqlSink, sql: &str) -> Result<String> {
    let mut session = sink.start().await?;
    // A failed write means psql is gone (no connection): how it ended says why.
    let _ = session.write(Bytes::copy_from_slice(sql.as_bytes())).await;
    let ended = session.finish().await?;
    if ended.success {
        return Ok(ended.stdout.join("\n"));
    }
    Err(psql_error(&sink.describe(), &ended))
}

/// Ends the server session `pid` (`pg_terminate_backend`), if it is a restore's
/// ([`APPLICATION_NAME`](crate::APPLICATION_NAME)), through a session of its own on
/// `sink`: its transaction is rolled back and its locks released at once, whatever its psql
/// is doing. A restore that stops — cancelled, or failed elsewhere — must not leave a session
/// behind that waits for a lock while holding others (a table it already dropped, say): ending
/// psql's input, or killing psql, does not reach a backend that waits.
///
/// Returns whether a session was ended.
///
/// # Errors
/// The query failed (psql's message), or did not answer within 10 s.
pub async fn stop_backend(sink: &dyn SqlSink, pid: u32) -> Result<bool> {
    // Only a session of a restore: a pid is reused once its backend is gone.
    let sql = format!(
        "SELECT count(*) FILTER (WHERE pg_catalog.pg_terminate_backend(pid)) \
         FROM pg_catalog.pg_stat_activity \
         WHERE pid = {pid} AND application_name = '{}';\n",
        crate::job::APPLICATION_NAME
    );
    let query = sink.query(&sql);
    match tokio::time::timeout(STOP_TIMEOUT, query).await {
        Ok(out) => Ok(out?.lines().any(|l| l.trim() == "1")),
        Err(_) => Err(Error::Database {
            context: format!("ending server session {pid}"),
            message: format!("no answer within {STOP_TIMEOUT:?}"),
        }),
    }
}

/// How long [`stop_backend`] waits for its own session.
const STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// psql's failure as an error, with a hint where one is known.
pub(crate) fn psql_error(target: &str, ended: &Ended) -> Error {
    let errors: Vec<&str> = ended
        .stderr
        .iter()
        .map(String::as_str)
        .filter(|l| !l.contains(crate::plain::CLEAN_WARNING))
        .collect();
    // The first error line names the cause; context lines follow it.
    let first = errors
        .iter()
        .position(|l| l.contains("ERROR:") || l.contains("FATAL:") || l.contains("error:"))
        .unwrap_or(0);
    let message = errors[first.min(errors.len())..]
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .take(4)
        .collect::<Vec<_>>()
        .join(" ");
    let hint = if message.contains("out of shared memory")
        || message.contains("max_locks_per_transaction")
    {
        " — the restore runs as one transaction and needs a lock per table, index and sequence: raise max_locks_per_transaction on the server (and restart it), then restore again"
    } else {
        ""
    };
    Error::Psql {
        target: target.to_owned(),
        status: ended.status.clone(),
        message: if message.is_empty() {
            "no error output".into()
        } else {
            message
        },
        hint: hint.into(),
    }
}

/// What [`SqlSession::sync`] sends and waits for, followed by a number.
pub(crate) const SYNC: &str = "litemaas-sync ";

/// What a session's first statement prints, followed by its backend's process id.
const PID: &str = "litemaas-pid ";

/// How long a new session waits for psql to connect and say its backend's pid.
const PID_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Lines a session sends psql before its first write: the question for the backend's pid.
pub(crate) const PREAMBLE_LINES: u64 = 1;

/// Where [`collect_lines`] reports the lines that are answers to us, not output.
pub(crate) struct Markers {
    /// The numbers of [`SYNC`] lines.
    synced: tokio::sync::mpsc::UnboundedSender<u64>,
    /// The backend's process id of the [`PID`] line.
    pid: tokio::sync::watch::Sender<Option<u32>>,
}

/// Keeps the last [`KEEP_LINES`] lines of a stream, logging each, counting warnings; the
/// [`SYNC`] and [`PID`] lines go to `markers` (and are not kept). Reads to the end of the
/// stream, or, once `written` is cancelled (nothing more will be written to it), to the end of
/// what is already there.
pub(crate) async fn collect_lines(
    reader: impl AsyncRead + Unpin,
    program: &'static str,
    log: bool,
    markers: Option<Markers>,
    written: CancellationToken,
) -> (Vec<String>, u64) {
    let mut lines = BufReader::new(reader).lines();
    let mut kept = std::collections::VecDeque::new();
    let mut warnings = 0;
    loop {
        // `next_line` is cancellation safe: a line it had begun is not lost.
        let next = tokio::select! {
            biased;
            next = lines.next_line() => next,
            () = written.cancelled() => break,
        };
        match next {
            Ok(Some(line)) => {
                if let Some(markers) = &markers {
                    if let Some(n) = line.strip_prefix(SYNC).and_then(|n| n.parse::<u64>().ok()) {
                        let _ = markers.synced.send(n);
                        continue;
                    }
                    if let Some(pid) = line.strip_prefix(PID).and_then(|n| n.parse::<u32>().ok()) {
                        markers.pid.send_replace(Some(pid));
                        continue;
                    }
                }
                if line.contains("WARNING:") {
                    warnings += 1;
                }
                if log {
                    tracing::info!(program, "{line}");
                }
                if kept.len() == KEEP_LINES {
                    kept.pop_front();
                }
                kept.push_back(line);
            }
            Ok(None) => break,
            // Not UTF-8, or the pipe broke: skip what cannot be read as a line.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => continue,
            Err(_) => break,
        }
    }
    (kept.into(), warnings)
}

/// psql's input and its two collected outputs: what every session has.
pub(crate) struct Pipes<W> {
    stdin: Option<W>,
    /// The numbers of the sync lines psql printed, in order.
    synced: tokio::sync::mpsc::UnboundedReceiver<u64>,
    /// The number of the last sync sent.
    syncs: u64,
    /// The backend's process id, once psql printed it.
    pid: tokio::sync::watch::Receiver<Option<u32>>,
    /// Cancelled once nothing more will be written to psql's outputs.
    #[cfg_attr(not(feature = "kube"), allow(dead_code))]
    written: CancellationToken,
    stdout: tokio::task::JoinHandle<(Vec<String>, u64)>,
    stderr: tokio::task::JoinHandle<(Vec<String>, u64)>,
}

impl<W: tokio::io::AsyncWrite + Unpin + Send> Pipes<W> {
    /// Starts collecting `stdout` and `stderr` (stderr lines are logged) and asks psql for
    /// its backend's process id (see [`SqlSession::backend_pid`]).
    pub(crate) async fn new(
        stdin: W,
        stdout: impl AsyncRead + Unpin + Send + 'static,
        stderr: impl AsyncRead + Unpin + Send + 'static,
    ) -> Self {
        let (to, synced) = tokio::sync::mpsc::unbounded_channel();
        let (pid_to, pid) = tokio::sync::watch::channel(None);
        let markers = Markers {
            synced: to,
            pid: pid_to,
        };
        let written = CancellationToken::new();
        let mut pipes = Self {
            stdin: Some(stdin),
            synced,
            syncs: 0,
            pid,
            stdout: tokio::spawn(collect_lines(
                stdout,
                "psql",
                false,
                Some(markers),
                written.clone(),
            )),
            stderr: tokio::spawn(collect_lines(stderr, "psql", true, None, written.clone())),
            written,
        };
        // A psql that cannot take it is gone: the next write, or finish, says why.
        let asked = pipes
            .write(format!("SELECT '{PID}' || pg_catalog.pg_backend_pid();\n").as_bytes())
            .await;
        // Nothing is sent to a session that could not be stopped: wait for the answer (psql
        // connected), for psql's output to end (it could not: the sender is gone), or at most
        // PID_WAIT.
        if asked.is_ok() {
            let mut pid = pipes.pid.clone();
            let _ = tokio::time::timeout(PID_WAIT, pid.wait_for(Option::is_some)).await;
        }
        pipes
    }

    /// See [`SqlSession::backend_pid`].
    pub(crate) fn backend_pid(&self) -> Option<u32> {
        *self.pid.borrow()
    }

    /// See [`SqlSession::sync`].
    pub(crate) async fn sync(&mut self) -> std::io::Result<()> {
        self.syncs += 1;
        let n = self.syncs;
        self.write(format!("SELECT '{SYNC}{n}';\n").as_bytes())
            .await?;
        if let Some(stdin) = self.stdin.as_mut() {
            stdin.flush().await?;
        }
        loop {
            match self.synced.recv().await {
                Some(seen) if seen >= n => return Ok(()),
                Some(_) => continue,
                None => return Err(std::io::ErrorKind::BrokenPipe.into()),
            }
        }
    }

    /// Sends more input; an error once psql is gone.
    pub(crate) async fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self.stdin.as_mut() {
            Some(stdin) => stdin.write_all(data).await,
            None => Err(std::io::ErrorKind::BrokenPipe.into()),
        }
    }

    /// Ends psql's input (end of input: psql finishes the statement at hand and exits; an
    /// open transaction — ours, unless COMMIT was sent — is rolled back as the session ends).
    pub(crate) async fn close(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.shutdown().await;
        }
    }

    /// Nothing more will be written to psql's outputs (their writer is gone, perhaps without
    /// ending them): the collectors stop at the end of what is there. Only for in-memory
    /// streams (an exec's), whose buffered data a read returns at once; an OS pipe's reader
    /// learns of data through the reactor, so it must be read to its end instead.
    #[cfg_attr(not(feature = "kube"), allow(dead_code))]
    pub(crate) fn outputs_written(&self) {
        self.written.cancel();
    }

    /// How the session ended, once psql exited with `success` and `status`.
    pub(crate) async fn ended(self, success: bool, status: String) -> Ended {
        let (stdout, _) = self.stdout.await.unwrap_or_default();
        let (stderr, warnings) = self.stderr.await.unwrap_or_default();
        Ended {
            success,
            status,
            stdout,
            stderr,
            warnings,
        }
    }
}

/// `psql` on this host. The password is handed to it in its environment (`PGPASSWORD`), never
/// on its command line.
#[derive(Debug, Clone)]
pub struct LocalPsql {
    conn: Option<PgConnection>,
    database: Option<String>,
    program: PathBuf,
}

impl LocalPsql {
    /// psql against the database `conn` points at.
    pub fn new(conn: PgConnection) -> Self {
        Self {
            conn: Some(conn),
            database: None,
            program: "psql".into(),
        }
    }

    /// psql against the database libpq's environment names (`PGHOST`, `PGDATABASE`, …).
    pub fn from_libpq_env() -> Self {
        Self {
            conn: None,
            database: None,
            program: "psql".into(),
        }
    }

    /// Uses this `psql` binary.
    pub fn program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = program.into();
        self
    }

    /// The command line (no password in it).
    pub fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = [
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "--no-password",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        if let Some(conn) = &self.conn {
            let conn = match &self.database {
                Some(db) => conn.with_database(db),
                None => conn.clone(),
            };
            args.push(format!("--dbname={}", conn.url_without_password()));
        }
        args
    }
}

#[async_trait]
impl SqlSink for LocalPsql {
    fn describe(&self) -> String {
        let database = self.database().map_or_else(
            || "the default database".to_owned(),
            |d| format!("database {d}"),
        );
        match &self.conn {
            Some(conn) => format!("{database} on {}", conn.host_port()),
            None => format!("{database} (libpq environment)"),
        }
    }

    fn database(&self) -> Option<String> {
        self.database
            .clone()
            .or_else(|| self.conn.as_ref().and_then(PgConnection::database))
            .or_else(|| std::env::var("PGDATABASE").ok())
    }

    fn with_database(&self, database: &str) -> Box<dyn SqlSink> {
        let mut other = self.clone();
        other.database = Some(database.to_owned());
        Box::new(other)
    }

    async fn query(&self, sql: &str) -> Result<String> {
        run_script(self, sql).await
    }

    async fn start(&self) -> Result<Box<dyn SqlSession>> {
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(self.args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(password) = self.conn.as_ref().and_then(PgConnection::password) {
            cmd.env("PGPASSWORD", password.expose());
        }
        cmd.env("PGAPPNAME", crate::job::APPLICATION_NAME);
        if self.conn.is_none()
            && let Some(db) = &self.database
        {
            cmd.env("PGDATABASE", db);
        }
        let mut child = cmd.spawn().map_err(|e| Error::Sink {
            context: format!("cannot start {}", self.program.display()),
            source: Box::new(e),
        })?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(Error::Internal("psql's pipes were not set up".into()));
        };
        Ok(Box::new(LocalSession {
            child,
            pipes: Pipes::new(stdin, stdout, stderr).await,
        }))
    }
}

struct LocalSession {
    child: tokio::process::Child,
    pipes: Pipes<tokio::process::ChildStdin>,
}

#[async_trait]
impl SqlSession for LocalSession {
    async fn write(&mut self, data: Bytes) -> std::io::Result<()> {
        self.pipes.write(&data).await
    }

    async fn sync(&mut self) -> std::io::Result<()> {
        self.pipes.sync().await
    }

    fn backend_pid(&self) -> Option<u32> {
        self.pipes.backend_pid()
    }

    fn preamble_lines(&self) -> u64 {
        PREAMBLE_LINES
    }

    async fn finish(mut self: Box<Self>) -> Result<Ended> {
        self.pipes.close().await;
        let status = self.child.wait().await.map_err(|e| Error::Sink {
            context: "waiting for psql".into(),
            source: Box::new(e),
        })?;
        let LocalSession { pipes, .. } = *self;
        Ok(pipes.ended(status.success(), exit_status(status)).await)
    }
}

fn exit_status(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}

/// A test double: keeps every session's input; each session ends as its constructor says
/// ([`new`](Self::new): psql exit 0, printing the commit confirmation when it saw `COMMIT`;
/// [`failing`](Self::failing): an SQL error).
#[derive(Debug, Clone, Default)]
pub struct MemorySink {
    sessions: Arc<Mutex<Vec<Vec<u8>>>>,
    fail_with: Option<String>,
}

impl MemorySink {
    /// A sink whose sessions succeed.
    pub fn new() -> Self {
        Self::default()
    }

    /// A sink whose sessions end as psql does after an SQL error (exit code 3, `message`).
    pub fn failing(message: impl Into<String>) -> Self {
        Self {
            fail_with: Some(message.into()),
            ..Self::default()
        }
    }

    /// What each session was sent, in order.
    pub fn sessions(&self) -> Vec<Vec<u8>> {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[async_trait]
impl SqlSink for MemorySink {
    fn describe(&self) -> String {
        "memory".into()
    }

    fn database(&self) -> Option<String> {
        Some("memory".into())
    }

    fn with_database(&self, _database: &str) -> Box<dyn SqlSink> {
        Box::new(self.clone())
    }

    async fn query(&self, sql: &str) -> Result<String> {
        run_script(self, sql).await
    }

    async fn start(&self) -> Result<Box<dyn SqlSession>> {
        let index = {
            let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            sessions.push(Vec::new());
            sessions.len() - 1
        };
        Ok(Box::new(MemorySession {
            sink: self.clone(),
            index,
        }))
    }
}

struct MemorySession {
    sink: MemorySink,
    index: usize,
}

#[async_trait]
impl SqlSession for MemorySession {
    async fn write(&mut self, data: Bytes) -> std::io::Result<()> {
        let mut sessions = self.sink.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions[self.index].extend_from_slice(&data);
        Ok(())
    }

    async fn sync(&mut self) -> std::io::Result<()> {
        let mut sessions = self.sink.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions[self.index].extend_from_slice(format!("SELECT '{SYNC}';\n").as_bytes());
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<Ended> {
        let input = self.sink.sessions()[self.index].clone();
        let text = String::from_utf8_lossy(&input);
        Ok(match &self.sink.fail_with {
            Some(message) => Ended {
                success: false,
                status: "exit code 3".into(),
                stderr: vec![format!("psql:<stdin>:1: ERROR:  {message}")],
                ..Ended::default()
            },
            None => Ended {
                success: true,
                status: "exit code 0".into(),
                stdout: text
                    .lines()
                    .any(|l| l == crate::job::COMMIT)
                    .then(|| crate::job::COMMITTED.to_owned())
                    .into_iter()
                    .collect(),
                ..Ended::default()
            },
        })
    }
}
