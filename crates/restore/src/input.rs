//! The stored bytes of a backup, decoded: the codec from the magic bytes (checked against what
//! the name and the integrity record say), SHA-256 and size of every stored byte, and the
//! decoder's verdict on the stream's end (gzip's CRC-32 and length trailer, zstd's frame end
//! and checksum when present). The SHA-256 runs on a thread of its own
//! ([`Sha256Thread`]), never on the async runtime's threads.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use async_compression::tokio::bufread::{GzipDecoder, ZstdDecoder};
use bytes::{Buf, Bytes, BytesMut};
use litemaas_dump::tap::Sha256Thread;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, ReadBuf};

use crate::{Error, Result};

/// How a backup's bytes are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// gzip (`.sql.gz`), one member or several.
    Gzip,
    /// Zstandard (`.sql.zst`).
    Zstd,
    /// Plain SQL (`.sql`).
    None,
}

impl Codec {
    /// The codec a file name promises: `.gz`, `.zst`, `.sql`; `None` for other names.
    pub fn from_name(name: &str) -> Option<Codec> {
        if name.ends_with(".gz") {
            Some(Codec::Gzip)
        } else if name.ends_with(".zst") {
            Some(Codec::Zstd)
        } else if name.ends_with(".sql") {
            Some(Codec::None)
        } else {
            None
        }
    }

    /// The codec the first bytes show (gzip and zstd magic numbers; anything else is taken as
    /// plain text, which the SQL check then accepts or refuses).
    pub fn sniff(head: &[u8]) -> Codec {
        if head.starts_with(&[0x1f, 0x8b]) {
            Codec::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Codec::Zstd
        } else {
            Codec::None
        }
    }

    /// `gzip`, `zstd` or `none`.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Gzip => "gzip",
            Codec::Zstd => "zstd",
            Codec::None => "none",
        }
    }
}

/// What is known in advance about the stored bytes; every field that is set is checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    /// The object's name (`…/database-20260101-020000.sql.gz`), for the codec its suffix promises.
    pub name: Option<String>,
    /// The codec (from the integrity record).
    pub codec: Option<Codec>,
    /// SHA-256 of the stored bytes, hex (from the integrity record).
    pub sha256: Option<String>,
    /// Size of the stored bytes (from the integrity record or the store).
    pub stored_bytes: Option<u64>,
}

/// What was seen of the stored bytes.
#[derive(Debug, Clone, Default)]
pub(crate) struct StoredSeen {
    pub(crate) bytes: u64,
    pub(crate) sha256: Option<String>,
    pub(crate) eof: bool,
}

/// Bytes read from the stored stream at once (the buffer the decoder reads from).
const BUFFER: usize = 256 * 1024;

/// The buffered reader the decoder reads: it reads the stored bytes into buffers of its own,
/// which it shares (as `Bytes`, no copy) with the SHA-256 thread, and counts them; `progress`
/// (if any) follows the count. The end of the stream is reported only once the digest of
/// every byte is known.
struct Hashing<R> {
    inner: R,
    /// Where reads land; split off into `chunk` when filled.
    buf: BytesMut,
    /// Read and hashed, not yet consumed by the decoder.
    chunk: Bytes,
    hasher: Option<Sha256Thread>,
    /// The stored stream has ended (the digest may still be awaited).
    ended: bool,
    seen: Arc<Mutex<StoredSeen>>,
    progress: Option<Arc<std::sync::atomic::AtomicU64>>,
}

