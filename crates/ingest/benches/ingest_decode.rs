//! Number to watch: `decode+normalize/traces-protobuf` throughput, in spans per second on one
//! core — the work every OTLP/HTTP traces export costs before it reaches the write-ahead log.
//!
//! Inputs are the demo shop's exports (`sightline demo` shapes, 50 requests, about 300 spans and
//! 40 log lines per body), the same bodies `sightline bench ingest` sends. Each step is measured
//! on its own: protobuf and OTLP/JSON decode with limits and normalization into rows, then rows
//! into the Arrow batch the log and the buffer hold.
//!
//! `redaction-*-protobuf/{none,defaults,all}` are the same decode and normalization with no
//! redaction rule, the default rules and every rule: their ratio is what redaction adds.
//!
//! Run: `cargo bench -p sightline-ingest --bench ingest_decode`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use sightline_demo::{Dice, export_requests};
use sightline_ingest::redact::{BUILT_IN, PatternConfig, RedactionConfig};
use sightline_ingest::{BodyEncoding, Intake, Limits, ingest_logs, ingest_traces};
use sightline_model::schema::{logs_to_batch, spans_to_batch};

const NOW_NS: i64 = 1_800_000_000_000_000_000;

fn bench(c: &mut Criterion) {
    let plain = Intake::unredacted(Limits::default());
    let (traces, logs) = export_requests(&mut Dice::new(42), 50, NOW_NS);
    let traces_pb = traces.encode_to_vec();
    let logs_pb = logs.encode_to_vec();
    let traces_json = serde_json::to_vec(&traces).expect("OTLP/JSON");
    let spans = ingest_traces(&traces_pb, BodyEncoding::Protobuf, NOW_NS, &plain)
        .expect("demo traces decode")
        .spans;
    let log_rows = ingest_logs(&logs_pb, BodyEncoding::Protobuf, NOW_NS, &plain)
        .expect("demo logs decode")
        .logs;

    let mut group = c.benchmark_group("decode+normalize");
    group.throughput(Throughput::Elements(spans.len() as u64));
    group.bench_function("traces-protobuf", |b| {
        b.iter(|| {
            ingest_traces(&traces_pb, BodyEncoding::Protobuf, NOW_NS, &plain).expect("decode")
        })
    });
    group.bench_function("traces-json", |b| {
        b.iter(|| ingest_traces(&traces_json, BodyEncoding::Json, NOW_NS, &plain).expect("decode"))
    });
    group.throughput(Throughput::Elements(log_rows.len() as u64));
    group.bench_function("logs-protobuf", |b| {
        b.iter(|| ingest_logs(&logs_pb, BodyEncoding::Protobuf, NOW_NS, &plain).expect("decode"))
    });
    group.finish();

    // Redaction's cost: the same decode and normalization with no rule, the default rules and
    // every rule (the opt-in ones and an operator's pattern too); bench/README.md reports the
    // ratios to "none".
    let defaults = Intake::new(
        Limits::default(),
        RedactionConfig::default().compile(None).expect("defaults"),
    );
    let everything = Intake::new(
        Limits::default(),
        RedactionConfig {
            rules: BUILT_IN.iter().map(|r| r.to_string()).collect(),
            patterns: vec![PatternConfig {
                name: "customer-id".into(),
                regex: "CUST-[0-9]{8}".into(),
            }],
            ..RedactionConfig::default()
        }
        .compile(None)
        .expect("every rule"),
    );
    for (signal, body, rows) in [
        ("traces", &traces_pb, spans.len()),
        ("logs", &logs_pb, log_rows.len()),
    ] {
        let mut group = c.benchmark_group(format!("redaction-{signal}-protobuf"));
        group.throughput(Throughput::Elements(rows as u64));
        for (name, intake) in [
            ("none", &plain),
            ("defaults", &defaults),
            ("all", &everything),
        ] {
            group.bench_function(name, |b| {
                b.iter(|| {
                    if signal == "traces" {
                        ingest_traces(body, BodyEncoding::Protobuf, NOW_NS, intake)
                            .expect("decode")
                            .row_count()
                    } else {
                        ingest_logs(body, BodyEncoding::Protobuf, NOW_NS, intake)
                            .expect("decode")
                            .row_count()
                    }
                })
            });
        }
        group.finish();
    }

    // Redaction's parts over the demo's keys and texts (per call).
    let keys: Vec<String> = spans
        .iter()
        .flat_map(|s| {
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&s.attributes)
                .expect("attributes")
                .into_iter()
                .map(|(k, _)| k)
        })
        .collect();
    let texts: Vec<String> = spans
        .iter()
        .flat_map(|s| {
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&s.attributes)
                .expect("attributes")
                .into_iter()
                .filter_map(|(_, v)| v.as_str().map(str::to_string))
        })
        .collect();
    let mut group = c.benchmark_group("redaction-parts");
    group.throughput(Throughput::Elements(keys.len() as u64));
    group.bench_function("sensitive-key", |b| {
        b.iter(|| {
            keys.iter()
                .filter(|k| defaults.redactor.is_sensitive_key(k))
                .count()
        })
    });
    group.throughput(Throughput::Elements(texts.len() as u64));
    group.bench_function("find-in-text", |b| {
        b.iter(|| {
            texts
                .iter()
                .map(|t| defaults.redactor.find(t).len())
                .sum::<usize>()
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
