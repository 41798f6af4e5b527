//! The audit trail of governed calls (flux7 §8): a bounded in-memory ring that answers
//! `/traces`, `/sessions` and `/health`, mirrored line by line to an append-only JSONL file.
//!
//! Invariants:
//! - The writer runs on an `Arbiter` of its own, so file I/O never stalls another actor.
//! - Records are taken in batches: `record` appends to a shared queue and wakes the writer only
//!   when the queue was empty. A writer that has been idle for `BATCH_DELAY` takes the record
//!   at once; otherwise it lets the batch gather until `BATCH_DELAY` after its last batch, then
//!   writes and flushes it at once. So a lone call is on disk at once, and under load there is
//!   one wake-up and one write per batch instead of per record: what lets the writer keep up
//!   at full load on a small machine. Every read (queries, stats, flush, updates) first takes
//!   the waiting records, so it sees every record made before it was asked.
//! - No record is dropped: when `mailbox` records are waiting, `record` asks for the batch at
//!   once and waits until it is taken.
//! - Everything is bounded: the ring keeps the last `ring_size` entries, the file is renamed to
//!   `<file>.old` once it reaches `max_file_bytes`, and a loaded line longer than 1 MiB ends the
//!   load.
//! - A write error is logged and counted, never fatal: the ring still gets the entry.
//! - With `trace.hmac_key` every line is sealed as it is written: it carries the MAC of the line
//!   before it and its own (`chain`), and a new writer continues after the file's last sealed
//!   line, so `mesh7 verify-traces` finds any line edited, removed, inserted or moved.
//! - The file is only appended to. An update appends the whole entry again, and on reload the
//!   last line of a record wins. A record is its trace id *and* its timestamp, because a caller
//!   that propagates one `Traceparent` across calls gives them all the same trace id.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use actix::prelude::{
    Actor, Arbiter, ArbiterHandle, AsyncContext, Context, Handler, MailboxError, Message,
    MessageResult, Recipient, SendError,
};
use chrono::{DateTime, Datelike, FixedOffset, Timelike, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::Span;

use crate::clock::Clock;

/// A loaded line longer than this ends the load (the file is damaged past that point).
const MAX_LINE_BYTES: u64 = 1024 * 1024;
/// How long the writer lets records gather before it takes them (unless asked sooner).
const BATCH_DELAY: Duration = Duration::from_millis(5);

/// The file's write buffer: a batch of records is usually one `write`.
const WRITE_BUFFER_BYTES: usize = 128 * 1024;

// ---------------------------------------------------------------------------------------------
// Data

/// One governed call (flux7 §8.1 keys, in this order when serialized).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TraceEntry {
    pub trace_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub session_id: String,
    pub agent_id: String,
    pub tool: String,
    #[serde(default)]
    pub params: Value,
    /// `allow`, `deny`, `human_approval` or `rate_limited`.
    pub policy: String,
    pub policy_rule: String,
    pub status_code: u16,
    pub latency_ms: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// RFC 3339 UTC with trailing zeros of the fraction trimmed (see [`format_timestamp`]).
    pub timestamp: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub approval_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub approval_status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub approved_by: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub approval_ms: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub supervisor_reasoning: String,
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub supervisor_confidence: f64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub estimated_input_tokens: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub estimated_output_tokens: u64,
    /// `real` or `estimate`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tokens_source: String,
    /// `http`, `decide`, `mcp-stdio` or `mcp-http`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ingress: String,
    /// The name policy evaluated, when it differs from `tool` (CLI dispatch).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub effective_tool: String,
    /// What the policies would have decided with the `advisory` ones enforced (`allow`, `deny`
    /// or `human_approval`), when that differs from the decision enforced.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub shadow_policy: String,
    /// The policy behind `shadow_policy` (`default` when none matched).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub shadow_rule: String,
    /// mesh7: the labels the call's session carried when it was decided (`taint`); absent when
    /// no rule tested them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taint: Option<Vec<String>>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_zero_f64(n: &f64) -> bool {
    *n == 0.0
}

