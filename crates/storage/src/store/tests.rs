use super::backfill::{ROLLUPS_COMPLETE, ROLLUPS_DONE_UP_TO, ROLLUPS_OLDER_UP_TO};
use super::layout::NS_PER_HOUR;
use super::*;
use crate::config::{RetentionConfig, StorageConfig};
use sightline_model::schema::{LogRow, SpanRow, logs_to_batch, spans_to_batch};
use sightline_model::{ErrorCode, HumanDuration, Lifetime, ManualClock, SpanKind, SpanStatus};

fn spans(n: usize, start_ns: i64, step_ns: i64, prefix: &str) -> RecordBatch {
    let rows: Vec<SpanRow> = (0..n)
        .map(|i| {
            let start = start_ns + i as i64 * step_ns;
            SpanRow {
                kind: SpanKind::Server,
                status: SpanStatus::Ok,
                ..SpanRow::new(
                    format!("{prefix}{i:030}"),
                    format!("{i:016}"),
                    "op",
                    "api",
                    start,
                    start + 10,
                )
            }
        })
        .collect();
    spans_to_batch(&rows).expect("valid rows")
}

fn snapshot_rows(store: &Store, table: Table) -> usize {
    let snap = store.snapshot(table, TimeRange::ALL);
    let buffered: usize = snap.batches.iter().map(|b| b.num_rows()).sum();
    let stored: i64 = snap.segments.iter().map(|(s, _)| s.row_count).sum();
    buffered + stored as usize
}

fn open(dir: &Path, clock: &ManualClock) -> (Store, OpenReport) {
    Store::open(dir, StoreOptions::default(), Arc::new(clock.clone())).expect("open")
}

#[tokio::test]
async fn append_is_visible_at_once_and_survives_reopen_without_duplicates() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = ManualClock::new(10 * NS_PER_HOUR);
    let (store, _) = open(dir.path(), &clock);
    store
        .append(vec![(Signal::Spans, spans(5, NS_PER_HOUR, 1, "a"))])
        .await
        .expect("append");
    assert_eq!(snapshot_rows(&store, Table::Spans), 5);
    let stats = store.stats();
    assert_eq!(
        (stats.wal_syncs, stats.wal_write_errors, stats.wal_failing),
        (1, 0, false),
        "the log was synced before the append answered"
    );
    drop(store); // no close: as after a crash, the rows live only in the log
    let (store, report) = open(dir.path(), &clock);
    assert_eq!(report.rows_replayed.get(&Signal::Spans), Some(&5));
    assert_eq!(snapshot_rows(&store, Table::Spans), 5);
    store.flush().await.expect("flush");
    store
        .append(vec![(Signal::Spans, spans(2, NS_PER_HOUR, 1, "b"))])
        .await
        .expect("append");
    drop(store);
    let (store, report) = open(dir.path(), &clock);
    assert_eq!(
        report.rows_replayed.get(&Signal::Spans),
        Some(&2),
        "flushed rows are not replayed"
    );
    assert_eq!(snapshot_rows(&store, Table::Spans), 7);
}

#[tokio::test]
async fn import_writes_hourly_segments_past_the_log_and_they_stay_after_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = ManualClock::new(10 * NS_PER_HOUR);
    let (store, _) = open(dir.path(), &clock);
    // 120 rows a minute apart: two hours.
    let report = store
        .import(Signal::Spans, spans(120, NS_PER_HOUR, 60_000_000_000, "i"))
        .await
        .expect("import");
    assert_eq!(
        (report.segments_written, report.rows),
        (3, 120),
        "two hourly segments of spans, one daily segment of their rollups"
    );
    assert!(report.bytes > 0);
    assert_eq!(snapshot_rows(&store, Table::Spans), 120);
    let second_hour = TimeRange::new(Some(2 * NS_PER_HOUR), Some(3 * NS_PER_HOUR));
    assert_eq!(store.snapshot(Table::Spans, second_hour).segments.len(), 1);
    let wal_bytes: u64 = wal::list_files(&dir.path().join("wal"))
        .expect("list")
        .iter()
        .map(|seq| {
            std::fs::metadata(wal::file_path(&dir.path().join("wal"), *seq))
                .expect("log file")
                .len()
        })
        .sum();
    assert!(
        wal_bytes < 64,
        "imported rows are not written to the log ({wal_bytes} bytes)"
    );
    drop(store);
    let (store, report) = open(dir.path(), &clock);
    assert_eq!(report.segments, 3);
    assert!(report.rows_replayed.is_empty());
    assert_eq!(
        snapshot_rows(&store, Table::SpanRollups),
        120,
        "a minute apart"
    );
    assert_eq!(snapshot_rows(&store, Table::Spans), 120);
}

