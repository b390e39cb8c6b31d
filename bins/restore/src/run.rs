//! Assembling the pieces from the arguments, and reporting.

use std::io::IsTerminal;
use std::pin::Pin;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use litemaas_backup::catalog::{self, Chosen, Selection};
use litemaas_backup::dump::PgConnection;
use litemaas_backup::lock;
use litemaas_backup::restore::parallel::{self, ParallelOptions, ParallelStats};
use litemaas_backup::restore::swap::{self, DatabaseProfile};
use litemaas_backup::restore::{
    self, Expected, LocalPsql, PodPsql, RestoreOptions, RestoreReport, ServerInfo, SqlSink,
};
use litemaas_cli::progress::Progress;
use serde::Serialize;
use tokio::io::AsyncRead;
use tokio_util::sync::CancellationToken;

use crate::cli::{BackupArgs, RestoreArgs, TargetArgs, VerifyArgs};

/// The backup to read.
struct Backup {
    /// `s3://bucket/key` or the file's path.
    name: String,
    chosen: Option<Chosen>,
    reader: Pin<Box<dyn AsyncRead + Send>>,
    expected: Expected,
    size: Option<u64>,
}

impl Backup {
    async fn open(args: &BackupArgs, default_latest: bool) -> Result<Self> {
        if let Some(path) = &args.file {
            let file = tokio::fs::File::open(path)
                .await
                .with_context(|| format!("cannot open backup file {}", path.display()))?;
            let size = file.metadata().await.ok().map(|m| m.len());
            return Ok(Self {
                name: path.display().to_string(),
                chosen: None,
                reader: Box::pin(file),
                expected: Expected {
                    name: Some(path.display().to_string()),
                    ..Expected::default()
                },
                size,
            });
        }
        let selection = match (&args.key, args.latest || default_latest) {
            (Some(key), _) => Selection::Key(key.clone()),
            (None, true) => Selection::Latest,
            (None, false) => bail!("say which backup: --key KEY, --latest or --file PATH"),
        };
        let store = args.store.open().await?;
        let chosen = catalog::choose(store.as_ref(), &args.store.prefix(), &selection).await?;
        let reader = catalog::open(store, &chosen.key)
            .await
            .with_context(|| format!("cannot read {}/{}", chosen.store, chosen.key))?;
        if chosen.record.is_none() {
            tracing::warn!(
                key = chosen.key,
                "no integrity record (a dump of the original tool?): restoring without a checksum; the stream's own checks and pg_dump's completion marker still apply"
            );
            eprintln!(
                "warning: {} has no integrity record: no SHA-256 to compare (the gzip trailer and pg_dump's completion marker are still checked)",
                chosen.key
            );
        }
        Ok(Self {
            name: format!("{}/{}", chosen.store, chosen.key),
            expected: chosen.expected(),
            size: Some(chosen.size),
            chosen: Some(chosen),
            reader,
        })
    }

    fn describe(&self) -> String {
        let mut out = self.name.clone();
        let mut facts = Vec::new();
        if let Some(at) = self.chosen.as_ref().and_then(|c| c.taken_at) {
            facts.push(format!("taken {at}"));
        }
        if let Some(size) = self.size {
            facts.push(format!("{size} bytes"));
        }
        facts.push(
            if self.expected.sha256.is_some() {
                "SHA-256 recorded"
            } else {
                "no integrity record"
            }
            .to_owned(),
        );
        out.push_str(&format!(" ({})", facts.join(", ")));
        out
    }
}

/// The database to restore into.
async fn sink(args: &TargetArgs) -> Result<Box<dyn SqlSink>> {
    if let Some(namespace) = &args.namespace {
        let client = litemaas_cli::kube_client(args.context.as_deref()).await?;
        let target = args.pod.target(namespace);
        return Ok(Box::new(
            PodPsql::discover(client, &target, args.database.clone()).await?,
        ));
    }
    let psql = match &args.database_url {
        Some(url) => LocalPsql::new(PgConnection::parse(url.expose())?),
        None => LocalPsql::from_libpq_env(),
    }
    .program(&args.psql);
    Ok(match &args.database {
        Some(database) => psql.with_database(database),
        None => Box::new(psql),
    })
}

/// In cluster mode, the Lease the backup takes too, so that a backup and a restore of the same
/// namespace never overlap.
/// Losing it cancels `on_loss`.
async fn lease(args: &TargetArgs, on_loss: &CancellationToken) -> Result<Option<lock::LeaseGuard>> {
    let Some(namespace) = &args.namespace else {
        return Ok(None);
    };
    let client = litemaas_cli::kube_client(args.context.as_deref()).await?;
    let guard = args
        .lease
        .lock(client, namespace)
        .acquire(on_loss)
        .await
        .context("not restoring; nothing was changed")?;
    Ok(Some(guard))
}

