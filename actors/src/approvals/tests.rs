use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::AsyncBufReadExt;

use super::*;
use crate::clock::ManualClock;
use crate::notify::tests::Hook;

const TIMEOUT: Duration = Duration::from_secs(300);

fn settings() -> ApprovalSettings {
    ApprovalSettings {
        timeout: TIMEOUT,
        retention: 100,
        notify_url: None,
        allow_private_targets: false,
        mailbox: 64,
        redact: None,
    }
}

fn submit(agent: &str, tool: &str, params: Value) -> Submit {
    Submit {
        agent: agent.into(),
        tool: tool.into(),
        params,
        policy_rule: "needs-review".into(),
        trace_id: "t1".into(),
        callback_url: None,
    }
}

fn decide(approve: bool, by: &str) -> Resolution {
    Resolution {
        approve,
        resolved_by: by.into(),
        reasoning: String::new(),
        confidence: 0.0,
        resolver_agent: None,
    }
}

/// A queue on a sled store in `dir`, with a manual clock.
struct Fixture {
    dir: TempDir,
    clock: Clock,
    manual: Arc<ManualClock>,
    settings: ApprovalSettings,
    approvals: Approvals,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture::with(settings())
    }

    fn with(settings: ApprovalSettings) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let (clock, manual) = Clock::manual();
        let approvals = open(dir.path(), &settings, &clock);
        Fixture {
            dir,
            clock,
            manual,
            settings,
            approvals,
        }
    }

    /// Stops the queue and starts a new one on the same store, as a process restart does.
    async fn restart(&mut self) {
        self.approvals.shutdown().await;
        self.approvals = open(self.dir.path(), &self.settings, &self.clock);
    }

    async fn pending(&self, agent: &str, tool: &str, params: Value) -> ApprovalRecord {
        match self
            .approvals
            .gate(submit(agent, tool, params))
            .await
            .unwrap()
        {
            Gate::Pending { record, created } => {
                assert!(created, "a new approval");
                record
            }
            other @ Gate::Approved(_) => panic!("expected a new pending approval, got {other:?}"),
        }
    }

    fn now(&self) -> SystemTime {
        self.clock.wall()
    }
}

/// Starts a waiter on another task and returns once the queue has registered it.
async fn spawn_wait(
    approvals: &Approvals,
    id: &str,
) -> tokio::task::JoinHandle<Result<ApprovalRecord, ApprovalError>> {
    let waiter = actix::spawn({
        let approvals = approvals.clone();
        let id = id.to_owned();
        async move { approvals.wait(&id).await }
    });
    // One yield lets the new task send its `Wait`; the round trip after it sees it handled.
    tokio::task::yield_now().await;
    approvals.get(id).await.unwrap();
    waiter
}

fn open(dir: &Path, settings: &ApprovalSettings, clock: &Clock) -> Approvals {
    let store = Store::open(dir).unwrap();
    Approvals::start(Some(store), settings.clone(), clock.clone()).unwrap()
}

// --- lifecycle -------------------------------------------------------------------------------

