//! Per-agent rate limiting (`rate_limit` of a policy) and loop detection, behind the `RateLimit`
//! handle.
//!
//! Invariants:
//! - Checks run in flux7's order: lifetime budget (`max_total`), sliding minute
//!   (`max_per_minute`), then the session's budget (`max_per_session`, mesh7), loop detection.
//!   The first failure wins; a refused call is never recorded.
//! - Counters are keyed by agent, shared by all of its tools and policies; session counts by
//!   (agent, session), kept only for calls under a policy with `max_per_session`.
//! - Loop detection applies to every call when enabled, whether or not the policy has a
//!   `rate_limit`. With `halt_after`, exactly one of an agent's loop refusals inside the window
//!   (the `halt_after`-th; the count then starts over) says to escalate.
//! - Memory is bounded whatever the call rate: at most `max_agents` recent windows (the least
//!   recently seen agent is evicted), each holding at most 61 one-second buckets and a capped loop
//!   history. Lifetime totals live apart and are never evicted, so `max_total` never resets; at
//!   most `max_tracked_totals` of them exist and a new agent beyond that is refused (fail closed).
//!   At most `max_agents` session counts are kept, the least recently used forgotten: sessions
//!   come and go, so refusing new ones once full would stop every agent for good.
//! - All time comes from the injected `Clock`.

use std::collections::{HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use actix::{Actor, Addr, Arbiter, Context, Handler, MailboxError, Message};
use lru::LruCache;
use mesh7_config::{LoopDetectionConfig, RateLimitConfig, RateLimiterConfig};

use crate::clock::Clock;

/// Loop entries kept per agent (flux7 kept 50); raised to `max_repeats` when that is larger so a
/// loop can always be seen.
const LOOP_HISTORY: usize = 50;
/// Length of the sliding window of `max_per_minute`, in whole seconds.
const MINUTE_SECS: u64 = 60;

/// Loop detection settings, from the `loop_detection` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopSettings {
    pub enabled: bool,
    /// Identical calls allowed inside the window; the next one is refused.
    pub max_repeats: u32,
    pub window: Duration,
    /// Loop refusals of one agent inside the window that escalate to a halt; 0: never.
    pub halt_after: u32,
}

impl Default for LoopSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            max_repeats: 3,
            window: Duration::from_secs(10),
            halt_after: 0,
        }
    }
}

impl LoopSettings {
    pub fn from_config(config: &LoopDetectionConfig) -> Result<LoopSettings, String> {
        let window = mesh7_config::duration::parse(&config.window).map_err(|e| {
            format!(
                "loop_detection.window: invalid duration {:?}: {e}",
                config.window
            )
        })?;
        Ok(LoopSettings {
            enabled: config.enabled,
            max_repeats: config.max_repeats,
            window,
            halt_after: config.halt_after,
        })
    }
}

/// Asks to make one call: checks the limits and, when `record` is true and every check passes,
/// counts the call.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), RateLimitError>")]
pub struct Acquire {
    pub agent: Arc<str>,
    pub tool: Arc<str>,
    /// `fingerprint(&args)` of the call's arguments.
    pub fingerprint: u64,
    /// The `rate_limit` of the policy that governs the call, if it has one.
    pub limits: Option<RateLimitConfig>,
    /// The call's session, when its `rate_limit` has a `max_per_session` (else not counted).
    pub session: Option<Arc<str>>,
    /// False to check without counting.
    pub record: bool,
}

/// Why a call was refused. The texts are flux7's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Limited {
    #[error("rate_limit: agent \"{agent}\" exceeded total budget ({max_total} calls)")]
    TotalBudget { agent: Arc<str>, max_total: u64 },
    #[error("rate_limit: agent \"{agent}\" exceeded {max} calls/min")]
    PerMinute { agent: Arc<str>, max: u64 },
    #[error(
        "loop_detected: agent \"{agent}\" called {tool} with same params {count} times in {window_secs}s"
    )]
    Loop {
        agent: Arc<str>,
        tool: Arc<str>,
        count: u32,
        window_secs: u64,
        /// This refusal is the agent's `halt_after`-th inside the window: the caller halts it.
        escalate: bool,
    },
    #[error(
        "rate_limit: agent \"{agent}\" exceeded its budget of {max} calls in session \"{session}\""
    )]
    SessionBudget {
        agent: Arc<str>,
        session: Arc<str>,
        max: u64,
    },
    #[error("rate_limit: limiter is tracking too many agents (fail closed)")]
    Capacity,
}

impl Limited {
    pub fn is_loop(&self) -> bool {
        matches!(self, Limited::Loop { .. })
    }

