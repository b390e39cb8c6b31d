//! Which backup to restore, and what is known of it before a byte is read: a key as
//! `aws s3 ls` and the backup report show it, or the newest *complete* dump under a prefix (by
//! the rules retention uses), with its integrity record when it has one.

use std::pin::Pin;
use std::sync::Arc;

use futures::TryStreamExt;
use litemaas_restore::{Codec, Expected};
use litemaas_retention::State;
use litemaas_s3::{ObjectMeta, ObjectStore};
use serde::Serialize;
use tokio::io::AsyncRead;

use crate::prune::{DumpListing, dump_items, parse_dump_name};
use crate::record::{IntegrityRecord, record_key};

/// Which backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// This key (prefix included).
    Key(String),
    /// The newest complete dump under the prefix.
    Latest,
}

/// A backup chosen for a restore.
#[derive(Debug, Clone, Serialize)]
pub struct Chosen {
    /// The store, e.g. `s3://bucket`.
    pub store: String,
    /// The object's key.
    pub key: String,
    /// The object's size.
    pub size: u64,
    /// When the dump was taken (from its name), if the name says.
    pub taken_at: Option<jiff::Timestamp>,
    /// Its integrity record; `None` for the original tool's dumps, which have none.
    pub record: Option<IntegrityRecord>,
}

impl Chosen {
    /// What the restore checks the bytes against: the name's codec, and the record's codec,
    /// SHA-256 and size when there is a record.
    pub fn expected(&self) -> Expected {
        let record = self.record.as_ref();
        Expected {
            name: Some(self.key.clone()),
            codec: record.map(|r| match r.compression {
                litemaas_dump::Compression::Gzip { .. } => Codec::Gzip,
                litemaas_dump::Compression::Zstd { .. } => Codec::Zstd,
                litemaas_dump::Compression::None => Codec::None,
            }),
            sha256: record.map(|r| r.sha256.clone()),
            stored_bytes: Some(record.map_or(self.size, |r| r.stored_bytes)),
        }
    }
}

/// Why no backup could be chosen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// The key does not exist.
    #[error("{store}: no backup at key {key:?} (list them with litemaas-ls)")]
    NotFound {
        /// The store.
        store: String,
        /// The key.
        key: String,
    },
    /// No complete dump under the prefix.
    #[error(
        "{store}: no complete dump under {prefix:?} ({found} dump(s) found, none complete; litemaas-ls shows their states)"
    )]
    NoneComplete {
        /// The store.
        store: String,
        /// The prefix.
        prefix: String,
        /// Dumps seen.
        found: usize,
    },
    /// The record exists but cannot be read as one.
    #[error("{store}: the integrity record {key:?} is unreadable: {message}")]
    BadRecord {
        /// The store.
        store: String,
        /// The record's key.
        key: String,
        /// Why.
        message: String,
    },
    /// The store failed.
    #[error("listing or reading the backups failed")]
    Store(#[from] litemaas_s3::Error),
}

/// Chooses the backup, reads its metadata and its record.
///
/// # Errors
/// See [`CatalogError`].
pub async fn choose(
    store: &dyn ObjectStore,
    prefix: &str,
    selection: &Selection,
) -> Result<Chosen, CatalogError> {
    let key = match selection {
        Selection::Key(key) => key.trim_start_matches('/').to_owned(),
        Selection::Latest => {
            let items = dump_items(store, prefix, &DumpListing::default()).await?;
            let found = items.len();
            items
                .into_iter()
                .filter(|i| i.state == State::Complete && i.time.is_some())
                .max_by_key(|i| i.time)
                .map(|i| i.id)
                .ok_or_else(|| CatalogError::NoneComplete {
                    store: store.describe(),
                    prefix: prefix.to_owned(),
                    found,
                })?
        }
    };
    let meta: ObjectMeta = match store.head(&key).await {
        Ok(meta) => meta,
        Err(litemaas_s3::Error::NotFound { .. }) => {
            return Err(CatalogError::NotFound {
                store: store.describe(),
                key,
            });
        }
        Err(e) => return Err(e.into()),
    };
    let record_key = record_key(&key);
    let record = match store.get_bytes(&record_key).await {
        Ok(bytes) => Some(
            serde_json::from_slice::<IntegrityRecord>(&bytes).map_err(|e| {
                CatalogError::BadRecord {
                    store: store.describe(),
                    key: record_key.clone(),
                    message: e.to_string(),
                }
            })?,
        ),
        Err(litemaas_s3::Error::NotFound { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let name = key.rsplit('/').next().unwrap_or(&key);
    Ok(Chosen {
        store: store.describe(),
        taken_at: parse_dump_name(name).flatten(),
        size: meta.size,
        key,
        record,
    })
}

/// The chosen object's bytes as a reader.
///
/// # Errors
/// The store failed to start the read.
pub async fn open(
    store: Arc<dyn ObjectStore>,
    key: &str,
) -> litemaas_s3::Result<Pin<Box<dyn AsyncRead + Send>>> {
    let got = store.get(key).await?;
    let stream = got.stream.map_err(std::io::Error::other);
    Ok(Box::pin(tokio_util::io::StreamReader::new(stream)))
}
