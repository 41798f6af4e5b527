//! Tests of the rate limiter: the pure core with a hand-moved clock, then the actor through its
//! handle.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh7_config::{RateLimitConfig, RateLimiterConfig};
use proptest::prelude::*;
use serde_json::json;

use super::*;

const SEC: Duration = Duration::from_secs(1);

fn limits(max_per_minute: u64, max_total: u64) -> Option<RateLimitConfig> {
    Some(RateLimitConfig {
        max_per_minute,
        max_total,
        max_per_session: 0,
    })
}

/// A call of `agent` in `session` under a policy allowing `max` calls per session.
fn in_session(agent: &str, session: &str, max: u64) -> Acquire {
    Acquire {
        session: Some(Arc::from(session)),
        ..call(
            agent,
            "t",
            1,
            Some(RateLimitConfig {
                max_per_session: max,
                ..RateLimitConfig::default()
            }),
        )
    }
}

fn call(agent: &str, tool: &str, fp: u64, limits: Option<RateLimitConfig>) -> Acquire {
    Acquire {
        agent: Arc::from(agent),
        tool: Arc::from(tool),
        fingerprint: fp,
        limits,
        session: None,
        record: true,
    }
}

fn no_loops() -> LoopSettings {
    LoopSettings {
        enabled: false,
        ..LoopSettings::default()
    }
}

/// A limiter and a movable "now".
struct Fixture {
    core: Limiter,
    now: Instant,
}

impl Fixture {
    fn new(config: &RateLimiterConfig, loops: LoopSettings) -> Fixture {
        let now = Instant::now();
        Fixture {
            core: Limiter::new(config, loops, now),
            now,
        }
    }

