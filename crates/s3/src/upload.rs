//! Streaming a body of unknown length into a multipart upload in bounded memory.

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use tokio::task::JoinSet;

use crate::{Error, MultipartUpload, Result};

/// S3's smallest allowed part, except for the last one.
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
/// S3's largest allowed part.
pub const MAX_PART_SIZE: usize = 5 * 1024 * 1024 * 1024;
/// S3's limit on parts in one upload.
pub const MAX_PARTS: u32 = 10_000;

/// How an [`UploadWriter`] cuts and sends parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadOptions {
    /// Size of each part at the start (default 8 MiB; raised to [`MIN_PART_SIZE`] if smaller,
    /// unless [`allow_small_parts`](Self::allow_small_parts) is set).
    pub part_size: usize,
    /// Parts uploading at once (default 4). Memory use is at most
    /// `part_size × (max_in_flight + 1)` while the part size has not grown.
    pub max_in_flight: usize,
    /// The part size doubles after every this many parts (default 1,000), so a stream of
    /// unknown length reaches about 1 TiB (with 8 MiB parts) well before S3's 10,000-part limit.
    /// Memory stays flat for anything below `part_size × grow_every` (8 GiB by default).
    pub grow_every: u32,
    /// Lets parts be smaller than S3's 5 MiB minimum: only for stores that accept it (tests of
    /// the local and memory stores, or to provoke S3's `EntityTooSmall`).
    pub allow_small_parts: bool,
}

impl Default for UploadOptions {
    fn default() -> Self {
        Self {
            part_size: 8 * 1024 * 1024,
            max_in_flight: 4,
            grow_every: 1_000,
            allow_small_parts: false,
        }
    }
}

impl UploadOptions {
    fn initial_part_size(&self) -> usize {
        let floor = if self.allow_small_parts {
            1
        } else {
            MIN_PART_SIZE
        };
        self.part_size.clamp(floor, MAX_PART_SIZE)
    }
}

/// What an upload wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadSummary {
    /// Bytes in the object.
    pub bytes: u64,
    /// Parts it was sent in.
    pub parts: u32,
}

/// Writes a stream into a [`MultipartUpload`] in bounded memory.
///
/// Call [`write`](Self::write) with each chunk, then [`finish`](Self::finish) to complete the
/// object, or [`abort`](Self::abort) to discard it. Any error aborts the upload before it is
/// returned; dropping the writer without finishing aborts it in the background.
#[derive(Debug)]
pub struct UploadWriter {
    upload: Option<Box<dyn MultipartUpload>>,
    buf: Vec<u8>,
    /// Part buffers back from finished parts, reused: allocating a new one for every part let
    /// glibc's malloc keep more and more of the freed ones, and peak memory grew with the size
    /// of the upload (measured with `examples/pipeline_rss.rs`).
    free: Arc<Mutex<Vec<Vec<u8>>>>,
    part_size: usize,
    options: UploadOptions,
    in_flight: JoinSet<Result<()>>,
    parts: u32,
    bytes: u64,
}

impl UploadWriter {
    /// Wraps an upload started with [`ObjectStore::put_multipart`](crate::ObjectStore::put_multipart).
    pub fn new(upload: Box<dyn MultipartUpload>, options: UploadOptions) -> Self {
        let part_size = options.initial_part_size();
        Self {
            upload: Some(upload),
            buf: Vec::new(),
            free: Arc::default(),
            part_size,
            options,
            in_flight: JoinSet::new(),
            parts: 0,
            bytes: 0,
        }
    }

    /// The part size in use now.
    pub fn part_size(&self) -> usize {
        self.part_size
    }

    /// Bytes accepted so far.
    pub fn bytes_written(&self) -> u64 {
        self.bytes
    }

    /// Appends data, sending full parts as they fill. Waits while
    /// [`max_in_flight`](UploadOptions::max_in_flight) parts are uploading.
    ///
    /// # Errors
    /// A failed part, or a writer that already failed. The upload is aborted first.
    pub async fn write(&mut self, data: Bytes) -> Result<()> {
        match self.write_inner(data).await {
            Ok(()) => Ok(()),
            Err(e) => {
                self.abort_inner().await;
                Err(e)
            }
        }
    }

