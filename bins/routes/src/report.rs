//! The human-readable output: the audit table and the list of changes.

use std::fmt::Write;

use litemaas_routes::{Change, Finding, Source};

/// A value as written, quoted when it has spaces or is empty (so `5 min` and `` stand out).
fn shown(value: Option<&str>) -> String {
    match value {
        None => "(none)".into(),
        Some(v) if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()) => {
            format!("{v:?}")
        }
        Some(v) if v.chars().count() > 24 => {
            format!("{}…", v.chars().take(23).collect::<String>())
        }
        Some(v) => v.to_owned(),
    }
}

/// The audit as a table, then one line per route that needs attention.
pub fn table(findings: &[Finding]) -> String {
    let header = [
        "ROUTE",
        "HOST",
        "TLS",
        "TIMEOUT",
        "EFFECTIVE",
        "DESIRED",
        "STATUS",
    ];
    let rows: Vec<[String; 7]> = findings
        .iter()
        .map(|f| {
            [
                f.name.clone(),
                format!(
                    "{}{}",
                    f.host.as_deref().unwrap_or("-"),
                    f.path.as_deref().unwrap_or("")
                ),
                f.termination.to_string(),
                shown(f.value.as_deref()),
                match f.source {
                    Source::RouterDefault => format!("{} (default)", f.effective),
                    Source::Clipped => format!("{} (clipped)", f.effective),
                    Source::Annotation => f.effective.to_string(),
                },
                format!("{}{}", f.desired, if f.overridden { "*" } else { "" }),
                f.status.label().to_owned(),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (cell, width) in cells.iter().zip(&widths) {
            let _ = write!(text, "{cell:<width$}  ");
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
    if findings.iter().any(|f| f.overridden) {
        out.push_str("* per-route --timeout\n");
    }
    for f in findings.iter().filter(|f| !f.message.is_empty()) {
        let _ = writeln!(out, "{} [{}]: {}", f.name, f.status.label(), f.message);
    }
    out
}

/// One line per change: `route: annotation: before → after (why; effective before → after)`.
pub fn changes(changes: &[Change], dry_run: bool) -> String {
    let verb = if dry_run { "would set" } else { "set" };
    let mut out = String::new();
    for c in changes {
        let _ = writeln!(
            out,
            "{}: {verb} {}: {} → {} ({}; effective {} → {})",
            c.name,
            c.annotation,
            shown(c.before.as_deref()),
            c.after,
            c.reason.label().to_lowercase(),
            c.effective_before,
            c.effective_after,
        );
    }
    out
}
