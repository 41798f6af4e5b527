//! The one error table: every failure a caller can see, with its stable code, HTTP status and
//! JSON-RPC code in a single exhaustive `match`.
//!
//! A denial, an approval requirement or a rate limit is a governance *outcome* (see
//! `pipeline::Verdict`), not an error: errors are what stops the pipeline from reaching a verdict
//! or from carrying one out.

use actix_web::http::StatusCode;

#[derive(Debug, Clone, thiserror::Error)]
pub enum PipelineError {
    /// The credentials were present but not acceptable.
    #[error("{0}")]
    Unauthenticated(String),
    /// `require_authentication` is on and the caller is anonymous.
    #[error("authentication required")]
    AuthenticationRequired,
    /// The caller may not do this (e.g. `/decide` for another agent without operator rights).
    #[error("{0}")]
    Forbidden(String),
    #[error("unknown tool: {0}")]
    UnknownTool(String),
    /// The request is malformed (bad JSON, bad argument shape, bad CLI subcommand...).
    #[error("{0}")]
    InvalidRequest(String),
    /// The tool ran but failed, or the backend answered with an error.
    #[error("{0}")]
    Forward(String),
    /// The backend did not answer in time.
    #[error("{0}")]
    ForwardTimeout(String),
    /// A subsystem could not take the request (mailbox full or closed). Fail closed, retry later.
    #[error("{0}")]
    Unavailable(String),
    /// An emergency stop (`POST /halts`) ended the call while it ran.
    #[error("{0}")]
    Halted(String),
    /// The call was stopped while it ran, for the reason given. It is what the call's trace
    /// says; only a `/mcp` request stopped by a notification or a `DELETE` still receives it
    /// as its answer.
    #[error("{0}")]
    Cancelled(Cancel),
}

/// Why a running call was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, thiserror::Error)]
#[repr(u8)]
pub enum Cancel {
    /// Its future was dropped with nothing more said: an HTTP client disconnected, stdin
    /// closed, the MCP client left.
    #[default]
    #[error("cancelled: the caller went away while the call ran")]
    CallerGone = 0,
    /// The MCP client sent `notifications/cancelled` for the request.
    #[error("cancelled by the client (notifications/cancelled) while the call ran")]
    ByClient = 1,
    /// The request's MCP session was deleted (`DELETE /mcp`).
    #[error("cancelled: the MCP session was deleted while the call ran")]
    SessionDeleted = 2,
}

/// Where an ingress notes why it is about to stop a request, before it drops the request's
/// future: the pipeline's drop guard reads it to trace the call (`Cancel::CallerGone` when
/// nothing was noted). Clones share the note.
#[derive(Debug, Clone, Default)]
pub struct CancelNote(std::sync::Arc<std::sync::atomic::AtomicU8>);

impl CancelNote {
    pub fn set(&self, why: Cancel) {
        self.0
            .store(why as u8, std::sync::atomic::Ordering::Release);
    }

    pub fn get(&self) -> Cancel {
        match self.0.load(std::sync::atomic::Ordering::Acquire) {
            1 => Cancel::ByClient,
            2 => Cancel::SessionDeleted,
            _ => Cancel::CallerGone,
        }
    }
}

/// nginx's status for a request whose client went away before the answer.
fn client_closed_request() -> StatusCode {
    StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST)
}

/// The row of the table for one error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode {
    pub code: &'static str,
    pub status: StatusCode,
    pub jsonrpc: i64,
}

