//! Prometheus exposition text (the text format 0.0.4 and OpenMetrics 1.0), as `prometheus_client`
//! and other exporters serve it on `/metrics`, read into an OTLP metrics request, so scraped
//! metrics take the same redaction, limits, normalization and durable path as OTLP metrics and
//! land in `metrics` with the same types and temporality:
//!
//! | family type | becomes |
//! | --- | --- |
//! | counter | a monotonic cumulative sum named as exposed with `_total` (OpenMetrics' family `foo` gives `foo_total`) |
//! | gauge, untyped, unknown, stateset | gauges, one per sample name |
//! | info | a gauge of 1 named `foo_info` |
//! | histogram | a cumulative histogram: the finite `le` bounds, per-bucket counts, `_count`, `_sum` |
//! | gaugehistogram | a histogram without temporality (`_gcount`, `_gsum`) |
//! | summary | a summary: quantiles, `_count`, `_sum` |
//!
//! `_created` samples (and the text format's separate `foo_created` gauges) are not metrics of
//! their own: they are the series' start time. OpenMetrics exemplars are kept, their `trace_id`
//! and `span_id` labels as the exemplar's trace context. The unit is `# UNIT`'s, else read from
//! the name's suffix (`_seconds` is `s`, `_bytes` is `By`). A scrape is read whole or refused:
//! the first malformed line is named by its number and what was expected there, and nothing of
//! that scrape is kept, as Prometheus does.

use std::collections::HashMap;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value::Value as Any,
};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Exemplar, Gauge, Histogram, HistogramDataPoint, Metric,
    NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint, exemplar,
    metric::Data, number_data_point, summary_data_point::ValueAtQuantile,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

/// Which exposition format a body is in (from the response's content type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format, version 0.0.4 (`text/plain; version=0.0.4`).
    Text,
    /// OpenMetrics 1.0 (`application/openmetrics-text`): ends with `# EOF`, may carry units and
    /// exemplars, timestamps in seconds.
    OpenMetrics,
}

impl Format {
    /// The format a `Content-Type` names: OpenMetrics for `application/openmetrics-text`, the
    /// text format for anything else.
    pub fn of_content_type(content_type: &str) -> Self {
        if content_type
            .trim()
            .to_ascii_lowercase()
            .starts_with("application/openmetrics-text")
        {
            Self::OpenMetrics
        } else {
            Self::Text
        }
    }
}

/// The `Accept` header a scrape sends: OpenMetrics first (it carries exemplars and units), the
/// text format after, as Prometheus asks; names outside the classic character set are asked
/// for with underscores (`escaping=underscores`), which this reader understands.
pub const ACCEPT: &str = "application/openmetrics-text;version=1.0.0;escaping=underscores,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// Why an exposition could not be read: the line (from 1) and what was wrong there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ExpositionError {
    /// The line, counted from 1 (0 when the problem is the body as a whole).
    pub line: usize,
    /// What was wrong and what was expected.
    pub message: String,
}

fn error(line: usize, message: impl Into<String>) -> ExpositionError {
    ExpositionError {
        line,
        message: message.into(),
    }
}

/// A family's declared type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FamilyType {
    /// `counter`.
    Counter,
    /// `gauge`.
    Gauge,
    /// `histogram`.
    Histogram,
    /// `gaugehistogram` (OpenMetrics).
    GaugeHistogram,
    /// `summary`.
    Summary,
    /// `info` (OpenMetrics).
    Info,
    /// `stateset` (OpenMetrics).
    StateSet,
    /// `untyped`, `unknown`, or samples without a `# TYPE`.
    Unknown,
}

impl FamilyType {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "counter" => Self::Counter,
            "gauge" => Self::Gauge,
            "histogram" => Self::Histogram,
            "gaugehistogram" => Self::GaugeHistogram,
            "summary" => Self::Summary,
            "info" => Self::Info,
            "stateset" => Self::StateSet,
            "untyped" | "unknown" => Self::Unknown,
            _ => return None,
        })
    }

    /// The suffixes a sample of a family of this type may add to the family's name.
    fn suffixes(self) -> &'static [&'static str] {
        match self {
            Self::Counter => &["", "_total", "_created"],
            Self::Histogram => &["_bucket", "_count", "_sum", "_created"],
            Self::GaugeHistogram => &["_bucket", "_gcount", "_gsum"],
            Self::Summary => &["", "_count", "_sum", "_created"],
            Self::Info => &["", "_info"],
            Self::Gauge | Self::StateSet | Self::Unknown => &[""],
        }
    }
}

/// One exemplar: labels (trace context among them), value and time.
#[derive(Debug, Clone, PartialEq)]
pub struct ExemplarSample {
    /// Its labels.
    pub labels: Vec<(String, String)>,
    /// Its value.
    pub value: f64,
    /// When it was recorded, if the exposition says.
    pub time_ns: Option<i64>,
}

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The sample's name (the family's name and a suffix).
    pub name: String,
    /// Its labels, in the order written.
    pub labels: Vec<(String, String)>,
    /// Its value (NaN and infinities allowed).
    pub value: f64,
    /// Its timestamp, if written.
    pub time_ns: Option<i64>,
    /// An OpenMetrics exemplar, if one follows.
    pub exemplar: Option<ExemplarSample>,
    /// The line it was on.
    pub line: usize,
}

/// A metric family: its metadata and samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// The family's name.
    pub name: String,
    /// Its type (`Unknown` without a `# TYPE`).
    pub kind: FamilyType,
    /// `# HELP`.
    pub help: Option<String>,
    /// `# UNIT`.
    pub unit: Option<String>,
    /// Its samples, in order.
    pub samples: Vec<Sample>,
}