/// The outcome of an approval, applied in place to an entry already recorded.
/// Fields left `None` keep their recorded value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TraceUpdate {
    pub approval_status: Option<String>,
    pub approved_by: Option<String>,
    pub approval_ms: Option<u64>,
    pub supervisor_reasoning: Option<String>,
    pub supervisor_confidence: Option<f64>,
    pub status_code: Option<u16>,
    pub latency_ms: Option<u64>,
    pub error: Option<String>,
    pub estimated_input_tokens: Option<u64>,
    pub estimated_output_tokens: Option<u64>,
    pub tokens_source: Option<String>,
}

impl TraceUpdate {
    fn apply(self, e: &mut TraceEntry) {
        fn set<T>(field: &mut T, value: Option<T>) {
            if let Some(v) = value {
                *field = v;
            }
        }
        set(&mut e.approval_status, self.approval_status);
        set(&mut e.approved_by, self.approved_by);
        set(&mut e.approval_ms, self.approval_ms);
        set(&mut e.supervisor_reasoning, self.supervisor_reasoning);
        set(&mut e.supervisor_confidence, self.supervisor_confidence);
        set(&mut e.status_code, self.status_code);
        set(&mut e.latency_ms, self.latency_ms);
        set(&mut e.error, self.error);
        set(&mut e.estimated_input_tokens, self.estimated_input_tokens);
        set(&mut e.estimated_output_tokens, self.estimated_output_tokens);
        set(&mut e.tokens_source, self.tokens_source);
    }
}

/// Filters of `/traces` and `/sessions/{id}`: exact matches, `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct TraceQuery {
    pub agent: Option<String>,
    pub tool: Option<String>,
    pub session: Option<String>,
    /// At most this many entries; 0 means no limit beyond the ring's own size.
    pub limit: usize,
}

impl TraceQuery {
    fn matches(&self, e: &TraceEntry) -> bool {
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        eq(&self.agent, &e.agent_id) && eq(&self.tool, &e.tool) && eq(&self.session, &e.session_id)
    }
}

/// One row of `GET /sessions`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SessionSummary {
    pub session_id: String,
    /// The agent of the session's first entry.
    pub agent_id: String,
    pub event_count: u64,
    pub first_seen: String,
    pub last_seen: String,
    /// Unique tool names, sorted.
    pub tools: Vec<String>,
}

/// The `traces` object of `GET /health`, counted over the ring (keys serialize sorted).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct TraceStats {
    pub allowed: u64,
    pub denied: u64,
    /// Entries with an error, and every `rate_limited` entry.
    pub errors: u64,
    pub estimated_input_tokens: u64,
    pub estimated_output_tokens: u64,
    pub human_approval: u64,
    pub total: u64,
}

/// How the writer is set up (`trace` section and `trace_file` of the config).
#[derive(Debug, Clone)]
pub struct TraceSettings {
    /// Entries kept in memory.
    pub ring_size: usize,
    /// The JSONL file, if any.
    pub file: Option<PathBuf>,
    /// The file is rotated once it reaches this size; 0 never rotates.
    pub max_file_bytes: u64,
    /// Mailbox capacity of the writer.
    pub mailbox: usize,
    /// `trace.hmac_key`: the file's lines are chained under it (see `chain`).
    pub hmac_key: Option<String>,
    /// `trace.redact`: applied to every entry before it is kept or written (see `redact`).
    pub redact: Option<Arc<Redactor>>,
}

impl Default for TraceSettings {
    fn default() -> Self {
        Self {
            ring_size: 10_000,
            file: None,
            max_file_bytes: 10 * 1024 * 1024,
            mailbox: 1024,
            hmac_key: None,
            redact: None,
        }
    }
}

/// Each message carries its cause, so none is also a `source` (a printed chain would repeat it).
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("cannot open trace file {}: {error}", .path.display())]
    Open { path: PathBuf, error: io::Error },
    #[error("cannot read trace file {}: {error}", .path.display())]
    Load { path: PathBuf, error: io::Error },
    #[error("cannot start the trace writer thread: {0}")]
    Spawn(io::Error),
    #[error("cannot flush the trace file: {0}")]
    Flush(io::Error),
    #[error("trace writer unavailable: {0}")]
    Unavailable(MailboxError),
}

impl From<MailboxError> for TraceError {
    fn from(e: MailboxError) -> Self {
        TraceError::Unavailable(e)
    }
}

// ---------------------------------------------------------------------------------------------
// Pure helpers

