//! The SQL engine: one DataFusion session over the stored tables (spans, logs, metrics,
//! span_rollups), with the JSON functions, a shared memory pool (no spilling to disk) that also
//! counts what expanding functions build and the answer's rows, a timeout, and caps on an
//! answer's rows and bytes. Queries pass the admission gate ([`crate::admission`]) and run on
//! their own runtime ([`crate::runtime`]). Only queries are accepted: DDL, DML, COPY and session
//! statements are refused before planning.

use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, MemoryReservation};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sightline_model::{ConfigError, HumanDuration, Table};
use sightline_storage::Store;

use crate::admission::{Admission, QueryClass};
use crate::error::Error;
use crate::json;
use crate::runtime::QueryRuntime;
use crate::table::StoredTable;

/// `[query]` of `sightline.toml`: bounds on what queries may use. Every key is optional.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryConfig {
    /// Memory all running queries share, in bytes; a query that needs more fails with a clear
    /// message (nothing spills to disk).
    pub memory_limit_bytes: usize,
    /// A query running longer than this is stopped. Above 0.
    pub timeout: HumanDuration,
    /// Rows returned to a client at most; the answer says when it was cut. At least 1.
    pub max_result_rows: usize,
    /// Bytes of JSON rows returned to a client at most; the answer says when it was cut. At
    /// least 1024.
    pub max_result_bytes: usize,
    /// Queries running at once (default: the number of cores); the rest wait. At least 1.
    pub max_concurrent: Option<usize>,
    /// Queries waiting for a slot at most, all callers together; more are refused (429).
    pub max_queued: usize,
    /// How long a query waits for a slot before it is refused (429).
    pub queue_timeout: HumanDuration,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            memory_limit_bytes: 1 << 30,
            timeout: HumanDuration::from_secs(30),
            max_result_rows: 10_000,
            max_result_bytes: 8 << 20,
            max_concurrent: None,
            max_queued: 64,
            queue_timeout: HumanDuration::from_secs(10),
        }
    }
}

impl QueryConfig {
    /// The table of `sightline.toml` these keys live in.
    pub const SECTION: &'static str = "query";

    /// Refuses bounds that would fail every query.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let key = |name: &str| format!("{}.{name}", Self::SECTION);
        if self.timeout.is_zero() {
            return Err(ConfigError::new(key("timeout"), "must be longer than 0s"));
        }
        if self.max_result_rows == 0 {
            return Err(ConfigError::new(
                key("max_result_rows"),
                "must be at least 1, not 0",
            ));
        }
        if self.memory_limit_bytes == 0 {
            return Err(ConfigError::new(
                key("memory_limit_bytes"),
                "must be more than 0 bytes, e.g. 1073741824 (1 GiB)",
            ));
        }
        if self.max_result_bytes < 1024 {
            return Err(ConfigError::new(
                key("max_result_bytes"),
                format!("must be at least 1024 bytes, not {}", self.max_result_bytes),
            ));
        }
        if self.max_concurrent == Some(0) {
            return Err(ConfigError::new(
                key("max_concurrent"),
                "must be at least 1, not 0",
            ));
        }
        Ok(())
    }

    /// Queries running at once: `max_concurrent`, else the number of cores.
    pub fn concurrent(&self) -> usize {
        self.max_concurrent.unwrap_or_else(cores)
    }
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

/// A column of a result: its name and its type as SQL users read it.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnInfo {
    /// The column's name in the result.
    pub name: String,
    /// The SQL type name ([`sql_type_name`]); serialized as `type`.
    #[serde(rename = "type")]
    pub data_type: String,
}

/// The answer of `POST /api/v1/query`.
#[derive(Debug, Clone, Serialize)]
pub struct QueryResult {
    /// The result's columns, in order.
    pub columns: Vec<ColumnInfo>,
    /// Each row as a JSON array of cells in column order; at most `max_result_rows`.
    pub rows: Vec<Value>,
    /// Wall time `execute` took, from planning to the JSON rows, in milliseconds.
    pub elapsed_ms: f64,
    /// True when more rows matched than were returned.
    pub truncated: bool,
    /// Which limit cut the answer: `max_result_rows` or `max_result_bytes`; absent when whole.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated_by: Option<&'static str>,
    /// The answer's rows, counted in the query memory pool until the answer is dropped.
    #[serde(skip)]
    _reservation: Option<Arc<MemoryReservation>>,
}

