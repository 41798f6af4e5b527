//! The approval queue behind the `Approvals` handle: pending approvals, their decisions and
//! timeouts, durable in the store.
//!
//! Invariants:
//! - An approval is bound to its call: (agent, tool, canonical arguments). For each such key at
//!   most one approval is *open* — pending, or approved and not yet consumed — so a retry joins
//!   the pending approval instead of queueing a duplicate, and an approved call runs exactly once
//!   (whoever consumes it first: the blocked `/tool` request via `consume`, or a retry via
//!   `gate`). After that the key is free and the next identical call needs a new approval.
//! - States move `pending` → `approved` | `denied` | `timeout` and never back.
//! - Every state change happens synchronously inside a handler, so two concurrent decisions on
//!   one approval cannot both win; the caller is answered, and waiters woken, only once the
//!   change is durable. A decision (`resolve`) freezes the actor until then (`AtomicResponse`),
//!   so nobody observes an approval that a crash could still take back.
//! - Expiry is computed on every read, and one timer, armed for the nearest deadline, catches
//!   approvals nobody asks about. A pending approval keeps its deadline across restarts; one that
//!   expired while the process was down becomes `timeout` at start-up (`system:timeout`, no
//!   callback, as flux7).
//! - Memory and store are bounded: at most `MAX_PENDING` pending approvals, and `retention`
//!   resolved ones (the oldest pruned first; approved-but-unconsumed ones last).
//! - All time comes from the injected `Clock`.
//! - An optional [`ResolutionHook`] hears every resolution: a decision or a timeout once it is
//!   durable, and approvals found expired at start-up as they are loaded. It must not block (the
//!   mem7 write-back only queues).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix::prelude::{
    Actor, ActorContext, AsyncContext, AtomicResponse, Context, Handler, MailboxError, Message,
    Recipient, ResponseFuture, SpawnHandle, WrapFuture,
};
use mesh7_config::Glob;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{oneshot, watch};

use crate::clock::Clock;
use crate::notify::Notifier;
use crate::rate_limit::fingerprint;
use crate::store::{Change, Flush, Row, Store, StoreError};
use crate::trace::Redactor;
use crate::trace::format_timestamp;

/// flux7's default approval timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// Resolved approvals kept by default.
pub const DEFAULT_RETENTION: usize = 10_000;
/// Pending approvals at once; a new one beyond this is refused (the call fails closed).
pub const MAX_PENDING: usize = 10_000;
/// `resolved_by` of an approval that expired.
pub const TIMEOUT_RESOLVER: &str = "system:timeout";
/// The shortest timer delay, so a clock a little behind the timer cannot make it spin.
const MIN_TICK: Duration = Duration::from_millis(10);

// ---------------------------------------------------------------------------------------------
// Types

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalStatus {
    Pending,
    Approved,
    Denied,
    Timeout,
}

impl ApprovalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Denied => "denied",
            ApprovalStatus::Timeout => "timeout",
        }
    }
}

impl std::fmt::Display for ApprovalStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRecord {
    /// 16 lowercase hex digits.
    pub id: String,
    pub agent_id: String,
    pub tool: String,
    pub params: Value,
    /// `fingerprint(&params)`: the canonical arguments hash (recomputed when loaded).
    pub fingerprint: u64,
    pub policy_rule: String,
    pub trace_id: String,
    /// Where the decision is POSTed (`X-Callback-URL`); empty for none.
    pub callback_url: String,
    pub status: ApprovalStatus,
    pub created_at: SystemTime,
    pub expires_at: SystemTime,
    pub resolved_by: String,
    pub resolved_at: Option<SystemTime>,
    pub reasoning: String,
    pub confidence: f64,
    /// An approved approval runs its call once: set when a call consumed it.
    #[serde(default)]
    pub consumed: bool,
}

impl ApprovalRecord {
    /// The first 8 hex digits, as flux7 shows ids.
    pub fn short_id(&self) -> &str {
        self.id.get(..8).unwrap_or(&self.id)
    }

    /// Time left before the timeout while pending; zero once resolved or past the deadline.
    pub fn remaining(&self, now: SystemTime) -> Duration {
        if self.status != ApprovalStatus::Pending {
            return Duration::ZERO;
        }
        self.expires_at
            .duration_since(now)
            .unwrap_or(Duration::ZERO)
    }

