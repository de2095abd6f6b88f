//! Tail sampling of old spans, by trace: `[sampling]` of `sightline.toml` and the decision.
//!
//! Spans younger than `full_fidelity` are all kept. Once an hour of spans is older than that,
//! maintenance samples it ([`crate::Store::maintain`]): each trace is kept whole or dropped
//! whole, decided once from all of its spans in that hour and the next, and the decision of a
//! trace that reaches into the next hour is recorded so that hour follows it. A trace is kept when
//! it has an error, a request slower than its route's p99 in that hour (or `keep_slower_than`),
//! a request of a rare route (fewer than `rare_route_below` an hour), an attribute of `keep`, a
//! request of a service while one of its alerts fired ([`SamplingHints`]), or a link to or from
//! a kept trace; of the others, `keep_share` is kept, chosen by a hash of the trace id, so every
//! node keeps the same ones. Kept spans carry `sample_rate`: 1.0 when kept for a reason,
//! `keep_share` when kept as part of the share (so `sum(1.0 / sample_rate)` estimates the count
//! before sampling). Logs are never sampled, and span rollups are derived from every span at
//! ingest, before any of this: the pages, SLOs and alerts read the same numbers either way.

use std::collections::{BTreeMap, HashMap, HashSet};

use arrow::array::{Array, AsArray, Float64Array, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::Int64Type;
use serde::{Deserialize, Serialize};
use sightline_model::{ConfigError, HumanDuration};

use crate::error::Result;

/// `keep_slower_than`: a percentile of the route's requests in the hour, or a fixed duration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SlowerThan {
    /// The route's percentile (0–100) over the hour being sampled.
    Percentile(f64),
    /// A fixed duration.
    Duration(HumanDuration),
}

impl Serialize for SlowerThan {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Self::Percentile(p) => s.serialize_str(&format!("p{p}")),
            Self::Duration(d) => d.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for SlowerThan {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if let Some(p) = text.strip_prefix('p') {
            return p
                .parse::<f64>()
                .ok()
                .filter(|p| *p > 0.0 && *p < 100.0)
                .map(Self::Percentile)
                .ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "{text:?} is not a percentile: expected p50 to p99.9, or a duration such as \"2s\""
                    ))
                });
        }
        text.parse::<HumanDuration>()
            .map(Self::Duration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "{text:?}: expected a percentile such as \"p99\" or a duration such as \"2s\" ({e})"
                ))
            })
    }
}

/// One `keep` entry: traces with a span whose attribute (or resource attribute) has this value.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeepRule {
    /// The attribute's key, e.g. `customer.tier`.
    pub attribute: String,
    /// Its value as text (`"enterprise"`, `"true"`, `"42"`).
    pub value: String,
}

/// `[sampling]` of `sightline.toml`. Off by default.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplingConfig {
    /// True turns tail sampling on.
    pub enabled: bool,
    /// Every span is kept this long; older hours are sampled by trace.
    pub full_fidelity: HumanDuration,
    /// The share of ordinary traces kept (0 to 1).
    pub keep_share: f64,
    /// Traces with a request slower than this are kept (`p99` of its route, or a duration).
    pub keep_slower_than: SlowerThan,
    /// Routes with fewer requests than this in the hour are kept whole.
    pub rare_route_below: u64,
    /// Traces with one of these attribute values are kept.
    pub keep: Vec<KeepRule>,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            full_fidelity: HumanDuration::from_secs(24 * 3600),
            keep_share: 0.1,
            keep_slower_than: SlowerThan::Percentile(99.0),
            rare_route_below: 100,
            keep: Vec::new(),
        }
    }
}

impl SamplingConfig {
    /// The table of `sightline.toml` these keys live in.
    pub const SECTION: &'static str = "sampling";

