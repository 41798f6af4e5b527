//! Forwarding: a call's arguments → the backend HTTP request (`build`, pure), and sending it
//! with the entry's pooled client (`send`).
//!
//! Mapping: declared path parameters fill the path template (required), declared query, header
//! and cookie parameters go where they are declared. For GET, DELETE and HEAD every other
//! argument joins the query string (flux7); for other methods the other arguments are the body
//! (a `Whole` body is the `body` argument). Values print plainly: `1000000`, never `1e+06`.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value};
use url::Url;

use super::Backend;
use super::spec::{BodyShape, Location, Media, Operation};
use crate::error::PipelineError;

/// A backend request, before it is sent.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendRequest {
    /// Upper case.
    pub method: String,
    /// Base URL + path + query string.
    pub url: String,
    /// Header (and `Cookie`) parameters from the arguments.
    pub headers: Vec<(String, String)>,
    pub body: Option<RequestBody>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RequestBody {
    Json(Value),
    Form(Vec<(String, String)>),
}

/// What the backend answered.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendResponse {
    pub status: u16,
    /// The body as JSON when it parses, else as a string (flux7).
    pub body: Value,
}

/// Maps the arguments of a call onto the operation's request. Errors are the caller's
/// (a missing required parameter, a value that cannot be a header).
pub fn build(op: &Operation, base_url: &str, args: &Value) -> Result<BackendRequest, String> {
    let mut rest = match args {
        Value::Object(map) => map.clone(),
        Value::Null => Map::new(),
        _ => return Err("arguments must be a JSON object".to_owned()),
    };
    let mut path = op.path.clone();
    let mut query: Vec<(String, String)> = Vec::new();
    let mut headers = Vec::new();
    let mut cookies = Vec::new();
    for p in &op.params {
        let value = rest.remove(&p.name).filter(|v| !v.is_null());
        let Some(value) = value else {
            if p.required {
                return Err(format!(
                    "missing required {} parameter {:?}",
                    p.location.as_str(),
                    p.name
                ));
            }
            continue;
        };
        match p.location {
            Location::Path => {
                path = path.replacen(
                    &format!("{{{}}}", p.name),
                    &encode_segment(&plain(&value)),
                    1,
                );
            }
            Location::Query => push_query(&mut query, &p.name, &value),
            Location::Header => headers.push((p.name.clone(), plain(&value))),
            Location::Cookie => cookies.push(format!("{}={}", p.name, plain(&value))),
        }
    }
    if !cookies.is_empty() {
        headers.push(("Cookie".to_owned(), cookies.join("; ")));
    }

    let body = if matches!(op.method.as_str(), "GET" | "DELETE" | "HEAD") {
        let mut extra: Vec<_> = rest.into_iter().collect();
        extra.sort_by(|a, b| a.0.cmp(&b.0));
        for (k, v) in &extra {
            push_query(&mut query, k, v);
        }
        None
    } else {
        body_of(op, rest)?
    };

    let joined = format!("{}{}", base_url.trim_end_matches('/'), path);
    let mut url =
        Url::parse(&joined).map_err(|e| format!("invalid backend URL {joined:?}: {e}"))?;
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(&query);
    }
    Ok(BackendRequest {
        method: op.method.clone(),
        url: url.to_string(),
        headers,
        body,
    })
}

fn body_of(op: &Operation, mut rest: Map<String, Value>) -> Result<Option<RequestBody>, String> {
    let media = op.body.as_ref().map_or(Media::Json, |b| b.media);
    let value = match op.body.as_ref().map(|b| &b.shape) {
        Some(BodyShape::Whole) => match rest.remove("body") {
            Some(body) => Some(body),
            // The body's fields passed flat: they are the body.
            None if !rest.is_empty() => Some(Value::Object(rest)),
            None => None,
        },
        Some(BodyShape::Properties(names)) => {
            // flux7 exposed one `body` argument: accept it, unwrapped, when it is not a property.
            if !names.iter().any(|n| n == "body")
                && let Some(Value::Object(inner)) = rest.get("body").cloned()
            {
                rest.remove("body");
                for (k, v) in inner {
                    rest.entry(k).or_insert(v);
                }
            }
            Some(Value::Object(rest))
        }
        None if rest.is_empty() => None,
        None => Some(Value::Object(rest)),
    };
    if value.is_none() && op.body.as_ref().is_some_and(|b| b.required) {
        return Err("missing required argument \"body\"".to_owned());
    }
    Ok(value.map(|v| match media {
        Media::Json => RequestBody::Json(v),
        Media::Form => RequestBody::Form(match v {
            Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), plain(v))).collect(),
            other => vec![("body".to_owned(), plain(&other))],
        }),
    }))
}

