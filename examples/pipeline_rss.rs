//! Peak memory of a whole backup of a generated dump: `backup::run` (row counting, compression,
//! SHA-256, bounded multipart upload, integrity record) of a synthetic plain pg_dump of spend-log
//! rows (the rows of `benches/pipeline.rs`), into a store that discards what it is given. It
//! prints its own peak RSS (`VmHWM`), so that `benches/rss.sh` can check that memory does not
//! grow with the dump. Nothing is stored on disk, whatever the size.
//!
//! ```text
//! cargo run --release --example pipeline_rss -- --size 2G --compression gzip \
//!     [--part-delay-ms 100] [--stage backup|encode] [--trace]
//! ```
//!
//! - `--size`: bytes of SQL, `100M`, `2G` (decimal units);
//! - `--part-delay-ms`: how long each part takes to "upload" (default 0: at once);
//! - `--stage encode`: the compression stage alone (row counting, compression, SHA-256), no
//!   upload;
//! - `--trace`: the RSS and thread count every half second, on stderr.
//!
//! Output, one line: `stage=backup codec=gzip:4 raw_bytes=… stored_bytes=… sha256=<first 12>
//! secs=… base_kib=… peak_kib=… max_threads=…`. `base_kib` is the RSS once the generator's
//! 4 MiB pool is built, before the backup starts (it is part of the peak).
#![allow(missing_docs)]

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use litemaas_backup::backup::{self, BackupOptions};
use litemaas_backup::dump::{CompressOptions, Compression, DumpSource, DumpStream, Encoded};
use litemaas_backup::store::{
    self, GetResult, Metadata, MultipartUpload, ObjectMeta, ObjectStore, PendingUpload, UploadPart,
};
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::sync::CancellationToken;

/// Rows are generated once into a pool this large and then repeated: larger than zstd's window
/// at its default level (2 MiB), so that neither codec sees the repetition.
const POOL: usize = 4 * 1024 * 1024;
/// What one read of a pipe returns at most (pg_dump's stdout is a pipe).
const PIPE: usize = 64 * 1024;

const HEADER: &str = "--\n-- PostgreSQL database dump\n--\n\n\
    -- Dumped from database version 15.14\n-- Dumped by pg_dump version 15.14\n\n\
    SET statement_timeout = 0;\nSET lock_timeout = 0;\nSET client_encoding = 'UTF8';\n\
    SELECT pg_catalog.set_config('search_path', '', false);\n\n\
    DROP TABLE IF EXISTS public.\"LiteLLM_SpendLogs\";\n\
    --\n-- Name: LiteLLM_SpendLogs; Type: TABLE; Schema: public; Owner: litellm\n--\n\n\
    CREATE TABLE public.\"LiteLLM_SpendLogs\" (request_id text NOT NULL, call_type text, api_key text, \
    spend double precision, total_tokens integer, prompt_tokens integer, completion_tokens integer, \
    \"startTime\" timestamp(3) without time zone, \"endTime\" timestamp(3) without time zone, \
    model text, metadata jsonb);\n\n\
    COPY public.\"LiteLLM_SpendLogs\" (request_id, call_type, api_key, spend, total_tokens, \
    prompt_tokens, completion_tokens, \"startTime\", \"endTime\", model, metadata) FROM stdin;\n";
const TRAILER: &str = "\\.\n\n\n--\n-- PostgreSQL database dump complete\n--\n\n";

/// Whole COPY rows like LiteLLM's spend logs (the same rows as `benches/pipeline.rs`).
fn rows(len: usize) -> Bytes {
    let models = [
        "granite-3-8b-instruct",
        "llama-scout-17b",
        "mistral-small-24b",
        "qwen2.5-coder-32b",
    ];
    let mut out = String::with_capacity(len + 1024);
    let mut i: u64 = 0;
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    loop {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let model = models[(x % 4) as usize];
        let prompt = x % 4000;
        let completion = (x >> 12) % 1500;
        let row = format!(
            "chatcmpl-{x:016x}{i:08x}\tacompletion\t{:064x}\t{:.8}\t{}\t{prompt}\t{completion}\t2025-12-{:02} {:02}:{:02}:{:02}.{:06}+00\t2025-12-{:02} {:02}:{:02}:{:02}.{:06}+00\t{model}\t{{\"user_api_key_user_id\": \"user-{}\", \"user_api_key_team_id\": null, \"requester_ip_address\": \"10.128.{}.{}\", \"model_group\": \"{model}\", \"cache_hit\": {}, \"usage_object\": {{\"prompt_tokens\": {prompt}, \"completion_tokens\": {completion}}}}}\n",
            x.rotate_left(17),
            (prompt + completion) as f64 * 0.000_002_5,
            prompt + completion,
            1 + i % 28,
            i % 24,
            i % 60,
            (i * 7) % 60,
            x % 1_000_000,
            1 + i % 28,
            i % 24,
            (i + 1) % 60,
            (i * 7) % 60,
            (x >> 20) % 1_000_000,
            x % 500,
            (x >> 8) % 256,
            (x >> 16) % 256,
            x.is_multiple_of(7),
        );
        if out.len() + row.len() > len {
            break;
        }
        out.push_str(&row);
        i += 1;
    }
    Bytes::from(out)
}

