//! Black-box tests of the HTTP API against the real `mesh7 serve` binary on 127.0.0.1, with real
//! CLI tools (`echo`, `date`) behind the policies.

mod common;
#[allow(dead_code, unreachable_pub)] // shared helpers: each test file uses part of them
mod mcp_support;

use common::Daemon;
use mcp_support::McpHttp;
use serde_json::{Value, json};

const BASE: &str = r#"
trace_file: "{dir}/traces.jsonl"
server:
  max_body_bytes: 2048
cli_tools:
  - name: echo
    bin: echo
    bare: { allowed_args: ["-n"], timeout: 5s }
  - name: date
    bin: date
    bare: { allowed_args: ["-u"], timeout: 5s }
  - name: ls
    bin: ls
    bare: { timeout: 5s }
policies:
  - name: ops
    agent: ops-bot
    rules:
      - tools: ["date.run"]
        action: deny
  - name: everyone
    agent: "*"
    rules:
      - tools: ["echo.run"]
        action: deny
        condition: { field: args, operator: contains, value: secret }
      - tools: ["echo.run", "date.run"]
        action: allow
      - tools: ["ls.run"]
        action: human_approval
"#;

/// The daemon with the `echo` CLI tool alone, under `policies` (the YAML items of `policies:`).
fn echo_under(policies: &str) -> Daemon {
    Daemon::start(&format!(
        "cli_tools:\n  - {{ name: echo, bin: echo, bare: {{ timeout: 5s }} }}\npolicies:{policies}"
    ))
}

#[test]
fn allowed_call_runs_the_tool_and_returns_its_output() {
    let d = Daemon::start(BASE);
    let (status, body) = d.call("claude", "echo.run", &json!({"args": ["hello", "world"]}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["policy"], "allow");
    assert_eq!(body["result"]["stdout"], "hello world\n");
    assert_eq!(body["result"]["exit_code"], 0);
    assert_eq!(body["trace_id"].as_str().unwrap().len(), 32);
    assert!(body.get("error").is_none());
}

#[test]
fn bare_arguments_body_is_accepted_like_the_python_sdk_sends_it() {
    let d = Daemon::start(BASE);
    let (status, body) = d.post(
        "/tool/echo.run",
        Some("Bearer agent:sdk"),
        r#"{"args": ["bare"]}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["stdout"], "bare\n");
}

#[test]
fn deny_rule_and_condition_and_fail_closed_default_answer_403() {
    let d = Daemon::start(BASE);
    // A rule for this agent denies.
    let (status, body) = d.call("ops-bot", "date.run", &json!({}));
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["policy"], "deny");
    assert_eq!(body["error"], "policy=ops tool=date.run action=deny");
    // A condition on the arguments denies.
    let (status, body) = d.call("claude", "echo.run", &json!({"args": ["secret"]}));
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "policy=everyone tool=echo.run action=deny");
    // The ops-bot policy has no echo rule: evaluation falls through to the `*` policy.
    let (status, _) = d.call("ops-bot", "echo.run", &json!({"args": ["hi"]}));
    assert_eq!(status, 200);
}

