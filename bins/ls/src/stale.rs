//! `--stale AGE`: whether the newest usable backup of each kind is younger than a limit, for a
//! monitor that alerts on a schedule that silently stopped working.

use litemaas_backup::inventory::{Newest, Summary};

use crate::render::human_age;

/// A limit on the age of the newest backup: `35d`, `36h`, `5w`, `P35D` (days and weeks of 24 h;
/// months and years are refused, their length varies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxAge {
    /// The limit in seconds, more than zero.
    pub seconds: i64,
}

impl std::str::FromStr for MaxAge {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let span: jiff::Span = s
            .parse()
            .map_err(|e| format!("not a duration like 35d or 36h ({e})"))?;
        let seconds = span
            .total((
                jiff::Unit::Second,
                jiff::SpanRelativeTo::days_are_24_hours(),
            ))
            .map_err(|_| "months and years vary in length: give days (35d) or weeks".to_owned())?;
        if seconds < 1.0 {
            return Err("the limit must be more than zero".into());
        }
        Ok(Self {
            seconds: seconds as i64,
        })
    }
}

impl std::fmt::Display for MaxAge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&human_age(self.seconds))
    }
}

/// One kind of backup checked against the limit.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    /// `dump`, `dump of <folder>/`, `snapshot`.
    pub what: String,
    /// The newest usable one, if any.
    pub newest: Option<String>,
    /// Its age in seconds.
    pub age_seconds: Option<i64>,
    /// Whether it is missing or older than the limit.
    pub stale: bool,
}

impl Check {
    fn of(what: String, newest: Option<&Newest>, limit: MaxAge) -> Self {
        Self {
            what,
            newest: newest.map(|n| n.name.clone()),
            age_seconds: newest.map(|n| n.age_seconds),
            stale: newest.is_none_or(|n| n.age_seconds > limit.seconds),
        }
    }

    /// `STALE: newest complete dump k is 40d 2h old (limit 35d)`, or `ok: …`.
    pub fn line(&self, limit: MaxAge) -> String {
        let verdict = if self.stale { "STALE" } else { "ok" };
        match (&self.newest, self.age_seconds) {
            (Some(name), Some(age)) => format!(
                "{verdict}: newest {} {name} is {} old (limit {limit})",
                self.what,
                human_age(age)
            ),
            _ => format!("{verdict}: no usable {} at all (limit {limit})", self.what),
        }
    }
}

/// The checks: the main database's dumps, each second database's, and (when listed) the
/// snapshots.
pub fn checks(summary: &Summary, limit: MaxAge, snapshots: bool) -> Vec<Check> {
    let mut out = vec![Check::of(
        "dump".into(),
        summary.newest_dump.as_ref(),
        limit,
    )];
    for (folder, newest) in &summary.newest_dump_by_folder {
        out.push(Check::of(
            format!("dump in {folder}/"),
            newest.as_ref(),
            limit,
        ));
    }
    if snapshots {
        out.push(Check::of(
            "ready snapshot".into(),
            summary.newest_snapshot.as_ref(),
            limit,
        ));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_read_in_days_weeks_and_hours_and_months_are_refused() {
        assert_eq!("35d".parse::<MaxAge>().unwrap().seconds, 35 * 86_400);
        assert_eq!("36h".parse::<MaxAge>().unwrap().seconds, 36 * 3_600);
        assert_eq!("1w".parse::<MaxAge>().unwrap().seconds, 7 * 86_400);
        assert!("1mo".parse::<MaxAge>().unwrap_err().contains("months"));
        assert!("0d".parse::<MaxAge>().is_err());
        assert!("soon".parse::<MaxAge>().is_err());
    }

    #[test]
    fn a_missing_or_old_backup_is_stale_and_a_young_one_is_not() {
        let now: jiff::Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
        let at = |s: &str| Some(Newest::new("k", s.parse().unwrap(), now));
        let limit: MaxAge = "35d".parse().unwrap();
        let summary = Summary {
            newest_dump: at("2026-10-20T00:00:00Z"),
            newest_dump_by_folder: [("db2".to_owned(), at("2026-11-20T00:00:00Z"))].into(),
            newest_snapshot: None,
        };
        let checks = checks(&summary, limit, true);
        let stale: Vec<_> = checks.iter().map(|c| c.stale).collect();
        assert_eq!(stale, [true, false, true]);
        assert_eq!(
            checks[0].line(limit),
            "STALE: newest dump k is 42d old (limit 35d)"
        );
        assert_eq!(
            checks[2].line(limit),
            "STALE: no usable ready snapshot at all (limit 35d)"
        );
        assert!(!checks[1].line(limit).starts_with("STALE"));
    }
}
