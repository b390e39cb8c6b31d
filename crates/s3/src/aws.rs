//! Amazon S3 and S3-compatible stores through `aws-sdk-s3`.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::Region;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;

use crate::{
    Error, GetResult, Metadata, MultipartUpload, ObjectMeta, ObjectStore, PendingUpload, PutMode,
    Result, UploadPart, validate_key,
};

/// How to reach a bucket. Credentials are never part of it: they come from the standard AWS
/// chain (environment, profile, SSO, web identity, EC2 instance profile).
#[derive(Clone, PartialEq, Eq)]
pub struct S3Options {
    /// The bucket.
    pub bucket: String,
    /// The region; when unset, the AWS chain decides (`AWS_REGION`, profile, instance metadata),
    /// and `us-east-1` is used for a custom endpoint that names none.
    pub region: Option<String>,
    /// An S3-compatible endpoint (OpenShift Data Foundation, MinIO); also read by the SDK from
    /// `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`.
    pub endpoint_url: Option<String>,
    /// Path-style addressing (`https://host/bucket/key`); also chosen automatically when the
    /// endpoint is an IP address or `localhost`.
    pub force_path_style: bool,
    /// Attempts per request, retries included, with exponential backoff on throttling, 5xx and
    /// network errors (default 5).
    pub max_attempts: u32,
    /// How long to wait for a TCP/TLS connection (default 5 s).
    pub connect_timeout: Duration,
    /// CRC32 checksums on every part, checked by the store (default on). Turn off for
    /// S3-compatible stores that reject the `x-amz-checksum-*` headers (older Ceph RGW, as in
    /// some OpenShift Data Foundation releases); the dump's SHA-256 record still covers the data.
    pub checksums: bool,
}

impl Debug for S3Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Options")
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field(
                "endpoint_url",
                &self.endpoint_url.as_deref().map(redact_url),
            )
            .field("force_path_style", &self.force_path_style)
            .finish_non_exhaustive()
    }
}

impl S3Options {
    /// Options for `bucket` with the defaults.
    pub fn new(bucket: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            region: None,
            endpoint_url: None,
            force_path_style: false,
            max_attempts: 5,
            connect_timeout: Duration::from_secs(5),
            checksums: true,
        }
    }

    fn path_style(&self) -> bool {
        self.force_path_style
            || self
                .endpoint_url
                .as_deref()
                .is_some_and(endpoint_is_local_or_ip)
    }
}

/// Hides any `user:password@` part of a URL for messages.
fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) if !url.username().is_empty() || url.password().is_some() => {
            let _ = url.set_username("***");
            let _ = url.set_password(None);
            url.to_string()
        }
        Ok(_) => raw.to_owned(),
        Err(_) => "<unparsable endpoint URL>".to_owned(),
    }
}

fn endpoint_is_local_or_ip(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    if host_port.starts_with('[') {
        return true; // IPv6 literal
    }
    let host = host_port.split(':').next().unwrap_or(host_port);
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok()
}

/// A bucket in S3 or an S3-compatible store.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    endpoint: String,
    page_size: Option<i32>,
    checksums: bool,
}

impl S3Store {
    /// Wraps a client built by the caller.
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        let endpoint = "the S3 endpoint".to_owned();
        Self {
            client,
            bucket: bucket.into(),
            endpoint,
            page_size: None,
            checksums: true,
        }
    }

    /// Builds a client from the standard AWS configuration chain and `options`.
    ///
    /// # Errors
    /// [`Error::Config`] when no region can be found.
    pub async fn connect(options: &S3Options) -> Result<Self> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(region) = &options.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(endpoint) = &options.endpoint_url {
            loader = loader.endpoint_url(endpoint.clone());
        }
        let shared = loader.load().await;
        Self::from_sdk_config(&shared, options)
    }

    /// Builds a client from an already loaded AWS configuration (credentials, region, endpoint)
    /// and `options`; does not read the environment.
    ///
    /// # Errors
    /// [`Error::Config`] when no region is known.
    pub fn from_sdk_config(shared: &aws_config::SdkConfig, options: &S3Options) -> Result<Self> {
        let mut builder = aws_sdk_s3::config::Builder::from(shared)
            .force_path_style(options.path_style())
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(options.max_attempts.max(1))
                    .with_initial_backoff(Duration::from_millis(500)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(options.connect_timeout)
                    .read_timeout(Duration::from_secs(120))
                    .build(),
            );
        if shared.region().is_none() {
            if options.endpoint_url.is_some() || shared.endpoint_url().is_some() {
                builder = builder.region(Region::new("us-east-1"));
            } else {
                return Err(Error::Config(
                    "no AWS region: set AWS_REGION, a profile region, or --region".into(),
                ));
            }
        }
        let endpoint = options
            .endpoint_url
            .clone()
            .or_else(|| shared.endpoint_url().map(str::to_owned))
            .map_or_else(|| "AWS S3".to_owned(), |e| redact_url(&e));
        if let Some(endpoint) = &options.endpoint_url {
            builder = builder.endpoint_url(endpoint);
        }
        if !options.checksums {
            builder = builder
                .request_checksum_calculation(
                    aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
                )
                .response_checksum_validation(
                    aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
                );
        }
        let mut store = Self::new(Client::from_conf(builder.build()), &options.bucket);
        store.checksums = options.checksums;
        store.endpoint = endpoint;
        Ok(store)
    }

    /// Without per-part CRC32 checksums (see [`S3Options::checksums`]).
    pub fn without_checksums(mut self) -> Self {
        self.checksums = false;
        self
    }

    fn checksum(&self) -> Option<ChecksumAlgorithm> {
        self.checksums.then_some(ChecksumAlgorithm::Crc32)
    }

    /// Lists with pages of at most `n` keys (S3's default is 1,000); for tests of pagination.
    pub fn with_page_size(mut self, n: i32) -> Self {
        self.page_size = Some(n);
        self
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The underlying SDK client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn error<E>(&self, operation: &'static str, key: &str, err: SdkError<E, HttpResponse>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        map_error(
            &self.describe(),
            &self.endpoint,
            &self.bucket,
            operation,
            key,
            err,
        )
    }
}

