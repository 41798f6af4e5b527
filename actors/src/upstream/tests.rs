//! Tests of the upstream client against real MCP servers (the npm servers and the Python SDK
//! from `scripts/test-deps`) and a small stdio fixture server written for the cases a real
//! server cannot show (cancellations seen, pagination, server requests, refused versions).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use super::*;

/// Bound of every wait for a server to come up.
const READY: Duration = Duration::from_secs(20);

fn deps() -> PathBuf {
    let deps = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/deps");
    let needed = [
        "node_modules/.bin/node",
        "node_modules/@modelcontextprotocol/server-everything/dist/index.js",
        "node_modules/@modelcontextprotocol/server-filesystem/dist/index.js",
    ];
    for file in needed {
        assert!(
            deps.join(file).exists(),
            "test dependency {file} is missing under {}: run scripts/test-deps",
            deps.display()
        );
    }
    deps
}

fn node() -> String {
    path(&deps().join("node_modules/.bin/node"))
}

fn everything() -> String {
    path(&deps().join("node_modules/@modelcontextprotocol/server-everything/dist/index.js"))
}

fn filesystem() -> String {
    path(&deps().join("node_modules/@modelcontextprotocol/server-filesystem/dist/index.js"))
}

fn venv_python() -> String {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(
        python.exists(),
        "the Python MCP SDK is missing ({}): run scripts/test-deps",
        python.display()
    );
    path(&python)
}

fn path(p: &Path) -> String {
    p.to_str().expect("test paths are UTF-8").to_owned()
}

fn config(name: &str, transport: McpTransport) -> McpServerConfig {
    McpServerConfig {
        name: name.to_owned(),
        transport,
        command: None,
        args: Vec::new(),
        env: BTreeMap::new(),
        url: None,
        headers: BTreeMap::new(),
        timeout: None,
        pin_tools: false,
    }
}

fn stdio_config(name: &str, command: &str, args: &[&str]) -> McpServerConfig {
    McpServerConfig {
        command: Some(command.to_owned()),
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        ..config(name, McpTransport::Stdio)
    }
}

fn url_config(name: &str, transport: McpTransport, url: &str) -> McpServerConfig {
    McpServerConfig {
        url: Some(url.to_owned()),
        ..config(name, transport)
    }
}

fn everything_stdio() -> McpServerConfig {
    stdio_config("everything", &node(), &[&everything(), "stdio"])
}

fn start(cfg: &McpServerConfig) -> Upstream {
    Upstream::start(cfg).expect("usable config")
}

async fn ready(cfg: &McpServerConfig) -> Upstream {
    let up = start(cfg);
    assert!(up.wait_ready(READY).await, "not ready: {:?}", up.info());
    up
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free local port")
        .port()
}

fn text_of(result: &Value) -> &str {
    result["content"][0]["text"]
        .as_str()
        .expect("a text content")
}

/// A server process started by a test, with its output lines.
struct Server {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
}

impl Server {
    async fn start(program: &str, args: &[&str], port: u16, ready_line: &str) -> Server {
        let mut child = Command::new(program)
            .args(args)
            .env("PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("test server starts");
        let stdout = lines_of(child.stdout.take().expect("piped"));
        let stderr = lines_of(child.stderr.take().expect("piped"));
        let mut server = Server {
            child,
            lines: merge(stdout, stderr),
        };
        server.expect_line(ready_line).await;
        server
    }

    async fn expect_line(&mut self, needle: &str) {
        let found = tokio::time::timeout(READY, async {
            while let Some(line) = self.lines.recv().await {
                if line.contains(needle) {
                    return true;
                }
            }
            false
        })
        .await;
        assert!(
            matches!(found, Ok(true)),
            "the server never printed {needle:?}"
        );
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

fn lines_of(
    reader: impl tokio::io::AsyncRead + Unpin + Send + 'static,
) -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(reader).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = tx.send(line);
        }
    });
    rx
}

