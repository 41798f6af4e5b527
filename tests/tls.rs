//! https as a client: a remote MCP server (the official Python SDK over Streamable HTTP), an
//! OpenAPI spec and backend, an OTLP receiver and a JWKS, all served over TLS on 127.0.0.1 with a
//! certificate from a test CA.
//! Trusted through `SSL_CERT_FILE` they work like their http forms; under a CA that did not sign
//! them nothing is reached and the operator is told why (fail closed, never a plaintext retry).

mod common;
#[allow(dead_code, unreachable_pub)] // shared helpers: each test file uses part of them
mod jwt_support;
#[allow(dead_code, unreachable_pub)] // shared helpers: each test file uses part of them
mod mcp_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Daemon, line_channel, wait_for};
use jwt_support::{AUD, ISS, TestKey, claims, jwks};
use serde_json::{Value, json};

/// `tests/python/tls_server.py`: an https MCP server and OpenAPI backend, and the certificates
/// it wrote. Killed (SIGKILL) when dropped.
struct TlsServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl TlsServer {
    // The test drives a child process synchronously: the blocking API is the right one here.
    #[allow(clippy::disallowed_types)]
    fn start() -> TlsServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let script = mcp_support::repo().join("tests/python/tls_server.py");
        let mut child = std::process::Command::new(mcp_support::python())
            .arg(script)
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the https server");
        let rx = line_channel(child.stdout.take().expect("stdout piped"));
        let deadline = Instant::now() + Duration::from_secs(60);
        let port = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .expect("the https server did not report its port");
            if let Some(port) = line.strip_prefix("PORT ") {
                break port.trim().parse().expect("a port number");
            }
        };
        TlsServer { child, port, dir }
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// The CA that signed the server's certificate.
    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A CA that signed nothing the server presents.
    fn other_ca(&self) -> PathBuf {
        self.dir.path().join("other-ca.pem")
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn remote_mcp(server: &TlsServer) -> String {
    format!(
        r#"
mcp_servers:
  - name: remote
    transport: streamable-http
    url: {}
"#,
        server.url("/mcp")
    )
}

const POLICY: &str = r#"
policies:
  - name: tls
    agent: "*"
    rules:
      - tools: ["remote.echo", "api.echo"]
        action: allow
"#;

/// The `remote` upstream's entry in `/mcp-servers`.
fn remote_status(d: &Daemon) -> Value {
    let (_, servers) = d.get("/mcp-servers", None);
    servers
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "remote"))
        .cloned()
        .unwrap_or(Value::Null)
}

