//! `psql` inside the database pod, through the Kubernetes exec API (no `oc`/`kubectl`).
//!
//! The password is the first line written to the command's stdin, never part of its command
//! line (which is in the exec request's URL, so in the API server's audit log, and in the pod's
//! process list). The SQL follows on the same stdin. Ending the exec stream only ends psql's
//! input in the pod — and since the restore never uses `--single-transaction`, that never
//! commits anything.

use async_trait::async_trait;
use bytes::Bytes;
use kube::api::AttachParams;
use litemaas_dump::Secret;
use litemaas_dump::pod::{
    PodContainer, PodCredentials, PodProcess, PodTarget, exec_with_password, find_pod,
    read_credentials,
};

use crate::sink::{Ended, Pipes, SqlSession, SqlSink, run_script};
use crate::{Error, Result};

/// psql in the database pod, with the credentials of the LiteMaaS Secret.
#[derive(Clone)]
pub struct PodPsql {
    client: kube::Client,
    at: PodContainer,
    username: String,
    password: Secret,
    database: String,
}

impl std::fmt::Debug for PodPsql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodPsql")
            .field("at", &self.at)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("database", &self.database)
            .finish()
    }
}

impl PodPsql {
    /// psql for `database` (default: the Secret's) in the first Running pod of `target`, with
    /// the login the Secret gives for that database (as the backup does).
    ///
    /// # Errors
    /// No Running pod, a missing Secret or key: each error names the thing.
    pub async fn discover(
        client: kube::Client,
        target: &PodTarget,
        database: Option<String>,
    ) -> Result<Self> {
        let kube = |e: litemaas_dump::Error| Error::Sink {
            context: format!("cannot restore in namespace {}", target.namespace),
            source: Box::new(e),
        };
        let credentials = read_credentials(&client, target).await.map_err(kube)?;
        let pod = find_pod(&client, target).await.map_err(kube)?;
        Ok(Self::new(client, target, pod, &credentials, database))
    }

    /// psql in a known pod with known credentials.
    pub fn new(
        client: kube::Client,
        target: &PodTarget,
        pod: String,
        credentials: &PodCredentials,
        database: Option<String>,
    ) -> Self {
        let database = database.unwrap_or_else(|| credentials.database.clone());
        let login = credentials.for_database(&database);
        Self {
            client,
            at: PodContainer {
                namespace: target.namespace.clone(),
                pod,
                container: target.container.clone(),
            },
            username: login.username,
            password: login.password,
            database,
        }
    }

    /// The exec command: no password in it.
    pub fn command(&self) -> Vec<String> {
        vec![
            "sh".into(),
            "-c".into(),
            format!(
                "IFS= read -r PGPASSWORD && export PGPASSWORD && PGAPPNAME={} exec psql -X -q -A -t -v ON_ERROR_STOP=1 --no-password --username=\"$1\" --dbname=\"$2\"",
                crate::APPLICATION_NAME
            ),
            "litemaas-restore".into(),
            self.username.clone(),
            self.database.clone(),
        ]
    }
}

#[async_trait]
impl SqlSink for PodPsql {
    fn describe(&self) -> String {
        format!(
            "database {} in pod {}/{}",
            self.database, self.at.namespace, self.at.pod
        )
    }

    fn database(&self) -> Option<String> {
        Some(self.database.clone())
    }

    fn with_database(&self, database: &str) -> Box<dyn SqlSink> {
        let mut other = self.clone();
        other.database = database.to_owned();
        Box::new(other)
    }

    async fn query(&self, sql: &str) -> Result<String> {
        run_script(self, sql).await
    }

    async fn start(&self) -> Result<Box<dyn SqlSession>> {
        let params = AttachParams::default()
            .max_stdin_buf_size(1024 * 1024)
            .max_stdout_buf_size(64 * 1024)
            .max_stderr_buf_size(64 * 1024);
        let PodProcess {
            process,
            stdin,
            stdout,
            stderr,
            status,
        } = exec_with_password(
            &self.client,
            &self.at,
            self.command(),
            &self.password,
            params,
            true,
        )
        .await
        .map_err(|e| Error::Sink {
            context: format!(
                "cannot start psql in pod {}/{}",
                self.at.namespace, self.at.pod
            ),
            source: Box::new(e),
        })?;
        let stdin = stdin.ok_or_else(|| Error::Internal("the exec kept no stdin".into()))?;
        Ok(Box::new(PodSession {
            process,
            exec: Exec::Running(status),
            program: format!("psql in pod {}/{}", self.at.namespace, self.at.pod),
            pipes: Pipes::new(stdin, stdout, stderr).await,
        }))
    }
}

type ExecStatus = Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>;

/// The exec: running (its status to come), or ended with this status.
enum Exec {
    Running(std::pin::Pin<Box<dyn std::future::Future<Output = ExecStatus> + Send>>),
    Ended(Box<ExecStatus>),
}

impl Exec {
    /// Runs `io` unless the exec ends first: when its message loop stops on an error, kube
    /// leaves stdin and the outputs open, and a write or a sync would wait for ever.
    async fn unless_ended<T>(
        &mut self,
        io: impl std::future::Future<Output = std::io::Result<T>>,
    ) -> std::io::Result<T> {
        let Exec::Running(status) = self else {
            return Err(std::io::ErrorKind::BrokenPipe.into());
        };
        let done = tokio::select! {
            result = io => return result,
            done = status => done,
        };
        *self = Exec::Ended(Box::new(done));
        Err(std::io::ErrorKind::BrokenPipe.into())
    }
}

struct PodSession {
    process: kube::api::AttachedProcess,
    exec: Exec,
    program: String,
    pipes: Pipes<tokio::io::WriteHalf<tokio::io::SimplexStream>>,
}

#[async_trait]
impl SqlSession for PodSession {
    async fn write(&mut self, data: Bytes) -> std::io::Result<()> {
        self.exec.unless_ended(self.pipes.write(&data)).await
    }

    async fn sync(&mut self) -> std::io::Result<()> {
        self.exec.unless_ended(self.pipes.sync()).await
    }

    fn backend_pid(&self) -> Option<u32> {
        self.pipes.backend_pid()
    }

    fn preamble_lines(&self) -> u64 {
        crate::sink::PREAMBLE_LINES
    }

    async fn finish(mut self: Box<Self>) -> Result<Ended> {
        self.pipes.close().await;
        let PodSession {
            process,
            exec,
            program,
            pipes,
        } = *self;
        let status = match exec {
            Exec::Running(status) => status.await,
            Exec::Ended(status) => *status,
        };
        // The exec's message loop is over. When it ended on an error (the connection closed
        // while it sent stdin's end, say), kube leaves the output streams without an end:
        // read what is there, then stop.
        let _ = process.join().await;
        pipes.outputs_written();
        let (success, status) = match litemaas_dump::pod::check_status(&program, status, "") {
            Ok(()) => (true, "exit code 0".to_owned()),
            Err(litemaas_dump::Error::DumpFailed { status, .. }) => (false, status),
            Err(e) => (false, e.to_string()),
        };
        Ok(pipes.ended(success, status).await)
    }
}
