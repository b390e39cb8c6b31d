//! A parallel loader for plain pg_dump dumps: what `pg_restore -j` does, from a stream.
//!
//! `pg_restore -j` needs a custom or directory archive in a regular file; a plain dump
//! streamed from a store has neither. Its structure is regular all the same: each object is
//! introduced by a `-- Name: …; Type: …; Schema: …; Owner: …` comment, all definitions come
//! first (pre-data), then one `COPY … FROM stdin;` block per table (data), then indexes,
//! constraints, triggers, foreign keys, ACLs and materialized view refreshes (post-data). The
//! loader reads the dump once and runs
//!
//! * pre-data in order on one connection;
//! * the data on up to `jobs` connections: each table's COPY block is cut at row boundaries
//!   into pieces of [`ParallelOptions::chunk_bytes`], each piece loaded by its own
//!   `COPY … FROM stdin` on whichever connection is free (a table smaller than a piece is loaded
//!   whole, on one connection); sequence values likewise;
//! * after every COPY has finished, the primary keys, unique constraints and indexes on all
//!   connections, each given to the next free one;
//! * everything else (foreign keys, triggers, rules, ACLs, refreshes, …) in order on one
//!   connection, after everything before it has finished.
//!
//! Session settings (`SET client_encoding …`, `search_path`, `default_tablespace`, pg_dump's
//! `\restrict`) are replayed on each connection before it runs anything.
//!
//! Anything it does not understand — a data section that is not a COPY block (`--inserts`,
//! large objects), a line between objects that is not a setting — makes it stop running things
//! side by side: it waits for every connection, then sends the rest of the dump in order on one
//! connection, exactly as `psql -f` would. It never guesses.
//!
//! Connections cannot share a transaction, so the target must be a database nothing else uses
//! yet (a new one, dropped by the caller when the load fails); the checks of
//! [`restore`](crate::restore()) — the stream's trailer, the SHA-256, pg_dump's completion
//! marker, every psql without error — are all made before [`load`] returns `Ok`.
//!
//! One visible difference from `psql -f`: rows of a table loaded in pieces on several
//! connections sit in the table's pages in a different order (no query without `ORDER BY` may
//! rely on it; the rows themselves are the same).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncRead;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::input;
use crate::job::{RestoreOptions, RestoreReport, join, read_chunk};
use crate::plain::{PlainFilter, PlainSummary};
use crate::sink::{Ended, SqlSession, SqlSink, psql_error};
use crate::{Error, Result};

/// How a parallel load runs.
#[derive(Debug, Clone)]
pub struct ParallelOptions {
    /// Connections (1: everything in order on one connection, like `psql -f`).
    pub jobs: usize,
    /// A table's COPY block is loaded in pieces of about this many bytes.
    pub chunk_bytes: usize,
}

impl Default for ParallelOptions {
    fn default() -> Self {
        Self {
            jobs: std::thread::available_parallelism().map_or(2, |n| n.get()),
            chunk_bytes: 4 * 1024 * 1024,
        }
    }
}

/// What a parallel load did beyond a [`RestoreReport`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ParallelStats {
    /// Connections used.
    pub jobs: usize,
    /// `COPY` pieces loaded side by side.
    pub copy_pieces: u64,
    /// Indexes and constraints built side by side.
    pub parallel_objects: u64,
    /// Why the rest of the dump was run in order on one connection, if it was.
    pub serial_from: Option<String>,
    /// Wall time of each part of the dump, from the start of the load to its end.
    pub phases: PhaseTimes,
}

/// Wall time spent in each part of a dump, in milliseconds. A part ends when all its work
/// has finished on every connection (the barrier before the next part).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PhaseTimes {
    /// Connecting, then the definitions before the data (run in order).
    pub pre_data_ms: u64,
    /// The `COPY` blocks and sequence values.
    pub data_ms: u64,
    /// Indexes, constraints, triggers, foreign keys, grants: everything after the data.
    pub post_data_ms: u64,
}

