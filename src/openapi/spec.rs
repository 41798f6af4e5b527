//! Spec parsing: an OpenAPI 3.0 / 3.1 or Swagger 2.0 document (JSON or YAML) → the operations
//! mesh7 exposes as tools, each with its parameters, its body and an `inputSchema` built from
//! the spec's real schemas.
//!
//! Pure functions over `serde_json::Value`: no I/O. Local `$ref`s (`#/…`) are inlined; a schema
//! that refers to itself is cut at the repetition (`{}`, any value), and the whole expansion is
//! bounded so that a small spec cannot expand into a huge one.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use url::Url;

/// Methods that become tools, in the order they are listed (HEAD, OPTIONS and TRACE do not).
const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];
/// Most JSON nodes a spec's tools may expand to once `$ref`s are inlined.
const MAX_EXPANDED_NODES: usize = 1_000_000;
/// Deepest `$ref` chain followed (each level may nest up to the parser's own depth limit).
const MAX_REF_DEPTH: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("parse spec: {0}")]
    Parse(String),
    #[error("not an OpenAPI 3.x or Swagger 2.0 document (no `openapi` or `swagger` version)")]
    UnknownVersion,
    #[error("no paths found in spec")]
    NoPaths,
    #[error("{at}: {message}")]
    Invalid { at: String, message: String },
    #[error("{0}")]
    Ref(String),
}

/// Where a parameter goes in the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    Path,
    Query,
    Header,
    Cookie,
}

impl Location {
    pub fn as_str(self) -> &'static str {
        match self {
            Location::Path => "path",
            Location::Query => "query",
            Location::Header => "header",
            Location::Cookie => "cookie",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub name: String,
    pub location: Location,
    pub required: bool,
    /// The parameter's JSON schema, `$ref`s inlined.
    pub schema: Value,
}

impl Param {
    /// The schema's `type` as flux7's `/tools` shows it (`string` when absent).
    pub fn type_name(&self) -> &str {
        match self.schema.get("type") {
            Some(Value::String(t)) => t,
            Some(Value::Array(ts)) => ts
                .iter()
                .filter_map(Value::as_str)
                .find(|t| *t != "null")
                .unwrap_or("string"),
            _ => "string",
        }
    }
}

/// How the request body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    Json,
    /// `application/x-www-form-urlencoded` (and Swagger 2 `formData`).
    Form,
}

/// How the body appears among the tool's arguments.
#[derive(Debug, Clone, PartialEq)]
pub enum BodyShape {
    /// An object body whose properties are arguments of their own; these are its property names.
    Properties(Vec<String>),
    /// Any other body: one argument, `body`.
    Whole,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Body {
    pub media: Media,
    pub shape: BodyShape,
    pub required: bool,
}

/// One operation, ready to be registered as a tool.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    /// Tool name without namespace: snake_case `operationId`, else `<method>_<path>`.
    pub name: String,
    /// Upper case (`GET`).
    pub method: String,
    /// The path template (`/pets/{petId}`).
    pub path: String,
    pub description: String,
    pub params: Vec<Param>,
    pub body: Option<Body>,
    /// JSON schema of the tool's arguments.
    pub input_schema: Value,
}

/// Parses a spec document: JSON when it is JSON, else YAML.
pub fn parse_document(text: &str) -> Result<Value, SpecError> {
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    if trimmed.starts_with('{') {
        return serde_json::from_str(trimmed).map_err(|e| SpecError::Parse(e.to_string()));
    }
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(trimmed).map_err(|e| SpecError::Parse(e.to_string()))?;
    Ok(yaml_to_json(yaml))
}

/// YAML → JSON, with non-string keys (`200:` response codes) written as strings.
fn yaml_to_json(v: serde_yaml::Value) -> Value {
    use serde_yaml::Value as Y;
    match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                json!(i)
            } else if let Some(u) = n.as_u64() {
                json!(u)
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map_or(Value::Null, Value::Number)
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(items.into_iter().map(yaml_to_json).collect()),
        Y::Mapping(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (yaml_key(k), yaml_to_json(v)))
                .collect(),
        ),
        Y::Tagged(tagged) => yaml_to_json(tagged.value),
    }
}

