//! pg_dump's plain-SQL format, read as a stream: the header, the clean (DROP) section, the
//! `COPY … FROM stdin;` blocks and the completion marker.
//!
//! [`PlainFilter`] passes the SQL through unchanged (zero-copy) except for the clean section,
//! whose statements are wrapped so that an error there cannot stop the restore (see
//! [`PlainFilter`]), and it learns on the way what a restore must know before it commits: that
//! the input is a pg_dump plain dump at all, how many rows each table's COPY block carried,
//! whether the stream ended inside a COPY block, and whether pg_dump's
//! `-- PostgreSQL database dump complete` marker closes it. Memory is bounded whatever the
//! dump: only the current line's first bytes are kept, except in the short clean section.

use std::collections::BTreeMap;

use bytes::Bytes;

/// The first lines of every plain pg_dump (`--`, `-- PostgreSQL database dump`).
const HEADER: &[u8] = b"--\n-- PostgreSQL database dump\n";
/// The line pg_dump writes last.
const MARKER: &[u8] = b"-- PostgreSQL database dump complete";
/// How much of a body line is kept to classify it (a COPY header with many columns is long).
const KEEP: usize = 256 * 1024;
/// A clean-section statement longer than this is passed through unwrapped.
const CLEAN_LINE_MAX: usize = 1024 * 1024;
/// Dollar-quote tags of the wrapper.
const OUTER_TAG: &str = "$litemaas_clean$";
const INNER_TAG: &str = "$litemaas_stmt$";
/// What the wrapper prefixes to the warning it raises, so that it can be counted.
pub const CLEAN_WARNING: &str = "litemaas-restore: ignored in the clean section";

/// Why the SQL cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The input does not begin like a pg_dump plain dump.
    #[error(
        "not a plain pg_dump dump: it does not begin with \"-- PostgreSQL database dump\" (starts with {start:?})"
    )]
    NotADump {
        /// Its first bytes, as text (at most 40 characters).
        start: String,
    },
    /// The dump is cut short.
    #[error("the dump is incomplete: {0}")]
    Incomplete(String),
}

/// Where the filter is in the dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the header was checked.
    Start,
    /// The `SET` lines after the header.
    Header,
    /// pg_dump's DROP statements (only with `--clean`).
    Clean,
    /// Everything after: object definitions, post-data.
    Body,
    /// Inside a `COPY … FROM stdin;` block, until `\.`.
    Copy,
}

/// What the filter learnt from a whole dump.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PlainSummary {
    /// Bytes of SQL read.
    pub sql_bytes: u64,
    /// Rows in each table's COPY block, by the name pg_dump wrote (`public.users`).
    pub tables: BTreeMap<String, u64>,
    /// Statements of the clean section that were wrapped.
    pub clean_statements: u64,
    /// `-- Dumped by pg_dump version …`.
    pub pg_dump_version: Option<String>,
    /// `-- Dumped from database version …`.
    pub server_version: Option<String>,
}

/// Streams pg_dump plain SQL through, checking it and making its clean section harmless.
///
/// The clean section of a `pg_dump --clean --if-exists` dump drops every object before it is
/// created again. Some of those drops fail on a live database although nothing is wrong: on
/// PostgreSQL 15, `ALTER TABLE … DROP CONSTRAINT IF EXISTS …_pkey` of a partition fails with
/// `cannot drop inherited constraint`, and the `DROP TABLE` that follows removes it anyway.
/// Under `ON_ERROR_STOP` such an error would end the restore. So each clean-section statement
/// is run inside a PL/pgSQL block that turns its error into a warning (a subtransaction, so the
/// surrounding transaction goes on); every statement after the clean section keeps
/// `ON_ERROR_STOP`. That is safe: an object whose drop failed makes the `CREATE` that follows
/// fail, which stops and rolls back the restore.
///
/// ```
/// use bytes::Bytes;
/// use litemaas_restore::plain::PlainFilter;
///
/// let dump = "--\n-- PostgreSQL database dump\n--\n\nSET lock_timeout = 0;\n\n\
///             DROP TABLE IF EXISTS public.t;\n--\n-- Name: t; Type: TABLE\n--\n\n\
///             CREATE TABLE public.t (x int);\nCOPY public.t (x) FROM stdin;\n1\n2\n\\.\n\n\
///             --\n-- PostgreSQL database dump complete\n--\n\n";
/// let mut filter = PlainFilter::new();
/// let mut out = Vec::new();
/// filter.push(Bytes::from(dump), &mut out).unwrap();
/// let summary = filter.finish(&mut out).unwrap();
/// assert_eq!(summary.tables["public.t"], 2);
/// assert_eq!(summary.clean_statements, 1);
/// let sql: Vec<u8> = out.concat();
/// assert!(String::from_utf8(sql).unwrap().contains("DO $litemaas_clean$"));
/// ```
#[derive(Debug)]
pub struct PlainFilter {
    state: State,
    /// The current line so far: all of it while held (Start, Header, Clean), else its head.
    line: Vec<u8>,
    /// Length of the current line (body states only; held lines use `line.len()`).
    line_len: u64,
    /// Whether the current line's bytes are held back (not yet emitted).
    holding: bool,
    copy_table: Option<String>,
    copy_rows: u64,
    summary: PlainSummary,
    /// The completion marker was seen, followed only by trailer lines.
    complete: bool,
}

