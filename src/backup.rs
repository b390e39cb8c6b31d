//! One database backup: dump → compress → multipart upload → check the dump → complete →
//! integrity record. The object appears at its key only when the dump is proven good; on any
//! failure or cancellation the upload is aborted and nothing is left behind.

use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use litemaas_dump::{CompressOptions, Compression, DumpSource, EncodeSummary, Encoded};
use litemaas_s3::{ObjectStore, PutMode, UploadOptions, UploadWriter};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::record::{IntegrityRecord, RECORD_FORMAT, dump_key, record_key};

/// How a backup is taken.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// Key prefix (default `litemaas-backups`).
    pub prefix: String,
    /// Codec (default gzip level 4 in libdeflate: [`Compression::default`]).
    pub compression: Compression,
    /// Compression threads and block size.
    pub compress: CompressOptions,
    /// Part size and parts in flight.
    pub upload: UploadOptions,
    /// The run's time stamp, which names the object (passed in, never read inside).
    pub now: jiff::Timestamp,
    /// Set to the bytes of SQL dumped so far, as the dump streams: for a progress display.
    pub progress: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
}

impl BackupOptions {
    /// The defaults, for a run at `now`.
    pub fn new(now: jiff::Timestamp) -> Self {
        Self {
            prefix: "litemaas-backups".into(),
            compression: Compression::default(),
            compress: CompressOptions::default(),
            upload: UploadOptions::default(),
            now,
            progress: None,
        }
    }
}

/// What a successful backup stored.
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    /// The dump object's key.
    pub key: String,
    /// Its integrity record's key.
    pub record_key: String,
    /// The store, e.g. `s3://bucket`.
    pub store: String,
    /// The object's size.
    pub bytes: u64,
    /// The uncompressed dump's size.
    pub raw_bytes: u64,
    /// SHA-256 of the object.
    pub sha256: String,
    /// The codec's name.
    pub compression: &'static str,
    /// Upload parts.
    pub parts: u32,
    /// Wall time of the whole backup.
    pub duration_ms: u64,
    /// The full record as stored.
    pub record: IntegrityRecord,
}

/// What became of the dump's object after a failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Cleanup {
    /// Nothing is at the key: the upload was aborted, or the completed object was deleted.
    Nothing,
    /// The completed object could not be deleted: it is at the key, and it is NOT a backup.
    Left {
        /// Why the delete failed.
        error: String,
    },
}

impl std::fmt::Display for Cleanup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cleanup::Nothing => f.write_str("nothing is left at the key"),
            Cleanup::Left { error } => write!(
                f,
                "the object is STILL THERE and is NOT a backup (no integrity record: retention and restore count it as failed); deleting it failed ({error}): delete it by hand"
            ),
        }
    }
}

/// Why a backup failed. Each variant after the dump started says what became of the object
/// ([`Cleanup`]): nothing is left at the key unless deleting a completed object failed, and
/// then the message says so. Print the whole chain (`{:#}` with anyhow) to see the cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The store could not be used before the dump started (missing bucket, no access, …).
    #[error("the backup store is not usable")]
    StoreUnusable(#[source] litemaas_s3::Error),
    /// An object already exists at the key; it is never overwritten.
    #[error("{store}: {key} already exists; not overwriting it")]
    Exists {
        /// The store.
        store: String,
        /// The key.
        key: String,
    },
    /// Another run wrote the key after this one checked it (two runs in the same second): the
    /// store refused this run's completion (`If-None-Match: *`), or the object found at the key
    /// is not this run's. That object was left untouched — never deleted nor overwritten — and
    /// this run's upload was aborted.
    #[error(
        "{store}: {key} was written by another run while this one was uploading; that object was left untouched and this run's upload was aborted"
    )]
    Raced {
        /// The store.
        store: String,
        /// The key.
        key: String,
    },
    /// The dump failed; the upload was aborted.
    #[error("backup of {source_name} failed; the upload was aborted and nothing was stored")]
    Dump {
        /// The source's description.
        source_name: String,
        /// The cause.
        #[source]
        source: litemaas_dump::Error,
    },
    /// Storing the dump failed.
    #[error("storing {key} failed; the upload was aborted and {cleanup}")]
    Upload {
        /// The key.
        key: String,
        /// What became of the object.
        cleanup: Cleanup,
        /// The cause.
        #[source]
        source: litemaas_s3::Error,
    },
    /// The object was completed but its size could not be checked.
    #[error("{key} was completed but its size could not be checked; {cleanup}")]
    Check {
        /// The key.
        key: String,
        /// What became of the object.
        cleanup: Cleanup,
        /// The cause.
        #[source]
        source: litemaas_s3::Error,
    },
    /// The dump was stored but its integrity record was not, so it is no backup.
    #[error(
        "{key} was stored but its integrity record {record_key} could not be written; {cleanup}"
    )]
    Record {
        /// The dump's key.
        key: String,
        /// The record's key.
        record_key: String,
        /// What became of the object.
        cleanup: Cleanup,
        /// The cause.
        #[source]
        source: litemaas_s3::Error,
    },
    /// The completed object's size is not what was streamed.
    #[error("{key} holds {found} bytes after the upload, not the {expected} streamed; {cleanup}")]
    Verify {
        /// The key.
        key: String,
        /// Bytes streamed.
        expected: u64,
        /// Bytes the store reports.
        found: u64,
        /// What became of the object.
        cleanup: Cleanup,
    },
    /// The backup was cancelled (signal).
    #[error("backup to {key} cancelled; the upload was aborted and {cleanup}")]
    Cancelled {
        /// The key.
        key: String,
        /// What became of the object.
        cleanup: Cleanup,
    },
}

