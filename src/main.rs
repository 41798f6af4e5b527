//! The `mesh7` binary: `serve` (the daemon), `validate`, `discover`, `--version`.
//!
//! Bare `mesh7 [--config F]` runs the daemon, as flux7 does; `mesh7 --mcp` serves MCP on stdio
//! (or bridges to a running daemon's `/mcp`).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mesh7::app::{App, ServeOptions};
use tracing_subscriber::EnvFilter;

/// Calls allocate on the HTTP workers and free on other threads (the trace writer); jemalloc
/// handles that without the arena contention of the system allocator (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A guardrail between AI agents and their tools: every tool call passes through policy
/// (allow / deny / human_approval), rate limits and loop detection, and is traced.
#[derive(Debug, Parser)]
#[command(
    name = "mesh7",
    disable_version_flag = true,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
    #[command(flatten)]
    mcp: McpArgs,
    /// Print the version and exit.
    #[arg(long, short = 'V')]
    version: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP daemon.
    Serve(ServeArgs),
    /// Check a configuration file: prints `ok`, or every error found and exits 1.
    Validate {
        /// Configuration file.
        #[arg(long, default_value = "config.yaml")]
        config: PathBuf,
    },
    /// List the tools of every source (MCP servers, CLI tools, OpenAPI specs) of a
    /// configuration and/or one OpenAPI spec, optionally with a starter policy.
    Discover(DiscoverArgs),
    /// Decide the calls recorded in JSONL traces again under a configuration's policies and
    /// list the decisions that would change. Exit status: 0 none would, 1 some would, 2 error.
    Replay(ReplayArgs),
    /// Check the chain of JSONL trace files written under `trace.hmac_key`: every line sealed
    /// by the key, none altered, removed, inserted or moved. Exit status: 0 intact, 1 broken,
    /// 2 error.
    VerifyTraces(VerifyArgs),
}

