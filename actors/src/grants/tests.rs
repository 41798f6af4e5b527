use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Value, json};
use tempfile::TempDir;

use super::*;
use crate::approvals::{ApprovalSettings, Gate, Submit};
use crate::clock::ManualClock;

const HOUR: Duration = Duration::from_secs(3600);

fn new_grant(agent: &str, tools: &str, duration: Duration) -> NewGrant {
    NewGrant {
        agent: agent.into(),
        tools: tools.into(),
        duration: Some(duration),
        granted_by: "http:127.0.0.1:1234".into(),
        condition: None,
        max_calls: None,
        creator_agent: None,
        parent: None,
    }
}

fn condition(v: Value) -> ConditionConfig {
    serde_json::from_value(v).unwrap()
}

struct Fixture {
    dir: TempDir,
    clock: Clock,
    manual: Arc<ManualClock>,
    grants: Grants,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let (clock, manual) = Clock::manual();
        let grants = open(dir.path(), &clock);
        Fixture {
            dir,
            clock,
            manual,
            grants,
        }
    }

    async fn restart(&mut self) {
        self.grants.shutdown().await;
        self.grants = open(self.dir.path(), &self.clock);
    }

    async fn create(&self, g: NewGrant) -> Grant {
        self.grants.create(g).await.unwrap()
    }

    async fn ids(&self) -> Vec<String> {
        let list = self.grants.list().await.unwrap();
        list.into_iter().map(|g| g.id).collect()
    }
}

fn open(dir: &Path, clock: &Clock) -> Grants {
    let store = Store::open(dir).unwrap();
    Grants::start(Some(store), DEFAULT_MAX_DURATION, clock.clone(), 64).unwrap()
}

