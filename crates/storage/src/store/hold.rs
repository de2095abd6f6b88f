//! Holding the log writer before its next write, as a slow disk would: appends then wait in the
//! bounded queue until it is full, and the next one is refused as saturated. It is how a test
//! sees the queue fill without depending on the speed of the machine's disk. Reachable only
//! through [`Store::hold_log_writer`](super::Store::hold_log_writer), never by configuration;
//! when nobody holds it, passing costs one atomic load per group.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct HoldState {
    held: bool,
    /// The writer is waiting at the hold with a group in hand.
    waiting: bool,
}

/// The gate the log writer passes before each group.
#[derive(Debug, Default)]
pub(super) struct Hold {
    held: AtomicBool,
    state: Mutex<HoldState>,
    changed: Condvar,
}

impl Hold {
    /// Called by the log writer before it writes a group: returns at once unless held, else
    /// once the hold is released.
    pub(super) fn pass(&self) {
        if !self.held.load(Ordering::Acquire) {
            return;
        }
        let mut state = self.lock();
        while state.held {
            state.waiting = true;
            self.changed.notify_all();
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        state.waiting = false;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HoldState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, held: bool) {
        let mut state = self.lock();
        state.held = held;
        self.held.store(held, Ordering::Release);
        self.changed.notify_all();
    }
}

/// The log writer, held: it stops before writing its next group until this value is dropped.
/// Appends taken into that group, and those that fit in the queue behind it, wait; the rest are
/// refused as [`Error::Saturated`](crate::Error::Saturated).
#[derive(Debug)]
pub struct HeldLogWriter {
    hold: Arc<Hold>,
}

impl HeldLogWriter {
    pub(super) fn new(hold: Arc<Hold>) -> Self {
        hold.set(true);
        Self { hold }
    }

    /// Waits (blocking) until the writer stands at the hold with a group in hand, at most
    /// `timeout`; whether it does.
    pub fn wait_until_waiting(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.hold.lock();
        while !state.waiting {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .hold
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

impl Drop for HeldLogWriter {
    fn drop(&mut self) {
        self.hold.set(false);
    }
}
