//! `litemaas-schedule cron`: the backup as one crontab line per namespace on the bastion, as
//! the original tool did, but running `litemaas-backup` itself (no generated script).
//!
//! ```text
//! litemaas-schedule cron install --namespace NS --bucket B [--schedule '0 2 1 * *']
//!     [--log-file /var/log/litemaas-backup.log] [--binary /abs/litemaas-backup] [--print]
//!     [-- more litemaas-backup flags…]
//! litemaas-schedule cron remove --namespace NS [--print]
//! litemaas-schedule cron list
//! ```
//!
//! The line (see [`line`]) runs the binary by absolute path with the environment the run needs
//! and nothing secret: `KUBECONFIG` (made absolute), `AWS_PROFILE`, `AWS_REGION`, … as set when
//! installing; the database password is read from the cluster's Secret by the run, AWS
//! credentials come from the instance profile or the profile. Output is appended to the log.
//!
//! The crontab is read and written with the real `crontab` command (`--crontab-command`,
//! `LITEMAAS_CRONTAB`, e.g. `busybox crontab -c DIR` for a scratch spool). Only the line
//! ending in `# litemaas-backup namespace=NS` is touched. Installing the same line again
//! writes nothing. Just before writing, the crontab is read again: if someone changed it in
//! between (`crontab -e`), nothing is written and the command fails, so their edit is not lost
//! (a window of a few milliseconds remains: `crontab` offers no compare-and-swap). After
//! writing, `crontab -l` must show exactly what was written.

mod crontab;
mod line;
mod schedule;

use std::path::{Path, PathBuf};

use anyhow::Context;

use crontab::{CrontabCommand, Edit};
use line::Job;
use schedule::Schedule;

/// Where the original tool logged, and where ours appends by default.
const DEFAULT_LOG: &str = "/var/log/litemaas-backup.log";

/// The environment a run needs, copied into the line when set. Never credentials.
const PASSED_ENV: [&str; 7] = [
    "KUBECONFIG",
    "AWS_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_ENDPOINT_URL_S3",
];

/// Variables holding paths (made absolute: cron runs from the home directory).
const PATH_ENV: [&str; 3] = [
    "KUBECONFIG",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
];

/// Secrets that are set here but deliberately not given to the job.
const SECRET_ENV: [&str; 5] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "LITEMAAS_DATABASE_URL",
    "PGPASSWORD",
];

/// Arguments of `litemaas-schedule cron`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The crontab command and its leading arguments, split on spaces (e.g. `busybox crontab
    /// -c /tmp/spool`, or `crontab -u backup` as root).
    #[arg(
        long,
        env = "LITEMAAS_CRONTAB",
        default_value = "crontab",
        global = true,
        value_name = "COMMAND"
    )]
    crontab_command: String,

    #[command(subcommand)]
    action: Action,
}

/// What to do with the crontab.
#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Add or replace the namespace's line (the same line again changes nothing).
    ///
    /// The line runs litemaas-backup by absolute path, with KUBECONFIG (made absolute),
    /// AWS_PROFILE, AWS_REGION, AWS_DEFAULT_REGION, AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE
    /// and AWS_ENDPOINT_URL_S3 as they are set now, and appends its output to --log-file. No
    /// credential is ever written into the crontab: the run reads the database password from the
    /// cluster's Secret, and AWS credentials from the instance profile or the profile. Other
    /// LITEMAAS_* settings are not copied: give them as litemaas-backup flags after `--`.
    ///
    /// The schedule is warned about (not refused) when it backs up more than once a day
    /// (retention keeps 12 dumps and 3 snapshots, so they then cover less time), restricts both
    /// day fields (cron runs on either), or names no real date.
    Install(InstallArgs),
    /// Remove the namespace's line; every other line stays as it is.
    Remove(RemoveArgs),
    /// Show the litemaas-backup lines in the crontab.
    List,
}

/// Arguments of `cron install`.
#[derive(Debug, clap::Args)]
struct InstallArgs {
    /// Namespace of the LiteMaaS deployment.
    #[arg(long)]
    namespace: String,

    /// S3 bucket the backup goes to.
    #[arg(long)]
    bucket: String,

