//! The `mesh` approval CLI against a real `mesh7 serve`: texts, table, exit codes, the admin
//! token, and `watch` driven through a real pseudo-terminal (util-linux `script`).
//!
//! Pending approvals come from `POST /tool/echo.run` with `Prefer: respond-async` under a
//! `human_approval` rule, so every flow below runs on the daemon's own approval queue.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::Daemon;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const MESH: &str = env!("CARGO_BIN_EXE_mesh");

/// `echo.run` needs a human; the queue channel so the daemon never prompts on a terminal.
const GATED: &str = r#"
approval:
  timeout_seconds: 300
  channel: queue
cli_tools:
  - { name: echo, bin: echo, bare: { timeout: 5s } }
policies:
  - name: gate
    agent: "*"
    rules:
      - { tools: ["echo.run"], action: human_approval }
"#;

const GATED_WITH_TOKEN: &str = r#"
auth:
  admin_token: s3cret
approval:
  timeout_seconds: 300
  channel: queue
cli_tools:
  - { name: echo, bin: echo, bare: { timeout: 5s } }
policies:
  - name: gate
    agent: "*"
    rules:
      - { tools: ["echo.run"], action: human_approval }
"#;

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Runs `mesh <args>` against `url` (as `MESH_URL`) with `USER=tester`, bounded to 60 s.
fn mesh(url: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    runtime().block_on(async {
        let mut cmd = tokio::process::Command::new(MESH);
        cmd.args(args)
            .env("MESH_URL", url)
            .env("USER", "tester")
            .env_remove("MESH_ADMIN_TOKEN")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
            .await
            .expect("mesh finished within 60 s")
            .expect("run mesh");
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
}

/// A tool call that needs a human, answered at once with 202 and the approval id.
fn ask(d: &Daemon, agent: &str, word: &str) -> String {
    let auth = format!("Bearer agent:{agent}");
    let (status, body) = d.post_with(
        "/tool/echo.run",
        &[("Authorization", &auth), ("Prefer", "respond-async")],
        &format!(r#"{{"params": {{"args": ["{word}"]}}}}"#),
    );
    assert_eq!(status, 202, "{body}");
    let id = body["approval_id"]
        .as_str()
        .expect("approval_id")
        .to_owned();
    assert_eq!(id.len(), 16, "{id}");
    id
}

fn approval(d: &Daemon, id: &str) -> Value {
    let (status, body) = d.get(&format!("/approvals/{id}"), None);
    assert_eq!(status, 200, "{body}");
    body
}

/// `4m59s`, `0s`: Go's duration text at second precision.
fn is_go_duration(s: &str) -> bool {
    s.ends_with('s')
        && s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_digit() || "hms".contains(c))
}

/// A URL on 127.0.0.1 where nothing listens.
fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

#[test]
fn unreachable_daemon_exits_2_naming_the_url() {
    let url = closed_port_url();
    for args in [
        &["pending"][..],
        &["pending", "--json"],
        &["show", "0123abcd"],
        &["approve", "0123abcd"],
        &["deny", "0123abcd", "--reason", "no"],
    ] {
        let out = mesh(&url, args, &[]);
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(out.stdout.is_empty(), "{args:?}: {}", out.stdout);
        assert!(
            out.stderr
                .starts_with(&format!("cannot reach mesh7 at {url}: ")),
            "{args:?}: {}",
            out.stderr
        );
    }
}

#[test]
fn usage_errors_exit_1_with_usage_on_stderr() {
    let url = closed_port_url();
    for args in [
        &[][..],
        &["show"],
        &["approve"],
        &["deny"],
        &["frobnicate"],
        &["deny", "0123abcd", "--reason"],
        &["pending", "extra"],
        &["show", "../grants"],
        &["approve", ""],
        &["approve", "0123abcd", "--max-calls", "2"],
        &["approve", "0123abcd", "--grant", "1h", "--max-calls", "0"],
        &["deny", "0123abcd", "--grant", "1h"],
        &["grant", "--agent", "bot", "--tools", "echo.run"],
        &["grant", "--tools", "echo.run", "--duration", "1h"],
        &["grant", "--agent", "bot", "--parent", "../x"],
        &["revoke"],
        &["revoke", "../halts"],
    ] {
        let out = mesh(&url, args, &[]);
        assert_eq!(out.code, 1, "{args:?}: {}", out.stderr);
        assert!(out.stdout.is_empty(), "{args:?}: {}", out.stdout);
        assert!(out.stderr.contains("--help"), "{args:?}: {}", out.stderr);
    }
    let out = mesh(&url, &["--url", "localhost:9090", "pending"], &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("invalid mesh7 URL"), "{}", out.stderr);

    let out = mesh(&url, &["--help"], &[]);
    assert_eq!(out.code, 0);
    for word in ["pending", "show", "approve", "deny", "watch", "MESH_URL"] {
        assert!(out.stdout.contains(word), "{word}: {}", out.stdout);
    }
}

#[test]
fn an_unexpected_status_exits_2_with_the_api_error() {
    let d = Daemon::start(GATED);
    let out = mesh(&format!("{}/elsewhere", d.url), &["pending"], &[]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert_eq!(out.stderr.trim(), "unexpected status: 404 (not found)");
}

#[test]
fn pending_with_none_says_so() {
    let d = Daemon::start(GATED);
    let out = mesh(&d.url, &["pending"], &[]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "no pending approvals\n"),
        "{}",
        out.stderr
    );
    let out = mesh(&d.url, &["pending", "--json"], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        serde_json::from_str::<Value>(&out.stdout).unwrap(),
        Value::Array(vec![])
    );
}

#[test]
fn admin_token_is_required_when_the_daemon_sets_one() {
    let d = Daemon::start(GATED_WITH_TOKEN);
    let out = mesh(&d.url, &["pending"], &[]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(out.stderr.contains("401"), "{}", out.stderr);
    assert!(
        out.stderr.contains("set MESH_ADMIN_TOKEN"),
        "{}",
        out.stderr
    );

    let out = mesh(
        &d.url,
        &["approve", "0123abcd"],
        &[("MESH_ADMIN_TOKEN", "wrong")],
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("refused MESH_ADMIN_TOKEN"),
        "{}",
        out.stderr
    );

    let out = mesh(&d.url, &["pending"], &[("MESH_ADMIN_TOKEN", "s3cret")]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "no pending approvals\n"),
        "{}",
        out.stderr
    );
}

#[test]
fn admin_token_lets_the_cli_approve() {
    let d = Daemon::start(GATED_WITH_TOKEN);
    let id = ask(&d, "bot", "guarded");
    let out = mesh(&d.url, &["approve", &id], &[("MESH_ADMIN_TOKEN", "s3cret")]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, format!("Approved: {id}\n"));
    let (status, body) = d.get(&format!("/approvals/{id}"), Some("Bearer s3cret"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "approved");
}

#[test]
fn pending_prints_flux7s_table_most_recent_first() {
    let d = Daemon::start(GATED);
    let first = ask(&d, "bot", "one");
    let second = ask(&d, "support-bot", "two");
    let out = mesh(&d.url, &["pending"], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    let header = lines[0];
    let columns: Vec<usize> = ["ID", "AGE", "AGENT", "TOOL", "REMAINING"]
        .iter()
        .map(|c| header.find(c).expect("column"))
        .collect();
    assert_eq!(columns[0], 0, "{header}");
    for (row, (id, agent)) in lines[1..]
        .iter()
        .zip([(&second, "support-bot"), (&first, "bot")])
    {
        // Every cell starts under its heading, after at least two spaces.
        for &c in &columns[1..] {
            assert_eq!(&row[c - 2..c], "  ", "{row}");
            assert_ne!(&row[c..=c], " ", "{row}");
        }
        assert_eq!(&row[..columns[1]], format!("{}  ", &id[..8]), "{row}");
        assert!(row[columns[2]..].starts_with(&format!("{agent} ")), "{row}");
        assert!(row[columns[3]..].starts_with("echo.run "), "{row}");
        let age = row[columns[1]..columns[2]].trim();
        assert!(is_go_duration(age), "{row}");
        let remaining = &row[columns[4]..];
        assert!(
            remaining.starts_with("4m") && is_go_duration(remaining),
            "{row}"
        );
    }
}

#[test]
fn pending_json_is_the_api_list() {
    let d = Daemon::start(GATED);
    let id = ask(&d, "bot", "raw");
    let out = mesh(&d.url, &["pending", "--json"], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let list: Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["agent_id"], "bot");
    assert_eq!(list[0]["params"]["args"][0], "raw");
}

#[test]
fn show_prints_the_details_of_an_approval() {
    let d = Daemon::start(GATED);
    let id = ask(&d, "bot", "one");
    let out = mesh(&d.url, &["show", &id[..8]], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], format!("ID:       {id}"), "{}", out.stdout);
    assert_eq!(lines[1], "Agent:    bot");
    assert_eq!(lines[2], "Tool:     echo.run");
    assert!(lines[3].starts_with("Policy:   "), "{}", out.stdout);
    assert_eq!(lines[4], "Status:   pending");
    let age = lines[5].strip_prefix("Age:      ").expect("Age line");
    assert!(is_go_duration(age), "{}", out.stdout);
    let timeout = lines[6].strip_prefix("Timeout:  ").expect("Timeout line");
    let remaining = timeout.strip_suffix(" remaining").expect("remaining");
    assert!(
        remaining.starts_with("4m") && is_go_duration(remaining),
        "{}",
        out.stdout
    );
    assert_eq!(
        &lines[7..],
        ["Params:", "  args: [\"one\"]"],
        "{}",
        out.stdout
    );

    let out = mesh(&d.url, &["show", &id, "--json"], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let view: Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(view["id"], id.as_str());
    assert_eq!(view["status"], "pending");
}

#[test]
fn approve_resolves_as_the_cli_user_and_a_second_time_exits_1() {
    let d = Daemon::start(GATED);
    let id = ask(&d, "bot", "go");
    let short = &id[..8];
    let out = mesh(&d.url, &["approve", short], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, format!("Approved: {short}\n"));
    let view = approval(&d, &id);
    assert_eq!(view["status"], "approved");
    assert_eq!(view["resolved_by"], "cli:tester");

    for verb in ["approve", "deny"] {
        let out = mesh(&d.url, &[verb, short], &[]);
        assert_eq!(out.code, 1, "{verb}: {}", out.stderr);
        assert!(out.stdout.is_empty(), "{}", out.stdout);
        assert_eq!(out.stderr, format!("approval {short} already resolved\n"));
    }
}

#[test]
fn approve_with_a_grant_lets_the_agents_next_calls_through() {
    let d = Daemon::start(GATED);
    let id = ask(&d, "bot", "go");
    let short = &id[..8];
    // A grant the daemon refuses leaves the approval pending.
    let out = mesh(&d.url, &["approve", short, "--grant", "25h"], &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(out.stderr, "refused: duration exceeds maximum (24h0m0s)\n");
    assert_eq!(approval(&d, &id)["status"], "pending");

    let out = mesh(
        &d.url,
        &["approve", short, "--grant", "30m", "--max-calls", "2"],
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let (_, grants) = d.get("/grants", None);
    let grant = &grants[0];
    assert_eq!(
        (&grant["agent"], &grant["tools"], &grant["granted_by"]),
        (&json!("bot"), &json!("echo.run"), &json!("cli:tester")),
        "{grant}"
    );
    let grant_id = grant["id"].as_str().expect("grant id");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], format!("Approved: {short}"));
    let granted = lines[1]
        .strip_prefix("Granted bot echo.run for ")
        .and_then(|rest| rest.strip_suffix(&format!(" (grant {grant_id}, at most 2 calls)")))
        .unwrap_or_else(|| panic!("{}", out.stdout));
    assert!(is_go_duration(granted), "{granted}");

    for word in ["again", "more"] {
        let (status, body) = d.post_with(
            "/tool/echo.run",
            &[
                ("Authorization", "Bearer agent:bot"),
                ("Prefer", "respond-async"),
            ],
            &format!(r#"{{"params": {{"args": ["{word}"]}}}}"#),
        );
        assert_eq!(status, 200, "{word}: {body}");
    }
    ask(&d, "bot", "used-up");
}

#[test]
fn grants_are_made_listed_delegated_and_revoked_from_a_terminal() {
    let d = Daemon::start(GATED);
    let out = mesh(&d.url, &["grants"], &[]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "no grants\n"));
    let out = mesh(
        &d.url,
        &[
            "grant",
            "--agent",
            "lead",
            "--tools",
            "echo.run",
            "--duration",
            "1h",
            "--max-calls",
            "5",
        ],
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let (_, list) = d.get("/grants", None);
    let root = list[0]["id"].as_str().expect("grant id").to_owned();
    assert_eq!(list[0]["granted_by"], "cli:tester", "{list}");
    let line = out.stdout.trim_end();
    assert!(
        line.starts_with("Granted lead echo.run for ")
            && line.ends_with(&format!(" (grant {root}, at most 5 calls)")),
        "{line}"
    );
    let out = mesh(
        &d.url,
        &[
            "grant",
            "--agent",
            "sub",
            "--parent",
            &root[..6],
            "--max-calls",
            "2",
        ],
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .trim_end()
            .ends_with(&format!(", at most 2 calls, from {root})")),
        "{}",
        out.stdout
    );
    let child = d.get("/grants", None).1[1]["id"]
        .as_str()
        .expect("child")
        .to_owned();

    // The delegated grant lets `sub` run the tool; both count it.
    let (status, body) = d.post_with(
        "/tool/echo.run",
        &[
            ("Authorization", "Bearer agent:sub"),
            ("Prefer", "respond-async"),
        ],
        r#"{"params": {"args": ["delegated"]}}"#,
    );
    assert_eq!(status, 200, "{body}");
    let out = mesh(&d.url, &["grants"], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rows: Vec<Vec<&str>> = out
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        ["ID", "AGENT", "TOOLS", "REMAINING", "CALLS", "FROM", "BY"]
    );
    assert_eq!(
        (rows[1][0], rows[1][1], rows[1][4], rows[1][5]),
        (root.as_str(), "lead", "1/5", "-")
    );
    assert_eq!(
        (rows[2][0], rows[2][1], rows[2][4], rows[2][5]),
        (child.as_str(), "sub", "1/2", root.as_str())
    );
    let out = mesh(&d.url, &["grants", "--json"], &[]);
    let listed: Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(listed.as_array().map(Vec::len), Some(2));

    // Refusals exit 1 with the daemon's reason; nothing is made.
    for (args, reason) in [
        (
            vec![
                "grant",
                "--agent",
                "bot",
                "--tools",
                "*",
                "--duration",
                "25h",
            ],
            "refused: duration exceeds maximum (24h0m0s)",
        ),
        (
            vec!["grant", "--agent", "sub-*", "--parent", root.as_str()],
            "refused: a delegated grant is for one agent: \"sub-*\" is a pattern",
        ),
        (
            vec!["grant", "--agent", "sub", "--parent", "0123456789abcdef"],
            "refused: parent grant not found",
        ),
        (
            vec!["revoke", "0123456789abcdef"],
            "refused: grant not found",
        ),
    ] {
        let out = mesh(&d.url, &args, &[]);
        assert_eq!((out.code, out.stderr.trim_end()), (1, reason), "{args:?}");
    }
    assert_eq!(d.get("/grants", None).1.as_array().map(Vec::len), Some(2));

    let out = mesh(&d.url, &["revoke", &root[..8]], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        format!(
            "Revoked: {}\n  with the grants delegated from it: {child}\n",
            &root[..8]
        )
    );
    assert_eq!(d.get("/grants", None).1, Value::Array(Vec::new()));
}

#[test]
fn deny_with_a_reason_records_it_as_reasoning() {
    let d = Daemon::start(GATED);
    let id = ask(&d, "bot", "risky");
    let out = mesh(&d.url, &["deny", &id, "--reason", "too risky"], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, format!("Denied: {id}\n"));
    let view = approval(&d, &id);
    assert_eq!(view["status"], "denied");
    assert_eq!(view["resolved_by"], "cli:tester");
    assert_eq!(view["reasoning"], "too risky");

    let out = mesh(&d.url, &["show", &id], &[]);
    assert!(
        out.stdout.contains("\nStatus:   denied\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("\nReason:   too risky\n"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("Timeout:"), "{}", out.stdout);
}

#[test]
fn unknown_approval_exits_1_not_found() {
    let d = Daemon::start(GATED);
    let _ = ask(&d, "bot", "unrelated");
    for verb in ["show", "approve", "deny"] {
        let out = mesh(&d.url, &[verb, "ffffffffffffffff"], &[]);
        assert_eq!(out.code, 1, "{verb}: {}", out.stderr);
        assert!(out.stdout.is_empty(), "{verb}: {}", out.stdout);
        assert_eq!(
            out.stderr, "approval ffffffffffffffff not found\n",
            "{verb}"
        );
    }
}

/// `mesh watch` inside `script`, so it runs on a real pseudo-terminal.
struct Terminal {
    rt: tokio::runtime::Runtime,
    child: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
    stdout: tokio::process::ChildStdout,
    raw: Vec<u8>,
    seen: String,
    pos: usize,
}

impl Terminal {
    fn watch(url: &str) -> Terminal {
        let rt = runtime();
        let _guard = rt.enter();
        let mut child = tokio::process::Command::new("script")
            // `exec`: whatever shell `script` starts must not stay in between, or a ^C kills
            // the shell rather than reaching `mesh` (dash, for one, does not exec by itself).
            .args(["-qfec", &format!("exec '{MESH}' watch"), "/dev/null"])
            .env("MESH_URL", url)
            .env("USER", "tester")
            .env_remove("MESH_ADMIN_TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the `script` utility (util-linux) runs `mesh watch` on a pseudo-terminal");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout piped");
        Terminal {
            rt,
            child,
            stdin,
            stdout,
            raw: Vec::new(),
            seen: String::new(),
            pos: 0,
        }
    }

    /// Waits (bounded) until `needle` appears after what was already matched; returns the text
    /// between the previous match and the end of this one.
    fn expect(&mut self, needle: &str) -> String {
        let deadline = Duration::from_secs(30);
        let found = self.rt.block_on(async {
            tokio::time::timeout(deadline, async {
                let mut chunk = [0u8; 4096];
                loop {
                    if let Some(i) = self.seen[self.pos..].find(needle) {
                        return Some(self.pos + i + needle.len());
                    }
                    let n = self.stdout.read(&mut chunk).await.ok()?;
                    if n == 0 {
                        return None;
                    }
                    // Decoded whole, so a character split across reads is not mangled.
                    self.raw.extend_from_slice(&chunk[..n]);
                    self.seen = String::from_utf8_lossy(&self.raw).into_owned();
                }
            })
            .await
        });
        match found {
            Ok(Some(end)) => {
                let text = self.seen[self.pos..end].to_owned();
                self.pos = end;
                text
            }
            _ => panic!("no {needle:?} on the terminal; it shows:\n{}", self.seen),
        }
    }

    fn type_line(&mut self, line: &str) {
        self.type_bytes(format!("{line}\n").as_bytes());
    }

    fn type_bytes(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("terminal input open");
        self.rt.block_on(async {
            stdin.write_all(bytes).await.expect("type");
            stdin.flush().await.expect("flush");
        });
    }

    /// Ends the input and waits (bounded) for the exit status.
    fn close(&mut self) -> Option<i32> {
        self.stdin = None;
        self.rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(20), self.child.wait())
                .await
                .expect("watch ended with its input")
                .expect("wait")
                .code()
        })
    }
}

const PROMPT: &str = "[a]pprove / [d]eny / [s]kip ? ";

#[test]
fn watch_prompts_on_a_terminal_and_resolves_what_is_typed() {
    let d = Daemon::start(GATED);
    let first = ask(&d, "bot", "first-call");
    let mut term = Terminal::watch(&d.url);

    let shown = term.expect(PROMPT);
    assert!(
        shown.contains("mesh watch — waiting for approvals (ctrl+c to quit)"),
        "{shown}"
    );
    assert!(shown.contains(">> NEW"), "{shown}");
    assert!(
        shown.contains(&format!("  {}  bot  echo.run", &first[..8])),
        "{shown}"
    );
    assert!(shown.contains("args: [\"first-call\"]"), "{shown}");
    assert!(shown.contains("remaining: 4m"), "{shown}");

    term.type_line("maybe");
    term.expect("type a, d, or s");
    term.expect(PROMPT);
    term.type_line("a");
    term.expect("  Approved");
    let view = approval(&d, &first);
    assert_eq!(view["status"], "approved");
    assert_eq!(view["resolved_by"], "cli:tester");

    // A request arriving while watching shows up at the next poll.
    let second = ask(&d, "bot", "second-call");
    let shown = term.expect(PROMPT);
    assert!(
        shown.contains(&format!("  {}  bot  echo.run", &second[..8])),
        "{shown}"
    );
    term.type_line("s");
    let third = ask(&d, "bot", "third-call");
    let shown = term.expect(PROMPT);
    assert!(shown.contains(&third[..8]), "{shown}");
    assert!(
        !shown.contains(&second[..8]),
        "a skipped approval is not asked again: {shown}"
    );
    term.type_line("deny");
    term.expect("  Denied");
    assert_eq!(approval(&d, &third)["status"], "denied");
    assert_eq!(approval(&d, &second)["status"], "pending");

    // Resolved elsewhere while the prompt waits: the answer reports it.
    let fourth = ask(&d, "bot", "fourth-call");
    term.expect(&fourth[..8]);
    term.expect(PROMPT);
    let (status, body) = d.post(&format!("/approvals/{fourth}/deny"), None, "{}");
    assert_eq!(status, 200, "{body}");
    term.type_line("a");
    term.expect("  already resolved");

    assert_eq!(approval(&d, &fourth)["status"], "denied");

    // End of input ends the watch cleanly.
    assert_eq!(term.close(), Some(0), "{}", term.seen);
}

#[test]
fn watch_ends_cleanly_on_ctrl_c() {
    let d = Daemon::start(GATED);
    let mut term = Terminal::watch(&d.url);
    term.expect("waiting for approvals (ctrl+c to quit)");
    // The terminal turns ^C into SIGINT for the foreground process.
    term.type_bytes(b"\x03");
    let code = term.rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(20), term.child.wait())
            .await
            .expect("watch ended on ctrl+c")
            .expect("wait")
            .code()
    });
    assert_eq!(code, Some(0), "{}", term.seen);
}

#[test]
fn halt_lists_and_lifts_an_emergency_stop() {
    let d = Daemon::start(GATED);
    let o = mesh(&d.url, &["halts"], &[]);
    assert_eq!(
        (o.code, o.stdout.as_str()),
        (0, "no halts\n"),
        "{}",
        o.stderr
    );

    let o = mesh(
        &d.url,
        &["halt", "--agent", "claude", "--reason", "runaway loop"],
        &[],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    let id = o
        .stdout
        .trim()
        .strip_prefix("Halted agent claude: ")
        .unwrap_or_else(|| panic!("{}", o.stdout))
        .to_owned();
    assert_eq!(id.len(), 16, "{}", o.stdout);
    // In effect: the gated call is denied at once instead of waiting for a human.
    let (status, body) = d.call("claude", "echo.run", &serde_json::json!({"args": ["x"]}));
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body["error"], "halted by cli:tester: runaway loop",
        "{body}"
    );

    let o = mesh(&d.url, &["halts"], &[]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", o.stdout);
    assert!(lines[0].starts_with("ID  "), "{}", o.stdout);
    assert!(
        lines[1].starts_with(&format!("{id}  agent  claude  ")),
        "{}",
        o.stdout
    );
    assert!(
        lines[1].ends_with("cli:tester  runaway loop"),
        "{}",
        o.stdout
    );
    let o = mesh(&d.url, &["halts", "--json"], &[]);
    let listed: Value = serde_json::from_str(&o.stdout).expect("JSON");
    assert_eq!(listed[0]["id"], id.as_str());

    let o = mesh(&d.url, &["lift", &id], &[]);
    assert_eq!(
        (o.code, o.stdout.trim()),
        (0, format!("Lifted: {id}").as_str())
    );
    let o = mesh(&d.url, &["lift", &id], &[]);
    assert_eq!(o.code, 1, "{}", o.stdout);
    assert_eq!(o.stderr.trim(), format!("halt {id} not found"));

    // Usage: exactly one scope; an id that is not one.
    let o = mesh(&d.url, &["lift", "../approvals"], &[]);
    assert_eq!(o.code, 1, "{}", o.stdout);
    assert!(o.stderr.contains("expected a halt id"), "{}", o.stderr);
    let o = mesh(&d.url, &["halt"], &[]);
    assert_eq!(o.code, 1, "{}", o.stdout);
    assert!(o.stderr.contains("--agent"), "{}", o.stderr);
    let o = mesh(&d.url, &["halt", "--agent", "a", "--all"], &[]);
    assert_eq!(o.code, 1, "{}", o.stdout);
    // Refused by the daemon: said with its reason.
    let o = mesh(&d.url, &["halt", "--agent", " "], &[]);
    assert_eq!(o.code, 1, "{}", o.stdout);
    assert_eq!(
        o.stderr.trim(),
        "refused: the agent or session to halt is empty"
    );
    assert_eq!(d.get("/halts", None).1, serde_json::json!([]));
}

#[test]
fn taint_lists_labelled_sessions_and_untaint_clears_one() {
    let d = Daemon::start(
        r#"
cli_tools:
  - { name: echo, bin: echo, bare: { timeout: 5s } }
  - { name: writer, bin: touch, bare: { timeout: 5s } }
taint:
  sources: [{ tools: ["echo.run"], label: web }]
policies:
  - name: guard
    agent: "*"
    rules:
      - { tools: ["writer.run"], tainted: [web], action: deny }
      - { tools: ["*"], action: allow }
"#,
    );
    let o = mesh(&d.url, &["taint"], &[]);
    assert_eq!(
        (o.code, o.stdout.as_str()),
        (0, "no labelled sessions\n"),
        "{}",
        o.stderr
    );
    let echo = |session: &str| {
        d.post_with(
            "/tool/echo.run",
            &[
                ("Authorization", "Bearer agent:claude"),
                ("X-Session-Id", session),
            ],
            &serde_json::json!({"params": {"args": ["page"]}}).to_string(),
        )
    };
    assert_eq!(echo("s-1").0, 200);

    let o = mesh(&d.url, &["taint"], &[]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", o.stdout);
    assert!(
        lines[0].starts_with("AGENT   SESSION  LABEL  BY TOOL"),
        "{}",
        o.stdout
    );
    assert!(
        lines[1].starts_with("claude  s-1      web    echo.run "),
        "{}",
        o.stdout
    );
    let o = mesh(&d.url, &["taint", "--agent", "cursor"], &[]);
    assert_eq!(o.stdout, "no labelled sessions\n", "{}", o.stderr);
    let o = mesh(&d.url, &["taint", "--json"], &[]);
    let listed: Value = serde_json::from_str(&o.stdout).expect("JSON");
    assert_eq!(listed[0]["session"], "s-1");

    let o = mesh(
        &d.url,
        &["untaint", "--agent", "claude", "--session", "s-1"],
        &[],
    );
    assert_eq!(
        (o.code, o.stdout.trim()),
        (0, r#"Cleared: claude "s-1""#),
        "{}",
        o.stderr
    );
    assert_eq!(d.get("/taint", None).1, serde_json::json!([]));
    // Bad input: nothing to clear, an empty agent, a missing argument.
    let o = mesh(
        &d.url,
        &["untaint", "--agent", "claude", "--session", "s-1"],
        &[],
    );
    assert_eq!(o.code, 1, "{}", o.stdout);
    assert_eq!(
        o.stderr.trim(),
        r#"refused: session "s-1" of claude has no labels"#
    );
    let o = mesh(&d.url, &["untaint", "--agent", "", "--session", "s-1"], &[]);
    assert_eq!(o.code, 1, "{}", o.stdout);
    assert_eq!(o.stderr.trim(), "refused: agent must not be empty");
    let o = mesh(&d.url, &["untaint", "--agent", "claude"], &[]);
    assert_eq!(o.code, 1, "{}", o.stdout);
    assert!(o.stderr.contains("--session"), "{}", o.stderr);
}