/// Arrays repeat the key (`tag=a&tag=b`, OpenAPI's default `form` style); null is left out.
fn push_query(query: &mut Vec<(String, String)>, name: &str, value: &Value) {
    match value {
        Value::Null => {}
        Value::Array(items) => {
            for item in items.iter().filter(|v| !v.is_null()) {
                query.push((name.to_owned(), plain(item)));
            }
        }
        other => query.push((name.to_owned(), plain(other))),
    }
}

/// A value as text in a path, query, header or form: strings as they are, numbers plainly
/// (`1000000`, `0.5`), arrays comma-joined, objects as compact JSON, null empty.
pub fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.to_string()
            } else if let Some(u) = n.as_u64() {
                u.to_string()
            } else {
                // Rust prints floats without exponent: 1e21 → 1000000000000000000000.
                n.as_f64().map_or_else(|| n.to_string(), |f| f.to_string())
            }
        }
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        Value::Array(items) => items.iter().map(plain).collect::<Vec<_>>().join(","),
        Value::Object(_) => v.to_string(),
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so a value stays one segment.
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Sends the request with the entry's client. The configured headers come last, so an argument
/// can never replace the operator's credentials. Trace headers propagate the call's trace id.
pub async fn send(
    backend: &Backend,
    req: BackendRequest,
    trace_id: &str,
) -> Result<BackendResponse, PipelineError> {
    let method = reqwest::Method::from_bytes(req.method.as_bytes())
        .map_err(|e| PipelineError::Forward(format!("invalid method {}: {e}", req.method)))?;
    let mut headers = HeaderMap::new();
    for (k, v) in &req.headers {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| PipelineError::InvalidRequest(format!("invalid header name {k:?}")))?;
        let value = HeaderValue::from_str(v).map_err(|_| {
            PipelineError::InvalidRequest(format!("header parameter {k:?} has an invalid value"))
        })?;
        headers.append(name, value);
    }
    headers.insert(
        reqwest::header::ACCEPT,
        HeaderValue::from_static("application/json, */*;q=0.5"),
    );
    if let Ok(v) = HeaderValue::from_str(trace_id) {
        headers.insert(HeaderName::from_static("x-trace-id"), v);
    }
    if let Ok(v) = HeaderValue::from_str(&crate::telemetry::outbound_traceparent(trace_id)) {
        headers.insert(HeaderName::from_static("traceparent"), v);
    }
    for (name, value) in &backend.headers {
        headers.insert(name.clone(), value.clone());
    }
    let mut builder = backend
        .client()?
        .request(method, &req.url)
        .timeout(backend.timeout);
    match req.body {
        Some(RequestBody::Json(v)) => {
            let bytes = serde_json::to_vec(&v)
                .map_err(|e| PipelineError::InvalidRequest(format!("body: {e}")))?;
            headers.insert(
                reqwest::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            builder = builder.body(bytes);
        }
        Some(RequestBody::Form(pairs)) => {
            let encoded = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&pairs)
                .finish();
            headers.insert(
                reqwest::header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            );
            builder = builder.body(encoded);
        }
        None => {}
    }
    let what = format!("{} {}", req.method, strip_query(&req.url));
    let mut resp = builder
        .headers(headers)
        .send()
        .await
        .map_err(|e| request_error(&e, &what, backend.timeout))?;
    let status = resp.status().as_u16();
    let mut bytes = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if bytes.len() + chunk.len() > backend.max_response_bytes {
                    return Err(PipelineError::Forward(format!(
                        "{what}: the response is larger than {} bytes",
                        backend.max_response_bytes
                    )));
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => return Err(request_error(&e, &what, backend.timeout)),
        }
    }
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Ok(BackendResponse { status, body })
}

/// The URL without its query string: query values may be sensitive, and error texts are traced.
fn strip_query(url: &str) -> &str {
    url.split_once('?').map_or(url, |(u, _)| u)
}

fn request_error(e: &reqwest::Error, what: &str, timeout: Duration) -> PipelineError {
    if let Some(refused) = mesh7_actors::ssrf::find(e) {
        return PipelineError::Forward(format!("{what}: {refused}"));
    }
    if e.is_timeout() {
        return PipelineError::ForwardTimeout(format!(
            "{what}: the backend did not answer within {timeout:?}"
        ));
    }
    PipelineError::Forward(format!("{what}: {}", error_chain(e)))
}

