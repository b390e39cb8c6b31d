//! The HTTP side: discovery, CRUD, patches, subresources, watches.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::Shared;
use crate::auth::Decision;
use crate::error::ApiError;
use crate::resources::{self, ResourceDef};
use crate::select::Selectors;
use crate::store::{Key, Part};

/// A parsed resource path.
#[derive(Debug)]
pub(crate) struct Target {
    pub def: &'static ResourceDef,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
}

pub(crate) fn json_response(code: u16, value: &Value) -> Response {
    let status = axum::http::StatusCode::from_u16(code).unwrap_or(axum::http::StatusCode::OK);
    (
        status,
        [("content-type", "application/json")],
        value.to_string(),
    )
        .into_response()
}

pub(crate) fn query_pairs(uri: &Uri) -> Vec<(String, String)> {
    url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

fn query<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Splits `/api/v1/...` or `/apis/<group>/<version>/...` into a target.
pub(crate) fn parse_target(path: &str) -> Result<Target, ApiError> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match parts.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(ApiError::no_route(path)),
    };
    let lookup = |plural: &str| {
        resources::find(group, version, plural).ok_or_else(|| ApiError::no_route(path))
    };
    let owned = |s: Option<&&str>| s.map(|s| (*s).to_owned());
    match rest {
        ["namespaces", ns, plural, tail @ ..]
            if resources::find(group, version, plural).is_some_and(|d| d.namespaced) =>
        {
            Ok(Target {
                def: lookup(plural)?,
                namespace: Some((*ns).to_owned()),
                name: owned(tail.first()),
                sub: owned(tail.get(1)),
            })
        }
        [plural, tail @ ..] if !plural.is_empty() => {
            let def = lookup(plural)?;
            Ok(Target {
                def,
                namespace: None,
                name: owned(tail.first()),
                sub: owned(tail.get(1)),
            })
        }
        _ => Err(ApiError::no_route(path)),
    }
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// Applies the RBAC check for `verb` on `target`.
pub(crate) fn authorize(
    shared: &Shared,
    headers: &HeaderMap,
    verb: &str,
    target: &Target,
) -> Result<(), ApiError> {
    let resource = match &target.sub {
        Some(sub) => format!("{}/{sub}", target.def.plural),
        None => target.def.plural.to_owned(),
    };
    let ns = target.namespace.as_deref().unwrap_or("");
    let auth = shared.auth.read().unwrap_or_else(|p| p.into_inner());
    match auth.check(
        bearer(headers),
        verb,
        target.def.group,
        &resource,
        ns,
        target.name.as_deref(),
    ) {
        Decision::Allow => Ok(()),
        Decision::Unauthenticated => Err(ApiError::unauthorized()),
        Decision::Deny(user) => Err(ApiError::forbidden(
            &user,
            verb,
            &resource,
            target.def.group,
            ns,
        )),
    }
}

/// Every request that is not an exec.
pub(crate) async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    tracing::debug!(%method, %uri, "request");
    let result = match (method.as_str(), path.trim_end_matches('/')) {
        ("GET", "/version") => Ok(json_response(200, &resources::version())),
        ("GET", "/api") => Ok(json_response(200, &resources::core_versions())),
        ("GET", "/apis") => Ok(json_response(200, &resources::api_groups())),
        ("GET", "/healthz" | "/readyz" | "/livez") => {
            Ok((axum::http::StatusCode::OK, "ok").into_response())
        }
        _ => match discovery(&path) {
            Some(doc) if method == Method::GET => Ok(json_response(200, &doc)),
            // As in the real API server, a request whose client went away still completes:
            // a write in flight lands even if nobody reads the answer.
            _ => tokio::spawn(async move {
                resource_request(&shared, &method, &uri, &headers, body).await
            })
            .await
            .unwrap_or_else(|e| Err(ApiError::internal(&format!("request handler failed: {e}")))),
        },
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

fn discovery(path: &str) -> Option<Value> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["api", version] => resources::resource_list("", version),
        ["apis", group, version] => resources::resource_list(group, version),
        _ => None,
    }
}

