//! `mesh7 discover --lint`: the policy rules checked against the tools actually discovered.
//!
//! A rule whose tool pattern matches no tool never decides anything (a typo such as `gh.prr`),
//! and a condition on a field that no tool the rule matches takes as an argument never holds (a
//! `deny` it guards never denies). A `taint.sources` pattern that matches no tool labels no
//! session, so the rules testing its label never hold. All are silent at run time, so all are
//! reported; a tool of an MCP server that could not be reached is unknown, so patterns aimed at
//! that server are not judged.

use mesh7_config::glob::Glob;
use mesh7_config::{PolicyConfig, TaintConfig};
use serde_json::Value;

use super::Discovered;

/// The findings of `policies` and `taint` sources against `tools`, one line each for people, in
/// policy and rule order, then source order. `unreached`: the MCP servers whose tools are
/// unknown.
pub fn lint(
    policies: &[PolicyConfig],
    taint: &TaintConfig,
    tools: &[Discovered],
    unreached: &[String],
) -> Vec<String> {
    let mut findings = Vec::new();
    for (i, policy) in policies.iter().enumerate() {
        let at = format!("policies[{i}] {:?}", policy.name);
        for (j, rule) in policy.rules.iter().enumerate() {
            let place = format!("{at}: rules[{j}]");
            let (matched, judged) = matches(&rule.tools, &place, tools, unreached, &mut findings);
            let Some(condition) = &rule.condition else {
                continue;
            };
            // Only tools whose schema lists its arguments can tell a field is not one of them.
            let listed: Vec<&Discovered> = matched
                .into_iter()
                .filter(|t| arguments(t).is_some())
                .collect();
            if !judged || listed.is_empty() {
                continue;
            }
            let mut fields = Vec::new();
            condition_fields(condition, &mut fields);
            for field in fields {
                if !listed.iter().any(|t| takes(t, field)) {
                    let known: Vec<String> = listed
                        .iter()
                        .map(|t| {
                            format!(
                                "{}: {}",
                                t.name,
                                arguments(t).unwrap_or_default().join(", ")
                            )
                        })
                        .collect();
                    findings.push(format!(
                        "{at}: rules[{j}].condition: field {field:?} is not an argument of any tool the rule matches ({})",
                        known.join("; ")
                    ));
                }
            }
        }
    }
    // A source that matches no tool labels no session: the rules that test its label never hold.
    for (i, source) in taint.sources.iter().enumerate() {
        let place = format!("taint.sources[{i}] {:?}", source.label);
        matches(&source.tools, &place, tools, unreached, &mut findings);
    }
    findings
}

/// The tools `patterns` match; a finding for each pattern that matches none. False when a
/// pattern aimed at an unreached server matched nothing (what it matches is unknown).
fn matches<'t>(
    patterns: &[String],
    place: &str,
    tools: &'t [Discovered],
    unreached: &[String],
    findings: &mut Vec<String>,
) -> (Vec<&'t Discovered>, bool) {
    let mut matched: Vec<&Discovered> = Vec::new();
    let mut judged = true;
    for (k, pattern) in patterns.iter().enumerate() {
        let glob = Glob::new(pattern);
        let hits: Vec<&Discovered> = tools.iter().filter(|t| glob.matches(&t.name)).collect();
        if hits.is_empty() {
            if aims_at(pattern, unreached) {
                judged = false;
            } else {
                findings.push(format!("{place}.tools[{k}] {pattern:?} matches no tool"));
            }
        }
        matched.extend(hits);
    }
    (matched, judged)
}

/// Whether `pattern` names tools of a server whose tools are unknown (`server.…`, or a pattern
/// that could match any server's tools).
fn aims_at(pattern: &str, unreached: &[String]) -> bool {
    if unreached.is_empty() {
        return false;
    }
    let head = pattern.split('.').next().unwrap_or(pattern);
    let glob = Glob::new(head);
    unreached.iter().any(|server| glob.matches(server))
}

/// Every `field` of a condition tree, in order.
fn condition_fields<'a>(c: &'a mesh7_config::ConditionConfig, out: &mut Vec<&'a str>) {
    if let Some(field) = c.field.as_deref()
        && !out.contains(&field)
    {
        out.push(field);
    }
    for child in c.all.iter().chain(c.any.iter()).flatten() {
        condition_fields(child, out);
    }
    if let Some(not) = &c.not {
        condition_fields(not, out);
    }
}

/// The argument names the tool's input schema lists, when it lists them.
fn arguments(tool: &Discovered) -> Option<Vec<String>> {
    let properties = tool.input_schema.get("properties")?.as_object()?;
    Some(properties.keys().cloned().collect())
}

