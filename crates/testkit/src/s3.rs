//! The S3-compatible test servers: moto, and s3rver as a second, independent implementation.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};

use crate::sys;

/// Access key the moto test server accepts (moto accepts any).
pub const ACCESS_KEY: &str = "testing-access-key";
/// Secret key the moto test server accepts.
pub const SECRET_KEY: &str = "testing-secret-key";
/// The only access key s3rver accepts (its default account); any other is `InvalidAccessKeyId`.
pub const S3RVER_ACCESS_KEY: &str = "S3RVER";
/// The secret key of s3rver's default account.
pub const S3RVER_SECRET_KEY: &str = "S3RVER";
/// The s3rver version `scripts/test-deps.sh` installs.
pub const S3RVER_VERSION: &str = "3.7.1";

/// Which S3 implementation a test server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Implementation {
    /// moto 5.2.5 (Python): the main test server.
    Moto,
    /// s3rver 3.7.1 (Node.js): a second, independent implementation.
    S3rver,
}

/// An S3-compatible server on loopback.
///
/// `scripts/test.sh` starts one moto and one s3rver for the whole run and exports
/// `LITEMAAS_TEST_S3_ENDPOINT` and `LITEMAAS_TEST_S3RVER_ENDPOINT`; without them, the first test
/// of a binary that needs one starts its own from what `scripts/test-deps.sh` installed, stopped
/// when the process exits.
#[derive(Debug)]
pub struct S3Server {
    endpoint: String,
    implementation: Implementation,
    child: Option<Child>,
    /// s3rver's data directory, when this server started it.
    data: Option<tempfile::TempDir>,
}

impl S3Server {
    /// The moto server shared by this test run.
    pub fn shared() -> &'static S3Server {
        static SHARED: OnceLock<S3Server> = OnceLock::new();
        SHARED.get_or_init(|| {
            S3Server::shared_or_start(Implementation::Moto, "LITEMAAS_TEST_S3_ENDPOINT", || {
                S3Server::start_moto(&[])
            })
        })
    }

    /// The s3rver server shared by this test run.
    pub fn shared_s3rver() -> &'static S3Server {
        static SHARED: OnceLock<S3Server> = OnceLock::new();
        SHARED.get_or_init(|| {
            S3Server::shared_or_start(
                Implementation::S3rver,
                "LITEMAAS_TEST_S3RVER_ENDPOINT",
                S3Server::start_s3rver,
            )
        })
    }

    /// The server at `$env_var`, or one started now and stopped when the process exits.
    fn shared_or_start(
        implementation: Implementation,
        env_var: &str,
        start: impl FnOnce() -> Result<S3Server>,
    ) -> S3Server {
        if let Ok(endpoint) = std::env::var(env_var)
            && !endpoint.is_empty()
        {
            return S3Server {
                endpoint,
                implementation,
                child: None,
                data: None,
            };
        }
        let mut server = start()
            .unwrap_or_else(|e| panic!("start the {implementation:?} S3 test server: {e:#}"));
        let (child, data) = (server.child.take(), server.data.take());
        sys::at_exit(move || {
            if let Some(mut child) = child {
                let _ = child.kill();
                let _ = child.wait();
            }
            drop(data);
        });
        server
    }

    /// Starts s3rver on a random port with a data directory of its own. Stopped on drop.
    pub fn start_s3rver() -> Result<S3Server> {
        let program = s3rver_program();
        if !program.exists() {
            bail!(
                "s3rver not installed at {} (run scripts/test-deps.sh)",
                program.display()
            );
        }
        let data = tempfile::Builder::new()
            .prefix("litemaas-s3rver-")
            .tempdir()
            .context("s3rver data directory")?;
        let port = crate::free_port()?;
        let mut cmd = Command::new(&program);
        cmd.arg("-d").arg(data.path()).args([
            "-p",
            &port.to_string(),
            "-a",
            "127.0.0.1",
            "--silent",
        ]);
        let mut server = S3Server::spawn(Implementation::S3rver, cmd, port)?;
        server.data = Some(data);
        Ok(server)
    }

    /// A server of its own that checks credentials (moto's IAM with no users): every request
    /// is refused with `InvalidAccessKeyId`. Stopped on drop.
    pub fn start_with_auth() -> Result<S3Server> {
        S3Server::start_moto(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")])
    }

    fn start_moto(envs: &[(&str, &str)]) -> Result<S3Server> {
        let python = moto_python();
        if !python.exists() {
            bail!(
                "moto not installed at {} (run scripts/test-deps.sh)",
                python.display()
            );
        }
        let port = crate::free_port()?;
        let mut cmd = Command::new(&python);
        cmd.args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .envs(envs.iter().copied());
        S3Server::spawn(Implementation::Moto, cmd, port)
    }

    /// Spawns a server and waits until it listens on `port`.
    fn spawn(implementation: Implementation, mut cmd: Command, port: u16) -> Result<S3Server> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        sys::die_with_parent(&mut cmd, libc::SIGKILL);
        let mut child = sys::on_spawner_thread(move || cmd.spawn())
            .with_context(|| format!("spawn {implementation:?}"))?;
        let endpoint = format!("http://127.0.0.1:{port}");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = child.try_wait()? {
                bail!("{implementation:?} exited with {status}");
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                bail!("{implementation:?} did not listen on {endpoint} within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(S3Server {
            endpoint,
            implementation,
            child: Some(child),
            data: None,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The implementation this server runs.
    pub fn implementation(&self) -> Implementation {
        self.implementation
    }

    /// The access key and secret key this server accepts.
    pub fn credentials(&self) -> (&'static str, &'static str) {
        match self.implementation {
            Implementation::Moto => (ACCESS_KEY, SECRET_KEY),
            Implementation::S3rver => (S3RVER_ACCESS_KEY, S3RVER_SECRET_KEY),
        }
    }

    /// An SDK client for the server (static test credentials, `us-east-1`, path style, no retries).
    pub fn client(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .credentials_provider(Credentials::new(
                self.credentials().0,
                self.credentials().1,
                None,
                None,
                "litemaas-testkit",
            ))
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// Creates a bucket with a unique name for one test.
    pub async fn new_bucket(&self, prefix: &str) -> Result<String> {
        let bucket = crate::unique_name(prefix);
        self.client()
            .create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .with_context(|| format!("create bucket {bucket}"))?;
        Ok(bucket)
    }

    /// The environment a program (our binaries, the `aws` CLI) needs to use this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", self.credentials().0.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", self.credentials().1.to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_DEFAULT_REGION", "us-east-1".to_owned()),
            ("AWS_ENDPOINT_URL_S3", self.endpoint.clone()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
            ("AWS_CONFIG_FILE", "/dev/null".to_owned()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".to_owned()),
        ]
    }

    /// The `aws` CLI (from the test virtualenv when present) set up for this server.
    pub fn aws_cli(&self) -> Command {
        let venv_aws = crate::test_home().join("venv/bin/aws");
        let mut cmd = Command::new(if venv_aws.exists() {
            venv_aws
        } else {
            PathBuf::from("aws")
        });
        cmd.envs(self.env())
            .arg("--endpoint-url")
            .arg(&self.endpoint);
        cmd
    }
}

fn moto_python() -> PathBuf {
    crate::test_home().join("venv/bin/python")
}

fn s3rver_program() -> PathBuf {
    crate::test_home().join("s3rver/node_modules/.bin/s3rver")
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
