//! The Sightline binary: configuration, the OTLP receivers (gRPC and HTTP), the Prometheus
//! scraper ([`scrape`]), the JSON API, the web UI ([`ui`]), the command-line verbs, and [`app`], the one place where storage, ingest and query are built and
//! connected.

pub mod app;
pub mod auth;
pub mod bench;
pub mod cli;
pub mod config;
pub mod demo;
pub mod health;
pub mod pipeline;
pub mod redact_scan;
pub mod scrape;
pub mod self_metrics;
pub mod server;
pub mod tls;
pub mod ui;
pub mod url;
