//! What the monitor keeps as rows: an append-only file of JSON lines (synced before a write
//! returns; a last line cut short by a crash is skipped when read) and a table the query
//! engine reads from the rows held in memory. `alert_events` and `deploys` are both kept so.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Error;

/// The rows of `path`, each line one `T`; none when the file does not exist yet. Lines that do
/// not read as a `T` (a last line cut short by a crash) are skipped.
pub fn read_lines<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>, Error> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::State {
                path: path.into(),
                doing: "read",
                source,
            });
        }
    };
    let mut out = Vec::new();
    for line in BufReader::new(file).lines() {
        let line = line.map_err(|source| Error::State {
            path: path.into(),
            doing: "read",
            source,
        })?;
        if let Ok(row) = serde_json::from_str(&line) {
            out.push(row);
        }
    }
    Ok(out)
}

fn lines<T: Serialize>(rows: &[T]) -> Result<String, Error> {
    let mut text = String::new();
    for row in rows {
        text.push_str(&serde_json::to_string(row).map_err(|e| Error::Internal {
            message: e.to_string(),
        })?);
        text.push('\n');
    }
    Ok(text)
}

/// Appends `rows` to `path` as JSON lines and syncs the file before returning.
pub fn append_lines<T: Serialize>(path: &Path, rows: &[T]) -> Result<(), Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let io = |source| Error::State {
        path: path.into(),
        doing: "written",
        source,
    };
    let text = lines(rows)?;
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_data().map_err(io)
}

/// Replaces `path` with `rows` as JSON lines, whole or not at all.
pub fn rewrite_lines<T: Serialize>(path: &Path, rows: &[T]) -> Result<(), Error> {
    crate::store::write_durably(path, lines(rows)?.as_bytes())
}

/// Rows held in memory that can be read as one batch.
pub trait Rows: std::fmt::Debug + Send + Sync {
    /// Every row, as a batch of the table's schema.
    fn batch(&self) -> Result<RecordBatch, Error>;
}

/// A table of the query engine over [`Rows`]: each scan reads them as they are then.
#[derive(Debug)]
pub struct RowsTable {
    rows: Arc<dyn Rows>,
    schema: SchemaRef,
}

impl RowsTable {
    /// The table of `rows`, of `schema`.
    pub fn new(rows: Arc<dyn Rows>, schema: SchemaRef) -> Self {
        Self { rows, schema }
    }
}

#[async_trait]
impl TableProvider for RowsTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        // Filters are applied by DataFusion over the rows in memory.
        Ok(vec![
            TableProviderFilterPushDown::Unsupported;
            filters.len()
        ])
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let batch = self
            .rows
            .batch()
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        let source =
            MemorySourceConfig::try_new(&[vec![batch]], self.schema.clone(), projection.cloned())?
                .with_limit(limit);
        Ok(DataSourceExec::from_data_source(source))
    }
}
