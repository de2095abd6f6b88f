//! Benchmarks (not tests): `sightline bench ingest`, a load generator for any OTLP endpoint, and
//! `sightline bench pages`, the server-side time of each web UI page.

mod ingest;
mod pages;

pub use ingest::{IngestBenchOptions, IngestReport, run_ingest};
pub use pages::{PagesBenchOptions, run_pages};
