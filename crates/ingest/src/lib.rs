//! OTLP bytes in, validated and normalized rows out. No sockets live here: receivers hand this
//! crate a body and its content type and get back rows for the `spans`, `logs` and `metrics`
//! tables plus a count of rejected records with the first reason, as OTLP partial success needs.
//!
//! The steps are: [`body`] (content type, gzip with a size limit) -> decode (protobuf with prost,
//! or JSON through [`otlp_json`], which repairs and validates OTLP/JSON before the serde types
//! see it) -> redact ([`redact`], on the decoded request, so nothing after it sees a secret) ->
//! limits ([`limits`]) -> normalize ([`traces`], [`logs`], [`metrics`]), which promotes
//! semantic-convention attributes into columns and understands Logfire's conventions. What a
//! request goes through is an [`Intake`]: the limits and the redaction rules. Other roads in
//! end as OTLP requests: JSON log lines ([`json_lines`]) and scraped Prometheus exposition text
//! ([`prometheus`]).

#![deny(missing_docs)]

pub mod attributes;
pub mod body;
pub mod error;
pub mod fuzzing;
pub mod json_lines;
pub mod limits;
pub mod logs;
pub mod metrics;
pub mod otlp_json;
pub mod prometheus;
pub mod redact;
pub mod resource;
pub mod traces;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
pub use redact::{Redactions, Redactor};
use sightline_model::schema::{LogRow, MetricRow, SpanRow};

pub use body::{BodyEncoding, decode_body};
pub use error::Error;
pub use limits::{Limited, Limits, Timing};

/// Rows produced from one export request, and what was left out.
#[derive(Debug, Default)]
pub struct Normalized {
    /// Rows for the `spans` table.
    pub spans: Vec<SpanRow>,
    /// Rows for the `logs` table, Logfire log-spans among them.
    pub logs: Vec<LogRow>,
    /// Rows for the `metrics` table.
    pub metrics: Vec<MetricRow>,
    /// Records left out while the rest of the request was kept.
    pub rejections: Rejections,
    /// What the per-record limits dropped or cut (kept records, changed).
    pub limited: Limited,
    /// Values redaction replaced, per service and rule (kept records, changed).
    pub redactions: Redactions,
    /// Per service: records kept and refused for their time, and stamped ahead of their
    /// arrival or far behind it.
    pub timing: std::collections::BTreeMap<String, limits::Timing>,
}

impl Normalized {
    /// Rows produced across all three tables.
    pub fn row_count(&self) -> usize {
        self.spans.len() + self.logs.len() + self.metrics.len()
    }
}

/// Records rejected while the rest of a request was accepted (OTLP partial success).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rejections {
    /// How many records were rejected.
    pub count: u64,
    /// The reason the first record was rejected.
    pub first_reason: Option<String>,
}

impl Rejections {
    /// Counts one rejected record; `reason` is called only for the first, so later rejections
    /// cost no message.
    pub fn reject(&mut self, reason: impl FnOnce() -> String) {
        self.count += 1;
        if self.first_reason.is_none() {
            self.first_reason = Some(reason());
        }
    }

    /// Adds `other`'s rejections to these; this one's first reason stays when it has one.
    pub fn merge(&mut self, other: Rejections) {
        self.count += other.count;
        if self.first_reason.is_none() {
            self.first_reason = other.first_reason;
        }
    }
}

/// Reads an OTLP/JSON request, with the records it had to leave out.
type JsonParser<R> = fn(&[u8]) -> Result<(R, Rejections), Error>;

/// How one signal's export request is parsed, limited and normalized.
struct SignalCodec<R> {
    /// The protobuf message name, for error messages.
    message: &'static str,
    parse_json: JsonParser<R>,
    redact: fn(&Redactor, &mut R) -> Redactions,
    enforce: fn(&mut R, Limits) -> Limited,
    normalize: fn(&R, i64) -> Normalized,
}