/// Go's RFC3339Nano in UTC: the fraction loses its trailing zeros, whole seconds have none.
pub fn format_timestamp(t: SystemTime) -> String {
    // Written digit by digit: this runs for every call, and `format!` cost more than the rest of
    // a trace entry's fields together.
    let dt = DateTime::<Utc>::from(t);
    let mut out = String::with_capacity(30);
    let year = u32::try_from(dt.year()).unwrap_or(0);
    push_digits(&mut out, year, 4);
    for (sep, value) in [('-', dt.month()), ('-', dt.day()), ('T', dt.hour())] {
        out.push(sep);
        push_digits(&mut out, value, 2);
    }
    for value in [dt.minute(), dt.second()] {
        out.push(':');
        push_digits(&mut out, value, 2);
    }
    let mut nanos = dt.nanosecond();
    if nanos > 0 {
        let mut width = 9;
        while nanos % 10 == 0 {
            nanos /= 10;
            width -= 1;
        }
        out.push('.');
        push_digits(&mut out, nanos, width);
    }
    out.push('Z');
    out
}

/// `value` in decimal, zero-padded to at least `width` digits.
fn push_digits(out: &mut String, value: u32, width: u32) {
    let width = width.max(value.checked_ilog10().map_or(1, |d| d + 1));
    for i in (0..width).rev() {
        out.push(char::from_digit(value / 10u32.pow(i) % 10, 10).unwrap_or('0'));
    }
}

/// Wakes the writer for what is queued.
async fn wake_writer(drain: &Recipient<Drain>) -> Result<(), MailboxError> {
    match drain.try_send(Drain) {
        Ok(()) => Ok(()),
        // `send` queues past capacity; the writer takes the record with the batch.
        Err(SendError::Full(msg)) => drain.send(msg).await,
        Err(SendError::Closed(_)) => Err(MailboxError::Closed),
    }
}

/// A fresh random trace id: 32 lowercase hex digits (W3C trace-id size).
pub fn new_trace_id() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = rand::random::<u128>();
    (0..32)
        .rev()
        .map(|i| char::from(HEX[usize::try_from((n >> (i * 4)) & 0xf).unwrap_or(0)]))
        .collect()
}

/// Fills the token fields (flux7 §8.1): the provider's own counts for `ollama.`, `anthropic.`
/// and `openai.` tools when the result carries them, otherwise characters / 4 of the params and
/// of the result.
pub fn estimate_tokens(entry: &mut TraceEntry, result: Option<&Value>) {
    let (input, output, source) = match result.and_then(|r| provider_tokens(&entry.tool, r)) {
        Some((input, output)) => (input, output, "real"),
        None => (
            estimate_chars(&entry.params),
            result.map_or(0, estimate_chars),
            "estimate",
        ),
    };
    entry.estimated_input_tokens = input;
    entry.estimated_output_tokens = output;
    source.clone_into(&mut entry.tokens_source);
}

fn provider_tokens(tool: &str, result: &Value) -> Option<(u64, u64)> {
    let count = |obj: &serde_json::Map<String, Value>, key: &str| {
        obj.get(key)
            .and_then(|v| v.as_u64().or_else(|| v.as_f64().map(|f| f as u64)))
            .unwrap_or(0)
    };
    let top = result.as_object()?;
    let (obj, input_key, output_key) = if tool.starts_with("ollama.") {
        (top, "prompt_eval_count", "eval_count")
    } else if tool.starts_with("anthropic.") {
        (
            top.get("usage")?.as_object()?,
            "input_tokens",
            "output_tokens",
        )
    } else if tool.starts_with("openai.") {
        (
            top.get("usage")?.as_object()?,
            "prompt_tokens",
            "completion_tokens",
        )
    } else {
        return None;
    };
    let (input, output) = (count(obj, input_key), count(obj, output_key));
    (input != 0 || output != 0).then_some((input, output))
}

fn estimate_chars(v: &Value) -> u64 {
    /// Counts what would be written: the length of the compact JSON without building it.
    struct Count(usize);
    impl Write for Count {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let chars = match v {
        Value::Null => 0,
        Value::String(s) => s.len(),
        other => {
            let mut count = Count(0);
            // Writing to a counter cannot fail, and a `Value` always serializes.
            let _ = serde_json::to_writer(&mut count, other);
            count.0
        }
    };
    let chars = u64::try_from(chars).unwrap_or(u64::MAX);
    if chars == 0 { 0 } else { (chars / 4).max(1) }
}

fn parse_timestamp(s: &str) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_rfc3339(s).ok()
}

