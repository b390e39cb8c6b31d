//! The streaming stage between a dump and a store: compress, count and hash on the fly. The
//! SHA-256 runs on a thread of its own ([`Sha256Thread`]), fed the chunks as they are yielded.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures::Stream;
use futures::stream::BoxStream;
use tokio::io::{AsyncRead, ReadBuf};

use crate::tap::Sha256Thread;
use crate::{CompressOptions, Compression, compress};

/// Sizes and digest of what was stored, known once the stream has ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EncodeSummary {
    /// Bytes read from the source (the uncompressed dump).
    pub raw_bytes: u64,
    /// Bytes produced (what is stored).
    pub stored_bytes: u64,
    /// SHA-256 of the stored bytes, lower-case hex: `sha256sum` of the downloaded object.
    pub sha256: String,
}

/// A stream of compressed chunks that counts and hashes what it yields.
///
/// Gzip and zstd compress on threads of their own, and the SHA-256 is computed on another
/// (started at the first poll), so polling it never does their CPU work on an async runtime's
/// thread. The stream ends (`None`) only once the digest of everything yielded is known.
///
/// ```
/// use futures::TryStreamExt;
/// use litemaas_dump::{CompressOptions, Compression, Encoded};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let mut encoded = Encoded::new(&b"SELECT 1;\n"[..], Compression::None, CompressOptions::default());
/// let bytes: Vec<bytes::Bytes> = (&mut encoded).try_collect().await?;
/// let summary = encoded.summary().expect("stream ended");
/// assert_eq!(summary.raw_bytes, 10);
/// assert_eq!(summary.stored_bytes, 10);
/// assert_eq!(summary.sha256.len(), 64);
/// # Ok(()) }
/// ```
pub struct Encoded {
    inner: BoxStream<'static, io::Result<Bytes>>,
    raw: Arc<AtomicU64>,
    stored: u64,
    hasher: Option<Sha256Thread>,
    /// The inner stream ended; the digest is awaited.
    finishing: bool,
    /// The hash failed (its thread could not start, or stopped): the stream is over.
    failed: bool,
    sha256: Option<[u8; 32]>,
    compression: Compression,
}

impl Encoded {
    /// Starts compressing `reader`.
    pub fn new(
        reader: impl AsyncRead + Send + Unpin + 'static,
        compression: Compression,
        options: CompressOptions,
    ) -> Self {
        let raw = Arc::new(AtomicU64::new(0));
        let counting = Counting {
            inner: reader,
            count: raw.clone(),
        };
        Self {
            inner: compress(counting, compression, options),
            raw,
            stored: 0,
            hasher: None,
            finishing: false,
            failed: false,
            sha256: None,
            compression,
        }
    }

    /// The codec in use.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Uncompressed bytes read so far.
    pub fn raw_bytes(&self) -> u64 {
        self.raw.load(Ordering::Relaxed)
    }

    /// The totals, once the stream has ended without error; `None` before.
    pub fn summary(&self) -> Option<EncodeSummary> {
        self.sha256.map(|digest| EncodeSummary {
            raw_bytes: self.raw_bytes(),
            stored_bytes: self.stored,
            sha256: hex::encode(digest),
        })
    }
}

impl std::fmt::Debug for Encoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoded")
            .field("compression", &self.compression)
            .field("raw", &self.raw_bytes())
            .field("stored", &self.stored)
            .field("ended", &self.sha256.is_some())
            .finish()
    }
}

impl Stream for Encoded {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.sha256.is_some() || this.failed {
            return Poll::Ready(None);
        }
        match this.poll_hashed(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(item)) => Poll::Ready(item),
            Poll::Ready(Err(e)) => {
                this.failed = true;
                Poll::Ready(Some(Err(e)))
            }
        }
    }
}

impl Encoded {
    /// The next chunk, handed to the hash thread too; `Ok(None)` once the digest is known.
    /// `Err` only for the hash itself; the codec's errors are items.
    fn poll_hashed(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<io::Result<Bytes>>>> {
        let hasher = match &mut self.hasher {
            Some(hasher) => hasher,
            None => self.hasher.insert(Sha256Thread::spawn()?),
        };
        if !self.finishing {
            // Room for the next chunk first: a hash slower than the codec holds the codec.
            ready!(hasher.poll_ready(cx))?;
            match ready!(self.inner.as_mut().poll_next(cx)) {
                Some(Ok(chunk)) => {
                    self.stored += chunk.len() as u64;
                    hasher.send(chunk.clone())?;
                    return Poll::Ready(Ok(Some(Ok(chunk))));
                }
                Some(Err(e)) => return Poll::Ready(Ok(Some(Err(e)))),
                None => self.finishing = true,
            }
        }
        self.sha256 = Some(ready!(hasher.poll_finish(cx))?);
        Poll::Ready(Ok(None))
    }
}

struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Counting<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.count
            .fetch_add((buf.filled().len() - before) as u64, Ordering::Relaxed);
        result
    }
}
