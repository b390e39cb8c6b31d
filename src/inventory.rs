//! What backups exist: every dump in a store with its state, by the one rule that retention
//! ([`prune`](crate::prune)) and `--latest` of a restore ([`catalog`](crate::catalog)) use, and,
//! with the `kube` feature, the VolumeSnapshots of the database volume.
//!
//! The rule ([`classify`]): a dump whose integrity record exists is **complete**. Without a
//! record, an empty object is **empty** (failed); one that carries this tool's mark
//! ([`record::MARK`](crate::record::MARK)) is a **failed** run of ours; one without the mark was
//! made by the original tool, which wrote no records, and is **legacy**: it counts, like a
//! complete one. Open multipart uploads under the prefix are shown as **in progress** (younger
//! than [`ABANDONED_AFTER`]) or **abandoned** (what `litemaas-prune` aborts); they never count.
//!
//! [`Inventory::read`] lists the prefix once: the dumps directly under it, those of a second
//! database in `<prefix>/<database>/` (a folder with dumps and records, as
//! [`prune::dump_prefixes`](crate::prune::dump_prefixes) finds them), and everything else as
//! [`Foreign`] objects with the reason they are not dumps.
//!
//! ```
//! use bytes::Bytes;
//! use litemaas_backup::inventory::{DumpState, Inventory};
//! use litemaas_backup::store::{MemoryStore, ObjectStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! let store = MemoryStore::new();
//! // A dump of the original tool: no record, no mark.
//! store.put("p/database-20251216-053856.sql.gz", Bytes::from_static(b"dump")).await?;
//! store.put("p/notes.txt", Bytes::from_static(b"hello")).await?;
//! let now = jiff::Timestamp::from_second(1_767_225_600)?; // 2026-01-01
//! let inventory = Inventory::read(&store, "p", now).await?;
//! assert_eq!(inventory.dumps[0].state, DumpState::Legacy);
//! assert_eq!(inventory.foreign[0].key, "p/notes.txt");
//! assert_eq!(
//!     inventory.newest_usable(None).map(|d| d.key.as_str()),
//!     Some("p/database-20251216-053856.sql.gz")
//! );
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, BTreeSet};

use litemaas_retention::State;
use litemaas_s3::{ObjectMeta, ObjectStore};
use serde::Serialize;

use crate::prune::{database_folders, dir_of, parse_dump_name};
use crate::record::{IntegrityRecord, MARK, record_key};

/// An open multipart upload older than this is abandoned (a crash left it): the default of
/// `litemaas-prune --abort-uploads-older-than`. A younger one may be a backup running now.
pub const ABANDONED_AFTER: jiff::SignedDuration = jiff::SignedDuration::from_hours(24);

/// What a dump is, by the one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DumpState {
    /// Its integrity record exists.
    Complete,
    /// No record, no mark of ours, not empty: the original tool's dump. Counts.
    Legacy,
    /// No record, but our mark: a run of ours that failed after the object was complete.
    Failed,
    /// No record and no bytes.
    Empty,
    /// An open multipart upload younger than [`ABANDONED_AFTER`]: perhaps a backup running now.
    InProgress,
    /// An open multipart upload older than [`ABANDONED_AFTER`]: a crash left it.
    Abandoned,
}

impl DumpState {
    /// Whether it counts as a backup: toward retention, and for `--latest`.
    pub fn counts(self) -> bool {
        matches!(self, DumpState::Complete | DumpState::Legacy)
    }

    /// Retention's view: complete when it counts, failed otherwise.
    pub fn retention_state(self) -> State {
        if self.counts() {
            State::Complete
        } else {
            State::Failed
        }
    }

    /// The state's name as `--json` writes it (`in-progress`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            DumpState::Complete => "complete",
            DumpState::Legacy => "legacy",
            DumpState::Failed => "failed",
            DumpState::Empty => "empty",
            DumpState::InProgress => "in-progress",
            DumpState::Abandoned => "abandoned",
        }
    }
}

/// The one rule for a dump object: `has_record` says whether its integrity record exists.
/// Without one, the object's metadata is read (listings do not carry it).
///
/// # Errors
/// Reading the object's metadata failed (an object deleted since the listing is failed).
pub async fn classify(
    store: &dyn ObjectStore,
    object: &ObjectMeta,
    has_record: bool,
) -> litemaas_s3::Result<DumpState> {
    if has_record {
        return Ok(DumpState::Complete);
    }
    if object.size == 0 {
        return Ok(DumpState::Empty);
    }
    match store.head(&object.key).await {
        Ok(meta) if meta.metadata.contains_key(MARK) => Ok(DumpState::Failed),
        Ok(_) => Ok(DumpState::Legacy),
        // Deleted since the listing: nothing to count.
        Err(litemaas_s3::Error::NotFound { .. }) => Ok(DumpState::Failed),
        Err(e) => Err(e),
    }
}

