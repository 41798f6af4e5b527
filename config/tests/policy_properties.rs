//! Properties of evaluation over random policy sets: fail closed when no rule can match, a deny
//! rule never widens what is allowed, the indexed evaluator agrees with a naive one that
//! follows the spec's loop line by line, and a tool said to be always denied is denied whatever
//! its arguments (exactly the denied ones when no rule has a condition), and a decision said to
//! be settled is the same whatever the arguments, annotations or session labels left unknown.
//! Rules test annotations and session labels (`tainted`) as well as conditions.

use mesh7_config::condition::Condition;
use mesh7_config::glob::{self, Glob};
use std::collections::BTreeMap;
use std::sync::Arc;

use mesh7_config::policy::HINT_NAMES;
use mesh7_config::{
    Action, ConditionConfig, Operator, PolicyConfig, PolicyMode, PolicySet, RuleConfig, Settled,
    ToolHints,
};
use proptest::prelude::*;
use serde_json::{Value, json};

/// The spec's evaluation loop, with no index: sort, then scan every policy and rule.
fn naive_evaluate(
    policies: &[PolicyConfig],
    agent: &str,
    tool: &str,
    args: &Value,
    hints: &ToolHints,
    taint: &[Arc<str>],
) -> (Action, Option<String>) {
    let mut sorted: Vec<&PolicyConfig> = policies.iter().collect();
    sorted.sort_by_key(|p| std::cmp::Reverse(Glob::new(&p.agent).specificity()));
    for policy in sorted {
        if !glob::matches(&policy.agent, agent) {
            continue;
        }
        for rule in &policy.rules {
            if !rule
                .tools
                .iter()
                .any(|t| t == tool || glob::matches(t, tool))
            {
                continue;
            }
            let said = |name: &str| match name {
                "readOnlyHint" => hints.read_only,
                "destructiveHint" => hints.destructive,
                "idempotentHint" => hints.idempotent,
                "openWorldHint" => hints.open_world,
                other => panic!("generated an unknown hint {other}"),
            };
            if rule
                .annotations
                .iter()
                .any(|(name, &want)| said(name) != want)
            {
                continue;
            }
            if !rule.tainted.is_empty()
                && !rule
                    .tainted
                    .iter()
                    .any(|l| taint.iter().any(|t| **t == **l))
            {
                continue;
            }
            if let Some(c) = &rule.condition {
                let condition = Condition::compile(c).expect("generated conditions are valid");
                if !condition.holds(args) {
                    continue;
                }
            }
            return (rule.action, Some(policy.name.clone()));
        }
    }
    (Action::Deny, None)
}

fn indexed_evaluate(
    set: &PolicySet,
    agent: &str,
    tool: &str,
    args: &Value,
    hints: &ToolHints,
    taint: &[Arc<str>],
) -> (Action, Option<String>) {
    let decision = set.evaluate_in(agent, tool, args, hints, taint);
    (decision.action, decision.policy().map(|p| p.name.clone()))
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        Just(Action::Allow),
        Just(Action::Deny),
        Just(Action::HumanApproval)
    ]
}

fn agent_pattern() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("*".to_owned()),
        Just("a*".to_owned()),
        Just("*b".to_owned()),
        Just("a?".to_owned()),
        Just("[ab]b".to_owned()),
        Just("a/*".to_owned()),
        Just("a[".to_owned()),
        "[ab*?/]{0,3}",
    ]
}

fn agent() -> impl Strategy<Value = String> {
    "[ab/\\[]{0,3}"
}

/// Tool patterns over a small alphabet so that literals, globs, prefixes, malformed patterns
/// and exactly `*` collide often.
fn tool_pattern() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("*".to_owned()),
        Just("x.*".to_owned()),
        Just("*.y*".to_owned()),
        Just("x.y".to_owned()),
        Just("x[".to_owned()),
        "[xy.]{0,4}",
        "[xy.*?]{0,4}",
        "[xy.*?\\[\\]^\\\\-]{0,4}",
    ]
}

fn tool() -> impl Strategy<Value = String> {
    prop_oneof!["[xy.]{0,4}", Just("x[".to_owned()), "[xy.*\\[]{0,4}"]
}