/// Reads an exposition body into its families, in the order they appear.
pub fn parse(text: &str, format: Format) -> Result<Vec<Family>, ExpositionError> {
    let mut families: Vec<Family> = Vec::new();
    let mut by_name: HashMap<String, usize> = HashMap::new();
    let mut typed: HashMap<String, usize> = HashMap::new();
    let mut eof_line = None;
    let lines: Vec<&str> = text.split('\n').collect();
    // A final newline leaves one empty piece after the last line.
    let last = lines.len() - 1;
    for (index, raw) in lines.into_iter().enumerate() {
        let number = index + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if let Some(at) = eof_line {
            if line.is_empty() && index == last {
                break;
            }
            return Err(error(
                number,
                format!("nothing may follow `# EOF` (line {at})"),
            ));
        }
        if line.trim().is_empty() {
            if format == Format::OpenMetrics {
                if index == last {
                    continue;
                }
                return Err(error(number, "empty line: OpenMetrics allows none"));
            }
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let comment = comment.trim_start();
            if format == Format::OpenMetrics && line == "# EOF" {
                eof_line = Some(number);
                continue;
            }
            let mut words = comment.splitn(3, [' ', '\t']);
            let keyword = words.next().unwrap_or_default();
            if !matches!(keyword, "HELP" | "TYPE" | "UNIT") {
                // Any other comment is free text.
                continue;
            }
            let name = words.next().filter(|n| is_metric_name(n)).ok_or_else(|| {
                error(
                    number,
                    format!(
                        "`# {keyword}` must be followed by a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)"
                    ),
                )
            })?;
            let rest = words.next().unwrap_or_default().trim();
            let at = match by_name.get(name) {
                Some(&at) => at,
                None => {
                    families.push(Family {
                        name: name.to_string(),
                        kind: FamilyType::Unknown,
                        help: None,
                        unit: None,
                        samples: Vec::new(),
                    });
                    by_name.insert(name.to_string(), families.len() - 1);
                    families.len() - 1
                }
            };
            match keyword {
                "HELP" => families[at].help = Some(unescape_help(rest)),
                "UNIT" => families[at].unit = Some(rest.to_string()).filter(|u| !u.is_empty()),
                _ => {
                    let kind = FamilyType::parse(rest).ok_or_else(|| {
                        error(
                            number,
                            format!(
                                "unknown type {rest:?} for {name}: expected counter, gauge, histogram, \
                                 gaugehistogram, summary, info, stateset, untyped or unknown"
                            ),
                        )
                    })?;
                    if typed.insert(name.to_string(), number).is_some() {
                        return Err(error(number, format!("a second `# TYPE` line for {name}")));
                    }
                    if !families[at].samples.is_empty() {
                        return Err(error(
                            number,
                            format!("`# TYPE` for {name} comes after its samples"),
                        ));
                    }
                    families[at].kind = kind;
                }
            }
            continue;
        }
        let sample = parse_sample(line, number, format)?;
        let at = family_of(&sample.name, &families, &by_name).unwrap_or_else(|| {
            families.push(Family {
                name: sample.name.clone(),
                kind: FamilyType::Unknown,
                help: None,
                unit: None,
                samples: Vec::new(),
            });
            by_name.insert(sample.name.clone(), families.len() - 1);
            families.len() - 1
        });
        families[at].samples.push(sample);
    }
    if format == Format::OpenMetrics && eof_line.is_none() {
        return Err(error(
            0,
            "the OpenMetrics exposition does not end with `# EOF` (was it cut short?)",
        ));
    }
    Ok(fold_created_gauges(families))
}

/// The family a sample belongs to: one of its name, or one whose type allows the suffix the
/// sample's name adds.
fn family_of(name: &str, families: &[Family], by_name: &HashMap<String, usize>) -> Option<usize> {
    if let Some(&at) = by_name.get(name)
        && families[at].kind.suffixes().contains(&"")
    {
        return Some(at);
    }
    for suffix in [
        "_total", "_created", "_bucket", "_count", "_sum", "_info", "_gcount", "_gsum",
    ] {
        if let Some(base) = name.strip_suffix(suffix)
            && let Some(&at) = by_name.get(base)
            && families[at].kind.suffixes().contains(&suffix)
        {
            return Some(at);
        }
    }
    by_name.get(name).copied()
}

/// The text format writes a counter's, histogram's or summary's `_created` as a gauge family
/// of its own (`foo_created`); such samples belong to the family they date.
fn fold_created_gauges(families: Vec<Family>) -> Vec<Family> {
    // The families a `_created` gauge may date: counters by their name and their name without
    // `_total`, histograms and summaries by their name.
    let mut owners: HashMap<String, usize> = HashMap::new();
    for (i, f) in families.iter().enumerate() {
        match f.kind {
            FamilyType::Counter => {
                owners.entry(f.name.clone()).or_insert(i);
                if let Some(base) = f.name.strip_suffix("_total") {
                    owners.entry(base.to_string()).or_insert(i);
                }
            }
            FamilyType::Histogram | FamilyType::Summary => {
                owners.entry(f.name.clone()).or_insert(i);
            }
            _ => {}
        }
    }
    let moves: HashMap<usize, usize> = families
        .iter()
        .enumerate()
        .filter(|(_, f)| matches!(f.kind, FamilyType::Gauge | FamilyType::Unknown))
        .filter_map(|(i, f)| {
            let base = f.name.strip_suffix("_created")?;
            owners.get(base).map(|owner| (i, *owner))
        })
        .collect();
    if moves.is_empty() {
        return families;
    }
    let mut created: HashMap<usize, Vec<Sample>> = HashMap::new();
    let mut kept: Vec<(usize, Family)> = Vec::with_capacity(families.len());
    for (i, family) in families.into_iter().enumerate() {
        match moves.get(&i) {
            Some(owner) => created.entry(*owner).or_default().extend(family.samples),
            None => kept.push((i, family)),
        }
    }
    kept.into_iter()
        .map(|(i, mut family)| {
            if let Some(samples) = created.remove(&i) {
                let name = created_name(&family);
                family.samples.extend(samples.into_iter().map(|mut s| {
                    s.name = name.clone();
                    s
                }));
            }
            family
        })
        .collect()
}

