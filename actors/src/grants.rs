//! Temporal grants behind the `Grants` handle: "agent X may run tools Y without approval until
//! T", durable in the store.
//!
//! Invariants:
//! - A grant only turns a `human_approval` decision into `allow`; the caller never consults it
//!   for a `deny`.
//! - Every grant has a positive duration of at most `max_duration` (24 h by default), on every
//!   ingress.
//! - A grant applies while it is not expired, its condition (if any) holds on the call's
//!   arguments, and its `max_calls` (if any) is not used up. Each use is counted synchronously
//!   in the handler, so concurrent calls never use a grant more than `max_calls` times, and the
//!   count is durable before the call is allowed. A used-up grant is removed.
//! - A delegated grant (`parent` set) never widens its parent: it names one agent, lasts no
//!   longer than the parent, and applies only where the parent and every ancestor still apply
//!   (their tools, conditions and remaining calls); each use is counted on the whole chain, so
//!   the calls of a tree never exceed its root's `max_calls`. Revoking, expiring or using up a
//!   grant removes its descendants with it. Chains are at most `MAX_DEPTH` grants long.
//! - Expired grants are removed on every read and at start-up; revoking by prefix needs a
//!   unique match of at least 4 characters.
//! - At most `MAX_GRANTS` grants exist at once, each with texts of at most `MAX_TEXT`
//!   characters and a condition of at most `MAX_CONDITION_BYTES`.
//! - All time comes from the injected `Clock`.

use std::future::Future;
use std::time::{Duration, SystemTime};

use actix::prelude::{
    Actor, ActorContext, AsyncContext, Context, Handler, MailboxError, Message, Recipient,
    ResponseFuture, WrapFuture,
};
use chrono::{DateTime, Utc};
use mesh7_config::condition::Condition;
use mesh7_config::duration::format_secs;
use mesh7_config::{ConditionConfig, Glob};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::watch;

use crate::approvals::{ApprovalError, ApprovalRecord, ApprovalStatus, Approvals, Resolution};
use crate::clock::Clock;
use crate::store::{Change, Flush, Row, Store, StoreError};

/// The longest grant by default (flux7's MCP limit, now applied everywhere).
pub const DEFAULT_MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
/// Grants at once; a new one beyond this is refused.
pub const MAX_GRANTS: usize = 10_000;
/// The shortest prefix `revoke` and delegation accept.
const MIN_PREFIX: usize = 4;
/// Grants in a delegation chain, the root included.
pub const MAX_DEPTH: usize = 4;
/// The longest agent, tools or granted_by text of a grant, in characters.
pub const MAX_TEXT: usize = 1024;
/// The largest condition of a grant, as JSON.
pub const MAX_CONDITION_BYTES: usize = 16 * 1024;

// ---------------------------------------------------------------------------------------------
// Types

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grant {
    /// 16 lowercase hex digits.
    pub id: String,
    /// Agent glob.
    pub agent: String,
    /// Tool glob.
    pub tools: String,
    pub expires_at: SystemTime,
    pub granted_by: String,
    pub created_at: SystemTime,
    #[serde(default)]
    pub condition: Option<ConditionConfig>,
    #[serde(default)]
    pub max_calls: Option<u64>,
    /// Calls that used this grant (a delegated grant's calls count here too).
    #[serde(default)]
    pub calls: u64,
    /// The grant this one was delegated from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

impl Grant {
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.expires_at
            .duration_since(now)
            .unwrap_or(Duration::ZERO)
    }

    /// The grant view (flux7 §6): `{"id","agent","tools","expires_at","remaining","granted_by"}`,
    /// plus `condition` when set, `max_calls` when a call limit is set, `calls` with either a
    /// limit or a parent, and `parent` when delegated.
    pub fn view(&self, now: SystemTime) -> Value {
        let mut view = Map::new();
        view.insert("id".into(), json!(self.id));
        view.insert("agent".into(), json!(self.agent));
        view.insert("tools".into(), json!(self.tools));
        view.insert("expires_at".into(), json!(rfc3339_secs(self.expires_at)));
        view.insert("remaining".into(), json!(format_secs(self.remaining(now))));
        view.insert("granted_by".into(), json!(self.granted_by));
        if let Some(condition) = &self.condition {
            view.insert("condition".into(), json!(condition));
        }
        if let Some(max) = self.max_calls {
            view.insert("max_calls".into(), json!(max));
        }
        if self.max_calls.is_some() || self.parent.is_some() {
            view.insert("calls".into(), json!(self.calls));
        }
        if let Some(parent) = &self.parent {
            view.insert("parent".into(), json!(parent));
        }
        Value::Object(view)
    }
}

