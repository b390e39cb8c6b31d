//! A store in a local directory, written crash-safely: data goes to a temporary file under
//! `<root>/.uploads/`, is `fsync`ed, then renamed into place (and the directory `fsync`ed), so a
//! key holds either nothing or a complete object, whatever happens to the machine. An object's
//! user metadata lives beside it in `<root>/.metadata/<key>.json`, written before the object is
//! renamed into place. A create-only write ([`PutMode::Create`]) is decided under an exclusive
//! lock on `<root>/.metadata/.create.lock` (so that two creators cannot both write the key's
//! metadata), and its data is hard-linked into place, which fails if anything is at the key.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use tokio_util::io::ReaderStream;

use crate::{
    Error, GetResult, Metadata, MultipartUpload, ObjectMeta, ObjectStore, PendingUpload, PutMode,
    Result, UploadPart, validate_key,
};

const UPLOADS: &str = ".uploads";
const METADATA: &str = ".metadata";
/// Under [`METADATA`]: held while a create-only write checks its key and writes.
const CREATE_LOCK: &str = ".create.lock";
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A store in a directory: key `a/b.sql.gz` is the file `<root>/a/b.sql.gz`.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// A store rooted at `root`, created on first use.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory holding the objects.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &str) -> Result<PathBuf> {
        validate_key(key)?;
        if matches!(key.split('/').next(), Some(UPLOADS | METADATA)) {
            return Err(Error::InvalidKey {
                key: key.to_owned(),
                reason: "reserved for uploads in progress and metadata",
            });
        }
        Ok(self.root.join(key))
    }

    fn uploads_dir(&self) -> PathBuf {
        self.root.join(UPLOADS)
    }

    fn new_upload(&self, key: &str) -> Result<(PathBuf, String, Arc<File>)> {
        let dir = self.uploads_dir();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
        let id = format!(
            "{}-{}-{}",
            std::process::id(),
            jiff::Timestamp::now().as_nanosecond(),
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        );
        let key_file = dir.join(format!("{id}.key"));
        std::fs::write(&key_file, key).map_err(|e| Error::io("write", &key_file, e))?;
        let data = dir.join(&id);
        let file = File::create(&data).map_err(|e| Error::io("create", &data, e))?;
        Ok((data, id, Arc::new(file)))
    }

    fn metadata_path(&self, key: &str) -> PathBuf {
        self.root.join(METADATA).join(format!("{key}.json"))
    }

    /// Writes (or, for empty metadata, removes) the metadata of `key`, crash-safely.
    fn write_metadata(&self, id: &str, key: &str, metadata: &Metadata) -> Result<()> {
        let path = self.metadata_path(key);
        if metadata.is_empty() {
            return match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(Error::io("remove", &path, e))
                }
                _ => Ok(()),
            };
        }
        let json = serde_json::to_vec(metadata)
            .map_err(|e| Error::Internal(format!("serialising metadata: {e}")))?;
        let temp = self.uploads_dir().join(format!("{id}.meta"));
        let mut file = File::create(&temp).map_err(|e| Error::io("create", &temp, e))?;
        file.write_all(&json)
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io("write", &temp, e))?;
        let parent = path.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(parent).map_err(|e| Error::io("create directory", parent, e))?;
        std::fs::rename(&temp, &path).map_err(|e| Error::io("rename into place", &path, e))?;
        fsync_dir(parent)
    }

    fn read_metadata(&self, key: &str) -> Result<Metadata> {
        let path = self.metadata_path(key);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| Error::io("read", &path, std::io::Error::other(e))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Metadata::new()),
            Err(e) => Err(Error::io("read", &path, e)),
        }
    }

    /// Makes a finished temporary file visible at `key` with its metadata: fsync, metadata,
    /// rename (or, in [`PutMode::Create`], under the create lock: check, metadata, hard link),
    /// fsync the directory. A refused create leaves the temporary files to the caller.
    fn commit(
        &self,
        temp: &Path,
        file: &File,
        id: &str,
        key: &str,
        metadata: &Metadata,
        mode: PutMode,
    ) -> Result<()> {
        let target = self.path_of(key)?;
        file.sync_all().map_err(|e| Error::io("fsync", temp, e))?;
        let parent = target.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(parent).map_err(|e| Error::io("create directory", parent, e))?;
        match mode {
            PutMode::Overwrite => {
                self.write_metadata(id, key, metadata)?;
                std::fs::rename(temp, &target)
                    .map_err(|e| Error::io("rename into place", &target, e))?;
            }
            PutMode::Create => {
                let _lock = self.create_lock()?;
                let taken = || Error::AlreadyExists {
                    store: self.describe(),
                    key: key.to_owned(),
                };
                match std::fs::symlink_metadata(&target) {
                    Ok(_) => return Err(taken()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io("stat", &target, e)),
                }
                self.write_metadata(id, key, metadata)?;
                // Fails if a writer that takes no lock got there in between.
                std::fs::hard_link(temp, &target).map_err(|e| match e.kind() {
                    std::io::ErrorKind::AlreadyExists => taken(),
                    _ => Error::io("link into place", &target, e),
                })?;
                std::fs::remove_file(temp).map_err(|e| Error::io("remove", temp, e))?;
            }
        }
        fsync_dir(parent)?;
        let key_file = self.uploads_dir().join(format!("{id}.key"));
        let _ = std::fs::remove_file(key_file);
        self.tidy();
        Ok(())
    }

    /// The exclusive lock of create-only writes, released on drop.
    fn create_lock(&self) -> Result<File> {
        let dir = self.root.join(METADATA);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
        let path = dir.join(CREATE_LOCK);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("open", &path, e))?;
        file.lock().map_err(|e| Error::io("lock", &path, e))?;
        Ok(file)
    }

    fn discard(&self, id: &str) -> Result<()> {
        let dir = self.uploads_dir();
        for path in [
            dir.join(id),
            dir.join(format!("{id}.key")),
            dir.join(format!("{id}.meta")),
        ] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove", &path, e)),
            }
        }
        self.tidy();
        Ok(())
    }

    /// Removes the uploads directory when no upload is in progress (fails harmlessly otherwise).
    fn tidy(&self) {
        let _ = std::fs::remove_dir(self.uploads_dir());
    }

    fn meta_of(&self, key: String, path: &Path) -> Result<ObjectMeta> {
        let md = std::fs::metadata(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound {
                store: self.describe(),
                key: key.clone(),
            },
            _ => Error::io("stat", path, e),
        })?;
        if !md.is_file() {
            return Err(Error::NotFound {
                store: self.describe(),
                key,
            });
        }
        let modified = md.modified().map_err(|e| Error::io("stat", path, e))?;
        let last_modified =
            jiff::Timestamp::try_from(modified).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        Ok(ObjectMeta {
            key,
            size: md.len(),
            last_modified,
            metadata: Metadata::new(),
        })
    }

    fn walk(&self, dir: &Path, prefix: &str, out: &mut Vec<ObjectMeta>) -> Result<()> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("read directory", dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("read directory", dir, e))?;
            let path = entry.path();
            let Ok(rel) = path.strip_prefix(&self.root) else {
                continue;
            };
            let Some(key) = rel.to_str().map(str::to_owned) else {
                continue;
            };
            if key == UPLOADS || key == METADATA {
                continue;
            }
            let kind = entry.file_type().map_err(|e| Error::io("stat", &path, e))?;
            if kind.is_dir() {
                // Descend only where keys under this directory can match the prefix.
                let dir_key = format!("{key}/");
                if dir_key.starts_with(prefix) || prefix.starts_with(&dir_key) {
                    self.walk(&path, prefix, out)?;
                }
            } else if kind.is_file() && key.starts_with(prefix) {
                out.push(self.meta_of(key, &path)?);
            }
        }
        Ok(())
    }
}

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync directory", dir, e))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        Error::io(
            "run blocking task",
            PathBuf::new(),
            std::io::Error::other(e),
        )
    })?
}

