//! The MCP methods, shared by both transports: `initialize`, `ping`, `tools/list`, `tools/call`.
//!
//! Every `tools/call` of a registry tool goes through `Pipeline::handle` in `Execute` mode; only
//! the virtual tools (flux7 §4.4–4.5) are answered here, untraced, as in flux7: `mesh.catalog`
//! and `grant.list` for everyone, and for supervisors `approval.resolve`, `approval.pending`,
//! `grant.create` and `grant.revoke`. Governance outcomes are tool results with `isError: true`;
//! protocol problems are JSON-RPC errors.
//!
//! A supervisor is the operator (admin token), or an agent matching `supervisor.supervisor_agents`
//! whose id is vouched for: by an `auth.agent_tokens` token over `/mcp` (a self-declared
//! `agent:<id>` only with `auth.trust_declared_agents`), or by whoever launched `mesh7 --mcp`
//! (`--mcp-agent`) over stdio. Approving never runs the call for the resolver: the requesting
//! agent's identical call runs once (approve-then-retry, or its blocked call when
//! `supervisor.enabled`).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use mesh7_actors::approvals::{ApprovalError, ApprovalStatus, Resolution};
use mesh7_actors::grants::{
    ApproveError, Grant, GrantError, GrantTerms, NewGrant, approve_with_grant, rfc3339_secs,
};
use mesh7_actors::halts::{HaltError, NewHalt, Scope};
use mesh7_actors::trace::TraceUpdate;
use mesh7_config::duration::{self, format_secs};
use mesh7_config::{ConditionConfig, ToolHints};
use serde_json::{Map, Value, json};

use super::jsonrpc::{INTERNAL_ERROR, METHOD_NOT_FOUND, Request, RpcError};
use crate::error::{CancelNote, PipelineError};
use crate::identity::{Identity, IdentityKind};
use crate::metrics::Source;
use crate::pipeline::{Governed, Ingress, Mode, Pipeline, RequestContext, ToolCall, Verdict};

/// The `serverInfo` flux7 announces; clients and hooks may match on it.
pub const SERVER_NAME: &str = "flux7-mesh";
pub const SERVER_VERSION: &str = "0.1.0";

/// Protocol versions this server speaks, oldest first.
pub const PROTOCOL_VERSIONS: [&str; 4] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
pub const LATEST_PROTOCOL_VERSION: &str = "2025-11-25";

/// Who is on the other end of one MCP connection or session.
#[derive(Debug, Clone)]
pub struct Caller {
    pub ingress: Ingress,
    /// The credentials every call of the session is made with.
    pub authorization: Option<String>,
    /// The MCP session id, which is also the trace session id.
    pub session_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Virtual {
    ApprovalResolve,
    ApprovalPending,
    GrantList,
    GrantCreate,
    GrantDelegate,
    GrantRevoke,
    HaltCreate,
    HaltList,
    HaltLift,
    Catalog,
}

/// A tool answered by mesh7 itself rather than by a registry source.
struct VirtualTool {
    kind: Virtual,
    name: &'static str,
    description: &'static str,
    /// The shorter text `mesh.catalog` shows (flux7's wording).
    catalog_description: &'static str,
    properties: fn() -> Value,
    required: &'static [&'static str],
    /// Listed and callable by supervisors only (flux7's operator-only tools).
    supervisor_only: bool,
}

