//! CLI tools (`cli_tools`): the catalog built from config, the resolution of a called name to
//! what will run, argument validation, and the actor that runs the binaries.
//!
//! Invariants:
//! - No shell, ever: the binary is executed directly with a validated argv.
//! - The catch-all can never bypass a rule: the subcommand that runs is derived from the name the
//!   policy evaluates (`CliInvocation::effective_name`), and a `command` argument that says
//!   otherwise is an error. Strict and bare tools never dispatch.
//! - Every run is bounded: a timeout that kills the whole process group, and a per-stream output
//!   cap applied while reading (the excess is drained and dropped, so the child never blocks on a
//!   full pipe). Whatever the binary leaves behind in its process group is killed when the run
//!   ends, however it ends.
//! - The child sees only PATH and HOME from the parent, `LANG=en_US.UTF-8` and the tool's `env`.
//! - The actor never blocks: its handler returns a future that awaits the child.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Context, Handler, MailboxError, Message, Recipient, ResponseFuture};
use mesh7_config::{Action, CliCommandConfig, CliToolConfig};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::oneshot;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_MAX_OUTPUT: usize = 1 << 20;
/// How long the pipes are still drained after the process group was killed on a timeout.
const DRAIN_AFTER_KILL: Duration = Duration::from_secs(1);
const DISPATCH: &str = "__dispatch";
const BARE: &str = "run";
/// Checked in this order; the first one found is reported (flux7's list and order).
const DANGEROUS: [&str; 9] = [";", "&&", "||", "|", "`", "$(", "${", "\n", "\r"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CliKind {
    /// A declared command: `<cli>.<command>`.
    Command,
    /// The non-strict catch-all: `<cli>.__dispatch`.
    CatchAll,
    /// A bare binary: `<cli>.run`.
    Bare,
}

/// One registered tool.
#[derive(Clone)]
pub struct CliTool {
    /// `gh.pr`, `gh.__dispatch` or `gh.run`.
    pub name: String,
    /// The `cli_tools[].name` it belongs to.
    pub cli: String,
    pub bin: String,
    pub kind: CliKind,
    /// The declared command of a `Command` tool.
    pub command: Option<String>,
    pub description: String,
    /// Flags allowed; `None` = any, `Some([])` = none.
    pub allowed_args: Option<Vec<String>>,
    pub timeout: Duration,
    pub working_dir: Option<String>,
    /// May hold secrets: never shown over the API, and `Debug` prints the keys only.
    pub env: BTreeMap<String, String>,
    pub strict: bool,
    pub default_action: Option<Action>,
    /// Cap of stdout and of stderr, each.
    pub max_output_bytes: usize,
    /// JSON schema of the arguments.
    pub input_schema: Value,
}

impl fmt::Debug for CliTool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CliTool")
            .field("name", &self.name)
            .field("cli", &self.cli)
            .field("bin", &self.bin)
            .field("kind", &self.kind)
            .field("command", &self.command)
            .field("allowed_args", &self.allowed_args)
            .field("timeout", &self.timeout)
            .field("working_dir", &self.working_dir)
            .field("env_keys", &self.env.keys().collect::<Vec<_>>())
            .field("strict", &self.strict)
            .field("default_action", &self.default_action)
            .field("max_output_bytes", &self.max_output_bytes)
            .finish_non_exhaustive()
    }
}

/// What a call resolved to: the tool whose settings apply, the name the policy must evaluate,
/// and the subcommand words that will run.
#[derive(Debug, Clone)]
pub struct CliInvocation {
    pub tool: Arc<CliTool>,
    pub effective_name: String,
    pub subcommand: Vec<String>,
    /// The call's arguments: `args`, `flags`, `stdin` (and `command`).
    pub args: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("argument validation failed: dangerous character in argument: {seq:?}")]
    DangerousCharacter { seq: &'static str },
    #[error("argument validation failed: path traversal in argument: {arg:?}")]
    PathTraversal { arg: String },
    #[error("argument validation failed: flag not allowed: {arg} (allowed: [{}])", .allowed.join(" "))]
    FlagNotAllowed { arg: String, allowed: Vec<String> },
    #[error("argument validation failed: {0}")]
    InvalidArguments(String),
    #[error("invalid command: {0}")]
    InvalidCommand(String),
    #[error("command timed out after {}", go_duration(*.after))]
    Timeout { after: Duration, output: CliOutput },
    #[error("exec error: {0}")]
    Exec(String),
    #[error("cli executor unavailable: {0}")]
    Unavailable(String),
    /// The caller went away while the command ran; its process group was killed.
    #[error("command cancelled: the caller went away")]
    Cancelled,
}