    /// Refuses a share outside 0 to 1, a zero `full_fidelity`, and empty `keep` entries.
    pub fn validate(&self) -> std::result::Result<(), ConfigError> {
        let key = |name: &str| format!("{}.{name}", Self::SECTION);
        if !(self.keep_share.is_finite() && (0.0..=1.0).contains(&self.keep_share)) {
            return Err(ConfigError::new(
                key("keep_share"),
                format!("must be between 0 and 1, not {}", self.keep_share),
            ));
        }
        if self.full_fidelity.is_zero() {
            return Err(ConfigError::new(
                key("full_fidelity"),
                "must be longer than 0s, e.g. \"24h\": spans younger than it are all kept",
            ));
        }
        if let Some(i) = self.keep.iter().position(|k| k.attribute.is_empty()) {
            return Err(ConfigError::new(
                format!("{}[{i}].attribute", key("keep")),
                "is empty: name the attribute whose value keeps a trace",
            ));
        }
        Ok(())
    }
}

/// Who tells sampling which services had an alert firing, and when: their traces are kept.
pub trait SamplingHints: Send + Sync {
    /// `(service, from_ns, to_ns)` for every stretch of `[start_ns, end_ns)` during which an
    /// alert of that service was firing.
    fn firing(&self, start_ns: i64, end_ns: i64) -> Vec<(String, i64, i64)>;
}

/// Why a trace was kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// A span with status error.
    Error,
    /// A request slower than its route's percentile, or the duration.
    Slow,
    /// A request of a route with few requests in the hour.
    RareRoute,
    /// A `keep` attribute.
    Attribute,
    /// A service whose alert was firing.
    Alert,
    /// A link to or from a kept trace.
    Linked,
    /// Chosen by the trace id's hash for `keep_share`.
    Share,
    /// Recorded when an earlier hour of the trace was sampled.
    Recorded,
}

/// One trace's decision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// Kept or dropped.
    pub keep: bool,
    /// `sample_rate` of its kept spans.
    pub rate: f64,
}

/// The position of a trace id in `[0, 1)`, the same on every node: the first 8 bytes of the hex
/// id (random in W3C trace ids) read as a number.
pub fn trace_position(trace_id: &str) -> f64 {
    let head = trace_id.get(..16).unwrap_or(trace_id);
    let n = u64::from_str_radix(head, 16).unwrap_or_else(|_| {
        // Not hex: FNV-1a of the text, still the same everywhere.
        trace_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    });
    (n >> 11) as f64 / (1u64 << 53) as f64
}

fn text_column<'a>(batch: &'a RecordBatch, name: &str) -> Option<&'a dyn Array> {
    batch.column_by_name(name).map(|c| c.as_ref())
}

fn text_at(column: Option<&dyn Array>, row: usize) -> Option<&str> {
    let column = column?;
    if column.is_null(row) {
        return None;
    }
    if let Some(view) = column.as_string_view_opt() {
        return Some(view.value(row));
    }
    column.as_string_opt::<i32>().map(|a| a.value(row))
}

fn int_at(batch: &RecordBatch, name: &str, row: usize) -> Option<i64> {
    let column = batch.column_by_name(name)?;
    if column.is_null(row) {
        return None;
    }
    column
        .as_primitive_opt::<Int64Type>()
        .map(|a| a.value(row))
        .or_else(|| {
            column
                .as_primitive_opt::<arrow::datatypes::TimestampNanosecondType>()
                .map(|a| a.value(row))
        })
}

/// True when the JSON object `json` has `key` with `value` (compared as text).
fn has_attribute(json: &str, rule: &KeepRule) -> bool {
    if !json.contains(rule.attribute.as_str()) {
        return false;
    }
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(json) else {
        return false;
    };
    map.get(&rule.attribute).is_some_and(|v| match v {
        serde_json::Value::String(s) => *s == rule.value,
        other => other.to_string() == rule.value,
    })
}

/// The traces linked from `json` (a `links` column value).
fn linked_traces(json: &str) -> Vec<String> {
    if json.len() <= 2 {
        return Vec::new();
    }
    let Ok(serde_json::Value::Array(links)) = serde_json::from_str::<serde_json::Value>(json)
    else {
        return Vec::new();
    };
    links
        .iter()
        .filter_map(|l| {
            l.get("trace_id")
                .and_then(|t| t.as_str())
                .map(str::to_string)
        })
        .collect()
}

