//! `mesh`: approve or deny pending tool calls from a terminal, through mesh7's control plane.
//!
//! `mesh pending | show <id> | approve <id> | deny <id> [--reason TEXT] | watch`, with flux7's
//! texts and table; mesh7's own `halt | halts | lift` (emergency stops) and `pins |
//! accept-tools` (catalogue pinning). The daemon is `MESH_URL` (or `--url`, default `http://localhost:9090`); when
//! `MESH_ADMIN_TOKEN` is set it is sent as a bearer token, so the CLI also works against a daemon
//! that guards its control plane.
//!
//! Exit codes: 0 done; 1 not found, already resolved, or a usage error; 2 the daemon could not be
//! reached, refused the credentials (401) or answered something unexpected. Stdout carries only
//! the command's output; every problem goes to stderr.

use std::collections::HashSet;
use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use mesh7_config::duration::format_secs;
use reqwest::{Method, Url};
use serde::Deserialize;
use serde_json::{Value, json};

const DEFAULT_URL: &str = "http://localhost:9090";
/// How often `watch` asks for pending approvals (flux7's period).
const POLL_EVERY: Duration = Duration::from_secs(2);
/// No request may hang the terminal longer than this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Parameter values are cut to this many characters in `show` and `watch`.
const SHOW_VALUE_CHARS: usize = 120;
const WATCH_VALUE_CHARS: usize = 80;
/// Lines typed ahead are buffered up to this many; the reader waits beyond.
const INPUT_BACKLOG: usize = 16;

