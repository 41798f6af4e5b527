//! Tests of the trace writer: the JSON shape, timestamps and token counts, the ring's queries,
//! and the JSONL file (append, flush, reload, rotation, updates, write errors, backpressure).

use std::collections::HashSet;
use std::time::{Duration, UNIX_EPOCH};

use chrono::TimeZone;
use serde_json::json;

use super::*;

fn entry(id: &str) -> TraceEntry {
    TraceEntry {
        trace_id: id.to_owned(),
        agent_id: "agent-a".into(),
        tool: "files.read".into(),
        policy: "allow".into(),
        policy_rule: "default".into(),
        timestamp: "2026-11-21T10:00:00Z".into(),
        ..TraceEntry::default()
    }
}

fn full_entry() -> TraceEntry {
    TraceEntry {
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        session_id: "sess-1".into(),
        agent_id: "agent-a".into(),
        tool: "ollama.generate".into(),
        params: json!({"prompt": "hi", "n": 2}),
        policy: "human_approval".into(),
        policy_rule: "ops".into(),
        status_code: 200,
        latency_ms: 1234,
        error: "backend error: boom".into(),
        timestamp: "2026-11-21T10:00:00.1234Z".into(),
        exit_code: Some(3),
        approval_id: "ap-1".into(),
        approval_status: "approved".into(),
        approved_by: "alice".into(),
        approval_ms: 1200,
        supervisor_reasoning: "routine".into(),
        supervisor_confidence: 0.9,
        estimated_input_tokens: 12,
        estimated_output_tokens: 34,
        tokens_source: "real".into(),
        ingress: "http".into(),
        effective_tool: "ollama.generate.fast".into(),
        shadow_policy: "deny".into(),
        shadow_rule: "strict".into(),
        taint: Some(vec!["web".into()]),
    }
}

const FULL_LINE: &str = concat!(
    r#"{"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","session_id":"sess-1","agent_id":"agent-a","#,
    r#""tool":"ollama.generate","params":{"prompt":"hi","n":2},"policy":"human_approval","#,
    r#""policy_rule":"ops","status_code":200,"latency_ms":1234,"error":"backend error: boom","#,
    r#""timestamp":"2026-11-21T10:00:00.1234Z","exit_code":3,"approval_id":"ap-1","#,
    r#""approval_status":"approved","approved_by":"alice","approval_ms":1200,"#,
    r#""supervisor_reasoning":"routine","supervisor_confidence":0.9,"estimated_input_tokens":12,"#,
    r#""estimated_output_tokens":34,"tokens_source":"real","ingress":"http","#,
    r#""effective_tool":"ollama.generate.fast","shadow_policy":"deny","shadow_rule":"strict","#,
    r#""taint":["web"]}"#,
);

fn settings(file: Option<PathBuf>) -> TraceSettings {
    TraceSettings {
        ring_size: 100,
        file,
        max_file_bytes: 0,
        mailbox: 16,
        hmac_key: None,
        redact: None,
    }
}

fn start(settings: TraceSettings) -> Trace {
    Trace::start(settings, Clock::System).expect("trace writer starts")
}

fn all() -> TraceQuery {
    TraceQuery::default()
}

fn ids(entries: &[TraceEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.trace_id.as_str()).collect()
}

fn file_entries(path: &Path) -> Vec<TraceEntry> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn line_of(e: &TraceEntry) -> String {
    serde_json::to_string(e).unwrap() + "\n"
}

// --- JSON shape -------------------------------------------------------------------------------

#[test]
fn minimal_entry_omits_empty_fields_and_keeps_flux7_key_order() {
    assert_eq!(
        serde_json::to_string(&entry("t1")).unwrap(),
        concat!(
            r#"{"trace_id":"t1","agent_id":"agent-a","tool":"files.read","params":null,"#,
            r#""policy":"allow","policy_rule":"default","status_code":0,"latency_ms":0,"#,
            r#""timestamp":"2026-11-21T10:00:00Z"}"#
        )
    );
}

#[test]
fn full_entry_serializes_every_key_in_flux7_order_and_round_trips() {
    assert_eq!(serde_json::to_string(&full_entry()).unwrap(), FULL_LINE);
    let back: TraceEntry = serde_json::from_str(FULL_LINE).unwrap();
    assert_eq!(back, full_entry());
}

