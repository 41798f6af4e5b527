//! Checks beyond types: what needs more than one field (`bare` with `commands`), a parsed value
//! (durations, the bind address) or the whole list (duplicate names), and the policy set.
//!
//! Texts of the checks flux7 had (`cli_tools`, `openapi`, duplicate policy names) are flux7's.
//! Every check runs and reports, so one load lists every problem.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

use crate::duration;
use crate::load::tree::Path;
use crate::policy::PolicySet;
use crate::schema::{
    CliToolConfig, Config, McpServerConfig, McpTransport, OpenApiConfig, PolicyConfig, TaintConfig,
};

/// Which document an issue is in: the configuration file, or the n-th `policy_dir` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Doc {
    Main,
    File(usize),
}

#[derive(Debug)]
pub(crate) struct Issue {
    pub(crate) doc: Doc,
    /// The path as shown, e.g. `cli_tools[1] (git)`.
    pub(crate) shown: String,
    /// Where to look for the line.
    pub(crate) at: Path,
    pub(crate) message: String,
}

/// The document index of each list element kept in the config (elements that failed to
/// deserialize are left out, and the others keep their own index in messages).
#[derive(Debug, Default)]
pub(crate) struct Indices {
    pub(crate) mcp_servers: Vec<usize>,
    pub(crate) cli_tools: Vec<usize>,
    pub(crate) openapi: Vec<usize>,
}

/// A policy with where it came from.
pub(crate) struct PolicySource<'a> {
    pub(crate) doc: Doc,
    /// The policy's own path in its document (`policies[1]`, or the root of a file).
    pub(crate) at: Path,
    /// `policies[1]` or the file's name.
    pub(crate) label: String,
    pub(crate) policy: &'a PolicyConfig,
}

struct Issues(Vec<Issue>);

impl Issues {
    fn push(&mut self, shown: impl Into<String>, at: Path, message: impl Into<String>) {
        self.0.push(Issue {
            doc: Doc::Main,
            shown: shown.into(),
            at,
            message: message.into(),
        });
    }

    /// A duration setting: parses, and is not zero (a zero timeout or period is never meant).
    fn duration(&mut self, at: Path, value: &str) {
        if let Err(message) = positive_duration(value) {
            self.push(at.to_string(), at, message);
        }
    }

    fn positive(&mut self, at: Path, value: u64) {
        if value == 0 {
            self.push(at.to_string(), at, "must be greater than 0");
        }
    }
}

fn positive_duration(value: &str) -> Result<Duration, String> {
    match duration::parse(value)? {
        Duration::ZERO => Err(format!("duration {value:?} must be greater than 0")),
        d => Ok(d),
    }
}

fn as_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// The checks on the configuration file's own sections.
pub(crate) fn config(config: &Config, indices: &Indices) -> Vec<Issue> {
    let mut issues = Issues(Vec::new());
    let root = Path::root();

    if let Some(jwt) = &config.auth.jwt
        && let Some(refresh) = &jwt.refresh
    {
        issues.duration(root.key("auth").key("jwt").key("refresh"), refresh);
    }
    if let Some(tls) = &config.tls
        && tls.cert_file.is_empty() != tls.key_file.is_empty()
    {
        issues.push(
            "tls",
            root.key("tls"),
            "cert_file and key_file must be set together",
        );
    }
    if config.approval.retention == Some(0) {
        issues.positive(root.key("approval").key("retention"), 0);
    }
    if let Some(timeout) = config.memory.as_ref().and_then(|m| m.timeout.as_ref()) {
        issues.duration(root.key("memory").key("timeout"), timeout);
    }
    if let Some(max) = &config.supervisor.max_grant_duration {
        issues.duration(root.key("supervisor").key("max_grant_duration"), max);
    }

    let server = root.key("server");
    if config.server.bind.parse::<IpAddr>().is_err() {
        let at = server.key("bind");
        issues.push(
            at.to_string(),
            at,
            format!("invalid IP address {:?}", config.server.bind),
        );
    }
    issues.positive(
        server.key("max_body_bytes"),
        as_u64(config.server.max_body_bytes),
    );
    issues.duration(server.key("client_timeout"), &config.server.client_timeout);
    issues.positive(
        server.key("mailbox_capacity"),
        as_u64(config.server.mailbox_capacity),
    );
    issues.duration(
        server.key("mcp_session_idle"),
        &config.server.mcp_session_idle,
    );
    issues.positive(
        server.key("max_mcp_sessions"),
        as_u64(config.server.max_mcp_sessions),
    );

    issues.positive(
        root.key("trace").key("ring_size"),
        as_u64(config.trace.ring_size),
    );
    issues.positive(
        root.key("trace").key("max_file_bytes"),
        config.trace.max_file_bytes,
    );
    if let Some(key) = &config.trace.hmac_key
        && key.chars().count() < 16
    {
        let at = root.key("trace").key("hmac_key");
        issues.push(at.to_string(), at, "must be at least 16 characters");
    }
    if let Err(errors) = crate::redact::RedactRules::compile(&config.trace.redact) {
        let redact = root.key("trace").key("redact");
        for (list, index, message) in errors {
            let at = redact.clone().key(list).index(index);
            issues.push(at.to_string(), at, message);
        }
    }

    let loops = root.key("loop_detection");
    if config.loop_detection.max_repeats == 0 {
        let at = loops.key("max_repeats");
        issues.push(at.to_string(), at, "must be at least 1");
    }
    issues.duration(loops.key("window"), &config.loop_detection.window);

    issues.positive(
        root.key("rate_limiter").key("max_agents"),
        as_u64(config.rate_limiter.max_agents),
    );
    issues.positive(
        root.key("rate_limiter").key("max_tracked_totals"),
        as_u64(config.rate_limiter.max_tracked_totals),
    );

    taint(&config.taint, &mut issues);
    mcp_servers(
        &config.mcp_servers,
        &indices.mcp_servers,
        config.storage_path.is_some(),
        &mut issues,
    );
    cli_tools(&config.cli_tools, &indices.cli_tools, &mut issues);
    openapi(&config.openapi, &indices.openapi, &mut issues);
    issues.0
}

