//! The tool registry: every tool an agent can call, by name, with where it goes.
//!
//! Resolution happens before policy so that policy always sees the *effective* tool: a call to a
//! CLI catch-all (`gh.__dispatch` with `command: pr`, or an undeclared `gh.pr`) is evaluated as
//! `gh.pr`, so a catch-all can never bypass a rule written for a command.

use std::collections::BTreeMap;
use std::sync::Arc;

use mesh7_actors::cli::{CliCatalog, CliInvocation, CliKind, CliTool};
use mesh7_config::Action;
use serde_json::{Value, json};

use crate::error::PipelineError;

/// Where a call is forwarded.
#[derive(Debug, Clone)]
pub enum ToolSource {
    Cli(Arc<CliTool>),
}

impl ToolSource {
    pub fn kind(&self) -> &'static str {
        match self {
            ToolSource::Cli(_) => "cli",
        }
    }
}

/// What agents see of a tool (MCP `tools/list`, `mesh.catalog`).
#[derive(Debug, Clone)]
pub struct ToolView {
    pub name: String,
    pub description: String,
    /// The whole JSON schema of the arguments, as the source declares it.
    pub input_schema: Value,
    pub output_schema: Option<Value>,
    pub annotations: Option<Value>,
    pub title: Option<String>,
    /// `mcp`, `cli` or `openapi`.
    pub source: &'static str,
    /// Catalog group: the MCP server name, the CLI tool name, or `openapi`.
    pub group: String,
    /// How the group runs (`command args…`, a URL, a binary).
    pub runtime: String,
}

/// A call ready to be governed: the name policy evaluates and what will run if allowed.
#[derive(Debug)]
pub struct ResolvedCall {
    pub effective_name: String,
    /// What the tool's source says when no policy rule matches (CLI `default_action`).
    pub default_action: Option<Action>,
    pub target: Target,
}

#[derive(Debug)]
pub enum Target {
    Cli(CliInvocation),
}

/// All tools, built once at start-up.
#[derive(Debug, Default)]
pub struct Registry {
    cli: Option<CliCatalog>,
    names: BTreeMap<String, ToolSource>,
}

impl Registry {
    pub fn new(cli: CliCatalog) -> Self {
        let names = cli
            .tools()
            .iter()
            .map(|t| (t.name.clone(), ToolSource::Cli(t.clone())))
            .collect();
        Self {
            cli: Some(cli),
            names,
        }
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Tools in name order.
    pub fn tools(&self) -> impl Iterator<Item = (&str, &ToolSource)> {
        self.names.iter().map(|(n, s)| (n.as_str(), s))
    }

    /// Finds the tool for a called name (with CLI dispatch fallback).
    pub fn resolve(&self, name: &str, args: &Value) -> Result<ResolvedCall, PipelineError> {
        if let Some(cli) = &self.cli
            && let Some(found) = cli.resolve(name, args)
        {
            let inv = found.map_err(|e| PipelineError::InvalidRequest(e.to_string()))?;
            return Ok(ResolvedCall {
                effective_name: inv.effective_name.clone(),
                default_action: inv.tool.default_action,
                target: Target::Cli(inv),
            });
        }
        Err(PipelineError::UnknownTool(name.to_owned()))
    }

    /// Every tool with its schemas, in name order.
    pub fn list(&self) -> Vec<ToolView> {
        self.names
            .iter()
            .map(|(name, source)| match source {
                ToolSource::Cli(t) => ToolView {
                    name: name.clone(),
                    description: t.description.clone(),
                    input_schema: t.input_schema.clone(),
                    output_schema: None,
                    annotations: None,
                    title: None,
                    source: "cli",
                    group: t.cli.clone(),
                    runtime: t.bin.clone(),
                },
            })
            .collect()
    }

    /// `GET /tools` entries (flux7 §3.6 shape). CLI `env` values are never shown.
    pub fn describe(&self) -> Vec<Value> {
        self.names
            .iter()
            .map(|(name, source)| match source {
                ToolSource::Cli(t) => json!({
                    "name": name,
                    "description": t.description,
                    "method": "",
                    "path": "",
                    "base_url": "",
                    "source": "cli",
                    "input_schema": t.input_schema,
                    "cli_meta": {
                        "bin": t.bin,
                        "command": t.command.clone().unwrap_or_default(),
                        "allowed_args": t.allowed_args,
                        "timeout": u64::try_from(t.timeout.as_nanos()).unwrap_or(u64::MAX),
                        "working_dir": t.working_dir,
                        "env_keys": t.env.keys().collect::<Vec<_>>(),
                        "strict": t.strict,
                        "default_action": t.default_action.map_or("deny", Action::as_str),
                        "is_catch_all": matches!(t.kind, CliKind::CatchAll),
                    },
                }),
            })
            .collect()
    }
}