#[tokio::test]
async fn replayed_rows_count_their_own_bytes_in_the_buffer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = ManualClock::new(10 * NS_PER_HOUR);
    let (store, _) = open(dir.path(), &clock);
    store
        .append(vec![(Signal::Spans, spans(2000, NS_PER_HOUR, 1, "a"))])
        .await
        .expect("append");
    let appended = store.stats().buffered_bytes;
    drop(store);
    let (store, _) = open(dir.path(), &clock);
    let replayed = store.stats().buffered_bytes;
    // Read back from the log, every column is a slice of one buffer: counting the buffer once
    // per column would make a restarted server refuse ingest as "buffer full".
    assert!(
        replayed <= appended * 2 && replayed * 2 >= appended,
        "appended {appended} bytes, replayed {replayed}"
    );
    store.flush().await.expect("flush");
    assert_eq!(
        store.stats().buffered_bytes,
        0,
        "a flush gives every byte back"
    );
}

#[tokio::test]
async fn flush_writes_one_segment_per_hour_and_snapshot_prunes_by_time() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = ManualClock::new(10 * NS_PER_HOUR);
    let (store, _) = open(dir.path(), &clock);
    // 6 rows, 30 minutes apart: three hours.
    store
        .append(vec![(Signal::Spans, spans(6, 0, NS_PER_HOUR / 2, "a"))])
        .await
        .expect("append");
    let report = store.flush().await.expect("flush");
    assert_eq!(
        (report.segments_written, report.rows),
        (4, 6),
        "three hours of spans, and the day of their rollups"
    );
    assert_eq!(
        store.snapshot(Table::Spans, TimeRange::ALL).segments.len(),
        3
    );
    let second_hour = TimeRange::new(Some(NS_PER_HOUR), Some(2 * NS_PER_HOUR));
    let snap = store.snapshot(Table::Spans, second_hour);
    assert_eq!(snap.segments.len(), 1);
    assert!(snap.batches.is_empty());
    assert!(snap.segments[0].1.exists());
    assert_eq!(snap.segments[0].0.row_count, 2);
}

#[tokio::test]
async fn compaction_merges_small_segments_of_a_closed_hour_and_retention_drops_old_ones() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = ManualClock::new(10 * NS_PER_HOUR);
    let options = StoreOptions {
        storage: StorageConfig {
            delete_grace: HumanDuration::ZERO,
            ..StorageConfig::default()
        },
        retention: RetentionConfig {
            spans: Lifetime::For(HumanDuration::from_secs(3600 * 5)),
            ..RetentionConfig::default()
        },
        ..StoreOptions::default()
    };
    let (store, _) = Store::open(dir.path(), options, Arc::new(clock.clone())).expect("open");
    for i in 0..3 {
        store
            .append(vec![(
                Signal::Spans,
                spans(4, 8 * NS_PER_HOUR + i, 1000, "c"),
            )])
            .await
            .expect("append");
        store.flush().await.expect("flush");
    }
    store
        .append(vec![(Signal::Spans, spans(4, NS_PER_HOUR, 1000, "d"))])
        .await
        .expect("append");
    store.flush().await.expect("flush");
    assert_eq!(
        store.segments().len(),
        8,
        "four of spans, four of their rollups"
    );
    let report = store.maintain().await.expect("maintain");
    assert_eq!(
        report.segments_expired, 1,
        "rollups outlive spans by default"
    );
    assert_eq!(
        report.segments_compacted, 7,
        "three of spans, four of rollups"
    );
    let of = |table| -> Vec<SegmentMeta> {
        store
            .segments()
            .into_iter()
            .filter(|s| s.table == table)
            .collect()
    };
    let segments = of(Table::Spans);
    assert_eq!(segments.len(), 1);
    assert_eq!(segments[0].row_count, 12);
    assert_eq!(segments[0].level, 1);
    let rollups = of(Table::SpanRollups);
    assert_eq!(rollups.len(), 1, "one segment a day");
    assert_eq!(
        (rollups[0].row_count, rollups[0].level),
        (2, 1),
        "three flushes of one minute's requests merge into one row, beside hour 1's"
    );
    let merged =
        segment::read_segment(&store.data_dir().join(&rollups[0].path), Table::SpanRollups)
            .expect("read rollups");
    let cols = sightline_model::rollup::RollupColumns::of(&merged).expect("rollup columns");
    assert_eq!(cols.requests.values().to_vec(), vec![4, 12]);
    assert_eq!(report.files_deleted, 8);
    drop(store);
    let (store, report) =
        Store::open(dir.path(), StoreOptions::default(), Arc::new(clock)).expect("reopen");
    assert_eq!(report.segments, 2);
    assert_eq!(report.orphan_files_removed, 0);
    assert_eq!(snapshot_rows(&store, Table::Spans), 12);
}

