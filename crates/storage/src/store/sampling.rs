//! The sampling step of maintenance: each hour of spans older than `sampling.full_fidelity` is
//! rewritten once with only its kept traces ([`crate::sampling::decide`]); the hours of a pass
//! replace their segments in one catalog transaction together with the decisions of the traces
//! that reach into a later hour and the per-service counts. A crash before the commit leaves the
//! folder as it was (the new files are orphans, removed at open) and the next pass decides the
//! same; after it, those hours are sampled. No trace is ever half kept.

use std::collections::{BTreeMap, HashMap, HashSet};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::concat_batches;
use serde::Serialize;
use sightline_model::Table;
use sightline_model::schema::schema_for;
use tracing::info;

use super::layout::{NS_PER_HOUR, discard_on_error, write_rows_as_segments};
use super::maintenance::replace_segments;
use super::{Inner, lock, read_state};
use crate::catalog::SegmentMeta;
use crate::error::Result;
use crate::sampling::{self, Reason};
use crate::segment;

/// What sampling did in one maintenance pass.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct SamplingReport {
    /// Hours of spans sampled.
    pub hours: usize,
    /// Traces with a span in them.
    pub traces_seen: u64,
    /// Traces kept whole.
    pub traces_kept: u64,
    /// Kept traces by the reason they were kept (`error`, `slow`, `share`, ...).
    pub kept_by_reason: BTreeMap<Reason, u64>,
    /// Spans before and after.
    pub spans_before: u64,
    /// Spans kept.
    pub spans_after: u64,
    /// Bytes of the segments replaced, and of their replacements.
    pub bytes_before: u64,
    /// Bytes of the sampled segments written.
    pub bytes_after: u64,
    /// The newest sampled hour's end (ns), when any is: spans before it are a sample.
    pub sampled_before_ns: Option<i64>,
}

fn hour_of(meta: &SegmentMeta) -> i64 {
    meta.min_time_ns.div_euclid(NS_PER_HOUR)
}

/// Samples every hour of spans older than `full_fidelity` that holds segments not yet sampled.
///
/// The hours of one pass are committed together, in one catalog transaction: a trace that goes
/// on from one sampled hour into the next is dropped from both or from neither, and a crash
/// before the commit changes nothing. A trace that goes on into an hour still younger than
/// `full_fidelity` is kept (its decision recorded for that hour), so no trace is ever half there.
pub(super) fn sample_blocking(inner: &Inner, now_ns: i64) -> Result<SamplingReport> {
    let config = &inner.options.sampling;
    let mut report = SamplingReport::default();
    if !config.enabled {
        return Ok(report);
    }
    let cutoff = now_ns.saturating_sub(config.full_fidelity.as_nanos());
    let waiting: HashSet<i64> = lock(&inner.rollups_pending)
        .as_ref()
        .map(|p| p.iter().map(|s| s.id).collect())
        .unwrap_or_default();
    let mut hours: BTreeMap<i64, Vec<SegmentMeta>> = BTreeMap::new();
    for s in read_state(&inner.state).segments.iter() {
        if s.table == Table::Spans
            && !s.sampled
            && !waiting.contains(&s.id)
            && (hour_of(s) + 1) * NS_PER_HOUR <= cutoff
        {
            hours.entry(hour_of(s)).or_default().push(s.clone());
        }
    }
    if hours.is_empty() {
        report.sampled_before_ns = lock(&inner.catalog).state(SAMPLED_BEFORE)?;
        return Ok(report);
    }
    let mut pass = Pass::default();
    let mut written = Vec::new();
    let result = (|| {
        // The next hour's spans, read as evidence for one hour, are that hour's own inputs
        // when it comes next in the pass: read once.
        let mut read_ahead: Option<(i64, Vec<SegmentMeta>, Vec<RecordBatch>)> = None;
        for (hour, inputs) in &hours {
            let ripe_next = (hour + 2) * NS_PER_HOUR <= cutoff;
            let batches = match read_ahead.take() {
                Some((h, metas, batches)) if h == *hour && same_segments(&metas, inputs) => batches,
                _ => read_all(inner, inputs)?,
            };
            read_ahead = Some(sample_hour(
                inner,
                *hour,
                inputs,
                batches,
                ripe_next,
                &mut pass,
                &mut written,
                &mut report,
            )?);
        }
        Ok(())
    })();
    discard_on_error(result, std::mem::take(&mut written))?;
    let last_end = (hours.keys().next_back().copied().unwrap_or(0) + 1) * NS_PER_HOUR;
    let removed: Vec<i64> = hours.values().flatten().map(|s| s.id).collect();
    let committed = {
        let mut catalog = lock(&inner.catalog);
        let before = catalog.state(SAMPLED_BEFORE)?.unwrap_or(i64::MIN);
        let consumed: Vec<i64> = hours.keys().map(|h| h * NS_PER_HOUR).collect();
        let outputs = std::mem::take(&mut pass.outputs);
        let paths: Vec<_> = outputs
            .iter()
            .map(|m| inner.data_dir.join(&m.path))
            .collect();
        discard_on_error(
            catalog.commit_sampled(
                outputs,
                &removed,
                &consumed,
                &pass.onward,
                &pass.by_service,
                before.max(last_end),
            ),
            paths,
        )?
    };
    report.bytes_after = committed.iter().map(|s| s.size_bytes as u64).sum();
    replace_segments(inner, &removed, committed);
    report.sampled_before_ns = lock(&inner.catalog).state(SAMPLED_BEFORE)?;
    Ok(report)
}

