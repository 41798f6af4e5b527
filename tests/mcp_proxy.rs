//! Black-box tests of the `--mcp` auto-proxy: with `mesh7 serve` running, `mesh7 --mcp` on the
//! same port bridges stdio to the daemon's `/mcp`, so the daemon governs and traces the calls.

mod common;
#[allow(dead_code, unreachable_pub)] // shared helpers: each test file uses part of them
mod mcp_support;

use std::time::Duration;

use common::Daemon;
use mcp_support::{GOVERNED, McpChild, result_text, run_python_client};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

fn port_of(d: &Daemon) -> String {
    d.url.rsplit(':').next().expect("port").to_owned()
}

fn config_of(d: &Daemon) -> String {
    d.path("mesh7.yaml").display().to_string()
}

#[test]
fn python_client_through_the_bridge_is_governed_and_traced_by_the_daemon() {
    let d = Daemon::start(GOVERNED);
    let (config, port) = (config_of(&d), port_of(&d));
    let workdir = d.dir.path().display().to_string();
    let (code, output) = run_python_client(&[
        "stdio",
        &workdir,
        env!("CARGO_BIN_EXE_mesh7"),
        "--mcp",
        "--config",
        &config,
        "--port",
        &port,
    ]);
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("ok"), "{output}");
    // The call the client abandoned on its read timeout is stopped at the daemon too.
    let sleep = d.trace_of("sleep.run", |e| e["status_code"] == 499);
    assert!(sleep["latency_ms"].as_u64().unwrap() < 20_000, "{sleep}");
    let (_, traces) = d.get("/traces", None);
    let traces = traces.as_array().expect("traces");
    let tools: Vec<&str> = traces.iter().filter_map(|t| t["tool"].as_str()).collect();
    assert_eq!(
        tools,
        ["sleep.run", "approver.run", "writer.run", "echo.run"],
        "{traces:?}"
    );
    for t in traces {
        assert_eq!(t["ingress"], "mcp-http", "{t}");
        assert_eq!(t["agent_id"], "claude", "{t}");
        assert_eq!(t["session_id"], traces[0]["session_id"], "{t}");
    }
}

#[test]
fn bridge_sends_the_agent_token_and_ends_the_session_on_eof() {
    let d = Daemon::start(&format!(
        "{GOVERNED}auth:\n  agent_tokens:\n    s3cret: billing-bot\n"
    ));
    let (config, port) = (config_of(&d), port_of(&d));
    let mut bridge = McpChild::start(
        d.dir.path(),
        &["--mcp", "--config", &config, "--port", &port],
        &[("MESH_AGENT_TOKEN", "s3cret")],
    );
    bridge.stderr_line("bridging stdio", WAIT);
    bridge.initialize();
    bridge.request(
        1,
        "tools/call",
        &json!({"name": "echo.run", "arguments": {"args": ["via", "daemon"]}}),
    );
    assert_eq!(result_text(&bridge.recv(WAIT)), "via daemon\n");
    bridge.close_stdin();
    assert!(bridge.wait(WAIT).success());

    let (_, traces) = d.get("/traces", None);
    assert_eq!(traces[0]["agent_id"], "billing-bot", "{traces}");
    let session = traces[0]["session_id"]
        .as_str()
        .expect("session")
        .to_owned();
    let ended = common::wait_for(WAIT, || {
        d.stderr
            .try_recv()
            .ok()
            .filter(|l| l.contains("MCP session ended") && l.contains(&session))
    });
    assert!(ended.is_some(), "the bridge did not DELETE its session");
}

#[test]
fn bridge_exits_non_zero_with_a_clear_error_when_the_daemon_goes_away() {
    let mut d = Daemon::start(GOVERNED);
    let (config, port) = (config_of(&d), port_of(&d));
    let mut bridge = McpChild::start(
        d.dir.path(),
        &["--mcp", "--config", &config, "--port", &port],
        &[],
    );
    bridge.stderr_line("bridging stdio", WAIT);
    // Only requests, so that nothing else is in flight when the daemon dies.
    bridge.request(0, "initialize", &json!({"protocolVersion": "2025-11-25"}));
    assert!(bridge.recv(WAIT).get("result").is_some());
    d.child.kill().expect("kill the daemon");
    d.child.wait().expect("reap the daemon");

    bridge.request(7, "ping", &json!({}));
    let answer = bridge.recv(WAIT);
    assert_eq!(answer["id"], 7, "{answer}");
    assert_eq!(answer["error"]["code"], -32603, "{answer}");
    let status = bridge.wait(WAIT);
    assert!(!status.success(), "{status}");
    let line = bridge.stderr_line("lost the mesh7 daemon", WAIT);
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
}
