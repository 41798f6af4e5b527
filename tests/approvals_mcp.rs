//! Black-box tests of approvals and grants over MCP: the supervisor tools (`approval.resolve`,
//! `approval.pending`, `grant.create`, `grant.revoke`) and who may use them, `grant.list`,
//! `grant.delegate` and approving with a grant,
//! approve-then-retry across transports, `supervisor.enabled` blocking calls, and
//! `approval.channel: tty`. `mesh7 --mcp` is driven with raw JSON-RPC lines (its HTTP API on a
//! free port beside it), `/mcp` of `mesh7 serve` with raw requests and the Python SDK.

mod common;
#[allow(dead_code, unreachable_pub)] // shared helpers: each test file uses part of them
mod mcp_support;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Daemon, wait_for};
use mcp_support::{GOVERNED, McpChild, McpHttp, python, result_text};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

const VIRTUAL: [&str; 10] = [
    "approval.resolve",
    "approval.pending",
    "grant.list",
    "grant.create",
    "grant.delegate",
    "grant.revoke",
    "halt.create",
    "halt.list",
    "halt.lift",
    "mesh.catalog",
];
const SUPERVISOR_ONLY: [&str; 7] = [
    "approval.resolve",
    "approval.pending",
    "grant.create",
    "grant.revoke",
    "halt.create",
    "halt.list",
    "halt.lift",
];

fn config(extra: &str) -> String {
    format!("{extra}\n{GOVERNED}")
}

fn operator_only(tool: &str) -> String {
    format!(
        "{tool} is operator-only — not callable by this agent. Use the HTTP API or a declared supervisor agent."
    )
}

/// `mesh7 --mcp` as `agent` with its HTTP API on a free port.
struct StdioMcp {
    mcp: McpChild,
    /// The HTTP API beside it.
    url: String,
    dir: tempfile::TempDir,
    next_id: i64,
}

