#![doc = include_str!("../README.md")]

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