    fn key(&self) -> CallKey {
        (self.agent_id.clone(), self.tool.clone(), self.fingerprint)
    }
}

/// A call that the policy sent to approval.
#[derive(Debug, Clone)]
pub struct Submit {
    pub agent: String,
    pub tool: String,
    pub params: Value,
    pub policy_rule: String,
    pub trace_id: String,
    /// `X-Callback-URL`: told of the decision.
    pub callback_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Gate {
    /// An approved, unconsumed approval for the same (agent, tool, canonical params): it is now
    /// consumed; run the call.
    Approved(ApprovalRecord),
    /// Waiting for a decision: newly created (notify_url fired) or an existing pending one for
    /// the same key (no duplicate).
    Pending {
        record: ApprovalRecord,
        created: bool,
    },
}

#[derive(Debug, Clone)]
pub struct Resolution {
    pub approve: bool,
    pub resolved_by: String,
    pub reasoning: String,
    pub confidence: f64,
    /// The resolving agent when it is an agent (MCP supervisor): refused if it is the requester.
    pub resolver_agent: Option<String>,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ApprovalError {
    #[error("approval not found")]
    NotFound,
    #[error("approval already resolved")]
    AlreadyResolved,
    #[error("an agent cannot resolve its own approval")]
    SelfResolution,
    #[error("approvals unavailable: {0}")]
    Unavailable(String),
    #[error("approval store failed: {0}")]
    Store(String),
}

impl From<MailboxError> for ApprovalError {
    fn from(e: MailboxError) -> Self {
        ApprovalError::Unavailable(e.to_string())
    }
}

impl From<StoreError> for ApprovalError {
    fn from(e: StoreError) -> Self {
        ApprovalError::Store(e.to_string())
    }
}

#[derive(Debug, Clone)]
pub struct ApprovalSettings {
    /// From creation to `timeout`; zero means the default, 300 s.
    pub timeout: Duration,
    /// Resolved approvals kept (memory and store).
    pub retention: usize,
    /// POSTed on each new pending approval.
    pub notify_url: Option<String>,
    /// Lets `notify_url` and callback targets be loopback or private addresses.
    pub allow_private_targets: bool,
    pub mailbox: usize,
    /// `trace.redact`: the secrets of the arguments webhooks carry are replaced.
    pub redact: Option<Arc<Redactor>>,
}

impl Default for ApprovalSettings {
    fn default() -> Self {
        ApprovalSettings {
            timeout: DEFAULT_TIMEOUT,
            retention: DEFAULT_RETENTION,
            notify_url: None,
            redact: None,
            allow_private_targets: false,
            mailbox: 1024,
        }
    }
}

/// Told of every resolved approval (approved, denied, timed out). Called on the actor's
/// thread, so it must only hand the record on (e.g. queue a write), never wait.
#[derive(Clone)]
pub struct ResolutionHook(Arc<dyn Fn(&ApprovalRecord) + Send + Sync>);

impl ResolutionHook {
    pub fn new(hook: impl Fn(&ApprovalRecord) + Send + Sync + 'static) -> Self {
        ResolutionHook(Arc::new(hook))
    }

    fn call(&self, record: &ApprovalRecord) {
        (self.0)(record);
    }
}

impl std::fmt::Debug for ResolutionHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResolutionHook")
    }
}

// ---------------------------------------------------------------------------------------------
// Messages

#[derive(Debug, Message)]
#[rtype(result = "Result<Gate, ApprovalError>")]
struct Enqueue(Submit);

#[derive(Debug, Message)]
#[rtype(result = "Result<Waited, ApprovalError>")]
struct Wait(String);

#[derive(Debug, Message)]
#[rtype(result = "Result<bool, ApprovalError>")]
struct Consume(String);

#[derive(Debug, Message)]
#[rtype(result = "Result<ApprovalRecord, ApprovalError>")]
struct Resolve(String, Resolution);

#[derive(Debug, Message)]
#[rtype(result = "Result<ApprovalRecord, ApprovalError>")]
struct Get(String);

#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<ApprovalRecord>, ApprovalError>")]
struct List {
    status: Option<ApprovalStatus>,
    tool_glob: Option<String>,
}

#[derive(Debug, Message)]
#[rtype(result = "usize")]
struct PendingCount;

#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Shutdown;

// ---------------------------------------------------------------------------------------------
// The handle

