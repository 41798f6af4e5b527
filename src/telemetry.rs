//! OpenTelemetry for governed calls: one span per call with a child span per pipeline step,
//! exported to `otel_endpoint`, W3C trace context in and out, and the OTLP/JSON view of the
//! trace ring that `GET /otel-traces` answers.
//!
//! Invariants:
//! - A call's span carries the call's `trace_id`, so `/traces`, `/otel-traces` and the
//!   exported spans agree. When the caller sent a `traceparent`, the call's span is a child of
//!   the caller's span.
//! - The request path never waits on export: a finished call hands its spans to a bounded
//!   queue (`try`-style, never blocking); the exporter thread drains it. A full queue, a failed
//!   or timed-out export drops spans and counts them (`mesh7_otel_spans_dropped_total`).
//! - A call's root span always ends and is exported, on every path: with the trace entry's
//!   outcome (after an approval, too), with the error that stopped the call, or as abandoned
//!   when its future is dropped (the caller went away).
//! - The root span id is derived from the trace id and the entry's timestamp, so the span in
//!   `GET /otel-traces` has the id the exported one had.
//!
//! Step timings feed the `mesh7_step_duration_seconds` histogram whether or not spans are
//! exported.

mod export;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::fmt::Display;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use mesh7_actors::trace::{Redactor, TraceEntry};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::ScopeSpans;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use serde_json::Value;
use tracing::Instrument as _;

use crate::metrics::Metrics;
use crate::pipeline::{Ingress, RequestContext};

pub use export::TelemetryError;

/// `service.name` of the spans unless `OTEL_SERVICE_NAME` says otherwise.
pub const SERVICE_NAME: &str = "mesh7";

/// A step of the governed-call pipeline: a child span and a histogram series each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Authenticate,
    Resolve,
    Evaluate,
    RateLimit,
    Approval,
    Forward,
    Trace,
}

impl Step {
    pub const ALL: [Step; 7] = [
        Step::Authenticate,
        Step::Resolve,
        Step::Evaluate,
        Step::RateLimit,
        Step::Approval,
        Step::Forward,
        Step::Trace,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Step::Authenticate => "authenticate",
            Step::Resolve => "resolve",
            Step::Evaluate => "evaluate",
            Step::RateLimit => "rate_limit",
            Step::Approval => "approval",
            Step::Forward => "forward",
            Step::Trace => "trace",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

// ---------------------------------------------------------------------------------------------
// W3C trace context

/// The parts of a W3C `traceparent` header mesh7 uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    /// 32 lowercase hex digits, not all zero.
    pub trace_id: String,
    /// 16 lowercase hex digits, not all zero: the caller's span.
    pub parent_id: String,
}

/// Parses `version-traceid-parentid-flags`. Version `ff` is invalid; version `00` has exactly
/// four fields, a later version at least four (read as `00`, as W3C asks). Hex digits may be
/// upper case (some clients send them so); they come back lower case.
pub fn parse_traceparent(value: &str) -> Option<TraceParent> {
    let mut fields = value.trim().split('-');
    let (version, trace_id, parent_id, flags) = (
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
    );
    let rest = fields.next();
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    let valid = hex(version, 2)
        && !version.eq_ignore_ascii_case("ff")
        && (version != "00" || rest.is_none())
        && hex(trace_id, 32)
        && nonzero(trace_id)
        && hex(parent_id, 16)
        && nonzero(parent_id)
        && hex(flags, 2);
    valid.then(|| TraceParent {
        trace_id: trace_id.to_ascii_lowercase(),
        parent_id: parent_id.to_ascii_lowercase(),
    })
}

/// The caller's span id of a `traceparent` value, when the header is valid.
pub fn parent_span_id(traceparent: &str) -> Option<String> {
    parse_traceparent(traceparent).map(|tp| tp.parent_id)
}

tokio::task_local! {
    /// The span id of the pipeline step running in this task: outbound requests name it as
    /// their parent.
    static CURRENT_STEP: u64;
}

/// The `traceparent` sent to an HTTP backend: this call's trace id, and as parent the span
/// of the step that sends it (the `forward` span), so the backend's spans hang under it.
/// Outside a step a fresh span id is used.
pub fn outbound_traceparent(trace_id: &str) -> String {
    let span = CURRENT_STEP
        .try_with(|id| *id)
        .unwrap_or_else(|_| random_span_id());
    format!("00-{trace_id}-{span:016x}-01")
}

fn random_span_id() -> u64 {
    rand::random::<u64>().max(1)
}

// ---------------------------------------------------------------------------------------------
// The handle

/// Span export for governed calls; disabled when no `otel_endpoint` is configured. Cheap to
/// clone.
#[derive(Clone, Default)]
pub struct Telemetry {
    exporter: Option<Arc<export::Exporter>>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("enabled", &self.exporter.is_some())
            .finish()
    }
}

