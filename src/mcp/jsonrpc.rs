//! JSON-RPC 2.0 framing shared by the stdio server, `/mcp` and the auto-proxy: one message in,
//! at most one message out.
//!
//! Only single messages exist on the MCP wire (batches were removed from the protocol), so a
//! batch is refused rather than half-supported. Ids are echoed exactly as received.

use serde_json::{Map, Value, json};

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RpcError {
    pub code: i64,
    pub message: String,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(INVALID_PARAMS, message)
    }
}

/// A request: it has an id and gets exactly one answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// A string or a number, echoed as received.
    pub id: Value,
    pub method: String,
    /// Absent or `null` params read as an empty object.
    pub params: Map<String, Value>,
}

/// One decoded message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Request(Request),
    /// No id: never answered.
    Notification {
        method: String,
        params: Map<String, Value>,
    },
    /// A response from the client. This server sends no requests, so there is nothing to match.
    Response,
}

/// A message that cannot be handled, with the error to answer and the id to answer it with
/// (`null` when the id itself could not be read).
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub id: Value,
    pub error: RpcError,
}

impl Rejection {
    fn new(id: Value, code: i64, message: impl Into<String>) -> Self {
        Self {
            id,
            error: RpcError::new(code, message),
        }
    }

    /// The response line for this rejection.
    pub fn response(&self) -> Value {
        error_response(&self.id, &self.error)
    }
}

/// Decodes one message.
pub fn parse(bytes: &[u8]) -> Result<Message, Rejection> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|_| Rejection::new(Value::Null, PARSE_ERROR, "Parse error"))?;
    let mut obj = match value {
        Value::Object(obj) => obj,
        Value::Array(_) => {
            return Err(Rejection::new(
                Value::Null,
                INVALID_REQUEST,
                "Invalid Request: batches are not supported",
            ));
        }
        _ => {
            return Err(Rejection::new(
                Value::Null,
                INVALID_REQUEST,
                "Invalid Request: expected a JSON object",
            ));
        }
    };
    let id = match obj.remove("id") {
        None => None,
        Some(id @ (Value::String(_) | Value::Number(_))) => Some(id),
        Some(_) => {
            return Err(Rejection::new(
                Value::Null,
                INVALID_REQUEST,
                "Invalid Request: id must be a string or a number",
            ));
        }
    };
    let answer_id = id.clone().unwrap_or(Value::Null);
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(Rejection::new(
            answer_id,
            INVALID_REQUEST,
            "Invalid Request: jsonrpc must be \"2.0\"",
        ));
    }
    let method = match obj.remove("method") {
        Some(Value::String(m)) => m,
        None if id.is_some() && (obj.contains_key("result") || obj.contains_key("error")) => {
            return Ok(Message::Response);
        }
        _ => {
            return Err(Rejection::new(
                answer_id,
                INVALID_REQUEST,
                "Invalid Request: method must be a string",
            ));
        }
    };
    let params = match obj.remove("params") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p,
        Some(_) => {
            return match id {
                Some(id) => Err(Rejection::new(
                    id,
                    INVALID_PARAMS,
                    "Invalid params: params must be an object",
                )),
                // A notification is never answered, even when malformed.
                None => Ok(Message::Notification {
                    method,
                    params: Map::new(),
                }),
            };
        }
    };
    Ok(match id {
        Some(id) => Message::Request(Request { id, method, params }),
        None => Message::Notification { method, params },
    })
}

pub fn result_response(id: &Value, result: Value) -> Value {
    let mut response = Map::new();
    response.insert("jsonrpc".into(), json!("2.0"));
    response.insert("id".into(), id.clone());
    response.insert("result".into(), result);
    Value::Object(response)
}

pub fn error_response(id: &Value, error: &RpcError) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": { "code": error.code, "message": error.message },
    })
}

/// The response to a request, from the handler's outcome.
pub fn response(id: &Value, outcome: Result<Value, RpcError>) -> Value {
    match outcome {
        Ok(result) => result_response(id, result),
        Err(e) => error_response(id, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(input: &str) -> (Value, i64) {
        match parse(input.as_bytes()) {
            Err(r) => (r.id, r.error.code),
            Ok(m) => panic!("{input} was accepted as {m:?}"),
        }
    }

    #[test]
    fn rejects_malformed_messages_with_the_right_code_and_id() {
        let table = [
            ("{not json", Value::Null, PARSE_ERROR),
            ("", Value::Null, PARSE_ERROR),
            (
                r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
                Value::Null,
                INVALID_REQUEST,
            ),
            ("42", Value::Null, INVALID_REQUEST),
            (
                r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
                Value::Null,
                INVALID_REQUEST,
            ),
            (
                r#"{"jsonrpc":"1.0","id":7,"method":"ping"}"#,
                json!(7),
                INVALID_REQUEST,
            ),
            (r#"{"jsonrpc":"2.0","id":"a"}"#, json!("a"), INVALID_REQUEST),
            (
                r#"{"jsonrpc":"2.0","id":3,"method":"tools/list","params":[1]}"#,
                json!(3),
                INVALID_PARAMS,
            ),
            (
                r#"{"jsonrpc":"2.0","id":3,"method":"tools/list","params":"x"}"#,
                json!(3),
                INVALID_PARAMS,
            ),
        ];
        for (input, id, code) in table {
            assert_eq!(rejected(input), (id, code), "{input}");
        }
    }

    #[test]
    fn decodes_requests_notifications_and_client_responses() {
        let table = [
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
                Message::Request(Request {
                    id: json!(1),
                    method: "ping".into(),
                    params: Map::new(),
                }),
            ),
            (
                r#"{"jsonrpc":"2.0","id":"x-1","method":"tools/call","params":{"name":"a"}}"#,
                Message::Request(Request {
                    id: json!("x-1"),
                    method: "tools/call".into(),
                    params: json!({"name":"a"}).as_object().cloned().unwrap(),
                }),
            ),
            (
                r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
                Message::Notification {
                    method: "notifications/initialized".into(),
                    params: Map::new(),
                },
            ),
            (
                r#"{"jsonrpc":"2.0","method":"notifications/x","params":[1]}"#,
                Message::Notification {
                    method: "notifications/x".into(),
                    params: Map::new(),
                },
            ),
            (r#"{"jsonrpc":"2.0","id":5,"result":{}}"#, Message::Response),
        ];
        for (input, expected) in table {
            assert_eq!(parse(input.as_bytes()), Ok(expected), "{input}");
        }
    }

    #[test]
    fn ids_are_echoed_as_received() {
        let Ok(Message::Request(req)) =
            parse(br#"{"jsonrpc":"2.0","id":12345678901234,"method":"ping"}"#)
        else {
            panic!("not a request");
        };
        let line = serde_json::to_string(&result_response(&req.id, json!({}))).unwrap();
        assert_eq!(line, r#"{"jsonrpc":"2.0","id":12345678901234,"result":{}}"#);
    }
}