/// Loads a plain pg_dump (as stored: gzip, zstd or plain) into `sink`'s database, which must
/// be new (nothing else uses it; see the module documentation), on up to `options.jobs`
/// connections.
///
/// # Errors
/// See [`Error`]. On any error the database holds part of the dump: the caller drops it.
pub async fn load(
    stored: Pin<Box<dyn AsyncRead + Send>>,
    sink: &dyn SqlSink,
    restore: &RestoreOptions,
    options: &ParallelOptions,
    cancel: &CancellationToken,
) -> Result<(RestoreReport, ParallelStats)> {
    let started = Instant::now();
    let target = sink.describe();
    let decoded = input::open(stored, &restore.expected, restore.progress.clone()).await?;
    let codec = decoded.codec;
    let seen = decoded.seen.clone();
    let mut sql = decoded.sql;
    let mut filter = PlainFilter::new();
    let mut splitter = Splitter::new(options.chunk_bytes.max(64 * 1024));
    let mut pool = Pool::new(sink, options.jobs.max(1));
    let mut filtered = Vec::new();
    let mut ops = Vec::new();

    let streamed = async {
        loop {
            let chunk = read_chunk(&mut sql).await?;
            let ended = chunk.is_empty();
            filter.push(chunk, &mut filtered)?;
            if ended {
                filter.finish(&mut filtered)?;
            }
            if !filtered.is_empty() {
                splitter.push(join(&mut filtered), &mut ops);
            }
            if ended {
                splitter.finish(&mut ops);
            }
            for op in ops.drain(..) {
                pool.run(op, &splitter.settings).await?;
            }
            if ended {
                return Ok::<(), Error>(());
            }
        }
    };
    let result = tokio::select! {
        biased;
        () = cancel.cancelled() => Err(Error::Cancelled),
        result = streamed => result,
    };
    // The verdict on the input, before anything is called done.
    let verdict = result.and_then(|()| {
        let summary = filter.finish(&mut Vec::new())?;
        let seen = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let sha256 = input::check_stored(&seen, &restore.expected)?;
        Ok((summary, sha256, seen.bytes))
    });
    let verdict = match verdict {
        Ok(v) => v,
        Err(e) => {
            let failed = pool.abort().await;
            // psql stopped first: its error is the cause, unless the input failed on its own.
            return Err(match (failed, e) {
                (_, Error::Cancelled) => Error::Cancelled,
                (Some(ended), Error::Sink { .. }) => psql_error(&target, &ended),
                (_, e) => e,
            });
        }
    };
    let stats = pool.finish(&target, cancel).await?;
    let (summary, sha256, stored_bytes) = verdict;
    let sha256_verified = restore.expected.sha256.is_some();
    let checks = crate::job::checks_passed(
        codec,
        sha256_verified,
        format!(
            "psql reported no error (ON_ERROR_STOP) on any of {} connection(s)",
            stats.jobs
        ),
    );
    let PlainSummary {
        sql_bytes,
        tables,
        pg_dump_version,
        server_version,
        ..
    } = summary;
    Ok((
        RestoreReport {
            target,
            codec,
            stored_bytes,
            sql_bytes,
            sha256,
            sha256_verified,
            checks,
            tables,
            clean_warnings: pool.warnings,
            pg_dump_version,
            source_server_version: server_version,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        },
        stats,
    ))
}

// ------------------------------------------------------------------------------------------
// The splitter: the dump's lines → what may run where.

/// What the splitter asks of the connections.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    /// Run in order on the primary connection, after everything sent before has finished.
    Serial(Vec<Bytes>),
    /// May run on any connection, after every serial op before it; `balanced`: give it to a
    /// connection with nothing else to do (an index build), not merely one with room.
    Parallel { sql: Vec<Bytes>, balanced: bool },
    /// A COPY piece (counted apart).
    Copy(Vec<Bytes>),
    /// Everything sent so far must finish before anything after it starts: the dump's next
    /// part begins.
    Barrier(Phase),
    /// From here on everything runs in order on the primary connection.
    SerialFrom(String),
}

/// Which part of the dump an object belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Pre,
    Data,
    Post,
}

#[derive(Debug)]
enum State {
    /// Before the first object: the header, settings, the clean section.
    Lead,
    /// A non-data object's text, held until the next object begins.
    Object { kind: String },
    /// A TABLE DATA object before its COPY line.
    CopyHead,
    /// Inside a COPY block: rows.
    Copy { command: Bytes },
    /// After a COPY block's `\.`, before the next object.
    AfterCopy,
    /// Not understood: everything goes on in order.
    Passthrough,
}

/// Session settings seen so far, in order (key → the line that sets it).
#[derive(Debug, Default)]
pub(crate) struct Settings {
    lines: Vec<(String, Bytes)>,
    version: u64,
}

impl Settings {
    fn set(&mut self, key: String, line: Bytes) {
        match self.lines.iter_mut().find(|(k, _)| *k == key) {
            Some((_, old)) if *old == line => return,
            Some((_, old)) => *old = line,
            None => self.lines.push((key, line)),
        }
        self.version += 1;
    }
}

/// The most text of one object (or of the lead) held before it is sent.
const MAX_HELD: usize = 64 * 1024 * 1024;

/// The key of pg_dump's `\restrict KEY` line among the settings.
const RESTRICT: &str = "\\restrict";

/// The setting a top-level line makes, if it is one pg_dump writes between objects: its key.
fn setting_key(line: &[u8]) -> Option<String> {
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\n');
    if let Some(key) = line.strip_prefix("\\restrict ") {
        return (!key.is_empty() && !key.contains(char::is_whitespace))
            .then(|| RESTRICT.to_owned());
    }
    if line == "SELECT pg_catalog.set_config('search_path', '', false);" {
        return Some("search_path".into());
    }
    let rest = line.strip_prefix("SET ")?;
    let (name, value) = rest.split_once(" = ")?;
    let simple_name = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.');
    let simple_value = value.ends_with(';')
        && !value[..value.len() - 1].contains(';')
        && value.bytes().all(|b| b != b'\\');
    (simple_name && simple_value).then(|| name.to_owned())
}

/// `Type: X` of an object header line (`-- Name: …; Type: X; Schema: …`), if it is one.
fn header_type(line: &[u8]) -> Option<String> {
    let line = std::str::from_utf8(line).ok()?;
    if !(line.starts_with("-- Name: ") || line.starts_with("-- Data for Name: ")) {
        return None;
    }
    let start = line.find("; Type: ")? + "; Type: ".len();
    let rest = &line[start..];
    let end = rest.find(';').unwrap_or(rest.trim_end().len());
    Some(rest[..end].to_owned())
}

