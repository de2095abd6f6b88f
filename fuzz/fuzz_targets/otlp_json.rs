//! OTLP/JSON export bodies (traces, logs or metrics, picked by the first byte) through the
//! repairing JSON reader, limits and normalization, then into Arrow batches.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sightline_ingest::BodyEncoding;

fuzz_target!(|data: &[u8]| {
    sightline_ingest::fuzzing::ingest_any(data, BodyEncoding::Json);
});