impl Telemetry {
    /// No export: calls still get step timings.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Starts the exporter for `otel_endpoint`: `stdout` (OTLP/JSON lines on stderr, which
    /// stays free of the MCP stdio wire), an `http(s)://host:port` OTLP base URL (protobuf
    /// `POST …/v1/traces`), or a file path (OTLP/JSON lines, appended). The exporter thread
    /// opens its target before this returns, so a bad path or URL stops the start-up.
    ///
    /// `OTEL_BSP_MAX_QUEUE_SIZE` (spans, default 2048), `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`
    /// (default 512), `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` / `OTEL_EXPORTER_OTLP_TIMEOUT` (ms,
    /// default 5000) and `OTEL_SERVICE_NAME` are honoured. `redact` (`trace.redact`) is
    /// applied to the error messages spans quote, on the exporter's thread.
    pub async fn start(
        endpoint: &str,
        metrics: Arc<Metrics>,
        redact: Option<Arc<Redactor>>,
    ) -> Result<Telemetry, TelemetryError> {
        let exporter =
            export::Exporter::start(endpoint, export_resource(), metrics, redact).await?;
        Ok(Telemetry {
            exporter: Some(Arc::new(exporter)),
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.exporter.is_some()
    }

    /// Starts the spans of one call. `trace_id` is the call's (32 hex digits); the caller's
    /// span id comes from `ctx.parent_span_id`.
    pub fn call<'a>(
        &'a self,
        metrics: &'a Metrics,
        ctx: &RequestContext,
        trace_id: &str,
        tool: &str,
    ) -> CallSpan<'a> {
        let recording = self.exporter.as_ref().map(|_| {
            Box::new(Recording {
                trace_id: TraceId::from_hex(trace_id)
                    .ok()
                    .filter(|t| *t != TraceId::INVALID)
                    .unwrap_or_else(|| TraceId::from(rand::random::<u128>().max(1))),
                // A caller's span id is meaningful only with the trace id of its header.
                parent: ctx
                    .trace_id
                    .as_ref()
                    .and(ctx.parent_span_id.as_deref())
                    .and_then(|p| SpanId::from_hex(p).ok())
                    .unwrap_or(SpanId::INVALID),
                start_time: SystemTime::now(),
                tool: tool.to_owned(),
                ingress: ctx.ingress,
                session_id: ctx.session_id.clone(),
                steps: Vec::with_capacity(8),
                running: None,
                outcome: None,
                late: None,
                error: None,
            })
        });
        CallSpan {
            metrics,
            exporter: self.exporter.as_deref(),
            started: Instant::now(),
            recording,
        }
    }

    /// Waits (at most `within`) until every span handed over so far has been exported or
    /// dropped. False on time-out or when export is off.
    pub async fn flush(&self, within: Duration) -> bool {
        match &self.exporter {
            Some(e) => e.flush(within).await,
            None => false,
        }
    }

    /// Exports what is queued (waiting at most `within`) and stops the exporter thread. Spans
    /// of calls that end later are dropped and counted.
    pub async fn shutdown(&self, within: Duration) {
        if let Some(e) = &self.exporter {
            e.shutdown(within).await;
        }
    }
}

/// The resource of exported spans: `service.name` (or `OTEL_SERVICE_NAME`), the SDK's
/// `telemetry.sdk.*` and `OTEL_RESOURCE_ATTRIBUTES`.
fn export_resource() -> Resource {
    Resource::builder()
        .with_service_name(service_name())
        .build()
}

fn service_name() -> String {
    std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| SERVICE_NAME.to_owned())
}