/// The name of a family's `_created` samples: a counter's without `_total`, the others' whole.
fn created_name(family: &Family) -> String {
    match family.kind {
        FamilyType::Counter => format!(
            "{}_created",
            family.name.strip_suffix("_total").unwrap_or(&family.name)
        ),
        _ => format!("{}_created", family.name),
    }
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn unescape_help(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('\\') => out.push('\\'),
                Some('"') => out.push('"'),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A cursor over one line, naming the column of what it did not expect.
struct Cursor<'a> {
    line: &'a str,
    at: usize,
    number: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<char> {
        self.line[self.at..].chars().next()
    }

    fn skip_spaces(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.at += 1;
        }
    }

    fn fail(&self, what: &str) -> ExpositionError {
        let found = match self.peek() {
            Some(c) => format!("{c:?}"),
            None => "the end of the line".into(),
        };
        error(
            self.number,
            format!("{what}, found {found} at column {}", self.at + 1),
        )
    }

    fn take_while(&mut self, keep: impl Fn(char) -> bool) -> &'a str {
        let start = self.at;
        while let Some(c) = self.peek() {
            if !keep(c) {
                break;
            }
            self.at += c.len_utf8();
        }
        &self.line[start..self.at]
    }

    /// `{name="value",...}`; the cursor is on the `{`.
    fn labels(&mut self, format: Format) -> Result<Vec<(String, String)>, ExpositionError> {
        self.at += 1;
        let mut labels: Vec<(String, String)> = Vec::new();
        loop {
            self.skip_spaces();
            if self.peek() == Some('}') {
                self.at += 1;
                return Ok(labels);
            }
            let name = self.take_while(|c| c.is_ascii_alphanumeric() || c == '_');
            if !is_label_name(name) {
                return Err(self.fail("expected a label name ([a-zA-Z_][a-zA-Z0-9_]*) or `}`"));
            }
            self.skip_spaces();
            if self.peek() != Some('=') {
                return Err(self.fail(&format!("expected `=` after label {name}")));
            }
            self.at += 1;
            self.skip_spaces();
            if self.peek() != Some('"') {
                return Err(self.fail(&format!("expected the quoted value of label {name}")));
            }
            self.at += 1;
            let mut value = String::new();
            loop {
                match self.peek() {
                    None => {
                        return Err(self.fail(&format!("the value of label {name} is not closed")));
                    }
                    Some('"') => {
                        self.at += 1;
                        break;
                    }
                    Some('\\') => {
                        self.at += 1;
                        match self.peek() {
                            Some('n') => value.push('\n'),
                            Some('\\') => value.push('\\'),
                            Some('"') => value.push('"'),
                            Some(other) if format == Format::Text => {
                                value.push('\\');
                                value.push(other);
                            }
                            _ => {
                                return Err(self.fail(&format!(
                                    "label {name}: expected an escape \\\\, \\\" or \\n"
                                )));
                            }
                        }
                        if let Some(c) = self.peek() {
                            self.at += c.len_utf8();
                        }
                    }
                    Some(c) => {
                        value.push(c);
                        self.at += c.len_utf8();
                    }
                }
            }
            if labels.iter().any(|(n, _)| n == name) {
                return Err(error(self.number, format!("label {name} appears twice")));
            }
            labels.push((name.to_string(), value));
            self.skip_spaces();
            match self.peek() {
                Some(',') => self.at += 1,
                Some('}') => {}
                _ => return Err(self.fail("expected `,` or `}` after a label")),
            }
        }
    }

    fn number(&mut self, what: &str) -> Result<f64, ExpositionError> {
        let start = self.at;
        let token = self.take_while(|c| !c.is_whitespace());
        parse_float(token).ok_or_else(|| {
            self.at = start;
            self.fail(&format!("expected {what} (a number, NaN, +Inf or -Inf)"))
        })
    }

    /// A timestamp: milliseconds in the text format, seconds (with a fraction) in OpenMetrics.
    fn timestamp(&mut self, format: Format) -> Result<Option<i64>, ExpositionError> {
        self.skip_spaces();
        if matches!(self.peek(), None | Some('#')) {
            return Ok(None);
        }
        let start = self.at;
        let token = self.take_while(|c| !c.is_whitespace());
        let ns = match format {
            Format::Text => token
                .parse::<i64>()
                .ok()
                .map(|ms| ms.saturating_mul(1_000_000)),
            Format::OpenMetrics => parse_float(token)
                .filter(|s| s.is_finite())
                .map(|s| (s * 1e9).round() as i64),
        };
        ns.map(Some).ok_or_else(|| {
            self.at = start;
            self.fail(match format {
                Format::Text => "expected a timestamp in milliseconds or the end of the line",
                Format::OpenMetrics => {
                    "expected a timestamp in seconds, an exemplar or the end of the line"
                }
            })
        })
    }
}

fn parse_float(token: &str) -> Option<f64> {
    if token.is_empty() {
        return None;
    }
    let ok = token
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'))
        || matches!(
            token.to_ascii_lowercase().as_str(),
            "nan" | "inf" | "+inf" | "-inf"
        );
    if !ok {
        return None;
    }
    token.parse::<f64>().ok()
}

