//! A fault-injecting HTTP/1.1 proxy to put in front of the S3 test server.
//!
//! [`FaultProxy`] listens on `127.0.0.1:<random port>` and forwards every request to one
//! upstream (moto) on a fresh connection, unchanged: method, request target, headers (the
//! `Host` header as the client sent it, since SigV4 signs it, and in the client's letter case)
//! and body (including `Transfer-Encoding: chunked`, `Content-Encoding: aws-chunked` bodies and
//! HTTP trailers that the request declares in a `Trailer` header). Each request is classified by
//! S3 operation ([`Op`]), recorded ([`FaultProxy::log`]), counted, and checked against the
//! [`Rule`]s added so far: the first rule that applies decides the [`Fault`].
//!
//! It is also a witness where the upstream is not faithful: moto reports one fixed `Initiated`
//! time (2010-11-10) for every multipart upload, so the proxy notes when it saw each upload's
//! CreateMultipartUpload and writes that time into the `<Initiated>` of ListMultipartUploads
//! replies (or the time a test sets with [`FaultProxy::set_initiated`]).
//!
//! The proxy runs on a thread of its own (its own Tokio runtime), so it serves synchronous
//! tests and child processes as well as async tests. It stops when dropped.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use litemaas_testkit::proxy::{Fault, FaultProxy, Nth, Op, Rule};
//! let s3 = litemaas_testkit::S3Server::shared();
//! let proxy = FaultProxy::start(s3.endpoint())?;
//! proxy.add_rule(Rule::new(Op::UploadPart, Nth::Nth(2), Fault::SlowDown));
//! let client = aws_sdk_s3::Client::from_conf(proxy.s3_config().build());
//! // ... the second UploadPart through `client` gets a 503 SlowDown ...
//! # let _ = client; Ok(()) }
//! ```

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, TRANSFER_ENCODING};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

/// How long a reset waits after writing a partial response, so the client reads it first.
const PARTIAL_GRACE: Duration = Duration::from_millis(100);

/// The S3 operation of a request, from its method, query and path (path-style addressing;
/// a `Host` that is neither an IP address nor `localhost` is taken as virtual-hosted style).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `POST /bucket/key?uploads`.
    CreateMultipartUpload,
    /// `PUT /bucket/key?partNumber=N&uploadId=…` (also UploadPartCopy).
    UploadPart,
    /// `POST /bucket/key?uploadId=…`.
    CompleteMultipartUpload,
    /// `DELETE /bucket/key?uploadId=…`.
    AbortMultipartUpload,
    /// `GET /bucket?uploads`.
    ListMultipartUploads,
    /// `PUT /bucket/key` without `partNumber` or a sub-resource (also CopyObject).
    PutObject,
    /// `GET /bucket/key` without a sub-resource.
    GetObject,
    /// `HEAD /bucket/key`.
    HeadObject,
    /// `DELETE /bucket/key` without `uploadId`.
    DeleteObject,
    /// `GET /bucket?list-type=2`.
    ListObjectsV2,
    /// Anything else (bucket operations, ListParts, tagging, ...).
    Other,
}

/// Which requests of a rule's operation the rule hits. Counts are 1-based and start when the
/// rule is added: they count every request of the rule's [`Op`] seen from then on, whether
/// this rule, another rule or no rule decided its fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nth {
    /// Every request.
    Every,
    /// Only the n-th request (1-based).
    Nth(usize),
    /// The first n requests.
    FirstN(usize),
}

impl Nth {
    fn hits(self, count: usize) -> bool {
        match self {
            Nth::Every => true,
            Nth::Nth(n) => count == n,
            Nth::FirstN(n) => count <= n,
        }
    }
}

