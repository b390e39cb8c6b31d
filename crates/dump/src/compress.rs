//! Compression codecs. Gzip is produced by compressing blocks (256 KiB by default) on several
//! cores, in one of two ways ([`GzipEngine`]):
//!
//! - **libdeflate** (the default): each block is compressed whole, in one call, into a gzip
//!   member of its own, and the members follow each other as `cat a.gz b.gz` would join them.
//!   `gunzip`, `zcat`, Python's `gzip` and `litemaas-restore` read such a multi-member file as
//!   one stream; each member carries its own CRC-32 and length. No block sees the previous
//!   one's window, which costs under 1 % of size at 256 KiB (benches/pipeline.rs).
//! - **zlib-rs, one member** (the engine before issue 13): each block is raw deflate primed
//!   with the previous block's last 32 KiB as its dictionary and ended with a sync flush, and
//!   the blocks are joined into **one standard gzip member** (as `pigz` does), for readers that
//!   stop after the first member.
//!
//! The default level ([`Compression::DEFAULT_GZIP_LEVEL`]) and block size were chosen from
//! benches/pipeline.rs: the fastest setting whose output stays within 3 % of `gzip -6`.
//!
//! The compression itself never runs on the async runtime's threads: deflate runs on threads
//! of its own (one per [`CompressOptions::threads`], each given one block at a time), zstd on
//! one thread; the async side only reads the source and hands `Bytes` over.
//!
//! Memory does not grow with the dump. Every large buffer is either reused for the whole
//! stream (the input blocks come from a small pool, each compression thread keeps its output
//! buffer) or allocated and freed again and again on one thread only (deflate's state, the
//! exact-size copy of each compressed block); libdeflate's compressor is made once per thread
//! and reused. Allocating them afresh for every block on any thread of a pool, as a first
//! version did, let glibc's malloc — whose threshold for giving
//! large blocks back to the system rises as soon as one is freed — keep more and more freed
//! memory in its per-thread arenas: peak RSS grew with the dump's size.

use std::fmt;
use std::future::Future;
use std::io;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Poll, ready};

use async_compression::codecs::{EncodeV2, ZstdEncoder};
use async_compression::core::util::{PartialBuffer, WriteBuffer};
use bytes::{Bytes, BytesMut};
use flate2::{Compress, FlushCompress, Status};
use futures::StreamExt;
use futures::stream::{BoxStream, FuturesOrdered};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::io::ReaderStream;

/// How a dump is compressed before it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "codec", rename_all = "lowercase")]
pub enum Compression {
    /// Gzip (`.gz`), readable by plain `gunzip`. Level 1–9 of the [`GzipEngine`] (default
    /// [`Compression::DEFAULT_GZIP_LEVEL`]).
    Gzip {
        /// 1 (fastest) to 9 (smallest).
        level: u32,
    },
    /// Zstandard (`.zst`). Level 1–19 (default 3).
    Zstd {
        /// 1 (fastest) to 19.
        level: i32,
    },
    /// Stored as is (`.sql`).
    None,
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Gzip {
            level: Self::DEFAULT_GZIP_LEVEL,
        }
    }
}

impl Compression {
    /// The default gzip level, 4: libdeflate's fastest level whose output stays within 3 % of
    /// `gzip -6`'s size (measured 1.016× on benches/pipeline.rs's spend-log text at 256 KiB
    /// blocks and 0.99× on benches/compare.sh's dump; level 3 was 1.07×), at about 1.6× the
    /// speed of zlib-rs level 6, the default before issue 13. Levels are the engine's own:
    /// libdeflate's level 6 is smaller than `gzip -6`.
    pub const DEFAULT_GZIP_LEVEL: u32 = 4;

    /// The file-name suffix after `.sql`: `.gz`, `.zst` or nothing.
    pub fn extension(&self) -> &'static str {
        match self {
            Compression::Gzip { .. } => ".gz",
            Compression::Zstd { .. } => ".zst",
            Compression::None => "",
        }
    }

    /// The codec's name: `gzip`, `zstd` or `none`.
    pub fn name(&self) -> &'static str {
        match self {
            Compression::Gzip { .. } => "gzip",
            Compression::Zstd { .. } => "zstd",
            Compression::None => "none",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::Gzip { level } => write!(f, "gzip:{level}"),
            Compression::Zstd { level } => write!(f, "zstd:{level}"),
            Compression::None => f.write_str("none"),
        }
    }
}

