//! Data-plane routes: `POST /tool/{name}`, `POST /decide`, `GET /tools`, `GET /mcp-servers`.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::{ApiError, ApiState, body, header_str, json_response};
use crate::error::PipelineError;
use crate::pipeline::{Governed, Ingress, Mode, RequestContext, ToolCall, Verdict};

/// `POST /tool/{name}`: body `{"params": {...}}`, or the bare arguments object.
pub(super) async fn call_tool(
    state: web::Data<ApiState>,
    req: HttpRequest,
    name: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let bytes = body::read(&req, payload, state.limits).await?;
    let Some(args) = parse_tool_body(&bytes) else {
        return Ok(tool_error(StatusCode::BAD_REQUEST, "", "invalid JSON body"));
    };
    let ctx = request_context(&req, Ingress::Http, None);
    let call = ToolCall {
        tool: name.into_inner(),
        args,
    };
    match state.pipeline.handle(ctx, call, Mode::Execute).await {
        Ok(governed) => Ok(tool_response(&governed)),
        Err(e) => Ok(pipeline_error(&e)),
    }
}

/// `POST /decide`: `{"agent"?, "tool", "arguments"?}` → the decision, nothing executed.
pub(super) async fn decide(
    state: web::Data<ApiState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let bytes = body::read(&req, payload, state.limits).await?;
    let Ok(Value::Object(mut body)) = serde_json::from_slice::<Value>(&bytes) else {
        return Err(ApiError::bad_request("invalid JSON body"));
    };
    let tool = match body.remove("tool") {
        Some(Value::String(t)) if !t.is_empty() => t,
        _ => return Err(ApiError::bad_request("tool field required")),
    };
    let agent = match body.remove("agent") {
        None | Some(Value::Null) => None,
        Some(Value::String(a)) => Some(a),
        Some(_) => return Err(ApiError::bad_request("agent must be a string")),
    };
    let args = match body.remove("arguments") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(v @ Value::Object(_)) => v,
        Some(_) => return Err(ApiError::bad_request("arguments must be an object")),
    };
    let ctx = request_context(&req, Ingress::Decide, agent);
    let g = state
        .pipeline
        .handle(ctx, ToolCall { tool, args }, Mode::DecideOnly)
        .await?;
    let (status, action, rule, reason) = match &g.verdict {
        Verdict::RateLimited { message, .. } => (
            StatusCode::TOO_MANY_REQUESTS,
            "deny",
            "rate_limited",
            message.as_str(),
        ),
        Verdict::Denied => (
            StatusCode::FORBIDDEN,
            "deny",
            g.rule.as_str(),
            g.reason.as_str(),
        ),
        // A grant turns human_approval into allow (rule `grant:<id>`).
        Verdict::Allowed { .. } | Verdict::Failed { .. } => {
            (StatusCode::OK, "allow", g.rule.as_str(), g.reason.as_str())
        }
        Verdict::ApprovalRequired
        | Verdict::ApprovalPending
        | Verdict::ApprovalDenied
        | Verdict::ApprovalTimedOut
        | Verdict::ApprovalUnavailable { .. } => (
            StatusCode::OK,
            "human_approval",
            g.rule.as_str(),
            g.reason.as_str(),
        ),
    };
    Ok(json_response(
        status,
        &DecideResponse {
            action,
            agent: &g.agent,
            reason,
            rule,
            shadow_policy: g.shadow.as_ref().map(|s| s.action.as_str()),
            shadow_rule: g.shadow.as_ref().map(|s| s.rule.as_str()),
            tool: &g.tool,
            trace_id: &g.trace_id,
        },
    ))
}

/// The answer of `/decide`; flux7 prints these keys in alphabetical order. Serialized from
/// borrows, nothing copied. `shadow_*`: what the policies would decide with the `advisory`
/// ones enforced, only when that differs (as in the trace).
#[derive(Serialize)]
struct DecideResponse<'a> {
    action: &'a str,
    agent: &'a str,
    reason: &'a str,
    rule: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    shadow_policy: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shadow_rule: Option<&'a str>,
    tool: &'a str,
    trace_id: &'a str,
}

