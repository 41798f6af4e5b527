//! A serde `Deserializer` over a located [`Node`] tree that reports errors with their path and
//! line instead of stopping at the first one.
//!
//! Each error is recorded where it happens, in a shared [`Sink`], and travels up as
//! [`DeError::Reported`]. Unknown keys are found before the struct sees its map (serde gives the
//! field names to `deserialize_struct`), so every unknown key of a struct is reported, with the
//! closest known name, and the struct is still checked. Errors that abort a value (a wrong type,
//! an unknown enum value) end that value only; the loader deserializes list elements and top-level
//! entries one by one to report the others.

use std::cell::RefCell;
use std::fmt;

use serde::de::value::StrDeserializer;
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Expected, IntoDeserializer, Unexpected, Visitor,
};
use serde::forward_to_deserialize_any;

use crate::load::tree::{Kind, Node, Path, Problem};

/// Where errors are collected while deserializing.
#[derive(Debug, Default)]
pub(crate) struct Sink(RefCell<Vec<Problem>>);

impl Sink {
    pub(crate) fn len(&self) -> usize {
        self.0.borrow().len()
    }

    pub(crate) fn push(&self, problem: Problem) {
        self.0.borrow_mut().push(problem);
    }

    pub(crate) fn into_problems(self) -> Vec<Problem> {
        self.0.into_inner()
    }
}

/// Deserializes `node`; `None` if anything in it was reported to `sink`.
pub(crate) fn from_node<T: DeserializeOwned>(node: &Node, path: &Path, sink: &Sink) -> Option<T> {
    let before = sink.len();
    let de = NodeDe {
        node,
        path: path.clone(),
        line: node.line,
        sink,
    };
    match T::deserialize(de) {
        Ok(value) if sink.len() == before => Some(value),
        Ok(_) | Err(DeError::Reported) => None,
        Err(other) => {
            sink.push(Problem {
                path: path.clone(),
                line: node.line,
                message: other.to_string(),
            });
            None
        }
    }
}

#[derive(Debug)]
pub(crate) enum DeError {
    Message(String),
    MissingField(&'static str),
    /// Already in the sink.
    Reported,
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeError::Message(m) => f.write_str(m),
            DeError::MissingField(field) => write!(f, "missing required field '{field}'"),
            DeError::Reported => f.write_str("error already reported"),
        }
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError::Message(msg.to_string())
    }

    fn invalid_type(unexpected: Unexpected<'_>, expected: &dyn Expected) -> Self {
        DeError::Message(format!(
            "invalid type: {}, expected {expected}",
            describe(&unexpected)
        ))
    }

    fn invalid_value(unexpected: Unexpected<'_>, expected: &dyn Expected) -> Self {
        DeError::Message(format!(
            "invalid value: {}, expected {expected}",
            describe(&unexpected)
        ))
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        DeError::Message(unknown_value_message(variant, expected))
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        DeError::Message(unknown_field_message(field, expected))
    }

    fn missing_field(field: &'static str) -> Self {
        DeError::MissingField(field)
    }
}

fn describe(unexpected: &Unexpected<'_>) -> String {
    match unexpected {
        Unexpected::Unit | Unexpected::Option => "null".to_owned(),
        other => other.to_string(),
    }
}

/// `unknown value "alow" (expected allow, deny or human_approval), did you mean `allow`?`
pub(crate) fn unknown_value_message(value: &str, expected: &[&str]) -> String {
    let mut message = format!("unknown value {value:?} (expected {})", one_of(expected));
    if let Some(close) = closest(value, expected) {
        message.push_str(&format!(", did you mean `{close}`?"));
    }
    message
}

fn unknown_field_message(field: &str, expected: &[&str]) -> String {
    match closest(field, expected) {
        Some(close) => format!("unknown field, did you mean `{close}`?"),
        None if expected.is_empty() => "unknown field (no fields expected)".to_owned(),
        None => format!("unknown field (expected {})", one_of(expected)),
    }
}

/// `a`, `a or b`, `a, b or c`.
pub(crate) fn one_of(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [only] => (*only).to_owned(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// The candidate nearest to `input` by edit distance (transpositions count once), if it is close
/// enough to be a likely typo: at most two edits, and fewer than half of the longer word.
pub(crate) fn closest<'a>(input: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let input = input.to_lowercase();
    candidates
        .iter()
        .map(|&c| (edit_distance(&input, &c.to_lowercase()), c))
        .filter(|&(d, c)| d <= 2 && d * 2 < input.chars().count().max(c.chars().count()))
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// Optimal string alignment distance.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// A scalar written as a `${...}` reference, typed as YAML would type the expanded text.
enum Resolved<'a> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(&'a str),
}

