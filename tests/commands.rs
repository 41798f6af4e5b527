//! The `mesh7` command line: `validate`, `replay`, `--version`, `--help`, and start-up failures.

mod common;

use common::{run, write_config};

#[test]
fn validate_prints_ok_for_a_good_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "policies:\n  - name: p\n    agent: \"*\"\n    rules:\n      - tools: [\"*\"]\n        action: deny\n",
    );
    let (code, stdout, _) = run(&["validate", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert_eq!(stdout.trim(), "ok");
}

#[test]
fn validate_reports_every_error_with_its_path_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        r#"policies:
  - name: a
    rules:
      - tools: ["x"]
        action: allow
  - name: b
    rules:
      - tools: ["x"]
        acton: allow
  - name: c
    rules:
      - tools: ["x"]
        action: alow
"#,
    );
    let (code, stdout, stderr) = run(&["validate", "--config", cfg.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(!stdout.contains("ok"));
    assert!(stderr.contains("policies[1].rules[0].acton"), "{stderr}");
    assert!(stderr.contains("policies[2].rules[0].action"), "{stderr}");
}

#[test]
fn serve_refuses_a_bad_config_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "prot: 9090\n");
    let (code, _, stderr) = run(&["serve", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("load config"), "{stderr}");
    assert!(stderr.contains("prot"), "{stderr}");
}

#[test]
fn serve_refuses_a_missing_config_file() {
    let (code, _, stderr) = run(&["serve", "--config", "does/not/exist.yaml"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("does/not/exist.yaml"), "{stderr}");
}

#[test]
fn a_trace_file_that_cannot_be_opened_stops_the_start_up_naming_its_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "trace_file: \"{dir}/missing/traces.jsonl\"\n");
    let (code, stderr) = serve_on_loopback(&cfg);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("missing/traces.jsonl"), "{stderr}");
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "{stderr}"
    );
}

#[test]
fn serve_refuses_settings_it_cannot_honour_rather_than_ignoring_them() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "tls:\n  cert_file: cert.pem\n  key_file: key.pem\n",
    );
    let (code, stderr) = serve_on_loopback(&cfg);
    assert_eq!(code, 1);
    assert!(stderr.contains("tls"), "{stderr}");
}

/// `mesh7 serve` on `cfg` and a free loopback port, for a start-up expected to fail: (exit
/// code, stderr).
fn serve_on_loopback(cfg: &std::path::Path) -> (i32, String) {
    let (code, _, stderr) = run(&[
        "serve",
        "--config",
        cfg.to_str().expect("a UTF-8 temp path"),
        "--listen",
        "127.0.0.1:0",
    ]);
    (code, stderr)
}

#[test]
fn version_and_help() {
    let (code, stdout, _) = run(&["--version"]);
    assert_eq!(code, 0);
    assert!(
        stdout.starts_with(&format!("mesh7 {} (", env!("CARGO_PKG_VERSION"))),
        "{stdout}"
    );
    let (code, stdout, _) = run(&["--help"]);
    assert_eq!(code, 0);
    for word in ["serve", "validate", "--config"] {
        assert!(stdout.contains(word), "{stdout}");
    }
    let (code, _, stderr) = run(&["frobnicate"]);
    assert_ne!(code, 0);
    assert!(!stderr.is_empty());
}

const RECORDED: &str = r#"
trace_file: "{dir}/traces.jsonl"
cli_tools:
  - name: echo
    bin: echo
    bare: { timeout: 5s }
  - name: touch
    bin: touch
    bare: { timeout: 5s }
policies:
  - name: current
    agent: "*"
    rules:
      - tools: ["echo.run"]
        action: allow
      - tools: ["touch.run"]
        action: deny
"#;

