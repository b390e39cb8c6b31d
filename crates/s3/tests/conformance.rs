//! One behaviour suite run against every store: memory, a local directory, and S3 — moto and
//! s3rver, two independent implementations. What a store is known to do differently from AWS
//! S3 is declared once, in [`Known`], and checked: nothing is skipped silently.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use bytes::Bytes;
use litemaas_s3::{
    Error, LocalStore, MIN_PART_SIZE, MemoryStore, Metadata, ObjectStore, PutMode, S3Store,
    UploadOptions, UploadWriter,
};
use litemaas_testkit::S3Server;

/// What a store does where it differs from AWS S3. The suite asserts each line, so a store
/// that changes (a new s3rver that lists uploads, a moto with true start times) fails here
/// until its declaration is brought up to date.
#[derive(Debug, Clone, Copy)]
struct Known {
    /// ListMultipartUploads works; otherwise it answers `NotImplemented`
    /// ([`Error::is_not_implemented`]), as s3rver 3.7.1 does.
    lists_uploads: bool,
    /// AbortMultipartUpload works; otherwise it answers `MethodNotAllowed`
    /// ([`Error::is_not_implemented`] too), as s3rver 3.7.1 does: the parts stay.
    aborts_uploads: bool,
    /// Pending uploads carry the time they were started; otherwise one fixed time, as moto
    /// 5.2.5 reports (2010-11-10T20:48:33Z for every upload).
    true_initiated: bool,
    /// `If-None-Match: *` (PutMode::Create) is honoured with a refusal; otherwise ignored and the
    /// object replaced, as s3rver 3.7.1 does.
    enforces_create: bool,
}

/// AWS S3's behaviour, and that of the local and memory stores.
const FAITHFUL: Known = Known {
    lists_uploads: true,
    aborts_uploads: true,
    true_initiated: true,
    enforces_create: true,
};
/// moto 5.2.5.
const MOTO: Known = Known {
    true_initiated: false,
    ..FAITHFUL
};
/// s3rver 3.7.1.
const S3RVER: Known = Known {
    lists_uploads: false,
    aborts_uploads: false,
    true_initiated: false, // nothing to report them with
    enforces_create: false,
};

/// A fresh bucket on `server`, and what that server is known to do.
async fn s3_store_on(server: &S3Server, prefix: &str) -> (S3Store, Known) {
    let bucket = server.new_bucket(prefix).await.unwrap();
    let known = match server.implementation() {
        litemaas_testkit::s3::Implementation::Moto => MOTO,
        litemaas_testkit::s3::Implementation::S3rver => S3RVER,
    };
    (S3Store::new(server.client(), bucket), known)
}

async fn s3_store(prefix: &str) -> S3Store {
    s3_store_on(S3Server::shared(), prefix).await.0
}

/// The pending uploads under `prefix`, or `None` where the store is declared not to list them
/// (and then it must answer NotImplemented).
async fn pending(
    store: &dyn ObjectStore,
    known: Known,
    prefix: &str,
) -> Option<Vec<litemaas_s3::PendingUpload>> {
    let listed = store.list_pending_uploads(prefix).await;
    if known.lists_uploads {
        Some(listed.unwrap())
    } else {
        let err = listed.unwrap_err();
        assert!(err.is_not_implemented(), "{err:?}");
        None
    }
}

fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