    fn default_with(loops: LoopSettings) -> Fixture {
        Fixture::new(&RateLimiterConfig::default(), loops)
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    fn acquire(&mut self, req: &Acquire) -> Result<(), Limited> {
        self.core.acquire(req, self.now)
    }

    fn recent_entries(&self) -> usize {
        self.core.recent.iter().map(|(_, r)| r.entries()).sum()
    }
}

#[test]
fn per_minute_window_slides() {
    let mut f = Fixture::default_with(no_loops());
    let req = call("a", "t", 1, limits(2, 0));
    f.acquire(&req).unwrap();
    f.advance(30 * SEC);
    f.acquire(&req).unwrap();
    assert_eq!(
        f.acquire(&req),
        Err(Limited::PerMinute {
            agent: Arc::from("a"),
            max: 2
        })
    );
    // 59 s after the first call it still counts.
    f.advance(29 * SEC);
    assert!(f.acquire(&req).is_err());
    // 61 s after the first call it has left; the second (31 s old) still counts.
    f.advance(2 * SEC);
    f.acquire(&req).unwrap();
    assert!(f.acquire(&req).is_err());
}

#[test]
fn per_minute_is_shared_across_tools_of_an_agent() {
    let mut f = Fixture::default_with(no_loops());
    f.acquire(&call("a", "x", 1, limits(2, 0))).unwrap();
    f.acquire(&call("a", "y", 2, limits(2, 0))).unwrap();
    assert!(f.acquire(&call("a", "z", 3, limits(2, 0))).is_err());
}

#[test]
fn total_budget_never_resets_after_idleness() {
    let mut f = Fixture::default_with(no_loops());
    let req = call("a", "t", 1, limits(0, 2));
    f.acquire(&req).unwrap();
    f.acquire(&req).unwrap();
    f.advance(Duration::from_secs(30 * 24 * 3600));
    assert_eq!(
        f.acquire(&req),
        Err(Limited::TotalBudget {
            agent: Arc::from("a"),
            max_total: 2
        })
    );
}

#[test]
fn total_budget_survives_eviction_from_the_recent_windows() {
    let config = RateLimiterConfig {
        max_agents: 1,
        ..RateLimiterConfig::default()
    };
    let mut f = Fixture::new(&config, no_loops());
    let a = call("a", "t", 1, limits(0, 1));
    f.acquire(&a).unwrap();
    // "b" takes the only recent slot, evicting "a".
    f.acquire(&call("b", "t", 1, None)).unwrap();
    assert!(f.core.recent.peek("a").is_none());
    assert!(matches!(f.acquire(&a), Err(Limited::TotalBudget { .. })));
}

#[test]
fn calls_without_a_budget_still_count_once_tracked() {
    let mut f = Fixture::default_with(no_loops());
    f.acquire(&call("a", "t", 1, limits(0, 2))).unwrap();
    f.acquire(&call("a", "other", 2, None)).unwrap();
    assert!(matches!(
        f.acquire(&call("a", "t", 3, limits(0, 2))),
        Err(Limited::TotalBudget { .. })
    ));
}

#[test]
fn totals_are_only_tracked_for_budgeted_calls() {
    let mut f = Fixture::default_with(no_loops());
    for agent in ["a", "b", "c"] {
        f.acquire(&call(agent, "t", 1, limits(5, 0))).unwrap();
    }
    assert!(f.core.totals.is_empty());
}

#[test]
fn a_session_budget_counts_each_session_of_each_agent_apart() {
    let mut f = Fixture::default_with(no_loops());
    f.acquire(&in_session("a", "s1", 2)).unwrap();
    f.acquire(&in_session("a", "s1", 2)).unwrap();
    assert_eq!(
        f.acquire(&in_session("a", "s1", 2)),
        Err(Limited::SessionBudget {
            agent: Arc::from("a"),
            session: Arc::from("s1"),
            max: 2
        })
    );
    // Another session of the agent, and another agent's session of the same name, start afresh.
    f.acquire(&in_session("a", "s2", 2)).unwrap();
    f.acquire(&in_session("b", "s1", 2)).unwrap();
    // It never resets with time, and a check does not count.
    f.advance(Duration::from_secs(24 * 3600));
    let mut check = in_session("a", "s2", 2);
    check.record = false;
    f.acquire(&check).unwrap();
    f.acquire(&in_session("a", "s2", 2)).unwrap();
    assert!(f.acquire(&in_session("a", "s2", 2)).is_err());
    // A call without a session, or under a policy without the budget, is not counted.
    let mut unsessioned = in_session("a", "s1", 2);
    unsessioned.session = None;
    f.acquire(&unsessioned).unwrap();
    let mut unbudgeted = in_session("c", "s9", 0);
    for _ in 0..3 {
        f.acquire(&unbudgeted).unwrap();
    }
    unbudgeted.limits = in_session("c", "s9", 1).limits;
    f.acquire(&unbudgeted).unwrap();
}

#[test]
fn session_counts_are_bounded_and_the_least_recently_used_forgotten() {
    let config = RateLimiterConfig {
        max_agents: 2,
        ..RateLimiterConfig::default()
    };
    let mut f = Fixture::new(&config, no_loops());
    f.acquire(&in_session("a", "s1", 1)).unwrap();
    for session in ["s2", "s3", "s4"] {
        f.acquire(&in_session("a", session, 1)).unwrap();
        assert!(f.core.sessions.len() <= 2);
    }
    // The most recent session is still counted; the oldest was forgotten.
    assert!(f.acquire(&in_session("a", "s4", 1)).is_err());
    f.acquire(&in_session("a", "s1", 1)).unwrap();
}

#[test]
fn checks_run_in_flux7_order() {
    // Budget first, then the minute, then loops: each case is set up so that every later check
    // would also refuse.
    let mut f = Fixture::default_with(LoopSettings {
        max_repeats: 1,
        ..LoopSettings::default()
    });
    let req = call("a", "t", 1, limits(1, 1));
    f.acquire(&req).unwrap();
    assert!(matches!(f.acquire(&req), Err(Limited::TotalBudget { .. })));

    let req = call("b", "t", 1, limits(1, 0));
    f.acquire(&req).unwrap();
    assert!(matches!(f.acquire(&req), Err(Limited::PerMinute { .. })));
}

#[test]
fn fourth_identical_call_in_the_window_is_a_loop() {
    let mut f = Fixture::default_with(LoopSettings::default());
    let req = call("a", "fs.read", 7, None);
    for _ in 0..3 {
        f.acquire(&req).unwrap();
        f.advance(SEC);
    }
    let err = f.acquire(&req).unwrap_err();
    assert!(err.is_loop());
    assert_eq!(
        err.to_string(),
        "loop_detected: agent \"a\" called fs.read with same params 3 times in 10s"
    );
}

#[test]
fn halt_after_escalates_one_refusal_in_so_many_inside_the_window() {
    let escalations = |f: &mut Fixture, req: &Acquire, n: usize| -> Vec<bool> {
        (0..n)
            .map(|_| f.acquire(req).unwrap_err().escalates())
            .collect()
    };
    let mut f = Fixture::default_with(LoopSettings {
        halt_after: 2,
        ..LoopSettings::default()
    });
    let req = call("a", "fs.read", 7, None);
    for _ in 0..3 {
        f.acquire(&req).unwrap();
    }
    // The 2nd and 4th refusals escalate: once escalated, the count starts over.
    assert_eq!(escalations(&mut f, &req, 4), [false, true, false, true]);
    // Refusals older than the window are forgotten.
    assert_eq!(escalations(&mut f, &req, 1), [false]);
    f.advance(5 * SEC);
    f.acquire(&call("a", "other", 1, None)).unwrap();
    f.advance(5 * SEC);
    for _ in 0..3 {
        f.acquire(&req).unwrap();
    }
    assert_eq!(escalations(&mut f, &req, 2), [false, true]);
    // Another agent has its own count; without halt_after nothing escalates.
    let other = call("b", "fs.read", 7, None);
    for _ in 0..3 {
        f.acquire(&other).unwrap();
    }
    assert_eq!(escalations(&mut f, &other, 2), [false, true]);
    let mut f = Fixture::default_with(LoopSettings::default());
    for _ in 0..3 {
        f.acquire(&req).unwrap();
    }
    assert_eq!(escalations(&mut f, &req, 5), [false; 5]);
}

#[test]
fn loop_detection_lets_through_what_is_not_a_loop() {
    struct Case {
        name: &'static str,
        second: Acquire,
        advance: Duration,
    }
    let first = call("a", "fs.read", 7, None);
    let cases = [
        Case {
            name: "different params",
            second: call("a", "fs.read", 8, None),
            advance: Duration::ZERO,
        },
        Case {
            name: "different tool",
            second: call("a", "fs.write", 7, None),
            advance: Duration::ZERO,
        },
        Case {
            name: "different agent",
            second: call("b", "fs.read", 7, None),
            advance: Duration::ZERO,
        },
        Case {
            name: "after the window",
            second: first.clone(),
            advance: 10 * SEC,
        },
    ];
    for case in cases {
        let mut f = Fixture::default_with(LoopSettings::default());
        for _ in 0..3 {
            f.acquire(&first).unwrap();
        }
        f.advance(case.advance);
        assert_eq!(f.acquire(&case.second), Ok(()), "{}", case.name);
    }
}

#[test]
fn loop_detection_applies_without_a_rate_limit_and_can_be_disabled() {
    for (enabled, refused) in [(true, true), (false, false)] {
        let mut f = Fixture::default_with(LoopSettings {
            enabled,
            ..LoopSettings::default()
        });
        let req = call("a", "t", 1, None);
        for _ in 0..3 {
            f.acquire(&req).unwrap();
        }
        assert_eq!(f.acquire(&req).is_err(), refused, "enabled={enabled}");
    }
}

#[test]
fn fingerprint_ignores_key_order_at_every_depth() {
    let a = json!({"a": 1, "b": {"x": [1, {"p": true, "q": null}], "y": "s"}});
    let b = json!({"b": {"y": "s", "x": [1, {"q": null, "p": true}]}, "a": 1});
    assert_eq!(fingerprint(&a), fingerprint(&b));

    let mut f = Fixture::default_with(LoopSettings::default());
    for args in [&a, &b, &a] {
        f.acquire(&call("x", "t", fingerprint(args), None)).unwrap();
    }
    assert!(f.acquire(&call("x", "t", fingerprint(&b), None)).is_err());
}

#[test]
fn fingerprint_tells_different_arguments_apart() {
    let values = [
        json!({"a": 1}),
        json!({"a": 1.0}),
        json!({"a": -1}),
        json!({"a": 1.5}),
        json!({"a": "1"}),
        json!({"a": [1]}),
        json!({"a": 1, "b": 2}),
        json!({"ab": 1}),
        json!([["a"], []]),
        json!([[], ["a"]]),
        json!(null),
        json!({}),
    ];
    for (i, x) in values.iter().enumerate() {
        for y in &values[i + 1..] {
            assert_ne!(fingerprint(x), fingerprint(y), "{x} vs {y}");
        }
    }
}

#[test]
fn agents_are_isolated() {
    let mut f = Fixture::default_with(LoopSettings::default());
    let a = call("a", "t", 1, limits(1, 1));
    f.acquire(&a).unwrap();
    assert!(f.acquire(&a).is_err());
    f.acquire(&call("b", "t", 1, limits(1, 1))).unwrap();
}

#[test]
fn check_only_does_not_count() {
    let mut f = Fixture::default_with(LoopSettings::default());
    let check = Acquire {
        record: false,
        ..call("a", "t", 1, limits(1, 1))
    };
    for _ in 0..10 {
        f.acquire(&check).unwrap();
    }
    assert!(f.core.totals.is_empty());
    assert_eq!(f.recent_entries(), 0);
    f.acquire(&call("a", "t", 1, limits(1, 1))).unwrap();
    assert!(f.acquire(&check).is_err());
}

#[test]
fn refused_calls_are_not_recorded() {
    let mut f = Fixture::default_with(no_loops());
    let req = call("a", "t", 1, limits(1, 0));
    f.acquire(&req).unwrap();
    for _ in 0..5 {
        assert!(f.acquire(&req).is_err());
    }
    f.advance(61 * SEC);
    f.acquire(&req).unwrap();
}

#[test]
fn recent_windows_stay_within_the_agent_cap() {
    let config = RateLimiterConfig {
        max_agents: 3,
        ..RateLimiterConfig::default()
    };
    let mut f = Fixture::new(&config, LoopSettings::default());
    for i in 0..100 {
        f.acquire(&call(&format!("agent-{i}"), "t", 1, limits(10, 0)))
            .unwrap();
    }
    assert_eq!(f.core.recent.len(), 3);
    // The most recently seen survive.
    for i in 97..100 {
        assert!(f.core.recent.peek(format!("agent-{i}").as_str()).is_some());
    }
}

#[test]
fn one_agent_memory_is_bounded_whatever_its_rate() {
    let mut f = Fixture::default_with(LoopSettings::default());
    // 10 000 distinct calls, 100 per second, for 100 s, with no per-minute limit.
    for i in 0..10_000u64 {
        f.acquire(&call("a", "t", i, None)).unwrap();
        if i % 100 == 99 {
            f.advance(SEC);
        }
    }
    let minute_buckets = usize::try_from(MINUTE_SECS).unwrap() + 1;
    assert!(f.recent_entries() <= minute_buckets + LOOP_HISTORY);
}

#[test]
fn new_agents_beyond_the_totals_cap_are_refused() {
    let config = RateLimiterConfig {
        max_tracked_totals: 2,
        ..RateLimiterConfig::default()
    };
    let mut f = Fixture::new(&config, no_loops());
    f.acquire(&call("a", "t", 1, limits(0, 5))).unwrap();
    f.acquire(&call("b", "t", 1, limits(0, 5))).unwrap();
    let err = f.acquire(&call("c", "t", 1, limits(0, 5))).unwrap_err();
    assert_eq!(err, Limited::Capacity);
    assert_eq!(
        err.to_string(),
        "rate_limit: limiter is tracking too many agents (fail closed)"
    );
    // Tracked agents go on; calls with no budget need no entry.
    f.acquire(&call("a", "t", 2, limits(0, 5))).unwrap();
    f.acquire(&call("c", "t", 2, None)).unwrap();
    assert_eq!(f.core.totals.len(), 2);
}

#[test]
fn refusal_texts_are_flux7s() {
    let cases = [
        (
            Limited::TotalBudget {
                agent: Arc::from("bot"),
                max_total: 100,
            },
            "rate_limit: agent \"bot\" exceeded total budget (100 calls)",
        ),
        (
            Limited::PerMinute {
                agent: Arc::from("bot"),
                max: 10,
            },
            "rate_limit: agent \"bot\" exceeded 10 calls/min",
        ),
    ];
    for (limited, text) in cases {
        assert_eq!(limited.to_string(), text);
        assert!(!limited.is_loop());
        assert_eq!(RateLimitError::Limited(limited).to_string(), text);
    }
}

proptest! {
    #[test]
    fn no_sixty_second_window_exceeds_max_per_minute(
        max in 1u64..6,
        steps in proptest::collection::vec((0u64..40_000, 0usize..3), 1..200),
    ) {
        let mut f = Fixture::default_with(no_loops());
        let start = f.now;
        let mut recorded: Vec<Duration> = Vec::new();
        for (advance_ms, agent) in steps {
            f.advance(Duration::from_millis(advance_ms));
            let req = call(&format!("agent-{agent}"), "t", 1, limits(max, 0));
            if f.acquire(&req).is_ok() && agent == 0 {
                recorded.push(f.now - start);
            }
        }
        for (i, &t) in recorded.iter().enumerate() {
            let in_window = recorded[..=i]
                .iter()
                .filter(|&&earlier| t - earlier < Duration::from_secs(60))
                .count();
            prop_assert!(u64::try_from(in_window).unwrap() <= max);
        }
    }
}

#[actix::test]
async fn handle_limits_and_releases_with_the_clock() {
    let (clock, manual) = Clock::manual();
    let limiter = RateLimit::start(
        &RateLimiterConfig::default(),
        LoopSettings::default(),
        clock,
        16,
    );
    let req = |fp| call("agent", "tool", fp, limits(2, 0));
    limiter.acquire(req(1)).await.unwrap();
    limiter.acquire(req(2)).await.unwrap();
    let err = limiter.acquire(req(3)).await.unwrap_err();
    assert!(matches!(
        err,
        RateLimitError::Limited(Limited::PerMinute { max: 2, .. })
    ));
    manual.advance(61 * SEC);
    limiter.acquire(req(3)).await.unwrap();
}

#[actix::test]
async fn calls_made_together_are_counted_in_the_order_they_came() {
    let limiter = RateLimit::start(&RateLimiterConfig::default(), no_loops(), Clock::System, 16);
    // Fifty calls made before any answer: they reach the actor together, and exactly the first
    // twenty fit the lifetime budget, however they are grouped.
    let calls = (0..50).map(|i| limiter.acquire(call("agent", "tool", i, limits(0, 20))));
    let answers = futures_util::future::join_all(calls).await;
    for (i, answer) in answers.iter().enumerate() {
        if i < 20 {
            assert!(answer.is_ok(), "call {i}: {answer:?}");
        } else {
            assert!(
                matches!(
                    answer,
                    Err(RateLimitError::Limited(Limited::TotalBudget {
                        max_total: 20,
                        ..
                    }))
                ),
                "call {i}: {answer:?}"
            );
        }
    }
    // Calls from many tasks at once: the budget is never exceeded.
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                limiter
                    .acquire(call("other", "tool", i, limits(0, 7)))
                    .await
            })
        })
        .collect();
    let mut granted = 0;
    for task in tasks {
        if task.await.expect("task").is_ok() {
            granted += 1;
        }
    }
    assert_eq!(granted, 7);
}