/// In flux7's `tools/list` order.
const VIRTUAL_TOOLS: &[VirtualTool] = &[
    VirtualTool {
        kind: Virtual::ApprovalResolve,
        name: "approval.resolve",
        description: "Approve or deny a pending approval request. Approving lets the requesting agent's identical call run once; it does not run the call here.",
        catalog_description: "Approve or deny a pending approval request",
        properties: || {
            json!({
                "id": {"type": "string", "description": "Approval ID (full or 8-char prefix)"},
                "decision": {"type": "string", "enum": ["approve", "deny"], "description": "Decision: approve or deny"},
                "reasoning": {"type": "string", "description": "Why (recorded with the decision)"},
                "grant": {
                    "type": "object",
                    "description": "With approve: also let the agent run this tool without asking, e.g. {\"duration\": \"30m\", \"max_calls\": 20}",
                    "properties": {
                        "duration": {"type": "string"},
                        "tools": {"type": "string", "description": "Tool glob (default: the approval's tool)"},
                        "condition": {"type": "object"},
                        "max_calls": {"type": "integer"},
                    },
                    "required": ["duration"],
                },
            })
        },
        required: &["id", "decision"],
        supervisor_only: true,
    },
    VirtualTool {
        kind: Virtual::ApprovalPending,
        name: "approval.pending",
        description: "List all pending approval requests",
        catalog_description: "List all pending approval requests",
        properties: || json!({}),
        required: &[],
        supervisor_only: true,
    },
    VirtualTool {
        kind: Virtual::GrantList,
        name: "grant.list",
        description: "List all active temporal grants",
        catalog_description: "List all active temporal grants",
        properties: || json!({}),
        required: &[],
        supervisor_only: false,
    },
    VirtualTool {
        kind: Virtual::GrantCreate,
        name: "grant.create",
        description: "Create a temporal grant — temporarily allow a tool pattern without approval. Like sudo for agents.",
        catalog_description: "Create a temporal grant",
        properties: || {
            json!({
                "agent": {"type": "string", "description": "Agent glob the grant is for (default: the calling agent)"},
                "tools": {"type": "string", "description": "Tool glob pattern (e.g. filesystem.write_*, gmail.*)"},
                "duration": {"type": "string", "description": "Duration (e.g. 30m, 2h, 1h30m)"},
                "condition": {"type": "object", "description": "Policy condition the call's arguments must meet"},
                "max_calls": {"type": "integer", "description": "Calls the grant allows before it is used up"},
            })
        },
        required: &["tools", "duration"],
        supervisor_only: true,
    },
    VirtualTool {
        kind: Virtual::GrantDelegate,
        name: "grant.delegate",
        description: "Hand part of a grant you hold to another agent (a sub-agent): the new grant is for that one agent, lasts no longer than yours, runs only what yours runs (and its own tools, condition and max_calls narrow it further), counts its calls against yours, and ends when yours ends or is revoked.",
        catalog_description: "Delegate part of a grant to another agent",
        properties: || {
            json!({
                "id": {"type": "string", "description": "The grant you hold (ID or prefix, as grant.list shows)"},
                "agent": {"type": "string", "description": "The agent id to delegate to (one agent, not a pattern)"},
                "tools": {"type": "string", "description": "Tool glob (default: the grant's)"},
                "duration": {"type": "string", "description": "Duration (default: what the grant has left)"},
                "condition": {"type": "object", "description": "Policy condition the call's arguments must meet as well"},
                "max_calls": {"type": "integer", "description": "Calls the delegated grant allows"},
            })
        },
        required: &["id", "agent"],
        supervisor_only: false,
    },
    VirtualTool {
        kind: Virtual::GrantRevoke,
        name: "grant.revoke",
        description: "Revoke an active temporal grant",
        catalog_description: "Revoke an active temporal grant",
        properties: || json!({"id": {"type": "string", "description": "Grant ID (full or prefix)"}}),
        required: &["id"],
        supervisor_only: true,
    },
    VirtualTool {
        kind: Virtual::HaltCreate,
        name: "halt.create",
        description: "Emergency stop: deny every later call of an agent, of a session, or of everyone (whatever the policy says) and stop their running calls, until the halt is lifted. Give exactly one of agent, session or all.",
        catalog_description: "Stop an agent, a session or everyone",
        properties: || {
            json!({
                "agent": {"type": "string", "description": "Agent id to stop"},
                "session": {"type": "string", "description": "Session id to stop"},
                "all": {"type": "boolean", "description": "Stop every agent"},
                "reason": {"type": "string", "description": "Why (shown to the stopped agent and in its traces)"},
            })
        },
        required: &[],
        supervisor_only: true,
    },
    VirtualTool {
        kind: Virtual::HaltList,
        name: "halt.list",
        description: "List the emergency stops in effect",
        catalog_description: "List the emergency stops in effect",
        properties: || json!({}),
        required: &[],
        supervisor_only: true,
    },
    VirtualTool {
        kind: Virtual::HaltLift,
        name: "halt.lift",
        description: "Lift an emergency stop",
        catalog_description: "Lift an emergency stop",
        properties: || json!({"id": {"type": "string", "description": "Halt ID (16 hex digits, as halt.list shows)"}}),
        required: &["id"],
        supervisor_only: true,
    },
    VirtualTool {
        kind: Virtual::Catalog,
        name: "mesh.catalog",
        description: "List all available tools grouped by source/category, with policy actions for the current agent",
        catalog_description: "This tool",
        properties: || {
            json!({
                "source": {
                    "type": "string",
                    "description": "Filter by source name (e.g. 'filesystem', 'git', 'gmail'). Omit to show all."
                }
            })
        },
        required: &[],
        supervisor_only: false,
    },
];

/// Answers MCP requests over the pipeline. Cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    pipeline: Pipeline,
}

impl Dispatcher {
    pub fn new(pipeline: Pipeline) -> Self {
        Self { pipeline }
    }

    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// Answers one request. Notifications never reach here: they are not answered. `cancel` is
    /// where the ingress notes why it stops the request, should it drop the returned future.
    pub async fn handle(
        &self,
        caller: &Caller,
        req: Request,
        cancel: CancelNote,
    ) -> Result<Value, RpcError> {
        match req.method.as_str() {
            // Both transports tell a client its tools changed (`/mcp` on its `GET` stream; its
            // `initialize` is answered there, as it opens the session).
            "initialize" => Ok(initialize_result(&req.params, true)),
            "ping" => Ok(json!({})),
            "tools/list" => Ok(self.list_tools(caller)),
            "tools/call" => self.call_tool(caller, req.params, cancel).await,
            other => Err(RpcError::new(
                METHOD_NOT_FOUND,
                format!("Method not found: {other}"),
            )),
        }
    }

    /// Every registry tool in name order with its whole schemas, then the virtual tools the
    /// caller may call.
    pub fn list_tools(&self, caller: &Caller) -> Value {
        let identity = self.identify(caller);
        let supervisor = self.is_supervisor(caller, &identity);
        let registry = self.pipeline.registry();
        let policies = self.pipeline.policy().current();
        let mut tools: Vec<Value> = registry
            .list()
            .into_iter()
            // Virtual names shadow registry tools of the same name (flux7).
            .filter(|t| virtual_tool(&t.name).is_none())
            .filter(|t| {
                identity.is_operator()
                    || registry.shows(&policies, &identity.agent, &t.name, t.source)
            })
            .map(|t| {
                let mut entry = Map::new();
                entry.insert("name".into(), json!(t.name));
                if let Some(title) = t.title {
                    entry.insert("title".into(), json!(title));
                }
                entry.insert("description".into(), json!(t.description));
                entry.insert("inputSchema".into(), t.input_schema);
                if let Some(schema) = t.output_schema {
                    entry.insert("outputSchema".into(), schema);
                }
                if let Some(annotations) = t.annotations {
                    entry.insert("annotations".into(), annotations);
                }
                Value::Object(entry)
            })
            .collect();
        tools.extend(
            VIRTUAL_TOOLS
                .iter()
                .filter(|v| supervisor || !v.supervisor_only)
                .map(|v| {
                    let mut schema = json!({ "type": "object", "properties": (v.properties)() });
                    if !v.required.is_empty() {
                        schema["required"] = json!(v.required);
                    }
                    json!({ "name": v.name, "description": v.description, "inputSchema": schema })
                }),
        );
        json!({ "tools": tools })
    }