impl StdioMcp {
    fn start(yaml: &str, agent: &str) -> StdioMcp {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = common::write_config(dir.path(), yaml);
        let config = config.display().to_string();
        let mut mcp = McpChild::start(
            dir.path(),
            &[
                "--mcp",
                "--config",
                &config,
                "--listen",
                "127.0.0.1:0",
                "--mcp-agent",
                agent,
            ],
            &[],
        );
        let line = mcp.stderr_line("mesh7 listening on ", WAIT);
        let url = line
            .split("mesh7 listening on ")
            .nth(1)
            .expect("url")
            .trim()
            .to_owned();
        mcp.initialize();
        StdioMcp {
            mcp,
            url,
            dir,
            next_id: 1,
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// Sends a request and returns its answer (requests are made one at a time).
    fn request(&mut self, method: &str, params: &Value) -> Value {
        self.next_id += 1;
        self.mcp.request(self.next_id, method, params);
        let answer = self.mcp.recv(WAIT);
        assert_eq!(answer["id"], self.next_id, "{answer}");
        answer
    }

    fn call(&mut self, tool: &str, args: &Value) -> Value {
        self.request("tools/call", &json!({"name": tool, "arguments": args}))
    }

    fn virtual_tools(&mut self) -> Vec<String> {
        virtual_names(&self.request("tools/list", &json!({})))
    }
}

fn virtual_names(list: &Value) -> Vec<String> {
    list["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tools: {list}"))
        .iter()
        .filter_map(|t| t["name"].as_str())
        .filter(|n| VIRTUAL.contains(n))
        .map(str::to_owned)
        .collect()
}

/// The virtual tools an HTTP session is offered.
fn virtual_tools(s: &McpHttp) -> Vec<String> {
    let mut names = s.tool_names();
    names.retain(|n| VIRTUAL.contains(&n.as_str()));
    names
}

fn error_of(answer: &Value) -> (i64, &str) {
    (
        answer["error"]["code"]
            .as_i64()
            .unwrap_or_else(|| panic!("not an error: {answer}")),
        answer["error"]["message"].as_str().unwrap_or_default(),
    )
}

fn is_error(answer: &Value) -> bool {
    answer["result"]["isError"] == true
}

/// The 8-digit id in flux7's "Approval required (id: …)" text.
fn required_id(answer: &Value) -> String {
    let text = result_text(answer);
    assert!(is_error(answer), "{answer}");
    let id = text
        .strip_prefix("Approval required (id: ")
        .and_then(|rest| rest.get(..8))
        .unwrap_or_else(|| panic!("not an approval requirement: {text}"));
    assert!(
        text.ends_with(&format!(
            "Use approval.resolve with id={id} and decision=approve or deny."
        )),
        "{text}"
    );
    id.to_owned()
}

fn http(
    url: &str,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Value) {
    let mut req = reqwest::blocking::Client::new()
        .request(method, format!("{url}{path}"))
        .timeout(WAIT)
        .header("Content-Type", "application/json")
        .body(body.to_owned());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().expect("HTTP request");
    let status = resp.status().as_u16();
    (status, resp.json().expect("JSON"))
}

fn get(url: &str, path: &str) -> Value {
    let (status, body) = http(url, reqwest::Method::GET, path, &[], "");
    assert_eq!(status, 200, "{body}");
    body
}

fn approve(url: &str, id: &str, decision: &str, body: &str) -> u16 {
    http(
        url,
        reqwest::Method::POST,
        &format!("/approvals/{id}/{decision}"),
        &[],
        body,
    )
    .0
}

/// `POST /tool/approver.run` as `agent:<agent>` touching `file`, answered at once.
fn touch_async(url: &str, agent: &str, file: &str) -> (u16, Value) {
    let auth = format!("Bearer agent:{agent}");
    http(
        url,
        reqwest::Method::POST,
        "/tool/approver.run",
        &[("Authorization", &auth), ("Prefer", "respond-async")],
        &json!({"params": {"args": [file]}}).to_string(),
    )
}

/// Waits for one pending approval on the HTTP API at `url`; returns its full id.
fn pending_id(url: &str) -> String {
    let (id, _) = wait_for(WAIT, || {
        let list = get(url, "/approvals?status=pending");
        list[0]["id"].as_str().map(str::to_owned)
    })
    .expect("a pending approval");
    id
}

#[test]
fn supervisor_tools_are_listed_and_callable_only_by_supervisor_agents_over_stdio() {
    let yaml = config("supervisor:\n  supervisor_agents: [\"boss\", \"lead-*\"]\n");
    for agent in ["boss", "lead-7"] {
        let mut s = StdioMcp::start(&yaml, agent);
        assert_eq!(s.virtual_tools(), VIRTUAL, "{agent}");
        let answer = s.call("approval.pending", &json!({}));
        assert_eq!(result_text(&answer), "No pending approvals.", "{agent}");
    }
    let mut s = StdioMcp::start(&yaml, "claude");
    assert_eq!(
        s.virtual_tools(),
        ["grant.list", "grant.delegate", "mesh.catalog"]
    );
    for tool in SUPERVISOR_ONLY {
        let answer = s.call(tool, &json!({"id": "x", "decision": "approve"}));
        assert_eq!(error_of(&answer), (-32601, operator_only(tool).as_str()));
    }
    assert_eq!(
        result_text(&s.call("grant.list", &json!({}))),
        "No active grants."
    );
    // The catalog shows every virtual tool, callable or not (flux7).
    let catalog: Value = serde_json::from_str(result_text(
        &s.call("mesh.catalog", &json!({"source": "mesh"})),
    ))
    .expect("catalog JSON");
    assert_eq!(catalog["groups"]["mesh"]["count"], 10, "{catalog}");
}

#[test]
fn a_self_declared_supervisor_over_mcp_http_is_not_trusted() {
    let locked = config(
        "auth:\n  admin_token: adm\n  agent_tokens: { boss-secret: boss }\nsupervisor:\n  supervisor_agents: [boss]\n",
    );
    let trusting =
        config("auth:\n  trust_declared_agents: true\nsupervisor:\n  supervisor_agents: [boss]\n");
    let (locked, trusting) = (Daemon::start(&locked), Daemon::start(&trusting));
    let table = [
        (&locked, "Bearer agent:boss", false),
        (&locked, "Bearer agent:claude", false),
        (&locked, "Bearer boss-secret", true),
        (&locked, "Bearer adm", true),
        (&trusting, "Bearer agent:boss", true),
        (&trusting, "Bearer agent:claude", false),
    ];
    for (d, authorization, supervisor) in table {
        let s = McpHttp::open(&d.url, authorization);
        let answer = s.call("approval.pending", &json!({}));
        if supervisor {
            assert_eq!(virtual_tools(&s), VIRTUAL, "{authorization}");
            assert_eq!(
                result_text(&answer),
                "No pending approvals.",
                "{authorization}"
            );
        } else {
            assert_eq!(
                virtual_tools(&s),
                ["grant.list", "grant.delegate", "mesh.catalog"],
                "{authorization}"
            );
            assert_eq!(
                error_of(&answer),
                (-32601, operator_only("approval.pending").as_str()),
                "{authorization}"
            );
        }
    }
}

#[test]
fn approval_resolve_and_pending_answer_with_flux7_texts_and_update_the_trace() {
    let mut s = StdioMcp::start(
        &config("supervisor:\n  supervisor_agents: [boss]\n"),
        "boss",
    );
    let (status, body) = touch_async(&s.url, "claude", &s.path("x.txt"));
    assert_eq!(status, 202, "{body}");
    let id = body["approval_id"]
        .as_str()
        .expect("approval_id")
        .to_owned();
    let short = &id[..8];

    let text = result_text(&s.call("approval.pending", &json!({}))).to_owned();
    let line =
        format!("Pending approvals (1):\n- ID: {short}  tool: approver.run  agent: claude  age: ");
    assert!(text.starts_with(&line) && text.ends_with("s\n"), "{text:?}");

    let table = [
        (
            json!({"decision": "approve"}),
            "Missing 'id' parameter".to_owned(),
        ),
        (
            json!({"id": short, "decision": "maybe"}),
            "Invalid 'decision': must be 'approve' or 'deny'".to_owned(),
        ),
        (
            json!({"id": "ffffffff", "decision": "approve"}),
            "Approval not found: ffffffff".to_owned(),
        ),
    ];
    for (args, message) in table {
        let answer = s.call("approval.resolve", &args);
        assert_eq!(error_of(&answer), (-32602, message.as_str()), "{args}");
    }

    let answer = s.call(
        "approval.resolve",
        &json!({"id": short, "decision": "deny", "reasoning": "not now"}),
    );
    assert_eq!(
        result_text(&answer),
        "Denied. Tool approver.run was not executed."
    );
    assert!(!is_error(&answer));
    let answer = s.call(
        "approval.resolve",
        &json!({"id": short, "decision": "approve"}),
    );
    assert_eq!(
        result_text(&answer),
        "Cannot resolve: approval already resolved"
    );
    assert!(is_error(&answer), "{answer}");
    assert_eq!(
        result_text(&s.call("approval.pending", &json!({}))),
        "No pending approvals."
    );

    let view = get(&s.url, &format!("/approvals/{id}"));
    assert_eq!(view["status"], "denied");
    assert_eq!(view["resolved_by"], "mcp:boss");
    assert_eq!(view["reasoning"], "not now");
    let traces = get(&s.url, "/traces");
    let trace = &traces[0];
    assert_eq!(trace["agent_id"], "claude", "{traces}");
    assert_eq!(trace["approval_status"], "denied", "{trace}");
    assert_eq!(trace["approved_by"], "mcp:boss", "{trace}");
    // Virtual tools are not traced.
    assert_eq!(traces.as_array().map(Vec::len), Some(1), "{traces}");
}

#[test]
fn approved_over_http_the_identical_stdio_retry_runs_once() {
    let mut s = StdioMcp::start(&config(""), "claude");
    let file = s.path("retried.txt");
    let args = json!({"args": [&file]});
    let first = required_id(&s.call("approver.run", &args));
    let id = pending_id(&s.url);
    assert!(id.starts_with(&first));
    assert_eq!(approve(&s.url, &first, "approve", ""), 200);

    let answer = s.call("approver.run", &args);
    assert!(!is_error(&answer), "{answer}");
    assert_eq!(
        answer["result"]["structuredContent"]["exit_code"], 0,
        "{answer}"
    );
    assert!(Path::new(&file).exists());

    let again = required_id(&s.call("approver.run", &args));
    assert_ne!(again, first);
}

#[test]
fn resolved_with_approval_resolve_over_mcp_http_the_identical_http_retry_runs_once() {
    let d = Daemon::start(&config(
        "auth:\n  agent_tokens: { boss-secret: boss }\nsupervisor:\n  supervisor_agents: [boss]\n",
    ));
    let file = d.path("resolved.txt").display().to_string();
    let (status, body) = touch_async(&d.url, "claude", &file);
    assert_eq!(status, 202, "{body}");
    let id = body["approval_id"]
        .as_str()
        .expect("approval_id")
        .to_owned();

    let boss = McpHttp::open(&d.url, "Bearer boss-secret");
    let answer = boss.call(
        "approval.resolve",
        &json!({"id": &id[..8], "decision": "approve"}),
    );
    assert_eq!(
        result_text(&answer),
        format!(
            "Approved. The requesting agent's identical call will run once (id: {}).",
            &id[..8]
        )
    );
    // Nothing ran for the resolver.
    assert!(!Path::new(&file).exists());

    let (status, body) = touch_async(&d.url, "claude", &file);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["approval_id"], id.as_str());
    assert!(Path::new(&file).exists());
    let (status, body) = touch_async(&d.url, "claude", &file);
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        get(&d.url, &format!("/approvals/{id}"))["resolved_by"],
        "mcp:boss"
    );
}

