//! The fault proxy in front of the real S3 test server (moto), driven by the AWS SDK.
//!
//! Each test records what the SDK makes of a fault, so that the backup's tests can rely on it.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use litemaas_testkit::S3Server;
use litemaas_testkit::proxy::{Fault, FaultProxy, Nth, Op, Rule};

const MIB: usize = 1024 * 1024;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// moto, a fresh bucket on it, and a proxy in front of it.
async fn setup(prefix: &str) -> (&'static S3Server, FaultProxy, String) {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket(prefix).await.unwrap();
    let proxy = FaultProxy::start(s3.endpoint()).unwrap();
    (s3, proxy, bucket)
}

/// A client through the proxy with the standard retry strategy (3 attempts, short backoff).
fn retrying_client(proxy: &FaultProxy) -> Client {
    Client::from_conf(
        proxy
            .s3_config()
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(3)
                    .with_initial_backoff(Duration::from_millis(10))
                    .with_max_backoff(Duration::from_millis(50)),
            )
            .build(),
    )
}

fn text<E: std::error::Error>(err: &E) -> String {
    DisplayErrorContext(err).to_string()
}

/// The HTTP status of the response an error came with, if any.
fn status<E>(err: &SdkError<E, HttpResponse>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

/// The request could not be sent or its response not read: an I/O error (reset, EOF).
fn is_io_dispatch_failure<E>(err: &SdkError<E, HttpResponse>) -> bool {
    matches!(err, SdkError::DispatchFailure(d) if d.is_io())
}

async fn exists(s3: &S3Server, bucket: &str, key: &str) -> bool {
    match s3
        .client()
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
    {
        Ok(_) => true,
        Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found()) => false,
        Err(e) => panic!("HeadObject on moto: {}", text(&e)),
    }
}

async fn put(client: &Client, bucket: &str, key: &str, body: &[u8]) -> Result<(), String> {
    client
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body.to_vec()))
        .send()
        .await
        .map(drop)
        .map_err(|e| text(&e))
}

/// Starts a multipart upload of one part (through `client`) and returns its id and parts.
/// CompleteMultipartUpload of `key` with `parts`, through `client`.
async fn complete(
    client: &Client,
    bucket: &str,
    key: &str,
    upload_id: &str,
    parts: &CompletedMultipartUpload,
) -> Result<
    aws_sdk_s3::operation::complete_multipart_upload::CompleteMultipartUploadOutput,
    aws_sdk_s3::error::SdkError<
        aws_sdk_s3::operation::complete_multipart_upload::CompleteMultipartUploadError,
    >,
> {
    client
        .complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .multipart_upload(parts.clone())
        .send()
        .await
}

async fn one_part_upload(
    client: &Client,
    bucket: &str,
    key: &str,
) -> (String, CompletedMultipartUpload) {
    let upload_id = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap()
        .upload_id
        .unwrap();
    let part = client
        .upload_part()
        .bucket(bucket)
        .key(key)
        .upload_id(&upload_id)
        .part_number(1)
        .body(ByteStream::from(pattern(1000, 7)))
        .send()
        .await
        .unwrap();
    let parts = CompletedMultipartUpload::builder()
        .parts(
            CompletedPart::builder()
                .part_number(1)
                .set_e_tag(part.e_tag)
                .set_checksum_crc32(part.checksum_crc32)
                .build(),
        )
        .build();
    (upload_id, parts)
}

