//! Reading request bodies with a size limit and a deadline, so a large or slow client gets a
//! JSON 413 / 408 instead of holding memory or a worker.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes, BytesMut};
use futures_util::StreamExt as _;

use super::ApiError;

/// Why a body was refused: 413, 408 or 400, with the message the caller sees.
#[derive(Debug, Clone)]
pub struct BodyError {
    pub status: StatusCode,
    pub message: String,
}

impl BodyError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> Self {
        ApiError::new(e.status, e.message)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: usize,
    pub timeout: Duration,
}

/// Reads the whole body, refusing it as soon as it passes `max_bytes`. Shared by every route
/// that takes a body (`/tool`, `/decide`, the control plane, `/mcp`).
pub async fn read(
    req: &actix_web::HttpRequest,
    mut payload: web::Payload,
    limits: BodyLimits,
) -> Result<Bytes, BodyError> {
    let too_large = || {
        BodyError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body exceeds {} bytes", limits.max_bytes),
        )
    };
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limits.max_bytes) {
        return Err(too_large());
    }
    let read_all = async {
        let mut buf = BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| {
                BodyError::new(StatusCode::BAD_REQUEST, format!("cannot read body: {e}"))
            })?;
            if buf.len() + chunk.len() > limits.max_bytes {
                return Err(too_large());
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    };
    match tokio::time::timeout(limits.timeout, read_all).await {
        Ok(result) => result,
        Err(_) => Err(BodyError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request body not received in time",
        )),
    }
}

/// A JSON body whose fields are all optional: an empty (or blank) body is the defaults.
pub(super) fn json_or_default<T: Default + serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Result<T, serde_json::Error> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        serde_json::from_slice(bytes)
    }
}
