//! OpenTelemetry export of `mesh7 serve` (`otel_endpoint`) against a real OTLP/HTTP receiver
//! started by the test, which decodes what it gets with the official OTLP protobuf definitions:
//! span names, attributes and parent links, the outcome of an approval, W3C trace context in
//! (HTTP and MCP) and out (HTTP backends), a collector that never answers, the OTLP/JSON file
//! and stderr forms, and `GET /otel-traces`.

mod common;
#[allow(dead_code, unreachable_pub)] // shared helpers: each test file uses part of them
mod openapi_support;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use common::{Daemon, wait_for};
use openapi_support::Backend;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);
const STEPS: [&str; 6] = [
    "authenticate",
    "resolve",
    "evaluate",
    "rate_limit",
    "forward",
    "trace",
];

/// A real OTLP/HTTP trace receiver on 127.0.0.1. Each `POST /v1/traces` protobuf body is
/// decoded and handed to the test; `answering: false` takes requests and never answers.
struct Collector {
    url: String,
    requests: mpsc::Receiver<ExportTraceServiceRequest>,
    /// Everything received so far: (resource attributes, span).
    seen: Vec<(Vec<KeyValue>, Span)>,
}

impl Collector {
    fn start(answering: bool) -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, requests) = mpsc::channel();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let tx = tx.clone();
                std::thread::spawn(move || serve_otlp(conn, &tx, answering));
            }
        });
        Collector {
            url,
            requests,
            seen: Vec::new(),
        }
    }

    /// Waits for the first export request.
    fn first_request(&self) -> ExportTraceServiceRequest {
        self.requests
            .recv_timeout(WAIT)
            .expect("the collector received nothing")
    }

    /// Collects spans until those of `trace_id` satisfy `done`; returns them.
    fn trace(&mut self, trace_id: &str, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let deadline = Instant::now() + WAIT;
        loop {
            let spans: Vec<Span> = self
                .seen
                .iter()
                .map(|(_, s)| s)
                .filter(|s| hex(&s.trace_id) == trace_id)
                .cloned()
                .collect();
            if done(&spans) {
                return spans;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let req = self.requests.recv_timeout(left).unwrap_or_else(|_| {
                panic!("trace {trace_id} incomplete at the collector: {spans:#?}")
            });
            for rs in req.resource_spans {
                let resource = rs.resource.map(|r| r.attributes).unwrap_or_default();
                for ss in rs.scope_spans {
                    for span in ss.spans {
                        self.seen.push((resource.clone(), span));
                    }
                }
            }
        }
    }

    /// A call's root span and its step spans, once every expected step has arrived.
    fn call(&mut self, trace_id: &str, steps: &[&str]) -> (Span, Vec<Span>) {
        let spans = self.trace(trace_id, |spans| {
            spans.iter().any(|s| s.kind == 3)
                && steps.iter().all(|n| spans.iter().any(|s| s.name == *n))
        });
        let root = spans
            .iter()
            .find(|s| s.kind == 3)
            .expect("root span")
            .clone();
        let children = spans.into_iter().filter(|s| s.kind != 3).collect();
        (root, children)
    }
}

fn serve_otlp(conn: TcpStream, tx: &mpsc::Sender<ExportTraceServiceRequest>, answering: bool) {
    let mut writer = conn.try_clone().expect("clone stream");
    let mut reader = BufReader::new(conn);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0;
        let mut content_type = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                match k.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = v.trim().parse().unwrap_or(0),
                    "content-type" => v.trim().clone_into(&mut content_type),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let is_export = request_line.starts_with("POST /v1/traces ")
            && content_type == "application/x-protobuf";
        let decoded = ExportTraceServiceRequest::decode(body.as_slice());
        let status = match (is_export, decoded) {
            (true, Ok(req)) => {
                let _ = tx.send(req);
                "200 OK"
            }
            _ => "400 Bad Request",
        };
        if !answering {
            // Hold the connection until the exporter gives up on it.
            let _ = reader.read_to_end(&mut Vec::new());
            return;
        }
        let answer = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n"
        );
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attr(attrs: &[KeyValue], key: &str) -> Option<Any> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.clone()?.value)
}