fn condition() -> impl Strategy<Value = Option<ConditionConfig>> {
    let leaf = (
        prop_oneof![Just("n"), Just("params.n"), Just("m")],
        prop_oneof![
            Just(Operator::Lt),
            Just(Operator::Ge),
            Just(Operator::Eq),
            Just(Operator::Ne),
            Just(Operator::Exists),
        ],
        0i64..4,
    )
        .prop_map(|(field, operator, value)| ConditionConfig {
            field: Some(field.to_owned()),
            operator: Some(operator),
            value: (operator != Operator::Exists).then(|| json!(value)),
            ..ConditionConfig::default()
        });
    let node = leaf.prop_recursive(2, 6, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..3).prop_map(|all| ConditionConfig {
                all: Some(all),
                ..ConditionConfig::default()
            }),
            prop::collection::vec(inner.clone(), 1..3).prop_map(|any| ConditionConfig {
                any: Some(any),
                ..ConditionConfig::default()
            }),
            inner.prop_map(|not| ConditionConfig {
                not: Some(Box::new(not)),
                ..ConditionConfig::default()
            }),
        ]
    });
    prop::option::weighted(0.3, node)
}

fn annotations() -> impl Strategy<Value = BTreeMap<String, bool>> {
    prop::collection::btree_map(
        prop::sample::select(HINT_NAMES.to_vec()).prop_map(str::to_owned),
        any::<bool>(),
        1..3,
    )
}

fn hints() -> impl Strategy<Value = ToolHints> {
    (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
        |(read_only, destructive, idempotent, open_world)| ToolHints {
            read_only,
            destructive,
            idempotent,
            open_world,
        },
    )
}

fn rule_with(patterns: impl Strategy<Value = String>) -> impl Strategy<Value = RuleConfig> {
    (
        prop::collection::vec(patterns, 0..3),
        action(),
        condition(),
        prop::option::weighted(0.3, annotations()),
        prop::option::weighted(0.25, prop::sample::subsequence(vec!["w", "m"], 1..=2)),
    )
        .prop_map(
            |(tools, action, condition, annotations, tainted)| RuleConfig {
                tools,
                action,
                condition,
                annotations: annotations.unwrap_or_default(),
                tainted: tainted
                    .unwrap_or_default()
                    .into_iter()
                    .map(str::to_owned)
                    .collect(),
            },
        )
}

fn policy_set_with(
    patterns: impl Strategy<Value = String>,
) -> impl Strategy<Value = Vec<PolicyConfig>> {
    prop::collection::vec(
        (
            agent_pattern(),
            prop::collection::vec(rule_with(patterns), 0..5),
        ),
        0..8,
    )
    .prop_map(|policies| {
        policies
            .into_iter()
            .enumerate()
            .map(|(i, (agent, rules))| PolicyConfig {
                name: format!("p{i}"),
                agent,
                rate_limit: None,
                rules,
                mode: PolicyMode::Enforce,
            })
            .collect()
    })
}

fn args() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!({})),
        (0i64..4).prop_map(|n| json!({ "n": n })),
        (0i64..4).prop_map(|n| json!({ "params": {"n": n}, "m": n })),
        Just(json!({"n": "2"})),
        Just(json!({"n": null})),
    ]
}

/// A session's labels: none, either, both.
fn taint_cases() -> Vec<Vec<Arc<str>>> {
    vec![
        vec![],
        vec!["w".into()],
        vec!["m".into()],
        vec!["m".into(), "w".into()],
    ]
}

fn taint() -> impl Strategy<Value = Vec<Arc<str>>> {
    prop::sample::select(taint_cases())
}

type Query = (String, String, Value, ToolHints, Vec<Arc<str>>);

