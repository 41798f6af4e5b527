//! Black-box tests of `mesh7 --mcp` (the stdio MCP server): the official Python SDK and the MCP
//! Inspector CLI as clients, and raw JSON-RPC lines for ordering, cancellation and malformed input. Every server
//! runs with `--listen 127.0.0.1:0`, so its HTTP API takes a free port and no daemon is probed.

mod common;
#[allow(dead_code, unreachable_pub)] // shared helpers: each test file uses part of them
mod mcp_support;

use std::path::Path;
use std::time::Duration;

use mcp_support::{
    GOVERNED, INSPECT_ECHO_HI, McpChild, result_text, run_inspector, run_python_client,
};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// A stdio identity case: extra flags, environment, expected agent, expected session id (`None`:
/// minted).
type Case<'a> = (
    &'a [&'a str],
    &'a [(&'a str, &'a str)],
    &'a str,
    Option<&'a str>,
);

fn config_dir(yaml: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = common::write_config(dir.path(), yaml);
    (dir, config.display().to_string())
}

/// The entries of the server's `traces.jsonl` (in `dir`), oldest first.
fn trace_file(dir: &Path) -> Vec<Value> {
    let traces = std::fs::read_to_string(dir.join("traces.jsonl")).expect("traces");
    traces
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("trace line"))
        .collect()
}

/// The first entry of `tool` in the server's `traces.jsonl`.
fn traced(dir: &Path, tool: &str) -> Value {
    let entries = trace_file(dir);
    entries
        .iter()
        .find(|e| e["tool"] == tool)
        .cloned()
        .unwrap_or_else(|| panic!("no trace of {tool}: {entries:?}"))
}

/// A trace entry of a call the client cancelled while it ran, stopped well before `within_ms`.
fn assert_cancelled_by_client(entry: &Value, within_ms: u64) {
    assert_eq!(entry["status_code"], 499, "{entry}");
    assert_eq!(
        entry["error"], "cancelled by the client (notifications/cancelled) while the call ran",
        "{entry}"
    );
    assert!(
        entry["latency_ms"].as_u64().expect("latency_ms") < within_ms,
        "{entry}"
    );
}