/// Read-only SQL over a [`Store`]. Clones share the session, the memory pool, the admission
/// gate and the runtime; each asks as its [`QueryClass`].
#[derive(Clone)]
pub struct QueryEngine {
    ctx: SessionContext,
    config: QueryConfig,
    store: Store,
    pool: Arc<dyn MemoryPool>,
    admission: Admission,
    class: QueryClass,
    runtime: Arc<QueryRuntime>,
}

impl std::fmt::Debug for QueryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryEngine")
            .field("config", &self.config)
            .finish()
    }
}

impl QueryEngine {
    /// A session over `store`'s tables under `config`'s bounds.
    pub fn new(store: Store, config: QueryConfig) -> Result<Self, Error> {
        let internal = |e: datafusion::error::DataFusionError| Error::Internal {
            message: e.to_string(),
        };
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(config.memory_limit_bytes, 1.0)
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .build_arc()
            .map_err(internal)?;
        let session = SessionConfig::new()
            .with_information_schema(true)
            .set_bool("datafusion.execution.parquet.pushdown_filters", true)
            .set_bool("datafusion.execution.parquet.reorder_filters", true);
        let pool = runtime.memory_pool.clone();
        let state = SessionStateBuilder::new()
            .with_config(session)
            .with_runtime_env(runtime)
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(crate::cooperative::YieldingJoins))
            .build();
        let mut ctx = SessionContext::new_with_state(state);
        datafusion_functions_json::register_all(&mut ctx).map_err(internal)?;
        crate::bounded::register(&ctx, pool.clone());
        crate::mask::register(&ctx);
        crate::quality::register(&ctx);
        for table in Table::ALL {
            ctx.register_table(
                table.name(),
                Arc::new(StoredTable::new(table, store.clone())),
            )
            .map_err(internal)?;
        }
        let admission = Admission::new(
            config.concurrent(),
            config.max_queued,
            config.queue_timeout.as_std(),
        );
        let runtime = QueryRuntime::new(cores()).map_err(|e| Error::Internal {
            message: format!("the query runtime could not start: {e}"),
        })?;
        Ok(Self {
            ctx,
            config,
            store,
            pool,
            admission,
            class: QueryClass::Api,
            runtime: Arc::new(runtime),
        })
    }

    /// The same engine asking as `class` (the API's by default).
    pub fn for_class(&self, class: QueryClass) -> Self {
        Self {
            class,
            ..self.clone()
        }
    }

    /// The gate queries pass: running and waiting queries.
    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    /// Bytes the query memory pool has given out now.
    pub fn memory_reserved(&self) -> usize {
        self.pool.reserved()
    }

    /// Whether `span_rollups` counts every stored span (see [`Store::rollups_complete`]);
    /// until then the pages read `spans`.
    pub fn rollups_complete(&self) -> bool {
        self.store.rollups_complete()
    }

    /// The end of the newest sampled hour of spans (see [`Store::sampled_before_ns`]): before
    /// it, `spans` is a sample and counts come from `span_rollups`.
    pub fn sampled_before_ns(&self) -> Option<i64> {
        self.store.sampled_before_ns()
    }

    /// Where the stored spans begin (see [`Store::oldest_span_ns`]).
    pub fn oldest_span_ns(&self) -> Option<i64> {
        self.store.oldest_span_ns()
    }

    /// A signature of the stored spans, logs and metrics of each hour starting at `hours_ns`:
    /// the rows and newest id of the segments holding the hour, and the buffered rows of the
    /// hour. It changes when rows of the hour arrive, are flushed,
    /// compacted, sampled or expire, and stays put while other hours change, so a summary of
    /// an hour is made again only when its data changed.
    pub fn hour_signatures(&self, hours_ns: &[i64]) -> Vec<String> {
        const HOUR_NS: i64 = 3_600_000_000_000;
        let segments = self.store.segments();
        let mut per_table = Vec::new();
        for table in [Table::Spans, Table::Logs, Table::Metrics] {
            // Buffered rows per hour: a batch may hold rows of many hours (a late record beside
            // today's), and only the hours it holds rows of should change.
            let snapshot = self
                .store
                .snapshot(table, sightline_model::TimeRange::default());
            let mut buffered: std::collections::HashMap<i64, usize> = Default::default();
            for batch in &snapshot.batches {
                let Some(column) = batch.column_by_name(table.time_column()) else {
                    continue;
                };
                let Ok(ns) = arrow::compute::cast(column, &arrow::datatypes::DataType::Int64)
                else {
                    continue;
                };
                let Some(ns) =
                    arrow::array::AsArray::as_primitive_opt::<arrow::datatypes::Int64Type>(&ns)
                else {
                    continue;
                };
                for t in ns.iter().flatten() {
                    *buffered.entry(t.div_euclid(HOUR_NS) * HOUR_NS).or_default() += 1;
                }
            }
            per_table.push((table, buffered));
        }
        hours_ns
            .iter()
            .map(|&hour| {
                let end = hour + HOUR_NS;
                per_table
                    .iter()
                    .map(|(table, bounds)| {
                        let (mut rows, mut newest) = (0i64, 0i64);
                        for s in segments.iter().filter(|s| {
                            s.table == *table && s.min_time_ns < end && s.max_time_ns >= hour
                        }) {
                            rows += s.row_count;
                            newest = newest.max(s.id);
                        }
                        let buffered = bounds.get(&hour).copied().unwrap_or(0);
                        format!("{rows}:{newest}:{buffered}")
                    })
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .collect()
    }

    /// The rows of `sql` (at most `max_rows`) as objects keyed by column name, for the fixed
    /// questions that read their answers by name.
    pub async fn objects(
        &self,
        sql: &str,
        max_rows: usize,
    ) -> Result<Vec<serde_json::Map<String, Value>>, Error> {
        let (_, batches, _) = self.collect(sql, max_rows).await?;
        Ok(batches
            .iter()
            .flat_map(|b| json::batch_objects(b, &[]))
            .collect())
    }

    /// The bounds queries run under.
    pub fn config(&self) -> &QueryConfig {
        &self.config
    }

    /// Runs one read-only statement and returns its rows as JSON, at most `max_result_rows`
    /// rows and `max_result_bytes` bytes (the answer says which cut it).
    pub async fn execute(&self, sql: &str) -> Result<QueryResult, Error> {
        self.admitted(sql, |engine, sql| async move { engine.answer(&sql).await })
            .await
    }

    /// Runs one read-only statement and returns its batches, at most `max_rows` rows (and
    /// whether more matched).
    pub async fn collect(
        &self,
        sql: &str,
        max_rows: usize,
    ) -> Result<(SchemaRef, Vec<RecordBatch>, bool), Error> {
        self.admitted(sql, move |engine, sql| async move {
            engine.batches(&sql, max_rows).await
        })
        .await
    }

    /// Runs `work` once the gate admits this engine's class, on the queries' runtime, within
    /// the timeout. The clock runs here, not on the queries' busy threads: the answer comes on
    /// time, and the query is stopped as it does. The slot goes with the query: it is free
    /// again only once the query has stopped.
    async fn admitted<T, F, Fut>(&self, sql: &str, work: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(QueryEngine, String) -> Fut,
        Fut: std::future::Future<Output = Result<T, Error>> + Send + 'static,
    {
        let slot = self.admission.admit(self.class).await?;
        let running = work(self.clone(), sql.to_string());
        let work = self.runtime.run(async move {
            let _slot = slot;
            running.await
        });
        match tokio::time::timeout(self.config.timeout.as_std(), work).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout {
                limit_ms: self.config.timeout.as_std().as_millis() as u64,
            }),
        }
    }

    fn df_error(&self, error: datafusion::error::DataFusionError) -> Error {
        Error::from_datafusion(error, self.config.memory_limit_bytes)
    }

    fn memory_error(&self) -> Error {
        Error::MemoryLimit {
            limit_bytes: self.config.memory_limit_bytes,
        }
    }

    /// Adds a table that another part of the server keeps (the monitor's `alert_events`):
    /// every clone of this engine sees it. A name already taken is refused.
    pub fn register_table(
        &self,
        name: &str,
        table: Arc<dyn datafusion::catalog::TableProvider>,
    ) -> Result<(), Error> {
        if self.ctx.table_exist(name).unwrap_or(false) {
            return Err(Error::Internal {
                message: format!("a table named {name} is registered already"),
            });
        }
        self.ctx
            .register_table(name, table)
            .map(|_| ())
            .map_err(|e| Error::Internal {
                message: e.to_string(),
            })
    }

    /// The columns `sql` would answer with, without running it: for checking configured
    /// queries at start. Refuses what [`QueryEngine::execute`] refuses (not read-only, bad SQL).
    pub async fn plan_columns(&self, sql: &str) -> Result<SchemaRef, Error> {
        let plan = self.plan(sql).await?;
        Ok(Arc::new(plan.schema().as_arrow().clone()))
    }

    /// Parses and plans one statement, refusing anything but a query.
    async fn plan(&self, sql: &str) -> Result<datafusion::logical_expr::LogicalPlan, Error> {
        let df_err = |e| self.df_error(e);
        let state = self.ctx.state();
        let dialect = state.config().options().sql_parser.dialect;
        let statement = state.sql_to_statement(sql, &dialect).map_err(df_err)?;
        check_read_only(&statement)?;
        let plan = state.statement_to_plan(statement).await.map_err(df_err)?;
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
            .verify_plan(&plan)
            .map_err(|e| Error::ReadOnly {
                statement: e.message().to_string(),
            })?;
        Ok(plan)
    }

    /// Plans one read-only statement and starts it.
    async fn stream(&self, sql: &str) -> Result<(SchemaRef, SendableRecordBatchStream), Error> {
        let df_err = |e| self.df_error(e);
        let plan = self.plan(sql).await?;
        let frame = self.ctx.execute_logical_plan(plan).await.map_err(df_err)?;
        let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
        let stream = frame.execute_stream().await.map_err(df_err)?;
        Ok((schema, stream))
    }

    /// The rows of `sql` as JSON, within the answer's limits, counted in the memory pool.
    async fn answer(&self, sql: &str) -> Result<QueryResult, Error> {
        let started = Instant::now();
        let df_err = |e| self.df_error(e);
        let (schema, mut stream) = self.stream(sql).await?;
        let reservation = MemoryConsumer::new("query answer").register(&self.pool);
        let (max_rows, max_bytes) = (self.config.max_result_rows, self.config.max_result_bytes);
        let mut rows = Vec::new();
        // `{"rows":[` and the rest of the answer around the rows.
        let mut bytes = 256usize;
        let mut truncated_by = None;
        'batches: while let Some(batch) = stream.next().await {
            let batch = batch.map_err(df_err)?;
            for row in 0..batch.num_rows() {
                if rows.len() >= max_rows {
                    truncated_by = Some("max_result_rows");
                    break 'batches;
                }
                // Text cells alone say a row is too large before it is copied into JSON.
                let at_least = json::row_text_bytes(&batch, row);
                let value = (bytes + at_least < max_bytes).then(|| json::row(&batch, row));
                let size = value
                    .as_ref()
                    .map_or(at_least, |value| json::encoded_len(value) + 1);
                let Some(value) = value.filter(|_| bytes + size <= max_bytes) else {
                    if rows.is_empty() {
                        return Err(Error::RowTooLarge {
                            row_bytes: size,
                            limit_bytes: max_bytes,
                        });
                    }
                    truncated_by = Some("max_result_bytes");
                    break 'batches;
                };
                // JSON values take about twice their text in memory.
                reservation
                    .try_grow(2 * size)
                    .map_err(|_| self.memory_error())?;
                bytes += size;
                rows.push(value);
            }
        }
        let columns = schema
            .fields()
            .iter()
            .map(|f| ColumnInfo {
                name: f.name().clone(),
                data_type: sql_type_name(f.data_type()),
            })
            .collect();
        Ok(QueryResult {
            columns,
            rows,
            elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
            truncated: truncated_by.is_some(),
            truncated_by,
            _reservation: Some(Arc::new(reservation)),
        })
    }

    /// The batches of `sql`, at most `max_rows` rows, counted in the memory pool while they
    /// are gathered.
    async fn batches(
        &self,
        sql: &str,
        max_rows: usize,
    ) -> Result<(SchemaRef, Vec<RecordBatch>, bool), Error> {
        let df_err = |e| self.df_error(e);
        let (schema, mut stream) = self.stream(sql).await?;
        let reservation = MemoryConsumer::new("query batches").register(&self.pool);
        let mut batches = Vec::new();
        let mut rows = 0usize;
        let mut truncated = false;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(df_err)?;
            reservation
                .try_grow(batch.get_array_memory_size())
                .map_err(|_| self.memory_error())?;
            if rows + batch.num_rows() > max_rows {
                batches.push(batch.slice(0, max_rows - rows));
                truncated = true;
                break;
            }
            rows += batch.num_rows();
            batches.push(batch);
        }
        Ok((schema, batches, truncated))
    }
}

