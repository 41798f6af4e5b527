//! The MCP methods, shared by both transports: `initialize`, `ping`, `tools/list`, `tools/call`.
//!
//! Every `tools/call` of a registry tool goes through `Pipeline::handle` in `Execute` mode; only
//! the virtual tools (`mesh.catalog`, `grant.list`) are answered here, untraced, as in flux7.
//! Governance outcomes are tool results with `isError: true`; protocol problems are JSON-RPC
//! errors.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::jsonrpc::{INTERNAL_ERROR, METHOD_NOT_FOUND, Request, RpcError};
use crate::error::PipelineError;
use crate::pipeline::{Governed, Ingress, Mode, Pipeline, RequestContext, ToolCall, Verdict};
use crate::registry::Target;

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

/// A tool answered by mesh7 itself rather than by a registry source.
struct VirtualTool {
    name: &'static str,
    description: &'static str,
    /// The shorter text `mesh.catalog` shows (flux7's wording).
    catalog_description: &'static str,
    properties: fn() -> Value,
}

const VIRTUAL_TOOLS: &[VirtualTool] = &[
    VirtualTool {
        name: "grant.list",
        description: "List all active temporal grants",
        catalog_description: "List all active temporal grants",
        properties: || json!({}),
    },
    VirtualTool {
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
    },
];

/// What `grant.list` says until a grant store exists.
pub const NO_GRANT_STORE: &str = "No grant store configured.";

/// Answers MCP requests over the pipeline. Cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    pipeline: Pipeline,
}

impl Dispatcher {
    pub fn new(pipeline: Pipeline) -> Self {
        Self { pipeline }
    }

    /// Answers one request. Notifications never reach here: they are not answered.
    pub async fn handle(&self, caller: &Caller, req: Request) -> Result<Value, RpcError> {
        match req.method.as_str() {
            "initialize" => Ok(initialize_result(&req.params)),
            "ping" => Ok(json!({})),
            "tools/list" => Ok(self.list_tools()),
            "tools/call" => self.call_tool(caller, req.params).await,
            other => Err(RpcError::new(
                METHOD_NOT_FOUND,
                format!("Method not found: {other}"),
            )),
        }
    }

    /// Every registry tool in name order with its whole schemas, then the virtual tools.
    pub fn list_tools(&self) -> Value {
        let mut tools: Vec<Value> = self
            .pipeline
            .registry()
            .list()
            .into_iter()
            // Virtual names shadow registry tools of the same name (flux7).
            .filter(|t| virtual_tool(&t.name).is_none())
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
        tools.extend(VIRTUAL_TOOLS.iter().map(|v| {
            json!({
                "name": v.name,
                "description": v.description,
                "inputSchema": { "type": "object", "properties": (v.properties)() },
            })
        }));
        json!({ "tools": tools })
    }

    async fn call_tool(
        &self,
        caller: &Caller,
        mut params: Map<String, Value>,
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
        if let Some(v) = virtual_tool(&tool) {
            return Ok(self.call_virtual(caller, v, &args));
        }
        let ctx = RequestContext {
            ingress: caller.ingress,
            authorization: caller.authorization.clone(),
            on_behalf_of: None,
            session_id: caller.session_id.clone(),
            trace_id: meta_trace_id(&params),
            ..RequestContext::default()
        };
        let call = ToolCall {
            tool,
            args: args.clone(),
        };
        let governed = self
            .pipeline
            .handle(ctx, call, Mode::Execute)
            .await
            .map_err(|e| rpc_error(&e))?;
        let source = match governed.verdict {
            Verdict::Allowed { result: Some(_) } => self.source_of(&governed.tool, &args),
            _ => None,
        };
        Ok(call_tool_result(&governed, source))
    }

