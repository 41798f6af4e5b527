//! Upstream MCP tools behind the HTTP API of the real daemon: the official filesystem server,
//! namespaced as `fs.*`, governed by policy on `/tool` and `/decide`.

mod common;

use std::time::Duration;

use common::{Daemon, filesystem_config, wait_for};
use serde_json::{Value, json};

/// The daemon, the allowed root and its guard (the directory lives as long as the guard).
fn filesystem_daemon() -> (Daemon, std::path::PathBuf, tempfile::TempDir) {
    let (yaml, root, guard) = filesystem_config(
        r#"      - tools: ["fs.move_file"]
        action: deny
"#,
    );
    let d = Daemon::start(&yaml);
    wait_for(Duration::from_secs(30), || {
        let (_, servers) = d.get("/mcp-servers", None);
        (servers[0]["status"] == "ready").then_some(())
    })
    .expect("the filesystem server never became ready");
    (d, root, guard)
}

#[test]
fn upstream_tools_are_listed_namespaced_with_their_schemas() {
    let (d, _root, _guard) = filesystem_daemon();
    let (_, servers) = d.get("/mcp-servers", None);
    assert_eq!(servers[0]["name"], "fs");
    assert_eq!(servers[0]["transport"], "stdio");
    let tools: Vec<&str> = servers[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(tools.contains(&"read_text_file"), "{tools:?}");

    let (_, listed) = d.get("/tools", None);
    let read = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "fs.read_text_file")
        .expect("fs.read_text_file listed");
    assert_eq!(read["source"], "mcp");
    assert_eq!(read["mcp_server"], "fs");
    assert_eq!(read["input_schema"]["properties"]["path"]["type"], "string");
    let (_, health) = d.get("/health", None);
    assert!(health["tools"].as_u64().unwrap() >= 10, "{health}");
}

#[test]
fn allowed_upstream_call_returns_the_upstream_result_as_is() {
    let (d, root, _guard) = filesystem_daemon();
    let path = root.join("notes.txt");
    let (status, body) = d.call(
        "claude",
        "fs.read_text_file",
        &json!({"path": path.display().to_string()}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["policy"], "allow");
    let result = &body["result"];
    assert_eq!(result["content"][0]["text"], "hello from the filesystem\n");
    assert_eq!(
        result["structuredContent"]["content"], "hello from the filesystem\n",
        "{result}"
    );

    // A path outside the allowed root is the upstream's own error result, forwarded as is.
    let (status, body) = d.call(
        "claude",
        "fs.read_text_file",
        &json!({"path": "/etc/hostname"}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["isError"], true);
}

#[test]
fn denied_and_unapproved_upstream_calls_never_reach_the_server() {
    let (d, root, _guard) = filesystem_daemon();
    let src = root.join("notes.txt").display().to_string();
    let dst = root.join("moved.txt").display().to_string();
    let (status, body) = d.call(
        "claude",
        "fs.move_file",
        &json!({"source": src, "destination": dst}),
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "policy=files tool=fs.move_file action=deny");
    assert!(root.join("notes.txt").exists());

    let (status, body) = d.post_with(
        "/tool/fs.write_file",
        &[
            ("Authorization", "Bearer agent:claude"),
            ("Prefer", "respond-async"),
        ],
        &json!({"params": {"path": root.join("new.txt").display().to_string(), "content": "x"}})
            .to_string(),
    );
    assert!(status == 202 || status == 403, "{status}: {body}");
    assert_eq!(body["policy"], "human_approval");
    assert!(!root.join("new.txt").exists(), "written without approval");

    // Not in the server's list: unknown, even under the server's namespace.
    let (status, _) = d.call("claude", "fs.nope", &json!({}));
    assert_eq!(status, 404);
    let (status, body) = d.decide("claude", "fs.read_text_file", &json!({"path": src}));
    assert_eq!(
        (status, body["action"].clone()),
        (200, Value::from("allow"))
    );
}
