//! JWT authentication through the real `mesh7 serve`: keys generated here (RSA 2048 and EC
//! P-256, with aws-lc, independently of the verifier), tokens signed here, and a local JWKS
//! server whose key set a test can swap and whose fetches it counts.
//!
//! Covered: the token table (valid RS256 and ES256, expired, wrong issuer or audience, unknown
//! kid, bad signature, missing or non-string claim, `agent:` under JWT), `allow_legacy`, a
//! custom `agent_claim`, the operator identity (control plane, `/decide` for another agent,
//! approvals and grants) versus an agent JWT, `/mcp`, `require_authentication`,
//! `MESH_ADMIN_TOKEN`, the JWKS at start-up, its periodic refresh and the rate-limited refetch
//! for an unknown kid.

mod common;
#[allow(dead_code, unreachable_pub)] // shared helpers: each test file uses part of them
mod jwt_support;

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::{BIN, Daemon, wait_for, write_config};
use jwt_support::{AUD, ISS, TestKey, claims, jwks, now};
use serde_json::{Value, json};

const JWT_REQUIRED: &str = "authentication required: present a valid JWT";

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().expect("object").remove(key);
    claims
}

// ---------------------------------------------------------------------------------------------
// A JWKS server

/// Serves `/jwks.json` with a body (and status) that can be swapped; counts the fetches.
struct JwksServer {
    url: String,
    answer: Arc<Mutex<(u16, String)>>,
    fetches: Arc<AtomicUsize>,
}

