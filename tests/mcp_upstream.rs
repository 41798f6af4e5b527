//! Upstream MCP tools through mesh7's own MCP ingresses: the official filesystem server behind
//! mesh7 as `fs`, driven by the official Python SDK over `/mcp` and over `mesh7 --mcp`.

mod common;
#[allow(dead_code, unreachable_pub)] // shared helpers: each test file uses part of them
mod mcp_support;

use std::time::Duration;

use common::{Daemon, filesystem_config, wait_for};
use mcp_support::run_python;

#[test]
fn filesystem_tools_over_streamable_http_keep_schemas_results_and_governance() {
    let (yaml, root, _guard) = filesystem_config("");
    let d = Daemon::start(&yaml);
    wait_for(Duration::from_secs(30), || {
        let (_, servers) = d.get("/mcp-servers", None);
        (servers[0]["status"] == "ready").then_some(())
    })
    .expect("the filesystem server never became ready");
    let url = format!("{}/mcp", d.url);
    let root = root.display().to_string();
    let (code, output) = run_python(
        "mcp_filesystem.py",
        &["http", &root, &url, "Bearer agent:claude"],
    );
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("ok"), "{output}");
    let (_, traces) = d.get("/traces", None);
    let tools: Vec<&str> = traces
        .as_array()
        .expect("traces")
        .iter()
        .filter_map(|t| t["tool"].as_str())
        .collect();
    assert_eq!(tools, ["fs.write_file", "fs.read_text_file"], "{traces}");
}

#[test]
fn filesystem_tools_over_stdio_keep_schemas_results_and_governance() {
    let (yaml, root, _guard) = filesystem_config("");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = common::write_config(dir.path(), &yaml)
        .display()
        .to_string();
    let root = root.display().to_string();
    let (code, output) = run_python(
        "mcp_filesystem.py",
        &[
            "stdio",
            &root,
            env!("CARGO_BIN_EXE_mesh7"),
            "--mcp",
            "--config",
            &config,
            "--listen",
            "127.0.0.1:0",
        ],
    );
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("ok"), "{output}");
}
