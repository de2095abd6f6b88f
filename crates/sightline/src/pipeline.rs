//! The ingest path after decoding, shared by every receiver: normalized rows become Arrow
//! batches and go to [`Store::append`], which derives the span rollups, makes the rows durable
//! in the write-ahead log and visible in the buffer; then the export's log rows are published
//! to live tails. Records arrive here already redacted (`sightline_ingest::redact`, on the
//! decoded request); what was replaced is counted per service and rule. Every span is stored as
//! received (`sample_rate = 1.0`).

use std::sync::Arc;

use sightline_ingest::{Normalized, Rejections};
use sightline_model::schema::{LogRow, logs_to_batch, metrics_to_batch, spans_to_batch};
use sightline_model::{Clock, ErrorCode, Signal};
use sightline_storage::Store;
use tokio::sync::broadcast;

use crate::self_metrics::SelfMetrics;

/// Why an export was not stored.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Storage(#[from] sightline_storage::Error),
    #[error("rows could not be converted for storage: {0}")]
    Rows(#[from] arrow::error::ArrowError),
    #[error("every record of the export was rejected ({count}); the first: {reason}")]
    AllRejected { count: u64, reason: String },
}

impl PipelineError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Storage(e) => e.code(),
            Self::Rows(_) => ErrorCode::Internal,
            Self::AllRejected { .. } => ErrorCode::BadRequest,
        }
    }
}

/// What an accepted export kept and left out.
#[derive(Debug, Default, Clone)]
pub struct Accepted {
    pub rows: usize,
    pub rejections: Rejections,
}

/// Everything a receiver needs to store what it decoded.
#[derive(Debug, Clone)]
pub struct Pipeline {
    store: Store,
    clock: Arc<dyn Clock>,
    metrics: Arc<SelfMetrics>,
    tail: LogTail,
}

/// Stored log lines, as they arrive, for live tails (the logs page). A tail that falls behind
/// loses the oldest batches and is told how many.
#[derive(Debug, Clone)]
pub struct LogTail {
    sender: broadcast::Sender<Arc<Vec<LogRow>>>,
}

impl Default for LogTail {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(TAIL_BATCHES).0,
        }
    }
}

impl LogTail {
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Vec<LogRow>>> {
        self.sender.subscribe()
    }

    fn publish(&self, rows: Vec<LogRow>) {
        if self.sender.receiver_count() > 0 {
            // No receiver left between the check and the send is fine: nobody is tailing.
            let _ = self.sender.send(Arc::new(rows));
        }
    }
}

/// Exports a live tail may fall behind by before it skips some.
const TAIL_BATCHES: usize = 1024;

impl Pipeline {
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        metrics: Arc<SelfMetrics>,
        tail: LogTail,
    ) -> Self {
        Self {
            store,
            clock,
            metrics,
            tail,
        }
    }

    pub fn now_ns(&self) -> i64 {
        self.clock.now_ns()
    }

    pub fn metrics(&self) -> &SelfMetrics {
        &self.metrics
    }

    pub fn metrics_handle(&self) -> Arc<SelfMetrics> {
        self.metrics.clone()
    }

    /// Stores the rows durably; returns once they are synced to the log and queryable.
    pub async fn store(
        &self,
        signal: Signal,
        normalized: Normalized,
    ) -> Result<Accepted, PipelineError> {
        let Normalized {
            spans,
            logs,
            metrics,
            rejections,
            limited,
            redactions,
            timing,
        } = normalized;
        self.metrics.record_timing(timing, self.clock.now_ns());
        self.metrics.record_limited(limited);
        self.metrics.record_redactions(signal, &redactions);
        let rows = spans.len() + logs.len() + metrics.len();
        if rows == 0 && rejections.count > 0 {
            // Nothing to keep: the sender learns why with a 400, not a 200 it may not read.
            self.metrics.record_rejected(signal, rejections.count);
            self.metrics
                .record_bad_request(signal, ErrorCode::BadRequest);
            return Err(PipelineError::AllRejected {
                count: rejections.count,
                reason: rejections.first_reason.unwrap_or_default(),
            });
        }
        let mut batches = Vec::with_capacity(3);
        if !spans.is_empty() {
            batches.push((Signal::Spans, spans_to_batch(&spans)?));
        }
        if !logs.is_empty() {
            batches.push((Signal::Logs, logs_to_batch(&logs)?));
        }
        if !metrics.is_empty() {
            batches.push((Signal::Metrics, metrics_to_batch(&metrics)?));
        }
        let result = self.store.append(batches).await;
        self.metrics.record_export(
            signal,
            rows as u64,
            rejections.count,
            result.as_ref().err().map(|e| e.code()),
        );
        result?;
        if !logs.is_empty() {
            self.tail.publish(logs);
        }
        Ok(Accepted { rows, rejections })
    }
}