#[test]
fn approval_with_respond_async_answers_202_and_runs_nothing_until_approved() {
    let d = Daemon::start(BASE);
    let async_call = |args: &Value| {
        d.post_with(
            "/tool/ls.run",
            &[
                ("Authorization", "Bearer agent:claude"),
                ("Prefer", "respond-async"),
            ],
            &json!({ "params": args }).to_string(),
        )
    };
    let (status, body) = async_call(&json!({"args": ["-d", "."]}));
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["policy"], "human_approval");
    assert!(body.get("result").is_none());
    let id = body["approval_id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 16);

    // The same call again joins the same pending approval.
    let (_, again) = async_call(&json!({"args": ["-d", "."]}));
    assert_eq!(again["approval_id"], id.as_str());

    let (status, pending) = d.get("/approvals?status=pending", None);
    assert_eq!(status, 200);
    assert_eq!(pending.as_array().unwrap().len(), 1);
    assert_eq!(pending[0]["id"], id.as_str());
    assert_eq!(pending[0]["tool"], "ls.run");

    let (status, body) = d.post(&format!("/approvals/{}/approve", &id[..8]), None, "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"status": "approved", "id": &id[..8]}));

    // The identical retry runs once; the next one needs a new approval.
    let (status, body) = async_call(&json!({"args": ["-d", "."]}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["policy"], "human_approval");
    assert_eq!(body["approval_id"], id.as_str());
    assert_eq!(body["result"]["stdout"], ".\n");
    let (status, body) = async_call(&json!({"args": ["-d", "."]}));
    assert_eq!(status, 202, "{body}");
    assert_ne!(body["approval_id"], id.as_str());
}

#[test]
fn unknown_tool_is_404_and_invalid_json_is_400_in_flux7_shape() {
    let d = Daemon::start(BASE);
    let (status, body) = d.call("claude", "nope.run", &json!({}));
    assert_eq!(status, 404);
    assert_eq!(
        body,
        json!({"trace_id": "", "policy": "error", "latency_ms": 0, "error": "unknown tool: nope.run"})
    );
    let (status, body) = d.post("/tool/echo.run", Some("Bearer agent:a"), "{not json");
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"trace_id": "", "policy": "error", "latency_ms": 0, "error": "invalid JSON body"})
    );
    let (status, body) = d.post("/tool/echo.run", Some("Bearer agent:a"), "[1,2]");
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid JSON body");
}

#[test]
fn oversized_body_is_413_json() {
    let d = Daemon::start(BASE);
    let big = json!({"params": {"args": ["x".repeat(4096)]}}).to_string();
    let (status, body) = d.post("/tool/echo.run", Some("Bearer agent:a"), &big);
    assert_eq!(status, 413);
    assert_eq!(body["error"], "request body exceeds 2048 bytes");
    let (status, _) = d.post("/decide", Some("Bearer agent:a"), &big);
    assert_eq!(status, 413);
}

#[test]
fn cli_injection_attempt_is_refused_before_anything_runs() {
    let d = Daemon::start(BASE);
    for evil in [
        "a; rm -rf /",
        "$(id)",
        "`id`",
        "a && b",
        "a\nb",
        "../../etc/passwd",
    ] {
        let (status, body) = d.call("claude", "echo.run", &json!({"args": [evil]}));
        assert_eq!(status, 502, "{evil}: {body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .starts_with("argument validation failed"),
            "{evil}: {body}"
        );
    }
    let (status, body) = d.call("claude", "date.run", &json!({"args": ["--set=2000-01-01"]}));
    assert_eq!(status, 502, "{body}");
    assert!(body["error"].as_str().unwrap().contains("flag not allowed"));
}

#[test]
fn decide_evaluates_without_executing_and_takes_the_agent_from_the_identity() {
    let d = Daemon::start(BASE);
    let (status, body) = d.decide("claude", "echo.run", &json!({"args": ["x"]}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["action"], "allow");
    assert_eq!(body["agent"], "claude");
    assert_eq!(body["rule"], "everyone");
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["action", "agent", "reason", "rule", "tool", "trace_id"]
    );

    let (status, body) = d.decide("ops-bot", "date.run", &json!({}));
    assert_eq!(status, 403);
    assert_eq!(body["action"], "deny");

    let (status, body) = d.decide("claude", "ls.run", &json!({}));
    assert_eq!(status, 200);
    assert_eq!(body["action"], "human_approval");

    // Any name is evaluated (no registry check): fail closed.
    let (status, body) = d.decide("claude", "made.up", &json!({}));
    assert_eq!(status, 403);
    assert_eq!(body["rule"], "default");
    assert_eq!(body["reason"], "no matching policy — fail closed");

    // A body agent that differs from the identity is refused for a non-operator.
    let (status, body) = d.post(
        "/decide",
        Some("Bearer agent:claude"),
        r#"{"agent": "ops-bot", "tool": "date.run"}"#,
    );
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("does not match"));
    // The same agent in the body and the header is fine (what the Python SDK sends).
    let (status, _) = d.post(
        "/decide",
        Some("Bearer agent:claude"),
        r#"{"agent": "claude", "tool": "date.run"}"#,
    );
    assert_eq!(status, 200);

    let (status, body) = d.post("/decide", Some("Bearer agent:a"), r#"{"arguments": {}}"#);
    assert_eq!(
        (status, body),
        (400, json!({"error": "tool field required"}))
    );
    let (status, body) = d.post("/decide", Some("Bearer agent:a"), "nope");
    assert_eq!((status, body), (400, json!({"error": "invalid JSON body"})));
}