/// What the proxy does to a request a rule hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer this status with an S3 XML error body (`InternalError` for 500,
    /// `ServiceUnavailable` for 503, ...) without forwarding. An invalid code answers 500.
    Status(u16),
    /// Answer `503` with `<Error><Code>SlowDown</Code>…` without forwarding.
    SlowDown,
    /// Read the whole request, forward nothing, then reset the connection (RST, `SO_LINGER` 0):
    /// the client sees a connection reset while it waits for the response.
    ResetBeforeResponse,
    /// Forward the request (it takes effect upstream), then send only part of the response
    /// (the whole head and half the body; half the head when the body is empty) and reset.
    ResetMidResponse,
    /// Wait this long before forwarding (the request body is not read meanwhile, so an upload
    /// stalls once the socket buffers are full).
    Stall(Duration),
    /// Wait until [`FaultProxy::release`] is called, then forward: lets a test act at a chosen
    /// moment of a client's work (another writer takes a key before a Complete goes through).
    Hold,
    /// Do not forward; answer `200 OK` with an `<Error><Code>InternalError</Code>…` body, as S3
    /// may for CompleteMultipartUpload (and CopyObject, UploadPartCopy).
    CompleteErrorIn200,
    /// Forward the request and read the whole response (it takes effect upstream), then reset
    /// the client's connection instead of replying: the "lost reply".
    DropReplyAfterForwarding,
    /// Answer `400 InvalidRequest` without forwarding if the request has an `x-amz-checksum-*`
    /// or `x-amz-sdk-checksum-algorithm` header (as older Ceph RGW does); otherwise the rule
    /// does not apply and the next rule (or plain forwarding) decides.
    RejectChecksumHeaders,
}

/// A fault for some requests of one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The operation the rule watches.
    pub op: Op,
    /// Which requests of that operation (counted from when the rule is added).
    pub nth: Nth,
    /// What happens to them.
    pub fault: Fault,
}

impl Rule {
    /// `Rule { op, nth, fault }`.
    pub fn new(op: Op, nth: Nth, fault: Fault) -> Rule {
        Rule { op, nth, fault }
    }
}

/// A request the proxy saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Its operation.
    pub op: Op,
    /// `GET`, `PUT`, ...
    pub method: String,
    /// The request target, e.g. `/bucket/key?partNumber=1&uploadId=…`.
    pub path_and_query: String,
    /// Headers in arrival order (repeats of a name grouped together), names in lower case,
    /// values lossily decoded as UTF-8.
    pub headers: Vec<(String, String)>,
    /// The fault applied (`Debug` of [`Fault`], e.g. `"SlowDown"`), `None` if forwarded as is.
    pub fault: Option<String>,
}

impl Seen {
    /// The first value of a header (name in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The fault-injecting proxy. Stops on drop.
pub struct FaultProxy {
    endpoint: String,
    state: Arc<State>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultProxy")
            .field("endpoint", &self.endpoint)
            .field("upstream", &self.state.upstream)
            .finish_non_exhaustive()
    }
}

struct State {
    /// `host:port` of the upstream.
    upstream: String,
    inner: Mutex<Inner>,
    /// Bumped by [`FaultProxy::release`]; held requests wait for it to change.
    released: watch::Sender<u64>,
}

#[derive(Default)]
struct Inner {
    rules: Vec<(Rule, usize)>,
    log: Vec<Seen>,
    counts: HashMap<Op, usize>,
    /// Multipart uploads started through the proxy, by upload id.
    uploads: HashMap<String, Started>,
}

/// A multipart upload the proxy saw start.
#[derive(Debug, Clone)]
struct Started {
    key: String,
    /// When its CreateMultipartUpload arrived, or what a test set.
    initiated: SystemTime,
}

