//! A loopback HTTP backend for the OpenAPI tests: it answers every request with what it
//! received (`method`, `path`, `query`, `headers`, `body`), so a test reads the forwarded request
//! straight from the tool's result. `/status/<code>` answers with that status, `/hang` never
//! answers, and files given at start (specs) are served as they are.
//!
//! Also: running the `mesh7` binary with an environment and a deadline. Each test file uses part
//! of this module, so test files declare it with `#[allow(dead_code, unreachable_pub)]`.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

/// A running backend on 127.0.0.1; it stops accepting when dropped.
pub struct Backend {
    pub url: String,
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Backend {
    /// Starts the echo backend; `files` maps a path (`/spec.json`) to a body served with 200.
    pub fn start(files: &[(&str, &str)]) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let files: Arc<BTreeMap<String, String>> = Arc::new(
            files
                .iter()
                .map(|(p, b)| ((*p).to_owned(), (*b).to_owned()))
                .collect(),
        );
        let stopping = stop.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let files = files.clone();
                std::thread::spawn(move || serve(&conn, &files));
            }
        });
        Backend {
            url: format!("http://127.0.0.1:{port}"),
            port,
            stop,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag and closes the listener.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(conn: &TcpStream, files: &BTreeMap<String, String>) {
    let mut reader = BufReader::new(conn.try_clone().expect("clone stream"));
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let target = parts.next().unwrap_or("").to_owned();
    let mut headers = Map::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            let v = v.trim().to_owned();
            if k == "content-length" {
                length = v.parse().unwrap_or(0);
            }
            headers.insert(k, json!(v));
        }
    }
    let mut body = vec![0u8; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), q.to_owned()),
        None => (target.clone(), String::new()),
    };
    if path == "/hang" {
        // Never answers: waits until the client gives up and closes.
        let mut sink = Vec::new();
        let _ = reader.read_to_end(&mut sink);
        return;
    }
    if let Some(file) = files.get(&path) {
        return respond(conn, 200, "application/octet-stream", file.as_bytes());
    }
    let body_value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
    };
    let status = path
        .strip_prefix("/status/")
        .and_then(|s| s.split('/').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let echo = json!({
        "method": method,
        "path": path,
        "query": query,
        "headers": headers,
        "body": body_value,
    });
    respond(
        conn,
        status,
        "application/json",
        echo.to_string().as_bytes(),
    );
}

fn respond(mut conn: &TcpStream, status: u16, content_type: &str, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(body);
    let _ = conn.flush();
}

/// Runs `mesh7 <args>` with extra environment in `cwd`; returns (exit code, stdout, stderr).
/// A run that outlives `within` is killed and fails the test.
#[allow(clippy::disallowed_types)] // tests drive the real binary synchronously
pub fn run_mesh7(
    args: &[&str],
    env: &[(&str, &str)],
    cwd: &Path,
    within: Duration,
) -> (i32, String, String) {
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_mesh7"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("MESH_ADMIN_TOKEN")
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mesh7");
    let mut stdout = child.stdout.take().expect("stdout piped");
    let mut stderr = child.stderr.take().expect("stderr piped");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mesh7 {args:?} still running after {within:?}");
        }
        std::thread::park_timeout(Duration::from_millis(20));
    };
    (
        status.code().unwrap_or(-1),
        out.join().expect("stdout reader"),
        err.join().expect("stderr reader"),
    )
}