    async fn write_inner(&mut self, mut data: Bytes) -> Result<()> {
        if self.upload.is_none() {
            return Err(Error::Internal(
                "write after the upload finished or failed".into(),
            ));
        }
        self.bytes += data.len() as u64;
        while !data.is_empty() {
            let need = self.part_size - self.buf.len();
            if self.buf.is_empty() && data.len() >= need {
                // A whole part straight from the caller's buffer: no copy.
                let part = data.split_to(need);
                self.send_part(part).await?;
                continue;
            }
            if self.buf.capacity() == 0 {
                self.buf = self.take_buffer();
            }
            let take = need.min(data.len());
            self.buf.extend_from_slice(&data.split_to(take));
            if self.buf.len() == self.part_size {
                let part = self.filled_part();
                self.send_part(part).await?;
            }
        }
        Ok(())
    }

    /// An empty buffer of at least the part size: one back from an earlier part, or a new one.
    fn take_buffer(&self) -> Vec<u8> {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(buf) = free.pop() {
            if buf.capacity() >= self.part_size {
                return buf;
            }
        }
        Vec::with_capacity(self.part_size)
    }

    /// The filled buffer as a part; it comes back to `free` when the part is done with it.
    fn filled_part(&mut self) -> Bytes {
        Bytes::from_owner(PartBuffer {
            data: std::mem::take(&mut self.buf),
            free: self.free.clone(),
        })
    }

    async fn send_part(&mut self, part: Bytes) -> Result<()> {
        while self.in_flight.len() >= self.options.max_in_flight.max(1) {
            self.join_one().await?;
        }
        if self.parts >= MAX_PARTS {
            return Err(Error::TooLarge { parts: self.parts });
        }
        let upload = self
            .upload
            .as_mut()
            .ok_or_else(|| Error::Internal("upload already closed".into()))?;
        let future = upload.put_part(part);
        self.in_flight.spawn(future);
        self.parts += 1;
        if self.options.grow_every > 0 && self.parts.is_multiple_of(self.options.grow_every) {
            self.part_size = (self.part_size * 2).min(MAX_PART_SIZE);
        }
        Ok(())
    }

    async fn join_one(&mut self) -> Result<()> {
        match self.in_flight.join_next().await {
            None => Ok(()),
            Some(Ok(result)) => result,
            Some(Err(join)) => Err(Error::Internal(format!("part upload task failed: {join}"))),
        }
    }

    /// The parts the object will have once [`finish`](Self::finish)ed: those sent, and the
    /// last one still buffered.
    pub fn parts_when_finished(&self) -> u32 {
        self.parts + u32::from(!self.buf.is_empty() || self.parts == 0)
    }

    /// Sends what is buffered as the last part, waits for every part and completes the upload.
    ///
    /// # Errors
    /// Any failed part or a failed completion; the upload is aborted first.
    pub async fn finish(mut self) -> Result<UploadSummary> {
        match self.finish_inner().await {
            Ok(summary) => Ok(summary),
            Err(e) => {
                self.abort_inner().await;
                Err(e)
            }
        }
    }

    async fn finish_inner(&mut self) -> Result<UploadSummary> {
        if !self.buf.is_empty() || self.parts == 0 {
            let last = self.filled_part();
            self.send_part(last).await?;
        }
        while !self.in_flight.is_empty() {
            self.join_one().await?;
        }
        let mut upload = self
            .upload
            .take()
            .ok_or_else(|| Error::Internal("upload already closed".into()))?;
        if let Err(e) = upload.complete().await {
            self.upload = Some(upload);
            return Err(e);
        }
        Ok(UploadSummary {
            bytes: self.bytes,
            parts: self.parts,
        })
    }

    /// Discards the upload: stops parts in flight, then aborts it at the store.
    ///
    /// # Errors
    /// The store refused the abort (the upload may then be left for `litemaas-prune`).
    pub async fn abort(mut self) -> Result<()> {
        self.abort_now().await
    }

