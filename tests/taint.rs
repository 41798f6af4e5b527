//! Information-flow labels through the real `mesh7 serve` and the real filesystem MCP server:
//! reading a file (`taint.sources`) labels the session, and the `tainted` rule then stops that
//! session's writes on every ingress — `/tool`, `/decide` and MCP over `/mcp` and stdio — while
//! other sessions go on; the label is in the trace and `GET /taint`, survives a SIGKILL (store),
//! and is lifted by `DELETE /taint`.

mod common;
#[allow(dead_code, unreachable_pub)] // shared helpers: each test file uses part of them
mod mcp_support;

use std::path::Path;
use std::time::Duration;

use common::{Daemon, filesystem_server, wait_for};
use mcp_support::{McpChild, McpHttp, result_text};
use serde_json::{Value, json};

/// The filesystem server `fs`, its reads labelling the session `files`, a guard that denies a
/// labelled session's writes, and Claude Code's own tools for `/decide`.
fn config(servers: &str, state: &Path) -> String {
    format!(
        r#"{servers}
storage_path: "{store}"
trace_file: "{{dir}}/traces.jsonl"
taint:
  sources:
    - tools: ["fs.read_*"]
      label: files
    - tools: ["WebFetch"]
      label: web
policies:
  - name: exfil-guard
    agent: "*"
    rules:
      - tools: ["fs.write_file"]
        tainted: [files]
        action: deny
      - tools: ["Bash"]
        tainted: [web]
        action: human_approval
      - tools: ["fs.*", "WebFetch", "Bash"]
        action: allow
"#,
        store = state.join("store").display(),
    )
}

/// `mesh7 serve` on `config`, once the filesystem server is ready.
fn start(servers: &str, state: &Path) -> Daemon {
    let d = Daemon::start(&config(servers, state));
    wait_for(Duration::from_secs(30), || {
        let (_, servers) = d.get("/mcp-servers", None);
        (servers[0]["status"] == "ready").then_some(())
    })
    .expect("the filesystem server never became ready");
    d
}

/// `POST /tool/{tool}` as claude in `session` (none when empty).
fn call(d: &Daemon, session: &str, tool: &str, args: &Value) -> (u16, Value) {
    d.post_with(
        &format!("/tool/{tool}"),
        &[
            ("Authorization", "Bearer agent:claude"),
            ("X-Session-Id", session),
        ],
        &json!({ "params": args }).to_string(),
    )
}

/// `POST /decide` as claude in `session`: the decision (403 when denied, as flux7).
fn decide(d: &Daemon, session: &str, tool: &str) -> Value {
    let (_, body) = d.post_with(
        "/decide",
        &[
            ("Authorization", "Bearer agent:claude"),
            ("X-Session-Id", session),
        ],
        &json!({ "tool": tool, "arguments": {} }).to_string(),
    );
    body
}

fn write_args(root: &Path, name: &str) -> Value {
    json!({ "path": root.join(name).display().to_string(), "content": "out" })
}

fn read_args(root: &Path) -> Value {
    json!({ "path": root.join("notes.txt").display().to_string() })
}

#[test]
fn reading_labels_the_session_and_its_writes_are_denied_until_the_label_is_cleared() {
    let (servers, root, _guard) = filesystem_server();
    let state = tempfile::tempdir().expect("state dir");
    let d = start(&servers, state.path());

    // A clean session writes.
    let (status, body) = call(&d, "s-1", "fs.write_file", &write_args(&root, "a.txt"));
    assert_eq!(status, 200, "{body}");
    // It reads: the read runs, and labels the session.
    let (status, body) = call(&d, "s-1", "fs.read_text_file", &read_args(&root));
    assert_eq!(status, 200, "{body}");
    assert!(
        body.to_string().contains("hello from the filesystem"),
        "{body}"
    );
    // Its next write is denied, and says why.
    let (status, body) = call(&d, "s-1", "fs.write_file", &write_args(&root, "b.txt"));
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body["error"], "policy=exfil-guard tool=fs.write_file action=deny taint=files",
        "{body}"
    );
    assert!(!root.join("b.txt").exists());
    // So does /decide in that session.
    let decided = decide(&d, "s-1", "fs.write_file");
    assert_eq!(decided["action"], "deny", "{decided}");
    // Another session, and the agent's calls without a session, are not labelled.
    assert_eq!(
        call(&d, "s-2", "fs.write_file", &write_args(&root, "c.txt")).0,
        200
    );
    assert_eq!(
        call(&d, "", "fs.write_file", &write_args(&root, "d.txt")).0,
        200
    );

    // The trace keeps the labels each decision saw: none before the read, `files` after.
    let denied = d.trace_of("fs.write_file", |e| e["policy"] == "deny");
    assert_eq!(denied["taint"], json!(["files"]), "{denied}");
    assert_eq!(denied["session_id"], "s-1", "{denied}");
    let read = d.trace_of("fs.read_text_file", |_| true);
    assert_eq!(read["taint"], json!([]), "{read}");

    // The operator sees what labelled it.
    let (status, listed) = d.get("/taint", None);
    assert_eq!(status, 200, "{listed}");
    let sessions = listed.as_array().expect("a list");
    assert_eq!(sessions.len(), 1, "{listed}");
    assert_eq!(
        (&sessions[0]["agent"], &sessions[0]["session"]),
        (&json!("claude"), &json!("s-1"))
    );
    let label = &sessions[0]["labels"][0];
    assert_eq!(
        (&label["label"], &label["tool"]),
        (&json!("files"), &json!("fs.read_text_file")),
        "{listed}"
    );
    assert!(
        label["at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{listed}"
    );
    assert_eq!(d.get("/taint?agent=cursor", None).1, json!([]));
    assert_eq!(d.metric("mesh7_tainted_sessions"), 1);
    assert_eq!(d.metric("mesh7_taint_sessions_forgotten_total"), 0);

    // SIGKILL: the label is in the store.
    drop(d);
    let d = start(&servers, state.path());
    assert_eq!(d.metric("mesh7_tainted_sessions"), 1, "loaded at start-up");
    let (status, body) = call(&d, "s-1", "fs.write_file", &write_args(&root, "e.txt"));
    assert_eq!(status, 403, "{body}");

    // Bad input: a JSON error, nothing cleared.
    for (path, status) in [
        ("/taint", 400),
        ("/taint?agent=claude", 400),
        ("/taint?agent=&session=s-1", 400),
        ("/taint?agent=claude&session=s-9", 404),
    ] {
        let (got, body) = d.delete(path);
        assert_eq!(got, status, "{path}: {body}");
        assert!(body["error"].is_string(), "{path}: {body}");
    }
    let (status, body) = d.get("/taint?limit=0", None);
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        call(&d, "s-1", "fs.write_file", &write_args(&root, "e.txt")).0,
        403
    );

    // Cleared after review: the session writes again.
    let (status, cleared) = d.delete("/taint?agent=claude&session=s-1");
    assert_eq!(status, 200, "{cleared}");
    assert_eq!(cleared["cleared"]["labels"][0]["label"], "files");
    assert_eq!(d.get("/taint", None).1, json!([]));
    assert_eq!(d.metric("mesh7_tainted_sessions"), 0);
    let (status, body) = call(&d, "s-1", "fs.write_file", &write_args(&root, "e.txt"));
    assert_eq!(status, 200, "{body}");
}

