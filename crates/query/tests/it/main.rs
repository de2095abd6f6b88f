//! Queries over a real store in a temporary folder: buffer and segments together, time pruning,
//! read-only enforcement, limits, the API's views, and the one meaning of a request and a
//! failure in its Rust and SQL forms.

use serde_json::Value;
use sightline_model::request::{ROUTE_SQL, is_failure, is_failure_sql, is_request_sql, route};
use sightline_model::rollup::RollupColumns;
use sightline_model::schema::{LogRow, SpanRow, logs_to_batch, spans_to_batch};
use sightline_model::{HumanDuration, ManualClock, Signal, SpanKind, SpanStatus, Table, TimeRange};
use sightline_query::views::{self, LogSearch};
use sightline_query::{Error, QueryConfig, QueryEngine};
use sightline_storage::{Store, StoreOptions};
use std::sync::Arc;

const HOUR_NS: i64 = 3_600_000_000_000;
const T0: i64 = 1_763_780_000_000_000_000; // 2025-11-22T02:53:20Z

fn span(trace: usize, i: usize, start_ns: i64, service: &str, status: SpanStatus) -> SpanRow {
    SpanRow {
        start_time_ns: start_ns,
        end_time_ns: start_ns + 1_000_000 * (i as i64 + 1),
        trace_id: format!("{trace:032x}"),
        span_id: format!("{:016x}", trace * 1000 + i + 1),
        parent_span_id: (i > 0).then(|| format!("{:016x}", trace * 1000 + 1)),
        name: format!("GET /items/{{id}} {i}"),
        kind: if i == 0 {
            SpanKind::Server
        } else {
            SpanKind::Client
        },
        status,
        service_name: service.into(),
        http_route: Some("/items/{id}".into()),
        http_method: Some("GET".into()),
        http_status_code: Some(if status == SpanStatus::Error {
            500
        } else {
            200
        }),
        attributes: format!(r#"{{"user.id": {i}, "padding": "{}"}}"#, "x".repeat(200)),
        resource_attributes: format!(r#"{{"service.name": "{service}"}}"#),
        events: "[]".into(),
        links: "[]".into(),
        sample_rate: 1.0,
        message: "GET".into(),
        ..Default::default()
    }
}

fn log(trace: usize, time_ns: i64, severity: &'static str, number: i32, body: &str) -> LogRow {
    LogRow {
        time_ns,
        observed_time_ns: time_ns,
        trace_id: Some(format!("{trace:032x}")),
        span_id: Some(format!("{:016x}", trace * 1000 + 1)),
        severity_number: number,
        severity,
        body: body.into(),
        service_name: "api".into(),
        attributes: "{}".into(),
        resource_attributes: "{}".into(),
        ..Default::default()
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
}

fn open_store() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = Arc::new(ManualClock::new(T0 + HOUR_NS));
    let (store, _) = Store::open(dir.path(), StoreOptions::default(), clock).expect("open store");
    Fixture { _dir: dir, store }
}

async fn append_spans(store: &Store, rows: &[SpanRow]) {
    store
        .append(vec![(Signal::Spans, spans_to_batch(rows).expect("rows"))])
        .await
        .expect("append");
}

fn engine(store: &Store, limits: QueryConfig) -> QueryEngine {
    QueryEngine::new(store.clone(), limits).expect("engine")
}

async fn scalar(engine: &QueryEngine, sql: &str) -> Value {
    let result = engine
        .execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    result.rows[0][0].clone()
}

#[tokio::test]
async fn buffer_and_segments_are_read_together_exactly_once() {
    let f = open_store();
    append_spans(
        &f.store,
        &(0..10)
            .map(|i| span(1, i, T0 + i as i64, "api", SpanStatus::Ok))
            .collect::<Vec<_>>(),
    )
    .await;
    f.store.flush().await.expect("flush");
    append_spans(
        &f.store,
        &(0..5)
            .map(|i| span(2, i, T0 + 100 + i as i64, "api", SpanStatus::Ok))
            .collect::<Vec<_>>(),
    )
    .await;
    let engine = engine(&f.store, QueryConfig::default());
    assert_eq!(scalar(&engine, "SELECT count(*) FROM spans").await, 15);
    assert_eq!(
        scalar(&engine, "SELECT count(DISTINCT span_id) FROM spans").await,
        15
    );
    assert_eq!(
        scalar(&engine, "SELECT sum(json_get_int(attributes, 'user.id')) FROM spans WHERE trace_id = '00000000000000000000000000000002'").await,
        10
    );
    assert_eq!(
        scalar(
            &engine,
            "SELECT count(*) FROM spans WHERE (attributes->>'padding') LIKE 'xx%'"
        )
        .await,
        15
    );
    let result = engine
        .execute("SELECT start_time, duration_ns FROM spans ORDER BY start_time LIMIT 1")
        .await
        .expect("query");
    assert_eq!(result.columns[0].data_type, "timestamp");
    assert_eq!(result.rows[0][0], "2025-11-22T02:53:20.000000000Z");
    assert_eq!(result.rows[0][1], 1_000_000);
}

#[tokio::test]
async fn time_filters_skip_segments_outside_the_range() {
    let f = open_store();
    for hour in [0, 3, 6] {
        append_spans(
            &f.store,
            &[span(
                hour as usize + 1,
                0,
                T0 + hour * HOUR_NS,
                "api",
                SpanStatus::Ok,
            )],
        )
        .await;
    }
    f.store.flush().await.expect("flush");
    assert_eq!(
        f.store
            .snapshot(Table::Spans, TimeRange::ALL)
            .segments
            .len(),
        3
    );
    let engine = engine(&f.store, QueryConfig::default());
    let since = T0 + 5 * HOUR_NS;
    let plan = engine
        .execute(&format!(
            "EXPLAIN SELECT count(*) FROM spans WHERE start_time >= to_timestamp_nanos({since})"
        ))
        .await
        .expect("explain");
    let text = plan.rows.iter().map(|r| r.to_string()).collect::<String>();
    assert_eq!(
        text.matches(".parquet").count(),
        1,
        "only the last hour's segment is scanned: {text}"
    );
    assert_eq!(
        scalar(
            &engine,
            &format!("SELECT count(*) FROM spans WHERE start_time >= to_timestamp_nanos({since})")
        )
        .await,
        1
    );
    assert_eq!(scalar(&engine, "SELECT count(*) FROM spans").await, 3);
}

#[tokio::test]
async fn statements_that_write_or_touch_files_are_refused() {
    let f = open_store();
    let engine = engine(&f.store, QueryConfig::default());
    for sql in [
        "CREATE TABLE t AS SELECT 1",
        "INSERT INTO spans SELECT * FROM spans",
        "DELETE FROM spans",
        "DROP TABLE spans",
        "COPY spans TO '/tmp/out.parquet'",
        "CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/etc/'",
        "SET datafusion.execution.batch_size = 1",
        "EXPLAIN INSERT INTO spans SELECT * FROM spans",
    ] {
        let err = engine.execute(sql).await.expect_err(sql);
        assert!(matches!(err, Error::ReadOnly { .. }), "{sql}: {err}");
        assert!(err.to_string().contains("read-only"), "{err}");
    }
    let err = engine.execute("SELEC 1").await.expect_err("syntax");
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
}

#[tokio::test]
async fn a_query_over_the_memory_limit_fails_and_the_next_one_works() {
    let f = open_store();
    let rows: Vec<SpanRow> = (0..20_000)
        .map(|i| span(i / 10 + 1, i % 10, T0 + i as i64, "api", SpanStatus::Ok))
        .collect();
    append_spans(&f.store, &rows).await;
    let limits = QueryConfig {
        memory_limit_bytes: 1_000_000,
        ..Default::default()
    };
    let engine = engine(&f.store, limits);
    let err = engine
        .execute("SELECT * FROM spans ORDER BY attributes, span_id")
        .await
        .expect_err("over the limit");
    assert!(
        matches!(
            err,
            Error::MemoryLimit {
                limit_bytes: 1_000_000
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("memory"), "{err}");
    assert_eq!(scalar(&engine, "SELECT count(*) FROM spans").await, 20_000);
}

#[tokio::test]
async fn a_query_over_the_time_limit_is_stopped() {
    let f = open_store();
    let limits = QueryConfig {
        timeout: HumanDuration::from_nanos(50_000_000),
        ..Default::default()
    };
    let engine = engine(&f.store, limits);
    let err = engine
        .execute("SELECT count(*) FROM generate_series(1, 100000000000) AS a")
        .await
        .expect_err("too slow");
    assert!(matches!(err, Error::Timeout { limit_ms: 50 }), "{err}");
    assert_eq!(scalar(&engine, "SELECT 1 + 1").await, 2);
}

#[tokio::test]
async fn results_are_cut_at_the_row_limit_and_say_so() {
    let f = open_store();
    append_spans(
        &f.store,
        &(0..30)
            .map(|i| span(1, i, T0 + i as i64, "api", SpanStatus::Ok))
            .collect::<Vec<_>>(),
    )
    .await;
    let engine = engine(
        &f.store,
        QueryConfig {
            max_result_rows: 7,
            ..Default::default()
        },
    );
    let result = engine
        .execute("SELECT span_id FROM spans")
        .await
        .expect("query");
    assert_eq!(result.rows.len(), 7);
    assert!(result.truncated);
    assert_eq!(result.truncated_by, Some("max_result_rows"));
}

/// Waits until the memory pool has given out nothing, looking every few milliseconds for at most
/// five seconds.
async fn pool_drained(engine: &QueryEngine, what: &str) {
    for _ in 0..1000 {
        if engine.memory_reserved() == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("{what}: {} bytes still reserved", engine.memory_reserved());
}

#[tokio::test]
async fn functions_that_build_large_results_count_against_the_memory_limit_before_they_build() {
    let f = open_store();
    let engine = engine(
        &f.store,
        QueryConfig {
            memory_limit_bytes: 64 << 20,
            ..Default::default()
        },
    );
    for sql in [
        "SELECT repeat('x', 1500000000) AS big",
        "SELECT lpad('x', 500000000) AS big",
        "SELECT rpad('x', 200000000, 'ab') AS big",
        "SELECT array_repeat(1, 100000000) AS big",
        "SELECT generate_series(1, 1000000000) AS big",
        "SELECT range(0, 100000000000, 7) AS big",
        "SELECT array_resize([1], 100000000) AS big",
        "SELECT length(repeat(name, 10000000)) FROM (VALUES ('abcdefgh')) AS t(name)",
        "SELECT string_agg(repeat('x', 100000), ',') FROM generate_series(1, 100000) AS t(n)",
        "SELECT length(string_agg(CAST(n AS VARCHAR) || '-padding-padding-padding-padding-padding', ',')) \
         FROM generate_series(1, 3000000) AS t(n)",
    ] {
        let err = engine.execute(sql).await.expect_err(sql);
        assert!(
            matches!(err, Error::MemoryLimit { limit_bytes } if limit_bytes == 64 << 20),
            "{sql}: {err}"
        );
        // The query's other tasks give their memory back as they are stopped.
        pool_drained(&engine, sql).await;
    }
    // Within the limit, the same functions answer.
    let result = engine
        .execute("SELECT length(repeat('ab', 1000)), cardinality(array_repeat(0, 5))")
        .await
        .expect("small enough");
    assert_eq!(result.rows, vec![serde_json::json!([2000, 5])]);
}

#[tokio::test]
async fn answers_are_cut_at_the_byte_limit_and_say_so_and_are_counted_until_dropped() {
    let f = open_store();
    let engine = engine(
        &f.store,
        QueryConfig {
            max_result_bytes: 64 * 1024,
            ..Default::default()
        },
    );
    let result = engine
        .execute("SELECT n, repeat('x', 1000) AS pad FROM generate_series(1, 100000) AS t(n)")
        .await
        .expect("cut, not refused");
    assert!(result.truncated);
    assert_eq!(result.truncated_by, Some("max_result_bytes"));
    let encoded = serde_json::to_string(&result).expect("JSON").len();
    assert!(
        encoded <= 64 * 1024,
        "the whole answer fits: {encoded} bytes"
    );
    assert!(result.rows.len() > 50, "{} rows", result.rows.len());
    assert!(
        engine.memory_reserved() > 0,
        "the answer is counted while it lives"
    );
    drop(result);
    pool_drained(&engine, "the answer dropped").await;
    let err = engine
        .execute("SELECT repeat('x', 100000) AS wide")
        .await
        .expect_err("not even one row fits");
    assert!(
        matches!(err, Error::RowTooLarge { row_bytes, limit_bytes: 65536 } if row_bytes >= 100_000),
        "{err}"
    );
    assert!(err.to_string().contains("max_result_bytes"), "{err}");
}

#[tokio::test]
async fn beyond_the_running_queries_and_the_queue_a_query_is_refused_as_busy() {
    use sightline_query::QueryClass;
    let f = open_store();
    let engine = engine(
        &f.store,
        QueryConfig {
            max_concurrent: Some(1),
            max_queued: 0,
            ..Default::default()
        },
    );
    let held = engine
        .admission()
        .admit(QueryClass::Monitor)
        .await
        .expect("the one slot");
    let err = engine.execute("SELECT 1").await.expect_err("busy");
    assert!(matches!(err, Error::Busy { class: "api", .. }), "{err}");
    assert_eq!(err.code(), sightline_model::ErrorCode::TooManyRequests);
    let err = engine
        .for_class(QueryClass::Ui)
        .collect("SELECT 1", 10)
        .await
        .expect_err("busy");
    assert!(matches!(err, Error::Busy { class: "ui", .. }), "{err}");
    assert_eq!(engine.admission().stats().refused, [1, 1, 0]);
    drop(held);
    assert_eq!(scalar(&engine, "SELECT 1 + 1").await, 2);
}

#[tokio::test]
async fn views_answer_trace_logs_and_services() {
    let f = open_store();
    let mut rows = Vec::new();
    for trace in 1..=4 {
        let status = if trace == 4 {
            SpanStatus::Error
        } else {
            SpanStatus::Ok
        };
        rows.extend(
            (0..3).map(|i| span(trace, i, T0 + trace as i64 * 1000 + i as i64, "api", status)),
        );
    }
    append_spans(&f.store, &rows).await;
    f.store.flush().await.expect("flush");
    let logs = vec![
        log(1, T0 + 1500, "info", 9, "cache warmed"),
        log(1, T0 + 1200, "warn", 13, "Slow query on items"),
        log(2, T0 + 2500, "error", 17, "payment TIMEOUT"),
    ];
    f.store
        .append(vec![(Signal::Logs, logs_to_batch(&logs).expect("rows"))])
        .await
        .expect("append");
    let engine = engine(&f.store, QueryConfig::default());

    let trace = views::trace(&engine, &format!("{:032x}", 1))
        .await
        .expect("trace");
    assert_eq!(trace.spans.len(), 3);
    assert_eq!(trace.logs.len(), 2);
    assert_eq!(
        trace.logs[0]["body"], "Slow query on items",
        "logs are in time order"
    );
    assert_eq!(
        trace.spans[0]["attributes"]["user.id"], 0,
        "attributes come back as objects"
    );
    let missing = views::trace(&engine, &format!("{:032x}", 99))
        .await
        .expect_err("unknown trace");
    assert!(matches!(missing, Error::NotFound { .. }));
    assert!(matches!(
        views::trace(&engine, "nope").await,
        Err(Error::Invalid { .. })
    ));

    let search = LogSearch {
        severity: Some("warn".into()),
        limit: 10,
        ..Default::default()
    };
    let found = views::logs(&engine, &search).await.expect("logs");
    let bodies: Vec<&str> = found.iter().filter_map(|l| l["body"].as_str()).collect();
    assert_eq!(
        bodies,
        vec!["payment TIMEOUT", "Slow query on items"],
        "warn and above, newest first"
    );
    let search = LogSearch {
        text: Some("timeout".into()),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(
        views::logs(&engine, &search).await.expect("logs").len(),
        1,
        "text search ignores case"
    );
    let bad = LogSearch {
        severity: Some("loud".into()),
        limit: 10,
        ..Default::default()
    };
    assert!(matches!(
        views::logs(&engine, &bad).await,
        Err(Error::Invalid { .. })
    ));

    let services = views::services(&engine, TimeRange::new(Some(T0), None), 3600.0, None)
        .await
        .expect("services");
    assert_eq!(services.len(), 1);
    let api = &services[0];
    assert_eq!(
        (api.service_name.as_str(), api.red.requests, api.red.errors),
        ("api", 4, 1)
    );
    assert_eq!(api.routes.len(), 1);
    assert_eq!(api.routes[0].http_route, "/items/{id}");
    assert_eq!(api.red.p50_ms, 1.0, "server spans last 1 ms");
}

/// Every combination of kind, status, HTTP status code and route that the definition of a
/// request and a failure distinguishes.
fn request_cases() -> Vec<SpanRow> {
    let codes = [
        None,
        Some(200),
        Some(404),
        Some(499),
        Some(500),
        Some(503),
        Some(599),
    ];
    let routes = [None, Some("/orders/{id}")];
    let mut rows = Vec::new();
    for kind in SpanKind::ALL {
        for status in SpanStatus::ALL {
            for code in codes {
                for http_route in routes {
                    let n = rows.len();
                    let start = T0 + n as i64;
                    rows.push(SpanRow {
                        kind,
                        status,
                        http_route: http_route.map(str::to_string),
                        http_status_code: code,
                        ..SpanRow::new(
                            format!("{n:032x}"),
                            format!("{n:016x}"),
                            format!("op {n}"),
                            "api",
                            start,
                            start + 1_000,
                        )
                    });
                }
            }
        }
    }
    rows
}

#[tokio::test]
async fn the_rust_and_sql_forms_of_a_request_and_a_failure_agree_on_every_case() {
    let f = open_store();
    let cases = request_cases();
    append_spans(&f.store, &cases).await;
    let engine = engine(&f.store, QueryConfig::default());
    let sql = format!(
        "SELECT span_id, {} AS request, {} AS failed, {ROUTE_SQL} AS route FROM spans \
         ORDER BY span_id",
        is_request_sql(),
        is_failure_sql()
    );
    let result = engine.execute(&sql).await.expect("query");
    assert_eq!(result.rows.len(), cases.len());
    let (mut requests, mut failures) = (0, 0);
    for (row, case) in result.rows.iter().zip(&cases) {
        assert_eq!(row[0], case.span_id.as_str());
        let rust_failed = is_failure(case.status, case.http_status_code.map(i64::from));
        assert_eq!(row[1], case.kind.is_request(), "request? {case:?}");
        assert_eq!(row[2], rust_failed, "failed? {case:?}");
        assert_eq!(
            row[3],
            route(case.http_route.as_deref(), &case.name),
            "route of {case:?}"
        );
        requests += usize::from(case.kind.is_request());
        failures += usize::from(case.kind.is_request() && rust_failed);
    }
    assert_eq!(requests, 2 * 3 * 7 * 2, "server and consumer spans");
    assert!(failures > 0 && failures < requests);
    // NOT of the failure condition selects exactly the requests that did not fail.
    let ok = scalar(
        &engine,
        &format!(
            "SELECT count(*) FROM spans WHERE {} AND NOT {}",
            is_request_sql(),
            is_failure_sql()
        ),
    )
    .await;
    assert_eq!(ok, requests - failures);
    // The rollups the store derives count the same requests and failures per route.
    let snapshot = f.store.snapshot(Table::SpanRollups, TimeRange::ALL);
    let (mut rolled_requests, mut rolled_errors) = (0i64, 0i64);
    for batch in &snapshot.batches {
        let cols = RollupColumns::of(batch).expect("rollup columns");
        rolled_requests += cols.requests.values().iter().sum::<i64>();
        rolled_errors += cols.errors.values().iter().sum::<i64>();
    }
    assert_eq!(
        (rolled_requests, rolled_errors),
        (requests as i64, failures as i64)
    );
    let by_route = engine
        .execute(&format!(
            "SELECT {ROUTE_SQL} AS route, count(*) AS n, sum(CASE WHEN {} THEN 1 ELSE 0 END) AS e \
             FROM spans WHERE {} GROUP BY 1 ORDER BY 1",
            is_failure_sql(),
            is_request_sql()
        ))
        .await
        .expect("per route");
    let rolled = engine
        .execute("SELECT route, sum(requests) AS n, sum(errors) AS e FROM span_rollups GROUP BY 1 ORDER BY 1")
        .await
        .expect("rollups per route");
    assert_eq!(by_route.rows, rolled.rows);
}

#[tokio::test]
async fn the_sql_form_of_the_sketch_bin_puts_every_duration_in_the_bin_rust_does() {
    use sightline_model::sketch::{bin_of, bin_sql, bin_value};
    let f = open_store();
    let mut durations: Vec<i64> = vec![0, 1, 2, 3, 999, 1_000, 1_001, 1_000_000, 123_456_789];
    // Each side of many bin edges, where a rounding difference would show.
    for bin in [10, 100, 500, 1_000, 1_500, 2_000] {
        let edge = bin_value(bin) as i64;
        durations.extend([edge - 1, edge, edge + 1]);
    }
    durations.extend([86_400_000_000_000, 30 * 86_400_000_000_000]);
    durations.sort_unstable();
    durations.dedup();
    let rows: Vec<SpanRow> = durations
        .iter()
        .enumerate()
        .map(|(i, d)| {
            SpanRow::new(
                format!("{i:032x}"),
                format!("{i:016x}"),
                "op",
                "api",
                T0,
                T0 + d,
            )
        })
        .collect();
    append_spans(&f.store, &rows).await;
    let engine = engine(&f.store, QueryConfig::default());
    let sql = format!(
        "SELECT duration_ns, {} AS bin FROM spans ORDER BY duration_ns",
        bin_sql("duration_ns")
    );
    let result = engine.execute(&sql).await.expect("query");
    assert_eq!(result.rows.len(), durations.len());
    for row in &result.rows {
        let duration = row[0].as_i64().expect("a duration");
        assert_eq!(row[1], bin_of(duration), "the bin of {duration} ns");
    }
}

/// The span ids a physical plan reads when it is executed now.
async fn span_ids_read(
    plan: Arc<dyn datafusion::physical_plan::ExecutionPlan>,
    ctx: &datafusion::prelude::SessionContext,
) -> datafusion::error::Result<Vec<String>> {
    let batches = datafusion::physical_plan::collect(plan, ctx.task_ctx()).await?;
    let mut ids = Vec::new();
    for batch in &batches {
        let column = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8)?;
        let column = column
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .expect("strings");
        ids.extend(column.iter().flatten().map(str::to_string));
    }
    Ok(ids)
}

#[tokio::test]
async fn a_query_planned_before_a_flush_and_a_compaction_reads_every_row_once_while_the_grace_keeps_its_files()
 {
    use sightline_query::table::StoredTable;
    use sightline_storage::StorageConfig;

    let dir = tempfile::tempdir().expect("temp dir");
    let clock = ManualClock::new(T0 + HOUR_NS);
    let options = StoreOptions {
        storage: StorageConfig {
            delete_grace: HumanDuration::from_secs(60),
            ..StorageConfig::default()
        },
        ..StoreOptions::default()
    };
    let (store, _) = Store::open(dir.path(), options, Arc::new(clock.clone())).expect("open");
    let rows = |trace: usize| -> Vec<SpanRow> {
        (0..5)
            .map(|i| {
                let at = T0 + (trace * 10 + i) as i64;
                span(trace, i, at, "api", SpanStatus::Ok)
            })
            .collect()
    };
    // Four small segments of one closed hour, and five rows still in the buffer.
    for trace in 1..=4 {
        append_spans(&store, &rows(trace)).await;
        store.flush().await.expect("flush");
    }
    append_spans(&store, &rows(5)).await;
    let ctx = datafusion::prelude::SessionContext::new();
    ctx.register_table(
        "spans",
        Arc::new(StoredTable::new(Table::Spans, store.clone())),
    )
    .expect("register");
    let plan = |sql: &'static str| {
        let ctx = ctx.clone();
        async move {
            ctx.sql(sql)
                .await
                .expect("plan")
                .create_physical_plan()
                .await
                .expect("physical plan")
        }
    };
    // Each plan holds the rows as they were when it was made.
    let before_flush = plan("SELECT span_id FROM spans").await;
    store.flush().await.expect("flush");
    let before_compaction = plan("SELECT span_id FROM spans").await;
    let replaced: Vec<_> = store
        .segments()
        .into_iter()
        .filter(|s| s.table == Table::Spans)
        .map(|s| dir.path().join(&s.path))
        .collect();
    assert_eq!(replaced.len(), 5);
    let report = store.maintain().await.expect("maintain");
    assert!(report.segments_compacted >= 5, "{report:?}");
    assert_eq!(report.files_deleted, 0, "replaced files wait out the grace");
    let spans: Vec<_> = store
        .segments()
        .into_iter()
        .filter(|s| s.table == Table::Spans)
        .collect();
    assert_eq!(spans.len(), 1, "merged into one segment");

    for (name, plan) in [
        ("planned before the flush", before_flush),
        ("planned before the compaction", before_compaction),
    ] {
        let mut ids = span_ids_read(plan, &ctx)
            .await
            .unwrap_or_else(|e| panic!("a query {name} reads files kept for the grace: {e}"));
        ids.sort();
        let read = ids.len();
        ids.dedup();
        assert_eq!((read, ids.len()), (25, 25), "{name}: every row once");
    }

    // The grace is measured on the store's clock: a second short of it, the files stay.
    clock.advance_ns(59_000_000_000);
    assert_eq!(store.maintain().await.expect("maintain").files_deleted, 0);
    assert!(replaced.iter().all(|p| p.exists()));
    clock.advance_ns(1_000_000_000);
    let report = store.maintain().await.expect("maintain");
    assert!(report.files_deleted >= 5, "{report:?}");
    assert!(replaced.iter().all(|p| !p.exists()));
    let fresh = plan("SELECT span_id FROM spans").await;
    assert_eq!(span_ids_read(fresh, &ctx).await.expect("read").len(), 25);
}

#[tokio::test]
async fn joins_yield_so_a_stopped_query_ends() {
    let f = open_store();
    let engine = engine(&f.store, QueryConfig::default());
    let result = engine
        .execute("EXPLAIN SELECT count(*) FROM generate_series(1, 10) a, generate_series(1, 10) b")
        .await
        .expect("explain");
    let plan: String = result
        .rows
        .iter()
        .map(|row| row[1].as_str().unwrap_or_default().to_string())
        .collect::<Vec<_>>()
        .join("\n");
    let join = plan
        .lines()
        .position(|line| line.contains("JoinExec"))
        .unwrap_or_else(|| panic!("a join in:\n{plan}"));
    assert!(
        plan.lines()
            .nth(join - 1)
            .is_some_and(|line| line.contains("CooperativeExec")),
        "the join's output yields:\n{plan}"
    );
}