fn s(v: &str) -> Option<Any> {
    Some(Any::StringValue(v.to_owned()))
}

fn config(otel_endpoint: &str) -> String {
    format!(
        r#"
otel_endpoint: "{otel_endpoint}"
cli_tools:
  - name: echo
    bin: echo
    bare: {{ timeout: 5s }}
  - name: ls
    bin: ls
    bare: {{ timeout: 5s }}
policies:
  - name: ops
    agent: ops-bot
    rules:
      - tools: ["echo.run"]
        action: deny
  - name: everyone
    agent: "*"
    rules:
      - tools: ["echo.run"]
        action: allow
      - tools: ["ls.run"]
        action: human_approval
"#
    )
}

fn nanos(t: SystemTime) -> u64 {
    u64::try_from(
        t.duration_since(SystemTime::UNIX_EPOCH)
            .expect("after 1970")
            .as_nanos(),
    )
    .expect("fits u64")
}

#[test]
fn a_call_is_one_span_with_flux7_attributes_and_a_child_per_step() {
    let mut collector = Collector::start(true);
    let d = Daemon::start(&config(&collector.url));
    let (status, body) = d.call("claude", "echo.run", &json!({"args": ["hi"]}));
    assert_eq!(status, 200, "{body}");
    let trace_id = body["trace_id"].as_str().unwrap();

    let (root, children) = collector.call(trace_id, &STEPS);
    assert_eq!(root.name, "echo.run");
    assert!(root.parent_span_id.is_empty(), "no caller span");
    let a = &root.attributes;
    let cases = [
        ("agent.id", s("claude")),
        ("tool.name", s("echo.run")),
        ("policy.action", s("allow")),
        ("policy.rule", s("everyone")),
        ("http.status_code", Some(Any::IntValue(200))),
        ("gen_ai.tool.name", s("echo.run")),
        ("mesh7.ingress", s("http")),
        ("mcp.method.name", None),
    ];
    for (key, want) in cases {
        assert_eq!(attr(a, key), want, "{key}");
    }
    assert!(matches!(attr(a, "llm.token.input"), Some(Any::IntValue(n)) if n > 0));
    assert_eq!(root.status.as_ref().map(|st| st.code), Some(1));
    let resource = &collector
        .seen
        .iter()
        .find(|(_, sp)| sp.span_id == root.span_id)
        .expect("root seen")
        .0;
    assert_eq!(attr(resource, "service.name"), s("mesh7"));

    let mut names: Vec<&str> = children.iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    let mut want = STEPS.to_vec();
    want.sort_unstable();
    assert_eq!(names, want);
    for child in &children {
        assert_eq!(child.parent_span_id, root.span_id, "{}", child.name);
        assert!(child.start_time_unix_nano >= root.start_time_unix_nano);
        assert!(child.end_time_unix_nano <= root.end_time_unix_nano);
    }

    // The control plane's OTLP view names the same span.
    let (status, doc) = d.get("/otel-traces?tool=echo.run&limit=1", None);
    assert_eq!(status, 200);
    let view = &doc["resourceSpans"][0]["scopeSpans"][0]["spans"];
    assert_eq!(view.as_array().unwrap().len(), 1);
    assert_eq!(view[0]["traceId"], trace_id);
    assert_eq!(view[0]["spanId"], hex(&root.span_id));

    // A denial is an error span with the reason.
    let (status, body) = d.call("ops-bot", "echo.run", &json!({"args": ["hi"]}));
    assert_eq!(status, 403, "{body}");
    let (root, _) = collector.call(body["trace_id"].as_str().unwrap(), &[]);
    let st = root.status.expect("status");
    assert_eq!(
        (st.code, st.message.as_str()),
        (2, "policy=ops tool=echo.run action=deny")
    );
    assert_eq!(attr(&root.attributes, "policy.action"), s("deny"));
}