/// Approve or deny the tool calls mesh7 holds for a human.
#[derive(Debug, Parser)]
#[command(
    name = "mesh",
    version,
    after_help = "Environment:\n  MESH_URL          mesh7 base URL (default http://localhost:9090)\n  \
                  MESH_ADMIN_TOKEN  sent as a bearer token; needed when the daemon sets an admin token\n  \
                  USER              recorded as the resolver, cli:<USER>\n\n\
                  Exit status: 0 done; 1 not found, already resolved or usage error; \
                  2 daemon unreachable, credentials refused or unexpected answer."
)]
struct Cli {
    /// Base URL of the mesh7 daemon [default: MESH_URL, else http://localhost:9090]
    #[arg(long, global = true)]
    url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List pending approvals.
    Pending {
        /// Print the API's JSON as is.
        #[arg(long)]
        json: bool,
    },
    /// Show one approval (full id or a unique prefix).
    Show {
        #[arg(value_parser = approval_id)]
        id: String,
        /// Print the API's JSON as is.
        #[arg(long)]
        json: bool,
    },
    /// Approve a pending request.
    Approve {
        #[arg(value_parser = approval_id)]
        id: String,
        /// Why; recorded as the approval's reasoning.
        #[arg(long)]
        reason: Option<String>,
        /// Also let the agent run this tool without asking for this long (e.g. 30m, 2h).
        #[arg(long, value_name = "DURATION")]
        grant: Option<String>,
        /// With --grant: the tool glob it covers (default: the approval's tool).
        #[arg(long, requires = "grant")]
        tools: Option<String>,
        /// With --grant: the calls it allows before it is used up.
        #[arg(long, requires = "grant", value_parser = clap::value_parser!(u64).range(1..))]
        max_calls: Option<u64>,
    },
    /// Deny a pending request.
    Deny {
        #[arg(value_parser = approval_id)]
        id: String,
        /// Why; recorded as the approval's reasoning.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Poll for new approvals and prompt for each (Ctrl-C or end of input to quit).
    Watch,
    /// List the active grants, in creation order.
    Grants {
        /// Print the API's JSON as is.
        #[arg(long)]
        json: bool,
    },
    /// Let an agent run matching tools without asking, for a while (or delegate a grant with
    /// --parent: then --tools and --duration default to the parent's).
    Grant {
        /// The agent (a glob; one agent id with --parent).
        #[arg(long)]
        agent: String,
        /// The tool glob it covers.
        #[arg(long, required_unless_present = "parent")]
        tools: Option<String>,
        /// How long (e.g. 30m, 2h; at most supervisor.max_grant_duration).
        #[arg(long, required_unless_present = "parent")]
        duration: Option<String>,
        /// The calls it allows before it is used up.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        max_calls: Option<u64>,
        /// Delegate from this grant: a narrower copy that goes with it.
        #[arg(long, value_parser = grant_id)]
        parent: Option<String>,
    },
    /// Revoke a grant (its id or a unique prefix) and the grants delegated from it.
    Revoke {
        #[arg(value_parser = grant_id)]
        id: String,
    },
    /// Emergency stop: deny every later call of an agent, of a session, or of everyone.
    #[command(group(clap::ArgGroup::new("scope").required(true).args(["agent", "session", "all"])))]
    Halt {
        /// The agent id to stop.
        #[arg(long)]
        agent: Option<String>,
        /// The session id to stop.
        #[arg(long)]
        session: Option<String>,
        /// Stop every call.
        #[arg(long)]
        all: bool,
        /// Why; shown to the stopped callers and in traces.
        #[arg(long)]
        reason: Option<String>,
    },
    /// List the halts in effect.
    Halts {
        /// Print the API's JSON as is.
        #[arg(long)]
        json: bool,
    },
    /// Lift a halt (its id, as `mesh halts` shows).
    Lift {
        #[arg(value_parser = halt_id)]
        id: String,
    },
    /// List the sessions labelled by untrusted content (taint.sources), most recent first.
    Taint {
        /// Only this agent's sessions.
        #[arg(long)]
        agent: Option<String>,
        /// Print the API's JSON as is.
        #[arg(long)]
        json: bool,
    },
    /// Clear a session's labels once reviewed.
    Untaint {
        #[arg(long)]
        agent: String,
        /// The session id; "" for the agent's calls made without a session.
        #[arg(long)]
        session: String,
    },
    /// Show how the tools of the servers with pin_tools differ from their pins.
    Pins {
        /// Print the API's JSON as is.
        #[arg(long)]
        json: bool,
    },
    /// Accept a pinned server's changed, added and removed tools (all, or those named).
    AcceptTools {
        /// The MCP server (its name in mcp_servers).
        server: String,
        /// Tool names without the server prefix; every change when none.
        tools: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let text = e.render().to_string();
            return if e.use_stderr() {
                err(text.trim_end());
                ExitCode::from(1)
            } else {
                out(text.trim_end());
                ExitCode::SUCCESS
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            err(&format!("cannot start: {e}"));
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            err(&e.to_string());
            ExitCode::from(e.exit_code())
        }
    }
}

/// Approval ids are hex (a prefix is fine); anything else could only address another route.
fn approval_id(s: &str) -> Result<String, String> {
    id_arg(s, "an approval id (hex digits, as `mesh pending` shows)")
}

/// Grant ids are hex (a unique prefix of 4 or more is fine).
fn grant_id(s: &str) -> Result<String, String> {
    id_arg(s, "a grant id (hex digits, as `mesh grants` shows)")
}

/// Halt ids are hex, whole.
fn halt_id(s: &str) -> Result<String, String> {
    id_arg(s, "a halt id (hex digits, as `mesh halts` shows)")
}

fn id_arg(s: &str, expected: &str) -> Result<String, String> {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        Ok(s.to_owned())
    } else {
        Err(format!("expected {expected}"))
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    let token = std::env::var("MESH_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    let url = cli
        .url
        .or_else(|| std::env::var("MESH_URL").ok())
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| DEFAULT_URL.to_owned());
    let mesh = Mesh::new(&url, token)?;
    match cli.command {
        Command::Pending { json } => pending(&mesh, json).await,
        Command::Show { id, json } => show(&mesh, &id, json).await,
        Command::Approve {
            id,
            reason,
            grant,
            tools,
            max_calls,
        } => {
            let grant = grant.map(|duration| {
                let mut terms = json!({ "duration": duration });
                if let Some(tools) = tools {
                    terms["tools"] = Value::String(tools);
                }
                if let Some(max) = max_calls {
                    terms["max_calls"] = json!(max);
                }
                terms
            });
            resolve(&mesh, &id, Verdict::Approve, reason, grant).await
        }
        Command::Deny { id, reason } => resolve(&mesh, &id, Verdict::Deny, reason, None).await,
        Command::Halt {
            agent,
            session,
            all,
            reason,
        } => halt(&mesh, agent, session, all, reason).await,
        Command::Grants { json } => grants(&mesh, json).await,
        Command::Grant {
            agent,
            tools,
            duration,
            max_calls,
            parent,
        } => {
            let mut body = json!({ "agent": agent, "granted_by": resolved_by() });
            for (key, value) in [("tools", tools), ("duration", duration), ("parent", parent)] {
                if let Some(value) = value {
                    body[key] = Value::String(value);
                }
            }
            if let Some(max) = max_calls {
                body["max_calls"] = json!(max);
            }
            grant(&mesh, &body).await
        }
        Command::Revoke { id } => revoke(&mesh, &id).await,
        Command::Halts { json } => halts(&mesh, json).await,
        Command::Lift { id } => lift(&mesh, &id).await,
        Command::Taint { agent, json } => taint(&mesh, agent.as_deref(), json).await,
        Command::Untaint { agent, session } => untaint(&mesh, &agent, &session).await,
        Command::Pins { json } => pins(&mesh, json).await,
        Command::AcceptTools { server, tools } => accept_tools(&mesh, &server, tools).await,
        Command::Watch => {
            tokio::select! {
                // Polled first, so the handler is in place before the banner invites Ctrl-C.
                biased;
                // Ctrl-C is the way out of `watch`: end it cleanly, on a fresh line.
                Ok(()) = tokio::signal::ctrl_c() => {
                    out("");
                    Ok(())
                }
                r = watch(&mesh) => r,
            }
        }
    }
}

async fn pending(mesh: &Mesh, raw: bool) -> Result<(), CliError> {
    let reply = mesh.pending().await?;
    if raw {
        out(reply.body.trim_end());
        return Ok(());
    }
    let list: Vec<ApprovalView> = reply.parse()?;
    out(render_pending(&list, Utc::now()).trim_end());
    Ok(())
}

async fn show(mesh: &Mesh, id: &str, raw: bool) -> Result<(), CliError> {
    let reply = mesh.approval(id).await?;
    if raw {
        out(reply.body.trim_end());
        return Ok(());
    }
    let view: ApprovalView = reply.parse()?;
    out(render_show(&view, Utc::now()).trim_end());
    Ok(())
}

async fn resolve(
    mesh: &Mesh,
    id: &str,
    verdict: Verdict,
    reason: Option<String>,
    grant: Option<Value>,
) -> Result<(), CliError> {
    match mesh.resolve(id, verdict, reason, grant).await? {
        Resolution::Done(answer) => {
            out(&format!("{}: {id}", verdict.done()));
            let grant = &answer["grant"];
            if let Some(grant_id) = grant["id"].as_str() {
                out(&format!(
                    "Granted {} {} for {} (grant {grant_id}{})",
                    grant["agent"].as_str().unwrap_or_default(),
                    grant["tools"].as_str().unwrap_or_default(),
                    grant["remaining"].as_str().unwrap_or_default(),
                    grant["max_calls"]
                        .as_u64()
                        .map(|n| format!(", at most {n} calls"))
                        .unwrap_or_default(),
                ));
            }
            Ok(())
        }
        Resolution::NotFound => Err(CliError::NotFound(id.to_owned())),
        Resolution::AlreadyResolved => Err(CliError::AlreadyResolved(id.to_owned())),
        Resolution::Unexpected(reply) if matches!(reply.status, 400 | 403) => Err(reply.refused()),
        Resolution::Unexpected(reply) => Err(reply.unexpected()),
    }
}

async fn halt(
    mesh: &Mesh,
    agent: Option<String>,
    session: Option<String>,
    all: bool,
    reason: Option<String>,
) -> Result<(), CliError> {
    let (mut body, what) = match (agent, session) {
        (Some(agent), _) => (json!({ "agent": agent }), format!("agent {agent}")),
        (None, Some(session)) => (json!({ "session": session }), format!("session {session}")),
        (None, None) => (json!({ "all": all }), "every call".to_owned()),
    };
    body["reason"] = Value::String(reason.unwrap_or_default());
    body["created_by"] = Value::String(resolved_by());
    let reply = mesh
        .send(Method::POST, mesh.url(&["halts"]), Some(&body))
        .await?;
    match reply.status {
        201 => {
            let id = serde_json::from_str::<Value>(&reply.body)
                .ok()
                .and_then(|v| v["id"].as_str().map(str::to_owned))
                .unwrap_or_default();
            out(&format!("Halted {what}: {id}"));
            Ok(())
        }
        400 => Err(reply.refused()),
        _ => Err(reply.unexpected()),
    }
}

/// `GET url`: the API's JSON printed as is with `raw`, else the list, or `none` printed when it
/// is empty; `None` when there is nothing left to print.
async fn listing<T: serde::de::DeserializeOwned>(
    mesh: &Mesh,
    url: Url,
    raw: bool,
    none: &str,
) -> Result<Option<Vec<T>>, CliError> {
    let reply = mesh.send(Method::GET, url, None).await?;
    if raw {
        out(reply.body.trim_end());
        return Ok(None);
    }
    let list: Vec<T> = reply.parse()?;
    if list.is_empty() {
        out(none);
        return Ok(None);
    }
    Ok(Some(list))
}

async fn halts(mesh: &Mesh, raw: bool) -> Result<(), CliError> {
    let url = mesh.url(&["halts"]);
    let Some(list) = listing::<HaltView>(mesh, url, raw, "no halts").await? else {
        return Ok(());
    };
    let mut rows = vec![["ID", "SCOPE", "TARGET", "SINCE", "BY", "REASON"].map(str::to_owned)];
    rows.extend(list.into_iter().map(|h| {
        [
            h.id,
            h.scope,
            h.target,
            h.created_at,
            h.created_by,
            h.reason,
        ]
    }));
    out(render_table(&rows).trim_end());
    Ok(())
}

async fn grants(mesh: &Mesh, raw: bool) -> Result<(), CliError> {
    let url = mesh.url(&["grants"]);
    let Some(list) = listing::<GrantView>(mesh, url, raw, "no grants").await? else {
        return Ok(());
    };
    let mut rows =
        vec![["ID", "AGENT", "TOOLS", "REMAINING", "CALLS", "FROM", "BY"].map(str::to_owned)];
    rows.extend(list.into_iter().map(|g| {
        let calls = match (g.calls, g.max_calls) {
            (calls, Some(max)) => format!("{}/{max}", calls.unwrap_or_default()),
            (Some(calls), None) => calls.to_string(),
            (None, None) => "-".to_owned(),
        };
        [
            g.id,
            g.agent,
            g.tools,
            g.remaining,
            calls,
            g.parent.unwrap_or_else(|| "-".to_owned()),
            g.granted_by,
        ]
    }));
    out(render_table(&rows).trim_end());
    Ok(())
}

async fn grant(mesh: &Mesh, body: &Value) -> Result<(), CliError> {
    let reply = mesh
        .send(Method::POST, mesh.url(&["grants"]), Some(body))
        .await?;
    match reply.status {
        201 => {
            let g: GrantView =
                serde_json::from_str(&reply.body).map_err(|e| CliError::BadAnswer {
                    url: reply.url.clone(),
                    reason: e.to_string(),
                })?;
            let limit = g
                .max_calls
                .map(|n| format!(", at most {n} calls"))
                .unwrap_or_default();
            let from = g.parent.map(|p| format!(", from {p}")).unwrap_or_default();
            out(&format!(
                "Granted {} {} for {} (grant {}{limit}{from})",
                g.agent, g.tools, g.remaining, g.id
            ));
            Ok(())
        }
        400 | 403 | 404 => Err(reply.refused()),
        _ => Err(reply.unexpected()),
    }
}

async fn revoke(mesh: &Mesh, id: &str) -> Result<(), CliError> {
    let reply = mesh
        .send(Method::DELETE, mesh.url(&["grants", id]), None)
        .await?;
    match reply.status {
        200 => {
            let answer: Value = reply.parse()?;
            out(&format!("Revoked: {id}"));
            if let Some(with) = answer["revoked_with"].as_array() {
                let ids: Vec<&str> = with.iter().filter_map(Value::as_str).collect();
                out(&format!(
                    "  with the grants delegated from it: {}",
                    ids.join(", ")
                ));
            }
            Ok(())
        }
        404 | 409 => Err(reply.refused()),
        _ => Err(reply.unexpected()),
    }
}

async fn lift(mesh: &Mesh, id: &str) -> Result<(), CliError> {
    let reply = mesh
        .send(Method::DELETE, mesh.url(&["halts", id]), None)
        .await?;
    match reply.status {
        200 => {
            out(&format!("Lifted: {id}"));
            Ok(())
        }
        404 => Err(CliError::HaltNotFound(id.to_owned())),
        _ => Err(reply.unexpected()),
    }
}

async fn taint(mesh: &Mesh, agent: Option<&str>, raw: bool) -> Result<(), CliError> {
    let mut url = mesh.url(&["taint"]);
    if let Some(agent) = agent {
        url.query_pairs_mut().append_pair("agent", agent);
    }
    url.query_pairs_mut().append_pair("limit", "10000");
    let Some(list) = listing::<TaintedView>(mesh, url, raw, "no labelled sessions").await? else {
        return Ok(());
    };
    let mut rows = vec![["AGENT", "SESSION", "LABEL", "BY TOOL", "SINCE"].map(str::to_owned)];
    for session in list {
        for label in session.labels {
            rows.push([
                session.agent.clone(),
                session.session.clone(),
                label.label,
                label.tool,
                label.at,
            ]);
        }
    }
    out(render_table(&rows).trim_end());
    Ok(())
}

async fn untaint(mesh: &Mesh, agent: &str, session: &str) -> Result<(), CliError> {
    let mut url = mesh.url(&["taint"]);
    url.query_pairs_mut()
        .append_pair("agent", agent)
        .append_pair("session", session);
    let reply = mesh.send(Method::DELETE, url, None).await?;
    match reply.status {
        200 => {
            out(&format!("Cleared: {agent} {session:?}"));
            Ok(())
        }
        404 => Err(CliError::Refused(format!(
            "session {session:?} of {agent} has no labels"
        ))),
        400 => Err(reply.refused()),
        _ => Err(reply.unexpected()),
    }
}

/// A labelled session as `GET /taint` lists it.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TaintedView {
    agent: String,
    session: String,
    labels: Vec<TaintLabelView>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TaintLabelView {
    label: String,
    tool: String,
    at: String,
}

async fn pins(mesh: &Mesh, raw: bool) -> Result<(), CliError> {
    let reply = mesh.send(Method::GET, mesh.url(&["pins"]), None).await?;
    if raw {
        out(reply.body.trim_end());
        return Ok(());
    }
    let servers: Vec<PinnedServer> = reply.parse()?;
    out(render_pins(&servers).trim_end());
    Ok(())
}

/// The drift of every pinned server as a table, then the old and new description of each tool
/// whose description changed (what an agent would be told).
fn render_pins(servers: &[PinnedServer]) -> String {
    if servers.is_empty() {
        return "no server has pin_tools".to_owned();
    }
    let mut rows =
        vec![["SERVER", "STATUS", "PINNED", "TOOL", "CHANGE", "FIELDS"].map(str::to_owned)];
    let mut details = String::new();
    for server in servers {
        let pinned = if server.seen {
            server.pinned.len().to_string()
        } else {
            "not yet".to_owned()
        };
        if server.drift.is_empty() {
            rows.push([
                server.server.clone(),
                server.status.clone(),
                pinned.clone(),
                String::new(),
                "none".to_owned(),
                String::new(),
            ]);
        }
        for change in &server.drift {
            rows.push([
                server.server.clone(),
                server.status.clone(),
                pinned.clone(),
                change.tool.clone(),
                change.change.clone(),
                change.fields.join(","),
            ]);
            if change.fields.iter().any(|f| f == "description") {
                let text = |def: &Value| def["description"].as_str().unwrap_or_default().to_owned();
                details.push_str(&format!(
                    "\n{}.{} description\n  pinned:  {}\n  current: {}\n",
                    server.server,
                    change.tool,
                    text(&change.pinned),
                    text(&change.current)
                ));
            }
        }
    }
    format!("{}{details}", render_table(&rows))
}

async fn accept_tools(mesh: &Mesh, server: &str, tools: Vec<String>) -> Result<(), CliError> {
    let mut body = json!({ "accepted_by": resolved_by() });
    if !tools.is_empty() {
        body["tools"] = json!(tools);
    }
    let reply = mesh
        .send(
            Method::POST,
            mesh.url(&["pins", server, "accept"]),
            Some(&body),
        )
        .await?;
    match reply.status {
        200 => {
            let done: Value = reply.parse()?;
            let names = |key: &str| {
                done[key]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default()
            };
            let (pinned, removed) = (names("pinned"), names("removed"));
            if pinned.is_empty() && removed.is_empty() {
                out(&format!("{server}: nothing to accept"));
            } else {
                out(&format!("{server}: pinned [{pinned}], removed [{removed}]"));
            }
            Ok(())
        }
        400 | 404 | 409 => Err(reply.refused()),
        _ => Err(reply.unexpected()),
    }
}

/// A server of `GET /pins`; only the fields the CLI shows.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PinnedServer {
    server: String,
    status: String,
    seen: bool,
    pinned: Vec<Value>,
    drift: Vec<DriftView>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DriftView {
    tool: String,
    change: String,
    fields: Vec<String>,
    pinned: Value,
    current: Value,
}

/// A grant as the control plane shows it; only the fields the CLI uses.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct GrantView {
    id: String,
    agent: String,
    tools: String,
    remaining: String,
    granted_by: String,
    max_calls: Option<u64>,
    calls: Option<u64>,
    parent: Option<String>,
}