fn scope() -> InstrumentationScope {
    InstrumentationScope::builder(SERVICE_NAME)
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

// ---------------------------------------------------------------------------------------------
// One call's spans

/// The spans of one governed call, built as it runs. Steps are timed (and become child spans
/// when export is on); the root span ends when this is dropped.
pub struct CallSpan<'a> {
    metrics: &'a Metrics,
    exporter: Option<&'a export::Exporter>,
    started: Instant,
    /// `None` when export is off: nothing is kept, nothing allocated.
    recording: Option<Box<Recording>>,
}

struct Recording {
    trace_id: TraceId,
    /// The caller's span (`traceparent`), or `INVALID`.
    parent: SpanId,
    start_time: SystemTime,
    tool: String,
    ingress: Ingress,
    session_id: String,
    steps: Vec<StepSpan>,
    /// The step under way: still here when the call is dropped during it.
    running: Option<StepSpan>,
    outcome: Option<Outcome>,
    /// Where a call dropped while it ran leaves its outcome (`LateOutcome`).
    late: Option<LateOutcome>,
    /// What stopped the call before it had a verdict.
    error: Option<String>,
}

/// The outcome of a call whose future was dropped while it ran, for its spans: the pipeline's
/// `Running` guard fills it from the trace entry it records, and the root span, sent when the
/// `CallSpan` drops just after, carries it like any other call's.
#[derive(Clone)]
pub struct LateOutcome(Arc<Mutex<Option<Outcome>>>);

impl LateOutcome {
    pub fn set(&self, entry: &TraceEntry) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(Outcome::of(entry));
    }

    fn take(&self) -> Option<Outcome> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

struct StepSpan {
    step: Step,
    span_id: SpanId,
    /// Offsets from the call's start.
    begun: Duration,
    took: Duration,
    error: Option<String>,
}

/// The root span as the trace entry describes it.
struct Outcome {
    span_id: SpanId,
    attributes: Vec<KeyValue>,
    status: Status,
}

impl Outcome {
    fn of(entry: &TraceEntry) -> Outcome {
        Outcome {
            span_id: root_span_id(&entry.trace_id, &entry.timestamp),
            attributes: span_attributes(entry),
            status: span_status(entry),
        }
    }
}

impl CallSpan<'_> {
    /// Runs one step: timed, under a `tracing` span, and as the current step for outbound
    /// trace context.
    pub async fn step<T>(&mut self, step: Step, work: impl Future<Output = T>) -> T {
        let work = work.instrument(tracing::debug_span!("step", step = step.as_str()));
        if self.recording.is_none() {
            // Export off: no span to name, so no span id (a backend's `traceparent` gets a
            // fresh one, as outside a step); only the step's time is kept, for `/metrics`.
            let at = Instant::now();
            let out = work.await;
            self.metrics.observe_step(step, at.elapsed());
            return out;
        }
        let span_id = random_span_id();
        let begun = self.started.elapsed();
        if let Some(rec) = &mut self.recording {
            rec.running = Some(StepSpan {
                step,
                span_id: SpanId::from(span_id),
                begun,
                took: Duration::ZERO,
                error: None,
            });
        }
        let at = Instant::now();
        let out = CURRENT_STEP.scope(span_id, work).await;
        let took = at.elapsed();
        self.metrics.observe_step(step, took);
        if let Some(rec) = &mut self.recording
            && let Some(mut done) = rec.running.take()
        {
            done.took = took;
            rec.steps.push(done);
        }
        out
    }

    /// Like [`step`](Self::step), for a fallible step: an error marks the step's span and is
    /// the call's error should nothing else be recorded.
    pub async fn try_step<T, E: Display>(
        &mut self,
        step: Step,
        work: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let out = self.step(step, work).await;
        if let (Err(e), Some(rec)) = (&out, &mut self.recording) {
            let message = e.to_string();
            if let Some(last) = rec.steps.last_mut() {
                last.error = Some(message.clone());
            }
            rec.error = Some(message);
        }
        out
    }

    /// The call's outcome, from its trace entry: the root span's attributes and status.
    pub fn outcome(&mut self, entry: &TraceEntry) {
        if let Some(rec) = &mut self.recording {
            rec.outcome = Some(Outcome::of(entry));
        }
    }

    /// Where the outcome goes should the call be dropped while it runs; `None` when export
    /// is off.
    pub fn late_outcome(&mut self) -> Option<LateOutcome> {
        let rec = self.recording.as_mut()?;
        Some(
            rec.late
                .get_or_insert_with(|| LateOutcome(Arc::new(Mutex::new(None))))
                .clone(),
        )
    }

    /// Ends the call's spans (dropping does the same; this names the moment).
    pub fn end(self) {}
}