fn phase_of(kind: &str) -> Option<Phase> {
    match kind {
        "TABLE DATA" | "SEQUENCE SET" => Some(Phase::Data),
        "BLOBS" | "BLOB" | "BLOB DATA" | "LARGE OBJECT" | "LARGE OBJECTS" => None,
        _ => Some(Phase::Pre),
    }
}

/// Whether an object's statement is an index or constraint build that may run beside others:
/// one table, nothing that depends on another object being built first.
fn buildable_aside(kind: &str, text: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(text) else {
        return false;
    };
    // pg_dump writes an index on one line, a constraint on two (`ALTER TABLE ONLY t` and
    // `    ADD CONSTRAINT …;`): one statement, ended on its last line. Anything more (a setting,
    // a second statement) is not known.
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with("--"))
        .collect();
    let statement = lines.iter().map(|l| l.trim()).collect::<Vec<_>>().join(" ");
    let statement = statement.as_str();
    if lines.is_empty()
        || lines.len() > 2
        || statement.matches(';').count() != 1
        || lines[..lines.len() - 1].iter().any(|l| l.contains(';'))
    {
        return false;
    }
    match kind {
        "INDEX" => {
            (statement.starts_with("CREATE INDEX ")
                || statement.starts_with("CREATE UNIQUE INDEX "))
                && !statement.contains(" ON ONLY ")
                && statement.ends_with(';')
        }
        "CONSTRAINT" => {
            statement.starts_with("ALTER TABLE ONLY ")
                && statement.ends_with(';')
                && [" PRIMARY KEY ", " UNIQUE ", " UNIQUE NULLS NOT DISTINCT "]
                    .iter()
                    .any(|k| statement.contains(k))
                && !statement.contains(" FOREIGN KEY ")
        }
        _ => false,
    }
}

/// Reads the filtered dump and says what runs where.
struct Splitter {
    state: State,
    phase: Phase,
    chunk_bytes: usize,
    /// The current line when it spans input chunks.
    partial: BytesMut,
    /// The line before the current one was exactly `--`.
    after_dashes: bool,
    /// Text of the current object (or of the lead), as slices.
    held: Vec<Bytes>,
    /// Its length.
    held_len: usize,
    /// The lead's settings block is still going (nothing but settings, comments and blank
    /// lines so far).
    lead_settings: bool,
    /// Rows of the current COPY piece.
    rows: Vec<Bytes>,
    rows_len: usize,
    pub(crate) settings: Settings,
}

impl Splitter {
    fn new(chunk_bytes: usize) -> Self {
        Self {
            state: State::Lead,
            phase: Phase::Pre,
            chunk_bytes,
            partial: BytesMut::new(),
            after_dashes: false,
            held: Vec::new(),
            held_len: 0,
            lead_settings: true,
            rows: Vec::new(),
            rows_len: 0,
            settings: Settings::default(),
        }
    }

    fn push(&mut self, chunk: Bytes, ops: &mut Vec<Op>) {
        let mut pos = 0;
        while pos < chunk.len() {
            if matches!(self.state, State::Passthrough) {
                if !self.partial.is_empty() {
                    ops.push(Op::Serial(vec![self.partial.split().freeze()]));
                }
                ops.push(Op::Serial(vec![chunk.slice(pos..)]));
                return;
            }
            if self.partial.is_empty() && matches!(self.state, State::Copy { .. }) {
                pos = self.copy_rows(&chunk, pos, ops);
                continue;
            }
            match memchr::memchr(b'\n', &chunk[pos..]) {
                Some(i) => {
                    let end = pos + i + 1;
                    let line = if self.partial.is_empty() {
                        chunk.slice(pos..end)
                    } else {
                        self.partial.extend_from_slice(&chunk[pos..end]);
                        self.partial.split().freeze()
                    };
                    self.line(line, ops);
                    if self.held_len > MAX_HELD && !matches!(self.state, State::Passthrough) {
                        self.passthrough(
                            "an object of more than 64 MiB, or no object headers",
                            ops,
                        );
                    }
                    pos = end;
                }
                None => {
                    self.partial.extend_from_slice(&chunk[pos..]);
                    return;
                }
            }
        }
    }

    /// Rows of a COPY block from `pos` (a line start) on, as slices of `chunk`; returns where it
    /// stopped: at the `\.` line, or at the end of the chunk (a cut line kept in `partial`).
    fn copy_rows(&mut self, chunk: &Bytes, pos: usize, ops: &mut Vec<Op>) -> usize {
        let rest = &chunk[pos..];
        if rest.starts_with(b"\\.\n") {
            self.end_copy(ops);
            return pos + 3;
        }
        let (rows_end, next) = match memchr::memmem::find(rest, b"\n\\.\n") {
            Some(i) => (pos + i + 1, pos + i + 1),
            None => match memchr::memrchr(b'\n', rest) {
                Some(i) => {
                    self.partial.extend_from_slice(&chunk[pos + i + 1..]);
                    (pos + i + 1, chunk.len())
                }
                None => {
                    self.partial.extend_from_slice(rest);
                    (pos, chunk.len())
                }
            },
        };
        if rows_end > pos {
            self.add_rows(chunk.slice(pos..rows_end), ops);
        }
        next
    }