    /// Stops the parts in flight (so none lands after the abort), then aborts at the store.
    async fn abort_now(&mut self) -> Result<()> {
        self.in_flight.abort_all();
        while self.in_flight.join_next().await.is_some() {}
        match self.upload.take() {
            Some(mut upload) => upload.abort().await,
            None => Ok(()),
        }
    }

    /// Aborts on a failure path, where the failure itself is what gets reported.
    async fn abort_inner(&mut self) {
        match self.abort_now().await {
            Ok(()) => {}
            Err(e) if e.is_not_implemented() => {
                tracing::warn!(error = %e, "the store cannot abort multipart uploads; the parts stay until a lifecycle rule of the bucket removes them");
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not abort the multipart upload; litemaas-prune removes it later");
            }
        }
    }
}

/// A part's bytes; the buffer goes back to its writer's free list when the part is dropped.
struct PartBuffer {
    data: Vec<u8>,
    free: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl AsRef<[u8]> for PartBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for PartBuffer {
    fn drop(&mut self) {
        let mut data = std::mem::take(&mut self.data);
        data.clear();
        self.free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(data);
    }
}

impl Drop for UploadWriter {
    fn drop(&mut self) {
        let Some(mut upload) = self.upload.take() else {
            return;
        };
        self.in_flight.abort_all();
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                tracing::debug!(
                    "upload writer dropped unfinished; aborting the upload in the background"
                );
                handle.spawn(async move {
                    if let Err(e) = upload.abort().await {
                        tracing::warn!(error = %e, "could not abort a dropped multipart upload");
                    }
                });
            }
            Err(_) => tracing::warn!(
                "upload writer dropped outside a runtime; the upload is left for litemaas-prune"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use async_trait::async_trait;
    use mockall::mock;

    use super::*;
    use crate::UploadPart;

    mock! {
        #[derive(Debug)]
        Upload {}
        #[async_trait]
        impl MultipartUpload for Upload {
            fn put_part(&mut self, data: Bytes) -> UploadPart;
            async fn complete(&mut self) -> Result<()>;
            async fn abort(&mut self) -> Result<()>;
        }
    }

    fn opts(part_size: usize, max_in_flight: usize) -> UploadOptions {
        UploadOptions {
            part_size,
            max_in_flight,
            grow_every: 1_000,
            allow_small_parts: true,
        }
    }

    fn recording(sizes: Arc<Mutex<Vec<usize>>>) -> MockUpload {
        let mut mock = MockUpload::new();
        mock.expect_put_part().returning(move |data| {
            sizes.lock().expect("lock").push(data.len());
            Box::pin(async { Ok(()) })
        });
        mock
    }

    #[tokio::test]
    async fn cuts_parts_of_the_configured_size_and_completes_once() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let mut mock = recording(sizes.clone());
        mock.expect_complete().times(1).returning(|| Ok(()));
        mock.expect_abort().never();
        let mut writer = UploadWriter::new(Box::new(mock), opts(10, 2));
        for chunk in [&b"0123"[..], b"456789abcdef", b"", b"ghijklmnopqrstuvw"] {
            writer
                .write(Bytes::copy_from_slice(chunk))
                .await
                .expect("write");
        }
        let summary = writer.finish().await.expect("finish");
        assert_eq!(
            summary,
            UploadSummary {
                bytes: 33,
                parts: 4
            }
        );
        assert_eq!(*sizes.lock().expect("lock"), vec![10, 10, 10, 3]);
    }

    #[tokio::test]
    async fn an_empty_stream_still_sends_one_empty_part() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let mut mock = recording(sizes.clone());
        mock.expect_complete().times(1).returning(|| Ok(()));
        let writer = UploadWriter::new(Box::new(mock), opts(10, 2));
        assert_eq!(writer.finish().await.expect("finish").parts, 1);
        assert_eq!(*sizes.lock().expect("lock"), vec![0]);
    }

