//! Black-box tests of what survives a crash: `mesh7 serve` with a `storage_path` is killed with
//! SIGKILL and started again on the same store. Pending approvals keep their deadline, decisions
//! made before the crash stand, an approved call still runs exactly once, and grants stay.

mod common;
#[allow(dead_code, unreachable_pub)] // shared helpers: each test file uses part of them
mod mcp_support;

use std::path::Path;
use std::time::Duration;

use common::{Daemon, wait_for};
use mcp_support::GOVERNED;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// The governed tools with their store and traces in `state` (outside any one daemon's
/// directory, so that a second daemon finds them).
fn config(state: &Path, timeout_seconds: u64) -> String {
    let governed = GOVERNED.replace(
        "trace_file: \"{dir}/traces.jsonl\"",
        &format!("trace_file: \"{}/traces.jsonl\"", state.display()),
    );
    format!(
        "storage_path: \"{}/store\"\napproval:\n  timeout_seconds: {timeout_seconds}\n{governed}",
        state.display()
    )
}

/// SIGKILL: no shutdown code runs.
fn crash(mut d: Daemon) {
    d.child.kill().expect("SIGKILL");
    d.child.wait().expect("reap");
}

/// `POST /tool/approver.run` with `Prefer: respond-async`, touching `file`.
fn touch(d: &Daemon, file: &Path) -> (u16, Value) {
    d.post_with(
        "/tool/approver.run",
        &[
            ("Authorization", "Bearer agent:claude"),
            ("Prefer", "respond-async"),
        ],
        &json!({"params": {"args": [file.display().to_string()]}}).to_string(),
    )
}

/// A Go duration as printed in views (`59m58s`, `1h0m0s`) in seconds.
fn seconds(go: &str) -> u64 {
    let mut total = 0;
    let mut number = 0;
    for c in go.chars() {
        match c {
            '0'..='9' => number = number * 10 + u64::from(c.to_digit(10).expect("digit")),
            'h' => (total, number) = (total + number * 3600, 0),
            'm' => (total, number) = (total + number * 60, 0),
            's' => (total, number) = (total + number, 0),
            other => panic!("unexpected {other:?} in {go}"),
        }
    }
    total
}

fn view(d: &Daemon, id: &str) -> Value {
    let (status, view) = d.get(&format!("/approvals/{id}"), None);
    assert_eq!(status, 200, "{view}");
    view
}

#[test]
fn a_pending_approval_survives_sigkill_with_its_deadline_and_runs_once_after_approval() {
    let state = tempfile::tempdir().expect("state dir");
    let yaml = config(state.path(), 3600);
    let file = state.path().join("approved.txt");

    let d = Daemon::start(&yaml);
    let (status, body) = touch(&d, &file);
    assert_eq!(status, 202, "{body}");
    let id = body["approval_id"]
        .as_str()
        .expect("approval_id")
        .to_owned();
    let before = view(&d, &id);
    // Let the clock visibly run, so that a deadline reset at start-up would show.
    let (before_crash, _) = wait_for(WAIT, || {
        let left = seconds(view(&d, &id)["remaining"].as_str()?);
        (left <= 3597).then_some(left)
    })
    .expect("the remaining time goes down");
    crash(d);

    let d = Daemon::start(&yaml);
    let after = view(&d, &id);
    assert_eq!(after["status"], "pending", "{after}");
    assert_eq!(after["created_at"], before["created_at"], "{after}");
    let left = seconds(after["remaining"].as_str().expect("remaining"));
    assert!(left <= before_crash, "deadline reset: {after}");
    assert!(!file.exists());

    let (status, _) = d.post(&format!("/approvals/{id}/approve"), None, "");
    assert_eq!(status, 200);
    let (status, body) = touch(&d, &file);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["approval_id"], id.as_str());
    assert!(file.exists());

    // The approval is used up: the identical call needs a new one, and so do other arguments.
    let (status, body) = touch(&d, &file);
    assert_eq!(status, 202, "{body}");
    let second = body["approval_id"]
        .as_str()
        .expect("approval_id")
        .to_owned();
    assert_ne!(second, id);
    let (status, body) = touch(&d, &state.path().join("other.txt"));
    assert_eq!(status, 202, "{body}");
    assert_ne!(body["approval_id"], id.as_str());
    assert_ne!(body["approval_id"], second.as_str());
    let last = body["approval_id"].clone();

    // Exactly one run, across both processes (the trace file is shared). The writer appends in
    // order, after the answers: once the last call's entry is in the file, so are the others.
    let (entries, _) = wait_for(WAIT, || {
        let text = std::fs::read_to_string(state.path().join("traces.jsonl")).ok()?;
        let entries: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("trace line"))
            .collect();
        entries
            .iter()
            .any(|t| t["approval_id"] == last)
            .then_some(entries)
    })
    .expect("the last call is traced in the file");
    let runs = entries
        .iter()
        .filter(|t| t["approval_id"] == id.as_str() && t["status_code"] == 200)
        .count();
    assert_eq!(runs, 1, "{entries:?}");
}

#[test]
fn an_approval_given_before_sigkill_lets_the_identical_retry_run_once_after_restart() {
    let state = tempfile::tempdir().expect("state dir");
    let yaml = config(state.path(), 3600);
    let file = state.path().join("approved-early.txt");

    let d = Daemon::start(&yaml);
    let (_, body) = touch(&d, &file);
    let id = body["approval_id"]
        .as_str()
        .expect("approval_id")
        .to_owned();
    let (status, _) = d.post(&format!("/approvals/{id}/approve"), None, "");
    assert_eq!(status, 200);
    crash(d);

    let d = Daemon::start(&yaml);
    assert_eq!(view(&d, &id)["status"], "approved");
    let (status, body) = touch(&d, &file);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["approval_id"], id.as_str());
    let (status, _) = touch(&d, &file);
    assert_eq!(status, 202);
    crash(d);

    // Consumed stays consumed.
    let d = Daemon::start(&yaml);
    let (status, body) = d.get("/approvals?status=pending", None);
    assert_eq!(status, 200);
    assert_eq!(body.as_array().map(Vec::len), Some(1), "{body}");
    assert_ne!(body[0]["id"], id.as_str());
}

#[test]
fn a_grant_survives_sigkill() {
    let state = tempfile::tempdir().expect("state dir");
    let yaml = config(state.path(), 3600);

    let d = Daemon::start(&yaml);
    let (status, grant) = d.post(
        "/grants",
        None,
        r#"{"agent": "claude", "tools": "approver.run", "duration": "2h"}"#,
    );
    assert_eq!(status, 201, "{grant}");
    crash(d);

    let d = Daemon::start(&yaml);
    let (_, grants) = d.get("/grants", None);
    assert_eq!(grants.as_array().map(Vec::len), Some(1), "{grants}");
    assert_eq!(grants[0]["id"], grant["id"]);
    assert_eq!(grants[0]["expires_at"], grant["expires_at"]);
    let file = state.path().join("granted.txt");
    let (status, body) = touch(&d, &file);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["policy"], "allow");
    assert!(file.exists());
}