#[test]
fn operator_may_decide_for_another_agent() {
    let yaml = format!("auth:\n  admin_token: adm1n\n{BASE}");
    let d = Daemon::start(&yaml);
    let (status, body) = d.post(
        "/decide",
        Some("Bearer adm1n"),
        r#"{"agent": "ops-bot", "tool": "date.run"}"#,
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["agent"], "ops-bot");
    assert_eq!(body["rule"], "ops");
}

#[test]
fn rate_limit_per_minute_answers_429_with_rate_limited_policy() {
    let d = echo_under(
        r#"
  - name: tight
    agent: "*"
    rate_limit: { max_per_minute: 2 }
    rules:
      - { tools: ["echo.run"], action: allow }
"#,
    );
    for i in 0..2 {
        let (status, _) = d.call("bot", "echo.run", &json!({"args": [i]}));
        assert_eq!(status, 200);
    }
    let (status, body) = d.call("bot", "echo.run", &json!({"args": [99]}));
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["policy"], "rate_limited");
    assert_eq!(
        body["error"],
        "rate_limit: agent \"bot\" exceeded 2 calls/min"
    );
    // Another agent has its own budget.
    let (status, _) = d.call("other", "echo.run", &json!({"args": [1]}));
    assert_eq!(status, 200);
    // The refusal is traced.
    let (_, traces) = d.get("/traces?agent=bot&limit=1", None);
    assert_eq!(traces[0]["policy"], "rate_limited");
    assert_eq!(traces[0]["policy_rule"], "tight");
}

#[test]
fn a_condition_on_every_value_refuses_a_secret_wherever_it_is_passed() {
    let d = echo_under(
        r#"
  - name: guard
    agent: "*"
    rules:
      - tools: ["*"]
        action: deny
        condition: { field: "*", operator: matches, value: "sk-live-[a-z0-9]{8,}" }
      - { tools: ["echo.run"], action: allow }
"#,
    );
    let (status, body) = d.call("bot", "echo.run", &json!({"args": ["hello"]}));
    assert_eq!(status, 200, "{body}");
    for args in [
        json!({"args": ["login", "sk-live-4f9a7c1e2b"]}),
        json!({"args": ["x"], "flags": {"token": "Bearer sk-live-4f9a7c1e2b"}}),
        json!({"args": ["x"], "stdin": "key=sk-live-4f9a7c1e2b\n"}),
    ] {
        let (status, body) = d.call("bot", "echo.run", &args);
        assert_eq!(status, 403, "{args}: {body}");
        assert_eq!(body["policy"], "deny", "{body}");
    }
    let (status, decided) = d.decide(
        "bot",
        "echo.run",
        &json!({"nested": [{"k": "sk-live-4f9a7c1e2b"}]}),
    );
    assert_eq!(status, 403, "{decided}");
    assert_eq!(decided["rule"], "guard", "{decided}");
    // `!=` on every value is refused at load, with its path.
    let dir = tempfile::tempdir().expect("dir");
    let config = common::write_config(
        dir.path(),
        "policies:\n  - name: p\n    agent: \"*\"\n    rules:\n      - tools: [\"*\"]\n        action: allow\n        condition: { field: \"*\", operator: \"!=\", value: x }\n",
    );
    let (code, stdout, stderr) =
        common::run(&["validate", "--config", config.to_str().expect("utf-8")]);
    assert_ne!(code, 0, "{stdout}{stderr}");
    assert!(
        format!("{stdout}{stderr}")
            .contains("policies[0].rules[0].condition.operator: field \"*\""),
        "{stdout}{stderr}"
    );
}

