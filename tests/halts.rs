//! Emergency stops through the real `mesh7 serve`: `POST /halts` stops an agent, a session or
//! everyone on every ingress until `DELETE /halts/{id}`; a halt outlives a SIGKILL (store) and
//! stops a call that was waiting for its approval when the approval comes; loop detection
//! escalates to a halt with `loop_detection.halt_after`.

mod common;
#[allow(dead_code, unreachable_pub)] // shared helpers: each test file uses part of them
mod mcp_support;

use std::time::Duration;

use common::{Daemon, wait_for};
use mcp_support::{GOVERNED, McpHttp};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

fn halt(d: &Daemon, body: &Value) -> (u16, Value) {
    d.post("/halts", None, &body.to_string())
}

/// A `tools/call` of `echo.run` over `/mcp` as `agent`: the result object.
fn mcp_echo(d: &Daemon, agent: &str) -> Value {
    let session = McpHttp::open(&d.url, &format!("Bearer agent:{agent}"));
    session.call("echo.run", &json!({"args": ["hi"]}))["result"].clone()
}

#[test]
fn a_halted_agent_is_stopped_on_every_ingress_until_the_halt_is_lifted() {
    let d = Daemon::start(GOVERNED);
    let echo = json!({"args": ["hi"]});

    let (status, created) = halt(&d, &json!({"agent": "claude", "reason": "runaway loop"}));
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        (&created["scope"], &created["target"]),
        (&json!("agent"), &json!("claude"))
    );
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(id.len(), 16, "{created}");
    assert!(
        created["created_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{created}"
    );

    let (status, body) = d.call("claude", "echo.run", &echo);
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["policy"], "deny", "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("halted by http:127.0.0.1:") && error.ends_with(": runaway loop"),
        "{body}"
    );
    let (_, decided) = d.decide("claude", "echo.run", &echo);
    assert_eq!(decided["action"], "deny", "{decided}");
    assert_eq!(decided["rule"], format!("halt:{id}"), "{decided}");
    let over_mcp = mcp_echo(&d, "claude");
    assert_eq!(over_mcp["isError"], true, "{over_mcp}");
    let governance = &over_mcp["_meta"]["mesh7/governance"];
    assert_eq!(governance["outcome"], "halted", "{over_mcp}");
    assert_eq!(governance["rule"], format!("halt:{id}"), "{over_mcp}");
    // The trace says which halt stopped it.
    let traced = d.trace_of("echo.run", |e| e["agent_id"] == "claude");
    assert_eq!(traced["policy_rule"], format!("halt:{id}"), "{traced}");

    // Other agents are not concerned.
    assert_eq!(d.call("bob", "echo.run", &echo).0, 200);
    assert_eq!(mcp_echo(&d, "bob")["isError"], false);

    let (status, listed) = d.get("/halts", None);
    assert_eq!(status, 200);
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    let (status, lifted) = d.delete(&format!("/halts/{id}"));
    assert_eq!(status, 200, "{lifted}");
    assert_eq!(lifted["lifted"]["id"], id.as_str());
    assert_eq!(d.call("claude", "echo.run", &echo).0, 200);

    // Bad input: a JSON error, nothing put in place.
    let (status, body) = d.delete(&format!("/halts/{id}"));
    assert_eq!((status, &body["error"]), (404, &json!("halt not found")));
    for bad in [
        json!({}),
        json!({"agent": "a", "all": true}),
        json!({"agent": "a", "session": "s"}),
        json!({"agent": " "}),
        json!({"agnet": "a"}),
        json!({"all": "yes"}),
    ] {
        let (status, body) = halt(&d, &bad);
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}"
        );
    }
    let (status, body) = d.post("/halts", None, "{not json");
    assert_eq!(status, 400, "{body}");
    assert_eq!(d.get("/halts", None).1, json!([]));
}