/// A halt as the control plane lists it; only the fields the CLI shows.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct HaltView {
    id: String,
    scope: String,
    target: String,
    reason: String,
    created_by: String,
    created_at: String,
}

/// flux7's interactive loop: every new pending approval is shown once and answered a, d or s.
async fn watch(mesh: &Mesh) -> Result<(), CliError> {
    out("mesh watch — waiting for approvals (ctrl+c to quit)");
    out("");
    let mut input = spawn_line_reader();
    let color = std::io::stdout().is_terminal();
    // Only ids still pending are remembered, so this stays as small as the queue.
    let mut seen: HashSet<String> = HashSet::new();
    let mut last_problem: Option<String> = None;
    loop {
        match mesh
            .pending()
            .await
            .and_then(|r| r.parse::<Vec<ApprovalView>>())
        {
            Ok(list) => {
                last_problem = None;
                seen.retain(|id| list.iter().any(|a| &a.id == id));
                for a in &list {
                    if seen.contains(&a.id) {
                        continue;
                    }
                    out(render_new(a, color).trim_end());
                    if !prompt_until_answered(mesh, a, &mut input).await? {
                        return Ok(());
                    }
                    seen.insert(a.id.clone());
                    out("");
                }
            }
            Err(e @ CliError::Unauthorized { .. }) => return Err(e),
            Err(e) => {
                // Keep polling through an outage, saying so once rather than every 2 s.
                let text = e.to_string();
                if last_problem.as_deref() != Some(&text) {
                    err(&text);
                    last_problem = Some(text);
                }
            }
        }
        // Input typed while nothing is pending answers nothing; end of input ends the watch.
        let idle = tokio::time::sleep(POLL_EVERY);
        tokio::pin!(idle);
        loop {
            tokio::select! {
                () = &mut idle => break,
                line = input.recv() => if line.is_none() { return Ok(()) },
            }
        }
    }
}