#[test]
fn a_session_budget_stops_a_runaway_session_not_the_agent() {
    let d = echo_under(
        r#"
  - name: per-session
    agent: "*"
    rate_limit: { max_per_session: 2 }
    rules:
      - { tools: ["echo.run"], action: allow }
"#,
    );
    let call = |session: &str, i: u64| {
        d.post_with(
            "/tool/echo.run",
            &[
                ("Authorization", "Bearer agent:bot"),
                ("X-Session-Id", session),
            ],
            &json!({"params": {"args": [i]}}).to_string(),
        )
    };
    assert_eq!(call("s-1", 1).0, 200);
    assert_eq!(call("s-1", 2).0, 200);
    let (status, body) = call("s-1", 3);
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["policy"], "rate_limited");
    assert_eq!(
        body["error"],
        "rate_limit: agent \"bot\" exceeded its budget of 2 calls in session \"s-1\""
    );
    // The agent's other sessions, and its calls outside any session, go on.
    assert_eq!(call("s-2", 1).0, 200);
    for i in 0..3 {
        let (status, body) = d.call("bot", "echo.run", &json!({"args": [i]}));
        assert_eq!(status, 200, "{body}");
    }
    // The same budget holds an MCP session.
    let mcp = McpHttp::open(&d.url, "Bearer agent:bot");
    for i in 0..2 {
        let answer = mcp.call("echo.run", &json!({"args": [10 + i]}));
        assert_eq!(answer["result"]["isError"], false, "{answer}");
    }
    let answer = mcp.call("echo.run", &json!({"args": [12]}));
    assert_eq!(
        answer["result"]["_meta"]["mesh7/governance"]["outcome"], "rate_limited",
        "{answer}"
    );
    // `GET /policies` shows the budget; a policy without one does not grow the key.
    let (_, policies) = d.get("/policies", None);
    assert_eq!(
        policies[0]["rate_limit"],
        json!({"max_per_minute": 0, "max_total": 0, "max_per_session": 2}),
        "{policies}"
    );
}

#[test]
fn a_budget_holds_under_concurrent_calls_on_every_worker() {
    let d = echo_under(
        r#"
  - name: budget
    agent: "*"
    rate_limit: { max_total: 10 }
    rules:
      - { tools: ["echo.run"], action: allow }
"#,
    );
    // Forty calls at once, each on its own connection, spread by the server over its workers
    // (each with its own limiter actor): exactly ten fit the agent's lifetime budget.
    let start = std::sync::Barrier::new(40);
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..40)
            .map(|i| {
                let (url, start) = (format!("{}/tool/echo.run", d.url), &start);
                s.spawn(move || {
                    let client = reqwest::blocking::Client::new();
                    start.wait();
                    client
                        .post(url)
                        .header("Authorization", "Bearer agent:burst")
                        .json(&json!({ "params": { "args": [i] } }))
                        .send()
                        .expect("POST")
                        .status()
                        .as_u16()
                })
            })
            .collect();
        calls.into_iter().map(|c| c.join().expect("call")).collect()
    });
    assert_eq!(
        statuses.iter().filter(|&&s| s == 200).count(),
        10,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 429).count(),
        30,
        "{statuses:?}"
    );
    let (status, body) = d.call("burst", "echo.run", &json!({"args": ["late"]}));
    assert_eq!(status, 429);
    assert_eq!(
        body["error"],
        "rate_limit: agent \"burst\" exceeded total budget (10 calls)"
    );
}

