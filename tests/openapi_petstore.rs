//! The petstore example as shipped: its Python backend on 127.0.0.1:0, `mesh7 serve` on
//! `examples/petstore/mesh7.yaml`, and calls governed by the example's policy.

mod common;

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::Child;
use std::time::Duration;

use common::Daemon;
use serde_json::json;

/// The example backend, killed when dropped.
struct Petstore {
    child: Child,
    port: u16,
}

impl Drop for Petstore {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[allow(clippy::disallowed_types)] // tests drive real processes synchronously
fn start_petstore() -> Petstore {
    use std::process::{Command, Stdio};
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/petstore/backend.py");
    let mut child = Command::new("python3")
        .arg(&script)
        .args(["--port", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 runs the petstore example backend (scripts/test-deps sets up Python)");
    let stdout = child.stdout.take().expect("stdout piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let mut backend = Petstore { child, port: 0 };
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the petstore backend did not start");
    backend.port = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"));
    backend
}

#[test]
fn the_petstore_example_serves_its_spec_through_the_policy() {
    let backend = start_petstore();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/petstore/mesh7.yaml");
    let port = backend.port.to_string();
    let d = Daemon::spawn(
        tempfile::tempdir().unwrap(),
        &config,
        &[("PETSTORE_PORT", port.as_str())],
    );

    let (status, body) = d.call("claude", "list_pets", &json!({"limit": 1}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["backend_status"], 200);
    assert_eq!(body["result"].as_array().map(Vec::len), Some(1), "{body}");

    let (status, body) = d.call(
        "claude",
        "create_pets",
        &json!({"name": "Bo", "tag": "parrot"}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["backend_status"], 201);
    let id = body["result"]["id"].as_i64().expect("new pet id");

    let (status, body) = d.call("claude", "show_pet_by_id", &json!({"petId": id}));
    assert_eq!(
        (status, &body["result"]["name"]),
        (200, &json!("Bo")),
        "{body}"
    );
    let (_, body) = d.call("claude", "list_pets", &json!({"tag": "parrot"}));
    assert_eq!(body["result"][0]["id"], id, "{body}");

    // The backend's 404 reaches the caller with its body.
    let (status, body) = d.call("claude", "show_pet_by_id", &json!({"petId": 999}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["backend_status"], 404);
    assert_eq!(body["result"]["message"], "pet not found");

    // The policy: a pet already sold is refused; deleting needs a human.
    let (status, body) = d.call(
        "claude",
        "create_pets",
        &json!({"name": "X", "status": "sold"}),
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body["error"],
        "policy=petstore tool=create_pets action=deny"
    );
    let (status, body) = d.decide("claude", "delete_pet", &json!({"petId": id}));
    assert_eq!(
        (status, &body["action"]),
        (200, &json!("human_approval")),
        "{body}"
    );
}