/// Prompts for one approval until a valid answer; false when input ended.
async fn prompt_until_answered(
    mesh: &Mesh,
    a: &ApprovalView,
    input: &mut tokio::sync::mpsc::Receiver<String>,
) -> Result<bool, CliError> {
    loop {
        prompt("  [a]pprove / [d]eny / [s]kip ? ");
        let Some(line) = input.recv().await else {
            out("");
            return Ok(false);
        };
        let verdict = match Answer::parse(&line) {
            Some(Answer::Approve) => Verdict::Approve,
            Some(Answer::Deny) => Verdict::Deny,
            Some(Answer::Skip) => return Ok(true),
            None => {
                out("  type a, d, or s");
                continue;
            }
        };
        // The full id: a short one could become ambiguous while the prompt waits.
        match mesh.resolve(&a.id, verdict, None, None).await {
            Ok(Resolution::Done(_)) => out(&format!("  {}", verdict.done())),
            Ok(Resolution::NotFound) => err("  not found"),
            Ok(Resolution::AlreadyResolved) => out("  already resolved"),
            Ok(Resolution::Unexpected(reply)) => err(&format!("  error: status {}", reply.status)),
            Err(e @ CliError::Unauthorized { .. }) => return Err(e),
            Err(e) => err(&format!("  error: {e}")),
        }
        return Ok(true);
    }
}