#[test]
fn loop_detection_is_on_by_default_and_refuses_the_fourth_identical_call() {
    let d = echo_under(
        r#"
  - name: open
    agent: "*"
    rules:
      - { tools: ["echo.run"], action: allow }
"#,
    );
    for _ in 0..3 {
        let (status, _) = d.call("looper", "echo.run", &json!({"args": ["same"]}));
        assert_eq!(status, 200);
    }
    let (status, body) = d.call("looper", "echo.run", &json!({"args": ["same"]}));
    assert_eq!(status, 429, "{body}");
    assert_eq!(
        body["error"],
        "loop_detected: agent \"looper\" called echo.run with same params 3 times in 10s"
    );
    let (status, _) = d.call("looper", "echo.run", &json!({"args": ["different"]}));
    assert_eq!(status, 200);
}

#[test]
fn control_plane_needs_the_admin_token_when_one_is_set() {
    let yaml = format!("auth:\n  admin_token: adm1n\n{BASE}");
    let d = Daemon::start(&yaml);
    for path in [
        "/traces",
        "/policies",
        "/sessions",
        "/sessions/x",
        "/metrics",
    ] {
        let resp = reqwest::blocking::get(format!("{}{path}", d.url)).unwrap();
        assert_eq!(resp.status().as_u16(), 401, "{path}");
        let body: Value = resp.json().unwrap();
        assert_eq!(body["error"], "control plane requires admin authorization");
        let (status, _) = d.get(path, Some("Bearer agent:claude"));
        assert_eq!(status, 401, "{path} with an agent identity");
    }
    let (status, body) = d.get("/policies", Some("Bearer adm1n"));
    assert_eq!(status, 200);
    // Sorted by specificity: the exact agent first.
    assert_eq!(body[0]["name"], "ops");
    // The open and data-plane routes stay open.
    assert_eq!(d.get("/health", None).0, 200);
    assert_eq!(d.get("/tools", None).0, 200);
}

#[test]
fn admin_token_from_the_environment_overrides_the_config() {
    let yaml = format!("auth:\n  admin_token: from-config\n{BASE}");
    let d = Daemon::start_with(&yaml, &[("MESH_ADMIN_TOKEN", "from-env")], |_| {});
    assert_eq!(d.get("/traces", Some("Bearer from-config")).0, 401);
    assert_eq!(d.get("/traces", Some("Bearer from-env")).0, 200);
}

#[test]
fn loopback_peer_reaches_the_control_plane_without_a_token() {
    let d = Daemon::start(BASE);
    assert_eq!(d.get("/traces", None).0, 200);
}