async fn resource_request(
    shared: &Arc<Shared>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let target = parse_target(uri.path())?;
    let q = query_pairs(uri);
    let def = target.def;
    let delay = shared
        .delays
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(def.plural)
        .map(|&(reads, writes)| if method == Method::GET { reads } else { writes });
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    if def.namespaced && target.name.is_some() && target.namespace.is_none() {
        return Err(ApiError::no_route(uri.path()));
    }
    // An injected fault answers before anything is read or changed.
    if let Some(fault) = shared
        .faults
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take(method.as_str(), &target)
    {
        return Err(fault);
    }
    let ns = target.namespace.clone().unwrap_or_default();
    // `?dryRun=All`: the write is checked and answered as usual, on a copy that is thrown away.
    let scratch;
    let store = if query(&q, "dryRun").is_some() && method != Method::GET {
        scratch = shared.store.scratch();
        &scratch
    } else {
        &shared.store
    };
    match (method.as_str(), &target.name, target.sub.as_deref()) {
        ("GET", None, None) => {
            let watch = matches!(query(&q, "watch"), Some("true" | "1"));
            authorize(
                shared,
                headers,
                if watch { "watch" } else { "list" },
                &target,
            )?;
            let selectors =
                Selectors::parse(query(&q, "labelSelector"), query(&q, "fieldSelector"))?;
            if watch {
                return watch_response(shared, def, target.namespace.clone(), selectors, &q);
            }
            let (items, rv) = store.list(def, target.namespace.as_deref(), &selectors);
            Ok(json_response(
                200,
                &json!({"kind": format!("{}List", def.kind), "apiVersion": def.api_version(),
                        "metadata": {"resourceVersion": rv.to_string()}, "items": items}),
            ))
        }
        ("GET", Some(name), sub) => {
            authorize(shared, headers, "get", &target)?;
            let object = store.get(def, &Key::new(def, &ns, name))?;
            match sub {
                None | Some("status") => Ok(json_response(200, &object)),
                Some("scale") if def.scale => Ok(json_response(200, &scale_of(&object))),
                Some(other) => Err(ApiError::no_route(&format!("{}/{other}", def.plural))),
            }
        }
        ("POST", None, None) => {
            authorize(shared, headers, "create", &target)?;
            let mut object: Value = parse_body(&body)?;
            if def.status
                && let Some(map) = object.as_object_mut()
            {
                map.remove("status"); // status is written only through its subresource
            }
            let created = store.create(def, &ns, object)?;
            Ok(json_response(201, &created))
        }
        ("PUT", Some(name), sub) => {
            authorize(shared, headers, "update", &target)?;
            let object: Value = parse_body(&body)?;
            let key = Key::new(def, &ns, name);
            write_sub(store, def, &key, sub, object).map(|v| json_response(200, &v))
        }
        ("PATCH", Some(name), sub) => {
            authorize(shared, headers, "patch", &target)?;
            let content_type = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let content_type = content_type
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_owned();
            let key = Key::new(def, &ns, name);
            let current = match (store.get(def, &key), content_type.as_str(), sub) {
                (Ok(current), _, _) => current,
                // Server-side apply creates what does not exist.
                (Err(e), "application/apply-patch+yaml", None) if e.code == 404 => {
                    let mut object: Value = parse_body(&body)?;
                    object["metadata"]["name"] = json!(name);
                    return Ok(json_response(201, &store.create(def, &ns, object)?));
                }
                (Err(e), _, _) => return Err(e),
            };
            let base = match sub {
                Some("scale") if def.scale => scale_of(&current),
                _ => current,
            };
            let patched = apply_patch(base, &content_type, &body)?;
            write_sub(store, def, &key, sub, patched).map(|v| json_response(200, &v))
        }
        ("DELETE", Some(name), None) => {
            authorize(shared, headers, "delete", &target)?;
            // DeleteOptions' preconditions: a stale resourceVersion or uid is a 409.
            let options: Value = if body.is_empty() {
                Value::Null
            } else {
                parse_body(&body)?
            };
            let preconditions = &options["preconditions"];
            let deleted = store.delete_if(
                def,
                &Key::new(def, &ns, name),
                preconditions["resourceVersion"].as_str(),
                preconditions["uid"].as_str(),
            )?;
            Ok(json_response(200, &deleted))
        }
        _ => Err(ApiError::method_not_allowed(&format!(
            "{method} is not supported on {}",
            uri.path()
        ))),
    }
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(&format!("the body is not valid JSON: {e}")))
}

