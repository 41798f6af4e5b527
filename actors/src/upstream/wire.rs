//! Framing and parsing for the upstream transports, free of I/O: bounded line splitting
//! (stdio and SSE), the SSE event parser, tool descriptions, protocol versions and the SSE
//! endpoint's same-origin check.

use std::collections::VecDeque;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::Url;
use serde_json::{Value, json};

use super::McpTool;

/// Protocol versions the client accepts back from `initialize`, oldest first.
pub(crate) const SUPPORTED_VERSIONS: [&str; 4] =
    ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
/// The version offered in `initialize`.
pub(crate) const OFFERED_VERSION: &str = "2025-11-25";

/// Splits a byte stream into lines of at most `max` bytes (without the `\n` or `\r\n`).
/// A longer line is dropped whole and reported as `Err(Oversize)`, so memory stays bounded
/// whatever the peer sends.
#[derive(Debug)]
pub(crate) struct LineSplitter {
    buf: Vec<u8>,
    max: usize,
    discarding: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Oversize;

impl LineSplitter {
    pub(crate) fn new(max: usize) -> LineSplitter {
        LineSplitter {
            buf: Vec::new(),
            max,
            discarding: false,
        }
    }

    /// Feeds bytes, calling `on_line` once per complete line.
    pub(crate) fn push(
        &mut self,
        mut data: &[u8],
        on_line: &mut impl FnMut(Result<&[u8], Oversize>),
    ) {
        while let Some(pos) = data.iter().position(|&b| b == b'\n') {
            let head = &data[..pos];
            data = &data[pos + 1..];
            if self.discarding {
                self.discarding = false;
                on_line(Err(Oversize));
            } else if self.buf.len() + head.len() > self.max {
                self.buf.clear();
                on_line(Err(Oversize));
            } else if self.buf.is_empty() {
                on_line(Ok(trim_cr(head)));
            } else {
                self.buf.extend_from_slice(head);
                on_line(Ok(trim_cr(&self.buf)));
                self.buf.clear();
            }
        }
        if self.discarding {
            return;
        }
        if self.buf.len() + data.len() > self.max {
            self.buf.clear();
            self.discarding = true;
        } else {
            self.buf.extend_from_slice(data);
        }
    }

    /// The unterminated last line at end of stream, if any.
    pub(crate) fn finish(&mut self) -> Option<Result<Vec<u8>, Oversize>> {
        if std::mem::take(&mut self.discarding) {
            return Some(Err(Oversize));
        }
        let rest = std::mem::take(&mut self.buf);
        (!rest.is_empty()).then(|| Ok(trim_cr(&rest).to_vec()))
    }
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// One server-sent event; `event` is `message` when the stream named none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseEvent {
    pub(crate) event: String,
    pub(crate) data: String,
}

/// The SSE field parser (WHATWG event-stream rules for `event`, `data` and comments). An event
/// whose data grows past `max` bytes is dropped.
#[derive(Debug)]
pub(crate) struct SseParser {
    event: String,
    data: String,
    has_data: bool,
    oversize: bool,
    max: usize,
}

impl SseParser {
    pub(crate) fn new(max: usize) -> SseParser {
        SseParser {
            event: String::new(),
            data: String::new(),
            has_data: false,
            oversize: false,
            max,
        }
    }

    /// Feeds one line; returns the event a blank line completes.
    pub(crate) fn line(&mut self, line: &[u8]) -> Option<SseEvent> {
        if line.is_empty() {
            let event = std::mem::take(&mut self.event);
            let data = std::mem::take(&mut self.data);
            let complete =
                std::mem::take(&mut self.has_data) && !std::mem::take(&mut self.oversize);
            return complete.then(|| SseEvent {
                event: if event.is_empty() {
                    "message".to_owned()
                } else {
                    event
                },
                data,
            });
        }
        if line[0] == b':' {
            return None;
        }
        let text = String::from_utf8_lossy(line);
        let (field, value) = match text.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (text.as_ref(), ""),
        };
        match field {
            "event" => value.clone_into(&mut self.event),
            "data" => {
                if self.data.len() + value.len() + 1 > self.max {
                    self.oversize = true;
                    self.data.clear();
                } else if !self.oversize {
                    if self.has_data {
                        self.data.push('\n');
                    }
                    self.data.push_str(value);
                }
                self.has_data = true;
            }
            _ => {}
        }
        None
    }
}

pub(crate) type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// Reads SSE events from an HTTP response body, with bounded lines and events.
pub(crate) struct SseReader {
    body: ByteStream,
    lines: LineSplitter,
    parser: SseParser,
    ready: VecDeque<SseEvent>,
    dropped: usize,
}

