//! The governed-call pipeline: the one path every tool call takes, whatever its ingress
//! (`POST /tool`, `POST /decide`, MCP stdio, MCP Streamable HTTP).
//!
//! `Pipeline::handle` reads top to bottom:
//! authenticate → resolve → evaluate (advisory policies only noted; an emergency stop or a tool
//! changed since it was pinned overrides it) → rate limit → verdict (grant / approval, then both
//! checked again) → forward (a halt meanwhile stops it) → trace.
//! No actix type appears here: the subsystems are reached through their handles.

use std::sync::Arc;
use std::time::Instant;

use mesh7_actors::approvals::{ApprovalRecord, ApprovalStatus, Approvals, Gate, Submit};
use mesh7_actors::cli::Cli;
use mesh7_actors::grants::{Grant, Grants, rfc3339_secs};
use mesh7_actors::halts::{self, Halt, Halts, NewHalt, Scope};
use mesh7_actors::memory::{self, DecisionFact, Memory, Recall};
use mesh7_actors::policy::Policy;
use mesh7_actors::rate_limit::{self, Acquire, RateLimit, RateLimitError};
use mesh7_actors::taint::Taint;
use mesh7_actors::trace::{self, Trace, TraceEntry};
use mesh7_config::{Action, ApprovalChannel, PolicySet, ToolHints};
use serde_json::Value;

use crate::error::{CancelNote, PipelineError};
use crate::identity::{Authenticator, Identity};
use crate::metrics::{Metrics, Source};
use crate::registry::{Listing, Registry, ResolvedCall, Target};
use crate::telemetry::{CallSpan, LateOutcome, Step, Telemetry};

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
    /// The caller's span id (`Traceparent`): the call's span becomes its child. Used only with
    /// the `trace_id` of the same header.
    pub parent_span_id: Option<String>,
    /// `Prefer: respond-async` on `/tool`: answer a pending approval at once instead of waiting.
    pub prefer_async: bool,
    /// `X-Callback-URL`: told when the approval of this call is decided.
    pub callback_url: Option<String>,
    /// Why the call was stopped, noted by the ingress before it drops the call's future.
    pub cancel: CancelNote,
}

impl Default for RequestContext {
    fn default() -> Self {
        Self {
            ingress: Ingress::Http,
            authorization: None,
            on_behalf_of: None,
            session_id: String::new(),
            trace_id: None,
            parent_span_id: None,
            prefer_async: false,
            callback_url: None,
            cancel: CancelNote::default(),
        }
    }
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
    /// `/decide`: the call needs a human (nothing is queued; the caller asks one).
    ApprovalRequired,
    /// Queued for a human and answered without waiting; `Governed::approval` has the id.
    ApprovalPending,
    ApprovalDenied,
    ApprovalTimedOut,
    /// Refused without asking anyone (e.g. `approval.channel: tty` with no terminal).
    ApprovalUnavailable {
        message: String,
    },
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
            Verdict::ApprovalRequired
            | Verdict::ApprovalPending
            | Verdict::ApprovalDenied
            | Verdict::ApprovalTimedOut
            | Verdict::ApprovalUnavailable { .. } => "human_approval",
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
    /// The approval this call went through, if any.
    pub approval: Option<ApprovalInfo>,
    /// Where the tool lives, as resolved for this call: what its forwarded result looks like.
    pub source: Source,
    /// What the policies would decide with the `advisory` ones enforced, when that differs.
    pub shadow: Option<ShadowDecision>,
    /// The session's labels when the call was decided; `None` when no rule tests them (so
    /// they were not looked up).
    pub taint: Option<Labels>,
}

/// A session's labels (`taint.sources`).
pub type Labels = Arc<[Arc<str>]>;

/// An advisory decision that differs from the one enforced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowDecision {
    pub action: Action,
    pub rule: String,
}

impl Governed {
    /// The `policy` field of responses and traces: an approved call says `human_approval`.
    pub fn policy_label(&self) -> &'static str {
        match (&self.verdict, &self.approval) {
            (Verdict::Allowed { .. } | Verdict::Failed { .. }, Some(_)) => "human_approval",
            (verdict, _) => verdict.policy_label(),
        }
    }
}

/// What the caller and the trace learn of an approval.
#[derive(Debug, Clone)]
pub struct ApprovalInfo {
    pub id: String,
    pub status: ApprovalStatus,
    pub resolved_by: String,
    pub reasoning: String,
    pub confidence: f64,
    /// Seconds left while pending.
    pub remaining_secs: u64,
    /// How long this call waited for the decision.
    pub waited_ms: u64,
}

