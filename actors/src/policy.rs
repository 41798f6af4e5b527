//! The policy evaluator: owns the compiled policy set and its hot reload.
//!
//! Invariants:
//! - Reads never wait: the current `PolicySet` is published through an `ArcSwap`, so every
//!   request evaluates against an immutable snapshot on its own thread. Evaluation is pure CPU
//!   work of a few hundred nanoseconds; funnelling it through one mailbox would serialise every
//!   call in the process for no gain. Writes (reloads) are messages to the actor, one at a time.
//! - A reload that fails (bad YAML, unknown action, duplicate name, bad condition) keeps the old
//!   set and is reported in `last_reload`; the process never runs without a valid set.
//! - The file watcher thread only forwards debounced events as `Reload` messages; all loading
//!   happens in the actor, off the request path.
//! - Every reload that swaps the set bumps a version that listings' watchers wait on (with
//!   `hide_denied_tools`, what an agent is listed depends on the policies: MCP
//!   `notifications/tools/list_changed`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix::prelude::*;
use arc_swap::ArcSwap;
use mesh7_config::{PolicySet, load};
use notify::{Event, EventKind, RecursiveMode, Watcher as _};
use tokio::sync::watch;

use crate::clock::Clock;

/// How long the watcher waits for a burst of file events to settle.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Re-read the configuration file and `policy_dir` and swap the policy set if valid.
#[derive(Debug, Message)]
#[rtype(result = "ReloadStatus")]
pub struct Reload;

/// Outcome of the last reload, shown by `/health` as `last_reload`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReloadStatus {
    pub time: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Each message carries its cause, so none is also a `source` (a printed chain would repeat it).
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy evaluator unavailable: {0}")]
    Unavailable(MailboxError),
    #[error("cannot watch {path}: {message}")]
    Watch { path: String, message: String },
}

impl From<MailboxError> for PolicyError {
    fn from(e: MailboxError) -> Self {
        PolicyError::Unavailable(e)
    }
}

/// Reloads so far, for `/metrics`.
#[derive(Debug, Default)]
struct ReloadCounts {
    ok: AtomicU64,
    failed: AtomicU64,
}

/// Cloneable handle to the policy evaluator.
#[derive(Clone)]
pub struct Policy {
    current: Arc<ArcSwap<PolicySet>>,
    last_reload: Arc<ArcSwap<Option<ReloadStatus>>>,
    counts: Arc<ReloadCounts>,
    /// Successful reloads so far (see [`Policy::version`]).
    version: Arc<watch::Sender<u64>>,
    reload: Recipient<Reload>,
}

impl Policy {
    /// Starts the evaluator with an already compiled set. `config_path` is re-read on reload.
    pub fn start(config_path: PathBuf, initial: PolicySet, clock: Clock) -> Policy {
        let current = Arc::new(ArcSwap::from_pointee(initial));
        let last_reload = Arc::new(ArcSwap::from_pointee(None));
        let counts = Arc::new(ReloadCounts::default());
        let version = Arc::new(watch::Sender::new(0));
        let actor = PolicyActor {
            config_path,
            current: current.clone(),
            last_reload: last_reload.clone(),
            counts: counts.clone(),
            version: version.clone(),
            clock,
        };
        let addr = actor.start();
        Policy {
            current,
            last_reload,
            counts,
            version,
            reload: addr.recipient(),
        }
    }

    /// Grows with every reload that swapped the policy set.
    pub fn version(&self) -> u64 {
        *self.version.borrow()
    }

    /// Resolves once the set was swapped since [`Policy::version`] said `seen` (at once if it
    /// already was).
    pub async fn changed_since(&self, seen: u64) {
        let mut version = self.version.subscribe();
        // The sender lives in this handle too: it cannot be dropped meanwhile.
        let _ = version.wait_for(|v| *v != seen).await;
    }

    /// The snapshot to evaluate against. Cheap: one atomic load and a reference count.
    pub fn current(&self) -> Arc<PolicySet> {
        self.current.load_full()
    }

    /// Reloads now and returns the outcome.
    pub async fn reload(&self) -> Result<ReloadStatus, PolicyError> {
        Ok(self.reload.send(Reload).await?)
    }

    pub fn last_reload(&self) -> Option<ReloadStatus> {
        self.last_reload.load().as_ref().clone()
    }

    /// Reloads that succeeded and that failed since start-up.
    pub fn reload_counts(&self) -> (u64, u64) {
        (
            self.counts.ok.load(Ordering::Relaxed),
            self.counts.failed.load(Ordering::Relaxed),
        )
    }

