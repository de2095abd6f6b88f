//! Time ranges in nanoseconds since the Unix epoch, and the duration syntax used in flags,
//! config and query strings (`15m`, `1h`, `7d`).

use std::fmt;

pub const NS_PER_SECOND: i64 = 1_000_000_000;

/// A half-open time range `[start_ns, end_ns)`; an open side is unbounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TimeRange {
    pub start_ns: Option<i64>,
    pub end_ns: Option<i64>,
}

impl TimeRange {
    pub const ALL: TimeRange = TimeRange {
        start_ns: None,
        end_ns: None,
    };

    pub fn new(start_ns: Option<i64>, end_ns: Option<i64>) -> Self {
        Self { start_ns, end_ns }
    }

    /// Whether a closed interval `[min_ns, max_ns]` of data may hold rows in this range.
    pub fn overlaps(&self, min_ns: i64, max_ns: i64) -> bool {
        self.start_ns.is_none_or(|s| max_ns >= s) && self.end_ns.is_none_or(|e| min_ns < e)
    }

    /// The narrowest range that lies in both.
    pub fn intersect(&self, other: &TimeRange) -> TimeRange {
        let start_ns = match (self.start_ns, other.start_ns) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let end_ns = match (self.end_ns, other.end_ns) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        TimeRange { start_ns, end_ns }
    }
}

/// A duration string that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationParseError {
    pub input: String,
}

impl fmt::Display for DurationParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid duration {:?}: expected a number followed by a unit (ms, s, m, h, d or w), e.g. 15m, 1h, 7d",
            self.input
        )
    }
}

impl std::error::Error for DurationParseError {}

/// Parses `500ms`, `30s`, `15m`, `1h`, `7d`, `2w` (and combinations such as `1h30m`) into ns.
pub fn parse_duration_ns(input: &str) -> Result<i64, DurationParseError> {
    let err = || DurationParseError {
        input: input.to_string(),
    };
    let text = input.trim();
    if text.is_empty() {
        return Err(err());
    }
    let mut total: i64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(err());
        }
        let number: i64 = rest[..digits].parse().map_err(|_| err())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale: i64 = match unit {
            "ns" => 1,
            "us" => 1_000,
            "ms" => 1_000_000,
            "s" => NS_PER_SECOND,
            "m" => 60 * NS_PER_SECOND,
            "h" => 3600 * NS_PER_SECOND,
            "d" => 86_400 * NS_PER_SECOND,
            "w" => 7 * 86_400 * NS_PER_SECOND,
            _ => return Err(err()),
        };
        total = number
            .checked_mul(scale)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(err)?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_duration_reads_units_and_combinations() {
        assert_eq!(parse_duration_ns("15m"), Ok(15 * 60 * NS_PER_SECOND));
        assert_eq!(parse_duration_ns("1h30m"), Ok(5400 * NS_PER_SECOND));
        assert_eq!(parse_duration_ns("7d"), Ok(7 * 86_400 * NS_PER_SECOND));
        assert_eq!(parse_duration_ns("250ms"), Ok(250_000_000));
    }

    #[test]
    fn parse_duration_rejects_missing_unit_and_garbage() {
        assert!(parse_duration_ns("15").is_err());
        assert!(parse_duration_ns("h").is_err());
        assert!(parse_duration_ns("1y").is_err());
        assert!(parse_duration_ns("").is_err());
        assert!(parse_duration_ns("99999999999999999d").is_err());
    }

    #[test]
    fn overlaps_respects_half_open_end() {
        let range = TimeRange::new(Some(10), Some(20));
        assert!(range.overlaps(0, 10));
        assert!(range.overlaps(19, 30));
        assert!(!range.overlaps(20, 30));
        assert!(!range.overlaps(0, 9));
        assert!(TimeRange::ALL.overlaps(i64::MIN, i64::MIN));
    }
}