    async fn call_tool(
        &self,
        caller: &Caller,
        mut params: Map<String, Value>,
        cancel: CancelNote,
    ) -> Result<Value, RpcError> {
        let tool = match params.remove("name") {
            Some(Value::String(name)) if !name.is_empty() => name,
            _ => return Err(RpcError::invalid_params("Missing tool name")),
        };
        let args = match params.remove("arguments") {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(v @ Value::Object(_)) => v,
            Some(_) => {
                return Err(RpcError::invalid_params(
                    "Invalid params: arguments must be an object",
                ));
            }
        };
        // Both branches boxed so that the task running this request stays small: it is copied
        // when spawned, and the pipeline's future alone is kilobytes.
        if let Some(v) = virtual_tool(&tool) {
            return Box::pin(self.call_virtual(caller, v, &args)).await;
        }
        let ctx = RequestContext {
            ingress: caller.ingress,
            authorization: caller.authorization.clone(),
            on_behalf_of: None,
            session_id: caller.session_id.clone(),
            trace_id: meta_trace_id(&params),
            parent_span_id: params
                .get("_meta")
                .and_then(|m| m.get("traceparent"))
                .and_then(Value::as_str)
                .and_then(crate::telemetry::parent_span_id),
            cancel,
            ..RequestContext::default()
        };
        let governed = Box::pin(
            self.pipeline
                .handle(ctx, ToolCall { tool, args }, Mode::Execute),
        )
        .await
        .map_err(|e| rpc_error(&e))?;
        Ok(call_tool_result(governed))
    }

    /// Who the caller is (virtual tools are answered outside the pipeline).
    fn identify(&self, caller: &Caller) -> Identity {
        self.pipeline
            .auth()
            .identify(caller.authorization.as_deref())
    }

    /// Whether the caller may see and call the supervisor tools.
    fn is_supervisor(&self, caller: &Caller, identity: &Identity) -> bool {
        let auth = self.pipeline.auth();
        match identity.kind {
            IdentityKind::Operator => true,
            _ if !auth.is_supervisor_agent(&identity.agent) => false,
            // `--mcp-agent` is set by whoever launched the process, not claimed by a peer.
            _ if caller.ingress == Ingress::McpStdio => true,
            IdentityKind::Token => true,
            IdentityKind::Declared => auth.trusts_declared_agents(),
            IdentityKind::Anonymous => false,
        }
    }

    async fn call_virtual(
        &self,
        caller: &Caller,
        tool: &VirtualTool,
        args: &Value,
    ) -> Result<Value, RpcError> {
        let identity = self.identify(caller);
        if tool.supervisor_only && !self.is_supervisor(caller, &identity) {
            return Err(RpcError::new(
                METHOD_NOT_FOUND,
                format!(
                    "{} is operator-only — not callable by this agent. Use the HTTP API or a declared supervisor agent.",
                    tool.name
                ),
            ));
        }
        match tool.kind {
            Virtual::ApprovalResolve => self.resolve_approval(&identity, args).await,
            Virtual::ApprovalPending => self.pending_approvals().await,
            Virtual::GrantList => self.list_grants().await,
            Virtual::GrantCreate => self.create_grant(&identity, args).await,
            Virtual::GrantDelegate => self.delegate_grant(&identity, args).await,
            Virtual::GrantRevoke => self.revoke_grant(args).await,
            Virtual::HaltCreate => self.create_halt(&identity, args).await,
            Virtual::HaltList => Ok(self.list_halts()),
            Virtual::HaltLift => self.lift_halt(args).await,
            Virtual::Catalog => {
                let filter = args.get("source").and_then(Value::as_str).unwrap_or("");
                Ok(text_result(
                    &pretty(&self.catalog(&identity, filter)),
                    false,
                ))
            }
        }
    }

    /// `approval.resolve {id, decision, reasoning?}`: records the decision; the requesting
    /// agent's identical call is what runs.
    async fn resolve_approval(&self, identity: &Identity, args: &Value) -> Result<Value, RpcError> {
        let id = str_arg(args, "id")
            .ok_or_else(|| RpcError::invalid_params("Missing 'id' parameter"))?;
        let approve = match str_arg(args, "decision") {
            Some("approve") => true,
            Some("deny") => false,
            _ => {
                return Err(RpcError::invalid_params(
                    "Invalid 'decision': must be 'approve' or 'deny'",
                ));
            }
        };
        let resolved_by = format!("mcp:{}", identity.agent);
        let reasoning = str_arg(args, "reasoning").unwrap_or_default().to_owned();
        let resolution = Resolution {
            approve,
            resolved_by: resolved_by.clone(),
            reasoning: reasoning.clone(),
            confidence: 0.0,
            resolver_agent: acting_agent(identity),
        };
        let terms = match args.get("grant") {
            None | Some(Value::Null) => None,
            Some(_) if !approve => {
                return Err(RpcError::invalid_params(
                    "a grant goes with an approval, not with a denial",
                ));
            }
            Some(grant) => Some(approval_grant(grant)?),
        };
        let approvals = self.pipeline.approvals();
        let resolved = match terms {
            Some(terms) => {
                approve_with_grant(approvals, self.pipeline.grants(), id, resolution, terms)
                    .await
                    .map(|(record, grant)| (record, Some(grant)))
            }
            None => approvals
                .resolve(id, resolution)
                .await
                .map(|record| (record, None))
                .map_err(ApproveError::from),
        };
        let (record, grant) = match resolved {
            Ok(resolved) => resolved,
            Err(ApproveError::Grant(e)) => return Err(grant_rpc_error(e, "")),
            Err(ApproveError::Approval(ApprovalError::NotFound)) => {
                return Err(RpcError::invalid_params(format!(
                    "Approval not found: {id}"
                )));
            }
            Err(ApproveError::Approval(e @ ApprovalError::AlreadyResolved)) => {
                return Ok(text_result(&format!("Cannot resolve: {e}"), true));
            }
            Err(ApproveError::Approval(e @ ApprovalError::SelfResolution)) => {
                return Err(RpcError::invalid_params(e.to_string()));
            }
            Err(ApproveError::Approval(
                e @ (ApprovalError::Unavailable(_) | ApprovalError::Store(_)),
            )) => {
                return Err(rpc_error(&e.into()));
            }
        };
        // The requesting call's trace learns the outcome, as with the HTTP route.
        let waited = record
            .resolved_at
            .and_then(|at| at.duration_since(record.created_at).ok())
            .unwrap_or_default();
        let update = TraceUpdate {
            approval_status: Some(record.status.as_str().to_owned()),
            approved_by: Some(resolved_by),
            approval_ms: Some(u64::try_from(waited.as_millis()).unwrap_or(u64::MAX)),
            supervisor_reasoning: Some(reasoning),
            supervisor_confidence: Some(0.0),
            ..TraceUpdate::default()
        };
        if let Err(e) = self.pipeline.trace().update(&record.trace_id, update).await {
            tracing::warn!(error = %e, "could not update the trace of approval {}", record.id);
        }
        let text = if approve {
            let mut text = format!(
                "Approved. The requesting agent's identical call will run once (id: {}).",
                record.short_id()
            );
            if let Some(grant) = &grant {
                text.push('\n');
                text.push_str(&grant_text("Grant created", grant));
            }
            text
        } else {
            format!("Denied. Tool {} was not executed.", record.tool)
        };
        Ok(text_result(&text, false))
    }

