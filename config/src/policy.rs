//! The compiled policy set and its evaluation: first match wins, fail closed.
//!
//! Policies are stably sorted by the specificity of their agent pattern (exact, then globs, then
//! exactly `*`; ties keep load order). Evaluation is, by definition:
//!
//! ```text
//! for policy in sorted policies whose agent glob matches the agent:
//!     for rule in policy.rules:
//!         if some tool pattern equals or globs the tool, the tool's hints have the values of
//!         the rule's annotations (if any), the session carries one of the rule's `tainted`
//!         labels (if any), and the condition (if any) holds:
//!             return (rule.action, policy)
//! return (deny, "default")
//! ```
//!
//! Every rule gets a position in that order, and the answer is the lowest position whose agent,
//! tools, annotations and condition all match. To find it without scanning every rule, rules are indexed:
//! agent patterns, deduplicated, point to groups (one per distinct agent pattern), and each
//! group indexes its rules by tool pattern — literal patterns in a hash map, globs in a trie
//! keyed by their literal prefix (or suffix, for globs that start with a wildcard). Each index
//! entry keeps its positions in ascending order, so the lowest matching position of an entry is
//! the first one whose condition holds.
//! Evaluation allocates nothing; the reason text is built only when asked for.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use crate::condition::Condition;
use crate::glob::Glob;
use crate::schema::{Action, PolicyConfig, RateLimitConfig, TaintConfig};

/// The rule name of the fail-closed decision.
const DEFAULT_RULE: &str = "default";

/// What a tool says of itself, as rules with `annotations` see it: the MCP tool annotations
/// (`readOnlyHint`, `destructiveHint`, `idempotentHint`, `openWorldHint`). A hint a tool does not
/// give takes the protocol's default, which assumes the worst: not read-only, destructive (for a
/// tool that is not read-only), not idempotent, open world. A tool that declares nothing, a CLI
/// tool, or a tool whose declaration mesh7 does not trust (an MCP server without `pin_tools`)
/// is [`ToolHints::CAUTIOUS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToolHints {
    pub read_only: bool,
    pub destructive: bool,
    pub idempotent: bool,
    pub open_world: bool,
}

/// The annotation names a rule can test, as MCP spells them.
pub const HINT_NAMES: [&str; 4] = [
    "readOnlyHint",
    "destructiveHint",
    "idempotentHint",
    "openWorldHint",
];

impl Default for ToolHints {
    fn default() -> Self {
        ToolHints::CAUTIOUS
    }
}

impl ToolHints {
    /// What a tool that says nothing is taken to be.
    pub const CAUTIOUS: ToolHints = ToolHints {
        read_only: false,
        destructive: true,
        idempotent: false,
        open_world: true,
    };

    /// From a tool's `annotations` object (anything else, or a hint that is not a boolean,
    /// counts as not given). `destructiveHint` and `idempotentHint` mean something only for a
    /// tool that is not read-only: a read-only tool that does not give them is taken to be
    /// neither destructive nor, for want of a better default, idempotent.
    pub fn from_annotations(annotations: Option<&Value>) -> ToolHints {
        let hint = |name: &str| {
            annotations
                .and_then(|a| a.get(name))
                .and_then(Value::as_bool)
        };
        let read_only = hint("readOnlyHint").unwrap_or(false);
        ToolHints {
            read_only,
            destructive: hint("destructiveHint").unwrap_or(!read_only),
            idempotent: hint("idempotentHint").unwrap_or(read_only),
            open_world: hint("openWorldHint").unwrap_or(true),
        }
    }

