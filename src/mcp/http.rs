//! The MCP Streamable HTTP endpoint: `POST /mcp` (one JSON-RPC message, one JSON answer),
//! `GET /mcp` (a session's stream of server notifications, `text/event-stream`) and `DELETE /mcp`
//! (end a session). Other methods get 405.
//!
//! A session is minted at `initialize` and bound to that request's credentials: every later
//! request of the session must present the same ones. Sessions expire when idle and are capped
//! in number. A DNS-rebinding guard refuses a non-local `Host` or `Origin` unless configured.
//!
//! A request is cancelled by closing it (the Streamable HTTP signal since MCP 2026-07-28) or, as
//! earlier revisions ask, by a `notifications/cancelled` POSTed in the same session, which
//! stops it and answers it with the `cancelled` error; `DELETE` cancels the session's requests.
//! Either way the pipeline's future is dropped: the tool is stopped and the call traced as
//! cancelled (see `pipeline::Running`).
//!
//! The notification stream carries `notifications/tools/list_changed` whenever what the session
//! can list may have changed (`Pipeline::tools_version`). A session has at most one: a newer
//! `GET` ends the older. A session remembers the version it was last told of, so a change made
//! while no stream was open is announced as soon as one opens. The stream ends with its session
//! (`DELETE`, expiry) and at shutdown; while it is open, its keep-alive comments keep the session
//! alive and find a client that went away.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use futures_util::Stream;
use serde_json::Value;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::dispatch::{Caller, Dispatcher, PROTOCOL_VERSIONS, initialize_result, is_known_method};
use super::jsonrpc::{
    self, INTERNAL_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, Message, PARSE_ERROR, Request,
    RpcError,
};
use super::new_session_id;
use crate::api::{ApiState, header_str, json_response};
use crate::error::{Cancel, CancelNote, PipelineError};
use crate::pipeline::{Ingress, Pipeline};

pub const SESSION_HEADER: &str = "mcp-session-id";
const PROTOCOL_HEADER: &str = "mcp-protocol-version";
/// How long an open notification stream stays silent before it sends a keep-alive comment (at
/// most half the session's idle time, so the stream keeps its session).
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// What a notification stream sends first, so the client sees it open at once.
const STREAM_OPENED: &[u8] = b": mesh7 notifications\n\n";
const LIST_CHANGED_EVENT: &[u8] =
    b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/tools/list_changed\"}\n\n";

/// What `/mcp` needs from the configuration (`server.*`).
#[derive(Debug, Clone)]
pub struct McpHttpSettings {
    pub allowed_hosts: Vec<String>,
    pub allowed_origins: Vec<String>,
    pub session_idle: Duration,
    pub max_sessions: usize,
}

impl Default for McpHttpSettings {
    fn default() -> Self {
        Self {
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            session_idle: Duration::from_secs(30 * 60),
            max_sessions: 10_000,
        }
    }
}

/// The state of the `/mcp` endpoint, shared by every HTTP worker. Cheap to clone.
#[derive(Clone, Debug)]
pub struct McpHttp {
    sessions: Arc<Mutex<Sessions>>,
    guard: Arc<OriginGuard>,
    /// Set at shutdown: every notification stream ends (they would hold the drain up).
    closing: Arc<watch::Sender<bool>>,
    keep_alive: Duration,
}

impl McpHttp {
    pub fn new(settings: &McpHttpSettings) -> Self {
        Self {
            sessions: Arc::new(Mutex::new(Sessions::new(
                settings.session_idle,
                settings.max_sessions,
            ))),
            guard: Arc::new(OriginGuard::new(
                &settings.allowed_hosts,
                &settings.allowed_origins,
            )),
            closing: Arc::new(watch::Sender::new(false)),
            keep_alive: KEEP_ALIVE.min(settings.session_idle / 2),
        }
    }

    /// Ends every notification stream, and any opened later (shutdown).
    pub fn close_streams(&self) {
        self.closing.send_replace(true);
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        lock(&self.sessions)
    }

