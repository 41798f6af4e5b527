//! Tests of the CLI catalog, resolution and argument validation (pure), then of the executor
//! running real binaries.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use serde_json::json;

use super::*;

fn command(allowed: Option<&[&str]>) -> CliCommandConfig {
    CliCommandConfig {
        allowed_args: allowed.map(|a| a.iter().map(|s| (*s).to_owned()).collect()),
        timeout: None,
    }
}

fn cli(name: &str, bin: &str) -> CliToolConfig {
    CliToolConfig {
        name: name.to_owned(),
        bin: bin.to_owned(),
        ..CliToolConfig::default()
    }
}

/// `gh` (fine-tuned, non-strict), `kubectl` (strict), `jq` (bare), `git` (simple).
fn catalog() -> CliCatalog {
    let gh = CliToolConfig {
        commands: BTreeMap::from([
            ("pr".to_owned(), command(Some(&["--state", "-L"]))),
            ("issue".to_owned(), command(None)),
        ]),
        ..cli("gh", "gh")
    };
    let kubectl = CliToolConfig {
        strict: true,
        commands: BTreeMap::from([("get".to_owned(), command(Some(&[])))]),
        ..cli("kubectl", "kubectl")
    };
    let jq = CliToolConfig {
        bare: Some(command(None)),
        ..cli("jq", "jq")
    };
    CliCatalog::from_config(&[gh, kubectl, jq, cli("git", "git")]).unwrap()
}

#[test]
fn registers_flux7s_tool_names_and_descriptions() {
    let catalog = catalog();
    let got: Vec<(&str, CliKind, &str)> = catalog
        .tools()
        .iter()
        .map(|t| (t.name.as_str(), t.kind, t.description.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("gh.issue", CliKind::Command, "Run gh issue"),
            ("gh.pr", CliKind::Command, "Run gh pr"),
            (
                "gh.__dispatch",
                CliKind::CatchAll,
                "Run gh <command> (any subcommand)"
            ),
            ("kubectl.get", CliKind::Command, "Run kubectl get"),
            ("jq.run", CliKind::Bare, "Run jq"),
            (
                "git.__dispatch",
                CliKind::CatchAll,
                "Run git <command> (any subcommand)"
            ),
        ]
    );
    let pr = &catalog.tools()[1];
    assert_eq!(pr.timeout, Duration::from_secs(30));
    assert_eq!(pr.max_output_bytes, 1 << 20);
    assert_eq!(pr.allowed_args, Some(vec!["--state".into(), "-L".into()]));
    assert_eq!(
        catalog.tools()[2].input_schema["required"],
        json!(["command"])
    );
    assert!(pr.input_schema.get("required").is_none());
}

#[test]
fn env_values_stay_out_of_debug_output() {
    let config = CliToolConfig {
        env: BTreeMap::from([("GH_TOKEN".to_owned(), "s3cret".to_owned())]),
        ..cli("gh", "gh")
    };
    let catalog = CliCatalog::from_config(&[config]).unwrap();
    let debug = format!("{:?}", catalog.tools()[0]);
    assert!(debug.contains("GH_TOKEN"));
    assert!(!debug.contains("s3cret"));
}

#[test]
fn rejects_bad_entries_with_flux7s_texts() {
    let cases = [
        (vec![cli("", "gh")], "cli_tools[0]: name is required"),
        (vec![cli("gh", "")], "cli_tools[0] (gh): bin is required"),
        (
            vec![cli("gh", "gh"), cli("gh", "gh2")],
            "cli_tools[1]: duplicate name \"gh\"",
        ),
        (
            vec![CliToolConfig {
                bare: Some(command(None)),
                commands: BTreeMap::from([("pr".to_owned(), command(None))]),
                ..cli("gh", "gh")
            }],
            "cli_tools[0] (gh): bare and commands are mutually exclusive",
        ),
        (
            vec![CliToolConfig {
                bare: Some(command(None)),
                strict: true,
                ..cli("gh", "gh")
            }],
            "cli_tools[0] (gh): strict has no meaning in bare mode",
        ),
        (
            vec![CliToolConfig {
                strict: true,
                ..cli("gh", "gh")
            }],
            "cli_tools[0] (gh): strict mode requires at least one declared command",
        ),
        (
            vec![CliToolConfig {
                commands: BTreeMap::from([("pr.list".to_owned(), command(None))]),
                ..cli("gh", "gh")
            }],
            "cli_tools[0] (gh): command \"pr.list\" must be a single word",
        ),
    ];
    for (configs, want) in cases {
        assert_eq!(CliCatalog::from_config(&configs).unwrap_err(), want);
    }
}