/// RFC 3339 in UTC with whole seconds (`2025-01-02T03:04:05Z`), as flux7 prints grant expiry.
pub fn rfc3339_secs(t: SystemTime) -> String {
    DateTime::<Utc>::from(t)
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[derive(Debug, Clone)]
pub struct NewGrant {
    pub agent: String,
    /// A tool glob; when delegating, empty means the parent's.
    pub tools: String,
    /// Required, except when delegating: then the parent's remaining time by default.
    pub duration: Option<Duration>,
    pub granted_by: String,
    pub condition: Option<ConditionConfig>,
    pub max_calls: Option<u64>,
    /// The creating agent when it is an agent: refused if a pending approval of that agent
    /// matches the grant (no self-granting); when delegating, it must hold the parent (the
    /// parent's agent glob matches it). `None` is an operator.
    pub creator_agent: Option<String>,
    /// Delegate from this grant (exact id or a unique prefix of at least 4 characters): the new
    /// grant is an attenuated copy of it for one agent.
    pub parent: Option<String>,
}

/// A revoked grant and the grants delegated from it, which went with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Revoked {
    pub grant: Grant,
    pub descendants: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GrantError {
    #[error("invalid duration: {0}")]
    InvalidDuration(String),
    #[error("duration exceeds maximum ({})", format_secs(*.max))]
    TooLong { max: Duration },
    #[error("grant not found")]
    NotFound,
    #[error("grant id prefix is ambiguous")]
    Ambiguous,
    #[error("invalid condition: {0}")]
    InvalidCondition(String),
    #[error("max_calls must be at least 1 (leave it out for no limit)")]
    NoCalls,
    #[error("{0}")]
    TooLarge(String),
    #[error("an agent cannot grant itself a call it is waiting approval for")]
    SelfGrant,
    #[error("grant {id} does not cover agent {agent}: only its holder may delegate it")]
    NotHolder { id: String, agent: String },
    #[error("a delegated grant is for one agent: {0:?} is a pattern")]
    DelegateToPattern(String),
    #[error("delegation is at most {MAX_DEPTH} grants deep")]
    TooDeep,
    #[error("duration exceeds the parent grant's remaining time ({})", format_secs(*.remaining))]
    OutlivesParent { remaining: Duration },
    #[error("max_calls exceeds the parent grant's remaining calls ({remaining})")]
    ExceedsParentCalls { remaining: u64 },
    #[error("grants unavailable: {0}")]
    Unavailable(String),
    #[error("grant store failed: {0}")]
    Store(String),
}

impl From<MailboxError> for GrantError {
    fn from(e: MailboxError) -> Self {
        GrantError::Unavailable(e.to_string())
    }
}

impl From<StoreError> for GrantError {
    fn from(e: StoreError) -> Self {
        GrantError::Store(e.to_string())
    }
}

// ---------------------------------------------------------------------------------------------
// Messages

#[derive(Debug, Message)]
#[rtype(result = "Result<Grant, GrantError>")]
struct Create(NewGrant);

#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<Grant>, GrantError>")]
struct List;

#[derive(Debug, Message)]
#[rtype(result = "Result<Revoked, GrantError>")]
struct Revoke(String);

#[derive(Debug, Message)]
#[rtype(result = "Result<Option<Grant>, GrantError>")]
struct Use {
    agent: String,
    tool: String,
    args: Value,
}

#[derive(Debug, Message)]
#[rtype(result = "usize")]
struct ActiveCount;

#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Shutdown;

// ---------------------------------------------------------------------------------------------
// The handle

/// The grant registry. Cloning is cheap; the actor stops when the last clone is dropped or
/// `shutdown` is called.
#[derive(Clone)]
pub struct Grants {
    create: Recipient<Create>,
    list: Recipient<List>,
    revoke: Recipient<Revoke>,
    use_grant: Recipient<Use>,
    count: Recipient<ActiveCount>,
    shutdown: Recipient<Shutdown>,
    /// Consulted to refuse self-granting.
    approvals: Option<Approvals>,
    /// Closed when the actor (and with it its store handle) is gone.
    alive: watch::Receiver<()>,
}

impl std::fmt::Debug for Grants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grants").finish_non_exhaustive()
    }
}