    fn get(&self, hint: Hint) -> bool {
        match hint {
            Hint::ReadOnly => self.read_only,
            Hint::Destructive => self.destructive,
            Hint::Idempotent => self.idempotent,
            Hint::OpenWorld => self.open_world,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hint {
    ReadOnly,
    Destructive,
    Idempotent,
    OpenWorld,
}

impl Hint {
    fn parse(name: &str) -> Option<Hint> {
        Some(match name {
            "readOnlyHint" => Hint::ReadOnly,
            "destructiveHint" => Hint::Destructive,
            "idempotentHint" => Hint::Idempotent,
            "openWorldHint" => Hint::OpenWorld,
            _ => return None,
        })
    }
}

/// A decision that what is not known of a call cannot change (see
/// [`PolicySet::settled`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// A rule with this action decides.
    Rule(Action),
    /// No rule matches: the fail-closed default (or a CLI tool's `default_action`).
    NoRule,
}

/// What evaluation decided, borrowing from the policy set.
#[derive(Debug, Clone, Copy)]
pub struct Decision<'a> {
    pub action: Action,
    policy: Option<&'a PolicyConfig>,
    /// The session's label that the deciding rule's `tainted` matched.
    taint: Option<&'a str>,
}

impl<'a> Decision<'a> {
    /// The fail-closed decision: no rule matched.
    pub fn default_deny() -> Decision<'a> {
        Decision {
            action: Action::Deny,
            policy: None,
            taint: None,
        }
    }

    /// The session's label that made the deciding rule match (`tainted`), if it has one.
    pub fn taint(&self) -> Option<&'a str> {
        self.taint
    }

    /// The matched policy's name, or `"default"`.
    pub fn rule(&self) -> &'a str {
        self.policy.map_or(DEFAULT_RULE, |p| p.name.as_str())
    }

    pub fn policy(&self) -> Option<&'a PolicyConfig> {
        self.policy
    }

    /// No rule matched.
    pub fn is_default(&self) -> bool {
        self.policy.is_none()
    }

    /// The matched policy's rate limit.
    pub fn rate_limit(&self) -> Option<RateLimitConfig> {
        self.policy.and_then(|p| p.rate_limit)
    }

    /// `policy=<policy> tool=<tool> action=<action>`, with ` taint=<label>` when a `tainted`
    /// rule decided, or `no matching policy — fail closed`.
    pub fn reason(&self, tool: &str) -> String {
        match (self.policy, self.taint) {
            (Some(p), None) => format!("policy={} tool={tool} action={}", p.name, self.action),
            (Some(p), Some(label)) => format!(
                "policy={} tool={tool} action={} taint={label}",
                p.name, self.action
            ),
            (None, _) => "no matching policy \u{2014} fail closed".to_owned(),
        }
    }
}

/// A problem in one policy, found at compile time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// Index in the slice given to [`PolicySet::compile`] (load order).
    pub policy_index: usize,
    /// Path inside the policy, e.g. `rules[0].condition.all[1].value`.
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "policies[{}].{}: {}",
            self.policy_index, self.path, self.message
        )
    }
}

impl std::error::Error for PolicyError {}

/// The compiled set of policies. Immutable; share it behind an `Arc`.
#[derive(Debug, Default)]
pub struct PolicySet {
    /// In evaluation order.
    policies: Vec<PolicyConfig>,
    /// Every rule, by position in evaluation order.
    rules: Vec<CompiledRule>,
    /// Agent pattern → the index in `groups` of the rules of the policies with that pattern.
    agents: GlobIndex,
    /// Per distinct agent pattern: tool pattern → rule positions.
    groups: Vec<GlobIndex>,
    /// When some policies are `advisory`: every policy, advisory ones enforced, i.e. what
    /// would decide if they were.
    shadow: Option<Box<PolicySet>>,
    /// Some rule tests `annotations`.
    uses_annotations: bool,
    /// Some rule tests `tainted`.
    uses_taint: bool,
    /// `taint.sources`: tool pattern → the labels a call of it gives its session.
    sources: GlobIndex,
    /// The labels of `taint.sources`, indexed by `sources`.
    labels: Vec<Arc<str>>,
}

/// A rule's condition and `annotations`, compiled.
type RuleTests = (Option<Condition>, Vec<(Hint, bool)>);

#[derive(Debug)]
struct CompiledRule {
    policy: usize,
    action: Action,
    condition: Option<Condition>,
    /// `annotations`: each hint and the value it must have.
    hints: Vec<(Hint, bool)>,
    /// `tainted`: the session must carry one of these labels.
    tainted: Vec<Box<str>>,
}

impl PolicySet {
    /// A set that denies everything.
    pub fn empty() -> PolicySet {
        PolicySet::default()
    }

