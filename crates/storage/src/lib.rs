//! Durable storage for Sightline: the write-ahead log, the in-memory buffer that makes rows
//! queryable at once, Parquet segments, the catalog that lists them, the span rollups derived
//! from spans, compaction and retention, and the loop that schedules flushes and maintenance.
//!
//! The path of a row: [`Store::append`] frames it into the log, the log writer thread syncs a
//! whole group of requests with one `fsync` and only then puts the rows into the buffer and
//! answers (so an answer means durable *and* visible). A flush rotates the log, writes the
//! buffered rows as one segment per table and hour, and commits the segments together with the
//! new log checkpoint in one catalog transaction; queries take a [`Snapshot`] of buffer and
//! segments under one lock, so a row is never seen twice or missed while it moves.

#![deny(missing_docs)]

pub mod catalog;
pub mod config;
pub mod durable;
pub mod error;
pub mod rollup;
pub mod sampling;
pub mod schedule;
pub mod segment;
mod store;
pub mod trace_index;
pub mod wal;

pub use catalog::SegmentMeta;
pub use config::{RetentionConfig, StorageConfig, StoreOptions};
pub use error::{Error, Result};
pub use sampling::SamplingConfig;
pub use store::{
    FlushReport, HeldLogWriter, MaintenanceReport, OpenReport, SamplingReport, Snapshot, Store,
    StoreStats, TornTail,
};