fn rollup_requests(store: &Store) -> i64 {
    let snap = store.snapshot(Table::SpanRollups, TimeRange::ALL);
    let mut batches = snap.batches;
    for (_, path) in &snap.segments {
        batches.push(segment::read_segment(path, Table::SpanRollups).expect("read rollups"));
    }
    batches
        .iter()
        .map(|b| {
            let cols = sightline_model::rollup::RollupColumns::of(b).expect("rollup columns");
            cols.requests.values().iter().sum::<i64>()
        })
        .sum()
}

#[tokio::test]
async fn rollups_follow_spans_through_the_buffer_a_crash_and_a_flush() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = ManualClock::new(10 * NS_PER_HOUR);
    let (store, report) = open(dir.path(), &clock);
    assert_eq!(report.segments_without_rollups, 0);
    assert!(store.rollups_complete(), "a new folder starts complete");
    store
        .append(vec![(
            Signal::Spans,
            spans(90, NS_PER_HOUR, 1_000_000_000, "a"),
        )])
        .await
        .expect("append");
    assert_eq!(rollup_requests(&store), 90, "visible with the spans");
    drop(store); // a crash: rollups are not logged, the replay derives them again
    let (store, report) = open(dir.path(), &clock);
    assert_eq!(
        report.rows_replayed,
        HashMap::from([(Signal::Spans, 90)]),
        "only the spans come back from the log"
    );
    assert_eq!(rollup_requests(&store), 90);
    store.flush().await.expect("flush");
    assert_eq!(rollup_requests(&store), 90, "flushed with the spans");
    let logs = logs_to_batch(&[LogRow {
        service_name: "api".into(),
        severity: "info",
        body: "x".into(),
        attributes: "{}".into(),
        resource_attributes: "{}".into(),
        ..Default::default()
    }])
    .expect("log rows");
    let err = store
        .append(vec![(Signal::Spans, logs)])
        .await
        .expect_err("a log batch is not a span batch");
    assert!(
        matches!(
            err,
            Error::SchemaMismatch {
                table: Table::Spans
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.code(),
        ErrorCode::Internal,
        "a caller bug, not a reason to retry"
    );
}

#[tokio::test]
async fn spans_stored_before_rollups_existed_are_rolled_up_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = ManualClock::new(10 * NS_PER_HOUR);
    let (store, _) = open(dir.path(), &clock);
    for hour in 1..4 {
        store
            .append(vec![(
                Signal::Spans,
                spans(50, hour * NS_PER_HOUR, 1_000_000, "o"),
            )])
            .await
            .expect("append");
        store.flush().await.expect("flush");
    }
    store.close().await.expect("close");
    // Make it a folder of an older version: no rollup segments, rollups not complete.
    {
        let mut catalog = Catalog::open(&dir.path().join("catalog.db")).expect("catalog");
        let rollup_ids: Vec<i64> = catalog
            .segments()
            .expect("segments")
            .iter()
            .filter(|s| s.table == Table::SpanRollups)
            .map(|s| s.id)
            .collect();
        assert_eq!(rollup_ids.len(), 3);
        catalog
            .commit_with_state(Vec::new(), &rollup_ids, &[])
            .expect("forget rollups");
        for key in [ROLLUPS_COMPLETE, ROLLUPS_OLDER_UP_TO, ROLLUPS_DONE_UP_TO] {
            catalog.remove_state(key).expect("forget the rollup state");
        }
    }
    let (store, report) = open(dir.path(), &clock);
    assert_eq!(report.segments_without_rollups, 3);
    assert_eq!(report.orphan_files_removed, 3, "the forgotten rollup files");
    assert!(!store.rollups_complete());
    assert_eq!(rollup_requests(&store), 0);
    // New spans come in and are flushed, with their rollups, before the older ones are
    // rolled up; a restart comes between. Neither may count anything twice.
    store
        .append(vec![(
            Signal::Spans,
            spans(20, 3 * NS_PER_HOUR + 1_000_000_000, 1_000_000, "n"),
        )])
        .await
        .expect("append");
    store.flush().await.expect("flush");
    store.maintain().await.expect("maintain");
    assert_eq!(
        store
            .segments()
            .iter()
            .filter(|s| s.table == Table::Spans)
            .count(),
        4,
        "hour 3's two segments would merge, but one waits for its rollups"
    );
    drop(store);
    let (store, report) = open(dir.path(), &clock);
    assert_eq!(
        report.segments_without_rollups, 3,
        "the same three, not the new one"
    );
    assert_eq!(rollup_requests(&store), 20);
    assert_eq!(store.roll_up_older().await.expect("roll up"), 3);
    assert!(store.rollups_complete());
    assert_eq!(rollup_requests(&store), 170);
    assert_eq!(store.roll_up_older().await.expect("again"), 0, "only once");
    drop(store);
    let (store, report) = open(dir.path(), &clock);
    assert_eq!(report.segments_without_rollups, 0);
    assert!(store.rollups_complete());
    assert_eq!(rollup_requests(&store), 170);
}