fn parse_sample(line: &str, number: usize, format: Format) -> Result<Sample, ExpositionError> {
    let mut cursor = Cursor {
        line,
        at: 0,
        number,
    };
    let name = cursor.take_while(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    if !is_metric_name(name) {
        return Err(cursor.fail("expected a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)"));
    }
    let labels = if cursor.peek() == Some('{') {
        cursor.labels(format)?
    } else {
        Vec::new()
    };
    if !matches!(cursor.peek(), Some(' ' | '\t')) {
        return Err(cursor.fail(&format!("expected a space and the value of {name}")));
    }
    cursor.skip_spaces();
    let value = cursor.number(&format!("the value of {name}"))?;
    let time_ns = cursor.timestamp(format)?;
    cursor.skip_spaces();
    let mut exemplar = None;
    if cursor.peek() == Some('#') {
        if format == Format::Text {
            return Err(cursor.fail("exemplars are OpenMetrics only; expected the end of the line"));
        }
        cursor.at += 1;
        cursor.skip_spaces();
        if cursor.peek() != Some('{') {
            return Err(cursor.fail("expected an exemplar's labels `{…}` after ` # `"));
        }
        let labels = cursor.labels(format)?;
        cursor.skip_spaces();
        let value = cursor.number("the exemplar's value")?;
        let time_ns = cursor.timestamp(format)?;
        exemplar = Some(ExemplarSample {
            labels,
            value,
            time_ns,
        });
        cursor.skip_spaces();
    }
    if cursor.peek().is_some() {
        return Err(cursor.fail("expected the end of the line"));
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
        time_ns,
        exemplar,
        line: number,
    })
}

/// Where scraped samples come from and what they are stamped with.
#[derive(Debug, Clone)]
pub struct ScrapeSource<'a> {
    /// The service the target's metrics belong to (`service.name`).
    pub service: &'a str,
    /// The target's `host:port` (`service.instance.id`).
    pub instance: &'a str,
    /// The scraped URL (`url.full` on the resource).
    pub url: &'a str,
    /// Labels added to every sample (the target's `labels`); a sample's own label of the same
    /// name wins, as with Prometheus's `honor_labels`.
    pub labels: &'a [(String, String)],
    /// When the scrape was made: the time of samples without a timestamp.
    pub time_ns: i64,
}

/// Samples read from one scrape, as an OTLP request, and how many samples it had.
pub fn to_otlp(
    families: &[Family],
    format: Format,
    source: &ScrapeSource<'_>,
) -> Result<(ExportMetricsServiceRequest, usize), ExpositionError> {
    let mut metrics = Vec::new();
    let mut samples = 0;
    for family in families {
        samples += family.samples.len();
        if family.samples.is_empty() {
            continue;
        }
        metrics.extend(family_metrics(family, format, source)?);
    }
    let mut resource = vec![
        string_kv("service.name", source.service),
        string_kv("service.instance.id", source.instance),
        string_kv("url.full", source.url),
    ];
    resource.retain(|kv| kv.value.is_some());
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "sightline.scrape".into(),
                    ..Default::default()
                }),
                metrics,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    };
    Ok((request, samples))
}

/// The unit a family reports: `# UNIT`, else its name's suffix.
fn unit_of(family: &Family) -> String {
    if let Some(unit) = &family.unit {
        return match unit.as_str() {
            "seconds" => "s".into(),
            "bytes" => "By".into(),
            "milliseconds" => "ms".into(),
            other => other.into(),
        };
    }
    let base = family
        .name
        .trim_end_matches("_total")
        .trim_end_matches("_info");
    for (suffix, unit) in [
        ("_seconds", "s"),
        ("_milliseconds", "ms"),
        ("_bytes", "By"),
        ("_ratio", "1"),
    ] {
        if base.ends_with(suffix) {
            return unit.into();
        }
    }
    String::new()
}

/// A series' identity: its labels without the one that places a sample in it (`le`,
/// `quantile`), sorted.
fn series_key(labels: &[(String, String)], skip: &str) -> Vec<(String, String)> {
    let mut key: Vec<(String, String)> =
        labels.iter().filter(|(n, _)| n != skip).cloned().collect();
    key.sort();
    key
}

fn attributes(labels: &[(String, String)], source: &ScrapeSource<'_>) -> Vec<KeyValue> {
    let mut out: Vec<KeyValue> = labels.iter().map(|(k, v)| string_kv(k, v)).collect();
    for (k, v) in source.labels {
        if !labels.iter().any(|(n, _)| n == k) {
            out.push(string_kv(k, v));
        }
    }
    out
}

fn string_kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(Any::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

fn exemplar_of(sample: &Sample, source: &ScrapeSource<'_>) -> Vec<Exemplar> {
    let Some(e) = &sample.exemplar else {
        return Vec::new();
    };
    let id = |name: &str, len: usize| {
        e.labels
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| hex::decode(v).ok())
            .filter(|bytes| bytes.len() == len)
    };
    let trace_id = id("trace_id", 16);
    let span_id = id("span_id", 8);
    let filtered: Vec<KeyValue> = e
        .labels
        .iter()
        .filter(|(n, _)| {
            !((n == "trace_id" && trace_id.is_some()) || (n == "span_id" && span_id.is_some()))
        })
        .map(|(k, v)| string_kv(k, v))
        .collect();
    vec![Exemplar {
        filtered_attributes: filtered,
        time_unix_nano: e.time_ns.unwrap_or(source.time_ns).max(0) as u64,
        span_id: span_id.unwrap_or_default(),
        trace_id: trace_id.unwrap_or_default(),
        value: Some(exemplar::Value::AsDouble(e.value)),
    }]
}

fn time_of(sample: &Sample, source: &ScrapeSource<'_>) -> u64 {
    sample.time_ns.unwrap_or(source.time_ns).max(0) as u64
}