impl BackupError {
    /// Whether an object is left at the dump's key (it is then not a backup: it has no record).
    pub fn left_an_object(&self) -> bool {
        matches!(
            self,
            BackupError::Upload {
                cleanup: Cleanup::Left { .. },
                ..
            } | BackupError::Check {
                cleanup: Cleanup::Left { .. },
                ..
            } | BackupError::Record {
                cleanup: Cleanup::Left { .. },
                ..
            } | BackupError::Verify {
                cleanup: Cleanup::Left { .. },
                ..
            } | BackupError::Cancelled {
                cleanup: Cleanup::Left { .. },
                ..
            }
        )
    }
}

/// Takes one backup of `source` into `store`.
///
/// # Errors
/// See [`BackupError`]: whatever fails, the multipart upload is aborted and an object that was
/// already completed is deleted (with retries); each error says what is left.
pub async fn run(
    source: &dyn DumpSource,
    store: &dyn ObjectStore,
    options: &BackupOptions,
    cancel: &CancellationToken,
) -> Result<BackupReport, BackupError> {
    let started = Instant::now();
    let started_at = jiff::Timestamp::now();
    store.check().await.map_err(BackupError::StoreUnusable)?;
    let key = dump_key(&options.prefix, options.now, options.compression);
    match store.head(&key).await {
        Ok(_) => {
            return Err(BackupError::Exists {
                store: store.describe(),
                key,
            });
        }
        Err(litemaas_s3::Error::NotFound { .. }) => {}
        Err(e) => return Err(BackupError::StoreUnusable(e)),
    }
    tracing::info!(
        source = source.describe(),
        store = store.describe(),
        key,
        "backup started"
    );

    let upload_err = |source| BackupError::Upload {
        key: key.clone(),
        cleanup: Cleanup::Nothing,
        source,
    };
    // Create-only: the pre-run check above is racy (two runs in the same second), so the store
    // is asked to refuse the completion if the key was taken meanwhile; the run mark tells this
    // run's object from another's when a reply is lost or the store ignores the condition.
    let run = run_mark(started_at);
    let mut metadata = crate::record::ours();
    metadata.insert(RUN_MARK.to_owned(), run.clone());
    let upload = store
        .put_multipart_opts(&key, &metadata, PutMode::Create)
        .await
        .map_err(upload_err)?;
    let mut writer = UploadWriter::new(upload, options.upload.clone());
    let dump = match source.start().await {
        Ok(dump) => dump,
        Err(e) => {
            abort(writer).await;
            return Err(BackupError::Dump {
                source_name: source.describe(),
                source: e,
            });
        }
    };
    // Rows per table, counted on the way for the record (a test restore compares them).
    let (reader, rows) = litemaas_restore::plain::PlainTap::new(dump.reader);
    let mut encoded = Encoded::new(Box::pin(reader), options.compression, options.compress);

    // Everything up to the dump's verdict can be cancelled; dropping the stream stops pg_dump.
    let outcome = tokio::select! {
        biased;
        () = cancel.cancelled() => None,
        outcome = stream_into(&mut encoded, dump.completion, &mut writer, options.progress.as_deref()) => Some(outcome),
    };
    let (info, summary) = match outcome {
        None => {
            abort(writer).await;
            return Err(BackupError::Cancelled {
                key,
                cleanup: Cleanup::Nothing,
            });
        }
        Some(Err(Failure::Upload(e))) => {
            abort(writer).await; // already aborted by the writer; harmless
            return Err(upload_err(e));
        }
        Some(Err(Failure::Dump(e))) => {
            abort(writer).await;
            return Err(BackupError::Dump {
                source_name: source.describe(),
                source: e,
            });
        }
        Some(Ok(done)) => done,
    };
    // From the completion on, the object may be visible: any failure or a signal removes it
    // before returning, so that nothing at the key can pass for a backup.
    let parts = writer.parts_when_finished();
    let finished = tokio::select! {
        biased;
        () = cancel.cancelled() => None,
        result = writer.finish() => Some(result),
    };
    match finished {
        Some(Ok(_)) => {}
        None => {
            // Dropping the writer aborted the upload; the completion may have taken effect.
            // Only this run's object is removed.
            let cleanup = match owner(store, &key, &run).await {
                Owner::Theirs => {
                    return Err(BackupError::Raced {
                        store: store.describe(),
                        key,
                    });
                }
                Owner::Nothing => Cleanup::Nothing,
                Owner::Ours(_) | Owner::Unknown => remove(store, &key).await,
            };
            return Err(BackupError::Cancelled { key, cleanup });
        }
        // The writer aborted the upload; what is at the key decides the rest.
        Some(Err(e)) => match owner(store, &key, &run).await {
            // The completion took effect although its reply failed (or its retry found the key
            // taken by the first attempt): the backup goes on.
            Owner::Ours(size) if size == summary.stored_bytes => tracing::warn!(
                key,
                error = %e,
                "the completion's reply failed but the object is complete (size and run mark checked); going on"
            ),
            // Another run's object; or the store says the key is taken and it cannot be looked
            // at: never delete it.
            Owner::Theirs => return Err(raced(store, key, &e)),
            Owner::Unknown if e.is_already_exists() => return Err(raced(store, key, &e)),
            Owner::Nothing => {
                return Err(BackupError::Upload {
                    key,
                    cleanup: Cleanup::Nothing,
                    source: e,
                });
            }
            Owner::Ours(_) | Owner::Unknown => {
                let cleanup = remove(store, &key).await;
                return Err(BackupError::Upload {
                    key,
                    cleanup,
                    source: e,
                });
            }
        },
    }

    let after = async {
        // The store must hold exactly what was streamed; anything else is removed, never recorded.
        let stored = store.head(&key).await.map_err(AfterUpload::Check)?;
        if stored.metadata.get(RUN_MARK) != Some(&run) {
            // Another run completed over this one's (a store that ignores If-None-Match).
            return Err(AfterUpload::Raced);
        }
        if stored.size != summary.stored_bytes {
            return Err(AfterUpload::Verify(stored.size));
        }
        let record = IntegrityRecord {
            format: RECORD_FORMAT,
            key: key.clone(),
            sha256: summary.sha256.clone(),
            stored_bytes: summary.stored_bytes,
            raw_bytes: summary.raw_bytes,
            compression: options.compression,
            parts,
            dump: info,
            started_at,
            finished_at: jiff::Timestamp::now(),
            tool: concat!("litemaas-backup ", env!("CARGO_PKG_VERSION")).to_owned(),
            tables: rows.summary().map(|s| s.tables),
        };
        let json = serde_json::to_vec_pretty(&record).map_err(|e| {
            AfterUpload::Record(litemaas_s3::Error::Internal(format!(
                "serialising the record: {e}"
            )))
        })?;
        store
            .put_opts(&record_key(&key), Bytes::from(json), PutMode::Create)
            .await
            .map_err(AfterUpload::Record)?;
        Ok(record)
    };
    let recorded = tokio::select! {
        biased;
        () = cancel.cancelled() => Err(AfterUpload::Cancelled),
        result = after => result,
    };
    let record = match recorded {
        Ok(record) => record,
        Err(failed) => {
            // This run's object is removed first, so that at no moment does a record stand for
            // it; a record a signal interrupted may have landed: it goes too. Another run's
            // object is never removed.
            let record_key = record_key(&key);
            return Err(match failed {
                AfterUpload::Raced => BackupError::Raced {
                    store: store.describe(),
                    key,
                },
                AfterUpload::Check(source) => BackupError::Check {
                    cleanup: remove(store, &key).await,
                    key,
                    source,
                },
                AfterUpload::Verify(found) => BackupError::Verify {
                    cleanup: remove(store, &key).await,
                    key,
                    expected: summary.stored_bytes,
                    found,
                },
                AfterUpload::Record(source) => BackupError::Record {
                    cleanup: remove(store, &key).await,
                    key,
                    record_key,
                    source,
                },
                AfterUpload::Cancelled => {
                    let cleanup = remove(store, &key).await;
                    let _ = store.delete(&record_key).await;
                    BackupError::Cancelled { key, cleanup }
                }
            });
        }
    };
    let record_key = record_key(&key);

    let report = BackupReport {
        key,
        record_key,
        store: store.describe(),
        bytes: summary.stored_bytes,
        raw_bytes: summary.raw_bytes,
        sha256: summary.sha256,
        compression: options.compression.name(),
        parts,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        record,
    };
    tracing::info!(
        key = report.key,
        bytes = report.bytes,
        sha256 = report.sha256,
        "backup complete"
    );
    Ok(report)
}

