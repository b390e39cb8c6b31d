//! # litemaas-retention
//!
//! Which backups to keep and which to delete — as pure logic, with `now` passed in and a reason
//! for every decision, built so that it cannot make the mistakes backup tools are known for:
//!
//! - the newest **complete** backup is never deleted, whatever the rules say;
//! - failed or not-ready backups never count toward a keep rule (a run of failures cannot push
//!   the good backups out), and are deleted only once a newer complete backup exists;
//! - an item whose time could not be read is never deleted;
//! - the plan does not depend on the order of the input, applying it twice deletes nothing more
//!   the second time, and moving `now` forward never brings a deleted item back.
//!
//! Rules combine as in restic's `forget`: an item is kept if any rule keeps it.
//!
//! ```
//! use jiff::Timestamp;
//! use litemaas_retention::{Item, RetentionOptions, State};
//!
//! let t = |s: &str| s.parse::<Timestamp>().unwrap();
//! let items = vec![
//!     Item::new("database-20250101-020000.sql.gz", Some(t("2025-01-01T02:00:00Z")), State::Complete),
//!     Item::new("database-20250201-020000.sql.gz", Some(t("2025-02-01T02:00:00Z")), State::Complete),
//!     Item::new("database-20250301-020000.sql.gz", Some(t("2025-03-01T02:00:00Z")), State::Failed),
//! ];
//! let options = RetentionOptions { keep_last: Some(1), ..RetentionOptions::default() };
//! let plan = options.plan(&items, t("2025-03-02T00:00:00Z")).unwrap();
//! let deleted: Vec<_> = plan.deletions().map(|d| d.id.as_str()).collect();
//! // The failed one does not count; the newest complete one is kept.
//! assert_eq!(deleted, ["database-20250101-020000.sql.gz"]);
//! println!("{plan}");
//! ```

mod options;
mod plan;

pub use options::RetentionOptions;
pub use plan::{Action, Decision, Plan, Reason};

/// What is known of one backup.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Item {
    /// Its identifier: an object key or a snapshot name.
    pub id: String,
    /// When it was taken; `None` when that could not be read (such items are never deleted).
    pub time: Option<jiff::Timestamp>,
    /// Whether it is a usable backup.
    pub state: State,
}

impl Item {
    /// An item.
    pub fn new(id: impl Into<String>, time: Option<jiff::Timestamp>, state: State) -> Self {
        Self {
            id: id.into(),
            time,
            state,
        }
    }
}

/// Whether a backup can be restored from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Complete and verified (a dump with its integrity record, a snapshot `readyToUse`).
    Complete,
    /// Failed or incomplete (an empty object, a snapshot with `status.error`).
    Failed,
    /// Not ready yet (a snapshot still being cut); may be in progress.
    NotReady,
}

/// Invalid options.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// `keep-within` cannot be subtracted from `now`.
    #[error("keep-within {0} cannot be applied to the current time")]
    Within(String),
}
