//! One backup, restore or prune at a time per namespace, even from two hosts: a
//! `coordination.k8s.io` Lease that `litemaas-backup`, `litemaas-restore` and `litemaas-prune`
//! take with `--namespace`.
//!
//! The rules are client-go's leader election, applied to a run:
//! - **Taking it.** A Lease that looks live by the holder's own `renewTime` is refused at once,
//!   naming the holder. One that looks expired (or whose time is far in the future) is not
//!   trusted on another host's clock: it is watched, and taken over only when this process has
//!   seen it unchanged for a whole lease duration. A holder that renews meanwhile keeps it. Every
//!   write carries the resourceVersion read before it, so two takers race safely.
//! - **Keeping it.** The holder renews every third of the duration with a precondition (the
//!   resourceVersion it read, after checking that it is still the holder), never a blind patch.
//!   When another holder took over, the Lease was deleted, or no renewal succeeded for two thirds
//!   of the duration (before anyone else may judge it expired), the lease is *lost*: the token
//!   given to [`LeaseLock::acquire`] is cancelled so that the run stops and deletes nothing, and
//!   [`LeaseGuard::lost`] says why.
//! - **Releasing it.** [`LeaseGuard::release`] stops the renewer and waits for it, then deletes
//!   the Lease with a precondition, only if it is still ours.
//!
//! ```no_run
//! # async fn run(client: kube::Client) -> Result<(), litemaas_backup::lock::LockError> {
//! use litemaas_backup::lock::LeaseLock;
//! use tokio_util::sync::CancellationToken;
//!
//! let stop = CancellationToken::new();
//! let guard = LeaseLock::new(client, "litemaas", "litemaas-backup")
//!     .acquire(&stop)
//!     .await?;
//! // ... work, checking `stop` ...
//! if let Some(lost) = guard.lost() {
//!     eprintln!("{lost}");
//! }
//! guard.release().await;
//! # Ok(())
//! # }
//! ```

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long a Lease lives without renewal unless told otherwise: a crashed run blocks the next
/// one for at most this long.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(120);

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another run holds it.
    #[error(
        "a backup or restore is already running in namespace {namespace}: Lease {name} is held by {holder} ({renewed})"
    )]
    Held {
        /// Namespace.
        namespace: String,
        /// Lease name.
        name: String,
        /// Its holder.
        holder: String,
        /// When it was last renewed, as far as this process can tell.
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

/// Why a held lease was lost.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseLost {
    /// Another run holds it now.
    #[error("lost the lease {lease} to {holder}")]
    TakenOver {
        /// `namespace/name`.
        lease: String,
        /// The new holder.
        holder: String,
    },
    /// Someone deleted it.
    #[error("lost the lease {lease}: it was deleted by someone else")]
    Deleted {
        /// `namespace/name`.
        lease: String,
    },
    /// No renewal succeeded in time; another run may take it over.
    #[error("lost the lease {lease}: no renewal succeeded for {seconds} s (last error: {error})")]
    NotRenewed {
        /// `namespace/name`.
        lease: String,
        /// Seconds since the last successful renewal.
        seconds: u64,
        /// The last renewal's error.
        error: String,
    },
}

/// A Lease to take: which, for whom, how long it lives without renewal.
#[derive(Debug, Clone)]
pub struct LeaseLock {
    api: Api<Lease>,
    namespace: String,
    name: String,
    holder: String,
    duration: Duration,
}

/// A held lease; renewed in the background until [`release`](LeaseGuard::release)d.
#[derive(Debug)]
pub struct LeaseGuard {
    lock: LeaseLock,
    lost: Arc<Mutex<Option<LeaseLost>>>,
    stop: CancellationToken,
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

fn holder_of(lease: &Lease) -> String {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .unwrap_or_default()
}

fn version_of(lease: &Lease) -> Option<String> {
    lease.metadata.resource_version.clone()
}

/// What one renewal attempt learned.
enum Renewal {
    Renewed,
    Lost(LeaseLost),
    Failed(String),
}

impl LeaseLock {
    /// The Lease `name` in `namespace`, for this process ([`holder_identity`]), living
    /// [`DEFAULT_DURATION`] without renewal.
    pub fn new(client: kube::Client, namespace: &str, name: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            holder: holder_identity(),
            duration: DEFAULT_DURATION,
        }
    }

    /// Who takes it (default `<hostname>-<pid>`).
    #[must_use]
    pub fn holder(mut self, holder: impl Into<String>) -> Self {
        self.holder = holder.into();
        self
    }

    /// How long it lives without renewal (at least one second).
    #[must_use]
    pub fn duration(mut self, duration: Duration) -> Self {
        self.duration = duration.max(Duration::from_secs(1));
        self
    }

