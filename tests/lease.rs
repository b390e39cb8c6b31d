//! The Lease lock against the test API server: takeover only after watching a lease unchanged
//! for a whole duration (never on another host's clock), renewal under a slow API server, a
//! lease stolen or never renewed cancels the run, and release never races the renewer.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use litemaas_backup::lock::{LeaseLock, LeaseLost, LockError};
use litemaas_testapi::TestApiServer;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const NS: &str = "litemaas";
const NAME: &str = "litemaas-backup";

async fn server() -> TestApiServer {
    let api = TestApiServer::start().await.unwrap();
    api.create_namespace(NS).unwrap();
    api
}

async fn lock(api: &TestApiServer, holder: &str, seconds: u64) -> LeaseLock {
    LeaseLock::new(api.client().await.unwrap(), NS, NAME)
        .holder(holder)
        .duration(Duration::from_secs(seconds))
}

fn lease(api: &TestApiServer) -> Option<Value> {
    api.get("coordination.k8s.io", "leases", NS, NAME).ok()
}

fn holder(api: &TestApiServer) -> Option<String> {
    lease(api).and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
}

/// A Lease another host wrote, renewed at `renewed` by that host's clock.
fn foreign_lease(api: &TestApiServer, holder: &str, renewed: jiff::Timestamp, seconds: i64) {
    let time = renewed.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    api.create(
        "coordination.k8s.io",
        "leases",
        NS,
        json!({"metadata": {"name": NAME}, "spec": {"holderIdentity": holder,
            "leaseDurationSeconds": seconds, "acquireTime": time, "renewTime": time, "leaseTransitions": 0}}),
    )
    .unwrap();
}

