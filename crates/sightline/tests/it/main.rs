//! In-process tests of the binary crate: the real [`sightline::app::App`] on a temporary data
//! folder with a manual clock — its routers driven with `oneshot` (middleware, pages, refusals)
//! and served on port-0 listeners to real OTLP clients (`opentelemetry-proto`'s types over HTTP
//! with reqwest and over gRPC with tonic's generated clients). The Python suite in `tests/e2e`
//! drives the built binary the same way from outside.

mod auth;
mod harness;
mod maintenance;
mod otlp;
mod routes;
mod saturation;
