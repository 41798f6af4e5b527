//! Strict loading: every unknown key, bad value and failed check is an error with its path, its
//! line and (for the checks flux7 had) flux7's text; all of them are reported at once.

use std::path::Path;

use mesh7_config::load::{ConfigError, ConfigErrors, LoadedConfig, load_with_env};

fn load_text(text: &str) -> Result<LoadedConfig, ConfigErrors> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("mesh7.yaml");
    std::fs::write(&path, text).expect("config written");
    load_with_env(&path, &|_| None)
}

/// Each error as displayed: `<path>: <message> (line N)`.
fn errors(text: &str) -> Vec<String> {
    match load_text(text) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn reports_each_invalid_value_with_its_path_message_and_line() {
    let cases: &[(&str, &str, &str)] = &[
        // ---- unknown keys, with the closest known name ----
        (
            "top-level typo",
            "port: 1\nservr:\n  bind: 0.0.0.0\n",
            "servr: unknown field, did you mean `server`? (line 2)",
        ),
        (
            "nested typo",
            "policies:\n  - name: p\n    rules:\n      - tools: [a]\n        acton: allow\n",
            "policies[0].rules[0].acton: unknown field, did you mean `action`? (line 5)",
        ),
        (
            "transposed letters",
            "policies:\n  - name: p\n    agnet: x\n",
            "policies[0].agnet: unknown field, did you mean `agent`? (line 3)",
        ),
        (
            "unknown key far from any field",
            "tls:\n  cert_file: a\n  key_file: b\n  verify: true\n",
            "tls.verify: unknown field (expected cert_file or key_file) (line 4)",
        ),
        (
            "unknown key in a flow mapping",
            "policies:\n  - name: p\n    rules:\n      - tools: [a]\n        action: allow\n        condition: { field: x, opertor: \"==\", value: 1 }\n",
            "policies[0].rules[0].condition.opertor: unknown field, did you mean `operator`? (line 6)",
        ),
        // ---- unknown enum values ----
        (
            "unknown action",
            "policies:\n  - name: p\n    rules:\n      - tools: [a]\n        action: allow\n      - tools: [b]\n        action: alow\n",
            "policies[0].rules[1].action: unknown value \"alow\" (expected allow, deny or human_approval), did you mean `allow`? (line 7)",
        ),
        (
            "unknown approval channel (flux7's text)",
            "approval:\n  channel: slack\n",
            "approval.channel: unknown value \"slack\" (expected queue, tty or tty-fallback) (line 2)",
        ),
        (
            "unknown cli default_action",
            "cli_tools:\n  - name: git\n    bin: git\n    default_action: maybe\n",
            "cli_tools[0].default_action: unknown value \"maybe\" (expected allow, deny or human_approval) (line 4)",
        ),
        (
            "unknown mcp transport",
            "mcp_servers:\n  - name: fs\n    transport: stdoi\n    command: x\n",
            "mcp_servers[0].transport: unknown value \"stdoi\" (expected stdio, sse, http or streamable-http), did you mean `stdio`? (line 3)",
        ),
        (
            "unknown condition operator",
            "policies:\n  - name: p\n    rules:\n      - tools: [a]\n        action: deny\n        condition: { field: x, operator: \"=\", value: 1 }\n",
            "policies[0].rules[0].condition.operator: unknown value \"=\" (expected ==, !=, <, <=, >, >=, in, not_in, contains, starts_with, ends_with, matches or exists) (line 6)",
        ),
        // ---- types ----
        (
            "port not a number",
            "port: http\n",
            "port: invalid type: string \"http\", expected u16 (line 1)",
        ),
        (
            "port out of range",
            "port: 70000\n",
            "port: invalid value: integer `70000`, expected u16 (line 1)",
        ),
        (
            "negative session budget",
            "policies:\n  - name: p\n    rate_limit: { max_per_session: -1 }\n",
            "policies[0].rate_limit.max_per_session: invalid value: integer `-1`, expected u64 (line 3)",
        ),
        (
            "misspelt session budget",
            "policies:\n  - name: p\n    rate_limit: { max_per_sesion: 2 }\n",
            "policies[0].rate_limit.max_per_sesion: unknown field, did you mean `max_per_session`? (line 3)",
        ),
        (
            "tainted label no source gives",
            "taint:\n  sources: [{tools: [fetch.*], label: web}]\npolicies:\n  - name: p\n    rules:\n      - tools: [slack.*]\n        action: deny\n        tainted: [wbe]\n",
            "policies[0].rules[0].tainted[0]: no taint source gives the label \"wbe\", so the rule would never match (labels: web) (line 8)",
        ),
        (
            "tainted without any source",
            "policies:\n  - name: p\n    rules:\n      - tools: [slack.*]\n        action: deny\n        tainted: [web]\n",
            "policies[0].rules[0].tainted[0]: no taint source gives the label \"web\", so the rule would never match (labels: none: taint.sources is empty) (line 6)",
        ),
        (
            "taint source without tools",
            "taint:\n  sources:\n    - tools: []\n      label: web\n",
            "taint.sources[0].tools: tools must list at least one non-empty pattern (line 3)",
        ),
        (
            "taint label with a space",
            "taint:\n  sources:\n    - tools: [fetch.*]\n      label: the web\n",
            "taint.sources[0].label: invalid label \"the web\": letters, digits, '_', '-' and '.' only (line 4)",
        ),
        (
            "taint source without a label",
            "taint:\n  sources:\n    - tools: [fetch.*]\n",
            "taint.sources[0]: missing required field 'label' (line 3)",
        ),
        (
            "no tainted session kept",
            "taint:\n  max_sessions: 0\n",
            "taint.max_sessions: must be greater than 0 (line 2)",
        ),
        (
            "section not a mapping",
            "server: 3\n",
            "server: invalid type: integer `3`, expected a mapping (line 1)",
        ),
        (
            "list not a sequence",
            "policies: all\n",
            "policies: invalid type: string \"all\", expected a sequence (line 1)",
        ),
        (
            "tool name not a string",
            "policies:\n  - name: p\n    rules:\n      - tools: [a, 7]\n        action: allow\n",
            "policies[0].rules[0].tools[1]: invalid type: integer `7`, expected a string (line 4)",
        ),
        (
            "number in a block list, placed by the parser",
            "policies:\n  - name: p\n    rules:\n      - tools:\n          - a\n          - 7\n        action: allow\n",
            "policies[0].rules[0].tools[1]: invalid type: integer `7`, expected a string (line 6)",
        ),
        (
            "escaped string in a block list, placed by the parser",
            "policies:\n  - name: p\n    rules:\n      - tools: [a]\n        action: allow\n        condition:\n          all:\n            - \"\\tx\"\n",
            "policies[0].rules[0].condition.all[0]: invalid type: string \"\\tx\", expected a mapping (line 8)",
        ),
        (
            "missing required field",
            "policies:\n  - name: p\n    rules:\n      - tools: [a]\n",
            "policies[0].rules[0]: missing required field 'action' (line 4)",
        ),
        (
            "empty list element",
            "policies:\n  - name: p\n  -\n",
            "policies[1]: empty list element (line 3)",
        ),
        (
            "top level not a mapping",
            "- port: 1\n",
            "{config}: invalid type: sequence, expected a mapping (line 1)",
        ),
        // ---- YAML itself ----
        (
            "duplicate key",
            "port: 1\nserver:\n  bind: 127.0.0.1\n  bind: 0.0.0.0\n",
            "server.bind: duplicate key, first defined at line 3 (line 4)",
        ),
        (
            "syntax error",
            "port: 1\nserver:\n  bind: [1\n",
            "{config}: did not find expected ',' or ']', while parsing a flow sequence at line 3 column 9 (line 4)",
        ),
        // ---- cli_tools: flux7's table ----
        (
            "cli name missing",
            "cli_tools:\n  - bin: git\n",
            "cli_tools[0]: name is required (line 2)",
        ),
        (
            "cli bin missing",
            "cli_tools:\n  - name: git\n",
            "cli_tools[0] (git): bin is required (line 2)",
        ),
        (
            "cli duplicate name",
            "cli_tools:\n  - name: git\n    bin: git\n  - name: git\n    bin: /usr/bin/git\n",
            "cli_tools[1]: duplicate name \"git\" (line 4)",
        ),
        (
            "cli bare with commands",
            "cli_tools:\n  - name: git\n    bin: git\n    commands:\n      status: {}\n    bare: {}\n",
            "cli_tools[0] (git): bare and commands are mutually exclusive (line 6)",
        ),
        (
            "cli bare with strict",
            "cli_tools:\n  - name: jq\n    bin: jq\n    bare: {}\n    strict: true\n",
            "cli_tools[0] (jq): strict has no meaning in bare mode (line 5)",
        ),
        (
            "cli bare timeout",
            "cli_tools:\n  - name: jq\n    bin: jq\n    bare:\n      timeout: soon\n",
            "cli_tools[0] (jq): bare has invalid timeout \"soon\": invalid duration \"soon\" (line 5)",
        ),
        (
            "cli strict without commands",
            "cli_tools:\n  - name: git\n    bin: git\n    strict: true\n",
            "cli_tools[0] (git): strict mode requires at least one declared command (line 4)",
        ),
        (
            "cli command timeout",
            "cli_tools:\n  - name: git\n    bin: git\n    commands:\n      status:\n        timeout: 5d\n",
            "cli_tools[0] (git): command \"status\" has invalid timeout \"5d\": unknown unit \"d\" in duration \"5d\" (line 6)",
        ),
        (
            "cli zero timeout",
            "cli_tools:\n  - name: git\n    bin: git\n    commands:\n      status: { timeout: 0s }\n",
            "cli_tools[0] (git): command \"status\" has invalid timeout \"0s\": duration \"0s\" must be greater than 0 (line 5)",
        ),
        // ---- openapi: flux7's texts ----
        (
            "openapi neither",
            "openapi:\n  - backend_url: http://x\n",
            "openapi[0]: url or file is required (line 2)",
        ),
        (
            "openapi both",
            "openapi:\n  - url: http://x/spec.json\n    file: spec.json\n",
            "openapi[0]: set url or file, not both (line 2)",
        ),
        // ---- mcp_servers ----
        (
            "mcp name missing",
            "mcp_servers:\n  - transport: stdio\n    command: x\n",
            "mcp_servers[0]: name is required (line 2)",
        ),
        (
            "mcp duplicate name",
            "mcp_servers:\n  - name: fs\n    transport: stdio\n    command: a\n  - name: fs\n    transport: stdio\n    command: b\n",
            "mcp_servers[1]: duplicate name \"fs\" (line 5)",
        ),
        (
            "mcp name with a dot",
            "mcp_servers:\n  - name: my.fs\n    transport: stdio\n    command: x\n",
            "mcp_servers[0] (my.fs): name must not contain dots (line 2)",
        ),
        (
            "mcp stdio without command",
            "mcp_servers:\n  - name: fs\n    transport: stdio\n",
            "mcp_servers[0] (fs): transport stdio requires command (line 2)",
        ),
        (
            "mcp sse without url",
            "mcp_servers:\n  - name: web\n    transport: sse\n",
            "mcp_servers[0] (web): transport sse requires url (line 2)",
        ),
        (
            "mcp streamable-http without url",
            "mcp_servers:\n  - name: web\n    transport: streamable-http\n    url: \"\"\n",
            "mcp_servers[0] (web): transport streamable-http requires url (line 4)",
        ),
        (
            "mcp timeout",
            "mcp_servers:\n  - name: web\n    transport: http\n    url: http://x/mcp\n    timeout: 1 minute\n",
            "mcp_servers[0] (web): invalid timeout \"1 minute\": unknown unit \" minute\" in duration \"1 minute\" (line 5)",
        ),
        // ---- durations ----
        (
            "loop window",
            "loop_detection:\n  window: 10x\n",
            "loop_detection.window: unknown unit \"x\" in duration \"10x\" (line 2)",
        ),
        (
            "loop halt_after negative",
            "loop_detection:\n  halt_after: -1\n",
            "loop_detection.halt_after: invalid value: integer `-1`, expected u32 (line 2)",
        ),
        (
            "client timeout negative",
            "server:\n  client_timeout: -1s\n",
            "server.client_timeout: negative duration \"-1s\" is not allowed (line 2)",
        ),
        (
            "max grant duration in days",
            "supervisor:\n  max_grant_duration: 1d\n",
            "supervisor.max_grant_duration: unknown unit \"d\" in duration \"1d\" (line 2)",
        ),
        (
            "jwt refresh",
            "auth:\n  jwt:\n    jwks_url: https://idp/jwks\n    refresh: often\n",
            "auth.jwt.refresh: invalid duration \"often\" (line 4)",
        ),
        (
            "zero window",
            "loop_detection:\n  window: 0s\n",
            "loop_detection.window: duration \"0s\" must be greater than 0 (line 2)",
        ),
        // ---- numbers and addresses ----
        (
            "bind not an IP",
            "server:\n  bind: localhost\n",
            "server.bind: invalid IP address \"localhost\" (line 2)",
        ),
        (
            "zero body limit",
            "server:\n  max_body_bytes: 0\n",
            "server.max_body_bytes: must be greater than 0 (line 2)",
        ),
        (
            "zero mailbox",
            "server:\n  mailbox_capacity: 0\n",
            "server.mailbox_capacity: must be greater than 0 (line 2)",
        ),
        (
            "zero ring",
            "trace:\n  ring_size: 0\n",
            "trace.ring_size: must be greater than 0 (line 2)",
        ),
        (
            "short audit key",
            "trace:\n  hmac_key: short\n",
            "trace.hmac_key: must be at least 16 characters (line 2)",
        ),
        (
            "redacted key pattern malformed",
            "trace:\n  redact:\n    keys: [password, \"[abc\"]\n",
            "trace.redact.keys[1]: malformed pattern \"[abc\" (line 3)",
        ),
        (
            "redacted value pattern that does not parse",
            "trace:\n  redact:\n    values:\n      - \"sk-[a-z]+\"\n      - \"(unclosed\"\n",
            "trace.redact.values[1]: invalid regular expression \"(unclosed\": unclosed group (line 5)",
        ),
        (
            "redacted value pattern matching nothing at all",
            "trace:\n  redact:\n    values: [\".*\"]\n",
            "trace.redact.values[0]: \".*\" matches the empty string (line 3)",
        ),
        (
            "unknown key under redact",
            "trace:\n  redact:\n    fields: [password]\n",
            "trace.redact.fields: unknown field (expected keys or values) (line 3)",
        ),
        (
            "zero repeats",
            "loop_detection:\n  max_repeats: 0\n",
            "loop_detection.max_repeats: must be at least 1 (line 2)",
        ),
        (
            "zero retention",
            "approval:\n  retention: 0\n",
            "approval.retention: must be greater than 0 (line 2)",
        ),
        (
            "zero rate limiter agents",
            "rate_limiter:\n  max_agents: 0\n",
            "rate_limiter.max_agents: must be greater than 0 (line 2)",
        ),
        (
            "half tls",
            "tls:\n  cert_file: cert.pem\n",
            "tls: cert_file and key_file must be set together (line 1)",
        ),
    ];
    let mut failures = Vec::new();
    for (name, yaml, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mesh7.yaml");
        std::fs::write(&path, yaml).unwrap();
        let expected = expected.replace("{config}", &path.display().to_string());
        let got: Vec<String> = match load_with_env(&path, &|_| None) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
        };
        if got != vec![expected.clone()] {
            failures.push(format!(
                "case {name:?}:\n  expected {expected:?}\n  got      {got:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn error_fields_hold_path_line_and_message_separately() {
    let err =
        load_text("policies:\n  - name: p\n    rules:\n      - tools: [a]\n        action: alow\n")
            .unwrap_err();
    assert_eq!(
        err.0,
        vec![ConfigError {
            path: "policies[0].rules[0].action".to_owned(),
            line: Some(5),
            message: "unknown value \"alow\" (expected allow, deny or human_approval), did you mean `allow`?".to_owned(),
        }]
    );
}

#[test]
fn reports_every_error_not_only_the_first() {
    let yaml = "\
policies:
  - name: ok
    rules:
      - tools: [a]
        action: allow
  - name: typo-one
    rules:
      - tools: [a]
        acton: allow
  - name: fine
  - name: typo-two
    rulez: []
cli_tools:
  - name: jq
    bin: jq
    bare: {}
    strict: true
";
    assert_eq!(
        errors(yaml),
        vec![
            "policies[1].rules[0].acton: unknown field, did you mean `action`? (line 9)",
            "policies[3].rulez: unknown field, did you mean `rules`? (line 12)",
            "cli_tools[0] (jq): strict has no meaning in bare mode (line 17)",
        ]
    );
}

#[test]
fn reports_errors_of_sibling_entries_and_elements_together() {
    let yaml = "\
port: nine
server:
  bind: nowhere
  client_timeout: 3 s
trace: { ring_size: 0 }
policies:
  - name: p
    rules:
      - tools: [a]
        action: alow
      - tools: [b]
        action: dney
cli_tools:
  - name: a
  - bin: b
";
    assert_eq!(
        errors(yaml),
        vec![
            "port: invalid type: string \"nine\", expected u16 (line 1)",
            "server.bind: invalid IP address \"nowhere\" (line 3)",
            "server.client_timeout: unknown unit \" s\" in duration \"3 s\" (line 4)",
            "trace.ring_size: must be greater than 0 (line 5)",
            "policies[0].rules[0].action: unknown value \"alow\" (expected allow, deny or human_approval), did you mean `allow`? (line 10)",
            "policies[0].rules[1].action: unknown value \"dney\" (expected allow, deny or human_approval), did you mean `deny`? (line 12)",
            "cli_tools[0] (a): bin is required (line 14)",
            "cli_tools[1]: name is required (line 15)",
        ]
    );
}

#[test]
fn reports_every_unknown_key_of_one_mapping_without_a_missing_field_echo() {
    let yaml = "policies:\n  - name: p\n    rules:\n      - tool: [a]\n        acton: allow\n        when: x\n";
    assert_eq!(
        errors(yaml),
        vec![
            "policies[0].rules[0].tool: unknown field, did you mean `tools`? (line 4)",
            "policies[0].rules[0].acton: unknown field, did you mean `action`? (line 5)",
            "policies[0].rules[0].when: unknown field (expected tools, action, condition, annotations or tainted) (line 6)",
        ]
    );
}

#[test]
fn does_not_echo_a_typo_as_a_second_error() {
    // `comands` is unknown; the element is not also reported as strict without commands.
    let yaml = "cli_tools:\n  - name: git\n    bin: git\n    strict: true\n    comands:\n      status: {}\n";
    assert_eq!(
        errors(yaml),
        vec!["cli_tools[0].comands: unknown field, did you mean `commands`? (line 5)"]
    );
}

#[test]
fn reports_policy_compile_errors_at_the_rule_path() {
    let yaml = "\
policies:
  - name: first
    rules:
      - tools: [a]
        action: allow
  - name: second
    rules:
      - tools: [a]
        action: deny
        condition:
          field: note
          operator: matches
          value: \"(unclosed\"
";
    let err = load_text(yaml).unwrap_err();
    assert_eq!(err.0.len(), 1, "{err}");
    assert_eq!(err.0[0].path, "policies[1].rules[0].condition.value");
    assert_eq!(err.0[0].line, Some(13));
    assert!(!err.0[0].message.is_empty());
}

#[test]
fn displays_one_error_per_line() {
    let err = load_text("port: x\nservr: {}\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "port: invalid type: string \"x\", expected u16 (line 1)\nservr: unknown field, did you mean `server`? (line 2)"
    );
}

#[test]
fn a_missing_config_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.yaml");
    let err = load_with_env(&path, &|_| None).unwrap_err();
    assert_eq!(err.0.len(), 1);
    assert_eq!(err.0[0].path, path.display().to_string());
    assert!(
        err.0[0].message.starts_with("cannot read: "),
        "{}",
        err.0[0].message
    );
}

#[test]
fn empty_sections_and_documents_take_the_defaults() {
    for yaml in ["", "# nothing\n", "auth:\npolicies:\nserver:\n"] {
        let loaded = load_text(yaml).unwrap();
        assert_eq!(loaded.config, mesh7_config::Config::default(), "{yaml:?}");
    }
}

#[test]
fn a_valid_config_loads_with_every_section() {
    let yaml = r#"
port: 8080
storage_path: ./state
trace_file: traces.jsonl
auth:
  admin_token: secret
  agent_tokens: { tok-1: support-bot }
approval: { timeout_seconds: 60, channel: queue, retention: 100 }
supervisor: { enabled: true, supervisor_agents: ["sup-*"], max_grant_duration: 12h }
policies:
  - name: support
    agent: "support-*"
    rate_limit: { max_per_minute: 10 }
    rules:
      - tools: ["tickets.*"]
        action: allow
      - tools: ["payments.refund"]
        action: human_approval
        condition: { field: amount, operator: ">", value: 100 }
mcp_servers:
  - { name: fs, transport: stdio, command: npx, args: ["-y", "server-fs"], timeout: 90s }
  - { name: web, transport: http, url: "http://localhost:3000/mcp" }
cli_tools:
  - name: git
    bin: git
    strict: true
    commands:
      status: { allowed_args: ["--short"], timeout: 5s }
openapi:
  - { url: "http://localhost:8000/openapi.json", namespace: petstore }
server: { bind: "::1", max_body_bytes: 65536, client_timeout: 10s }
loop_detection: { max_repeats: 5, window: 1m }
"#;
    let loaded = load_text(yaml).unwrap();
    let cfg = &loaded.config;
    assert_eq!(cfg.port, Some(8080));
    assert_eq!(cfg.policies.len(), 1);
    assert_eq!(cfg.policies[0].rules.len(), 2);
    assert_eq!(
        cfg.mcp_servers[1].transport,
        mesh7_config::McpTransport::StreamableHttp
    );
    assert_eq!(
        cfg.cli_tools[0].commands["status"].timeout.as_deref(),
        Some("5s")
    );
    assert_eq!(cfg.openapi[0].namespace.as_deref(), Some("petstore"));
    assert_eq!(cfg.server.bind, "::1");
    assert_eq!(cfg.loop_detection.max_repeats, 5);
    assert_eq!(loaded.policy_sources, vec!["policies[0]"]);
    assert!(loaded.warnings.is_empty());
    assert_eq!(loaded.policy_dir, None);
}

#[test]
fn load_str_reads_text_without_a_file() {
    let loaded = mesh7_config::load_str("port: 7000\n", Path::new("nowhere/mesh7.yaml")).unwrap();
    assert_eq!(loaded.config.port, Some(7000));
    assert_eq!(loaded.config_path, Path::new("nowhere/mesh7.yaml"));
}
