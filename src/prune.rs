//! Retention applied to the dumps in a store, and cleanup of multipart uploads a crash left.
//!
//! Dumps are the objects directly under the prefix named `database-YYYYMMDD-HHMMSS.sql[.gz|.zst]`;
//! anything else is left alone. One rule says which dumps count (retention, `--latest` of a
//! restore): a dump is complete when its integrity record exists. Without one, the object's
//! metadata decides: a dump that carries this tool's mark ([`record::ours`](crate::record::ours))
//! is a failed run of ours and never counts; one without the mark was made by the original tool,
//! which wrote no records (users migrate with buckets full of them): it counts when non-empty.
//! The rule itself is [`inventory::classify`](crate::inventory::classify), which `litemaas-ls`
//! shows in more detail.

use litemaas_retention::{Action, Item, Plan, RetentionOptions};
use litemaas_s3::{ObjectMeta, ObjectStore, PendingUpload};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::record::record_key;

/// How dumps are read.
#[derive(Debug, Clone, Default)]
pub struct DumpListing {
    /// Use the object's LastModified when its name holds no valid time (default: such objects
    /// get no time, and are never deleted).
    pub last_modified_fallback: bool,
}

/// `prefix/` (or nothing for an empty prefix): what keys directly under the prefix start with.
pub(crate) fn dir_of(prefix: &str) -> String {
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    }
}

/// The time in a dump's name, or `None` if the name is not a dump's; `Some(None)` when it
/// looks like one but the date is invalid.
pub fn parse_dump_name(name: &str) -> Option<Option<jiff::Timestamp>> {
    let stem = ["", ".gz", ".zst"]
        .iter()
        .find_map(|ext| name.strip_suffix(&format!(".sql{ext}")))?;
    let stamp = stem.strip_prefix("database-")?;
    let bytes = stamp.as_bytes();
    let shape = bytes.len() == 15
        && bytes[8] == b'-'
        && bytes
            .iter()
            .enumerate()
            .all(|(i, b)| i == 8 || b.is_ascii_digit());
    if !shape {
        return None;
    }
    Some(
        jiff::civil::DateTime::strptime("%Y%m%d-%H%M%S", stamp)
            .ok()
            .and_then(|dt| dt.to_zoned(jiff::tz::TimeZone::UTC).ok())
            .map(|z| z.timestamp()),
    )
}

/// The dumps under `prefix` as retention items.
///
/// # Errors
/// The listing failed.
pub async fn dump_items(
    store: &dyn ObjectStore,
    prefix: &str,
    listing: &DumpListing,
) -> litemaas_s3::Result<Vec<Item>> {
    let dir = dir_of(prefix);
    let objects = store.list(&dir).await?;
    let keys: std::collections::HashSet<&str> = objects.iter().map(|o| o.key.as_str()).collect();
    let mut items = Vec::new();
    for object in &objects {
        let Some(name) = object.key.strip_prefix(&dir) else {
            continue;
        };
        if name.contains('/') {
            continue;
        }
        let Some(parsed) = parse_dump_name(name) else {
            continue;
        };
        let time = parsed.or(listing
            .last_modified_fallback
            .then_some(object.last_modified));
        let has_record = keys.contains(record_key(&object.key).as_str());
        let state = crate::inventory::classify(store, object, has_record)
            .await?
            .retention_state();
        items.push(Item::new(object.key.clone(), time, state));
    }
    Ok(items)
}

/// The prefixes that hold dumps: `prefix` itself, and each `<prefix>/<database>/` where a
/// cluster backup put the dumps of another database (LiteLLM's): a folder with dumps *and*
/// integrity records of this tool. A folder of dumps without records (say, a hand-made archive
/// of the original tool's dumps) is left alone.
///
/// # Errors
/// The listing failed.
pub async fn dump_prefixes(
    store: &dyn ObjectStore,
    prefix: &str,
) -> litemaas_s3::Result<Vec<String>> {
    let dir = dir_of(prefix);
    let objects = store.list(&dir).await?;
    Ok(std::iter::once(prefix.trim_matches('/').to_owned())
        .chain(
            database_folders(&dir, &objects)
                .into_iter()
                .map(|sub| format!("{dir}{sub}")),
        )
        .collect())
}

/// The folders directly under `dir` that hold dumps *and* integrity records of this tool, in a
/// listing of `dir`: a second database's (see [`dump_prefixes`]).
pub(crate) fn database_folders(
    dir: &str,
    objects: &[ObjectMeta],
) -> std::collections::BTreeSet<String> {
    let (mut with_dumps, mut with_records) = (
        std::collections::BTreeSet::new(),
        std::collections::BTreeSet::new(),
    );
    for object in objects {
        let Some(rest) = object.key.strip_prefix(dir) else {
            continue;
        };
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            [sub, name] if *sub != "records" && parse_dump_name(name).is_some() => {
                with_dumps.insert((*sub).to_owned());
            }
            [sub, "records", name] if name.ends_with(".json") => {
                with_records.insert((*sub).to_owned());
            }
            _ => {}
        }
    }
    with_dumps.intersection(&with_records).cloned().collect()
}