/// Streams the backup into `sink`, with a progress bar on a terminal: in one transaction
/// (`jobs` 1), or on `jobs` connections into a database nothing else uses.
async fn load(
    backup: Backup,
    sink: &dyn SqlSink,
    jobs: usize,
    lock_wait_report: Option<Duration>,
    cancel: &CancellationToken,
) -> restore::Result<(RestoreReport, Option<ParallelStats>)> {
    let progress = Progress::bytes("restoring", backup.size);
    let options = RestoreOptions {
        expected: backup.expected,
        progress: Some(progress.counter()),
        lock_wait_report,
    };
    let result = if jobs > 1 {
        let parallel = ParallelOptions {
            jobs,
            ..ParallelOptions::default()
        };
        parallel::load(backup.reader, sink, &options, &parallel, cancel)
            .await
            .map(|(report, stats)| (report, Some(stats)))
    } else {
        restore::restore(backup.reader, sink, &options, cancel)
            .await
            .map(|report| (report, None))
    };
    progress.finish();
    result
}

/// `--jobs`, or the cores available.
fn jobs(flag: Option<u16>) -> usize {
    flag.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        usize::from,
    )
}

/// `<live>_<what>_<time>`, within PostgreSQL's 63 bytes.
fn sibling_name(live: &str, what: &str, stamp: &str) -> String {
    let suffix = format!("_{what}_{stamp}");
    let mut keep = 63usize.saturating_sub(suffix.len()).min(live.len());
    while !live.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}{suffix}", &live[..keep])
}

/// Names for the new and the previous database that no database has yet: `<live>_restore_<time>`
/// and `<live>_previous_<time>`, with `_2`, `_3`… added when a restore in the same second (a
/// retry, say) left one of them.
async fn free_sibling_names(admin: &dyn SqlSink, live: &str) -> restore::Result<(String, String)> {
    let stamp = jiff::Timestamp::now().strftime("%Y%m%d_%H%M%S").to_string();
    for n in 1..=20 {
        let stamp = if n == 1 {
            stamp.clone()
        } else {
            format!("{stamp}_{n}")
        };
        let new = sibling_name(live, "restore", &stamp);
        let previous = sibling_name(live, "previous", &stamp);
        if !restore::database_exists(admin, &new).await?
            && !restore::database_exists(admin, &previous).await?
        {
            return Ok((new, previous));
        }
    }
    Err(restore::Error::Database {
        context: format!("naming the new database beside {live}"),
        message: format!(
            "{} and 19 other names are taken",
            sibling_name(live, "previous", &stamp)
        ),
    })
}

/// What `--json` prints for a restore.
#[derive(Serialize)]
struct RestoreJson<'a> {
    backup: &'a str,
    chosen: Option<&'a Chosen>,
    into: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel: Option<&'a ParallelStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    swap: Option<&'a Swapped>,
    #[serde(flatten)]
    report: &'a RestoreReport,
}

/// What `--swap` did.
#[derive(Debug, Serialize)]
struct Swapped {
    /// The live database's name (now the restored one).
    database: String,
    /// The previous database's name.
    previous: String,
    /// Whether the previous database was dropped (`--drop-previous`).
    previous_dropped: bool,
}

/// A restore over the live database (after confirmation) or into a new one (`--into`), holding
/// the namespace's Lease in cluster mode.
pub async fn restore(args: RestoreArgs) -> Result<()> {
    let cancel = litemaas_cli::cancel_on_signal();
    let backup = Backup::open(&args.backup, false)
        .await
        .context("not restoring; nothing was changed")?;
    let server = sink(&args.target)
        .await
        .context("not restoring; nothing was changed")?;
    // Losing the Lease stops the restore as a signal does: the transaction is rolled back.
    let run = cancel.child_token();
    let guard = lease(&args.target, &run).await?;
    let result = restore_holding(&args, backup, server.as_ref(), &run).await;
    let Some(guard) = guard else { return result };
    let lost = guard.lost();
    guard.release().await;
    match (result, lost) {
        (Err(e), Some(lost)) => Err(e.context(format!("{lost}: the restore was stopped"))),
        (result, _) => result,
    }
}

