//! Open and control-plane routes: `/health`, `/version`, `/policies`, `/traces`,
//! `/otel-traces`, `/sessions`, `/sessions/{id}`, `/metrics`.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use mesh7_actors::trace::TraceQuery;
use mesh7_actors::upstream::UpstreamStatus;
use serde_json::json;

use super::{ApiError, ApiState, json_response, parse_limit, query_map, require_control_plane};
use crate::error::PipelineError;
use crate::metrics::Scrape;
use crate::telemetry;

/// The most entries one query returns, whatever `limit` asks.
const MAX_LIMIT: usize = 10_000;

pub(super) async fn health(state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    let p = &state.pipeline;
    let stats = p.trace().stats().await.map_err(PipelineError::from)?;
    let mut body = json!({
        "status": "ok",
        "tools": p.registry().len(),
        "traces": stats,
        "version": state.version.version,
    });
    if let Some(reload) = p.policy().last_reload() {
        body["last_reload"] = json!(reload);
    }
    Ok(json_response(StatusCode::OK, &body))
}

pub(super) async fn version(state: web::Data<ApiState>) -> HttpResponse {
    let v = state.version;
    json_response(
        StatusCode::OK,
        &json!({ "version": v.version, "commit": v.commit, "date": v.date }),
    )
}

pub(super) async fn policies(
    state: web::Data<ApiState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    require_control_plane(&state, &req)?;
    let set = state.pipeline.policy().current();
    Ok(json_response(StatusCode::OK, &json!(set.policies())))
}

/// `GET /traces?agent=&tool=&session=&limit=` (limit default 100).
pub(super) async fn traces(
    state: web::Data<ApiState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    require_control_plane(&state, &req)?;
    let mut q = query_map(&req)?;
    let query = TraceQuery {
        agent: q.remove("agent").filter(|s| !s.is_empty()),
        tool: q.remove("tool").filter(|s| !s.is_empty()),
        session: q.remove("session").filter(|s| !s.is_empty()),
        limit: parse_limit(q.get("limit").map(String::as_str), 100, MAX_LIMIT)?,
    };
    let entries = state
        .pipeline
        .trace()
        .query(query)
        .await
        .map_err(PipelineError::from)?;
    Ok(json_response(StatusCode::OK, &json!(entries)))
}

/// `GET /sessions?limit=` (default 50).
pub(super) async fn sessions(
    state: web::Data<ApiState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    require_control_plane(&state, &req)?;
    let q = query_map(&req)?;
    let limit = parse_limit(q.get("limit").map(String::as_str), 50, MAX_LIMIT)?;
    let sessions = state
        .pipeline
        .trace()
        .sessions(limit)
        .await
        .map_err(PipelineError::from)?;
    Ok(json_response(StatusCode::OK, &json!(sessions)))
}

/// `GET /sessions/{id}?limit=` (default 200): that session's entries, most recent first.
pub(super) async fn session(
    state: web::Data<ApiState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    require_control_plane(&state, &req)?;
    let id = id.into_inner();
    if id.is_empty() {
        return Err(ApiError::bad_request("session id required"));
    }
    let q = query_map(&req)?;
    let query = TraceQuery {
        session: Some(id),
        limit: parse_limit(q.get("limit").map(String::as_str), 200, MAX_LIMIT)?,
        ..TraceQuery::default()
    };
    let entries = state
        .pipeline
        .trace()
        .query(query)
        .await
        .map_err(PipelineError::from)?;
    Ok(json_response(StatusCode::OK, &json!(entries)))
}

/// `GET /otel-traces?agent=&tool=&limit=` (limit default 200): the trace ring as one OTLP/JSON
/// export object, most recent first.
pub(super) async fn otel_traces(
    state: web::Data<ApiState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    require_control_plane(&state, &req)?;
    let mut q = query_map(&req)?;
    let query = TraceQuery {
        agent: q.remove("agent").filter(|s| !s.is_empty()),
        tool: q.remove("tool").filter(|s| !s.is_empty()),
        session: None,
        limit: parse_limit(q.get("limit").map(String::as_str), 200, MAX_LIMIT)?,
    };
    let entries = state
        .pipeline
        .trace()
        .query(query)
        .await
        .map_err(PipelineError::from)?;
    Ok(json_response(
        StatusCode::OK,
        &telemetry::otlp_json(&entries),
    ))
}

/// `GET /metrics`: counters kept by the pipeline, and what the other subsystems say now.
pub(super) async fn metrics(
    state: web::Data<ApiState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    require_control_plane(&state, &req)?;
    let p = &state.pipeline;
    let (reloads_ok, reloads_failed) = p.policy().reload_counts();
    let (pending, active, write_errors) = tokio::join!(
        p.approvals().pending_count(),
        p.grants().active_count(),
        p.trace().write_errors(),
    );
    let scrape = Scrape {
        tools: p.registry().len() as u64,
        policy_rules: p.policy().current().rule_count() as u64,
        policy_last_reload_ok: p.policy().last_reload().map_or(1, |r| u64::from(r.ok)),
        policy_reloads_ok: reloads_ok,
        policy_reloads_failed: reloads_failed,
        pending_approvals: pending as u64,
        active_grants: active as u64,
        upstreams: p
            .registry()
            .upstreams()
            .iter()
            .map(|u| {
                let info = u.info();
                (info.name, info.status == UpstreamStatus::Ready)
            })
            .collect(),
        trace_write_errors: write_errors,
    };
    Ok(HttpResponse::Ok()
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        ))
        .body(p.metrics().render(&scrape)))
}
