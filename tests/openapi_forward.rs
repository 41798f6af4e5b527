//! OpenAPI forwarding through `mesh7 serve` against a real loopback backend that echoes what it
//! receives: where path, query, header and body arguments land, plain numbers, trace propagation,
//! the entry's headers, the backend's status, and clear 400 / 502 / 504 errors.

mod common;
#[allow(dead_code, unreachable_pub)] // shared helpers: each test file uses part of them
mod openapi_support;

use std::time::{Duration, Instant};

use common::Daemon;
use openapi_support::Backend;
use serde_json::{Value, json};

const SPEC: &str = r##"
openapi: 3.1.0
info: {title: echo, version: "1"}
paths:
  /items/{itemId}:
    parameters:
      - name: itemId
        in: path
        required: true
        schema: {type: integer}
      - name: X-Tenant
        in: header
        required: true
        schema: {type: string}
    get:
      operationId: getItem
      summary: Read an item
      parameters:
        - name: verbose
          in: query
          schema: {type: boolean}
    put:
      operationId: replaceItem
      parameters:
        - name: dryRun
          in: query
          schema: {type: boolean}
      requestBody:
        required: true
        content:
          application/json:
            schema: {$ref: "#/components/schemas/Item"}
    delete:
      operationId: deleteItem
  /status/{code}:
    post:
      operationId: failWith
      parameters:
        - {name: code, in: path, required: true, schema: {type: integer}}
  /hang:
    get:
      operationId: hang
components:
  schemas:
    Item:
      type: object
      required: [name]
      properties:
        name: {type: string}
        price: {type: number}
"##;

/// A daemon whose `openapi` entry is the echo spec as a file, pointed at `backend_url`.
fn daemon(backend_url: &str, extra: &str) -> Daemon {
    let yaml = format!(
        r#"
openapi:
  - file: echo.yaml
    backend_url: {backend_url}
    headers:
      X-Api-Key: ${{ECHO_API_KEY}}
{extra}
policies:
  - name: all
    agent: "*"
    rules:
      - tools: ["*"]
        action: allow
"#
    );
    Daemon::start_with(&yaml, &[("ECHO_API_KEY", "s3cret")], |dir| {
        std::fs::write(dir.join("echo.yaml"), SPEC).expect("write spec");
    })
}

#[test]
fn get_fills_path_query_and_header_with_plain_numbers_and_propagates_the_trace() {
    let backend = Backend::start(&[]);
    let d = daemon(&backend.url, "");
    let (status, body) = d.call(
        "claude",
        "get_item",
        &json!({"itemId": 1_000_000, "X-Tenant": "acme", "verbose": true, "extra": 2.5, "big": 1e6}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["backend_status"], 200, "{body}");
    let seen = &body["result"];
    assert_eq!(seen["method"], "GET");
    assert_eq!(seen["path"], "/items/1000000");
    // Declared query parameters first, then the other arguments in name order.
    assert_eq!(seen["query"], "verbose=true&big=1000000&extra=2.5");
    assert_eq!(seen["headers"]["x-tenant"], "acme");
    assert_eq!(
        seen["headers"]["x-api-key"], "s3cret",
        "the entry's ${{ENV}} header"
    );
    assert_eq!(seen["body"], Value::Null);
    let trace_id = body["trace_id"].as_str().expect("trace id");
    assert_eq!(seen["headers"]["x-trace-id"], trace_id);
    let traceparent = seen["headers"]["traceparent"]
        .as_str()
        .expect("traceparent");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!((parts[0], parts[1], parts[3]), ("00", trace_id, "01"));
    assert!(
        parts[2].len() == 16 && parts[2] != "0000000000000000",
        "a real parent id: {traceparent}"
    );
}

#[test]
fn a_caller_trace_id_reaches_the_backend() {
    let backend = Backend::start(&[]);
    let d = daemon(&backend.url, "");
    let incoming = "4bf92f3577b34da6a3ce929d0e0e4736";
    let (status, body) = d.post_with(
        "/tool/get_item",
        &[
            ("Authorization", "Bearer agent:claude"),
            ("Traceparent", &format!("00-{incoming}-00f067aa0ba902b7-01")),
        ],
        &json!({"params": {"itemId": 1, "X-Tenant": "t"}}).to_string(),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["trace_id"], incoming);
    let traceparent = body["result"]["headers"]["traceparent"].as_str().unwrap();
    assert!(
        traceparent.starts_with(&format!("00-{incoming}-")),
        "{traceparent}"
    );
}

#[test]
fn put_sends_the_other_arguments_as_a_json_body() {
    let backend = Backend::start(&[]);
    let d = daemon(&backend.url, "");
    let (status, body) = d.call(
        "claude",
        "replace_item",
        &json!({"itemId": 7, "X-Tenant": "t", "dryRun": false, "name": "lamp", "price": 12.5}),
    );
    assert_eq!(status, 200, "{body}");
    let seen = &body["result"];
    assert_eq!(seen["method"], "PUT");
    assert_eq!(seen["path"], "/items/7");
    assert_eq!(seen["query"], "dryRun=false");
    assert_eq!(seen["headers"]["content-type"], "application/json");
    // Path, query and header parameters are taken out of the body.
    assert_eq!(seen["body"], json!({"name": "lamp", "price": 12.5}));
}

#[test]
fn delete_sends_the_other_arguments_as_query() {
    let backend = Backend::start(&[]);
    let d = daemon(&backend.url, "");
    let (status, body) = d.call(
        "claude",
        "delete_item",
        &json!({"itemId": 3, "X-Tenant": "t", "force": true, "ids": [1, 2]}),
    );
    assert_eq!(status, 200, "{body}");
    let seen = &body["result"];
    assert_eq!(seen["method"], "DELETE");
    assert_eq!(seen["path"], "/items/3");
    assert_eq!(seen["query"], "force=true&ids=1&ids=2");
    assert_eq!(seen["body"], Value::Null);
}

#[test]
fn a_backend_error_status_reaches_the_caller_and_the_trace() {
    let backend = Backend::start(&[]);
    let d = daemon(&backend.url, "");
    let (status, body) = d.call("claude", "fail_with", &json!({"code": 500}));
    // flux7's shape: 200 with the backend's body as `result`; the status beside it.
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["backend_status"], 500);
    assert_eq!(body["result"]["path"], "/status/500");
    let trace_id = body["trace_id"].as_str().unwrap().to_owned();
    let (_, traces) = d.get("/traces?tool=fail_with", None);
    let entry = traces
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["trace_id"] == trace_id.as_str())
        .expect("traced");
    assert_eq!(entry["status_code"], 500);
    assert_eq!(entry["policy"], "allow");
}

