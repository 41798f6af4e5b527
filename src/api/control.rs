//! Open and control-plane routes: `/health`, `/version`, `/policies`, `/traces`,
//! `/otel-traces`, `/sessions`, `/sessions/{id}`, `/metrics`.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use mesh7_actors::trace::TraceQuery;
use mesh7_actors::upstream::UpstreamStatus;
use serde_json::json;

use super::{
    ApiError, ApiState, MAX_LIMIT, json_response, parse_limit, query_map, require_control_plane,
};
use crate::error::PipelineError;
use crate::metrics::Scrape;
use crate::telemetry;

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
    let entries = query_traces(&state, trace_query(&req, 100, true)?).await?;
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
    let query = TraceQuery {
        session: Some(id),
        agent: None,
        tool: None,
        ..trace_query(&req, 200, false)?
    };
    let entries = query_traces(&state, query).await?;
    Ok(json_response(StatusCode::OK, &json!(entries)))
}

/// `GET /otel-traces?agent=&tool=&limit=` (limit default 200): the trace ring as one OTLP/JSON
/// export object, most recent first.
pub(super) async fn otel_traces(
    state: web::Data<ApiState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    require_control_plane(&state, &req)?;
    let query = trace_query(&req, 200, false)?;
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

/// For each `pin_tools` server whose catalogue was seen: how many of its live tools are refused
/// until an operator accepts them (changed since pinned, or new).
fn unaccepted_tools(registry: &crate::registry::Registry) -> Vec<(String, u64)> {
    let Some(pins) = registry.pins() else {
        return Vec::new();
    };
    registry
        .upstreams()
        .iter()
        .filter(|u| pins.pins_server(u.name()) && pins.pins(u.name()).1)
        .map(|u| {
            let refused = pins
                .drift(u.name(), &u.tools())
                .iter()
                .filter(|d| d.change != "removed")
                .count();
            (u.name().to_owned(), refused as u64)
        })
        .collect()
}

/// `GET /metrics`: counters kept by the pipeline, and what the other subsystems say now.
pub(super) async fn metrics(
    state: web::Data<ApiState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    require_control_plane(&state, &req)?;
    let p = &state.pipeline;
    let (reloads_ok, reloads_failed) = p.policy().reload_counts();
    let (pending, active, write_errors, taint) = tokio::join!(
        p.approvals().pending_count(),
        p.grants().active_count(),
        p.trace().write_errors(),
        p.taint().stats(),
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
        unaccepted: unaccepted_tools(p.registry()),
        trace_write_errors: write_errors,
        tainted_sessions: taint.sessions as u64,
        taint_sessions_forgotten: taint.forgotten,
    };
    Ok(HttpResponse::Ok()
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        ))
        .body(p.metrics().render(&scrape)))
}

/// The `agent`, `tool`, (`session`) and `limit` filters of a trace listing.
fn trace_query(
    req: &HttpRequest,
    default_limit: usize,
    with_session: bool,
) -> Result<TraceQuery, ApiError> {
    let mut q = query_map(req)?;
    let mut take = |key: &str| q.remove(key).filter(|s| !s.is_empty());
    Ok(TraceQuery {
        agent: take("agent"),
        tool: take("tool"),
        session: if with_session { take("session") } else { None },
        limit: parse_limit(take("limit").as_deref(), default_limit, MAX_LIMIT)?,
    })
}

async fn query_traces(
    state: &ApiState,
    query: TraceQuery,
) -> Result<Vec<mesh7_actors::trace::TraceEntry>, ApiError> {
    Ok(state
        .pipeline
        .trace()
        .query(query)
        .await
        .map_err(PipelineError::from)?)
}
