//! The Kubernetes checks, in the order a backup meets them: the cluster and who we are, the
//! namespace, the database StatefulSet and its Running pod, the Secret and its keys, the claim
//! and its CSI driver, a VolumeSnapshotClass for that driver, every access the backup and the
//! restore need (asked with SelfSubjectAccessReview, so the API server's own RBAC answers), and
//! the route timeouts. A failed prerequisite turns the checks that depend on it into `skipped`
//! lines. Nothing here writes anything: reviews are not stored.

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, ListParams, PostParams};
use litemaas_backup::dump::PodTarget;
use litemaas_backup::snapshot::VolumeSnapshotClass;

use crate::check::Check;

pub use litemaas_backup::cluster::{Access, Need, REQUIRED_ACCESS};
use litemaas_backup::cluster::{SNAPSHOTS, access};

/// The annotation that makes a VolumeSnapshotClass the default for its driver.
const DEFAULT_CLASS: &str = "snapshot.storage.kubernetes.io/is-default-class";
/// The service account token file in a pod.
const TOKEN_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// What the cluster checks look at; the defaults are LiteMaaS's.
#[derive(Debug, Clone)]
pub struct Options {
    /// kubeconfig context (default: the current one, or in-cluster).
    pub context: Option<String>,
    /// The database pod, its container and the Secret.
    pub target: PodTarget,
    /// The database StatefulSet.
    pub statefulset: String,
    /// Label selector of the claim to snapshot.
    pub pvc_selector: String,
    /// VolumeSnapshotClass the backup names (default: the driver's default class).
    pub snapshot_class: Option<String>,
    /// The route timeout policy.
    pub routes: litemaas_routes::Policy,
    /// Which routes (default: all in the namespace).
    pub route_selector: Option<String>,
}

/// The cluster checks' lines, and what later checks need from them.
pub struct ClusterChecks {
    /// The lines, in order.
    pub checks: Vec<Check>,
    /// A working client, when the cluster was reached and accepted our credentials.
    pub client: Option<kube::Client>,
    /// Why the checks that run something in the pod cannot run, if they cannot (`None`: the
    /// pod, the Secret's keys and exec passed).
    pub pod_blocked: Option<String>,
    /// Why the route checks cannot run, if they cannot.
    pub routes_blocked: Option<String>,
}

/// Where the credentials came from.
enum Source {
    Kubeconfig {
        context: String,
        user: Option<String>,
    },
    InCluster,
}

impl Source {
    fn describe(&self) -> String {
        match self {
            Source::Kubeconfig { context, user } => match user {
                Some(user) => format!("kubeconfig context {context:?}, user entry {user:?}"),
                None => format!("kubeconfig context {context:?}"),
            },
            Source::InCluster => "in-cluster service account".into(),
        }
    }
}

/// The subject an RBAC grant names.
#[derive(Debug, Clone)]
enum Subject {
    ServiceAccount { namespace: String, name: String },
    User(String),
    Unknown,
}

impl Subject {
    fn from_username(user: &str) -> Self {
        match user
            .strip_prefix("system:serviceaccount:")
            .and_then(|rest| rest.split_once(':'))
        {
            Some((namespace, name)) => Subject::ServiceAccount {
                namespace: namespace.into(),
                name: name.into(),
            },
            None => Subject::User(user.into()),
        }
    }

    /// `--serviceaccount=ns:name` or `--user=name` for `oc create rolebinding`.
    fn flag(&self) -> String {
        match self {
            Subject::ServiceAccount { namespace, name } => {
                format!("--serviceaccount={namespace}:{name}")
            }
            Subject::User(user) => format!("--user={}", shell_word(user)),
            Subject::Unknown => "--user=\"$(oc whoami)\"".into(),
        }
    }
}

