//! Unit tests of the telemetry module: W3C parsing, span building and the OTLP/JSON shapes.

use std::sync::Arc;
use std::time::Duration;

use mesh7_actors::trace::{Redactor, TraceEntry};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::json;

use super::export::Target;
use super::*;

#[test]
fn traceparent_is_parsed_as_w3c_says() {
    let id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let cases: [(&str, Option<(&str, &str)>); 10] = [
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            Some((id, "00f067aa0ba902b7")),
        ),
        (
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-00",
            Some((id, "00f067aa0ba902b7")),
        ),
        // A later version may carry more fields.
        (
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            Some((id, "00f067aa0ba902b7")),
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            None,
        ),
        (
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            None,
        ),
        (
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            None,
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            None,
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            None,
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
            None,
        ),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", None),
    ];
    for (header, want) in cases {
        let got = parse_traceparent(header);
        let got = got
            .as_ref()
            .map(|t| (t.trace_id.as_str(), t.parent_id.as_str()));
        assert_eq!(got, want, "{header}");
    }
}

#[test]
fn endpoint_forms_are_told_apart() {
    let cases = [
        ("stdout", Target::Stderr),
        (
            "http://127.0.0.1:4318",
            Target::Otlp("http://127.0.0.1:4318/v1/traces".to_owned()),
        ),
        (
            "http://collector:4318/",
            Target::Otlp("http://collector:4318/v1/traces".to_owned()),
        ),
        (
            "http://collector:4318/v1/traces",
            Target::Otlp("http://collector:4318/v1/traces".to_owned()),
        ),
        ("spans.jsonl", Target::File("spans.jsonl".into())),
    ];
    for (endpoint, want) in cases {
        assert_eq!(Target::parse(endpoint).unwrap(), want, "{endpoint}");
    }
    // https: an OTLP endpoint, or refused at start-up by a build without TLS.
    let https = Target::parse("https://collector:4318");
    if cfg!(feature = "tls") {
        assert_eq!(
            https.unwrap(),
            Target::Otlp("https://collector:4318/v1/traces".to_owned())
        );
    } else {
        let err = https.unwrap_err().to_string();
        assert!(err.contains("tls"), "{err}");
    }
}

fn entry() -> TraceEntry {
    TraceEntry {
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".to_owned(),
        session_id: "s1".to_owned(),
        agent_id: "claude".to_owned(),
        tool: "fs.write".to_owned(),
        policy: "human_approval".to_owned(),
        policy_rule: "writes".to_owned(),
        status_code: 200,
        latency_ms: 1500,
        timestamp: "2026-01-02T03:04:05.5Z".to_owned(),
        approval_id: "abcdef0123456789".to_owned(),
        approval_status: "approved".to_owned(),
        approved_by: "http:127.0.0.1:5000".to_owned(),
        approval_ms: 1400,
        estimated_input_tokens: 7,
        estimated_output_tokens: 3,
        ingress: "mcp-http".to_owned(),
        ..TraceEntry::default()
    }
}

fn keys(attrs: &[KeyValue]) -> Vec<String> {
    attrs.iter().map(|kv| kv.key.to_string()).collect()
}

#[test]
fn attributes_follow_flux7_then_the_conventions() {
    let all = span_attributes(&entry());
    assert_eq!(
        keys(&all),
        [
            "agent.id",
            "tool.name",
            "policy.action",
            "policy.rule",
            "http.status_code",
            "session.id",
            "approval.id",
            "approval.status",
            "approval.duration_ms",
            "approval.resolved_by",
            "llm.token.input",
            "llm.token.output",
            "gen_ai.operation.name",
            "gen_ai.tool.name",
            "mesh7.ingress",
            "mcp.method.name",
            "mcp.session.id",
        ]
    );
    let bare = TraceEntry {
        policy: "deny".to_owned(),
        error: "policy=p tool=t action=deny".to_owned(),
        ..TraceEntry::default()
    };
    assert_eq!(
        keys(&span_attributes(&bare)),
        [
            "agent.id",
            "tool.name",
            "policy.action",
            "policy.rule",
            "http.status_code",
            "error.message",
            "gen_ai.operation.name",
            "gen_ai.tool.name",
        ]
    );
    assert_eq!(
        span_status(&bare),
        Status::error("policy=p tool=t action=deny")
    );
    assert_eq!(span_status(&entry()), Status::Ok);
}

