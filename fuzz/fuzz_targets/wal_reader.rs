//! The write-ahead log reader over any bytes: as a whole file, and as one record whose
//! checksum is right (so the fuzzer reaches the Arrow IPC decoding behind it).
//!
//! The reader checks framing, buffer bounds and schema types before Arrow's IPC reader sees a
//! record, and catches a panic inside that reader (the record is then reported as not
//! decodable). libFuzzer's panic hook would abort on the caught panic too, so the hook is put
//! back to the default one: only a panic that escapes the reader ends the run.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        let _ = std::panic::take_hook();
    },
    |data: &[u8]| {
        sightline_storage::wal::fuzzing::read_any(data);
    }
);
