//! Maintenance as the server runs it: the schedule on the app's manual clock compacts, expires
//! by retention and deletes replaced files after the grace, and every count the API answers stays
//! exact through it.

use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use prost::Message;
use sightline_model::Table;
use sightline_storage::schedule::Schedule;

use crate::harness::{TestApp, gauge_point, log_record, logs, metrics, read, server_span, traces};

const MINUTE_NS: i64 = 60_000_000_000;
const HOUR_NS: i64 = 60 * MINUTE_NS;
const DAY_NS: i64 = 24 * HOUR_NS;

fn post(path: &str, body: Vec<u8>) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/x-protobuf")
        .body(Body::from(body))
        .expect("request")
}

/// One export of each signal stamped `age_ns` before the clock: two server spans (one
/// failing), two log lines and two gauge points, with ids from `n`.
async fn send_all(app: &TestApp, n: u32, age_ns: i64) {
    let shift = |mut span: opentelemetry_proto::tonic::trace::v1::Span| {
        span.start_time_unix_nano -= age_ns as u64;
        span.end_time_unix_nano -= age_ns as u64;
        span
    };
    let spans = vec![shift(server_span(n, 200)), shift(server_span(n + 1, 503))];
    let bodies = [
        ("/v1/traces", traces("orders", spans).encode_to_vec()),
        (
            "/v1/logs",
            logs(
                "orders",
                vec![
                    log_record(age_ns, "paid"),
                    log_record(age_ns + 1, "shipped"),
                ],
            )
            .encode_to_vec(),
        ),
        (
            "/v1/metrics",
            metrics(
                "orders",
                "queue.depth",
                vec![gauge_point(age_ns, 1.0), gauge_point(age_ns + 1, 2.0)],
            )
            .encode_to_vec(),
        ),
    ];
    for (path, body) in bodies {
        let (status, text) = read(app.otlp(post(path, body)).await).await;
        assert_eq!(status, 200, "{path}: {text}");
    }
}

fn parquet_files(dir: &Path) -> usize {
    walk(&dir.join("segments"))
}

fn walk(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                walk(&path)
            } else {
                usize::from(path.extension().is_some_and(|x| x == "parquet"))
            }
        })
        .sum()
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    app.query(sql).await[0][0].as_i64().expect("a count")
}

#[tokio::test]
async fn scheduled_maintenance_compacts_expires_only_what_is_past_its_age_and_keeps_counts_exact() {
    let app = TestApp::open(
        "[storage]\nmaintenance_interval = \"10m\"\ndelete_grace = \"1m\"\n\
         [retention]\nspans = \"2d\"\nlogs = \"2d\"\nmetrics = \"2d\"\nspan_rollups = \"30d\"\n\
         [limits]\nmax_timestamp_age = \"forever\"\n",
    )
    .await;
    let store = app.app.store().clone();
    let mut schedule = Schedule::new(store.clone(), Arc::new(app.clock.clone()));
    // Forty days old: past every table's retention.
    send_all(&app, 200, 40 * DAY_NS - 30 * MINUTE_NS).await;
    store.flush().await.expect("flush");
    // Three days old: past retention for spans, logs and metrics, not for rollups.
    send_all(&app, 100, 3 * DAY_NS - 30 * MINUTE_NS).await;
    store.flush().await.expect("flush");
    // Three hours old, in four flushes: small segments of one closed hour, worth merging.
    for i in 0..4 {
        send_all(&app, 2 * i + 1, 3 * HOUR_NS - 30 * MINUTE_NS - i64::from(i)).await;
        store.flush().await.expect("flush");
    }
    let tables = [
        Table::Spans,
        Table::Logs,
        Table::Metrics,
        Table::SpanRollups,
    ];
    let segments_of = |table| store.segments().iter().filter(|s| s.table == table).count();
    for table in tables {
        assert_eq!(segments_of(table), 6, "{table:?}: one segment a flush");
    }
    let before = (
        count(&app, "SELECT count(*) FROM spans").await,
        count(&app, "SELECT count(*) FROM logs").await,
        count(&app, "SELECT count(*) FROM metrics").await,
        count(&app, "SELECT sum(requests) FROM span_rollups").await,
        count(&app, "SELECT sum(errors) FROM span_rollups").await,
    );
    assert_eq!(before, (12, 12, 12, 12, 6));
    let files_before = parquet_files(store.data_dir());
    assert_eq!(files_before, 24);

    // Not yet due: nothing moves.
    app.clock.advance_ns(9 * MINUTE_NS);
    assert!(!schedule.look().await.maintained);
    assert_eq!(store.segments().len(), 24);

    app.clock.advance_ns(MINUTE_NS);
    assert!(schedule.look().await.maintained);
    for table in [Table::Spans, Table::Logs, Table::Metrics] {
        let left: Vec<_> = store
            .segments()
            .into_iter()
            .filter(|s| s.table == table)
            .collect();
        assert_eq!(
            left.len(),
            1,
            "{table:?}: the old ones expired, four merged"
        );
        assert_eq!((left[0].row_count, left[0].level), (8, 1), "{table:?}");
    }
    let recent = "WHERE start_time > to_timestamp_seconds(1796083200 - 86400)";
    assert_eq!(
        (
            count(&app, "SELECT count(*) FROM spans").await,
            count(
                &app,
                &format!("SELECT count(DISTINCT span_id) FROM spans {recent}")
            )
            .await,
            count(&app, "SELECT count(*) FROM logs").await,
            count(&app, "SELECT count(*) FROM metrics").await,
        ),
        (8, 8, 8, 8),
        "what is past its age is gone, and nothing else; nothing doubled"
    );
    assert_eq!(
        (
            count(&app, "SELECT sum(requests) FROM span_rollups").await,
            count(&app, "SELECT sum(errors) FROM span_rollups").await,
        ),
        (10, 5),
        "rollups keep counting the requests of spans past their age, until their own"
    );
    assert_eq!(
        segments_of(Table::SpanRollups),
        2,
        "three days ago's, and the merged one"
    );
    // Replaced and expired files wait out the grace beside the four merged ones, then go at
    // the next pass.
    assert_eq!(parquet_files(store.data_dir()), files_before + 4);
    app.clock.advance_ns(10 * MINUTE_NS);
    assert!(schedule.look().await.maintained);
    assert_eq!(parquet_files(store.data_dir()), store.segments().len());
    assert_eq!(count(&app, "SELECT count(*) FROM spans").await, 8);
}