    /// Validates and compiles; returns every error found (not only the first). Advisory
    /// policies do not decide: they make the [`PolicySet::shadow`] set.
    pub fn compile(policies: &[PolicyConfig]) -> Result<PolicySet, Vec<PolicyError>> {
        if policies.iter().all(|p| p.mode.is_enforce()) {
            return PolicySet::compile_enforced(policies);
        }
        // Every policy decides in the shadow set (their `mode` kept, for listing); its errors
        // carry the index into `policies`, so they are the ones reported.
        let shadow = PolicySet::compile_enforced(policies)?;
        let enforced: Vec<PolicyConfig> = policies
            .iter()
            .filter(|p| p.mode.is_enforce())
            .cloned()
            .collect();
        let mut set = PolicySet::compile_enforced(&enforced)?;
        set.shadow = Some(Box::new(shadow));
        Ok(set)
    }

    /// What would decide if the advisory policies were enforced; `None` when there are none.
    pub fn shadow(&self) -> Option<&PolicySet> {
        self.shadow.as_deref()
    }

    /// Compiles `policies`, each deciding whatever its `mode`.
    fn compile_enforced(policies: &[PolicyConfig]) -> Result<PolicySet, Vec<PolicyError>> {
        let mut errors = Vec::new();
        // Per policy, per rule: what is tested besides the tool's name.
        let mut conditions: Vec<Vec<RuleTests>> = Vec::with_capacity(policies.len());
        for (policy_index, policy) in policies.iter().enumerate() {
            let mut compiled = Vec::with_capacity(policy.rules.len());
            for (i, rule) in policy.rules.iter().enumerate() {
                let condition = rule.condition.as_ref().and_then(|c| {
                    Condition::compile(c)
                        .map_err(|errs| {
                            let base = format!("rules[{i}].condition");
                            errors.extend(errs.into_iter().map(|e| PolicyError {
                                policy_index,
                                path: if e.path.is_empty() {
                                    base.clone()
                                } else {
                                    format!("{base}.{}", e.path)
                                },
                                message: e.message,
                            }));
                        })
                        .ok()
                });
                let mut hints = Vec::with_capacity(rule.annotations.len());
                for (name, &want) in &rule.annotations {
                    match Hint::parse(name) {
                        Some(hint) => hints.push((hint, want)),
                        None => errors.push(PolicyError {
                            policy_index,
                            path: format!("rules[{i}].annotations.{name}"),
                            message: format!(
                                "unknown annotation (expected one of {})",
                                HINT_NAMES.join(", ")
                            ),
                        }),
                    }
                }
                compiled.push((condition, hints));
            }
            conditions.push(compiled);
        }
        if !errors.is_empty() {
            return Err(errors);
        }

        let agent_globs: Vec<Glob> = policies.iter().map(|p| Glob::new(&p.agent)).collect();
        let mut order: Vec<usize> = (0..policies.len()).collect();
        // A stable sort: ties keep load order.
        order.sort_by_key(|&i| std::cmp::Reverse(agent_globs[i].specificity()));

        let mut set = PolicySet::default();
        let mut agents = GlobIndexBuilder::default();
        let mut groups: Vec<GlobIndexBuilder> = Vec::new();
        let mut group_of_agent: HashMap<&str, usize> = HashMap::new();
        for (sorted_index, &i) in order.iter().enumerate() {
            let policy = &policies[i];
            let group = *group_of_agent
                .entry(policy.agent.as_str())
                .or_insert_with(|| {
                    let glob = &agent_globs[i];
                    if glob.is_literal() {
                        agents.insert_exact(glob.as_str(), groups.len());
                    } else if glob.is_valid() {
                        agents.insert_glob(glob, groups.len());
                    }
                    groups.push(GlobIndexBuilder::default());
                    groups.len() - 1
                });
            let rule_conditions = std::mem::take(&mut conditions[i]);
            for (rule, (condition, hints)) in policy.rules.iter().zip(rule_conditions) {
                let position = set.rules.len();
                for tool in &rule.tools {
                    // Literal equality is checked before globbing, so even a malformed pattern
                    // matches a tool of exactly its name.
                    groups[group].insert_exact(tool, position);
                    let glob = Glob::new(tool);
                    if glob.is_valid() && !glob.is_literal() {
                        groups[group].insert_glob(&glob, position);
                    }
                }
                set.rules.push(CompiledRule {
                    policy: sorted_index,
                    action: rule.action,
                    condition,
                    hints,
                    tainted: rule.tainted.iter().map(|l| l.as_str().into()).collect(),
                });
            }
            set.policies.push(policy.clone());
        }
        set.agents = agents.build();
        set.groups = groups.into_iter().map(GlobIndexBuilder::build).collect();
        set.uses_annotations = set.rules.iter().any(|r| !r.hints.is_empty());
        set.uses_taint = set.rules.iter().any(|r| !r.tainted.is_empty());
        Ok(set)
    }

