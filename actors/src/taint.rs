//! Information-flow labels of sessions behind the `Taint` handle: a call of a tool listed in
//! `taint.sources` labels its session (`web`, `email`, …), and rules with `tainted` match the
//! later calls of that session. Durable in the store.
//!
//! Invariants:
//! - A session is keyed by (agent, session id); calls without a session share their agent's
//!   one unnamed session, so they are labelled together rather than never.
//! - A label is on the session before the call that gives it runs, and durable before
//!   [`Taint::mark`] returns: the untrusted result never reaches an agent whose session is not
//!   labelled yet, and a restart keeps the label.
//! - Labels are only ever added; an operator removes a session's labels ([`Taint::clear`]).
//! - At most `max_sessions` labelled sessions are kept, the least recently used forgotten (and
//!   deleted from the store) beyond: sessions come and go, so refusing new labels once full
//!   would stop every source call for good.

use std::num::NonZeroUsize;
use std::sync::Arc;

use actix::prelude::{
    Actor, Addr, Context, Handler, MailboxError, Message, MessageResult, ResponseFuture,
};
use lru::LruCache;
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::grants::rfc3339_secs;
use crate::store::{Change, Flush, Row, Store, StoreError};

/// The labels of one session, with what gave each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaintedSession {
    /// The store key: the agent's length, `:`, the agent, then the session.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub(crate) id: String,
    pub agent: String,
    /// Empty for the calls made without a session.
    pub session: String,
    pub labels: Vec<TaintLabel>,
}

/// One label of a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaintLabel {
    pub label: String,
    /// The tool whose call gave it.
    pub tool: String,
    /// When (RFC 3339, seconds).
    pub at: String,
}

impl TaintedSession {
    /// `GET /taint`'s view: the stored record without its key.
    pub fn view(&self) -> serde_json::Value {
        serde_json::json!({
            "agent": self.agent,
            "session": self.session,
            "labels": self.labels,
        })
    }
}

fn key_of(agent: &str, session: &str) -> String {
    format!("{}:{agent}{session}", agent.len())
}

#[derive(Debug, thiserror::Error)]
pub enum TaintError {
    #[error("taint store: {0}")]
    Store(#[from] StoreError),
    #[error("taint tracker unavailable: {0}")]
    Unavailable(String),
}

impl From<MailboxError> for TaintError {
    fn from(e: MailboxError) -> Self {
        TaintError::Unavailable(e.to_string())
    }
}

#[derive(Message)]
#[rtype(result = "Arc<[Arc<str>]>")]
struct Labels {
    key: String,
}

#[derive(Message)]
#[rtype(result = "Result<(), TaintError>")]
struct Mark {
    agent: String,
    session: String,
    labels: Vec<Arc<str>>,
    tool: String,
}

#[derive(Message)]
#[rtype(result = "Vec<TaintedSession>")]
struct List {
    agent: Option<String>,
    limit: usize,
}

#[derive(Message)]
#[rtype(result = "Result<Option<TaintedSession>, TaintError>")]
struct Clear {
    key: String,
}

/// What `/metrics` shows of the labelled sessions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaintStats {
    /// Labelled sessions kept now.
    pub sessions: usize,
    /// Labelled sessions forgotten (least recently used) past `max_sessions` since start-up.
    pub forgotten: u64,
}

#[derive(Debug, Message)]
#[rtype(result = "TaintStats")]
struct Stats;

/// Handle to the taint actor. Cloning is cheap.
#[derive(Clone)]
pub struct Taint {
    addr: Addr<TaintActor>,
}

impl std::fmt::Debug for Taint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Taint").finish_non_exhaustive()
    }
}