impl PipelineError {
    pub fn code(&self) -> ErrorCode {
        let (code, status, jsonrpc) = match self {
            PipelineError::Unauthenticated(_) => {
                ("unauthenticated", StatusCode::UNAUTHORIZED, -32600)
            }
            PipelineError::AuthenticationRequired => {
                ("authentication_required", StatusCode::UNAUTHORIZED, -32600)
            }
            PipelineError::Forbidden(_) => ("forbidden", StatusCode::FORBIDDEN, -32600),
            PipelineError::UnknownTool(_) => ("unknown_tool", StatusCode::NOT_FOUND, -32602),
            PipelineError::InvalidRequest(_) => {
                ("invalid_request", StatusCode::BAD_REQUEST, -32602)
            }
            PipelineError::Forward(_) => ("backend_error", StatusCode::BAD_GATEWAY, -32603),
            PipelineError::ForwardTimeout(_) => {
                ("backend_timeout", StatusCode::GATEWAY_TIMEOUT, -32603)
            }
            PipelineError::Unavailable(_) => {
                ("unavailable", StatusCode::SERVICE_UNAVAILABLE, -32603)
            }
            // Like a call denied by the halt, which is what it would have been a moment later.
            PipelineError::Halted(_) => ("halted", StatusCode::FORBIDDEN, -32600),
            // 499 "client closed request" (nginx); -32800 "request cancelled" (LSP).
            PipelineError::Cancelled(_) => ("cancelled", client_closed_request(), -32800),
        };
        ErrorCode {
            code,
            status,
            jsonrpc,
        }
    }
}

impl From<mesh7_actors::rate_limit::RateLimitError> for PipelineError {
    fn from(e: mesh7_actors::rate_limit::RateLimitError) -> Self {
        PipelineError::Unavailable(e.to_string())
    }
}

impl From<mesh7_actors::trace::TraceError> for PipelineError {
    fn from(e: mesh7_actors::trace::TraceError) -> Self {
        PipelineError::Unavailable(e.to_string())
    }
}

impl From<mesh7_actors::cli::CliError> for PipelineError {
    fn from(e: mesh7_actors::cli::CliError) -> Self {
        use mesh7_actors::cli::CliError;
        match e {
            CliError::Timeout { .. } => PipelineError::ForwardTimeout(e.to_string()),
            CliError::Unavailable(_) => PipelineError::Unavailable(e.to_string()),
            CliError::Cancelled => PipelineError::Cancelled(Cancel::CallerGone),
            other => PipelineError::Forward(other.to_string()),
        }
    }
}

impl From<mesh7_actors::upstream::UpstreamError> for PipelineError {
    fn from(e: mesh7_actors::upstream::UpstreamError) -> Self {
        use mesh7_actors::upstream::UpstreamError;
        match e {
            UpstreamError::Timeout(_) => PipelineError::ForwardTimeout(e.to_string()),
            UpstreamError::Unavailable(_) => PipelineError::Unavailable(e.to_string()),
            UpstreamError::NotConnected(_)
            | UpstreamError::ConnectionLost(_)
            | UpstreamError::Rpc { .. }
            | UpstreamError::Protocol(_) => PipelineError::Forward(e.to_string()),
        }
    }
}

impl From<mesh7_actors::approvals::ApprovalError> for PipelineError {
    fn from(e: mesh7_actors::approvals::ApprovalError) -> Self {
        // The governance path fails closed: an approval that cannot be read or stored never runs.
        PipelineError::Unavailable(e.to_string())
    }
}

impl From<mesh7_actors::grants::GrantError> for PipelineError {
    fn from(e: mesh7_actors::grants::GrantError) -> Self {
        PipelineError::Unavailable(e.to_string())
    }
}

impl From<mesh7_actors::taint::TaintError> for PipelineError {
    fn from(e: mesh7_actors::taint::TaintError) -> Self {
        PipelineError::Unavailable(e.to_string())
    }
}

impl From<mesh7_actors::halts::HaltError> for PipelineError {
    fn from(e: mesh7_actors::halts::HaltError) -> Self {
        PipelineError::Unavailable(e.to_string())
    }
}

impl From<mesh7_actors::pins::PinError> for PipelineError {
    fn from(e: mesh7_actors::pins::PinError) -> Self {
        PipelineError::Unavailable(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancel_note_says_what_was_noted_last_and_defaults_to_the_caller_gone() {
        let note = CancelNote::default();
        let shared = note.clone();
        assert_eq!(note.get(), Cancel::CallerGone);
        for why in [Cancel::ByClient, Cancel::SessionDeleted, Cancel::CallerGone] {
            shared.set(why);
            assert_eq!(note.get(), why);
            let e = PipelineError::Cancelled(why);
            assert_eq!(e.to_string(), why.to_string());
            assert_eq!((e.code().code, e.code().jsonrpc), ("cancelled", -32800));
            assert_eq!(e.code().status.as_u16(), 499);
        }
    }
}