impl ApprovalInfo {
    fn of(r: &ApprovalRecord, waited_ms: u64) -> Self {
        Self {
            id: r.id.clone(),
            status: r.status,
            resolved_by: r.resolved_by.clone(),
            reasoning: r.reasoning.clone(),
            confidence: r.confidence,
            remaining_secs: r.remaining(std::time::SystemTime::now()).as_secs(),
            waited_ms,
        }
    }

    pub fn short_id(&self) -> &str {
        self.id.get(..8).unwrap_or(&self.id)
    }
}

/// How calls that need a human are routed (flux7 §5.3).
#[derive(Debug, Clone, Copy)]
pub struct ApprovalRouting {
    /// `supervisor.enabled`: MCP calls wait for the decision instead of answering at once.
    pub block_mcp: bool,
    pub channel: ApprovalChannel,
}

/// The flux7 text for `approval.channel: tty` without a terminal (mesh7 never prompts).
pub const TTY_UNAVAILABLE: &str = "Approval denied: approval.channel is 'tty' but no interactive terminal is available. Use 'queue' or 'tty-fallback' for headless deployments.";

/// What the grant / approval step decided for a `human_approval` call.
enum Gatekeeper {
    Grant(Box<Grant>),
    /// mem7 remembers this many approvals of the same call (`supervisor:mem7`).
    Remembered(usize),
    Approved(ApprovalInfo),
    Waiting(ApprovalInfo),
    Denied(ApprovalInfo),
    TimedOut(ApprovalInfo),
    /// `/decide`: no grant; a human must be asked.
    Ask,
    Refused(String),
}

impl Gatekeeper {
    /// `None` when a grant, mem7 or an approval lets the call run; otherwise the verdict that
    /// holds it. The trace's rule, reason and approval are updated to say which.
    fn held(
        self,
        rule: &mut String,
        reason: &mut String,
        approval: &mut Option<ApprovalInfo>,
    ) -> Option<Verdict> {
        match self {
            Gatekeeper::Grant(grant) => {
                *rule = format!("grant:{}", grant.id);
                *reason = format!(
                    "temporal grant {} (expires {})",
                    grant.id,
                    rfc3339_secs(grant.expires_at)
                );
                None
            }
            Gatekeeper::Remembered(approvals) => {
                *rule = memory::RULE.to_owned();
                *reason = Recall::approval_reason(approvals);
                None
            }
            Gatekeeper::Approved(info) => {
                *approval = Some(info);
                None
            }
            Gatekeeper::Waiting(info) => {
                *approval = Some(info);
                Some(Verdict::ApprovalPending)
            }
            Gatekeeper::Denied(info) => {
                *approval = Some(info);
                Some(Verdict::ApprovalDenied)
            }
            Gatekeeper::TimedOut(info) => {
                *approval = Some(info);
                Some(Verdict::ApprovalTimedOut)
            }
            Gatekeeper::Ask => Some(Verdict::ApprovalRequired),
            Gatekeeper::Refused(message) => Some(Verdict::ApprovalUnavailable { message }),
        }
    }
}

/// The subsystems the pipeline talks to. Cheap to clone.
#[derive(Clone)]
pub struct Pipeline {
    inner: Arc<Inner>,
}

/// Everything the pipeline talks to, handed over once by `app.rs`.
pub struct Parts {
    pub auth: Authenticator,
    pub registry: Arc<Registry>,
    pub policy: Policy,
    pub rate_limit: RateLimit,
    pub cli: Cli,
    pub trace: Trace,
    pub approvals: Approvals,
    pub grants: Grants,
    /// Emergency stops, read from their snapshot on every call.
    pub halts: Halts,
    pub routing: ApprovalRouting,
    pub metrics: Arc<Metrics>,
    /// mem7 (`memory.url` with `supervisor.auto_approve`): Level-1 auto-approve.
    pub memory: Option<Memory>,
    /// Span export (`otel_endpoint`); `Telemetry::disabled()` when none is configured.
    pub telemetry: Telemetry,
    /// The labels of sessions (`taint`), looked up only when a rule tests them.
    pub taint: Taint,
}

type Inner = Parts;

