//! The objects of one namespace's scheduled backup, built from k8s-openapi types: a
//! ServiceAccount, a Role holding exactly the backup's entries of
//! [`REQUIRED_ACCESS`](litemaas_backup::cluster::REQUIRED_ACCESS), a RoleBinding, a ClusterRole
//! and ClusterRoleBinding only if the backup ever needs something cluster-scoped (today it does
//! not), and the CronJob.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, PodSecurityContext,
    PodSpec, PodTemplateSpec, ResourceRequirements, SeccompProfile, SecretKeySelector,
    SecurityContext, ServiceAccount, Volume, VolumeMount,
};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use litemaas_backup::cluster::Access;

/// The S3 keys a `--s3-secret` Secret holds, as the AWS SDK reads them from the environment
/// (`AWS_SESSION_TOKEN` optional).
pub const S3_SECRET_KEYS: [(&str, bool); 3] = [
    ("AWS_ACCESS_KEY_ID", false),
    ("AWS_SECRET_ACCESS_KEY", false),
    ("AWS_SESSION_TOKEN", true),
];

/// The key of a `--notify-secret` Secret: the notification URL, as the tool reads it from the
/// environment.
pub const NOTIFY_SECRET_KEY: &str = "LITEMAAS_NOTIFY_URL";

/// How long the Job outlives the tool's own `--timeout`, so that the tool, not the Job
/// controller, ends a run that is too long: it aborts its upload and releases the Lease.
pub const DEADLINE_MARGIN_SECONDS: i64 = 600;

/// What one namespace's objects are made of.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The LiteMaaS namespace.
    pub namespace: String,
    /// Name of the ServiceAccount, Role, RoleBinding and CronJob.
    pub name: String,
    /// The image reference.
    pub image: String,
    /// The cron schedule, already staggered for this namespace.
    pub schedule: String,
    /// IANA time zone of the schedule.
    pub time_zone: String,
    /// Seconds after the scheduled time a missed run may still start.
    pub starting_deadline_seconds: i64,
    /// The tool's `--timeout`, in seconds.
    pub timeout_seconds: i64,
    /// The database Secret (the Role may read only it).
    pub db_secret: String,
    /// The Lease the tool takes (get, update, delete restricted to it).
    pub lease: String,
    /// `litemaas-backup`'s arguments after `--namespace NS`.
    pub backup_args: Vec<String>,
    /// The Secret holding the S3 keys, if the credentials come from one.
    pub s3_secret: Option<String>,
    /// The Secret holding the notification URL ([`NOTIFY_SECRET_KEY`]), if runs notify.
    pub notify_secret: Option<String>,
    /// Annotations of the ServiceAccount (pod identity: IRSA, web identity).
    pub service_account_annotations: BTreeMap<String, String>,
}

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "litemaas-backup".into()),
        ("app.kubernetes.io/component".into(), "backup".into()),
        (
            "app.kubernetes.io/managed-by".into(),
            "litemaas-schedule".into(),
        ),
    ])
}

fn meta(spec: &Spec, name: &str, namespaced: bool) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespaced.then(|| spec.namespace.clone()),
        labels: Some(labels()),
        ..ObjectMeta::default()
    }
}

/// The ServiceAccount the CronJob runs as, with the pod-identity annotations.
pub fn service_account(spec: &Spec) -> ServiceAccount {
    let mut metadata = meta(spec, &spec.name, true);
    if !spec.service_account_annotations.is_empty() {
        metadata.annotations = Some(spec.service_account_annotations.clone());
    }
    ServiceAccount {
        metadata,
        ..ServiceAccount::default()
    }
}

