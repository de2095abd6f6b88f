//! Building an app for a test: a temporary data folder, a manual clock at a fixed moment, and
//! OTLP requests built from `opentelemetry-proto`'s types.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, Response};
use http_body_util::BodyExt;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value as Any};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric::Data, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use sightline::app::{App, Listeners};
use sightline::config::{FileConfig, Overrides, ServeConfig, parse_file_config};
use sightline_model::ManualClock;
use tower::ServiceExt;

/// 2026-12-01T00:00:00Z: the moment the manual clock starts at, and records are stamped near.
pub const NOW_NS: i64 = 1_796_083_200_000_000_000;

/// An app over a temporary folder; the folder lives as long as the value.
pub struct TestApp {
    pub app: App,
    /// The app's clock: moving it moves the store's policy time.
    pub clock: ManualClock,
    _dir: tempfile::TempDir,
}

/// The configuration of a test server on port 0 in `dir`, with `toml` as its file.
pub fn config(dir: &std::path::Path, toml: &str) -> ServeConfig {
    let file: FileConfig = parse_file_config(toml).expect("a valid test config");
    let overrides = Overrides {
        data_dir: Some(dir.to_path_buf()),
        otlp_grpc: Some("127.0.0.1:0".into()),
        otlp_http: Some("127.0.0.1:0".into()),
        listen: Some("127.0.0.1:0".into()),
        ..Default::default()
    };
    ServeConfig::merge(overrides, file, None).expect("a valid configuration")
}

impl TestApp {
    /// An app with `toml` as its config file, on a new folder.
    pub async fn open(toml: &str) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = ManualClock::new(NOW_NS);
        let app = App::open(config(dir.path(), toml), Arc::new(clock.clone()))
            .await
            .expect("the app opens");
        TestApp {
            app,
            clock,
            _dir: dir,
        }
    }

    /// Sends one request to the UI and API router.
    pub async fn api(&self, request: Request<Body>) -> Response<Body> {
        self.app
            .api_router()
            .oneshot(request)
            .await
            .expect("the router answers")
    }

    /// Sends one request to the OTLP/HTTP router.
    pub async fn otlp(&self, request: Request<Body>) -> Response<Body> {
        self.app
            .otlp_http_router()
            .oneshot(request)
            .await
            .expect("the router answers")
    }

    /// Runs a read-only query through the API; the rows as JSON.
    pub async fn query(&self, sql: &str) -> Vec<serde_json::Value> {
        let response = self
            .api(
                Request::post("/api/v1/query")
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::json!({ "sql": sql }).to_string()))
                    .expect("request"),
            )
            .await;
        let (status, body) = read(response).await;
        assert_eq!(status, 200, "{sql}: {body}");
        let answer: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        answer["rows"].as_array().cloned().unwrap_or_default()
    }
}

/// A response's status and body as text.
pub async fn read(response: Response<Body>) -> (u16, String) {
    let (status, bytes) = read_bytes(response).await;
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// A response's body as bytes, with its status.
pub async fn read_bytes(response: Response<Body>) -> (u16, Vec<u8>) {
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes();
    (status, bytes.to_vec())
}

/// Binds the three listeners of `config` (port 0: the kernel picks).
pub async fn listeners(config: &ServeConfig) -> Listeners {
    Listeners::bind(config).await.expect("listeners on port 0")
}

/// An app served on port-0 listeners of a new folder, with a manual clock, until stopped.
pub struct Served {
    /// The OTLP/gRPC address.
    pub grpc: std::net::SocketAddr,
    /// The OTLP/HTTP address.
    pub http: std::net::SocketAddr,
    /// The UI and API address.
    pub api: std::net::SocketAddr,
    /// The app's store, shared with the running app.
    pub store: sightline_storage::Store,
    /// The OTLP/HTTP router, to send a request in process beside the served ones.
    pub otlp_router: axum::Router,
    /// The app's clock.
    pub clock: ManualClock,
    dir: tempfile::TempDir,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Served {
    /// Serves an app with `toml` as its config file.
    pub async fn start(toml: &str) -> Served {
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = ManualClock::new(NOW_NS);
        let config = config(dir.path(), toml);
        let listeners = listeners(&config).await;
        let addr = |l: &tokio::net::TcpListener| l.local_addr().expect("an address");
        let (grpc, http, api) = (
            addr(&listeners.otlp_grpc),
            addr(&listeners.otlp_http),
            addr(&listeners.api),
        );
        let app = App::open(config, Arc::new(clock.clone()))
            .await
            .expect("the app opens");
        let store = app.store().clone();
        let otlp_router = app.otlp_http_router();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(app.run(listeners, async {
            let _ = stopped.await;
        }));
        Served {
            grpc,
            http,
            api,
            store,
            otlp_router,
            clock,
            dir,
            stop,
            server,
        }
    }

    /// Stops the app as a shutdown signal would, checks it stopped cleanly, and hands back its
    /// folder and clock (to open the folder again).
    pub async fn stop(self) -> (tempfile::TempDir, ManualClock) {
        let _ = self.stop.send(());
        self.server
            .await
            .expect("the server task")
            .expect("a clean stop");
        (self.dir, self.clock)
    }
}

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Any::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Any::IntValue(value)),
        }),
        ..Default::default()
    }
}

fn resource(service: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![text("service.name", service)],
        ..Default::default()
    })
}

/// A server span of `service`: trace `trace` (1-based), answering `code`.
pub fn server_span(trace: u32, code: i64) -> Span {
    Span {
        trace_id: trace_id(trace),
        span_id: vec![0, 0, 0, 0, 0, 0, 0, trace as u8 + 1],
        name: "GET /orders/{id}".into(),
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: (NOW_NS - 5_000_000_000) as u64,
        end_time_unix_nano: (NOW_NS - 4_990_000_000) as u64,
        attributes: vec![
            text("http.route", "/orders/{id}"),
            int("http.response.status_code", code),
        ],
        status: (code >= 500).then(|| Status {
            code: 2,
            message: "upstream failed".into(),
        }),
        ..Default::default()
    }
}

/// The 16 bytes of trace `trace`; as stored, `format!("{trace:032x}")`.
pub fn trace_id(trace: u32) -> Vec<u8> {
    let mut id = vec![0u8; 16];
    id[12..].copy_from_slice(&trace.to_be_bytes());
    id
}

/// A traces export of `spans` from `service`.
pub fn traces(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(service),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// A log record stamped `age_ns` before the clock, with `body`.
pub fn log_record(age_ns: i64, body: &str) -> LogRecord {
    LogRecord {
        time_unix_nano: (NOW_NS - age_ns) as u64,
        severity_number: 17,
        body: Some(AnyValue {
            value: Some(Any::StringValue(body.into())),
        }),
        ..Default::default()
    }
}

/// A logs export of `records` from `service`.
pub fn logs(service: &str, records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(service),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// A gauge data point stamped `age_ns` before the clock.
pub fn gauge_point(age_ns: i64, value: f64) -> NumberDataPoint {
    NumberDataPoint {
        time_unix_nano: (NOW_NS - age_ns) as u64,
        value: Some(number_data_point::Value::AsDouble(value)),
        ..Default::default()
    }
}

/// A metrics export of one gauge `name` with `points` from `service`.
pub fn metrics(
    service: &str,
    name: &str,
    points: Vec<NumberDataPoint>,
) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(service),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: name.into(),
                    data: Some(Data::Gauge(Gauge {
                        data_points: points,
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Forty days before the clock: past the default age limit of 30 days.
pub const TOO_OLD_NS: i64 = 40 * 86_400 * 1_000_000_000;