    /// Registers a request of `session` so that a `notifications/cancelled` naming its id (or
    /// the session's `DELETE`) can stop it: the future resolves when it does, and `note` says
    /// which by then. The request stays registered while the returned guard lives.
    fn track(
        &self,
        session: &str,
        id: &Value,
        note: CancelNote,
    ) -> (impl Future<Output = ()> + use<>, Option<InFlight>) {
        let key = id.to_string();
        let tracked = self.sessions().track(session, key.clone(), note);
        let guard = tracked.as_ref().map(|&(generation, _)| InFlight {
            sessions: self.sessions.clone(),
            session: session.to_owned(),
            key,
            generation,
        });
        let cancelled = async move {
            let fired = match tracked {
                Some((_, fired)) => fired.await.is_ok(),
                None => false,
            };
            if !fired {
                // Not cancellable (the session is gone), or unregistered without a cancel.
                std::future::pending::<()>().await;
            }
        };
        (cancelled, guard)
    }
}

fn lock(sessions: &Mutex<Sessions>) -> std::sync::MutexGuard<'_, Sessions> {
    // The map stays consistent even if a holder panicked: every change is one insert/remove.
    sessions
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A request that a `notifications/cancelled` can reach; unregistered when dropped.
struct InFlight {
    sessions: Arc<Mutex<Sessions>>,
    session: String,
    key: String,
    generation: u64,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        lock(&self.sessions).untrack(&self.session, &self.key, self.generation);
    }
}

impl Default for McpHttp {
    fn default() -> Self {
        Self::new(&McpHttpSettings::default())
    }
}

/// The `/mcp` resource, for `api::configure`.
pub fn resource() -> actix_web::Resource {
    web::resource("/mcp")
        .route(web::post().to(post))
        .route(web::get().to(get))
        .route(web::delete().to(delete))
        .default_service(web::to(method_not_allowed))
}

async fn post(state: web::Data<ApiState>, req: HttpRequest, payload: web::Payload) -> HttpResponse {
    let mcp = &state.mcp;
    if let Err(refused) = mcp.guard.check(&req) {
        return refused.response(&Value::Null);
    }
    let bytes = match read_body(&req, payload, state.limits).await {
        Ok(b) => b,
        Err(refused) => return refused.response(&Value::Null),
    };
    let message = match jsonrpc::parse(&bytes) {
        Ok(m) => m,
        Err(rejection) => {
            let status = match rejection.error.code {
                PARSE_ERROR | INVALID_REQUEST => StatusCode::BAD_REQUEST,
                _ => StatusCode::OK,
            };
            return json_response(status, &rejection.response());
        }
    };
    let credentials = header_str(&req, header::AUTHORIZATION).map(str::to_owned);
    let request = match message {
        Message::Request(r) => r,
        // Notifications and client responses are accepted, never answered.
        Message::Notification { method, params } => {
            return match check_session(mcp, &req, credentials.as_deref()) {
                Ok(session_id) => {
                    if method == "notifications/cancelled"
                        && let Some(id) = params.get("requestId")
                    {
                        // Only this session's requests: the session check above bound the
                        // notification to their credentials. An unknown or finished id is ignored.
                        mcp.sessions().cancel(&session_id, &id.to_string());
                    }
                    with_session(HttpResponse::Accepted().finish(), &session_id)
                }
                Err(refused) => refused.response(&Value::Null),
            };
        }
        Message::Response => {
            return match check_session(mcp, &req, credentials.as_deref()) {
                Ok(session_id) => with_session(HttpResponse::Accepted().finish(), &session_id),
                Err(refused) => refused.response(&Value::Null),
            };
        }
    };
    // An unknown method is answered before any session check, so that a client probing for a
    // newer protocol (`server/discover`, sent before any session exists) gets a prompt -32601.
    if !is_known_method(&request.method) {
        let error = RpcError::new(
            METHOD_NOT_FOUND,
            format!("Method not found: {}", request.method),
        );
        return json_response(
            StatusCode::OK,
            &jsonrpc::error_response(&request.id, &error),
        );
    }
    // Credentials are judged on every request (flux7): refused ones (a bad JWT) are 401.
    if let Some(refused) = state
        .pipeline
        .auth()
        .identify(credentials.as_deref())
        .refused
    {
        return Refusal::new(StatusCode::UNAUTHORIZED, refused).response(&request.id);
    }
    if request.method == "initialize" {
        return initialize(&state, credentials, &request);
    }
    let checked = check_session(mcp, &req, credentials.as_deref())
        .and_then(|session_id| check_protocol(&req).map(|()| session_id));
    let session_id = match checked {
        Ok(s) => s,
        Err(refused) => return refused.response(&request.id),
    };
    let caller = Caller {
        ingress: Ingress::McpHttp,
        authorization: credentials,
        session_id,
    };
    let id = request.id.clone();
    let note = CancelNote::default();
    let (cancelled, _in_flight) = mcp.track(&caller.session_id, &id, note.clone());
    let dispatcher = Dispatcher::new(state.pipeline.clone());
    let outcome = tokio::select! {
        outcome = dispatcher.handle(&caller, request, note.clone()) => outcome,
        // The call's future is dropped here, which stops it (and traces it as cancelled). The
        // POST still needs an answer: the client has forgotten the id and ignores it.
        () = cancelled => {
            let e = PipelineError::Cancelled(note.get());
            Err(RpcError::new(e.code().jsonrpc, e.to_string()))
        }
    };
    with_session(
        json_response(StatusCode::OK, &jsonrpc::response(&id, outcome)),
        &caller.session_id,
    )
}

