//! `[[check]]`: data checks on what services emit, SQL-backed and read-only, evaluated with the
//! SLOs and rules every `evaluation_interval` and turned into alerts (`source = "check"`) with
//! their own state and notifications:
//!
//! | kind | value | fails when |
//! | --- | --- | --- |
//! | `freshness` | age of the newest matching record, in seconds | older than `max_age` |
//! | `volume` | matching records in the window over those in the same window `baseline` ago | below `min_ratio` or above `max_ratio` |
//! | `nulls` | share of matching records whose `attribute` is missing, null or empty | above `max_null_rate` |
//! | `distribution` | text values: the population stability index against the baseline window; numbers: the two-sample Kolmogorov–Smirnov statistic D | PSI above `max_psi`; D above its critical value at `max_p_value` |
//! | `schema` | matching records missing a `required` attribute, carrying a `forbidden` one, or one of the wrong type (`types`) | any |
//!
//! A window with fewer than `min_records` matching records (the baseline's too) is no data (a
//! schema check needs one record: every record must keep the schema). The
//! `where` predicate is planned against the engine at start, so a check that cannot run is a
//! configuration mistake named by its key.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sightline_model::{ConfigError, HumanDuration, Table};
use sightline_query::QueryEngine;
use sightline_query::sql::{quote, time_literal};

use crate::alert::{Labels, Source, fingerprint};
use crate::config::NoData;
use crate::error::Error;
use crate::eval::Found;
use crate::state::{Timing, Verdict};

/// What a check looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// The newest matching record is recent enough.
    Freshness,
    /// Matching records arrive at the usual rate.
    Volume,
    /// An attribute is filled in.
    Nulls,
    /// An attribute's values are distributed as before.
    Distribution,
    /// Records carry the attributes they must, and none they must not.
    Schema,
}

impl CheckKind {
    /// The kind as configured.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Freshness => "freshness",
            Self::Volume => "volume",
            Self::Nulls => "nulls",
            Self::Distribution => "distribution",
            Self::Schema => "schema",
        }
    }
}

/// The table a check reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckTable {
    /// `spans`.
    #[default]
    Spans,
    /// `logs`.
    Logs,
    /// `metrics`.
    Metrics,
}

impl CheckTable {
    fn table(self) -> Table {
        match self {
            Self::Spans => Table::Spans,
            Self::Logs => Table::Logs,
            Self::Metrics => Table::Metrics,
        }
    }

    /// The SQL table's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Spans => "spans",
            Self::Logs => "logs",
            Self::Metrics => "metrics",
        }
    }
}

fn default_window() -> HumanDuration {
    HumanDuration::from_secs(3600)
}

fn default_baseline() -> HumanDuration {
    HumanDuration::from_secs(7 * 24 * 3600)
}

fn default_min_records() -> u64 {
    20
}

/// One `[[check]]` table.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    /// Unique among checks; lower-case letters, digits, `_`, `.` and `-`.
    pub name: String,
    /// What it checks.
    pub kind: CheckKind,
    /// The table it reads (default `spans`).
    #[serde(default)]
    pub table: CheckTable,
    /// A SQL predicate the records must match (read-only; planned at start).
    #[serde(rename = "where", default)]
    pub where_: Option<String>,
    /// The attribute judged (`nulls`, `distribution`): a key of `attributes`, or a column.
    #[serde(default)]
    pub attribute: Option<String>,
    /// The window evaluated, ending now (default 1h).
    #[serde(default = "default_window")]
    pub window: HumanDuration,
    /// `freshness`: the newest matching record may be this old.
    #[serde(default)]
    pub max_age: Option<HumanDuration>,
    /// `volume`, `distribution`: compare with the same window this long ago (default 7d).
    #[serde(default = "default_baseline")]
    pub baseline: HumanDuration,
    /// `volume`: fewer than this share of the baseline's records fails.
    #[serde(default)]
    pub min_ratio: Option<f64>,
    /// `volume`: more than this multiple of the baseline's records fails.
    #[serde(default)]
    pub max_ratio: Option<f64>,
    /// `nulls`: a larger share of records without the attribute fails.
    #[serde(default)]
    pub max_null_rate: Option<f64>,
    /// `distribution` of text values: a larger population stability index fails.
    #[serde(default)]
    pub max_psi: Option<f64>,
    /// `distribution` of numbers: a two-sample Kolmogorov–Smirnov p-value below this fails
    /// (default 0.01).
    #[serde(default)]
    pub max_p_value: Option<f64>,
    /// `schema`: attributes every matching record must have.
    #[serde(default)]
    pub required: Vec<String>,
    /// `schema`: attributes no matching record may have.
    #[serde(default)]
    pub forbidden: Vec<String>,
    /// `schema`: attribute → `number`, `string` or `bool`.
    #[serde(default)]
    pub types: BTreeMap<String, String>,
    /// Fewer matching records in the window (or the baseline) is no data (default 20).
    #[serde(default = "default_min_records")]
    pub min_records: u64,
    /// How long a failure must hold before the alert fires.
    #[serde(rename = "for", default)]
    pub for_: HumanDuration,
    /// How long it keeps firing after the failure ends.
    #[serde(default)]
    pub keep_firing_for: HumanDuration,
    /// Its runbook.
    #[serde(default)]
    pub runbook_url: Option<String>,
    /// Labels added to its alert.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Where its notifications go (default: every `[[notify]]`).
    #[serde(default)]
    pub notify: Option<Vec<String>>,
}

