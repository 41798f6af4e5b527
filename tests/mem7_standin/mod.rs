//! A stand-in for mem7, the memory daemon mesh7 consults for Level-1 auto-approve and writes its
//! decisions to. mem7 itself cannot be installed here; this speaks the same protocol over real
//! HTTP on 127.0.0.1 so the tests exercise mesh7's real client:
//!
//! - `POST /rpc`, JSON-RPC 2.0, method `tools/call` with `params.name` and `params.arguments`;
//! - `memory_store {key, value, tags, agent}` stores (or replaces) a fact and answers
//!   `{"content":[{"type":"text","text":"stored <key>"}]}`;
//! - `memory_search {query, tags, limit}` answers `{"content":[{"type":"text","text":…}]}` whose
//!   text is the values of the matching facts, newest first, one per line (empty when none). A
//!   fact matches when it carries every requested tag and, for a non-empty query, at least one
//!   query word appears (case-insensitively) in its key, value or tags. At most `limit` facts.
//! - another method or tool is a JSON-RPC error (-32601 / -32602).
//!
//! That text format — values one per line — is the one mesh7 assumes of mem7's search.
//!
//! The stand-in can also be made to misbehave: slow (answers after a delay), erroring (HTTP 500)
//! or malformed (200 with a body that is not JSON-RPC). A down mem7 is [`down_url`].

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How the stand-in answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    Normal,
    /// Answers normally after this delay.
    Slow(Duration),
    /// HTTP 500 with a JSON error body.
    Erroring,
    /// HTTP 200 with a body that is not a JSON-RPC answer.
    Malformed,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Fact {
    pub key: String,
    pub value: String,
    pub tags: Vec<String>,
    pub agent: String,
}

#[derive(Default)]
struct State {
    facts: Vec<Fact>,
    /// Every `tools/call` received: (tool name, arguments).
    calls: Vec<(String, Value)>,
}

/// A running stand-in; it stops accepting when dropped.
pub struct Mem7 {
    pub url: String,
    state: Arc<Mutex<State>>,
    behaviour: Arc<Mutex<Behaviour>>,
    stop: Arc<AtomicBool>,
    port: u16,
}

impl Mem7 {
    pub fn start() -> Mem7 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        let state = Arc::new(Mutex::new(State::default()));
        let behaviour = Arc::new(Mutex::new(Behaviour::Normal));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, b, stopping) = (state.clone(), behaviour.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (s, b) = (s.clone(), b.clone());
                std::thread::spawn(move || serve(conn, &s, &b));
            }
        });
        Mem7 {
            url: format!("http://127.0.0.1:{port}"),
            state,
            behaviour,
            stop,
            port,
        }
    }

    pub fn set(&self, behaviour: Behaviour) {
        *self.behaviour.lock().expect("behaviour lock") = behaviour;
    }

    /// Stores a fact through the protocol, as any mem7 client would.
    pub fn store(&self, key: &str, value: &str, tags: &[&str]) {
        let answer = self.rpc(
            "memory_store",
            &json!({"key": key, "value": value, "tags": tags, "agent": "test"}),
        );
        assert!(answer.get("result").is_some(), "store failed: {answer}");
    }

    /// Stores a decision as flux7 and mesh7 write them.
    pub fn decision(&self, n: usize, verdict: &str, agent: &str, tool: &str) {
        let (line, tag) = match verdict {
            "approved" => ("approved by cli:ann", "approved"),
            "rejected" => ("rejected by cli:ann", "denied"),
            "auto" => ("auto-approved by supervisor:mem7", "approved"),
            other => panic!("unknown verdict {other}"),
        };
        let agent_tag = format!("agent:{agent}");
        let mut tags = vec!["decision", tag, tool, agent_tag.as_str()];
        if verdict == "auto" {
            tags.push("auto");
        }
        self.store(
            &format!("decision.{tool}.seed{n:04}"),
            &format!("{line} — agent:{agent} tool:{tool}"),
            &tags,
        );
    }

    /// Searches through the protocol; the values found, one per element.
    pub fn search(&self, query: &str, tags: &[&str]) -> Vec<String> {
        let answer = self.rpc(
            "memory_search",
            &json!({"query": query, "tags": tags, "limit": 100}),
        );
        let text = answer["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_else(|| panic!("search failed: {answer}"))
            .to_owned();
        text.lines().map(str::to_owned).collect()
    }

    pub fn facts(&self) -> Vec<Fact> {
        self.state.lock().expect("state lock").facts.clone()
    }

    /// The arguments of every call of `tool` received so far.
    pub fn calls(&self, tool: &str) -> Vec<Value> {
        self.state
            .lock()
            .expect("state lock")
            .calls
            .iter()
            .filter(|(name, _)| name == tool)
            .map(|(_, args)| args.clone())
            .collect()
    }

    fn rpc(&self, tool: &str, arguments: &Value) -> Value {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                          "params": {"name": tool, "arguments": arguments}});
        let mut conn = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to mem7");
        let body = body.to_string();
        write!(
            conn,
            "POST /rpc HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .expect("send");
        let mut answer = String::new();
        conn.read_to_string(&mut answer).expect("read");
        let (_, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
        serde_json::from_str(body).expect("a JSON answer")
    }
}