fn merge(
    mut a: mpsc::UnboundedReceiver<String>,
    mut b: mpsc::UnboundedReceiver<String>,
) -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let line = tokio::select! {
                Some(line) = a.recv() => line,
                Some(line) = b.recv() => line,
                else => return,
            };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// The checks every transport of server-everything must pass.
async fn check_everything(up: &Upstream, transport: &str) {
    assert!(up.wait_ready(READY).await, "not ready: {:?}", up.info());
    let tools = up.tools();
    let echo = tools
        .iter()
        .find(|t| t.name == "echo")
        .expect("echo listed");
    assert_eq!(echo.input_schema["type"], "object");
    assert_eq!(echo.input_schema["properties"]["message"]["type"], "string");
    let structured = tools
        .iter()
        .find(|t| t.name == "get-structured-content")
        .expect("get-structured-content listed");
    let output = structured
        .output_schema
        .as_ref()
        .expect("outputSchema kept");
    assert_eq!(output["properties"]["temperature"]["type"], "number");
    assert_eq!(
        structured.title.as_deref(),
        Some("Get Structured Content Tool")
    );
    assert_eq!(
        structured.annotations.as_ref().expect("annotations kept")["readOnlyHint"],
        true
    );

    let echoed = up
        .call_tool("echo", json!({"message": "hi"}), None)
        .await
        .expect("echo answers");
    assert_eq!(text_of(&echoed), "Echo: hi");
    let weather = up
        .call_tool(
            "get-structured-content",
            json!({"location": "Chicago"}),
            None,
        )
        .await
        .expect("get-structured-content answers");
    assert_eq!(
        weather["structuredContent"],
        json!({"temperature": 36, "conditions": "Light rain / drizzle", "humidity": 82})
    );

    let info = up.info();
    assert_eq!(info.name, "everything");
    assert_eq!(info.transport, transport);
    assert_eq!(info.status, UpstreamStatus::Ready);
    assert_eq!(info.error, None);
    assert!(info.tools.iter().any(|t| t == "echo"), "{:?}", info.tools);
}

#[actix::test]
async fn stdio_lists_whole_schemas_and_forwards_results() {
    let up = start(&everything_stdio());
    check_everything(&up, "stdio").await;
    assert_eq!(up.runtime(), format!("{} {} stdio", node(), everything()));
    let shown = serde_json::to_value(up.info()).unwrap();
    assert_eq!(shown["status"], "ready");
    assert_eq!(shown["transport"], "stdio");
    assert!(shown.get("error").is_none(), "{shown}");
    up.shutdown().await;
    assert_eq!(up.info().status, UpstreamStatus::Closed);
}

#[actix::test]
async fn sse_lists_whole_schemas_and_forwards_results() {
    let port = free_port();
    let server = Server::start(&node(), &[&everything(), "sse"], port, "running on port").await;
    let url = format!("http://127.0.0.1:{port}/sse");
    let up = start(&url_config("everything", McpTransport::Sse, &url));
    check_everything(&up, "sse").await;
    assert_eq!(up.runtime(), url);
    up.shutdown().await;
    server.stop().await;
}

#[actix::test]
async fn streamable_http_lists_whole_schemas_forwards_results_and_ends_the_session() {
    let port = free_port();
    let mut server = Server::start(
        &node(),
        &[&everything(), "streamableHttp"],
        port,
        "listening on port",
    )
    .await;
    let url = format!("http://127.0.0.1:{port}/mcp");
    let up = start(&url_config(
        "everything",
        McpTransport::StreamableHttp,
        &url,
    ));
    check_everything(&up, "streamable-http").await;
    up.shutdown().await;
    server
        .expect_line("Received session termination request")
        .await;
    server.stop().await;
}

const PY_JSON_SERVER: &str = r#"
import sys
from mcp.server.mcpserver import MCPServer

server = MCPServer("py-json")

@server.tool()
def add(a: int, b: int) -> int:
    """Adds two numbers."""
    return a + b

server.run(transport="streamable-http", host="127.0.0.1", port=int(sys.argv[1]), json_response=True)
"#;

