//! Object storage with the API's bookkeeping: uid, resourceVersion, creationTimestamp,
//! generateName, optimistic concurrency, and an event history for watches.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::error::ApiError;
use crate::resources::ResourceDef;
use crate::select::Selectors;

/// Where an object lives.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    /// API group.
    pub group: String,
    /// Resource plural.
    pub plural: String,
    /// Namespace (`""` for cluster-scoped).
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl Key {
    /// The key of `name` of resource `def` in `namespace`.
    pub fn new(def: &ResourceDef, namespace: &str, name: &str) -> Self {
        let namespace = if def.namespaced { namespace } else { "" };
        Self {
            group: def.group.into(),
            plural: def.plural.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Removed.
    Deleted,
}

impl EventType {
    /// `ADDED`, `MODIFIED`, `DELETED`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as a watch sends it.
#[derive(Debug, Clone)]
pub struct Event {
    /// The resourceVersion after the change.
    pub rv: u64,
    /// What happened.
    pub kind: EventType,
    /// Which object.
    pub key: Key,
    /// The object after the change (before it, for a deletion).
    pub object: Value,
}

/// Which part of an object an update may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Everything but `status` (for resources with a status subresource).
    Main,
    /// Only `status`.
    Status,
}

const HISTORY: usize = 20_000;

#[derive(Debug, Default)]
struct Inner {
    objects: BTreeMap<Key, Value>,
    rv: u64,
    history: VecDeque<Event>,
    seed: u64,
}

/// The server's objects.
#[derive(Debug)]
pub struct Store {
    inner: Mutex<Inner>,
    events: broadcast::Sender<Event>,
}

impl Default for Store {
    fn default() -> Self {
        let seed = jiff::Timestamp::now().as_nanosecond() as u64 | 1;
        Self {
            inner: Mutex::new(Inner {
                seed,
                ..Inner::default()
            }),
            events: broadcast::channel(4096).0,
        }
    }
}

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

impl Inner {
    fn random(&mut self) -> u64 {
        // xorshift64*: unique names and uids; no cryptographic use.
        self.seed ^= self.seed >> 12;
        self.seed ^= self.seed << 25;
        self.seed ^= self.seed >> 27;
        self.seed.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn uid(&mut self) -> String {
        let (a, b) = (self.random(), self.random());
        format!(
            "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            b >> 52,
            b & 0xffff_ffff_ffff
        )
    }

    fn suffix(&mut self) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let mut n = self.random();
        (0..5)
            .map(|_| {
                let c = ALPHABET[(n % ALPHABET.len() as u64) as usize] as char;
                n /= ALPHABET.len() as u64;
                c
            })
            .collect()
    }

    fn record(&mut self, kind: EventType, key: Key, object: Value, tx: &broadcast::Sender<Event>) {
        let event = Event {
            rv: self.rv,
            kind,
            key,
            object,
        };
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(event.clone());
        let _ = tx.send(event);
    }
}

fn lock(m: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Store {
    /// The object at `key`.
    pub fn get(&self, def: &ResourceDef, key: &Key) -> Result<Value, ApiError> {
        lock(&self.inner)
            .objects
            .get(key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(def, &key.name))
    }

    /// Objects of a resource, in one namespace or all, that match the selectors; and the list's
    /// resourceVersion.
    pub fn list(
        &self,
        def: &ResourceDef,
        namespace: Option<&str>,
        selectors: &Selectors,
    ) -> (Vec<Value>, u64) {
        let inner = lock(&self.inner);
        let items = inner
            .objects
            .iter()
            .filter(|(k, _)| k.group == def.group && k.plural == def.plural)
            .filter(|(k, _)| namespace.is_none_or(|ns| k.namespace == ns))
            .filter(|(_, v)| selectors.matches(v))
            .map(|(_, v)| v.clone())
            .collect();
        (items, inner.rv)
    }

    /// Creates an object, filling in name (from `generateName`), uid, resourceVersion,
    /// creationTimestamp and namespace.
    pub fn create(
        &self,
        def: &ResourceDef,
        namespace: &str,
        mut object: Value,
    ) -> Result<Value, ApiError> {
        let mut inner = lock(&self.inner);
        if !object.is_object() {
            return Err(ApiError::bad_request("the body is not a JSON object"));
        }
        object["apiVersion"] = json!(def.api_version());
        object["kind"] = json!(def.kind);
        if !object["metadata"].is_object() {
            object["metadata"] = json!({});
        }
        let meta = &mut object["metadata"];
        if meta["name"].as_str().unwrap_or("").is_empty() {
            match meta["generateName"].as_str() {
                Some(prefix) if !prefix.is_empty() => {
                    let prefix = prefix.to_owned();
                    let suffix = inner.suffix();
                    object["metadata"]["name"] = json!(format!("{prefix}{suffix}"));
                }
                _ => {
                    return Err(ApiError::invalid(
                        def,
                        "",
                        "metadata.name: Required value: name or generateName is required",
                    ));
                }
            }
        }
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if !valid_name(&name) {
            return Err(ApiError::invalid(
                def,
                &name,
                "metadata.name: Invalid value: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'",
            ));
        }
        if def.namespaced {
            if namespace.is_empty() {
                return Err(ApiError::bad_request("a namespace is required"));
            }
            let ns_key = Key {
                group: String::new(),
                plural: "namespaces".into(),
                namespace: String::new(),
                name: namespace.into(),
            };
            if !inner.objects.contains_key(&ns_key) {
                return Err(ApiError::namespace_not_found(namespace));
            }
            match object["metadata"]["namespace"].as_str() {
                Some(ns) if !ns.is_empty() && ns != namespace => {
                    return Err(ApiError::bad_request(
                        "the namespace of the object does not match the namespace of the request",
                    ));
                }
                _ => object["metadata"]["namespace"] = json!(namespace),
            }
        }
        let key = Key::new(def, namespace, &name);
        if inner.objects.contains_key(&key) {
            return Err(ApiError::already_exists(def, &name));
        }
        inner.rv += 1;
        let uid = inner.uid();
        let meta = &mut object["metadata"];
        meta["uid"] = json!(uid);
        meta["resourceVersion"] = json!(inner.rv.to_string());
        meta["creationTimestamp"] = json!(now());
        meta["generation"] = json!(1);
        inner.objects.insert(key.clone(), object.clone());
        inner.record(EventType::Added, key, object.clone(), &self.events);
        Ok(object)
    }

    /// Replaces an object. A `metadata.resourceVersion` in `object` must match (409 otherwise).
    /// For resources with a status subresource, [`Part::Main`] keeps the old status and
    /// [`Part::Status`] changes nothing but the status.
    pub fn update(
        &self,
        def: &ResourceDef,
        key: &Key,
        mut object: Value,
        part: Part,
    ) -> Result<Value, ApiError> {
        let mut inner = lock(&self.inner);
        let old = inner
            .objects
            .get(key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(def, &key.name))?;
        if let Some(rv) = object["metadata"]["resourceVersion"].as_str()
            && !rv.is_empty()
            && rv
                != old["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
        {
            return Err(ApiError::conflict(def, &key.name));
        }
        if let Some(name) = object["metadata"]["name"].as_str()
            && name != key.name
        {
            return Err(ApiError::bad_request(
                "the name of the object does not match the name in the URL",
            ));
        }
        let updated = match part {
            Part::Status => {
                let mut updated = old.clone();
                updated["status"] = object.get("status").cloned().unwrap_or(Value::Null);
                updated
            }
            Part::Main => {
                if def.status {
                    match old.get("status") {
                        Some(status) => object["status"] = status.clone(),
                        None => {
                            if let Some(map) = object.as_object_mut() {
                                map.remove("status");
                            }
                        }
                    }
                }
                // Server-owned metadata survives whatever the client sent.
                object["apiVersion"] = json!(def.api_version());
                object["kind"] = json!(def.kind);
                for field in [
                    "uid",
                    "creationTimestamp",
                    "namespace",
                    "name",
                    "generation",
                ] {
                    object["metadata"][field] = old["metadata"][field].clone();
                }
                if object.get("spec") != old.get("spec") {
                    let generation = old["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
                    object["metadata"]["generation"] = json!(generation);
                }
                object
            }
        };
        if updated == old {
            return Ok(old); // no change, no new resourceVersion (as the real server does)
        }
        let mut updated = updated;
        inner.rv += 1;
        updated["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
        inner.objects.insert(key.clone(), updated.clone());
        inner.record(
            EventType::Modified,
            key.clone(),
            updated.clone(),
            &self.events,
        );
        Ok(updated)
    }

    /// Backdates an object's creationTimestamp (fixtures of a cluster that has run for months).
    pub fn set_creation_timestamp(
        &self,
        def: &ResourceDef,
        key: &Key,
        timestamp: &str,
    ) -> Result<Value, ApiError> {
        let mut inner = lock(&self.inner);
        let object = inner
            .objects
            .get_mut(key)
            .ok_or_else(|| ApiError::not_found(def, &key.name))?;
        object["metadata"]["creationTimestamp"] = json!(timestamp);
        Ok(object.clone())
    }

    /// Deletes an object and returns it.
    pub fn delete(&self, def: &ResourceDef, key: &Key) -> Result<Value, ApiError> {
        self.delete_if(def, key, None, None)
    }

    /// Deletes an object if its resourceVersion and uid match the preconditions given (409
    /// otherwise, and nothing changes).
    pub fn delete_if(
        &self,
        def: &ResourceDef,
        key: &Key,
        resource_version: Option<&str>,
        uid: Option<&str>,
    ) -> Result<Value, ApiError> {
        let mut inner = lock(&self.inner);
        let current = inner
            .objects
            .get(key)
            .ok_or_else(|| ApiError::not_found(def, &key.name))?;
        let stale = |field: &str, wanted: Option<&str>| {
            wanted.is_some_and(|w| current["metadata"][field].as_str() != Some(w))
        };
        if stale("resourceVersion", resource_version) || stale("uid", uid) {
            return Err(ApiError::conflict(def, &key.name));
        }
        let mut old = inner
            .objects
            .remove(key)
            .ok_or_else(|| ApiError::not_found(def, &key.name))?;
        inner.rv += 1;
        old["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
        inner.record(EventType::Deleted, key.clone(), old.clone(), &self.events);
        Ok(old)
    }

    /// Live events, and the history after `since` to replay first; `Err` when `since` is older
    /// than the history kept (the client must list again: 410 Gone).
    pub fn watch_from(
        &self,
        since: u64,
    ) -> Result<(Vec<Event>, broadcast::Receiver<Event>), ApiError> {
        let inner = lock(&self.inner);
        let receiver = self.events.subscribe();
        if let Some(first) = inner.history.front()
            && since + 1 < first.rv
            && inner.history.len() == HISTORY
        {
            return Err(ApiError::gone(since));
        }
        let replay = inner
            .history
            .iter()
            .filter(|e| e.rv > since)
            .cloned()
            .collect();
        Ok((replay, receiver))
    }

    /// The current objects of a resource as `ADDED` events, live events after them, and the
    /// resourceVersion they were taken at; atomically, so nothing falls between.
    pub fn snapshot_and_subscribe(
        &self,
        def: &ResourceDef,
    ) -> (Vec<Event>, broadcast::Receiver<Event>, u64) {
        let inner = lock(&self.inner);
        let receiver = self.events.subscribe();
        let events = inner
            .objects
            .iter()
            .filter(|(k, _)| k.group == def.group && k.plural == def.plural)
            .map(|(k, v)| Event {
                rv: inner.rv,
                kind: EventType::Added,
                key: k.clone(),
                object: v.clone(),
            })
            .collect();
        (events, receiver, inner.rv)
    }

    /// Live events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }
}

/// RFC 1123 subdomain: lower-case alphanumerics, '-' and '.', at most 253 characters.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
}
