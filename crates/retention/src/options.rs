//! The rules, as options for files (serde, kebab-case) and command lines (clap).

use jiff::Span;
use serde::{Deserialize, Serialize};

use crate::plan::{Plan, plan};
use crate::{Error, Item};

/// Retention rules. An item is kept if any rule keeps it; with no rule at all, only the newest
/// complete item (always kept) survives.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct RetentionOptions {
    /// Keep the newest N complete backups.
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    pub keep_last: Option<u32>,
    /// Keep complete backups younger than this (e.g. `90d`, `1y 6mo`, `36h`).
    #[cfg_attr(feature = "clap", arg(long, value_name = "DURATION"))]
    pub keep_within: Option<Span>,
    /// Keep the newest complete backup of each of the last N hours that have one.
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    pub keep_hourly: Option<u32>,
    /// … of each of the last N days.
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    pub keep_daily: Option<u32>,
    /// … of each of the last N ISO weeks.
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    pub keep_weekly: Option<u32>,
    /// … of each of the last N months.
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    pub keep_monthly: Option<u32>,
    /// … of each of the last N years.
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    pub keep_yearly: Option<u32>,
}

impl RetentionOptions {
    /// The original tool's policy for database dumps: keep the last 12.
    pub fn dumps() -> Self {
        Self {
            keep_last: Some(12),
            ..Self::default()
        }
    }

    /// The original tool's policy for volume snapshots: keep the last 3.
    pub fn snapshots() -> Self {
        Self {
            keep_last: Some(3),
            ..Self::default()
        }
    }

    /// Whether no rule is set (then a binary applies its default).
    pub fn is_empty(&self) -> bool {
        self.keep_last.is_none()
            && self.keep_within.is_none()
            && self.keep_hourly.is_none()
            && self.keep_daily.is_none()
            && self.keep_weekly.is_none()
            && self.keep_monthly.is_none()
            && self.keep_yearly.is_none()
    }

    /// These options, or `default` when none is set.
    pub fn or(self, default: Self) -> Self {
        if self.is_empty() { default } else { self }
    }

    /// Decides, for every item, keep or delete, and why.
    ///
    /// # Errors
    /// [`Error::Within`] when `keep-within` reaches before the representable range.
    pub fn plan(&self, items: &[Item], now: jiff::Timestamp) -> Result<Plan, Error> {
        plan(self, items, now)
    }
}