    /// crontab(5) time fields (the default: the 1st of the month at 2 AM), or @monthly,
    /// @weekly, @daily, ….
    #[arg(long, default_value = "0 2 1 * *")]
    schedule: String,

    /// Log file the run's output is appended to (absolute).
    #[arg(long, default_value = DEFAULT_LOG, value_name = "PATH")]
    log_file: PathBuf,

    /// litemaas-backup to run (absolute) [default: the one next to this program, else on PATH].
    #[arg(long, value_name = "PATH")]
    binary: Option<PathBuf>,

    /// Show the line and what would change; change nothing.
    #[arg(long)]
    print: bool,

    /// More litemaas-backup flags (no secrets: those are refused).
    #[arg(last = true, value_name = "BACKUP_FLAGS")]
    extra: Vec<String>,
}

/// Arguments of `cron remove`.
#[derive(Debug, clap::Args)]
struct RemoveArgs {
    /// Namespace whose line goes.
    #[arg(long)]
    namespace: String,

    /// Show what would be removed; change nothing.
    #[arg(long)]
    print: bool,
}

/// Runs `litemaas-schedule cron`.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let crontab = CrontabCommand::parse(&args.crontab_command)?;
    match args.action {
        Action::Install(install) => run_install(&crontab, install),
        Action::Remove(remove) => run_remove(&crontab, &remove),
        Action::List => run_list(&crontab),
    }
}

fn run_install(crontab: &CrontabCommand, args: InstallArgs) -> anyhow::Result<()> {
    line::check_namespace(&args.namespace)?;
    if args.bucket.trim().is_empty() {
        anyhow::bail!("--bucket is empty");
    }
    let schedule = Schedule::parse(&args.schedule)?;
    warn_about(&schedule);
    line::check_extra(&args.extra)?;
    let log_file = check_log_file(&args.log_file)?;
    let binary = resolve_binary(args.binary.as_deref())?;
    let env = job_env()?;
    let job = Job {
        schedule,
        env,
        binary,
        namespace: args.namespace.clone(),
        bucket: args.bucket,
        extra: args.extra,
        log_file,
    };
    let line = job.render()?;

    let before = crontab.read()?;
    let edit = crontab::install(&before, &args.namespace, &line)?;
    let ns = &args.namespace;
    if edit.text == before {
        println!("the line for namespace {ns} is already installed; nothing changed\n  {line}");
        return Ok(());
    }
    if args.print {
        print_change(&edit, Some(&line));
        println!("nothing changed (--print)");
        return Ok(());
    }
    commit(crontab, &before, &edit)?;
    match edit.old {
        Some(_) => println!("replaced the line for namespace {ns}:"),
        None => println!("installed the line for namespace {ns}:"),
    }
    print_change(&edit, Some(&line));
    Ok(())
}

fn run_remove(crontab: &CrontabCommand, args: &RemoveArgs) -> anyhow::Result<()> {
    line::check_namespace(&args.namespace)?;
    let before = crontab.read()?;
    let ns = &args.namespace;
    let Some(edit) = crontab::remove(&before, ns)? else {
        println!("the crontab has no line for namespace {ns}; nothing changed");
        return Ok(());
    };
    if args.print {
        print_change(&edit, None);
        println!("nothing changed (--print)");
        return Ok(());
    }
    commit(crontab, &before, &edit)?;
    println!("removed the line for namespace {ns}:");
    print_change(&edit, None);
    Ok(())
}

fn run_list(crontab: &CrontabCommand) -> anyhow::Result<()> {
    let entries = crontab::entries(&crontab.read()?);
    if entries.is_empty() {
        println!("the crontab has no litemaas-backup lines");
    }
    for entry in entries {
        let state = if entry.disabled {
            ", commented out"
        } else {
            ""
        };
        println!(
            "{} (line {}{state}): {}",
            entry.namespace, entry.line_number, entry.text
        );
    }
    Ok(())
}

fn print_change(edit: &Edit, new: Option<&str>) {
    if let Some(old) = &edit.old {
        println!("- {old}");
    }
    if let Some(new) = new {
        println!("+ {new}");
    }
}

