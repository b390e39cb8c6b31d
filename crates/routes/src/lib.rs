//! # litemaas-routes
//!
//! OpenShift route timeouts for LiteMaaS. Every LiteMaaS route should carry
//! `haproxy.router.openshift.io/timeout: 600s` so that long LLM requests are not cut at the
//! router's 30 s default; a value the router cannot read is silently ignored, so a typo looks
//! configured and is not. This crate reads the annotation exactly as the router does
//! ([`Timeout::parse`], with what the router does for each class of value cited from its
//! source in [`timeout`]), audits routes against a [`Policy`] ([`audit()`], pure), reads routes
//! ([`Routes::list`]) and sets the annotation where a route is out of policy
//! ([`Routes::apply`], a merge patch of the annotations only, idempotent). [`Route`] is the
//! `route.openshift.io/v1` type for kube-rs, usable on its own.
//!
//! ```
//! use litemaas_routes::{Policy, Route, RouteSpec, Status, Timeout, audit};
//!
//! let mut route = Route::new("litellm", RouteSpec::default());
//! route.metadata.annotations = Some(
//!     [("haproxy.router.openshift.io/timeout".to_owned(), "10min".to_owned())].into(),
//! );
//! let policy = Policy::default().with_override("litellm-mcp", Timeout::from_secs(300));
//! let findings = audit(&[route], &policy);
//! assert_eq!(findings[0].status, Status::Ignored); // "min" is not a unit the router knows
//! assert_eq!(findings[0].effective, Timeout::from_secs(30)); // so its default applies
//! assert!(findings[0].message.contains("did you mean 10m?"));
//! ```
//!
//! Against a cluster:
//!
//! ```no_run
//! # async fn demo(client: kube::Client) -> Result<(), litemaas_routes::Error> {
//! use litemaas_routes::{Policy, Routes, Selection, audit};
//!
//! let routes = Routes::new(client, "litemaas");
//! let found = routes.list(&Selection::All).await?;
//! let policy = Policy::default();
//! for finding in audit(&found, &policy).iter().filter(|f| !f.in_policy) {
//!     println!("{}: {}", finding.name, finding.message);
//! }
//! for change in routes.apply(&found, &policy, false).await? {
//!     println!("{}: {:?} -> {}", change.name, change.before, change.after);
//! }
//! # Ok(()) }
//! ```

pub mod audit;
mod client;
pub mod route;
pub mod timeout;

pub use audit::{Finding, Policy, Source, Status, audit};
pub use client::{Change, Routes, Selection};
pub use route::{Route, RouteSpec, RouteStatus, Termination, TlsConfig};
pub use timeout::{
    Ignored, Parsed, TIMEOUT_ANNOTATION, TIMEOUT_TUNNEL_ANNOTATION, Timeout, ValueError,
};

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong talking to the cluster; every variant names the namespace.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The cluster serves no `route.openshift.io/v1` (not OpenShift?) or the namespace is
    /// wrong.
    #[error(
        "no OpenShift Routes API (route.openshift.io/v1) for namespace {namespace}: is this an OpenShift cluster?"
    )]
    NoRouteApi {
        /// Namespace.
        namespace: String,
    },
    /// A named route does not exist.
    #[error("Route {name} not found in namespace {namespace}")]
    NotFound {
        /// Namespace.
        namespace: String,
        /// Route name.
        name: String,
    },
    /// The API failed (worth a retry when the cause is a timeout or a 5xx).
    #[error("{context}")]
    Kube {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: KubeError,
    },
    /// A patch failed; routes changed before it stay changed.
    #[error(
        "cannot set the timeout of Route {namespace}/{name}{}",
        already(changed)
    )]
    Patch {
        /// Namespace.
        namespace: String,
        /// Route name.
        name: String,
        /// Routes already changed by this run.
        changed: Vec<String>,
        /// The cause.
        #[source]
        source: KubeError,
    },
    /// Another writer changed the route every time between our read and our patch.
    #[error(
        "Route {namespace}/{name} kept changing while we patched it ({attempts} conflicts in a row){}",
        already(changed)
    )]
    KeptChanging {
        /// Namespace.
        namespace: String,
        /// Route name.
        name: String,
        /// How many patches were refused.
        attempts: usize,
        /// Routes already changed by this run.
        changed: Vec<String>,
    },
}

/// A Kubernetes API failure, shown in one line: the server's message and HTTP status (kube's
/// own display adds the whole `Status` in debug form), or the transport error.
#[derive(Debug)]
pub struct KubeError(pub Box<kube::Error>);

impl KubeError {
    /// The HTTP status the API server answered with, if it answered.
    pub fn code(&self) -> Option<u16> {
        match &*self.0 {
            kube::Error::Api(status) => Some(status.code),
            _ => None,
        }
    }
}

impl From<kube::Error> for KubeError {
    fn from(e: kube::Error) -> Self {
        Self(Box::new(e))
    }
}

impl std::fmt::Display for KubeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &*self.0 {
            kube::Error::Api(s) => write!(f, "{} (HTTP {} {})", s.message, s.code, s.reason),
            other => write!(f, "{other}"),
        }
    }
}

impl std::error::Error for KubeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &*self.0 {
            kube::Error::Api(_) => None,
            // kube's display already shows its immediate cause.
            other => other.source().and_then(|cause| cause.source()),
        }
    }
}

fn already(changed: &[String]) -> String {
    if changed.is_empty() {
        " (no route was changed)".into()
    } else {
        format!(" (already changed: {})", changed.join(", "))
    }
}
