//! The durable store of approvals, grants, halts, catalogue pins and session labels: the only module that touches sled.
//!
//! Layout (schema version 1):
//! - default tree: `meta/schema_version` = `"1"` (ASCII). A store written by a newer schema is
//!   refused rather than misread.
//! - tree `approvals`: key = the approval id (16 hex digits), value = JSON `{"seq", "record"}`.
//! - tree `grants`: key = the grant id (16 hex digits), value = JSON `{"seq", "record"}`.
//! - tree `halts`: key = the halt id (16 hex digits), value = JSON `{"seq", "record"}`.
//! - tree `pins`: key = `server.tool` (or `server` alone: the catalogue was seen), value =
//!   JSON `{"seq", "record"}` (`seq` unused, 0).
//! - tree `taint`: key = the agent's length in bytes, `:`, the agent, then the session id;
//!   value = JSON `{"seq", "record"}` (the labels of that session).
//! - tree `openapi_specs`: key = a spec URL, value = the last good copy of that spec (bytes
//!   chosen by the caller). A cache: losing it only loses the fallback.
//!
//! `seq` is the creation order, which survives restarts (ids are random, so they cannot order).
//!
//! Invariants:
//! - Writes are applied synchronously, in the order the owning actor makes them (a sled insert
//!   is an in-memory operation), and are durable only once the returned [`Flush`] is awaited.
//!   Callers acknowledge a state change only after that.
//! - A change that touches several rows is one atomic batch.
//! - No sled type leaves this module, so another engine could replace it here alone.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::approvals::ApprovalRecord;
use crate::grants::Grant;
use crate::halts::Halt;
use crate::pins::Pin;
use crate::taint::TaintedSession;

/// The schema this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;
const SCHEMA_KEY: &[u8] = b"meta/schema_version";
const APPROVALS_TREE: &[u8] = b"approvals";
const GRANTS_TREE: &[u8] = b"grants";
const HALTS_TREE: &[u8] = b"halts";
const PINS_TREE: &[u8] = b"pins";
const SPECS_TREE: &[u8] = b"openapi_specs";
const TAINT_TREE: &[u8] = b"taint";
/// The page cache sled may use; its default (1 GiB) is far beyond what approvals need.
const CACHE_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store: {0}")]
    Open(String),
    #[error("the store has schema version {found}; this build supports up to {SCHEMA_VERSION}")]
    NewerSchema { found: u32 },
    #[error("the store schema version is unreadable: {0:?}")]
    BadSchema(String),
    #[error("store I/O failed: {0}")]
    Io(String),
    #[error("cannot encode a store row: {0}")]
    Encode(String),
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Io(e.to_string())
    }
}

/// A handle on the open store. Clones share one database; the files are released when the last
/// clone is dropped.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    approvals: sled::Tree,
    grants: sled::Tree,
    halts: sled::Tree,
    pins: sled::Tree,
    specs: sled::Tree,
    taint: sled::Tree,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

/// A stored row: the record and its creation order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Row<T> {
    pub(crate) seq: u64,
    pub(crate) record: T,
}

#[derive(Serialize)]
struct RowOut<'a, T> {
    seq: u64,
    record: &'a T,
}

#[derive(Deserialize)]
struct RowIn<T> {
    seq: u64,
    record: T,
}

/// One change to a tree: rows to write (in order; the last write of an id wins), then ids to
/// delete, applied atomically.
pub(crate) struct Change<'a, T> {
    pub(crate) puts: Vec<(u64, &'a T)>,
    pub(crate) deletes: Vec<&'a str>,
}

impl<T> Default for Change<'_, T> {
    fn default() -> Self {
        Change {
            puts: Vec::new(),
            deletes: Vec::new(),
        }
    }
}

impl<T> Change<'_, T> {
    pub(crate) fn is_empty(&self) -> bool {
        self.puts.is_empty() && self.deletes.is_empty()
    }
}

/// The durability of writes already applied: await [`Flush::durable`] before acknowledging them.
#[must_use = "a write is durable only once its flush is awaited"]
pub(crate) struct Flush(Option<sled::Tree>);

impl Flush {
    /// Nothing to wait for (no write, or no store).
    pub(crate) fn none() -> Flush {
        Flush(None)
    }