fn yaml_key(k: serde_yaml::Value) -> String {
    match yaml_to_json(k) {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Swagger2,
    OpenApi3,
}

pub fn version(doc: &Value) -> Result<Version, SpecError> {
    let text = |k: &str| match doc.get(k) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    if let Some(v) = text("openapi")
        && v.starts_with('3')
    {
        return Ok(Version::OpenApi3);
    }
    if let Some(v) = text("swagger")
        && v.starts_with('2')
    {
        return Ok(Version::Swagger2);
    }
    Err(SpecError::UnknownVersion)
}

/// The backend base URL the spec declares: OpenAPI 3 `servers[0]` (variables at their
/// defaults), Swagger 2 `schemes`/`host`/`basePath`. Relative URLs are resolved against
/// `spec_url`; `None` when the spec declares nothing usable.
pub fn base_url(doc: &Value, spec_url: Option<&Url>) -> Option<String> {
    let declared = match version(doc).ok()? {
        Version::OpenApi3 => {
            let server = doc.get("servers")?.as_array()?.first()?;
            let mut url = server.get("url")?.as_str()?.to_owned();
            if let Some(vars) = server.get("variables").and_then(Value::as_object) {
                for (name, var) in vars {
                    if let Some(default) = var.get("default").and_then(Value::as_str) {
                        url = url.replace(&format!("{{{name}}}"), default);
                    }
                }
            }
            url
        }
        Version::Swagger2 => {
            let base_path = doc.get("basePath").and_then(Value::as_str).unwrap_or("");
            match doc.get("host").and_then(Value::as_str) {
                Some(host) => {
                    let scheme = doc
                        .get("schemes")
                        .and_then(Value::as_array)
                        .and_then(|s| s.first())
                        .and_then(Value::as_str)
                        .unwrap_or("https");
                    format!("{scheme}://{host}{base_path}")
                }
                // "If the host is not included, the host serving the documentation is used."
                None => format!("/{}", base_path.trim_start_matches('/')),
            }
        }
    };
    if Url::parse(&declared).is_ok() {
        return Some(declared);
    }
    let joined = spec_url?.join(&declared).ok()?;
    Some(joined.to_string())
}

/// Every operation of the document, in path then method order.
pub fn operations(doc: &Value) -> Result<Vec<Operation>, SpecError> {
    let version = version(doc)?;
    let paths = match doc.get("paths") {
        Some(Value::Object(p)) if !p.is_empty() => p,
        _ => return Err(SpecError::NoPaths),
    };
    let mut refs = Refs::new(doc);
    let mut out = Vec::new();
    for (path, item) in paths {
        let item = refs.deref(item, &format!("paths.{path}"))?;
        let Some(item) = item.as_object() else {
            continue;
        };
        let shared = item.get("parameters").cloned().unwrap_or(Value::Null);
        for method in METHODS {
            let Some(op) = item.get(method) else {
                continue;
            };
            let at = format!("paths.{path}.{method}");
            out.push(operation(
                &mut refs, version, path, method, op, &shared, &at,
            )?);
        }
    }
    Ok(out)
}

fn operation(
    refs: &mut Refs<'_>,
    version: Version,
    path: &str,
    method: &str,
    op: &Value,
    shared: &Value,
    at: &str,
) -> Result<Operation, SpecError> {
    let op = op.as_object().ok_or_else(|| SpecError::Invalid {
        at: at.to_owned(),
        message: "an operation must be an object".to_owned(),
    })?;
    let name = match op.get("operationId").and_then(Value::as_str) {
        Some(id) if !id.trim().is_empty() => snake_case(id.trim()),
        _ => path_name(method, path),
    };
    let description = ["summary", "description"]
        .iter()
        .find_map(|k| op.get(*k).and_then(Value::as_str).filter(|s| !s.is_empty()))
        .unwrap_or("")
        .trim()
        .to_owned();

    // Operation-level parameters override path-level ones with the same name and location.
    let item_at = at.rsplit_once('.').map_or(at, |(item, _)| item);
    let mut raw: Vec<(String, String, Value)> = Vec::new();
    for (list, list_at) in [
        (shared, format!("{item_at}.parameters")),
        (
            op.get("parameters").unwrap_or(&Value::Null),
            format!("{at}.parameters"),
        ),
    ] {
        let Some(items) = list.as_array() else {
            continue;
        };
        for (i, p) in items.iter().enumerate() {
            let p = refs.deref(p, &format!("{list_at}[{i}]"))?.clone();
            let name = p
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let location = p
                .get("in")
                .and_then(Value::as_str)
                .unwrap_or("query")
                .to_owned();
            if name.is_empty() {
                return Err(SpecError::Invalid {
                    at: format!("{list_at}[{i}]"),
                    message: "a parameter needs a name".to_owned(),
                });
            }
            raw.retain(|(n, l, _)| !(n == &name && l == &location));
            raw.push((name, location, p));
        }
    }

    let mut params = Vec::new();
    let mut form_fields: Vec<(String, bool, Value)> = Vec::new();
    let mut body_param: Option<(bool, Value)> = None;
    for (name, location, p) in raw {
        let required = p.get("required").and_then(Value::as_bool).unwrap_or(false);
        let location = match location.as_str() {
            "path" => Location::Path,
            "query" => Location::Query,
            "header" => Location::Header,
            "cookie" => Location::Cookie,
            "body" => {
                let schema = p.get("schema").cloned().unwrap_or_else(|| json!({}));
                body_param = Some((required, refs.schema(&schema)?));
                continue;
            }
            "formData" => {
                form_fields.push((name, required, with_description(v2_schema(&p), &p)));
                continue;
            }
            other => {
                return Err(SpecError::Invalid {
                    at: at.to_owned(),
                    message: format!("parameter {name:?} has an unknown location {other:?}"),
                });
            }
        };
        let schema = match (version, p.get("schema")) {
            (_, Some(s)) => refs.schema(s)?,
            // OpenAPI 3 `content` parameters: the schema of the first media type.
            (Version::OpenApi3, None) => match first_content_schema(&p) {
                Some(s) => refs.schema(&s)?,
                None => json!({"type": "string"}),
            },
            (Version::Swagger2, None) => v2_schema(&p),
        };
        params.push(Param {
            required: required || location == Location::Path,
            name,
            location,
            schema: with_description(schema, &p),
        });
    }

    let body_schema: Option<(Media, bool, Value)> = if let Some((required, schema)) = body_param {
        Some((Media::Json, required, schema))
    } else if !form_fields.is_empty() {
        let required: Vec<Value> = form_fields
            .iter()
            .filter(|(_, r, _)| *r)
            .map(|(n, _, _)| json!(n))
            .collect();
        let props: Map<String, Value> = form_fields.into_iter().map(|(n, _, s)| (n, s)).collect();
        let any_required = !required.is_empty();
        Some((
            Media::Form,
            any_required,
            json!({"type": "object", "properties": props, "required": required}),
        ))
    } else if let Some(rb) = op.get("requestBody") {
        let rb = refs.deref(rb, &format!("{at}.requestBody"))?.clone();
        let required = rb.get("required").and_then(Value::as_bool).unwrap_or(false);
        let (media, schema) = pick_content(&rb);
        Some((media, required, refs.schema(&schema)?))
    } else {
        None
    };

    let mut properties = Map::new();
    let mut required = Vec::new();
    for p in &params {
        properties.insert(p.name.clone(), p.schema.clone());
        if p.required {
            required.push(json!(p.name));
        }
    }
    let body = body_schema.map(|(media, body_required, schema)| {
        let (props, props_required) = object_properties(&schema);
        let flat = !props.is_empty() && props.keys().all(|k| !properties.contains_key(k));
        if flat {
            for (k, s) in &props {
                properties.insert(k.clone(), s.clone());
                if body_required && props_required.contains(k) {
                    required.push(json!(k));
                }
            }
            Body {
                media,
                shape: BodyShape::Properties(props.keys().cloned().collect()),
                required: body_required,
            }
        } else {
            properties.insert("body".to_owned(), schema);
            if body_required {
                required.push(json!("body"));
            }
            Body {
                media,
                shape: BodyShape::Whole,
                required: body_required,
            }
        }
    });
    let mut input_schema = json!({"type": "object", "properties": properties});
    if !required.is_empty() {
        input_schema["required"] = Value::Array(required);
    }
    Ok(Operation {
        name,
        method: method.to_ascii_uppercase(),
        path: path.to_owned(),
        description,
        params,
        body,
        input_schema,
    })
}

/// A parameter's description goes on its schema, where MCP clients show it.
fn with_description(mut schema: Value, param: &Value) -> Value {
    if let (Some(desc), Value::Object(obj)) = (
        param.get("description").and_then(Value::as_str),
        &mut schema,
    ) && !obj.contains_key("description")
    {
        obj.insert("description".to_owned(), json!(desc));
    }
    schema
}

/// Swagger 2 non-body parameters carry their schema keywords inline.
fn v2_schema(p: &Value) -> Value {
    const KEYS: [&str; 16] = [
        "type",
        "format",
        "items",
        "enum",
        "default",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minLength",
        "maxLength",
        "pattern",
        "minItems",
        "maxItems",
        "uniqueItems",
        "multipleOf",
    ];
    let mut out = Map::new();
    for k in KEYS {
        if let Some(v) = p.get(k) {
            out.insert(k.to_owned(), v.clone());
        }
    }
    if out.get("type").and_then(Value::as_str) == Some("file") {
        out.insert("type".to_owned(), json!("string"));
    }
    if !out.contains_key("type") {
        out.insert("type".to_owned(), json!("string"));
    }
    normalize(&mut out);
    Value::Object(out)
}

fn first_content_schema(p: &Value) -> Option<Value> {
    p.get("content")?
        .as_object()?
        .values()
        .find_map(|m| m.get("schema").cloned())
}

/// The request body's media: JSON when offered (`application/json`, `*+json`, `*/*`), else a
/// form, else whatever is first, sent as JSON.
fn pick_content(rb: &Value) -> (Media, Value) {
    let Some(content) = rb.get("content").and_then(Value::as_object) else {
        return (Media::Json, json!({}));
    };
    let schema_of = |m: &Value| m.get("schema").cloned().unwrap_or_else(|| json!({}));
    let is_json = |k: &str| {
        let k = k
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        k == "application/json" || k.ends_with("+json") || k == "*/*" || k == "application/*"
    };
    if let Some(m) = content.iter().find(|(k, _)| is_json(k)).map(|(_, m)| m) {
        return (Media::Json, schema_of(m));
    }
    if let Some(m) = content
        .iter()
        .find(|(k, _)| k.starts_with("application/x-www-form-urlencoded"))
        .map(|(_, m)| m)
    {
        return (Media::Form, schema_of(m));
    }
    match content.values().next() {
        Some(m) => (Media::Json, schema_of(m)),
        None => (Media::Json, json!({})),
    }
}

/// The properties of an object schema (merging `allOf` members) and its required names.
fn object_properties(schema: &Value) -> (BTreeMap<String, Value>, Vec<String>) {
    let mut props = BTreeMap::new();
    let mut required = Vec::new();
    collect_properties(schema, &mut props, &mut required);
    (props, required)
}

fn collect_properties(
    schema: &Value,
    props: &mut BTreeMap<String, Value>,
    required: &mut Vec<String>,
) {
    let Some(obj) = schema.as_object() else {
        return;
    };
    if let Some(all) = obj.get("allOf").and_then(Value::as_array) {
        for member in all {
            collect_properties(member, props, required);
        }
    }
    let is_object = match obj.get("type") {
        None => true,
        Some(Value::String(t)) => t == "object",
        Some(Value::Array(ts)) => ts.iter().any(|t| t == "object"),
        Some(_) => false,
    };
    if !is_object {
        return;
    }
    if let Some(p) = obj.get("properties").and_then(Value::as_object) {
        for (k, v) in p {
            props.insert(k.clone(), v.clone());
        }
    }
    if let Some(r) = obj.get("required").and_then(Value::as_array) {
        required.extend(r.iter().filter_map(Value::as_str).map(str::to_owned));
    }
}

/// flux7's snake case: `_` before every ASCII capital except the first character, then lower
/// case (`getPetById` → `get_pet_by_id`). Characters other than letters, digits, `_`, `-` and
/// `.` become `_`, so every name is a valid MCP tool name.
pub fn snake_case(id: &str) -> String {
    let mut out = String::with_capacity(id.len() + 4);
    for (i, c) in id.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
            out.push(c.to_ascii_lowercase());
        } else {
            out.push('_');
        }
    }
    out
}

