//! Fail-closed paths of the pipeline that no client can provoke: the rate limiter stops
//! answering. The parts are wired as `app.rs` wires them, except the limiter, which runs on an
//! arbiter of its own that a test stops. The tool is the real `touch`: whether its file exists
//! says whether the call ran.

use std::path::Path;
use std::time::Duration;

use actix::Arbiter;
use mesh7_actors::approvals::{ApprovalSettings, Resolution};
use mesh7_actors::cli::CliCatalog;
use mesh7_actors::clock::Clock;
use mesh7_actors::rate_limit::LoopSettings;
use mesh7_actors::trace::{TraceQuery, TraceSettings};
use mesh7_config::PolicySet;
use serde_json::json;

use super::*;

const CONFIG: &str = r#"
cli_tools:
  - name: touch
    bin: touch
    bare: { timeout: 5s }
  - name: gated
    bin: touch
    bare: { timeout: 5s }
policies:
  - name: limits
    agent: "*"
    rules:
      - tools: ["touch.run"]
        action: allow
      - tools: ["gated.run"]
        action: human_approval
"#;

struct Wired {
    pipeline: Pipeline,
    /// Where the limiter's home actor runs; stopping it makes the limiter unavailable.
    limiter_home: Arbiter,
}

fn wire(dir: &Path) -> Wired {
    let loaded = mesh7_config::load_str(CONFIG, &dir.join("mesh7.yaml")).expect("config");
    let cfg = &loaded.config;
    let clock = Clock::System;
    let limiter_home = Arbiter::new();
    let (tx, rx) = std::sync::mpsc::channel();
    let limiter = cfg.rate_limiter.clone();
    assert!(limiter_home.spawn_fn(move || {
        let limiter = RateLimit::start(&limiter, LoopSettings::default(), Clock::System, 16);
        tx.send(limiter).expect("send the limiter");
    }));
    let rate_limit = rx.recv().expect("the limiter started");
    let policies = PolicySet::compile(&cfg.policies).expect("policies");
    let catalog = CliCatalog::from_config(&cfg.cli_tools).expect("cli_tools");
    let parts = Parts {
        auth: Authenticator::new(&cfg.auth, None),
        registry: Arc::new(Registry::new(catalog, Vec::new())),
        policy: Policy::start(loaded.config_path.clone(), policies, clock.clone()),
        rate_limit,
        cli: Cli::start(16),
        trace: Trace::start(
            TraceSettings {
                ring_size: 100,
                file: None,
                max_file_bytes: 0,
                mailbox: 16,
                hmac_key: None,
                redact: None,
            },
            clock.clone(),
        )
        .expect("trace"),
        approvals: Approvals::start(None, ApprovalSettings::default(), clock.clone())
            .expect("approvals"),
        grants: Grants::start(None, Duration::ZERO, clock.clone(), 16).expect("grants"),
        halts: Halts::start(None, clock.clone(), 16).expect("halts"),
        taint: Taint::start(None, 16, clock, 16).expect("taint"),
        routing: ApprovalRouting {
            block_mcp: false,
            channel: ApprovalChannel::Queue,
        },
        metrics: Arc::new(Metrics::default()),
        memory: None,
        telemetry: Telemetry::disabled(),
    };
    Wired {
        pipeline: Pipeline::new(parts),
        limiter_home,
    }
}

fn touch(tool: &str, file: &Path) -> ToolCall {
    ToolCall {
        tool: tool.to_owned(),
        args: json!({"args": [file]}),
    }
}

fn as_agent() -> RequestContext {
    RequestContext {
        authorization: Some("Bearer agent:claude".to_owned()),
        ..RequestContext::default()
    }
}

fn stop(arbiter: Arbiter) {
    arbiter.stop();
    arbiter.join().expect("the limiter's arbiter ends");
}

#[actix_rt::test]
async fn an_unavailable_limiter_stops_an_allowed_call_before_it_runs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let w = wire(dir.path());
    let first = dir.path().join("first");
    let governed = w
        .pipeline
        .handle(as_agent(), touch("touch.run", &first), Mode::Execute)
        .await
        .expect("a verdict while the limiter runs");
    assert!(matches!(governed.verdict, Verdict::Allowed { .. }));
    assert!(first.exists(), "the allowed call ran");

    stop(w.limiter_home);
    let second = dir.path().join("second");
    let err = w
        .pipeline
        .handle(as_agent(), touch("touch.run", &second), Mode::Execute)
        .await
        .expect_err("no verdict without the limiter");
    assert!(
        matches!(&err, PipelineError::Unavailable(m) if m.contains("rate limiter unavailable")),
        "{err:?}"
    );
    assert!(!second.exists(), "the call ran without its limit check");
}

/// The limiter goes away while the call waits for its human: the approval is used by the time
/// the call is counted, so the refusal is a traced verdict that names the approval, and the
/// tool does not run.
#[actix_rt::test]
async fn an_approved_call_is_not_run_when_the_limiter_cannot_count_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let w = wire(dir.path());
    let file = dir.path().join("gated");
    let pipeline = w.pipeline.clone();
    let call = touch("gated.run", &file);
    let waiting =
        tokio::spawn(async move { pipeline.handle(as_agent(), call, Mode::Execute).await });

    let approvals = w.pipeline.approvals();
    let pending = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let listed = approvals.list(Some(ApprovalStatus::Pending), None).await;
            if let Some(record) = listed.expect("list").into_iter().next() {
                return record;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the call is queued for approval");

    stop(w.limiter_home);
    let resolution = Resolution {
        approve: true,
        resolved_by: "operator".to_owned(),
        reasoning: String::new(),
        confidence: 0.0,
        resolver_agent: None,
    };
    approvals
        .resolve(&pending.id, resolution)
        .await
        .expect("approved");

    let governed = waiting
        .await
        .expect("the call's task")
        .expect("a verdict: the approval was used");
    let Verdict::Failed { error } = &governed.verdict else {
        panic!("{:?}", governed.verdict);
    };
    assert!(
        matches!(error, PipelineError::Unavailable(m) if m.contains("rate limiter unavailable")),
        "{error:?}"
    );
    let approval = governed
        .approval
        .as_ref()
        .expect("the approval it went through");
    assert_eq!(approval.id, pending.id);
    assert_eq!(approval.status, ApprovalStatus::Approved);
    assert!(!file.exists(), "the call ran without being counted");

    let traced = w
        .pipeline
        .trace()
        .query(TraceQuery {
            limit: 1,
            ..TraceQuery::default()
        })
        .await
        .expect("traces");
    assert_eq!(traced[0].approval_id, pending.id, "{traced:?}");
    assert!(
        traced[0].error.contains("rate limiter unavailable"),
        "{traced:?}"
    );
}
