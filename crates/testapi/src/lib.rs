//! # litemaas-testapi
//!
//! An in-process Kubernetes API server for tests, faithful enough that production code runs
//! against it unchanged through a kubeconfig, and that `kubectl` agrees with what it stores.
//!
//! - Discovery (`/version`, `/api`, `/apis`, resource lists) for the types LiteMaaS backups touch:
//!   namespaces, pods, secrets, PVCs, PersistentVolumes, StorageClasses, core Events, service
//!   accounts, StatefulSets (with `scale`), CronJobs, Jobs, Roles, RoleBindings, Leases,
//!   VolumeSnapshots, their contents and classes, OpenShift Routes.
//! - The API's semantics: uid, increasing resourceVersion with 409 on stale updates,
//!   creationTimestamp, generateName, label and field selectors, JSON / merge / strategic merge
//!   patches and server-side apply (as a merge), dry runs (`?dryRun=All`: checked and answered,
//!   nothing stored), `status` subresources, watches with resume,
//!   finalizers (a delete marks, the last finalizer's removal deletes), and `Status` error bodies
//!   shaped like the real ones.
//! - Optional bearer tokens with RBAC rules ([`Rule::from_role`]), so a test can prove a Role is
//!   enough; `SelfSubjectAccessReview` answered from the calling token's rules (resource,
//!   subresource, verb, namespace, name, `*/subresource` wildcards) and `SelfSubjectReview`
//!   naming its user, as JSON or as the protobuf client-go sends.
//! - Simulated controllers ([`ControllerConfig`]): the CSI snapshotter (a VolumeSnapshotContent
//!   per ready snapshot, naming the source volume); the StatefulSet controller, which (like the
//!   real one) makes a missing claim from `volumeClaimTemplates`, EMPTY; pods that start only once
//!   every claim they mount is Bound; and storage as a volume restore meets it: StorageClasses
//!   (default, `WaitForFirstConsumer`), provisioning and binding of claims, also restored from a
//!   VolumeSnapshot (ready, big enough, same driver), pvc- and pv-protection, reclaim policies
//!   `Delete` and `Retain`, and optionally snapshots that die with their volume. Why a claim is
//!   Pending is a core Event on it ([`TestApiServer::pending_reason`]).
//! - For tests: request failures injected before anything changes ([`TestApiServer::fail_next`])
//!   and an ordered, unbounded log of every change ([`TestApiServer::event_log`]), to assert
//!   orders such as "the claim was never missing while replicas > 0".
//! - `pods/<name>/exec` over WebSocket (v4 and v5 channel protocols; RBAC `get` and `create` on
//!   `pods/exec`, as Kubernetes 1.35 and later check) running the command on this
//!   host with an environment registered per pod ([`TestApiServer::set_exec_env`]); every
//!   request is recorded ([`TestApiServer::exec_log`]). As with a real kubelet, a client that
//!   goes away does not stop the command: its stdin is closed, its output goes nowhere, and it
//!   runs until it exits ([`TestApiServer::wait_exec_idle`]); the server kills what is still
//!   running when it is dropped.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! use k8s_openapi::api::core::v1::Secret;
//! use kube::api::{Api, PostParams};
//!
//! let server = litemaas_testapi::TestApiServer::start().await?;
//! server.create_namespace("litemaas")?;
//! // Production code builds its client from a kubeconfig; so does this one.
//! let secrets: Api<Secret> = Api::namespaced(server.client().await?, "litemaas");
//! let mut secret = Secret::default();
//! secret.metadata.name = Some("litemaas-db".into());
//! secrets.create(&PostParams::default(), &secret).await?;
//! let stored = server.get("", "secrets", "litemaas", "litemaas-db")?;
//! assert!(stored["metadata"]["uid"].is_string());
//! // kubectl uses the same kubeconfig: server.kubectl().args(["get", "secrets", "-n", "litemaas"])
//! # Ok(()) }
//! ```

mod api;
mod auth;
mod controllers;
mod error;
mod exec;
mod faults;
mod quantity;
mod resources;
mod review;
mod select;
mod storage;
mod store;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use anyhow::{Context, Result};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub use auth::{Identity, Rule};
pub use controllers::{ControllerConfig, SnapshotBehavior};
pub use error::ApiError;
pub use resources::{RESOURCES, ResourceDef};
pub use storage::IN_TREE_PROVISIONER;
pub use store::EventType;

/// The token of the test's own (administrator) client.
pub const ADMIN_TOKEN: &str = "litemaas-testapi-admin";

