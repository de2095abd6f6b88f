//! `alert_events`: every change of an alert's state, as a row SQL can read (time, alert_id,
//! name, source, labels as JSON text, state, value, threshold). Rows are appended to
//! `monitor/alert_events.jsonl` in the data folder and synced before the state that follows
//! them is written, so the history survives a restart; they are kept in memory for queries and
//! dropped after [`KEEP_NS`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray, TimestampNanosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// How long events are kept: 30 days.
pub const KEEP_NS: i64 = 30 * 86_400 * 1_000_000_000;

/// The name of the table.
pub const TABLE: &str = "alert_events";

/// One change of an alert's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    /// When (ns since the epoch).
    pub time_ns: i64,
    /// The alert's id (its fingerprint).
    pub alert_id: String,
    /// The rule's or SLO's name.
    pub name: String,
    /// `slo`, `rule` or `check`.
    pub source: String,
    /// The alert's labels.
    pub labels: crate::alert::Labels,
    /// The state entered: `pending`, `firing`, `resolved`, `no_data` or `inactive`.
    pub state: String,
    /// The value measured then.
    pub value: Option<f64>,
    /// What it was compared with.
    pub threshold: Option<f64>,
}

/// Every stretch of `[start_ns, end_ns)` during which an alert with a `service` label was
/// firing, as `(service, from_ns, to_ns)`: from its `firing` event to the next event of another
/// state (an alert still firing runs on, to `i64::MAX`).
pub fn firing_windows(
    events: &[AlertEvent],
    start_ns: i64,
    end_ns: i64,
) -> Vec<(String, i64, i64)> {
    let mut by_alert: std::collections::BTreeMap<&str, Vec<&AlertEvent>> =
        std::collections::BTreeMap::new();
    for event in events {
        by_alert
            .entry(event.alert_id.as_str())
            .or_default()
            .push(event);
    }
    let mut out = Vec::new();
    for events in by_alert.values_mut() {
        events.sort_by_key(|e| e.time_ns);
        let mut since: Option<(i64, String)> = None;
        for event in events.iter() {
            match (event.state.as_str(), &since) {
                ("firing", None) => {
                    if let Some(service) = event.labels.get("service") {
                        since = Some((event.time_ns, service.clone()));
                    }
                }
                ("firing", Some(_)) => {}
                (_, Some((from, service))) => {
                    out.push((service.clone(), *from, event.time_ns));
                    since = None;
                }
                _ => {}
            }
        }
        if let Some((from, service)) = since {
            out.push((service, from, i64::MAX));
        }
    }
    out.retain(|(_, from, to)| *from < end_ns && *to > start_ns);
    out
}

/// The schema of `alert_events`.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(
            "time",
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            false,
        ),
        Field::new("alert_id", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("labels", DataType::Utf8, false),
        Field::new("state", DataType::Utf8, false),
        Field::new("value", DataType::Float64, true),
        Field::new("threshold", DataType::Float64, true),
    ]))
}

/// The events, in memory and in their file.
#[derive(Debug)]
pub struct EventLog {
    path: PathBuf,
    events: Mutex<Vec<AlertEvent>>,
}

fn lock(events: &Mutex<Vec<AlertEvent>>) -> MutexGuard<'_, Vec<AlertEvent>> {
    events
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl EventLog {
    /// Reads the events of `path` newer than [`KEEP_NS`] before `now_ns` (none when it does not
    /// exist yet). A last line cut short by a crash is left out.
    pub fn open(path: &Path, now_ns: i64) -> Result<Self, Error> {
        let log = Self {
            path: path.into(),
            events: Mutex::new(crate::kept::read_lines(path)?),
        };
        // Old events leave the file too (rewritten only when some are that old).
        log.prune(now_ns)?;
        Ok(log)
    }

    fn rewrite(&self) -> Result<(), Error> {
        let events = lock(&self.events).clone();
        crate::kept::rewrite_lines(&self.path, &events)
    }

    /// Appends events and syncs the file before returning.
    pub fn append(&self, new: &[AlertEvent]) -> Result<(), Error> {
        crate::kept::append_lines(&self.path, new)?;
        lock(&self.events).extend_from_slice(new);
        Ok(())
    }

    /// The events of one alert, oldest first.
    pub fn of_alert(&self, id: &str) -> Vec<AlertEvent> {
        lock(&self.events)
            .iter()
            .filter(|e| e.alert_id == id)
            .cloned()
            .collect()
    }

    /// Every event kept, oldest first.
    pub fn all(&self) -> Vec<AlertEvent> {
        lock(&self.events).clone()
    }

    /// Drops events older than [`KEEP_NS`] from memory and the file.
    pub fn prune(&self, now_ns: i64) -> Result<(), Error> {
        let dropped = {
            let mut events = lock(&self.events);
            let before = events.len();
            events.retain(|e| now_ns - e.time_ns < KEEP_NS);
            before != events.len()
        };
        if dropped { self.rewrite() } else { Ok(()) }
    }
}

impl crate::kept::Rows for EventLog {
    fn batch(&self) -> Result<RecordBatch, Error> {
        let events = lock(&self.events);
        let labels: Vec<String> = events
            .iter()
            .map(|e| serde_json::to_string(&e.labels).unwrap_or_else(|_| "{}".into()))
            .collect();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(
                TimestampNanosecondArray::from(
                    events.iter().map(|e| e.time_ns).collect::<Vec<_>>(),
                )
                .with_timezone("UTC"),
            ),
            Arc::new(StringArray::from_iter_values(
                events.iter().map(|e| &e.alert_id),
            )),
            Arc::new(StringArray::from_iter_values(
                events.iter().map(|e| &e.name),
            )),
            Arc::new(StringArray::from_iter_values(
                events.iter().map(|e| &e.source),
            )),
            Arc::new(StringArray::from_iter_values(labels)),
            Arc::new(StringArray::from_iter_values(
                events.iter().map(|e| &e.state),
            )),
            Arc::new(Float64Array::from(
                events.iter().map(|e| e.value).collect::<Vec<_>>(),
            )),
            Arc::new(Float64Array::from(
                events.iter().map(|e| e.threshold).collect::<Vec<_>>(),
            )),
        ];
        RecordBatch::try_new(schema(), columns).map_err(|e| Error::Internal {
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firing_windows_run_from_firing_to_the_next_state_per_alert() {
        let event = |t: i64, id: &str, service: Option<&str>, state: &str| AlertEvent {
            time_ns: t,
            alert_id: id.into(),
            name: "x".into(),
            source: "rule".into(),
            labels: service
                .map(|s| {
                    [("service".to_string(), s.to_string())]
                        .into_iter()
                        .collect()
                })
                .unwrap_or_default(),
            state: state.into(),
            value: None,
            threshold: None,
        };
        let events = vec![
            event(10, "a", Some("pay"), "pending"),
            event(20, "a", Some("pay"), "firing"),
            event(25, "b", Some("shop"), "firing"),
            event(40, "a", Some("pay"), "resolved"),
            event(50, "c", None, "firing"),
            event(60, "a", Some("pay"), "firing"),
        ];
        let mut windows = firing_windows(&events, 0, 100);
        windows.sort();
        assert_eq!(
            windows,
            vec![
                ("pay".to_string(), 20, 40),
                ("pay".to_string(), 60, i64::MAX),
                ("shop".to_string(), 25, i64::MAX),
            ]
        );
        assert_eq!(
            firing_windows(&events, 41, 59).len(),
            1,
            "only shop's, still firing"
        );
    }
}