impl State {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (`http://host:port`, e.g. [`crate::S3Server::endpoint`]) on
    /// `127.0.0.1` and a random port.
    pub fn start(upstream: &str) -> Result<FaultProxy> {
        let upstream_authority = upstream_authority(upstream)?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("bind the proxy")?;
        listener.set_nonblocking(true)?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(State {
            upstream: upstream_authority,
            inner: Mutex::default(),
            released: watch::Sender::new(0),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("build the proxy runtime")?;
        let (stop, stopped) = oneshot::channel::<()>();
        let thread_state = state.clone();
        let thread = std::thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(e) => {
                            tracing::error!("fault proxy: {e}");
                            return;
                        }
                    };
                    tokio::select! {
                        _ = stopped => {}
                        _ = accept_loop(listener, thread_state) => {}
                    }
                });
                // Dropping the runtime cancels the connection tasks and closes their sockets.
                drop(runtime);
            })
            .context("spawn the proxy thread")?;
        Ok(FaultProxy {
            endpoint,
            state,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:<port>`: give it to S3 clients instead of the upstream's endpoint.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Adds a rule after those already there (the first rule that applies to a request wins).
    pub fn add_rule(&self, rule: Rule) {
        self.state.lock().rules.push((rule, 0));
    }

    /// Removes all rules: requests are forwarded as they are from now on.
    pub fn clear_rules(&self) {
        self.state.lock().rules.clear();
    }

    /// Every request seen so far, in arrival order.
    pub fn log(&self) -> Vec<Seen> {
        self.state.lock().log.clone()
    }

    /// The operations seen so far, in arrival order.
    pub fn ops(&self) -> Vec<Op> {
        self.state.lock().log.iter().map(|s| s.op).collect()
    }

    /// Forgets the requests seen so far (log and counts; rules keep their own counts).
    pub fn clear_log(&self) {
        let mut inner = self.state.lock();
        inner.log.clear();
        inner.counts.clear();
    }

    /// How many requests of `op` were seen (faulted ones included).
    pub fn count(&self, op: Op) -> usize {
        self.state.lock().counts.get(&op).copied().unwrap_or(0)
    }

    /// Waits (blocking, polling) until `n` requests of `op` were seen.
    ///
    /// # Errors
    /// Fewer were seen within `timeout`.
    pub fn wait_for(&self, op: Op, n: usize, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        while self.count(op) < n {
            if start.elapsed() > timeout {
                bail!(
                    "{} {op:?} request(s) seen within {timeout:?}, not {n}",
                    self.count(op)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Lets every request held by [`Fault::Hold`] go on; requests a `Hold` rule hits later
    /// wait for the next call.
    pub fn release(&self) {
        self.state
            .released
            .send_modify(|generation| *generation += 1);
    }

    /// Makes ListMultipartUploads replies say that uploads were started `at`: the upload with
    /// this id, or every upload to this key, among those started through the proxy.
    ///
    /// # Errors
    /// No such upload was seen.
    pub fn set_initiated(&self, upload_id_or_key: &str, at: SystemTime) -> Result<()> {
        let mut inner = self.state.lock();
        let mut found = false;
        for (id, started) in &mut inner.uploads {
            if id == upload_id_or_key || started.key == upload_id_or_key {
                started.initiated = at;
                found = true;
            }
        }
        if !found {
            bail!("no multipart upload with id or key {upload_id_or_key:?} went through the proxy");
        }
        Ok(())
    }

    /// The multipart uploads started through the proxy: (key, upload id), in no set order.
    pub fn uploads(&self) -> Vec<(String, String)> {
        self.state
            .lock()
            .uploads
            .iter()
            .map(|(id, started)| (started.key.clone(), id.clone()))
            .collect()
    }

    /// Requests seen per operation.
    pub fn counts(&self) -> HashMap<Op, usize> {
        self.state.lock().counts.clone()
    }

    /// An SDK config builder for the proxy: the test credentials of [`crate::S3Server`],
    /// `us-east-1`, path style, retries disabled (set your own with `.retry_config(...)`).
    pub fn s3_config(&self) -> aws_sdk_s3::config::Builder {
        aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .retry_config(RetryConfig::disabled())
            .credentials_provider(Credentials::new(
                crate::s3::ACCESS_KEY,
                crate::s3::SECRET_KEY,
                None,
                None,
                "litemaas-testkit",
            ))
    }

    /// An SDK client for the proxy ([`FaultProxy::s3_config`]: no retries).
    pub fn client(&self) -> aws_sdk_s3::Client {
        aws_sdk_s3::Client::from_conf(self.s3_config().build())
    }

    /// The environment a program (our binaries, the `aws` CLI) needs to go through the proxy.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", crate::s3::ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", crate::s3::SECRET_KEY.to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_DEFAULT_REGION", "us-east-1".to_owned()),
            ("AWS_ENDPOINT_URL_S3", self.endpoint.clone()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
            ("AWS_CONFIG_FILE", "/dev/null".to_owned()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".to_owned()),
        ]
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `http://host:port[/...]` → `host:port` (port 80 by default).
fn upstream_authority(upstream: &str) -> Result<String> {
    let Some(rest) = upstream.strip_prefix("http://") else {
        bail!("the fault proxy's upstream must be http://host:port, not {upstream:?}");
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        bail!("no host in upstream {upstream:?}");
    }
    let has_port = match authority.rfind(']') {
        Some(bracket) => authority[bracket..].contains(':'),
        None => authority.contains(':'),
    };
    Ok(if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    })
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_connection(stream, state.clone()));
            }
            Err(e) => {
                tracing::warn!("fault proxy accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Asks the connection task to stop serving and reset the connection, after writing `partial`.
struct Kill {
    partial: Option<Vec<u8>>,
}

type ProxyBody = Either<Incoming, Full<Bytes>>;

async fn serve_connection(stream: TcpStream, state: Arc<State>) {
    let _ = stream.set_nodelay(true);
    // A second descriptor of the socket, kept to reset it ourselves after hyper lets go.
    let (stream, control) = match dup(stream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::warn!("fault proxy: {e}");
            return;
        }
    };
    let (kill_tx, mut kill_rx) = mpsc::unbounded_channel::<Kill>();
    let service =
        hyper::service::service_fn(move |req| handle(state.clone(), kill_tx.clone(), req));
    let mut conn = Box::pin(
        hyper::server::conn::http1::Builder::new()
            .preserve_header_case(true)
            .serve_connection(TokioIo::new(stream), service),
    );
    let kill = tokio::select! {
        _ = conn.as_mut() => return,
        kill = kill_rx.recv() => kill,
    };
    // Closes hyper's descriptor without writing anything; `control` keeps the socket open.
    drop(conn);
    let Some(kill) = kill else { return };
    let Ok(control) = TcpStream::from_std(control) else {
        return;
    };
    if let Some(partial) = kill.partial {
        let mut control = control;
        let _ = control.write_all(&partial).await;
        let _ = control.flush().await;
        tokio::time::sleep(PARTIAL_GRACE).await;
        reset(control);
    } else {
        reset(control);
    }
}

fn dup(stream: TcpStream) -> std::io::Result<(TcpStream, std::net::TcpStream)> {
    let std_stream = stream.into_std()?;
    let control = std_stream.try_clone()?;
    Ok((TcpStream::from_std(std_stream)?, control))
}

/// Closes with `SO_LINGER` 0: the kernel sends RST instead of FIN.
fn reset(stream: TcpStream) {
    if let Err(e) = stream.set_zero_linger() {
        tracing::warn!("fault proxy: SO_LINGER 0: {e}");
    }
    drop(stream);
}

async fn handle(
    state: Arc<State>,
    kill: mpsc::UnboundedSender<Kill>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let (op, fault) = admit(&state, &req);
    let seen_at = SystemTime::now();
    let version = req.version();
    let mut response = match fault {
        None => witness(&state, op, seen_at, forward(&state, req).await).await,
        Some(Fault::Stall(delay)) => {
            tokio::time::sleep(delay).await;
            witness(&state, op, seen_at, forward(&state, req).await).await
        }
        Some(Fault::Hold) => {
            let mut released = state.released.subscribe();
            let held_at = *released.borrow_and_update();
            let _ = released.wait_for(|generation| *generation != held_at).await;
            witness(&state, op, seen_at, forward(&state, req).await).await
        }
        Some(Fault::Status(code)) => {
            drain(req).await;
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            s3_error(
                status,
                status_error_code(status),
                "Injected by the fault proxy.",
            )
        }
        Some(Fault::SlowDown) => {
            drain(req).await;
            s3_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "SlowDown",
                "Please reduce your request rate.",
            )
        }
        Some(Fault::CompleteErrorIn200) => {
            drain(req).await;
            s3_error(
                StatusCode::OK,
                "InternalError",
                "We encountered an internal error. Please try again.",
            )
        }
        Some(Fault::RejectChecksumHeaders) => {
            drain(req).await;
            s3_error(
                StatusCode::BAD_REQUEST,
                "InvalidRequest",
                "Checksum headers are not supported (injected by the fault proxy).",
            )
        }
        Some(Fault::ResetBeforeResponse) => {
            drain(req).await;
            return die(kill, None).await;
        }
        Some(Fault::DropReplyAfterForwarding) => {
            let response = forward(&state, req).await;
            // Read the whole reply so the upstream has surely finished.
            let _ = collect(response).await;
            return die(kill, None).await;
        }
        Some(Fault::ResetMidResponse) => {
            let response = forward(&state, req).await;
            let (head, body) = collect(response).await;
            let partial = partial_response(&head, &body);
            return die(kill, Some(partial)).await;
        }
    };
    *response.version_mut() = version;
    Ok(response)
}

