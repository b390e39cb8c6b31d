//! One database backup: dump → compress → multipart upload → check the dump → complete →
//! integrity record. The object appears at its key only when the dump is proven good; on any
//! failure or cancellation the upload is aborted and nothing is left behind.

use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use litemaas_dump::{CompressOptions, Compression, DumpSource, EncodeSummary, Encoded};
use litemaas_s3::{ObjectStore, UploadOptions, UploadWriter};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::record::{IntegrityRecord, RECORD_FORMAT, dump_key, record_key};

/// How a backup is taken.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// Key prefix (default `litemaas-backups`).
    pub prefix: String,
    /// Codec (default gzip level 6).
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

/// Why a backup failed. In every case but [`BackupError::Record`] nothing was left at the
/// dump's key. Print the whole chain (`{:#}` with anyhow) to see the cause.
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
    /// The dump failed; the upload was aborted.
    #[error("backup of {source_name} failed; the upload was aborted and nothing was stored")]
    Dump {
        /// The source's description.
        source_name: String,
        /// The cause.
        #[source]
        source: litemaas_dump::Error,
    },
    /// Storing the dump failed; the upload was aborted.
    #[error("storing {key} failed; the upload was aborted")]
    Upload {
        /// The key.
        key: String,
        /// The cause.
        #[source]
        source: litemaas_s3::Error,
    },
    /// The dump is stored but its integrity record is not, so it does not count as a backup.
    #[error("{key} was stored but its integrity record {record_key} could not be written")]
    Record {
        /// The dump's key.
        key: String,
        /// The record's key.
        record_key: String,
        /// The cause.
        #[source]
        source: litemaas_s3::Error,
    },
    /// The completed object's size is not what was streamed; it was deleted.
    #[error(
        "{key} holds {found} bytes after the upload, not the {expected} streamed; it was deleted"
    )]
    Verify {
        /// The key.
        key: String,
        /// Bytes streamed.
        expected: u64,
        /// Bytes the store reports.
        found: u64,
    },
    /// The backup was cancelled (signal); the upload was aborted.
    #[error("backup to {key} cancelled; the upload was aborted")]
    Cancelled {
        /// The key.
        key: String,
    },
}

/// Takes one backup of `source` into `store`.
///
/// # Errors
/// See [`BackupError`]: whatever fails, the multipart upload is aborted and no object is
/// visible at the dump's key, except for [`BackupError::Record`].
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
        source,
    };
    let upload = store
        .put_multipart_with(&key, &crate::record::ours())
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
            return Err(BackupError::Cancelled { key });
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
    let uploaded = writer.finish().await.map_err(upload_err)?;

    // The store must hold exactly what was streamed; anything else is removed, never recorded.
    let stored = store.head(&key).await.map_err(upload_err)?;
    if stored.size != summary.stored_bytes {
        let _ = store.delete(&key).await;
        return Err(BackupError::Verify {
            key,
            expected: summary.stored_bytes,
            found: stored.size,
        });
    }

    let record = IntegrityRecord {
        format: RECORD_FORMAT,
        key: key.clone(),
        sha256: summary.sha256.clone(),
        stored_bytes: summary.stored_bytes,
        raw_bytes: summary.raw_bytes,
        compression: options.compression,
        parts: uploaded.parts,
        dump: info,
        started_at,
        finished_at: jiff::Timestamp::now(),
        tool: concat!("litemaas-backup ", env!("CARGO_PKG_VERSION")).to_owned(),
        tables: rows.summary().map(|s| s.tables),
    };
    let record_key = record_key(&key);
    let json = serde_json::to_vec_pretty(&record).map_err(|e| BackupError::Record {
        key: key.clone(),
        record_key: record_key.clone(),
        source: litemaas_s3::Error::Internal(format!("serialising the record: {e}")),
    })?;
    store
        .put(&record_key, Bytes::from(json))
        .await
        .map_err(|source| BackupError::Record {
            key: key.clone(),
            record_key: record_key.clone(),
            source,
        })?;

    let report = BackupReport {
        key,
        record_key,
        store: store.describe(),
        bytes: summary.stored_bytes,
        raw_bytes: summary.raw_bytes,
        sha256: summary.sha256,
        compression: options.compression.name(),
        parts: uploaded.parts,
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

    /// A store that reports a wrong size for completed objects.
    #[derive(Debug, Default)]
    struct Truncating(MemoryStore);

    #[async_trait]
    impl ObjectStore for Truncating {
        fn describe(&self) -> String {
            self.0.describe()
        }
        async fn check(&self) -> litemaas_s3::Result<()> {
            self.0.check().await
        }
        async fn put(&self, key: &str, data: Bytes) -> litemaas_s3::Result<()> {
            self.0.put(key, data).await
        }
        async fn put_multipart_with(
            &self,
            key: &str,
            metadata: &litemaas_s3::Metadata,
        ) -> litemaas_s3::Result<Box<dyn MultipartUpload>> {
            self.0.put_multipart_with(key, metadata).await
        }
        async fn get(&self, key: &str) -> litemaas_s3::Result<GetResult> {
            self.0.get(key).await
        }
        async fn head(&self, key: &str) -> litemaas_s3::Result<ObjectMeta> {
            self.0.head(key).await.map(|m| ObjectMeta {
                size: m.size / 2,
                ..m
            })
        }
        async fn list(&self, prefix: &str) -> litemaas_s3::Result<Vec<ObjectMeta>> {
            self.0.list(prefix).await
        }
        async fn delete(&self, key: &str) -> litemaas_s3::Result<()> {
            self.0.delete(key).await
        }
        async fn list_pending_uploads(
            &self,
            prefix: &str,
        ) -> litemaas_s3::Result<Vec<PendingUpload>> {
            self.0.list_pending_uploads(prefix).await
        }
        async fn abort_pending_upload(&self, upload: &PendingUpload) -> litemaas_s3::Result<()> {
            self.0.abort_pending_upload(upload).await
        }
    }

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
        let store = Truncating::default();
        let source = Scripted {
            bytes: b"-- a whole dump\n-- PostgreSQL database dump complete\n",
            fails: false,
        };
        let err = run(&source, &store, &options(), &CancellationToken::new())
            .await
            .unwrap_err();
        assert!(matches!(err, BackupError::Verify { .. }), "{err:?}");
        assert!(
            store.list("").await.unwrap().is_empty(),
            "neither the object nor a record is left"
        );
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
    }
}