impl Drop for CallSpan<'_> {
    fn drop(&mut self) {
        let (Some(exporter), Some(rec)) = (self.exporter, self.recording.take()) else {
            return;
        };
        exporter.submit(rec.into_spans(self.started.elapsed()));
    }
}

impl Recording {
    /// The root span and one child per step, in start order (root first).
    fn into_spans(self, elapsed: Duration) -> Vec<SpanData> {
        let Recording {
            trace_id,
            parent,
            start_time,
            tool,
            ingress,
            session_id,
            mut steps,
            running,
            outcome,
            late,
            error,
        } = self;
        if let Some(mut cut) = running {
            // The call was dropped during this step.
            cut.took = elapsed.saturating_sub(cut.begun);
            cut.error = Some("the call was dropped during this step".to_owned());
            steps.push(cut);
        }
        let outcome = outcome.or_else(|| late.and_then(|l| l.take()));
        let outcome = outcome.unwrap_or_else(|| {
            let message = error.unwrap_or_else(|| "the call ended before its verdict".to_owned());
            let mut attributes = vec![
                KeyValue::new("tool.name", tool.clone()),
                KeyValue::new("error.message", message.clone()),
            ];
            attributes.extend(convention_attributes(&tool, ingress.as_str(), &session_id));
            Outcome {
                span_id: SpanId::from(random_span_id()),
                attributes,
                status: Status::error(message),
            }
        });
        let root_id = outcome.span_id;
        let mut spans = Vec::with_capacity(steps.len() + 1);
        let mut root = span_data(
            SpanContext::new(
                trace_id,
                root_id,
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent,
            tool.into(),
            SpanKind::Client,
            (start_time, start_time + elapsed),
            outcome.attributes,
            outcome.status,
        );
        root.parent_span_is_remote = parent != SpanId::INVALID;
        spans.push(root);
        for s in steps {
            let status = match s.error {
                Some(message) => Status::error(message),
                None => Status::Unset,
            };
            spans.push(span_data(
                SpanContext::new(
                    trace_id,
                    s.span_id,
                    TraceFlags::SAMPLED,
                    false,
                    TraceState::default(),
                ),
                root_id,
                s.step.as_str().into(),
                SpanKind::Internal,
                (start_time + s.begun, start_time + s.begun + s.took),
                vec![KeyValue::new("mesh7.step", s.step.as_str())],
                status,
            ));
        }
        spans
    }
}

fn span_data(
    context: SpanContext,
    parent: SpanId,
    name: Cow<'static, str>,
    kind: SpanKind,
    (start, end): (SystemTime, SystemTime),
    attributes: Vec<KeyValue>,
    status: Status,
) -> SpanData {
    SpanData {
        span_context: context,
        parent_span_id: parent,
        parent_span_is_remote: false,
        span_kind: kind,
        name,
        start_time: start,
        end_time: end,
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: scope(),
    }
}

// ---------------------------------------------------------------------------------------------
// Trace entry → span

/// flux7's attributes of a call span (§8.5, in its order), then the MCP and GenAI semantic
/// conventions and mesh7's own.
pub fn span_attributes(e: &TraceEntry) -> Vec<KeyValue> {
    let mut a = vec![
        KeyValue::new("agent.id", e.agent_id.clone()),
        KeyValue::new("tool.name", e.tool.clone()),
        KeyValue::new("policy.action", e.policy.clone()),
        KeyValue::new("policy.rule", e.policy_rule.clone()),
        KeyValue::new("http.status_code", i64::from(e.status_code)),
    ];
    if !e.session_id.is_empty() {
        a.push(KeyValue::new("session.id", e.session_id.clone()));
    }
    if !e.error.is_empty() {
        a.push(KeyValue::new("error.message", e.error.clone()));
    }
    if !e.approval_id.is_empty() {
        a.push(KeyValue::new("approval.id", e.approval_id.clone()));
        a.push(KeyValue::new("approval.status", e.approval_status.clone()));
        if e.approval_ms > 0 {
            a.push(KeyValue::new(
                "approval.duration_ms",
                saturating_i64(e.approval_ms),
            ));
        }
        if !e.approved_by.is_empty() {
            a.push(KeyValue::new("approval.resolved_by", e.approved_by.clone()));
        }
    }
    if e.estimated_input_tokens > 0 {
        a.push(KeyValue::new(
            "llm.token.input",
            saturating_i64(e.estimated_input_tokens),
        ));
        a.push(KeyValue::new(
            "llm.token.output",
            saturating_i64(e.estimated_output_tokens),
        ));
    }
    a.extend(convention_attributes(&e.tool, &e.ingress, &e.session_id));
    a
}

/// `gen_ai.*` for every call; `mcp.*` for calls that came over MCP.
fn convention_attributes(tool: &str, ingress: &str, session_id: &str) -> Vec<KeyValue> {
    let mut a = vec![
        KeyValue::new("gen_ai.operation.name", "execute_tool"),
        KeyValue::new("gen_ai.tool.name", tool.to_owned()),
    ];
    if !ingress.is_empty() {
        a.push(KeyValue::new("mesh7.ingress", ingress.to_owned()));
    }
    if ingress.starts_with("mcp") {
        a.push(KeyValue::new("mcp.method.name", "tools/call"));
        if !session_id.is_empty() {
            a.push(KeyValue::new("mcp.session.id", session_id.to_owned()));
        }
    }
    a
}

/// flux7: an error, or a deny, is status 2 (with the error as message); anything else is 1.
fn span_status(e: &TraceEntry) -> Status {
    if !e.error.is_empty() || e.policy == "deny" {
        Status::error(e.error.clone())
    } else {
        Status::Ok
    }
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The root span id of a recorded call: FNV-1a over its trace id and timestamp, the two
/// fields that identify a trace record.
fn root_span_id(trace_id: &str, timestamp: &str) -> SpanId {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in trace_id.bytes().chain([0]).chain(timestamp.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    SpanId::from(h.max(1))
}

/// One OTLP/JSON export object for trace entries (`GET /otel-traces`): one resource
/// (`service.name` only), one scope, one span per entry. A span ends at the entry's timestamp
/// and starts `latency_ms` before it; an entry whose trace id is not 32 hex digits gets a
/// random one (flux7).
pub fn otlp_json(entries: &[TraceEntry]) -> Value {
    let spans: Vec<SpanData> = entries.iter().map(entry_span).collect();
    let resource = ResourceAttributesWithSchema::from(
        &Resource::builder_empty()
            .with_service_name(service_name())
            .build(),
    );
    let mut resource_spans = group_spans_by_resource_and_scope(spans, &resource);
    // No spans means no scope in the grouping; flux7 still shows its one scope.
    for rs in &mut resource_spans {
        if rs.scope_spans.is_empty() {
            rs.scope_spans.push(ScopeSpans {
                scope: Some((scope(), None).into()),
                spans: Vec::new(),
                schema_url: String::new(),
            });
        }
    }
    serde_json::to_value(ExportTraceServiceRequest { resource_spans }).unwrap_or(Value::Null)
}

fn entry_span(e: &TraceEntry) -> SpanData {
    let trace_id = TraceId::from_hex(&e.trace_id)
        .ok()
        .filter(|t| e.trace_id.len() == 32 && *t != TraceId::INVALID)
        .unwrap_or_else(|| TraceId::from(rand::random::<u128>().max(1)));
    let end = chrono::DateTime::parse_from_rfc3339(&e.timestamp)
        .map_or_else(|_| SystemTime::now(), SystemTime::from);
    let start = end
        .checked_sub(Duration::from_millis(e.latency_ms))
        .unwrap_or(end);
    span_data(
        SpanContext::new(
            trace_id,
            root_span_id(&e.trace_id, &e.timestamp),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        SpanId::INVALID,
        e.tool.clone().into(),
        SpanKind::Client,
        (start, end),
        span_attributes(e),
        span_status(e),
    )
}