async fn restore_holding(
    args: &RestoreArgs,
    backup: Backup,
    server: &dyn SqlSink,
    cancel: &CancellationToken,
) -> Result<()> {
    let backup_name = backup.name.clone();
    let chosen = backup.chosen.clone();

    let jobs = jobs(args.jobs);
    let mut swapped = None;
    let (report, stats) = match &args.into {
        None if args.swap => {
            let info = restore::server_info(server).await.with_context(|| {
                format!("cannot use {}; nothing was changed", server.describe())
            })?;
            confirm(args, server, &info, &backup)?;
            let done = swap_restore(args, backup, server, &info.database, jobs, cancel).await?;
            swapped = Some(done.1);
            done.0
        }
        Some(new_db) => {
            restore::create_database(server, new_db).await?;
            eprintln!(
                "created database {new_db} on the server of {}",
                server.describe()
            );
            let target = server.with_database(new_db);
            // A new database: nobody else holds its locks.
            match load(backup, target.as_ref(), jobs, None, cancel).await {
                Ok(report) => report,
                Err(e) => {
                    let dropped = match restore::drop_database(server, new_db).await {
                        Ok(()) => format!("the new database {new_db} was dropped"),
                        Err(drop) => format!(
                            "dropping the new database {new_db} failed too ({drop}); drop it by hand"
                        ),
                    };
                    return Err(anyhow!(e).context(format!(
                        "restore of {backup_name} into {} failed; the live database was not touched and {dropped}",
                        target.describe()
                    )));
                }
            }
        }
        None => {
            if args.jobs.is_some_and(|j| j > 1) {
                bail!(
                    "--jobs loads a new database on several connections, which cannot share the one transaction that replaces the live database in place: add --swap (load a new database, then swap it in) or --into NEW_DB; nothing was changed"
                );
            }
            let info = restore::server_info(server).await.with_context(|| {
                format!("cannot use {}; nothing was changed", server.describe())
            })?;
            confirm(args, server, &info, &backup)?;
            let target = server.describe();
            let report = Duration::try_from(args.lock_wait_report)
                .ok()
                .filter(|d| !d.is_zero());
            load(backup, server, 1, report, cancel).await.map_err(|e| {
                let outcome = if e.target_unchanged() {
                    "the database is unchanged"
                } else {
                    "the database may or may not have been replaced"
                };
                anyhow!(e).context(format!(
                    "restore of {backup_name} into {target} failed; {outcome}"
                ))
            })?
        }
    };
    eprintln!(
        "restored {backup_name} into {} ({} bytes of SQL, {} table(s), {} rows, {:.1} s)",
        report.target,
        report.sql_bytes,
        report.tables.len(),
        report.tables.values().sum::<u64>(),
        report.duration_ms as f64 / 1000.0
    );
    for check in &report.checks {
        eprintln!("  ✓ {check}");
    }
    if let Some(stats) = &stats {
        eprintln!(
            "  loaded on {} connection(s): {} COPY piece(s), {} index(es)/constraint(s) side by side \
             (before the data {:.1} s, data {:.1} s, after the data {:.1} s){}",
            stats.jobs,
            stats.copy_pieces,
            stats.parallel_objects,
            stats.phases.pre_data_ms as f64 / 1000.0,
            stats.phases.data_ms as f64 / 1000.0,
            stats.phases.post_data_ms as f64 / 1000.0,
            stats
                .serial_from
                .as_ref()
                .map(|why| format!("; the rest in order on one connection ({why})"))
                .unwrap_or_default()
        );
    }
    if let Some(swapped) = &swapped {
        if swapped.previous_dropped {
            eprintln!("  the previous database was dropped (--drop-previous)");
        } else {
            eprintln!(
                "  the previous database is kept as {} (connections refused); drop it with DROP DATABASE {}; or roll back with ALTER DATABASE … RENAME",
                swapped.previous,
                restore::quote_ident(&swapped.previous)
            );
        }
    }
    if report.clean_warnings > 0 {
        eprintln!(
            "  {} statement(s) of the dump's clean (DROP) section failed harmlessly and were skipped (see the log with -v)",
            report.clean_warnings
        );
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&RestoreJson {
                backup: &backup_name,
                chosen: chosen.as_ref(),
                into: args.into.as_deref(),
                parallel: stats.as_ref(),
                swap: swapped.as_ref(),
                report: &report,
            })?
        );
    }
    Ok(())
}