/// Why a prune stopped. Deletions done before the failure stay done; the error lists them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PruneError {
    /// The store failed (listing, or a delete after `deleted` had gone).
    #[error("pruning failed{}", deleted_so_far(deleted))]
    Store {
        /// Dumps deleted before the failure.
        deleted: Vec<String>,
        /// The cause.
        #[source]
        source: litemaas_s3::Error,
    },
    /// The retention options are unusable.
    #[error("invalid retention options")]
    Options(#[from] litemaas_retention::Error),
    /// The run was cancelled (a signal, its deadline, or its Lease lost) before every delete was done: no
    /// further object was deleted once it was.
    #[error(
        "pruning stopped (the run was cancelled: a signal, its deadline or a lost Lease){}",
        deleted_so_far(deleted)
    )]
    Stopped {
        /// Dumps deleted before the stop.
        deleted: Vec<String>,
    },
}

impl From<litemaas_s3::Error> for PruneError {
    fn from(source: litemaas_s3::Error) -> Self {
        PruneError::Store {
            deleted: Vec::new(),
            source,
        }
    }
}

/// ` after deleting a, b` or ` (nothing was deleted)`.
pub(crate) fn deleted_so_far(deleted: &[String]) -> String {
    if deleted.is_empty() {
        " (nothing was deleted)".to_owned()
    } else {
        format!(" after deleting {}", deleted.join(", "))
    }
}

/// What a prune did (or, in a dry run, would do).
#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    /// Nothing was changed.
    pub dry_run: bool,
    /// Every dump with its decision.
    pub plan: Plan,
    /// Dumps deleted (with their records).
    pub deleted: Vec<String>,
    /// Abandoned multipart uploads aborted.
    pub aborted_uploads: Vec<PendingUpload>,
}

/// Plans retention for the dumps under `prefix` and, unless `dry_run`, deletes what the plan
/// says, one object at a time, logging each with its reason; a dump's record goes after it.
/// Once `stop` is cancelled (a signal; a lost Lease) nothing more is deleted.
///
/// # Errors
/// Listing or deleting failed, or `stop` was cancelled; what was deleted before stays deleted
/// and is named.
pub async fn prune_dumps(
    store: &dyn ObjectStore,
    prefix: &str,
    options: &RetentionOptions,
    listing: &DumpListing,
    now: jiff::Timestamp,
    dry_run: bool,
    stop: &CancellationToken,
) -> Result<PruneReport, PruneError> {
    let items = dump_items(store, prefix, listing).await?;
    let plan = options.plan(&items, now)?;
    let mut deleted = Vec::new();
    for decision in plan.decisions.iter().filter(|d| d.action == Action::Delete) {
        if dry_run {
            tracing::info!(key = decision.id, reasons = decision.why(), "would delete");
            continue;
        }
        if stop.is_cancelled() {
            return Err(PruneError::Stopped { deleted });
        }
        let gone = async {
            store.delete(&decision.id).await?;
            store.delete(&record_key(&decision.id)).await
        };
        if let Err(source) = gone.await {
            return Err(PruneError::Store { deleted, source });
        }
        tracing::info!(key = decision.id, reasons = decision.why(), "deleted");
        deleted.push(decision.id.clone());
    }
    Ok(PruneReport {
        dry_run,
        plan,
        deleted,
        aborted_uploads: Vec::new(),
    })
}

