//! Verify a stored backup against its integrity record, streaming: size and SHA-256 of the
//! object, that it decompresses, and that the SQL inside ends with pg_dump's completion marker.
//!
//! ```text
//! cargo run --example verify_backup -- ./litemaas-backups database-20260101-020000.sql.gz
//! cargo run --example verify_backup -- s3://maas-db-backup litemaas-backups/database-20260101-020000.sql.gz
//! ```
#![allow(missing_docs)]

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use futures::TryStreamExt;
use litemaas_backup::dump::Compression;
use litemaas_backup::record::{IntegrityRecord, record_key};
use litemaas_backup::store::{LocalStore, ObjectStore, S3Options, S3Store};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let (Some(location), Some(key)) = (args.next(), args.next()) else {
        bail!("usage: verify_backup <DIR | s3://BUCKET> <KEY>");
    };
    let store: Arc<dyn ObjectStore> = match location.strip_prefix("s3://") {
        Some(bucket) => Arc::new(S3Store::connect(&S3Options::new(bucket)).await?),
        None => Arc::new(LocalStore::new(&location)),
    };

    let record: IntegrityRecord = serde_json::from_slice(
        &store
            .get_bytes(&record_key(&key))
            .await
            .context("reading the integrity record")?,
    )
    .context("parsing the integrity record")?;

    // One pass over the object: hash what is stored while decompressing it.
    let object = store.get(&key).await?;
    let mut hasher = Sha256::new();
    let mut stored: u64 = 0;
    let bytes = object.stream.map_ok(|chunk| {
        hasher.update(&chunk);
        stored += chunk.len() as u64;
        chunk
    });
    let reader = tokio_util::io::StreamReader::new(bytes.map_err(std::io::Error::other));
    let mut sql: Box<dyn AsyncRead + Unpin + Send> = match record.compression {
        Compression::Gzip { .. } => {
            // A backup's gzip may hold several members (one per compressed block).
            let mut decoder = async_compression::tokio::bufread::GzipDecoder::new(reader);
            decoder.multiple_members(true);
            Box::new(decoder)
        }
        Compression::Zstd { .. } => {
            Box::new(async_compression::tokio::bufread::ZstdDecoder::new(reader))
        }
        Compression::None => Box::new(reader),
    };
    let (mut raw, mut tail, mut buf) = (0u64, Vec::new(), vec![0u8; 256 * 1024]);
    loop {
        let n = sql.read(&mut buf).await.context("decompressing")?;
        if n == 0 {
            break;
        }
        raw += n as u64;
        tail.extend_from_slice(&buf[..n]);
        let keep = tail.len().saturating_sub(512);
        tail.drain(..keep);
    }
    drop(sql);

    let sha256 = hex::encode(hasher.finalize());
    // Only a pg_dump has a completion marker; other sources end where they end.
    let from_pg_dump = record
        .dump
        .tool_version
        .as_deref()
        .is_some_and(|v| v.starts_with("pg_dump"));
    let complete = !from_pg_dump
        || String::from_utf8_lossy(&tail).contains("-- PostgreSQL database dump complete");
    let checks = [
        ("stored size", stored == record.stored_bytes),
        ("sha256", sha256 == record.sha256),
        ("uncompressed size", raw == record.raw_bytes),
        ("completion marker", complete),
    ];
    for (what, ok) in checks {
        println!("{:<18} {}", what, if ok { "ok" } else { "MISMATCH" });
    }
    if checks.iter().all(|(_, ok)| *ok) {
        println!("{key}: verified ({stored} bytes, sha256 {sha256})");
        Ok(())
    } else {
        bail!("{key} does not match its integrity record")
    }
}
