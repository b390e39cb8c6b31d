//! `SelfSubjectAccessReview` (authorization.k8s.io/v1) and `SelfSubjectReview`
//! (authentication.k8s.io/v1): "may I?" and "who am I?", answered for the calling token as the
//! real API server answers them. Both are create-only and stored nowhere; every authenticated
//! user may create them (the `system:basic-user` ClusterRole grants it on a real cluster).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use serde_json::{Value, json};

use crate::Shared;
use crate::api::{bearer as token, json_response as answer};
use crate::auth::Decision;
use crate::error::ApiError;

/// Create-only review resources: (group, version, plural, kind).
pub(crate) const REVIEWS: &[(&str, &str, &str, &str)] = &[
    (
        "authorization.k8s.io",
        "v1",
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
    ),
    (
        "authentication.k8s.io",
        "v1",
        "selfsubjectreviews",
        "SelfSubjectReview",
    ),
];

/// The request body as JSON: JSON as sent, or a protobuf-encoded review (what client-go,
/// hence kubectl, sends for these types) turned into the JSON of its fields used here.
fn body_json(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    let protobuf = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/vnd.kubernetes.protobuf"));
    if protobuf {
        return proto::review(body)
            .ok_or_else(|| ApiError::bad_request("the body is not a valid protobuf review"));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(&format!("the body is not valid JSON: {e}")))
}

/// Just enough protobuf to read a `SelfSubjectAccessReview` in Kubernetes' envelope (`k8s\0`,
/// then `runtime.Unknown` whose field 2 is the object).
mod proto {
    use serde_json::{Value, json};

    /// The length-delimited fields of a message, by number (other wire types skipped).
    fn fields(mut buf: &[u8]) -> Option<Vec<(u64, &[u8])>> {
        let mut out = Vec::new();
        while !buf.is_empty() {
            let key = varint(&mut buf)?;
            match key & 7 {
                0 => {
                    varint(&mut buf)?;
                }
                1 => buf = buf.get(8..)?,
                5 => buf = buf.get(4..)?,
                2 => {
                    let len = usize::try_from(varint(&mut buf)?).ok()?;
                    out.push((key >> 3, buf.get(..len)?));
                    buf = buf.get(len..)?;
                }
                _ => return None,
            }
        }
        Some(out)
    }

    fn varint(buf: &mut &[u8]) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = buf.split_first()?;
            *buf = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn field(message: &[u8], number: u64) -> Option<&[u8]> {
        fields(message)?
            .into_iter()
            .find(|(n, _)| *n == number)
            .map(|(_, v)| v)
    }

    /// `{"spec": {"resourceAttributes": {...}}}` or `{"spec": {"nonResourceAttributes": {}}}`.
    pub(super) fn review(body: &[u8]) -> Option<Value> {
        let unknown = body.strip_prefix(b"k8s\0")?;
        let object = field(unknown, 2)?;
        let Some(spec) = field(object, 2) else {
            return Some(json!({"spec": {}}));
        };
        if let Some(attrs) = field(spec, 1) {
            let mut out = serde_json::Map::new();
            for (number, name) in [
                (1, "namespace"),
                (2, "verb"),
                (3, "group"),
                (4, "version"),
                (5, "resource"),
                (6, "subresource"),
                (7, "name"),
            ] {
                if let Some(v) = field(attrs, number) {
                    out.insert(name.into(), json!(String::from_utf8_lossy(v)));
                }
            }
            return Some(json!({"spec": {"resourceAttributes": out}}));
        }
        if field(spec, 2).is_some() {
            return Some(json!({"spec": {"nonResourceAttributes": {}}}));
        }
        Some(json!({"spec": {}}))
    }
}

/// `POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews`: whether the caller may do
/// `spec.resourceAttributes` (verb, group, resource, subresource, namespace, name), by the
/// token's RBAC rules. An unknown token is 401, as for any request.
pub(crate) async fn access(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    access_review(&shared, &headers, &body).unwrap_or_else(IntoResponse::into_response)
}

fn access_review(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Result<Response, ApiError> {
    let review = body_json(headers, body)?;
    let spec = &review["spec"];
    let auth = shared.auth.read().unwrap_or_else(|p| p.into_inner());
    let token = token(headers);
    if token.is_some_and(|t| t != crate::ADMIN_TOKEN) && auth.identity(token).is_none() {
        return Err(ApiError::unauthorized());
    }
    let attrs = &spec["resourceAttributes"];
    let allowed = if attrs.is_object() {
        let text = |k: &str| attrs[k].as_str().unwrap_or("");
        if text("verb").is_empty() {
            return Err(ApiError::bad_request(
                "SelfSubjectAccessReview \"\" is invalid: spec.resourceAttributes.verb: Required value",
            ));
        }
        let resource = match text("subresource") {
            "" => text("resource").to_owned(),
            sub => format!("{}/{sub}", text("resource")),
        };
        let name = Some(text("name")).filter(|n| !n.is_empty());
        auth.check(
            token,
            text("verb"),
            text("group"),
            &resource,
            text("namespace"),
            name,
        ) == Decision::Allow
    } else if spec["nonResourceAttributes"].is_object() {
        // Only the administrator may do anything beyond discovery here.
        auth.identity(token).is_none()
    } else {
        return Err(ApiError::bad_request(
            "SelfSubjectAccessReview \"\" is invalid: spec: Invalid value: exactly one of nonResourceAttributes or resourceAttributes must be specified",
        ));
    };
    let reason = if !allowed {
        String::new()
    } else {
        match auth.identity(token) {
            Some(identity) => format!("RBAC: allowed by the rules of User \"{}\"", identity.user),
            None => "RBAC: allowed by ClusterRoleBinding \"cluster-admin\" of ClusterRole \"cluster-admin\" to User \"system:admin\"".into(),
        }
    };
    let mut status = json!({"allowed": allowed});
    if !reason.is_empty() {
        status["reason"] = json!(reason);
    }
    Ok(answer(
        201,
        &json!({
            "kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
            "metadata": {"creationTimestamp": null}, "spec": spec, "status": status,
        }),
    ))
}

/// `POST /apis/authentication.k8s.io/v1/selfsubjectreviews`: the caller's user name and groups.
pub(crate) async fn subject(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    subject_review(&shared, &headers, &body).unwrap_or_else(IntoResponse::into_response)
}

fn subject_review(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Result<Response, ApiError> {
    if !body.is_empty() {
        body_json(headers, body).ok();
    }
    let auth = shared.auth.read().unwrap_or_else(|p| p.into_inner());
    let token = token(headers);
    let (user, groups) = match (token, auth.identity(token)) {
        (_, Some(identity)) => {
            let mut groups = vec!["system:authenticated".to_owned()];
            if let Some(rest) = identity.user.strip_prefix("system:serviceaccount:")
                && let Some((ns, _)) = rest.split_once(':')
            {
                groups.insert(0, format!("system:serviceaccounts:{ns}"));
                groups.insert(0, "system:serviceaccounts".into());
            }
            (identity.user.clone(), groups)
        }
        (Some(t), None) if t != crate::ADMIN_TOKEN => return Err(ApiError::unauthorized()),
        // The administrator token, or none: the test's own requests.
        _ => (
            crate::ADMIN_USER.to_owned(),
            vec!["system:masters".into(), "system:authenticated".into()],
        ),
    };
    Ok(answer(
        201,
        &json!({
            "kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": null},
            "status": {"userInfo": {"username": user, "groups": groups}},
        }),
    ))
}
