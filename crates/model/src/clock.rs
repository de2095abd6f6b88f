//! Time is injected: only [`SystemClock`] reads the real clock, so tests control time.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// A source of the current time as nanoseconds since the Unix epoch (UTC).
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now, in nanoseconds since the Unix epoch (UTC).
    fn now_ns(&self) -> i64;
}

/// The machine's real-time clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ns(&self) -> i64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        i64::try_from(now.as_nanos()).unwrap_or(i64::MAX)
    }
}

/// A clock that moves only when told to; for tests.
#[derive(Debug, Default, Clone)]
pub struct ManualClock {
    now_ns: Arc<AtomicI64>,
}

impl ManualClock {
    /// A clock that reads `now_ns` until moved.
    pub fn new(now_ns: i64) -> Self {
        Self {
            now_ns: Arc::new(AtomicI64::new(now_ns)),
        }
    }

    /// Moves the clock to `now_ns`.
    pub fn set_ns(&self, now_ns: i64) {
        self.now_ns.store(now_ns, Ordering::SeqCst);
    }

    /// Moves the clock forward by `by_ns`.
    pub fn advance_ns(&self, by_ns: i64) {
        self.now_ns.fetch_add(by_ns, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ns(&self) -> i64 {
        self.now_ns.load(Ordering::SeqCst)
    }
}