#[test]
fn stats_serialize_with_health_keys_sorted() {
    assert_eq!(
        serde_json::to_string(&TraceStats::default()).unwrap(),
        concat!(
            r#"{"allowed":0,"denied":0,"errors":0,"estimated_input_tokens":0,"#,
            r#""estimated_output_tokens":0,"human_approval":0,"total":0}"#
        )
    );
}

// --- Pure helpers -----------------------------------------------------------------------------

#[test]
fn formats_timestamps_like_go_rfc3339nano() {
    let base = u64::try_from(
        Utc.with_ymd_and_hms(2026, 11, 21, 10, 0, 0)
            .unwrap()
            .timestamp(),
    )
    .unwrap();
    let cases = [
        (0, "2026-11-21T10:00:00Z"),
        (123_400_000, "2026-11-21T10:00:00.1234Z"),
        (500_000_000, "2026-11-21T10:00:00.5Z"),
        (100_000, "2026-11-21T10:00:00.0001Z"),
        (1, "2026-11-21T10:00:00.000000001Z"),
        (999_999_999, "2026-11-21T10:00:00.999999999Z"),
    ];
    for (nanos, want) in cases {
        let t = UNIX_EPOCH + Duration::new(base, nanos);
        assert_eq!(format_timestamp(t), want, "nanos {nanos}");
    }
    assert_eq!(format_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00Z");
}

#[test]
fn new_trace_ids_are_32_lowercase_hex_and_distinct() {
    let (a, b) = (new_trace_id(), new_trace_id());
    for id in [&a, &b] {
        assert_eq!(id.len(), 32);
        assert!(
            id.chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        );
    }
    assert_ne!(a, b);
}

#[test]
fn estimates_tokens_from_provider_counts_or_characters() {
    let q = json!({"q": "abcdefgh"}); // 16 characters of JSON → 4
    let cases = [
        // Provider counts, by tool prefix.
        (
            "ollama.generate",
            q.clone(),
            Some(json!({"prompt_eval_count": 12, "eval_count": 34})),
            (12, 34, "real"),
        ),
        (
            "anthropic.messages",
            q.clone(),
            Some(json!({"usage": {"input_tokens": 5, "output_tokens": 7}})),
            (5, 7, "real"),
        ),
        (
            "openai.chat",
            q.clone(),
            Some(json!({"usage": {"prompt_tokens": 3, "completion_tokens": 4}})),
            (3, 4, "real"),
        ),
        (
            "ollama.generate",
            q.clone(),
            Some(json!({"prompt_eval_count": 12.0, "eval_count": 0})),
            (12, 0, "real"),
        ),
        // Both counts zero, or the usage object missing: estimate.
        (
            "openai.chat",
            q.clone(),
            Some(json!({"usage": {"prompt_tokens": 0, "completion_tokens": 0}})),
            (4, 12, "estimate"),
        ),
        (
            "anthropic.messages",
            q.clone(),
            Some(json!({"input_tokens": 5})),
            (4, 4, "estimate"),
        ),
        // Any other tool: characters / 4, at least 1 when non-empty, 0 when empty.
        (
            "files.read",
            q.clone(),
            Some(json!({"usage": {"input_tokens": 5, "output_tokens": 7}})),
            (4, 11, "estimate"),
        ),
        (
            "files.read",
            q.clone(),
            Some(json!("abc")),
            (4, 1, "estimate"),
        ),
        (
            "files.read",
            q.clone(),
            Some(json!(12345)),
            (4, 1, "estimate"),
        ),
        ("files.read", json!({}), Some(json!("")), (1, 0, "estimate")),
        ("files.read", Value::Null, None, (0, 0, "estimate")),
    ];
    for (tool, params, result, (input, output, source)) in cases {
        let mut e = TraceEntry {
            tool: tool.into(),
            params,
            ..TraceEntry::default()
        };
        estimate_tokens(&mut e, result.as_ref());
        assert_eq!(
            (
                e.estimated_input_tokens,
                e.estimated_output_tokens,
                e.tokens_source.as_str()
            ),
            (input, output, source),
            "{tool} {result:?}"
        );
    }
}

// --- The ring ---------------------------------------------------------------------------------

#[actix::test]
async fn query_filters_exactly_and_returns_most_recent_first() {
    let trace = start(settings(None));
    for (id, agent, tool, session) in [
        ("q1", "agent-a", "t1", "s1"),
        ("q2", "agent-b", "t1", "s1"),
        ("q3", "agent-a", "t2", ""),
        ("q4", "agent-a", "t1", "s2"),
    ] {
        let e = TraceEntry {
            agent_id: agent.into(),
            tool: tool.into(),
            session_id: session.into(),
            ..entry(id)
        };
        trace.record(e).await.unwrap();
    }
    let some = |s: &str| Some(s.to_owned());
    let cases = [
        (all(), vec!["q4", "q3", "q2", "q1"]),
        (
            TraceQuery {
                agent: some("agent-a"),
                ..all()
            },
            vec!["q4", "q3", "q1"],
        ),
        (
            TraceQuery {
                tool: some("t1"),
                ..all()
            },
            vec!["q4", "q2", "q1"],
        ),
        (
            TraceQuery {
                session: some("s1"),
                ..all()
            },
            vec!["q2", "q1"],
        ),
        (
            TraceQuery {
                agent: some("agent-a"),
                tool: some("t1"),
                ..all()
            },
            vec!["q4", "q1"],
        ),
        (TraceQuery { limit: 2, ..all() }, vec!["q4", "q3"]),
        (
            TraceQuery {
                agent: some("agent-a"),
                limit: 1,
                ..all()
            },
            vec!["q4"],
        ),
        // Exact matches only: no prefix, no glob.
        (
            TraceQuery {
                agent: some("agent"),
                ..all()
            },
            vec![],
        ),
        (
            TraceQuery {
                tool: some("t*"),
                ..all()
            },
            vec![],
        ),
    ];
    for (q, want) in cases {
        let got = trace.query(q.clone()).await.unwrap();
        assert_eq!(ids(&got), want, "{q:?}");
    }
}

#[actix::test]
async fn ring_evicts_the_oldest_beyond_ring_size() {
    let trace = start(TraceSettings {
        ring_size: 3,
        ..settings(None)
    });
    for id in ["e1", "e2", "e3", "e4", "e5"] {
        trace.record(entry(id)).await.unwrap();
    }
    assert_eq!(ids(&trace.query(all()).await.unwrap()), ["e5", "e4", "e3"]);
    assert_eq!(trace.stats().await.unwrap().total, 3);
}

#[actix::test]
async fn record_fills_a_missing_trace_id_and_timestamp_from_the_clock() {
    let (clock, manual) = Clock::manual();
    manual.advance(Duration::from_millis(1500));
    let trace = Trace::start(settings(None), clock.clone()).unwrap();
    let e = TraceEntry {
        trace_id: String::new(),
        timestamp: String::new(),
        ..entry("")
    };
    trace.record(e).await.unwrap();
    let got = trace.query(all()).await.unwrap();
    assert_eq!(got[0].trace_id.len(), 32);
    assert_eq!(got[0].timestamp, format_timestamp(clock.wall()));
}

#[actix::test]
async fn sessions_are_summarised_by_last_seen_with_unique_sorted_tools() {
    let trace = start(settings(None));
    for (id, session, agent, tool, at) in [
        ("e1", "s1", "agent-a", "y", "2026-11-21T09:59:59.5Z"),
        ("e2", "s2", "agent-b", "x", "2026-11-21T09:59:59Z"),
        ("e3", "s1", "agent-c", "x", "2026-11-21T10:00:00Z"),
        ("e4", "", "agent-d", "z", "2026-11-21T10:00:05Z"),
        ("e5", "s2", "agent-b", "x", "2026-11-21T10:00:00.5Z"),
        ("e6", "s1", "agent-a", "y", "2026-11-21T09:59:58Z"),
    ] {
        let e = TraceEntry {
            session_id: session.into(),
            agent_id: agent.into(),
            tool: tool.into(),
            timestamp: at.into(),
            ..entry(id)
        };
        trace.record(e).await.unwrap();
    }
    let s2 = SessionSummary {
        session_id: "s2".into(),
        agent_id: "agent-b".into(),
        event_count: 2,
        first_seen: "2026-11-21T09:59:59Z".into(),
        last_seen: "2026-11-21T10:00:00.5Z".into(),
        tools: vec!["x".into()],
    };
    // "10:00:00Z" sorts after "10:00:00.5Z" as text; as time it is earlier.
    let s1 = SessionSummary {
        session_id: "s1".into(),
        agent_id: "agent-a".into(),
        event_count: 3,
        first_seen: "2026-11-21T09:59:58Z".into(),
        last_seen: "2026-11-21T10:00:00Z".into(),
        tools: vec!["x".into(), "y".into()],
    };
    assert_eq!(trace.sessions(50).await.unwrap(), [s2.clone(), s1]);
    assert_eq!(trace.sessions(1).await.unwrap(), [s2]);
}

#[actix::test]
async fn stats_count_policies_errors_and_tokens() {
    let trace = start(settings(None));
    let with = |id: &str, policy: &str, error: &str, tokens: (u64, u64)| TraceEntry {
        policy: policy.into(),
        error: error.into(),
        estimated_input_tokens: tokens.0,
        estimated_output_tokens: tokens.1,
        ..entry(id)
    };
    for e in [
        with("a1", "allow", "", (10, 20)),
        with("a2", "allow", "backend error", (1, 2)),
        with("d1", "deny", "", (0, 0)),
        with("h1", "human_approval", "", (5, 0)),
        with("r1", "rate_limited", "rate limit exceeded", (0, 0)),
        with("r2", "rate_limited", "", (0, 0)),
    ] {
        trace.record(e).await.unwrap();
    }
    assert_eq!(
        trace.stats().await.unwrap(),
        TraceStats {
            allowed: 2,
            denied: 1,
            errors: 3,
            estimated_input_tokens: 16,
            estimated_output_tokens: 22,
            human_approval: 1,
            total: 6,
        }
    );
}

// --- The JSONL file ---------------------------------------------------------------------------

#[actix::test]
async fn flush_makes_every_recorded_entry_visible_in_the_file_as_exact_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("traces.jsonl");
    let trace = start(settings(Some(path.clone())));
    trace.record(full_entry()).await.unwrap();
    for i in 0..50 {
        trace.record(entry(&format!("f{i}"))).await.unwrap();
    }
    trace.flush().await.unwrap();
    let text = fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 51);
    assert_eq!(lines[0], FULL_LINE);
    assert_eq!(lines[50], line_of(&entry("f49")).trim_end());
}