/// Parses `gzip`, `gzip:9`, `zstd`, `zstd:19` or `none`.
impl FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, level) = match s.split_once(':') {
            Some((n, l)) => (n, Some(l)),
            None => (s, None),
        };
        let bad_level = |range: &str| {
            format!(
                "compression level {:?} is not in {range}",
                level.unwrap_or("")
            )
        };
        match name.to_ascii_lowercase().as_str() {
            "gzip" | "gz" => {
                let level = level.map_or(Ok(Self::DEFAULT_GZIP_LEVEL), |l| {
                    l.parse::<u32>().map_err(|_| bad_level("1..=9"))
                })?;
                if !(1..=9).contains(&level) {
                    return Err(bad_level("1..=9"));
                }
                Ok(Compression::Gzip { level })
            }
            "zstd" | "zst" => {
                let level =
                    level.map_or(Ok(3), |l| l.parse::<i32>().map_err(|_| bad_level("1..=19")))?;
                if !(1..=19).contains(&level) {
                    return Err(bad_level("1..=19"));
                }
                Ok(Compression::Zstd { level })
            }
            "none" if level.is_none() => Ok(Compression::None),
            _ => Err(format!(
                "unknown compression {s:?}: use gzip[:1-9], zstd[:1-19] or none"
            )),
        }
    }
}

/// Tuning of the compression stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressOptions {
    /// Blocks compressed at once for gzip (default: the number of cores).
    pub threads: usize,
    /// Uncompressed bytes per gzip block (default 256 KiB; at least 32 KiB).
    pub block_size: usize,
    /// How gzip blocks are compressed and joined (default [`GzipEngine::Libdeflate`]).
    pub gzip_engine: GzipEngine,
}

impl Default for CompressOptions {
    fn default() -> Self {
        Self {
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            block_size: 256 * 1024,
            gzip_engine: GzipEngine::default(),
        }
    }
}

/// How the gzip codec compresses its blocks and joins them. Both outputs are read by `gunzip`,
/// `zcat`, Python's `gzip` and `litemaas-restore`; they differ in speed and in the number of
/// gzip members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GzipEngine {
    /// libdeflate compresses each block whole into a gzip member of its own: a multi-member
    /// file, as `cat a.gz b.gz` makes. Faster per byte than zlib-rs for the same size (its
    /// level 4 is as small as zlib-rs level 4 and about 20 % faster), although it cannot prime
    /// a block with the previous one's window (benches/pipeline.rs).
    #[default]
    Libdeflate,
    /// zlib-rs deflate, each block primed with the previous block's last 32 KiB and ended by
    /// a sync flush, joined into **one** gzip member (as `pigz` does), for readers that stop
    /// after the first member (e.g. flate2's `GzDecoder`, or Go's `gzip.Reader` with
    /// `Multistream(false)`).
    ZlibRsSingleMember,
}

/// Uncompressed bytes per chunk for zstd and none.
const CHUNK: usize = 256 * 1024;

/// Compresses `reader` as a stream of chunks. Memory is bounded whatever the length: for gzip
/// about `threads + 2` input blocks and as many compressed ones, for zstd and none a few
/// chunks of 256 KiB. Gzip and zstd start a task on the current Tokio runtime (call this
/// inside one) and threads of their own, which end with the stream.
pub fn compress<R>(
    reader: R,
    compression: Compression,
    options: CompressOptions,
) -> BoxStream<'static, io::Result<Bytes>>
where
    R: AsyncRead + Send + Unpin + 'static,
{
    match compression {
        Compression::Gzip { level } => gzip_blocks(reader, level, options),
        Compression::Zstd { level } => zstd_frame(reader, level),
        // No CPU work: the bytes pass as they are read.
        Compression::None => ReaderStream::with_capacity(reader, CHUNK).boxed(),
    }
}

const WINDOW: usize = 32 * 1024;

/// The fixed 10-byte gzip header: no name, no time stamp, OS "unknown".
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// Input buffers of one size, reused for the whole stream: a buffer goes back to the pool when
/// the last `Bytes` made from it is dropped (by whichever thread), so the pool holds at most
/// as many as were ever in use at once.
#[derive(Debug)]
struct BufferPool {
    size: usize,
    free: Mutex<Vec<Vec<u8>>>,
}

impl BufferPool {
    fn new(size: usize) -> Arc<Self> {
        Arc::new(Self {
            size,
            free: Mutex::new(Vec::new()),
        })
    }

    fn take(&self) -> Vec<u8> {
        let reused = self
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        reused.unwrap_or_else(|| vec![0; self.size])
    }
}

/// The owner behind a pooled `Bytes`: its first `len` bytes are the data.
struct Pooled {
    buf: Vec<u8>,
    len: usize,
    pool: Arc<BufferPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        self.pool
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(buf);
    }
}

/// Reads until a pooled buffer is full or the reader ends: empty at the end.
async fn read_block<R: AsyncRead + Unpin>(
    reader: &mut R,
    pool: &Arc<BufferPool>,
) -> io::Result<Bytes> {
    let mut buf = pool.take();
    let mut len = 0;
    while len < buf.len() {
        let n = reader.read(&mut buf[len..]).await?;
        if n == 0 {
            break;
        }
        len += n;
    }
    Ok(Bytes::from_owner(Pooled {
        buf,
        len,
        pool: pool.clone(),
    }))
}

