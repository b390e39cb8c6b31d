//! Reading routes from the cluster and setting their timeout annotation.

use kube::api::{Api, ListParams, Patch, PatchParams};
use serde::Serialize;

use crate::audit::{Finding, Policy, Status};
use crate::route::Route;
use crate::timeout::Timeout;
use crate::{Error, Result};

/// Which routes of the namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every route.
    All,
    /// Routes matching a label selector (`app=litellm-backend`).
    Labels(String),
    /// These routes, each of which must exist.
    Names(Vec<String>),
}

/// One annotation change made (or, in a dry run, to be made) by [`Routes::apply`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// Route name.
    pub name: String,
    /// The annotation set.
    pub annotation: &'static str,
    /// Its value before, if it had one.
    pub before: Option<String>,
    /// Its value after (always with an explicit unit).
    pub after: String,
    /// The timeout the router used before.
    pub effective_before: Timeout,
    /// The timeout it uses after.
    pub effective_after: Timeout,
    /// Why the route was out of policy.
    pub reason: Status,
    /// Whether it was written (false in a dry run).
    pub applied: bool,
}

/// The routes of one namespace.
#[derive(Debug, Clone)]
pub struct Routes {
    api: Api<Route>,
    namespace: String,
}

/// How many times a patch is retried when the route changed since it was read.
const ATTEMPTS: usize = 5;

impl Routes {
    /// Routes in `namespace`.
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
        }
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The selected routes, sorted by name (with [`Selection::Names`]: in the order given,
    /// each once).
    ///
    /// # Errors
    /// [`Error::NoRouteApi`] on a cluster without OpenShift routes, [`Error::NotFound`] for a
    /// named route that does not exist, [`Error::Kube`] when the API fails (RBAC: `list` and
    /// `get` on `routes.route.openshift.io`).
    pub async fn list(&self, selection: &Selection) -> Result<Vec<Route>> {
        match selection {
            Selection::Names(names) => {
                let mut routes: Vec<Route> = Vec::new();
                for name in names {
                    if routes.iter().any(|r| r.name() == name) {
                        continue;
                    }
                    routes.push(self.get(name).await?);
                }
                Ok(routes)
            }
            Selection::All | Selection::Labels(_) => {
                let mut params = ListParams::default();
                if let Selection::Labels(selector) = selection {
                    params = params.labels(selector);
                }
                let list = self.api.list(&params).await.map_err(|e| {
                    self.error(
                        e,
                        match selection {
                            Selection::Labels(s) => format!("listing the Routes matching {s}"),
                            _ => "listing the Routes".into(),
                        },
                    )
                })?;
                let mut routes = list.items;
                routes.sort_by(|a, b| a.name().cmp(b.name()));
                Ok(routes)
            }
        }
    }

    async fn get(&self, name: &str) -> Result<Route> {
        match self.api.get(name).await {
            Err(kube::Error::Api(status)) if status.code == 404 && status.reason == "NotFound" => {
                // A 404 for the resource type itself also says NotFound: tell them apart.
                match self.api.list(&ListParams::default().limit(1)).await {
                    Err(e) => Err(self.error(e, format!("reading Route {name}"))),
                    Ok(_) => Err(Error::NotFound {
                        namespace: self.namespace.clone(),
                        name: name.to_owned(),
                    }),
                }
            }
            other => other.map_err(|e| self.error(e, format!("reading Route {name}"))),
        }
    }

    fn error(&self, source: kube::Error, doing: String) -> Error {
        match &source {
            kube::Error::Api(status) if status.code == 404 => Error::NoRouteApi {
                namespace: self.namespace.clone(),
            },
            _ => Error::Kube {
                context: format!("{doing} in namespace {}", self.namespace),
                source: source.into(),
            },
        }
    }

    /// Sets the desired timeout on every route out of policy (see [`audit`](crate::audit())),
    /// with a JSON merge patch of `metadata.annotations` only, carrying the resourceVersion
    /// read so that a route changed meanwhile is read again and judged anew rather than
    /// overwritten. Routes in policy are left alone (a timeout above the desired one is never
    /// lowered), so a second run changes nothing. `dry_run` changes nothing and returns the
    /// changes it would make.
    ///
    /// # Errors
    /// [`Error::Patch`] names the route that failed and those already changed.
    pub async fn apply(
        &self,
        routes: &[Route],
        policy: &Policy,
        dry_run: bool,
    ) -> Result<Vec<Change>> {
        let mut changes = Vec::new();
        for route in routes {
            let finding = Finding::of(route, policy);
            if finding.in_policy {
                continue;
            }
            if dry_run {
                changes.push(change(&finding, false));
                continue;
            }
            let changed = || changes.iter().map(|c: &Change| c.name.clone()).collect();
            match self.patch(finding, policy).await {
                Ok(Some(done)) => changes.push(done),
                Ok(None) => {}
                Err(None) => {
                    return Err(Error::KeptChanging {
                        namespace: self.namespace.clone(),
                        name: route.name().to_owned(),
                        attempts: ATTEMPTS,
                        changed: changed(),
                    });
                }
                Err(Some(source)) => {
                    return Err(Error::Patch {
                        namespace: self.namespace.clone(),
                        name: route.name().to_owned(),
                        changed: changed(),
                        source: source.into(),
                    });
                }
            }
        }
        Ok(changes)
    }

    /// Patches one route, reading it again after a conflict; `Ok(None)` when it turned out to be
    /// in policy after all (changed by someone else), `Err(None)` after [`ATTEMPTS`] conflicts.
    async fn patch(
        &self,
        mut finding: Finding,
        policy: &Policy,
    ) -> Result<Option<Change>, Option<kube::Error>> {
        for _ in 0..ATTEMPTS {
            let patch = serde_json::json!({
                "metadata": {
                    "resourceVersion": finding.resource_version,
                    "annotations": {finding.annotation: finding.desired.annotation_value()},
                }
            });
            match self
                .api
                .patch(
                    &finding.name,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => {
                    tracing::info!(
                        namespace = %self.namespace, route = %finding.name,
                        "{}: {:?} -> {}", finding.annotation, finding.value, finding.desired
                    );
                    return Ok(Some(change(&finding, true)));
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    tracing::info!(route = %finding.name, "changed since read: reading it again");
                    finding =
                        Finding::of(&self.api.get(&finding.name).await.map_err(Some)?, policy);
                    if finding.in_policy {
                        return Ok(None);
                    }
                }
                Err(e) => return Err(Some(e)),
            }
        }
        Err(None)
    }
}

fn change(finding: &Finding, applied: bool) -> Change {
    Change {
        name: finding.name.clone(),
        annotation: finding.annotation,
        before: finding.value.clone(),
        after: finding.desired.annotation_value(),
        effective_before: finding.effective,
        effective_after: finding.desired,
        reason: finding.status,
        applied,
    }
}
