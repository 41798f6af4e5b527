//! Upstream MCP servers (`mcp_servers`): one supervised connection actor per server, behind the
//! cloneable [`Upstream`] handle. Transports: stdio, legacy HTTP+SSE and Streamable HTTP, all
//! spoken as hand-written JSON-RPC 2.0.
//!
//! Invariants:
//! - No call ever hangs: a call while not connected fails at once (`NotConnected`), every request
//!   has a timeout, and when the child dies or the stream drops every call in flight fails at
//!   once (`ConnectionLost`).
//! - The actor stops when its connection is lost or cannot be made; `actix::Supervisor` restarts
//!   it, `restarting()` drops the old connection, and `started()` reconnects after a backoff of
//!   1 s doubling to 30 s, forever, until `shutdown`.
//! - Reads never wait: the live client, the tool list and the status are snapshots the actor
//!   replaces; a call runs in the caller's future, so dropping it cancels it upstream.
//! - The actor never blocks: connecting and tool refreshes run as futures in its context.

mod connection;
mod http;
mod rpc;
mod sse;
mod stdio;
mod wire;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use actix::{
    Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, Message, Recipient,
    ResponseFuture, SpawnHandle, Supervised, Supervisor, WrapFuture,
};
use arc_swap::{ArcSwap, ArcSwapOption};
use mesh7_config::{McpServerConfig, McpTransport};
use reqwest::Url;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::watch;

use connection::Connection;
use rpc::Rpc;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A connection that lived this long restarts the backoff from its minimum when lost.
const STABLE: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A tool as the upstream server lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct McpTool {
    /// The upstream name, not namespaced.
    pub name: String,
    pub title: Option<String>,
    pub description: String,
    /// The whole schema, as given.
    pub input_schema: Value,
    pub output_schema: Option<Value>,
    pub annotations: Option<Value>,
    /// SHA-256 of the definition in canonical form ([`crate::pins::fingerprint`]): what
    /// catalogue pinning compares.
    pub fingerprint: String,
}

/// A server's tool list as just received (connect, reconnect, `list_changed`), for whoever
/// watches catalogues (pinning).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct ToolsListed {
    pub server: String,
    pub tools: Arc<Vec<McpTool>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamStatus {
    Connecting,
    Ready,
    Error,
    Closed,
}