/// A `_created` sample's value (seconds since the epoch) as nanoseconds.
fn created_ns(value: f64) -> u64 {
    if value.is_finite() && value > 0.0 {
        (value * 1e9) as u64
    } else {
        0
    }
}

fn family_metrics(
    family: &Family,
    format: Format,
    source: &ScrapeSource<'_>,
) -> Result<Vec<Metric>, ExpositionError> {
    let metric = |name: String, data: Data| Metric {
        name,
        description: family.help.clone().unwrap_or_default(),
        unit: unit_of(family),
        data: Some(data),
        metadata: Vec::new(),
    };
    let created_name = created_name(family);
    let created: HashMap<Vec<(String, String)>, u64> = family
        .samples
        .iter()
        .filter(|s| s.name == created_name)
        .map(|s| (series_key(&s.labels, ""), created_ns(s.value)))
        .collect();
    let start = |labels: &[(String, String)], skip: &str| {
        created.get(&series_key(labels, skip)).copied().unwrap_or(0)
    };
    Ok(match family.kind {
        FamilyType::Counter => {
            let name = match format {
                Format::OpenMetrics if !family.name.ends_with("_total") => {
                    format!("{}_total", family.name)
                }
                _ => family.name.clone(),
            };
            let points: Vec<NumberDataPoint> = family
                .samples
                .iter()
                .filter(|s| s.name != created_name)
                .map(|s| NumberDataPoint {
                    attributes: attributes(&s.labels, source),
                    start_time_unix_nano: start(&s.labels, ""),
                    time_unix_nano: time_of(s, source),
                    exemplars: exemplar_of(s, source),
                    flags: 0,
                    value: Some(number_data_point::Value::AsDouble(s.value)),
                })
                .collect();
            vec![metric(
                name,
                Data::Sum(Sum {
                    data_points: points,
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    is_monotonic: true,
                }),
            )]
        }
        FamilyType::Histogram | FamilyType::GaugeHistogram => {
            vec![metric(
                family.name.clone(),
                Data::Histogram(histogram(family, source, &start)?),
            )]
        }
        FamilyType::Summary => {
            vec![metric(
                family.name.clone(),
                Data::Summary(summary(family, source, &start)?),
            )]
        }
        FamilyType::Info => {
            let name = match format {
                Format::OpenMetrics if !family.name.ends_with("_info") => {
                    format!("{}_info", family.name)
                }
                _ => family.name.clone(),
            };
            vec![metric(
                name,
                Data::Gauge(gauge_points(&family.samples, source)),
            )]
        }
        FamilyType::Gauge | FamilyType::StateSet | FamilyType::Unknown => {
            // Untyped families may hold several sample names; each is a gauge of its own.
            let mut names: Vec<&str> = Vec::new();
            for s in &family.samples {
                if !names.contains(&s.name.as_str()) {
                    names.push(&s.name);
                }
            }
            names
                .into_iter()
                .map(|name| {
                    let samples: Vec<Sample> = family
                        .samples
                        .iter()
                        .filter(|s| s.name == name)
                        .cloned()
                        .collect();
                    metric(
                        name.to_string(),
                        Data::Gauge(gauge_points(&samples, source)),
                    )
                })
                .collect()
        }
    })
}

fn gauge_points(samples: &[Sample], source: &ScrapeSource<'_>) -> Gauge {
    Gauge {
        data_points: samples
            .iter()
            .map(|s| NumberDataPoint {
                attributes: attributes(&s.labels, source),
                start_time_unix_nano: 0,
                time_unix_nano: time_of(s, source),
                exemplars: exemplar_of(s, source),
                flags: 0,
                value: Some(number_data_point::Value::AsDouble(s.value)),
            })
            .collect(),
    }
}

/// One histogram series as it is read: cumulative buckets by bound, count and sum.
#[derive(Default)]
struct HistogramSeries {
    labels: Vec<(String, String)>,
    buckets: Vec<(f64, f64, usize)>,
    count: Option<f64>,
    sum: Option<f64>,
    time_ns: Option<i64>,
    exemplars: Vec<Exemplar>,
}