#[actix::test]
async fn a_created_grant_is_listed_in_creation_order() {
    let f = Fixture::new();
    let a = f.create(new_grant("bot", "fs.*", HOUR)).await;
    let b = f.create(new_grant("*", "net.get", 2 * HOUR)).await;
    assert_eq!(a.id.len(), 16);
    assert!(
        a.id.bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    assert_eq!(a.created_at, f.clock.wall());
    assert_eq!(a.expires_at, f.clock.wall() + HOUR);
    assert_eq!(a.granted_by, "http:127.0.0.1:1234");
    assert_eq!(a.calls, 0);
    assert_eq!(f.grants.list().await.unwrap(), [a.clone(), b.clone()]);
    assert_eq!(f.grants.active_count().await, 2);
}

#[actix::test]
async fn durations_must_be_positive_and_at_most_the_maximum() {
    let f = Fixture::new();
    let zero = f.grants.create(new_grant("bot", "*", Duration::ZERO)).await;
    assert_eq!(zero, Err(GrantError::InvalidDuration("must be > 0".into())));
    let long = f
        .grants
        .create(new_grant("bot", "*", 24 * HOUR + Duration::from_secs(1)))
        .await;
    let err = long.unwrap_err();
    assert_eq!(err.to_string(), "duration exceeds maximum (24h0m0s)");
    assert!(
        f.grants
            .create(new_grant("bot", "*", 24 * HOUR))
            .await
            .is_ok()
    );
    assert_eq!(f.grants.active_count().await, 1);
}

#[actix::test]
async fn a_grant_of_zero_calls_is_refused() {
    let f = Fixture::new();
    let mut g = new_grant("bot", "*", HOUR);
    g.max_calls = Some(0);
    let err = f.grants.create(g).await.unwrap_err();
    assert_eq!(err, GrantError::NoCalls);
    assert_eq!(
        err.to_string(),
        "max_calls must be at least 1 (leave it out for no limit)"
    );
    assert_eq!(f.grants.active_count().await, 0);
}

#[actix::test]
async fn a_lower_maximum_is_enforced() {
    let (clock, _) = Clock::manual();
    let grants = Grants::start(None, HOUR, clock, 8).unwrap();
    let err = grants
        .create(new_grant("bot", "*", 2 * HOUR))
        .await
        .unwrap_err();
    assert_eq!(err, GrantError::TooLong { max: HOUR });
    assert_eq!(err.to_string(), "duration exceeds maximum (1h0m0s)");
}

#[actix::test]
async fn revoke_takes_an_exact_id_or_a_unique_prefix_of_four_or_more() {
    let f = Fixture::new();
    let a = f.create(new_grant("bot", "*", HOUR)).await;
    let b = f.create(new_grant("bot", "*", HOUR)).await;
    assert_eq!(
        f.grants.revoke(&a.id[..3]).await,
        Err(GrantError::NotFound),
        "too short"
    );
    assert_eq!(f.grants.revoke("zzzzzz").await, Err(GrantError::NotFound));
    let unique = (4..=16)
        .map(|n| &b.id[..n])
        .find(|p| !a.id.starts_with(p))
        .unwrap();
    assert_eq!(f.grants.revoke(unique).await.unwrap().grant, b);
    assert_eq!(f.grants.revoke(&a.id).await.unwrap().grant, a);
    assert_eq!(
        f.grants.revoke(&a.id).await,
        Err(GrantError::NotFound),
        "already gone"
    );
    assert!(f.ids().await.is_empty());
}

/// A grant of `bot` for every tool, as it would be stored.
fn stored(id: &str, now: SystemTime) -> Grant {
    Grant {
        id: id.into(),
        agent: "bot".into(),
        tools: "*".into(),
        expires_at: now + HOUR,
        granted_by: "test".into(),
        created_at: now,
        condition: None,
        max_calls: None,
        calls: 0,
        parent: None,
    }
}

/// Writes grants straight into the store at `dir`, in this order.
async fn write_rows(dir: &Path, grants: &[&Grant]) {
    let store = Store::open(dir).unwrap();
    let change = Change {
        puts: (1..).zip(grants.iter().copied()).collect(),
        deletes: Vec::new(),
    };
    store
        .write_grants(&change)
        .unwrap()
        .durable()
        .await
        .unwrap();
}

#[actix::test]
async fn revoke_refuses_an_ambiguous_prefix() {
    // Random ids rarely share four digits, so the two grants are written to the store.
    let dir = tempfile::tempdir().unwrap();
    let (clock, _) = Clock::manual();
    let now = clock.wall();
    let (first, second) = (
        stored("abcd111111111111", now),
        stored("abcd222222222222", now),
    );
    write_rows(dir.path(), &[&first, &second]).await;
    let grants = open(dir.path(), &clock);
    assert_eq!(grants.revoke("abcd").await, Err(GrantError::Ambiguous));
    assert_eq!(grants.revoke("abc").await, Err(GrantError::NotFound));
    assert_eq!(grants.revoke("abcd2").await.unwrap().grant, second);
    assert_eq!(grants.revoke("abcd").await.unwrap().grant, first);
}

#[actix::test]
async fn use_grant_matches_agent_and_tool_globs_first_grant_first() {
    let f = Fixture::new();
    let fs = f.create(new_grant("bot-*", "fs.*", HOUR)).await;
    let any = f.create(new_grant("*", "*", HOUR)).await;
    let cases = [
        ("bot-1", "fs.read", Some(&fs)),
        ("bot-1", "net.get", Some(&any)),
        ("human", "fs.read", Some(&any)),
    ];
    for (agent, tool, expected) in cases {
        let used = f.grants.use_grant(agent, tool, &json!({})).await.unwrap();
        assert_eq!(
            used.map(|g| g.id),
            expected.map(|g| g.id.clone()),
            "{agent} {tool}"
        );
    }
    f.grants.revoke(&any.id).await.unwrap();
    assert_eq!(
        f.grants.use_grant("human", "fs.read", &json!({})).await,
        Ok(None)
    );
    let used = f
        .grants
        .use_grant("bot-2", "fs.write", &json!({}))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(used.calls, 2, "each use is counted");
}

#[actix::test]
async fn an_expired_grant_is_neither_listed_nor_used() {
    let f = Fixture::new();
    let short = f.create(new_grant("bot", "*", HOUR)).await;
    let long = f.create(new_grant("bot", "*", 2 * HOUR)).await;
    f.manual.advance(HOUR - Duration::from_secs(1));
    assert_eq!(short.remaining(f.clock.wall()), Duration::from_secs(1));
    let used = f.grants.use_grant("bot", "x", &json!({})).await.unwrap();
    assert_eq!(used.unwrap().id, short.id);
    f.manual.advance(Duration::from_secs(1));
    assert_eq!(short.remaining(f.clock.wall()), Duration::ZERO);
    assert_eq!(f.ids().await, std::slice::from_ref(&long.id));
    let used = f.grants.use_grant("bot", "x", &json!({})).await.unwrap();
    assert_eq!(used.unwrap().id, long.id);
    assert_eq!(f.grants.revoke(&short.id).await, Err(GrantError::NotFound));
    f.manual.advance(HOUR);
    assert_eq!(f.grants.use_grant("bot", "x", &json!({})).await, Ok(None));
    assert_eq!(f.grants.active_count().await, 0);
}

#[actix::test]
async fn a_condition_limits_the_grant_to_matching_arguments() {
    let f = Fixture::new();
    let g = f
        .create(NewGrant {
            condition: Some(condition(
                json!({"field": "params.amount", "operator": "<", "value": 100}),
            )),
            ..new_grant("bot", "pay", HOUR)
        })
        .await;
    let cases = [
        (json!({"amount": 50}), true),
        (json!({"amount": 500}), false),
        (json!({}), false),
    ];
    for (args, applies) in cases {
        let used = f.grants.use_grant("bot", "pay", &args).await.unwrap();
        assert_eq!(used.is_some(), applies, "{args}");
    }
    assert_eq!(f.grants.list().await.unwrap()[0].condition, g.condition);
}

#[actix::test]
async fn oversized_texts_and_conditions_are_refused() {
    let f = Fixture::new();
    let long = "a".repeat(MAX_TEXT + 1);
    let cases = [
        (
            new_grant(&long, "*", HOUR),
            "agent is limited to 1024 characters",
        ),
        (
            new_grant("bot", &long, HOUR),
            "tools is limited to 1024 characters",
        ),
        (
            NewGrant {
                granted_by: long.clone(),
                ..new_grant("bot", "*", HOUR)
            },
            "granted_by is limited to 1024 characters",
        ),
        (
            NewGrant {
                condition: Some(condition(json!({
                    "field": "path", "operator": "in", "value": vec!["x".repeat(100); 200],
                }))),
                ..new_grant("bot", "*", HOUR)
            },
            "condition is limited to 16384 bytes of JSON",
        ),
    ];
    for (g, message) in cases {
        let err = f.grants.create(g).await.unwrap_err();
        assert_eq!(err, GrantError::TooLarge(message.into()));
    }
    assert!(f.ids().await.is_empty());
    // At the bounds they are accepted.
    let at = "a".repeat(MAX_TEXT);
    f.create(new_grant(&at, &at, HOUR)).await;
}

#[actix::test]
async fn an_invalid_condition_is_refused() {
    let f = Fixture::new();
    let bad = NewGrant {
        condition: Some(condition(
            json!({"field": "x", "operator": "matches", "value": "("}),
        )),
        ..new_grant("bot", "*", HOUR)
    };
    let err = f.grants.create(bad).await.unwrap_err();
    assert!(matches!(err, GrantError::InvalidCondition(_)), "{err:?}");
    assert_eq!(f.grants.active_count().await, 0);
}

#[actix::test]
async fn max_calls_are_honoured_and_a_used_up_grant_goes_away() {
    let mut f = Fixture::new();
    let g = f
        .create(NewGrant {
            max_calls: Some(2),
            ..new_grant("bot", "*", HOUR)
        })
        .await;
    let first = f
        .grants
        .use_grant("bot", "t", &json!({}))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.calls, 1);
    f.restart().await;
    assert_eq!(
        f.grants.list().await.unwrap()[0].calls,
        1,
        "the count is durable"
    );
    let second = f
        .grants
        .use_grant("bot", "t", &json!({}))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((second.id.as_str(), second.calls), (g.id.as_str(), 2));
    assert_eq!(f.grants.use_grant("bot", "t", &json!({})).await, Ok(None));
    assert!(f.ids().await.is_empty());
    f.restart().await;
    assert!(f.ids().await.is_empty(), "removed from the store too");
}