#[test]
fn an_approved_call_span_ends_after_the_approval_with_its_outcome() {
    let mut collector = Collector::start(true);
    let d = Daemon::start(&config(&collector.url));
    let url = format!("{}/tool/ls.run", d.url);
    let waiting = std::thread::spawn(move || {
        let resp = reqwest::blocking::Client::builder()
            .timeout(WAIT)
            .build()
            .unwrap()
            .post(url)
            .header("Authorization", "Bearer agent:claude")
            .json(&json!({"params": {"args": ["-d", "."]}}))
            .send()
            .expect("blocking call");
        let status = resp.status().as_u16();
        (status, resp.json::<Value>().expect("json"))
    });
    let (id, _) = wait_for(WAIT, || {
        let (_, pending) = d.get("/approvals?status=pending", None);
        pending[0]["id"].as_str().map(str::to_owned)
    })
    .expect("the call never reached the approval queue");
    let approved_at = nanos(SystemTime::now());
    let (status, _) = d.post(&format!("/approvals/{id}/approve"), None, "");
    assert_eq!(status, 200);
    let (status, body) = waiting.join().unwrap();
    assert_eq!(status, 200, "{body}");

    let (root, children) = collector.call(
        body["trace_id"].as_str().unwrap(),
        &["approval", "forward", "trace"],
    );
    let a = &root.attributes;
    assert_eq!(attr(a, "policy.action"), s("human_approval"));
    assert_eq!(attr(a, "approval.id"), s(&id));
    assert_eq!(attr(a, "approval.status"), s("approved"));
    assert!(matches!(attr(a, "approval.duration_ms"), Some(Any::IntValue(n)) if n > 0));
    assert!(
        root.end_time_unix_nano >= approved_at,
        "the span outlived the wait"
    );
    let approval = children.iter().find(|c| c.name == "approval").unwrap();
    assert!(approval.end_time_unix_nano >= approved_at);
    let forward = children.iter().find(|c| c.name == "forward").unwrap();
    assert!(forward.start_time_unix_nano >= approval.end_time_unix_nano);
}

const ECHO_SPEC: &str = r#"
openapi: 3.1.0
info: {title: echo, version: "1"}
paths:
  /items/{itemId}:
    get:
      operationId: getItem
      parameters:
        - {name: itemId, in: path, required: true, schema: {type: integer}}
"#;

#[test]
fn a_callers_traceparent_parents_the_call_over_http_and_mcp_and_reaches_the_backend() {
    let mut collector = Collector::start(true);
    let backend = Backend::start(&[]);
    let yaml = format!(
        "{}openapi:\n  - file: echo.yaml\n    backend_url: {}\n",
        config(&collector.url).replace(
            "      - tools: [\"ls.run\"]",
            "      - tools: [\"get_item\"]\n        action: allow\n      - tools: [\"ls.run\"]"
        ),
        backend.url
    );
    let d = Daemon::start_with(&yaml, &[], |dir| {
        std::fs::write(dir.join("echo.yaml"), ECHO_SPEC).unwrap();
    });

    // HTTP: the call's span is a child of the caller's, and the backend's parent is the
    // call's forward span.
    let (trace_id, caller) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let (status, body) = d.post_with(
        "/tool/get_item",
        &[
            ("Authorization", "Bearer agent:claude"),
            ("Traceparent", &format!("00-{trace_id}-{caller}-01")),
        ],
        &json!({"params": {"itemId": 7}}).to_string(),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["trace_id"], trace_id);
    let (root, children) = collector.call(trace_id, &STEPS);
    assert_eq!(root.name, "get_item");
    assert_eq!(hex(&root.parent_span_id), caller);
    let forward = children.iter().find(|c| c.name == "forward").unwrap();
    assert_eq!(
        body["result"]["headers"]["traceparent"],
        format!("00-{trace_id}-{}-01", hex(&forward.span_id))
    );

    // MCP: `params._meta.traceparent`, with the MCP conventions on the span.
    let (trace_id, caller) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let mcp = |session: Option<&str>, body: &str| {
        let mut req = reqwest::blocking::Client::new()
            .post(format!("{}/mcp", d.url))
            .header("Authorization", "Bearer agent:claude")
            .header("Content-Type", "application/json")
            .header("Accept", "application/json, text/event-stream")
            .body(body.to_owned());
        if let Some(id) = session {
            req = req.header("Mcp-Session-Id", id);
        }
        req.send().expect("POST /mcp")
    };
    let init = mcp(
        None,
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#,
    );
    assert_eq!(init.status(), 200);
    let session = init.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "echo.run", "arguments": {"args": ["hi"]},
        "_meta": {"traceparent": format!("00-{trace_id}-{caller}-01")},
    }});
    let answer: Value = mcp(Some(&session), &call.to_string()).json().unwrap();
    assert_eq!(answer["result"]["isError"], false, "{answer}");
    let (root, _) = collector.call(trace_id, &STEPS);
    assert_eq!(hex(&root.parent_span_id), caller);
    let a = &root.attributes;
    assert_eq!(attr(a, "mcp.method.name"), s("tools/call"));
    assert_eq!(attr(a, "mcp.session.id"), s(&session));
    assert_eq!(attr(a, "gen_ai.tool.name"), s("echo.run"));
    assert_eq!(attr(a, "mesh7.ingress"), s("mcp-http"));
}