/// Reads the next block unless the consumer went away first (`None` then).
async fn read_or_closed<R: AsyncRead + Unpin>(
    reader: &mut R,
    pool: &Arc<BufferPool>,
    consumer: &mpsc::Sender<io::Result<Bytes>>,
) -> Option<io::Result<Bytes>> {
    tokio::select! {
        biased;
        () = consumer.closed() => None,
        read = read_block(reader, pool) => Some(read),
    }
}

/// The receiving end of a compression stage as a stream. When every sender is gone, the task
/// that fed it is awaited: a task that panicked ends the stream with an error, never with a
/// clean end that would pass a truncated output for a whole one.
fn channel_stream(
    mut rx: mpsc::Receiver<io::Result<Bytes>>,
    task: JoinHandle<()>,
) -> BoxStream<'static, io::Result<Bytes>> {
    let mut task = Some(task);
    futures::stream::poll_fn(move |cx| {
        if let Some(item) = ready!(rx.poll_recv(cx)) {
            return Poll::Ready(Some(item));
        }
        let Some(handle) = task.as_mut() else {
            return Poll::Ready(None);
        };
        let joined = ready!(Pin::new(handle).poll(cx));
        task = None;
        Poll::Ready(match joined {
            Ok(()) => None,
            Err(e) => Some(Err(io::Error::other(format!(
                "the compression task failed: {e}"
            )))),
        })
    })
    .boxed()
}

/// One compressed gzip block.
struct Block {
    deflate: Bytes,
    crc: crc32fast::Hasher,
    len: u64,
}

/// One block for a deflate thread, and where its result goes.
struct DeflateJob {
    input: Bytes,
    dict: Option<Bytes>,
    last: bool,
    done: oneshot::Sender<io::Result<Block>>,
}

/// A deflate thread's state, kept for the whole stream.
enum Deflater {
    /// libdeflate: one compressor (its match finder's memory) reused for every block; it keeps
    /// nothing from one block to the next, so the output does not depend on which thread
    /// compressed which block before.
    Libdeflate(libdeflater::Compressor),
    /// zlib-rs: a fresh compressor for every block (see [`deflate_block`]).
    ZlibRs,
}

/// The libdeflate level for a gzip level.
fn libdeflate_level(level: u32) -> io::Result<libdeflater::CompressionLvl> {
    i32::try_from(level)
        .ok()
        .and_then(|l| libdeflater::CompressionLvl::new(l).ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("gzip level {level} is not in 1..=9"),
            )
        })
}

/// Starts `threads` deflate threads. Each takes its jobs in order from its own queue and keeps
/// its output buffer (and compressor, for libdeflate) for the whole stream; the threads end
/// when their queues are dropped.
fn deflate_threads(
    threads: usize,
    level: u32,
    engine: GzipEngine,
) -> io::Result<Vec<std::sync::mpsc::Sender<DeflateJob>>> {
    let lvl = match engine {
        GzipEngine::Libdeflate => Some(libdeflate_level(level)?),
        GzipEngine::ZlibRsSingleMember => None,
    };
    (0..threads)
        .map(|i| {
            let (tx, rx) = std::sync::mpsc::channel::<DeflateJob>();
            std::thread::Builder::new()
                .name(format!("litemaas-gzip-{i}"))
                .spawn(move || {
                    let mut out = Vec::new();
                    let mut deflater = match lvl {
                        Some(lvl) => Deflater::Libdeflate(libdeflater::Compressor::new(lvl)),
                        None => Deflater::ZlibRs,
                    };
                    while let Ok(job) = rx.recv() {
                        let block = match &mut deflater {
                            Deflater::Libdeflate(compressor) => {
                                gzip_member(compressor, &job.input, &mut out)
                            }
                            Deflater::ZlibRs => deflate_block(
                                &job.input,
                                job.dict.as_deref(),
                                level,
                                job.last,
                                &mut out,
                            ),
                        };
                        let _ = job.done.send(block);
                    }
                })?;
            Ok(tx)
        })
        .collect()
}

