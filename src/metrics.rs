//! Process metrics for `GET /metrics` (Prometheus text exposition format 0.0.4).
//!
//! Plain atomics in fixed arrays: counting never waits on anything and never allocates, so the
//! request path pays a few relaxed increments. Values that other subsystems own (pending
//! approvals, active grants, upstream status, reload counts, trace write errors) are read at
//! scrape time and handed to [`Metrics::render`] as a [`Scrape`].

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::pipeline::{Ingress, Verdict};
use crate::telemetry::Step;

const INGRESSES: [Ingress; 4] = [
    Ingress::Http,
    Ingress::Decide,
    Ingress::McpStdio,
    Ingress::McpHttp,
];
const DECISIONS: [&str; 5] = ["allow", "deny", "human_approval", "rate_limited", "error"];

/// Where a governed call was (or would have been) forwarded: the `source` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Mcp,
    Cli,
    OpenApi,
    /// Not resolved to a tool (`/decide` on a name no source has).
    None,
}

impl Source {
    const ALL: [Source; 4] = [Source::Mcp, Source::Cli, Source::OpenApi, Source::None];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Mcp => "mcp",
            Source::Cli => "cli",
            Source::OpenApi => "openapi",
            Source::None => "none",
        }
    }

    fn index(self) -> usize {
        match self {
            Source::Mcp => 0,
            Source::Cli => 1,
            Source::OpenApi => 2,
            Source::None => 3,
        }
    }
}

/// Upper bounds (seconds) of the step-duration buckets: sub-millisecond policy steps up to
/// approvals that wait for a human for minutes.
const BUCKETS: [(f64, &str); 17] = [
    (0.0005, "0.0005"),
    (0.001, "0.001"),
    (0.0025, "0.0025"),
    (0.005, "0.005"),
    (0.01, "0.01"),
    (0.025, "0.025"),
    (0.05, "0.05"),
    (0.1, "0.1"),
    (0.25, "0.25"),
    (0.5, "0.5"),
    (1.0, "1"),
    (2.5, "2.5"),
    (5.0, "5"),
    (10.0, "10"),
    (30.0, "30"),
    (60.0, "60"),
    (300.0, "300"),
];

/// A fixed-bucket histogram; `counts[i]` holds observations in bucket `i` only (the last slot
/// is `+Inf`), made cumulative when rendered.
#[derive(Debug, Default)]
struct Histogram {
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let slot = BUCKETS
            .iter()
            .position(|(bound, _)| secs <= *bound)
            .unwrap_or(BUCKETS.len());
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    /// calls[ingress][decision]
    calls: [[AtomicU64; 5]; 4],
    /// by_source[source][decision]
    by_source: [[AtomicU64; 5]; 4],
    steps: [Histogram; Step::ALL.len()],
    loop_hits: AtomicU64,
    loop_halts: AtomicU64,
    rate_limit_hits: AtomicU64,
    trace_records_lost: AtomicU64,
    advisory_disagreements: AtomicU64,
    otel_spans_exported: AtomicU64,
    otel_spans_dropped: AtomicU64,
    pub mem7_writes_attempted: AtomicU64,
    pub mem7_writes_succeeded: AtomicU64,
    pub mem7_writes_failed: AtomicU64,
}

/// What is read from the other subsystems when `/metrics` is scraped.
#[derive(Debug, Default)]
pub struct Scrape {
    pub tools: u64,
    pub policy_rules: u64,
    /// 1 when the last policy reload succeeded (or none happened).
    pub policy_last_reload_ok: u64,
    pub policy_reloads_ok: u64,
    pub policy_reloads_failed: u64,
    pub pending_approvals: u64,
    pub active_grants: u64,
    /// (server name, ready)
    pub upstreams: Vec<(String, bool)>,
    /// (server name, tools refused until accepted) of each `pin_tools` server.
    pub unaccepted: Vec<(String, u64)>,
    pub trace_write_errors: u64,
    /// Sessions labelled by `taint.sources` now.
    pub tainted_sessions: u64,
    /// Labelled sessions forgotten past `taint.max_sessions` since start-up.
    pub taint_sessions_forgotten: u64,
}