impl Default for PlainFilter {
    fn default() -> Self {
        Self::new()
    }
}

impl PlainFilter {
    /// A filter at the start of a dump.
    pub fn new() -> Self {
        Self {
            state: State::Start,
            line: Vec::new(),
            line_len: 0,
            holding: true,
            copy_table: None,
            copy_rows: 0,
            summary: PlainSummary::default(),
            complete: false,
        }
    }

    /// Bytes of SQL pushed so far.
    pub fn sql_bytes(&self) -> u64 {
        self.summary.sql_bytes
    }

    /// Feeds the next chunk; what is to be sent on is appended to `out`.
    ///
    /// # Errors
    /// [`FormatError::NotADump`] as soon as the first bytes show the input is no pg_dump dump;
    /// nothing was appended to `out` then.
    pub fn push(&mut self, chunk: Bytes, out: &mut Vec<Bytes>) -> Result<(), FormatError> {
        self.summary.sql_bytes += chunk.len() as u64;
        let mut start = 0;
        while start < chunk.len() {
            let newline = memchr::memchr(b'\n', &chunk[start..]).map(|i| start + i);
            let end = newline.map_or(chunk.len(), |i| i + 1);
            let piece = chunk.slice(start..end);
            if self.holding {
                self.line.extend_from_slice(&piece);
                if self.state == State::Start
                    && !HEADER.starts_with(&self.line[..self.line.len().min(HEADER.len())])
                {
                    return Err(self.not_a_dump());
                }
                if self.line.len() > CLEAN_LINE_MAX && newline.is_none() {
                    // Too long for a clean statement: send it on as it is.
                    out.push(Bytes::from(std::mem::take(&mut self.line)));
                    self.holding = false;
                    self.line_len = CLEAN_LINE_MAX as u64;
                    if self.state != State::Start {
                        self.state = State::Body;
                    }
                }
            } else {
                self.line_len += piece.len() as u64;
                if self.line.len() < KEEP {
                    let take = (KEEP - self.line.len()).min(piece.len());
                    self.line.extend_from_slice(&piece[..take]);
                }
                out.push(piece);
            }
            if newline.is_some() {
                self.end_of_line(out)?;
            }
            start = end;
        }
        Ok(())
    }

    fn not_a_dump(&self) -> FormatError {
        let text = String::from_utf8_lossy(&self.line);
        FormatError::NotADump {
            start: text.chars().take(40).collect(),
        }
    }

    /// A whole line was read (`self.line` holds it, or its head).
    fn end_of_line(&mut self, out: &mut Vec<Bytes>) -> Result<(), FormatError> {
        let line = std::mem::take(&mut self.line);
        let text = trim_newline(&line);
        let held = self.holding;
        let whole = held || self.line_len as usize == line.len();
        self.line_len = 0;
        match self.state {
            State::Start => {
                // Held until the two header lines are known.
                self.line = line;
                if self.line.len() >= HEADER.len() {
                    if !self.line.starts_with(HEADER) {
                        return Err(self.not_a_dump());
                    }
                    out.push(Bytes::from(std::mem::take(&mut self.line)));
                    self.state = State::Header;
                }
                self.holding = true;
                return Ok(());
            }
            State::Header | State::Clean => {
                if self.header_line(text) && self.state == State::Header {
                    self.note_version(text);
                    out.push(Bytes::from(line));
                } else if is_clean_statement(text) && whole {
                    self.state = State::Clean;
                    match wrap_clean(text) {
                        Some(wrapped) => {
                            self.summary.clean_statements += 1;
                            out.push(Bytes::from(wrapped));
                        }
                        None => out.push(Bytes::from(line)),
                    }
                } else if text.is_empty() {
                    out.push(Bytes::from(line));
                } else {
                    if held {
                        out.push(Bytes::from(line.clone()));
                    }
                    self.state = State::Body;
                    self.body_line(text, whole);
                }
            }
            State::Body | State::Copy => self.body_line(text, whole),
        }
        self.holding = matches!(self.state, State::Header | State::Clean);
        Ok(())
    }

