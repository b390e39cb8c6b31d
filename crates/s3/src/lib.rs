//! # litemaas-s3
//!
//! A small object-store seam for backups, in the spirit of `object_store`: one trait,
//! [`ObjectStore`], with three real implementations,
//!
//! - [`S3Store`]: Amazon S3 and S3-compatible stores (OpenShift Data Foundation, MinIO) through
//!   `aws-sdk-s3`, with the SDK's retries on throttling and server errors;
//! - [`LocalStore`]: a local directory, written crash-safely (temporary name, `fsync`, atomic
//!   rename): the embedded default when no bucket is given;
//! - [`MemoryStore`]: in memory, for tests and for embedding.
//!
//! On top of the trait's [`MultipartUpload`], [`UploadWriter`] streams data of unknown length in
//! bounded memory: it cuts parts, keeps a bounded number in flight, raises the part size as the
//! stream grows so it cannot run out of parts before about 1 TiB, and aborts the upload on every
//! failure path, including cancellation and being dropped.
//!
//! Writes replace what is at their key, or, in [`PutMode::Create`], never do: they fail with
//! [`Error::AlreadyExists`] instead (S3 `If-None-Match: *` on PutObject and
//! CompleteMultipartUpload), so that two writers of one key cannot overwrite each other.
//!
//! ```
//! use bytes::Bytes;
//! use litemaas_s3::{MemoryStore, ObjectStore, UploadOptions, UploadWriter};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> litemaas_s3::Result<()> {
//! let store = MemoryStore::new();
//! let upload = store.put_multipart("backups/database.sql.gz").await?;
//! let mut writer = UploadWriter::new(upload, UploadOptions::default());
//! writer.write(Bytes::from_static(b"hello ")).await?;
//! writer.write(Bytes::from_static(b"world")).await?;
//! let summary = writer.finish().await?;
//! assert_eq!(summary.bytes, 11);
//!
//! let listed = store.list("backups/").await?;
//! assert_eq!(listed[0].key, "backups/database.sql.gz");
//! assert_eq!(store.get_bytes("backups/database.sql.gz").await?, "hello world");
//! # Ok(()) }
//! ```

mod aws;
mod error;
mod local;
mod memory;
mod upload;

use std::fmt::Debug;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::TryStreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;

pub use aws::{S3Options, S3Store, display_chain};
pub use error::{Error, Result};
pub use local::LocalStore;
pub use memory::MemoryStore;
pub use upload::{MAX_PARTS, MIN_PART_SIZE, UploadOptions, UploadSummary, UploadWriter};

/// User metadata of an object (S3 `x-amz-meta-*`): lower-case keys, short text values.
pub type Metadata = std::collections::BTreeMap<String, String>;

/// What a store knows of one object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ObjectMeta {
    /// The full key, e.g. `litemaas-backups/database-20250101-020000.sql.gz`.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// When the object was last written, as the store reports it.
    pub last_modified: jiff::Timestamp,
    /// The user metadata set when the object was created. Filled by
    /// [`head`](ObjectStore::head) and [`get`](ObjectStore::get) only: listings do not carry it
    /// (S3's ListObjectsV2 does not return it).
    #[serde(skip_serializing_if = "Metadata::is_empty")]
    pub metadata: Metadata,
}

/// What a write does when an object is already at its key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PutMode {
    /// Replace it, as a plain S3 PUT does.
    #[default]
    Overwrite,
    /// Leave it untouched and fail with [`Error::AlreadyExists`]. On S3 the request carries
    /// `If-None-Match: *` (PutObject, CompleteMultipartUpload): AWS S3 and moto 5.2.5 refuse it
    /// with `412 PreconditionFailed`, while an S3-compatible store that ignores the header
    /// (s3rver 3.7.1) overwrites. The local and memory stores check and write in one step.
    Create,
}

