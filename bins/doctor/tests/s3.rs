//! The doctor's S3 checks against moto: each IAM action denied in turn by the fault proxy
//! (its own failing line, nothing else fails); a wrong region; a missing bucket; and the
//! credential chain in a child process with an environment of its own — environment keys, none
//! at all, and a fake EC2 instance metadata service (IMDSv2) that is healthy or in the state a
//! stop and start cures.
//!
//! The checks whose outcome depends on the process environment (the AWS credential chain reads
//! it) run in a child: this test binary again, with `LITEMAAS_DOCTOR_CHILD=1`, through the test
//! `child_runs_s3_checks`, which prints the lines as JSON.
#![allow(clippy::unwrap_used, dead_code)]

#[path = "../src/check.rs"]
mod check;
#[path = "../src/iam.rs"]
mod iam;
#[path = "../src/s3.rs"]
mod s3;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};

use check::{Check, Outcome};
use litemaas_backup::store::{ObjectStore, S3Store};
use litemaas_testkit::S3Server;
use litemaas_testkit::proxy::{Fault, FaultProxy, Nth, Op, Rule};
use s3::ids;

const PREFIX: &str = "litemaas-backups";

fn failing(checks: &[Check]) -> Vec<&Check> {
    checks
        .iter()
        .filter(|c| c.outcome == Outcome::Fail)
        .collect()
}

fn line<'a>(checks: &'a [Check], id: &str) -> &'a Check {
    checks
        .iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("no line {id} in {checks:#?}"))
}