/// The approval queue. Cloning is cheap; the actor stops when the last clone is dropped or
/// `shutdown` is called.
#[derive(Clone)]
pub struct Approvals {
    enqueue: Recipient<Enqueue>,
    wait: Recipient<Wait>,
    consume: Recipient<Consume>,
    resolve: Recipient<Resolve>,
    get: Recipient<Get>,
    list: Recipient<List>,
    count: Recipient<PendingCount>,
    shutdown: Recipient<Shutdown>,
    /// Closed when the actor (and with it its store handle) is gone.
    alive: watch::Receiver<()>,
}

impl std::fmt::Debug for Approvals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Approvals").finish_non_exhaustive()
    }
}

impl Approvals {
    /// Loads pending approvals and history from the store (none: memory only) and starts the
    /// actor on the current arbiter; call it inside a running actix `System`. Approvals that
    /// expired while the process was down become `timeout`.
    pub fn start(
        store: Option<Store>,
        settings: ApprovalSettings,
        clock: Clock,
    ) -> Result<Approvals, ApprovalError> {
        Self::start_observed(store, settings, clock, None)
    }

    /// Like [`Approvals::start`], with a hook told of every resolution (see the module notes).
    pub fn start_observed(
        store: Option<Store>,
        settings: ApprovalSettings,
        clock: Clock,
        on_resolved: Option<ResolutionHook>,
    ) -> Result<Approvals, ApprovalError> {
        let now = clock.wall();
        let rows = match &store {
            Some(store) => store.load_approvals()?,
            None => Vec::new(),
        };
        let mut fx = Effects::default();
        let (mailbox, allow_private) = (settings.mailbox.max(1), settings.allow_private_targets);
        let book = Book::load(rows, settings, now, &mut fx);
        // The start-up changes (approvals that expired while down) are durable before anything
        // is answered, and no flush is left running behind a queue that is later stopped.
        if let Some(store) = &store {
            store.write_approvals(&fx.change())?.durable_now()?;
        }
        if let Some(hook) = &on_resolved {
            // Their write is queued with the store's; nobody waits on either.
            fx.resolved.iter().for_each(|r| hook.call(r));
        }
        let (alive_tx, alive) = watch::channel(());
        let actor = ApprovalsActor {
            book,
            store,
            notifier: Notifier::start(allow_private),
            clock,
            mailbox,
            timer: None,
            on_resolved,
            _alive: alive_tx,
        };
        let addr = actor.start();
        Ok(Approvals {
            enqueue: addr.clone().recipient(),
            wait: addr.clone().recipient(),
            consume: addr.clone().recipient(),
            resolve: addr.clone().recipient(),
            get: addr.clone().recipient(),
            list: addr.clone().recipient(),
            count: addr.clone().recipient(),
            shutdown: addr.recipient(),
            alive,
        })
    }

    /// The approval gate of a call that needs one; see [`Gate`].
    pub async fn gate(&self, req: Submit) -> Result<Gate, ApprovalError> {
        self.enqueue.send(Enqueue(req)).await?
    }

    /// Resolves when the approval leaves Pending (decision or timeout); returns the resolved
    /// record. Many waiters allowed.
    pub async fn wait(&self, id: &str) -> Result<ApprovalRecord, ApprovalError> {
        // The receiver lives in this future: a caller that gives up drops it, and the queue
        // forgets the waiter.
        match self.wait.send(Wait(id.to_owned())).await?? {
            Waited::Done(record) => Ok(*record),
            Waited::Later(rx) => rx.await.unwrap_or_else(|_| {
                Err(ApprovalError::Unavailable("approval queue stopped".into()))
            }),
        }
    }

    /// Marks an approved record consumed (the blocking /tool path runs the call itself after
    /// wait()); false if already consumed or not approved.
    pub async fn consume(&self, id: &str) -> Result<bool, ApprovalError> {
        self.consume.send(Consume(id.to_owned())).await?
    }

    /// Approves or denies a pending approval, by id or unique id prefix.
    pub async fn resolve(
        &self,
        id_or_prefix: &str,
        r: Resolution,
    ) -> Result<ApprovalRecord, ApprovalError> {
        self.resolve
            .send(Resolve(id_or_prefix.to_owned(), r))
            .await?
    }

    /// Exact id, else the unique id with that prefix (ambiguous → NotFound).
    pub async fn get(&self, id_or_prefix: &str) -> Result<ApprovalRecord, ApprovalError> {
        self.get.send(Get(id_or_prefix.to_owned())).await?
    }

