//! What `/healthz` and `sightline doctor` say about the server, in words a newcomer understands:
//! the disk, the write-ahead log, the buffer, memory against its budget, the last start's
//! replay.

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

/// What the server's memory is made of, by configuration: the most each part may take. The
/// process should stay within their sum; `/healthz` warns when it nears it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBudget {
    /// Rows waiting to be flushed (`[storage] max_buffer_bytes`).
    pub buffer: u64,
    /// Running queries, what their functions build and their answers (`[query]
    /// memory_limit_bytes`).
    pub queries: u64,
    /// Export bodies being decoded: `max_concurrent_decodes` × `max_body_bytes` ×
    /// [`DECODE_EXPANSION`].
    pub decoding: u64,
    /// The program, its runtimes and caches (the segments' trace-id filters are reported on
    /// top, as they are measured).
    pub base: u64,
}

/// How many times its size a body may take while decoded: a 15 MB OTLP/JSON export peaks near
/// 500 MB in memory.
pub const DECODE_EXPANSION: u64 = 32;

/// The program's own share of the budget: code, runtimes, connection buffers, caches.
pub const BASE_BYTES: u64 = 256 * 1024 * 1024;

/// Share of the budget above which `/healthz` warns.
const MEMORY_WARN_SHARE: f64 = 0.9;

impl MemoryBudget {
    /// The budget `config` allows.
    pub fn of(config: &crate::config::ServeConfig) -> Self {
        Self {
            buffer: config.store.storage.max_buffer_bytes,
            queries: config.query.memory_limit_bytes as u64,
            decoding: (config.max_concurrent_decodes as u64)
                .saturating_mul(config.max_body_bytes)
                .saturating_mul(DECODE_EXPANSION),
            base: BASE_BYTES,
        }
    }

    /// The whole budget, in bytes, with `measured` bytes of caches on top.
    pub fn total(&self, measured: u64) -> u64 {
        self.buffer
            .saturating_add(self.queries)
            .saturating_add(self.decoding)
            .saturating_add(self.base)
            .saturating_add(measured)
    }
}

/// The process's resident memory now, in bytes (Linux; `None` elsewhere).
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes / (1024 * 1024))
}

/// The memory finding: resident memory against the budget.
pub fn memory_check(budget: &MemoryBudget, resident: Option<u64>, caches: u64) -> Check {
    let total = budget.total(caches);
    let parts = format!(
        "buffer {}, queries {}, decoding {}, trace-id filters {}, base {}",
        mib(budget.buffer),
        mib(budget.queries),
        mib(budget.decoding),
        mib(caches),
        mib(budget.base)
    );
    match resident {
        Some(resident) if resident as f64 > total as f64 * MEMORY_WARN_SHARE => Check::new(
            "memory",
            Level::Warn,
            format!(
                "{} resident, near the budget of {} ({parts}): lower [storage] \
                 max_buffer_bytes, [query] memory_limit_bytes or max_concurrent_decodes, or give \
                 the server more memory",
                mib(resident),
                mib(total)
            ),
        ),
        Some(resident) => Check::new(
            "memory",
            Level::Ok,
            format!(
                "{} resident of a budget of {} ({parts})",
                mib(resident),
                mib(total)
            ),
        ),
        None => Check::new(
            "memory",
            Level::Ok,
            format!(
                "budget {} ({parts}); resident memory cannot be read here",
                mib(total)
            ),
        ),
    }
}

/// The server's own findings, cheapest first; none of them queries the tables.
pub fn checks(store: &Store, torn_tails_at_start: usize, budget: &MemoryBudget) -> Vec<Check> {
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
    out.push(memory_check(
        budget,
        resident_bytes(),
        stats.trace_index_bytes,
    ));
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

/// The monitor's health: its last evaluation, and deliveries that keep failing. A warning, not a
/// failure: ingest and queries are unaffected, but nobody is being told.
pub fn monitor_check(monitor: &sightline_monitor::Monitor) -> Option<Check> {
    let config = monitor.config();
    if config.is_empty() && config.notify.is_empty() {
        return None;
    }
    if let Some(error) = monitor.last_error() {
        return Some(Check::new(
            "monitor",
            Level::Warn,
            format!(
                "the last evaluation of SLOs and rules failed ({error}); it is retried every evaluation_interval"
            ),
        ));
    }
    let stats = monitor.stats();
    let stuck: Vec<String> = stats
        .notify
        .targets
        .iter()
        .filter(|t| t.pending > 0 && t.failed_attempts > 0)
        .map(|t| t.target.clone())
        .collect();
    if !stuck.is_empty() {
        return Some(Check::new(
            "monitor",
            Level::Warn,
            format!(
                "notifications to {} are failing and being retried (see the alerts page and sightline_notifications_failed_total)",
                stuck.join(", ")
            ),
        ));
    }
    Some(Check::new(
        "monitor",
        Level::Ok,
        format!(
            "{} SLOs and {} rules, {} evaluations",
            config.slos.len(),
            config.alerts.len(),
            stats.evaluations
        ),
    ))
}

/// The `[[scrape]]` targets: a warning for each target whose last scrape failed, naming its URL
/// and why; one line in all when every target is up.
pub fn scrape_checks(scrapes: &crate::scrape::Scrapes) -> Vec<Check> {
    use crate::scrape::Health;
    let statuses = scrapes.statuses();
    if statuses.is_empty() {
        return Vec::new();
    }
    let down: Vec<Check> = statuses
        .iter()
        .filter(|t| t.health == Health::Down)
        .map(|t| {
            Check::new(
                "scrape",
                Level::Warn,
                format!(
                    "scrape target {} (service {}) is down since {}: {}",
                    t.url,
                    t.service,
                    t.down_since.as_deref().unwrap_or("its last scrape"),
                    t.last_error.as_deref().unwrap_or("the scrape failed")
                ),
            )
        })
        .collect();
    if !down.is_empty() {
        return down;
    }
    let up = statuses.iter().filter(|t| t.health == Health::Up).count();
    vec![Check::new(
        "scrape",
        Level::Ok,
        format!(
            "{up} of {} scrape targets up ({} not scraped yet)",
            statuses.len(),
            statuses.len() - up
        ),
    )]
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn memory_is_fine_within_its_budget_and_warned_about_near_it() {
        let budget = MemoryBudget {
            buffer: 512 * MIB,
            queries: 1024 * MIB,
            decoding: 1024 * MIB,
            base: BASE_BYTES,
        };
        assert_eq!(budget.total(10 * MIB), 2826 * MIB);
        let fine = memory_check(&budget, Some(900 * MIB), 10 * MIB);
        assert_eq!(fine.level, Level::Ok);
        assert!(
            fine.message
                .starts_with("900 MiB resident of a budget of 2826 MiB"),
            "{}",
            fine.message
        );
        assert!(
            fine.message.contains("queries 1024 MiB"),
            "{}",
            fine.message
        );
        let near = memory_check(&budget, Some(2600 * MIB), 10 * MIB);
        assert_eq!(near.level, Level::Warn);
        assert!(
            near.message.contains("memory_limit_bytes"),
            "{}",
            near.message
        );
        assert_eq!(memory_check(&budget, None, 0).level, Level::Ok);
        assert!(
            resident_bytes().is_some_and(|b| b > MIB),
            "this process has some"
        );
    }
}