impl JwksServer {
    fn start(body: String) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let url = format!(
            "http://{}/jwks.json",
            listener.local_addr().expect("local addr")
        );
        let answer = Arc::new(Mutex::new((200, body)));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (a, f) = (answer.clone(), fetches.clone());
        // The thread ends with the test process; each connection is answered once and closed.
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (status, body) = a.lock().expect("answer lock").clone();
                f.fetch_add(1, Ordering::SeqCst);
                answer_once(conn, status, &body);
            }
        });
        JwksServer {
            url,
            answer,
            fetches,
        }
    }

    fn set(&self, status: u16, body: String) {
        *self.answer.lock().expect("answer lock") = (status, body);
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

fn answer_once(mut conn: TcpStream, status: u16, body: &str) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let _ = write!(
        conn,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

// ---------------------------------------------------------------------------------------------
// Daemons

fn config(jwks_url: &str, auth_extra: &str, jwt_extra: &str) -> String {
    format!(
        r#"
auth:
{auth_extra}
  jwt:
    jwks_url: "{jwks_url}"
{jwt_extra}
cli_tools:
  - name: echo
    bin: echo
    bare: {{ timeout: 5s }}
  - name: ls
    bin: ls
    bare: {{ timeout: 5s }}
policies:
  - name: everyone
    agent: "*"
    rules:
      - tools: ["echo.run"]
        action: allow
      - tools: ["ls.run"]
        action: human_approval
"#
    )
}

/// The strict daemon: issuer, audience, operator claim, admin token, authentication required.
fn strict(jwks_url: &str) -> Daemon {
    Daemon::start(&config(
        jwks_url,
        "  admin_token: adm-token\n  require_authentication: true",
        &format!("    issuer: \"{ISS}\"\n    audience: {AUD}\n    operator_claim: mesh_operator"),
    ))
}

const ADMIN: &str = "Bearer adm-token";

fn echo(d: &Daemon, authorization: Option<&str>) -> (u16, Value) {
    d.post(
        "/tool/echo.run",
        authorization,
        r#"{"params": {"args": ["hi"]}}"#,
    )
}

/// The agent of the most recent trace (read with the admin token).
fn last_agent(d: &Daemon) -> String {
    let (status, traces) = d.get("/traces?limit=1", Some(ADMIN));
    assert_eq!(status, 200, "{traces}");
    traces[0]["agent_id"].as_str().expect("agent_id").to_owned()
}

/// Runs `mesh7 serve` on `config`, expecting it to stop by itself within 30 s; returns its exit
/// code and stderr.
#[allow(clippy::disallowed_types)] // the test waits for a real process, with a deadline
fn serve_until_exit(config: &std::path::Path) -> (i32, String) {
    let mut child = std::process::Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("MESH_ADMIN_TOKEN")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn mesh7");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mesh7 serve kept running although it should have refused to start");
        }
        std::thread::park_timeout(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr piped")
        .read_to_string(&mut stderr)
        .expect("stderr");
    (status.code().unwrap_or(-1), stderr)
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn the_token_table() {
    let (rsa, ec) = (TestKey::rsa("rsa-1"), TestKey::ec("ec-1"));
    let server = JwksServer::start(jwks(&[&rsa, &ec]));
    let d = strict(&server.url);
    let impostor = TestKey::rsa("rsa-1");
    let tampered = {
        let token = rsa.token(&claims("claude"));
        let parts: Vec<&str> = token.split('.').collect();
        let forged = B64.encode(claims("root").to_string());
        format!("Bearer {}.{forged}.{}", parts[0], parts[2])
    };
    let ok = |agent: &str| Ok(agent.to_owned());
    let refused = |message: &str| Err(message.to_owned());
    let rows: Vec<(&str, Option<String>, Result<String, String>)> = vec![
        (
            "valid RS256",
            Some(rsa.bearer(&claims("claude"))),
            ok("claude"),
        ),
        (
            "valid ES256",
            Some(ec.bearer(&claims("codex"))),
            ok("codex"),
        ),
        (
            "audience in a list",
            Some(rsa.bearer(&with(claims("lister"), "aud", json!(["other", AUD])))),
            ok("lister"),
        ),
        (
            "expired",
            Some(rsa.bearer(&with(claims("claude"), "exp", json!(now() - 60)))),
            refused("invalid token: token is expired"),
        ),
        (
            "no exp",
            Some(rsa.bearer(&without(claims("claude"), "exp"))),
            refused("invalid token: no \"exp\" claim"),
        ),
        (
            "not yet valid",
            Some(rsa.bearer(&with(claims("claude"), "nbf", json!(now() + 600)))),
            refused("invalid token: token is not valid yet (nbf)"),
        ),
        (
            "wrong issuer",
            Some(rsa.bearer(&with(claims("claude"), "iss", json!("https://evil.test")))),
            refused("invalid token: wrong issuer"),
        ),
        (
            "no issuer",
            Some(rsa.bearer(&without(claims("claude"), "iss"))),
            refused("invalid token: no \"iss\" claim"),
        ),
        (
            "wrong audience",
            Some(rsa.bearer(&with(claims("claude"), "aud", json!("someone-else")))),
            refused("invalid token: wrong audience"),
        ),
        (
            "unknown kid",
            Some(TestKey::rsa("ghost").bearer(&claims("claude"))),
            refused("invalid token: unknown kid \"ghost\""),
        ),
        (
            "no kid",
            Some(format!(
                "Bearer {}",
                rsa.sign(&json!({"alg": "RS256", "typ": "JWT"}), &claims("claude"))
            )),
            refused("invalid token: no kid in the token header"),
        ),
        (
            "bad signature (another key, same kid)",
            Some(impostor.bearer(&claims("claude"))),
            refused("invalid token: signature is invalid"),
        ),
        (
            "tampered payload",
            Some(tampered),
            refused("invalid token: signature is invalid"),
        ),
        (
            "HS256",
            Some(format!(
                "Bearer {}",
                rsa.sign(&json!({"alg": "HS256", "kid": "rsa-1"}), &claims("claude"))
            )),
            refused("invalid token: algorithm HS256 is not accepted (RS256 or ES256)"),
        ),
        (
            "ES256 header on an RSA key",
            Some(format!(
                "Bearer {}",
                ec.sign(&json!({"alg": "ES256", "kid": "rsa-1"}), &claims("claude"))
            )),
            refused("invalid token: key \"rsa-1\" is a RS256 key, not ES256"),
        ),
        (
            "missing claim",
            Some(rsa.bearer(&without(claims("claude"), "sub"))),
            refused("missing claim \"sub\""),
        ),
        (
            "non-string claim",
            Some(rsa.bearer(&with(claims("claude"), "sub", json!(42)))),
            refused("claim \"sub\" is not a string"),
        ),
        (
            "agent: under JWT",
            Some("Bearer agent:claude".to_owned()),
            refused(JWT_REQUIRED),
        ),
        (
            "a raw bearer",
            Some("Bearer support-bot".to_owned()),
            refused(JWT_REQUIRED),
        ),
        (
            "garbage with two dots",
            Some("Bearer a.b.c".to_owned()),
            refused("invalid token: malformed token"),
        ),
        ("anonymous", None, refused("authentication required")),
    ];
    for (name, authorization, expected) in rows {
        let (status, body) = echo(&d, authorization.as_deref());
        match expected {
            Ok(agent) => {
                assert_eq!(status, 200, "{name}: {body}");
                assert_eq!(body["result"]["stdout"], "hi\n", "{name}");
                assert_eq!(last_agent(&d), agent, "{name}");
            }
            Err(message) => {
                assert_eq!(status, 401, "{name}: {body}");
                assert_eq!(body, json!({ "error": message }), "{name}");
            }
        }
    }
    // `/decide` refuses the same way.
    let (status, body) = d.post(
        "/decide",
        Some(&rsa.bearer(&with(claims("claude"), "exp", json!(now() - 1)))),
        r#"{"tool": "echo.run"}"#,
    );
    assert_eq!(
        (status, body),
        (401, json!({"error": "invalid token: token is expired"}))
    );
}

#[test]
fn require_authentication_and_mcp_judge_the_same_credentials() {
    let rsa = TestKey::rsa("rsa-1");
    let server = JwksServer::start(jwks(&[&rsa]));
    let d = strict(&server.url);
    let good = rsa.bearer(&claims("claude"));
    let expired = rsa.bearer(&with(claims("claude"), "exp", json!(now() - 60)));

    assert_eq!(d.get("/tools", Some(&good)).0, 200);
    let (status, body) = d.get("/tools", Some(&expired));
    assert_eq!(
        (status, body),
        (401, json!({"error": "authentication required"}))
    );
    assert_eq!(d.get("/tools", None).0, 401);

    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"}}})
    .to_string();
    let mcp = |auth: &str| {
        d.post_with(
            "/mcp",
            &[
                ("Authorization", auth),
                ("Accept", "application/json, text/event-stream"),
            ],
            &initialize,
        )
    };
    let (status, body) = mcp(&expired);
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], -32600);
    assert_eq!(body["error"]["message"], "invalid token: token is expired");
    let (status, body) = mcp("Bearer agent:claude");
    assert_eq!(
        (status, &body["error"]["message"]),
        (401, &json!(JWT_REQUIRED))
    );
    let (status, body) = mcp(&good);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["serverInfo"]["name"], "flux7-mesh");
}