    /// Most recent first, optionally filtered by status and by a tool glob.
    pub async fn list(
        &self,
        status: Option<ApprovalStatus>,
        tool_glob: Option<String>,
    ) -> Result<Vec<ApprovalRecord>, ApprovalError> {
        self.list.send(List { status, tool_glob }).await?
    }

    /// Pending approvals now; 0 when the queue cannot answer.
    pub async fn pending_count(&self) -> usize {
        self.count.send(PendingCount).await.unwrap_or(0)
    }

    /// Stops the queue and returns once the actor is gone with its store handle (the database
    /// closes when no other `Store` clone is left). Waiters are released with `Unavailable`.
    pub async fn shutdown(&self) {
        // Already stopped is as good as stopped.
        let _ = self.shutdown.send(Shutdown).await;
        // Nothing is ever sent on `alive`: this returns when the actor drops the sender.
        let _ = self.alive.clone().changed().await;
    }
}

// ---------------------------------------------------------------------------------------------
// The actor

struct ApprovalsActor {
    book: Book,
    store: Option<Store>,
    notifier: Notifier,
    clock: Clock,
    mailbox: usize,
    /// The armed timer and the deadline it is for.
    timer: Option<(SystemTime, SpawnHandle)>,
    on_resolved: Option<ResolutionHook>,
    _alive: watch::Sender<()>,
}

impl Actor for ApprovalsActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.mailbox);
        self.rearm(ctx);
    }
}

type Outcome<T> = Result<T, ApprovalError>;

impl ApprovalsActor {
    /// Expires what is due, then runs `op` on the book; the reply waits for durability.
    fn transact<T: 'static>(
        &mut self,
        ctx: &mut Context<Self>,
        op: impl FnOnce(&mut Book, SystemTime, &mut Effects) -> Outcome<T>,
    ) -> impl Future<Output = Outcome<T>> + 'static {
        let now = self.clock.wall();
        let mut fx = Effects::default();
        self.book.expire_due(now, &mut fx);
        let outcome = op(&mut self.book, now, &mut fx);
        let done = self.commit(fx, ctx);
        async move {
            done.await?;
            outcome
        }
    }

    /// Applies the effects to the store now, in order, and returns a future that waits for
    /// durability, then wakes waiters and sends webhooks. A failed write wakes waiters with the
    /// error, so no call runs on a decision that may not survive.
    fn commit(
        &mut self,
        fx: Effects,
        ctx: &mut Context<Self>,
    ) -> impl Future<Output = Outcome<()>> + 'static {
        self.rearm(ctx);
        let write = match &self.store {
            Some(store) => store.write_approvals(&fx.change()),
            None => Ok(Flush::none()),
        };
        let notifier = self.notifier.clone();
        let on_resolved = self.on_resolved.clone();
        async move {
            let durable = match write {
                Ok(flush) => flush.durable().await,
                Err(e) => Err(e),
            }
            .map_err(ApprovalError::from);
            for (waiters, record) in fx.wake {
                for waiter in waiters {
                    // A waiter that went away needs no answer.
                    let _ = waiter.send(durable.clone().map(|()| record.clone()));
                }
            }
            match &durable {
                Ok(()) => {
                    for (url, payload) in fx.posts {
                        notifier.post(&url, payload);
                    }
                    if let Some(hook) = on_resolved {
                        fx.resolved.iter().for_each(|r| hook.call(r));
                    }
                }
                Err(e) => tracing::error!(error = %e, "approval state not persisted"),
            }
            durable
        }
    }

    /// Runs a commit nobody waits for inside the actor's context, so it ends with the actor.
    fn background(
        &mut self,
        done: impl Future<Output = Outcome<()>> + 'static,
        ctx: &mut Context<Self>,
    ) {
        // `commit` has logged a failure already.
        ctx.spawn(async move { drop(done.await) }.into_actor(self));
    }

    /// Keeps one timer armed for the nearest pending deadline.
    fn rearm(&mut self, ctx: &mut Context<Self>) {
        let next = self.book.next_deadline();
        if self.timer.as_ref().map(|(at, _)| *at) == next {
            return;
        }
        if let Some((_, handle)) = self.timer.take() {
            ctx.cancel_future(handle);
        }
        let Some(deadline) = next else { return };
        let delay = deadline
            .duration_since(self.clock.wall())
            .unwrap_or(Duration::ZERO)
            .max(MIN_TICK);
        let handle = ctx.run_later(delay, |act, ctx| {
            act.timer = None;
            let mut fx = Effects::default();
            act.book.expire_due(act.clock.wall(), &mut fx);
            let done = act.commit(fx, ctx);
            act.background(done, ctx);
        });
        self.timer = Some((deadline, handle));
    }
}

