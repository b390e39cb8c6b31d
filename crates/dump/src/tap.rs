//! A reader wrapper that remembers how much passed, and the head and tail of it: enough to
//! check a dump's header and its completion marker without holding the dump.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

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

#[cfg(test)]
mod tests {
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
}
