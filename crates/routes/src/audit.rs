//! The policy (desired timeouts) and the audit of routes against it: pure, no I/O.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::route::{Route, Termination};
use crate::timeout::{Parsed, TIMEOUT_ANNOTATION, TIMEOUT_TUNNEL_ANNOTATION, Timeout, ValueError};

/// The desired timeout of every route (a minimum), with per-route overrides, and what the
/// router uses when a route sets none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    /// Desired for routes without an override (LiteMaaS: 600s).
    pub default: Timeout,
    /// Desired per route name (e.g. an MCP route at 300s).
    pub overrides: BTreeMap<String, Timeout>,
    /// The router's `timeout server` for routes without a usable annotation (30s, or the
    /// IngressController's `tuningOptions.serverTimeout`).
    pub router_server_timeout: Timeout,
    /// The router's `timeout tunnel`, which passthrough routes without a usable annotation get
    /// (1h, or the IngressController's `tuningOptions.tunnelTimeout`).
    pub router_tunnel_timeout: Timeout,
}

impl Default for Policy {
    fn default() -> Self {
        Self::new(Timeout::LITEMAAS)
    }
}

impl Policy {
    /// Every route at least `default`, against a router with OpenShift's defaults.
    pub fn new(default: Timeout) -> Self {
        Self {
            default,
            overrides: BTreeMap::new(),
            router_server_timeout: Timeout::ROUTER_DEFAULT_SERVER,
            router_tunnel_timeout: Timeout::ROUTER_DEFAULT_TUNNEL,
        }
    }

    /// The same, with route `name` desired at `timeout`.
    pub fn with_override(mut self, name: impl Into<String>, timeout: Timeout) -> Self {
        self.overrides.insert(name.into(), timeout);
        self
    }

    /// Parses `NAME=TIMEOUT` (`litellm-mcp=300s`).
    ///
    /// # Errors
    /// Not of that form, or a timeout [`Timeout::from_str`](std::str::FromStr) refuses.
    pub fn parse_override(text: &str) -> Result<(String, Timeout), ValueError> {
        match text.split_once('=') {
            Some((name, value)) if !name.trim().is_empty() => {
                Ok((name.trim().to_owned(), value.parse()?))
            }
            _ => Err(ValueError::Override(text.to_owned())),
        }
    }

    /// The desired timeout of route `name`, and whether an override gave it.
    pub fn desired(&self, name: &str) -> (Timeout, bool) {
        match self.overrides.get(name) {
            Some(t) => (*t, true),
            None => (self.default, false),
        }
    }

    /// Overrides naming none of the audited routes (probably a typo).
    pub fn unmatched_overrides<'a>(&'a self, findings: &[Finding]) -> Vec<&'a str> {
        self.overrides
            .keys()
            .filter(|name| !findings.iter().any(|f| &f.name == *name))
            .map(String::as_str)
            .collect()
    }
}

/// A route's standing against the policy, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// The annotation is set but the router silently ignores it: its default applies.
    Ignored,
    /// A number without a unit (milliseconds to the router), below the desired value.
    BareMilliseconds,
    /// No annotation, and the router's default is below the desired value.
    Missing,
    /// A valid value below the desired one.
    Below,
    /// Above HAProxy's maximum: the router clips it to 2147483647ms. In policy (it is more than
    /// desired), but not what is written.
    Clipped,
    /// At least the desired value.
    Ok,
}

impl Status {
    /// Whether the route meets the policy (`Ok` or `Clipped`).
    pub fn in_policy(self) -> bool {
        matches!(self, Self::Ok | Self::Clipped)
    }

    /// A short label: `ok`, `MISSING`, `IGNORED`, …; upper case when out of policy.
    pub fn label(self) -> &'static str {
        match self {
            Self::Ignored => "IGNORED",
            Self::BareMilliseconds => "BARE-MS",
            Self::Missing => "MISSING",
            Self::Below => "BELOW",
            Self::Clipped => "clipped",
            Self::Ok => "ok",
        }
    }
}

/// Where a route's effective timeout comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// The annotation, as written.
    Annotation,
    /// The annotation, clipped to HAProxy's maximum.
    Clipped,
    /// The router's default (no annotation, or one it ignores).
    RouterDefault,
}

