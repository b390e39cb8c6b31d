//! `pg_dump` run on this host.

use std::path::PathBuf;
use std::process::Stdio;

use async_trait::async_trait;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

use crate::tap::{Tap, Tapped};
use crate::{DumpInfo, DumpSource, DumpStream, Error, PgConnection, Result};

/// The line plain-format `pg_dump` writes last (before the `\unrestrict` line of 15.14+).
const COMPLETE_MARKER: &[u8] = b"-- PostgreSQL database dump complete";
/// How much of standard error is kept for the error message.
const STDERR_KEEP: usize = 4096;

/// `pg_dump --clean --if-exists` (plain SQL) of one database, run as a child process.
///
/// The password is passed in the child's environment (`PGPASSWORD`), never on its command line,
/// which every user of the host can read in `/proc/<pid>/cmdline`.
#[derive(Debug, Clone)]
pub struct PgDump {
    conn: Option<PgConnection>,
    program: PathBuf,
    extra_args: Vec<String>,
    lock_wait_timeout: Option<std::time::Duration>,
}

impl PgDump {
    /// A dump of the database `conn` points at, with `pg_dump` from `PATH`.
    pub fn new(conn: PgConnection) -> Self {
        Self {
            conn: Some(conn),
            program: "pg_dump".into(),
            extra_args: Vec::new(),
            lock_wait_timeout: None,
        }
    }

    /// A dump of the database libpq's environment names (`PGHOST`, `PGPORT`, `PGUSER`,
    /// `PGDATABASE`, `PGPASSFILE`/`~/.pgpass`, `PGSERVICE`, …).
    pub fn from_libpq_env() -> Self {
        Self {
            conn: None,
            program: "pg_dump".into(),
            extra_args: Vec::new(),
            lock_wait_timeout: None,
        }
    }

    /// Uses this `pg_dump` binary (match the server's major version or newer).
    pub fn program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = program.into();
        self
    }

    /// Fails the dump when a table's lock cannot be had within `timeout` (`pg_dump
    /// --lock-wait-timeout`), instead of waiting behind, say, a migration for ever.
    pub fn lock_wait_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.lock_wait_timeout = Some(timeout);
        self
    }

    /// Adds arguments after ours (e.g. `--exclude-table-data=…`). Never put a password here.
    pub fn extra_args(mut self, args: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// The command line `pg_dump` is run with (no password in it).
    pub fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = ["--clean", "--if-exists", "--no-password", "--format=plain"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        if let Some(timeout) = self.lock_wait_timeout {
            args.push(lock_wait_arg(timeout));
        }
        if let Some(conn) = &self.conn {
            args.push(format!("--dbname={}", conn.url_without_password()));
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }

    fn program_name(&self) -> String {
        self.program.display().to_string()
    }
}

#[async_trait]
impl DumpSource for PgDump {
    fn describe(&self) -> String {
        match &self.conn {
            Some(conn) => format!(
                "pg_dump of {} on {}",
                conn.database()
                    .unwrap_or_else(|| "the default database".into()),
                conn.host_port()
            ),
            None => "pg_dump of the database named by the libpq environment".into(),
        }
    }

    fn database(&self) -> Option<String> {
        self.conn.as_ref().and_then(PgConnection::database)
    }

    async fn start(&self) -> Result<DumpStream> {
        let mut cmd = Command::new(&self.program);
        cmd.args(self.args())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(password) = self.conn.as_ref().and_then(PgConnection::password) {
            cmd.env("PGPASSWORD", password.expose());
        }
        let mut child = cmd.spawn().map_err(|source| Error::Spawn {
            program: self.program_name(),
            source,
        })?;
        let program = self.program_name();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| Error::io("pg_dump stdout", std::io::Error::other("not piped")))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| Error::io("pg_dump stderr", std::io::Error::other("not piped")))?;
        let stderr_task = tokio::spawn(collect_stderr(stderr, program.clone()));
        let (reader, seen) = Tap::new(stdout, 4096, 512);
        let database = self.database();
        let completion = async move {
            let status = child
                .wait()
                .await
                .map_err(|e| Error::io(format!("wait for {program}"), e))?;
            let stderr = stderr_task.await.unwrap_or_default();
            check_exit(&program, status, &stderr)?;
            let seen = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
            check_complete(&program, &seen)?;
            Ok(dump_info(&seen, database))
        };
        Ok(DumpStream {
            reader: Box::pin(reader),
            completion: Box::pin(completion),
        })
    }
}

/// `--lock-wait-timeout=<milliseconds>` (at least 1: 0 would mean no limit).
pub(crate) fn lock_wait_arg(timeout: std::time::Duration) -> String {
    format!("--lock-wait-timeout={}", timeout.as_millis().max(1))
}