async fn put_get_head_list_delete(store: Arc<dyn ObjectStore>) {
    store.check().await.unwrap();
    store
        .put("p/a/one.txt", Bytes::from_static(b"one"))
        .await
        .unwrap();
    store
        .put("p/b.txt", Bytes::from_static(b"bee"))
        .await
        .unwrap();
    store
        .put("q/other.txt", Bytes::from_static(b"x"))
        .await
        .unwrap();

    assert_eq!(store.get_bytes("p/a/one.txt").await.unwrap(), "one");
    let head = store.head("p/b.txt").await.unwrap();
    assert_eq!((head.key.as_str(), head.size), ("p/b.txt", 3));
    assert!(head.last_modified > jiff::Timestamp::UNIX_EPOCH);

    let keys: Vec<_> = store
        .list("p/")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(keys, ["p/a/one.txt", "p/b.txt"]);
    let keys: Vec<_> = store
        .list("p/a")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(keys, ["p/a/one.txt"]);
    assert!(store.list("nothing/").await.unwrap().is_empty());

    // Overwrite replaces.
    store
        .put("p/b.txt", Bytes::from_static(b"bumblebee"))
        .await
        .unwrap();
    assert_eq!(store.get_bytes("p/b.txt").await.unwrap(), "bumblebee");

    store.delete("p/b.txt").await.unwrap();
    store.delete("p/b.txt").await.unwrap(); // deleting twice is fine
    assert!(matches!(
        store.head("p/b.txt").await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        store.get("p/b.txt").await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        store.put("../escape", Bytes::new()).await,
        Err(Error::InvalidKey { .. })
    ));
}

