//! `mesh7 replay`: the calls recorded in JSONL traces, decided again by a candidate
//! configuration's policies, and the decisions that would change.
//!
//! Only the policy decision is replayed (the rules, and a CLI tool's `default_action` when no
//! rule matches): rate limits, loop detection, grants and approvals depend on what happened
//! around a call, not on the call. A call that ran under a grant or a remembered approval was
//! decided `human_approval` by its policy, and is compared as such; a rate-limited call's policy
//! decision was not recorded, and a call stopped by a halt or a pin (rules `halt:…`, `pin:…`)
//! records that override instead, so both are counted apart. A call recorded with redacted
//! arguments (`trace.redact`) is decided again only where the candidate's decision for that
//! agent and tool cannot depend on them; otherwise it is counted apart too. So is a call of an
//! MCP or OpenAPI tool where a rule with `annotations` could change the decision: what the tool
//! said of itself is not in the trace. Pure: main.rs reads the files and prints.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::io::{BufRead, Read as _};
use std::sync::Arc;

use mesh7_actors::trace::{TraceEntry, redact};
use mesh7_config::{Action, PolicySet, Settled, ToolHints};

use crate::registry::Registry;

/// One call whose decision would change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub trace_id: String,
    pub agent: String,
    /// The name policy evaluates (the effective tool of a CLI dispatch).
    pub tool: String,
    pub recorded: Action,
    pub candidate: Action,
    /// The candidate's deciding policy, `default` or `default_action`.
    pub rule: String,
}

/// What a replay found.
#[derive(Debug, Default)]
pub struct Report {
    /// Calls decided again.
    pub replayed: usize,
    pub changes: Vec<Change>,
    /// Calls whose policy decision the trace does not tell (rate limited, refused before a
    /// decision), or that the candidate decides by arguments the trace holds redacted.
    pub not_comparable: usize,
    /// Lines that are not trace entries, with the first one's file, number and why.
    pub skipped: usize,
    pub first_skipped: Option<(String, usize, String)>,
}

/// Decides again, under `policies` (and the CLI tools of `registry`), every call of `traces`
/// (read from the file `name`). A trace id in `seen` (the line an approval's outcome adds) is
/// not a new call.
pub fn replay(
    policies: &PolicySet,
    registry: &Registry,
    name: &str,
    traces: impl BufRead,
    report: &mut Report,
    seen: &mut HashSet<String>,
) -> std::io::Result<()> {
    let mut lines = BoundedLines::new(traces);
    while let Some((number, line)) = lines.next_line()? {
        let parsed = match line {
            Line::Text(line) if line.trim_ascii().is_empty() => continue,
            Line::Text(line) => {
                serde_json::from_slice::<TraceEntry>(line).map_err(|e| e.to_string())
            }
            Line::TooLong => Err(format!("longer than {MAX_LINE} bytes")),
        };
        let entry = match parsed {
            Ok(entry) => entry,
            Err(why) => {
                report.skipped += 1;
                report
                    .first_skipped
                    .get_or_insert_with(|| (name.to_owned(), number, why));
                continue;
            }
        };
        if !seen.insert(entry.trace_id.clone()) {
            continue;
        }
        let Some(recorded) = recorded_action(&entry) else {
            report.not_comparable += 1;
            continue;
        };
        // A CLI tool of the candidate says nothing of itself; what an MCP or OpenAPI tool says
        // (its annotations) is not in the trace, and those tools are not loaded here.
        let (tool, fallback, hints) = match registry.resolve(&entry.tool, &entry.params) {
            Ok(resolved) => (
                resolved.effective_name,
                resolved.default_action,
                Some(&ToolHints::CAUTIOUS),
            ),
            // The name policy saw then.
            Err(_) if !entry.effective_tool.is_empty() => {
                (entry.effective_tool.clone(), None, None)
            }
            Err(_) => (entry.tool.clone(), None, None),
        };
        // Arguments recorded under `trace.redact` are not what the policy saw: only a decision
        // they cannot change is replayed, and so is one that annotations cannot change.
        let args = (!redact::is_redacted(&entry.params)).then_some(&entry.params);
        // The session's labels, when the line recorded them (a rule tested them then).
        let taint: Option<Vec<Arc<str>>> = entry
            .taint
            .as_ref()
            .map(|labels| labels.iter().map(|l| Arc::from(l.as_str())).collect());
        let Some(settled) = policies.settled(&entry.agent_id, &tool, args, hints, taint.as_deref())
        else {
            report.not_comparable += 1;
            continue;
        };
        report.replayed += 1;
        let (candidate, rule) = match (settled, fallback) {
            (Settled::NoRule, Some(action)) => (action, "default_action".to_owned()),
            (Settled::NoRule, None) => (Action::Deny, "default".to_owned()),
            (Settled::Rule(action), _) => {
                // Every way the unknowns could go gives this action; the rule named is the
                // one that decides with what is known (a tool that says nothing).
                let decision = policies.evaluate_in(
                    &entry.agent_id,
                    &tool,
                    &entry.params,
                    &ToolHints::CAUTIOUS,
                    taint.as_deref().unwrap_or_default(),
                );
                (action, decision.rule().to_owned())
            }
        };
        if candidate != recorded {
            report.changes.push(Change {
                trace_id: entry.trace_id,
                agent: entry.agent_id,
                tool,
                recorded,
                candidate,
                rule,
            });
        }
    }
    Ok(())
}