/// The rules for `accesses` (the backup's entries of REQUIRED_ACCESS, namespaced or not):
/// one rule per resource and set of names, verbs in the list's order. A Secret `get` is
/// limited to the database Secret; Lease `get`, `update` and `delete` to the Lease. Lease
/// `create` cannot be limited: the authorizer sees no object name on a create (the name is in
/// the body, not the URL), so a rule with resourceNames never allows one.
pub fn rules(accesses: &[&Access], db_secret: &str, lease: &str) -> Vec<PolicyRule> {
    let mut rules: Vec<PolicyRule> = Vec::new();
    for a in accesses {
        let names: Vec<String> = match (a.group, a.resource, a.subresource, a.verb) {
            ("", "secrets", "", "get") => vec![db_secret.to_owned()],
            ("coordination.k8s.io", "leases", "", "get" | "update" | "delete") => {
                vec![lease.to_owned()]
            }
            _ => Vec::new(),
        };
        let resource = a.resource_path();
        let same = |r: &PolicyRule| {
            r.api_groups.as_deref() == Some(&[a.group.to_owned()][..])
                && r.resources.as_deref() == Some(&[resource.clone()][..])
                && r.resource_names.clone().unwrap_or_default() == names
        };
        match rules.iter_mut().find(|r| same(r)) {
            Some(rule) => rule.verbs.push(a.verb.to_owned()),
            None => rules.push(PolicyRule {
                api_groups: Some(vec![a.group.to_owned()]),
                resources: Some(vec![resource]),
                verbs: vec![a.verb.to_owned()],
                resource_names: (!names.is_empty()).then_some(names),
                non_resource_urls: None,
            }),
        }
    }
    rules
}

/// The Role in the namespace: the namespaced entries of `accesses`.
pub fn role(spec: &Spec, accesses: &[&Access]) -> Role {
    let namespaced: Vec<&Access> = accesses.iter().copied().filter(|a| a.namespaced).collect();
    Role {
        metadata: meta(spec, &spec.name, true),
        rules: Some(rules(&namespaced, &spec.db_secret, &spec.lease)),
    }
}

fn subject(spec: &Spec) -> Subject {
    Subject {
        kind: "ServiceAccount".into(),
        name: spec.name.clone(),
        namespace: Some(spec.namespace.clone()),
        api_group: None,
    }
}

/// The RoleBinding of the Role to the ServiceAccount.
pub fn role_binding(spec: &Spec) -> RoleBinding {
    RoleBinding {
        metadata: meta(spec, &spec.name, true),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: spec.name.clone(),
        },
        subjects: Some(vec![subject(spec)]),
    }
}

/// The ClusterRole for the cluster-scoped entries of `accesses` and its binding (named after
/// the namespace, so several instances can share the ClusterRole), or `None` if there are none.
pub fn cluster_role(
    spec: &Spec,
    accesses: &[&Access],
) -> Option<(ClusterRole, ClusterRoleBinding)> {
    let cluster: Vec<&Access> = accesses.iter().copied().filter(|a| !a.namespaced).collect();
    if cluster.is_empty() {
        return None;
    }
    let role = ClusterRole {
        metadata: meta(spec, &spec.name, false),
        rules: Some(rules(&cluster, &spec.db_secret, &spec.lease)),
        aggregation_rule: None,
    };
    let binding = ClusterRoleBinding {
        metadata: meta(spec, &format!("{}-{}", spec.name, spec.namespace), false),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: spec.name.clone(),
        },
        subjects: Some(vec![subject(spec)]),
    };
    Some((role, binding))
}

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned())))
        .collect()
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

/// The environment variable `key` from the Secret `secret`'s key of the same name.
fn env_from_secret(secret: &str, key: &str, optional: bool) -> EnvVar {
    EnvVar {
        name: key.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: optional.then_some(true),
            }),
            ..EnvVarSource::default()
        }),
    }
}