impl From<MailboxError> for CliError {
    fn from(e: MailboxError) -> Self {
        CliError::Unavailable(e.to_string())
    }
}

/// What a run produced. A non-zero exit is a result, not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliOutput {
    pub stdout: String,
    pub stderr: String,
    /// -1 when the process was killed by a signal.
    pub exit_code: i32,
    /// True when stdout or stderr went over the cap and was cut.
    pub truncated: bool,
}

impl CliOutput {
    /// flux7's result shape.
    pub fn to_json(&self) -> Value {
        json!({"stdout": self.stdout, "stderr": self.stderr, "exit_code": self.exit_code})
    }
}

/// The CLI tools of the config, built once.
#[derive(Debug, Default)]
pub struct CliCatalog {
    tools: Vec<Arc<CliTool>>,
    by_name: HashMap<String, Arc<CliTool>>,
    groups: Vec<CliGroup>,
}

/// The tools of one `cli_tools` entry.
#[derive(Debug)]
struct CliGroup {
    cli: String,
    commands: BTreeMap<String, Arc<CliTool>>,
    /// Absent for strict and bare tools: they never dispatch.
    catch_all: Option<Arc<CliTool>>,
}

impl CliCatalog {
    /// Checks the entries as flux7 does (same texts) and parses the timeouts.
    pub fn from_config(tools: &[CliToolConfig]) -> Result<CliCatalog, String> {
        let mut catalog = CliCatalog::default();
        for (i, config) in tools.iter().enumerate() {
            let group = build_group(i, config, &mut catalog.tools)?;
            if catalog.groups.iter().any(|g| g.cli == group.cli) {
                return Err(format!("cli_tools[{i}]: duplicate name {:?}", config.name));
            }
            catalog.groups.push(group);
        }
        for tool in &catalog.tools {
            if catalog
                .by_name
                .insert(tool.name.clone(), tool.clone())
                .is_some()
            {
                return Err(format!(
                    "cli_tools ({}): tool name {:?} is registered twice",
                    tool.cli, tool.name
                ));
            }
        }
        Ok(catalog)
    }

    pub fn tools(&self) -> &[Arc<CliTool>] {
        &self.tools
    }

    /// Resolves a called tool name and its arguments to what will run, before policy: the
    /// result's `effective_name` is what the policy must evaluate. `None` if no CLI tool owns
    /// the name.
    pub fn resolve(&self, called: &str, args: &Value) -> Option<Result<CliInvocation, CliError>> {
        if let Some(tool) = self.by_name.get(called) {
            return Some(self.resolve_registered(tool, args));
        }
        let (group, path) = self.group_for(called)?;
        let catch_all = group.catch_all.as_ref()?;
        Some(resolve_path(group, catch_all, called, path, args))
    }

    fn resolve_registered(
        &self,
        tool: &Arc<CliTool>,
        args: &Value,
    ) -> Result<CliInvocation, CliError> {
        let words: Vec<String> = match tool.kind {
            CliKind::CatchAll => return self.resolve_catch_all(tool, args),
            CliKind::Bare => Vec::new(),
            CliKind::Command => tool.command.iter().cloned().collect(),
        };
        check_command_matches(args, &words, &tool.name)?;
        Ok(CliInvocation {
            tool: tool.clone(),
            effective_name: tool.name.clone(),
            subcommand: words,
            args: args.clone(),
        })
    }

    /// `<cli>.__dispatch`: the subcommand, and so the evaluated name, come from `command`.
    fn resolve_catch_all(
        &self,
        catch_all: &Arc<CliTool>,
        args: &Value,
    ) -> Result<CliInvocation, CliError> {
        let command = match args.get("command") {
            Some(Value::String(c)) => c,
            Some(_) => {
                return Err(CliError::InvalidCommand(
                    "\"command\" must be a string".to_owned(),
                ));
            }
            None => {
                return Err(CliError::InvalidCommand(
                    "\"command\" is required".to_owned(),
                ));
            }
        };
        check_word(command)?;
        // A declared command keeps its own settings when reached through the catch-all.
        let tool = self
            .groups
            .iter()
            .find(|g| g.cli == catch_all.cli)
            .and_then(|g| g.commands.get(command))
            .unwrap_or(catch_all);
        Ok(CliInvocation {
            tool: tool.clone(),
            effective_name: format!("{}.{command}", catch_all.cli),
            subcommand: vec![command.clone()],
            args: args.clone(),
        })
    }

