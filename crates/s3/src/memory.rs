//! An in-memory store: for tests, examples and programs that want to hold a backup themselves.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};

use crate::{
    Error, GetResult, Metadata, MultipartUpload, ObjectMeta, ObjectStore, PendingUpload, PutMode,
    Result, UploadPart, validate_key,
};

#[derive(Debug, Default)]
struct State {
    objects: BTreeMap<String, (Bytes, jiff::Timestamp, Metadata)>,
    /// By upload id.
    uploads: BTreeMap<String, Upload>,
}

#[derive(Debug)]
struct Upload {
    key: String,
    initiated: jiff::Timestamp,
    parts: BTreeMap<u32, Bytes>,
    metadata: Metadata,
    mode: PutMode,
}

impl State {
    /// Stores an object, or refuses in [`PutMode::Create`] when `key` is taken: one step under
    /// the store's lock.
    fn store(
        &mut self,
        describe: impl FnOnce() -> String,
        key: String,
        object: (Bytes, jiff::Timestamp, Metadata),
        mode: PutMode,
    ) -> Result<()> {
        if mode == PutMode::Create && self.objects.contains_key(&key) {
            return Err(Error::AlreadyExists {
                store: describe(),
                key,
            });
        }
        self.objects.insert(key, object);
        Ok(())
    }
}

/// A store that keeps objects in memory. Cloning shares the same objects.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    next_id: Arc<AtomicU64>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means another test thread panicked; the map itself is consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets an object's modification time: lets tests build a history of backups.
    pub fn set_last_modified(&self, key: &str, at: jiff::Timestamp) -> Result<()> {
        match self.lock().objects.get_mut(key) {
            Some(entry) => {
                entry.1 = at;
                Ok(())
            }
            None => Err(self.not_found(key)),
        }
    }

    fn not_found(&self, key: &str) -> Error {
        Error::NotFound {
            store: self.describe(),
            key: key.to_owned(),
        }
    }
}

#[async_trait]
impl ObjectStore for MemoryStore {
    fn describe(&self) -> String {
        "memory://".into()
    }

    async fn check(&self) -> Result<()> {
        Ok(())
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        self.put_opts(key, data, PutMode::Overwrite).await
    }

    async fn put_opts(&self, key: &str, data: Bytes, mode: PutMode) -> Result<()> {
        validate_key(key)?;
        let object = (data, jiff::Timestamp::now(), Metadata::new());
        self.lock()
            .store(|| self.describe(), key.to_owned(), object, mode)
    }

    async fn put_multipart_with(
        &self,
        key: &str,
        metadata: &Metadata,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.put_multipart_opts(key, metadata, PutMode::Overwrite)
            .await
    }

    async fn put_multipart_opts(
        &self,
        key: &str,
        metadata: &Metadata,
        mode: PutMode,
    ) -> Result<Box<dyn MultipartUpload>> {
        validate_key(key)?;
        let id = format!("mem-{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        self.lock().uploads.insert(
            id.clone(),
            Upload {
                key: key.to_owned(),
                initiated: jiff::Timestamp::now(),
                parts: BTreeMap::new(),
                metadata: metadata.clone(),
                mode,
            },
        );
        Ok(Box::new(MemoryUpload {
            store: self.clone(),
            id,
            next_part: 0,
        }))
    }

    async fn get(&self, key: &str) -> Result<GetResult> {
        let (data, modified, metadata) = self
            .lock()
            .objects
            .get(key)
            .cloned()
            .ok_or_else(|| self.not_found(key))?;
        let meta = ObjectMeta {
            key: key.to_owned(),
            size: data.len() as u64,
            last_modified: modified,
            metadata,
        };
        Ok(GetResult {
            meta,
            stream: Box::pin(futures::stream::once(async move { Ok(data) })),
        })
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let state = self.lock();
        let (data, modified, metadata) =
            state.objects.get(key).ok_or_else(|| self.not_found(key))?;
        Ok(ObjectMeta {
            key: key.to_owned(),
            size: data.len() as u64,
            last_modified: *modified,
            metadata: metadata.clone(),
        })
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let state = self.lock();
        Ok(state
            .objects
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, (data, modified, _))| ObjectMeta {
                key: k.clone(),
                size: data.len() as u64,
                last_modified: *modified,
                metadata: Metadata::new(),
            })
            .collect())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.lock().objects.remove(key);
        Ok(())
    }

    async fn list_pending_uploads(&self, prefix: &str) -> Result<Vec<PendingUpload>> {
        let state = self.lock();
        let mut pending: Vec<_> = state
            .uploads
            .iter()
            .filter(|(_, upload)| upload.key.starts_with(prefix))
            .map(|(id, upload)| PendingUpload {
                key: upload.key.clone(),
                upload_id: id.clone(),
                initiated: upload.initiated,
            })
            .collect();
        pending.sort_by(|a, b| (&a.key, a.initiated).cmp(&(&b.key, b.initiated)));
        Ok(pending)
    }

    async fn abort_pending_upload(&self, upload: &PendingUpload) -> Result<()> {
        self.lock().uploads.remove(&upload.upload_id);
        Ok(())
    }
}

#[derive(Debug)]
struct MemoryUpload {
    store: MemoryStore,
    id: String,
    next_part: u32,
}

#[async_trait]
impl MultipartUpload for MemoryUpload {
    fn put_part(&mut self, data: Bytes) -> UploadPart {
        let number = self.next_part;
        self.next_part += 1;
        let store = self.store.clone();
        let id = self.id.clone();
        Box::pin(async move {
            match store.lock().uploads.get_mut(&id) {
                Some(upload) => {
                    upload.parts.insert(number, data);
                    Ok(())
                }
                None => Err(Error::NotFound {
                    store: store.describe(),
                    key: format!("upload {id}"),
                }),
            }
        })
    }

    async fn complete(&mut self) -> Result<()> {
        let mut state = self.store.lock();
        let upload = state
            .uploads
            .get(&self.id)
            .ok_or_else(|| self.store.not_found(&format!("upload {}", self.id)))?;
        let mut all = BytesMut::with_capacity(upload.parts.values().map(Bytes::len).sum());
        for part in upload.parts.values() {
            all.extend_from_slice(part);
        }
        let object = (
            all.freeze(),
            jiff::Timestamp::now(),
            upload.metadata.clone(),
        );
        let (key, mode) = (upload.key.clone(), upload.mode);
        // Refused, the upload stays open (as on S3) until it is aborted.
        state.store(|| self.store.describe(), key, object, mode)?;
        state.uploads.remove(&self.id);
        Ok(())
    }

    async fn abort(&mut self) -> Result<()> {
        self.store.lock().uploads.remove(&self.id);
        Ok(())
    }
}
