//! The in-memory buffer: per table, the batches that are durable in the log and visible to
//! queries but not yet in segments. A flush moves a table's `active` batches to `flushing` when
//! the log rotates, and drops them once their segments are committed.

use std::collections::HashMap;

use arrow::array::RecordBatch;
use sightline_model::Table;

use crate::catalog::SegmentMeta;

/// One table's buffered rows.
#[derive(Debug, Default)]
pub(super) struct TableBuffer {
    /// Rows appended since the last rotation of the log.
    pub active: Vec<RecordBatch>,
    /// Rows of log files below the checkpoint being written, being written to segments.
    pub flushing: Vec<RecordBatch>,
    pub active_rows: usize,
    pub bytes: u64,
    /// When the oldest active row was buffered (the store's clock, ns).
    pub oldest_active_ns: Option<i64>,
}

impl TableBuffer {
    /// Rows buffered, active and flushing.
    pub fn rows(&self) -> usize {
        self.active_rows
            + self
                .flushing
                .iter()
                .map(RecordBatch::num_rows)
                .sum::<usize>()
    }
}

/// What queries see: the buffer of every table and the segments the catalog lists.
#[derive(Debug, Default)]
pub(super) struct State {
    pub buffers: HashMap<Table, TableBuffer>,
    pub segments: Vec<SegmentMeta>,
}

impl State {
    /// Puts a durable batch into its table's buffer.
    pub fn buffer_batch(&mut self, table: Table, batch: RecordBatch, now_ns: i64) {
        let buffer = self.buffers.entry(table).or_default();
        buffer.active_rows += batch.num_rows();
        buffer.bytes += batch_bytes(&batch);
        buffer.oldest_active_ns.get_or_insert(now_ns);
        buffer.active.push(batch);
    }

    /// Bytes held by every table's buffer.
    pub fn buffered_bytes(&self) -> u64 {
        self.buffers.values().map(|b| b.bytes).sum()
    }

    /// Moves every table's active rows to the flushing set (the log has just rotated).
    pub fn start_flush(&mut self) {
        for buffer in self.buffers.values_mut() {
            let active = std::mem::take(&mut buffer.active);
            buffer.flushing.extend(active);
            buffer.active_rows = 0;
            buffer.oldest_active_ns = None;
        }
    }

    /// Drops the flushing rows, now in segments, and gives their bytes back.
    pub fn finish_flush(&mut self) {
        for buffer in self.buffers.values_mut() {
            let flushed_bytes: u64 = buffer.flushing.iter().map(batch_bytes).sum();
            buffer.flushing.clear();
            buffer.bytes = buffer.bytes.saturating_sub(flushed_bytes);
        }
    }
}

/// The bytes a buffered batch holds. Batches read back from the log share one buffer per record
/// between their columns, so each column's own slice is counted, not the whole buffer per column.
pub(super) fn batch_bytes(batch: &RecordBatch) -> u64 {
    batch
        .columns()
        .iter()
        .map(|c| {
            c.to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| c.get_array_memory_size()) as u64
        })
        .sum()
}