    /// The set with `taint.sources` (labels that `tainted` names were checked at load).
    pub fn with_taint(mut self, taint: &TaintConfig) -> PolicySet {
        let mut labels: Vec<Arc<str>> = Vec::new();
        let mut sources = GlobIndexBuilder::default();
        for source in &taint.sources {
            let index = match labels.iter().position(|l| **l == *source.label) {
                Some(index) => index,
                None => {
                    labels.push(source.label.as_str().into());
                    labels.len() - 1
                }
            };
            for tool in &source.tools {
                sources.insert_exact(tool, index);
                let glob = Glob::new(tool);
                if glob.is_valid() && !glob.is_literal() {
                    sources.insert_glob(&glob, index);
                }
            }
        }
        self.sources = sources.build();
        self.labels = labels;
        self.shadow = self.shadow.map(|shadow| Box::new(shadow.with_taint(taint)));
        self
    }

    /// The labels a call of `tool` gives its session, once it runs (`taint.sources`).
    pub fn taint_of(&self, tool: &str) -> Vec<Arc<str>> {
        // Asked on every call: without sources, not even the name is hashed.
        if self.labels.is_empty() {
            return Vec::new();
        }
        let mut found: Vec<usize> = Vec::new();
        self.sources.visit(tool, |ids| found.extend_from_slice(ids));
        found.sort_unstable();
        found.dedup();
        found.into_iter().map(|i| self.labels[i].clone()).collect()
    }

    /// Whether some rule, advisory ones included, tests the session's labels (`tainted`), so
    /// that callers need to look them up.
    pub fn uses_taint(&self) -> bool {
        self.uses_taint || self.shadow.as_ref().is_some_and(|s| s.uses_taint)
    }