/// `initialize` opens a session bound to the request's credentials. Any session id the client
/// sends is ignored: the server mints it (no session fixation).
fn initialize(state: &ApiState, credentials: Option<String>, request: &Request) -> HttpResponse {
    let auth = state.pipeline.auth();
    let identity = auth.identify(credentials.as_deref());
    if auth.requires_authentication() && identity.is_anonymous() {
        return Refusal::new(StatusCode::UNAUTHORIZED, "authentication required")
            .response(&request.id);
    }
    let told = state.pipeline.tools_version();
    let id = match state
        .mcp
        .sessions()
        .create(credentials, Instant::now(), told)
    {
        Ok(id) => id,
        Err(max) => {
            let refused = Refusal {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: INTERNAL_ERROR,
                message: format!("Too many MCP sessions ({max}); retry later"),
            };
            let mut resp = refused.response(&request.id);
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return resp;
        }
    };
    tracing::info!(session_id = %id, agent = %identity.agent, "MCP session started");
    let body = jsonrpc::result_response(&request.id, initialize_result(&request.params, true));
    with_session(json_response(StatusCode::OK, &body), &id)
}

async fn delete(state: web::Data<ApiState>, req: HttpRequest) -> HttpResponse {
    let mcp = &state.mcp;
    let credentials = header_str(&req, header::AUTHORIZATION);
    match mcp
        .guard
        .check(&req)
        .and_then(|()| check_session(mcp, &req, credentials))
    {
        Ok(id) => {
            // Ending the session cancels what still runs in it.
            mcp.sessions().remove(&id);
            tracing::info!(session_id = %id, "MCP session ended");
            HttpResponse::NoContent().finish()
        }
        Err(refused) => refused.response(&Value::Null),
    }
}

/// `GET /mcp`: the session's notification stream (see the module's documentation).
async fn get(state: web::Data<ApiState>, req: HttpRequest) -> HttpResponse {
    let mcp = &state.mcp;
    if let Err(refused) = mcp.guard.check(&req) {
        return refused.response(&Value::Null);
    }
    if !accepts_event_stream(&req) {
        return Refusal::new(
            StatusCode::NOT_ACCEPTABLE,
            "Not Acceptable: GET /mcp opens a stream of server notifications; send Accept: text/event-stream",
        )
        .response(&Value::Null);
    }
    let credentials = header_str(&req, header::AUTHORIZATION);
    if let Some(refused) = state.pipeline.auth().identify(credentials).refused {
        return Refusal::new(StatusCode::UNAUTHORIZED, refused).response(&Value::Null);
    }
    let opened = check_session(mcp, &req, credentials)
        .and_then(|id| check_protocol(&req).map(|()| id))
        .and_then(|id| match mcp.sessions().open_stream(&id) {
            Some((stop, told)) => Ok((id, stop, told)),
            None => Err(Refusal::new(StatusCode::NOT_FOUND, "Unknown session")),
        });
    let (session_id, stop, told) = match opened {
        Ok(opened) => opened,
        Err(refused) => return refused.response(&Value::Null),
    };
    tracing::debug!(session_id = %session_id, "MCP notification stream opened");
    let stream = notifications(Notifications {
        pipeline: state.pipeline.clone(),
        mcp: mcp.clone(),
        session: session_id.clone(),
        told,
        stop,
        closing: mcp.closing.subscribe(),
        opened: false,
    });
    let resp = HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .streaming(stream);
    with_session(resp, &session_id)
}