/// Accepts queries (and EXPLAIN of queries) only.
fn check_read_only(statement: &DFStatement) -> Result<(), Error> {
    let refuse = |what: &str| {
        Err(Error::ReadOnly {
            statement: what.to_string(),
        })
    };
    match statement {
        DFStatement::Statement(inner) => match inner.as_ref() {
            SqlStatement::Query(_) => Ok(()),
            SqlStatement::Explain { statement, .. } => match statement.as_ref() {
                SqlStatement::Query(_) => Ok(()),
                other => refuse(&statement_keyword(other)),
            },
            other => refuse(&statement_keyword(other)),
        },
        DFStatement::Explain(explain) => check_read_only(&explain.statement),
        DFStatement::CreateExternalTable(_) => refuse("CREATE EXTERNAL TABLE"),
        DFStatement::CopyTo(_) => refuse("COPY"),
        DFStatement::Reset(_) => refuse("RESET"),
    }
}

/// The leading words of a statement (`INSERT`, `CREATE TABLE`), for messages.
fn statement_keyword(statement: &SqlStatement) -> String {
    let text = statement.to_string();
    let words: Vec<&str> = text.split_whitespace().take(2).collect();
    match words.as_slice() {
        [first, second]
            if matches!(
                first.to_ascii_uppercase().as_str(),
                "CREATE" | "DROP" | "ALTER"
            ) =>
        {
            format!(
                "{} {}",
                first.to_ascii_uppercase(),
                second.to_ascii_uppercase()
            )
        }
        [first, ..] => first.to_ascii_uppercase(),
        [] => "empty".to_string(),
    }
}

/// A type name as SQL users know it.
pub fn sql_type_name(data_type: &arrow::datatypes::DataType) -> String {
    use arrow::datatypes::DataType as T;
    match data_type {
        T::Boolean => "boolean".into(),
        T::Int8 | T::Int16 | T::Int32 | T::UInt8 | T::UInt16 => "integer".into(),
        T::Int64 | T::UInt32 | T::UInt64 => "bigint".into(),
        T::Float16 | T::Float32 | T::Float64 => "double".into(),
        T::Utf8 | T::LargeUtf8 | T::Utf8View => "text".into(),
        T::Timestamp(_, _) => "timestamp".into(),
        T::Date32 | T::Date64 => "date".into(),
        T::List(f) | T::LargeList(f) => format!("{}[]", sql_type_name(f.data_type())),
        T::Null => "null".into(),
        other => other.to_string().to_lowercase(),
    }
}
