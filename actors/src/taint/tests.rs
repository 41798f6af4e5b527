use super::*;

fn labels(list: &[&str]) -> Vec<Arc<str>> {
    list.iter().map(|&l| Arc::from(l)).collect()
}

async fn has(taint: &Taint, agent: &str, session: &str) -> Vec<String> {
    let found = taint.labels(agent, session).await.expect("labels");
    found.iter().map(ToString::to_string).collect()
}

async fn sessions(taint: &Taint) -> Vec<(String, String)> {
    let list = taint.list(None, usize::MAX).await.expect("list");
    list.into_iter().map(|s| (s.agent, s.session)).collect()
}

#[actix::test]
async fn a_mark_labels_only_its_own_session_once_per_label() {
    let taint = Taint::start(None, 10, Clock::System, 16).expect("start");
    assert!(has(&taint, "claude", "s-1").await.is_empty());

    taint
        .mark("claude", "s-1", labels(&["web"]), "fetch.get")
        .await
        .expect("mark");
    assert_eq!(has(&taint, "claude", "s-1").await, ["web"]);
    assert!(has(&taint, "claude", "s-2").await.is_empty());
    assert!(has(&taint, "cursor", "s-1").await.is_empty());
    // Calls without a session are a session of their own.
    assert!(has(&taint, "claude", "").await.is_empty());

    taint
        .mark("claude", "s-1", labels(&["web", "email"]), "gmail.read")
        .await
        .expect("mark");
    let list = taint.list(None, usize::MAX).await.expect("list");
    assert_eq!(list.len(), 1);
    let got: Vec<(&str, &str)> = list[0]
        .labels
        .iter()
        .map(|l| (l.label.as_str(), l.tool.as_str()))
        .collect();
    // The first tool that gave a label is kept.
    assert_eq!(got, [("web", "fetch.get"), ("email", "gmail.read")]);
    let view = list[0].view();
    assert_eq!(view["agent"], "claude");
    assert_eq!(view["session"], "s-1");
    assert!(view.get("id").is_none(), "{view}");
}

#[test]
fn keys_keep_agent_and_session_apart() {
    assert_ne!(key_of("ab", "c"), key_of("a", "bc"));
    assert_ne!(key_of("a", ""), key_of("", "a"));
}

#[actix::test]
async fn labels_are_durable_and_cleared_from_the_store_too() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let first = Taint::start(Some(store.clone()), 10, Clock::System, 16).expect("start");
    first
        .mark("claude", "s-1", labels(&["web"]), "fetch.get")
        .await
        .expect("mark");
    first
        .mark("claude", "s-2", labels(&["web"]), "fetch.get")
        .await
        .expect("mark");

    let again = Taint::start(Some(store.clone()), 10, Clock::System, 16).expect("restart");
    assert_eq!(has(&again, "claude", "s-1").await, ["web"]);
    let cleared = again.clear("claude", "s-1").await.expect("clear");
    assert_eq!(cleared.map(|s| s.session).as_deref(), Some("s-1"));
    assert!(again.clear("claude", "s-1").await.expect("clear").is_none());
    assert!(has(&again, "claude", "s-1").await.is_empty());

    let third = Taint::start(Some(store), 10, Clock::System, 16).expect("restart");
    assert_eq!(
        sessions(&third).await,
        [("claude".to_owned(), "s-2".to_owned())]
    );
}

#[actix::test]
async fn beyond_the_bound_the_least_recently_used_session_is_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let taint = Taint::start(Some(store.clone()), 2, Clock::System, 16).expect("start");
    for session in ["a", "b"] {
        taint
            .mark("claude", session, labels(&["web"]), "fetch.get")
            .await
            .expect("mark");
    }
    let counted = |sessions, forgotten| TaintStats {
        sessions,
        forgotten,
    };
    assert_eq!(taint.stats().await, counted(2, 0));
    // A call of session a uses it: b is now the least recently used.
    assert_eq!(has(&taint, "claude", "a").await, ["web"]);
    taint
        .mark("claude", "c", labels(&["web"]), "fetch.get")
        .await
        .expect("mark");
    let pair = |s: &str| ("claude".to_owned(), s.to_owned());
    assert_eq!(sessions(&taint).await, [pair("c"), pair("a")]);
    assert_eq!(taint.stats().await, counted(2, 1), "b was forgotten");
    let one = taint.list(Some("claude"), 1).await.expect("list");
    assert_eq!(one.len(), 1);
    assert!(
        taint
            .list(Some("cursor"), 10)
            .await
            .expect("list")
            .is_empty()
    );
    assert!(has(&taint, "claude", "b").await.is_empty());

    // The store forgot it too; a restart with a smaller bound keeps the most recent.
    let smaller = Taint::start(Some(store), 1, Clock::System, 16).expect("restart");
    assert_eq!(sessions(&smaller).await, [pair("c")]);
    assert_eq!(
        smaller.stats().await,
        counted(1, 1),
        "a is forgotten at start-up"
    );
}
