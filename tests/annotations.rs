//! Rules on what tools say of themselves (`annotations: {readOnlyHint: true}`…) through the real
//! `mesh7 serve` and two real MCP servers (the official Python SDK,
//! `tests/python/drifting_server.py`) declaring the same annotated catalogue: one pinned
//! (`pin_tools`), whose annotations are trusted, one not, whose tools are taken to say nothing
//! (not read-only, destructive).

mod common;
#[allow(dead_code, unreachable_pub)] // shared helpers: each test file uses part of them
mod mcp_support;

use std::time::Duration;

use common::{Daemon, wait_for};
use mcp_support::McpHttp;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

fn config(state: &std::path::Path, catalogue: &std::path::Path) -> String {
    let python = mcp_support::python();
    let server = mcp_support::repo().join("tests/python/drifting_server.py");
    let upstream = |name: &str, pinned: bool| {
        format!(
            "  - name: {name}\n    transport: stdio\n    command: \"{}\"\n    args: [\"{}\", \"{}\"]\n    pin_tools: {pinned}\n",
            python.display(),
            server.display(),
            catalogue.display()
        )
    };
    format!(
        r#"
storage_path: "{state}/store"
server:
  hide_denied_tools: true
mcp_servers:
{notes}{loose}
policies:
  - name: hints
    agent: "*"
    rules:
      - tools: ["*"]
        annotations: {{ readOnlyHint: true }}
        action: allow
      - tools: ["*"]
        annotations: {{ destructiveHint: true }}
        action: deny
      - tools: ["*"]
        action: human_approval
"#,
        state = state.display(),
        notes = upstream("notes", true),
        loose = upstream("loose", false),
    )
}

#[test]
fn annotation_rules_trust_what_pinned_servers_say_and_assume_the_worst_of_others() {
    let state = tempfile::tempdir().expect("state dir");
    let catalogue = state.path().join("catalogue.json");
    let annotated = json!({
        "description": "Reads a note.",
        "extra": true,
        "annotations": {"read": {"readOnlyHint": true}, "send": {"destructiveHint": true}},
    });
    std::fs::write(&catalogue, annotated.to_string()).expect("catalogue");
    let d = Daemon::start(&config(state.path(), &catalogue));
    // Both servers connected with both tools.
    wait_for(WAIT, || {
        let (_, servers) = d.get("/mcp-servers", None);
        let ready = servers
            .as_array()?
            .iter()
            .all(|s| s["tools"] == json!(["read", "send"]));
        (ready && servers.as_array()?.len() == 2).then_some(())
    })
    .unwrap_or_else(|| panic!("servers: {}", d.get("/mcp-servers", None).1));
    // The pinned server's first list is pinned (a step after its connection).
    wait_for(WAIT, || {
        let (_, pins) = d.get("/pins", None);
        let notes = pins.as_array()?.iter().find(|p| p["server"] == "notes")?;
        (notes["pinned"].as_array()?.len() == 2).then_some(())
    })
    .unwrap_or_else(|| panic!("pins: {}", d.get("/pins", None).1));

    let note = json!({"note": "n1"});
    // The pinned server's read-only tool runs; its destructive one is denied by the rule.
    let (status, body) = d.call("claude", "notes.read", &note);
    assert_eq!(status, 200, "{body}");
    assert!(body["result"].to_string().contains("read n1"), "{body}");
    let (status, body) = d.call("claude", "notes.send", &note);
    assert_eq!((status, &body["policy"]), (403, &json!("deny")), "{body}");
    // The same definitions from a server that is not pinned are not believed: its "read-only"
    // tool counts as destructive.
    let (status, body) = d.call("claude", "loose.read", &note);
    assert_eq!((status, &body["policy"]), (403, &json!("deny")), "{body}");
    let traced = d.trace_of("loose.read", |e| e["policy"] == "deny");
    assert_eq!(traced["policy_rule"], "hints", "{traced}");
    for (tool, status, action) in [
        ("notes.read", 200, "allow"),
        ("notes.send", 403, "deny"),
        ("loose.read", 403, "deny"),
    ] {
        let decided = d.decide("claude", tool, &note);
        assert_eq!(
            (decided.0, &decided.1["action"]),
            (status, &json!(action)),
            "{tool}: {decided:?}"
        );
    }

    // hide_denied_tools: an agent is listed only what the annotations do not always deny, on
    // HTTP and over MCP.
    let (status, tools) = d.get("/tools", Some("Bearer agent:claude"));
    assert_eq!(status, 200, "{tools}");
    assert_eq!(common::tool_names(&tools), ["notes.read"]);
    let session = McpHttp::open(&d.url, "Bearer agent:claude");
    let mut listed = session.tool_names();
    listed.retain(|n| n.starts_with("notes.") || n.starts_with("loose."));
    assert_eq!(listed, ["notes.read"]);
    let call = session.call("notes.read", &json!({"note": "n2"}));
    assert!(call["result"].to_string().contains("read n2"), "{call}");
}

#[test]
fn an_unknown_annotation_in_a_rule_is_a_load_error_naming_it() {
    let dir = tempfile::tempdir().expect("dir");
    let config = common::write_config(
        dir.path(),
        "policies:\n  - name: p\n    rules:\n      - tools: [\"*\"]\n        annotations: { writeHint: true }\n        action: allow\n",
    );
    let config = config.display().to_string();
    let (code, stdout, stderr) = common::run(&["validate", "--config", &config]);
    assert_ne!(code, 0, "{stdout}");
    assert!(
        stderr.contains("policies[0].rules[0].annotations.writeHint: unknown annotation (expected one of readOnlyHint, destructiveHint, idempotentHint, openWorldHint)"),
        "{stderr}"
    );
    let not_a_bool = common::write_config(
        dir.path(),
        "policies:\n  - name: p\n    rules:\n      - tools: [\"*\"]\n        annotations: { readOnlyHint: maybe }\n        action: allow\n",
    );
    let not_a_bool = not_a_bool.display().to_string();
    let (code, _, stderr) = common::run(&["validate", "--config", &not_a_bool]);
    assert_ne!(code, 0);
    assert!(stderr.contains("annotations"), "{stderr}");
}