impl Grants {
    /// Loads the grants from the store (none: memory only), deleting expired ones, and starts
    /// the actor on the current arbiter; call it inside a running actix `System`.
    /// A zero `max_duration` means the default, 24 h.
    pub fn start(
        store: Option<Store>,
        max_duration: Duration,
        clock: Clock,
        mailbox: usize,
    ) -> Result<Grants, GrantError> {
        let rows = match &store {
            Some(store) => store.load_grants()?,
            None => Vec::new(),
        };
        let mut fx = Effects::default();
        let max_duration = if max_duration.is_zero() {
            DEFAULT_MAX_DURATION
        } else {
            max_duration
        };
        let book = Book::load(rows, max_duration, clock.wall(), &mut fx);
        // Expired grants are deleted durably before anything is answered (see approvals).
        if let Some(store) = &store {
            store.write_grants(&fx.change())?.durable_now()?;
        }
        let (alive_tx, alive) = watch::channel(());
        let addr = GrantsActor {
            book,
            store,
            clock,
            mailbox: mailbox.max(1),
            _alive: alive_tx,
        }
        .start();
        Ok(Grants {
            create: addr.clone().recipient(),
            list: addr.clone().recipient(),
            revoke: addr.clone().recipient(),
            use_grant: addr.clone().recipient(),
            count: addr.clone().recipient(),
            shutdown: addr.recipient(),
            approvals: None,
            alive,
        })
    }

    /// Links the approval queue, so that an agent creating a grant is refused when one of its
    /// own pending approvals would be covered by it. Without it no such check is made.
    pub fn with_approvals(mut self, approvals: Approvals) -> Grants {
        self.approvals = Some(approvals);
        self
    }

    pub async fn create(&self, g: NewGrant) -> Result<Grant, GrantError> {
        if let (Some(creator), Some(approvals)) = (&g.creator_agent, &self.approvals) {
            let (agent, tools) = (Glob::new(&g.agent), Glob::new(&g.tools));
            let pending = approvals
                .list(Some(ApprovalStatus::Pending), None)
                .await
                .map_err(|e| GrantError::Unavailable(e.to_string()))?;
            let covers_own = pending.iter().any(|a| {
                a.agent_id == *creator && agent.matches(&a.agent_id) && tools.matches(&a.tool)
            });
            if covers_own {
                return Err(GrantError::SelfGrant);
            }
        }
        self.create.send(Create(g)).await?
    }

    /// Active grants, in creation order.
    pub async fn list(&self) -> Result<Vec<Grant>, GrantError> {
        self.list.send(List).await?
    }

    /// Exact id, else the unique id starting with a prefix of at least 4 characters; the
    /// grants delegated from it are revoked with it.
    pub async fn revoke(&self, id_or_prefix: &str) -> Result<Revoked, GrantError> {
        self.revoke.send(Revoke(id_or_prefix.to_owned())).await?
    }

    /// The first active grant whose agent and tools globs match, whose condition holds on args
    /// and whose max_calls is not used up; counts one call (durably) and returns it.
    pub async fn use_grant(
        &self,
        agent: &str,
        tool: &str,
        args: &Value,
    ) -> Result<Option<Grant>, GrantError> {
        let msg = Use {
            agent: agent.to_owned(),
            tool: tool.to_owned(),
            args: args.clone(),
        };
        self.use_grant.send(msg).await?
    }

    /// Active grants now; 0 when the registry cannot answer.
    pub async fn active_count(&self) -> usize {
        self.count.send(ActiveCount).await.unwrap_or(0)
    }

    /// Stops the registry and returns once the actor is gone with its store handle.
    pub async fn shutdown(&self) {
        // Already stopped is as good as stopped.
        let _ = self.shutdown.send(Shutdown).await;
        // Nothing is ever sent on `alive`: this returns when the actor drops the sender.
        let _ = self.alive.clone().changed().await;
    }
}