impl Pipeline {
    pub fn new(parts: Parts) -> Self {
        Self {
            inner: Arc::new(parts),
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
    pub fn telemetry(&self) -> &Telemetry {
        &self.inner.telemetry
    }
    pub fn approvals(&self) -> &Approvals {
        &self.inner.approvals
    }
    pub fn grants(&self) -> &Grants {
        &self.inner.grants
    }
    pub fn taint(&self) -> &Taint {
        &self.inner.taint
    }
    pub fn halts(&self) -> &Halts {
        &self.inner.halts
    }

    /// Grows whenever what an MCP `tools/list` can show may have changed: the registry's
    /// catalogue (an upstream's list replaced, pins changed) and, with `hide_denied_tools`, a
    /// policy reload.
    pub fn tools_version(&self) -> u64 {
        let policies = match self.inner.registry.listing() {
            Listing::WithoutDenied => self.inner.policy.version(),
            Listing::All => 0,
        };
        self.inner.registry.catalogue_version() + policies
    }

    /// Resolves once [`Pipeline::tools_version`] differs from `seen` (at once if it does).
    pub async fn tools_changed(&self, seen: u64) {
        let (registry, policy) = (&*self.inner.registry, &self.inner.policy);
        loop {
            // Both parts are read before their waits start, and a wait returns at once if its
            // part moved since: no change between the two is missed.
            let (catalogue, policies) = (registry.catalogue_version(), policy.version());
            if self.tools_version() != seen {
                return;
            }
            match registry.listing() {
                Listing::WithoutDenied => tokio::select! {
                    () = registry.catalogue_changed(catalogue) => {}
                    () = policy.changed_since(policies) => {}
                },
                Listing::All => registry.catalogue_changed(catalogue).await,
            }
        }
    }

    /// Governs one call. Errors are returned only when no verdict could be reached (bad
    /// credentials, unknown tool, a subsystem unavailable); every verdict is traced.
    #[tracing::instrument(name = "call", skip_all, fields(
        ingress = ctx.ingress.as_str(), tool = %call.tool, trace_id = tracing::field::Empty,
    ))]
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
        tracing::Span::current().record("trace_id", trace_id.as_str());
        // The call's span ends when `spans` is dropped, so an early error return still has one.
        let mut spans = inner
            .telemetry
            .call(&inner.metrics, &ctx, &trace_id, &call.tool);
        let mut backend_status = None;
        let mut approval = None;

        let identity = spans
            .try_step(Step::Authenticate, self.authenticate(&ctx))
            .await?;
        // Resolve before policy so that policy sees the effective name (CLI dispatch).
        // `/decide` evaluates any name (flux7), resolving it only when it is known.
        let resolved = spans
            .try_step(Step::Resolve, async {
                match mode {
                    Mode::Execute => inner.registry.resolve(&call.tool, &call.args).map(Some),
                    Mode::DecideOnly => Ok(inner.registry.resolve(&call.tool, &call.args).ok()),
                }
            })
            .await?;
        let source = source_of(resolved.as_ref());
        let effective = resolved
            .as_ref()
            .map_or_else(|| call.tool.clone(), |r| r.effective_name.clone());
        let effective = effective.as_str();

        let policies = inner.policy.current();
        let decision = spans
            .try_step(Step::Evaluate, async {
                // What the tool says of itself, looked up only when a rule asks (`annotations`;
                // the advisory set holds every rule). A name `/decide` does not know says nothing.
                let hints = match &resolved {
                    Some(r) if policies.shadow().unwrap_or(&policies).uses_annotations() => {
                        inner.registry.hints(&r.target)
                    }
                    _ => ToolHints::CAUTIOUS,
                };
                // So are the session's labels (`tainted`); without them no verdict (fail closed).
                let taint = match policies.uses_taint() {
                    true => Some(inner.taint.labels(&identity.agent, &ctx.session_id).await?),
                    false => None,
                };
                let decision = policies.evaluate_in(
                    &identity.agent,
                    effective,
                    &call.args,
                    &hints,
                    taint.as_deref().unwrap_or_default(),
                );
                Ok::<_, PipelineError>((decision, hints, taint))
            })
            .await?;
        let (decision, hints, taint) = decision;
        let fallback = resolved.as_ref().and_then(|r| r.default_action);
        let (mut action, mut rule, mut reason) = match fallback {
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
        // Advisory policies say what they would decide; only the trace hears it.
        let shadow = policies.shadow().and_then(|advisory| {
            let would = advisory_decision(
                advisory,
                &identity.agent,
                effective,
                &call.args,
                &hints,
                taint.as_deref().unwrap_or_default(),
                fallback,
            );
            (would.action != action).then(|| {
                inner.metrics.advisory_disagreement();
                would
            })
        });
        // An emergency stop, or a tool that differs from its pin, overrides the policy: the
        // call is denied, and the limiter is not asked (the trace says why, not rate limited).
        let overridden = self.overridden(&identity.agent, &ctx.session_id, resolved.as_ref());
        if let Some((stop, why)) = &overridden {
            (action, rule, reason) = (Action::Deny, stop.clone(), why.clone());
        }

        // Rate limits and loop detection come before acting on the verdict (flux7 order), so a
        // throttled agent is throttled whatever it calls. Only calls that run are counted: an
        // allowed call now, a human_approval call once a grant or an approval lets it run (so
        // approve-then-retry is not mistaken for a loop); denied calls are checked, not counted.
        let limits = decision.rate_limit();
        let usage = Acquire {
            agent: identity.agent.as_str().into(),
            tool: effective.into(),
            fingerprint: rate_limit::fingerprint(&call.args),
            limits,
            // Counted per session only where a budget asks for it (and there is a session).
            session: limits
                .filter(|l| l.max_per_session > 0 && !ctx.session_id.is_empty())
                .map(|_| ctx.session_id.as_str().into()),
            record: true,
        };
        // The labels this call gives its session if it runs (`taint.sources`).
        let gives = policies.taint_of(effective);
        drop(policies);
        let check = Acquire {
            record: action == Action::Allow,
            ..usage.clone()
        };
        let limited = match overridden {
            Some(_) => None,
            None => spans.try_step(Step::RateLimit, self.limit(&check)).await?,
        };

        // What holds the call back, if anything; `Run` lets it run.
        let next = if let Some(l) = limited {
            Next::Held(
                self.held_by_limit(&l, &identity.agent, &ctx.session_id)
                    .await,
            )
        } else {
            match action {
                Action::Deny => Next::Held(Verdict::Denied),
                Action::Allow => Next::Run { count: false },
                Action::HumanApproval => {
                    // Boxed, like `forward`: the approval wait is kilobytes of state that every
                    // allowed call would otherwise carry (and copy) too.
                    let gate = spans
                        .try_step(
                            Step::Approval,
                            Box::pin(self.gatekeep(
                                &ctx,
                                &identity.agent,
                                effective,
                                &call.args,
                                &rule,
                                &trace_id,
                                mode,
                            )),
                        )
                        .await?;
                    match gate.held(&mut rule, &mut reason, &mut approval) {
                        Some(verdict) => Next::Held(verdict),
                        // The decision may have taken minutes: a halt put in place (or a
                        // tool changed) meanwhile still stops the call.
                        None => match self.overridden(
                            &identity.agent,
                            &ctx.session_id,
                            resolved.as_ref(),
                        ) {
                            Some((stop, why)) => {
                                (rule, reason) = (stop, why);
                                Next::Held(Verdict::Denied)
                            }
                            // It runs now, so it counts now (limits and loop detection).
                            None => Next::Run { count: true },
                        },
                    }
                }
            }
        };
        let verdict = match next {
            Next::Held(verdict) => verdict,
            Next::Run { count } => {
                // Traces the call as cancelled if this future is dropped from here on: an
                // approval or a grant's call may already have been used to let it run.
                let running = Running {
                    pipeline: self,
                    ctx: &ctx,
                    call: &call,
                    effective,
                    source,
                    agent: &identity.agent,
                    action,
                    rule: &rule,
                    reason: &reason,
                    trace_id: &trace_id,
                    approval: approval.as_ref(),
                    started,
                    spans: spans.late_outcome(),
                    shadow: shadow.as_ref(),
                    taint: taint.as_ref(),
                    finished: false,
                };
                let mut stopped = if count {
                    match spans.try_step(Step::RateLimit, self.limit(&usage)).await {
                        Ok(Some(l)) => Some(
                            self.held_by_limit(&l, &identity.agent, &ctx.session_id)
                                .await,
                        ),
                        Ok(None) => None,
                        // Its approval or grant is used by now: the failure is traced with it.
                        Err(error) => Some(Verdict::Failed { error }),
                    }
                } else {
                    None
                };
                // A source's result is untrusted: its session is labelled (durably) before
                // the call runs — `/decide` included, as its caller runs it — or it does not run.
                if stopped.is_none() && !gives.is_empty() {
                    let marked = inner
                        .taint
                        .mark(&identity.agent, &ctx.session_id, gives, effective)
                        .await;
                    if let Err(e) = marked {
                        stopped = Some(Verdict::Failed { error: e.into() });
                    }
                }
                let verdict = match stopped {
                    Some(verdict) => verdict,
                    // A halt put in place while the tool runs ends it: the run's future is
                    // dropped, which kills a CLI process group, cancels an upstream MCP request
                    // and aborts a backend request.
                    None => tokio::select! {
                        biased;
                        halt = inner.halts.until_stopping(&identity.agent, &ctx.session_id) => {
                            Verdict::Failed {
                                error: PipelineError::Halted(format!(
                                    "stopped while running by halt:{} ({})",
                                    halt.id,
                                    halt_reason(&halt)
                                )),
                            }
                        }
                        verdict = self.run(
                            &mut spans,
                            mode,
                            resolved,
                            &call.args,
                            &trace_id,
                            &mut backend_status,
                        ) => verdict,
                    },
                };
                running.finish();
                verdict
            }
        };

        let governed = Governed {
            trace_id,
            agent: identity.agent,
            tool: call.tool,
            action,
            rule,
            reason,
            latency_ms: millis(started.elapsed()),
            verdict,
            backend_status,
            approval,
            source,
            shadow,
            taint,
        };
        self.record(
            &mut spans,
            &ctx,
            &governed,
            effective_name_of(&governed, effective),
            call.args,
        )
        .await;
        inner
            .metrics
            .count_call(ctx.ingress, source, &governed.verdict);
        spans.end();
        Ok(governed)
    }

    /// The rule and reason of what denies this call whatever the policy says, if anything: an
    /// emergency stop on the caller (`halt:<id>`), or a tool whose live definition is not the
    /// one pinned (`pin:<tool>`).
    fn overridden(
        &self,
        agent: &str,
        session: &str,
        resolved: Option<&ResolvedCall>,
    ) -> Option<(String, String)> {
        if let Some(halt) = self.inner.halts.stopping(agent, session) {
            return Some((format!("halt:{}", halt.id), halt_reason(&halt)));
        }
        let resolved = resolved?;
        let unpinned = self.inner.registry.unpinned(&resolved.target)?;
        let tool = &resolved.effective_name;
        Some((format!("pin:{tool}"), unpinned.reason(tool)))
    }

    /// The verdict of a call the limiter refused. A loop refusal that escalates
    /// (`loop_detection.halt_after`) halts the looping session — the agent, for calls without
    /// one — until an operator lifts it, and says so; if the halt cannot be made the call is
    /// refused all the same.
    async fn held_by_limit(&self, l: &rate_limit::Limited, agent: &str, session: &str) -> Verdict {
        let mut verdict = limited_verdict(l);
        if !l.escalates() {
            return verdict;
        }
        // A session id too long to be a halt's target halts its agent instead.
        let (scope, what) = if session.is_empty() || session.chars().count() > halts::MAX_TEXT {
            (Scope::Agent(agent.to_owned()), format!("agent \"{agent}\""))
        } else {
            (
                Scope::Session(session.to_owned()),
                format!("session \"{session}\""),
            )
        };
        let reason = format!("{l} (loop_detection.halt_after)");
        let halt = NewHalt {
            scope,
            reason: reason.chars().take(halts::MAX_TEXT).collect(),
            created_by: LOOP_HALTER.to_owned(),
        };
        match self.inner.halts.add(halt).await {
            Ok(halt) => {
                self.inner.metrics.loop_halt();
                if let Verdict::RateLimited { message, .. } = &mut verdict {
                    message.push_str(&format!(
                        "; {what} halted (halt:{}) until an operator lifts it",
                        halt.id
                    ));
                }
            }
            Err(e) => tracing::error!(error = %e, "could not halt a looping {what}"),
        }
        verdict
    }

    /// Asks the rate limiter actor (check and record in one message); `Some` when refused.
    async fn limit(&self, req: &Acquire) -> Result<Option<rate_limit::Limited>, PipelineError> {
        match self.inner.rate_limit.acquire(req.clone()).await {
            Ok(()) => Ok(None),
            Err(RateLimitError::Limited(l)) => Ok(Some(l)),
            Err(e @ RateLimitError::Unavailable(_)) => Err(e.into()),
        }
    }

    /// Forwards an allowed call (`Execute`), or only reports it allowed (`/decide`).
    async fn run(
        &self,
        spans: &mut CallSpan<'_>,
        mode: Mode,
        resolved: Option<ResolvedCall>,
        args: &Value,
        trace_id: &str,
        backend_status: &mut Option<u16>,
    ) -> Verdict {
        match (mode, resolved) {
            (Mode::DecideOnly, _) | (Mode::Execute, None) => Verdict::Allowed { result: None },
            // Boxed: the backends' futures (the HTTP client's above all) are kilobytes, and
            // every future holding this one would be as large and copied whole when spawned.
            (Mode::Execute, Some(target)) => match spans
                .try_step(
                    Step::Forward,
                    Box::pin(self.forward(target, args, trace_id)),
                )
                .await
            {
                Ok(done) => {
                    *backend_status = done.backend_status;
                    Verdict::Allowed {
                        result: Some(done.result),
                    }
                }
                Err(error) => Verdict::Failed { error },
            },
        }
    }

    /// The grant / approval step of a `human_approval` call: a grant lifts it, then mem7 may
    /// approve it from earlier decisions; otherwise the approval queue decides (an approved
    /// identical call runs once), waiting for the human on `/tool` (unless
    /// `Prefer: respond-async`) and, with `supervisor.enabled`, on MCP.
    #[allow(clippy::too_many_arguments)]
    async fn gatekeep(
        &self,
        ctx: &RequestContext,
        agent: &str,
        tool: &str,
        args: &Value,
        rule: &str,
        trace_id: &str,
        mode: Mode,
    ) -> Result<Gatekeeper, PipelineError> {
        let inner = &*self.inner;
        // Grants only ever lift human_approval, never deny, and apply on every ingress.
        if let Some(grant) = inner.grants.use_grant(agent, tool, args).await? {
            return Ok(Gatekeeper::Grant(Box::new(grant)));
        }
        // mem7 (Level 1) only ever approves, and any failure of it means asking a human.
        if let Some(memory) = &inner.memory
            && let Recall::Approve { approvals } = memory.auto_approve(agent, tool, args).await
        {
            // `/decide` runs nothing, so it records no decision either.
            if mode == Mode::Execute {
                memory.remember(DecisionFact::auto_approved(agent, tool));
            }
            return Ok(Gatekeeper::Remembered(approvals));
        }
        // `/decide` never queues an approval (flux7): the caller asks its own human.
        if mode == Mode::DecideOnly {
            return Ok(Gatekeeper::Ask);
        }
        let mcp = matches!(ctx.ingress, Ingress::McpStdio | Ingress::McpHttp);
        if mcp && inner.routing.channel == ApprovalChannel::Tty {
            return Ok(Gatekeeper::Refused(TTY_UNAVAILABLE.to_owned()));
        }
        let submit = Submit {
            agent: agent.to_owned(),
            tool: tool.to_owned(),
            params: args.clone(),
            policy_rule: rule.to_owned(),
            trace_id: trace_id.to_owned(),
            callback_url: ctx.callback_url.clone(),
        };
        let record = match inner.approvals.gate(submit).await? {
            Gate::Approved(record) => {
                return Ok(Gatekeeper::Approved(ApprovalInfo::of(&record, 0)));
            }
            Gate::Pending { record, .. } => record,
        };
        let block = if mcp {
            inner.routing.block_mcp
        } else {
            !ctx.prefer_async
        };
        if !block {
            return Ok(Gatekeeper::Waiting(ApprovalInfo::of(&record, 0)));
        }
        // If the caller goes away while waiting, this future is dropped: the approval stays,
        // and a later decision runs nothing until the identical call is made again.
        let waited = Instant::now();
        let decided = inner.approvals.wait(&record.id).await?;
        let info = ApprovalInfo::of(&decided, millis(waited.elapsed()));
        Ok(match decided.status {
            ApprovalStatus::Approved => {
                if inner.approvals.consume(&decided.id).await? {
                    Gatekeeper::Approved(info)
                } else {
                    Gatekeeper::Refused(format!(
                        "approval {} was already used by an identical call",
                        decided.id
                    ))
                }
            }
            ApprovalStatus::Denied => Gatekeeper::Denied(info),
            ApprovalStatus::Timeout => Gatekeeper::TimedOut(info),
            ApprovalStatus::Pending => Gatekeeper::Waiting(info),
        })
    }

    /// Step 1: credentials → identity, with `require_authentication` and the `/decide` body agent.
    async fn authenticate(&self, ctx: &RequestContext) -> Result<Identity, PipelineError> {
        let auth = &self.inner.auth;
        let mut identity = auth.identify_async(ctx.authorization.as_deref()).await;
        if let Some(refused) = identity.refused.take() {
            return Err(PipelineError::Unauthenticated(refused));
        }
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
        args: &Value,
        trace_id: &str,
    ) -> Result<Forwarded, PipelineError> {
        match call.target {
            Target::Cli(inv) => {
                let out = self.inner.cli.execute(inv).await?;
                Ok(out.to_json().into())
            }
            // The backend's body is the result, whatever its status (flux7); the status is kept.
            Target::OpenApi { tool } => {
                let resp = tool.call(args, trace_id).await?;
                Ok(Forwarded {
                    result: resp.body,
                    backend_status: Some(resp.status),
                })
            }
            // The upstream's CallToolResult is forwarded as is (content, structuredContent, isError).
            Target::Mcp { upstream, tool } => {
                Ok(upstream.call_tool(&tool, args.clone(), None).await?.into())
            }
        }
    }

    /// Writes the trace entry. A trace that cannot be written is logged; the caller still gets
    /// its answer because the call has already happened.
    async fn record(
        &self,
        spans: &mut CallSpan<'_>,
        ctx: &RequestContext,
        g: &Governed,
        effective: String,
        params: Value,
    ) {
        let entry = trace_entry(ctx, g, effective, params);
        spans.outcome(&entry);
        if let Err(e) = spans
            .step(Step::Trace, self.inner.trace.record(entry))
            .await
        {
            self.inner.metrics.trace_record_lost();
            tracing::error!(error = %e, trace_id = %g.trace_id, "trace record lost");
        }
    }
}

