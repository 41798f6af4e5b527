//! The loopback servers `scripts/bench` measures mesh7 against, on the same stack as mesh7
//! (actix-web, one worker per core), so neither is the bottleneck of a run:
//!
//! - `POST /echo`: the HTTP backend of the OpenAPI tool (scenarios 1, 4 and 5). It answers the
//!   request body as is, as JSON: the cheapest backend there is, so the direct baseline is as
//!   fast as the machine allows.
//! - `POST /decide`: the framework floor of scenario 2. A minimal JSON handler: it parses a
//!   `/decide` body and answers a decision of the same shape mesh7 answers, with no policy.
//! - `POST /proxy` (with `--proxy-to URL`): the thinnest proxy on mesh7's stack. It forwards
//!   the body as is to `URL` with reqwest (one pooled client per worker, as mesh7) and answers
//!   the upstream's body: no parsing, no policy, no trace. What it costs over direct is what any
//!   HTTP proxy costs on the machine, the floor under mesh7's own figures.
//!
//! - `relay CMD ARGS...`: the thinnest stdio relay, the floor under `mesh7 --mcp` (scenario 3).
//!   It starts `CMD` and copies bytes from its own stdin to the child's and from the child's
//!   stdout to its own, one thread each way: no parsing, no policy, no trace.
//!
//! `cargo bench` and `cargo test --all-targets` run this target without `serve` or `relay`: it
//! then checks the routes and the relay once and exits. `scripts/bench` runs the built binary
//! with `serve --listen 127.0.0.1:PORT` and stops it with SIGTERM, and `relay` as an MCP server.

use std::net::SocketAddr;

use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_TYPE, HeaderValue};
use actix_web::web::Bytes;
use actix_web::{App, HttpResponse, HttpServer, web};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// The body of `POST /decide` (flux7's shape).
#[derive(Deserialize)]
struct DecideBody {
    tool: String,
    #[serde(default)]
    agent: Option<String>,
    #[serde(default)]
    arguments: Option<Map<String, Value>>,
}

async fn echo(body: Bytes) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, HeaderValue::from_static("application/json")))
        .body(body)
}

thread_local! {
    /// One client per worker: a pooled connection is driven by the runtime that opened it.
    static CLIENT: reqwest::Client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("a plain-HTTP client always builds");
}

/// Where `/proxy` forwards to.
#[derive(Clone)]
struct Upstream(Option<String>);

async fn proxy(upstream: web::Data<Upstream>, body: Bytes) -> HttpResponse {
    let Some(url) = &upstream.0 else {
        return HttpResponse::build(StatusCode::NOT_FOUND).finish();
    };
    let sent = CLIENT
        .with(reqwest::Client::clone)
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await;
    let answered = match sent {
        Ok(resp) => resp.bytes().await,
        Err(e) => Err(e),
    };
    match answered {
        Ok(bytes) => HttpResponse::Ok()
            .insert_header((CONTENT_TYPE, HeaderValue::from_static("application/json")))
            .body(bytes),
        Err(_) => HttpResponse::build(StatusCode::BAD_GATEWAY).finish(),
    }
}

async fn decide(body: Bytes) -> HttpResponse {
    let Ok(req) = serde_json::from_slice::<DecideBody>(&body) else {
        return HttpResponse::build(StatusCode::BAD_REQUEST).finish();
    };
    let _arguments = req.arguments.unwrap_or_default();
    let mut text = serde_json::to_string(&json!({
        "action": "allow",
        "agent": req.agent.as_deref().unwrap_or("anonymous"),
        "reason": "floor",
        "rule": "floor",
        "tool": req.tool,
        "trace_id": "00000000000000000000000000000001",
    }))
    .unwrap_or_default();
    text.push('\n');
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, HeaderValue::from_static("application/json")))
        .body(text)
}

fn app(
    upstream: Upstream,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(web::Data::new(upstream))
        .route("/echo", web::post().to(echo))
        .route("/decide", web::post().to(decide))
        .route("/proxy", web::post().to(proxy))
}

/// Serves until SIGTERM / SIGINT (actix-web's own signal handling).
async fn serve(listen: SocketAddr, upstream: Upstream) -> std::io::Result<()> {
    let server = HttpServer::new(move || app(upstream.clone()))
        .backlog(4096)
        .bind(listen)?;
    for addr in server.addrs() {
        announce(addr);
    }
    server.run().await
}