/// Aborts the multipart uploads under `prefix` started more than `older_than` before `now`
/// (a crash leaves them, and S3 bills their parts); younger ones may belong to a running backup.
///
/// # Errors
/// Listing or aborting failed.
pub async fn abort_stale_uploads(
    store: &dyn ObjectStore,
    prefix: &str,
    older_than: jiff::SignedDuration,
    now: jiff::Timestamp,
    dry_run: bool,
) -> litemaas_s3::Result<Vec<PendingUpload>> {
    let dir = dir_of(prefix);
    let mut aborted = Vec::new();
    for upload in store.list_pending_uploads(&dir).await? {
        if now.duration_since(upload.initiated) <= older_than {
            continue;
        }
        if !dry_run {
            store.abort_pending_upload(&upload).await?;
        }
        tracing::info!(key = upload.key, initiated = %upload.initiated, dry_run, "aborted an abandoned multipart upload");
        aborted.push(upload);
    }
    Ok(aborted)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use bytes::Bytes;
    use litemaas_s3::{GetResult, MemoryStore, Metadata, MultipartUpload};

    use super::*;

    /// A memory store whose deletes fail once `allowed` of them went through; each delete
    /// cancels `stop_on_delete` (a Lease lost, or a signal, while pruning).
    #[derive(Debug)]
    struct FailingDeletes {
        inner: MemoryStore,
        allowed: AtomicUsize,
        stop_on_delete: CancellationToken,
    }

    #[async_trait]
    impl ObjectStore for FailingDeletes {
        fn describe(&self) -> String {
            self.inner.describe()
        }
        async fn check(&self) -> litemaas_s3::Result<()> {
            Ok(())
        }
        async fn put(&self, key: &str, data: Bytes) -> litemaas_s3::Result<()> {
            self.inner.put(key, data).await
        }
        async fn put_multipart_with(
            &self,
            key: &str,
            metadata: &Metadata,
        ) -> litemaas_s3::Result<Box<dyn MultipartUpload>> {
            self.inner.put_multipart_with(key, metadata).await
        }
        async fn get(&self, key: &str) -> litemaas_s3::Result<GetResult> {
            self.inner.get(key).await
        }
        async fn head(&self, key: &str) -> litemaas_s3::Result<ObjectMeta> {
            self.inner.head(key).await
        }
        async fn list(&self, prefix: &str) -> litemaas_s3::Result<Vec<ObjectMeta>> {
            self.inner.list(prefix).await
        }
        async fn delete(&self, key: &str) -> litemaas_s3::Result<()> {
            if self
                .allowed
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_err()
            {
                return Err(litemaas_s3::Error::Internal(
                    "injected delete failure".into(),
                ));
            }
            self.stop_on_delete.cancel();
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

    /// Five monthly dumps with their records, in a store whose deletes fail after `allowed`.
    async fn five_dumps(allowed: usize) -> FailingDeletes {
        let store = FailingDeletes {
            inner: MemoryStore::new(),
            allowed: AtomicUsize::new(allowed),
            stop_on_delete: CancellationToken::new(),
        };
        for month in 1..=5 {
            let key = format!("p/database-2026{month:02}01-000000.sql.gz");
            store.put(&key, Bytes::from_static(b"dump")).await.unwrap();
            store
                .put(&record_key(&key), Bytes::from_static(b"{}"))
                .await
                .unwrap();
        }
        store
    }

    /// Prunes `store`'s five dumps down to the last two, stopped by `stop`.
    async fn keep_two(
        store: &FailingDeletes,
        stop: &CancellationToken,
    ) -> Result<PruneReport, PruneError> {
        let rules = RetentionOptions {
            keep_last: Some(2),
            ..RetentionOptions::default()
        };
        let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        prune_dumps(
            store,
            "p",
            &rules,
            &DumpListing::default(),
            now,
            false,
            stop,
        )
        .await
    }

    /// Deletes fail half-way: the error lists what was deleted before, never "nothing".
    #[tokio::test]
    async fn a_prune_failing_half_way_says_what_it_deleted() {
        // The first dump and its record go; the second dump's delete fails.
        let store = five_dumps(2).await;
        let err = keep_two(&store, &CancellationToken::new())
            .await
            .unwrap_err();
        let PruneError::Store { deleted, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(deleted.len(), 1);
        assert!(
            err.to_string()
                .starts_with(&format!("pruning failed after deleting {}", deleted[0])),
            "{err}"
        );
    }

    /// The run is stopped (its Lease lost) during the first delete: that dump and its record
    /// go, nothing after them, and the error names what was deleted.
    #[tokio::test]
    async fn a_prune_stopped_half_way_deletes_nothing_more() {
        let store = five_dumps(usize::MAX).await;
        let stop = store.stop_on_delete.clone();
        let err = keep_two(&store, &stop).await.unwrap_err();
        let PruneError::Stopped { deleted } = &err else {
            panic!("{err:?}")
        };
        // The plan lists the newest first: March goes, January and February stay.
        assert_eq!(deleted, &["p/database-20260301-000000.sql.gz"]);
        assert_eq!(
            store.list("p/").await.unwrap().len(),
            8,
            "4 dumps, 4 records"
        );
        assert_eq!(
            err.to_string(),
            "pruning stopped (the run was cancelled: a signal, its deadline or a lost Lease) after deleting p/database-20260301-000000.sql.gz"
        );
    }

    #[test]
    fn dump_names_are_recognised() {
        let t = parse_dump_name("database-20251216-053856.sql.gz")
            .unwrap()
            .unwrap();
        assert_eq!(t.to_string(), "2025-12-16T05:38:56Z");
        assert!(
            parse_dump_name("database-20251216-053856.sql.zst")
                .unwrap()
                .is_some()
        );
        assert!(
            parse_dump_name("database-20251216-053856.sql")
                .unwrap()
                .is_some()
        );
        assert_eq!(
            parse_dump_name("database-20251345-999999.sql.gz"),
            Some(None)
        ); // looks like one, invalid date
        for other in [
            "database-latest.sql.gz",
            "notes.txt",
            "database-20251216-053856.sql.gz.json",
            "database-2025121-053856.sql.gz",
        ] {
            assert_eq!(parse_dump_name(other), None, "{other}");
        }
    }
}
