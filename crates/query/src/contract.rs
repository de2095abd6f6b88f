//! A telemetry contract, judged against stored data: the spans a program must emit and the
//! attributes they must carry, the share of its logs that must carry a trace id, and what must
//! never appear (attribute keys, exploding attribute values, spans whose parent never arrived).
//! `sightline record --contract FILE` judges what one run of a command emitted; the rules are
//! SQL over the stored tables, stateless like the other fixed questions of this crate.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::engine::QueryEngine;
use crate::error::Error;
use crate::sql::quote;

/// The contract file (TOML) as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Contract {
    /// `[[span]]`: spans that must be emitted.
    #[serde(default)]
    pub span: Vec<SpanRule>,
    /// `[logs]`: what log lines must carry.
    #[serde(default)]
    pub logs: Option<LogsRule>,
    /// `[forbid]`: what must never appear.
    #[serde(default)]
    pub forbid: Option<Forbid>,
}

/// One `[[span]]`: spans of a name (or a route) that must be emitted, each with some attributes.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SpanRule {
    /// The span name the rule is about (or `route`).
    pub name: Option<String>,
    /// The HTTP route template (`http.route`) the rule is about (or `name`).
    pub route: Option<String>,
    /// Only this service's spans.
    pub service: Option<String>,
    /// Attribute keys present on every matching span (span or resource attributes).
    #[serde(default)]
    pub attributes: Vec<String>,
    /// At least this many matching spans.
    #[serde(default = "one")]
    pub min_count: u64,
}

fn one() -> u64 {
    1
}

/// `[logs]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogsRule {
    /// The least share (0 to 1) of log lines that carry a trace id.
    pub trace_context_min: Option<f64>,
}

/// `[forbid]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Forbid {
    /// Attribute keys that must never be present (case-insensitive; `password` also forbids
    /// `db.password`).
    #[serde(default)]
    pub attributes: Vec<String>,
    /// The most distinct values one attribute key may take across span, log and metric
    /// attributes.
    pub max_distinct_values: Option<u64>,
    /// `false`: no span may name a parent that never arrived.
    pub orphans: Option<bool>,
}

impl Contract {
    /// Each rule's own checks, with the key of the first mistake (`span[0].name`).
    pub fn validate(&self) -> Result<(), String> {
        for (i, rule) in self.span.iter().enumerate() {
            match (&rule.name, &rule.route) {
                (None, None) => {
                    return Err(format!(
                        "span[{i}]: give the span's name or its route (name = \"checkout\" or route = \"/orders\")"
                    ));
                }
                (Some(_), Some(_)) => {
                    return Err(format!(
                        "span[{i}]: give name or route, not both (two rules say both)"
                    ));
                }
                (Some(t), None) | (None, Some(t)) if t.trim().is_empty() => {
                    let key = if rule.name.is_some() { "name" } else { "route" };
                    return Err(format!("span[{i}].{key}: empty"));
                }
                _ => {}
            }
            if let Some(a) = rule.attributes.iter().position(|a| a.trim().is_empty()) {
                return Err(format!("span[{i}].attributes[{a}]: empty"));
            }
        }
        if let Some(share) = self.logs.as_ref().and_then(|l| l.trace_context_min)
            && !(0.0..=1.0).contains(&share)
        {
            return Err(format!(
                "logs.trace_context_min: {share} is not a share; expected 0 to 1 (0.9 is 90%)"
            ));
        }
        if let Some(forbid) = &self.forbid {
            if let Some(a) = forbid.attributes.iter().position(|a| a.trim().is_empty()) {
                return Err(format!("forbid.attributes[{a}]: empty"));
            }
            if forbid.max_distinct_values == Some(0) {
                return Err(
                    "forbid.max_distinct_values: 0 would forbid every attribute; expected 1 or more"
                        .into(),
                );
            }
        }
        Ok(())
    }

    /// How many rules the contract holds (each `[[span]]`, each `[logs]` and `[forbid]` key).
    pub fn rules(&self) -> usize {
        let logs = self
            .logs
            .as_ref()
            .is_some_and(|l| l.trace_context_min.is_some());
        let forbid = self.forbid.as_ref().map_or(0, |f| {
            usize::from(!f.attributes.is_empty())
                + usize::from(f.max_distinct_values.is_some())
                + usize::from(f.orphans == Some(false))
        });
        self.span.len() + usize::from(logs) + forbid
    }
}

/// One rule's verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// The rule, by its key in the contract: `span[0]`, `logs.trace_context_min`,
    /// `forbid.attributes`, `forbid.max_distinct_values`, `forbid.orphans`.
    pub rule: String,
    /// Whether the recorded data keeps it.
    pub ok: bool,
    /// What was found, in words.
    pub summary: String,
    /// Where it was broken: a few spans or keys, each in words a person can look up.
    pub examples: Vec<String>,
}