/// `word` quoted for a POSIX shell if it needs it.
fn shell_word(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/=@,".contains(c))
    {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// An error with its causes, `a: b: c` (kube's own message alone can be just "client error
/// (Connect)").
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// The lines so far; when a prerequisite fails, the rest of the fixed order and the RBAC
/// lines are added as skipped ([`Plan::skip_rest`]).
struct Plan<'a> {
    ns: &'a str,
    options: &'a Options,
    checks: Vec<Check>,
}

/// The fixed order of the single-line checks: (id, what).
fn fixed(ns: &str, options: &Options) -> Vec<(&'static str, String)> {
    let t = &options.target;
    vec![
        ("cluster", "Kubernetes API reachable".to_owned()),
        ("identity", "who we are".to_owned()),
        ("namespace", format!("namespace {ns} exists")),
        (
            "statefulset",
            format!("StatefulSet {ns}/{} exists", options.statefulset),
        ),
        (
            "pod",
            format!(
                "a Running pod {} with container {} in {ns}",
                t.selector, t.container
            ),
        ),
        ("secret", format!("Secret {ns}/{} exists", t.secret)),
        (
            "secret.keys",
            format!(
                "Secret {ns}/{} has keys username, password, database",
                t.secret
            ),
        ),
        (
            "pvc",
            format!("a Bound claim {} in {ns}", options.pvc_selector),
        ),
        ("pvc.csi", "the claim's volume has a CSI driver".to_owned()),
        (
            "snapshotclass",
            match &options.snapshot_class {
                Some(class) => format!("VolumeSnapshotClass {class} for the claim's driver"),
                None => "a default VolumeSnapshotClass for the claim's driver".to_owned(),
            },
        ),
    ]
}

fn what_of(access: &Access, ns: &str) -> String {
    let scope = if access.namespaced {
        format!("in {ns}")
    } else {
        "cluster-wide".to_owned()
    };
    format!(
        "may {} {} {scope} ({})",
        access.verb,
        access.qualified(),
        access.need.label(),
    )
}

impl Plan<'_> {
    fn what(&self, id: &str) -> String {
        fixed(self.ns, self.options)
            .into_iter()
            .find(|(i, _)| *i == id)
            .map(|(_, w)| w)
            .unwrap_or_default()
    }

    fn push(&mut self, check: Check) {
        self.checks.push(check);
    }

    /// Skips every fixed check from `id` on, the RBAC lines and the routes line.
    fn skip_rest(mut self, from: &str, because: &str) -> Vec<Check> {
        let all = fixed(self.ns, self.options);
        let start = all
            .iter()
            .position(|(i, _)| *i == from)
            .unwrap_or(all.len());
        for (id, what) in all.into_iter().skip(start) {
            self.checks.push(Check::skipped(id, what, because));
        }
        for a in REQUIRED_ACCESS {
            self.checks
                .push(Check::skipped(a.id(), what_of(a, self.ns), because));
        }
        self.checks
    }
}

/// What the route lines check.
pub fn routes_what(ns: &str, options: &Options) -> String {
    format!(
        "route timeouts in {ns} (haproxy.router.openshift.io/timeout ≥ {})",
        options.routes.default
    )
}

/// The fix for an access the doctor itself lacks to read something.
fn grant_fix(access: &Access, ns: &str, subject: &Subject) -> String {
    let name = format!(
        "litemaas-backup-{}-{}",
        access.resource_path().replace('/', "-"),
        access.verb
    );
    if access.namespaced {
        format!(
            "oc -n {ns} create role {name} --verb={} --resource={} && oc -n {ns} create rolebinding {name} --role={name} {}",
            access.verb,
            access.qualified(),
            subject.flag()
        )
    } else {
        format!(
            "oc create clusterrole {name} --verb={} --resource={} && oc create clusterrolebinding {name}-{ns} --clusterrole={name} {}",
            access.verb,
            access.qualified(),
            subject.flag()
        )
    }
}

/// A failed read: 403 names the grant that fixes it, anything else says what failed.
fn read_failed(
    id: &str,
    what: String,
    doing: &str,
    e: &kube::Error,
    read: Access,
    ns: &str,
    subject: &Subject,
) -> Check {
    if status_code(e) == Some(403) {
        Check::fail(
            id,
            what,
            format!("{doing}: forbidden ({e})"),
            grant_fix(&read, ns, subject),
        )
    } else {
        Check::fail(
            id,
            what,
            format!("{doing}: {e}"),
            "check the API server's health and run the doctor again: oc get --raw /readyz",
        )
    }
}

const fn read(group: &'static str, resource: &'static str, verb: &'static str) -> Access {
    access(group, resource, "", verb, true, Need::Both, "")
}

const fn read_cluster(group: &'static str, resource: &'static str, verb: &'static str) -> Access {
    access(group, resource, "", verb, false, Need::Both, "")
}

/// Builds the client as the other commands do (`--context`, else the kubeconfig's current
/// context, else in-cluster), with timeouts so an unreachable API fails in seconds.
async fn connect(context: Option<&str>) -> Result<(kube::Client, Source, String), String> {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    let kubeconfig = Kubeconfig::read();
    let (mut config, source) = match (kubeconfig, context) {
        (Ok(kubeconfig), _) => {
            let chosen = context
                .map(str::to_owned)
                .or_else(|| kubeconfig.current_context.clone())
                .unwrap_or_default();
            let user = kubeconfig
                .contexts
                .iter()
                .find(|c| c.name == chosen)
                .and_then(|c| c.context.as_ref())
                .and_then(|c| c.user.clone());
            let options = KubeConfigOptions {
                context: context.map(str::to_owned),
                ..KubeConfigOptions::default()
            };
            let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| format!("kubeconfig context {chosen:?}: {e}"))?;
            (
                config,
                Source::Kubeconfig {
                    context: chosen,
                    user,
                },
            )
        }
        (Err(e), Some(context)) => {
            return Err(format!(
                "--context {context} given, but no kubeconfig could be read: {e}"
            ));
        }
        (Err(kubeconfig_error), None) => match kube::Config::incluster() {
            Ok(config) => (config, Source::InCluster),
            Err(_) => {
                return Err(format!(
                    "no kubeconfig ({kubeconfig_error}) and not in a pod"
                ));
            }
        },
    };
    config.connect_timeout = Some(Duration::from_secs(10));
    config.read_timeout = Some(Duration::from_secs(30));
    let url = config.cluster_url.to_string();
    let client = kube::Client::try_from(config).map_err(|e| format!("{e}"))?;
    Ok((client, source, url))
}

