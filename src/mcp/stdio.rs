//! The stdio MCP server (`mesh7 --mcp`): newline-delimited JSON-RPC on stdin/stdout.
//!
//! Each request runs as its own task, so a slow tool or an approval wait never holds up a
//! `ping` or another call; responses go through one writer task so lines never interleave.
//! stdout carries only protocol lines (logs go to stderr). `notifications/cancelled` stops the
//! request: its task is aborted and nothing is answered; a tool call that was already running is
//! stopped with it and traced as cancelled (see `pipeline::Running`).
//! On EOF the in-flight requests get a bounded time to finish, then the server returns.
//! Once the client sent `notifications/initialized`, it is sent `notifications/tools/list_changed`
//! whenever what it can list changes (an upstream server (re)connecting or changing its list,
//! catalogue pins changing, a policy reload with `hide_denied_tools`), so tools of a server that
//! was still starting appear.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt as _, AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader,
};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};

use super::dispatch::{Caller, Dispatcher};
use super::jsonrpc::{self, Message, PARSE_ERROR, RpcError};
use super::new_session_id;
use crate::error::{Cancel, CancelNote};
use crate::pipeline::{Ingress, Pipeline};

/// The longest line accepted; a longer one is answered with a parse error and skipped.
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;
/// Requests running at once; beyond it stdin is not read until one finishes (backpressure).
const MAX_IN_FLIGHT: usize = 256;
/// Response lines queued for stdout.
const WRITE_QUEUE: usize = 256;

#[derive(Debug, Clone)]
pub struct StdioOptions {
    /// `--mcp-agent`: who the calls are made as (`Bearer agent:<id>`).
    pub agent: String,
    /// `MESH_AGENT_TOKEN`: when set, the credentials used instead of `agent:<id>`.
    pub agent_token: Option<String>,
    /// `--mcp-session-id`; minted at the first `initialize` when absent.
    pub session_id: Option<String>,
    /// How long in-flight requests may still run after stdin closes.
    pub drain_timeout: Duration,
}

impl StdioOptions {
    /// The `Authorization` value every call of this connection carries.
    pub fn authorization(&self) -> String {
        match self.agent_token.as_deref().filter(|t| !t.is_empty()) {
            Some(token) => format!("Bearer {token}"),
            None => format!("Bearer agent:{}", self.agent),
        }
    }
}

/// The message carries its cause, so it is not also a `source` (a printed chain would repeat it).
#[derive(Debug, thiserror::Error)]
pub enum StdioError {
    #[error("reading stdin: {0}")]
    Read(std::io::Error),
}

impl From<std::io::Error> for StdioError {
    fn from(e: std::io::Error) -> Self {
        StdioError::Read(e)
    }
}

/// The process's stdin and stdout as async streams.
pub type Streams = (
    Box<dyn AsyncRead + Unpin + Send>,
    Box<dyn AsyncWrite + Unpin + Send>,
);

/// stdin and stdout for `serve` and the daemon bridge. When they are pipes (how MCP clients
/// start servers) they are driven by the runtime's event loop, like any socket; otherwise (a
/// terminal, a file) through tokio's `stdin()` / `stdout()`, which hand every read and write
/// to a blocking thread, two thread hops per request. Must run inside a runtime.
pub fn streams() -> Streams {
    use std::os::fd::AsFd as _;
    use tokio::net::unix::pipe;

    let input: Box<dyn AsyncRead + Unpin + Send> = match std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .and_then(pipe::Receiver::from_owned_fd)
    {
        Ok(pipe) => Box::new(pipe),
        Err(_) => Box::new(tokio::io::stdin()),
    };
    let output: Box<dyn AsyncWrite + Unpin + Send> = match std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .and_then(pipe::Sender::from_owned_fd)
    {
        Ok(pipe) => Box::new(pipe),
        Err(_) => Box::new(tokio::io::stdout()),
    };
    (input, output)
}

/// One line of input.
pub(super) enum Line {
    Text(Vec<u8>),
    TooLong,
}

