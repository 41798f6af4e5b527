//! Policy hot reload against the real daemon: a valid change applies within a second; an
//! invalid one keeps the old policies and shows in `/health` as `last_reload`.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{Daemon, wait_for};
use serde_json::json;

const CONFIG: &str = r#"
policy_dir: policies.d
cli_tools:
  - { name: echo, bin: echo, bare: { timeout: 5s } }
policies:
  - name: base
    agent: "*"
    rules:
      - { tools: ["echo.run"], action: allow }
"#;

/// The decision for `agent`, with arguments that differ on every call so that polling never
/// trips loop detection (which would also answer "deny").
fn action(d: &Daemon, agent: &str) -> String {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let n = CALLS.fetch_add(1, Ordering::Relaxed);
    let (status, body) = d.decide(agent, "echo.run", &json!({ "poll": n }));
    assert_ne!(status, 429, "{body}");
    body["action"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn new_policy_file_changes_the_decision_within_a_second() {
    let d = Daemon::start_with(CONFIG, &[], |dir| {
        std::fs::create_dir(dir.join("policies.d")).unwrap();
    });
    assert_eq!(action(&d, "intern"), "allow");
    std::fs::write(
        d.path("policies.d/intern.yaml"),
        "name: intern\nagent: intern\nrules:\n  - tools: [\"echo.run\"]\n    action: deny\n",
    )
    .unwrap();
    let (_, took) = wait_for(Duration::from_secs(5), || {
        (action(&d, "intern") == "deny").then_some(())
    })
    .expect("the new policy never applied");
    assert!(took <= Duration::from_secs(1), "applied after {took:?}");
    // Other agents are unaffected.
    assert_eq!(action(&d, "someone"), "allow");
    let (_, health) = d.get("/health", None);
    assert_eq!(health["last_reload"]["ok"], true);
}

#[test]
fn invalid_change_keeps_the_old_policies_and_reports_the_error() {
    let d = Daemon::start_with(CONFIG, &[], |dir| {
        std::fs::create_dir(dir.join("policies.d")).unwrap();
    });
    std::fs::write(
        d.path("policies.d/bad.yaml"),
        "name: bad\nagent: \"*\"\nrules:\n  - tools: [\"echo.run\"]\n    action: alow\n",
    )
    .unwrap();
    let (health, _) = wait_for(Duration::from_secs(5), || {
        let (_, h) = d.get("/health", None);
        h.get("last_reload").is_some().then_some(h)
    })
    .expect("the reload was never attempted");
    assert_eq!(health["last_reload"]["ok"], false);
    assert!(
        health["last_reload"]["error"]
            .as_str()
            .unwrap()
            .contains("alow"),
        "{health}"
    );
    assert_eq!(action(&d, "anyone"), "allow");

    // Editing the config file itself to an invalid document also keeps the old set.
    let cfg = d.path("mesh7.yaml");
    std::fs::write(&cfg, "policies: [ this is: not valid").unwrap();
    wait_for(Duration::from_secs(5), || {
        let (_, h) = d.get("/health", None);
        let err = h["last_reload"]["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        (!err.contains("alow")).then_some(())
    })
    .expect("the config edit was never noticed");
    assert_eq!(action(&d, "anyone"), "allow");
}
