//! The S3 prerequisites, in order: credentials and where they came from; the bucket and its
//! region; a probe object under the prefix written, listed, read back and deleted; a multipart
//! upload started, listed and aborted (the permissions a failed backup's cleanup needs). Without
//! a bucket: the local backup directory instead.
//!
//! Nothing is changed but the probe object and the probe's multipart upload, both removed again;
//! a line says so when one cannot be, with the command that removes it.

use std::path::Path;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_credential_types::credential_feature::AwsCredentialFeature;
use aws_credential_types::provider::ProvideCredentials;
use aws_sdk_s3::config::Region;
use aws_sdk_s3::error::ProvideErrorMetadata;
use bytes::Bytes;
use futures::TryStreamExt;
use litemaas_backup::store::{
    Error as StoreError, Metadata, ObjectStore, PutMode, S3Options, S3Store, display_chain,
};
use litemaas_cli::StoreArgs;

use crate::check::Check;
use crate::iam::grant;

/// Line identifiers, in report order.
pub mod ids {
    /// Credentials found, and their source.
    pub const CREDENTIALS: &str = "s3.credentials";
    /// The bucket exists and answers.
    pub const BUCKET: &str = "s3.bucket";
    /// Requests are signed for the bucket's region.
    pub const REGION: &str = "s3.region";
    /// PutObject of the probe.
    pub const PUT: &str = "s3.probe.put";
    /// ListObjectsV2 under the prefix shows it.
    pub const LIST: &str = "s3.probe.list";
    /// GetObject returns the same bytes.
    pub const GET: &str = "s3.probe.get";
    /// DeleteObject removes it.
    pub const DELETE: &str = "s3.probe.delete";
    /// CreateMultipartUpload.
    pub const MULTIPART_CREATE: &str = "s3.multipart.create";
    /// ListMultipartUploads under the prefix shows it.
    pub const MULTIPART_LIST: &str = "s3.multipart.list";
    /// AbortMultipartUpload removes it.
    pub const MULTIPART_ABORT: &str = "s3.multipart.abort";
    /// The local directory exists (or can be created) and is writable.
    pub const LOCAL_DIRECTORY: &str = "local.directory";
    /// A probe file written, read back and removed.
    pub const LOCAL_PROBE: &str = "local.probe";
}

/// Every S3 check, in order (or the local directory's, without `--bucket`).
pub async fn s3_checks(store: &StoreArgs) -> Vec<Check> {
    let Some(bucket) = &store.bucket else {
        return local_checks(&store.dest).await;
    };
    let prefix = store.prefix();
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = &store.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(endpoint) = &store.endpoint_url {
        loader = loader.endpoint_url(endpoint.clone());
    }
    let sdk = loader.load().await;
    let credentials = credentials_check(&sdk, bucket, &prefix).await;
    if credentials.outcome != crate::check::Outcome::Pass {
        let mut out = vec![credentials];
        out.extend(skipped_after(
            ids::CREDENTIALS,
            bucket,
            &prefix,
            "no AWS credentials",
        ));
        return out;
    }
    let mut options = S3Options::new(bucket);
    options.region.clone_from(&store.region);
    options.endpoint_url.clone_from(&store.endpoint_url);
    options.force_path_style = store.path_style;
    options.checksums = !store.no_checksums;
    // A doctor answers quickly: one retry, not the backup's five.
    options.max_attempts = 2;
    let s3 = match S3Store::from_sdk_config(&sdk, &options) {
        Ok(s3) => s3,
        Err(e) => {
            let mut out = vec![
                credentials,
                Check::fail(
                    ids::REGION,
                    "AWS region known",
                    e.to_string(),
                    "pass --region REGION (or export LITEMAAS_REGION / AWS_REGION); the bucket's region is in the S3 console or `aws s3api get-bucket-location --bucket BUCKET`",
                ),
            ];
            out.extend(skipped_after(ids::REGION, bucket, &prefix, "no AWS region"));
            return out;
        }
    };
    let region = s3.client().config().region().map(|r| r.as_ref().to_owned());
    let mut out = vec![credentials];
    out.extend(bucket_checks(&s3, region.as_deref(), &prefix).await);
    out
}

