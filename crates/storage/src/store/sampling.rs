//! The sampling step of maintenance: each hour of spans older than `sampling.full_fidelity` is
//! rewritten once with only its kept traces ([`crate::sampling::decide`]), its segments replaced in
//! one catalog transaction together with the decisions of the traces that reach into the next
//! hour and the per-service counts. A crash before the commit leaves the hour as it was (its new
//! files are orphans, removed at open) and the next pass decides the same; after it, the whole
//! hour is sampled. No trace is ever half kept.

use std::collections::{BTreeMap, HashSet};

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
    for (hour, inputs) in hours {
        sample_hour(inner, hour, inputs, &mut report)?;
    }
    report.sampled_before_ns = lock(&inner.catalog).state(SAMPLED_BEFORE)?;
    Ok(report)
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

fn sample_hour(
    inner: &Inner,
    hour: i64,
    inputs: Vec<SegmentMeta>,
    report: &mut SamplingReport,
) -> Result<()> {
    let config = &inner.options.sampling;
    let start_ns = hour * NS_PER_HOUR;
    let batches = read_all(inner, &inputs)?;
    let next: Vec<SegmentMeta> = read_state(&inner.state)
        .segments
        .iter()
        .filter(|s| s.table == Table::Spans && hour_of(s) == hour + 1)
        .cloned()
        .collect();
    let next_batches = read_all(inner, &next)?;
    let recorded = lock(&inner.catalog).trace_decisions(start_ns)?;
    let firing = lock(&inner.hints)
        .as_ref()
        .map(|h| h.firing(start_ns, start_ns + 2 * NS_PER_HOUR))
        .unwrap_or_default();
    let decided = sampling::decide(config, &batches, &next_batches, &recorded, &firing);
    // The traces that go on into the next hour: that hour follows their decision.
    let onward = trace_ids(&next_batches);
    let to_record: Vec<(String, sampling::Decision)> = decided
        .decisions
        .iter()
        .filter(|(t, _)| onward.contains(*t))
        .map(|(t, d)| (t.clone(), *d))
        .collect();
    let mut kept = Vec::with_capacity(batches.len());
    for batch in &batches {
        kept.push(sampling::apply(batch, &decided.decisions)?);
    }
    let merged = concat_batches(&schema_for(Table::Spans), &kept)?;
    let level = inputs.iter().map(|s| s.level).max().unwrap_or(0);
    let mut written = Vec::new();
    let outputs =
        write_rows_as_segments(inner, Table::Spans, &merged, level, &mut written).map(|metas| {
            metas
                .into_iter()
                .map(|m| SegmentMeta { sampled: true, ..m })
                .collect::<Vec<_>>()
        });
    let outputs = discard_on_error(outputs, written)?;
    let ids: Vec<i64> = inputs.iter().map(|s| s.id).collect();
    let end_ns = start_ns + NS_PER_HOUR;
    let committed = {
        let mut catalog = lock(&inner.catalog);
        let before = catalog.state(SAMPLED_BEFORE)?.unwrap_or(i64::MIN);
        catalog.commit_sampled(
            outputs,
            &ids,
            start_ns,
            end_ns,
            &to_record,
            &decided.by_service,
            before.max(end_ns),
        )?
    };
    let bytes_after: i64 = committed.iter().map(|s| s.size_bytes).sum();
    replace_segments(inner, &ids, committed);
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
    report.bytes_after += bytes_after as u64;
    info!(
        hour = %chrono::DateTime::from_timestamp_nanos(start_ns).format("%Y-%m-%d %H:00"),
        traces = seen,
        kept = kept_traces,
        spans_before,
        spans_after = merged.num_rows(),
        "spans sampled"
    );
    Ok(())
}

/// The per-service counts of every sampling pass so far: traces seen and kept.
pub(super) fn kept_share(inner: &Inner) -> Result<BTreeMap<String, (u64, u64)>> {
    lock(&inner.catalog).sampling_stats()
}
