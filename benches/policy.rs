//! Policy evaluation benchmark: the time of one decision at 10, 1 000 and 10 000 rules.
//!
//! The generated sets mix what real configs hold: policies of ten rules for exact agent ids,
//! team globs (`team-3-*`), suffix globs (`*-bot-2`) and a few catch-all `*` policies; rules on
//! exact tool names (unconditional) and on `server.*`, `*.read_*`, `*.write_file`,
//! `gmail-*.send_email` and `*.delete_*` globs (most with conditions: comparisons, string tests,
//! a regex, `any`, `not`).
//! Scenarios (figures go to docs/benchmarks.md, "Policy evaluation"):
//! - `hit_near_end`: the matching rule is the second last in evaluation order;
//! - `miss_unknown_tool`: no pattern fits the tool, default deny;
//! - `miss_after_conditions`: several rules fit the tool but every condition fails, default deny.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use mesh7_config::{
    Action, ConditionConfig, Operator, PolicyConfig, PolicySet, RateLimitConfig, RuleConfig,
};
use serde_json::{Value, json};

const RULES_PER_POLICY: usize = 10;

fn agent_pattern(i: usize, last: usize) -> String {
    if i == last || i % 50 == 49 {
        return "*".to_owned();
    }
    match i % 8 {
        1 | 5 => format!("team-{}-*", (i / 8) % 16),
        6 => format!("*-bot-{}", (i / 8) % 8),
        3 | 7 => format!("ops-{i}"),
        _ => format!("agent-{i}"),
    }
}

fn leaf(field: &str, operator: Operator, value: Value) -> ConditionConfig {
    ConditionConfig {
        field: Some(field.to_owned()),
        operator: Some(operator),
        value: Some(value),
        ..ConditionConfig::default()
    }
}

/// Rule `r` of policy `i`: ten kinds, in an order where specific rules precede broad ones.
fn rule(i: usize, r: usize) -> RuleConfig {
    let (tools, action, condition) = match r {
        0 => (
            vec![format!("server{i}.get"), format!("server{i}.get_v2")],
            Action::Allow,
            None,
        ),
        1 => (
            vec![format!("server{i}.*")],
            Action::HumanApproval,
            Some(leaf("params.amount", Operator::Gt, json!(1000))),
        ),
        2 => (
            vec!["*.read_*".to_owned()],
            Action::Allow,
            Some(if i.is_multiple_of(2) {
                leaf("path", Operator::StartsWith, json!("/srv/"))
            } else {
                leaf("path", Operator::Matches, json!("^/(srv|data)/"))
            }),
        ),
        3 => (vec![format!("server{i}.admin_3")], Action::Deny, None),
        4 => (
            vec!["*.write_file".to_owned()],
            Action::HumanApproval,
            Some(ConditionConfig {
                any: Some(vec![
                    leaf("env", Operator::Eq, json!("prod")),
                    leaf("size", Operator::Ge, json!(1_000_000)),
                ]),
                ..ConditionConfig::default()
            }),
        ),
        5 => (
            vec![format!("server{i}.list"), format!("server{i}.search")],
            Action::Allow,
            None,
        ),
        6 => (
            vec!["gmail-*.send_email".to_owned()],
            Action::HumanApproval,
            Some(ConditionConfig {
                not: Some(Box::new(leaf(
                    "to",
                    Operator::EndsWith,
                    json!("@corp.example"),
                ))),
                ..ConditionConfig::default()
            }),
        ),
        7 => (vec!["*.delete_*".to_owned()], Action::Deny, None),
        8 => (vec![format!("server{i}.admin_8")], Action::Deny, None),
        _ => (vec![format!("server{i}.status")], Action::Allow, None),
    };
    RuleConfig {
        tools,
        action,
        condition,
        annotations: Default::default(),
        tainted: Vec::new(),
    }
}

fn policies(rules: usize) -> Vec<PolicyConfig> {
    let count = rules / RULES_PER_POLICY;
    (0..count)
        .map(|i| PolicyConfig {
            name: format!("policy-{i}"),
            agent: agent_pattern(i, count - 1),
            rate_limit: i.is_multiple_of(3).then_some(RateLimitConfig {
                max_per_minute: 60,
                ..RateLimitConfig::default()
            }),
            rules: (0..RULES_PER_POLICY).map(|r| rule(i, r)).collect(),
            ..PolicyConfig::default()
        })
        .collect()
}

fn evaluation(c: &mut Criterion) {
    let mut group = c.benchmark_group("policy_evaluate");
    for rules in [10, 1_000, 10_000] {
        let set = PolicySet::compile(&policies(rules)).expect("generated policies compile");
        assert_eq!(set.rule_count(), rules);
        let last = rules / RULES_PER_POLICY - 1;
        let agent = "team-3-bot-1";
        let args = json!({"amount": 10, "path": "/etc/app.conf", "env": "dev", "size": 12});

        let hit = format!("server{last}.admin_8");
        let decision = set.evaluate(agent, &hit, &args);
        assert_eq!(decision.action, Action::Deny);
        assert_eq!(decision.rule(), format!("policy-{last}"));
        group.bench_with_input(BenchmarkId::new("hit_near_end", rules), &hit, |b, tool| {
            b.iter(|| {
                set.evaluate(black_box(agent), black_box(tool), black_box(&args))
                    .action
            });
        });

        let unknown = "crm.update_contact";
        assert!(set.evaluate(agent, unknown, &args).is_default());
        group.bench_with_input(
            BenchmarkId::new("miss_unknown_tool", rules),
            &unknown,
            |b, tool| {
                b.iter(|| {
                    set.evaluate(black_box(agent), black_box(tool), black_box(&args))
                        .action
                });
            },
        );

        let conditional = format!("server{last}.read_config");
        assert!(set.evaluate(agent, &conditional, &args).is_default());
        group.bench_with_input(
            BenchmarkId::new("miss_after_conditions", rules),
            &conditional,
            |b, tool| {
                b.iter(|| {
                    set.evaluate(black_box(agent), black_box(tool), black_box(&args))
                        .action
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, evaluation);
criterion_main!(benches);