#[test]
fn a_call_dropped_while_it_runs_keeps_its_outcome_and_the_step_it_was_in() {
    let mut collector = Collector::start(true);
    let yaml = config(&collector.url)
        .replace(
            "cli_tools:\n",
            "cli_tools:\n  - name: sleep\n    bin: sleep\n    bare: { timeout: 20s }\n",
        )
        .replace(
            "      - tools: [\"ls.run\"]",
            "      - tools: [\"sleep.run\"]\n        action: allow\n      - tools: [\"ls.run\"]",
        );
    let d = Daemon::start(&yaml);
    let trace_id = "5bf92f3577b34da6a3ce929d0e0e4737";
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    d.post_and_leave(
        "/tool/sleep.run",
        &[
            ("Authorization", "Bearer agent:claude"),
            ("Traceparent", &traceparent),
        ],
        r#"{"params":{"args":["20"]}}"#,
    );

    // The root span says what the trace entry says, as for any call; before, it only said
    // that the call ended before its verdict.
    let (root, children) = collector.call(trace_id, &["forward"]);
    let a = &root.attributes;
    let cases = [
        ("agent.id", s("claude")),
        ("policy.action", s("allow")),
        ("policy.rule", s("everyone")),
        ("http.status_code", Some(Any::IntValue(499))),
    ];
    for (key, want) in cases {
        assert_eq!(attr(a, key), want, "{key}");
    }
    let st = root.status.expect("status");
    assert_eq!(
        (st.code, st.message.as_str()),
        (2, "cancelled: the caller went away while the call ran")
    );
    // The step it was in ends with it, marked.
    let forward = children
        .iter()
        .find(|c| c.name == "forward")
        .expect("forward");
    let st = forward.status.clone().expect("status");
    assert_eq!(
        (st.code, st.message.as_str()),
        (2, "the call was dropped during this step")
    );
    assert!(forward.end_time_unix_nano <= root.end_time_unix_nano);
}

fn dropped(d: &Daemon) -> u64 {
    d.metric("mesh7_otel_spans_dropped_total")
}

