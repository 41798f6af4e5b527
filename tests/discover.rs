//! `mesh7 discover`: the tools of every source grouped by source (a CLI tool, an OpenAPI spec,
//! the official MCP filesystem server, and the filesystem example as shipped), the generated
//! starter policy (validates, then governs real calls through `mesh7 serve`), and its refusals.

mod common;
#[allow(dead_code, unreachable_pub)] // shared helpers: each test file uses part of them
mod openapi_support;

use std::path::Path;
use std::time::Duration;

use common::{Daemon, npm_server, write_config};
use openapi_support::{Backend, run_mesh7};
use serde_json::json;

const SPEC: &str = r#"{
  "openapi": "3.0.3",
  "info": {"title": "notes", "version": "1"},
  "paths": {
    "/notes": {
      "get": {"operationId": "listNotes", "summary": "List the notes"},
      "post": {"operationId": "createNote", "summary": "Write a note",
        "requestBody": {"content": {"application/json": {"schema": {"type": "object",
          "properties": {"text": {"type": "string"}}}}}}}
    },
    "/notes/{id}": {
      "delete": {"operationId": "deleteNote",
        "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}}]}
    }
  }
}"#;

fn sources(backend_url: &str) -> String {
    format!(
        r#"
cli_tools:
  - name: echo
    bin: echo
    bare: {{}}
openapi:
  - file: notes.json
    backend_url: {backend_url}
    namespace: notes
"#
    )
}

fn discover(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut all = vec!["discover"];
    all.extend_from_slice(args);
    run_mesh7(&all, env, dir, Duration::from_secs(90))
}

#[test]
fn lists_cli_openapi_and_mcp_tools_grouped_by_source() {
    let (node, entry) = npm_server("@modelcontextprotocol/server-filesystem");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.json"), SPEC).unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let yaml = format!(
        "{}mcp_servers:\n  - name: fs\n    transport: stdio\n    command: \"{}\"\n    args: [\"{}\", \"{}\"]\n",
        sources("http://127.0.0.1:9"),
        node.display(),
        entry.display(),
        root.display()
    );
    let config = write_config(dir.path(), &yaml);
    let (code, stdout, stderr) = discover(dir.path(), &["--config", config.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "Connecting to MCP server: fs ({} {} {})",
            node.display(),
            entry.display(),
            root.display()
        )),
        "{stderr}"
    );
    // Groups in order of first appearance in the name-sorted list.
    let headings: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("    "))
        .collect();
    assert_eq!(headings.len(), 3, "{stdout}");
    assert_eq!(headings[0], "  CLI tool \"echo\" (1 tools):");
    assert!(headings[1].starts_with("  MCP server \"fs\" ("), "{stdout}");
    assert_eq!(headings[2], "  OpenAPI \"notes\" (3 tools):");
    let lines: Vec<&str> = stdout.lines().collect();
    for expected in [
        format!("    {:<40} Run echo", "echo.run"),
        format!("    {:<40} List the notes", "notes.list_notes"),
        format!("    {:<40} Write a note", "notes.create_note"),
        format!("    {:<40} -", "notes.delete_note"),
    ] {
        assert!(
            lines.contains(&expected.as_str()),
            "{expected:?} in\n{stdout}"
        );
    }
    assert!(stdout.contains("    fs.read_text_file "), "{stdout}");
    let total = stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("Discovered ")?
                .strip_suffix(" tools:")?
                .parse::<usize>()
                .ok()
        })
        .expect("a total");
    assert_eq!(
        total,
        stdout.lines().filter(|l| l.starts_with("    ")).count()
    );
}

#[test]
fn the_generated_policy_validates_and_governs_calls() {
    let backend = Backend::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.json"), SPEC).unwrap();
    let base = sources(&backend.url);
    let config = write_config(dir.path(), &base);
    let (code, policy, stderr) = discover(
        dir.path(),
        &["--config", config.to_str().unwrap(), "--generate-policy"],
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        policy.contains("policies:\n  - name: discovered\n"),
        "{policy}"
    );

    // The whole output is a configuration fragment: with the sources it validates.
    let full = write_config(dir.path(), &format!("{base}{policy}"));
    let (code, stdout, stderr) = run_mesh7(
        &["validate", "--config", full.to_str().unwrap()],
        &[],
        dir.path(),
        Duration::from_secs(60),
    );
    assert_eq!((code, stdout.trim()), (0, "ok"), "{stderr}\n{policy}");

    let text = std::fs::read_to_string(&full).unwrap();
    let d = Daemon::start_with(&text, &[], |d| {
        std::fs::write(d.join("notes.json"), SPEC).unwrap();
    });
    // Read → allowed and forwarded.
    let (status, body) = d.call("claude", "notes.list_notes", &json!({}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["path"], "/notes");
    // Write → a human decides.
    let (status, body) = d.decide("claude", "notes.create_note", &json!({"text": "hi"}));
    assert_eq!(
        (status, &body["action"]),
        (200, &json!("human_approval")),
        "{body}"
    );
    // Destructive, or arbitrary → denied.
    let (status, body) = d.call("claude", "notes.delete_note", &json!({"id": 1}));
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body["error"],
        "policy=discovered tool=notes.delete_note action=deny"
    );
    let (status, _) = d.call("claude", "echo.run", &json!({"args": ["x"]}));
    assert_eq!(status, 403);
}

