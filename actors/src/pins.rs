//! Catalogue pinning (`mcp_servers[].pin_tools`) behind the `Pins` handle: the tool definitions
//! of a server as first seen, kept in the store. A tool whose definition later differs from its
//! pin, or a tool the server starts listing later, is not offered nor run until an operator
//! accepts it: a server cannot change what a tool says or does behind the agents' backs (a
//! "rug pull"), nor slip a new tool in.
//!
//! Invariants:
//! - The pipeline and the listings read pins from a snapshot, never through a message: a check
//!   costs no actor round trip.
//! - A tool of a pinned server is usable only when its live definition's fingerprint equals its
//!   pin's. A server whose catalogue was never seen, a changed tool and a new tool are all
//!   refused: with pinning on, nothing is trusted by default.
//! - Pins change only at the first sight of a server's catalogue (trust on first use) and when
//!   an operator accepts a change; a later listing never re-pins by itself, before or after a
//!   restart.
//! - Every change of the snapshot bumps a version that listings' watchers wait on (MCP
//!   `notifications/tools/list_changed`).
//! - A change is visible in the snapshot only once it is durable; the actor takes no other
//!   message meanwhile. A failed write leaves the pins as they were (calls stay refused).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::SystemTime;

use actix::prelude::{
    Actor, ActorFutureExt, AtomicResponse, Context, Handler, MailboxError, Message, Recipient,
    WrapFuture,
};
use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::clock::Clock;
use crate::grants::rfc3339_secs;
use crate::notify::Notifier;
use crate::store::{Change, Flush, Row, Store, StoreError};
use crate::upstream::{McpTool, ToolsListed};

/// Who pinned a catalogue seen for the first time.
pub const FIRST_USE: &str = "first use";
/// The longest name of whoever accepts a change (kept with every pin it makes).
pub const MAX_BY: usize = 1024;
/// Changed definitions remembered as already logged; beyond it the memory starts over (a
/// server could list a new definition at every `list_changed`).
const MAX_WARNED: usize = 10_000;

/// The parts of a definition a pin covers, as `tools/list` names them.
const FIELDS: [&str; 6] = [
    "name",
    "title",
    "description",
    "inputSchema",
    "outputSchema",
    "annotations",
];

/// The definition of a tool as the server lists it: what a pin keeps and compares.
pub fn definition(tool: &McpTool) -> Value {
    let mut def = json!({
        "name": tool.name,
        "description": tool.description,
        "inputSchema": tool.input_schema,
    });
    if let Some(title) = &tool.title {
        def["title"] = title.clone().into();
    }
    if let Some(schema) = &tool.output_schema {
        def["outputSchema"] = schema.clone();
    }
    if let Some(annotations) = &tool.annotations {
        def["annotations"] = annotations.clone();
    }
    def
}

/// SHA-256 (hex) of a definition in canonical form (object keys sorted at every level, no
/// spaces), so the order in which a server writes its keys does not matter.
pub fn fingerprint(definition: &Value) -> String {
    let mut canonical = String::new();
    write_canonical(definition, &mut canonical);
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let sorted: BTreeMap<&String, &Value> = map.iter().collect();
            out.push('{');
            for (i, (key, value)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => {
            let _ = write!(out, "{scalar}");
        }
    }
}

/// A pinned tool definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pin {
    /// `server.tool` (server names have no dots).
    pub id: String,
    pub server: String,
    pub tool: String,
    pub fingerprint: String,
    /// The definition as listed when it was pinned.
    pub definition: Value,
    pub pinned_at: SystemTime,
    /// [`FIRST_USE`], or the operator who accepted it.
    pub pinned_by: String,
}

impl Pin {
    fn new(server: &str, tool: &McpTool, by: &str, at: SystemTime) -> Pin {
        let definition = definition(tool);
        Pin {
            id: format!("{server}.{}", tool.name),
            server: server.to_owned(),
            tool: tool.name.clone(),
            fingerprint: tool.fingerprint.clone(),
            definition,
            pinned_at: at,
            pinned_by: by.to_owned(),
        }
    }

    /// The row that records that a server's catalogue was seen (and pinned), even when it
    /// listed no tool: a later listing is then compared, never pinned on trust.
    fn seen(server: &str, at: SystemTime) -> Pin {
        Pin {
            id: server.to_owned(),
            server: server.to_owned(),
            tool: String::new(),
            fingerprint: String::new(),
            definition: Value::Null,
            pinned_at: at,
            pinned_by: FIRST_USE.to_owned(),
        }
    }