    /// The group whose name prefixes `called` (the longest one), and the rest of the name.
    fn group_for<'a>(&self, called: &'a str) -> Option<(&CliGroup, &'a str)> {
        self.groups
            .iter()
            .filter_map(|g| {
                let rest = called.strip_prefix(g.cli.as_str())?.strip_prefix('.')?;
                Some((g, rest))
            })
            .max_by_key(|(g, _)| g.cli.len())
    }
}

/// An unregistered `<cli>.<a>.<b>…` on a tool with a catch-all: runs subcommand `a b …`.
fn resolve_path(
    group: &CliGroup,
    catch_all: &Arc<CliTool>,
    called: &str,
    path: &str,
    args: &Value,
) -> Result<CliInvocation, CliError> {
    let words: Vec<String> = path.split('.').map(str::to_owned).collect();
    for word in &words {
        check_word(word)?;
    }
    check_command_matches(args, &words, called)?;
    let tool = words
        .first()
        .and_then(|first| group.commands.get(first))
        .unwrap_or(catch_all);
    Ok(CliInvocation {
        tool: tool.clone(),
        effective_name: called.to_owned(),
        subcommand: words,
        args: args.clone(),
    })
}

/// A `command` argument, when given, must name what will run.
fn check_command_matches(args: &Value, words: &[String], called: &str) -> Result<(), CliError> {
    match args.get("command") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(c)) if *c == words.join(" ") => Ok(()),
        Some(other) => Err(CliError::InvalidCommand(format!(
            "\"command\" {other} does not match tool {called:?}"
        ))),
    }
}

/// A subcommand word: `^[A-Za-z0-9][A-Za-z0-9_-]*$`, so no flag, no `..`, no metacharacter.
fn check_word(word: &str) -> Result<(), CliError> {
    let mut chars = word.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if valid {
        Ok(())
    } else {
        Err(CliError::InvalidCommand(format!(
            "{word:?} is not a single subcommand word"
        )))
    }
}

fn build_group(
    i: usize,
    config: &CliToolConfig,
    tools: &mut Vec<Arc<CliTool>>,
) -> Result<CliGroup, String> {
    let n = &config.name;
    if n.is_empty() {
        return Err(format!("cli_tools[{i}]: name is required"));
    }
    if config.bin.is_empty() {
        return Err(format!("cli_tools[{i}] ({n}): bin is required"));
    }
    let base = |name: String, kind, command: Option<String>, description: String| CliTool {
        name,
        cli: n.clone(),
        bin: config.bin.clone(),
        kind,
        command,
        description,
        allowed_args: None,
        timeout: DEFAULT_TIMEOUT,
        working_dir: config.working_dir.clone(),
        env: config.env.clone(),
        strict: config.strict,
        default_action: config.default_action,
        max_output_bytes: config.max_output_bytes.unwrap_or(DEFAULT_MAX_OUTPUT),
        input_schema: input_schema(kind),
    };
    let mut group = CliGroup {
        cli: n.clone(),
        commands: BTreeMap::new(),
        catch_all: None,
    };

    if let Some(bare) = &config.bare {
        if !config.commands.is_empty() {
            return Err(format!(
                "cli_tools[{i}] ({n}): bare and commands are mutually exclusive"
            ));
        }
        if config.strict {
            return Err(format!(
                "cli_tools[{i}] ({n}): strict has no meaning in bare mode"
            ));
        }
        let timeout = parse_timeout(bare).map_err(|(t, e)| {
            format!("cli_tools[{i}] ({n}): bare has invalid timeout {t:?}: {e}")
        })?;
        let tool = CliTool {
            allowed_args: bare.allowed_args.clone(),
            timeout,
            ..base(
                format!("{n}.{BARE}"),
                CliKind::Bare,
                None,
                format!("Run {}", config.bin),
            )
        };
        tools.push(Arc::new(tool));
        return Ok(group);
    }

    if config.strict && config.commands.is_empty() {
        return Err(format!(
            "cli_tools[{i}] ({n}): strict mode requires at least one declared command"
        ));
    }
    for (command, settings) in &config.commands {
        // A dot would make `<cli>.<a>.<b>` ambiguous; declared commands are single words.
        check_word(command).map_err(|_| {
            format!("cli_tools[{i}] ({n}): command {command:?} must be a single word")
        })?;
        let timeout = parse_timeout(settings).map_err(|(t, e)| {
            format!("cli_tools[{i}] ({n}): command {command:?} has invalid timeout {t:?}: {e}")
        })?;
        let tool = Arc::new(CliTool {
            allowed_args: settings.allowed_args.clone(),
            timeout,
            ..base(
                format!("{n}.{command}"),
                CliKind::Command,
                Some(command.clone()),
                format!("Run {} {command}", config.bin),
            )
        });
        group.commands.insert(command.clone(), tool.clone());
        tools.push(tool);
    }
    if !config.strict {
        let tool = Arc::new(base(
            format!("{n}.{DISPATCH}"),
            CliKind::CatchAll,
            None,
            format!("Run {} <command> (any subcommand)", config.bin),
        ));
        group.catch_all = Some(tool.clone());
        tools.push(tool);
    }
    Ok(group)
}

