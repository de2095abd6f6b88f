//! The store's background work, on one schedule: a flush whenever one is due
//! ([`Store::flush_due`]), a maintenance pass every `storage.maintenance_interval`, and — in a
//! folder written before rollups existed — the rollup backfill, retried a minute after an error.
//! Intervals are measured on the injected clock; the loop only wakes on the runtime's timer to
//! look, so a test that moves a manual clock sees the work happen at its next look.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sightline_model::Clock;
use tracing::warn;

use crate::Store;

/// How often the loop looks whether work is due. Short against every interval it serves (the
/// flush interval is seconds), long enough to cost nothing.
pub const LOOK_EVERY: Duration = Duration::from_millis(500);

/// After a failed backfill step, the next try waits this long on the clock.
const BACKFILL_RETRY_NS: i64 = 60_000_000_000;

/// Runs flushes, maintenance and the rollup backfill until `shutdown` completes. The final
/// flush is [`Store::close`]'s, not this loop's.
pub async fn run(store: Store, clock: Arc<dyn Clock>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let maintenance_ns = store.options().storage.maintenance_interval.as_nanos();
    let mut last_maintenance_ns = clock.now_ns();
    let mut backfill = None;
    let mut backfill_retry_at_ns = i64::MIN;
    let mut look = tokio::time::interval(LOOK_EVERY);
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = look.tick() => {}
        }
        let now_ns = clock.now_ns();
        // The backfill runs beside flushes (it reads and writes other files), one step at a
        // time on its own task.
        if backfill
            .as_ref()
            .is_some_and(tokio::task::JoinHandle::is_finished)
            && let Some(done) = backfill.take()
        {
            let outcome: Result<crate::Result<usize>, _> = done.await;
            if let Ok(Err(e)) = outcome {
                warn!(error = %e, "rolling up older spans failed; it is retried in a minute");
                backfill_retry_at_ns = now_ns.saturating_add(BACKFILL_RETRY_NS);
            }
        }
        if backfill.is_none() && !store.rollups_complete() && now_ns >= backfill_retry_at_ns {
            let store = store.clone();
            backfill = Some(tokio::spawn(async move { store.roll_up_older().await }));
        }
        if store.flush_due() {
            // A failed flush is logged by the store and retried at the next look.
            let _ = store.flush().await;
        }
        if now_ns.saturating_sub(last_maintenance_ns) >= maintenance_ns {
            last_maintenance_ns = now_ns;
            if let Err(e) = store.maintain().await {
                warn!(error = %e, "compaction or retention failed; it is retried at the next interval");
            }
        }
    }
    if let Some(backfill) = backfill {
        // It commits after each segment: stopping it between two loses nothing.
        backfill.abort();
    }
}