#[test]
fn otel_traces_json_has_the_flux7_shape_and_the_recorded_span_id() {
    let e = entry();
    let doc = otlp_json(std::slice::from_ref(&e));
    let rs = &doc["resourceSpans"][0];
    assert_eq!(
        rs["resource"]["attributes"],
        json!([{"key": "service.name", "value": {"stringValue": SERVICE_NAME}}])
    );
    let scope_spans = rs["scopeSpans"].as_array().unwrap();
    assert_eq!(scope_spans.len(), 1);
    assert_eq!(scope_spans[0]["scope"]["name"], SERVICE_NAME);
    let span = &scope_spans[0]["spans"][0];
    assert_eq!(span["traceId"], e.trace_id);
    assert_eq!(
        span["spanId"],
        format!("{}", root_span_id(&e.trace_id, &e.timestamp))
    );
    assert_eq!(span["name"], "fs.write");
    assert_eq!(span["kind"], 3);
    assert_eq!(span["endTimeUnixNano"], "1767323045500000000");
    assert_eq!(span["startTimeUnixNano"], "1767323044000000000");
    assert_eq!(span["status"]["code"], 1);
    assert_eq!(
        span["attributes"][4],
        json!({"key": "http.status_code", "value": {"intValue": "200"}})
    );

    let empty = otlp_json(&[]);
    assert_eq!(
        empty["resourceSpans"][0]["scopeSpans"][0]["spans"],
        json!([])
    );
}

#[test]
fn a_malformed_trace_id_gets_a_random_one() {
    let e = TraceEntry {
        trace_id: "not-hex".to_owned(),
        ..entry()
    };
    let doc = otlp_json(&[e]);
    let id = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
}