fn start(dir: &Path, config: &str, extra: &[&str], env: &[(&str, &str)]) -> McpChild {
    let mut args = vec!["--mcp", "--config", config, "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    McpChild::start(dir, &args, env)
}

#[test]
fn python_sdk_over_stdio_sees_results_denials_and_approval_refusals() {
    let (dir, config) = config_dir(GOVERNED);
    let workdir = dir.path().display().to_string();
    let (code, output) = run_python_client(&[
        "stdio",
        &workdir,
        env!("CARGO_BIN_EXE_mesh7"),
        "--mcp",
        "--config",
        &config,
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("ok"), "{output}");
    let entries = trace_file(dir.path());
    let tools: Vec<&str> = entries
        .iter()
        .map(|e| e["tool"].as_str().unwrap())
        .collect();
    // Every governed call is traced; unknown tools and virtual tools are not.
    assert_eq!(
        tools,
        ["echo.run", "writer.run", "approver.run", "sleep.run"],
        "{entries:?}"
    );
    // The call the SDK gave up on after 1 s was stopped (`notifications/cancelled`), not run
    // for its 30 s.
    assert_cancelled_by_client(&entries[3], 20_000);
}

#[test]
fn the_inspector_cli_calls_a_governed_tool_over_stdio() {
    let (dir, config) = config_dir(GOVERNED);
    // The server's flags come after `--`, so that they are not taken for the Inspector's own.
    let mut args = vec![common::BIN];
    args.extend(INSPECT_ECHO_HI);
    args.extend([
        "--",
        "--mcp",
        "--config",
        &config,
        "--mcp-agent",
        "inspector",
        "--listen",
        "127.0.0.1:0",
    ]);
    let (ok, stdout, stderr) = run_inspector(&args);
    assert!(ok, "{stdout}{stderr}");
    let answer: Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
    assert_eq!(answer["isError"], false, "{answer}");
    assert_eq!(answer["content"][0]["text"], "hi\n", "{answer}");
    // Traced as the agent the command line names, once the server has written it.
    let (entry, _) = common::wait_for(WAIT, || {
        let text = std::fs::read_to_string(dir.path().join("traces.jsonl")).ok()?;
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|e| e["tool"] == "echo.run")
    })
    .expect("the call in traces.jsonl");
    assert_eq!(entry["agent_id"], "inspector", "{entry}");
    assert_eq!(entry["ingress"], "mcp-stdio", "{entry}");
}

#[test]
fn a_slow_call_does_not_hold_up_a_ping_sent_after_it() {
    let (dir, config) = config_dir(GOVERNED);
    let mut mcp = start(dir.path(), &config, &[], &[]);
    mcp.initialize();
    mcp.request(
        1,
        "tools/call",
        &json!({"name": "sleep.run", "arguments": {"args": ["2"]}}),
    );
    mcp.request(2, "ping", &json!({}));
    let first = mcp.recv(WAIT);
    assert_eq!(first, json!({"jsonrpc": "2.0", "id": 2, "result": {}}));
    let second = mcp.recv(WAIT);
    assert_eq!(second["id"], 1, "{second}");
    assert_eq!(second["result"]["isError"], false, "{second}");
}

#[test]
fn malformed_input_gets_json_rpc_errors() {
    let (dir, config) = config_dir(GOVERNED);
    let mut mcp = start(dir.path(), &config, &[], &[]);
    mcp.initialize();
    let table: [(&str, Value, i64, &str); 8] = [
        ("{not json", Value::Null, -32700, "Parse error"),
        (
            r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
            Value::Null,
            -32600,
            "Invalid Request: batches are not supported",
        ),
        (
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/list","params":[1]}"#,
            json!(3),
            -32602,
            "Invalid params: params must be an object",
        ),
        (
            r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{}}"#,
            json!(4),
            -32602,
            "Missing tool name",
        ),
        (
            r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"nope.run"}}"#,
            json!(5),
            -32602,
            "Unknown tool: nope.run",
        ),
        (
            r#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"echo.run","arguments":[1]}}"#,
            json!(6),
            -32602,
            "Invalid params: arguments must be an object",
        ),
        (
            r#"{"jsonrpc":"2.0","id":"s","method":"resources/list"}"#,
            json!("s"),
            -32601,
            "Method not found: resources/list",
        ),
        (
            r#"{"jsonrpc":"2.0","id":8,"method":"server/discover","params":{}}"#,
            json!(8),
            -32601,
            "Method not found: server/discover",
        ),
    ];
    for (line, id, code, message) in table {
        mcp.send_raw(line);
        let answer = mcp.recv(WAIT);
        assert_eq!(
            answer,
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}),
            "{line}"
        );
    }
}

#[test]
fn notifications_are_never_answered() {
    let (dir, config) = config_dir(GOVERNED);
    let mut mcp = start(dir.path(), &config, &[], &[]);
    mcp.initialize();
    for method in [
        "notifications/initialized",
        "notifications/cancelled",
        "notifications/roots/list_changed",
        "no/such/method",
    ] {
        mcp.send(&json!({"jsonrpc": "2.0", "method": method, "params": {"requestId": 99}}));
    }
    mcp.request(9, "ping", &json!({}));
    assert_eq!(mcp.recv(WAIT)["id"], 9);
}