fn mcp_servers(servers: &[McpServerConfig], indices: &[usize], durable: bool, issues: &mut Issues) {
    let mut seen = HashSet::new();
    for (server, &i) in servers.iter().zip(indices) {
        let at = Path::root().key("mcp_servers").index(i);
        let bare = format!("mcp_servers[{i}]");
        let named = if server.name.is_empty() {
            bare.clone()
        } else {
            format!("{bare} ({})", server.name)
        };
        if server.name.is_empty() {
            issues.push(&bare, at.clone(), "name is required");
        } else if server.name.contains('.') {
            // Tools are named `<server>.<tool>`, so a dot would make names ambiguous.
            issues.push(&named, at.key("name"), "name must not contain dots");
        }
        if !server.name.is_empty() && !seen.insert(server.name.as_str()) {
            issues.push(
                &bare,
                at.key("name"),
                format!("duplicate name {:?}", server.name),
            );
        }
        let (transport, needs) = match server.transport {
            McpTransport::Stdio => ("stdio", ("command", &server.command)),
            McpTransport::Sse => ("sse", ("url", &server.url)),
            McpTransport::StreamableHttp => ("streamable-http", ("url", &server.url)),
        };
        let (key, value) = needs;
        if value.as_deref().is_none_or(str::is_empty) {
            issues.push(
                &named,
                at.key(key),
                format!("transport {transport} requires {key}"),
            );
        }
        if let Some(timeout) = &server.timeout
            && let Err(e) = positive_duration(timeout)
        {
            issues.push(
                &named,
                at.key("timeout"),
                format!("invalid timeout {timeout:?}: {e}"),
            );
        }
        if server.pin_tools && !durable {
            // Pins kept in memory would be taken again from whatever the server lists after a
            // restart, which is when a changed definition most often appears.
            issues.push(
                &named,
                at.key("pin_tools"),
                "pin_tools requires storage_path (the pins must outlive the process)",
            );
        }
    }
}

/// flux7's table, in its order; a tool in bare mode skips the checks that only make sense
/// with commands.
fn cli_tools(tools: &[CliToolConfig], indices: &[usize], issues: &mut Issues) {
    let mut seen = HashSet::new();
    for (tool, &i) in tools.iter().zip(indices) {
        let at = Path::root().key("cli_tools").index(i);
        let bare_path = format!("cli_tools[{i}]");
        let named = if tool.name.is_empty() {
            bare_path.clone()
        } else {
            format!("{bare_path} ({})", tool.name)
        };
        if tool.name.is_empty() {
            issues.push(&bare_path, at.clone(), "name is required");
        }
        if tool.bin.is_empty() {
            issues.push(&named, at.key("bin"), "bin is required");
        }
        if !tool.name.is_empty() && !seen.insert(tool.name.as_str()) {
            issues.push(
                &bare_path,
                at.key("name"),
                format!("duplicate name {:?}", tool.name),
            );
        }
        if let Some(bare) = &tool.bare {
            if !tool.commands.is_empty() {
                issues.push(
                    &named,
                    at.key("bare"),
                    "bare and commands are mutually exclusive",
                );
            }
            if tool.strict {
                issues.push(
                    &named,
                    at.key("strict"),
                    "strict has no meaning in bare mode",
                );
            }
            if let Some(timeout) = &bare.timeout
                && let Err(e) = positive_duration(timeout)
            {
                issues.push(
                    &named,
                    at.key("bare").key("timeout"),
                    format!("bare has invalid timeout {timeout:?}: {e}"),
                );
            }
        } else if tool.strict && tool.commands.is_empty() {
            issues.push(
                &named,
                at.key("strict"),
                "strict mode requires at least one declared command",
            );
        }
        for (command, spec) in &tool.commands {
            if let Some(timeout) = &spec.timeout
                && let Err(e) = positive_duration(timeout)
            {
                issues.push(
                    &named,
                    at.key("commands").key(command).key("timeout"),
                    format!("command {command:?} has invalid timeout {timeout:?}: {e}"),
                );
            }
        }
    }
}