/// Reads stdin lines on a plain thread (a blocked read cannot be cancelled, and the process
/// may exit while it waits). The channel closes at end of input.
fn spawn_line_reader() -> tokio::sync::mpsc::Receiver<String> {
    let (tx, rx) = tokio::sync::mpsc::channel(INPUT_BACKLOG);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Approve,
    Deny,
    Skip,
}

impl Answer {
    fn parse(line: &str) -> Option<Self> {
        match line.trim().to_lowercase().as_str() {
            "a" | "approve" => Some(Self::Approve),
            "d" | "deny" => Some(Self::Deny),
            "s" | "skip" => Some(Self::Skip),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Approve,
    Deny,
}

impl Verdict {
    fn route(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Deny => "deny",
        }
    }

    fn done(self) -> &'static str {
        match self {
            Self::Approve => "Approved",
            Self::Deny => "Denied",
        }
    }
}

enum Resolution {
    /// The daemon's answer.
    Done(Value),
    NotFound,
    AlreadyResolved,
    Unexpected(Reply),
}

/// What the CLI reports before exiting non-zero.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("invalid mesh7 URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot reach mesh7 at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{}", unauthorized_text(url, *token_sent))]
    Unauthorized { url: String, token_sent: bool },
    #[error("unexpected status: {status}{detail}")]
    Unexpected { status: u16, detail: String },
    #[error("unexpected answer from mesh7 at {url}: {reason}")]
    BadAnswer { url: String, reason: String },
    #[error("approval {0} not found")]
    NotFound(String),
    #[error("approval {0} already resolved")]
    AlreadyResolved(String),
    #[error("halt {0} not found")]
    HaltNotFound(String),
    /// The daemon refused the request as malformed (400), with its reason.
    #[error("refused: {0}")]
    Refused(String),
}

