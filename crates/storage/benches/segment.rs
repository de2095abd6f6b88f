//! Number to watch: `segment/write` throughput in spans per second — a flush sorts the buffer
//! and writes it as zstd Parquet with statistics and a trace-id bloom filter, and it must keep up
//! with ingest on one core. `segment/scan` is the other side: reading a whole segment back
//! into Arrow, what a query that cannot prune pays per segment. `segment/rollup` is what every
//! span batch costs on its way in: deriving its per-minute rollups (compare it with `write`).
//!
//! The input is 64k spans of the demo shop (one row group), sorted and written exactly as a
//! flush writes them.
//!
//! Run: `cargo bench -p sightline-storage --bench segment`.

use std::time::Duration;

use arrow::compute::concat_batches;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sightline_demo::Dice;
use sightline_model::Table;
use sightline_model::schema::{spans_schema, spans_to_batch};
use sightline_storage::rollup;
use sightline_storage::segment::{read_segment, sort_for_segment, write_segment};

mod common;

const ROWS: usize = 64 * 1024;

fn bench(c: &mut Criterion) {
    let mut dice = Dice::new(42);
    let mut batches = Vec::new();
    let mut rows = 0;
    while rows < ROWS {
        let spans = common::demo_spans(&mut dice);
        rows += spans.len();
        batches.push(spans_to_batch(&spans).expect("batch"));
    }
    let batch = concat_batches(&spans_schema(), &batches).expect("concat");
    let batch = batch.slice(0, ROWS);
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let path = dir.path().join("segment.parquet");

    let mut group = c.benchmark_group("segment");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.bench_function("write", |b| {
        b.iter(|| {
            let sorted = sort_for_segment(Table::Spans, &batch).expect("sort");
            write_segment(&path, Table::Spans, &sorted).expect("write")
        })
    });
    let bytes = write_segment(
        &path,
        Table::Spans,
        &sort_for_segment(Table::Spans, &batch).expect("sort"),
    )
    .expect("write");
    eprintln!(
        "segment of {ROWS} demo spans: {bytes} bytes, {:.1} bytes per span",
        bytes as f64 / ROWS as f64
    );
    group.bench_function("scan", |b| {
        b.iter(|| read_segment(&path, Table::Spans).expect("scan"))
    });
    // Rollups are derived per export body (a few hundred spans), not per flush.
    let bodies: Vec<_> = (0..ROWS)
        .step_by(300)
        .map(|at| batch.slice(at, 300.min(ROWS - at)))
        .collect();
    group.bench_function("rollup", |b| {
        b.iter(|| {
            bodies
                .iter()
                .map(|body| rollup::from_spans(body, &[]).expect("rollup").num_rows())
                .sum::<usize>()
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(10));
    targets = bench
}
criterion_main!(benches);