/// Hands the connection to its task for a reset; the response never comes.
async fn die(
    kill: mpsc::UnboundedSender<Kill>,
    partial: Option<Vec<u8>>,
) -> Result<Response<ProxyBody>, Infallible> {
    let _ = kill.send(Kill { partial });
    std::future::pending().await
}

/// Classifies, counts and logs a request, and picks its fault.
fn admit(state: &State, req: &Request<Incoming>) -> (Op, Option<Fault>) {
    let op = classify(req.method(), req.uri(), req.headers());
    let mut inner = state.lock();
    *inner.counts.entry(op).or_default() += 1;
    let mut chosen = None;
    for (rule, count) in inner.rules.iter_mut() {
        if rule.op != op {
            continue;
        }
        *count += 1;
        if chosen.is_none()
            && rule.nth.hits(*count)
            && (rule.fault != Fault::RejectChecksumHeaders || has_checksum_headers(req.headers()))
        {
            chosen = Some(rule.fault);
        }
    }
    let headers = req
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    inner.log.push(Seen {
        op,
        method: req.method().as_str().to_owned(),
        path_and_query: req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| req.uri().to_string()),
        headers,
        fault: chosen.map(|f| format!("{f:?}")),
    });
    (op, chosen)
}

/// What the proxy notes of, and changes in, a reply it forwards: the start of multipart
/// uploads (seen at `seen_at`), and their true start times in ListMultipartUploads replies.
async fn witness(
    state: &State,
    op: Op,
    seen_at: SystemTime,
    response: Response<ProxyBody>,
) -> Response<ProxyBody> {
    if !matches!(op, Op::CreateMultipartUpload | Op::ListMultipartUploads)
        || !response.status().is_success()
    {
        return response;
    }
    let (mut head, body) = collect(response).await;
    let text = String::from_utf8_lossy(&body);
    let body = if op == Op::CreateMultipartUpload {
        if let (Some(key), Some(id)) = (xml_text(&text, "Key"), xml_text(&text, "UploadId")) {
            state.lock().uploads.insert(
                id,
                Started {
                    key,
                    initiated: seen_at,
                },
            );
        }
        body
    } else {
        let initiated: HashMap<String, SystemTime> = state
            .lock()
            .uploads
            .iter()
            .map(|(id, started)| (id.clone(), started.initiated))
            .collect();
        Bytes::from(rewrite_initiated(&text, &initiated))
    };
    head.headers.remove(TRANSFER_ENCODING);
    head.headers
        .insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    Response::from_parts(head, Either::Right(Full::new(body)))
}

