//! The crontab line: `SCHEDULE [VAR=value…] /abs/litemaas-backup --namespace NS --bucket B
//! [extra…] >> LOG 2>&1 # litemaas-backup namespace=NS`.
//!
//! cron hands the command to `/bin/sh -c` after turning each unescaped `%` into a newline
//! (vixie, cronie, Debian) or leaving it alone (busybox). Every word is single-quoted where it
//! needs quoting, and a `%` is written *outside* the quotes as `\%`: cron reads that as `%`, and
//! a cron that does not read it leaves `\%`, which `sh` reads as `%`. A backslash is refused:
//! crons disagree on `\\` (vixie makes it `\`, cronie keeps it). So are newlines and other
//! control characters, which cannot sit in one crontab line.

use std::path::{Path, PathBuf};

/// The comment that ends our line and identifies it: `# litemaas-backup namespace=NS`.
pub const MARK: &str = "# litemaas-backup namespace=";

/// vixie cron's (Debian's) limit on a line's command, in bytes.
const MAX_COMMAND: usize = 1000;

/// Everything the line says.
#[derive(Debug, Clone)]
pub struct Job {
    /// The five time fields, checked.
    pub schedule: super::schedule::Schedule,
    /// Environment for the run, `(name, value)`, in order. Never secrets.
    pub env: Vec<(String, String)>,
    /// Absolute path of litemaas-backup.
    pub binary: PathBuf,
    /// Kubernetes namespace (a DNS label).
    pub namespace: String,
    /// S3 bucket.
    pub bucket: String,
    /// More litemaas-backup arguments, checked for secrets.
    pub extra: Vec<String>,
    /// Absolute path of the log file, appended to.
    pub log_file: PathBuf,
}

/// The marker comment of `namespace`'s line, with the space before it.
pub fn marker(namespace: &str) -> String {
    format!(" {MARK}{namespace}")
}

impl Job {
    /// The crontab line (no newline).
    ///
    /// # Errors
    /// A word that cannot be written into a crontab line (backslash, control character), named;
    /// a command too long for vixie cron.
    pub fn render(&self) -> anyhow::Result<String> {
        let mut words = vec![self.schedule.to_string()];
        for (name, value) in &self.env {
            words.push(format!("{name}={}", quote(value, name)?));
        }
        words.push(quote(&path_str(&self.binary)?, "--binary")?);
        words.push("--namespace".into());
        words.push(quote(&self.namespace, "--namespace")?);
        words.push("--bucket".into());
        words.push(quote(&self.bucket, "--bucket")?);
        for (i, arg) in self.extra.iter().enumerate() {
            words.push(quote(arg, &format!("argument {} after --", i + 1))?);
        }
        words.push(">>".into());
        words.push(quote(&path_str(&self.log_file)?, "--log-file")?);
        words.push("2>&1".into());
        let line = format!("{}{}", words.join(" "), marker(&self.namespace));
        let command = line.len() - words[0].len() - 1;
        if command >= MAX_COMMAND {
            anyhow::bail!(
                "the crontab line's command would be {command} bytes; vixie cron (Debian's) \
                 refuses {MAX_COMMAND} or more: give fewer or shorter flags after --"
            );
        }
        Ok(line)
    }
}

fn path_str(path: &Path) -> anyhow::Result<String> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("{} is not valid UTF-8", path.display()))
}

/// `value` as one `sh` word that survives cron's `%` handling; `what` names it in errors.
///
/// # Errors
/// A backslash or control character, which no crontab line can carry the same way in every cron.
pub fn quote(value: &str, what: &str) -> anyhow::Result<String> {
    if value.contains('\\') {
        anyhow::bail!(
            "{what} contains a backslash, which crons read differently (vixie turns \\\\ into \\, \
             cronie does not); use a value without one"
        );
    }
    if value.chars().any(char::is_control) {
        anyhow::bail!(
            "{what} contains a newline or other control character; a crontab line cannot hold it"
        );
    }
    let plain = |c: char| c.is_ascii_alphanumeric() || "_@+=:,./-".contains(c);
    if !value.is_empty() && value.chars().all(plain) {
        return Ok(value.to_owned());
    }
    if value.is_empty() {
        return Ok("''".into());
    }
    let mut out = String::new();
    for (i, segment) in value.split('%').enumerate() {
        if i > 0 {
            out.push_str("\\%");
        }
        if segment.is_empty() {
            continue;
        }
        if segment.chars().all(plain) {
            out.push_str(segment);
        } else {
            out.push('\'');
            out.push_str(&segment.replace('\'', "'\"'\"'"));
            out.push('\'');
        }
    }
    Ok(out)
}

