//! Control-plane routes for approvals and grants (flux7 §3.7): `GET /approvals`,
//! `GET /approvals/{id}`, `POST /approvals/{id}/approve|deny`, `GET/POST /grants`,
//! `DELETE /grants/{id}`. These talk to the approval queue and grant manager directly; they
//! never run a tool (an approved call runs when its caller retries or is still waiting).

use std::time::SystemTime;

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use mesh7_actors::approvals::{ApprovalError, ApprovalStatus, Resolution};
use mesh7_actors::grants::{ApproveError, GrantError, GrantTerms, NewGrant, approve_with_grant};
use mesh7_actors::supervisor::{approval_view, redact};
use mesh7_actors::trace::{TraceQuery, TraceUpdate};
use mesh7_config::{ConditionConfig, Glob, duration};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    ApiError, ApiState, author, body, header_str, json_response, query_map, require_control_plane,
};
use crate::error::PipelineError;
use crate::identity::IdentityKind;

/// `GET /approvals?status=&tool=`: most recent first. `status` is any of pending, approved,
/// denied, timeout (flux7 filtered only `pending`); `tool` is a glob.
pub(super) async fn list(
    state: web::Data<ApiState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    require_control_plane(&state, &req)?;
    let q = query_map(&req)?;
    let status = match q.get("status").map(String::as_str) {
        None | Some("") => None,
        Some(s) => Some(parse_status(s)?),
    };
    let tool = q.get("tool").filter(|t| !t.is_empty()).cloned();
    let records = state
        .pipeline
        .approvals()
        .list(status, tool)
        .await
        .map_err(approval_error)?;
    let now = SystemTime::now();
    let views: Vec<Value> = records
        .iter()
        .map(|r| approval_view(r, now, state.expose_content, state.secrets.as_deref()))
        .collect();
    Ok(json_response(StatusCode::OK, &Value::Array(views)))
}

/// `GET /approvals/{id}`: the view plus the agent's recent traces and the grants that cover it.
pub(super) async fn detail(
    state: web::Data<ApiState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    require_control_plane(&state, &req)?;
    let p = &state.pipeline;
    let record = p.approvals().get(&id).await.map_err(approval_error)?;
    let now = SystemTime::now();
    let mut view = approval_view(&record, now, state.expose_content, state.secrets.as_deref());
    let traces = p
        .trace()
        .query(TraceQuery {
            agent: Some(record.agent_id.clone()),
            limit: 10,
            ..TraceQuery::default()
        })
        .await
        .map_err(PipelineError::from)?;
    if !traces.is_empty() {
        let mut traces = json!(traces);
        // The agent's recent calls are part of what the supervisor is shown: redacted alike.
        if !state.expose_content
            && let Some(list) = traces.as_array_mut()
        {
            for t in list {
                t["params"] = redact(&t["params"]);
            }
        }
        view["recent_traces"] = traces;
    }
    let grants: Vec<Value> = p
        .grants()
        .list()
        .await
        .map_err(grant_error)?
        .iter()
        .filter(|g| Glob::new(&g.agent).matches(&record.agent_id))
        .map(|g| g.view(now))
        .collect();
    if !grants.is_empty() {
        view["active_grants"] = Value::Array(grants);
    }
    Ok(json_response(StatusCode::OK, &view))
}

#[derive(Debug, Default, Deserialize)]
struct ResolveBody {
    #[serde(default)]
    resolved_by: String,
    #[serde(default)]
    reasoning: String,
    #[serde(default)]
    confidence: f64,
    /// mesh7: approve and mint a grant for the approval's agent with the same decision.
    #[serde(default)]
    grant: Option<Value>,
}

/// `{"duration", "tools"?, "condition"?, "max_calls"?}` of an approval's grant.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantTermsBody {
    #[serde(default)]
    duration: String,
    #[serde(default)]
    tools: Option<String>,
    #[serde(default)]
    condition: Option<ConditionConfig>,
    #[serde(default)]
    max_calls: Option<u64>,
}

pub(super) async fn approve(
    state: web::Data<ApiState>,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    resolve(state, req, id.into_inner(), payload, true).await
}

pub(super) async fn deny(
    state: web::Data<ApiState>,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    resolve(state, req, id.into_inner(), payload, false).await
}

