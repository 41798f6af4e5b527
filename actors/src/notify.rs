//! Outbound approval webhooks (`approval.notify_url` and `X-Callback-URL`), behind the SSRF
//! guard of [`crate::ssrf`].
//!
//! Invariants:
//! - Posting never blocks the caller: jobs go into a bounded queue; when it is full the job is
//!   dropped and counted.
//! - Every target is checked when it is sent, unless private targets are allowed: scheme http
//!   or https, host not `localhost`, and every address the host resolves to public (not
//!   loopback, private, link-local such as 169.254.169.254, ...). The client's own resolver does
//!   the vetting and the connection goes to a vetted address, so a second DNS answer cannot
//!   redirect it (DNS rebinding). Redirects are not followed and no proxy is used.
//! - At most `CONCURRENCY` posts are in flight, each bounded by a 10 s timeout.
//!
//! Only plain `http://` targets are delivered: the client is built without TLS to keep the
//! build lean, so an `https://` post fails and is counted as failed.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::Url;
use reqwest::redirect::Policy;
use serde_json::Value;
use tokio::sync::{Semaphore, mpsc};

use crate::ssrf::{self, SsrfError};

/// Jobs waiting to be sent; past this, new ones are dropped.
pub const QUEUE: usize = 256;
/// Posts in flight at once.
const CONCURRENCY: usize = 16;
/// The whole request, connection included.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// How the operator lifts the guard, named in refusals.
const HINT: &str = "set approval.allow_private_targets: true to allow it";

/// Checks a webhook target, resolving its host with the system resolver (this may block on
/// DNS). Errors start with `ssrf:`.
pub fn check_target(url: &str, allow_private: bool) -> Result<(), String> {
    ssrf::check_url(url, allow_private).map_err(refusal)?;
    if allow_private {
        return Ok(());
    }
    let parsed = Url::parse(url).map_err(|e| format!("ssrf: invalid URL {url:?}: {e}"))?;
    if let Some(url::Host::Domain(name)) = parsed.host() {
        let port = parsed.port_or_known_default().unwrap_or(80);
        let addrs: Vec<SocketAddr> = (name, port)
            .to_socket_addrs()
            .map_err(|e| format!("ssrf: cannot resolve {name}: {e}"))?
            .collect();
        ssrf::vet(name, addrs).map_err(refusal)?;
    }
    Ok(())
}

/// The guard's refusal, pointing at the approval setting rather than the generic one.
fn refusal(e: SsrfError) -> String {
    match e {
        SsrfError::Forbidden { host, kind } => format!("ssrf: {host} is {kind}; {HINT}"),
        SsrfError::Resolved { host, ip, kind } => {
            format!("ssrf: {host} resolves to {ip}, {kind}; {HINT}")
        }
        other => other.to_string(),
    }
}

/// Delivery counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NotifyStats {
    /// Answered with a status below 400.
    pub sent: u64,
    /// Refused by the guard, unreachable, timed out, or answered with 400 or more.
    pub failed: u64,
    /// Not queued because the queue was full.
    pub dropped: u64,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

struct Job {
    url: String,
    payload: Value,
}

/// The webhook sender. Cloning is cheap; the sending task ends when the last clone is dropped.
#[derive(Clone)]
pub struct Notifier {
    tx: mpsc::Sender<Job>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier").finish_non_exhaustive()
    }
}

impl Notifier {
    /// Starts the sending task; call it inside a Tokio runtime (an actix `System` is one).
    /// `allow_private` lets targets be loopback or private addresses.
    pub fn start(allow_private: bool) -> Notifier {
        let (tx, rx) = mpsc::channel(QUEUE);
        let counters = Arc::new(Counters::default());
        tokio::spawn(run(rx, allow_private, counters.clone()));
        Notifier { tx, counters }
    }

    /// Queues a JSON POST of `payload` to `url`. Returns false (and counts a drop) when the
    /// queue is full or the sender has stopped; never waits.
    pub fn post(&self, url: &str, payload: Value) -> bool {
        let job = Job {
            url: url.to_owned(),
            payload,
        };
        match self.tx.try_send(job) {
            Ok(()) => true,
            Err(e) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(url, reason = %e, "webhook dropped");
                false
            }
        }
    }

    pub fn stats(&self) -> NotifyStats {
        NotifyStats {
            sent: self.counters.sent.load(Ordering::Relaxed),
            failed: self.counters.failed.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
        }
    }
}

async fn run(mut rx: mpsc::Receiver<Job>, allow_private: bool, counters: Arc<Counters>) {
    // The guarded client vets host names when it connects and dials only vetted addresses.
    // Redirects are not followed: a webhook has no reason to move.
    let client = ssrf::client_builder(allow_private)
        .timeout(TIMEOUT)
        .redirect(Policy::none())
        .build();
    let slots = Arc::new(Semaphore::new(CONCURRENCY));
    while let Some(job) = rx.recv().await {
        // Waiting for a slot here lets the queue fill, so overload turns into counted drops.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let client = client.as_ref().map_err(ToString::to_string).cloned();
        let counters = counters.clone();
        tokio::spawn(async move {
            let outcome = match client {
                Ok(client) => deliver(&client, &job, allow_private).await,
                Err(e) => Err(format!("cannot build the webhook client: {e}")),
            };
            drop(slot);
            match outcome {
                Ok(()) => {
                    counters.sent.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(url = %job.url, error = %e, "webhook failed");
                }
            }
        });
    }
}

async fn deliver(client: &reqwest::Client, job: &Job, allow_private: bool) -> Result<(), String> {
    // IP literals never reach the resolver, so the URL itself is checked first.
    ssrf::check_url(&job.url, allow_private).map_err(refusal)?;
    let response = client
        .post(&job.url)
        .json(&job.payload)
        .send()
        .await
        .map_err(|e| match ssrf::find(&e) {
            Some(refused) => refusal(refused.clone()),
            None => e.to_string(),
        })?;
    let status = response.status();
    if status.as_u16() >= 400 {
        return Err(format!("status {status}"));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;
