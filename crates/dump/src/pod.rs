//! `pg_dump` inside the database pod, through the Kubernetes exec API (no `oc`/`kubectl`).
//!
//! The credentials come from a Secret read through the API. The password is written to the
//! command's **stdin**, never put in its command line: the command line of an exec request is
//! part of the request URL, which the API server writes to its audit log, and it shows in the
//! pod's process list (`/proc/<pid>/cmdline`) for as long as the dump runs. The shell reads one
//! line into `PGPASSWORD` (exported only to its own child, `pg_dump`) and then `exec`s pg_dump,
//! so the password lives only in that process's environment, as with a local dump.

use std::collections::BTreeMap;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Pod, Secret as K8sSecret};
use kube::api::{Api, AttachParams, ListParams};
use tokio::io::AsyncWriteExt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status as ExecStatus;

use crate::pg::{check_complete, collect_stderr, dump_info, one_line};
use crate::tap::Tap;
use crate::{DumpInfo, DumpSource, DumpStream, Error, Result, Secret};

/// Where the database pod and its credentials are. The defaults are LiteMaaS's names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodTarget {
    /// Namespace.
    pub namespace: String,
    /// Label selector of the database pods (the first Running one is used).
    pub selector: String,
    /// Container running PostgreSQL.
    pub container: String,
    /// Secret holding the credentials.
    pub secret: String,
    /// Secret keys for user, password and database.
    pub username_key: String,
    /// See `username_key`.
    pub password_key: String,
    /// See `username_key`.
    pub database_key: String,
}

impl PodTarget {
    /// LiteMaaS's names in `namespace`: pods `app=litellm-postgres`, container `postgres`,
    /// Secret `litemaas-db` with keys `username`, `password`, `database`.
    pub fn litemaas(namespace: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            selector: "app=litellm-postgres".into(),
            container: "postgres".into(),
            secret: "litemaas-db".into(),
            username_key: "username".into(),
            password_key: "password".into(),
            database_key: "database".into(),
        }
    }
}

/// Credentials read from the Secret.
#[derive(Debug, Clone)]
pub struct PodCredentials {
    /// Database user.
    pub username: String,
    /// Its password.
    pub password: Secret,
    /// The Secret's default database.
    pub database: String,
    /// Logins for other databases on the same server, from the Secret's `LITELLM_DATABASE_URL`
    /// and `DATABASE_URL` (newer deployments keep LiteLLM's tables in a second database).
    pub others: Vec<Login>,
}

/// A user, password and database taken from a connection URL in the Secret.
#[derive(Debug, Clone)]
pub struct Login {
    /// Database user.
    pub username: String,
    /// Its password.
    pub password: Secret,
    /// The database the URL names.
    pub database: String,
}

/// Secret keys that may hold connection URLs for other databases.
const URL_KEYS: [&str; 2] = ["LITELLM_DATABASE_URL", "DATABASE_URL"];

impl PodCredentials {
    /// The credentials to dump `database` with: the login of a URL in the Secret that names it,
    /// else the Secret's `username`/`password`.
    pub fn for_database(&self, database: &str) -> PodCredentials {
        match self.others.iter().find(|l| l.database == database) {
            Some(login) if database != self.database => PodCredentials {
                username: login.username.clone(),
                password: login.password.clone(),
                database: self.database.clone(),
                others: Vec::new(),
            },
            _ => self.clone(),
        }
    }
}

/// A `pg_dump --clean --if-exists` of one database, run in the database pod.
#[derive(Clone)]
pub struct PodDump {
    lock_wait_timeout: Option<std::time::Duration>,
    client: kube::Client,
    namespace: String,
    pod: String,
    container: String,
    credentials: PodCredentials,
    database: String,
}

impl std::fmt::Debug for PodDump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodDump")
            .field("namespace", &self.namespace)
            .field("pod", &self.pod)
            .field("container", &self.container)
            .field("credentials", &self.credentials)
            .field("database", &self.database)
            .finish()
    }
}

fn kube_err(context: String) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Kube {
        context,
        source: Box::new(source),
    }
}

/// The first Running pod matching the target's selector.
///
/// # Errors
/// [`Error::NoPod`] when none is Running; [`Error::Kube`] when the API fails.
pub async fn find_pod(client: &kube::Client, target: &PodTarget) -> Result<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &target.namespace);
    let list = pods
        .list(&ListParams::default().labels(&target.selector))
        .await
        .map_err(kube_err(format!(
            "listing pods {} in namespace {}",
            target.selector, target.namespace
        )))?;
    let mut running: Vec<&Pod> = list
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .collect();
    running.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    running
        .first()
        .and_then(|p| p.metadata.name.clone())
        .ok_or_else(|| Error::NoPod {
            namespace: target.namespace.clone(),
            selector: target.selector.clone(),
            found: list.items.len(),
        })
}