/// The longest trace line read (mesh7 writes far shorter ones); a longer one is skipped.
pub const MAX_LINE: usize = 16 << 20;

/// One line of a trace file.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// Its text, without the newline.
    Text(&'a [u8]),
    /// Over `MAX_LINE` bytes: skipped to its end, never held whole.
    TooLong,
}

/// The lines of a file, none held beyond `MAX_LINE` bytes.
pub struct BoundedLines<R> {
    reader: R,
    line: Vec<u8>,
    number: usize,
}

impl<R: BufRead> BoundedLines<R> {
    pub fn new(reader: R) -> Self {
        BoundedLines {
            reader,
            line: Vec::new(),
            number: 0,
        }
    }

    /// The next line and its number (from 1); `None` at the end of the file.
    pub fn next_line(&mut self) -> std::io::Result<Option<(usize, Line<'_>)>> {
        self.line.clear();
        let limit = u64::try_from(MAX_LINE).unwrap_or(u64::MAX) + 1;
        let read = (&mut self.reader)
            .take(limit)
            .read_until(b'\n', &mut self.line)?;
        if read == 0 {
            return Ok(None);
        }
        self.number += 1;
        if self.line.last() == Some(&b'\n') {
            self.line.pop();
        } else if self.line.len() > MAX_LINE {
            self.reader.skip_until(b'\n')?;
            return Ok(Some((self.number, Line::TooLong)));
        }
        Ok(Some((self.number, Line::Text(&self.line))))
    }
}

/// The policy decision a trace entry records, if it records one.
fn recorded_action(entry: &TraceEntry) -> Option<Action> {
    // An emergency stop or a changed tool overrode whatever the policy said.
    if entry.policy_rule.starts_with("halt:") || entry.policy_rule.starts_with("pin:") {
        return None;
    }
    let let_through =
        entry.policy_rule.starts_with("grant:") || entry.policy_rule == mesh7_actors::memory::RULE;
    match entry.policy.as_str() {
        "allow" if let_through => Some(Action::HumanApproval),
        "allow" => Some(Action::Allow),
        "deny" => Some(Action::Deny),
        "human_approval" => Some(Action::HumanApproval),
        _ => None,
    }
}