impl Handler<Enqueue> for ApprovalsActor {
    type Result = ResponseFuture<Outcome<Gate>>;

    fn handle(&mut self, msg: Enqueue, ctx: &mut Context<Self>) -> Self::Result {
        Box::pin(self.transact(ctx, |book, now, fx| book.enqueue(msg.0, now, fx)))
    }
}

impl Handler<Wait> for ApprovalsActor {
    type Result = ResponseFuture<Outcome<Waited>>;

    fn handle(&mut self, msg: Wait, ctx: &mut Context<Self>) -> Self::Result {
        Box::pin(self.transact(ctx, |book, _, _| book.wait(&msg.0)))
    }
}

impl Handler<Consume> for ApprovalsActor {
    type Result = ResponseFuture<Outcome<bool>>;

    fn handle(&mut self, msg: Consume, ctx: &mut Context<Self>) -> Self::Result {
        Box::pin(self.transact(ctx, |book, _, fx| book.consume(&msg.0, fx)))
    }
}

impl Handler<Resolve> for ApprovalsActor {
    type Result = AtomicResponse<Self, Outcome<ApprovalRecord>>;

    fn handle(&mut self, msg: Resolve, ctx: &mut Context<Self>) -> Self::Result {
        let Resolve(id, resolution) = msg;
        let done = self.transact(ctx, |book, now, fx| book.resolve(&id, resolution, now, fx));
        AtomicResponse::new(Box::pin(done.into_actor(self)))
    }
}

impl Handler<Get> for ApprovalsActor {
    type Result = ResponseFuture<Outcome<ApprovalRecord>>;

    fn handle(&mut self, msg: Get, ctx: &mut Context<Self>) -> Self::Result {
        Box::pin(self.transact(ctx, |book, _, _| book.get(&msg.0).cloned()))
    }
}

impl Handler<List> for ApprovalsActor {
    type Result = ResponseFuture<Outcome<Vec<ApprovalRecord>>>;

    fn handle(&mut self, msg: List, ctx: &mut Context<Self>) -> Self::Result {
        let glob = msg.tool_glob.as_deref().map(Glob::new);
        Box::pin(self.transact(ctx, |book, _, _| Ok(book.list(msg.status, glob.as_ref()))))
    }
}

impl Handler<PendingCount> for ApprovalsActor {
    type Result = usize;

    fn handle(&mut self, _: PendingCount, ctx: &mut Context<Self>) -> usize {
        let done = self.transact(ctx, |_, _, _| Ok(()));
        self.background(done, ctx);
        self.book.pending_count()
    }
}

impl Handler<Shutdown> for ApprovalsActor {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        self.store = None;
        ctx.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// The pure core

/// (agent, tool, arguments fingerprint): what an approval is bound to.
type CallKey = (String, String, u64);
type Waiter = oneshot::Sender<Outcome<ApprovalRecord>>;

#[derive(Debug)]
enum Waited {
    Done(Box<ApprovalRecord>),
    Later(oneshot::Receiver<Outcome<ApprovalRecord>>),
}

/// What a state change asks of the actor once it is made.
#[derive(Default)]
struct Effects {
    /// Rows to write, in order.
    puts: Vec<(u64, ApprovalRecord)>,
    deletes: Vec<String>,
    /// Waiters to release with the resolved record.
    wake: Vec<(Vec<Waiter>, ApprovalRecord)>,
    /// Webhooks to send: (url, payload).
    posts: Vec<(String, Value)>,
    /// Approvals that left `pending`, for the resolution hook.
    resolved: Vec<ApprovalRecord>,
}

impl Effects {
    fn change(&self) -> Change<'_, ApprovalRecord> {
        Change {
            puts: self.puts.iter().map(|(seq, r)| (*seq, r)).collect(),
            deletes: self.deletes.iter().map(String::as_str).collect(),
        }
    }
}

struct Entry {
    seq: u64,
    record: ApprovalRecord,
    waiters: Vec<Waiter>,
}

