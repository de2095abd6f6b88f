//! Opening a data folder: the catalog says which segments exist and where the log's checkpoint
//! is; files it does not list are removed; every log file at or above the checkpoint is replayed
//! into the buffer (up to its first torn or corrupt record, which is reported, never fatal),
//! with the span rollups derived again from the replayed spans; then the log writer starts on a
//! new file.

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use sightline_model::{Clock, Table};
use tokio::sync::mpsc;
use tracing::warn;

use super::backfill::older_span_segments;
use super::buffer::State;
use super::layout::remove_orphan_segment_files;
use super::{Counters, Inner, OpenReport, Store, TornTail, lock, log_writer};
use crate::catalog::Catalog;
use crate::config::StoreOptions;
use crate::error::{Error, Result};
use crate::trace_index::TraceIndex;
use crate::{rollup, wal};

pub(super) fn open(
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
    let now_ns = clock.now_ns();
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
            let rollups =
                rollup::derived(record.signal, &record.batch, &options.latency_thresholds_ns)?;
            state.buffer_batch(record.signal.table(), record.batch, now_ns);
            if let Some(rollups) = rollups {
                state.buffer_batch(Table::SpanRollups, rollups, now_ns);
            }
        }
    }
    let writer = wal::WalWriter::create(&wal_dir, last_seq + 1)?;
    let (sender, receiver) = mpsc::channel(options.storage.queue_capacity.max(1));
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
        closed: std::sync::atomic::AtomicBool::new(false),
        counters: Counters::default(),
        trace_index: TraceIndex::default(),
        rollups_pending: Mutex::new(rollups_pending),
        rolling_up: Mutex::new(()),
        hold: Default::default(),
        hints: Mutex::new(None),
    });
    let thread_inner = inner.clone();
    let handle = std::thread::Builder::new()
        .name("sightline-wal".into())
        .spawn(move || log_writer::run(thread_inner, writer, receiver))
        .map_err(|source| Error::WalIo {
            path: wal_dir.clone(),
            source,
        })?;
    *lock(&inner.writer) = Some(handle);
    Ok((Store { inner }, report))
}