async fn multipart_round_trip(store: Arc<dyn ObjectStore>, known: Known) {
    let data = pattern(2 * MIN_PART_SIZE + 12345, 7);
    let upload = store.put_multipart("mp/big.bin").await.unwrap();
    let mut writer = UploadWriter::new(
        upload,
        UploadOptions {
            part_size: MIN_PART_SIZE,
            ..UploadOptions::default()
        },
    );
    for chunk in data.chunks(1_000_003) {
        writer.write(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    // Nothing is visible before completion, and the upload is pending.
    assert!(store.list("mp/").await.unwrap().is_empty());
    let summary = writer.finish().await.unwrap();
    assert_eq!(summary.parts, 3);
    assert_eq!(summary.bytes, data.len() as u64);
    assert_eq!(store.get_bytes("mp/big.bin").await.unwrap(), data);
    if let Some(pending) = pending(&*store, known, "mp/").await {
        assert!(pending.is_empty(), "{pending:?}");
    }
}

async fn aborted_upload_leaves_nothing(store: Arc<dyn ObjectStore>, known: Known) {
    let upload = store.put_multipart("ab/gone.bin").await.unwrap();
    let mut writer = UploadWriter::new(
        upload,
        UploadOptions {
            part_size: MIN_PART_SIZE,
            ..UploadOptions::default()
        },
    );
    writer.write(pattern(MIN_PART_SIZE + 10, 1)).await.unwrap();
    if let Some(pending) = pending(&*store, known, "ab/").await {
        assert_eq!(pending.len(), 1, "{pending:?}");
        assert_eq!(pending[0].key, "ab/gone.bin");
    }
    let aborted = writer.abort().await;
    if known.aborts_uploads {
        aborted.unwrap();
    } else {
        let err = aborted.unwrap_err();
        assert!(err.is_not_implemented(), "{err:?}");
    }
    assert!(store.list("ab/").await.unwrap().is_empty());
    if let Some(pending) = pending(&*store, known, "ab/").await {
        assert!(pending.is_empty(), "{pending:?}");
    }
}

async fn pending_uploads_can_be_aborted_later(store: Arc<dyn ObjectStore>, known: Known) {
    // A crash: the upload is started and its writer forgotten.
    let started = jiff::Timestamp::now();
    let mut upload = store.put_multipart("crash/left.bin").await.unwrap();
    upload.put_part(pattern(100, 2)).await.unwrap();
    std::mem::forget(upload);
    let Some(pending) = pending(&*store, known, "crash/").await else {
        // Such a store leaves it to the bucket's lifecycle rule (AbortIncompleteMultipartUpload).
        return;
    };
    assert_eq!(pending.len(), 1);
    let age = jiff::Timestamp::now().duration_since(pending[0].initiated);
    let took = jiff::Timestamp::now().duration_since(started);
    if known.true_initiated {
        // Local stores keep file times to the second or better.
        assert!(
            age <= took + jiff::SignedDuration::from_secs(2),
            "{:?} started {age} ago",
            pending[0]
        );
    } else {
        assert!(
            age > jiff::SignedDuration::from_hours(24),
            "{:?}",
            pending[0]
        );
    }
    assert!(
        store
            .list_pending_uploads("other/")
            .await
            .unwrap()
            .is_empty()
    );
    store.abort_pending_upload(&pending[0]).await.unwrap();
    assert!(
        store
            .list_pending_uploads("crash/")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.list("crash/").await.unwrap().is_empty());
}

async fn metadata_set_at_creation_is_read_back(store: Arc<dyn ObjectStore>) {
    let metadata: litemaas_s3::Metadata =
        [("litemaas-backup".to_owned(), "0.1.0".to_owned())].into();
    let upload = store
        .put_multipart_with("meta/marked.bin", &metadata)
        .await
        .unwrap();
    let mut writer = UploadWriter::new(upload, UploadOptions::default());
    writer.write(pattern(1000, 3)).await.unwrap();
    writer.finish().await.unwrap();
    store
        .put("meta/plain.bin", Bytes::from_static(b"x"))
        .await
        .unwrap();
    let head = store.head("meta/marked.bin").await.unwrap();
    assert_eq!(head.metadata, metadata);
    assert_eq!(
        store.get("meta/marked.bin").await.unwrap().meta.metadata,
        metadata
    );
    assert!(
        store
            .head("meta/plain.bin")
            .await
            .unwrap()
            .metadata
            .is_empty()
    );
    // Listings hold keys only (S3's do not carry metadata), and a delete takes the metadata too.
    let listed = store.list("meta/").await.unwrap();
    assert_eq!(
        listed.iter().map(|m| m.key.as_str()).collect::<Vec<_>>(),
        ["meta/marked.bin", "meta/plain.bin"]
    );
    store.delete("meta/marked.bin").await.unwrap();
    store
        .put("meta/marked.bin", Bytes::from_static(b"y"))
        .await
        .unwrap();
    assert!(
        store
            .head("meta/marked.bin")
            .await
            .unwrap()
            .metadata
            .is_empty()
    );
}

/// A create-only write never replaces what another writer put at its key, even when that
/// writer got there while a multipart upload was in flight; the other object survives
/// byte-identical, with its metadata, and the refused upload can be aborted. A store declared
/// to ignore `If-None-Match` must still work: it replaces.
async fn create_only_writes_never_replace(store: Arc<dyn ObjectStore>, known: Known) {
    store
        .put_opts("cr/new.json", Bytes::from_static(b"first"), PutMode::Create)
        .await
        .unwrap();
    let second = store
        .put_opts(
            "cr/new.json",
            Bytes::from_static(b"second"),
            PutMode::Create,
        )
        .await;
    if known.enforces_create {
        let err = second.unwrap_err();
        assert!(err.is_already_exists(), "{err:?}");
        assert!(err.to_string().contains("cr/new.json"), "{err}");
        assert_eq!(store.get_bytes("cr/new.json").await.unwrap(), "first");
    } else {
        second.unwrap();
        assert_eq!(store.get_bytes("cr/new.json").await.unwrap(), "second");
    }

    // Another writer takes the key while our upload is in flight.
    let ours: Metadata = [("litemaas-backup-run".to_owned(), "ours".to_owned())].into();
    let upload = store
        .put_multipart_opts("cr/dump.gz", &ours, PutMode::Create)
        .await
        .unwrap();
    let mut writer = UploadWriter::new(upload, UploadOptions::default());
    writer.write(pattern(1000, 4)).await.unwrap();
    let theirs: Metadata = [("litemaas-backup-run".to_owned(), "theirs".to_owned())].into();
    let other = store
        .put_multipart_with("cr/dump.gz", &theirs)
        .await
        .unwrap();
    let mut other = UploadWriter::new(other, UploadOptions::default());
    other.write(pattern(2000, 5)).await.unwrap();
    other.finish().await.unwrap();
    let finished = writer.finish().await;
    let head = store.head("cr/dump.gz").await.unwrap();
    if known.enforces_create {
        let err = finished.unwrap_err();
        assert!(err.is_already_exists(), "{err:?}");
        assert_eq!(
            store.get_bytes("cr/dump.gz").await.unwrap(),
            pattern(2000, 5)
        );
        assert_eq!(head.metadata, theirs);
    } else {
        finished.unwrap();
        assert_eq!(head.metadata, ours);
    }
    if let Some(pending) = pending(&*store, known, "cr/").await {
        assert!(
            pending.is_empty(),
            "the refused upload was aborted: {pending:?}"
        );
    }

    // On a free key, a create-only upload completes like any other.
    let upload = store
        .put_multipart_opts("cr/free.gz", &ours, PutMode::Create)
        .await
        .unwrap();
    let mut writer = UploadWriter::new(upload, UploadOptions::default());
    writer.write(pattern(10, 6)).await.unwrap();
    writer.finish().await.unwrap();
    assert_eq!(store.head("cr/free.gz").await.unwrap().metadata, ours);
}

/// Creators of one key completing at once: exactly one wins, and the object is the winner's
/// whole — its bytes and its metadata (the local store's lock keeps a loser's metadata from
/// landing beside the winner's bytes).
async fn concurrent_creators_one_wins(store: Arc<dyn ObjectStore>, known: Known) {
    let mut uploads = Vec::new();
    for i in 0..8u8 {
        let metadata: Metadata = [("litemaas-backup-run".to_owned(), i.to_string())].into();
        let upload = store
            .put_multipart_opts("race/dump.gz", &metadata, PutMode::Create)
            .await
            .unwrap();
        let mut writer = UploadWriter::new(upload, UploadOptions::default());
        writer
            .write(pattern(100 + usize::from(i), i))
            .await
            .unwrap();
        uploads.push(writer);
    }
    let finished =
        futures::future::join_all(uploads.into_iter().map(|writer| writer.finish())).await;
    let winners: Vec<usize> = finished
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_ok())
        .map(|(i, _)| i)
        .collect();
    if !known.enforces_create {
        assert_eq!(winners.len(), 8);
        return;
    }
    assert_eq!(winners.len(), 1, "{finished:?}");
    for result in &finished {
        if let Err(e) = result {
            assert!(e.is_already_exists(), "{e:?}");
        }
    }
    let winner = winners[0];
    let head = store.head("race/dump.gz").await.unwrap();
    assert_eq!(
        head.metadata.get("litemaas-backup-run"),
        Some(&winner.to_string())
    );
    assert_eq!(
        store.get_bytes("race/dump.gz").await.unwrap(),
        pattern(100 + winner, u8::try_from(winner).unwrap())
    );
}

async fn suite(store: Arc<dyn ObjectStore>, known: Known) {
    metadata_set_at_creation_is_read_back(store.clone()).await;
    put_get_head_list_delete(store.clone()).await;
    multipart_round_trip(store.clone(), known).await;
    aborted_upload_leaves_nothing(store.clone(), known).await;
    pending_uploads_can_be_aborted_later(store.clone(), known).await;
    create_only_writes_never_replace(store.clone(), known).await;
    concurrent_creators_one_wins(store, known).await;
}

#[tokio::test]
async fn memory_store_conforms() {
    suite(Arc::new(MemoryStore::new()), FAITHFUL).await;
}

#[tokio::test]
async fn local_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    suite(
        Arc::new(LocalStore::new(dir.path().join("backups"))),
        FAITHFUL,
    )
    .await;
    // No temporary files are left behind next to the objects.
    assert!(!dir.path().join("backups/.uploads").exists());
}