    /// Watches the configuration file's directory and `policy_dir` (if any) and reloads after
    /// each settled burst of changes to the config file or to a `*.yaml` / `*.yml` file in
    /// `policy_dir`. The returned guard stops watching when dropped.
    pub fn watch(
        &self,
        config_path: &Path,
        policy_dir: Option<&Path>,
    ) -> Result<WatchGuard, PolicyError> {
        let config_file = canonical(config_path);
        let config_dir = config_file
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let policy_dir = policy_dir.map(canonical);
        let (tx, rx) = crossbeam_channel::unbounded::<notify::Result<Event>>();
        let mut watcher = notify::recommended_watcher(move |res| {
            let _ = tx.send(res);
        })
        .map_err(|e| watch_error(&config_dir, &e))?;
        watcher
            .watch(&config_dir, RecursiveMode::NonRecursive)
            .map_err(|e| watch_error(&config_dir, &e))?;
        if let Some(dir) = &policy_dir
            && dir.is_dir()
            && dir != &config_dir
        {
            watcher
                .watch(dir, RecursiveMode::NonRecursive)
                .map_err(|e| watch_error(dir, &e))?;
        }
        let reload = self.reload.clone();
        std::thread::Builder::new()
            .name("mesh7-policy-watch".to_owned())
            .spawn(move || debounce(&rx, &reload, &config_file, policy_dir.as_deref()))
            .map_err(|e| watch_error(config_path, &e))?;
        Ok(WatchGuard { _watcher: watcher })
    }
}

/// Keeps the file watcher alive; its thread ends when this is dropped.
pub struct WatchGuard {
    _watcher: notify::RecommendedWatcher,
}

/// Turns file events into `Reload` messages: after a relevant change, waits until no event has
/// arrived for `DEBOUNCE`, then asks for one reload. Reads (access events) are ignored, or the
/// reload's own reading of the files would trigger the next reload.
fn debounce(
    rx: &crossbeam_channel::Receiver<notify::Result<Event>>,
    reload: &Recipient<Reload>,
    config_file: &Path,
    policy_dir: Option<&Path>,
) {
    let relevant = |res: &notify::Result<Event>| match res {
        Ok(event) => {
            !matches!(event.kind, EventKind::Access(_))
                && event
                    .paths
                    .iter()
                    .any(|p| is_relevant(p, config_file, policy_dir))
        }
        Err(_) => false,
    };
    while let Ok(first) = rx.recv() {
        if !relevant(&first) {
            continue;
        }
        loop {
            match rx.recv_timeout(DEBOUNCE) {
                Ok(_) => continue,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => break,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
            }
        }
        // A tiny control message from a plain thread: do_send never blocks the watcher, and a
        // full mailbox of reloads already holds the reload this one would ask for.
        reload.do_send(Reload);
    }
}

fn watch_error(path: &Path, e: &dyn std::fmt::Display) -> PolicyError {
    PolicyError::Watch {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

fn is_relevant(path: &Path, config_file: &Path, policy_dir: Option<&Path>) -> bool {
    // By name first: the trace file in the same directory changes on every call, and resolving
    // its path each time would cost system calls for an event that cannot matter.
    if path.file_name() == config_file.file_name() {
        return true;
    }
    let is_yaml = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e == "yaml" || e == "yml");
    if !is_yaml {
        return false;
    }
    let path = canonical(path);
    path == config_file || policy_dir.is_some_and(|d| path.parent() == Some(d))
}

struct PolicyActor {
    config_path: PathBuf,
    current: Arc<ArcSwap<PolicySet>>,
    last_reload: Arc<ArcSwap<Option<ReloadStatus>>>,
    counts: Arc<ReloadCounts>,
    version: Arc<watch::Sender<u64>>,
    clock: Clock,
}

impl Actor for PolicyActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Reloads are rare; a short mailbox is plenty and keeps a storm of events bounded.
        ctx.set_mailbox_capacity(16);
    }
}

impl Handler<Reload> for PolicyActor {
    type Result = MessageResult<Reload>;

    fn handle(&mut self, _: Reload, _: &mut Self::Context) -> Self::Result {
        let status = match compile_from(&self.config_path) {
            Ok(set) => {
                tracing::info!(rules = set.rule_count(), "policies reloaded");
                self.current.store(Arc::new(set));
                self.version.send_modify(|v| *v += 1);
                ReloadStatus {
                    time: crate::trace::format_timestamp(self.clock.wall()),
                    ok: true,
                    error: None,
                }
            }
            Err(error) => {
                tracing::error!(%error, "policy reload failed; keeping the previous policies");
                ReloadStatus {
                    time: crate::trace::format_timestamp(self.clock.wall()),
                    ok: false,
                    error: Some(error),
                }
            }
        };
        let count = if status.ok {
            &self.counts.ok
        } else {
            &self.counts.failed
        };
        count.fetch_add(1, Ordering::Relaxed);
        self.last_reload.store(Arc::new(Some(status.clone())));
        MessageResult(status)
    }
}