#[tokio::test]
async fn pass_through_multipart_round_trip_is_recorded() {
    let (s3, proxy, bucket) = setup("proxy-pass").await;
    let client = proxy.client();
    let key = "dir/backup.sql.gz";
    let part1 = pattern(5 * MIB, 1);
    let part2 = pattern(300_000, 2);
    // The second part streams from a file: the SDK sends it aws-chunked with a checksum trailer.
    let dir = tempfile::tempdir().unwrap();
    let part2_path = dir.path().join("part2");
    std::fs::write(&part2_path, &part2).unwrap();

    let upload_id = client
        .create_multipart_upload()
        .bucket(&bucket)
        .key(key)
        .send()
        .await
        .unwrap()
        .upload_id
        .unwrap();
    let mut completed = Vec::new();
    for (n, body) in [
        (1, ByteStream::from(part1.clone())),
        (2, ByteStream::from_path(&part2_path).await.unwrap()),
    ] {
        let out = client
            .upload_part()
            .bucket(&bucket)
            .key(key)
            .upload_id(&upload_id)
            .part_number(n)
            .body(body)
            .send()
            .await
            .unwrap();
        completed.push(
            CompletedPart::builder()
                .part_number(n)
                .set_e_tag(out.e_tag)
                .set_checksum_crc32(out.checksum_crc32)
                .build(),
        );
    }
    let listed = client
        .list_multipart_uploads()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    assert!(
        listed
            .uploads()
            .iter()
            .any(|u| u.upload_id() == Some(&upload_id))
    );
    client
        .complete_multipart_upload()
        .bucket(&bucket)
        .key(key)
        .upload_id(&upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(completed))
                .build(),
        )
        .send()
        .await
        .unwrap();

    // The object is whole, read through the proxy and straight from moto.
    let mut expected = part1;
    expected.extend_from_slice(&part2);
    for reader in [&client, &s3.client()] {
        let got = reader
            .get_object()
            .bucket(&bucket)
            .key(key)
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes();
        assert!(got == expected, "object differs ({} bytes)", got.len());
    }
    let head = client
        .head_object()
        .bucket(&bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_length(), Some(expected.len() as i64));
    let list = client
        .list_objects_v2()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    assert_eq!(list.key_count(), Some(1));
    put(&client, &bucket, "small", b"hello").await.unwrap();
    client
        .delete_object()
        .bucket(&bucket)
        .key("small")
        .send()
        .await
        .unwrap();
    let aborted = client
        .create_multipart_upload()
        .bucket(&bucket)
        .key("aborted")
        .send()
        .await
        .unwrap()
        .upload_id
        .unwrap();
    client
        .abort_multipart_upload()
        .bucket(&bucket)
        .key("aborted")
        .upload_id(&aborted)
        .send()
        .await
        .unwrap();

    use Op::*;
    assert_eq!(
        proxy.ops(),
        [
            CreateMultipartUpload,
            UploadPart,
            UploadPart,
            ListMultipartUploads,
            CompleteMultipartUpload,
            GetObject,
            HeadObject,
            ListObjectsV2,
            PutObject,
            DeleteObject,
            CreateMultipartUpload,
            AbortMultipartUpload,
        ]
    );
    assert_eq!(proxy.count(UploadPart), 2);
    assert_eq!(proxy.count(CreateMultipartUpload), 2);
    assert_eq!(proxy.count(Other), 0);
    let log = proxy.log();
    for seen in &log {
        assert_eq!(seen.fault, None);
        // Host as the client sent it: the proxy's address, which SigV4 signed.
        assert_eq!(
            seen.header("host"),
            Some(proxy.endpoint().trim_start_matches("http://"))
        );
        assert!(seen.header("authorization").is_some());
        assert!(seen.headers.iter().all(|(n, _)| *n == n.to_lowercase()));
    }
    assert!(
        log[1]
            .path_and_query
            .starts_with(&format!("/{bucket}/{key}?"))
    );
    assert!(log[1].path_and_query.contains("partNumber=1"));
    assert_eq!(
        log[1].header("content-length"),
        Some((5 * MIB).to_string().as_str())
    );
    // The streamed part: aws-chunked framing with the checksum in a trailer, forwarded as is
    // (moto decoded it into the right bytes above).
    assert_eq!(log[2].header("content-encoding"), Some("aws-chunked"));
    assert_eq!(
        log[2].header("x-amz-decoded-content-length"),
        Some("300000")
    );
    assert_eq!(log[2].header("x-amz-trailer"), Some("x-amz-checksum-crc32"));
    assert_eq!(
        log[2].header("x-amz-content-sha256"),
        Some("STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER")
    );
}

#[tokio::test]
async fn status_500_is_an_internal_error_and_not_forwarded() {
    let (s3, proxy, bucket) = setup("proxy-500").await;
    proxy.add_rule(Rule::new(Op::PutObject, Nth::Every, Fault::Status(500)));
    let err = proxy
        .client()
        .put_object()
        .bucket(&bucket)
        .key("k")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    eprintln!("Status(500): {}", text(&err));
    assert_eq!(status(&err), Some(500));
    assert_eq!(err.code(), Some("InternalError"));
    assert!(!exists(s3, &bucket, "k").await);
    assert_eq!(proxy.log()[0].fault.as_deref(), Some("Status(500)"));
}

