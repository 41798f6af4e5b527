//! Outbound approval webhooks (`approval.notify_url` and `X-Callback-URL`), with an SSRF guard.
//!
//! Invariants:
//! - Posting never blocks the caller: jobs go into a bounded queue; when it is full the job is
//!   dropped and counted.
//! - Every target is checked when it is sent: scheme http or https, host not `localhost`, and
//!   every address the host resolves to is public (not loopback, private, unique-local,
//!   link-local such as 169.254.169.254, shared, multicast, broadcast or unspecified), unless
//!   private targets are allowed. The connection then goes to the vetted address itself, so a
//!   second DNS answer cannot redirect it (DNS rebinding). Redirects are not followed and no
//!   proxy is used.
//! - At most `CONCURRENCY` posts are in flight, each bounded by a 10 s timeout.
//!
//! Only plain `http://` targets are delivered: the client is built without TLS to keep the
//! build lean, so an `https://` post fails and is counted as failed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::Url;
use reqwest::redirect::Policy;
use serde_json::Value;
use tokio::sync::{Semaphore, mpsc};

/// Jobs waiting to be sent; past this, new ones are dropped.
pub const QUEUE: usize = 256;
/// Posts in flight at once.
const CONCURRENCY: usize = 16;
/// The whole request, connection included.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Checks a webhook target, resolving its host with the system resolver (this may block on
/// DNS). Errors start with `ssrf:`.
pub fn check_target(url: &str, allow_private: bool) -> Result<(), String> {
    let target = parse(url, allow_private)?;
    match target.host {
        Host::Ip(_) => Ok(()),
        Host::Domain(_) if allow_private => Ok(()),
        Host::Domain(ref name) => {
            let addrs: Vec<SocketAddr> = (name.as_str(), target.port)
                .to_socket_addrs()
                .map_err(|e| format!("ssrf: cannot resolve {name}: {e}"))?
                .collect();
            vet(name, &addrs).map(drop)
        }
    }
}

/// The parts of a URL the guard looks at.
struct Target {
    url: Url,
    host: Host,
    port: u16,
}

enum Host {
    Ip(IpAddr),
    Domain(String),
}

/// Scheme, host and, for a literal address, the address itself.
fn parse(url: &str, allow_private: bool) -> Result<Target, String> {
    let parsed = Url::parse(url).map_err(|e| format!("ssrf: invalid URL {url:?}: {e}"))?;
    let scheme = parsed.scheme();
    if scheme != "http" && scheme != "https" {
        return Err(format!(
            "ssrf: scheme {scheme:?} is not allowed (http or https only)"
        ));
    }
    let port = parsed
        .port_or_known_default()
        .ok_or_else(|| format!("ssrf: no port for {url:?}"))?;
    let host = match parsed.host() {
        None => return Err(format!("ssrf: no host in {url:?}")),
        Some(url::Host::Ipv4(ip)) => Host::Ip(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Host::Ip(IpAddr::V6(ip)),
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if !allow_private && (name == "localhost" || name.ends_with(".localhost")) {
                return Err("ssrf: localhost is not allowed".to_owned());
            }
            Host::Domain(name)
        }
    };
    if let Host::Ip(ip) = host
        && !allow_private
        && let Some(kind) = forbidden(ip)
    {
        return Err(format!("ssrf: {ip} is not a public address ({kind})"));
    }
    Ok(Target {
        url: parsed,
        host,
        port,
    })
}

/// The first address, once every address is known to be public.
fn vet(name: &str, addrs: &[SocketAddr]) -> Result<SocketAddr, String> {
    for addr in addrs {
        if let Some(kind) = forbidden(addr.ip()) {
            return Err(format!(
                "ssrf: {name} resolves to {}, not a public address ({kind})",
                addr.ip()
            ));
        }
    }
    addrs
        .first()
        .copied()
        .ok_or_else(|| format!("ssrf: {name} resolves to no address"))
}

/// Why an address may not be a webhook target, if it may not.
fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => forbidden_v4(v4),
            None => forbidden_v6(v6),
        },
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if a == 0 {
        Some("unspecified")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if ip.is_broadcast() {
        Some("broadcast")
    } else {
        None
    }
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() {
        Some("unspecified")
    } else if first & 0xfe00 == 0xfc00 {
        Some("private")
    } else if first & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if ip.is_multicast() {
        Some("multicast")
    } else {
        None
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
    let slots = Arc::new(Semaphore::new(CONCURRENCY));
    while let Some(job) = rx.recv().await {
        // Waiting for a slot here lets the queue fill, so overload turns into counted drops.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let counters = counters.clone();
        tokio::spawn(async move {
            let outcome = deliver(&job, allow_private).await;
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

async fn deliver(job: &Job, allow_private: bool) -> Result<(), String> {
    let target = parse(&job.url, allow_private)?;
    let mut client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .redirect(Policy::none())
        .no_proxy();
    if let Host::Domain(name) = &target.host {
        let addrs: Vec<SocketAddr> = tokio::time::timeout(
            TIMEOUT,
            tokio::net::lookup_host((name.as_str(), target.port)),
        )
        .await
        .map_err(|_| format!("ssrf: resolving {name} timed out"))?
        .map_err(|e| format!("ssrf: cannot resolve {name}: {e}"))?
        .collect();
        let addr = if allow_private {
            addrs
                .first()
                .copied()
                .ok_or_else(|| format!("ssrf: {name} resolves to no address"))?
        } else {
            vet(name, &addrs)?
        };
        client = client.resolve(name, addr);
    }
    let client = client.build().map_err(|e| e.to_string())?;
    let response = client
        .post(target.url)
        .json(&job.payload)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    if status.as_u16() >= 400 {
        return Err(format!("status {status}"));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;