/// Whether the request takes `text/event-stream`. No `Accept` takes anything.
fn accepts_event_stream(req: &HttpRequest) -> bool {
    let Some(accept) = header_str(req, header::ACCEPT) else {
        return req.headers().get(header::ACCEPT).is_none();
    };
    accept.split(',').any(|range| {
        let media = range.split(';').next().unwrap_or("").trim();
        media.eq_ignore_ascii_case("text/event-stream")
            || media.eq_ignore_ascii_case("text/*")
            || media == "*/*"
    })
}

/// One open notification stream.
struct Notifications {
    pipeline: Pipeline,
    mcp: McpHttp,
    session: String,
    /// The tools version the session was last told of.
    told: u64,
    /// Fires when a newer stream of the session opens; fails when the session ends.
    stop: oneshot::Receiver<()>,
    closing: watch::Receiver<bool>,
    opened: bool,
}

fn notifications(state: Notifications) -> impl Stream<Item = Result<Bytes, Infallible>> {
    enum Next {
        End,
        Changed,
        Quiet,
    }
    futures_util::stream::unfold(state, |mut s| async move {
        if !s.opened {
            s.opened = true;
            return Some((Ok(Bytes::from_static(STREAM_OPENED)), s));
        }
        let next = tokio::select! {
            biased;
            _ = &mut s.stop => Next::End,
            _ = s.closing.wait_for(|closing| *closing) => Next::End,
            () = s.pipeline.tools_changed(s.told) => Next::Changed,
            () = tokio::time::sleep(s.mcp.keep_alive) => Next::Quiet,
        };
        let chunk = match next {
            Next::End => None,
            Next::Changed => {
                s.told = s.pipeline.tools_version();
                s.mcp
                    .sessions()
                    .tell(&s.session, s.told)
                    .then_some(LIST_CHANGED_EVENT)
            }
            Next::Quiet => s
                .mcp
                .sessions()
                .keep_alive(&s.session, Instant::now())
                .then_some(b": keep-alive\n\n".as_slice()),
        };
        match chunk {
            Some(bytes) => Some((Ok(Bytes::from_static(bytes)), s)),
            None => {
                tracing::debug!(session_id = %s.session, "MCP notification stream ended");
                None
            }
        }
    })
}

async fn method_not_allowed() -> HttpResponse {
    let mut resp = Refusal::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method not allowed: use POST, GET or DELETE",
    )
    .response(&Value::Null);
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST, GET, DELETE"));
    resp
}

/// A request refused before it reaches the MCP methods: an HTTP status with a JSON-RPC error.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    code: i64,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code: INVALID_REQUEST,
            message: message.into(),
        }
    }

    fn response(&self, id: &Value) -> HttpResponse {
        let error = RpcError::new(self.code, self.message.clone());
        json_response(self.status, &jsonrpc::error_response(id, &error))
    }
}

/// The session a non-`initialize` request belongs to, checked against its credentials.
fn check_session(
    mcp: &McpHttp,
    req: &HttpRequest,
    credentials: Option<&str>,
) -> Result<String, Refusal> {
    let Some(id) = header_str(req, SESSION_HEADER).filter(|s| !s.is_empty()) else {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "Missing Mcp-Session-Id header",
        ));
    };
    match mcp.sessions().touch(id, credentials, Instant::now()) {
        Touch::Ok => Ok(id.to_owned()),
        Touch::Unknown => Err(Refusal::new(StatusCode::NOT_FOUND, "Unknown session")),
        Touch::OtherIdentity => Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "Session belongs to another identity",
        )),
    }
}