/// What the integrity record says of the object's bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum Checksum {
    /// No record (the original tool's dumps, failed runs, uploads).
    None,
    /// A SHA-256 is recorded for exactly the object's size.
    Recorded {
        /// The SHA-256 (hex).
        sha256: String,
    },
    /// The record's size is not the object's: the object was replaced or cut since.
    SizeMismatch {
        /// The SHA-256 (hex) recorded.
        sha256: String,
        /// The size the record gives.
        recorded_bytes: u64,
    },
    /// The record exists but cannot be read as one.
    Unreadable {
        /// Why.
        message: String,
    },
}

impl Checksum {
    /// A short word for a table: `sha256`, `MISMATCH`, `unreadable`, `-`.
    pub fn word(&self) -> &'static str {
        match self {
            Checksum::None => "-",
            Checksum::Recorded { .. } => "sha256",
            Checksum::SizeMismatch { .. } => "MISMATCH",
            Checksum::Unreadable { .. } => "unreadable",
        }
    }
}

/// One dump (or an upload that would become one).
#[derive(Debug, Clone, Serialize)]
pub struct Dump {
    /// The object's key, prefix included.
    pub key: String,
    /// The key below the prefix, e.g. `database-20260101-020000.sql.gz` or
    /// `litellm/database-20260101-020000.sql.gz`.
    pub name: String,
    /// The second database's folder under the prefix (`None` for the dumps directly under it).
    pub folder: Option<String>,
    /// The database, as the record says, else the folder's name.
    pub database: Option<String>,
    /// When the dump was taken, from its name (UTC); `None` when the name's date is invalid.
    pub time: Option<jiff::Timestamp>,
    /// The object's size (`None` for an upload).
    pub size: Option<u64>,
    /// When the store last wrote the object.
    pub last_modified: Option<jiff::Timestamp>,
    /// When an upload was started, as the store reports it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initiated: Option<jiff::Timestamp>,
    /// `gzip`, `zstd` or `none`: from the record, else from the name's extension.
    pub compression: &'static str,
    /// What the record says of the bytes.
    pub checksum: Checksum,
    /// The state by the one rule.
    pub state: DumpState,
    /// Whether it counts (retention, `--latest`).
    pub counts: bool,
}

/// An object under the prefix that is not a dump or a dump's record.
#[derive(Debug, Clone, Serialize)]
pub struct Foreign {
    /// The key (or the key of an unfinished upload).
    pub key: String,
    /// Its size (`None` for an upload).
    pub size: Option<u64>,
    /// Why it is not a dump.
    pub why: &'static str,
}

/// Why the dumps could not be listed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InventoryError {
    /// The store failed.
    #[error("listing the backups in {store}/{prefix}")]
    Store {
        /// The store.
        store: String,
        /// The prefix.
        prefix: String,
        /// The cause.
        #[source]
        source: litemaas_s3::Error,
    },
}

/// Every dump under a prefix, newest first, and what else is there.
#[derive(Debug, Clone, Serialize)]
pub struct Inventory {
    /// The store, e.g. `s3://bucket`.
    pub store: String,
    /// The prefix (no trailing `/`).
    pub prefix: String,
    /// Dumps and uploads, newest first (by the name's time, then key); those without a valid
    /// time last.
    pub dumps: Vec<Dump>,
    /// Objects that are not dumps, by key.
    pub foreign: Vec<Foreign>,
    /// `false` when the store cannot list multipart uploads (s3rver, some gateways): uploads
    /// are then unknown, not absent.
    pub uploads_listed: bool,
}

/// `gzip`, `zstd` or `none` from a dump's name.
fn codec_of_name(name: &str) -> &'static str {
    if name.ends_with(".gz") {
        "gzip"
    } else if name.ends_with(".zst") {
        "zstd"
    } else {
        "none"
    }
}

/// Where a key under the prefix belongs.
enum Place<'a> {
    /// A dump of the folder (`None`: the prefix itself), with its name.
    Dump(Option<&'a str>, &'a str),
    /// A dump's record in the folder, with the dump's name.
    Record(Option<&'a str>, &'a str),
    /// Not a dump.
    Foreign(&'static str),
}

