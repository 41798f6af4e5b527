//! Emergency stops behind the `Halts` handle: "no call of agent X", "no call of session S", or
//! "no call at all", until lifted; durable in the store.
//!
//! Invariants:
//! - The pipeline reads the halts from a snapshot, never through a message: a stop applies to
//!   the very next call, and checking costs no actor round trip.
//! - A new halt is in the snapshot before it is acknowledged and before its write is durable;
//!   a lifted halt leaves the snapshot before its removal is durable. Should a write fail, the
//!   running process still stops what it was asked to, and after a restart a lifted halt may be
//!   back: both err on the side of stopping.
//! - At most `MAX_HALTS` halts exist at once.
//! - Every new halt is announced once it is in the snapshot, so a call already running can be
//!   stopped by it ([`Halts::until_stopping`]).

use std::sync::Arc;
use std::time::SystemTime;

use actix::prelude::{Actor, Context, Handler, MailboxError, Message, Recipient, ResponseFuture};
use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::clock::Clock;
use crate::grants::rfc3339_secs;
use crate::store::{Change, Row, Store, StoreError};

/// Halts at once; a new one beyond this is refused.
pub const MAX_HALTS: usize = 10_000;
/// The longest reason, target or author: each is repeated in every stopped call's answer and
/// trace.
pub const MAX_TEXT: usize = 1024;

/// What a halt stops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scope", content = "target", rename_all = "snake_case")]
pub enum Scope {
    /// Every call of this agent id.
    Agent(String),
    /// Every call of this session id.
    Session(String),
    /// Every call.
    All,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Halt {
    /// 16 lowercase hex digits.
    pub id: String,
    #[serde(flatten)]
    pub scope: Scope,
    pub reason: String,
    pub created_by: String,
    pub created_at: SystemTime,
}

impl Scope {
    /// The scope named by exactly one of an agent, a session or "all" (how `POST /halts` and
    /// the MCP `halt.create` tool take it).
    pub fn from_parts(
        agent: Option<String>,
        session: Option<String>,
        all: bool,
    ) -> Result<Scope, HaltError> {
        match (agent, session, all) {
            (Some(agent), None, false) => Ok(Scope::Agent(agent)),
            (None, Some(session), false) => Ok(Scope::Session(session)),
            (None, None, true) => Ok(Scope::All),
            _ => Err(HaltError::Invalid(
                "give exactly one of agent, session or \"all\": true".to_owned(),
            )),
        }
    }

    /// In words, for messages: `agent claude`, `session s-1`, `everyone`.
    pub fn describe(&self) -> String {
        match self {
            Scope::Agent(agent) => format!("agent {agent}"),
            Scope::Session(session) => format!("session {session}"),
            Scope::All => "everyone".to_owned(),
        }
    }
}

impl Halt {
    /// What the HTTP API shows: the record with `created_at` in RFC 3339.
    pub fn view(&self) -> serde_json::Value {
        let mut view = serde_json::to_value(self).unwrap_or_default();
        view["created_at"] = rfc3339_secs(self.created_at).into();
        view
    }

    /// Whether a call of `agent` in `session` is stopped by this halt.
    pub fn stops(&self, agent: &str, session: &str) -> bool {
        match &self.scope {
            Scope::Agent(a) => a == agent,
            Scope::Session(s) => !s.is_empty() && s == session,
            Scope::All => true,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum HaltError {
    #[error("halt not found")]
    NotFound,
    #[error("{0}")]
    Invalid(String),
    /// The store or the actor could not take the change. The halts in effect are unchanged.
    #[error("halts unavailable: {0}")]
    Unavailable(String),
}

impl From<MailboxError> for HaltError {
    fn from(e: MailboxError) -> Self {
        HaltError::Unavailable(e.to_string())
    }
}

impl From<StoreError> for HaltError {
    fn from(e: StoreError) -> Self {
        HaltError::Unavailable(e.to_string())
    }
}

/// A halt to put in place.
#[derive(Debug, Clone)]
pub struct NewHalt {
    pub scope: Scope,
    pub reason: String,
    pub created_by: String,
}

#[derive(Message)]
#[rtype(result = "Result<Halt, HaltError>")]
struct Add(NewHalt);

#[derive(Message)]
#[rtype(result = "Result<Halt, HaltError>")]
struct Lift(String);

/// Handle to the halts actor. Cloning is cheap.
#[derive(Clone)]
pub struct Halts {
    snapshot: Arc<ArcSwap<Vec<Halt>>>,
    /// Bumped after each halt added.
    added: Arc<watch::Sender<u64>>,
    add: Recipient<Add>,
    lift: Recipient<Lift>,
}

impl std::fmt::Debug for Halts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Halts").finish_non_exhaustive()
    }
}

impl Halts {
    /// Loads the halts from the store (none: memory only) and starts the actor on the current
    /// arbiter; call it inside a running actix `System`.
    pub fn start(store: Option<Store>, clock: Clock, mailbox: usize) -> Result<Halts, HaltError> {
        let rows: Vec<Row<Halt>> = match &store {
            Some(store) => store.load_halts()?,
            None => Vec::new(),
        };
        let seq = rows.iter().map(|r| r.seq).max().unwrap_or(0);
        let halts: Vec<Halt> = rows.into_iter().map(|row| row.record).collect();
        let snapshot = Arc::new(ArcSwap::from_pointee(halts));
        let added = Arc::new(watch::Sender::new(0));
        let actor = HaltsActor {
            snapshot: snapshot.clone(),
            added: added.clone(),
            store,
            clock,
            mailbox: mailbox.max(1),
            seq,
        };
        let addr = actor.start();
        Ok(Halts {
            snapshot,
            added,
            add: addr.clone().recipient(),
            lift: addr.recipient(),
        })
    }