#[actix::test]
async fn a_batch_reaches_the_file_by_itself_without_a_flush() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("traces.jsonl");
    let trace = start(settings(Some(path.clone())));
    for i in 0..3 {
        trace.record(entry(&format!("b{i}"))).await.unwrap();
    }
    // The batch timer writes and flushes the records; nothing else asks for them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while file_entries(&path).len() < 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(BATCH_DELAY).await;
    }
    assert_eq!(ids(&file_entries(&path)), ["b0", "b1", "b2"]);
}

#[actix::test]
async fn a_record_from_outside_any_runtime_wakes_the_writer_itself() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("traces.jsonl");
    let trace = start(settings(Some(path.clone())));
    // Inside a runtime the wake-up is left to a task; a thread without one has no task to
    // leave it to, so `record` wakes the writer before it returns.
    let from_thread = trace.clone();
    std::thread::spawn(move || futures_executor::block_on(from_thread.record(entry("t0"))))
        .join()
        .expect("recording thread")
        .expect("recorded");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while file_entries(&path).is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(BATCH_DELAY).await;
    }
    assert_eq!(ids(&file_entries(&path)), ["t0"]);
}

#[actix::test]
async fn a_new_writer_on_the_same_file_sees_the_old_entries() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("traces.jsonl");
    let first = start(settings(Some(path.clone())));
    for id in ["o1", "o2", "o3"] {
        first.record(entry(id)).await.unwrap();
    }
    first.flush().await.unwrap();

    let second = start(settings(Some(path.clone())));
    assert_eq!(ids(&second.query(all()).await.unwrap()), ["o3", "o2", "o1"]);
    second.record(entry("n1")).await.unwrap();
    second.flush().await.unwrap();
    assert_eq!(ids(&file_entries(&path)), ["o1", "o2", "o3", "n1"]);
}