fn queries() -> impl Strategy<Value = Vec<Query>> {
    prop::collection::vec((agent(), tool(), args(), hints(), taint()), 1..16)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn indexed_evaluation_equals_naive_evaluation(
        policies in policy_set_with(tool_pattern()),
        queries in queries(),
    ) {
        let set = PolicySet::compile(&policies).expect("generated policies are valid");
        for (agent, tool, args, hints, taint) in &queries {
            prop_assert_eq!(
                indexed_evaluate(&set, agent, tool, args, hints, taint),
                naive_evaluate(&policies, agent, tool, args, hints, taint),
                "agent={:?} tool={:?} args={}", agent, tool, args
            );
        }
    }

    #[test]
    fn advisory_policies_never_decide_and_the_shadow_is_every_policy_enforced(
        policies in policy_set_with(tool_pattern()),
        advisory in prop::collection::vec(any::<bool>(), 8),
        queries in queries(),
    ) {
        let marked: Vec<PolicyConfig> = policies
            .iter()
            .zip(&advisory)
            .map(|(p, &a)| PolicyConfig {
                mode: if a { PolicyMode::Advisory } else { PolicyMode::Enforce },
                ..p.clone()
            })
            .collect();
        let enforced: Vec<PolicyConfig> =
            marked.iter().filter(|p| p.mode.is_enforce()).cloned().collect();
        let set = PolicySet::compile(&marked).expect("generated policies are valid");
        prop_assert_eq!(set.policies().len(), marked.len(), "every policy is listed");
        prop_assert_eq!(set.shadow().is_some(), enforced.len() < marked.len());
        for (agent, tool, args, hints, taint) in &queries {
            prop_assert_eq!(
                indexed_evaluate(&set, agent, tool, args, hints, taint),
                naive_evaluate(&enforced, agent, tool, args, hints, taint),
                "agent={:?} tool={:?} args={}", agent, tool, args
            );
            if let Some(shadow) = set.shadow() {
                prop_assert_eq!(
                    indexed_evaluate(shadow, agent, tool, args, hints, taint),
                    naive_evaluate(&marked, agent, tool, args, hints, taint),
                    "shadow: agent={:?} tool={:?} args={}", agent, tool, args
                );
            }
        }
    }

    #[test]
    fn no_rule_for_the_tool_means_deny_default(
        policies in policy_set_with("s[xy.*?\\[]{0,4}"),
        queries in prop::collection::vec((agent(), "o[xy.]{0,4}", args(), hints(), taint()), 1..16),
    ) {
        let set = PolicySet::compile(&policies).expect("generated policies are valid");
        for (agent, tool, args, hints, taint) in &queries {
            let decision = set.evaluate_in(agent, tool, args, hints, taint);
            prop_assert_eq!(decision.action, Action::Deny);
            prop_assert_eq!(decision.rule(), "default");
            prop_assert!(decision.is_default());
        }
    }

    #[test]
    fn inserting_a_deny_rule_never_allows_more(
        policies in policy_set_with(tool_pattern()),
        deny in rule_with(tool_pattern()),
        at in any::<prop::sample::Index>(),
        queries in queries(),
    ) {
        prop_assume!(!policies.is_empty());
        let deny = RuleConfig { action: Action::Deny, ..deny };
        // Prefer a spot just before an allow rule; any spot otherwise.
        let allow_spots: Vec<(usize, usize)> = policies
            .iter()
            .enumerate()
            .flat_map(|(p, policy)| {
                policy.rules.iter().enumerate()
                    .filter(|(_, r)| r.action == Action::Allow)
                    .map(move |(r, _)| (p, r))
            })
            .collect();
        let (p, r) = if allow_spots.is_empty() {
            let p = at.index(policies.len());
            (p, at.index(policies[p].rules.len() + 1))
        } else {
            *at.get(&allow_spots)
        };
        let mut stricter = policies.clone();
        stricter[p].rules.insert(r, deny);

        let before = PolicySet::compile(&policies).expect("generated policies are valid");
        let after = PolicySet::compile(&stricter).expect("generated policies are valid");
        for (agent, tool, args, hints, taint) in &queries {
            let old = before.evaluate_in(agent, tool, args, hints, taint).action;
            let new = after.evaluate_in(agent, tool, args, hints, taint).action;
            prop_assert!(
                new == old || new == Action::Deny,
                "agent={:?} tool={:?} args={} was {:?}, now {:?}", agent, tool, args, old, new
            );
            if new == Action::Allow {
                prop_assert_eq!(old, Action::Allow);
            }
        }
    }

    #[test]
    fn a_tool_always_denied_is_denied_whatever_its_arguments(
        policies in policy_set_with(tool_pattern()),
        names in prop::collection::vec((agent(), tool(), hints()), 1..16),
    ) {
        let set = PolicySet::compile(&policies).expect("generated policies are valid");
        for (agent, tool, hints) in &names {
            if set.always_denies(agent, tool, hints) {
                for args in &samples() {
                    for taint in &taint_cases() {
                        prop_assert_eq!(
                            set.evaluate_in(agent, tool, args, hints, taint).action, Action::Deny,
                            "agent={:?} tool={:?} args={} taint={:?}", agent, tool, args, taint
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_settled_decision_is_the_decision_whatever_the_unknowns(
        policies in policy_set_with(tool_pattern()),
        names in prop::collection::vec(
            (agent(), tool(), args(), hints(), taint(), any::<[bool; 3]>()), 1..16),
    ) {
        let set = PolicySet::compile(&policies).expect("generated policies are valid");
        let every_hints: Vec<ToolHints> = (0u8..16)
            .map(|bits| ToolHints {
                read_only: bits & 1 != 0,
                destructive: bits & 2 != 0,
                idempotent: bits & 4 != 0,
                open_world: bits & 8 != 0,
            })
            .collect();
        for (agent, tool, args, hints, taint, [args_known, hints_known, taint_known]) in &names {
            let arg_cases = if *args_known { vec![args.clone()] } else { samples().to_vec() };
            let hint_cases = if *hints_known { vec![*hints] } else { every_hints.clone() };
            let taint_cases = if *taint_known { vec![taint.clone()] } else { taint_cases() };
            let mut decided = Vec::new();
            for a in &arg_cases {
                for h in &hint_cases {
                    for t in &taint_cases {
                        let d = set.evaluate_in(agent, tool, a, h, t);
                        decided.push(if d.is_default() { Settled::NoRule } else { Settled::Rule(d.action) });
                    }
                }
            }
            let settled = set.settled(
                agent,
                tool,
                args_known.then_some(args),
                hints_known.then_some(hints),
                taint_known.then_some(taint.as_slice()),
            );
            if let Some(settled) = settled {
                prop_assert!(
                    decided.iter().all(|&d| d == settled),
                    "agent={:?} tool={:?} settled {:?}, decided {:?}", agent, tool, settled, decided
                );
            }
            // Nothing unknown: always settled, as evaluated.
            if *args_known && *hints_known && *taint_known {
                prop_assert_eq!(settled, Some(decided[0]));
            }
        }
    }

    #[test]
    fn without_conditions_always_denied_is_exactly_denied(
        policies in policy_set_with(tool_pattern()),
        names in prop::collection::vec((agent(), tool(), hints()), 1..16),
    ) {
        let policies: Vec<PolicyConfig> = policies
            .into_iter()
            .map(|mut p| {
                p.rules.iter_mut().for_each(|r| {
                    r.condition = None;
                    r.tainted.clear();
                });
                p
            })
            .collect();
        let set = PolicySet::compile(&policies).expect("generated policies are valid");
        for (agent, tool, hints) in &names {
            let decision = set.evaluate_with(agent, tool, &json!({}), hints);
            prop_assert_eq!(
                set.always_denies(agent, tool, hints),
                decision.action == Action::Deny,
                "agent={:?} tool={:?}", agent, tool
            );
            // Without conditions nothing depends on the arguments.
            let evaluated = if decision.is_default() {
                Settled::NoRule
            } else {
                Settled::Rule(decision.action)
            };
            prop_assert_eq!(set.settled(agent, tool, None, Some(hints), Some(&[])), Some(evaluated));
        }
    }
}

/// Arguments that make the generated conditions go either way.
fn samples() -> [Value; 9] {
    [
        json!({}),
        json!({"n": 0}),
        json!({"n": 1}),
        json!({"n": 2}),
        json!({"n": 3}),
        json!({"params": {"n": 1}, "m": 1}),
        json!({"params": {"n": 3}, "m": 3}),
        json!({"n": "2"}),
        json!({"n": null}),
    ]
}