/// Decodes base64url without padding (a JWT's parts).
fn base64url(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).ok()?);
        }
    }
    Some(out)
}

/// The service account a projected token names (its `sub` claim), without verifying it: only
/// to say who we are when the API server cannot.
fn token_subject(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let claims: serde_json::Value = serde_json::from_slice(&base64url(payload)?).ok()?;
    claims["sub"].as_str().map(str::to_owned)
}

/// Every cluster check for `ns`, in order.
pub async fn cluster_checks(ns: &str, options: &Options) -> ClusterChecks {
    let mut plan = Plan {
        ns,
        options,
        checks: Vec::new(),
    };
    let blocked = |plan: Plan<'_>, from: &str, because: &str| ClusterChecks {
        checks: plan.skip_rest(from, because),
        client: None,
        pod_blocked: Some(because.to_owned()),
        routes_blocked: Some(because.to_owned()),
    };

    // The cluster.
    let (client, source, url) = match connect(options.context.as_deref()).await {
        Ok(found) => found,
        Err(detail) => {
            plan.push(Check::fail(
                "cluster",
                plan.what("cluster"),
                detail,
                "log in: oc login --server=https://api.<cluster>:6443 (or export KUBECONFIG=<file>, or --context <name>)",
            ));
            return blocked(plan, "identity", "no cluster access");
        }
    };
    match client.apiserver_version().await {
        Ok(v) => plan.push(Check::pass(
            "cluster",
            plan.what("cluster"),
            format!(
                "{url} (Kubernetes {}; {})",
                v.git_version,
                source.describe()
            ),
        )),
        Err(e) if status_code(&e) == Some(401) => {
            // Some clusters refuse even /version to a bad token: that is an identity problem.
            plan.push(Check::pass(
                "cluster",
                plan.what("cluster"),
                format!("{url} answers ({})", source.describe()),
            ));
        }
        Err(e) => {
            plan.push(Check::fail(
                "cluster",
                plan.what("cluster"),
                format!("{url} ({}): {}", source.describe(), chain(&e)),
                format!(
                    "check the API server address and the network from this host: oc whoami --show-server; curl -k {url}/readyz; then oc login --server=<the right URL>"
                ),
            ));
            return blocked(plan, "identity", "the cluster is unreachable");
        }
    }

    // Who we are.
    let review = Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await;
    let subject = match review {
        Ok(r) => {
            let user = r
                .status
                .and_then(|s| s.user_info)
                .and_then(|u| u.username)
                .unwrap_or_default();
            plan.push(Check::pass(
                "identity",
                plan.what("identity"),
                format!("{user} ({})", source.describe()),
            ));
            Subject::from_username(&user)
        }
        Err(e) if status_code(&e) == Some(401) => {
            let fix = match &source {
                Source::InCluster => "the pod's service account token was refused: restart the pod for a fresh token (oc delete pod <this pod>), and check the ServiceAccount exists".to_owned(),
                Source::Kubeconfig { context, .. } => format!(
                    "the credentials of kubeconfig context {context:?} were refused (expired token?): oc login --server={url}"
                ),
            };
            plan.push(Check::fail(
                "identity",
                plan.what("identity"),
                format!("{e} ({})", source.describe()),
                fix,
            ));
            return blocked(plan, "namespace", "the cluster refused our credentials");
        }
        Err(e) => {
            // An API server before 1.28 has no SelfSubjectReview: say what we know.
            let (who, subject) = match &source {
                Source::InCluster => {
                    match std::fs::read_to_string(TOKEN_FILE)
                        .ok()
                        .and_then(|t| token_subject(t.trim()))
                    {
                        Some(sub) => (sub.clone(), Subject::from_username(&sub)),
                        None => ("a service account".to_owned(), Subject::Unknown),
                    }
                }
                Source::Kubeconfig { .. } => ("the kubeconfig's user".to_owned(), Subject::Unknown),
            };
            plan.push(Check::pass(
                "identity",
                plan.what("identity"),
                format!(
                    "{who} ({}; the API server did not say: SelfSubjectReview {})",
                    source.describe(),
                    status_code(&e).map_or_else(|| e.to_string(), |c| format!("HTTP {c}"))
                ),
            ));
            subject
        }
    };

    // The namespace.
    match Api::<Namespace>::all(client.clone()).get_opt(ns).await {
        Ok(Some(n)) => {
            let phase = n
                .status
                .and_then(|s| s.phase)
                .unwrap_or_else(|| "Active".into());
            if phase == "Terminating" {
                plan.push(Check::fail(
                    "namespace",
                    plan.what("namespace"),
                    format!("{ns} is being deleted (Terminating)"),
                    format!(
                        "wait until it is gone and recreate it, or see what blocks it: oc get namespace {ns} -o jsonpath='{{.status.conditions}}'"
                    ),
                ));
                let mut out = blocked(plan, "statefulset", "the namespace is being deleted");
                out.client = Some(client);
                return out;
            }
            plan.push(Check::pass(
                "namespace",
                plan.what("namespace"),
                format!("{ns} ({phase})"),
            ));
        }
        Ok(None) => {
            plan.push(Check::fail(
                "namespace",
                plan.what("namespace"),
                format!("namespace {ns} not found"),
                format!(
                    "name the LiteMaaS namespace (oc get projects), or create it: oc new-project {ns}"
                ),
            ));
            let mut out = blocked(plan, "statefulset", "the namespace does not exist");
            out.client = Some(client);
            return out;
        }
        // A Role in the namespace cannot read the Namespace object (cluster-scoped): its
        // contents are checked below all the same.
        Err(e) if status_code(&e) == Some(403) => plan.push(Check::pass(
            "namespace",
            plan.what("namespace"),
            format!(
                "{ns}: not readable with these credentials (namespaces are cluster-scoped); its objects are checked below"
            ),
        )),
        Err(e) => {
            plan.push(Check::fail(
                "namespace",
                plan.what("namespace"),
                format!("reading namespace {ns}: {e}"),
                "check the API server's health and run the doctor again: oc get --raw /readyz",
            ));
            let mut out = blocked(plan, "statefulset", "the namespace could not be read");
            out.client = Some(client);
            return out;
        }
    }

    let mut rest = Rest {
        client: client.clone(),
        ns,
        options,
        subject,
        plan,
    };
    let sts_replicas = rest.statefulset().await;
    let pod_ok = rest.pod(sts_replicas).await;
    let keys_ok = rest.secret().await;
    rest.storage().await;
    rest.rbac().await;
    let Rest { plan, .. } = rest;
    let exec_denied = plan
        .checks
        .iter()
        .any(|c| c.id.starts_with("rbac.pods/exec.") && c.outcome == crate::check::Outcome::Fail);
    let pod_blocked = match (pod_ok, keys_ok, exec_denied) {
        (true, true, false) => None,
        (false, _, _) => Some("no Running database pod".to_owned()),
        (_, false, _) => Some("the Secret's keys are missing".to_owned()),
        (_, _, true) => Some("exec in the pod is not allowed (see rbac.pods/exec)".to_owned()),
    };
    ClusterChecks {
        checks: plan.checks,
        client: Some(client),
        pod_blocked,
        routes_blocked: None,
    }
}