    /// [`evaluate_with`](Self::evaluate_with) for a tool that says nothing of itself
    /// ([`ToolHints::CAUTIOUS`]).
    pub fn evaluate<'a>(&'a self, agent: &str, tool: &str, args: &Value) -> Decision<'a> {
        self.evaluate_with(agent, tool, args, &ToolHints::CAUTIOUS)
    }

    /// First match across all matching policies in specificity order; fails closed with rule
    /// `"default"`. `hints` is what the tool says of itself, for rules with `annotations`.
    pub fn evaluate_with<'a>(
        &'a self,
        agent: &str,
        tool: &str,
        args: &Value,
        hints: &ToolHints,
    ) -> Decision<'a> {
        self.evaluate_in(agent, tool, args, hints, &[])
    }

    /// [`evaluate_with`](Self::evaluate_with) for a call whose session carries `taint` (its
    /// labels), for rules with `tainted`.
    pub fn evaluate_in<'a>(
        &'a self,
        agent: &str,
        tool: &str,
        args: &Value,
        hints: &ToolHints,
        taint: &[Arc<str>],
    ) -> Decision<'a> {
        let mut best = usize::MAX;
        self.agents.visit(agent, |groups| {
            for &group in groups {
                self.groups[group].visit(tool, |positions| {
                    for &position in positions {
                        if position >= best {
                            break;
                        }
                        if self.rules[position].holds(args, hints, taint) {
                            best = position;
                            break;
                        }
                    }
                });
            }
        });
        match self.rules.get(best) {
            Some(rule) => Decision {
                action: rule.action,
                policy: Some(&self.policies[rule.policy]),
                taint: rule.taint_match(taint),
            },
            None => Decision::default_deny(),
        }
    }

    /// Whether every call of `tool` by `agent` is denied, whatever its arguments: the first
    /// rule that could match is an unconditional `deny`, or no rule can match (fail closed).
    /// A rule with a condition may or may not match, so one that does not deny makes the
    /// answer false.
    pub fn always_denies(&self, agent: &str, tool: &str, hints: &ToolHints) -> bool {
        for position in self.rules_for(agent, tool) {
            let rule = &self.rules[position];
            if !rule.hints_hold(hints) {
                continue;
            }
            if rule.action != Action::Deny {
                return false;
            }
            // A rule that tests the session may or may not match, as a condition.
            if rule.condition.is_none() && rule.tainted.is_empty() {
                return true;
            }
        }
        true
    }

    /// The positions of the rules that can match `tool` for `agent`, in evaluation order.
    fn rules_for(&self, agent: &str, tool: &str) -> Vec<usize> {
        let mut matching = Vec::new();
        self.agents.visit(agent, |groups| {
            for &group in groups {
                self.groups[group].visit(tool, |positions| matching.extend_from_slice(positions));
            }
        });
        matching.sort_unstable();
        matching
    }

    /// The decision for `tool` and `agent` whatever is not known of the call: its arguments
    /// when `args` is `None`, what the tool says of itself when `hints` is `None`, its
    /// session's labels when `taint` is `None`. `None` when those could change it: a rule that
    /// may or may not match, deciding otherwise, comes before the first rule that surely does.
    pub fn settled(
        &self,
        agent: &str,
        tool: &str,
        args: Option<&Value>,
        hints: Option<&ToolHints>,
        taint: Option<&[Arc<str>]>,
    ) -> Option<Settled> {
        let mut possible = Vec::new();
        let mut last = Settled::NoRule;
        for position in self.rules_for(agent, tool) {
            let rule = &self.rules[position];
            let hints_match = match hints {
                Some(hints) => Some(rule.hints_hold(hints)),
                None if rule.hints.is_empty() => Some(true),
                None => None,
            };
            let condition_match = match args {
                Some(args) => Some(rule.condition_holds(args)),
                None if rule.condition.is_none() => Some(true),
                None => None,
            };
            let taint_match = match taint {
                Some(taint) => Some(rule.taint_holds(taint)),
                None if rule.tainted.is_empty() => Some(true),
                None => None,
            };
            match (hints_match, condition_match, taint_match) {
                (Some(false), _, _) | (_, Some(false), _) | (_, _, Some(false)) => {}
                (Some(true), Some(true), Some(true)) => {
                    last = Settled::Rule(rule.action);
                    break;
                }
                _ => possible.push(Settled::Rule(rule.action)),
            }
        }
        possible.iter().all(|&p| p == last).then_some(last)
    }

    /// Policies in evaluation (sorted) order — what `GET /policies` returns; advisory ones
    /// included (marked by their `mode`).
    pub fn policies(&self) -> &[PolicyConfig] {
        match &self.shadow {
            Some(shadow) => &shadow.policies,
            None => &self.policies,
        }
    }

    /// Whether some rule tests what tools say of themselves (`annotations`), so that callers
    /// need to look it up.
    pub fn uses_annotations(&self) -> bool {
        self.uses_annotations
    }

    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }
}

impl CompiledRule {
    fn holds(&self, args: &Value, hints: &ToolHints, taint: &[Arc<str>]) -> bool {
        self.hints_hold(hints) && self.taint_holds(taint) && self.condition_holds(args)
    }

    fn taint_holds(&self, taint: &[Arc<str>]) -> bool {
        self.tainted.is_empty() || self.taint_match(taint).is_some()
    }

    /// The first of the rule's `tainted` labels that the session carries.
    fn taint_match(&self, taint: &[Arc<str>]) -> Option<&str> {
        self.tainted
            .iter()
            .find(|want| taint.iter().any(|has| **has == ***want))
            .map(|l| &**l)
    }

    fn hints_hold(&self, hints: &ToolHints) -> bool {
        self.hints
            .iter()
            .all(|&(hint, want)| hints.get(hint) == want)
    }

    fn condition_holds(&self, args: &Value) -> bool {
        self.condition.as_ref().is_none_or(|c| c.holds(args))
    }
}

