//! mesh7 as an MCP server: the two MCP ingresses and the auto-proxy.
//!
//! - `jsonrpc`: message framing shared by everything below.
//! - `dispatch`: the MCP methods (`initialize`, `ping`, `tools/list`, `tools/call`), shared by
//!   both transports; every `tools/call` of a registry tool goes through `Pipeline::handle`.
//! - `stdio`: `mesh7 --mcp`, newline-delimited JSON-RPC on stdin/stdout, requests concurrent.
//! - `http`: the Streamable HTTP endpoint `POST`/`DELETE /mcp`, sessions, DNS-rebinding guard.
//! - `proxy`: `mesh7 --mcp` as a stdio ↔ `/mcp` bridge when a daemon already runs.

pub mod dispatch;
pub mod http;
pub mod jsonrpc;
pub mod proxy;
pub mod stdio;

pub use dispatch::{Caller, Dispatcher, call_tool_result};
pub use http::{McpHttp, McpHttpSettings};
pub use stdio::StdioOptions;

/// A new MCP session id: 32 random hex digits (also the trace session id).
pub fn new_session_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}
