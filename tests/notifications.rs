//! `notifications/tools/list_changed` on every MCP ingress, through the real `mesh7` binary and a
//! real MCP server (the official Python SDK, `tests/python/drifting_server.py`): with
//! `hide_denied_tools`, a policy reload changes what an agent is listed, and the agent is told
//! over stdio, over the `--mcp` bridge, and over `/mcp`'s notification stream (`GET /mcp`), whose
//! life (one per session, ended by a newer one, by `DELETE` and at shutdown) is checked here too.

mod common;
#[allow(dead_code, unreachable_pub)] // shared helpers: each test file uses part of them
mod mcp_support;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Daemon, wait_for};
use mcp_support::{Heard, McpChild, McpHttp, list_changed, run_python};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

/// Every tool of `notes` allowed.
const ALLOW_ALL: &str =
    "name: p\nagent: \"*\"\nrules:\n  - tools: [\"notes.*\"]\n    action: allow\n";
/// `notes.send` denied, so no longer listed.
const DENY_SEND: &str = "name: p\nagent: \"*\"\nrules:\n  - tools: [\"notes.send\"]\n    action: deny\n  - tools: [\"notes.*\"]\n    action: allow\n";
/// `notes.read` denied instead.
const DENY_READ: &str = "name: p\nagent: \"*\"\nrules:\n  - tools: [\"notes.read\"]\n    action: deny\n  - tools: [\"notes.*\"]\n    action: allow\n";

/// `notes` (two tools) behind `hide_denied_tools`, its policy in `policies.d/p.yaml`.
fn config(dir: &Path) -> String {
    let catalogue = dir.join("catalogue.json");
    std::fs::write(
        &catalogue,
        json!({"description": "Reads a note.", "extra": true}).to_string(),
    )
    .expect("catalogue");
    std::fs::create_dir_all(dir.join("policies.d")).expect("policy dir");
    set_policy(dir, ALLOW_ALL);
    format!(
        r#"
server:
  hide_denied_tools: true
policy_dir: "{dir}/policies.d"
mcp_servers:
  - name: notes
    transport: stdio
    command: "{python}"
    args: ["{server}", "{catalogue}"]
"#,
        dir = dir.display(),
        python = mcp_support::python().display(),
        server = mcp_support::repo()
            .join("tests/python/drifting_server.py")
            .display(),
        catalogue = catalogue.display(),
    )
}

fn set_policy(dir: &Path, policy: &str) {
    std::fs::write(dir.join("policies.d/p.yaml"), policy).expect("policy");
}

fn notes(names: &[String]) -> Vec<&str> {
    names
        .iter()
        .map(String::as_str)
        .filter(|n| n.starts_with("notes."))
        .collect()
}

/// A daemon whose upstream has listed its tools (so that nothing else changes the listing).
fn daemon() -> Daemon {
    let dir = tempfile::tempdir().expect("dir");
    let path = common::write_config(dir.path(), &config(dir.path()));
    let d = Daemon::spawn(dir, &path, &[]);
    wait_for(WAIT, || {
        let (_, servers) = d.get("/mcp-servers", None);
        (servers[0]["tools"] == json!(["read", "send"])).then_some(())
    })
    .unwrap_or_else(|| panic!("notes not ready: {}", d.get("/mcp-servers", None).1));
    d
}

