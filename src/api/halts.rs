//! Emergency stops (control plane): `GET /halts`, `POST /halts`, `DELETE /halts/{id}`.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use mesh7_actors::halts::{Halt, HaltError, NewHalt, Scope};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, ApiState, author, body, json_response, require_control_plane};
use crate::error::PipelineError;

/// `POST /halts`: exactly one of `agent`, `session` or `"all": true`; optional `reason` and
/// `created_by`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HaltBody {
    #[serde(default)]
    agent: Option<String>,
    #[serde(default)]
    session: Option<String>,
    #[serde(default)]
    all: bool,
    #[serde(default)]
    reason: String,
    /// Who asks (e.g. `cli:<user>`); the peer address when absent.
    #[serde(default)]
    created_by: String,
}

/// `GET /halts`: the halts in effect, oldest first.
pub(super) async fn list(
    state: web::Data<ApiState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    require_control_plane(&state, &req)?;
    Ok(json_response(
        StatusCode::OK,
        &json!(
            state
                .pipeline
                .halts()
                .list()
                .iter()
                .map(Halt::view)
                .collect::<Vec<_>>()
        ),
    ))
}

/// `POST /halts`: stops every later call of the agent, of the session, or of everyone.
pub(super) async fn create(
    state: web::Data<ApiState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    require_control_plane(&state, &req)?;
    let bytes = body::read(&req, payload, state.limits).await?;
    let body: HaltBody = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "invalid body: {e} (expected one of agent, session or \"all\": true, and a reason)"
        ))
    })?;
    let scope = Scope::from_parts(body.agent, body.session, body.all).map_err(halt_error)?;
    let created_by = author(&req, body.created_by);
    let halt = state
        .pipeline
        .halts()
        .add(NewHalt {
            scope,
            reason: body.reason,
            created_by,
        })
        .await
        .map_err(halt_error)?;
    Ok(json_response(StatusCode::CREATED, &halt.view()))
}

/// `DELETE /halts/{id}`: lifts the halt (its exact id).
pub(super) async fn lift(
    state: web::Data<ApiState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    require_control_plane(&state, &req)?;
    let halt = state
        .pipeline
        .halts()
        .lift(&id.into_inner())
        .await
        .map_err(halt_error)?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "lifted": halt.view() }),
    ))
}

fn halt_error(e: HaltError) -> ApiError {
    match e {
        HaltError::NotFound => ApiError::new(StatusCode::NOT_FOUND, "halt not found"),
        HaltError::Invalid(_) => ApiError::bad_request(e.to_string()),
        HaltError::Unavailable(_) => ApiError::from(PipelineError::from(e)),
    }
}