/// What was recorded, in counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Recorded {
    /// Rows of `spans`.
    pub spans: u64,
    /// Rows of `logs`.
    pub logs: u64,
    /// Rows of `metrics`.
    pub metric_points: u64,
    /// The services that sent anything, by name.
    pub services: Vec<String>,
}

/// Rows read for the few examples each broken rule shows.
const EXAMPLES: usize = 3;

async fn rows(engine: &QueryEngine, sql: &str) -> Result<Vec<Map<String, Value>>, Error> {
    engine.objects(sql, 100_000).await
}

fn number(row: &Map<String, Value>, key: &str) -> u64 {
    row.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn text<'a>(row: &'a Map<String, Value>, key: &str) -> &'a str {
    row.get(key).and_then(Value::as_str).unwrap_or("")
}

/// How much each table holds and which services sent it.
pub async fn recorded(engine: &QueryEngine) -> Result<Recorded, Error> {
    let counts = rows(
        engine,
        "SELECT (SELECT count(*) FROM spans) AS spans, (SELECT count(*) FROM logs) AS logs, \
         (SELECT count(*) FROM metrics) AS metric_points",
    )
    .await?;
    let services = rows(
        engine,
        "SELECT service_name FROM spans UNION SELECT service_name FROM logs \
         UNION SELECT service_name FROM metrics ORDER BY service_name",
    )
    .await?;
    let row = counts.first().cloned().unwrap_or_default();
    Ok(Recorded {
        spans: number(&row, "spans"),
        logs: number(&row, "logs"),
        metric_points: number(&row, "metric_points"),
        services: services
            .iter()
            .map(|r| text(r, "service_name").to_string())
            .filter(|s| !s.is_empty())
            .collect(),
    })
}

/// Judges every rule of `contract` against what the engine's tables hold.
pub async fn judge(engine: &QueryEngine, contract: &Contract) -> Result<Vec<Verdict>, Error> {
    let mut out = Vec::new();
    for (i, rule) in contract.span.iter().enumerate() {
        out.push(span_rule(engine, i, rule).await?);
    }
    if let Some(min) = contract.logs.as_ref().and_then(|l| l.trace_context_min) {
        out.push(trace_context(engine, min).await?);
    }
    if let Some(forbid) = &contract.forbid {
        if !forbid.attributes.is_empty() {
            out.push(forbidden_keys(engine, &forbid.attributes).await?);
        }
        if let Some(max) = forbid.max_distinct_values {
            out.push(distinct_values(engine, max).await?);
        }
        if forbid.orphans == Some(false) {
            out.push(orphans(engine).await?);
        }
    }
    Ok(out)
}

/// `name = 'checkout'` or `http_route = '/orders'`, with the service if given.
fn span_filter(rule: &SpanRule) -> String {
    let mut conditions = Vec::new();
    if let Some(name) = &rule.name {
        conditions.push(format!("name = {}", quote(name)));
    }
    if let Some(route) = &rule.route {
        conditions.push(format!("http_route = {}", quote(route)));
    }
    if let Some(service) = &rule.service {
        conditions.push(format!("service_name = {}", quote(service)));
    }
    conditions.join(" AND ")
}

fn has_key(key: &str) -> String {
    let key = quote(key);
    format!(
        "(coalesce(json_contains(attributes, {key}), false) OR coalesce(json_contains(resource_attributes, {key}), false))"
    )
}

fn span_words(rule: &SpanRule) -> String {
    let what = match (&rule.name, &rule.route) {
        (Some(name), _) => format!("spans named {name:?}"),
        (_, Some(route)) => format!("spans of route {route:?}"),
        _ => "spans".into(),
    };
    match &rule.service {
        Some(service) => format!("{what} of {service}"),
        None => what,
    }
}