fn gzip_blocks<R>(
    mut reader: R,
    level: u32,
    options: CompressOptions,
) -> BoxStream<'static, io::Result<Bytes>>
where
    R: AsyncRead + Send + Unpin + 'static,
{
    let threads = options.threads.max(1);
    let block_size = options.block_size.max(WINDOW);
    let engine = options.gzip_engine;
    // One member made of primed blocks, or a member per block (each with its own header and
    // trailer).
    let one_member = engine == GzipEngine::ZlibRsSingleMember;
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(2);
    let task = tokio::spawn(async move {
        let result: io::Result<()> = async {
            let workers = deflate_threads(threads, level, engine)?;
            let stopped = || io::Error::other("a gzip compression thread stopped");
            if one_member && tx.send(Ok(Bytes::from_static(&GZIP_HEADER))).await.is_err() {
                return Ok(());
            }
            let pool = BufferPool::new(block_size);
            let mut jobs = FuturesOrdered::new();
            let mut crc = crc32fast::Hasher::new();
            let mut total: u64 = 0;
            let mut dict: Option<Bytes> = None;
            let Some(first) = read_or_closed(&mut reader, &pool, &tx).await else {
                return Ok(()); // the consumer went away
            };
            let mut pending = first?;
            for index in 0.. {
                let next = if pending.is_empty() {
                    Bytes::new()
                } else {
                    match read_or_closed(&mut reader, &pool, &tx).await {
                        Some(read) => read?,
                        None => return Ok(()),
                    }
                };
                let last = next.is_empty();
                let input = std::mem::replace(&mut pending, next);
                // A copy of the window, so that the block itself goes back to the pool as soon
                // as it is compressed. Members need none.
                let window = one_member
                    .then(|| Bytes::copy_from_slice(&input[input.len().saturating_sub(WINDOW)..]));
                let (done, result) = oneshot::channel();
                // Jobs in flight are the last `threads - 1` blocks at most, so this thread
                // has none of them: each thread holds one block at a time.
                workers[index % threads]
                    .send(DeflateJob {
                        input,
                        dict: std::mem::replace(&mut dict, window),
                        last,
                        done,
                    })
                    .map_err(|_| stopped())?;
                jobs.push_back(result);
                while jobs.len() >= threads || (last && !jobs.is_empty()) {
                    let Some(done) = jobs.next().await else { break };
                    let block = done.map_err(|_| stopped())??;
                    crc.combine(&block.crc);
                    total += block.len;
                    if tx.send(Ok(block.deflate)).await.is_err() {
                        return Ok(()); // the consumer went away
                    }
                }
                if last {
                    break;
                }
            }
            if one_member {
                let mut trailer = BytesMut::with_capacity(8);
                trailer.extend_from_slice(&crc.finalize().to_le_bytes());
                // ISIZE is the length mod 2^32.
                trailer.extend_from_slice(&(total as u32).to_le_bytes());
                let _ = tx.send(Ok(trailer.freeze())).await;
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            let _ = tx.send(Err(e)).await;
        }
    });
    channel_stream(rx, task)
}

/// One block as a whole gzip member (header, deflate, CRC-32 and length), compressed by
/// libdeflate in one call into `out`, the calling thread's buffer kept from block to block;
/// the member is returned in a copy of its exact size. An empty block makes an empty member, so
/// an empty dump is still a valid gzip file.
fn gzip_member(
    compressor: &mut libdeflater::Compressor,
    input: &[u8],
    out: &mut Vec<u8>,
) -> io::Result<Block> {
    #[cfg(test)]
    crate::tap::probe::note_work();
    out.resize(compressor.gzip_compress_bound(input.len()), 0);
    let n = compressor
        .gzip_compress(input, out)
        .map_err(|e| io::Error::other(format!("libdeflate: {e}")))?;
    Ok(Block {
        deflate: Bytes::copy_from_slice(&out[..n]),
        crc: crc32fast::Hasher::new(),
        len: input.len() as u64,
    })
}

/// Raw deflate of one block, primed with `dict`, ended by a sync flush (or by the final block).
/// `out` is the calling thread's buffer, kept from block to block; the block is returned in a
/// copy of its exact size. A fresh compressor for every block: reusing one after `reset()`
/// changes the output (zlib-rs then sees stale window contents), and the output must not
/// depend on which thread compressed which block before.
fn deflate_block(
    input: &[u8],
    dict: Option<&[u8]>,
    level: u32,
    last: bool,
    out: &mut Vec<u8>,
) -> io::Result<Block> {
    #[cfg(test)]
    crate::tap::probe::note_work();
    let mut crc = crc32fast::Hasher::new();
    crc.update(input);
    let mut c = Compress::new(flate2::Compression::new(level), false);
    if let Some(dict) = dict {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    out.clear();
    out.reserve(input.len() / 2 + 1024);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    loop {
        let consumed = usize::try_from(c.total_in()).map_err(io::Error::other)?;
        let status = c
            .compress_vec(&input[consumed..], out, flush)
            .map_err(io::Error::other)?;
        let all_in = c.total_in() as usize == input.len();
        match status {
            Status::StreamEnd => break,
            // A sync flush is complete once all input is taken and output space was left over.
            Status::Ok | Status::BufError if !last && all_in && out.len() < out.capacity() => break,
            Status::Ok | Status::BufError => out.reserve(out.capacity().max(64 * 1024)),
        }
    }
    Ok(Block {
        deflate: Bytes::copy_from_slice(out),
        crc,
        len: input.len() as u64,
    })
}

/// Zstd on a thread of its own: a task reads the source in chunks from a small pool and hands
/// them over (errors too, in order); the thread compresses them into one frame with the
/// content checksum (XXH64, as the `zstd` command writes it, so that a restore can verify the
/// stream's end as it does gzip's CRC-32) and sends the output on in chunks of 256 KiB.
///
/// The bytes are those of `async_compression`'s `ZstdEncoder` (the same codec, fed the same
/// way) for a source that never makes it wait; that encoder also flushed whenever the source
/// was not ready, which made the output depend on timing. This one flushes only at the end.
fn zstd_frame<R>(mut reader: R, level: i32) -> BoxStream<'static, io::Result<Bytes>>
where
    R: AsyncRead + Send + Unpin + 'static,
{
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(2);
    let task = tokio::spawn(async move {
        let (chunks, input) = mpsc::channel::<io::Result<Bytes>>(2);
        let output = tx.clone();
        let spawned = std::thread::Builder::new()
            .name("litemaas-zstd".into())
            .spawn(move || zstd_thread(level, input, output));
        if let Err(e) = spawned {
            let _ = tx.send(Err(e)).await;
            return;
        }
        let pool = BufferPool::new(CHUNK);
        loop {
            let Some(read) = read_or_closed(&mut reader, &pool, &tx).await else {
                return; // the consumer went away
            };
            let end = read.as_ref().map_or(true, Bytes::is_empty);
            if chunks.send(read).await.is_err() || end {
                return;
            }
        }
    });
    channel_stream(rx, task)
}

/// The zstd thread's loop: an empty chunk ends the frame; an error is passed on and ends the
/// stream without a frame end; a reader that stops without either sends nothing more.
fn zstd_thread(
    level: i32,
    mut input: mpsc::Receiver<io::Result<Bytes>>,
    output: mpsc::Sender<io::Result<Bytes>>,
) {
    let run = std::panic::catch_unwind(AssertUnwindSafe(|| -> io::Result<()> {
        let params = [async_compression::zstd::CParameter::checksum_flag(true)];
        let mut encoder = ZstdEncoder::new_with_params(level, &params);
        let mut out = Output::new(&output);
        while let Some(chunk) = input.blocking_recv() {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => return out.send(Err(e)),
            };
            #[cfg(test)]
            crate::tap::probe::note_work();
            if chunk.is_empty() {
                while !out.write(|buf| encoder.finish(buf))? {}
                return out.flush();
            }
            let mut chunk = PartialBuffer::new(&chunk[..]);
            while !chunk.unwritten().is_empty() {
                out.write(|buf| encoder.encode(&mut chunk, buf).map(|()| true))?;
            }
        }
        Ok(())
    }));
    let failed = match run {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e,
        Err(_) => io::Error::other("the zstd compression thread panicked"),
    };
    let _ = output.blocking_send(Err(failed));
}

/// The zstd thread's output buffer: sent on in exact-size copies whenever it is full.
struct Output<'a> {
    buf: Vec<u8>,
    filled: usize,
    to: &'a mpsc::Sender<io::Result<Bytes>>,
}