/// What the decision of one hour saw and chose.
#[derive(Debug, Default, Clone)]
pub struct Decided {
    /// Trace id → decision, for every trace with a span in the hour.
    pub decisions: HashMap<String, Decision>,
    /// Kept traces by the first reason found.
    pub reasons: BTreeMap<Reason, u64>,
    /// Per service: traces seen and kept (a trace counts for each service it crosses).
    pub by_service: BTreeMap<String, (u64, u64)>,
}

/// Decides every trace with a span in `hour` (the spans being sampled), with the spans of the
/// same traces in `next` (the hour after) as evidence too, and the decisions `recorded` before.
pub fn decide(
    config: &SamplingConfig,
    hour: &[RecordBatch],
    next: &[RecordBatch],
    recorded: &HashMap<String, Decision>,
    firing: &[(String, i64, i64)],
) -> Decided {
    // Per-route thresholds and counts over the hour's requests.
    let mut durations: HashMap<(String, String), Vec<i64>> = HashMap::new();
    for batch in hour {
        let kind = text_column(batch, "kind");
        let service = text_column(batch, "service_name");
        let route = text_column(batch, "http_route");
        let name = text_column(batch, "name");
        for row in 0..batch.num_rows() {
            if !matches!(text_at(kind, row), Some("server" | "consumer")) {
                continue;
            }
            let route = text_at(route, row).or(text_at(name, row)).unwrap_or("");
            let key = (
                text_at(service, row).unwrap_or("").to_string(),
                route.to_string(),
            );
            durations
                .entry(key)
                .or_default()
                .push(int_at(batch, "duration_ns", row).unwrap_or(0));
        }
    }
    let thresholds: HashMap<(String, String), (i64, u64)> = durations
        .into_iter()
        .map(|(key, mut d)| {
            d.sort_unstable();
            let threshold = match config.keep_slower_than {
                SlowerThan::Duration(limit) => limit.as_nanos(),
                SlowerThan::Percentile(p) => {
                    // The nearest-rank percentile: the slowest (100 - p)% are past it.
                    let rank = ((p / 100.0) * d.len() as f64).ceil() as usize;
                    d[rank.clamp(1, d.len()) - 1]
                }
            };
            (key, (threshold, d.len() as u64))
        })
        .collect();

    let mut reason: HashMap<String, Reason> = HashMap::new();
    let mut services: HashMap<String, HashSet<String>> = HashMap::new();
    let mut links: Vec<(String, String)> = Vec::new();
    let mut in_hour: HashSet<String> = HashSet::new();
    for (is_hour, batches) in [(true, hour), (false, next)] {
        for batch in batches {
            let trace = text_column(batch, "trace_id");
            let status = text_column(batch, "status");
            let kind = text_column(batch, "kind");
            let service = text_column(batch, "service_name");
            let route = text_column(batch, "http_route");
            let name = text_column(batch, "name");
            let attributes = text_column(batch, "attributes");
            let resource = text_column(batch, "resource_attributes");
            let link_column = text_column(batch, "links");
            for row in 0..batch.num_rows() {
                let Some(trace_id) = text_at(trace, row) else {
                    continue;
                };
                if is_hour {
                    in_hour.insert(trace_id.to_string());
                } else if !in_hour.contains(trace_id) {
                    // The next hour's own traces are its business.
                    continue;
                }
                let service_name = text_at(service, row).unwrap_or("");
                services
                    .entry(trace_id.to_string())
                    .or_default()
                    .insert(service_name.to_string());
                let mut found = None;
                if text_at(status, row) == Some("error") {
                    found = Some(Reason::Error);
                }
                if found.is_none() && matches!(text_at(kind, row), Some("server" | "consumer")) {
                    let route = text_at(route, row).or(text_at(name, row)).unwrap_or("");
                    let key = (service_name.to_string(), route.to_string());
                    let duration = int_at(batch, "duration_ns", row).unwrap_or(0);
                    match thresholds.get(&key) {
                        Some((threshold, count)) => {
                            if *count < config.rare_route_below {
                                found = Some(Reason::RareRoute);
                            } else if duration > *threshold {
                                found = Some(Reason::Slow);
                            }
                        }
                        None => {
                            if let SlowerThan::Duration(limit) = config.keep_slower_than
                                && duration > limit.as_nanos()
                            {
                                found = Some(Reason::Slow);
                            }
                        }
                    }
                }
                if found.is_none()
                    && config.keep.iter().any(|rule| {
                        text_at(attributes, row).is_some_and(|j| has_attribute(j, rule))
                            || text_at(resource, row).is_some_and(|j| has_attribute(j, rule))
                    })
                {
                    found = Some(Reason::Attribute);
                }
                if found.is_none() && !firing.is_empty() {
                    let start = int_at(batch, "start_time", row).unwrap_or(0);
                    if firing
                        .iter()
                        .any(|(s, from, to)| s == service_name && (*from..*to).contains(&start))
                    {
                        found = Some(Reason::Alert);
                    }
                }
                if let Some(r) = found {
                    let entry = reason.entry(trace_id.to_string()).or_insert(r);
                    *entry = (*entry).min(r);
                }
                if let Some(json) = text_at(link_column, row) {
                    for other in linked_traces(json) {
                        links.push((trace_id.to_string(), other));
                    }
                }
            }
        }
    }
    // A link keeps both ends: the kept set grows until no link adds to it.
    loop {
        let mut added = false;
        for (from, to) in &links {
            for (a, b) in [(from, to), (to, from)] {
                let kept = reason.contains_key(a) || recorded.get(a).is_some_and(|d| d.keep);
                if kept
                    && !reason.contains_key(b)
                    && in_hour.contains(b)
                    && !recorded.contains_key(b)
                {
                    reason.insert(b.clone(), Reason::Linked);
                    added = true;
                }
            }
        }
        if !added {
            break;
        }
    }
    let mut out = Decided::default();
    for trace_id in in_hour {
        let (decision, why) = if let Some(d) = recorded.get(&trace_id) {
            (*d, Reason::Recorded)
        } else if let Some(r) = reason.get(&trace_id) {
            (
                Decision {
                    keep: true,
                    rate: 1.0,
                },
                *r,
            )
        } else if trace_position(&trace_id) < config.keep_share {
            (
                Decision {
                    keep: true,
                    rate: config.keep_share,
                },
                Reason::Share,
            )
        } else {
            (
                Decision {
                    keep: false,
                    rate: config.keep_share,
                },
                Reason::Share,
            )
        };
        if decision.keep {
            *out.reasons.entry(why).or_default() += 1;
        }
        for service in services.get(&trace_id).into_iter().flatten() {
            let counts = out.by_service.entry(service.clone()).or_default();
            counts.0 += 1;
            counts.1 += u64::from(decision.keep);
        }
        out.decisions.insert(trace_id, decision);
    }
    out
}

