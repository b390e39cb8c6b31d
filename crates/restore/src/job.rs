//! One restore: stored bytes → decoder and checks → psql, committed only after every check.
//!
//! The protocol, the same for every [`SqlSink`]:
//!
//! 1. psql runs with `ON_ERROR_STOP` and **without** `--single-transaction`: the tool sends
//!    `BEGIN;` itself, then the dump. At the end of its input psql then simply disconnects,
//!    and PostgreSQL rolls the open transaction back — whatever arrived, even a COPY block cut
//!    in the middle (which psql ends at end of input as if it were complete). Closing an exec
//!    stream in a pod is only an end of input too, so the same holds there.
//! 2. Only when the stream has ended cleanly (gzip CRC-32 and length, zstd frame), the SHA-256
//!    of the stored bytes equals the record's (when there is one) and the SQL ended with
//!    pg_dump's completion marker, the tool sends `COMMIT;`. psql reaches it only if no
//!    statement before it failed (`ON_ERROR_STOP`).
//! 3. After `COMMIT;` the tool asks for a confirmation line; seeing it proves the commit.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::sync::CancellationToken;

use crate::input::{self, Codec, Expected};
use crate::plain::{FormatError, PlainFilter, PlainSummary};
use crate::sink::{Ended, SqlSession, SqlSink, psql_error};
use crate::{Error, Result};

pub(crate) const BEGIN: &str = "BEGIN;";
pub(crate) const COMMIT: &str = "COMMIT;";
/// The line the confirmation query prints.
pub(crate) const COMMITTED: &str = "litemaas-restore: committed";
/// How long psql may take to exit after its input ended on a failure, before it is dropped
/// (a local psql is then killed; either way the transaction is rolled back).
const EXIT_GRACE: Duration = Duration::from_secs(60);

/// The application name of every psql session of a restore (`pg_stat_activity`), so that
/// operators and the restore itself can tell them apart.
pub const APPLICATION_NAME: &str = "litemaas-restore";

/// How long psql may take to exit at the end of its input before its server session is
/// ended for it.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// How a restore runs.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// What is known in advance about the stored bytes (name, codec, SHA-256, size).
    pub expected: Expected,
    /// Incremented with every stored byte read: for a progress display.
    pub progress: Option<Arc<AtomicU64>>,
    /// How often a restore that waits for a lock says, as a warning, which session holds it
    /// (`None`: never). Default 30 s.
    pub lock_wait_report: Option<Duration>,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        Self {
            expected: Expected::default(),
            progress: None,
            lock_wait_report: Some(Duration::from_secs(30)),
        }
    }
}

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// The target, e.g. `database litemaas on db:5432`.
    pub target: String,
    /// The codec found.
    pub codec: Codec,
    /// Stored bytes read.
    pub stored_bytes: u64,
    /// Bytes of SQL.
    pub sql_bytes: u64,
    /// SHA-256 of the stored bytes.
    pub sha256: String,
    /// Whether that SHA-256 was compared with an integrity record (`false`: none existed).
    pub sha256_verified: bool,
    /// The checks that passed before COMMIT, in words.
    pub checks: Vec<String>,
    /// Rows per table, as the dump's COPY blocks carried them.
    pub tables: BTreeMap<String, u64>,
    /// Errors of the clean (DROP) section turned into warnings (harmless; see
    /// [`PlainFilter`](crate::plain::PlainFilter)).
    pub clean_warnings: u64,
    /// `pg_dump` version that made the dump.
    pub pg_dump_version: Option<String>,
    /// The server version the dump was taken from.
    pub source_server_version: Option<String>,
    /// Wall time.
    pub duration_ms: u64,
}