/// A plain pg_dump of about `size` bytes: header, one COPY block of pooled rows, the marker.
/// Reads return at most [`PIPE`] bytes, like a pipe.
struct Generated {
    pool: Bytes,
    /// Body bytes still to produce (whole rows).
    left: u64,
    /// What is being copied out now, and how far.
    current: Bytes,
    trailer_sent: bool,
}

impl Generated {
    fn new(pool: Bytes, size: u64) -> Self {
        let fixed = (HEADER.len() + TRAILER.len()) as u64;
        Self {
            pool,
            left: size.saturating_sub(fixed),
            current: Bytes::from_static(HEADER.as_bytes()),
            trailer_sent: false,
        }
    }

    /// The next piece of the body, cut at a row's end; then the trailer; then nothing.
    fn refill(&mut self) {
        let take = usize::try_from(self.left).unwrap_or(usize::MAX);
        let cut = if take >= self.pool.len() {
            self.pool.len()
        } else {
            self.pool[..take]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1)
        };
        if cut > 0 {
            self.current = self.pool.slice(..cut);
            self.left -= cut as u64;
        } else if !self.trailer_sent {
            self.current = Bytes::from_static(TRAILER.as_bytes());
            self.trailer_sent = true;
            self.left = 0;
        }
    }
}

impl AsyncRead for Generated {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.current.is_empty() {
            self.refill();
        }
        let n = self.current.len().min(buf.remaining()).min(PIPE);
        let piece = self.current.split_to(n);
        buf.put_slice(&piece);
        Poll::Ready(Ok(()))
    }
}

#[derive(Debug)]
struct Synthetic {
    pool: Bytes,
    size: u64,
}

#[async_trait]
impl DumpSource for Synthetic {
    fn describe(&self) -> String {
        format!("a generated dump of {} bytes", self.size)
    }
    fn database(&self) -> Option<String> {
        None
    }
    async fn start(&self) -> litemaas_backup::dump::Result<DumpStream> {
        Ok(DumpStream::from_reader(Generated::new(
            self.pool.clone(),
            self.size,
        )))
    }
}

/// A store that counts what it is given and keeps nothing but the sizes.
#[derive(Debug, Default)]
struct Discard {
    objects: std::sync::Mutex<std::collections::BTreeMap<String, (u64, Metadata)>>,
    /// Simulated time to upload one part.
    part_delay: Duration,
}

impl Discard {
    fn not_found(key: &str) -> store::Error {
        store::Error::NotFound {
            store: "discard://".into(),
            key: key.to_owned(),
        }
    }
}

#[derive(Debug)]
struct DiscardUpload {
    store: Arc<Discard>,
    key: String,
    metadata: Metadata,
    bytes: Arc<AtomicU64>,
    delay: Duration,
}

#[async_trait]
impl MultipartUpload for DiscardUpload {
    fn put_part(&mut self, data: Bytes) -> UploadPart {
        let bytes = self.bytes.clone();
        let delay = self.delay;
        Box::pin(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
            Ok(())
        })
    }
    async fn complete(&mut self) -> store::Result<()> {
        let size = self.bytes.load(Ordering::Relaxed);
        self.store
            .objects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(self.key.clone(), (size, self.metadata.clone()));
        Ok(())
    }
    async fn abort(&mut self) -> store::Result<()> {
        Ok(())
    }
}

/// The store handed to `backup::run`: an `Arc` so that uploads can reach it.
#[derive(Debug, Clone)]
struct DiscardStore(Arc<Discard>);

#[async_trait]
impl ObjectStore for DiscardStore {
    fn describe(&self) -> String {
        "discard://".into()
    }
    async fn check(&self) -> store::Result<()> {
        Ok(())
    }
    async fn put(&self, key: &str, data: Bytes) -> store::Result<()> {
        self.0
            .objects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_owned(), (data.len() as u64, Metadata::new()));
        Ok(())
    }
    async fn put_multipart_with(
        &self,
        key: &str,
        metadata: &Metadata,
    ) -> store::Result<Box<dyn MultipartUpload>> {
        Ok(Box::new(DiscardUpload {
            store: self.0.clone(),
            key: key.to_owned(),
            metadata: metadata.clone(),
            bytes: Arc::new(AtomicU64::new(0)),
            delay: self.0.part_delay,
        }))
    }
    async fn get(&self, key: &str) -> store::Result<GetResult> {
        Err(Discard::not_found(key))
    }
    async fn head(&self, key: &str) -> store::Result<ObjectMeta> {
        let objects = self.0.objects.lock().unwrap_or_else(|p| p.into_inner());
        let (size, metadata) = objects.get(key).ok_or_else(|| Discard::not_found(key))?;
        Ok(ObjectMeta {
            key: key.to_owned(),
            size: *size,
            last_modified: jiff::Timestamp::UNIX_EPOCH,
            metadata: metadata.clone(),
        })
    }
    async fn list(&self, _prefix: &str) -> store::Result<Vec<ObjectMeta>> {
        Ok(Vec::new())
    }
    async fn delete(&self, key: &str) -> store::Result<()> {
        self.0
            .objects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
        Ok(())
    }
    async fn list_pending_uploads(&self, _prefix: &str) -> store::Result<Vec<PendingUpload>> {
        Ok(Vec::new())
    }
    async fn abort_pending_upload(&self, _upload: &PendingUpload) -> store::Result<()> {
        Ok(())
    }
}

