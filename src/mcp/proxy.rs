//! The `--mcp` auto-proxy: when a mesh7 daemon already answers on the configured port, `mesh7
//! --mcp` becomes a thin stdio ↔ `POST /mcp` bridge instead of starting a second mesh (so every
//! agent shares one set of approvals, grants, limits and traces).
//!
//! Each stdin line is POSTed as is, with the agent's credentials and the session id the daemon
//! minted; each answer is written back as one line (202 writes nothing). Requests run
//! concurrently, like the stdio server. On EOF the session is ended with `DELETE /mcp`. If the
//! daemon goes away mid-stream, the bridge answers the request in hand with an error and
//! returns `ProxyError::DaemonLost`, so the process exits non-zero with a clear message.
//! Once the client's `notifications/initialized` went through, the bridge opens the session's
//! notification stream (`GET /mcp`) and writes each message it carries as a line, so the
//! client hears of `tools/list_changed` as it would from the stdio server.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::{JoinHandle, JoinSet};

use super::http::SESSION_HEADER;
use super::jsonrpc::{self, INTERNAL_ERROR, Message, PARSE_ERROR, RpcError};
use super::stdio::{Line, MAX_LINE_BYTES, read_lines, write_lines};

/// How long the daemon may take to answer `/health` before mesh7 starts its own mesh.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// A call may wait for a human approval; beyond this the daemon is considered gone.
const CALL_TIMEOUT: Duration = Duration::from_secs(15 * 60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The notification stream sends a keep-alive at least every 15 s; silence this long means the
/// daemon is gone.
const STREAM_READ_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_IN_FLIGHT: usize = 256;

#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// The daemon's base URL, e.g. `http://127.0.0.1:9090`.
    pub base_url: String,
    /// The `Authorization` value sent with every request.
    pub authorization: String,
    /// How long in-flight requests may still run after stdin closes.
    pub drain_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("lost the mesh7 daemon at {url}: {detail}")]
    DaemonLost { url: String, detail: String },
    #[error("reading stdin: {0}")]
    Read(std::io::Error),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// The URL a local daemon listening on `listen` is reached at; `None` for port 0 (a free port
/// is never a daemon's address).
pub fn daemon_url(listen: SocketAddr) -> Option<String> {
    if listen.port() == 0 {
        return None;
    }
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Some(format!("http://{}", SocketAddr::new(ip, listen.port())))
}

/// Whether a mesh7 daemon answers `GET /health` at `base_url` (200 with `"status":"ok"`).
pub async fn daemon_running(base_url: &str) -> bool {
    let Ok(client) = reqwest::Client::builder().timeout(PROBE_TIMEOUT).build() else {
        return false;
    };
    let Ok(resp) = client.get(format!("{base_url}/health")).send().await else {
        return false;
    };
    if resp.status() != reqwest::StatusCode::OK {
        return false;
    }
    resp.bytes()
        .await
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .is_some_and(|v| v.get("status").and_then(Value::as_str) == Some("ok"))
}

/// State every forwarding task shares.
struct Bridge {
    client: reqwest::Client,
    /// For the notification stream, which has no overall deadline.
    stream_client: reqwest::Client,
    url: String,
    authorization: String,
    session: Mutex<Option<String>>,
    /// The task relaying the notification stream, once opened.
    stream: Mutex<Option<JoinHandle<()>>>,
    out: mpsc::Sender<Vec<u8>>,
    lost: mpsc::Sender<String>,
}