    fn seconds(&self) -> i32 {
        i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX)
    }

    fn lease_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn kube(&self, doing: &str) -> impl FnOnce(kube::Error) -> LockError {
        let context = format!("{doing} Lease {}", self.lease_name());
        move |source| LockError::Kube { context, source }
    }

    fn held(&self, holder: String, renewed: String) -> LockError {
        LockError::Held {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            holder,
            renewed,
        }
    }

    fn spec(&self, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.holder.clone()),
            lease_duration_seconds: Some(self.seconds()),
            acquire_time: Some(now()),
            renew_time: Some(now()),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Takes the lease, or fails saying who holds it. While it is held, `on_loss` is cancelled
    /// if the lease is lost (see the module documentation).
    ///
    /// # Errors
    /// [`LockError::Held`] when another live run holds it; [`LockError::Kube`] when the API
    /// fails.
    pub async fn acquire(&self, on_loss: &CancellationToken) -> Result<LeaseGuard, LockError> {
        let mut lease = Lease::default();
        lease.metadata.name = Some(self.name.clone());
        lease.spec = Some(self.spec(0));
        // A few rounds: the Lease may disappear or change between our reads.
        for _ in 0..5 {
            match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => return Ok(self.held_by_us(on_loss)),
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(e) => return Err(self.kube("creating")(e)),
            }
            let Some(current) = self
                .api
                .get_opt(&self.name)
                .await
                .map_err(self.kube("reading"))?
            else {
                continue; // released just now
            };
            if let Some(current) = self.judge(current).await? {
                let spec = current.spec.clone().unwrap_or_default();
                let mut taken = current.clone();
                taken.spec = Some(self.spec(spec.lease_transitions.unwrap_or(0) + 1));
                match self
                    .api
                    .replace(&self.name, &PostParams::default(), &taken)
                    .await
                {
                    Ok(_) => {
                        tracing::warn!(
                            lease = self.lease_name(),
                            previous = holder_of(&current),
                            "took over a backup lease nobody renewed for its whole duration"
                        );
                        return Ok(self.held_by_us(on_loss));
                    }
                    Err(kube::Error::Api(status)) if status.code == 409 => {
                        return Err(self.held(
                            "another run that took it over just now".into(),
                            "taken over as we tried to".into(),
                        ));
                    }
                    Err(e) => return Err(self.kube("taking over")(e)),
                }
            }
        }
        Err(self.held(
            "runs that keep creating and releasing it".into(),
            "changing as we read it".into(),
        ))
    }

    /// `Some(lease)` when `current` may be taken over (free, or seen unchanged for a whole
    /// duration); `Ok(None)` when it vanished; `Err(Held)` when it is live.
    async fn judge(&self, current: Lease) -> Result<Option<Lease>, LockError> {
        let spec = current.spec.clone().unwrap_or_default();
        let holder = holder_of(&current);
        if holder.is_empty() {
            return Ok(Some(current));
        }
        let lifetime = Duration::from_secs(
            u64::try_from(spec.lease_duration_seconds.unwrap_or(self.seconds()).max(1))
                .unwrap_or(1),
        );
        let renewed = spec.renew_time.as_ref().map(|t| t.0);
        let age = renewed.map(|r| jiff::Timestamp::now().duration_since(r));
        let window = jiff::SignedDuration::try_from(lifetime).unwrap_or(jiff::SignedDuration::MAX);
        // Looks live by the holder's clock (and that clock is not absurdly ahead): refuse now.
        if let Some(age) = age
            && age <= window
            && age >= -window
        {
            return Err(self.held(holder, format!("renewed {} ago", fmt_age(age))));
        }
        // Looks expired, but that is another host's clock: watch it for a whole duration.
        tracing::warn!(
            lease = self.lease_name(),
            holder,
            renewed = renewed.map_or_else(|| "never".into(), |r| r.to_string()),
            "the backup lease looks expired by its holder's clock; watching it for {} s before taking it over",
            lifetime.as_secs()
        );
        let seen = version_of(&current);
        let until = Instant::now() + lifetime;
        let poll = (lifetime / 10).clamp(Duration::from_millis(50), Duration::from_secs(2));
        while Instant::now() < until {
            tokio::time::sleep(poll.min(until - Instant::now())).await;
            let Some(now) = self
                .api
                .get_opt(&self.name)
                .await
                .map_err(self.kube("reading"))?
            else {
                return Ok(None);
            };
            if version_of(&now) != seen {
                let holder = holder_of(&now);
                if holder.is_empty() {
                    return Ok(Some(now));
                }
                return Err(self.held(holder, "renewed while we watched it".into()));
            }
        }
        Ok(Some(current))
    }

    fn held_by_us(&self, on_loss: &CancellationToken) -> LeaseGuard {
        tracing::info!(
            lease = self.lease_name(),
            holder = self.holder,
            "backup lease taken"
        );
        let lost = Arc::new(Mutex::new(None));
        let stop = CancellationToken::new();
        let renewer = tokio::spawn(renew(
            self.clone(),
            lost.clone(),
            stop.clone(),
            on_loss.clone(),
        ));
        LeaseGuard {
            lock: self.clone(),
            lost,
            stop,
            renewer,
        }
    }

    /// One renewal: still ours? then a write conditional on what was read.
    async fn renew_once(&self) -> Renewal {
        let current = match self.api.get_opt(&self.name).await {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                return Renewal::Lost(LeaseLost::Deleted {
                    lease: self.lease_name(),
                });
            }
            Err(e) => return Renewal::Failed(e.to_string()),
        };
        let holder = holder_of(&current);
        if holder != self.holder {
            return Renewal::Lost(LeaseLost::TakenOver {
                lease: self.lease_name(),
                holder: if holder.is_empty() {
                    "nobody (it was released)".into()
                } else {
                    holder
                },
            });
        }
        let mut renewed = current;
        if let Some(spec) = renewed.spec.as_mut() {
            spec.renew_time = Some(now());
        }
        match self
            .api
            .replace(&self.name, &PostParams::default(), &renewed)
            .await
        {
            Ok(_) => Renewal::Renewed,
            Err(e) => Renewal::Failed(e.to_string()),
        }
    }
}

