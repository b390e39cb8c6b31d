//! `litemaas-schedule kubernetes`: the in-cluster monthly backup, no bastion. For each LiteMaaS
//! namespace (`--namespace`, repeatable, or `--namespace-selector`), a ServiceAccount, a Role
//! with exactly the backup's verbs from
//! [`REQUIRED_ACCESS`](litemaas_backup::cluster::REQUIRED_ACCESS), a RoleBinding, and a CronJob
//! running `litemaas-backup --namespace NS …` — printed as YAML (or JSON, a `List`), or applied
//! with server-side apply (field manager `litemaas-schedule`), saying what changed.
//!
//! Several namespaces are staggered: the i-th (in the order given; sorted by name with a
//! selector) starts `i × --stagger-minutes` after the schedule.

mod render;

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::core::NamespaceResourceScope;
use kube::{Resource, ResourceExt};
use litemaas_backup::cluster::{Access, REQUIRED_ACCESS};
use serde::Serialize;
use serde::de::DeserializeOwned;

use render::Spec;

/// The field manager of `--apply`.
pub const FIELD_MANAGER: &str = "litemaas-schedule";

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Multi-document YAML.
    Yaml,
    /// One JSON `List`.
    Json,
}

/// Arguments of `litemaas-schedule kubernetes` (boxed: they are many, and the other
/// subcommand's are few).
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    options: Box<Options>,
}

/// The options of `litemaas-schedule kubernetes`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// A LiteMaaS namespace; repeat for several instances on one cluster.
    #[arg(
        long = "namespace",
        value_name = "NS",
        required_unless_present = "namespace_selector"
    )]
    pub namespaces: Vec<String>,

    /// Every namespace with these labels (listed through the API), e.g. `app=litemaas`.
    #[arg(long, value_name = "LABELS", conflicts_with = "namespaces")]
    pub namespace_selector: Option<String>,

    /// The image with litemaas-backup (built from the repository's Containerfile).
    #[arg(long, value_name = "REF")]
    pub image: String,

    /// The S3 bucket.
    #[arg(long)]
    pub bucket: String,

    /// Key prefix in the bucket (litemaas-backup's default: litemaas-backups).
    #[arg(long)]
    pub prefix: Option<String>,

    /// S3-compatible endpoint (ODF, MinIO).
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,

    /// AWS region.
    #[arg(long)]
    pub region: Option<String>,

    /// Path-style S3 addressing.
    #[arg(long)]
    pub path_style: bool,

    /// The Secret (in each namespace) with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
    /// optionally AWS_SESSION_TOKEN, passed as secretKeyRef environment, never as values.
    #[arg(
        long,
        value_name = "NAME",
        required_unless_present = "service_account_annotations"
    )]
    pub s3_secret: Option<String>,

    /// The Secret (in each namespace) whose key LITEMAAS_NOTIFY_URL holds the URL a failed run
    /// is POSTed to (a Slack incoming webhook works): passed as secretKeyRef environment, so a
    /// token in the URL stays in the Secret. Add `--backup-arg=--notify-on=always` to hear of
    /// every run (or `success` for a dead man's switch).
    #[arg(long, value_name = "NAME")]
    pub notify_secret: Option<String>,

    /// An annotation of the ServiceAccount for pod identity instead of a Secret, e.g.
    /// `eks.amazonaws.com/role-arn=arn:aws:iam::123456789012:role/litemaas-backup`; repeatable.
    #[arg(long = "service-account-annotation", value_name = "KEY=VALUE", value_parser = key_value)]
    pub service_account_annotations: Vec<(String, String)>,

    /// Cron schedule (the original tool: 02:00 on the 1st of each month).
    #[arg(long, default_value = "0 2 1 * *")]
    pub schedule: String,

    /// Time zone of the schedule (IANA name).
    #[arg(long, default_value = "Etc/UTC")]
    pub time_zone: String,

    /// Minutes between the starts of consecutive namespaces' runs.
    #[arg(long, default_value_t = 15)]
    pub stagger_minutes: u32,

    /// A run missed by this long (controller down) is skipped, not started late.
    #[arg(long, default_value = "1h", value_name = "DURATION")]
    pub starting_deadline: jiff::SignedDuration,

    /// litemaas-backup's own --timeout; the Job's deadline is 10 minutes longer, so the tool
    /// ends an overlong run itself and cleans up.
    #[arg(long, default_value = "6h", value_name = "DURATION")]
    pub timeout: jiff::SignedDuration,

    /// The database Secret (the Role may read only this one).
    #[arg(long, default_value = "litemaas-db", value_name = "NAME")]
    pub db_secret: String,

    /// Name of the ServiceAccount, Role, RoleBinding and CronJob.
    #[arg(long, default_value = "litemaas-backup")]
    pub name: String,

    /// One more argument for litemaas-backup (e.g. `--no-snapshot`); repeatable.
    #[arg(long = "backup-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub backup_args: Vec<String>,

    /// Output format.
    #[arg(long, short, value_enum, default_value = "yaml")]
    pub output: Output,

    /// Apply the objects (server-side apply) instead of printing them.
    #[arg(long)]
    pub apply: bool,

    /// kubeconfig context for --apply and --namespace-selector.
    #[arg(long)]
    pub context: Option<String>,
}

fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// An RFC 1123 label, as namespace names (and the names used here) must be.
fn dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn seconds(d: jiff::SignedDuration, flag: &str) -> anyhow::Result<i64> {
    if d.is_negative() || d.is_zero() {
        bail!("{flag} must be positive, not {d:#}");
    }
    Ok(d.as_secs())
}

/// One namespace's objects, in the order they are applied.
pub struct Objects {
    /// The namespace.
    pub namespace: String,
    /// Each object as JSON, with apiVersion and kind.
    pub items: Vec<serde_json::Value>,
}

fn typed<K: Resource<DynamicType = ()> + Serialize>(
    object: &K,
) -> anyhow::Result<serde_json::Value> {
    let mut value = serde_json::to_value(object)?;
    value["apiVersion"] = K::api_version(&()).into();
    value["kind"] = K::kind(&()).into();
    Ok(value)
}

/// The namespaces' specs, staggered.
fn specs(args: &Options, namespaces: &[String]) -> anyhow::Result<Vec<Spec>> {
    let timeout_seconds = seconds(args.timeout, "--timeout")?;
    let starting_deadline_seconds = seconds(args.starting_deadline, "--starting-deadline")?;
    for (flag, value) in [
        ("--bucket", &args.bucket),
        ("--image", &args.image),
        ("--name", &args.name),
    ] {
        if value.trim().is_empty() {
            bail!("{flag} is empty");
        }
    }
    let mut names: Vec<(&str, &str)> =
        vec![("--name", &args.name), ("--db-secret", &args.db_secret)];
    if let Some(secret) = &args.s3_secret {
        names.push(("--s3-secret", secret));
    }
    if let Some(secret) = &args.notify_secret {
        names.push(("--notify-secret", secret));
    }
    names.extend(namespaces.iter().map(|ns| ("--namespace", ns.as_str())));
    for (flag, name) in names {
        if !dns_label(name) {
            bail!(
                "{flag} {name:?} is not a valid Kubernetes name (lower-case letters, digits and '-', at most 63, starting and ending alphanumeric)"
            );
        }
    }
    let mut backup_args = vec!["--bucket".to_owned(), args.bucket.clone()];
    for (flag, value) in [
        ("--prefix", &args.prefix),
        ("--endpoint-url", &args.endpoint_url),
        ("--region", &args.region),
    ] {
        if let Some(v) = value {
            backup_args.extend([flag.to_owned(), v.clone()]);
        }
    }
    if args.path_style {
        backup_args.push("--path-style".into());
    }
    if args.db_secret != "litemaas-db" {
        backup_args.extend(["--secret".to_owned(), args.db_secret.clone()]);
    }
    backup_args.extend(["--timeout".to_owned(), format!("{}s", timeout_seconds)]);
    backup_args.extend(args.backup_args.iter().cloned());
    let annotations: BTreeMap<String, String> =
        args.service_account_annotations.iter().cloned().collect();
    namespaces
        .iter()
        .enumerate()
        .map(|(i, ns)| {
            let offset = u32::try_from(i)
                .ok()
                .and_then(|i| i.checked_mul(args.stagger_minutes))
                .context("too many namespaces to stagger")?;
            let schedule = render::stagger(&args.schedule, offset)
                .map_err(|e| anyhow::anyhow!("namespace {ns}: {e}"))?;
            Ok(Spec {
                namespace: ns.clone(),
                name: args.name.clone(),
                image: args.image.clone(),
                schedule,
                time_zone: args.time_zone.clone(),
                starting_deadline_seconds,
                timeout_seconds,
                db_secret: args.db_secret.clone(),
                lease: litemaas_cli::LEASE.to_owned(),
                backup_args: backup_args.clone(),
                s3_secret: args.s3_secret.clone(),
                notify_secret: args.notify_secret.clone(),
                service_account_annotations: annotations.clone(),
            })
        })
        .collect()
}