impl CheckConfig {
    /// Refuses what cannot be evaluated, naming the key (`check[1].max_age`).
    pub fn validate(&self, i: usize) -> Result<(), ConfigError> {
        let key = |field: &str| format!("check[{i}].{field}");
        let need = |field: &str, present: bool, example: &str| {
            if present {
                Ok(())
            } else {
                Err(ConfigError::new(
                    key(field),
                    format!(
                        "is required for a {} check, e.g. {field} = {example}",
                        self.kind.as_str()
                    ),
                ))
            }
        };
        if self.window.is_zero() {
            return Err(ConfigError::new(key("window"), "must be longer than 0s"));
        }
        if self.min_records == 0 {
            return Err(ConfigError::new(key("min_records"), "must be at least 1"));
        }
        let share = |field: &str, v: Option<f64>| match v {
            Some(v) if !(v.is_finite() && v >= 0.0) => Err(ConfigError::new(
                key(field),
                format!("must be a number of at least 0, not {v}"),
            )),
            _ => Ok(()),
        };
        share("min_ratio", self.min_ratio)?;
        share("max_ratio", self.max_ratio)?;
        share("max_null_rate", self.max_null_rate)?;
        share("max_psi", self.max_psi)?;
        if let Some(p) = self.max_p_value
            && !(p > 0.0 && p < 1.0)
        {
            return Err(ConfigError::new(
                key("max_p_value"),
                format!("must be between 0 and 1, not {p}"),
            ));
        }
        if let Some(a) = &self.attribute
            && a.trim().is_empty()
        {
            return Err(ConfigError::new(key("attribute"), "must name an attribute"));
        }
        // Volume and distribution compare the window with a baseline at least as long.
        let baseline_covers_window = || {
            if self.baseline < self.window {
                return Err(ConfigError::new(
                    key("baseline"),
                    format!(
                        "({}) must be at least the window ({})",
                        self.baseline, self.window
                    ),
                ));
            }
            Ok(())
        };
        match self.kind {
            CheckKind::Freshness => need(
                "max_age",
                self.max_age.is_some_and(|a| !a.is_zero()),
                "\"15m\"",
            ),
            CheckKind::Volume => {
                need(
                    "min_ratio",
                    self.min_ratio.is_some() || self.max_ratio.is_some(),
                    "0.5 (or max_ratio)",
                )?;
                baseline_covers_window()
            }
            CheckKind::Nulls => {
                need("attribute", self.attribute.is_some(), "\"order.amount\"")?;
                need("max_null_rate", self.max_null_rate.is_some(), "0.01")
            }
            CheckKind::Distribution => {
                need("attribute", self.attribute.is_some(), "\"payment.method\"")?;
                baseline_covers_window()
            }
            CheckKind::Schema => {
                need(
                    "required",
                    !(self.required.is_empty()
                        && self.forbidden.is_empty()
                        && self.types.is_empty()),
                    "[\"order.id\"] (or forbidden, or types)",
                )?;
                for (attribute, kind) in &self.types {
                    if !matches!(kind.as_str(), "number" | "string" | "bool") {
                        return Err(ConfigError::new(
                            key(&format!("types.{attribute}")),
                            format!("must be number, string or bool, not {kind:?}"),
                        ));
                    }
                }
                Ok(())
            }
        }
    }