    fn is_seen_marker(&self) -> bool {
        self.tool.is_empty()
    }

    /// What the HTTP API shows of a pin (without its definition).
    pub fn view(&self) -> Value {
        json!({
            "tool": self.tool,
            "fingerprint": self.fingerprint,
            "pinned_at": rfc3339_secs(self.pinned_at),
            "pinned_by": self.pinned_by,
        })
    }
}

/// Why a tool of a pinned server is not usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unpinned {
    /// The server's catalogue has not been seen yet, so nothing of it is pinned.
    NotYetPinned,
    /// The definition differs from the pin in these fields (`tools/list` names).
    Changed(Vec<&'static str>),
    /// The tool was listed after the catalogue was pinned.
    Added,
    /// The server no longer lists the tool (it did when the call was resolved).
    NotListed,
}

impl Unpinned {
    /// Why, in words, for the refused call's answer and trace.
    pub fn reason(&self, tool: &str) -> String {
        match self {
            Unpinned::NotYetPinned => {
                format!("the tools of {tool:?}'s server are not pinned yet")
            }
            Unpinned::Changed(fields) => format!(
                "the definition of {tool} changed since it was pinned ({}); an operator must \
                 accept the change",
                fields.join(", ")
            ),
            Unpinned::Added => format!(
                "{tool} was listed after the catalogue was pinned; an operator must accept it"
            ),
            Unpinned::NotListed => format!("{tool} is no longer listed by its server"),
        }
    }
}

/// One difference between a server's live catalogue and its pins.
#[derive(Debug, Clone, PartialEq)]
pub struct Drift {
    pub tool: String,
    /// `changed`, `added` or `removed`.
    pub change: &'static str,
    /// The fields that differ (`changed` only).
    pub fields: Vec<&'static str>,
    pub pinned: Option<Value>,
    pub current: Option<Value>,
}

impl Drift {
    pub fn view(&self) -> Value {
        json!({
            "tool": self.tool,
            "change": self.change,
            "fields": self.fields,
            "pinned": self.pinned,
            "current": self.current,
        })
    }
}

/// What an accept changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accepted {
    /// Tools pinned again (changed) or for the first time (added).
    pub pinned: Vec<String>,
    /// Pins dropped for tools the server no longer lists.
    pub removed: Vec<String>,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum PinError {
    #[error("no MCP server {0:?} with pin_tools")]
    NotPinned(String),
    #[error("{0}")]
    Invalid(String),
    /// The store or the actor could not take the change. The pins in effect are unchanged.
    #[error("pins unavailable: {0}")]
    Unavailable(String),
}

impl From<MailboxError> for PinError {
    fn from(e: MailboxError) -> Self {
        PinError::Unavailable(e.to_string())
    }
}

impl From<StoreError> for PinError {
    fn from(e: StoreError) -> Self {
        PinError::Unavailable(e.to_string())
    }
}

/// The pins of every server whose catalogue was seen: server → tool → pin.
type Catalogue = HashMap<String, HashMap<String, Pin>>;

/// An operator's accept: the server's live tools become its pins (all changes, or those of
/// `only`).
#[derive(Message)]
#[rtype(result = "Result<Accepted, PinError>")]
struct Accept {
    server: String,
    live: Arc<Vec<McpTool>>,
    only: Option<Vec<String>>,
    by: String,
}

/// Handle to the pins actor. Cloning is cheap.
#[derive(Clone)]
pub struct Pins {
    /// The servers with `pin_tools`.
    servers: Arc<HashSet<String>>,
    snapshot: Arc<ArcSwap<Catalogue>>,
    /// Bumped after each change of the snapshot.
    version: Arc<watch::Sender<u64>>,
    seen: Recipient<ToolsListed>,
    accept: Recipient<Accept>,
}

impl std::fmt::Debug for Pins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pins")
            .field("servers", &self.servers)
            .finish_non_exhaustive()
    }
}

impl Pins {
    /// Loads the pins of `servers` from the store and starts the actor on the current arbiter;
    /// call it inside a running actix `System`. Pins of servers no longer configured with
    /// `pin_tools` stay in the store, unused.
    pub fn start(
        servers: HashSet<String>,
        store: Option<Store>,
        clock: Clock,
        mailbox: usize,
    ) -> Result<Pins, PinError> {
        Pins::start_announcing(servers, store, clock, mailbox, None)
    }

