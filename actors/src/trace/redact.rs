//! `trace.redact`: secrets replaced in a trace entry before the writer keeps it (ring) or
//! writes it (JSONL file, and so the chain: a sealed line never held the secret).
//!
//! A secret becomes `[redacted:<16 hex>]`, the first 8 bytes of HMAC-SHA256 under
//! `trace.hmac_key` (or, without one, a key drawn at start, so digests compare within one run
//! only) of the secret: a string's bytes, any other value's compact JSON. Equal secrets give
//! equal digests, so an auditor can still see that two calls carried the same token, and one
//! holding the key can check a suspected value; nobody can read it back. An unkeyed hash
//! would give away short secrets such as passwords to a dictionary.
//!
//! Applied on the writer's thread, off the caller's path. Fails closed: what is nested deeper
//! than `MAX_DEPTH` is replaced whole.

use aws_lc_rs::hmac;
use mesh7_config::redact::RedactRules;
use serde_json::Value;

use super::TraceEntry;

/// What every replacement starts with.
pub const MARKER_PREFIX: &str = "[redacted:";
/// Levels of nesting looked into; a value deeper than this is replaced whole.
const MAX_DEPTH: usize = 64;

/// The compiled `trace.redact` with its digest key.
pub struct Redactor {
    rules: RedactRules,
    key: hmac::Key,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl Redactor {
    /// `None` when there is nothing to redact. `secret` is `trace.hmac_key`.
    pub fn new(rules: RedactRules, secret: Option<&str>) -> Option<Redactor> {
        if rules.is_empty() {
            return None;
        }
        let key = match secret {
            Some(secret) => hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()),
            None => hmac::Key::new(hmac::HMAC_SHA256, &rand::random::<[u8; 32]>()),
        };
        Some(Redactor { rules, key })
    }

    /// Replaces the secrets of the entry's arguments and error message.
    pub fn apply(&self, entry: &mut TraceEntry) {
        self.params(&mut entry.params);
        if let Some(redacted) = self.text(&entry.error) {
            entry.error = redacted;
        }
    }

    /// Replaces the secrets of a call's arguments: for what shows or sends them elsewhere
    /// (approval views and webhooks).
    pub fn params(&self, params: &mut Value) {
        self.value(params, 0);
    }

    /// A copy of `params` with its secrets replaced.
    pub fn redacted(&self, params: &Value) -> Value {
        let mut copy = params.clone();
        self.params(&mut copy);
        copy
    }

