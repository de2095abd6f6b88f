//! [`Store`]: the write-ahead log writer thread, the buffer, flushes, compaction and retention.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use arrow::array::{RecordBatch, TimestampNanosecondArray, UInt32Array};
use arrow::compute::{concat_batches, take_record_batch};
use sightline_model::schema::schema_for;
use sightline_model::{Clock, Signal, TimeRange};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::catalog::{Catalog, SegmentMeta};
use crate::error::{Error, Result};
use crate::trace_index::TraceIndex;
use crate::{rollup, segment, wal};

const NS_PER_HOUR: i64 = 3_600_000_000_000;
const NS_PER_DAY: i64 = 24 * NS_PER_HOUR;

/// The stretch of time one segment covers at most: an hour, and a day for the rollups (a day of
/// them is a few tens of thousands of rows, so that a day's pages open one file, not 24).
fn partition_ns(signal: Signal) -> i64 {
    match signal {
        Signal::SpanRollups => NS_PER_DAY,
        _ => NS_PER_HOUR,
    }
}
/// The catalog's `state` key set once every span segment has its rollups.
const ROLLUPS_COMPLETE: &str = "span_rollups_complete";
/// Span segments with ids up to this one were written before rollups existed (set once, by the
/// first open of an older folder).
const ROLLUPS_OLDER_UP_TO: &str = "span_rollups_older_up_to";
/// Of those, the ones with ids up to this one are rolled up.
const ROLLUPS_DONE_UP_TO: &str = "span_rollups_done_up_to";

/// How the store buffers, flushes, compacts and forgets.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Flush when the buffer holds this many rows of one signal.
    pub flush_rows: usize,
    /// Flush rows that have waited this long.
    pub flush_interval: Duration,
    /// Refuse new writes (503, retry later) while the buffer holds more than this.
    pub max_buffer_bytes: u64,
    /// Requests that may wait for the log writer before new ones are refused (429).
    pub queue_capacity: usize,
    /// Segments smaller than this are merged by compaction.
    pub compaction_target_rows: i64,
    /// How long rows of each signal are kept; `None` keeps them forever.
    pub retention: HashMap<Signal, Option<Duration>>,
    /// How long a replaced segment file stays on disk for queries that still read it.
    pub delete_grace: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            flush_rows: 250_000,
            flush_interval: Duration::from_secs(10),
            max_buffer_bytes: 512 * 1024 * 1024,
            queue_capacity: 1024,
            compaction_target_rows: 1_000_000,
            retention: HashMap::new(),
            delete_grace: Duration::from_secs(60),
        }
    }
}

/// A torn or corrupt log tail found at open.
#[derive(Debug, Clone)]
pub struct TornTail {
    pub path: PathBuf,
    pub offset: u64,
    pub reason: String,
}

/// What opening the store found and did.
#[derive(Debug, Default, Clone)]
pub struct OpenReport {
    pub wal_files_replayed: usize,
    pub records_replayed: usize,
    pub rows_replayed: HashMap<Signal, usize>,
    pub torn_tails: Vec<TornTail>,
    pub segments: usize,
    pub orphan_files_removed: usize,
    /// Span segments written before rollups existed, to be rolled up by
    /// [`Store::roll_up_older`].
    pub segments_without_rollups: usize,
}

/// The bytes a buffered batch holds. Batches read back from the log share one buffer per record
/// between their columns, so each column's own slice is counted, not the whole buffer per column.
fn batch_bytes(batch: &RecordBatch) -> u64 {
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

/// What one flush wrote.
#[derive(Debug, Default, Clone)]
pub struct FlushReport {
    /// Segments of every table, the span rollups' included.
    pub segments_written: usize,
    /// Rows of spans, logs and metrics (rollup rows are derived from them).
    pub rows: usize,
    pub bytes: u64,
}

/// What one maintenance pass did.
#[derive(Debug, Default, Clone)]
pub struct MaintenanceReport {
    pub segments_compacted: usize,
    pub segments_expired: usize,
    pub files_deleted: usize,
}

/// Rows of one table at one moment: buffered batches and the segments that may hold rows in
/// the asked time range.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub batches: Vec<RecordBatch>,
    /// Segments with absolute paths.
    pub segments: Vec<(SegmentMeta, PathBuf)>,
}

/// Counters and gauges for Sightline's own metrics.
#[derive(Debug, Clone, Default)]
pub struct StoreStats {
    pub rows_appended: HashMap<Signal, u64>,
    pub wal_syncs: u64,
    pub wal_sync_seconds_total: f64,
    pub wal_write_errors: u64,
    pub buffered_rows: HashMap<Signal, u64>,
    pub buffered_bytes: u64,
    pub segments: HashMap<Signal, (u64, u64)>,
    pub flushes: u64,
    pub flush_errors: u64,
    pub queue_depth: usize,
    /// Memory held by the segments' trace-id filters.
    pub trace_index_bytes: u64,
}

#[derive(Debug, Default)]
struct SignalBuffer {
    active: Vec<RecordBatch>,
    flushing: Vec<RecordBatch>,
    active_rows: usize,
    bytes: u64,
    oldest_active: Option<Instant>,
}

#[derive(Debug, Default)]
struct State {
    buffers: HashMap<Signal, SignalBuffer>,
    segments: Vec<SegmentMeta>,
}

/// Rows framed for the log (signal, batch, framed record), and where to answer once durable.
type FramedRows = Vec<(Signal, RecordBatch, Vec<u8>)>;
type PendingAppend = (FramedRows, oneshot::Sender<Result<()>>);

enum WalCommand {
    Append {
        records: Vec<(Signal, RecordBatch, Vec<u8>)>,
        done: oneshot::Sender<Result<()>>,
    },
    Rotate {
        done: oneshot::Sender<Result<u64>>,
    },
}