    /// As [`Pins::start`], and each tool definition that newly waits for an operator (a changed
    /// or added tool, once per definition) is posted to `announce`'s URL.
    pub fn start_announcing(
        servers: HashSet<String>,
        store: Option<Store>,
        clock: Clock,
        mailbox: usize,
        announce: Option<Announce>,
    ) -> Result<Pins, PinError> {
        let rows: Vec<Row<Pin>> = match &store {
            Some(store) if !servers.is_empty() => store.load_pins()?,
            _ => Vec::new(),
        };
        let mut catalogue = Catalogue::new();
        for Row { record, .. } in rows {
            if !servers.contains(&record.server) {
                continue;
            }
            let tools = catalogue.entry(record.server.clone()).or_default();
            if !record.is_seen_marker() {
                tools.insert(record.tool.clone(), record);
            }
        }
        let snapshot = Arc::new(ArcSwap::from_pointee(catalogue));
        let servers = Arc::new(servers);
        let version = Arc::new(watch::Sender::new(0));
        let actor = PinsActor {
            servers: servers.clone(),
            snapshot: snapshot.clone(),
            version: version.clone(),
            store,
            clock,
            mailbox: mailbox.max(1),
            warned: HashSet::new(),
            announce,
        };
        let addr = actor.start();
        Ok(Pins {
            servers,
            snapshot,
            version,
            seen: addr.clone().recipient(),
            accept: addr.recipient(),
        })
    }

    /// Where upstream connections report each tool list they receive.
    pub fn observer(&self) -> Recipient<ToolsListed> {
        self.seen.clone()
    }

    /// How many times the pins changed.
    pub fn version(&self) -> u64 {
        *self.version.borrow()
    }

    /// Resolves once the pins changed since [`Pins::version`] said `seen` (at once if they
    /// already did).
    pub async fn changed_since(&self, seen: u64) {
        let mut version = self.version.subscribe();
        // The sender lives in this handle too: it cannot be dropped meanwhile.
        let _ = version.wait_for(|v| *v != seen).await;
    }

    /// Whether the server's tools are pinned (`pin_tools`).
    pub fn pins_server(&self, server: &str) -> bool {
        self.servers.contains(server)
    }

    /// The servers with `pin_tools`, sorted.
    pub fn servers(&self) -> Vec<String> {
        let mut servers: Vec<String> = self.servers.iter().cloned().collect();
        servers.sort();
        servers
    }

    /// `None` when `tool` of `server` may be offered and run: its server is not pinned, or its
    /// definition is the pinned one.
    pub fn check(&self, server: &str, tool: &McpTool) -> Option<Unpinned> {
        if !self.servers.contains(server) {
            return None;
        }
        let catalogue = self.snapshot.load();
        let Some(pins) = catalogue.get(server) else {
            return Some(Unpinned::NotYetPinned);
        };
        match pins.get(&tool.name) {
            None => Some(Unpinned::Added),
            Some(pin) if pin.fingerprint == tool.fingerprint => None,
            Some(pin) => Some(Unpinned::Changed(changed_fields(
                &pin.definition,
                &definition(tool),
            ))),
        }
    }

    /// The pins of `server` (tool order), and whether its catalogue was seen at all.
    pub fn pins(&self, server: &str) -> (Vec<Pin>, bool) {
        let catalogue = self.snapshot.load();
        match catalogue.get(server) {
            Some(pins) => {
                let mut pins: Vec<Pin> = pins.values().cloned().collect();
                pins.sort_by(|a, b| a.tool.cmp(&b.tool));
                (pins, true)
            }
            None => (Vec::new(), false),
        }
    }

    /// How `live` (the server's current tools) differs from the pins of `server`, by tool.
    pub fn drift(&self, server: &str, live: &[McpTool]) -> Vec<Drift> {
        let catalogue = self.snapshot.load();
        let empty = HashMap::new();
        drift(catalogue.get(server).unwrap_or(&empty), live)
    }

    /// Pins the live definitions of the server's changed and added tools (or of those named in
    /// `only`) and drops the pins of tools it no longer lists; `by` is recorded with them.
    pub async fn accept(
        &self,
        server: &str,
        live: Arc<Vec<McpTool>>,
        only: Option<Vec<String>>,
        by: &str,
    ) -> Result<Accepted, PinError> {
        self.accept
            .send(Accept {
                server: server.to_owned(),
                live,
                only,
                by: by.to_owned(),
            })
            .await?
    }
}

