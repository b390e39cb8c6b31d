//! The S3-compatible test server (moto).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};

use crate::sys;

/// Access key the test server accepts (moto accepts any).
pub const ACCESS_KEY: &str = "testing-access-key";
/// Secret key the test server accepts.
pub const SECRET_KEY: &str = "testing-secret-key";

/// An S3-compatible server on loopback.
///
/// `scripts/test.sh` starts one moto server for the whole run and exports
/// `LITEMAAS_TEST_S3_ENDPOINT`; without it, the first test of a binary starts its own from the
/// virtualenv made by `scripts/test-deps.sh`, stopped when the process exits.
#[derive(Debug)]
pub struct S3Server {
    endpoint: String,
    child: Option<Child>,
}

impl S3Server {
    /// The server shared by this test run.
    pub fn shared() -> &'static S3Server {
        static SHARED: OnceLock<S3Server> = OnceLock::new();
        SHARED.get_or_init(|| match std::env::var("LITEMAAS_TEST_S3_ENDPOINT") {
            Ok(endpoint) if !endpoint.is_empty() => S3Server {
                endpoint,
                child: None,
            },
            _ => {
                let mut server = S3Server::start_moto(&[]).expect("start the moto S3 test server");
                if let Some(mut child) = server.child.take() {
                    sys::at_exit(move || {
                        let _ = child.kill();
                        let _ = child.wait();
                    });
                }
                server
            }
        })
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
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        sys::die_with_parent(&mut cmd, libc::SIGKILL);
        let mut child = sys::on_spawner_thread(move || cmd.spawn()).context("spawn moto")?;
        let endpoint = format!("http://127.0.0.1:{port}");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = child.try_wait()? {
                bail!("moto exited with {status}");
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                bail!("moto did not listen on {endpoint} within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(S3Server {
            endpoint,
            child: Some(child),
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// An SDK client for the server (static test credentials, `us-east-1`, path style, no retries).
    pub fn client(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .credentials_provider(Credentials::new(
                ACCESS_KEY,
                SECRET_KEY,
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
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
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

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
