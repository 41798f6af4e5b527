//! One live connection to an upstream server and how it is made: open the transport, run the
//! MCP handshake (`initialize`, `notifications/initialized`, `tools/list` with pagination), and
//! later close it. Every task a connection starts is owned by it and aborted when it is dropped.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use actix::WeakRecipient;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::http::{self, Poster};
use super::rpc::{Link, Rpc};
use super::wire::{initialize_params, negotiated_version, parse_tool};
use super::{ConnEvent, McpTool, Settings, Transport, UpstreamError, sse, stdio};

/// Bound of each handshake request.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// `tools/list` pages followed at most.
const MAX_PAGES: usize = 100;
/// How long a closing driver may take (the stdio sequence needs about 4 s).
const CLOSE_WAIT: Duration = Duration::from_secs(6);
const OUTBOX: usize = 64;

/// A spawned task, aborted when dropped.
pub(crate) struct Task(Option<JoinHandle<()>>);

impl Task {
    pub(crate) fn spawn(fut: impl Future<Output = ()> + Send + 'static) -> Task {
        Task(Some(tokio::spawn(fut)))
    }

    /// Waits for the task to end by itself.
    async fn join(&mut self) {
        if let Some(handle) = &mut self.0 {
            let _ = handle.await;
            self.0 = None;
        }
    }

    /// Aborts the task and waits until its future has been dropped (and with it what it owns).
    pub(crate) async fn abort(&mut self) {
        if let Some(handle) = self.0.take() {
            handle.abort();
            let _ = handle.await;
        }
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        if let Some(handle) = &self.0 {
            handle.abort();
        }
    }
}

/// The task that owns a transport's stream or child process, and the signal that closes it.
pub(crate) struct Driver {
    close: Option<oneshot::Sender<()>>,
    task: Task,
}

impl Driver {
    pub(crate) fn new(close: oneshot::Sender<()>, task: Task) -> Driver {
        Driver {
            close: Some(close),
            task,
        }
    }

    async fn stop(mut self) {
        if let Some(close) = self.close.take() {
            let _ = close.send(());
        }
        let _ = tokio::time::timeout(CLOSE_WAIT, self.task.join()).await;
    }
}

pub(crate) struct Connection {
    pub(crate) rpc: Arc<Rpc>,
    driver: Option<Driver>,
    tasks: Vec<Task>,
    /// Streamable HTTP: the session DELETEd on close.
    session: Option<Arc<Poster>>,
    pub(crate) pid: Option<u32>,
}

impl Connection {
    pub(crate) fn new(rpc: Arc<Rpc>, driver: Option<Driver>) -> Connection {
        Connection {
            rpc,
            driver,
            tasks: Vec::new(),
            session: None,
            pid: None,
        }
    }

    pub(crate) fn add_task(&mut self, task: Task) {
        self.tasks.push(task);
    }

    pub(crate) fn set_pid(&mut self, pid: Option<u32>) {
        self.pid = pid;
    }

    /// Fails what is in flight, then closes the transport: stdio children are stopped and
    /// reaped, a Streamable HTTP session is deleted.
    pub(crate) async fn close(mut self) {
        let server = self.rpc.server().to_owned();
        self.rpc.close(&UpstreamError::ConnectionLost(format!(
            "MCP server {server:?} was shut down"
        )));
        if let Some(driver) = self.driver.take() {
            driver.stop().await;
        }
        if let Some(session) = self.session.take() {
            session.end_session().await;
        }
    }
}

/// Opens the transport and runs the handshake; returns the connection and its tools.
pub(crate) async fn connect(
    settings: &Settings,
    generation: u64,
    events: WeakRecipient<ConnEvent>,
) -> Result<(Connection, Vec<McpTool>), UpstreamError> {
    let name = settings.name.as_str();
    let mut conn = match &settings.transport {
        Transport::Stdio { command, args, env } => {
            stdio::spawn(name, command, args, env, generation, events)?
        }
        Transport::Sse { url, client } => {
            sse::open(name, client, url, &settings.headers, generation, events).await?
        }
        Transport::Http { url, client } => {
            let poster = Arc::new(Poster::new(
                client.clone(),
                url.clone(),
                settings.headers.clone(),
                true,
            ));
            let (outbox, queued) = mpsc::channel(OUTBOX);
            let link = Link::Post {
                poster: poster.clone(),
                outbox,
            };
            let mut conn =
                Connection::new(Arc::new(Rpc::new(name, generation, link, events)), None);
            conn.add_task(Task::spawn(http::run_outbox(poster.clone(), queued)));
            conn.session = Some(poster);
            conn
        }
    };
    let rpc = conn.rpc.clone();
    let init = rpc
        .request("initialize", initialize_params(), HANDSHAKE_TIMEOUT)
        .await?;
    let version = negotiated_version(&init).map_err(UpstreamError::Protocol)?;
    rpc.set_protocol(&version);
    rpc.notify("notifications/initialized").await?;
    if let Some(poster) = &conn.session {
        conn.add_task(Task::spawn(http::listen(poster.clone(), rpc.clone())));
    }
    let tools = list_tools(&rpc).await?;
    Ok((conn, tools))
}

/// `tools/list`, following `nextCursor` for at most `MAX_PAGES` pages.
pub(crate) async fn list_tools(rpc: &Rpc) -> Result<Vec<McpTool>, UpstreamError> {
    let mut tools = Vec::new();
    let mut names = HashSet::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let params = cursor
            .as_ref()
            .map_or_else(|| json!({}), |cursor| json!({"cursor": cursor}));
        let page = rpc.request("tools/list", params, HANDSHAKE_TIMEOUT).await?;
        let listed = page.get("tools").and_then(Value::as_array);
        for value in listed.into_iter().flatten() {
            match parse_tool(value) {
                Some(tool) if names.insert(tool.name.clone()) => tools.push(tool),
                Some(tool) => {
                    tracing::warn!(server = rpc.server(), tool = %tool.name, "duplicate tool ignored");
                }
                None => tracing::warn!(server = rpc.server(), "tool without a name ignored"),
            }
        }
        match page.get("nextCursor").and_then(Value::as_str) {
            Some(next) if !next.is_empty() && cursor.as_deref() != Some(next) => {
                cursor = Some(next.to_owned());
            }
            _ => return Ok(tools),
        }
    }
    tracing::warn!(
        server = rpc.server(),
        "tools/list stopped after {MAX_PAGES} pages"
    );
    Ok(tools)
}
