//! The `mesh7` command line: `validate`, `--version`, `--help`, and start-up failures.

mod common;

use common::{run, write_config};

#[test]
fn validate_prints_ok_for_a_good_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "policies:\n  - name: p\n    agent: \"*\"\n    rules:\n      - tools: [\"*\"]\n        action: deny\n",
    );
    let (code, stdout, _) = run(&["validate", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert_eq!(stdout.trim(), "ok");
}

#[test]
fn validate_reports_every_error_with_its_path_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        r#"policies:
  - name: a
    rules:
      - tools: ["x"]
        action: allow
  - name: b
    rules:
      - tools: ["x"]
        acton: allow
  - name: c
    rules:
      - tools: ["x"]
        action: alow
"#,
    );
    let (code, stdout, stderr) = run(&["validate", "--config", cfg.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(!stdout.contains("ok"));
    assert!(stderr.contains("policies[1].rules[0].acton"), "{stderr}");
    assert!(stderr.contains("policies[2].rules[0].action"), "{stderr}");
}

#[test]
fn serve_refuses_a_bad_config_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "prot: 9090\n");
    let (code, _, stderr) = run(&["serve", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("load config"), "{stderr}");
    assert!(stderr.contains("prot"), "{stderr}");
}

#[test]
fn serve_refuses_a_missing_config_file() {
    let (code, _, stderr) = run(&["serve", "--config", "does/not/exist.yaml"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("does/not/exist.yaml"), "{stderr}");
}

#[test]
fn a_trace_file_that_cannot_be_opened_stops_the_start_up_naming_its_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "trace_file: \"{dir}/missing/traces.jsonl\"\n");
    let (code, stderr) = serve_on_loopback(&cfg);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("missing/traces.jsonl"), "{stderr}");
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "{stderr}"
    );
}

#[test]
fn serve_refuses_settings_it_cannot_honour_rather_than_ignoring_them() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "tls:\n  cert_file: cert.pem\n  key_file: key.pem\n",
    );
    let (code, stderr) = serve_on_loopback(&cfg);
    assert_eq!(code, 1);
    assert!(stderr.contains("tls"), "{stderr}");
}

/// `mesh7 serve` on `cfg` and a free loopback port, for a start-up expected to fail: (exit
/// code, stderr).
fn serve_on_loopback(cfg: &std::path::Path) -> (i32, String) {
    let (code, _, stderr) = run(&[
        "serve",
        "--config",
        cfg.to_str().expect("a UTF-8 temp path"),
        "--listen",
        "127.0.0.1:0",
    ]);
    (code, stderr)
}

#[test]
fn version_and_help() {
    let (code, stdout, _) = run(&["--version"]);
    assert_eq!(code, 0);
    assert!(
        stdout.starts_with(&format!("mesh7 {} (", env!("CARGO_PKG_VERSION"))),
        "{stdout}"
    );
    let (code, stdout, _) = run(&["--help"]);
    assert_eq!(code, 0);
    for word in ["serve", "validate", "--config"] {
        assert!(stdout.contains(word), "{stdout}");
    }
    let (code, _, stderr) = run(&["frobnicate"]);
    assert_ne!(code, 0);
    assert!(!stderr.is_empty());
}