/// Refuses litemaas-backup arguments that would put a secret (a database password, a key, a
/// token) into the crontab, or that repeat `--namespace`/`--bucket`. Errors never quote the value.
///
/// # Errors
/// The argument's position and flag, and what to do instead.
pub fn check_extra(extra: &[String]) -> anyhow::Result<()> {
    for (i, arg) in extra.iter().enumerate() {
        let n = i + 1;
        let flag = arg.split_once('=').map_or(arg.as_str(), |(f, _)| f);
        let flag_lower = flag.to_ascii_lowercase();
        if flag.starts_with("--") {
            if matches!(flag, "--namespace" | "--bucket") {
                anyhow::bail!(
                    "argument {n} after -- is {flag}: give it to litemaas-schedule cron install \
                     itself, not after --"
                );
            }
            if ["password", "secret", "token", "access-key", "credential"]
                .iter()
                .any(|w| flag_lower.contains(w))
            {
                anyhow::bail!(
                    "argument {n} after -- ({flag}) would write a secret into the crontab, which \
                     every local user's `ps` and the crontab file show; the run reads the database \
                     password from the cluster's Secret and AWS credentials from the instance \
                     profile or AWS_PROFILE"
                );
            }
        }
        let lower = arg.to_ascii_lowercase();
        if lower.contains("password=") || url_has_password(arg) {
            let which = if flag.starts_with("--") {
                format!("{flag} ")
            } else {
                String::new()
            };
            anyhow::bail!(
                "argument {n} after -- ({which}value) carries a password, which must not be \
                 written into the crontab; with --namespace the run reads the database password \
                 from the cluster's Secret (or use ~/.pgpass)"
            );
        }
    }
    Ok(())
}

/// `scheme://user:password@host…`: a URL with a password in it.
fn url_has_password(arg: &str) -> bool {
    let Some((_, rest)) = arg.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    match authority.rsplit_once('@') {
        Some((userinfo, _)) => userinfo.contains(':'),
        None => false,
    }
}

/// A Kubernetes namespace name (RFC 1123 label).
///
/// # Errors
/// What is wrong, naming the namespace.
pub fn check_namespace(ns: &str) -> anyhow::Result<()> {
    let ok = !ns.is_empty()
        && ns.len() <= 63
        && ns
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !ns.starts_with('-')
        && !ns.ends_with('-');
    if !ok {
        anyhow::bail!(
            "namespace {ns:?} is not a Kubernetes namespace name (lower-case letters, digits and \
             '-', starting and ending with a letter or digit, at most 63)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        for (value, quoted) in [
            ("litellm-rhpds", "litellm-rhpds"),
            (
                "/usr/local/bin/litemaas-backup",
                "/usr/local/bin/litemaas-backup",
            ),
            ("", "''"),
            ("a b", "'a b'"),
            ("it's", "'it'\"'\"'s'"),
            ("100%", "100\\%"),
            ("%a b%%", "\\%'a b'\\%\\%"),
            ("$(id) `id` ;|&*?", "'$(id) `id` ;|&*?'"),
        ] {
            assert_eq!(quote(value, "v").unwrap(), quoted, "{value}");
        }
        assert!(
            quote("a\\b", "--binary")
                .unwrap_err()
                .to_string()
                .starts_with("--binary contains a backslash")
        );
        assert!(
            quote("a\nb", "v")
                .unwrap_err()
                .to_string()
                .contains("newline")
        );
    }

    #[test]
    fn secrets_are_refused_without_being_quoted() {
        for args in [
            &["--database-url", "postgres://u:hunter2@db/x"][..],
            &["--database-url=postgresql://u:hunter2@db:5432/x?sslmode=require"],
            &["--database-url", "host=db password=hunter2"],
            &["--pg-password", "hunter2"],
            &["--aws-secret-access-key=hunter2"],
        ] {
            let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            let e = check_extra(&args).expect_err(&args.join(" ")).to_string();
            assert!(!e.contains("hunter2"), "{e}");
        }
        let fine: Vec<String> = [
            "--database-url",
            "postgres://u@db/x",
            "--json",
            "--database",
            "litellm",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        check_extra(&fine).unwrap();
        assert!(check_extra(&["--bucket=x".into()]).is_err());
    }

    #[test]
    fn namespaces() {
        check_namespace("litellm-rhpds").unwrap();
        for bad in ["", "Upper", "a b", "-a", "a-", "a_b", &"a".repeat(64)] {
            assert!(check_namespace(bad).is_err(), "{bad}");
        }
    }
}