#[actix::test]
async fn reload_skips_malformed_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("traces.jsonl");
    let text = [
        line_of(&entry("ok1")),
        "not json\n".to_owned(),
        "{\"trace_id\":1}\n".to_owned(),
        "\n".to_owned(),
        line_of(&entry("ok2")),
    ]
    .concat();
    fs::write(&path, text).unwrap();
    let trace = start(settings(Some(path)));
    assert_eq!(ids(&trace.query(all()).await.unwrap()), ["ok2", "ok1"]);
}

#[actix::test]
async fn reload_stops_at_a_line_over_one_mebibyte() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("traces.jsonl");
    let huge = "x".repeat(1024 * 1024 + 10) + "\n";
    fs::write(
        &path,
        [line_of(&entry("before")), huge, line_of(&entry("after"))].concat(),
    )
    .unwrap();
    let trace = start(settings(Some(path)));
    assert_eq!(ids(&trace.query(all()).await.unwrap()), ["before"]);
}

#[actix::test]
async fn reload_keeps_the_last_ring_size_entries() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("traces.jsonl");
    let text: String = ["l1", "l2", "l3", "l4", "l5"]
        .map(|id| line_of(&entry(id)))
        .concat();
    fs::write(&path, text).unwrap();
    let trace = start(TraceSettings {
        ring_size: 3,
        ..settings(Some(path))
    });
    assert_eq!(ids(&trace.query(all()).await.unwrap()), ["l5", "l4", "l3"]);
}