#[derive(Debug, clap::Args)]
struct VerifyArgs {
    /// The configuration whose `trace.hmac_key` sealed the files.
    #[arg(long, default_value = "config.yaml")]
    config: PathBuf,
    /// A JSONL trace file, repeatable, read in order. Default: the configuration's
    /// `trace_file`, after its rotated `<file>.old` when there is one.
    #[arg(long = "traces")]
    traces: Vec<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct ReplayArgs {
    /// The candidate configuration: its policies, `policy_dir` and CLI tools.
    #[arg(long, default_value = "config.yaml")]
    config: PathBuf,
    /// A JSONL trace file, repeatable, read in order. Default: the configuration's
    /// `trace_file`, after its rotated `<file>.old` when there is one.
    #[arg(long = "traces")]
    traces: Vec<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct DiscoverArgs {
    /// Configuration file whose sources are discovered.
    #[arg(long)]
    config: Option<PathBuf>,
    /// An OpenAPI spec to discover too: a URL or a file.
    #[arg(long)]
    openapi: Option<String>,
    /// The backend base URL for `--openapi` (instead of the spec's servers).
    #[arg(long)]
    backend: Option<String>,
    /// Let `--openapi` and `--backend` be loopback or private addresses.
    #[arg(long)]
    allow_private: bool,
    /// Print a starter policy (read → allow, write → human_approval, other → deny) as YAML,
    /// with the tool list as comments.
    #[arg(long, conflicts_with = "lint")]
    generate_policy: bool,
    /// Check the configuration's policy rules against the tools discovered: patterns that match
    /// no tool, condition fields no matched tool takes. Exits 1 when there is any.
    #[arg(long, requires = "config")]
    lint: bool,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Configuration file (YAML).
    #[arg(long, default_value = "config.yaml")]
    config: PathBuf,
    /// Listen port; overrides `port` in the configuration.
    #[arg(long)]
    port: Option<u16>,
    /// Listen address and port, e.g. 127.0.0.1:0 (a free port, printed at start-up).
    #[arg(long)]
    listen: Option<SocketAddr>,
}

#[derive(Debug, clap::Args)]
struct McpArgs {
    /// Serve MCP on stdin/stdout (with the HTTP API alongside), or bridge to the `/mcp` of a
    /// mesh7 daemon already answering on the port.
    #[arg(long)]
    mcp: bool,
    /// The agent id MCP calls are made as (`MESH_AGENT_TOKEN`, when set, is sent instead).
    #[arg(long, default_value = "claude")]
    mcp_agent: String,
    /// The MCP session id recorded in traces; minted at `initialize` when absent.
    #[arg(long)]
    mcp_session_id: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // discover prints for people: only errors are logged (flux7).
    let discovering = matches!(cli.command, Some(Command::Discover(_)));
    init_logging(if discovering { "error" } else { "info" });
    if cli.version {
        let v = &mesh7::VERSION;
        return out(&format!(
            "mesh7 {} ({}) built {}",
            v.version, v.commit, v.date
        ));
    }
    match cli.command {
        Some(Command::Validate { config }) => validate(&config),
        Some(Command::Serve(args)) => serve(args),
        Some(Command::Discover(args)) => discover(&args),
        Some(Command::Replay(args)) => replay(&args),
        Some(Command::VerifyTraces(args)) => verify_traces(&args),
        None if cli.mcp.mcp => mcp(cli.serve, cli.mcp),
        None => serve(cli.serve),
    }
}

fn init_logging(default_level: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("MESH7_LOG").unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
}

fn validate(path: &std::path::Path) -> ExitCode {
    match mesh7_config::load(path) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                err(&format!("warning: {w}"));
            }
            out("ok")
        }
        Err(errors) => {
            for e in &errors.0 {
                err(&e.to_string());
            }
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let Some(loaded) = load_config(&args.config) else {
        return ExitCode::FAILURE;
    };
    let opts = ServeOptions {
        config_path: args.config,
        port: args.port,
        listen: args.listen,
    };
    let result = actix_web::rt::System::new().block_on(async move {
        let app = App::build(&loaded, &opts).await?;
        app.serve().await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            err(&format!("mesh7: {e:#}"));
            ExitCode::FAILURE
        }
    }
}

/// `mesh7 --mcp`. Exits the process itself: stdin is read on a thread that cannot be
/// cancelled, so returning normally could wait for input that never comes.
fn mcp(args: ServeArgs, mcp: McpArgs) -> ExitCode {
    use mesh7::mcp::proxy::{self, ProxyOptions};
    use mesh7::mcp::stdio::StdioOptions;

    let Some(loaded) = load_config(&args.config) else {
        std::process::exit(1);
    };
    let opts = ServeOptions {
        config_path: args.config,
        port: args.port,
        listen: args.listen,
    };
    let stdio = StdioOptions {
        agent: mcp.mcp_agent,
        agent_token: std::env::var("MESH_AGENT_TOKEN").ok(),
        session_id: mcp.mcp_session_id.filter(|s| !s.is_empty()),
        drain_timeout: std::time::Duration::from_secs(30),
    };
    // Kept alive until `exit`: dropping the runtime would wait for the blocked stdin thread.
    let system = actix_web::rt::System::new();
    let result = system.block_on(async move {
        let listen = mesh7::app::listen_addr(&loaded.config, &opts)?;
        if let Some(url) = proxy::daemon_url(listen)
            && proxy::daemon_running(&url).await
        {
            tracing::info!(daemon = %url, "a mesh7 daemon answers: bridging stdio to its /mcp");
            let bridge = ProxyOptions {
                base_url: url,
                authorization: stdio.authorization(),
                drain_timeout: stdio.drain_timeout,
            };
            let (input, output) = mesh7::mcp::stdio::streams();
            return proxy::bridge(bridge, input, output)
                .await
                .map_err(anyhow::Error::from);
        }
        let app = App::build(&loaded, &opts).await?;
        app.serve_mcp(stdio).await
    });
    let _ = std::io::stdout().flush();
    match result {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            err(&format!("mesh7: {e:#}"));
            std::process::exit(1);
        }
    }
}