/// Restores `stored` (the backup's bytes as stored: compressed or not) through `sink`, all or
/// nothing.
///
/// # Errors
/// See [`Error`]: in every case but [`Error::CommitUnknown`] the target is exactly as it was.
pub async fn restore(
    stored: Pin<Box<dyn AsyncRead + Send>>,
    sink: &dyn SqlSink,
    options: &RestoreOptions,
    cancel: &CancellationToken,
) -> Result<RestoreReport> {
    let started = Instant::now();
    let target = sink.describe();
    let decoded = input::open(stored, &options.expected, options.progress.clone()).await?;
    let codec = decoded.codec;
    let seen = decoded.seen.clone();
    let mut sql = decoded.sql;
    let mut filter = PlainFilter::new();
    let mut out = Vec::new();

    // Nothing reaches psql until the input is known to be a pg_dump dump.
    let mut ended = false;
    while filter.sql_bytes() < 64 && !ended {
        let chunk = read_chunk(&mut sql).await?;
        ended = chunk.is_empty();
        filter.push(chunk, &mut out)?;
    }
    if ended {
        filter.finish(&mut out)?;
    }

    let mut session = sink.start().await?;
    // Runs beside the load until COMMIT is sent; never ends by itself.
    let lock_waits = report_lock_waits(sink, options.lock_wait_report);
    tokio::pin!(lock_waits);
    let mut lines_sent = 0u64;
    let streamed = {
        let stream = async {
            send(
                &mut *session,
                Bytes::from(format!("{BEGIN}\n")),
                &mut lines_sent,
            )
            .await?;
            loop {
                // One write per chunk, not one per line: psql is woken once per 256 KiB.
                if !out.is_empty() {
                    send(&mut *session, join(&mut out), &mut lines_sent).await?;
                }
                if ended {
                    break;
                }
                let chunk = read_chunk(&mut sql).await.map_err(Step::Input)?;
                ended = chunk.is_empty();
                filter
                    .push(chunk, &mut out)
                    .map_err(|e| Step::Input(e.into()))?;
            }
            Ok::<(), Step>(())
        };
        tokio::select! {
            biased;
            () = cancel.cancelled() => Err(Step::Input(Error::Cancelled)),
            result = stream => result,
            () = &mut lock_waits => unreachable!("the lock-wait report never ends"),
        }
    };

    // The verdict on everything before COMMIT.
    let verdict = streamed.and_then(|()| {
        let summary = filter.finish(&mut out).map_err(|e| Step::Input(e.into()))?;
        let seen = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let sha256 = input::check_stored(&seen, &options.expected).map_err(Step::Input)?;
        Ok((summary, sha256, seen.bytes))
    });
    // Every check passed. Before COMMIT, psql must have run everything before it: a statement
    // still waiting (for a lock an application holds, say) may wait for long, and until COMMIT
    // is sent a cancellation still undoes it all. Once COMMIT is sent it runs, whatever
    // happens to us.
    let verdict = match verdict {
        Ok(v) => tokio::select! {
            biased;
            () = cancel.cancelled() => Err(Step::Input(Error::Cancelled)),
            ran = session.sync() => ran.map(|()| v).map_err(|_| Step::Psql),
            () = &mut lock_waits => unreachable!("the lock-wait report never ends"),
        },
        Err(step) => Err(step),
    };
    let (summary, sha256, stored_bytes) = match verdict {
        Ok(v) => v,
        Err(step) => {
            let ended = end_without_commit(session, sink).await;
            return Err(match (step, ended) {
                // psql stopped first: its error is the cause.
                (Step::Psql, Some(ended)) => psql_error(&target, &ended),
                (Step::Psql, None) => Error::Psql {
                    target,
                    status: "no exit status".into(),
                    message: "psql stopped reading its input".into(),
                    hint: String::new(),
                },
                (Step::Input(e), _) => e,
            });
        }
    };
    if cancel.is_cancelled() {
        end_without_commit(session, sink).await;
        return Err(Error::Cancelled);
    }

    // COMMIT, then the confirmation that it happened.
    // psql's line number of COMMIT: the session's own first line, the dump, the sync query.
    let commit_line = session.preamble_lines() + lines_sent + 1 + 1;
    let tail = format!("{COMMIT}\nSELECT '{COMMITTED}';\n");
    // A failed write means psql is gone; how it ended says why.
    let _ = session.write(Bytes::from(tail)).await;
    // COMMIT was sent: from here a failure to learn how psql ended is an unknown outcome.
    let ended = match session.finish().await {
        Ok(ended) => ended,
        Err(e) => {
            return Err(Error::CommitUnknown {
                target,
                message: e.to_string(),
            });
        }
    };
    if ended.stdout.iter().any(|l| l == COMMITTED) {
        let sha256_verified = options.expected.sha256.is_some();
        let checks = checks_passed(
            codec,
            sha256_verified,
            "psql reported no error (ON_ERROR_STOP)".to_owned(),
        );
        let PlainSummary {
            sql_bytes,
            tables,
            pg_dump_version,
            server_version,
            ..
        } = summary;
        return Ok(RestoreReport {
            target,
            codec,
            stored_bytes,
            sql_bytes,
            sha256,
            sha256_verified,
            checks,
            tables,
            // Warnings beyond the clean section's are not expected from a pg_dump script.
            clean_warnings: ended.warnings,
            pg_dump_version,
            source_server_version: server_version,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        });
    }
    Err(after_commit_failure(&target, &ended, commit_line))
}