#[actix::test]
async fn streamable_http_accepts_plain_json_answers() {
    let port = free_port();
    let server = Server::start(
        &venv_python(),
        &["-c", PY_JSON_SERVER, &port.to_string()],
        port,
        "Uvicorn running on",
    )
    .await;
    let up = ready(&url_config(
        "py",
        McpTransport::StreamableHttp,
        &format!("http://127.0.0.1:{port}/mcp"),
    ))
    .await;
    let tools = up.tools();
    let add = tools.iter().find(|t| t.name == "add").expect("add listed");
    assert_eq!(add.description, "Adds two numbers.");
    assert_eq!(add.input_schema["required"], json!(["a", "b"]));
    let sum = up
        .call_tool("add", json!({"a": 2, "b": 3}), None)
        .await
        .expect("add answers");
    assert_eq!(text_of(&sum), "5");
    assert_eq!(sum["structuredContent"], json!({"result": 5}));
    up.shutdown().await;
    server.stop().await;
}

#[actix::test]
async fn filesystem_results_are_forwarded_with_is_error_as_given() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    std::fs::write(root.join("note.txt"), "hello from mesh7").unwrap();
    let root = path(&root);
    let up = ready(&stdio_config("fs", &node(), &[&filesystem(), &root])).await;

    let listing = up
        .call_tool("list_directory", json!({"path": root}), None)
        .await
        .unwrap();
    assert!(text_of(&listing).contains("[FILE] note.txt"), "{listing}");
    let read = up
        .call_tool(
            "read_text_file",
            json!({"path": format!("{root}/note.txt")}),
            None,
        )
        .await
        .unwrap();
    assert_eq!(text_of(&read), "hello from mesh7");
    let outside = up
        .call_tool("read_text_file", json!({"path": "/etc/hostname"}), None)
        .await
        .expect("a refusal is a result, not an error");
    assert_eq!(outside["isError"], true, "{outside}");
    up.shutdown().await;
}

fn signal(pid: u32, signal: Option<Signal>) -> nix::Result<()> {
    kill(Pid::from_raw(i32::try_from(pid).unwrap()), signal)
}

#[actix::test]
async fn killed_child_fails_calls_in_flight_at_once_and_reconnects() {
    let up = ready(&everything_stdio()).await;
    let tools_before = up.tools();
    let pid = up.child_pid().expect("a child runs");

    let started = Instant::now();
    let long = up.call_tool(
        "trigger-long-running-operation",
        json!({"duration": 60, "steps": 1}),
        None,
    );
    let (result, ()) = tokio::join!(long, async {
        // Runs after the call has registered and queued its request.
        tokio::task::yield_now().await;
        signal(pid, Some(Signal::SIGKILL)).unwrap();
    });
    let err = result.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "{err}");
    assert!(
        matches!(&err, UpstreamError::ConnectionLost(m) if m.contains("\"everything\"")),
        "{err}"
    );
    let lost = up
        .wait_for(Duration::from_secs(5), |h| {
            h.status == UpstreamStatus::Error
                && h.error
                    .as_deref()
                    .is_some_and(|e| e.contains("connection lost"))
        })
        .await;
    assert!(lost, "{:?}", up.info());

    let back = up
        .wait_for(Duration::from_secs(5), |h| {
            h.attempts >= 2 && h.status == UpstreamStatus::Ready
        })
        .await;
    assert!(back, "{:?}", up.info());
    assert!(up.wait_ready(Duration::from_secs(1)).await);
    assert_ne!(up.child_pid(), Some(pid));
    assert_eq!(up.tools(), tools_before);
    let echoed = up
        .call_tool("echo", json!({"message": "again"}), None)
        .await
        .unwrap();
    assert_eq!(text_of(&echoed), "Echo: again");
    up.shutdown().await;
}