impl CliError {
    fn exit_code(&self) -> u8 {
        match self {
            Self::BadUrl { .. }
            | Self::NotFound(_)
            | Self::AlreadyResolved(_)
            | Self::HaltNotFound(_)
            | Self::Refused(_) => 1,
            Self::Unreachable { .. }
            | Self::Unauthorized { .. }
            | Self::Unexpected { .. }
            | Self::BadAnswer { .. } => 2,
        }
    }
}

fn unauthorized_text(url: &str, token_sent: bool) -> String {
    if token_sent {
        format!(
            "mesh7 at {url} refused MESH_ADMIN_TOKEN (401): it does not match the daemon's admin token"
        )
    } else {
        format!(
            "mesh7 at {url} requires the admin token (401): set MESH_ADMIN_TOKEN to the daemon's admin_token"
        )
    }
}

/// The control-plane client.
struct Mesh {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
}

/// A response whose status the caller interprets.
#[derive(Debug)]
struct Reply {
    url: String,
    status: u16,
    body: String,
}

impl Reply {
    fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, CliError> {
        if self.status != 200 {
            return Err(self.unexpected());
        }
        serde_json::from_str(&self.body).map_err(|e| CliError::BadAnswer {
            url: self.url.clone(),
            reason: e.to_string(),
        })
    }

    /// The API's `{"error": …}` text, if the body has one.
    fn error_text(&self) -> Option<String> {
        serde_json::from_str::<Value>(&self.body)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
    }

    /// The daemon refused the request as it stands: its reason (the body when it gave none).
    fn refused(&self) -> CliError {
        CliError::Refused(self.error_text().unwrap_or_else(|| self.body.clone()))
    }

    fn unexpected(&self) -> CliError {
        let detail = self
            .error_text()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        CliError::Unexpected {
            status: self.status,
            detail,
        }
    }
}

impl Mesh {
    fn new(url: &str, token: Option<String>) -> Result<Self, CliError> {
        let bad = |reason: String| CliError::BadUrl {
            url: url.to_owned(),
            reason,
        };
        let base = Url::parse(url).map_err(|e| bad(e.to_string()))?;
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            return Err(bad("expected an http:// URL".to_owned()));
        }
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| bad(e.to_string()))?;
        Ok(Self { http, base, token })
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            // Ids go in as escaped segments, so no input can reach another route.
            path.pop_if_empty().extend(segments);
        }
        url
    }

    fn display_base(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_owned()
    }

    async fn pending(&self) -> Result<Reply, CliError> {
        let mut url = self.url(&["approvals"]);
        url.query_pairs_mut().append_pair("status", "pending");
        self.send(Method::GET, url, None).await
    }

    async fn approval(&self, id: &str) -> Result<Reply, CliError> {
        let reply = self
            .send(Method::GET, self.url(&["approvals", id]), None)
            .await?;
        if reply.status == 404 {
            return Err(CliError::NotFound(id.to_owned()));
        }
        Ok(reply)
    }

    async fn resolve(
        &self,
        id: &str,
        verdict: Verdict,
        reason: Option<String>,
        grant: Option<Value>,
    ) -> Result<Resolution, CliError> {
        let mut body = json!({ "resolved_by": resolved_by() });
        if let Some(reason) = reason.filter(|r| !r.is_empty()) {
            body["reasoning"] = Value::String(reason);
        }
        if let Some(grant) = grant {
            body["grant"] = grant;
        }
        let url = self.url(&["approvals", id, verdict.route()]);
        let reply = self.send(Method::POST, url, Some(&body)).await?;
        Ok(match reply.status {
            200 => Resolution::Done(serde_json::from_str(&reply.body).unwrap_or(Value::Null)),
            404 => Resolution::NotFound,
            409 => Resolution::AlreadyResolved,
            _ => Resolution::Unexpected(reply),
        })
    }

    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> Result<Reply, CliError> {
        let unreachable = |e: &reqwest::Error| CliError::Unreachable {
            url: self.display_base(),
            reason: root_cause(e),
        };
        let mut req = self.http.request(method, url.clone());
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let resp = req.send().await.map_err(|e| unreachable(&e))?;
        let status = resp.status().as_u16();
        let body = resp.text().await.map_err(|e| unreachable(&e))?;
        if status == 401 {
            return Err(CliError::Unauthorized {
                url: self.display_base(),
                token_sent: self.token.is_some(),
            });
        }
        Ok(Reply {
            url: url.to_string(),
            status,
            body,
        })
    }
}

