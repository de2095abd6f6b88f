//! The store's background work, on one schedule: a flush whenever one is due
//! ([`Store::flush_due`]), a maintenance pass every `storage.maintenance_interval`, and — in a
//! folder written before rollups existed — the rollup backfill, retried a minute after an error.
//! Intervals are measured on the injected clock; [`run`] only wakes on the runtime's timer to
//! [`Schedule::look`] whether work is due, so a test drives the same decisions by moving a
//! manual clock and calling `look` itself.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sightline_model::Clock;
use tracing::warn;

use crate::Store;

/// How often [`run`] looks whether work is due. Short against every interval it serves (the
/// flush interval is seconds), long enough to cost nothing.
pub const LOOK_EVERY: Duration = Duration::from_millis(500);

/// After a failed backfill step, the next try waits this long on the clock.
const BACKFILL_RETRY_NS: i64 = 60_000_000_000;

/// Runs flushes, maintenance and the rollup backfill until `shutdown` completes. The final
/// flush is [`Store::close`]'s, not this loop's.
pub async fn run(store: Store, clock: Arc<dyn Clock>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut schedule = Schedule::new(store, clock);
    let mut look = tokio::time::interval(LOOK_EVERY);
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = look.tick() => {}
        }
        schedule.look().await;
    }
    schedule.stop();
}

/// What one look did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Looked {
    /// A flush ran (it may have failed; the store logs and counts that).
    pub flushed: bool,
    /// A maintenance pass ran.
    pub maintained: bool,
    /// A backfill of older rollups was started.
    pub backfill_started: bool,
}

/// The schedule's memory between looks: when maintenance last ran and the backfill in hand.
pub struct Schedule {
    store: Store,
    clock: Arc<dyn Clock>,
    last_maintenance_ns: i64,
    backfill: Option<tokio::task::JoinHandle<crate::Result<usize>>>,
    backfill_retry_at_ns: i64,
}

impl Schedule {
    /// A schedule starting now: the first maintenance pass comes one interval from now.
    pub fn new(store: Store, clock: Arc<dyn Clock>) -> Self {
        let last_maintenance_ns = clock.now_ns();
        Self {
            store,
            clock,
            last_maintenance_ns,
            backfill: None,
            backfill_retry_at_ns: i64::MIN,
        }
    }

    /// Does what is due now: starts the backfill (it runs beside flushes, on its own task, one
    /// segment at a time), flushes, and runs maintenance once its interval has passed.
    pub async fn look(&mut self) -> Looked {
        let mut looked = Looked::default();
        let now_ns = self.clock.now_ns();
        if self
            .backfill
            .as_ref()
            .is_some_and(tokio::task::JoinHandle::is_finished)
            && let Some(done) = self.backfill.take()
        {
            let failure = match done.await {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(e) => Some(format!("the backfill task ended: {e}")),
            };
            if let Some(error) = failure {
                warn!(%error, "rolling up older spans failed; it is retried in a minute");
                self.backfill_retry_at_ns = now_ns.saturating_add(BACKFILL_RETRY_NS);
            }
        }
        if self.backfill.is_none()
            && !self.store.rollups_complete()
            && now_ns >= self.backfill_retry_at_ns
        {
            let store = self.store.clone();
            self.backfill = Some(tokio::spawn(async move { store.roll_up_older().await }));
            looked.backfill_started = true;
        }
        if self.store.flush_due() {
            // A failed flush is logged by the store and retried at the next look.
            let _ = self.store.flush().await;
            looked.flushed = true;
        }
        let interval_ns = self.store.options().storage.maintenance_interval.as_nanos();
        if now_ns.saturating_sub(self.last_maintenance_ns) >= interval_ns {
            self.last_maintenance_ns = now_ns;
            if let Err(e) = self.store.maintain().await {
                warn!(error = %e, "compaction or retention failed; it is retried at the next interval");
            }
            looked.maintained = true;
        }
        looked
    }

    /// Lets go of the backfill in hand: no further segment is started by this schedule. A segment
    /// already being rolled up finishes on its blocking thread (each commits on its own, so
    /// stopping between two loses nothing).
    pub fn stop(self) {
        if let Some(backfill) = self.backfill {
            backfill.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{StorageConfig, StoreOptions};
    use sightline_model::schema::{SpanRow, spans_to_batch};
    use sightline_model::{HumanDuration, ManualClock, Signal, SpanKind};

    const SECOND_NS: i64 = 1_000_000_000;

    fn spans(n: usize, start_ns: i64) -> arrow::array::RecordBatch {
        let rows: Vec<SpanRow> = (0..n)
            .map(|i| {
                let start = start_ns + i as i64;
                SpanRow {
                    kind: SpanKind::Server,
                    ..SpanRow::new(
                        format!("{i:032x}"),
                        format!("{i:016x}"),
                        "op",
                        "api",
                        start,
                        start + 10,
                    )
                }
            })
            .collect();
        spans_to_batch(&rows).expect("rows")
    }

    #[tokio::test]
    async fn rows_are_flushed_when_the_clock_says_they_waited_and_maintenance_runs_on_its_interval()
    {
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = ManualClock::new(1_000 * 3600 * SECOND_NS);
        let options = StoreOptions {
            storage: StorageConfig {
                flush_interval: HumanDuration::from_secs(10),
                maintenance_interval: HumanDuration::from_secs(60),
                ..StorageConfig::default()
            },
            ..StoreOptions::default()
        };
        let (store, _) = Store::open(dir.path(), options, Arc::new(clock.clone())).expect("open");
        let mut schedule = Schedule::new(store.clone(), Arc::new(clock.clone()));
        store
            .append(vec![(Signal::Spans, spans(5, clock.now_ns()))])
            .await
            .expect("append");
        assert_eq!(
            schedule.look().await,
            Looked::default(),
            "nothing is due yet"
        );
        clock.advance_ns(9 * SECOND_NS);
        assert!(
            !schedule.look().await.flushed,
            "9 s is less than the interval"
        );
        clock.advance_ns(SECOND_NS);
        let looked = schedule.look().await;
        assert!(looked.flushed && !looked.maintained, "{looked:?}");
        assert_eq!(store.stats().flushes, 1);
        assert_eq!(store.stats().buffered_rows.values().sum::<u64>(), 0);
        assert!(!schedule.look().await.flushed, "an empty buffer is not due");
        clock.advance_ns(50 * SECOND_NS);
        assert!(
            schedule.look().await.maintained,
            "60 s after the schedule began"
        );
        assert!(!schedule.look().await.maintained, "and not again at once");
        schedule.stop();
    }
}