fn map_error<E>(
    store: &str,
    endpoint: &str,
    bucket: &str,
    operation: &'static str,
    key: &str,
    err: SdkError<E, HttpResponse>,
) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let store = store.to_owned();
    let key = key.to_owned();
    let status = match &err {
        SdkError::ServiceError(ctx) => Some(ctx.raw().status().as_u16()),
        _ => None,
    };
    let code = err.code().map(str::to_owned);
    let full = display_chain(&err);
    let message = err
        .message()
        .map(str::to_owned)
        .unwrap_or_else(|| full.clone());
    let about_credentials = full.contains("loading credentials")
        || full.contains("no credentials")
        || full.contains("identity");
    match (&err, code.as_deref(), status) {
        (
            SdkError::DispatchFailure(_)
            | SdkError::TimeoutError(_)
            | SdkError::ConstructionFailure(_),
            _,
            _,
        ) if about_credentials => Error::NoCredentials {
            store,
            message: innermost(&err),
        },
        (SdkError::DispatchFailure(_) | SdkError::TimeoutError(_), _, _) => Error::Unreachable {
            store,
            endpoint: endpoint.to_owned(),
            operation,
            message: innermost(&err),
        },
        (SdkError::ConstructionFailure(_), _, _) => Error::Config(format!("{operation}: {full}")),
        // The answers to `If-None-Match: *`: the key exists, or another conditional write to
        // it is in progress (S3 then advises starting over: for us the key is taken either way).
        (_, Some("PreconditionFailed" | "ConditionalRequestConflict"), _)
        | (_, None, Some(412)) => Error::AlreadyExists { store, key },
        (_, Some("NoSuchBucket"), _) => Error::BucketNotFound {
            bucket: bucket.to_owned(),
        },
        (_, _, Some(404)) if operation == "HeadBucket" => Error::BucketNotFound {
            bucket: bucket.to_owned(),
        },
        (_, Some("NoSuchKey" | "NotFound"), _) | (_, None, Some(404)) => {
            Error::NotFound { store, key }
        }
        (
            _,
            Some(
                "AccessDenied"
                | "InvalidAccessKeyId"
                | "SignatureDoesNotMatch"
                | "ExpiredToken"
                | "InvalidToken",
            ),
            _,
        )
        | (_, None, Some(403)) => {
            let message = match code.as_deref() {
                Some(code) => format!("{code}: {message}"),
                None => "HTTP 403 Forbidden".to_owned(),
            };
            Error::AccessDenied {
                store,
                operation,
                key,
                message,
            }
        }
        _ => Error::Service {
            store,
            operation,
            key,
            code: code
                .or_else(|| status.map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown".into()),
            message,
        },
    }
}

/// The Display texts of an error and its sources, joined by ": ", each said once (the AWS SDK's
/// errors say little at the top: `dispatch failure`, `service error`).
pub fn display_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

/// The deepest cause's text (`tcp connect error: Connection refused (os error 111)`), which
/// says what happened better than the layers above it.
fn innermost(err: &(dyn std::error::Error + 'static)) -> String {
    let mut found = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        let text = e.to_string();
        if !text.is_empty() {
            found = text;
        }
        next = e.source();
    }
    found
}