/// `GET /tools`.
pub(super) async fn list_tools(
    state: web::Data<ApiState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    require_data_plane(&state, &req)?;
    let registry = state.pipeline.registry();
    let identity = state
        .pipeline
        .auth()
        .identify(header_str(&req, header::AUTHORIZATION));
    let policies = state.pipeline.policy().current();
    let shown = |tool: &Value| {
        let field = |key: &str| tool[key].as_str().unwrap_or_default();
        identity.is_operator()
            || registry.shows(&policies, &identity.agent, field("name"), field("source"))
    };
    let tools = registry.describe().into_iter().filter(shown).collect();
    Ok(json_response(StatusCode::OK, &Value::Array(tools)))
}

/// `GET /mcp-servers`: upstream MCP servers and their status (and, for a `pin_tools` server,
/// the tools pinning refuses).
pub(super) async fn mcp_servers(
    state: web::Data<ApiState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    require_data_plane(&state, &req)?;
    let registry = state.pipeline.registry();
    let pins = registry.pins();
    let servers: Vec<Value> = registry
        .upstreams()
        .iter()
        .map(|u| {
            let mut view = json!(u.info());
            // mesh7: what a `pin_tools` server lists but calls refuse until an operator accepts.
            if let Some(pins) = pins.filter(|p| p.pins_server(u.name())) {
                let tools = u.tools();
                let refused: Vec<&str> = tools
                    .iter()
                    .filter(|t| pins.check(u.name(), t).is_some())
                    .map(|t| t.name.as_str())
                    .collect();
                view["refused"] = json!(refused);
            }
            view
        })
        .collect();
    Ok(json_response(StatusCode::OK, &Value::Array(servers)))
}

/// `require_authentication` on the read-only data-plane routes.
fn require_data_plane(state: &ApiState, req: &HttpRequest) -> Result<(), ApiError> {
    let auth = state.pipeline.auth();
    if auth.requires_authentication()
        && auth
            .identify(header_str(req, header::AUTHORIZATION))
            .is_anonymous()
    {
        return Err(PipelineError::AuthenticationRequired.into());
    }
    Ok(())
}

/// The arguments of a `/tool` body: `params` when it is an object, else the whole object
/// (what the flux7 Python SDK sends). An empty body means no arguments. `None` = not JSON.
fn parse_tool_body(bytes: &[u8]) -> Option<Value> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Some(Value::Object(Map::new()));
    }
    match serde_json::from_slice::<Value>(bytes).ok()? {
        Value::Object(mut obj) => match obj.remove("params") {
            Some(p @ Value::Object(_)) => Some(p),
            Some(Value::Null) => Some(Value::Object(Map::new())),
            Some(other) => {
                obj.insert("params".to_owned(), other);
                Some(Value::Object(obj))
            }
            None => Some(Value::Object(obj)),
        },
        _ => None,
    }
}

const X_SESSION_ID: HeaderName = HeaderName::from_static("x-session-id");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const PREFER: HeaderName = HeaderName::from_static("prefer");
const X_CALLBACK_URL: HeaderName = HeaderName::from_static("x-callback-url");
const X_TRACE_ID: HeaderName = HeaderName::from_static("x-trace-id");

fn request_context(
    req: &HttpRequest,
    ingress: Ingress,
    on_behalf_of: Option<String>,
) -> RequestContext {
    RequestContext {
        ingress,
        authorization: header_str(req, header::AUTHORIZATION).map(str::to_owned),
        on_behalf_of,
        session_id: header_str(req, X_SESSION_ID).unwrap_or("").to_owned(),
        trace_id: incoming_trace_id(req),
        parent_span_id: header_str(req, TRACEPARENT).and_then(crate::telemetry::parent_span_id),
        prefer_async: header_str(req, PREFER).is_some_and(|p| {
            p.split(',')
                .any(|v| v.trim().eq_ignore_ascii_case("respond-async"))
        }),
        callback_url: header_str(req, X_CALLBACK_URL)
            .filter(|u| !u.is_empty())
            .map(str::to_owned),
        // An HTTP call is only ever stopped by its client going away.
        ..RequestContext::default()
    }
}