// ---------------------------------------------------------------------------------------------
// The pure core: the ring and what is asked of it

/// The last `capacity` entries, oldest first.
#[derive(Debug)]
struct Ring {
    entries: VecDeque<TraceEntry>,
    capacity: usize,
}

impl Ring {
    fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            entries: VecDeque::with_capacity(capacity.min(1024)),
            capacity,
        }
    }

    fn push(&mut self, entry: TraceEntry) {
        if self.entries.len() == self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back(entry);
    }

    /// Updates the most recent entry with that trace id and returns its new value.
    fn update(&mut self, trace_id: &str, update: TraceUpdate) -> Option<TraceEntry> {
        let entry = self
            .entries
            .iter_mut()
            .rev()
            .find(|e| e.trace_id == trace_id)?;
        update.apply(entry);
        Some(entry.clone())
    }

    fn query(&self, q: &TraceQuery) -> Vec<TraceEntry> {
        let limit = if q.limit == 0 { usize::MAX } else { q.limit };
        self.entries
            .iter()
            .rev()
            .filter(|e| q.matches(e))
            .take(limit)
            .cloned()
            .collect()
    }

    fn sessions(&self, limit: usize) -> Vec<SessionSummary> {
        struct Acc {
            summary: SessionSummary,
            first: Option<DateTime<FixedOffset>>,
            last: Option<DateTime<FixedOffset>>,
            tools: BTreeSet<String>,
        }
        let mut accs: Vec<Acc> = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        for e in self.entries.iter().filter(|e| !e.session_id.is_empty()) {
            let at = parse_timestamp(&e.timestamp);
            let i = *index.entry(&e.session_id).or_insert_with(|| {
                accs.push(Acc {
                    summary: SessionSummary {
                        session_id: e.session_id.clone(),
                        agent_id: e.agent_id.clone(),
                        event_count: 0,
                        first_seen: e.timestamp.clone(),
                        last_seen: e.timestamp.clone(),
                        tools: Vec::new(),
                    },
                    first: at,
                    last: at,
                    tools: BTreeSet::new(),
                });
                accs.len() - 1
            });
            let acc = &mut accs[i];
            acc.summary.event_count += 1;
            if at < acc.first {
                acc.first = at;
                acc.summary.first_seen.clone_from(&e.timestamp);
            }
            if at >= acc.last {
                acc.last = at;
                acc.summary.last_seen.clone_from(&e.timestamp);
            }
            acc.tools.insert(e.tool.clone());
        }
        // Stable: sessions last seen at the same instant keep their first-seen order.
        accs.sort_by_key(|acc| std::cmp::Reverse(acc.last));
        let limit = if limit == 0 { usize::MAX } else { limit };
        accs.into_iter()
            .take(limit)
            .map(|acc| SessionSummary {
                tools: acc.tools.into_iter().collect(),
                ..acc.summary
            })
            .collect()
    }

    fn stats(&self) -> TraceStats {
        let mut s = TraceStats::default();
        for e in &self.entries {
            match e.policy.as_str() {
                "allow" => s.allowed += 1,
                "deny" => s.denied += 1,
                "human_approval" => s.human_approval += 1,
                _ => {}
            }
            if !e.error.is_empty() || e.policy == "rate_limited" {
                s.errors += 1;
            }
            s.estimated_input_tokens += e.estimated_input_tokens;
            s.estimated_output_tokens += e.estimated_output_tokens;
            s.total += 1;
        }
        s
    }
}

