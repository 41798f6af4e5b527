//! The mem7 client behind the `Memory` handle: Level-1 auto-approve from past decisions, and
//! the write-back of every decision (flux7 §5.4–5.5).
//!
//! mem7 speaks JSON-RPC at `POST {url}/rpc`, MCP style: `tools/call` with `memory_search` and
//! `memory_store`. A search answers `{"content":[{"type":"text","text":…}]}` whose text holds
//! the matching facts' values, one per line; that is the only format read here.
//!
//! Invariants:
//! - mem7 can only add approvals: a call it does not approve goes to the normal approval flow,
//!   and so does every failure (down, slow, an error, a malformed answer). It never denies.
//! - A consultation never takes longer than `timeout` (3 s by default), mailbox wait included.
//! - Only decisions for this exact tool and agent count, and only human (or supervisor)
//!   decisions: mesh7's own auto-approvals are written as `auto-approved by …` with the tag
//!   `auto`, so they never count toward the next one. A call whose arguments look like a prompt
//!   injection is never auto-approved.
//! - Writes are fire and forget: a bounded queue (`QUEUE`), at most `WRITES_IN_FLIGHT` at once,
//!   each bounded by `WRITE_TIMEOUT`. A full queue drops the write, counted as failed.
//! - Values are written on one line, with the ` — ` separator reserved for the agent part, so a
//!   reason or a resolver name cannot forge a decision line.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::{
    Actor, ActorFutureExt, AsyncContext, Context, Handler, Message, Recipient, ResponseFuture,
    WrapFuture,
};
use serde_json::{Value, json};

use crate::approvals::{ApprovalRecord, ApprovalStatus};
use crate::supervisor::injection_risk;

/// How long a consultation may take by default (flux7's client timeout).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one write may take (flux7).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Prior approvals needed when `supervisor.min_approvals` is 0 or absent.
pub const DEFAULT_MIN_APPROVALS: usize = 3;
/// Writes waiting to be sent; past this, new ones are dropped (and counted as failed).
pub const QUEUE: usize = 256;
/// Writes sent at once.
const WRITES_IN_FLIGHT: usize = 4;
/// Facts asked for per search (flux7 asked for 10, so a threshold above 10 never triggered).
const SEARCH_LIMIT: usize = 50;
/// The `agent` of every fact mesh7 writes (flux7's writer name, kept for shared memories).
pub const WRITER_AGENT: &str = "flux7-mesh";
/// The rule of an auto-approved call, and the resolver of its fact.
pub const RULE: &str = "supervisor:mem7";
/// Tag of the facts of auto-approvals.
pub const AUTO_TAG: &str = "auto";

// ---------------------------------------------------------------------------------------------
// Types

#[derive(Debug, Clone)]
pub struct MemorySettings {
    /// `memory.url`, without `/rpc`.
    pub url: String,
    /// `memory.token`: sent as a bearer token.
    pub token: Option<String>,
    /// `memory.timeout`: the longest consultation.
    pub timeout: Duration,
    /// `supervisor.min_approvals`.
    pub min_approvals: usize,
    pub mailbox: usize,
}

/// What became of one write, for the `/metrics` counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteEvent {
    Attempted,
    Succeeded,
    Failed,
}

/// Counts writes; called from the actor's thread, so it must not block.
pub type WriteObserver = Arc<dyn Fn(WriteEvent) + Send + Sync>;

/// How a fact's decision went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Approved,
    Denied,
    TimedOut,
    /// Approved by mesh7 from earlier decisions: never counted as an approval.
    AutoApproved,
}

/// One decision as mem7 stores it (flux7 §5.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionFact {
    /// The approval id, or a fresh one for an auto-approval.
    pub id: String,
    pub agent: String,
    pub tool: String,
    pub outcome: Outcome,
    pub resolved_by: String,
    pub reasoning: String,
}

impl DecisionFact {
    /// The fact of a resolved approval; `None` while it is pending.
    pub fn of_resolution(r: &ApprovalRecord) -> Option<DecisionFact> {
        let outcome = match r.status {
            ApprovalStatus::Pending => return None,
            ApprovalStatus::Approved => Outcome::Approved,
            ApprovalStatus::Denied => Outcome::Denied,
            ApprovalStatus::Timeout => Outcome::TimedOut,
        };
        Some(DecisionFact {
            id: r.id.clone(),
            agent: r.agent_id.clone(),
            tool: r.tool.clone(),
            outcome,
            resolved_by: r.resolved_by.clone(),
            reasoning: r.reasoning.clone(),
        })
    }