/// flux7's name without `operationId`: `GET /pets/{id}` → `get_pets_id`.
pub fn path_name(method: &str, path: &str) -> String {
    let tail: String = path
        .chars()
        .filter(|c| !matches!(c, '{' | '}'))
        .map(|c| match c {
            '/' | '-' => '_',
            c if c.is_ascii_alphanumeric() || matches!(c, '_' | '.') => c,
            _ => '_',
        })
        .collect();
    format!("{}_{}", method.to_ascii_lowercase(), tail.trim_matches('_'))
}

/// `$ref` resolution over one document, with a budget on the total expansion.
struct Refs<'a> {
    root: &'a Value,
    budget: usize,
}

impl<'a> Refs<'a> {
    fn new(root: &'a Value) -> Self {
        Refs {
            root,
            budget: MAX_EXPANDED_NODES,
        }
    }

    /// Follows `$ref`s at the top of a node (parameters, request bodies, path items).
    fn deref<'v>(&self, node: &'v Value, at: &str) -> Result<&'v Value, SpecError>
    where
        'a: 'v,
    {
        let mut current = node;
        for _ in 0..MAX_REF_DEPTH {
            match current.get("$ref").and_then(Value::as_str) {
                Some(r) => current = self.target(r, at)?,
                None => return Ok(current),
            }
        }
        Err(SpecError::Ref(format!(
            "{at}: $ref chain longer than {MAX_REF_DEPTH}"
        )))
    }

    fn target(&self, reference: &str, at: &str) -> Result<&'a Value, SpecError> {
        let Some(pointer) = reference.strip_prefix('#') else {
            return Err(SpecError::Ref(format!(
                "{at}: $ref {reference:?} is not supported (only local references, #/…)"
            )));
        };
        let decoded = percent_decode(pointer);
        self.root
            .pointer(&decoded)
            .ok_or_else(|| SpecError::Ref(format!("{at}: $ref {reference:?} points to nothing")))
    }

    /// A schema with every `$ref` inlined and OpenAPI 3.0 idioms turned into JSON Schema.
    fn schema(&mut self, schema: &Value) -> Result<Value, SpecError> {
        let mut stack = Vec::new();
        self.expand(schema, &mut stack)
    }

    fn expand(&mut self, node: &Value, stack: &mut Vec<String>) -> Result<Value, SpecError> {
        self.budget = self.budget.checked_sub(1).ok_or_else(|| {
            SpecError::Ref(format!(
                "schemas expand to more than {MAX_EXPANDED_NODES} nodes once $refs are inlined"
            ))
        })?;
        match node {
            Value::Object(obj) => {
                if let Some(reference) = obj.get("$ref").and_then(Value::as_str) {
                    if stack.iter().any(|r| r == reference) || stack.len() >= MAX_REF_DEPTH {
                        // Recursive schema: cut here; the value is not constrained further.
                        return Ok(json!({}));
                    }
                    let target = self.target(reference, "schema")?;
                    stack.push(reference.to_owned());
                    let mut resolved = self.expand(target, stack)?;
                    stack.pop();
                    // Keys beside `$ref` (3.1) refine the target.
                    if let Value::Object(out) = &mut resolved {
                        for (k, v) in obj {
                            if k != "$ref" {
                                out.insert(k.clone(), self.expand(v, stack)?);
                            }
                        }
                    }
                    return Ok(resolved);
                }
                let mut out = Map::with_capacity(obj.len());
                for (k, v) in obj {
                    // Examples are documentation; they are not expanded into the schema.
                    let v = if matches!(
                        k.as_str(),
                        "example" | "examples" | "enum" | "default" | "const"
                    ) {
                        v.clone()
                    } else {
                        self.expand(v, stack)?
                    };
                    out.insert(k.clone(), v);
                }
                normalize(&mut out);
                Ok(Value::Object(out))
            }
            Value::Array(items) => items
                .iter()
                .map(|v| self.expand(v, stack))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            other => Ok(other.clone()),
        }
    }
}

