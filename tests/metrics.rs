//! `GET /metrics` of `mesh7 serve` after mixed traffic (allowed, denied, rate-limited and
//! pending calls, a grant, a real upstream MCP server, failed and good policy reloads),
//! validated by Prometheus' own `promtool check metrics` (Debian package `prometheus`,
//! installed by `scripts/test-deps`).

mod common;

use std::io::Write as _;
use std::process::Stdio;
use std::time::Duration;

use common::{Daemon, filesystem_server, wait_for};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

/// `servers` (the `mcp_servers:` section) with CLI tools and policies; `echo_action` lets a
/// test write a broken file.
fn config(servers: &str, echo_action: &str) -> String {
    format!(
        r#"{servers}cli_tools:
  - {{ name: echo, bin: echo, bare: {{ timeout: 5s }} }}
  - {{ name: ls, bin: ls, bare: {{ timeout: 5s }} }}
  - {{ name: date, bin: date, bare: {{ timeout: 5s }} }}
policies:
  - name: tight
    agent: limited
    rate_limit: {{ max_per_minute: 1 }}
    rules:
      - {{ tools: ["echo.run"], action: allow }}
  - name: everyone
    agent: "*"
    rules:
      - {{ tools: ["echo.run"], action: {echo_action} }}
      - {{ tools: ["date.run"], action: deny }}
      - {{ tools: ["ls.run"], action: human_approval }}
      - {{ tools: ["fs.*"], action: allow }}
"#
    )
}

/// The value of one series, e.g. `mesh7_grants_active` or `x{a="b"}`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Runs `promtool check metrics` on the exposition text: (success, its output).
#[allow(clippy::disallowed_types)] // a test drives promtool synchronously
fn promtool_check(text: &str) -> (bool, String) {
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool not found ({e}): run scripts/test-deps to install it (Debian package prometheus)")
        });
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), report)
}

#[test]
fn metrics_after_mixed_traffic_pass_promtool_and_count_what_happened() {
    let (servers, _root, _root_guard) = filesystem_server();
    let d = Daemon::start(&config(&servers, "allow"));
    wait_for(WAIT, || {
        let (_, servers) = d.get("/mcp-servers", None);
        (servers[0]["status"] == "ready").then_some(())
    })
    .expect("the filesystem server never became ready");

    assert_eq!(d.call("claude", "echo.run", &json!({"args": ["a"]})).0, 200);
    assert_eq!(d.call("claude", "date.run", &json!({})).0, 403);
    assert_eq!(
        d.call("limited", "echo.run", &json!({"args": ["1"]})).0,
        200
    );
    assert_eq!(
        d.call("limited", "echo.run", &json!({"args": ["2"]})).0,
        429
    );
    let (status, body) = d.post_with(
        "/tool/ls.run",
        &[
            ("Authorization", "Bearer agent:claude"),
            ("Prefer", "respond-async"),
        ],
        r#"{"params": {"args": ["-d", "."]}}"#,
    );
    assert_eq!(status, 202, "{body}");
    let (status, body) = d.call("claude", "fs.list_allowed_directories", &json!({}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(d.decide("claude", "nope.tool", &json!({})).0, 403);
    let (status, grant) = d.post(
        "/grants",
        None,
        r#"{"agent": "ops", "tools": "ls.run", "duration": "10m"}"#,
    );
    assert_eq!(status, 201, "{grant}");

    // A broken policy file is refused (and counted); the fixed one is taken.
    let config_path = d.path("mesh7.yaml");
    std::fs::write(&config_path, config(&servers, "alow")).unwrap();
    let scrape = || d.get_text("/metrics").1;
    wait_for(WAIT, || {
        (sample(&scrape(), "mesh7_policy_reload_failures_total") == Some(1.0)).then_some(())
    })
    .expect("the failed reload was never counted");
    std::fs::write(&config_path, config(&servers, "allow")).unwrap();
    wait_for(WAIT, || {
        (sample(&scrape(), "mesh7_policy_reloads_total") == Some(1.0)).then_some(())
    })
    .expect("the good reload was never counted");

    let (status, text) = d.get_text("/metrics");
    assert_eq!(status, 200);
    let (ok, report) = promtool_check(&text);
    assert!(ok, "promtool check metrics failed:\n{report}\n---\n{text}");

    let cases = [
        (
            "mesh7_calls_total{ingress=\"http\",decision=\"allow\"}",
            3.0,
        ),
        ("mesh7_calls_total{ingress=\"http\",decision=\"deny\"}", 1.0),
        (
            "mesh7_calls_total{ingress=\"http\",decision=\"rate_limited\"}",
            1.0,
        ),
        (
            "mesh7_calls_total{ingress=\"http\",decision=\"human_approval\"}",
            1.0,
        ),
        (
            "mesh7_calls_total{ingress=\"decide\",decision=\"deny\"}",
            1.0,
        ),
        (
            "mesh7_calls_by_source_total{source=\"cli\",decision=\"allow\"}",
            2.0,
        ),
        (
            "mesh7_calls_by_source_total{source=\"mcp\",decision=\"allow\"}",
            1.0,
        ),
        (
            "mesh7_calls_by_source_total{source=\"none\",decision=\"deny\"}",
            1.0,
        ),
        ("mesh7_rate_limit_hits_total", 1.0),
        ("mesh7_loop_hits_total", 0.0),
        ("mesh7_approvals_pending", 1.0),
        ("mesh7_grants_active", 1.0),
        ("mesh7_upstream_up{server=\"fs\"}", 1.0),
        ("mesh7_policy_reload_failures_total", 1.0),
        ("mesh7_policy_reloads_total", 1.0),
        ("mesh7_policy_last_reload_ok", 1.0),
        ("mesh7_trace_write_errors_total", 0.0),
        ("mesh7_otel_spans_dropped_total", 0.0),
        ("agent_mesh_mem7_writes_attempted_total", 0.0),
        ("agent_mesh_mem7_writes_succeeded_total", 0.0),
        ("agent_mesh_mem7_writes_failed_total", 0.0),
        // Every call that came with valid credentials was authenticated, each once.
        (
            "mesh7_step_duration_seconds_count{step=\"authenticate\"}",
            7.0,
        ),
        ("mesh7_step_duration_seconds_count{step=\"forward\"}", 3.0),
        ("mesh7_step_duration_seconds_count{step=\"approval\"}", 1.0),
    ];
    for (series, want) in cases {
        assert_eq!(sample(&text, series), Some(want), "{series}\n{text}");
    }
}