#[tokio::test]
async fn a_relative_data_folder_is_resolved_to_absolute_segment_paths() {
    let dir = tempfile::tempdir().expect("temp dir");
    let relative = relative_to_cwd(dir.path());
    assert!(relative.is_relative());
    let clock = ManualClock::new(0);
    let (store, _) = open(&relative, &clock);
    assert!(store.data_dir().is_absolute());
    store
        .append(vec![(Signal::Spans, spans(2, 5, 1, "r"))])
        .await
        .expect("append");
    store.flush().await.expect("flush");
    let snap = store.snapshot(Table::Spans, TimeRange::ALL);
    assert_eq!(snap.segments.len(), 1);
    assert!(
        snap.segments
            .iter()
            .all(|(_, path)| path.is_absolute() && path.exists())
    );
}

/// `dir` written relative to the current folder (`../../tmp/x`).
fn relative_to_cwd(dir: &Path) -> PathBuf {
    let cwd = std::env::current_dir().expect("cwd");
    let mut relative = PathBuf::new();
    for _ in 1..cwd.components().count() {
        relative.push("..");
    }
    relative.join(dir.strip_prefix("/").expect("absolute temp dir"))
}

#[tokio::test]
async fn close_flushes_everything_and_refuses_later_writes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = ManualClock::new(0);
    let (store, _) = open(dir.path(), &clock);
    store
        .append(vec![(Signal::Spans, spans(3, 5, 1, "e"))])
        .await
        .expect("append");
    let report = store.close().await.expect("close");
    assert_eq!(report.rows, 3);
    let err = store
        .append(vec![(Signal::Spans, spans(1, 5, 1, "f"))])
        .await
        .expect_err("closed");
    assert!(matches!(err, Error::ShuttingDown));
    let again = store.close().await.expect("closing again does nothing");
    assert_eq!(again.rows, 0);
    drop(store);
    let (_, report) = open(dir.path(), &clock);
    assert_eq!(report.records_replayed, 0);
    assert_eq!(report.segments, 2, "the spans and their rollups");
}

#[tokio::test]
async fn files_the_catalog_does_not_list_are_removed_at_open_and_the_listed_ones_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = ManualClock::new(NS_PER_HOUR);
    let (store, _) = open(dir.path(), &clock);
    store
        .append(vec![(Signal::Spans, spans(4, 5, 1, "g"))])
        .await
        .expect("append");
    store.flush().await.expect("flush");
    let listed = store.segments();
    drop(store);
    // What a crash in the middle of writing a segment leaves: a torn temporary file, and a
    // renamed file whose catalog commit never happened.
    let hour = dir
        .path()
        .join(&listed[0].path)
        .parent()
        .expect("an hour folder")
        .to_path_buf();
    std::fs::write(hour.join("99-0.parquet.tmp"), b"PAR1 torn").expect("a torn file");
    std::fs::copy(dir.path().join(&listed[0].path), hour.join("98-0.parquet"))
        .expect("an unlisted copy");
    let (store, report) = open(dir.path(), &clock);
    assert_eq!(report.orphan_files_removed, 2);
    assert!(!hour.join("99-0.parquet.tmp").exists());
    assert!(!hour.join("98-0.parquet").exists());
    assert_eq!(report.segments, listed.len());
    assert_eq!(
        snapshot_rows(&store, Table::Spans),
        4,
        "the unlisted copy is not read"
    );
}