/// Every object for `spec`: ServiceAccount, Role, RoleBinding, (ClusterRole and its binding if
/// the backup needs anything cluster-scoped), CronJob.
pub fn objects(spec: &Spec) -> anyhow::Result<Objects> {
    let backup: Vec<&Access> = REQUIRED_ACCESS.iter().filter(|a| a.need.backup()).collect();
    let mut items = vec![
        typed(&render::service_account(spec))?,
        typed(&render::role(spec, &backup))?,
        typed(&render::role_binding(spec))?,
    ];
    if let Some((role, binding)) = render::cluster_role(spec, &backup) {
        items.push(typed(&role)?);
        items.push(typed(&binding)?);
    }
    items.push(typed(&render::cron_job(spec))?);
    Ok(Objects {
        namespace: spec.namespace.clone(),
        items,
    })
}

async fn namespaces(args: &Options, client: Option<&kube::Client>) -> anyhow::Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    if let Some(selector) = &args.namespace_selector {
        let client = client.context("--namespace-selector needs a cluster")?;
        let list = Api::<Namespace>::all(client.clone())
            .list(&ListParams::default().labels(selector))
            .await
            .with_context(|| format!("list namespaces with labels {selector}"))?;
        out = list.items.iter().map(ResourceExt::name_any).collect();
        out.sort();
        if out.is_empty() {
            bail!("no namespace has labels {selector}");
        }
    } else {
        for ns in &args.namespaces {
            if ns.trim().is_empty() {
                bail!("--namespace is empty");
            }
            if !out.contains(ns) {
                out.push(ns.clone());
            }
        }
    }
    Ok(out)
}

/// Runs `litemaas-schedule kubernetes`.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let args = *args.options;
    // Checked before anything is asked of the cluster.
    let given: Vec<String> = match args.namespaces.is_empty() {
        true => vec!["check".to_owned()],
        false => args.namespaces.clone(),
    };
    specs(&args, &given)?;
    let client = if args.apply || args.namespace_selector.is_some() {
        Some(litemaas_cli::kube_client(args.context.as_deref()).await?)
    } else {
        None
    };
    let namespaces = namespaces(&args, client.as_ref()).await?;
    let all = specs(&args, &namespaces)?
        .iter()
        .map(objects)
        .collect::<anyhow::Result<Vec<_>>>()?;
    match (&client, args.apply) {
        (Some(client), true) => {
            check_secrets(client, &args, &namespaces).await?;
            for objects in &all {
                for item in &objects.items {
                    let line = apply(client, &objects.namespace, item).await?;
                    println!("{line}");
                }
            }
        }
        _ => print!("{}", format(&all, args.output)?),
    }
    Ok(())
}

/// Before `--apply`: every Secret the CronJob will read exists in every namespace, with the
/// keys it needs, so that a run does not fail a month later on a name mistyped today. Only
/// names and keys are looked at, never values. A Secret the applying user may not read is a
/// warning, not an error.
async fn check_secrets(
    client: &kube::Client,
    args: &Options,
    namespaces: &[String],
) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Secret;
    let mut wanted: Vec<(&str, &str, Vec<&str>)> = vec![("--db-secret", &args.db_secret, vec![])];
    if let Some(name) = &args.s3_secret {
        let keys = render::S3_SECRET_KEYS
            .iter()
            .filter(|(_, optional)| !optional)
            .map(|(k, _)| *k)
            .collect();
        wanted.push(("--s3-secret", name, keys));
    }
    if let Some(name) = &args.notify_secret {
        wanted.push(("--notify-secret", name, vec![render::NOTIFY_SECRET_KEY]));
    }
    for ns in namespaces {
        let secrets = Api::<Secret>::namespaced(client.clone(), ns);
        for (flag, name, keys) in &wanted {
            let secret = match secrets.get_opt(name).await {
                Ok(secret) => secret,
                Err(kube::Error::Api(e)) if e.code == 403 => {
                    eprintln!(
                        "warning: cannot check that Secret {name} ({flag}) exists in namespace {ns}: {}",
                        e.message
                    );
                    continue;
                }
                Err(e) => {
                    return Err(anyhow::Error::new(e).context(format!(
                        "reading Secret {name} ({flag}) in namespace {ns}; nothing was applied"
                    )));
                }
            };
            let Some(secret) = secret else {
                bail!(
                    "{flag} {name}: namespace {ns} has no such Secret{}; nothing was applied",
                    if keys.is_empty() {
                        String::new()
                    } else {
                        format!(" (create it with the key(s) {})", keys.join(", "))
                    }
                );
            };
            let has = |key: &str| {
                secret.data.as_ref().is_some_and(|d| d.contains_key(key))
                    || secret
                        .string_data
                        .as_ref()
                        .is_some_and(|d| d.contains_key(key))
            };
            if let Some(missing) = keys.iter().find(|k| !has(k)) {
                bail!(
                    "{flag} {name}: the Secret in namespace {ns} has no key {missing}; nothing was applied"
                );
            }
        }
    }
    Ok(())
}