    /// The same, blocking the calling thread: for start-up, where the store is opened too.
    #[expect(
        clippy::disallowed_methods,
        reason = "start-up only, like `Store::open`; no request is waiting on this thread yet"
    )]
    pub(crate) fn durable_now(self) -> Result<(), StoreError> {
        match self.0 {
            Some(tree) => tree.flush().map(drop).map_err(StoreError::from),
            None => Ok(()),
        }
    }

    /// Resolves once every write applied before this flush was made is on disk.
    pub(crate) async fn durable(self) -> Result<(), StoreError> {
        match self.0 {
            // One flush covers every tree: sled has a single page cache per database.
            Some(tree) => tree.flush_async().await.map(drop).map_err(StoreError::from),
            None => Ok(()),
        }
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`. Blocks on file I/O: call it at start-up.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let db = open_db(dir).map_err(|e| StoreError::Open(format!("{}: {e}", dir.display())))?;
        match db.get(SCHEMA_KEY)? {
            None => {
                // Made durable by the first flush of a real write; a store that dies before
                // that holds nothing else and is simply initialised again.
                db.insert(SCHEMA_KEY, SCHEMA_VERSION.to_string().as_bytes())?;
            }
            Some(raw) => {
                let text = String::from_utf8_lossy(&raw).into_owned();
                let found: u32 = text.parse().map_err(|_| StoreError::BadSchema(text))?;
                if found > SCHEMA_VERSION {
                    return Err(StoreError::NewerSchema { found });
                }
            }
        }
        let approvals = db.open_tree(APPROVALS_TREE)?;
        let grants = db.open_tree(GRANTS_TREE)?;
        let halts = db.open_tree(HALTS_TREE)?;
        let pins = db.open_tree(PINS_TREE)?;
        let specs = db.open_tree(SPECS_TREE)?;
        let taint = db.open_tree(TAINT_TREE)?;
        Ok(Store {
            db,
            approvals,
            grants,
            halts,
            pins,
            specs,
            taint,
        })
    }

    /// The cached copy of the OpenAPI spec at `url`, if any.
    pub fn spec(&self, url: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.specs.get(url.as_bytes())?.map(|v| v.to_vec()))
    }

    /// Replaces the cached copy of the OpenAPI spec at `url`; durable once this resolves.
    pub async fn put_spec(&self, url: &str, copy: &[u8]) -> Result<(), StoreError> {
        self.specs.insert(url.as_bytes(), copy)?;
        self.specs.flush_async().await?;
        Ok(())
    }

    /// The schema version recorded in the store.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        let raw = self
            .db
            .get(SCHEMA_KEY)?
            .ok_or_else(|| StoreError::BadSchema(String::new()))?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        text.parse().map_err(|_| StoreError::BadSchema(text))
    }

    pub(crate) fn load_approvals(&self) -> Result<Vec<Row<ApprovalRecord>>, StoreError> {
        load(&self.approvals, "approval")
    }

    pub(crate) fn write_approvals(
        &self,
        change: &Change<'_, ApprovalRecord>,
    ) -> Result<Flush, StoreError> {
        write(&self.approvals, change)
    }

    pub(crate) fn load_grants(&self) -> Result<Vec<Row<Grant>>, StoreError> {
        load(&self.grants, "grant")
    }

    pub(crate) fn write_grants(&self, change: &Change<'_, Grant>) -> Result<Flush, StoreError> {
        write(&self.grants, change)
    }

    pub(crate) fn load_halts(&self) -> Result<Vec<Row<Halt>>, StoreError> {
        load(&self.halts, "halt")
    }

    pub(crate) fn write_halts(&self, change: &Change<'_, Halt>) -> Result<Flush, StoreError> {
        write(&self.halts, change)
    }

    pub(crate) fn load_taint(&self) -> Result<Vec<Row<TaintedSession>>, StoreError> {
        load(&self.taint, "taint")
    }

    pub(crate) fn write_taint(
        &self,
        change: &Change<'_, TaintedSession>,
    ) -> Result<Flush, StoreError> {
        write(&self.taint, change)
    }

    pub(crate) fn load_pins(&self) -> Result<Vec<Row<Pin>>, StoreError> {
        load(&self.pins, "pin")
    }

    pub(crate) fn write_pins(&self, change: &Change<'_, Pin>) -> Result<Flush, StoreError> {
        write(&self.pins, change)
    }

    /// Records a schema version, for tests of the refusal path.
    #[cfg(test)]
    pub(crate) fn set_schema_version_for_test(&self, version: u32) -> Result<(), StoreError> {
        self.db.insert(SCHEMA_KEY, version.to_string().as_bytes())?;
        Ok(())
    }
}

/// Every decodable row, in creation order. A row that cannot be decoded is skipped with an
/// error log: one damaged record must not keep every other approval and grant unavailable.
/// How long `open` waits for the database's file lock. sled releases it from its own threads a
/// moment after the last handle is dropped, so a store reopened in the same process (a restarted
/// actor) may find it still held; another process holding it is refused once this has passed.
const LOCK_WAIT: Duration = Duration::from_secs(2);
const LOCK_RETRY: Duration = Duration::from_millis(10);

#[expect(
    clippy::disallowed_methods,
    reason = "start-up only, like the file I/O of opening; bounded by LOCK_WAIT"
)]
fn open_db(dir: &Path) -> sled::Result<sled::Db> {
    // Owner-only when created: approvals hold the calls' arguments. An existing directory
    // keeps the mode its owner gave it.
    if !dir.exists() {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let config = sled::Config::new().path(dir).cache_capacity(CACHE_BYTES);
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match config.open() {
            Err(sled::Error::Io(e))
                if e.to_string().starts_with("could not acquire lock")
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(LOCK_RETRY);
            }
            other => return other,
        }
    }
}

fn load<T: DeserializeOwned>(tree: &sled::Tree, what: &str) -> Result<Vec<Row<T>>, StoreError> {
    let mut rows = Vec::new();
    for item in tree.iter() {
        let (key, value) = item?;
        match serde_json::from_slice::<RowIn<T>>(&value) {
            Ok(row) => rows.push(Row {
                seq: row.seq,
                record: row.record,
            }),
            Err(e) => tracing::error!(
                key = %String::from_utf8_lossy(&key),
                error = %e,
                "skipping an undecodable {what} row"
            ),
        }
    }
    rows.sort_by_key(|row| row.seq);
    Ok(rows)
}

fn write<T: Serialize + Keyed>(
    tree: &sled::Tree,
    change: &Change<'_, T>,
) -> Result<Flush, StoreError> {
    if change.is_empty() {
        return Ok(Flush::none());
    }
    let mut batch = sled::Batch::default();
    // Puts first: a row written and pruned by the same change must end up deleted.
    for (seq, record) in &change.puts {
        let bytes = encode(*seq, *record)?;
        batch.insert(record.key().as_bytes(), bytes);
    }
    for id in &change.deletes {
        batch.remove(id.as_bytes());
    }
    tree.apply_batch(batch)?;
    Ok(Flush(Some(tree.clone())))
}

fn encode<T: Serialize>(seq: u64, record: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(&RowOut { seq, record }).map_err(|e| StoreError::Encode(e.to_string()))
}

/// A record stored under its id.
pub(crate) trait Keyed {
    fn key(&self) -> &str;
}

impl Keyed for ApprovalRecord {
    fn key(&self) -> &str {
        &self.id
    }
}

impl Keyed for Grant {
    fn key(&self) -> &str {
        &self.id
    }
}

impl Keyed for Halt {
    fn key(&self) -> &str {
        &self.id
    }
}

impl Keyed for TaintedSession {
    fn key(&self) -> &str {
        &self.id
    }
}

impl Keyed for Pin {
    fn key(&self) -> &str {
        &self.id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_store_records_the_schema_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        drop(store);
        let reopened = Store::open(dir.path()).unwrap();
        assert_eq!(reopened.schema_version().unwrap(), SCHEMA_VERSION);
    }

    #[test]
    fn a_store_from_a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .set_schema_version_for_test(SCHEMA_VERSION + 1)
            .unwrap();
        drop(store);
        let err = Store::open(dir.path()).unwrap_err();
        assert_eq!(
            err,
            StoreError::NewerSchema {
                found: SCHEMA_VERSION + 1
            }
        );
    }

    #[test]
    fn a_store_held_open_elsewhere_is_refused_after_the_lock_wait() {
        let dir = tempfile::tempdir().unwrap();
        let _held = Store::open(dir.path()).unwrap();
        let started = Instant::now();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(started.elapsed() >= LOCK_WAIT, "{:?}", started.elapsed());
        let StoreError::Open(text) = err else {
            panic!("{err:?}")
        };
        assert!(text.contains("could not acquire lock"), "{text}");
    }

    #[actix_rt::test]
    async fn spec_copies_are_kept_per_url_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.spec("https://a.example/spec").unwrap(), None);
        store
            .put_spec("https://a.example/spec", b"v1")
            .await
            .unwrap();
        store
            .put_spec("https://a.example/spec", b"v2")
            .await
            .unwrap();
        store
            .put_spec("https://b.example/spec", b"b")
            .await
            .unwrap();
        drop(store);
        let reopened = Store::open(dir.path()).unwrap();
        assert_eq!(
            reopened.spec("https://a.example/spec").unwrap().as_deref(),
            Some(&b"v2"[..])
        );
        assert_eq!(
            reopened.spec("https://b.example/spec").unwrap().as_deref(),
            Some(&b"b"[..])
        );
    }

    #[test]
    fn a_store_in_use_cannot_be_opened_twice() {
        let dir = tempfile::tempdir().unwrap();
        let _store = Store::open(dir.path()).unwrap();
        assert!(matches!(Store::open(dir.path()), Err(StoreError::Open(_))));
    }
}