impl Report {
    /// One line per change, then the summary.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for c in &self.changes {
            let _ = writeln!(
                out,
                "{} {} {}: {} -> {} ({})",
                c.trace_id, c.agent, c.tool, c.recorded, c.candidate, c.rule
            );
        }
        let mut kinds: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for c in &self.changes {
            *kinds
                .entry((c.recorded.as_str(), c.candidate.as_str()))
                .or_default() += 1;
        }
        let kinds: Vec<String> = kinds
            .iter()
            .map(|((from, to), n)| format!("{from} -> {to}: {n}"))
            .collect();
        let _ = write!(
            out,
            "{} calls replayed, {} would change",
            self.replayed,
            self.changes.len()
        );
        if !kinds.is_empty() {
            let _ = write!(out, " ({})", kinds.join(", "));
        }
        if self.not_comparable > 0 {
            let _ = write!(
                out,
                "; {} not comparable (rate limited, halted, a changed tool, redacted arguments, annotations or session labels a rule reads, or refused before a decision)",
                self.not_comparable
            );
        }
        if let Some((file, line, why)) = &self.first_skipped {
            let _ = write!(
                out,
                "; {} lines skipped, not trace entries (first: {file} line {line}: {why})",
                self.skipped
            );
        }
        out.push('\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh7_actors::cli::CliCatalog;
    use mesh7_config::PolicyConfig;
    use serde_json::{Value, json};

    fn policies(yaml: &str) -> PolicySet {
        let policies: Vec<PolicyConfig> = serde_yaml::from_str(yaml).expect("policies");
        PolicySet::compile(&policies).expect("compile")
    }

    fn line(trace_id: &str, agent: &str, tool: &str, policy: &str, rule: &str) -> String {
        json!({"trace_id": trace_id, "agent_id": agent, "tool": tool, "params": {},
            "policy": policy, "policy_rule": rule, "status_code": 200, "latency_ms": 1,
            "timestamp": "2026-01-01T00:00:00Z"})
        .to_string()
    }

    /// (trace id, candidate action) of each change.
    fn changed(report: &Report) -> Vec<(&str, Action)> {
        report
            .changes
            .iter()
            .map(|c| (c.trace_id.as_str(), c.candidate))
            .collect()
    }

    fn run(set: &PolicySet, text: &str) -> Report {
        let registry = Registry::new(CliCatalog::from_config(&[]).expect("catalog"), Vec::new());
        let mut report = Report::default();
        let mut seen = HashSet::new();
        replay(
            set,
            &registry,
            "t.jsonl",
            text.as_bytes(),
            &mut report,
            &mut seen,
        )
        .expect("read");
        report
    }

    #[test]
    fn changed_decisions_are_listed_and_counted() {
        let set = policies(
            r#"
- name: strict
  agent: "*"
  rules:
    - tools: ["fs.read"]
      action: allow
    - tools: ["fs.write"]
      action: human_approval
"#,
        );
        let text = [
            line("t1", "a", "fs.read", "allow", "old"),
            line("t2", "a", "fs.write", "allow", "old"),
            // Let through by a grant: its policy said human_approval, as the candidate does.
            line("t3", "a", "fs.write", "allow", "grant:g1"),
            line("t4", "a", "fs.delete", "allow", "old"),
            line("t5", "a", "fs.read", "rate_limited", "old"),
            // Overridden by a halt and by a pin: the policy's decision is not what was recorded.
            line("t6", "a", "fs.read", "deny", "halt:0123456789abcdef"),
            line("t7", "a", "fs.read", "deny", "pin:fs.read"),
            // The line an approval's outcome adds: the same call.
            line("t2", "a", "fs.write", "allow", "old"),
            "not json".to_owned(),
        ]
        .join("\n");
        let report = run(&set, &text);
        assert_eq!(report.replayed, 4);
        assert_eq!(report.not_comparable, 3);
        assert_eq!(report.skipped, 1);
        let changed: Vec<(&str, Action, Action, &str)> = report
            .changes
            .iter()
            .map(|c| {
                (
                    c.trace_id.as_str(),
                    c.recorded,
                    c.candidate,
                    c.rule.as_str(),
                )
            })
            .collect();
        assert_eq!(
            changed,
            [
                ("t2", Action::Allow, Action::HumanApproval, "strict"),
                ("t4", Action::Allow, Action::Deny, "default"),
            ]
        );
        let text = report.render();
        assert!(
            text.contains("t4 a fs.delete: allow -> deny (default)"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "4 calls replayed, 2 would change (allow -> deny: 1, allow -> human_approval: 1); \
                 3 not comparable (rate limited, halted, a changed tool, redacted arguments, annotations or session labels a rule reads, or refused before a decision); \
                 1 lines skipped, not trace entries (first: t.jsonl line 9: expected ident at line 1 column 2)\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn redacted_arguments_are_replayed_only_where_no_condition_can_read_them() {
        let set = policies(
            r#"
- name: candidate
  agent: "*"
  rules:
    - tools: ["db.query"]
      action: human_approval
      condition: { field: password, operator: "==", value: "x" }
    - tools: ["db.query"]
      action: allow
    - tools: ["db.admin"]
      action: deny
      condition: { field: password, operator: exists }
    - tools: ["db.admin"]
      action: deny
    - tools: ["db.dump"]
      action: human_approval
"#,
        );
        let redacted = |id: &str, tool: &str| {
            let mut v: Value =
                serde_json::from_str(&line(id, "a", tool, "allow", "old")).expect("line");
            v["params"] = json!({"password": "[redacted:0123456789abcdef]"});
            v.to_string()
        };
        let text = [
            // A condition reads the arguments and would decide otherwise: not comparable.
            redacted("r1", "db.query"),
            // Conditions, but every outcome is deny: replayed.
            redacted("r2", "db.admin"),
            // No condition: replayed.
            redacted("r3", "db.dump"),
            // Not redacted: replayed with the arguments as recorded.
            line("r4", "a", "db.query", "allow", "old"),
        ]
        .join("\n");
        let report = run(&set, &text);
        assert_eq!((report.replayed, report.not_comparable), (3, 1));
        let changed = changed(&report);
        assert_eq!(
            changed,
            [("r2", Action::Deny), ("r3", Action::HumanApproval)]
        );
    }

    #[test]
    fn a_decision_annotations_could_change_is_not_compared() {
        let set = policies(
            r#"
- name: hints
  agent: "*"
  rules:
    - tools: ["fs.read"]
      annotations: { readOnlyHint: true }
      action: allow
    - tools: ["fs.*"]
      action: human_approval
    - tools: ["db.*"]
      annotations: { destructiveHint: true }
      action: deny
    - tools: ["db.*"]
      action: deny
"#,
        );
        let text = [
            // What fs.read said of itself is not in the trace: allow or human_approval.
            line("a1", "a", "fs.read", "allow", "old"),
            // No annotation rule for fs.write.
            line("a2", "a", "fs.write", "allow", "old"),
            // Denied whatever db.drop says.
            line("a3", "a", "db.drop", "allow", "old"),
        ]
        .join("\n");
        let report = run(&set, &text);
        assert_eq!((report.replayed, report.not_comparable), (2, 1));
        let changed: Vec<(&str, Action, &str)> = report
            .changes
            .iter()
            .map(|c| (c.trace_id.as_str(), c.candidate, c.rule.as_str()))
            .collect();
        assert_eq!(
            changed,
            [
                ("a2", Action::HumanApproval, "hints"),
                ("a3", Action::Deny, "hints")
            ]
        );
    }

    #[test]
    fn session_labels_are_replayed_as_recorded_and_unknown_when_not() {
        let set = policies(
            r#"
- name: exfil
  agent: "*"
  rules:
    - tools: ["slack.post"]
      tainted: [web]
      action: deny
    - tools: ["*"]
      action: allow
"#,
        );
        let with_taint = |id: &str, labels: Value| {
            let mut entry: Value =
                serde_json::from_str(&line(id, "a", "slack.post", "allow", "old")).expect("json");
            entry["taint"] = labels;
            entry.to_string()
        };
        let text = [
            // Recorded in a labelled session: the candidate denies it.
            with_taint("t1", json!(["web"])),
            // Recorded clean: allowed still.
            with_taint("t2", json!([])),
            // Recorded while no rule tested labels: either way.
            line("t3", "a", "slack.post", "allow", "old"),
            // A tool no labelled rule names: the labels do not matter.
            line("t4", "a", "fs.read", "allow", "old"),
        ]
        .join("\n");
        let report = run(&set, &text);
        assert_eq!((report.replayed, report.not_comparable), (3, 1));
        let changed = changed(&report);
        assert_eq!(changed, [("t1", Action::Deny)]);
    }

    #[test]
    fn a_line_over_the_bound_is_skipped_to_its_end_without_being_held() {
        let long = vec![b'x'; MAX_LINE + 10];
        let text = [b"a\n".as_slice(), &long, b"\nb"].concat();
        let mut lines = BoundedLines::new(std::io::BufReader::new(text.as_slice()));
        let mut seen = Vec::new();
        while let Some((n, line)) = lines.next_line().expect("read") {
            seen.push((
                n,
                match line {
                    Line::Text(text) => Some(text.to_vec()),
                    Line::TooLong => None,
                },
            ));
            assert!(lines.line.capacity() <= 2 * (MAX_LINE + 1), "held too much");
        }
        assert_eq!(
            seen,
            [
                (1, Some(b"a".to_vec())),
                (2, None),
                (3, Some(b"b".to_vec()))
            ]
        );
    }

    #[test]
    fn the_same_policies_change_nothing() {
        let set = policies(
            r#"
- name: p
  agent: "*"
  rules:
    - tools: ["x"]
      action: deny
"#,
        );
        let report = run(&set, &line("t1", "a", "x", "deny", "p"));
        assert_eq!((report.replayed, report.changes.len()), (1, 0));
        assert_eq!(report.render(), "1 calls replayed, 0 would change\n");
    }
}