/// Writes the main object, its status, or (through the scale subresource) its replicas.
fn write_sub(
    store: &crate::store::Store,
    def: &ResourceDef,
    key: &Key,
    sub: Option<&str>,
    object: Value,
) -> Result<Value, ApiError> {
    match sub {
        None => store.update(def, key, object, Part::Main),
        Some("status") if def.status => store.update(def, key, object, Part::Status),
        Some("scale") if def.scale => {
            let mut current = store.get(def, key)?;
            let replicas = object["spec"]["replicas"]
                .as_i64()
                .ok_or_else(|| ApiError::bad_request("spec.replicas is required"))?;
            if let Some(rv) = object["metadata"]["resourceVersion"].as_str() {
                current["metadata"]["resourceVersion"] = json!(rv);
            }
            current["spec"]["replicas"] = json!(replicas);
            let updated = store.update(def, key, current, Part::Main)?;
            Ok(scale_of(&updated))
        }
        Some(other) => Err(ApiError::no_route(&format!("{}/{other}", def.plural))),
    }
}

/// The `autoscaling/v1` Scale view of a workload.
fn scale_of(object: &Value) -> Value {
    let meta = &object["metadata"];
    let selector = object["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
                     "resourceVersion": meta["resourceVersion"], "creationTimestamp": meta["creationTimestamp"]},
        "spec": {"replicas": object["spec"]["replicas"].as_i64().unwrap_or(1)},
        "status": {"replicas": object["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    })
}

/// JSON patch, merge patch, strategic merge patch (as a merge patch: enough for the simple
/// cases used here) and server-side apply (as a merge).
fn apply_patch(mut base: Value, content_type: &str, body: &[u8]) -> Result<Value, ApiError> {
    match content_type {
        "application/json-patch+json" => {
            let patch: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(&format!("invalid JSON patch: {e}")))?;
            json_patch::patch(&mut base, &patch)
                .map_err(|e| ApiError::bad_request(&format!("the JSON patch failed: {e}")))?;
        }
        "application/merge-patch+json"
        | "application/strategic-merge-patch+json"
        | "application/apply-patch+yaml" => {
            let patch = parse_body(body)?;
            // A resourceVersion in a merge patch is a precondition; apply ignores it.
            json_patch::merge(&mut base, &patch);
        }
        other => return Err(ApiError::unsupported_media_type(other)),
    }
    Ok(base)
}

fn watch_response(
    shared: &Arc<Shared>,
    def: &'static ResourceDef,
    namespace: Option<String>,
    selectors: Selectors,
    q: &[(String, String)],
) -> Result<Response, ApiError> {
    let since = query(q, "resourceVersion")
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|v| *v > 0);
    let (first, mut receiver, mut last_rv) = match since {
        Some(rv) => {
            let (replay, receiver) = shared.store.watch_from(rv)?;
            (replay, receiver, rv)
        }
        // No resourceVersion: the current state as ADDED events, then what follows.
        None => shared.store.snapshot_and_subscribe(def),
    };
    let timeout = Duration::from_secs(
        query(q, "timeoutSeconds")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1800),
    );
    let shutdown = shared.shutdown.clone();
    let wanted = move |e: &crate::store::Event| {
        e.key.group == def.group
            && e.key.plural == def.plural
            && namespace.as_deref().is_none_or(|ns| e.key.namespace == ns)
            && selectors.matches(&e.object)
    };
    let encode = |e: &crate::store::Event| {
        let mut line = json!({"type": e.kind.as_str(), "object": e.object}).to_string();
        line.push('\n');
        Ok::<_, std::io::Error>(Bytes::from(line))
    };
    let initial: Vec<_> = first.iter().filter(|e| wanted(e)).map(encode).collect();
    let live = async_stream(move |tx| async move {
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = &mut deadline => break,
                () = shutdown.cancelled() => break,
                event = receiver.recv() => match event {
                    Ok(e) if e.rv > last_rv => {
                        last_rv = e.rv;
                        if wanted(&e) && tx.send(encode(&e)).await.is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    // Fell behind: end the watch; the client watches again from its last version.
                    Err(_) => break,
                }
            }
        }
    });
    let stream = futures::stream::iter(initial).chain(live);
    Ok(Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("transfer-encoding", "chunked")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| ApiError::bad_request("watch").into_response()))
}

/// A stream fed by a task through a small channel.
fn async_stream<F, Fut>(
    f: F,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(f(tx));
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