/// A protocol version the request names (`MCP-Protocol-Version`) must be one mesh7 speaks.
fn check_protocol(req: &HttpRequest) -> Result<(), Refusal> {
    match header_str(req, PROTOCOL_HEADER) {
        Some(version) if !PROTOCOL_VERSIONS.contains(&version) => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("Unsupported protocol version: {version}"),
        )),
        _ => Ok(()),
    }
}

fn with_session(mut resp: HttpResponse, session_id: &str) -> HttpResponse {
    if let Ok(v) = HeaderValue::from_str(session_id) {
        resp.headers_mut()
            .insert(HeaderName::from_static(SESSION_HEADER), v);
    }
    resp
}

/// Reads the body within `server.max_body_bytes` and `server.client_timeout`.
async fn read_body(
    req: &HttpRequest,
    payload: web::Payload,
    limits: crate::api::BodyLimits,
) -> Result<Bytes, Refusal> {
    crate::api::read_body(req, payload, limits)
        .await
        .map_err(|e| Refusal::new(e.status, e.message))
}

/// Live sessions: bounded in number, expired when idle (checked on access, pruned when full).
#[derive(Debug)]
struct Sessions {
    map: HashMap<String, Session>,
    idle: Duration,
    max: usize,
    /// The next registration's generation, unique across sessions.
    generation: u64,
}

#[derive(Debug)]
struct Session {
    credentials: Option<String>,
    last_seen: Instant,
    /// The session's running requests by JSON id text (`7`, `"7"`), each with the generation
    /// of its registration (a reused id replaces the entry; only the newest may remove it) and
    /// the sender that cancels it. As many as the session has requests open.
    in_flight: HashMap<String, (u64, oneshot::Sender<()>, CancelNote)>,
    /// Ends the session's open notification stream: sent when a newer one opens, dropped with
    /// the session.
    stream: Option<oneshot::Sender<()>>,
    /// The tools version the session was last told of (its listing at `initialize`, then each
    /// `list_changed` sent).
    told: u64,
}

#[derive(Debug, PartialEq, Eq)]
enum Touch {
    Ok,
    Unknown,
    OtherIdentity,
}

impl Sessions {
    fn new(idle: Duration, max: usize) -> Self {
        Self {
            map: HashMap::new(),
            idle,
            max,
            generation: 0,
        }
    }

    /// A new session bound to `credentials`, whose tools version is `told`; `Err(max)` when the
    /// cap is reached.
    fn create(
        &mut self,
        credentials: Option<String>,
        now: Instant,
        told: u64,
    ) -> Result<String, usize> {
        if self.map.len() >= self.max {
            let idle = self.idle;
            self.map
                .retain(|_, s| now.saturating_duration_since(s.last_seen) < idle);
            if self.map.len() >= self.max {
                return Err(self.max);
            }
        }
        let id = new_session_id();
        self.map.insert(
            id.clone(),
            Session {
                credentials,
                last_seen: now,
                in_flight: HashMap::new(),
                stream: None,
                told,
            },
        );
        Ok(id)
    }

    /// Opens the session's notification stream, ending the one it had: what ends the new one,
    /// and the version the session was last told of. `None` when the session is gone.
    fn open_stream(&mut self, id: &str) -> Option<(oneshot::Receiver<()>, u64)> {
        let session = self.map.get_mut(id)?;
        let (stop, stopped) = oneshot::channel();
        if let Some(older) = session.stream.replace(stop) {
            let _ = older.send(());
        }
        Some((stopped, session.told))
    }

    /// Notes that the session was told of `version`; false when the session is gone.
    fn tell(&mut self, id: &str, version: u64) -> bool {
        self.map.get_mut(id).map(|s| s.told = version).is_some()
    }

    /// Marks a session with an open stream as used; false when it is gone.
    fn keep_alive(&mut self, id: &str, now: Instant) -> bool {
        self.map.get_mut(id).map(|s| s.last_seen = now).is_some()
    }

