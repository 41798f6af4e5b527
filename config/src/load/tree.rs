//! A YAML document as a tree that remembers the line of its keys and values, so that every
//! configuration error can name a line, and that keeps duplicate keys so they can be reported.
//!
//! The tree is built with the serde YAML parser itself: its zero-copy strings point into the
//! input (serde's `visit_borrowed_str` contract: borrowed data lives in the deserializer's
//! input), so the byte offset of every plain or simply quoted scalar gives its line, and the byte
//! after it tells a quoted scalar from a plain one. Numbers, booleans and strings with escapes
//! have no offset; they take the line of their key or of the nearest located parent.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// One step of a path into a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// Where a value sits in its document, shown as `policies[2].rules[0].action`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Path(Vec<Seg>);

impl Path {
    pub(crate) fn root() -> Self {
        Self::default()
    }

    pub(crate) fn key(&self, key: &str) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_owned()));
        Self(segs)
    }

    pub(crate) fn index(&self, index: usize) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(index));
        Self(segs)
    }

    pub(crate) fn join(&self, other: &Path) -> Self {
        let mut segs = self.0.clone();
        segs.extend(other.0.iter().cloned());
        Self(segs)
    }

    pub(crate) fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// Reads the display form back (`rules[0].condition.value`); keys are split at dots.
    pub(crate) fn parse(text: &str) -> Self {
        let mut segs = Vec::new();
        for part in text.split('.').filter(|p| !p.is_empty()) {
            let (key, mut indices) = part
                .split_once('[')
                .map_or((part, ""), |(k, rest)| (k, rest));
            if !key.is_empty() {
                segs.push(Seg::Key(key.to_owned()));
            }
            while let Some((number, rest)) = indices.split_once(']') {
                if let Ok(i) = number.trim_start_matches('[').parse() {
                    segs.push(Seg::Index(i));
                }
                indices = rest;
            }
        }
        Self(segs)
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Index(i) => write!(f, "[{i}]")?,
                Seg::Key(k) => {
                    if n > 0 {
                        f.write_str(".")?;
                    }
                    let plain = !k.is_empty()
                        && k.chars()
                            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-'));
                    if plain {
                        f.write_str(k)?;
                    } else {
                        write!(f, "{k:?}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// An error found in a document, before it is given the document's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub(crate) path: Path,
    pub(crate) line: Option<usize>,
    pub(crate) message: String,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    /// 1-based line, when known.
    pub(crate) line: Option<usize>,
    pub(crate) kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str {
        value: String,
        /// Written without quotes (only known for strings the parser could borrow).
        plain: bool,
    },
    /// A plain scalar that held a `${...}` reference: the field that receives it decides its type.
    Expanded(String),
    /// A value whose interpolation failed; its error is already reported.
    Poisoned,
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    pub(crate) fn new(kind: Kind, line: Option<usize>) -> Self {
        Self { line, kind }
    }

    /// Parses one YAML document. An empty document is `Null`.
    pub(crate) fn parse(text: &str) -> Result<Node, serde_yaml::Error> {
        let lines = LineIndex::new(text);
        let mut node = NodeSeed {
            text,
            lines: &lines,
        }
        .deserialize(serde_yaml::Deserializer::from_str(text))?;
        node.lift_lines();
        Ok(node)
    }

    /// A container's line is its first child's (the first key of a block mapping is on the
    /// mapping's first line).
    fn lift_lines(&mut self) {
        let first = match &mut self.kind {
            Kind::Seq(items) => {
                items.iter_mut().for_each(Node::lift_lines);
                items.first().and_then(|item| item.line)
            }
            Kind::Map(entries) => {
                for (key, value) in entries.iter_mut() {
                    key.lift_lines();
                    value.lift_lines();
                }
                entries.first().and_then(|(key, _)| key.line)
            }
            _ => None,
        };
        self.line = self.line.or(first);
    }

    /// The text of a string scalar.
    pub(crate) fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Str { value, .. } | Kind::Expanded(value) => Some(value),
            _ => None,
        }
    }

    /// How a key is shown in a path (non-string keys in their YAML form).
    pub(crate) fn key_text(&self) -> String {
        match &self.kind {
            Kind::Str { value, .. } | Kind::Expanded(value) => value.clone(),
            Kind::Null => "null".to_owned(),
            Kind::Bool(b) => b.to_string(),
            Kind::Int(i) => i.to_string(),
            Kind::UInt(u) => u.to_string(),
            Kind::Float(f) => f.to_string(),
            Kind::Poisoned | Kind::Seq(_) | Kind::Map(_) => "?".to_owned(),
        }
    }

    pub(crate) fn is_seq(&self) -> bool {
        matches!(self.kind, Kind::Seq(_))
    }

    /// The value under `key` in a mapping.
    pub(crate) fn get(&self, key: &str) -> Option<&Node> {
        match &self.kind {
            Kind::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The line of the value at `path`, if the tree knows it: the line of its key for a mapping
    /// entry, of the item for a sequence element.
    pub(crate) fn locate(&self, path: &Path) -> Option<usize> {
        let (found, line, _) = self.walk(path);
        if found { line } else { None }
    }

    /// The deepest line known along `path`, for when the exact one is not.
    pub(crate) fn locate_nearest(&self, path: &Path) -> Option<usize> {
        self.walk(path).2
    }

    /// Follows `path`: (whole path found, line of its last step, deepest line known).
    fn walk(&self, path: &Path) -> (bool, Option<usize>, Option<usize>) {
        let mut node = self;
        let (mut last, mut deepest) = (self.line, self.line);
        for seg in &path.0 {
            let next = match (seg, &node.kind) {
                (Seg::Key(key), Kind::Map(entries)) => entries
                    .iter()
                    .find(|(k, _)| k.key_text() == *key)
                    .map(|(k, v)| (k.line, v)),
                (Seg::Index(i), Kind::Seq(items)) => items.get(*i).map(|item| (item.line, item)),
                _ => None,
            };
            let Some((line, child)) = next else {
                return (false, None, deepest);
            };
            last = line;
            deepest = line.or(deepest);
            node = child;
        }
        (true, last, deepest)
    }

    /// Reports every key repeated in a mapping (YAML forbids them; serde would keep the last one
    /// silently) and drops the repeats, so the rest of the document is still checked.
    pub(crate) fn remove_duplicate_keys(&mut self, path: &Path, problems: &mut Vec<Problem>) {
        match &mut self.kind {
            Kind::Seq(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    item.remove_duplicate_keys(&path.index(i), problems);
                }
            }
            Kind::Map(entries) => {
                let mut seen: Vec<(String, Option<usize>)> = Vec::new();
                entries.retain(|(key, _)| {
                    let text = key.key_text();
                    if let Some((_, first)) = seen.iter().find(|(k, _)| *k == text) {
                        let first = first
                            .map_or_else(String::new, |l| format!(", first defined at line {l}"));
                        problems.push(Problem {
                            path: path.key(&text),
                            line: key.line,
                            message: format!("duplicate key{first}"),
                        });
                        false
                    } else {
                        seen.push((text, key.line));
                        true
                    }
                });
                for (key, value) in entries.iter_mut() {
                    value.remove_duplicate_keys(&path.key(&key.key_text()), problems);
                }
            }
            _ => {}
        }
    }
}

/// Byte offset → 1-based line.
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self { starts }
    }

    fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|&start| start <= offset)
    }
}