#[tokio::test]
async fn slow_down_is_a_503_with_its_code() {
    let (_s3, proxy, bucket) = setup("proxy-slowdown").await;
    let client = proxy.client();
    let upload_id = client
        .create_multipart_upload()
        .bucket(&bucket)
        .key("k")
        .send()
        .await
        .unwrap()
        .upload_id
        .unwrap();
    // Added now: counts UploadParts from here on; the second one is refused.
    proxy.add_rule(Rule::new(Op::UploadPart, Nth::Nth(2), Fault::SlowDown));
    let upload = |n: i32| {
        client
            .upload_part()
            .bucket(&bucket)
            .key("k")
            .upload_id(&upload_id)
            .part_number(n)
            .body(ByteStream::from(pattern(1000, n as u8)))
            .send()
    };
    upload(1).await.unwrap();
    let err = upload(2).await.unwrap_err();
    eprintln!("SlowDown: {}", text(&err));
    assert_eq!(status(&err), Some(503));
    assert_eq!(err.code(), Some("SlowDown"));
    assert!(
        err.message()
            .is_some_and(|m| m.contains("reduce your request rate"))
    );
    upload(3).await.unwrap();
    let faults: Vec<_> = proxy.log().into_iter().map(|s| s.fault).collect();
    assert_eq!(faults, [None, None, Some("SlowDown".to_owned()), None]);
    assert_eq!(proxy.count(Op::UploadPart), 3);
}

#[tokio::test]
async fn standard_retries_ride_out_one_fault_of_each_kind() {
    // What the SDK's standard retry strategy makes of a fault on the first attempt of a
    // PutObject: retried (and then fine) or returned to the caller.
    let (s3, proxy, bucket) = setup("proxy-retry").await;
    let client = retrying_client(&proxy);
    let faults = [
        Fault::Status(500),
        Fault::SlowDown,
        Fault::ResetBeforeResponse,
        Fault::ResetMidResponse,
        Fault::DropReplyAfterForwarding,
    ];
    for (i, fault) in faults.into_iter().enumerate() {
        proxy.clear_rules();
        proxy.clear_log();
        proxy.add_rule(Rule::new(Op::PutObject, Nth::FirstN(1), fault));
        let key = format!("k{i}");
        let result = put(&client, &bucket, &key, b"payload").await;
        eprintln!(
            "{fault:?} with retries: {result:?}, {} attempts",
            proxy.count(Op::PutObject)
        );
        assert_eq!(result, Ok(()), "{fault:?}");
        assert_eq!(proxy.count(Op::PutObject), 2, "{fault:?}");
        assert!(exists(s3, &bucket, &key).await);
        let attempts: Vec<_> = proxy
            .log()
            .iter()
            .map(|s| s.header("amz-sdk-request").unwrap_or_default().to_owned())
            .collect();
        assert_eq!(attempts, ["attempt=1; max=3", "attempt=2; max=3"]);
    }
}

#[tokio::test]
async fn reset_before_response_is_a_dispatch_failure() {
    let (s3, proxy, bucket) = setup("proxy-reset").await;
    proxy.add_rule(Rule::new(
        Op::PutObject,
        Nth::Every,
        Fault::ResetBeforeResponse,
    ));
    let err = proxy
        .client()
        .put_object()
        .bucket(&bucket)
        .key("k")
        .body(ByteStream::from(pattern(MIB, 3)))
        .send()
        .await
        .unwrap_err();
    eprintln!("ResetBeforeResponse: {}", text(&err));
    assert!(is_io_dispatch_failure(&err), "{err:?}");
    assert!(
        text(&err).to_lowercase().contains("reset"),
        "{}",
        text(&err)
    );
    assert!(!exists(s3, &bucket, "k").await);
}