    /// Checks a session for a request made with `credentials`, and marks it used.
    fn touch(&mut self, id: &str, credentials: Option<&str>, now: Instant) -> Touch {
        let Some(session) = self.map.get_mut(id) else {
            return Touch::Unknown;
        };
        if now.saturating_duration_since(session.last_seen) >= self.idle {
            self.map.remove(id);
            return Touch::Unknown;
        }
        if !same_credentials(session.credentials.as_deref(), credentials) {
            return Touch::OtherIdentity;
        }
        session.last_seen = now;
        Touch::Ok
    }

    /// Ends a session and cancels its running requests.
    fn remove(&mut self, id: &str) {
        if let Some(session) = self.map.remove(id) {
            for (_, (_, cancel, note)) in session.in_flight {
                note.set(Cancel::SessionDeleted);
                let _ = cancel.send(());
            }
        }
    }

    /// Registers a running request; `None` when the session is gone.
    fn track(
        &mut self,
        id: &str,
        key: String,
        note: CancelNote,
    ) -> Option<(u64, oneshot::Receiver<()>)> {
        let session = self.map.get_mut(id)?;
        let (cancel, cancelled) = oneshot::channel();
        self.generation += 1;
        session
            .in_flight
            .insert(key, (self.generation, cancel, note));
        Some((self.generation, cancelled))
    }

    fn untrack(&mut self, id: &str, key: &str, generation: u64) {
        if let Some(session) = self.map.get_mut(id)
            && session
                .in_flight
                .get(key)
                .is_some_and(|(g, _, _)| *g == generation)
        {
            session.in_flight.remove(key);
        }
    }

    /// Cancels the session's running request `key`; false when there is none.
    fn cancel(&mut self, id: &str, key: &str) -> bool {
        self.map
            .get_mut(id)
            .and_then(|session| session.in_flight.remove(key))
            .is_some_and(|(_, cancel, note)| {
                note.set(Cancel::ByClient);
                cancel.send(()).is_ok()
            })
    }
}