/// The rows of `batch` whose trace is kept, with `sample_rate` set to the trace's rate (a span
/// already sampled keeps its rate).
pub fn apply(batch: &RecordBatch, decisions: &HashMap<String, Decision>) -> Result<RecordBatch> {
    let trace = text_column(batch, "trace_id");
    let mut keep = Vec::with_capacity(batch.num_rows());
    let mut rates = Vec::with_capacity(batch.num_rows());
    let old_rates = batch.column_by_name("sample_rate").and_then(|c| {
        c.as_primitive_opt::<arrow::datatypes::Float64Type>()
            .cloned()
    });
    for row in 0..batch.num_rows() {
        let decision = text_at(trace, row)
            .and_then(|t| decisions.get(t))
            .copied()
            .unwrap_or(Decision {
                keep: true,
                rate: 1.0,
            });
        keep.push(decision.keep);
        let old = old_rates.as_ref().map_or(1.0, |r| r.value(row));
        rates.push(if old < 1.0 {
            old
        } else {
            decision.rate.min(1.0)
        });
    }
    let schema = batch.schema();
    let mut columns = batch.columns().to_vec();
    if let Ok(at) = schema.index_of("sample_rate") {
        columns[at] = std::sync::Arc::new(Float64Array::from(rates));
    }
    let rated = RecordBatch::try_new(schema, columns)?;
    Ok(filter_record_batch(
        &rated,
        &arrow::array::BooleanArray::from(keep),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slower_than_reads_a_percentile_or_a_duration() {
        let config: SamplingConfig =
            toml::from_str("enabled = true\nkeep_slower_than = \"p99.5\"").expect("valid");
        assert_eq!(config.keep_slower_than, SlowerThan::Percentile(99.5));
        let config: SamplingConfig = toml::from_str("keep_slower_than = \"2s\"").expect("valid");
        assert_eq!(
            config.keep_slower_than,
            SlowerThan::Duration(HumanDuration::from_secs(2))
        );
        assert!(toml::from_str::<SamplingConfig>("keep_slower_than = \"p100\"").is_err());
        assert!(toml::from_str::<SamplingConfig>("keep_slower_than = \"slow\"").is_err());
        let bad = SamplingConfig {
            keep_share: 1.5,
            ..SamplingConfig::default()
        };
        assert_eq!(
            bad.validate().map_err(|e| e.key),
            Err("sampling.keep_share".into())
        );
    }

    fn requests(service: &str, start_ns: i64, n: usize) -> RecordBatch {
        use sightline_model::schema::{SpanRow, spans_to_batch};
        let rows: Vec<SpanRow> = (0..n)
            .map(|i| {
                let start = start_ns + i as i64 * 1_000_000_000;
                SpanRow {
                    kind: sightline_model::SpanKind::Server,
                    http_route: Some("/r".into()),
                    ..SpanRow::new(
                        format!(
                            "{:016x}{:016x}",
                            (i as u64 + 1 + 1000 * service.len() as u64)
                                .wrapping_mul(0x9e37_79b9_7f4a_7c15),
                            i
                        ),
                        format!("{i:016x}"),
                        "GET /r",
                        service,
                        start,
                        start + 1_000_000,
                    )
                }
            })
            .collect();
        spans_to_batch(&rows).expect("rows")
    }

    #[test]
    fn while_a_services_alert_fired_its_traces_are_kept_whole() {
        let config = SamplingConfig {
            enabled: true,
            keep_share: 0.0,
            rare_route_below: 0,
            ..SamplingConfig::default()
        };
        // 200 requests of each service a second apart; an alert of "pay" fired from the 50th
        // second to the 120th.
        let hour = vec![requests("pay", 0, 200), requests("shop", 0, 200)];
        let firing = vec![("pay".to_string(), 50_000_000_000, 120_000_000_000)];
        let decided = decide(&config, &hour, &[], &HashMap::new(), &firing);
        assert_eq!(
            decided.reasons.get(&Reason::Alert),
            Some(&70),
            "{:?}",
            decided.reasons
        );
        assert_eq!(decided.by_service["pay"], (200, 70));
        assert_eq!(
            decided.by_service["shop"],
            (200, 0),
            "another service's traces are not kept"
        );
        let without = decide(&config, &hour, &[], &HashMap::new(), &[]);
        assert!(without.decisions.values().all(|d| !d.keep));
    }

    #[test]
    fn the_position_of_a_trace_is_its_ids_head_and_spreads_evenly() {
        assert_eq!(trace_position("00000000000000000000000000000001"), 0.0);
        assert!(trace_position("ffffffffffffffff0000000000000000") > 0.999);
        let kept = (0..10_000u64)
            .map(|i| format!("{:016x}{:016x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15), i))
            .filter(|t| trace_position(t) < 0.1)
            .count();
        assert!((900..1100).contains(&kept), "{kept}");
    }
}
