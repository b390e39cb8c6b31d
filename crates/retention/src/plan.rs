//! The planning itself.

use std::collections::HashSet;
use std::fmt;

use jiff::tz::TimeZone;
use serde::Serialize;

use crate::{Error, Item, RetentionOptions, State};

/// Keep or delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Keep it.
    Keep,
    /// Delete it.
    Delete,
}

/// Why an item is kept or deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "rule", content = "value")]
pub enum Reason {
    /// Among the newest N complete items.
    Last(u32),
    /// Younger than keep-within.
    Within(String),
    /// Newest in its hour (of the last N).
    Hourly(u32),
    /// Newest in its day.
    Daily(u32),
    /// Newest in its ISO week.
    Weekly(u32),
    /// Newest in its month.
    Monthly(u32),
    /// Newest in its year.
    Yearly(u32),
    /// The newest complete item: never deleted.
    NewestComplete,
    /// Its time is unknown: never deleted.
    UnknownTime,
    /// Failed or not ready, but no complete item is newer: it may be in progress or the only copy.
    NoNewerComplete,
    /// Complete, but no rule keeps it.
    NoRuleKeeps,
    /// Failed or not ready, and a newer complete item exists.
    Superseded,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Last(n) => write!(f, "last {n}"),
            Reason::Within(s) => write!(f, "within {s}"),
            Reason::Hourly(n) => write!(f, "hourly {n}"),
            Reason::Daily(n) => write!(f, "daily {n}"),
            Reason::Weekly(n) => write!(f, "weekly {n}"),
            Reason::Monthly(n) => write!(f, "monthly {n}"),
            Reason::Yearly(n) => write!(f, "yearly {n}"),
            Reason::NewestComplete => f.write_str("newest complete backup"),
            Reason::UnknownTime => f.write_str("time unknown"),
            Reason::NoNewerComplete => f.write_str("not complete, but nothing newer is"),
            Reason::NoRuleKeeps => f.write_str("no rule keeps it"),
            Reason::Superseded => f.write_str("not complete, and a newer complete backup exists"),
        }
    }
}

/// The decision for one item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The item's id.
    pub id: String,
    /// Its time.
    pub time: Option<jiff::Timestamp>,
    /// Its state.
    pub state: State,
    /// Keep or delete.
    pub action: Action,
    /// Every rule that decided it.
    pub reasons: Vec<Reason>,
}