/// Reads a JSONL trace file into a ring: malformed lines are skipped, a line over 1 MiB ends
/// the load, and a later line of the same record (trace id and timestamp) replaces the earlier
/// one in place.
fn load(reader: impl Read, capacity: usize) -> io::Result<Ring> {
    let mut ring = Ring::new(capacity);
    // Record key → sequence number; entry `seq` sits at index `seq - front_seq` of the ring.
    let mut positions: HashMap<(String, String), u64> = HashMap::new();
    let (mut front_seq, mut next_seq) = (0u64, 0u64);
    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    let mut number = 0u64;
    loop {
        line.clear();
        let read = (&mut reader)
            .take(MAX_LINE_BYTES + 1)
            .read_until(b'\n', &mut line)?;
        if read == 0 {
            break;
        }
        number += 1;
        if line.last() != Some(&b'\n') && read as u64 > MAX_LINE_BYTES {
            tracing::warn!(
                line = number,
                "trace file: line longer than 1 MiB, load stopped"
            );
            break;
        }
        let text = line.trim_ascii();
        if text.is_empty() {
            continue;
        }
        let entry: TraceEntry = match serde_json::from_slice(text) {
            Ok(e) => e,
            Err(err) => {
                tracing::warn!(line = number, error = %err, "trace file: malformed line skipped");
                continue;
            }
        };
        let key = (entry.trace_id.clone(), entry.timestamp.clone());
        if let Some(&seq) = positions.get(&key) {
            let i = usize::try_from(seq - front_seq).expect("a tracked record is inside the ring");
            ring.entries[i] = entry;
            continue;
        }
        if ring.entries.len() == ring.capacity
            && let Some(evicted) = ring.entries.pop_front()
        {
            let evicted_key = (evicted.trace_id, evicted.timestamp);
            if positions.get(&evicted_key) == Some(&front_seq) {
                positions.remove(&evicted_key);
            }
            front_seq += 1;
        }
        ring.entries.push_back(entry);
        positions.insert(key, next_seq);
        next_seq += 1;
    }
    Ok(ring)
}

// ---------------------------------------------------------------------------------------------
// The JSONL file

/// The append side of the trace file, with rotation.
#[derive(Debug)]
struct JsonlFile {
    path: PathBuf,
    /// `None` after a failed rotation: the next append reopens the file.
    writer: Option<BufWriter<File>>,
    size: u64,
    max_bytes: u64,
    /// The line being written, reused from one record to the next.
    line: Vec<u8>,
    /// Chains the lines when `trace.hmac_key` is set.
    sealer: Option<chain::Sealer>,
}

impl JsonlFile {
    fn open(path: PathBuf, max_bytes: u64, hmac_key: Option<&str>) -> io::Result<Self> {
        let sealer = hmac_key
            .map(|key| chain::Sealer::resume(key, &path, &old_path(&path)))
            .transpose()?;
        let mut file = Self {
            path,
            writer: None,
            size: 0,
            max_bytes,
            line: Vec::new(),
            sealer,
        };
        file.reopen()?;
        Ok(file)
    }

    fn reopen(&mut self) -> io::Result<()> {
        // Owner-only when created: the entries hold the calls' arguments.
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)?;
        self.size = f.metadata()?.len();
        self.writer = Some(BufWriter::with_capacity(WRITE_BUFFER_BYTES, f));
        Ok(())
    }

    fn append(&mut self, entry: &TraceEntry) -> io::Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, entry)?;
        if let Some(sealer) = &mut self.sealer {
            sealer.seal(&mut self.line);
        }
        self.line.push(b'\n');
        if self.writer.is_none() {
            self.reopen()?;
        }
        let writer = self.writer.as_mut().expect("reopened above");
        // One write of the whole line: a failure leaves at most one partial line, which the
        // loader skips.
        writer.write_all(&self.line)?;
        self.size += self.line.len() as u64;
        if self.max_bytes > 0 && self.size >= self.max_bytes {
            self.rotate()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.writer {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }

    /// `<file>` becomes `<file>.old` (replacing any previous one) and a new `<file>` starts.
    fn rotate(&mut self) -> io::Result<()> {
        if let Some(mut w) = self.writer.take() {
            w.flush()?;
        }
        let old = old_path(&self.path);
        match fs::remove_file(&old) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        fs::rename(&self.path, &old)?;
        tracing::info!(old = %old.display(), "trace file rotated");
        self.reopen()
    }
}

/// `<file>.old`, next to the trace file.
fn old_path(path: &Path) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(".old");
    PathBuf::from(name)
}

// ---------------------------------------------------------------------------------------------
// Messages

/// Records waiting for the writer, shared by every handle and the writer.
#[derive(Debug, Default)]
struct Pending {
    entries: Vec<TraceEntry>,
    /// A `Drain` is on its way to the writer, or its batch timer is running.
    scheduled: bool,
}

