use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// A loopback HTTP endpoint that records webhook requests.
pub(crate) struct Hook {
    listener: TcpListener,
    pub(crate) url: String,
}

impl Hook {
    pub(crate) async fn bind() -> Hook {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        Hook { listener, url }
    }

    /// Accepts one request, answers 200 and returns its head and JSON body (10 s at most).
    pub(crate) async fn next(&self) -> (String, Value) {
        tokio::time::timeout(Duration::from_secs(10), self.accept())
            .await
            .expect("a webhook arrives within 10 s")
    }

    async fn accept(&self) -> (String, Value) {
        let (mut socket, _) = self.listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            let n = socket.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed before the headers ended");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().unwrap())
            })
            .expect("a Content-Length header");
        while buf.len() < head_end + length {
            let n = socket.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed before the body ended");
            buf.extend_from_slice(&chunk[..n]);
        }
        socket
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let body = serde_json::from_slice(&buf[head_end..head_end + length]).unwrap();
        (head, body)
    }
}

#[test]
fn check_target_table() {
    let refused = |what: &str| Err(format!("ssrf: {what}; {HINT}"));
    let cases: Vec<(&str, bool, Result<(), String>)> = vec![
        (
            "http://localhost:8080/x",
            false,
            refused("localhost is a loopback host"),
        ),
        (
            "http://LOCALHOST./x",
            false,
            refused("localhost is a loopback host"),
        ),
        (
            "http://api.localhost/x",
            false,
            refused("api.localhost is a loopback host"),
        ),
        (
            "http://127.0.0.1/x",
            false,
            refused("127.0.0.1 is a loopback address"),
        ),
        (
            "http://127.8.9.10/x",
            false,
            refused("127.8.9.10 is a loopback address"),
        ),
        (
            "http://10.1.2.3/x",
            false,
            refused("10.1.2.3 is a private address"),
        ),
        (
            "http://172.16.0.1/x",
            false,
            refused("172.16.0.1 is a private address"),
        ),
        (
            "http://172.31.255.255/x",
            false,
            refused("172.31.255.255 is a private address"),
        ),
        (
            "http://192.168.1.1/x",
            false,
            refused("192.168.1.1 is a private address"),
        ),
        (
            "http://169.254.169.254/latest/meta-data",
            false,
            refused("169.254.169.254 is a link-local address (cloud metadata)"),
        ),
        (
            "http://[::1]:9000/x",
            false,
            refused("::1 is a loopback address"),
        ),
        (
            "http://[fc00::1]/x",
            false,
            refused("fc00::1 is a private (unique local) address"),
        ),
        (
            "http://[fd12:3456::1]/x",
            false,
            refused("fd12:3456::1 is a private (unique local) address"),
        ),
        (
            "http://[fe80::1]/x",
            false,
            refused("fe80::1 is a link-local address"),
        ),
        (
            "http://[::ffff:127.0.0.1]/x",
            false,
            refused("::ffff:127.0.0.1 is a loopback address"),
        ),
        (
            "http://0.0.0.0/x",
            false,
            refused("0.0.0.0 is an unspecified address"),
        ),
        (
            "ftp://93.184.216.34/x",
            false,
            Err("ssrf: scheme \"ftp\" is not allowed (http or https only)".to_owned()),
        ),
        (
            "ftp://127.0.0.1/x",
            true,
            Err("ssrf: scheme \"ftp\" is not allowed (http or https only)".to_owned()),
        ),
        ("http://93.184.216.34/hook", false, Ok(())),
        ("https://8.8.8.8/hook", false, Ok(())),
        ("http://172.32.0.1/x", false, Ok(())),
        ("http://127.0.0.1:8080/x", true, Ok(())),
        ("http://localhost:8080/x", true, Ok(())),
        ("http://[::1]/x", true, Ok(())),
    ];
    for (url, allow_private, expected) in cases {
        let got = check_target(url, allow_private);
        assert_eq!(got, expected, "{url} allow_private={allow_private}");
    }
}

#[test]
fn malformed_urls_are_refused() {
    for url in ["not a url", "http://", "file:///etc/passwd"] {
        let err = check_target(url, true).unwrap_err();
        assert!(err.starts_with("ssrf: "), "{url}: {err}");
    }
}

#[actix_rt::test]
async fn notifier_posts_json_to_an_allowed_local_target() {
    let hook = Hook::bind().await;
    let notifier = Notifier::start(true);
    let payload = json!({"event": "pending", "id": "abc"});
    assert!(notifier.post(&hook.url, payload.clone()));
    let (head, body) = hook.next().await;
    assert!(head.starts_with("POST /hook HTTP/1.1\r\n"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    assert_eq!(body, payload);
}

#[actix_rt::test]
async fn delivery_refuses_a_private_target_when_not_allowed() {
    let hook = Hook::bind().await;
    let job = Job {
        url: hook.url.clone(),
        payload: json!({}),
    };
    let client = reqwest::Client::new();
    let err = deliver(&client, &job, false).await.unwrap_err();
    assert_eq!(
        err,
        format!("ssrf: 127.0.0.1 is a loopback address; {HINT}")
    );
}

#[actix_rt::test]
async fn a_full_queue_drops_and_counts_without_waiting() {
    let notifier = Notifier::start(false);
    // Nothing yields between the posts, so the sending task cannot drain the queue meanwhile.
    let queued = (0..QUEUE + 10)
        .filter(|_| notifier.post("http://10.0.0.1/x", json!({})))
        .count();
    assert_eq!(queued, QUEUE);
    assert_eq!(notifier.stats().dropped, 10);
}
