//! Watching the bytes that pass: [`Tap`], a reader wrapper that remembers how much passed, and
//! the head and tail of it (enough to check a dump's header and its completion marker without
//! holding the dump); and [`Sha256Thread`], the SHA-256 of a stream computed on a thread of its
//! own, so that hashing never holds up an async runtime's threads.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::PollSender;

/// What a [`Tap`] saw.
#[derive(Debug, Default, Clone)]
pub struct Tapped {
    /// Bytes read.
    pub bytes: u64,
    /// The first bytes, up to the head size.
    pub head: Vec<u8>,
    /// The last bytes, up to the tail size.
    pub tail: Vec<u8>,
}

/// Wraps a reader, recording into a shared [`Tapped`].
#[derive(Debug)]
pub struct Tap<R> {
    inner: R,
    seen: Arc<Mutex<Tapped>>,
    head: usize,
    tail: usize,
}

impl<R> Tap<R> {
    /// Wraps `inner`, keeping the first `head` and last `tail` bytes.
    pub fn new(inner: R, head: usize, tail: usize) -> (Self, Arc<Mutex<Tapped>>) {
        let seen = Arc::new(Mutex::new(Tapped::default()));
        (
            Self {
                inner,
                seen: seen.clone(),
                head,
                tail,
            },
            seen,
        )
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Tap<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            let new = &buf.filled()[before..];
            let (head, tail) = (self.head, self.tail);
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            seen.bytes += new.len() as u64;
            if seen.head.len() < head {
                let take = (head - seen.head.len()).min(new.len());
                seen.head.extend_from_slice(&new[..take]);
            }
            if new.len() >= tail {
                seen.tail.clear();
                seen.tail.extend_from_slice(&new[new.len() - tail..]);
            } else {
                seen.tail.extend_from_slice(new);
                let excess = seen.tail.len().saturating_sub(tail);
                seen.tail.drain(..excess);
            }
        }
        result
    }
}

/// The SHA-256 of a stream of chunks, computed in order on a thread of its own.
///
/// Chunks are handed over as `Bytes` (no copy); at most [`Sha256Thread::QUEUE`] wait to be
/// hashed, so a producer faster than the hash waits in [`poll_ready`](Self::poll_ready).
/// Dropping it ends the thread.
///
/// ```
/// use std::future::poll_fn;
/// use bytes::Bytes;
/// use litemaas_dump::tap::Sha256Thread;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let mut sha = Sha256Thread::spawn()?;
/// for chunk in ["hello ", "world"] {
///     poll_fn(|cx| sha.poll_ready(cx)).await?;
///     sha.send(Bytes::from(chunk))?;
/// }
/// let digest = poll_fn(|cx| sha.poll_finish(cx)).await?;
/// assert_eq!(hex::encode(digest), "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9");
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Sha256Thread {
    /// `None` once the input ended: dropping it (and any slot it had reserved) lets the
    /// thread see the end.
    chunks: Option<PollSender<Bytes>>,
    digest: oneshot::Receiver<[u8; 32]>,
}

impl Sha256Thread {
    /// Chunks that may wait to be hashed.
    pub const QUEUE: usize = 4;

    /// Starts the thread.
    ///
    /// # Errors
    /// The thread could not be started.
    pub fn spawn() -> io::Result<Self> {
        let (tx, mut rx) = mpsc::channel::<Bytes>(Self::QUEUE);
        let (done, digest) = oneshot::channel();
        std::thread::Builder::new()
            .name("litemaas-sha256".into())
            .spawn(move || {
                let mut hasher = Sha256::new();
                while let Some(chunk) = rx.blocking_recv() {
                    #[cfg(test)]
                    probe::note_work();
                    hasher.update(&chunk);
                }
                let _ = done.send(hasher.finalize().into());
            })?;
        Ok(Self {
            chunks: Some(PollSender::new(tx)),
            digest,
        })
    }

    /// Ready once there is room for one more chunk.
    ///
    /// # Errors
    /// The input has ended, or the thread is gone (it panicked).
    pub fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.chunks {
            Some(chunks) => chunks.poll_reserve(cx).map_err(|_| thread_gone()),
            None => Poll::Ready(Err(ended())),
        }
    }

    /// Hands the next chunk over, after [`poll_ready`](Self::poll_ready) said there is room.
    ///
    /// # Errors
    /// No room was reserved, the input has ended, or the thread is gone.
    pub fn send(&mut self, chunk: Bytes) -> io::Result<()> {
        match &mut self.chunks {
            Some(chunks) => chunks.send_item(chunk).map_err(|_| thread_gone()),
            None => Err(ended()),
        }
    }

    /// Ends the input and waits for the digest of everything sent. Nothing can be sent after.
    ///
    /// # Errors
    /// The thread is gone (it panicked).
    pub fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<[u8; 32]>> {
        self.chunks = None;
        Poll::Ready(ready!(Pin::new(&mut self.digest).poll(cx)).map_err(|_| thread_gone()))
    }
}

fn thread_gone() -> io::Error {
    io::Error::other("the SHA-256 thread stopped")
}

fn ended() -> io::Error {
    io::Error::other("the SHA-256 input has already ended")
}

/// Where the CPU work of this crate ran, in tests: the names of the threads.
#[cfg(test)]
pub(crate) mod probe {
    use std::sync::Mutex;

    static PLACES: Mutex<Vec<String>> = Mutex::new(Vec::new());

    /// Notes the current thread's name (deflate, zstd and SHA-256 call this).
    pub(crate) fn note_work() {
        let name = std::thread::current()
            .name()
            .unwrap_or("<unnamed>")
            .to_owned();
        let mut places = PLACES.lock().unwrap_or_else(|p| p.into_inner());
        if !places.contains(&name) {
            places.push(name);
        }
    }

    /// Every thread noted so far.
    pub(crate) fn places() -> Vec<String> {
        PLACES.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use tokio::io::AsyncReadExt;

    use super::*;

    #[tokio::test]
    async fn keeps_head_tail_and_count() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let (mut tap, seen) = Tap::new(&data[..], 100, 50);
        let mut out = Vec::new();
        let mut buf = [0u8; 7];
        loop {
            let n = tap.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.bytes, 10_000);
        assert_eq!(seen.head, data[..100]);
        assert_eq!(seen.tail, data[10_000 - 50..]);
    }

    async fn sha256_of(chunks: &[Bytes]) -> [u8; 32] {
        let mut sha = Sha256Thread::spawn().unwrap();
        for chunk in chunks {
            poll_fn(|cx| sha.poll_ready(cx)).await.unwrap();
            sha.send(chunk.clone()).unwrap();
        }
        poll_fn(|cx| sha.poll_finish(cx)).await.unwrap()
    }

    #[tokio::test]
    async fn sha256_thread_hashes_like_sha256() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let chunks: Vec<Bytes> = data.chunks(77_777).map(Bytes::copy_from_slice).collect();
        assert_eq!(
            sha256_of(&chunks).await,
            <[u8; 32]>::from(Sha256::digest(&data))
        );
        assert_eq!(sha256_of(&[]).await, <[u8; 32]>::from(Sha256::digest(b"")));
    }
}