impl Taint {
    /// Loads the labelled sessions from the store (none: memory only) and starts the actor on
    /// the current arbiter; call it inside a running actix `System`. Blocks on the store's
    /// file I/O when sessions beyond `max_sessions` must be forgotten: start-up only.
    pub fn start(
        store: Option<Store>,
        max_sessions: usize,
        clock: Clock,
        mailbox: usize,
    ) -> Result<Taint, TaintError> {
        let capacity = NonZeroUsize::new(max_sessions).unwrap_or(NonZeroUsize::MIN);
        let rows: Vec<Row<TaintedSession>> = match &store {
            Some(store) => store.load_taint()?,
            None => Vec::new(),
        };
        let seq = rows.iter().map(|r| r.seq).max().unwrap_or(0);
        let mut sessions = LruCache::new(capacity);
        let mut forgotten = Vec::new();
        // Oldest first, so the most recently labelled end up the most recently used.
        for row in rows {
            let mut record = row.record;
            record.id = key_of(&record.agent, &record.session);
            let entry = Entry {
                seq: row.seq,
                ..Entry::new(record)
            };
            if let Some((key, _)) = sessions.push(entry.record.id.clone(), entry)
                && !sessions.contains(&key)
            {
                forgotten.push(key);
            }
        }
        if let Some(store) = &store {
            let change = Change::<TaintedSession> {
                puts: Vec::new(),
                deletes: forgotten.iter().map(String::as_str).collect(),
            };
            store.write_taint(&change)?.durable_now()?;
        }
        let actor = TaintActor {
            forgotten: forgotten.len() as u64,
            sessions,
            store,
            clock,
            mailbox: mailbox.max(1),
            seq,
        };
        Ok(Taint {
            addr: actor.start(),
        })
    }

    /// How many sessions are labelled and how many were forgotten; zeros when the tracker
    /// cannot answer.
    pub async fn stats(&self) -> TaintStats {
        self.addr.send(Stats).await.unwrap_or_default()
    }

    /// The labels of `agent`'s `session` (empty when it has none).
    pub async fn labels(&self, agent: &str, session: &str) -> Result<Arc<[Arc<str>]>, TaintError> {
        let key = key_of(agent, session);
        Ok(self.addr.send(Labels { key }).await?)
    }

    /// Puts `labels` on `agent`'s `session`, given by a call of `tool`; returns once durable.
    pub async fn mark(
        &self,
        agent: &str,
        session: &str,
        labels: Vec<Arc<str>>,
        tool: &str,
    ) -> Result<(), TaintError> {
        let mark = Mark {
            agent: agent.to_owned(),
            session: session.to_owned(),
            labels,
            tool: tool.to_owned(),
        };
        self.addr.send(mark).await?
    }

    /// The labelled sessions (of `agent`, when given), the most recently used first, at most
    /// `limit`.
    pub async fn list(
        &self,
        agent: Option<&str>,
        limit: usize,
    ) -> Result<Vec<TaintedSession>, TaintError> {
        let agent = agent.map(str::to_owned);
        Ok(self.addr.send(List { agent, limit }).await?)
    }

    /// Removes every label of `agent`'s `session`; `None` when it had none.
    pub async fn clear(
        &self,
        agent: &str,
        session: &str,
    ) -> Result<Option<TaintedSession>, TaintError> {
        let key = key_of(agent, session);
        self.addr.send(Clear { key }).await?
    }
}

struct Entry {
    record: TaintedSession,
    /// The labels alone, handed to every call of the session.
    labels: Arc<[Arc<str>]>,
    /// The creation order of the record in the store.
    seq: u64,
}

impl Entry {
    fn new(record: TaintedSession) -> Entry {
        Entry {
            labels: labels_of(&record),
            record,
            seq: 0,
        }
    }
}

fn labels_of(record: &TaintedSession) -> Arc<[Arc<str>]> {
    record
        .labels
        .iter()
        .map(|l| Arc::from(l.label.as_str()))
        .collect()
}

struct TaintActor {
    sessions: LruCache<String, Entry>,
    /// Labelled sessions forgotten past `max_sessions` since start-up (at start-up included).
    forgotten: u64,
    store: Option<Store>,
    clock: Clock,
    mailbox: usize,
    /// The creation order of the last record written.
    seq: u64,
}

