//! Rule conditions, v1 and v2, checked and compiled once per load and evaluated without
//! allocating (but for `*`, whose walk of the arguments keeps a stack).
//!
//! A condition node is a leaf `{field, operator, value}` or exactly one of `{all: [...]}`,
//! `{any: [...]}`, `{not: {...}}`, nesting freely.
//!
//! **Field.** A dot path walked through JSON objects (no array indexing). It resolves against
//! `{"params": args}` first, then against `args` itself, so `params.amount` and `amount` both
//! find `args.amount` (flux7 documented the first form but only the second worked). A root that
//! yields nothing or `null` passes on to the next one.
//!
//! **`*`** (mesh7): the field `"*"` stands for every scalar value of the arguments (strings,
//! numbers, booleans, at any depth, inside objects and lists); the leaf holds when its test holds
//! for at least one of them, e.g. `{field: "*", operator: matches, value: "sk-live-[a-z0-9]+"}`
//! catches a secret wherever it is passed. Only the operators that can be asked of "some value"
//! take it (`!=` and `not_in` would hold for almost any call); for the opposite, put the leaf
//! under `not`.
//!
//! **Operators.** A missing or `null` field makes every leaf false, `exists` included.
//! - `exists` (no `value`): the field is present and not `null`.
//! - `==`, `!=`: JSON equality; numbers compare numerically (`1 == 1.0`), and a param string
//!   that parses as a number compares numerically against a number `value`, as flux7 does.
//!   A type mismatch makes both false: `!=` stays fail closed.
//! - `<`, `<=`, `>`, `>=` (`value` a number): the param is a number or a numeric string.
//! - `in`, `not_in` (`value` a list): `in` holds when the param `==` some element; `not_in`
//!   when it `!=` every element (so an element of another type makes `not_in` false).
//! - `contains`: on a string param, a substring test (`value` a string); on a list param, a
//!   membership test, `value` being a string, number or boolean compared as by `==`.
//! - `starts_with`, `ends_with` (`value` a string): string params only.
//! - `matches` (`value` a regular expression, compiled at load): an unanchored search in a
//!   string param, like Go's `regexp.MatchString`; add `^…$` to anchor it.
//!
//! Numeric strings follow Rust's `f64` parser, which agrees with Go's `ParseFloat` on the
//! decimal forms (`12`, `-0.5`, `1e6`, `.5`, `inf`, `NaN`, no surrounding spaces); Go's hex
//! floats (`0x1p3`) are not numbers here.

use std::cmp::Ordering;

use regex::Regex;
use serde_json::{Number, Value};

use crate::schema::{ConditionConfig, Operator};

/// A compiled condition.
#[derive(Debug, Clone)]
pub struct Condition {
    root: Node,
}

/// A problem found while compiling a condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionError {
    /// Where, relative to the condition: `""` for the condition itself, then e.g.
    /// `all[1].value` or `not.field`.
    pub path: String,
    pub message: String,
}

#[derive(Debug, Clone)]
enum Node {
    Leaf(Leaf),
    All(Vec<Node>),
    Any(Vec<Node>),
    Not(Box<Node>),
}

#[derive(Debug, Clone)]
struct Leaf {
    field: FieldPath,
    test: Test,
}

#[derive(Debug, Clone)]
enum Test {
    Exists,
    Eq(Value),
    Ne(Value),
    Compare(Wanted, Number),
    In(Vec<Value>),
    NotIn(Vec<Value>),
    Contains(Value),
    StartsWith(String),
    EndsWith(String),
    Matches(Regex),
}

/// The orderings `<`, `<=`, `>` and `>=` accept.
#[derive(Debug, Clone, Copy)]
enum Wanted {
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
}

/// A field split once into its segments.
#[derive(Debug, Clone)]
struct FieldPath {
    segments: Vec<String>,
    /// The first segment is `params`: try the rest on `args` before the whole path.
    params_rooted: bool,
    /// The field is `*`: every scalar value of the arguments.
    any_value: bool,
}

/// The field that stands for every scalar value of the arguments.
pub const ANY_VALUE: &str = "*";

