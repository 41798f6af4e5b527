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
pub mod replay;
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

/// `https://` needs the `tls` build feature (a default one); without it the refusal says so,
/// at start-up rather than at the first request.
pub(crate) fn require_tls_support(url: &str) -> Result<(), String> {
    if !cfg!(feature = "tls") && url.trim_start().to_ascii_lowercase().starts_with("https:") {
        return Err(format!(
            "{url}: https needs a mesh7 built with the `tls` feature (the default)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn https_urls_are_refused_only_by_a_build_without_tls() {
        assert_eq!(super::require_tls_support("http://127.0.0.1/x"), Ok(()));
        for url in ["https://example.com/spec.json", " HTTPS://example.com/"] {
            let got = super::require_tls_support(url);
            if cfg!(feature = "tls") {
                assert_eq!(got, Ok(()), "{url}");
            } else {
                let err = got.expect_err(url);
                assert!(err.contains("built with the `tls` feature"), "{err}");
            }
        }
    }
}