/// What the audit found for one route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Route name.
    pub name: String,
    /// Host (`spec.host`, else the admitted one).
    pub host: Option<String>,
    /// Path prefix, if any.
    pub path: Option<String>,
    /// TLS termination.
    pub termination: Termination,
    /// The HAProxy setting the annotation governs: `timeout server` (HTTP) or `timeout
    /// tunnel` (passthrough).
    pub haproxy: &'static str,
    /// The annotation that decides the effective timeout (and that `apply` would set).
    pub annotation: &'static str,
    /// Its value as written, if set.
    pub value: Option<String>,
    /// The timeout the router uses.
    pub effective: Timeout,
    /// The same in milliseconds, for machines.
    pub effective_ms: u64,
    /// Where it comes from.
    pub source: Source,
    /// The desired minimum.
    pub desired: Timeout,
    /// Whether a per-route override set `desired`.
    pub overridden: bool,
    /// The verdict.
    pub status: Status,
    /// Whether the route meets the policy.
    pub in_policy: bool,
    /// The explanation, in words.
    pub message: String,
    /// The resourceVersion read, for a patch that must not overwrite a newer change.
    #[serde(skip)]
    pub resource_version: Option<String>,
}

/// Audits each route against the policy, in the order given.
///
/// HTTP routes (no TLS, edge, reencrypt): the effective timeout is HAProxy's `timeout server`
/// from `haproxy.router.openshift.io/timeout`, else the router default. Passthrough routes: the
/// router writes `timeout tunnel` from `…/timeout-tunnel` if that matches the pattern, else
/// from `…/timeout`, else the default tunnel timeout (1h): without an annotation such a route
/// usually meets the policy already, and adding `600s` would shorten it.
///
/// A value the router ignores is always out of policy, even when the default it falls back
/// to would do: what was written is not what runs.
pub fn audit(routes: &[Route], policy: &Policy) -> Vec<Finding> {
    routes.iter().map(|r| Finding::of(r, policy)).collect()
}

