//! Rollups for folders written before rollups existed. The first open of such a folder fixes
//! which span segments lack rollups (every span segment listed then, by id); they are rolled up
//! one at a time, each commit recording how far it got, beside flushes and out of compaction's
//! way. Segments flushed later have rollups already and are never rolled up twice, whatever
//! restarts come between.

use std::time::Instant;

use sightline_model::Table;
use tracing::info;

use super::layout::{discard_on_error, write_rows_as_segments};
use super::{Inner, lock, read_state, write_state};
use crate::catalog::{Catalog, SegmentMeta};
use crate::error::Result;
use crate::{rollup, segment};

/// The catalog's `state` key set once every span segment has its rollups.
pub(super) const ROLLUPS_COMPLETE: &str = "span_rollups_complete";
/// Span segments with ids up to this one were written before rollups existed (set once, by the
/// first open of an older folder).
pub(super) const ROLLUPS_OLDER_UP_TO: &str = "span_rollups_older_up_to";
/// Of those, the ones with ids up to this one are rolled up.
pub(super) const ROLLUPS_DONE_UP_TO: &str = "span_rollups_done_up_to";

/// The span segments that still lack rollups, oldest id first; `None` once every span segment
/// has them.
pub(super) fn older_span_segments(
    catalog: &mut Catalog,
    segments: &[SegmentMeta],
) -> Result<Option<Vec<SegmentMeta>>> {
    if catalog.state(ROLLUPS_COMPLETE)? == Some(1) {
        return Ok(None);
    }
    let older_up_to = match catalog.state(ROLLUPS_OLDER_UP_TO)? {
        Some(id) => id,
        None => {
            let id = segments
                .iter()
                .filter(|s| s.table == Table::Spans)
                .map(|s| s.id)
                .max()
                .unwrap_or(0);
            catalog.commit_with_state(Vec::new(), &[], &[(ROLLUPS_OLDER_UP_TO, id)])?;
            id
        }
    };
    let done_up_to = catalog.state(ROLLUPS_DONE_UP_TO)?.unwrap_or(0);
    let mut pending: Vec<SegmentMeta> = segments
        .iter()
        .filter(|s| s.table == Table::Spans && s.id > done_up_to && s.id <= older_up_to)
        .cloned()
        .collect();
    if pending.is_empty() {
        // A new folder, or the last older segment went: every span from now on is rolled up.
        catalog.commit_with_state(Vec::new(), &[], &[(ROLLUPS_COMPLETE, 1)])?;
        return Ok(None);
    }
    pending.sort_by_key(|s| s.id);
    Ok(Some(pending))
}

/// Rolls up the span segments written before rollups existed, one at a time, oldest id first,
/// each in a catalog transaction that also records how far it got: a crash or an error on the
/// way loses at most the segment in hand, and the next call goes on from there. It does not
/// take the flush lock, so flushes go on meanwhile; compaction leaves those segments alone
/// until they are done. Returns the segments rolled up.
pub(super) fn roll_up_older_segments(inner: &Inner) -> Result<usize> {
    let _only_one = lock(&inner.rolling_up);
    let Some(pending) = lock(&inner.rollups_pending).clone() else {
        return Ok(0);
    };
    let spans: i64 = pending.iter().map(|s| s.row_count).sum();
    info!(
        segments = pending.len(),
        spans, "rolling up spans stored before span rollups existed"
    );
    let started = Instant::now();
    for (done, meta) in pending.iter().enumerate() {
        let last = done + 1 == pending.len();
        let mut state: Vec<(&str, i64)> = vec![(ROLLUPS_DONE_UP_TO, meta.id)];
        if last {
            state.push((ROLLUPS_COMPLETE, 1));
        }
        // Retention may have removed it meanwhile: nothing left to roll up.
        let listed = read_state(&inner.state)
            .segments
            .iter()
            .any(|s| s.id == meta.id);
        let mut written = Vec::new();
        let committed = (|| {
            let metas = if listed {
                let batch = segment::read_segment(&inner.data_dir.join(&meta.path), Table::Spans)?;
                let rollups = rollup::from_spans(&batch, &inner.options.latency_thresholds_ns)?;
                write_rows_as_segments(inner, Table::SpanRollups, &rollups, 0, &mut written)?
            } else {
                Vec::new()
            };
            lock(&inner.catalog).commit_with_state(metas, &[], &state)
        })();
        let committed = discard_on_error(committed, written)?;
        write_state(&inner.state).segments.extend(committed);
        {
            let mut pending = lock(&inner.rollups_pending);
            if last {
                *pending = None;
            } else if let Some(left) = pending.as_mut() {
                left.retain(|s| s.id != meta.id);
            }
        }
        if (done + 1) % 50 == 0 {
            info!(
                done = done + 1,
                of = pending.len(),
                "rolling up older spans"
            );
        }
    }
    info!(
        segments = pending.len(),
        seconds = started.elapsed().as_secs_f64(),
        "span rollups complete"
    );
    Ok(pending.len())
}