/// `POST /approvals/{id}/approve|deny` with an optional `{"resolved_by","reasoning","confidence"}`.
async fn resolve(
    state: web::Data<ApiState>,
    req: HttpRequest,
    id: String,
    payload: web::Payload,
    approve: bool,
) -> Result<HttpResponse, ApiError> {
    require_control_plane(&state, &req)?;
    let bytes = body::read(&req, payload, state.limits).await?;
    let body: ResolveBody =
        body::json_or_default(&bytes).map_err(|_| ApiError::bad_request("invalid JSON body"))?;
    if !(0.0..=1.0).contains(&body.confidence) {
        return Err(ApiError::bad_request("confidence must be between 0 and 1"));
    }
    let terms = match body.grant {
        Some(_) if !approve => {
            return Err(ApiError::bad_request(
                "a grant goes with an approval, not with a denial",
            ));
        }
        Some(terms) => Some(grant_terms(terms)?),
        None => None,
    };
    let resolved_by = author(&req, body.resolved_by);
    let p = &state.pipeline;
    let resolution = Resolution {
        approve,
        resolved_by: resolved_by.clone(),
        reasoning: body.reasoning.clone(),
        confidence: body.confidence,
        resolver_agent: resolver_agent(&state, &req),
    };
    let (record, grant) = match terms {
        Some(terms) => {
            let (record, grant) =
                approve_with_grant(p.approvals(), p.grants(), &id, resolution, terms)
                    .await
                    .map_err(|e| match e {
                        ApproveError::Approval(e) => approval_error(e),
                        ApproveError::Grant(e) => grant_error(e),
                    })?;
            (record, Some(grant))
        }
        None => {
            let record = p
                .approvals()
                .resolve(&id, resolution)
                .await
                .map_err(approval_error)?;
            (record, None)
        }
    };
    // The pending call's trace learns the outcome (the JSONL gets the updated entry too).
    let update = TraceUpdate {
        approval_status: Some(record.status.as_str().to_owned()),
        approved_by: Some(resolved_by),
        supervisor_reasoning: Some(body.reasoning),
        supervisor_confidence: Some(body.confidence),
        ..TraceUpdate::default()
    };
    if let Err(e) = p.trace().update(&record.trace_id, update).await {
        tracing::warn!(error = %e, "could not update the trace of approval {}", record.id);
    }
    let status = if approve { "approved" } else { "denied" };
    let mut answer = json!({ "status": status, "id": id });
    if let Some(grant) = grant {
        answer["grant"] = grant.view(SystemTime::now());
    }
    Ok(json_response(StatusCode::OK, &answer))
}

/// `GET /grants`: active grants, in creation order.
pub(super) async fn grants(
    state: web::Data<ApiState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    require_control_plane(&state, &req)?;
    let now = SystemTime::now();
    let views: Vec<Value> = state
        .pipeline
        .grants()
        .list()
        .await
        .map_err(grant_error)?
        .iter()
        .map(|g| g.view(now))
        .collect();
    Ok(json_response(StatusCode::OK, &Value::Array(views)))
}

#[derive(Debug, Deserialize)]
struct GrantBody {
    #[serde(default)]
    agent: String,
    #[serde(default)]
    tools: String,
    #[serde(default)]
    duration: String,
    #[serde(default)]
    condition: Option<ConditionConfig>,
    #[serde(default)]
    max_calls: Option<u64>,
    #[serde(default)]
    parent: Option<String>,
    /// mesh7: who grants (e.g. `cli:<user>`); the peer address when absent.
    #[serde(default)]
    granted_by: String,
}

/// `POST /grants` `{"agent","tools","duration"}` (+ mesh7's optional `condition`, `max_calls`),
/// or mesh7's delegation `{"parent","agent"}` (+ optional `tools`, `duration`, `condition`,
/// `max_calls`): an attenuated copy of the parent grant for one agent.
pub(super) async fn create_grant(
    state: web::Data<ApiState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    require_control_plane(&state, &req)?;
    let bytes = body::read(&req, payload, state.limits).await?;
    let body: GrantBody =
        serde_json::from_slice(&bytes).map_err(|_| ApiError::bad_request("invalid JSON body"))?;
    let delegating = body.parent.is_some();
    if delegating && body.agent.is_empty() {
        return Err(ApiError::bad_request("agent is required"));
    }
    if !delegating && (body.agent.is_empty() || body.tools.is_empty() || body.duration.is_empty()) {
        return Err(ApiError::bad_request(
            "agent, tools, and duration are required",
        ));
    }
    let duration = match body.duration.as_str() {
        "" => None,
        text => Some(
            duration::parse(text)
                .map_err(|e| ApiError::bad_request(format!("invalid duration: {e}")))?,
        ),
    };
    let grant = state
        .pipeline
        .grants()
        .create(NewGrant {
            agent: body.agent,
            tools: body.tools,
            duration,
            granted_by: author(&req, body.granted_by),
            condition: body.condition,
            max_calls: body.max_calls,
            creator_agent: resolver_agent(&state, &req),
            parent: body.parent,
        })
        .await
        .map_err(|e| match e {
            GrantError::NotFound => ApiError::new(StatusCode::NOT_FOUND, "parent grant not found"),
            e => grant_error(e),
        })?;
    Ok(json_response(
        StatusCode::CREATED,
        &grant.view(SystemTime::now()),
    ))
}