#[actix::test]
async fn missing_command_reports_the_error_keeps_retrying_and_fails_calls_fast() {
    let up = start(&stdio_config(
        "ghost",
        "/nonexistent/mesh7-no-such-server",
        &[],
    ));
    assert_eq!(up.info().status, UpstreamStatus::Connecting);
    let retried = up
        .wait_for(Duration::from_secs(5), |h| h.attempts >= 2)
        .await;
    assert!(retried, "{:?}", up.info());
    let info = up.info();
    assert_eq!(info.status, UpstreamStatus::Error);
    let error = info.error.expect("the error is shown");
    assert!(
        error.contains("cannot start") && error.contains("No such file"),
        "{error}"
    );

    let started = Instant::now();
    let err = up.call_tool("anything", json!({}), None).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_millis(100));
    assert_eq!(err, UpstreamError::NotConnected("ghost".to_owned()));
    assert_eq!(err.to_string(), "MCP server \"ghost\" is not connected");
    up.shutdown().await;
    assert_eq!(up.info().status, UpstreamStatus::Closed);
}

#[actix::test]
async fn a_call_past_its_timeout_fails_and_the_connection_stays_up() {
    let cfg = McpServerConfig {
        timeout: Some("500ms".to_owned()),
        ..everything_stdio()
    };
    let up = ready(&cfg).await;
    let started = Instant::now();
    let err = up
        .call_tool(
            "trigger-long-running-operation",
            json!({"duration": 30, "steps": 1}),
            None,
        )
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(err, UpstreamError::Timeout(Duration::from_millis(500)));
    assert_eq!(err.to_string(), "MCP call timed out after 500ms");
    let echoed = up
        .call_tool("echo", json!({"message": "still here"}), None)
        .await
        .unwrap();
    assert_eq!(text_of(&echoed), "Echo: still here");
    assert_eq!(up.info().status, UpstreamStatus::Ready);
    up.shutdown().await;
}

#[actix::test]
async fn shutdown_reaps_the_child_and_later_calls_fail_fast() {
    let up = ready(&everything_stdio()).await;
    let pid = up.child_pid().expect("a child runs");
    up.shutdown().await;
    assert_eq!(
        signal(pid, None),
        Err(nix::errno::Errno::ESRCH),
        "child not reaped"
    );
    assert_eq!(up.child_pid(), None);
    assert_eq!(up.info().status, UpstreamStatus::Closed);
    let err = up.call_tool("echo", json!({}), None).await.unwrap_err();
    assert_eq!(err, UpstreamError::NotConnected("everything".to_owned()));
}

/// A stdio MCP server for the cases real servers do not show. Its first page of tools points to
/// a second; `slow` never answers; `report` returns the cancellations received; `fail` answers a
/// JSON-RPC error; `add` adds a tool and says so; `probe` sends the client a `ping` and a
/// `sampling/createMessage` and returns both answers. An argument overrides the protocol version.
const FIXTURE: &str = r#"
import json, sys

version = sys.argv[1] if len(sys.argv) > 1 else None
cancelled, probe, state = [], {}, {"extra": False}

def send(msg):
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()

def result(mid, value):
    send({"jsonrpc": "2.0", "id": mid, "result": value})

def text(mid, value):
    result(mid, {"content": [{"type": "text", "text": json.dumps(value)}]})

def tool(name):
    return {"name": name, "description": name, "inputSchema": {"type": "object"}}