enum Failure {
    Dump(litemaas_dump::Error),
    Upload(litemaas_s3::Error),
}

/// How the steps after the completion failed.
enum AfterUpload {
    /// The size check's HEAD failed.
    Check(litemaas_s3::Error),
    /// The store holds this many bytes, not the number streamed.
    Verify(u64),
    /// The record could not be written.
    Record(litemaas_s3::Error),
    /// A signal.
    Cancelled,
    /// The object at the key is not this run's.
    Raced,
}

/// The metadata key of the run mark: which run wrote a dump object.
const RUN_MARK: &str = "litemaas-backup-run";

/// A mark unique to this run: process id, start time and a counter for runs of one process.
fn run_mark(started_at: jiff::Timestamp) -> String {
    static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{}-{n}", std::process::id(), started_at.as_nanosecond())
}

/// The failure of a run whose completion another run's object beat: `refusal` is what the store
/// answered (logged: the error itself says all a person needs).
fn raced(store: &dyn ObjectStore, key: String, refusal: &litemaas_s3::Error) -> BackupError {
    tracing::warn!(key, error = %refusal, "the completion was refused: another run wrote the key");
    BackupError::Raced {
        store: store.describe(),
        key,
    }
}

/// Whose object is at a key, after a completion reported a failure.
enum Owner {
    /// Nothing is there.
    Nothing,
    /// This run's (it carries this run's mark), of this size.
    Ours(u64),
    /// Another writer's: the key did not exist when the run started, so another run took it.
    Theirs,
    /// The store could not be asked.
    Unknown,
}