#[test]
fn no_supervisor_resolves_or_grants_its_own_pending_call() {
    let mut s = StdioMcp::start(
        &config("supervisor:\n  supervisor_agents: [boss]\n"),
        "boss",
    );
    let id = required_id(&s.call("approver.run", &json!({"args": [s.path("own.txt")]})));
    let answer = s.call(
        "approval.resolve",
        &json!({"id": id, "decision": "approve"}),
    );
    assert_eq!(
        error_of(&answer),
        (-32602, "an agent cannot resolve its own approval")
    );
    let answer = s.call(
        "grant.create",
        &json!({"tools": "approver.*", "duration": "10m"}),
    );
    assert_eq!(
        error_of(&answer),
        (
            -32602,
            "an agent cannot grant itself a call it is waiting approval for"
        )
    );
    assert_eq!(
        get(&s.url, "/approvals?status=pending")[0]["agent_id"],
        "boss"
    );
    assert_eq!(get(&s.url, "/grants"), json!([]));
}

#[test]
fn grant_tools_over_stdio_validate_and_a_grant_lifts_approval() {
    let mut s = StdioMcp::start(
        &config("supervisor:\n  supervisor_agents: [boss]\n"),
        "boss",
    );
    assert_eq!(
        result_text(&s.call("grant.list", &json!({}))),
        "No active grants."
    );
    let table = [
        (json!({}), "tools and duration are required"),
        (
            json!({"tools": "approver.run"}),
            "tools and duration are required",
        ),
        (
            json!({"tools": "approver.run", "duration": "1d"}),
            "invalid duration: unknown unit \"d\" in duration \"1d\"",
        ),
        (
            json!({"tools": "approver.run", "duration": "25h"}),
            "duration exceeds maximum (24h0m0s)",
        ),
        (
            json!({"tools": "approver.run", "duration": "0"}),
            "invalid duration: must be > 0",
        ),
        (
            json!({"tools": "approver.run", "duration": "30m", "max_calls": 0}),
            "max_calls must be at least 1 (leave it out for no limit)",
        ),
    ];
    for (args, message) in table {
        let answer = s.call("grant.create", &args);
        assert_eq!(error_of(&answer), (-32602, message), "{args}");
    }

    let text = result_text(&s.call(
        "grant.create",
        &json!({"tools": "approver.run", "duration": "30m"}),
    ))
    .to_owned();
    let lines: Vec<&str> = text.split('\n').collect();
    let id = lines[0].strip_prefix("Grant created: ").expect("grant id");
    assert_eq!(id.len(), 16, "{text}");
    assert_eq!(
        lines[1..3],
        ["  agent: boss", "  tools: approver.run"],
        "{text}"
    );
    assert!(
        lines[3].starts_with("  expires: ") && lines[3].ends_with('Z'),
        "{text}"
    );
    assert!(
        lines[4] == "  remaining: 30m0s" || lines[4] == "  remaining: 29m59s",
        "{text}"
    );
    let view = &get(&s.url, "/grants")[0];
    assert_eq!(view["granted_by"], "mcp:boss", "{view}");

    let answer = s.call("approver.run", &json!({"args": [s.path("granted.txt")]}));
    assert!(!is_error(&answer), "{answer}");
    assert!(Path::new(&s.path("granted.txt")).exists());
    let trace = &get(&s.url, "/traces")[0];
    assert_eq!(trace["policy_rule"], format!("grant:{id}"), "{trace}");

    let listed = result_text(&s.call("grant.list", &json!({}))).to_owned();
    let expected = format!(
        "Active grants (1):\n- ID: {}  tools: approver.run  agent: boss  remaining: ",
        &id[..8]
    );
    assert!(
        listed.starts_with(&expected) && listed.ends_with("s\n"),
        "{listed:?}"
    );

    let table = [
        (json!({}), "id is required"),
        (json!({"id": "zzzz"}), "grant not found: zzzz"),
    ];
    for (args, message) in table {
        assert_eq!(
            error_of(&s.call("grant.revoke", &args)),
            (-32602, message),
            "{args}"
        );
    }
    let answer = s.call("grant.revoke", &json!({"id": &id[..8]}));
    assert_eq!(result_text(&answer), format!("Grant revoked: {}", &id[..8]));
    assert_eq!(
        result_text(&s.call("grant.list", &json!({}))),
        "No active grants."
    );
    required_id(&s.call("approver.run", &json!({"args": [s.path("revoked.txt")]})));
}