/// What `/mcp-servers` shows of one server.
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamInfo {
    pub name: String,
    /// `stdio`, `sse` or `streamable-http`.
    pub transport: &'static str,
    pub status: UpstreamStatus,
    /// The last connection error, while not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Upstream (un-namespaced) tool names.
    pub tools: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UpstreamError {
    #[error("MCP server {0:?} is not connected")]
    NotConnected(String),
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    #[error("MCP call timed out after {0:?}")]
    Timeout(Duration),
    #[error("MCP error {code}: {message}")]
    Rpc { code: i64, message: String },
    #[error("MCP protocol error: {0}")]
    Protocol(String),
    #[error("MCP server unavailable: {0}")]
    Unavailable(String),
}

/// Settings of one server, checked once at start.
pub(crate) struct Settings {
    name: String,
    transport: Transport,
    headers: HeaderMap,
}

pub(crate) enum Transport {
    Stdio {
        command: String,
        args: Vec<String>,
        env: BTreeMap<String, String>,
    },
    Sse {
        url: Url,
        client: reqwest::Client,
    },
    Http {
        url: Url,
        client: reqwest::Client,
    },
}

impl Settings {
    fn from_config(cfg: &McpServerConfig) -> Result<(Settings, Duration), String> {
        let error = |what: String| format!("MCP server {:?}: {what}", cfg.name);
        let timeout = match cfg.timeout.as_deref() {
            None => DEFAULT_TIMEOUT,
            Some(text) => match mesh7_config::duration::parse(text) {
                Ok(d) if !d.is_zero() => d,
                Ok(_) => return Err(error(format!("invalid timeout {text:?}: must be positive"))),
                Err(e) => return Err(error(format!("invalid timeout {text:?}: {e}"))),
            },
        };
        let mut headers = HeaderMap::new();
        for (key, value) in &cfg.headers {
            let name = HeaderName::try_from(key.as_str())
                .map_err(|e| error(format!("invalid header name {key:?}: {e}")))?;
            let value = HeaderValue::try_from(value.as_str())
                .map_err(|e| error(format!("invalid value for header {key:?}: {e}")))?;
            headers.insert(name, value);
        }
        let transport = match cfg.transport {
            McpTransport::Stdio => Transport::Stdio {
                command: cfg
                    .command
                    .clone()
                    .filter(|c| !c.is_empty())
                    .ok_or_else(|| error("transport stdio requires command".into()))?,
                args: cfg.args.clone(),
                env: cfg.env.clone(),
            },
            McpTransport::Sse => Transport::Sse {
                url: http_url(cfg, "sse").map_err(error)?,
                client: http_client().map_err(error)?,
            },
            McpTransport::StreamableHttp => Transport::Http {
                url: http_url(cfg, "streamable-http").map_err(error)?,
                client: http_client().map_err(error)?,
            },
        };
        let settings = Settings {
            name: cfg.name.clone(),
            transport,
            headers,
        };
        Ok((settings, timeout))
    }
}

fn http_url(cfg: &McpServerConfig, transport: &str) -> Result<Url, String> {
    let raw = cfg
        .url
        .as_deref()
        .filter(|u| !u.is_empty())
        .ok_or_else(|| format!("transport {transport} requires url"))?;
    let url = Url::parse(raw).map_err(|e| format!("invalid url {raw:?}: {e}"))?;
    match url.scheme() {
        "http" => Ok(url),
        "https" if cfg!(feature = "tls") => Ok(url),
        "https" => Err(format!(
            "url {raw:?}: https needs a mesh7 built with the `tls` feature (the default)"
        )),
        other => Err(format!("url {raw:?}: unsupported scheme {other:?}")),
    }
}

fn http_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        // A peer that vanished without closing would otherwise keep an SSE stream open forever.
        .tcp_keepalive(Duration::from_secs(30))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

fn transport_label(transport: McpTransport) -> &'static str {
    match transport {
        McpTransport::Stdio => "stdio",
        McpTransport::Sse => "sse",
        McpTransport::StreamableHttp => "streamable-http",
    }
}

/// Health as the handle sees it; every change wakes `wait_for`.
#[derive(Debug, Clone)]
pub(crate) struct Health {
    pub(crate) status: UpstreamStatus,
    pub(crate) error: Option<String>,
    /// Connection attempts that finished, successful or not.
    pub(crate) attempts: u64,
    /// Bumped whenever the tool list is replaced.
    pub(crate) tools_version: u64,
}

/// What the handle reads without asking the actor.
struct Shared {
    name: String,
    transport: &'static str,
    runtime: String,
    timeout: Duration,
    client: ArcSwapOption<Rpc>,
    tools: ArcSwap<Vec<McpTool>>,
    health: watch::Sender<Health>,
    /// The stdio child's pid, 0 when none.
    pid: AtomicU32,
}

impl Shared {
    fn set_health(&self, update: impl FnOnce(&mut Health)) {
        self.health.send_modify(update);
    }
}

