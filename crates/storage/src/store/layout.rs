//! Where rows go on disk: a segment never straddles a partition (an hour, a day for the
//! rollups), its path names its table and partition, and rows are written sorted as
//! [`crate::segment`] wants them. Files the catalog does not list are leftovers of a crash and
//! are removed at open.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{RecordBatch, TimestampNanosecondArray, UInt32Array};
use arrow::compute::take_record_batch;
use sightline_model::Table;

use super::Inner;
use crate::catalog::SegmentMeta;
use crate::error::Result;
use crate::segment;

pub(super) const NS_PER_HOUR: i64 = 3_600_000_000_000;
pub(super) const NS_PER_DAY: i64 = 24 * NS_PER_HOUR;

/// The stretch of time one segment covers at most: an hour, and a day for the rollups (a day of
/// them is a few tens of thousands of rows, so that a day's pages open one file, not 24).
pub(super) fn partition_ns(table: Table) -> i64 {
    match table {
        Table::SpanRollups => NS_PER_DAY,
        Table::Spans | Table::Logs | Table::Metrics => NS_PER_HOUR,
    }
}

static SEGMENT_COUNTER: AtomicU64 = AtomicU64::new(0);

fn segment_relative_path(table: Table, partition_start_ns: i64, created_ns: i64) -> String {
    let format = if partition_ns(table) == NS_PER_DAY {
        "%Y-%m-%d"
    } else {
        "%Y-%m-%d/%H"
    };
    let partition = chrono::DateTime::from_timestamp_nanos(partition_start_ns).format(format);
    let n = SEGMENT_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "segments/{}/{partition}/{created_ns}-{n}.parquet",
        table.name()
    )
}

/// Splits rows by the partition of their time column: segments never straddle one.
fn split_by_partition(table: Table, batch: &RecordBatch) -> Result<Vec<(i64, RecordBatch)>> {
    let partition = partition_ns(table);
    let Some(times) = batch
        .column_by_name(table.time_column())
        .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
    else {
        return Ok(Vec::new());
    };
    let mut groups: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
    for (i, t) in times.values().iter().enumerate() {
        groups
            .entry(t.div_euclid(partition))
            .or_default()
            .push(i as u32);
    }
    if groups.len() == 1 {
        let first = groups.keys().next().copied().unwrap_or_default();
        return Ok(vec![(first * partition, batch.clone())]);
    }
    groups
        .into_iter()
        .map(|(n, indices)| {
            let indices = UInt32Array::from(indices);
            Ok((n * partition, take_record_batch(batch, &indices)?))
        })
        .collect()
}

/// Writes rows as one segment per partition (not yet listed in the catalog); every file written
/// is pushed to `written`, so that a failure later on can remove them.
pub(super) fn write_rows_as_segments(
    inner: &Inner,
    table: Table,
    batch: &RecordBatch,
    level: i64,
    written: &mut Vec<PathBuf>,
) -> Result<Vec<SegmentMeta>> {
    let created_ns = inner.clock.now_ns();
    let mut metas = Vec::new();
    for (partition_start_ns, rows) in split_by_partition(table, batch)? {
        let sorted = segment::sort_for_segment(table, &rows)?;
        let Some((min_time_ns, max_time_ns)) = segment::time_bounds(table, &sorted) else {
            continue;
        };
        let path = segment_relative_path(table, partition_start_ns, created_ns);
        let absolute = inner.data_dir.join(&path);
        let size = segment::write_segment(&absolute, table, &sorted)?;
        written.push(absolute);
        metas.push(SegmentMeta {
            id: 0,
            table,
            path,
            min_time_ns,
            max_time_ns,
            row_count: sorted.num_rows() as i64,
            size_bytes: size as i64,
            created_ns,
            level,
            sampled: false,
        });
    }
    Ok(metas)
}

/// Passes `result` on; when it failed, first removes the segment files written on the way
/// (the catalog never listed them).
pub(super) fn discard_on_error<T>(result: Result<T>, written: Vec<PathBuf>) -> Result<T> {
    if result.is_err() {
        for path in written {
            let _ = std::fs::remove_file(path);
        }
    }
    result
}

/// Deletes segment files (and temporary files) the catalog does not list: leftovers of a crash
/// between writing a file and committing it.
pub(super) fn remove_orphan_segment_files(data_dir: &Path, segments: &[SegmentMeta]) -> usize {
    let known: HashSet<PathBuf> = segments.iter().map(|s| data_dir.join(&s.path)).collect();
    let mut removed = 0;
    let mut stack = vec![data_dir.join("segments")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if !known.contains(&path) && std::fs::remove_file(&path).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}
