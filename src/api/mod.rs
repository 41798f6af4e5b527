//! The actix-web HTTP API: flux7's routes and JSON shapes (§3).
//!
//! Data plane: `POST /tool/{name}`, `POST /decide`, `GET /tools`, `GET /mcp-servers`.
//! Open: `GET /health`, `GET /version`. MCP Streamable HTTP: `POST`/`DELETE /mcp` (`crate::mcp::http`).
//! Control plane (admin token, or a loopback peer when none is set): `/policies`, `/traces`,
//! `/otel-traces`, `/sessions`, `/sessions/{id}`, `/metrics`, `/halts`, `/pins`, `/taint`.
//!
//! Every error is JSON `{"error": …}` (tool calls keep flux7's ToolCallResponse shape). Bodies are
//! bounded (`server.max_body_bytes`, 413) and must arrive within `server.client_timeout` (408).

mod approvals;
mod body;
mod control;
mod halts;
mod pins;
mod taint;
mod tools;

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, AsHeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use mesh7_actors::trace::Redactor;
use serde_json::json;

use crate::pipeline::Pipeline;

pub use body::{BodyError, BodyLimits, read as read_body};

/// What every handler can reach.
#[derive(Clone)]
pub struct ApiState {
    pub pipeline: Pipeline,
    pub limits: BodyLimits,
    pub version: &'static Version,
    /// `/mcp` sessions and its DNS-rebinding guard.
    pub mcp: crate::mcp::McpHttp,
    /// `supervisor.expose_content`: false redacts arguments in approval views.
    pub expose_content: bool,
    /// `trace.redact`: the secrets of the arguments approval views show are replaced.
    pub secrets: Option<Arc<Redactor>>,
}

/// Build identity, for `/version` and `--version`.
#[derive(Debug)]
pub struct Version {
    pub version: &'static str,
    pub commit: &'static str,
    pub date: &'static str,
}

/// Registers every route on an actix-web `App`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/tool/{name}").route(web::post().to(tools::call_tool)))
        .service(resource("/decide").route(web::post().to(tools::decide)))
        .service(resource("/tools").route(web::get().to(tools::list_tools)))
        .service(resource("/mcp-servers").route(web::get().to(tools::mcp_servers)))
        .service(resource("/health").route(web::get().to(control::health)))
        .service(resource("/version").route(web::get().to(control::version)))
        .service(resource("/policies").route(web::get().to(control::policies)))
        .service(resource("/traces").route(web::get().to(control::traces)))
        .service(resource("/otel-traces").route(web::get().to(control::otel_traces)))
        .service(resource("/sessions").route(web::get().to(control::sessions)))
        .service(resource("/sessions/{id}").route(web::get().to(control::session)))
        .service(resource("/metrics").route(web::get().to(control::metrics)))
        .service(resource("/approvals").route(web::get().to(approvals::list)))
        .service(resource("/approvals/{id}").route(web::get().to(approvals::detail)))
        .service(resource("/approvals/{id}/approve").route(web::post().to(approvals::approve)))
        .service(resource("/approvals/{id}/deny").route(web::post().to(approvals::deny)))
        .service(
            resource("/grants")
                .route(web::get().to(approvals::grants))
                .route(web::post().to(approvals::create_grant)),
        )
        .service(resource("/grants/{id}").route(web::delete().to(approvals::revoke_grant)))
        .service(
            resource("/halts")
                .route(web::get().to(halts::list))
                .route(web::post().to(halts::create)),
        )
        .service(resource("/halts/{id}").route(web::delete().to(halts::lift)))
        .service(
            resource("/taint")
                .route(web::get().to(taint::list))
                .route(web::delete().to(taint::clear)),
        )
        .service(resource("/pins").route(web::get().to(pins::list)))
        .service(resource("/pins/{server}/accept").route(web::post().to(pins::accept)))
        .service(crate::mcp::http::resource())
        .default_service(web::to(not_found));
}

fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

async fn not_found() -> HttpResponse {
    ApiError::new(StatusCode::NOT_FOUND, "not found").error_response()
}

async fn method_not_allowed() -> HttpResponse {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed").error_response()
}

/// A JSON response with flux7's trailing newline.
pub fn json_response(status: StatusCode, body: &impl serde::Serialize) -> HttpResponse {
    // Most answers fit, so the text is written once, without regrowing.
    let mut text = Vec::with_capacity(512);
    if serde_json::to_writer(&mut text, body).is_err() {
        text.clear();
        text.extend_from_slice(b"null");
    }
    text.push(b'\n');
    HttpResponse::build(status)
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ))
        .body(text)
}

/// An error answered as `{"error": message}`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    status: StatusCode,
    message: String,
    retry_after: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: status == StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut resp = json_response(self.status, &json!({ "error": self.message }));
        if self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

impl From<crate::error::PipelineError> for ApiError {
    fn from(e: crate::error::PipelineError) -> Self {
        ApiError::new(e.code().status, e.to_string())
    }
}

/// The control-plane gate (flux7 §3.2).
/// The caller's address, as recorded for who decided or stopped something (`http:<peer>`).
fn peer(req: &HttpRequest) -> String {
    req.peer_addr()
        .map_or_else(|| "unknown".to_owned(), |a| a.to_string())
}

/// Who made a control-plane change: the name the body gives (e.g. `cli:<user>`), else
/// `http:<peer address>`.
fn author(req: &HttpRequest, given: String) -> String {
    if given.trim().is_empty() {
        format!("http:{}", peer(req))
    } else {
        given
    }
}

fn require_control_plane(state: &ApiState, req: &HttpRequest) -> Result<(), ApiError> {
    let authorization = header_str(req, header::AUTHORIZATION);
    let loopback = req.peer_addr().is_some_and(|a| a.ip().is_loopback());
    if state
        .pipeline
        .auth()
        .control_plane_allowed(authorization, loopback)
    {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "control plane requires admin authorization",
        ))
    }
}

/// A header's value as text; `name` is best a `HeaderName` constant, which is not parsed again
/// on every lookup as a `&str` is.
pub(crate) fn header_str(req: &HttpRequest, name: impl AsHeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The most entries one listing returns (`/traces`, `/sessions`, `/taint`), whatever `limit` asks.
const MAX_LIMIT: usize = 10_000;

/// Parses a positive `limit` query value, with a default and a ceiling.
fn parse_limit(raw: Option<&str>, default: usize, max: usize) -> Result<usize, ApiError> {
    match raw {
        None | Some("") => Ok(default),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n.min(max)),
            _ => Err(ApiError::bad_request(format!(
                "invalid limit \"{s}\": expected a positive integer"
            ))),
        },
    }
}

fn query_map(req: &HttpRequest) -> Result<std::collections::HashMap<String, String>, ApiError> {
    web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))
}