    /// `approval.pending`: one line per pending approval, most recent first.
    async fn pending_approvals(&self) -> Result<Value, RpcError> {
        let pending = self
            .pipeline
            .approvals()
            .list(Some(ApprovalStatus::Pending), None)
            .await
            .map_err(|e| rpc_error(&e.into()))?;
        if pending.is_empty() {
            return Ok(text_result("No pending approvals.", false));
        }
        let now = SystemTime::now();
        let mut text = format!("Pending approvals ({}):\n", pending.len());
        for a in &pending {
            let age = now.duration_since(a.created_at).unwrap_or_default();
            text.push_str(&format!(
                "- ID: {}  tool: {}  agent: {}  age: {}\n",
                a.short_id(),
                a.tool,
                a.agent_id,
                format_secs(age)
            ));
        }
        Ok(text_result(&text, false))
    }

    /// `grant.list`: one line per active grant, in creation order.
    async fn list_grants(&self) -> Result<Value, RpcError> {
        let grants = self
            .pipeline
            .grants()
            .list()
            .await
            .map_err(|e| rpc_error(&e.into()))?;
        if grants.is_empty() {
            return Ok(text_result("No active grants.", false));
        }
        let now = SystemTime::now();
        let mut text = format!("Active grants ({}):\n", grants.len());
        for g in &grants {
            text.push_str(&format!(
                "- ID: {}  tools: {}  agent: {}  remaining: {}",
                g.id.get(..8).unwrap_or(&g.id),
                g.tools,
                g.agent,
                format_secs(g.remaining(now))
            ));
            if let Some(parent) = &g.parent {
                text.push_str(&format!("  from: {}", parent.get(..8).unwrap_or(parent)));
            }
            text.push('\n');
        }
        Ok(text_result(&text, false))
    }

    /// `grant.create {tools, duration, agent?, condition?, max_calls?}`; the agent defaults to
    /// the caller.
    async fn create_grant(&self, identity: &Identity, args: &Value) -> Result<Value, RpcError> {
        let (Some(tools), Some(duration)) = (str_arg(args, "tools"), str_arg(args, "duration"))
        else {
            return Err(RpcError::invalid_params("tools and duration are required"));
        };
        let duration = parse_duration(duration)?;
        let (condition, max_calls) = grant_limits(args)?;
        let grant = self
            .pipeline
            .grants()
            .create(NewGrant {
                agent: str_arg(args, "agent").unwrap_or(&identity.agent).to_owned(),
                tools: tools.to_owned(),
                duration: Some(duration),
                granted_by: format!("mcp:{}", identity.agent),
                condition,
                max_calls,
                creator_agent: acting_agent(identity),
                parent: None,
            })
            .await
            .map_err(|e| grant_rpc_error(e, ""))?;
        Ok(text_result(&grant_text("Grant created", &grant), false))
    }

    /// `grant.delegate {id, agent, tools?, duration?, condition?, max_calls?}`: the caller
    /// hands an attenuated copy of a grant it holds to one agent.
    async fn delegate_grant(&self, identity: &Identity, args: &Value) -> Result<Value, RpcError> {
        let (Some(id), Some(agent)) = (str_arg(args, "id"), str_arg(args, "agent")) else {
            return Err(RpcError::invalid_params("id and agent are required"));
        };
        let duration = str_arg(args, "duration").map(parse_duration).transpose()?;
        let (condition, max_calls) = grant_limits(args)?;
        let grant = self
            .pipeline
            .grants()
            .create(NewGrant {
                agent: agent.to_owned(),
                tools: str_arg(args, "tools").unwrap_or_default().to_owned(),
                duration,
                granted_by: format!("mcp:{}", identity.agent),
                condition,
                max_calls,
                creator_agent: acting_agent(identity),
                parent: Some(id.to_owned()),
            })
            .await
            .map_err(|e| grant_rpc_error(e, id))?;
        Ok(text_result(&grant_text("Grant delegated", &grant), false))
    }

    /// `grant.revoke {id}`: exact id or a unique prefix of at least 4 characters.
    async fn revoke_grant(&self, args: &Value) -> Result<Value, RpcError> {
        let id = str_arg(args, "id").ok_or_else(|| RpcError::invalid_params("id is required"))?;
        let revoked = self
            .pipeline
            .grants()
            .revoke(id)
            .await
            .map_err(|e| grant_rpc_error(e, id))?;
        let mut text = format!("Grant revoked: {id}");
        if !revoked.descendants.is_empty() {
            text.push_str(&format!(
                "\n  with the grants delegated from it: {}",
                revoked.descendants.join(", ")
            ));
        }
        Ok(text_result(&text, false))
    }