/// Bridges `input`/`output` to the daemon's `/mcp` until `input` ends.
pub async fn bridge<R, W>(opts: ProxyOptions, input: R, output: W) -> Result<(), ProxyError>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let client = reqwest::Client::builder()
        .timeout(CALL_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .build()
        .map_err(|e| ProxyError::Client(e.to_string()))?;
    let stream_client = reqwest::Client::builder()
        .read_timeout(STREAM_READ_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .build()
        .map_err(|e| ProxyError::Client(e.to_string()))?;
    let (line_tx, mut lines) = mpsc::channel(16);
    let reader = tokio::spawn(read_lines(BufReader::new(input), line_tx));
    let (out_tx, out_rx) = mpsc::channel::<Vec<u8>>(256);
    let writer = tokio::spawn(write_lines(output, out_rx));
    let (lost_tx, mut lost_rx) = mpsc::channel::<String>(1);
    let bridge = Arc::new(Bridge {
        client,
        stream_client,
        url: format!("{}/mcp", opts.base_url),
        authorization: opts.authorization,
        session: Mutex::new(None),
        stream: Mutex::new(None),
        out: out_tx,
        lost: lost_tx,
    });
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut tasks = JoinSet::new();

    let outcome = loop {
        tokio::select! {
            line = lines.recv() => match line {
                None => break Ok(()),
                Some(Err(e)) => break Err(ProxyError::Read(e)),
                Some(Ok(Line::TooLong)) => {
                    let error = RpcError::new(
                        PARSE_ERROR,
                        format!("Parse error: message longer than {MAX_LINE_BYTES} bytes"),
                    );
                    bridge.write(&jsonrpc::error_response(&Value::Null, &error)).await;
                }
                Some(Ok(Line::Text(body))) => {
                    let Ok(slot) = slots.clone().acquire_owned().await else {
                        break Ok(());
                    };
                    let bridge = bridge.clone();
                    tasks.spawn(async move {
                        bridge.forward(body).await;
                        drop(slot);
                    });
                }
            },
            Some(detail) = lost_rx.recv() => {
                break Err(ProxyError::DaemonLost { url: opts.base_url.clone(), detail });
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    };
    reader.abort();

    let outcome = match outcome {
        Ok(()) => {
            let drained = tokio::time::timeout(opts.drain_timeout, async {
                while tasks.join_next().await.is_some() {}
            })
            .await;
            if drained.is_err() {
                tracing::warn!("stdin closed: abandoning requests still running");
            }
            match lost_rx.try_recv() {
                Ok(detail) => Err(ProxyError::DaemonLost {
                    url: opts.base_url.clone(),
                    detail,
                }),
                Err(_) => {
                    bridge.end_session().await;
                    Ok(())
                }
            }
        }
        Err(e) => Err(e),
    };
    tasks.shutdown().await;
    bridge.stop_stream().await;
    drop(bridge);
    if let Err(e) = writer.await {
        tracing::error!(error = %e, "MCP writer task failed");
    }
    outcome
}

impl Bridge {
    async fn write(&self, message: &Value) {
        let line = serde_json::to_vec(message).unwrap_or_default();
        if self.out.send(line).await.is_err() {
            tracing::debug!("MCP output closed: response dropped");
        }
    }

    /// POSTs one message and writes the daemon's answer.
    async fn forward(self: &Arc<Self>, body: Vec<u8>) {
        // The id, to answer a request ourselves if the daemon cannot.
        let (id, initialized) = match jsonrpc::parse(&body) {
            Ok(Message::Request(r)) => (Some(r.id), false),
            Ok(Message::Notification { method, .. }) => {
                (None, method == "notifications/initialized")
            }
            _ => (None, false),
        };
        let mut req = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(
                reqwest::header::ACCEPT,
                "application/json, text/event-stream",
            )
            .header(reqwest::header::AUTHORIZATION, &self.authorization)
            .body(body);
        if let Some(session) = self.session_id() {
            req = req.header(SESSION_HEADER, session);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return self.daemon_lost(id.as_ref(), &e).await,
        };
        if let Some(session) = resp
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
        {
            // Stored before the answer is written, so the client's next message carries it.
            *self
                .session
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(session.to_owned());
        }
        let status = resp.status();
        if status == reqwest::StatusCode::ACCEPTED {
            if initialized {
                self.open_stream();
            }
            return;
        }
        let is_sse = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => return self.daemon_lost(id.as_ref(), &e).await,
        };
        let text = String::from_utf8_lossy(&bytes);
        let payloads: Vec<&str> = if is_sse {
            text.lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .collect()
        } else {
            vec![text.trim()]
        };
        for payload in payloads.into_iter().filter(|p| !p.is_empty()) {
            match serde_json::from_str::<Value>(payload) {
                // Re-encoded so that the answer is exactly one line.
                Ok(message) => self.write(&message).await,
                Err(_) => {
                    if let Some(id) = &id {
                        let error = RpcError::new(
                            INTERNAL_ERROR,
                            format!("mesh7 daemon answered HTTP {status} without JSON-RPC"),
                        );
                        self.write(&jsonrpc::error_response(id, &error)).await;
                    }
                }
            }
        }
    }

    /// Starts relaying the session's notification stream (once).
    fn open_stream(self: &Arc<Self>) {
        let mut stream = self
            .stream
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if stream.is_none() {
            *stream = Some(tokio::spawn(self.clone().relay_notifications()));
        }
    }

    async fn stop_stream(&self) {
        let task = self
            .stream
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    /// `GET /mcp` for the session, each message it carries written as a line, until the
    /// stream ends. A daemon that offers no stream, or a stream that breaks, only ends the
    /// relay: requests keep going through `POST`.
    async fn relay_notifications(self: Arc<Self>) {
        let Some(session) = self.session_id() else {
            return;
        };
        let sent = self
            .stream_client
            .get(&self.url)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .header(reqwest::header::AUTHORIZATION, &self.authorization)
            .header(SESSION_HEADER, session)
            .send()
            .await;
        let mut resp = match sent {
            Ok(resp) if resp.status() == reqwest::StatusCode::OK => resp,
            Ok(resp) => {
                tracing::debug!(status = %resp.status(), "the daemon opened no notification stream");
                return;
            }
            Err(e) => {
                tracing::debug!(error = %error_chain(&e), "notification stream not opened");
                return;
            }
        };
        let mut events = SseEvents::default();
        loop {
            let chunk = match resp.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %error_chain(&e), "notification stream broken");
                    break;
                }
            };
            let Some(messages) = events.push(&chunk) else {
                tracing::warn!(
                    "notification stream event longer than {MAX_LINE_BYTES} bytes: stream dropped"
                );
                break;
            };
            for data in messages {
                match serde_json::from_str::<Value>(&data) {
                    Ok(message) => self.write(&message).await,
                    Err(e) => {
                        tracing::debug!(error = %e, "notification stream event is not JSON: skipped");
                    }
                }
            }
        }
        tracing::debug!("notification stream ended");
    }

    fn session_id(&self) -> Option<String> {
        self.session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    async fn daemon_lost(&self, id: Option<&Value>, e: &reqwest::Error) {
        let detail = error_chain(e);
        if let Some(id) = id {
            let error = RpcError::new(
                INTERNAL_ERROR,
                format!("mesh7 daemon unreachable: {detail}"),
            );
            self.write(&jsonrpc::error_response(id, &error)).await;
        }
        let _ = self.lost.try_send(detail);
    }

    /// `DELETE /mcp` for the session, best effort: the daemon also expires idle sessions.
    async fn end_session(&self) {
        let Some(session) = self.session_id() else {
            return;
        };
        let sent = self
            .client
            .delete(&self.url)
            .header(reqwest::header::AUTHORIZATION, &self.authorization)
            .header(SESSION_HEADER, session)
            .timeout(CONNECT_TIMEOUT)
            .send()
            .await;
        if let Err(e) = sent {
            tracing::debug!(error = %e, "ending the MCP session failed");
        }
    }
}

/// Splits a `text/event-stream` into its events' data (comments and other fields are skipped;
/// several `data:` lines of one event are joined with newlines).
#[derive(Debug, Default)]
struct SseEvents {
    pending: Vec<u8>,
}

impl SseEvents {
    /// Takes the next bytes of the stream; the data of every event they complete. `None` when an
    /// event grows past [`MAX_LINE_BYTES`].
    fn push(&mut self, bytes: &[u8]) -> Option<Vec<String>> {
        self.pending.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some((end, sep)) = event_end(&self.pending) {
            let event: Vec<u8> = self.pending.drain(..end + sep).collect();
            let text = String::from_utf8_lossy(&event[..end]);
            let data: Vec<&str> = text
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            if !data.is_empty() {
                events.push(data.join("\n"));
            }
        }
        (self.pending.len() <= MAX_LINE_BYTES).then_some(events)
    }
}

/// Where the first event in `buf` ends, and the length of the blank line that ends it.
fn event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    let crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// The error with its causes, e.g. "error sending request: connection refused".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_url_reaches_unspecified_binds_over_loopback() {
        let table = [
            ("0.0.0.0:9090", Some("http://127.0.0.1:9090")),
            ("127.0.0.1:8080", Some("http://127.0.0.1:8080")),
            ("[::]:9090", Some("http://[::1]:9090")),
            ("10.1.2.3:9090", Some("http://10.1.2.3:9090")),
            ("127.0.0.1:0", None),
        ];
        for (listen, expected) in table {
            let addr: SocketAddr = listen.parse().unwrap();
            assert_eq!(daemon_url(addr).as_deref(), expected, "{listen}");
        }
    }

    #[test]
    fn event_stream_is_split_into_the_data_of_whole_events() {
        let mut sse = SseEvents::default();
        // A comment, then an event cut in the middle of its data.
        assert_eq!(
            sse.push(b": mesh7 notifications\n\nevent: message\ndata: {\"a\"")
                .unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            sse.push(b":1}\n\ndata:x\r\ndata: y\r\n\r\n: keep-alive\n\n")
                .unwrap(),
            vec!["{\"a\":1}".to_owned(), "x\ny".to_owned()]
        );
        assert!(sse.pending.is_empty());
        // An event that never ends is not buffered without bound.
        let mut sse = SseEvents::default();
        assert!(sse.push(&vec![b'x'; MAX_LINE_BYTES + 1]).is_none());
    }
}