/// Starts export to a JSON file and returns what one call wrote.
async fn export_one(
    ctx: RequestContext,
    run: impl AsyncFnOnce(&mut CallSpan<'_>),
) -> (Vec<Span>, Arc<Metrics>) {
    export_one_redacted(ctx, None, run).await
}

async fn export_one_redacted(
    ctx: RequestContext,
    redact: Option<Arc<Redactor>>,
    run: impl AsyncFnOnce(&mut CallSpan<'_>),
) -> (Vec<Span>, Arc<Metrics>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spans.jsonl");
    let metrics = Arc::new(Metrics::default());
    let telemetry = Telemetry::start(path.to_str().unwrap(), metrics.clone(), redact)
        .await
        .unwrap();
    {
        let mut spans = telemetry.call(&metrics, &ctx, "4bf92f3577b34da6a3ce929d0e0e4736", "t");
        run(&mut spans).await;
    }
    assert!(telemetry.flush(Duration::from_secs(10)).await);
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "one document per call: {text}");
    let doc: ExportTraceServiceRequest = serde_json::from_str(lines[0]).unwrap();
    let spans = doc.resource_spans[0].scope_spans[0].spans.clone();
    telemetry.shutdown(Duration::from_secs(10)).await;
    (spans, metrics)
}

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a Any> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

#[tokio::test]
async fn a_call_is_one_root_span_with_a_child_per_step_under_the_callers_span() {
    let ctx = RequestContext {
        trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".to_owned()),
        parent_span_id: Some("00f067aa0ba902b7".to_owned()),
        ..RequestContext::default()
    };
    let mut outbound = String::new();
    let (spans, metrics) = export_one(ctx, async |s| {
        s.step(Step::Evaluate, async {}).await;
        outbound = s
            .step(Step::Forward, async {
                outbound_traceparent("4bf92f3577b34da6a3ce929d0e0e4736")
            })
            .await;
        s.outcome(&TraceEntry {
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".to_owned(),
            tool: "t".to_owned(),
            policy: "allow".to_owned(),
            timestamp: "2026-01-02T03:04:05Z".to_owned(),
            ..TraceEntry::default()
        });
    })
    .await;
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["t", "evaluate", "forward"]);
    let root = &spans[0];
    assert_eq!(
        hex::encode(&root.trace_id),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(hex::encode(&root.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(
        hex::encode(&root.span_id),
        format!(
            "{}",
            root_span_id("4bf92f3577b34da6a3ce929d0e0e4736", "2026-01-02T03:04:05Z")
        )
    );
    for child in &spans[1..] {
        assert_eq!(child.trace_id, root.trace_id);
        assert_eq!(child.parent_span_id, root.span_id);
        assert!(child.start_time_unix_nano >= root.start_time_unix_nano);
        assert!(child.end_time_unix_nano <= root.end_time_unix_nano);
    }
    // The backend is told the forward span is its parent.
    let forward = hex::encode(&spans[2].span_id);
    assert_eq!(
        outbound,
        format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{forward}-01")
    );
    assert_eq!(
        attr(root, "policy.action"),
        Some(&Any::StringValue("allow".to_owned()))
    );
    assert_eq!(metrics.otel_dropped_total(), 0);
    let text = metrics.render(&crate::metrics::Scrape::default());
    assert!(text.contains("mesh7_otel_spans_exported_total 3"), "{text}");
    assert!(
        text.contains("mesh7_step_duration_seconds_count{step=\"forward\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn a_call_stopped_by_an_error_still_ends_its_span_with_the_error() {
    let (spans, _) = export_one(RequestContext::default(), async |s| {
        let failed: Result<(), String> = s
            .try_step(Step::Resolve, async { Err("unknown tool: t".to_owned()) })
            .await;
        assert!(failed.is_err());
    })
    .await;
    assert_eq!(spans.len(), 2);
    let (root, resolve) = (&spans[0], &spans[1]);
    assert!(root.parent_span_id.is_empty(), "no caller span");
    for span in [root, resolve] {
        let status = span.status.as_ref().unwrap();
        assert_eq!(status.code, 2, "{}", span.name);
        assert_eq!(status.message, "unknown tool: t");
    }
    assert_eq!(
        attr(root, "error.message"),
        Some(&Any::StringValue("unknown tool: t".to_owned()))
    );
}

#[tokio::test]
async fn exported_errors_are_redacted_like_the_trace() {
    let cfg = mesh7_config::RedactConfig {
        keys: Vec::new(),
        values: vec!["sk-live-[0-9]+".to_owned()],
    };
    let rules = mesh7_config::redact::RedactRules::compile(&cfg).unwrap();
    let redactor = Redactor::new(rules, Some("a key of sixteen bytes or more")).map(Arc::new);
    let (spans, _) = export_one_redacted(RequestContext::default(), redactor, async |s| {
        let failed: Result<(), String> = s
            .try_step(Step::Forward, async {
                Err("backend refused key sk-live-12345".to_owned())
            })
            .await;
        assert!(failed.is_err());
    })
    .await;
    assert_eq!(spans.len(), 2);
    for span in &spans {
        let message = &span.status.as_ref().unwrap().message;
        assert!(
            message.starts_with("backend refused key [redacted:"),
            "{message}"
        );
    }
    let Some(Any::StringValue(quoted)) = attr(&spans[0], "error.message") else {
        panic!("no error.message on {:?}", spans[0]);
    };
    assert!(!quoted.contains("sk-live"), "{quoted}");
}

#[tokio::test]
async fn an_abandoned_call_ends_as_such() {
    let (spans, _) = export_one(RequestContext::default(), async |_| {}).await;
    let status = spans[0].status.as_ref().unwrap();
    assert_eq!(
        (status.code, status.message.as_str()),
        (2, "the call ended before its verdict")
    );
}

#[tokio::test]
async fn without_an_endpoint_steps_are_timed_and_nothing_is_kept() {
    let metrics = Metrics::default();
    let telemetry = Telemetry::disabled();
    let mut spans = telemetry.call(&metrics, &RequestContext::default(), "x", "t");
    spans.step(Step::Approval, async {}).await;
    assert!(spans.recording.is_none());
    spans.end();
    let text = metrics.render(&crate::metrics::Scrape::default());
    assert!(
        text.contains("mesh7_step_duration_seconds_count{step=\"approval\"} 1"),
        "{text}"
    );
    assert!(!telemetry.flush(Duration::from_secs(1)).await);
}

#[test]
fn outside_a_step_the_outbound_parent_is_fresh() {
    let a = outbound_traceparent("4bf92f3577b34da6a3ce929d0e0e4736");
    let b = outbound_traceparent("4bf92f3577b34da6a3ce929d0e0e4736");
    assert_ne!(a, b);
    assert!(parse_traceparent(&a).is_some(), "{a}");
}