/// The text of the first `<tag>` element, with XML's predefined entities decoded.
fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&format!("</{tag}>"))?;
    Some(
        xml[start..end]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

/// Replaces the `<Initiated>` of each `<Upload>` whose `<UploadId>` is in `initiated`.
fn rewrite_initiated(xml: &str, initiated: &HashMap<String, SystemTime>) -> String {
    let mut out = String::with_capacity(xml.len());
    let mut rest = xml;
    while let Some(start) = rest.find("<Upload>") {
        let Some(len) = rest[start..].find("</Upload>") else {
            break;
        };
        let end = start + len + "</Upload>".len();
        out.push_str(&rest[..start]);
        let upload = &rest[start..end];
        let at = xml_text(upload, "UploadId").and_then(|id| initiated.get(&id).copied());
        match (at, xml_text(upload, "Initiated")) {
            (Some(at), Some(old)) => {
                let new = aws_sdk_s3::primitives::DateTime::from(at)
                    .fmt(aws_sdk_s3::primitives::DateTimeFormat::DateTime)
                    .unwrap_or(old.clone());
                out.push_str(&upload.replacen(
                    &format!("<Initiated>{old}</Initiated>"),
                    &format!("<Initiated>{new}</Initiated>"),
                    1,
                ));
            }
            _ => out.push_str(upload),
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn has_checksum_headers(headers: &HeaderMap) -> bool {
    headers.keys().any(|name| {
        let name = name.as_str();
        name.starts_with("x-amz-checksum-") || name == "x-amz-sdk-checksum-algorithm"
    })
}

/// The S3 operation of a request (see [`Op`]).
fn classify(method: &Method, uri: &hyper::Uri, headers: &HeaderMap) -> Op {
    let query: Vec<&str> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .collect();
    let has = |key: &str| {
        query
            .iter()
            .any(|p| p.split('=').next().is_some_and(|k| k == key))
    };
    let value = |key: &str| {
        query.iter().find_map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k == key).then_some(v)
        })
    };
    let host = headers
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.host())
        .unwrap_or("");
    let path = uri.path().trim_start_matches('/');
    let object_level = if path_style(host) {
        path.split_once('/').is_some_and(|(_, key)| !key.is_empty())
    } else {
        !path.is_empty()
    };
    // Object sub-resources that make a request something other than the plain operation.
    const SUBRESOURCES: &[&str] = &[
        "acl",
        "tagging",
        "attributes",
        "torrent",
        "retention",
        "legal-hold",
        "restore",
        "select",
        "uploads",
        "uploadId",
    ];
    let plain = !SUBRESOURCES.iter().any(|s| has(s));
    match *method {
        Method::POST if has("uploads") && object_level => Op::CreateMultipartUpload,
        Method::POST if has("uploadId") && object_level => Op::CompleteMultipartUpload,
        Method::PUT if has("partNumber") && has("uploadId") => Op::UploadPart,
        Method::PUT if object_level && plain => Op::PutObject,
        Method::DELETE if has("uploadId") => Op::AbortMultipartUpload,
        Method::DELETE if object_level && plain => Op::DeleteObject,
        Method::GET if !object_level && has("uploads") => Op::ListMultipartUploads,
        Method::GET if !object_level && value("list-type") == Some("2") => Op::ListObjectsV2,
        Method::GET if object_level && plain => Op::GetObject,
        Method::HEAD if object_level && plain => Op::HeadObject,
        _ => Op::Other,
    }
}