struct NodeSeed<'t> {
    text: &'t str,
    lines: &'t LineIndex,
}

impl<'de> DeserializeSeed<'de> for NodeSeed<'_> {
    type Value = Node;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl NodeSeed<'_> {
    fn child(&self) -> Self {
        NodeSeed {
            text: self.text,
            lines: self.lines,
        }
    }
}

impl<'de> Visitor<'de> for NodeSeed<'_> {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::new(Kind::Null, None))
    }

    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::new(Kind::Null, None))
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::new(Kind::Bool(v), None))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::new(Kind::Int(v), None))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::new(Kind::UInt(v), None))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Ok(Node::new(Kind::Float(v), None))
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Node, E> {
        let start = self.text.as_ptr().addr();
        let Some(offset) = v
            .as_ptr()
            .addr()
            .checked_sub(start)
            .filter(|o| *o <= self.text.len())
        else {
            return self.visit_str(v);
        };
        // A quoted scalar is borrowed without its quotes, so its closing quote follows it.
        let next = self.text.as_bytes().get(offset + v.len());
        let plain = !matches!(next, Some(b'"' | b'\''));
        let kind = Kind::Str {
            value: v.to_owned(),
            plain,
        };
        Ok(Node::new(kind, Some(self.lines.line(offset))))
    }

    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::new(
            Kind::Str {
                value: v.to_owned(),
                plain: false,
            },
            None,
        ))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self.child())? {
            items.push(item);
        }
        Ok(Node::new(Kind::Seq(items), None))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key_seed(self.child())? {
            let value = map.next_value_seed(self.child())?;
            entries.push((key, value));
        }
        Ok(Node::new(Kind::Map(entries), None))
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, _data: A) -> Result<Node, A::Error> {
        Err(de::Error::custom("YAML tags are not supported"))
    }
}