async fn owner(store: &dyn ObjectStore, key: &str, run: &str) -> Owner {
    match store.head(key).await {
        Ok(meta) if meta.metadata.get(RUN_MARK).map(String::as_str) == Some(run) => {
            Owner::Ours(meta.size)
        }
        Ok(_) => Owner::Theirs,
        Err(litemaas_s3::Error::NotFound { .. }) => Owner::Nothing,
        Err(e) => {
            tracing::warn!(key, error = %e, "cannot look at the object after a failed completion");
            Owner::Unknown
        }
    }
}

/// Deletes a completed object that is no backup, trying a few times, and says what is left.
async fn remove(store: &dyn ObjectStore, key: &str) -> Cleanup {
    let mut last = String::new();
    for attempt in 0..4u32 {
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(250 << attempt)).await;
        }
        match store.delete(key).await {
            // Deleting a missing object succeeds too: confirm that nothing is there.
            Ok(()) => match store.head(key).await {
                Err(litemaas_s3::Error::NotFound { .. }) => return Cleanup::Nothing,
                Ok(_) => last = "the object is still listed after the delete".into(),
                Err(e) => last = e.to_string(),
            },
            Err(e) => last = e.to_string(),
        }
        tracing::warn!(
            key,
            attempt,
            error = last,
            "could not remove a failed backup's object yet"
        );
    }
    Cleanup::Left { error: last }
}

