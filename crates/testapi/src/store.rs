//! Object storage with the API's bookkeeping: uid, resourceVersion, creationTimestamp,
//! generateName, optimistic concurrency, finalizers (a delete only marks an object that has
//! some; it goes when the last is removed), the admission defaults of claims and volumes, an
//! event history for watches and an unbounded log of every change for tests.

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
    /// Every change since the start, in order (never trimmed).
    log: Vec<Event>,
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

impl Store {
    /// A copy of the objects, for a dry run: whatever is done to it is thrown away, and no
    /// watch or log sees it.
    pub fn scratch(&self) -> Store {
        let inner = lock(&self.inner);
        Store {
            inner: Mutex::new(Inner {
                objects: inner.objects.clone(),
                rv: inner.rv,
                seed: inner.seed,
                ..Inner::default()
            }),
            events: broadcast::channel(16).0,
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
        self.log.push(event.clone());
        let _ = tx.send(event);
    }
}

impl Inner {
    fn mark_deleted(
        &mut self,
        def: &ResourceDef,
        key: &Key,
        tx: &broadcast::Sender<Event>,
    ) -> Result<Value, ApiError> {
        let mut object = self
            .objects
            .get(key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(def, &key.name))?;
        if !object["metadata"]["deletionTimestamp"].is_null() {
            return Ok(object);
        }
        self.rv += 1;
        object["metadata"]["deletionTimestamp"] = json!(now());
        object["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.objects.insert(key.clone(), object.clone());
        self.record(EventType::Modified, key.clone(), object.clone(), tx);
        Ok(object)
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
        admit(&inner, def, &mut object);
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
    /// [`Part::Status`] changes nothing but the status. An update that changes nothing keeps the
    /// resourceVersion; one that removes the last finalizer of an object being deleted deletes it.
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
        let mut updated = match part {
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
                if !object["metadata"].is_object() {
                    object["metadata"] = json!({});
                }
                for field in [
                    "uid",
                    "creationTimestamp",
                    "namespace",
                    "name",
                    "generation",
                    "deletionTimestamp",
                    "deletionGracePeriodSeconds",
                ] {
                    copy_field(&old["metadata"], &mut object["metadata"], field);
                }
                if object.get("spec") != old.get("spec") {
                    let generation = old["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
                    object["metadata"]["generation"] = json!(generation);
                }
                validate_update(def, &key.name, &old, &object)?;
                object
            }
        };
        // The comparison ignores the resourceVersion the client sent (or left out).
        updated["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        if updated == old {
            return Ok(old); // no change, no new resourceVersion (as the real server does)
        }
        inner.rv += 1;
        updated["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
        let finalized =
            !updated["metadata"]["deletionTimestamp"].is_null() && finalizers(&updated).is_empty();
        if finalized {
            // The last finalizer is gone from an object being deleted: it goes now.
            inner.objects.remove(key);
            inner.record(
                EventType::Deleted,
                key.clone(),
                updated.clone(),
                &self.events,
            );
            return Ok(updated);
        }
        inner.objects.insert(key.clone(), updated.clone());
        inner.record(
            EventType::Modified,
            key.clone(),
            updated.clone(),
            &self.events,
        );
        Ok(updated)
    }

    /// Marks an object as being deleted (`deletionTimestamp`) without removing it, as a graceful
    /// deletion of a pod does; a no-op if it is marked already.
    pub fn mark_deleted(&self, def: &ResourceDef, key: &Key) -> Result<Value, ApiError> {
        lock(&self.inner).mark_deleted(def, key, &self.events)
    }

    /// Every change since the server started, in order.
    pub fn log(&self) -> Vec<Event> {
        lock(&self.inner).log.clone()
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
        if !finalizers(current).is_empty() {
            // Finalizers hold the object: it is only marked, and goes when the last is removed.
            return inner.mark_deleted(def, key, &self.events);
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

/// The finalizer the `StorageObjectInUseProtection` admission plugin puts on every claim.
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
/// The finalizer the `StorageObjectInUseProtection` admission plugin puts on every volume.
pub const PV_PROTECTION: &str = "kubernetes.io/pv-protection";

/// An object's finalizers.
pub fn finalizers(object: &Value) -> Vec<&str> {
    object["metadata"]["finalizers"]
        .as_array()
        .map(|f| f.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Sets `field` of `to` to `from`'s, or removes it when `from` has none.
fn copy_field(from: &Value, to: &mut Value, field: &str) {
    match (from.get(field), to.as_object_mut()) {
        (Some(v), Some(to)) => {
            to.insert(field.to_owned(), v.clone());
        }
        (None, Some(to)) => {
            to.remove(field);
        }
        _ => {}
    }
}

/// What admission plugins do to a new object: no client-set deletion marks; the storage
/// protection finalizers on claims and volumes; the default StorageClass for a claim that
/// names none (`DefaultStorageClass`).
fn admit(inner: &Inner, def: &ResourceDef, object: &mut Value) {
    if let Some(meta) = object["metadata"].as_object_mut() {
        meta.remove("deletionTimestamp");
        meta.remove("deletionGracePeriodSeconds");
    }
    let finalizer = match (def.group, def.plural) {
        ("", "persistentvolumeclaims") => PVC_PROTECTION,
        ("", "persistentvolumes") => PV_PROTECTION,
        _ => return,
    };
    if !finalizers(object).contains(&finalizer) {
        match object["metadata"]["finalizers"].as_array_mut() {
            Some(list) => list.push(json!(finalizer)),
            None => object["metadata"]["finalizers"] = json!([finalizer]),
        }
    }
    if def.plural == "persistentvolumeclaims" && object["spec"]["storageClassName"].is_null() {
        let classes = inner
            .objects
            .iter()
            .filter(|(k, _)| k.group == "storage.k8s.io" && k.plural == "storageclasses")
            .map(|(_, v)| v);
        if let Some(class) = crate::storage::default_class(classes) {
            object["spec"]["storageClassName"] = json!(class);
        }
    }
}

/// Validation of an update the real API server refuses.
fn validate_update(
    def: &ResourceDef,
    name: &str,
    old: &Value,
    new: &Value,
) -> Result<(), ApiError> {
    if !new["metadata"]["deletionTimestamp"].is_null() {
        let before = finalizers(old);
        let added: Vec<_> = finalizers(new)
            .into_iter()
            .filter(|f| !before.contains(f))
            .collect();
        if !added.is_empty() {
            return Err(ApiError::invalid(
                def,
                name,
                &format!(
                    "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"
                ),
            ));
        }
    }
    if (def.group, def.plural) == ("", "persistentvolumeclaims") {
        // Only the requests may change, the volume name once (binding), and a missing class
        // may be set while unbound (the retroactive default StorageClass).
        let mut before = old["spec"].clone();
        let mut after = new["spec"].clone();
        for spec in [&mut before, &mut after] {
            if let Some(resources) = spec["resources"].as_object_mut() {
                resources.remove("requests");
            }
            if let Some(spec) = spec.as_object_mut() {
                spec.remove("volumeAttributesClassName");
            }
        }
        let unbound = old["spec"]["volumeName"].as_str().unwrap_or("").is_empty();
        if unbound {
            copy_field(&after, &mut before, "volumeName");
            if old["spec"]["storageClassName"].is_null() {
                copy_field(&after, &mut before, "storageClassName");
            }
        }
        if before != after {
            return Err(ApiError::invalid(
                def,
                name,
                "spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
            ));
        }
    }
    Ok(())
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
