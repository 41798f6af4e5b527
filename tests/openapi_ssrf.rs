//! The SSRF guard on OpenAPI imports, for real: a spec URL on 127.0.0.1 is refused without
//! `allow_private` (the daemon does not start and says why), allowed with it; a spec cannot point
//! calls at cloud metadata; and the last good copy of a spec URL keeps a restart working while
//! the URL is down.

mod common;
#[allow(dead_code, unreachable_pub)] // shared helpers: each test file uses part of them
mod openapi_support;

use std::time::Duration;

use common::{Daemon, write_config};
use openapi_support::{Backend, run_mesh7};
use serde_json::json;

/// Relative server URL: calls go back to the host that served the spec.
const SPEC: &str = r#"{
  "openapi": "3.0.3",
  "info": {"title": "echo", "version": "1"},
  "servers": [{"url": "/api"}],
  "paths": {"/things/{id}": {"get": {"operationId": "getThing",
    "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}}]}}}
}"#;

const ALLOW_ALL: &str = r#"
policies:
  - name: all
    agent: "*"
    rules:
      - tools: ["*"]
        action: allow
"#;

#[test]
fn a_spec_url_on_loopback_is_refused_without_allow_private() {
    let spec = Backend::start(&[("/spec.json", SPEC)]);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("{}/spec.json", spec.url);
    let config = write_config(
        dir.path(),
        &format!("openapi:\n  - url: {url}\n{ALLOW_ALL}"),
    );
    let (code, _, stderr) = run_mesh7(
        &[
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
        dir.path(),
        Duration::from_secs(60),
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "load OpenAPI {url}: ssrf: 127.0.0.1 is a loopback address; set allow_private: true to allow it"
        )),
        "{stderr}"
    );
}

#[test]
fn allow_private_lets_a_loopback_spec_and_its_backend_in() {
    let spec = Backend::start(&[("/spec.json", SPEC)]);
    let d = Daemon::start(&format!(
        "openapi:\n  - url: {}/spec.json\n    allow_private: true\n{ALLOW_ALL}",
        spec.url
    ));
    let (status, body) = d.call("claude", "get_thing", &json!({"id": 42}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["path"], "/api/things/42");
}

#[test]
fn a_spec_cannot_send_calls_to_cloud_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let spec = SPEC.replace("/api", "http://169.254.169.254/latest");
    std::fs::write(dir.path().join("spec.json"), spec).unwrap();
    // A file spec without backend_url: the spec chose the backend, so the guard applies.
    let (code, stdout, stderr) = run_mesh7(
        &["discover", "--openapi", "spec.json"],
        &[],
        dir.path(),
        Duration::from_secs(60),
    );
    assert_eq!((code, stdout.as_str()), (1, ""), "{stderr}");
    assert_eq!(
        stderr.trim(),
        "Error: load OpenAPI spec.json: backend http://169.254.169.254/latest: ssrf: 169.254.169.254 is a link-local address (cloud metadata); use --allow-private to allow it"
    );
}

#[test]
fn the_last_good_spec_keeps_a_restart_working_while_the_url_is_down() {
    let spec = Backend::start(&[("/spec.json", SPEC)]);
    let url = format!("{}/spec.json", spec.url);
    let state = tempfile::tempdir().unwrap();
    let yaml = format!(
        "storage_path: {}\nopenapi:\n  - url: {url}\n    allow_private: true\n{ALLOW_ALL}",
        state.path().join("store").display()
    );

    let mut first = Daemon::start(&yaml);
    let (status, body) = first.call("claude", "get_thing", &json!({"id": 1}));
    assert_eq!(status, 200, "{body}");
    assert!(first.terminate().success());
    drop(spec);

    // Same configuration, spec URL down: the daemon starts from the cached copy.
    let second = Daemon::start(&yaml);
    let (status, tools) = second.get("/tools", None);
    assert_eq!(status, 200);
    assert_eq!(tools[0]["name"], "get_thing", "{tools}");
    drop(second);

    // The fallback is logged as such.
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &yaml);
    let (code, stdout, stderr) = run_mesh7(
        &["discover", "--config", config.to_str().unwrap()],
        &[("MESH7_LOG", "warn")],
        dir.path(),
        Duration::from_secs(60),
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("get_thing"), "{stdout}");
    assert!(
        stderr.contains("OpenAPI spec unavailable: using the last good copy"),
        "{stderr}"
    );

    // Without a store there is no copy: the start-up fails with the fetch error.
    let config = write_config(
        dir.path(),
        &format!("openapi:\n  - url: {url}\n    allow_private: true\n{ALLOW_ALL}"),
    );
    let (code, _, stderr) = run_mesh7(
        &[
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
        dir.path(),
        Duration::from_secs(60),
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("load OpenAPI {url}: ")),
        "{stderr}"
    );
}