/// The trace entry of a governed call.
fn trace_entry(ctx: &RequestContext, g: &Governed, effective: String, params: Value) -> TraceEntry {
    let (status_code, error, result) = match &g.verdict {
        Verdict::Allowed { result } => (
            g.backend_status
                .unwrap_or_else(|| status_of(result.as_ref())),
            String::new(),
            result.as_ref(),
        ),
        Verdict::Failed { error } => (error.code().status.as_u16(), error.to_string(), None),
        Verdict::Denied => (0, g.reason.clone(), None),
        Verdict::ApprovalRequired | Verdict::ApprovalPending => (0, String::new(), None),
        Verdict::ApprovalDenied => (
            0,
            format!(
                "approval denied by {}",
                g.approval.as_ref().map_or("", |a| a.resolved_by.as_str())
            ),
            None,
        ),
        Verdict::ApprovalTimedOut => (0, "approval timed out".to_owned(), None),
        Verdict::ApprovalUnavailable { message } => (0, message.clone(), None),
        Verdict::RateLimited { message, .. } => (0, message.clone(), None),
    };
    let mut entry = TraceEntry {
        trace_id: g.trace_id.clone(),
        session_id: ctx.session_id.clone(),
        agent_id: g.agent.clone(),
        tool: g.tool.clone(),
        params,
        policy: g.policy_label().to_owned(),
        policy_rule: g.rule.clone(),
        status_code,
        latency_ms: g.latency_ms,
        error,
        timestamp: trace::format_timestamp(std::time::SystemTime::now()),
        ingress: ctx.ingress.as_str().to_owned(),
        effective_tool: effective,
        ..TraceEntry::default()
    };
    if let Some(taint) = &g.taint {
        entry.taint = Some(taint.iter().map(ToString::to_string).collect());
    }
    if let Some(shadow) = &g.shadow {
        entry.shadow_policy = shadow.action.as_str().to_owned();
        entry.shadow_rule.clone_from(&shadow.rule);
    }
    if let Some(a) = &g.approval {
        entry.approval_id.clone_from(&a.id);
        entry.approval_status = a.status.as_str().to_owned();
        entry.approved_by.clone_from(&a.resolved_by);
        entry.approval_ms = a.waited_ms;
        entry.supervisor_reasoning.clone_from(&a.reasoning);
        entry.supervisor_confidence = a.confidence;
    }
    trace::estimate_tokens(&mut entry, result);
    entry
}

