//! Policy evaluation: specificity order, first match wins, fall-through, fail closed, the
//! decision's accessors and reason text, and compile errors with their paths.

use mesh7_config::{Action, PolicyConfig, PolicyError, PolicySet, RateLimitConfig};
use serde_json::{Value, json};

fn policies(value: Value) -> Vec<PolicyConfig> {
    serde_json::from_value(value).expect("test policies have the schema's shape")
}

fn compile(value: Value) -> PolicySet {
    PolicySet::compile(&policies(value)).expect("test policies compile")
}

/// Checks `(agent, tool, args) -> (action, rule)` rows against one set.
fn check(set: &PolicySet, rows: &[(&str, &str, Value, Action, &str)]) {
    for (agent, tool, args, action, rule) in rows {
        let decision = set.evaluate(agent, tool, args);
        assert_eq!(
            (decision.action, decision.rule()),
            (*action, *rule),
            "agent={agent} tool={tool} args={args}"
        );
    }
}

#[test]
fn empty_set_denies_with_rule_default() {
    for set in [PolicySet::empty(), compile(json!([]))] {
        let decision = set.evaluate("any-agent", "any.tool", &json!({}));
        assert_eq!(decision.action, Action::Deny);
        assert_eq!(decision.rule(), "default");
        assert!(decision.is_default());
        assert!(decision.policy().is_none());
        assert_eq!(decision.rate_limit(), None);
        assert_eq!(
            decision.reason("any.tool"),
            "no matching policy \u{2014} fail closed"
        );
        assert_eq!(set.rule_count(), 0);
        assert!(set.policies().is_empty());
    }
}

#[test]
fn reason_names_policy_tool_and_action() {
    let set = compile(json!([
        {"name": "ops", "agent": "*", "rate_limit": {"max_per_minute": 5, "max_total": 0},
         "rules": [
            {"tools": ["db.drop"], "action": "human_approval"},
            {"tools": ["db.*"], "action": "allow"},
            {"tools": ["*"], "action": "deny"},
         ]},
    ]));
    let rows = [
        ("db.drop", Action::HumanApproval, "human_approval"),
        ("db.read", Action::Allow, "allow"),
        ("mail.send", Action::Deny, "deny"),
    ];
    for (tool, action, text) in rows {
        let decision = set.evaluate("bot", tool, &json!({}));
        assert_eq!(decision.action, action);
        assert!(!decision.is_default());
        assert_eq!(decision.rule(), "ops");
        assert_eq!(decision.policy().map(|p| p.name.as_str()), Some("ops"));
        assert_eq!(
            decision.rate_limit(),
            Some(RateLimitConfig {
                max_per_minute: 5,
                max_total: 0,
                max_per_session: 0
            })
        );
        assert_eq!(
            decision.reason(tool),
            format!("policy=ops tool={tool} action={text}")
        );
    }
}

#[test]
fn policies_are_sorted_by_agent_specificity_keeping_load_order_on_ties() {
    let set = compile(json!([
        {"name": "star-1", "agent": "*", "rules": []},
        {"name": "glob-1", "agent": "support-*", "rules": []},
        {"name": "exact-1", "agent": "support-bot", "rules": []},
        {"name": "star-2", "agent": "*", "rules": []},
        {"name": "class", "agent": "[ab]-bot", "rules": []},
        {"name": "glob-2", "agent": "?-bot", "rules": []},
        {"name": "exact-2", "agent": "billing", "rules": []},
    ]));
    let names: Vec<&str> = set.policies().iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "exact-1", "class", "exact-2", "glob-1", "glob-2", "star-1", "star-2"
        ]
    );
}

