//! The metrics file: Prometheus text format for node_exporter's textfile collector, written
//! atomically after every run (`--metrics-file PATH`, e.g.
//! `/var/lib/node_exporter/textfile/litemaas-backup.prom`).
//!
//! Every series has the labels `program` (`litemaas-backup`, `litemaas-prune`,
//! `litemaas-restore`: one file per program, and the label keeps their series apart when the
//! collector merges the files), `namespace` (empty in local mode), `part` and `database` (empty
//! when the part is not about one database). The parts:
//!
//! | part | written by | what |
//! |---|---|---|
//! | `run` | every program | the whole run: its outcome is the exit code's |
//! | `dump` | litemaas-backup | one database's dump (one series per database) |
//! | `snapshot` | litemaas-backup `--namespace` | the VolumeSnapshot of the database volume |
//! | `retention` | litemaas-backup, litemaas-prune | retention of the dumps |
//! | `snapshot_retention` | litemaas-backup, litemaas-prune `--namespace` | retention of the snapshots |
//! | `restore` | litemaas-restore | a restore of one database |
//! | `verify` | litemaas-restore verify | a test restore into a scratch database |
//! | `volume_restore` | litemaas-restore volume | the database volume from a snapshot |
//!
//! The metrics (all gauges but the two `_total` counters):
//!
//! | metric | meaning |
//! |---|---|
//! | `litemaas_backup_last_success_timestamp_seconds` | end of the last successful attempt; kept from the previous file while attempts fail; 0 when none ever succeeded |
//! | `litemaas_backup_last_attempt_timestamp_seconds` | end of the last attempt, whatever its outcome |
//! | `litemaas_backup_last_attempt_success` | 1 if the last attempt succeeded, else 0 |
//! | `litemaas_backup_last_duration_seconds` | how long the last attempt took (parts that failed before measuring have none) |
//! | `litemaas_backup_last_success_stored_bytes` | bytes stored by the last successful attempt (dumps: the object's size) |
//! | `litemaas_backup_attempts_total` | attempts, counted across runs (kept from the previous file) |
//! | `litemaas_backup_failures_total` | failed attempts, counted the same way |
//!
//! A part not attempted in this run (say, the dumps when the cluster could not be reached)
//! keeps every series of the previous file; the `run` part says the run failed. Alert on
//! `time() - litemaas_backup_last_success_timestamp_seconds{part="dump"} > 35*86400` and on
//! `litemaas_backup_last_attempt_success == 0`.
//!
//! ```
//! use litemaas_cli::metrics::{Metrics, Sample};
//!
//! let now = jiff::Timestamp::from_second(1_700_000_000).unwrap();
//! let mut metrics = Metrics::default();
//! let dump = Sample::new("litemaas-backup", "litemaas", "dump", "litellm");
//! metrics.record(&dump, now, true, Some(std::time::Duration::from_secs(42)), Some(1024));
//! let text = metrics.render();
//! assert!(text.contains("# TYPE litemaas_backup_last_success_timestamp_seconds gauge"));
//! assert!(text.contains(
//!     r#"litemaas_backup_last_success_stored_bytes{program="litemaas-backup",namespace="litemaas",part="dump",database="litellm"} 1024"#
//! ));
//! // The previous file is read back on the next run.
//! assert_eq!(Metrics::parse(&text).unwrap(), metrics);
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Errors reading or writing the metrics file.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// A line of the previous file is not one this module writes.
    #[error("line {line} is not a sample of ours: {text:?}")]
    Garbled {
        /// 1-based line number.
        line: usize,
        /// The line (the file holds no secrets).
        text: String,
    },
    /// Reading, writing, syncing or renaming failed.
    #[error("{what} {}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The metric names, in the order they are written, with their type and help.
pub const METRICS: [(&str, &str, &str); 7] = [
    (
        LAST_SUCCESS,
        "gauge",
        "End of the last successful attempt of the part (Unix time); kept while attempts fail.",
    ),
    (
        LAST_ATTEMPT,
        "gauge",
        "End of the last attempt of the part (Unix time), whatever its outcome.",
    ),
    (
        LAST_OUTCOME,
        "gauge",
        "1 if the last attempt of the part succeeded, else 0.",
    ),
    (
        LAST_DURATION,
        "gauge",
        "Duration of the last attempt of the part.",
    ),
    (
        LAST_BYTES,
        "gauge",
        "Bytes stored by the last successful attempt of the part.",
    ),
    (ATTEMPTS, "counter", "Attempts of the part, across runs."),
    (
        FAILURES,
        "counter",
        "Failed attempts of the part, across runs.",
    ),
];