/// The consumer went away: the zstd thread stops.
fn consumer_gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the consumer went away")
}

impl<'a> Output<'a> {
    fn new(to: &'a mpsc::Sender<io::Result<Bytes>>) -> Self {
        Self {
            buf: vec![0; CHUNK],
            filled: 0,
            to,
        }
    }

    /// Runs `step` on the free part of the buffer, sending the buffer on when it is full.
    fn write(
        &mut self,
        step: impl FnOnce(&mut WriteBuffer<'_>) -> io::Result<bool>,
    ) -> io::Result<bool> {
        let mut buf = WriteBuffer::new_initialized(&mut self.buf);
        buf.advance(self.filled);
        let done = step(&mut buf)?;
        self.filled = buf.written_len();
        if self.filled == self.buf.len() {
            self.flush()?;
        }
        Ok(done)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.filled > 0 {
            let chunk = Bytes::copy_from_slice(&self.buf[..self.filled]);
            self.filled = 0;
            self.send(Ok(chunk))?;
        }
        Ok(())
    }

    fn send(&self, item: io::Result<Bytes>) -> io::Result<()> {
        self.to.blocking_send(item).map_err(|_| consumer_gone())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use async_compression::tokio::bufread::ZstdEncoder as ZstdEncoderReader;
    use futures::TryStreamExt;

    use super::*;

    fn sample(len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        let mut i: u64 = 0;
        while out.len() < len {
            out.extend_from_slice(
                format!(
                    "INSERT INTO t VALUES ({i}, 'row {}', {});\n",
                    i * 7919 % 1000,
                    i % 13
                )
                .as_bytes(),
            );
            i += 1;
        }
        out.truncate(len);
        out
    }

    async fn gzip_with(data: &[u8], threads: usize, block: usize, engine: GzipEngine) -> Vec<u8> {
        let reader = std::io::Cursor::new(data.to_vec());
        let stream = compress(
            reader,
            Compression::Gzip { level: 6 },
            CompressOptions {
                threads,
                block_size: block,
                gzip_engine: engine,
            },
        );
        collect(stream).await
    }

    /// The old engine: one member made of primed blocks.
    async fn gzip(data: &[u8], threads: usize, block: usize) -> Vec<u8> {
        gzip_with(data, threads, block, GzipEngine::ZlibRsSingleMember).await
    }

    /// The default engine: a libdeflate member per block.
    async fn gzip_members(data: &[u8], threads: usize, block: usize) -> Vec<u8> {
        gzip_with(data, threads, block, GzipEngine::Libdeflate).await
    }

    async fn collect(stream: BoxStream<'static, io::Result<Bytes>>) -> Vec<u8> {
        let chunks: Vec<Bytes> = stream.try_collect().await.unwrap();
        chunks.concat()
    }

    fn gunzip_single_member(gz: &[u8]) -> Vec<u8> {
        // GzDecoder reads exactly one member: proof that the output is one standard member.
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    /// The zlib-rs engine's output is one member (flate2's `GzDecoder` reads only the first).
    #[tokio::test]
    async fn parallel_gzip_is_one_standard_member() {
        for (len, threads, block) in [
            (0, 2, WINDOW),
            (1, 2, WINDOW),
            (WINDOW * 5 + 17, 3, WINDOW),
            (3_000_000, 2, 1 << 20),
        ] {
            let data = sample(len);
            let gz = gzip(&data, threads, block).await;
            assert_eq!(&gz[..2], &[0x1f, 0x8b]);
            assert_eq!(gunzip_single_member(&gz), data, "len {len}");
        }
    }

    #[test]
    fn the_default_engine_is_libdeflate() {
        assert_eq!(
            CompressOptions::default().gzip_engine,
            GzipEngine::Libdeflate
        );
    }

    /// Lengths, threads and block sizes that the byte-exact tests run: empty, one byte, a
    /// partial last block, and blocks more than threads.
    const SHAPES: [(usize, usize, usize); 5] = [
        (0, 2, WINDOW),
        (1, 1, WINDOW),
        (WINDOW * 5 + 17, 3, WINDOW),
        (3_000_000, 2, 1 << 20),
        (6_000_000, 3, 1 << 20),
    ];

    /// The blocks the codec cuts `data` into: one empty block for empty data.
    fn blocks_of(data: &[u8], block: usize) -> Vec<&[u8]> {
        if data.is_empty() {
            vec![&[]]
        } else {
            data.chunks(block).collect()
        }
    }

    /// What the libdeflate engine must produce: every block compressed on its own into a gzip
    /// member, at any thread count.
    fn reference_members(data: &[u8], block: usize, level: i32) -> Vec<u8> {
        let mut c = libdeflater::Compressor::new(libdeflater::CompressionLvl::new(level).unwrap());
        let blocks = blocks_of(data, block);
        let mut out = Vec::new();
        for input in blocks {
            let mut member = vec![0; c.gzip_compress_bound(input.len())];
            let n = c.gzip_compress(input, &mut member).unwrap();
            out.extend_from_slice(&member[..n]);
        }
        out
    }

    #[tokio::test]
    async fn libdeflate_output_is_a_member_per_block_whatever_the_threads() {
        for (len, threads, block) in SHAPES {
            let data = sample(len);
            let ours = gzip_members(&data, threads, block).await;
            assert_eq!(
                ours,
                reference_members(&data, block, 6),
                "len {len}, {threads} threads, blocks of {block}"
            );
            let members = len.div_ceil(block).max(1);
            assert_eq!(count_members(&ours), members, "len {len}");
        }
    }

    /// Members in a multi-member gzip file, each read and checked (CRC-32, length) by flate2.
    fn count_members(gz: &[u8]) -> usize {
        let mut rest = gz;
        let mut count = 0;
        while !rest.is_empty() {
            let mut decoder = flate2::bufread::GzDecoder::new(rest);
            std::io::copy(&mut decoder, &mut std::io::sink()).unwrap();
            rest = decoder.into_inner();
            count += 1;
        }
        count
    }

    /// Decompresses with an external command reading stdin.
    fn gunzip_with(program: &str, args: &[&str], gz: &[u8]) -> Vec<u8> {
        let mut child = std::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        let mut stdin = child.stdin.take().unwrap();
        let input = gz.to_vec();
        let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &input));
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        assert!(out.status.success(), "{program} {args:?}: {}", out.status);
        out.stdout
    }

    #[tokio::test]
    async fn multi_member_gzip_is_read_by_gunzip_zcat_python_and_the_restore_reader() {
        let data = sample(3_500_000);
        let gz = gzip_members(&data, 2, 1 << 20).await;
        assert_eq!(count_members(&gz), 4);
        assert_eq!(gunzip_with("gzip", &["-dc"], &gz), data, "gunzip");
        assert_eq!(gunzip_with("zcat", &[], &gz), data, "zcat");
        let python =
            "import gzip, sys; sys.stdout.buffer.write(gzip.decompress(sys.stdin.buffer.read()))";
        assert_eq!(gunzip_with("python3", &["-c", python], &gz), data, "python");
        let mut multi = Vec::new();
        flate2::read::MultiGzDecoder::new(&gz[..])
            .read_to_end(&mut multi)
            .unwrap();
        assert_eq!(multi, data, "flate2 MultiGzDecoder");
        // litemaas-restore reads gzip with async-compression's decoder, multiple members on
        // (crates/restore/src/input.rs): the same decoder, set the same way.
        let mut decoder = async_compression::tokio::bufread::GzipDecoder::new(&gz[..]);
        decoder.multiple_members(true);
        let mut restored = Vec::new();
        decoder.read_to_end(&mut restored).await.unwrap();
        assert_eq!(restored, data, "the restore reader");
        // Without it, a reader stops after the first member: that is why the restore sets it.
        let mut first = Vec::new();
        async_compression::tokio::bufread::GzipDecoder::new(&gz[..])
            .read_to_end(&mut first)
            .await
            .unwrap();
        assert_eq!(first, &data[..1 << 20]);
    }

    #[tokio::test]
    async fn a_corrupt_member_is_an_error_not_a_short_read() {
        let data = sample(2_500_000);
        let mut gz = gzip_members(&data, 2, 1 << 20).await;
        // The CRC-32 of the last member.
        let at = gz.len() - 6;
        gz[at] ^= 0x55;
        let mut decoder = async_compression::tokio::bufread::GzipDecoder::new(&gz[..]);
        decoder.multiple_members(true);
        let mut out = Vec::new();
        assert!(decoder.read_to_end(&mut out).await.is_err());
    }

    #[tokio::test]
    async fn parallel_gzip_is_as_small_as_plain_gzip() {
        let data = sample(4_000_000);
        let mut plain = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        std::io::Write::write_all(&mut plain, &data).unwrap();
        let plain = plain.finish().unwrap().len() as f64;
        let primed = gzip(&data, 2, 1 << 20).await.len() as f64;
        assert!(
            primed <= plain * 1.01,
            "zlib-rs {primed} vs single-stream {plain}"
        );
        let members = gzip_members(&data, 2, 1 << 20).await.len() as f64;
        assert!(
            members <= plain * 1.03,
            "libdeflate {members} vs single-stream {plain}"
        );
        let default = collect(compress(
            std::io::Cursor::new(data.clone()),
            Compression::default(),
            CompressOptions::default(),
        ))
        .await
        .len() as f64;
        assert!(
            default <= plain * 1.03,
            "default {default} vs single-stream {plain}"
        );
    }

    #[tokio::test]
    async fn zstd_and_none_round_trip() {
        let data = sample(500_000);
        let zst = collect(compress(
            std::io::Cursor::new(data.clone()),
            Compression::Zstd { level: 3 },
            CompressOptions::default(),
        ))
        .await;
        let mut out = Vec::new();
        async_compression::tokio::bufread::ZstdDecoder::new(&zst[..])
            .read_to_end(&mut out)
            .await
            .unwrap();
        assert_eq!(out, data);
        let raw = collect(compress(
            std::io::Cursor::new(data.clone()),
            Compression::None,
            CompressOptions::default(),
        ))
        .await;
        assert_eq!(raw, data);
    }

    /// The blocks as the first version compressed them (a fresh output buffer each): the
    /// output must stay byte for byte the same.
    fn reference_gzip(data: &[u8], block: usize) -> Vec<u8> {
        let mut out = GZIP_HEADER.to_vec();
        let blocks = blocks_of(data, block);
        let mut crc = crc32fast::Hasher::new();
        for (i, input) in blocks.iter().enumerate() {
            let dict = i
                .checked_sub(1)
                .map(|p| &blocks[p][blocks[p].len().saturating_sub(WINDOW)..]);
            let mut c = Compress::new(flate2::Compression::new(6), false);
            if let Some(dict) = dict {
                c.set_dictionary(dict).unwrap();
            }
            let last = i == blocks.len() - 1;
            let flush = if last {
                FlushCompress::Finish
            } else {
                FlushCompress::Sync
            };
            let mut deflate = Vec::with_capacity(input.len() / 2 + 1024);
            loop {
                let consumed = c.total_in() as usize;
                let status = c
                    .compress_vec(&input[consumed..], &mut deflate, flush)
                    .unwrap();
                let all_in = c.total_in() as usize == input.len();
                match status {
                    Status::StreamEnd => break,
                    Status::Ok | Status::BufError
                        if !last && all_in && deflate.len() < deflate.capacity() =>
                    {
                        break;
                    }
                    Status::Ok | Status::BufError => {
                        deflate.reserve(deflate.capacity().max(64 * 1024));
                    }
                }
            }
            crc.update(input);
            out.extend_from_slice(&deflate);
        }
        out.extend_from_slice(&crc.finalize().to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out
    }

    /// The zlib-rs engine (no longer the default) still makes the first version's bytes.
    #[tokio::test]
    async fn gzip_output_is_byte_identical_to_the_first_version() {
        for (len, threads, block) in SHAPES {
            let data = sample(len);
            assert_eq!(
                gzip(&data, threads, block).await,
                reference_gzip(&data, block),
                "len {len}, {threads} threads, blocks of {block}"
            );
        }
    }

    #[tokio::test]
    async fn zstd_output_is_byte_identical_to_async_compression() {
        for (len, level) in [(0, 3), (1, 3), (300_000, 1), (3_000_000, 3), (1_000_000, 9)] {
            let data = sample(len);
            let ours = collect(compress(
                std::io::Cursor::new(data.clone()),
                Compression::Zstd { level },
                CompressOptions::default(),
            ))
            .await;
            // What the first version streamed: async-compression's encoder over the reader.
            let mut theirs = Vec::new();
            ZstdEncoderReader::with_quality_and_params(
                tokio::io::BufReader::with_capacity(CHUNK, &data[..]),
                async_compression::Level::Precise(level),
                &[async_compression::zstd::CParameter::checksum_flag(true)],
            )
            .read_to_end(&mut theirs)
            .await
            .unwrap();
            assert_eq!(ours, theirs, "len {len}, level {level}");
        }
    }

    /// A source that fails after some bytes.
    struct Failing(usize);

    impl AsyncRead for Failing {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if self.0 == 0 {
                return Poll::Ready(Err(io::Error::other("the source broke")));
            }
            let n = self.0.min(buf.remaining()).min(10_000);
            buf.put_slice(&sample(n));
            self.0 -= n;
            Poll::Ready(Ok(()))
        }
    }

    /// Gzip with each engine, zstd, then none.
    fn every_codec() -> [(Compression, CompressOptions); 4] {
        let zlib_rs = CompressOptions {
            gzip_engine: GzipEngine::ZlibRsSingleMember,
            ..CompressOptions::default()
        };
        [
            (Compression::default(), CompressOptions::default()),
            (Compression::Gzip { level: 6 }, zlib_rs),
            (Compression::Zstd { level: 3 }, CompressOptions::default()),
            (Compression::None, CompressOptions::default()),
        ]
    }

    #[tokio::test]
    async fn a_failing_source_ends_every_codec_with_its_error() {
        for (compression, options) in every_codec().into_iter().take(3) {
            let stream = compress(Failing(3_000_000), compression, options);
            let items: Vec<io::Result<Bytes>> = stream.collect().await;
            let last = items.last().expect("something");
            assert!(
                matches!(last, Err(e) if e.to_string() == "the source broke"),
                "{compression}: {:?}",
                last.as_ref().map(Bytes::len)
            );
            assert_eq!(items.iter().filter(|i| i.is_err()).count(), 1);
        }
    }

    #[tokio::test]
    async fn a_dropped_stream_stops_its_threads() {
        let threads = || {
            std::fs::read_dir("/proc/self/task")
                .unwrap()
                .filter(|t| {
                    let comm = t.as_ref().unwrap().path().join("comm");
                    std::fs::read_to_string(comm).is_ok_and(|n| n.starts_with("litemaas-gzip"))
                })
                .count()
        };
        let mut stream = compress(
            tokio::io::repeat(b'x'),
            Compression::Gzip { level: 6 },
            CompressOptions {
                threads: 3,
                block_size: 1 << 20,
                ..CompressOptions::default()
            },
        );
        for _ in 0..5 {
            stream.next().await.unwrap().unwrap();
        }
        assert!(threads() >= 3);
        drop(stream);
        // Other tests' streams may run at the same time: wait for ours to go.
        for _ in 0..200 {
            if threads() < 3 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the gzip threads are still there");
    }

    #[tokio::test]
    async fn compression_and_hashing_run_on_threads_of_their_own() {
        let data = sample(2_000_000);
        for (compression, options) in every_codec() {
            let mut encoded =
                crate::Encoded::new(std::io::Cursor::new(data.clone()), compression, options);
            while let Some(chunk) = encoded.next().await {
                chunk.unwrap();
            }
            assert!(encoded.summary().is_some());
        }
        // Every test of this crate notes where deflate, zstd and SHA-256 ran: never on a
        // runtime's thread (a test's own thread runs its current-thread runtime).
        let places = crate::tap::probe::places();
        assert!(!places.is_empty());
        assert!(
            places.iter().all(|name| name.starts_with("litemaas-")),
            "work ran on {places:?}"
        );
    }

    #[test]
    fn parses_codec_names() {
        assert_eq!("gzip".parse(), Ok(Compression::Gzip { level: 4 }));
        assert_eq!("gzip:9".parse(), Ok(Compression::Gzip { level: 9 }));
        assert_eq!("zstd".parse(), Ok(Compression::Zstd { level: 3 }));
        assert_eq!("none".parse(), Ok(Compression::None));
        assert!("gzip:0".parse::<Compression>().is_err());
        assert!("lz4".parse::<Compression>().is_err());
        assert_eq!(Compression::default().extension(), ".gz");
    }
}
