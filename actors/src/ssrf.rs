//! The outbound-request guard (server-side request forgery): which addresses mesh7 may connect
//! to on behalf of a configuration or a fetched document, and a reqwest client that keeps to it.
//!
//! Invariants:
//! - Only `http` and `https` URLs pass.
//! - Loopback, private, link-local (cloud metadata above all), shared (CGNAT), unspecified,
//!   multicast, broadcast and reserved addresses are refused, including IPv4 addresses embedded in
//!   IPv6 ones (mapped, compatible, NAT64, 6to4), unless the caller allows private targets.
//! - Host names are vetted when the connection is made, by the client's own resolver: every
//!   resolved address must pass, and the connection goes to the vetted addresses only, so a name
//!   that resolves differently the second time (DNS rebinding) cannot slip through.
//! - IP literals never reach a resolver, so they are checked on the URL itself, before the request
//!   and at every redirect.
//!
//! Every refusal reads `ssrf: <what> is <which kind of address>; set allow_private: true to allow it`.

use std::error::Error as StdError;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// Redirects a guarded client follows at most.
pub const MAX_REDIRECTS: usize = 5;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SsrfError {
    #[error("ssrf: invalid URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("ssrf: scheme {0:?} is not allowed (http or https only)")]
    Scheme(String),
    #[error("ssrf: URL {0:?} has no host")]
    NoHost(String),
    /// The URL names a forbidden address (or `localhost`) itself.
    #[error("ssrf: {host} is {kind}; set allow_private: true to allow it")]
    Forbidden { host: String, kind: &'static str },
    /// A host name resolved to a forbidden address.
    #[error("ssrf: {host} resolves to {ip}, {kind}; set allow_private: true to allow it")]
    Resolved {
        host: String,
        ip: IpAddr,
        kind: &'static str,
    },
    #[error("ssrf: too many redirects (more than {MAX_REDIRECTS})")]
    TooManyRedirects,
}

/// Whether mesh7 refuses to connect to `ip` unless private targets are allowed.
pub fn is_forbidden_ip(ip: &IpAddr) -> bool {
    classify(ip).is_some()
}

/// What kind of forbidden address `ip` is (`"a loopback address"`…), or `None` for a public one.
pub fn classify(ip: &IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => classify_v4(*v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, _, _] = ip.octets();
    if ip == Ipv4Addr::new(169, 254, 169, 254) || ip == Ipv4Addr::new(100, 100, 100, 200) {
        // AWS/GCP/Azure and Alibaba instance metadata.
        return Some(METADATA);
    }
    let kind = if ip.is_loopback() {
        "a loopback address"
    } else if ip.is_private() {
        "a private address"
    } else if ip.is_link_local() {
        "a link-local address"
    } else if a == 0 {
        "an unspecified address"
    } else if a == 100 && (64..128).contains(&b) {
        "a shared (carrier-grade NAT) address"
    } else if ip.is_broadcast() {
        "a broadcast address"
    } else if ip.is_multicast() {
        "a multicast address"
    } else if a >= 240 {
        "a reserved address"
    } else {
        return None;
    };
    Some(kind)
}

const METADATA: &str = "a link-local address (cloud metadata)";

fn classify_v6(ip: &Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = embedded_v4(ip) {
        return classify_v4(v4);
    }
    let seg = ip.segments();
    // AWS instance metadata over IPv6.
    if seg == [0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254] {
        return Some(METADATA);
    }
    let kind = if ip.is_loopback() {
        "a loopback address"
    } else if ip.is_unspecified() {
        "an unspecified address"
    } else if seg[0] & 0xfe00 == 0xfc00 {
        "a private (unique local) address"
    } else if seg[0] & 0xffc0 == 0xfe80 {
        "a link-local address"
    } else if seg[0] & 0xffc0 == 0xfec0 {
        "a private (site-local) address"
    } else if ip.is_multicast() {
        "a multicast address"
    } else {
        return None;
    };
    Some(kind)
}

/// The IPv4 address an IPv6 address carries: mapped (`::ffff:a.b.c.d`), compatible
/// (`::a.b.c.d`), NAT64 (`64:ff9b::a.b.c.d`) or 6to4 (`2002:aabb:ccdd::`).
fn embedded_v4(ip: &Ipv6Addr) -> Option<Ipv4Addr> {
    let seg = ip.segments();
    let low = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    match seg {
        [0, 0, 0, 0, 0, 0xffff, hi, lo] => Some(low(hi, lo)),
        // `::` and `::1` are themselves, not IPv4-compatible addresses.
        [0, 0, 0, 0, 0, 0, hi, lo] if hi != 0 => Some(low(hi, lo)),
        [0x0064, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(low(hi, lo)),
        [0x2002, hi, lo, ..] => Some(low(hi, lo)),
        _ => None,
    }
}

/// Checks a URL before any request: scheme, host present, and, unless `allow_private`, that
/// the host is neither `localhost` nor a forbidden IP literal. Host names are vetted again at
/// connect time by [`GuardedResolver`].
pub fn check_url(url: &str, allow_private: bool) -> Result<(), SsrfError> {
    let parsed = Url::parse(url).map_err(|e| SsrfError::InvalidUrl {
        url: url.to_owned(),
        reason: e.to_string(),
    })?;
    check_parsed(&parsed, allow_private)
}

fn check_parsed(url: &Url, allow_private: bool) -> Result<(), SsrfError> {
    match url.scheme() {
        "http" | "https" => {}
        other => return Err(SsrfError::Scheme(other.to_owned())),
    }
    let host = url
        .host()
        .ok_or_else(|| SsrfError::NoHost(url.to_string()))?;
    if allow_private {
        return Ok(());
    }
    let (shown, ip) = match host {
        Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if name == "localhost" || name.ends_with(".localhost") {
                return Err(SsrfError::Forbidden {
                    host: name,
                    kind: "a loopback host",
                });
            }
            return Ok(());
        }
        Host::Ipv4(v4) => (v4.to_string(), IpAddr::V4(v4)),
        Host::Ipv6(v6) => (v6.to_string(), IpAddr::V6(v6)),
    };
    match classify(&ip) {
        Some(kind) => Err(SsrfError::Forbidden { host: shown, kind }),
        None => Ok(()),
    }
}

/// Keeps the resolved addresses of `host` if every one of them is allowed.
pub fn vet(host: &str, addrs: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, SsrfError> {
    if let Some((addr, kind)) = addrs
        .iter()
        .find_map(|a| classify(&a.ip()).map(|kind| (a, kind)))
    {
        return Err(SsrfError::Resolved {
            host: host.to_owned(),
            ip: addr.ip(),
            kind,
        });
    }
    Ok(addrs)
}

/// A reqwest resolver that refuses names resolving to forbidden addresses, at connect time.
#[derive(Debug, Clone, Copy, Default)]
pub struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let vetted = vet(&host, found)?;
            let addrs: Addrs = Box::new(vetted.into_iter());
            Ok(addrs)
        })
    }
}