#[test]
fn operators_approve_grant_and_decide_for_others_agents_cannot() {
    let rsa = TestKey::rsa("rsa-1");
    let server = JwksServer::start(jwks(&[&rsa]));
    let d = strict(&server.url);
    let operator = rsa.bearer(&with(claims("alice"), "mesh_operator", json!(true)));
    let not_operator = rsa.bearer(&with(claims("bob"), "mesh_operator", json!(false)));
    let claude = rsa.bearer(&claims("claude"));
    let codex = rsa.bearer(&claims("codex"));
    let gate = json!({"error": "control plane requires admin authorization"});

    // The control plane: the admin token and an operator JWT, nobody else.
    for (who, auth, expected) in [
        ("admin token", ADMIN, 200),
        ("operator JWT", operator.as_str(), 200),
        ("operator claim false", not_operator.as_str(), 401),
        ("agent JWT", claude.as_str(), 401),
    ] {
        let (status, body) = d.get("/approvals", Some(auth));
        assert_eq!(status, expected, "{who}: {body}");
        if expected == 401 {
            assert_eq!(body, gate, "{who}");
        }
    }

    // `/decide` for another agent: an operator may, an agent may not.
    let body = r#"{"tool": "echo.run", "agent": "claude"}"#;
    let (status, answer) = d.post("/decide", Some(&operator), body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (&answer["agent"], &answer["action"]),
        (&json!("claude"), &json!("allow"))
    );
    let (status, answer) = d.post("/decide", Some(&codex), body);
    assert_eq!(status, 403, "{answer}");

    // An agent's pending call: another agent cannot approve it, the operator can.
    let (status, pending) = d.post_with(
        "/tool/ls.run",
        &[("Authorization", &claude), ("Prefer", "respond-async")],
        r#"{"params": {}}"#,
    );
    assert_eq!(status, 202, "{pending}");
    let id = pending["approval_id"].as_str().expect("an approval id");
    let approve = format!("/approvals/{id}/approve");
    let (status, answer) = d.post(&approve, Some(&codex), "");
    assert_eq!((status, answer), (401, gate.clone()));
    let (status, answer) = d.post(&approve, Some(&operator), r#"{"resolved_by": "alice"}"#);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "approved");
    // The approved call now runs for its agent.
    let (status, ran) = d.post("/tool/ls.run", Some(&claude), r#"{"params": {}}"#);
    assert_eq!(status, 200, "{ran}");

    // Grants: the operator, not an agent.
    let grant = r#"{"agent": "claude", "tools": "ls.run", "duration": "5m"}"#;
    assert_eq!(d.post("/grants", Some(&claude), grant).0, 401);
    let (status, created) = d.post("/grants", Some(&operator), grant);
    assert_eq!(status, 201, "{created}");
}

#[test]
fn mesh_admin_token_opens_the_control_plane_beside_jwt() {
    let rsa = TestKey::rsa("rsa-1");
    let server = JwksServer::start(jwks(&[&rsa]));
    let d = Daemon::start_with(
        &config(&server.url, "", "    operator_claim: role"),
        &[("MESH_ADMIN_TOKEN", "env-admin")],
        |_| {},
    );
    assert_eq!(d.get("/traces", Some("Bearer env-admin")).0, 200);
    assert_eq!(
        d.get("/traces", Some(&rsa.bearer(&claims("claude")))).0,
        401
    );
    let operator = rsa.bearer(&with(claims("ops"), "role", json!("operator")));
    assert_eq!(d.get("/traces", Some(&operator)).0, 200);
    // The admin token on the data plane is the operator, whatever the JWT rules.
    assert_eq!(echo(&d, Some("Bearer env-admin")).0, 200);
}

#[test]
fn allow_legacy_and_a_custom_agent_claim() {
    let rsa = TestKey::rsa("rsa-1");
    let server = JwksServer::start(jwks(&[&rsa]));
    let d = Daemon::start(&config(
        &server.url,
        "",
        "    allow_legacy: true\n    agent_claim: agent_id",
    ));
    let agent_of_last = |d: &Daemon| {
        let (_, traces) = d.get("/traces?limit=1", None);
        traces[0]["agent_id"].clone()
    };
    assert_eq!(echo(&d, Some("Bearer agent:claude")).0, 200);
    assert_eq!(agent_of_last(&d), "claude");
    // No issuer or audience configured: neither is checked.
    let token = rsa.bearer(&json!({"agent_id": "bot-7", "aud": "anyone", "exp": now() + 60}));
    assert_eq!(echo(&d, Some(&token)).0, 200);
    assert_eq!(agent_of_last(&d), "bot-7");
    let (status, body) = echo(&d, Some(&rsa.bearer(&claims("claude"))));
    assert_eq!(
        (status, body),
        (401, json!({"error": "missing claim \"agent_id\""}))
    );
    // Still only `agent:` is legacy: another raw bearer is refused.
    assert_eq!(echo(&d, Some("Bearer support-bot")).0, 401);
}

#[test]
fn a_rotated_key_is_fetched_at_once_and_unknown_kids_are_rate_limited() {
    let (old, new) = (TestKey::rsa("old"), TestKey::ec("new"));
    let server = JwksServer::start(jwks(&[&old]));
    let d = Daemon::start(&config(&server.url, "", ""));
    assert_eq!(server.fetches(), 1, "fetched once at start-up");

    // The identity provider rotates: the first token signed with the new key is accepted.
    server.set(200, jwks(&[&old, &new]));
    let (status, body) = echo(&d, Some(&new.bearer(&claims("claude"))));
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.fetches(), 2, "one refetch for the unknown kid");

    // Tokens with unknown kids cannot make mesh7 hammer the key server.
    for _ in 0..5 {
        let (status, body) = echo(&d, Some(&TestKey::ec("ghost").bearer(&claims("x"))));
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"], "invalid token: unknown kid \"ghost\"");
    }
    assert_eq!(server.fetches(), 2, "no refetch within the cooldown");
    assert_eq!(echo(&d, Some(&old.bearer(&claims("claude")))).0, 200);
}

