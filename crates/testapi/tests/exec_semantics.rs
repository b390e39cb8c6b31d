//! What happens to an exec'd command when its client goes away, with real programs: as with a
//! kubelet, the command is not killed. It sees EOF on stdin, its output pipes break at its next
//! write, and it runs until it exits by itself; only the server's shutdown kills it. What the
//! command started in the background (its process group) counts as running as long as it runs,
//! and is killed with the server too.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams};
use litemaas_testapi::TestApiServer;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DEADLINE: Duration = Duration::from_secs(10);

async fn server_with_pod() -> (TestApiServer, Api<Pod>) {
    let server = TestApiServer::start().await.unwrap();
    server
        .create(
            "",
            "pods",
            "default",
            json!({"metadata": {"name": "db-0"}, "spec": {"containers": [{"name": "postgres"}]}}),
        )
        .unwrap();
    let pods = Api::default_namespaced(server.client().await.unwrap());
    (server, pods)
}

/// Polls `path` until its content satisfies `done`, or panics at the deadline with what it saw.
async fn wait_for_file(path: &Path, done: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let content = std::fs::read_to_string(path).unwrap_or_default();
        if done(&content) {
            return content;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{} still holds {content:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn sh(script: &str) -> [&str; 3] {
    ["sh", "-c", script]
}

#[tokio::test]
async fn a_client_that_goes_away_leaves_the_command_running_with_stdin_at_eof() {
    let (server, pods) = server_with_pod().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("received");
    let script = format!(
        "cat > '{f}'; sleep 0.2; echo done >> '{f}'",
        f = file.display()
    );
    let params = AttachParams::default().stdin(true).stderr(true);
    let mut process = pods.exec("db-0", sh(&script), &params).await.unwrap();
    let mut stdin = process.stdin().unwrap();
    stdin.write_all(b"BEGIN; INSERT 1;\n").await.unwrap();
    // The bytes have reached the command once `cat` has written them out.
    wait_for_file(&file, |c| c == "BEGIN; INSERT 1;\n").await;
    assert_eq!(server.exec_running(), 1);

    // The client goes away without closing stdin: the WebSocket just ends.
    drop(process);
    drop(stdin);

    // `cat` saw EOF, and the shell went on after it (a killed shell never writes "done").
    let content = wait_for_file(&file, |c| c.ends_with("done\n")).await;
    assert_eq!(content, "BEGIN; INSERT 1;\ndone\n");
    assert!(
        server.wait_exec_idle(DEADLINE).await,
        "the command was reaped"
    );
    assert_eq!(server.exec_running(), 0);
}

#[tokio::test]
async fn output_written_after_the_client_went_away_breaks_the_pipe_instead_of_blocking() {
    let (server, pods) = server_with_pod().await;
    let dir = tempfile::tempdir().unwrap();
    let status = dir.path().join("status");
    // Like a pg_dump whose reader went away: it writes until a write fails.
    let script = format!(
        "trap '' PIPE; yes 'a line of a dump'; echo \"yes exited $?\" > '{}'",
        status.display()
    );
    let params = AttachParams::default().stderr(true);
    let mut process = pods.exec("db-0", sh(&script), &params).await.unwrap();
    let mut stdout = process.stdout().unwrap();
    let mut first = vec![0u8; 4096];
    stdout.read_exact(&mut first).await.unwrap();
    assert!(first.starts_with(b"a line of a dump\n"));

    drop(process);
    drop(stdout);

    // With SIGPIPE ignored, `yes` sees EPIPE and exits with an error, so the shell goes on.
    let content = wait_for_file(&status, |c| c.ends_with('\n')).await;
    assert_eq!(content, "yes exited 1\n");
    assert!(
        server.wait_exec_idle(DEADLINE).await,
        "the command was reaped"
    );
}

#[tokio::test]
async fn closing_stdin_while_connected_still_reports_output_and_status() {
    let (_server, pods) = server_with_pod().await;
    let params = AttachParams::default().stdin(true).stderr(true);
    let mut process = pods.exec("db-0", sh("wc -c"), &params).await.unwrap();
    let mut stdin = process.stdin().unwrap();
    stdin.write_all(b"twelve bytes").await.unwrap();
    // Dropping a half of kube-rs's simplex pipe is not EOF; shutting it down is (v5: channel
    // 255 closes the command's stdin).
    stdin.shutdown().await.unwrap();
    let mut stdout = process.stdout().unwrap();
    let mut stderr = process.stderr().unwrap();
    let status = process.take_status().unwrap();
    let (mut out, mut err) = (String::new(), String::new());
    let (a, b) = tokio::join!(
        stdout.read_to_string(&mut out),
        stderr.read_to_string(&mut err)
    );
    a.unwrap();
    b.unwrap();
    assert_eq!((out.trim(), err.as_str()), ("12", ""));
    assert_eq!(status.await.unwrap().status.as_deref(), Some("Success"));
    process.join().await.unwrap();
}

#[tokio::test]
async fn commands_still_running_are_killed_when_the_server_is_dropped() {
    let (server, pods) = server_with_pod().await;
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let script = format!("echo $$ > '{}'; exec sleep 60", pid_file.display());
    let process = pods
        .exec("db-0", sh(&script), &AttachParams::default().stderr(true))
        .await
        .unwrap();
    let pid = wait_for_file(&pid_file, |c| c.ends_with('\n')).await;
    let proc_dir = Path::new("/proc").join(pid.trim());
    drop(process);

    // Nobody kills it because its client went away...
    assert!(!server.wait_exec_idle(Duration::from_millis(300)).await);
    assert_eq!(server.exec_running(), 1);
    assert!(proc_dir.exists());

    // ...but it does not outlive the server, and it is reaped (no zombie left behind).
    drop(server);
    let start = Instant::now();
    while proc_dir.exists() {
        assert!(
            start.elapsed() < DEADLINE,
            "process {} survived the server",
            pid.trim()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether `pid` is a live process (a zombie waiting for its reaper is not).
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(Path::new("/proc").join(pid).join("stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z")
    })
}

/// Starts a command that leaves `sleep 60` running in the background and exits at once; returns
/// the sleep's pid after the command's exit status arrived.
async fn leave_a_process_behind(pods: &Api<Pod>, dir: &Path) -> String {
    let pid_file = dir.join("pid");
    let script = format!(
        "sleep 60 </dev/null >/dev/null 2>&1 & echo $! > '{}'",
        pid_file.display()
    );
    let mut process = pods
        .exec("db-0", sh(&script), &AttachParams::default().stderr(true))
        .await
        .unwrap();
    let status = process.take_status().unwrap();
    let status = tokio::time::timeout(DEADLINE, status).await.unwrap();
    assert_eq!(status.unwrap().status.as_deref(), Some("Success"));
    process.join().await.unwrap();
    wait_for_file(&pid_file, |c| c.ends_with('\n'))
        .await
        .trim()
        .to_owned()
}

#[tokio::test]
async fn a_command_counts_as_running_until_what_it_left_behind_has_exited() {
    let (server, pods) = server_with_pod().await;
    let dir = tempfile::tempdir().unwrap();
    let pid = leave_a_process_behind(&pods, dir.path()).await;
    assert!(alive(&pid));

    // The shell has exited, but a process it started still runs "in the container".
    assert!(!server.wait_exec_idle(Duration::from_millis(300)).await);
    assert_eq!(server.exec_running(), 1);

    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(server.wait_exec_idle(DEADLINE).await);
    assert!(!alive(&pid));
}

#[tokio::test]
async fn what_a_command_left_behind_is_killed_when_the_server_is_dropped() {
    let (server, pods) = server_with_pod().await;
    let dir = tempfile::tempdir().unwrap();
    let pid = leave_a_process_behind(&pods, dir.path()).await;

    drop(server);
    let start = Instant::now();
    while alive(&pid) {
        assert!(
            start.elapsed() < DEADLINE,
            "process {pid} survived the server"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