impl SseReader {
    pub(crate) fn new(body: ByteStream, max_line: usize, max_event: usize) -> SseReader {
        SseReader {
            body,
            lines: LineSplitter::new(max_line),
            parser: SseParser::new(max_event),
            ready: VecDeque::new(),
            dropped: 0,
        }
    }

    /// The next event; `Ok(None)` at the end of the stream.
    pub(crate) async fn next(&mut self) -> Result<Option<SseEvent>, String> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Ok(Some(event));
            }
            let chunk = match self.body.next().await {
                Some(Ok(chunk)) => chunk,
                Some(Err(e)) => return Err(e.to_string()),
                None => return Ok(None),
            };
            let (parser, ready, dropped) = (&mut self.parser, &mut self.ready, &mut self.dropped);
            self.lines.push(&chunk, &mut |line| match line {
                Ok(line) => ready.extend(parser.line(line)),
                Err(Oversize) => *dropped += 1,
            });
            if std::mem::take(&mut self.dropped) > 0 {
                tracing::warn!("dropped an over-long line from an SSE stream");
            }
        }
    }
}

/// Reads a whole body, refusing one longer than `max` bytes.
pub(crate) async fn read_body(mut body: ByteStream, max: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        if out.len() + chunk.len() > max {
            return Err(format!("response body larger than {max} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Resolves the `endpoint` event of a legacy SSE stream against the stream's URL, and refuses
/// one on another origin: the messages carry the configured headers, which may hold secrets.
pub(crate) fn resolve_endpoint(sse_url: &Url, data: &str) -> Result<Url, String> {
    let endpoint = sse_url
        .join(data.trim())
        .map_err(|e| format!("invalid SSE endpoint {:?}: {e}", data.trim()))?;
    if endpoint.origin() != sse_url.origin() {
        return Err(format!(
            "SSE endpoint {endpoint} is not on the same origin as {sse_url}; refused"
        ));
    }
    Ok(endpoint)
}

/// The `protocolVersion` of an `initialize` result, if this client speaks it.
pub(crate) fn negotiated_version(result: &Value) -> Result<String, String> {
    let version = result
        .get("protocolVersion")
        .and_then(Value::as_str)
        .ok_or("initialize result has no protocolVersion")?;
    if SUPPORTED_VERSIONS.contains(&version) {
        Ok(version.to_owned())
    } else {
        Err(format!(
            "unsupported protocol version {version:?} (supported: {})",
            SUPPORTED_VERSIONS.join(", ")
        ))
    }
}

pub(crate) fn initialize_params() -> Value {
    json!({
        "protocolVersion": OFFERED_VERSION,
        "capabilities": {},
        "clientInfo": {"name": "flux7-mesh", "version": "0.1.0"},
    })
}

/// A tool from `tools/list`; `None` when it has no name. The schemas are kept whole.
pub(crate) fn parse_tool(value: &Value) -> Option<McpTool> {
    let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
    let mut tool = McpTool {
        name: text("name")?,
        title: text("title"),
        description: text("description").unwrap_or_default(),
        input_schema: value
            .get("inputSchema")
            .cloned()
            .unwrap_or_else(|| json!({"type": "object"})),
        output_schema: value.get("outputSchema").cloned(),
        annotations: value.get("annotations").cloned(),
        fingerprint: String::new(),
    };
    tool.fingerprint = crate::pins::fingerprint(&crate::pins::definition(&tool));
    Some(tool)
}

/// The id of a JSON-RPC response as this client issued it (a number; a string form is accepted).
pub(crate) fn response_id(id: &Value) -> Option<u64> {
    match id {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Lines = Vec<Result<String, Oversize>>;

    fn split(max: usize, chunks: &[&str]) -> Lines {
        let mut splitter = LineSplitter::new(max);
        let mut out = Vec::new();
        for chunk in chunks {
            splitter.push(chunk.as_bytes(), &mut |line| {
                out.push(line.map(|l| String::from_utf8_lossy(l).into_owned()));
            });
        }
        if let Some(last) = splitter.finish() {
            out.push(last.map(|l| String::from_utf8(l).unwrap()));
        }
        out
    }

    #[test]
    fn splits_lines_across_chunks_and_drops_over_long_ones() {
        let ok = |s: &str| Ok(s.to_owned());
        let cases: &[(usize, &[&str], Lines)] = &[
            (10, &["a\nb\n"], vec![ok("a"), ok("b")]),
            (10, &["ab", "c\r\nd"], vec![ok("abc"), ok("d")]),
            (10, &["\n\n"], vec![ok(""), ok("")]),
            (3, &["abcd\nok\n"], vec![Err(Oversize), ok("ok")]),
            (3, &["ab", "cd", "ef\nxy\n"], vec![Err(Oversize), ok("xy")]),
            (3, &["abcdef"], vec![Err(Oversize)]),
            (3, &["abc\n"], vec![ok("abc")]),
        ];
        for (max, chunks, expected) in cases {
            assert_eq!(&split(*max, chunks), expected, "{chunks:?} max {max}");
        }
    }

    fn events(text: &str) -> Vec<SseEvent> {
        let mut parser = SseParser::new(16);
        let mut out = Vec::new();
        let mut splitter = LineSplitter::new(1024);
        splitter.push(text.as_bytes(), &mut |line| {
            out.extend(parser.line(line.unwrap()));
        });
        out
    }

    fn event(event: &str, data: &str) -> SseEvent {
        SseEvent {
            event: event.to_owned(),
            data: data.to_owned(),
        }
    }

    #[test]
    fn parses_sse_events() {
        let cases = [
            (
                "event: endpoint\ndata: /message?s=1\n\n",
                vec![event("endpoint", "/message?s=1")],
            ),
            ("data: {}\n\n", vec![event("message", "{}")]),
            ("data:a\ndata: b\n\n", vec![event("message", "a\nb")]),
            (": ping\n\nid: 7\nretry: 10\n\n", vec![]),
            ("event: x\n\n", vec![]),
            (
                "data: 0123456789abcdef\n\ndata: ok\n\n",
                vec![event("message", "ok")],
            ),
            ("data: a\r\n\r\n", vec![event("message", "a")]),
            ("data\n\n", vec![event("message", "")]),
        ];
        for (text, expected) in cases {
            assert_eq!(events(text), expected, "{text:?}");
        }
    }

    #[test]
    fn endpoint_must_share_the_stream_origin() {
        let base = Url::parse("http://127.0.0.1:3001/sse").unwrap();
        let cases = [
            (
                "/message?sessionId=a",
                Ok("http://127.0.0.1:3001/message?sessionId=a"),
            ),
            ("message", Ok("http://127.0.0.1:3001/message")),
            ("http://127.0.0.1:3001/m", Ok("http://127.0.0.1:3001/m")),
            ("http://127.0.0.1:3002/m", Err("not on the same origin")),
            ("http://evil.example.com/m", Err("not on the same origin")),
            ("https://127.0.0.1:3001/m", Err("not on the same origin")),
            ("//evil.example.com/m", Err("not on the same origin")),
        ];
        for (data, expected) in cases {
            match (resolve_endpoint(&base, data), expected) {
                (Ok(url), Ok(want)) => assert_eq!(url.as_str(), want),
                (Err(e), Err(want)) => assert!(e.contains(want), "{e}"),
                (got, want) => panic!("{data}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn accepts_known_protocol_versions_only() {
        for version in SUPPORTED_VERSIONS {
            assert_eq!(
                negotiated_version(&json!({"protocolVersion": version})).as_deref(),
                Ok(version)
            );
        }
        let err = negotiated_version(&json!({"protocolVersion": "2099-01-01"})).unwrap_err();
        assert!(
            err.contains("unsupported protocol version \"2099-01-01\""),
            "{err}"
        );
        assert!(negotiated_version(&json!({})).is_err());
    }

    #[test]
    fn keeps_tool_schemas_whole() {
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}},
            "required": ["a"], "$defs": {"x": {}}, "additionalProperties": false});
        let tool = parse_tool(&json!({"name": "t", "title": "T", "description": "d",
            "inputSchema": schema, "outputSchema": {"type": "object"},
            "annotations": {"readOnlyHint": true}}))
        .unwrap();
        assert_eq!(tool.input_schema, schema);
        assert_eq!(tool.title.as_deref(), Some("T"));
        assert_eq!(tool.output_schema, Some(json!({"type": "object"})));
        assert_eq!(tool.annotations, Some(json!({"readOnlyHint": true})));

        let bare = parse_tool(&json!({"name": "b"})).unwrap();
        assert_eq!(bare.description, "");
        assert_eq!(bare.input_schema, json!({"type": "object"}));
        assert!(parse_tool(&json!({"description": "no name"})).is_none());
    }

    #[test]
    fn reads_response_ids() {
        assert_eq!(response_id(&json!(7)), Some(7));
        assert_eq!(response_id(&json!("7")), Some(7));
        assert_eq!(response_id(&json!("x")), None);
        assert_eq!(response_id(&json!(null)), None);
    }
}