/// Drains standard error (so the child never blocks on a full pipe), logs each line and keeps
/// the last few KiB for an error message.
pub(crate) async fn collect_stderr(stderr: impl AsyncRead + Unpin, program: String) -> String {
    let mut lines = BufReader::new(stderr).lines();
    let mut kept = String::new();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(program = %program, "{line}");
        if !kept.is_empty() {
            kept.push('\n');
        }
        kept.push_str(&line);
        if kept.len() > STDERR_KEEP {
            let cut = kept.len() - STDERR_KEEP;
            let cut = (cut..kept.len())
                .find(|&i| kept.is_char_boundary(i))
                .unwrap_or(kept.len());
            kept.drain(..cut);
        }
    }
    kept
}

/// A non-zero exit or a signal is a failed dump, whatever was written.
pub(crate) fn check_exit(
    program: &str,
    status: std::process::ExitStatus,
    stderr: &str,
) -> Result<()> {
    use std::os::unix::process::ExitStatusExt;
    if status.success() {
        return Ok(());
    }
    let status = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => status.to_string(),
    };
    let stderr = one_line(stderr);
    Err(Error::DumpFailed {
        program: program.to_owned(),
        status,
        stderr,
    })
}

/// Standard error as one line for an error message: pg_dump's messages continue on
/// tab-indented lines.
pub(crate) fn one_line(stderr: &str) -> String {
    let line = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if line.is_empty() {
        "no error output".to_owned()
    } else {
        line
    }
}

/// A plain-format dump that exited 0 must still be non-empty and end with pg_dump's marker.
pub(crate) fn check_complete(program: &str, seen: &Tapped) -> Result<()> {
    if seen.bytes == 0 {
        return Err(Error::Incomplete {
            program: program.to_owned(),
            reason: "it wrote nothing".into(),
        });
    }
    if !seen
        .tail
        .windows(COMPLETE_MARKER.len())
        .any(|w| w == COMPLETE_MARKER)
    {
        return Err(Error::Incomplete {
            program: program.to_owned(),
            reason: "the output does not end with \"-- PostgreSQL database dump complete\"".into(),
        });
    }
    Ok(())
}

/// Versions from the dump's header comments.
pub(crate) fn dump_info(seen: &Tapped, database: Option<String>) -> DumpInfo {
    let head = String::from_utf8_lossy(&seen.head);
    let find = |prefix: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(prefix).map(|v| v.trim().to_owned()))
    };
    DumpInfo {
        tool_version: find("-- Dumped by pg_dump version ").map(|v| format!("pg_dump {v}")),
        server_version: find("-- Dumped from database version "),
        database,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_not_in_the_arguments() {
        let conn = PgConnection::parse("postgres://u:supersecret@127.0.0.1:5/db").unwrap();
        let dump = PgDump::new(conn);
        let args = dump.args().join(" ");
        assert!(args.contains("--clean --if-exists"));
        assert!(args.contains("--dbname=postgres://u@127.0.0.1:5/db"));
        assert!(!args.contains("supersecret"));
        assert!(!format!("{dump:?}").contains("supersecret"));
    }

    #[test]
    fn completeness_needs_bytes_and_the_marker() {
        let mut seen = Tapped::default();
        assert!(matches!(
            check_complete("pg_dump", &seen),
            Err(Error::Incomplete { .. })
        ));
        seen.bytes = 10;
        seen.tail = b"COPY t FROM stdin;\n1\t2\n".to_vec();
        assert!(matches!(
            check_complete("pg_dump", &seen),
            Err(Error::Incomplete { .. })
        ));
        seen.tail =
            b"--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict abc\n\n".to_vec();
        assert!(check_complete("pg_dump", &seen).is_ok());
    }

    #[test]
    fn versions_come_from_the_header() {
        let seen = Tapped {
            bytes: 1,
            head: b"--\n-- PostgreSQL database dump\n--\n\n-- Dumped from database version 15.18 (Debian)\n-- Dumped by pg_dump version 15.18\n".to_vec(),
            tail: vec![],
        };
        let info = dump_info(&seen, Some("litemaas".into()));
        assert_eq!(info.server_version.as_deref(), Some("15.18 (Debian)"));
        assert_eq!(info.tool_version.as_deref(), Some("pg_dump 15.18"));
    }

    #[tokio::test]
    async fn a_failing_program_is_a_failed_dump() {
        use std::os::unix::process::ExitStatusExt;
        let err = check_exit(
            "pg_dump",
            std::process::ExitStatus::from_raw(1 << 8),
            "pg_dump: error: connection failed",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "pg_dump failed (exit code 1): pg_dump: error: connection failed"
        );
        let err = check_exit("pg_dump", std::process::ExitStatus::from_raw(9), "").unwrap_err();
        assert!(err.to_string().contains("killed by signal 9"), "{err}");
    }
}
