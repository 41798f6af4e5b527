//! The tool registry: every tool an agent can call, by name, with where it goes.
//!
//! Resolution happens before policy so that policy always sees the *effective* tool: a call to a
//! CLI catch-all (`gh.__dispatch` with `command: pr`, or an undeclared `gh.pr`) is evaluated as
//! `gh.pr`, so a catch-all can never bypass a rule written for a command.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use mesh7_actors::cli::{CliCatalog, CliInvocation, CliKind, CliTool};
use mesh7_actors::pins::{Pins, Unpinned};
use mesh7_actors::upstream::{McpTool, Upstream};
use mesh7_config::{Action, PolicySet, ToolHints};
use serde_json::{Value, json};

use crate::error::PipelineError;
use crate::openapi::OpenApiTool;

/// Where a call is forwarded.
#[derive(Debug, Clone)]
pub enum ToolSource {
    Cli(Arc<CliTool>),
    OpenApi(Arc<OpenApiTool>),
}

impl ToolSource {
    pub fn kind(&self) -> &'static str {
        match self {
            ToolSource::Cli(_) => "cli",
            ToolSource::OpenApi(_) => "openapi",
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
    /// A tool of an upstream MCP server, called by its un-namespaced name.
    Mcp {
        upstream: Upstream,
        tool: String,
    },
    /// An operation of an OpenAPI backend.
    OpenApi {
        tool: Arc<OpenApiTool>,
    },
}

/// Which tools an agent's listings show (`server.hide_denied_tools`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Listing {
    /// Every tool, whatever the policy says of it (flux7).
    #[default]
    All,
    /// Not the MCP and OpenAPI tools the agent's policy denies whatever their arguments.
    WithoutDenied,
}

impl Listing {
    pub fn new(hide_denied_tools: bool) -> Listing {
        if hide_denied_tools {
            Listing::WithoutDenied
        } else {
            Listing::All
        }
    }

    /// Whether a listing made for `agent` shows the tool `name` of `source` (`mcp`, `cli`,
    /// `openapi`), which says `hints` of itself. CLI tools are always shown: the name their
    /// policy sees depends on the call's arguments (a subcommand), so no listing can tell it
    /// is always denied.
    fn shows(
        self,
        policies: &PolicySet,
        agent: &str,
        name: &str,
        source: &str,
        hints: impl FnOnce() -> ToolHints,
    ) -> bool {
        match self {
            Listing::All => true,
            Listing::WithoutDenied => {
                source == "cli" || !policies.always_denies(agent, name, &hints())
            }
        }
    }
}

/// All tools. CLI (and other static) tools are fixed at start-up; upstream MCP tools are read
/// from each server's live snapshot, so a reconnect or `tools/list_changed` shows at once.
#[derive(Debug, Default)]
pub struct Registry {
    cli: Option<CliCatalog>,
    names: BTreeMap<String, ToolSource>,
    upstreams: Vec<Upstream>,
    listing: Listing,
    /// Catalogue pins (`pin_tools`): a tool differing from its pin is neither listed nor run.
    pins: Option<Pins>,
}

impl Registry {
    pub fn new(cli: CliCatalog, upstreams: Vec<Upstream>) -> Self {
        let names = cli
            .tools()
            .iter()
            .map(|t| (t.name.clone(), ToolSource::Cli(t.clone())))
            .collect();
        Self {
            cli: Some(cli),
            names,
            upstreams,
            listing: Listing::All,
            pins: None,
        }
    }

    /// Checks the MCP tools of the servers with `pin_tools` against their pins.
    #[must_use]
    pub fn with_pins(mut self, pins: Pins) -> Self {
        self.pins = Some(pins);
        self
    }

    pub fn pins(&self) -> Option<&Pins> {
        self.pins.as_ref()
    }

    /// Grows whenever what `list` can show changes: an upstream's tool list is replaced, or
    /// the pins change. (A policy reload that changes what `hide_denied_tools` leaves out is
    /// counted by [`crate::pipeline::Pipeline::tools_version`].)
    pub fn catalogue_version(&self) -> u64 {
        let upstreams: u64 = self.upstreams.iter().map(Upstream::tools_version).sum();
        upstreams + self.pins.as_ref().map_or(0, Pins::version)
    }