#[test]
fn replay_lists_the_recorded_calls_a_candidate_policy_would_decide_otherwise() {
    let mut d = common::Daemon::start(RECORDED);
    let echo = serde_json::json!({"args": ["hi"]});
    assert_eq!(d.call("claude", "echo.run", &echo).0, 200);
    assert_eq!(d.call("claude", "echo.run", &echo).0, 200);
    let touch = serde_json::json!({"args": ["x"]});
    assert_eq!(d.call("claude", "touch.run", &touch).0, 403);
    assert!(d.terminate().success(), "the traces are flushed at exit");
    let traces = d.path("traces.jsonl").display().to_string();

    // The policies that made the calls decide them the same (the trace file of the
    // configuration is the default).
    let recorded = d.path("mesh7.yaml").display().to_string();
    let (code, stdout, stderr) = run(&["replay", "--config", &recorded]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(stdout, "3 calls replayed, 0 would change\n");

    // A candidate that puts echo under approval.
    let dir = tempfile::tempdir().expect("temp dir");
    let candidate = write_config(
        dir.path(),
        &RECORDED
            .replace("action: allow", "action: human_approval")
            .replace("name: current", "name: candidate"),
    );
    let candidate = candidate.display().to_string();
    let (code, stdout, stderr) = run(&["replay", "--config", &candidate, "--traces", &traces]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    for line in &lines[..2] {
        assert!(
            line.ends_with(" claude echo.run: allow -> human_approval (candidate)"),
            "{stdout}"
        );
    }
    assert_eq!(
        lines[2],
        "3 calls replayed, 2 would change (allow -> human_approval: 2)"
    );

    // Bad input: a clear message and exit status 2, never a panic.
    let missing = dir.path().join("nothing.jsonl").display().to_string();
    let (code, stdout, stderr) = run(&["replay", "--config", &candidate, "--traces", &missing]);
    assert_eq!((code, stdout.as_str()), (2, ""), "{stderr}");
    assert!(stderr.starts_with(&format!("read {missing}: ")), "{stderr}");
    let no_trace_file = write_config(dir.path(), "policies: []\n")
        .display()
        .to_string();
    let (code, _, stderr) = run(&["replay", "--config", &no_trace_file]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("give --traces FILE"), "{stderr}");
    let broken = write_config(
        dir.path(),
        "policies: [{name: p, agent: '*', rules: [{tools: [x], action: maybe}]}]\n",
    )
    .display()
    .to_string();
    let (code, _, stderr) = run(&["replay", "--config", &broken, "--traces", &traces]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.starts_with("load config "), "{stderr}");
}

#[test]
fn verify_traces_finds_every_edited_removed_or_moved_line_of_a_chained_file() {
    let chained = RECORDED.replace(
        "trace_file: \"{dir}/traces.jsonl\"",
        "trace_file: \"{dir}/traces.jsonl\"\ntrace:\n  hmac_key: \"${MESH7_TEST_AUDIT_KEY}\"",
    );
    let key = (
        "MESH7_TEST_AUDIT_KEY",
        "a secret of more than sixteen bytes",
    );
    let echo = serde_json::json!({"args": ["hi"]});
    let touch = serde_json::json!({"args": ["x"]});
    let mut d = common::Daemon::start_with(&chained, &[key], |_| {});
    assert_eq!(d.call("claude", "echo.run", &echo).0, 200);
    assert_eq!(d.call("claude", "touch.run", &touch).0, 403);
    assert!(d.terminate().success());
    // A second process on the same file continues the chain.
    let dir = tempfile::TempDir::new_in(d.dir.path()).expect("temp dir");
    let config = d.path("mesh7.yaml");
    let mut again = common::Daemon::spawn(dir, &config, &[key]);
    assert_eq!(again.call("bob", "echo.run", &echo).0, 200);
    assert!(again.terminate().success());

    let traces = d.path("traces.jsonl");
    let config = config.display().to_string();
    let verify = |traces: &std::path::Path| {
        let traces = traces.display().to_string();
        let args = ["verify-traces", "--config", &config, "--traces", &traces];
        common::run_with_env(&args, &[key])
    };
    let (code, stdout, stderr) = verify(&traces);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(stdout, "3 lines verified: the chain is intact\n");

    let text = std::fs::read_to_string(&traces).expect("traces");
    let lines: Vec<&str> = text.lines().collect();
    let tampered = d.path("tampered.jsonl");
    let write = |lines: &[&str]| std::fs::write(&tampered, lines.join("\n") + "\n").expect("write");

    // The denied call made to look allowed.
    let edited = lines[1].replace("\"policy\":\"deny\"", "\"policy\":\"allow\"");
    assert_ne!(edited, lines[1]);
    write(&[lines[0], &edited, lines[2]]);
    let (code, stdout, _) = verify(&tampered);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains(" line 2: altered: "), "{stdout}");
    assert!(
        stdout.ends_with("2 lines verified, 1 problems: the chain is broken\n"),
        "{stdout}"
    );

    // The denied call removed.
    write(&[lines[0], lines[2]]);
    let (code, stdout, _) = verify(&tampered);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains(" line 2: out of chain: "), "{stdout}");

    // No key, no chain to check: an error, not a verdict.
    let plain = write_config(d.dir.path(), RECORDED).display().to_string();
    let traces = traces.display().to_string();
    let (code, _, stderr) = run(&["verify-traces", "--config", &plain, "--traces", &traces]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("trace.hmac_key is not set"), "{stderr}");
}