    /// Lines of the header: blank, pg_dump's own comments (not a TOC entry's `-- Name: …`),
    /// `\restrict`, `SET …;`, `SELECT pg_catalog.set_config(…);`.
    fn header_line(&self, text: &[u8]) -> bool {
        text.is_empty()
            || text == b"--"
            || text.starts_with(b"-- Dumped ")
            || text.starts_with(b"-- Started on ")
            || text.starts_with(b"\\restrict ")
            || (text.starts_with(b"SET ") && text.ends_with(b";"))
            || (text.starts_with(b"SELECT pg_catalog.set_config(") && text.ends_with(b";"))
    }

    fn note_version(&mut self, text: &[u8]) {
        let text = String::from_utf8_lossy(text);
        if let Some(v) = text.strip_prefix("-- Dumped by pg_dump version ") {
            self.summary.pg_dump_version = Some(v.trim().to_owned());
        } else if let Some(v) = text.strip_prefix("-- Dumped from database version ") {
            self.summary.server_version = Some(v.trim().to_owned());
        }
    }

    fn body_line(&mut self, text: &[u8], whole: bool) {
        if self.state == State::Copy {
            if text == b"\\." && whole {
                let table = self.copy_table.take().unwrap_or_default();
                *self.summary.tables.entry(table).or_default() += self.copy_rows;
                self.copy_rows = 0;
                self.state = State::Body;
            } else {
                self.copy_rows += 1;
            }
            return;
        }
        if text.starts_with(b"COPY ") && text.ends_with(b" FROM stdin;") && whole {
            let name = &text[5..text.len() - " FROM stdin;".len()];
            let name = match memchr::memmem::find(name, b" (") {
                Some(i) => &name[..i],
                None => name,
            };
            self.copy_table = Some(String::from_utf8_lossy(name).into_owned());
            self.copy_rows = 0;
            self.state = State::Copy;
            self.complete = false;
            return;
        }
        if text == MARKER {
            self.complete = true;
        } else if !(text.is_empty() || text == b"--" || text.starts_with(b"\\unrestrict ")) {
            self.complete = false;
        }
    }

    /// Ends the stream: flushes a last line without newline and says whether the dump is whole.
    ///
    /// # Errors
    /// [`FormatError::Incomplete`] when the dump ended inside a COPY block or without pg_dump's
    /// completion marker; [`FormatError::NotADump`] when it was too short to hold a header.
    pub fn finish(&mut self, out: &mut Vec<Bytes>) -> Result<PlainSummary, FormatError> {
        let unterminated = !self.line.is_empty() || self.line_len > 0;
        if self.state == State::Start {
            return Err(self.not_a_dump());
        }
        if unterminated {
            if self.holding {
                out.push(Bytes::from(std::mem::take(&mut self.line)));
            }
            // A last line without its newline: pg_dump always ends lines, so this was cut.
            if self.state == State::Copy {
                return Err(self.ended_in_copy());
            }
            return Err(FormatError::Incomplete(
                "it ends in the middle of a line".into(),
            ));
        }
        if self.state == State::Copy {
            return Err(self.ended_in_copy());
        }
        if !self.complete {
            return Err(FormatError::Incomplete(
                "it does not end with pg_dump's \"-- PostgreSQL database dump complete\" marker"
                    .into(),
            ));
        }
        Ok(self.summary.clone())
    }

    fn ended_in_copy(&self) -> FormatError {
        FormatError::Incomplete(format!(
            "it ends inside the COPY data of table {} (after {} row(s))",
            self.copy_table.as_deref().unwrap_or("?"),
            self.copy_rows
        ))
    }
}

