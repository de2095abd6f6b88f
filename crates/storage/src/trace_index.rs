//! Which segments may hold a trace. Every segment carries a bloom filter of its `trace_id`
//! column per row group (written by [`crate::segment`]); the index keeps those filters in memory,
//! so that a trace lookup opens only the few segments that may hold the trace instead of reading
//! the footer and filters of every segment in the data folder on every lookup.
//!
//! Filters are read from a segment the first time a lookup needs them (or when the server warms
//! the index after opening), and dropped when compaction or retention replaces the segment. They
//! cost about 1.3 bytes of memory per stored span or log line (a 1 % false-positive rate).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use parquet::bloom_filter::Sbbf;
use parquet::file::reader::{FileReader, SerializedFileReader};

/// The trace-id filters of one segment: one per row group; `None` where a row group has none
/// (it may then hold any trace).
#[derive(Debug)]
struct SegmentFilters {
    row_groups: Vec<Option<Sbbf>>,
    bytes: u64,
}

impl SegmentFilters {
    fn load(path: &Path) -> Option<Self> {
        let file = File::open(path).ok()?;
        let reader = SerializedFileReader::new(file.try_clone().ok()?).ok()?;
        let metadata = reader.metadata();
        let column = metadata
            .file_metadata()
            .schema_descr()
            .columns()
            .iter()
            .position(|c| c.name() == "trace_id")?;
        let mut row_groups = Vec::with_capacity(metadata.num_row_groups());
        let mut bytes = 0u64;
        for row_group in metadata.row_groups() {
            let chunk = row_group.column(column);
            let filter = Sbbf::read_from_column_chunk(chunk, &file).ok()?;
            bytes += filter.as_ref().map_or(0, |f| f.num_blocks() as u64 * 32);
            row_groups.push(filter);
        }
        Some(Self { row_groups, bytes })
    }

    fn may_contain(&self, trace_id: &str) -> bool {
        self.row_groups
            .iter()
            .any(|f| f.as_ref().is_none_or(|f| f.check(trace_id)))
    }
}

/// The in-memory trace-id filters of the store's segments, by absolute path.
#[derive(Debug, Default)]
pub struct TraceIndex {
    segments: Mutex<HashMap<PathBuf, Option<Arc<SegmentFilters>>>>,
    bytes: AtomicU64,
}

impl TraceIndex {
    /// A segment's filters, read from the file unless they are in memory already. A segment
    /// whose filters cannot be read is remembered as such (`None`) and always scanned.
    fn filters(&self, path: &Path) -> Option<Arc<SegmentFilters>> {
        if let Some(cached) = self
            .segments
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
        {
            return cached.clone();
        }
        let filters = SegmentFilters::load(path).map(Arc::new);
        let added = filters.as_ref().map_or(0, |f| f.bytes);
        let previous = self
            .segments
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.to_path_buf(), filters.clone());
        let removed = previous.flatten().map_or(0, |f| f.bytes);
        self.bytes.fetch_add(added, Ordering::Relaxed);
        self.bytes.fetch_sub(removed, Ordering::Relaxed);
        filters
    }

    /// Reads a segment's filters into memory unless they are there already. Blocking.
    pub fn load(&self, path: &Path) {
        let _ = self.filters(path);
    }

    /// Whether the segment at `path` may hold rows of `trace_id` (lower-case hex). Reads the
    /// segment's filters first when they are not in memory. Blocking.
    pub fn may_contain(&self, path: &Path, trace_id: &str) -> bool {
        self.filters(path)
            .is_none_or(|filters| filters.may_contain(trace_id))
    }

    /// Drops the filters of segments that no longer exist.
    pub fn forget(&self, paths: &[PathBuf]) {
        let mut segments = self.segments.lock().unwrap_or_else(|e| e.into_inner());
        for path in paths {
            if let Some(Some(filters)) = segments.remove(path) {
                self.bytes.fetch_sub(filters.bytes, Ordering::Relaxed);
            }
        }
    }

    /// Memory held by the filters.
    pub fn memory_bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sightline_model::schema::{SpanRow, spans_to_batch};

    fn segment(dir: &Path, name: &str, trace_ids: &[String]) -> PathBuf {
        let rows: Vec<SpanRow> = trace_ids
            .iter()
            .enumerate()
            .map(|(i, t)| {
                SpanRow::new(
                    t.clone(),
                    format!("{i:016x}"),
                    "op",
                    "api",
                    i as i64,
                    i as i64 + 1,
                )
            })
            .collect();
        let path = dir.join(name);
        let batch = spans_to_batch(&rows).expect("rows");
        crate::segment::write_segment(&path, sightline_model::Table::Spans, &batch)
            .expect("segment");
        path
    }

    #[test]
    fn segments_without_the_trace_are_ruled_out_and_forgotten_filters_free_their_memory() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ids = |prefix: &str| -> Vec<String> {
            (0..2000).map(|i| format!("{prefix}{i:028x}")).collect()
        };
        let a = segment(dir.path(), "a.parquet", &ids("aaaa"));
        let b = segment(dir.path(), "b.parquet", &ids("bbbb"));
        let index = TraceIndex::default();
        let wanted = format!("aaaa{:028x}", 1234);
        assert!(index.may_contain(&a, &wanted));
        assert!(
            !index.may_contain(&b, &wanted),
            "a 1 % filter rules this one out"
        );
        let false_positives = ids("cccc")
            .iter()
            .filter(|id| index.may_contain(&a, id))
            .count();
        assert!(
            false_positives < 100,
            "{false_positives} of 2000 absent ids pass"
        );
        assert!(index.memory_bytes() > 0);
        index.forget(&[a.clone(), b.clone()]);
        assert_eq!(index.memory_bytes(), 0);
        // A file that is not a segment can hold anything: it is always scanned.
        let junk = dir.path().join("junk.parquet");
        std::fs::write(&junk, b"not parquet").expect("write");
        assert!(index.may_contain(&junk, &wanted));
    }
}
