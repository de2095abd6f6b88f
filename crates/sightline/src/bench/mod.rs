//! Benchmarks (not tests): `sightline bench ingest`, a load generator for any OTLP endpoint;
//! `sightline bench pages`, the server-side time of each web UI page; `sightline bench
//! dataset`, days of the demo shop written straight into a data folder for the query benchmark
//! (`bench/queries.py`); and `sightline bench monitor`, the cost of evaluation cycles of many
//! SLOs and rules over such a folder.

mod dataset;
mod ingest;
mod monitor;
mod pages;

pub use dataset::{DatasetOptions, DatasetReport, run_dataset};
pub use ingest::{IngestBenchOptions, IngestReport, run_ingest};
pub use monitor::{MonitorBenchOptions, run_monitor};
pub use pages::{PagesBenchOptions, run_pages};