#[test]
fn most_specific_matching_policy_decides_first() {
    // Loaded least specific first: the sort, not the file order, decides.
    let set = compile(json!([
        {"name": "everyone", "agent": "*", "rules": [{"tools": ["*"], "action": "deny"}]},
        {"name": "support", "agent": "support-*", "rules": [{"tools": ["tickets.*"], "action": "human_approval"}]},
        {"name": "bot", "agent": "support-bot", "rules": [{"tools": ["tickets.read"], "action": "allow"}]},
    ]));
    check(
        &set,
        &[
            (
                "support-bot",
                "tickets.read",
                json!({}),
                Action::Allow,
                "bot",
            ),
            (
                "support-bot",
                "tickets.close",
                json!({}),
                Action::HumanApproval,
                "support",
            ),
            (
                "support-other",
                "tickets.read",
                json!({}),
                Action::HumanApproval,
                "support",
            ),
            (
                "support-bot",
                "mail.send",
                json!({}),
                Action::Deny,
                "everyone",
            ),
            ("sales", "tickets.read", json!({}), Action::Deny, "everyone"),
        ],
    );
}

#[test]
fn ties_keep_load_order() {
    let set = compile(json!([
        {"name": "first", "agent": "*", "rules": [{"tools": ["a.*"], "action": "allow"}]},
        {"name": "second", "agent": "*", "rules": [{"tools": ["a.*"], "action": "deny"}, {"tools": ["b.*"], "action": "deny"}]},
        {"name": "third", "agent": "team-*", "rules": [{"tools": ["c.x"], "action": "allow"}]},
        {"name": "fourth", "agent": "*-bot", "rules": [{"tools": ["c.x"], "action": "deny"}]},
    ]));
    check(
        &set,
        &[
            ("x", "a.x", json!({}), Action::Allow, "first"),
            ("x", "b.x", json!({}), Action::Deny, "second"),
            ("team-bot", "c.x", json!({}), Action::Allow, "third"),
            ("sales-bot", "c.x", json!({}), Action::Deny, "fourth"),
        ],
    );
}

#[test]
fn first_matching_rule_wins_within_a_policy() {
    let set = compile(json!([
        {"name": "p", "agent": "*", "rules": [
            {"tools": ["fs.write_*"], "action": "deny"},
            {"tools": ["fs.*"], "action": "allow"},
            {"tools": ["fs.write_file"], "action": "allow"},
        ]},
    ]));
    check(
        &set,
        &[
            ("a", "fs.write_file", json!({}), Action::Deny, "p"),
            ("a", "fs.read_file", json!({}), Action::Allow, "p"),
            ("a", "other", json!({}), Action::Deny, "default"),
        ],
    );
}

#[test]
fn no_matching_rule_falls_through_to_less_specific_policies() {
    let set = compile(json!([
        {"name": "exact", "agent": "bot", "rules": [{"tools": ["x.only"], "action": "allow"}]},
        {"name": "glob", "agent": "b*", "rules": [{"tools": ["y.*"], "action": "human_approval"}]},
        {"name": "star", "agent": "*", "rules": [{"tools": ["z.*"], "action": "allow"}]},
    ]));
    check(
        &set,
        &[
            ("bot", "x.only", json!({}), Action::Allow, "exact"),
            ("bot", "y.1", json!({}), Action::HumanApproval, "glob"),
            ("bot", "z.1", json!({}), Action::Allow, "star"),
            ("bot", "w.1", json!({}), Action::Deny, "default"),
            ("other", "x.only", json!({}), Action::Deny, "default"),
        ],
    );
}

#[test]
fn unmet_condition_skips_to_the_next_rule() {
    let set = compile(json!([
        {"name": "pay", "agent": "*", "rules": [
            {"tools": ["pay.send"], "action": "human_approval",
             "condition": {"field": "params.amount", "operator": ">", "value": 1000}},
            {"tools": ["pay.send"], "action": "allow",
             "condition": {"field": "amount", "operator": "<=", "value": 1000}},
        ]},
        {"name": "fallback", "agent": "*", "rules": [{"tools": ["pay.*"], "action": "deny"}]},
    ]));
    check(
        &set,
        &[
            (
                "a",
                "pay.send",
                json!({"amount": 5000}),
                Action::HumanApproval,
                "pay",
            ),
            ("a", "pay.send", json!({"amount": 10}), Action::Allow, "pay"),
            (
                "a",
                "pay.send",
                json!({"amount": "20"}),
                Action::Allow,
                "pay",
            ),
            ("a", "pay.send", json!({}), Action::Deny, "fallback"),
            (
                "a",
                "pay.send",
                json!({"amount": "lots"}),
                Action::Deny,
                "fallback",
            ),
        ],
    );
}

