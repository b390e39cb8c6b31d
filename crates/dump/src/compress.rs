//! Compression codecs. Gzip is produced by compressing blocks on several cores and joining
//! them into **one standard gzip member** (as `pigz` does): each block is raw deflate primed
//! with the previous block's last 32 KiB as its dictionary and ended with a sync flush, so
//! plain `gunzip`, `zcat`, Python's `gzip` and every single-member decoder read it.

use std::fmt;
use std::io;
use std::str::FromStr;

use async_compression::tokio::bufread::ZstdEncoder;
use bytes::{Bytes, BytesMut};
use flate2::{Compress, FlushCompress, Status};
use futures::StreamExt;
use futures::stream::{BoxStream, FuturesOrdered};
use tokio::io::{AsyncRead, AsyncReadExt, BufReader};
use tokio_util::io::ReaderStream;

/// How a dump is compressed before it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "codec", rename_all = "lowercase")]
pub enum Compression {
    /// Gzip (`.gz`), readable by plain `gunzip`. Level 1–9 (default 6, like `gzip`).
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
        Compression::Gzip { level: 6 }
    }
}

impl Compression {
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
                let level =
                    level.map_or(Ok(6), |l| l.parse::<u32>().map_err(|_| bad_level("1..=9")))?;
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
    /// Uncompressed bytes per gzip block (default 1 MiB).
    pub block_size: usize,
}

impl Default for CompressOptions {
    fn default() -> Self {
        Self {
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            block_size: 1024 * 1024,
        }
    }
}

/// Compresses `reader` as a stream of chunks. Memory is bounded: at most `threads + 2` blocks
/// for gzip, a few hundred KiB for zstd and none.
pub fn compress<R>(
    reader: R,
    compression: Compression,
    options: CompressOptions,
) -> BoxStream<'static, io::Result<Bytes>>
where
    R: AsyncRead + Send + Unpin + 'static,
{
    const CHUNK: usize = 256 * 1024;
    match compression {
        Compression::Gzip { level } => gzip_blocks(reader, level, options),
        Compression::Zstd { level } => {
            // With the frame checksum (XXH64 of the content), as the `zstd` command writes it,
            // so that a restore can verify the stream's end as it does gzip's CRC-32.
            let encoder = ZstdEncoder::with_quality_and_params(
                BufReader::with_capacity(CHUNK, reader),
                async_compression::Level::Precise(level),
                &[async_compression::zstd::CParameter::checksum_flag(true)],
            );
            ReaderStream::with_capacity(encoder, CHUNK).boxed()
        }
        Compression::None => ReaderStream::with_capacity(reader, CHUNK).boxed(),
    }
}

const WINDOW: usize = 32 * 1024;

/// The fixed 10-byte gzip header: no name, no time stamp, OS "unknown".
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

struct Block {
    deflate: Vec<u8>,
    crc: crc32fast::Hasher,
    len: u64,
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
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(2);
    tokio::spawn(async move {
        let result: io::Result<()> = async {
            if tx.send(Ok(Bytes::from_static(&GZIP_HEADER))).await.is_err() {
                return Ok(());
            }
            let mut jobs = FuturesOrdered::new();
            let mut crc = crc32fast::Hasher::new();
            let mut total: u64 = 0;
            let mut dict: Option<Bytes> = None;
            let mut pending = read_block(&mut reader, block_size).await?;
            loop {
                let next = if pending.is_empty() {
                    Bytes::new()
                } else {
                    read_block(&mut reader, block_size).await?
                };
                let last = next.is_empty();
                let input = std::mem::replace(&mut pending, next);
                let window = input.slice(input.len().saturating_sub(WINDOW)..);
                let prime = dict.replace(window);
                jobs.push_back(tokio::task::spawn_blocking(move || {
                    deflate_block(&input, prime.as_deref(), level, last)
                }));
                while jobs.len() >= threads || (last && !jobs.is_empty()) {
                    let Some(done) = jobs.next().await else { break };
                    let block = done.map_err(io::Error::other)??;
                    crc.combine(&block.crc);
                    total += block.len;
                    if tx.send(Ok(Bytes::from(block.deflate))).await.is_err() {
                        return Ok(()); // the consumer went away
                    }
                }
                if last {
                    break;
                }
            }
            let mut trailer = BytesMut::with_capacity(8);
            trailer.extend_from_slice(&crc.finalize().to_le_bytes());
            trailer.extend_from_slice(&(total as u32).to_le_bytes()); // ISIZE is the length mod 2^32
            let _ = tx.send(Ok(trailer.freeze())).await;
            Ok(())
        }
        .await;
        if let Err(e) = result {
            let _ = tx.send(Err(e)).await;
        }
    });
    tokio_stream_from(rx)
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
) -> BoxStream<'static, io::Result<Bytes>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

async fn read_block<R: AsyncRead + Unpin>(reader: &mut R, size: usize) -> io::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(size);
    while buf.len() < size {
        if reader.read_buf(&mut buf).await? == 0 {
            break;
        }
    }
    Ok(buf.freeze())
}

/// Raw deflate of one block, primed with `dict`, ended by a sync flush (or by the final block).
fn deflate_block(input: &[u8], dict: Option<&[u8]>, level: u32, last: bool) -> io::Result<Block> {
    let mut crc = crc32fast::Hasher::new();
    crc.update(input);
    let mut c = Compress::new(flate2::Compression::new(level), false);
    if let Some(dict) = dict {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let mut out = Vec::with_capacity(input.len() / 2 + 1024);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    loop {
        let consumed = usize::try_from(c.total_in()).map_err(io::Error::other)?;
        let status = c
            .compress_vec(&input[consumed..], &mut out, flush)
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
        deflate: out,
        crc,
        len: input.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Read;

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

    async fn gzip(data: &[u8], threads: usize, block: usize) -> Vec<u8> {
        let reader = std::io::Cursor::new(data.to_vec());
        let stream = compress(
            reader,
            Compression::Gzip { level: 6 },
            CompressOptions {
                threads,
                block_size: block,
            },
        );
        collect(stream).await
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

    #[tokio::test]
    async fn parallel_gzip_is_as_small_as_plain_gzip() {
        let data = sample(4_000_000);
        let ours = gzip(&data, 2, 1 << 20).await.len() as f64;
        let mut plain = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        std::io::Write::write_all(&mut plain, &data).unwrap();
        let plain = plain.finish().unwrap().len() as f64;
        assert!(ours <= plain * 1.01, "ours {ours} vs single-stream {plain}");
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

    #[test]
    fn parses_codec_names() {
        assert_eq!("gzip".parse(), Ok(Compression::Gzip { level: 6 }));
        assert_eq!("gzip:9".parse(), Ok(Compression::Gzip { level: 9 }));
        assert_eq!("zstd".parse(), Ok(Compression::Zstd { level: 3 }));
        assert_eq!("none".parse(), Ok(Compression::None));
        assert!("gzip:0".parse::<Compression>().is_err());
        assert!("lz4".parse::<Compression>().is_err());
        assert_eq!(Compression::default().extension(), ".gz");
    }
}