fn place<'a>(rest: &'a str, folders: &BTreeSet<String>) -> Place<'a> {
    let parts: Vec<&str> = rest.split('/').collect();
    let (folder, tail) = match parts.as_slice() {
        [_] | ["records", _] => (None, &parts[..]),
        [sub, ..] if folders.contains(*sub) => (Some(*sub), &parts[1..]),
        [sub, ..] if *sub == "records" => {
            return Place::Foreign("not named like a dump's record");
        }
        _ => {
            return Place::Foreign(
                "in a folder that is not a database's (no integrity records there)",
            );
        }
    };
    match tail {
        [name] if parse_dump_name(name).is_some() => Place::Dump(folder, name),
        [_] => Place::Foreign("not named like a dump"),
        ["records", record] => match record.strip_suffix(".json") {
            Some(name) if parse_dump_name(name).is_some() => Place::Record(folder, name),
            _ => Place::Foreign("not named like a dump's record"),
        },
        _ => Place::Foreign("not named like a dump"),
    }
}

impl Inventory {
    /// Lists `prefix` once and classifies what is there (each record-less dump's metadata and
    /// each record are read); `now` decides whether an upload is abandoned.
    ///
    /// # Errors
    /// The store failed. A store that cannot list multipart uploads is not an error
    /// ([`uploads_listed`](Self::uploads_listed) is `false`).
    pub async fn read(
        store: &dyn ObjectStore,
        prefix: &str,
        now: jiff::Timestamp,
    ) -> Result<Inventory, InventoryError> {
        let prefix = prefix.trim_matches('/').to_owned();
        let fail = |source| InventoryError::Store {
            store: store.describe(),
            prefix: prefix.clone(),
            source,
        };
        let dir = dir_of(&prefix);
        let objects = store.list(&dir).await.map_err(fail)?;
        let folders = database_folders(&dir, &objects);
        let keys: BTreeSet<&str> = objects.iter().map(|o| o.key.as_str()).collect();
        let mut dumps = Vec::new();
        let mut foreign = Vec::new();
        for object in &objects {
            let Some(rest) = object.key.strip_prefix(&dir) else {
                continue;
            };
            let (folder, name) = match place(rest, &folders) {
                Place::Dump(folder, name) => (folder, name),
                Place::Record(folder, name) => {
                    let dump = format!(
                        "{dir}{}{name}",
                        folder.map_or(String::new(), |f| format!("{f}/"))
                    );
                    if !keys.contains(dump.as_str()) {
                        foreign.push(Foreign {
                            key: object.key.clone(),
                            size: Some(object.size),
                            why: "an integrity record whose dump is gone",
                        });
                    }
                    continue;
                }
                Place::Foreign(why) => {
                    foreign.push(Foreign {
                        key: object.key.clone(),
                        size: Some(object.size),
                        why,
                    });
                    continue;
                }
            };
            let record_key = record_key(&object.key);
            let has_record = keys.contains(record_key.as_str());
            let state = classify(store, object, has_record).await.map_err(fail)?;
            let (checksum, record) = if has_record {
                read_record(store, &record_key, object.size)
                    .await
                    .map_err(fail)?
            } else {
                (Checksum::None, None)
            };
            dumps.push(Dump {
                key: object.key.clone(),
                name: rest.to_owned(),
                folder: folder.map(str::to_owned),
                database: record
                    .as_ref()
                    .and_then(|r| r.dump.database.clone())
                    .or(folder.map(str::to_owned)),
                time: parse_dump_name(name).flatten(),
                size: Some(object.size),
                last_modified: Some(object.last_modified),
                initiated: None,
                compression: record
                    .as_ref()
                    .map_or_else(|| codec_of_name(name), |r| r.compression.name()),
                checksum,
                state,
                counts: state.counts(),
            });
        }
        let uploads_listed = match store.list_pending_uploads(&dir).await {
            Ok(uploads) => {
                for upload in uploads {
                    let Some(rest) = upload.key.strip_prefix(&dir) else {
                        continue;
                    };
                    let Place::Dump(folder, name) = place(rest, &folders) else {
                        foreign.push(Foreign {
                            key: upload.key.clone(),
                            size: None,
                            why: "an unfinished upload not named like a dump",
                        });
                        continue;
                    };
                    let state = if now.duration_since(upload.initiated) > ABANDONED_AFTER {
                        DumpState::Abandoned
                    } else {
                        DumpState::InProgress
                    };
                    dumps.push(Dump {
                        key: upload.key.clone(),
                        name: rest.to_owned(),
                        folder: folder.map(str::to_owned),
                        database: folder.map(str::to_owned),
                        time: parse_dump_name(name).flatten(),
                        size: None,
                        last_modified: None,
                        initiated: Some(upload.initiated),
                        compression: codec_of_name(name),
                        checksum: Checksum::None,
                        state,
                        counts: false,
                    });
                }
                true
            }
            Err(e) if e.is_not_implemented() => false,
            Err(e) => return Err(fail(e)),
        };
        // Newest first; ties by key, the larger first (as `--latest` breaks them).
        dumps.sort_by(|a, b| (b.time, &b.key).cmp(&(a.time, &a.key)));
        let (timed, untimed): (Vec<Dump>, Vec<Dump>) =
            dumps.into_iter().partition(|d| d.time.is_some());
        foreign.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Inventory {
            store: store.describe(),
            prefix,
            dumps: timed.into_iter().chain(untimed).collect(),
            foreign,
            uploads_listed,
        })
    }

    /// The newest dump that counts in `folder` (`None`: the prefix itself, the main
    /// database): the one `litemaas-restore --latest` restores.
    pub fn newest_usable(&self, folder: Option<&str>) -> Option<&Dump> {
        self.dumps
            .iter()
            .find(|d| d.counts && d.time.is_some() && d.folder.as_deref() == folder)
    }

    /// The second databases' folders that hold dumps, in order.
    pub fn folders(&self) -> Vec<&str> {
        let set: BTreeSet<&str> = self
            .dumps
            .iter()
            .filter_map(|d| d.folder.as_deref())
            .collect();
        set.into_iter().collect()
    }

    /// How many dumps are in each state.
    pub fn counts_by_state(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for dump in &self.dumps {
            *counts.entry(dump.state.as_str()).or_default() += 1;
        }
        counts
    }
}