/// The innermost cause is the informative one ("Connection refused (os error 111)").
fn root_cause(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

fn resolved_by() -> String {
    let user = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    format!("cli:{user}")
}

/// The approval view of the control plane; only the fields the CLI shows.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ApprovalView {
    id: String,
    agent_id: String,
    tool: String,
    params: Value,
    policy_rule: String,
    status: String,
    created_at: String,
    remaining: Option<String>,
    resolved_by: Option<String>,
    reasoning: Option<String>,
}

impl ApprovalView {
    /// The arguments in the order the API lists them (none when absent or not an object).
    fn params(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.params.as_object().into_iter().flatten()
    }

    fn age(&self, now: DateTime<Utc>) -> String {
        DateTime::parse_from_rfc3339(&self.created_at).map_or_else(
            |_| "-".to_owned(),
            |created| {
                let age = (now - created.with_timezone(&Utc))
                    .to_std()
                    .unwrap_or_default();
                format_secs(age)
            },
        )
    }
}

fn short_id(id: &str) -> &str {
    id.char_indices().nth(8).map_or(id, |(i, _)| &id[..i])
}

/// A parameter value as a person reads it: strings bare, anything else as compact JSON.
fn display_value(v: &Value, max_chars: usize) -> String {
    let text = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

/// The pending approvals as flux7's table.
fn render_pending(list: &[ApprovalView], now: DateTime<Utc>) -> String {
    if list.is_empty() {
        return "no pending approvals\n".to_owned();
    }
    let mut rows = vec![["ID", "AGE", "AGENT", "TOOL", "REMAINING"].map(str::to_owned)];
    rows.extend(list.iter().map(|a| {
        [
            short_id(&a.id).to_owned(),
            a.age(now),
            a.agent_id.clone(),
            a.tool.clone(),
            a.remaining.clone().unwrap_or_default(),
        ]
    }));
    render_table(&rows)
}

/// flux7's table: columns padded by two spaces (as Go's tabwriter), the last one unpadded.
fn render_table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == N {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}", width = widths[i] + 2));
            }
        }
        text.push('\n');
    }
    text
}

fn render_show(a: &ApprovalView, now: DateTime<Utc>) -> String {
    let mut lines = vec![
        format!("ID:       {}", a.id),
        format!("Agent:    {}", a.agent_id),
        format!("Tool:     {}", a.tool),
        format!("Policy:   {}", a.policy_rule),
        format!("Status:   {}", a.status),
        format!("Age:      {}", a.age(now)),
    ];
    if let Some(rem) = a.remaining.as_deref().filter(|r| !r.is_empty()) {
        lines.push(format!("Timeout:  {rem} remaining"));
    }
    if let Some(by) = a.resolved_by.as_deref().filter(|r| !r.is_empty()) {
        lines.push(format!("Resolved: {by}"));
    }
    if let Some(why) = a.reasoning.as_deref().filter(|r| !r.is_empty()) {
        lines.push(format!("Reason:   {why}"));
    }
    if a.params().next().is_some() {
        lines.push("Params:".to_owned());
        for (k, v) in a.params() {
            lines.push(format!("  {k}: {}", display_value(v, SHOW_VALUE_CHARS)));
        }
    }
    lines.join("\n") + "\n"
}

fn render_new(a: &ApprovalView, color: bool) -> String {
    let marker = if color {
        "\u{1b}[1;33m>> NEW\u{1b}[0m"
    } else {
        ">> NEW"
    };
    let mut text = format!(
        "{marker}  {}  {}  {}\n",
        short_id(&a.id),
        a.agent_id,
        a.tool
    );
    for (k, v) in a.params() {
        text.push_str(&format!(
            "        {k}: {}\n",
            display_value(v, WATCH_VALUE_CHARS)
        ));
    }
    text.push_str(&format!(
        "        remaining: {}\n",
        a.remaining.as_deref().unwrap_or("")
    ));
    text
}

fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    // A closed stdout (e.g. `mesh pending | head -1`) is not worth failing over.
    let _ = writeln!(stdout, "{text}");
}

fn prompt(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = write!(stdout, "{text}");
    let _ = stdout.flush();
}