impl Metrics {
    /// Counts a governed call under its ingress and decision (flux7's `mesh7_calls_total`).
    pub fn count(&self, ingress: Ingress, verdict: &Verdict) {
        let decision = self.decision(verdict);
        self.calls[ingress_index(ingress)][decision].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a governed call under its ingress, tool source and decision.
    pub fn count_call(&self, ingress: Ingress, source: Source, verdict: &Verdict) {
        let decision = self.decision(verdict);
        self.calls[ingress_index(ingress)][decision].fetch_add(1, Ordering::Relaxed);
        self.by_source[source.index()][decision].fetch_add(1, Ordering::Relaxed);
    }

    /// How long one pipeline step took.
    pub fn observe_step(&self, step: Step, took: Duration) {
        self.steps[step.index()].observe(took);
    }

    /// A call the advisory policies would have decided otherwise.
    pub fn advisory_disagreement(&self) {
        self.advisory_disagreements.fetch_add(1, Ordering::Relaxed);
    }

    /// A halt made by loop detection (`loop_detection.halt_after`).
    pub fn loop_halt(&self) {
        self.loop_halts.fetch_add(1, Ordering::Relaxed);
    }

    /// A trace entry the trace writer never took (it was gone).
    pub fn trace_record_lost(&self) {
        self.trace_records_lost.fetch_add(1, Ordering::Relaxed);
    }

    pub fn otel_spans_exported(&self, n: u64) {
        self.otel_spans_exported.fetch_add(n, Ordering::Relaxed);
    }

    /// Spans lost to a full export queue or a failed export.
    pub fn otel_spans_dropped(&self, n: u64) {
        self.otel_spans_dropped.fetch_add(n, Ordering::Relaxed);
    }

    pub fn otel_dropped_total(&self) -> u64 {
        self.otel_spans_dropped.load(Ordering::Relaxed)
    }

    /// The decision index of a verdict; rate-limit and loop hits are counted on the way.
    fn decision(&self, verdict: &Verdict) -> usize {
        match verdict {
            Verdict::Allowed { .. } => 0,
            Verdict::Denied => 1,
            Verdict::ApprovalRequired
            | Verdict::ApprovalPending
            | Verdict::ApprovalDenied
            | Verdict::ApprovalTimedOut
            | Verdict::ApprovalUnavailable { .. } => 2,
            Verdict::RateLimited { is_loop, .. } => {
                let hits = if *is_loop {
                    &self.loop_hits
                } else {
                    &self.rate_limit_hits
                };
                hits.fetch_add(1, Ordering::Relaxed);
                3
            }
            Verdict::Failed { .. } => 4,
        }
    }

    /// Renders the exposition text.
    pub fn render(&self, scrape: &Scrape) -> String {
        let mut out = String::with_capacity(8 * 1024);
        header(
            &mut out,
            "mesh7_calls_total",
            "Governed tool calls by ingress and decision.",
            "counter",
        );
        for (i, ingress) in INGRESSES.iter().enumerate() {
            for (d, decision) in DECISIONS.iter().enumerate() {
                let n = self.calls[i][d].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "mesh7_calls_total{{ingress=\"{}\",decision=\"{decision}\"}} {n}",
                    ingress.as_str()
                );
            }
        }
        header(
            &mut out,
            "mesh7_calls_by_source_total",
            "Governed tool calls by tool source (mcp, cli, openapi; none when unresolved) and decision.",
            "counter",
        );
        for source in Source::ALL {
            for (d, decision) in DECISIONS.iter().enumerate() {
                let n = self.by_source[source.index()][d].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "mesh7_calls_by_source_total{{source=\"{}\",decision=\"{decision}\"}} {n}",
                    source.as_str()
                );
            }
        }
        self.render_steps(&mut out);
        let counters = [
            (
                "mesh7_rate_limit_hits_total",
                "Calls refused by a rate limit.",
                self.rate_limit_hits.load(Ordering::Relaxed),
            ),
            (
                "mesh7_loop_hits_total",
                "Calls refused by loop detection.",
                self.loop_hits.load(Ordering::Relaxed),
            ),
            (
                "mesh7_loop_halts_total",
                "Sessions (or agents) halted by loop detection (loop_detection.halt_after).",
                self.loop_halts.load(Ordering::Relaxed),
            ),
            (
                "mesh7_policy_reloads_total",
                "Policy reloads that succeeded.",
                scrape.policy_reloads_ok,
            ),
            (
                "mesh7_policy_reload_failures_total",
                "Policy reloads that failed (the previous policies stayed).",
                scrape.policy_reloads_failed,
            ),
            (
                "mesh7_trace_write_errors_total",
                "Trace file writes that failed (the in-memory ring still has the entries).",
                scrape.trace_write_errors,
            ),
            (
                "mesh7_trace_records_lost_total",
                "Trace entries the trace writer could not take.",
                self.trace_records_lost.load(Ordering::Relaxed),
            ),
            (
                "mesh7_taint_sessions_forgotten_total",
                "Labelled sessions forgotten (least recently used) past taint.max_sessions; their next calls start clean.",
                scrape.taint_sessions_forgotten,
            ),
            (
                "mesh7_advisory_disagreements_total",
                "Calls the advisory policies would have decided otherwise (see their traces).",
                self.advisory_disagreements.load(Ordering::Relaxed),
            ),
            (
                "mesh7_otel_spans_exported_total",
                "Spans handed to the OpenTelemetry endpoint.",
                self.otel_spans_exported.load(Ordering::Relaxed),
            ),
            (
                "mesh7_otel_spans_dropped_total",
                "Spans dropped: export queue full, or the endpoint failed or timed out.",
                self.otel_spans_dropped.load(Ordering::Relaxed),
            ),
            (
                "agent_mesh_mem7_writes_attempted_total",
                "mem7 decision writes attempted.",
                self.mem7_writes_attempted.load(Ordering::Relaxed),
            ),
            (
                "agent_mesh_mem7_writes_succeeded_total",
                "mem7 decision writes that succeeded.",
                self.mem7_writes_succeeded.load(Ordering::Relaxed),
            ),
            (
                "agent_mesh_mem7_writes_failed_total",
                "mem7 decision writes that failed.",
                self.mem7_writes_failed.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, value) in counters {
            header(&mut out, name, help, "counter");
            let _ = writeln!(out, "{name} {value}");
        }
        let gauges = [
            ("mesh7_tools", "Tools in the registry.", scrape.tools),
            (
                "mesh7_policy_rules",
                "Rules in the active policy set.",
                scrape.policy_rules,
            ),
            (
                "mesh7_policy_last_reload_ok",
                "1 when the last policy reload succeeded (or none happened).",
                scrape.policy_last_reload_ok,
            ),
            (
                "mesh7_approvals_pending",
                "Approvals waiting for a decision.",
                scrape.pending_approvals,
            ),
            (
                "mesh7_grants_active",
                "Temporal grants not yet expired or revoked.",
                scrape.active_grants,
            ),
            (
                "mesh7_tainted_sessions",
                "Sessions labelled by taint sources (at most taint.max_sessions).",
                scrape.tainted_sessions,
            ),
        ];
        for (name, help, value) in gauges {
            header(&mut out, name, help, "gauge");
            let _ = writeln!(out, "{name} {value}");
        }
        if !scrape.upstreams.is_empty() {
            header(
                &mut out,
                "mesh7_upstream_up",
                "1 when the upstream MCP server is connected and ready.",
                "gauge",
            );
            for (server, up) in &scrape.upstreams {
                let _ = writeln!(
                    out,
                    "mesh7_upstream_up{{server=\"{}\"}} {}",
                    escape_label(server),
                    u8::from(*up)
                );
            }
        }
        if !scrape.unaccepted.is_empty() {
            header(
                &mut out,
                "mesh7_tools_unaccepted",
                "Tools of a pin_tools server refused until an operator accepts them (changed since pinned, or new).",
                "gauge",
            );
            for (server, count) in &scrape.unaccepted {
                let _ = writeln!(
                    out,
                    "mesh7_tools_unaccepted{{server=\"{}\"}} {count}",
                    escape_label(server)
                );
            }
        }
        out
    }