#[test]
fn python_sdk_over_streamable_http_is_told_of_a_policy_reload() {
    let d = daemon();
    let new_policy = d.path("deny-send.yaml");
    std::fs::write(&new_policy, DENY_SEND).expect("new policy");
    let (code, output) = run_python(
        "list_changed.py",
        &[
            &format!("{}/mcp", d.url),
            "Bearer agent:py",
            d.path("policies.d/p.yaml").to_str().expect("utf-8"),
            new_policy.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(code, 0, "{output}");
    let line = output
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("JSON line");
    let seen: serde_json::Value = serde_json::from_str(line).expect("JSON");
    assert_eq!(seen["notified"], true, "{output}");
    let listed =
        |key: &str| -> Vec<String> { serde_json::from_value(seen[key].clone()).expect("names") };
    assert_eq!(
        notes(&listed("before")),
        ["notes.read", "notes.send"],
        "{output}"
    );
    assert_eq!(notes(&listed("after")), ["notes.read"], "{output}");
}

#[test]
fn a_stdio_client_is_told_of_a_policy_reload() {
    let dir = tempfile::tempdir().expect("dir");
    let path = common::write_config(dir.path(), &config(dir.path()));
    let config = path.to_str().expect("utf-8 path");
    let mut mcp = McpChild::start(
        dir.path(),
        &["--mcp", "--config", config, "--listen", "127.0.0.1:0"],
        &[],
    );
    mcp.initialize();
    let mut id = 1;
    // The server's tools arrive (announced too; those messages are skipped with the answers).
    wait_for(WAIT, || {
        id += 1;
        (notes(&mcp.tool_names(id)) == ["notes.read", "notes.send"]).then_some(())
    })
    .expect("notes listed");

    set_policy(dir.path(), DENY_SEND);
    assert_eq!(mcp.recv(WAIT), list_changed());
    assert_eq!(notes(&mcp.tool_names(100)), ["notes.read"]);
}

#[test]
fn the_bridge_relays_the_daemons_notifications() {
    let d = daemon();
    let port = d.url.rsplit(':').next().expect("port").to_owned();
    let config = d.path("mesh7.yaml").display().to_string();
    let mut mcp = McpChild::start(
        d.dir.path(),
        &["--mcp", "--config", &config, "--port", &port],
        &[],
    );
    let init = mcp.initialize();
    assert_eq!(
        init["result"]["capabilities"]["tools"]["listChanged"], true,
        "{init}"
    );
    assert_eq!(notes(&mcp.tool_names(1)), ["notes.read", "notes.send"]);

    set_policy(d.dir.path(), DENY_SEND);
    assert_eq!(mcp.recv(WAIT), list_changed());
    assert_eq!(notes(&mcp.tool_names(2)), ["notes.read"]);
}

#[test]
fn a_sessions_stream_is_replaced_by_a_newer_one_catches_up_and_ends_with_the_session() {
    let d = daemon();
    let a = McpHttp::open(&d.url, "Bearer agent:a");
    let b = McpHttp::open(&d.url, "Bearer agent:b");
    let first = a.notifications();

    set_policy(d.dir.path(), DENY_SEND);
    assert_eq!(first.next(WAIT), Heard::Event(list_changed()));
    assert_eq!(notes(&a.tool_names()), ["notes.read"]);

    // A newer stream of the session ends the older one.
    let second = a.notifications();
    assert_eq!(first.next(WAIT), Heard::Ended);

    // `b` had no stream open when the policy changed: told as soon as it opens one.
    let b_stream = b.notifications();
    assert_eq!(b_stream.next(WAIT), Heard::Event(list_changed()));

    // Every open stream hears of the next change, once.
    set_policy(d.dir.path(), DENY_READ);
    assert_eq!(second.next(WAIT), Heard::Event(list_changed()));
    assert_eq!(b_stream.next(WAIT), Heard::Event(list_changed()));
    assert_eq!(notes(&b.tool_names()), ["notes.send"]);

    // Ending the session ends its stream; the other session's stays open.
    let resp = reqwest::blocking::Client::new()
        .delete(format!("{}/mcp", d.url))
        .header("Authorization", "Bearer agent:a")
        .header("Mcp-Session-Id", a.session_id())
        .send()
        .expect("DELETE /mcp");
    assert_eq!(resp.status().as_u16(), 204);
    assert_eq!(second.next(WAIT), Heard::Ended);
    assert_eq!(b_stream.next(Duration::from_millis(200)), Heard::Nothing);
}

#[test]
fn an_open_stream_does_not_hold_up_shutdown() {
    let mut d = daemon();
    let session = McpHttp::open(&d.url, "Bearer agent:a");
    let stream = session.notifications();
    let asked = Instant::now();
    let status = d.terminate();
    assert!(status.success(), "{status:?}");
    assert_eq!(stream.next(WAIT), Heard::Ended);
    // Without the streams closed first, the HTTP server would wait its 10 s drain for them.
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(8), "shutdown took {took:?}");
}