#[test]
fn redacted_secrets_reach_the_tool_but_never_the_audit_trail() {
    let redacting = RECORDED.replace(
        "trace_file: \"{dir}/traces.jsonl\"",
        "trace_file: \"{dir}/traces.jsonl\"\ntrace:\n  hmac_key: \"${MESH7_TEST_AUDIT_KEY}\"\n  redact:\n    keys: [\"*token*\"]\n    values: [\"sk-live-[a-z0-9]+\"]",
    );
    let key = (
        "MESH7_TEST_AUDIT_KEY",
        "a secret of more than sixteen bytes",
    );
    let secret = "sk-live-4f9a7c1e2b";
    let mut d = common::Daemon::start_with(&redacting, &[key], |_| {});
    // The tool gets the arguments as they are: echo prints the secret back.
    let (status, body) = d.call(
        "claude",
        "echo.run",
        &serde_json::json!({"args": ["login", secret]}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["stdout"], format!("login {secret}\n"));
    // Another ingress, a named secret: what /decide records is redacted the same way.
    let (status, body) = d.decide(
        "claude",
        "echo.run",
        &serde_json::json!({"args": ["x"], "API_Token": {"value": "tok-123"}}),
    );
    assert_eq!(status, 200, "{body}");

    let (_, traces) = d.get("/traces?tool=echo.run", None);
    let shown = traces.to_string();
    assert_eq!(traces.as_array().map(Vec::len), Some(2), "{shown}");
    assert!(
        !shown.contains(secret) && !shown.contains("tok-123"),
        "{shown}"
    );
    let entries = traces.as_array().expect("entries");
    let decided = &entries[0];
    assert_eq!(decided["ingress"], "decide", "{shown}");
    assert!(
        decided["params"]["API_Token"]
            .as_str()
            .is_some_and(|m| m.starts_with("[redacted:"))
    );
    let called = &entries[1];
    assert_eq!(called["params"]["args"][0], "login");
    assert!(
        called["params"]["args"][1]
            .as_str()
            .is_some_and(|m| m.starts_with("[redacted:"))
    );
    assert!(d.terminate().success());

    // Nor does the file, and its chain seals the redacted lines.
    let traces = d.path("traces.jsonl");
    let written = std::fs::read_to_string(&traces).expect("traces");
    assert_eq!(written.lines().count(), 2, "{written}");
    assert!(
        !written.contains(secret) && !written.contains("tok-123"),
        "{written}"
    );
    let config = d.path("mesh7.yaml").display().to_string();
    let traces = traces.display().to_string();
    let args = ["verify-traces", "--config", &config, "--traces", &traces];
    let (code, stdout, stderr) = common::run_with_env(&args, &[key]);
    assert_eq!(code, 0, "{stdout}{stderr}");

    // A candidate whose decision reads the redacted argument cannot be compared on that call.
    let dir = tempfile::tempdir().expect("temp dir");
    let candidate = write_config(
        dir.path(),
        &RECORDED.replace(
            "      - tools: [\"echo.run\"]\n        action: allow",
            "      - tools: [\"echo.run\"]\n        action: deny\n        condition: { field: API_Token, operator: exists }\n      - tools: [\"echo.run\"]\n        action: allow",
        ),
    );
    let candidate = candidate.display().to_string();
    let (code, stdout, stderr) = run(&["replay", "--config", &candidate, "--traces", &traces]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.starts_with("0 calls replayed, 0 would change; 2 not comparable"),
        "{stdout}"
    );
}