fn lock(pending: &Mutex<Pending>) -> MutexGuard<'_, Pending> {
    // Every change under the lock is a push or a swap: the queue is whole even after a panic.
    pending.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Records are waiting: take them after `BATCH_DELAY`.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Drain;

/// Too many records are waiting: take them now (answered once they are taken).
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct DrainNow;

#[derive(Debug, Message)]
#[rtype(result = "bool")]
struct Update {
    trace_id: String,
    update: TraceUpdate,
    span: Span,
}

#[derive(Debug, Message)]
#[rtype(result = "Vec<TraceEntry>")]
struct Query(TraceQuery);

#[derive(Debug, Message)]
#[rtype(result = "Vec<SessionSummary>")]
struct ListSessions {
    limit: usize,
}

#[derive(Debug, Message)]
#[rtype(result = "TraceStats")]
struct GetStats;

#[derive(Debug, Message)]
#[rtype(result = "io::Result<()>")]
struct Flush;

#[derive(Debug, Message)]
#[rtype(result = "u64")]
struct CountWriteErrors;

// ---------------------------------------------------------------------------------------------
// The handle

/// The trace writer. Cloning is cheap; the writer stops when the last clone is dropped.
#[derive(Clone)]
pub struct Trace {
    pending: Arc<Mutex<Pending>>,
    /// Waiting records beyond which `record` waits for the writer.
    capacity: usize,
    drain: Recipient<Drain>,
    drain_now: Recipient<DrainNow>,
    update: Recipient<Update>,
    query: Recipient<Query>,
    sessions: Recipient<ListSessions>,
    stats: Recipient<GetStats>,
    flush: Recipient<Flush>,
    write_errors: Recipient<CountWriteErrors>,
    errors_seen: Arc<AtomicU64>,
    clock: Clock,
}

impl std::fmt::Debug for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trace").finish_non_exhaustive()
    }
}