/// Handle to one upstream server's connection actor.
#[derive(Clone)]
pub struct Upstream {
    shared: Arc<Shared>,
    shutdown: Recipient<Shutdown>,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.shared.name)
            .field("transport", &self.shared.transport)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Starts the supervised actor on the current arbiter (inside a running actix System).
    /// Connecting happens in the background (status `Connecting`); a failed start is retried
    /// with backoff (1 s doubling to 30 s) forever. `Err` only for config it cannot use.
    pub fn start(cfg: &McpServerConfig) -> Result<Upstream, String> {
        Upstream::start_observed(cfg, None)
    }

    /// [`Upstream::start`], with every tool list received also sent to `observer` right after
    /// it becomes the snapshot.
    pub fn start_observed(
        cfg: &McpServerConfig,
        observer: Option<Recipient<ToolsListed>>,
    ) -> Result<Upstream, String> {
        let (settings, timeout) = Settings::from_config(cfg)?;
        let runtime = match &settings.transport {
            Transport::Stdio { command, args, .. } => std::iter::once(command)
                .chain(args)
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(" "),
            Transport::Sse { .. } | Transport::Http { .. } => cfg.url.clone().unwrap_or_default(),
        };
        let shared = Arc::new(Shared {
            name: cfg.name.clone(),
            transport: transport_label(cfg.transport),
            runtime,
            timeout,
            client: ArcSwapOption::empty(),
            tools: ArcSwap::from_pointee(Vec::new()),
            health: watch::Sender::new(Health {
                status: UpstreamStatus::Connecting,
                error: None,
                attempts: 0,
                tools_version: 0,
            }),
            pid: AtomicU32::new(0),
        });
        let actor = UpstreamActor {
            settings: Arc::new(settings),
            shared: shared.clone(),
            conn: None,
            generation: 0,
            failures: 0,
            ready_at: None,
            attempt: None,
            refresh: 0,
            closed: false,
            observer,
        };
        let addr = Supervisor::start(move |_| actor);
        Ok(Upstream {
            shared,
            shutdown: addr.recipient(),
        })
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// `<command> <args…>` for stdio, else the URL.
    pub fn runtime(&self) -> String {
        self.shared.runtime.clone()
    }

    /// The tools of the last (re)connect or list change.
    pub fn tools(&self) -> Arc<Vec<McpTool>> {
        self.shared.tools.load_full()
    }

    pub fn info(&self) -> UpstreamInfo {
        let health = self.shared.health.borrow().clone();
        UpstreamInfo {
            name: self.shared.name.clone(),
            transport: self.shared.transport,
            status: health.status,
            error: health.error,
            tools: self.tools().iter().map(|t| t.name.clone()).collect(),
        }
    }

    /// How many times the tool list was replaced (connects, reconnects, list changes).
    pub fn tools_version(&self) -> u64 {
        self.shared.health.borrow().tools_version
    }

    /// Resolves once the tool list was replaced since [`Upstream::tools_version`] said `seen`
    /// (at once if it already was).
    pub async fn tools_changed_since(&self, seen: u64) {
        let mut health = self.shared.health.subscribe();
        // The sender lives in `shared`, which this handle holds: it cannot be dropped meanwhile.
        let _ = health.wait_for(|h| h.tools_version != seen).await;
    }

    /// The stdio child's process id while connected.
    pub fn child_pid(&self) -> Option<u32> {
        Some(self.shared.pid.load(Ordering::Relaxed)).filter(|&pid| pid != 0)
    }

    /// `tools/call` with the configured timeout; returns the upstream `result` object as is
    /// (`content`, `structuredContent`, `isError`, `_meta`…). If the returned future is dropped
    /// before the answer arrives, `notifications/cancelled` is sent upstream for that request.
    pub async fn call_tool(
        &self,
        tool: &str,
        arguments: Value,
        meta: Option<Value>,
    ) -> Result<Value, UpstreamError> {
        let Some(rpc) = self.shared.client.load_full() else {
            return Err(UpstreamError::NotConnected(self.shared.name.clone()));
        };
        let mut params = json!({"name": tool, "arguments": arguments});
        if let Some(meta) = meta {
            params["_meta"] = meta;
        }
        rpc.request("tools/call", params, self.shared.timeout).await
    }

    /// Waits (bounded by `within`) until the status is `Ready`; true if it is.
    pub async fn wait_ready(&self, within: Duration) -> bool {
        self.wait_for(within, |health| health.status == UpstreamStatus::Ready)
            .await
    }

    /// Waits (bounded by `within`) until the first connection attempt has ended, ready or not
    /// (a server that cannot start says so at once); true if it is ready. For one-off uses
    /// (`mesh7 discover`) that will not wait for the reconnections.
    pub async fn wait_first_attempt(&self, within: Duration) -> bool {
        self.wait_for(within, |health| health.status != UpstreamStatus::Connecting)
            .await
            && self.info().status == UpstreamStatus::Ready
    }

    /// Waits (bounded by `within`) until `done` holds for the health snapshot.
    pub(crate) async fn wait_for(
        &self,
        within: Duration,
        done: impl FnMut(&Health) -> bool,
    ) -> bool {
        let mut health = self.shared.health.subscribe();
        matches!(
            tokio::time::timeout(within, health.wait_for(done)).await,
            Ok(Ok(_))
        )
    }

    /// Closes the connection for good: calls in flight fail, a stdio child gets its stdin
    /// closed, then SIGTERM and SIGKILL if it lingers, and is reaped; an HTTP session is deleted.
    pub async fn shutdown(&self) {
        // An error means the actor is already gone, which is what was asked.
        let _ = self.shutdown.send(Shutdown).await;
    }
}