#[test]
fn tool_patterns_match_literally_before_globbing() {
    let set = compile(json!([
        {"name": "odd", "agent": "*", "rules": [
            {"tools": ["weird["], "action": "allow"},
            {"tools": ["[ab]"], "action": "human_approval"},
        ]},
    ]));
    check(
        &set,
        &[
            ("a", "weird[", json!({}), Action::Allow, "odd"),
            ("a", "[ab]", json!({}), Action::HumanApproval, "odd"),
            ("a", "a", json!({}), Action::HumanApproval, "odd"),
            ("a", "weird", json!({}), Action::Deny, "default"),
        ],
    );
}

#[test]
fn agent_patterns_glob_without_the_literal_shortcut() {
    let set = compile(json!([
        {"name": "bad", "agent": "team[", "rules": [{"tools": ["*"], "action": "allow"}]},
        {"name": "slash", "agent": "team/*", "rules": [{"tools": ["*"], "action": "allow"}]},
        {"name": "star", "agent": "*", "rules": [{"tools": ["t.*"], "action": "human_approval"}]},
    ]));
    check(
        &set,
        &[
            ("team[", "t.x", json!({}), Action::HumanApproval, "star"),
            ("team/a", "u.x", json!({}), Action::Allow, "slash"),
            ("team/a/b", "u.x", json!({}), Action::Deny, "default"),
            (
                "org/team/x",
                "t.x",
                json!({}),
                Action::HumanApproval,
                "star",
            ),
            ("", "t.x", json!({}), Action::HumanApproval, "star"),
        ],
    );
}

#[test]
fn several_tool_patterns_in_one_rule_any_may_match() {
    let set = compile(json!([
        {"name": "p", "agent": "*", "rules": [
            {"tools": ["gh.read_*", "fs.read_file", "*.list"], "action": "allow"},
            {"tools": [], "action": "allow"},
        ]},
    ]));
    check(
        &set,
        &[
            ("a", "gh.read_pr", json!({}), Action::Allow, "p"),
            ("a", "fs.read_file", json!({}), Action::Allow, "p"),
            ("a", "db.list", json!({}), Action::Allow, "p"),
            ("a", "db.drop", json!({}), Action::Deny, "default"),
        ],
    );
    assert_eq!(set.rule_count(), 2);
}

#[test]
fn rule_count_and_policies_reflect_the_compiled_set() {
    let input = policies(json!([
        {"name": "a", "agent": "*", "rules": [{"tools": ["x"], "action": "allow"}]},
        {"name": "b", "agent": "bot", "rules": [
            {"tools": ["y"], "action": "deny"}, {"tools": ["z"], "action": "allow"}
        ]},
    ]));
    let set = PolicySet::compile(&input).expect("valid");
    assert_eq!(set.rule_count(), 3);
    assert_eq!(set.policies(), [input[1].clone(), input[0].clone()]);
}

