//! What `/healthz` and `sightline doctor` say about the server, in words a newcomer understands:
//! the disk, the write-ahead log, the buffer, the last start's replay.

use serde::Serialize;
use sightline_storage::Store;

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

/// One finding.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub level: Level,
    pub message: String,
}

impl Check {
    fn new(name: &'static str, level: Level, message: impl Into<String>) -> Self {
        Self {
            name,
            level,
            message: message.into(),
        }
    }
}

/// Free space under which ingest will soon fail, and under which it is worth a warning.
const DISK_FAIL_BYTES: u64 = 256 * 1024 * 1024;
const DISK_WARN_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// Share of the buffer limit above which ingest is said to be backing up.
const BUFFER_WARN_SHARE: f64 = 0.8;

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1024.0 * 1024.0 * 1024.0))
}

/// Free and total bytes of the file system holding `path`.
pub fn disk_space(path: &std::path::Path) -> Option<(u64, u64)> {
    let stat = rustix::fs::statvfs(path).ok()?;
    Some((
        stat.f_bavail.saturating_mul(stat.f_frsize),
        stat.f_blocks.saturating_mul(stat.f_frsize),
    ))
}

/// The server's own findings, cheapest first; none of them queries the tables.
pub fn checks(store: &Store, torn_tails_at_start: usize) -> Vec<Check> {
    let mut out = Vec::new();
    let dir = store.data_dir();
    match disk_space(dir) {
        Some((free, total)) => {
            let level = if free < DISK_FAIL_BYTES {
                Level::Fail
            } else if free < DISK_WARN_BYTES || (total > 0 && free * 20 < total) {
                Level::Warn
            } else {
                Level::Ok
            };
            let advice = match level {
                Level::Ok => String::new(),
                _ => "; when it fills, ingest answers 503 until space returns: free space, \
                      shorten [retention], or move --data-dir"
                    .into(),
            };
            out.push(Check::new(
                "disk",
                level,
                format!(
                    "{} free of {} on the disk holding {}{advice}",
                    gib(free),
                    gib(total),
                    dir.display()
                ),
            ));
        }
        None => out.push(Check::new(
            "disk",
            Level::Warn,
            format!("cannot read the free space of {}", dir.display()),
        )),
    }
    let stats = store.stats();
    out.push(if stats.wal_failing {
        Check::new(
            "write-ahead log",
            Level::Fail,
            format!(
                "the latest write to the write-ahead log failed ({} since the server started: a \
                 full disk or a failing device); ingest answers 503 and senders retry. The \
                 server's log says why.",
                stats.wal_write_errors
            ),
        )
    } else if stats.wal_write_errors > 0 {
        Check::new(
            "write-ahead log",
            Level::Warn,
            format!(
                "{} writes to the write-ahead log failed since the server started, and the ones \
                 since succeeded: ingest works again. The server's log says why they failed.",
                stats.wal_write_errors
            ),
        )
    } else {
        Check::new(
            "write-ahead log",
            Level::Ok,
            format!("{} syncs, none failed", stats.wal_syncs),
        )
    });
    let limit = store.options().storage.max_buffer_bytes.max(1);
    let share = stats.buffered_bytes as f64 / limit as f64;
    out.push(if share > BUFFER_WARN_SHARE {
        Check::new(
            "buffer",
            Level::Warn,
            format!(
                "the in-memory buffer is {:.0}% full: flushes to Parquet are not keeping up, \
                 and above 100% ingest answers 503",
                share * 100.0
            ),
        )
    } else {
        Check::new(
            "buffer",
            Level::Ok,
            format!("{:.0}% of the in-memory buffer in use", share * 100.0),
        )
    });
    if stats.flush_errors > 0 {
        out.push(Check::new(
            "flush",
            Level::Warn,
            format!(
                "{} flushes to Parquet failed; rows stay safe in the write-ahead log and the \
                 flush is retried",
                stats.flush_errors
            ),
        ));
    }
    if torn_tails_at_start > 0 {
        out.push(Check::new(
            "replay",
            Level::Warn,
            format!(
                "the last start found {torn_tails_at_start} write-ahead log file(s) cut short (a \
                 crash mid-write); the unfinished records had not been acknowledged and were \
                 dropped"
            ),
        ));
    }
    out
}