/// The user name of the administrator token (and of requests without a token), as a
/// `SelfSubjectReview` reports it.
pub const ADMIN_USER: &str = "system:admin";

/// One exec request, as an API server audit log would record it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRecord {
    /// Namespace.
    pub namespace: String,
    /// Pod.
    pub pod: String,
    /// Container, if named.
    pub container: Option<String>,
    /// The command line.
    pub command: Vec<String>,
    /// Whether stdin was attached.
    pub stdin: bool,
    /// The full request URI (what an audit log stores).
    pub request_uri: String,
}

/// One change the server made to an object, as a watch would report it; see
/// [`TestApiServer::event_log`].
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedEvent {
    /// Added, Modified or Deleted.
    pub kind: EventType,
    /// API group (`""` for core).
    pub group: String,
    /// Resource plural (`persistentvolumeclaims`).
    pub plural: String,
    /// Namespace (`""` for cluster-scoped objects).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The resourceVersion the change made (the log is in this order).
    pub resource_version: u64,
    /// The object as stored after the change (for a deletion: as it was when it went).
    pub object: Value,
}

impl LoggedEvent {
    /// Whether this is a change of `namespace/name` of resource `plural` (`""` namespace for
    /// cluster-scoped objects).
    pub fn is(&self, plural: &str, namespace: &str, name: &str) -> bool {
        self.plural == plural && self.namespace == namespace && self.name == name
    }

    /// The object's uid.
    pub fn uid(&self) -> &str {
        self.object["metadata"]["uid"].as_str().unwrap_or("")
    }
}

/// Why a claim is Pending: the last core Event the storage controllers gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingReason {
    /// `Normal` or `Warning`.
    pub kind: String,
    /// `WaitForFirstConsumer`, `ProvisioningFailed`, `FailedBinding`, …
    pub reason: String,
    /// The message, e.g. `failed to provision volume with StorageClass "rbd": error getting
    /// handle for DataSource Type VolumeSnapshot by Name s: snapshot s is not Ready`.
    pub message: String,
}

/// Environment of exec'd commands by (namespace, pod).
type ExecEnv = HashMap<(String, String), Vec<(String, String)>>;

pub(crate) struct Shared {
    pub store: store::Store,
    pub auth: RwLock<auth::Auth>,
    pub controllers: RwLock<ControllerConfig>,
    pub exec_env: Mutex<ExecEnv>,
    pub exec_log: Mutex<Vec<ExecRecord>>,
    /// How many exec'd commands have not been reaped yet (counted by `exec::Running`).
    pub exec_running: tokio::sync::watch::Sender<usize>,
    /// Added latency per resource plural, for reads and for writes (see
    /// [`TestApiServer::set_delay`]).
    pub delays: Mutex<HashMap<String, (std::time::Duration, std::time::Duration)>>,
    /// Injected request failures (see [`TestApiServer::fail_next`]).
    pub faults: Mutex<faults::Faults>,
    pub shutdown: CancellationToken,
}

impl Shared {
    pub(crate) fn exec_env(&self, namespace: &str, pod: &str) -> Vec<(String, String)> {
        self.exec_env
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(namespace.to_owned(), pod.to_owned()))
            .cloned()
            .unwrap_or_default()
    }
}

/// A running test API server on a random loopback port; stopped on drop.
pub struct TestApiServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for TestApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestApiServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl TestApiServer {
    /// Starts a server with the default controller behaviour and a `default` namespace.
    pub async fn start() -> Result<Self> {
        Self::start_with(ControllerConfig::default()).await
    }

    /// Starts a server with the given controller behaviour.
    pub async fn start_with(config: ControllerConfig) -> Result<Self> {
        let shared = Arc::new(Shared {
            store: store::Store::default(),
            auth: RwLock::default(),
            controllers: RwLock::new(config),
            exec_env: Mutex::default(),
            exec_log: Mutex::default(),
            exec_running: tokio::sync::watch::Sender::new(0),
            delays: Mutex::default(),
            faults: Mutex::default(),
            shutdown: CancellationToken::new(),
        });
        // Subscribed before anything can change, so the controllers miss nothing.
        let events = shared.store.subscribe();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("bind the test API server")?;
        let addr = listener.local_addr()?;
        let router = axum::Router::new()
            .route(
                "/api/v1/namespaces/{namespace}/pods/{pod}/exec",
                axum::routing::any(exec::handle),
            )
            .route(
                "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                axum::routing::post(review::access),
            )
            .route(
                "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                axum::routing::post(review::subject),
            )
            .fallback(api::handle)
            .with_state(shared.clone());
        let shutdown = shared.shutdown.clone();
        let task = tokio::spawn(async move {
            let serve =
                axum::serve(listener, router).with_graceful_shutdown(shutdown.cancelled_owned());
            if let Err(e) = serve.await {
                tracing::warn!("test API server stopped: {e}");
            }
        });
        tokio::spawn(controllers::run(shared.clone(), events));
        let dir = tempfile::Builder::new()
            .prefix("litemaas-testapi-")
            .tempdir()?;
        let server = Self {
            shared,
            addr,
            dir,
            task,
        };
        server.write_kubeconfig(&server.kubeconfig_path(), ADMIN_TOKEN, "default")?;
        server.create_namespace("default")?;
        Ok(server)
    }