/// The grant an approver mints with an approval ("approve, and allow it for 30 minutes"):
/// for the approval's agent, and for its tool unless `tools` says otherwise.
#[derive(Debug, Clone, Default)]
pub struct GrantTerms {
    pub duration: Duration,
    pub tools: Option<String>,
    pub condition: Option<ConditionConfig>,
    pub max_calls: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApproveError {
    #[error(transparent)]
    Approval(#[from] ApprovalError),
    #[error(transparent)]
    Grant(#[from] GrantError),
}

/// Approves `id` and mints the grant of `terms` with it, both or neither: the grant is made
/// first (a refused grant leaves the approval pending) and revoked again if the approval
/// cannot be resolved. The approved call itself runs on the approval; the grant lifts the
/// matching calls after it.
pub async fn approve_with_grant(
    approvals: &Approvals,
    grants: &Grants,
    id: &str,
    resolution: Resolution,
    terms: GrantTerms,
) -> Result<(ApprovalRecord, Grant), ApproveError> {
    let pending = approvals.get(id).await?;
    if pending.status != ApprovalStatus::Pending {
        return Err(ApprovalError::AlreadyResolved.into());
    }
    if resolution.resolver_agent.as_deref() == Some(pending.agent_id.as_str()) {
        return Err(ApprovalError::SelfResolution.into());
    }
    let grant = grants
        .create(NewGrant {
            agent: pending.agent_id.clone(),
            tools: terms.tools.unwrap_or_else(|| pending.tool.clone()),
            duration: Some(terms.duration),
            granted_by: resolution.resolved_by.clone(),
            condition: terms.condition,
            max_calls: terms.max_calls,
            creator_agent: resolution.resolver_agent.clone(),
            parent: None,
        })
        .await?;
    let resolution = Resolution {
        approve: true,
        ..resolution
    };
    match approvals.resolve(&pending.id, resolution).await {
        Ok(record) => Ok((record, grant)),
        Err(e) => {
            if let Err(revoke) = grants.revoke(&grant.id).await {
                tracing::error!(error = %revoke, "could not revoke grant {} of an unresolved approval", grant.id);
            }
            Err(e.into())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The actor

struct GrantsActor {
    book: Book,
    store: Option<Store>,
    clock: Clock,
    mailbox: usize,
    _alive: watch::Sender<()>,
}

impl Actor for GrantsActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.mailbox);
    }
}

type Outcome<T> = Result<T, GrantError>;

impl GrantsActor {
    /// Removes expired grants, runs `op`, writes the changes now and answers once durable.
    fn transact<T: 'static>(
        &mut self,
        op: impl FnOnce(&mut Book, SystemTime, &mut Effects) -> Outcome<T>,
    ) -> impl Future<Output = Outcome<T>> + 'static {
        let now = self.clock.wall();
        let mut fx = Effects::default();
        self.book.drop_expired(now, &mut fx);
        let outcome = op(&mut self.book, now, &mut fx);
        let write = match &self.store {
            Some(store) => store.write_grants(&fx.change()),
            None => Ok(Flush::none()),
        };
        async move {
            write?.durable().await?;
            outcome
        }
    }
}

impl Handler<Create> for GrantsActor {
    type Result = ResponseFuture<Outcome<Grant>>;

    fn handle(&mut self, msg: Create, _: &mut Context<Self>) -> Self::Result {
        Box::pin(self.transact(|book, now, fx| book.create(msg.0, now, fx)))
    }
}

impl Handler<List> for GrantsActor {
    type Result = ResponseFuture<Outcome<Vec<Grant>>>;

    fn handle(&mut self, _: List, _: &mut Context<Self>) -> Self::Result {
        Box::pin(self.transact(|book, _, _| Ok(book.list())))
    }
}

impl Handler<Revoke> for GrantsActor {
    type Result = ResponseFuture<Outcome<Revoked>>;

    fn handle(&mut self, msg: Revoke, _: &mut Context<Self>) -> Self::Result {
        Box::pin(self.transact(|book, _, fx| book.revoke(&msg.0, fx)))
    }
}

impl Handler<Use> for GrantsActor {
    type Result = ResponseFuture<Outcome<Option<Grant>>>;