#[test]
fn require_authentication_refuses_anonymous_data_plane_calls() {
    let yaml = format!("auth:\n  require_authentication: true\n{BASE}");
    let d = Daemon::start(&yaml);
    let (status, body) = d.post("/tool/echo.run", None, r#"{"params":{}}"#);
    assert_eq!(
        (status, body),
        (401, json!({"error": "authentication required"}))
    );
    let (status, _) = d.post("/decide", None, r#"{"tool":"echo.run"}"#);
    assert_eq!(status, 401);
    assert_eq!(d.get("/tools", None).0, 401);
    let (status, _) = d.call("claude", "echo.run", &json!({"args": ["ok"]}));
    assert_eq!(status, 200);
}

#[test]
fn tools_listing_never_shows_cli_env_values() {
    let d = Daemon::start(
        r#"
cli_tools:
  - name: gh
    bin: echo
    env: { GH_TOKEN: "super-secret-value" }
    commands:
      pr: { timeout: 5s }
"#,
    );
    let (status, body) = d.get("/tools", None);
    assert_eq!(status, 200);
    let text = body.to_string();
    assert!(!text.contains("super-secret-value"), "{text}");
    let names: Vec<&str> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["gh.__dispatch", "gh.pr"]);
    assert!(
        body.as_array()
            .unwrap()
            .iter()
            .all(|t| t["source"] == "cli")
    );
}

#[test]
fn catch_all_is_governed_by_the_effective_command() {
    let d = Daemon::start(
        r#"
cli_tools:
  - name: gh
    bin: echo
    commands:
      pr: { timeout: 5s }
policies:
  - name: p
    agent: "*"
    rules:
      - { tools: ["gh.issue"], action: deny }
      - { tools: ["gh.*"], action: allow }
"#,
    );
    // Calling the catch-all with command=issue is judged as gh.issue.
    let (status, body) = d.call(
        "a",
        "gh.__dispatch",
        &json!({"command": "issue", "args": ["list"]}),
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "policy=p tool=gh.issue action=deny");
    let (status, body) = d.call("a", "gh.issue", &json!({}));
    assert_eq!(status, 403, "{body}");
    let (status, body) = d.call("a", "gh.pr", &json!({"args": ["list"]}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["stdout"], "pr list\n");
    let (_, traces) = d.get("/traces?limit=3", None);
    assert_eq!(traces[2]["tool"], "gh.__dispatch");
    assert_eq!(traces[2]["effective_tool"], "gh.issue");
}

#[test]
fn cli_default_action_applies_when_no_rule_matches() {
    let d = Daemon::start(
        r#"
cli_tools:
  - { name: echo, bin: echo, default_action: allow, bare: { timeout: 5s } }
  - { name: date, bin: date, bare: { timeout: 5s } }
"#,
    );
    let (status, body) = d.call("a", "echo.run", &json!({"args": ["x"]}));
    assert_eq!(status, 200, "{body}");
    let (status, body) = d.call("a", "date.run", &json!({}));
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "no matching policy — fail closed");
}

#[test]
fn traces_are_queryable_by_agent_tool_session_and_limit_and_written_to_jsonl() {
    let mut d = Daemon::start(BASE);
    for (i, agent) in ["a1", "a1", "a2"].iter().enumerate() {
        let (status, _) = d.post_with(
            "/tool/echo.run",
            &[
                ("Authorization", &format!("Bearer agent:{agent}")),
                ("X-Session-Id", "sess-1"),
            ],
            &json!({"params": {"args": [i]}}).to_string(),
        );
        assert_eq!(status, 200);
    }
    let (status, _) = d.call("a2", "date.run", &json!({}));
    assert_eq!(status, 200);

    let (_, all) = d.get("/traces", None);
    assert_eq!(all.as_array().unwrap().len(), 4);
    assert_eq!(all[0]["tool"], "date.run", "most recent first");
    let (_, a1) = d.get("/traces?agent=a1", None);
    assert_eq!(a1.as_array().unwrap().len(), 2);
    let (_, echo) = d.get("/traces?tool=echo.run&limit=2", None);
    assert_eq!(echo.as_array().unwrap().len(), 2);
    let (_, sess) = d.get("/sessions/sess-1", None);
    assert_eq!(sess.as_array().unwrap().len(), 3);
    let (_, sessions) = d.get("/sessions", None);
    assert_eq!(sessions[0]["session_id"], "sess-1");
    assert_eq!(sessions[0]["event_count"], 3);
    assert_eq!(sessions[0]["agent_id"], "a1");
    let (status, body) = d.get("/traces?limit=zero", None);
    assert_eq!(status, 400, "{body}");

    let entry = &all[0];
    for key in [
        "trace_id",
        "agent_id",
        "tool",
        "params",
        "policy",
        "policy_rule",
        "status_code",
        "latency_ms",
        "timestamp",
    ] {
        assert!(entry.get(key).is_some(), "missing {key}: {entry}");
    }

    // SIGTERM flushes everything: the JSONL file holds every call.
    let status = d.terminate();
    assert!(status.success(), "{status:?}: {}", d.stderr_text());
    let text = std::fs::read_to_string(d.path("traces.jsonl")).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[3]["tool"], "date.run");
}