impl Decision {
    /// The reasons, for people: `last 12, monthly 12`.
    pub fn why(&self) -> String {
        self.reasons
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Every item with its decision, newest first (items of unknown time last, by id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// The decisions.
    pub decisions: Vec<Decision>,
}

impl Plan {
    /// The items to delete.
    pub fn deletions(&self) -> impl Iterator<Item = &Decision> {
        self.decisions.iter().filter(|d| d.action == Action::Delete)
    }

    /// The items to keep.
    pub fn keeps(&self) -> impl Iterator<Item = &Decision> {
        self.decisions.iter().filter(|d| d.action == Action::Keep)
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.decisions {
            let action = match d.action {
                Action::Keep => "keep  ",
                Action::Delete => "delete",
            };
            let state = match d.state {
                State::Complete => "complete",
                State::Failed => "failed",
                State::NotReady => "not-ready",
            };
            writeln!(f, "{action} {:<48} {state:<9} {}", d.id, d.why())?;
        }
        Ok(())
    }
}

/// Calendar buckets, in UTC.
#[derive(Clone, Copy)]
enum Period {
    Hour,
    Day,
    Week,
    Month,
    Year,
}

fn bucket(t: jiff::Timestamp, period: Period) -> (i16, i16, i8, i8) {
    let z = t.to_zoned(TimeZone::UTC);
    match period {
        Period::Hour => (z.year(), i16::from(z.month()), z.day(), z.hour()),
        Period::Day => (z.year(), i16::from(z.month()), z.day(), 0),
        Period::Week => {
            let w = z.date().iso_week_date();
            (w.year(), i16::from(w.week()), 0, 0)
        }
        Period::Month => (z.year(), i16::from(z.month()), 0, 0),
        Period::Year => (z.year(), 0, 0, 0),
    }
}

/// A calendar rule: how many buckets, their period, and the reason it gives.
type PeriodicRule = (Option<u32>, Period, fn(u32) -> Reason);

pub(crate) fn plan(
    options: &RetentionOptions,
    items: &[Item],
    now: jiff::Timestamp,
) -> Result<Plan, Error> {
    // One canonical order, whatever the input's: newest first, ties by id; unknown times last.
    let mut sorted: Vec<&Item> = items.iter().collect();
    sorted.sort_by(|a, b| match (a.time, b.time) {
        (Some(x), Some(y)) => y.cmp(&x).then_with(|| b.id.cmp(&a.id)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.id.cmp(&b.id),
    });

    let cutoff = match &options.keep_within {
        Some(span) => Some(
            now.to_zoned(TimeZone::UTC)
                .checked_sub(*span)
                .map_err(|_| Error::Within(format!("{span:#}")))?
                .timestamp(),
        ),
        None => None,
    };
    let complete: Vec<(usize, jiff::Timestamp)> = sorted
        .iter()
        .enumerate()
        .filter(|(_, i)| i.state == State::Complete)
        .filter_map(|(n, i)| i.time.map(|t| (n, t)))
        .collect();
    let newest_complete = complete.first().map(|&(n, t)| (n, t));

    let mut reasons: Vec<Vec<Reason>> = vec![Vec::new(); sorted.len()];
    if let Some(n) = options.keep_last {
        for &(idx, _) in complete.iter().take(n as usize) {
            reasons[idx].push(Reason::Last(n));
        }
    }
    if let (Some(cutoff), Some(span)) = (cutoff, &options.keep_within) {
        for &(idx, t) in &complete {
            if t >= cutoff {
                reasons[idx].push(Reason::Within(format!("{span:#}")));
            }
        }
    }
    let periodic: [PeriodicRule; 5] = [
        (options.keep_hourly, Period::Hour, Reason::Hourly),
        (options.keep_daily, Period::Day, Reason::Daily),
        (options.keep_weekly, Period::Week, Reason::Weekly),
        (options.keep_monthly, Period::Month, Reason::Monthly),
        (options.keep_yearly, Period::Year, Reason::Yearly),
    ];
    for (count, period, reason) in periodic {
        let Some(n) = count else { continue };
        let mut seen = HashSet::new();
        for &(idx, t) in &complete {
            if seen.len() == n as usize {
                break;
            }
            if seen.insert(bucket(t, period)) {
                reasons[idx].push(reason(n));
            }
        }
    }

    let decisions = sorted
        .iter()
        .zip(reasons)
        .enumerate()
        .map(|(idx, (item, mut why))| {
            let action = match (item.time, item.state) {
                (None, _) => {
                    why = vec![Reason::UnknownTime];
                    Action::Keep
                }
                (Some(_), State::Complete) => {
                    if newest_complete.is_some_and(|(n, _)| n == idx) {
                        why.push(Reason::NewestComplete);
                    }
                    if why.is_empty() {
                        why.push(Reason::NoRuleKeeps);
                        Action::Delete
                    } else {
                        Action::Keep
                    }
                }
                (Some(t), State::Failed | State::NotReady) => match newest_complete {
                    Some((_, newest)) if newest > t => {
                        why = vec![Reason::Superseded];
                        Action::Delete
                    }
                    _ => {
                        why = vec![Reason::NoNewerComplete];
                        Action::Keep
                    }
                },
            };
            Decision {
                id: item.id.clone(),
                time: item.time,
                state: item.state,
                action,
                reasons: why,
            }
        })
        .collect();
    Ok(Plan { decisions })
}