/// News from a connection's tasks; `generation` tells an old connection's news apart.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) enum ConnEvent {
    Lost { generation: u64, error: String },
    ToolsChanged { generation: u64 },
}

#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Shutdown;

struct UpstreamActor {
    settings: Arc<Settings>,
    shared: Arc<Shared>,
    conn: Option<Connection>,
    /// Incremented by every connection attempt.
    generation: u64,
    /// Consecutive failures; sets the backoff before the next attempt.
    failures: u32,
    ready_at: Option<Instant>,
    attempt: Option<SpawnHandle>,
    /// Incremented by every tool refresh; only the latest one is applied.
    refresh: u64,
    closed: bool,
    observer: Option<Recipient<ToolsListed>>,
}

impl Actor for UpstreamActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.connect(ctx);
    }
}

impl Supervised for UpstreamActor {
    fn restarting(&mut self, _: &mut Self::Context) {
        self.shared.client.store(None);
        self.shared.pid.store(0, Ordering::Relaxed);
        // Dropping it aborts its tasks; a child still running is killed on drop.
        self.conn = None;
        self.attempt = None;
        self.ready_at = None;
    }
}

impl Handler<ConnEvent> for UpstreamActor {
    type Result = ();

    fn handle(&mut self, event: ConnEvent, ctx: &mut Self::Context) {
        match event {
            ConnEvent::Lost { generation, error } if self.is_current(generation) => {
                self.lost(error, ctx);
            }
            ConnEvent::ToolsChanged { generation } if self.is_current(generation) => {
                self.refresh_tools(ctx);
            }
            ConnEvent::Lost { .. } | ConnEvent::ToolsChanged { .. } => {}
        }
    }
}

impl Handler<Shutdown> for UpstreamActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) -> Self::Result {
        self.closed = true;
        if let Some(attempt) = self.attempt.take() {
            ctx.cancel_future(attempt);
        }
        self.shared.client.store(None);
        self.shared.pid.store(0, Ordering::Relaxed);
        self.shared.set_health(|h| {
            h.status = UpstreamStatus::Closed;
            h.error = None;
        });
        let conn = self.conn.take();
        Box::pin(async move {
            if let Some(conn) = conn {
                conn.close().await;
            }
        })
    }
}