#[test]
fn compile_reports_every_error_with_policy_index_and_path() {
    let errors = PolicySet::compile(&policies(json!([
        {"name": "ok", "agent": "*", "rules": [{"tools": ["x"], "action": "allow"}]},
        {"name": "bad", "agent": "*", "rules": [
            {"tools": ["x"], "action": "allow"},
            {"tools": ["y"], "action": "deny", "condition": {"all": [
                {"field": "a", "operator": "exists"},
                {"field": "b", "operator": "<", "value": "ten"},
            ]}},
            {"tools": ["z"], "action": "deny", "condition": {}},
            {"tools": ["w"], "action": "deny", "condition": {"field": "c", "operator": "matches", "value": "(["}},
        ]},
        {"name": "also-bad", "agent": "*", "rules": [
            {"tools": ["v"], "action": "deny", "condition": {"not": {"operator": "exists", "field": "d", "value": 1}}},
        ]},
    ])))
    .expect_err("invalid conditions");
    let found: Vec<(usize, &str)> = errors
        .iter()
        .map(|e| (e.policy_index, e.path.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (1, "rules[1].condition.all[1].value"),
            (1, "rules[2].condition"),
            (1, "rules[3].condition.value"),
            (2, "rules[0].condition.not.value"),
        ]
    );
    assert_eq!(
        errors[0],
        PolicyError {
            policy_index: 1,
            path: "rules[1].condition.all[1].value".to_owned(),
            message: "< needs a number value".to_owned(),
        }
    );
    assert!(errors[2].message.starts_with("invalid regular expression"));
    assert_eq!(errors[3].message, "exists takes no value");
    assert_eq!(
        errors[0].to_string(),
        "policies[1].rules[1].condition.all[1].value: < needs a number value"
    );
}

#[test]
fn policy_set_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PolicySet>();
    let set = std::sync::Arc::new(compile(json!([
        {"name": "p", "agent": "*", "rules": [
            {"tools": ["*"], "action": "allow", "condition": {"field": "q", "operator": "matches", "value": "^ok"}}
        ]},
    ])));
    let handles: Vec<_> = (0..2)
        .map(|i| {
            let set = std::sync::Arc::clone(&set);
            std::thread::spawn(move || {
                let args = if i == 0 {
                    json!({"q": "ok"})
                } else {
                    json!({"q": "no"})
                };
                set.evaluate("a", "t", &args).action
            })
        })
        .collect();
    let actions: Vec<Action> = handles
        .into_iter()
        .map(|h| h.join().expect("no panic"))
        .collect();
    assert_eq!(actions, [Action::Allow, Action::Deny]);
}

#[test]
fn a_tool_that_says_nothing_is_taken_at_its_worst_and_read_only_means_not_destructive() {
    use mesh7_config::ToolHints;
    let cautious = ToolHints::from_annotations(None);
    assert_eq!(cautious, ToolHints::CAUTIOUS);
    assert_eq!(ToolHints::default(), ToolHints::CAUTIOUS);
    assert!(!cautious.read_only && cautious.destructive && !cautious.idempotent);
    assert!(cautious.open_world);
    // Not an object, or hints that are not booleans: said nothing.
    for odd in [
        json!("readOnlyHint"),
        json!({"readOnlyHint": "yes", "openWorldHint": 0}),
    ] {
        assert_eq!(
            ToolHints::from_annotations(Some(&odd)),
            ToolHints::CAUTIOUS,
            "{odd}"
        );
    }
    let read_only = ToolHints::from_annotations(Some(&json!({"readOnlyHint": true})));
    assert!(read_only.read_only && !read_only.destructive && read_only.idempotent);
    // What a tool declares stands, even where it is odd.
    let declared = ToolHints::from_annotations(Some(&json!({
        "readOnlyHint": true, "destructiveHint": true, "openWorldHint": false, "title": "x"
    })));
    assert!(declared.read_only && declared.destructive && !declared.open_world);

    let set = compile(json!([{"name": "hints", "agent": "*", "rules": [
        {"tools": ["fs.*"], "annotations": {"readOnlyHint": true}, "action": "allow"},
        {"tools": ["fs.*"], "annotations": {"destructiveHint": false, "idempotentHint": true},
         "action": "allow"},
        {"tools": ["fs.*"], "action": "human_approval"},
    ]}]));
    assert!(set.uses_annotations());
    assert!(
        !compile(json!([{"name": "p", "agent": "*", "rules": [
        {"tools": ["*"], "action": "allow"}]}]))
        .uses_annotations()
    );
    let additive = ToolHints::from_annotations(Some(&json!({
        "destructiveHint": false, "idempotentHint": true
    })));
    for (hints, action) in [
        (read_only, Action::Allow),
        (additive, Action::Allow),
        (ToolHints::CAUTIOUS, Action::HumanApproval),
    ] {
        let decision = set.evaluate_with("a", "fs.read", &json!({}), &hints);
        assert_eq!(decision.action, action, "{hints:?}");
    }
    // `evaluate` is for a tool that says nothing.
    assert_eq!(
        set.evaluate("a", "fs.read", &json!({})).action,
        Action::HumanApproval
    );
}