    /// The fact of a call mesh7 approved from memory.
    pub fn auto_approved(agent: &str, tool: &str) -> DecisionFact {
        DecisionFact {
            id: hex::encode(rand::random::<[u8; 8]>()),
            agent: agent.to_owned(),
            tool: tool.to_owned(),
            outcome: Outcome::AutoApproved,
            resolved_by: RULE.to_owned(),
            reasoning: String::new(),
        }
    }

    pub fn key(&self) -> String {
        format!("decision.{}.{}", self.tool, self.id)
    }

    /// `<approved|rejected|timed out|auto-approved> by <who> — agent:<a> tool:<t>[ reason:<r>]`.
    pub fn value(&self) -> String {
        let verb = match self.outcome {
            Outcome::Approved => "approved",
            Outcome::Denied => "rejected",
            Outcome::TimedOut => "timed out",
            Outcome::AutoApproved => "auto-approved",
        };
        let mut value = format!(
            "{verb} by {} — agent:{} tool:{}",
            one_line(&self.resolved_by),
            one_line(&self.agent),
            one_line(&self.tool)
        );
        if !self.reasoning.is_empty() {
            value.push_str(" reason:");
            value.push_str(&one_line(&self.reasoning));
        }
        value
    }

    /// `["decision", <approved|denied|timeout>, <tool>, "agent:<a>"]`, plus `auto` for an
    /// auto-approval; the agent tag is left out when the agent id is empty (flux7).
    pub fn tags(&self) -> Vec<String> {
        let status = match self.outcome {
            Outcome::Approved | Outcome::AutoApproved => "approved",
            Outcome::Denied => "denied",
            Outcome::TimedOut => "timeout",
        };
        let mut tags = vec!["decision".to_owned(), status.to_owned(), self.tool.clone()];
        if !self.agent.is_empty() {
            tags.push(format!("agent:{}", self.agent));
        }
        if self.outcome == Outcome::AutoApproved {
            tags.push(AUTO_TAG.to_owned());
        }
        tags
    }
}

/// Folds a value onto one line and keeps the em-dash separator for the agent part.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\n' | '\r' => ' ',
            '—' => '-',
            c => c,
        })
        .collect()
}

/// What mem7's memory says about a call that needs approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recall {
    /// Enough earlier approvals and no rejection: approve now.
    Approve { approvals: usize },
    /// Ask a human as usual; `reason` says why (for logs).
    Escalate { reason: String },
}

impl Recall {
    /// The trace reason of an auto-approval: `mem7: <n> prior approvals, 0 rejections`.
    pub fn approval_reason(approvals: usize) -> String {
        format!("mem7: {approvals} prior approvals, 0 rejections")
    }
}

// ---------------------------------------------------------------------------------------------
// Messages

#[derive(Debug, Message)]
#[rtype(result = "Recall")]
struct Consult {
    agent: String,
    tool: String,
}

#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Remember(DecisionFact);

// ---------------------------------------------------------------------------------------------
// The handle

/// The mem7 client. Cloning is cheap.
#[derive(Clone)]
pub struct Memory {
    consult: Recipient<Consult>,
    remember: Recipient<Remember>,
    timeout: Duration,
    observer: WriteObserver,
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memory").finish_non_exhaustive()
    }
}

