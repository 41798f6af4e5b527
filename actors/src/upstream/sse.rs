//! The legacy HTTP+SSE transport: a long-lived `GET` stream that first announces the endpoint
//! to POST messages to (same origin only) and then carries every message from the server.

use std::sync::Arc;
use std::time::Duration;

use actix::WeakRecipient;
use reqwest::Url;
use reqwest::header::{ACCEPT, CACHE_CONTROL, HeaderMap};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::connection::{Connection, Driver, Task};
use super::http::{MAX_MESSAGE, Poster, error_chain, run_outbox};
use super::rpc::{Link, Rpc};
use super::wire::{SseReader, resolve_endpoint};
use super::{ConnEvent, UpstreamError};

/// How long the stream may take to answer and announce its endpoint.
const ENDPOINT_WAIT: Duration = Duration::from_secs(10);
/// flux7's bound on one SSE line.
const MAX_LINE: usize = 1 << 20;
const OUTBOX: usize = 64;

/// Opens the stream, waits for the endpoint, and starts reading the stream.
pub(crate) async fn open(
    server: &str,
    client: &reqwest::Client,
    url: &Url,
    headers: &HeaderMap,
    generation: u64,
    events: WeakRecipient<ConnEvent>,
) -> Result<Connection, UpstreamError> {
    let opened = tokio::time::timeout(ENDPOINT_WAIT, subscribe(client, url, headers)).await;
    let (stream, endpoint) = opened.unwrap_or_else(|_| {
        Err(UpstreamError::Unavailable(format!(
            "GET {url}: no endpoint event within {ENDPOINT_WAIT:?}"
        )))
    })?;
    let poster = Arc::new(Poster::new(
        client.clone(),
        endpoint,
        headers.clone(),
        false,
    ));
    let (outbox, queued) = mpsc::channel(OUTBOX);
    let link = Link::Post {
        poster: poster.clone(),
        outbox,
    };
    let rpc = Arc::new(Rpc::new(server, generation, link, events));
    let (close, closed) = oneshot::channel();
    let driver = Driver::new(close, Task::spawn(drive(stream, rpc.clone(), closed)));
    let mut conn = Connection::new(rpc, Some(driver));
    conn.add_task(Task::spawn(run_outbox(poster, queued)));
    Ok(conn)
}

async fn subscribe(
    client: &reqwest::Client,
    url: &Url,
    headers: &HeaderMap,
) -> Result<(SseReader, Url), UpstreamError> {
    let unavailable = |what: String| UpstreamError::Unavailable(format!("GET {url}: {what}"));
    let response = client
        .get(url.clone())
        .headers(headers.clone())
        .header(ACCEPT, "text/event-stream")
        .header(CACHE_CONTROL, "no-cache")
        .send()
        .await
        .map_err(|e| unavailable(error_chain(&e)))?;
    if response.status() != reqwest::StatusCode::OK {
        return Err(unavailable(format!("HTTP {}", response.status())));
    }
    let mut stream = SseReader::new(Box::pin(response.bytes_stream()), MAX_LINE, MAX_MESSAGE);
    loop {
        match stream.next().await {
            Ok(Some(event)) if event.event == "endpoint" => {
                let endpoint =
                    resolve_endpoint(url, &event.data).map_err(UpstreamError::Protocol)?;
                return Ok((stream, endpoint));
            }
            Ok(Some(event)) => {
                tracing::debug!(event = %event.event, "SSE event before the endpoint ignored");
            }
            Ok(None) => return Err(unavailable("stream ended before the endpoint event".into())),
            Err(e) => return Err(unavailable(e)),
        }
    }
}

/// Reads the stream until it ends (the connection is then lost) or the connection is closed.
async fn drive(mut stream: SseReader, rpc: Arc<Rpc>, closed: oneshot::Receiver<()>) {
    let read = async {
        loop {
            match stream.next().await {
                Ok(Some(event)) if event.event == "message" => {
                    match serde_json::from_str::<Value>(&event.data) {
                        Ok(msg) => rpc.dispatch(msg),
                        Err(e) => {
                            tracing::debug!(server = rpc.server(), "non-JSON SSE message: {e}");
                        }
                    }
                }
                Ok(Some(event)) => {
                    tracing::debug!(server = rpc.server(), event = %event.event, "SSE event ignored");
                }
                Ok(None) => return "closed its SSE stream".to_owned(),
                Err(e) => return format!("SSE stream failed: {e}"),
            }
        }
    };
    tokio::select! {
        reason = read => { rpc.lost(&reason); }
        _ = closed => {}
    }
}