    fn render_steps(&self, out: &mut String) {
        const NAME: &str = "mesh7_step_duration_seconds";
        header(
            out,
            NAME,
            "Time spent in each pipeline step (approval includes the wait for a human).",
            "histogram",
        );
        for step in Step::ALL {
            let h = &self.steps[step.index()];
            let step = step.as_str();
            let mut cumulative = 0;
            for (slot, (_, le)) in BUCKETS.iter().enumerate() {
                cumulative += h.counts[slot].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "{NAME}_bucket{{step=\"{step}\",le=\"{le}\"}} {cumulative}"
                );
            }
            cumulative += h.counts[BUCKETS.len()].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{NAME}_bucket{{step=\"{step}\",le=\"+Inf\"}} {cumulative}"
            );
            let sum = Duration::from_nanos(h.sum_nanos.load(Ordering::Relaxed)).as_secs_f64();
            let _ = writeln!(out, "{NAME}_sum{{step=\"{step}\"}} {sum}");
            // `_count` equals the `+Inf` bucket: both come from the same loads.
            let _ = writeln!(out, "{NAME}_count{{step=\"{step}\"}} {cumulative}");
        }
    }
}

fn ingress_index(i: Ingress) -> usize {
    match i {
        Ingress::Http => 0,
        Ingress::Decide => 1,
        Ingress::McpStdio => 2,
        Ingress::McpHttp => 3,
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value as the exposition format wants it: `\`, `"` and newlines escaped.
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, series: &str) -> Option<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ').map(str::to_owned))
    }

    #[test]
    fn step_histogram_is_cumulative_and_count_matches_the_inf_bucket() {
        let m = Metrics::default();
        for ms in [0, 3, 3, 700, 400_000] {
            m.observe_step(Step::Evaluate, Duration::from_millis(ms));
        }
        let text = m.render(&Scrape::default());
        let bucket = |le: &str| {
            sample(
                &text,
                &format!("mesh7_step_duration_seconds_bucket{{step=\"evaluate\",le=\"{le}\"}}"),
            )
        };
        let cases = [
            ("0.0005", "1"),
            ("0.005", "3"),
            ("0.5", "3"),
            ("1", "4"),
            ("300", "4"),
            ("+Inf", "5"),
        ];
        for (le, want) in cases {
            assert_eq!(bucket(le).as_deref(), Some(want), "le={le}\n{text}");
        }
        assert_eq!(
            sample(
                &text,
                "mesh7_step_duration_seconds_count{step=\"evaluate\"}"
            )
            .as_deref(),
            Some("5")
        );
        assert_eq!(
            sample(&text, "mesh7_step_duration_seconds_sum{step=\"evaluate\"}").as_deref(),
            Some("400.706")
        );
        assert_eq!(
            sample(&text, "mesh7_step_duration_seconds_count{step=\"forward\"}").as_deref(),
            Some("0")
        );
    }

    #[test]
    fn calls_are_counted_by_ingress_and_by_source() {
        let m = Metrics::default();
        let limited = Verdict::RateLimited {
            message: String::new(),
            is_loop: true,
        };
        m.count_call(Ingress::McpHttp, Source::Mcp, &Verdict::Denied);
        m.count_call(Ingress::Http, Source::Cli, &limited);
        m.count(Ingress::Http, &Verdict::Allowed { result: None });
        let text = m.render(&Scrape::default());
        let cases = [
            (
                "mesh7_calls_total{ingress=\"mcp-http\",decision=\"deny\"}",
                "1",
            ),
            (
                "mesh7_calls_total{ingress=\"http\",decision=\"rate_limited\"}",
                "1",
            ),
            (
                "mesh7_calls_total{ingress=\"http\",decision=\"allow\"}",
                "1",
            ),
            (
                "mesh7_calls_by_source_total{source=\"mcp\",decision=\"deny\"}",
                "1",
            ),
            (
                "mesh7_calls_by_source_total{source=\"cli\",decision=\"rate_limited\"}",
                "1",
            ),
            (
                "mesh7_calls_by_source_total{source=\"cli\",decision=\"allow\"}",
                "0",
            ),
            ("mesh7_loop_hits_total", "1"),
            ("mesh7_rate_limit_hits_total", "0"),
        ];
        for (series, want) in cases {
            assert_eq!(
                sample(&text, series).as_deref(),
                Some(want),
                "{series}\n{text}"
            );
        }
    }

    #[test]
    fn scrape_values_and_upstream_labels_are_rendered_escaped() {
        let m = Metrics::default();
        let scrape = Scrape {
            pending_approvals: 2,
            active_grants: 1,
            policy_reloads_failed: 3,
            upstreams: vec![("fs".to_owned(), true), ("we\"ird\\".to_owned(), false)],
            unaccepted: vec![("fs".to_owned(), 2)],
            tainted_sessions: 4,
            taint_sessions_forgotten: 5,
            ..Scrape::default()
        };
        let text = m.render(&scrape);
        let cases = [
            ("mesh7_approvals_pending", "2"),
            ("mesh7_grants_active", "1"),
            ("mesh7_policy_reload_failures_total", "3"),
            ("mesh7_upstream_up{server=\"fs\"}", "1"),
            ("mesh7_upstream_up{server=\"we\\\"ird\\\\\"}", "0"),
            ("mesh7_tools_unaccepted{server=\"fs\"}", "2"),
            ("mesh7_tainted_sessions", "4"),
            ("mesh7_taint_sessions_forgotten_total", "5"),
        ];
        for (series, want) in cases {
            assert_eq!(
                sample(&text, series).as_deref(),
                Some(want),
                "{series}\n{text}"
            );
        }
    }

    #[test]
    fn every_family_has_help_and_type_once() {
        let text = Metrics::default().render(&Scrape {
            upstreams: vec![("a".to_owned(), true)],
            unaccepted: vec![("a".to_owned(), 0)],
            ..Scrape::default()
        });
        let mut seen = std::collections::HashSet::new();
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let name = line.split(' ').nth(2).unwrap();
            assert!(seen.insert(name.to_owned()), "duplicate TYPE for {name}");
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "no HELP for {name}"
            );
        }
        assert!(seen.contains("mesh7_upstream_up"));
        assert!(seen.contains("mesh7_tools_unaccepted"));
        assert!(seen.contains("agent_mesh_mem7_writes_failed_total"));
    }
}
