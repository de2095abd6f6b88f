//! The routers in process: refusals with their reasons, and each page's status (the auth
//! middleware on every route is in `auth.rs`).

use axum::body::Body;
use axum::http::Request;
use prost::Message;

use crate::harness::{TestApp, read, read_bytes, server_span, traces};

fn export(body: Vec<u8>, content_type: &str) -> Request<Body> {
    Request::post("/v1/traces")
        .header("content-type", content_type)
        .body(Body::from(body))
        .expect("request")
}

#[tokio::test]
async fn refused_exports_answer_415_413_and_400_with_the_reason_and_store_nothing() {
    let app = TestApp::open("max_body_bytes = 2048").await;
    let body = traces("orders", vec![server_span(1, 200)]).encode_to_vec();

    let (status, text) = read(app.otlp(export(body.clone(), "text/plain")).await).await;
    assert_eq!(status, 415, "{text}");
    assert!(text.contains("application/x-protobuf"), "{text}");

    let many: Vec<_> = (1..200).map(|i| server_span(i, 200)).collect();
    let (status, bytes) = read_bytes(
        app.otlp(export(
            traces("orders", many).encode_to_vec(),
            "application/x-protobuf",
        ))
        .await,
    )
    .await;
    assert_eq!(status, 413);
    let rpc = String::from_utf8_lossy(&bytes);
    assert!(rpc.contains("2048"), "the limit is named: {rpc}");

    let (status, text) = read(
        app.otlp(export(b"\x0a\xff\xff".to_vec(), "application/json"))
            .await,
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("OTLP/JSON"), "{text}");
    assert!(app.query("SELECT count(*) FROM spans").await[0][0] == 0);

    let (status, _) = read(app.otlp(export(body, "application/x-protobuf")).await).await;
    assert_eq!(status, 200);
    assert_eq!(app.query("SELECT count(*) FROM spans").await[0][0], 1);
}

#[tokio::test]
async fn every_page_and_api_route_answers_and_unknown_ones_say_where_to_look() {
    let app = TestApp::open("").await;
    let body = traces("orders", vec![server_span(7, 503)]).encode_to_vec();
    let (status, _) = read(app.otlp(export(body, "application/x-protobuf")).await).await;
    assert_eq!(status, 200);
    let trace = format!("{:032x}", 7);
    for (path, want) in [
        ("/".to_string(), 200),
        ("/?range=24h".to_string(), 200),
        ("/services/orders".to_string(), 200),
        (format!("/traces/{trace}"), 200),
        (format!("/traces/{:032x}", 8), 404),
        ("/traces/nope".to_string(), 400),
        ("/logs".to_string(), 200),
        ("/logs?severity=loud".to_string(), 400),
        ("/query".to_string(), 200),
        ("/query?sql=SELECT%201".to_string(), 200),
        ("/login".to_string(), 303),
        ("/alerts".to_string(), 200),
        ("/alerts/0123456789abcdef".to_string(), 404),
        ("/slos".to_string(), 200),
        ("/slos/nope".to_string(), 404),
        ("/api/v1/slos".to_string(), 200),
        ("/api/v1/slos/nope".to_string(), 404),
        ("/api/v1/alerts".to_string(), 200),
        ("/api/v1/alerts?state=firing".to_string(), 200),
        ("/api/v1/alerts?state=loud".to_string(), 400),
        ("/api/v1/alerts/0123456789abcdef".to_string(), 404),
        ("/api/v1/silences".to_string(), 200),
        ("/api/v1/deploys?service=orders&since=1h".to_string(), 200),
        ("/api/v1/deploys?since=soon".to_string(), 400),
        ("/api/v1/services?since=1h".to_string(), 200),
        (format!("/api/v1/traces/{trace}"), 200),
        ("/api/v1/logs?since=1h".to_string(), 200),
        ("/api/v1/logs?since=forever".to_string(), 400),
        ("/metrics".to_string(), 200),
        ("/healthz".to_string(), 503),
        ("/api/v1/nothing".to_string(), 404),
    ] {
        let (status, text) = read(
            app.api(
                Request::get(path.as_str())
                    .body(Body::empty())
                    .expect("request"),
            )
            .await,
        )
        .await;
        assert_eq!(status, want, "{path}: {}", &text[..text.len().min(300)]);
        if path == "/services/orders" {
            assert!(
                text.contains("upstream failed"),
                "the failing request is listed"
            );
        }
        if path == "/healthz" {
            assert!(text.contains("\"starting\""), "not served yet: {text}");
        }
        if path == "/api/v1/nothing" {
            assert!(text.contains("/api/v1"), "{text}");
        }
    }
}
