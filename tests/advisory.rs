//! Advisory policies through the real `mesh7 serve`: a policy with `mode: advisory` decides
//! nothing, and where it would have decided otherwise the call's trace says what it would have
//! decided (`shadow_policy`, `shadow_rule`), in `/traces` and in the JSONL file.

mod common;

use common::Daemon;
use serde_json::{Value, json};

const CONFIG: &str = r#"
trace_file: "{dir}/traces.jsonl"
cli_tools:
  - name: echo
    bin: echo
    bare: { timeout: 5s }
policies:
  - name: open
    agent: "*"
    rules:
      - tools: ["echo.run"]
        action: allow
  - name: strict
    agent: "claude"
    mode: advisory
    rules:
      - tools: ["echo.run"]
        action: human_approval
"#;

#[test]
fn an_advisory_policy_decides_nothing_and_the_trace_says_what_it_would_have_decided() {
    let d = Daemon::start(CONFIG);
    let echo = json!({"args": ["hi"]});

    // Enforced: the call runs, for claude as for bob.
    let (status, body) = d.call("claude", "echo.run", &echo);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["policy"], "allow", "{body}");
    assert_eq!(d.call("bob", "echo.run", &echo).0, 200);
    let (_, decided) = d.decide("claude", "echo.run", &echo);
    assert_eq!(decided["action"], "allow", "{decided}");
    // `/decide` says what the advisory policy would decide, in flux7's alphabetical key order;
    // for bob nothing differs, and nothing is added.
    assert_eq!(
        (&decided["shadow_policy"], &decided["shadow_rule"]),
        (&json!("human_approval"), &json!("strict")),
        "{decided}"
    );
    let keys: Vec<&String> = decided.as_object().expect("object").keys().collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "{decided}");
    let (_, decided) = d.decide("bob", "echo.run", &echo);
    assert!(decided.get("shadow_policy").is_none(), "{decided}");

    // Claude's call would have needed a human under the advisory policy; bob's would not.
    let claude = d.trace_of("echo.run", |e| e["agent_id"] == "claude");
    assert_eq!(claude["policy"], "allow", "{claude}");
    assert_eq!(
        (&claude["shadow_policy"], &claude["shadow_rule"]),
        (&json!("human_approval"), &json!("strict")),
        "{claude}"
    );
    let bob = d.trace_of("echo.run", |e| e["agent_id"] == "bob");
    assert!(bob.get("shadow_policy").is_none(), "{bob}");
    // Claude's call and claude's /decide: the counter operators watch during a rollout.
    assert_eq!(d.metric("mesh7_advisory_disagreements_total"), 2);

    // The JSONL file says the same.
    let (line, _) = common::wait_for(std::time::Duration::from_secs(30), || {
        let text = std::fs::read_to_string(d.path("traces.jsonl")).ok()?;
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|e| e["agent_id"] == "claude" && e["tool"] == "echo.run")
    })
    .expect("claude's call in the trace file");
    assert_eq!(line["shadow_policy"], "human_approval", "{line}");

    // Listed with its mode, so operators see what is only advisory.
    let (status, policies) = d.get("/policies", None);
    assert_eq!(status, 200, "{policies}");
    let strict = policies
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "strict"))
        .unwrap_or_else(|| panic!("strict not listed: {policies}"));
    assert_eq!(strict["mode"], "advisory", "{policies}");
    let open = policies
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "open"))
        .expect("open listed");
    assert!(open.get("mode").is_none(), "{open}");
}

#[test]
fn an_unknown_policy_mode_is_a_load_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = common::write_config(
        dir.path(),
        &CONFIG.replace("mode: advisory", "mode: shadow"),
    );
    let (code, _, stderr) =
        common::run(&["validate", "--config", path.to_str().expect("utf-8 path")]);
    assert_ne!(code, 0);
    assert!(
        stderr
            .contains(r#"policies[1].mode: unknown value "shadow" (expected enforce or advisory)"#),
        "{stderr}"
    );
}