    /// `halt.create {agent | session | all, reason?}`: as `POST /halts`, made by `mcp:<caller>`.
    async fn create_halt(&self, identity: &Identity, args: &Value) -> Result<Value, RpcError> {
        let text = |key: &str| -> Result<Option<String>, RpcError> {
            match args.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(RpcError::invalid_params(format!(
                    "invalid {key}: must be a string"
                ))),
            }
        };
        let all = match args.get("all") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(all)) => *all,
            Some(_) => return Err(RpcError::invalid_params("invalid all: must be a boolean")),
        };
        let scope =
            Scope::from_parts(text("agent")?, text("session")?, all).map_err(halt_rpc_error)?;
        let halt = self
            .pipeline
            .halts()
            .add(NewHalt {
                scope,
                reason: text("reason")?.unwrap_or_default(),
                created_by: format!("mcp:{}", identity.agent),
            })
            .await
            .map_err(halt_rpc_error)?;
        Ok(text_result(
            &format!(
                "Halted {} (id: {}): every later call is denied and running calls are stopped until halt.lift with id={}.",
                halt.scope.describe(),
                halt.id,
                halt.id
            ),
            false,
        ))
    }

    /// `halt.list`: one line per halt in effect, oldest first.
    fn list_halts(&self) -> Value {
        let halts = self.pipeline.halts().list();
        if halts.is_empty() {
            return text_result("No halts in effect.", false);
        }
        let mut text = format!("Halts in effect ({}):\n", halts.len());
        for h in &halts {
            text.push_str(&format!(
                "- ID: {}  stops: {}  by: {}  since: {}  reason: {}\n",
                h.id,
                h.scope.describe(),
                h.created_by,
                rfc3339_secs(h.created_at),
                h.reason
            ));
        }
        text_result(&text, false)
    }

    /// `halt.lift {id}`: the exact id.
    async fn lift_halt(&self, args: &Value) -> Result<Value, RpcError> {
        let id = str_arg(args, "id").ok_or_else(|| RpcError::invalid_params("id is required"))?;
        let halt = self
            .pipeline
            .halts()
            .lift(id)
            .await
            .map_err(halt_rpc_error)?;
        Ok(text_result(
            &format!("Halt lifted: {} ({})", halt.id, halt.scope.describe()),
            false,
        ))
    }

    /// `mesh.catalog` (flux7 §4.5): tools grouped by source with the caller's policy action,
    /// evaluated with no arguments (so conditional rules are skipped, as in flux7). It leaves out
    /// what `tools/list` leaves out for the caller (`server.hide_denied_tools`).
    pub fn catalog(&self, identity: &Identity, source_filter: &str) -> Value {
        struct Group {
            source: &'static str,
            runtime: String,
            tools: Vec<(String, String, String)>,
        }
        let agent = identity.agent.as_str();
        let wanted =
            |key: &str| source_filter.is_empty() || key.eq_ignore_ascii_case(source_filter);
        let policies = self.pipeline.policy().current();
        let no_args = json!({});
        let mut groups: BTreeMap<String, Group> = BTreeMap::new();
        let registry = self.pipeline.registry();
        for t in registry.list() {
            if !wanted(&t.group) || virtual_tool(&t.name).is_some() {
                continue;
            }
            if !identity.is_operator() && !registry.shows(&policies, agent, &t.name, t.source) {
                continue;
            }
            let hints = if policies.uses_annotations() {
                registry.hints_of(&t.name)
            } else {
                ToolHints::CAUTIOUS
            };
            let action = policies
                .evaluate_with(agent, &t.name, &no_args, &hints)
                .action;
            let group = groups.entry(t.group).or_insert_with(|| Group {
                source: t.source,
                runtime: t.runtime,
                tools: Vec::new(),
            });
            group
                .tools
                .push((t.name, t.description, action.as_str().to_owned()));
        }
        if wanted("mesh") {
            groups.insert(
                "mesh".to_owned(),
                Group {
                    source: "virtual",
                    runtime: String::new(),
                    tools: VIRTUAL_TOOLS
                        .iter()
                        .map(|v| {
                            (
                                v.name.to_owned(),
                                v.catalog_description.to_owned(),
                                "allow".to_owned(),
                            )
                        })
                        .collect(),
                },
            );
        }
        let total: usize = groups.values().map(|g| g.tools.len()).sum();
        let count = groups.len();
        let groups: Map<String, Value> = groups
            .into_iter()
            .map(|(key, mut g)| {
                g.tools.sort();
                let mut out = Map::new();
                out.insert("source".into(), json!(g.source));
                if !g.runtime.is_empty() {
                    out.insert("runtime".into(), json!(g.runtime));
                }
                out.insert("count".into(), json!(g.tools.len()));
                let tools = g
                    .tools
                    .into_iter()
                    .map(|(name, description, action)| {
                        json!({ "name": name, "description": description, "action": action })
                    })
                    .collect::<Vec<_>>();
                out.insert("tools".into(), Value::Array(tools));
                (key, Value::Object(out))
            })
            .collect();
        json!({
            "groups": groups,
            "summary": format!("{total} tools across {count} sources"),
        })
    }
}

/// The methods `Dispatcher::handle` answers; anything else is -32601.
pub fn is_known_method(method: &str) -> bool {
    matches!(method, "initialize" | "ping" | "tools/list" | "tools/call")
}

fn virtual_tool(name: &str) -> Option<&'static VirtualTool> {
    VIRTUAL_TOOLS.iter().find(|v| v.name == name)
}

/// The `initialize` result: the client's protocol version when this server speaks it, else the
/// newest one (the client then decides whether it can continue). `list_changed`: whether this
/// connection sends `notifications/tools/list_changed`.
pub fn initialize_result(params: &Map<String, Value>, list_changed: bool) -> Value {
    json!({
        "protocolVersion": negotiate(params.get("protocolVersion").and_then(Value::as_str)),
        "capabilities": { "tools": { "listChanged": list_changed } },
        "serverInfo": { "name": SERVER_NAME, "version": SERVER_VERSION },
    })
}

pub fn negotiate(requested: Option<&str>) -> &'static str {
    requested
        .and_then(|r| PROTOCOL_VERSIONS.iter().copied().find(|v| *v == r))
        .unwrap_or(LATEST_PROTOCOL_VERSION)
}