#[test]
fn traces_survive_a_restart_through_the_jsonl_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.jsonl");
    let yaml = BASE.replace("{dir}/traces.jsonl", &file.display().to_string());
    {
        let mut d = Daemon::start(&yaml);
        assert_eq!(d.call("a", "echo.run", &json!({"args": ["x"]})).0, 200);
        let status = d.terminate();
        assert!(status.success(), "{status:?}: {}", d.stderr_text());
    }
    let d = Daemon::start(&yaml);
    let (_, traces) = d.get("/traces", None);
    assert_eq!(traces.as_array().unwrap().len(), 1);
    assert_eq!(traces[0]["agent_id"], "a");
}

#[test]
fn health_version_and_metrics_answer() {
    let d = Daemon::start(BASE);
    d.call("a", "echo.run", &json!({"args": ["x"]}));
    d.call("ops-bot", "date.run", &json!({}));
    let (status, health) = d.get("/health", None);
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["tools"], 3);
    assert_eq!(health["traces"]["allowed"], 1);
    assert_eq!(health["traces"]["denied"], 1);
    assert_eq!(health["traces"]["total"], 2);
    let (status, version) = d.get("/version", None);
    assert_eq!(status, 200);
    assert_eq!(version["version"], env!("CARGO_PKG_VERSION"));
    let (status, text) = d.get_text("/metrics");
    assert_eq!(status, 200);
    assert!(
        text.contains("mesh7_calls_total{ingress=\"http\",decision=\"allow\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("mesh7_calls_total{ingress=\"http\",decision=\"deny\"} 1"),
        "{text}"
    );
    assert!(text.contains("agent_mesh_mem7_writes_attempted_total 0"));
}

#[test]
fn unknown_routes_and_methods_answer_json_errors() {
    let d = Daemon::start(BASE);
    let (status, body) = d.get("/nope", None);
    assert_eq!((status, body), (404, json!({"error": "not found"})));
    let (status, body) = d.get("/tool/echo.run", None);
    assert_eq!(
        (status, body),
        (405, json!({"error": "method not allowed"}))
    );
}

