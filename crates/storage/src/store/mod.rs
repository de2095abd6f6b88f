//! [`Store`]: the write-ahead log writer thread ([`log_writer`]), the buffer ([`buffer`]), where
//! segments go ([`layout`]), flushes and imports ([`flush`]), maintenance ([`maintenance`]), the
//! rollups of older folders ([`backfill`]) and opening a folder ([`recovery`]).

mod backfill;
mod buffer;
mod flush;
mod hold;
mod layout;
mod log_writer;
mod maintenance;
mod recovery;
mod sampling;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use arrow::array::RecordBatch;
use sightline_model::schema::schema_for;
use sightline_model::{Clock, Signal, Table, TimeRange};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::catalog::{Catalog, SegmentMeta};
use crate::config::StoreOptions;
use crate::error::{Error, Result};
use crate::trace_index::TraceIndex;
use crate::{rollup, segment, wal};
use buffer::State;
pub use hold::HeldLogWriter;
use log_writer::{FramedRows, WalCommand};
pub use sampling::SamplingReport;

/// A torn or corrupt log tail found at open.
#[derive(Debug, Clone)]
pub struct TornTail {
    /// The log file.
    pub path: PathBuf,
    /// Where its intact records end; everything from here on was dropped.
    pub offset: u64,
    /// Why the record there could not be read.
    pub reason: String,
}

/// What opening the store found and did.
#[derive(Debug, Default, Clone)]
pub struct OpenReport {
    /// Log files at or above the checkpoint, replayed into the buffer.
    pub wal_files_replayed: usize,
    /// Records read back from them.
    pub records_replayed: usize,
    /// Rows read back, per signal.
    pub rows_replayed: HashMap<Signal, usize>,
    /// Files whose tail was torn or corrupt.
    pub torn_tails: Vec<TornTail>,
    /// Segments the catalog lists.
    pub segments: usize,
    /// Segment files the catalog does not list, removed.
    pub orphan_files_removed: usize,
    /// Span segments written before rollups existed, to be rolled up by
    /// [`Store::roll_up_older`].
    pub segments_without_rollups: usize,
}

/// What one flush wrote.
#[derive(Debug, Default, Clone)]
pub struct FlushReport {
    /// Segments of every table, the span rollups' included.
    pub segments_written: usize,
    /// Rows of spans, logs and metrics (rollup rows are derived from them).
    pub rows: usize,
    /// Bytes of the segments written.
    pub bytes: u64,
}

/// What one maintenance pass did.
#[derive(Debug, Default, Clone)]
pub struct MaintenanceReport {
    /// Segments merged into larger ones.
    pub segments_compacted: usize,
    /// Segments removed as past their table's retention.
    pub segments_expired: usize,
    /// Replaced segment files deleted after the grace period.
    pub files_deleted: usize,
    /// What tail sampling did.
    pub sampling: SamplingReport,
}

/// Rows of one table at one moment: buffered batches and the segments that may hold rows in
/// the asked time range.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Every buffered batch of the table (filtering by time is left to the query).
    pub batches: Vec<RecordBatch>,
    /// Segments with absolute paths.
    pub segments: Vec<(SegmentMeta, PathBuf)>,
}

/// Counters and gauges for Sightline's own metrics.
#[derive(Debug, Clone, Default)]
pub struct StoreStats {
    /// Rows made durable since start, per table.
    pub rows_appended: HashMap<Table, u64>,
    /// Group commits of the log.
    pub wal_syncs: u64,
    /// Time spent writing and syncing them.
    pub wal_sync_seconds_total: f64,
    /// Group commits that failed.
    pub wal_write_errors: u64,
    /// Whether the latest group commit failed (the disk is still in trouble).
    pub wal_failing: bool,
    /// Rows in the buffer, per table.
    pub buffered_rows: HashMap<Table, u64>,
    /// Bytes in the buffer.
    pub buffered_bytes: u64,
    /// Segments and their bytes, per table.
    pub segments: HashMap<Table, (u64, u64)>,
    /// Flushes done.
    pub flushes: u64,
    /// Flushes that failed.
    pub flush_errors: u64,
    /// Appends waiting for the log writer.
    pub queue_depth: usize,
    /// Memory held by the segments' trace-id filters.
    pub trace_index_bytes: u64,
}

#[derive(Debug, Default)]
struct Counters {
    rows_appended: [AtomicU64; Table::ALL.len()],
    wal_syncs: AtomicU64,
    wal_sync_ns: AtomicU64,
    wal_write_errors: AtomicU64,
    wal_failing: AtomicBool,
    flushes: AtomicU64,
    flush_errors: AtomicU64,
}

impl Counters {
    fn rows_appended(&self, table: Table) -> &AtomicU64 {
        let at = Table::ALL.iter().position(|t| *t == table).unwrap_or(0);
        &self.rows_appended[at]
    }
}