/// What the agent sees of a governed call: the tool's own result when it ran, else a result
/// with `isError: true` and flux7's text (so clients that validate `outputSchema` can read it).
/// The result is shaped by where the call went (`g.source`), as resolved when it ran.
pub fn call_tool_result(g: Governed) -> Value {
    let meta = governance_meta(&g);
    let mut result = match g.verdict {
        Verdict::Allowed {
            result: Some(result),
        } => {
            let mut r = tool_result(result, g.source);
            // An HTTP backend's error status (OpenAPI tools) is a tool error the agent must see.
            if g.backend_status.is_some_and(|s| s >= 400) {
                r["isError"] = Value::Bool(true);
            }
            r
        }
        Verdict::Allowed { result: None } => json!({ "content": [], "isError": false }),
        Verdict::Failed {
            error: error @ PipelineError::Halted(_),
        } => text_result(&error.to_string(), true),
        Verdict::Failed { error } => text_result(&format!("Backend error: {error}"), true),
        Verdict::Denied => text_result(&format!("Policy denied: {}", g.reason), true),
        Verdict::ApprovalPending => {
            let (id, remaining) = g
                .approval
                .as_ref()
                .map_or(("", 0), |a| (a.short_id(), a.remaining_secs));
            text_result(
                &format!(
                    "Approval required (id: {id}). Tool: {}. Timeout: {remaining}s.\nUse approval.resolve with id={id} and decision=approve or deny.",
                    g.tool
                ),
                true,
            )
        }
        Verdict::ApprovalDenied => {
            let reasoning = g.approval.as_ref().map_or("", |a| a.reasoning.as_str());
            text_result(&format!("Denied by supervisor: {reasoning}"), true)
        }
        Verdict::ApprovalTimedOut => text_result(APPROVAL_TIMED_OUT, true),
        Verdict::ApprovalUnavailable { message } => text_result(&message, true),
        Verdict::ApprovalRequired => text_result(APPROVAL_REQUIRED, true),
        Verdict::RateLimited { message, .. } => text_result(&message, true),
    };
    if let Some(meta) = meta {
        result["_meta"] = meta;
    }
    result
}

/// Why a call did not run or failed, for clients that act on it without parsing the text:
/// `_meta["mesh7/governance"]` with the outcome, the `policy` label and rule of the trace, the
/// trace id and, when there is one, the approval's id. None when the tool ran and answered
/// (its result is the tool's own).
fn governance_meta(g: &Governed) -> Option<Value> {
    let outcome = match &g.verdict {
        Verdict::Allowed { .. } => return None,
        Verdict::Failed {
            error: PipelineError::Halted(_),
        } => "halted",
        Verdict::Failed { .. } => "failed",
        Verdict::Denied if g.rule.starts_with("halt:") => "halted",
        Verdict::Denied if g.rule.starts_with("pin:") => "tool_changed",
        Verdict::Denied => "denied",
        Verdict::ApprovalPending => "approval_pending",
        Verdict::ApprovalDenied => "approval_denied",
        Verdict::ApprovalTimedOut => "approval_timed_out",
        Verdict::ApprovalUnavailable { .. } => "approval_unavailable",
        Verdict::ApprovalRequired => "approval_required",
        Verdict::RateLimited { is_loop: true, .. } => "loop_detected",
        Verdict::RateLimited { .. } => "rate_limited",
    };
    let mut governance = json!({
        "outcome": outcome,
        "policy": g.policy_label(),
        "rule": g.rule,
        "trace_id": g.trace_id,
    });
    if let Some(approval) = &g.approval {
        governance["approval_id"] = json!(approval.id);
    }
    // The session's labels, when a rule tested them: why a `tainted` rule held the call.
    if let Some(taint) = g.taint.as_deref().filter(|t| !t.is_empty()) {
        governance["taint"] = taint.iter().map(|l| json!(&**l)).collect::<Value>();
    }
    Some(json!({ "mesh7/governance": governance }))
}

/// flux7's text when a blocking approval expires.
pub const APPROVAL_TIMED_OUT: &str = "Approval timed out — no supervisor or human resolved it.";
/// A call that needs a human where none can be asked from this path.
pub const APPROVAL_REQUIRED: &str = "This action requires human approval.";

/// A forwarded result as a CallToolResult.
fn tool_result(result: Value, source: Source) -> Value {
    match result {
        // An upstream MCP result is already a CallToolResult: forwarded as is.
        Value::Object(_) if source == Source::Mcp => result,
        Value::Object(ref out) if is_cli_output(out) => {
            let stdout = out.get("stdout").and_then(Value::as_str).unwrap_or("");
            let content = json!([{ "type": "text", "text": stdout }]);
            let is_error = out.get("exit_code").and_then(Value::as_i64).unwrap_or(0) != 0;
            json!({ "content": content, "structuredContent": result, "isError": is_error })
        }
        Value::String(text) => text_result(&text, false),
        Value::Object(_) => {
            let content = json!([{ "type": "text", "text": pretty(&result) }]);
            json!({ "content": content, "structuredContent": result, "isError": false })
        }
        _ => text_result(&pretty(&result), false),
    }
}

fn is_cli_output(out: &Map<String, Value>) -> bool {
    out.get("stdout").is_some_and(Value::is_string)
        && out.get("exit_code").is_some_and(Value::is_i64)
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn text_result(text: &str, is_error: bool) -> Value {
    json!({ "content": [{ "type": "text", "text": text }], "isError": is_error })
}

/// A non-empty string argument.
fn str_arg<'a>(args: &'a Value, key: &str) -> Option<&'a str> {
    args.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// The agent behind a resolution or a grant, when it is an agent: no agent resolves or grants
/// its own pending call. The operator is a person, as on the HTTP control plane.
fn acting_agent(identity: &Identity) -> Option<String> {
    match identity.kind {
        IdentityKind::Operator => None,
        IdentityKind::Anonymous | IdentityKind::Declared | IdentityKind::Token => {
            Some(identity.agent.clone())
        }
    }
}