#[async_trait]
impl ObjectStore for LocalStore {
    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }

    /// Changes nothing: the directory, or the nearest existing parent, must be a directory.
    async fn check(&self) -> Result<()> {
        let root = self.root.clone();
        blocking(move || {
            let mut at = root.as_path();
            loop {
                match std::fs::metadata(at) {
                    Ok(md) if md.is_dir() => return Ok(()),
                    Ok(_) => {
                        let e = std::io::Error::new(
                            std::io::ErrorKind::NotADirectory,
                            "not a directory",
                        );
                        return Err(Error::io("use as backup directory", at, e));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => match at.parent() {
                        Some(parent) if !parent.as_os_str().is_empty() => at = parent,
                        _ => return Ok(()),
                    },
                    Err(e) => return Err(Error::io("use as backup directory", at, e)),
                }
            }
        })
        .await
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        self.put_opts(key, data, PutMode::Overwrite).await
    }

    async fn put_opts(&self, key: &str, data: Bytes, mode: PutMode) -> Result<()> {
        self.path_of(key)?;
        let this = self.clone();
        let key = key.to_owned();
        blocking(move || {
            let (temp, id, file) = this.new_upload(&key)?;
            let result = (&*file)
                .write_all(&data)
                .map_err(|e| Error::io("write", &temp, e))
                .and_then(|()| this.commit(&temp, &file, &id, &key, &Metadata::new(), mode));
            if result.is_err() {
                let _ = this.discard(&id);
            }
            result
        })
        .await
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
        self.path_of(key)?;
        let this = self.clone();
        let owned = key.to_owned();
        let (temp, id, file) = blocking(move || this.new_upload(&owned)).await?;
        Ok(Box::new(LocalUpload {
            store: self.clone(),
            key: key.to_owned(),
            temp,
            id,
            file,
            offset: 0,
            metadata: metadata.clone(),
            mode,
        }))
    }

    async fn get(&self, key: &str) -> Result<GetResult> {
        let path = self.path_of(key)?;
        let meta = self.head(key).await?;
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Error::NotFound {
                    store: self.describe(),
                    key: key.to_owned(),
                },
                _ => Error::io("open", &path, e),
            })?;
        let stream = ReaderStream::with_capacity(file, 256 * 1024)
            .map_err(move |e| Error::io("read", &path, e));
        Ok(GetResult {
            meta,
            stream: Box::pin(stream),
        })
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let path = self.path_of(key)?;
        let this = self.clone();
        let key = key.to_owned();
        blocking(move || {
            let mut meta = this.meta_of(key.clone(), &path)?;
            meta.metadata = this.read_metadata(&key)?;
            Ok(meta)
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let this = self.clone();
        let prefix = prefix.to_owned();
        blocking(move || {
            let mut out = Vec::new();
            this.walk(&this.root, &prefix, &mut out)?;
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path_of(key)?;
        let metadata = self.metadata_path(key);
        blocking(move || {
            match std::fs::remove_file(&path) {
                Ok(()) => fsync_dir(path.parent().unwrap_or(Path::new(".")))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove", &path, e)),
            }
            match std::fs::remove_file(&metadata) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(Error::io("remove", &metadata, e))
                }
                _ => Ok(()),
            }
        })
        .await
    }

    async fn list_pending_uploads(&self, prefix: &str) -> Result<Vec<PendingUpload>> {
        let dir = self.uploads_dir();
        let prefix = prefix.to_owned();
        blocking(move || {
            let mut out = Vec::new();
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
                Err(e) => return Err(Error::io("read directory", &dir, e)),
            };
            for entry in entries {
                let path = entry
                    .map_err(|e| Error::io("read directory", &dir, e))?
                    .path();
                let Some(id) = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".key"))
                else {
                    continue;
                };
                let key =
                    std::fs::read_to_string(&path).map_err(|e| Error::io("read", &path, e))?;
                if !key.starts_with(&prefix) {
                    continue;
                }
                let modified = std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .map_err(|e| Error::io("stat", &path, e))?;
                let initiated =
                    jiff::Timestamp::try_from(modified).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
                out.push(PendingUpload {
                    key,
                    upload_id: id.to_owned(),
                    initiated,
                });
            }
            out.sort_by(|a, b| (&a.key, a.initiated).cmp(&(&b.key, b.initiated)));
            Ok(out)
        })
        .await
    }

    async fn abort_pending_upload(&self, upload: &PendingUpload) -> Result<()> {
        if upload.upload_id.contains('/') || upload.upload_id.starts_with('.') {
            return Err(Error::InvalidKey {
                key: upload.upload_id.clone(),
                reason: "not an upload id",
            });
        }
        let this = self.clone();
        let id = upload.upload_id.clone();
        blocking(move || this.discard(&id)).await
    }
}

