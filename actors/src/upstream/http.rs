//! HTTP for the upstream client: the poster shared by the legacy SSE transport (messages POSTed
//! to the announced endpoint, answers on the stream) and Streamable HTTP (answers in the POST's
//! own response, JSON or SSE), plus the Streamable HTTP session: its id and protocol headers, the
//! optional GET stream for server-initiated messages, and the DELETE that ends it.

use std::collections::HashMap;
use std::error::Error as _;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::ThreadId;
use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde_json::Value;
use tokio::sync::mpsc;

use super::UpstreamError;
use super::rpc::Rpc;
use super::wire::{SseReader, read_body};

/// Timeout of a POST whose answer is not in its response (notifications, legacy SSE).
const POST_TIMEOUT: Duration = Duration::from_secs(30);
const DELETE_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest message accepted in one piece.
pub(crate) const MAX_MESSAGE: usize = 16 << 20;
/// How much of an error body is read and quoted.
const MAX_ERROR_BODY: usize = 64 << 10;
const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";

pub(crate) struct Poster {
    client: reqwest::Client,
    /// The thread that made the poster, whose runtime drives `client`'s connections.
    owner: ThreadId,
    /// A client for each other thread that posts (the HTTP workers). A pooled connection is
    /// driven by the runtime that opened it: one shared client would send every call through
    /// the owner's thread, two thread hops per call.
    others: Mutex<HashMap<ThreadId, reqwest::Client>>,
    /// The Streamable HTTP endpoint, or the endpoint a legacy SSE stream announced.
    url: Url,
    headers: HeaderMap,
    streamable: bool,
    session: OnceLock<String>,
    protocol: OnceLock<String>,
}

impl Poster {
    pub(crate) fn new(
        client: reqwest::Client,
        url: Url,
        headers: HeaderMap,
        streamable: bool,
    ) -> Poster {
        Poster {
            client,
            owner: std::thread::current().id(),
            others: Mutex::new(HashMap::new()),
            url,
            headers,
            streamable,
            session: OnceLock::new(),
            protocol: OnceLock::new(),
        }
    }

    /// Records the negotiated version, sent on every later Streamable HTTP request.
    pub(crate) fn set_protocol(&self, version: &str) {
        if self.streamable {
            let _ = self.protocol.set(version.to_owned());
        }
    }

    /// The calling thread's client.
    fn client(&self) -> reqwest::Client {
        let id = std::thread::current().id();
        if id == self.owner {
            return self.client.clone();
        }
        // Every change is one insert: the map is whole even if a holder panicked.
        let mut others = self.others.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(client) = others.get(&id) {
            return client.clone();
        }
        match super::http_client() {
            Ok(client) => {
                others.insert(id, client.clone());
                client
            }
            // Built once already with the same settings; should it fail now, share the owner's.
            Err(_) => self.client.clone(),
        }
    }

    fn request(&self, method: Method) -> RequestBuilder {
        let mut request = self
            .client()
            .request(method, self.url.clone())
            .headers(self.headers.clone());
        if let Some(session) = self.session.get() {
            request = request.header(SESSION_HEADER, session);
        }
        if let Some(version) = self.protocol.get() {
            request = request.header(VERSION_HEADER, version);
        }
        request
    }

    fn post(&self, msg: &Value) -> RequestBuilder {
        let request = self
            .request(Method::POST)
            .header(CONTENT_TYPE, "application/json")
            .body(msg.to_string());
        if self.streamable {
            request.header(ACCEPT, "application/json, text/event-stream")
        } else {
            request
        }
    }

    fn unavailable(&self, what: &str) -> UpstreamError {
        UpstreamError::Unavailable(format!("POST {}: {what}", self.url))
    }