/// `--swap`: a new database like the live one, loaded, given the live one's grants and
/// settings, swapped in. Until the swap commits the live database is untouched and the new
/// one is dropped on any failure.
async fn swap_restore(
    args: &RestoreArgs,
    backup: Backup,
    server: &dyn SqlSink,
    live: &str,
    jobs: usize,
    cancel: &CancellationToken,
) -> Result<((RestoreReport, Option<ParallelStats>), Swapped)> {
    let backup_name = backup.name.clone();
    let admin = server.with_database("postgres");
    let admin = admin.as_ref();
    let profile = DatabaseProfile::read(admin, live)
        .await
        .context("not restoring; nothing was changed")?;
    let (new, previous) = free_sibling_names(admin, live)
        .await
        .context("not restoring; nothing was changed")?;
    profile
        .create_like(admin, &new)
        .await
        .context("not restoring; nothing was changed")?;
    eprintln!("created database {new} like {live}; loading it on up to {jobs} connection(s)");
    let target = server.with_database(&new);
    let loaded = async {
        let loaded = load(backup, target.as_ref(), jobs, None, cancel).await?;
        profile.apply(admin, &new).await?;
        if cancel.is_cancelled() {
            return Err(restore::Error::Cancelled);
        }
        Ok(loaded)
    }
    .await;
    let loaded = match loaded {
        Ok(loaded) => loaded,
        Err(e) => {
            let dropped = drop_note(admin, &new).await;
            return Err(anyhow!(e).context(format!(
                "restore of {backup_name} failed; the live database {live} was not touched and {dropped}"
            )));
        }
    };
    // The point of no return: both renames in one transaction.
    let lock_timeout =
        Duration::try_from(args.swap_lock_timeout).unwrap_or(Duration::from_secs(30));
    if let Err(failure) = swap::swap_in(admin, live, &new, &previous, lock_timeout).await {
        let e = failure.error;
        match failure.state {
            // Past the point of no return: the answer was lost, not the swap. Read back from
            // pg_database, both renames happened; the restore stands.
            swap::SwapState::Swapped => {
                eprintln!(
                    "warning: the swap reported an error, but pg_database shows both renames happened: {live} is the restored database ({e})"
                );
            }
            swap::SwapState::Unchanged => {
                let dropped = drop_note(admin, &new).await;
                return Err(anyhow!(e).context(format!(
                    "restore of {backup_name} was loaded and checked but could not be swapped in; {dropped}"
                )));
            }
            swap::SwapState::Unknown => {
                return Err(anyhow!(e).context(format!(
                    "restore of {backup_name}: the swap failed half-way or its outcome is unknown; nothing was dropped"
                )));
            }
        }
    }
    let previous_dropped = if args.drop_previous {
        match restore::drop_database(admin, &previous).await {
            Ok(()) => true,
            Err(e) => {
                eprintln!(
                    "warning: the restored database is in place, but dropping the previous one, {previous}, failed: {e}"
                );
                false
            }
        }
    } else {
        false
    };
    Ok((
        loaded,
        Swapped {
            database: live.to_owned(),
            previous,
            previous_dropped,
        },
    ))
}

/// Drops a database this run created; says how that went.
async fn drop_note(admin: &dyn SqlSink, name: &str) -> String {
    match restore::drop_database(admin, name).await {
        Ok(()) => format!("the new database {name} was dropped"),
        Err(drop) => {
            format!("dropping the new database {name} failed too ({drop}); drop it by hand")
        }
    }
}

/// Says what will be replaced, and asks (or needs `--yes`).
fn confirm(
    args: &RestoreArgs,
    sink: &dyn SqlSink,
    info: &ServerInfo,
    backup: &Backup,
) -> Result<()> {
    eprintln!(
        "about to REPLACE {} ({}; {} table(s), {} bytes)\n  with {}",
        sink.describe(),
        info.version.split(" on ").next().unwrap_or(&info.version),
        info.tables,
        info.size_bytes,
        backup.describe()
    );
    if info.other_sessions > 0 && args.swap {
        eprintln!(
            "  {} other session(s) are connected to it: the swap ends them (stop the application first)",
            info.other_sessions
        );
    } else if info.other_sessions > 0 {
        eprintln!(
            "  {} other session(s) are connected to it: the restore waits for the locks they hold (stop the application first, or use --swap)",
            info.other_sessions
        );
    }
    if args.yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        bail!(
            "refusing to replace {} without --yes (stdin is not a terminal); nothing was changed",
            sink.describe()
        );
    }
    eprint!("type the database name ({}) to go on: ", info.database);
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if answer.trim() != info.database {
        bail!("not confirmed; nothing was changed");
    }
    Ok(())
}

/// One table in the verify report.
#[derive(Serialize)]
struct TableCheck {
    table: String,
    /// Rows after the restore.
    rows: i64,
    /// Rows in the dump's COPY block.
    expected: Option<u64>,
    /// Rows the integrity record counted when the backup was taken (newer records).
    recorded: Option<u64>,
    ok: bool,
}

