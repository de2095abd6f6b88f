//! The table provider of one stored table: buffered rows from memory plus the Parquet segments
//! whose time range can match, with the query's filters pushed into the Parquet scan for
//! pruning.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::catalog::TableProvider;
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::parquet::CachedParquetFileReaderFactory;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::union::UnionExec;
use sightline_model::schema::schema_for;
use sightline_model::{Table, TimeRange};
use sightline_storage::Store;

/// One of the store's tables (`spans`, `logs`, `metrics`, `span_rollups`), read from a
/// [`Store`].
#[derive(Debug)]
pub struct StoredTable {
    table: Table,
    store: Store,
    schema: SchemaRef,
}

impl StoredTable {
    /// The provider of `table`.
    pub fn new(table: Table, store: Store) -> Self {
        Self {
            table,
            store,
            schema: schema_for(table),
        }
    }
}

#[async_trait]
impl TableProvider for StoredTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Filters prune segments and row groups; DataFusion still applies them to every row.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let ranges = time_ranges_from_filters(filters, self.table.time_column());
        let mut snapshot = self.store.snapshot(self.table, hull(&ranges));
        // A disjunction of windows (`t >= a AND t < b OR t >= c AND t < d`) opens only the
        // segments that overlap one of them.
        snapshot.segments.retain(|(meta, _)| {
            ranges
                .iter()
                .any(|r| r.overlaps(meta.min_time_ns, meta.max_time_ns))
        });
        if let Some(trace_id) = trace_id_from_filters(filters)
            && self.schema.index_of("trace_id").is_ok()
        {
            // Only segments whose trace-id filters may hold the trace are opened.
            let store = self.store.clone();
            let segments = std::mem::take(&mut snapshot.segments);
            snapshot.segments =
                tokio::task::spawn_blocking(move || store.segments_with_trace(segments, &trace_id))
                    .await
                    .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        }
        let partitions = state.config().target_partitions().max(1);
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();

        if !snapshot.batches.is_empty() {
            let mut parts: Vec<Vec<_>> = vec![Vec::new(); partitions.min(snapshot.batches.len())];
            for (i, batch) in snapshot.batches.into_iter().enumerate() {
                let n = parts.len();
                parts[i % n].push(batch);
            }
            let memory =
                MemorySourceConfig::try_new(&parts, self.schema.clone(), projection.cloned())?
                    .with_limit(limit);
            inputs.push(DataSourceExec::from_data_source(memory));
        }

        if !snapshot.segments.is_empty() {
            let mut groups: Vec<Vec<PartitionedFile>> =
                vec![Vec::new(); partitions.min(snapshot.segments.len())];
            for (i, (meta, path)) in snapshot.segments.iter().enumerate() {
                let n = groups.len();
                groups[i % n].push(PartitionedFile::new(
                    path.to_string_lossy().to_string(),
                    meta.size_bytes as u64,
                ));
            }
            // Footers and page indexes stay in DataFusion's metadata cache between queries
            // (segments never change once written), so a query pays for opening only the
            // segments it has not read before.
            let runtime = state.runtime_env();
            let files = runtime.object_store(ObjectStoreUrl::local_filesystem())?;
            let reader_factory = CachedParquetFileReaderFactory::new(
                files,
                runtime.cache_manager.get_file_metadata_cache(),
            );
            let mut source = ParquetSource::new(self.schema.clone())
                .with_parquet_file_reader_factory(Arc::new(reader_factory));
            if let Some(predicate) = conjunction(filters.iter().cloned()) {
                let df_schema = DFSchema::try_from(self.schema.as_ref().clone())?;
                let predicate = state.create_physical_expr(predicate, &df_schema)?;
                source = source.with_predicate(predicate);
            }
            let config =
                FileScanConfigBuilder::new(ObjectStoreUrl::local_filesystem(), Arc::new(source))
                    .with_file_groups(groups.into_iter().map(FileGroup::new).collect())
                    .with_projection_indices(projection.cloned())?
                    .with_limit(limit)
                    .build();
            inputs.push(DataSourceExec::from_data_source(config));
        }

        match inputs.len() {
            0 => {
                let projected = match projection {
                    Some(p) => Arc::new(self.schema.project(p)?),
                    None => self.schema.clone(),
                };
                Ok(Arc::new(EmptyExec::new(projected)))
            }
            _ => UnionExec::try_new(inputs),
        }
    }
}

/// The time range that filters on `column` (comparisons with literals, BETWEEN, AND) allow.
pub fn time_range_from_filters(filters: &[Expr], column: &str) -> TimeRange {
    hull(&time_ranges_from_filters(filters, column))
}