/// A reader that passes bytes through unchanged while a [`PlainFilter`] reads them: for
/// counting the rows of each table while a dump is taken. [`TapResult::summary`] says what it
/// learnt once the reader ended (`None` if the bytes were no whole pg_dump dump).
#[derive(Debug)]
pub struct PlainTap<R> {
    inner: R,
    state: std::sync::Arc<std::sync::Mutex<TapState>>,
}

#[derive(Debug, Default)]
struct TapState {
    filter: Option<PlainFilter>,
    summary: Option<PlainSummary>,
}

/// Where a [`PlainTap`]'s result is found.
#[derive(Debug, Clone)]
pub struct TapResult(std::sync::Arc<std::sync::Mutex<TapState>>);

impl TapResult {
    /// What the tap learnt, once its reader ended with a whole dump.
    pub fn summary(&self) -> Option<PlainSummary> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .summary
            .clone()
    }
}

impl<R> PlainTap<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> (Self, TapResult) {
        let state = std::sync::Arc::new(std::sync::Mutex::new(TapState {
            filter: Some(PlainFilter::new()),
            summary: None,
        }));
        (
            Self {
                inner,
                state: state.clone(),
            },
            TapResult(state),
        )
    }
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for PlainTap<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(())) = result {
            let new = &buf.filled()[before..];
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let mut out = Vec::new();
            if new.is_empty() {
                if let Some(mut filter) = state.filter.take() {
                    state.summary = filter.finish(&mut out).ok();
                }
            } else if let Some(filter) = state.filter.as_mut()
                && filter.push(Bytes::copy_from_slice(new), &mut out).is_err()
            {
                // Not a pg_dump dump: nothing to count.
                state.filter = None;
            }
        }
        result
    }
}

fn trim_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The statements pg_dump writes in the clean section, one per line.
fn is_clean_statement(text: &[u8]) -> bool {
    (text.starts_with(b"DROP ")
        || text.starts_with(b"ALTER ")
        || text.starts_with(b"SELECT pg_catalog.lo_unlink("))
        && text.ends_with(b";")
}