/// Reads user, password and database from the target's Secret.
///
/// # Errors
/// [`Error::SecretMissing`] or [`Error::SecretKeyMissing`], naming the Secret and the key.
pub async fn read_credentials(client: &kube::Client, target: &PodTarget) -> Result<PodCredentials> {
    let secrets: Api<K8sSecret> = Api::namespaced(client.clone(), &target.namespace);
    let secret = secrets
        .get_opt(&target.secret)
        .await
        .map_err(kube_err(format!(
            "reading Secret {}/{}",
            target.namespace, target.secret
        )))?
        .ok_or_else(|| Error::SecretMissing {
            namespace: target.namespace.clone(),
            name: target.secret.clone(),
        })?;
    let data: BTreeMap<String, Vec<u8>> = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .chain(
            secret
                .string_data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes())),
        )
        .collect();
    let get = |key: &str| -> Result<String> {
        let missing = || Error::SecretKeyMissing {
            namespace: target.namespace.clone(),
            name: target.secret.clone(),
            key: key.to_owned(),
        };
        let value = data.get(key).ok_or_else(missing)?;
        let text = String::from_utf8(value.clone()).map_err(|_| missing())?;
        let text = text.trim_end_matches(['\n', '\r']).to_owned();
        if text.is_empty() {
            Err(missing())
        } else {
            Ok(text)
        }
    };
    let mut others = Vec::new();
    for key in URL_KEYS {
        let Some(raw) = data
            .get(key)
            .and_then(|v| String::from_utf8(v.clone()).ok())
        else {
            continue;
        };
        match crate::PgConnection::parse(raw.trim()) {
            Ok(conn) => {
                if let (Some(username), Some(password), Some(database)) =
                    (conn.username(), conn.password(), conn.database())
                {
                    others.push(Login {
                        username,
                        password: password.clone(),
                        database,
                    });
                }
            }
            Err(e) => tracing::warn!("ignoring Secret key {key}: {e}"),
        }
    }
    Ok(PodCredentials {
        username: get(&target.username_key)?,
        password: Secret::new(get(&target.password_key)?),
        database: get(&target.database_key)?,
        others,
    })
}

impl PodDump {
    /// A dump of `database` (default: the Secret's) in the first Running pod of `target`.
    ///
    /// # Errors
    /// No Running pod, or a missing Secret or key; each error names the thing.
    pub async fn discover(
        client: kube::Client,
        target: &PodTarget,
        database: Option<String>,
    ) -> Result<Self> {
        let credentials = read_credentials(&client, target).await?;
        let pod = find_pod(&client, target).await?;
        Ok(Self::new(client, target, pod, credentials, database))
    }

    /// A dump in a known pod with known credentials.
    pub fn new(
        client: kube::Client,
        target: &PodTarget,
        pod: String,
        credentials: PodCredentials,
        database: Option<String>,
    ) -> Self {
        let database = database.unwrap_or_else(|| credentials.database.clone());
        Self {
            lock_wait_timeout: None,
            client,
            namespace: target.namespace.clone(),
            pod,
            container: target.container.clone(),
            credentials,
            database,
        }
    }

    /// Fails the dump when a table's lock cannot be had within `timeout` (`pg_dump
    /// --lock-wait-timeout`).
    pub fn lock_wait_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.lock_wait_timeout = Some(timeout);
        self
    }

    /// The pod it runs in.
    pub fn pod(&self) -> &str {
        &self.pod
    }

    /// The exec command: no password in it (see the module documentation).
    pub fn command(&self) -> Vec<String> {
        vec![
            "sh".into(),
            "-c".into(),
            "IFS= read -r PGPASSWORD && export PGPASSWORD && exec pg_dump --clean --if-exists --no-password --format=plain --username=\"$1\" --dbname=\"$2\" ${3:+\"$3\"}".into(),
            "litemaas-dump".into(),
            self.credentials.username.clone(),
            self.database.clone(),
            self.lock_wait_timeout
                .map(crate::pg::lock_wait_arg)
                .unwrap_or_default(),
        ]
    }
}

/// A command running in a pod whose stdin's first line carried the password.
pub struct PodProcess {
    /// The exec connection; `join` it after the status arrived.
    pub process: kube::api::AttachedProcess,
    /// The command's stdin, when it was kept open (see [`exec_with_password`]); dropping it
    /// ends the command's input.
    pub stdin: Option<tokio::io::WriteHalf<tokio::io::SimplexStream>>,
    /// Its stdout.
    pub stdout: tokio::io::ReadHalf<tokio::io::SimplexStream>,
    /// Its stderr (drain it concurrently, or stdout stalls).
    pub stderr: tokio::io::ReadHalf<tokio::io::SimplexStream>,
    /// The exec status channel: the exit code.
    pub status: std::pin::Pin<Box<dyn std::future::Future<Output = Option<ExecStatus>> + Send>>,
}

