//! The stored bytes of a backup, decoded: the codec from the magic bytes (checked against what
//! the name and the integrity record say), SHA-256 and size of every stored byte, and the
//! decoder's verdict on the stream's end (gzip's CRC-32 and length trailer, zstd's frame end
//! and checksum when present).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use async_compression::tokio::bufread::{GzipDecoder, ZstdDecoder};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader, ReadBuf};

use crate::{Error, Result};

/// How a backup's bytes are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// gzip (`.sql.gz`), one member or several.
    Gzip,
    /// Zstandard (`.sql.zst`).
    Zstd,
    /// Plain SQL (`.sql`).
    None,
}

impl Codec {
    /// The codec a file name promises: `.gz`, `.zst`, `.sql`; `None` for other names.
    pub fn from_name(name: &str) -> Option<Codec> {
        if name.ends_with(".gz") {
            Some(Codec::Gzip)
        } else if name.ends_with(".zst") {
            Some(Codec::Zstd)
        } else if name.ends_with(".sql") {
            Some(Codec::None)
        } else {
            None
        }
    }

    /// The codec the first bytes show (gzip and zstd magic numbers; anything else is taken as
    /// plain text, which the SQL check then accepts or refuses).
    pub fn sniff(head: &[u8]) -> Codec {
        if head.starts_with(&[0x1f, 0x8b]) {
            Codec::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Codec::Zstd
        } else {
            Codec::None
        }
    }

    /// `gzip`, `zstd` or `none`.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Gzip => "gzip",
            Codec::Zstd => "zstd",
            Codec::None => "none",
        }
    }
}

/// What is known in advance about the stored bytes; every field that is set is checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    /// The object's name (`…/database-20260101-020000.sql.gz`), for the codec its suffix promises.
    pub name: Option<String>,
    /// The codec (from the integrity record).
    pub codec: Option<Codec>,
    /// SHA-256 of the stored bytes, hex (from the integrity record).
    pub sha256: Option<String>,
    /// Size of the stored bytes (from the integrity record or the store).
    pub stored_bytes: Option<u64>,
}

/// What was seen of the stored bytes.
#[derive(Debug, Clone, Default)]
pub(crate) struct StoredSeen {
    pub(crate) bytes: u64,
    pub(crate) sha256: Option<String>,
    pub(crate) eof: bool,
    hasher: Option<Sha256>,
}

/// Hashes and counts what passes; `progress` (if any) follows the count.
struct Hashing<R> {
    inner: R,
    seen: Arc<Mutex<StoredSeen>>,
    progress: Option<Arc<std::sync::atomic::AtomicU64>>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Hashing<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            let new = &buf.filled()[before..];
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if new.is_empty() {
                seen.eof = true;
                if let Some(hasher) = seen.hasher.take() {
                    seen.sha256 = Some(hex::encode(hasher.finalize()));
                }
            } else {
                seen.bytes += new.len() as u64;
                if let Some(hasher) = seen.hasher.as_mut() {
                    hasher.update(new);
                }
            }
            drop(seen);
            if let Some(progress) = &self.progress {
                progress.fetch_add(new.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
        }
        result
    }
}

/// The decoded SQL of a backup, and what is learnt about the stored bytes while reading it.
pub(crate) struct Decoded {
    pub(crate) sql: Pin<Box<dyn AsyncRead + Send>>,
    pub(crate) codec: Codec,
    pub(crate) seen: Arc<Mutex<StoredSeen>>,
}

/// Reads the first bytes, settles the codec (refusing a mismatch with the name or the record)
/// and builds the decoder.
pub(crate) async fn open(
    stored: Pin<Box<dyn AsyncRead + Send>>,
    expected: &Expected,
    progress: Option<Arc<std::sync::atomic::AtomicU64>>,
) -> Result<Decoded> {
    let seen = Arc::new(Mutex::new(StoredSeen {
        hasher: Some(Sha256::new()),
        ..StoredSeen::default()
    }));
    let hashing = Hashing {
        inner: stored,
        seen: seen.clone(),
        progress,
    };
    let mut buffered = BufReader::with_capacity(256 * 1024, hashing);
    let head = buffered
        .fill_buf()
        .await
        .map_err(|source| Error::Read { source })?;
    if head.is_empty() {
        return Err(Error::Empty);
    }
    let codec = Codec::sniff(head);
    if let Some(promised) = expected.codec
        && promised != codec
    {
        return Err(Error::CodecMismatch {
            what: "its integrity record".into(),
            promised,
            found: codec,
        });
    }
    if let Some(name) = &expected.name
        && let Some(promised) = Codec::from_name(name)
        && promised != codec
    {
        return Err(Error::CodecMismatch {
            what: format!("its name {name:?}"),
            promised,
            found: codec,
        });
    }
    let sql: Pin<Box<dyn AsyncRead + Send>> = match codec {
        Codec::Gzip => {
            let mut decoder = GzipDecoder::new(buffered);
            decoder.multiple_members(true);
            Box::pin(decoder)
        }
        Codec::Zstd => {
            let mut decoder = ZstdDecoder::new(buffered);
            decoder.multiple_members(true);
            Box::pin(decoder)
        }
        Codec::None => Box::pin(buffered),
    };
    Ok(Decoded { sql, codec, seen })
}

/// Checks the stored bytes against what was expected, once they were read to their end.
pub(crate) fn check_stored(seen: &StoredSeen, expected: &Expected) -> Result<String> {
    let Some(sha256) = seen.sha256.clone().filter(|_| seen.eof) else {
        return Err(Error::Internal(
            "the stored bytes were not read to their end".into(),
        ));
    };
    if let Some(size) = expected.stored_bytes
        && size != seen.bytes
    {
        return Err(Error::SizeMismatch {
            expected: size,
            found: seen.bytes,
        });
    }
    if let Some(want) = &expected.sha256
        && !want.eq_ignore_ascii_case(&sha256)
    {
        return Err(Error::ChecksumMismatch {
            expected: want.clone(),
            found: sha256,
        });
    }
    Ok(sha256)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codecs_from_names_and_magic() {
        assert_eq!(
            Codec::from_name("p/database-20260101-020000.sql.gz"),
            Some(Codec::Gzip)
        );
        assert_eq!(Codec::from_name("database.sql.zst"), Some(Codec::Zstd));
        assert_eq!(Codec::from_name("database.sql"), Some(Codec::None));
        assert_eq!(Codec::from_name("database.dump"), None);
        assert_eq!(Codec::sniff(&[0x1f, 0x8b, 8]), Codec::Gzip);
        assert_eq!(Codec::sniff(&[0x28, 0xb5, 0x2f, 0xfd, 0]), Codec::Zstd);
        assert_eq!(Codec::sniff(b"--\n"), Codec::None);
    }
}
