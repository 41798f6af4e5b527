//! Wiring: start every actor, build the `Pipeline`, serve the HTTP API, shut down cleanly.
//!
//! One constructor (`App::build`) is shared by the binary and the tests. All actors are started
//! here, outside the `HttpServer::new` closure, so every worker shares the same ones.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use actix_web::{App as HttpApp, HttpServer, web};
use anyhow::{Context as _, bail};
use mesh7_actors::approvals::{self, ApprovalSettings, Approvals, ResolutionHook};
use mesh7_actors::cli::{Cli, CliCatalog};
use mesh7_actors::clock::Clock;
use mesh7_actors::grants::{self, Grants};
use mesh7_actors::halts::Halts;
use mesh7_actors::memory::{self, DecisionFact, Memory, MemorySettings, WriteEvent};
use mesh7_actors::notify::Notifier;
use mesh7_actors::pins::{Announce, Pins};
use mesh7_actors::policy::{Policy, WatchGuard};
use mesh7_actors::rate_limit::{LoopSettings, RateLimit};
use mesh7_actors::store::Store;
use mesh7_actors::taint::Taint;
use mesh7_actors::trace::{Trace, TraceSettings};
use mesh7_actors::upstream::Upstream;
use mesh7_config::{LoadedConfig, PolicySet, duration};

use crate::api::{self, ApiState, BodyLimits};
use crate::identity::Authenticator;
use crate::mcp::{Dispatcher, McpHttp, McpHttpSettings, StdioOptions};
use crate::metrics::Metrics;
use crate::pipeline::{ApprovalRouting, Parts, Pipeline};
use crate::registry::{Listing, Registry};
use crate::telemetry::Telemetry;

/// Where to listen, from the command line.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    pub config_path: PathBuf,
    /// `--port N` (N > 0) overrides the configured port.
    pub port: Option<u16>,
    /// `--listen ADDR:PORT` overrides both (port 0 picks a free port).
    pub listen: Option<SocketAddr>,
}

/// A running set of actors and the pipeline over them.
pub struct App {
    pub pipeline: Pipeline,
    pub state: ApiState,
    pub listen: SocketAddr,
    pub client_timeout: std::time::Duration,
    _watch: Option<WatchGuard>,
}