fn histogram(
    family: &Family,
    source: &ScrapeSource<'_>,
    start: &dyn Fn(&[(String, String)], &str) -> u64,
) -> Result<Histogram, ExpositionError> {
    let gauge = family.kind == FamilyType::GaugeHistogram;
    let (count_suffix, sum_suffix) = if gauge {
        ("_gcount", "_gsum")
    } else {
        ("_count", "_sum")
    };
    let mut order: Vec<Vec<(String, String)>> = Vec::new();
    let mut series: HashMap<Vec<(String, String)>, HistogramSeries> = HashMap::new();
    for s in &family.samples {
        let key = series_key(&s.labels, "le");
        let entry = series.entry(key.clone()).or_insert_with(|| {
            order.push(key.clone());
            HistogramSeries {
                labels: s
                    .labels
                    .iter()
                    .filter(|(n, _)| n != "le")
                    .cloned()
                    .collect(),
                ..Default::default()
            }
        });
        entry.time_ns = entry.time_ns.or(s.time_ns);
        let suffix = s.name.strip_prefix(&family.name).unwrap_or_default();
        match suffix {
            "_bucket" => {
                let le = s
                    .labels
                    .iter()
                    .find(|(n, _)| n == "le")
                    .map(|(_, v)| v.as_str())
                    .ok_or_else(|| error(s.line, format!("{} has no `le` label", s.name)))?;
                let bound = parse_float(le)
                    .filter(|b| !b.is_nan() && *b != f64::NEG_INFINITY)
                    .ok_or_else(|| {
                        error(
                            s.line,
                            format!(
                                "{}: le={le:?} is not a bucket bound (a number or +Inf)",
                                s.name
                            ),
                        )
                    })?;
                if entry.buckets.iter().any(|(b, _, _)| *b == bound) {
                    return Err(error(
                        s.line,
                        format!("{}: the bucket le={le:?} appears twice", s.name),
                    ));
                }
                entry.buckets.push((bound, s.value, s.line));
                entry.exemplars.extend(exemplar_of(s, source));
            }
            x if x == count_suffix => entry.count = Some(s.value),
            x if x == sum_suffix => entry.sum = Some(s.value),
            _ => {}
        }
    }
    let mut points = Vec::with_capacity(order.len());
    for key in order {
        let Some(mut s) = series.remove(&key) else {
            continue;
        };
        s.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut bounds = Vec::new();
        let mut counts = Vec::new();
        let mut previous = 0.0;
        for (bound, cumulative, line) in &s.buckets {
            if *cumulative < previous {
                return Err(error(
                    *line,
                    format!(
                        "{}_bucket{{le=\"{bound}\"}} counts {cumulative}, fewer than the bucket below it ({previous}): buckets are cumulative",
                        family.name
                    ),
                ));
            }
            counts.push((cumulative - previous).round() as u64);
            previous = *cumulative;
            if bound.is_finite() {
                bounds.push(*bound);
            }
        }
        let has_inf = s.buckets.last().is_some_and(|b| b.0.is_infinite());
        let count = s.count.unwrap_or(previous);
        if !has_inf {
            // Without a +Inf bucket the rest of the count lies above the last bound.
            counts.push((count - previous).max(0.0).round() as u64);
        }
        if counts.is_empty() {
            counts.push(count.max(0.0).round() as u64);
        }
        points.push(HistogramDataPoint {
            attributes: attributes(&s.labels, source),
            start_time_unix_nano: start(&s.labels, "le"),
            time_unix_nano: s.time_ns.unwrap_or(source.time_ns).max(0) as u64,
            count: count.max(0.0).round() as u64,
            sum: s.sum,
            bucket_counts: counts,
            explicit_bounds: bounds,
            exemplars: s.exemplars,
            flags: 0,
            min: None,
            max: None,
        });
    }
    Ok(Histogram {
        data_points: points,
        aggregation_temporality: if gauge {
            AggregationTemporality::Unspecified as i32
        } else {
            AggregationTemporality::Cumulative as i32
        },
    })
}