fn metadata_of(map: Option<&std::collections::HashMap<String, String>>) -> Metadata {
    map.map(|m| {
        m.iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect()
    })
    .unwrap_or_default()
}

fn timestamp(dt: Option<&aws_sdk_s3::primitives::DateTime>) -> jiff::Timestamp {
    dt.and_then(|d| {
        jiff::Timestamp::new(d.secs(), i32::try_from(d.subsec_nanos()).unwrap_or(0)).ok()
    })
    .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

#[async_trait]
impl ObjectStore for S3Store {
    fn describe(&self) -> String {
        format!("s3://{}", self.bucket)
    }

    async fn check(&self) -> Result<()> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| self.error("HeadBucket", "", e))?;
        Ok(())
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        self.put_opts(key, data, PutMode::Overwrite).await
    }

    async fn put_opts(&self, key: &str, data: Bytes, mode: PutMode) -> Result<()> {
        validate_key(key)?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .set_if_none_match(if_none_match(mode))
            .content_length(data.len() as i64)
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|e| self.error("PutObject", key, e))?;
        Ok(())
    }

    async fn put_multipart_with(
        &self,
        key: &str,
        metadata: &Metadata,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.put_multipart_opts(key, metadata, PutMode::Overwrite)
            .await
    }

    async fn put_multipart_opts(
        &self,
        key: &str,
        metadata: &Metadata,
        mode: PutMode,
    ) -> Result<Box<dyn MultipartUpload>> {
        validate_key(key)?;
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .set_metadata((!metadata.is_empty()).then(|| {
                metadata
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            }))
            .set_checksum_algorithm(self.checksum())
            .send()
            .await
            .map_err(|e| self.error("CreateMultipartUpload", key, e))?;
        let upload_id = out.upload_id().ok_or_else(|| Error::Service {
            store: self.describe(),
            operation: "CreateMultipartUpload",
            key: key.to_owned(),
            code: "NoUploadId".into(),
            message: "the response held no upload id".into(),
        })?;
        tracing::debug!(key, upload_id, "multipart upload started");
        Ok(Box::new(S3Upload {
            store: self.clone(),
            key: key.to_owned(),
            upload_id: upload_id.to_owned(),
            next_part: 1,
            parts: Arc::default(),
            mode,
        }))
    }

    async fn get(&self, key: &str) -> Result<GetResult> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.error("GetObject", key, e))?;
        let meta = ObjectMeta {
            key: key.to_owned(),
            size: out
                .content_length()
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0),
            last_modified: timestamp(out.last_modified()),
            metadata: metadata_of(out.metadata()),
        };
        let (store, k) = (self.describe(), key.to_owned());
        let stream = futures::stream::unfold(Some(out.body), move |body| {
            let (store, k) = (store.clone(), k.clone());
            async move {
                let mut body = body?;
                match body.next().await? {
                    Ok(chunk) => Some((Ok(chunk), Some(body))),
                    Err(e) => Some((
                        Err(Error::Service {
                            store,
                            operation: "GetObject",
                            key: k,
                            code: "BodyError".into(),
                            message: display_chain(&e),
                        }),
                        None,
                    )),
                }
            }
        });
        Ok(GetResult {
            meta,
            stream: Box::pin(stream),
        })
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.error("HeadObject", key, e))?;
        Ok(ObjectMeta {
            key: key.to_owned(),
            size: out
                .content_length()
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0),
            last_modified: timestamp(out.last_modified()),
            metadata: metadata_of(out.metadata()),
        })
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_max_keys(self.page_size)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| self.error("ListObjectsV2", prefix, e))?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                out.push(ObjectMeta {
                    key: key.to_owned(),
                    size: object
                        .size()
                        .and_then(|n| u64::try_from(n).ok())
                        .unwrap_or(0),
                    last_modified: timestamp(object.last_modified()),
                    metadata: Metadata::new(),
                });
            }
            match (page.is_truncated(), page.next_continuation_token()) {
                (Some(true), Some(next)) => token = Some(next.to_owned()),
                _ => break,
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.error("DeleteObject", key, e))?;
        Ok(())
    }

    async fn list_pending_uploads(&self, prefix: &str) -> Result<Vec<PendingUpload>> {
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
                .map_err(|e| self.error("ListMultipartUploads", prefix, e))?;
            for upload in page.uploads() {
                if let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) {
                    out.push(PendingUpload {
                        key: key.to_owned(),
                        upload_id: id.to_owned(),
                        initiated: timestamp(upload.initiated()),
                    });
                }
            }
            match (page.is_truncated(), page.next_key_marker()) {
                (Some(true), Some(next)) => {
                    key_marker = Some(next.to_owned());
                    id_marker = page.next_upload_id_marker().map(str::to_owned);
                }
                _ => break,
            }
        }
        out.sort_by(|a, b| (&a.key, a.initiated).cmp(&(&b.key, b.initiated)));
        Ok(out)
    }

    async fn abort_pending_upload(&self, upload: &PendingUpload) -> Result<()> {
        abort(&self.client, &self.bucket, &upload.key, &upload.upload_id)
            .await
            .map_err(|e| self.error("AbortMultipartUpload", &upload.key, e))
    }
}

