//! `mesh7 discover`: the tools of every source (MCP servers, CLI tools, OpenAPI specs), grouped
//! by source, and a starter policy for them (read-like → allow, write-like → human_approval,
//! the rest → deny).
//!
//! `gather` loads the sources and connects to the MCP servers; the rest is pure text from the
//! registry's views (and, for `--lint`, the policies: `lint.rs`). main.rs prints.

mod lint;

pub use lint::lint;

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use mesh7_actors::cli::CliCatalog;
use mesh7_actors::store::Store;
use mesh7_actors::upstream::Upstream;
use mesh7_config::{Config, OpenApiConfig};
use serde_json::Value;

use crate::openapi::{self, LoadContext};
use crate::registry::Registry;

/// How long an MCP server may take to start and list its tools.
pub const MCP_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// What to discover: a configuration's sources, plus a one-off `--openapi` entry.
#[derive(Debug, Default)]
pub struct Sources<'a> {
    pub config: Option<(&'a Config, &'a Path)>,
    pub openapi: Option<OpenApiConfig>,
}

impl Sources<'_> {
    pub fn is_empty(&self) -> bool {
        self.openapi.is_none()
            && self.config.is_none_or(|(c, _)| {
                c.mcp_servers.is_empty() && c.cli_tools.is_empty() && c.openapi.is_empty()
            })
    }
}

/// A one-off `--openapi <url|file>` entry (with `--backend`): a URL when it says http(s).
pub fn openapi_entry(spec: &str, backend: Option<String>, allow_private: bool) -> OpenApiConfig {
    let is_url = spec.starts_with("http://") || spec.starts_with("https://");
    OpenApiConfig {
        url: is_url.then(|| spec.to_owned()),
        file: (!is_url).then(|| spec.to_owned()),
        backend_url: backend,
        allow_private,
        ..OpenApiConfig::default()
    }
}

/// Loads every source. An MCP server that does not become ready is reported through
/// `progress` and left out; a CLI or OpenAPI error stops the discovery. Must run inside an
/// actix `System` (MCP connections are actors).
/// What `gather` found: the tools, and the MCP servers that could not be reached (whose tools
/// are unknown).
#[derive(Debug, Default)]
pub struct Gathered {
    pub tools: Vec<Discovered>,
    pub unreached: Vec<String>,
}

pub async fn gather(
    sources: &Sources<'_>,
    mut progress: impl FnMut(&str),
) -> Result<Gathered, String> {
    let empty = Config::default();
    let (cfg, config_path) = sources.config.unwrap_or((&empty, Path::new("")));
    let catalog = CliCatalog::from_config(&cfg.cli_tools).map_err(|e| format!("cli_tools: {e}"))?;
    // The store's last good spec copies, unless a running daemon holds the store.
    let store = match cfg.storage_path.as_deref() {
        Some(path) => match Store::open(Path::new(path)) {
            Ok(store) => Some(store),
            Err(e) => {
                progress(&format!("Note: no cached specs (storage_path {path}: {e})"));
                None
            }
        },
        None => None,
    };
    let ctx = openapi::context_for(config_path, store);
    let mut tools = openapi::load(&cfg.openapi, &ctx)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(extra) = &sources.openapi {
        let cwd = LoadContext {
            base_dir: ".".into(),
            cache: None,
        };
        // On the command line the switch is a flag, not a key.
        let flag = |e: openapi::OpenApiError| {
            e.to_string().replace(
                "set allow_private: true to allow it",
                "use --allow-private to allow it",
            )
        };
        tools.extend(
            openapi::load(std::slice::from_ref(extra), &cwd)
                .await
                .map_err(flag)?,
        );
    }
    let mut upstreams = Vec::new();
    let mut unreached = Vec::new();
    for server in &cfg.mcp_servers {
        let upstream = match Upstream::start(server) {
            Ok(u) => u,
            Err(e) => {
                progress(&format!("Connecting to MCP server: {}", server.name));
                progress(&format!("  Error: {e}"));
                unreached.push(server.name.clone());
                continue;
            }
        };
        progress(&format!(
            "Connecting to MCP server: {} ({})",
            server.name,
            upstream.runtime()
        ));
        if upstream.wait_first_attempt(MCP_READY_TIMEOUT).await {
            upstreams.push(upstream);
        } else {
            let why = upstream
                .info()
                .error
                .unwrap_or_else(|| format!("not ready within {MCP_READY_TIMEOUT:?}"));
            progress(&format!("  Error: {why}"));
            upstream.shutdown().await;
            unreached.push(server.name.clone());
        }
    }
    let registry = Registry::new(catalog, upstreams.clone())
        .with_openapi(tools)
        .map_err(|e| format!("openapi: {e}"));
    let found = registry.map(|r| Gathered {
        tools: collect(&r),
        unreached,
    });
    for u in &upstreams {
        u.shutdown().await;
    }
    found
}