    fn handle(&mut self, msg: Use, _: &mut Context<Self>) -> Self::Result {
        Box::pin(
            self.transact(|book, _, fx| Ok(book.use_grant(&msg.agent, &msg.tool, &msg.args, fx))),
        )
    }
}

impl Handler<ActiveCount> for GrantsActor {
    type Result = usize;

    fn handle(&mut self, _: ActiveCount, ctx: &mut Context<Self>) -> usize {
        let done = self.transact(|_, _, _| Ok(()));
        let done = async move {
            if let Err(e) = done.await {
                tracing::error!(error = %e, "deleting expired grants failed");
            }
        };
        // Inside the context, so it ends with the actor.
        ctx.spawn(done.into_actor(self));
        self.book.grants.len()
    }
}

impl Handler<Shutdown> for GrantsActor {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        self.store = None;
        ctx.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// The pure core

#[derive(Default)]
struct Effects {
    puts: Vec<(u64, Grant)>,
    deletes: Vec<String>,
}

impl Effects {
    fn change(&self) -> Change<'_, Grant> {
        Change {
            puts: self.puts.iter().map(|(seq, g)| (*seq, g)).collect(),
            deletes: self.deletes.iter().map(String::as_str).collect(),
        }
    }
}

/// A grant with its patterns compiled.
struct Active {
    seq: u64,
    grant: Grant,
    agent: Glob,
    tools: Glob,
    condition: Option<Condition>,
}

impl Active {
    fn new(seq: u64, grant: Grant) -> Result<Active, GrantError> {
        let condition = match &grant.condition {
            Some(config) => Some(compile(config)?),
            None => None,
        };
        Ok(Active {
            seq,
            agent: Glob::new(&grant.agent),
            tools: Glob::new(&grant.tools),
            condition,
            grant,
        })
    }

    /// Whether this grant lets the call through, its agent aside (an ancestor's agent is the
    /// delegator, not the caller).
    fn covers(&self, tool: &str, args: &Value) -> bool {
        self.tools.matches(tool)
            && self.calls_left().is_none_or(|left| left > 0)
            && self.condition.as_ref().is_none_or(|c| c.holds(args))
    }

    fn calls_left(&self) -> Option<u64> {
        self.grant
            .max_calls
            .map(|max| max.saturating_sub(self.grant.calls))
    }
}

fn compile(config: &ConditionConfig) -> Result<Condition, GrantError> {
    Condition::compile(config).map_err(|errors| {
        let text = errors
            .iter()
            .map(|e| {
                if e.path.is_empty() {
                    e.message.clone()
                } else {
                    format!("{}: {}", e.path, e.message)
                }
            })
            .collect::<Vec<_>>()
            .join("; ");
        GrantError::InvalidCondition(text)
    })
}

/// The grants in creation order: a delegated grant always comes after its parent.
struct Book {
    grants: Vec<Active>,
    next_seq: u64,
    max_duration: Duration,
}

impl Book {
    fn load(
        rows: Vec<Row<Grant>>,
        max_duration: Duration,
        now: SystemTime,
        fx: &mut Effects,
    ) -> Book {
        let mut book = Book {
            grants: Vec::new(),
            next_seq: 1,
            max_duration,
        };
        for Row { seq, record } in rows {
            book.next_seq = book.next_seq.max(seq.saturating_add(1));
            if record.expires_at <= now || book.grants.iter().any(|a| a.grant.id == record.id) {
                fx.deletes.push(record.id);
                continue;
            }
            match Active::new(seq, record) {
                Ok(active) => book.grants.push(active),
                Err(e) => {
                    // Unreadable is not permitted: the grant is dropped, never applied loosely.
                    tracing::error!(error = %e, "dropping a stored grant");
                }
            }
        }
        // Rows come in sequence order, so a parent precedes its children.
        book.drop_orphans(fx);
        book
    }

    fn drop_expired(&mut self, now: SystemTime, fx: &mut Effects) {
        self.grants.retain(|a| {
            let alive = a.grant.expires_at > now;
            if !alive {
                fx.deletes.push(a.grant.id.clone());
            }
            alive
        });
        self.drop_orphans(fx);
    }