    /// Where a called name goes (`cli`, `mcp`, `openapi`): what a forwarded result looks like.
    fn source_of(&self, tool: &str, args: &Value) -> Option<&'static str> {
        let resolved = self.pipeline.registry().resolve(tool, args).ok()?;
        Some(match resolved.target {
            Target::Cli(_) => "cli",
            Target::Mcp { .. } => "mcp",
            Target::OpenApi { .. } => "openapi",
        })
    }

    fn call_virtual(&self, caller: &Caller, tool: &VirtualTool, args: &Value) -> Value {
        match tool.name {
            "mesh.catalog" => {
                let filter = args.get("source").and_then(Value::as_str).unwrap_or("");
                let agent = self
                    .pipeline
                    .auth()
                    .identify(caller.authorization.as_deref())
                    .agent;
                let text =
                    serde_json::to_string_pretty(&self.catalog(&agent, filter)).unwrap_or_default();
                text_result(&text, false)
            }
            _ => text_result(NO_GRANT_STORE, false),
        }
    }

    /// `mesh.catalog` (flux7 §4.5): tools grouped by source with the caller's policy action,
    /// evaluated with no arguments (so conditional rules are skipped, as in flux7).
    pub fn catalog(&self, agent: &str, source_filter: &str) -> Value {
        struct Group {
            source: &'static str,
            runtime: String,
            tools: Vec<(String, String, String)>,
        }
        let wanted =
            |key: &str| source_filter.is_empty() || key.eq_ignore_ascii_case(source_filter);
        let policies = self.pipeline.policy().current();
        let no_args = json!({});
        let mut groups: BTreeMap<String, Group> = BTreeMap::new();
        for t in self.pipeline.registry().list() {
            if !wanted(&t.group) || virtual_tool(&t.name).is_some() {
                continue;
            }
            let action = policies.evaluate(agent, &t.name, &no_args).action;
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
/// newest one (the client then decides whether it can continue).
pub fn initialize_result(params: &Map<String, Value>) -> Value {
    json!({
        "protocolVersion": negotiate(params.get("protocolVersion").and_then(Value::as_str)),
        "capabilities": { "tools": { "listChanged": false } },
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
/// `source` is the tool's registry source (`mcp`, `cli`, `openapi`) when known.
pub fn call_tool_result(g: &Governed, source: Option<&str>) -> Value {
    match &g.verdict {
        Verdict::Allowed {
            result: Some(result),
        } => tool_result(result, source),
        Verdict::Allowed { result: None } => json!({ "content": [], "isError": false }),
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
        Verdict::ApprovalUnavailable { message } => text_result(message, true),
        Verdict::ApprovalRequired => text_result(APPROVAL_REQUIRED, true),
        Verdict::RateLimited { message, .. } => text_result(message, true),
    }
}

/// flux7's text when a blocking approval expires.
pub const APPROVAL_TIMED_OUT: &str = "Approval timed out — no supervisor or human resolved it.";
/// A call that needs a human where none can be asked from this path.
pub const APPROVAL_REQUIRED: &str = "This action requires human approval.";

/// A forwarded result as a CallToolResult.
fn tool_result(result: &Value, source: Option<&str>) -> Value {
    match (source, result) {
        // An upstream MCP result is already a CallToolResult: forwarded as is.
        (Some("mcp"), Value::Object(_)) => result.clone(),
        (_, Value::Object(out)) if is_cli_output(out) => {
            let stdout = out.get("stdout").and_then(Value::as_str).unwrap_or("");
            let exit_code = out.get("exit_code").and_then(Value::as_i64).unwrap_or(0);
            json!({
                "content": [{ "type": "text", "text": stdout }],
                "structuredContent": result,
                "isError": exit_code != 0,
            })
        }
        (_, Value::String(text)) => text_result(text, false),
        (_, Value::Object(_)) => json!({
            "content": [{ "type": "text", "text": pretty(result) }],
            "structuredContent": result,
            "isError": false,
        }),
        _ => text_result(&pretty(result), false),
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

    fn governed(verdict: Verdict) -> Governed {
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
            let r = call_tool_result(&governed(verdict), Some("cli"));
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
                Some("cli"),
                json!({"content": [{"type": "text", "text": "hi\n"}], "structuredContent": cli, "isError": false}),
            ),
            (
                failed_cli.clone(),
                None,
                json!({"content": [{"type": "text", "text": ""}], "structuredContent": failed_cli, "isError": true}),
            ),
            (upstream.clone(), Some("mcp"), upstream.clone()),
            (
                json!({"id": 1}),
                Some("openapi"),
                json!({"content": [{"type": "text", "text": "{\n  \"id\": 1\n}"}], "structuredContent": {"id": 1}, "isError": false}),
            ),
            (
                json!([1]),
                Some("openapi"),
                json!({"content": [{"type": "text", "text": "[\n  1\n]"}], "isError": false}),
            ),
        ];
        for (result, source, expected) in table {
            let r = call_tool_result(
                &governed(Verdict::Allowed {
                    result: Some(result),
                }),
                source,
            );
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
}