const TRACES: SignalCodec<ExportTraceServiceRequest> = SignalCodec {
    message: "ExportTraceServiceRequest",
    parse_json: otlp_json::parse_traces,
    redact: Redactor::traces,
    enforce: limits::enforce_traces,
    normalize: traces::normalize,
};

const LOGS: SignalCodec<ExportLogsServiceRequest> = SignalCodec {
    message: "ExportLogsServiceRequest",
    parse_json: otlp_json::parse_logs,
    redact: Redactor::logs,
    enforce: limits::enforce_logs,
    normalize: logs::normalize,
};

const METRICS: SignalCodec<ExportMetricsServiceRequest> = SignalCodec {
    message: "ExportMetricsServiceRequest",
    parse_json: otlp_json::parse_metrics,
    redact: Redactor::metrics,
    enforce: limits::enforce_metrics,
    normalize: metrics::normalize,
};

/// What every request goes through after decoding: the redaction rules, then the per-record
/// limits. The receivers hold one; [`Intake::unredacted`] is for benchmarks and tests of
/// normalization alone.
#[derive(Debug, Clone, Default)]
pub struct Intake {
    /// `[limits]`.
    pub limits: Limits,
    /// `[redaction]`, compiled.
    pub redactor: Redactor,
}

impl Intake {
    /// The limits and the rules.
    pub fn new(limits: Limits, redactor: Redactor) -> Self {
        Self { limits, redactor }
    }

    /// The limits without any redaction.
    pub fn unredacted(limits: Limits) -> Self {
        Self {
            limits,
            redactor: Redactor::none(),
        }
    }
}

/// Decodes one export request (protobuf or OTLP/JSON), redacts it, applies the limits and
/// normalizes it;
/// rejections found while reading JSON come first, then those of normalization.
fn ingest<R: Message + Default>(
    codec: &SignalCodec<R>,
    bytes: &[u8],
    encoding: BodyEncoding,
    received_ns: i64,
    intake: &Intake,
) -> Result<Normalized, Error> {
    let (request, mut rejections) = match encoding {
        BodyEncoding::Protobuf => (
            R::decode(bytes).map_err(|e| Error::Protobuf {
                message: codec.message,
                reason: protobuf_reason(&e.to_string()),
            })?,
            Rejections::default(),
        ),
        BodyEncoding::Json => (codec.parse_json)(bytes)?,
        BodyEncoding::JsonLines => return Err(Error::JsonLinesNotLogs),
    };
    let mut normalized = prepare(codec, request, received_ns, intake);
    rejections.merge(std::mem::take(&mut normalized.rejections));
    normalized.rejections = rejections;
    Ok(normalized)
}

/// Fields of a decode error's path kept at each end when the path is long.
const PATH_ENDS: usize = 3;

/// A protobuf decode error as a reason a person can read: prost names every field on the way to
/// the problem, which for a value nested ten thousand deep is kilobytes of the same two names;
/// a long path keeps its first and last fields and says how deep it went.
pub fn protobuf_reason(text: &str) -> String {
    const LONG: usize = 512;
    let parts: Vec<&str> = text.split(": ").collect();
    // "failed to decode Protobuf message", the fields on the way (`Message.field`, innermost
    // first), then the description (which may hold ": " itself).
    let fields = parts
        .iter()
        .skip(1)
        .take_while(|p| p.contains('.') && !p.contains(char::is_whitespace))
        .count();
    if text.len() <= LONG || fields <= 2 * PATH_ENDS || parts.len() < fields + 2 {
        return text.to_string();
    }
    let path = &parts[1..=fields];
    let description = parts[fields + 1..].join(": ");
    let mut reason = format!(
        "{}: {description} (at {fields} fields deep: {} … {})",
        parts[0],
        path[..PATH_ENDS].join(": "),
        path[fields - PATH_ENDS..].join(": "),
    );
    if description.contains("recursion limit") {
        reason
            .push_str("; values nested deeper than protobuf's limit of 100 levels cannot be read");
    }
    reason
}