/// OpenAPI 3.0 schema idioms → JSON Schema: `nullable: true` adds `"null"` to the type, and the
/// boolean `exclusiveMinimum`/`exclusiveMaximum` of draft 4 become numbers.
fn normalize(obj: &mut Map<String, Value>) {
    if let Some(Value::Bool(nullable)) = obj.remove("nullable")
        && nullable
        && let Some(Value::String(t)) = obj.get("type").cloned()
    {
        obj.insert("type".to_owned(), json!([t, "null"]));
    }
    for (flag, bound) in [
        ("exclusiveMinimum", "minimum"),
        ("exclusiveMaximum", "maximum"),
    ] {
        if let Some(Value::Bool(exclusive)) = obj.get(flag).cloned() {
            obj.remove(flag);
            if exclusive && let Some(b) = obj.remove(bound) {
                obj.insert(flag.to_owned(), b);
            }
        }
    }
}

/// `%xx` escapes in a URI fragment (JSON pointers in `$ref`s may carry them).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_flux7() {
        let table = [
            ("getPetById", "get_pet_by_id"),
            ("getHTTPStatus", "get_h_t_t_p_status"),
            ("list_pets", "list_pets"),
            ("Pets", "pets"),
            ("pets.list", "pets.list"),
            ("find pets", "find_pets"),
        ];
        for (id, expected) in table {
            assert_eq!(snake_case(id), expected, "{id}");
        }
        let table = [
            ("GET", "/pets/{id}", "get_pets_id"),
            (
                "post",
                "/user-accounts/{account-id}/keys",
                "post_user_accounts_account_id_keys",
            ),
            ("DELETE", "/", "delete_"),
        ];
        for (method, path, expected) in table {
            assert_eq!(path_name(method, path), expected, "{method} {path}");
        }
    }

    #[test]
    fn base_urls_from_servers_host_or_the_spec_url() {
        let spec_url = Url::parse("https://api.example.com/docs/openapi.json").unwrap();
        let table: [(Value, Option<&Url>, Option<&str>); 6] = [
            (
                json!({"openapi": "3.0.0", "servers": [{"url": "https://x.example/v1"}]}),
                None,
                Some("https://x.example/v1"),
            ),
            (
                json!({"openapi": "3.1.0", "servers": [{"url": "/api/v3"}]}),
                Some(&spec_url),
                Some("https://api.example.com/api/v3"),
            ),
            (
                json!({"openapi": "3.0.3", "servers": [{"url": "https://{region}.example/{v}",
                    "variables": {"region": {"default": "eu"}, "v": {"default": "v2"}}}]}),
                None,
                Some("https://eu.example/v2"),
            ),
            (
                json!({"swagger": "2.0", "host": "petstore.swagger.io", "basePath": "/v2", "schemes": ["http"]}),
                None,
                Some("http://petstore.swagger.io/v2"),
            ),
            (
                json!({"swagger": "2.0", "basePath": "/v2"}),
                Some(&spec_url),
                Some("https://api.example.com/v2"),
            ),
            (
                json!({"openapi": "3.0.0", "servers": [{"url": "/relative"}]}),
                None,
                None,
            ),
        ];
        for (doc, url, expected) in table {
            assert_eq!(base_url(&doc, url).as_deref(), expected, "{doc}");
        }
    }

    #[test]
    fn yaml_keys_that_are_numbers_become_strings() {
        let doc = parse_document("openapi: 3.0.0\npaths:\n  /a:\n    get:\n      responses:\n        200:\n          description: ok\n").unwrap();
        assert_eq!(
            doc.pointer("/paths/~1a/get/responses/200/description"),
            Some(&json!("ok"))
        );
    }

    #[test]
    fn recursive_schemas_are_cut_and_refs_resolved() {
        let doc = json!({
            "openapi": "3.1.0",
            "paths": {"/nodes": {"post": {"operationId": "addNode",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Node"}}}}}}},
            "components": {"schemas": {"Node": {"type": "object", "required": ["label"], "properties": {
                "label": {"type": "string"},
                "children": {"type": "array", "items": {"$ref": "#/components/schemas/Node"}}}}}}
        });
        let ops = operations(&doc).unwrap();
        assert_eq!(
            ops[0].input_schema,
            json!({"type": "object", "properties": {
                "children": {"type": "array", "items": {}},
                "label": {"type": "string"}},
                "required": ["label"]})
        );
    }

    #[test]
    fn nullable_and_boolean_exclusive_bounds_become_json_schema() {
        let mut obj = json!({"type": "integer", "nullable": true, "minimum": 1, "exclusiveMinimum": true,
            "maximum": 9, "exclusiveMaximum": false});
        let Value::Object(map) = &mut obj else {
            unreachable!()
        };
        normalize(map);
        assert_eq!(
            obj,
            json!({"type": ["integer", "null"], "exclusiveMinimum": 1, "maximum": 9})
        );
    }

    #[test]
    fn external_and_dangling_refs_are_errors_naming_the_ref() {
        let ext = json!({"openapi": "3.0.0", "paths": {"/a": {"get": {"parameters": [{"$ref": "common.yaml#/P"}]}}}});
        assert_eq!(
            operations(&ext).unwrap_err().to_string(),
            "paths./a.get.parameters[0]: $ref \"common.yaml#/P\" is not supported (only local references, #/…)"
        );
        let dangling = json!({"openapi": "3.0.0", "paths": {"/a": {"get": {"parameters": [{"$ref": "#/components/parameters/Nope"}]}}}});
        assert_eq!(
            operations(&dangling).unwrap_err().to_string(),
            "paths./a.get.parameters[0]: $ref \"#/components/parameters/Nope\" points to nothing"
        );
    }

    #[test]
    fn a_ref_bomb_is_refused_rather_than_expanded() {
        // Each level refers to the previous one ten times: 10^8 nodes if fully expanded.
        let mut schemas = Map::new();
        schemas.insert("L0".into(), json!({"type": "string"}));
        for i in 1..9 {
            let prev = format!("#/components/schemas/L{}", i - 1);
            let props: Map<String, Value> = (0..10)
                .map(|k| (format!("p{k}"), json!({"$ref": prev})))
                .collect();
            schemas.insert(
                format!("L{i}"),
                json!({"type": "object", "properties": props}),
            );
        }
        let doc = json!({"openapi": "3.0.0",
            "paths": {"/a": {"post": {"requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/L8"}}}}}}},
            "components": {"schemas": schemas}});
        let err = operations(&doc).unwrap_err().to_string();
        assert!(err.contains("expand to more than"), "{err}");
    }
}