#[test]
fn an_openapi_file_alone_with_a_backend() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.json"), SPEC).unwrap();
    let (code, stdout, stderr) = discover(
        dir.path(),
        &["--openapi", "notes.json", "--backend", "http://127.0.0.1:9"],
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout,
        format!(
            "\nDiscovered 3 tools:\n\n  OpenAPI (3 tools):\n    {:<40} Write a note\n    {:<40} -\n    {:<40} List the notes\n",
            "create_note", "delete_note", "list_notes"
        )
    );
}

#[test]
fn lint_reports_rules_that_match_no_tool_and_fields_no_tool_takes() {
    let (node, entry) = npm_server("@modelcontextprotocol/server-filesystem");
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let servers = format!(
        "cli_tools:\n  - name: echo\n    bin: echo\n    bare: {{}}\nmcp_servers:\n  - name: fs\n    transport: stdio\n    command: \"{}\"\n    args: [\"{}\", \"{}\"]\n  - name: ghost\n    transport: stdio\n    command: /nonexistent/mcp-server\n",
        node.display(),
        entry.display(),
        root.display()
    );
    let rules = |fs_field: &str, read: &str| {
        format!(
            r#"policies:
  - name: team
    agent: "*"
    rules:
      - tools: ["{read}", "echo.run"]
        action: allow
      - tools: ["fs.*"]
        action: human_approval
        condition: {{ field: params.{fs_field}, operator: starts_with, value: "/" }}
      - tools: ["ghost.*"]
        action: deny
"#
        )
    };
    let config = write_config(
        dir.path(),
        &format!("{servers}{}", rules("paht", "fs.read_fille")),
    );
    let (code, stdout, stderr) = discover(
        dir.path(),
        &["--config", config.to_str().unwrap(), "--lint"],
        &[],
    );
    assert_eq!(code, 1, "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0], r#"policies[0] "team": rules[0].tools[0] "fs.read_fille" matches no tool"#,
        "{stdout}"
    );
    assert!(
        lines[1].starts_with(
            r#"policies[0] "team": rules[1].condition: field "params.paht" is not an argument of any tool the rule matches (fs."#
        ) && lines[1].contains("fs.read_text_file: "),
        "{stdout}"
    );
    // The server that could not start is said, and its rule not judged.
    assert_eq!(lines[2], "Not checked: the tools of ghost (not reached).");
    assert!(lines[3].ends_with(": 2 findings."), "{stdout}");
    assert!(
        stderr.contains("Connecting to MCP server: ghost"),
        "{stderr}"
    );

    // Mended, nothing is reported.
    let config = write_config(
        dir.path(),
        &format!("{servers}{}", rules("path", "fs.read_text_file")),
    );
    let (code, stdout, stderr) = discover(
        dir.path(),
        &["--config", config.to_str().unwrap(), "--lint"],
        &[],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.trim_end().ends_with(": no findings."), "{stdout}");
    // --lint judges a configuration's rules: it needs one, and is not --generate-policy.
    let (code, _, stderr) = discover(dir.path(), &["--openapi", "x.json", "--lint"], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--config <CONFIG>"), "{stderr}");
    let (code, _, stderr) = discover(
        dir.path(),
        &[
            "--config",
            config.to_str().unwrap(),
            "--lint",
            "--generate-policy",
        ],
        &[],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("cannot be used with"), "{stderr}");
}

#[test]
fn refuses_without_sources() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = discover(dir.path(), &[], &[]);
    assert_eq!((code, stdout.as_str()), (1, ""));
    assert!(stderr.starts_with("usage: mesh7 discover"), "{stderr}");

    let config = write_config(dir.path(), "port: 9999\n");
    let (code, _, stderr) = discover(dir.path(), &["--config", config.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert_eq!(
        stderr.trim(),
        "No MCP servers, CLI tools or OpenAPI specs to discover."
    );

    let config = write_config(dir.path(), "prot: 9999\n");
    let (code, _, stderr) = discover(dir.path(), &["--config", config.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(stderr.starts_with("Error loading config: "), "{stderr}");
}

#[test]
fn the_filesystem_example_lists_its_tools_and_serves_reads() {
    let (node, entry) = npm_server("@modelcontextprotocol/server-filesystem");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/filesystem");
    let config = example.join("mesh7.yaml");
    let sandbox = std::fs::canonicalize(example.join("sandbox")).unwrap();
    let env = [
        ("MESH7_NODE", node.to_str().unwrap()),
        ("MESH7_FS_SERVER", entry.to_str().unwrap()),
        ("MESH7_FS_ROOT", sandbox.to_str().unwrap()),
    ];
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) =
        discover(dir.path(), &["--config", config.to_str().unwrap()], &env);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("  MCP server \"fs\" ("), "{stdout}");
    assert!(stdout.contains("    fs.read_text_file "), "{stdout}");

    let d = Daemon::spawn(tempfile::tempdir().unwrap(), &config, &env);
    let file = sandbox.join("hello.txt");
    let listed = common::wait_for(Duration::from_secs(60), || {
        let (_, tools) = d.get("/tools", None);
        tools
            .as_array()?
            .iter()
            .any(|t| t["name"] == "fs.read_text_file")
            .then_some(())
    });
    assert!(
        listed.is_some(),
        "the filesystem server never listed its tools"
    );
    let (status, body) = d.call("claude", "fs.read_text_file", &json!({"path": file}));
    assert_eq!(status, 200, "{body}");
    assert!(
        body["result"]
            .to_string()
            .contains("Hello from the mesh7 filesystem example."),
        "{body}"
    );
    let (status, body) = d.decide(
        "claude",
        "fs.write_file",
        &json!({"path": "x", "content": "y"}),
    );
    assert_eq!(
        (status, &body["action"]),
        (200, &json!("human_approval")),
        "{body}"
    );
}
