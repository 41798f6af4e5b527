//! Black-box tests of the MCP Streamable HTTP endpoint (`POST`/`GET`/`DELETE /mcp`) of `mesh7
//! serve`: the official Python SDK, the MCP Inspector CLI, the MCP conformance suite, and raw
//! requests for sessions, identity binding, the notification stream's refusals and the
//! DNS-rebinding guard.

mod common;
#[allow(dead_code, unreachable_pub)] // shared helpers: each test file uses part of them
mod mcp_support;

use common::Daemon;
use mcp_support::{GOVERNED, INSPECT_ECHO_HI, run_conformance, run_inspector, run_python_client};
use serde_json::{Value, json};

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
const PING: &str = r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#;

type Headers<'a> = &'a [(&'a str, &'a str)];

struct Answer {
    status: u16,
    session: Option<String>,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

fn send(method: reqwest::Method, url: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let mut req = reqwest::blocking::Client::new()
        .request(method, url)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .body(body.to_owned());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let session = headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Answer {
        status,
        session,
        headers,
        body: resp.text().expect("body"),
    }
}

fn post(d: &Daemon, headers: &[(&str, &str)], body: &str) -> Answer {
    send(
        reqwest::Method::POST,
        &format!("{}/mcp", d.url),
        headers,
        body,
    )
}

/// Initializes a session as `authorization`; returns its id.
fn session(d: &Daemon, authorization: &str) -> String {
    let a = post(d, &[("Authorization", authorization)], INIT);
    assert_eq!(a.status, 200, "{}", a.body);
    let id = a.session.expect("Mcp-Session-Id on initialize");
    assert_eq!(id.len(), 32, "{id}");
    id
}

fn error_of(a: &Answer) -> (u16, i64, String) {
    let v = a.json();
    (
        a.status,
        v["error"]["code"]
            .as_i64()
            .unwrap_or_else(|| panic!("no error: {v}")),
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[test]
fn python_sdk_over_streamable_http_sees_results_denials_and_approval_refusals() {
    let d = Daemon::start(GOVERNED);
    let workdir = d.dir.path().display().to_string();
    let url = format!("{}/mcp", d.url);
    let (code, output) = run_python_client(&["http", &workdir, &url, "Bearer agent:py-agent"]);
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("ok"), "{output}");
    // The call the SDK gave up on after 1 s is stopped, not run for its 30 s.
    let sleep = d.trace_of("sleep.run", |e| e["status_code"] == 499);
    assert!(sleep["latency_ms"].as_u64().unwrap() < 20_000, "{sleep}");
    let (_, traces) = d.get("/traces", None);
    let traces = traces.as_array().expect("traces");
    assert_eq!(traces.len(), 4, "{traces:?}");
    for t in traces {
        assert_eq!(t["agent_id"], "py-agent", "{t}");
        assert_eq!(t["ingress"], "mcp-http", "{t}");
        assert_eq!(t["session_id"].as_str().map(str::len), Some(32), "{t}");
    }
}

#[test]
fn the_inspector_cli_lists_and_calls_governed_tools_over_streamable_http() {
    let d = Daemon::start(GOVERNED);
    let url = format!("{}/mcp", d.url);
    let inspect = |extra: &[&str]| -> Value {
        let mut args = vec![
            url.as_str(),
            "--transport",
            "http",
            "--header",
            "Authorization: Bearer agent:inspector",
        ];
        args.extend_from_slice(extra);
        let (ok, stdout, stderr) = run_inspector(&args);
        assert!(ok, "{extra:?}:\n{stdout}{stderr}");
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
    };
    let listed = inspect(&["--method", "tools/list"]);
    let names = common::tool_names(&listed["tools"]);
    for tool in ["echo.run", "writer.run", "mesh.catalog"] {
        assert!(names.contains(&tool.to_owned()), "{names:?}");
    }
    let echo = inspect(&INSPECT_ECHO_HI);
    assert_eq!(echo["isError"], false, "{echo}");
    assert_eq!(echo["content"][0]["text"], "hi\n", "{echo}");
    let target = d.path("never.txt").display().to_string();
    let denied = inspect(&[
        "--method",
        "tools/call",
        "--tool-name",
        "writer.run",
        "--tool-arg",
        &format!("args=[\"{target}\"]"),
    ]);
    assert_eq!(denied["isError"], true, "{denied}");
    assert_eq!(
        denied["_meta"]["mesh7/governance"]["outcome"], "denied",
        "{denied}"
    );
    assert!(!d.path("never.txt").exists());
    let entry = d.trace_of("writer.run", |e| e["policy"] == "deny");
    assert_eq!(entry["agent_id"], "inspector", "{entry}");
    assert_eq!(entry["ingress"], "mcp-http", "{entry}");
}

#[test]
fn conformance_suite_required_scenarios_pass() {
    let d = Daemon::start(GOVERNED);
    let url = format!("{}/mcp", d.url);
    for scenario in [
        "server-initialize",
        "ping",
        "tools-list",
        "server-sse-multiple-streams",
        "dns-rebinding-protection",
    ] {
        let (success, text) = run_conformance(&url, scenario);
        assert!(success, "{scenario}:\n{text}");
        assert!(text.contains(", 0 failed"), "{scenario}:\n{text}");
        assert!(!text.contains("FAILURE"), "{scenario}:\n{text}");
    }
}

#[test]
fn requests_outside_a_valid_session_are_refused() {
    let d = Daemon::start(GOVERNED);
    let alice = "Bearer agent:alice";
    let id = session(&d, alice);
    let table: [(Headers, u16, &str); 4] = [
        (
            &[("Authorization", alice)],
            400,
            "Missing Mcp-Session-Id header",
        ),
        (
            &[("Authorization", alice), ("Mcp-Session-Id", "0123")],
            404,
            "Unknown session",
        ),
        (
            &[
                ("Authorization", "Bearer agent:mallory"),
                ("Mcp-Session-Id", &id),
            ],
            403,
            "Session belongs to another identity",
        ),
        (
            &[("Mcp-Session-Id", &id)],
            403,
            "Session belongs to another identity",
        ),
    ];
    for (headers, status, message) in table {
        let a = post(&d, headers, PING);
        assert_eq!(
            error_of(&a),
            (status, -32600, message.to_owned()),
            "{headers:?}"
        );
    }
    // The rightful owner still gets through.
    let a = post(
        &d,
        &[("Authorization", alice), ("Mcp-Session-Id", &id)],
        PING,
    );
    assert_eq!((a.status, a.json()["result"].clone()), (200, json!({})));
    assert_eq!(a.session.as_deref(), Some(id.as_str()));
}

#[test]
fn notifications_get_202_and_delete_ends_the_session() {
    let d = Daemon::start(GOVERNED);
    let auth = "Bearer agent:bob";
    let id = session(&d, auth);
    let headers = [("Authorization", auth), ("Mcp-Session-Id", id.as_str())];
    let a = post(
        &d,
        &headers,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    );
    assert_eq!((a.status, a.body.as_str()), (202, ""));
    assert_eq!(a.session.as_deref(), Some(id.as_str()));

    let url = format!("{}/mcp", d.url);
    let deleted = send(reqwest::Method::DELETE, &url, &headers, "");
    assert_eq!(deleted.status, 204);
    let again = send(reqwest::Method::DELETE, &url, &headers, "");
    assert_eq!(again.status, 404);
    let a = post(&d, &headers, PING);
    assert_eq!(error_of(&a), (404, -32600, "Unknown session".to_owned()));
}

#[test]
fn other_methods_get_405_with_allow() {
    let d = Daemon::start(GOVERNED);
    let url = format!("{}/mcp", d.url);
    for method in [reqwest::Method::PUT, reqwest::Method::PATCH] {
        let a = send(method.clone(), &url, &[], "");
        assert_eq!(a.status, 405, "{method}");
        assert_eq!(
            a.headers.get("allow").and_then(|v| v.to_str().ok()),
            Some("POST, GET, DELETE")
        );
        assert_eq!(a.json()["error"]["code"], -32600);
    }
}

#[test]
fn a_notification_stream_is_refused_with_a_json_rpc_error_when_it_cannot_be_opened() {
    let d = Daemon::start(GOVERNED);
    let url = format!("{}/mcp", d.url);
    let id = session(&d, "Bearer agent:alice");
    let get = |headers: Headers<'_>| {
        let mut req = reqwest::blocking::Client::new().get(&url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().expect("GET /mcp");
        let status = resp.status().as_u16();
        let body: Value = resp.json().expect("a JSON-RPC error");
        (
            status,
            body["error"]["code"].as_i64().unwrap_or_default(),
            body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        )
    };
    let sse = ("Accept", "text/event-stream");
    let alice = ("Authorization", "Bearer agent:alice");
    let cases: [(Headers<'_>, u16, &str); 6] = [
        (&[sse, alice], 400, "Missing Mcp-Session-Id header"),
        (
            &[sse, alice, ("Mcp-Session-Id", "0123")],
            404,
            "Unknown session",
        ),
        (
            &[
                sse,
                ("Authorization", "Bearer agent:mallory"),
                ("Mcp-Session-Id", &id),
            ],
            403,
            "Session belongs to another identity",
        ),
        (
            &[
                ("Accept", "application/json"),
                alice,
                ("Mcp-Session-Id", &id),
            ],
            406,
            "Not Acceptable: GET /mcp opens a stream of server notifications; send Accept: text/event-stream",
        ),
        (
            &[
                sse,
                alice,
                ("Mcp-Session-Id", &id),
                ("MCP-Protocol-Version", "1999-01-01"),
            ],
            400,
            "Unsupported protocol version: 1999-01-01",
        ),
        (
            &[
                sse,
                alice,
                ("Mcp-Session-Id", &id),
                ("Origin", "http://evil.example.com"),
            ],
            403,
            "",
        ),
    ];
    for (headers, status, message) in cases {
        let (got_status, code, got_message) = get(headers);
        assert_eq!(
            (got_status, code),
            (status, -32600),
            "{headers:?}: {got_message}"
        );
        if !message.is_empty() {
            assert_eq!(got_message, message, "{headers:?}");
        }
    }
    // None of them opened anything: the session still works.
    let a = post(&d, &[alice, ("Mcp-Session-Id", &id)], PING);
    assert_eq!(a.status, 200, "{}", a.body);
}

#[test]
fn malformed_bodies_and_unknown_methods_get_json_rpc_errors() {
    let d = Daemon::start(GOVERNED);
    let auth = "Bearer agent:carol";
    let id = session(&d, auth);
    let headers = [("Authorization", auth), ("Mcp-Session-Id", id.as_str())];
    let table: [(&str, u16, i64); 6] = [
        ("{nope", 400, -32700),
        (r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#, 400, -32600),
        (
            r#"{"jsonrpc":"2.0","id":3,"method":"ping","params":7}"#,
            200,
            -32602,
        ),
        (
            r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{}}"#,
            200,
            -32602,
        ),
        (
            r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"x.y"}}"#,
            200,
            -32602,
        ),
        (
            r#"{"jsonrpc":"2.0","id":6,"method":"prompts/list"}"#,
            200,
            -32601,
        ),
    ];
    for (body, status, code) in table {
        let a = post(&d, &headers, body);
        assert_eq!(
            (a.status, error_of(&a).1),
            (status, code),
            "{body}: {}",
            a.body
        );
    }
    // A probe for a newer protocol, before any session: a prompt -32601 lets clients fall back.
    let probe = post(
        &d,
        &[("Mcp-Protocol-Version", "2026-07-28")],
        r#"{"jsonrpc":"2.0","id":"d","method":"server/discover","params":{}}"#,
    );
    assert_eq!(
        error_of(&probe),
        (200, -32601, "Method not found: server/discover".to_owned())
    );
    // An unsupported protocol version header on a session request is refused.
    let a = post(
        &d,
        &[
            ("Authorization", auth),
            ("Mcp-Session-Id", id.as_str()),
            ("Mcp-Protocol-Version", "1999-01-01"),
        ],
        PING,
    );
    assert_eq!(error_of(&a).0, 400);
}

#[test]
fn dns_rebinding_guard_refuses_foreign_host_and_origin_unless_configured() {
    let yaml = format!(
        "{GOVERNED}server:\n  allowed_hosts: [\"mesh.internal\"]\n  allowed_origins: [\"https://app.example.com\"]\n"
    );
    let d = Daemon::start(&yaml);
    let table: [(Headers, u16); 6] = [
        (&[("Host", "evil.example.com")], 403),
        (&[("Origin", "http://evil.example.com")], 403),
        (
            &[
                ("Host", "localhost:9090"),
                ("Origin", "http://localhost:3000"),
            ],
            200,
        ),
        (&[("Host", "mesh.internal:8080")], 200),
        (&[("Origin", "https://app.example.com")], 200),
        (&[("Origin", "https://app.example.com.evil.io")], 403),
    ];
    for (headers, status) in table {
        let a = post(&d, headers, INIT);
        assert_eq!(a.status, status, "{headers:?}: {}", a.body);
        if status == 403 {
            assert_eq!(a.json()["error"]["code"], -32600);
        }
    }
}

#[test]
fn session_count_is_capped_with_503_and_retry_after() {
    let d = Daemon::start(&format!("{GOVERNED}server:\n  max_mcp_sessions: 2\n"));
    session(&d, "Bearer agent:a");
    let second = session(&d, "Bearer agent:b");
    let a = post(&d, &[("Authorization", "Bearer agent:c")], INIT);
    assert_eq!(error_of(&a).0, 503, "{}", a.body);
    assert_eq!(error_of(&a).1, -32603);
    assert!(a.headers.contains_key("retry-after"));
    // Ending a session makes room.
    let url = format!("{}/mcp", d.url);
    let headers = [
        ("Authorization", "Bearer agent:b"),
        ("Mcp-Session-Id", second.as_str()),
    ];
    assert_eq!(
        send(reqwest::Method::DELETE, &url, &headers, "").status,
        204
    );
    session(&d, "Bearer agent:c");
}

#[test]
fn require_authentication_refuses_an_anonymous_initialize() {
    let d = Daemon::start(&format!(
        "{GOVERNED}auth:\n  require_authentication: true\n"
    ));
    let a = post(&d, &[], INIT);
    assert_eq!(
        error_of(&a),
        (401, -32600, "authentication required".to_owned())
    );
    session(&d, "Bearer agent:known");
}

#[test]
fn a_client_that_closes_its_request_stops_the_call_which_is_traced_as_cancelled() {
    let d = Daemon::start(GOVERNED);
    let id = session(&d, "Bearer agent:bot");
    let wait = std::time::Duration::from_secs(30);
    // Closing the request is the Streamable HTTP cancellation signal.
    let sleep = d.post_and_leave(
        "/mcp",
        &[
            ("Authorization", "Bearer agent:bot"),
            ("Mcp-Session-Id", &id),
            ("Accept", "application/json, text/event-stream"),
        ],
        SLEEP_CALL,
    );
    let entry = d.trace_of("sleep.run", |e| e["status_code"] == 499);
    assert_eq!(entry["ingress"], "mcp-http", "{entry}");
    assert_eq!(entry["session_id"], id, "{entry}");
    assert_eq!(
        entry["error"], "cancelled: the caller went away while the call ran",
        "{entry}"
    );
    common::wait_for(wait, || common::process_gone(sleep).then_some(()))
        .expect("the command outlived its caller");
    // The session still works.
    let a = post(
        &d,
        &[
            ("Authorization", "Bearer agent:bot"),
            ("Mcp-Session-Id", &id),
        ],
        PING,
    );
    assert_eq!(a.status, 200, "{}", a.body);
}

const SLEEP_CALL: &str = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"sleep.run","arguments":{"args":["20"]}}}"#;