/// Reads the record at `key` and compares its size with the object's.
async fn read_record(
    store: &dyn ObjectStore,
    key: &str,
    size: u64,
) -> litemaas_s3::Result<(Checksum, Option<IntegrityRecord>)> {
    let bytes = match store.get_bytes(key).await {
        Ok(bytes) => bytes,
        // Deleted since the listing.
        Err(litemaas_s3::Error::NotFound { .. }) => {
            return Ok((
                Checksum::Unreadable {
                    message: "deleted while listing".into(),
                },
                None,
            ));
        }
        Err(e) => return Err(e),
    };
    Ok(match serde_json::from_slice::<IntegrityRecord>(&bytes) {
        Ok(record) if record.stored_bytes == size => (
            Checksum::Recorded {
                sha256: record.sha256.clone(),
            },
            Some(record),
        ),
        Ok(record) => (
            Checksum::SizeMismatch {
                sha256: record.sha256.clone(),
                recorded_bytes: record.stored_bytes,
            },
            Some(record),
        ),
        Err(e) => (
            Checksum::Unreadable {
                message: e.to_string(),
            },
            None,
        ),
    })
}

/// Where a VolumeSnapshot comes from.
#[cfg(feature = "kube")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SnapshotOrigin {
    /// A backup's (labelled `app=litemaas-backup`).
    Ours,
    /// A volume restore's safety copy (labelled `litemaas-backup/role=safety`).
    Safety,
    /// Neither: someone else made it.
    Foreign,
}

/// One VolumeSnapshot as `litemaas-ls` shows it.
#[cfg(feature = "kube")]
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotEntry {
    /// Its name.
    pub name: String,
    /// Who made it.
    pub origin: SnapshotOrigin,
    /// Its `backup-type` label (the schedule), if any.
    pub schedule: Option<String>,
    /// The claim it was taken of.
    pub claim: Option<String>,
    /// `status.readyToUse`.
    pub ready_to_use: bool,
    /// Retention's view ([`litemaas_snapshot::retention_item`]): complete (ready), failed
    /// (not ready, with an error) or not-ready.
    pub state: State,
    /// `status.restoreSize`.
    pub restore_size: Option<String>,
    /// `metadata.creationTimestamp`.
    pub created: Option<jiff::Timestamp>,
    /// `status.error.message`: the snapshotter's last error (a ready snapshot may keep an old one).
    pub error: Option<String>,
}