    /// A loop refusal that should halt the looping agent's session (`halt_after`).
    pub fn escalates(&self) -> bool {
        matches!(self, Limited::Loop { escalate: true, .. })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RateLimitError {
    #[error(transparent)]
    Limited(Limited),
    #[error("rate limiter unavailable: {0}")]
    Unavailable(String),
}

impl From<MailboxError> for RateLimitError {
    fn from(e: MailboxError) -> Self {
        RateLimitError::Unavailable(e.to_string())
    }
}

/// A hash of the arguments that ignores object key order, so `{"a":1,"b":2}` and
/// `{"b":2,"a":1}` are the same call. Stable within a process. It runs on every call, so it
/// allocates nothing: an object is the sum of its entries' own hashes (order-free without
/// sorting keys), and numbers hash their value, not their text.
pub fn fingerprint(args: &serde_json::Value) -> u64 {
    let mut hasher = DefaultHasher::new();
    hash_canonical(args, &mut hasher);
    hasher.finish()
}

fn hash_canonical(value: &serde_json::Value, h: &mut DefaultHasher) {
    use serde_json::Value;
    // A tag per variant and lengths before contents keep distinct structures from colliding
    // by concatenation.
    match value {
        Value::Null => 0u8.hash(h),
        Value::Bool(b) => (1u8, b).hash(h),
        Value::Number(n) => {
            2u8.hash(h);
            // `1` and `1.0` stay apart, as their JSON texts do.
            if let Some(i) = n.as_i64() {
                (0u8, i).hash(h);
            } else if let Some(u) = n.as_u64() {
                (1u8, u).hash(h);
            } else {
                (2u8, n.as_f64().map(f64::to_bits)).hash(h);
            }
        }
        Value::String(s) => (3u8, s).hash(h),
        Value::Array(items) => {
            (4u8, items.len()).hash(h);
            for item in items {
                hash_canonical(item, h);
            }
        }
        Value::Object(map) => {
            let entries = map.iter().fold(0u64, |sum, (key, item)| {
                let mut entry = DefaultHasher::new();
                key.hash(&mut entry);
                hash_canonical(item, &mut entry);
                sum.wrapping_add(entry.finish())
            });
            (5u8, map.len(), entries).hash(h);
        }
    }
}

/// The cloneable handle of the rate limiter.
///
/// The limiter is a pool of `RateLimitActor`s sharing one set of counters, like the executors of
/// an actix `SyncArbiter`: the first actor starts on the arbiter that calls `start` (its *home*),
/// and the first call made from any other arbiter (each HTTP worker has its own) starts one there.
/// A call's `Acquire` goes to the actor of its own arbiter, so the message never crosses threads:
/// no wake-up of another thread per call, which is what a single limiter thread cost (measured
/// in docs/benchmarks.md). A call from a thread without an arbiter goes to the home actor.
///
/// Each actor checks and records a call under the counters' lock, so check-and-record is atomic
/// per call across the pool, and calls sent from one arbiter are counted in the order sent.
/// When the home actor ends, the limiter is closed: calls waiting in its mailbox and every later
/// call, through any actor, are refused (`Unavailable`), never let through.
#[derive(Clone)]
pub struct RateLimit {
    shared: Arc<Shared>,
}

/// What the handle and every actor of the pool share.
struct Shared {
    core: Mutex<Limiter>,
    clock: Clock,
    mailbox: usize,
    /// Set when the home actor ends.
    closed: AtomicBool,
    home: Addr<RateLimitActor>,
    /// The actor of each arbiter thread that has called, its home included. One entry per
    /// arbiter thread (the HTTP workers and the main one), so it stays small.
    actors: Mutex<HashMap<ThreadId, Addr<RateLimitActor>>>,
}

impl RateLimit {
    /// Starts the limiter's home actor on the current arbiter; call it inside a running actix
    /// System.
    pub fn start(
        limiter: &RateLimiterConfig,
        loops: LoopSettings,
        clock: Clock,
        mailbox: usize,
    ) -> RateLimit {
        let shared = Arc::new_cyclic(|weak: &Weak<Shared>| {
            let home = RateLimitActor {
                shared: weak.clone(),
                home: true,
            }
            .start();
            Shared {
                core: Mutex::new(Limiter::new(limiter, loops, clock.now())),
                clock,
                mailbox,
                closed: AtomicBool::new(false),
                actors: Mutex::new(HashMap::from([(thread::current().id(), home.clone())])),
                home,
            }
        });
        RateLimit { shared }
    }

    /// `Unavailable` means the limiter could not answer; the caller must refuse the call.
    pub async fn acquire(&self, req: Acquire) -> Result<(), RateLimitError> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(closed());
        }
        self.actor().send(req).await?
    }