#[tokio::test]
async fn reset_mid_response_truncates_a_get_object_body() {
    let (s3, proxy, bucket) = setup("proxy-midget").await;
    let body = pattern(256 * 1024, 4);
    s3.client()
        .put_object()
        .bucket(&bucket)
        .key("k")
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .unwrap();
    proxy.add_rule(Rule::new(
        Op::GetObject,
        Nth::Every,
        Fault::ResetMidResponse,
    ));
    // The head arrives whole: send() succeeds, reading the body fails.
    let out = proxy
        .client()
        .get_object()
        .bucket(&bucket)
        .key("k")
        .send()
        .await;
    match out {
        Ok(out) => {
            assert_eq!(out.content_length(), Some(body.len() as i64));
            let err = out.body.collect().await.unwrap_err();
            eprintln!("ResetMidResponse on GetObject: body: {}", text(&err));
        }
        Err(err) => panic!("GetObject: {}", text(&err)),
    }
}

#[tokio::test]
async fn reset_mid_response_of_a_put_is_an_error_after_the_fact() {
    let (s3, proxy, bucket) = setup("proxy-midput").await;
    proxy.add_rule(Rule::new(
        Op::PutObject,
        Nth::Every,
        Fault::ResetMidResponse,
    ));
    let err = proxy
        .client()
        .put_object()
        .bucket(&bucket)
        .key("k")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    eprintln!("ResetMidResponse on PutObject: {}", text(&err));
    assert!(is_io_dispatch_failure(&err), "{err:?}");
    // Forwarded: the object is there although the client saw an error.
    assert!(exists(s3, &bucket, "k").await);
}