impl<R> Hashing<R> {
    fn new(
        inner: R,
        seen: Arc<Mutex<StoredSeen>>,
        progress: Option<Arc<std::sync::atomic::AtomicU64>>,
    ) -> Self {
        Self {
            inner,
            buf: BytesMut::new(),
            chunk: Bytes::new(),
            hasher: None,
            ended: false,
            seen,
            progress,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncBufRead for Hashing<R> {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<&[u8]>> {
        let this = self.get_mut();
        if this.chunk.is_empty() {
            let ended = this.seen.lock().unwrap_or_else(|p| p.into_inner()).eof;
            if !ended {
                ready!(this.poll_next_chunk(cx))?;
            }
        }
        Poll::Ready(Ok(&this.chunk))
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        self.get_mut().chunk.advance(amt);
    }
}

impl<R: AsyncRead + Unpin> Hashing<R> {
    /// Reads the next chunk into `chunk` (as much as is ready, up to [`BUFFER`]) and hands it
    /// to the hash; at the end of the stream, waits for the digest and notes it.
    fn poll_next_chunk(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let hasher = match &mut self.hasher {
            Some(hasher) => hasher,
            None => self.hasher.insert(Sha256Thread::spawn()?),
        };
        if !self.ended {
            ready!(hasher.poll_ready(cx))?;
            if self.buf.capacity() - self.buf.len() < BUFFER / 4 {
                // A new buffer, or the old one again once the decoder and the hash are done
                // with it.
                self.buf.reserve(BUFFER);
            }
            // Small reads (a network stream's frames) are gathered, so that the hash is woken
            // once per chunk of some size, not once per frame.
            loop {
                match tokio_util::io::poll_read_buf(Pin::new(&mut self.inner), cx, &mut self.buf) {
                    Poll::Ready(Ok(0)) => {
                        self.ended = true;
                        break;
                    }
                    Poll::Ready(Ok(_))
                        if self.buf.len() < BUFFER / 4 && self.buf.capacity() > self.buf.len() => {}
                    Poll::Ready(Ok(_)) => break,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending if self.buf.is_empty() => return Poll::Pending,
                    Poll::Pending => break,
                }
            }
            if !self.buf.is_empty() {
                let n = self.buf.len() as u64;
                self.chunk = self.buf.split().freeze();
                hasher.send(self.chunk.clone())?;
                self.seen.lock().unwrap_or_else(|p| p.into_inner()).bytes += n;
                if let Some(progress) = &self.progress {
                    progress.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                }
                return Poll::Ready(Ok(()));
            }
        }
        let digest = ready!(hasher.poll_finish(cx))?;
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.eof = true;
        seen.sha256 = Some(hex::encode(digest));
        Poll::Ready(Ok(()))
    }
}

/// For plain SQL, read as it is.
impl<R: AsyncRead + Unpin> AsyncRead for Hashing<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let available = ready!(self.as_mut().poll_fill_buf(cx))?;
        let n = available.len().min(buf.remaining());
        buf.put_slice(&available[..n]);
        self.consume(n);
        Poll::Ready(Ok(()))
    }
}

/// The decoded SQL of a backup, and what is learnt about the stored bytes while reading it.
pub(crate) struct Decoded {
    pub(crate) sql: Pin<Box<dyn AsyncRead + Send>>,
    pub(crate) codec: Codec,
    pub(crate) seen: Arc<Mutex<StoredSeen>>,
}

/// Reads the first bytes, settles the codec (refusing a mismatch with the name or the record)
/// and builds the decoder.
pub(crate) async fn open(
    stored: Pin<Box<dyn AsyncRead + Send>>,
    expected: &Expected,
    progress: Option<Arc<std::sync::atomic::AtomicU64>>,
) -> Result<Decoded> {
    let seen = Arc::new(Mutex::new(StoredSeen::default()));
    let mut buffered = Hashing::new(stored, seen.clone(), progress);
    let head = buffered
        .fill_buf()
        .await
        .map_err(|source| Error::Read { source })?;
    if head.is_empty() {
        return Err(Error::Empty);
    }
    let codec = Codec::sniff(head);
    if let Some(promised) = expected.codec
        && promised != codec
    {
        return Err(Error::CodecMismatch {
            what: "its integrity record".into(),
            promised,
            found: codec,
        });
    }
    if let Some(name) = &expected.name
        && let Some(promised) = Codec::from_name(name)
        && promised != codec
    {
        return Err(Error::CodecMismatch {
            what: format!("its name {name:?}"),
            promised,
            found: codec,
        });
    }
    let sql: Pin<Box<dyn AsyncRead + Send>> = match codec {
        Codec::Gzip => {
            let mut decoder = GzipDecoder::new(buffered);
            decoder.multiple_members(true);
            Box::pin(decoder)
        }
        Codec::Zstd => {
            let mut decoder = ZstdDecoder::new(buffered);
            decoder.multiple_members(true);
            Box::pin(decoder)
        }
        Codec::None => Box::pin(buffered),
    };
    Ok(Decoded { sql, codec, seen })
}

/// Checks the stored bytes against what was expected, once they were read to their end.
pub(crate) fn check_stored(seen: &StoredSeen, expected: &Expected) -> Result<String> {
    let Some(sha256) = seen.sha256.clone().filter(|_| seen.eof) else {
        return Err(Error::Internal(
            "the stored bytes were not read to their end".into(),
        ));
    };
    if let Some(size) = expected.stored_bytes
        && size != seen.bytes
    {
        return Err(Error::SizeMismatch {
            expected: size,
            found: seen.bytes,
        });
    }
    if let Some(want) = &expected.sha256
        && !want.eq_ignore_ascii_case(&sha256)
    {
        return Err(Error::ChecksumMismatch {
            expected: want.clone(),
            found: sha256,
        });
    }
    Ok(sha256)
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};
    use tokio::io::AsyncReadExt;