impl Trace {
    /// Starts the writer on its own Arbiter (own thread) so file I/O never stalls other actors.
    /// Loads the existing JSONL lines first (malformed lines skipped, a line over 1 MiB stops
    /// the load, the last `ring_size` kept). Must be called inside a running actix `System`.
    pub fn start(settings: TraceSettings, clock: Clock) -> Result<Trace, TraceError> {
        let TraceSettings {
            ring_size,
            file,
            max_file_bytes,
            mailbox,
            hmac_key,
            redact,
        } = settings;
        let (ring, file) = match file {
            None => (Ring::new(ring_size), None),
            Some(path) => {
                let ring = match File::open(&path) {
                    Ok(f) => load(f, ring_size),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Ring::new(ring_size)),
                    Err(e) => Err(e),
                }
                .map_err(|error| TraceError::Load {
                    path: path.clone(),
                    error,
                })?;
                let file = JsonlFile::open(path.clone(), max_file_bytes, hmac_key.as_deref())
                    .map_err(|error| TraceError::Open { path, error })?;
                (ring, Some(file))
            }
        };
        let mut ring = ring;
        if let Some(redactor) = &redact {
            // What /traces shows follows the settings of this run, also for older lines.
            ring.entries.iter_mut().for_each(|e| redactor.apply(e));
        }
        let arbiter = Arbiter::try_new().map_err(TraceError::Spawn)?;
        let errors_seen = Arc::new(AtomicU64::new(0));
        let pending = Arc::new(Mutex::new(Pending::default()));
        let actor = TraceActor {
            ring,
            file,
            pending: pending.clone(),
            last_batch: std::time::Instant::now(),
            mailbox: mailbox.max(1),
            write_errors: errors_seen.clone(),
            arbiter: arbiter.handle(),
            redact,
        };
        let addr = TraceActor::start_in_arbiter(&arbiter.handle(), move |_| actor);
        Ok(Trace {
            pending,
            capacity: mailbox.max(1),
            drain: addr.clone().recipient(),
            drain_now: addr.clone().recipient(),
            update: addr.clone().recipient(),
            query: addr.clone().recipient(),
            sessions: addr.clone().recipient(),
            stats: addr.clone().recipient(),
            flush: addr.clone().recipient(),
            write_errors: addr.recipient(),
            errors_seen,
            clock,
        })
    }

    /// Enqueues a record without waiting for the disk. When `mailbox` records are already
    /// waiting it waits until the writer has taken them (backpressure); an audit record is
    /// never dropped. An empty `trace_id` gets a fresh one and an empty `timestamp` gets the
    /// clock's time.
    ///
    /// Waking the writer (when the queue was empty) is left to a task of the caller's runtime,
    /// so it happens once the caller yields, typically after its answer has been written:
    /// waking another thread costs several microseconds here, and the writer, once woken, may
    /// take the caller's CPU (measured in docs/benchmarks.md). A caller outside any runtime
    /// wakes the writer itself.
    pub async fn record(&self, entry: TraceEntry) -> Result<(), TraceError> {
        let (wake, full) = self.push(entry);
        if full {
            return Ok(self.drain_now.send(DrainNow).await?);
        }
        if wake {
            if !self.drain.connected() {
                return Err(MailboxError::Closed.into());
            }
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    let drain = self.drain.clone();
                    // Should the wake-up be lost (the runtime stopping), the record is not:
                    // every read and the final flush take the waiting records first.
                    drop(runtime.spawn(async move {
                        // Once, so that the tasks already woken (the answer's writer among
                        // them) run first.
                        tokio::task::yield_now().await;
                        wake_writer(&drain).await
                    }));
                }
                Err(_) => wake_writer(&self.drain).await?,
            }
        }
        Ok(())
    }

    /// `record` for code that cannot wait, such as a drop guard: no backpressure, the record
    /// is queued whatever the number already waiting.
    pub fn record_now(&self, entry: TraceEntry) -> Result<(), TraceError> {
        let (wake, _full) = self.push(entry);
        if wake {
            match self.drain.try_send(Drain) {
                Ok(()) => {}
                Err(SendError::Full(msg)) => self.drain.do_send(msg),
                Err(SendError::Closed(_)) => return Err(MailboxError::Closed.into()),
            }
        }
        Ok(())
    }

    /// Queues a record, filling in a missing trace id and timestamp. Returns whether the
    /// writer must be woken and whether the queue is full.
    fn push(&self, mut entry: TraceEntry) -> (bool, bool) {
        if entry.trace_id.is_empty() {
            entry.trace_id = new_trace_id();
        }
        if entry.timestamp.is_empty() {
            entry.timestamp = format_timestamp(self.clock.wall());
        }
        let mut pending = lock(&self.pending);
        pending.entries.push(entry);
        let wake = !pending.scheduled;
        pending.scheduled = true;
        (wake, pending.entries.len() >= self.capacity)
    }

    /// Applies an approval outcome to the most recent entry with this trace id, in the ring and
    /// as a new line in the file. Returns whether such an entry was found.
    pub async fn update(&self, trace_id: &str, update: TraceUpdate) -> Result<bool, TraceError> {
        let msg = Update {
            trace_id: trace_id.to_owned(),
            update,
            span: Span::current(),
        };
        Ok(self.update.send(msg).await?)
    }

    /// Most recent first, exact-match filters, at most `q.limit` entries.
    pub async fn query(&self, q: TraceQuery) -> Result<Vec<TraceEntry>, TraceError> {
        Ok(self.query.send(Query(q)).await?)
    }

    /// Sessions by `last_seen`, most recent first; entries without a session are ignored.
    pub async fn sessions(&self, limit: usize) -> Result<Vec<SessionSummary>, TraceError> {
        Ok(self.sessions.send(ListSessions { limit }).await?)
    }

    pub async fn stats(&self) -> Result<TraceStats, TraceError> {
        Ok(self.stats.send(GetStats).await?)
    }

    /// Waits until every record enqueued before this call is written and the file is flushed.
    pub async fn flush(&self) -> Result<(), TraceError> {
        self.flush.send(Flush).await?.map_err(TraceError::Flush)
    }

    /// File writes that failed so far, counted after every record enqueued before this call.
    pub async fn write_errors(&self) -> u64 {
        match self.write_errors.send(CountWriteErrors).await {
            Ok(n) => n,
            // The writer is gone; the count it left behind is final.
            Err(_) => self.errors_seen.load(Ordering::Relaxed),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The actor

struct TraceActor {
    ring: Ring,
    file: Option<JsonlFile>,
    pending: Arc<Mutex<Pending>>,
    /// When the last batch was taken (scheduling only: no record depends on it).
    last_batch: std::time::Instant,
    mailbox: usize,
    write_errors: Arc<AtomicU64>,
    /// The arbiter this actor owns; it stops with the actor.
    arbiter: ArbiterHandle,
    redact: Option<Arc<Redactor>>,
}

impl Actor for TraceActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.mailbox);
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        // A failure is already logged and counted; nothing is left to retry it.
        let _ = self.drain();
        self.arbiter.stop();
    }
}