impl App {
    /// Starts every actor for a loaded configuration and imports the OpenAPI specs. Must run
    /// inside an actix `System`.
    pub async fn build(loaded: &LoadedConfig, opts: &ServeOptions) -> anyhow::Result<App> {
        let cfg = &loaded.config;
        refuse_unavailable_features(cfg)?;

        let clock = Clock::System;
        let mailbox = cfg.server.mailbox_capacity;
        let policies = PolicySet::compile(&cfg.policies)
            .map_err(|errors| {
                anyhow::anyhow!(
                    "{}",
                    errors
                        .iter()
                        .map(|e| format!("policies[{}].{}: {}", e.policy_index, e.path, e.message))
                        .collect::<Vec<_>>()
                        .join("\n")
                )
            })?
            .with_taint(&cfg.taint);
        let policy = Policy::start(loaded.config_path.clone(), policies, clock.clone());
        let watch = match policy.watch(&loaded.config_path, loaded.policy_dir.as_deref()) {
            Ok(guard) => Some(guard),
            Err(e) => {
                tracing::warn!(error = %e, "policy hot reload disabled");
                None
            }
        };

        let window = duration::parse(&cfg.loop_detection.window)
            .map_err(|e| anyhow::anyhow!("loop_detection.window: {e}"))?;
        let rate_limit = RateLimit::start(
            &cfg.rate_limiter,
            LoopSettings {
                enabled: cfg.loop_detection.enabled,
                max_repeats: cfg.loop_detection.max_repeats,
                window,
                halt_after: cfg.loop_detection.halt_after,
            },
            clock.clone(),
            mailbox,
        );
        let redact = redactor(&cfg.trace)?;
        let trace = Trace::start(
            TraceSettings {
                ring_size: cfg.trace.ring_size,
                file: cfg.trace_file.as_ref().map(PathBuf::from),
                max_file_bytes: cfg.trace.max_file_bytes,
                mailbox,
                hmac_key: cfg.trace.hmac_key.clone(),
                redact: redact.clone(),
            },
            clock.clone(),
        )
        .context("trace_file")?;
        let catalog = CliCatalog::from_config(&cfg.cli_tools)
            .map_err(|e| anyhow::anyhow!("cli_tools: {e}"))?;
        let store = match &cfg.storage_path {
            Some(path) => Some(
                Store::open(std::path::Path::new(path))
                    .with_context(|| format!("storage_path {path}"))?,
            ),
            None => None,
        };
        // Any spec that cannot be imported stops the start-up (flux7); the store keeps the
        // last good copy of URL specs.
        let openapi_ctx = crate::openapi::context_for(&loaded.config_path, store.clone());
        let openapi = crate::openapi::load(&cfg.openapi, &openapi_ctx).await?;
        // Before the upstreams, which report every tool list they receive to it.
        let announce = cfg
            .approval
            .tools_changed_url
            .clone()
            .filter(|url| !url.is_empty())
            .map(|url| Announce {
                notifier: Notifier::start(cfg.approval.allow_private_targets),
                url,
            });
        let pins = Pins::start_announcing(
            cfg.mcp_servers
                .iter()
                .filter(|server| server.pin_tools)
                .map(|server| server.name.clone())
                .collect(),
            store.clone(),
            clock.clone(),
            mailbox,
            announce,
        )
        .map_err(|e| anyhow::anyhow!("pins: {e}"))?;
        let upstreams = cfg
            .mcp_servers
            .iter()
            .map(|server| {
                let observer = server.pin_tools.then(|| pins.observer());
                Upstream::start_observed(server, observer)
                    .map_err(|e| anyhow::anyhow!("mcp_servers ({}): {e}", server.name))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let registry = Arc::new(
            Registry::new(catalog, upstreams)
                .with_pins(pins)
                .with_listing(Listing::new(cfg.server.hide_denied_tools))
                .with_openapi(openapi)
                .map_err(|e| anyhow::anyhow!("openapi: {e}"))?,
        );
        let cli = Cli::start(mailbox);

        let auth = Authenticator::new(&cfg.auth, std::env::var("MESH_ADMIN_TOKEN").ok())
            .with_supervisor_agents(&cfg.supervisor.supervisor_agents);
        let auth = match &cfg.auth.jwt {
            Some(jwt) => auth.with_jwt(jwt).await?,
            None => auth,
        };
        let metrics = Arc::new(Metrics::default());
        let memory = start_memory(cfg, &metrics)?;
        let approvals = Approvals::start_observed(
            store.clone(),
            ApprovalSettings {
                timeout: approval_timeout(cfg.approval.timeout_seconds),
                retention: cfg
                    .approval
                    .retention
                    .unwrap_or(approvals::DEFAULT_RETENTION),
                notify_url: cfg.approval.notify_url.clone(),
                allow_private_targets: cfg.approval.allow_private_targets,
                mailbox,
                redact: redact.clone(),
            },
            clock.clone(),
            // Every decision is written back to mem7; `/decide` decides nothing that is kept.
            memory.clone().map(|memory| {
                ResolutionHook::new(move |record| {
                    if let Some(fact) = DecisionFact::of_resolution(record) {
                        memory.remember(fact);
                    }
                })
            }),
        )
        .map_err(|e| anyhow::anyhow!("approvals: {e}"))?;
        let max_grant = match &cfg.supervisor.max_grant_duration {
            Some(d) => duration::parse(d)
                .map_err(|e| anyhow::anyhow!("supervisor.max_grant_duration: {e}"))?,
            None => grants::DEFAULT_MAX_DURATION,
        };
        let grants = Grants::start(store.clone(), max_grant, clock.clone(), mailbox)
            .map_err(|e| anyhow::anyhow!("grants: {e}"))?
            .with_approvals(approvals.clone());
        let halts = Halts::start(store.clone(), clock.clone(), mailbox)
            .map_err(|e| anyhow::anyhow!("halts: {e}"))?;
        let taint = Taint::start(store, cfg.taint.max_sessions, clock.clone(), mailbox)
            .map_err(|e| anyhow::anyhow!("taint: {e}"))?;
        let telemetry = match cfg.otel_endpoint.as_deref().map(str::trim) {
            Some(endpoint) if !endpoint.is_empty() => {
                Telemetry::start(endpoint, metrics.clone(), redact.clone())
                    .await
                    .with_context(|| format!("otel_endpoint {endpoint}"))?
            }
            _ => Telemetry::disabled(),
        };
        let pipeline = Pipeline::new(Parts {
            auth,
            registry,
            policy,
            rate_limit,
            cli,
            trace,
            approvals,
            grants,
            halts,
            taint,
            routing: ApprovalRouting {
                block_mcp: cfg.supervisor.enabled,
                channel: cfg.approval.channel,
            },
            metrics,
            telemetry,
            memory: memory.filter(|_| cfg.supervisor.auto_approve),
        });
        let client_timeout = duration::parse(&cfg.server.client_timeout)
            .map_err(|e| anyhow::anyhow!("server.client_timeout: {e}"))?;
        let state = ApiState {
            pipeline: pipeline.clone(),
            limits: BodyLimits {
                max_bytes: cfg.server.max_body_bytes,
                timeout: client_timeout,
            },
            version: &crate::VERSION,
            expose_content: cfg.supervisor.expose_content,
            secrets: redact.clone(),
            mcp: McpHttp::new(&McpHttpSettings {
                allowed_hosts: cfg.server.allowed_hosts.clone(),
                allowed_origins: cfg.server.allowed_origins.clone(),
                session_idle: duration::parse(&cfg.server.mcp_session_idle)
                    .map_err(|e| anyhow::anyhow!("server.mcp_session_idle: {e}"))?,
                max_sessions: cfg.server.max_mcp_sessions,
            }),
        };
        Ok(App {
            pipeline,
            state,
            listen: listen_addr(cfg, opts)?,
            client_timeout,
            _watch: watch,
        })
    }

    /// Serves HTTP until SIGINT/SIGTERM, then stops accepting, lets in-flight requests finish,
    /// and flushes every trace written so far before returning.
    pub async fn serve(self) -> anyhow::Result<()> {
        let mut http = self
            .start_http()
            .with_context(|| format!("cannot listen on {}", self.listen))?;
        tokio::select! {
            result = &mut http.task => result.context("http server task")?.context("http server")?,
            signal = shutdown_signal() => {
                tracing::info!(signal, "shutting down: draining requests");
                self.state.mcp.close_streams();
                http.handle.stop(true).await;
                http.task.await.context("http server task")?.context("http server")?;
            }
        }
        self.shut_down().await
    }

    /// `mesh7 --mcp`: serves MCP on stdin/stdout until stdin closes (or SIGTERM/SIGINT), with
    /// the HTTP API alongside so approvals can be resolved. A taken port is logged and MCP
    /// keeps working without the HTTP API.
    pub async fn serve_mcp(self, opts: StdioOptions) -> anyhow::Result<()> {
        let http = match self.start_http() {
            Ok(http) => Some(http),
            Err(e) => {
                tracing::warn!(listen = %self.listen, error = %e,
                    "HTTP API not started (port taken?): serving MCP on stdio only");
                None
            }
        };
        let (input, output) = crate::mcp::stdio::streams();
        let mut stdio = tokio::spawn(crate::mcp::stdio::serve(
            Dispatcher::new(self.pipeline.clone()),
            opts,
            input,
            output,
        ));
        let served = tokio::select! {
            served = &mut stdio => served.context("MCP stdio task")?.context("MCP stdio"),
            signal = shutdown_signal() => {
                tracing::info!(signal, "shutting down");
                stdio.abort();
                Ok(())
            }
        };
        if let Some(http) = http {
            self.state.mcp.close_streams();
            http.handle.stop(true).await;
            if let Err(e) = http.task.await {
                tracing::error!(error = %e, "http server task");
            }
        }
        self.shut_down().await?;
        served
    }

    /// Binds the HTTP API and runs it on its own task.
    fn start_http(&self) -> std::io::Result<RunningHttp> {
        let state = self.state.clone();
        let server = HttpServer::new(move || {
            HttpApp::new()
                .app_data(web::Data::new(state.clone()))
                .configure(api::configure)
        })
        .client_request_timeout(self.client_timeout)
        .client_disconnect_timeout(std::time::Duration::from_secs(5))
        // A client that goes away drops its request, so a call blocked on an approval never runs
        // for nobody (the approval then waits for the identical retry).
        .h1_allow_half_closed(false)
        .shutdown_timeout(10)
        // Signals are handled by the callers: actix's own handler would stop the whole actor
        // system, racing the trace writer's final flush.
        .disable_signals()
        .bind(self.listen)?;
        for addr in server.addrs() {
            announce(addr);
        }
        let server = server.run();
        let handle = server.handle();
        // The server future must keep being polled while `stop` waits for it to finish.
        Ok(RunningHttp {
            handle,
            task: actix_web::rt::spawn(server),
        })
    }

    /// Once no request is left: stops the upstream connections and the durable queues, then
    /// drains the span export and flushes every trace written so far.
    async fn shut_down(&self) -> anyhow::Result<()> {
        for upstream in self.pipeline.registry().upstreams() {
            upstream.shutdown().await;
        }
        self.pipeline.approvals().shutdown().await;
        self.pipeline.grants().shutdown().await;
        tracing::info!("flushing traces");
        self.pipeline.telemetry().shutdown(TELEMETRY_DRAIN).await;
        self.pipeline
            .trace()
            .flush()
            .await
            .context("flushing traces")
    }
}

/// The HTTP API while it runs.
struct RunningHttp {
    handle: actix_web::dev::ServerHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// How long shutdown waits for queued spans to reach `otel_endpoint`.
const TELEMETRY_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Resolves with the name of the first SIGTERM or SIGINT.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the process can only be killed; never return early.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// The line tests and operators wait for. On stderr: stdout belongs to MCP in `--mcp` mode.
#[allow(clippy::print_stderr)]
fn announce(addr: SocketAddr) {
    eprintln!("mesh7 listening on http://{addr}");
}

/// The HTTP listen address: `--listen`, else `server.bind` with `--port` / `port` / 9090.
pub fn listen_addr(cfg: &mesh7_config::Config, opts: &ServeOptions) -> anyhow::Result<SocketAddr> {
    if let Some(addr) = opts.listen {
        return Ok(addr);
    }
    let ip: IpAddr = cfg
        .server
        .bind
        .parse()
        .with_context(|| format!("server.bind: invalid address \"{}\"", cfg.server.bind))?;
    let port = opts
        .port
        .filter(|p| *p > 0)
        .or(cfg.port.filter(|p| *p > 0))
        .unwrap_or(9090);
    Ok(SocketAddr::new(ip, port))
}

/// Settings whose absence of support would silently weaken governance stop the start-up.
fn refuse_unavailable_features(cfg: &mesh7_config::Config) -> anyhow::Result<()> {
    if cfg
        .tls
        .as_ref()
        .is_some_and(|t| !t.cert_file.is_empty() || !t.key_file.is_empty())
    {
        bail!(
            "tls: in-process TLS is not available in this version; terminate TLS in front of mesh7"
        );
    }
    Ok(())
}

/// The mem7 client when `memory.url` is set; its writes are counted in `/metrics`.
fn start_memory(
    cfg: &mesh7_config::Config,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Option<Memory>> {
    let Some(mem) = cfg.memory.as_ref().filter(|m| !m.url.trim().is_empty()) else {
        return Ok(None);
    };
    let timeout = match &mem.timeout {
        Some(t) => duration::parse(t).map_err(|e| anyhow::anyhow!("memory.timeout: {e}"))?,
        None => memory::DEFAULT_TIMEOUT,
    };
    let settings = MemorySettings {
        url: mem.url.trim().to_owned(),
        token: mem.token.clone(),
        timeout,
        // flux7: 0 or less means 3.
        min_approvals: usize::try_from(cfg.supervisor.min_approvals)
            .ok()
            .filter(|n| *n > 0)
            .unwrap_or(memory::DEFAULT_MIN_APPROVALS),
        mailbox: cfg.server.mailbox_capacity,
    };
    let counters = metrics.clone();
    let observer = Arc::new(move |event: WriteEvent| {
        let counter = match event {
            WriteEvent::Attempted => &counters.mem7_writes_attempted,
            WriteEvent::Succeeded => &counters.mem7_writes_succeeded,
            WriteEvent::Failed => &counters.mem7_writes_failed,
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    });
    Memory::start(settings, observer)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("memory: {e}"))
}

/// `approval.timeout_seconds`: 0 or negative means flux7's 300 s.
/// `trace.redact` compiled with its digest key; `None` when nothing is redacted. Validation
/// already named any pattern that does not compile.
fn redactor(
    cfg: &mesh7_config::TraceConfig,
) -> anyhow::Result<Option<Arc<mesh7_actors::trace::Redactor>>> {
    let rules = mesh7_config::redact::RedactRules::compile(&cfg.redact).map_err(|errors| {
        let text: Vec<String> = errors
            .iter()
            .map(|(list, i, why)| format!("trace.redact.{list}[{i}]: {why}"))
            .collect();
        anyhow::anyhow!(text.join("; "))
    })?;
    Ok(mesh7_actors::trace::Redactor::new(rules, cfg.hmac_key.as_deref()).map(Arc::new))
}

fn approval_timeout(seconds: i64) -> std::time::Duration {
    u64::try_from(seconds)
        .ok()
        .filter(|s| *s > 0)
        .map_or(approvals::DEFAULT_TIMEOUT, std::time::Duration::from_secs)
}