/// Every approval in memory, with the indexes the queue needs.
struct Book {
    entries: HashMap<String, Entry>,
    /// Creation order: seq → id.
    order: BTreeMap<u64, String>,
    /// Pending approvals by deadline.
    deadlines: BTreeMap<(SystemTime, u64), String>,
    /// The open (pending, or approved and unconsumed) approval of each call.
    open: HashMap<CallKey, String>,
    /// Resolved approvals no call will use any more (denied, timed out, consumed): seq → id.
    finished: BTreeMap<u64, String>,
    /// Approved approvals not consumed yet: seq → id.
    unconsumed: BTreeMap<u64, String>,
    next_seq: u64,
    timeout: Duration,
    retention: usize,
    notify_url: Option<String>,
    redact: Option<Arc<Redactor>>,
}

impl Book {
    fn new(settings: ApprovalSettings) -> Book {
        Book {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            deadlines: BTreeMap::new(),
            open: HashMap::new(),
            finished: BTreeMap::new(),
            unconsumed: BTreeMap::new(),
            next_seq: 1,
            timeout: if settings.timeout.is_zero() {
                DEFAULT_TIMEOUT
            } else {
                settings.timeout
            },
            retention: settings.retention,
            notify_url: settings.notify_url.filter(|u| !u.is_empty()),
            redact: settings.redact,
        }
    }

    /// Rebuilds the book from stored rows (in creation order).
    fn load(
        rows: Vec<Row<ApprovalRecord>>,
        settings: ApprovalSettings,
        now: SystemTime,
        fx: &mut Effects,
    ) -> Book {
        let mut book = Book::new(settings);
        for Row { seq, mut record } in rows {
            if book.entries.contains_key(&record.id) {
                continue;
            }
            // The hash is only stable within one build, so it is never trusted from disk.
            record.fingerprint = fingerprint(&record.params);
            book.next_seq = book.next_seq.max(seq.saturating_add(1));
            book.insert(seq, record);
        }
        // No waiter and no callback for these: the process that knew them is gone.
        while let Some((&(deadline, seq), _)) = book.deadlines.first_key_value() {
            if deadline > now {
                break;
            }
            if let Some(record) = book.time_out(deadline, seq) {
                fx.resolved.push(record.clone());
                fx.puts.push((seq, record));
            }
        }
        book.prune(fx);
        book
    }

    /// Indexes a record by its state.
    fn insert(&mut self, seq: u64, record: ApprovalRecord) {
        let id = record.id.clone();
        match (record.status, record.consumed) {
            (ApprovalStatus::Pending, _) => {
                self.deadlines.insert((record.expires_at, seq), id.clone());
                self.open.insert(record.key(), id.clone());
            }
            (ApprovalStatus::Approved, false) => {
                self.unconsumed.insert(seq, id.clone());
                self.open.insert(record.key(), id.clone());
            }
            _ => {
                self.finished.insert(seq, id.clone());
            }
        }
        self.order.insert(seq, id.clone());
        self.entries.insert(
            id,
            Entry {
                seq,
                record,
                waiters: Vec::new(),
            },
        );
    }

    fn next_deadline(&self) -> Option<SystemTime> {
        self.deadlines.keys().next().map(|(at, _)| *at)
    }

    fn pending_count(&self) -> usize {
        self.deadlines.len()
    }

    /// Times out every pending approval whose deadline is `now` or earlier.
    fn expire_due(&mut self, now: SystemTime, fx: &mut Effects) {
        let mut expired = false;
        while let Some((&(deadline, seq), _)) = self.deadlines.first_key_value() {
            if deadline > now {
                break;
            }
            let Some(id) = self.deadlines.get(&(deadline, seq)).cloned() else {
                break;
            };
            let waiters = self
                .entries
                .get_mut(&id)
                .map(|e| std::mem::take(&mut e.waiters))
                .unwrap_or_default();
            if let Some(record) = self.time_out(deadline, seq) {
                if !record.callback_url.is_empty() {
                    let payload = event_payload(&record, self.redact.as_deref());
                    fx.posts.push((record.callback_url.clone(), payload));
                }
                fx.wake.push((waiters, record.clone()));
                fx.resolved.push(record.clone());
                fx.puts.push((seq, record));
                expired = true;
            }
        }
        if expired {
            self.prune(fx);
        }
    }

