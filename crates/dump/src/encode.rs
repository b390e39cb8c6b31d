//! The streaming stage between a dump and a store: compress, count and hash on the fly.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use futures::stream::BoxStream;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, ReadBuf};

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
    hasher: Sha256,
    ended: bool,
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
            hasher: Sha256::new(),
            ended: false,
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
        self.ended.then(|| EncodeSummary {
            raw_bytes: self.raw_bytes(),
            stored_bytes: self.stored,
            sha256: hex::encode(self.hasher.clone().finalize()),
        })
    }
}

impl std::fmt::Debug for Encoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoded")
            .field("compression", &self.compression)
            .field("raw", &self.raw_bytes())
            .field("stored", &self.stored)
            .field("ended", &self.ended)
            .finish()
    }
}

impl Stream for Encoded {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.inner.as_mut().poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(chunk))) => {
                let chunk = chunk.clone();
                self.stored += chunk.len() as u64;
                self.hasher.update(&chunk);
            }
            Poll::Ready(None) => self.ended = true,
            _ => {}
        }
        polled
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