    /// The halt that stops a call of `agent` in `session`, if any (the oldest).
    pub fn stopping(&self, agent: &str, session: &str) -> Option<Halt> {
        self.snapshot
            .load()
            .iter()
            .find(|h| h.stops(agent, session))
            .cloned()
    }

    /// Resolves with the halt that stops a call of `agent` in `session`: at once if one is in
    /// effect, else when one is put in place. For a call that runs: selected against it, the
    /// halt ends it.
    pub async fn until_stopping(&self, agent: &str, session: &str) -> Halt {
        // Subscribed before looking, so a halt added in between is not missed.
        let mut added = self.added.subscribe();
        loop {
            if let Some(halt) = self.stopping(agent, session) {
                return halt;
            }
            if added.changed().await.is_err() {
                // The sender lives in this handle too: it cannot close while we hold it.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Every halt in effect, oldest first.
    pub fn list(&self) -> Vec<Halt> {
        self.snapshot.load().as_ref().clone()
    }

    /// Puts a halt in place; it applies to every call checked after this returns.
    pub async fn add(&self, new: NewHalt) -> Result<Halt, HaltError> {
        self.add.send(Add(new)).await?
    }

    /// Lifts the halt with this exact id.
    pub async fn lift(&self, id: &str) -> Result<Halt, HaltError> {
        self.lift.send(Lift(id.to_owned())).await?
    }
}

struct HaltsActor {
    snapshot: Arc<ArcSwap<Vec<Halt>>>,
    added: Arc<watch::Sender<u64>>,
    store: Option<Store>,
    clock: Clock,
    mailbox: usize,
    /// The creation order of the last halt written (kept with each row).
    seq: u64,
}

impl Actor for HaltsActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.mailbox);
    }
}

impl Handler<Add> for HaltsActor {
    type Result = ResponseFuture<Result<Halt, HaltError>>;

    fn handle(&mut self, Add(new): Add, _: &mut Context<Self>) -> Self::Result {
        let added = self.add(new);
        Box::pin(async move {
            let (halt, flush) = added?;
            flush.durable().await?;
            Ok(halt)
        })
    }
}

impl Handler<Lift> for HaltsActor {
    type Result = ResponseFuture<Result<Halt, HaltError>>;

    fn handle(&mut self, Lift(id): Lift, _: &mut Context<Self>) -> Self::Result {
        let lifted = self.lift(&id);
        Box::pin(async move {
            let (halt, flush) = lifted?;
            flush.durable().await?;
            Ok(halt)
        })
    }
}

impl HaltsActor {
    fn add(&mut self, new: NewHalt) -> Result<(Halt, crate::store::Flush), HaltError> {
        match &new.scope {
            Scope::Agent(t) | Scope::Session(t) if t.trim().is_empty() => {
                return Err(HaltError::Invalid(
                    "the agent or session to halt is empty".into(),
                ));
            }
            _ => {}
        }
        let target = match &new.scope {
            Scope::Agent(t) | Scope::Session(t) => t.as_str(),
            Scope::All => "",
        };
        if [target, &new.reason, &new.created_by]
            .iter()
            .any(|text| text.chars().count() > MAX_TEXT)
        {
            return Err(HaltError::Invalid(format!(
                "the target, reason and author are limited to {MAX_TEXT} characters"
            )));
        }
        let current = self.snapshot.load_full();
        if current.len() >= MAX_HALTS {
            return Err(HaltError::Invalid(format!(
                "too many halts in effect (at most {MAX_HALTS})"
            )));
        }
        let halt = Halt {
            id: format!("{:016x}", rand::random::<u64>()),
            scope: new.scope,
            reason: new.reason,
            created_by: new.created_by,
            created_at: self.clock.wall(),
        };
        self.seq += 1;
        let flush = match &self.store {
            Some(store) => store.write_halts(&Change {
                puts: vec![(self.seq, &halt)],
                deletes: Vec::new(),
            })?,
            None => crate::store::Flush::none(),
        };
        let mut next = current.as_ref().clone();
        next.push(halt.clone());
        self.snapshot.store(Arc::new(next));
        self.added.send_modify(|n| *n += 1);
        Ok((halt, flush))
    }