#[test]
fn a_cancelled_call_is_stopped_not_answered_and_traced_as_cancelled() {
    let (dir, config) = config_dir(GOVERNED);
    let mut mcp = start(dir.path(), &config, &[], &[]);
    mcp.initialize();
    let started = std::time::Instant::now();
    mcp.request(
        1,
        "tools/call",
        &json!({"name": "sleep.run", "arguments": {"args": ["30"]}}),
    );
    // The call is running once its `sleep` is a child of the server.
    let (sleep, _) = common::wait_for(WAIT, || common::child_of(mcp.child.id()))
        .expect("the tool never started");
    mcp.send(&json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1, "reason": "user"}}));
    mcp.request(2, "ping", &json!({}));
    assert_eq!(mcp.recv(WAIT)["id"], 2);
    // Stopped: the command is killed, and EOF does not wait for it.
    common::wait_for(WAIT, || common::process_gone(sleep).then_some(()))
        .unwrap_or_else(|| panic!("sleep {sleep} still runs"));
    mcp.close_stdin();
    assert!(mcp.wait(WAIT).success());
    assert!(started.elapsed() < Duration::from_secs(25));
    let mut rest = Vec::new();
    while let Some(line) = mcp.try_recv(Duration::from_secs(1)) {
        rest.push(line);
    }
    assert!(
        rest.is_empty(),
        "a cancelled request was answered: {rest:?}"
    );
    // What ran is traced, as cancelled.
    let entry = traced(dir.path(), "sleep.run");
    assert_eq!(entry["policy"], "allow", "{entry}");
    assert_cancelled_by_client(&entry, 25_000);
}