impl Memory {
    /// Starts the client on the current arbiter (inside an actix `System`); `observer` counts
    /// the writes.
    pub fn start(settings: MemorySettings, observer: WriteObserver) -> Result<Memory, String> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(|e| format!("cannot build the mem7 client: {e}"))?;
        let timeout = settings.timeout;
        let actor = MemoryActor {
            rpc_url: format!("{}/rpc", settings.url.trim_end_matches('/')),
            token: settings.token.filter(|t| !t.is_empty()),
            timeout,
            min_approvals: settings.min_approvals.max(1),
            mailbox: settings.mailbox.max(1),
            client,
            next_id: 0,
            queue: VecDeque::new(),
            in_flight: 0,
            observer: observer.clone(),
        };
        let addr = actor.start();
        Ok(Memory {
            consult: addr.clone().recipient(),
            remember: addr.recipient(),
            timeout,
            observer,
        })
    }

    /// Level 1: asks mem7 whether this call was approved often enough before. Any failure, and
    /// a call whose arguments look like a prompt injection, escalate.
    pub async fn auto_approve(&self, agent: &str, tool: &str, params: &Value) -> Recall {
        if injection_risk(params) {
            return escalate("injection risk in the arguments".to_owned());
        }
        let consult = Consult {
            agent: agent.to_owned(),
            tool: tool.to_owned(),
        };
        // The HTTP timeout bounds the query; this also bounds a full mailbox.
        match tokio::time::timeout(self.timeout, self.consult.send(consult)).await {
            Ok(Ok(recall)) => recall,
            Ok(Err(e)) => escalate(format!("mem7 client unavailable: {e}")),
            Err(_) => escalate(format!("mem7 did not answer within {:?}", self.timeout)),
        }
    }

    /// Queues the write of a decision; never waits. A full queue drops it (counted as failed).
    pub fn remember(&self, fact: DecisionFact) {
        if let Err(e) = self.remember.try_send(Remember(fact)) {
            (self.observer)(WriteEvent::Attempted);
            (self.observer)(WriteEvent::Failed);
            tracing::warn!(error = %e, "mem7 decision write dropped");
        }
    }
}

fn escalate(reason: String) -> Recall {
    tracing::debug!(%reason, "mem7 auto-approve escalates");
    Recall::Escalate { reason }
}

// ---------------------------------------------------------------------------------------------
// The actor

struct MemoryActor {
    rpc_url: String,
    token: Option<String>,
    timeout: Duration,
    min_approvals: usize,
    mailbox: usize,
    client: reqwest::Client,
    /// JSON-RPC request ids.
    next_id: u64,
    /// Writes not sent yet.
    queue: VecDeque<DecisionFact>,
    in_flight: usize,
    observer: WriteObserver,
}

impl Actor for MemoryActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.mailbox);
    }
}

impl MemoryActor {
    fn request_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Sends queued writes while fewer than `WRITES_IN_FLIGHT` are out.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        while self.in_flight < WRITES_IN_FLIGHT {
            let Some(fact) = self.queue.pop_front() else {
                return;
            };
            self.in_flight += 1;
            (self.observer)(WriteEvent::Attempted);
            let body = store_request(self.request_id(), &fact);
            let call = rpc(&self.client, &self.rpc_url, self.token.as_deref(), &body);
            let sent = async move { tokio::time::timeout(WRITE_TIMEOUT, call).await };
            ctx.spawn(sent.into_actor(self).map(move |outcome, act, ctx| {
                act.in_flight -= 1;
                match outcome {
                    Ok(Ok(_)) => (act.observer)(WriteEvent::Succeeded),
                    Ok(Err(e)) => act.write_failed(&fact, &e),
                    Err(_) => act.write_failed(&fact, "timed out"),
                }
                act.pump(ctx);
            }));
        }
    }

    fn write_failed(&self, fact: &DecisionFact, error: &str) {
        (self.observer)(WriteEvent::Failed);
        tracing::warn!(key = %fact.key(), %error, "mem7 decision write failed");
    }
}

impl Handler<Consult> for MemoryActor {
    type Result = ResponseFuture<Recall>;

    fn handle(&mut self, msg: Consult, _: &mut Context<Self>) -> Self::Result {
        let body = search_request(self.request_id(), &msg.agent, &msg.tool, self.min_approvals);
        let call = rpc(&self.client, &self.rpc_url, self.token.as_deref(), &body);
        let (timeout, min) = (self.timeout, self.min_approvals);
        Box::pin(async move {
            match tokio::time::timeout(timeout, call).await {
                Ok(Ok(text)) => judge(tally(&text, &msg.agent, &msg.tool), min),
                Ok(Err(e)) => escalate(format!("mem7 search failed: {e}")),
                Err(_) => escalate(format!("mem7 did not answer within {timeout:?}")),
            }
        })
    }
}

impl Handler<Remember> for MemoryActor {
    type Result = ();