/// `approval.resolve`'s `grant`: `{duration, tools?, condition?, max_calls?}`.
fn approval_grant(grant: &Value) -> Result<GrantTerms, RpcError> {
    if !grant.is_object() {
        return Err(RpcError::invalid_params("grant must be an object"));
    }
    let unknown: Vec<&String> = grant
        .as_object()
        .into_iter()
        .flat_map(|m| m.keys())
        .filter(|k| !["duration", "tools", "condition", "max_calls"].contains(&k.as_str()))
        .collect();
    if let Some(key) = unknown.first() {
        return Err(RpcError::invalid_params(format!(
            "grant: unknown field {key:?}"
        )));
    }
    let duration = str_arg(grant, "duration")
        .ok_or_else(|| RpcError::invalid_params("grant.duration is required"))?;
    let tools = match grant.get("tools") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) if !t.is_empty() => Some(t.clone()),
        Some(_) => {
            return Err(RpcError::invalid_params(
                "grant.tools must be a non-empty string",
            ));
        }
    };
    let (condition, max_calls) = grant_limits(grant)?;
    Ok(GrantTerms {
        duration: parse_duration(duration)?,
        tools,
        condition,
        max_calls,
    })
}

fn parse_duration(text: &str) -> Result<Duration, RpcError> {
    duration::parse(text).map_err(|e| RpcError::invalid_params(format!("invalid duration: {e}")))
}

/// The optional `condition` and `max_calls` of a grant's arguments.
fn grant_limits(args: &Value) -> Result<(Option<ConditionConfig>, Option<u64>), RpcError> {
    let condition = match args.get("condition") {
        None | Some(Value::Null) => None,
        Some(c) => Some(
            serde_json::from_value::<ConditionConfig>(c.clone())
                .map_err(|e| RpcError::invalid_params(format!("invalid condition: {e}")))?,
        ),
    };
    let max_calls = match args.get("max_calls") {
        None | Some(Value::Null) => None,
        Some(n) => Some(n.as_u64().ok_or_else(|| {
            RpcError::invalid_params("invalid max_calls: must be a non-negative integer")
        })?),
    };
    Ok((condition, max_calls))
}

/// flux7's grant text: `<title>: <id>` then agent, tools, expiry and time left (and mesh7's
/// parent when delegated).
fn grant_text(title: &str, grant: &Grant) -> String {
    let mut text = format!(
        "{title}: {}\n  agent: {}\n  tools: {}\n  expires: {}\n  remaining: {}",
        grant.id,
        grant.agent,
        grant.tools,
        rfc3339_secs(grant.expires_at),
        format_secs(grant.remaining(SystemTime::now()))
    );
    if let Some(max) = grant.max_calls {
        text.push_str(&format!("\n  max_calls: {max}"));
    }
    if let Some(parent) = &grant.parent {
        text.push_str(&format!("\n  from: {parent}"));
    }
    text
}

/// A refused grant operation; `id` is the grant id the caller named (revoke).
fn grant_rpc_error(e: GrantError, id: &str) -> RpcError {
    match e {
        GrantError::NotFound => RpcError::invalid_params(format!("grant not found: {id}")),
        GrantError::Ambiguous => {
            RpcError::invalid_params(format!("grant id prefix is ambiguous: {id}"))
        }
        GrantError::InvalidDuration(_)
        | GrantError::TooLong { .. }
        | GrantError::InvalidCondition(_)
        | GrantError::NoCalls
        | GrantError::TooLarge(_)
        | GrantError::SelfGrant
        | GrantError::NotHolder { .. }
        | GrantError::DelegateToPattern(_)
        | GrantError::TooDeep
        | GrantError::OutlivesParent { .. }
        | GrantError::ExceedsParentCalls { .. } => RpcError::invalid_params(e.to_string()),
        GrantError::Unavailable(_) | GrantError::Store(_) => rpc_error(&e.into()),
    }
}

fn halt_rpc_error(e: HaltError) -> RpcError {
    match e {
        HaltError::NotFound | HaltError::Invalid(_) => RpcError::invalid_params(e.to_string()),
        HaltError::Unavailable(_) => rpc_error(&e.into()),
    }
}

/// A call that reached no verdict, as a JSON-RPC error (flux7's texts where it had one).
fn rpc_error(e: &PipelineError) -> RpcError {
    match e {
        PipelineError::UnknownTool(name) => {
            RpcError::invalid_params(format!("Unknown tool: {name}"))
        }
        other => RpcError::new(other.code().jsonrpc, other.to_string()),
    }
}

/// The trace id of `params._meta.traceparent` (W3C: `00-<32 hex>-<16 hex>-<flags>`).
fn meta_trace_id(params: &Map<String, Value>) -> Option<String> {
    let tp = params.get("_meta")?.get("traceparent")?.as_str()?;
    let id = tp.split('-').nth(1)?;
    let valid = id.len() == 32
        && id.bytes().all(|b| b.is_ascii_hexdigit())
        && id.bytes().any(|b| b != b'0');
    valid.then(|| id.to_ascii_lowercase())
}

/// An internal failure as a JSON-RPC error.
pub fn internal_error(message: impl Into<String>) -> RpcError {
    RpcError::new(INTERNAL_ERROR, message)
}

#[cfg(test)]
mod tests {
    use mesh7_config::Action;

    use super::*;

    fn governed(verdict: Verdict, source: Source) -> Governed {
        Governed {
            trace_id: "t".into(),
            agent: "a".into(),
            tool: "echo.run".into(),
            action: Action::Allow,
            rule: "p".into(),
            reason: "policy=p tool=echo.run action=deny".into(),
            latency_ms: 0,
            verdict,
            backend_status: None,
            approval: None,
            source,
            shadow: None,
            taint: None,
        }
    }

    #[test]
    fn an_http_backend_error_status_is_an_error_result() {
        for (status, is_error) in [(200, false), (404, true), (500, true)] {
            let mut g = governed(
                Verdict::Allowed {
                    result: Some(json!({"message": "from the backend"})),
                },
                Source::OpenApi,
            );
            g.backend_status = Some(status);
            let r = call_tool_result(g);
            assert_eq!(r["isError"], is_error, "{status}: {r}");
            assert_eq!(r["structuredContent"]["message"], "from the backend");
        }
    }

