//! `Status` error bodies shaped like the real API server's.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::resources::ResourceDef;

/// An API error: an HTTP status and a `Status` object.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub code: u16,
    /// `NotFound`, `AlreadyExists`, `Conflict`, `Invalid`, `Forbidden`, …
    pub reason: &'static str,
    /// The human message.
    pub message: String,
    /// `details` (name, group, kind).
    pub details: Value,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: String, details: Value) -> Self {
        Self {
            code,
            reason,
            message,
            details,
        }
    }

    fn details(def: &ResourceDef, name: &str) -> Value {
        json!({"name": name, "group": def.group, "kind": def.plural})
    }

    /// 404 for an object.
    pub fn not_found(def: &ResourceDef, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", def.qualified()),
            Self::details(def, name),
        )
    }

    /// 404 for a missing namespace.
    pub fn namespace_not_found(ns: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("namespaces \"{ns}\" not found"),
            json!({"name": ns, "kind": "namespaces"}),
        )
    }

    /// 404 for a path that names no resource.
    pub fn no_route(path: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
            json!({}),
        )
    }

    /// 409 for a create of an existing name.
    pub fn already_exists(def: &ResourceDef, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", def.qualified()),
            Self::details(def, name),
        )
    }

    /// 409 for a stale resourceVersion.
    pub fn conflict(def: &ResourceDef, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                def.qualified()
            ),
            Self::details(def, name),
        )
    }

    /// 422 for an invalid object.
    pub fn invalid(def: &ResourceDef, name: &str, why: &str) -> Self {
        Self::new(
            422,
            "Invalid",
            format!("{} \"{name}\" is invalid: {why}", def.kind),
            Self::details(def, name),
        )
    }

    /// 400.
    pub fn bad_request(message: &str) -> Self {
        Self::new(400, "BadRequest", message.to_owned(), json!({}))
    }

    /// 500.
    pub fn internal(message: &str) -> Self {
        Self::new(500, "InternalError", message.to_owned(), json!({}))
    }

    /// 405.
    pub fn method_not_allowed(message: &str) -> Self {
        Self::new(405, "MethodNotAllowed", message.to_owned(), json!({}))
    }

    /// 415.
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {content_type})"
            ),
            json!({}),
        )
    }

    /// 401.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized".into(), json!({}))
    }

    /// 403, worded as the real RBAC denial.
    pub fn forbidden(user: &str, verb: &str, resource: &str, group: &str, namespace: &str) -> Self {
        let scope = if namespace.is_empty() {
            "at the cluster scope".to_owned()
        } else {
            format!("in the namespace \"{namespace}\"")
        };
        Self::new(
            403,
            "Forbidden",
            format!(
                "{resource} is forbidden: User \"{user}\" cannot {verb} resource \"{resource}\" in API group \"{group}\" {scope}"
            ),
            json!({"kind": resource, "group": group}),
        )
    }

    /// 410 for a watch from a resourceVersion no longer kept.
    pub fn gone(rv: u64) -> Self {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {rv}"),
            json!({}),
        )
    }

    /// The error a test injected (see `TestApiServer::fail_next`) for a request on `def`
    /// (object `name`, if the request names one), with the reason and message the real API
    /// server gives for `code`.
    pub fn injected(code: u16, def: &ResourceDef, name: Option<&str>, request: &str) -> Self {
        let object = name.unwrap_or("");
        let (reason, message) = match code {
            400 => ("BadRequest", format!("bad request (injected fault: {request})")),
            401 => ("Unauthorized", "Unauthorized".to_owned()),
            403 => (
                "Forbidden",
                format!("{} \"{object}\" is forbidden (injected fault: {request})", def.qualified()),
            ),
            404 => ("NotFound", format!("{} \"{object}\" not found", def.qualified())),
            409 => (
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{object}\": the object has been modified; please apply your changes to the latest version and try again",
                    def.qualified()
                ),
            ),
            410 => ("Expired", "too old resource version".to_owned()),
            422 => (
                "Invalid",
                format!("{} \"{object}\" is invalid (injected fault: {request})", def.kind),
            ),
            429 => (
                "TooManyRequests",
                "the server has received too many requests and has asked us to try again later"
                    .to_owned(),
            ),
            500 => (
                "InternalError",
                format!("Internal error occurred: injected fault: {request}"),
            ),
            503 => (
                "ServiceUnavailable",
                "the server is currently unable to handle the request".to_owned(),
            ),
            504 => (
                "Timeout",
                "the server was unable to return a response in the time allotted, but may still be processing the request".to_owned(),
            ),
            _ => ("", format!("injected fault {code}: {request}")),
        };
        let details = if name.is_some() {
            Self::details(def, object)
        } else {
            json!({"group": def.group, "kind": def.plural})
        };
        Self::new(code, reason, message, details)
    }

    /// The `Status` object.
    pub fn status(&self) -> Value {
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "details": self.details, "code": self.code,
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            code,
            [("content-type", "application/json")],
            self.status().to_string(),
        )
            .into_response()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.reason, self.code, self.message)
    }
}

impl std::error::Error for ApiError {}