    fn handle(&mut self, msg: Remember, ctx: &mut Context<Self>) {
        if self.queue.len() >= QUEUE {
            (self.observer)(WriteEvent::Attempted);
            self.write_failed(&msg.0, "write queue full");
            return;
        }
        self.queue.push_back(msg.0);
        self.pump(ctx);
    }
}

/// One `tools/call` to mem7; the text of its result, or why there is none.
fn rpc(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: &Value,
) -> impl Future<Output = Result<String, String>> + 'static {
    let mut request = client.post(url).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    async move {
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        if status.as_u16() >= 400 {
            return Err(format!("status {status}"));
        }
        let bytes = response.bytes().await.map_err(|e| e.to_string())?;
        result_text(&bytes)
    }
}

// ---------------------------------------------------------------------------------------------
// The pure core

/// The `memory_search` request for a call (flux7's query: `<tool> <agent>`).
pub fn search_request(id: u64, agent: &str, tool: &str, min_approvals: usize) -> Value {
    let query = if agent.is_empty() {
        tool.to_owned()
    } else {
        format!("{tool} {agent}")
    };
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": "tools/call",
        "params": {
            "name": "memory_search",
            "arguments": {
                "query": query,
                "tags": ["decision"],
                "limit": SEARCH_LIMIT.max(min_approvals.saturating_mul(2)),
            },
        },
    })
}

/// The `memory_store` request of a decision (flux7 §5.5).
pub fn store_request(id: u64, fact: &DecisionFact) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": "tools/call",
        "params": {
            "name": "memory_store",
            "arguments": {
                "key": fact.key(),
                "value": fact.value(),
                "tags": fact.tags(),
                "agent": WRITER_AGENT,
            },
        },
    })
}

/// The text of a `tools/call` answer: the first `result.content[]` item of type `text`. A
/// JSON-RPC error, `isError: true` or any other shape is an error.
pub fn result_text(body: &[u8]) -> Result<String, String> {
    let answer: Value =
        serde_json::from_slice(body).map_err(|e| format!("malformed answer: {e}"))?;
    if let Some(error) = answer.get("error") {
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("(no message)");
        return Err(format!("error answer: {message}"));
    }
    let result = answer
        .get("result")
        .ok_or_else(|| "malformed answer: no result".to_owned())?;
    if result.get("isError").and_then(Value::as_bool) == Some(true) {
        return Err("the tool reported an error".to_owned());
    }
    result
        .get("content")
        .and_then(Value::as_array)
        .and_then(|items| {
            items
                .iter()
                .find(|item| item.get("type").and_then(Value::as_str) == Some("text"))
        })
        .and_then(|item| item.get("text").and_then(Value::as_str))
        .map(str::to_owned)
        .ok_or_else(|| "malformed answer: no text content".to_owned())
}

/// Decisions found for one (agent, tool).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub approvals: usize,
    pub rejections: usize,
}

/// Counts the decision lines about exactly this agent and tool. `approved by …` is an
/// approval and `rejected by …` a rejection (prefixes compared case-insensitively, as flux7);
/// `auto-approved by …` and `timed out by …` are neither.
pub fn tally(text: &str, agent: &str, tool: &str) -> Tally {
    let subject = format!("{agent} tool:{tool}");
    let mut t = Tally::default();
    for line in text.lines().map(str::trim) {
        let about_this_call = line.split_once(" — agent:").is_some_and(|(_, rest)| {
            rest == subject || rest.starts_with(&format!("{subject} reason:"))
        });
        if !about_this_call {
            continue;
        }
        if starts_with_ignore_case(line, "approved by ") {
            t.approvals += 1;
        } else if starts_with_ignore_case(line, "rejected by ") {
            t.rejections += 1;
        }
    }
    t
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

/// Level 1's rule: at least `min` approvals and no rejection.
pub fn judge(t: Tally, min: usize) -> Recall {
    if t.rejections > 0 {
        return escalate(format!(
            "mem7: {} approvals, {} rejections — escalating",
            t.approvals, t.rejections
        ));
    }
    if t.approvals >= min {
        return Recall::Approve {
            approvals: t.approvals,
        };
    }
    escalate(format!(
        "mem7: {} approvals (need {min}) — escalating",
        t.approvals
    ))
}

#[cfg(test)]
mod tests;