/// Runs `acquire` for `agent` `n` times from a new arbiter thread and returns how many got
/// through.
fn calls_from_another_arbiter(limiter: &RateLimit, agent: &'static str, n: u64) -> usize {
    let arbiter = actix::Arbiter::new();
    let (tx, rx) = std::sync::mpsc::channel();
    let limiter = limiter.clone();
    assert!(arbiter.spawn(async move {
        let mut granted = 0;
        for i in 0..n {
            if limiter
                .acquire(call(agent, "tool", i, limits(0, 10)))
                .await
                .is_ok()
            {
                granted += 1;
            }
        }
        tx.send(granted).expect("send the count");
    }));
    let granted = rx.recv().expect("the arbiter answered");
    arbiter.stop();
    arbiter.join().expect("arbiter thread");
    granted
}

#[actix::test]
async fn every_arbiter_gets_its_own_actor_and_all_share_the_counters() {
    let limiter = RateLimit::start(&RateLimiterConfig::default(), no_loops(), Clock::System, 16);
    // A budget of 10 spent from three threads: 4 calls here, then 4 and 4 from two other
    // arbiters. Separate counters would let all 12 through.
    for i in 0..4 {
        limiter
            .acquire(call("agent", "tool", i, limits(0, 10)))
            .await
            .expect("within the budget");
    }
    assert_eq!(calls_from_another_arbiter(&limiter, "agent", 4), 4);
    assert_eq!(calls_from_another_arbiter(&limiter, "agent", 4), 2);
    assert!(matches!(
        limiter
            .acquire(call("agent", "tool", 99, limits(0, 10)))
            .await,
        Err(RateLimitError::Limited(Limited::TotalBudget { .. }))
    ));
    // The home actor here, and one actor on each of the other arbiters: no call crossed to
    // another thread's actor.
    assert_eq!(lock(&limiter.shared.actors).len(), 3);
}