#[test]
fn sigterm_mid_call_stops_the_call_traces_it_and_exits_zero() {
    let (dir, config) = config_dir(GOVERNED);
    let mut mcp = start(dir.path(), &config, &[], &[]);
    mcp.initialize();
    mcp.request(
        1,
        "tools/call",
        &json!({"name": "sleep.run", "arguments": {"args": ["30"]}}),
    );
    let (sleep, _) = common::wait_for(WAIT, || common::child_of(mcp.child.id()))
        .expect("the tool never started");
    let started = std::time::Instant::now();
    let pid = nix::unistd::Pid::from_raw(i32::try_from(mcp.child.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    // stdin stays open: the signal alone ends the server, without waiting for the call.
    assert!(mcp.wait(WAIT).success());
    assert!(started.elapsed() < Duration::from_secs(20));
    common::wait_for(WAIT, || common::process_gone(sleep).then_some(()))
        .unwrap_or_else(|| panic!("sleep {sleep} outlived the server"));
    // The final flush wrote the stopped call.
    let entry = traced(dir.path(), "sleep.run");
    assert_eq!(entry["status_code"], 499, "{entry}");
    assert_eq!(
        entry["error"], "cancelled: the caller went away while the call ran",
        "{entry}"
    );
}

#[test]
fn eof_lets_calls_in_flight_finish_then_exits_zero() {
    let (dir, config) = config_dir(GOVERNED);
    let mut mcp = start(dir.path(), &config, &[], &[]);
    mcp.initialize();
    mcp.request(
        1,
        "tools/call",
        &json!({"name": "sleep.run", "arguments": {"args": ["1"]}}),
    );
    mcp.close_stdin();
    let answer = mcp.recv(WAIT);
    assert_eq!(answer["id"], 1, "{answer}");
    assert_eq!(answer["result"]["isError"], false, "{answer}");
    assert!(mcp.wait(WAIT).success());
}

#[test]
fn stdio_serves_the_http_api_and_traces_carry_agent_session_and_trace_id() {
    let yaml = format!("{GOVERNED}auth:\n  agent_tokens:\n    s3cret: billing-bot\n");
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let table: [Case; 3] = [
        (&[], &[], "claude", None),
        (
            &["--mcp-agent", "ops-bot", "--mcp-session-id", "sess-42"],
            &[],
            "ops-bot",
            Some("sess-42"),
        ),
        (&[], &[("MESH_AGENT_TOKEN", "s3cret")], "billing-bot", None),
    ];
    for (extra, env, agent, session) in table {
        let (dir, config) = config_dir(&yaml);
        let mut mcp = start(dir.path(), &config, extra, env);
        let listening = mcp.stderr_line("mesh7 listening on ", WAIT);
        let url = listening
            .split("mesh7 listening on ")
            .nth(1)
            .expect("url")
            .trim()
            .to_owned();
        mcp.initialize();
        mcp.request(
            1,
            "tools/call",
            &json!({
                "name": "echo.run",
                "arguments": {"args": ["traced"]},
                "_meta": {"traceparent": format!("00-{trace_id}-00f067aa0ba902b7-01")},
            }),
        );
        assert_eq!(result_text(&mcp.recv(WAIT)), "traced\n");
        // Virtual tools answer without a trace.
        mcp.request(2, "tools/call", &json!({"name": "mesh.catalog"}));
        let catalog: Value =
            serde_json::from_str(result_text(&mcp.recv(WAIT))).expect("catalog JSON");
        assert_eq!(catalog["groups"]["echo"]["tools"][0]["action"], "allow");
        assert_eq!(catalog["groups"]["writer"]["tools"][0]["action"], "deny");

        let traces: Value = reqwest::blocking::get(format!("{url}/traces"))
            .expect("GET /traces")
            .json()
            .expect("traces JSON");
        let traces = traces.as_array().expect("array");
        assert_eq!(traces.len(), 1, "{traces:?}");
        let t = &traces[0];
        assert_eq!(t["tool"], "echo.run");
        assert_eq!(t["agent_id"], agent);
        assert_eq!(t["ingress"], "mcp-stdio");
        assert_eq!(t["trace_id"], trace_id);
        let sid = t["session_id"].as_str().expect("session id");
        match session {
            Some(s) => assert_eq!(sid, s),
            None => assert!(
                sid.len() == 32 && sid.bytes().all(|b| b.is_ascii_hexdigit()),
                "{sid}"
            ),
        }
    }
}

#[test]
fn a_taken_port_is_logged_and_mcp_keeps_working() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let (dir, config) = config_dir(GOVERNED);
    let listen = format!("127.0.0.1:{port}");
    let mut mcp = McpChild::start(
        dir.path(),
        &["--mcp", "--config", &config, "--listen", &listen],
        &[],
    );
    mcp.stderr_line("HTTP API not started", WAIT);
    mcp.initialize();
    mcp.request(
        1,
        "tools/call",
        &json!({"name": "echo.run", "arguments": {"args": ["still"]}}),
    );
    assert_eq!(result_text(&mcp.recv(WAIT)), "still\n");
    drop(taken);
}

#[test]
fn why_a_call_did_not_run_is_machine_readable_in_meta() {
    let (dir, config) = config_dir(GOVERNED);
    let mut mcp = start(dir.path(), &config, &[], &[]);
    mcp.initialize();
    let mut call = |id: i64, name: &str, args: Value| {
        mcp.request(
            id,
            "tools/call",
            &json!({"name": name, "arguments": {"args": args}}),
        );
        let answer = mcp.recv(WAIT);
        assert_eq!(answer["id"], id, "{answer}");
        answer["result"].clone()
    };
    let governance = |result: &Value| result["_meta"]["mesh7/governance"].clone();

    // A tool that ran answers with its own result: nothing added.
    let ran = call(1, "echo.run", json!(["once"]));
    assert_eq!(ran["isError"], false, "{ran}");
    assert!(ran.get("_meta").is_none(), "{ran}");

    let denied = call(2, "writer.run", json!(["x"]));
    assert_eq!(denied["isError"], true, "{denied}");
    let g = governance(&denied);
    assert_eq!(
        (&g["outcome"], &g["policy"], &g["rule"]),
        (&json!("denied"), &json!("deny"), &json!("governed")),
        "{denied}"
    );
    assert_eq!(g["trace_id"].as_str().map(str::len), Some(32), "{denied}");
    assert!(g.get("approval_id").is_none(), "{denied}");

    let pending = call(3, "approver.run", json!(["y"]));
    let g = governance(&pending);
    assert_eq!(g["outcome"], "approval_pending", "{pending}");
    assert_eq!(g["policy"], "human_approval", "{pending}");
    let approval_id = g["approval_id"].as_str().expect("approval_id");
    // The text names the same approval by its short id.
    assert!(
        result_text(&json!({ "result": pending })).contains(&approval_id[..8]),
        "{pending}"
    );

    // The same call again and again: loop detection stops the fourth.
    for id in 4..=6 {
        assert!(governance(&call(id, "echo.run", json!(["again"]))).is_null());
    }
    let looped = call(7, "echo.run", json!(["again"]));
    assert_eq!(governance(&looped)["outcome"], "loop_detected", "{looped}");
    assert_eq!(governance(&looped)["policy"], "rate_limited", "{looped}");
}