#[test]
fn a_grant_made_over_mcp_http_honours_max_calls_and_condition_for_another_agent() {
    let d = Daemon::start(&config(
        "auth:\n  agent_tokens: { boss-secret: boss }\nsupervisor:\n  supervisor_agents: [boss]\n",
    ));
    let boss = McpHttp::open(&d.url, "Bearer boss-secret");
    let answer = boss.call(
        "grant.create",
        &json!({
            "agent": "claude",
            "tools": "approver.run",
            "duration": "1h",
            "max_calls": 1,
            "condition": {"field": "stdin", "operator": "==", "value": "reviewed"},
        }),
    );
    assert!(
        result_text(&answer).contains("\n  agent: claude\n"),
        "{answer}"
    );

    let claude = McpHttp::open(&d.url, "Bearer agent:claude");
    let touch = |name: &str, stdin: &str| {
        claude.call(
            "approver.run",
            &json!({"args": [d.path(name).display().to_string()], "stdin": stdin}),
        )
    };
    required_id(&touch("a.txt", "unreviewed"));
    let answer = touch("b.txt", "reviewed");
    assert!(!is_error(&answer), "{answer}");
    required_id(&touch("c.txt", "reviewed"));
    assert!(d.path("b.txt").exists());
    assert!(!d.path("a.txt").exists() && !d.path("c.txt").exists());
    // Used up; grant.list is for everyone.
    assert_eq!(
        result_text(&claude.call("grant.list", &json!({}))),
        "No active grants."
    );

    // Invalid condition and max_calls are refused.
    let answer = boss.call(
        "grant.create",
        &json!({"tools": "x", "duration": "1m", "max_calls": "two"}),
    );
    assert_eq!(error_of(&answer).0, -32602, "{answer}");
    let answer = boss.call(
        "grant.create",
        &json!({"tools": "x", "duration": "1m", "condition": {"field": "a", "operator": "~~", "value": 1}}),
    );
    assert_eq!(error_of(&answer).0, -32602, "{answer}");
    assert!(
        error_of(&answer).1.starts_with("invalid condition"),
        "{answer}"
    );
}

