//! Process counters for `GET /metrics` (Prometheus text format).
//!
//! Plain atomics: counting must never wait on anything.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::pipeline::{Ingress, Verdict};

const INGRESSES: [Ingress; 4] = [
    Ingress::Http,
    Ingress::Decide,
    Ingress::McpStdio,
    Ingress::McpHttp,
];
const DECISIONS: [&str; 5] = ["allow", "deny", "human_approval", "rate_limited", "error"];

#[derive(Debug, Default)]
pub struct Metrics {
    /// calls[ingress][decision]
    calls: [[AtomicU64; 5]; 4],
    loop_hits: AtomicU64,
    rate_limit_hits: AtomicU64,
    pub mem7_writes_attempted: AtomicU64,
    pub mem7_writes_succeeded: AtomicU64,
    pub mem7_writes_failed: AtomicU64,
}

impl Metrics {
    pub fn count(&self, ingress: Ingress, verdict: &Verdict) {
        let decision = match verdict {
            Verdict::Allowed { .. } => 0,
            Verdict::Denied => 1,
            Verdict::ApprovalRequired
            | Verdict::ApprovalPending
            | Verdict::ApprovalDenied
            | Verdict::ApprovalTimedOut
            | Verdict::ApprovalUnavailable { .. } => 2,
            Verdict::RateLimited { is_loop, .. } => {
                if *is_loop {
                    self.loop_hits.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.rate_limit_hits.fetch_add(1, Ordering::Relaxed);
                }
                3
            }
            Verdict::Failed { .. } => 4,
        };
        self.calls[ingress_index(ingress)][decision].fetch_add(1, Ordering::Relaxed);
    }

    /// Renders the exposition text. `extra` gauges are appended as given (name, help, value).
    pub fn render(&self, gauges: &[(&str, &str, u64)]) -> String {
        let mut out = String::new();
        out.push_str("# HELP mesh7_calls_total Governed tool calls by ingress and decision.\n");
        out.push_str("# TYPE mesh7_calls_total counter\n");
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
        counter(
            &mut out,
            "mesh7_rate_limit_hits_total",
            "Calls refused by a rate limit.",
            &self.rate_limit_hits,
        );
        counter(
            &mut out,
            "mesh7_loop_hits_total",
            "Calls refused by loop detection.",
            &self.loop_hits,
        );
        counter(
            &mut out,
            "agent_mesh_mem7_writes_attempted_total",
            "mem7 decision writes attempted.",
            &self.mem7_writes_attempted,
        );
        counter(
            &mut out,
            "agent_mesh_mem7_writes_succeeded_total",
            "mem7 decision writes that succeeded.",
            &self.mem7_writes_succeeded,
        );
        counter(
            &mut out,
            "agent_mesh_mem7_writes_failed_total",
            "mem7 decision writes that failed.",
            &self.mem7_writes_failed,
        );
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        out
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

fn counter(out: &mut String, name: &str, help: &str, v: &AtomicU64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
        v.load(Ordering::Relaxed)
    );
}
