//! The governed-call pipeline: the one path every tool call takes, whatever its ingress
//! (`POST /tool`, `POST /decide`, MCP stdio, MCP Streamable HTTP).
//!
//! `Pipeline::handle` reads top to bottom:
//! authenticate → resolve → evaluate → rate limit → verdict (grant / approval) → forward → trace.
//! No actix type appears here: the subsystems are reached through their handles.

use std::sync::Arc;
use std::time::Instant;

use mesh7_actors::cli::Cli;
use mesh7_actors::policy::Policy;
use mesh7_actors::rate_limit::{self, Acquire, RateLimit, RateLimitError};
use mesh7_actors::trace::{self, Trace, TraceEntry};
use mesh7_config::Action;
use serde_json::Value;

use crate::error::PipelineError;
use crate::identity::{Authenticator, Identity};
use crate::metrics::Metrics;
use crate::registry::{Registry, ResolvedCall, Target};

/// Where a call came in; recorded in its trace and its metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingress {
    Http,
    Decide,
    McpStdio,
    McpHttp,
}

impl Ingress {
    pub fn as_str(self) -> &'static str {
        match self {
            Ingress::Http => "http",
            Ingress::Decide => "decide",
            Ingress::McpStdio => "mcp-stdio",
            Ingress::McpHttp => "mcp-http",
        }
    }
}

/// Whether the call is carried out or only decided (`/decide`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Execute,
    DecideOnly,
}

/// What the ingress knows about the request besides the call itself.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub ingress: Ingress,
    /// The `Authorization` header value (or the MCP session's credentials).
    pub authorization: Option<String>,
    /// An agent named in the request body (`/decide`): honoured only for operators.
    pub on_behalf_of: Option<String>,
    pub session_id: String,
    /// A trace id handed in by the caller (`Traceparent` / `X-Trace-Id`).
    pub trace_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ToolCall {
    pub tool: String,
    pub args: Value,
}

/// The governance outcome of a call that reached a verdict.
#[derive(Debug)]
pub enum Verdict {
    /// Allowed and, in `Execute` mode, forwarded: `result` is the tool's result.
    Allowed {
        result: Option<Value>,
    },
    /// Allowed, but forwarding failed.
    Failed {
        error: PipelineError,
    },
    Denied,
    /// The policy asks for a human; without an approval queue the call is refused (fail closed).
    ApprovalRequired,
    RateLimited {
        message: String,
        is_loop: bool,
    },
}

impl Verdict {
    /// The `policy` field of responses and traces.
    pub fn policy_label(&self) -> &'static str {
        match self {
            Verdict::Allowed { .. } | Verdict::Failed { .. } => "allow",
            Verdict::Denied => "deny",
            Verdict::ApprovalRequired => "human_approval",
            Verdict::RateLimited { .. } => "rate_limited",
        }
    }
}

/// A governed call: who, what, which rule, and the verdict.
#[derive(Debug)]
pub struct Governed {
    pub trace_id: String,
    pub agent: String,
    pub tool: String,
    pub action: Action,
    pub rule: String,
    pub reason: String,
    pub latency_ms: u64,
    pub verdict: Verdict,
    /// The HTTP status an HTTP backend (OpenAPI tool) answered with; its body is the result.
    pub backend_status: Option<u16>,
}

/// The subsystems the pipeline talks to. Cheap to clone.
#[derive(Clone)]
pub struct Pipeline {
    inner: Arc<Inner>,
}

struct Inner {
    auth: Authenticator,
    registry: Arc<Registry>,
    policy: Policy,
    rate_limit: RateLimit,
    cli: Cli,
    trace: Trace,
    metrics: Arc<Metrics>,
}

