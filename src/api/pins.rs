//! Catalogue pins (control plane): `GET /pins`, `POST /pins/{server}/accept`.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use mesh7_actors::pins::{Drift, Pin, PinError, Pins};
use mesh7_actors::upstream::{Upstream, UpstreamStatus};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, ApiState, author, body, json_response, require_control_plane};
use crate::error::PipelineError;

/// `POST /pins/{server}/accept`: an empty body accepts every change of the server.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AcceptBody {
    /// Only these tools (un-namespaced); every change when absent.
    #[serde(default)]
    tools: Option<Vec<String>>,
    /// Who accepts (e.g. `cli:<user>`); the peer address when absent.
    #[serde(default)]
    accepted_by: String,
}

/// `GET /pins`: each server with `pin_tools`, its pins and how its live tools differ from them.
pub(super) async fn list(
    state: web::Data<ApiState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    require_control_plane(&state, &req)?;
    let registry = state.pipeline.registry();
    let Some(pins) = registry.pins() else {
        return Ok(json_response(StatusCode::OK, &json!([])));
    };
    let servers: Vec<Value> = registry
        .upstreams()
        .iter()
        .filter(|u| pins.pins_server(u.name()))
        .map(|u| server_view(pins, u))
        .collect();
    Ok(json_response(StatusCode::OK, &json!(servers)))
}

fn server_view(pins: &Pins, upstream: &Upstream) -> Value {
    let (pinned, seen) = pins.pins(upstream.name());
    let info = upstream.info();
    // Before the first list there is nothing live to compare.
    let drift = if seen {
        pins.drift(upstream.name(), &upstream.tools())
    } else {
        Vec::new()
    };
    json!({
        "server": upstream.name(),
        "status": info.status,
        "seen": seen,
        "pinned": pinned.iter().map(Pin::view).collect::<Vec<_>>(),
        "drift": drift.iter().map(Drift::view).collect::<Vec<_>>(),
    })
}

/// `POST /pins/{server}/accept`: the server's live definitions of its changed and added tools
/// (or of those named) become their pins; pins of tools it no longer lists are dropped.
pub(super) async fn accept(
    state: web::Data<ApiState>,
    req: HttpRequest,
    server: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    require_control_plane(&state, &req)?;
    let server = server.into_inner();
    let bytes = body::read(&req, payload, state.limits).await?;
    let body: AcceptBody = body::json_or_default(&bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "invalid body: {e} (expected {{\"tools\": [names]}} or nothing)"
        ))
    })?;
    let registry = state.pipeline.registry();
    let (Some(pins), Some(upstream)) = (
        registry.pins(),
        registry.upstreams().iter().find(|u| u.name() == server),
    ) else {
        return Err(pin_error(PinError::NotPinned(server)));
    };
    if !pins.pins_server(&server) {
        return Err(pin_error(PinError::NotPinned(server)));
    }
    // Accepting what a disconnected server listed last could pin a stale list or drop pins.
    if upstream.info().status != UpstreamStatus::Ready {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("MCP server {server:?} is not connected: its current tools are unknown"),
        ));
    }
    let accepted_by = author(&req, body.accepted_by);
    let accepted = pins
        .accept(&server, upstream.tools(), body.tools, &accepted_by)
        .await
        .map_err(pin_error)?;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "server": server,
            "pinned": accepted.pinned,
            "removed": accepted.removed,
            "accepted_by": accepted_by,
        }),
    ))
}

fn pin_error(e: PinError) -> ApiError {
    match e {
        PinError::NotPinned(_) => ApiError::new(StatusCode::NOT_FOUND, e.to_string()),
        PinError::Invalid(_) => ApiError::bad_request(e.to_string()),
        PinError::Unavailable(_) => ApiError::from(PipelineError::from(e)),
    }
}