/// Most windows a disjunction is read as before it counts as one window spanning them all.
const MAX_RANGES: usize = 64;

/// The time windows that can hold matching rows: a union (filters combined with OR become
/// several windows; AND intersects them). Never empty: a filter that says nothing of time is
/// [`TimeRange::ALL`]; a contradiction is an empty window.
pub fn time_ranges_from_filters(filters: &[Expr], column: &str) -> Vec<TimeRange> {
    filters.iter().fold(vec![TimeRange::ALL], |ranges, f| {
        intersect_all(&ranges, &ranges_of(f, column))
    })
}

/// The smallest window holding every window of a union.
pub fn hull(ranges: &[TimeRange]) -> TimeRange {
    let mut out: Option<TimeRange> = None;
    for r in ranges {
        out = Some(match out {
            None => *r,
            Some(o) => TimeRange::new(
                o.start_ns.zip(r.start_ns).map(|(a, b)| a.min(b)),
                o.end_ns.zip(r.end_ns).map(|(a, b)| a.max(b)),
            ),
        });
    }
    out.unwrap_or(TimeRange::ALL)
}

fn intersect_all(left: &[TimeRange], right: &[TimeRange]) -> Vec<TimeRange> {
    let mut out: Vec<TimeRange> = left
        .iter()
        .flat_map(|l| right.iter().map(move |r| l.intersect(r)))
        .collect();
    if out.len() > MAX_RANGES {
        out = vec![hull(&out)];
    }
    out
}

fn ranges_of(expr: &Expr, column: &str) -> Vec<TimeRange> {
    match expr {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::And,
            right,
        }) => intersect_all(&ranges_of(left, column), &ranges_of(right, column)),
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Or,
            right,
        }) => {
            let mut out = ranges_of(left, column);
            out.extend(ranges_of(right, column));
            if out.contains(&TimeRange::ALL) {
                return vec![TimeRange::ALL];
            }
            if out.len() > MAX_RANGES {
                out = vec![hull(&out)];
            }
            out
        }
        other => vec![range_of(other, column)],
    }
}

/// The window one comparison (or BETWEEN) of the time column allows; conjunctions and
/// disjunctions are read by [`ranges_of`].
fn range_of(expr: &Expr, column: &str) -> TimeRange {
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (op, value) = if is_column(left, column) {
                (*op, literal_ns(right))
            } else if is_column(right, column) {
                match op.swap() {
                    Some(swapped) => (swapped, literal_ns(left)),
                    None => return TimeRange::ALL,
                }
            } else {
                return TimeRange::ALL;
            };
            let Some(ns) = value else {
                return TimeRange::ALL;
            };
            match op {
                Operator::Gt | Operator::GtEq => TimeRange::new(Some(ns), None),
                Operator::Lt => TimeRange::new(None, Some(ns)),
                Operator::LtEq => TimeRange::new(None, Some(ns.saturating_add(1))),
                Operator::Eq => TimeRange::new(Some(ns), Some(ns.saturating_add(1))),
                _ => TimeRange::ALL,
            }
        }
        Expr::Between(Between {
            expr,
            negated: false,
            low,
            high,
        }) if is_column(expr, column) => TimeRange::new(
            literal_ns(low),
            literal_ns(high).map(|h| h.saturating_add(1)),
        ),
        _ => TimeRange::ALL,
    }
}

fn is_column(expr: &Expr, column: &str) -> bool {
    match expr {
        Expr::Column(c) => c.name == column,
        // A cast to a coarser unit (seconds, dates) makes `=` and `<` mean whole seconds or
        // days: only casts that keep every nanosecond stand for the column.
        Expr::Cast(cast) => {
            keeps_nanoseconds(cast.field.data_type()) && is_column(&cast.expr, column)
        }
        Expr::TryCast(cast) => {
            keeps_nanoseconds(cast.field.data_type()) && is_column(&cast.expr, column)
        }
        _ => false,
    }
}

fn keeps_nanoseconds(data_type: &datafusion::arrow::datatypes::DataType) -> bool {
    use datafusion::arrow::datatypes::{DataType, TimeUnit};
    matches!(
        data_type,
        DataType::Timestamp(TimeUnit::Nanosecond, _) | DataType::Int64
    )
}

/// The trace id a conjunction of filters pins (`trace_id = 'literal'`), lower-cased as stored.
pub fn trace_id_from_filters(filters: &[Expr]) -> Option<String> {
    filters.iter().find_map(trace_id_of)
}