/// What the verdict step decided: the call is held back with this verdict, or it runs (after
/// counting it with the limiter when `count`: a `human_approval` call let through).
enum Next {
    Held(Verdict),
    Run { count: bool },
}

/// A call that is running: let through, then forwarded to its tool. When the caller goes away
/// meanwhile (an HTTP client disconnects, an MCP client cancels) the pipeline's future is
/// dropped, and with it the forwarding: the OpenAPI request, the upstream MCP call (which tells
/// the server `notifications/cancelled`) or the CLI process group (killed). The call may
/// already have had effects, or used an approval or a grant's call, so dropping this guard
/// before `finish` records it in the trace and the metrics as cancelled
/// (`PipelineError::Cancelled`, with the reason the ingress noted in `RequestContext::cancel`).
struct Running<'a> {
    pipeline: &'a Pipeline,
    ctx: &'a RequestContext,
    call: &'a ToolCall,
    effective: &'a str,
    source: Source,
    agent: &'a str,
    action: Action,
    rule: &'a str,
    reason: &'a str,
    trace_id: &'a str,
    approval: Option<&'a ApprovalInfo>,
    started: Instant,
    /// The call's OTLP root span takes the recorded outcome from here (export on).
    spans: Option<LateOutcome>,
    shadow: Option<&'a ShadowDecision>,
    taint: Option<&'a Labels>,
    finished: bool,
}