/// Every `every`, says (as a warning) which sessions hold a lock that one of the restore's
/// sessions waits for, and what to do about it; never ends. The restore's sessions are known
/// by their application name ([`APPLICATION_NAME`]). A check that fails is only logged.
async fn report_lock_waits(sink: &dyn SqlSink, every: Option<Duration>) {
    let Some(every) = every.filter(|d| !d.is_zero()) else {
        return std::future::pending().await;
    };
    let sql = format!(
        "SELECT format('the restore has waited %s s for a lock held by session %s (%s, from %s, %s): \
           stop the application, or end that session (SELECT pg_terminate_backend(%s);); \
           SIGINT cancels the restore and changes nothing', \
           extract(epoch FROM now() - w.query_start)::bigint, b.pid, \
           coalesce(nullif(b.application_name, ''), 'no application name'), \
           coalesce(host(b.client_addr), 'a local socket'), \
           coalesce(b.state || ' since ' || to_char(b.state_change AT TIME ZONE 'UTC', \
             'YYYY-MM-DD HH24:MI:SS') || ' UTC', 'state not visible'), b.pid) \
         FROM pg_stat_activity w \
         CROSS JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS blocker(pid) \
         JOIN pg_stat_activity b ON b.pid = blocker.pid \
         WHERE w.application_name = '{APPLICATION_NAME}' AND w.datname = current_database() \
           AND w.wait_event_type = 'Lock' AND b.application_name IS DISTINCT FROM '{APPLICATION_NAME}';\n"
    );
    loop {
        tokio::time::sleep(every).await;
        match sink.query(&sql).await {
            Ok(out) => {
                for line in out.lines().filter(|l| !l.trim().is_empty()) {
                    tracing::warn!("{line}");
                }
            }
            Err(e) => tracing::debug!("could not check the restore's lock waits: {e}"),
        }
    }
}

/// The checks a restore passed before it was called done, in words; `psql` says how psql
/// ended.
pub(crate) fn checks_passed(codec: Codec, sha256_verified: bool, psql: String) -> Vec<String> {
    vec![
        match codec {
            Codec::Gzip => "gzip stream complete (CRC-32 and length verified)",
            Codec::Zstd => {
                "zstd frames complete (content checksum verified where the frame has one)"
            }
            Codec::None => "uncompressed: read to its end",
        }
        .to_owned(),
        if sha256_verified {
            "SHA-256 matches the integrity record"
        } else {
            "no integrity record: SHA-256 not compared"
        }
        .to_owned(),
        "ends with pg_dump's completion marker".to_owned(),
        psql,
    ]
}

/// Which side failed while streaming.
enum Step {
    /// psql stopped reading (it exited at an error, or never connected).
    Psql,
    /// The input: reading, decoding, the format, or a cancellation.
    Input(Error),
}

async fn send(session: &mut dyn SqlSession, data: Bytes, lines: &mut u64) -> Result<(), Step> {
    *lines += memchr::memchr_iter(b'\n', &data).count() as u64;
    session.write(data).await.map_err(|_| Step::Psql)
}

/// The pieces the filter produced for a chunk, as one buffer (usually one copy of 256 KiB).
pub(crate) fn join(pieces: &mut Vec<Bytes>) -> Bytes {
    if pieces.len() == 1 {
        return pieces.pop().unwrap_or_default();
    }
    let mut joined = BytesMut::with_capacity(pieces.iter().map(Bytes::len).sum());
    for piece in pieces.drain(..) {
        joined.extend_from_slice(&piece);
    }
    joined.freeze()
}

pub(crate) async fn read_chunk(sql: &mut Pin<Box<dyn AsyncRead + Send>>) -> Result<Bytes> {
    const CHUNK: usize = 256 * 1024;
    let mut buf = BytesMut::with_capacity(CHUNK);
    while buf.len() < CHUNK {
        let n = sql
            .read_buf(&mut buf)
            .await
            .map_err(|source| Error::Read { source })?;
        if n == 0 {
            break;
        }
    }
    Ok(buf.freeze())
}