fn fmt_age(age: jiff::SignedDuration) -> String {
    let secs = age.as_secs();
    if secs < 0 {
        format!("{} s in the future by its holder's clock", -secs)
    } else {
        format!("{secs} s")
    }
}

/// The renewer: every third of the duration (sooner after a failure) until stopped or lost.
async fn renew(
    lock: LeaseLock,
    lost: Arc<Mutex<Option<LeaseLost>>>,
    stop: CancellationToken,
    on_loss: CancellationToken,
) {
    let period = lock.duration / 3;
    let retry = (lock.duration / 20).clamp(Duration::from_millis(50), Duration::from_secs(2));
    // Others judge the lease expired a whole duration after they last saw it change; stopping
    // at two thirds leaves the run a third to wind down first.
    let give_up = lock.duration * 2 / 3;
    let mut last_ok = Instant::now();
    let mut next = last_ok + period;
    let mut last_error;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep_until(next) => {}
        }
        let started = Instant::now();
        let deadline = last_ok + give_up;
        let outcome = if started >= deadline {
            None
        } else {
            tokio::time::timeout(deadline - started, lock.renew_once())
                .await
                .ok()
        };
        match outcome {
            Some(Renewal::Renewed) => {
                // The next renewal a period after this one started, however long it took.
                last_ok = started;
                next = started + period;
                continue;
            }
            Some(Renewal::Lost(why)) => {
                return declare_lost(&lost, &on_loss, why);
            }
            Some(Renewal::Failed(error)) => {
                tracing::warn!(
                    lease = lock.lease_name(),
                    error,
                    "could not renew the backup lease; retrying"
                );
                last_error = error;
            }
            None => last_error = "the API server did not answer in time".into(),
        }
        next = Instant::now() + retry;
        if Instant::now() >= deadline {
            let why = LeaseLost::NotRenewed {
                lease: lock.lease_name(),
                seconds: last_ok.elapsed().as_secs(),
                error: last_error,
            };
            return declare_lost(&lost, &on_loss, why);
        }
    }
}

fn declare_lost(lost: &Mutex<Option<LeaseLost>>, on_loss: &CancellationToken, why: LeaseLost) {
    tracing::error!("{why}; stopping the run");
    *lost.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
    on_loss.cancel();
}

impl LeaseGuard {
    /// Why the lease was lost, if it was (the token given to `acquire` is cancelled then).
    pub fn lost(&self) -> Option<LeaseLost> {
        self.lost.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Stops renewing (waiting for a renewal in flight), then deletes the lease if it is still
    /// ours, with a precondition so that a lease someone else took is never deleted.
    pub async fn release(self) {
        self.stop.cancel();
        let mut renewer = self.renewer;
        let waited = tokio::time::timeout(self.lock.duration, &mut renewer).await;
        if waited.is_err() {
            renewer.abort();
        }
        let lock = &self.lock;
        for _ in 0..5 {
            let current = match lock.api.get_opt(&lock.name).await {
                Ok(Some(lease)) => lease,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the backup lease to release it; it expires on its own");
                    return;
                }
            };
            let holder = holder_of(&current);
            if holder != lock.holder {
                tracing::warn!(
                    lease = lock.lease_name(),
                    holder,
                    "the backup lease was taken over while we held it; leaving it"
                );
                return;
            }
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    resource_version: version_of(&current),
                    uid: current.metadata.uid.clone(),
                }),
                ..DeleteParams::default()
            };
            match lock.api.delete(&lock.name, &params).await {
                Ok(_) => {
                    tracing::info!(lease = lock.lease_name(), "backup lease released");
                    return;
                }
                Err(kube::Error::Api(status)) if status.code == 409 => {} // changed: read again
                Err(kube::Error::Api(status)) if status.code == 404 => return,
                Err(kube::Error::Api(status)) => {
                    tracing::warn!(
                        error = %format!(
                            "{}: {} (HTTP {})",
                            status.message, status.reason, status.code
                        ),
                        "could not release the backup lease; it expires on its own"
                    );
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not release the backup lease; it expires on its own");
                    return;
                }
            }
        }
        tracing::warn!(
            "the backup lease kept changing while we released it; it expires on its own"
        );
    }
}