#[actix::test]
async fn a_first_call_from_a_spawned_task_of_another_arbiter_starts_its_actor() {
    let limiter = RateLimit::start(&RateLimiterConfig::default(), no_loops(), Clock::System, 16);
    let arbiter = actix::Arbiter::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let remote = limiter.clone();
    // A `tokio::spawn`ed task runs outside the arbiter's own task set, where an actor cannot
    // be started directly.
    assert!(arbiter.spawn(async move {
        let answer =
            tokio::spawn(
                async move { remote.acquire(call("agent", "tool", 1, limits(0, 1))).await },
            )
            .await;
        let _ = tx.send(answer.map_err(|e| e.to_string()));
    }));
    let answer = rx.await.expect("the arbiter answered");
    assert!(matches!(answer, Ok(Ok(()))), "{answer:?}");
    assert_eq!(lock(&limiter.shared.actors).len(), 2, "an actor there");
    arbiter.stop();
    arbiter.join().expect("arbiter thread");
    // The budget of 1 was spent there, in the shared counters.
    assert!(matches!(
        limiter
            .acquire(call("agent", "tool", 2, limits(0, 1)))
            .await,
        Err(RateLimitError::Limited(Limited::TotalBudget { .. }))
    ));
}

#[actix::test]
async fn a_thread_without_an_arbiter_is_served_by_the_home_actor() {
    let limiter = RateLimit::start(&RateLimiterConfig::default(), no_loops(), Clock::System, 16);
    let remote = limiter.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let answers = runtime.block_on(async {
            let mut answers = Vec::new();
            for i in 0..3 {
                answers.push(remote.acquire(call("agent", "tool", i, limits(0, 2))).await);
            }
            answers
        });
        let _ = tx.send(answers);
    });
    // The home actor runs on this arbiter, so wait for the answers without blocking it.
    let answers = rx.await.expect("the thread answered");
    thread.join().expect("thread");
    assert!(answers[0].is_ok() && answers[1].is_ok(), "{answers:?}");
    assert!(
        matches!(
            answers[2],
            Err(RateLimitError::Limited(Limited::TotalBudget {
                max_total: 2,
                ..
            }))
        ),
        "{answers:?}"
    );
    assert_eq!(
        lock(&limiter.shared.actors).len(),
        1,
        "no actor was started there"
    );
}

#[actix::test]
async fn a_limiter_that_is_gone_refuses_every_waiting_call() {
    let arbiter = actix::Arbiter::new();
    let (tx, rx) = std::sync::mpsc::channel();
    assert!(arbiter.spawn_fn(move || {
        let limiter = RateLimit::start(
            &RateLimiterConfig::default(),
            LoopSettings::default(),
            Clock::System,
            16,
        );
        tx.send(limiter).expect("send the handle");
    }));
    let limiter = rx.recv().expect("the limiter started");
    limiter
        .acquire(call("agent", "tool", 1, None))
        .await
        .expect("answered while running");
    arbiter.stop();
    arbiter.join().expect("arbiter thread");
    let calls = (0..3).map(|i| limiter.acquire(call("agent", "tool", i, None)));
    for answer in futures_util::future::join_all(calls).await {
        assert!(
            matches!(answer, Err(RateLimitError::Unavailable(_))),
            "{answer:?}"
        );
    }
}

#[test]
fn mailbox_failure_is_unavailable() {
    let err = RateLimitError::from(MailboxError::Closed);
    assert!(matches!(err, RateLimitError::Unavailable(_)));
    assert!(err.to_string().starts_with("rate limiter unavailable: "));
}