impl UpstreamActor {
    fn is_current(&self, generation: u64) -> bool {
        !self.closed && generation == self.generation && self.conn.is_some()
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        if self.closed {
            return;
        }
        self.generation += 1;
        let generation = self.generation;
        let delay = backoff(self.failures);
        let settings = self.settings.clone();
        let events = ctx.address().recipient::<ConnEvent>().downgrade();
        let attempt = async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            connection::connect(&settings, generation, events).await
        };
        let handle = ctx.spawn(
            attempt
                .into_actor(self)
                .map(move |result, act, ctx| act.connected(generation, result, ctx)),
        );
        self.attempt = Some(handle);
    }

    fn connected(
        &mut self,
        generation: u64,
        result: Result<(Connection, Vec<McpTool>), UpstreamError>,
        ctx: &mut Context<Self>,
    ) {
        if self.closed || generation != self.generation {
            return;
        }
        self.attempt = None;
        // The transport may have died between the handshake and now.
        let result = result.and_then(|(conn, tools)| {
            if conn.rpc.is_closed() {
                Err(conn.rpc.closed_error())
            } else {
                Ok((conn, tools))
            }
        });
        match result {
            Ok((conn, tools)) => {
                tracing::info!(server = %self.shared.name, tools = tools.len(), "MCP server connected");
                self.shared
                    .pid
                    .store(conn.pid.unwrap_or(0), Ordering::Relaxed);
                self.shared.client.store(Some(conn.rpc.clone()));
                self.publish(tools);
                self.conn = Some(conn);
                self.ready_at = Some(Instant::now());
                self.shared.set_health(|h| {
                    h.status = UpstreamStatus::Ready;
                    h.error = None;
                    h.attempts += 1;
                    h.tools_version += 1;
                });
            }
            Err(e) => {
                self.failures = self.failures.saturating_add(1);
                tracing::warn!(
                    server = %self.shared.name,
                    retry_in = ?backoff(self.failures),
                    "MCP server connection failed: {e}"
                );
                self.shared.set_health(|h| {
                    h.status = UpstreamStatus::Error;
                    h.error = Some(e.to_string());
                    h.attempts += 1;
                });
                ctx.stop();
            }
        }
    }

    fn lost(&mut self, error: String, ctx: &mut Context<Self>) {
        let stable = self.ready_at.is_some_and(|t| t.elapsed() >= STABLE);
        self.failures = if stable {
            1
        } else {
            self.failures.saturating_add(1)
        };
        self.shared.client.store(None);
        self.shared.set_health(|h| {
            h.status = UpstreamStatus::Error;
            h.error = Some(error);
        });
        ctx.stop();
    }

    /// Makes `tools` the snapshot and tells the observer.
    fn publish(&self, tools: Vec<McpTool>) {
        let tools = Arc::new(tools);
        self.shared.tools.store(tools.clone());
        // A full mailbox drops the news: a catalogue not yet pinned stays refused until the
        // next list, a changed one is refused anyway (the check reads this snapshot).
        if let Some(observer) = &self.observer
            && let Err(e) = observer.try_send(ToolsListed {
                server: self.shared.name.clone(),
                tools,
            })
        {
            tracing::warn!(server = %self.shared.name, "the tool list was not passed on to pinning: {e}");
        }
    }

    fn refresh_tools(&mut self, ctx: &mut Context<Self>) {
        let Some(conn) = &self.conn else { return };
        self.refresh += 1;
        let (rpc, refresh, generation) = (conn.rpc.clone(), self.refresh, self.generation);
        let list = async move { connection::list_tools(&rpc).await };
        ctx.spawn(list.into_actor(self).map(move |result, act, _| {
            if act.refresh != refresh || !act.is_current(generation) {
                return;
            }
            match result {
                Ok(tools) => {
                    act.publish(tools);
                    act.shared.set_health(|h| h.tools_version += 1);
                }
                Err(e) => {
                    tracing::warn!(server = %act.shared.name, "refreshing the tool list failed: {e}");
                }
            }
        }));
    }
}

/// The wait before the next attempt: none at first, then 1 s doubling to 30 s.
fn backoff(failures: u32) -> Duration {
    match failures {
        0 => Duration::ZERO,
        n => BACKOFF_MIN
            .saturating_mul(1 << (n - 1).min(5))
            .min(BACKOFF_MAX),
    }
}