/// A zero timeout means the default, as in flux7.
fn parse_timeout(settings: &CliCommandConfig) -> Result<Duration, (String, String)> {
    let Some(text) = &settings.timeout else {
        return Ok(DEFAULT_TIMEOUT);
    };
    let parsed = mesh7_config::duration::parse(text).map_err(|e| (text.clone(), e))?;
    Ok(if parsed.is_zero() {
        DEFAULT_TIMEOUT
    } else {
        parsed
    })
}

fn input_schema(kind: CliKind) -> Value {
    let mut properties = json!({
        "args": {
            "type": "array",
            "items": {"type": ["string", "number"]},
            "description": "Positional arguments"
        },
        "flags": {
            "type": "object",
            "additionalProperties": {"type": ["string", "number", "boolean"]},
            "description": "Flags: -k for one-letter keys, --key otherwise; true alone, false omitted"
        },
        "stdin": {"type": "string", "description": "Data piped to the process"}
    });
    if kind != CliKind::CatchAll {
        return json!({"type": "object", "properties": properties});
    }
    properties["command"] = json!({"type": "string", "description": "Subcommand to run"});
    json!({"type": "object", "properties": properties, "required": ["command"]})
}

/// The validated argv (subcommand words first) and the stdin of an invocation.
pub fn build_argv(inv: &CliInvocation) -> Result<(Vec<String>, Option<String>), CliError> {
    let empty = Map::new();
    let args = match &inv.args {
        Value::Object(map) => map,
        Value::Null => &empty,
        _ => {
            return Err(CliError::InvalidArguments(
                "arguments must be an object".to_owned(),
            ));
        }
    };
    let mut user = Vec::new();
    match args.get("args") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                user.push(scalar(item).ok_or_else(|| {
                    CliError::InvalidArguments(format!("args[{i}] must be a string or a number"))
                })?);
            }
        }
        Some(_) => {
            return Err(CliError::InvalidArguments(
                "args must be an array".to_owned(),
            ));
        }
    }
    match args.get("flags") {
        None | Some(Value::Null) => {}
        Some(Value::Object(flags)) => {
            let mut keys: Vec<&String> = flags.keys().collect();
            keys.sort_unstable();
            for key in keys {
                let flag = if key.len() == 1 {
                    format!("-{key}")
                } else {
                    format!("--{key}")
                };
                match &flags[key.as_str()] {
                    Value::Bool(true) => user.push(flag),
                    Value::Bool(false) => {}
                    value => {
                        let value = scalar(value).ok_or_else(|| {
                            CliError::InvalidArguments(format!(
                                "flags.{key} must be a string, a number or a boolean"
                            ))
                        })?;
                        user.push(flag);
                        user.push(value);
                    }
                }
            }
        }
        Some(_) => {
            return Err(CliError::InvalidArguments(
                "flags must be an object".to_owned(),
            ));
        }
    }
    let stdin = match args.get("stdin") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(CliError::InvalidArguments(
                "stdin must be a string".to_owned(),
            ));
        }
    };
    validate_args(inv.tool.allowed_args.as_deref(), &user)?;
    let mut argv = inv.subcommand.clone();
    argv.extend(user);
    Ok((argv, stdin))
}