/// Ends psql's input without COMMIT, so the transaction is rolled back, and waits (bounded)
/// until psql has exited. A psql still in a statement after [`STOP_GRACE`] (its backend
/// waiting for a lock, say, while holding others) does not read that end: its backend is
/// ended through a session of its own ([`stop_backend`](crate::sink::stop_backend)).
pub(crate) async fn end_without_commit(
    session: Box<dyn SqlSession>,
    sink: &dyn SqlSink,
) -> Option<Ended> {
    let pid = session.backend_pid();
    let mut finishing = session.finish();
    let finished = match tokio::time::timeout(STOP_GRACE, &mut finishing).await {
        Ok(finished) => Ok(finished),
        Err(_) => {
            match pid {
                Some(pid) => match crate::sink::stop_backend(sink, pid).await {
                    Ok(true) => tracing::info!(
                        "psql was still running a statement {STOP_GRACE:?} after the end of its input: its server session ({pid}) was ended"
                    ),
                    Ok(false) => tracing::info!(
                        "psql was still running {STOP_GRACE:?} after the end of its input; its server session ({pid}) had already ended"
                    ),
                    Err(e) => tracing::warn!(
                        "psql is still running a statement and its server session ({pid}) could not be ended: {e}"
                    ),
                },
                None => tracing::warn!(
                    "psql is still running a statement and did not say which server session is its own"
                ),
            }
            tokio::time::timeout(EXIT_GRACE, finishing).await
        }
    };
    match finished {
        Ok(Ok(ended)) => Some(ended),
        Ok(Err(e)) => {
            tracing::warn!("psql did not end cleanly: {e}");
            None
        }
        Err(_) => {
            tracing::warn!(
                "psql did not exit within {EXIT_GRACE:?} of the end of its input; dropped"
            );
            None
        }
    }
}

/// psql failed and no confirmation came: rolled back, unless the connection was lost at or
/// after the COMMIT line.
fn after_commit_failure(target: &str, ended: &Ended, commit_line: u64) -> Error {
    let failed_line = ended.stderr.iter().find_map(|l| {
        let rest = l.strip_prefix("psql:<stdin>:")?;
        rest.split(':').next()?.parse::<u64>().ok()
    });
    let lost = ended.stderr.iter().any(|l| {
        l.contains("server closed the connection")
            || l.contains("connection to server was lost")
            || l.contains("could not send data to server")
            || l.contains("could not receive data from server")
    }) || ended.status.contains("signal")
        || ended.status == "no exit status";
    match failed_line {
        Some(line) if line < commit_line => psql_error(target, ended),
        _ if lost || ended.success => Error::CommitUnknown {
            target: target.to_owned(),
            message: psql_error(target, ended).to_string(),
        },
        _ => psql_error(target, ended),
    }
}

impl From<FormatError> for Step {
    fn from(e: FormatError) -> Self {
        Step::Input(e.into())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::MemorySink;

    const DUMP: &str = "--\n-- PostgreSQL database dump\n--\n\nSET lock_timeout = 0;\n\n\
        DROP TABLE IF EXISTS public.t;\n--\n-- Name: t; Type: TABLE\n--\n\n\
        CREATE TABLE public.t (x int);\nCOPY public.t (x) FROM stdin;\n1\n2\n\\.\n\n\
        --\n-- PostgreSQL database dump complete\n--\n\n";

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(data).unwrap();
        gz.finish().unwrap()
    }

    async fn run(stored: Vec<u8>, expected: Expected, sink: &MemorySink) -> Result<RestoreReport> {
        let options = RestoreOptions {
            expected,
            progress: None,
            ..RestoreOptions::default()
        };
        restore(
            Box::pin(std::io::Cursor::new(stored)),
            sink,
            &options,
            &CancellationToken::new(),
        )
        .await
    }

    fn sent(sink: &MemorySink) -> String {
        String::from_utf8(sink.sessions().concat()).unwrap()
    }

    #[tokio::test]
    async fn commit_is_sent_once_and_last_after_a_good_dump() {
        let sink = MemorySink::new();
        let report = run(gzip(DUMP.as_bytes()), Expected::default(), &sink)
            .await
            .unwrap();
        assert_eq!(report.tables["public.t"], 2);
        let text = sent(&sink);
        assert_eq!(text.matches("COMMIT;").count(), 1);
        assert!(text.starts_with("BEGIN;\n"));
        assert!(text.ends_with("COMMIT;\nSELECT 'litemaas-restore: committed';\n"));
        assert!(!report.sha256_verified);
    }