/// Whether a condition on `field` can find a value in the tool's arguments. A field resolves
/// against `{"params": args}` first, then against the arguments themselves, so `params.amount`
/// and `amount` both name the argument `amount` (and `params.x` an argument `params` too).
fn takes(tool: &Discovered, field: &str) -> bool {
    if field == mesh7_config::condition::ANY_VALUE {
        return true;
    }
    let Some(properties) = tool
        .input_schema
        .get("properties")
        .and_then(Value::as_object)
    else {
        return true;
    };
    let mut segments = field.split('.');
    let first = segments.next().unwrap_or_default();
    if first == "params" {
        match segments.next() {
            // The whole arguments object.
            None => true,
            Some(second) => properties.contains_key(second) || properties.contains_key(first),
        }
    } else {
        properties.contains_key(first)
    }
}

#[cfg(test)]
mod tests {
    use mesh7_config::{ConditionConfig, RuleConfig};
    use serde_json::json;

    use super::*;

    fn tool(name: &str, arguments: &[&str]) -> Discovered {
        let properties: serde_json::Map<String, Value> = arguments
            .iter()
            .map(|a| ((*a).to_owned(), json!({"type": "string"})))
            .collect();
        Discovered {
            name: name.to_owned(),
            description: String::new(),
            label: String::new(),
            method: String::new(),
            input_schema: json!({"type": "object", "properties": properties}),
        }
    }

    fn field(name: &str) -> ConditionConfig {
        ConditionConfig {
            field: Some(name.to_owned()),
            ..ConditionConfig::default()
        }
    }

    fn policy(rules: Vec<(Vec<&str>, Option<ConditionConfig>)>) -> PolicyConfig {
        PolicyConfig {
            name: "p".to_owned(),
            rules: rules
                .into_iter()
                .map(|(tools, condition)| RuleConfig {
                    tools: tools.into_iter().map(str::to_owned).collect(),
                    action: mesh7_config::Action::Allow,
                    condition,
                    annotations: std::collections::BTreeMap::new(),
                    tainted: Vec::new(),
                })
                .collect(),
            ..PolicyConfig::default()
        }
    }

    #[test]
    fn a_pattern_matching_no_tool_is_reported_unless_its_server_was_not_reached() {
        let tools = [tool("gh.pr", &["state"]), tool("fs.read", &["path"])];
        let policies = [policy(vec![
            (vec!["gh.pr", "gh.prr"], None),
            (vec!["*"], None),
            (vec!["notes.*"], None),
        ])];
        assert_eq!(
            lint(&policies, &TaintConfig::default(), &tools, &[]),
            [
                r#"policies[0] "p": rules[0].tools[1] "gh.prr" matches no tool"#,
                r#"policies[0] "p": rules[2].tools[0] "notes.*" matches no tool"#,
            ]
        );
        assert_eq!(
            lint(
                &policies,
                &TaintConfig::default(),
                &tools,
                &["notes".to_owned()]
            ),
            [r#"policies[0] "p": rules[0].tools[1] "gh.prr" matches no tool"#]
        );
    }

    #[test]
    fn a_taint_source_matching_no_tool_is_reported() {
        let tools = [tool("web.fetch", &["url"]), tool("fs.read", &["path"])];
        let taint: TaintConfig = serde_json::from_value(serde_json::json!({"sources": [
            {"tools": ["web.*"], "label": "web"},
            {"tools": ["fs.read", "mail.get"], "label": "mail"},
        ]}))
        .expect("taint");
        assert_eq!(
            lint(&[], &taint, &tools, &[]),
            [r#"taint.sources[1] "mail".tools[1] "mail.get" matches no tool"#]
        );
        assert!(lint(&[], &taint, &tools, &["mail".to_owned()]).is_empty());
    }

    #[test]
    fn a_condition_field_no_matched_tool_takes_is_reported() {
        let tools = [
            tool("pay.refund", &["amount", "currency"]),
            tool("pay.status", &["id"]),
            tool("raw.call", &[]),
        ];
        let any = ConditionConfig {
            any: Some(vec![field("params.amount"), field("ammount")]),
            not: Some(Box::new(field("currency"))),
            ..ConditionConfig::default()
        };
        let policies = [policy(vec![
            (vec!["pay.*"], Some(any)),
            // Taken by one matched tool: fine.
            (vec!["pay.*"], Some(field("id"))),
            (vec!["pay.refund"], Some(field("params"))),
            (vec!["pay.refund"], Some(field("*"))),
        ])];
        assert_eq!(
            lint(&policies, &TaintConfig::default(), &tools, &[]),
            [
                r#"policies[0] "p": rules[0].condition: field "ammount" is not an argument of any tool the rule matches (pay.refund: amount, currency; pay.status: id)"#
            ]
        );
        // A tool whose schema lists no arguments cannot be judged.
        let mut open = tool("raw.call", &[]);
        open.input_schema = json!({"type": "object"});
        let policies = [policy(vec![(vec!["raw.call"], Some(field("anything")))])];
        assert!(lint(&policies, &TaintConfig::default(), &[open], &[]).is_empty());
    }
}