    fn lift(&mut self, id: &str) -> Result<(Halt, crate::store::Flush), HaltError> {
        let current = self.snapshot.load_full();
        let halt = current
            .iter()
            .find(|h| h.id == id)
            .cloned()
            .ok_or(HaltError::NotFound)?;
        let flush = match &self.store {
            Some(store) => store.write_halts(&Change {
                puts: Vec::new(),
                deletes: vec![id],
            })?,
            None => crate::store::Flush::none(),
        };
        let next: Vec<Halt> = current.iter().filter(|h| h.id != id).cloned().collect();
        self.snapshot.store(Arc::new(next));
        Ok((halt, flush))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn halt(scope: Scope) -> Halt {
        Halt {
            id: "0123456789abcdef".into(),
            scope,
            reason: String::new(),
            created_by: "test".into(),
            created_at: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn each_scope_stops_what_it_names() {
        assert!(halt(Scope::Agent("a".into())).stops("a", "s"));
        assert!(!halt(Scope::Agent("a".into())).stops("b", "s"));
        assert!(halt(Scope::Session("s".into())).stops("b", "s"));
        assert!(!halt(Scope::Session("s".into())).stops("b", ""));
        assert!(halt(Scope::All).stops("anyone", ""));
    }

    #[test]
    fn the_record_names_its_scope_and_target() {
        let json = serde_json::to_value(halt(Scope::Agent("a".into()))).expect("json");
        assert_eq!(json["scope"], "agent");
        assert_eq!(json["target"], "a");
        let all = serde_json::to_value(halt(Scope::All)).expect("json");
        assert_eq!(all["scope"], "all");
        assert!(all.get("target").is_none(), "{all}");
        let back: Halt = serde_json::from_value(json).expect("round trip");
        assert_eq!(back.scope, Scope::Agent("a".into()));
        assert_eq!(
            halt(Scope::All).view()["created_at"],
            "1970-01-01T00:00:00Z"
        );
    }

    #[actix::test]
    async fn halts_apply_at_once_and_lifting_ends_them() {
        let halts = Halts::start(None, Clock::System, 16).expect("start");
        assert!(halts.stopping("a", "s").is_none());
        let h = halts
            .add(NewHalt {
                scope: Scope::Agent("a".into()),
                reason: "runaway".into(),
                created_by: "op".into(),
            })
            .await
            .expect("added");
        assert_eq!(halts.stopping("a", "s").map(|x| x.id), Some(h.id.clone()));
        assert!(halts.stopping("b", "s").is_none());
        let empty = halts
            .add(NewHalt {
                scope: Scope::Session(" ".into()),
                reason: String::new(),
                created_by: "op".into(),
            })
            .await;
        assert!(matches!(empty, Err(HaltError::Invalid(_))), "{empty:?}");
        let long = halts
            .add(NewHalt {
                scope: Scope::All,
                reason: "x".repeat(MAX_TEXT + 1),
                created_by: "op".into(),
            })
            .await;
        assert!(matches!(long, Err(HaltError::Invalid(_))), "{long:?}");
        assert_eq!(
            halts.list().len(),
            1,
            "nothing added by the refused requests"
        );
        assert_eq!(halts.lift(&h.id).await.expect("lifted").id, h.id);
        assert!(halts.stopping("a", "s").is_none());
        assert_eq!(halts.lift(&h.id).await, Err(HaltError::NotFound));
    }

    use futures_util::FutureExt as _;

    #[actix::test]
    async fn a_running_call_learns_of_the_halt_that_stops_it_and_only_of_that_one() {
        let halts = Halts::start(None, Clock::System, 16).expect("start");
        let new = |scope| NewHalt {
            scope,
            reason: String::new(),
            created_by: "op".into(),
        };
        let mut running = Box::pin(halts.until_stopping("a", "s"));
        assert!((&mut running).now_or_never().is_none());
        halts
            .add(new(Scope::Agent("b".into())))
            .await
            .expect("added");
        assert!(
            (&mut running).now_or_never().is_none(),
            "another agent's halt does not stop it"
        );
        let h = halts
            .add(new(Scope::Session("s".into())))
            .await
            .expect("added");
        assert_eq!(running.await.id, h.id);
        // Already halted: at once.
        assert_eq!(halts.until_stopping("x", "s").await.id, h.id);
    }
}