fn discover(args: &DiscoverArgs) -> ExitCode {
    use mesh7::discover::{self, Sources};

    if args.config.is_none() && args.openapi.is_none() {
        err(
            "usage: mesh7 discover [--config FILE] [--openapi URL|FILE [--backend URL]] [--generate-policy | --lint]",
        );
        err("  give --config, --openapi, or both");
        return ExitCode::FAILURE;
    }
    let loaded = match args.config.as_deref().map(mesh7_config::load) {
        None => None,
        Some(Ok(l)) => Some(l),
        Some(Err(errors)) => {
            let all: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
            err(&format!("Error loading config: {}", all.join("\n  ")));
            return ExitCode::FAILURE;
        }
    };
    let sources = Sources {
        config: loaded
            .as_ref()
            .map(|l| (&l.config, l.config_path.as_path())),
        openapi: args
            .openapi
            .as_deref()
            .map(|spec| discover::openapi_entry(spec, args.backend.clone(), args.allow_private)),
    };
    if sources.is_empty() {
        err("No MCP servers, CLI tools or OpenAPI specs to discover.");
        return ExitCode::FAILURE;
    }
    let gathered =
        actix_web::rt::System::new().block_on(async { discover::gather(&sources, err).await });
    let gathered = match gathered {
        Ok(gathered) => gathered,
        Err(e) => {
            err(&format!("Error: {e}"));
            return ExitCode::FAILURE;
        }
    };
    if args.lint {
        let none = mesh7_config::Config::default();
        return lint(loaded.as_ref().map_or(&none, |l| &l.config), &gathered);
    }
    let tools = gathered.tools;
    if tools.is_empty() {
        return out("No tools discovered.");
    }
    let text = if args.generate_policy {
        discover::starter_policy(&tools)
    } else {
        discover::listing(&tools)
    };
    let _ = write!(std::io::stdout(), "{text}");
    ExitCode::SUCCESS
}

/// `discover --lint`: one line per finding, then a summary; exit 1 when there is any.
fn lint(config: &mesh7_config::Config, gathered: &mesh7::discover::Gathered) -> ExitCode {
    let policies = &config.policies;
    let findings = mesh7::discover::lint(
        policies,
        &config.taint,
        &gathered.tools,
        &gathered.unreached,
    );
    let mut stdout = std::io::stdout();
    for finding in &findings {
        let _ = writeln!(stdout, "{finding}");
    }
    if !gathered.unreached.is_empty() {
        let _ = writeln!(
            stdout,
            "Not checked: the tools of {} (not reached).",
            gathered.unreached.join(", ")
        );
    }
    let rules: usize = policies.iter().map(|p| p.rules.len()).sum();
    if findings.is_empty() {
        let _ = writeln!(
            stdout,
            "{rules} rules checked against {} tools: no findings.",
            gathered.tools.len()
        );
        ExitCode::SUCCESS
    } else {
        let _ = writeln!(
            stdout,
            "{rules} rules checked against {} tools: {} findings.",
            gathered.tools.len(),
            findings.len()
        );
        ExitCode::FAILURE
    }
}

fn out(line: &str) -> ExitCode {
    let _ = writeln!(std::io::stdout(), "{line}");
    ExitCode::SUCCESS
}

