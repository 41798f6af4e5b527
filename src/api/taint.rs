//! Session labels (control plane): `GET /taint`, `DELETE /taint?agent=…&session=…`.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use mesh7_actors::taint::TaintedSession;
use serde_json::json;

use super::{
    ApiError, ApiState, MAX_LIMIT, json_response, parse_limit, query_map, require_control_plane,
};
use crate::error::PipelineError;

/// `GET /taint[?agent=…][&limit=…]`: the labelled sessions, the most recently used first
/// (100 unless `limit` says otherwise).
pub(super) async fn list(
    state: web::Data<ApiState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    require_control_plane(&state, &req)?;
    let q = query_map(&req)?;
    let limit = parse_limit(q.get("limit").map(String::as_str), 100, MAX_LIMIT)?;
    let sessions = state
        .pipeline
        .taint()
        .list(q.get("agent").map(String::as_str), limit)
        .await
        .map_err(PipelineError::from)?;
    let views: Vec<_> = sessions.iter().map(TaintedSession::view).collect();
    Ok(json_response(StatusCode::OK, &json!(views)))
}

/// `DELETE /taint?agent=…&session=…`: removes every label of the session (`session=` for the
/// calls the agent made without one), once an operator has checked it.
pub(super) async fn clear(
    state: web::Data<ApiState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    require_control_plane(&state, &req)?;
    let q = query_map(&req)?;
    let (Some(agent), Some(session)) = (q.get("agent"), q.get("session")) else {
        return Err(ApiError::bad_request(
            "agent and session are required (session= for the calls made without a session)",
        ));
    };
    if agent.is_empty() {
        return Err(ApiError::bad_request("agent must not be empty"));
    }
    let cleared = state
        .pipeline
        .taint()
        .clear(agent, session)
        .await
        .map_err(PipelineError::from)?;
    match cleared {
        Some(session) => Ok(json_response(
            StatusCode::OK,
            &json!({ "cleared": session.view() }),
        )),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "the session has no labels",
        )),
    }
}