/// Path style unless the host looks like `bucket.some.domain`.
fn path_style(host: &str) -> bool {
    if host.starts_with('[') {
        return true; // an IPv6 literal
    }
    let name = host.rsplit_once(':').map_or(host, |(name, _)| name);
    name == "localhost" || name.parse::<std::net::Ipv4Addr>().is_ok() || !name.contains('.')
}

async fn forward(state: &State, req: Request<Incoming>) -> Response<ProxyBody> {
    match try_forward(state, req).await {
        Ok(response) => response.map(Either::Left),
        Err(e) => {
            tracing::warn!("fault proxy: forwarding to {}: {e:#}", state.upstream);
            let mut response = Response::new(Either::Right(Full::new(Bytes::from(format!(
                "fault proxy: upstream {}: {e:#}\n",
                state.upstream
            )))));
            *response.status_mut() = StatusCode::BAD_GATEWAY;
            response
        }
    }
}

async fn try_forward(state: &State, req: Request<Incoming>) -> Result<Response<Incoming>> {
    let stream = TcpStream::connect(&state.upstream)
        .await
        .with_context(|| format!("connect to {}", state.upstream))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .preserve_header_case(true)
        .handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake")?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("fault proxy: upstream connection: {e}");
        }
    });
    sender.send_request(req).await.context("send the request")
}

