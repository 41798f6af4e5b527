//! Test harness: the real `mesh7` binary on 127.0.0.1 with a free port, from inline YAML.
#![allow(dead_code, unreachable_pub, clippy::disallowed_types)] // each test file uses part of it; tests drive real processes synchronously

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_mesh7");

/// A running daemon. Killed (SIGKILL) when dropped.
pub struct Daemon {
    pub child: Child,
    pub url: String,
    pub dir: tempfile::TempDir,
    pub stderr: mpsc::Receiver<String>,
    http: reqwest::blocking::Client,
}

impl Daemon {
    /// Writes `yaml` to `<tmp>/mesh7.yaml` (with `{dir}` replaced by the temp dir) and starts
    /// `mesh7 serve` on it.
    pub fn start(yaml: &str) -> Daemon {
        Self::start_with(yaml, &[], |_| {})
    }

    /// Like `start`, with extra environment and a hook to create files before start-up.
    pub fn start_with(yaml: &str, env: &[(&str, &str)], prepare: impl FnOnce(&Path)) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        prepare(dir.path());
        let config = write_config(dir.path(), yaml);
        Self::spawn(dir, &config, env)
    }

    /// Starts `mesh7 serve` on an existing config file inside `dir` (which the daemon owns).
    pub fn spawn(dir: tempfile::TempDir, config: &Path, env: &[(&str, &str)]) -> Daemon {
        let mut child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(config)
            .args(["--listen", "127.0.0.1:0"])
            .env("MESH7_LOG", "info")
            .env_remove("MESH_ADMIN_TOKEN")
            .envs(env.iter().copied())
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mesh7");
        let rx = line_channel(child.stderr.take().expect("stderr piped"));
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = Vec::new();
        let url = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix("mesh7 listening on ") {
                        break url.trim().to_owned();
                    }
                    seen.push(line);
                }
                Err(_) => panic!("mesh7 did not start; stderr:\n{}", seen.join("\n")),
            }
        };
        Daemon {
            child,
            url,
            dir,
            stderr: rx,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn get(&self, path: &str, auth: Option<&str>) -> (u16, Value) {
        let mut req = self.http.get(format!("{}{path}", self.url));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        into_json(req.send().expect("GET"))
    }

    /// A counter or gauge of `/metrics` (a series without labels).
    pub fn metric(&self, name: &str) -> u64 {
        let (status, text) = self.get_text("/metrics");
        assert_eq!(status, 200, "{text}");
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}"))
    }

    pub fn get_text(&self, path: &str) -> (u16, String) {
        let resp = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .expect("GET");
        (resp.status().as_u16(), resp.text().expect("text"))
    }

    pub fn post(&self, path: &str, auth: Option<&str>, body: &str) -> (u16, Value) {
        self.post_with(path, &[("Authorization", auth.unwrap_or(""))], body)
    }

    pub fn post_with(&self, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}{path}", self.url))
            .header("Content-Type", "application/json")
            .body(body.to_owned());
        for (k, v) in headers {
            if !v.is_empty() {
                req = req.header(*k, *v);
            }
        }
        into_json(req.send().expect("POST"))
    }

    /// `DELETE path` without credentials (a loopback peer reaches the control plane).
    pub fn delete(&self, path: &str) -> (u16, Value) {
        into_json(
            self.http
                .delete(format!("{}{path}", self.url))
                .send()
                .expect("DELETE"),
        )
    }

    /// `POST /tool/{name}` as `agent:<agent>` with `{"params": args}`.
    pub fn call(&self, agent: &str, tool: &str, args: &Value) -> (u16, Value) {
        let auth = format!("Bearer agent:{agent}");
        self.post(
            &format!("/tool/{tool}"),
            Some(&auth),
            &serde_json::json!({ "params": args }).to_string(),
        )
    }

    /// `POST /decide` as `agent:<agent>`.
    pub fn decide(&self, agent: &str, tool: &str, args: &Value) -> (u16, Value) {
        let auth = format!("Bearer agent:{agent}");
        self.post(
            "/decide",
            Some(&auth),
            &serde_json::json!({ "tool": tool, "arguments": args }).to_string(),
        )
    }

    /// `POST /tool/{tool}` as `agent:<agent>` on a thread of its own, for a call that waits (for
    /// its approval, or a tool that runs long); join it for (status, body).
    pub fn call_in_background(
        &self,
        agent: &str,
        tool: &str,
        args: &Value,
    ) -> std::thread::JoinHandle<(u16, Value)> {
        let url = format!("{}/tool/{tool}", self.url);
        let auth = format!("Bearer agent:{agent}");
        let body = serde_json::json!({ "params": args }).to_string();
        std::thread::spawn(move || {
            let resp = reqwest::blocking::Client::new()
                .post(url)
                .header("Authorization", auth)
                .body(body)
                .timeout(Duration::from_secs(60))
                .send()
                .expect("the call answers");
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().expect("JSON"))
        })
    }

    /// The id of the oldest pending approval, waited for up to 30 s.
    pub fn pending_approval(&self) -> String {
        wait_for(Duration::from_secs(30), || {
            let (_, listed) = self.get("/approvals?status=pending", None);
            listed.as_array()?.first()?["id"]
                .as_str()
                .map(str::to_owned)
        })
        .expect("a call waits for its approval")
        .0
    }

    /// The newest `/traces` entry of `tool` for which `want` holds, waited for up to 30 s.
    pub fn trace_of(&self, tool: &str, want: impl Fn(&Value) -> bool) -> Value {
        wait_for(Duration::from_secs(30), || {
            let (_, traces) = self.get(&format!("/traces?tool={tool}"), None);
            traces.as_array()?.iter().find(|e| want(e)).cloned()
        })
        .unwrap_or_else(|| panic!("no such trace entry of {tool}"))
        .0
    }

    /// A client that goes away mid-call: sends `POST path` (JSON `body`, `headers`) on a
    /// connection of its own, waits up to 30 s until the call's command runs (the daemon's first
    /// child), then closes the connection without reading the answer. Returns the command's pid.
    pub fn post_and_leave(&self, path: &str, headers: &[(&str, &str)], body: &str) -> u32 {
        use std::io::Write as _;
        let addr = self.url.trim_start_matches("http://");
        let mut request = format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        stream.write_all(request.as_bytes()).expect("send");
        let (command, _) = wait_for(Duration::from_secs(30), || child_of(self.child.id()))
            .expect("the tool never started");
        drop(stream);
        command
    }

    /// Everything the daemon wrote on stderr so far (after the start-up line).
    /// Call after the process ended: waits (bounded) for the reader to reach end of file.
    pub fn stderr_text(&self) -> String {
        let mut lines = Vec::new();
        while let Ok(line) = self.stderr.recv_timeout(Duration::from_secs(5)) {
            lines.push(line);
        }
        lines.join("\n")
    }

    /// Sends SIGTERM and waits (bounded) for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid")),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "mesh7 did not exit after SIGTERM"
            );
            std::thread::park_timeout(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lines of `input` (a child's pipe), read on a thread of their own until it closes.
pub fn line_channel(input: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(input).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The `name` of each tool in a JSON list of tools (`GET /tools`, `tools/list`).
pub fn tool_names(tools: &Value) -> Vec<String> {
    tools
        .as_array()
        .expect("a list of tools")
        .iter()
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect()
}

pub fn write_config(dir: &Path, yaml: &str) -> PathBuf {
    let config = dir.join("mesh7.yaml");
    let text = yaml.replace("{dir}", &dir.display().to_string());
    std::fs::write(&config, text).expect("write config");
    config
}

fn into_json(resp: reqwest::blocking::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().expect("body");
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("response is not JSON ({e}): {text:?}"));
    (status, value)
}

/// Polls `check` until it returns Some or `within` passes; returns the value and the time taken.
pub fn wait_for<T>(
    within: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Option<(T, Duration)> {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return Some((v, start.elapsed()));
        }
        if start.elapsed() > within {
            return None;
        }
        std::thread::park_timeout(Duration::from_millis(10));
    }
}

/// Runs the binary with arguments, returning (exit code, stdout, stderr).
pub fn run(args: &[&str]) -> (i32, String, String) {
    run_with_env(args, &[])
}

/// `run` with extra environment variables.
pub fn run_with_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("MESH_ADMIN_TOKEN")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run mesh7");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The pinned Node 22 and an npm package's entry script, installed by `scripts/test-deps`.
/// A missing one fails the test (never skips it).
pub fn npm_server(package: &str) -> (PathBuf, PathBuf) {
    let deps = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/deps/node_modules");
    let node = deps.join(".bin/node");
    let entry = deps.join(package).join("dist/index.js");
    for path in [&node, &entry] {
        assert!(
            path.exists(),
            "{} is missing: run scripts/test-deps to install the test servers",
            path.display()
        );
    }
    (node, entry)
}

/// The official filesystem server as upstream `fs` over stdio (an `mcp_servers:` section),
/// rooted in a fresh directory that holds `notes.txt`. Returns the YAML, the root as the server
/// reports it, and the directory's guard (keep it for the test's length).
pub fn filesystem_server() -> (String, PathBuf, tempfile::TempDir) {
    let (node, entry) = npm_server("@modelcontextprotocol/server-filesystem");
    let guard = tempfile::tempdir().expect("temp dir");
    // The server resolves symlinks: give it the canonical path it will report.
    let root = std::fs::canonicalize(guard.path()).expect("canonical root");
    std::fs::write(root.join("notes.txt"), "hello from the filesystem\n").expect("notes");
    let yaml = format!(
        r#"
mcp_servers:
  - name: fs
    transport: stdio
    command: "{node}"
    args: ["{entry}", "{root}"]
"#,
        node = node.display(),
        entry = entry.display(),
        root = root.display(),
    );
    (yaml, root, guard)
}

/// `filesystem_server` under a `files` policy: reads and listings allowed, `fs.write_file` under
/// human approval, then `extra_rules` (YAML rule items at the rules' indentation).
pub fn filesystem_config(extra_rules: &str) -> (String, PathBuf, tempfile::TempDir) {
    let (servers, root, guard) = filesystem_server();
    let yaml = format!(
        r#"{servers}policies:
  - name: files
    agent: "*"
    rules:
      - tools: ["fs.read_*", "fs.list_*"]
        action: allow
      - tools: ["fs.write_file"]
        action: human_approval
{extra_rules}"#
    );
    (yaml, root, guard)
}

/// The first child process of `pid` (of any of its threads), if it has one.
pub fn child_of(pid: u32) -> Option<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    tasks.map_while(Result::ok).find_map(|task| {
        std::fs::read_to_string(task.path().join("children"))
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// Whether `pid` has ended (gone, or a zombie waiting for its parent).
pub fn process_gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rsplit(") ").next().is_some_and(|s| s.starts_with('Z'))
    })
}

/// A loopback HTTP listener that answers 200 and reports each request's path and JSON body.
pub fn webhook_listener() -> (String, mpsc::Receiver<(String, Value)>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut request_line = String::new();
            reader.read_line(&mut request_line).expect("request line");
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).expect("header");
                if line.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = line.split_once(':')
                    && k.eq_ignore_ascii_case("content-length")
                {
                    length = v.trim().parse().expect("length");
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).expect("body");
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            let path = request_line.split(' ').nth(1).unwrap_or("").to_owned();
            let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if tx.send((path, body)).is_err() {
                return;
            }
        }
    });
    (url, rx)
}