    /// Removes delegated grants whose parent is gone (one pass: parents come first).
    fn drop_orphans(&mut self, fx: &mut Effects) {
        let mut kept: Vec<&str> = Vec::new();
        let mut orphans = Vec::new();
        for a in &self.grants {
            match &a.grant.parent {
                Some(parent) if !kept.contains(&parent.as_str()) => {
                    orphans.push(a.grant.id.clone());
                }
                _ => kept.push(&a.grant.id),
            }
        }
        if !orphans.is_empty() {
            self.grants.retain(|a| !orphans.contains(&a.grant.id));
            fx.deletes.extend(orphans);
        }
    }

    fn create(&mut self, g: NewGrant, now: SystemTime, fx: &mut Effects) -> Outcome<Grant> {
        let parent = match &g.parent {
            Some(id) => Some(self.delegable(id, &g, now)?),
            None => None,
        };
        let duration = match (g.duration, &parent) {
            (Some(d), _) => d,
            (None, Some(p)) => p.remaining,
            (None, None) => return Err(GrantError::InvalidDuration("required".into())),
        };
        if duration.is_zero() {
            return Err(GrantError::InvalidDuration("must be > 0".into()));
        }
        if duration > self.max_duration {
            return Err(GrantError::TooLong {
                max: self.max_duration,
            });
        }
        if g.max_calls == Some(0) {
            return Err(GrantError::NoCalls);
        }
        check_size(&g)?;
        if let Some(p) = &parent {
            if duration > p.remaining {
                return Err(GrantError::OutlivesParent {
                    remaining: p.remaining,
                });
            }
            if let (Some(max), Some(left)) = (g.max_calls, p.calls_left)
                && max > left
            {
                return Err(GrantError::ExceedsParentCalls { remaining: left });
            }
        }
        if self.grants.len() >= MAX_GRANTS {
            return Err(GrantError::Unavailable("too many active grants".into()));
        }
        let tools = match &parent {
            Some(p) if g.tools.is_empty() => p.tools.clone(),
            _ => g.tools,
        };
        let grant = Grant {
            id: self.new_id(),
            agent: g.agent,
            tools,
            expires_at: now + duration,
            granted_by: g.granted_by,
            created_at: now,
            condition: g.condition,
            max_calls: g.max_calls,
            calls: 0,
            parent: parent.map(|p| p.id),
        };
        let seq = self.next_seq;
        let active = Active::new(seq, grant.clone())?;
        self.next_seq += 1;
        self.grants.push(active);
        fx.puts.push((seq, grant.clone()));
        Ok(grant)
    }

    /// The grant `g` would be delegated from, checked: it exists, `g`'s creator holds it, `g`
    /// names one agent and the chain stays within `MAX_DEPTH`.
    fn delegable(&self, id_or_prefix: &str, g: &NewGrant, now: SystemTime) -> Outcome<Parent> {
        let index = self.find(id_or_prefix)?;
        let parent = &self.grants[index];
        if let Some(creator) = &g.creator_agent
            && !parent.agent.matches(creator)
        {
            return Err(GrantError::NotHolder {
                id: parent.grant.id.clone(),
                agent: creator.clone(),
            });
        }
        if g.agent.is_empty() || !Glob::new(&g.agent).is_literal() {
            return Err(GrantError::DelegateToPattern(g.agent.clone()));
        }
        let chain = self.chain(index);
        if chain.len() >= MAX_DEPTH {
            return Err(GrantError::TooDeep);
        }
        Ok(Parent {
            id: parent.grant.id.clone(),
            tools: parent.grant.tools.clone(),
            remaining: parent.grant.remaining(now),
            calls_left: chain
                .iter()
                .filter_map(|&i| self.grants[i].calls_left())
                .min(),
        })
    }

    /// The indices of a grant and its ancestors, the grant first.
    fn chain(&self, index: usize) -> Vec<usize> {
        let mut chain = vec![index];
        let mut at = index;
        while let Some(parent) = &self.grants[at].grant.parent {
            // Parents come first, and orphans are dropped with their parent.
            match self.grants[..at].iter().position(|a| a.grant.id == *parent) {
                Some(i) => {
                    chain.push(i);
                    at = i;
                }
                None => break,
            }
        }
        chain
    }

    fn list(&self) -> Vec<Grant> {
        self.grants.iter().map(|a| a.grant.clone()).collect()
    }