/// The store's shared state.
///
/// Lock order (a lock is only ever taken while holding the ones before it): `flush_lock` and
/// `rolling_up` (held across a whole flush, import, maintenance pass or backfill), then
/// `catalog`, then `state`, then the leaves `pending_deletes`, `rollups_pending`, `sender`,
/// `writer` and `hold`, which are never held while taking another. The log writer thread takes only
/// `state`, and never while a caller waits on it with `state` held.
struct Inner {
    data_dir: PathBuf,
    options: StoreOptions,
    /// Policy time (flush age, delete grace, segment creation times) reads this clock.
    clock: Arc<dyn Clock>,
    state: RwLock<State>,
    catalog: Mutex<Catalog>,
    sender: Mutex<Option<mpsc::Sender<WalCommand>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    flush_lock: tokio::sync::Mutex<()>,
    /// Replaced segment files and when they were replaced (the clock's ns).
    pending_deletes: Mutex<Vec<(PathBuf, i64)>>,
    closed: AtomicBool,
    counters: Counters,
    trace_index: TraceIndex,
    /// Span segments listed before rollups existed, still to be rolled up; `None` once every
    /// span segment has rollups.
    rollups_pending: Mutex<Option<Vec<SegmentMeta>>>,
    /// Held while older segments are rolled up, so that two calls never do it twice.
    rolling_up: Mutex<()>,
    /// Where the log writer waits while [`Store::hold_log_writer`] holds it.
    hold: Arc<hold::Hold>,
    /// Who tells sampling which services' alerts fired.
    hints: Mutex<Option<Arc<dyn crate::sampling::SamplingHints>>>,
}

/// The storage engine; cheap to clone and share.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("data_dir", &self.inner.data_dir)
            .finish()
    }
}