#[test]
fn rejects_unparsable_timeouts() {
    let bad = CliCommandConfig {
        allowed_args: None,
        timeout: Some("soon".to_owned()),
    };
    let as_command = CliToolConfig {
        commands: BTreeMap::from([("pr".to_owned(), bad.clone())]),
        ..cli("gh", "gh")
    };
    let as_bare = CliToolConfig {
        bare: Some(bad),
        ..cli("jq", "jq")
    };
    for (config, prefix) in [
        (
            as_command,
            "cli_tools[0] (gh): command \"pr\" has invalid timeout \"soon\": ",
        ),
        (
            as_bare,
            "cli_tools[0] (jq): bare has invalid timeout \"soon\": ",
        ),
    ] {
        let err = CliCatalog::from_config(&[config]).unwrap_err();
        assert!(err.starts_with(prefix), "{err}");
    }
}

/// What a resolution should give: the effective name, the subcommand, and the tool whose
/// settings apply.
enum Want {
    Runs(&'static str, &'static [&'static str], &'static str),
    Refused(&'static str),
    NotCli,
}

#[test]
fn resolution_derives_what_runs_from_the_evaluated_name() {
    let catalog = catalog();
    let cases = [
        ("gh.pr", json!({}), Want::Runs("gh.pr", &["pr"], "gh.pr")),
        (
            "gh.pr",
            json!({"command": "pr"}),
            Want::Runs("gh.pr", &["pr"], "gh.pr"),
        ),
        (
            "gh.pr",
            json!({"command": "issue"}),
            Want::Refused("does not match tool \"gh.pr\""),
        ),
        // The catch-all: the effective name comes from `command`.
        (
            "gh.__dispatch",
            json!({"command": "pr"}),
            Want::Runs("gh.pr", &["pr"], "gh.pr"),
        ),
        (
            "gh.__dispatch",
            json!({"command": "repo"}),
            Want::Runs("gh.repo", &["repo"], "gh.__dispatch"),
        ),
        (
            "gh.__dispatch",
            json!({}),
            Want::Refused("\"command\" is required"),
        ),
        (
            "gh.__dispatch",
            json!({"command": 3}),
            Want::Refused("must be a string"),
        ),
        (
            "gh.__dispatch",
            json!({"command": ""}),
            Want::Refused("not a single subcommand word"),
        ),
        (
            "gh.__dispatch",
            json!({"command": "pr list"}),
            Want::Refused("not a single"),
        ),
        (
            "gh.__dispatch",
            json!({"command": "--help"}),
            Want::Refused("not a single"),
        ),
        (
            "gh.__dispatch",
            json!({"command": ".."}),
            Want::Refused("not a single"),
        ),
        (
            "gh.__dispatch",
            json!({"command": "pr;id"}),
            Want::Refused("not a single"),
        ),
        // Unregistered names: the subcommand is the rest of the name.
        (
            "gh.pr.list",
            json!({}),
            Want::Runs("gh.pr.list", &["pr", "list"], "gh.pr"),
        ),
        (
            "gh.pr.list",
            json!({"command": "pr list"}),
            Want::Runs("gh.pr.list", &["pr", "list"], "gh.pr"),
        ),
        (
            "gh.pr.list",
            json!({"command": "repo"}),
            Want::Refused("does not match"),
        ),
        (
            "gh.pr.list",
            json!({"command": "pr"}),
            Want::Refused("does not match"),
        ),
        (
            "gh.repo.view",
            json!({}),
            Want::Runs("gh.repo.view", &["repo", "view"], "gh.__dispatch"),
        ),
        (
            "git.status",
            json!({}),
            Want::Runs("git.status", &["status"], "git.__dispatch"),
        ),
        ("gh.pr..list", json!({}), Want::Refused("not a single")),
        ("gh.-rf", json!({}), Want::Refused("not a single")),
        ("gh.__dispatch.x", json!({}), Want::Refused("not a single")),
        // Strict and bare tools never dispatch.
        (
            "kubectl.get",
            json!({}),
            Want::Runs("kubectl.get", &["get"], "kubectl.get"),
        ),
        ("kubectl.delete", json!({}), Want::NotCli),
        (
            "kubectl.__dispatch",
            json!({"command": "delete"}),
            Want::NotCli,
        ),
        ("jq.run", json!({}), Want::Runs("jq.run", &[], "jq.run")),
        (
            "jq.run",
            json!({"command": "x"}),
            Want::Refused("does not match"),
        ),
        ("jq.other", json!({}), Want::NotCli),
        ("jq.__dispatch", json!({"command": "x"}), Want::NotCli),
        // Not a CLI tool at all.
        ("gh", json!({}), Want::NotCli),
        ("ghx.pr", json!({}), Want::NotCli),
        ("fs.read", json!({}), Want::NotCli),
    ];
    for (called, args, want) in cases {
        let got = catalog.resolve(called, &args);
        match (want, got) {
            (Want::Runs(effective, words, tool), Some(Ok(inv))) => {
                assert_eq!(inv.effective_name, effective, "{called} {args}");
                assert_eq!(inv.subcommand, words, "{called} {args}");
                assert_eq!(inv.tool.name, tool, "{called} {args}");
                assert_eq!(inv.args, args);
            }
            (Want::Refused(text), Some(Err(err))) => {
                assert!(
                    matches!(err, CliError::InvalidCommand(_)),
                    "{called} {args}"
                );
                assert!(err.to_string().contains(text), "{called} {args}: {err}");
            }
            (Want::NotCli, None) => {}
            (_, got) => panic!("{called} {args}: unexpected {got:?}"),
        }
    }
}

fn bare_tool(bin: &str) -> CliTool {
    CliTool {
        name: format!("{bin}.run"),
        cli: bin.to_owned(),
        bin: bin.to_owned(),
        kind: CliKind::Bare,
        command: None,
        description: format!("Run {bin}"),
        allowed_args: None,
        timeout: Duration::from_secs(20),
        working_dir: None,
        env: BTreeMap::new(),
        strict: false,
        default_action: None,
        max_output_bytes: 1 << 20,
        input_schema: Value::Null,
    }
}

fn invoke(tool: CliTool, subcommand: &[&str], args: Value) -> CliInvocation {
    CliInvocation {
        effective_name: tool.name.clone(),
        tool: Arc::new(tool),
        subcommand: subcommand.iter().map(|s| (*s).to_owned()).collect(),
        args,
    }
}

#[test]
fn argv_is_subcommand_then_args_then_sorted_flags() {
    let inv = invoke(
        bare_tool("gh"),
        &["pr", "list"],
        json!({
            "args": ["x", 42, 1e6, 2.5, -3, true],
            "flags": {"state": "open", "L": 5, "web": true, "draft": false, "n": 1_000_000},
            "stdin": "data",
            "command": "pr list",
        }),
    );
    let (argv, stdin) = build_argv(&inv).unwrap();
    assert_eq!(
        argv,
        [
            "pr", "list", "x", "42", "1000000", "2.5", "-3", "true", "-L", "5", "-n", "1000000",
            "--state", "open", "--web"
        ]
    );
    assert_eq!(stdin.as_deref(), Some("data"));
}

#[test]
fn malformed_arguments_are_refused() {
    let cases = [
        (json!("x"), "arguments must be an object"),
        (json!({"args": "a b"}), "args must be an array"),
        (
            json!({"args": ["a", {"b": 1}]}),
            "args[1] must be a string or a number",
        ),
        (json!({"flags": ["a"]}), "flags must be an object"),
        (
            json!({"flags": {"x": [1]}}),
            "flags.x must be a string, a number or a boolean",
        ),
        (json!({"stdin": 5}), "stdin must be a string"),
    ];
    for (args, text) in cases {
        let err = build_argv(&invoke(bare_tool("x"), &[], args.clone())).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("argument validation failed: {text}"),
            "{args}"
        );
    }
}

#[test]
fn injection_attempts_are_refused() {
    let dangerous =
        |seq: &str| format!("argument validation failed: dangerous character in argument: {seq}");
    let traversal =
        |arg: &str| format!("argument validation failed: path traversal in argument: {arg}");
    let cases = [
        (json!({"args": ["a; rm -rf /"]}), dangerous(r#"";""#)),
        (json!({"args": ["$(id)"]}), dangerous(r#""$(""#)),
        (json!({"args": ["${HOME}"]}), dangerous(r#""${""#)),
        (json!({"args": ["`id`"]}), dangerous(r#""`""#)),
        (json!({"args": ["a && b"]}), dangerous(r#""&&""#)),
        (json!({"args": ["a || b"]}), dangerous(r#""||""#)),
        (json!({"args": ["a | b"]}), dangerous(r#""|""#)),
        (json!({"args": ["a\nb"]}), dangerous(r#""\n""#)),
        (json!({"args": ["a\rb"]}), dangerous(r#""\r""#)),
        (json!({"flags": {"x": "1;2"}}), dangerous(r#"";""#)),
        (json!({"flags": {"a|b": true}}), dangerous(r#""|""#)),
        (
            json!({"args": ["../etc/passwd"]}),
            traversal(r#""../etc/passwd""#),
        ),
        (
            json!({"args": ["docs/../../x"]}),
            traversal(r#""docs/../../x""#),
        ),
        (json!({"args": ["..\\win"]}), traversal(r#""..\\win""#)),
        (json!({"args": [".."]}), traversal(r#""..""#)),
        (json!({"args": ["a/.."]}), traversal(r#""a/..""#)),
        (json!({"args": ["--path=.."]}), traversal(r#""--path=..""#)),
        (json!({"flags": {"file": "../x"}}), traversal(r#""../x""#)),
    ];
    for (args, want) in cases {
        let err = build_argv(&invoke(bare_tool("x"), &[], args.clone())).unwrap_err();
        assert_eq!(err.to_string(), want, "{args}");
    }
    // Plain relative paths, dots inside names and stdin are fine.
    let ok = json!({"args": ["./a", "a/b.c", "v1..2", "x.."], "stdin": "$(id); a | b\n../x"});
    build_argv(&invoke(bare_tool("x"), &[], ok)).unwrap();
}

#[test]
fn allowed_args_limit_flags_only() {
    let with = |allowed: Option<&[&str]>| CliTool {
        allowed_args: allowed.map(|a| a.iter().map(|s| (*s).to_owned()).collect()),
        ..bare_tool("gh")
    };
    let refused = |arg: &str, allowed: &str| {
        format!("argument validation failed: flag not allowed: {arg} (allowed: [{allowed}])")
    };
    let list: &[&str] = &["--state", "-L"];
    let cases = [
        (
            with(Some(list)),
            json!({"args": ["--state", "open", "-L", "5"]}),
            None,
        ),
        (with(Some(list)), json!({"args": ["--state=open"]}), None),
        (
            with(Some(list)),
            json!({"flags": {"state": "open", "L": 5}}),
            None,
        ),
        (
            with(Some(list)),
            json!({"args": ["positional", "42"]}),
            None,
        ),
        (
            with(Some(list)),
            json!({"args": ["--web"]}),
            Some(refused("--web", "--state -L")),
        ),
        (
            with(Some(list)),
            json!({"args": ["--stateX=1"]}),
            Some(refused("--stateX=1", "--state -L")),
        ),
        (
            with(Some(list)),
            json!({"flags": {"web": true}}),
            Some(refused("--web", "--state -L")),
        ),
        // A value that starts with `-` is treated as a flag, as in flux7.
        (
            with(Some(list)),
            json!({"args": ["--state", "-x"]}),
            Some(refused("-x", "--state -L")),
        ),
        (
            with(Some(&[])),
            json!({"args": ["-v"]}),
            Some(refused("-v", "")),
        ),
        (with(Some(&[])), json!({"args": ["file.txt"]}), None),
        (with(None), json!({"args": ["--anything", "-x"]}), None),
    ];
    for (tool, args, want) in cases {
        let got = build_argv(&invoke(tool, &[], args.clone()))
            .err()
            .map(|e| e.to_string());
        assert_eq!(got, want, "{args}");
    }
}

#[test]
fn durations_print_as_go_does() {
    let cases = [
        (Duration::ZERO, "0s"),
        (Duration::from_nanos(5), "5ns"),
        (Duration::from_micros(1500), "1.5ms"),
        (Duration::from_millis(200), "200ms"),
        (Duration::from_secs(30), "30s"),
        (Duration::from_millis(1500), "1.5s"),
        (Duration::from_secs(90), "1m30s"),
        (Duration::from_secs(3600), "1h0m0s"),
    ];
    for (d, want) in cases {
        assert_eq!(go_duration(d), want);
    }
}

#[test]
fn output_json_is_flux7s_shape() {
    let output = CliOutput {
        stdout: "o".into(),
        stderr: "e".into(),
        exit_code: 2,
        truncated: true,
    };
    assert_eq!(
        output.to_json(),
        json!({"stdout": "o", "stderr": "e", "exit_code": 2})
    );
}

// The executor, running real binaries.

async fn execute(tool: CliTool, subcommand: &[&str], args: Value) -> Result<CliOutput, CliError> {
    Cli::start(8).execute(invoke(tool, subcommand, args)).await
}

#[actix::test]
async fn runs_the_binary_with_its_arguments() {
    let out = execute(
        bare_tool("echo"),
        &["hello"],
        json!({"args": ["world", 1e6], "flags": {"n": true}}),
    )
    .await
    .unwrap();
    assert_eq!(out.stdout, "hello world 1000000 -n\n");
    assert_eq!(out.exit_code, 0);
    assert!(!out.truncated);
}

#[actix::test]
async fn refuses_injection_without_running_anything() {
    let err = execute(bare_tool("echo"), &[], json!({"args": ["x; touch pwned"]}))
        .await
        .unwrap_err();
    assert!(matches!(err, CliError::DangerousCharacter { seq: ";" }));
}

#[actix::test]
async fn stdin_is_piped_as_data() {
    let data = "$(id); rm -rf / `x` | y && z\n../etc\n";
    let out = execute(bare_tool("cat"), &[], json!({"stdin": data}))
        .await
        .unwrap();
    assert_eq!(out.stdout, data);
}

#[actix::test]
async fn exit_code_is_propagated_not_an_error() {
    let out = execute(
        bare_tool("sh"),
        &[],
        json!({"stdin": "echo oops >&2\nexit 7\n"}),
    )
    .await
    .unwrap();
    assert_eq!(out.exit_code, 7);
    assert_eq!(out.stderr, "oops\n");
}

#[actix::test]
async fn environment_holds_only_path_home_lang_and_configured() {
    let tool = CliTool {
        env: BTreeMap::from([("MESH7_TOOL_VAR".to_owned(), "v".to_owned())]),
        ..bare_tool("env")
    };
    let out = execute(tool, &[], json!({})).await.unwrap();
    let keys: BTreeSet<&str> = out
        .stdout
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    let mut want = BTreeSet::from(["LANG", "MESH7_TOOL_VAR"]);
    for key in ["PATH", "HOME"] {
        if std::env::var_os(key).is_some() {
            want.insert(key);
        }
    }
    assert_eq!(keys, want);
    assert!(out.stdout.contains("LANG=en_US.UTF-8\n"));
    assert!(out.stdout.contains("MESH7_TOOL_VAR=v\n"));
}

#[actix::test]
async fn working_dir_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let tool = CliTool {
        working_dir: Some(dir.path().to_str().unwrap().to_owned()),
        ..bare_tool("pwd")
    };
    let out = execute(tool, &[], json!({})).await.unwrap();
    assert_eq!(
        std::path::Path::new(out.stdout.trim_end()),
        dir.path().canonicalize().unwrap()
    );
}

#[actix::test]
async fn missing_binary_is_an_exec_error() {
    let err = execute(bare_tool("mesh7-no-such-binary"), &[], json!({}))
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("exec error: "), "{err}");
}

fn process_gone(pid: &str) -> bool {
    // Gone, or dead and waiting for a parent outside our control to reap it.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rsplit(") ").next().is_some_and(|s| s.starts_with('Z'))
    })
}

#[actix::test]
async fn timeout_kills_the_process_and_returns_partial_output() {
    let tool = CliTool {
        timeout: Duration::from_millis(1500),
        ..bare_tool("sh")
    };
    let started = Instant::now();
    let err = execute(tool, &[], json!({"stdin": "echo $$\nexec sleep 30\n"}))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(err.to_string(), "command timed out after 1.5s");
    let CliError::Timeout { output, .. } = err else {
        panic!("not a timeout: {err}");
    };
    assert_eq!(output.exit_code, -1);
    let pid = output.stdout.trim();
    assert!(!pid.is_empty());
    // The child itself was reaped by the executor.
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}

#[actix::test]
async fn timeout_kills_the_whole_process_group() {
    let tool = CliTool {
        timeout: Duration::from_millis(1500),
        ..bare_tool("sh")
    };
    let err = execute(tool, &[], json!({"stdin": "sleep 30 &\necho $!\nwait\n"}))
        .await
        .unwrap_err();
    let CliError::Timeout { output, .. } = err else {
        panic!("not a timeout: {err}");
    };
    let grandchild = output.stdout.trim();
    assert!(!grandchild.is_empty());
    // SIGKILL is sent before the call returns; the process ends when the kernel next runs it.
    wait_gone(&[grandchild]).await;
}

/// Waits up to 10 s for every process of `pids` to end.
async fn wait_gone(pids: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pids.iter().all(|pid| process_gone(pid)) {
        assert!(Instant::now() < deadline, "still running: {pids:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix::test]
async fn endless_output_is_capped_and_the_child_killed() {
    let tool = CliTool {
        timeout: Duration::from_secs(1),
        max_output_bytes: 4096,
        ..bare_tool("yes")
    };
    let err = execute(tool, &[], json!({})).await.unwrap_err();
    let CliError::Timeout { output, .. } = err else {
        panic!("not a timeout: {err}");
    };
    assert_eq!(output.stdout.len(), 4096);
    assert!(output.stdout.starts_with("y\ny\n"));
    assert!(output.truncated);
}

#[actix::test]
async fn output_over_the_cap_is_drained_so_the_child_finishes() {
    let tool = CliTool {
        max_output_bytes: 1000,
        ..bare_tool("seq")
    };
    // About 1.3 MB: far more than a pipe buffer, so an undrained pipe would block seq.
    let out = execute(tool, &[], json!({"args": [1, 200_000]}))
        .await
        .unwrap();
    assert_eq!(out.exit_code, 0);
    assert_eq!(out.stdout.len(), 1000);
    assert!(out.stdout.starts_with("1\n2\n3\n"));
    assert!(out.truncated);
}

#[actix::test]
async fn a_command_whose_caller_goes_away_is_killed_with_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pids");
    let made = tokio::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .await
        .unwrap();
    assert!(made.success());
    // The shell and its background sleep tell their pids through the fifo, then wait.
    let script = format!("sleep 30 &\necho $$ $! > '{}'\nwait\n", fifo.display());
    let cli = Cli::start(8);
    let call = cli.execute(invoke(bare_tool("sh"), &[], json!({ "stdin": script })));
    let read = tokio::task::spawn_blocking(move || std::fs::read_to_string(fifo));
    let pids = tokio::select! {
        pids = read => pids.unwrap().unwrap(),
        out = call => panic!("the command ended on its own: {out:?}"),
    };
    // `select!` dropped the call: its caller is gone.
    let pids: Vec<&str> = pids.split_whitespace().collect();
    assert_eq!(pids.len(), 2, "{pids:?}");
    wait_gone(&pids).await;
    // The executor still serves the next call.
    let out = cli
        .execute(invoke(bare_tool("echo"), &["next"], json!({})))
        .await
        .unwrap();
    assert_eq!(out.stdout, "next\n");
}