/// What the hours of one pass have decided and written so far.
#[derive(Default)]
struct Pass {
    /// Decisions of traces going on into the next hour, by that hour's start (the next hour of
    /// this pass reads them from here; the last one's are recorded).
    carried: HashMap<i64, HashMap<String, sampling::Decision>>,
    /// Every `(hour_ns, trace, decision)` to record.
    onward: Vec<(i64, String, sampling::Decision)>,
    by_service: BTreeMap<String, (u64, u64)>,
    outputs: Vec<SegmentMeta>,
}

/// The catalog state key of the newest sampled hour's end.
pub(super) const SAMPLED_BEFORE: &str = "sampled_before_ns";

fn read_all(inner: &Inner, segments: &[SegmentMeta]) -> Result<Vec<RecordBatch>> {
    segments
        .iter()
        .map(|m| segment::read_segment(&inner.data_dir.join(&m.path), Table::Spans))
        .collect()
}

fn trace_ids(batches: &[RecordBatch]) -> HashSet<String> {
    let mut out = HashSet::new();
    for batch in batches {
        let Some(column) = batch.column_by_name("trace_id") else {
            continue;
        };
        for row in 0..batch.num_rows() {
            if column.is_null(row) {
                continue;
            }
            if let Some(v) = column.as_string_view_opt() {
                out.insert(v.value(row).to_string());
            } else if let Some(s) = column.as_string_opt::<i32>() {
                out.insert(s.value(row).to_string());
            }
        }
    }
    out
}

fn same_segments(a: &[SegmentMeta], b: &[SegmentMeta]) -> bool {
    let ids = |s: &[SegmentMeta]| s.iter().map(|m| m.id).collect::<HashSet<i64>>();
    ids(a) == ids(b)
}

/// Samples one hour (its spans in `batches`); returns the next hour's segments and spans, read
/// as evidence.
#[allow(clippy::too_many_arguments)]
fn sample_hour(
    inner: &Inner,
    hour: i64,
    inputs: &[SegmentMeta],
    batches: Vec<RecordBatch>,
    ripe_next: bool,
    pass: &mut Pass,
    written: &mut Vec<std::path::PathBuf>,
    report: &mut SamplingReport,
) -> Result<(i64, Vec<SegmentMeta>, Vec<RecordBatch>)> {
    let config = &inner.options.sampling;
    let start_ns = hour * NS_PER_HOUR;
    let next: Vec<SegmentMeta> = read_state(&inner.state)
        .segments
        .iter()
        .filter(|s| s.table == Table::Spans && hour_of(s) == hour + 1)
        .cloned()
        .collect();
    let next_batches = read_all(inner, &next)?;
    let mut recorded = lock(&inner.catalog).trace_decisions(start_ns)?;
    recorded.extend(pass.carried.remove(&start_ns).unwrap_or_default());
    let firing = lock(&inner.hints)
        .as_ref()
        .map(|h| h.firing(start_ns, start_ns + 2 * NS_PER_HOUR))
        .unwrap_or_default();
    let mut decided = sampling::decide(config, &batches, &next_batches, &recorded, &firing);
    // The traces that go on into the next hour follow this decision there; into an hour still
    // kept at full fidelity, they are kept, so that no trace is half there meanwhile.
    let onward = trace_ids(&next_batches);
    let mut carried = HashMap::new();
    for (trace, decision) in decided.decisions.iter_mut() {
        if !onward.contains(trace) {
            continue;
        }
        if !ripe_next && !decision.keep {
            *decision = sampling::Decision {
                keep: true,
                rate: 1.0,
            };
            *decided.reasons.entry(Reason::Recorded).or_default() += 1;
        }
        carried.insert(trace.clone(), *decision);
        pass.onward
            .push((start_ns + NS_PER_HOUR, trace.clone(), *decision));
    }
    pass.carried.insert(start_ns + NS_PER_HOUR, carried);
    let mut kept = Vec::with_capacity(batches.len());
    for batch in &batches {
        kept.push(sampling::apply(batch, &decided.decisions)?);
    }
    let merged = concat_batches(&schema_for(Table::Spans), &kept)?;
    let level = inputs.iter().map(|s| s.level).max().unwrap_or(0);
    let outputs = write_rows_as_segments(inner, Table::Spans, &merged, level, written)?;
    pass.outputs.extend(
        outputs
            .into_iter()
            .map(|m| SegmentMeta { sampled: true, ..m }),
    );
    for (service, (seen, kept)) in &decided.by_service {
        let counts = pass.by_service.entry(service.clone()).or_default();
        counts.0 += seen;
        counts.1 += kept;
    }
    let seen = decided.decisions.len() as u64;
    let kept_traces = decided.decisions.values().filter(|d| d.keep).count() as u64;
    report.hours += 1;
    report.traces_seen += seen;
    report.traces_kept += kept_traces;
    for (reason, n) in &decided.reasons {
        *report.kept_by_reason.entry(*reason).or_default() += n;
    }
    let spans_before: i64 = inputs.iter().map(|s| s.row_count).sum();
    report.spans_before += spans_before as u64;
    report.spans_after += merged.num_rows() as u64;
    report.bytes_before += inputs.iter().map(|s| s.size_bytes).sum::<i64>() as u64;
    info!(
        hour = %chrono::DateTime::from_timestamp_nanos(start_ns).format("%Y-%m-%d %H:00"),
        traces = seen,
        kept = kept_traces,
        spans_before,
        spans_after = merged.num_rows(),
        "spans sampled"
    );
    Ok((hour + 1, next, next_batches))
}

/// The per-service counts of every sampling pass so far: traces seen and kept.
pub(super) fn kept_share(inner: &Inner) -> Result<BTreeMap<String, (u64, u64)>> {
    lock(&inner.catalog).sampling_stats()
}