impl Pipeline {
    pub fn new(
        auth: Authenticator,
        registry: Arc<Registry>,
        policy: Policy,
        rate_limit: RateLimit,
        cli: Cli,
        trace: Trace,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                auth,
                registry,
                policy,
                rate_limit,
                cli,
                trace,
                metrics,
            }),
        }
    }

    pub fn auth(&self) -> &Authenticator {
        &self.inner.auth
    }
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }
    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }
    pub fn trace(&self) -> &Trace {
        &self.inner.trace
    }
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Governs one call. Errors are returned only when no verdict could be reached (bad
    /// credentials, unknown tool, a subsystem unavailable); every verdict is traced.
    pub async fn handle(
        &self,
        ctx: RequestContext,
        call: ToolCall,
        mode: Mode,
    ) -> Result<Governed, PipelineError> {
        let started = Instant::now();
        let inner = &*self.inner;
        // Known before forwarding: HTTP backends receive it (`traceparent`).
        let trace_id = ctx.trace_id.clone().unwrap_or_else(trace::new_trace_id);
        let mut backend_status = None;

        let identity = self.authenticate(&ctx)?;
        // Resolve before policy so that policy sees the effective name (CLI dispatch).
        // `/decide` evaluates any name (flux7), resolving it only when it is known.
        let resolved = match mode {
            Mode::Execute => Some(inner.registry.resolve(&call.tool, &call.args)?),
            Mode::DecideOnly => inner.registry.resolve(&call.tool, &call.args).ok(),
        };
        let effective = resolved
            .as_ref()
            .map_or_else(|| call.tool.clone(), |r| r.effective_name.clone());
        let effective = effective.as_str();

        let policies = inner.policy.current();
        let decision = policies.evaluate(&identity.agent, effective, &call.args);
        let (action, rule, reason) = match resolved.as_ref().and_then(|r| r.default_action) {
            // No rule matched a CLI tool that declares what it wants in that case.
            Some(fallback) if decision.is_default() => (
                fallback,
                "default_action".to_owned(),
                format!("no matching policy — default_action {fallback} for {effective}"),
            ),
            _ => (
                decision.action,
                decision.rule().to_owned(),
                decision.reason(effective),
            ),
        };

        // Rate limits and loop detection come before acting on the verdict (flux7 order), so a
        // throttled agent is throttled whatever it calls; denied calls are checked, not counted.
        let acquire = Acquire {
            agent: identity.agent.as_str().into(),
            tool: effective.into(),
            fingerprint: rate_limit::fingerprint(&call.args),
            limits: decision.rate_limit(),
            record: action != Action::Deny,
        };
        let limited = match inner.rate_limit.acquire(acquire).await {
            Ok(()) => None,
            Err(RateLimitError::Limited(l)) => Some(l),
            Err(e @ RateLimitError::Unavailable(_)) => return Err(e.into()),
        };
        drop(policies);

        let verdict = if let Some(l) = limited {
            Verdict::RateLimited {
                message: l.to_string(),
                is_loop: l.is_loop(),
            }
        } else {
            match action {
                Action::Deny => Verdict::Denied,
                // The grant and approval steps plug in here; until then a call that needs a
                // human is refused, never run.
                Action::HumanApproval => Verdict::ApprovalRequired,
                Action::Allow => match (mode, resolved) {
                    (Mode::DecideOnly, _) | (Mode::Execute, None) => {
                        Verdict::Allowed { result: None }
                    }
                    (Mode::Execute, Some(target)) => match self.forward(target, &trace_id).await {
                        Ok(done) => {
                            backend_status = done.backend_status;
                            Verdict::Allowed {
                                result: Some(done.result),
                            }
                        }
                        Err(error) => Verdict::Failed { error },
                    },
                },
            }
        };

        let governed = Governed {
            trace_id,
            agent: identity.agent,
            tool: call.tool,
            action,
            rule,
            reason,
            latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            verdict,
            backend_status,
        };
        self.record(
            &ctx,
            &governed,
            effective_name_of(&governed, effective),
            call.args,
        )
        .await;
        inner.metrics.count(ctx.ingress, &governed.verdict);
        Ok(governed)
    }

    /// Step 1: credentials → identity, with `require_authentication` and the `/decide` body agent.
    fn authenticate(&self, ctx: &RequestContext) -> Result<Identity, PipelineError> {
        let auth = &self.inner.auth;
        let mut identity = auth.identify(ctx.authorization.as_deref());
        if identity.is_anonymous() && auth.requires_authentication() {
            return Err(PipelineError::AuthenticationRequired);
        }
        if let Some(agent) = ctx.on_behalf_of.as_deref().filter(|a| !a.is_empty())
            && agent != identity.agent
        {
            if !identity.is_operator() {
                return Err(PipelineError::Forbidden(format!(
                    "agent \"{agent}\" does not match the authenticated identity \"{}\"",
                    identity.agent
                )));
            }
            identity.agent = agent.to_owned();
        }
        Ok(identity)
    }

    /// Carries out an allowed call.
    async fn forward(
        &self,
        call: ResolvedCall,
        trace_id: &str,
    ) -> Result<Forwarded, PipelineError> {
        match call.target {
            Target::Cli(inv) => {
                let out = self.inner.cli.execute(inv).await?;
                Ok(out.to_json().into())
            }
            // The backend's body is the result, whatever its status (flux7); the status is kept.
            Target::OpenApi { tool, args } => {
                let resp = tool.call(&args, trace_id).await?;
                Ok(Forwarded {
                    result: resp.body,
                    backend_status: Some(resp.status),
                })
            }
            // The upstream's CallToolResult is forwarded as is (content, structuredContent, isError).
            Target::Mcp {
                upstream,
                tool,
                args,
            } => Ok(upstream.call_tool(&tool, args, None).await?.into()),
        }
    }

    /// Writes the trace entry. A trace that cannot be written is logged; the caller still gets
    /// its answer because the call has already happened.
    async fn record(&self, ctx: &RequestContext, g: &Governed, effective: String, params: Value) {
        let (status_code, error, result) = match &g.verdict {
            Verdict::Allowed { result } => (
                g.backend_status
                    .unwrap_or_else(|| status_of(result.as_ref())),
                String::new(),
                result.as_ref(),
            ),
            Verdict::Failed { error } => (error.code().status.as_u16(), error.to_string(), None),
            Verdict::Denied => (0, g.reason.clone(), None),
            Verdict::ApprovalRequired => (0, NO_APPROVAL_STORE.to_owned(), None),
            Verdict::RateLimited { message, .. } => (0, message.clone(), None),
        };
        let mut entry = TraceEntry {
            trace_id: g.trace_id.clone(),
            session_id: ctx.session_id.clone(),
            agent_id: g.agent.clone(),
            tool: g.tool.clone(),
            params,
            policy: g.verdict.policy_label().to_owned(),
            policy_rule: g.rule.clone(),
            status_code,
            latency_ms: g.latency_ms,
            error,
            timestamp: trace::format_timestamp(std::time::SystemTime::now()),
            ingress: ctx.ingress.as_str().to_owned(),
            effective_tool: effective,
            ..TraceEntry::default()
        };
        trace::estimate_tokens(&mut entry, result);
        if let Err(e) = self.inner.trace.record(entry).await {
            tracing::error!(error = %e, trace_id = %g.trace_id, "trace record lost");
        }
    }
}

/// What a forwarded call gave back.
struct Forwarded {
    result: Value,
    /// The HTTP status of an HTTP backend (OpenAPI tools).
    backend_status: Option<u16>,
}

impl From<Value> for Forwarded {
    fn from(result: Value) -> Self {
        Forwarded {
            result,
            backend_status: None,
        }
    }
}

/// The message a call gets when its policy needs a human and no approval queue exists.
pub const NO_APPROVAL_STORE: &str =
    "This action requires human approval but no approval store is configured.";

fn effective_name_of(g: &Governed, effective: &str) -> String {
    if effective == g.tool {
        String::new()
    } else {
        effective.to_owned()
    }
}

/// The trace status of a forwarded result: CLI exit codes map as flux7 (0 → 200, else 422).
fn status_of(result: Option<&Value>) -> u16 {
    match result
        .and_then(|r| r.get("exit_code"))
        .and_then(Value::as_i64)
    {
        Some(0) | None => 200,
        Some(_) => 422,
    }
}