/// The differences between pins and a live catalogue, in tool order.
fn drift(pins: &HashMap<String, Pin>, live: &[McpTool]) -> Vec<Drift> {
    let mut drift = Vec::new();
    let mut listed = HashSet::new();
    for tool in live {
        listed.insert(tool.name.as_str());
        match pins.get(&tool.name) {
            Some(pin) if pin.fingerprint == tool.fingerprint => {}
            Some(pin) => {
                let current = definition(tool);
                drift.push(Drift {
                    tool: tool.name.clone(),
                    change: "changed",
                    fields: changed_fields(&pin.definition, &current),
                    pinned: Some(pin.definition.clone()),
                    current: Some(current),
                });
            }
            None => drift.push(Drift {
                tool: tool.name.clone(),
                change: "added",
                fields: Vec::new(),
                pinned: None,
                current: Some(definition(tool)),
            }),
        }
    }
    for pin in pins.values() {
        if !listed.contains(pin.tool.as_str()) {
            drift.push(Drift {
                tool: pin.tool.clone(),
                change: "removed",
                fields: Vec::new(),
                pinned: Some(pin.definition.clone()),
                current: None,
            });
        }
    }
    drift.sort_by(|a, b| a.tool.cmp(&b.tool));
    drift
}

/// The fields of two definitions that differ (maps compare whatever their key order).
fn changed_fields(pinned: &Value, current: &Value) -> Vec<&'static str> {
    FIELDS
        .into_iter()
        .filter(|field| pinned.get(field) != current.get(field))
        .collect()
}

struct PinsActor {
    servers: Arc<HashSet<String>>,
    snapshot: Arc<ArcSwap<Catalogue>>,
    version: Arc<watch::Sender<u64>>,
    store: Option<Store>,
    clock: Clock,
    mailbox: usize,
    /// (tool id, fingerprint) already reported as a change, so a refresh does not log it again.
    warned: HashSet<(String, String)>,
    announce: Option<Announce>,
}

/// Where tool changes that wait for an operator are posted (`approval.tools_changed_url`).
#[derive(Debug, Clone)]
pub struct Announce {
    pub notifier: Notifier,
    pub url: String,
}

impl Actor for PinsActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.mailbox);
    }
}

impl Handler<ToolsListed> for PinsActor {
    /// Atomic: the next message sees the catalogue pinned (or the failure logged).
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, listed: ToolsListed, _: &mut Context<Self>) -> Self::Result {
        if !self.servers.contains(&listed.server) {
            return AtomicResponse::new(Box::pin(actix::fut::ready(())));
        }
        let current = self.snapshot.load_full();
        let Some(pins) = current.get(&listed.server) else {
            // Trust on first use: the whole catalogue, and the fact that it was seen.
            let now = self.clock.wall();
            let mut rows = vec![Pin::seen(&listed.server, now)];
            rows.extend(
                listed
                    .tools
                    .iter()
                    .map(|tool| Pin::new(&listed.server, tool, FIRST_USE, now)),
            );
            let server = listed.server.clone();
            let count = rows.len() - 1;
            let flush = self.write(&rows, &[]);
            return AtomicResponse::new(Box::pin(flush.into_actor(self).map(
                move |written, act, _| match written {
                    Ok(()) => {
                        let mut next = act.snapshot.load().as_ref().clone();
                        next.insert(
                            server.clone(),
                            rows.into_iter()
                                .filter(|pin| !pin.is_seen_marker())
                                .map(|pin| (pin.tool.clone(), pin))
                                .collect(),
                        );
                        act.snapshot.store(Arc::new(next));
                        act.version.send_modify(|v| *v += 1);
                        tracing::info!(server, tools = count, "pinned the MCP server's tools");
                    }
                    Err(e) => tracing::error!(
                        server,
                        "pinning the MCP server's tools failed (they stay refused): {e}"
                    ),
                },
            )));
        };
        let mut news = Vec::new();
        for change in drift(pins, &listed.tools) {
            let Some(current) = &change.current else {
                continue;
            };
            let key = (
                format!("{}.{}", listed.server, change.tool),
                fingerprint(current),
            );
            if self.warned.len() >= MAX_WARNED {
                self.warned.clear();
            }
            if self.warned.insert(key) {
                tracing::warn!(
                    server = %listed.server,
                    tool = %change.tool,
                    change = change.change,
                    fields = ?change.fields,
                    "MCP tool differs from its pin: refused until an operator accepts it"
                );
                news.push(json!({
                    "tool": change.tool,
                    "change": change.change,
                    "fields": change.fields,
                }));
            }
        }
        if let Some(announce) = self.announce.as_ref().filter(|_| !news.is_empty()) {
            let payload = json!({
                "event": "tools_changed",
                "server": listed.server,
                "changes": news,
                "at": rfc3339_secs(self.clock.wall()),
            });
            announce.notifier.post(&announce.url, payload);
        }
        AtomicResponse::new(Box::pin(actix::fut::ready(())))
    }
}