    /// The records it looks at: `where` and, for `window` ending at `end_ns`, the time range.
    fn selection(&self, start_ns: i64, end_ns: i64) -> String {
        let time = self.table.table().time_column();
        let mut conditions = vec![
            format!("{time} >= {}", time_literal(start_ns)),
            format!("{time} < {}", time_literal(end_ns)),
        ];
        if let Some(w) = self.where_.as_deref().filter(|w| !w.trim().is_empty()) {
            conditions.push(format!("({w})"));
        }
        conditions.join(" AND ")
    }

    /// The attribute's value as text: a column of the table when one has the name, else the
    /// key in `attributes`.
    fn value_sql(&self) -> String {
        attribute_sql(self.table, self.attribute.as_deref().unwrap_or_default())
    }

    fn labels(&self) -> Labels {
        let mut labels: Labels = self.labels.clone().into_iter().collect();
        labels.insert("alertname".into(), self.name.clone());
        labels.insert("check".into(), self.kind.as_str().into());
        labels
    }

    fn timing(&self) -> Timing {
        Timing {
            for_ns: self.for_.as_nanos(),
            keep_firing_for_ns: self.keep_firing_for.as_nanos(),
            no_data: NoData::NoData,
        }
    }
}

/// Columns a check's attribute may name directly.
const COLUMNS: &[&str] = &[
    "name",
    "kind",
    "status",
    "status_message",
    "service_name",
    "service_version",
    "environment",
    "http_method",
    "http_route",
    "http_status_code",
    "exception_type",
    "exception_message",
    "severity",
    "body",
    "logger",
    "unit",
    "value",
    "type",
];

fn attribute_sql(table: CheckTable, attribute: &str) -> String {
    let column_ok = match table {
        CheckTable::Spans => !matches!(
            attribute,
            "severity" | "body" | "logger" | "unit" | "value" | "type"
        ),
        CheckTable::Logs => matches!(
            attribute,
            "service_name"
                | "service_version"
                | "environment"
                | "severity"
                | "body"
                | "logger"
                | "exception_type"
                | "exception_message"
        ),
        CheckTable::Metrics => matches!(
            attribute,
            "name" | "service_name" | "service_version" | "environment" | "unit" | "value" | "type"
        ),
    };
    if COLUMNS.contains(&attribute) && column_ok {
        format!("CAST({attribute} AS VARCHAR)")
    } else {
        format!("json_as_text(attributes, {})", quote(attribute))
    }
}

/// Plans every check's queries against the engine: a `where` that is not a valid read-only
/// predicate over its table is refused, naming `check[i].where`.
pub async fn plan_checks(engine: &QueryEngine, checks: &[CheckConfig]) -> Result<(), ConfigError> {
    for (i, check) in checks.iter().enumerate() {
        let sql = format!(
            "SELECT count(*) AS n FROM {} WHERE {}",
            check.table.as_str(),
            check.selection(0, 1)
        );
        if let Err(e) = engine.plan_columns(&sql).await {
            return Err(ConfigError::new(
                format!("check[{i}].where"),
                format!("cannot be used over {}: {e}", check.table.as_str()),
            ));
        }
    }
    Ok(())
}

/// Evaluates every check at `now_ns`; a check whose query fails is a verdict of no data that
/// says why.
pub async fn evaluate(engine: &QueryEngine, checks: &[CheckConfig], now_ns: i64) -> Vec<Found> {
    let mut out = Vec::with_capacity(checks.len());
    for check in checks {
        let verdict = match judge(engine, check, now_ns).await {
            Ok(verdict) => verdict,
            Err(e) => Verdict::NoData {
                summary: format!("{}: the check's query failed: {e}", check.name),
            },
        };
        let labels = check.labels();
        out.push(Found {
            id: fingerprint(&labels),
            name: check.name.clone(),
            source: Source::Check,
            service: labels.get("service").cloned(),
            labels,
            runbook_url: check.runbook_url.clone(),
            notify: check.notify.clone(),
            verdict,
            timing: check.timing(),
            ask: None,
        });
    }
    out
}

fn number(row: &Map<String, Value>, key: &str) -> f64 {
    row.get(key).and_then(Value::as_f64).unwrap_or(0.0)
}