/// What a line checks, in words (the same whether it ran or was skipped).
fn describe(id: &str, bucket: &str, prefix: &str) -> String {
    let under = if prefix.is_empty() {
        format!("s3://{bucket}/")
    } else {
        format!("s3://{bucket}/{prefix}/")
    };
    match id {
        ids::BUCKET => format!("bucket {bucket} reachable (HeadBucket, s3:ListBucket)"),
        ids::REGION => format!("requests signed for the region of bucket {bucket}"),
        ids::PUT => format!("write a probe object under {under} (s3:PutObject)"),
        ids::LIST => format!("list {under} (s3:ListBucket)"),
        ids::GET => "read the probe object back (s3:GetObject)".to_owned(),
        ids::DELETE => "delete the probe object (s3:DeleteObject)".to_owned(),
        ids::MULTIPART_CREATE => format!("start a multipart upload under {under} (s3:PutObject)"),
        ids::MULTIPART_LIST => {
            format!("list multipart uploads under {under} (s3:ListBucketMultipartUploads)")
        }
        ids::MULTIPART_ABORT => {
            "abort the probe's multipart upload (s3:AbortMultipartUpload)".to_owned()
        }
        other => other.to_owned(),
    }
}

/// The lines after `after` marked skipped because `because`.
fn skipped_after(after: &str, bucket: &str, prefix: &str, because: &str) -> Vec<Check> {
    let lines = [
        ids::BUCKET,
        ids::REGION,
        ids::PUT,
        ids::LIST,
        ids::GET,
        ids::DELETE,
        ids::MULTIPART_CREATE,
        ids::MULTIPART_LIST,
        ids::MULTIPART_ABORT,
    ];
    let start = lines
        .iter()
        .position(|id| *id == after)
        .map_or(0, |i| i + 1);
    lines[start..]
        .iter()
        .map(|id| Check::skipped(*id, describe(id, bucket, prefix), because))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Credentials

/// `AKIA…WXYZ`: enough to tell keys apart, as `aws configure list` shows them.
fn mask(key: &str) -> String {
    if key.len() > 8 && key.is_ascii() {
        format!("{}…{}", &key[..4], &key[key.len() - 4..])
    } else {
        "****".to_owned()
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The credentials of the standard chain (the one every command uses, in its order:
/// environment, profile — static keys, SSO, credential_process, assume role —, web identity,
/// ECS/container, EC2 instance profile), and which provider gave them.
async fn credentials_check(sdk: &aws_config::SdkConfig, bucket: &str, prefix: &str) -> Check {
    let what = "AWS credentials (environment, profile, web identity, container, instance profile)";
    let Some(provider) = sdk.credentials_provider() else {
        return Check::fail(
            ids::CREDENTIALS,
            what,
            "no credentials provider",
            no_credentials_fix(bucket, prefix),
        );
    };
    match provider.provide_credentials().await {
        Ok(credentials) => {
            let features = credentials
                .get_property::<Vec<AwsCredentialFeature>>()
                .cloned()
                .unwrap_or_default();
            let source = describe_source(&features).await;
            Check::pass(
                ids::CREDENTIALS,
                what,
                format!(
                    "from {source}; access key {}",
                    mask(credentials.access_key_id())
                ),
            )
        }
        Err(e) => {
            // The chain lists each provider's answer on a line of its own: one line here.
            let message = display_chain(&e)
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; ");
            match imds_diagnosis(bucket).await {
                Some((detail, fix)) => {
                    Check::fail(ids::CREDENTIALS, what, format!("{detail} ({message})"), fix)
                }
                None => Check::fail(
                    ids::CREDENTIALS,
                    what,
                    format!("none found: {message}"),
                    no_credentials_fix(bucket, prefix),
                ),
            }
        }
    }
}

fn no_credentials_fix(bucket: &str, prefix: &str) -> String {
    format!(
        "give this host credentials, one of: on an EC2 bastion, attach an IAM instance profile whose role has the policy of `litemaas-doctor --iam-policy {bucket}{}` (then STOP and START the instance, a reboot is not enough); or export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; or `aws configure --profile NAME` and export AWS_PROFILE=NAME",
        if prefix == "litemaas-backups" {
            String::new()
        } else {
            format!(" --prefix {prefix}")
        }
    )
}

/// Which provider of the chain answered, in words, from the features it recorded.
async fn describe_source(features: &[AwsCredentialFeature]) -> String {
    use AwsCredentialFeature as F;
    let has = |f: F| features.contains(&f);
    if has(F::CredentialsProfile) {
        let name = env("AWS_PROFILE").unwrap_or_else(|| "default".into());
        let kind = if has(F::CredentialsSso) || has(F::CredentialsProfileSso) {
            "SSO"
        } else if has(F::CredentialsProcess) || has(F::CredentialsProfileProcess) {
            "credential_process"
        } else if has(F::CredentialsProfileStsWebIdToken) {
            "web identity"
        } else if has(F::CredentialsStsAssumeRole) {
            "assume role"
        } else if has(F::CredentialsProfileLogin) {
            "console login"
        } else {
            "static keys"
        };
        let files = profile_files(&name);
        let from = if files.is_empty() {
            String::new()
        } else {
            format!(" in {}", files.join(" and "))
        };
        format!("profile {name}{from} ({kind})")
    } else if has(F::CredentialsProfileStsWebIdToken) || has(F::CredentialsStsAssumeRoleWebId) {
        format!(
            "web identity (role {}, token file {})",
            env("AWS_ROLE_ARN").unwrap_or_else(|| "?".into()),
            env("AWS_WEB_IDENTITY_TOKEN_FILE").unwrap_or_else(|| "?".into())
        )
    } else if has(F::CredentialsHttp) {
        let uri = env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
            .map(|u| format!("169.254.170.2{u}"))
            .or_else(|| env("AWS_CONTAINER_CREDENTIALS_FULL_URI"))
            .unwrap_or_else(|| "?".into());
        // The URI may carry a token in its query: show only scheme, host and path.
        let uri = uri.split('?').next().unwrap_or_default().to_owned();
        format!("ECS/container credentials endpoint {uri}")
    } else if has(F::CredentialsImds) {
        match imds_role().await {
            Some(role) => format!("instance profile {role} (EC2 instance metadata)"),
            None => "instance profile (EC2 instance metadata)".to_owned(),
        }
    } else if has(F::CredentialsEnvVars) {
        "environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)".to_owned()
    } else {
        "the AWS configuration chain".to_owned()
    }
}

/// The files holding a `[NAME]` / `[profile NAME]` section, as the SDK finds them.
fn profile_files(name: &str) -> Vec<String> {
    let home = env("HOME").unwrap_or_default();
    let config = env("AWS_CONFIG_FILE").unwrap_or_else(|| format!("{home}/.aws/config"));
    let credentials =
        env("AWS_SHARED_CREDENTIALS_FILE").unwrap_or_else(|| format!("{home}/.aws/credentials"));
    let mut found = Vec::new();
    for (path, config_file) in [(credentials, false), (config, true)] {
        let path = match path.strip_prefix("~/") {
            Some(rest) => format!("{home}/{rest}"),
            None => path,
        };
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let has = text.lines().any(|line| {
            let line = line.trim();
            let Some(inner) = line.strip_prefix('[').and_then(|l| l.split(']').next()) else {
                return false;
            };
            let words: Vec<&str> = inner.split_whitespace().collect();
            match words.as_slice() {
                [only] => *only == name && (!config_file || name == "default"),
                ["profile", n] => config_file && *n == name,
                _ => false,
            }
        });
        if has {
            found.push(path);
        }
    }
    found
}

/// An IMDS client that gives up quickly: a host that is not on EC2 answers nothing.
fn imds_client() -> Option<aws_config::imds::Client> {
    if env("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return None;
    }
    Some(
        aws_config::imds::Client::builder()
            .max_attempts(1)
            .connect_timeout(Duration::from_secs(1))
            .read_timeout(Duration::from_secs(2))
            .build(),
    )
}

/// The role name the instance metadata service gives credentials for.
async fn imds_role() -> Option<String> {
    let client = imds_client()?;
    let role = client
        .get("/latest/meta-data/iam/security-credentials/")
        .await
        .ok()?;
    let role = role
        .as_ref()
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    (!role.is_empty()).then_some(role)
}

/// On an EC2 instance, why its instance profile gives no credentials, and the fix.
async fn imds_diagnosis(bucket: &str) -> Option<(String, String)> {
    let client = imds_client()?;
    let info = match client.get("/latest/meta-data/iam/info").await {
        Ok(info) => info.as_ref().to_owned(),
        Err(aws_config::imds::client::error::ImdsError::ErrorResponse(response))
            if response.response().status().as_u16() == 404 =>
        {
            let id = instance_id(&client).await;
            return Some((
                format!("this EC2 instance ({id}) has no IAM instance profile"),
                format!(
                    "attach one whose role has the policy of `litemaas-doctor --iam-policy {bucket}`: `aws ec2 associate-iam-instance-profile --instance-id {id} --iam-instance-profile Name=PROFILE`, then STOP and START the instance (`aws ec2 stop-instances --instance-ids {id}`, wait until stopped, `aws ec2 start-instances --instance-ids {id}`): a reboot is not enough"
                ),
            ));
        }
        // Not on EC2 (nothing answers), or IMDS unusable: nothing more to say.
        Err(_) => return None,
    };
    let profile_arn = serde_json::from_str::<serde_json::Value>(&info)
        .ok()
        .and_then(|v| v["InstanceProfileArn"].as_str().map(str::to_owned))?;
    let roles = match client
        .get("/latest/meta-data/iam/security-credentials/")
        .await
    {
        Ok(roles) => roles.as_ref().trim().to_owned(),
        Err(aws_config::imds::client::error::ImdsError::ErrorResponse(response))
            if response.response().status().as_u16() == 404 =>
        {
            String::new()
        }
        Err(_) => return None,
    };
    let id = instance_id(&client).await;
    if roles.is_empty() {
        Some((
            format!(
                "EC2 instance {id} has instance profile {profile_arn} attached, but its metadata service gives no credentials (iam/security-credentials/ is empty)"
            ),
            format!(
                "STOP and START the instance — a reboot is not enough: `aws ec2 stop-instances --instance-ids {id}`, wait until it is stopped, `aws ec2 start-instances --instance-ids {id}`; if it stays empty, check that the profile's role trusts ec2.amazonaws.com (the trust relationship of `litemaas-doctor --iam-policy {bucket}`)"
            ),
        ))
    } else {
        Some((
            format!(
                "EC2 instance {id}: instance profile {profile_arn}, role {roles}, but its credentials could not be loaded"
            ),
            format!(
                "check that role {roles} trusts ec2.amazonaws.com (the trust relationship of `litemaas-doctor --iam-policy {bucket}`); then STOP and START the instance (a reboot is not enough)"
            ),
        ))
    }
}

async fn instance_id(client: &aws_config::imds::Client) -> String {
    client
        .get("/latest/meta-data/instance-id")
        .await
        .map(|id| id.as_ref().trim().to_owned())
        .ok()
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| "<instance-id>".to_owned())
}

// ---------------------------------------------------------------------------------------------
// Bucket, region, probes

/// The bucket, region, probe and multipart lines for a store already built (`region`: the
/// region requests are signed for).
pub async fn bucket_checks(s3: &S3Store, region: Option<&str>, prefix: &str) -> Vec<Check> {
    let bucket = s3.bucket().to_owned();
    let mut out = Vec::new();
    let what = describe(ids::BUCKET, &bucket, prefix);
    let client = s3.client();
    let bucket_region = match client.head_bucket().bucket(&bucket).send().await {
        Ok(answer) => {
            let region = answer.bucket_region().map(str::to_owned);
            out.push(Check::pass(
                ids::BUCKET,
                what,
                format!(
                    "HeadBucket answered{}",
                    region
                        .as_deref()
                        .map(|r| format!(" (region {r})"))
                        .unwrap_or_default()
                ),
            ));
            region
        }
        Err(e) => {
            let status = e.raw_response().map(|r| r.status().as_u16());
            let header = e
                .raw_response()
                .and_then(|r| r.headers().get("x-amz-bucket-region"))
                .map(str::to_owned);
            let code = e.code().map(str::to_owned);
            let text = display_chain(&e);
            match (status, code.as_deref(), header) {
                // Another region answers 301 (or 400 AuthorizationHeaderMalformed) and names it.
                (Some(301 | 400), _, Some(actual)) => {
                    out.push(Check::pass(
                        ids::BUCKET,
                        what,
                        format!("exists, in region {actual}"),
                    ));
                    Some(actual)
                }
                (Some(404), _, _) | (_, Some("NoSuchBucket"), _) => {
                    out.push(Check::fail(
                        ids::BUCKET,
                        what,
                        format!("bucket {bucket} does not exist (HeadBucket: 404)"),
                        format!(
                            "check --bucket, or create it: `aws s3api create-bucket --bucket {bucket} --region REGION --create-bucket-configuration LocationConstraint=REGION` (without --create-bucket-configuration in us-east-1)"
                        ),
                    ));
                    out.extend(skipped_after(
                        ids::BUCKET,
                        &bucket,
                        prefix,
                        "the bucket does not exist",
                    ));
                    return out;
                }
                (Some(403), _, _) => {
                    out.push(Check::fail(
                        ids::BUCKET,
                        what,
                        format!("HeadBucket refused (403{}): the backup checks the bucket with it before any work", code.map(|c| format!(" {c}")).unwrap_or_default()),
                        grant("s3:ListBucket", &bucket, prefix),
                    ));
                    None
                }
                (
                    Some(_),
                    Some(
                        "InvalidAccessKeyId"
                        | "SignatureDoesNotMatch"
                        | "ExpiredToken"
                        | "InvalidToken",
                    ),
                    _,
                ) => {
                    out.push(Check::fail(
                        ids::BUCKET,
                        what,
                        format!("the credentials were refused: {text}"),
                        "renew or replace the credentials the first line names (an expired session, a deleted access key, a wrong secret)",
                    ));
                    out.extend(skipped_after(
                        ids::BUCKET,
                        &bucket,
                        prefix,
                        "the credentials were refused",
                    ));
                    return out;
                }
                (None, _, _) => {
                    out.push(Check::fail(
                        ids::BUCKET,
                        what,
                        format!("cannot reach the S3 endpoint: {text}"),
                        "check the network path from this host to S3 (DNS, firewall, HTTPS_PROXY/NO_PROXY) and --endpoint-url for an S3-compatible store",
                    ));
                    out.extend(skipped_after(
                        ids::BUCKET,
                        &bucket,
                        prefix,
                        "the S3 endpoint cannot be reached",
                    ));
                    return out;
                }
                (Some(_), _, _) => {
                    out.push(Check::fail(
                        ids::BUCKET,
                        what,
                        format!("HeadBucket failed: {text}"),
                        "see the error; for an S3-compatible store check --endpoint-url and --path-style",
                    ));
                    None
                }
            }
        }
    };
    // The bucket's region: from HeadBucket, else GetBucketLocation.
    let bucket_region = match bucket_region {
        Some(r) => Some(r),
        None => match client.get_bucket_location().bucket(&bucket).send().await {
            Ok(answer) => Some(
                answer
                    .location_constraint()
                    .map(|c| c.as_str().to_owned())
                    .filter(|c| !c.is_empty())
                    .map(|c| if c == "EU" { "eu-west-1".to_owned() } else { c })
                    .unwrap_or_else(|| "us-east-1".to_owned()),
            ),
            Err(_) => None,
        },
    };
    let signed = region.unwrap_or("us-east-1");
    let what = describe(ids::REGION, &bucket, prefix);
    match bucket_region {
        Some(actual) if actual != signed => {
            out.push(Check::fail(
                ids::REGION,
                what,
                format!("bucket {bucket} is in {actual}, but requests are signed for {signed}: every request would be refused"),
                format!("pass --region {actual} (or export LITEMAAS_REGION={actual})"),
            ));
            out.extend(skipped_after(
                ids::REGION,
                &bucket,
                prefix,
                "the region is wrong",
            ));
            return out;
        }
        Some(actual) => out.push(Check::pass(ids::REGION, what, actual)),
        None => out.push(Check::pass(
            ids::REGION,
            what,
            format!("{signed} (the store does not say its region)"),
        )),
    }
    out.extend(probe(s3, prefix).await);
    out.extend(multipart_probe(s3, prefix).await);
    out
}

/// `<prefix>/.litemaas-doctor-<host>-<pid>-<time>`.
fn probe_key(prefix: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| env("HOSTNAME"))
        .map(|h| {
            h.trim().replace(
                |c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '.',
                "-",
            )
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    let time = jiff::Timestamp::now()
        .strftime("%Y%m%dT%H%M%S%.fZ")
        .to_string();
    let name = format!(".litemaas-doctor-{host}-{}-{time}", std::process::id());
    if prefix.is_empty() {
        name
    } else {
        format!("{prefix}/{name}")
    }
}

/// The failing line for a store error, naming the IAM action when it was a refusal.
fn failed(
    id: &str,
    what: &str,
    action: &str,
    bucket: &str,
    prefix: &str,
    e: &StoreError,
    extra: &str,
) -> Check {
    match e {
        StoreError::AccessDenied { .. } => Check::fail(
            id,
            what,
            format!("refused: {e}{extra}"),
            grant(action, bucket, prefix),
        ),
        _ => Check::fail(
            id,
            what,
            format!("{e}{extra}"),
            "see the error; for an S3-compatible store check --endpoint-url, --path-style and --no-checksums",
        ),
    }
}

async fn read_all(s3: &S3Store, key: &str) -> Result<Vec<u8>, StoreError> {
    let got = s3.get(key).await?;
    let chunks: Vec<Bytes> = got.stream.try_collect().await?;
    Ok(chunks.concat())
}

/// Put, list, get, delete (and confirm) the probe object.
async fn probe(s3: &S3Store, prefix: &str) -> Vec<Check> {
    let bucket = s3.bucket();
    let key = probe_key(prefix);
    let url = format!("s3://{bucket}/{key}");
    let body = Bytes::from(format!("litemaas-doctor probe {key}\n"));
    let mut out = Vec::new();
    let what = describe(ids::PUT, bucket, prefix);
    if let Err(e) = s3.put_opts(&key, body.clone(), PutMode::Create).await {
        out.push(failed(
            ids::PUT,
            &what,
            "s3:PutObject",
            bucket,
            prefix,
            &e,
            "",
        ));
        out.extend(
            skipped_after(
                ids::PUT,
                bucket,
                prefix,
                "the probe object could not be written",
            )
            .into_iter()
            .take(3),
        );
        return out;
    }
    out.push(Check::pass(ids::PUT, what, format!("wrote {url}")));

    let what = describe(ids::LIST, bucket, prefix);
    let list_prefix = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    out.push(match s3.list(&list_prefix).await {
        Ok(listed) if listed.iter().any(|o| o.key == key) => {
            Check::pass(ids::LIST, what, format!("{} object(s), the probe among them", listed.len()))
        }
        Ok(listed) => Check::fail(
            ids::LIST,
            what,
            format!("the listing ({} objects) does not show the probe object just written", listed.len()),
            "the store does not list what it stores, so retention and --latest cannot see backups: check --endpoint-url and --prefix",
        ),
        Err(e) => failed(ids::LIST, &what, "s3:ListBucket", bucket, prefix, &e, ""),
    });

    let what = describe(ids::GET, bucket, prefix);
    out.push(match read_all(s3, &key).await {
        Ok(read) if read == body.as_ref() => Check::pass(ids::GET, what, format!("{} bytes, identical", read.len())),
        Ok(read) => Check::fail(
            ids::GET,
            what,
            format!("read {} bytes that differ from the {} written", read.len(), body.len()),
            "something between this host and the store changes objects (a proxy, the store itself): check --endpoint-url",
        ),
        Err(e) => failed(ids::GET, &what, "s3:GetObject", bucket, prefix, &e, ""),
    });

    let what = describe(ids::DELETE, bucket, prefix);
    let left = format!(
        "; the probe object {url} is STILL THERE: remove it with `aws s3 rm {url}` once allowed"
    );
    out.push(match s3.delete(&key).await {
        Err(e) => failed(ids::DELETE, &what, "s3:DeleteObject", bucket, prefix, &e, &left),
        Ok(()) => match s3.head(&key).await {
            Err(StoreError::NotFound { .. }) => Check::pass(ids::DELETE, what, "deleted; gone"),
            // HeadObject of a missing key answers 403 without s3:ListBucket.
            Err(StoreError::AccessDenied { .. }) => Check::pass(
                ids::DELETE,
                what,
                "deleted (not confirmed: HeadObject of a missing key is refused without s3:ListBucket)",
            ),
            Ok(_) => Check::fail(
                ids::DELETE,
                what,
                format!("DeleteObject answered, but the object is still there{left}"),
                "check the bucket's object lock / retention settings",
            ),
            Err(e) => Check::pass(ids::DELETE, what, format!("deleted (not confirmed: {e})")),
        },
    });
    out
}

/// Start, list and abort a multipart upload under the probe key.
async fn multipart_probe(s3: &S3Store, prefix: &str) -> Vec<Check> {
    let bucket = s3.bucket();
    let key = format!("{}-multipart", probe_key(prefix));
    let list_prefix = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    let mut out = Vec::new();
    let what = describe(ids::MULTIPART_CREATE, bucket, prefix);
    let mut upload = match s3.put_multipart_with(&key, &Metadata::new()).await {
        Ok(upload) => {
            out.push(Check::pass(
                ids::MULTIPART_CREATE,
                what,
                format!("started at s3://{bucket}/{key}"),
            ));
            upload
        }
        Err(e) => {
            out.push(failed(
                ids::MULTIPART_CREATE,
                &what,
                "s3:PutObject",
                bucket,
                prefix,
                &e,
                "",
            ));
            out.extend(skipped_after(
                ids::MULTIPART_CREATE,
                bucket,
                prefix,
                "no multipart upload could be started",
            ));
            return out;
        }
    };
    let what = describe(ids::MULTIPART_LIST, bucket, prefix);
    let mut upload_id = None;
    let mut listed = false;
    out.push(match s3.list_pending_uploads(&list_prefix).await {
        Ok(pending) => match pending.iter().find(|u| u.key == key) {
            Some(found) => {
                upload_id = Some(found.upload_id.clone());
                listed = true;
                Check::pass(ids::MULTIPART_LIST, what, format!("{} open upload(s), the probe's among them", pending.len()))
            }
            None => Check::fail(
                ids::MULTIPART_LIST,
                what,
                format!("the listing ({} uploads) does not show the upload just started", pending.len()),
                format!(
                    "uploads left by failed backups would go unnoticed: add a lifecycle rule to the bucket that aborts incomplete multipart uploads (`aws s3api put-bucket-lifecycle-configuration --bucket {bucket}` with AbortIncompleteMultipartUpload)"
                ),
            ),
        },
        Err(e) if e.is_not_implemented() => Check::pass(
            ids::MULTIPART_LIST,
            what,
            "the store does not implement ListMultipartUploads: litemaas-prune cannot find abandoned uploads there (a lifecycle rule, where the store has them, can)",
        ),
        Err(e) => failed(ids::MULTIPART_LIST, &what, "s3:ListBucketMultipartUploads", bucket, prefix, &e, ""),
    });
    let what = describe(ids::MULTIPART_ABORT, bucket, prefix);
    out.push(match upload.abort().await {
        Ok(()) => {
            let gone = if listed {
                match s3.list_pending_uploads(&list_prefix).await {
                    Ok(pending) if pending.iter().any(|u| u.key == key) => Some(false),
                    Ok(_) => Some(true),
                    Err(_) => None,
                }
            } else {
                None
            };
            match gone {
                Some(false) => Check::fail(
                    ids::MULTIPART_ABORT,
                    what,
                    format!("AbortMultipartUpload answered, but the upload at {key} is still listed"),
                    format!(
                        "abort it by hand: `aws s3api abort-multipart-upload --bucket {bucket} --key {key} --upload-id {}`",
                        upload_id.as_deref().unwrap_or("ID")
                    ),
                ),
                Some(true) => Check::pass(ids::MULTIPART_ABORT, what, "aborted; no upload left"),
                None => Check::pass(ids::MULTIPART_ABORT, what, "aborted"),
            }
        }
        Err(e) => {
            let left = format!(
                "; the probe's upload is LEFT OPEN (key {key}, upload id {}): once allowed, `aws s3api abort-multipart-upload --bucket {bucket} --key {key} --upload-id {}` or `litemaas-prune` removes it",
                upload_id.as_deref().unwrap_or("unknown: see `aws s3api list-multipart-uploads`"),
                upload_id.as_deref().unwrap_or("ID"),
            );
            failed(ids::MULTIPART_ABORT, &what, "s3:AbortMultipartUpload", bucket, prefix, &e, &left)
        }
    });
    out
}

// ---------------------------------------------------------------------------------------------
// Local directory

/// `--dest DIR` without a bucket: the directory exists (or its nearest existing parent, where
/// the first backup creates it) and a probe file can be written, read back and removed there.
pub async fn local_checks(dest: &Path) -> Vec<Check> {
    let dest = dest.to_owned();
    tokio::task::spawn_blocking(move || local_checks_blocking(&dest))
        .await
        .unwrap_or_else(|e| {
            vec![Check::fail(
                ids::LOCAL_DIRECTORY,
                "backup directory usable",
                format!("internal error: {e}"),
                "report this as a bug",
            )]
        })
}

fn local_checks_blocking(dest: &Path) -> Vec<Check> {
    let shown = dest.display().to_string();
    let what = format!("backup directory {shown} exists (or can be created) and is writable");
    let user = env("USER").unwrap_or_else(|| "this user".into());
    // The directory, or its nearest existing parent.
    let mut at = dest.to_path_buf();
    let exists;
    loop {
        match std::fs::metadata(&at) {
            Ok(md) if md.is_dir() => {
                exists = at == dest;
                break;
            }
            Ok(_) => {
                return vec![
                    Check::fail(
                        ids::LOCAL_DIRECTORY,
                        what,
                        format!("{} is not a directory", at.display()),
                        format!(
                            "pass --dest with a directory (or remove the file {})",
                            at.display()
                        ),
                    ),
                    Check::skipped(
                        ids::LOCAL_PROBE,
                        "write, read back and delete a probe file",
                        "no usable directory",
                    ),
                ];
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match at.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => at = parent.to_path_buf(),
                _ => {
                    at = std::path::PathBuf::from(".");
                    exists = false;
                    break;
                }
            },
            Err(e) => {
                return vec![
                    Check::fail(
                        ids::LOCAL_DIRECTORY,
                        what,
                        format!("cannot look at {}: {e}", at.display()),
                        format!(
                            "make {} reachable by {user} (`ls -ld` each directory on the way)",
                            at.display()
                        ),
                    ),
                    Check::skipped(
                        ids::LOCAL_PROBE,
                        "write, read back and delete a probe file",
                        "no usable directory",
                    ),
                ];
            }
        }
    }
    let place = at.display().to_string();
    let mut out = Vec::new();
    out.push(Check::pass(
        ids::LOCAL_DIRECTORY,
        what,
        if exists {
            format!("{shown} exists")
        } else {
            format!("{shown} does not exist yet; the first backup creates it in {place}")
        },
    ));
    let what = format!("write, read back and delete a probe file in {place}");
    let name = probe_key("");
    let path = at.join(&name);
    let body = format!("litemaas-doctor probe {name}\n");
    let result = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, body.as_bytes()))
        .map_err(|e| (format!("cannot write {}: {e}", path.display()), false))
        .and_then(|()| {
            let read = std::fs::read(&path)
                .map_err(|e| (format!("cannot read {} back: {e}", path.display()), true))?;
            if read != body.as_bytes() {
                return Err((
                    format!("{} read back differs from what was written", path.display()),
                    true,
                ));
            }
            Ok(())
        });
    let removed = std::fs::remove_file(&path);
    out.push(match (result, removed) {
        (Ok(()), Ok(())) => Check::pass(ids::LOCAL_PROBE, what, "written, read back, removed"),
        (Err((detail, _)), Err(e)) if e.kind() == std::io::ErrorKind::NotFound => Check::fail(
            ids::LOCAL_PROBE,
            what,
            detail,
            format!("make {place} writable by {user} (`ls -ld {place}`; `chown`/`chmod`), or pass another --dest"),
        ),
        (Err((detail, _)), Ok(())) => Check::fail(ids::LOCAL_PROBE, what, detail, format!("check the file system under {place} (full? read-only? `df -h {place}`)")),
        (_, Err(e)) => Check::fail(
            ids::LOCAL_PROBE,
            what,
            format!("the probe file {} could not be removed: {e}", path.display()),
            format!("remove it by hand: `rm {}`; check the permissions of {place}", path.display()),
        ),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_masked_like_aws_configure_list() {
        assert_eq!(mask("AKIAIOSFODNN7EXAMPLE"), "AKIA…MPLE");
        assert_eq!(mask("short"), "****");
    }

    #[test]
    fn skipped_lines_follow_the_failed_one() {
        let lines = skipped_after(ids::REGION, "b", "p", "x");
        assert_eq!(lines[0].id, ids::PUT);
        assert_eq!(lines.last().unwrap().id, ids::MULTIPART_ABORT);
        assert!(
            lines
                .iter()
                .all(|c| c.outcome == crate::check::Outcome::Skipped)
        );
    }

    #[test]
    fn the_probe_key_is_under_the_prefix() {
        let key = probe_key("litemaas-backups");
        assert!(
            key.starts_with("litemaas-backups/.litemaas-doctor-"),
            "{key}"
        );
        assert!(key.contains(&format!("-{}-", std::process::id())), "{key}");
        litemaas_backup::store::validate_key(&key).unwrap();
    }
}