#[test]
fn supervisor_mode_blocks_an_mcp_call_until_resolved_while_pings_are_answered() {
    let mut s = StdioMcp::start(&config("supervisor:\n  enabled: true\n"), "claude");
    let file = s.path("blocked.txt");
    s.mcp.request(
        100,
        "tools/call",
        &json!({"name": "approver.run", "arguments": {"args": [&file]}}),
    );
    let id = pending_id(&s.url);
    s.mcp.request(101, "ping", &json!({}));
    assert_eq!(
        s.mcp.recv(WAIT),
        json!({"jsonrpc": "2.0", "id": 101, "result": {}})
    );
    assert!(!Path::new(&file).exists());
    assert_eq!(approve(&s.url, &id, "approve", ""), 200);
    let answer = s.mcp.recv(WAIT);
    assert_eq!(answer["id"], 100, "{answer}");
    assert!(!is_error(&answer), "{answer}");
    assert_eq!(
        answer["result"]["structuredContent"]["exit_code"], 0,
        "{answer}"
    );
    assert!(Path::new(&file).exists());

    let denied = s.path("denied.txt");
    s.mcp.request(
        102,
        "tools/call",
        &json!({"name": "approver.run", "arguments": {"args": [&denied]}}),
    );
    let id = pending_id(&s.url);
    let status = approve(&s.url, &id, "deny", r#"{"reasoning": "not today"}"#);
    assert_eq!(status, 200);
    let answer = s.mcp.recv(WAIT);
    assert_eq!(answer["id"], 102, "{answer}");
    assert_eq!(result_text(&answer), "Denied by supervisor: not today");
    assert!(is_error(&answer));
    assert!(!Path::new(&denied).exists());
}

/// Calls `approver.run` over `/mcp` with the official Python SDK and checks that the result is
/// the tool's own once a supervisor approves it.
const PYTHON_BLOCKED_CALL: &str = r#"
import asyncio, sys
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

async def main():
    url, authorization, path = sys.argv[1:4]
    http = create_mcp_http_client(headers={"Authorization": authorization})
    async with http, streamable_http_client(url, http_client=http) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            result = await session.call_tool("approver.run", {"args": [path]})
            assert not result.is_error, result
            assert result.structured_content["exit_code"] == 0, result
    print("ok")

asyncio.run(main())
"#;

#[test]
#[allow(clippy::disallowed_types)] // drives the Python client synchronously
fn python_sdk_call_over_mcp_http_waits_for_the_supervisor_and_gets_the_result() {
    let d = Daemon::start(&config("supervisor:\n  enabled: true\n"));
    let file = d.path("python.txt").display().to_string();
    let mut child = std::process::Command::new(python())
        .arg("-c")
        .arg(PYTHON_BLOCKED_CALL)
        .args([
            format!("{}/mcp", d.url).as_str(),
            "Bearer agent:claude",
            &file,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python");
    let id = pending_id(&d.url);
    assert!(!Path::new(&file).exists());
    assert_eq!(approve(&d.url, &id, "approve", ""), 200);
    let deadline = Instant::now() + WAIT;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::park_timeout(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("python output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && text.contains("ok"), "{text}");
    assert!(Path::new(&file).exists());
}

#[test]
fn tty_channel_over_mcp_refuses_without_queueing() {
    let mut s = StdioMcp::start(&config("approval:\n  channel: tty\n"), "claude");
    let answer = s.call("approver.run", &json!({"args": [s.path("tty.txt")]}));
    assert!(is_error(&answer), "{answer}");
    assert_eq!(
        result_text(&answer),
        "Approval denied: approval.channel is 'tty' but no interactive terminal is available. Use 'queue' or 'tty-fallback' for headless deployments."
    );
    assert_eq!(get(&s.url, "/approvals"), json!([]));
    assert!(!Path::new(&s.path("tty.txt")).exists());
}

#[test]
fn a_holder_delegates_part_of_its_grant_to_a_sub_agent_over_stdio() {
    let mut lead = StdioMcp::start(&config(""), "lead");
    let create = |body: Value| {
        let (status, grant) = http(
            &lead.url,
            reqwest::Method::POST,
            "/grants",
            &[],
            &body.to_string(),
        );
        assert_eq!(status, 201, "{grant}");
        grant["id"].as_str().expect("grant id").to_owned()
    };
    let root =
        create(json!({"agent": "lead", "tools": "approver.run", "duration": "1h", "max_calls": 3}));
    let other = create(json!({"agent": "other", "tools": "*", "duration": "1h"}));
    let table = [
        (json!({}), "id and agent are required".to_owned()),
        (json!({"id": root}), "id and agent are required".to_owned()),
        (
            json!({"id": "zzzz", "agent": "sub"}),
            "grant not found: zzzz".to_owned(),
        ),
        (
            json!({"id": other, "agent": "sub"}),
            format!("grant {other} does not cover agent lead: only its holder may delegate it"),
        ),
        (
            json!({"id": root, "agent": "sub-*"}),
            "a delegated grant is for one agent: \"sub-*\" is a pattern".to_owned(),
        ),
        (
            json!({"id": root, "agent": "sub", "duration": "2h"}),
            "duration exceeds the parent grant's remaining time (59m59s)".to_owned(),
        ),
        (
            json!({"id": root, "agent": "sub", "max_calls": 4}),
            "max_calls exceeds the parent grant's remaining calls (3)".to_owned(),
        ),
        (
            json!({"id": root, "agent": "sub", "duration": "1d"}),
            "invalid duration: unknown unit \"d\" in duration \"1d\"".to_owned(),
        ),
        (
            json!({"id": root, "agent": "sub", "max_calls": -1}),
            "invalid max_calls: must be a non-negative integer".to_owned(),
        ),
        (
            json!({"id": root, "agent": "sub", "max_calls": 0}),
            "max_calls must be at least 1 (leave it out for no limit)".to_owned(),
        ),
    ];
    for (args, message) in table {
        let answer = lead.call("grant.delegate", &args);
        let (code, got) = error_of(&answer);
        assert_eq!(code, -32602, "{args}: {answer}");
        // The parent's remaining time may have ticked a second.
        let same = got == message || got.replace("(1h0m0s)", "(59m59s)") == message;
        assert!(same, "{args}: {got:?} != {message:?}");
    }
    let answer = lead.call(
        "grant.delegate",
        &json!({"id": root, "agent": "sub", "condition": {"field": "path", "operator": "~"}}),
    );
    let (code, message) = error_of(&answer);
    assert_eq!(code, -32602, "{answer}");
    assert!(message.starts_with("invalid condition: "), "{answer}");
    assert_eq!(get(&lead.url, "/grants").as_array().map(Vec::len), Some(2));

    let text = result_text(&lead.call(
        "grant.delegate",
        &json!({"id": &root[..8], "agent": "sub", "max_calls": 1}),
    ))
    .to_owned();
    let lines: Vec<&str> = text.split('\n').collect();
    let child = lines[0]
        .strip_prefix("Grant delegated: ")
        .unwrap_or_else(|| panic!("{text}"))
        .to_owned();
    assert_eq!(
        [lines[1], lines[2], lines[5], lines[6]],
        [
            "  agent: sub",
            "  tools: approver.run",
            "  max_calls: 1",
            &format!("  from: {root}")
        ],
        "{text}"
    );
    let view = &get(&lead.url, "/grants")[2];
    assert_eq!(
        (view["parent"].as_str(), view["granted_by"].as_str()),
        (Some(root.as_str()), Some("mcp:lead")),
        "{view}"
    );

    // The sub-agent runs the tool on the delegated grant, once; the call counts on the root.
    let (status, body) = touch_async(&lead.url, "sub", &lead.path("sub-1.txt"));
    assert_eq!(status, 200, "{body}");
    let trace = &get(&lead.url, "/traces?agent=sub")[0];
    assert_eq!(trace["policy_rule"], format!("grant:{child}"), "{trace}");
    let (status, body) = touch_async(&lead.url, "sub", &lead.path("sub-2.txt"));
    assert_eq!(status, 202, "the delegated grant is used up: {body}");
    let grants = get(&lead.url, "/grants");
    assert_eq!(grants.as_array().map(Vec::len), Some(2), "{grants}");
    assert_eq!(grants[0]["calls"], 1, "{grants}");

    // Revoking the root revokes what was delegated from it.
    let text =
        result_text(&lead.call("grant.delegate", &json!({"id": root, "agent": "sub2"}))).to_owned();
    let second = text
        .split('\n')
        .next()
        .and_then(|l| l.strip_prefix("Grant delegated: "))
        .expect("second delegation")
        .to_owned();
    let listed = result_text(&lead.call("grant.list", &json!({}))).to_owned();
    assert!(
        listed.contains("agent: sub2  remaining: ")
            && listed.contains(&format!("  from: {}\n", &root[..8])),
        "{listed}"
    );
    let (status, body) = http(
        &lead.url,
        reqwest::Method::DELETE,
        &format!("/grants/{root}"),
        &[],
        "",
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["revoked_with"], json!([second]), "{body}");
    let (status, _) = touch_async(&lead.url, "sub2", &lead.path("sub2.txt"));
    assert_eq!(status, 202);
    assert!(!Path::new(&lead.path("sub2.txt")).exists());
}

#[test]
fn approval_resolve_with_a_grant_lets_the_agents_next_calls_through() {
    let mut boss = StdioMcp::start(
        &config("supervisor:\n  supervisor_agents: [boss]\n"),
        "boss",
    );
    let (status, _) = touch_async(&boss.url, "claude", &boss.path("first.txt"));
    assert_eq!(status, 202);
    let id = pending_id(&boss.url);
    let table = [
        (
            json!({"id": id, "decision": "deny", "grant": {"duration": "30m"}}),
            "a grant goes with an approval, not with a denial",
        ),
        (
            json!({"id": id, "decision": "approve", "grant": "30m"}),
            "grant must be an object",
        ),
        (
            json!({"id": id, "decision": "approve", "grant": {}}),
            "grant.duration is required",
        ),
        (
            json!({"id": id, "decision": "approve", "grant": {"duration": "30m", "max_call": 2}}),
            "grant: unknown field \"max_call\"",
        ),
        (
            json!({"id": id, "decision": "approve", "grant": {"duration": "25h"}}),
            "duration exceeds maximum (24h0m0s)",
        ),
    ];
    for (args, message) in table {
        let answer = boss.call("approval.resolve", &args);
        assert_eq!(error_of(&answer), (-32602, message), "{args}");
    }
    // Refused terms leave the approval pending and make no grant.
    assert_eq!(
        get(&boss.url, &format!("/approvals/{id}"))["status"],
        "pending"
    );
    assert_eq!(get(&boss.url, "/grants"), json!([]));

    let answer = boss.call(
        "approval.resolve",
        &json!({"id": &id[..8], "decision": "approve", "grant": {"duration": "30m", "max_calls": 2}}),
    );
    let text = result_text(&answer);
    assert!(
        text.starts_with(&format!(
            "Approved. The requesting agent's identical call will run once (id: {}).\nGrant created: ",
            &id[..8]
        )) && text.contains("\n  agent: claude\n  tools: approver.run\n")
            && text.contains("\n  max_calls: 2"),
        "{text}"
    );
    let grant = &get(&boss.url, "/grants")[0];
    assert_eq!(grant["granted_by"], "mcp:boss", "{grant}");
    for name in ["second.txt", "third.txt"] {
        let (status, body) = touch_async(&boss.url, "claude", &boss.path(name));
        assert_eq!(status, 200, "{name}: {body}");
    }
    let (status, _) = touch_async(&boss.url, "claude", &boss.path("fourth.txt"));
    assert_eq!(status, 202, "the grant is used up");
}