#[actix::test]
async fn concurrent_uses_never_exceed_max_calls() {
    let f = Fixture::new();
    f.create(NewGrant {
        max_calls: Some(5),
        ..new_grant("bot", "*", HOUR)
    })
    .await;
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let grants = f.grants.clone();
            actix::spawn(async move { grants.use_grant("bot", "t", &json!({})).await })
        })
        .collect();
    let mut used = 0;
    for task in tasks {
        if task.await.unwrap().unwrap().is_some() {
            used += 1;
        }
    }
    assert_eq!(used, 5);
}

#[actix::test]
async fn grants_survive_a_restart_and_expired_ones_are_deleted_at_load() {
    let mut f = Fixture::new();
    let short = f.create(new_grant("bot", "a", HOUR)).await;
    let long = f.create(new_grant("bot", "b", 3 * HOUR)).await;
    let limited = f
        .create(NewGrant {
            max_calls: Some(3),
            condition: Some(condition(
                json!({"field": "n", "operator": "==", "value": 1}),
            )),
            ..new_grant("bot", "c", 3 * HOUR)
        })
        .await;
    f.grants
        .use_grant("bot", "c", &json!({"n": 1}))
        .await
        .unwrap()
        .unwrap();
    f.grants.shutdown().await;
    f.manual.advance(HOUR + Duration::from_secs(30 * 60));
    f.restart().await;
    let loaded = f.grants.list().await.unwrap();
    assert_eq!(loaded.len(), 2);
    assert_eq!(loaded[0], long);
    assert_eq!(loaded[1].id, limited.id);
    assert_eq!(loaded[1].calls, 1);
    assert_eq!(
        f.grants.use_grant("bot", "c", &json!({"n": 2})).await,
        Ok(None)
    );
    assert!(
        f.grants
            .use_grant("bot", "c", &json!({"n": 1}))
            .await
            .unwrap()
            .is_some()
    );
    // The expired row is gone from the store itself.
    f.grants.shutdown().await;
    let store = Store::open(f.dir.path()).unwrap();
    let rows: Vec<String> = store
        .load_grants()
        .unwrap()
        .into_iter()
        .map(|r| r.record.id)
        .collect();
    assert!(!rows.contains(&short.id));
    assert_eq!(rows, [long.id.clone(), limited.id.clone()]);
}