fn resolve(text: &str) -> Resolved<'_> {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Resolved::Null,
        "true" | "True" | "TRUE" => return Resolved::Bool(true),
        "false" | "False" | "FALSE" => return Resolved::Bool(false),
        _ => {}
    }
    if let Ok(u) = text.parse::<u64>() {
        return Resolved::UInt(u);
    }
    if let Ok(i) = text.parse::<i64>() {
        return Resolved::Int(i);
    }
    // Rust also reads `inf` and `NaN`; YAML numbers are digits, a point, a sign and an exponent.
    let numeric = text
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'));
    if numeric
        && text.chars().any(|c| c.is_ascii_digit())
        && let Ok(f) = text.parse::<f64>()
    {
        return Resolved::Float(f);
    }
    Resolved::Str(text)
}

fn report_at(sink: &Sink, path: &Path, line: Option<usize>, error: DeError) -> DeError {
    let message = match error {
        DeError::Reported => return DeError::Reported,
        DeError::Message(message) => message,
        missing @ DeError::MissingField(_) => missing.to_string(),
    };
    sink.push(Problem {
        path: path.clone(),
        line,
        message,
    });
    DeError::Reported
}

struct NodeDe<'a> {
    node: &'a Node,
    path: Path,
    /// The line shown for an error here: the key's line for a mapping value.
    line: Option<usize>,
    sink: &'a Sink,
}

