//! OTLP/gRPC receiver: the trace, logs and metrics collector services (gzip accepted), merged
//! into one router that serves HTTP/2 without TLS.

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use sightline_ingest::Normalized;
use sightline_model::{ErrorCode, Signal};
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

use crate::pipeline::{Accepted, Pipeline};

/// The three collector services over one [`Pipeline`].
#[derive(Debug, Clone)]
pub struct OtlpGrpc {
    pipeline: Pipeline,
    limits: sightline_ingest::Limits,
}

fn status(code: ErrorCode, message: String) -> Status {
    match code {
        ErrorCode::BadRequest | ErrorCode::UnsupportedMediaType => {
            Status::invalid_argument(message)
        }
        ErrorCode::PayloadTooLarge | ErrorCode::TooManyRequests => {
            Status::resource_exhausted(message)
        }
        ErrorCode::NotFound => Status::not_found(message),
        ErrorCode::Unauthorized => Status::unauthenticated(message),
        ErrorCode::Forbidden => Status::permission_denied(message),
        ErrorCode::Unavailable => Status::unavailable(message),
        ErrorCode::Timeout => Status::deadline_exceeded(message),
        ErrorCode::Internal => Status::internal(message),
    }
}

impl OtlpGrpc {
    async fn store(&self, signal: Signal, normalized: Normalized) -> Result<Accepted, Status> {
        self.pipeline
            .store(signal, normalized)
            .await
            .map_err(|e| status(e.code(), e.to_string()))
    }

    /// A router serving the three services, decoding messages up to `max_message_bytes`.
    pub fn router(
        pipeline: Pipeline,
        max_message_bytes: usize,
        limits: sightline_ingest::Limits,
    ) -> axum::Router {
        let service = OtlpGrpc { pipeline, limits };
        let traces = TraceServiceServer::new(service.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max_message_bytes);
        let logs = LogsServiceServer::new(service.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max_message_bytes);
        let metrics = MetricsServiceServer::new(service)
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max_message_bytes);
        tonic::service::Routes::new(traces)
            .add_service(logs)
            .add_service(metrics)
            .into_axum_router()
    }
}

fn partial(accepted: &Accepted) -> Option<(i64, String)> {
    (accepted.rejections.count > 0).then(|| {
        (
            accepted.rejections.count as i64,
            accepted.rejections.first_reason.clone().unwrap_or_default(),
        )
    })
}

#[tonic::async_trait]
impl TraceService for OtlpGrpc {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let normalized = sightline_ingest::prepare_traces(
            request.into_inner(),
            self.pipeline.now_ns(),
            self.limits,
        );
        let accepted = self.store(Signal::Spans, normalized).await?;
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: partial(&accepted).map(|(rejected_spans, error_message)| {
                ExportTracePartialSuccess {
                    rejected_spans,
                    error_message,
                }
            }),
        }))
    }
}

#[tonic::async_trait]
impl LogsService for OtlpGrpc {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let normalized = sightline_ingest::prepare_logs(
            request.into_inner(),
            self.pipeline.now_ns(),
            self.limits,
        );
        let accepted = self.store(Signal::Logs, normalized).await?;
        Ok(Response::new(ExportLogsServiceResponse {
            partial_success: partial(&accepted).map(|(rejected_log_records, error_message)| {
                ExportLogsPartialSuccess {
                    rejected_log_records,
                    error_message,
                }
            }),
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for OtlpGrpc {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let normalized = sightline_ingest::prepare_metrics(
            request.into_inner(),
            self.pipeline.now_ns(),
            self.limits,
        );
        let accepted = self.store(Signal::Metrics, normalized).await?;
        Ok(Response::new(ExportMetricsServiceResponse {
            partial_success: partial(&accepted).map(|(rejected_data_points, error_message)| {
                ExportMetricsPartialSuccess {
                    rejected_data_points,
                    error_message,
                }
            }),
        }))
    }
}