/// `DELETE /grants/{id}`: exact id or a unique prefix of at least 4 characters.
pub(super) async fn revoke_grant(
    state: web::Data<ApiState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    require_control_plane(&state, &req)?;
    let id = id.into_inner();
    let revoked = state
        .pipeline
        .grants()
        .revoke(&id)
        .await
        .map_err(grant_error)?;
    let mut answer = json!({ "status": "revoked", "id": id });
    if !revoked.descendants.is_empty() {
        answer["revoked_with"] = json!(revoked.descendants);
    }
    Ok(json_response(StatusCode::OK, &answer))
}

/// An approval's grant terms, checked as `POST /grants` checks its own.
fn grant_terms(body: Value) -> Result<GrantTerms, ApiError> {
    let body: GrantTermsBody = serde_json::from_value(body)
        .map_err(|e| ApiError::bad_request(format!("invalid grant: {e}")))?;
    if body.duration.is_empty() {
        return Err(ApiError::bad_request("grant.duration is required"));
    }
    let duration = duration::parse(&body.duration)
        .map_err(|e| ApiError::bad_request(format!("invalid duration: {e}")))?;
    if body.tools.as_deref() == Some("") {
        return Err(ApiError::bad_request("grant.tools must not be empty"));
    }
    Ok(GrantTerms {
        duration,
        tools: body.tools,
        condition: body.condition,
        max_calls: body.max_calls,
    })
}

fn parse_status(s: &str) -> Result<ApprovalStatus, ApiError> {
    match s {
        "pending" => Ok(ApprovalStatus::Pending),
        "approved" => Ok(ApprovalStatus::Approved),
        "denied" => Ok(ApprovalStatus::Denied),
        "timeout" => Ok(ApprovalStatus::Timeout),
        other => Err(ApiError::bad_request(format!(
            "invalid status \"{other}\": expected pending, approved, denied or timeout"
        ))),
    }
}

/// The agent behind a control-plane request, when it names one: an agent may not resolve or
/// grant its own pending call. The operator (admin token) and anonymous loopback callers are
/// people, not agents.
fn resolver_agent(state: &ApiState, req: &HttpRequest) -> Option<String> {
    let id = state
        .pipeline
        .auth()
        .identify(header_str(req, header::AUTHORIZATION));
    match id.kind {
        IdentityKind::Declared | IdentityKind::Token => Some(id.agent),
        IdentityKind::Operator | IdentityKind::Anonymous => None,
    }
}

fn approval_error(e: ApprovalError) -> ApiError {
    match e {
        ApprovalError::NotFound => ApiError::new(StatusCode::NOT_FOUND, "approval not found"),
        ApprovalError::AlreadyResolved => {
            ApiError::new(StatusCode::CONFLICT, "approval already resolved")
        }
        ApprovalError::SelfResolution => ApiError::new(StatusCode::FORBIDDEN, e.to_string()),
        ApprovalError::Unavailable(_) | ApprovalError::Store(_) => {
            ApiError::from(PipelineError::from(e))
        }
    }
}

fn grant_error(e: GrantError) -> ApiError {
    match e {
        GrantError::NotFound => ApiError::new(StatusCode::NOT_FOUND, "grant not found"),
        GrantError::Ambiguous => ApiError::new(
            StatusCode::CONFLICT,
            "grant id prefix matches more than one grant",
        ),
        GrantError::InvalidDuration(_)
        | GrantError::TooLong { .. }
        | GrantError::InvalidCondition(_)
        | GrantError::NoCalls
        | GrantError::TooLarge(_)
        | GrantError::DelegateToPattern(_)
        | GrantError::TooDeep
        | GrantError::OutlivesParent { .. }
        | GrantError::ExceedsParentCalls { .. } => ApiError::bad_request(e.to_string()),
        GrantError::SelfGrant | GrantError::NotHolder { .. } => {
            ApiError::new(StatusCode::FORBIDDEN, e.to_string())
        }
        GrantError::Unavailable(_) | GrantError::Store(_) => ApiError::from(PipelineError::from(e)),
    }
}
