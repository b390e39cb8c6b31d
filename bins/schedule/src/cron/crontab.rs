//! The user's crontab, through the real `crontab` command (`crontab -l`, `crontab -`), and the
//! edits made to it: only the line ending in `# litemaas-backup namespace=NS` is added, replaced
//! or removed; every other byte stays as it was.

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::Context;

use super::line::{MARK, marker};

/// The `crontab` command and its leading arguments (`crontab`, or `busybox crontab -c DIR`).
#[derive(Debug, Clone)]
pub struct CrontabCommand {
    program: String,
    args: Vec<String>,
}

impl CrontabCommand {
    /// Splits `spec` on white space: a program and its arguments (no shell quoting).
    ///
    /// # Errors
    /// An empty command.
    pub fn parse(spec: &str) -> anyhow::Result<Self> {
        let mut words = spec.split_whitespace().map(str::to_owned);
        let program = words
            .next()
            .ok_or_else(|| anyhow::anyhow!("--crontab-command is empty"))?;
        Ok(Self {
            program,
            args: words.collect(),
        })
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args).env("LC_ALL", "C");
        command
    }

    fn shown(&self) -> String {
        std::iter::once(self.program.as_str())
            .chain(self.args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The crontab as `crontab -l` prints it; "no crontab for USER" is an empty crontab.
    ///
    /// # Errors
    /// The command cannot run, or fails for another reason (its message quoted).
    pub fn read(&self) -> anyhow::Result<String> {
        let output = self
            .command()
            .arg("-l")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run `{} -l`", self.shown()))?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            // vixie/cronie/Debian: "no crontab for USER"; busybox: "can't open 'USER': No such
            // file or directory".
            if stderr.contains("no crontab for") || stderr.contains("No such file or directory") {
                return Ok(String::new());
            }
            anyhow::bail!(
                "`{} -l` failed ({}): {}",
                self.shown(),
                output.status,
                stderr.trim()
            );
        }
        String::from_utf8(output.stdout)
            .with_context(|| format!("`{} -l` printed something that is not UTF-8", self.shown()))
    }

    /// Installs `text` as the whole crontab (`crontab -`).
    ///
    /// # Errors
    /// The command cannot run or refuses the crontab (its message quoted).
    pub fn write(&self, text: &str) -> anyhow::Result<()> {
        let mut child = self
            .command()
            .arg("-")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run `{} -`", self.shown()))?;
        let mut stdin = child.stdin.take().context("crontab's stdin")?;
        let written = stdin.write_all(text.as_bytes());
        drop(stdin);
        let output = child
            .wait_with_output()
            .with_context(|| format!("`{} -` did not finish", self.shown()))?;
        if !output.status.success() {
            anyhow::bail!(
                "`{} -` refused the new crontab ({}): {}",
                self.shown(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        written.with_context(|| format!("cannot write to `{} -`", self.shown()))
    }
}

/// One of our lines in a crontab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// 1-based line number.
    pub line_number: usize,
    /// Its namespace.
    pub namespace: String,
    /// Commented out (`#…`): cron ignores it.
    pub disabled: bool,
    /// The line, without its newline.
    pub text: String,
}

/// Our lines, active and commented out, in order.
pub fn entries(crontab: &str) -> Vec<Entry> {
    crontab
        .split_inclusive('\n')
        .enumerate()
        .filter_map(|(i, raw)| {
            let text = raw.trim_end_matches('\n');
            let (_, namespace) = text.trim_end().rsplit_once(&format!(" {MARK}"))?;
            super::line::check_namespace(namespace).ok()?;
            Some(Entry {
                line_number: i + 1,
                namespace: namespace.to_owned(),
                disabled: text.trim_start().starts_with('#'),
                text: text.to_owned(),
            })
        })
        .collect()
}

/// The result of an edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    /// The whole new crontab.
    pub text: String,
    /// The namespace's line before, if it had one.
    pub old: Option<String>,
}

fn active(crontab: &str, namespace: &str) -> anyhow::Result<Option<Entry>> {
    let mine: Vec<Entry> = entries(crontab)
        .into_iter()
        .filter(|e| e.namespace == namespace && !e.disabled)
        .collect();
    match mine.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.clone())),
        many => anyhow::bail!(
            "the crontab has {} lines for namespace {namespace} (lines {}); remove all but one \
             with `crontab -e` first",
            many.len(),
            many.iter()
                .map(|e| e.line_number.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Puts `line` (whose marker names `namespace`) in place of the namespace's line, or at the end.
///
/// # Errors
/// More than one active line for the namespace.
pub fn install(crontab: &str, namespace: &str, line: &str) -> anyhow::Result<Edit> {
    debug_assert!(line.ends_with(&marker(namespace)));
    match active(crontab, namespace)? {
        Some(entry) => Ok(Edit {
            text: replace_line(crontab, entry.line_number, Some(line)),
            old: Some(entry.text),
        }),
        None => {
            let mut text = crontab.to_owned();
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(line);
            text.push('\n');
            Ok(Edit { text, old: None })
        }
    }
}

/// Takes the namespace's line out; `None` when it has none.
///
/// # Errors
/// More than one active line for the namespace.
pub fn remove(crontab: &str, namespace: &str) -> anyhow::Result<Option<Edit>> {
    Ok(active(crontab, namespace)?.map(|entry| Edit {
        text: replace_line(crontab, entry.line_number, None),
        old: Some(entry.text),
    }))
}

/// Line `number` (1-based) replaced by `with` (keeping its newline) or dropped.
fn replace_line(crontab: &str, number: usize, with: Option<&str>) -> String {
    let mut out = String::with_capacity(crontab.len());
    for (i, raw) in crontab.split_inclusive('\n').enumerate() {
        if i + 1 != number {
            out.push_str(raw);
        } else if let Some(line) = with {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OTHERS: &str = "MAILTO=ops@example.com\n\n# nightly\n5 4 * * * /usr/bin/true  \n";

    fn line(ns: &str, schedule: &str) -> String {
        format!(
            "{schedule} /bin/b --namespace {ns} --bucket b >> /l 2>&1{}",
            marker(ns)
        )
    }

    #[test]
    fn install_replace_remove_keep_other_bytes() {
        let a = line("a", "0 2 1 * *");
        let first = install(OTHERS, "a", &a).unwrap();
        assert_eq!(first.text, format!("{OTHERS}{a}\n"));
        assert_eq!(first.old, None);
        let b = line("b", "0 3 1 * *");
        let both = install(&first.text, "b", &b).unwrap().text;
        let a2 = line("a", "0 4 1 * *");
        let replaced = install(&both, "a", &a2).unwrap();
        assert_eq!(replaced.text, format!("{OTHERS}{a2}\n{b}\n"));
        assert_eq!(replaced.old.as_deref(), Some(a.as_str()));
        let removed = remove(&replaced.text, "a").unwrap().unwrap();
        assert_eq!(removed.text, format!("{OTHERS}{b}\n"));
        assert_eq!(remove(&removed.text, "a").unwrap(), None);
    }

    #[test]
    fn no_final_newline_and_disabled_lines() {
        let a = line("a", "0 2 1 * *");
        assert_eq!(
            install("5 4 * * * x", "a", &a).unwrap().text,
            format!("5 4 * * * x\n{a}\n")
        );
        let disabled = format!("#{a}\n");
        let e = entries(&disabled);
        assert!(e[0].disabled && e[0].namespace == "a");
        // A commented-out line is left alone; the active one is added after it.
        assert_eq!(
            install(&disabled, "a", &a).unwrap().text,
            format!("{disabled}{a}\n")
        );
        assert_eq!(remove(&disabled, "a").unwrap(), None);
    }

    #[test]
    fn two_lines_for_one_namespace_are_refused() {
        let a = line("a", "0 2 1 * *");
        let e = install(&format!("{a}\nx\n{a}\n"), "a", &a)
            .unwrap_err()
            .to_string();
        assert!(e.contains("2 lines for namespace a (lines 1, 3)"), "{e}");
    }
}
