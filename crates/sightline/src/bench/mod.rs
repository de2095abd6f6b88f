//! Benchmarks (not tests): `sightline bench ingest`, a load generator for any OTLP endpoint;
//! `sightline bench pages`, the server-side time of each web UI page; and `sightline bench
//! dataset`, days of the demo shop written straight into a data folder for the query benchmark
//! (`bench/queries.py`).

mod dataset;
mod ingest;
mod pages;

pub use dataset::{DatasetOptions, DatasetReport, run_dataset};
pub use ingest::{IngestBenchOptions, IngestReport, run_ingest};
pub use pages::{PagesBenchOptions, run_pages};