#[test]
fn a_collector_that_never_answers_costs_calls_nothing_and_drops_are_counted() {
    let collector = Collector::start(false);
    // Room for one call's 7 spans; the export waits on the collector far longer than the test.
    let d = Daemon::start_with(
        &config(&collector.url),
        &[
            ("OTEL_BSP_MAX_QUEUE_SIZE", "10"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "120000"),
        ],
        |_| {},
    );
    // Distinct arguments: loop detection stays out of it.
    let call = |n: u32| d.call("claude", "echo.run", &json!({"args": [n.to_string()]}));
    assert_eq!(call(0).0, 200);
    // The exporter is now stuck on the collector with the first call's spans.
    let first = collector.first_request();
    assert_eq!(first.resource_spans[0].scope_spans[0].spans.len(), 7);
    // These calls answer while it is stuck: the second fills the queue, the others are dropped.
    for n in 1..=3 {
        let (status, body) = call(n);
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(dropped(&d), 14);
}

#[test]
fn a_failing_export_is_counted_as_dropped() {
    // A port with nothing listening: every export fails.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let d = Daemon::start_with(
        &config(&url),
        &[("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "1000")],
        |_| {},
    );
    let (status, _) = d.call("claude", "echo.run", &json!({"args": ["hi"]}));
    assert_eq!(status, 200);
    let (n, _) = wait_for(WAIT, || Some(dropped(&d)).filter(|n| *n > 0))
        .expect("the failed export was never counted");
    assert_eq!(n, 7);
}

fn otlp_json_calls(text: &str) -> Vec<ExportTraceServiceRequest> {
    text.lines()
        .filter(|l| l.starts_with("{\"resourceSpans\""))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not OTLP/JSON ({e}): {l}")))
        .collect()
}

fn assert_one_call(doc: &ExportTraceServiceRequest, trace_id: &str) {
    let spans = &doc.resource_spans[0].scope_spans[0].spans;
    assert_eq!(spans.len(), 7, "{spans:#?}");
    assert_eq!(spans[0].name, "echo.run");
    assert!(spans.iter().all(|sp| hex(&sp.trace_id) == trace_id));
}

#[test]
fn the_file_form_appends_one_otlp_json_document_per_call() {
    let mut d = Daemon::start(&config("{dir}/spans.jsonl"));
    let (_, body) = d.call("claude", "echo.run", &json!({"args": ["hi"]}));
    let trace_id = body["trace_id"].as_str().unwrap().to_owned();
    let path = d.path("spans.jsonl");
    let (docs, _) = wait_for(WAIT, || {
        let text = std::fs::read_to_string(&path).ok()?;
        Some(otlp_json_calls(&text)).filter(|docs| !docs.is_empty())
    })
    .expect("no OTLP/JSON line in the file");
    assert_eq!(docs.len(), 1);
    assert_one_call(&docs[0], &trace_id);
    // Raw JSON keeps the OTLP/JSON encoding: hex ids, nanoseconds as strings.
    let text = std::fs::read_to_string(&path).unwrap();
    let raw: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let span = &raw["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
    assert_eq!(span["traceId"], trace_id.as_str());
    assert!(span["endTimeUnixNano"].is_string(), "{span}");
    assert!(d.terminate().success());
}

#[test]
fn the_stdout_form_writes_otlp_json_lines_on_stderr() {
    let mut d = Daemon::start(&config("stdout"));
    let (_, body) = d.call("claude", "echo.run", &json!({"args": ["hi"]}));
    let trace_id = body["trace_id"].as_str().unwrap().to_owned();
    assert!(d.terminate().success());
    let docs = otlp_json_calls(&d.stderr_text());
    assert_eq!(docs.len(), 1, "one document for one call");
    assert_one_call(&docs[0], &trace_id);
}

#[test]
fn otel_traces_filters_and_limits_the_ring_and_needs_the_control_plane() {
    let d = Daemon::start_with(&config(""), &[("MESH_ADMIN_TOKEN", "t0k")], |_| {});
    let admin = Some("Bearer t0k");
    for agent in ["a", "b", "a"] {
        d.call(agent, "echo.run", &json!({"args": [agent]}));
    }
    let (status, body) = d.get("/otel-traces", None);
    assert_eq!(
        (status, body),
        (
            401,
            json!({"error": "control plane requires admin authorization"})
        )
    );
    let spans = |query: &str| {
        let (status, doc) = d.get(&format!("/otel-traces{query}"), admin);
        assert_eq!(status, 200, "{doc}");
        let scopes = doc["resourceSpans"][0]["scopeSpans"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(scopes.len(), 1, "{doc}");
        scopes[0]["spans"].as_array().unwrap().clone()
    };
    let cases: [(&str, usize); 5] = [
        ("", 3),
        ("?agent=a", 2),
        ("?agent=a&limit=1", 1),
        ("?tool=nope", 0),
        ("?agent=b&tool=echo.run", 1),
    ];
    for (query, want) in cases {
        assert_eq!(spans(query).len(), want, "{query}");
    }
    let latest = &spans("?limit=1")[0];
    let agent = latest["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|kv| kv["key"] == "agent.id")
        .unwrap();
    assert_eq!(agent["value"]["stringValue"], "a", "most recent first");
    let (status, _) = d.get("/otel-traces?limit=0", admin);
    assert_eq!(status, 400);
}
