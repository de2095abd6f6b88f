//! The latency sketch of the span rollups: DDSketch's logarithmic mapping at 1% relative
//! accuracy. A duration `d` lands in bin `ceil(ln d / ln γ)` with `γ = 1.01 / 0.99`, and a bin
//! stands for `2γ^i / (γ + 1)`, so every percentile read back is within 1% of a duration that
//! was recorded. Sketches merge by adding counts per bin, so minutes, routes and segments
//! combine without loss. The same mapping is given as SQL ([`bin_sql`]) for rows read straight
//! from `spans`.

/// Relative accuracy of the latency sketch.
pub const RELATIVE_ACCURACY: f64 = 0.01;

fn gamma() -> f64 {
    (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY)
}

fn ln_gamma() -> f64 {
    gamma().ln()
}

/// The sketch bin of a duration (durations under a nanosecond count as one).
pub fn bin_of(duration_ns: i64) -> i32 {
    ((duration_ns.max(1) as f64).ln() / ln_gamma()).ceil() as i32
}

/// The same mapping as SQL over a nanosecond column, for rows read straight from `spans`.
/// DataFusion's `ln` is Rust's, and the divisor is printed exactly, so both give equal bins.
pub fn bin_sql(column: &str) -> String {
    format!(
        "CAST(ceil(ln(CAST(greatest({column}, 1) AS DOUBLE)) / {:?}) AS INT)",
        ln_gamma()
    )
}

/// The duration a bin stands for, in nanoseconds.
pub fn bin_value(bin: i32) -> f64 {
    let g = gamma();
    2.0 * g.powi(bin) / (g + 1.0)
}

/// A mergeable latency sketch: counts per logarithmic bin (held densely from the lowest bin
/// seen, as DDSketch's dense store does), with the exact minimum and maximum.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencySketch {
    /// The bin of `counts[0]`.
    offset: i32,
    counts: Vec<i64>,
    count: i64,
    min_ns: i64,
    max_ns: i64,
}

impl LatencySketch {
    /// Adds one duration.
    pub fn add(&mut self, duration_ns: i64) {
        self.add_bin(bin_of(duration_ns), 1, duration_ns, duration_ns);
    }

    fn add_to_bin(&mut self, bin: i32, count: i64) {
        if self.counts.is_empty() {
            self.offset = bin;
            self.counts.push(count);
            return;
        }
        if bin < self.offset {
            let grow = (self.offset - bin) as usize;
            self.counts.splice(0..0, std::iter::repeat_n(0, grow));
            self.offset = bin;
        }
        let at = (bin - self.offset) as usize;
        if at >= self.counts.len() {
            self.counts.resize(at + 1, 0);
        }
        self.counts[at] += count;
    }

    fn widen(&mut self, count: i64, min_ns: i64, max_ns: i64) {
        if self.count == 0 {
            self.min_ns = min_ns;
            self.max_ns = max_ns;
        } else {
            self.min_ns = self.min_ns.min(min_ns);
            self.max_ns = self.max_ns.max(max_ns);
        }
        self.count += count;
    }

    /// Adds `count` durations known to lie in `bin`, the smallest and largest of them given.
    pub fn add_bin(&mut self, bin: i32, count: i64, min_ns: i64, max_ns: i64) {
        if count <= 0 {
            return;
        }
        self.add_to_bin(bin, count);
        self.widen(count, min_ns, max_ns);
    }

    /// Adds every duration of another sketch.
    pub fn merge(&mut self, other: &LatencySketch) {
        if other.count == 0 {
            return;
        }
        for (bin, count) in other.bins() {
            self.add_to_bin(bin, count);
        }
        self.widen(other.count, other.min_ns, other.max_ns);
    }