/// Writes the lease the way another holder renewing it would (a new resourceVersion).
fn renew_as(api: &TestApiServer, holder: &str, renewed: jiff::Timestamp) {
    let mut current = lease(api).unwrap();
    current["spec"]["holderIdentity"] = json!(holder);
    current["spec"]["renewTime"] = json!(renewed.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string());
    api.replace("coordination.k8s.io", "leases", NS, NAME, current)
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lease_that_looks_expired_is_taken_over_only_after_a_whole_duration_unchanged() {
    // One holder's clock says an hour ago, another's an hour ahead: neither is trusted.
    for (who, renewed) in [
        (
            "crashed-host-behind",
            jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1),
        ),
        (
            "crashed-host-ahead",
            jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1),
        ),
    ] {
        let api = server().await;
        foreign_lease(&api, who, renewed, 2);
        let started = Instant::now();
        let guard = lock(&api, "me", 2)
            .await
            .acquire(&CancellationToken::new())
            .await
            .unwrap();
        assert!(
            started.elapsed() >= Duration::from_secs(2),
            "{who}: taken over after {:?}, before watching it for its 2 s duration",
            started.elapsed()
        );
        let taken = lease(&api).unwrap();
        assert_eq!(taken["spec"]["holderIdentity"], "me", "{who}");
        assert_eq!(taken["spec"]["leaseTransitions"], 1, "{who}");
        guard.release().await;
        assert!(lease(&api).is_none(), "{who}: released");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_live_holder_whose_clock_is_behind_keeps_its_lease() {
    let api = server().await;
    // By this host's clock the holder last renewed an hour ago, yet it renews every 300 ms.
    let an_hour_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1);
    foreign_lease(&api, "live-host-slow-clock", an_hour_ago, 2);
    let stop = CancellationToken::new();
    let renewer = {
        let stop = stop.clone();
        let mut tick = 0;
        let api = &api;
        async move {
            while !stop.is_cancelled() {
                tokio::time::sleep(Duration::from_millis(300)).await;
                tick += 1;
                renew_as(
                    api,
                    "live-host-slow-clock",
                    an_hour_ago + jiff::SignedDuration::from_millis(300 * tick),
                );
            }
        }
    };
    let attempt = async {
        let result = lock(&api, "me", 2)
            .await
            .acquire(&CancellationToken::new())
            .await;
        stop.cancel();
        result
    };
    let (result, ()) = tokio::join!(attempt, renewer);
    match result {
        Err(LockError::Held { holder, .. }) => assert_eq!(holder, "live-host-slow-clock"),
        other => panic!("a live holder lost its lease: {other:?}"),
    }
    assert_eq!(holder(&api).as_deref(), Some("live-host-slow-clock"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fresh_lease_is_refused_at_once_naming_its_holder() {
    let api = server().await;
    foreign_lease(&api, "backup-on-bastion-42", jiff::Timestamp::now(), 120);
    let started = Instant::now();
    let err = lock(&api, "me", 120)
        .await
        .acquire(&CancellationToken::new())
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        err.to_string().contains("is held by backup-on-bastion-42"),
        "{err}"
    );
    assert_eq!(holder(&api).as_deref(), Some("backup-on-bastion-42"));
}

#[tokio::test(flavor = "multi_thread")]
async fn renewal_keeps_the_lease_under_a_slow_api_server() {
    let api = server().await;
    let run = CancellationToken::new();
    let guard = lock(&api, "me", 3).await.acquire(&run).await.unwrap();
    let first = lease(&api).unwrap()["spec"]["renewTime"].clone();
    // Each lease request takes 400 ms (a renewal is a read and a write): still well within
    // the two seconds the renewer allows itself.
    api.set_delay("leases", Duration::from_millis(400));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!run.is_cancelled(), "lost: {:?}", guard.lost());
    assert_eq!(guard.lost(), None);
    api.set_delay("leases", Duration::ZERO);
    let renewed = lease(&api).unwrap()["spec"]["renewTime"].clone();
    assert_ne!(first, renewed, "the lease was renewed meanwhile");
    guard.release().await;
    assert!(lease(&api).is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lease_that_cannot_be_renewed_in_time_is_lost_and_stops_the_run() {
    let api = server().await;
    let run = CancellationToken::new();
    let guard = lock(&api, "me", 3).await.acquire(&run).await.unwrap();
    // The API server stops answering lease requests in time.
    api.set_delay("leases", Duration::from_secs(10));
    tokio::time::timeout(Duration::from_secs(6), run.cancelled())
        .await
        .expect("the run is cancelled within the lease's duration");
    match guard.lost() {
        Some(LeaseLost::NotRenewed { seconds, .. }) => assert!(seconds <= 3, "{seconds}"),
        other => panic!("{other:?}"),
    }
    api.set_delay("leases", Duration::ZERO);
    guard.release().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stolen_lease_stops_the_run_and_is_left_to_its_new_holder() {
    let api = server().await;
    let run = CancellationToken::new();
    let guard = lock(&api, "me", 3).await.acquire(&run).await.unwrap();
    renew_as(&api, "thief-host-7", jiff::Timestamp::now());
    tokio::time::timeout(Duration::from_secs(3), run.cancelled())
        .await
        .expect("the run learns within a renewal period");
    let lost = guard.lost().unwrap();
    assert_eq!(
        lost.to_string(),
        "lost the lease litemaas/litemaas-backup to thief-host-7"
    );
    guard.release().await;
    assert_eq!(
        holder(&api).as_deref(),
        Some("thief-host-7"),
        "never deleted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn release_racing_renewal_always_frees_the_lease() {
    let api = server().await;
    // Renewals every third of a second; writes are slow (reads are not), so that a renewal is
    // often in flight, and lands, after the release read the lease: a release that does not
    // wait for the renewer then deletes with a stale resourceVersion.
    api.set_delays("leases", Duration::ZERO, Duration::from_millis(150));
    for round in 0..12_u64 {
        let run = CancellationToken::new();
        let guard = lock(&api, &format!("run-{round}"), 1)
            .await
            .acquire(&run)
            .await
            .unwrap_or_else(|e| panic!("round {round}: the previous release left the lease: {e}"));
        tokio::time::sleep(Duration::from_millis(200 + 37 * (round % 9))).await;
        guard.release().await;
        assert!(
            lease(&api).is_none(),
            "round {round}: the lease is still there"
        );
        assert!(!run.is_cancelled(), "round {round}");
    }
}