#[tokio::test]
async fn s3_store_conforms() {
    let (store, known) = s3_store_on(S3Server::shared(), "conformance").await;
    suite(Arc::new(store), known).await;
}

#[tokio::test]
async fn s3rver_store_conforms() {
    let (store, known) = s3_store_on(S3Server::shared_s3rver(), "conformance").await;
    suite(Arc::new(store), known).await;
}

#[tokio::test]
async fn s3rver_store_without_checksums_conforms() {
    let (store, known) = s3_store_on(S3Server::shared_s3rver(), "nochecksum").await;
    suite(Arc::new(without_checksums(store)), known).await;
}

/// As for S3-compatible stores that reject x-amz-checksum-* headers: the client sends
/// checksums only where required, and parts carry none.
fn without_checksums(store: S3Store) -> S3Store {
    let config = store
        .client()
        .config()
        .to_builder()
        .request_checksum_calculation(aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired)
        .build();
    S3Store::new(aws_sdk_s3::Client::from_conf(config), store.bucket()).without_checksums()
}

#[tokio::test]
async fn s3_lists_across_pages() {
    let store = s3_store("pages").await.with_page_size(2);
    for i in 0..5 {
        store
            .put(&format!("pg/{i}"), Bytes::from(vec![b'x'; i]))
            .await
            .unwrap();
    }
    let listed = store.list("pg/").await.unwrap();
    assert_eq!(
        listed.iter().map(|m| m.size).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
}

#[tokio::test]
async fn s3_missing_bucket_is_named() {
    let store = S3Store::new(S3Server::shared().client(), "no-such-bucket-litemaas");
    let err = store.check().await.unwrap_err();
    assert!(
        matches!(&err, Error::BucketNotFound { bucket } if bucket == "no-such-bucket-litemaas"),
        "{err:?}"
    );
    let err = store.put_multipart("x").await.unwrap_err();
    assert!(matches!(err, Error::BucketNotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn s3_rejects_small_parts_and_the_upload_is_aborted() {
    let store = s3_store("small").await;
    let upload = store.put_multipart("small/x.bin").await.unwrap();
    let options = UploadOptions {
        part_size: 1024,
        allow_small_parts: true,
        ..UploadOptions::default()
    };
    let mut writer = UploadWriter::new(upload, options);
    writer.write(pattern(3000, 3)).await.unwrap();
    let err = writer.finish().await.unwrap_err();
    assert!(
        matches!(&err, Error::Service { code, .. } if code == "EntityTooSmall"),
        "{err:?}"
    );
    assert!(store.list("small/").await.unwrap().is_empty());
    assert!(
        store
            .list_pending_uploads("small/")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn s3_unreachable_endpoint_is_named() {
    let port = litemaas_testkit::free_port().unwrap();
    let endpoint = format!("http://127.0.0.1:{port}");
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(&endpoint)
        .force_path_style(true)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "a", "b", None, None, "test",
        ))
        .build();
    let store = S3Store::new(aws_sdk_s3::Client::from_conf(config), "bucket");
    let err = store.check().await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Unreachable {
                operation: "HeadBucket",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_transient());
}

/// A server that answers `503 SlowDown` to the first `failures` requests, then 200.
async fn flaky_server(failures: usize) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    // One request per read is enough for HEAD requests without bodies.
                    let Ok(n) = socket.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    let i = counter.fetch_add(1, Ordering::SeqCst);
                    // HeadBucket: S3 answers throttling with a bare 503 (no body on HEAD).
                    let response = if i < failures {
                        "HTTP/1.1 503 Slow Down\r\ncontent-length: 0\r\n\r\n"
                    } else {
                        "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
                    };
                    if socket.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (endpoint, seen)
}

fn static_config() -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::SharedCredentialsProvider::new(
            aws_sdk_s3::config::Credentials::new("a", "b", None, None, "test"),
        ))
        .build()
}

#[tokio::test]
async fn throttling_is_retried_with_backoff() {
    let (endpoint, seen) = flaky_server(2).await;
    let mut options = litemaas_s3::S3Options::new("bucket");
    options.endpoint_url = Some(endpoint);
    let store = S3Store::from_sdk_config(&static_config(), &options).unwrap();
    store.check().await.unwrap();
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 3);
}

#[tokio::test]
async fn persistent_throttling_gives_up_after_the_configured_attempts() {
    let (endpoint, seen) = flaky_server(usize::MAX).await;
    let mut options = litemaas_s3::S3Options::new("bucket");
    options.endpoint_url = Some(endpoint);
    options.max_attempts = 3;
    let store = S3Store::from_sdk_config(&static_config(), &options).unwrap();
    let err = store.check().await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 3);
}

#[tokio::test]
async fn s3_store_without_checksums_conforms() {
    let (store, known) = s3_store_on(S3Server::shared(), "nochecksum").await;
    suite(Arc::new(without_checksums(store)), known).await;
}