/// The container: `litemaas-backup --namespace NS …` with the in-cluster service account, the
/// S3 keys from the Secret (never literal values), a writable emptyDir `/tmp` under a read-only
/// root, and a security context that OpenShift's restricted-v2 SCC admits (no runAsUser: the
/// SCC assigns one from the namespace's range).
fn container(spec: &Spec) -> Container {
    let mut command = vec![
        "litemaas-backup".to_owned(),
        "--namespace".to_owned(),
        spec.namespace.clone(),
    ];
    command.extend(spec.backup_args.iter().cloned());
    let mut env_vars = vec![env("HOME", "/tmp"), env("TMPDIR", "/tmp")];
    if let Some(secret) = &spec.s3_secret {
        for (key, optional) in S3_SECRET_KEYS {
            env_vars.push(env_from_secret(secret, key, optional));
        }
    }
    if let Some(secret) = &spec.notify_secret {
        env_vars.push(env_from_secret(secret, NOTIFY_SECRET_KEY, false));
    }
    Container {
        name: "backup".into(),
        image: Some(spec.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(command),
        env: Some(env_vars),
        // Our own RSS stays under 64 MiB; compression buffers and parts in flight (4 × 8 MiB)
        // come on top. pg_dump runs in the database pod (exec), not here.
        resources: Some(ResourceRequirements {
            requests: Some(quantities(&[("cpu", "250m"), ("memory", "128Mi")])),
            limits: Some(quantities(&[("cpu", "2"), ("memory", "512Mi")])),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..VolumeMount::default()
        }]),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    }
}

/// The CronJob. `concurrencyPolicy: Forbid` (the Lease also keeps runs apart, even a manual
/// one), `backoffLimit: 0`: a failed run is reported, not retried — it deleted nothing and left
/// no partial dump, and the causes seen in practice (credentials, RBAC, a full bucket) fail
/// again; rerun by hand with `oc create job --from=cronjob/NAME`. The Job's
/// `activeDeadlineSeconds` is the tool's `--timeout` plus [`DEADLINE_MARGIN_SECONDS`].
pub fn cron_job(spec: &Spec) -> CronJob {
    let pod = PodSpec {
        service_account_name: Some(spec.name.clone()),
        automount_service_account_token: Some(true),
        restart_policy: Some("Never".into()),
        termination_grace_period_seconds: Some(120),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            }),
            ..PodSecurityContext::default()
        }),
        containers: vec![container(spec)],
        volumes: Some(vec![Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(Quantity("256Mi".into())),
                ..EmptyDirVolumeSource::default()
            }),
            ..Volume::default()
        }]),
        ..PodSpec::default()
    };
    CronJob {
        metadata: meta(spec, &spec.name, true),
        spec: CronJobSpec {
            schedule: spec.schedule.clone(),
            time_zone: Some(spec.time_zone.clone()),
            concurrency_policy: Some("Forbid".into()),
            starting_deadline_seconds: Some(spec.starting_deadline_seconds),
            successful_jobs_history_limit: Some(3),
            failed_jobs_history_limit: Some(3),
            suspend: Some(false),
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels()),
                    ..ObjectMeta::default()
                }),
                spec: Some(JobSpec {
                    backoff_limit: Some(0),
                    active_deadline_seconds: Some(spec.timeout_seconds + DEADLINE_MARGIN_SECONDS),
                    template: PodTemplateSpec {
                        metadata: Some(ObjectMeta {
                            labels: Some(labels()),
                            ..ObjectMeta::default()
                        }),
                        spec: Some(pod),
                    },
                    ..JobSpec::default()
                }),
            },
        },
        status: None,
    }
}

