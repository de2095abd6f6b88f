//! Number to watch: `wal-append/synced` time per append — the floor under every acknowledged
//! export, since an OTLP answer waits for its rows to be synced to the write-ahead log. The store
//! groups concurrent exports into one synced write, so this is per group, not per request.
//!
//! Measured: framing a batch as a log record (Arrow IPC plus checksum), then appending framed
//! records to a log file with and without the sync; the difference is what durability costs on
//! this disk. The files live under the build's temporary folder (the real disk, not a tmpfs).
//!
//! Run: `cargo bench -p sightline-storage --bench wal_append`.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sightline_demo::Dice;
use sightline_model::Signal;
use sightline_model::schema::spans_to_batch;
use sightline_storage::wal::{WalWriter, encode_record};

mod common;

fn bench(c: &mut Criterion) {
    let spans = common::demo_spans(&mut Dice::new(42));
    let batch = spans_to_batch(&spans).expect("batch");
    let record = encode_record(Signal::Spans, &batch).expect("encode");
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");

    let mut group = c.benchmark_group("wal-append");
    group.throughput(Throughput::Elements(batch.num_rows() as u64));
    group.bench_function("encode-record", |b| {
        b.iter(|| encode_record(Signal::Spans, &batch).expect("encode"))
    });
    group.throughput(Throughput::Bytes(record.len() as u64));
    let mut seq = 0u64;
    for synced in [true, false] {
        let name = if synced { "synced" } else { "unsynced" };
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                // A fresh file per sample, so the file does not grow without bound.
                seq += 1;
                let mut writer = WalWriter::create(dir.path(), seq).expect("log file");
                let started = Instant::now();
                for _ in 0..iters {
                    let framed: [&[u8]; 1] = [&record];
                    if synced {
                        writer.append_and_sync(&framed).expect("append");
                    } else {
                        writer.append_unsynced(&framed).expect("append");
                    }
                }
                let elapsed = started.elapsed();
                drop(writer);
                let _ = std::fs::remove_file(sightline_storage::wal::file_path(dir.path(), seq));
                elapsed
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