#[actix::test]
async fn an_agent_cannot_grant_itself_its_pending_call() {
    let (clock, _) = Clock::manual();
    let approvals = Approvals::start(None, ApprovalSettings::default(), clock.clone()).unwrap();
    let grants = Grants::start(None, DEFAULT_MAX_DURATION, clock, 8)
        .unwrap()
        .with_approvals(approvals.clone());
    let submit = Submit {
        agent: "bot".into(),
        tool: "fs.write".into(),
        params: json!({}),
        policy_rule: "review".into(),
        trace_id: String::new(),
        callback_url: None,
    };
    assert!(matches!(
        approvals.gate(submit).await.unwrap(),
        Gate::Pending { .. }
    ));
    let by = |creator: &str, agent: &str, tools: &str| NewGrant {
        creator_agent: Some(creator.into()),
        ..new_grant(agent, tools, HOUR)
    };
    let own = grants.create(by("bot", "bot", "fs.*")).await;
    assert_eq!(own, Err(GrantError::SelfGrant));
    let wildcard = grants.create(by("bot", "*", "*")).await;
    assert_eq!(wildcard, Err(GrantError::SelfGrant));
    assert!(
        grants.create(by("bot", "bot", "net.*")).await.is_ok(),
        "no pending net call"
    );
    assert!(
        grants.create(by("supervisor", "bot", "fs.*")).await.is_ok(),
        "another agent"
    );
    assert!(
        grants.create(new_grant("bot", "fs.*", HOUR)).await.is_ok(),
        "an operator"
    );
}

#[test]
fn the_view_has_flux7_keys_then_mesh7_extras() {
    let created = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut g = Grant {
        id: "0123456789abcdef".into(),
        agent: "bot".into(),
        tools: "fs.*".into(),
        expires_at: created + HOUR + Duration::from_millis(500),
        granted_by: "mcp:supervisor".into(),
        created_at: created,
        condition: None,
        max_calls: None,
        calls: 0,
        parent: None,
    };
    let view = g.view(created + Duration::from_secs(90));
    let keys: Vec<&String> = view.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "id",
            "agent",
            "tools",
            "expires_at",
            "remaining",
            "granted_by"
        ]
    );
    assert_eq!(view["expires_at"], "2023-11-14T23:13:20Z");
    assert_eq!(view["remaining"], "58m30s");
    g.condition = Some(condition(
        json!({"field": "n", "operator": ">", "value": 1}),
    ));
    g.max_calls = Some(3);
    g.calls = 1;
    let view = g.view(created);
    assert_eq!(
        view["condition"],
        json!({"field": "n", "operator": ">", "value": 1})
    );
    assert_eq!(view["max_calls"], 3);
    assert_eq!(view["calls"], 1);
}

async fn use_as(grants: &Grants, agent: &str) -> Option<Grant> {
    grants.use_grant(agent, "t", &json!({})).await.unwrap()
}