#[allow(clippy::print_stderr)]
fn announce(addr: SocketAddr) {
    eprintln!("backend listening on http://{addr}");
}

/// `relay CMD ARGS...`: copies stdin to the child and the child's stdout to stdout until either
/// side closes. Blocking threads on purpose: one wake-up per chunk each way is the least a
/// relay can cost, which is what this baseline is for.
#[allow(clippy::disallowed_types)] // the blocking process API is the point here
fn relay(command: &[String]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let (program, args) = command
        .split_first()
        .ok_or_else(|| std::io::Error::other("relay: no command"))?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut to_child = child
        .stdin
        .take()
        .ok_or_else(|| std::io::Error::other("stdin"))?;
    let mut from_child = child
        .stdout
        .take()
        .ok_or_else(|| std::io::Error::other("stdout"))?;
    let out = std::thread::spawn(move || -> std::io::Result<u64> {
        let mut stdout = std::io::stdout().lock();
        let mut buf = [0u8; 64 * 1024];
        let mut total = 0;
        loop {
            let n = std::io::Read::read(&mut from_child, &mut buf)?;
            if n == 0 {
                return Ok(total);
            }
            stdout.write_all(&buf[..n])?;
            stdout.flush()?;
            total += n as u64;
        }
    });
    std::io::copy(&mut std::io::stdin().lock(), &mut to_child)?;
    drop(to_child);
    out.join()
        .map_err(|_| std::io::Error::other("relay: output thread panicked"))??;
    child.wait().map(drop)
}

/// The relay carries a line to `cat` and its echo back.
async fn relay_check() -> Result<(), String> {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = tokio::process::Command::new(exe)
        .args(["relay", "cat"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("relay: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("relay: stdin")?;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().ok_or("relay: stdout")?).lines();
    let line = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    stdin
        .write_all(format!("{line}\n").as_bytes())
        .await
        .map_err(|e| format!("relay: {e}"))?;
    let echoed = tokio::time::timeout(std::time::Duration::from_secs(10), lines.next_line())
        .await
        .map_err(|_| "relay: no answer in 10 s".to_owned())?
        .map_err(|e| format!("relay: {e}"))?;
    if echoed.as_deref() != Some(line) {
        return Err(format!("relay: got {echoed:?}"));
    }
    drop(stdin);
    let status = child.wait().await.map_err(|e| format!("relay: {e}"))?;
    if !status.success() {
        return Err(format!("relay: exited with {status}"));
    }
    Ok(())
}

/// Without `serve` or `relay`: both routes answer as documented and the relay carries a line
/// both ways (what `cargo test` checks).
async fn self_check() -> Result<(), String> {
    relay_check().await?;
    let srv = actix_web::test::init_service(app(Upstream(None))).await;
    let body = r#"{"tool":"bench.echo","agent":"bench","arguments":{"n":1}}"#;
    let echoed: Value = serde_json::from_str(body).map_err(|e| e.to_string())?;
    for (path, expected) in [
        ("/echo", echoed),
        (
            "/decide",
            json!({"action": "allow", "agent": "bench", "reason": "floor", "rule": "floor",
                   "tool": "bench.echo", "trace_id": "00000000000000000000000000000001"}),
        ),
    ] {
        let req = actix_web::test::TestRequest::post()
            .uri(path)
            .set_payload(body)
            .to_request();
        let resp = actix_web::test::call_service(&srv, req).await;
        if resp.status() != StatusCode::OK {
            return Err(format!("{path}: status {}", resp.status()));
        }
        let got: Value = serde_json::from_slice(&actix_web::test::read_body(resp).await)
            .map_err(|e| format!("{path}: {e}"))?;
        if got != expected {
            return Err(format!("{path}: got {got}, expected {expected}"));
        }
    }
    Ok(())
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("relay") {
        return relay(&args[1..]);
    }
    let rt = actix_web::rt::System::new();
    match args.iter().position(|a| a == "serve") {
        Some(_) => {
            let option = |name: &str| {
                args.iter()
                    .position(|a| a == name)
                    .and_then(|i| args.get(i + 1))
            };
            let listen = option("--listen")
                .map_or(Ok(SocketAddr::from(([127, 0, 0, 1], 0))), |s| s.parse())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            rt.block_on(serve(listen, Upstream(option("--proxy-to").cloned())))
        }
        None => rt
            .block_on(self_check())
            .map_err(|e| std::io::Error::other(format!("backend self-check: {e}"))),
    }
}