/// An error and its causes, `: `-separated, without the URL reqwest repeats in its own text.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = Vec::new();
    let mut current = e.source();
    while let Some(cause) = current {
        let text = cause.to_string();
        if !parts.contains(&text) {
            parts.push(text);
        }
        current = cause.source();
    }
    if parts.is_empty() {
        parts.push(e.to_string());
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::openapi::spec::{Body, Param};

    fn param(name: &str, location: Location, required: bool) -> Param {
        Param {
            name: name.to_owned(),
            location,
            required,
            schema: json!({"type": "string"}),
        }
    }

    fn op(method: &str, path: &str, params: Vec<Param>, body: Option<Body>) -> Operation {
        Operation {
            name: "t".to_owned(),
            method: method.to_owned(),
            path: path.to_owned(),
            description: String::new(),
            params,
            body,
            input_schema: json!({}),
        }
    }

    #[test]
    fn numbers_print_plainly() {
        let table = [
            (json!(1_000_000), "1000000"),
            (json!(1e6), "1000000"),
            (json!(1e21), "1000000000000000000000"),
            (json!(0.5), "0.5"),
            (json!(-3), "-3"),
            (json!(u64::MAX), "18446744073709551615"),
            (json!(true), "true"),
            (json!(null), ""),
            (json!("a b"), "a b"),
            (json!([1, "x", 2.5]), "1,x,2.5"),
            (json!({"k": 1}), "{\"k\":1}"),
        ];
        for (v, expected) in table {
            assert_eq!(plain(&v), expected, "{v}");
        }
    }

    #[test]
    fn maps_arguments_onto_the_request() {
        let json_body = Some(Body {
            media: Media::Json,
            shape: BodyShape::Properties(vec!["name".to_owned(), "tag".to_owned()]),
            required: true,
        });
        let whole = Some(Body {
            media: Media::Json,
            shape: BodyShape::Whole,
            required: true,
        });
        let form = Some(Body {
            media: Media::Form,
            shape: BodyShape::Properties(vec!["name".to_owned()]),
            required: false,
        });
        let id = || param("petId", Location::Path, true);
        let table: Vec<(Operation, Value, Result<BackendRequest, &str>)> = vec![
            (
                op("GET", "/pets/{petId}", vec![id()], None),
                json!({"petId": 1_000_000, "verbose": true, "fields": ["a", "b"]}),
                Ok(BackendRequest {
                    method: "GET".into(),
                    url: "http://h:1/api/pets/1000000?fields=a&fields=b&verbose=true".into(),
                    headers: vec![],
                    body: None,
                }),
            ),
            (
                op("DELETE", "/pets/{petId}", vec![id()], None),
                json!({"petId": "a/b c"}),
                Ok(BackendRequest {
                    method: "DELETE".into(),
                    url: "http://h:1/api/pets/a%2Fb%20c".into(),
                    headers: vec![],
                    body: None,
                }),
            ),
            (
                op(
                    "POST",
                    "/pets",
                    vec![
                        param("dryRun", Location::Query, false),
                        param("X-Request-Id", Location::Header, true),
                        param("session", Location::Cookie, false),
                    ],
                    json_body.clone(),
                ),
                json!({"dryRun": 1e6, "X-Request-Id": "r-1", "session": "s", "name": "rex", "tag": "dog"}),
                Ok(BackendRequest {
                    method: "POST".into(),
                    url: "http://h:1/api/pets?dryRun=1000000".into(),
                    headers: vec![
                        ("X-Request-Id".into(), "r-1".into()),
                        ("Cookie".into(), "session=s".into()),
                    ],
                    body: Some(RequestBody::Json(json!({"name": "rex", "tag": "dog"}))),
                }),
            ),
            // flux7 callers wrap the body in `body`: unwrapped.
            (
                op("POST", "/pets", vec![], json_body),
                json!({"body": {"name": "rex"}}),
                Ok(BackendRequest {
                    method: "POST".into(),
                    url: "http://h:1/api/pets".into(),
                    headers: vec![],
                    body: Some(RequestBody::Json(json!({"name": "rex"}))),
                }),
            ),
            (
                op("PUT", "/pets/{petId}/tags", vec![id()], whole.clone()),
                json!({"petId": 7, "body": ["a", "b"]}),
                Ok(BackendRequest {
                    method: "PUT".into(),
                    url: "http://h:1/api/pets/7/tags".into(),
                    headers: vec![],
                    body: Some(RequestBody::Json(json!(["a", "b"]))),
                }),
            ),
            (
                op("POST", "/pets/{petId}", vec![id()], form),
                json!({"petId": 7, "name": "rex"}),
                Ok(BackendRequest {
                    method: "POST".into(),
                    url: "http://h:1/api/pets/7".into(),
                    headers: vec![],
                    body: Some(RequestBody::Form(vec![("name".into(), "rex".into())])),
                }),
            ),
            (
                op("GET", "/pets/{petId}", vec![id()], None),
                json!({}),
                Err("missing required path parameter \"petId\""),
            ),
            (
                op("PUT", "/pets/{petId}/tags", vec![id()], whole),
                json!({"petId": 7}),
                Err("missing required argument \"body\""),
            ),
            (
                op("GET", "/pets", vec![], None),
                json!([1]),
                Err("arguments must be a JSON object"),
            ),
        ];
        for (operation, args, expected) in table {
            let got = build(&operation, "http://h:1/api/", &args);
            assert_eq!(
                got,
                expected.map_err(str::to_owned),
                "{} {args}",
                operation.path
            );
        }
    }
}
