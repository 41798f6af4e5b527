//! The injected clock: actors ask it for time so tests can move time by hand.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// A source of monotonic and wall-clock time.
#[derive(Clone)]
pub enum Clock {
    System,
    /// Manual time for tests: starts at the creation instant and moves only with `advance`.
    Manual(Arc<ManualClock>),
}

pub struct ManualClock {
    base: Instant,
    base_wall: SystemTime,
    offset_nanos: AtomicU64,
}

impl Clock {
    pub fn manual() -> (Clock, Arc<ManualClock>) {
        let m = Arc::new(ManualClock {
            base: Instant::now(),
            base_wall: SystemTime::now(),
            offset_nanos: AtomicU64::new(0),
        });
        (Clock::Manual(m.clone()), m)
    }

    pub fn now(&self) -> Instant {
        match self {
            Clock::System => Instant::now(),
            Clock::Manual(m) => m.base + m.offset(),
        }
    }

    pub fn wall(&self) -> SystemTime {
        match self {
            Clock::System => SystemTime::now(),
            Clock::Manual(m) => m.base_wall + m.offset(),
        }
    }
}

impl ManualClock {
    fn offset(&self) -> Duration {
        Duration::from_nanos(self.offset_nanos.load(Ordering::SeqCst))
    }

    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.offset_nanos.fetch_add(nanos, Ordering::SeqCst);
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Clock::System => f.write_str("Clock::System"),
            Clock::Manual(_) => f.write_str("Clock::Manual"),
        }
    }
}