/// End of the last successful attempt.
pub const LAST_SUCCESS: &str = "litemaas_backup_last_success_timestamp_seconds";
/// End of the last attempt.
pub const LAST_ATTEMPT: &str = "litemaas_backup_last_attempt_timestamp_seconds";
/// 1 or 0: the last attempt's outcome.
pub const LAST_OUTCOME: &str = "litemaas_backup_last_attempt_success";
/// The last attempt's duration.
pub const LAST_DURATION: &str = "litemaas_backup_last_duration_seconds";
/// Bytes stored by the last successful attempt.
pub const LAST_BYTES: &str = "litemaas_backup_last_success_stored_bytes";
/// Attempts, a counter.
pub const ATTEMPTS: &str = "litemaas_backup_attempts_total";
/// Failures, a counter.
pub const FAILURES: &str = "litemaas_backup_failures_total";

/// The labels of one part's series.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sample {
    /// The program writing the file.
    pub program: String,
    /// The namespace (empty in local mode).
    pub namespace: String,
    /// The part (see the module's table).
    pub part: String,
    /// The database (empty when the part is not about one).
    pub database: String,
}

impl Sample {
    /// The labels `program`, `namespace`, `part`, `database`.
    pub fn new(program: &str, namespace: &str, part: &str, database: &str) -> Self {
        Self {
            program: program.into(),
            namespace: namespace.into(),
            part: part.into(),
            database: database.into(),
        }
    }

    fn labels(&self) -> String {
        format!(
            r#"{{program="{}",namespace="{}",part="{}",database="{}"}}"#,
            escape(&self.program),
            escape(&self.namespace),
            escape(&self.part),
            escape(&self.database)
        )
    }
}

/// Every series of the file: metric name → labels → value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    series: BTreeMap<String, BTreeMap<Sample, f64>>,
}

impl Metrics {
    /// A value, if present.
    pub fn get(&self, metric: &str, sample: &Sample) -> Option<f64> {
        self.series.get(metric)?.get(sample).copied()
    }

    fn set(&mut self, metric: &str, sample: &Sample, value: f64) {
        self.series
            .entry(metric.into())
            .or_default()
            .insert(sample.clone(), value);
    }

    /// Records one attempt of a part that ended at `ended`: the attempt's series are replaced,
    /// the last success (and its bytes) only when it succeeded, the counters incremented.
    pub fn record(
        &mut self,
        sample: &Sample,
        ended: jiff::Timestamp,
        succeeded: bool,
        duration: Option<Duration>,
        bytes: Option<u64>,
    ) {
        let at = ended.as_millisecond() as f64 / 1000.0;
        self.set(LAST_ATTEMPT, sample, at);
        self.set(LAST_OUTCOME, sample, if succeeded { 1.0 } else { 0.0 });
        match duration {
            Some(d) => self.set(LAST_DURATION, sample, d.as_secs_f64()),
            None => {
                // A duration of an older attempt would be read as this one's.
                if let Some(m) = self.series.get_mut(LAST_DURATION) {
                    m.remove(sample);
                }
            }
        }
        if succeeded {
            self.set(LAST_SUCCESS, sample, at);
            if let Some(bytes) = bytes {
                self.set(LAST_BYTES, sample, bytes as f64);
            }
        } else if self.get(LAST_SUCCESS, sample).is_none() {
            // Never succeeded: 0, so that `time() - last_success > limit` fires at once.
            self.set(LAST_SUCCESS, sample, 0.0);
        }
        let attempts = self.get(ATTEMPTS, sample).unwrap_or(0.0);
        self.set(ATTEMPTS, sample, attempts + 1.0);
        let failures = self.get(FAILURES, sample).unwrap_or(0.0);
        self.set(
            FAILURES,
            sample,
            failures + if succeeded { 0.0 } else { 1.0 },
        );
    }