/// A field of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`) or as a count (`Threads`).
fn status(field: &str) -> Result<u64> {
    let text = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    text.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {field} in /proc/self/status"))
}

/// `100M`, `2G`, `2000000000`: decimal units, like the sizes in the issue.
fn parse_size(s: &str) -> Result<u64> {
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, ""),
    };
    let n: u64 = digits.parse().with_context(|| format!("bad size {s:?}"))?;
    let factor = match unit.to_ascii_uppercase().as_str() {
        "" => 1,
        "K" | "KB" => 1_000,
        "M" | "MB" => 1_000_000,
        "G" | "GB" => 1_000_000_000,
        _ => bail!("bad size unit in {s:?}: use K, M or G"),
    };
    Ok(n * factor)
}

fn main() -> Result<()> {
    let mut size = 100_000_000;
    let mut compression = Compression::default();
    let mut trace = false;
    let mut part_delay = Duration::ZERO;
    let mut encode_only = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--size" => size = parse_size(&value()?)?,
            "--compression" => compression = value()?.parse().map_err(anyhow::Error::msg)?,
            "--part-delay-ms" => part_delay = Duration::from_millis(value()?.parse()?),
            "--trace" => trace = true,
            "--stage" => {
                encode_only = match value()?.as_str() {
                    "backup" => false,
                    "encode" => true,
                    other => bail!("--stage {other:?}: use backup or encode"),
                }
            }
            _ => bail!(
                "usage: pipeline_rss [--size 100M] [--compression gzip|zstd|none] [--stage backup|encode] [--part-delay-ms N] [--trace]"
            ),
        }
    }

    let pool = rows(POOL);
    // The same runtime as the binaries (crates/cli: `Runtime::new()`, one worker per core).
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    let base = status("VmRSS")?;

    let done = Arc::new(AtomicBool::new(false));
    let max_threads = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (done, max_threads) = (done.clone(), max_threads.clone());
        let started = Instant::now();
        std::thread::spawn(move || {
            let mut ticks = 0u64;
            while !done.load(Ordering::Relaxed) {
                let threads = status("Threads").unwrap_or(0) as usize;
                max_threads.fetch_max(threads, Ordering::Relaxed);
                if trace && ticks.is_multiple_of(5) {
                    eprintln!(
                        "t={:.1}s rss_kib={} threads={threads}",
                        started.elapsed().as_secs_f64(),
                        status("VmRSS").unwrap_or(0),
                    );
                }
                ticks += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    let mut options = BackupOptions::new(jiff::Timestamp::UNIX_EPOCH);
    options.compression = compression;
    let source = Synthetic { pool, size };
    let store = DiscardStore(Arc::new(Discard {
        part_delay,
        ..Discard::default()
    }));
    let started = Instant::now();
    if encode_only {
        // The compression stage alone: row counting, compression and SHA-256, no upload.
        let (raw, stored) = runtime.block_on(async {
            let dump = source.start().await?;
            let (reader, _rows) = litemaas_backup::restore::plain::PlainTap::new(dump.reader);
            let mut encoded =
                Encoded::new(Box::pin(reader), compression, CompressOptions::default());
            while let Some(chunk) = encoded.next().await {
                std::hint::black_box(chunk?);
            }
            let summary = encoded.summary().context("the stream did not end")?;
            anyhow::Ok((summary.raw_bytes, summary.stored_bytes))
        })?;
        let secs = started.elapsed().as_secs_f64();
        done.store(true, Ordering::Relaxed);
        let _ = sampler.join();
        println!(
            "stage=encode codec={compression} raw_bytes={raw} stored_bytes={stored} secs={secs:.2} base_kib={base} peak_kib={} max_threads={}",
            status("VmHWM")?,
            max_threads.load(Ordering::Relaxed),
        );
        return Ok(());
    }
    let report = runtime
        .block_on(backup::run(
            &source,
            &store,
            &options,
            &CancellationToken::new(),
        ))
        .context("the backup failed")?;
    let secs = started.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    println!(
        "stage=backup codec={compression} raw_bytes={} stored_bytes={} sha256={} secs={secs:.2} base_kib={base} peak_kib={} max_threads={}",
        report.raw_bytes,
        report.bytes,
        &report.sha256[..12],
        status("VmHWM")?,
        max_threads.load(Ordering::Relaxed),
    );
    Ok(())
}