/// Numbers print plainly (`1000000`, never `1e+06`).
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            (_, _, Some(f)) => f.to_string(),
            _ => n.to_string(),
        }),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// Metacharacters and path traversal in every argument first, then the flag allow-list.
fn validate_args(allowed: Option<&[String]>, args: &[String]) -> Result<(), CliError> {
    for arg in args {
        if let Some(seq) = DANGEROUS.into_iter().find(|seq| arg.contains(seq)) {
            return Err(CliError::DangerousCharacter { seq });
        }
        if has_traversal(arg) {
            return Err(CliError::PathTraversal { arg: arg.clone() });
        }
    }
    let Some(allowed) = allowed else {
        return Ok(());
    };
    for arg in args.iter().filter(|a| a.starts_with('-')) {
        let name = arg.split_once('=').map_or(arg.as_str(), |(name, _)| name);
        if !allowed.iter().any(|a| a == name) {
            return Err(CliError::FlagNotAllowed {
                arg: arg.clone(),
                allowed: allowed.to_vec(),
            });
        }
    }
    Ok(())
}

fn has_traversal(arg: &str) -> bool {
    arg.starts_with("..")
        || arg.contains("../")
        || arg.contains("..\\")
        || arg.split(['/', '\\', '=']).any(|part| part == "..")
}

/// Go's `Duration.String()`: `30s`, `1m30s`, `200ms`, `1.5s`.
fn go_duration(d: Duration) -> String {
    fn decimal(value: u128, scale: u128, digits: usize) -> String {
        let (int, frac) = (value / scale, value % scale);
        if frac == 0 {
            return int.to_string();
        }
        let frac = format!("{frac:0digits$}");
        format!("{int}.{}", frac.trim_end_matches('0'))
    }
    let nanos = d.as_nanos();
    match nanos {
        0 => "0s".to_owned(),
        1..1_000 => format!("{nanos}ns"),
        1_000..1_000_000 => format!("{}µs", decimal(nanos, 1_000, 3)),
        1_000_000..1_000_000_000 => format!("{}ms", decimal(nanos, 1_000_000, 6)),
        _ => {
            let secs = d.as_secs();
            let (h, m) = (secs / 3600, secs / 60 % 60);
            let s = decimal(
                u128::from(secs % 60) * 1_000_000_000 + u128::from(d.subsec_nanos()),
                1_000_000_000,
                9,
            );
            match (h, m) {
                (0, 0) => format!("{s}s"),
                (0, m) => format!("{m}m{s}s"),
                (h, m) => format!("{h}h{m}m{s}s"),
            }
        }
    }
}

/// Runs an invocation to completion (or timeout), or until the caller goes away.
#[derive(Debug, Message)]
#[rtype(result = "Result<CliOutput, CliError>")]
pub struct Execute {
    pub invocation: CliInvocation,
    /// Ends (with an error) when the caller drops its end: the caller is gone.
    pub caller: oneshot::Receiver<()>,
}

/// The cloneable handle of the CLI executor.
#[derive(Clone)]
pub struct Cli {
    execute: Recipient<Execute>,
}

impl Cli {
    /// Starts the executor on the current arbiter; call it inside a running actix System.
    pub fn start(mailbox: usize) -> Cli {
        let addr = CliActor { mailbox }.start();
        Cli {
            execute: addr.recipient(),
        }
    }

    /// Runs `inv`. Dropping the returned future (the caller went away) kills the command.
    pub async fn execute(&self, inv: CliInvocation) -> Result<CliOutput, CliError> {
        // Held while this future lives: its drop tells the actor that nobody is waiting.
        let (_waiting, caller) = oneshot::channel();
        self.execute
            .send(Execute {
                invocation: inv,
                caller,
            })
            .await?
    }
}

struct CliActor {
    mailbox: usize,
}

impl Actor for CliActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.mailbox.max(1));
    }
}

impl Handler<Execute> for CliActor {
    type Result = ResponseFuture<Result<CliOutput, CliError>>;