/// Streams every compressed chunk into the upload, then waits for the dump's verdict: only
/// that decides whether the bytes are a backup.
async fn stream_into(
    encoded: &mut Encoded,
    completion: futures::future::BoxFuture<'static, litemaas_dump::Result<litemaas_dump::DumpInfo>>,
    writer: &mut UploadWriter,
    progress: Option<&std::sync::atomic::AtomicU64>,
) -> Result<(litemaas_dump::DumpInfo, EncodeSummary), Failure> {
    while let Some(next) = encoded.next().await {
        match next {
            Ok(chunk) => {
                writer.write(chunk).await.map_err(Failure::Upload)?;
                if let Some(progress) = progress {
                    progress.store(encoded.raw_bytes(), std::sync::atomic::Ordering::Relaxed);
                }
            }
            // The read failed; the dump's own verdict (exit status, stderr) says more.
            Err(e) => {
                return Err(Failure::Dump(match completion.await {
                    Err(dump_error) => dump_error,
                    Ok(_) => litemaas_dump::Error::Io {
                        context: "reading the dump".into(),
                        source: e,
                    },
                }));
            }
        }
    }
    let info = completion.await.map_err(Failure::Dump)?;
    let summary = encoded.summary().ok_or_else(|| {
        let e = std::io::Error::other("the compressed stream did not end");
        Failure::Dump(litemaas_dump::Error::Io {
            context: "encoding".into(),
            source: e,
        })
    })?;
    Ok((info, summary))
}

