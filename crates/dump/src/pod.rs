//! `pg_dump` inside the database pod, through the Kubernetes exec API (no `oc`/`kubectl`).
//!
//! The credentials come from a Secret read through the API. The password is written to the
//! command's **stdin**, never put in its command line: the command line of an exec request is
//! part of the request URL, which the API server writes to its audit log, and it shows in the
//! pod's process list (`/proc/<pid>/cmdline`) for as long as the dump runs. A small POSIX `sh`
//! wrapper ([`DUMP_WRAPPER`]) reads that line and hands it to pg_dump alone, as `PGPASSWORD` in
//! its environment, as with a local dump.
//!
//! # Stopping the dump
//!
//! When the exec stream goes away (the run was cancelled by a signal or its deadline, or it
//! died), a kubelet does **not** kill the command: it only closes its stdin, and pg_dump would
//! run on until its next write to the dead stream, which for a pg_dump waiting behind a lock
//! may be hours, holding its place in the lock queue (and so blocking everyone queued behind
//! it). So the dump's stdin stays open for the whole dump, and the wrapper runs pg_dump in the
//! background beside a watchdog that waits for stdin's end: then it sends pg_dump SIGTERM, on
//! which pg_dump sends the server a cancel request for its query and exits (measured on
//! PostgreSQL 15: a backend waiting for a lock is gone at once; SIGKILL would leave it waiting),
//! and SIGKILL if it is still there [`STOP_GRACE`] later. The wrapper exits with pg_dump's exit
//! status. On a normal end stdin is closed only after the exit status arrived; on cancellation
//! it is closed at once (exec protocol v5), and if even that cannot be sent, the connection's
//! end makes the kubelet close it.

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
            dump_wrapper(STOP_GRACE),
            "litemaas-dump".into(),
            self.credentials.username.clone(),
            self.database.clone(),
            self.lock_wait_timeout
                .map(crate::pg::lock_wait_arg)
                .unwrap_or_default(),
        ]
    }
}

/// How long the in-pod watchdog gives pg_dump after SIGTERM before it sends SIGKILL.
pub const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// The in-pod wrapper around pg_dump, run as `sh -c DUMP_WRAPPER litemaas-dump USER DATABASE
/// [--lock-wait-timeout=MS]` with the password as the first line of stdin (see the module
/// documentation). POSIX `sh` only (dash, busybox, bash): the postgres images have `/bin/sh`.
/// `@GRACE@` stands for the whole seconds between SIGTERM and SIGKILL ([`dump_wrapper`]).
///
/// - The password line is read by the shell's `read` (one byte at a time: nothing more is
///   consumed) and given to pg_dump alone by a prefix assignment; it is never exported to
///   anything else, and never in a command line.
/// - A background command's stdin is `/dev/null` in a non-interactive shell, so the watchdog
///   reads the exec's stdin through fd 3, saved before; pg_dump gets neither.
/// - The watchdog uses builtins until stdin ends (killing it then leaves nothing behind), and
///   traps SIGTERM only while it naps between checks, so the wrapper can always end it.
/// - Exit status: pg_dump's (`wait`), or 2 with a message when no password line came.
pub const DUMP_WRAPPER: &str = r#"IFS= read -r pw || { echo "$0: no password line on stdin" >&2; exit 2; }
exec 3<&0
PGPASSWORD=$pw pg_dump --clean --if-exists --no-password --format=plain --username="$1" --dbname="$2" ${3:+"$3"} 3<&- &
dump=$!
unset pw
(
  while IFS= read -r line <&3; do :; done
  kill -TERM "$dump" 2>/dev/null || exit 0
  trap 'kill "$nap" 2>/dev/null; exit 0' TERM
  n=0
  while kill -0 "$dump" 2>/dev/null; do
    if [ "$n" -ge @GRACE@ ]; then kill -KILL "$dump" 2>/dev/null; exit 0; fi
    sleep 1 & nap=$!
    wait "$nap"
    n=$((n + 1))
  done
) >/dev/null 2>&1 &
watchdog=$!
exec 3<&-
wait "$dump"
status=$?
kill "$watchdog" 2>/dev/null
wait "$watchdog" 2>/dev/null
exit "$status"
"#;