#[test]
fn the_key_set_is_refreshed_in_the_background_and_replaced_whole() {
    let (first, second) = (TestKey::rsa("first"), TestKey::ec("second"));
    let server = JwksServer::start(jwks(&[&first]));
    let d = Daemon::start(&config(&server.url, "", "    refresh: 1s"));
    assert_eq!(echo(&d, Some(&first.bearer(&claims("claude")))).0, 200);

    // A failed refresh keeps the keys in force.
    server.set(500, "{}".to_owned());
    let seen = server.fetches();
    wait_for(Duration::from_secs(10), || {
        (server.fetches() >= seen + 2).then_some(())
    })
    .expect("the key set is fetched again every second");
    assert_eq!(echo(&d, Some(&first.bearer(&claims("claude")))).0, 200);

    // A successful one replaces the set: the removed key is refused, the added one accepted.
    server.set(200, jwks(&[&second]));
    let seen = server.fetches();
    wait_for(Duration::from_secs(10), || {
        (server.fetches() >= seen + 2).then_some(())
    })
    .expect("the new key set is fetched");
    assert_eq!(echo(&d, Some(&second.bearer(&claims("claude")))).0, 200);
    let (status, body) = echo(&d, Some(&first.bearer(&claims("claude"))));
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "invalid token: unknown kid \"first\"");
}

#[test]
fn start_up_fails_without_a_usable_key_set() {
    let server = JwksServer::start(String::new());
    let unreachable = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}/jwks.json", l.local_addr().expect("addr"))
    };
    let hmac_only = json!({"keys": [{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}]}).to_string();
    let cases = [
        (
            "status 404",
            Some((404, "{}".to_owned())),
            server.url.clone(),
            "answered 404",
        ),
        (
            "no usable key",
            Some((200, hmac_only)),
            server.url.clone(),
            "no usable key",
        ),
        (
            "not JSON",
            Some((200, "<html>".to_owned())),
            server.url.clone(),
            "invalid JWKS",
        ),
        ("unreachable", None, unreachable, ""),
    ];
    for (name, answer, url, detail) in cases {
        if let Some((status, body)) = answer {
            server.set(status, body);
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let path = write_config(dir.path(), &config(&url, "", ""));
        let (code, stderr) = serve_until_exit(&path);
        assert_ne!(code, 0, "{name}: {stderr}");
        assert!(
            stderr.contains("jwt auth: initial JWKS fetch: ") && stderr.contains(detail),
            "{name}: {stderr}"
        );
        assert!(!stderr.contains("listening"), "{name}: {stderr}");
    }
}
