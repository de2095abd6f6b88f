//! OTLP/gRPC receiver: the trace, logs and metrics collector services (gzip accepted), merged
//! into one router that serves HTTP/2 without TLS.

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use sightline_ingest::Normalized;
use sightline_model::{ErrorCode, Signal};
use std::sync::Arc;

use axum::extract::State;
use tokio::sync::Semaphore;
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

use super::error::{PartialSuccess, grpc_status};
use crate::pipeline::{Accepted, Pipeline};

/// The three collector services over one [`Pipeline`].
#[derive(Debug, Clone)]
pub struct OtlpGrpc {
    pipeline: Pipeline,
    intake: sightline_ingest::Intake,
}

impl OtlpGrpc {
    /// Lets the export's decode permit go (it is decoded and normalized by now), then stores
    /// it: an export waiting for the log holds no permit, so the log's bounded queue, not the
    /// permits, is what saturates.
    async fn store(
        &self,
        permit: Option<DecodePermit>,
        signal: Signal,
        normalized: Normalized,
    ) -> Result<Accepted, Status> {
        if let Some(permit) = permit {
            permit.release();
        }
        self.pipeline
            .store(signal, normalized)
            .await
            .map_err(|e| grpc_status(e.code(), e.to_string()))
    }

    /// A router serving the three services, decoding messages up to `max_message_bytes`, at
    /// most as many at once as `decoding` has permits (shared with OTLP/HTTP: a decoded export
    /// takes several times its size in memory, so memory stays bounded by the permits; further
    /// exports wait their turn rather than fail). Decoded exports wait for the log in its
    /// bounded queue, holding no permit.
    pub fn router(
        pipeline: Pipeline,
        max_message_bytes: usize,
        intake: sightline_ingest::Intake,
        decoding: Arc<Semaphore>,
    ) -> axum::Router {
        let metrics = pipeline.metrics_handle();
        let service = OtlpGrpc { pipeline, intake };
        let traces = TraceServiceServer::new(service.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max_message_bytes);
        let logs = LogsServiceServer::new(service.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max_message_bytes);
        let metrics_service = MetricsServiceServer::new(service)
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max_message_bytes);
        tonic::service::Routes::new(traces)
            .add_service(logs)
            .add_service(metrics_service)
            .into_axum_router()
            .layer(axum::middleware::from_fn_with_state(
                DecodeGate {
                    permits: decoding,
                    max_message_bytes,
                    // A message, its 5-byte frame header, and room for gzip's framing of data that
                    // does not compress.
                    max_body_bytes: max_message_bytes
                        .saturating_add(max_message_bytes / 64)
                        .saturating_add(1024),
                },
                one_permit,
            ))
            .layer(axum::middleware::from_fn_with_state(
                metrics,
                classify_decode_errors,
            ))
    }
}

/// Reads an export's whole body first, then holds one decode permit while tonic decodes and
/// the handler normalizes it (the handler lets it go before storing). The body is read before the permit is taken: an HTTP/2 connection
/// shares one flow-control window among its streams, so streams left unread while waiting would
/// stall the streams that hold permits.
async fn one_permit(
    State(gate): State<DecodeGate>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, gate.max_body_bytes).await {
        Ok(body) => body,
        Err(e) if over_the_limit(&e) => {
            return Status::resource_exhausted(format!(
                "{TOO_LARGE}: it is above the limit of {} bytes (max_body_bytes); send smaller \
                 batches",
                gate.max_message_bytes
            ))
            .into_http();
        }
        // The client went away or the stream broke: nothing to decode, nothing to count.
        Err(e) => {
            return Status::cancelled(format!("the export could not be read: {e}")).into_http();
        }
    };
    // The semaphore is never closed, so a permit always comes.
    let permit = DecodePermit(Arc::new(std::sync::Mutex::new(
        gate.permits.acquire_owned().await.ok(),
    )));
    let mut request = axum::extract::Request::from_parts(parts, axum::body::Body::from(body));
    request.extensions_mut().insert(permit.clone());
    // The handler lets the permit go once the export is decoded; if it never runs (a message
    // tonic cannot decode), the permit goes here.
    let response = next.run(request).await;
    permit.release();
    response
}

/// One export's decode permit, shared by [`one_permit`] and the handler, which releases it
/// before storing.
#[derive(Clone)]
struct DecodePermit(Arc<std::sync::Mutex<Option<tokio::sync::OwnedSemaphorePermit>>>);