#[actix::test]
async fn a_new_approval_is_pending_with_a_hex_id_and_a_deadline() {
    let f = Fixture::new();
    let r = f.pending("bot", "fs.write", json!({"path": "/a"})).await;
    assert_eq!(r.id.len(), 16);
    assert!(
        r.id.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    assert_eq!(r.short_id(), &r.id[..8]);
    assert_eq!(r.status, ApprovalStatus::Pending);
    assert_eq!(r.agent_id, "bot");
    assert_eq!(r.policy_rule, "needs-review");
    assert_eq!(r.trace_id, "t1");
    assert_eq!(r.fingerprint, fingerprint(&json!({"path": "/a"})));
    assert_eq!(r.created_at, f.now());
    assert_eq!(r.expires_at, f.now() + TIMEOUT);
    assert_eq!(r.remaining(f.now()), TIMEOUT);
    assert_eq!(f.approvals.pending_count().await, 1);
}

#[actix::test]
async fn approving_releases_every_waiter_with_the_decision() {
    let f = Fixture::new();
    let r = f.pending("bot", "fs.write", json!({})).await;
    let first = spawn_wait(&f.approvals, &r.id).await;
    let second = spawn_wait(&f.approvals, &r.id).await;
    f.manual.advance(Duration::from_secs(5));
    let mut resolution = decide(true, "cli:ops");
    resolution.reasoning = "fine".into();
    resolution.confidence = 0.5;
    let resolved = f.approvals.resolve(&r.id, resolution).await.unwrap();
    assert_eq!(resolved.status, ApprovalStatus::Approved);
    assert_eq!(resolved.resolved_by, "cli:ops");
    assert_eq!(resolved.reasoning, "fine");
    assert_eq!(resolved.confidence, 0.5);
    assert_eq!(resolved.resolved_at, Some(f.now()));
    assert!(!resolved.consumed);
    assert_eq!(first.await.unwrap().unwrap(), resolved);
    assert_eq!(second.await.unwrap().unwrap(), resolved);
    assert_eq!(f.approvals.get(&r.id).await.unwrap(), resolved);
    assert_eq!(f.approvals.pending_count().await, 0);
    // Waiting on a resolved approval answers at once.
    assert_eq!(f.approvals.wait(&r.id).await.unwrap(), resolved);
}

#[actix::test]
async fn a_decision_is_final() {
    let f = Fixture::new();
    let r = f.pending("bot", "fs.write", json!({})).await;
    let denied = f
        .approvals
        .resolve(&r.id, decide(false, "http:1.2.3.4:5"))
        .await
        .unwrap();
    assert_eq!(denied.status, ApprovalStatus::Denied);
    for approve in [true, false] {
        let again = f.approvals.resolve(&r.id, decide(approve, "other")).await;
        assert_eq!(again, Err(ApprovalError::AlreadyResolved));
    }
    assert_eq!(f.approvals.get(&r.id).await.unwrap(), denied);
}

#[actix::test]
async fn a_pending_approval_times_out_on_read_and_releases_waiters() {
    let f = Fixture::new();
    let r = f.pending("bot", "fs.write", json!({})).await;
    let waiter = spawn_wait(&f.approvals, &r.id).await;
    f.manual.advance(TIMEOUT - Duration::from_secs(1));
    assert_eq!(
        f.approvals.get(&r.id).await.unwrap().status,
        ApprovalStatus::Pending
    );
    f.manual.advance(Duration::from_secs(1));
    let got = f.approvals.get(&r.id).await.unwrap();
    assert_eq!(got.status, ApprovalStatus::Timeout);
    assert_eq!(got.resolved_by, TIMEOUT_RESOLVER);
    assert_eq!(got.resolved_at, Some(r.expires_at));
    assert_eq!(got.remaining(f.now()), Duration::ZERO);
    assert_eq!(waiter.await.unwrap().unwrap(), got);
    let late = f.approvals.resolve(&r.id, decide(true, "ops")).await;
    assert_eq!(late, Err(ApprovalError::AlreadyResolved));
    assert_eq!(f.approvals.pending_count().await, 0);
}

#[actix::test]
async fn the_timer_times_out_an_approval_nobody_reads() {
    let quick = ApprovalSettings {
        timeout: Duration::from_millis(50),
        ..settings()
    };
    // The real clock: only the timer can expire the approval, since nothing reads it.
    let approvals = Approvals::start(None, quick, Clock::System).unwrap();
    let gate = approvals.gate(submit("bot", "t", json!({}))).await.unwrap();
    let Gate::Pending { record, .. } = gate else {
        panic!("{gate:?}")
    };
    let waited = tokio::time::timeout(Duration::from_secs(10), approvals.wait(&record.id))
        .await
        .expect("the timer fires within 10 s")
        .unwrap();
    assert_eq!(waited.status, ApprovalStatus::Timeout);
    assert_eq!(waited.resolved_by, TIMEOUT_RESOLVER);
}

#[test]
fn abandoned_waiters_are_forgotten() {
    let (clock, _) = Clock::manual();
    let mut book = Book::new(settings());
    let mut fx = Effects::default();
    let gate = book.enqueue(submit("bot", "t", json!({})), clock.wall(), &mut fx);
    let Ok(Gate::Pending { record, .. }) = gate else {
        panic!("{gate:?}")
    };
    for _ in 0..100 {
        drop(book.wait(&record.id).unwrap());
    }
    let _kept = book.wait(&record.id).unwrap();
    assert_eq!(book.entries[&record.id].waiters.len(), 1);
}

#[actix::test]
async fn unknown_ids_are_not_found() {
    let f = Fixture::new();
    f.pending("bot", "fs.write", json!({})).await;
    for id in ["", "zzzz", "0123456789abcdef0"] {
        assert_eq!(
            f.approvals.get(id).await,
            Err(ApprovalError::NotFound),
            "{id:?}"
        );
        assert_eq!(
            f.approvals.wait(id).await,
            Err(ApprovalError::NotFound),
            "{id:?}"
        );
        assert_eq!(
            f.approvals.consume(id).await,
            Err(ApprovalError::NotFound),
            "{id:?}"
        );
        let resolved = f.approvals.resolve(id, decide(true, "ops")).await;
        assert_eq!(resolved, Err(ApprovalError::NotFound), "{id:?}");
    }
}

#[actix::test]
async fn a_prefix_finds_an_approval_only_when_unique() {
    let f = Fixture::new();
    // 17 ids over 16 possible first digits: two of them must share one.
    let mut ids = Vec::new();
    for i in 0..17 {
        ids.push(f.pending("bot", "fs.write", json!({"i": i})).await.id);
    }
    let shared = ids
        .iter()
        .map(|id| &id[..1])
        .find(|c| ids.iter().filter(|id| id.starts_with(*c)).count() > 1)
        .unwrap()
        .to_owned();
    assert_eq!(f.approvals.get(&shared).await, Err(ApprovalError::NotFound));
    let resolved = f.approvals.resolve(&shared, decide(true, "ops")).await;
    assert_eq!(
        resolved,
        Err(ApprovalError::NotFound),
        "ambiguous: nothing resolved"
    );
    let target = &ids[3];
    let unique = (1..=16)
        .map(|n| &target[..n])
        .find(|p| ids.iter().filter(|id| id.starts_with(p)).count() == 1)
        .unwrap();
    assert_eq!(&f.approvals.get(unique).await.unwrap().id, target);
    let resolved = f
        .approvals
        .resolve(unique, decide(false, "ops"))
        .await
        .unwrap();
    assert_eq!(&resolved.id, target);
}

// --- gate semantics --------------------------------------------------------------------------

#[actix::test]
async fn the_same_call_joins_its_pending_approval() {
    let f = Fixture::new();
    let first = f
        .pending("bot", "fs.write", json!({"a": 1, "b": [1, 2]}))
        .await;
    let params: Value = serde_json::from_str(r#"{"b": [1, 2], "a": 1}"#).unwrap();
    match f
        .approvals
        .gate(submit("bot", "fs.write", params))
        .await
        .unwrap()
    {
        Gate::Pending { record, created } => {
            assert!(!created);
            assert_eq!(record, first);
        }
        other @ Gate::Approved(_) => panic!("{other:?}"),
    }
    assert_eq!(f.approvals.pending_count().await, 1);
}

#[actix::test]
async fn another_agent_tool_or_argument_needs_its_own_approval() {
    let f = Fixture::new();
    let base = f.pending("bot", "fs.write", json!({"a": 1})).await;
    let others = [
        f.pending("bot", "fs.write", json!({"a": 2})).await,
        f.pending("bot", "fs.read", json!({"a": 1})).await,
        f.pending("other", "fs.write", json!({"a": 1})).await,
    ];
    for other in &others {
        assert_ne!(other.id, base.id);
    }
    assert_eq!(f.approvals.pending_count().await, 4);
}

#[actix::test]
async fn an_approved_call_runs_once_then_needs_a_new_approval() {
    let f = Fixture::new();
    let call = || submit("bot", "fs.write", json!({"path": "/a"}));
    let r = f.pending("bot", "fs.write", json!({"path": "/a"})).await;
    f.approvals
        .resolve(&r.id, decide(true, "ops"))
        .await
        .unwrap();
    match f.approvals.gate(call()).await.unwrap() {
        Gate::Approved(record) => {
            assert_eq!(record.id, r.id);
            assert!(record.consumed);
        }
        other @ Gate::Pending { .. } => panic!("{other:?}"),
    }
    assert!(f.approvals.get(&r.id).await.unwrap().consumed);
    assert_eq!(f.approvals.consume(&r.id).await, Ok(false), "already used");
    match f.approvals.gate(call()).await.unwrap() {
        Gate::Pending { record, created } => {
            assert!(created);
            assert_ne!(record.id, r.id);
        }
        other @ Gate::Approved(_) => panic!("{other:?}"),
    }
}

#[actix::test]
async fn consume_uses_an_approved_approval_once() {
    let f = Fixture::new();
    let r = f.pending("bot", "fs.write", json!({})).await;
    assert_eq!(
        f.approvals.consume(&r.id).await,
        Ok(false),
        "pending is not consumable"
    );
    f.approvals
        .resolve(&r.id, decide(true, "ops"))
        .await
        .unwrap();
    assert_eq!(f.approvals.consume(&r.id).await, Ok(true));
    assert_eq!(f.approvals.consume(&r.id).await, Ok(false));
    // The retry of a consumed call is a new approval, not a second run.
    let retry = f
        .approvals
        .gate(submit("bot", "fs.write", json!({})))
        .await
        .unwrap();
    assert!(
        matches!(retry, Gate::Pending { created: true, .. }),
        "{retry:?}"
    );
}

#[actix::test]
async fn a_denied_or_timed_out_call_gets_a_new_approval() {
    let f = Fixture::new();
    let denied = f.pending("bot", "a", json!({})).await;
    f.approvals
        .resolve(&denied.id, decide(false, "ops"))
        .await
        .unwrap();
    let again = f.pending("bot", "a", json!({})).await;
    assert_ne!(again.id, denied.id);
    f.manual.advance(TIMEOUT);
    let after_timeout = f.pending("bot", "a", json!({})).await;
    assert_ne!(after_timeout.id, again.id);
    assert_eq!(
        f.approvals.get(&again.id).await.unwrap().status,
        ApprovalStatus::Timeout
    );
}

#[actix::test]
async fn list_is_most_recent_first_and_filters_by_status_and_tool_glob() {
    let f = Fixture::new();
    let a = f.pending("bot", "fs.read", json!({})).await;
    let b = f.pending("bot", "fs.write", json!({})).await;
    let c = f.pending("bot", "net.get", json!({})).await;
    f.approvals
        .resolve(&b.id, decide(false, "ops"))
        .await
        .unwrap();
    let ids = |v: Vec<ApprovalRecord>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let all = f.approvals.list(None, None).await.unwrap();
    assert_eq!(ids(all), [c.id.clone(), b.id.clone(), a.id.clone()]);
    let pending = f
        .approvals
        .list(Some(ApprovalStatus::Pending), None)
        .await
        .unwrap();
    assert_eq!(ids(pending), [c.id.clone(), a.id.clone()]);
    let fs = f.approvals.list(None, Some("fs.*".into())).await.unwrap();
    assert_eq!(ids(fs), [b.id.clone(), a.id.clone()]);
    let denied_fs = f
        .approvals
        .list(Some(ApprovalStatus::Denied), Some("fs.*".into()))
        .await
        .unwrap();
    assert_eq!(ids(denied_fs), std::slice::from_ref(&b.id));
}

// --- concurrency and identity ----------------------------------------------------------------

#[actix::test]
async fn concurrent_decisions_have_exactly_one_winner() {
    let f = Fixture::new();
    for i in 0..10 {
        let r = f.pending("bot", "fs.write", json!({"i": i})).await;
        let (yes, no) = tokio::join!(
            f.approvals.resolve(&r.id, decide(true, "alice")),
            f.approvals.resolve(&r.id, decide(false, "bob")),
        );
        let winner = match (yes, no) {
            (Ok(w), Err(ApprovalError::AlreadyResolved))
            | (Err(ApprovalError::AlreadyResolved), Ok(w)) => w,
            other => panic!("expected one winner, got {other:?}"),
        };
        assert_eq!(f.approvals.get(&r.id).await.unwrap(), winner);
    }
}

#[actix::test]
async fn an_agent_cannot_resolve_its_own_approval() {
    let f = Fixture::new();
    let r = f.pending("bot", "fs.write", json!({})).await;
    let mut own = decide(true, "mcp:bot");
    own.resolver_agent = Some("bot".into());
    assert_eq!(
        f.approvals.resolve(&r.id, own).await,
        Err(ApprovalError::SelfResolution)
    );
    assert_eq!(
        f.approvals.get(&r.id).await.unwrap().status,
        ApprovalStatus::Pending
    );
    let mut supervisor = decide(true, "mcp:supervisor");
    supervisor.resolver_agent = Some("supervisor".into());
    let resolved = f.approvals.resolve(&r.id, supervisor).await.unwrap();
    assert_eq!(resolved.resolved_by, "mcp:supervisor");
}

#[actix::test]
async fn a_stopped_queue_is_unavailable() {
    let f = Fixture::new();
    let r = f.pending("bot", "fs.write", json!({})).await;
    let waiter = spawn_wait(&f.approvals, &r.id).await;
    f.approvals.shutdown().await;
    assert!(matches!(
        waiter.await.unwrap(),
        Err(ApprovalError::Unavailable(_))
    ));
    let gate = f.approvals.gate(submit("bot", "x", json!({}))).await;
    assert!(
        matches!(gate, Err(ApprovalError::Unavailable(_))),
        "{gate:?}"
    );
    assert_eq!(f.approvals.pending_count().await, 0);
}

// --- retention -------------------------------------------------------------------------------

#[actix::test]
async fn retention_prunes_the_oldest_resolved_from_memory_and_store() {
    let mut f = Fixture::with(ApprovalSettings {
        retention: 2,
        ..settings()
    });
    let approved = f.pending("bot", "t", json!({"n": 0})).await;
    f.approvals
        .resolve(&approved.id, decide(true, "ops"))
        .await
        .unwrap();
    let mut denied = Vec::new();
    for n in 1..=3 {
        let r = f.pending("bot", "t", json!({"n": n})).await;
        f.approvals
            .resolve(&r.id, decide(false, "ops"))
            .await
            .unwrap();
        denied.push(r.id);
    }
    let waiting = f.pending("bot", "t", json!({"n": 9})).await;
    let ids = |v: Vec<ApprovalRecord>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
    // Denied ones go first; the approved-but-unused one is kept; pending never counts.
    let expected = [waiting.id.clone(), denied[2].clone(), approved.id.clone()];
    assert_eq!(ids(f.approvals.list(None, None).await.unwrap()), expected);
    assert_eq!(
        f.approvals.get(&denied[0]).await,
        Err(ApprovalError::NotFound)
    );
    f.restart().await;
    assert_eq!(ids(f.approvals.list(None, None).await.unwrap()), expected);
}

// --- persistence -----------------------------------------------------------------------------

#[actix::test]
async fn a_pending_approval_survives_a_restart_with_its_remaining_time() {
    let mut f = Fixture::new();
    let r = f.pending("bot", "fs.write", json!({"b": 2, "a": 1})).await;
    f.manual.advance(Duration::from_secs(100));
    f.restart().await;
    let loaded = f.approvals.get(&r.id).await.unwrap();
    assert_eq!(loaded, r);
    assert_eq!(loaded.remaining(f.now()), Duration::from_secs(200));
    // The same call still joins it after the restart.
    match f
        .approvals
        .gate(submit("bot", "fs.write", json!({"a": 1, "b": 2})))
        .await
        .unwrap()
    {
        Gate::Pending { record, created } => {
            assert!(!created);
            assert_eq!(record.id, r.id);
        }
        other @ Gate::Approved(_) => panic!("{other:?}"),
    }
    f.manual.advance(Duration::from_secs(200));
    assert_eq!(
        f.approvals.get(&r.id).await.unwrap().status,
        ApprovalStatus::Timeout
    );
}

#[actix::test]
async fn an_approval_that_expired_while_down_times_out_at_start() {
    let mut f = Fixture::new();
    let r = f.pending("bot", "fs.write", json!({})).await;
    f.approvals.shutdown().await;
    f.manual.advance(TIMEOUT + Duration::from_secs(60));
    f.restart().await;
    let loaded = f.approvals.get(&r.id).await.unwrap();
    assert_eq!(loaded.status, ApprovalStatus::Timeout);
    assert_eq!(loaded.resolved_by, TIMEOUT_RESOLVER);
    assert_eq!(loaded.resolved_at, Some(r.expires_at));
    assert_eq!(f.approvals.pending_count().await, 0);
    // The timeout itself was stored.
    f.restart().await;
    assert_eq!(f.approvals.get(&r.id).await.unwrap(), loaded);
}

#[actix::test]
async fn history_and_the_consumed_flag_survive_a_restart() {
    let mut f = Fixture::new();
    let used = f.pending("bot", "t", json!({"n": 1})).await;
    let unused = f.pending("bot", "t", json!({"n": 2})).await;
    let denied = f.pending("bot", "t", json!({"n": 3})).await;
    f.approvals
        .resolve(&used.id, decide(true, "ops"))
        .await
        .unwrap();
    f.approvals
        .resolve(&unused.id, decide(true, "ops"))
        .await
        .unwrap();
    f.approvals
        .resolve(&denied.id, decide(false, "ops"))
        .await
        .unwrap();
    assert!(matches!(
        f.approvals
            .gate(submit("bot", "t", json!({"n": 1})))
            .await
            .unwrap(),
        Gate::Approved(_)
    ));
    let before = f.approvals.list(None, None).await.unwrap();
    f.restart().await;
    assert_eq!(f.approvals.list(None, None).await.unwrap(), before);
    // The consumed approval stays used; the unused one still runs its call once.
    let retry_used = f
        .approvals
        .gate(submit("bot", "t", json!({"n": 1})))
        .await
        .unwrap();
    assert!(
        matches!(retry_used, Gate::Pending { created: true, .. }),
        "{retry_used:?}"
    );
    match f
        .approvals
        .gate(submit("bot", "t", json!({"n": 2})))
        .await
        .unwrap()
    {
        Gate::Approved(record) => assert_eq!(record.id, unused.id),
        other @ Gate::Pending { .. } => panic!("{other:?}"),
    }
    // New approvals keep sorting after the loaded ones.
    let newest = f.approvals.list(None, None).await.unwrap();
    assert_eq!(
        newest[0].id,
        match retry_used {
            Gate::Pending { record, .. } => record.id,
            Gate::Approved(_) => unreachable!(),
        }
    );
}

/// Environment variable that turns `sigkill_keeps_an_acknowledged_pending_approval` into the
/// child half of itself: it names the store directory.
const CHILD_STORE: &str = "MESH7_APPROVALS_SIGKILL_STORE";

/// Crash recovery. The test re-runs its own test binary (`current_exe()`, this test alone with
/// `--exact`) as a child process with `CHILD_STORE` set. The child opens the store, submits an
/// approval, prints its id once `gate` has returned (the write is acknowledged) and blocks. The
/// parent kills it with SIGKILL — no destructor, no final flush — then reopens the store and
/// finds the approval pending.
#[actix::test]
async fn sigkill_keeps_an_acknowledged_pending_approval() {
    if let Ok(dir) = std::env::var(CHILD_STORE) {
        let (clock, _) = Clock::manual();
        let approvals = open(Path::new(&dir), &settings(), &clock);
        let gate = approvals
            .gate(submit("bot", "fs.write", json!({"k": 1})))
            .await
            .unwrap();
        let Gate::Pending { record, .. } = gate else {
            panic!("{gate:?}")
        };
        println!("approval-id={}", record.id);
        std::future::pending::<()>().await;
    }

    let dir = tempfile::tempdir().unwrap();
    let test_name = concat!(
        module_path!(),
        "::sigkill_keeps_an_acknowledged_pending_approval"
    );
    let test_name = test_name.split_once("::").unwrap().1;
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_STORE, dir.path())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let id = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            // The harness prints the test name on the same line, before the child's output.
            if let Some((_, id)) = line.split_once("approval-id=") {
                return id.trim().to_owned();
            }
        }
        panic!("the child exited without submitting");
    })
    .await
    .expect("the child submits within 60 s");
    // `start_kill` sends SIGKILL on Unix.
    child.start_kill().unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.signal(), Some(9), "killed by SIGKILL");

    let (clock, _) = Clock::manual();
    let approvals = open(dir.path(), &settings(), &clock);
    let record = approvals.get(&id).await.unwrap();
    assert_eq!(record.status, ApprovalStatus::Pending);
    assert_eq!(record.params, json!({"k": 1}));
}