    /// POSTs a message whose answer, if any, does not come back in the response.
    pub(crate) async fn send_notification(&self, msg: &Value) -> Result<(), UpstreamError> {
        let response = self
            .post(msg)
            .timeout(POST_TIMEOUT)
            .send()
            .await
            .map_err(|e| self.unavailable(&error_chain(&e)))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(self.unavailable(&format!("HTTP {status}")))
        }
    }

    /// POSTs request `id`. Streamable HTTP answers in the response, which is read here until the
    /// answer has been dispatched; a legacy SSE server answers on its stream.
    pub(crate) async fn send_request(
        &self,
        rpc: &Rpc,
        id: u64,
        msg: &Value,
    ) -> Result<(), UpstreamError> {
        if !self.streamable {
            return self.send_notification(msg).await;
        }
        let response = match self.post(msg).send().await {
            Ok(response) => response,
            // The server is gone, and its session with it.
            Err(e) if e.is_connect() => {
                return Err(rpc.lost(&format!("is unreachable: {}", error_chain(&e))));
            }
            Err(e) => return Err(self.unavailable(&error_chain(&e))),
        };
        if self.session.get().is_none()
            && let Some(session) = response
                .headers()
                .get(SESSION_HEADER)
                .and_then(|v| v.to_str().ok())
        {
            let _ = self.session.set(session.to_owned());
        }
        let status = response.status();
        if status == StatusCode::NOT_FOUND && self.session.get().is_some() {
            return Err(rpc.lost("ended the session (HTTP 404)"));
        }
        if status == StatusCode::ACCEPTED {
            return Ok(());
        }
        if !status.is_success() {
            let body = read_body(Box::pin(response.bytes_stream()), MAX_ERROR_BODY)
                .await
                .unwrap_or_default();
            // A JSON-RPC error about this request is the server's answer to it.
            if let Ok(answer) = serde_json::from_slice::<Value>(&body) {
                rpc.dispatch(answer);
                if !rpc.is_pending(id) {
                    return Ok(());
                }
            }
            let body = String::from_utf8_lossy(&body);
            let body: String = body.trim().chars().take(200).collect();
            return Err(self.unavailable(&format!("HTTP {status}: {body}")));
        }
        if is_event_stream(&response) {
            read_event_stream(rpc, response, Some(id)).await;
            // Without its answer here, the answer may still come on the GET stream.
            return Ok(());
        }
        let body = read_body(Box::pin(response.bytes_stream()), MAX_MESSAGE)
            .await
            .map_err(|e| self.unavailable(&e))?;
        let answer = serde_json::from_slice::<Value>(&body).map_err(|e| {
            UpstreamError::Protocol(format!("invalid JSON in the answer to request {id}: {e}"))
        })?;
        rpc.dispatch(answer);
        if rpc.is_pending(id) {
            return Err(UpstreamError::Protocol(format!(
                "the HTTP response did not answer request {id}"
            )));
        }
        Ok(())
    }

    /// Ends a Streamable HTTP session; the server may refuse (405), which changes nothing here.
    pub(crate) async fn end_session(&self) {
        if self.session.get().is_none() {
            return;
        }
        match self
            .request(Method::DELETE)
            .timeout(DELETE_TIMEOUT)
            .send()
            .await
        {
            Ok(response) => tracing::debug!(status = %response.status(), "MCP session deleted"),
            Err(e) => tracing::debug!("deleting the MCP session failed: {}", error_chain(&e)),
        }
    }
}

fn is_event_stream(response: &Response) -> bool {
    response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"))
}

/// Dispatches the messages of an SSE response; with `until`, stops once that request is answered.
async fn read_event_stream(rpc: &Rpc, response: Response, until: Option<u64>) {
    let mut events = SseReader::new(Box::pin(response.bytes_stream()), MAX_MESSAGE, MAX_MESSAGE);
    loop {
        match events.next().await {
            // An event without data only primes resumption.
            Ok(Some(event)) if event.event == "message" && !event.data.is_empty() => {
                match serde_json::from_str::<Value>(&event.data) {
                    Ok(msg) => rpc.dispatch(msg),
                    Err(e) => {
                        tracing::debug!(server = rpc.server(), "ignoring non-JSON event: {e}");
                    }
                }
                if until.is_some_and(|id| !rpc.is_pending(id)) {
                    return;
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(server = rpc.server(), "SSE response failed: {e}");
                return;
            }
        }
    }
}

/// Listens on the optional GET stream of a Streamable HTTP session (list changes, pings).
/// A server without one answers 405, and a stream that ends is not a lost connection.
pub(crate) async fn listen(poster: Arc<Poster>, rpc: Arc<Rpc>) {
    let response = poster
        .request(Method::GET)
        .header(ACCEPT, "text/event-stream")
        .send()
        .await;
    match response {
        Ok(response) if response.status().is_success() && is_event_stream(&response) => {
            read_event_stream(&rpc, response, None).await;
            tracing::debug!(server = rpc.server(), "MCP GET stream ended");
        }
        Ok(response) => {
            tracing::debug!(server = rpc.server(), status = %response.status(), "no MCP GET stream");
        }
        Err(e) => tracing::debug!(server = rpc.server(), "MCP GET stream: {}", error_chain(&e)),
    }
}

/// Posts fire-and-forget messages (cancellations, answers to pings) one at a time.
pub(crate) async fn run_outbox(poster: Arc<Poster>, mut outbox: mpsc::Receiver<Value>) {
    while let Some(msg) = outbox.recv().await {
        if let Err(e) = poster.send_notification(&msg).await {
            tracing::debug!("could not deliver a message to the MCP server: {e}");
        }
    }
}

/// reqwest's own message names only the URL; the cause is in the source chain.
pub(crate) fn error_chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