/// [`DUMP_WRAPPER`] with `grace` (rounded up to whole seconds) between SIGTERM and SIGKILL.
pub fn dump_wrapper(grace: std::time::Duration) -> String {
    let secs = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
    DUMP_WRAPPER.replace("@GRACE@", &secs.to_string())
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
        keep_stdin: bool,
    ) -> Result<PodProcess> {
        exec_with_password(
            &self.client,
            &self.container(),
            command,
            &self.credentials.password,
            params,
            keep_stdin,
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
            .exec_with_password(command, AttachParams::default(), false)
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
        // Stdin stays open until pg_dump has ended: its end is what stops pg_dump in the pod.
        let PodProcess {
            process,
            stdin,
            stdout,
            stderr,
            status,
        } = self
            .exec_with_password(self.command(), params, true)
            .await?;
        let program = format!("pg_dump in pod {}/{}", self.namespace, self.pod);
        let stdin = stdin.ok_or_else(|| {
            Error::io(
                &program,
                std::io::Error::other("the exec kept no stdin to stop pg_dump with"),
            )
        })?;
        let stderr_task = tokio::spawn(collect_stderr(stderr, program.clone()));
        let (stdout, handed_over) = HandOver::new(stdout);
        let (reader, seen) = Tap::new(stdout, 4096, 512);
        let mut exec = LiveExec {
            program: program.clone(),
            stdin: Some(stdin),
            process: Some(process),
            status: Some(status),
            stdout: Some(handed_over),
        };
        let database = Some(self.database.clone());
        let completion = async move {
            let status = exec.exit_status().await;
            let stderr = stderr_task.await.unwrap_or_default();
            exec.finish().await;
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

/// How long a cancelled dump's stopper waits for the wrapper's exit status (pg_dump's grace and
/// some) before it drops the exec connection anyway.
const STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

type Status = std::pin::Pin<Box<dyn std::future::Future<Output = Option<ExecStatus>> + Send>>;
type Pipe = tokio::io::ReadHalf<tokio::io::SimplexStream>;

/// The exec of a dump until its exit status arrived. Dropped before that (the dump was
/// cancelled, or failed on our side), it closes the wrapper's stdin, which stops pg_dump in the
/// pod (see the module documentation), in a task of its own that keeps reading the exec stream
/// until the exit status arrives: a full stdout buffer would otherwise hold the stream, and
/// the close behind it.
struct LiveExec {
    program: String,
    stdin: Option<tokio::io::WriteHalf<tokio::io::SimplexStream>>,
    process: Option<kube::api::AttachedProcess>,
    status: Option<Status>,
    /// Where the stdout pipe arrives when the reader is dropped.
    stdout: Option<tokio::sync::oneshot::Receiver<Pipe>>,
}

impl LiveExec {
    /// The exit status of the wrapper, which is pg_dump's.
    async fn exit_status(&mut self) -> Option<ExecStatus> {
        let status = match self.status.as_mut() {
            Some(status) => status.await,
            None => None,
        };
        // Arrived: nothing is left to stop (and the future must not be polled again).
        self.status = None;
        status
    }

    /// After the exit status: closes stdin (nothing is left to stop) and ends the connection.
    async fn finish(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.shutdown().await;
        }
        self.stdout = None;
        if let Some(process) = self.process.take() {
            let _ = process.join().await;
        }
    }
}

impl Drop for LiveExec {
    fn drop(&mut self) {
        let (Some(mut stdin), Some(process), Some(status)) =
            (self.stdin.take(), self.process.take(), self.status.take())
        else {
            // Finished, or the wrapper has exited: nothing is left to stop.
            return;
        };
        let program = std::mem::take(&mut self.program);
        let stdout = self.stdout.take();
        // Without a runtime (it is shutting down) the connection simply ends, and the kubelet
        // closes stdin then.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let _ = stdin.shutdown().await;
            tracing::info!("{program}: cancelled; its stdin is closed, which stops it");
            let drain = tokio::spawn(async move {
                if let Some(Ok(mut pipe)) = match stdout {
                    Some(rx) => Some(rx.await),
                    None => None,
                } {
                    let _ = tokio::io::copy(&mut pipe, &mut tokio::io::sink()).await;
                }
            });
            match tokio::time::timeout(STOP_WAIT, status).await {
                Ok(Some(status)) => {
                    tracing::info!("{program} stopped ({})", describe_status(&status));
                }
                _ => tracing::warn!(
                    "{program}: no exit status within {STOP_WAIT:?} of closing its stdin; dropping the exec connection (the kubelet closes its stdin then too)"
                ),
            }
            drain.abort();
            drop(process);
        });
    }
}