impl Drop for Mem7 {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// A URL where no mem7 listens (the port was free a moment ago): mem7 is down.
pub fn down_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

fn serve(mut conn: TcpStream, state: &Mutex<State>, behaviour: &Mutex<Behaviour>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let Some((head, body)) = read_request(&mut conn) else {
        return;
    };
    let behaviour = *behaviour.lock().expect("behaviour lock");
    let (status, answer) = if !head.starts_with("POST /rpc ") {
        (404, r#"{"error":"not found"}"#.to_owned())
    } else {
        match behaviour {
            Behaviour::Erroring => (500, r#"{"error":"internal error"}"#.to_owned()),
            Behaviour::Malformed => (200, "<html>not json-rpc</html>".to_owned()),
            Behaviour::Normal | Behaviour::Slow(_) => {
                if let Behaviour::Slow(delay) = behaviour {
                    // The delay is what is under test: a slow daemon.
                    let until = Instant::now() + delay;
                    while let Some(left) = until.checked_duration_since(Instant::now()) {
                        std::thread::park_timeout(left);
                    }
                }
                (200, rpc(state, &body).to_string())
            }
        }
    };
    let _ = write!(
        conn,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
        answer.len()
    );
}

fn read_request(conn: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some((head, buf[head_end..head_end + length].to_vec()))
}

/// One JSON-RPC request against the store.
fn rpc(state: &Mutex<State>, body: &[u8]) -> Value {
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": "Parse error"}});
    };
    let id = request["id"].clone();
    let error = |code: i64, message: &str| json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}});
    if request["method"] != "tools/call" {
        return error(-32601, "Method not found");
    }
    let name = request["params"]["name"].as_str().unwrap_or("").to_owned();
    let args = request["params"]["arguments"].clone();
    let mut state = state.lock().expect("state lock");
    state.calls.push((name.clone(), args.clone()));
    let text = match name.as_str() {
        "memory_store" => {
            let str_of = |k: &str| args[k].as_str().unwrap_or("").to_owned();
            let fact = Fact {
                key: str_of("key"),
                value: str_of("value"),
                tags: strings(&args["tags"]),
                agent: str_of("agent"),
            };
            let text = format!("stored {}", fact.key);
            state.facts.retain(|f| f.key != fact.key);
            state.facts.push(fact);
            text
        }
        "memory_search" => {
            let tags = strings(&args["tags"]);
            let words: Vec<String> = args["query"]
                .as_str()
                .unwrap_or("")
                .split_whitespace()
                .map(str::to_lowercase)
                .collect();
            let limit = args["limit"]
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(10);
            let found: Vec<&str> = state
                .facts
                .iter()
                .rev()
                .filter(|f| tags.iter().all(|t| f.tags.contains(t)))
                .filter(|f| {
                    let hay = format!("{} {} {}", f.key, f.value, f.tags.join(" ")).to_lowercase();
                    words.is_empty() || words.iter().any(|w| hay.contains(w.as_str()))
                })
                .take(limit)
                .map(|f| f.value.as_str())
                .collect();
            found.join("\n")
        }
        _ => return error(-32602, &format!("Unknown tool: {name}")),
    };
    json!({"jsonrpc": "2.0", "id": id, "result": {"content": [{"type": "text", "text": text}]}})
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}