    /// Moves one pending approval to `timeout`, resolved at its deadline.
    fn time_out(&mut self, deadline: SystemTime, seq: u64) -> Option<ApprovalRecord> {
        let id = self.deadlines.remove(&(deadline, seq))?;
        let entry = self.entries.get_mut(&id)?;
        let record = &mut entry.record;
        record.status = ApprovalStatus::Timeout;
        record.resolved_by = TIMEOUT_RESOLVER.to_owned();
        record.resolved_at = Some(deadline);
        let record = record.clone();
        self.close(&record);
        self.finished.insert(seq, id);
        Some(record)
    }

    /// Frees the call key of an approval that no longer gates it.
    fn close(&mut self, record: &ApprovalRecord) {
        let key = record.key();
        if self.open.get(&key) == Some(&record.id) {
            self.open.remove(&key);
        }
    }

    fn enqueue(&mut self, req: Submit, now: SystemTime, fx: &mut Effects) -> Outcome<Gate> {
        let key: CallKey = (
            req.agent.clone(),
            req.tool.clone(),
            fingerprint(&req.params),
        );
        if let Some(id) = self.open.get(&key).cloned()
            && let Some(entry) = self.entries.get_mut(&id)
        {
            if entry.record.status == ApprovalStatus::Pending {
                return Ok(Gate::Pending {
                    record: entry.record.clone(),
                    created: false,
                });
            }
            // The open approval is approved and unconsumed: this call uses it up.
            entry.record.consumed = true;
            let (seq, record) = (entry.seq, entry.record.clone());
            self.open.remove(&key);
            self.unconsumed.remove(&seq);
            self.finished.insert(seq, id);
            fx.puts.push((seq, record.clone()));
            self.prune(fx);
            return Ok(Gate::Approved(record));
        }
        if self.deadlines.len() >= MAX_PENDING {
            return Err(ApprovalError::Unavailable(
                "too many pending approvals".into(),
            ));
        }
        let record = ApprovalRecord {
            id: self.new_id(),
            agent_id: req.agent,
            tool: req.tool,
            fingerprint: key.2,
            params: req.params,
            policy_rule: req.policy_rule,
            trace_id: req.trace_id,
            callback_url: req.callback_url.unwrap_or_default(),
            status: ApprovalStatus::Pending,
            created_at: now,
            expires_at: now + self.timeout,
            resolved_by: String::new(),
            resolved_at: None,
            reasoning: String::new(),
            confidence: 0.0,
            consumed: false,
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        self.insert(seq, record.clone());
        fx.puts.push((seq, record.clone()));
        if let Some(url) = &self.notify_url {
            fx.posts
                .push((url.clone(), event_payload(&record, self.redact.as_deref())));
        }
        Ok(Gate::Pending {
            record,
            created: true,
        })
    }

    fn resolve(
        &mut self,
        id_or_prefix: &str,
        r: Resolution,
        now: SystemTime,
        fx: &mut Effects,
    ) -> Outcome<ApprovalRecord> {
        let id = self.lookup(id_or_prefix)?.to_owned();
        let entry = self.entries.get_mut(&id).ok_or(ApprovalError::NotFound)?;
        if entry.record.status != ApprovalStatus::Pending {
            return Err(ApprovalError::AlreadyResolved);
        }
        if r.resolver_agent.as_deref() == Some(entry.record.agent_id.as_str()) {
            return Err(ApprovalError::SelfResolution);
        }
        let record = &mut entry.record;
        record.status = if r.approve {
            ApprovalStatus::Approved
        } else {
            ApprovalStatus::Denied
        };
        record.resolved_by = r.resolved_by;
        record.reasoning = r.reasoning;
        record.confidence = r.confidence;
        record.resolved_at = Some(now);
        let (seq, record) = (entry.seq, record.clone());
        let waiters = std::mem::take(&mut entry.waiters);
        self.deadlines.remove(&(record.expires_at, seq));
        if r.approve {
            // Stays open: the next identical call (or `consume`) uses it.
            self.unconsumed.insert(seq, id);
        } else {
            self.close(&record);
            self.finished.insert(seq, id);
        }
        if !record.callback_url.is_empty() {
            let payload = event_payload(&record, self.redact.as_deref());
            fx.posts.push((record.callback_url.clone(), payload));
        }
        fx.wake.push((waiters, record.clone()));
        fx.resolved.push(record.clone());
        fx.puts.push((seq, record.clone()));
        self.prune(fx);
        Ok(record)
    }

    fn consume(&mut self, id_or_prefix: &str, fx: &mut Effects) -> Outcome<bool> {
        let id = self.lookup(id_or_prefix)?.to_owned();
        let entry = self.entries.get_mut(&id).ok_or(ApprovalError::NotFound)?;
        if entry.record.status != ApprovalStatus::Approved || entry.record.consumed {
            return Ok(false);
        }
        entry.record.consumed = true;
        let (seq, record) = (entry.seq, entry.record.clone());
        self.close(&record);
        self.unconsumed.remove(&seq);
        self.finished.insert(seq, id);
        fx.puts.push((seq, record));
        self.prune(fx);
        Ok(true)
    }

    fn wait(&mut self, id_or_prefix: &str) -> Outcome<Waited> {
        let id = self.lookup(id_or_prefix)?.to_owned();
        let entry = self.entries.get_mut(&id).ok_or(ApprovalError::NotFound)?;
        if entry.record.status != ApprovalStatus::Pending {
            return Ok(Waited::Done(Box::new(entry.record.clone())));
        }
        let (tx, rx) = oneshot::channel();
        // Waiters whose caller went away are dropped here, so a polling client cannot grow
        // the list without bound.
        entry.waiters.retain(|w| !w.is_closed());
        entry.waiters.push(tx);
        Ok(Waited::Later(rx))
    }

    fn get(&self, id_or_prefix: &str) -> Outcome<&ApprovalRecord> {
        let id = self.lookup(id_or_prefix)?;
        self.entries
            .get(id)
            .map(|e| &e.record)
            .ok_or(ApprovalError::NotFound)
    }

    /// Exact id first, else the only id with that prefix.
    fn lookup<'a>(&'a self, id_or_prefix: &'a str) -> Outcome<&'a str> {
        if self.entries.contains_key(id_or_prefix) {
            return Ok(id_or_prefix);
        }
        if id_or_prefix.is_empty() {
            return Err(ApprovalError::NotFound);
        }
        let mut found = self
            .entries
            .keys()
            .filter(|id| id.starts_with(id_or_prefix));
        match (found.next(), found.next()) {
            (Some(id), None) => Ok(id),
            _ => Err(ApprovalError::NotFound),
        }
    }

    fn list(&self, status: Option<ApprovalStatus>, tool: Option<&Glob>) -> Vec<ApprovalRecord> {
        self.order
            .values()
            .rev()
            .filter_map(|id| self.entries.get(id))
            .map(|e| &e.record)
            .filter(|r| status.is_none_or(|s| r.status == s))
            .filter(|r| tool.is_none_or(|g| g.matches(&r.tool)))
            .cloned()
            .collect()
    }

    /// Drops the oldest resolved approvals beyond `retention`: those no call needs first, then
    /// approved ones never used.
    fn prune(&mut self, fx: &mut Effects) {
        while self.finished.len() + self.unconsumed.len() > self.retention {
            let Some((_, id)) = self
                .finished
                .pop_first()
                .or_else(|| self.unconsumed.pop_first())
            else {
                break;
            };
            if let Some(entry) = self.entries.remove(&id) {
                self.order.remove(&entry.seq);
                self.close(&entry.record);
            }
            fx.deletes.push(id);
        }
    }

    fn new_id(&self) -> String {
        loop {
            let id = hex::encode(rand::random::<[u8; 8]>());
            if !self.entries.contains_key(&id) {
                return id;
            }
        }
    }
}

/// The webhook body (flux7 §5.6): `pending` on creation, else the resolution.
fn event_payload(r: &ApprovalRecord, redact: Option<&Redactor>) -> Value {
    let params = match redact {
        Some(redactor) => redactor.redacted(&r.params),
        None => r.params.clone(),
    };
    let mut payload = json!({
        "event": r.status.as_str(),
        "id": r.id,
        "agent_id": r.agent_id,
        "tool": r.tool,
        "params": params,
        "policy_rule": r.policy_rule,
    });
    let at = match r.resolved_at {
        Some(at) => {
            payload["resolved_by"] = json!(r.resolved_by);
            at
        }
        None => r.created_at,
    };
    payload["timestamp"] = json!(format_timestamp(at));
    payload
}

#[cfg(test)]
mod tests;