/// Loads the configuration file (with its `policy_dir`) and compiles its policies.
/// Loading reads a few small files; it runs on the actor's own thread, never a request's.
fn compile_from(path: &Path) -> Result<PolicySet, String> {
    let loaded = load(path).map_err(|e| e.to_string().trim_end().to_owned())?;
    let set = PolicySet::compile(&loaded.config.policies).map_err(|errors| {
        errors
            .iter()
            .map(|e| format!("{}: {}", e.path, e.message))
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    Ok(set.with_taint(&loaded.config.taint))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_config_and_policy_yaml_files_trigger_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("mesh7.yaml");
        std::fs::write(&cfg, "").unwrap();
        let pdir = dir.path().join("policies.d");
        std::fs::create_dir(&pdir).unwrap();
        let cfg = canonical(&cfg);
        let pdir = canonical(&pdir);
        assert!(is_relevant(&cfg, &cfg, Some(&pdir)));
        assert!(is_relevant(&pdir.join("a.yaml"), &cfg, Some(&pdir)));
        assert!(is_relevant(&pdir.join("a.yml"), &cfg, Some(&pdir)));
        assert!(!is_relevant(&pdir.join("a.txt"), &cfg, Some(&pdir)));
        assert!(!is_relevant(
            &dir.path().join("other.yaml"),
            &cfg,
            Some(&pdir)
        ));
    }

    #[actix::test]
    async fn invalid_reload_keeps_the_previous_set() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("mesh7.yaml");
        std::fs::write(
            &cfg,
            "policies:\n  - name: p\n    agent: \"*\"\n    rules:\n      - tools: [\"t\"]\n        action: allow\n",
        )
        .unwrap();
        let loaded = load(&cfg).unwrap();
        let set = PolicySet::compile(&loaded.config.policies).unwrap();
        let policy = Policy::start(cfg.clone(), set, Clock::System);
        let args = serde_json::json!({});
        assert_eq!(
            policy.current().evaluate("a", "t", &args).action,
            mesh7_config::Action::Allow
        );

        std::fs::write(
            &cfg,
            "policies:\n  - name: p\n    rules:\n      - tools: [\"t\"]\n        action: alow\n",
        )
        .unwrap();
        assert_eq!(policy.version(), 0);
        let status = policy.reload().await.unwrap();
        assert!(!status.ok);
        assert!(status.error.unwrap().contains("alow"));
        assert_eq!(policy.version(), 0, "a failed reload changes nothing");
        assert_eq!(
            policy.current().evaluate("a", "t", &args).action,
            mesh7_config::Action::Allow
        );

        std::fs::write(
            &cfg,
            "policies:\n  - name: p\n    rules:\n      - tools: [\"t\"]\n        action: deny\n",
        )
        .unwrap();
        let changed = policy.changed_since(0);
        let status = policy.reload().await.unwrap();
        assert!(status.ok, "{status:?}");
        assert_eq!(policy.version(), 1);
        changed.await;
        assert_eq!(
            policy.current().evaluate("a", "t", &args).action,
            mesh7_config::Action::Deny
        );
        assert_eq!(policy.last_reload(), Some(status));
        assert_eq!(policy.reload_counts(), (1, 1));
    }

    #[actix::test]
    async fn taint_sources_are_reloaded_with_the_policies() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("mesh7.yaml");
        let rules = "policies:\n  - name: p\n    rules:\n      - tools: [post]\n        tainted: [web]\n        action: deny\n";
        std::fs::write(
            &cfg,
            format!("taint:\n  sources: [{{tools: [fetch], label: web}}]\n{rules}"),
        )
        .unwrap();
        let policy = Policy::start(cfg.clone(), compile_from(&cfg).unwrap(), Clock::System);
        assert_eq!(policy.current().taint_of("fetch").len(), 1);
        assert!(policy.current().taint_of("browse").is_empty());

        std::fs::write(
            &cfg,
            format!("taint:\n  sources: [{{tools: [browse], label: web}}]\n{rules}"),
        )
        .unwrap();
        assert!(policy.reload().await.unwrap().ok);
        assert!(policy.current().taint_of("fetch").is_empty());
        assert_eq!(policy.current().taint_of("browse").len(), 1);

        // A rule naming a label no source gives any more: refused, the previous set kept.
        std::fs::write(&cfg, rules).unwrap();
        let status = policy.reload().await.unwrap();
        assert!(!status.ok);
        assert!(status.error.unwrap().contains("no taint source"));
        assert_eq!(policy.current().taint_of("browse").len(), 1);
    }
}