    fn value(&self, value: &mut Value, depth: usize) {
        if depth >= MAX_DEPTH && matches!(value, Value::Object(_) | Value::Array(_)) {
            *value = Value::String(self.marker_of(value));
            return;
        }
        match value {
            Value::Object(map) => {
                for (name, item) in map.iter_mut() {
                    if self.rules.secret_key(name) {
                        *item = Value::String(self.marker_of(item));
                    } else {
                        self.value(item, depth + 1);
                    }
                }
            }
            Value::Array(items) => {
                for item in items {
                    self.value(item, depth + 1);
                }
            }
            Value::String(s) => {
                if let Some(redacted) = self.text(s) {
                    *s = redacted;
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }

    /// `text` with every match of the value patterns replaced; `None` when nothing matched.
    /// For what quotes a call's error elsewhere (exported spans).
    pub fn text(&self, text: &str) -> Option<String> {
        let mut out: Option<String> = None;
        for re in self.rules.value_patterns() {
            let current = out.as_deref().unwrap_or(text);
            if !re.is_match(current) {
                continue;
            }
            let replaced = re
                .replace_all(current, |caps: &regex::Captures<'_>| {
                    self.marker(caps[0].as_bytes())
                })
                .into_owned();
            out = Some(replaced);
        }
        out
    }

    fn marker_of(&self, value: &Value) -> String {
        match value {
            Value::String(s) => self.marker(s.as_bytes()),
            other => self.marker(other.to_string().as_bytes()),
        }
    }

    fn marker(&self, secret: &[u8]) -> String {
        let tag = hmac::sign(&self.key, secret);
        let mut out = String::with_capacity(MARKER_PREFIX.len() + 17);
        out.push_str(MARKER_PREFIX);
        for byte in &tag.as_ref()[..8] {
            out.push_str(&format!("{byte:02x}"));
        }
        out.push(']');
        out
    }
}

/// Whether `value` holds a replacement anywhere (a record written with `trace.redact`).
pub fn is_redacted(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains(MARKER_PREFIX),
        Value::Array(items) => items.iter().any(is_redacted),
        Value::Object(map) => map.values().any(is_redacted),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use mesh7_config::RedactConfig;
    use serde_json::json;

    use super::*;

    fn redactor(keys: &[&str], values: &[&str], secret: Option<&str>) -> Redactor {
        let cfg = RedactConfig {
            keys: keys.iter().map(|s| (*s).to_owned()).collect(),
            values: values.iter().map(|s| (*s).to_owned()).collect(),
        };
        Redactor::new(RedactRules::compile(&cfg).expect("compiles"), secret).expect("rules")
    }

    fn entry(params: Value, error: &str) -> TraceEntry {
        TraceEntry {
            params,
            error: error.to_owned(),
            ..TraceEntry::default()
        }
    }

    const KEY: Option<&str> = Some("a key of sixteen bytes or more");

    #[test]
    fn named_arguments_are_replaced_whole_at_any_depth() {
        let r = redactor(&["password", "*token*"], &[], KEY);
        let mut e = entry(
            json!({
                "user": "ann",
                "Password": "hunter2",
                "nested": {"auth": {"access_token": {"kind": "bearer", "value": "abc"}}},
                "list": [{"token": 42}, {"name": "kept"}],
            }),
            "",
        );
        r.apply(&mut e);
        let text = e.params.to_string();
        for secret in ["hunter2", "bearer", "abc", "42"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(e.params["user"], "ann");
        assert_eq!(e.params["list"][1]["name"], "kept");
        for redacted in [
            &e.params["Password"],
            &e.params["nested"]["auth"]["access_token"],
            &e.params["list"][0]["token"],
        ] {
            let s = redacted.as_str().expect("a marker");
            assert!(s.starts_with(MARKER_PREFIX) && s.ends_with(']'), "{s}");
            assert_eq!(s.len(), MARKER_PREFIX.len() + 17, "{s}");
        }
        assert!(is_redacted(&e.params));
    }

    #[test]
    fn patterns_replace_only_the_matching_text_in_strings_and_the_error() {
        let r = redactor(&[], &["sk-[A-Za-z0-9]{8,}", "AKIA[0-9A-Z]{16}"], KEY);
        let mut e = entry(
            json!({"command": "curl -H 'Bearer sk-abcdef123456' x", "n": 7,
                   "args": ["AKIAABCDEFGHIJKLMNOP", "plain"]}),
            "upstream said: bad key sk-abcdef123456",
        );
        r.apply(&mut e);
        let command = e.params["command"].as_str().expect("string");
        assert!(
            command.starts_with("curl -H 'Bearer [redacted:"),
            "{command}"
        );
        assert!(command.ends_with("]' x"), "{command}");
        assert!(
            e.params["args"][0]
                .as_str()
                .unwrap_or_default()
                .starts_with(MARKER_PREFIX)
        );
        assert_eq!(e.params["args"][1], "plain");
        assert_eq!(e.params["n"], 7);
        assert!(
            e.error.starts_with("upstream said: bad key [redacted:"),
            "{}",
            e.error
        );
        assert!(!e.error.contains("sk-abc"), "{}", e.error);
    }

    #[test]
    fn equal_secrets_give_equal_markers_under_one_key_and_others_under_another() {
        let one = redactor(&["password"], &[], KEY);
        let other = redactor(&["password"], &[], Some("another key, sixteen bytes+"));
        let marker = |r: &Redactor, secret: &str| {
            let mut e = entry(json!({"password": secret}), "");
            r.apply(&mut e);
            e.params["password"].as_str().expect("marker").to_owned()
        };
        assert_eq!(marker(&one, "hunter2"), marker(&one, "hunter2"));
        assert_ne!(marker(&one, "hunter2"), marker(&one, "hunter3"));
        assert_ne!(marker(&one, "hunter2"), marker(&other, "hunter2"));
        // Without trace.hmac_key: a key of the run, still a keyed digest.
        let unkeyed = redactor(&["password"], &[], None);
        assert_eq!(marker(&unkeyed, "hunter2"), marker(&unkeyed, "hunter2"));
        assert_ne!(marker(&unkeyed, "hunter2"), marker(&one, "hunter2"));
    }

    #[test]
    fn what_is_nested_too_deep_to_look_into_is_replaced_whole() {
        let r = redactor(&["password"], &[], KEY);
        let mut deep = json!({"password": "x", "leaf": "sk-secret"});
        for _ in 0..(MAX_DEPTH + 5) {
            deep = json!({ "next": deep });
        }
        let mut e = entry(json!({"outer": deep, "shallow": "kept"}), "");
        r.apply(&mut e);
        assert_eq!(e.params["shallow"], "kept");
        let text = e.params.to_string();
        assert!(!text.contains("sk-secret"), "{}", text.len());
        assert!(is_redacted(&e.params));
    }

    #[test]
    fn nothing_to_redact_is_no_redactor_and_a_plain_entry_is_not_redacted() {
        assert!(Redactor::new(RedactRules::default(), KEY).is_none());
        assert!(!is_redacted(&json!({"a": ["b", {"c": 1}], "d": null})));
    }
}
