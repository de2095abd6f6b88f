//! The catalog: which segments exist, with each one's signal, time range, row count and size,
//! and the write-ahead log checkpoint. A local SQLite file, changed only in transactions so that
//! a crash leaves either the old or the new list.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, params};
use sightline_model::Table;

use crate::error::{Error, Result};

/// One Parquet segment as the catalog lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentMeta {
    /// The catalog's id (0 until committed); ids only grow.
    pub id: i64,
    /// The table whose rows it holds.
    pub table: Table,
    /// Path relative to the data folder.
    pub path: String,
    /// The earliest row's time (the table's time column).
    pub min_time_ns: i64,
    /// The latest row's time.
    pub max_time_ns: i64,
    /// Rows it holds.
    pub row_count: i64,
    /// Its file's size.
    pub size_bytes: i64,
    /// When it was written (the store's clock).
    pub created_ns: i64,
    /// 0 for a segment written by a flush; one more than its inputs' for a compacted one.
    pub level: i64,
    /// True for a span segment rewritten by tail sampling (its rows are a sample).
    pub sampled: bool,
}

/// The catalog file and its connection.
#[derive(Debug)]
pub struct Catalog {
    path: PathBuf,
    conn: Connection,
}

impl Catalog {
    /// Opens (or creates) the catalog file.
    pub fn open(path: &Path) -> Result<Self> {
        let err = |source| Error::Catalog {
            path: path.into(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS segments (
               id INTEGER PRIMARY KEY AUTOINCREMENT,
               signal TEXT NOT NULL,
               path TEXT NOT NULL UNIQUE,
               min_time_ns INTEGER NOT NULL,
               max_time_ns INTEGER NOT NULL,
               row_count INTEGER NOT NULL,
               size_bytes INTEGER NOT NULL,
               created_ns INTEGER NOT NULL,
               level INTEGER NOT NULL DEFAULT 0
             );
             CREATE INDEX IF NOT EXISTS segments_by_time ON segments(signal, min_time_ns);
             CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS trace_decisions (
               hour_ns INTEGER NOT NULL,
               trace_id TEXT NOT NULL,
               keep INTEGER NOT NULL,
               rate REAL NOT NULL,
               PRIMARY KEY (hour_ns, trace_id)
             );
             CREATE TABLE IF NOT EXISTS sampling_stats (
               service TEXT PRIMARY KEY,
               traces_seen INTEGER NOT NULL,
               traces_kept INTEGER NOT NULL
             );",
        )
        .map_err(err)?;
        // Folders written before sampling existed: their segments are all unsampled.
        let has_sampled: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('segments') WHERE name = 'sampled'")
            .and_then(|mut s| s.exists([]))
            .map_err(err)?;
        if !has_sampled {
            conn.execute_batch(
                "ALTER TABLE segments ADD COLUMN sampled INTEGER NOT NULL DEFAULT 0;",
            )
            .map_err(err)?;
        }
        Ok(Self {
            path: path.into(),
            conn,
        })
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> Error + '_ {
        move |source| Error::Catalog {
            path: self.path.clone(),
            source,
        }
    }

    /// The first log file whose rows are not yet all in segments.
    pub fn wal_checkpoint(&self) -> Result<u64> {
        let value: Option<i64> = self
            .conn
            .query_row(
                "SELECT value FROM state WHERE key = 'wal_checkpoint'",
                [],
                |r| r.get(0),
            )
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                other => Err(other),
            })
            .map_err(self.err())?;
        Ok(value.map(|v| v as u64).unwrap_or(0))
    }

    /// Every segment listed, by table, time and id.
    pub fn segments(&self) -> Result<Vec<SegmentMeta>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, signal, path, min_time_ns, max_time_ns, row_count, size_bytes, created_ns, level, sampled
                 FROM segments ORDER BY signal, min_time_ns, id",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| {
                let signal: String = r.get(1)?;
                Ok((
                    signal,
                    SegmentMeta {
                        id: r.get(0)?,
                        table: Table::Spans,
                        path: r.get(2)?,
                        min_time_ns: r.get(3)?,
                        max_time_ns: r.get(4)?,
                        row_count: r.get(5)?,
                        size_bytes: r.get(6)?,
                        created_ns: r.get(7)?,
                        level: r.get(8)?,
                        sampled: r.get::<_, i64>(9)? != 0,
                    },
                ))
            })
            .map_err(self.err())?;
        let mut out = Vec::new();
        for row in rows {
            let (signal, mut meta) = row.map_err(self.err())?;
            // A row with an unknown table was written by a newer version; leave it alone.
            if let Some(table) = Table::from_name(&signal) {
                meta.table = table;
                out.push(meta);
            }
        }
        Ok(out)
    }

    /// In one transaction: adds `added`, removes the segments with ids in `removed`, and
    /// optionally moves the log checkpoint. Returns the added segments with their ids.
    pub fn commit(
        &mut self,
        added: Vec<SegmentMeta>,
        removed: &[i64],
        wal_checkpoint: Option<u64>,
    ) -> Result<Vec<SegmentMeta>> {
        let state: Vec<(&str, i64)> = wal_checkpoint
            .map(|seq| ("wal_checkpoint", seq as i64))
            .into_iter()
            .collect();
        self.commit_with_state(added, removed, &state)
    }

    /// A value of the `state` table (the log checkpoint, which derived tables are complete).
    pub fn state(&self, key: &str) -> Result<Option<i64>> {
        self.conn
            .query_row(
                "SELECT value FROM state WHERE key = ?1",
                params![key],
                |r| r.get(0),
            )
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                other => Err(other),
            })
            .map_err(self.err())
    }

    /// Removes a key of the `state` table (as a folder of an older version never had it).
    pub fn remove_state(&mut self, key: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM state WHERE key = ?1", params![key])
            .map_err(self.err())?;
        Ok(())
    }

    /// Like [`Catalog::commit`], setting keys of the `state` table in the same transaction.
    pub fn commit_with_state(
        &mut self,
        added: Vec<SegmentMeta>,
        removed: &[i64],
        state: &[(&str, i64)],
    ) -> Result<Vec<SegmentMeta>> {
        let path = self.path.clone();
        let err = |source| Error::Catalog {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        let out = replace_in(&tx, added, removed).map_err(err)?;
        for (key, value) in state {
            tx.execute(
                "INSERT INTO state (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(out)
    }
}

/// Inserts `added` and deletes `removed` within a transaction; returns `added` with ids.
fn replace_in(
    tx: &rusqlite::Transaction<'_>,
    added: Vec<SegmentMeta>,
    removed: &[i64],
) -> rusqlite::Result<Vec<SegmentMeta>> {
    let mut out = Vec::with_capacity(added.len());
    for mut meta in added {
        tx.execute(
            "INSERT INTO segments (signal, path, min_time_ns, max_time_ns, row_count, size_bytes, created_ns, level, sampled)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                meta.table.name(),
                meta.path,
                meta.min_time_ns,
                meta.max_time_ns,
                meta.row_count,
                meta.size_bytes,
                meta.created_ns,
                meta.level,
                i64::from(meta.sampled)
            ],
        )?;
        meta.id = tx.last_insert_rowid();
        out.push(meta);
    }
    for id in removed {
        tx.execute("DELETE FROM segments WHERE id = ?1", params![id])?;
    }
    Ok(out)
}

impl Catalog {
    /// The decisions recorded for traces of the hour starting at `hour_ns` (by the sampling of
    /// the hour before, for the traces that went on into this one).
    pub fn trace_decisions(
        &self,
        hour_ns: i64,
    ) -> Result<std::collections::HashMap<String, crate::sampling::Decision>> {
        let mut stmt = self
            .conn
            .prepare("SELECT trace_id, keep, rate FROM trace_decisions WHERE hour_ns = ?1")
            .map_err(self.err())?;
        let rows = stmt
            .query_map(params![hour_ns], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    crate::sampling::Decision {
                        keep: r.get::<_, i64>(1)? != 0,
                        rate: r.get(2)?,
                    },
                ))
            })
            .map_err(self.err())?;
        rows.collect::<rusqlite::Result<_>>().map_err(self.err())
    }

    /// In one transaction, the end of a sampling pass: the hours' segments replaced by the
    /// sampled ones, their recorded decisions (by hour start, `consumed`) dropped, the decisions
    /// of traces going on into later hours recorded, the per-service counts added, and the
    /// sampled mark moved.
    #[allow(clippy::too_many_arguments)]
    pub fn commit_sampled(
        &mut self,
        added: Vec<SegmentMeta>,
        removed: &[i64],
        consumed: &[i64],
        onward: &[(i64, String, crate::sampling::Decision)],
        by_service: &std::collections::BTreeMap<String, (u64, u64)>,
        sampled_before_ns: i64,
    ) -> Result<Vec<SegmentMeta>> {
        let path = self.path.clone();
        let err = |source| Error::Catalog {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        let out = replace_in(&tx, added, removed).map_err(err)?;
        for hour_ns in consumed {
            tx.execute(
                "DELETE FROM trace_decisions WHERE hour_ns = ?1",
                params![hour_ns],
            )
            .map_err(err)?;
        }
        for (hour_ns, trace_id, decision) in onward {
            if consumed.contains(hour_ns) {
                continue;
            }
            tx.execute(
                "INSERT INTO trace_decisions (hour_ns, trace_id, keep, rate) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(hour_ns, trace_id) DO UPDATE SET keep = excluded.keep, rate = excluded.rate",
                params![hour_ns, trace_id, i64::from(decision.keep), decision.rate],
            )
            .map_err(err)?;
        }
        for (service, (seen, kept)) in by_service {
            tx.execute(
                "INSERT INTO sampling_stats (service, traces_seen, traces_kept) VALUES (?1, ?2, ?3)
                 ON CONFLICT(service) DO UPDATE SET traces_seen = traces_seen + excluded.traces_seen,
                   traces_kept = traces_kept + excluded.traces_kept",
                params![service, *seen as i64, *kept as i64],
            )
            .map_err(err)?;
        }
        tx.execute(
            "INSERT INTO state (key, value) VALUES ('sampled_before_ns', ?1)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![sampled_before_ns],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(out)
    }

    /// Per service, the traces every sampling pass has seen and kept.
    pub fn sampling_stats(&self) -> Result<std::collections::BTreeMap<String, (u64, u64)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT service, traces_seen, traces_kept FROM sampling_stats")
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    (r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64),
                ))
            })
            .map_err(self.err())?;
        rows.collect::<rusqlite::Result<_>>().map_err(self.err())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(path: &str, min: i64) -> SegmentMeta {
        SegmentMeta {
            id: 0,
            table: Table::Logs,
            path: path.into(),
            min_time_ns: min,
            max_time_ns: min + 10,
            row_count: 5,
            size_bytes: 100,
            created_ns: 1,
            level: 0,
            sampled: false,
        }
    }

    #[test]
    fn commit_adds_removes_and_moves_the_checkpoint_together() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("catalog.db");
        let mut catalog = Catalog::open(&path).expect("open");
        assert_eq!(catalog.wal_checkpoint().expect("checkpoint"), 0);
        let added = catalog
            .commit(vec![meta("a", 1), meta("b", 2)], &[], Some(3))
            .expect("commit");
        catalog
            .commit(vec![meta("c", 3)], &[added[0].id], Some(5))
            .expect("commit");
        drop(catalog);
        let catalog = Catalog::open(&path).expect("reopen");
        let paths: Vec<String> = catalog
            .segments()
            .expect("list")
            .into_iter()
            .map(|s| s.path)
            .collect();
        assert_eq!(paths, vec!["b", "c"]);
        assert_eq!(catalog.wal_checkpoint().expect("checkpoint"), 5);
    }
}
