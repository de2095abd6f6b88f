//! The hour summaries the telemetry-quality report is built from
//! ([`sightline_query::quality`]), kept so a report reads one live hour and remembers the
//! rest: each hour of the last week is summarized once, and again only when its stored data
//! changed (its signature, [`QueryEngine::hour_signatures`], moved: rows arrived late, a flush,
//! compaction, sampling or retention). Closed hours are kept in `monitor/quality_hours.jsonl`
//! (appended and synced; the last line of an hour wins), so a restart does not summarize the
//! week again. The monitor refreshes them in the background after each evaluation; a report
//! refreshes what is still missing first.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sightline_query::QueryEngine;
use sightline_query::quality::{HISTORY_NS, HOUR_NS, HourSummary, summarize_hour};
use tracing::{debug, warn};

use crate::error::Error;
use crate::kept::{append_lines, read_lines, rewrite_lines};

/// The file closed hours are kept in, under the monitor's folder.
const FILE: &str = "quality_hours.jsonl";
/// How often a background refresh makes the current hour's summary again.
pub const CURRENT_HOUR_EVERY_NS: i64 = 5 * 60_000_000_000;
/// An hour is closed (kept on disk) this long after it ends.
const SETTLE_NS: i64 = 5 * 60_000_000_000;

/// Hour summaries, shared by clones.
#[derive(Clone)]
pub struct QualityHours {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    hours: Mutex<BTreeMap<i64, HourSummary>>,
    /// The signature each hour was last written to the file with.
    written: Mutex<BTreeMap<i64, String>>,
    /// Held while summaries are made, so two refreshes never make the same hour twice.
    refreshing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for QualityHours {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QualityHours")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl QualityHours {
    /// Reads the kept hours from `dir` (the monitor's folder).
    pub fn open(dir: &Path) -> Result<Self, Error> {
        let path = dir.join(FILE);
        let mut hours = BTreeMap::new();
        let mut written = BTreeMap::new();
        let mut lines = 0usize;
        for summary in read_lines::<HourSummary>(&path)? {
            lines += 1;
            written.insert(summary.hour_ns, summary.signature.clone());
            hours.insert(summary.hour_ns, summary);
        }
        let kept = Self {
            inner: Arc::new(Inner {
                path,
                hours: Mutex::new(hours),
                written: Mutex::new(written),
                refreshing: tokio::sync::Mutex::new(()),
            }),
        };
        // Hours made again leave their older lines behind: write the file anew now and then.
        if lines > 2 * kept.lock().len() + 24 {
            kept.rewrite()?;
        }
        Ok(kept)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<i64, HourSummary>> {
        self.inner
            .hours
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn rewrite(&self) -> Result<(), Error> {
        let rows: Vec<HourSummary> = self.lock().values().cloned().collect();
        rewrite_lines(&self.inner.path, &rows)
    }

    /// Summarizes every hour of the last week up to `now_ns` (the current one included) that
    /// is missing or whose data changed, and forgets older ones. Returns how many were made.
    /// The current hour changes with every export: unless `fresh`, its summary is made again
    /// at most every [`CURRENT_HOUR_EVERY_NS`], so background refreshes stay cheap under load.
    pub async fn refresh(
        &self,
        engine: &QueryEngine,
        now_ns: i64,
        fresh: bool,
    ) -> Result<usize, Error> {
        let _guard = self.inner.refreshing.lock().await;
        let current = now_ns.div_euclid(HOUR_NS) * HOUR_NS;
        let first = current - HISTORY_NS - HOUR_NS;
        let hours: Vec<i64> = (0..)
            .map(|i| first + i * HOUR_NS)
            .take_while(|h| *h <= current)
            .collect();
        let signatures = engine.hour_signatures(&hours);
        let mut made = 0;
        for (hour, signature) in hours.into_iter().zip(signatures) {
            let known = self.lock().get(&hour).is_some_and(|s| {
                s.signature == signature
                    || (!fresh && hour == current && now_ns - s.made_ns < CURRENT_HOUR_EVERY_NS)
            });
            if known {
                continue;
            }
            let summary = if signature.split('/').all(|t| t == "0:0:0") {
                // Nothing stored in the hour: nothing to ask.
                HourSummary {
                    hour_ns: hour,
                    signature,
                    made_ns: now_ns,
                    ..Default::default()
                }
            } else {
                made += 1;
                let mut summary = summarize_hour(engine, hour, signature).await?;
                if summary.incomplete {
                    warn!(
                        hour,
                        "an hour's quality summary was cut at its row limit (very many span names); its span shapes and units are not judged"
                    );
                }
                summary.made_ns = now_ns;
                summary
            };
            self.lock().insert(hour, summary);
        }
        self.lock().retain(|h, _| *h >= first);
        // Closed hours not yet on disk as they are now (however they came to be made).
        let closed: Vec<HourSummary> = {
            let written = self
                .inner
                .written
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            self.lock()
                .values()
                .filter(|s| s.hour_ns + HOUR_NS + SETTLE_NS <= now_ns)
                .filter(|s| written.get(&s.hour_ns) != Some(&s.signature))
                .cloned()
                .collect()
        };
        if !closed.is_empty() {
            match append_lines(&self.inner.path, &closed) {
                Ok(()) => {
                    let mut written = self
                        .inner
                        .written
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    written.retain(|h, _| *h >= first);
                    for s in &closed {
                        written.insert(s.hour_ns, s.signature.clone());
                    }
                }
                // The summaries are still in memory; the next refresh tries to keep them again.
                Err(e) => warn!(error = %e, "quality hour summaries could not be kept on disk"),
            }
        }
        debug!(made, "quality hour summaries refreshed");
        Ok(made)
    }

    /// The summaries of hours starting in `[from_ns, to_ns)`, oldest first.
    pub fn summaries(&self, from_ns: i64, to_ns: i64) -> Vec<HourSummary> {
        self.lock()
            .range(from_ns..to_ns)
            .map(|(_, s)| s.clone())
            .collect()
    }
}