#[tokio::test]
async fn stall_delays_the_request_and_trips_attempt_timeouts() {
    let (s3, proxy, bucket) = setup("proxy-stall").await;
    let stall = Duration::from_millis(1500);
    proxy.add_rule(Rule::new(Op::PutObject, Nth::Nth(1), Fault::Stall(stall)));
    let started = Instant::now();
    put(&proxy.client(), &bucket, "slow", b"x").await.unwrap();
    let took = started.elapsed();
    assert!(took >= stall, "took {took:?}");
    assert!(exists(s3, &bucket, "slow").await);

    proxy.add_rule(Rule::new(
        Op::UploadPart,
        Nth::Every,
        Fault::Stall(Duration::from_secs(5)),
    ));
    let client = Client::from_conf(
        proxy
            .s3_config()
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_attempt_timeout(Duration::from_millis(500))
                    .build(),
            )
            .build(),
    );
    let upload_id = client
        .create_multipart_upload()
        .bucket(&bucket)
        .key("stalled")
        .send()
        .await
        .unwrap()
        .upload_id
        .unwrap();
    let started = Instant::now();
    let err = client
        .upload_part()
        .bucket(&bucket)
        .key("stalled")
        .upload_id(&upload_id)
        .part_number(1)
        .body(ByteStream::from(pattern(5 * MIB, 5)))
        .send()
        .await
        .unwrap_err();
    let took = started.elapsed();
    eprintln!(
        "Stall past the attempt timeout: {} after {took:?}",
        text(&err)
    );
    assert!(matches!(err, SdkError::TimeoutError(_)), "{err:?}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[tokio::test]
async fn complete_error_in_200_is_an_error_for_the_sdk() {
    let (s3, proxy, bucket) = setup("proxy-200").await;
    let client = proxy.client();
    let (upload_id, parts) = one_part_upload(&client, &bucket, "k").await;
    proxy.add_rule(Rule::new(
        Op::CompleteMultipartUpload,
        Nth::FirstN(1),
        Fault::CompleteErrorIn200,
    ));
    let complete = || complete(&client, &bucket, "k", &upload_id, &parts);
    let err = complete().await.unwrap_err();
    eprintln!("CompleteErrorIn200: {}", text(&err));
    assert_eq!(status(&err), Some(200));
    assert_eq!(err.code(), Some("InternalError"));
    assert!(err.as_service_error().is_some(), "{err:?}");
    // Not forwarded: no object yet, the upload is still open and completes on a second try.
    assert!(!exists(s3, &bucket, "k").await);
    complete().await.unwrap();
    assert!(exists(s3, &bucket, "k").await);
}

#[tokio::test]
async fn complete_error_in_200_is_retried_by_the_standard_strategy() {
    let (s3, proxy, bucket) = setup("proxy-200retry").await;
    let client = retrying_client(&proxy);
    let (upload_id, parts) = one_part_upload(&client, &bucket, "k").await;
    proxy.add_rule(Rule::new(
        Op::CompleteMultipartUpload,
        Nth::FirstN(1),
        Fault::CompleteErrorIn200,
    ));
    let result = complete(&client, &bucket, "k", &upload_id, &parts).await;
    eprintln!(
        "CompleteErrorIn200 with retries: {:?}, {} attempts",
        result.as_ref().map(drop).map_err(text),
        proxy.count(Op::CompleteMultipartUpload)
    );
    result.unwrap();
    assert_eq!(proxy.count(Op::CompleteMultipartUpload), 2);
    assert!(exists(s3, &bucket, "k").await);
}

#[tokio::test]
async fn dropped_complete_reply_fails_although_the_object_exists() {
    let (s3, proxy, bucket) = setup("proxy-lost").await;
    let client = proxy.client();
    let (upload_id, parts) = one_part_upload(&client, &bucket, "k").await;
    proxy.add_rule(Rule::new(
        Op::CompleteMultipartUpload,
        Nth::FirstN(1),
        Fault::DropReplyAfterForwarding,
    ));
    let complete = || complete(&client, &bucket, "k", &upload_id, &parts);
    let err = complete().await.unwrap_err();
    eprintln!("DropReplyAfterForwarding: {}", text(&err));
    assert!(is_io_dispatch_failure(&err), "{err:?}");
    // moto completed it: the object is there, straight from moto.
    assert!(exists(s3, &bucket, "k").await);
    // Completing again (as a retry would): moto 5.2.5 answers 200 again, with the object's
    // ETag (S3 documents the same for a retry shortly after success; later it may answer
    // NoSuchUpload).
    let etag = s3
        .client()
        .head_object()
        .bucket(&bucket)
        .key("k")
        .send()
        .await
        .unwrap()
        .e_tag;
    let again = complete().await;
    eprintln!(
        "Complete again after the lost reply: {:?}",
        again.as_ref().map(|o| o.e_tag()).map_err(text)
    );
    assert_eq!(again.unwrap().e_tag, etag);
}

#[tokio::test]
async fn dropped_complete_reply_is_retried_by_the_standard_strategy() {
    let (s3, proxy, bucket) = setup("proxy-lostretry").await;
    let client = retrying_client(&proxy);
    let (upload_id, parts) = one_part_upload(&client, &bucket, "k").await;
    proxy.add_rule(Rule::new(
        Op::CompleteMultipartUpload,
        Nth::FirstN(1),
        Fault::DropReplyAfterForwarding,
    ));
    let result = complete(&client, &bucket, "k", &upload_id, &parts).await;
    eprintln!(
        "DropReplyAfterForwarding with retries: {:?}, {} attempts",
        result.as_ref().map(drop).map_err(text),
        proxy.count(Op::CompleteMultipartUpload)
    );
    // The SDK resends the Complete after the reset, and moto accepts it a second time.
    result.unwrap();
    assert_eq!(proxy.count(Op::CompleteMultipartUpload), 2);
    assert!(exists(s3, &bucket, "k").await);
}

#[tokio::test]
async fn reject_checksum_headers_refuses_what_the_sdk_sends_by_default() {
    let (s3, proxy, bucket) = setup("proxy-cksum").await;
    proxy.add_rule(Rule::new(
        Op::PutObject,
        Nth::Every,
        Fault::RejectChecksumHeaders,
    ));
    proxy.add_rule(Rule::new(
        Op::UploadPart,
        Nth::Every,
        Fault::RejectChecksumHeaders,
    ));
    let err = proxy
        .client()
        .put_object()
        .bucket(&bucket)
        .key("k")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    eprintln!("RejectChecksumHeaders: {}", text(&err));
    assert_eq!(status(&err), Some(400));
    assert_eq!(err.code(), Some("InvalidRequest"));
    assert!(!exists(s3, &bucket, "k").await);

    // A client that sends checksums only when required passes.
    let client = Client::from_conf(
        proxy
            .s3_config()
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .build(),
    );
    put(&client, &bucket, "k", b"x").await.unwrap();
    let (_, _) = one_part_upload(&client, &bucket, "mp").await;
    assert!(exists(s3, &bucket, "k").await);
    let faults: Vec<_> = proxy.log().into_iter().map(|s| (s.op, s.fault)).collect();
    assert_eq!(
        faults,
        [
            (Op::PutObject, Some("RejectChecksumHeaders".to_owned())),
            (Op::PutObject, None),
            (Op::CreateMultipartUpload, None),
            (Op::UploadPart, None),
        ]
    );
}

#[tokio::test]
async fn chunked_body_and_trailers_are_forwarded_verbatim() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A raw upstream that records the bytes of one request.
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    let recorder = tokio::spawn(async move {
        let (mut conn, _) = upstream.accept().await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.ends_with(b"0\r\nx-amz-checksum-crc32: AAAAAA==\r\n\r\n") {
            let n = conn.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "upstream got EOF after {:?}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
        conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        got
    });
    let proxy = FaultProxy::start(&format!("http://{upstream_addr}")).unwrap();
    let proxy_addr = proxy.endpoint().trim_start_matches("http://").to_owned();
    let mut client = tokio::net::TcpStream::connect(&proxy_addr).await.unwrap();
    let request = "PUT /b/k?x-id=PutObject HTTP/1.1\r\n\
         Host: Bucket.Example:1234\r\n\
         X-Amz-Decoded-Content-Length: 8\r\n\
         Content-Encoding: aws-chunked\r\n\
         Transfer-Encoding: chunked\r\n\
         Trailer: x-amz-checksum-crc32\r\n\
         \r\n\
         5\r\nhello\r\n3\r\nabc\r\n0\r\nx-amz-checksum-crc32: AAAAAA==\r\n\r\n";
    client.write_all(request.as_bytes()).await.unwrap();
    let mut reply = vec![0u8; 64];
    let n = client.read(&mut reply).await.unwrap();
    assert!(reply[..n].starts_with(b"HTTP/1.1 200"));
    let got = String::from_utf8(recorder.await.unwrap()).unwrap();
    assert!(
        got.starts_with("PUT /b/k?x-id=PutObject HTTP/1.1\r\n"),
        "{got}"
    );
    // Host exactly as sent (case of names too), chunked framing and the trailer.
    assert!(got.contains("\r\nHost: Bucket.Example:1234\r\n"), "{got}");
    assert!(
        got.contains("\r\nX-Amz-Decoded-Content-Length: 8\r\n"),
        "{got}"
    );
    assert!(got.contains("\r\nTransfer-Encoding: chunked\r\n"), "{got}");
    let body = got.split_once("\r\n\r\n").unwrap().1;
    let unchunked: String = body
        .split("\r\n")
        .collect::<Vec<_>>()
        .chunks(2)
        .filter(|c| c.len() == 2 && c[0] != "0")
        .map(|c| c[1])
        .collect();
    assert_eq!(unchunked, "helloabc", "{body:?}");
    assert!(
        body.ends_with("0\r\nx-amz-checksum-crc32: AAAAAA==\r\n\r\n"),
        "{body:?}"
    );
    let seen = &proxy.log()[0];
    assert_eq!(seen.op, Op::PutObject);
    assert_eq!(seen.header("host"), Some("Bucket.Example:1234"));
    assert_eq!(seen.header("transfer-encoding"), Some("chunked"));
}

#[tokio::test]
async fn stops_on_drop() {
    let s3 = S3Server::shared();
    let proxy = FaultProxy::start(s3.endpoint()).unwrap();
    let addr = proxy.endpoint().trim_start_matches("http://").to_owned();
    assert!(std::net::TcpStream::connect(&addr).is_ok());
    drop(proxy);
    assert!(std::net::TcpStream::connect(&addr).is_err());
}

/// The lost-reply case with `If-None-Match: *`: the retried Complete finds the key taken — by
/// its own first attempt. moto 5.2.5 answers 200 again (the upload id completed this very
/// object); should a store answer 412 instead, the backup tells its own object from another
/// run's by the run mark the object carries.
#[tokio::test]
async fn dropped_conditional_complete_reply_is_retried_and_accepted() {
    let (s3, proxy, bucket) = setup("proxy-lostcond").await;
    let client = retrying_client(&proxy);
    let (upload_id, parts) = one_part_upload(&client, &bucket, "k").await;
    proxy.add_rule(Rule::new(
        Op::CompleteMultipartUpload,
        Nth::FirstN(1),
        Fault::DropReplyAfterForwarding,
    ));
    let result = client
        .complete_multipart_upload()
        .bucket(&bucket)
        .key("k")
        .upload_id(&upload_id)
        .if_none_match("*")
        .multipart_upload(parts)
        .send()
        .await;
    eprintln!(
        "conditional Complete retried after a lost reply: {:?}",
        result.as_ref().map(drop).map_err(text)
    );
    result.unwrap();
    assert_eq!(proxy.count(Op::CompleteMultipartUpload), 2);
    let log = proxy.log();
    assert!(
        log.iter()
            .filter(|r| r.op == Op::CompleteMultipartUpload)
            .all(|r| r.header("if-none-match") == Some("*"))
    );
    assert!(exists(s3, &bucket, "k").await);
}

/// moto's listing says every upload started on 2010-11-10; through the proxy each one says
/// when the proxy saw it start, or the time a test set.
#[tokio::test]
async fn initiated_times_are_when_the_proxy_saw_each_upload_start() {
    let (s3, proxy, bucket) = setup("proxy-initiated").await;
    let client = proxy.client();
    let before = std::time::SystemTime::now();
    let mut ids = Vec::new();
    for key in ["a/one", "a/two"] {
        ids.push(
            client
                .create_multipart_upload()
                .bucket(&bucket)
                .key(key)
                .send()
                .await
                .unwrap()
                .upload_id
                .unwrap(),
        );
    }
    let after = std::time::SystemTime::now();
    let mut seen = proxy.uploads();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("a/one".to_owned(), ids[0].clone()),
            ("a/two".to_owned(), ids[1].clone())
        ]
    );
    let initiated = |client: Client| {
        let bucket = bucket.clone();
        async move {
            let listed = client
                .list_multipart_uploads()
                .bucket(&bucket)
                .send()
                .await
                .unwrap();
            listed
                .uploads()
                .iter()
                .map(|u| {
                    let t = u.initiated().unwrap();
                    (
                        u.key().unwrap().to_owned(),
                        std::time::SystemTime::try_from(*t).unwrap(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    // Straight from moto: one fixed time, years ago.
    for (key, at) in initiated(s3.client()).await {
        let age = before.duration_since(at).unwrap();
        assert!(age > Duration::from_secs(365 * 86_400), "{key}: {at:?}");
    }
    // Through the proxy: when each started (to the millisecond S3's format keeps).
    let through = initiated(proxy.client()).await;
    assert_eq!(through.len(), 2);
    for (key, at) in &through {
        assert!(
            *at + Duration::from_millis(1) >= before && *at <= after,
            "{key}: {at:?} not within {before:?}..{after:?}"
        );
    }
    // A test can back-date one, by key or by id.
    let day_ago = before - Duration::from_secs(25 * 3600);
    proxy.set_initiated("a/one", day_ago).unwrap();
    proxy
        .set_initiated(&ids[1], day_ago - Duration::from_secs(60))
        .unwrap();
    let through = initiated(proxy.client()).await;
    let day_ago_ms =
        |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    assert_eq!(
        through
            .iter()
            .map(|(k, t)| (k.as_str(), day_ago_ms(*t)))
            .collect::<Vec<_>>(),
        [
            ("a/one", day_ago_ms(day_ago)),
            ("a/two", day_ago_ms(day_ago - Duration::from_secs(60)))
        ]
    );
    assert!(proxy.set_initiated("no/such", day_ago).is_err());
}

/// A held request waits, unforwarded, until the test releases it.
#[tokio::test(flavor = "multi_thread")]
async fn hold_waits_for_release() {
    let (s3, proxy, bucket) = setup("proxy-hold").await;
    proxy.add_rule(Rule::new(Op::PutObject, Nth::Nth(1), Fault::Hold));
    let client = proxy.client();
    let (b, c) = (bucket.clone(), client.clone());
    let held = tokio::spawn(async move { put(&c, &b, "held", b"1").await });
    let proxy = std::sync::Arc::new(proxy);
    let p = proxy.clone();
    tokio::task::spawn_blocking(move || p.wait_for(Op::PutObject, 1, Duration::from_secs(10)))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!held.is_finished());
    assert!(!exists(s3, &bucket, "held").await, "not forwarded yet");
    // Other requests go through meanwhile.
    put(&client, &bucket, "other", b"2").await.unwrap();
    proxy.release();
    held.await.unwrap().unwrap();
    assert!(exists(s3, &bucket, "held").await);
    assert_eq!(proxy.log()[0].fault.as_deref(), Some("Hold"));
}