impl Condition {
    /// Checks the shape of every node and compiles regular expressions. Returns every problem
    /// found, not only the first.
    pub fn compile(config: &ConditionConfig) -> Result<Condition, Vec<ConditionError>> {
        let mut errors = Vec::new();
        match compile_node(config, "", &mut errors) {
            Some(root) if errors.is_empty() => Ok(Condition { root }),
            _ => Err(errors),
        }
    }

    /// Whether the condition holds for the tool arguments `args`.
    pub fn holds(&self, args: &Value) -> bool {
        self.root.holds(args)
    }
}

impl Node {
    fn holds(&self, args: &Value) -> bool {
        match self {
            Node::Leaf(leaf) => leaf.holds(args),
            Node::All(nodes) => nodes.iter().all(|n| n.holds(args)),
            Node::Any(nodes) => nodes.iter().any(|n| n.holds(args)),
            Node::Not(node) => !node.holds(args),
        }
    }
}

impl Leaf {
    fn holds(&self, args: &Value) -> bool {
        if self.field.any_value {
            return any_scalar(args, |param| self.test.holds(param));
        }
        let Some(param) = self.field.resolve(args) else {
            return false;
        };
        self.test.holds(param)
    }
}

/// Whether `test` holds for some string, number or boolean in `args`, at any depth. Walked with
/// a stack of its own, so the depth of the arguments cannot exhaust the thread's.
fn any_scalar(args: &Value, test: impl Fn(&Value) -> bool) -> bool {
    let mut stack = vec![args];
    while let Some(value) = stack.pop() {
        match value {
            Value::Object(map) => stack.extend(map.values()),
            Value::Array(items) => stack.extend(items),
            Value::Null => {}
            scalar => {
                if test(scalar) {
                    return true;
                }
            }
        }
    }
    false
}

impl Test {
    fn holds(&self, param: &Value) -> bool {
        match self {
            Test::Exists => true,
            Test::Eq(value) => compare_eq(param, value) == Some(true),
            Test::Ne(value) => compare_eq(param, value) == Some(false),
            Test::Compare(wanted, value) => {
                compare_order(param, value).is_some_and(|ord| match wanted {
                    Wanted::Less => ord == Ordering::Less,
                    Wanted::LessOrEqual => ord != Ordering::Greater,
                    Wanted::Greater => ord == Ordering::Greater,
                    Wanted::GreaterOrEqual => ord != Ordering::Less,
                })
            }
            Test::In(list) => list.iter().any(|v| compare_eq(param, v) == Some(true)),
            Test::NotIn(list) => list.iter().all(|v| compare_eq(param, v) == Some(false)),
            Test::Contains(value) => match param {
                Value::String(s) => value.as_str().is_some_and(|v| s.contains(v)),
                Value::Array(items) => items.iter().any(|i| compare_eq(i, value) == Some(true)),
                _ => false,
            },
            Test::StartsWith(prefix) => param.as_str().is_some_and(|s| s.starts_with(prefix)),
            Test::EndsWith(suffix) => param.as_str().is_some_and(|s| s.ends_with(suffix)),
            Test::Matches(re) => param.as_str().is_some_and(|s| re.is_match(s)),
        }
    }
}

impl FieldPath {
    fn parse(field: &str) -> FieldPath {
        let segments: Vec<String> = field.split('.').map(str::to_owned).collect();
        let params_rooted = segments.first().is_some_and(|s| s == "params");
        FieldPath {
            segments,
            params_rooted,
            any_value: field == ANY_VALUE,
        }
    }

    /// The param the path names, `None` when missing or `null`. `{"params": args}` is never
    /// built: a `params.` path is tried on `args` without its first segment.
    fn resolve<'v>(&self, args: &'v Value) -> Option<&'v Value> {
        if self.params_rooted
            && let Some(v) = walk(args, &self.segments[1..])
        {
            return Some(v);
        }
        walk(args, &self.segments)
    }
}

fn walk<'v>(mut value: &'v Value, segments: &[String]) -> Option<&'v Value> {
    for segment in segments {
        value = value.as_object()?.get(segment.as_str())?;
    }
    (!value.is_null()).then_some(value)
}