/// Starts `SLEEP_CALL` in session `id` on a thread of its own and waits until its `sleep` runs;
/// returns the call's thread and the pid of `sleep`.
fn start_sleep_call(d: &Daemon, id: &str) -> (std::thread::JoinHandle<Answer>, u32) {
    let (url, id) = (format!("{}/mcp", d.url), id.to_owned());
    let call = std::thread::spawn(move || {
        send(
            reqwest::Method::POST,
            &url,
            &[
                ("Authorization", "Bearer agent:bot"),
                ("Mcp-Session-Id", &id),
            ],
            SLEEP_CALL,
        )
    });
    let (sleep, _) = common::wait_for(std::time::Duration::from_secs(30), || {
        common::child_of(d.child.id())
    })
    .expect("the tool never started");
    (call, sleep)
}

/// The answer of a call stopped by its session: the `cancelled` error saying `why`, for the
/// call's id; its trace says the same.
fn assert_cancelled(d: &Daemon, call: std::thread::JoinHandle<Answer>, sleep: u32, why: &str) {
    let answer = call.join().expect("call thread");
    assert_eq!(error_of(&answer), (200, -32800, why.to_owned()));
    assert_eq!(answer.json()["id"], 7, "{}", answer.body);
    common::wait_for(std::time::Duration::from_secs(30), || {
        common::process_gone(sleep).then_some(())
    })
    .expect("the command outlived its cancellation");
    let entry = d.trace_of("sleep.run", |e| e["status_code"] == 499);
    assert_eq!(entry["ingress"], "mcp-http", "{entry}");
    assert_eq!(entry["error"], why, "{entry}");
}