#[test]
fn slow_clients_are_timed_out_with_a_json_408() {
    use std::io::{Read as _, Write as _};
    let d = Daemon::start(&BASE.replace(
        "max_body_bytes: 2048",
        "max_body_bytes: 2048\n  client_timeout: 300ms",
    ));
    let addr = d.url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    // Headers complete, body promised but never sent.
    stream
        .write_all(b"POST /tool/echo.run HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(
        response.contains(r#"{"error":"request body not received in time"}"#),
        "{response}"
    );

    // A request head that never completes is dropped too.
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"POST /tool/echo.run HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut response = String::new();
    let read = stream.read_to_string(&mut response);
    assert!(
        read.is_ok(),
        "the server closed the connection instead of waiting: {read:?}"
    );
    assert!(
        response.is_empty() || response.starts_with("HTTP/1.1 408"),
        "{response}"
    );
}

#[test]
fn a_call_whose_client_disconnects_is_stopped_and_traced_as_cancelled() {
    let yaml = BASE
        .replace(
            "  - name: ls\n",
            "  - name: sleep\n    bin: sleep\n    bare: { timeout: 60s }\n  - name: ls\n",
        )
        .replace(
            r#"      - tools: ["echo.run", "date.run"]"#,
            r#"      - tools: ["echo.run", "date.run", "sleep.run"]"#,
        );
    let d = Daemon::start(&yaml);
    // The call runs once its `sleep` is a child of the daemon; then the client leaves.
    let sleep = d.post_and_leave(
        "/tool/sleep.run",
        &[("Authorization", "Bearer agent:bot")],
        r#"{"params":{"args":["60"]}}"#,
    );

    let entry = d.trace_of("sleep.run", |e| e["status_code"] == 499);
    assert_eq!(entry["policy"], "allow", "{entry}");
    assert_eq!(entry["agent_id"], "bot", "{entry}");
    assert_eq!(
        entry["error"], "cancelled: the caller went away while the call ran",
        "{entry}"
    );
    assert!(entry["latency_ms"].as_u64().unwrap() < 60_000, "{entry}");
    // The command was stopped with its caller.
    common::wait_for(std::time::Duration::from_secs(30), || {
        common::process_gone(sleep).then_some(())
    })
    .expect("the command outlived its caller");
    let (_, metrics) = d.get_text("/metrics");
    assert!(
        metrics.contains(r#"mesh7_calls_total{ingress="http",decision="error"} 1"#),
        "{metrics}"
    );
}

#[test]
fn an_approved_call_whose_client_disconnects_is_traced_with_its_used_approval() {
    let yaml = BASE.replace(
        "  - name: ls\n",
        "  - name: sleep\n    bin: sleep\n    bare: { timeout: 60s }\n  - name: ls\n",
    ) + "      - tools: [\"sleep.run\"]\n        action: human_approval\n";
    let d = Daemon::start(&yaml);
    let body = r#"{"params":{"args":["60"]}}"#;
    let ask = || {
        d.post_with(
            "/tool/sleep.run",
            &[
                ("Authorization", "Bearer agent:bot"),
                ("Prefer", "respond-async"),
            ],
            body,
        )
    };
    let (status, held) = ask();
    assert_eq!(status, 202, "{held}");
    let id = held["approval_id"].as_str().unwrap().to_owned();
    let (status, _) = d.post(&format!("/approvals/{id}/approve"), None, "");
    assert_eq!(status, 200);

    // The identical retry uses the approval and runs; its client leaves while it runs.
    let sleep = d.post_and_leave(
        "/tool/sleep.run",
        &[("Authorization", "Bearer agent:bot")],
        body,
    );

    let entry = d.trace_of("sleep.run", |e| e["status_code"] == 499);
    assert_eq!(entry["policy"], "human_approval", "{entry}");
    assert_eq!(entry["approval_id"], id.as_str(), "{entry}");
    assert_eq!(
        entry["error"], "cancelled: the caller went away while the call ran",
        "{entry}"
    );
    common::wait_for(std::time::Duration::from_secs(30), || {
        common::process_gone(sleep).then_some(())
    })
    .expect("the command outlived its caller");
    // The approval was used: the same call needs a new one.
    let (status, again) = ask();
    assert_eq!(status, 202, "{again}");
    assert_ne!(again["approval_id"], id.as_str());
}

#[test]
fn files_holding_call_data_are_created_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;

    let yaml = BASE.replace(
        "trace_file: \"{dir}/traces.jsonl\"",
        "trace_file: \"{dir}/traces.jsonl\"\notel_endpoint: \"{dir}/spans.jsonl\"\nstorage_path: \"{dir}/state/store\"",
    );
    let d = Daemon::start(&yaml);
    let (status, body) = d.call("claude", "echo.run", &json!({"args": ["-n", "private"]}));
    assert_eq!(status, 200, "{body}");
    common::wait_for(std::time::Duration::from_secs(10), || {
        d.path("spans.jsonl").exists().then_some(())
    })
    .expect("the span file is written");
    let mode = |rel: &str| {
        std::fs::metadata(d.path(rel))
            .unwrap_or_else(|e| panic!("{rel}: {e}"))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("traces.jsonl"), 0o600);
    assert_eq!(mode("spans.jsonl"), 0o600);
    // The store and the directory made for it.
    assert_eq!(mode("state/store"), 0o700);
    assert_eq!(mode("state"), 0o700);
}
