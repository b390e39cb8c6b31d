//! `pods/<name>/exec` over WebSocket, with the channel protocols kube-rs and kubectl use
//! (`v4.channel.k8s.io` and `v5.channel.k8s.io`): channel 0 stdin, 1 stdout, 2 stderr, 3 the
//! `Status` with the exit code, and in v5 channel 255 to close stdin. The command runs on this
//! host with the environment registered for the pod, so a "pod" can really run `pg_dump`.
//!
//! When the client goes away (Close frame, broken socket) the command is not killed, as a
//! kubelet does not kill it: its stdin is closed, its output pipes are closed at its next write,
//! and it runs until it exits by itself. The server kills what still runs when it shuts down.
//!
//! Each command runs in a process group of its own, standing for what it started in the
//! container: it counts as running ([`TestApiServer::exec_running`]) until every process of
//! its group has exited, not only the command itself (a shell that exits while its background
//! `pg_dump` runs on has left a process running in the container), and the server's shutdown
//! kills the whole group.
//!
//! [`TestApiServer::exec_running`]: crate::TestApiServer::exec_running

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::api::{authorize, parse_target, query_pairs};
use crate::store::Key;
use crate::{ExecRecord, Shared};

const PROTOCOLS: [&str; 4] = [
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];

/// The exec endpoint.
pub(crate) async fn handle(
    State(shared): State<Arc<Shared>>,
    Path((namespace, pod)): Path<(String, String)>,
    request: axum::extract::Request,
) -> Response {
    use axum::extract::FromRequestParts;
    let (mut parts, _body) = request.into_parts();
    let ws = WebSocketUpgrade::from_request_parts(&mut parts, &())
        .await
        .ok();
    let (uri, headers): (Uri, HeaderMap) = (parts.uri.clone(), parts.headers.clone());
    match prepare(&shared, &namespace, &pod, &uri, &headers) {
        Err(e) => e.into_response(),
        Ok(record) => match ws {
            None => crate::error::ApiError::bad_request(
                "exec needs a WebSocket upgrade (SPDY is not served)",
            )
            .into_response(),
            Some(ws) => {
                // Counted from now, so that a client that gets its upgrade and leaves at once
                // cannot make `wait_exec_idle` return before the command has even started.
                let running = Running::new(shared.clone());
                ws.protocols(PROTOCOLS)
                    .on_upgrade(move |socket| async move {
                        let env = shared.exec_env(&namespace, &pod);
                        shared
                            .exec_log
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(record.clone());
                        run(socket, record, env, running).await;
                    })
            }
        },
    }
}

fn prepare(
    shared: &Shared,
    namespace: &str,
    pod: &str,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<ExecRecord, crate::error::ApiError> {
    let target = parse_target(uri.path())?;
    // The WebSocket upgrade is a GET, authorized as `get`; Kubernetes 1.35 and later also
    // require `create` on pods/exec (it used to be enough for the older POST/SPDY exec).
    authorize(shared, headers, "get", &target)?;
    authorize(shared, headers, "create", &target)?;
    let def = target.def;
    shared.store.get(def, &Key::new(def, namespace, pod))?;
    let q = query_pairs(uri);
    let flag = |k: &str| {
        q.iter()
            .any(|(key, v)| key == k && (v == "true" || v == "1"))
    };
    let command: Vec<String> = q
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.clone())
        .collect();
    if command.is_empty() {
        return Err(crate::error::ApiError::bad_request(
            "you must specify at least 1 command",
        ));
    }
    Ok(ExecRecord {
        namespace: namespace.to_owned(),
        pod: pod.to_owned(),
        container: q
            .iter()
            .find(|(k, _)| k == "container")
            .map(|(_, v)| v.clone()),
        command,
        stdin: flag("stdin"),
        request_uri: uri.to_string(),
    })
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::Binary(v.into())
}

/// One exec'd command, from the request until every process of its group has exited: counted
/// in `Shared::exec_running` for
/// [`TestApiServer::wait_exec_idle`](crate::TestApiServer::wait_exec_idle).
pub(crate) struct Running {
    shared: Arc<Shared>,
    /// The command's process group, once it was spawned.
    group: Option<u32>,
}

impl Running {
    fn new(shared: Arc<Shared>) -> Self {
        shared.exec_running.send_modify(|n| *n += 1);
        Self {
            shared,
            group: None,
        }
    }