#[test]
fn a_notifications_cancelled_in_the_session_stops_the_call_and_answers_it_cancelled() {
    let d = Daemon::start(GOVERNED);
    let id = session(&d, "Bearer agent:bot");
    let (call, sleep) = start_sleep_call(&d, &id);
    let cancel = |request_id: Value| {
        json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
               "params": {"requestId": request_id, "reason": "user"}})
        .to_string()
    };
    // Another identity cannot use the session, so it cannot cancel its requests.
    let a = post(
        &d,
        &[
            ("Authorization", "Bearer agent:mallory"),
            ("Mcp-Session-Id", &id),
        ],
        &cancel(json!(7)),
    );
    assert_eq!(a.status, 403, "{}", a.body);
    // Ids that name no running request of the session are accepted and change nothing: the
    // string "7" is not the number 7, and a notification without `requestId` names nothing.
    let mine = [
        ("Authorization", "Bearer agent:bot"),
        ("Mcp-Session-Id", id.as_str()),
    ];
    for body in [
        cancel(json!("7")),
        r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{}}"#.to_owned(),
    ] {
        assert_eq!(post(&d, &mine, &body).status, 202);
    }
    let a = post(&d, &mine, PING);
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(
        !call.is_finished(),
        "the call ended without being cancelled"
    );
    assert!(!common::process_gone(sleep), "the command was stopped");
    // The call's own id stops it.
    assert_eq!(post(&d, &mine, &cancel(json!(7))).status, 202);
    assert_cancelled(
        &d,
        call,
        sleep,
        "cancelled by the client (notifications/cancelled) while the call ran",
    );
    // The session goes on.
    assert_eq!(post(&d, &mine, PING).status, 200);
}