/// `Some(equal)` when param and value have comparable types, `None` on a type mismatch.
fn compare_eq(param: &Value, value: &Value) -> Option<bool> {
    match (param, value) {
        (Value::Number(a), Value::Number(b)) => Some(numbers_equal(a, b)),
        (Value::String(s), Value::Number(b)) => {
            let x = parse_number(s)?;
            Some(b.as_f64() == Some(x))
        }
        (Value::String(a), Value::String(b)) => Some(a == b),
        (Value::Bool(a), Value::Bool(b)) => Some(a == b),
        (Value::Array(_), Value::Array(_)) | (Value::Object(_), Value::Object(_)) => {
            Some(json_equal(param, value))
        }
        _ => None,
    }
}

/// JSON equality with numbers compared numerically; no string coercion inside lists and objects.
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => numbers_equal(x, y),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_equal(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

fn compare_order(param: &Value, value: &Number) -> Option<Ordering> {
    match param {
        Value::Number(n) => compare_numbers(n, value),
        Value::String(s) => parse_number(s)?.partial_cmp(&value.as_f64()?),
        _ => None,
    }
}

fn numbers_equal(a: &Number, b: &Number) -> bool {
    compare_numbers(a, b) == Some(Ordering::Equal)
}

/// Integers compare exactly (no rounding through `f64` past 2^53), anything else as `f64`.
fn compare_numbers(a: &Number, b: &Number) -> Option<Ordering> {
    if let (Some(x), Some(y)) = (as_integer(a), as_integer(b)) {
        return Some(x.cmp(&y));
    }
    a.as_f64()?.partial_cmp(&b.as_f64()?)
}

fn as_integer(n: &Number) -> Option<i128> {
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
}

fn parse_number(s: &str) -> Option<f64> {
    s.parse().ok()
}

fn operator_name(op: Operator) -> &'static str {
    match op {
        Operator::Eq => "==",
        Operator::Ne => "!=",
        Operator::Lt => "<",
        Operator::Le => "<=",
        Operator::Gt => ">",
        Operator::Ge => ">=",
        Operator::In => "in",
        Operator::NotIn => "not_in",
        Operator::Contains => "contains",
        Operator::StartsWith => "starts_with",
        Operator::EndsWith => "ends_with",
        Operator::Matches => "matches",
        Operator::Exists => "exists",
    }
}

fn join(path: &str, segment: &str) -> String {
    if path.is_empty() {
        segment.to_owned()
    } else {
        format!("{path}.{segment}")
    }
}

fn push(errors: &mut Vec<ConditionError>, path: String, message: impl Into<String>) {
    errors.push(ConditionError {
        path,
        message: message.into(),
    });
}

fn compile_node(
    config: &ConditionConfig,
    path: &str,
    errors: &mut Vec<ConditionError>,
) -> Option<Node> {
    let is_leaf = config.field.is_some() || config.operator.is_some() || config.value.is_some();
    let forms = [
        is_leaf,
        config.all.is_some(),
        config.any.is_some(),
        config.not.is_some(),
    ]
    .into_iter()
    .filter(|&present| present)
    .count();
    if forms == 0 {
        push(
            errors,
            path.to_owned(),
            "empty condition: expected field/operator/value, all, any or not",
        );
        return None;
    }
    if forms > 1 {
        push(
            errors,
            path.to_owned(),
            "a condition takes exactly one of field/operator/value, all, any or not",
        );
        return None;
    }
    if let Some(list) = &config.all {
        return compile_list(list, &join(path, "all"), errors).map(Node::All);
    }
    if let Some(list) = &config.any {
        return compile_list(list, &join(path, "any"), errors).map(Node::Any);
    }
    if let Some(inner) = &config.not {
        return compile_node(inner, &join(path, "not"), errors).map(|n| Node::Not(Box::new(n)));
    }
    compile_leaf(config, path, errors).map(Node::Leaf)
}

fn compile_list(
    list: &[ConditionConfig],
    path: &str,
    errors: &mut Vec<ConditionError>,
) -> Option<Vec<Node>> {
    if list.is_empty() {
        push(errors, path.to_owned(), "needs at least one condition");
        return None;
    }
    let mut nodes = Vec::with_capacity(list.len());
    let mut ok = true;
    for (i, item) in list.iter().enumerate() {
        match compile_node(item, &format!("{path}[{i}]"), errors) {
            Some(node) => nodes.push(node),
            None => ok = false,
        }
    }
    ok.then_some(nodes)
}

