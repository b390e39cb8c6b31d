//! The resource types the server knows, and the discovery documents built from them.

use serde_json::{Value, json};

/// One resource type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceDef {
    /// API group (`""` for core).
    pub group: &'static str,
    /// Version.
    pub version: &'static str,
    /// Plural name in URLs.
    pub plural: &'static str,
    /// Singular name.
    pub singular: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Has a `status` subresource.
    pub status: bool,
    /// Has a `scale` subresource.
    pub scale: bool,
    /// Short names (`po`, `vs`, …).
    pub short_names: &'static [&'static str],
}

const fn def(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
) -> ResourceDef {
    ResourceDef {
        group,
        version,
        plural,
        singular,
        kind,
        namespaced,
        status: false,
        scale: false,
        short_names: &[],
    }
}

impl ResourceDef {
    const fn with_status(self) -> Self {
        Self {
            status: true,
            ..self
        }
    }
    const fn with_scale(self) -> Self {
        Self {
            scale: true,
            ..self
        }
    }
    const fn short(self, short_names: &'static [&'static str]) -> Self {
        Self {
            short_names,
            ..self
        }
    }
}

/// Every resource type served.
pub static RESOURCES: &[ResourceDef] = &[
    def("", "v1", "namespaces", "namespace", "Namespace", false)
        .with_status()
        .short(&["ns"]),
    def("", "v1", "pods", "pod", "Pod", true)
        .with_status()
        .short(&["po"]),
    def("", "v1", "secrets", "secret", "Secret", true),
    def("", "v1", "configmaps", "configmap", "ConfigMap", true).short(&["cm"]),
    def(
        "",
        "v1",
        "persistentvolumeclaims",
        "persistentvolumeclaim",
        "PersistentVolumeClaim",
        true,
    )
    .with_status()
    .short(&["pvc"]),
    def(
        "",
        "v1",
        "persistentvolumes",
        "persistentvolume",
        "PersistentVolume",
        false,
    )
    .with_status()
    .short(&["pv"]),
    def("", "v1", "events", "event", "Event", true).short(&["ev"]),
    def(
        "",
        "v1",
        "serviceaccounts",
        "serviceaccount",
        "ServiceAccount",
        true,
    )
    .short(&["sa"]),
    def("", "v1", "services", "service", "Service", true)
        .with_status()
        .short(&["svc"]),
    def(
        "apps",
        "v1",
        "statefulsets",
        "statefulset",
        "StatefulSet",
        true,
    )
    .with_status()
    .with_scale()
    .short(&["sts"]),
    def(
        "apps",
        "v1",
        "deployments",
        "deployment",
        "Deployment",
        true,
    )
    .with_status()
    .with_scale()
    .short(&["deploy"]),
    def("batch", "v1", "cronjobs", "cronjob", "CronJob", true)
        .with_status()
        .short(&["cj"]),
    def("batch", "v1", "jobs", "job", "Job", true).with_status(),
    def(
        "rbac.authorization.k8s.io",
        "v1",
        "roles",
        "role",
        "Role",
        true,
    ),
    def(
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "rolebinding",
        "RoleBinding",
        true,
    ),
    def(
        "coordination.k8s.io",
        "v1",
        "leases",
        "lease",
        "Lease",
        true,
    ),
    def(
        "snapshot.storage.k8s.io",
        "v1",
        "volumesnapshots",
        "volumesnapshot",
        "VolumeSnapshot",
        true,
    )
    .with_status()
    .short(&["vs"]),
    def(
        "snapshot.storage.k8s.io",
        "v1",
        "volumesnapshotclasses",
        "volumesnapshotclass",
        "VolumeSnapshotClass",
        false,
    )
    .short(&["vsclass", "vsclasses"]),
    def(
        "snapshot.storage.k8s.io",
        "v1",
        "volumesnapshotcontents",
        "volumesnapshotcontent",
        "VolumeSnapshotContent",
        false,
    )
    .with_status()
    .short(&["vsc", "vscs"]),
    def(
        "storage.k8s.io",
        "v1",
        "storageclasses",
        "storageclass",
        "StorageClass",
        false,
    )
    .short(&["sc"]),
    def("route.openshift.io", "v1", "routes", "route", "Route", true).with_status(),
];

/// The definition for `group`/`version`/`plural`.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceDef> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

impl ResourceDef {
    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `pods` or `statefulsets.apps`, as Kubernetes names a resource in messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES.iter().filter(|r| !r.group.is_empty()) {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    for &(group, version, _, _) in crate::review::REVIEWS {
        if !out.contains(&(group, version)) {
            out.push((group, version));
        }
    }
    out
}

/// `GET /version`.
pub fn version() -> Value {
    json!({
        "major": "1", "minor": "32", "gitVersion": "v1.32.0-litemaas-testapi", "gitCommit": "0000000",
        "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.23",
        "compiler": "gc", "platform": "linux/amd64"
    })
}

/// `GET /api`.
pub fn core_versions() -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})
}

/// `GET /apis`.
pub fn api_groups() -> Value {
    let groups: Vec<Value> = groups()
        .into_iter()
        .map(|(g, v)| {
            let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
            json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /api/v1` or `GET /apis/<group>/<version>`, or `None` for an unknown group version.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let defs: Vec<_> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    let reviews: Vec<Value> = crate::review::REVIEWS
        .iter()
        .filter(|(g, v, _, _)| *g == group && *v == version)
        .map(|(_, _, plural, kind)| {
            json!({"name": plural, "singularName": "", "namespaced": false, "kind": kind, "verbs": ["create"]})
        })
        .collect();
    if defs.is_empty() && reviews.is_empty() {
        return None;
    }
    let mut resources = reviews;
    for r in &defs {
        resources.push(json!({
            "name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind,
            "verbs": VERBS, "shortNames": r.short_names,
        }));
        if r.status {
            resources.push(json!({"name": format!("{}/status", r.plural), "singularName": "", "namespaced": r.namespaced,
                "kind": r.kind, "verbs": ["get", "patch", "update"]}));
        }
        if r.scale {
            resources.push(json!({"name": format!("{}/scale", r.plural), "singularName": "", "namespaced": r.namespaced,
                "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}));
        }
        if r.plural == "pods" {
            resources.push(json!({"name": "pods/exec", "singularName": "", "namespaced": true, "kind": "PodExecOptions",
                "verbs": ["create", "get"]}));
        }
    }
    let group_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}),
    )
}