/// What `litemaas-restore verify` found.
#[derive(Serialize)]
struct VerifyReport {
    backup: String,
    chosen: Option<Chosen>,
    scratch_database: String,
    passed: bool,
    failures: Vec<String>,
    restore: Option<RestoreReport>,
    tables: Vec<TableCheck>,
    scratch_dropped: bool,
}

/// A test restore into a scratch database, always dropped.
pub async fn verify(args: VerifyArgs) -> Result<()> {
    let cancel = litemaas_cli::cancel_on_signal();
    let backup = Backup::open(&args.backup, true)
        .await
        .context("verify FAILED: no backup to check")?;
    let server = sink(&args.target)
        .await
        .context("verify FAILED: no database to restore into")?;
    let scratch = args.scratch.clone().unwrap_or_else(|| {
        format!(
            "litemaas_verify_{}_{}",
            jiff::Timestamp::now().strftime("%Y%m%d_%H%M%S"),
            std::process::id()
        )
    });
    let mut report = VerifyReport {
        backup: backup.name.clone(),
        chosen: backup.chosen.clone(),
        scratch_database: scratch.clone(),
        passed: false,
        failures: Vec::new(),
        restore: None,
        tables: Vec::new(),
        scratch_dropped: false,
    };
    restore::create_database(server.as_ref(), &scratch).await?;
    eprintln!(
        "verify: restoring {} into scratch database {scratch}",
        backup.describe()
    );
    let target = server.with_database(&scratch);
    let checked = check(
        backup,
        target.as_ref(),
        jobs(args.jobs),
        &cancel,
        &mut report,
    )
    .await;
    if let Err(e) = &checked {
        report.failures.push(litemaas_cli::error_line(e));
    }
    match restore::drop_database(server.as_ref(), &scratch).await {
        Ok(()) => report.scratch_dropped = true,
        Err(e) => report.failures.push(format!(
            "dropping the scratch database {scratch} failed: {e}"
        )),
    }
    report.passed = report.failures.is_empty();
    for table in &report.tables {
        eprintln!(
            "  {} {}: {} row(s){}",
            if table.ok { "✓" } else { "✗" },
            table.table,
            table.rows,
            match table.expected {
                Some(n) if !table.ok => format!(", expected {n}"),
                _ => String::new(),
            }
        );
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    if report.passed {
        eprintln!(
            "verify: PASSED: {} restores ({} table(s)); scratch database {scratch} dropped",
            report.backup,
            report.tables.len()
        );
        Ok(())
    } else {
        bail!(
            "verify FAILED for {}: {}",
            report.backup,
            report.failures.join("; ")
        )
    }
}

/// Restore, then every table selectable and row counts as the dump carried them.
async fn check(
    backup: Backup,
    target: &dyn SqlSink,
    jobs: usize,
    cancel: &CancellationToken,
    report: &mut VerifyReport,
) -> Result<()> {
    let recorded = backup
        .chosen
        .as_ref()
        .and_then(|c| c.record.as_ref())
        .and_then(|r| r.tables.clone());
    let (restored, stats) = load(backup, target, jobs, None, cancel).await?;
    if let Some(stats) = &stats {
        eprintln!(
            "  loaded on {} connection(s){}",
            stats.jobs,
            stats
                .serial_from
                .as_ref()
                .map(|why| format!("; partly in order ({why})"))
                .unwrap_or_default()
        );
    }
    for check in &restored.checks {
        eprintln!("  ✓ {check}");
    }
    let counts = tokio::select! {
        () = cancel.cancelled() => bail!("cancelled"),
        counts = restore::count_rows(target) => counts.context("selecting from every table")?,
    };
    let mut wrong = Vec::new();
    for count in counts {
        let expected = restored.tables.get(&count.table).copied();
        let in_record = recorded.as_ref().and_then(|r| r.get(&count.table).copied());
        let matches = |n: Option<u64>| n.is_none_or(|n| i64::try_from(n).ok() == Some(count.rows));
        let ok = matches(expected) && matches(in_record);
        if !ok {
            wrong.push(count.table.clone());
        }
        report.tables.push(TableCheck {
            table: count.table,
            rows: count.rows,
            expected,
            recorded: in_record,
            ok,
        });
    }
    let missing: Vec<&String> = restored
        .tables
        .keys()
        .filter(|t| !report.tables.iter().any(|c| &&c.table == t))
        .collect();
    report.restore = Some(restored.clone());
    if !wrong.is_empty() {
        bail!(
            "row counts differ from the dump or its integrity record in {}",
            wrong.join(", ")
        );
    }
    if !missing.is_empty() {
        bail!(
            "tables of the dump missing after the restore: {}",
            missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}