    /// Resolves once [`Registry::catalogue_version`] differs from `seen` (at once if it does).
    pub async fn catalogue_changed(&self, seen: u64) {
        type Wait<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;
        loop {
            // Each part's version is read before its wait starts, and a wait returns at once
            // if its part moved since: no change between the two is missed.
            let mut waits: Vec<Wait<'_>> = Vec::new();
            for upstream in &self.upstreams {
                waits.push(Box::pin(
                    upstream.tools_changed_since(upstream.tools_version()),
                ));
            }
            if let Some(pins) = &self.pins {
                waits.push(Box::pin(pins.changed_since(pins.version())));
            }
            if self.catalogue_version() != seen {
                return;
            }
            if waits.is_empty() {
                // No upstream and no pins: the catalogue never changes.
                std::future::pending::<()>().await;
            }
            futures_util::future::select_all(waits).await;
        }
    }

    /// Why the target may not run, when it is a tool of a pinned server whose live definition
    /// is not the pinned one. Read from the server's current list, so a change that arrived
    /// while the call waited (for an approval) counts.
    pub fn unpinned(&self, target: &Target) -> Option<Unpinned> {
        let pins = self.pins.as_ref()?;
        let Target::Mcp { upstream, tool } = target else {
            return None;
        };
        if !pins.pins_server(upstream.name()) {
            return None;
        }
        match upstream.tools().iter().find(|t| &t.name == tool) {
            Some(live) => pins.check(upstream.name(), live),
            // Gone since the call was resolved: nothing listed can be vouched for.
            None => Some(Unpinned::NotListed),
        }
    }

    /// What agents' listings leave out.
    #[must_use]
    pub fn with_listing(mut self, listing: Listing) -> Self {
        self.listing = listing;
        self
    }

    pub fn listing(&self) -> Listing {
        self.listing
    }

    /// Whether a listing made for `agent` shows the tool `name` of `source` (`mcp`, `cli`,
    /// `openapi`): with `server.hide_denied_tools`, not when its policy denies it whatever its
    /// arguments.
    pub fn shows(&self, policies: &PolicySet, agent: &str, name: &str, source: &str) -> bool {
        self.listing
            .shows(policies, agent, name, source, || self.hints_of(name))
    }

    /// What the tool a call resolved to says of itself, for rules with `annotations`: an
    /// OpenAPI operation what its HTTP method means (GET reads, DELETE destroys); a tool of an
    /// MCP server with `pin_tools` its pinned annotations; anything else nothing
    /// ([`ToolHints::CAUTIOUS`]), since an upstream free to change its definitions could
    /// declare itself read-only at will.
    pub fn hints(&self, target: &Target) -> ToolHints {
        match target {
            Target::Cli(_) => ToolHints::CAUTIOUS,
            Target::OpenApi { tool } => ToolHints::from_annotations(Some(&tool.annotations())),
            Target::Mcp { upstream, tool } => self.mcp_hints(upstream, tool),
        }
    }

    /// [`hints`](Self::hints) of a listed name.
    pub fn hints_of(&self, name: &str) -> ToolHints {
        if let Some(ToolSource::OpenApi(tool)) = self.names.get(name) {
            return ToolHints::from_annotations(Some(&tool.annotations()));
        }
        match self.find_mcp(name) {
            Some((upstream, tool)) => self.mcp_hints(upstream, &tool),
            None => ToolHints::CAUTIOUS,
        }
    }

    fn mcp_hints(&self, upstream: &Upstream, tool: &str) -> ToolHints {
        let trusted = self
            .pins
            .as_ref()
            .is_some_and(|pins| pins.pins_server(upstream.name()));
        if !trusted {
            return ToolHints::CAUTIOUS;
        }
        let tools = upstream.tools();
        let live = tools.iter().find(|t| t.name == tool);
        // A tool differing from its pin is refused before its hints matter.
        ToolHints::from_annotations(live.and_then(|t| t.annotations.as_ref()))
    }

    /// Adds the tools imported from OpenAPI specs. A name already taken (by a CLI tool, or under
    /// an MCP server's namespace) is an error naming both.
    pub fn with_openapi(mut self, tools: Vec<Arc<OpenApiTool>>) -> Result<Self, String> {
        for tool in tools {
            if let Some(existing) = self.names.get(&tool.name) {
                return Err(format!(
                    "two tools are named {:?}: the {} tool and {}",
                    tool.name,
                    existing.kind(),
                    tool.label()
                ));
            }
            if let Some((prefix, _)) = tool.name.split_once('.')
                && self.upstreams.iter().any(|u| u.name() == prefix)
            {
                return Err(format!(
                    "{:?} ({}) is in the namespace of MCP server {prefix:?}",
                    tool.name,
                    tool.label()
                ));
            }
            self.names
                .insert(tool.name.clone(), ToolSource::OpenApi(tool));
        }
        Ok(self)
    }