/// Serves MCP on `input`/`output` until `input` ends.
pub async fn serve<R, W>(
    dispatcher: Dispatcher,
    opts: StdioOptions,
    input: R,
    output: W,
) -> Result<(), StdioError>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (line_tx, mut lines) = mpsc::channel::<std::io::Result<Line>>(16);
    let reader = tokio::spawn(read_lines(BufReader::new(input), line_tx));
    let (out_tx, out_rx) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
    let writer = tokio::spawn(write_lines(output, out_rx));

    let authorization = opts.authorization();
    let mut session_id = opts.session_id.clone().unwrap_or_default();
    let mut in_flight: JoinSet<String> = JoinSet::new();
    // Each request in flight, by id, with the note read if its call is stopped.
    let mut by_id: HashMap<String, (AbortHandle, CancelNote)> = HashMap::new();
    let mut read_error = None;
    // Started at `notifications/initialized`: tells the client when the tools it can list change.
    let mut announcer: Option<tokio::task::JoinHandle<()>> = None;

    loop {
        tokio::select! {
            line = lines.recv(), if in_flight.len() < MAX_IN_FLIGHT => {
                let bytes = match line {
                    None => break,
                    Some(Err(e)) => {
                        read_error = Some(e);
                        break;
                    }
                    Some(Ok(Line::TooLong)) => {
                        let error = RpcError::new(
                            PARSE_ERROR,
                            format!("Parse error: message longer than {MAX_LINE_BYTES} bytes"),
                        );
                        send(&out_tx, jsonrpc::error_response(&Value::Null, &error)).await;
                        continue;
                    }
                    Some(Ok(Line::Text(bytes))) => bytes,
                };
                let req = match jsonrpc::parse(&bytes) {
                    Err(rejection) => {
                        send(&out_tx, rejection.response()).await;
                        continue;
                    }
                    Ok(Message::Response) => continue,
                    Ok(Message::Notification { method, params }) => {
                        // The client is ready for the server's notifications (MCP lifecycle).
                        if method == "notifications/initialized" && announcer.is_none() {
                            announcer = Some(tokio::spawn(announce_tool_changes(
                                dispatcher.pipeline().clone(),
                                out_tx.clone(),
                            )));
                        }
                        if method == "notifications/cancelled"
                            && let Some(id) = params.get("requestId")
                            && let Some((request, note)) = by_id.remove(&id_key(id))
                        {
                            // Stopped and not answered (MCP); a running call is traced as
                            // cancelled by the client when its future is dropped.
                            note.set(Cancel::ByClient);
                            request.abort();
                        }
                        continue;
                    }
                    Ok(Message::Request(req)) => req,
                };
                if req.method == "initialize" && session_id.is_empty() {
                    session_id = new_session_id();
                    tracing::info!(session_id, agent = %opts.agent, "MCP session started");
                }
                let caller = Caller {
                    ingress: Ingress::McpStdio,
                    authorization: Some(authorization.clone()),
                    session_id: session_id.clone(),
                };
                let key = id_key(&req.id);
                let dispatcher = dispatcher.clone();
                let out = out_tx.clone();
                let task_key = key.clone();
                let note = CancelNote::default();
                let cancel = note.clone();
                let request = in_flight.spawn(async move {
                    let id = req.id.clone();
                    let outcome = dispatcher.handle(&caller, req, cancel).await;
                    send(&out, jsonrpc::response(&id, outcome)).await;
                    task_key
                });
                by_id.insert(key, (request, note));
            }
            Some(done) = in_flight.join_next_with_id(), if !in_flight.is_empty() => {
                // A reused id may belong to a newer request by now: remove only our own entry.
                if let Ok((task, key)) = done
                    && by_id.get(&key).is_some_and(|(r, _)| r.id() == task)
                {
                    by_id.remove(&key);
                }
            }
        }
    }

    // stdin is closed: let what is running finish (bounded), then flush the answers.
    let drained = tokio::time::timeout(opts.drain_timeout, async {
        while in_flight.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            requests = in_flight.len(),
            "stdin closed: abandoning requests still running"
        );
        in_flight.shutdown().await;
    }
    if let Some(announcer) = announcer {
        announcer.abort();
        // Ends with its clone of the output queue dropped, so the writer can finish.
        let _ = announcer.await;
    }
    drop(out_tx);
    if let Err(e) = writer.await {
        tracing::error!(error = %e, "MCP writer task failed");
    }
    reader.abort();
    match read_error {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// Sends `notifications/tools/list_changed` each time what `tools/list` can show changes (an
/// upstream server connected, reconnected or changed its list; pins changed; with
/// `hide_denied_tools`, the policies were reloaded), counted from when the client said it was
/// initialized.
async fn announce_tool_changes(pipeline: Pipeline, out: mpsc::Sender<Vec<u8>>) {
    let mut seen = pipeline.tools_version();
    loop {
        pipeline.tools_changed(seen).await;
        seen = pipeline.tools_version();
        send(
            &out,
            json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}),
        )
        .await;
    }
}

