//! What stored data still matches the redaction rules: data written before a rule existed (or
//! with redaction off) keeps its secrets until retention drops it, and an operator needs to know
//! where. `GET /api/v1/admin/redaction/scan` reads every text column of `spans`, `logs` and
//! `metrics` over a window, an hour at a time, and runs the server's rules on each value (the
//! key rule on the keys of JSON columns, the patterns on all text); `sightline redact scan`
//! asks for it window by window and prints the findings per rule and column, with examples
//! masked so the report itself leaks nothing.

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray};
use serde::{Deserialize, Serialize};
use sightline_ingest::Redactor;
use sightline_ingest::redact::masked_example;
use sightline_query::QueryEngine;
use sightline_query::sql::time_literal;

/// Rows read at most per table and hour; past it the answer says the scan was cut.
const MAX_ROWS_PER_HOUR: usize = 2_000_000;
/// Examples kept per rule and column.
pub const EXAMPLES: usize = 3;
const HOUR_NS: i64 = 3_600_000_000_000;

/// A column and how its values are read.
#[derive(Clone, Copy)]
enum Kind {
    /// Text: the patterns.
    Text,
    /// A JSON object or array: the key rule on its keys, the patterns on its strings.
    Json,
}

/// The text columns of each table, with the column of its time.
const COLUMNS: [(&str, &str, &[(&str, Kind)]); 3] = [
    (
        "spans",
        "start_time",
        &[
            ("name", Kind::Text),
            ("message", Kind::Text),
            ("status_message", Kind::Text),
            ("http_route", Kind::Text),
            ("exception_message", Kind::Text),
            ("exception_stacktrace", Kind::Text),
            ("attributes", Kind::Json),
            ("resource_attributes", Kind::Json),
            ("events", Kind::Json),
            ("links", Kind::Json),
        ],
    ),
    (
        "logs",
        "time",
        &[
            ("body", Kind::Text),
            ("exception_message", Kind::Text),
            ("exception_stacktrace", Kind::Text),
            ("attributes", Kind::Json),
            ("resource_attributes", Kind::Json),
        ],
    ),
    (
        "metrics",
        "time",
        &[
            ("attributes", Kind::Json),
            ("resource_attributes", Kind::Json),
            ("exemplars", Kind::Json),
        ],
    ),
];

/// What one rule still finds in one column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The rule (`card_numbers`, `keys`, a custom pattern's name).
    pub rule: String,
    /// `spans`, `logs` or `metrics`.
    pub table: String,
    /// The column.
    pub column: String,
    /// Values found (a value with two card numbers counts two).
    pub count: u64,
    /// Rows holding at least one.
    pub rows: u64,
    /// Up to [`EXAMPLES`] of the values found, masked: first and last two characters.
    pub examples: Vec<String>,
}

/// The answer of one scan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanReport {
    /// The window, nanoseconds since the epoch.
    pub start_ns: i64,
    /// Its end (exclusive).
    pub end_ns: i64,
    /// The rules scanned for (those that are on).
    pub rules: Vec<String>,
    /// Rows read per table.
    pub rows_scanned: BTreeMap<String, u64>,
    /// What was found, most values first.
    pub findings: Vec<Finding>,
    /// Tables whose rows in some hour were more than could be read; the rest were not scanned.
    pub truncated: Vec<String>,
}

impl ScanReport {
    /// Adds another window's report to this one (the CLI asks hour by hour).
    pub fn merge(&mut self, other: ScanReport) {
        if self.rules.is_empty() {
            self.rules = other.rules;
        }
        self.start_ns = if self.end_ns == 0 {
            other.start_ns
        } else {
            self.start_ns.min(other.start_ns)
        };
        self.end_ns = self.end_ns.max(other.end_ns);
        for (table, n) in other.rows_scanned {
            *self.rows_scanned.entry(table).or_default() += n;
        }
        for finding in other.findings {
            match self.findings.iter_mut().find(|f| {
                f.rule == finding.rule && f.table == finding.table && f.column == finding.column
            }) {
                Some(mine) => {
                    mine.count += finding.count;
                    mine.rows += finding.rows;
                    for example in finding.examples {
                        if mine.examples.len() < EXAMPLES && !mine.examples.contains(&example) {
                            mine.examples.push(example);
                        }
                    }
                }
                None => self.findings.push(finding),
            }
        }
        for table in other.truncated {
            if !self.truncated.contains(&table) {
                self.truncated.push(table);
            }
        }
        sort(&mut self.findings);
    }
}