fn err(text: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{text}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: &str, agent: &str, tool: &str, created_at: &str, remaining: &str) -> ApprovalView {
        ApprovalView {
            id: id.to_owned(),
            agent_id: agent.to_owned(),
            tool: tool.to_owned(),
            status: "pending".to_owned(),
            created_at: created_at.to_owned(),
            remaining: Some(remaining.to_owned()),
            ..ApprovalView::default()
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn pending_table_pads_columns_like_tabwriter() {
        let now = at("2026-01-01T10:05:00Z");
        let list = [
            view(
                "0123456789abcdef",
                "support-bot",
                "payments.refund",
                "2026-01-01T10:00:30.123456789Z",
                "30s",
            ),
            view(
                "fedcba9876543210",
                "ops",
                "ls.run",
                "2026-01-01T08:05:00Z",
                "1h0m0s",
            ),
        ];
        assert_eq!(
            render_pending(&list, now),
            "ID        AGE     AGENT        TOOL             REMAINING\n\
             01234567  4m29s   support-bot  payments.refund  30s\n\
             fedcba98  2h0m0s  ops          ls.run           1h0m0s\n"
        );
        assert_eq!(render_pending(&[], now), "no pending approvals\n");
    }

    #[test]
    fn age_is_never_negative_and_tolerates_a_bad_timestamp() {
        let now = at("2026-01-01T10:00:00Z");
        let table = [
            ("2026-01-01T10:00:05Z", "0s"),
            ("2026-01-01T09:59:59.9Z", "0s"),
            ("2026-01-01T10:00:00+01:00", "1h0m0s"),
            ("yesterday", "-"),
        ];
        for (created, age) in table {
            assert_eq!(view("x", "a", "t", created, "").age(now), age, "{created}");
        }
    }

    #[test]
    fn show_lists_fields_and_cut_params() {
        let mut a = view(
            "0123456789abcdef",
            "bot",
            "echo.run",
            "2026-01-01T10:00:00Z",
            "4m30s",
        );
        a.policy_rule = "gate".to_owned();
        a.params = json!({
            "args": ["one", 2],
            "note": "x".repeat(130),
        });
        let text = render_show(&a, at("2026-01-01T10:00:30Z"));
        assert_eq!(
            text,
            format!(
                "ID:       0123456789abcdef\nAgent:    bot\nTool:     echo.run\nPolicy:   gate\n\
                 Status:   pending\nAge:      30s\nTimeout:  4m30s remaining\nParams:\n  \
                 args: [\"one\",2]\n  note: {}...\n",
                "x".repeat(120)
            )
        );
    }

    #[test]
    fn show_of_a_resolved_approval_names_who_and_why() {
        let mut a = view("ab", "bot", "t", "2026-01-01T10:00:00Z", "");
        a.status = "denied".to_owned();
        a.remaining = None;
        a.resolved_by = Some("cli:ana".to_owned());
        a.reasoning = Some("too risky".to_owned());
        let text = render_show(&a, at("2026-01-01T10:00:00Z"));
        assert!(!text.contains("Timeout:"), "{text}");
        assert!(
            text.contains("\nResolved: cli:ana\nReason:   too risky\n"),
            "{text}"
        );
    }

    #[test]
    fn new_approval_block_shows_short_id_params_and_remaining() {
        let mut a = view("0123456789abcdef", "bot", "echo.run", "", "1m0s");
        a.params = json!({"cmd": "é".repeat(90), "n": 1_000_000});
        assert_eq!(
            render_new(&a, false),
            format!(
                ">> NEW  01234567  bot  echo.run\n        cmd: {}...\n        n: 1000000\n        remaining: 1m0s\n",
                "é".repeat(80)
            )
        );
        assert!(render_new(&a, true).starts_with("\u{1b}[1;33m>> NEW\u{1b}[0m  01234567"));
    }

    #[test]
    fn answers_are_read_like_flux7() {
        let table = [
            ("a", Some(Answer::Approve)),
            (" Approve \r", Some(Answer::Approve)),
            ("D", Some(Answer::Deny)),
            ("deny", Some(Answer::Deny)),
            ("s", Some(Answer::Skip)),
            ("skip", Some(Answer::Skip)),
            ("", None),
            ("yes", None),
            ("ad", None),
        ];
        for (line, answer) in table {
            assert_eq!(Answer::parse(line), answer, "{line:?}");
        }
    }

    #[test]
    fn exit_codes_separate_user_errors_from_daemon_trouble() {
        let table = [
            (CliError::NotFound("x".into()), 1),
            (CliError::AlreadyResolved("x".into()), 1),
            (
                CliError::BadUrl {
                    url: "x".into(),
                    reason: "r".into(),
                },
                1,
            ),
            (
                CliError::Unreachable {
                    url: "u".into(),
                    reason: "r".into(),
                },
                2,
            ),
            (
                CliError::Unauthorized {
                    url: "u".into(),
                    token_sent: false,
                },
                2,
            ),
            (
                CliError::Unexpected {
                    status: 500,
                    detail: String::new(),
                },
                2,
            ),
        ];
        for (e, code) in table {
            assert_eq!(e.exit_code(), code, "{e}");
        }
    }

    #[test]
    fn ids_cannot_escape_their_path_segment() {
        let mesh = Mesh::new("http://127.0.0.1:9/prefix/", None).unwrap();
        assert_eq!(
            mesh.url(&["approvals", "../grants", "approve"]).as_str(),
            "http://127.0.0.1:9/prefix/approvals/..%2Fgrants/approve"
        );
        assert_eq!(mesh.display_base(), "http://127.0.0.1:9/prefix");
        assert!(matches!(
            Mesh::new("localhost:9090", None),
            Err(CliError::BadUrl { .. })
        ));
    }

    #[test]
    fn unexpected_status_carries_the_api_error() {
        let reply = Reply {
            url: "u".into(),
            status: 503,
            body: "{\"error\":\"queue full\"}\n".into(),
        };
        assert_eq!(
            reply.unexpected().to_string(),
            "unexpected status: 503 (queue full)"
        );
    }
}