#[test]
fn https_upstreams_specs_and_backends_work_with_a_trusted_certificate() {
    let server = TlsServer::start();
    let yaml = format!(
        r#"{mcp}
openapi:
  - url: {spec}
    namespace: api
    allow_private: true
{POLICY}"#,
        mcp = remote_mcp(&server),
        spec = server.url("/openapi.json"),
    );
    let ca = server.ca();
    let d = Daemon::start_with(&yaml, &[("SSL_CERT_FILE", path_str(&ca))], |_| {});
    wait_for(Duration::from_secs(60), || {
        (remote_status(&d)["status"] == "ready").then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the https upstream never became ready: {}",
            remote_status(&d)
        )
    });

    // The remote MCP server's tool, called over TLS.
    let (status, body) = d.call("claude", "remote.echo", &json!({"message": "over tls"}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["result"]["content"][0]["text"], "Echo: over tls",
        "{body}"
    );

    // The OpenAPI operation: its spec was fetched over TLS and so is the backend call.
    let (status, body) = d.call("claude", "api.echo", &json!({"message": "hi"}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["result"],
        json!({"echoed": {"message": "hi"}}),
        "{body}"
    );
    assert_eq!(body["backend_status"], 200, "{body}");
}

#[test]
fn an_upstream_whose_certificate_is_not_trusted_is_never_reached() {
    let server = TlsServer::start();
    let yaml = format!("{}{POLICY}", remote_mcp(&server));
    let other = server.other_ca();
    let d = Daemon::start_with(&yaml, &[("SSL_CERT_FILE", path_str(&other))], |_| {});
    let (failed, _) = wait_for(Duration::from_secs(60), || {
        let s = remote_status(&d);
        s["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty())
            .then_some(s)
    })
    .unwrap_or_else(|| panic!("no connection error reported: {}", remote_status(&d)));
    assert_ne!(failed["status"], "ready", "{failed}");
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(error.to_lowercase().contains("certificate"), "{failed}");

    // Its tools were never listed: the call is refused with a JSON error, nothing is forwarded.
    let (status, body) = d.call("claude", "remote.echo", &json!({"message": "x"}));
    assert!(status >= 400, "{status} {body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
}

#[test]
fn a_spec_behind_an_untrusted_certificate_stops_the_start_up() {
    let server = TlsServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let yaml = format!(
        r#"
openapi:
  - url: {spec}
    namespace: api
    allow_private: true
{POLICY}"#,
        spec = server.url("/openapi.json"),
    );
    let config = common::write_config(dir.path(), &yaml);
    let (code, stderr) = serve_until_exit(&config, &server.other_ca());
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains(&server.url("/openapi.json")), "{stderr}");
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
}

/// A call with OTLP export to the https receiver, trusting `ca`: (spans exported, dropped) once
/// the export has ended either way.
fn export_one_call(server: &TlsServer, ca: &Path) -> (u64, u64) {
    let yaml = format!("otel_endpoint: {}\n{POLICY}", server.url(""));
    let d = Daemon::start_with(
        &yaml,
        &[
            ("SSL_CERT_FILE", path_str(ca)),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "5000"),
        ],
        |_| {},
    );
    // An unknown tool: refused, and traced with its spans all the same.
    let (status, body) = d.call("claude", "nothing.here", &json!({}));
    assert!(status >= 400, "{status} {body}");
    let (counts, _) = wait_for(Duration::from_secs(60), || {
        let counts = (
            d.metric("mesh7_otel_spans_exported_total"),
            d.metric("mesh7_otel_spans_dropped_total"),
        );
        (counts.0 + counts.1 > 0).then_some(counts)
    })
    .expect("the export never ended");
    counts
}

#[test]
fn spans_are_exported_over_https_only_to_a_trusted_receiver() {
    let server = TlsServer::start();
    let (exported, dropped) = export_one_call(&server, &server.ca());
    assert!(
        exported > 0 && dropped == 0,
        "{exported} exported, {dropped} dropped"
    );
    let (exported, dropped) = export_one_call(&server, &server.other_ca());
    assert!(
        exported == 0 && dropped > 0,
        "{exported} exported, {dropped} dropped"
    );
}

/// JWT authentication whose key set is served over https, required for every call.
fn jwt_config(server: &TlsServer) -> String {
    format!(
        r#"
auth:
  require_authentication: true
  jwt:
    jwks_url: {jwks}
    issuer: "{ISS}"
    audience: {AUD}
cli_tools:
  - name: echo
    bin: echo
    bare: {{ timeout: 5s }}
policies:
  - name: tls
    agent: "*"
    rules:
      - tools: ["echo.run"]
        action: allow
"#,
        jwks = server.url("/jwks.json"),
    )
}

#[test]
fn a_key_set_over_https_is_used_when_trusted_and_stops_the_start_up_when_not() {
    let server = TlsServer::start();
    let key = TestKey::ec("tls-key");
    std::fs::write(server.dir.path().join("jwks.json"), jwks(&[&key])).expect("write the JWKS");
    let yaml = jwt_config(&server);

    let d = Daemon::start_with(&yaml, &[("SSL_CERT_FILE", path_str(&server.ca()))], |_| {});
    let call = r#"{"params": {"args": ["over tls"]}}"#;
    let (status, body) = d.post("/tool/echo.run", Some(&key.bearer(&claims("claude"))), call);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["stdout"], "over tls\n", "{body}");
    let (status, body) = d.post("/tool/echo.run", None, call);
    assert_eq!(status, 401, "{body}");

    // Under a CA that did not sign the server's certificate the key set is never read, and
    // without it the daemon does not start.
    let dir = tempfile::tempdir().expect("temp dir");
    let config = common::write_config(dir.path(), &yaml);
    let (code, stderr) = serve_until_exit(&config, &server.other_ca());
    assert_ne!(code, 0, "{stderr}");
    assert!(
        stderr.contains("jwt auth: initial JWKS fetch: "),
        "{stderr}"
    );
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
    assert!(!stderr.contains("listening"), "{stderr}");
}

/// Runs `mesh7 serve` (bounded) trusting only `ca`; returns its exit code and stderr.
// The test drives a child process synchronously: the blocking API is the right one here.
#[allow(clippy::disallowed_types)]
fn serve_until_exit(config: &Path, ca: &Path) -> (i32, String) {
    let mut child = std::process::Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .args(["--listen", "127.0.0.1:0"])
        .env("SSL_CERT_FILE", ca)
        .env_remove("MESH_ADMIN_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mesh7");
    // Read while it runs, so that a long start-up log never fills the pipe.
    let lines = line_channel(child.stderr.take().expect("stderr piped"));
    let exited = wait_for(Duration::from_secs(60), || {
        child.try_wait().expect("wait mesh7")
    });
    let Some((status, _)) = exited else {
        let _ = child.kill();
        panic!("mesh7 kept running with a spec it could not fetch");
    };
    // The pipe closed with the process: the reader ends once it has sent every line.
    let stderr: Vec<String> = lines.iter().collect();
    (status.code().unwrap_or(-1), stderr.join("\n"))
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temp path")
}