/// What is left in the bucket: objects and open multipart uploads.
async fn leftovers(bucket: &str) -> (Vec<String>, Vec<String>) {
    let store = S3Store::new(S3Server::shared().client(), bucket);
    let objects = store.list("").await.unwrap();
    let uploads = store.list_pending_uploads("").await.unwrap();
    (
        objects.into_iter().map(|o| o.key).collect(),
        uploads.into_iter().map(|u| u.key).collect(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn every_s3_check_passes_and_leaves_nothing_behind() {
    let server = S3Server::shared();
    let bucket = server.new_bucket("doctor-ok").await.unwrap();
    let proxy = FaultProxy::start(server.endpoint()).unwrap();
    let s3 = S3Store::new(proxy.client(), &bucket);
    let checks = s3::bucket_checks(&s3, Some("us-east-1"), PREFIX).await;
    assert!(failing(&checks).is_empty(), "{checks:#?}");
    let ids: Vec<&str> = checks.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            ids::BUCKET,
            ids::REGION,
            ids::PUT,
            ids::LIST,
            ids::GET,
            ids::DELETE,
            ids::MULTIPART_CREATE,
            ids::MULTIPART_LIST,
            ids::MULTIPART_ABORT
        ]
    );
    assert!(
        checks.iter().all(|c| c.outcome == Outcome::Pass),
        "{checks:#?}"
    );
    assert_eq!(leftovers(&bucket).await, (vec![], vec![]));
    // The probe went under the prefix, named after this host and process.
    let put = proxy
        .log()
        .into_iter()
        .find(|s| s.op == Op::PutObject)
        .unwrap();
    assert!(
        put.path_and_query
            .contains(&format!("/{bucket}/{PREFIX}/.litemaas-doctor-"))
            && put
                .path_and_query
                .contains(&format!("-{}-", std::process::id())),
        "{put:?}"
    );
}

/// Each action the tool needs, denied alone: the proxy's operation, the line that must fail,
/// and the IAM action its fix must name.
const DENIED: [(Op, &str, &str); 7] = [
    (Op::PutObject, ids::PUT, "s3:PutObject"),
    (Op::ListObjectsV2, ids::LIST, "s3:ListBucket"),
    (Op::GetObject, ids::GET, "s3:GetObject"),
    (Op::DeleteObject, ids::DELETE, "s3:DeleteObject"),
    (
        Op::CreateMultipartUpload,
        ids::MULTIPART_CREATE,
        "s3:PutObject",
    ),
    (
        Op::ListMultipartUploads,
        ids::MULTIPART_LIST,
        "s3:ListBucketMultipartUploads",
    ),
    (
        Op::AbortMultipartUpload,
        ids::MULTIPART_ABORT,
        "s3:AbortMultipartUpload",
    ),
];

#[tokio::test(flavor = "multi_thread")]
async fn each_denied_action_fails_its_own_line_with_the_fix_and_nothing_else() {
    let server = S3Server::shared();
    for (op, id, action) in DENIED {
        let bucket = server.new_bucket("doctor-deny").await.unwrap();
        let proxy = FaultProxy::start(server.endpoint()).unwrap();
        proxy.add_rule(Rule::new(op, Nth::Every, Fault::Status(403)));
        let s3 = S3Store::new(proxy.client(), &bucket);
        let checks = s3::bucket_checks(&s3, Some("us-east-1"), PREFIX).await;
        let failed = failing(&checks);
        assert_eq!(
            failed.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
            [id],
            "denying {op:?}: {checks:#?}"
        );
        let fix = failed[0].fix.as_deref().unwrap();
        assert!(
            fix.contains(action) && fix.contains(&format!("--iam-policy {bucket}")),
            "denying {op:?}: {fix}"
        );
        assert!(failed[0].detail.contains("AccessDenied"), "{:?}", failed[0]);
        let (objects, uploads) = leftovers(&bucket).await;
        match op {
            Op::DeleteObject => {
                // Said, with the command that removes it.
                assert_eq!(objects.len(), 1, "{objects:?}");
                let url = format!("s3://{bucket}/{}", objects[0]);
                assert!(
                    failed[0].detail.contains("STILL THERE")
                        && failed[0].detail.contains(&format!("aws s3 rm {url}")),
                    "{:?}",
                    failed[0]
                );
                assert!(uploads.is_empty());
            }
            Op::AbortMultipartUpload => {
                assert_eq!(uploads.len(), 1, "{uploads:?}");
                let store = S3Store::new(server.client(), &bucket);
                let pending = store.list_pending_uploads("").await.unwrap();
                assert!(
                    failed[0].detail.contains("LEFT OPEN")
                        && failed[0].detail.contains(&pending[0].upload_id)
                        && failed[0].detail.contains("abort-multipart-upload"),
                    "{:?}",
                    failed[0]
                );
                assert!(objects.is_empty());
            }
            _ => assert_eq!((objects, uploads), (vec![], vec![]), "denying {op:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bucket_in_another_region_fails_the_region_line_naming_the_right_one() {
    let server = S3Server::shared();
    let bucket = litemaas_testkit::unique_name("doctor-region");
    let eu = aws_sdk_s3::Client::from_conf(
        server
            .client()
            .config()
            .to_builder()
            .region(aws_sdk_s3::config::Region::new("eu-west-1"))
            .build(),
    );
    eu.create_bucket()
        .bucket(&bucket)
        .create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::EuWest1)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let s3 = S3Store::new(server.client(), &bucket);
    let checks = s3::bucket_checks(&s3, Some("us-east-1"), PREFIX).await;
    let failed = failing(&checks);
    assert_eq!(failed.len(), 1, "{checks:#?}");
    assert_eq!(failed[0].id, ids::REGION);
    assert!(
        failed[0].detail.contains("eu-west-1") && failed[0].detail.contains("us-east-1"),
        "{:?}",
        failed[0]
    );
    assert!(
        failed[0]
            .fix
            .as_deref()
            .unwrap()
            .contains("--region eu-west-1")
    );
    // Nothing was tried with the wrong region.
    assert!(
        checks[2..].iter().all(|c| c.outcome == Outcome::Skipped),
        "{checks:#?}"
    );
    assert_eq!(leftovers(&bucket).await, (vec![], vec![]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_bucket_fails_one_line_and_skips_the_rest() {
    let server = S3Server::shared();
    let bucket = litemaas_testkit::unique_name("doctor-missing");
    let s3 = S3Store::new(server.client(), &bucket);
    let checks = s3::bucket_checks(&s3, Some("us-east-1"), PREFIX).await;
    assert_eq!(checks[0].id, ids::BUCKET);
    assert_eq!(checks[0].outcome, Outcome::Fail, "{checks:#?}");
    assert!(
        checks[0]
            .fix
            .as_deref()
            .unwrap()
            .contains(&format!("aws s3api create-bucket --bucket {bucket}")),
        "{:?}",
        checks[0]
    );
    assert!(
        checks[1..].iter().all(|c| c.outcome == Outcome::Skipped),
        "{checks:#?}"
    );
    assert_eq!(checks.len(), 9);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_directory_is_checked_without_a_trace() {
    let dir = tempfile::tempdir().unwrap();
    let checks = s3::local_checks(dir.path()).await;
    assert!(
        checks.iter().all(|c| c.outcome == Outcome::Pass),
        "{checks:#?}"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    // Not there yet: created by the first backup, in a writable parent.
    let later = dir.path().join("later/backups");
    let checks = s3::local_checks(&later).await;
    assert!(
        checks.iter().all(|c| c.outcome == Outcome::Pass),
        "{checks:#?}"
    );
    assert!(checks[0].detail.contains("does not exist yet"));
    assert!(!later.exists() && std::fs::read_dir(dir.path()).unwrap().count() == 0);
    // A file where the directory should be.
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let checks = s3::local_checks(&file).await;
    assert_eq!(checks[0].outcome, Outcome::Fail, "{checks:#?}");
    assert!(checks[0].fix.as_deref().unwrap().contains("--dest"));
}

// ---------------------------------------------------------------------------------------------
// The credential chain, in a child process.

#[derive(clap::Parser)]
struct ChildArgs {
    #[command(flatten)]
    store: litemaas_cli::StoreArgs,
}

const CHILD: &str = "LITEMAAS_DOCTOR_CHILD";
const MARK: &str = "DOCTOR-JSON:";

/// Not a test of its own: the child's entry point (does nothing unless `LITEMAAS_DOCTOR_CHILD`
/// is set). Reads the store flags from their environment variables (`LITEMAAS_BUCKET`, …).
#[test]
fn child_runs_s3_checks() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    use clap::Parser;
    let args = ChildArgs::parse_from(["litemaas-doctor"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let checks = runtime.block_on(s3::s3_checks(&args.store));
    println!("{MARK}{}", serde_json::to_string(&checks).unwrap());
}

/// Runs [`child_runs_s3_checks`] with only `env` (and PATH, HOME) in its environment.
fn run_child(env: &[(&str, String)], home: &std::path::Path) -> (Vec<Check>, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "child_runs_s3_checks",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env(CHILD, "1")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = stdout
        .lines()
        .find_map(|l| l.find(MARK).map(|at| &l[at + MARK.len()..]))
        .unwrap_or_else(|| panic!("no report from the child:\n{stdout}\n{stderr}"));
    let value: serde_json::Value = serde_json::from_str(json).unwrap();
    let checks = value
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Check {
            id: c["id"].as_str().unwrap().to_owned(),
            what: c["what"].as_str().unwrap().to_owned(),
            outcome: match c["outcome"].as_str().unwrap() {
                "pass" => Outcome::Pass,
                "fail" => Outcome::Fail,
                _ => Outcome::Skipped,
            },
            detail: c["detail"].as_str().unwrap().to_owned(),
            fix: c["fix"].as_str().map(str::to_owned),
        })
        .collect();
    (checks, format!("{stdout}\n{stderr}"))
}

/// An environment with no credentials anywhere: empty config and credentials files, no
/// instance metadata, the S3 test server as endpoint.
fn bare_env(home: &std::path::Path, bucket: &str) -> Vec<(&'static str, String)> {
    let empty = home.join("empty");
    std::fs::write(&empty, "").unwrap();
    vec![
        ("AWS_CONFIG_FILE", empty.display().to_string()),
        ("AWS_SHARED_CREDENTIALS_FILE", empty.display().to_string()),
        ("AWS_REGION", "us-east-1".into()),
        ("LITEMAAS_BUCKET", bucket.into()),
        (
            "LITEMAAS_ENDPOINT_URL",
            S3Server::shared().endpoint().into(),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_from_the_environment_are_named_and_masked() {
    let server = S3Server::shared();
    let bucket = server.new_bucket("doctor-env").await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut env = bare_env(home.path(), &bucket);
    env.push(("AWS_EC2_METADATA_DISABLED", "true".into()));
    env.push(("AWS_ACCESS_KEY_ID", "AKIADOCTORTEST12WXYZ".into()));
    env.push(("AWS_SECRET_ACCESS_KEY", "doctor-secret-never-shown".into()));
    let (checks, output) = run_child(&env, home.path());
    assert!(
        checks.iter().all(|c| c.outcome == Outcome::Pass),
        "{checks:#?}"
    );
    let credentials = line(&checks, ids::CREDENTIALS);
    assert!(
        credentials.detail.contains("environment") && credentials.detail.contains("AKIA…WXYZ"),
        "{credentials:?}"
    );
    assert!(!output.contains("doctor-secret-never-shown"), "{output}");
    assert!(!output.contains("AKIADOCTORTEST12WXYZ"), "{output}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_profile_is_named_with_its_file() {
    let server = S3Server::shared();
    let bucket = server.new_bucket("doctor-profile").await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut env = bare_env(home.path(), &bucket);
    let credentials = home.path().join("credentials");
    std::fs::write(
        &credentials,
        "[backup]\naws_access_key_id = AKIAPROFILETEST9876\naws_secret_access_key = profile-secret-never-shown\n",
    )
    .unwrap();
    env.retain(|(k, _)| *k != "AWS_SHARED_CREDENTIALS_FILE");
    env.push((
        "AWS_SHARED_CREDENTIALS_FILE",
        credentials.display().to_string(),
    ));
    env.push(("AWS_PROFILE", "backup".into()));
    env.push(("AWS_EC2_METADATA_DISABLED", "true".into()));
    let (checks, output) = run_child(&env, home.path());
    assert!(
        checks.iter().all(|c| c.outcome == Outcome::Pass),
        "{checks:#?}"
    );
    let line = line(&checks, ids::CREDENTIALS);
    assert!(
        line.detail.contains(&format!(
            "profile backup in {} (static keys)",
            credentials.display()
        )) && line.detail.contains("AKIA…9876"),
        "{line:?}"
    );
    assert!(!output.contains("profile-secret-never-shown"), "{output}");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_credentials_at_all_is_one_failing_line_with_the_fix() {
    let home = tempfile::tempdir().unwrap();
    let mut env = bare_env(home.path(), "doctor-no-credentials");
    env.push(("AWS_EC2_METADATA_DISABLED", "true".into()));
    let (checks, _) = run_child(&env, home.path());
    assert_eq!(checks[0].id, ids::CREDENTIALS);
    assert_eq!(checks[0].outcome, Outcome::Fail, "{checks:#?}");
    let fix = checks[0].fix.as_deref().unwrap();
    assert!(
        fix.contains("instance profile")
            && fix.contains("AWS_ACCESS_KEY_ID")
            && fix.contains("AWS_PROFILE"),
        "{fix}"
    );
    assert_eq!(checks.len(), 10, "{checks:#?}");
    assert!(
        checks[1..].iter().all(|c| c.outcome == Outcome::Skipped),
        "{checks:#?}"
    );
}

/// The requests a fake IMDS saw.
type Seen = Arc<Mutex<Vec<String>>>;

/// How the fake instance metadata service answers `iam/security-credentials/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Imds {
    /// Names the role and serves its credentials.
    Healthy,
    /// The instance profile is attached (`iam/info` says so) but the list is empty.
    Empty,
    /// Attached, but the list answers 404.
    NotFound,
    /// No instance profile at all: `iam/info` answers 404 too.
    NoProfile,
}

const ROLE: &str = "litemaas-backup-role";
const INSTANCE: &str = "i-0123456789abcdef0";
const IMDS_SECRET: &str = "imds-secret-never-shown";

/// A fake IMDSv2 on loopback: the token PUT, then GETs carrying the token. Returns its
/// endpoint and the requests it saw (`METHOD path token?`).
fn fake_imds(mode: Imds) -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            let (mut token, mut length) = (false, 0usize);
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
                    break;
                }
                let lower = header.to_ascii_lowercase();
                if lower.starts_with("x-aws-ec2-metadata-token:") {
                    token = lower.contains("fake-imds-token");
                }
                if let Some(n) = lower.strip_prefix("content-length:") {
                    length = n.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let mut parts = request.split_whitespace();
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            log.lock().unwrap().push(format!(
                "{method} {path} {}",
                if token { "token" } else { "no-token" }
            ));
            let credentials = format!(
                r#"{{"Code":"Success","LastUpdated":"2026-12-01T00:00:00Z","Type":"AWS-HMAC","AccessKeyId":"ASIAIMDSFAKE0000WXYZ","SecretAccessKey":"{IMDS_SECRET}","Token":"imds-session-token","Expiration":"2099-01-01T00:00:00Z"}}"#
            );
            let info = r#"{"Code":"Success","LastUpdated":"2026-12-01T00:00:00Z","InstanceProfileArn":"arn:aws:iam::123456789012:instance-profile/litemaas-bastion","InstanceProfileId":"AIPAEXAMPLE"}"#;
            let (status, body, ttl): (u16, String, bool) = match (method, path) {
                ("PUT", "/latest/api/token") => (200, "fake-imds-token".into(), true),
                (_, _) if !token => (401, String::new(), false),
                ("GET", "/latest/meta-data/instance-id") => (200, INSTANCE.into(), false),
                ("GET", "/latest/meta-data/iam/info") if mode != Imds::NoProfile => {
                    (200, info.into(), false)
                }
                ("GET", "/latest/meta-data/iam/security-credentials/") => match mode {
                    Imds::Healthy => (200, ROLE.into(), false),
                    Imds::Empty => (200, String::new(), false),
                    Imds::NotFound | Imds::NoProfile => (404, String::new(), false),
                },
                ("GET", p)
                    if mode == Imds::Healthy
                        && p == format!("/latest/meta-data/iam/security-credentials/{ROLE}") =>
                {
                    (200, credentials, false)
                }
                _ => (404, String::new(), false),
            };
            let reason = match status {
                200 => "OK",
                401 => "Unauthorized",
                _ => "Not Found",
            };
            let mut response = format!(
                "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nContent-Type: text/plain\r\nConnection: close\r\n",
                body.len()
            );
            if ttl {
                response.push_str("x-aws-ec2-metadata-token-ttl-seconds: 21600\r\n");
            }
            response.push_str("\r\n");
            response.push_str(&body);
            let _ = stream.write_all(response.as_bytes());
        }
    });
    (endpoint, seen)
}

fn imds_env(
    home: &std::path::Path,
    bucket: &str,
    mode: Imds,
) -> (Vec<(&'static str, String)>, Seen) {
    let (endpoint, seen) = fake_imds(mode);
    let mut env = bare_env(home, bucket);
    env.push(("AWS_EC2_METADATA_SERVICE_ENDPOINT", endpoint));
    (env, seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_healthy_instance_profile_is_named_by_its_role() {
    let server = S3Server::shared();
    let bucket = server.new_bucket("doctor-imds").await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let (env, seen) = imds_env(home.path(), &bucket, Imds::Healthy);
    let (checks, output) = run_child(&env, home.path());
    assert!(
        checks.iter().all(|c| c.outcome == Outcome::Pass),
        "{checks:#?}"
    );
    let line = line(&checks, ids::CREDENTIALS);
    assert!(
        line.detail.contains(&format!("instance profile {ROLE}"))
            && line.detail.contains("ASIA…WXYZ"),
        "{line:?}"
    );
    assert!(!output.contains(IMDS_SECRET), "{output}");
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|s| s.starts_with(&format!(
            "GET /latest/meta-data/iam/security-credentials/{ROLE} token"
        ))),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_profile_without_credentials_says_stop_and_start() {
    for mode in [Imds::Empty, Imds::NotFound] {
        let home = tempfile::tempdir().unwrap();
        let (env, _) = imds_env(home.path(), "doctor-imds-broken", mode);
        let (checks, _) = run_child(&env, home.path());
        let first = &checks[0];
        assert_eq!(first.id, ids::CREDENTIALS);
        assert_eq!(first.outcome, Outcome::Fail, "{mode:?}: {checks:#?}");
        assert!(
            first.detail.contains("instance-profile/litemaas-bastion")
                && first.detail.contains("no credentials"),
            "{mode:?}: {first:?}"
        );
        let fix = first.fix.as_deref().unwrap();
        assert!(
            fix.contains("STOP and START") && fix.contains("a reboot is not enough"),
            "{mode:?}: {fix}"
        );
        assert!(
            fix.contains(&format!("aws ec2 stop-instances --instance-ids {INSTANCE}"))
                && fix.contains(&format!(
                    "aws ec2 start-instances --instance-ids {INSTANCE}"
                )),
            "{mode:?}: {fix}"
        );
        assert!(
            checks[1..].iter().all(|c| c.outcome == Outcome::Skipped),
            "{mode:?}: {checks:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_without_a_profile_says_attach_one() {
    let home = tempfile::tempdir().unwrap();
    let (env, _) = imds_env(home.path(), "doctor-imds-none", Imds::NoProfile);
    let (checks, _) = run_child(&env, home.path());
    assert_eq!(checks[0].outcome, Outcome::Fail, "{checks:#?}");
    let fix = checks[0].fix.as_deref().unwrap();
    assert!(
        fix.contains(&format!(
            "associate-iam-instance-profile --instance-id {INSTANCE}"
        )) && fix.contains("a reboot is not enough"),
        "{fix}"
    );
}

// ---------------------------------------------------------------------------------------------
// The litemaas-doctor binary itself, without --namespace (S3 and the local pg_dump).

/// Runs `litemaas-doctor` with only `env` (and PATH, HOME) in its environment.
fn doctor(env: &[(&str, String)], home: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_litemaas-doctor"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_doctor_binary_passes_every_line_and_exits_0_when_all_is_well() {
    let server = S3Server::shared();
    let bucket = server.new_bucket("doctor-bin").await.unwrap();
    let pg = litemaas_testkit::PgCluster::shared();
    let db = pg.create_database("doctor_bin").unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut env: Vec<(&str, String)> = server.env();
    env.push(("LITEMAAS_BUCKET", bucket.clone()));
    env.push(("LITEMAAS_DATABASE_URL", pg.url(&db)));
    let pg_dump = pg.bin_dir().join("pg_dump");
    let out = doctor(
        &env,
        home.path(),
        &["--pg-dump", pg_dump.to_str().unwrap(), "--json"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let checks = report["checks"].as_array().unwrap();
    let ids: Vec<&str> = checks.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids.first(), Some(&ids::CREDENTIALS), "{ids:?}");
    assert_eq!(ids.last(), Some(&"postgres.pg_dump"), "{ids:?}");
    assert!(checks.iter().all(|c| c["outcome"] == "pass"), "{stdout}");
    assert!(!stdout.contains(pg.password()) && !stderr.contains(pg.password()));
    assert!(!stdout.contains(server.credentials().1));
    assert_eq!(leftovers(&bucket).await, (vec![], vec![]));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_doctor_binary_prints_the_stop_and_start_fix_and_exits_1() {
    let home = tempfile::tempdir().unwrap();
    let (mut env, _) = imds_env(home.path(), "doctor-bin-imds", Imds::Empty);
    env.push((
        "LITEMAAS_DATABASE_URL",
        "postgres://u@127.0.0.1:1/db".into(),
    ));
    let out = doctor(&env, home.path(), &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("FAIL [s3.credentials]"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        lines[at].contains("instance-profile/litemaas-bastion"),
        "{stdout}"
    );
    assert!(
        lines[at + 1].contains("fix:")
            && lines[at + 1].contains("STOP and START")
            && lines[at + 1].contains("a reboot is not enough"),
        "{stdout}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("SKIP") && l.contains("[s3.bucket]"))
            || lines
                .iter()
                .any(|l| l.contains("[s3.bucket]") && l.contains("not checked")),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_credential_process_profile_is_named_as_such() {
    use std::os::unix::fs::PermissionsExt;
    let server = S3Server::shared();
    let bucket = server.new_bucket("doctor-process").await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let script = home.path().join("creds.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\necho '{\"Version\": 1, \"AccessKeyId\": \"AKIAPROCESSTEST0WXYZ\", \"SecretAccessKey\": \"process-secret-never-shown\"}'\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = home.path().join("config");
    std::fs::write(
        &config,
        format!(
            "[profile proc]\ncredential_process = {}\n",
            script.display()
        ),
    )
    .unwrap();
    let mut env = bare_env(home.path(), &bucket);
    env.retain(|(k, _)| *k != "AWS_CONFIG_FILE");
    env.push(("AWS_CONFIG_FILE", config.display().to_string()));
    env.push(("AWS_PROFILE", "proc".into()));
    env.push(("AWS_EC2_METADATA_DISABLED", "true".into()));
    let (checks, output) = run_child(&env, home.path());
    assert!(
        checks.iter().all(|c| c.outcome == Outcome::Pass),
        "{checks:#?}"
    );
    let line = line(&checks, ids::CREDENTIALS);
    assert!(
        line.detail.contains(&format!(
            "profile proc in {} (credential_process)",
            config.display()
        )) && line.detail.contains("AKIA…WXYZ"),
        "{line:?}"
    );
    assert!(!output.contains("process-secret-never-shown"), "{output}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_head_bucket_fails_only_the_bucket_line() {
    // HeadBucket (and GetBucketLocation) are the proxy's `Other` requests; the probe's are not.
    let server = S3Server::shared();
    let bucket = server.new_bucket("doctor-head").await.unwrap();
    let proxy = FaultProxy::start(server.endpoint()).unwrap();
    proxy.add_rule(Rule::new(Op::Other, Nth::Every, Fault::Status(403)));
    let s3 = S3Store::new(proxy.client(), &bucket);
    let checks = s3::bucket_checks(&s3, Some("us-east-1"), PREFIX).await;
    let failed = failing(&checks);
    assert_eq!(
        failed.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        [ids::BUCKET],
        "{checks:#?}"
    );
    assert!(
        failed[0].fix.as_deref().unwrap().contains("s3:ListBucket"),
        "{:?}",
        failed[0]
    );
    assert!(
        checks.iter().filter(|c| c.outcome == Outcome::Pass).count() == 8,
        "{checks:#?}"
    );
    assert_eq!(leftovers(&bucket).await, (vec![], vec![]));
}
