//! Flushes and imports: rows become segments, and the catalog lists them in one transaction —
//! with the new log checkpoint for a flush, so the log files below it can go.

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use sightline_model::schema::schema_for;
use sightline_model::{Signal, Table};

use super::layout::{discard_on_error, write_rows_as_segments};
use super::{FlushReport, Inner, lock, read_state, write_state};
use crate::error::Result;
use crate::{rollup, wal};

/// Writes the flushing rows of every table as segments and commits them with `checkpoint`;
/// then drops those rows from the buffer and deletes the log files below the checkpoint.
pub(super) fn write_flushing(inner: &Inner, checkpoint: u64) -> Result<FlushReport> {
    let flushing: Vec<(Table, Vec<RecordBatch>)> = {
        let state = read_state(&inner.state);
        state
            .buffers
            .iter()
            .map(|(t, b)| (*t, b.flushing.clone()))
            .collect()
    };
    let mut report = FlushReport::default();
    let mut written = Vec::new();
    let result = (|| {
        let mut metas = Vec::new();
        for (table, batches) in &flushing {
            if batches.is_empty() {
                continue;
            }
            let batch = concat_batches(&schema_for(*table), batches)?;
            if table.signal().is_some() {
                report.rows += batch.num_rows();
            }
            metas.extend(write_rows_as_segments(
                inner,
                *table,
                &batch,
                0,
                &mut written,
            )?);
        }
        lock(&inner.catalog).commit(metas, &[], Some(checkpoint))
    })();
    let committed = discard_on_error(result, written)?;
    report.segments_written = committed.len();
    report.bytes = committed.iter().map(|m| m.size_bytes as u64).sum();
    {
        let mut state = write_state(&inner.state);
        state.segments.extend(committed);
        state.finish_flush();
    }
    let wal_dir = inner.data_dir.join("wal");
    for seq in wal::list_files(&wal_dir)? {
        if seq < checkpoint {
            let _ = std::fs::remove_file(wal::file_path(&wal_dir, seq));
        }
    }
    Ok(report)
}

/// Writes rows of `signal` straight into segments (and their rollups, for spans), listed in one
/// catalog transaction.
pub(super) fn import_blocking(
    inner: &Inner,
    signal: Signal,
    batch: &RecordBatch,
) -> Result<FlushReport> {
    let mut written = Vec::new();
    let committed = (|| {
        let mut metas = write_rows_as_segments(inner, signal.table(), batch, 0, &mut written)?;
        if let Some(rollups) = rollup::derived(signal, batch, &inner.options.latency_thresholds_ns)?
        {
            metas.extend(write_rows_as_segments(
                inner,
                Table::SpanRollups,
                &rollups,
                0,
                &mut written,
            )?);
        }
        lock(&inner.catalog).commit(metas, &[], None)
    })();
    let committed = discard_on_error(committed, written)?;
    let report = FlushReport {
        segments_written: committed.len(),
        rows: committed
            .iter()
            .filter(|m| m.table == signal.table())
            .map(|m| m.row_count as usize)
            .sum(),
        bytes: committed.iter().map(|m| m.size_bytes as u64).sum(),
    };
    write_state(&inner.state).segments.extend(committed);
    Ok(report)
}