/// The VolumeSnapshots of a namespace, newest first.
#[cfg(feature = "kube")]
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotInventory {
    /// The namespace.
    pub namespace: String,
    /// The database's claim.
    pub claim: String,
    /// Every snapshot of the claim and every one labelled `app=litemaas-backup` or as a
    /// safety snapshot, newest first.
    pub snapshots: Vec<SnapshotEntry>,
    /// The namespace's other snapshots (of other claims, not ours), newest first.
    pub others: Vec<SnapshotEntry>,
    /// The name of the newest snapshot `litemaas-restore volume --latest` would restore
    /// ([`litemaas_snapshot::newest_restorable`]).
    pub newest_restorable: Option<String>,
}

#[cfg(feature = "kube")]
impl SnapshotInventory {
    /// Lists the namespace's snapshots (with `litemaas-snapshot`'s listing) and sorts them into
    /// the database's and the others.
    ///
    /// # Errors
    /// The API failed.
    pub async fn read(
        snapshots: &litemaas_snapshot::Snapshots,
        namespace: &str,
        claim: &str,
    ) -> litemaas_snapshot::Result<SnapshotInventory> {
        use litemaas_snapshot::volume::SAFETY_ROLE_LABEL;
        let all = snapshots.list("").await?;
        let (mut mine, mut others) = (Vec::new(), Vec::new());
        // The listing is oldest first.
        for snapshot in all.iter().rev() {
            let labels = snapshot.metadata.labels.clone().unwrap_or_default();
            let origin = if labels.get("app").map(String::as_str) == Some("litemaas-backup") {
                SnapshotOrigin::Ours
            } else if labels.get(SAFETY_ROLE_LABEL).map(String::as_str) == Some("safety") {
                SnapshotOrigin::Safety
            } else {
                SnapshotOrigin::Foreign
            };
            let status = snapshot.status.as_ref();
            let source = snapshot.spec.source.persistent_volume_claim_name.clone();
            let entry = SnapshotEntry {
                name: snapshot.metadata.name.clone().unwrap_or_default(),
                origin,
                schedule: labels.get("backup-type").cloned(),
                ready_to_use: status.and_then(|s| s.ready_to_use) == Some(true),
                state: litemaas_snapshot::retention_item(snapshot).state,
                restore_size: status.and_then(|s| s.restore_size.clone()),
                created: snapshot.metadata.creation_timestamp.as_ref().map(|t| t.0),
                error: status
                    .and_then(|s| s.error.as_ref())
                    .map(|e| e.message.clone().unwrap_or_else(|| "no message".into())),
                claim: source.clone(),
            };
            if origin != SnapshotOrigin::Foreign || source.as_deref() == Some(claim) {
                mine.push(entry);
            } else {
                others.push(entry);
            }
        }
        Ok(SnapshotInventory {
            namespace: namespace.to_owned(),
            claim: claim.to_owned(),
            snapshots: mine,
            others,
            newest_restorable: litemaas_snapshot::newest_restorable(&all, claim)
                .and_then(|s| s.metadata.name.clone()),
        })
    }

    /// The newest ready `app=litemaas-backup` snapshot of the claim: the one
    /// `litemaas-restore volume --latest` restores.
    pub fn newest_ready(&self) -> Option<&SnapshotEntry> {
        let name = self.newest_restorable.as_deref()?;
        self.snapshots.iter().find(|s| s.name == name)
    }
}

/// A backup's time and age, for the summary.
#[derive(Debug, Clone, Serialize)]
pub struct Newest {
    /// The dump's key or the snapshot's name.
    pub name: String,
    /// When it was taken.
    pub time: jiff::Timestamp,
    /// Seconds between then and the listing.
    pub age_seconds: i64,
}

impl Newest {
    /// `name`, taken at `time`, seen at `now`.
    pub fn new(name: &str, time: jiff::Timestamp, now: jiff::Timestamp) -> Self {
        Self {
            name: name.to_owned(),
            time,
            age_seconds: now.duration_since(time).as_secs(),
        }
    }
}

/// The newest usable backup of each kind: what a staleness check compares with its limit.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The main database's newest dump that counts (what `--latest` restores).
    pub newest_dump: Option<Newest>,
    /// The same for each second database's folder.
    pub newest_dump_by_folder: BTreeMap<String, Option<Newest>>,
    /// The newest ready snapshot of ours of the claim (with `--namespace`).
    pub newest_snapshot: Option<Newest>,
}

