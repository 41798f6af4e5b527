//! Every shipped example configuration and policy pack loads and validates.

mod common;

use std::path::Path;

use common::{Daemon, run};
use serde_json::json;

fn yaml_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read policies dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

#[test]
fn every_example_config_validates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut configs = Vec::new();
    for entry in std::fs::read_dir(&root).unwrap() {
        let dir = entry.unwrap().path();
        let cfg = dir.join("mesh7.yaml");
        assert!(cfg.exists(), "{} has no mesh7.yaml", dir.display());
        configs.push(cfg);
    }
    assert!(!configs.is_empty());
    for cfg in configs {
        let (code, stdout, stderr) = run(&["validate", "--config", cfg.to_str().unwrap()]);
        assert_eq!(
            (code, stdout.trim()),
            (0, "ok"),
            "{}: {stderr}",
            cfg.display()
        );
    }
}

#[test]
fn every_policy_pack_validates_as_a_policy_dir() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let mut files = Vec::new();
    yaml_files(&root, &mut files);
    assert!(!files.is_empty());
    for file in files {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("p")).unwrap();
        std::fs::copy(&file, dir.path().join("p").join(file.file_name().unwrap())).unwrap();
        let cfg = common::write_config(dir.path(), "policy_dir: p\n");
        let (code, stdout, stderr) = run(&["validate", "--config", cfg.to_str().unwrap()]);
        assert_eq!(
            (code, stdout.trim()),
            (0, "ok"),
            "{}: {stderr}",
            file.display()
        );
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let path = entry.expect("dir entry").path();
        let target = to.join(path.file_name().expect("file name"));
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).expect("copy");
        }
    }
}

#[test]
fn quickstart_runs_out_of_the_box() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart");
    copy_dir(&root, dir.path());
    let config = dir.path().join("mesh7.yaml");
    let d = Daemon::spawn(dir, &config, &[("MESH7_TRACE_FILE", "traces.jsonl")]);

    let (status, body) = d.call("claude", "echo.run", &json!({"args": ["hello", "mesh7"]}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["stdout"], "hello mesh7\n");
    let (status, body) = d.call("claude", "echo.run", &json!({"args": ["my", "secret"]}));
    assert_eq!(status, 403, "{body}");
    let (status, body) = d.call("claude", "date.run", &json!({"args": ["-u"]}));
    assert_eq!(status, 200, "{body}");
    let (status, body) = d.call("claude", "date.run", &json!({"args": ["--set=2000-01-01"]}));
    assert_eq!(status, 502, "{body}");
    let (status, body) = d.post_with(
        "/tool/ls.run",
        &[
            ("Authorization", "Bearer agent:claude"),
            ("Prefer", "respond-async"),
        ],
        "{}",
    );
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["policy"], "human_approval");
    // The policy_dir file applies to its agent.
    let (status, body) = d.call("readonly-bot", "echo.run", &json!({"args": ["hi"]}));
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body["error"],
        "policy=readonly-bot tool=echo.run action=deny"
    );
    let (status, body) = d.decide("claude", "rm.run", &json!({}));
    assert_eq!(status, 403, "{body}");
}