impl Running<'_> {
    /// The call ended without being dropped: the pipeline records it.
    fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let inner = &*self.pipeline.inner;
        let g = Governed {
            trace_id: self.trace_id.to_owned(),
            agent: self.agent.to_owned(),
            tool: self.call.tool.clone(),
            action: self.action,
            rule: self.rule.to_owned(),
            reason: self.reason.to_owned(),
            latency_ms: millis(self.started.elapsed()),
            verdict: Verdict::Failed {
                error: PipelineError::Cancelled(self.ctx.cancel.get()),
            },
            backend_status: None,
            approval: self.approval.cloned(),
            source: self.source,
            shadow: self.shadow.cloned(),
            taint: self.taint.cloned(),
        };
        if let Verdict::Failed { error } = &g.verdict {
            tracing::info!(trace_id = %g.trace_id, tool = %g.tool, "{error}");
        }
        let effective = effective_name_of(&g, self.effective);
        let entry = trace_entry(self.ctx, &g, effective, self.call.args.clone());
        if let Some(spans) = &self.spans {
            spans.set(&entry);
        }
        if let Err(e) = inner.trace.record_now(entry) {
            inner.metrics.trace_record_lost();
            tracing::error!(error = %e, trace_id = %g.trace_id, "trace record lost");
        }
        inner
            .metrics
            .count_call(self.ctx.ingress, self.source, &g.verdict);
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