#[test]
fn a_missing_required_parameter_is_a_bad_request_and_traced() {
    let backend = Backend::start(&[]);
    let d = daemon(&backend.url, "");
    let (status, body) = d.call("claude", "get_item", &json!({"itemId": 1}));
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"],
        "missing required header parameter \"X-Tenant\""
    );
    let (_, traces) = d.get("/traces?tool=get_item", None);
    assert_eq!(traces[0]["error"], body["error"]);
}

#[test]
fn a_backend_that_never_answers_is_a_gateway_timeout() {
    let backend = Backend::start(&[]);
    let d = daemon(&backend.url, "    timeout: 1s");
    let started = Instant::now();
    let (status, body) = d.call("claude", "hang", &json!({}));
    assert_eq!(status, 504, "{body}");
    assert_eq!(
        body["error"],
        "GET http://127.0.0.1:{port}/hang: the backend did not answer within 1s"
            .replace("{port}", &backend.port().to_string())
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn an_unreachable_backend_is_a_bad_gateway() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let d = daemon(&url, "");
    let (status, body) = d.call("claude", "get_item", &json!({"itemId": 1, "X-Tenant": "t"}));
    assert_eq!(status, 502, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!("GET {url}/items/1: ")),
        "{error}"
    );
}

#[test]
fn tools_keep_flux7_fields_and_the_real_schema() {
    let backend = Backend::start(&[]);
    let d = daemon(&backend.url, "");
    let (status, tools) = d.get("/tools", None);
    assert_eq!(status, 200);
    let replace = tools
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "replace_item")
        .expect("replace_item listed");
    assert_eq!(replace["source"], "openapi");
    assert_eq!(replace["method"], "PUT");
    assert_eq!(replace["path"], "/items/{itemId}");
    assert_eq!(replace["base_url"], backend.url.as_str());
    assert_eq!(
        replace["params"],
        json!([
            {"name": "itemId", "in": "path", "type": "integer", "required": true},
            {"name": "X-Tenant", "in": "header", "type": "string", "required": true},
            {"name": "dryRun", "in": "query", "type": "boolean", "required": false},
            {"name": "body", "in": "body", "type": "object", "required": true},
        ])
    );
    assert_eq!(
        replace["input_schema"],
        json!({"type": "object", "properties": {
            "itemId": {"type": "integer"},
            "X-Tenant": {"type": "string"},
            "dryRun": {"type": "boolean"},
            "name": {"type": "string"},
            "price": {"type": "number"},
        }, "required": ["itemId", "X-Tenant", "name"]})
    );
}