impl std::fmt::Debug for PodProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodProcess").finish_non_exhaustive()
    }
}

/// Where a command runs: a container of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodContainer {
    /// Namespace.
    pub namespace: String,
    /// Pod.
    pub pod: String,
    /// Container.
    pub container: String,
}

/// Runs `command` (a `sh -c` that reads `PGPASSWORD` from its first stdin line) in a container,
/// writes the password line, and either closes stdin or, with `keep_stdin`, hands it over.
///
/// # Errors
/// The exec request failed, or the password could not be written.
pub async fn exec_with_password(
    client: &kube::Client,
    at: &PodContainer,
    command: Vec<String>,
    password: &Secret,
    params: AttachParams,
    keep_stdin: bool,
) -> Result<PodProcess> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &at.namespace);
    let params = params
        .container(at.container.clone())
        .stdin(true)
        .stdout(true)
        .stderr(true);
    let context = format!("exec in pod {}/{}", at.namespace, at.pod);
    let missing = |what: &str| Error::io(&context, std::io::Error::other(format!("no {what}")));
    let mut process = pods
        .exec(&at.pod, command, &params)
        .await
        .map_err(kube_err(context.clone()))?;
    let mut stdin = process.stdin().ok_or_else(|| missing("stdin"))?;
    let stdout = process.stdout().ok_or_else(|| missing("stdout"))?;
    let stderr = process.stderr().ok_or_else(|| missing("stderr"))?;
    let status = Box::pin(
        process
            .take_status()
            .ok_or_else(|| missing("status channel"))?,
    );
    let mut line = password.expose().as_bytes().to_vec();
    line.push(b'\n');
    stdin
        .write_all(&line)
        .await
        .map_err(|e| Error::io(format!("{context}: writing the password to stdin"), e))?;
    let stdin = if keep_stdin {
        Some(stdin)
    } else {
        stdin
            .shutdown()
            .await
            .map_err(|e| Error::io(format!("{context}: closing stdin"), e))?;
        None
    };
    Ok(PodProcess {
        process,
        stdin,
        stdout,
        stderr,
        status,
    })
}

impl PodDump {
    fn container(&self) -> PodContainer {
        PodContainer {
            namespace: self.namespace.clone(),
            pod: self.pod.clone(),
            container: self.container.clone(),
        }
    }

    async fn exec_with_password(
        &self,
        command: Vec<String>,
        params: AttachParams,
    ) -> Result<PodProcess> {
        exec_with_password(
            &self.client,
            &self.container(),
            command,
            &self.credentials.password,
            params,
            false,
        )
        .await
    }

    /// Runs `CHECKPOINT` in the pod's database, so that a crash-consistent volume snapshot taken
    /// right after needs less WAL replay. Needs a superuser or the `pg_checkpoint` role
    /// (PostgreSQL 15+). The password goes through stdin, as for the dump.
    ///
    /// # Errors
    /// The exec failed, or psql exited non-zero (e.g. missing privilege), with its stderr.
    pub async fn checkpoint(&self) -> Result<()> {
        let command = vec![
            "sh".into(),
            "-c".into(),
            "IFS= read -r PGPASSWORD && export PGPASSWORD && exec psql -X -q -v ON_ERROR_STOP=1 --no-password --username=\"$1\" --dbname=\"$2\" -c CHECKPOINT".into(),
            "litemaas-checkpoint".into(),
            self.credentials.username.clone(),
            self.database.clone(),
        ];
        let mut exec = self
            .exec_with_password(command, AttachParams::default())
            .await?;
        let stderr_task = tokio::spawn(collect_stderr(exec.stderr, "psql".into()));
        let _ = tokio::io::copy(&mut exec.stdout, &mut tokio::io::sink()).await;
        let status = exec.status.await;
        let stderr = stderr_task.await.unwrap_or_default();
        let _ = exec.process.join().await;
        check_status(
            &format!("psql -c CHECKPOINT in pod {}/{}", self.namespace, self.pod),
            status,
            &stderr,
        )
    }
}

#[async_trait]
impl DumpSource for PodDump {
    fn describe(&self) -> String {
        format!(
            "pg_dump of {} in pod {}/{}",
            self.database, self.namespace, self.pod
        )
    }

    fn database(&self) -> Option<String> {
        Some(self.database.clone())
    }