impl Actor for TaintActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.mailbox);
    }
}

impl Handler<Labels> for TaintActor {
    type Result = MessageResult<Labels>;

    fn handle(&mut self, Labels { key }: Labels, _: &mut Context<Self>) -> Self::Result {
        MessageResult(match self.sessions.get(&key) {
            Some(entry) => entry.labels.clone(),
            None => Arc::from([]),
        })
    }
}

impl Handler<Mark> for TaintActor {
    type Result = ResponseFuture<Result<(), TaintError>>;

    fn handle(&mut self, mark: Mark, _: &mut Context<Self>) -> Self::Result {
        let flush = self.mark(mark);
        Box::pin(async move { Ok(flush?.durable().await?) })
    }
}

impl Handler<Stats> for TaintActor {
    type Result = MessageResult<Stats>;

    fn handle(&mut self, _: Stats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(TaintStats {
            sessions: self.sessions.len(),
            forgotten: self.forgotten,
        })
    }
}

impl Handler<List> for TaintActor {
    type Result = Vec<TaintedSession>;

    fn handle(&mut self, List { agent, limit }: List, _: &mut Context<Self>) -> Self::Result {
        self.sessions
            .iter()
            .map(|(_, e)| &e.record)
            .filter(|r| agent.as_ref().is_none_or(|a| *a == r.agent))
            .take(limit)
            .cloned()
            .collect()
    }
}

impl Handler<Clear> for TaintActor {
    type Result = ResponseFuture<Result<Option<TaintedSession>, TaintError>>;

    fn handle(&mut self, Clear { key }: Clear, _: &mut Context<Self>) -> Self::Result {
        let Some(entry) = self.sessions.pop(&key) else {
            return Box::pin(async { Ok(None) });
        };
        let flush = self.write(None, Some(&key));
        Box::pin(async move {
            flush?.durable().await?;
            Ok(Some(entry.record))
        })
    }
}

impl TaintActor {
    /// Applies a mark in memory and in the store; the flush makes it durable.
    fn mark(&mut self, mark: Mark) -> Result<Flush, TaintError> {
        let key = key_of(&mark.agent, &mark.session);
        let at = rfc3339_secs(self.clock.wall());
        let mut entry = match self.sessions.pop(&key) {
            Some(entry) => entry,
            None => {
                self.seq += 1;
                Entry {
                    seq: self.seq,
                    ..Entry::new(TaintedSession {
                        id: key.clone(),
                        agent: mark.agent,
                        session: mark.session,
                        labels: Vec::new(),
                    })
                }
            }
        };
        let mut added = false;
        for label in &mark.labels {
            if entry.labels.iter().any(|l| l == label) {
                continue;
            }
            entry.record.labels.push(TaintLabel {
                label: label.to_string(),
                tool: mark.tool.clone(),
                at: at.clone(),
            });
            added = true;
        }
        if !added {
            self.sessions.push(key, entry);
            return Ok(Flush::none());
        }
        entry.labels = labels_of(&entry.record);
        let evicted = self.sessions.push(key.clone(), entry);
        let evicted = evicted.filter(|(k, _)| *k != key).map(|(k, _)| k);
        if evicted.is_some() {
            self.forgotten += 1;
        }
        self.write(Some(&key), evicted.as_deref())
    }

    /// Writes the record of `put` (a key in `sessions`) and deletes `delete`, in one batch.
    fn write(&self, put: Option<&str>, delete: Option<&str>) -> Result<Flush, TaintError> {
        let Some(store) = &self.store else {
            return Ok(Flush::none());
        };
        let put = put.and_then(|k| self.sessions.peek(k));
        let change = Change {
            puts: put.map(|e| (e.seq, &e.record)).into_iter().collect(),
            deletes: delete.into_iter().collect(),
        };
        Ok(store.write_taint(&change)?)
    }
}

#[cfg(test)]
mod tests;