/// Staggers `schedule` by `offset_minutes`: its minute and hour fields must be plain numbers
/// (`0 2 1 * *` plus 25 minutes is `25 2 1 * *`). The run must stay on the same day.
///
/// # Errors
///
/// A schedule whose minute or hour is not a plain number, or an offset past midnight.
pub fn stagger(schedule: &str, offset_minutes: u32) -> Result<String, String> {
    let fields: Vec<&str> = schedule.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "schedule {schedule:?} is not a five-field cron expression (minute hour day month weekday)"
        ));
    }
    if offset_minutes == 0 {
        return Ok(fields.join(" "));
    }
    let (Ok(minute), Ok(hour)) = (fields[0].parse::<u32>(), fields[1].parse::<u32>()) else {
        return Err(format!(
            "cannot stagger schedule {schedule:?}: its minute and hour must be plain numbers (or give --stagger-minutes 0)"
        ));
    };
    if minute > 59 || hour > 23 {
        return Err(format!(
            "schedule {schedule:?}: minute or hour out of range"
        ));
    }
    let at = hour * 60 + minute + offset_minutes;
    if at >= 24 * 60 {
        return Err(format!(
            "schedule {schedule:?} staggered by {offset_minutes} minutes passes midnight: start earlier or give a smaller --stagger-minutes"
        ));
    }
    let mut out = vec![(at % 60).to_string(), (at / 60).to_string()];
    out.extend(fields[2..].iter().map(|f| (*f).to_owned()));
    Ok(out.join(" "))
}

#[cfg(test)]
mod tests {
    use litemaas_backup::cluster::{Need, REQUIRED_ACCESS};

    use super::*;

    #[test]
    fn staggering_moves_minute_and_hour_and_refuses_what_it_cannot_move() {
        assert_eq!(stagger("0 2 1 * *", 0).as_deref(), Ok("0 2 1 * *"));
        assert_eq!(stagger("0 2 1 * *", 25).as_deref(), Ok("25 2 1 * *"));
        assert_eq!(stagger("50 2 1 * *", 20).as_deref(), Ok("10 3 1 * *"));
        assert!(stagger("*/5 2 1 * *", 10).is_err());
        assert!(stagger("50 23 1 * *", 20).unwrap_err().contains("midnight"));
        assert!(stagger("0 2 1 *", 0).is_err());
    }

    #[test]
    fn lease_create_has_no_resource_names_and_the_rest_of_the_lease_does() {
        let backup: Vec<&Access> = REQUIRED_ACCESS.iter().filter(|a| a.need.backup()).collect();
        let rules = rules(&backup, "litemaas-db", "litemaas-backup");
        let leases: Vec<&PolicyRule> = rules
            .iter()
            .filter(|r| r.resources.as_deref() == Some(&["leases".to_owned()][..]))
            .collect();
        assert_eq!(leases.len(), 2, "{leases:?}");
        assert!(
            leases
                .iter()
                .any(|r| r.verbs == ["create"] && r.resource_names.is_none())
        );
        assert!(leases.iter().any(|r| r.verbs == ["get", "update", "delete"]
            && r.resource_names.as_deref() == Some(&["litemaas-backup".to_owned()][..])));
    }

    #[test]
    fn a_cluster_scoped_need_gets_a_cluster_role_and_none_otherwise() {
        let spec = Spec {
            namespace: "a".into(),
            name: "litemaas-backup".into(),
            image: "i".into(),
            schedule: "0 2 1 * *".into(),
            time_zone: "Etc/UTC".into(),
            starting_deadline_seconds: 3600,
            timeout_seconds: 3600,
            db_secret: "litemaas-db".into(),
            lease: "litemaas-backup".into(),
            backup_args: Vec::new(),
            s3_secret: None,
            notify_secret: None,
            service_account_annotations: BTreeMap::new(),
        };
        let backup: Vec<&Access> = REQUIRED_ACCESS.iter().filter(|a| a.need.backup()).collect();
        assert!(cluster_role(&spec, &backup).is_none());
        let class = REQUIRED_ACCESS
            .iter()
            .find(|a| !a.namespaced && a.need == Need::Restore)
            .unwrap();
        let (role, binding) = cluster_role(&spec, &[class]).unwrap();
        assert_eq!(role.rules.unwrap().len(), 1);
        assert_eq!(binding.metadata.name.as_deref(), Some("litemaas-backup-a"));
    }
}