    /// Adds whole rows to the current piece, sending pieces that are full (cut at a row end).
    fn add_rows(&mut self, mut rows: Bytes, ops: &mut Vec<Op>) {
        while self.rows_len + rows.len() >= self.chunk_bytes {
            let room = self.chunk_bytes.saturating_sub(self.rows_len);
            // The end of the last row that fits (or of the first row, if none does).
            let cut = match memchr::memrchr(b'\n', &rows[..room.min(rows.len())]) {
                Some(i) => i + 1,
                None => match memchr::memchr(b'\n', &rows) {
                    Some(i) if self.rows.is_empty() => i + 1,
                    _ => 0,
                },
            };
            if cut > 0 {
                self.rows_len += cut;
                self.rows.push(rows.split_to(cut));
            }
            self.send_piece(ops);
            if rows.is_empty() {
                return;
            }
        }
        if !rows.is_empty() {
            self.rows_len += rows.len();
            self.rows.push(rows);
        }
    }

    fn send_piece(&mut self, ops: &mut Vec<Op>) {
        let State::Copy { command } = &self.state else {
            return;
        };
        let mut sql = Vec::with_capacity(self.rows.len() + 2);
        sql.push(command.clone());
        sql.append(&mut self.rows);
        sql.push(Bytes::from_static(b"\\.\n"));
        self.rows_len = 0;
        ops.push(Op::Copy(sql));
    }

    fn end_copy(&mut self, ops: &mut Vec<Op>) {
        self.send_piece(ops);
        self.state = State::AfterCopy;
        self.after_dashes = false;
    }

    /// One whole line outside COPY rows (or a COPY row that spanned input chunks).
    fn line(&mut self, line: Bytes, ops: &mut Vec<Op>) {
        if let State::Copy { .. } = self.state {
            if &line[..] == b"\\.\n" {
                self.end_copy(ops);
            } else {
                self.add_rows(line, ops);
            }
            return;
        }
        let dashes = &line[..] == b"--\n";
        if self.after_dashes
            && let Some(kind) = header_type(&line)
        {
            self.after_dashes = false;
            self.begin_object(kind, line, ops);
            return;
        }
        self.after_dashes = dashes;
        match &self.state {
            State::Lead => {
                if self.lead_settings {
                    let blank_or_comment = line.trim_ascii().is_empty() || line.starts_with(b"--");
                    if let Some(key) = setting_key(&line) {
                        self.settings.set(key, line.clone());
                    } else if !blank_or_comment {
                        self.lead_settings = false;
                    }
                }
                self.hold(line);
            }
            State::Object { .. } => self.hold(line),
            State::CopyHead => {
                if line.starts_with(b"COPY ") && line.ends_with(b" FROM stdin;\n") {
                    self.take_held();
                    self.state = State::Copy { command: line };
                } else if dashes || line.trim_ascii().is_empty() || line.starts_with(b"-- ") {
                    self.hold(line);
                } else {
                    self.hold(line);
                    self.passthrough(
                        "table data that is not a COPY block (a dump made with --inserts?)",
                        ops,
                    );
                }
            }
            State::AfterCopy => {
                if let Some(key) = setting_key(&line) {
                    self.settings.set(key, line.clone());
                    self.hold(line);
                } else if dashes || line.trim_ascii().is_empty() {
                    self.hold(line);
                } else {
                    self.hold(line);
                    self.passthrough(
                        "a statement after a COPY block that belongs to no object",
                        ops,
                    );
                }
            }
            State::Copy { .. } | State::Passthrough => {}
        }
    }

    /// Holds a line of the current object; an object too big to hold (no pg_dump object is;
    /// a script without object headers would be) is not understood.
    fn hold(&mut self, line: Bytes) {
        self.held_len += line.len();
        self.held.push(line);
    }

    fn take_held(&mut self) -> Vec<Bytes> {
        self.held_len = 0;
        std::mem::take(&mut self.held)
    }

    /// A new object begins (its header line is `line`): the previous one is complete.
    fn begin_object(&mut self, kind: String, line: Bytes, ops: &mut Vec<Op>) {
        self.complete_object(ops);
        if matches!(self.state, State::Passthrough) {
            ops.push(Op::Serial(vec![line]));
            return;
        }
        let Some(phase) = phase_of(&kind) else {
            self.hold(line);
            self.passthrough(&format!("objects of type {kind}"), ops);
            return;
        };
        // Data comes after all definitions; anything after the data is post-data.
        let phase = if phase == Phase::Pre && self.phase >= Phase::Data {
            Phase::Post
        } else {
            phase
        };
        if phase != self.phase {
            ops.push(Op::Barrier(phase));
            self.phase = phase;
        }
        self.hold(line);
        self.state = if kind == "TABLE DATA" {
            State::CopyHead
        } else {
            State::Object { kind }
        };
    }

