//! The YAML schema: one struct per section, mirroring flux7-mesh's keys one to one, plus the
//! mesh7 extensions (`server`, `trace`, `loop_detection`, `rate_limiter`), which are documented
//! in `docs/compatibility.md`.
//!
//! Every struct rejects unknown keys: a typo is an error that names its path, never a silently
//! dropped setting. Validation that needs more than one field lives in `validate.rs`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// HTTP listen port; `0` or absent means 9090 (flux7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Directory (or file) for durable approvals and grants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_path: Option<String>,
    /// JSONL trace file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_file: Option<String>,
    /// `stdout`, an `http(s)://` OTLP base URL, or a file path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otel_endpoint: Option<String>,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub approval: ApprovalConfig,
    #[serde(default)]
    pub supervisor: SupervisorConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryConfig>,
    #[serde(default)]
    pub policies: Vec<PolicyConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_dir: Option<String>,
    #[serde(default)]
    pub mcp_servers: Vec<McpServerConfig>,
    #[serde(default)]
    pub cli_tools: Vec<CliToolConfig>,
    #[serde(default)]
    pub openapi: Vec<OpenApiConfig>,

    // ---- mesh7 extensions ----
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub trace: TraceConfig,
    #[serde(default)]
    pub loop_detection: LoopDetectionConfig,
    #[serde(default)]
    pub rate_limiter: RateLimiterConfig,
    /// Information-flow labels: which tools' results taint the calling session, for rules with
    /// `tainted`.
    #[serde(default, skip_serializing_if = "TaintConfig::is_default")]
    pub taint: TaintConfig,
}

/// A policy: which agents it covers and its ordered rules.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Required in `policy_dir` files; inline policies may omit it.
    #[serde(default)]
    pub name: String,
    /// Agent glob (`*`, `support-*`, an exact id).
    #[serde(default = "star")]
    pub agent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitConfig>,
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// mesh7: `advisory` evaluates the policy on every call without enforcing it; where it
    /// would change the decision, the trace records what it would have decided.
    #[serde(default, skip_serializing_if = "PolicyMode::is_enforce")]
    pub mode: PolicyMode,
}

/// Whether a policy decides calls or only says what it would decide.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyMode {
    #[default]
    Enforce,
    Advisory,
}

impl PolicyMode {
    pub fn is_enforce(&self) -> bool {
        *self == PolicyMode::Enforce
    }
}

fn star() -> String {
    "*".to_owned()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Calls per sliding minute per agent; 0 = unlimited.
    #[serde(default)]
    pub max_per_minute: u64,
    /// Calls per agent for the life of the process; 0 = unlimited.
    #[serde(default)]
    pub max_total: u64,
    /// mesh7: calls per session of an agent (the MCP session, or `X-Session-Id`) for the life
    /// of the process; 0 = unlimited. A call without a session is not counted.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_per_session: u64,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub tools: Vec<String>,
    pub action: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<ConditionConfig>,
    /// mesh7: the rule matches only tools whose MCP annotations have these values
    /// (`readOnlyHint`, `destructiveHint`, `idempotentHint`, `openWorldHint`), e.g.
    /// `{destructiveHint: true}`. See [`crate::policy::ToolHints`] for what a tool is taken to say.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, bool>,
    /// mesh7: the rule matches only calls whose session carries one of these labels (from
    /// `taint.sources`), e.g. `[web]`: a sink such as `slack.post` after untrusted content was
    /// read in the same session.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tainted: Vec<String>,
}

/// What a rule decides. Unknown values are load errors (flux7 treated them as allow).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Allow,
    Deny,
    HumanApproval,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
            Action::HumanApproval => "human_approval",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A condition, v1 or v2, in one key. Exactly one form per node:
/// a leaf `{field, operator, value}`, or `{all: [...]}`, `{any: [...]}`, `{not: {...}}`.
/// The shape is checked when the policy set is compiled.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<Operator>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<Vec<ConditionConfig>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any: Option<Vec<ConditionConfig>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not: Option<Box<ConditionConfig>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum Operator {
    #[serde(rename = "==")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "in")]
    In,
    #[serde(rename = "not_in")]
    NotIn,
    #[serde(rename = "contains")]
    Contains,
    #[serde(rename = "starts_with")]
    StartsWith,
    #[serde(rename = "ends_with")]
    EndsWith,
    #[serde(rename = "matches")]
    Matches,
    #[serde(rename = "exists")]
    Exists,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtConfig>,
    #[serde(default)]
    pub require_authentication: bool,
    /// mesh7: bearer tokens assigned to agents (`token -> agent id`); such an identity is
    /// authenticated, unlike a self-declared `agent:<id>`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub agent_tokens: BTreeMap<String, String>,
    /// mesh7: let a self-declared `agent:<id>` bearer use supervisor powers over `/mcp`
    /// (flux7's behaviour). Off by default.
    #[serde(default)]
    pub trust_declared_agents: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    pub jwks_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_claim: Option<String>,
    #[serde(default)]
    pub allow_legacy: bool,
    /// mesh7: claim whose truthy value marks an operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_claim: Option<String>,
    /// mesh7: JWKS refresh period (Go duration), default 5m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    #[serde(default)]
    pub cert_file: String,
    #[serde(default)]
    pub key_file: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApprovalChannel {
    Queue,
    Tty,
    #[default]
    TtyFallback,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalConfig {
    /// Seconds; 0 or absent means 300.
    #[serde(default)]
    pub timeout_seconds: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_url: Option<String>,
    #[serde(default)]
    pub channel: ApprovalChannel,
    /// mesh7: how many resolved approvals are kept (default 10 000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<usize>,
    /// mesh7: let notification targets be loopback/private addresses.
    #[serde(default)]
    pub allow_private_targets: bool,
    /// mesh7: where a `pin_tools` server's changed or added tools are announced (POST).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools_changed_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisorConfig {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "yes")]
    pub expose_content: bool,
    #[serde(default = "yes")]
    pub auto_approve: bool,
    /// 0 or absent means 3.
    #[serde(default)]
    pub min_approvals: i64,
    #[serde(default)]
    pub supervisor_agents: Vec<String>,
    /// mesh7: the longest grant a supervisor or operator may create (Go duration), default 24h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_grant_duration: Option<String>,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            expose_content: true,
            auto_approve: true,
            min_approvals: 0,
            supervisor_agents: Vec::new(),
            max_grant_duration: None,
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// mesh7: how long an auto-approve query may take (Go duration), default 3s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum McpTransport {
    #[serde(rename = "stdio")]
    Stdio,
    #[serde(rename = "sse")]
    Sse,
    #[serde(rename = "streamable-http", alias = "http")]
    StreamableHttp,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct McpServerConfig {
    /// Required, unique, without dots; checked at load (so a missing name reads as flux7's text).
    #[serde(default)]
    pub name: String,
    pub transport: McpTransport,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// mesh7: per-call timeout (Go duration), default 60s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// mesh7: catalogue pinning. The server's tool definitions are pinned when first seen
    /// (kept in `storage_path`); a tool whose definition later differs, or a tool added later,
    /// is left out of listings and refused until an operator accepts it (`POST /pins/…`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pin_tools: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CliToolConfig {
    /// Required and unique; checked at load with flux7's texts.
    #[serde(default)]
    pub name: String,
    /// Required; checked at load with flux7's text.
    #[serde(default)]
    pub bin: String,
    /// `allow`, `deny` or `human_approval`; what a call gets when no policy rule matches it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_action: Option<Action>,
    #[serde(default)]
    pub strict: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub commands: BTreeMap<String, CliCommandConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bare: Option<CliCommandConfig>,
    /// mesh7: per-stream output cap in bytes, default 1 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_bytes: Option<usize>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CliCommandConfig {
    /// Flags allowed; `None` = any flag, `Some([])` = no flag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_args: Option<Vec<String>>,
    /// Go duration, default 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OpenApiConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_url: Option<String>,
    /// mesh7: prefix for this entry's tool names (`<namespace>.<tool>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// mesh7: headers sent to the backend (e.g. auth), `${ENV}` allowed.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// mesh7: allow loopback/private/link-local spec and backend addresses.
    #[serde(default)]
    pub allow_private: bool,
    /// mesh7: time a backend call may take (Go duration), default 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// mesh7: HTTP server settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Listen address (IP); default `0.0.0.0` as flux7.
    #[serde(default = "default_bind")]
    pub bind: String,
    /// Request body limit in bytes (413 beyond), default 1 MiB.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Time a client has to send its request head and body (Go duration), default 30s.
    #[serde(default = "default_client_timeout")]
    pub client_timeout: String,
    /// Mailbox capacity of each actor, default 1024.
    #[serde(default = "default_mailbox")]
    pub mailbox_capacity: usize,
    /// Extra `Host` values `/mcp` accepts besides localhost (`name` any port, or `name:port`).
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Extra `Origin` values `/mcp` accepts besides localhost (e.g. `https://app.example.com`).
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Idle time after which an `/mcp` session expires (Go duration), default 30m.
    #[serde(default = "default_mcp_session_idle")]
    pub mcp_session_idle: String,
    /// Most `/mcp` sessions alive at once (503 beyond), default 10 000.
    #[serde(default = "default_max_mcp_sessions")]
    pub max_mcp_sessions: usize,
    /// Leave out of an agent's tool listings (MCP `tools/list`, `GET /tools`) the MCP and
    /// OpenAPI tools its policy denies whatever the arguments. Default false: everything is
    /// listed, as flux7 does.
    #[serde(default)]
    pub hide_denied_tools: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: default_bind(),
            max_body_bytes: default_max_body(),
            client_timeout: default_client_timeout(),
            mailbox_capacity: default_mailbox(),
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            mcp_session_idle: default_mcp_session_idle(),
            max_mcp_sessions: default_max_mcp_sessions(),
            hide_denied_tools: false,
        }
    }
}