/// The line of the value at `path` found by the YAML parser itself: the document is read again,
/// ignoring everything off the path, and the value (or its key) answers with an error that the
/// parser stamps with its position. For values the tree could not place (numbers, booleans,
/// strings with escapes, empty elements).
pub(crate) fn line_in_text(text: &str, path: &Path) -> Option<usize> {
    let error = Walk { path: &path.0 }
        .deserialize(serde_yaml::Deserializer::from_str(text))
        .err()?;
    if !error.to_string().contains(HERE) {
        return None;
    }
    error.location().map(|l| l.line())
}

const HERE: &str = "mesh7: position marker";

struct Walk<'p> {
    path: &'p [Seg],
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

fn here<E: de::Error>() -> E {
    E::custom(HERE)
}

/// Answers with the marker when the value is the walk's target; elsewhere it only navigates.
impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(here())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(here())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(here())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(here())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(here())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(here())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Err(here())
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((Seg::Index(index), rest)) = self.path.split_first() else {
            return if self.path.is_empty() {
                Err(here())
            } else {
                Ok(())
            };
        };
        for _ in 0..*index {
            if seq.next_element::<de::IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        seq.next_element_seed(Walk { path: rest })?;
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((Seg::Key(target), rest)) = self.path.split_first() else {
            return if self.path.is_empty() {
                Err(here())
            } else {
                Ok(())
            };
        };
        while let Some(found) = map.next_key_seed(KeyWalk {
            target,
            last: rest.is_empty(),
        })? {
            if found {
                return map.next_value_seed(Walk { path: rest });
            }
            map.next_value::<de::IgnoredAny>()?;
        }
        Ok(())
    }
}

/// A mapping key: whether it is the one sought; the marker itself when it is the last step, so
/// that the parser stamps it with the key's position.
struct KeyWalk<'p> {
    target: &'p str,
    last: bool,
}

impl<'de> DeserializeSeed<'de> for KeyWalk<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl KeyWalk<'_> {
    fn check<E: de::Error>(&self, key: &str) -> Result<bool, E> {
        match (key == self.target, self.last) {
            (true, true) => Err(here()),
            (found, _) => Ok(found),
        }
    }
}

impl<'de> Visitor<'de> for KeyWalk<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        self.check(v)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        self.check(&v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
        self.check(&v.to_string())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
        self.check(&v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<bool, E> {
        self.check(&v.to_string())
    }

    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        self.check("null")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<de::IgnoredAny>()?.is_some() {}
        Ok(false)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map
            .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
            .is_some()
        {}
        Ok(false)
    }
}