/// The `source` metrics label of a resolved call.
fn source_of(resolved: Option<&ResolvedCall>) -> Source {
    match resolved.map(|r| &r.target) {
        Some(Target::Cli(_)) => Source::Cli,
        Some(Target::Mcp { .. }) => Source::Mcp,
        Some(Target::OpenApi { .. }) => Source::OpenApi,
        None => Source::None,
    }
}

/// Who made a halt that loop detection escalated to.
pub const LOOP_HALTER: &str = "mesh7:loop_detection";

fn limited_verdict(l: &rate_limit::Limited) -> Verdict {
    Verdict::RateLimited {
        message: l.to_string(),
        is_loop: l.is_loop(),
    }
}

/// What the policies with the advisory ones enforced decide (a CLI tool's `default_action`
/// applies when none matches, as for the enforced decision).
fn advisory_decision(
    advisory: &PolicySet,
    agent: &str,
    tool: &str,
    args: &Value,
    hints: &ToolHints,
    taint: &[Arc<str>],
    fallback: Option<Action>,
) -> ShadowDecision {
    let would = advisory.evaluate_in(agent, tool, args, hints, taint);
    match fallback {
        Some(action) if would.is_default() => ShadowDecision {
            action,
            rule: "default_action".to_owned(),
        },
        _ => ShadowDecision {
            action: would.action,
            rule: would.rule().to_owned(),
        },
    }
}

/// `halted by <who>[: <reason>]`: what a halted call's answer and trace say.
fn halt_reason(halt: &Halt) -> String {
    if halt.reason.is_empty() {
        format!("halted by {}", halt.created_by)
    } else {
        format!("halted by {}: {}", halt.created_by, halt.reason)
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

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

#[cfg(test)]
mod tests;