#[derive(Debug)]
struct LocalUpload {
    store: LocalStore,
    key: String,
    temp: PathBuf,
    id: String,
    file: Arc<File>,
    offset: u64,
    metadata: Metadata,
    mode: PutMode,
}

#[async_trait]
impl MultipartUpload for LocalUpload {
    fn put_part(&mut self, data: Bytes) -> UploadPart {
        // Parts arrive in order, so each one's place in the file is known now, and parts can be
        // written concurrently at their own offsets.
        let offset = self.offset;
        self.offset += data.len() as u64;
        let file = self.file.clone();
        let temp = self.temp.clone();
        Box::pin(blocking(move || {
            file.write_all_at(&data, offset)
                .map_err(|e| Error::io("write", &temp, e))
        }))
    }

    async fn complete(&mut self) -> Result<()> {
        let (store, temp, file, id, key, metadata, mode) = (
            self.store.clone(),
            self.temp.clone(),
            self.file.clone(),
            self.id.clone(),
            self.key.clone(),
            self.metadata.clone(),
            self.mode,
        );
        blocking(move || store.commit(&temp, &file, &id, &key, &metadata, mode)).await
    }

    async fn abort(&mut self) -> Result<()> {
        let (store, id) = (self.store.clone(), self.id.clone());
        blocking(move || store.discard(&id)).await
    }
}