    /// The upstream MCP servers, in configuration order.
    pub fn upstreams(&self) -> &[Upstream] {
        &self.upstreams
    }

    pub fn len(&self) -> usize {
        self.names.len()
            + self
                .upstreams
                .iter()
                .map(|u| u.tools().len())
                .sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Upstream MCP tools as (namespaced name, server, tool), in name order; not those that
    /// differ from their pin.
    fn mcp_tools(&self) -> Vec<(String, &Upstream, McpTool)> {
        let pinned = |u: &Upstream, t: &McpTool| {
            self.pins
                .as_ref()
                .is_none_or(|pins| pins.check(u.name(), t).is_none())
        };
        let mut tools: Vec<_> = self
            .upstreams
            .iter()
            .flat_map(|u| {
                u.tools()
                    .iter()
                    .filter(|t| pinned(u, t))
                    .map(|t| (format!("{}.{}", u.name(), t.name), u, t.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        tools.sort_by(|a, b| a.0.cmp(&b.0));
        tools
    }

    /// The upstream owning `name` (`server.tool`) and the un-namespaced tool, if it lists it.
    fn find_mcp(&self, name: &str) -> Option<(&Upstream, String)> {
        let (server, tool) = name.split_once('.')?;
        let upstream = self.upstreams.iter().find(|u| u.name() == server)?;
        upstream
            .tools()
            .iter()
            .any(|t| t.name == tool)
            .then(|| (upstream, tool.to_owned()))
    }

    /// Tools in name order.
    pub fn tools(&self) -> impl Iterator<Item = (&str, &ToolSource)> {
        self.names.iter().map(|(n, s)| (n.as_str(), s))
    }

    /// Finds the tool for a called name (with CLI dispatch fallback).
    pub fn resolve(&self, name: &str, args: &Value) -> Result<ResolvedCall, PipelineError> {
        if let Some(ToolSource::OpenApi(tool)) = self.names.get(name) {
            return Ok(ResolvedCall {
                effective_name: name.to_owned(),
                default_action: None,
                target: Target::OpenApi { tool: tool.clone() },
            });
        }
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
        if let Some((upstream, tool)) = self.find_mcp(name) {
            return Ok(ResolvedCall {
                effective_name: name.to_owned(),
                default_action: None,
                target: Target::Mcp {
                    upstream: upstream.clone(),
                    tool,
                },
            });
        }
        Err(PipelineError::UnknownTool(name.to_owned()))
    }

    /// Every tool with its schemas, in name order.
    pub fn list(&self) -> Vec<ToolView> {
        let mcp = self.mcp_tools().into_iter().map(|(name, u, t)| ToolView {
            name,
            description: t.description,
            input_schema: t.input_schema,
            output_schema: t.output_schema,
            annotations: t.annotations,
            title: t.title,
            source: "mcp",
            group: u.name().to_owned(),
            runtime: u.runtime(),
        });
        let mut all: Vec<ToolView> = self
            .names
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
                ToolSource::OpenApi(t) => ToolView {
                    name: name.clone(),
                    description: t.operation.description.clone(),
                    input_schema: t.operation.input_schema.clone(),
                    output_schema: None,
                    annotations: Some(t.annotations()),
                    title: None,
                    source: "openapi",
                    group: t.group.clone(),
                    runtime: t.backend.base_url.clone(),
                },
            })
            .chain(mcp)
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// `GET /tools` entries (flux7 §3.6 shape), in name order. CLI `env` values are never shown.
    pub fn describe(&self) -> Vec<Value> {
        let mcp = self.mcp_tools().into_iter().map(|(name, u, t)| {
            json!({
                "name": name,
                "description": t.description,
                "method": "",
                "path": "",
                "base_url": "",
                "source": "mcp",
                "mcp_server": u.name(),
                "input_schema": t.input_schema,
            })
        });
        let mut all: Vec<Value> = self
            .names
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
                ToolSource::OpenApi(t) => json!({
                    "name": name,
                    "description": t.operation.description,
                    "method": t.operation.method,
                    "path": t.operation.path,
                    "base_url": t.backend.base_url,
                    "params": t.params_view(),
                    "source": "openapi",
                    "input_schema": t.operation.input_schema,
                }),
            })
            .chain(mcp)
            .collect();
        all.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        all
    }
}
