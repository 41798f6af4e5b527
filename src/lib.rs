//! mesh7: a guardrail between AI agents and their tools.
//!
//! `app` wires the actors and the HTTP server, `pipeline` is the one governed-call path,
//! `api` is the actix-web HTTP API, `mcp` the MCP server (stdio, `/mcp`, auto-proxy), `error` the
//! one error table.

pub mod api;
pub mod app;
pub mod discover;
pub mod error;
pub mod identity;
pub mod mcp;
pub mod metrics;
pub mod openapi;
pub mod pipeline;
pub mod registry;
pub mod telemetry;

/// Build identity: `MESH7_COMMIT` / `MESH7_BUILD_DATE` may be set at build time.
pub static VERSION: api::Version = api::Version {
    version: env!("CARGO_PKG_VERSION"),
    commit: match option_env!("MESH7_COMMIT") {
        Some(c) => c,
        None => "none",
    },
    date: match option_env!("MESH7_BUILD_DATE") {
        Some(d) => d,
        None => "unknown",
    },
};