    /// The bins holding durations, lowest first, with their counts.
    pub fn bins(&self) -> impl Iterator<Item = (i32, i64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, c)| (self.offset + i as i32, *c))
    }

    /// How many durations the sketch holds.
    pub fn count(&self) -> i64 {
        self.count
    }

    /// The smallest duration recorded (0 when empty).
    pub fn min_ns(&self) -> i64 {
        self.min_ns
    }

    /// The largest duration recorded (0 when empty).
    pub fn max_ns(&self) -> i64 {
        self.max_ns
    }

    /// The `q` quantile in nanoseconds (DDSketch's lower rank), within 1% of a recorded
    /// duration and never outside the recorded minimum and maximum; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * (self.count - 1) as f64).floor() as i64;
        // The smallest and the largest durations are known exactly.
        if rank == 0 {
            return Some(self.min_ns as f64);
        }
        if rank >= self.count - 1 {
            return Some(self.max_ns as f64);
        }
        let mut seen = 0;
        for (bin, count) in self.bins() {
            seen += count;
            if seen > rank {
                return Some(bin_value(bin).clamp(self.min_ns as f64, self.max_ns as f64));
            }
        }
        Some(self.max_ns as f64)
    }

    /// How many durations lie in bins at or below the bin of `duration_ns`: those at most
    /// `duration_ns`, give or take the 1% of that one bin.
    pub fn count_at_most(&self, duration_ns: i64) -> i64 {
        let last = bin_of(duration_ns);
        self.bins()
            .take_while(|(bin, _)| *bin <= last)
            .map(|(_, count)| count)
            .sum()
    }

    /// Adds the bins of one `span_rollups` row: `bins[i]` holds `counts[i]` durations.
    pub fn add_row(&mut self, bins: &[i32], counts: &[i64], min_ns: i64, max_ns: i64) {
        let mut added = 0;
        for (bin, count) in bins.iter().zip(counts) {
            if *count > 0 {
                self.add_to_bin(*bin, *count);
                added += count;
            }
        }
        if added > 0 {
            self.widen(added, min_ns, max_ns);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sketch_quantiles_stay_within_the_relative_accuracy() {
        let mut sketch = LatencySketch::default();
        let values: Vec<i64> = (1..=10_000).map(|i| i * 1_000 + i * i).collect();
        for v in &values {
            sketch.add(*v);
        }
        for q in [0.5, 0.9, 0.95, 0.99] {
            let exact = values[(q * (values.len() - 1) as f64).floor() as usize] as f64;
            let got = sketch.quantile(q).expect("not empty");
            assert!(
                (got - exact).abs() <= exact * RELATIVE_ACCURACY,
                "q{q}: {got} vs {exact}"
            );
        }
        assert_eq!(sketch.quantile(0.0), Some(values[0] as f64));
        assert_eq!(sketch.quantile(1.0), Some(values[values.len() - 1] as f64));
        assert_eq!(LatencySketch::default().quantile(0.5), None);
    }

    #[test]
    fn merged_sketches_equal_one_sketch_of_every_duration() {
        let (mut left, mut right, mut all) = (
            LatencySketch::default(),
            LatencySketch::default(),
            LatencySketch::default(),
        );
        for d in [5_000_000, 1, 900_000_000, 42_000] {
            left.add(d);
            all.add(d);
        }
        for d in [3, 7_000_000_000, 42_001] {
            right.add(d);
            all.add(d);
        }
        left.merge(&right);
        assert_eq!(left, all);
        assert_eq!(
            (all.min_ns(), all.max_ns(), all.count()),
            (1, 7_000_000_000, 7)
        );
    }

    #[test]
    fn the_sql_bin_matches_the_rust_bin_on_edges() {
        assert!(bin_sql("duration_ns").starts_with("CAST(ceil(ln("));
        assert_eq!(bin_of(0), bin_of(1));
        assert!(bin_of(1_000_000) < bin_of(1_010_000) + 1);
        let v = bin_value(bin_of(123_456_789));
        assert!((v - 123_456_789.0).abs() <= 123_456_789.0 * RELATIVE_ACCURACY);
    }
}