    /// The calling arbiter's actor, started on first use; the home actor for a thread without
    /// an arbiter.
    fn actor(&self) -> Addr<RateLimitActor> {
        let id = thread::current().id();
        let mut actors = lock(&self.shared.actors);
        if let Some(actor) = actors.get(&id) {
            return actor.clone();
        }
        let Some(arbiter) = Arbiter::try_current() else {
            return self.shared.home.clone();
        };
        // Started through the arbiter's own queue, which works from any task of the thread
        // (`Actor::start` needs the arbiter's task set, which a `tokio::spawn`ed task is not in).
        let shared = Arc::downgrade(&self.shared);
        let actor = RateLimitActor::start_in_arbiter(&arbiter, move |_| RateLimitActor {
            shared,
            home: false,
        });
        actors.insert(id, actor.clone());
        actor
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn closed() -> RateLimitError {
    RateLimitError::Unavailable("the limiter has stopped".to_owned())
}

/// One actor of the pool. It holds the shared state weakly: the handles own it.
struct RateLimitActor {
    shared: Weak<Shared>,
    /// The actor started by `RateLimit::start`, whose end closes the limiter.
    home: bool,
}

impl Actor for RateLimitActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(shared) = self.shared.upgrade() {
            ctx.set_mailbox_capacity(shared.mailbox.max(1));
        }
    }
}

impl Handler<Acquire> for RateLimitActor {
    type Result = Result<(), RateLimitError>;

    fn handle(&mut self, req: Acquire, _: &mut Self::Context) -> Self::Result {
        let shared = self.shared.upgrade().ok_or_else(closed)?;
        if shared.closed.load(Ordering::Acquire) {
            return Err(closed());
        }
        let now = shared.clock.now();
        lock(&shared.core)
            .acquire(&req, now)
            .map_err(RateLimitError::Limited)
    }
}

impl Drop for RateLimitActor {
    /// However the home actor ends (stopped, or its arbiter gone), later calls through any actor
    /// are refused at once; those waiting in its mailbox get `Unavailable` as it is dropped.
    fn drop(&mut self) {
        if let (true, Some(shared)) = (self.home, self.shared.upgrade()) {
            shared.closed.store(true, Ordering::Release);
        }
    }
}

/// The pure core: all counters, no actix.
struct Limiter {
    /// Origin of the one-second buckets.
    epoch: Instant,
    recent: LruCache<Arc<str>, Recent>,
    totals: HashMap<Arc<str>, u64>,
    /// Calls so far by (agent, hash of the session id), for `max_per_session`: a session id is
    /// whatever a client sends, so only its hash is kept.
    sessions: LruCache<(Arc<str>, u64), u64>,
    max_totals: usize,
    loops: LoopSettings,
    loop_history: usize,
}

/// An agent's recent calls: what the minute window and the loop window need, nothing older.
#[derive(Default)]
struct Recent {
    /// (second since epoch, calls recorded in that second), oldest first.
    minute: VecDeque<(u64, u64)>,
    loops: VecDeque<LoopEntry>,
    /// When its calls were refused as loops inside the window (at most `halt_after`).
    refusals: VecDeque<Instant>,
}

struct LoopEntry {
    at: Instant,
    tool: Arc<str>,
    fingerprint: u64,
}

impl Limiter {
    fn new(config: &RateLimiterConfig, loops: LoopSettings, epoch: Instant) -> Limiter {
        let max_agents = NonZeroUsize::new(config.max_agents).unwrap_or(NonZeroUsize::MIN);
        let repeats = usize::try_from(loops.max_repeats).unwrap_or(usize::MAX);
        Limiter {
            epoch,
            recent: LruCache::new(max_agents),
            totals: HashMap::new(),
            sessions: LruCache::new(max_agents),
            max_totals: config.max_tracked_totals,
            loops,
            loop_history: LOOP_HISTORY.max(repeats),
        }
    }

    fn acquire(&mut self, req: &Acquire, now: Instant) -> Result<(), Limited> {
        let limits = req.limits.unwrap_or_default();
        self.check_total(&req.agent, limits.max_total)?;

        let second = now.saturating_duration_since(self.epoch).as_secs();
        let (last_minute, repeats) = match self.recent.get_mut(&req.agent) {
            Some(recent) => {
                recent.prune(second, now, self.loops.window);
                (
                    recent.calls_in_minute(),
                    recent.repeats(&req.tool, req.fingerprint),
                )
            }
            None => (0, 0),
        };
        if limits.max_per_minute > 0 && last_minute >= limits.max_per_minute {
            return Err(Limited::PerMinute {
                agent: req.agent.clone(),
                max: limits.max_per_minute,
            });
        }
        self.check_session(req, limits.max_per_session)?;
        if self.loops.enabled && repeats >= self.loops.max_repeats {
            return Err(Limited::Loop {
                agent: req.agent.clone(),
                tool: req.tool.clone(),
                count: repeats,
                window_secs: self.loops.window.as_secs(),
                escalate: self.refused_loop(&req.agent, now),
            });
        }

        if req.record {
            self.record(req, limits, second, now);
        }
        Ok(())
    }

