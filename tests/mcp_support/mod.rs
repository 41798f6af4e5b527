//! Shared by the MCP black-box tests: the governed configuration, `mesh7 --mcp` as a child
//! speaking raw JSON-RPC lines, a raw session on a daemon's `/mcp`, and the pinned Python and
//! Node clients.
//!
//! Each test file uses part of it, so test files declare it with `#[allow(dead_code)]`.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Real CLI tools behind one policy: `echo.run` allowed, `writer.run` (touch) denied,
/// `approver.run` (touch) under human_approval, `sleep.run` allowed (for slow calls).
pub const GOVERNED: &str = r#"
trace_file: "{dir}/traces.jsonl"
cli_tools:
  - name: echo
    bin: echo
    bare: { timeout: 5s }
  - name: writer
    bin: touch
    bare: { timeout: 5s }
  - name: approver
    bin: touch
    bare: { timeout: 5s }
  - name: sleep
    bin: sleep
    bare: { timeout: 20s }
policies:
  - name: governed
    agent: "*"
    rules:
      - tools: ["echo.run", "sleep.run"]
        action: allow
      - tools: ["writer.run"]
        action: deny
      - tools: ["approver.run"]
        action: human_approval
"#;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The pinned Python with the `mcp` SDK; a missing one fails the test (never skips it).
pub fn python() -> PathBuf {
    let python = repo().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/test-deps to install the test clients",
        python.display()
    );
    python
}

/// Runs one scenario of the MCP conformance suite against `url`; returns (success, output).
// The test drives a child process synchronously: the blocking API is the right one here.
#[allow(clippy::disallowed_types)]
pub fn run_conformance(url: &str, scenario: &str) -> (bool, String) {
    let (node, suite) = conformance();
    let out = std::process::Command::new(node)
        .arg(suite)
        .args(["server", "--url", url, "--scenario", scenario])
        .stdin(Stdio::null())
        .output()
        .expect("run the conformance suite");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The pinned Node 22 and the conformance suite's entry point.
pub fn conformance() -> (PathBuf, PathBuf) {
    let modules = repo().join("tests/deps/node_modules");
    let node = modules.join(".bin/node");
    let suite = modules.join("@modelcontextprotocol/conformance/dist/index.js");
    for p in [&node, &suite] {
        assert!(
            p.exists(),
            "{} is missing: run scripts/test-deps to install the test clients",
            p.display()
        );
    }
    (node, suite)
}

/// The Inspector's arguments for `tools/call` of `echo.run` with the argument `hi`.
pub const INSPECT_ECHO_HI: [&str; 6] = [
    "--method",
    "tools/call",
    "--tool-name",
    "echo.run",
    "--tool-arg",
    "args=[\"hi\"]",
];

/// Runs the pinned MCP Inspector CLI with `args` (from its own `build/` folder, where it finds
/// its `package.json`); returns (success, stdout, stderr).
// The test drives a child process synchronously: the blocking API is the right one here.
#[allow(clippy::disallowed_types)]
pub fn run_inspector(args: &[&str]) -> (bool, String, String) {
    let modules = repo().join("tests/deps/node_modules");
    let node = modules.join(".bin/node");
    let build = modules.join("@modelcontextprotocol/inspector-cli/build");
    for p in [&node, &build.join("index.js")] {
        assert!(
            p.exists(),
            "{} is missing: run scripts/test-deps to install the test clients",
            p.display()
        );
    }
    let out = std::process::Command::new(node)
        .arg("index.js")
        .args(args)
        .current_dir(&build)
        .stdin(Stdio::null())
        .output()
        .expect("run the MCP Inspector CLI");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `tests/python/mcp_client.py` with `args`; returns (exit code, stdout + stderr).
pub fn run_python_client(args: &[&str]) -> (i32, String) {
    run_python("mcp_client.py", args)
}

/// Runs the script `tests/python/<script>` with `args` (bounded); returns (exit code, output).
// The test drives a child process synchronously: the blocking API is the right one here.
#[allow(clippy::disallowed_types)]
pub fn run_python(script: &str, args: &[&str]) -> (i32, String) {
    let script = repo().join("tests/python").join(script);
    let mut child = std::process::Command::new(python())
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if child.try_wait().expect("wait python").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::park_timeout(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("python output");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `mesh7 --mcp` (or any stdio MCP process) driven line by line. Killed when dropped.
// The test drives a child process synchronously: the blocking API is the right one here.
#[allow(clippy::disallowed_types)]
pub struct McpChild {
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    pub stderr: mpsc::Receiver<String>,
}

// The test drives a child process synchronously: the blocking API is the right one here.
#[allow(clippy::disallowed_types)]
impl McpChild {
    /// Starts `mesh7 <args>` in `dir` with `MESH7_LOG=info`.
    pub fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> McpChild {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mesh7"))
            .args(args)
            .current_dir(dir)
            .env("MESH7_LOG", "info")
            .env_remove("MESH_ADMIN_TOKEN")
            .env_remove("MESH_AGENT_TOKEN")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mesh7 --mcp");
        let lines = pipe_lines(child.stdout.take().expect("stdout piped"));
        let stderr = pipe_lines(child.stderr.take().expect("stderr piped"));
        McpChild {
            stdin: child.stdin.take(),
            child,
            lines,
            stderr,
        }
    }

    /// Writes one raw line.
    pub fn send_raw(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to mesh7");
        stdin.flush().expect("flush");
    }

    pub fn send(&mut self, message: &Value) {
        self.send_raw(&message.to_string());
    }

    pub fn request(&mut self, id: i64, method: &str, params: &Value) {
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
    }

    /// The next line written on stdout, as JSON; panics after `within`.
    pub fn recv(&self, within: Duration) -> Value {
        let line = self
            .lines
            .recv_timeout(within)
            .unwrap_or_else(|e| panic!("no MCP message within {within:?} ({e})"));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// Whether a line arrives within `within`.
    pub fn try_recv(&self, within: Duration) -> Option<Value> {
        self.lines
            .recv_timeout(within)
            .ok()
            .map(|l| serde_json::from_str(&l).expect("JSON line"))
    }

    /// `initialize` with id 0, checked, then `notifications/initialized`.
    pub fn initialize(&mut self) -> Value {
        self.request(
            0,
            "initialize",
            &json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}),
        );
        let answer = self.recv(Duration::from_secs(30));
        assert_eq!(answer["id"], 0, "{answer}");
        assert!(answer.get("result").is_some(), "{answer}");
        self.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        answer
    }

    /// `tools/list` with `id`: the names it gives (messages before its answer are skipped).
    pub fn tool_names(&mut self, id: i64) -> Vec<String> {
        self.request(id, "tools/list", &json!({}));
        loop {
            let answer = self.recv(Duration::from_secs(60));
            if answer["id"] == id {
                return crate::common::tool_names(&answer["result"]["tools"]);
            }
        }
    }

    /// Closes stdin (EOF).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "mesh7 did not exit in {within:?}"
            );
            std::thread::park_timeout(Duration::from_millis(20));
        }
    }

    /// Waits for a stderr line containing `needle`; returns it.
    pub fn stderr_line(&self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(line) => seen.push(line),
                Err(_) => panic!(
                    "no stderr line with {needle:?}; stderr:\n{}",
                    seen.join("\n")
                ),
            }
        }
    }
}