fn openapi(entries: &[OpenApiConfig], indices: &[usize], issues: &mut Issues) {
    for (entry, &i) in entries.iter().zip(indices) {
        let at = Path::root().key("openapi").index(i);
        let has_url = entry.url.as_deref().is_some_and(|u| !u.is_empty());
        let has_file = entry.file.as_deref().is_some_and(|f| !f.is_empty());
        match (has_url, has_file) {
            (false, false) => issues.push(
                format!("openapi[{i}]"),
                at.clone(),
                "url or file is required",
            ),
            (true, true) => issues.push(
                format!("openapi[{i}]"),
                at.clone(),
                "set url or file, not both",
            ),
            _ => {}
        }
        if let Some(timeout) = &entry.timeout
            && let Err(e) = positive_duration(timeout)
        {
            issues.push(
                format!("openapi[{i}]"),
                at.key("timeout"),
                format!("invalid timeout {timeout:?}: {e}"),
            );
        }
    }
}

/// Duplicate names across inline and file policies (unnamed inline policies are not compared),
/// then what compiling the set finds (condition shapes, regexes), at the policy's own path.
/// A label names something an operator reads in answers, traces and `GET /taint`.
const MAX_LABEL: usize = 64;

fn taint(config: &TaintConfig, issues: &mut Issues) {
    let taint = Path::root().key("taint");
    issues.positive(taint.key("max_sessions"), as_u64(config.max_sessions));
    for (i, source) in config.sources.iter().enumerate() {
        let at = taint.key("sources").index(i);
        if source.tools.is_empty() || source.tools.iter().any(String::is_empty) {
            let at = at.key("tools");
            issues.push(
                at.to_string(),
                at,
                "tools must list at least one non-empty pattern",
            );
        }
        if let Err(message) = label_ok(&source.label) {
            let at = at.key("label");
            issues.push(at.to_string(), at, message);
        }
    }
}

fn label_ok(label: &str) -> Result<(), String> {
    if label.is_empty() || label.len() > MAX_LABEL {
        return Err(format!("a label has 1 to {MAX_LABEL} characters"));
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(format!(
            "invalid label {label:?}: letters, digits, '_', '-' and '.' only"
        ));
    }
    Ok(())
}

/// `labels`: what `taint.sources` can put on a session; a rule's `tainted` may name no other.
pub(crate) fn policies(sources: &[PolicySource<'_>], labels: &[&str]) -> Vec<Issue> {
    let mut issues = Vec::new();
    for source in sources {
        for (i, rule) in source.policy.rules.iter().enumerate() {
            for (k, label) in rule.tainted.iter().enumerate() {
                if labels.contains(&label.as_str()) {
                    continue;
                }
                let relative = format!("rules[{i}].tainted[{k}]");
                let known = if labels.is_empty() {
                    "none: taint.sources is empty".to_owned()
                } else {
                    labels.join(", ")
                };
                issues.push(Issue {
                    doc: source.doc,
                    shown: shown(source, &relative),
                    at: source.at.join(&Path::parse(&relative)),
                    message: format!(
                        "no taint source gives the label {label:?}, so the rule would never match (labels: {known})"
                    ),
                });
            }
        }
    }
    for (n, source) in sources.iter().enumerate() {
        let name = &source.policy.name;
        if name.is_empty() {
            continue;
        }
        if let Some(first) = sources[..n].iter().find(|s| s.policy.name == *name) {
            issues.push(Issue {
                doc: source.doc,
                shown: shown(source, "name"),
                at: source.at.key("name"),
                message: format!(
                    "duplicate policy name {name:?} ({} and {})",
                    first.label, source.label
                ),
            });
        }
    }
    let set: Vec<PolicyConfig> = sources.iter().map(|s| s.policy.clone()).collect();
    if let Err(errors) = PolicySet::compile(&set) {
        for error in errors {
            let Some(source) = sources.get(error.policy_index) else {
                continue;
            };
            issues.push(Issue {
                doc: source.doc,
                shown: shown(source, &error.path),
                at: source.at.join(&Path::parse(&error.path)),
                message: error.message,
            });
        }
    }
    issues
}

/// `policies[1].rules[0]` inline, `policies.d/b.yaml: rules[0]` in a file.
fn shown(source: &PolicySource<'_>, relative: &str) -> String {
    match (source.doc, relative.is_empty()) {
        (_, true) => source.label.clone(),
        (Doc::Main, false) => format!("{}.{relative}", source.label),
        (Doc::File(_), false) => format!("{}: {relative}", source.label),
    }
}