/// One discovered tool.
#[derive(Debug, Clone, PartialEq)]
pub struct Discovered {
    pub name: String,
    pub description: String,
    /// The group's heading: `OpenAPI`, `OpenAPI "<namespace>"`, `MCP server "<name>"`,
    /// `CLI tool "<name>"`.
    pub label: String,
    /// The HTTP method of an OpenAPI operation, else empty.
    pub method: String,
    /// The JSON schema of its arguments, as the source declares it.
    pub input_schema: Value,
}

/// How the starter policy treats a tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Reads: allowed.
    Read,
    /// Changes something: a human approves.
    Write,
    /// Destructive, arbitrary (a CLI catch-all) or unknown: denied.
    Other,
}

impl Class {
    fn action(self) -> &'static str {
        match self {
            Class::Read => "allow",
            Class::Write => "human_approval",
            Class::Other => "deny",
        }
    }

    fn heading(self) -> &'static str {
        match self {
            Class::Read => "read operations",
            Class::Write => "write operations",
            Class::Other => "other operations",
        }
    }
}

/// Every tool of the registry, in name order.
pub fn collect(registry: &Registry) -> Vec<Discovered> {
    let methods: std::collections::BTreeMap<String, String> = registry
        .describe()
        .iter()
        .filter_map(|d| {
            Some((
                d.get("name")?.as_str()?.to_owned(),
                d.get("method")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
            ))
        })
        .collect();
    registry
        .list()
        .into_iter()
        .map(|view| {
            let label = match view.source {
                "openapi" if view.group == "openapi" => "OpenAPI".to_owned(),
                "openapi" => format!("OpenAPI {:?}", view.group),
                "mcp" => format!("MCP server {:?}", view.group),
                "cli" => format!("CLI tool {:?}", view.group),
                other => format!("{other} {:?}", view.group),
            };
            Discovered {
                method: methods.get(&view.name).cloned().unwrap_or_default(),
                name: view.name,
                description: view.description,
                label,
                input_schema: view.input_schema,
            }
        })
        .collect()
}

const READ_VERBS: [&str; 17] = [
    "get",
    "list",
    "find",
    "search",
    "read",
    "describe",
    "show",
    "fetch",
    "query",
    "view",
    "count",
    "lookup",
    "inspect",
    "stat",
    "status",
    "info",
    "directory",
];
const WRITE_VERBS: [&str; 32] = [
    "create", "add", "new", "make", "insert", "post", "put", "patch", "update", "edit", "modify",
    "set", "write", "append", "save", "upload", "send", "move", "rename", "copy", "replace",
    "merge", "push", "commit", "publish", "submit", "apply", "enable", "disable", "assign",
    "attach", "tag",
];
const DESTRUCTIVE: [&str; 12] = [
    "delete",
    "remove",
    "rm",
    "drop",
    "destroy",
    "kill",
    "purge",
    "truncate",
    "wipe",
    "erase",
    "terminate",
    "uninstall",
];