#[actix::test]
async fn rotates_to_old_file_at_max_file_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("traces.jsonl");
    let old = dir.path().join("traces.jsonl.old");
    let line_len = line_of(&entry("r1")).len() as u64;
    let trace = start(TraceSettings {
        max_file_bytes: 2 * line_len,
        ..settings(Some(path.clone()))
    });
    for id in ["r1", "r2", "r3"] {
        trace.record(entry(id)).await.unwrap();
    }
    trace.flush().await.unwrap();
    assert_eq!(ids(&file_entries(&old)), ["r1", "r2"]);
    assert_eq!(ids(&file_entries(&path)), ["r3"]);

    // The next rotation replaces the previous `.old`.
    trace.record(entry("r4")).await.unwrap();
    trace.flush().await.unwrap();
    assert_eq!(ids(&file_entries(&old)), ["r3", "r4"]);
    assert_eq!(ids(&file_entries(&path)), Vec::<&str>::new());
    // The ring is unaffected by rotation.
    assert_eq!(trace.stats().await.unwrap().total, 4);
}

#[actix::test]
async fn update_replaces_in_ring_and_reload_keeps_the_latest_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("traces.jsonl");
    let trace = start(settings(Some(path.clone())));
    let pending = TraceEntry {
        policy: "human_approval".into(),
        approval_id: "ap-1".into(),
        ..entry("u1")
    };
    trace.record(pending.clone()).await.unwrap();
    trace.record(entry("other")).await.unwrap();
    let found = trace
        .update(
            "u1",
            TraceUpdate {
                approval_status: Some("approved".into()),
                approved_by: Some("alice".into()),
                approval_ms: Some(1500),
                status_code: Some(200),
                latency_ms: Some(1600),
                estimated_input_tokens: Some(4),
                estimated_output_tokens: Some(9),
                tokens_source: Some("estimate".into()),
                ..TraceUpdate::default()
            },
        )
        .await
        .unwrap();
    assert!(found);
    let updated = TraceEntry {
        approval_status: "approved".into(),
        approved_by: "alice".into(),
        approval_ms: 1500,
        status_code: 200,
        latency_ms: 1600,
        estimated_input_tokens: 4,
        estimated_output_tokens: 9,
        tokens_source: "estimate".into(),
        ..pending.clone()
    };
    let ring = trace.query(all()).await.unwrap();
    assert_eq!(ring, [entry("other"), updated.clone()]);

    trace.flush().await.unwrap();
    assert_eq!(
        file_entries(&path),
        [pending, entry("other"), updated.clone()]
    );
    let reloaded = start(settings(Some(path)));
    assert_eq!(
        reloaded.query(all()).await.unwrap(),
        [entry("other"), updated]
    );
}

#[actix::test]
async fn update_of_an_unknown_trace_id_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("traces.jsonl");
    let trace = start(settings(Some(path.clone())));
    trace.record(entry("known")).await.unwrap();
    let update = TraceUpdate {
        status_code: Some(500),
        ..TraceUpdate::default()
    };
    assert!(!trace.update("unknown", update).await.unwrap());
    trace.flush().await.unwrap();
    assert_eq!(file_entries(&path), [entry("known")]);
}

#[actix::test]
async fn reload_keeps_distinct_calls_that_share_a_trace_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("traces.jsonl");
    let trace = start(settings(Some(path.clone())));
    let first = TraceEntry {
        timestamp: "2026-11-21T10:00:01Z".into(),
        ..entry("shared")
    };
    let second = TraceEntry {
        timestamp: "2026-11-21T10:00:02Z".into(),
        ..entry("shared")
    };
    trace.record(first.clone()).await.unwrap();
    trace.record(second.clone()).await.unwrap();
    let update = TraceUpdate {
        status_code: Some(201),
        ..TraceUpdate::default()
    };
    assert!(trace.update("shared", update).await.unwrap());
    trace.flush().await.unwrap();

    let updated_second = TraceEntry {
        status_code: 201,
        ..second
    };
    let reloaded = start(settings(Some(path)));
    assert_eq!(
        reloaded.query(all()).await.unwrap(),
        [updated_second, first]
    );
}