fn replay(args: &ReplayArgs) -> ExitCode {
    use mesh7::registry::Registry;
    use mesh7::replay::{self, Report};
    use mesh7_actors::cli::CliCatalog;

    const TROUBLE: u8 = 2;
    let Some(loaded) = load_config(&args.config) else {
        return ExitCode::from(TROUBLE);
    };
    let cfg = &loaded.config;
    let compiled = mesh7_config::PolicySet::compile(&cfg.policies).map_err(|errors| {
        errors
            .iter()
            .map(|e| format!("policies[{}].{}: {}", e.policy_index, e.path, e.message))
            .collect::<Vec<_>>()
    });
    let catalog =
        CliCatalog::from_config(&cfg.cli_tools).map_err(|e| vec![format!("cli_tools: {e}")]);
    let (policies, catalog) = match (compiled, catalog) {
        (Ok(p), Ok(c)) => (p, c),
        (Err(e), _) | (_, Err(e)) => {
            e.iter().for_each(|line| err(line));
            return ExitCode::from(TROUBLE);
        }
    };
    let Some(files) = trace_files(cfg, &args.traces) else {
        return ExitCode::from(TROUBLE);
    };
    let registry = Registry::new(catalog, Vec::new());
    let mut report = Report::default();
    let mut seen = std::collections::HashSet::new();
    for path in &files {
        let read = std::fs::File::open(path).and_then(|f| {
            replay::replay(
                &policies,
                &registry,
                &path.display().to_string(),
                std::io::BufReader::new(f),
                &mut report,
                &mut seen,
            )
        });
        if let Err(e) = read {
            err(&format!("read {}: {e}", path.display()));
            return ExitCode::from(TROUBLE);
        }
    }
    let _ = std::io::stdout().write_all(report.render().as_bytes());
    if report.changes.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The trace files a command reads: those given, else the configuration's `trace_file` after
/// its rotated `.old` when there is one. `None` (said on stderr) when there is neither.
fn trace_files(cfg: &mesh7_config::Config, given: &[PathBuf]) -> Option<Vec<PathBuf>> {
    if !given.is_empty() {
        return Some(given.to_vec());
    }
    let Some(file) = cfg.trace_file.as_deref().filter(|f| !f.is_empty()) else {
        err("no trace file: give --traces FILE, or set trace_file in the configuration");
        return None;
    };
    let old = PathBuf::from(format!("{file}.old"));
    Some(
        std::iter::once(old)
            .filter(|old| old.is_file())
            .chain(std::iter::once(PathBuf::from(file)))
            .collect(),
    )
}

fn verify_traces(args: &VerifyArgs) -> ExitCode {
    use mesh7::replay::{BoundedLines, Line};
    use mesh7_actors::trace::ChainCheck;

    const TROUBLE: u8 = 2;
    /// Problems printed one by one; the rest are counted.
    const SHOWN: usize = 20;
    let Some(loaded) = load_config(&args.config) else {
        return ExitCode::from(TROUBLE);
    };
    let Some(secret) = loaded.config.trace.hmac_key.as_deref() else {
        err("trace.hmac_key is not set in the configuration: there is no chain to check");
        return ExitCode::from(TROUBLE);
    };
    let Some(files) = trace_files(&loaded.config, &args.traces) else {
        return ExitCode::from(TROUBLE);
    };
    let mut check = ChainCheck::new(secret);
    for path in &files {
        let name = path.display().to_string();
        let read = std::fs::File::open(path).and_then(|f| {
            let mut lines = BoundedLines::new(std::io::BufReader::new(f));
            while let Some((number, line)) = lines.next_line()? {
                match line {
                    Line::Text(line) => check.line(&name, number, line),
                    Line::TooLong => check.too_long(&name, number),
                }
            }
            Ok(())
        });
        if let Err(e) = read {
            err(&format!("read {name}: {e}"));
            return ExitCode::from(TROUBLE);
        }
    }
    let mut out = String::new();
    for (file, line, what) in check.problems.iter().take(SHOWN) {
        out.push_str(&format!("{file} line {line}: {what}\n"));
    }
    if check.problems.len() > SHOWN {
        out.push_str(&format!("… and {} more\n", check.problems.len() - SHOWN));
    }
    let start = if check.starts_mid_chain {
        " (it continues a chain whose earlier lines are in a file not given)"
    } else {
        ""
    };
    if check.problems.is_empty() {
        out.push_str(&format!(
            "{} lines verified: the chain is intact{start}\n",
            check.verified
        ));
    } else {
        out.push_str(&format!(
            "{} lines verified, {} problems: the chain is broken\n",
            check.verified,
            check.problems.len()
        ));
    }
    let _ = std::io::stdout().write_all(out.as_bytes());
    if check.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Loads the configuration and logs its warnings; on errors prints every one and gives `None`.
fn load_config(path: &std::path::Path) -> Option<mesh7_config::LoadedConfig> {
    match mesh7_config::load(path) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                tracing::warn!("{w}");
            }
            Some(loaded)
        }
        Err(errors) => {
            err(&format!("load config {}:", path.display()));
            for e in &errors.0 {
                err(&format!("  {e}"));
            }
            None
        }
    }
}

fn err(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}
