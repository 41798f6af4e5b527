//! The durable approval round trip, excluding human time: a call that needs approval is queued
//! (`Prefer: respond-async`), approved over the control plane, and the identical retry runs the
//! tool — against the real `mesh7 serve` with a sled store (every state change flushed).
//!
//! `cargo bench --bench approval_roundtrip` measures 3 runs of 500 round trips and prints p50,
//! p99 and max per run. Under `cargo test` (no `--bench` argument) it runs 5 round trips, so the
//! bench keeps working without slowing the test suite.
#![allow(clippy::print_stdout, clippy::disallowed_types)] // a bench reports on stdout and drives a child process synchronously

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CONFIG: &str = r#"
storage_path: "{dir}/state"
cli_tools:
  - { name: echo, bin: echo, bare: { timeout: 5s } }
loop_detection: { enabled: false }
policies:
  - name: guarded
    agent: "*"
    rules:
      - { tools: ["echo.run"], action: human_approval }
"#;

fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    let (runs, per_run) = if measuring { (3, 500) } else { (1, 5) };

    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("mesh7.yaml");
    std::fs::write(
        &config,
        CONFIG.replace("{dir}", &dir.path().display().to_string()),
    )
    .expect("write config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mesh7"))
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--listen", "127.0.0.1:0"])
        .env("MESH7_LOG", "warn")
        .env_remove("MESH_ADMIN_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mesh7");
    let stderr = child.stderr.take().expect("stderr");
    let url = BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("mesh7 listening on ").map(str::to_owned))
        .expect("mesh7 announced its address");
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");

    let mut n = 0u64;
    for run in 1..=runs {
        let mut samples = Vec::with_capacity(per_run);
        for _ in 0..per_run {
            n += 1;
            let body = format!(r#"{{"params": {{"args": ["call-{n}"]}}}}"#);
            let started = Instant::now();
            let queued: serde_json::Value = http
                .post(format!("{url}/tool/echo.run"))
                .header("Authorization", "Bearer agent:bench")
                .header("Prefer", "respond-async")
                .body(body.clone())
                .send()
                .and_then(reqwest::blocking::Response::json)
                .expect("queue");
            let id = queued["approval_id"]
                .as_str()
                .expect("approval id")
                .to_owned();
            let approved = http
                .post(format!("{url}/approvals/{id}/approve"))
                .send()
                .expect("approve");
            assert_eq!(approved.status().as_u16(), 200);
            let ran: serde_json::Value = http
                .post(format!("{url}/tool/echo.run"))
                .header("Authorization", "Bearer agent:bench")
                .header("Prefer", "respond-async")
                .body(body)
                .send()
                .and_then(reqwest::blocking::Response::json)
                .expect("retry");
            samples.push(started.elapsed());
            assert_eq!(ran["result"]["stdout"], format!("call-{n}\n"), "{ran}");
        }
        samples.sort();
        let pct = |p: f64| {
            let i = ((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[i].as_secs_f64() * 1000.0
        };
        println!(
            "approval round trip run {run}: n={} p50={:.2} ms p99={:.2} ms max={:.2} ms",
            samples.len(),
            pct(0.50),
            pct(0.99),
            pct(1.0)
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}