#[actix::test]
async fn a_write_error_is_counted_and_the_ring_still_gets_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("traces.jsonl");
    // A non-empty directory where the rotated file should go makes every rotation fail.
    let old = dir.path().join("traces.jsonl.old");
    fs::create_dir(&old).unwrap();
    fs::write(old.join("keep"), "x").unwrap();
    let trace = start(TraceSettings {
        max_file_bytes: 1,
        ..settings(Some(path.clone()))
    });
    assert_eq!(trace.write_errors().await, 0);
    trace.record(entry("w1")).await.unwrap();
    trace.record(entry("w2")).await.unwrap();
    trace.flush().await.unwrap();
    assert_eq!(trace.write_errors().await, 2);
    assert_eq!(ids(&trace.query(all()).await.unwrap()), ["w2", "w1"]);
    assert_eq!(ids(&file_entries(&path)), ["w1", "w2"]);
}

#[actix::test]
async fn start_reports_a_file_that_cannot_be_opened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing-dir").join("traces.jsonl");
    let err = Trace::start(settings(Some(path)), Clock::System).unwrap_err();
    assert!(matches!(err, TraceError::Open { .. }), "{err}");
}

#[actix::test]
async fn a_burst_of_ten_thousand_records_through_a_small_mailbox_loses_none() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("traces.jsonl");
    let trace = start(TraceSettings {
        ring_size: 10_000,
        mailbox: 16,
        ..settings(Some(path.clone()))
    });
    // Half from one caller in a tight loop, half from five concurrent callers sharing one handle.
    for i in 0..5_000 {
        trace.record(entry(&format!("seq-{i}"))).await.unwrap();
    }
    let shared = Arc::new(trace.clone());
    let tasks: Vec<_> = (0..5)
        .map(|t| {
            let shared = shared.clone();
            actix_rt::spawn(async move {
                for i in 0..1_000 {
                    shared.record(entry(&format!("par-{t}-{i}"))).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    trace.flush().await.unwrap();

    let written = file_entries(&path);
    assert_eq!(written.len(), 10_000);
    let unique: HashSet<&str> = ids(&written).into_iter().collect();
    assert_eq!(unique.len(), 10_000);
    assert_eq!(trace.stats().await.unwrap().total, 10_000);
    assert_eq!(trace.write_errors().await, 0);
}

#[actix::test]
async fn redaction_reaches_the_ring_and_the_file_and_older_lines_shown_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("traces.jsonl");
    let with_secret = |id: &str| TraceEntry {
        params: json!({"user": "ann", "password": "hunter2", "note": "key sk-live1234567890"}),
        error: "refused sk-live1234567890".into(),
        ..entry(id)
    };
    // A line written before redaction was configured.
    fs::write(&path, line_of(&with_secret("old"))).unwrap();
    let cfg = mesh7_config::RedactConfig {
        keys: vec!["PASSWORD".into()],
        values: vec!["sk-live[0-9]+".into()],
    };
    let rules = mesh7_config::redact::RedactRules::compile(&cfg).unwrap();
    let redactor = Redactor::new(rules, Some("a key of sixteen bytes or more")).unwrap();
    let trace = start(TraceSettings {
        redact: Some(Arc::new(redactor)),
        ..settings(Some(path.clone()))
    });
    trace.record(with_secret("new")).await.unwrap();
    trace.flush().await.unwrap();

    let shown = trace.query(all()).await.unwrap();
    assert_eq!(ids(&shown), ["new", "old"]);
    for e in &shown {
        let text = serde_json::to_string(e).unwrap();
        assert!(
            !text.contains("hunter2") && !text.contains("sk-live"),
            "{text}"
        );
        assert_eq!(e.params["user"], "ann");
        assert!(redact::is_redacted(&e.params), "{text}");
    }
    // The same secret, the same marker, wherever it is.
    assert_eq!(shown[0].params["password"], shown[1].params["password"]);
    let written = fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = written.lines().collect();
    assert_eq!(lines.len(), 2);
    // The file is only appended to: the old line stays as it was written.
    assert!(lines[0].contains("hunter2"), "{written}");
    assert!(
        !lines[1].contains("hunter2") && !lines[1].contains("sk-live"),
        "{written}"
    );
    assert!(
        lines[1].contains("\"error\":\"refused [redacted:"),
        "{written}"
    );
}
