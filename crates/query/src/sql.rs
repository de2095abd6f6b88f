//! SQL text the fixed questions are built from: string literals, time literals and the time
//! window conditions of a column.

use sightline_model::TimeRange;

/// A SQL string literal.
pub fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A timestamp literal of `ns` nanoseconds since the epoch.
pub fn time_literal(ns: i64) -> String {
    format!("to_timestamp_nanos({ns})")
}

/// The conditions that keep `column` in `range` (none for an unbounded side).
pub fn time_conditions(column: &str, range: TimeRange) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(start) = range.start_ns {
        out.push(format!("{column} >= {}", time_literal(start)));
    }
    if let Some(end) = range.end_ns {
        out.push(format!("{column} < {}", time_literal(end)));
    }
    out
}

/// `WHERE a AND b`, or nothing without conditions.
pub fn where_clause(conditions: &[String]) -> String {
    if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    }
}
