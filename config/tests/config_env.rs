//! `${VAR}` / `${VAR:-default}` expansion: in string values only, typed by the receiving field
//! for plain scalars, errors naming the variable with its path and line.

use std::collections::HashMap;
use std::path::Path;

use mesh7_config::Config;
use mesh7_config::load::{ConfigErrors, LoadedConfig, load_str_with_env, load_with_env};

/// Variables of a case: name and value.
type Vars = &'static [(&'static str, &'static str)];

fn load_env(text: &str, vars: &[(&str, &str)]) -> Result<LoadedConfig, ConfigErrors> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("mesh7.yaml");
    std::fs::write(&path, text).expect("config written");
    load_with_env(&path, &|name| vars.get(name).cloned())
}

fn config(text: &str, vars: &[(&str, &str)]) -> Config {
    match load_env(text, vars) {
        Ok(loaded) => loaded.config,
        Err(e) => panic!("{text:?} with {vars:?}:\n{e}"),
    }
}

fn errors(text: &str, vars: &[(&str, &str)]) -> Vec<String> {
    match load_env(text, vars) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn expands_strings() {
    let cases: &[(&str, Vars, &str)] = &[
        (
            "storage_path: ${DATA}",
            &[("DATA", "/var/lib/mesh7")],
            "/var/lib/mesh7",
        ),
        (
            "storage_path: ${DATA}/state",
            &[("DATA", "/srv")],
            "/srv/state",
        ),
        (
            "storage_path: \"${A}-${B}\"",
            &[("A", "x"), ("B", "y")],
            "x-y",
        ),
        ("storage_path: ${DATA:-./state}", &[], "./state"),
        ("storage_path: ${DATA:-./state}", &[("DATA", "")], "./state"),
        (
            "storage_path: ${DATA:-./state}",
            &[("DATA", "/srv")],
            "/srv",
        ),
        ("storage_path: x${EMPTY}y", &[("EMPTY", "")], "xy"),
        ("storage_path: '${DATA}'", &[("DATA", "single")], "single"),
        ("storage_path: pa$$word", &[], "pa$word"),
        ("storage_path: $${HOME}", &[("HOME", "/root")], "${HOME}"),
        ("storage_path: cost $5 and $", &[], "cost $5 and $"),
        (
            "storage_path: ${URL:-http://localhost:9070/x}",
            &[],
            "http://localhost:9070/x",
        ),
        // The default is literal up to the first `}`.
        ("storage_path: \"${X:-a:-b}\"", &[], "a:-b"),
    ];
    for (yaml, vars, expected) in cases {
        assert_eq!(
            config(yaml, vars).storage_path.as_deref(),
            Some(*expected),
            "{yaml} with {vars:?}"
        );
    }
}

#[test]
fn types_plain_references_by_the_receiving_field() {
    let cfg = config("port: ${PORT:-9090}\n", &[]);
    assert_eq!(cfg.port, Some(9090));
    let cfg = config("port: ${PORT:-9090}\n", &[("PORT", "8080")]);
    assert_eq!(cfg.port, Some(8080));
    let cfg = config(
        "loop_detection:\n  enabled: ${LOOPS:-true}\n  max_repeats: ${REPEATS}\n",
        &[("LOOPS", "false"), ("REPEATS", "7")],
    );
    assert!(!cfg.loop_detection.enabled);
    assert_eq!(cfg.loop_detection.max_repeats, 7);
    // A string field keeps the text even when it reads as a number or a boolean.
    let cfg = config(
        "auth:\n  admin_token: ${TOKEN}\n  agent_tokens:\n    ${TOKEN}: bot\n",
        &[("TOKEN", "123456")],
    );
    assert_eq!(cfg.auth.admin_token.as_deref(), Some("123456"));
    let cfg = config("storage_path: ${FLAG}\n", &[("FLAG", "true")]);
    assert_eq!(cfg.storage_path.as_deref(), Some("true"));
    // An empty expansion is an absent optional value.
    assert_eq!(
        config("trace_file: ${TRACE_FILE:-}\nport: ${PORT:-}\n", &[]),
        Config::default()
    );
}

#[test]
fn condition_values_take_the_yaml_type_of_the_expansion() {
    let yaml = "\
policies:
  - name: p
    rules:
      - tools: [pay]
        action: allow
        condition:
          field: amount
          operator: \"<=\"
          value: ${LIMIT:-100}
      - tools: [pay]
        action: deny
        condition: { field: note, operator: contains, value: \"${WORD}\" }
";
    let cfg = config(yaml, &[("WORD", "42")]);
    let rules = &cfg.policies[0].rules;
    assert_eq!(
        rules[0].condition.as_ref().unwrap().value,
        Some(serde_json::json!(100))
    );
    assert_eq!(
        rules[1].condition.as_ref().unwrap().value,
        Some(serde_json::json!("42"))
    );
}

#[test]
fn quoted_references_stay_strings() {
    assert_eq!(
        errors("port: \"${PORT}\"\n", &[("PORT", "8080")]),
        vec!["port: invalid type: string \"8080\", expected u16 (line 1)"]
    );
}

#[test]
fn a_value_never_injects_yaml_structure() {
    let cfg = config("storage_path: ${EVIL}\n", &[("EVIL", "x\nport: 1")]);
    assert_eq!(cfg.storage_path.as_deref(), Some("x\nport: 1"));
    assert_eq!(cfg.port, None);
    let cfg = config("storage_path: ${EVIL}\n", &[("EVIL", "[a, b]")]);
    assert_eq!(cfg.storage_path.as_deref(), Some("[a, b]"));
    // A list field does not become a list.
    assert_eq!(
        errors(
            "supervisor:\n  supervisor_agents: ${AGENTS}\n",
            &[("AGENTS", "[a, b]")]
        ),
        vec![
            "supervisor.supervisor_agents: invalid type: string \"[a, b]\", expected a sequence (line 2)"
        ]
    );
}

#[test]
fn keys_are_not_expanded() {
    let cfg = config(
        "cli_tools:\n  - name: git\n    bin: git\n    env:\n      ${KEY}: ${VALUE}\n",
        &[("KEY", "k"), ("VALUE", "v")],
    );
    assert_eq!(
        cfg.cli_tools[0].env.get("${KEY}").map(String::as_str),
        Some("v")
    );
}

#[test]
fn unset_variables_and_bad_references_are_errors_with_path_and_line() {
    let yaml = "\
port: 1
storage_path: ${DATA}
auth:
  admin_token: \"${TOKEN} and ${SECRET}\"
trace_file: ${1BAD}
otel_endpoint: ${OPEN
";
    assert_eq!(
        errors(yaml, &[("SECRET", "s")]),
        vec![
            "storage_path: environment variable \"DATA\" is not set (line 2)",
            "auth.admin_token: environment variable \"TOKEN\" is not set (line 4)",
            "trace_file: invalid variable name \"1BAD\" in \"${1BAD}\" (line 5)",
            "otel_endpoint: unterminated variable reference \"${OPEN\" (line 6)",
        ]
    );
}

#[test]
fn each_unset_variable_is_reported_once_without_a_type_error_echo() {
    assert_eq!(
        errors("port: ${PORT}\nserver:\n  max_body_bytes: ${MAX}\n", &[]),
        vec![
            "port: environment variable \"PORT\" is not set (line 1)",
            "server.max_body_bytes: environment variable \"MAX\" is not set (line 3)",
        ]
    );
}

#[test]
fn policy_files_are_expanded_too() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies.d")).unwrap();
    std::fs::write(
        dir.path().join("policies.d/team.yaml"),
        "name: ${TEAM}-policy\nagent: \"${TEAM}-*\"\nrules:\n  - tools: [\"*\"]\n    action: ${ACTION:-deny}\n",
    )
    .unwrap();
    let path = dir.path().join("mesh7.yaml");
    let env = |name: &str| (name == "TEAM").then(|| "support".to_owned());
    let loaded = load_str_with_env("policy_dir: policies.d\n", &path, &env).unwrap();
    let policy = &loaded.config.policies[0];
    assert_eq!(policy.name, "support-policy");
    assert_eq!(policy.agent, "support-*");
    assert_eq!(policy.rules[0].action, mesh7_config::Action::Deny);

    let err = load_str_with_env("policy_dir: policies.d\n", &path, &|_| None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "policies.d/team.yaml: name: environment variable \"TEAM\" is not set (line 1)\n\
         policies.d/team.yaml: agent: environment variable \"TEAM\" is not set (line 2)"
    );
}

#[test]
fn load_reads_the_process_environment() {
    // Cargo sets this for every test process.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mesh7.yaml");
    std::fs::write(&path, "storage_path: ${CARGO_PKG_NAME}\n").unwrap();
    let loaded = mesh7_config::load(&path).unwrap();
    assert_eq!(loaded.config.storage_path.as_deref(), Some("mesh7-config"));
    let loaded =
        mesh7_config::load_str("storage_path: ${CARGO_PKG_NAME}\n", Path::new("mesh7.yaml"))
            .unwrap();
    assert_eq!(loaded.config.storage_path.as_deref(), Some("mesh7-config"));
}