fn trace_id_of(expr: &Expr) -> Option<String> {
    match expr {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) => {
            let (column, value) = if is_column(left, "trace_id") {
                (left, right)
            } else {
                (right, left)
            };
            if !is_column(column, "trace_id") {
                return None;
            }
            match value.as_ref() {
                Expr::Literal(
                    ScalarValue::Utf8(Some(v))
                    | ScalarValue::Utf8View(Some(v))
                    | ScalarValue::LargeUtf8(Some(v)),
                    _,
                ) => Some(v.clone()),
                _ => None,
            }
        }
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::And,
            right,
        }) => trace_id_of(left).or_else(|| trace_id_of(right)),
        _ => None,
    }
}

fn literal_ns(expr: &Expr) -> Option<i64> {
    let value = match expr {
        Expr::Literal(value, _) => value.clone(),
        Expr::Cast(cast) => match cast.expr.as_ref() {
            Expr::Literal(value, _) => value.cast_to(cast.field.data_type()).ok()?,
            _ => return None,
        },
        _ => return None,
    };
    match value {
        ScalarValue::TimestampNanosecond(v, _) => v,
        ScalarValue::TimestampMicrosecond(v, _) => v.map(|v| v.saturating_mul(1_000)),
        ScalarValue::TimestampMillisecond(v, _) => v.map(|v| v.saturating_mul(1_000_000)),
        ScalarValue::TimestampSecond(v, _) => v.map(|v| v.saturating_mul(1_000_000_000)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{col, lit};

    fn ts(ns: i64) -> Expr {
        lit(ScalarValue::TimestampNanosecond(
            Some(ns),
            Some("UTC".into()),
        ))
    }

    #[test]
    fn time_range_reads_comparisons_between_and_conjunctions() {
        let filters = vec![
            col("start_time").gt_eq(ts(100)),
            ts(500).gt(col("start_time")),
        ];
        assert_eq!(
            time_range_from_filters(&filters, "start_time"),
            TimeRange::new(Some(100), Some(500))
        );
        let between = col("time").between(ts(10), ts(20));
        assert_eq!(
            time_range_from_filters(&[between], "time"),
            TimeRange::new(Some(10), Some(21))
        );
        let both = col("time").gt(ts(5)).and(col("time").lt_eq(ts(9)));
        assert_eq!(
            time_range_from_filters(&[both], "time"),
            TimeRange::new(Some(5), Some(10))
        );
    }

    #[test]
    fn time_range_ignores_other_columns_and_disjunctions() {
        let other = col("end_time").gt(ts(100));
        let either = col("time").gt(ts(5)).or(col("time").lt(ts(2)));
        assert_eq!(
            time_range_from_filters(&[other], "start_time"),
            TimeRange::ALL
        );
        assert_eq!(time_range_from_filters(&[either], "time"), TimeRange::ALL);
    }

    #[test]
    fn a_cast_to_a_coarser_unit_says_nothing_of_the_range() {
        use datafusion::arrow::datatypes::{DataType, TimeUnit};
        let seconds =
            datafusion::prelude::cast(col("time"), DataType::Timestamp(TimeUnit::Second, None));
        let filter = seconds.eq(lit(ScalarValue::TimestampSecond(Some(10), None)));
        assert_eq!(time_range_from_filters(&[filter], "time"), TimeRange::ALL);
        let nanos =
            datafusion::prelude::cast(col("time"), DataType::Timestamp(TimeUnit::Nanosecond, None));
        assert_eq!(
            time_range_from_filters(&[nanos.gt_eq(ts(100))], "time"),
            TimeRange::new(Some(100), None)
        );
    }

    #[test]
    fn time_ranges_read_a_disjunction_of_windows() {
        let window = |a, b| col("time").gt_eq(ts(a)).and(col("time").lt(ts(b)));
        let filters = vec![
            col("time").gt_eq(ts(0)),
            window(10, 20).or(window(50, 60)).or(window(90, 95)),
        ];
        let ranges = time_ranges_from_filters(&filters, "time");
        assert_eq!(
            ranges,
            vec![
                TimeRange::new(Some(10), Some(20)),
                TimeRange::new(Some(50), Some(60)),
                TimeRange::new(Some(90), Some(95)),
            ]
        );
        assert_eq!(hull(&ranges), TimeRange::new(Some(10), Some(95)));
        let open = window(10, 20).or(col("service_name").eq(lit("x")));
        assert_eq!(
            time_ranges_from_filters(&[open], "time"),
            vec![TimeRange::ALL]
        );
        assert_eq!(
            time_ranges_from_filters(&[col("service_name").eq(lit("x"))], "time"),
            vec![TimeRange::ALL]
        );
    }
}