impl TraceActor {
    /// Takes the waiting records: into the file (one flush for the batch) and the ring.
    fn drain(&mut self) -> io::Result<()> {
        let batch = {
            let mut pending = lock(&self.pending);
            pending.scheduled = false;
            std::mem::take(&mut pending.entries)
        };
        self.last_batch = std::time::Instant::now();
        if batch.is_empty() {
            return Ok(());
        }
        for mut entry in batch {
            if let Some(redactor) = &self.redact {
                redactor.apply(&mut entry);
            }
            self.append(&entry);
            self.ring.push(entry);
        }
        self.flush_file()
    }

    fn append(&mut self, entry: &TraceEntry) {
        let Some(file) = &mut self.file else { return };
        if let Err(err) = file.append(entry) {
            count_write_error(&self.write_errors, "append", &err);
        }
    }

    fn flush_file(&mut self) -> io::Result<()> {
        let Some(file) = &mut self.file else {
            return Ok(());
        };
        file.flush()
            .inspect_err(|err| count_write_error(&self.write_errors, "flush", err))
    }
}

fn count_write_error(counter: &AtomicU64, op: &str, err: &io::Error) {
    counter.fetch_add(1, Ordering::Relaxed);
    tracing::error!(op, error = %err, "trace file write failed");
}

impl Handler<Drain> for TraceActor {
    type Result = ();

    fn handle(&mut self, _msg: Drain, ctx: &mut Context<Self>) {
        // A failure is already logged and counted; the next flush tries again.
        match BATCH_DELAY.checked_sub(self.last_batch.elapsed()) {
            None => {
                let _ = self.drain();
            }
            Some(wait) => {
                ctx.run_later(wait, |writer, _| {
                    let _ = writer.drain();
                });
            }
        }
    }
}

impl Handler<DrainNow> for TraceActor {
    type Result = ();

    fn handle(&mut self, _msg: DrainNow, _ctx: &mut Context<Self>) {
        let _ = self.drain();
    }
}

impl Handler<Update> for TraceActor {
    type Result = bool;

    fn handle(&mut self, msg: Update, _ctx: &mut Context<Self>) -> bool {
        let _span = msg.span.enter();
        let _ = self.drain();
        let Some(updated) = self.ring.update(&msg.trace_id, msg.update) else {
            return false;
        };
        self.append(&updated);
        let _ = self.flush_file();
        true
    }
}

impl Handler<Query> for TraceActor {
    type Result = Vec<TraceEntry>;

    fn handle(&mut self, msg: Query, _ctx: &mut Context<Self>) -> Vec<TraceEntry> {
        let _ = self.drain();
        self.ring.query(&msg.0)
    }
}

impl Handler<ListSessions> for TraceActor {
    type Result = Vec<SessionSummary>;

    fn handle(&mut self, msg: ListSessions, _ctx: &mut Context<Self>) -> Vec<SessionSummary> {
        let _ = self.drain();
        self.ring.sessions(msg.limit)
    }
}

impl Handler<GetStats> for TraceActor {
    type Result = MessageResult<GetStats>;

    fn handle(&mut self, _msg: GetStats, _ctx: &mut Context<Self>) -> Self::Result {
        let _ = self.drain();
        MessageResult(self.ring.stats())
    }
}

impl Handler<Flush> for TraceActor {
    type Result = io::Result<()>;

    fn handle(&mut self, _msg: Flush, _ctx: &mut Context<Self>) -> io::Result<()> {
        self.drain()?;
        self.flush_file()
    }
}

impl Handler<CountWriteErrors> for TraceActor {
    type Result = u64;

    fn handle(&mut self, _msg: CountWriteErrors, _ctx: &mut Context<Self>) -> u64 {
        let _ = self.drain();
        self.write_errors.load(Ordering::Relaxed)
    }
}

mod chain;
pub mod redact;
#[cfg(test)]
mod tests;

pub use chain::ChainCheck;
pub use redact::Redactor;