/// The checks after the namespace, sharing the client and the subject to grant to.
struct Rest<'a> {
    client: kube::Client,
    ns: &'a str,
    options: &'a Options,
    subject: Subject,
    plan: Plan<'a>,
}

impl Rest<'_> {
    fn fail_read(&mut self, id: &str, doing: &str, e: &kube::Error, read: Access) {
        let what = self.plan.what(id);
        self.plan.push(read_failed(
            id,
            what,
            doing,
            e,
            read,
            self.ns,
            &self.subject,
        ));
    }

    /// The StatefulSet; its desired replicas when found.
    async fn statefulset(&mut self) -> Option<i32> {
        let (ns, name) = (self.ns, &self.options.statefulset);
        let what = self.plan.what("statefulset");
        match Api::<StatefulSet>::namespaced(self.client.clone(), ns)
            .get_opt(name)
            .await
        {
            Ok(Some(sts)) => {
                let replicas = sts.spec.replicas.unwrap_or(1);
                let ready = sts
                    .status
                    .as_ref()
                    .and_then(|s| s.ready_replicas)
                    .unwrap_or(0);
                self.plan.push(Check::pass(
                    "statefulset",
                    what,
                    format!("{name}: {ready}/{replicas} ready"),
                ));
                Some(replicas)
            }
            Ok(None) => {
                self.plan.push(Check::fail(
                    "statefulset",
                    what,
                    format!("StatefulSet {name} not found in {ns}"),
                    format!(
                        "name the database StatefulSet: --statefulset <name> (oc -n {ns} get statefulsets), or deploy LiteMaaS's PostgreSQL in {ns}"
                    ),
                ));
                None
            }
            Err(e) => {
                self.fail_read(
                    "statefulset",
                    &format!("reading StatefulSet {ns}/{name}"),
                    &e,
                    read("apps", "statefulsets", "get"),
                );
                None
            }
        }
    }

    /// A Running pod with the container; whether there is one.
    async fn pod(&mut self, sts_replicas: Option<i32>) -> bool {
        let ns = self.ns;
        let t = &self.options.target;
        let what = self.plan.what("pod");
        let list = match Api::<Pod>::namespaced(self.client.clone(), ns)
            .list(&ListParams::default().labels(&t.selector))
            .await
        {
            Ok(list) => list.items,
            Err(e) => {
                self.fail_read(
                    "pod",
                    &format!("listing pods {} in {ns}", t.selector),
                    &e,
                    read("", "pods", "list"),
                );
                return false;
            }
        };
        let phase = |p: &Pod| {
            if p.metadata.deletion_timestamp.is_some() {
                "Terminating".to_owned()
            } else {
                p.status
                    .as_ref()
                    .and_then(|s| s.phase.clone())
                    .unwrap_or_else(|| "Unknown".into())
            }
        };
        let mut running: Vec<&Pod> = list.iter().filter(|p| phase(p) == "Running").collect();
        running.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let Some(pod) = running.first() else {
            let found: Vec<String> = list
                .iter()
                .map(|p| format!("{} {}", p.metadata.name.as_deref().unwrap_or("?"), phase(p)))
                .collect();
            let sts = &self.options.statefulset;
            let fix = match (sts_replicas, list.first()) {
                (Some(0), _) => format!(
                    "the StatefulSet is scaled to 0: oc -n {ns} scale statefulset {sts} --replicas=1"
                ),
                (_, Some(p)) => format!(
                    "see why it is not Running: oc -n {ns} describe pod {}",
                    p.metadata.name.as_deref().unwrap_or("")
                ),
                (Some(_), None) => format!(
                    "see why the StatefulSet has no pod: oc -n {ns} describe statefulset {sts}; or name the pods' labels: --pod-selector (oc -n {ns} get pods --show-labels)"
                ),
                (None, None) => format!(
                    "name the database pods' labels: --pod-selector <selector> (oc -n {ns} get pods --show-labels)"
                ),
            };
            let detail = if found.is_empty() {
                format!("no pod matches {}", t.selector)
            } else {
                format!("none Running: {}", found.join(", "))
            };
            self.plan.push(Check::fail("pod", what, detail, fix));
            return false;
        };
        let name = pod.metadata.name.clone().unwrap_or_default();
        let containers: Vec<String> = pod
            .spec
            .as_ref()
            .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
            .unwrap_or_default();
        if !containers.contains(&t.container) {
            self.plan.push(Check::fail(
                "pod",
                what,
                format!(
                    "pod {name} has no container {} (it has {})",
                    t.container,
                    containers.join(", ")
                ),
                format!(
                    "name the PostgreSQL container: --container {}",
                    containers.first().map_or("<name>", String::as_str)
                ),
            ));
            return false;
        }
        self.plan.push(Check::pass(
            "pod",
            what,
            format!("{name} Running (container {})", t.container),
        ));
        true
    }

    /// The Secret and its keys; whether the keys are all there. Values are never shown.
    async fn secret(&mut self) -> bool {
        let ns = self.ns;
        let name = self.options.target.secret.clone();
        let what = self.plan.what("secret");
        let secret = match Api::<Secret>::namespaced(self.client.clone(), ns)
            .get_opt(&name)
            .await
        {
            Ok(Some(secret)) => secret,
            Ok(None) => {
                self.plan.push(Check::fail(
                    "secret",
                    what,
                    format!("Secret {name} not found in {ns}"),
                    format!(
                        "create it (the password from a file, never on a command line): oc -n {ns} create secret generic {name} --from-literal=username=<user> --from-literal=database=<database> --from-file=password=<file holding the password>"
                    ),
                ));
                let what = self.plan.what("secret.keys");
                self.plan.push(Check::skipped(
                    "secret.keys",
                    what,
                    "the Secret does not exist",
                ));
                return false;
            }
            Err(e) => {
                self.fail_read(
                    "secret",
                    &format!("reading Secret {ns}/{name}"),
                    &e,
                    read("", "secrets", "get"),
                );
                let what = self.plan.what("secret.keys");
                self.plan.push(Check::skipped(
                    "secret.keys",
                    what,
                    "the Secret could not be read",
                ));
                return false;
            }
        };
        let mut keys: Vec<String> = secret
            .data
            .iter()
            .flatten()
            .map(|(k, _)| k.clone())
            .chain(secret.string_data.iter().flatten().map(|(k, _)| k.clone()))
            .collect();
        keys.sort();
        keys.dedup();
        self.plan.push(Check::pass(
            "secret",
            what,
            format!("{name} (keys: {})", keys.join(", ")),
        ));
        let usable = |key: &str| {
            let bytes = secret
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|b| b.0.clone())
                .or_else(|| {
                    secret
                        .string_data
                        .as_ref()
                        .and_then(|d| d.get(key))
                        .map(|s| s.clone().into_bytes())
                });
            bytes
                .and_then(|b| String::from_utf8(b).ok())
                .is_some_and(|s| !s.trim_end_matches(['\n', '\r']).is_empty())
        };
        let missing: Vec<&str> = ["username", "password", "database"]
            .into_iter()
            .filter(|k| !usable(k))
            .collect();
        let what = self.plan.what("secret.keys");
        if missing.is_empty() {
            self.plan.push(Check::pass(
                "secret.keys",
                what,
                "username, password, database present and non-empty (values not shown)",
            ));
            return true;
        }
        let sets: Vec<String> = missing
            .iter()
            .map(|k| match *k {
                "password" => "--from-file=password=<file holding the password>".to_owned(),
                other => format!("--from-literal={other}=<{other}>"),
            })
            .collect();
        self.plan.push(Check::fail(
            "secret.keys",
            what,
            format!(
                "missing or empty: {}",
                missing
                    .iter()
                    .map(|k| format!("{k:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            format!("oc -n {ns} set data secret/{name} {}", sets.join(" ")),
        ));
        false
    }

    /// The claim, its CSI driver and a VolumeSnapshotClass for it.
    async fn storage(&mut self) {
        let ns = self.ns;
        let selector = self.options.pvc_selector.clone();
        let what = self.plan.what("pvc");
        let claims = match Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), ns)
            .list(&ListParams::default().labels(&selector))
            .await
        {
            Ok(list) => list.items,
            Err(e) => {
                self.fail_read(
                    "pvc",
                    &format!("listing claims {selector} in {ns}"),
                    &e,
                    read("", "persistentvolumeclaims", "list"),
                );
                return self.skip_storage("pvc.csi", "the claim could not be read");
            }
        };
        let mut claims = claims;
        claims.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let Some(claim) = claims.into_iter().next() else {
            let expected = format!("postgres-storage-{}-0", self.options.statefulset);
            self.plan.push(Check::fail(
                "pvc",
                what,
                format!("no claim matches {selector} in {ns}"),
                format!(
                    "label the database claim: oc -n {ns} label pvc {expected} {} (oc -n {ns} get pvc --show-labels), or name its labels: --pvc-selector <selector>",
                    selector.replace(',', " ")
                ),
            ));
            return self.skip_storage("pvc.csi", "no database claim");
        };
        let name = claim.metadata.name.clone().unwrap_or_default();
        let phase = claim
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_else(|| "Pending".into());
        let spec = claim.spec.clone().unwrap_or_default();
        if phase != "Bound" {
            self.plan.push(Check::fail(
                "pvc",
                what,
                format!("claim {name} is {phase}: a snapshot needs a Bound claim"),
                format!("see why it is not Bound: oc -n {ns} describe pvc {name}"),
            ));
            return self.skip_storage("pvc.csi", "the claim is not Bound");
        }
        let volume = spec.volume_name.clone().unwrap_or_default();
        let class = spec.storage_class_name.clone();
        self.plan.push(Check::pass(
            "pvc",
            what,
            format!(
                "{name} Bound to {volume} (StorageClass {})",
                class.as_deref().unwrap_or("none")
            ),
        ));

        // The driver: the volume's CSI source, else the class's provisioner.
        let what = self.plan.what("pvc.csi");
        let pv = match Api::<PersistentVolume>::all(self.client.clone())
            .get_opt(&volume)
            .await
        {
            Ok(pv) => pv,
            Err(e) => {
                self.fail_read(
                    "pvc.csi",
                    &format!("reading PersistentVolume {volume}"),
                    &e,
                    read_cluster("", "persistentvolumes", "get"),
                );
                return self.skip_storage("snapshotclass", "the claim's driver is unknown");
            }
        };
        let csi = pv
            .as_ref()
            .and_then(|p| p.spec.as_ref())
            .and_then(|s| s.csi.as_ref())
            .map(|c| c.driver.clone());
        let provisioner = match &class {
            Some(class) if csi.is_none() => {
                match Api::<StorageClass>::all(self.client.clone())
                    .get_opt(class)
                    .await
                {
                    Ok(sc) => sc.map(|c| c.provisioner),
                    Err(e) => {
                        self.fail_read(
                            "pvc.csi",
                            &format!("reading StorageClass {class}"),
                            &e,
                            read_cluster("storage.k8s.io", "storageclasses", "get"),
                        );
                        return self.skip_storage("snapshotclass", "the claim's driver is unknown");
                    }
                }
            }
            _ => None,
        };
        // In-tree plugins are named kubernetes.io/…; no CSI driver is.
        let driver = match csi.clone().or(provisioner.clone()) {
            Some(d) if !d.starts_with("kubernetes.io/") && !d.is_empty() => d,
            other => {
                self.plan.push(Check::fail(
                    "pvc.csi",
                    what,
                    format!(
                        "volume {volume} is not provisioned by a CSI driver ({}): VolumeSnapshots need one",
                        other.map_or_else(|| "no CSI source".to_owned(), |d| format!("in-tree {d}"))
                    ),
                    "move the database to a claim of a CSI StorageClass (oc get storageclass: a provisioner not named kubernetes.io/…) by restoring a dump into it; meanwhile back up with litemaas-backup --no-snapshot (the dumps still go to S3)",
                ));
                return self.skip_storage("snapshotclass", "the claim has no CSI driver");
            }
        };
        self.plan.push(Check::pass(
            "pvc.csi",
            what,
            format!("{driver} (volume {volume})"),
        ));
        self.snapshot_class(&driver).await;
    }

    async fn snapshot_class(&mut self, driver: &str) {
        let what = self.plan.what("snapshotclass");
        let classes = match Api::<VolumeSnapshotClass>::all(self.client.clone())
            .list(&ListParams::default())
            .await
        {
            Ok(list) => list.items,
            Err(e) if status_code(&e) == Some(404) => {
                self.plan.push(Check::fail(
                    "snapshotclass",
                    what,
                    "the cluster serves no snapshot.storage.k8s.io/v1 (no CSI snapshot controller)",
                    "install the CSI external-snapshotter (its CRDs and snapshot-controller); on OpenShift it is part of the cluster-storage-operator: oc get clusteroperator storage",
                ));
                return;
            }
            Err(e) => {
                return self.fail_read(
                    "snapshotclass",
                    "listing VolumeSnapshotClasses",
                    &e,
                    read_cluster(SNAPSHOTS, "volumesnapshotclasses", "list"),
                );
            }
        };
        let name_of = |c: &VolumeSnapshotClass| c.metadata.name.clone().unwrap_or_default();
        let is_default = |c: &VolumeSnapshotClass| {
            c.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_CLASS))
                .is_some_and(|v| v == "true")
        };
        let for_driver: Vec<&VolumeSnapshotClass> =
            classes.iter().filter(|c| c.driver == driver).collect();
        let describe = |c: &VolumeSnapshotClass| {
            format!(
                "{} (driver {}, deletionPolicy {}{})",
                name_of(c),
                c.driver,
                c.deletion_policy,
                if is_default(c) { ", default" } else { "" }
            )
        };
        if let Some(wanted) = &self.options.snapshot_class {
            let check = match classes.iter().find(|c| &name_of(c) == wanted) {
                Some(c) if c.driver == driver => Check::pass("snapshotclass", what, describe(c)),
                Some(c) => Check::fail(
                    "snapshotclass",
                    what,
                    format!(
                        "{wanted} is for driver {}, the claim's is {driver}",
                        c.driver
                    ),
                    match for_driver.first() {
                        Some(other) => format!("use --snapshot-class {}", name_of(other)),
                        None => create_class_fix(driver),
                    },
                ),
                None => Check::fail(
                    "snapshotclass",
                    what,
                    format!("VolumeSnapshotClass {wanted} not found"),
                    match for_driver.first() {
                        Some(other) => format!("use --snapshot-class {}", name_of(other)),
                        None => create_class_fix(driver),
                    },
                ),
            };
            return self.plan.push(check);
        }
        let defaults: Vec<&&VolumeSnapshotClass> =
            for_driver.iter().filter(|c| is_default(c)).collect();
        let check = match (defaults.as_slice(), for_driver.first()) {
            ([one], _) => Check::pass("snapshotclass", what, describe(one)),
            ([], None) => Check::fail(
                "snapshotclass",
                what,
                format!("no VolumeSnapshotClass for driver {driver}"),
                create_class_fix(driver),
            ),
            ([], Some(class)) => Check::fail(
                "snapshotclass",
                what,
                format!(
                    "VolumeSnapshotClass {} is for {driver} but not the default, and the backup names none",
                    name_of(class)
                ),
                format!(
                    "oc annotate volumesnapshotclass {} {DEFAULT_CLASS}=true (or back up with --snapshot-class {})",
                    name_of(class),
                    name_of(class)
                ),
            ),
            (many, _) => Check::fail(
                "snapshotclass",
                what,
                format!(
                    "{} VolumeSnapshotClasses are the default for {driver} ({}): the snapshot controller refuses to choose",
                    many.len(),
                    many.iter()
                        .map(|c| name_of(c))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                format!(
                    "keep one default: oc annotate volumesnapshotclass {} {DEFAULT_CLASS}=false --overwrite",
                    many.iter()
                        .skip(1)
                        .map(|c| name_of(c))
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
            ),
        };
        self.plan.push(check);
    }

    /// Skips the storage checks from `from` on (`pvc.csi` or `snapshotclass`).
    fn skip_storage(&mut self, from: &str, because: &str) {
        for id in ["pvc.csi", "snapshotclass"] {
            if id == from || (from == "pvc.csi" && id == "snapshotclass") {
                let what = self.plan.what(id);
                self.plan.push(Check::skipped(id, what, because));
            }
        }
    }

    /// Every entry of [`REQUIRED_ACCESS`], asked of the API server.
    async fn rbac(&mut self) {
        for a in REQUIRED_ACCESS {
            let what = what_of(a, self.ns);
            let check = match review(&self.client, a, self.ns).await {
                Ok(answer) => {
                    let status = answer.status.unwrap_or_default();
                    if status.allowed {
                        Check::pass(a.id(), what, "allowed")
                    } else {
                        let why = status
                            .reason
                            .filter(|r| !r.is_empty())
                            .or(status.evaluation_error)
                            .map_or_else(String::new, |r| format!(": {r}"));
                        Check::fail(
                            a.id(),
                            what,
                            format!("denied{why}; needed to {}", a.why),
                            grant_fix(a, self.ns, &self.subject),
                        )
                    }
                }
                Err(e) => Check::fail(
                    a.id(),
                    what,
                    format!("could not ask the API server (SelfSubjectAccessReview): {e}"),
                    format!(
                        "ask by hand: oc auth can-i {} {}{}",
                        a.verb,
                        a.qualified(),
                        if a.namespaced {
                            format!(" -n {}", self.ns)
                        } else {
                            String::new()
                        }
                    ),
                ),
            };
            self.plan.push(check);
        }
    }
}

