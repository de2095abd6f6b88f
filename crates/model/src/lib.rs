//! The nouns every other Sightline crate shares: the three signals and their Arrow schemas,
//! time ranges and durations, the closed set of error codes, and the clock. No I/O lives here.

pub mod clock;
pub mod error_code;
pub mod schema;
pub mod severity;
pub mod signal;
pub mod time_range;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error_code::ErrorCode;
pub use signal::Signal;
pub use time_range::{TimeRange, parse_duration_ns};