    /// Makes every request on resources named `plural` (e.g. `leases`) wait `delay` before it is
    /// served, as an overloaded API server does; [`Duration::ZERO`](std::time::Duration::ZERO)
    /// removes the delay.
    pub fn set_delay(&self, plural: &str, delay: std::time::Duration) {
        self.set_delays(plural, delay, delay);
    }

    /// Like [`set_delay`](Self::set_delay), with one latency for reads (GET) and another for
    /// writes, as a server whose reads come from a cache and whose writes wait for storage.
    pub fn set_delays(
        &self,
        plural: &str,
        reads: std::time::Duration,
        writes: std::time::Duration,
    ) {
        let mut delays = self.shared.delays.lock().unwrap_or_else(|p| p.into_inner());
        if reads.is_zero() && writes.is_zero() {
            delays.remove(plural);
        } else {
            delays.insert(plural.to_owned(), (reads, writes));
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig (administrator token, namespace `default`) for kubectl and kube-rs.
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// Writes a kubeconfig for `token` with `namespace` as its default.
    pub fn write_kubeconfig(&self, path: &Path, token: &str, namespace: &str) -> Result<()> {
        let yaml = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: testapi\n  cluster:\n    server: {url}\n\
             contexts:\n- name: testapi\n  context:\n    cluster: testapi\n    user: testapi-user\n    namespace: {namespace}\n\
             current-context: testapi\nusers:\n- name: testapi-user\n  user:\n    token: {token}\n",
            url = self.url()
        );
        std::fs::write(path, yaml).with_context(|| format!("write {}", path.display()))
    }

    /// A kube-rs client for the administrator, built from the kubeconfig as production code
    /// builds one.
    pub async fn client(&self) -> Result<kube::Client> {
        self.client_for(&self.kubeconfig_path()).await
    }

    /// A kube-rs client for `token` (see [`add_token`](Self::add_token)).
    pub async fn client_with_token(&self, token: &str, namespace: &str) -> Result<kube::Client> {
        let path = self.dir.path().join(format!("kubeconfig-{token}"));
        self.write_kubeconfig(&path, token, namespace)?;
        self.client_for(&path).await
    }

    async fn client_for(&self, path: &Path) -> Result<kube::Client> {
        let kubeconfig = kube::config::Kubeconfig::read_from(path)?;
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// `kubectl` set up for this server (`KUBECONFIG`, no OpenAPI validation).
    pub fn kubectl(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new("kubectl");
        cmd.env("KUBECONFIG", self.kubeconfig_path())
            .env("HOME", self.dir.path());
        cmd
    }

    /// Accepts `token` with the given identity and RBAC rules.
    pub fn add_token(&self, token: &str, identity: Identity) {
        self.shared
            .auth
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .add(token.to_owned(), identity);
    }

    /// A token for ServiceAccount `namespace/name`, holding what RBAC grants it in `namespace`:
    /// the rules of every Role that a RoleBinding in `namespace` binds to it (as the real
    /// authorizer reads them; ClusterRoles are not served). The rules are read now: after a
    /// change to a Role or RoleBinding, ask for a new token. Its user is
    /// `system:serviceaccount:<namespace>:<name>`, as messages and `SelfSubjectReview` name it.
    ///
    /// # Errors
    ///
    /// The ServiceAccount does not exist, or a RoleBinding names a Role that does not.
    pub fn service_account_token(&self, namespace: &str, name: &str) -> Result<String> {
        self.get("", "serviceaccounts", namespace, name)
            .with_context(|| format!("ServiceAccount {namespace}/{name}"))?;
        let bindings = RESOURCES
            .iter()
            .find(|r| r.plural == "rolebindings")
            .context("rolebindings are served")?;
        let (items, _) =
            self.shared
                .store
                .list(bindings, Some(namespace), &select::Selectors::default());
        let mut rules = Vec::new();
        for binding in &items {
            let binds_it = binding["subjects"].as_array().is_some_and(|subjects| {
                subjects.iter().any(|s| {
                    s["kind"] == "ServiceAccount"
                        && s["name"] == name
                        && s["namespace"].as_str().unwrap_or(namespace) == namespace
                })
            });
            if !binds_it || binding["roleRef"]["kind"] != "Role" {
                continue;
            }
            let role_name = binding["roleRef"]["name"].as_str().unwrap_or_default();
            let role = self
                .get("rbac.authorization.k8s.io", "roles", namespace, role_name)
                .with_context(|| {
                    format!(
                        "Role {namespace}/{role_name} of RoleBinding {}",
                        binding["metadata"]["name"].as_str().unwrap_or_default()
                    )
                })?;
            rules.extend(Rule::from_role(&role));
        }
        let seq = self
            .shared
            .auth
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .len();
        let token = format!("sa-{namespace}-{name}-{seq}");
        self.add_token(
            &token,
            Identity {
                user: format!("system:serviceaccount:{namespace}:{name}"),
                namespace: Some(namespace.to_owned()),
                rules,
            },
        );
        Ok(token)
    }

    /// Changes how the simulated controllers behave from now on.
    pub fn set_controllers(&self, config: ControllerConfig) {
        *self
            .shared
            .controllers
            .write()
            .unwrap_or_else(|p| p.into_inner()) = config;
    }

    /// The environment commands exec'd in `namespace/pod` run with (e.g. `PGHOST`, `PGPORT`).
    pub fn set_exec_env(&self, namespace: &str, pod: &str, env: Vec<(String, String)>) {
        self.shared
            .exec_env
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((namespace.into(), pod.into()), env);
    }

    /// Every exec request so far.
    pub fn exec_log(&self) -> Vec<ExecRecord> {
        self.shared
            .exec_log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How many exec'd commands are still running (or about to start): a command keeps running
    /// after its client goes away, as it would in a container.
    pub fn exec_running(&self) -> usize {
        *self.shared.exec_running.borrow()
    }

    /// Waits until every exec'd command has exited and been reaped, e.g. before a test inspects
    /// what a command left behind after its client went away. Returns whether that happened
    /// within `timeout`.
    pub async fn wait_exec_idle(&self, timeout: std::time::Duration) -> bool {
        let mut running = self.shared.exec_running.subscribe();
        matches!(
            tokio::time::timeout(timeout, running.wait_for(|n| *n == 0)).await,
            Ok(Ok(_))
        )
    }

    /// Creates an object directly (as the administrator), e.g. fixtures.
    pub fn create(
        &self,
        group: &str,
        plural: &str,
        namespace: &str,
        object: Value,
    ) -> Result<Value, ApiError> {
        let def = RESOURCES
            .iter()
            .find(|r| r.group == group && r.plural == plural)
            .ok_or_else(|| ApiError::no_route(&format!("{group}/{plural}")))?;
        self.shared.store.create(def, namespace, object)
    }

    /// Creates an object as if it had been created at `created` (RFC 3339): fixtures of a
    /// cluster that has run for months.
    pub fn create_aged(
        &self,
        group: &str,
        plural: &str,
        namespace: &str,
        object: Value,
        created: &str,
    ) -> Result<Value, ApiError> {
        let made = self.create(group, plural, namespace, object)?;
        let def = RESOURCES
            .iter()
            .find(|r| r.group == group && r.plural == plural)
            .ok_or_else(|| ApiError::no_route(&format!("{group}/{plural}")))?;
        let name = made["metadata"]["name"].as_str().unwrap_or_default();
        self.shared.store.set_creation_timestamp(
            def,
            &store::Key::new(def, namespace, name),
            created,
        )
    }

    /// Reads an object directly.
    pub fn get(
        &self,
        group: &str,
        plural: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        let def = RESOURCES
            .iter()
            .find(|r| r.group == group && r.plural == plural)
            .ok_or_else(|| ApiError::no_route(&format!("{group}/{plural}")))?;
        self.shared
            .store
            .get(def, &store::Key::new(def, namespace, name))
    }

    /// Replaces an object directly, as another client's update would (a `resourceVersion` in
    /// `object` must be current; the object gets a new one).
    pub fn replace(
        &self,
        group: &str,
        plural: &str,
        namespace: &str,
        name: &str,
        object: Value,
    ) -> Result<Value, ApiError> {
        let def = RESOURCES
            .iter()
            .find(|r| r.group == group && r.plural == plural)
            .ok_or_else(|| ApiError::no_route(&format!("{group}/{plural}")))?;
        self.shared.store.update(
            def,
            &store::Key::new(def, namespace, name),
            object,
            store::Part::Main,
        )
    }

    /// Deletes an object directly, as another client's delete would: an object with finalizers
    /// is only marked (`deletionTimestamp`) and goes when its last finalizer is removed.
    pub fn delete(
        &self,
        group: &str,
        plural: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        let def = RESOURCES
            .iter()
            .find(|r| r.group == group && r.plural == plural)
            .ok_or_else(|| ApiError::no_route(&format!("{group}/{plural}")))?;
        self.shared
            .store
            .delete(def, &store::Key::new(def, namespace, name))
    }

    /// Makes the next `count` requests with HTTP `method` (`GET`, `POST`, `PUT`, `PATCH`,
    /// `DELETE`, any case; `*` for any) on resource `plural` (`*` for any) fail with HTTP status
    /// `code`, before anything is read or changed. `subresource` `None` matches requests on the
    /// objects themselves (and their lists and watches), `Some("status")` or `Some("scale")`
    /// only those on that subresource. The body is a `Status` with the real server's reason for
    /// the code (500 `InternalError`, 503 `ServiceUnavailable`, 409 `Conflict`, 429
    /// `TooManyRequests`, 504 `Timeout`, 404 `NotFound`, 403 `Forbidden`, 422 `Invalid`, …).
    /// Faults armed earlier match first; each matching request uses up one.
    ///
    /// kube-rs 5 clients retry 429, 503 and 504 on their own (up to 15 times, from 5 ms, unless
    /// `Config::default_retry` is off): a few of those are absorbed, so a test of what a tool
    /// does on a failed call injects 500, or more 503s than the client retries.
    pub fn fail_next(
        &self,
        method: &str,
        plural: &str,
        subresource: Option<&str>,
        count: usize,
        code: u16,
    ) {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .add(faults::Fault {
                method: method.to_ascii_uppercase(),
                plural: plural.to_owned(),
                sub: subresource.map(str::to_owned),
                left: count,
                code,
            });
    }

    /// How many requests the faults armed with [`fail_next`](Self::fail_next) will still fail
    /// (0 once every one has been used up).
    pub fn faults_pending(&self) -> usize {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pending()
    }

    /// Every change to every object since the server started, in resourceVersion order: what
    /// clients, fixtures and the simulated controllers did. Unbounded (unlike the history kept
    /// for watches).
    pub fn event_log(&self) -> Vec<LoggedEvent> {
        self.shared
            .store
            .log()
            .into_iter()
            .map(|e| LoggedEvent {
                kind: e.kind,
                group: e.key.group,
                plural: e.key.plural,
                namespace: e.key.namespace,
                name: e.key.name,
                resource_version: e.rv,
                object: e.object,
            })
            .collect()
    }

    /// Why claim `namespace/name` is Pending: the newest core Event the storage controllers
    /// recorded for it (for this claim's uid, not an earlier claim of the same name), or `None`
    /// if it is not Pending or was given no reason.
    pub fn pending_reason(&self, namespace: &str, name: &str) -> Option<PendingReason> {
        let claim = self
            .get("", "persistentvolumeclaims", namespace, name)
            .ok()?;
        if claim["status"]["phase"] == serde_json::json!("Bound") {
            return None;
        }
        let uid = claim["metadata"]["uid"].as_str()?;
        let events = RESOURCES.iter().find(|r| r.plural == "events")?;
        let (items, _) =
            self.shared
                .store
                .list(events, Some(namespace), &select::Selectors::default());
        items
            .into_iter()
            .filter(|e| e["involvedObject"]["uid"] == serde_json::json!(uid))
            .max_by_key(|e| {
                e["metadata"]["resourceVersion"]
                    .as_str()
                    .and_then(|rv| rv.parse::<u64>().ok())
                    .unwrap_or(0)
            })
            .map(|e| PendingReason {
                kind: e["type"].as_str().unwrap_or("").to_owned(),
                reason: e["reason"].as_str().unwrap_or("").to_owned(),
                message: e["message"].as_str().unwrap_or("").to_owned(),
            })
    }

    /// Creates a namespace.
    pub fn create_namespace(&self, name: &str) -> Result<Value, ApiError> {
        self.create(
            "",
            "namespaces",
            "",
            serde_json::json!({"metadata": {"name": name}}),
        )
    }
}

impl Drop for TestApiServer {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
        self.task.abort();
    }
}