    fn handle(&mut self, msg: Execute, _: &mut Self::Context) -> Self::Result {
        let Execute {
            invocation: inv,
            caller,
        } = msg;
        Box::pin(async move {
            let (argv, stdin) = build_argv(&inv)?;
            tokio::select! {
                out = run(&inv.tool, &argv, stdin) => out,
                // Dropping `run` kills the process group (`GroupKiller`, `kill_on_drop`).
                _ = caller => Err(CliError::Cancelled),
            }
        })
    }
}

/// Spawns the binary in its own process group and collects its capped output.
async fn run(
    tool: &CliTool,
    argv: &[String],
    stdin: Option<String>,
) -> Result<CliOutput, CliError> {
    let mut command = Command::new(&tool.bin);
    command
        .args(argv)
        .env_clear()
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    for key in ["PATH", "HOME"] {
        if let Some(value) = std::env::var_os(key) {
            command.env(key, value);
        }
    }
    command.env("LANG", "en_US.UTF-8").envs(&tool.env);
    if let Some(dir) = &tool.working_dir {
        command.current_dir(dir);
    }

    let mut child = command.spawn().map_err(|e| CliError::Exec(e.to_string()))?;
    // Taken now: `Child::id` forgets the pid once the child is reaped, but the group may live on.
    let pid = child.id();
    let _group = GroupKiller(pid);
    let mut stdout_pipe = child.stdout.take().expect("stdout is piped");
    let mut stderr_pipe = child.stderr.take().expect("stderr is piped");
    let stdin_pipe = child.stdin.take();
    let mut stdout = Capped::new(tool.max_output_bytes);
    let mut stderr = Capped::new(tool.max_output_bytes);

    let feed = async move {
        if let (Some(mut pipe), Some(data)) = (stdin_pipe, stdin) {
            // A child that exits without reading its input closes the pipe: not an error.
            let _ = pipe.write_all(data.as_bytes()).await;
        }
    };
    let finished = tokio::time::timeout(tool.timeout, async {
        let (out, err, (), status) = tokio::join!(
            stdout.fill(&mut stdout_pipe),
            stderr.fill(&mut stderr_pipe),
            feed,
            child.wait()
        );
        out.and(err).and(status)
    })
    .await;

    match finished {
        Ok(status) => {
            let status = status.map_err(|e| CliError::Exec(e.to_string()))?;
            Ok(collect(stdout, stderr, status.code().unwrap_or(-1)))
        }
        Err(_elapsed) => {
            kill_group(pid);
            let _ = child.start_kill();
            // Whatever the group wrote before dying; bounded in case something escaped the group.
            let _ = tokio::time::timeout(DRAIN_AFTER_KILL, async {
                tokio::join!(stdout.fill(&mut stdout_pipe), stderr.fill(&mut stderr_pipe))
            })
            .await;
            let _ = child.wait().await;
            Err(CliError::Timeout {
                after: tool.timeout,
                output: collect(stdout, stderr, -1),
            })
        }
    }
}

fn collect(stdout: Capped, stderr: Capped, exit_code: i32) -> CliOutput {
    CliOutput {
        truncated: stdout.truncated || stderr.truncated,
        stdout: text(stdout.buf),
        stderr: text(stderr.buf),
        exit_code,
    }
}

/// The cap may cut a character in two; invalid bytes become U+FFFD.
fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The process group shares the child's pid (`process_group(0)`).
fn kill_group(pid: Option<u32>) {
    if let Some(pgid) = pid.and_then(|p| i32::try_from(p).ok()) {
        // ESRCH (the group is already gone) is the normal case after a clean exit.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pgid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Kills the child's process group when the run ends, including when its future is dropped.
struct GroupKiller(Option<u32>);

impl Drop for GroupKiller {
    fn drop(&mut self) {
        kill_group(self.0);
    }
}

/// A buffer that keeps at most `cap` bytes and drops the rest.
struct Capped {
    buf: Vec<u8>,
    cap: usize,
    truncated: bool,
}

impl Capped {
    fn new(cap: usize) -> Capped {
        Capped {
            buf: Vec::new(),
            cap,
            truncated: false,
        }
    }

    /// Reads to end of file, keeping what fits.
    async fn fill(&mut self, reader: &mut (impl AsyncRead + Unpin)) -> std::io::Result<()> {
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            let n = reader.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            let keep = n.min(self.cap - self.buf.len());
            self.buf.extend_from_slice(&chunk[..keep]);
            self.truncated |= keep < n;
        }
    }
}

#[cfg(test)]
mod tests;
