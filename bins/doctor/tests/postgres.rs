//! The doctor's pg_dump version check against a real PostgreSQL 15: on this host (the real
//! pg_dump, a fake old one, an unreachable server) and in the database "pod" of the test
//! Kubernetes API server, whose exec runs the command on this host.
#![allow(clippy::unwrap_used, dead_code)]

#[path = "../src/check.rs"]
mod check;
#[path = "../src/postgres.rs"]
mod postgres;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use check::{Check, Outcome};
use k8s_openapi::ByteString;
use litemaas_backup::dump::{PodTarget, Secret};
use litemaas_testapi::TestApiServer;
use litemaas_testkit::PgCluster;
use serde_json::json;

const NS: &str = "litemaas";

/// A directory with a `pg_dump` that says it is 13.2, and the real psql beside it.
fn fake_pg_dump() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("pg_dump");
    std::fs::write(&script, "#!/bin/sh\necho 'pg_dump (PostgreSQL) 13.2'\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink(
        PgCluster::shared().bin_dir().join("psql"),
        dir.path().join("psql"),
    )
    .unwrap();
    dir
}

fn no_secret(check: &Check) {
    let text = serde_json::to_string(check).unwrap();
    assert!(
        !text.contains(PgCluster::shared().password()),
        "password in {text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_real_pg_dump_passes_against_postgresql_15() {
    let pg = PgCluster::shared();
    let db = pg.create_database("doctor_pg_ok").unwrap();
    let url = Secret::new(pg.url(&db));
    let check = postgres::pg_dump_local(&pg.bin_dir().join("pg_dump"), Some(&url)).await;
    assert_eq!(check.outcome, Outcome::Pass, "{check:?}");
    assert!(
        check.detail.contains("pg_dump 15.") && check.detail.contains("server 15."),
        "{check:?}"
    );
    no_secret(&check);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pg_dump_13_against_server_15_fails_with_the_install_fix() {
    let pg = PgCluster::shared();
    let db = pg.create_database("doctor_pg_old").unwrap();
    let url = Secret::new(pg.url(&db));
    let fake = fake_pg_dump();
    let check = postgres::pg_dump_local(&fake.path().join("pg_dump"), Some(&url)).await;
    assert_eq!(check.outcome, Outcome::Fail, "{check:?}");
    assert!(
        check.detail.contains("pg_dump 13.2") && check.detail.contains("server 15."),
        "{check:?}"
    );
    let fix = check.fix.as_deref().unwrap();
    assert!(
        fix.contains("postgresql15") && fix.contains("postgresql-client-15"),
        "{fix}"
    );
    assert!(fix.contains("--pg-dump"), "{fix}");
    no_secret(&check);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_server_fails_naming_host_and_port() {
    let pg = PgCluster::shared();
    let port = litemaas_testkit::free_port().unwrap();
    let url = Secret::new(format!(
        "postgres://postgres:{}@127.0.0.1:{port}/litemaas",
        pg.password()
    ));
    let check = postgres::pg_dump_local(&pg.bin_dir().join("pg_dump"), Some(&url)).await;
    assert_eq!(check.outcome, Outcome::Fail, "{check:?}");
    assert!(
        check.detail.contains(&format!("127.0.0.1:{port}")),
        "{check:?}"
    );
    assert!(
        check
            .fix
            .as_deref()
            .unwrap()
            .contains(&format!("127.0.0.1:{port}")),
        "{check:?}"
    );
    no_secret(&check);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_pg_dump_fails_with_the_install_fix_for_the_servers_version() {
    let pg = PgCluster::shared();
    let db = pg.create_database("doctor_pg_missing").unwrap();
    let url = Secret::new(pg.url(&db));
    let fake = fake_pg_dump();
    let check = postgres::pg_dump_local(&fake.path().join("pg_dump-missing"), Some(&url)).await;
    assert_eq!(check.outcome, Outcome::Fail, "{check:?}");
    assert!(check.detail.contains("cannot run"), "{check:?}");
    assert!(
        check.fix.as_deref().unwrap().contains("postgresql15"),
        "{check:?}"
    );
}

/// A test API server with the LiteMaaS Secret and a Running database pod whose commands run
/// here with `path_first` (if any) before PostgreSQL 15's binaries on their PATH.
async fn cluster(db: &str, path_first: Option<&Path>) -> TestApiServer {
    let pg = PgCluster::shared();
    let api = TestApiServer::start().await.unwrap();
    api.create_namespace(NS).unwrap();
    let mut data = BTreeMap::new();
    for (k, v) in [
        ("username", "postgres"),
        ("password", pg.password()),
        ("database", db),
    ] {
        data.insert(k.to_owned(), ByteString(v.as_bytes().to_vec()));
    }
    let mut secret = k8s_openapi::api::core::v1::Secret::default();
    secret.metadata.name = Some("litemaas-db".into());
    secret.data = Some(data);
    api.create("", "secrets", NS, serde_json::to_value(&secret).unwrap())
        .unwrap();
    api.create(
        "",
        "pods",
        NS,
        json!({"metadata": {"name": "litellm-postgres-0", "labels": {"app": "litellm-postgres"}},
        "spec": {"containers": [{"name": "postgres"}]}, "status": {"phase": "Running"}}),
    )
    .unwrap();
    let mut path = format!(
        "{}:{}",
        pg.bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    if let Some(first) = path_first {
        path = format!("{}:{path}", first.display());
    }
    api.set_exec_env(
        NS,
        "litellm-postgres-0",
        vec![
            ("PGHOST".into(), "127.0.0.1".into()),
            ("PGPORT".into(), pg.port().to_string()),
            ("PATH".into(), path),
        ],
    );
    api
}

fn no_password_in_execs(api: &TestApiServer) {
    let execs = api.exec_log();
    assert!(!execs.is_empty());
    for exec in execs {
        let line = format!("{} {}", exec.command.join(" "), exec.request_uri);
        assert!(
            !line.contains(PgCluster::shared().password()),
            "password in an exec request: {line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn in_the_pod_pg_dump_15_passes() {
    let pg = PgCluster::shared();
    let db = pg.create_database("doctor_pod_ok").unwrap();
    let api = cluster(&db, None).await;
    let check =
        postgres::pg_dump_in_pod(api.client().await.unwrap(), &PodTarget::litemaas(NS)).await;
    assert_eq!(check.outcome, Outcome::Pass, "{check:?}");
    assert!(
        check.what.contains("litemaas/litellm-postgres-0")
            && check.detail.contains("pg_dump 15.")
            && check.detail.contains("server 15."),
        "{check:?}"
    );
    no_secret(&check);
    no_password_in_execs(&api);
}

#[tokio::test(flavor = "multi_thread")]
async fn in_the_pod_an_old_pg_dump_fails_with_the_image_fix() {
    let pg = PgCluster::shared();
    let db = pg.create_database("doctor_pod_old").unwrap();
    let fake = fake_pg_dump();
    let api = cluster(&db, Some(fake.path())).await;
    let check =
        postgres::pg_dump_in_pod(api.client().await.unwrap(), &PodTarget::litemaas(NS)).await;
    assert_eq!(check.outcome, Outcome::Fail, "{check:?}");
    assert!(
        check.detail.contains("pg_dump 13.2") && check.detail.contains("server 15."),
        "{check:?}"
    );
    assert!(
        check
            .fix
            .as_deref()
            .unwrap()
            .contains("image with pg_dump 15"),
        "{check:?}"
    );
    no_secret(&check);
    no_password_in_execs(&api);
}