fn sort(findings: &mut [Finding]) {
    findings.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| (&a.rule, &a.table, &a.column).cmp(&(&b.rule, &b.table, &b.column)))
    });
}

/// Scans `[start_ns, end_ns)` an hour at a time.
pub async fn scan(
    engine: &QueryEngine,
    redactor: &Redactor,
    start_ns: i64,
    end_ns: i64,
) -> Result<ScanReport, sightline_query::Error> {
    let names = redactor.rule_names();
    let mut report = ScanReport {
        start_ns,
        end_ns,
        rules: names.iter().map(|n| n.to_string()).collect(),
        ..ScanReport::default()
    };
    if redactor.is_off() {
        return Ok(report);
    }
    let mut found: BTreeMap<(usize, &str, &str), Finding> = BTreeMap::new();
    for (table, time, columns) in COLUMNS {
        let mut rows_read = 0u64;
        let mut from = start_ns;
        while from < end_ns {
            let to = (from.saturating_add(HOUR_NS)).min(end_ns);
            let list: Vec<&str> = columns.iter().map(|(c, _)| *c).collect();
            let sql = format!(
                "SELECT {} FROM {table} WHERE {time} >= {} AND {time} < {}",
                list.join(", "),
                time_literal(from),
                time_literal(to),
            );
            let (_, batches, truncated) = engine.collect(&sql, MAX_ROWS_PER_HOUR).await?;
            if truncated && !report.truncated.iter().any(|t| t == table) {
                report.truncated.push(table.to_string());
            }
            for batch in &batches {
                rows_read += batch.num_rows() as u64;
                for (c, (column, kind)) in columns.iter().enumerate() {
                    let array = batch.column(c);
                    for row in 0..batch.num_rows() {
                        let Some(value) = text_at(array.as_ref(), row) else {
                            continue;
                        };
                        let hits: Vec<(usize, String)> = match kind {
                            Kind::Text => redactor
                                .find(value)
                                .into_iter()
                                .map(|h| (h.rule, value[h.range].to_string()))
                                .collect(),
                            Kind::Json => match serde_json::from_str(value) {
                                Ok(json) => redactor.find_in_json(&json),
                                Err(_) => redactor
                                    .find(value)
                                    .into_iter()
                                    .map(|h| (h.rule, value[h.range].to_string()))
                                    .collect(),
                            },
                        };
                        let mut rules_in_row: Vec<usize> = Vec::new();
                        for (rule, secret) in hits {
                            let finding =
                                found
                                    .entry((rule, table, column))
                                    .or_insert_with(|| Finding {
                                        rule: names[rule].to_string(),
                                        table: table.to_string(),
                                        column: column.to_string(),
                                        count: 0,
                                        rows: 0,
                                        examples: Vec::new(),
                                    });
                            finding.count += 1;
                            if !rules_in_row.contains(&rule) {
                                rules_in_row.push(rule);
                                finding.rows += 1;
                            }
                            let example = masked_example(&secret);
                            if finding.examples.len() < EXAMPLES
                                && !finding.examples.contains(&example)
                            {
                                finding.examples.push(example);
                            }
                        }
                    }
                }
            }
            from = to;
        }
        report.rows_scanned.insert(table.to_string(), rows_read);
    }
    report.findings = found.into_values().collect();
    sort(&mut report.findings);
    Ok(report)
}

fn text_at(array: &dyn Array, row: usize) -> Option<&str> {
    if array.is_null(row) {
        return None;
    }
    if let Some(view) = array.as_string_view_opt() {
        return Some(view.value(row));
    }
    array.as_string_opt::<i32>().map(|a| a.value(row))
}