    /// Sends what is held of the current object (or the lead) where it may run.
    fn complete_object(&mut self, ops: &mut Vec<Op>) {
        let held = self.take_held();
        match std::mem::replace(&mut self.state, State::Lead) {
            State::Lead => {
                if !held.is_empty() {
                    ops.push(Op::Serial(held));
                }
            }
            State::Object { kind } => {
                self.trailing_settings(&held);
                let text: Vec<u8> = held.concat();
                if self.phase == Phase::Data && kind == "SEQUENCE SET" {
                    ops.push(Op::Parallel {
                        sql: held,
                        balanced: false,
                    });
                } else if self.phase == Phase::Post && buildable_aside(&kind, &text) {
                    ops.push(Op::Parallel {
                        sql: held,
                        balanced: true,
                    });
                } else {
                    ops.push(Op::Serial(held));
                }
            }
            // Only comments and settings: the settings were recorded, the rest is comments.
            State::AfterCopy => {}
            State::CopyHead => {
                self.state = State::CopyHead;
                self.held_len = held.iter().map(Bytes::len).sum();
                self.held = held;
                self.passthrough("a table data object without a COPY block", ops);
            }
            state @ (State::Copy { .. } | State::Passthrough) => self.state = state,
        }
    }

    /// Settings pg_dump wrote after an object's statement, before the next object's header.
    fn trailing_settings(&mut self, held: &[Bytes]) {
        let mut found = Vec::new();
        for line in held.iter().rev() {
            if let Some(key) = setting_key(line) {
                found.push((key, line.clone()));
            } else if !(line.trim_ascii().is_empty() || &line[..] == b"--\n") {
                break;
            }
        }
        for (key, line) in found.into_iter().rev() {
            self.settings.set(key, line);
        }
    }

    /// Not understood: everything held and everything after runs in order on one connection.
    fn passthrough(&mut self, why: &str, ops: &mut Vec<Op>) {
        ops.push(Op::SerialFrom(why.to_owned()));
        let mut held = self.take_held();
        if let State::Copy { command } = &self.state {
            held.insert(0, command.clone());
        }
        if !held.is_empty() {
            ops.push(Op::Serial(held));
        }
        self.state = State::Passthrough;
    }

    fn finish(&mut self, ops: &mut Vec<Op>) {
        if !self.partial.is_empty() {
            // The last line had no newline.
            let line = self.partial.split().freeze();
            match self.state {
                State::Passthrough => ops.push(Op::Serial(vec![line])),
                _ => self.line(line, ops),
            }
        }
        if let State::Copy { .. } = self.state {
            // Cut inside a COPY block: send what came (the input check fails the load anyway).
            self.send_piece(ops);
            self.state = State::AfterCopy;
        }
        self.complete_object(ops);
    }
}

// ------------------------------------------------------------------------------------------
// The connections.

enum Cmd {
    Run { sql: Vec<Bytes>, sync: bool },
    Sync(oneshot::Sender<()>),
}

struct Worker {
    to: mpsc::Sender<Cmd>,
    /// Commands sent and not yet done.
    busy: Arc<AtomicUsize>,
    task: JoinHandle<(Box<dyn SqlSession>, bool)>,
    /// The settings version this connection was given.
    settings: u64,
    /// Nothing was sent to it yet.
    fresh: bool,
}

/// Up to `jobs` psql sessions, each fed by a task of its own.
struct Pool<'a> {
    sink: &'a dyn SqlSink,
    jobs: usize,
    workers: Vec<Worker>,
    /// What was last sent: serial work on the primary, or work on any connection.
    last: Last,
    next: usize,
    stats: ParallelStats,
    warnings: u64,
    /// The part of the dump being run, and since when.
    phase: (Phase, Instant),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Last {
    Nothing,
    Serial,
    Parallel,
}

/// A connection stopped (psql exited): the cause is found when the sessions are finished.
fn gone() -> Error {
    Error::Sink {
        context: "psql stopped reading its input".into(),
        source: Box::new(std::io::Error::from(std::io::ErrorKind::BrokenPipe)),
    }
}

impl<'a> Pool<'a> {
    fn new(sink: &'a dyn SqlSink, jobs: usize) -> Self {
        Self {
            sink,
            jobs,
            workers: Vec::new(),
            last: Last::Nothing,
            next: 0,
            stats: ParallelStats {
                jobs: 1,
                ..ParallelStats::default()
            },
            warnings: 0,
            phase: (Phase::Pre, Instant::now()),
        }
    }

