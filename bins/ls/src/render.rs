//! The listing as a table (like `aws s3 ls` and `oc get volumesnapshot`, sizes human-readable)
//! or as one JSON object.

use std::fmt::Write as _;

use litemaas_backup::inventory::{Checksum, Dump, Inventory, SnapshotInventory, Summary};

/// Everything one run lists.
#[derive(Debug)]
pub struct Listing<'a> {
    /// The dumps.
    pub inventory: &'a Inventory,
    /// The snapshots, with `--namespace`.
    pub snapshots: Option<&'a SnapshotInventory>,
    /// The newest usable backups.
    pub summary: &'a Summary,
    /// When the listing was made.
    pub now: jiff::Timestamp,
    /// Show what is not a backup too.
    pub all: bool,
}

/// `1.6 MiB`, as `aws s3 ls --human-readable` writes sizes.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    #[allow(clippy::cast_precision_loss)] // one decimal is shown
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `45s`, `12m`, `3h 5m`, `4d 3h`: how long ago, to two units at most.
pub fn human_age(seconds: i64) -> String {
    if seconds < 0 {
        return "future".into();
    }
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds / 3_600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, 0) => format!("{h}h"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, 0, _) => format!("{d}d"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

fn time(t: Option<jiff::Timestamp>) -> String {
    t.map_or_else(
        || "-".into(),
        |t| t.strftime("%Y-%m-%d %H:%M:%S").to_string(),
    )
}

/// Rows aligned in columns two spaces apart (the last column unpadded).
fn columns(rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ", width = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

impl Listing<'_> {
    fn age(&self, t: Option<jiff::Timestamp>) -> String {
        t.map_or_else(
            || "-".into(),
            |t| human_age(self.now.duration_since(t).as_secs()),
        )
    }

    fn dump_row(&self, d: &Dump) -> Vec<String> {
        vec![
            time(d.time),
            self.age(d.time),
            d.size.map_or_else(|| "-".into(), human_size),
            d.state.as_str().into(),
            d.compression.into(),
            d.checksum.word().into(),
            d.database.clone().unwrap_or_else(|| "-".into()),
            d.name.clone(),
        ]
    }

    /// The human table, the footer and the summary line.
    pub fn table(&self) -> String {
        let inv = self.inventory;
        let mut out = String::new();
        let dir = if inv.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", inv.prefix)
        };
        let _ = writeln!(out, "Dumps in {}/{dir}:", inv.store);
        if inv.dumps.is_empty() {
            out.push_str("  (none)\n");
        } else {
            let header = [
                "TIME (UTC)",
                "AGE",
                "SIZE",
                "STATE",
                "CODEC",
                "SHA-256",
                "DATABASE",
                "KEY",
            ];
            let rows: Vec<Vec<String>> = std::iter::once(header.map(String::from).to_vec())
                .chain(inv.dumps.iter().map(|d| self.dump_row(d)))
                .collect();
            out.push_str(&columns(&rows));
        }
        let counts: Vec<String> = inv
            .counts_by_state()
            .into_iter()
            .map(|(state, n)| format!("{n} {state}"))
            .collect();
        if !counts.is_empty() {
            let _ = writeln!(out, "{} dump(s): {}", inv.dumps.len(), counts.join(", "));
        }
        let mismatched = inv
            .dumps
            .iter()
            .filter(|d| !matches!(d.checksum, Checksum::None | Checksum::Recorded { .. }))
            .count();
        if mismatched > 0 {
            let _ = writeln!(
                out,
                "WARNING: {mismatched} dump(s) do not match their integrity record (SHA-256 column \
                 MISMATCH or unreadable): a restore of them fails its checks"
            );
        }
        if self.all && !inv.foreign.is_empty() {
            let _ = writeln!(out, "\nNot dumps (left alone by prune and restore):");
            let rows: Vec<Vec<String>> =
                std::iter::once(["SIZE", "KEY", "WHY"].map(String::from).to_vec())
                    .chain(inv.foreign.iter().map(|f| {
                        vec![
                            f.size.map_or_else(|| "-".into(), human_size),
                            f.key.clone(),
                            f.why.into(),
                        ]
                    }))
                    .collect();
            out.push_str(&columns(&rows));
        } else if !inv.foreign.is_empty() {
            let _ = writeln!(
                out,
                "{} other object(s) under the prefix are not dumps (--all shows them)",
                inv.foreign.len()
            );
        }
        if let Some(snaps) = self.snapshots {
            let _ = writeln!(
                out,
                "\nVolumeSnapshots in namespace {} (claim {}):",
                snaps.namespace, snaps.claim
            );
            let mut shown: Vec<_> = snaps.snapshots.iter().collect();
            if self.all {
                shown.extend(&snaps.others);
                // Newest first, as each list already is.
                shown.sort_by(|a, b| (b.created, &b.name).cmp(&(a.created, &a.name)));
            }
            if shown.is_empty() {
                out.push_str("  (none)\n");
            } else {
                let header = [
                    "CREATED (UTC)",
                    "AGE",
                    "READYTOUSE",
                    "RESTORESIZE",
                    "STATE",
                    "ORIGIN",
                    "CLAIM",
                    "NAME",
                    "ERROR",
                ];
                let rows: Vec<Vec<String>> = std::iter::once(header.map(String::from).to_vec())
                    .chain(shown.iter().map(|s| {
                        vec![
                            time(s.created),
                            self.age(s.created),
                            s.ready_to_use.to_string(),
                            s.restore_size.clone().unwrap_or_else(|| "-".into()),
                            match s.state {
                                litemaas_backup::retention::State::Complete => "ready",
                                litemaas_backup::retention::State::Failed => "failed",
                                litemaas_backup::retention::State::NotReady => "not-ready",
                            }
                            .into(),
                            serde_json::to_value(s.origin)
                                .ok()
                                .and_then(|v| v.as_str().map(str::to_owned))
                                .unwrap_or_default(),
                            s.claim.clone().unwrap_or_else(|| "-".into()),
                            s.name.clone(),
                            s.error.clone().unwrap_or_default(),
                        ]
                    }))
                    .collect();
                out.push_str(&columns(&rows));
            }
            if !self.all && !snaps.others.is_empty() {
                let _ = writeln!(
                    out,
                    "{} other snapshot(s) in the namespace, of other claims and not ours (--all shows them)",
                    snaps.others.len()
                );
            }
        }
        out.push('\n');
        out.push_str(&self.summary_line());
        out.push('\n');
        out
    }

    /// `newest usable dump: KEY (AGE ago); litellm: …; newest ready snapshot: NAME (AGE ago)`.
    fn summary_line(&self) -> String {
        let newest = |n: Option<&litemaas_backup::inventory::Newest>| match n {
            Some(n) => format!("{} ({} ago)", n.name, human_age(n.age_seconds)),
            None => "NONE".into(),
        };
        let mut parts = vec![format!(
            "newest usable dump: {}",
            newest(self.summary.newest_dump.as_ref())
        )];
        for (folder, n) in &self.summary.newest_dump_by_folder {
            parts.push(format!("{folder}: {}", newest(n.as_ref())));
        }
        if self.snapshots.is_some() {
            parts.push(format!(
                "newest ready snapshot: {}",
                newest(self.summary.newest_snapshot.as_ref())
            ));
        }
        parts.join("; ")
    }

    /// Everything as one JSON object; objects and snapshots that are not backups only with
    /// `--all` (their counts always).
    pub fn json(&self) -> serde_json::Value {
        let inv = self.inventory;
        let snapshots = self.snapshots.map(|s| {
            let mut v = serde_json::json!({
                "namespace": s.namespace,
                "claim": s.claim,
                "snapshots": s.snapshots,
                "others_count": s.others.len(),
            });
            if self.all {
                v["others"] = serde_json::json!(s.others);
            }
            v
        });
        let mut v = serde_json::json!({
            "store": inv.store,
            "prefix": inv.prefix,
            "listed_at": self.now,
            "dumps": inv.dumps,
            "uploads_listed": inv.uploads_listed,
            "foreign_count": inv.foreign.len(),
            "snapshots": snapshots,
            "summary": self.summary,
        });
        if self.all {
            v["foreign"] = serde_json::json!(inv.foreign);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_aws_s3_ls() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1024), "1.0 KiB");
        assert_eq!(human_size(1_677_722), "1.6 MiB");
        assert_eq!(human_size(10 << 30), "10.0 GiB");
    }

    #[test]
    fn ages_have_two_units_at_most() {
        assert_eq!(human_age(0), "0s");
        assert_eq!(human_age(59), "59s");
        assert_eq!(human_age(60 * 12 + 5), "12m");
        assert_eq!(human_age(3 * 3600), "3h");
        assert_eq!(human_age(3 * 3600 + 5 * 60), "3h 5m");
        assert_eq!(human_age(4 * 86_400 + 3 * 3600 + 59), "4d 3h");
        assert_eq!(human_age(400 * 86_400), "400d");
        assert_eq!(human_age(-5), "future");
    }
}