/// Writes the edit if the crontab is still `before`, then checks it reads back as written.
fn commit(crontab: &CrontabCommand, before: &str, edit: &Edit) -> anyhow::Result<()> {
    if crontab.read()? != before {
        anyhow::bail!(
            "the crontab changed while litemaas-schedule was editing it (someone ran crontab -e?); \
             nothing was written: run the command again"
        );
    }
    crontab.write(&edit.text)?;
    let after = crontab.read()?;
    if after != edit.text {
        anyhow::bail!(
            "after writing, `crontab -l` shows something other than what was written (changed at \
             the same moment?); check it with `crontab -l`"
        );
    }
    Ok(())
}

fn warn_about(schedule: &Schedule) {
    let per_day = schedule.runs_per_day();
    if per_day > 1 {
        tracing::warn!(
            "schedule {schedule} runs {per_day} times a day; every run is a backup and retention \
             keeps the newest 12 dumps and 3 snapshots, so older backups go sooner (the default \
             is monthly: 0 2 1 * *)"
        );
    }
    if schedule.days_are_ored() {
        tracing::warn!(
            "schedule {schedule} restricts both day of month and day of week: cron runs it on \
             either, not only when both match"
        );
    }
    if schedule.never_runs() {
        tracing::warn!("schedule {schedule} names no date that exists: cron will never run it");
    }
}

fn check_log_file(path: &Path) -> anyhow::Result<PathBuf> {
    if !path.is_absolute() {
        anyhow::bail!(
            "--log-file {}: a relative path; cron runs from the home directory, give an absolute \
             path",
            path.display()
        );
    }
    let parent = path.parent().unwrap_or(Path::new("/"));
    if !parent.is_dir() {
        anyhow::bail!(
            "--log-file {}: the directory {} does not exist",
            path.display(),
            parent.display()
        );
    }
    if path.is_dir() {
        anyhow::bail!("--log-file {}: a directory", path.display());
    }
    Ok(path.to_owned())
}

/// The litemaas-backup to run: as given (absolute, an executable file), else the one next to
/// this program, else the first on PATH. Its directory is canonicalized but not the file, so
/// a symlink such as /usr/local/bin/litemaas-backup keeps following upgrades.
fn resolve_binary(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = given {
        if !path.is_absolute() {
            anyhow::bail!(
                "--binary {}: a relative path; cron runs from the home directory with its own \
                 PATH, give an absolute path",
                path.display()
            );
        }
        return check_executable(path).map(|()| path.to_owned());
    }
    const NAME: &str = "litemaas-backup";
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(NAME)));
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(NAME))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    for candidate in beside.into_iter().chain(on_path) {
        if check_executable(&candidate).is_ok() {
            let dir = candidate.parent().unwrap_or(Path::new("."));
            let dir = dir
                .canonicalize()
                .with_context(|| format!("cannot resolve {}", dir.display()))?;
            return Ok(dir.join(NAME));
        }
    }
    anyhow::bail!(
        "no litemaas-backup next to this program or on PATH; give its absolute path with --binary"
    )
}

fn check_executable(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .with_context(|| format!("--binary {}: cannot be read", path.display()))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        anyhow::bail!("--binary {}: not an executable file", path.display());
    }
    Ok(())
}

/// The environment given to the job: the variables of [`PASSED_ENV`] that are set, paths made
/// absolute. Warns about credentials that are set here and deliberately left out.
fn job_env() -> anyhow::Result<Vec<(String, String)>> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let mut env = Vec::new();
    for name in PASSED_ENV {
        let Some(value) = std::env::var_os(name) else {
            continue;
        };
        let value = value
            .into_string()
            .map_err(|_| anyhow::anyhow!("{name} is not valid UTF-8"))?;
        if value.is_empty() {
            continue;
        }
        let value = if PATH_ENV.contains(&name) {
            absolute_paths(&value, &cwd)
        } else {
            value
        };
        env.push((name.to_owned(), value));
    }
    for name in SECRET_ENV {
        if std::env::var_os(name).is_some() {
            tracing::warn!(
                "{name} is set here but is not written into the crontab; the job uses the \
                 cluster's Secret for the database and the instance profile or AWS_PROFILE for S3"
            );
        }
    }
    Ok(env)
}

/// Each `:`-separated path of `value` made absolute against `cwd`.
fn absolute_paths(value: &str, cwd: &Path) -> String {
    value
        .split(':')
        .filter(|p| !p.is_empty())
        .map(|p| cwd.join(p).to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(":")
}
