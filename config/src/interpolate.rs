//! `${VAR}` and `${VAR:-default}` expansion of configuration strings.
//!
//! Expansion works on values, not on the text: only string scalars are expanded (mapping keys are
//! not), after the YAML is parsed, so a variable can never inject YAML structure.
//!
//! - `${VAR}` is the variable's value; an unset variable is an error naming it.
//! - `${VAR:-default}` is the value, or `default` when the variable is unset or empty. The default
//!   is taken literally up to the first `}` (no nesting).
//! - `$$` is a literal `$`; a `$` not followed by `{` or `$` stays as it is.
//! - Typing: a plain (unquoted) scalar that held a reference is typed after expansion as YAML would
//!   type the result written in its place, so `port: ${PORT:-9090}` is a number and
//!   `enabled: ${ON:-true}` a boolean; an empty or `null` result is an absent optional value. A
//!   field that expects a string always receives the expanded text, so a token made of digits stays
//!   a string. A quoted scalar (`"${PORT}"`) is always a string. Inside a flow collection
//!   (`{ ... }`, `[ ... ]`) YAML reads `{` and `}` as structure, so a reference there must be
//!   quoted, hence a string; typed references go in block style.

use crate::load::tree::{Kind, Node, Path, Problem};

/// Looks a variable up; the process environment in production.
pub(crate) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Expands every string value of the tree in place, reporting each failure with its path.
pub(crate) fn expand_tree(node: &mut Node, path: &Path, env: Env<'_>, problems: &mut Vec<Problem>) {
    match &mut node.kind {
        Kind::Seq(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_tree(item, &path.index(i), env, problems);
            }
        }
        Kind::Map(entries) => {
            for (key, value) in entries.iter_mut() {
                expand_tree(value, &path.key(&key.key_text()), env, problems);
            }
        }
        Kind::Str { value, plain } => {
            let plain = *plain;
            node.kind = match expand(value, env) {
                Ok(expansion) if plain && expansion.substituted => Kind::Expanded(expansion.text),
                Ok(expansion) => Kind::Str {
                    value: expansion.text,
                    plain,
                },
                Err(messages) => {
                    problems.extend(messages.into_iter().map(|message| Problem {
                        path: path.clone(),
                        line: node.line,
                        message,
                    }));
                    Kind::Poisoned
                }
            };
        }
        _ => {}
    }
}

pub(crate) struct Expansion {
    pub(crate) text: String,
    /// At least one `${...}` was replaced.
    pub(crate) substituted: bool,
}

/// Expands one string; the errors name each unset variable or malformed reference.
pub(crate) fn expand(input: &str, env: Env<'_>) -> Result<Expansion, Vec<String>> {
    if !input.contains('$') {
        return Ok(Expansion {
            text: input.to_owned(),
            substituted: false,
        });
    }
    let mut text = String::with_capacity(input.len());
    let mut errors = Vec::new();
    let mut substituted = false;
    let mut rest = input;
    while let Some(dollar) = rest.find('$') {
        text.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            text.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(close) = body.find('}') else {
                errors.push(format!(
                    "unterminated variable reference {:?}",
                    &rest[dollar..]
                ));
                rest = "";
                break;
            };
            let reference = &body[..close];
            rest = &body[close + 1..];
            let (name, default) = match reference.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (reference, None),
            };
            if !is_variable_name(name) {
                errors.push(format!(
                    "invalid variable name {name:?} in \"${{{reference}}}\""
                ));
                continue;
            }
            substituted = true;
            match (env(name), default) {
                (Some(value), Some(default)) if value.is_empty() => text.push_str(default),
                (Some(value), _) => text.push_str(&value),
                (None, Some(default)) => text.push_str(default),
                (None, None) => errors.push(format!("environment variable {name:?} is not set")),
            }
        } else {
            text.push('$');
            rest = after;
        }
    }
    text.push_str(rest);
    if errors.is_empty() {
        Ok(Expansion { text, substituted })
    } else {
        Err(errors)
    }
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