impl Summary {
    /// The summary of the dumps listed, seen at `now` (no snapshots yet: see
    /// [`with_snapshots`](Self::with_snapshots)).
    pub fn of(inventory: &Inventory, now: jiff::Timestamp) -> Summary {
        let newest = |folder| {
            inventory
                .newest_usable(folder)
                .and_then(|d| Some(Newest::new(&d.key, d.time?, now)))
        };
        Summary {
            newest_dump: newest(None),
            newest_dump_by_folder: inventory
                .folders()
                .into_iter()
                .map(|f| (f.to_owned(), newest(Some(f))))
                .collect(),
            newest_snapshot: None,
        }
    }

    /// The summary with the newest ready snapshot of `snapshots`, seen at `now`.
    #[cfg(feature = "kube")]
    pub fn with_snapshots(mut self, snapshots: &SnapshotInventory, now: jiff::Timestamp) -> Self {
        self.newest_snapshot = snapshots
            .newest_ready()
            .and_then(|s| Some(Newest::new(&s.name, s.created?, now)));
        self
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use litemaas_s3::{MemoryStore, UploadOptions, UploadWriter};

    use super::*;

    async fn ours(store: &MemoryStore, key: &str, data: &'static [u8]) {
        let upload = store
            .put_multipart_with(key, &crate::record::ours())
            .await
            .unwrap();
        let mut writer = UploadWriter::new(upload, UploadOptions::default());
        writer.write(Bytes::from_static(data)).await.unwrap();
        writer.finish().await.unwrap();
    }

    /// The one rule, case by case.
    #[tokio::test]
    async fn the_rule_tells_complete_legacy_failed_and_empty_apart() {
        let store = MemoryStore::new();
        ours(&store, "a", b"dump").await;
        store.put("b", Bytes::from_static(b"dump")).await.unwrap();
        store.put("c", Bytes::new()).await.unwrap();
        let head = |key: &'static str| {
            let store = &store;
            async move { store.head(key).await.unwrap() }
        };
        let cases = [
            ("a", true, DumpState::Complete),
            ("a", false, DumpState::Failed),
            ("b", false, DumpState::Legacy),
            ("c", false, DumpState::Empty),
            ("c", true, DumpState::Complete),
        ];
        for (key, has_record, expected) in cases {
            let object = head(key).await;
            assert_eq!(
                classify(&store, &object, has_record).await.unwrap(),
                expected,
                "{key} {has_record}"
            );
        }
        assert!(DumpState::Legacy.counts() && DumpState::Complete.counts());
        for s in [
            DumpState::Failed,
            DumpState::Empty,
            DumpState::InProgress,
            DumpState::Abandoned,
        ] {
            assert_eq!(s.retention_state(), State::Failed);
        }
    }

    #[tokio::test]
    async fn keys_are_placed_as_dumps_records_or_foreign() {
        let store = MemoryStore::new();
        for key in [
            "p/database-20260101-020000.sql.gz",
            "p/records/database-20260101-020000.sql.gz.json",
            "p/records/database-20250101-020000.sql.gz.json",
            "p/records/notes.json",
            "p/litellm/database-20260101-020000.sql.gz",
            "p/litellm/records/database-20260101-020000.sql.gz.json",
            "p/archive/database-20200101-000000.sql.gz",
            "p/database-latest.sql.gz",
        ] {
            store.put(key, Bytes::from_static(b"x")).await.unwrap();
        }
        let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let inv = Inventory::read(&store, "p/", now).await.unwrap();
        let dumps: Vec<(&str, Option<&str>)> = inv
            .dumps
            .iter()
            .map(|d| (d.name.as_str(), d.folder.as_deref()))
            .collect();
        assert_eq!(
            dumps,
            [
                ("litellm/database-20260101-020000.sql.gz", Some("litellm")),
                ("database-20260101-020000.sql.gz", None),
            ]
        );
        let foreign: Vec<(&str, &str)> = inv
            .foreign
            .iter()
            .map(|f| (f.key.as_str(), f.why))
            .collect();
        assert_eq!(
            foreign,
            [
                (
                    "p/archive/database-20200101-000000.sql.gz",
                    "in a folder that is not a database's (no integrity records there)"
                ),
                ("p/database-latest.sql.gz", "not named like a dump"),
                (
                    "p/records/database-20250101-020000.sql.gz.json",
                    "an integrity record whose dump is gone"
                ),
                ("p/records/notes.json", "not named like a dump's record"),
            ]
        );
        // The records are `{}`-less garbage here: unreadable, yet the dumps are complete.
        assert!(
            inv.dumps.iter().all(|d| d.state == DumpState::Complete
                && matches!(d.checksum, Checksum::Unreadable { .. }))
        );
    }
}