/// Stored spans of every segment and the buffer: (trace id, span id, sample_rate).
fn stored_spans(store: &Store) -> Vec<(String, String, f64)> {
    let snap = store.snapshot(Table::Spans, TimeRange::ALL);
    let mut batches = snap.batches;
    for (_, path) in &snap.segments {
        batches.push(segment::read_segment(path, Table::Spans).expect("read spans"));
    }
    let mut out = Vec::new();
    for b in &batches {
        let text = |name: &str| {
            let c = b.column_by_name(name).expect("column");
            (0..b.num_rows())
                .map(|i| {
                    arrow::array::AsArray::as_string_view_opt(c.as_ref())
                        .map(|a| a.value(i).to_string())
                        .unwrap_or_else(|| {
                            arrow::array::AsArray::as_string::<i32>(c.as_ref())
                                .value(i)
                                .to_string()
                        })
                })
                .collect::<Vec<_>>()
        };
        let rates = arrow::array::AsArray::as_primitive::<arrow::datatypes::Float64Type>(
            b.column_by_name("sample_rate")
                .expect("sample_rate")
                .as_ref(),
        )
        .clone();
        for ((t, s), r) in text("trace_id")
            .into_iter()
            .zip(text("span_id"))
            .zip(rates.values().iter())
        {
            out.push((t, s, *r));
        }
    }
    out
}

