//! What a supervisor (human or agent) is shown of an approval: the approval view, content
//! redaction (`supervisor.expose_content: false`) and the prompt-injection flag.
//!
//! Pure functions, no actors. Improvements over flux7 (§5.7 of the behaviour notes):
//! - the injection check visits object keys in sorted order, so it is deterministic;
//! - its patterns start (and where a word ends them, end) on word boundaries, so `contact as`
//!   or `exact assignment` do not read as `act as`.

use std::sync::LazyLock;
use std::time::SystemTime;

use mesh7_config::duration::format_secs;
use regex::RegexSet;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::approvals::{ApprovalRecord, ApprovalStatus};
use crate::trace::{Redactor, format_timestamp};

/// Keys whose string values are always redacted (compared case-insensitively).
const CONTENT_KEYS: [&str; 5] = ["content", "body", "data", "file_content", "text"];
/// Strings at least this long are redacted whatever their key.
const LONG_STRING: usize = 256;
/// How many leading bytes the binary check looks at.
const SNIFF_BYTES: usize = 512;

/// A deep copy of `params` where content-like strings are replaced by
/// `{"content_length","content_sha256","content_type_detected"}`: values of the keys `content`,
/// `body`, `data`, `file_content` and `text`, and any string of 256 bytes or more. Objects are
/// visited recursively; arrays are copied as they are.
pub fn redact(params: &Value) -> Value {
    match params {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, value)| (key.clone(), redact_entry(key, value)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn redact_entry(key: &str, value: &Value) -> Value {
    match value {
        Value::String(s)
            if s.len() >= LONG_STRING
                || CONTENT_KEYS.iter().any(|k| k.eq_ignore_ascii_case(key)) =>
        {
            json!({
                "content_length": s.len(),
                "content_sha256": hex::encode(Sha256::digest(s.as_bytes())),
                "content_type_detected": detect_content_type(s),
            })
        }
        Value::Object(_) => redact(value),
        other => other.clone(),
    }
}

/// A MIME guess for a redacted string, as flux7 makes it.
pub fn detect_content_type(s: &str) -> &'static str {
    let trimmed = s.trim();
    if trimmed.is_empty() {
        return "text/plain";
    }
    if trimmed.starts_with(['{', '['])
        && serde_json::from_str::<serde::de::IgnoredAny>(trimmed).is_ok()
    {
        return "application/json";
    }
    if trimmed.starts_with('<') {
        let head = trimmed.get(..14).unwrap_or(trimmed).to_ascii_lowercase();
        return if head.starts_with("<!doctype html") || head.starts_with("<html") {
            "text/html"
        } else {
            "text/xml"
        };
    }
    let binary = s
        .bytes()
        .take(SNIFF_BYTES)
        .any(|b| b < 0x09 || ((0x0e..=0x1f).contains(&b) && b != 0x1b));
    if binary {
        "application/octet-stream"
    } else {
        "text/plain"
    }
}

/// flux7's phrase list, anchored on word boundaries.
static INJECTION: LazyLock<RegexSet> = LazyLock::new(|| {
    RegexSet::new([
        r"(?i)\bignore\s+(all\s+)?previous\s+instructions\b",
        r"(?i)\byou\s+are\s+now\b",
        r"(?i)\bsystem\s*prompt\s*:",
        r"(?i)\boverride\s+(the\s+)?policy\b",
        r"(?i)\bpre-?approved\b",
        r"(?i)\bdo\s+not\s+deny\b",
        r"(?i)\bdo\s+not\s+escalate\b",
        r"(?i)\bmust\s+(be\s+)?approv",
        r"(?i)\bpretend\s+(you\s+are|to\s+be)\b",
        r"(?i)\bact\s+as\b",
        r"(?i)\bIMPORTANT\s*:\s*(this|override|approve|ignore)\b",
        r"(?i)\bconfidence\s+should\s+be\b",
    ])
    .expect("the injection patterns are valid regular expressions")
});

/// Whether any leaf value of `params` reads like an attempt to steer the approver.
pub fn injection_risk(params: &Value) -> bool {
    let mut text = String::new();
    concat_leaves(params, &mut text);
    INJECTION.is_match(&text)
}

/// Every leaf followed by a space; object keys in sorted order so the text (and so the answer)
/// never depends on insertion order.
fn concat_leaves(value: &Value, out: &mut String) {
    match value {
        Value::String(s) => out.push_str(s),
        Value::Null => out.push_str("<nil>"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::Array(items) => {
            for item in items {
                concat_leaves(item, out);
            }
            return;
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable();
            for key in keys {
                concat_leaves(&map[key.as_str()], out);
            }
            return;
        }
    }
    out.push(' ');
}

/// The approval as the list and detail routes show it (flux7's key order):
/// `id, agent_id, tool, params, policy_rule, status, created_at, remaining?, resolved_by?,
/// resolved_at?, reasoning?, confidence?, injection_risk?`. `remaining` only while pending;
/// `injection_risk` only when true (and computed on the raw params); `confidence` only when
/// not 0. With `trace.redact` (`secrets`), the arguments' secrets are replaced first, so that
/// neither they nor a digest of them (`expose_content: false`) is shown.
pub fn approval_view(
    r: &ApprovalRecord,
    now: SystemTime,
    expose_content: bool,
    secrets: Option<&Redactor>,
) -> Value {
    let mut view = Map::new();
    view.insert("id".into(), json!(r.id));
    view.insert("agent_id".into(), json!(r.agent_id));
    view.insert("tool".into(), json!(r.tool));
    let shown = match secrets {
        Some(redactor) => std::borrow::Cow::Owned(redactor.redacted(&r.params)),
        None => std::borrow::Cow::Borrowed(&r.params),
    };
    let params = if expose_content {
        shown.into_owned()
    } else {
        redact(&shown)
    };
    view.insert("params".into(), params);
    view.insert("policy_rule".into(), json!(r.policy_rule));
    view.insert("status".into(), json!(r.status));
    view.insert("created_at".into(), json!(format_timestamp(r.created_at)));
    if r.status == ApprovalStatus::Pending {
        view.insert("remaining".into(), json!(format_secs(r.remaining(now))));
    }
    if !r.resolved_by.is_empty() {
        view.insert("resolved_by".into(), json!(r.resolved_by));
    }
    if let Some(at) = r.resolved_at {
        view.insert("resolved_at".into(), json!(format_timestamp(at)));
    }
    if !r.reasoning.is_empty() {
        view.insert("reasoning".into(), json!(r.reasoning));
    }
    if r.confidence != 0.0 {
        view.insert("confidence".into(), json!(r.confidence));
    }
    if injection_risk(&r.params) {
        view.insert("injection_risk".into(), json!(true));
    }
    Value::Object(view)
}

#[cfg(test)]
mod tests;