#[test]
fn a_hook_decision_labels_the_session_as_the_client_runs_the_tool() {
    let (servers, _root, _guard) = filesystem_server();
    let state = tempfile::tempdir().expect("state dir");
    let d = start(&servers, state.path());

    // What Claude Code's hooks ask: Bash is allowed until WebFetch is.
    assert_eq!(decide(&d, "cc-1", "Bash")["action"], "allow");
    assert_eq!(decide(&d, "cc-1", "WebFetch")["action"], "allow");
    let decided = decide(&d, "cc-1", "Bash");
    assert_eq!(decided["action"], "human_approval", "{decided}");
    assert_eq!(decide(&d, "cc-2", "Bash")["action"], "allow");
    // A denied source never ran, so it labels nothing.
    let (_, listed) = d.get("/taint", None);
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["labels"][0]["label"], "web", "{listed}");
}

#[test]
fn mcp_sessions_are_labelled_apart_over_http_and_stdio() {
    let (servers, root, _guard) = filesystem_server();
    let state = tempfile::tempdir().expect("state dir");
    let d = start(&servers, state.path());

    let reader = McpHttp::open(&d.url, "Bearer agent:claude");
    let other = McpHttp::open(&d.url, "Bearer agent:claude");
    let read = reader.call("fs.read_text_file", &read_args(&root));
    assert!(read["result"]["content"].is_array(), "{read}");
    assert_ne!(read["result"]["isError"], true, "{read}");
    let denied = reader.call("fs.write_file", &write_args(&root, "m.txt"));
    assert_eq!(denied["result"]["isError"], true, "{denied}");
    let governance = &denied["result"]["_meta"]["mesh7/governance"];
    assert_eq!(
        (
            &governance["outcome"],
            &governance["rule"],
            &governance["taint"]
        ),
        (&json!("denied"), &json!("exfil-guard"), &json!(["files"])),
        "{denied}"
    );
    assert!(result_text(&denied).contains("taint=files"), "{denied}");
    let written = other.call("fs.write_file", &write_args(&root, "n.txt"));
    assert!(written["result"]["content"].is_array(), "{written}");
    assert_ne!(written["result"]["isError"], true, "{written}");
    let (_, listed) = d.get("/taint", None);
    assert_eq!(listed[0]["session"], reader.session_id(), "{listed}");

    // The stdio server: its session is labelled by its own read.
    let dir = tempfile::tempdir().expect("dir");
    let config_file = common::write_config(dir.path(), &config(&servers, dir.path()));
    let config_file = config_file.display().to_string();
    let mut mcp = McpChild::start(
        dir.path(),
        &["--mcp", "--config", &config_file, "--listen", "127.0.0.1:0"],
        &[],
    );
    mcp.initialize();
    let mut id = 100;
    wait_for(Duration::from_secs(30), || {
        id += 1;
        mcp.tool_names(id)
            .contains(&"fs.write_file".to_owned())
            .then_some(())
    })
    .expect("the filesystem server never listed its tools");
    let call = |id: i64, tool: &str, args: Value| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
               "params": {"name": tool, "arguments": args}})
    };
    let answer = |mcp: &mut McpChild, id: i64| loop {
        let message = mcp.recv(Duration::from_secs(60));
        if message["id"] == id {
            return message;
        }
    };
    mcp.send(&call(1, "fs.write_file", write_args(&root, "s.txt")));
    let written = answer(&mut mcp, 1);
    assert!(root.join("s.txt").exists(), "{written}");
    mcp.send(&call(2, "fs.read_text_file", read_args(&root)));
    let read = answer(&mut mcp, 2);
    assert!(result_text(&read).contains("hello"), "{read}");
    mcp.send(&call(3, "fs.write_file", write_args(&root, "t.txt")));
    let denied = answer(&mut mcp, 3);
    assert_eq!(denied["result"]["isError"], true, "{denied}");
    assert_eq!(
        denied["result"]["_meta"]["mesh7/governance"]["taint"],
        json!(["files"]),
        "{denied}"
    );
    assert!(!root.join("t.txt").exists());
}
