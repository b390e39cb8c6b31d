//! The integrity record written beside each dump, and the naming of dumps and records.
//!
//! A dump `<prefix>/database-YYYYMMDD-HHMMSS.sql.gz` has its record at
//! `<prefix>/records/database-YYYYMMDD-HHMMSS.sql.gz.json`, written only after the dump object is
//! complete. Records live under their own sub-prefix so that the original tool's listing,
//! `aws s3 ls s3://BUCKET/<prefix>/ | grep database-`, still shows exactly the dumps.

use litemaas_dump::{Compression, DumpInfo};
use serde::{Deserialize, Serialize};

/// The version of the record format written by this build.
pub const RECORD_FORMAT: u32 = 1;

/// Everything needed to trust, and later verify, one stored dump.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct IntegrityRecord {
    /// Record format version ([`RECORD_FORMAT`]).
    pub format: u32,
    /// The dump object's key.
    pub key: String,
    /// SHA-256 of the object's bytes (hex): `sha256sum` of the downloaded file.
    pub sha256: String,
    /// The object's size.
    pub stored_bytes: u64,
    /// The uncompressed dump's size.
    pub raw_bytes: u64,
    /// The codec.
    pub compression: Compression,
    /// Multipart upload parts.
    pub parts: u32,
    /// What the dump program reported (versions, database).
    pub dump: DumpInfo,
    /// When the dump started (UTC).
    pub started_at: jiff::Timestamp,
    /// When the object was complete (UTC).
    pub finished_at: jiff::Timestamp,
    /// `litemaas-backup <version>`.
    pub tool: String,
    /// Rows per table, as the dump's COPY blocks carried them (`schema.table` as pg_dump
    /// writes it); a test restore compares them. Absent in records of older versions and for
    /// sources that are not pg_dump.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables: Option<std::collections::BTreeMap<String, u64>>,
}

/// The object metadata key that marks a dump as made by this tool (S3 `x-amz-meta-litemaas-backup`).
pub const MARK: &str = "litemaas-backup";

/// The metadata every dump object of this tool carries from its creation: with it, a dump
/// without an integrity record is known to be a failed run of ours, not a dump of the original
/// tool (which has neither).
pub fn ours() -> litemaas_s3::Metadata {
    [(MARK.to_owned(), env!("CARGO_PKG_VERSION").to_owned())].into()
}

/// The key of the dump taken at `at`: `<prefix>/database-YYYYMMDD-HHMMSS.sql<ext>` (UTC).
pub fn dump_key(prefix: &str, at: jiff::Timestamp, compression: Compression) -> String {
    let prefix = prefix.trim_end_matches('/');
    let name = format!(
        "database-{}.sql{}",
        at.strftime("%Y%m%d-%H%M%S"),
        compression.extension()
    );
    if prefix.is_empty() {
        name
    } else {
        format!("{prefix}/{name}")
    }
}

/// The key of the record of the dump at `dump_key`.
pub fn record_key(dump_key: &str) -> String {
    match dump_key.rsplit_once('/') {
        Some((prefix, name)) => format!("{prefix}/records/{name}.json"),
        None => format!("records/{dump_key}.json"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_original_naming() {
        let at = jiff::Timestamp::from_second(1_765_863_536).unwrap(); // 2025-12-16 05:38:56 UTC
        let key = dump_key("litemaas-backups/", at, Compression::default());
        assert_eq!(key, "litemaas-backups/database-20251216-053856.sql.gz");
        assert_eq!(
            record_key(&key),
            "litemaas-backups/records/database-20251216-053856.sql.gz.json"
        );
        assert_eq!(
            dump_key("", at, Compression::Zstd { level: 3 }),
            "database-20251216-053856.sql.zst"
        );
        assert_eq!(
            dump_key("p", at, Compression::None),
            "p/database-20251216-053856.sql"
        );
    }
}