/// Values a distribution check reads from each window, at most.
const MAX_VALUES: usize = 20_000;
/// Categories a distribution check keeps apart; the rest are pooled.
const MAX_CATEGORIES: usize = 100;

async fn judge(engine: &QueryEngine, check: &CheckConfig, now_ns: i64) -> Result<Verdict, Error> {
    let table = check.table.as_str();
    let window_ns = check.window.as_nanos();
    let start = now_ns - window_ns;
    let name = &check.name;
    let min = check.min_records;
    Ok(match check.kind {
        CheckKind::Freshness => {
            let max_age = check.max_age.map_or(0, |a| a.as_nanos());
            let lookback = window_ns.max(2 * max_age);
            let time = check.table.table().time_column();
            let sql = format!(
                "SELECT CAST(max({time}) AS BIGINT) AS newest FROM {table} WHERE {}",
                check.selection(now_ns - lookback, now_ns + 1)
            );
            let newest = engine
                .objects(&sql, 1)
                .await?
                .first()
                .and_then(|r| r.get("newest").and_then(Value::as_i64));
            let threshold = max_age as f64 / 1e9;
            match newest {
                Some(t) => {
                    let age = (now_ns - t).max(0) as f64 / 1e9;
                    Verdict::compared(
                        age > threshold,
                        age,
                        threshold,
                        format!(
                            "{name}: the newest matching record is {} old (at most {} allowed)",
                            seconds(age),
                            seconds(threshold)
                        ),
                    )
                }
                None => {
                    let age = lookback as f64 / 1e9;
                    Verdict::compared(
                        true,
                        age,
                        threshold,
                        format!(
                            "{name}: no matching record in the last {} (at most {} allowed)",
                            seconds(age),
                            seconds(threshold)
                        ),
                    )
                }
            }
        }
        CheckKind::Volume => {
            let base = check.baseline.as_nanos();
            let sql = format!(
                "SELECT count(*) FILTER (WHERE {now_part}) AS now, count(*) FILTER (WHERE {base_part}) AS before \
                 FROM {table} WHERE ({now_part}) OR ({base_part})",
                now_part = check.selection(start, now_ns),
                base_part = check.selection(start - base, now_ns - base),
            );
            let row = engine
                .objects(&sql, 1)
                .await?
                .into_iter()
                .next()
                .unwrap_or_default();
            let (now, before) = (number(&row, "now"), number(&row, "before"));
            if before < min as f64 {
                Verdict::NoData {
                    summary: format!(
                        "{name}: {before:.0} matching records in the baseline window, fewer than min_records ({min})"
                    ),
                }
            } else {
                let ratio = now / before;
                let low = check.min_ratio.is_some_and(|m| ratio < m);
                let high = check.max_ratio.is_some_and(|m| ratio > m);
                let threshold = if high {
                    check.max_ratio
                } else {
                    check.min_ratio.or(check.max_ratio)
                }
                .unwrap_or(0.0);
                Verdict::compared(
                    low || high,
                    ratio,
                    threshold,
                    format!(
                        "{name}: {now:.0} matching records in the last {}, {ratio:.2}× the {before:.0} of the same window {} ago{}",
                        check.window,
                        check.baseline,
                        if low {
                            " (below min_ratio)"
                        } else if high {
                            " (above max_ratio)"
                        } else {
                            ""
                        }
                    ),
                )
            }
        }
        CheckKind::Nulls => {
            let value = check.value_sql();
            let sql = format!(
                "SELECT count(*) AS n, sum(CASE WHEN {value} IS NULL OR {value} = '' THEN 1 ELSE 0 END) AS nulls \
                 FROM {table} WHERE {}",
                check.selection(start, now_ns)
            );
            let row = engine
                .objects(&sql, 1)
                .await?
                .into_iter()
                .next()
                .unwrap_or_default();
            let (n, nulls) = (number(&row, "n"), number(&row, "nulls"));
            let attribute = check.attribute.as_deref().unwrap_or_default();
            if n < min as f64 {
                Verdict::NoData {
                    summary: format!(
                        "{name}: {n:.0} matching records in the last {}, fewer than min_records ({min})",
                        check.window
                    ),
                }
            } else {
                let rate = nulls / n;
                let threshold = check.max_null_rate.unwrap_or(0.0);
                Verdict::compared(
                    rate > threshold,
                    rate,
                    threshold,
                    format!(
                        "{name}: {attribute} is missing or empty on {nulls:.0} of {n:.0} matching records ({:.1}%; at most {:.1}% allowed)",
                        rate * 100.0,
                        threshold * 100.0
                    ),
                )
            }
        }
        CheckKind::Distribution => distribution(engine, check, now_ns).await?,
        CheckKind::Schema => {
            let mut violations = Vec::new();
            for attribute in &check.required {
                violations.push(format!("{} IS NULL", attribute_sql(check.table, attribute)));
            }
            for attribute in &check.forbidden {
                violations.push(format!(
                    "{} IS NOT NULL",
                    attribute_sql(check.table, attribute)
                ));
            }
            for (attribute, kind) in &check.types {
                violations.push(format!(
                    "({} IS NOT NULL AND NOT array_has({}(attributes), {}))",
                    attribute_sql(check.table, attribute),
                    sightline_query::quality::KEY_TYPES_FUNCTION,
                    quote(&format!("{attribute}\u{1f}{kind}"))
                ));
            }
            let sql = format!(
                "SELECT count(*) AS n, sum(CASE WHEN {} THEN 1 ELSE 0 END) AS bad FROM {table} WHERE {}",
                violations.join(" OR "),
                check.selection(start, now_ns)
            );
            let row = engine
                .objects(&sql, 1)
                .await?
                .into_iter()
                .next()
                .unwrap_or_default();
            let (n, bad) = (number(&row, "n"), number(&row, "bad"));
            if n == 0.0 {
                Verdict::NoData {
                    summary: format!("{name}: no matching record in the last {}", check.window),
                }
            } else {
                let mut rules = Vec::new();
                if !check.required.is_empty() {
                    rules.push(format!("required {}", check.required.join(", ")));
                }
                if !check.forbidden.is_empty() {
                    rules.push(format!("forbidden {}", check.forbidden.join(", ")));
                }
                if !check.types.is_empty() {
                    rules.push(format!(
                        "types {}",
                        check
                            .types
                            .iter()
                            .map(|(k, v)| format!("{k}: {v}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                Verdict::compared(
                    bad > 0.0,
                    bad,
                    0.0,
                    format!(
                        "{name}: {bad:.0} of {n:.0} matching records break the schema ({})",
                        rules.join("; ")
                    ),
                )
            }
        }
    })
}

fn seconds(s: f64) -> String {
    if s >= 3600.0 {
        format!("{:.1} h", s / 3600.0)
    } else if s >= 60.0 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{s:.0} s")
    }
}

async fn distribution(
    engine: &QueryEngine,
    check: &CheckConfig,
    now_ns: i64,
) -> Result<Verdict, Error> {
    let table = check.table.as_str();
    let name = &check.name;
    let window_ns = check.window.as_nanos();
    let base = check.baseline.as_nanos();
    let value = check.value_sql();
    let values = |start: i64, end: i64| {
        format!(
            "SELECT {value} AS v FROM {table} WHERE {} AND {value} IS NOT NULL LIMIT {MAX_VALUES}",
            check.selection(start, end)
        )
    };
    let (now_sql, base_sql) = (
        values(now_ns - window_ns, now_ns),
        values(now_ns - base - window_ns, now_ns - base),
    );
    let (now_rows, base_rows) = tokio::try_join!(
        engine.objects(&now_sql, MAX_VALUES),
        engine.objects(&base_sql, MAX_VALUES),
    )?;
    let texts = |rows: &[Map<String, Value>]| -> Vec<String> {
        rows.iter()
            .filter_map(|r| r.get("v").and_then(Value::as_str).map(str::to_string))
            .collect()
    };
    let (now, before) = (texts(&now_rows), texts(&base_rows));
    let min = check.min_records as usize;
    if now.len() < min || before.len() < min {
        return Ok(Verdict::NoData {
            summary: format!(
                "{name}: {} values in the last {} and {} in the baseline window, fewer than min_records ({min})",
                now.len(),
                check.window,
                before.len()
            ),
        });
    }
    let numbers = |values: &[String]| -> Option<Vec<f64>> {
        values
            .iter()
            .map(|v| v.trim().parse::<f64>().ok().filter(|f| f.is_finite()))
            .collect()
    };
    let attribute = check.attribute.as_deref().unwrap_or_default();
    if check.max_psi.is_none()
        && let (Some(a), Some(b)) = (numbers(&now), numbers(&before))
    {
        let alpha = check.max_p_value.unwrap_or(0.01);
        let (d, p) = kolmogorov_smirnov(&a, &b);
        let critical = ks_critical(alpha, a.len(), b.len());
        return Ok(Verdict::compared(
            d > critical,
            d,
            critical,
            format!(
                "{name}: {attribute}'s values moved from the same window {} ago: Kolmogorov–Smirnov D = {d:.3} (critical {critical:.3} at p = {alpha}), p = {p:.2e}; median {} now, {} then",
                check.baseline,
                median(&a),
                median(&b)
            ),
        ));
    }
    let psi = population_stability(&now, &before);
    let threshold = check.max_psi.unwrap_or(0.2);
    Ok(Verdict::compared(
        psi > threshold,
        psi,
        threshold,
        format!(
            "{name}: {attribute}'s mix moved from the same window {} ago: PSI {psi:.3} (at most {threshold}); now {}, then {}",
            check.baseline,
            top_shares(&now),
            top_shares(&before)
        ),
    ))
}

fn median(values: &[f64]) -> String {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).map_or("-".into(), |m| format!("{m}"))
}

fn counts(values: &[String]) -> BTreeMap<String, f64> {
    let mut counts: BTreeMap<String, f64> = BTreeMap::new();
    for v in values {
        *counts.entry(v.clone()).or_default() += 1.0;
    }
    counts
}

/// Each category's share of `values`, the categories outside `kept` pooled as `(other)`.
fn shares(values: &[String], kept: &std::collections::BTreeSet<String>) -> BTreeMap<String, f64> {
    let total = values.len().max(1) as f64;
    let mut out: BTreeMap<String, f64> = BTreeMap::new();
    for (k, n) in counts(values) {
        let key = if kept.contains(&k) {
            k
        } else {
            "(other)".to_string()
        };
        *out.entry(key).or_default() += n / total;
    }
    out
}

/// The categories kept apart: the most common of both sides together, the same for both, so
/// a value pooled on one side is pooled on the other.
fn kept_categories(a: &[String], b: &[String]) -> std::collections::BTreeSet<String> {
    let mut both = counts(a);
    for (k, n) in counts(b) {
        *both.entry(k).or_default() += n;
    }
    let mut list: Vec<(String, f64)> = both.into_iter().collect();
    list.sort_by(|x, y| y.1.total_cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
    list.into_iter()
        .take(MAX_CATEGORIES)
        .map(|(k, _)| k)
        .collect()
}

fn top_shares(values: &[String]) -> String {
    let kept = kept_categories(values, &[]);
    let mut list: Vec<(String, f64)> = shares(values, &kept).into_iter().collect();
    list.sort_by(|a, b| b.1.total_cmp(&a.1));
    list.iter()
        .take(4)
        .map(|(k, s)| format!("{k} {:.0}%", s * 100.0))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The population stability index of `now` against `before`: Σ (a − b) · ln(a / b) over the
/// categories, a share absent on one side counted as 0.0001.
pub fn population_stability(now: &[String], before: &[String]) -> f64 {
    const FLOOR: f64 = 0.0001;
    let kept = kept_categories(now, before);
    let (a, b) = (shares(now, &kept), shares(before, &kept));
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .map(|k| {
            let x = a.get(k).copied().unwrap_or(0.0).max(FLOOR);
            let y = b.get(k).copied().unwrap_or(0.0).max(FLOOR);
            (x - y) * (x / y).ln()
        })
        .sum()
}

/// The two-sample Kolmogorov–Smirnov statistic D of `a` and `b` and its asymptotic p-value.
pub fn kolmogorov_smirnov(a: &[f64], b: &[f64]) -> (f64, f64) {
    let mut x = a.to_vec();
    let mut y = b.to_vec();
    x.sort_by(f64::total_cmp);
    y.sort_by(f64::total_cmp);
    let (n, m) = (x.len() as f64, y.len() as f64);
    let (mut i, mut j, mut d) = (0usize, 0usize, 0f64);
    while i < x.len() && j < y.len() {
        let v = x[i].min(y[j]);
        while i < x.len() && x[i] <= v {
            i += 1;
        }
        while j < y.len() && y[j] <= v {
            j += 1;
        }
        d = d.max((i as f64 / n - j as f64 / m).abs());
    }
    let en = (n * m / (n + m)).sqrt();
    let lambda = (en + 0.12 + 0.11 / en) * d;
    (d, kolmogorov_q(lambda))
}

/// The Kolmogorov distribution's survival function Q(λ) = 2 Σ (−1)^(k−1) e^(−2k²λ²).
fn kolmogorov_q(lambda: f64) -> f64 {
    if lambda < 0.2 {
        return 1.0;
    }
    let mut sum = 0.0;
    for k in 1..=100 {
        let k = k as f64;
        let term = (-2.0 * k * k * lambda * lambda).exp();
        sum += if (k as i64) % 2 == 1 { term } else { -term };
        if term < 1e-12 {
            break;
        }
    }
    (2.0 * sum).clamp(0.0, 1.0)
}

/// The D above which two samples of `n` and `m` differ at level `alpha`.
pub fn ks_critical(alpha: f64, n: usize, m: usize) -> f64 {
    let (n, m) = (n as f64, m as f64);
    (-(alpha / 2.0).ln() / 2.0).sqrt() * ((n + m) / (n * m)).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(kind: CheckKind) -> CheckConfig {
        CheckConfig {
            name: "c".into(),
            kind,
            table: CheckTable::Spans,
            where_: None,
            attribute: None,
            window: default_window(),
            max_age: None,
            baseline: default_baseline(),
            min_ratio: None,
            max_ratio: None,
            max_null_rate: None,
            max_psi: None,
            max_p_value: None,
            required: Vec::new(),
            forbidden: Vec::new(),
            types: BTreeMap::new(),
            min_records: 20,
            for_: HumanDuration::ZERO,
            keep_firing_for: HumanDuration::ZERO,
            runbook_url: None,
            labels: BTreeMap::new(),
            notify: None,
        }
    }

    #[test]
    fn each_kind_needs_its_keys_and_names_the_missing_one() {
        for (kind, key) in [
            (CheckKind::Freshness, "check[0].max_age"),
            (CheckKind::Volume, "check[0].min_ratio"),
            (CheckKind::Nulls, "check[0].attribute"),
            (CheckKind::Distribution, "check[0].attribute"),
            (CheckKind::Schema, "check[0].required"),
        ] {
            assert_eq!(check(kind).validate(0).expect_err(key).key, key);
        }
        let mut bad_type = check(CheckKind::Schema);
        bad_type.types.insert("a".into(), "integer".into());
        assert_eq!(
            bad_type.validate(0).expect_err("type").key,
            "check[0].types.a"
        );
        let mut ok = check(CheckKind::Nulls);
        ok.attribute = Some("order.amount".into());
        ok.max_null_rate = Some(0.1);
        assert!(ok.validate(0).is_ok());
    }

    #[test]
    fn psi_is_zero_for_the_same_mix_and_large_for_a_shift() {
        let mix = |card: usize, paypal: usize, invoice: usize| -> Vec<String> {
            std::iter::repeat_n("card".to_string(), card)
                .chain(std::iter::repeat_n("paypal".to_string(), paypal))
                .chain(std::iter::repeat_n("invoice".to_string(), invoice))
                .collect()
        };
        assert!(population_stability(&mix(70, 25, 5), &mix(70, 25, 5)).abs() < 1e-12);
        let shifted = population_stability(&mix(20, 20, 60), &mix(70, 25, 5));
        assert!(shifted > 1.0, "{shifted}");
        let slight = population_stability(&mix(68, 26, 6), &mix(70, 25, 5));
        assert!(slight < 0.05, "{slight}");
    }

    #[test]
    fn ks_tells_a_drop_to_zero_from_noise() {
        let before: Vec<f64> = (0..100).map(|i| 1000.0 + (i % 10) as f64 * 10.0).collect();
        let same: Vec<f64> = (0..60)
            .map(|i| 1000.0 + ((i * 7) % 10) as f64 * 10.0)
            .collect();
        let zero = vec![0.0; 60];
        let (d, p) = kolmogorov_smirnov(&zero, &before);
        assert_eq!(d, 1.0);
        assert!(p < 1e-10, "{p}");
        assert!(d > ks_critical(0.01, 60, 100));
        let (d, p) = kolmogorov_smirnov(&same, &before);
        assert!(d < ks_critical(0.01, 60, 100), "{d}");
        assert!(p > 0.5, "{p}");
    }
}