/// Redacts a decoded request, applies the per-record limits, normalizes it, and rejects records
/// stamped too far from the server's clock. Redaction comes first, so a secret is never cut in
/// two by a length limit and missed.
fn prepare<R>(
    codec: &SignalCodec<R>,
    mut request: R,
    received_ns: i64,
    intake: &Intake,
) -> Normalized {
    let redactions = (codec.redact)(&intake.redactor, &mut request);
    let limited = (codec.enforce)(&mut request, intake.limits);
    let mut normalized = (codec.normalize)(&request, received_ns);
    normalized.limited = limited;
    normalized.redactions = redactions;
    limits::enforce_time_bounds(&mut normalized, received_ns, intake.limits);
    normalized
}

/// Redacts, limits and normalizes a traces request decoded elsewhere (the gRPC receiver).
pub fn prepare_traces(
    request: ExportTraceServiceRequest,
    received_ns: i64,
    intake: &Intake,
) -> Normalized {
    prepare(&TRACES, request, received_ns, intake)
}

/// Redacts, limits and normalizes a logs request decoded elsewhere (the gRPC receiver).
pub fn prepare_logs(
    request: ExportLogsServiceRequest,
    received_ns: i64,
    intake: &Intake,
) -> Normalized {
    prepare(&LOGS, request, received_ns, intake)
}

/// Redacts, limits and normalizes a metrics request decoded elsewhere (the gRPC receiver).
pub fn prepare_metrics(
    request: ExportMetricsServiceRequest,
    received_ns: i64,
    intake: &Intake,
) -> Normalized {
    prepare(&METRICS, request, received_ns, intake)
}

/// Decodes an OTLP traces export body (already decompressed), redacts and normalizes it.
pub fn ingest_traces(
    bytes: &[u8],
    encoding: BodyEncoding,
    received_ns: i64,
    intake: &Intake,
) -> Result<Normalized, Error> {
    ingest(&TRACES, bytes, encoding, received_ns, intake)
}

/// Decodes an OTLP logs export body (already decompressed), redacts and normalizes it.
pub fn ingest_logs(
    bytes: &[u8],
    encoding: BodyEncoding,
    received_ns: i64,
    intake: &Intake,
) -> Result<Normalized, Error> {
    ingest(&LOGS, bytes, encoding, received_ns, intake)
}

/// Reads a body of JSON log lines (already decompressed; see [`json_lines`]), redacts, limits
/// and normalizes it; lines that name no service get `default_service` (`?service=`).
pub fn ingest_json_lines(
    bytes: &[u8],
    default_service: Option<&str>,
    received_ns: i64,
    intake: &Intake,
) -> Normalized {
    let (request, mut rejections) = json_lines::parse(bytes, default_service);
    let mut normalized = prepare(&LOGS, request, received_ns, intake);
    rejections.merge(std::mem::take(&mut normalized.rejections));
    normalized.rejections = rejections;
    normalized
}

/// Decodes an OTLP metrics export body (already decompressed), redacts and normalizes it.
pub fn ingest_metrics(
    bytes: &[u8],
    encoding: BodyEncoding,
    received_ns: i64,
    intake: &Intake,
) -> Result<Normalized, Error> {
    ingest(&METRICS, bytes, encoding, received_ns, intake)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_long_protobuf_error_path_is_cut_to_its_ends() {
        let path = vec!["ArrayValue.values: AnyValue.value"; 50].join(": ");
        let text = format!("failed to decode Protobuf message: {path}: recursion limit reached");
        let reason = super::protobuf_reason(&text);
        assert!(reason.len() < 300, "{} bytes: {reason}", reason.len());
        assert!(
            reason.starts_with(
                "failed to decode Protobuf message: recursion limit reached (at 100 fields deep: ArrayValue.values"
            ),
            "{reason}"
        );
        assert!(reason.contains("100 levels"), "{reason}");
        let short = "failed to decode Protobuf message: Span.name: invalid string value: data is not UTF-8 encoded";
        assert_eq!(super::protobuf_reason(short), short);
    }
}