/// `If-None-Match: *` for a create-only write.
fn if_none_match(mode: PutMode) -> Option<String> {
    (mode == PutMode::Create).then(|| "*".to_owned())
}

async fn abort(
    client: &Client,
    bucket: &str,
    key: &str,
    upload_id: &str,
) -> Result<
    (),
    SdkError<
        aws_sdk_s3::operation::abort_multipart_upload::AbortMultipartUploadError,
        aws_sdk_s3::config::http::HttpResponse,
    >,
> {
    match client
        .abort_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        // Already gone: what we wanted.
        Err(e) if e.code() == Some("NoSuchUpload") => Ok(()),
        Err(e) => Err(e),
    }
}

#[derive(Debug)]
struct S3Upload {
    store: S3Store,
    key: String,
    upload_id: String,
    next_part: i32,
    parts: Arc<Mutex<Vec<CompletedPart>>>,
    mode: PutMode,
}

#[async_trait]
impl MultipartUpload for S3Upload {
    fn put_part(&mut self, data: Bytes) -> UploadPart {
        let number = self.next_part;
        self.next_part += 1;
        let (store, key, upload_id, parts) = (
            self.store.clone(),
            self.key.clone(),
            self.upload_id.clone(),
            self.parts.clone(),
        );
        Box::pin(async move {
            let len = data.len();
            let out = store
                .client
                .upload_part()
                .bucket(&store.bucket)
                .key(&key)
                .upload_id(&upload_id)
                .part_number(number)
                .content_length(len as i64)
                .set_checksum_algorithm(store.checksum())
                .body(ByteStream::from(data))
                .send()
                .await
                .map_err(|e| store.error("UploadPart", &key, e))?;
            tracing::trace!(key, part = number, bytes = len, "part uploaded");
            let part = CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag().map(str::to_owned))
                .set_checksum_crc32(out.checksum_crc32().map(str::to_owned))
                .build();
            parts.lock().unwrap_or_else(|p| p.into_inner()).push(part);
            Ok(())
        })
    }

    async fn complete(&mut self) -> Result<()> {
        let mut parts = std::mem::take(&mut *self.parts.lock().unwrap_or_else(|p| p.into_inner()));
        parts.sort_by_key(|p| p.part_number());
        let count = parts.len();
        self.store
            .client
            .complete_multipart_upload()
            .bucket(&self.store.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .set_if_none_match(if_none_match(self.mode))
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.store.error("CompleteMultipartUpload", &self.key, e))?;
        tracing::debug!(key = self.key, parts = count, "multipart upload completed");
        Ok(())
    }

    async fn abort(&mut self) -> Result<()> {
        abort(
            &self.store.client,
            &self.store.bucket,
            &self.key,
            &self.upload_id,
        )
        .await
        .map_err(|e| self.store.error("AbortMultipartUpload", &self.key, e))?;
        tracing::debug!(
            key = self.key,
            upload_id = self.upload_id,
            "multipart upload aborted"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_style_is_chosen_for_local_and_ip_endpoints() {
        for (url, local) in [
            ("http://127.0.0.1:9000", true),
            ("http://localhost:4566/", true),
            ("https://[::1]:9000", true),
            ("https://s3.openshift-storage.svc", false),
            ("https://minio.example.com:9000", false),
        ] {
            assert_eq!(endpoint_is_local_or_ip(url), local, "{url}");
        }
        let mut o = S3Options::new("b");
        assert!(!o.path_style());
        o.force_path_style = true;
        assert!(o.path_style());
    }

    #[test]
    fn endpoint_credentials_are_redacted() {
        assert_eq!(
            redact_url("https://user:secret@minio:9000/x"),
            "https://***@minio:9000/x"
        );
        assert_eq!(redact_url("not a url secret"), "<unparsable endpoint URL>");
        assert_eq!(
            redact_url("https://minio:9000/x@y"),
            "https://minio:9000/x@y"
        );
        let mut o = S3Options::new("b");
        o.endpoint_url = Some("http://k:s3cr3t@127.0.0.1:1".into());
        assert!(!format!("{o:?}").contains("s3cr3t"));
    }
}