#[test]
fn a_tainted_rule_matches_only_sessions_carrying_one_of_its_labels() {
    use std::sync::Arc;

    use mesh7_config::{TaintConfig, ToolHints};
    let taint: TaintConfig = serde_json::from_value(json!({"sources": [
        {"tools": ["fetch.*", "browser.open"], "label": "web"},
        {"tools": ["gmail.read*"], "label": "email"},
        {"tools": ["fetch.mail"], "label": "email"},
    ]}))
    .expect("taint section");
    let set = compile(json!([{"name": "exfil", "agent": "*", "rules": [
        {"tools": ["slack.post"], "tainted": ["web", "email"], "action": "deny"},
        {"tools": ["fs.write"], "tainted": ["email"], "action": "human_approval"},
        {"tools": ["*"], "action": "allow"},
    ]}]))
    .with_taint(&taint);
    assert!(set.uses_taint());
    assert!(
        !compile(json!([{"name": "p", "agent": "*", "rules": [
            {"tools": ["*"], "action": "allow"}]}]))
        .uses_taint()
    );

    let labels = |names: &[&str]| {
        names
            .iter()
            .map(|&n| Arc::from(n))
            .collect::<Vec<Arc<str>>>()
    };
    let decide = |tool: &str, session: &[&str]| {
        let d = set.evaluate_in(
            "a",
            tool,
            &json!({}),
            &ToolHints::CAUTIOUS,
            &labels(session),
        );
        (d.action, d.taint().map(str::to_owned), d.reason(tool))
    };
    // A clean session (and `evaluate`, which knows of no session) posts.
    assert_eq!(decide("slack.post", &[]).0, Action::Allow);
    assert_eq!(
        set.evaluate("a", "slack.post", &json!({})).action,
        Action::Allow
    );
    // Either label stops it; the reason names the label that did.
    let (action, label, reason) = decide("slack.post", &["web"]);
    assert_eq!((action, label.as_deref()), (Action::Deny, Some("web")));
    assert_eq!(reason, "policy=exfil tool=slack.post action=deny taint=web");
    assert_eq!(
        decide("slack.post", &["email", "web"]).1.as_deref(),
        Some("web")
    );
    // A label the rule does not name leaves it out.
    assert_eq!(decide("fs.write", &["web"]).0, Action::Allow);
    assert_eq!(decide("fs.write", &["email"]).0, Action::HumanApproval);

    // What each tool gives its session once it runs: by glob or exact name, each label once.
    let gives = |tool: &str| {
        set.taint_of(tool)
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(gives("fetch.get"), ["web"]);
    assert_eq!(gives("browser.open"), ["web"]);
    assert_eq!(gives("fetch.mail"), ["web", "email"]);
    assert_eq!(gives("gmail.read_thread"), ["email"]);
    assert!(gives("slack.post").is_empty());

    // A rule that tests the session may or may not match: never "always denied"; settled
    // only when the labels are known.
    assert!(!set.always_denies("a", "slack.post", &ToolHints::CAUTIOUS));
    assert_eq!(set.settled("a", "slack.post", None, None, None), None);
    assert_eq!(
        set.settled("a", "slack.post", None, None, Some(&labels(&["email"]))),
        Some(mesh7_config::Settled::Rule(Action::Deny))
    );
}