    async fn start(&self) -> Result<DumpStream> {
        let params = AttachParams::default()
            .max_stdout_buf_size(1024 * 1024)
            .max_stderr_buf_size(64 * 1024);
        let PodProcess {
            process,
            stdout,
            stderr,
            status,
            ..
        } = self.exec_with_password(self.command(), params).await?;
        let program = format!("pg_dump in pod {}/{}", self.namespace, self.pod);
        let stderr_task = tokio::spawn(collect_stderr(stderr, program.clone()));
        let (reader, seen) = Tap::new(stdout, 4096, 512);
        let database = Some(self.database.clone());
        let completion = async move {
            let status = status.await;
            let stderr = stderr_task.await.unwrap_or_default();
            let _ = process.join().await;
            check_status(&program, status, &stderr)?;
            let seen = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
            check_complete(&program, &seen)?;
            Ok::<DumpInfo, Error>(dump_info(&seen, database))
        };
        Ok(DumpStream {
            reader: Box::pin(reader),
            completion: Box::pin(completion),
        })
    }
}

/// The exec status channel's verdict, as strict as a local exit status.
///
/// # Errors
/// [`Error::DumpFailed`] naming `program`, its exit code and its stderr as one line.
pub fn check_status(program: &str, status: Option<ExecStatus>, stderr: &str) -> Result<()> {
    let one_line = one_line(stderr);
    let Some(status) = status else {
        return Err(Error::DumpFailed {
            program: program.to_owned(),
            status: "no exit status from the exec API".into(),
            stderr: one_line,
        });
    };
    if status.status.as_deref() == Some("Success") {
        return Ok(());
    }
    let code = status
        .details
        .as_ref()
        .and_then(|d| d.causes.as_ref())
        .and_then(|c| c.iter().find(|c| c.reason.as_deref() == Some("ExitCode")))
        .and_then(|c| c.message.clone());
    let status = match code {
        Some(code) => format!("exit code {code}"),
        None => format!(
            "{}: {}",
            status.reason.as_deref().unwrap_or("Failure"),
            status.message.as_deref().unwrap_or("no message")
        ),
    };
    Err(Error::DumpFailed {
        program: program.to_owned(),
        status,
        stderr: one_line,
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{StatusCause, StatusDetails};

    use super::*;

    fn exit(code: &str) -> ExecStatus {
        ExecStatus {
            status: Some("Failure".into()),
            reason: Some("NonZeroExitCode".into()),
            details: Some(StatusDetails {
                causes: Some(vec![StatusCause {
                    reason: Some("ExitCode".into()),
                    message: Some(code.into()),
                    ..StatusCause::default()
                }]),
                ..StatusDetails::default()
            }),
            ..ExecStatus::default()
        }
    }

    #[test]
    fn the_status_channel_decides() {
        let ok = ExecStatus {
            status: Some("Success".into()),
            ..ExecStatus::default()
        };
        assert!(check_status("pg_dump", Some(ok), "").is_ok());
        let err =
            check_status("pg_dump", Some(exit("1")), "pg_dump: error: x\n\tdetail").unwrap_err();
        assert_eq!(
            err.to_string(),
            "pg_dump failed (exit code 1): pg_dump: error: x detail"
        );
        assert!(matches!(
            check_status("pg_dump", None, ""),
            Err(Error::DumpFailed { .. })
        ));
    }

    #[tokio::test]
    async fn the_command_holds_no_password() {
        let credentials = PodCredentials {
            username: "litemaas".into(),
            password: Secret::new("hunter2"),
            database: "litemaas".into(),
            others: vec![Login {
                username: "litellm".into(),
                password: Secret::new("s3cond"),
                database: "litellm".into(),
            }],
        };
        let other = credentials.for_database("litellm");
        assert_eq!(
            (other.username.as_str(), other.password.expose()),
            ("litellm", "s3cond")
        );
        assert_eq!(credentials.for_database("litemaas").username, "litemaas");
        assert_eq!(credentials.for_database("unknown").username, "litemaas");
        assert!(!format!("{credentials:?}").contains("s3cond"));
        let target = PodTarget::litemaas("ns");
        // A client is needed to build the value but is never used here.
        let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let dump = PodDump::new(client, &target, "db-0".into(), credentials, None);
        let command = dump.command().join(" ");
        assert!(!command.contains("hunter2") && command.contains("--clean --if-exists"));
        assert!(!format!("{dump:?}").contains("hunter2"));
        let dump = dump.lock_wait_timeout(std::time::Duration::from_secs(2));
        assert_eq!(
            dump.command().last().map(String::as_str),
            Some("--lock-wait-timeout=2000")
        );
    }
}
