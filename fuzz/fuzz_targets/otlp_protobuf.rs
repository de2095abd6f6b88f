//! OTLP protobuf export bodies (traces, logs or metrics, picked by the first byte) through
//! decode, limits and normalization, then into Arrow batches: any bytes must give rows or a
//! precise error, never a panic or an unbounded allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sightline_ingest::BodyEncoding;

fuzz_target!(|data: &[u8]| {
    sightline_ingest::fuzzing::ingest_any(data, BodyEncoding::Protobuf);
});
