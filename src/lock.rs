//! One backup or restore at a time per namespace, even from two hosts: a `coordination.k8s.io`
//! Lease that `litemaas-backup --namespace` and `litemaas-restore --namespace` both take.
//!
//! The holder renews the lease while it works; a lease whose holder stopped renewing (a crashed
//! run) expires after its duration and can be taken over.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use tokio::task::JoinHandle;

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another run holds it.
    #[error(
        "a backup or restore is already running in namespace {namespace}: Lease {name} is held by {holder} (renewed {renewed})"
    )]
    Held {
        /// Namespace.
        namespace: String,
        /// Lease name.
        name: String,
        /// Its holder.
        holder: String,
        /// When it was last renewed.
        renewed: String,
    },
    /// The API failed.
    #[error("{context}")]
    Kube {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
}

/// A held lease; renewed in the background until [`release`](LeaseGuard::release)d.
#[derive(Debug)]
pub struct LeaseGuard {
    api: Api<Lease>,
    name: String,
    holder: String,
    renewer: JoinHandle<()>,
}

fn now() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

/// `<hostname>-<pid>`: who holds the lease, for the message another run prints.
pub fn holder_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown-host".into());
    format!("{host}-{}", std::process::id())
}

/// Takes the lease `name` in `namespace` for `holder`, or fails saying who holds it.
///
/// # Errors
/// [`LockError::Held`] when another live run holds it.
pub async fn acquire(
    client: kube::Client,
    namespace: &str,
    name: &str,
    holder: &str,
    duration: Duration,
) -> Result<LeaseGuard, LockError> {
    let api: Api<Lease> = Api::namespaced(client, namespace);
    let kube = |context: String| move |source| LockError::Kube { context, source };
    let seconds = i32::try_from(duration.as_secs()).unwrap_or(i32::MAX).max(1);
    let mut lease = Lease::default();
    lease.metadata.name = Some(name.to_owned());
    lease.spec = Some(LeaseSpec {
        holder_identity: Some(holder.to_owned()),
        lease_duration_seconds: Some(seconds),
        acquire_time: Some(now()),
        renew_time: Some(now()),
        lease_transitions: Some(0),
        ..LeaseSpec::default()
    });
    match api.create(&PostParams::default(), &lease).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let current = api
                .get(name)
                .await
                .map_err(kube(format!("reading Lease {namespace}/{name}")))?;
            let spec = current.spec.clone().unwrap_or_default();
            let renewed = spec.renew_time.as_ref().map(|t| t.0);
            let lifetime = jiff::SignedDuration::from_secs(i64::from(
                spec.lease_duration_seconds.unwrap_or(seconds),
            ));
            let expired =
                renewed.is_none_or(|r| jiff::Timestamp::now().duration_since(r) > lifetime);
            let current_holder = spec.holder_identity.clone().unwrap_or_default();
            if !expired && !current_holder.is_empty() {
                return Err(LockError::Held {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                    holder: current_holder,
                    renewed: renewed.map_or_else(|| "never".into(), |r| r.to_string()),
                });
            }
            // Take over an expired lease; the resourceVersion makes two takers race safely.
            let mut taken = current.clone();
            taken.spec = Some(LeaseSpec {
                holder_identity: Some(holder.to_owned()),
                lease_duration_seconds: Some(seconds),
                acquire_time: Some(now()),
                renew_time: Some(now()),
                lease_transitions: Some(spec.lease_transitions.unwrap_or(0) + 1),
                ..LeaseSpec::default()
            });
            match api.replace(name, &PostParams::default(), &taken).await {
                Ok(_) => tracing::warn!(
                    namespace,
                    name,
                    previous = current_holder,
                    "took over an expired backup lease"
                ),
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    return Err(LockError::Held {
                        namespace: namespace.to_owned(),
                        name: name.to_owned(),
                        holder: "another run that took it just now".into(),
                        renewed: "now".into(),
                    });
                }
                Err(e) => return Err(kube(format!("taking over Lease {namespace}/{name}"))(e)),
            }
        }
        Err(e) => return Err(kube(format!("creating Lease {namespace}/{name}"))(e)),
    }
    tracing::info!(namespace, name, holder, "backup lease taken");
    let renewer = {
        let (api, name) = (api.clone(), name.to_owned());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(duration / 3).await;
                let patch = serde_json::json!({"spec": {"renewTime": now()}});
                if let Err(e) = api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                {
                    tracing::warn!(error = %e, "could not renew the backup lease");
                }
            }
        })
    };
    Ok(LeaseGuard {
        api,
        name: name.to_owned(),
        holder: holder.to_owned(),
        renewer,
    })
}

impl LeaseGuard {
    /// Stops renewing and deletes the lease if it is still ours.
    pub async fn release(self) {
        self.renewer.abort();
        match self.api.get_opt(&self.name).await {
            Ok(Some(lease))
                if lease
                    .spec
                    .as_ref()
                    .and_then(|s| s.holder_identity.as_deref())
                    == Some(self.holder.as_str()) =>
            {
                let params = DeleteParams {
                    preconditions: Some(Preconditions {
                        resource_version: lease.metadata.resource_version.clone(),
                        uid: None,
                    }),
                    ..DeleteParams::default()
                };
                if let Err(e) = self.api.delete(&self.name, &params).await {
                    tracing::warn!(error = %e, "could not release the backup lease; it expires on its own");
                }
            }
            Ok(_) => tracing::warn!("the backup lease was taken over while we held it"),
            Err(e) => {
                tracing::warn!(error = %e, "could not read the backup lease to release it; it expires on its own")
            }
        }
    }
}
