//! Restore a stored backup into a database with the library: choose it (a key, or the newest
//! complete dump), then stream it through the checks into psql — all or nothing.
//!
//! ```text
//! LITEMAAS_DATABASE_URL=postgres://postgres@127.0.0.1:5432/restored \
//!     cargo run --example restore_into -- ./litemaas-backups [KEY]
//! ```
#![allow(missing_docs)]

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use litemaas_backup::catalog::{self, Selection};
use litemaas_backup::dump::PgConnection;
use litemaas_backup::restore::{self, LocalPsql, RestoreOptions};
use litemaas_backup::store::{LocalStore, ObjectStore, S3Options, S3Store};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let Some(location) = args.next() else {
        bail!(
            "usage: restore_into <DIR | s3://BUCKET/PREFIX> [KEY]  (target: LITEMAAS_DATABASE_URL)"
        );
    };
    let selection = args.next().map_or(Selection::Latest, Selection::Key);
    let (store, prefix): (Arc<dyn ObjectStore>, String) = match location.strip_prefix("s3://") {
        Some(rest) => {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, "litemaas-backups"));
            (
                Arc::new(S3Store::connect(&S3Options::new(bucket)).await?),
                prefix.to_owned(),
            )
        }
        None => (Arc::new(LocalStore::new(&location)), String::new()),
    };
    let url = std::env::var("LITEMAAS_DATABASE_URL").context("set LITEMAAS_DATABASE_URL")?;
    let sink = LocalPsql::new(PgConnection::parse(&url)?);

    let chosen = catalog::choose(store.as_ref(), &prefix, &selection).await?;
    let options = RestoreOptions {
        expected: chosen.expected(),
        progress: None,
        ..RestoreOptions::default()
    };
    let reader = catalog::open(store, &chosen.key).await?;
    let report = restore::restore(reader, &sink, &options, &CancellationToken::new()).await?;
    println!(
        "{} restored into {}: {} table(s), {} rows; {}",
        chosen.key,
        report.target,
        report.tables.len(),
        report.tables.values().sum::<u64>(),
        report.checks.join("; ")
    );
    Ok(())
}
