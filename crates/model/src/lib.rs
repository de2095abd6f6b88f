//! The nouns every other Sightline crate shares: the signals and the tables, their Arrow
//! schemas and row types, what a request and a failure are, the latency sketch of the span
//! rollups, time ranges and durations, config errors, the closed set of error codes, and the
//! clock. No I/O lives here.

#![deny(missing_docs)]

pub mod clock;
pub mod config;
pub mod duration;
pub mod error_code;
pub mod request;
pub mod rollup;
pub mod schema;
pub mod severity;
pub mod signal;
pub mod sketch;
pub mod time_range;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::ConfigError;
pub use duration::{HumanDuration, Lifetime, parse_duration_ns};
pub use error_code::ErrorCode;
pub use request::{SpanKind, SpanStatus};
pub use signal::{Signal, Table};
pub use time_range::TimeRange;