/// Follows at most [`MAX_REDIRECTS`] redirects, each one checked like the first URL.
pub fn redirect_policy(allow_private: bool) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(SsrfError::TooManyRedirects);
        }
        match check_parsed(attempt.url(), allow_private) {
            Ok(()) => attempt.follow(),
            Err(e) => attempt.error(e),
        }
    })
}

/// A client builder with the guard in place (unless `allow_private`): the vetting resolver,
/// checked redirects and no proxy (a proxy would resolve names itself, out of the guard's
/// sight). Connect timeout 10 s, as flux7's guarded dialer.
pub fn client_builder(allow_private: bool) -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .redirect(redirect_policy(allow_private))
        .no_proxy();
    if allow_private {
        builder
    } else {
        builder.dns_resolver(GuardedResolver)
    }
}

/// The guard's refusal inside an error chain (e.g. a `reqwest::Error`), if that is why it failed.
pub fn find<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a SsrfError> {
    let mut current: Option<&'a (dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<SsrfError>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_addresses() {
        let table: &[(&str, Option<&str>)] = &[
            ("169.254.169.254", Some(METADATA)),
            ("100.100.100.200", Some(METADATA)),
            ("127.0.0.1", Some("a loopback address")),
            ("127.8.9.10", Some("a loopback address")),
            ("10.1.2.3", Some("a private address")),
            ("172.16.0.1", Some("a private address")),
            ("172.31.255.255", Some("a private address")),
            ("192.168.1.1", Some("a private address")),
            ("169.254.1.1", Some("a link-local address")),
            ("0.0.0.0", Some("an unspecified address")),
            ("0.1.2.3", Some("an unspecified address")),
            ("100.64.0.1", Some("a shared (carrier-grade NAT) address")),
            ("255.255.255.255", Some("a broadcast address")),
            ("224.0.0.1", Some("a multicast address")),
            ("240.0.0.1", Some("a reserved address")),
            ("::1", Some("a loopback address")),
            ("::", Some("an unspecified address")),
            ("fd00::1", Some("a private (unique local) address")),
            ("fd00:ec2::254", Some(METADATA)),
            ("fe80::1", Some("a link-local address")),
            ("fec0::1", Some("a private (site-local) address")),
            ("ff02::1", Some("a multicast address")),
            ("::ffff:127.0.0.1", Some("a loopback address")),
            ("::ffff:169.254.169.254", Some(METADATA)),
            ("::10.0.0.1", Some("a private address")),
            ("64:ff9b::a9fe:a9fe", Some(METADATA)),
            ("2002:7f00:1::", Some("a loopback address")),
            ("8.8.8.8", None),
            ("172.32.0.1", None),
            ("100.128.0.1", None),
            ("1.1.1.1", None),
            ("2606:4700::1111", None),
            ("::ffff:8.8.8.8", None),
        ];
        for (ip, expected) in table {
            let parsed: IpAddr = ip.parse().unwrap();
            assert_eq!(classify(&parsed), *expected, "{ip}");
            assert_eq!(is_forbidden_ip(&parsed), expected.is_some(), "{ip}");
        }
    }

    #[test]
    fn checks_urls_with_messages_that_say_what_was_refused() {
        let table: &[(&str, bool, Result<(), &str>)] = &[
            (
                "http://169.254.169.254/latest/meta-data/",
                false,
                Err(
                    "ssrf: 169.254.169.254 is a link-local address (cloud metadata); set allow_private: true to allow it",
                ),
            ),
            (
                "http://127.0.0.1:8080/spec.json",
                false,
                Err("ssrf: 127.0.0.1 is a loopback address; set allow_private: true to allow it"),
            ),
            (
                "http://localhost:9000/",
                false,
                Err("ssrf: localhost is a loopback host; set allow_private: true to allow it"),
            ),
            (
                "http://api.LOCALHOST./",
                false,
                Err("ssrf: api.localhost is a loopback host; set allow_private: true to allow it"),
            ),
            (
                "http://[::1]/",
                false,
                Err("ssrf: ::1 is a loopback address; set allow_private: true to allow it"),
            ),
            (
                "http://[::ffff:10.0.0.1]/",
                false,
                Err(
                    "ssrf: ::ffff:10.0.0.1 is a private address; set allow_private: true to allow it",
                ),
            ),
            // Obfuscated IPv4 literals are normalised by the URL parser before the check.
            (
                "http://2130706433/",
                false,
                Err("ssrf: 127.0.0.1 is a loopback address; set allow_private: true to allow it"),
            ),
            (
                "http://0x7f.1/",
                false,
                Err("ssrf: 127.0.0.1 is a loopback address; set allow_private: true to allow it"),
            ),
            (
                "http://192.168.0.10/",
                false,
                Err("ssrf: 192.168.0.10 is a private address; set allow_private: true to allow it"),
            ),
            (
                "file:///etc/passwd",
                true,
                Err("ssrf: scheme \"file\" is not allowed (http or https only)"),
            ),
            (
                "gopher://example.com/",
                false,
                Err("ssrf: scheme \"gopher\" is not allowed (http or https only)"),
            ),
            (
                "not a url",
                false,
                Err("ssrf: invalid URL \"not a url\": relative URL without a base"),
            ),
            ("http://127.0.0.1:8080/", true, Ok(())),
            ("http://localhost/", true, Ok(())),
            (
                "https://petstore3.swagger.io/api/v3/openapi.json",
                false,
                Ok(()),
            ),
            ("http://8.8.8.8/", false, Ok(())),
        ];
        for (url, allow, expected) in table {
            let got = check_url(url, *allow).map_err(|e| e.to_string());
            assert_eq!(got, expected.map_err(str::to_owned), "{url}");
        }
    }

    #[test]
    fn vet_refuses_a_name_when_any_address_is_forbidden() {
        let public: SocketAddr = "93.184.216.34:0".parse().unwrap();
        let metadata: SocketAddr = "169.254.169.254:0".parse().unwrap();
        assert_eq!(vet("example.com", vec![public]), Ok(vec![public]));
        assert_eq!(
            vet("rebind.example", vec![public, metadata])
                .unwrap_err()
                .to_string(),
            "ssrf: rebind.example resolves to 169.254.169.254, a link-local address (cloud metadata); set allow_private: true to allow it"
        );
    }

    #[actix_rt::test]
    async fn guarded_client_refuses_a_name_resolving_to_loopback_at_connect_time() {
        // A listener that would answer if the guard let the connection through.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = client_builder(false).build().unwrap();
        // No `check_url` first: the resolver alone must refuse.
        let err = client
            .get(format!("http://localhost:{port}/"))
            .send()
            .await
            .unwrap_err();
        let found = find(&err).expect("the refusal is in the error chain");
        assert!(
            matches!(found, SsrfError::Resolved { host, kind: "a loopback address", .. } if host == "localhost"),
            "{found}"
        );
    }

    #[actix_rt::test]
    async fn guarded_client_refuses_a_redirect_to_a_forbidden_literal() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = sock.read(&mut buf).await;
            let _ = sock
                .write_all(
                    b"HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
        });
        // The first hop is allowed (private targets allowed for it), the redirect is not.
        let policy = redirect_policy(false);
        let client = reqwest::Client::builder()
            .redirect(policy)
            .no_proxy()
            .build()
            .unwrap();
        let err = client
            .get(format!("http://127.0.0.1:{port}/"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(
            find(&err).map(ToString::to_string).as_deref(),
            Some(
                "ssrf: 169.254.169.254 is a link-local address (cloud metadata); set allow_private: true to allow it"
            )
        );
    }
}