impl Finding {
    /// The audit of one route.
    pub fn of(route: &Route, policy: &Policy) -> Self {
        let termination = route.termination();
        let tcp = termination.is_tcp();
        let (desired, overridden) = policy.desired(route.name());
        let timeout = route.annotation(TIMEOUT_ANNOTATION);
        let tunnel = route.annotation(TIMEOUT_TUNNEL_ANNOTATION);
        let mut notes = Vec::new();
        let (annotation, value, default, haproxy) = if tcp {
            let tunnel_parsed = tunnel.map(Timeout::parse);
            match tunnel_parsed {
                Some(p) if p.matches_pattern() => (
                    TIMEOUT_TUNNEL_ANNOTATION,
                    tunnel,
                    policy.router_tunnel_timeout,
                    "timeout tunnel",
                ),
                _ => {
                    if let (Some(v), Some(Parsed::Ignored(why))) = (tunnel, tunnel_parsed) {
                        notes.push(format!(
                            "timeout-tunnel {v:?} is ignored by the router ({why})"
                        ));
                    }
                    (
                        TIMEOUT_ANNOTATION,
                        timeout,
                        policy.router_tunnel_timeout,
                        "timeout tunnel",
                    )
                }
            }
        } else {
            (
                TIMEOUT_ANNOTATION,
                timeout,
                policy.router_server_timeout,
                "timeout server",
            )
        };
        let short = annotation.trim_start_matches("haproxy.router.openshift.io/");
        let kind = if tcp { "tunnel" } else { "server" };
        let parsed = value.map(Timeout::parse);
        let (effective, source) = match parsed.as_ref().and_then(Parsed::timeout) {
            Some(t) if parsed == Some(Parsed::Clipped) => (t, Source::Clipped),
            Some(t) => (t, Source::Annotation),
            None => (default, Source::RouterDefault),
        };
        let enough = effective >= desired;
        let (status, message) = match (&parsed, value) {
            (None, _) | (_, None) if enough => (
                Status::Ok,
                format!(
                    "no {short} annotation; the router's default {kind} timeout ({default}) meets {desired}"
                ),
            ),
            (None, _) | (_, None) => (
                Status::Missing,
                format!(
                    "no {short} annotation: the router's default ({default}) applies, below {desired}"
                ),
            ),
            (Some(Parsed::Ignored(why)), Some(v)) => (
                Status::Ignored,
                format!(
                    "the router silently ignores {v:?} ({why}) and uses its default ({default}){}",
                    why.suggestion(v)
                        .map(|s| format!("; did you mean {s}?"))
                        .unwrap_or_default()
                ),
            ),
            (Some(Parsed::BareMilliseconds(t)), Some(v)) if !enough => (
                Status::BareMilliseconds,
                format!(
                    "{v:?} has no unit: the router reads {} milliseconds ({}), almost certainly meant {v}s",
                    t.as_millis(),
                    seconds(*t)
                ),
            ),
            (Some(Parsed::BareMilliseconds(t)), Some(v)) => (
                Status::Ok,
                format!("{v:?} has no unit: the router reads milliseconds ({t})"),
            ),
            (Some(Parsed::Clipped), Some(v)) => (
                Status::Clipped,
                format!(
                    "{v:?} is above HAProxy's maximum: the router clips it to 2147483647ms (about 24.8 days)"
                ),
            ),
            (Some(Parsed::Valid(t)), _) if !enough => {
                (Status::Below, format!("{t} is below the desired {desired}"))
            }
            (Some(Parsed::Valid(_)), _) => (Status::Ok, String::new()),
        };
        if tcp {
            notes.push(format!(
                "passthrough: HAProxy runs it in TCP mode, where the value sets `{haproxy}` (how long the TLS connection may stay idle), not a per-request limit"
            ));
        }
        let message = std::iter::once(message)
            .chain(notes)
            .filter(|m| !m.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        Self {
            name: route.name().to_owned(),
            host: route.host().map(str::to_owned),
            path: route.spec.path.clone().filter(|p| !p.is_empty()),
            termination,
            haproxy,
            annotation,
            value: value.map(str::to_owned),
            effective,
            effective_ms: effective.as_millis(),
            source,
            desired,
            overridden,
            in_policy: status.in_policy(),
            status,
            message,
            resource_version: route.metadata.resource_version.clone(),
        }
    }
}

/// `0.6 s`, `30 s`, `1.5 ms`: a duration for people.
fn seconds(t: Timeout) -> String {
    let secs = t.duration().as_secs_f64();
    if secs >= 1.0 || secs == 0.0 {
        format!("{secs} s")
    } else if secs >= 0.1 {
        format!("{secs:.1} s")
    } else {
        format!("{} ms", secs * 1000.0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeMap;

    use super::*;
    use crate::route::{RouteSpec, TlsConfig};

    fn route(name: &str, timeout: Option<&str>, termination: Option<&str>) -> Route {
        let mut r = Route::new(name, RouteSpec::default());
        r.spec.host = Some(format!("{name}.apps.example.com"));
        r.spec.tls = termination.map(|t| TlsConfig {
            termination: t.into(),
            ..TlsConfig::default()
        });
        if let Some(v) = timeout {
            r.metadata.annotations = Some(BTreeMap::from([(TIMEOUT_ANNOTATION.into(), v.into())]));
        }
        r
    }

    fn one(r: Route, policy: &Policy) -> Finding {
        audit(&[r], policy).remove(0)
    }

    #[test]
    fn each_kind_of_route_gets_its_verdict_and_effective_timeout() {
        let p = Policy::default();
        let cases = [
            (Some("600s"), None, Status::Ok, "600s"),
            (Some("10m"), Some("edge"), Status::Ok, "600s"),
            (Some("900s"), Some("reencrypt"), Status::Ok, "900s"),
            (None, Some("edge"), Status::Missing, "30s"),
            (Some("600"), None, Status::BareMilliseconds, "600ms"),
            (Some("600000"), None, Status::Ok, "600s"),
            (Some("10min"), None, Status::Ignored, "30s"),
            (Some("0"), None, Status::Ignored, "30s"),
            (Some("1.5m"), None, Status::Ignored, "30s"),
            (Some("5 min"), None, Status::Ignored, "30s"),
            (Some(""), None, Status::Ignored, "30s"),
            (Some("300s"), None, Status::Below, "300s"),
            (Some("30d"), None, Status::Clipped, "2147483647ms"),
            // Passthrough: the annotation is the tunnel timeout; without it, 1h.
            (None, Some("passthrough"), Status::Ok, "3600s"),
            (Some("600s"), Some("passthrough"), Status::Ok, "600s"),
            (
                Some("600"),
                Some("passthrough"),
                Status::BareMilliseconds,
                "600ms",
            ),
            (Some("10min"), Some("passthrough"), Status::Ignored, "3600s"),
        ];
        for (value, termination, status, effective) in cases {
            let f = one(route("r", value, termination), &p);
            assert_eq!(
                (f.status, f.effective.to_string()),
                (status, effective.to_owned()),
                "{value:?} {termination:?}: {}",
                f.message
            );
            assert_eq!(f.in_policy, status.in_policy());
        }
    }

    #[test]
    fn messages_say_what_the_router_does() {
        let p = Policy::default();
        let m = |v: Option<&str>| one(route("r", v, None), &p).message;
        assert!(
            m(Some("600")).contains("600 milliseconds (0.6 s)"),
            "{}",
            m(Some("600"))
        );
        assert!(m(Some("600")).contains("meant 600s"));
        assert!(m(Some("10min")).contains("silently ignores"));
        assert!(m(Some("10min")).contains("did you mean 10m?"));
        assert!(m(None).contains("default (30s)"));
        assert!(m(Some("30d")).contains("clips"));
    }

    #[test]
    fn overrides_change_the_desired_value_of_one_route() {
        let p = Policy::default().with_override("mcp", Timeout::from_secs(300));
        let mcp = one(route("mcp", Some("300s"), None), &p);
        assert_eq!((mcp.status, mcp.overridden), (Status::Ok, true));
        let other = one(route("other", Some("300s"), None), &p);
        assert_eq!((other.status, other.overridden), (Status::Below, false));
        assert_eq!(p.unmatched_overrides(&[other]), ["mcp"]);
        assert_eq!(
            Policy::parse_override("mcp=300s").unwrap(),
            ("mcp".into(), Timeout::from_secs(300))
        );
        assert!(Policy::parse_override("mcp").is_err());
        assert!(Policy::parse_override("=300s").is_err());
        assert!(Policy::parse_override("mcp=300").is_err());
    }

    #[test]
    fn passthrough_tunnel_annotation_comes_first_when_the_router_accepts_it() {
        let p = Policy::default();
        let mut r = route("tcp", Some("900s"), Some("passthrough"));
        let annotations = r.metadata.annotations.as_mut().unwrap();
        annotations.insert(TIMEOUT_TUNNEL_ANNOTATION.into(), "5m".into());
        let f = one(r.clone(), &p);
        assert_eq!(
            (f.annotation, f.status),
            (TIMEOUT_TUNNEL_ANNOTATION, Status::Below)
        );
        // An ignored timeout-tunnel falls through to timeout.
        r.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(TIMEOUT_TUNNEL_ANNOTATION.into(), "5 m".into());
        let f = one(r, &p);
        assert_eq!((f.annotation, f.status), (TIMEOUT_ANNOTATION, Status::Ok));
        assert!(
            f.message.contains("timeout-tunnel \"5 m\" is ignored"),
            "{}",
            f.message
        );
        // On HTTP routes timeout-tunnel does not replace the server timeout.
        let mut r = route("http", None, Some("edge"));
        r.metadata.annotations = Some(BTreeMap::from([(
            TIMEOUT_TUNNEL_ANNOTATION.into(),
            "1h".into(),
        )]));
        assert_eq!(one(r, &p).status, Status::Missing);
    }

    #[test]
    fn a_router_default_that_suffices_counts_for_missing_annotations() {
        let p = Policy {
            router_server_timeout: Timeout::from_secs(900),
            ..Policy::default()
        };
        assert_eq!(one(route("r", None, None), &p).status, Status::Ok);
        assert_eq!(
            one(route("r", Some("10min"), None), &p).status,
            Status::Ignored
        );
    }
}