    #[tokio::test]
    async fn no_commit_reaches_psql_after_any_failed_check() {
        let whole = gzip(DUMP.as_bytes());
        let cut = DUMP.find("2\n\\.").unwrap();
        let mut wrong_crc = whole.clone();
        let n = wrong_crc.len();
        wrong_crc[n - 8] ^= 0xff; // the CRC-32 in the trailer
        let cases: Vec<(&str, Vec<u8>, Expected)> = vec![
            (
                "cut inside COPY",
                gzip(&DUMP.as_bytes()[..cut]),
                Expected::default(),
            ),
            (
                "truncated gzip",
                whole[..whole.len() - 4].to_vec(),
                Expected::default(),
            ),
            ("bad CRC", wrong_crc, Expected::default()),
            (
                "wrong SHA-256",
                whole.clone(),
                Expected {
                    sha256: Some("00".repeat(32)),
                    ..Expected::default()
                },
            ),
            (
                "wrong size",
                whole.clone(),
                Expected {
                    stored_bytes: Some(1),
                    ..Expected::default()
                },
            ),
        ];
        for (name, stored, expected) in cases {
            let sink = MemorySink::new();
            let err = run(stored, expected, &sink).await.unwrap_err();
            assert!(err.target_unchanged(), "{name}: {err}");
            assert!(!sent(&sink).contains("COMMIT"), "{name}: COMMIT sent");
        }
    }

    #[tokio::test]
    async fn nothing_reaches_psql_when_the_input_is_not_a_dump() {
        for (stored, expected) in [
            (gzip(b"DROP TABLE users;\n"), Expected::default()),
            (Vec::new(), Expected::default()),
            (
                gzip(DUMP.as_bytes()),
                Expected {
                    name: Some("database.sql.zst".into()),
                    ..Expected::default()
                },
            ),
        ] {
            let sink = MemorySink::new();
            assert!(run(stored, expected, &sink).await.is_err());
            assert!(sink.sessions().is_empty(), "psql was started");
        }
    }

    #[tokio::test]
    async fn a_psql_error_is_reported_as_the_cause() {
        let sink = MemorySink::failing("relation \"t\" already exists");
        let err = run(gzip(DUMP.as_bytes()), Expected::default(), &sink)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
    }

    /// A sink whose session cannot say how psql ended.
    #[derive(Debug)]
    struct LostSession;

    struct Lost;

    #[async_trait::async_trait]
    impl SqlSession for Lost {
        async fn write(&mut self, _data: Bytes) -> std::io::Result<()> {
            Ok(())
        }
        async fn sync(&mut self) -> std::io::Result<()> {
            Ok(())
        }
        async fn finish(self: Box<Self>) -> Result<Ended> {
            Err(Error::Internal("the exec stream broke".into()))
        }
    }

    #[async_trait::async_trait]
    impl SqlSink for LostSession {
        fn describe(&self) -> String {
            "lost".into()
        }
        fn database(&self) -> Option<String> {
            None
        }
        fn with_database(&self, _database: &str) -> Box<dyn SqlSink> {
            Box::new(LostSession)
        }
        async fn query(&self, _sql: &str) -> Result<String> {
            Ok(String::new())
        }
        async fn start(&self) -> Result<Box<dyn SqlSession>> {
            Ok(Box::new(Lost))
        }
    }

    /// After COMMIT was sent, not learning how psql ended is never reported as "unchanged".
    #[tokio::test]
    async fn losing_psql_after_commit_is_an_unknown_outcome() {
        let options = RestoreOptions::default();
        let err = restore(
            Box::pin(std::io::Cursor::new(gzip(DUMP.as_bytes()))),
            &LostSession,
            &options,
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, Error::CommitUnknown { .. }), "{err:?}");
        assert!(!err.target_unchanged());
    }

    #[test]
    fn a_connection_lost_at_commit_is_an_unknown_outcome() {
        let ended = |line: &str| Ended {
            success: false,
            status: "exit code 2".into(),
            stderr: vec![line.to_owned()],
            ..Ended::default()
        };
        let lost = ended("psql:<stdin>:40: server closed the connection unexpectedly");
        assert!(matches!(
            after_commit_failure("db", &lost, 40),
            Error::CommitUnknown { .. }
        ));
        let early = ended("psql:<stdin>:12: server closed the connection unexpectedly");
        assert!(matches!(
            after_commit_failure("db", &early, 40),
            Error::Psql { .. }
        ));
        let sql = ended("psql:<stdin>:12: ERROR:  duplicate key value");
        assert!(matches!(
            after_commit_failure("db", &sql, 40),
            Error::Psql { .. }
        ));
    }
}