    #[tokio::test]
    async fn a_failed_part_aborts_and_never_completes() {
        let mut mock = MockUpload::new();
        let mut n = 0;
        mock.expect_put_part().returning(move |_| {
            n += 1;
            let fail = n == 2;
            Box::pin(async move {
                if fail {
                    Err(Error::Service {
                        store: "mock".into(),
                        operation: "UploadPart",
                        key: "k".into(),
                        code: "InternalError".into(),
                        message: "boom".into(),
                    })
                } else {
                    Ok(())
                }
            })
        });
        mock.expect_complete().never();
        mock.expect_abort().times(1).returning(|| Ok(()));
        let mut writer = UploadWriter::new(Box::new(mock), opts(4, 1));
        let mut failed = None;
        for _ in 0..10 {
            if let Err(e) = writer.write(Bytes::from_static(b"abcd")).await {
                failed = Some(e);
                break;
            }
        }
        assert!(matches!(failed, Some(Error::Service { .. })), "{failed:?}");
        // The writer is closed: further writes fail without touching the upload again.
        assert!(writer.write(Bytes::from_static(b"x")).await.is_err());
    }

    #[tokio::test]
    async fn a_failed_completion_aborts() {
        let mut mock = recording(Arc::default());
        mock.expect_complete().times(1).returning(|| {
            Err(Error::Service {
                store: "mock".into(),
                operation: "CompleteMultipartUpload",
                key: "k".into(),
                code: "InvalidPart".into(),
                message: "bad".into(),
            })
        });
        mock.expect_abort().times(1).returning(|| Ok(()));
        let mut writer = UploadWriter::new(Box::new(mock), opts(4, 1));
        writer
            .write(Bytes::from_static(b"abcdefgh"))
            .await
            .expect("write");
        assert!(writer.finish().await.is_err());
    }

    #[tokio::test]
    async fn bounds_the_parts_in_flight() {
        let live = Arc::new(Mutex::new((0usize, 0usize))); // (now, max)
        let mut mock = MockUpload::new();
        let l = live.clone();
        mock.expect_put_part().returning(move |_| {
            let l = l.clone();
            {
                let mut g = l.lock().expect("lock");
                g.0 += 1;
                g.1 = g.1.max(g.0);
            }
            Box::pin(async move {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                l.lock().expect("lock").0 -= 1;
                Ok(())
            })
        });
        mock.expect_complete().returning(|| Ok(()));
        let mut writer = UploadWriter::new(Box::new(mock), opts(4, 3));
        for _ in 0..40 {
            writer
                .write(Bytes::from_static(b"abcd"))
                .await
                .expect("write");
        }
        writer.finish().await.expect("finish");
        let max = live.lock().expect("lock").1;
        assert!((1..=3).contains(&max), "max in flight {max}");
    }

    #[tokio::test]
    async fn part_size_grows_so_the_part_limit_is_not_reached() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let mut mock = recording(sizes.clone());
        mock.expect_complete().returning(|| Ok(()));
        let o = UploadOptions {
            part_size: 2,
            max_in_flight: 4,
            grow_every: 3,
            allow_small_parts: true,
        };
        let mut writer = UploadWriter::new(Box::new(mock), o);
        writer
            .write(Bytes::from(vec![0u8; 6 + 12 + 24 + 1]))
            .await
            .expect("write");
        writer.finish().await.expect("finish");
        assert_eq!(
            *sizes.lock().expect("lock"),
            vec![2, 2, 2, 4, 4, 4, 8, 8, 8, 1]
        );
    }

    #[tokio::test]
    async fn dropping_an_unfinished_writer_aborts_the_upload() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let tx = Mutex::new(Some(tx));
        let mut mock = recording(Arc::default());
        mock.expect_complete().never();
        mock.expect_abort().times(1).returning(move || {
            if let Some(tx) = tx.lock().expect("lock").take() {
                let _ = tx.send(());
            }
            Ok(())
        });
        let mut writer = UploadWriter::new(Box::new(mock), opts(4, 1));
        writer
            .write(Bytes::from_static(b"abcdefgh"))
            .await
            .expect("write");
        drop(writer);
        tokio::time::timeout(std::time::Duration::from_secs(5), rx)
            .await
            .expect("abort ran")
            .expect("sent");
    }

    #[test]
    fn small_parts_are_raised_to_the_s3_minimum() {
        let o = UploadOptions {
            part_size: 1024,
            ..UploadOptions::default()
        };
        assert_eq!(o.initial_part_size(), MIN_PART_SIZE);
    }
}