    /// Counts a loop refusal of `agent` (whose recent calls are kept: it just repeated one);
    /// true when it is the `halt_after`-th inside the window, which starts the count over.
    fn refused_loop(&mut self, agent: &Arc<str>, now: Instant) -> bool {
        let halt_after = usize::try_from(self.loops.halt_after).unwrap_or(usize::MAX);
        let Some(recent) = self.recent.peek_mut(agent).filter(|_| halt_after > 0) else {
            return false;
        };
        recent.refusals.push_back(now);
        if recent.refusals.len() < halt_after {
            return false;
        }
        recent.refusals.clear();
        true
    }

    fn check_total(&self, agent: &Arc<str>, max_total: u64) -> Result<(), Limited> {
        if max_total == 0 {
            return Ok(());
        }
        match self.totals.get(agent) {
            Some(&used) if used >= max_total => Err(Limited::TotalBudget {
                agent: agent.clone(),
                max_total,
            }),
            Some(_) => Ok(()),
            None if self.totals.len() >= self.max_totals => Err(Limited::Capacity),
            None => Ok(()),
        }
    }

    fn check_session(&self, req: &Acquire, max: u64) -> Result<(), Limited> {
        let Some(session) = req.session.as_ref().filter(|_| max > 0) else {
            return Ok(());
        };
        match self.sessions.peek(&session_key(&req.agent, session)) {
            Some(&used) if used >= max => Err(Limited::SessionBudget {
                agent: req.agent.clone(),
                session: session.clone(),
                max,
            }),
            _ => Ok(()),
        }
    }

    fn record(&mut self, req: &Acquire, limits: RateLimitConfig, second: u64, now: Instant) {
        if let Some(session) = req.session.as_ref().filter(|_| limits.max_per_session > 0) {
            *self
                .sessions
                .get_or_insert_mut(session_key(&req.agent, session), || 0) += 1;
        }
        let recent = self
            .recent
            .get_or_insert_mut(req.agent.clone(), Recent::default);
        match recent.minute.back_mut() {
            Some((s, calls)) if *s == second => *calls += 1,
            _ => recent.minute.push_back((second, 1)),
        }
        if self.loops.enabled {
            recent.loops.push_back(LoopEntry {
                at: now,
                tool: req.tool.clone(),
                fingerprint: req.fingerprint,
            });
            while recent.loops.len() > self.loop_history {
                recent.loops.pop_front();
            }
        }
        // An agent already counted keeps counting under every policy; a new entry is made only
        // when a budget needs it, so agents without `max_total` cost nothing here.
        if let Some(used) = self.totals.get_mut(&req.agent) {
            *used += 1;
        } else if limits.max_total > 0 {
            self.totals.insert(req.agent.clone(), 1);
        }
    }
}

/// The key of a session's count: its agent and the hash of its id.
fn session_key(agent: &Arc<str>, session: &str) -> (Arc<str>, u64) {
    let mut hasher = DefaultHasher::new();
    session.hash(&mut hasher);
    (agent.clone(), hasher.finish())
}

impl Recent {
    fn prune(&mut self, second: u64, now: Instant, loop_window: Duration) {
        // A bucket leaves once every call in it is at least a minute old, i.e. between 60 and
        // 61 s after its first call: the count errs on the side of refusing.
        while self
            .minute
            .front()
            .is_some_and(|&(s, _)| s + MINUTE_SECS < second)
        {
            self.minute.pop_front();
        }
        while self
            .loops
            .front()
            .is_some_and(|e| now.saturating_duration_since(e.at) >= loop_window)
        {
            self.loops.pop_front();
        }
        while self
            .refusals
            .front()
            .is_some_and(|&at| now.saturating_duration_since(at) >= loop_window)
        {
            self.refusals.pop_front();
        }
    }

    fn calls_in_minute(&self) -> u64 {
        self.minute.iter().map(|&(_, calls)| calls).sum()
    }

    fn repeats(&self, tool: &str, fingerprint: u64) -> u32 {
        let n = self
            .loops
            .iter()
            .filter(|e| e.fingerprint == fingerprint && &*e.tool == tool)
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    #[cfg(test)]
    fn entries(&self) -> usize {
        self.minute.len() + self.loops.len() + self.refusals.len()
    }
}

#[cfg(test)]
mod tests;
