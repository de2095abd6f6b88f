//! Number to watch: `decode+normalize/traces-protobuf` throughput, in spans per second on one
//! core — the work every OTLP/HTTP traces export costs before it reaches the write-ahead log.
//!
//! Inputs are the demo shop's exports (`sightline demo` shapes, 50 requests, about 300 spans and
//! 40 log lines per body), the same bodies `sightline bench ingest` sends. Each step is measured
//! on its own: protobuf and OTLP/JSON decode with limits and normalization into rows, then rows
//! into the Arrow batch the log and the buffer hold.
//!
//! Run: `cargo bench -p sightline-ingest --bench ingest_decode`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use sightline_demo::{Dice, export_requests};
use sightline_ingest::{BodyEncoding, Limits, ingest_logs, ingest_traces};
use sightline_model::schema::{logs_to_batch, spans_to_batch};

const NOW_NS: i64 = 1_800_000_000_000_000_000;

fn bench(c: &mut Criterion) {
    let (traces, logs) = export_requests(&mut Dice::new(42), 50, NOW_NS);
    let traces_pb = traces.encode_to_vec();
    let logs_pb = logs.encode_to_vec();
    let traces_json = serde_json::to_vec(&traces).expect("OTLP/JSON");
    let spans = ingest_traces(
        &traces_pb,
        BodyEncoding::Protobuf,
        NOW_NS,
        Limits::default(),
    )
    .expect("demo traces decode")
    .spans;
    let log_rows = ingest_logs(&logs_pb, BodyEncoding::Protobuf, NOW_NS, Limits::default())
        .expect("demo logs decode")
        .logs;

    let mut group = c.benchmark_group("decode+normalize");
    group.throughput(Throughput::Elements(spans.len() as u64));
    group.bench_function("traces-protobuf", |b| {
        b.iter(|| {
            ingest_traces(
                &traces_pb,
                BodyEncoding::Protobuf,
                NOW_NS,
                Limits::default(),
            )
            .expect("decode")
        })
    });
    group.bench_function("traces-json", |b| {
        b.iter(|| {
            ingest_traces(&traces_json, BodyEncoding::Json, NOW_NS, Limits::default())
                .expect("decode")
        })
    });
    group.throughput(Throughput::Elements(log_rows.len() as u64));
    group.bench_function("logs-protobuf", |b| {
        b.iter(|| {
            ingest_logs(&logs_pb, BodyEncoding::Protobuf, NOW_NS, Limits::default())
                .expect("decode")
        })
    });
    group.finish();

    let mut group = c.benchmark_group("rows-to-arrow");
    group.throughput(Throughput::Elements(spans.len() as u64));
    group.bench_function("spans", |b| {
        b.iter(|| spans_to_batch(&spans).expect("batch"))
    });
    group.throughput(Throughput::Elements(log_rows.len() as u64));
    group.bench_function("logs", |b| {
        b.iter(|| logs_to_batch(&log_rows).expect("batch"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
