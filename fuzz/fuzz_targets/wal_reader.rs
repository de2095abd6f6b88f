//! The write-ahead log reader over any bytes: as a whole file, and as one record whose
//! checksum is right (so the fuzzer reaches the Arrow IPC decoding behind it).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sightline_storage::wal::fuzzing::read_any(data);
});