/// The exec's stdout; dropped before its end, it hands the pipe to the [`LiveExec`] stopper.
struct HandOver {
    pipe: Option<Pipe>,
    to: Option<tokio::sync::oneshot::Sender<Pipe>>,
}

impl HandOver {
    fn new(pipe: Pipe) -> (Self, tokio::sync::oneshot::Receiver<Pipe>) {
        let (to, from) = tokio::sync::oneshot::channel();
        (
            Self {
                pipe: Some(pipe),
                to: Some(to),
            },
            from,
        )
    }
}

impl tokio::io::AsyncRead for HandOver {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.pipe.as_mut() {
            Some(pipe) => std::pin::Pin::new(pipe).poll_read(cx, buf),
            None => std::task::Poll::Ready(Ok(())),
        }
    }
}

impl Drop for HandOver {
    fn drop(&mut self) {
        if let (Some(pipe), Some(to)) = (self.pipe.take(), self.to.take()) {
            let _ = to.send(pipe);
        }
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
    Err(Error::DumpFailed {
        program: program.to_owned(),
        status: describe_status(&status),
        stderr: one_line,
    })
}

/// `exit code N`, or the status's reason and message when it has no exit code.
fn describe_status(status: &ExecStatus) -> String {
    if status.status.as_deref() == Some("Success") {
        return "exit code 0".into();
    }
    let code = status
        .details
        .as_ref()
        .and_then(|d| d.causes.as_ref())
        .and_then(|c| c.iter().find(|c| c.reason.as_deref() == Some("ExitCode")))
        .and_then(|c| c.message.clone());
    match code {
        Some(code) => format!("exit code {code}"),
        None => format!(
            "{}: {}",
            status.reason.as_deref().unwrap_or("Failure"),
            status.message.as_deref().unwrap_or("no message")
        ),
    }
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
        assert_eq!(dump.command()[2], dump_wrapper(STOP_GRACE));
        assert!(!dump.command()[2].contains("@GRACE@") && dump.command()[2].contains("-ge 10 ]"));
        assert!(dump_wrapper(std::time::Duration::from_millis(1500)).contains("-ge 2 ]"));
    }

    /// The wrapper run by real shells (dash, Debian's `/bin/sh`, and busybox `sh` when it is
    /// installed) around a fake `pg_dump` that records what it got and behaves as told.
    mod wrapper {
        use std::path::{Path, PathBuf};
        use std::process::Stdio;
        use std::time::{Duration, Instant};

        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        use super::super::dump_wrapper;

        const PASSWORD: &str = "hunter2-in-the-pod";
        const DEADLINE: Duration = Duration::from_secs(10);

        /// `ok` ends like a dump; `fail` fails; `block` waits (a dump behind a lock) and exits
        /// 1 on SIGTERM, as pg_dump does; `stubborn` ignores SIGTERM.
        const FAKE_PG_DUMP: &str = r#"#!/bin/sh
echo $$ > "$FAKE_DIR/pid"
printf '%s' "$PGPASSWORD" > "$FAKE_DIR/password"
echo "args: $*"
case "$FAKE_MODE" in
  ok) echo "-- PostgreSQL database dump complete"; exit 0 ;;
  fail) echo "pg_dump: error: boom" >&2; exit 3 ;;
  block) trap 'echo TERM > "$FAKE_DIR/signal"; exit 1' TERM ;;
  stubborn) trap 'echo TERM > "$FAKE_DIR/signal"' TERM ;;