/// The starter policy's class of a tool, from its HTTP method (OpenAPI) and its name: a
/// destructive word anywhere or DELETE → other; GET or a reading verb first → read; POST, PUT,
/// PATCH or a writing verb first → write; anything else → other.
pub fn classify(name: &str, method: &str) -> Class {
    let own = name.rsplit('.').next().unwrap_or(name).to_ascii_lowercase();
    let words: Vec<&str> = own.split(['_', '-']).filter(|w| !w.is_empty()).collect();
    let first = words.first().copied().unwrap_or("");
    let method = method.to_ascii_uppercase();
    if method == "DELETE" || words.iter().any(|w| DESTRUCTIVE.contains(w)) {
        Class::Other
    } else if matches!(method.as_str(), "GET" | "HEAD") || READ_VERBS.contains(&first) {
        Class::Read
    } else if matches!(method.as_str(), "POST" | "PUT" | "PATCH") || WRITE_VERBS.contains(&first) {
        Class::Write
    } else {
        Class::Other
    }
}

/// Groups in order of first appearance in the (name-sorted) list.
fn groups(tools: &[Discovered]) -> Vec<(&str, Vec<&Discovered>)> {
    let mut out: Vec<(&str, Vec<&Discovered>)> = Vec::new();
    for t in tools {
        match out.iter_mut().find(|(label, _)| *label == t.label) {
            Some((_, members)) => members.push(t),
            None => out.push((&t.label, vec![t])),
        }
    }
    out
}

/// flux7's listing: `Discovered <N> tools:`, then per group `  <label> (<n> tools):` and
/// `    <name padded to 40> <description>`.
pub fn listing(tools: &[Discovered]) -> String {
    let mut out = String::new();
    let _ = writeln!(out);
    let _ = writeln!(out, "Discovered {} tools:", tools.len());
    for (label, members) in groups(tools) {
        let _ = writeln!(out);
        let _ = writeln!(out, "  {label} ({} tools):", members.len());
        for t in members {
            let _ = writeln!(out, "    {:<40} {}", t.name, short(&t.description));
        }
    }
    out
}

/// One line, at most 60 characters (57 + `...`), `-` when empty.
fn short(description: &str) -> String {
    let one_line = description.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.is_empty() {
        return "-".to_owned();
    }
    if one_line.chars().count() > 60 {
        let cut: String = one_line.chars().take(57).collect();
        return format!("{cut}...");
    }
    one_line
}

/// The starter policy, as a configuration fragment (`policies:`), preceded by the listing as
/// comments so the whole output is one YAML document that `mesh7 validate` accepts.
pub fn starter_policy(tools: &[Discovered]) -> String {
    let mut out = String::new();
    for line in listing(tools).lines().skip(1) {
        let _ = writeln!(out, "#{}{line}", if line.is_empty() { "" } else { " " });
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "# Starter policy: read-like tools allowed, write-like tools need a human, the rest denied."
    );
    let _ = writeln!(out, "# Review it before use.");
    let _ = writeln!(out, "policies:");
    let _ = writeln!(out, "  - name: discovered");
    let _ = writeln!(out, "    agent: \"*\"");
    let _ = writeln!(out, "    rules:");
    for (label, members) in groups(tools) {
        for class in [Class::Read, Class::Write, Class::Other] {
            let names: Vec<String> = members
                .iter()
                .filter(|t| classify(&t.name, &t.method) == class)
                .map(|t| quote(&escape_glob(&t.name)))
                .collect();
            if names.is_empty() {
                continue;
            }
            let _ = writeln!(out, "      # {label} — {}", class.heading());
            let _ = writeln!(out, "      - tools: {}", tool_list(&names));
            let _ = writeln!(out, "        action: {}", class.action());
        }
    }
    let _ = writeln!(out, "      # Anything else");
    let _ = writeln!(out, "      - tools: [\"*\"]");
    let _ = writeln!(out, "        action: deny");
    out
}