fn summary(
    family: &Family,
    source: &ScrapeSource<'_>,
    start: &dyn Fn(&[(String, String)], &str) -> u64,
) -> Result<Summary, ExpositionError> {
    #[derive(Default)]
    struct Series {
        labels: Vec<(String, String)>,
        quantiles: Vec<ValueAtQuantile>,
        count: f64,
        sum: f64,
        time_ns: Option<i64>,
    }
    let mut order: Vec<Vec<(String, String)>> = Vec::new();
    let mut series: HashMap<Vec<(String, String)>, Series> = HashMap::new();
    for s in &family.samples {
        let key = series_key(&s.labels, "quantile");
        let entry = series.entry(key.clone()).or_insert_with(|| {
            order.push(key.clone());
            Series {
                labels: s
                    .labels
                    .iter()
                    .filter(|(n, _)| n != "quantile")
                    .cloned()
                    .collect(),
                ..Default::default()
            }
        });
        entry.time_ns = entry.time_ns.or(s.time_ns);
        match s.name.strip_prefix(&family.name).unwrap_or_default() {
            "" => {
                let q = s
                    .labels
                    .iter()
                    .find(|(n, _)| n == "quantile")
                    .map(|(_, v)| v.as_str())
                    .ok_or_else(|| error(s.line, format!("{} has no `quantile` label", s.name)))?;
                let quantile = parse_float(q)
                    .filter(|q| (0.0..=1.0).contains(q))
                    .ok_or_else(|| {
                        error(
                            s.line,
                            format!("{}: quantile={q:?} is not a number from 0 to 1", s.name),
                        )
                    })?;
                entry.quantiles.push(ValueAtQuantile {
                    quantile,
                    value: s.value,
                });
            }
            "_count" => entry.count = s.value,
            "_sum" => entry.sum = s.value,
            _ => {}
        }
    }
    Ok(Summary {
        data_points: order
            .into_iter()
            .filter_map(|key| series.remove(&key))
            .map(|s| SummaryDataPoint {
                attributes: attributes(&s.labels, source),
                start_time_unix_nano: start(&s.labels, "quantile"),
                time_unix_nano: s.time_ns.unwrap_or(source.time_ns).max(0) as u64,
                count: s.count.max(0.0).round() as u64,
                sum: s.sum,
                quantile_values: s.quantiles,
                flags: 0,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_NS: i64 = 1_765_000_000_000_000_000;

    fn source() -> (Vec<(String, String)>, i64) {
        (vec![("team".to_string(), "shop".to_string())], NOW_NS)
    }

    fn convert(text: &str, format: Format) -> Vec<Metric> {
        let families = parse(text, format).expect("a valid exposition");
        let (labels, time_ns) = source();
        let source = ScrapeSource {
            service: "orders",
            instance: "127.0.0.1:8000",
            url: "http://127.0.0.1:8000/metrics",
            labels: &labels,
            time_ns,
        };
        let (request, _) = to_otlp(&families, format, &source).expect("converts");
        request.resource_metrics[0].scope_metrics[0].metrics.clone()
    }

    fn by_name<'a>(metrics: &'a [Metric], name: &str) -> &'a Metric {
        metrics.iter().find(|m| m.name == name).unwrap_or_else(|| {
            panic!(
                "no metric {name} in {:?}",
                metrics.iter().map(|m| &m.name).collect::<Vec<_>>()
            )
        })
    }

    const TEXT: &str = r#"# HELP http_requests_total Requests served.
# TYPE http_requests_total counter
http_requests_total{method="GET",code="200"} 7.0
http_requests_total{method="POST",code="500"} 2.0
# HELP http_requests_created Requests served.
# TYPE http_requests_created gauge
http_requests_created{method="GET",code="200"} 1.7650000e+09
http_requests_created{method="POST",code="500"} 1.765000001e+09
# HELP queue_depth Jobs waiting.
# TYPE queue_depth gauge
queue_depth 3.0
# HELP request_latency_seconds Latency.
# TYPE request_latency_seconds histogram
request_latency_seconds_bucket{route="/a",le="0.1"} 2.0
request_latency_seconds_bucket{route="/a",le="0.5"} 5.0
request_latency_seconds_bucket{route="/a",le="+Inf"} 6.0
request_latency_seconds_count{route="/a"} 6.0
request_latency_seconds_sum{route="/a"} 1.75
# HELP request_latency_seconds_created Latency.
# TYPE request_latency_seconds_created gauge
request_latency_seconds_created{route="/a"} 1.765e+09
# HELP payload_bytes Payload sizes.
# TYPE payload_bytes summary
payload_bytes{quantile="0.5"} 120.0
payload_bytes{quantile="0.99"} 900.0
payload_bytes_count 10.0
payload_bytes_sum 2000.0
# HELP python_info Python platform information
# TYPE python_info gauge
python_info{implementation="CPython",major="3",minor="11"} 1.0
untyped_thing{a="b"} 4 1765000000123
"#;

    #[test]
    fn the_text_format_becomes_otlp_metrics_of_the_same_types() {
        let metrics = convert(TEXT, Format::Text);
        let names: Vec<&str> = metrics.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "http_requests_total",
                "queue_depth",
                "request_latency_seconds",
                "payload_bytes",
                "python_info",
                "untyped_thing"
            ]
        );
        let Some(Data::Sum(sum)) = &by_name(&metrics, "http_requests_total").data else {
            panic!("a counter is a sum");
        };
        assert!(sum.is_monotonic);
        assert_eq!(
            sum.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        assert_eq!(sum.data_points.len(), 2);
        assert_eq!(
            sum.data_points[0].value,
            Some(number_data_point::Value::AsDouble(7.0))
        );
        assert_eq!(
            sum.data_points[0].start_time_unix_nano,
            1_765_000_000_000_000_000
        );
        assert_eq!(
            sum.data_points[1].start_time_unix_nano,
            1_765_000_001_000_000_000
        );
        let keys: Vec<&str> = sum.data_points[0]
            .attributes
            .iter()
            .map(|kv| kv.key.as_str())
            .collect();
        assert_eq!(keys, ["method", "code", "team"]);

        let latency = by_name(&metrics, "request_latency_seconds");
        assert_eq!(latency.unit, "s");
        let Some(Data::Histogram(h)) = &latency.data else {
            panic!("a histogram");
        };
        let point = &h.data_points[0];
        assert_eq!(point.explicit_bounds, [0.1, 0.5]);
        assert_eq!(point.bucket_counts, [2, 3, 1]);
        assert_eq!((point.count, point.sum), (6, Some(1.75)));
        assert_eq!(point.start_time_unix_nano, 1_765_000_000_000_000_000);
        assert!(point.attributes.iter().all(|kv| kv.key != "le"));

        let payload = by_name(&metrics, "payload_bytes");
        assert_eq!(payload.unit, "By");
        let Some(Data::Summary(s)) = &payload.data else {
            panic!("a summary");
        };
        assert_eq!(s.data_points[0].quantile_values.len(), 2);
        assert_eq!((s.data_points[0].count, s.data_points[0].sum), (10, 2000.0));

        let Some(Data::Gauge(g)) = &by_name(&metrics, "untyped_thing").data else {
            panic!("untyped is a gauge");
        };
        assert_eq!(g.data_points[0].time_unix_nano, 1_765_000_000_123_000_000);
        let Some(Data::Gauge(g)) = &by_name(&metrics, "queue_depth").data else {
            panic!("a gauge");
        };
        assert_eq!(g.data_points[0].time_unix_nano, NOW_NS as u64);
    }

    const OPENMETRICS: &str = r#"# HELP http_requests Requests served.
# TYPE http_requests counter
http_requests_total{method="GET"} 7.0 # {trace_id="4bf92f3577b34da6a3ce929d0e0e4736",span_id="00f067aa0ba902b7"} 1.0 1765000000.5
http_requests_created{method="GET"} 1.765e+09
# TYPE request_latency histogram
# UNIT request_latency seconds
request_latency_bucket{le="0.1"} 1.0
request_latency_bucket{le="+Inf"} 3.0 # {trace_id="4bf92f3577b34da6a3ce929d0e0e4736"} 2.5
request_latency_count 3.0
request_latency_sum 3.1
request_latency_created 1.765e+09
# TYPE build info
build_info{version="1.5.0"} 1.0
# EOF
"#;

    #[test]
    fn openmetrics_counters_get_total_and_exemplars_keep_their_trace() {
        let metrics = convert(OPENMETRICS, Format::OpenMetrics);
        let names: Vec<&str> = metrics.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            ["http_requests_total", "request_latency", "build_info"]
        );
        let Some(Data::Sum(sum)) = &metrics[0].data else {
            panic!("a sum");
        };
        let exemplar = &sum.data_points[0].exemplars[0];
        assert_eq!(
            hex::encode(&exemplar.trace_id),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(hex::encode(&exemplar.span_id), "00f067aa0ba902b7");
        assert_eq!(exemplar.time_unix_nano, 1_765_000_000_500_000_000);
        assert_eq!(
            sum.data_points[0].start_time_unix_nano,
            1_765_000_000_000_000_000
        );
        assert_eq!(metrics[1].unit, "s");
        let Some(Data::Histogram(h)) = &metrics[1].data else {
            panic!("a histogram");
        };
        assert_eq!(h.data_points[0].bucket_counts, [1, 2]);
        assert_eq!(h.data_points[0].exemplars.len(), 1);
    }

    #[test]
    fn bad_lines_are_named_by_number_and_what_was_expected() {
        for (text, format, line, words) in [
            ("a 1\nb{x=\"1\" 2\n", Format::Text, 2, "expected `,` or `}`"),
            (
                "a 1\nb banana\n",
                Format::Text,
                2,
                "expected the value of b",
            ),
            (
                "# TYPE a countr\na 1\n",
                Format::Text,
                1,
                "unknown type \"countr\"",
            ),
            ("a{1x=\"y\"} 1\n", Format::Text, 1, "expected a label name"),
            ("a{x=\"y} 1\n", Format::Text, 1, "is not closed"),
            ("a 1 12.5\n", Format::Text, 1, "timestamp in milliseconds"),
            (
                "a 1 # {x=\"y\"} 1\n",
                Format::Text,
                1,
                "exemplars are OpenMetrics only",
            ),
            ("a 1\n", Format::OpenMetrics, 0, "does not end with `# EOF`"),
            (
                "a 1\n# EOF\nb 2\n",
                Format::OpenMetrics,
                3,
                "nothing may follow",
            ),
            (
                "# TYPE h histogram\nh_bucket{le=\"1\"} 5\nh_bucket{le=\"+Inf\"} 3\n",
                Format::Text,
                3,
                "buckets are cumulative",
            ),
            (
                "# TYPE a gauge\n# TYPE a gauge\n",
                Format::Text,
                2,
                "a second `# TYPE`",
            ),
            ("a{x=\"1\",x=\"2\"} 1\n", Format::Text, 1, "appears twice"),
        ] {
            let result = parse(text, format).and_then(|families| {
                let source = ScrapeSource {
                    service: "s",
                    instance: "i",
                    url: "u",
                    labels: &[],
                    time_ns: 0,
                };
                to_otlp(&families, format, &source).map(|_| ())
            });
            let e = result.expect_err(text);
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.message.contains(words), "{text:?}: {e}");
        }
    }

    #[test]
    fn created_gauges_of_odd_names_date_their_family_without_a_panic() {
        for text in [
            "# TYPE h_total_total histogram\nh_total_total_bucket{le=\"+Inf\"} 1\n# HELP h_total_total_created x\nh_total_total_created 1.7e9\n",
            "# TYPE s_total_total summary\ns_total_total_count 1\ns_total_total_created 1.7e9\n",
            "# TYPE c_total_total counter\nc_total_total 3\nc_total_created 1.7e9\n",
        ] {
            let families = parse(text, Format::Text).expect("valid");
            assert_eq!(
                families.len(),
                1,
                "{text}: the _created gauge joins its family"
            );
            let source = ScrapeSource {
                service: "s",
                instance: "i",
                url: "u",
                labels: &[],
                time_ns: 0,
            };
            let (request, _) = to_otlp(&families, Format::Text, &source).expect("converts");
            assert_eq!(
                request.resource_metrics[0].scope_metrics[0].metrics.len(),
                1,
                "{text}"
            );
        }
        let twice = "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"1.0\"} 1\n";
        let e = parse(twice, Format::Text)
            .and_then(|f| {
                let source = ScrapeSource {
                    service: "s",
                    instance: "i",
                    url: "u",
                    labels: &[],
                    time_ns: 0,
                };
                to_otlp(&f, Format::Text, &source).map(|_| ())
            })
            .expect_err("a bucket twice");
        assert!(e.message.contains("appears twice"), "{e}");
    }

    #[test]
    fn escapes_special_values_and_comments_are_read() {
        let text =
            "# a comment\n\nm{path=\"C:\\\\dir\",q=\"say \\\"hi\\\"\\n\"} NaN\nn +Inf\no -Inf\n";
        let families = parse(text, Format::Text).expect("valid");
        assert_eq!(families[0].samples[0].labels[0].1, "C:\\dir");
        assert_eq!(families[0].samples[0].labels[1].1, "say \"hi\"\n");
        assert!(families[0].samples[0].value.is_nan());
        assert_eq!(families[1].samples[0].value, f64::INFINITY);
        assert_eq!(families[2].samples[0].value, f64::NEG_INFINITY);
    }

    #[test]
    fn any_input_is_read_or_refused_without_a_panic() {
        // Every prefix of a valid exposition, and a few byte-level corruptions of it.
        for format in [Format::Text, Format::OpenMetrics] {
            for text in [TEXT, OPENMETRICS] {
                for cut in 0..text.len() {
                    if !text.is_char_boundary(cut) {
                        continue;
                    }
                    let _ = parse(&text[..cut], format);
                    let mut bytes = text.as_bytes().to_vec();
                    bytes[cut] = b"{}\"\\ #=,\n"[cut % 9];
                    if let Ok(corrupt) = std::str::from_utf8(&bytes)
                        && let Ok(families) = parse(corrupt, format)
                    {
                        let source = ScrapeSource {
                            service: "s",
                            instance: "i",
                            url: "u",
                            labels: &[],
                            time_ns: 0,
                        };
                        let _ = to_otlp(&families, format, &source);
                    }
                }
            }
        }
    }

    #[test]
    fn the_content_type_picks_the_format() {
        assert_eq!(
            Format::of_content_type("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::of_content_type("text/plain; version=0.0.4; charset=utf-8"),
            Format::Text
        );
        assert_eq!(Format::of_content_type(""), Format::Text);
    }
}
