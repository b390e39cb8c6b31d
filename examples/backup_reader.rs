//! Back up any byte stream, not only pg_dump: here standard input, into a local directory, with
//! the same compression, integrity record and all-or-nothing guarantee.
//!
//! ```text
//! pg_dumpall --globals-only | cargo run --example backup_reader -- ./globals-backups
//! ```
#![allow(missing_docs)]

use anyhow::{Result, bail};
use async_trait::async_trait;
use litemaas_backup::backup::{self, BackupOptions};
use litemaas_backup::dump::{DumpSource, DumpStream};
use litemaas_backup::store::LocalStore;
use tokio_util::sync::CancellationToken;

/// Standard input as a dump source: its end is its success.
#[derive(Debug)]
struct Stdin;

#[async_trait]
impl DumpSource for Stdin {
    fn describe(&self) -> String {
        "standard input".into()
    }
    fn database(&self) -> Option<String> {
        None
    }
    async fn start(&self) -> litemaas_backup::dump::Result<DumpStream> {
        Ok(DumpStream::from_reader(tokio::io::stdin()))
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let Some(dir) = std::env::args().nth(1) else {
        bail!("usage: backup_reader <DIR> < data")
    };
    let mut options = BackupOptions::new(jiff::Timestamp::now());
    options.prefix = String::new();
    let report = backup::run(
        &Stdin,
        &LocalStore::new(dir),
        &options,
        &CancellationToken::new(),
    )
    .await?;
    println!(
        "{} ({} bytes, sha256 {})",
        report.key, report.bytes, report.sha256
    );
    Ok(())
}