/// `holder` delegates `parent` to `agent`, for `tools`.
fn delegation(parent: &Grant, holder: &str, agent: &str, tools: &str) -> NewGrant {
    NewGrant {
        duration: None,
        creator_agent: Some(holder.into()),
        parent: Some(parent.id.clone()),
        ..new_grant(agent, tools, HOUR)
    }
}

#[actix::test]
async fn a_delegated_grant_applies_only_where_its_parent_does() {
    let f = Fixture::new();
    let lead = f
        .create(NewGrant {
            condition: Some(condition(
                json!({"field": "path", "operator": "starts_with", "value": "docs/"}),
            )),
            ..new_grant("lead-*", "fs.*", 2 * HOUR)
        })
        .await;
    let sub = f
        .create(delegation(&lead, "lead-1", "sub-7", "fs.write_*"))
        .await;
    assert_eq!(sub.parent.as_deref(), Some(lead.id.as_str()));
    assert_eq!(
        sub.expires_at, lead.expires_at,
        "by default as long as the parent has left"
    );
    assert_eq!(sub.view(f.clock.wall())["parent"], json!(lead.id));
    let same = f.create(delegation(&lead, "lead-2", "sub-2", "")).await;
    assert_eq!(same.tools, "fs.*", "the parent's tools by default");
    let used = |agent: &'static str, tool: &'static str, path: &'static str| {
        let grants = f.grants.clone();
        async move {
            grants
                .use_grant(agent, tool, &json!({ "path": path }))
                .await
                .unwrap()
                .map(|g| g.id)
        }
    };
    assert_eq!(
        used("sub-7", "fs.write_file", "docs/a").await,
        Some(sub.id.clone())
    );
    assert_eq!(
        used("sub-7", "fs.write_file", "src/a").await,
        None,
        "the parent's condition binds the child"
    );
    assert_eq!(
        used("sub-7", "fs.read_file", "docs/a").await,
        None,
        "the child's own tools"
    );
    assert_eq!(used("sub-8", "fs.write_file", "docs/a").await, None);
    assert_eq!(
        used("lead-1", "fs.read_file", "docs/a").await,
        Some(lead.id.clone()),
        "the holder keeps its own grant"
    );
    // A child whose tools are wider than its parent's still gets only the parent's.
    let wide = f.create(delegation(&lead, "lead-1", "sub-9", "*")).await;
    assert_eq!(
        used("sub-9", "net.get", "docs/a").await,
        None,
        "{} is bounded by fs.*",
        wide.id
    );
    assert_eq!(
        used("sub-9", "fs.read_file", "docs/a").await,
        Some(wide.id.clone())
    );
}

#[actix::test]
async fn delegation_is_refused_unless_it_narrows_the_parent() {
    let f = Fixture::new();
    let lead = f
        .create(NewGrant {
            max_calls: Some(5),
            ..new_grant("lead-*", "fs.*", HOUR)
        })
        .await;
    let refused = |g: NewGrant| {
        let grants = f.grants.clone();
        async move { grants.create(g).await.unwrap_err() }
    };
    assert_eq!(
        refused(delegation(&lead, "other", "sub", "fs.*")).await,
        GrantError::NotHolder {
            id: lead.id.clone(),
            agent: "other".into()
        }
    );
    assert_eq!(
        refused(delegation(&lead, "lead-1", "sub-*", "fs.*")).await,
        GrantError::DelegateToPattern("sub-*".into())
    );
    assert_eq!(
        refused(delegation(&lead, "lead-1", "", "fs.*")).await,
        GrantError::DelegateToPattern(String::new())
    );
    assert_eq!(
        refused(NewGrant {
            duration: Some(2 * HOUR),
            ..delegation(&lead, "lead-1", "sub", "fs.*")
        })
        .await,
        GrantError::OutlivesParent { remaining: HOUR }
    );
    assert_eq!(
        refused(NewGrant {
            max_calls: Some(6),
            ..delegation(&lead, "lead-1", "sub", "fs.*")
        })
        .await,
        GrantError::ExceedsParentCalls { remaining: 5 }
    );
    assert_eq!(
        refused(NewGrant {
            parent: Some("ffff".into()),
            ..delegation(&lead, "lead-1", "sub", "fs.*")
        })
        .await,
        GrantError::NotFound
    );
    assert_eq!(
        refused(NewGrant {
            parent: None,
            ..delegation(&lead, "lead-1", "sub", "fs.*")
        })
        .await,
        GrantError::InvalidDuration("required".into()),
        "only a delegation may leave the duration out"
    );
    // The chain is bounded; each link holds the one above it.
    let mut chain = lead.clone();
    let mut holder = "lead-1".to_owned();
    for depth in 2..=MAX_DEPTH {
        let next = format!("sub-{depth}");
        chain = f.create(delegation(&chain, &holder, &next, "fs.*")).await;
        holder = next;
    }
    assert_eq!(
        refused(delegation(&chain, &holder, "too-deep", "fs.*")).await,
        GrantError::TooDeep
    );
    // An operator (no creator agent) may delegate any grant; the prefix form works too.
    let by_operator = f
        .create(NewGrant {
            creator_agent: None,
            parent: Some(lead.id[..6].to_owned()),
            max_calls: Some(5),
            ..delegation(&lead, "", "helper", "fs.read_*")
        })
        .await;
    assert_eq!(by_operator.parent.as_deref(), Some(lead.id.as_str()));
}