// --- webhooks --------------------------------------------------------------------------------

#[actix::test]
async fn a_new_pending_approval_is_announced_to_notify_url() {
    let hook = Hook::bind().await;
    let f = Fixture::with(ApprovalSettings {
        notify_url: Some(hook.url.clone()),
        allow_private_targets: true,
        ..settings()
    });
    let r = f.pending("bot", "fs.write", json!({"path": "/a"})).await;
    let (_, body) = hook.next().await;
    assert_eq!(
        body,
        json!({
            "event": "pending",
            "id": r.id,
            "agent_id": "bot",
            "tool": "fs.write",
            "params": {"path": "/a"},
            "policy_rule": "needs-review",
            "timestamp": format_timestamp(r.created_at),
        })
    );
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "event",
            "id",
            "agent_id",
            "tool",
            "params",
            "policy_rule",
            "timestamp"
        ]
    );
}

#[actix::test]
async fn the_callback_hears_the_decision_and_the_timeout() {
    let hook = Hook::bind().await;
    let f = Fixture::with(ApprovalSettings {
        allow_private_targets: true,
        ..settings()
    });
    let with_callback = |n: i32| Submit {
        callback_url: Some(hook.url.clone()),
        ..submit("bot", "fs.write", json!({"n": n}))
    };
    let Gate::Pending {
        record: approved, ..
    } = f.approvals.gate(with_callback(1)).await.unwrap()
    else {
        panic!()
    };
    assert_eq!(approved.callback_url, hook.url);
    f.manual.advance(Duration::from_secs(2));
    f.approvals
        .resolve(&approved.id, decide(true, "cli:ops"))
        .await
        .unwrap();
    let (_, body) = hook.next().await;
    assert_eq!(body["event"], "approved");
    assert_eq!(body["id"], approved.id.as_str());
    assert_eq!(body["resolved_by"], "cli:ops");
    assert_eq!(body["timestamp"], format_timestamp(f.now()));

    let Gate::Pending {
        record: expiring, ..
    } = f.approvals.gate(with_callback(2)).await.unwrap()
    else {
        panic!()
    };
    f.manual.advance(TIMEOUT);
    assert_eq!(f.approvals.pending_count().await, 0);
    let (_, body) = hook.next().await;
    assert_eq!(body["event"], "timeout");
    assert_eq!(body["id"], expiring.id.as_str());
    assert_eq!(body["resolved_by"], TIMEOUT_RESOLVER);
}
