//! flux7's Python SDK (PyPI `flux7-mesh` 0.6.1, module `mesh7`) against a real `mesh7 serve`:
//! every `AgentMesh` call, run by tests/python/test_sdk.py with the project's `.venv` Python.
//!
//! The policy puts one CLI tool under each action: `echo.run` allow, `date.run` deny, `say.run`
//! (`echo` underneath) human_approval.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::Daemon;

const CONFIG: &str = r#"
approval:
  timeout_seconds: 60
  channel: queue
cli_tools:
  - { name: echo, bin: echo, bare: { timeout: 5s } }
  - { name: date, bin: date, bare: { timeout: 5s } }
  - { name: say, bin: echo, bare: { timeout: 5s } }
policies:
  - name: sdk
    agent: "*"
    rules:
      - { tools: ["echo.run"], action: allow }
      - { tools: ["date.run"], action: deny }
      - { tools: ["say.run"], action: human_approval }
"#;

fn python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/test-deps to install the Python test clients",
        python.display()
    );
    python
}

/// Runs the named unittest classes of test_sdk.py against a fresh daemon; fails with their output.
fn run_sdk_suite(classes: &[&str]) {
    let python = python();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/test_sdk.py");
    let d = Daemon::start(CONFIG);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let out = rt.block_on(async {
        let mut cmd = tokio::process::Command::new(&python);
        cmd.arg(&script)
            .arg(&d.url)
            .args(classes)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        tokio::time::timeout(Duration::from_secs(240), cmd.output())
            .await
            .expect("the SDK suite finished within 240 s")
            .expect("run python")
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "SDK suite {classes:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stderr.contains("\nOK"), "{stdout}\n{stderr}");
}

#[test]
fn sdk_decides_calls_tools_and_reads_traces_and_health() {
    run_sdk_suite(&["DecisionsAndReads"]);
}

#[test]
fn sdk_approves_denies_resolves_and_grants() {
    run_sdk_suite(&["ApprovalsAndGrants"]);
}