#[test]
fn everyone_and_sessions_can_be_halted() {
    let d = Daemon::start(GOVERNED);
    let echo = json!({"args": ["hi"]});
    let (status, session_halt) = halt(&d, &json!({"session": "s-42"}));
    assert_eq!(status, 201, "{session_halt}");
    let in_session = |d: &Daemon, session: &str| {
        d.post_with(
            "/tool/echo.run",
            &[
                ("Authorization", "Bearer agent:claude"),
                ("X-Session-Id", session),
            ],
            &json!({ "params": echo }).to_string(),
        )
        .0
    };
    assert_eq!(in_session(&d, "s-42"), 403);
    assert_eq!(in_session(&d, "s-43"), 200);

    let (status, all) = halt(&d, &json!({"all": true, "reason": "incident"}));
    assert_eq!(status, 201, "{all}");
    assert_eq!(all["scope"], "all");
    for agent in ["claude", "bob", "ops-bot"] {
        assert_eq!(d.call(agent, "echo.run", &echo).0, 403, "{agent}");
    }
    let id = all["id"].as_str().expect("id");
    assert_eq!(d.delete(&format!("/halts/{id}")).0, 200);
    assert_eq!(d.call("bob", "echo.run", &echo).0, 200);
}

#[test]
fn a_halt_survives_sigkill_and_stops_a_call_that_was_waiting_for_its_approval() {
    let state = tempfile::tempdir().expect("state dir");
    let yaml = format!(
        "storage_path: \"{}/store\"\n{GOVERNED}",
        state.path().display()
    );
    let mut d = Daemon::start(&yaml);
    let file = state.path().join("approved.txt");

    // A blocking call: it waits for its approval.
    let waiting = d.call_in_background("claude", "approver.run", &json!({"args": [file]}));
    let pending = d.pending_approval();

    let (status, created) = halt(&d, &json!({"agent": "claude"}));
    assert_eq!(status, 201, "{created}");
    let (status, _) = d.post(&format!("/approvals/{pending}/approve"), None, "");
    assert_eq!(status, 200);
    let (status, answer) = waiting.join().expect("the caller's thread");
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("halted by ")),
        "{answer}"
    );
    assert!(!file.exists(), "the halted call ran");

    // SIGKILL: no shutdown code runs; the halt is in the store.
    d.child.kill().expect("SIGKILL");
    d.child.wait().expect("reap");
    let d = Daemon::start(&yaml);
    let (_, listed) = d.get("/halts", None);
    assert_eq!(listed[0]["id"], created["id"], "{listed}");
    assert_eq!(d.call("claude", "echo.run", &json!({"args": ["x"]})).0, 403);
}

#[test]
fn a_halt_wins_over_the_rate_limit_and_does_not_count_against_it() {
    let limited = GOVERNED.replace(
        "  - name: governed\n    agent: \"*\"\n",
        "  - name: governed\n    agent: \"*\"\n    rate_limit: { max_per_minute: 1 }\n",
    );
    assert_ne!(limited, GOVERNED);
    let d = Daemon::start(&limited);
    let echo = json!({"args": ["hi"]});
    assert_eq!(d.call("claude", "echo.run", &echo).0, 200);
    assert_eq!(d.call("claude", "echo.run", &echo).0, 429);
    let (_, created) = halt(&d, &json!({"agent": "bob"}));
    let (status, body) = d.call("bob", "echo.run", &echo);
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("halted by ")),
        "{body}"
    );
    let (status, _) = halt(&d, &json!({"agent": "claude"}));
    assert_eq!(status, 201);
    let (status, body) = d.call("claude", "echo.run", &echo);
    assert_eq!((status, &body["policy"]), (403, &json!("deny")), "{body}");
    // Lifted: bob's minute is still unused.
    let id = created["id"].as_str().expect("id");
    assert_eq!(d.delete(&format!("/halts/{id}")).0, 200);
    assert_eq!(d.call("bob", "echo.run", &echo).0, 200);
}

#[test]
fn a_halt_stops_a_call_that_is_already_running() {
    let d = Daemon::start(GOVERNED);
    let running = d.call_in_background("claude", "sleep.run", &json!({"args": ["15"]}));
    let (sleeper, _) = wait_for(WAIT, || common::child_of(d.child.id())).expect("the tool runs");

    let (status, created) = halt(&d, &json!({"agent": "claude", "reason": "stop it"}));
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id");
    let (status, body) = running.join().expect("the caller thread");
    assert_eq!(status, 403, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with(&format!(
            "stopped while running by halt:{id} (halted by http:"
        )) && error.ends_with(": stop it)"),
        "{body}"
    );
    wait_for(WAIT, || common::process_gone(sleeper).then_some(()))
        .expect("the tool's process is killed");
    let traced = d.trace_of("sleep.run", |e| e["agent_id"] == "claude");
    assert!(
        traced.to_string().contains("stopped while running"),
        "{traced}"
    );

    // Over MCP the stopped call is a tool error whose outcome says halted.
    let url = d.url.clone();
    let running = std::thread::spawn(move || {
        McpHttp::open(&url, "Bearer agent:bob").call("sleep.run", &json!({"args": ["15"]}))
    });
    wait_for(WAIT, || {
        common::child_of(d.child.id()).filter(|&pid| pid != sleeper)
    })
    .expect("the tool runs");
    assert_eq!(halt(&d, &json!({"agent": "bob"})).0, 201);
    let answer = running.join().expect("the caller thread");
    let result = &answer["result"];
    assert_eq!(result["isError"], true, "{answer}");
    assert_eq!(
        result["_meta"]["mesh7/governance"]["outcome"], "halted",
        "{answer}"
    );
}