/// Fails with [`Error::AlreadyExists`] when `key` holds an object: the non-atomic fallback of
/// the trait's provided create methods.
async fn refuse_existing<S: ObjectStore + ?Sized>(store: &S, key: &str) -> Result<()> {
    match store.head(key).await {
        Ok(_) => Err(Error::AlreadyExists {
            store: store.describe(),
            key: key.to_owned(),
        }),
        Err(Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// A multipart upload that was started and neither completed nor aborted (a crash leaves these).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PendingUpload {
    /// The key the upload would create.
    pub key: String,
    /// The store's identifier of the upload.
    pub upload_id: String,
    /// When it was started.
    pub initiated: jiff::Timestamp,
}

/// An object being read: its metadata and a stream of its bytes.
pub struct GetResult {
    /// The object's metadata.
    pub meta: ObjectMeta,
    /// The bytes, in order.
    pub stream: BoxStream<'static, Result<Bytes>>,
}

impl Debug for GetResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GetResult")
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

/// A future that uploads one part.
pub type UploadPart = BoxFuture<'static, Result<()>>;

/// One multipart upload in progress. Parts are handed over in order with
/// [`put_part`](MultipartUpload::put_part); the futures it returns may run concurrently.
/// Use [`UploadWriter`] rather than this trait directly.
#[async_trait]
pub trait MultipartUpload: Send + Debug {
    /// Starts uploading the next part. Every part but the last must be at least
    /// [`MIN_PART_SIZE`] bytes for S3.
    fn put_part(&mut self, data: Bytes) -> UploadPart;
    /// Makes the object visible under its key. Call only after every part's future finished.
    async fn complete(&mut self) -> Result<()>;
    /// Discards the upload and every part stored for it.
    async fn abort(&mut self) -> Result<()>;
}

/// The storage seam: where backups go and where restores read from.
#[async_trait]
pub trait ObjectStore: Send + Sync + Debug + 'static {
    /// A human name for messages, e.g. `s3://maas-db-backup` or `file:///var/backups`.
    fn describe(&self) -> String;

    /// Checks, before any work, that the store exists and can be reached.
    async fn check(&self) -> Result<()>;

    /// Stores a small object in one request, replacing any object at `key`.
    async fn put(&self, key: &str, data: Bytes) -> Result<()>;

    /// Stores a small object in one request, as `mode` says.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] in [`PutMode::Create`] when `key` is taken.
    ///
    /// The provided implementation, for stores that cannot create atomically, looks with
    /// [`head`](Self::head) before it calls [`put`](Self::put): a writer in between is not seen.
    /// The stores of this crate override it with a check and write in one step.
    async fn put_opts(&self, key: &str, data: Bytes, mode: PutMode) -> Result<()> {
        if mode == PutMode::Create {
            refuse_existing(self, key).await?;
        }
        self.put(key, data).await
    }

    /// Starts a multipart upload to `key` whose object will carry `metadata`, replacing any
    /// object at `key` when it completes. Nothing is visible at `key` until it completes, and
    /// then with its metadata.
    async fn put_multipart_with(
        &self,
        key: &str,
        metadata: &Metadata,
    ) -> Result<Box<dyn MultipartUpload>>;

    /// Starts a multipart upload as [`put_multipart_with`](Self::put_multipart_with) does; in
    /// [`PutMode::Create`] its [`complete`](MultipartUpload::complete) fails with
    /// [`Error::AlreadyExists`], leaving the object there untouched and the upload open (to be
    /// aborted), when `key` was taken in the meantime.
    ///
    /// The provided implementation, for stores that cannot create atomically, only looks with
    /// [`head`](Self::head) when the upload starts. The stores of this crate check at completion,
    /// in one step with the write.
    async fn put_multipart_opts(
        &self,
        key: &str,
        metadata: &Metadata,
        mode: PutMode,
    ) -> Result<Box<dyn MultipartUpload>> {
        if mode == PutMode::Create {
            refuse_existing(self, key).await?;
        }
        self.put_multipart_with(key, metadata).await
    }

    /// Starts a multipart upload to `key`, without metadata.
    async fn put_multipart(&self, key: &str) -> Result<Box<dyn MultipartUpload>> {
        self.put_multipart_with(key, &Metadata::new()).await
    }

    /// Reads an object as a stream.
    async fn get(&self, key: &str) -> Result<GetResult>;

    /// Reads an object's metadata; [`Error::NotFound`] when it does not exist.
    async fn head(&self, key: &str) -> Result<ObjectMeta>;

    /// Lists every object whose key starts with `prefix` (all pages), sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;

    /// Deletes an object. Deleting a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Lists the multipart uploads under `prefix` that were never completed nor aborted.
    async fn list_pending_uploads(&self, prefix: &str) -> Result<Vec<PendingUpload>>;

    /// Aborts one pending multipart upload found by [`list_pending_uploads`](Self::list_pending_uploads).
    async fn abort_pending_upload(&self, upload: &PendingUpload) -> Result<()>;

    /// Reads a whole object into memory: for small objects such as integrity records.
    async fn get_bytes(&self, key: &str) -> Result<Bytes> {
        let got = self.get(key).await?;
        let mut buf = BytesMut::with_capacity(usize::try_from(got.meta.size).unwrap_or(0));
        let mut stream = got.stream;
        while let Some(chunk) = stream.try_next().await? {
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    }
}

/// Checks that a key is safe to use with every store: non-empty, relative, no empty, `.` or `..`
/// segments, no control characters.
pub fn validate_key(key: &str) -> Result<()> {
    let reason = if key.is_empty() {
        Some("empty")
    } else if key.starts_with('/') {
        Some("absolute")
    } else if key.chars().any(char::is_control) {
        Some("control character")
    } else if key
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        Some("empty, '.' or '..' path segment")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidKey {
            key: key.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store of someone else's that implements only the required methods.
    #[derive(Debug, Default)]
    struct Minimal(MemoryStore);

    #[async_trait]
    impl ObjectStore for Minimal {
        fn describe(&self) -> String {
            "minimal://".into()
        }
        async fn check(&self) -> Result<()> {
            Ok(())
        }
        async fn put(&self, key: &str, data: Bytes) -> Result<()> {
            self.0.put(key, data).await
        }
        async fn put_multipart_with(
            &self,
            key: &str,
            metadata: &Metadata,
        ) -> Result<Box<dyn MultipartUpload>> {
            self.0.put_multipart_with(key, metadata).await
        }
        async fn get(&self, key: &str) -> Result<GetResult> {
            self.0.get(key).await
        }
        async fn head(&self, key: &str) -> Result<ObjectMeta> {
            self.0.head(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
            self.0.list(prefix).await
        }
        async fn delete(&self, key: &str) -> Result<()> {
            self.0.delete(key).await
        }
        async fn list_pending_uploads(&self, prefix: &str) -> Result<Vec<PendingUpload>> {
            self.0.list_pending_uploads(prefix).await
        }
        async fn abort_pending_upload(&self, upload: &PendingUpload) -> Result<()> {
            self.0.abort_pending_upload(upload).await
        }
    }

    /// The provided create methods look before they write: a taken key is refused and left as
    /// it was (without the atomicity of the crate's own stores).
    #[tokio::test]
    async fn the_provided_create_methods_refuse_a_taken_key() {
        let store = Minimal::default();
        store
            .put_opts("k", Bytes::from_static(b"first"), PutMode::Create)
            .await
            .unwrap();
        let err = store
            .put_opts("k", Bytes::from_static(b"second"), PutMode::Create)
            .await
            .unwrap_err();
        assert!(err.is_already_exists(), "{err:?}");
        let err = store
            .put_multipart_opts("k", &Metadata::new(), PutMode::Create)
            .await
            .unwrap_err();
        assert!(err.is_already_exists(), "{err:?}");
        assert_eq!(store.get_bytes("k").await.unwrap(), "first");
        assert!(store.list_pending_uploads("").await.unwrap().is_empty());
        store
            .put_opts("k", Bytes::from_static(b"third"), PutMode::Overwrite)
            .await
            .unwrap();
        assert_eq!(store.get_bytes("k").await.unwrap(), "third");
    }

    #[test]
    fn keys_are_validated() {
        assert!(validate_key("litemaas-backups/database-20250101-020000.sql.gz").is_ok());
        for bad in ["", "/etc/passwd", "a/../b", "a//b", "a/./b", "a\nb", "a/"] {
            assert!(
                matches!(validate_key(bad), Err(Error::InvalidKey { .. })),
                "{bad:?}"
            );
        }
    }
}