impl<'a> NodeDe<'a> {
    fn child(&self, node: &'a Node, path: Path, line: Option<usize>) -> NodeDe<'a> {
        NodeDe {
            node,
            path,
            line: line.or(node.line),
            sink: self.sink,
        }
    }

    /// Records an error raised at this node, once.
    fn report(&self, error: DeError) -> DeError {
        report_at(self.sink, &self.path, self.line, error)
    }

    fn seq(&self, items: &'a [Node]) -> SeqDe<'a> {
        SeqDe {
            parent: self.child(self.node, self.path.clone(), self.line),
            items: items.iter().enumerate(),
        }
    }

    fn map(&self, entries: Vec<&'a (Node, Node)>) -> MapDe<'a> {
        MapDe {
            parent: self.child(self.node, self.path.clone(), self.line),
            entries: entries.into_iter(),
            pending: None,
        }
    }

    fn any<'de, V: Visitor<'de>>(&self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.kind {
            Kind::Null => visitor.visit_unit(),
            Kind::Bool(b) => visitor.visit_bool(*b),
            Kind::Int(i) => visitor.visit_i64(*i),
            Kind::UInt(u) => visitor.visit_u64(*u),
            Kind::Float(f) => visitor.visit_f64(*f),
            Kind::Str { value, .. } => visitor.visit_str(value),
            Kind::Expanded(text) => match resolve(text) {
                Resolved::Null => visitor.visit_unit(),
                Resolved::Bool(b) => visitor.visit_bool(b),
                Resolved::Int(i) => visitor.visit_i64(i),
                Resolved::UInt(u) => visitor.visit_u64(u),
                Resolved::Float(f) => visitor.visit_f64(f),
                Resolved::Str(s) => visitor.visit_str(s),
            },
            Kind::Poisoned => Err(DeError::Reported),
            Kind::Seq(items) => visitor.visit_seq(self.seq(items)),
            Kind::Map(entries) => visitor.visit_map(self.map(entries.iter().collect())),
        }
    }

    fn unexpected(&self) -> Unexpected<'a> {
        match &self.node.kind {
            Kind::Null | Kind::Poisoned => Unexpected::Unit,
            Kind::Bool(b) => Unexpected::Bool(*b),
            Kind::Int(i) => Unexpected::Signed(*i),
            Kind::UInt(u) => Unexpected::Unsigned(*u),
            Kind::Float(f) => Unexpected::Float(*f),
            Kind::Str { value, .. } | Kind::Expanded(value) => Unexpected::Str(value),
            Kind::Seq(_) => Unexpected::Seq,
            Kind::Map(_) => Unexpected::Map,
        }
    }

    /// Unknown keys are reported here, each with its own path and line, and left out of the
    /// map the struct sees. A missing field that one of them probably meant is not reported twice.
    fn strict_struct<'de, V: Visitor<'de>>(
        &self,
        entries: &'a [(Node, Node)],
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let mut known = Vec::with_capacity(entries.len());
        let mut meant = Vec::new();
        for entry in entries {
            let key = &entry.0;
            if key.as_str().is_some_and(|k| fields.contains(&k)) {
                known.push(entry);
                continue;
            }
            let text = key.key_text();
            self.sink.push(Problem {
                path: self.path.key(&text),
                line: key.line,
                message: unknown_field_message(&text, fields),
            });
            meant.extend(closest(&text, fields));
        }
        match visitor.visit_map(self.map(known)) {
            Err(DeError::MissingField(field)) if meant.contains(&field) => Err(DeError::Reported),
            other => other,
        }
    }
}

impl<'de> de::Deserializer<'de> for NodeDe<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.any(visitor).map_err(|e| self.report(e))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let absent = match &self.node.kind {
            Kind::Null => true,
            Kind::Expanded(text) => matches!(resolve(text), Resolved::Null),
            Kind::Poisoned => return Err(DeError::Reported),
            _ => false,
        };
        if absent {
            visitor.visit_none().map_err(|e| self.report(e))
        } else {
            let (path, line, sink) = (self.path.clone(), self.line, self.sink);
            visitor
                .visit_some(self)
                .map_err(|e| report_at(sink, &path, line, e))
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let result = match &self.node.kind {
            Kind::Str { value: text, .. } | Kind::Expanded(text) => visitor.visit_str(text),
            _ => self.any(visitor),
        };
        result.map_err(|e| self.report(e))
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let result = match &self.node.kind {
            Kind::Str { value: text, .. } | Kind::Expanded(text) => visitor.visit_str(text),
            Kind::Poisoned => Err(DeError::Reported),
            _ => Err(de::Error::invalid_type(self.unexpected(), &visitor)),
        };
        result.map_err(|e| self.report(e))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let result = match &self.node.kind {
            // `key:` with nothing under it is an empty list, as flux7 reads it.
            Kind::Null => visitor.visit_seq(self.seq(&[])),
            _ => self.any(visitor),
        };
        result.map_err(|e| self.report(e))
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let result = match &self.node.kind {
            Kind::Null => visitor.visit_map(self.map(Vec::new())),
            _ => self.any(visitor),
        };
        result.map_err(|e| self.report(e))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let result = match &self.node.kind {
            Kind::Map(entries) => self.strict_struct(entries, fields, visitor),
            // `section:` with nothing under it is the section's defaults, as flux7 reads it.
            Kind::Null => visitor.visit_map(self.map(Vec::new())),
            Kind::Poisoned => Err(DeError::Reported),
            // Not `any`: serde's derived structs would also accept a sequence of field values.
            _ => Err(de::Error::invalid_type(self.unexpected(), &"a mapping")),
        };
        result.map_err(|e| self.report(e))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let result = match &self.node.kind {
            Kind::Str { value: text, .. } | Kind::Expanded(text) => {
                let variant: StrDeserializer<'_, DeError> = text.as_str().into_deserializer();
                visitor.visit_enum(variant)
            }
            Kind::Poisoned => Err(DeError::Reported),
            _ => Err(DeError::Message(format!(
                "invalid type: {}, expected {}",
                describe(&self.unexpected()),
                one_of(variants)
            ))),
        };
        result.map_err(|e| self.report(e))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let (path, line, sink) = (self.path.clone(), self.line, self.sink);
        visitor
            .visit_newtype_struct(self)
            .map_err(|e| report_at(sink, &path, line, e))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf
        unit unit_struct tuple tuple_struct
    }
}

struct SeqDe<'a> {
    parent: NodeDe<'a>,
    items: std::iter::Enumerate<std::slice::Iter<'a, Node>>,
}

impl<'de> de::SeqAccess<'de> for SeqDe<'_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let Some((i, item)) = self.items.next() else {
            return Ok(None);
        };
        let de = self
            .parent
            .child(item, self.parent.path.index(i), item.line);
        seed.deserialize(de).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct MapDe<'a> {
    parent: NodeDe<'a>,
    entries: std::vec::IntoIter<&'a (Node, Node)>,
    pending: Option<&'a (Node, Node)>,
}

impl<'de> de::MapAccess<'de> for MapDe<'_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some(entry) = self.entries.next() else {
            return Ok(None);
        };
        self.pending = Some(entry);
        let key = &entry.0;
        let de = self
            .parent
            .child(key, self.parent.path.key(&key.key_text()), key.line);
        seed.deserialize(de).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let Some((key, value)) = self.pending.take() else {
            return Err(DeError::Message(
                "a map value was read before its key".to_owned(),
            ));
        };
        let de = self
            .parent
            .child(value, self.parent.path.key(&key.key_text()), key.line);
        seed.deserialize(de)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}