/// A map key for a request id: its JSON text (so `1` and `"1"` differ).
fn id_key(id: &Value) -> String {
    id.to_string()
}

async fn send(out: &mpsc::Sender<Vec<u8>>, message: Value) {
    let line = serde_json::to_vec(&message).unwrap_or_default();
    if out.send(line).await.is_err() {
        tracing::debug!("MCP output closed: response dropped");
    }
}

pub(super) async fn read_lines<R: AsyncBufRead + Unpin>(
    mut input: R,
    tx: mpsc::Sender<std::io::Result<Line>>,
) {
    let mut buf = Vec::new();
    loop {
        let line = match read_line(&mut input, &mut buf, MAX_LINE_BYTES).await {
            Ok(None) => return,
            Ok(Some(line)) => Ok(line),
            Err(e) => Err(e),
        };
        let failed = line.is_err();
        if let Ok(Line::Text(bytes)) = &line
            && bytes.iter().all(u8::is_ascii_whitespace)
        {
            continue;
        }
        if tx.send(line).await.is_err() || failed {
            return;
        }
    }
}

/// Reads one `\n`-terminated line (the last one may lack it), keeping at most `max` bytes.
/// `None` at end of input.
async fn read_line<R: AsyncBufRead + Unpin>(
    input: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<Line>> {
    buf.clear();
    let mut too_long = false;
    let mut seen_any = false;
    loop {
        let available = input.fill_buf().await?;
        if available.is_empty() {
            return Ok(match (seen_any, too_long) {
                (false, _) => None,
                (true, true) => Some(Line::TooLong),
                (true, false) => Some(Line::Text(std::mem::take(buf))),
            });
        }
        seen_any = true;
        let (chunk, used, done) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (&available[..i], i + 1, true),
            None => (available, available.len(), false),
        };
        if !too_long {
            if buf.len() + chunk.len() > max {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        input.consume(used);
        if done {
            if too_long {
                return Ok(Some(Line::TooLong));
            }
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            return Ok(Some(Line::Text(std::mem::take(buf))));
        }
    }
}

/// Writes each queued message as one line, flushing after each so the client sees it at once.
pub(super) async fn write_lines<W: AsyncWrite + Unpin>(
    mut output: W,
    mut rx: mpsc::Receiver<Vec<u8>>,
) {
    while let Some(mut line) = rx.recv().await {
        line.push(b'\n');
        let written = async {
            output.write_all(&line).await?;
            output.flush().await
        };
        if let Err(e) = written.await {
            tracing::error!(error = %e, "cannot write to stdout: MCP responses are lost");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines_of(input: &[u8], max: usize) -> Vec<Option<Vec<u8>>> {
        let mut reader = BufReader::with_capacity(4, input);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        while let Some(line) = read_line(&mut reader, &mut buf, max).await.unwrap() {
            out.push(match line {
                Line::Text(t) => Some(t),
                Line::TooLong => None,
            });
        }
        out
    }

    #[tokio::test]
    async fn splits_lines_and_bounds_their_length() {
        type Case = (&'static [u8], Vec<Option<&'static [u8]>>);
        let table: [Case; 5] = [
            (b"a\nbc\n", vec![Some(b"a"), Some(b"bc")]),
            (b"a\r\nlast", vec![Some(b"a"), Some(b"last")]),
            (b"", vec![]),
            // The long line is reported once and skipped; the next line is intact.
            (b"0123456789abc\nok\n", vec![None, Some(b"ok")]),
            (b"0123456789abcdef", vec![None]),
        ];
        for (input, expected) in table {
            let expected: Vec<Option<Vec<u8>>> = expected
                .into_iter()
                .map(|l| l.map(<[u8]>::to_vec))
                .collect();
            assert_eq!(lines_of(input, 8).await, expected, "{input:?}");
        }
    }

    #[test]
    fn credentials_prefer_the_agent_token() {
        let mut opts = StdioOptions {
            agent: "claude".into(),
            agent_token: None,
            session_id: None,
            drain_timeout: Duration::from_secs(1),
        };
        assert_eq!(opts.authorization(), "Bearer agent:claude");
        opts.agent_token = Some(String::new());
        assert_eq!(opts.authorization(), "Bearer agent:claude");
        opts.agent_token = Some("s3cret".into());
        assert_eq!(opts.authorization(), "Bearer s3cret");
    }
}