impl Handler<Accept> for PinsActor {
    type Result = AtomicResponse<Self, Result<Accepted, PinError>>;

    fn handle(&mut self, msg: Accept, _: &mut Context<Self>) -> Self::Result {
        let planned = self.plan(&msg);
        let (puts, deletes, accepted) = match planned {
            Ok(plan) => plan,
            Err(e) => return AtomicResponse::new(Box::pin(actix::fut::ready(Err(e)))),
        };
        let flush = self.write(&puts, &deletes);
        let server = msg.server;
        AtomicResponse::new(Box::pin(flush.into_actor(self).map(
            move |written, act, _| {
                written.map_err(PinError::from)?;
                let mut next = act.snapshot.load().as_ref().clone();
                let tools = next.entry(server.clone()).or_default();
                for id in &deletes {
                    if let Some((_, tool)) = id.split_once('.') {
                        tools.remove(tool);
                    }
                }
                for pin in puts.into_iter().filter(|pin| !pin.is_seen_marker()) {
                    tools.insert(pin.tool.clone(), pin);
                }
                act.snapshot.store(Arc::new(next));
                act.version.send_modify(|v| *v += 1);
                tracing::info!(
                    server,
                    pinned = ?accepted.pinned,
                    removed = ?accepted.removed,
                    "MCP tool changes accepted"
                );
                Ok(accepted)
            },
        )))
    }
}

impl PinsActor {
    /// The rows to write and delete for an accept, and what it reports.
    fn plan(&self, msg: &Accept) -> Result<(Vec<Pin>, Vec<String>, Accepted), PinError> {
        if !self.servers.contains(&msg.server) {
            return Err(PinError::NotPinned(msg.server.clone()));
        }
        if msg.by.chars().count() > MAX_BY {
            return Err(PinError::Invalid(format!(
                "who accepts is limited to {MAX_BY} characters"
            )));
        }
        let current = self.snapshot.load();
        let empty = HashMap::new();
        let pins = current.get(&msg.server);
        let changes = drift(pins.unwrap_or(&empty), &msg.live);
        if let Some(only) = &msg.only {
            for name in only {
                if !changes.iter().any(|d| &d.tool == name) {
                    return Err(PinError::Invalid(format!(
                        "{}.{name} has no change to accept",
                        msg.server
                    )));
                }
            }
        }
        let now = self.clock.wall();
        // Accepting a catalogue never seen also records it as seen.
        let mut puts: Vec<Pin> = match pins {
            Some(_) => Vec::new(),
            None => vec![Pin::seen(&msg.server, now)],
        };
        let mut deletes = Vec::new();
        let mut accepted = Accepted::default();
        let wanted = |tool: &str| {
            msg.only
                .as_ref()
                .is_none_or(|only| only.iter().any(|t| t == tool))
        };
        for change in changes.iter().filter(|d| wanted(&d.tool)) {
            if change.change == "removed" {
                deletes.push(format!("{}.{}", msg.server, change.tool));
                accepted.removed.push(change.tool.clone());
            } else if let Some(tool) = msg.live.iter().find(|t| t.name == change.tool) {
                puts.push(Pin::new(&msg.server, tool, &msg.by, now));
                accepted.pinned.push(change.tool.clone());
            }
        }
        Ok((puts, deletes, accepted))
    }

    /// Writes pins and deletions in one batch; resolves once durable.
    fn write(
        &self,
        puts: &[Pin],
        deletes: &[String],
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + 'static {
        let flush = match &self.store {
            Some(store) => store.write_pins(&Change {
                puts: puts.iter().map(|pin| (0, pin)).collect(),
                deletes: deletes.iter().map(String::as_str).collect(),
            }),
            None => Ok(Flush::none()),
        };
        async move { flush?.durable().await }
    }
}

#[cfg(test)]
mod tests;