async fn abort(writer: UploadWriter) {
    if let Err(e) = writer.abort().await {
        tracing::warn!(error = %e, "could not abort the upload; litemaas-prune will remove it");
    }
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;
    use litemaas_dump::{DumpInfo, DumpStream};
    use litemaas_s3::{GetResult, MemoryStore, MultipartUpload, ObjectMeta, PendingUpload};

    use super::*;

    /// A source whose bytes are fixed and whose verdict is chosen by the test.
    #[derive(Debug)]
    struct Scripted {
        bytes: &'static [u8],
        fails: bool,
    }

    #[async_trait]
    impl DumpSource for Scripted {
        fn describe(&self) -> String {
            "scripted".into()
        }
        fn database(&self) -> Option<String> {
            None
        }
        async fn start(&self) -> litemaas_dump::Result<DumpStream> {
            let fails = self.fails;
            Ok(DumpStream {
                reader: Box::pin(self.bytes),
                completion: Box::pin(async move {
                    if fails {
                        Err(litemaas_dump::Error::DumpFailed {
                            program: "pg_dump".into(),
                            status: "exit code 1".into(),
                            stderr: "boom".into(),
                        })
                    } else {
                        Ok(DumpInfo::default())
                    }
                }),
            })
        }
    }

    /// A memory store with faults chosen by the test.
    #[derive(Debug, Default)]
    struct Faulty {
        inner: MemoryStore,
        /// HEAD reports half the size.
        halve_size: bool,
        /// Writing a record fails.
        fail_record: bool,
        /// Every delete fails.
        fail_delete: bool,
        /// CompleteMultipartUpload takes effect but its reply is lost.
        lose_complete_reply: bool,
        /// Cancelled while the record is being written (the write itself succeeds).
        cancel_during_record: Option<CancellationToken>,
        /// The record write takes effect, then its reply never comes.
        hang_after_record: bool,
        /// Another run writes the key just before this run's completion.
        taken_before_complete: bool,
        /// Another run writes the key just after this run's completion (as on a store that
        /// ignores If-None-Match, the later completion wins).
        taken_after_complete: bool,
        /// With `taken_before_complete`: a signal arrives while the completion is in flight,
        /// which never answers.
        cancel_during_complete: Option<CancellationToken>,
    }

    fn fault(operation: &'static str) -> litemaas_s3::Error {
        litemaas_s3::Error::Service {
            store: "memory://".into(),
            operation,
            key: String::new(),
            code: "InternalError".into(),
            message: "injected".into(),
        }
    }

    #[derive(Debug)]
    struct LostReply(Box<dyn MultipartUpload>);

    #[async_trait]
    impl MultipartUpload for LostReply {
        fn put_part(&mut self, data: Bytes) -> litemaas_s3::UploadPart {
            self.0.put_part(data)
        }
        async fn complete(&mut self) -> litemaas_s3::Result<()> {
            self.0.complete().await?;
            Err(fault("CompleteMultipartUpload"))
        }
        async fn abort(&mut self) -> litemaas_s3::Result<()> {
            self.0.abort().await
        }
    }

    /// Another run's object, written at the key around this run's completion.
    #[derive(Debug)]
    struct Taken {
        upload: Box<dyn MultipartUpload>,
        store: MemoryStore,
        key: String,
        before: bool,
        cancel: Option<CancellationToken>,
    }

    const THEIRS: &[u8] = b"another run's dump";

    #[async_trait]
    impl MultipartUpload for Taken {
        fn put_part(&mut self, data: Bytes) -> litemaas_s3::UploadPart {
            self.upload.put_part(data)
        }
        async fn complete(&mut self) -> litemaas_s3::Result<()> {
            let theirs = || self.store.put(&self.key, Bytes::from_static(THEIRS));
            if self.before {
                theirs().await?;
            }
            if let Some(cancel) = &self.cancel {
                cancel.cancel();
                std::future::pending::<()>().await;
            }
            self.upload.complete().await?;
            if !self.before {
                theirs().await?;
            }
            Ok(())
        }
        async fn abort(&mut self) -> litemaas_s3::Result<()> {
            self.upload.abort().await
        }
    }

    #[async_trait]
    impl ObjectStore for Faulty {
        fn describe(&self) -> String {
            self.inner.describe()
        }
        async fn check(&self) -> litemaas_s3::Result<()> {
            self.inner.check().await
        }
        async fn put(&self, key: &str, data: Bytes) -> litemaas_s3::Result<()> {
            if self.fail_record {
                return Err(fault("PutObject"));
            }
            self.inner.put(key, data).await?;
            if let Some(cancel) = &self.cancel_during_record {
                cancel.cancel();
            }
            if self.hang_after_record {
                std::future::pending::<()>().await;
            }
            Ok(())
        }
        async fn put_multipart_with(
            &self,
            key: &str,
            metadata: &litemaas_s3::Metadata,
        ) -> litemaas_s3::Result<Box<dyn MultipartUpload>> {
            self.put_multipart_opts(key, metadata, PutMode::Overwrite)
                .await
        }
        async fn put_multipart_opts(
            &self,
            key: &str,
            metadata: &litemaas_s3::Metadata,
            mode: PutMode,
        ) -> litemaas_s3::Result<Box<dyn MultipartUpload>> {
            let upload = self.inner.put_multipart_opts(key, metadata, mode).await?;
            Ok(if self.lose_complete_reply {
                Box::new(LostReply(upload))
            } else if self.taken_before_complete || self.taken_after_complete {
                Box::new(Taken {
                    upload,
                    store: self.inner.clone(),
                    key: key.to_owned(),
                    before: self.taken_before_complete,
                    cancel: self.cancel_during_complete.clone(),
                })
            } else {
                upload
            })
        }
        async fn get(&self, key: &str) -> litemaas_s3::Result<GetResult> {
            self.inner.get(key).await
        }
        async fn head(&self, key: &str) -> litemaas_s3::Result<ObjectMeta> {
            let halve = self.halve_size;
            self.inner.head(key).await.map(|m| ObjectMeta {
                size: if halve { m.size / 2 } else { m.size },
                ..m
            })
        }
        async fn list(&self, prefix: &str) -> litemaas_s3::Result<Vec<ObjectMeta>> {
            self.inner.list(prefix).await
        }
        async fn delete(&self, key: &str) -> litemaas_s3::Result<()> {
            if self.fail_delete {
                return Err(fault("DeleteObject"));
            }
            self.inner.delete(key).await
        }
        async fn list_pending_uploads(
            &self,
            prefix: &str,
        ) -> litemaas_s3::Result<Vec<PendingUpload>> {
            self.inner.list_pending_uploads(prefix).await
        }
        async fn abort_pending_upload(&self, upload: &PendingUpload) -> litemaas_s3::Result<()> {
            self.inner.abort_pending_upload(upload).await
        }
    }

    const WHOLE: Scripted = Scripted {
        bytes: b"-- a whole dump\n-- PostgreSQL database dump complete\n",
        fails: false,
    };

    fn options() -> BackupOptions {
        BackupOptions::new(jiff::Timestamp::from_second(1_767_225_600).unwrap())
    }

    #[tokio::test]
    async fn a_failed_verdict_leaves_nothing_even_after_every_byte_was_uploaded() {
        let store = MemoryStore::new();
        let source = Scripted {
            bytes: b"-- half a dump\n",
            fails: true,
        };
        let err = run(&source, &store, &options(), &CancellationToken::new())
            .await
            .unwrap_err();
        assert!(matches!(err, BackupError::Dump { .. }), "{err:?}");
        assert!(store.list("").await.unwrap().is_empty());
        assert!(store.list_pending_uploads("").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_object_of_the_wrong_size_is_deleted_and_not_recorded() {
        let store = Faulty {
            halve_size: true,
            ..Faulty::default()
        };
        let err = run(&WHOLE, &store, &options(), &CancellationToken::new())
            .await
            .unwrap_err();
        assert!(matches!(err, BackupError::Verify { .. }), "{err:?}");
        assert!(
            err.to_string().contains("nothing is left at the key"),
            "{err}"
        );
        assert!(
            store.list("").await.unwrap().is_empty(),
            "neither the object nor a record is left"
        );
    }

    #[tokio::test]
    async fn a_failed_record_write_removes_the_object() {
        let store = Faulty {
            fail_record: true,
            ..Faulty::default()
        };
        let err = run(&WHOLE, &store, &options(), &CancellationToken::new())
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                BackupError::Record {
                    cleanup: Cleanup::Nothing,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(store.list("").await.unwrap().is_empty());
    }

    /// The object cannot be deleted either: the error says it is there and is no backup, and
    /// retention indeed counts it as failed (it carries the mark and has no record).
    #[tokio::test(start_paused = true)]
    async fn an_object_that_cannot_be_deleted_is_said_to_be_there_and_is_no_backup() {
        let store = Faulty {
            fail_record: true,
            fail_delete: true,
            ..Faulty::default()
        };
        let err = run(&WHOLE, &store, &options(), &CancellationToken::new())
            .await
            .unwrap_err();
        assert!(err.left_an_object(), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains("STILL THERE") && message.contains("NOT a backup"),
            "{message}"
        );
        assert!(!message.contains("was deleted"), "{message}");
        let items = crate::prune::dump_items(
            &store,
            "litemaas-backups",
            &crate::prune::DumpListing::default(),
        )
        .await
        .unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].state, litemaas_retention::State::Failed);
    }

    /// Two runs in the same second: the other one completes first. The store refuses this
    /// run's completion (create-only); the other run's object is left byte-identical, and this
    /// run writes no record and leaves no upload open.
    #[tokio::test]
    async fn another_run_completing_first_keeps_its_object() {
        let store = Faulty {
            taken_before_complete: true,
            ..Faulty::default()
        };
        let err = run(&WHOLE, &store, &options(), &CancellationToken::new())
            .await
            .unwrap_err();
        assert!(matches!(err, BackupError::Raced { .. }), "{err:?}");
        assert!(!err.left_an_object());
        let key = dump_key("litemaas-backups", options().now, Compression::default());
        assert!(err.to_string().contains(&key), "{err}");
        assert_eq!(store.get_bytes(&key).await.unwrap(), THEIRS);
        let keys: Vec<_> = store
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect();
        assert_eq!(keys, [key]);
        assert!(store.list_pending_uploads("").await.unwrap().is_empty());
    }

    /// A signal while this run's completion is in flight, and another run's object at the key:
    /// that object is not this run's to remove.
    #[tokio::test]
    async fn a_signal_during_the_completion_never_removes_another_runs_object() {
        let cancel = CancellationToken::new();
        let store = Faulty {
            taken_before_complete: true,
            cancel_during_complete: Some(cancel.clone()),
            ..Faulty::default()
        };
        let err = run(&WHOLE, &store, &options(), &cancel).await.unwrap_err();
        assert!(matches!(err, BackupError::Raced { .. }), "{err:?}");
        let key = dump_key("litemaas-backups", options().now, Compression::default());
        assert_eq!(store.get_bytes(&key).await.unwrap(), THEIRS);
    }

    /// As on a store that ignores If-None-Match: the other run completes over this run's
    /// object. This run sees that the object is no longer its own, fails, and removes nothing.
    #[tokio::test]
    async fn another_run_completing_over_this_one_is_never_deleted() {
        let store = Faulty {
            taken_after_complete: true,
            ..Faulty::default()
        };
        let err = run(&WHOLE, &store, &options(), &CancellationToken::new())
            .await
            .unwrap_err();
        assert!(matches!(err, BackupError::Raced { .. }), "{err:?}");
        let key = dump_key("litemaas-backups", options().now, Compression::default());
        assert_eq!(store.get_bytes(&key).await.unwrap(), THEIRS);
        assert!(store.head(&record_key(&key)).await.is_err(), "no record");
    }

    /// An integrity record already at the record's key (another run's) is never overwritten:
    /// this run's dump is removed, the record stays as it was.
    #[tokio::test]
    async fn a_record_already_there_is_not_overwritten() {
        let store = MemoryStore::new();
        let key = dump_key("litemaas-backups", options().now, Compression::default());
        store
            .put(&record_key(&key), Bytes::from_static(b"{\"theirs\": true}"))
            .await
            .unwrap();
        let err = run(&WHOLE, &store, &options(), &CancellationToken::new())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, BackupError::Record { cleanup: Cleanup::Nothing, source, .. }
                if source.is_already_exists()),
            "{err:?}"
        );
        assert_eq!(
            store.get_bytes(&record_key(&key)).await.unwrap(),
            "{\"theirs\": true}"
        );
        assert!(
            store.head(&key).await.is_err(),
            "this run's dump was removed"
        );
    }

    #[tokio::test]
    async fn a_lost_completion_reply_is_resolved_by_looking_at_the_object() {
        let store = Faulty {
            lose_complete_reply: true,
            ..Faulty::default()
        };
        let report = run(&WHOLE, &store, &options(), &CancellationToken::new())
            .await
            .unwrap();
        assert!(store.head(&report.record_key).await.is_ok());
        assert_eq!(store.head(&report.key).await.unwrap().size, report.bytes);
    }

    /// A signal while the record is written: either the record made it (a complete backup,
    /// and the caller skips retention) or nothing is left — never an object without its record.
    #[tokio::test]
    async fn a_signal_during_the_record_write_leaves_a_backup_or_nothing() {
        for hang in [false, true] {
            let cancel = CancellationToken::new();
            let store = Faulty {
                cancel_during_record: Some(cancel.clone()),
                hang_after_record: hang,
                ..Faulty::default()
            };
            let result = run(&WHOLE, &store, &options(), &cancel).await;
            let left = store.inner.list("").await.unwrap();
            match result {
                Ok(report) => {
                    assert!(!hang);
                    let keys: Vec<_> = left.iter().map(|m| m.key.clone()).collect();
                    assert_eq!(keys, [report.key, report.record_key]);
                }
                Err(err) => {
                    assert!(hang, "{err:?}");
                    assert!(
                        matches!(
                            err,
                            BackupError::Cancelled {
                                cleanup: Cleanup::Nothing,
                                ..
                            }
                        ),
                        "{err:?}"
                    );
                    assert!(left.is_empty(), "{left:?}");
                }
            }
        }
    }

    #[tokio::test]
    async fn a_good_dump_is_stored_with_its_record() {
        let store = MemoryStore::new();
        let source = Scripted {
            bytes: b"SELECT 1;\n",
            fails: false,
        };
        let report = run(&source, &store, &options(), &CancellationToken::new())
            .await
            .unwrap();
        let record: IntegrityRecord =
            serde_json::from_slice(&store.get_bytes(&report.record_key).await.unwrap()).unwrap();
        assert_eq!((record.stored_bytes, record.raw_bytes), (report.bytes, 10));
        assert_eq!(record.sha256, report.sha256);
        assert_eq!(record.parts, report.parts);
        let head = store.head(&report.key).await.unwrap();
        assert!(head.metadata.contains_key(crate::record::MARK), "{head:?}");
    }
}
