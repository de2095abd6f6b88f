//! Log patterns: the lines of a window grouped by their message with the variable parts masked
//! ([`crate::mask::pattern`]), with counts, a per-bucket series and an example, so a thousand
//! identical timeouts read as one line; each compared with the baseline window just before
//! (new patterns, and patterns that grew).
//!
//! One aggregate query counts the lines per pattern (the SQL function `log_pattern`), severity,
//! service and bucket, with each group's most recent line, so the engine holds one group per
//! pattern and bucket however many distinct bodies there are; the groups are then merged by
//! pattern in memory. Bodies are cut to [`BODY_PREFIX`] characters before masking, so a line with
//! a megabyte of payload costs what a short one does.

use std::collections::HashMap;

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use serde::Serialize;
use sightline_model::TimeRange;

use crate::engine::QueryEngine;
use crate::error::Error;
use crate::sql::{quote, time_conditions};

/// The characters of a body read to find its pattern.
pub const BODY_PREFIX: usize = 300;
/// Distinct (pattern, severity, service, bucket) groups read at most; past it the answer says so.
pub const MAX_GROUPS: usize = 2_000_000;
/// A pattern "grew" when its rate is at least this many times its baseline rate.
pub const GREW_RATIO: f64 = 2.0;
/// ... and it has at least this many lines in the window.
pub const GREW_MIN_LINES: u64 = 10;

/// The question.
#[derive(Debug, Clone, PartialEq)]
pub struct PatternQuestion {
    /// Only this service's lines.
    pub service: Option<String>,
    /// The lowest severity counted (`warn` counts warn, error and fatal).
    pub severity: Option<String>,
    /// The window's first nanosecond.
    pub start_ns: i64,
    /// The first nanosecond after it.
    pub end_ns: i64,
    /// The baseline: this long just before the window (0: none).
    pub baseline_ns: i64,
    /// Patterns returned at most (the most frequent, new ones first among equals).
    pub limit: usize,
    /// Buckets of each pattern's series over the window.
    pub buckets: usize,
}

/// One pattern.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pattern {
    /// The message with its variable parts masked.
    pub pattern: String,
    /// Lines in the window.
    pub count: u64,
    /// Lines in the baseline window.
    pub baseline_count: u64,
    /// True when the baseline had none (and there was a baseline).
    pub new: bool,
    /// True when its rate is at least [`GREW_RATIO`] times the baseline's (and it is not new).
    pub grew: bool,
    /// The most severe level seen (`error`, `warn`, ...).
    pub severity: String,
    /// One line as written (the most recent one's body, cut to [`BODY_PREFIX`] characters).
    pub example: String,
    /// The services that wrote it (at most five).
    pub services: Vec<String>,
    /// Lines per bucket over the window.
    pub series: Vec<u64>,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Patterns {
    /// Lines in the window.
    pub lines: u64,
    /// Lines in the baseline window.
    pub baseline_lines: u64,
    /// Distinct patterns in the window.
    pub distinct: usize,
    /// The patterns, most lines first.
    pub patterns: Vec<Pattern>,
    /// The width of a series bucket, in seconds.
    pub bucket_s: f64,
    /// True when more than [`MAX_GROUPS`] groups were read and the rest left out.
    pub truncated: bool,
}

#[derive(Default)]
struct Acc {
    count: u64,
    baseline_count: u64,
    severity_number: i32,
    severity: String,
    example: String,
    example_time: i64,
    services: Vec<String>,
    series: Vec<u64>,
}

