//! Network servers: OTLP over HTTP ([`otlp_http`]) and gRPC ([`otlp_grpc`]), and the JSON API
//! with health and self-metrics ([`api`]), administration ([`admin_api`]) and Jaeger's query API
//! for Grafana ([`jaeger_api`]). Errors are answered in one shape, [`ApiError`], and
//! [`error`] maps every error code to HTTP, gRPC and OTLP's partial success.

pub mod admin_api;
pub mod api;
pub mod changes_api;
pub mod error;
pub mod jaeger_api;
pub mod monitor_api;
pub mod otlp_grpc;
pub mod otlp_http;
pub mod quality_api;

pub use error::{ApiError, RETRY_AFTER_SECONDS, with_retry_after};