async fn drain(req: Request<Incoming>) {
    let _ = req.into_body().collect().await;
}

async fn collect(response: Response<ProxyBody>) -> (hyper::http::response::Parts, Bytes) {
    let (head, body) = response.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    (head, body)
}

/// The whole head and half the body; half the head when there is no body.
fn partial_response(head: &hyper::http::response::Parts, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        head.status.as_u16(),
        head.status.canonical_reason().unwrap_or("")
    )
    .into_bytes();
    for (name, value) in &head.headers {
        if name == TRANSFER_ENCODING || name == CONTENT_LENGTH {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    if body.is_empty() {
        out.truncate(out.len() / 2);
    } else {
        out.extend_from_slice(&body[..body.len() / 2]);
    }
    out
}

fn status_error_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "BadRequest",
        403 => "AccessDenied",
        404 => "NotFound",
        409 => "Conflict",
        500 => "InternalError",
        501 => "NotImplemented",
        503 => "ServiceUnavailable",
        _ => "InjectedFault",
    }
}

/// An S3 REST error: `<Error><Code>…</Code><Message>…</Message>…</Error>`.
fn s3_error(status: StatusCode, code: &str, message: &str) -> Response<ProxyBody> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>{message}</Message><RequestId>FAULTPROXY</RequestId>\
         <HostId>litemaas-fault-proxy</HostId></Error>"
    );
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    headers.insert("x-amz-request-id", HeaderValue::from_static("FAULTPROXY"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(method: Method, target: &str) -> Op {
        let mut headers = HeaderMap::new();
        headers.insert(
            hyper::header::HOST,
            HeaderValue::from_static("127.0.0.1:9000"),
        );
        classify(&method, &target.parse().unwrap(), &headers)
    }

    #[test]
    fn classifies_path_style_requests() {
        assert_eq!(op(Method::POST, "/b/k?uploads"), Op::CreateMultipartUpload);
        assert_eq!(op(Method::POST, "/b/k?uploads="), Op::CreateMultipartUpload);
        assert_eq!(
            op(Method::PUT, "/b/k?partNumber=1&uploadId=x"),
            Op::UploadPart
        );
        assert_eq!(
            op(
                Method::PUT,
                "/b/dir/k?uploadId=x&partNumber=2&x-id=UploadPart"
            ),
            Op::UploadPart
        );
        assert_eq!(
            op(Method::POST, "/b/k?uploadId=x"),
            Op::CompleteMultipartUpload
        );
        assert_eq!(
            op(Method::DELETE, "/b/k?uploadId=x"),
            Op::AbortMultipartUpload
        );
        assert_eq!(op(Method::GET, "/b?uploads"), Op::ListMultipartUploads);
        assert_eq!(
            op(Method::GET, "/b/?uploads&prefix=p"),
            Op::ListMultipartUploads
        );
        assert_eq!(op(Method::PUT, "/b/k"), Op::PutObject);
        assert_eq!(op(Method::PUT, "/b/k?x-id=PutObject"), Op::PutObject);
        assert_eq!(op(Method::GET, "/b/k"), Op::GetObject);
        assert_eq!(op(Method::GET, "/b/k?partNumber=1"), Op::GetObject);
        assert_eq!(op(Method::HEAD, "/b/k"), Op::HeadObject);
        assert_eq!(op(Method::DELETE, "/b/k"), Op::DeleteObject);
        assert_eq!(
            op(Method::GET, "/b?list-type=2&prefix=a"),
            Op::ListObjectsV2
        );
        assert_eq!(op(Method::GET, "/b/?list-type=2"), Op::ListObjectsV2);
        assert_eq!(op(Method::GET, "/b"), Op::Other);
        assert_eq!(op(Method::PUT, "/b"), Op::Other);
        assert_eq!(op(Method::HEAD, "/b"), Op::Other);
        assert_eq!(op(Method::GET, "/b/k?uploadId=x"), Op::Other);
        assert_eq!(op(Method::PUT, "/b/k?tagging"), Op::Other);
        assert_eq!(op(Method::POST, "/b?delete"), Op::Other);
    }

    #[test]
    fn classifies_virtual_hosted_requests() {
        let mut headers = HeaderMap::new();
        headers.insert(
            hyper::header::HOST,
            HeaderValue::from_static("bucket.s3.example.com"),
        );
        let classify = |m: Method, t: &str| classify(&m, &t.parse().unwrap(), &headers);
        assert_eq!(classify(Method::PUT, "/k"), Op::PutObject);
        assert_eq!(classify(Method::GET, "/?list-type=2"), Op::ListObjectsV2);
        assert_eq!(classify(Method::PUT, "/"), Op::Other);
    }

    #[test]
    fn initiated_is_rewritten_for_known_uploads_only() {
        let xml = "<ListMultipartUploadsResult><Bucket>b</Bucket>\
            <Upload><Key>a&amp;b</Key><UploadId>known</UploadId><Initiated>2010-11-10T20:48:33.000Z</Initiated></Upload>\
            <Upload><Key>c</Key><UploadId>other</UploadId><Initiated>2010-11-10T20:48:33.000Z</Initiated></Upload>\
            <IsTruncated>false</IsTruncated></ListMultipartUploadsResult>";
        let at = std::time::UNIX_EPOCH + Duration::from_millis(1_767_225_600_250);
        let out = rewrite_initiated(xml, &HashMap::from([("known".to_owned(), at)]));
        assert_eq!(
            out,
            xml.replacen("2010-11-10T20:48:33.000Z", "2026-01-01T00:00:00.25Z", 1)
        );
        assert_eq!(xml_text(xml, "Key").as_deref(), Some("a&b"));
        assert_eq!(xml_text(xml, "Nothing"), None);
    }

    #[test]
    fn nth_counts_from_one() {
        assert!(Nth::Every.hits(7));
        assert!(!Nth::Nth(2).hits(1) && Nth::Nth(2).hits(2) && !Nth::Nth(2).hits(3));
        assert!(Nth::FirstN(2).hits(1) && Nth::FirstN(2).hits(2) && !Nth::FirstN(2).hits(3));
        assert!(!Nth::FirstN(0).hits(1));
    }

    #[test]
    fn upstream_authorities() {
        assert_eq!(
            upstream_authority("http://127.0.0.1:5000").unwrap(),
            "127.0.0.1:5000"
        );
        assert_eq!(
            upstream_authority("http://127.0.0.1:5000/").unwrap(),
            "127.0.0.1:5000"
        );
        assert_eq!(upstream_authority("http://moto").unwrap(), "moto:80");
        assert!(upstream_authority("https://x:1").is_err());
    }

    #[test]
    fn partial_responses_cut_the_body_or_the_head() {
        let (head, ()) = Response::builder()
            .status(200)
            .header("etag", "\"x\"")
            .body(())
            .unwrap()
            .into_parts();
        let with_body = partial_response(&head, b"0123456789");
        assert!(with_body.ends_with(b"content-length: 10\r\n\r\n01234"));
        let without = partial_response(&head, b"");
        assert!(!without.windows(4).any(|w| w == b"\r\n\r\n"));
        assert!(without.starts_with(b"HTTP/1.1 200"));
    }
}