    #[test]
    fn governance_outcomes_are_error_results_with_flux7_texts() {
        let table = [
            (
                Verdict::Denied,
                "Policy denied: policy=p tool=echo.run action=deny",
            ),
            (Verdict::ApprovalTimedOut, APPROVAL_TIMED_OUT),
            (
                Verdict::RateLimited {
                    message: "loop detected".into(),
                    is_loop: true,
                },
                "loop detected",
            ),
            (
                Verdict::Failed {
                    error: PipelineError::Forward("exit status 2".into()),
                },
                "Backend error: exit status 2",
            ),
        ];
        for (verdict, text) in table {
            let r = call_tool_result(governed(verdict, Source::Cli));
            assert_eq!(r["isError"], true, "{r}");
            assert_eq!(r["content"][0]["text"], text, "{r}");
            assert!(r.get("structuredContent").is_none());
        }
    }

    #[test]
    fn allowed_results_keep_the_tool_output() {
        let cli = json!({"stdout": "hi\n", "stderr": "", "exit_code": 0});
        let failed_cli = json!({"stdout": "", "stderr": "boom", "exit_code": 3});
        let upstream = json!({
            "content": [{"type": "text", "text": "x"}],
            "structuredContent": {"content": "x"},
            "isError": false,
        });
        let table = [
            (
                cli.clone(),
                Source::Cli,
                json!({"content": [{"type": "text", "text": "hi\n"}], "structuredContent": cli, "isError": false}),
            ),
            (
                failed_cli.clone(),
                Source::None,
                json!({"content": [{"type": "text", "text": ""}], "structuredContent": failed_cli, "isError": true}),
            ),
            (upstream.clone(), Source::Mcp, upstream.clone()),
            (
                json!({"id": 1}),
                Source::OpenApi,
                json!({"content": [{"type": "text", "text": "{\n  \"id\": 1\n}"}], "structuredContent": {"id": 1}, "isError": false}),
            ),
            (
                json!([1]),
                Source::OpenApi,
                json!({"content": [{"type": "text", "text": "[\n  1\n]"}], "isError": false}),
            ),
        ];
        for (result, source, expected) in table {
            let r = call_tool_result(governed(
                Verdict::Allowed {
                    result: Some(result),
                },
                source,
            ));
            assert_eq!(r, expected);
        }
    }

    #[test]
    fn negotiates_known_versions_and_falls_back_to_the_newest() {
        let table = [
            (Some("2024-11-05"), "2024-11-05"),
            (Some("2025-03-26"), "2025-03-26"),
            (Some("2025-06-18"), "2025-06-18"),
            (Some("2025-11-25"), "2025-11-25"),
            (Some("2026-07-28"), LATEST_PROTOCOL_VERSION),
            (Some("garbage"), LATEST_PROTOCOL_VERSION),
            (None, LATEST_PROTOCOL_VERSION),
        ];
        for (requested, expected) in table {
            assert_eq!(negotiate(requested), expected, "{requested:?}");
        }
        let r = initialize_result(
            json!({"protocolVersion": "2025-03-26"})
                .as_object()
                .unwrap(),
            false,
        );
        assert_eq!(
            r,
            json!({
                "protocolVersion": "2025-03-26",
                "capabilities": {"tools": {"listChanged": false}},
                "serverInfo": {"name": "flux7-mesh", "version": "0.1.0"},
            })
        );
    }

    #[test]
    fn reads_the_trace_id_of_meta_traceparent() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let table = [
            (
                json!({"_meta": {"traceparent": format!("00-{id}-00f067aa0ba902b7-01")}}),
                Some(id),
            ),
            (
                json!({"_meta": {"traceparent": "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"}}),
                Some(id),
            ),
            (
                json!({"_meta": {"traceparent": format!("00-{}-00f067aa0ba902b7-01", "0".repeat(32))}}),
                None,
            ),
            (json!({"_meta": {"traceparent": "00-xyz-01"}}), None),
            (json!({"_meta": {}}), None),
            (json!({}), None),
        ];
        for (params, expected) in table {
            assert_eq!(
                meta_trace_id(params.as_object().unwrap()).as_deref(),
                expected,
                "{params}"
            );
        }
    }

    #[test]
    fn unknown_tool_keeps_flux7_text_and_other_errors_their_table_code() {
        let e = rpc_error(&PipelineError::UnknownTool("nope".into()));
        assert_eq!((e.code, e.message.as_str()), (-32602, "Unknown tool: nope"));
        let e = rpc_error(&PipelineError::Unavailable("busy".into()));
        assert_eq!(e.code, -32603);
        let e = rpc_error(&PipelineError::AuthenticationRequired);
        assert_eq!(e.code, -32600);
    }

    #[test]
    fn refused_grant_operations_are_invalid_params_and_store_failures_internal() {
        let table = [
            (GrantError::NotFound, -32602, "grant not found: ab12"),
            (
                GrantError::Ambiguous,
                -32602,
                "grant id prefix is ambiguous: ab12",
            ),
            (
                GrantError::TooLong {
                    max: std::time::Duration::from_secs(24 * 3600),
                },
                -32602,
                "duration exceeds maximum (24h0m0s)",
            ),
            (
                GrantError::InvalidDuration("must be > 0".into()),
                -32602,
                "invalid duration: must be > 0",
            ),
            (
                GrantError::SelfGrant,
                -32602,
                "an agent cannot grant itself a call it is waiting approval for",
            ),
            (
                GrantError::Store("disk full".into()),
                -32603,
                "grant store failed: disk full",
            ),
        ];
        for (error, code, message) in table {
            let e = grant_rpc_error(error, "ab12");
            assert_eq!((e.code, e.message.as_str()), (code, message));
        }
    }

    #[test]
    fn only_agents_are_held_to_no_self_approval() {
        let table = [
            (IdentityKind::Operator, None),
            (IdentityKind::Token, Some("boss")),
            (IdentityKind::Declared, Some("boss")),
            (IdentityKind::Anonymous, Some("boss")),
        ];
        for (kind, expected) in table {
            let identity = Identity {
                agent: "boss".into(),
                kind,
                refused: None,
            };
            assert_eq!(acting_agent(&identity).as_deref(), expected, "{kind:?}");
        }
    }
}