/// Patterns → ascending lists of ids. A name finds the ids of every pattern it matches: exact
/// names by hash; globs through a trie of their literal prefixes (walked along the name from
/// its start), or, for globs that start with a wildcard, a trie of their literal suffixes
/// (walked from the name's end). Only globs whose literal text fits the name are tried.
#[derive(Debug, Default)]
struct GlobIndex {
    exact: HashMap<Box<str>, Vec<usize>>,
    globs: Vec<(Glob, Vec<usize>)>,
    by_prefix: Trie,
    by_suffix: Trie,
}

impl GlobIndex {
    /// Calls `found` with the ids of each pattern that matches `name` (a pattern inserted both
    /// ways may be reported twice).
    fn visit(&self, name: &str, mut found: impl FnMut(&[usize])) {
        if let Some(ids) = self.exact.get(name) {
            found(ids);
        }
        let mut try_glob = |slot: usize| {
            let (glob, ids) = &self.globs[slot];
            if glob.matches(name) {
                found(ids);
            }
        };
        self.by_prefix.visit(name.bytes(), &mut try_glob);
        self.by_suffix.visit(name.bytes().rev(), &mut try_glob);
    }
}

/// A byte trie whose nodes hold glob slots.
#[derive(Debug, Default)]
struct Trie {
    /// Node 0 is the root (the empty key); absent until the first insert.
    nodes: Vec<TrieNode>,
}

#[derive(Debug, Default)]
struct TrieNode {
    /// Sorted by byte.
    children: Vec<(u8, usize)>,
    slots: Vec<usize>,
}

impl Trie {
    /// Calls `found` with the slots of every node along `key`, root included.
    fn visit(&self, key: impl Iterator<Item = u8>, found: &mut impl FnMut(usize)) {
        let Some(mut node) = self.nodes.first() else {
            return;
        };
        let mut key = key;
        loop {
            for &slot in &node.slots {
                found(slot);
            }
            let Some(byte) = key.next() else {
                return;
            };
            match node.children.binary_search_by_key(&byte, |&(b, _)| b) {
                Ok(i) => node = &self.nodes[node.children[i].1],
                Err(_) => return,
            }
        }
    }

    fn insert(&mut self, key: impl Iterator<Item = u8>, slot: usize) {
        if self.nodes.is_empty() {
            self.nodes.push(TrieNode::default());
        }
        let mut node = 0;
        for byte in key {
            node = match self.nodes[node]
                .children
                .binary_search_by_key(&byte, |&(b, _)| b)
            {
                Ok(i) => self.nodes[node].children[i].1,
                Err(i) => {
                    let child = self.nodes.len();
                    self.nodes.push(TrieNode::default());
                    self.nodes[node].children.insert(i, (byte, child));
                    child
                }
            };
        }
        self.nodes[node].slots.push(slot);
    }
}

#[derive(Debug, Default)]
struct GlobIndexBuilder {
    index: GlobIndex,
    /// Pattern → its slot in `index.globs`, to share one entry per distinct glob.
    slots: HashMap<String, usize>,
}

impl GlobIndexBuilder {
    /// Ids must be inserted in ascending order.
    fn insert_exact(&mut self, name: &str, id: usize) {
        let ids = self.index.exact.entry(name.into()).or_default();
        push_id(ids, id);
    }

    fn insert_glob(&mut self, glob: &Glob, id: usize) {
        if let Some(&slot) = self.slots.get(glob.as_str()) {
            push_id(&mut self.index.globs[slot].1, id);
            return;
        }
        let slot = self.index.globs.len();
        self.index.globs.push((glob.clone(), vec![id]));
        self.slots.insert(glob.as_str().to_owned(), slot);
        let prefix = glob.literal_prefix();
        let suffix = glob.literal_suffix();
        if prefix.is_empty() && !suffix.is_empty() {
            self.index.by_suffix.insert(suffix.bytes().rev(), slot);
        } else {
            self.index.by_prefix.insert(prefix.bytes(), slot);
        }
    }

    fn build(self) -> GlobIndex {
        self.index
    }
}

/// Keeps a list strictly ascending: a rule naming two patterns of one entry counts once.
fn push_id(ids: &mut Vec<usize>, id: usize) {
    if ids.last() != Some(&id) {
        ids.push(id);
    }
}