while True:
    line = sys.stdin.readline()
    if not line:
        break
    msg = json.loads(line)
    method, mid, params = msg.get("method"), msg.get("id"), msg.get("params") or {}
    if method == "initialize":
        result(mid, {"protocolVersion": version or params["protocolVersion"],
                     "capabilities": {"tools": {"listChanged": True}},
                     "serverInfo": {"name": "fixture", "version": "1"}})
    elif method == "tools/list":
        if "cursor" not in params:
            result(mid, {"tools": [tool("slow"), tool("report")], "nextCursor": "page-2"})
        else:
            extra = [tool("extra")] if state["extra"] else []
            result(mid, {"tools": [tool("probe"), tool("fail"), tool("add")] + extra})
    elif method == "tools/call":
        name = params["name"]
        if name == "report":
            text(mid, cancelled)
        elif name == "fail":
            send({"jsonrpc": "2.0", "id": mid, "error": {"code": -32602, "message": "bad arguments"}})
        elif name == "add":
            state["extra"] = True
            send({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
            text(mid, "added")
        elif name == "probe":
            probe["call"] = mid
            send({"jsonrpc": "2.0", "id": "s1", "method": "ping"})
            send({"jsonrpc": "2.0", "id": "s2", "method": "sampling/createMessage", "params": {}})
    elif method == "notifications/cancelled":
        cancelled.append(params)
    elif method is None and mid in ("s1", "s2"):
        probe[mid] = msg
        if "s1" in probe and "s2" in probe:
            text(probe["call"], {"s1": probe["s1"], "s2": probe["s2"]})
"#;

fn fixture(args: &[&str]) -> McpServerConfig {
    let mut all = vec!["-c", FIXTURE];
    all.extend_from_slice(args);
    stdio_config("fixture", "python3", &all)
}

async fn reported(up: &Upstream, tool: &str) -> Value {
    let result = up.call_tool(tool, json!({}), None).await.unwrap();
    serde_json::from_str(text_of(&result)).unwrap()
}

#[actix::test]
async fn dropped_and_timed_out_calls_send_cancelled_upstream() {
    let cfg = McpServerConfig {
        timeout: Some("300ms".to_owned()),
        ..fixture(&[])
    };
    let up = ready(&cfg).await;
    assert_eq!(reported(&up, "report").await, json!([]));

    let dropped = tokio::time::timeout(
        Duration::from_millis(50),
        up.call_tool("slow", json!({}), None),
    )
    .await;
    assert!(dropped.is_err(), "the call was answered: {dropped:?}");
    let timed_out = up.call_tool("slow", json!({}), None).await.unwrap_err();
    assert_eq!(
        timed_out,
        UpstreamError::Timeout(Duration::from_millis(300))
    );

    // The cancellations travel the same pipe ahead of this request.
    let cancelled = reported(&up, "report").await;
    let reasons: Vec<_> = cancelled
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        ["request cancelled by the client", "request timed out"]
    );
    let ids: Vec<_> = cancelled
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["requestId"].as_u64().expect("a numeric request id"))
        .collect();
    assert_ne!(ids[0], ids[1]);
    up.shutdown().await;
}

#[actix::test]
async fn tools_follow_pagination_and_refresh_on_list_changed() {
    let up = ready(&fixture(&[])).await;
    let names = |up: &Upstream| {
        up.tools()
            .iter()
            .map(|t| t.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&up), ["slow", "report", "probe", "fail", "add"]);

    assert_eq!(reported(&up, "add").await, json!("added"));
    let refreshed = up
        .wait_for(Duration::from_secs(5), |h| h.tools_version >= 2)
        .await;
    assert!(refreshed, "{:?}", up.info());
    assert_eq!(
        names(&up),
        ["slow", "report", "probe", "fail", "add", "extra"]
    );
    up.shutdown().await;
}

#[actix::test]
async fn server_pings_are_answered_and_other_server_requests_refused() {
    let up = ready(&fixture(&[])).await;
    let answers = reported(&up, "probe").await;
    assert_eq!(
        answers["s1"],
        json!({"jsonrpc": "2.0", "id": "s1", "result": {}})
    );
    assert_eq!(answers["s2"]["id"], "s2");
    assert_eq!(answers["s2"]["error"]["code"], -32601);
    up.shutdown().await;
}

#[actix::test]
async fn upstream_rpc_errors_read_as_mcp_errors() {
    let up = ready(&fixture(&[])).await;
    let err = up.call_tool("fail", json!({}), None).await.unwrap_err();
    assert_eq!(
        err,
        UpstreamError::Rpc {
            code: -32602,
            message: "bad arguments".to_owned()
        }
    );
    assert_eq!(err.to_string(), "MCP error -32602: bad arguments");
    up.shutdown().await;
}

