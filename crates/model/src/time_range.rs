//! Time ranges in nanoseconds since the Unix epoch.

/// Nanoseconds in a second.
pub const NS_PER_SECOND: i64 = 1_000_000_000;

/// A half-open time range `[start_ns, end_ns)`; an open side is unbounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TimeRange {
    /// The first nanosecond in the range; `None`: unbounded.
    pub start_ns: Option<i64>,
    /// The first nanosecond after the range; `None`: unbounded.
    pub end_ns: Option<i64>,
}

impl TimeRange {
    /// Every time.
    pub const ALL: TimeRange = TimeRange {
        start_ns: None,
        end_ns: None,
    };

    /// A range from its two sides.
    pub fn new(start_ns: Option<i64>, end_ns: Option<i64>) -> Self {
        Self { start_ns, end_ns }
    }

    /// Whether a closed interval `[min_ns, max_ns]` of data may hold rows in this range.
    pub fn overlaps(&self, min_ns: i64, max_ns: i64) -> bool {
        self.start_ns.is_none_or(|s| max_ns >= s) && self.end_ns.is_none_or(|e| min_ns < e)
    }

    /// Whether `ns` lies in the range.
    pub fn contains(&self, ns: i64) -> bool {
        self.start_ns.is_none_or(|s| ns >= s) && self.end_ns.is_none_or(|e| ns < e)
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

#[cfg(test)]
mod tests {
    use super::*;

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
