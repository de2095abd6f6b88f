//! OTLP through the served app: real clients over HTTP (protobuf) and gRPC, partial success for
//! every signal, and every acknowledged record stored once the server stops.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use sightline_model::{Table, TimeRange};
use sightline_storage::{Store, StoreOptions};

use crate::harness::{
    Served, TOO_OLD_NS, gauge_point, log_record, logs, metrics, server_span, traces,
};

/// Posts a protobuf export and decodes the answer.
async fn post<R: Message + Default>(
    client: &reqwest::Client,
    url: String,
    body: Vec<u8>,
) -> (u16, R) {
    let response = client
        .post(url)
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .expect("the server answers");
    let status = response.status().as_u16();
    let bytes = response.bytes().await.expect("a body");
    (status, R::decode(bytes.as_ref()).expect("an OTLP answer"))
}

fn stored_rows(store: &Store, table: Table) -> i64 {
    let snapshot = store.snapshot(table, TimeRange::ALL);
    let buffered: usize = snapshot.batches.iter().map(|b| b.num_rows()).sum();
    buffered as i64
        + snapshot
            .segments
            .iter()
            .map(|(s, _)| s.row_count)
            .sum::<i64>()
}

#[tokio::test]
async fn exports_over_http_and_grpc_answer_partial_success_and_are_all_stored_at_shutdown() {
    let served = Served::start("").await;
    let (grpc, http, api) = (served.grpc, served.http, served.api);

    // Over HTTP: each export keeps its good records and names why the bad one was left out.
    let client = reqwest::Client::new();
    let mut bad_span = server_span(99, 200);
    bad_span.trace_id = vec![1, 2, 3];
    let (status, answer): (_, ExportTraceServiceResponse) = post(
        &client,
        format!("http://{http}/v1/traces"),
        traces(
            "orders",
            vec![server_span(1, 200), server_span(2, 503), bad_span],
        )
        .encode_to_vec(),
    )
    .await;
    let partial = answer.partial_success.expect("a partial success");
    assert_eq!((status, partial.rejected_spans), (200, 1));
    assert!(
        partial.error_message.contains("trace"),
        "{}",
        partial.error_message
    );

    let (status, answer): (_, ExportLogsServiceResponse) = post(
        &client,
        format!("http://{http}/v1/logs"),
        logs(
            "orders",
            vec![
                log_record(1_000, "payment failed"),
                log_record(TOO_OLD_NS, "ancient"),
            ],
        )
        .encode_to_vec(),
    )
    .await;
    let partial = answer.partial_success.expect("a partial success");
    assert_eq!((status, partial.rejected_log_records), (200, 1));
    assert!(
        partial.error_message.contains("before the server's clock"),
        "the manual clock decides what is too old: {}",
        partial.error_message
    );

    let (status, answer): (_, ExportMetricsServiceResponse) = post(
        &client,
        format!("http://{http}/v1/metrics"),
        metrics(
            "orders",
            "queue.depth",
            vec![gauge_point(1_000, 3.0), gauge_point(TOO_OLD_NS, 9.0)],
        )
        .encode_to_vec(),
    )
    .await;
    let partial = answer.partial_success.expect("a partial success");
    assert_eq!((status, partial.rejected_data_points), (200, 1));
    assert!(
        partial.error_message.contains("before the server's clock"),
        "{}",
        partial.error_message
    );

    // Over gRPC, the same.
    let endpoint = format!("http://{grpc}");
    let mut bad_span = server_span(98, 200);
    bad_span.span_id = vec![];
    let answer = TraceServiceClient::connect(endpoint.clone())
        .await
        .expect("a gRPC connection")
        .export(traces("payments", vec![server_span(3, 200), bad_span]))
        .await
        .expect("accepted")
        .into_inner();
    assert_eq!(answer.partial_success.map(|p| p.rejected_spans), Some(1));
    let answer = LogsServiceClient::connect(endpoint.clone())
        .await
        .expect("a gRPC connection")
        .export(logs(
            "payments",
            vec![log_record(TOO_OLD_NS, "x"), log_record(5, "ok")],
        ))
        .await
        .expect("accepted")
        .into_inner();
    let partial = answer.partial_success.expect("a partial success");
    assert_eq!(partial.rejected_log_records, 1);
    assert!(partial.error_message.contains("before the server's clock"));
    let mut metrics_client = MetricsServiceClient::connect(endpoint.clone())
        .await
        .expect("a gRPC connection");
    let answer = metrics_client
        .export(metrics(
            "payments",
            "cpu",
            vec![gauge_point(TOO_OLD_NS, 0.9), gauge_point(6, 0.4)],
        ))
        .await
        .expect("accepted")
        .into_inner();
    let partial = answer.partial_success.expect("a partial success");
    assert_eq!(partial.rejected_data_points, 1);
    assert!(
        partial.error_message.contains("before the server's clock"),
        "{}",
        partial.error_message
    );
    let answer = metrics_client
        .export(metrics("payments", "cpu", vec![gauge_point(5, 0.5)]))
        .await
        .expect("accepted")
        .into_inner();
    assert_eq!(
        answer.partial_success, None,
        "nothing rejected, nothing said"
    );
    let refused = LogsServiceClient::connect(endpoint)
        .await
        .expect("a gRPC connection")
        .export(logs("payments", vec![log_record(TOO_OLD_NS, "x")]))
        .await
        .expect_err("every record rejected");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");

    // The API reads what was acknowledged, at once.
    let answer: serde_json::Value = client
        .post(format!("http://{api}/api/v1/query"))
        .json(&serde_json::json!({"sql": "SELECT service_name, count(*) FROM spans GROUP BY 1 ORDER BY 1"}))
        .send()
        .await
        .expect("the API answers")
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        answer["rows"],
        serde_json::json!([["orders", 2], ["payments", 1]])
    );

    // Stopping flushes; reopened, the folder holds every acknowledged record once.
    let (dir, clock) = served.stop().await;
    let (store, report) =
        Store::open(dir.path(), StoreOptions::default(), Arc::new(clock)).expect("reopen");
    assert_eq!(
        report.records_replayed, 0,
        "the final flush left nothing to replay"
    );
    assert_eq!(stored_rows(&store, Table::Spans), 3);
    assert_eq!(stored_rows(&store, Table::Logs), 2);
    assert_eq!(stored_rows(&store, Table::Metrics), 3);
}
