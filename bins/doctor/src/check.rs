//! One checked prerequisite: what was checked, whether it passed, and on failure the exact fix.

use serde::Serialize;

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The prerequisite holds.
    Pass,
    /// It does not: the run would fail (or lose data) because of it.
    Fail,
    /// Could not be checked because an earlier check failed (e.g. no cluster access).
    Skipped,
}

/// One line of the doctor's report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Short, stable identifier, e.g. `s3.bucket` or `rbac.pods/exec.create`.
    pub id: String,
    /// What was checked, in words, e.g. `bucket "b" reachable (region eu-west-1)`.
    pub what: String,
    /// Pass, fail or skipped.
    pub outcome: Outcome,
    /// What was found (on success too: the region, the version, who we are).
    pub detail: String,
    /// On failure: the exact command or change that fixes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    /// A passed check.
    pub fn pass(id: impl Into<String>, what: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            what: what.into(),
            outcome: Outcome::Pass,
            detail: detail.into(),
            fix: None,
        }
    }

    /// A failed check, with its fix.
    pub fn fail(
        id: impl Into<String>,
        what: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            what: what.into(),
            outcome: Outcome::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    /// A check not run because `because` failed first.
    pub fn skipped(
        id: impl Into<String>,
        what: impl Into<String>,
        because: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            what: what.into(),
            outcome: Outcome::Skipped,
            detail: format!("not checked: {}", because.into()),
            fix: None,
        }
    }
}
