//! The OpenShift `Route` (`route.openshift.io/v1`) as a kube-rs resource, usable on its own.
//!
//! Only the fields a route audit needs are typed (host, path, target, TLS termination, the
//! admitted hosts); anything else the server sends is dropped when read. Write routes with
//! patches (as [`Routes::apply`](crate::Routes::apply) does), never by replacing a `Route` read
//! through this type, or the untyped fields would be lost.

use kube::CustomResource;
use serde::{Deserialize, Serialize};

/// What a Route exposes, and how.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[kube(
    group = "route.openshift.io",
    version = "v1",
    kind = "Route",
    plural = "routes",
    namespaced,
    status = "RouteStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct RouteSpec {
    /// The host name; when empty the router generates one (see `status.ingress[].host`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The path prefix this route serves (HTTP routes only), e.g. `/api`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The Service the traffic goes to.
    #[serde(default)]
    pub to: RouteTargetReference,
    /// The target port of the Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<RoutePort>,
    /// TLS: none means plain HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
}

/// The object a route sends traffic to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteTargetReference {
    /// `Service`.
    #[serde(default)]
    pub kind: String,
    /// Its name.
    #[serde(default)]
    pub name: String,
    /// Its share of the traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
}

/// A route's target port: a number or a port name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoutePort {
    /// The port.
    pub target_port: k8s_openapi::apimachinery::pkg::util::intstr::IntOrString,
}

/// How TLS is handled.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsConfig {
    /// `edge`, `passthrough` or `reencrypt`.
    #[serde(default)]
    pub termination: String,
    /// What happens to plain HTTP: `None`, `Allow` or `Redirect`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_edge_termination_policy: Option<String>,
}

/// What the routers report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteStatus {
    /// One entry per router (IngressController) that considered the route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<RouteIngress>,
}

/// One router's view of a route.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteIngress {
    /// The host the router serves it on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The router's name (`default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router_name: Option<String>,
}

/// How the router handles a route's traffic, which decides what the timeout annotation sets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Termination {
    /// No TLS: plain HTTP (`mode http` backend).
    Http,
    /// TLS ends at the router, HTTP to the pods (`mode http`).
    Edge,
    /// TLS ends at the router and starts again to the pods (`mode http`).
    Reencrypt,
    /// TLS goes through to the pods untouched (`mode tcp`: the router sees no HTTP requests).
    Passthrough,
    /// A value the router has no backend for (the API server rejects it; kept as read).
    Other(String),
}

impl Termination {
    /// Whether HAProxy handles this route in TCP mode (passthrough), where the timeout
    /// annotation sets `timeout tunnel` rather than `timeout server`.
    pub fn is_tcp(&self) -> bool {
        matches!(self, Self::Passthrough)
    }
}

impl std::fmt::Display for Termination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Http => "http",
            Self::Edge => "edge",
            Self::Reencrypt => "reencrypt",
            Self::Passthrough => "passthrough",
            Self::Other(other) => other,
        })
    }
}

impl Route {
    /// The route's name (empty if the object has none).
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or("")
    }

    /// `spec.host`, else the host the first router admitted it on.
    pub fn host(&self) -> Option<&str> {
        self.spec
            .host
            .as_deref()
            .filter(|h| !h.is_empty())
            .or_else(|| {
                self.status
                    .as_ref()?
                    .ingress
                    .iter()
                    .find_map(|i| i.host.as_deref().filter(|h| !h.is_empty()))
            })
    }

    /// `spec.tls.termination`, as the router reads it.
    pub fn termination(&self) -> Termination {
        match self.spec.tls.as_ref().map(|t| t.termination.as_str()) {
            None | Some("") => Termination::Http,
            Some("edge") => Termination::Edge,
            Some("reencrypt") => Termination::Reencrypt,
            Some("passthrough") => Termination::Passthrough,
            Some(other) => Termination::Other(other.to_owned()),
        }
    }

    /// The value of annotation `key`, if set.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.metadata
            .annotations
            .as_ref()?
            .get(key)
            .map(String::as_str)
    }
}