async fn span_rule(engine: &QueryEngine, i: usize, rule: &SpanRule) -> Result<Verdict, Error> {
    let filter = span_filter(rule);
    let missing: Vec<String> = rule
        .attributes
        .iter()
        .enumerate()
        .map(|(a, key)| {
            format!(
                "sum(CASE WHEN {} THEN 0 ELSE 1 END) AS missing_{a}",
                has_key(key)
            )
        })
        .collect();
    let mut select = vec!["count(*) AS n".to_string()];
    select.extend(missing);
    let row = rows(
        engine,
        &format!("SELECT {} FROM spans WHERE {filter}", select.join(", ")),
    )
    .await?
    .into_iter()
    .next()
    .unwrap_or_default();
    let n = number(&row, "n");
    let what = span_words(rule);
    let mut problems = Vec::new();
    let mut examples = Vec::new();
    if n < rule.min_count {
        problems.push(format!(
            "{n} {what} recorded; at least {} expected",
            rule.min_count
        ));
    }
    for (a, key) in rule.attributes.iter().enumerate() {
        let without = number(&row, &format!("missing_{a}"));
        if without == 0 {
            continue;
        }
        problems.push(format!("{without} of {n} lack {key}"));
        for e in rows(
            engine,
            &format!(
                "SELECT service_name, name, trace_id, span_id FROM spans WHERE {filter} AND NOT {} \
                 ORDER BY start_time LIMIT {EXAMPLES}",
                has_key(key)
            ),
        )
        .await?
        {
            examples.push(format!(
                "{} span {:?} (trace {}, span {}) has no {key}",
                text(&e, "service_name"),
                text(&e, "name"),
                text(&e, "trace_id"),
                text(&e, "span_id")
            ));
        }
    }
    let summary = if problems.is_empty() {
        match rule.attributes.len() {
            0 => format!("{n} {what}"),
            _ => format!("{n} {what}, each with {}", rule.attributes.join(", ")),
        }
    } else {
        problems.join("; ")
    };
    Ok(Verdict {
        rule: format!("span[{i}]"),
        ok: problems.is_empty(),
        summary,
        examples,
    })
}

async fn trace_context(engine: &QueryEngine, min: f64) -> Result<Verdict, Error> {
    let by_service = rows(
        engine,
        "SELECT service_name, count(*) AS n, \
         sum(CASE WHEN trace_id IS NOT NULL AND trace_id <> '' THEN 1 ELSE 0 END) AS traced \
         FROM logs GROUP BY service_name ORDER BY service_name",
    )
    .await?;
    let n: u64 = by_service.iter().map(|r| number(r, "n")).sum();
    let traced: u64 = by_service.iter().map(|r| number(r, "traced")).sum();
    let rule = "logs.trace_context_min".to_string();
    if n == 0 {
        return Ok(Verdict {
            rule,
            ok: true,
            summary: "no log lines were recorded: nothing to judge".into(),
            examples: Vec::new(),
        });
    }
    let share = traced as f64 / n as f64;
    let ok = share >= min;
    let examples = if ok {
        Vec::new()
    } else {
        by_service
            .iter()
            .filter(|r| (number(r, "traced") as f64) < min * number(r, "n") as f64)
            .map(|r| {
                format!(
                    "{}: {} of {} log lines carry a trace id",
                    text(r, "service_name"),
                    number(r, "traced"),
                    number(r, "n")
                )
            })
            .collect()
    };
    Ok(Verdict {
        rule,
        ok,
        summary: format!(
            "{traced} of {n} log lines ({}) carry a trace id; at least {} required",
            percent(share),
            percent(min)
        ),
        examples,
    })
}

fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

/// Where attributes live: each table's attribute columns.
const ATTRIBUTE_COLUMNS: [(&str, &str); 6] = [
    ("spans", "attributes"),
    ("spans", "resource_attributes"),
    ("logs", "attributes"),
    ("logs", "resource_attributes"),
    ("metrics", "attributes"),
    ("metrics", "resource_attributes"),
];

/// Whether `key` is `forbidden` or a namespaced form of it (`db.password` for `password`),
/// case-insensitively.
pub fn forbids(forbidden: &str, key: &str) -> bool {
    let (f, k) = (forbidden.to_lowercase(), key.to_lowercase());
    k == f || k.ends_with(&format!(".{f}"))
}

async fn forbidden_keys(engine: &QueryEngine, forbidden: &[String]) -> Result<Verdict, Error> {
    let mut found = Vec::new();
    for (table, column) in ATTRIBUTE_COLUMNS {
        let keys = rows(
            engine,
            &format!(
                "SELECT service_name, split_part(kt, chr(31), 1) AS key, count(*) AS n FROM \
                 (SELECT service_name, unnest({}({column})) AS kt FROM {table}) \
                 GROUP BY 1, 2 ORDER BY 1, 2",
                crate::quality::KEY_TYPES_FUNCTION
            ),
        )
        .await?;
        for row in keys {
            let key = text(&row, "key");
            if forbidden.iter().any(|f| forbids(f, key)) {
                let n = number(&row, "n");
                found.push(format!(
                    "{key}: {n} row{} of {table}.{column} ({})",
                    if n == 1 { "" } else { "s" },
                    text(&row, "service_name")
                ));
            }
        }
    }
    Ok(Verdict {
        rule: "forbid.attributes".into(),
        ok: found.is_empty(),
        summary: if found.is_empty() {
            format!("none of {} is present", forbidden.join(", "))
        } else {
            format!("{} forbidden attribute key(s) found", found.len())
        },
        examples: found,
    })
}