    use super::*;

    /// A reader that returns at most 1000 bytes per read.
    struct SmallReads(Bytes);

    impl AsyncRead for SmallReads {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let n = self.0.len().min(buf.remaining()).min(1000);
            buf.put_slice(&self.0.split_to(n));
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn stored_bytes_are_counted_and_hashed_through_any_codec() {
        let sql = b"--\n-- PostgreSQL database dump\n--\n".repeat(20_000);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        std::io::Write::write_all(&mut gz, &sql).unwrap();
        let gz = gz.finish().unwrap();
        for stored in [sql.clone(), gz] {
            let progress = Arc::new(std::sync::atomic::AtomicU64::new(0));
            // Small reads, as from a network stream.
            let reader = SmallReads(Bytes::from(stored.clone()));
            let mut decoded = open(
                Box::pin(reader),
                &Expected::default(),
                Some(progress.clone()),
            )
            .await
            .unwrap();
            let mut out = Vec::new();
            decoded.sql.read_to_end(&mut out).await.unwrap();
            assert_eq!(out, sql);
            let seen = decoded.seen.lock().unwrap().clone();
            assert!(seen.eof);
            assert_eq!(seen.bytes, stored.len() as u64);
            assert_eq!(
                progress.load(std::sync::atomic::Ordering::Relaxed),
                seen.bytes
            );
            let expected = Expected {
                sha256: Some(hex::encode(Sha256::digest(&stored))),
                stored_bytes: Some(stored.len() as u64),
                ..Expected::default()
            };
            assert_eq!(
                check_stored(&seen, &expected).unwrap(),
                expected.sha256.unwrap()
            );
        }
    }

    #[test]
    fn codecs_from_names_and_magic() {
        assert_eq!(
            Codec::from_name("p/database-20260101-020000.sql.gz"),
            Some(Codec::Gzip)
        );
        assert_eq!(Codec::from_name("database.sql.zst"), Some(Codec::Zstd));
        assert_eq!(Codec::from_name("database.sql"), Some(Codec::None));
        assert_eq!(Codec::from_name("database.dump"), None);
        assert_eq!(Codec::sniff(&[0x1f, 0x8b, 8]), Codec::Gzip);
        assert_eq!(Codec::sniff(&[0x28, 0xb5, 0x2f, 0xfd, 0]), Codec::Zstd);
        assert_eq!(Codec::sniff(b"--\n"), Codec::None);
    }
}