#[actix::test]
async fn a_tree_shares_its_roots_calls_and_goes_with_it() {
    let mut f = Fixture::new();
    let lead = f
        .create(NewGrant {
            max_calls: Some(3),
            ..new_grant("lead", "*", HOUR)
        })
        .await;
    let sub = f.create(delegation(&lead, "lead", "sub", "*")).await;
    let subsub = f.create(delegation(&sub, "sub", "subsub", "*")).await;
    assert_eq!(
        use_as(&f.grants, "subsub").await.map(|g| (g.id, g.calls)),
        Some((subsub.id, 1))
    );
    f.restart().await;
    let counts: Vec<u64> = f
        .grants
        .list()
        .await
        .unwrap()
        .iter()
        .map(|g| g.calls)
        .collect();
    assert_eq!(counts, [1, 1, 1], "counted on the whole chain, durably");
    assert!(use_as(&f.grants, "sub").await.is_some());
    assert_eq!(use_as(&f.grants, "lead").await.map(|g| g.calls), Some(3));
    assert!(f.ids().await.is_empty(), "the root used up takes its tree");
    assert_eq!(use_as(&f.grants, "subsub").await, None);
    f.restart().await;
    assert!(f.ids().await.is_empty());

    // Revoking a grant revokes what was delegated from it, not its parent.
    let root = f.create(new_grant("lead", "*", HOUR)).await;
    let a = f.create(delegation(&root, "lead", "a", "*")).await;
    let b = f.create(delegation(&a, "a", "b", "*")).await;
    let c = f.create(delegation(&root, "lead", "c", "*")).await;
    let revoked = f.grants.revoke(&a.id).await.unwrap();
    assert_eq!((revoked.grant.id, revoked.descendants), (a.id, vec![b.id]));
    assert_eq!(f.ids().await, [root.id.clone(), c.id.clone()]);
    f.restart().await;
    assert_eq!(f.ids().await, [root.id.clone(), c.id]);
    // A child's own limit is used up alone; its parent stays.
    let limited = f
        .create(NewGrant {
            max_calls: Some(1),
            ..delegation(&root, "lead", "d", "*")
        })
        .await;
    assert_eq!(
        use_as(&f.grants, "d").await.map(|g| g.id),
        Some(limited.id.clone())
    );
    assert_eq!(use_as(&f.grants, "d").await, None);
    assert!(f.ids().await.contains(&root.id));
    // An expired parent takes its children, at load too.
    let short = f
        .create(NewGrant {
            duration: Some(Duration::from_secs(60)),
            ..new_grant("lead", "*", HOUR)
        })
        .await;
    let child = f.create(delegation(&short, "lead", "e", "*")).await;
    f.manual.advance(Duration::from_secs(61));
    f.restart().await;
    let ids = f.ids().await;
    assert!(
        !ids.contains(&short.id) && !ids.contains(&child.id),
        "{ids:?}"
    );
}

#[actix::test]
async fn a_stored_grant_whose_parent_is_gone_is_dropped_never_used_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (clock, _) = Clock::manual();
    let now = clock.wall();
    let orphan = Grant {
        agent: "sub".into(),
        parent: Some("4444555566667777".into()),
        ..stored("0000111122223333", now)
    };
    write_rows(dir.path(), &[&orphan]).await;
    let grants = open(dir.path(), &clock);
    assert_eq!(grants.use_grant("sub", "t", &json!({})).await, Ok(None));
    assert!(grants.list().await.unwrap().is_empty());
    grants.shutdown().await;
    let store = Store::open(dir.path()).unwrap();
    assert!(store.load_grants().unwrap().is_empty(), "deleted at load");
}