fn compile_leaf(
    config: &ConditionConfig,
    path: &str,
    errors: &mut Vec<ConditionError>,
) -> Option<Leaf> {
    let field = match config.field.as_deref() {
        None => {
            push(errors, join(path, "field"), "field is required");
            None
        }
        Some("") => {
            push(errors, join(path, "field"), "field must not be empty");
            None
        }
        Some(f) if f.split('.').any(str::is_empty) => {
            push(errors, join(path, "field"), "field has an empty segment");
            None
        }
        Some(f) => Some(FieldPath::parse(f)),
    };
    let Some(op) = config.operator else {
        push(errors, join(path, "operator"), "operator is required");
        return None;
    };
    if field.as_ref().is_some_and(|f| f.any_value) && matches!(op, Operator::Ne | Operator::NotIn) {
        push(
            errors,
            join(path, "operator"),
            format!(
                "field \"*\" (some value of the arguments) cannot take {}: it would hold for almost any call; put the opposite test under not",
                operator_name(op)
            ),
        );
        return None;
    }
    let test = compile_test(op, config.value.as_ref(), &join(path, "value"), errors);
    Some(Leaf {
        field: field?,
        test: test?,
    })
}

fn wrong(errors: &mut Vec<ConditionError>, path: &str, name: &str, expected: &str) -> Option<Test> {
    push(
        errors,
        path.to_owned(),
        format!("{name} needs {expected} value"),
    );
    None
}

fn compile_test(
    op: Operator,
    value: Option<&Value>,
    path: &str,
    errors: &mut Vec<ConditionError>,
) -> Option<Test> {
    let name = operator_name(op);
    let Some(value) = value else {
        if op == Operator::Exists {
            return Some(Test::Exists);
        }
        push(errors, path.to_owned(), format!("{name} needs a value"));
        return None;
    };
    match op {
        Operator::Exists => {
            push(errors, path.to_owned(), "exists takes no value");
            None
        }
        Operator::Eq => Some(Test::Eq(value.clone())),
        Operator::Ne => Some(Test::Ne(value.clone())),
        Operator::Lt | Operator::Le | Operator::Gt | Operator::Ge => match value {
            Value::Number(n) => {
                let wanted = match op {
                    Operator::Lt => Wanted::Less,
                    Operator::Le => Wanted::LessOrEqual,
                    Operator::Gt => Wanted::Greater,
                    _ => Wanted::GreaterOrEqual,
                };
                Some(Test::Compare(wanted, n.clone()))
            }
            _ => wrong(errors, path, name, "a number"),
        },
        Operator::In | Operator::NotIn => match value {
            Value::Array(list) if op == Operator::In => Some(Test::In(list.clone())),
            Value::Array(list) => Some(Test::NotIn(list.clone())),
            _ => wrong(errors, path, name, "a list"),
        },
        Operator::Contains => match value {
            Value::String(_) | Value::Number(_) | Value::Bool(_) => {
                Some(Test::Contains(value.clone()))
            }
            _ => wrong(errors, path, name, "a string, number or boolean"),
        },
        Operator::StartsWith | Operator::EndsWith => match value {
            Value::String(s) if op == Operator::StartsWith => Some(Test::StartsWith(s.clone())),
            Value::String(s) => Some(Test::EndsWith(s.clone())),
            _ => wrong(errors, path, name, "a string"),
        },
        Operator::Matches => match value {
            Value::String(s) => match Regex::new(s) {
                Ok(re) => Some(Test::Matches(re)),
                Err(e) => {
                    push(
                        errors,
                        path.to_owned(),
                        format!("invalid regular expression {s:?}: {}", one_line(&e)),
                    );
                    None
                }
            },
            _ => wrong(errors, path, name, "a string"),
        },
    }
}

/// The regex crate explains syntax errors over several lines (with a caret diagram); a config
/// error is one line, so keep its last line, which names the problem.
pub(crate) fn one_line(e: &regex::Error) -> String {
    let text = e.to_string();
    let last = text.lines().last().unwrap_or_default().trim();
    last.strip_prefix("error: ").unwrap_or(last).to_owned()
}