impl Drop for McpChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pipe_lines(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The text of the first content block of a `tools/call` answer.
pub fn result_text(answer: &Value) -> &str {
    answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text result: {answer}"))
}

/// A Streamable HTTP session on `mesh7 serve`'s `/mcp`, with raw requests.
pub struct McpHttp {
    url: String,
    authorization: String,
    session: String,
    client: reqwest::blocking::Client,
}

impl McpHttp {
    /// Initializes a session as `authorization` on the daemon at `base`.
    pub fn open(base: &str, authorization: &str) -> McpHttp {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        let mut s = McpHttp {
            url: format!("{base}/mcp"),
            authorization: authorization.to_owned(),
            session: String::new(),
            client,
        };
        let resp = s.post(&json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}));
        assert_eq!(resp.status().as_u16(), 200);
        s.session = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .expect("session id")
            .to_owned();
        s.post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        s
    }

    pub fn post(&self, message: &Value) -> reqwest::blocking::Response {
        let mut req = self
            .client
            .post(&self.url)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json, text/event-stream")
            .header("Authorization", &self.authorization)
            .body(message.to_string());
        if !self.session.is_empty() {
            req = req.header("Mcp-Session-Id", &self.session);
        }
        req.send().expect("POST /mcp")
    }

    /// The whole JSON-RPC answer.
    pub fn request(&self, method: &str, params: &Value) -> Value {
        let resp =
            self.post(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}));
        assert_eq!(resp.status().as_u16(), 200);
        resp.json().expect("JSON-RPC answer")
    }

    pub fn call(&self, tool: &str, args: &Value) -> Value {
        self.request("tools/call", &json!({"name": tool, "arguments": args}))
    }

    /// Opens the session's notification stream (`GET /mcp`); returns once the daemon answered.
    pub fn notifications(&self) -> Notifications {
        let resp = reqwest::blocking::Client::builder()
            .timeout(None)
            .build()
            .expect("client")
            .get(&self.url)
            .header("Accept", "text/event-stream")
            .header("Authorization", &self.authorization)
            .header("Mcp-Session-Id", &self.session)
            .send()
            .expect("GET /mcp");
        assert_eq!(resp.status().as_u16(), 200, "GET /mcp");
        assert_eq!(
            resp.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("text/event-stream")
        );
        Notifications::read(resp)
    }

    pub fn session_id(&self) -> &str {
        &self.session
    }

    /// The names `tools/list` gives, in its order.
    pub fn tool_names(&self) -> Vec<String> {
        let list = self.request("tools/list", &json!({}));
        list["result"]["tools"]
            .as_array()
            .unwrap_or_else(|| panic!("no tools: {list}"))
            .iter()
            .filter_map(|t| t["name"].as_str().map(str::to_owned))
            .collect()
    }
}

/// An open notification stream (`GET /mcp`), read on its own thread.
pub struct Notifications {
    events: mpsc::Receiver<Value>,
}

/// What a notification stream did next.
#[derive(Debug, PartialEq)]
pub enum Heard {
    /// The JSON of an event's data.
    Event(Value),
    /// The daemon ended the stream.
    Ended,
    /// Nothing within the time given.
    Nothing,
}

impl Notifications {
    fn read(resp: reqwest::blocking::Response) -> Notifications {
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            let mut data = String::new();
            for line in BufReader::new(resp).lines().map_while(Result::ok) {
                if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.trim_start());
                } else if line.is_empty() && !data.is_empty() {
                    let event = serde_json::from_str(&std::mem::take(&mut data))
                        .expect("an event's data is JSON");
                    if tx.send(event).is_err() {
                        return;
                    }
                }
            }
        });
        Notifications { events }
    }

    pub fn next(&self, within: Duration) -> Heard {
        match self.events.recv_timeout(within) {
            Ok(event) => Heard::Event(event),
            Err(mpsc::RecvTimeoutError::Disconnected) => Heard::Ended,
            Err(mpsc::RecvTimeoutError::Timeout) => Heard::Nothing,
        }
    }
}

/// The notification mesh7 sends when what `tools/list` shows may have changed.
pub fn list_changed() -> Value {
    json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
}