fn default_bind() -> String {
    "0.0.0.0".to_owned()
}
fn default_max_body() -> usize {
    1024 * 1024
}
fn default_client_timeout() -> String {
    "30s".to_owned()
}
fn default_mailbox() -> usize {
    1024
}
fn default_mcp_session_idle() -> String {
    "30m".to_owned()
}
fn default_max_mcp_sessions() -> usize {
    10_000
}

/// mesh7: trace store settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TraceConfig {
    /// Entries kept in memory, default 10 000.
    #[serde(default = "default_ring")]
    pub ring_size: usize,
    /// JSONL rotation size in bytes, default 10 MiB.
    #[serde(default = "default_rotate")]
    pub max_file_bytes: u64,
    /// mesh7: a secret (16 characters or more) that chains the JSONL lines: each carries the
    /// HMAC-SHA256 of the previous one's, so an edited, removed or reordered line shows
    /// (`mesh7 verify-traces`). Absent: lines are not chained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac_key: Option<String>,
    /// mesh7: what never reaches the audit trail (ring, JSONL file, `/traces`, `/sessions`).
    #[serde(default, skip_serializing_if = "RedactConfig::is_empty")]
    pub redact: RedactConfig,
}

impl Default for TraceConfig {
    fn default() -> Self {
        Self {
            ring_size: default_ring(),
            max_file_bytes: default_rotate(),
            hmac_key: None,
            redact: RedactConfig::default(),
        }
    }
}

/// `trace.redact`: secrets replaced by a keyed digest before a trace entry is kept or written.
/// The tool still gets the arguments as they were; only the record of the call is redacted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedactConfig {
    /// Argument names, as globs matched without regard to case, at any depth (inside objects
    /// and arrays): the whole value of a matching key is replaced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    /// Regular expressions: every match inside a string argument, at any depth, and inside the
    /// entry's error message is replaced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

impl RedactConfig {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.values.is_empty()
    }
}

fn default_ring() -> usize {
    10_000
}
fn default_rotate() -> u64 {
    10 * 1024 * 1024
}

/// mesh7: loop detection, on by default for every policy.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LoopDetectionConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Identical calls allowed inside the window; the next one is refused. Default 3.
    #[serde(default = "default_repeats")]
    pub max_repeats: u32,
    /// Go duration, default 10s.
    #[serde(default = "default_window")]
    pub window: String,
    /// Loop refusals of one agent inside the window after which its session (its calls, when
    /// they have none) is halted until an operator lifts it. 0 (the default): never.
    #[serde(default)]
    pub halt_after: u32,
}

impl Default for LoopDetectionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_repeats: default_repeats(),
            window: default_window(),
            halt_after: 0,
        }
    }
}

fn default_repeats() -> u32 {
    3
}
fn default_window() -> String {
    "10s".to_owned()
}

/// mesh7: memory bounds of the rate limiter.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimiterConfig {
    /// Agents whose recent-call windows are kept (least recently seen evicted), default 50 000.
    #[serde(default = "default_max_agents")]
    pub max_agents: usize,
    /// Lifetime counters kept for `max_total` (never evicted; new agents are refused beyond it,
    /// fail closed), default 1 000 000.
    #[serde(default = "default_max_totals")]
    pub max_tracked_totals: usize,
}

impl Default for RateLimiterConfig {
    fn default() -> Self {
        Self {
            max_agents: default_max_agents(),
            max_tracked_totals: default_max_totals(),
        }
    }
}

fn default_max_agents() -> usize {
    50_000
}
fn default_max_totals() -> usize {
    1_000_000
}

/// mesh7: information-flow labels of sessions.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TaintConfig {
    /// Tools whose results are untrusted: a call of one that runs labels its session.
    #[serde(default)]
    pub sources: Vec<TaintSourceConfig>,
    /// Tainted sessions remembered (the least recently used forgotten beyond), default 100 000.
    #[serde(default = "default_max_tainted")]
    pub max_sessions: usize,
}

impl Default for TaintConfig {
    fn default() -> Self {
        Self {
            sources: Vec::new(),
            max_sessions: default_max_tainted(),
        }
    }
}

impl TaintConfig {
    pub fn is_default(&self) -> bool {
        *self == TaintConfig::default()
    }

    /// Every label some source gives, in order of first appearance.
    pub fn labels(&self) -> Vec<&str> {
        let mut labels: Vec<&str> = Vec::new();
        for source in &self.sources {
            if !labels.contains(&source.label.as_str()) {
                labels.push(&source.label);
            }
        }
        labels
    }
}

/// Tools (globs, as in rules) whose calls label the session with `label`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TaintSourceConfig {
    pub tools: Vec<String>,
    pub label: String,
}

fn default_max_tainted() -> usize {
    100_000
}