#[test]
fn a_supervisor_agent_halts_and_lifts_over_mcp_and_others_cannot() {
    let d = Daemon::start(&format!(
        "{GOVERNED}supervisor:\n  supervisor_agents: [\"lead-*\"]\nauth:\n  agent_tokens: {{ \"lead-token-0123456789abcdef\": lead-1 }}\n"
    ));
    let lead = McpHttp::open(&d.url, "Bearer lead-token-0123456789abcdef");
    let halt_tools = |names: Vec<String>| -> Vec<String> {
        names
            .into_iter()
            .filter(|n| n.starts_with("halt."))
            .collect()
    };
    assert_eq!(
        halt_tools(lead.tool_names()),
        ["halt.create", "halt.list", "halt.lift"]
    );
    let text = |answer: &Value| -> String {
        assert!(answer.get("error").is_none(), "{answer}");
        answer["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_else(|| panic!("no text: {answer}"))
            .to_owned()
    };
    let created = text(&lead.call(
        "halt.create",
        &json!({"agent": "claude", "reason": "runaway loop"}),
    ));
    assert!(
        created.starts_with("Halted agent claude (id: "),
        "{created}"
    );
    let id = created["Halted agent claude (id: ".len()..][..16].to_owned();

    // In effect on every ingress, made by the supervisor.
    let (status, body) = d.call("claude", "echo.run", &json!({"args": ["hi"]}));
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body["error"], "halted by mcp:lead-1: runaway loop",
        "{body}"
    );
    let (_, halts) = d.get("/halts", None);
    assert_eq!(halts[0]["id"], id.as_str(), "{halts}");
    assert_eq!(halts[0]["created_by"], "mcp:lead-1", "{halts}");
    let listed = text(&lead.call("halt.list", &json!({})));
    assert!(
        listed.contains(&format!("- ID: {id}  stops: agent claude  by: mcp:lead-1")),
        "{listed}"
    );

    // Bad arguments are JSON-RPC errors that change nothing.
    let error = |answer: Value| {
        (
            answer["error"]["code"].as_i64().unwrap_or_default(),
            answer["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        )
    };
    let one_of = "give exactly one of agent, session or \"all\": true".to_owned();
    for args in [
        json!({"reason": "no scope"}),
        json!({"agent": "claude", "all": true}),
        json!({"agent": "claude", "session": "s"}),
    ] {
        assert_eq!(
            error(lead.call("halt.create", &args)),
            (-32602, one_of.clone()),
            "{args}"
        );
    }
    assert_eq!(
        error(lead.call("halt.create", &json!({"all": "yes"}))),
        (-32602, "invalid all: must be a boolean".to_owned())
    );
    assert_eq!(
        error(lead.call("halt.lift", &json!({"id": "0000000000000000"}))),
        (-32602, "halt not found".to_owned())
    );
    assert_eq!(
        error(lead.call("halt.lift", &json!({}))),
        (-32602, "id is required".to_owned())
    );
    // An agent that is not a supervisor neither sees nor calls them.
    let claude = McpHttp::open(&d.url, "Bearer agent:claude");
    assert!(halt_tools(claude.tool_names()).is_empty());
    let (code, message) = error(claude.call("halt.lift", &json!({"id": id})));
    assert_eq!(code, -32601, "{message}");
    assert!(
        message.starts_with("halt.lift is operator-only"),
        "{message}"
    );
    assert_eq!(d.get("/halts", None).1.as_array().map(Vec::len), Some(1));

    let lifted = text(&lead.call("halt.lift", &json!({"id": id})));
    assert_eq!(lifted, format!("Halt lifted: {id} (agent claude)"));
    assert_eq!(
        text(&lead.call("halt.list", &json!({}))),
        "No halts in effect."
    );
    let (status, body) = d.call("claude", "echo.run", &json!({"args": ["hi"]}));
    assert_eq!(status, 200, "{body}");
}

#[test]
fn a_session_that_keeps_looping_is_halted_until_an_operator_lifts_it() {
    let d = Daemon::start(&format!("loop_detection:\n  halt_after: 2\n{GOVERNED}"));
    // `looper` echoes `word` in `session`.
    let echo_in = |session: &str, word: &str| {
        d.post_with(
            "/tool/echo.run",
            &[
                ("Authorization", "Bearer agent:looper"),
                ("X-Session-Id", session),
            ],
            &json!({"params": {"args": [word]}}).to_string(),
        )
    };
    let call = |session: &str| echo_in(session, "again");
    for _ in 0..3 {
        assert_eq!(call("s-1").0, 200);
    }
    // The first loop refusal tells the agent; the second halts its session.
    let (status, body) = call("s-1");
    assert_eq!(status, 429, "{body}");
    assert_eq!(
        body["error"],
        "loop_detected: agent \"looper\" called echo.run with same params 3 times in 10s"
    );
    let (status, body) = call("s-1");
    assert_eq!(status, 429, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    let id = error
        .strip_prefix("loop_detected: agent \"looper\" called echo.run with same params 3 times in 10s; session \"s-1\" halted (halt:")
        .and_then(|rest| rest.strip_suffix(") until an operator lifts it"))
        .unwrap_or_else(|| panic!("{body}"))
        .to_owned();
    assert_eq!(d.metric("mesh7_loop_halts_total"), 1);
    let (_, halts) = d.get("/halts", None);
    let made = &halts[0];
    assert_eq!(
        (
            &made["id"],
            &made["scope"],
            &made["target"],
            &made["created_by"]
        ),
        (
            &json!(id),
            &json!("session"),
            &json!("s-1"),
            &json!("mesh7:loop_detection")
        ),
        "{halts}"
    );

    // Every call of the session is stopped now, whatever it asks; other sessions go on.
    let (status, body) = echo_in("s-1", "something else");
    assert_eq!((status, &body["policy"]), (403, &json!("deny")), "{body}");
    let (status, body) = echo_in("s-2", "fresh");
    assert_eq!(status, 200, "{body}");
    let traced = d.trace_of("echo.run", |e| e["policy"] == "deny");
    assert_eq!(traced["policy_rule"], format!("halt:{id}"), "{traced}");

    // Lifted: the session runs again.
    assert_eq!(d.delete(&format!("/halts/{id}")).0, 200);
    let (status, body) = echo_in("s-1", "after review");
    assert_eq!(status, 200, "{body}");

    // Calls without a session: the agent is halted.
    let d = Daemon::start(&format!("loop_detection:\n  halt_after: 1\n{GOVERNED}"));
    halted_by_looping(
        || d.call("solo", "echo.run", &json!({"args": ["x"]})),
        "agent \"solo\"",
    );
    assert_eq!(d.call("solo", "echo.run", &json!({"args": ["y"]})).0, 403);
    assert_eq!(d.call("other", "echo.run", &json!({"args": ["x"]})).0, 200);

    // A session id too long to be a halt's target: its agent is halted instead.
    let long = "s".repeat(1100);
    let in_long = || {
        d.post_with(
            "/tool/echo.run",
            &[
                ("Authorization", "Bearer agent:wordy"),
                ("X-Session-Id", &long),
            ],
            &json!({"params": {"args": ["z"]}}).to_string(),
        )
    };
    halted_by_looping(in_long, "agent \"wordy\"");
    assert_eq!(d.call("wordy", "echo.run", &json!({"args": ["w"]})).0, 403);
    assert_eq!(d.metric("mesh7_loop_halts_total"), 2);
}

/// Three identical calls run; the fourth is refused as a loop and halts `who` (`halt_after: 1`).
fn halted_by_looping(call: impl Fn() -> (u16, Value), who: &str) {
    for _ in 0..3 {
        assert_eq!(call().0, 200);
    }
    let (status, body) = call();
    assert_eq!(status, 429, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains(&format!("; {who} halted (halt:"))),
        "{body}"
    );
}
