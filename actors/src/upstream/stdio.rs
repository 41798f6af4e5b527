//! The stdio transport: a child process speaking newline-delimited JSON-RPC on stdin/stdout.
//!
//! One driver task owns the child. It reads stdout, logs stderr at debug level, and ends when
//! stdout closes, the child exits, or the connection is closed; the first two are a lost
//! connection. Closing follows the MCP shutdown sequence: stdin closed, SIGTERM after a grace
//! period, SIGKILL after another, and the child is always reaped.

use std::collections::BTreeMap;
use std::pin::pin;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use actix::WeakRecipient;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::sync::{mpsc, oneshot};

use super::connection::{Connection, Driver, Task};
use super::http::MAX_MESSAGE;
use super::rpc::{Link, Rpc};
use super::wire::{LineSplitter, Oversize};
use super::{ConnEvent, UpstreamError};

/// Messages waiting for the child's stdin.
const QUEUE: usize = 64;
/// After stdin is closed, and again after SIGTERM: together within the 5 s flux7 allowed.
const GRACE: Duration = Duration::from_secs(2);
/// How long stdout is still read after the child exited (answers written just before).
const DRAIN: Duration = Duration::from_secs(1);
const MAX_STDERR_LINE: usize = 8 << 10;

/// Starts the child (parent environment plus `env`) and its driver.
pub(crate) fn spawn(
    server: &str,
    command: &str,
    args: &[String],
    env: &BTreeMap<String, String>,
    generation: u64,
    events: WeakRecipient<ConnEvent>,
) -> Result<Connection, UpstreamError> {
    let mut child = Command::new(command)
        .args(args)
        .envs(env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| UpstreamError::Unavailable(format!("cannot start {command:?}: {e}")))?;
    let pid = child.id();
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(UpstreamError::Unavailable(format!(
            "{command:?} started without its pipes"
        )));
    };
    let (input, queued) = mpsc::channel(QUEUE);
    let rpc = Arc::new(Rpc::new(server, generation, Link::Stdio(input), events));
    let (close, closed) = oneshot::channel();
    let pipes = Pipes {
        stdin,
        stdout,
        stderr,
        queued,
    };
    let task = Task::spawn(drive(child, pipes, rpc.clone(), closed));
    let mut conn = Connection::new(rpc, Some(Driver::new(close, task)));
    conn.set_pid(pid);
    Ok(conn)
}

struct Pipes {
    stdin: ChildStdin,
    stdout: ChildStdout,
    stderr: ChildStderr,
    queued: mpsc::Receiver<Vec<u8>>,
}

enum Ended {
    Stdout(String),
    Exited(std::io::Result<ExitStatus>),
    Closed,
}

async fn drive(mut child: Child, pipes: Pipes, rpc: Arc<Rpc>, closed: oneshot::Receiver<()>) {
    let server = rpc.server().to_owned();
    let mut writer = Task::spawn(write_stdin(pipes.stdin, pipes.queued));
    let _stderr = Task::spawn(log_stderr(pipes.stderr, server.clone()));
    let mut reader = pin!(read_stdout(pipes.stdout, &rpc));
    let ended = tokio::select! {
        reason = &mut reader => Ended::Stdout(reason),
        status = child.wait() => Ended::Exited(status),
        _ = closed => Ended::Closed,
    };
    match ended {
        Ended::Exited(status) => {
            let _ = tokio::time::timeout(DRAIN, &mut reader).await;
            rpc.lost(&describe_exit(status));
        }
        Ended::Stdout(reason) => match tokio::time::timeout(DRAIN, child.wait()).await {
            Ok(status) => {
                rpc.lost(&describe_exit(status));
            }
            Err(_) => {
                rpc.lost(&reason);
                writer.abort().await;
                stop(&mut child, &server).await;
            }
        },
        Ended::Closed => {
            writer.abort().await;
            stop(&mut child, &server).await;
        }
    }
}

fn describe_exit(status: std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(status) => format!("exited ({status})"),
        Err(e) => format!("could not be waited for: {e}"),
    }
}

/// Waits for the child to leave after stdin closed, then SIGTERM, then SIGKILL; reaps it.
async fn stop(child: &mut Child, server: &str) {
    if tokio::time::timeout(GRACE, child.wait()).await.is_ok() {
        return;
    }
    if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    if tokio::time::timeout(GRACE, child.wait()).await.is_ok() {
        return;
    }
    tracing::warn!(server, "MCP server ignored SIGTERM; killing it");
    if let Err(e) = child.kill().await {
        tracing::warn!(server, "killing the MCP server failed: {e}");
    }
}

async fn write_stdin(mut stdin: ChildStdin, mut queued: mpsc::Receiver<Vec<u8>>) {
    while let Some(bytes) = queued.recv().await {
        if stdin.write_all(&bytes).await.is_err() || stdin.flush().await.is_err() {
            return;
        }
    }
}

/// Dispatches every line of stdout; returns why it ended.
async fn read_stdout(mut stdout: ChildStdout, rpc: &Rpc) -> String {
    let mut lines = LineSplitter::new(MAX_MESSAGE);
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match stdout.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => lines.push(&buf[..n], &mut |line| handle_line(rpc, line)),
            Err(e) => return format!("stdout failed: {e}"),
        }
    }
    match lines.finish() {
        Some(Ok(last)) => handle_line(rpc, Ok(&last)),
        Some(Err(oversize)) => handle_line(rpc, Err(oversize)),
        None => {}
    }
    "closed its stdout".to_owned()
}

fn handle_line(rpc: &Rpc, line: Result<&[u8], Oversize>) {
    match line {
        Ok(line) if line.trim_ascii().is_empty() => {}
        Ok(line) => match serde_json::from_slice(line) {
            Ok(msg) => rpc.dispatch(msg),
            Err(_) => tracing::debug!(server = rpc.server(), "ignoring a non-JSON line on stdout"),
        },
        Err(Oversize) => {
            tracing::warn!(
                server = rpc.server(),
                "dropped a message over {MAX_MESSAGE} bytes"
            );
        }
    }
}

async fn log_stderr(mut stderr: ChildStderr, server: String) {
    let mut lines = LineSplitter::new(MAX_STDERR_LINE);
    let mut buf = vec![0u8; 8 << 10];
    while let Ok(n) = stderr.read(&mut buf).await
        && n > 0
    {
        lines.push(&buf[..n], &mut |line| {
            if let Ok(line) = line {
                tracing::debug!(server, "stderr: {}", String::from_utf8_lossy(line));
            }
        });
    }
}