/// The log patterns of `question`'s window. [`Error::Invalid`] for an unknown severity or an
/// empty window.
pub async fn patterns(engine: &QueryEngine, question: &PatternQuestion) -> Result<Patterns, Error> {
    if question.end_ns <= question.start_ns {
        return Err(Error::Invalid {
            message: "the window's end must be after its start".into(),
        });
    }
    let buckets = question.buckets.clamp(1, 500);
    let length = question.end_ns - question.start_ns;
    let step = ((length + buckets as i64 - 1) / buckets as i64).max(1);
    let baseline_ns = question.baseline_ns.max(0);
    let mut conditions = time_conditions(
        "time",
        TimeRange::new(Some(question.start_ns - baseline_ns), Some(question.end_ns)),
    );
    if let Some(service) = &question.service {
        conditions.push(format!("service_name = {}", quote(service)));
    }
    if let Some(severity) = &question.severity {
        let floor = sightline_model::severity::severity_number_from_text(severity).ok_or_else(
            || Error::Invalid {
                message: format!(
                    "unknown severity {severity:?}: expected trace, debug, info, warn, error or fatal"
                ),
            },
        )?;
        conditions.push(format!("severity_number >= {floor}"));
    }
    // Buckets of the baseline are negative: -1 is the last `step` before the window.
    // The engine groups by pattern (`log_pattern`), so the groups held are patterns × buckets
    // however many distinct bodies the window has; each group keeps its most recent line.
    let sql = format!(
        "SELECT {mask}(substr(body, 1, {BODY_PREFIX})) AS pattern, severity, \
         max(severity_number) AS severity_number, service_name, \
         CAST(floor(CAST(CAST(time AS BIGINT) - {start} AS DOUBLE) / {step}) AS BIGINT) AS bucket, \
         count(*) AS lines, last_value(substr(body, 1, {BODY_PREFIX}) ORDER BY time) AS example, \
         CAST(max(time) AS BIGINT) AS latest \
         FROM logs WHERE {filter} GROUP BY 1, 2, 4, 5",
        mask = crate::mask::SQL_FUNCTION,
        start = question.start_ns,
        filter = conditions.join(" AND "),
    );
    let (_, batches, truncated) = engine.collect(&sql, MAX_GROUPS).await?;
    let mut by_pattern: HashMap<String, Acc> = HashMap::new();
    let (mut lines, mut baseline_lines) = (0u64, 0u64);
    for batch in &batches {
        let pattern = batch.column(0);
        let severity = batch.column(1);
        let severity_number = batch.column(2);
        let service = batch.column(3);
        let bucket = batch.column(4).as_primitive::<Int64Type>();
        let count = batch.column(5).as_primitive::<Int64Type>();
        let example = batch.column(6);
        let latest = batch.column(7).as_primitive::<Int64Type>();
        for i in 0..batch.num_rows() {
            let n = count.value(i).max(0) as u64;
            let b = bucket.value(i);
            let acc = by_pattern.entry(string(pattern, i)).or_insert_with(|| Acc {
                series: vec![0; buckets],
                example_time: i64::MIN,
                ..Acc::default()
            });
            if b < 0 {
                acc.baseline_count += n;
                baseline_lines += n;
                continue;
            }
            acc.count += n;
            lines += n;
            if let Some(slot) = acc.series.get_mut(b as usize) {
                *slot += n;
            }
            let level = int32(severity_number, i);
            if level > acc.severity_number || acc.severity.is_empty() {
                acc.severity_number = level;
                acc.severity = string(severity, i);
            }
            if latest.value(i) >= acc.example_time {
                acc.example_time = latest.value(i);
                acc.example = string(example, i);
            }
            let name = string(service, i);
            if acc.services.len() < 5 && !acc.services.contains(&name) {
                acc.services.push(name);
            }
        }
    }
    let rate_ratio = if baseline_ns > 0 {
        length as f64 / baseline_ns as f64
    } else {
        0.0
    };
    let mut out: Vec<Pattern> = by_pattern
        .into_iter()
        .filter(|(_, a)| a.count > 0)
        .map(|(pattern, a)| {
            let new = baseline_ns > 0 && a.baseline_count == 0;
            let expected = a.baseline_count as f64 * rate_ratio;
            let grew = baseline_ns > 0
                && !new
                && a.count >= GREW_MIN_LINES
                && a.count as f64 >= GREW_RATIO * expected;
            let mut services = a.services;
            services.sort();
            Pattern {
                pattern,
                count: a.count,
                baseline_count: a.baseline_count,
                new,
                grew,
                severity: a.severity,
                example: a.example,
                services,
                series: a.series,
            }
        })
        .collect();
    let distinct = out.len();
    out.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then(b.new.cmp(&a.new))
            .then(a.pattern.cmp(&b.pattern))
    });
    out.truncate(question.limit.max(1));
    Ok(Patterns {
        lines,
        baseline_lines,
        distinct,
        patterns: out,
        bucket_s: step as f64 / 1e9,
        truncated,
    })
}

fn string(column: &dyn Array, i: usize) -> String {
    if column.is_null(i) {
        return String::new();
    }
    if let Some(a) = column.as_string_view_opt() {
        return a.value(i).to_string();
    }
    column
        .as_string_opt::<i32>()
        .map(|a| a.value(i).to_string())
        .unwrap_or_default()
}

fn int32(column: &dyn Array, i: usize) -> i32 {
    column
        .as_primitive_opt::<arrow::datatypes::Int32Type>()
        .filter(|_| !column.is_null(i))
        .map_or(0, |a| a.value(i))
}