#[derive(Debug, Default)]
struct Counters {
    rows_appended: [AtomicU64; 4],
    wal_syncs: AtomicU64,
    wal_sync_ns: AtomicU64,
    wal_write_errors: AtomicU64,
    flushes: AtomicU64,
    flush_errors: AtomicU64,
}

fn signal_index(signal: Signal) -> usize {
    match signal {
        Signal::Spans => 0,
        Signal::Logs => 1,
        Signal::Metrics => 2,
        Signal::SpanRollups => 3,
    }
}

struct Inner {
    data_dir: PathBuf,
    options: StoreOptions,
    clock: Arc<dyn Clock>,
    state: RwLock<State>,
    catalog: Mutex<Catalog>,
    sender: Mutex<Option<mpsc::Sender<WalCommand>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    flush_lock: tokio::sync::Mutex<()>,
    pending_deletes: Mutex<Vec<(PathBuf, Instant)>>,
    closed: AtomicBool,
    counters: Counters,
    trace_index: TraceIndex,
    /// Span segments listed before rollups existed, still to be rolled up; `None` once every
    /// span segment has rollups.
    rollups_pending: Mutex<Option<Vec<SegmentMeta>>>,
    /// Held while older segments are rolled up, so that two calls never do it twice.
    rolling_up: Mutex<()>,
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
        let dir_err = |source| Error::DataDir {
            path: data_dir.into(),
            source,
        };
        std::fs::create_dir_all(data_dir).map_err(dir_err)?;
        // Queries address segments by absolute path, so a relative folder is resolved once here.
        let data_dir = &std::fs::canonicalize(data_dir).map_err(dir_err)?;
        let wal_dir = data_dir.join("wal");
        std::fs::create_dir_all(&wal_dir).map_err(dir_err)?;
        std::fs::create_dir_all(data_dir.join("segments")).map_err(dir_err)?;
        let mut catalog = Catalog::open(&data_dir.join("catalog.db"))?;
        let checkpoint = catalog.wal_checkpoint()?;
        let segments = catalog.segments()?;
        let rollups_pending = older_span_segments(&mut catalog, &segments)?;
        let mut report = OpenReport {
            segments: segments.len(),
            segments_without_rollups: rollups_pending.as_ref().map_or(0, Vec::len),
            ..Default::default()
        };
        report.orphan_files_removed = remove_orphan_segment_files(data_dir, &segments);

        let mut state = State {
            segments,
            ..Default::default()
        };
        let mut last_seq = checkpoint.saturating_sub(1);
        for seq in wal::list_files(&wal_dir)? {
            let path = wal::file_path(&wal_dir, seq);
            last_seq = last_seq.max(seq);
            if seq < checkpoint {
                // Its rows are in segments already; a crash came between commit and delete.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let replay = wal::read_file(&path)?;
            report.wal_files_replayed += 1;
            report.records_replayed += replay.records.len();
            if let Some((offset, reason)) = replay.torn_tail {
                warn!(path = %path.display(), offset, %reason, "write-ahead log tail dropped: it was torn or corrupt");
                report.torn_tails.push(TornTail {
                    path: path.clone(),
                    offset,
                    reason,
                });
            }
            for record in replay.records {
                *report.rows_replayed.entry(record.signal).or_default() += record.batch.num_rows();
                // Rollups are not logged: they are derived again from the replayed spans.
                let rollups = match record.signal {
                    Signal::Spans => Some(rollup::from_spans(&record.batch)?),
                    _ => None,
                };
                buffer_batch(&mut state, record.signal, record.batch);
                if let Some(rollups) = rollups.filter(|b| b.num_rows() > 0) {
                    buffer_batch(&mut state, Signal::SpanRollups, rollups);
                }
            }
        }
        let writer = wal::WalWriter::create(&wal_dir, last_seq + 1)?;
        let (sender, receiver) = mpsc::channel(options.queue_capacity.max(1));
        let inner = Arc::new(Inner {
            data_dir: data_dir.to_path_buf(),
            options,
            clock,
            state: RwLock::new(state),
            catalog: Mutex::new(catalog),
            sender: Mutex::new(Some(sender)),
            writer: Mutex::new(None),
            flush_lock: tokio::sync::Mutex::new(()),
            pending_deletes: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            counters: Counters::default(),
            trace_index: TraceIndex::default(),
            rollups_pending: Mutex::new(rollups_pending),
            rolling_up: Mutex::new(()),
        });
        let thread_inner = inner.clone();
        let handle = std::thread::Builder::new()
            .name("sightline-wal".into())
            .spawn(move || run_wal_writer(thread_inner, writer, receiver))
            .map_err(|source| Error::WalIo {
                path: wal_dir.clone(),
                source,
            })?;
        *lock(&inner.writer) = Some(handle);
        Ok((Store { inner }, report))
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.inner.options
    }

    pub fn data_dir(&self) -> &Path {
        &self.inner.data_dir
    }