async fn distinct_values(engine: &QueryEngine, max: u64) -> Result<Verdict, Error> {
    let listing = crate::quality::KEY_VALUES_FUNCTION;
    let over = rows(
        engine,
        &format!(
            "SELECT split_part(kv, '=', 1) AS key, count(DISTINCT kv) AS n FROM ( \
             SELECT unnest({listing}(attributes)) AS kv FROM spans \
             UNION ALL SELECT unnest({listing}(attributes)) AS kv FROM logs \
             UNION ALL SELECT unnest({listing}(attributes)) AS kv FROM metrics) \
             GROUP BY 1 HAVING count(DISTINCT kv) > {max} ORDER BY 2 DESC, 1"
        ),
    )
    .await?;
    let examples: Vec<String> = over
        .iter()
        .map(|r| {
            format!(
                "{} takes {} distinct values",
                text(r, "key"),
                number(r, "n")
            )
        })
        .collect();
    Ok(Verdict {
        rule: "forbid.max_distinct_values".into(),
        ok: examples.is_empty(),
        summary: if examples.is_empty() {
            format!("no attribute takes more than {max} distinct values")
        } else {
            format!(
                "{} attribute key(s) take more than {max} distinct values (an id in an attribute?)",
                examples.len()
            )
        },
        examples,
    })
}

async fn orphans(engine: &QueryEngine) -> Result<Verdict, Error> {
    let orphaned = "FROM spans c LEFT JOIN spans p ON p.trace_id = c.trace_id AND p.span_id = c.parent_span_id \
                    WHERE c.parent_span_id IS NOT NULL AND c.parent_span_id <> '' AND p.span_id IS NULL";
    let n = rows(engine, &format!("SELECT count(*) AS n {orphaned}"))
        .await?
        .first()
        .map_or(0, |r| number(r, "n"));
    let examples = if n == 0 {
        Vec::new()
    } else {
        rows(
            engine,
            &format!(
                "SELECT c.service_name AS service_name, c.name AS name, c.trace_id AS trace_id, \
                 c.parent_span_id AS parent {orphaned} ORDER BY c.start_time LIMIT {EXAMPLES}"
            ),
        )
        .await?
        .iter()
        .map(|r| {
            format!(
                "{} span {:?} (trace {}) names parent {}, which never arrived",
                text(r, "service_name"),
                text(r, "name"),
                text(r, "trace_id"),
                text(r, "parent")
            )
        })
        .collect()
    };
    Ok(Verdict {
        rule: "forbid.orphans".into(),
        ok: n == 0,
        summary: if n == 0 {
            "every span's parent arrived".into()
        } else {
            format!("{n} span(s) name a parent that never arrived")
        },
        examples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forbidden_key_matches_itself_and_its_namespaced_forms_in_any_case() {
        assert!(forbids("password", "password"));
        assert!(forbids("Password", "db.PASSWORD"));
        assert!(forbids("user.email", "user.email"));
        assert!(!forbids("password", "password_hint"));
        assert!(!forbids("password", "passwords"));
        assert!(!forbids("user.email", "email"));
    }

    #[test]
    fn a_contract_names_its_first_mistake() {
        let rule = |name: Option<&str>, route: Option<&str>| SpanRule {
            name: name.map(str::to_string),
            route: route.map(str::to_string),
            service: None,
            attributes: vec![],
            min_count: 1,
        };
        let mut c = Contract {
            span: vec![rule(Some("a"), None), rule(None, None)],
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().starts_with("span[1]:"));
        c.span[1] = rule(Some("a"), Some("/b"));
        assert!(c.validate().unwrap_err().contains("not both"));
        c.span[1] = rule(None, Some(" "));
        assert_eq!(c.validate().unwrap_err(), "span[1].route: empty");
        c.span.pop();
        c.logs = Some(LogsRule {
            trace_context_min: Some(90.0),
        });
        assert!(
            c.validate()
                .unwrap_err()
                .starts_with("logs.trace_context_min: 90 is not a share")
        );
        c.logs = Some(LogsRule {
            trace_context_min: Some(0.9),
        });
        c.forbid = Some(Forbid {
            max_distinct_values: Some(0),
            ..Default::default()
        });
        assert!(
            c.validate()
                .unwrap_err()
                .starts_with("forbid.max_distinct_values")
        );
        c.forbid = Some(Forbid {
            attributes: vec!["password".into()],
            max_distinct_values: Some(100),
            orphans: Some(false),
        });
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.rules(), 1 + 1 + 3);
    }
}
