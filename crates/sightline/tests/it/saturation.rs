//! Saturation and stopping, through the handlers: a full log queue answers 429 with
//! `Retry-After` (gRPC RESOURCE_EXHAUSTED), a closed store 503 (gRPC UNAVAILABLE), and the buffer
//! is flushed once `storage.flush_rows` rows wait, without the clock moving.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use sightline_model::Table;
use sightline_storage::schedule::Schedule;
use tower::ServiceExt;

use crate::harness::{Served, TestApp, read, server_span, traces};

fn export(trace: u32) -> Request<Body> {
    Request::post("/v1/traces")
        .header("content-type", "application/x-protobuf")
        .body(Body::from(
            traces("orders", vec![server_span(trace, 200)]).encode_to_vec(),
        ))
        .expect("request")
}

fn retry_after(response: &Response<Body>) -> Option<u64> {
    response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Waits until `done` says yes, looking every few milliseconds for at most ten seconds.
async fn until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..2000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("{what} did not happen within ten seconds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_log_queue_answers_429_with_retry_after_and_the_waiting_exports_are_stored() {
    let served = Served::start("[storage]\nqueue_capacity = 2\n").await;
    let (store, router, grpc) = (
        served.store.clone(),
        served.otlp_router.clone(),
        served.grpc,
    );

    // The writer stops before writing its first group, as behind a slow disk.
    let held = store.hold_log_writer();
    let send = |trace| {
        let router = router.clone();
        tokio::spawn(async move { router.oneshot(export(trace)).await.expect("an answer") })
    };
    let first = send(1);
    let held = tokio::task::spawn_blocking(move || {
        assert!(
            held.wait_until_waiting(Duration::from_secs(10)),
            "the log writer took the first export"
        );
        held
    })
    .await
    .expect("the wait");
    // Two more fill the queue behind it.
    let mut waiting = vec![first];
    for trace in [2, 3] {
        waiting.push(send(trace));
        let depth = waiting.len() - 1;
        until("an export joining the queue", || {
            store.stats().queue_depth == depth
        })
        .await;
    }
    // The next ones are refused at once, saying when to come back.
    for trace in [4, 5] {
        let response = router.clone().oneshot(export(trace)).await.expect("answer");
        let after = retry_after(&response);
        let (status, text) = read(response).await;
        assert_eq!(status, 429, "{text}");
        assert!(after.is_some_and(|s| s >= 1), "Retry-After: {after:?}");
        assert!(text.contains("queue_capacity"), "the key is named: {text}");
    }
    let refused = TraceServiceClient::connect(format!("http://{grpc}"))
        .await
        .expect("a gRPC connection")
        .export(traces("orders", vec![server_span(6, 200)]))
        .await
        .expect_err("refused");
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );

    // Let go: every export that waited is answered and stored; the refused ones are not.
    drop(held);
    for answer in waiting {
        let (status, text) = read(answer.await.expect("the export task")).await;
        assert_eq!(status, 200, "{text}");
    }
    let stored: usize = store
        .snapshot(Table::Spans, sightline_model::TimeRange::ALL)
        .batches
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(stored, 3);
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_store_answers_503_with_retry_after_over_http_and_unavailable_over_grpc() {
    let served = Served::start("").await;
    let (store, router, grpc) = (
        served.store.clone(),
        served.otlp_router.clone(),
        served.grpc,
    );
    let (status, _) = read(router.clone().oneshot(export(1)).await.expect("answer")).await;
    assert_eq!(status, 200);

    // The store stops taking writes, as it does when the server shuts down.
    store.close().await.expect("the final flush");
    let response = router.clone().oneshot(export(2)).await.expect("answer");
    let after = retry_after(&response);
    let (status, text) = read(response).await;
    assert_eq!(status, 503, "{text}");
    assert!(after.is_some_and(|s| s >= 1), "Retry-After: {after:?}");
    assert!(text.contains("shutting down"), "{text}");
    let refused = TraceServiceClient::connect(format!("http://{grpc}"))
        .await
        .expect("a gRPC connection")
        .export(traces("orders", vec![server_span(3, 200)]))
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");

    let (dir, _) = served.stop().await;
    let segments = sightline_storage::catalog::Catalog::open(&dir.path().join("catalog.db"))
        .expect("the catalog")
        .segments()
        .expect("segments");
    let spans: i64 = segments
        .iter()
        .filter(|s| s.table == Table::Spans)
        .map(|s| s.row_count)
        .sum();
    assert_eq!(spans, 1, "only the export answered 200 was stored");
}

#[tokio::test]
async fn the_buffer_is_flushed_once_flush_rows_rows_wait_without_the_clock_moving() {
    let app = TestApp::open("[storage]\nflush_rows = 3\nflush_interval = \"1h\"\n").await;
    let store = app.app.store().clone();
    let mut schedule = Schedule::new(store.clone(), Arc::new(app.clock.clone()));
    for trace in [1, 2] {
        let (status, _) = read(app.otlp(export(trace)).await).await;
        assert_eq!(status, 200);
    }
    assert!(
        !store.flush_due(),
        "two rows of spans wait, fewer than flush_rows"
    );
    assert!(!schedule.look().await.flushed);
    assert!(store.segments().is_empty());

    let (status, _) = read(app.otlp(export(3)).await).await;
    assert_eq!(status, 200);
    assert!(store.flush_due(), "three rows of spans wait");
    assert!(schedule.look().await.flushed);
    let spans: Vec<_> = store
        .segments()
        .into_iter()
        .filter(|s| s.table == Table::Spans)
        .collect();
    assert_eq!(spans.iter().map(|s| s.row_count).sum::<i64>(), 3);
    assert_eq!(
        store
            .stats()
            .buffered_rows
            .get(&Table::Spans)
            .copied()
            .unwrap_or(0),
        0
    );
    assert_eq!(app.query("SELECT count(*) FROM spans").await[0][0], 3);
}