/// `DO $litemaas_clean$ BEGIN EXECUTE $litemaas_stmt$<statement>$litemaas_stmt$; EXCEPTION …`:
/// the statement's error becomes a warning. `None` when the statement holds a tag (then it is
/// sent as it is, and an error in it stops the restore).
fn wrap_clean(text: &[u8]) -> Option<Vec<u8>> {
    let statement = std::str::from_utf8(text).ok()?;
    let statement = statement.strip_suffix(';').unwrap_or(statement);
    if statement.contains(OUTER_TAG) || statement.contains(INNER_TAG) {
        return None;
    }
    Some(
        format!(
            "DO {OUTER_TAG} BEGIN EXECUTE {INNER_TAG}{statement}{INNER_TAG}; EXCEPTION WHEN OTHERS THEN RAISE WARNING '{CLEAN_WARNING}: %', SQLERRM; END {OUTER_TAG};\n"
        )
        .into_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "--\n-- PostgreSQL database dump\n--\n\n\\restrict abc\n\n\
        -- Dumped from database version 15.18 (Debian)\n-- Dumped by pg_dump version 15.18\n\n\
        SET statement_timeout = 0;\nSELECT pg_catalog.set_config('search_path', '', false);\n\n\
        ALTER TABLE IF EXISTS ONLY public.p_2025 DROP CONSTRAINT IF EXISTS p_2025_pkey;\n\
        DROP TABLE IF EXISTS public.p_2025;\n\
        --\n-- Name: p; Type: TABLE; Schema: public; Owner: postgres\n--\n\n\
        CREATE TABLE public.p (x int);\n\
        ALTER TABLE public.p OWNER TO postgres;\n\n\
        COPY public.p_2025 (x, y) FROM stdin;\n1\ta\n2\t\\N\n\\.\n\n\
        COPY public.empty (x) FROM stdin;\n\\.\n\n\
        --\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict abc\n\n";

    fn run(input: &[u8], chunk: usize) -> (Result<PlainSummary, FormatError>, Vec<u8>) {
        let mut filter = PlainFilter::new();
        let mut out = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            if let Err(e) = filter.push(Bytes::copy_from_slice(piece), &mut out) {
                return (Err(e), out.concat());
            }
        }
        let result = filter.finish(&mut out);
        (result, out.concat())
    }

    #[test]
    fn a_whole_dump_is_read_the_same_in_any_chunking() {
        let (first, first_out) = run(DUMP.as_bytes(), DUMP.len());
        let summary = first.unwrap();
        assert_eq!(summary.tables.get("public.p_2025"), Some(&2));
        assert_eq!(summary.tables.get("public.empty"), Some(&0));
        assert_eq!(summary.clean_statements, 2);
        assert_eq!(summary.pg_dump_version.as_deref(), Some("15.18"));
        assert_eq!(summary.server_version.as_deref(), Some("15.18 (Debian)"));
        let text = String::from_utf8(first_out.clone()).unwrap();
        // Only the clean section is rewritten; the owner change after it is not.
        assert!(
            text.contains(
                "EXECUTE $litemaas_stmt$DROP TABLE IF EXISTS public.p_2025$litemaas_stmt$;"
            )
        );
        assert!(text.contains("\nALTER TABLE public.p OWNER TO postgres;\n"));
        assert_eq!(
            text.lines().count(),
            DUMP.lines().count(),
            "line numbers are kept"
        );
        for chunk in [1, 2, 3, 7, 64, 1000] {
            let (result, out) = run(DUMP.as_bytes(), chunk);
            assert_eq!(result.as_ref(), Ok(&summary), "chunk {chunk}");
            assert_eq!(out, first_out, "chunk {chunk}");
        }
    }

    #[test]
    fn a_dump_cut_anywhere_is_refused() {
        let bytes = DUMP.as_bytes();
        let marker_end = DUMP.find("dump complete\n").unwrap() + "dump complete".len();
        for cut in 0..marker_end {
            let (result, _) = run(&bytes[..cut], 5);
            assert!(result.is_err(), "cut at {cut} accepted");
        }
        let inside_copy = DUMP.find("2\t\\N").unwrap();
        let (result, _) = run(&bytes[..inside_copy], 5);
        assert_eq!(
            result,
            Err(FormatError::Incomplete(
                "it ends inside the COPY data of table public.p_2025 (after 1 row(s))".into()
            ))
        );
    }

    #[test]
    fn the_marker_inside_copy_data_does_not_count() {
        let dump = "--\n-- PostgreSQL database dump\n--\n\nCOPY public.t (x) FROM stdin;\n-- PostgreSQL database dump complete\n";
        let (result, _) = run(dump.as_bytes(), 3);
        assert!(
            matches!(result, Err(FormatError::Incomplete(_))),
            "{result:?}"
        );
    }

    #[test]
    fn anything_else_is_refused_before_a_byte_is_sent() {
        for input in [
            &b"\x1f\x8b\x08\x00garbage"[..],
            b"SELECT 1;\n",
            b"-- a comment\n",
            b"--\n-- Other dump\n",
        ] {
            let (result, out) = run(input, 4);
            assert!(
                matches!(result, Err(FormatError::NotADump { .. })),
                "{input:?}: {result:?}"
            );
            assert!(out.is_empty(), "{input:?}");
        }
    }

    #[test]
    fn a_statement_holding_a_tag_is_not_wrapped() {
        assert!(wrap_clean(b"DROP TABLE \"$litemaas_stmt$\";").is_none());
        let wrapped =
            String::from_utf8(wrap_clean(b"DROP VIEW IF EXISTS public.v;").unwrap()).unwrap();
        assert!(wrapped.starts_with("DO $litemaas_clean$ BEGIN EXECUTE $litemaas_stmt$DROP VIEW IF EXISTS public.v$litemaas_stmt$;"));
        assert!(wrapped.ends_with("END $litemaas_clean$;\n"));
    }

    proptest::proptest! {
        #[test]
        fn chunking_never_changes_the_output(cuts in proptest::collection::vec(1usize..200, 1..40)) {
            let bytes = DUMP.as_bytes();
            let (expected, expected_out) = run(bytes, bytes.len());
            let mut filter = PlainFilter::new();
            let mut out = Vec::new();
            let mut at = 0;
            for cut in cuts.iter().cycle() {
                if at >= bytes.len() { break; }
                let end = (at + cut).min(bytes.len());
                filter.push(Bytes::copy_from_slice(&bytes[at..end]), &mut out).unwrap();
                at = end;
            }
            let result = filter.finish(&mut out);
            proptest::prop_assert_eq!(result, expected);
            proptest::prop_assert_eq!(out.concat(), expected_out);
        }
    }
}
