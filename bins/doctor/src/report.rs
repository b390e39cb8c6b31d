//! The report: one line per check in order (PASS / FAIL / SKIP, the id, what was checked, what
//! was found, and under a failure its fix), or one JSON object.

use serde::Serialize;

use crate::check::{Check, Outcome};

/// Counts of each outcome.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// Passed checks.
    pub passed: usize,
    /// Failed checks.
    pub failed: usize,
    /// Checks not run because an earlier one failed.
    pub skipped: usize,
}

/// The whole report, as `--json` prints it.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Whether every check passed (the exit status is 0 exactly then).
    pub ok: bool,
    /// The counts.
    pub summary: Summary,
    /// Every check, in order.
    pub checks: Vec<Check>,
}

impl Report {
    /// The report of `checks`.
    pub fn new(checks: Vec<Check>) -> Self {
        let mut summary = Summary::default();
        for c in &checks {
            match c.outcome {
                Outcome::Pass => summary.passed += 1,
                Outcome::Fail => summary.failed += 1,
                Outcome::Skipped => summary.skipped += 1,
            }
        }
        Self {
            ok: summary.failed == 0 && summary.skipped == 0,
            summary,
            checks,
        }
    }

    /// The human report.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            let label = match c.outcome {
                Outcome::Pass => "PASS",
                Outcome::Fail => "FAIL",
                Outcome::Skipped => "SKIP",
            };
            out.push_str(&format!("{label} [{}] {}: {}\n", c.id, c.what, c.detail));
            if let Some(fix) = &c.fix {
                out.push_str(&format!("     fix: {fix}\n"));
            }
        }
        let s = &self.summary;
        out.push_str(&format!(
            "{} passed, {} failed, {} skipped\n",
            s.passed, s.failed, s.skipped
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_prints_its_fix_under_it_and_only_all_passed_is_ok() {
        let report = Report::new(vec![
            Check::pass("a", "first", "fine"),
            Check::fail("b", "second", "broken", "do this"),
            Check::skipped("c", "third", "b failed"),
        ]);
        assert!(!report.ok);
        let text = report.text();
        assert!(
            text.contains("FAIL [b] second: broken\n     fix: do this\n"),
            "{text}"
        );
        assert!(text.ends_with("1 passed, 1 failed, 1 skipped\n"), "{text}");
        assert!(Report::new(vec![Check::pass("a", "first", "fine")]).ok);
    }
}