#[tokio::test]
async fn sampling_keeps_whole_traces_by_reason_and_a_share_and_leaves_rollups_alone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = ManualClock::new(12 * NS_PER_HOUR);
    let options = StoreOptions {
        sampling: crate::sampling::SamplingConfig {
            enabled: true,
            keep: vec![crate::sampling::KeepRule {
                attribute: "customer.tier".into(),
                value: "enterprise".into(),
            }],
            ..Default::default()
        },
        ..StoreOptions::default()
    };
    let (store, _) =
        Store::open(dir.path(), options.clone(), Arc::new(clock.clone())).expect("open");
    // Two hours (10:00 and 11:00) of 1,000 traces each: a server span and its child, 1 ms
    // (every 100th takes 50 ms: past the route's p99 only if fewer than 1% are that slow).
    let mut rows = Vec::new();
    let trace = |hour: i64, i: i64| {
        format!(
            "{:016x}{:016x}",
            ((hour * 7919 + i) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            i
        )
    };
    for hour in [10i64, 11] {
        for i in 0..1000i64 {
            let start = hour * NS_PER_HOUR + i * 3_000_000_000;
            let id = trace(hour, i);
            let slow = i == 500;
            let end = start + if slow { 900_000_000 } else { 1_000_000 };
            let mut server = SpanRow {
                kind: SpanKind::Server,
                status: if i % 50 == 7 {
                    SpanStatus::Error
                } else {
                    SpanStatus::Ok
                },
                http_route: Some(if i == 3 {
                    "/rare".into()
                } else {
                    "/orders".into()
                }),
                ..SpanRow::new(
                    id.clone(),
                    format!("{:016x}", 2 * i),
                    "GET /orders",
                    "api",
                    start,
                    end,
                )
            };
            if i == 11 {
                server.attributes = r#"{"customer.tier":"enterprise"}"#.into();
            }
            if i == 21 {
                // A consumer linked to a producer trace that is kept (an error one).
                server.links = format!(r#"[{{"trace_id":"{}","span_id":"00"}}]"#, trace(hour, 7));
            }
            let child = SpanRow {
                parent_span_id: Some(server.span_id.clone()),
                ..SpanRow::new(
                    id,
                    format!("{:016x}", 2 * i + 1),
                    "SELECT",
                    "api",
                    start,
                    end,
                )
            };
            rows.push(server);
            rows.push(child);
        }
    }
    // A trace across the hour: its root at 10:59:59, its failing child at 11:00:00.5.
    let across = "ffffffffffffffff0000000000000001".to_string();
    let root_start = 11 * NS_PER_HOUR - 1_000_000_000;
    rows.push(SpanRow {
        kind: SpanKind::Server,
        http_route: Some("/orders".into()),
        ..SpanRow::new(
            across.clone(),
            "aa00000000000001",
            "GET /orders",
            "api",
            root_start,
            root_start + 2_000_000,
        )
    });
    rows.push(SpanRow {
        status: SpanStatus::Error,
        parent_span_id: Some("aa00000000000001".into()),
        ..SpanRow::new(
            across.clone(),
            "aa00000000000002",
            "SELECT",
            "api",
            11 * NS_PER_HOUR + 500_000_000,
            11 * NS_PER_HOUR + 600_000_000,
        )
    });
    store
        .append(vec![(Signal::Spans, spans_to_batch(&rows).expect("rows"))])
        .await
        .expect("append");
    store.flush().await.expect("flush");
    let requests_before = rollup_requests(&store);
    assert_eq!(requests_before, 2001);
    let before = stored_spans(&store);
    assert_eq!(before.len(), 4002);

    // Younger than full_fidelity (24 h): nothing is sampled.
    clock.advance_ns(20 * NS_PER_HOUR);
    let report = store.maintain().await.expect("maintain");
    assert_eq!(report.sampling.hours, 0);
    // 36:00: both hours are older than a day.
    clock.advance_ns(16 * NS_PER_HOUR);
    let report = store.maintain().await.expect("maintain").sampling;
    assert_eq!(report.hours, 2, "{report:?}");
    assert_eq!(
        report.traces_seen,
        2001 + 1,
        "the trace across the hour counts in both"
    );
    let after = stored_spans(&store);
    let mut by_trace: HashMap<String, Vec<f64>> = HashMap::new();
    for (t, _, rate) in &after {
        by_trace.entry(t.clone()).or_default().push(*rate);
    }
    // Whole or nothing.
    for (t, spans) in &by_trace {
        assert_eq!(spans.len(), 2, "trace {t} is half kept");
    }
    let kept = |hour: i64, i: i64| by_trace.contains_key(&trace(hour, i));
    for hour in [10, 11] {
        for i in (0..1000).filter(|i| i % 50 == 7) {
            assert!(kept(hour, i), "error trace {hour}:{i} dropped");
            assert!(by_trace[&trace(hour, i)].iter().all(|r| *r == 1.0));
        }
        assert!(kept(hour, 500), "the slow trace");
        assert!(kept(hour, 3), "the rare route's trace");
        assert!(kept(hour, 11), "the enterprise customer's trace");
        assert!(kept(hour, 21), "the trace linked to a kept one");
    }
    assert!(
        by_trace.contains_key(&across),
        "the trace across the hour, failing in the second"
    );
    let share: Vec<&Vec<f64>> = by_trace.values().filter(|r| r[0] < 1.0).collect();
    // 2 × 1000 traces, 40 errors and 8 kept for other reasons; 10% of the ~1,950 others.
    assert!(
        (156..=234).contains(&share.len()),
        "{} kept by share",
        share.len()
    );
    assert!(
        share
            .iter()
            .all(|r| r.iter().all(|x| (*x - 0.1).abs() < 1e-12))
    );
    let estimate: f64 = after.iter().map(|(_, _, r)| 1.0 / r).sum();
    assert!(
        (estimate / before.len() as f64 - 1.0).abs() < 0.2,
        "{estimate}"
    );
    assert_eq!(
        rollup_requests(&store),
        requests_before,
        "rollups are never re-derived"
    );
    assert!(report.bytes_after < report.bytes_before, "{report:?}");
    assert_eq!(report.sampled_before_ns, Some(12 * NS_PER_HOUR));
    let stats = store.sampling_stats().expect("stats");
    assert_eq!(stats["api"].0, 2002);
    assert_eq!(
        stats["api"].1,
        by_trace.len() as u64 + 1,
        "the trace across counts in each hour"
    );

    // Sampled once: the next pass and a reopen change nothing.
    let again = store.maintain().await.expect("maintain").sampling;
    assert_eq!(again.hours, 0);
    drop(store);
    let (store, _) = Store::open(dir.path(), options, Arc::new(clock.clone())).expect("reopen");
    assert_eq!(stored_spans(&store).len(), after.len());
    assert_eq!(store.sampled_before_ns(), Some(12 * NS_PER_HOUR));
}