/// Asks the API server whether we may do `a` (in `ns` when it is namespaced).
async fn review(
    client: &kube::Client,
    a: &Access,
    ns: &str,
) -> Result<SelfSubjectAccessReview, kube::Error> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(a.verb.into()),
                group: Some(a.group.into()),
                resource: Some(a.resource.into()),
                subresource: (!a.subresource.is_empty()).then(|| a.subresource.into()),
                namespace: a.namespaced.then(|| ns.to_owned()),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
}

/// Whether we may do `a`.
async fn may(client: &kube::Client, a: &Access, ns: &str) -> Result<bool, kube::Error> {
    Ok(review(client, a, ns)
        .await?
        .status
        .is_some_and(|s| s.allowed))
}

/// `oc apply` of a default VolumeSnapshotClass for `driver`, one line.
fn create_class_fix(driver: &str) -> String {
    let name = format!(
        "{}-snapclass",
        driver
            .split('.')
            .next()
            .unwrap_or("csi")
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            })
            .collect::<String>()
    );
    let class = serde_json::json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
        "metadata": {"name": name, "annotations": {DEFAULT_CLASS: "true"}},
        "driver": driver, "deletionPolicy": "Delete",
    });
    format!("echo '{class}' | oc apply -f -")
}

/// The route lines: one per route (its timeout against the policy), or one line when there is
/// nothing to check.
pub async fn route_checks(client: kube::Client, ns: &str, options: &Options) -> Vec<Check> {
    use litemaas_routes::{Error, Routes, Selection, audit};
    let what = routes_what(ns, options);
    let selection = match &options.route_selector {
        Some(selector) => Selection::Labels(selector.clone()),
        None => Selection::All,
    };
    let routes = match Routes::new(client.clone(), ns).list(&selection).await {
        Ok(routes) => routes,
        Err(Error::NoRouteApi { .. }) => {
            return vec![Check::pass(
                "routes",
                what,
                "not an OpenShift cluster (no route.openshift.io/v1): no routes to check",
            )];
        }
        Err(e) => {
            // Whether we may list routes at all, asked of the API server.
            let list = access(
                "route.openshift.io",
                "routes",
                "",
                "list",
                true,
                Need::Both,
                "",
            );
            let forbidden = matches!(may(&client, &list, ns).await, Ok(false));
            return vec![Check::fail(
                "routes",
                what,
                chain(&e),
                if forbidden {
                    format!(
                        "oc -n {ns} create role litemaas-doctor-routes --verb=get,list --resource=routes.route.openshift.io && oc -n {ns} create rolebinding litemaas-doctor-routes --role=litemaas-doctor-routes --user=\"$(oc whoami)\""
                    )
                } else {
                    "check the API server's health and run the doctor again: oc get --raw /readyz"
                        .into()
                },
            )];
        }
    };
    if routes.is_empty() {
        return vec![Check::pass(
            "routes",
            what,
            match &options.route_selector {
                Some(s) => format!("no route matches {s} in {ns}"),
                None => format!("no routes in {ns}"),
            },
        )];
    }
    audit(&routes, &options.routes)
        .into_iter()
        .map(|f| {
            let id = format!("route.{}", f.name);
            let what = format!(
                "Route {ns}/{} timeout ≥ {}{}",
                f.name,
                f.desired,
                f.host
                    .as_deref()
                    .map_or_else(String::new, |h| format!(" ({h})"))
            );
            let detail = if f.message.is_empty() {
                format!(
                    "{}: {} (the router uses {})",
                    f.annotation,
                    f.value.as_deref().unwrap_or("unset"),
                    f.effective
                )
            } else {
                f.message
            };
            if f.in_policy {
                Check::pass(id, what, detail)
            } else {
                let fix = format!(
                    "oc -n {ns} annotate route {} --overwrite {}={} (or every out-of-policy route at once: litemaas-routes apply --namespace {ns})",
                    f.name,
                    f.annotation,
                    f.desired.annotation_value()
                );
                Check::fail(id, what, detail, fix)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_access_is_listed_once_and_the_exec_needs_both_verbs() {
        let mut seen = std::collections::BTreeSet::new();
        for a in REQUIRED_ACCESS {
            assert!(seen.insert(a.id()), "{} twice", a.id());
        }
        for verb in ["get", "create"] {
            assert!(seen.contains(&format!("rbac.pods/exec.{verb}")));
        }
        for verb in ["create", "get", "update", "delete"] {
            assert!(seen.contains(&format!("rbac.leases.{verb}")));
        }
    }

    #[test]
    fn a_projected_token_names_its_service_account() {
        // header.payload.signature; the payload is {"sub":"system:serviceaccount:litemaas:backup"}.
        let token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6bGl0ZW1hYXM6YmFja3VwIn0.c2ln";
        assert_eq!(
            token_subject(token).as_deref(),
            Some("system:serviceaccount:litemaas:backup")
        );
        assert!(matches!(
            Subject::from_username("system:serviceaccount:litemaas:backup"),
            Subject::ServiceAccount { namespace, name } if namespace == "litemaas" && name == "backup"
        ));
    }

    #[test]
    fn grants_name_the_subject_and_the_qualified_resource() {
        let exec = REQUIRED_ACCESS
            .iter()
            .find(|a| a.id() == "rbac.statefulsets/scale.patch")
            .copied()
            .unwrap_or(read("", "", ""));
        let fix = grant_fix(
            &exec,
            "litemaas",
            &Subject::from_username("system:serviceaccount:litemaas:backup"),
        );
        assert!(fix.contains("--resource=statefulsets.apps/scale"), "{fix}");
        assert!(fix.contains("--serviceaccount=litemaas:backup"), "{fix}");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
    }
}
