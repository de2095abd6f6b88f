//! One entry point per input format for the fuzz targets (`fuzz/`) and their regression tests:
//! any bytes go through decode, redaction, limits and normalization, and the rows into Arrow batches.
//! A panic, or rows that cannot become a batch, is a bug.

use sightline_model::schema::{logs_to_batch, metrics_to_batch, spans_to_batch};

use crate::{BodyEncoding, Intake, ingest_logs, ingest_metrics, ingest_traces};

/// The moment the fuzzed bodies are received at (2027-01-15).
const RECEIVED_NS: i64 = 1_800_000_000_000_000_000;

/// The first byte picks the signal (traces, logs, metrics); the rest is the export body.
pub fn ingest_any(data: &[u8], encoding: BodyEncoding) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    // The default rules, so redaction is fuzzed with the rest.
    let intake = Intake::default();
    match selector % 3 {
        0 => {
            if let Ok(rows) = ingest_traces(body, encoding, RECEIVED_NS, &intake) {
                assert!(
                    spans_to_batch(&rows.spans).is_ok(),
                    "normalized spans that are not a valid batch"
                );
            }
        }
        1 => {
            if let Ok(rows) = ingest_logs(body, encoding, RECEIVED_NS, &intake) {
                assert!(
                    logs_to_batch(&rows.logs).is_ok(),
                    "normalized logs that are not a valid batch"
                );
            }
        }
        _ => {
            if let Ok(rows) = ingest_metrics(body, encoding, RECEIVED_NS, &intake) {
                assert!(
                    metrics_to_batch(&rows.metrics).is_ok(),
                    "normalized points that are not a valid batch"
                );
            }
        }
    }
}