/// `["a", "b"]`, or one name per line when that is longer than 80 characters.
fn tool_list(names: &[String]) -> String {
    let inline = format!("[{}]", names.join(", "));
    if inline.len() <= 80 {
        return inline;
    }
    let mut out = String::from("[\n");
    for n in names {
        let _ = writeln!(out, "          {n},");
    }
    out.push_str("        ]");
    out
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

/// Policy tool patterns are globs: a literal `*`, `?`, `[` or `\` in a name is escaped.
fn escape_glob(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if matches!(c, '*' | '?' | '[' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &str, label: &str, method: &str, description: &str) -> Discovered {
        Discovered {
            name: name.to_owned(),
            description: description.to_owned(),
            label: label.to_owned(),
            method: method.to_owned(),
            input_schema: Value::Null,
        }
    }

    #[test]
    fn classifies_by_method_then_name() {
        let table = [
            ("list_pets", "GET", Class::Read),
            ("create_pets", "POST", Class::Write),
            ("search_pets", "POST", Class::Read),
            ("delete_pet", "DELETE", Class::Other),
            ("get_pet", "DELETE", Class::Other),
            ("replace_pet", "PUT", Class::Write),
            ("fs.read_text_file", "", Class::Read),
            ("fs.list_allowed_directories", "", Class::Read),
            ("fs.directory_tree", "", Class::Read),
            ("fs.write_file", "", Class::Write),
            ("fs.move_file", "", Class::Write),
            ("fs.delete_file", "", Class::Other),
            ("db.batch_delete", "", Class::Other),
            ("gh.__dispatch", "", Class::Other),
            ("echo.run", "", Class::Other),
            ("git.status", "", Class::Read),
            ("frobnicate", "", Class::Other),
        ];
        for (name, method, expected) in table {
            assert_eq!(classify(name, method), expected, "{name} {method}");
        }
    }

    #[test]
    fn listing_groups_in_order_of_first_appearance() {
        let tools = vec![
            tool("create_pets", "OpenAPI", "POST", "Create a pet"),
            tool("echo.run", "CLI tool \"echo\"", "", "Run echo"),
            tool("list_pets", "OpenAPI", "GET", ""),
            tool(
                "show_pet_by_id",
                "OpenAPI",
                "GET",
                "Info for a specific pet, with a description long enough to be cut short",
            ),
        ];
        let expected = "
Discovered 4 tools:

  OpenAPI (3 tools):
    create_pets                              Create a pet
    list_pets                                -
    show_pet_by_id                           Info for a specific pet, with a description long enough t...

  CLI tool \"echo\" (1 tools):
    echo.run                                 Run echo
";
        assert_eq!(listing(&tools), expected);
    }

    #[test]
    fn starter_policy_sorts_tools_into_allow_approval_and_deny() {
        let tools = vec![
            tool("create_pets", "OpenAPI", "POST", "Create a pet"),
            tool("delete_pet", "OpenAPI", "DELETE", ""),
            tool("list_pets", "OpenAPI", "GET", ""),
            tool("odd*name", "MCP server \"x\"", "", ""),
        ];
        let policy = starter_policy(&tools);
        let body: String = policy
            .lines()
            .skip_while(|l| !l.starts_with("policies:"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(
            body,
            r#"policies:
  - name: discovered
    agent: "*"
    rules:
      # OpenAPI — read operations
      - tools: ["list_pets"]
        action: allow
      # OpenAPI — write operations
      - tools: ["create_pets"]
        action: human_approval
      # OpenAPI — other operations
      - tools: ["delete_pet"]
        action: deny
      # MCP server "x" — other operations
      - tools: ["odd\\*name"]
        action: deny
      # Anything else
      - tools: ["*"]
        action: deny
"#
        );
        assert!(policy.starts_with("# Discovered 4 tools:\n#\n#   OpenAPI (3 tools):\n"));
    }

    #[test]
    fn long_tool_lists_go_one_per_line() {
        let names: Vec<String> = (0..8).map(|i| quote(&format!("tool_number_{i}"))).collect();
        let list = tool_list(&names);
        assert!(
            list.starts_with("[\n          \"tool_number_0\",\n"),
            "{list}"
        );
        assert!(list.ends_with("\"tool_number_7\",\n        ]"), "{list}");
    }
}