esac
echo waiting > "$FAKE_DIR/state"
while :; do sleep 0.05; done
"#;

        fn shells() -> Vec<Vec<&'static str>> {
            let on_path = |program: &str| {
                std::env::var_os("PATH").is_some_and(|path| {
                    std::env::split_paths(&path).any(|dir| dir.join(program).is_file())
                })
            };
            let mut shells = vec![if on_path("dash") {
                vec!["dash"]
            } else {
                vec!["sh"]
            }];
            if on_path("busybox") {
                shells.push(vec!["busybox", "sh"]);
            } else {
                eprintln!("busybox is not installed: the wrapper is checked with dash only");
            }
            shells
        }

        struct Run {
            child: tokio::process::Child,
            /// The wrapper's pid, which is its process group's id.
            group: u32,
            stdin: Option<tokio::process::ChildStdin>,
            dir: PathBuf,
            shell: String,
        }

        impl Drop for Run {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.dir);
            }
        }

        fn scratch_dir() -> PathBuf {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "litemaas-dump-wrapper-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("bin")).unwrap();
            dir
        }

        /// Starts the wrapper in a process group of its own and writes the password line.
        async fn start(shell: &[&str], mode: &str, grace: Duration) -> Run {
            use std::os::unix::fs::PermissionsExt;
            let dir = scratch_dir();
            let fake = dir.join("bin/pg_dump");
            std::fs::write(&fake, FAKE_PG_DUMP).unwrap();
            std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
            let path = format!(
                "{}:{}",
                dir.join("bin").display(),
                std::env::var("PATH").unwrap_or_default()
            );
            let mut child = tokio::process::Command::new(shell[0])
                .args(&shell[1..])
                .arg("-c")
                .arg(dump_wrapper(grace))
                .args([
                    "litemaas-dump",
                    "litemaas",
                    "litemaas db",
                    "--lock-wait-timeout=5",
                ])
                .env("PATH", path)
                .env("FAKE_DIR", &dir)
                .env("FAKE_MODE", mode)
                .env_remove("PGPASSWORD")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .process_group(0)
                .kill_on_drop(true)
                .spawn()
                .unwrap();
            let mut stdin = child.stdin.take().unwrap();
            stdin
                .write_all(format!("{PASSWORD}\n").as_bytes())
                .await
                .unwrap();
            Run {
                group: child.id().unwrap(),
                child,
                stdin: Some(stdin),
                dir,
                shell: shell.join(" "),
            }
        }

        impl Run {
            async fn wait_file(&self, name: &str) -> String {
                let path = self.dir.join(name);
                let start = Instant::now();
                loop {
                    if let Ok(text) = std::fs::read_to_string(&path)
                        && text.ends_with('\n')
                    {
                        return text;
                    }
                    assert!(start.elapsed() < DEADLINE, "{}: no {name}", self.shell);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }

            /// Waits for the wrapper's exit: (exit code, stdout, stderr, how long it took).
            async fn exit(&mut self) -> (Option<i32>, String, String, Duration) {
                let start = Instant::now();
                let (mut out, mut err) = (String::new(), String::new());
                let mut stdout = self.child.stdout.take().unwrap();
                let mut stderr = self.child.stderr.take().unwrap();
                let waited = tokio::time::timeout(DEADLINE, async {
                    let (a, b, status) = tokio::join!(
                        stdout.read_to_string(&mut out),
                        stderr.read_to_string(&mut err),
                        self.child.wait()
                    );
                    a.unwrap();
                    b.unwrap();
                    status.unwrap()
                })
                .await;
                let status =
                    waited.unwrap_or_else(|_| panic!("{}: the wrapper still runs", self.shell));
                let took = start.elapsed();
                // Nothing of the wrapper's is left behind (the fake's own nap ends in 50 ms).
                let group = self.group;
                let start = Instant::now();
                while !members(group).is_empty() {
                    assert!(
                        start.elapsed() < Duration::from_secs(2),
                        "{}: left behind: {:?}",
                        self.shell,
                        members(group)
                    );
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                (status.code(), out, err, took)
            }
        }

        /// Live (not zombie) processes of a process group: (pid, parent pid).
        fn members(group: u32) -> Vec<(u32, u32)> {
            let mut found = Vec::new();
            for entry in std::fs::read_dir("/proc").unwrap().flatten() {
                let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                    continue;
                };
                // pid (comm) state ppid pgrp ...: comm may hold anything but ')'.
                let Some((head, rest)) = stat.rsplit_once(')') else {
                    continue;
                };
                let fields: Vec<&str> = rest.split_whitespace().collect();
                let pid = head.split_whitespace().next().and_then(|p| p.parse().ok());
                if let (Some(pid), [state, ppid, pgrp, ..]) = (pid, fields.as_slice())
                    && *state != "Z"
                    && pgrp.parse() == Ok(group)
                {
                    found.push((pid, ppid.parse().unwrap_or(0)));
                }
            }
            found
        }

        fn proc_file(pid: u32, name: &str) -> Vec<u8> {
            std::fs::read(Path::new("/proc").join(pid.to_string()).join(name)).unwrap_or_default()
        }

        fn contains(haystack: &[u8], needle: &str) -> bool {
            haystack
                .windows(needle.len())
                .any(|w| w == needle.as_bytes())
        }

        #[tokio::test]
        async fn a_normal_dump_completes_with_stdin_open_and_exits_with_pg_dumps_status() {
            for shell in shells() {
                let mut run = start(&shell, "ok", Duration::from_secs(10)).await;
                // Stdin stays open (`run.stdin`), as the client keeps it until the exit status.
                let (code, out, err, _) = run.exit().await;
                let name = &run.shell;
                assert_eq!(code, Some(0), "{name}: {err}");
                assert_eq!(err, "", "{name}");
                assert_eq!(
                    out,
                    "args: --clean --if-exists --no-password --format=plain --username=litemaas --dbname=litemaas db --lock-wait-timeout=5\n-- PostgreSQL database dump complete\n",
                    "{name}"
                );
                assert_eq!(
                    std::fs::read_to_string(run.dir.join("password")).unwrap(),
                    PASSWORD,
                    "{name}: pg_dump gets the password through its environment"
                );
            }
        }

        #[tokio::test]
        async fn a_failing_pg_dump_fails_the_wrapper_with_its_exit_status() {
            for shell in shells() {
                let mut run = start(&shell, "fail", Duration::from_secs(10)).await;
                let (code, _, err, _) = run.exit().await;
                // Only pg_dump's words: the shell reports nothing of the watchdog it ended.
                let name = &run.shell;
                assert_eq!(
                    (code, err.as_str()),
                    (Some(3), "pg_dump: error: boom\n"),
                    "{name}"
                );
            }
        }

        #[tokio::test]
        async fn the_end_of_stdin_stops_pg_dump_with_sigterm_and_the_password_is_in_no_command_line()
         {
            for shell in shells() {
                let mut run = start(&shell, "block", Duration::from_secs(10)).await;
                let pid: u32 = run.wait_file("pid").await.trim().parse().unwrap();
                run.wait_file("state").await;
                let name = run.shell.clone();
                // Every process: no password in a command line; in an environment only in
                // pg_dump's (and its children's, here the fake's naps).
                let group = members(run.group);
                assert!(group.len() >= 2, "{name}: {group:?}");
                for (p, parent) in &group {
                    if *p != pid && *parent != pid {
                        assert!(
                            !contains(&proc_file(*p, "environ"), PASSWORD),
                            "{name}: process {p} has the password in its environment"
                        );
                    }
                }
                for entry in std::fs::read_dir("/proc").unwrap().flatten() {
                    let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
                    assert!(!contains(&cmdline, PASSWORD), "{name}: {entry:?}");
                }
                // Still running while stdin is open...
                tokio::time::sleep(Duration::from_millis(200)).await;
                assert!(run.child.try_wait().unwrap().is_none(), "{name}");
                // ...and stopped by SIGTERM once it ends.
                run.stdin = None;
                let (code, _, _, took) = run.exit().await;
                assert_eq!(code, Some(1), "{name}: pg_dump's status");
                assert!(took < Duration::from_secs(2), "{name}: took {took:?}");
                let signal = std::fs::read_to_string(run.dir.join("signal")).unwrap();
                assert_eq!(signal, "TERM\n", "{name}");
                assert!(!Path::new("/proc").join(pid.to_string()).exists(), "{name}");
            }
        }

        #[tokio::test]
        async fn a_pg_dump_that_ignores_sigterm_is_killed_after_the_grace() {
            for shell in shells() {
                let mut run = start(&shell, "stubborn", Duration::from_secs(1)).await;
                run.wait_file("state").await;
                run.stdin = None;
                let (code, _, _, took) = run.exit().await;
                let name = &run.shell;
                assert_eq!(code, Some(128 + 9), "{name}: SIGKILL");
                assert!(
                    took >= Duration::from_millis(900) && took < Duration::from_secs(4),
                    "{name}: took {took:?}"
                );
                let signal = std::fs::read_to_string(run.dir.join("signal")).unwrap();
                assert_eq!(signal, "TERM\n", "{name}: SIGTERM first");
            }
        }

        #[tokio::test]
        async fn without_a_password_line_nothing_starts() {
            for shell in shells() {
                let dir = scratch_dir();
                let mut child = tokio::process::Command::new(shell[0])
                    .args(&shell[1..])
                    .arg("-c")
                    .arg(dump_wrapper(Duration::from_secs(10)))
                    .args(["litemaas-dump", "litemaas", "litemaas", ""])
                    .env("FAKE_DIR", &dir)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                let mut err = String::new();
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .await
                    .unwrap();
                let status = child.wait().await.unwrap();
                assert_eq!(status.code(), Some(2), "{shell:?}");
                assert_eq!(
                    err, "litemaas-dump: no password line on stdin\n",
                    "{shell:?}"
                );
                assert!(!dir.join("pid").exists());
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}