#[test]
fn deleting_a_session_cancels_its_running_calls() {
    let d = Daemon::start(GOVERNED);
    let id = session(&d, "Bearer agent:bot");
    let (call, sleep) = start_sleep_call(&d, &id);
    let a = send(
        reqwest::Method::DELETE,
        &format!("{}/mcp", d.url),
        &[
            ("Authorization", "Bearer agent:bot"),
            ("Mcp-Session-Id", &id),
        ],
        "",
    );
    assert_eq!(a.status, 204, "{}", a.body);
    assert_cancelled(
        &d,
        call,
        sleep,
        "cancelled: the MCP session was deleted while the call ran",
    );
}

/// The names an agent's `tools/list` shows over `/mcp`.
fn listed(d: &Daemon, authorization: &str) -> Vec<String> {
    let id = session(d, authorization);
    let a = post(
        d,
        &[("Authorization", authorization), ("Mcp-Session-Id", &id)],
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/list"}"#,
    );
    assert_eq!(a.status, 200, "{}", a.body);
    a.json()["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .map(|t| t["name"].as_str().expect("name").to_owned())
        .collect()
}

/// The names `GET /tools` shows to `authorization`.
fn described(d: &Daemon, authorization: &str) -> Vec<String> {
    let (status, tools) = d.get("/tools", Some(authorization));
    assert_eq!(status, 200, "{tools}");
    tools
        .as_array()
        .expect("tools")
        .iter()
        .map(|t| t["name"].as_str().expect("name").to_owned())
        .collect()
}

#[test]
fn hide_denied_tools_leaves_out_only_what_the_agents_policy_always_denies() {
    let (servers, _root, _guard) = common::filesystem_server();
    let policies = r#"policies:
  - name: reader
    agent: "reader"
    rules:
      - tools: ["fs.read_*"]
        action: allow
      - tools: ["fs.write_file"]
        action: allow
        condition: { field: path, operator: contains, value: notes }
      - tools: ["fs.list_directory"]
        action: human_approval
      - tools: ["fs.move_file"]
        action: deny
        condition: { field: source, operator: contains, value: secret }
      - tools: ["fs.move_file"]
        action: deny
  - name: writer
    agent: "writer"
    rules:
      - tools: ["fs.*"]
        action: allow
"#;
    let hidden = format!("{servers}server:\n  hide_denied_tools: true\n{policies}");
    let d = Daemon::start(&hidden);
    common::wait_for(std::time::Duration::from_secs(30), || {
        let (_, servers) = d.get("/mcp-servers", None);
        (servers[0]["status"] == "ready").then_some(())
    })
    .expect("the filesystem server never became ready");

    let reader = "Bearer agent:reader";
    let seen = listed(&d, reader);
    let fs: Vec<&str> = seen
        .iter()
        .map(String::as_str)
        .filter(|n| n.starts_with("fs."))
        .collect();
    // Allowed, allowed under a condition, or under approval: listed. Denied whatever the
    // arguments (by rule, or by no rule at all): left out.
    assert!(fs.contains(&"fs.read_text_file"), "{seen:?}");
    assert!(fs.contains(&"fs.write_file"), "{seen:?}");
    assert!(fs.contains(&"fs.list_directory"), "{seen:?}");
    for name in &fs {
        assert!(
            name.starts_with("fs.read_") || ["fs.write_file", "fs.list_directory"].contains(name),
            "{name} is always denied to reader: {seen:?}"
        );
    }
    assert!(seen.iter().any(|n| n == "mesh.catalog"), "{seen:?}");
    assert_eq!(
        described(&d, reader)
            .iter()
            .filter(|n| n.starts_with("fs."))
            .count(),
        fs.len(),
        "GET /tools shows reader what tools/list shows"
    );

    // Another agent's policy allows every tool: it sees them all.
    let writer = listed(&d, "Bearer agent:writer");
    for name in ["fs.move_file", "fs.edit_file", "fs.write_file"] {
        assert!(writer.iter().any(|n| n == name), "{name}: {writer:?}");
        assert!(
            described(&d, "Bearer agent:writer")
                .iter()
                .any(|n| n == name),
            "{name}"
        );
    }

    // mesh.catalog leaves out the same tools.
    let id = session(&d, reader);
    let catalog = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": "mesh.catalog", "arguments": {"source": "fs"}}});
    let a = post(
        &d,
        &[("Authorization", reader), ("Mcp-Session-Id", &id)],
        &catalog.to_string(),
    );
    let text = a.json()["result"]["content"][0]["text"].clone();
    let catalog: Value = serde_json::from_str(text.as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("catalog JSON ({e}): {}", a.body));
    let mut in_catalog: Vec<&str> = catalog["groups"]["fs"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no fs group: {catalog}"))
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    in_catalog.sort_unstable();
    let mut want = fs.clone();
    want.sort_unstable();
    assert_eq!(in_catalog, want, "{catalog}");

    // Hidden is not callable either way: the call is still governed, and denied.
    let call = json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
        "params": {"name": "fs.move_file", "arguments": {"source": "a", "destination": "b"}}});
    let a = post(
        &d,
        &[("Authorization", reader), ("Mcp-Session-Id", &id)],
        &call.to_string(),
    );
    let text = a.json()["result"]["content"][0]["text"].clone();
    assert!(
        text.as_str().is_some_and(|t| t.contains("deny")),
        "{}",
        a.body
    );

    // Without the setting every tool is listed to everyone (flux7).
    let (yaml, _root2, _guard2) = {
        let (servers, root, guard) = common::filesystem_server();
        (format!("{servers}{policies}"), root, guard)
    };
    let d = Daemon::start(&yaml);
    common::wait_for(std::time::Duration::from_secs(30), || {
        let (_, servers) = d.get("/mcp-servers", None);
        (servers[0]["status"] == "ready").then_some(())
    })
    .expect("the filesystem server never became ready");
    let seen = listed(&d, reader);
    assert!(seen.iter().any(|n| n == "fs.move_file"), "{seen:?}");
    assert!(described(&d, reader).iter().any(|n| n == "fs.move_file"));
}