impl DecodePermit {
    fn release(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// Whether reading a body failed because it passed the size limit (and not because the client
/// went away).
fn over_the_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// The decode permits, the message size limit, and the most bytes an export's body may have on
/// the wire.
#[derive(Clone)]
struct DecodeGate {
    permits: Arc<Semaphore>,
    max_message_bytes: usize,
    max_body_bytes: usize,
}

/// How a refusal of an export body too large to read begins.
const TOO_LARGE: &str = "export body too large";

/// What tonic answers when a message cannot be read, before any handler runs, as it should be
/// answered: the code a client reads as "your request is wrong", and counted.
fn decode_error(code: i32, message: &str) -> Option<ErrorCode> {
    match code {
        // tonic reports an unreadable message as INTERNAL.
        13 if message.starts_with("failed to decode Protobuf message") => {
            Some(ErrorCode::BadRequest)
        }
        // Above the size limit, after or before decompression: OUT_OF_RANGE would be retried
        // forever by OTLP exporters; RESOURCE_EXHAUSTED with the reason is what OTLP expects.
        11 if message.contains("message length too large") => Some(ErrorCode::PayloadTooLarge),
        8 if message.contains("decompressing") || message.starts_with(TOO_LARGE) => {
            Some(ErrorCode::PayloadTooLarge)
        }
        _ => None,
    }
}

fn signal_of(path: &str) -> Option<Signal> {
    if path.contains(".trace.") {
        Some(Signal::Spans)
    } else if path.contains(".logs.") {
        Some(Signal::Logs)
    } else if path.contains(".metrics.") {
        Some(Signal::Metrics)
    } else {
        None
    }
}

/// What gRPC percent-encodes in `grpc-message`: controls, `%`, and (always) non-ASCII bytes.
const GRPC_MESSAGE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');

async fn classify_decode_errors(
    axum::extract::State(metrics): axum::extract::State<
        std::sync::Arc<crate::self_metrics::SelfMetrics>,
    >,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let signal = signal_of(request.uri().path());
    let mut response = next.run(request).await;
    let headers = response.headers();
    let code = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok());
    let message = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        // grpc-message is percent-encoded on the wire.
        .map(|m| {
            percent_encoding::percent_decode_str(m)
                .decode_utf8_lossy()
                .into_owned()
        })
        .unwrap_or_default();
    if let (Some(code), Some(signal)) = (code, signal)
        && let Some(error) = decode_error(code, &message)
    {
        metrics.record_bad_request(signal, error);
        let status = grpc_status(error, message.clone());
        let headers = response.headers_mut();
        headers.insert(
            "grpc-status",
            axum::http::HeaderValue::from(status.code() as i32),
        );
        // A message nested thousands deep names every field on the way: keep it readable.
        let short = sightline_ingest::protobuf_reason(&message);
        if short.len() < message.len() {
            let encoded = percent_encoding::utf8_percent_encode(&short, GRPC_MESSAGE).to_string();
            if let Ok(value) = axum::http::HeaderValue::from_str(&encoded) {
                headers.insert("grpc-message", value);
            }
        }
    }
    response
}

#[tonic::async_trait]
impl TraceService for OtlpGrpc {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let permit = request.extensions().get::<DecodePermit>().cloned();
        let normalized = sightline_ingest::prepare_traces(
            request.into_inner(),
            self.pipeline.now_ns(),
            &self.intake,
        );
        let accepted = self.store(permit, Signal::Spans, normalized).await?;
        Ok(Response::new(PartialSuccess::trace_response(
            PartialSuccess::of(&accepted.rejections).as_ref(),
        )))
    }
}

#[tonic::async_trait]
impl LogsService for OtlpGrpc {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let permit = request.extensions().get::<DecodePermit>().cloned();
        let normalized = sightline_ingest::prepare_logs(
            request.into_inner(),
            self.pipeline.now_ns(),
            &self.intake,
        );
        let accepted = self.store(permit, Signal::Logs, normalized).await?;
        Ok(Response::new(PartialSuccess::logs_response(
            PartialSuccess::of(&accepted.rejections).as_ref(),
        )))
    }
}

#[tonic::async_trait]
impl MetricsService for OtlpGrpc {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let permit = request.extensions().get::<DecodePermit>().cloned();
        let normalized = sightline_ingest::prepare_metrics(
            request.into_inner(),
            self.pipeline.now_ns(),
            &self.intake,
        );
        let accepted = self.store(permit, Signal::Metrics, normalized).await?;
        Ok(Response::new(PartialSuccess::metrics_response(
            PartialSuccess::of(&accepted.rejections).as_ref(),
        )))
    }
}