    /// The index of an exact id, else of the unique id starting with a prefix of at least 4
    /// characters.
    fn find(&self, id_or_prefix: &str) -> Outcome<usize> {
        if let Some(i) = self.grants.iter().position(|a| a.grant.id == id_or_prefix) {
            return Ok(i);
        }
        if id_or_prefix.chars().count() < MIN_PREFIX {
            return Err(GrantError::NotFound);
        }
        let mut found = self
            .grants
            .iter()
            .enumerate()
            .filter(|(_, a)| a.grant.id.starts_with(id_or_prefix))
            .map(|(i, _)| i);
        match (found.next(), found.next()) {
            (Some(i), None) => Ok(i),
            (Some(_), Some(_)) => Err(GrantError::Ambiguous),
            (None, _) => Err(GrantError::NotFound),
        }
    }

    fn revoke(&mut self, id_or_prefix: &str, fx: &mut Effects) -> Outcome<Revoked> {
        let index = self.find(id_or_prefix)?;
        let mut removed = self.remove_tree(index, fx);
        let grant = removed.remove(0);
        Ok(Revoked {
            grant,
            descendants: removed.into_iter().map(|g| g.id).collect(),
        })
    }

    /// Removes a grant and every grant delegated from it, the grant first.
    fn remove_tree(&mut self, index: usize, fx: &mut Effects) -> Vec<Grant> {
        let mut tree = vec![self.grants[index].grant.id.clone()];
        for a in &self.grants[index + 1..] {
            if a.grant.parent.as_ref().is_some_and(|p| tree.contains(p)) {
                tree.push(a.grant.id.clone());
            }
        }
        let mut removed = Vec::with_capacity(tree.len());
        self.grants.retain(|a| {
            let gone = tree.contains(&a.grant.id);
            if gone {
                removed.push(a.grant.clone());
            }
            !gone
        });
        fx.deletes.extend(tree);
        removed
    }

    fn use_grant(
        &mut self,
        agent: &str,
        tool: &str,
        args: &Value,
        fx: &mut Effects,
    ) -> Option<Grant> {
        let (index, chain) = self.grants.iter().enumerate().find_map(|(i, a)| {
            if !a.agent.matches(agent) {
                return None;
            }
            let chain = self.chain(i);
            chain
                .iter()
                .all(|&c| self.grants[c].covers(tool, args))
                .then_some((i, chain))
        })?;
        // Every grant of the chain counts the call.
        for &c in &chain {
            self.grants[c].grant.calls += 1;
        }
        let used = self.grants[index].grant.clone();
        // The highest used-up grant of the chain goes, and its descendants with it; the
        // grants above it are kept with their new counts.
        let cut = chain
            .iter()
            .rposition(|&c| self.grants[c].calls_left() == Some(0));
        let kept = cut.map_or(0, |k| k + 1);
        for &c in &chain[kept..] {
            let active = &self.grants[c];
            fx.puts.push((active.seq, active.grant.clone()));
        }
        if let Some(k) = cut {
            self.remove_tree(chain[k], fx);
        }
        Some(used)
    }

    fn new_id(&self) -> String {
        loop {
            let id = hex::encode(rand::random::<[u8; 8]>());
            if !self.grants.iter().any(|a| a.grant.id == id) {
                return id;
            }
        }
    }
}

/// A grant's texts and condition within their bounds.
fn check_size(g: &NewGrant) -> Outcome<()> {
    for (name, text) in [
        ("agent", &g.agent),
        ("tools", &g.tools),
        ("granted_by", &g.granted_by),
    ] {
        if text.chars().count() > MAX_TEXT {
            return Err(GrantError::TooLarge(format!(
                "{name} is limited to {MAX_TEXT} characters"
            )));
        }
    }
    let condition = g
        .condition
        .as_ref()
        .map_or(0, |c| serde_json::to_vec(c).map_or(usize::MAX, |v| v.len()));
    if condition > MAX_CONDITION_BYTES {
        return Err(GrantError::TooLarge(format!(
            "condition is limited to {MAX_CONDITION_BYTES} bytes of JSON"
        )));
    }
    Ok(())
}

/// What a delegation needs of its parent.
struct Parent {
    id: String,
    tools: String,
    remaining: Duration,
    /// The fewest calls left along the parent's chain, if any grant of it has a limit.
    calls_left: Option<u64>,
}

#[cfg(test)]
mod tests;