    /// The text file: HELP and TYPE lines, then the samples, for each metric that has any.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, kind, help) in METRICS {
            let Some(samples) = self.series.get(name).filter(|s| !s.is_empty()) else {
                continue;
            };
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for (sample, value) in samples {
                out.push_str(&format!("{name}{} {value}\n", sample.labels()));
            }
        }
        out
    }

    /// Reads a file this module wrote. Comments and blank lines are skipped; metrics of other
    /// names are dropped.
    ///
    /// # Errors
    /// [`MetricsError::Garbled`] at the first line that is not a sample of ours.
    pub fn parse(text: &str) -> Result<Self, MetricsError> {
        let mut metrics = Metrics::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let garbled = || MetricsError::Garbled {
                line: i + 1,
                text: line.chars().take(200).collect(),
            };
            let (name, sample, value) = parse_line(line).ok_or_else(garbled)?;
            if METRICS.iter().any(|(n, _, _)| *n == name) {
                metrics.set(name, &sample, value);
            }
        }
        Ok(metrics)
    }

    /// The previous file at `path`: empty when there is none; with a warning (on stderr and in
    /// the logs) and empty when it cannot be read or parsed, so that a damaged file never stops
    /// the next one from being written.
    pub fn load_previous(path: &Path) -> Self {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text).unwrap_or_else(|e| {
                warn(&format!(
                    "the previous metrics file {} is damaged ({e}): starting a new one, the last success times it held are lost",
                    path.display()
                ));
                Self::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::default(),
            Err(e) => {
                warn(&format!(
                    "cannot read the previous metrics file {} ({e}): starting a new one",
                    path.display()
                ));
                Self::default()
            }
        }
    }

    /// Writes the file atomically: a temporary file in the same directory (not named `*.prom`,
    /// so the collector never reads it half-written), mode 0644, fsync, rename over `path`,
    /// fsync of the directory.
    ///
    /// # Errors
    /// [`MetricsError::Io`] naming the step and the path; the temporary file is removed.
    pub fn write(&self, path: &Path) -> Result<(), MetricsError> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let io = |what, path: &Path| {
            let path = path.to_path_buf();
            move |source| MetricsError::Io { what, path, source }
        };
        let result = (|| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o644)
                .open(&tmp)
                .map_err(io("cannot create", &tmp))?;
            // The umask may have taken bits away from the mode asked for.
            file.set_permissions(std::fs::Permissions::from_mode(0o644))
                .map_err(io("cannot set the mode of", &tmp))?;
            file.write_all(self.render().as_bytes())
                .map_err(io("cannot write", &tmp))?;
            file.sync_all().map_err(io("cannot sync", &tmp))?;
            std::fs::rename(&tmp, path).map_err(io("cannot rename the new file onto", path))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result?;
        if let Ok(dir) = std::fs::File::open(&dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

fn warn(message: &str) {
    tracing::warn!("{message}");
    if !tracing::enabled!(tracing::Level::WARN) {
        eprintln!("warning: {message}");
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// `name{k="v",...} value`, with the four labels of [`Sample`].
fn parse_line(line: &str) -> Option<(&str, Sample, f64)> {
    let open = line.find('{')?;
    let name = &line[..open];
    let mut labels = BTreeMap::new();
    let mut rest = &line[open + 1..];
    loop {
        rest = rest.trim_start_matches(',');
        if let Some(after) = rest.strip_prefix('}') {
            rest = after;
            break;
        }
        let eq = rest.find("=\"")?;
        let key = &rest[..eq];
        let mut value = String::new();
        let mut chars = rest[eq + 2..].char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break eq + 2 + i + 1,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.insert(key, value);
        rest = &rest[end..];
    }
    let value: f64 = rest.trim().parse().ok()?;
    let mut take = |k| labels.remove(k);
    let sample = Sample {
        program: take("program")?,
        namespace: take("namespace")?,
        part: take("part")?,
        database: take("database")?,
    };
    labels.is_empty().then_some((name, sample, value))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(seconds).unwrap()
    }

    /// The file as a Prometheus scraper reads it: every sample with its labels and value.
    fn scrape(text: &str) -> prometheus_parse::Scrape {
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
    }

    fn value(scrape: &prometheus_parse::Scrape, metric: &str, part: &str) -> Option<f64> {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == metric && s.labels.get("part") == Some(part))
            .map(|s| match s.value {
                prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
    }

    #[test]
    fn a_prometheus_parser_reads_every_metric_with_its_type_help_and_labels() {
        let mut m = Metrics::default();
        let dump = Sample::new("litemaas-backup", "litemaas", "dump", "litellm");
        m.record(
            &dump,
            at(1000),
            true,
            Some(Duration::from_millis(1500)),
            Some(7),
        );
        let text = m.render();
        let scrape = scrape(&text);
        assert_eq!(scrape.samples.len(), 7, "{text}");
        for (name, kind, help) in METRICS {
            assert_eq!(scrape.docs.get(name).map(String::as_str), Some(help));
            let sample = scrape.samples.iter().find(|s| s.metric == name).unwrap();
            assert_eq!(sample.labels.get("namespace"), Some("litemaas"));
            assert_eq!(sample.labels.get("database"), Some("litellm"));
            assert_eq!(sample.labels.get("program"), Some("litemaas-backup"));
            let typed = match sample.value {
                prometheus_parse::Value::Gauge(_) => "gauge",
                prometheus_parse::Value::Counter(_) => "counter",
                _ => "other",
            };
            assert_eq!(typed, kind, "{name}");
            assert!(
                name.ends_with("_seconds")
                    || name.ends_with("_bytes")
                    || name.ends_with("_total")
                    || name.ends_with("_success"),
                "{name} has no unit"
            );
        }
        assert_eq!(value(&scrape, LAST_SUCCESS, "dump"), Some(1000.0));
        assert_eq!(value(&scrape, LAST_DURATION, "dump"), Some(1.5));
        assert_eq!(value(&scrape, LAST_BYTES, "dump"), Some(7.0));
        assert_eq!(Metrics::parse(&text).unwrap(), m);
    }

    /// Label values are escaped as the format says (the parser crate reads the lines but does
    /// not unescape; ours does).
    #[test]
    fn label_values_with_quotes_backslashes_and_newlines_survive() {
        let mut m = Metrics::default();
        let odd = Sample::new("p", "ns \"x\"\\y", "dump", "lite\nllm");
        m.record(&odd, at(1), true, None, None);
        let text = m.render();
        assert_eq!(scrape(&text).samples.len(), 5, "{text}");
        assert_eq!(text.lines().filter(|l| !l.starts_with('#')).count(), 5);
        assert_eq!(Metrics::parse(&text).unwrap(), m);
    }

    #[test]
    fn a_failed_attempt_keeps_the_last_success_and_its_bytes_and_counts_the_failure() {
        let dump = Sample::new("litemaas-backup", "ns", "dump", "db");
        let mut m = Metrics::default();
        m.record(
            &dump,
            at(1000),
            true,
            Some(Duration::from_secs(3)),
            Some(99),
        );
        let mut next = Metrics::parse(&m.render()).unwrap();
        next.record(&dump, at(2000), false, None, None);
        let scrape = scrape(&next.render());
        assert_eq!(value(&scrape, LAST_SUCCESS, "dump"), Some(1000.0));
        assert_eq!(value(&scrape, LAST_BYTES, "dump"), Some(99.0));
        assert_eq!(value(&scrape, LAST_ATTEMPT, "dump"), Some(2000.0));
        assert_eq!(value(&scrape, LAST_OUTCOME, "dump"), Some(0.0));
        assert_eq!(value(&scrape, LAST_DURATION, "dump"), None);
        assert_eq!(value(&scrape, ATTEMPTS, "dump"), Some(2.0));
        assert_eq!(value(&scrape, FAILURES, "dump"), Some(1.0));
        let mut never = Metrics::default();
        never.record(&dump, at(2000), false, None, None);
        assert_eq!(never.get(LAST_SUCCESS, &dump), Some(0.0));
    }

    #[test]
    fn a_garbled_file_is_an_error_naming_the_line() {
        let e = Metrics::parse("# HELP x\nlitemaas_backup_attempts_total{part=\"dump\" 1\n")
            .unwrap_err();
        assert!(e.to_string().starts_with("line 2 "), "{e}");
        assert!(Metrics::parse("litemaas_backup_attempts_total 1\n").is_err());
    }

    #[test]
    fn the_write_is_atomic_0644_and_replaces_the_previous_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("litemaas.prom");
        std::fs::write(&path, "old").unwrap();
        let mut m = Metrics::default();
        m.record(&Sample::new("p", "", "run", ""), at(5), true, None, None);
        m.write(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), m.render());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["litemaas.prom"], "no temporary file is left");
        assert_eq!(Metrics::load_previous(&path), m);
        std::fs::write(&path, "garbage {").unwrap();
        assert_eq!(Metrics::load_previous(&path), Metrics::default());
        let missing = dir.path().join("none/x.prom");
        let e = m.write(&missing).unwrap_err();
        assert!(e.to_string().contains("none/.x.prom."), "{e}");
    }
}