/// `Traceparent` (its 32-hex trace id) wins over `X-Trace-Id` (32 hex).
fn incoming_trace_id(req: &HttpRequest) -> Option<String> {
    let is_trace_id = |s: &str| {
        s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()) && s.bytes().any(|b| b != b'0')
    };
    if let Some(tp) = header_str(req, TRACEPARENT)
        && let Some(id) = tp.split('-').nth(1)
        && is_trace_id(id)
    {
        return Some(id.to_ascii_lowercase());
    }
    header_str(req, X_TRACE_ID)
        .filter(|id| is_trace_id(id))
        .map(str::to_ascii_lowercase)
}

/// flux7's ToolCallResponse, in its key order.
#[derive(Serialize)]
struct ToolCallResponse<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a Value>,
    /// mesh7: an HTTP backend's status beside its body (flux7 answered 200 and dropped it).
    #[serde(skip_serializing_if = "Option::is_none")]
    backend_status: Option<u16>,
    trace_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    approval_id: Option<&'a str>,
    policy: &'a str,
    latency_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// flux7's ToolCallResponse for a governed call.
fn tool_response(g: &Governed) -> HttpResponse {
    let (status, result, error) = match &g.verdict {
        Verdict::Allowed { result } => (StatusCode::OK, result.as_ref(), None),
        Verdict::Failed { error } => (error.code().status, None, Some(error.to_string())),
        Verdict::Denied => (StatusCode::FORBIDDEN, None, Some(g.reason.clone())),
        // Queued and answered at once (`Prefer: respond-async`): what the Python SDK expects.
        Verdict::ApprovalPending => (StatusCode::ACCEPTED, None, None),
        Verdict::ApprovalDenied => (
            StatusCode::FORBIDDEN,
            None,
            Some(format!(
                "approval denied by {}",
                g.approval.as_ref().map_or("", |a| a.resolved_by.as_str())
            )),
        ),
        Verdict::ApprovalTimedOut => (
            StatusCode::REQUEST_TIMEOUT,
            None,
            Some("approval timed out".to_owned()),
        ),
        Verdict::ApprovalUnavailable { message } => {
            (StatusCode::FORBIDDEN, None, Some(message.clone()))
        }
        Verdict::ApprovalRequired => (
            StatusCode::FORBIDDEN,
            None,
            Some("This action requires human approval.".to_owned()),
        ),
        Verdict::RateLimited { message, .. } => {
            (StatusCode::TOO_MANY_REQUESTS, None, Some(message.clone()))
        }
    };
    // Serialized from borrows: the tool's result is written out, never copied.
    let body = ToolCallResponse {
        result,
        backend_status: g.backend_status,
        trace_id: &g.trace_id,
        approval_id: g.approval.as_ref().map(|a| a.id.as_str()),
        policy: g.policy_label(),
        latency_ms: g.latency_ms,
        error,
    };
    let mut resp = json_response(status, &body);
    if let Ok(v) = HeaderValue::from_str(&g.trace_id) {
        resp.headers_mut()
            .insert(header::HeaderName::from_static("x-trace-id"), v);
    }
    resp
}

/// A call that never reached a verdict.
fn pipeline_error(e: &PipelineError) -> HttpResponse {
    match e {
        PipelineError::UnknownTool(_) | PipelineError::InvalidRequest(_) => {
            tool_error(e.code().status, "", &e.to_string())
        }
        other => actix_web::ResponseError::error_response(&ApiError::from(other.clone())),
    }
}

fn tool_error(status: StatusCode, trace_id: &str, error: &str) -> HttpResponse {
    json_response(
        status,
        &json!({ "trace_id": trace_id, "policy": "error", "latency_ms": 0, "error": error }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_body_accepts_wrapped_and_bare_arguments() {
        let table: [(&str, Option<Value>); 7] = [
            (r#"{"params":{"a":1}}"#, Some(json!({"a":1}))),
            (r#"{"a":1}"#, Some(json!({"a":1}))),
            (r#"{"params":"x","b":2}"#, Some(json!({"params":"x","b":2}))),
            (r#"{"params":null}"#, Some(json!({}))),
            ("", Some(json!({}))),
            ("[1,2]", None),
            ("{not json", None),
        ];
        for (input, expected) in table {
            assert_eq!(parse_tool_body(input.as_bytes()), expected, "{input}");
        }
    }
}
