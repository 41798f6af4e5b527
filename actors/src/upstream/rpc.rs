//! The JSON-RPC 2.0 side of one upstream connection: request ids, the map of pending requests,
//! matching responses, answering the server's own requests, and cancellation.
//!
//! Invariants:
//! - Once closed, every pending request has been failed and no new one can register, so no
//!   caller waits on a dead connection.
//! - A request that ends without its answer (timeout, or its future dropped) leaves the map and,
//!   unless it is `initialize`, sends `notifications/cancelled` for its id.
//! - Nothing here blocks: fire-and-forget messages use `try_send` on bounded queues.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use actix::WeakRecipient;
use futures_util::future::{Either, select};
use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, oneshot};

use super::http::Poster;
use super::wire::response_id;
use super::{ConnEvent, UpstreamError};

type Answer = Result<Value, UpstreamError>;

/// How messages reach the server.
pub(crate) enum Link {
    /// Newline-delimited JSON written to the child's stdin by the connection's writer task.
    Stdio(mpsc::Sender<Vec<u8>>),
    /// HTTP POSTs (legacy SSE endpoint or Streamable HTTP); `outbox` feeds the task that posts
    /// fire-and-forget messages.
    Post {
        poster: Arc<Poster>,
        outbox: mpsc::Sender<Value>,
    },
}

#[derive(Default)]
struct Pending {
    waiting: HashMap<u64, oneshot::Sender<Answer>>,
    /// Set once; what every later request fails with.
    closed: Option<UpstreamError>,
}

pub(crate) struct Rpc {
    server: String,
    generation: u64,
    next_id: AtomicU64,
    pending: Mutex<Pending>,
    link: Link,
    events: WeakRecipient<ConnEvent>,
}

impl Rpc {
    pub(crate) fn new(
        server: &str,
        generation: u64,
        link: Link,
        events: WeakRecipient<ConnEvent>,
    ) -> Rpc {
        Rpc {
            server: server.to_owned(),
            generation,
            next_id: AtomicU64::new(1),
            pending: Mutex::new(Pending::default()),
            link,
            events,
        }
    }

    pub(crate) fn server(&self) -> &str {
        &self.server
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        // The map stays consistent across a panic in another holder: every step is one insert
        // or one remove.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.pending().closed.is_some()
    }

    pub(crate) fn is_pending(&self, id: u64) -> bool {
        self.pending().waiting.contains_key(&id)
    }

    /// Fails every pending request with `err` and refuses new ones. False if already closed.
    pub(crate) fn close(&self, err: &UpstreamError) -> bool {
        let waiting = {
            let mut pending = self.pending();
            if pending.closed.is_some() {
                return false;
            }
            pending.closed = Some(err.clone());
            std::mem::take(&mut pending.waiting)
        };
        for (_, tx) in waiting {
            let _ = tx.send(Err(err.clone()));
        }
        true
    }

    /// The transport died: fail everything at once and tell the connection actor. Returns what
    /// requests now fail with.
    pub(crate) fn lost(&self, reason: &str) -> UpstreamError {
        let err = UpstreamError::ConnectionLost(format!("MCP server {:?} {reason}", self.server));
        if self.close(&err) {
            tracing::warn!(server = %self.server, "MCP connection lost: {reason}");
            if let Some(actor) = self.events.upgrade() {
                actor.do_send(ConnEvent::Lost {
                    generation: self.generation,
                    error: err.to_string(),
                });
            }
        }
        self.closed_error()
    }

    pub(crate) fn closed_error(&self) -> UpstreamError {
        self.pending().closed.clone().unwrap_or_else(|| {
            UpstreamError::ConnectionLost(format!("MCP server {:?} closed its input", self.server))
        })
    }

    /// Sends a request and waits (at most `timeout`) for its `result`.
    pub(crate) async fn request(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, UpstreamError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut rx = {
            let mut pending = self.pending();
            if let Some(err) = &pending.closed {
                return Err(err.clone());
            }
            let (tx, rx) = oneshot::channel();
            pending.waiting.insert(id, tx);
            rx
        };
        let mut guard = InFlight {
            rpc: self,
            id,
            // The spec forbids cancelling `initialize`.
            cancel: (method != "initialize").then_some("request cancelled by the client"),
        };
        let msg = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let cancel = &mut guard.cancel;
        let exchange = async {
            let delivery = pin!(self.deliver(id, &msg));
            match select(delivery, &mut rx).await {
                Either::Left((Ok(()), answer)) => answer.await,
                Either::Left((Err(e), _)) => {
                    // Never delivered: nothing for the server to cancel.
                    *cancel = None;
                    Ok(Err(e))
                }
                Either::Right((answer, _)) => answer,
            }
        };
        let outcome = tokio::time::timeout(timeout, exchange).await;
        match outcome {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(self.closed_error()),
            Err(_) => {
                guard.cancel = guard.cancel.map(|_| "request timed out");
                Err(UpstreamError::Timeout(timeout))
            }
        }
    }