    /// Waits until no process of the group is left; at the server's shutdown, kills them.
    async fn group_gone(&self) {
        let Some(group) = self.group else { return };
        let mut killed = false;
        while !members(group).is_empty() {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
                () = self.shared.shutdown.cancelled(), if !killed => {
                    kill_group(group);
                    killed = true;
                }
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Only when the task was dropped with processes left (the runtime went away): nothing
        // survives the "cluster".
        if let Some(group) = self.group
            && !members(group).is_empty()
        {
            kill_group(group);
        }
        self.shared
            .exec_running
            .send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Live processes (zombies do not count) in process group `group`.
fn members(group: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // "pid (comm) state ppid pgrp ...", where comm may hold anything but ')'.
            let (_, rest) = stat.rsplit_once(')')?;
            let mut fields = rest.split_whitespace();
            let state = fields.next()?;
            let pgrp: u32 = fields.nth(1)?.parse().ok()?;
            (state != "Z" && pgrp == group).then_some(pid)
        })
        .collect()
}

/// SIGKILL to a whole process group (through `sh`'s `kill`: this crate has no unsafe code).
fn kill_group(group: u32) {
    let _ = std::process::Command::new("sh")
        .args(["-c", "kill -s KILL -- \"-$1\" 2>/dev/null", "kill-group"])
        .arg(group.to_string())
        .stdin(Stdio::null())
        .status();
}

/// How the client side of an exec ended.
enum End {
    /// The command exited (or was killed at shutdown) while the client was there.
    Exited(std::io::Result<std::process::ExitStatus>),
    /// The client closed the socket, or it broke, while the command ran.
    ClientGone,
}

async fn run(
    socket: WebSocket,
    record: ExecRecord,
    env: Vec<(String, String)>,
    mut running: Running,
) {
    let shared = running.shared.clone();
    let v5 = socket.protocol().and_then(|p| p.to_str().ok()) == Some("v5.channel.k8s.io");
    let (mut sink, mut incoming) = socket.split();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Message>(64);
    // Cancelled when the client has gone: the writer then stops forwarding output at once (the
    // output pumps see their channel closed) and only tries to finish the close handshake.
    let gone = CancellationToken::new();
    let writer = tokio::spawn({
        let gone = gone.clone();
        async move {
            let forward = async {
                while let Some(message) = rx.recv().await {
                    let closing = matches!(message, Message::Close(_));
                    if sink.send(message).await.is_err() || closing {
                        break;
                    }
                }
            };
            let forwarded = tokio::select! {
                () = forward => true,
                () = gone.cancelled() => false,
            };
            drop(rx);
            if forwarded {
                let _ = sink.flush().await;
            } else {
                let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
            }
        }
    });

    let mut cmd = tokio::process::Command::new(&record.command[0]);
    cmd.args(&record.command[1..])
        .envs(env)
        .stdin(if record.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // What the command starts stays in this group (a container's processes).
        .process_group(0)
        // Only if this task is dropped (the runtime shuts down) while the command runs.
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(child) => {
            running.group = child.id();
            child
        }
        Err(e) => {
            let status = json!({"metadata": {}, "status": "Failure", "reason": "InternalError", "code": 500,
                "message": format!("failed to exec in container: exec: \"{}\": {e}", record.command[0])});
            let _ = tx.send(frame(3, status.to_string().as_bytes())).await;
            let _ = tx.send(close()).await;
            drop(tx);
            let _ = writer.await;
            return;
        }
    };

    // Output → client. Once the client has gone the channel is closed, so a pump stops at the
    // next chunk the command writes and drops its end of the pipe: the command's next write
    // gets EPIPE (or SIGPIPE), as when a container runtime's copy to a dead stream fails. It
    // never blocks on a full pipe.
    let pump = |reader: Option<Box<dyn tokio::io::AsyncRead + Send + Unpin>>, channel: u8| {
        let tx = tx.clone();
        tokio::spawn(async move {
            let Some(mut reader) = reader else { return };
            let mut buf = vec![0u8; 32 * 1024];
            while let Ok(n) = reader.read(&mut buf).await {
                if n == 0 || tx.send(frame(channel, &buf[..n])).await.is_err() {
                    break;
                }
            }
        })
    };
    let stdout = pump(child.stdout.take().map(|r| Box::new(r) as _), 1);
    let stderr = pump(child.stderr.take().map(|r| Box::new(r) as _), 2);

    // Client → stdin, until it closes stdin (v5), the client goes away, or the process ends.
    let mut stdin = child.stdin.take();
    let end = loop {
        tokio::select! {
            status = child.wait() => break End::Exited(status),
            () = shared.shutdown.cancelled() => {
                // The server (the "cluster") is going away: nothing survives it.
                if let Some(group) = running.group {
                    kill_group(group);
                }
                let _ = child.start_kill();
                break End::Exited(child.wait().await);
            }
            message = incoming.next() => match message {
                Some(Ok(Message::Binary(data))) if !data.is_empty() => match data[0] {
                    0 => {
                        if let Some(w) = stdin.as_mut()
                            && w.write_all(&data[1..]).await.is_err()
                        {
                            stdin = None;
                        }
                    }
                    255 if v5 && data.get(1) == Some(&0) => stdin = None, // close stdin
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break End::ClientGone,
                Some(Ok(_)) => {}
            }
        }
    };
    drop(stdin);

    match end {
        End::Exited(status) => {
            let _ = stdout.await;
            let _ = stderr.await;
            let _ = tx
                .send(frame(3, status_json(&status).to_string().as_bytes()))
                .await;
            let _ = tx.send(close()).await;
            drop(tx);
            let _ = writer.await;
        }
        End::ClientGone => {
            // A kubelet does not stop the command when the stream ends: the command sees EOF
            // on stdin, its output goes nowhere, and it runs until it exits by itself. (A
            // `psql --single-transaction` fed through the stream therefore commits what it got.)
            drop(incoming);
            drop(tx);
            gone.cancel();
            tokio::select! {
                _ = child.wait() => {}
                () = shared.shutdown.cancelled() => {
                    if let Some(group) = running.group {
                        kill_group(group);
                    }
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                }
            }
            // Whatever still holds the pipes (a background grandchild) gets EPIPE from now on.
            stdout.abort();
            stderr.abort();
            let _ = writer.await;
        }
    }
    // What the command left running in its group still runs "in the container".
    running.group_gone().await;
    drop(running);
}

fn status_json(status: &std::io::Result<std::process::ExitStatus>) -> serde_json::Value {
    match status {
        Ok(s) if s.success() => json!({"metadata": {}, "status": "Success"}),
        Ok(s) => {
            let code = s.code().map_or_else(|| "137".to_owned(), |c| c.to_string());
            json!({"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
                   "message": format!("command terminated with non-zero exit code: exit status {code}"),
                   "details": {"causes": [{"reason": "ExitCode", "message": code}]}})
        }
        Err(e) => {
            json!({"metadata": {}, "status": "Failure", "reason": "InternalError", "message": e.to_string()})
        }
    }
}

fn close() -> Message {
    Message::Close(Some(CloseFrame {
        code: 1000,
        reason: "".into(),
    }))
}
