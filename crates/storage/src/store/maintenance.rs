//! Maintenance, one pass at a time: tail sampling rewrites hours of spans older than
//! `sampling.full_fidelity` ([`super::sampling`]), retention drops segments entirely past their
//! table's age limit, compaction merges small segments of one partition (rollup rows of the same minute and
//! grouping become one), and replaced files are deleted once no running query can still be
//! reading them (`storage.delete_grace` on the store's clock).

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use arrow::compute::concat_batches;
use sightline_model::Table;
use sightline_model::schema::schema_for;
use tracing::info;

use super::layout::{discard_on_error, partition_ns, write_rows_as_segments};
use super::{Inner, MaintenanceReport, lock, read_state, write_state};
use crate::catalog::SegmentMeta;
use crate::error::Result;
use crate::{rollup, segment};

/// A partition counts as over this long after its end (late rows have stopped coming), so its
/// small segments are merged even when fewer than four.
const PARTITION_SETTLE_NS: i64 = 5 * 60 * 1_000_000_000;

pub(super) fn maintain_blocking(inner: &Inner) -> Result<MaintenanceReport> {
    let mut report = MaintenanceReport::default();
    let now_ns = inner.clock.now_ns();
    // Sampling first: the hours it rewrites are then compacted with the rest.
    report.sampling = super::sampling::sample_blocking(inner, now_ns)?;
    // Retention: segments entirely older than each table's limit.
    let expired: Vec<SegmentMeta> = {
        let state = read_state(&inner.state);
        state
            .segments
            .iter()
            .filter(|s| {
                inner
                    .options
                    .retention
                    .of(s.table)
                    .as_nanos()
                    .is_some_and(|keep_ns| s.max_time_ns < now_ns.saturating_sub(keep_ns))
            })
            .cloned()
            .collect()
    };
    if !expired.is_empty() {
        let ids: Vec<i64> = expired.iter().map(|s| s.id).collect();
        lock(&inner.catalog).commit(Vec::new(), &ids, None)?;
        replace_segments(inner, &ids, Vec::new());
        report.segments_expired = expired.len();
        info!(
            segments = expired.len(),
            "segments past their retention removed"
        );
    }
    // Compaction: small segments of the same table and partition are merged.
    for (table, inputs) in compaction_candidates(inner, now_ns) {
        let level = inputs.iter().map(|s| s.level).max().unwrap_or(0) + 1;
        let mut batches = Vec::with_capacity(inputs.len());
        for meta in &inputs {
            batches.push(segment::read_segment(
                &inner.data_dir.join(&meta.path),
                table,
            )?);
        }
        let merged = match table {
            // Rows of the same minute and grouping become one.
            Table::SpanRollups => rollup::merge(&batches)?,
            Table::Spans | Table::Logs | Table::Metrics => {
                concat_batches(&schema_for(table), &batches)?
            }
        };
        let sampled = inputs.iter().all(|s| s.sampled);
        let mut written = Vec::new();
        let outputs = write_rows_as_segments(inner, table, &merged, level, &mut written).map(|m| {
            m.into_iter()
                .map(|meta| SegmentMeta { sampled, ..meta })
                .collect::<Vec<_>>()
        });
        let outputs = discard_on_error(outputs, written)?;
        let ids: Vec<i64> = inputs.iter().map(|s| s.id).collect();
        let committed = lock(&inner.catalog).commit(outputs, &ids, None)?;
        replace_segments(inner, &ids, committed);
        report.segments_compacted += inputs.len();
        info!(%table, inputs = inputs.len(), rows = merged.num_rows(), "segments compacted");
    }
    // Files replaced a while ago are no longer read by any query.
    let grace_ns = inner.options.storage.delete_grace.as_nanos();
    let due: Vec<PathBuf> = {
        let mut pending = lock(&inner.pending_deletes);
        let (due, keep): (Vec<_>, Vec<_>) = pending
            .drain(..)
            .partition(|(_, replaced_ns)| now_ns.saturating_sub(*replaced_ns) >= grace_ns);
        *pending = keep;
        due.into_iter().map(|(p, _)| p).collect()
    };
    for path in due {
        if std::fs::remove_file(&path).is_ok() {
            report.files_deleted += 1;
        }
    }
    Ok(report)
}

/// Removes segments from the live list, adds their replacements, and schedules the old files'
/// deletion after the grace period.
pub(super) fn replace_segments(inner: &Inner, removed: &[i64], added: Vec<SegmentMeta>) {
    let mut old_paths = Vec::new();
    {
        let mut state = write_state(&inner.state);
        state.segments.retain(|s| {
            let keep = !removed.contains(&s.id);
            if !keep {
                old_paths.push(inner.data_dir.join(&s.path));
            }
            keep
        });
        state.segments.extend(added);
    }
    inner.trace_index.forget(&old_paths);
    let replaced_ns = inner.clock.now_ns();
    let mut pending = lock(&inner.pending_deletes);
    pending.extend(old_paths.into_iter().map(|p| (p, replaced_ns)));
}

/// Groups of small segments worth merging: per table and partition, at least four small ones,
/// or two once the partition is over (so the current hour is not rewritten after every flush).
fn compaction_candidates(inner: &Inner, now_ns: i64) -> Vec<(Table, Vec<SegmentMeta>)> {
    let target = inner.options.storage.compaction_target_rows;
    // Span segments still waiting for their rollups stay as they are until then.
    let waiting: HashSet<i64> = lock(&inner.rollups_pending)
        .as_ref()
        .map(|p| p.iter().map(|s| s.id).collect())
        .unwrap_or_default();
    let state = read_state(&inner.state);
    // Sampled and unsampled segments are never merged: an hour is sampled once, whole.
    let mut groups: BTreeMap<(Table, i64, bool), Vec<SegmentMeta>> = BTreeMap::new();
    for s in state
        .segments
        .iter()
        .filter(|s| s.row_count < target && !waiting.contains(&s.id))
    {
        groups
            .entry((
                s.table,
                s.min_time_ns.div_euclid(partition_ns(s.table)),
                s.sampled,
            ))
            .or_default()
            .push(s.clone());
    }
    let mut out = Vec::new();
    for ((table, partition, _), mut small) in groups {
        let over = (partition + 1) * partition_ns(table) + PARTITION_SETTLE_NS < now_ns;
        if small.len() < 2 || (small.len() < 4 && !over) {
            continue;
        }
        small.sort_by_key(|s| s.row_count);
        let mut picked = Vec::new();
        let mut rows = 0;
        for s in small {
            if picked.len() >= 2 && rows + s.row_count > target * 2 {
                break;
            }
            rows += s.row_count;
            picked.push(s);
            if picked.len() >= 32 {
                break;
            }
        }
        if picked.len() >= 2 {
            out.push((table, picked));
        }
    }
    out
}