    /// Records the negotiated protocol version where the transport sends it (Streamable HTTP).
    pub(crate) fn set_protocol(&self, version: &str) {
        if let Link::Post { poster, .. } = &self.link {
            poster.set_protocol(version);
        }
    }

    /// Sends a notification and waits until the transport took it.
    pub(crate) async fn notify(&self, method: &str) -> Result<(), UpstreamError> {
        let msg = json!({"jsonrpc": "2.0", "method": method});
        match &self.link {
            Link::Stdio(tx) => tx.send(encode(&msg)).await.map_err(|_| self.closed_error()),
            Link::Post { poster, .. } => poster.send_notification(&msg).await,
        }
    }

    /// Queues a message without waiting; dropped (and logged) if the queue is full or gone.
    fn send_nowait(&self, msg: Value) {
        let queued = match &self.link {
            Link::Stdio(tx) => tx.try_send(encode(&msg)).is_ok(),
            Link::Post { outbox, .. } => outbox.try_send(msg).is_ok(),
        };
        if !queued {
            tracing::debug!(server = %self.server, "could not queue a message to the MCP server");
        }
    }

    async fn deliver(&self, id: u64, msg: &Value) -> Result<(), UpstreamError> {
        match &self.link {
            Link::Stdio(tx) => tx.send(encode(msg)).await.map_err(|_| self.closed_error()),
            Link::Post { poster, .. } => poster.send_request(self, id, msg).await,
        }
    }

    /// Handles one incoming JSON-RPC message (or batch).
    pub(crate) fn dispatch(&self, msg: Value) {
        match msg {
            Value::Array(batch) => batch.into_iter().for_each(|m| self.dispatch(m)),
            Value::Object(obj) => self.dispatch_one(obj),
            other => tracing::debug!(server = %self.server, "ignoring non-object message: {other}"),
        }
    }

    fn dispatch_one(&self, mut msg: Map<String, Value>) {
        let method = msg.get("method").and_then(Value::as_str).map(str::to_owned);
        let id = msg.remove("id").filter(|id| !id.is_null());
        match (method, id) {
            (Some(method), Some(id)) => self.answer_server_request(&method, &id),
            (Some(method), None) => self.on_notification(&method),
            (None, Some(id)) => self.complete(&id, msg),
            (None, None) => {
                tracing::debug!(server = %self.server, "ignoring message without id or method");
            }
        }
    }

    fn answer_server_request(&self, method: &str, id: &Value) {
        let reply = if method == "ping" {
            json!({"jsonrpc": "2.0", "id": id, "result": {}})
        } else {
            tracing::debug!(server = %self.server, method, "refusing a server request");
            json!({"jsonrpc": "2.0", "id": id,
                "error": {"code": -32601, "message": format!("Method not found: {method}")}})
        };
        self.send_nowait(reply);
    }

    fn on_notification(&self, method: &str) {
        if method == "notifications/tools/list_changed" {
            if let Some(actor) = self.events.upgrade() {
                actor.do_send(ConnEvent::ToolsChanged {
                    generation: self.generation,
                });
            }
        } else {
            tracing::debug!(server = %self.server, method, "ignoring notification");
        }
    }

    fn complete(&self, id: &Value, mut msg: Map<String, Value>) {
        let waiter = response_id(id).and_then(|id| self.pending().waiting.remove(&id));
        let Some(tx) = waiter else {
            tracing::debug!(server = %self.server, %id, "ignoring response to no pending request");
            return;
        };
        let answer = if let Some(error) = msg.remove("error") {
            Err(UpstreamError::Rpc {
                code: error.get("code").and_then(Value::as_i64).unwrap_or(0),
                message: error
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            })
        } else if let Some(result) = msg.remove("result") {
            Ok(result)
        } else {
            Err(UpstreamError::Protocol(format!(
                "response {id} has neither result nor error"
            )))
        };
        let _ = tx.send(answer);
    }
}

/// Removes an unanswered request from the map when its future ends, and tells the server.
struct InFlight<'a> {
    rpc: &'a Rpc,
    id: u64,
    cancel: Option<&'static str>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let unanswered = self.rpc.pending().waiting.remove(&self.id).is_some();
        if let (true, Some(reason)) = (unanswered, self.cancel) {
            self.rpc.send_nowait(
                json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                "params": {"requestId": self.id, "reason": reason}}),
            );
        }
    }
}

pub(crate) fn encode(msg: &Value) -> Vec<u8> {
    let mut bytes = msg.to_string().into_bytes();
    bytes.push(b'\n');
    bytes
}
