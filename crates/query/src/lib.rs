//! Queries over Sightline's tables with Apache DataFusion.
//!
//! [`table::StoredTable`] is the table provider of one stored table: at each scan it takes a
//! [`sightline_storage::Snapshot`] of the buffer and of the segments whose time range overlaps
//! the query's time filters, and reads both (buffer from memory, segments as Parquet with the
//! filters pushed into row-group, page and bloom-filter pruning). [`engine::QueryEngine`] runs
//! read-only SQL under a memory limit and a timeout, admitted by [`admission`] and run on the
//! queries' own runtime ([`runtime`]); [`views`] answers the API's fixed questions
//! (a trace, a log search, per-service rates) through the same engine; windows of half an hour
//! or more take their rates from the per-minute `span_rollups` ([`red`]). [`explain`] says what
//! sets a window's failing or slow requests apart, grouping id-like values by the message
//! patterns of [`mask`]; [`patterns`] groups log lines by those patterns; [`compare`] sets two releases (or any two
//! cohorts) of a service side by side, route by route, with verdicts a CI job can gate on.
//! [`quality`] reports on the telemetry itself (silent services, schema and unit changes by
//! release, correlation, cardinality, completeness) from per-hour summaries.
//! [`jaeger`] answers Jaeger's query API (services, operations, trace search, dependencies) in
//! Jaeger's span model. [`contract`] judges stored data against a telemetry contract (spans that
//! must be emitted with their attributes, trace context on logs, what must never appear).

#![deny(missing_docs)]

pub mod admission;
pub mod bounded;
pub mod compare;
pub mod contract;
pub mod cooperative;
pub mod engine;
pub mod error;
pub mod explain;
pub mod jaeger;
pub mod json;
pub mod mask;
pub mod overview;
pub mod patterns;
pub mod quality;
pub mod red;
pub mod runtime;
pub mod sql;
pub mod table;
pub mod views;

pub use admission::{Admission, QueryClass};
pub use engine::{QueryConfig, QueryEngine, QueryResult};
pub use error::Error;