/// Compares credentials in constant time for equal lengths (they may be secrets).
fn same_credentials(a: Option<&str>, b: Option<&str>) -> bool {
    let (a, b) = (a.unwrap_or(""), b.unwrap_or(""));
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The DNS-rebinding guard: `Host` must be local or configured, and `Origin` (when sent) too.
#[derive(Debug)]
struct OriginGuard {
    hosts: Vec<String>,
    origins: Vec<String>,
}

const LOCAL_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

impl OriginGuard {
    fn new(hosts: &[String], origins: &[String]) -> Self {
        Self {
            hosts: hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
            origins: origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
        }
    }

    fn check(&self, req: &HttpRequest) -> Result<(), Refusal> {
        let host = header_str(req, header::HOST);
        let origin = header_str(req, header::ORIGIN);
        let problem = if !host.is_none_or(|h| self.host_allowed(h)) {
            "Host"
        } else if !origin.is_none_or(|o| self.origin_allowed(o)) {
            "Origin"
        } else {
            return Ok(());
        };
        tracing::warn!(
            host,
            origin,
            "MCP request refused by the DNS-rebinding guard"
        );
        Err(Refusal::new(
            StatusCode::FORBIDDEN,
            format!("Forbidden: {problem} not allowed"),
        ))
    }

    /// `host` or `host:port`; a configured entry without a port allows any port.
    fn host_allowed(&self, value: &str) -> bool {
        let value = value.to_ascii_lowercase();
        let name = host_name(&value);
        LOCAL_HOSTS.contains(&name) || self.hosts.iter().any(|h| *h == value || *h == name)
    }

    fn origin_allowed(&self, value: &str) -> bool {
        let value = value.trim_end_matches('/').to_ascii_lowercase();
        if self.origins.contains(&value) {
            return true;
        }
        let Some(authority) = value
            .strip_prefix("http://")
            .or_else(|| value.strip_prefix("https://"))
        else {
            return false;
        };
        !authority.contains('/') && LOCAL_HOSTS.contains(&host_name(authority))
    }
}

/// The host part of `host[:port]` (IPv6 literals keep their brackets).
fn host_name(authority: &str) -> &str {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    match authority.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    fn guard() -> OriginGuard {
        OriginGuard::new(
            &["mesh.internal".into(), "10.0.0.5:9090".into()],
            &["https://app.example.com/".into()],
        )
    }

    #[test]
    fn guard_allows_local_and_configured_hosts_and_origins_only() {
        let table: [(Option<&str>, Option<&str>, bool); 14] = [
            (Some("localhost:9090"), None, true),
            (Some("127.0.0.1:1234"), None, true),
            (Some("[::1]:80"), None, true),
            (Some("LOCALHOST"), None, true),
            (None, None, true),
            (Some("evil.example.com"), None, false),
            (
                Some("evil.example.com:9090"),
                Some("http://evil.example.com"),
                false,
            ),
            (
                Some("localhost:9090"),
                Some("http://evil.example.com"),
                false,
            ),
            (Some("localhost:9090"), Some("http://localhost:3000"), true),
            (Some("localhost:9090"), Some("https://[::1]"), true),
            (Some("localhost:9090"), Some("null"), false),
            (
                Some("mesh.internal:1"),
                Some("https://app.example.com"),
                true,
            ),
            (Some("10.0.0.5:9090"), None, true),
            (Some("10.0.0.5:9091"), None, false),
        ];
        let g = guard();
        for (host, origin, allowed) in table {
            let mut req = TestRequest::default();
            if let Some(h) = host {
                req = req.insert_header(("host", h));
            }
            if let Some(o) = origin {
                req = req.insert_header(("origin", o));
            }
            let req = req.to_http_request();
            assert_eq!(g.check(&req).is_ok(), allowed, "{host:?} {origin:?}");
        }
    }

    #[test]
    fn host_name_strips_the_port() {
        let table = [
            ("localhost:80", "localhost"),
            ("localhost", "localhost"),
            ("[::1]:9090", "[::1]"),
            ("[::1]", "[::1]"),
            ("a.b:c", "a.b:c"),
        ];
        for (input, expected) in table {
            assert_eq!(host_name(input), expected, "{input}");
        }
    }

    #[test]
    fn sessions_are_bound_to_their_credentials() {
        let now = Instant::now();
        let mut s = Sessions::new(Duration::from_secs(60), 10);
        let id = s.create(Some("Bearer agent:a".into()), now, 0).unwrap();
        assert_eq!(id.len(), 32);
        assert_eq!(s.touch(&id, Some("Bearer agent:a"), now), Touch::Ok);
        assert_eq!(
            s.touch(&id, Some("Bearer agent:b"), now),
            Touch::OtherIdentity
        );
        assert_eq!(s.touch(&id, None, now), Touch::OtherIdentity);
        assert_eq!(s.touch("nope", Some("Bearer agent:a"), now), Touch::Unknown);
        let anon = s.create(None, now, 0).unwrap();
        assert_eq!(s.touch(&anon, None, now), Touch::Ok);
        assert_eq!(
            s.touch(&anon, Some("Bearer agent:a"), now),
            Touch::OtherIdentity
        );
        s.remove(&id);
        assert_eq!(s.touch(&id, Some("Bearer agent:a"), now), Touch::Unknown);
    }

    #[test]
    fn sessions_expire_when_idle_and_use_keeps_them_alive() {
        let t0 = Instant::now();
        let idle = Duration::from_secs(60);
        let mut s = Sessions::new(idle, 10);
        let kept = s.create(None, t0, 0).unwrap();
        let dropped = s.create(None, t0, 0).unwrap();
        assert_eq!(s.touch(&kept, None, t0 + idle / 2), Touch::Ok);
        assert_eq!(s.touch(&kept, None, t0 + idle + idle / 4), Touch::Ok);
        assert_eq!(
            s.touch(&dropped, None, t0 + idle + idle / 4),
            Touch::Unknown
        );
    }

    #[test]
    fn session_count_is_capped_and_idle_ones_make_room() {
        let t0 = Instant::now();
        let idle = Duration::from_secs(60);
        let mut s = Sessions::new(idle, 2);
        s.create(None, t0, 0).unwrap();
        s.create(None, t0 + idle / 2, 0).unwrap();
        assert_eq!(s.create(None, t0 + idle / 2, 0), Err(2));
        // The first one is idle by now: it is pruned to make room.
        assert!(s.create(None, t0 + idle, 0).is_ok());
        assert_eq!(s.create(None, t0 + idle, 0), Err(2));
    }

    #[test]
    fn a_session_has_one_stream_which_remembers_what_it_was_told_and_ends_with_the_session() {
        use tokio::sync::oneshot::error::TryRecvError;
        let (t0, idle) = (Instant::now(), Duration::from_secs(60));
        let mut s = Sessions::new(idle, 10);
        let id = s.create(None, t0, 7).unwrap();
        assert!(s.open_stream("no-such-session").is_none());
        let (mut first, told) = s.open_stream(&id).unwrap();
        assert_eq!(told, 7, "the version at initialize");
        assert!(s.tell(&id, 9));
        // A newer stream ends the older one and starts from what the session was told.
        let (mut second, told) = s.open_stream(&id).unwrap();
        assert_eq!(told, 9);
        assert_eq!(first.try_recv(), Ok(()));
        assert_eq!(second.try_recv(), Err(TryRecvError::Empty));
        // Keep-alives keep the session from expiring while the stream is open.
        assert!(s.keep_alive(&id, t0 + idle - Duration::from_secs(1)));
        assert_eq!(s.touch(&id, None, t0 + idle), Touch::Ok);
        // The session's end ends its stream; a gone session takes nothing more.
        s.remove(&id);
        assert_eq!(second.try_recv(), Err(TryRecvError::Closed));
        assert!(!s.tell(&id, 10));
        assert!(!s.keep_alive(&id, t0));
    }

    #[test]
    fn a_stream_is_offered_to_clients_that_take_event_streams() {
        let accepts = |value: Option<&str>| {
            let mut req = actix_web::test::TestRequest::get();
            if let Some(v) = value {
                req = req.insert_header((header::ACCEPT, v));
            }
            accepts_event_stream(&req.to_http_request())
        };
        assert!(accepts(None));
        assert!(accepts(Some("text/event-stream")));
        assert!(accepts(Some("application/json, text/event-stream;q=0.9")));
        assert!(accepts(Some("TEXT/*")));
        assert!(accepts(Some("*/*")));
        assert!(!accepts(Some("application/json")));
        assert!(!accepts(Some("text/event-streams")));
    }

    #[test]
    fn a_cancel_reaches_only_the_newest_running_request_of_that_id_in_that_session() {
        let now = Instant::now();
        let mut s = Sessions::new(Duration::from_secs(60), 10);
        let (a, b) = (
            s.create(None, now, 0).unwrap(),
            s.create(None, now, 0).unwrap(),
        );
        let note = CancelNote::default;
        assert!(s.track("no-such-session", "1".into(), note()).is_none());
        // A client reusing an id while the first request runs: the newer one is the target,
        // and the older one ending does not unregister it.
        let (old_note, new_note) = (note(), note());
        let (old_gen, mut old) = s.track(&a, "1".into(), old_note.clone()).unwrap();
        let (_, mut new) = s.track(&a, "1".into(), new_note.clone()).unwrap();
        s.untrack(&a, "1", old_gen);
        assert!(!s.cancel(&b, "1"), "another session's request");
        assert!(
            !s.cancel(&a, "\"1\""),
            "the string \"1\" is not the number 1"
        );
        assert_eq!(new_note.get(), Cancel::CallerGone, "nothing noted yet");
        assert!(s.cancel(&a, "1"));
        assert_eq!(new.try_recv(), Ok(()));
        assert_eq!(new_note.get(), Cancel::ByClient);
        // The replaced registration was dropped, not fired: its request runs on.
        assert_eq!(
            old.try_recv(),
            Err(tokio::sync::oneshot::error::TryRecvError::Closed)
        );
        assert_eq!(old_note.get(), Cancel::CallerGone);
        assert!(!s.cancel(&a, "1"), "a request is cancelled once");
        // Ending a session cancels what runs in it, and says so.
        let running_note = note();
        let (_, mut running) = s.track(&b, "7".into(), running_note.clone()).unwrap();
        s.remove(&b);
        assert_eq!(running.try_recv(), Ok(()));
        assert_eq!(running_note.get(), Cancel::SessionDeleted);
    }
}