    /// Makes the batches durable in the log and visible to queries, then returns. Fails fast
    /// with a retryable error when the server is saturated; nothing is kept on failure.
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
        let buffered = self.buffered_bytes();
        if buffered > self.inner.options.max_buffer_bytes {
            return Err(Error::BufferFull {
                buffered_bytes: buffered,
                limit_bytes: self.inner.options.max_buffer_bytes,
            });
        }
        let mut records = Vec::with_capacity(batches.len() + 1);
        for (signal, batch) in batches {
            // Span rollups are derived here, before the log, and enter the buffer with their
            // spans; they are not logged themselves (a replay derives them again).
            let rollups = match signal {
                Signal::Spans => Some(rollup::from_spans(&batch)?),
                Signal::SpanRollups => {
                    return Err(Error::WriteFailed {
                        reason: "span rollups are derived from spans and cannot be appended".into(),
                    });
                }
                _ => None,
            };
            let framed = wal::encode_record(signal, &batch)?;
            records.push((signal, batch, framed));
            if let Some(rollups) = rollups.filter(|b| b.num_rows() > 0) {
                records.push((Signal::SpanRollups, rollups, Vec::new()));
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
                    capacity: self.inner.options.queue_capacity,
                },
                mpsc::error::TrySendError::Closed(_) => Error::ShuttingDown,
            })?;
        answer.await.map_err(|_| Error::ShuttingDown)?
    }

    fn buffered_bytes(&self) -> u64 {
        read_state(&self.inner.state)
            .buffers
            .values()
            .map(|b| b.bytes)
            .sum()
    }

    /// The rows of `signal` that may lie in `range`: all buffered batches (filtering is left to
    /// the query) and the segments whose time range overlaps it.
    pub fn snapshot(&self, signal: Signal, range: TimeRange) -> Snapshot {
        let state = read_state(&self.inner.state);
        let mut batches = Vec::new();
        if let Some(buffer) = state.buffers.get(&signal) {
            batches.extend(buffer.flushing.iter().cloned());
            batches.extend(buffer.active.iter().cloned());
        }
        let segments = state
            .segments
            .iter()
            .filter(|s| s.signal == signal && range.overlaps(s.min_time_ns, s.max_time_ns))
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
            .filter(|s| matches!(s.signal, Signal::Spans | Signal::Logs))
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
            .filter(|s| s.signal == Signal::Spans)
            .map(|s| s.min_time_ns)
            .min();
        let in_buffer = state.buffers.get(&Signal::Spans).and_then(|b| {
            b.flushing
                .iter()
                .chain(b.active.iter())
                .filter_map(|batch| segment::time_bounds(Signal::Spans, batch).map(|(min, _)| min))
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
        self.blocking("rolling up older spans", roll_up_older_segments)
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

    /// Whether a flush is due: a signal's buffer is large or has waited long enough.
    pub fn flush_due(&self) -> bool {
        let state = read_state(&self.inner.state);
        state.buffers.values().any(|b| {
            b.active_rows >= self.inner.options.flush_rows
                || b.oldest_active
                    .is_some_and(|t| t.elapsed() >= self.inner.options.flush_interval)
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
            .blocking("flush", move |inner| write_flushing(inner, checkpoint))
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
        self.blocking("import", move |inner| {
            import_blocking(inner, signal, &batch)
        })
        .await
    }

    /// Compaction, retention and removal of replaced files; one pass.
    pub async fn maintain(&self) -> Result<MaintenanceReport> {
        let _guard = self.inner.flush_lock.lock().await;
        self.blocking("maintenance", maintain_blocking).await
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

    /// Stops taking writes, flushes the buffer and stops the log writer.
    pub async fn close(&self) -> Result<FlushReport> {
        self.inner.closed.store(true, Ordering::SeqCst);
        let report = self.flush().await;
        lock(&self.inner.sender).take();
        let handle = lock(&self.inner.writer).take();
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        report
    }

    pub fn stats(&self) -> StoreStats {
        let counters = &self.inner.counters;
        let state = read_state(&self.inner.state);
        let mut stats = StoreStats {
            wal_syncs: counters.wal_syncs.load(Ordering::Relaxed),
            wal_sync_seconds_total: counters.wal_sync_ns.load(Ordering::Relaxed) as f64 / 1e9,
            wal_write_errors: counters.wal_write_errors.load(Ordering::Relaxed),
            flushes: counters.flushes.load(Ordering::Relaxed),
            flush_errors: counters.flush_errors.load(Ordering::Relaxed),
            queue_depth: lock(&self.inner.sender)
                .as_ref()
                .map(|s| s.max_capacity() - s.capacity())
                .unwrap_or(0),
            ..Default::default()
        };
        for signal in Signal::TABLES {
            stats.rows_appended.insert(
                signal,
                counters.rows_appended[signal_index(signal)].load(Ordering::Relaxed),
            );
            let buffer = state.buffers.get(&signal);
            let rows = buffer
                .map(|b| b.active_rows + b.flushing.iter().map(|x| x.num_rows()).sum::<usize>())
                .unwrap_or(0);
            stats.buffered_rows.insert(signal, rows as u64);
            let (count, bytes) = state
                .segments
                .iter()
                .filter(|s| s.signal == signal)
                .fold((0u64, 0u64), |(c, b), s| (c + 1, b + s.size_bytes as u64));
            stats.segments.insert(signal, (count, bytes));
        }
        stats.buffered_bytes = state.buffers.values().map(|b| b.bytes).sum();
        stats.trace_index_bytes = self.inner.trace_index.memory_bytes();
        stats
    }
}

/// The log writer thread: groups waiting appends into one write and one sync, then makes them
/// visible and answers them all.
fn run_wal_writer(
    inner: Arc<Inner>,
    mut writer: wal::WalWriter,
    mut receiver: mpsc::Receiver<WalCommand>,
) {
    const GROUP_BYTES: usize = 64 * 1024 * 1024;
    while let Some(first) = receiver.blocking_recv() {
        let mut commands = vec![first];
        let mut bytes = 0usize;
        while bytes < GROUP_BYTES {
            match receiver.try_recv() {
                Ok(command) => {
                    if let WalCommand::Append { records, .. } = &command {
                        bytes += records.iter().map(|r| r.2.len()).sum::<usize>();
                    }
                    commands.push(command);
                }
                Err(_) => break,
            }
        }
        let mut group: Vec<PendingAppend> = Vec::new();
        for command in commands {
            match command {
                WalCommand::Append { records, done } => group.push((records, done)),
                WalCommand::Rotate { done } => {
                    commit_group(&inner, &mut writer, std::mem::take(&mut group));
                    let _ = done.send(rotate(&inner, &mut writer));
                }
            }
        }
        commit_group(&inner, &mut writer, group);
    }
    debug!("write-ahead log writer stopped");
}

fn commit_group(inner: &Inner, writer: &mut wal::WalWriter, group: Vec<PendingAppend>) {
    if group.is_empty() {
        return;
    }
    let framed: Vec<&[u8]> = group
        .iter()
        .flat_map(|(records, _)| records.iter().map(|r| r.2.as_slice()))
        .filter(|framed| !framed.is_empty())
        .collect();
    let started = Instant::now();
    let result = writer.append_and_sync(&framed);
    inner.counters.wal_syncs.fetch_add(1, Ordering::Relaxed);
    inner
        .counters
        .wal_sync_ns
        .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
    match result {
        Ok(()) => {
            {
                let mut state = write_state(&inner.state);
                for (records, _) in &group {
                    for (signal, batch, _) in records {
                        buffer_batch(&mut state, *signal, batch.clone());
                        inner.counters.rows_appended[signal_index(*signal)]
                            .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                    }
                }
            }
            for (_, done) in group {
                let _ = done.send(Ok(()));
            }
        }
        Err(e) => {
            inner
                .counters
                .wal_write_errors
                .fetch_add(1, Ordering::Relaxed);
            warn!(error = %e, "write-ahead log write failed; requests answered as unavailable");
            let reason = match &e {
                Error::WalIo { source, .. } => source.to_string(),
                other => other.to_string(),
            };
            for (_, done) in group {
                let _ = done.send(Err(Error::WriteFailed {
                    reason: reason.clone(),
                }));
            }
        }
    }
}

/// Puts a durable batch into its table's buffer.
fn buffer_batch(state: &mut State, signal: Signal, batch: RecordBatch) {
    let buffer = state.buffers.entry(signal).or_default();
    buffer.active_rows += batch.num_rows();
    buffer.bytes += batch_bytes(&batch);
    buffer.oldest_active.get_or_insert_with(Instant::now);
    buffer.active.push(batch);
}

/// Starts a new log file and moves the buffer's rows to the flushing set; returns the new
/// file's sequence number, below which every file is covered by the flushing rows.
fn rotate(inner: &Inner, writer: &mut wal::WalWriter) -> Result<u64> {
    let next = wal::WalWriter::create(&inner.data_dir.join("wal"), writer.seq() + 1)?;
    *writer = next;
    let mut state = write_state(&inner.state);
    for buffer in state.buffers.values_mut() {
        let active = std::mem::take(&mut buffer.active);
        buffer.flushing.extend(active);
        buffer.active_rows = 0;
        buffer.oldest_active = None;
    }
    Ok(writer.seq())
}

static SEGMENT_COUNTER: AtomicU64 = AtomicU64::new(0);

fn segment_relative_path(signal: Signal, hour_start_ns: i64, created_ns: i64) -> String {
    let format = if partition_ns(signal) == NS_PER_DAY {
        "%Y-%m-%d"
    } else {
        "%Y-%m-%d/%H"
    };
    let hour = chrono::DateTime::from_timestamp_nanos(hour_start_ns).format(format);
    let n = SEGMENT_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "segments/{}/{hour}/{created_ns}-{n}.parquet",
        signal.table_name()
    )
}

/// Splits rows by the hour (the day, for rollups) of their time column: segments never straddle
/// one.
fn split_by_hour(signal: Signal, batch: &RecordBatch) -> Result<Vec<(i64, RecordBatch)>> {
    let partition = partition_ns(signal);
    let Some(times) = batch
        .column_by_name(signal.time_column())
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
        let hour = groups.keys().next().copied().unwrap_or_default();
        return Ok(vec![(hour * partition, batch.clone())]);
    }
    groups
        .into_iter()
        .map(|(hour, indices)| {
            let indices = UInt32Array::from(indices);
            Ok((hour * partition, take_record_batch(batch, &indices)?))
        })
        .collect()
}

fn write_rows_as_segments(
    inner: &Inner,
    signal: Signal,
    batch: &RecordBatch,
    level: i64,
    written: &mut Vec<PathBuf>,
) -> Result<Vec<SegmentMeta>> {
    let created_ns = inner.clock.now_ns();
    let mut metas = Vec::new();
    for (hour_start_ns, rows) in split_by_hour(signal, batch)? {
        let sorted = segment::sort_for_segment(signal, &rows)?;
        let Some((min_time_ns, max_time_ns)) = segment::time_bounds(signal, &sorted) else {
            continue;
        };
        let path = segment_relative_path(signal, hour_start_ns, created_ns);
        let absolute = inner.data_dir.join(&path);
        let size = segment::write_segment(&absolute, signal, &sorted)?;
        written.push(absolute);
        metas.push(SegmentMeta {
            id: 0,
            signal,
            path,
            min_time_ns,
            max_time_ns,
            row_count: sorted.num_rows() as i64,
            size_bytes: size as i64,
            created_ns,
            level,
        });
    }
    Ok(metas)
}

fn write_flushing(inner: &Inner, checkpoint: u64) -> Result<FlushReport> {
    let flushing: Vec<(Signal, Vec<RecordBatch>)> = {
        let state = read_state(&inner.state);
        state
            .buffers
            .iter()
            .map(|(s, b)| (*s, b.flushing.clone()))
            .collect()
    };
    let mut report = FlushReport::default();
    let mut metas = Vec::new();
    let mut written = Vec::new();
    let result = (|| {
        for (signal, batches) in &flushing {
            if batches.is_empty() {
                continue;
            }
            let batch = concat_batches(&schema_for(*signal), batches)?;
            if *signal != Signal::SpanRollups {
                report.rows += batch.num_rows();
            }
            metas.extend(write_rows_as_segments(
                inner,
                *signal,
                &batch,
                0,
                &mut written,
            )?);
        }
        lock(&inner.catalog).commit(std::mem::take(&mut metas), &[], Some(checkpoint))
    })();
    let committed = discard_on_error(result, written)?;
    report.segments_written = committed.len();
    report.bytes = committed.iter().map(|m| m.size_bytes as u64).sum();
    {
        let mut state = write_state(&inner.state);
        state.segments.extend(committed);
        for buffer in state.buffers.values_mut() {
            let flushed_bytes: u64 = buffer.flushing.iter().map(batch_bytes).sum();
            buffer.flushing.clear();
            buffer.bytes = buffer.bytes.saturating_sub(flushed_bytes);
        }
    }
    let wal_dir = inner.data_dir.join("wal");
    for seq in wal::list_files(&wal_dir)? {
        if seq < checkpoint {
            let _ = std::fs::remove_file(wal::file_path(&wal_dir, seq));
        }
    }
    Ok(report)
}

/// Passes `result` on; when it failed, first removes the segment files written on the way
/// (the catalog never listed them).
fn discard_on_error<T>(result: Result<T>, written: Vec<PathBuf>) -> Result<T> {
    if result.is_err() {
        for path in written {
            let _ = std::fs::remove_file(path);
        }
    }
    result
}

fn import_blocking(inner: &Inner, signal: Signal, batch: &RecordBatch) -> Result<FlushReport> {
    let mut written = Vec::new();
    let committed = (|| {
        let mut metas = write_rows_as_segments(inner, signal, batch, 0, &mut written)?;
        let rollups = match signal {
            Signal::Spans => Some(rollup::from_spans(batch)?),
            Signal::SpanRollups => {
                return Err(Error::WriteFailed {
                    reason: "span rollups are derived from spans and cannot be imported".into(),
                });
            }
            _ => None,
        };
        if let Some(rollups) = rollups {
            metas.extend(write_rows_as_segments(
                inner,
                Signal::SpanRollups,
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
            .filter(|m| m.signal == signal)
            .map(|m| m.row_count as usize)
            .sum(),
        bytes: committed.iter().map(|m| m.size_bytes as u64).sum(),
    };
    write_state(&inner.state).segments.extend(committed);
    Ok(report)
}

fn maintain_blocking(inner: &Inner) -> Result<MaintenanceReport> {
    let mut report = MaintenanceReport::default();
    // Retention: segments entirely older than each signal's limit.
    let now_ns = inner.clock.now_ns();
    let expired: Vec<SegmentMeta> = {
        let state = read_state(&inner.state);
        state
            .segments
            .iter()
            .filter(|s| {
                inner
                    .options
                    .retention
                    .get(&s.signal)
                    .copied()
                    .flatten()
                    .is_some_and(|keep| {
                        s.max_time_ns < now_ns.saturating_sub(keep.as_nanos() as i64)
                    })
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
    // Compaction: small segments of the same signal and hour are merged.
    for (signal, inputs) in compaction_candidates(inner, now_ns) {
        let level = inputs.iter().map(|s| s.level).max().unwrap_or(0) + 1;
        let mut batches = Vec::with_capacity(inputs.len());
        for meta in &inputs {
            batches.push(segment::read_segment(
                &inner.data_dir.join(&meta.path),
                signal,
            )?);
        }
        let merged = match signal {
            // Rows of the same minute and grouping become one.
            Signal::SpanRollups => rollup::merge(&batches)?,
            _ => concat_batches(&schema_for(signal), &batches)?,
        };
        let mut written = Vec::new();
        let outputs = write_rows_as_segments(inner, signal, &merged, level, &mut written);
        let outputs = discard_on_error(outputs, written)?;
        let ids: Vec<i64> = inputs.iter().map(|s| s.id).collect();
        let committed = lock(&inner.catalog).commit(outputs, &ids, None)?;
        replace_segments(inner, &ids, committed);
        report.segments_compacted += inputs.len();
        info!(%signal, inputs = inputs.len(), rows = merged.num_rows(), "segments compacted");
    }
    // Files replaced a while ago are no longer read by any query.
    let due: Vec<PathBuf> = {
        let mut pending = lock(&inner.pending_deletes);
        let (due, keep): (Vec<_>, Vec<_>) = pending
            .drain(..)
            .partition(|(_, at)| at.elapsed() >= inner.options.delete_grace);
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

/// The span segments that still lack rollups, oldest id first; `None` once every span segment
/// has them. The first open of a folder written before rollups existed fixes which segments
/// those are (every span segment listed then), so segments flushed later, which have rollups,
/// are never rolled up twice, whatever restarts come between.
fn older_span_segments(
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
                .filter(|s| s.signal == Signal::Spans)
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
        .filter(|s| s.signal == Signal::Spans && s.id > done_up_to && s.id <= older_up_to)
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
fn roll_up_older_segments(inner: &Inner) -> Result<usize> {
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
                let batch = segment::read_segment(&inner.data_dir.join(&meta.path), Signal::Spans)?;
                let rollups = rollup::from_spans(&batch)?;
                write_rows_as_segments(inner, Signal::SpanRollups, &rollups, 0, &mut written)?
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

/// Removes segments from the live list, adds their replacements, and schedules the old files'
/// deletion after the grace period.
fn replace_segments(inner: &Inner, removed: &[i64], added: Vec<SegmentMeta>) {
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
    let mut pending = lock(&inner.pending_deletes);
    pending.extend(old_paths.into_iter().map(|p| (p, Instant::now())));
}

/// Groups of small segments worth merging: per signal and hour, at least four small ones, or
/// two once the hour is over (so the current hour is not rewritten after every flush).
fn compaction_candidates(inner: &Inner, now_ns: i64) -> Vec<(Signal, Vec<SegmentMeta>)> {
    let target = inner.options.compaction_target_rows;
    // Span segments still waiting for their rollups stay as they are until then.
    let waiting: std::collections::HashSet<i64> = lock(&inner.rollups_pending)
        .as_ref()
        .map(|p| p.iter().map(|s| s.id).collect())
        .unwrap_or_default();
    let state = read_state(&inner.state);
    let mut groups: BTreeMap<(Signal, i64), Vec<SegmentMeta>> = BTreeMap::new();
    for s in state
        .segments
        .iter()
        .filter(|s| s.row_count < target && !waiting.contains(&s.id))
    {
        groups
            .entry((s.signal, s.min_time_ns.div_euclid(partition_ns(s.signal))))
            .or_default()
            .push(s.clone());
    }
    let mut out = Vec::new();
    for ((signal, hour), mut small) in groups {
        let hour_over = (hour + 1) * partition_ns(signal) + 5 * 60 * 1_000_000_000 < now_ns;
        if small.len() < 2 || (small.len() < 4 && !hour_over) {
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
            out.push((signal, picked));
        }
    }
    out
}

/// Deletes segment files (and temporary files) the catalog does not list: leftovers of a crash
/// between writing a file and committing it.
fn remove_orphan_segment_files(data_dir: &Path, segments: &[SegmentMeta]) -> usize {
    let known: std::collections::HashSet<PathBuf> =
        segments.iter().map(|s| data_dir.join(&s.path)).collect();
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

#[cfg(test)]
mod tests {
    use super::*;
    use sightline_model::ManualClock;
    use sightline_model::schema::{SpanRow, spans_to_batch};

    fn spans(n: usize, start_ns: i64, step_ns: i64, prefix: &str) -> RecordBatch {
        let rows: Vec<SpanRow> = (0..n)
            .map(|i| SpanRow {
                start_time_ns: start_ns + i as i64 * step_ns,
                end_time_ns: start_ns + i as i64 * step_ns + 10,
                trace_id: format!("{prefix}{i:030}"),
                span_id: format!("{i:016}"),
                name: "op".into(),
                kind: "server",
                status: "ok",
                service_name: "api".into(),
                attributes: "{}".into(),
                resource_attributes: "{}".into(),
                events: "[]".into(),
                links: "[]".into(),
                sample_rate: 1.0,
                message: "op".into(),
                ..Default::default()
            })
            .collect();
        spans_to_batch(&rows).expect("valid rows")
    }

    fn snapshot_rows(store: &Store, signal: Signal) -> usize {
        let snap = store.snapshot(signal, TimeRange::ALL);
        let buffered: usize = snap.batches.iter().map(|b| b.num_rows()).sum();
        let stored: i64 = snap.segments.iter().map(|(s, _)| s.row_count).sum();
        buffered + stored as usize
    }

    fn open(dir: &Path, clock: &ManualClock) -> (Store, OpenReport) {
        Store::open(dir, StoreOptions::default(), Arc::new(clock.clone())).expect("open")
    }

    #[tokio::test]
    async fn append_is_visible_at_once_and_survives_reopen_without_duplicates() {
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = ManualClock::new(10 * NS_PER_HOUR);
        let (store, _) = open(dir.path(), &clock);
        store
            .append(vec![(Signal::Spans, spans(5, NS_PER_HOUR, 1, "a"))])
            .await
            .expect("append");
        assert_eq!(snapshot_rows(&store, Signal::Spans), 5);
        drop(store); // no close: as after a crash, the rows live only in the log
        let (store, report) = open(dir.path(), &clock);
        assert_eq!(report.rows_replayed.get(&Signal::Spans), Some(&5));
        assert_eq!(snapshot_rows(&store, Signal::Spans), 5);
        store.flush().await.expect("flush");
        store
            .append(vec![(Signal::Spans, spans(2, NS_PER_HOUR, 1, "b"))])
            .await
            .expect("append");
        drop(store);
        let (store, report) = open(dir.path(), &clock);
        assert_eq!(
            report.rows_replayed.get(&Signal::Spans),
            Some(&2),
            "flushed rows are not replayed"
        );
        assert_eq!(snapshot_rows(&store, Signal::Spans), 7);
    }

    #[tokio::test]
    async fn import_writes_hourly_segments_past_the_log_and_they_stay_after_reopen() {
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = ManualClock::new(10 * NS_PER_HOUR);
        let (store, _) = open(dir.path(), &clock);
        // 120 rows a minute apart: two hours.
        let report = store
            .import(Signal::Spans, spans(120, NS_PER_HOUR, 60_000_000_000, "i"))
            .await
            .expect("import");
        assert_eq!(
            (report.segments_written, report.rows),
            (3, 120),
            "two hourly segments of spans, one daily segment of their rollups"
        );
        assert!(report.bytes > 0);
        assert_eq!(snapshot_rows(&store, Signal::Spans), 120);
        let second_hour = TimeRange::new(Some(2 * NS_PER_HOUR), Some(3 * NS_PER_HOUR));
        assert_eq!(store.snapshot(Signal::Spans, second_hour).segments.len(), 1);
        let wal_bytes: u64 = wal::list_files(&dir.path().join("wal"))
            .expect("list")
            .iter()
            .map(|seq| {
                std::fs::metadata(wal::file_path(&dir.path().join("wal"), *seq))
                    .expect("log file")
                    .len()
            })
            .sum();
        assert!(
            wal_bytes < 64,
            "imported rows are not written to the log ({wal_bytes} bytes)"
        );
        drop(store);
        let (store, report) = open(dir.path(), &clock);
        assert_eq!(report.segments, 3);
        assert!(report.rows_replayed.is_empty());
        assert_eq!(
            snapshot_rows(&store, Signal::SpanRollups),
            120,
            "a minute apart"
        );
        assert_eq!(snapshot_rows(&store, Signal::Spans), 120);
    }

    #[tokio::test]
    async fn replayed_rows_count_their_own_bytes_in_the_buffer() {
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = ManualClock::new(10 * NS_PER_HOUR);
        let (store, _) = open(dir.path(), &clock);
        store
            .append(vec![(Signal::Spans, spans(2000, NS_PER_HOUR, 1, "a"))])
            .await
            .expect("append");
        let appended = store.stats().buffered_bytes;
        drop(store);
        let (store, _) = open(dir.path(), &clock);
        let replayed = store.stats().buffered_bytes;
        // Read back from the log, every column is a slice of one buffer: counting the buffer once
        // per column would make a restarted server refuse ingest as "buffer full".
        assert!(
            replayed <= appended * 2 && replayed * 2 >= appended,
            "appended {appended} bytes, replayed {replayed}"
        );
        store.flush().await.expect("flush");
        assert_eq!(
            store.stats().buffered_bytes,
            0,
            "a flush gives every byte back"
        );
    }

    #[tokio::test]
    async fn flush_writes_one_segment_per_hour_and_snapshot_prunes_by_time() {
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = ManualClock::new(10 * NS_PER_HOUR);
        let (store, _) = open(dir.path(), &clock);
        // 6 rows, 30 minutes apart: three hours.
        store
            .append(vec![(Signal::Spans, spans(6, 0, NS_PER_HOUR / 2, "a"))])
            .await
            .expect("append");
        let report = store.flush().await.expect("flush");
        assert_eq!(
            (report.segments_written, report.rows),
            (4, 6),
            "three hours of spans, and the day of their rollups"
        );
        assert_eq!(
            store.snapshot(Signal::Spans, TimeRange::ALL).segments.len(),
            3
        );
        let second_hour = TimeRange::new(Some(NS_PER_HOUR), Some(2 * NS_PER_HOUR));
        let snap = store.snapshot(Signal::Spans, second_hour);
        assert_eq!(snap.segments.len(), 1);
        assert!(snap.batches.is_empty());
        assert!(snap.segments[0].1.exists());
        assert_eq!(snap.segments[0].0.row_count, 2);
    }

    #[tokio::test]
    async fn compaction_merges_small_segments_of_a_closed_hour_and_retention_drops_old_ones() {
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = ManualClock::new(10 * NS_PER_HOUR);
        let options = StoreOptions {
            delete_grace: Duration::ZERO,
            retention: HashMap::from([(Signal::Spans, Some(Duration::from_secs(3600 * 5)))]),
            ..Default::default()
        };
        let (store, _) = Store::open(dir.path(), options, Arc::new(clock.clone())).expect("open");
        for i in 0..3 {
            store
                .append(vec![(
                    Signal::Spans,
                    spans(4, 8 * NS_PER_HOUR + i, 1000, "c"),
                )])
                .await
                .expect("append");
            store.flush().await.expect("flush");
        }
        store
            .append(vec![(Signal::Spans, spans(4, NS_PER_HOUR, 1000, "d"))])
            .await
            .expect("append");
        store.flush().await.expect("flush");
        assert_eq!(
            store.segments().len(),
            8,
            "four of spans, four of their rollups"
        );
        let report = store.maintain().await.expect("maintain");
        assert_eq!(
            report.segments_expired, 1,
            "rollups outlive spans by default"
        );
        assert_eq!(
            report.segments_compacted, 7,
            "three of spans, four of rollups"
        );
        let of = |signal| -> Vec<SegmentMeta> {
            store
                .segments()
                .into_iter()
                .filter(|s| s.signal == signal)
                .collect()
        };
        let segments = of(Signal::Spans);
        assert_eq!(segments.len(), 1);
        assert_eq!(segments[0].row_count, 12);
        assert_eq!(segments[0].level, 1);
        let rollups = of(Signal::SpanRollups);
        assert_eq!(rollups.len(), 1, "one segment a day");
        assert_eq!(
            (rollups[0].row_count, rollups[0].level),
            (2, 1),
            "three flushes of one minute's requests merge into one row, beside hour 1's"
        );
        let merged = segment::read_segment(
            &store.data_dir().join(&rollups[0].path),
            Signal::SpanRollups,
        )
        .expect("read rollups");
        let cols = rollup::RollupColumns::of(&merged).expect("rollup columns");
        assert_eq!(cols.requests.values().to_vec(), vec![4, 12]);
        assert_eq!(report.files_deleted, 8);
        drop(store);
        let (store, report) =
            Store::open(dir.path(), StoreOptions::default(), Arc::new(clock)).expect("reopen");
        assert_eq!(report.segments, 2);
        assert_eq!(report.orphan_files_removed, 0);
        assert_eq!(snapshot_rows(&store, Signal::Spans), 12);
    }

    fn rollup_requests(store: &Store) -> i64 {
        let snap = store.snapshot(Signal::SpanRollups, TimeRange::ALL);
        let mut batches = snap.batches;
        for (_, path) in &snap.segments {
            batches.push(segment::read_segment(path, Signal::SpanRollups).expect("read rollups"));
        }
        batches
            .iter()
            .map(|b| {
                let cols = rollup::RollupColumns::of(b).expect("rollup columns");
                cols.requests.values().iter().sum::<i64>()
            })
            .sum()
    }

    #[tokio::test]
    async fn rollups_follow_spans_through_the_buffer_a_crash_and_a_flush() {
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = ManualClock::new(10 * NS_PER_HOUR);
        let (store, report) = open(dir.path(), &clock);
        assert_eq!(report.segments_without_rollups, 0);
        assert!(store.rollups_complete(), "a new folder starts complete");
        store
            .append(vec![(
                Signal::Spans,
                spans(90, NS_PER_HOUR, 1_000_000_000, "a"),
            )])
            .await
            .expect("append");
        assert_eq!(rollup_requests(&store), 90, "visible with the spans");
        drop(store); // a crash: rollups are not logged, the replay derives them again
        let (store, report) = open(dir.path(), &clock);
        assert_eq!(report.rows_replayed.get(&Signal::SpanRollups), None);
        assert_eq!(rollup_requests(&store), 90);
        store.flush().await.expect("flush");
        assert_eq!(rollup_requests(&store), 90, "flushed with the spans");
        let err = store
            .append(vec![(Signal::SpanRollups, spans(1, 0, 1, "x"))])
            .await
            .expect_err("rollups are derived");
        assert!(err.to_string().contains("derived"), "{err}");
    }

    #[tokio::test]
    async fn spans_stored_before_rollups_existed_are_rolled_up_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = ManualClock::new(10 * NS_PER_HOUR);
        let (store, _) = open(dir.path(), &clock);
        for hour in 1..4 {
            store
                .append(vec![(
                    Signal::Spans,
                    spans(50, hour * NS_PER_HOUR, 1_000_000, "o"),
                )])
                .await
                .expect("append");
            store.flush().await.expect("flush");
        }
        store.close().await.expect("close");
        // Make it a folder of an older version: no rollup segments, rollups not complete.
        {
            let mut catalog = Catalog::open(&dir.path().join("catalog.db")).expect("catalog");
            let rollup_ids: Vec<i64> = catalog
                .segments()
                .expect("segments")
                .iter()
                .filter(|s| s.signal == Signal::SpanRollups)
                .map(|s| s.id)
                .collect();
            assert_eq!(rollup_ids.len(), 3);
            catalog
                .commit_with_state(Vec::new(), &rollup_ids, &[])
                .expect("forget rollups");
            for key in [ROLLUPS_COMPLETE, ROLLUPS_OLDER_UP_TO, ROLLUPS_DONE_UP_TO] {
                catalog.remove_state(key).expect("forget the rollup state");
            }
        }
        let (store, report) = open(dir.path(), &clock);
        assert_eq!(report.segments_without_rollups, 3);
        assert_eq!(report.orphan_files_removed, 3, "the forgotten rollup files");
        assert!(!store.rollups_complete());
        assert_eq!(rollup_requests(&store), 0);
        // New spans come in and are flushed, with their rollups, before the older ones are
        // rolled up; a restart comes between. Neither may count anything twice.
        store
            .append(vec![(
                Signal::Spans,
                spans(20, 3 * NS_PER_HOUR + 1_000_000_000, 1_000_000, "n"),
            )])
            .await
            .expect("append");
        store.flush().await.expect("flush");
        store.maintain().await.expect("maintain");
        assert_eq!(
            store
                .segments()
                .iter()
                .filter(|s| s.signal == Signal::Spans)
                .count(),
            4,
            "hour 3's two segments would merge, but one waits for its rollups"
        );
        drop(store);
        let (store, report) = open(dir.path(), &clock);
        assert_eq!(
            report.segments_without_rollups, 3,
            "the same three, not the new one"
        );
        assert_eq!(rollup_requests(&store), 20);
        assert_eq!(store.roll_up_older().await.expect("roll up"), 3);
        assert!(store.rollups_complete());
        assert_eq!(rollup_requests(&store), 170);
        assert_eq!(store.roll_up_older().await.expect("again"), 0, "only once");
        drop(store);
        let (store, report) = open(dir.path(), &clock);
        assert_eq!(report.segments_without_rollups, 0);
        assert!(store.rollups_complete());
        assert_eq!(rollup_requests(&store), 170);
    }

    #[tokio::test]
    async fn a_relative_data_folder_is_resolved_to_absolute_segment_paths() {
        let dir = tempfile::tempdir().expect("temp dir");
        let relative = relative_to_cwd(dir.path());
        assert!(relative.is_relative());
        let clock = ManualClock::new(0);
        let (store, _) = open(&relative, &clock);
        assert!(store.data_dir().is_absolute());
        store
            .append(vec![(Signal::Spans, spans(2, 5, 1, "r"))])
            .await
            .expect("append");
        store.flush().await.expect("flush");
        let snap = store.snapshot(Signal::Spans, TimeRange::ALL);
        assert_eq!(snap.segments.len(), 1);
        assert!(
            snap.segments
                .iter()
                .all(|(_, path)| path.is_absolute() && path.exists())
        );
    }

    /// `dir` written relative to the current folder (`../../tmp/x`).
    fn relative_to_cwd(dir: &Path) -> PathBuf {
        let cwd = std::env::current_dir().expect("cwd");
        let mut relative = PathBuf::new();
        for _ in 1..cwd.components().count() {
            relative.push("..");
        }
        relative.join(dir.strip_prefix("/").expect("absolute temp dir"))
    }

    #[tokio::test]
    async fn close_flushes_everything_and_refuses_later_writes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = ManualClock::new(0);
        let (store, _) = open(dir.path(), &clock);
        store
            .append(vec![(Signal::Spans, spans(3, 5, 1, "e"))])
            .await
            .expect("append");
        let report = store.close().await.expect("close");
        assert_eq!(report.rows, 3);
        let err = store
            .append(vec![(Signal::Spans, spans(1, 5, 1, "f"))])
            .await
            .expect_err("closed");
        assert!(matches!(err, Error::ShuttingDown));
        let (_, report) = open(dir.path(), &clock);
        assert_eq!(report.records_replayed, 0);
        assert_eq!(report.segments, 2, "the spans and their rollups");
    }
}