fn read_state<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write_state<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Store {
    /// Opens (or creates) the store in `data_dir`: reads the catalog, removes files it does not
    /// list, replays the log above the checkpoint into the buffer and starts the log writer.
    /// Blocking: call it before serving, or from a blocking task.
    pub fn open(
        data_dir: &Path,
        options: StoreOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<(Store, OpenReport)> {
        recovery::open(data_dir, options, clock)
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.inner.options
    }

    /// The data folder (absolute).
    pub fn data_dir(&self) -> &Path {
        &self.inner.data_dir
    }

    /// Makes the batches durable in the log and visible to queries, then returns. Fails fast
    /// with a retryable error when the server is saturated; nothing is kept on failure. Each
    /// batch must have its signal's schema.
    pub async fn append(&self, batches: Vec<(Signal, RecordBatch)>) -> Result<()> {
        let batches: Vec<_> = batches
            .into_iter()
            .filter(|(_, b)| b.num_rows() > 0)
            .collect();
        if batches.is_empty() {
            return Ok(());
        }
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(Error::ShuttingDown);
        }
        let limit_bytes = self.inner.options.storage.max_buffer_bytes;
        let buffered = read_state(&self.inner.state).buffered_bytes();
        if buffered > limit_bytes {
            return Err(Error::BufferFull {
                buffered_bytes: buffered,
                limit_bytes,
            });
        }
        let mut records = Vec::with_capacity(batches.len() + 1);
        for (signal, batch) in batches {
            let table = signal.table();
            if batch.schema().fields() != schema_for(table).fields() {
                return Err(Error::SchemaMismatch { table });
            }
            // Span rollups are derived here, before the log, and enter the buffer with their
            // spans; they are not logged themselves (a replay derives them again).
            let rollups =
                rollup::derived(signal, &batch, &self.inner.options.latency_thresholds_ns)?;
            let framed = wal::encode_record(signal, &batch)?;
            records.push(FramedRows {
                table,
                batch,
                framed,
            });
            if let Some(rollups) = rollups {
                records.push(FramedRows {
                    table: Table::SpanRollups,
                    batch: rollups,
                    framed: Vec::new(),
                });
            }
        }
        let (done, answer) = oneshot::channel();
        let sender = lock(&self.inner.sender)
            .clone()
            .ok_or(Error::ShuttingDown)?;
        sender
            .try_send(WalCommand::Append { records, done })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => Error::Saturated {
                    capacity: self.inner.options.storage.queue_capacity,
                },
                mpsc::error::TrySendError::Closed(_) => Error::ShuttingDown,
            })?;
        answer.await.map_err(|_| Error::ShuttingDown)?
    }

    /// The rows of `table` that may lie in `range`: all buffered batches (filtering is left to
    /// the query) and the segments whose time range overlaps it.
    pub fn snapshot(&self, table: Table, range: TimeRange) -> Snapshot {
        let state = read_state(&self.inner.state);
        let mut batches = Vec::new();
        if let Some(buffer) = state.buffers.get(&table) {
            batches.extend(buffer.flushing.iter().cloned());
            batches.extend(buffer.active.iter().cloned());
        }
        let segments = state
            .segments
            .iter()
            .filter(|s| s.table == table && range.overlaps(s.min_time_ns, s.max_time_ns))
            .map(|s| (s.clone(), self.inner.data_dir.join(&s.path)))
            .collect();
        Snapshot { batches, segments }
    }

    /// Of `segments`, those that may hold rows of `trace_id` (lower-case hex), by the segments'
    /// trace-id filters held in memory. Blocking: it reads the filters of segments not yet in
    /// memory.
    pub fn segments_with_trace(
        &self,
        segments: Vec<(SegmentMeta, PathBuf)>,
        trace_id: &str,
    ) -> Vec<(SegmentMeta, PathBuf)> {
        segments
            .into_iter()
            .filter(|(_, path)| self.inner.trace_index.may_contain(path, trace_id))
            .collect()
    }

    /// Reads the trace-id filters of every span and log segment into memory, so that the first
    /// trace lookups do not pay for it. Blocking; returns the segments read.
    pub fn warm_trace_index(&self) -> usize {
        let paths: Vec<PathBuf> = read_state(&self.inner.state)
            .segments
            .iter()
            .filter(|s| matches!(s.table, Table::Spans | Table::Logs))
            .map(|s| self.inner.data_dir.join(&s.path))
            .collect();
        for path in &paths {
            self.inner.trace_index.load(path);
        }
        paths.len()
    }

    /// The start time of the oldest stored span (in segments or the buffer), if any: where the
    /// spans that retention has kept begin.
    pub fn oldest_span_ns(&self) -> Option<i64> {
        let state = read_state(&self.inner.state);
        let in_segments = state
            .segments
            .iter()
            .filter(|s| s.table == Table::Spans)
            .map(|s| s.min_time_ns)
            .min();
        let in_buffer = state.buffers.get(&Table::Spans).and_then(|b| {
            b.flushing
                .iter()
                .chain(b.active.iter())
                .filter_map(|batch| segment::time_bounds(Table::Spans, batch).map(|(min, _)| min))
                .min()
        });
        match (in_segments, in_buffer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Rolls up the span segments written before rollups existed (see [`OpenReport`]), one at a
    /// time, while flushes and queries go on. Safe to call again after an error or a restart:
    /// it goes on where it stopped. Returns the segments rolled up.
    pub async fn roll_up_older(&self) -> Result<usize> {
        self.blocking("rolling up older spans", backfill::roll_up_older_segments)
            .await
    }

    /// Whether every stored span is counted in `span_rollups`: false while segments written
    /// before rollups existed wait for [`Store::roll_up_older`].
    pub fn rollups_complete(&self) -> bool {
        lock(&self.inner.rollups_pending).is_none()
    }

    /// All segments the catalog lists.
    pub fn segments(&self) -> Vec<SegmentMeta> {
        read_state(&self.inner.state).segments.clone()
    }

    /// Whether a flush is due: a table's buffer is large, or its oldest row has waited
    /// `storage.flush_interval` on the store's clock, or a failed flush left rows behind.
    pub fn flush_due(&self) -> bool {
        let storage = &self.inner.options.storage;
        let now_ns = self.inner.clock.now_ns();
        let state = read_state(&self.inner.state);
        state.buffers.values().any(|b| {
            b.active_rows >= storage.flush_rows
                || b.oldest_active_ns
                    .is_some_and(|t| now_ns.saturating_sub(t) >= storage.flush_interval.as_nanos())
                || !b.flushing.is_empty()
        })
    }

    /// Writes every buffered row to segments and moves the log checkpoint past them.
    pub async fn flush(&self) -> Result<FlushReport> {
        let _guard = self.inner.flush_lock.lock().await;
        let (done, answer) = oneshot::channel();
        let sender = lock(&self.inner.sender)
            .clone()
            .ok_or(Error::ShuttingDown)?;
        sender
            .send(WalCommand::Rotate { done })
            .await
            .map_err(|_| Error::ShuttingDown)?;
        let checkpoint = answer.await.map_err(|_| Error::ShuttingDown)??;
        let result = self
            .blocking("flush", move |inner| {
                flush::write_flushing(inner, checkpoint)
            })
            .await;
        match &result {
            Ok(report) => {
                self.inner.counters.flushes.fetch_add(1, Ordering::Relaxed);
                if report.rows > 0 {
                    info!(
                        segments = report.segments_written,
                        rows = report.rows,
                        bytes = report.bytes,
                        "buffer flushed to segments"
                    );
                }
            }
            Err(e) => {
                self.inner
                    .counters
                    .flush_errors
                    .fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, "flush failed; rows stay buffered and in the log, the next flush retries");
            }
        }
        result
    }

    /// Writes rows straight into segments, past the log and the buffer: for loading generated
    /// or exported data into a folder that no server is serving. Rows are split by hour and
    /// sorted like a flush's; they are visible to queries, and listed in the catalog, once it
    /// returns.
    pub async fn import(&self, signal: Signal, batch: RecordBatch) -> Result<FlushReport> {
        let _guard = self.inner.flush_lock.lock().await;
        if batch.schema().fields() != schema_for(signal.table()).fields() {
            return Err(Error::SchemaMismatch {
                table: signal.table(),
            });
        }
        self.blocking("import", move |inner| {
            flush::import_blocking(inner, signal, &batch)
        })
        .await
    }

    /// Compaction, retention and removal of replaced files; one pass.
    pub async fn maintain(&self) -> Result<MaintenanceReport> {
        let _guard = self.inner.flush_lock.lock().await;
        self.blocking("maintenance", maintenance::maintain_blocking)
            .await
    }

    /// Runs file work off the async workers; a task that panics is a failed write.
    async fn blocking<T: Send + 'static>(
        &self,
        what: &'static str,
        work: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || work(&inner))
            .await
            .unwrap_or_else(|e| {
                Err(Error::WriteFailed {
                    reason: format!("{what} task failed: {e}"),
                })
            })
    }

    /// Tells sampling which services had alerts firing, and when (their traces are kept whole).
    pub fn set_sampling_hints(&self, hints: Arc<dyn crate::sampling::SamplingHints>) {
        *lock(&self.inner.hints) = Some(hints);
    }

    /// Per service, the traces sampling has seen and kept so far (every pass, across restarts).
    pub fn sampling_stats(&self) -> Result<std::collections::BTreeMap<String, (u64, u64)>> {
        sampling::kept_share(&self.inner)
    }

    /// The end of the newest sampled hour: spans before it are a sample (see `sample_rate`).
    pub fn sampled_before_ns(&self) -> Option<i64> {
        lock(&self.inner.catalog)
            .state(sampling::SAMPLED_BEFORE)
            .ok()
            .flatten()
    }

    /// Holds the log writer before its next write until the value returned is dropped, as a slow
    /// disk would: appends fill the queue behind it and then are refused as saturated. For
    /// tests of saturation; nothing in the server calls it.
    pub fn hold_log_writer(&self) -> HeldLogWriter {
        HeldLogWriter::new(self.inner.hold.clone())
    }

    /// Stops taking writes, flushes the buffer and stops the log writer. Closing a closed store
    /// does nothing.
    pub async fn close(&self) -> Result<FlushReport> {
        let was_closed = self.inner.closed.swap(true, Ordering::SeqCst);
        if was_closed && lock(&self.inner.sender).is_none() {
            return Ok(FlushReport::default());
        }
        let report = self.flush().await;
        lock(&self.inner.sender).take();
        let handle = lock(&self.inner.writer).take();
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        report
    }

    /// Counters and gauges of the store now.
    pub fn stats(&self) -> StoreStats {
        let counters = &self.inner.counters;
        let queue_depth = lock(&self.inner.sender)
            .as_ref()
            .map(|s| s.max_capacity() - s.capacity())
            .unwrap_or(0);
        let state = read_state(&self.inner.state);
        let mut stats = StoreStats {
            wal_syncs: counters.wal_syncs.load(Ordering::Relaxed),
            wal_sync_seconds_total: counters.wal_sync_ns.load(Ordering::Relaxed) as f64 / 1e9,
            wal_write_errors: counters.wal_write_errors.load(Ordering::Relaxed),
            wal_failing: counters.wal_failing.load(Ordering::Relaxed),
            flushes: counters.flushes.load(Ordering::Relaxed),
            flush_errors: counters.flush_errors.load(Ordering::Relaxed),
            queue_depth,
            ..Default::default()
        };
        for table in Table::ALL {
            stats
                .rows_appended
                .insert(table, counters.rows_appended(table).load(Ordering::Relaxed));
            let rows = state
                .buffers
                .get(&table)
                .map_or(0, buffer::TableBuffer::rows);
            stats.buffered_rows.insert(table, rows as u64);
            let (count, bytes) = state
                .segments
                .iter()
                .filter(|s| s.table == table)
                .fold((0u64, 0u64), |(c, b), s| (c + 1, b + s.size_bytes as u64));
            stats.segments.insert(table, (count, bytes));
        }
        stats.buffered_bytes = state.buffered_bytes();
        stats.trace_index_bytes = self.inner.trace_index.memory_bytes();
        stats
    }
}

#[cfg(test)]
mod tests;