/// The objects as YAML documents (`---` between them) or one JSON `List`.
///
/// YAML through serde_norway, the maintained fork of the deprecated serde_yaml (kubectl and
/// `oc` read both formats).
pub fn format(all: &[Objects], output: Output) -> anyhow::Result<String> {
    let items: Vec<&serde_json::Value> = all.iter().flat_map(|o| &o.items).collect();
    Ok(match output {
        Output::Json => {
            let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
            serde_json::to_string_pretty(&list)? + "\n"
        }
        Output::Yaml => {
            let mut out = String::new();
            for item in items {
                out.push_str("---\n");
                out.push_str(&serde_norway::to_string(item)?);
            }
            out
        }
    })
}

/// Server-side applies `item` through `api`: `created`, `configured` or `unchanged` (the
/// resourceVersion stays when nothing changed).
async fn apply_with<K>(api: Api<K>, item: &serde_json::Value) -> anyhow::Result<&'static str>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + DeserializeOwned + Serialize,
{
    let name = item["metadata"]["name"].as_str().unwrap_or_default();
    let before = api.get_opt(name).await?;
    let after = api
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(item),
        )
        .await?;
    Ok(match before {
        None => "created",
        Some(b) if b.resource_version() == after.resource_version() => "unchanged",
        Some(_) => "configured",
    })
}

async fn apply_typed<K>(
    client: &kube::Client,
    namespace: &str,
    item: &serde_json::Value,
) -> anyhow::Result<&'static str>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + DeserializeOwned
        + Serialize,
{
    apply_with(Api::<K>::namespaced(client.clone(), namespace), item).await
}

async fn apply_cluster<K>(
    client: &kube::Client,
    item: &serde_json::Value,
) -> anyhow::Result<&'static str>
where
    K: Resource<DynamicType = (), Scope = kube::core::ClusterResourceScope>
        + Clone
        + std::fmt::Debug
        + DeserializeOwned
        + Serialize,
{
    apply_with(Api::<K>::all(client.clone()), item).await
}

/// Server-side applies one object and says what happened, as kubectl does:
/// `cronjob.batch/litemaas-backup created` (in `namespace`).
async fn apply(
    client: &kube::Client,
    namespace: &str,
    item: &serde_json::Value,
) -> anyhow::Result<String> {
    use k8s_openapi::api::batch::v1::CronJob;
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
    let kind = item["kind"].as_str().unwrap_or_default();
    let name = item["metadata"]["name"].as_str().unwrap_or_default();
    let (what, result) = match kind {
        "ServiceAccount" => (
            "serviceaccount",
            apply_typed::<ServiceAccount>(client, namespace, item).await,
        ),
        "Role" => (
            "role.rbac.authorization.k8s.io",
            apply_typed::<Role>(client, namespace, item).await,
        ),
        "RoleBinding" => (
            "rolebinding.rbac.authorization.k8s.io",
            apply_typed::<RoleBinding>(client, namespace, item).await,
        ),
        "CronJob" => (
            "cronjob.batch",
            apply_typed::<CronJob>(client, namespace, item).await,
        ),
        // Only when the backup needs something cluster-scoped (today nothing is).
        "ClusterRole" => (
            "clusterrole.rbac.authorization.k8s.io",
            apply_cluster::<ClusterRole>(client, item).await,
        ),
        "ClusterRoleBinding" => (
            "clusterrolebinding.rbac.authorization.k8s.io",
            apply_cluster::<ClusterRoleBinding>(client, item).await,
        ),
        other => bail!("cannot apply a {other} (apply the rendered output with oc apply -f)"),
    };
    let done = result.with_context(|| format!("apply {what}/{name} in {namespace}"))?;
    Ok(format!("{what}/{name} {done} (namespace {namespace})"))
}