#[actix::test]
async fn an_unsupported_protocol_version_is_refused() {
    let up = start(&fixture(&["1999-01-01"]));
    let failed = up
        .wait_for(READY, |h| h.status == UpstreamStatus::Error)
        .await;
    assert!(failed, "{:?}", up.info());
    let error = up.info().error.unwrap();
    assert!(
        error.contains("unsupported protocol version \"1999-01-01\""),
        "{error}"
    );
    up.shutdown().await;
}

#[actix::test]
async fn sse_endpoint_on_another_origin_is_refused() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let mut open = Vec::new();
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = vec![0; 4096];
            let _ = socket.read(&mut request).await;
            socket
                .write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n\
                      event: endpoint\ndata: http://evil.example.com/message?sessionId=1\n\n",
                )
                .await
                .unwrap();
            open.push(socket);
        }
    });
    let url = format!("http://127.0.0.1:{port}/sse");
    let up = start(&url_config("foreign", McpTransport::Sse, &url));
    let failed = up
        .wait_for(Duration::from_secs(10), |h| {
            h.status == UpstreamStatus::Error
        })
        .await;
    assert!(failed, "{:?}", up.info());
    let error = up.info().error.unwrap();
    assert!(
        error.contains("evil.example.com") && error.contains("not on the same origin"),
        "{error}"
    );
    up.shutdown().await;
    server.abort();
}

#[actix::test]
async fn start_refuses_config_it_cannot_use() {
    let mut cases = vec![
        (
            config("a", McpTransport::Stdio),
            "transport stdio requires command",
        ),
        (config("b", McpTransport::Sse), "transport sse requires url"),
        (
            url_config("d", McpTransport::StreamableHttp, "ftp://example.com/mcp"),
            "unsupported scheme",
        ),
        (
            McpServerConfig {
                timeout: Some("soon".to_owned()),
                ..stdio_config("e", "true", &[])
            },
            "invalid timeout \"soon\"",
        ),
        (
            McpServerConfig {
                headers: BTreeMap::from([("bad header".to_owned(), "x".to_owned())]),
                ..url_config("f", McpTransport::Sse, "http://127.0.0.1:1/sse")
            },
            "invalid header name \"bad header\"",
        ),
    ];
    // A build without TLS refuses https upstreams rather than failing at the first call.
    if !cfg!(feature = "tls") {
        cases.push((
            url_config("c", McpTransport::StreamableHttp, "https://example.com/mcp"),
            "needs a mesh7 built with the `tls` feature",
        ));
    }
    for (cfg, expected) in cases {
        let err = Upstream::start(&cfg).unwrap_err();
        assert!(err.contains(expected), "{}: {err}", cfg.name);
        assert!(err.contains(&format!("{:?}", cfg.name)), "{err}");
    }
}

#[test]
fn the_handle_and_its_calls_can_cross_threads() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    let call = |up: &Upstream| {
        let up = up.clone();
        async move { up.call_tool("t", json!({}), None).await }
    };
    let check = |up: &Upstream| {
        send_sync(up);
        send(&call(up));
        send(&up.wait_ready(Duration::ZERO));
        send(&up.shutdown());
    };
    let _ = check;
}

#[test]
fn backoff_doubles_from_one_second_to_thirty() {
    let cases = [(0, 0), (1, 1), (2, 2), (3, 4), (5, 16), (6, 30), (40, 30)];
    for (failures, secs) in cases {
        assert_eq!(backoff(failures), Duration::from_secs(secs), "{failures}");
    }
}

#[test]
fn errors_read_clearly() {
    let cases = [
        (
            UpstreamError::ConnectionLost("MCP server \"x\" exited (signal: 9)".to_owned()),
            "connection lost: MCP server \"x\" exited (signal: 9)",
        ),
        (
            UpstreamError::Protocol("bad".to_owned()),
            "MCP protocol error: bad",
        ),
        (
            UpstreamError::Timeout(Duration::from_secs(60)),
            "MCP call timed out after 60s",
        ),
    ];
    for (err, text) in cases {
        assert_eq!(err.to_string(), text);
    }
}