    /// The part of the dump in `self.phase` has finished: its time is counted, `next` begins.
    fn enter(&mut self, next: Phase) {
        let (phase, since) = std::mem::replace(&mut self.phase, (next, Instant::now()));
        let ms = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX);
        let times = &mut self.stats.phases;
        *match phase {
            Phase::Pre => &mut times.pre_data_ms,
            Phase::Data => &mut times.data_ms,
            Phase::Post => &mut times.post_data_ms,
        } += ms;
    }

    async fn start(&mut self) -> Result<()> {
        let mut session = self.sink.start().await?;
        let (to, mut from) = mpsc::channel::<Cmd>(1);
        let busy = Arc::new(AtomicUsize::new(0));
        let done_one = busy.clone();
        let task = tokio::spawn(async move {
            while let Some(cmd) = from.recv().await {
                let ok = match cmd {
                    Cmd::Run { sql, sync } => {
                        let mut ok = true;
                        for piece in sql {
                            if session.write(piece).await.is_err() {
                                ok = false;
                                break;
                            }
                        }
                        ok && (!sync || session.sync().await.is_ok())
                    }
                    Cmd::Sync(done) => {
                        let ok = session.sync().await.is_ok();
                        if ok {
                            let _ = done.send(());
                        }
                        ok
                    }
                };
                done_one.fetch_sub(1, Ordering::AcqRel);
                if !ok {
                    return (session, false);
                }
            }
            (session, true)
        });
        self.workers.push(Worker {
            to,
            busy,
            task,
            settings: 0,
            fresh: true,
        });
        self.stats.jobs = self.workers.len();
        Ok(())
    }

    async fn run(&mut self, op: Op, settings: &Settings) -> Result<()> {
        match op {
            Op::Serial(sql) => {
                if self.last == Last::Parallel {
                    self.barrier().await?;
                }
                if self.workers.is_empty() {
                    self.start().await?;
                    // The first serial text is the dump's lead: it makes its settings itself.
                    self.workers[0].settings = settings.version;
                    self.workers[0].fresh = false;
                }
                self.send(0, sql, false, settings).await?;
                self.last = Last::Serial;
            }
            Op::Parallel { sql, balanced } => {
                self.parallel(sql, balanced, settings).await?;
                if balanced {
                    self.stats.parallel_objects += 1;
                }
            }
            Op::Copy(sql) => {
                self.parallel(sql, false, settings).await?;
                self.stats.copy_pieces += 1;
            }
            Op::Barrier(phase) => {
                self.barrier().await?;
                self.enter(phase);
            }
            Op::SerialFrom(why) => {
                self.barrier().await?;
                tracing::info!("from here on in order on one connection: {why}");
                self.stats.serial_from = Some(why);
                self.last = Last::Serial;
            }
        }
        Ok(())
    }

    async fn parallel(
        &mut self,
        sql: Vec<Bytes>,
        balanced: bool,
        settings: &Settings,
    ) -> Result<()> {
        if self.last == Last::Serial && !self.workers.is_empty() {
            self.sync(0).await?;
        }
        self.last = Last::Parallel;
        // An idle connection, else a new one, else the first with room in its queue.
        let free = (0..self.workers.len())
            .map(|i| (self.next + i) % self.workers.len())
            .find(|&i| self.workers[i].busy.load(Ordering::Acquire) == 0);
        let index = match free {
            Some(i) => i,
            None if self.workers.len() < self.jobs => {
                self.start().await?;
                self.workers.len() - 1
            }
            None => {
                let reserves = self
                    .workers
                    .iter()
                    .map(|w| Box::pin(w.to.reserve()))
                    .collect::<Vec<_>>();
                let (reserved, index, _) = futures::future::select_all(reserves).await;
                drop(reserved.map_err(|_| gone())?);
                index
            }
        };
        self.next = index + 1;
        self.send(index, sql, balanced, settings).await
    }

    async fn send(
        &mut self,
        index: usize,
        mut sql: Vec<Bytes>,
        sync: bool,
        settings: &Settings,
    ) -> Result<()> {
        let worker = &mut self.workers[index];
        if worker.settings != settings.version {
            // `\restrict` once per session, at its start: psql refuses it once restricted.
            let mut with = settings
                .lines
                .iter()
                .filter(|(key, _)| worker.fresh || key != RESTRICT)
                .map(|(_, l)| l.clone())
                .collect::<Vec<_>>();
            with.append(&mut sql);
            sql = with;
            worker.settings = settings.version;
        }
        worker.fresh = false;
        worker.busy.fetch_add(1, Ordering::AcqRel);
        worker
            .to
            .send(Cmd::Run { sql, sync })
            .await
            .map_err(|_| gone())
    }

    async fn sync(&mut self, index: usize) -> Result<()> {
        let (done, wait) = oneshot::channel();
        self.workers[index].busy.fetch_add(1, Ordering::AcqRel);
        self.workers[index]
            .to
            .send(Cmd::Sync(done))
            .await
            .map_err(|_| gone())?;
        wait.await.map_err(|_| gone())
    }

    /// Waits until every connection has run everything sent to it.
    async fn barrier(&mut self) -> Result<()> {
        let mut waits = Vec::with_capacity(self.workers.len());
        for worker in &self.workers {
            let (done, wait) = oneshot::channel();
            worker.busy.fetch_add(1, Ordering::AcqRel);
            worker.to.send(Cmd::Sync(done)).await.map_err(|_| gone())?;
            waits.push(wait);
        }
        for wait in waits {
            wait.await.map_err(|_| gone())?;
        }
        self.last = Last::Nothing;
        Ok(())
    }

    /// Ends every session; returns how the first failed one ended, if one did.
    async fn end_all(&mut self) -> Vec<Ended> {
        let mut ended = Vec::new();
        for worker in self.workers.drain(..) {
            drop(worker.to);
            match worker.task.await {
                Ok((session, _)) => {
                    if let Some(e) = crate::job::end_without_commit(session, self.sink).await {
                        ended.push(e);
                    }
                }
                Err(e) => tracing::warn!("a loader task failed: {e}"),
            }
        }
        ended
    }

    /// After a failure: ends every session; how the first failed psql ended, if one did.
    async fn abort(&mut self) -> Option<Ended> {
        self.end_all().await.into_iter().find(|e| !e.success)
    }

    /// Waits for every connection to finish its work and psql to exit without error.
    async fn finish(&mut self, target: &str, cancel: &CancellationToken) -> Result<ParallelStats> {
        let barrier = tokio::select! {
            biased;
            () = cancel.cancelled() => Err(Error::Cancelled),
            result = self.barrier() => result,
        };
        let ended = self.end_all().await;
        if let Some(failed) = ended.iter().find(|e| !e.success) {
            return Err(psql_error(target, failed));
        }
        barrier?;
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        self.enter(self.phase.0);
        self.warnings = ended.iter().map(|e| e.warnings).sum();
        Ok(self.stats.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A pg_dump-shaped script: settings, a clean statement, two tables, data (with rows that
    /// look like headers and end markers inside), a sequence value, indexes, a constraint, a
    /// foreign key, a comment, an ACL.
    fn dump(rows: usize) -> String {
        let mut s = String::from(
            "--\n-- PostgreSQL database dump\n--\n\n\\restrict abc123\n\nSET statement_timeout = 0;\n\
             SET client_encoding = 'UTF8';\nSELECT pg_catalog.set_config('search_path', '', false);\n\n\
             DROP TABLE IF EXISTS public.a;\n\
             --\n-- Name: f(); Type: FUNCTION; Schema: public; Owner: postgres\n--\n\n\
             CREATE FUNCTION public.f() RETURNS int LANGUAGE sql AS $$\nSET search_path = x;\nSELECT 1\n$$;\n\n\
             SET default_tablespace = '';\n\nSET default_table_access_method = heap;\n\n\
             --\n-- Name: a; Type: TABLE; Schema: public; Owner: postgres\n--\n\n\
             CREATE TABLE public.a (x text);\n\n\
             --\n-- Name: b; Type: TABLE; Schema: public; Owner: postgres\n--\n\n\
             CREATE TABLE public.b (y int);\n\n\
             --\n-- Data for Name: a; Type: TABLE DATA; Schema: public; Owner: postgres\n--\n\n\
             COPY public.a (x) FROM stdin;\n",
        );
        for i in 0..rows {
            match i % 5 {
                0 => s.push_str("--\n"),
                1 => s.push_str("-- Name: x; Type: INDEX; Schema: public; Owner: postgres\n"),
                2 => s.push_str("\\\\.\n"),
                _ => s.push_str(&format!("row {i} with some text\n")),
            }
        }
        s.push_str(
            "\\.\n\n\n\
             --\n-- Data for Name: b; Type: TABLE DATA; Schema: public; Owner: postgres\n--\n\n\
             COPY public.b (y) FROM stdin;\n1\n2\n\\.\n\n\n\
             --\n-- Name: s; Type: SEQUENCE SET; Schema: public; Owner: postgres\n--\n\n\
             SELECT pg_catalog.setval('public.s', 3, true);\n\n\n\
             --\n-- Name: a a_pkey; Type: CONSTRAINT; Schema: public; Owner: postgres\n--\n\n\
             ALTER TABLE ONLY public.a\n    ADD CONSTRAINT a_pkey PRIMARY KEY (x);\n\n\n\
             --\n-- Name: b_y; Type: INDEX; Schema: public; Owner: postgres\n--\n\n\
             CREATE INDEX b_y ON public.b USING btree (y);\n\n\n\
             --\n-- Name: b b_fk; Type: FK CONSTRAINT; Schema: public; Owner: postgres\n--\n\n\
             ALTER TABLE ONLY public.b\n    ADD CONSTRAINT b_fk FOREIGN KEY (y) REFERENCES public.c(z);\n\n\n\
             --\n-- Name: TABLE a; Type: ACL; Schema: public; Owner: postgres\n--\n\n\
             GRANT SELECT ON TABLE public.a TO PUBLIC;\n\n\n\
             --\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict abc123\n\n",
        );
        s
    }

    /// The ops as (kind, text), adjacent serial text joined.
    fn run(input: &[u8], cuts: &[usize], chunk: usize) -> (Vec<(String, String)>, Vec<String>) {
        let mut splitter = Splitter::new(chunk);
        let mut ops = Vec::new();
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
            let cut = cut.clamp(start, input.len());
            if cut > start {
                splitter.push(Bytes::copy_from_slice(&input[start..cut]), &mut ops);
            }
            start = cut;
        }
        splitter.finish(&mut ops);
        let mut out: Vec<(String, String)> = Vec::new();
        for op in ops {
            let (kind, parts) = match op {
                Op::Serial(p) => ("serial", p),
                Op::Parallel {
                    sql,
                    balanced: true,
                } => ("balanced", sql),
                Op::Parallel { sql, .. } => ("parallel", sql),
                Op::Copy(p) => ("copy", p),
                Op::Barrier(_) => ("barrier", Vec::new()),
                Op::SerialFrom(why) => ("serial-from", vec![Bytes::from(why)]),
            };
            let text = String::from_utf8(parts.concat()).unwrap();
            match out.last_mut() {
                Some((k, t)) if k == "serial" && kind == "serial" => t.push_str(&text),
                _ => out.push((kind.to_owned(), text)),
            }
        }
        let settings = splitter
            .settings
            .lines
            .iter()
            .map(|(k, _)| k.clone())
            .collect();
        (out, settings)
    }

    #[test]
    fn objects_go_where_they_may_run() {
        let input = dump(40);
        let (ops, settings) = run(input.as_bytes(), &[], 1024 * 1024);
        let kinds: Vec<&str> = ops.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "serial", // lead, function, tables
                "barrier", "copy", "copy", "parallel", // data
                "barrier", "balanced", "balanced", // the primary key and the index
                "serial",   // the foreign key, the ACL, the end
            ]
        );
        // Rows that look like headers or an end marker stay rows.
        assert_eq!(
            ops[2]
                .1
                .lines()
                .filter(|l| l.starts_with("-- Name:"))
                .count(),
            8
        );
        assert!(ops[2].1.starts_with("COPY public.a (x) FROM stdin;\n--\n"));
        assert!(ops[2].1.ends_with("row 39 with some text\n\\.\n"));
        assert!(ops[8].1.contains("FOREIGN KEY") && ops[8].1.ends_with("\\unrestrict abc123\n\n"));
        // Settings between objects, not the SET inside the function's body.
        assert_eq!(
            settings,
            [
                "\\restrict",
                "statement_timeout",
                "client_encoding",
                "search_path",
                "default_tablespace",
                "default_table_access_method"
            ]
        );
    }

    #[test]
    fn copy_blocks_are_cut_at_row_ends_into_pieces() {
        let input = dump(20_000);
        let (ops, _) = run(input.as_bytes(), &[], 64 * 1024);
        let pieces: Vec<&str> = ops
            .iter()
            .filter(|(k, t)| k == "copy" && t.starts_with("COPY public.a"))
            .map(|(_, t)| t.as_str())
            .collect();
        assert!(pieces.len() > 3, "{}", pieces.len());
        let mut rows = 0;
        for piece in &pieces {
            let body = piece
                .strip_prefix("COPY public.a (x) FROM stdin;\n")
                .unwrap()
                .strip_suffix("\\.\n")
                .unwrap();
            assert!(body.len() <= 64 * 1024 && body.ends_with('\n'));
            rows += body.lines().count();
        }
        assert_eq!(rows, 20_000);
    }

    #[test]
    fn inserts_instead_of_copy_run_in_order_from_there() {
        let input = dump(3).replace(
            "COPY public.b (y) FROM stdin;\n1\n2\n\\.\n",
            "INSERT INTO public.b VALUES (1);\n",
        );
        let (ops, _) = run(input.as_bytes(), &[], 1024 * 1024);
        let kinds: Vec<&str> = ops.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            kinds,
            ["serial", "barrier", "copy", "serial-from", "serial"]
        );
        assert!(ops[3].1.contains("not a COPY block"));
        assert!(ops[4].1.contains("INSERT INTO public.b") && ops[4].1.contains("CREATE INDEX b_y"));
    }

    #[test]
    fn a_script_without_object_headers_is_not_held_whole() {
        let mut input = String::from("--\n-- PostgreSQL database dump\n--\n\nSET x = 1;\n");
        let line = format!("INSERT INTO t VALUES ('{}');\n", "x".repeat(1000));
        while input.len() <= MAX_HELD + 2 * line.len() {
            input.push_str(&line);
        }
        let mut splitter = Splitter::new(1024 * 1024);
        let mut ops = Vec::new();
        splitter.push(Bytes::from(input.clone()), &mut ops);
        assert!(splitter.held.is_empty() && splitter.held_len == 0);
        splitter.finish(&mut ops);
        assert!(matches!(&ops[0], Op::SerialFrom(why) if why.contains("no object headers")));
        let sent: usize = ops
            .iter()
            .map(|op| match op {
                Op::Serial(parts) => parts.iter().map(Bytes::len).sum(),
                _ => 0,
            })
            .sum();
        assert_eq!(sent, input.len());
    }

    #[test]
    fn recognised_shapes() {
        assert!(buildable_aside(
            "INDEX",
            b"CREATE INDEX i ON public.t USING btree (x);\n"
        ));
        assert!(!buildable_aside(
            "INDEX",
            b"CREATE INDEX i ON ONLY public.t USING btree (x);\n"
        ));
        assert!(!buildable_aside(
            "INDEX",
            b"CREATE INDEX i ON public.t (x);\nSELECT 1;\n"
        ));
        assert!(buildable_aside(
            "CONSTRAINT",
            b"ALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_pkey PRIMARY KEY (id);\n"
        ));
        assert!(!buildable_aside(
            "CONSTRAINT",
            b"ALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_x EXCLUDE USING gist (x WITH &&);\n"
        ));
        assert!(!buildable_aside(
            "FK CONSTRAINT",
            b"ALTER TABLE ONLY public.t ADD CONSTRAINT f FOREIGN KEY (x) REFERENCES u(y);\n"
        ));
        assert_eq!(
            setting_key(b"SET lock_timeout = 0;\n").as_deref(),
            Some("lock_timeout")
        );
        assert_eq!(setting_key(b"SET x = 1; DROP TABLE t;\n"), None);
        assert_eq!(setting_key(b"SET search_path TO public;\n"), None);
        assert_eq!(
            header_type(b"-- Data for Name: t; Type: TABLE DATA; Schema: public; Owner: o\n")
                .as_deref(),
            Some("TABLE DATA")
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Where the input's chunks end changes nothing.
        #[test]
        fn chunking_does_not_matter(cuts in proptest::collection::vec(0usize..60_000, 0..40), chunk in 100usize..20_000) {
            let input = dump(2_000);
            let mut cuts = cuts;
            cuts.sort_unstable();
            prop_assert_eq!(run(input.as_bytes(), &cuts, chunk), run(input.as_bytes(), &[], chunk));
        }
    }
}
