//! The log writer thread: it takes appends from a bounded queue, writes a whole group of them
//! with one write and one `fdatasync`, and only then puts their rows into the buffer and answers
//! each request of the group. A rotation request starts a new log file and moves the buffer's
//! rows to the flushing set in the same step, so the new file's number is a checkpoint below
//! which every record is covered by the flushing rows.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use arrow::array::RecordBatch;
use sightline_model::Table;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use super::{Inner, write_state};
use crate::error::{Error, Result};
use crate::wal;

/// Rows of one table, and the framed log record that holds them (empty for a derived table's
/// rows, which are not logged: a replay derives them again).
pub(super) struct FramedRows {
    pub table: Table,
    pub batch: RecordBatch,
    pub framed: Vec<u8>,
}

/// What the log writer is asked to do.
pub(super) enum WalCommand {
    /// Make these rows durable and visible, then answer.
    Append {
        records: Vec<FramedRows>,
        done: oneshot::Sender<Result<()>>,
    },
    /// Start a new log file; answer with its sequence number (the new checkpoint).
    Rotate { done: oneshot::Sender<Result<u64>> },
}

type PendingAppend = (Vec<FramedRows>, oneshot::Sender<Result<()>>);

/// Bytes of appends gathered into one group at most.
const GROUP_BYTES: usize = 64 * 1024 * 1024;

/// The thread's loop: until every sender is gone.
pub(super) fn run(
    inner: Arc<Inner>,
    mut writer: wal::WalWriter,
    mut receiver: mpsc::Receiver<WalCommand>,
) {
    while let Some(first) = receiver.blocking_recv() {
        let mut commands = vec![first];
        let mut bytes = 0usize;
        while bytes < GROUP_BYTES {
            match receiver.try_recv() {
                Ok(command) => {
                    if let WalCommand::Append { records, .. } = &command {
                        bytes += records.iter().map(|r| r.framed.len()).sum::<usize>();
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
    inner.hold.pass();
    let framed: Vec<&[u8]> = group
        .iter()
        .flat_map(|(records, _)| records.iter().map(|r| r.framed.as_slice()))
        .filter(|framed| !framed.is_empty())
        .collect();
    let started = Instant::now();
    let result = writer.append_and_sync(&framed);
    inner.counters.wal_syncs.fetch_add(1, Ordering::Relaxed);
    inner
        .counters
        .wal_sync_ns
        .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
    inner
        .counters
        .wal_failing
        .store(result.is_err(), Ordering::Relaxed);
    match result {
        Ok(()) => {
            {
                let now_ns = inner.clock.now_ns();
                let mut state = write_state(&inner.state);
                for (records, _) in &group {
                    for rows in records {
                        state.buffer_batch(rows.table, rows.batch.clone(), now_ns);
                        inner
                            .counters
                            .rows_appended(rows.table)
                            .fetch_add(rows.batch.num_rows() as u64, Ordering::Relaxed);
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

/// Starts a new log file and moves the buffer's rows to the flushing set; returns the new
/// file's sequence number, below which every file is covered by the flushing rows.
fn rotate(inner: &Inner, writer: &mut wal::WalWriter) -> Result<u64> {
    let next = wal::WalWriter::create(&inner.data_dir.join("wal"), writer.seq() + 1)?;
    *writer = next;
    write_state(&inner.state).start_flush();
    Ok(writer.seq())
}
