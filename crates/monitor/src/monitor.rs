//! The monitor as the server holds it: [`Monitor::open`] reads its state from the data folder and
//! adds `alert_events` to the query engine; [`run`] evaluates every `evaluation_interval` (by the
//! injected clock) until shutdown; the API and pages read [`Monitor::slos`], [`Monitor::alerts`]
//! and [`Monitor::alert`], and edit silences.
//!
//! One cycle ([`Monitor::evaluate`]): evaluate every SLO and rule ([`crate::eval`]), step each
//! instance ([`crate::state`]), append the changes to `alert_events` (synced), hand the firing and
//! resolved alerts to the notifier (which posts in the background and never holds evaluation
//! up), and write the whole state durably. A cycle whose queries fail changes nothing and is
//! counted; the next one tries again.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use sightline_model::Clock;
use sightline_query::explain::{self, Explanation, Question};
use sightline_query::json::format_time_ns;
use sightline_query::{QueryClass, QueryEngine};
use tracing::{info, warn};

use crate::alert::{Alert, AlertState, Cause, Explained, Labels, Source};
use crate::config::MonitorConfig;
use crate::deploys::{Deploy, DeployLog};
use crate::error::Error;
use crate::eval::{self, Ask, SloStatus};
use crate::events::{AlertEvent, EventLog};
use crate::kept::RowsTable;
use crate::notify::{DeliveryError, Notifier, NotifyStats};
use crate::silence::{ListedSilence, Silence, Silences};
use crate::state::{Instance, Phase};
use crate::store::{Persisted, StateFile};

/// How often [`run`] looks at the clock.
const LOOK_EVERY: Duration = Duration::from_millis(500);
/// Resolved alerts stay listed this long.
const KEEP_RESOLVED_NS: i64 = 24 * 3_600 * 1_000_000_000;
/// Values kept per instance for its page's chart.
const SAMPLES: usize = 720;

/// What the pages and API say of one alert instance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertView {
    /// Its fingerprint.
    pub id: String,
    /// The rule's or SLO's name.
    pub name: String,
    /// `slo`, `rule` or `check`.
    pub source: Source,
    /// Its labels.
    pub labels: Labels,
    /// `pending`, `firing`, `resolved` or `no_data`.
    pub state: AlertState,
    /// The last measured value.
    pub value: Option<f64>,
    /// What it is compared with.
    pub threshold: Option<f64>,
    /// When it entered its state (RFC 3339).
    pub since: String,
    /// The last evaluation's words, with the numbers.
    pub summary: String,
    /// What set its bad requests apart when it began firing, best first (at most three;
    /// empty before it fires, or when nothing did).
    pub explanation: Vec<Cause>,
    /// Its runbook.
    pub runbook_url: Option<String>,
    /// Its page.
    pub url: String,
    /// The silence muting it, if any.
    pub silenced_by: Option<String>,
    /// The last failed delivery of a notification about it, until one succeeds.
    pub delivery_error: Option<DeliveryError>,
    /// When it began firing (RFC 3339), if it did.
    pub fired_at: Option<String>,
    /// When it resolved (RFC 3339), if it did.
    pub resolved_at: Option<String>,
    /// The service it watches, if one.
    pub service: Option<String>,
}

/// One alert with its history, for `GET /api/v1/alerts/{id}` and its page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertDetail {
    /// The alert.
    #[serde(flatten)]
    pub alert: AlertView,
    /// Its changes of state, oldest first.
    pub timeline: Vec<TimelineEntry>,
    /// Its values at recent evaluations (since the server started), oldest first.
    pub samples: Vec<Sample>,
    /// The question its explanation answered when it began firing, and the whole answer.
    pub explained: Option<Explained>,
}

/// One change of state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineEntry {
    /// When (RFC 3339).
    pub time: String,
    /// When (ns).
    pub time_ns: i64,
    /// The state entered.
    pub state: String,
    /// The value then.
    pub value: Option<f64>,
    /// The threshold then.
    pub threshold: Option<f64>,
}

/// One evaluation's value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    /// When (ns).
    pub time_ns: i64,
    /// The value.
    pub value: f64,
    /// The threshold.
    pub threshold: Option<f64>,
}

/// A data check as the quality report lists it: its latest result and its history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckView {
    /// Its name.
    pub name: String,
    /// `freshness`, `volume`, `nulls`, `distribution` or `schema`.
    pub kind: &'static str,
    /// The table it reads.
    pub table: &'static str,
    /// `ok` (passing), `pending`, `firing`, `resolved`, `no_data`, or `not_evaluated` yet.
    pub state: String,
    /// Its alert's id (its page is `/alerts/{id}`), once evaluated.
    pub alert_id: Option<String>,
    /// The latest value.
    pub value: Option<f64>,
    /// What it is compared with.
    pub threshold: Option<f64>,
    /// The latest result in words.
    pub summary: String,
    /// When it was last evaluated (RFC 3339).
    pub last_evaluated: Option<String>,
    /// Its changes of state, oldest first.
    pub history: Vec<TimelineEntry>,
    /// Its values at recent evaluations (since the server started), oldest first.
    pub values: Vec<Sample>,
}

/// What one evaluation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CycleReport {
    /// Instances evaluated.
    pub instances: usize,
    /// Changes of state.
    pub transitions: usize,
    /// Rules whose query failed.
    pub failed_rules: usize,
}

/// Counters for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MonitorStats {
    /// Evaluation cycles that ran.
    pub evaluations: u64,
    /// Cycles whose queries failed.
    pub evaluation_failures: u64,
    /// How long the last cycle took, in seconds.
    pub last_duration_s: f64,
    /// Instances per state (`pending`, `firing`, `resolved`, `no_data`).
    pub alerts_by_state: BTreeMap<String, u64>,
    /// Active silences.
    pub silences_active: u64,
    /// The notifier's counters per target.
    pub notify: NotifyStats,
    /// Writes of the state that failed.
    pub state_write_failures: u64,
}

/// What an instance's configuration says besides its verdicts.
#[derive(Debug, Clone, Default)]
struct Meta {
    runbook_url: Option<String>,
    notify: Option<Vec<String>>,
    service: Option<String>,
}

#[derive(Debug, Default)]
struct Live {
    instances: BTreeMap<String, Instance>,
    meta: HashMap<String, Meta>,
    silences: Silences,
    slos: Vec<SloStatus>,
    evaluated_ns: Option<i64>,
    samples: HashMap<String, VecDeque<Sample>>,
    last_error: Option<String>,
    /// The notifier's last failed delivery per alert, as of its last tick.
    delivery_errors: HashMap<String, DeliveryError>,
}

struct Inner {
    engine: QueryEngine,
    config: MonitorConfig,
    clock: Arc<dyn Clock>,
    file: StateFile,
    events: Arc<EventLog>,
    deploys: Arc<DeployLog>,
    /// Hour summaries of the telemetry-quality report.
    quality: crate::quality::QualityHours,
    /// Whether a background refresh of them is running.
    quality_refreshing: std::sync::atomic::AtomicBool,
    /// Services with an error finding over the last day, as of the last background refresh.
    quality_errors: Mutex<BTreeSet<String>>,
    live: Mutex<Live>,
    notifier: tokio::sync::Mutex<Notifier>,
    notify_stats: Mutex<NotifyStats>,
    evaluations: AtomicU64,
    failures: AtomicU64,
    state_write_failures: AtomicU64,
    last_duration_us: AtomicU64,
}

/// The monitor: SLOs, rules, their state, silences and notifications. Clones share it.
#[derive(Clone)]
pub struct Monitor {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Monitor {
    /// The telemetry-quality findings of `window` (its end is now): the hour summaries are
    /// brought up to date first (only hours whose data changed are summarized again), then
    /// judged with ingest's `notes` per service.
    pub async fn quality_report(
        &self,
        window: &sightline_query::quality::ReportWindow,
        notes: &BTreeMap<String, sightline_query::quality::IngestNotes>,
    ) -> Result<Vec<sightline_query::quality::Finding>, Error> {
        use sightline_query::quality::{HISTORY_NS, HOUR_NS, findings};
        self.inner
            .quality
            .refresh(&self.inner.engine, self.inner.clock.now_ns(), true)
            .await?;
        // From the start of the hour a week before the window's last whole hour.
        let first = window.end_ns.div_euclid(HOUR_NS) * HOUR_NS - HISTORY_NS - HOUR_NS;
        let hours = self.inner.quality.summaries(first, window.end_ns + 1);
        self.note_quality_errors(self.inner.clock.now_ns());
        Ok(findings(&hours, notes, window))
    }

    /// Notes which services have an error finding over the last day (the services page marks
    /// them), from the kept summaries; ingest's notes only ever warn, so they are not needed.
    fn note_quality_errors(&self, now: i64) {
        use sightline_query::quality::{HISTORY_NS, HOUR_NS, ReportWindow, Severity, findings};
        let window = ReportWindow {
            start_ns: now - 24 * HOUR_NS,
            end_ns: now,
            service: None,
        };
        let first = now.div_euclid(HOUR_NS) * HOUR_NS - HISTORY_NS - HOUR_NS;
        let hours = self.inner.quality.summaries(first, now + 1);
        let errors = findings(&hours, &BTreeMap::new(), &window)
            .into_iter()
            .filter(|f| f.severity == Severity::Error)
            .map(|f| f.service)
            .collect();
        *lock(&self.inner.quality_errors) = errors;
    }

    /// The services with an error finding in the quality report over the last day, as of the
    /// last background refresh (the services page marks them).
    pub fn quality_error_services(&self) -> BTreeSet<String> {
        lock(&self.inner.quality_errors).clone()
    }

    /// Starts bringing the quality report's hour summaries up to date in the background,
    /// unless that is already under way, so a report finds them made.
    pub fn refresh_quality_in_background(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        if self.inner.quality_refreshing.swap(true, SeqCst) {
            return;
        }
        /// Lets the next refresh start however this one ends (a fault inside included).
        struct Done(Monitor);
        impl Drop for Done {
            fn drop(&mut self) {
                self.0
                    .inner
                    .quality_refreshing
                    .store(false, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let monitor = self.clone();
        tokio::spawn(async move {
            let done = Done(monitor.clone());
            let now = monitor.inner.clock.now_ns();
            match monitor
                .inner
                .quality
                .refresh(&monitor.inner.engine, now, false)
                .await
            {
                Ok(_) => monitor.note_quality_errors(now),
                Err(e) => {
                    warn!(error = %e, "the quality report's hour summaries could not be refreshed; the next evaluation tries again");
                }
            }
            drop(done);
        });
    }

    /// Opens the monitor's state under `data_dir/monitor` and adds `alert_events` to `engine`'s
    /// tables. Its queries run as [`QueryClass::Monitor`].
    pub fn open(
        engine: &QueryEngine,
        config: MonitorConfig,
        clock: Arc<dyn Clock>,
        data_dir: &Path,
    ) -> Result<Self, Error> {
        let dir = data_dir.join("monitor");
        std::fs::create_dir_all(&dir).map_err(|source| Error::State {
            path: dir.clone(),
            doing: "written",
            source,
        })?;
        let now_ns = clock.now_ns();
        let file = StateFile::new(&dir);
        let persisted = file.load()?;
        let events = Arc::new(EventLog::open(&dir.join("alert_events.jsonl"), now_ns)?);
        engine.register_table(
            crate::events::TABLE,
            Arc::new(RowsTable::new(events.clone(), crate::events::schema())),
        )?;
        let deploys = Arc::new(DeployLog::open(&dir)?);
        let quality = crate::quality::QualityHours::open(&dir)?;
        engine.register_table(
            crate::deploys::TABLE,
            Arc::new(RowsTable::new(deploys.clone(), crate::deploys::schema())),
        )?;
        let notifier = Notifier::new(
            &config.notify,
            &config.monitor.external_url,
            persisted.notifier.clone(),
        )
        .map_err(|e| Error::Invalid {
            message: e.to_string(),
        })?;
        let live = Live {
            instances: persisted
                .instances
                .into_iter()
                .map(|i| (i.id.clone(), i))
                .collect(),
            silences: persisted.silences,
            evaluated_ns: persisted.evaluated_ns,
            ..Live::default()
        };
        Ok(Self {
            inner: Arc::new(Inner {
                engine: engine.for_class(QueryClass::Monitor),
                config,
                clock,
                file,
                events,
                deploys,
                quality,
                quality_refreshing: std::sync::atomic::AtomicBool::new(false),
                quality_errors: Mutex::new(BTreeSet::new()),
                live: Mutex::new(live),
                notifier: tokio::sync::Mutex::new(notifier),
                notify_stats: Mutex::new(NotifyStats::default()),
                evaluations: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                state_write_failures: AtomicU64::new(0),
                last_duration_us: AtomicU64::new(0),
            }),
        })
    }

    /// Now, on its clock.
    pub fn now_ns(&self) -> i64 {
        self.inner.clock.now_ns()
    }

    /// The configuration it watches by.
    pub fn config(&self) -> &MonitorConfig {
        &self.inner.config
    }

    /// The link to an alert's page.
    pub fn alert_url(&self, id: &str) -> String {
        format!(
            "{}/alerts/{id}",
            self.inner.config.monitor.external_url.trim_end_matches('/')
        )
    }

    /// Whether an evaluation is due at the clock's now.
    pub fn due(&self) -> bool {
        let now = self.inner.clock.now_ns();
        let interval = self.inner.config.monitor.evaluation_interval.as_nanos();
        lock(&self.inner.live)
            .evaluated_ns
            .is_none_or(|last| now - last >= interval || now < last)
    }

    /// One evaluation cycle at the clock's now.
    pub async fn evaluate(&self) -> Result<CycleReport, Error> {
        let inner = &self.inner;
        // One cycle at a time: the notifier's lock is held throughout.
        let mut notifier = inner.notifier.lock().await;
        let started = Instant::now();
        let now_ns = inner.clock.now_ns();
        match inner.deploys.observe(&inner.engine, now_ns).await {
            Ok(new) => {
                for d in &new {
                    info!(service = %d.service_name, version = %d.version, "a new version was seen in spans: recorded as a deploy");
                }
            }
            Err(e) => {
                warn!(error = %e, "looking for new versions in spans failed; the next cycle looks again")
            }
        }
        let known: Vec<Instance> = lock(&inner.live).instances.values().cloned().collect();
        let evaluation = match eval::evaluate(&inner.engine, &inner.config, now_ns, &known).await {
            Ok(e) => e,
            Err(e) => {
                inner.failures.fetch_add(1, Ordering::Relaxed);
                lock(&inner.live).last_error = Some(e.to_string());
                warn!(error = %e, "monitor evaluation failed; states are kept until the next one");
                return Err(e);
            }
        };
        for (rule, why) in &evaluation.failed_rules {
            warn!(rule, error = %why, "an alert rule's query failed; its instances keep their state");
        }
        let mut report = CycleReport {
            instances: evaluation.found.len(),
            failed_rules: evaluation.failed_rules.len(),
            ..CycleReport::default()
        };
        // Explained once, as they begin firing, before the new state is published: a page or
        // notification never sees a firing alert without its causes. The lock is not held
        // meanwhile (pages read on); a copy of each instance is stepped to learn which fire.
        let mut explanations = BTreeMap::new();
        for found in &evaluation.found {
            let Some(ask) = &found.ask else { continue };
            let mut copy = known
                .iter()
                .find(|i| i.id == found.id)
                .cloned()
                .unwrap_or_else(|| new_instance(found, now_ns));
            let fires = copy
                .step(found.verdict.clone(), found.timing.clone(), now_ns)
                .is_some_and(|change| change.to == Phase::Firing);
            if fires {
                explanations.insert(found.id.clone(), explain(&inner.engine, ask, now_ns).await);
            }
        }
        let mut events = Vec::new();
        {
            let mut live = lock(&inner.live);
            let mut seen = BTreeSet::new();
            for found in evaluation.found {
                seen.insert(found.id.clone());
                let instance = live
                    .instances
                    .entry(found.id.clone())
                    .or_insert_with(|| new_instance(&found, now_ns));
                // A rule's first look at a service with no data says nothing yet.
                let brand_new = instance.phase == Phase::Inactive && instance.value.is_none();
                if let Some(change) = instance.step(found.verdict, found.timing, now_ns) {
                    if change.to == Phase::Firing
                        && let Some(explained) = explanations.remove(&found.id)
                    {
                        instance.explained = explained;
                    }
                    if !(brand_new && change.to == Phase::NoData && found.source == Source::Rule) {
                        events.push(event(instance, now_ns));
                    } else {
                        // Never seen with data: not worth watching.
                        instance.phase = Phase::Inactive;
                        instance.frozen_phase = None;
                    }
                }
                if let Some(value) = instance.value.filter(|v| v.is_finite()) {
                    let threshold = instance.threshold;
                    let samples = live.samples.entry(found.id.clone()).or_default();
                    samples.push_back(Sample {
                        time_ns: now_ns,
                        value,
                        threshold,
                    });
                    while samples.len() > SAMPLES {
                        samples.pop_front();
                    }
                }
                live.meta.insert(
                    found.id.clone(),
                    Meta {
                        runbook_url: found.runbook_url,
                        notify: found.notify,
                        service: found.service,
                    },
                );
            }
            // Instances of SLOs and rules no longer configured resolve and are let go.
            let gone: Vec<String> = live
                .instances
                .keys()
                .filter(|id| !seen.contains(*id))
                .cloned()
                .collect();
            for id in gone {
                let Some(mut instance) = live.instances.remove(&id) else {
                    continue;
                };
                if matches!(
                    instance.phase,
                    Phase::Firing | Phase::Pending | Phase::NoData
                ) {
                    instance.phase = Phase::Resolved;
                    instance.since_ns = now_ns;
                    instance.resolved_at_ns = Some(now_ns);
                    instance.summary = format!("{}: no longer configured", instance.name);
                    events.push(event(&instance, now_ns));
                    live.instances.insert(id, instance);
                }
            }
            live.instances.retain(|_, i| {
                !(i.phase == Phase::Resolved && now_ns - i.since_ns > KEEP_RESOLVED_NS)
            });
            let samples_kept: BTreeSet<String> = live.instances.keys().cloned().collect();
            live.samples.retain(|id, _| samples_kept.contains(id));
            live.silences.prune(now_ns);
            // Each SLO's state: the worst of its alerts.
            let mut slos = evaluation.slos;
            for slo in &mut slos {
                let phases: Vec<Phase> = live
                    .instances
                    .values()
                    .filter(|i| i.source == Source::Slo && i.name == slo.name)
                    .map(|i| i.phase)
                    .collect();
                // No data first: an SLO whose service went quiet cannot say how it is now.
                slo.state = if phases.contains(&Phase::NoData) {
                    "no_data"
                } else if phases.contains(&Phase::Firing) {
                    "firing"
                } else if phases.contains(&Phase::Pending) {
                    "pending"
                } else {
                    "ok"
                }
                .into();
            }
            live.slos = slos;
            live.evaluated_ns = Some(now_ns);
            live.last_error = None;
            report.transitions = events.len();
        }
        let (alerts, silences) = {
            let live = lock(&inner.live);
            (self.notifiable(&live), live.silences.clone())
        };
        if let Err(e) = inner.events.append(&events) {
            warn!(error = %e, "alert events could not be written");
            inner.state_write_failures.fetch_add(1, Ordering::Relaxed);
        }
        if let Err(e) = inner.events.prune(now_ns) {
            warn!(error = %e, "old alert events could not be dropped");
        }
        notifier.tick(now_ns, &alerts, &silences);
        self.after_tick(&notifier);
        self.save(&notifier);
        inner.evaluations.fetch_add(1, Ordering::Relaxed);
        inner
            .last_duration_us
            .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        for e in &events {
            info!(alert = %e.name, id = %e.alert_id, state = %e.state, "alert changed state");
        }
        Ok(report)
    }

    /// Every listed alert, as the notifier reads them: it tells of firing and resolved ones,
    /// keeps one in `no_data` as it was, and counts one missing or pending again as resolved.
    fn notifiable(&self, live: &Live) -> Vec<Alert> {
        let every: Vec<String> = self
            .inner
            .config
            .notify
            .iter()
            .map(|n| n.name.clone())
            .collect();
        live.instances
            .values()
            .filter_map(|i| {
                let state = i.phase.alert_state()?;
                if state == AlertState::Resolved && i.fired_at_ns.is_none() {
                    return None;
                }
                let meta = live.meta.get(&i.id).cloned().unwrap_or_default();
                let mut annotations = Labels::new();
                annotations.insert("summary".into(), i.summary.clone());
                annotations.insert(
                    "description".into(),
                    format!(
                        "{} ({}) is {}: {}",
                        i.name,
                        i.source.as_str(),
                        state.as_str(),
                        i.summary
                    ),
                );
                if let Some(url) = &meta.runbook_url {
                    annotations.insert("runbook_url".into(), url.clone());
                }
                annotations.insert("alert_url".into(), self.alert_url(&i.id));
                if let Some(explained) = &i.explained {
                    for (n, cause) in explained.causes.iter().enumerate() {
                        annotations.insert(format!("explanation_{}", n + 1), cause.summary.clone());
                    }
                    if !explained.causes.is_empty() {
                        let all: Vec<&str> = explained
                            .causes
                            .iter()
                            .map(|c| c.summary.as_str())
                            .collect();
                        annotations.insert("explanation".into(), all.join("; "));
                    }
                }
                Some(Alert {
                    id: i.id.clone(),
                    labels: i.labels.clone(),
                    annotations,
                    state,
                    starts_at_ns: i.fired_at_ns.unwrap_or(i.since_ns),
                    ends_at_ns: (state == AlertState::Resolved)
                        .then(|| i.resolved_at_ns.unwrap_or(i.since_ns)),
                    generator_url: self.alert_url(&i.id),
                    notify: meta.notify.unwrap_or_else(|| every.clone()),
                })
            })
            .collect()
    }

    fn persisted(&self, notifier: &Notifier) -> Persisted {
        let live = lock(&self.inner.live);
        Persisted {
            version: 0,
            evaluated_ns: live.evaluated_ns,
            instances: live.instances.values().cloned().collect(),
            silences: live.silences.clone(),
            notifier: notifier.state(),
        }
    }

    fn save(&self, notifier: &Notifier) {
        if let Err(e) = self.inner.file.save(&self.persisted(notifier)) {
            self.inner
                .state_write_failures
                .fetch_add(1, Ordering::Relaxed);
            warn!(error = %e, "the monitor's state could not be written");
        }
    }

    /// Waits for notifications in flight, then writes the state: for shutdown, and for tests
    /// that check what was delivered.
    pub async fn settle(&self) {
        let mut notifier = self.inner.notifier.lock().await;
        notifier.settle().await;
        let now_ns = self.inner.clock.now_ns();
        let (alerts, silences) = {
            let live = lock(&self.inner.live);
            (self.notifiable(&live), live.silences.clone())
        };
        // Outcomes are applied; nothing new is due unless its time came.
        notifier.tick(now_ns, &alerts, &silences);
        self.after_tick(&notifier);
        self.save(&notifier);
    }

    /// Copies what the pages read of the notifier: its counters and the delivery errors.
    fn after_tick(&self, notifier: &Notifier) {
        *lock(&self.inner.notify_stats) = notifier.stats();
        let mut live = lock(&self.inner.live);
        let errors: HashMap<String, DeliveryError> = live
            .instances
            .keys()
            .filter_map(|id| notifier.last_error(id).map(|e| (id.clone(), e.clone())))
            .collect();
        live.delivery_errors = errors;
    }

    /// Every SLO's numbers at the last evaluation.
    pub fn slos(&self) -> Vec<SloStatus> {
        lock(&self.inner.live).slos.clone()
    }

    /// One SLO's numbers.
    pub fn slo(&self, name: &str) -> Option<SloStatus> {
        lock(&self.inner.live)
            .slos
            .iter()
            .find(|s| s.name == name)
            .cloned()
    }

    fn view(&self, live: &Live, i: &Instance, now_ns: i64) -> Option<AlertView> {
        let state = i.phase.alert_state()?;
        let meta = live.meta.get(&i.id).cloned().unwrap_or_default();
        let silenced_by = live
            .silences
            .matching(&i.labels, now_ns)
            .map(|s| s.id.clone());
        let delivery_error = live.delivery_errors.get(&i.id).cloned();
        Some(AlertView {
            id: i.id.clone(),
            name: i.name.clone(),
            source: i.source,
            labels: i.labels.clone(),
            state,
            value: i.value.filter(|v| v.is_finite()),
            threshold: i.threshold,
            since: format_time_ns(i.since_ns),
            summary: i.summary.clone(),
            explanation: i
                .explained
                .as_ref()
                .map(|e| e.causes.clone())
                .unwrap_or_default(),
            runbook_url: meta.runbook_url,
            url: self.alert_url(&i.id),
            silenced_by,
            delivery_error,
            fired_at: i.fired_at_ns.map(format_time_ns),
            resolved_at: i.resolved_at_ns.map(format_time_ns),
            service: meta.service.or_else(|| i.labels.get("service").cloned()),
        })
    }

    /// The alerts (pending, firing, resolved in the last day, no data), in `state` if given:
    /// firing first, then pending, no data, resolved; newest first within each.
    pub fn alerts(&self, state: Option<AlertState>) -> Vec<AlertView> {
        let now_ns = self.inner.clock.now_ns();
        let live = lock(&self.inner.live);
        let mut out: Vec<(i64, AlertView)> = live
            .instances
            .values()
            .filter_map(|i| self.view(&live, i, now_ns).map(|v| (i.since_ns, v)))
            .filter(|(_, v)| state.is_none_or(|s| v.state == s))
            .collect();
        let rank = |s: AlertState| match s {
            AlertState::Firing => 0,
            AlertState::Pending => 1,
            AlertState::NoData => 2,
            AlertState::Resolved => 3,
        };
        out.sort_by(|a, b| rank(a.1.state).cmp(&rank(b.1.state)).then(b.0.cmp(&a.0)));
        out.into_iter().map(|(_, v)| v).collect()
    }

    /// One alert with its timeline and recent values.
    pub fn alert(&self, id: &str) -> Result<AlertDetail, Error> {
        let now_ns = self.inner.clock.now_ns();
        let view = {
            let live = lock(&self.inner.live);
            let Some(instance) = live.instances.get(id) else {
                return Err(not_found(id));
            };
            let view = self.view(&live, instance, now_ns);
            view.map(|v| {
                (
                    v,
                    live.samples
                        .get(id)
                        .map(|s| s.iter().copied().collect())
                        .unwrap_or_default(),
                    instance.explained.clone(),
                )
            })
        };
        let Some((alert, samples, explained)) = view else {
            return Err(not_found(id));
        };
        let timeline = self.timeline(id);
        Ok(AlertDetail {
            alert,
            timeline,
            samples,
            explained,
        })
    }

    /// An alert's changes of state from `alert_events`, oldest first.
    fn timeline(&self, id: &str) -> Vec<TimelineEntry> {
        self.inner
            .events
            .of_alert(id)
            .into_iter()
            .map(|e| TimelineEntry {
                time: format_time_ns(e.time_ns),
                time_ns: e.time_ns,
                state: e.state,
                value: e.value,
                threshold: e.threshold,
            })
            .collect()
    }

    /// Every data check with its latest result and history; when `service` is given, only the
    /// checks labelled with it (`labels = { service = "…" }`).
    pub fn checks(&self, service: Option<&str>) -> Vec<CheckView> {
        let live = lock(&self.inner.live);
        self.inner
            .config
            .checks
            .iter()
            .filter(|c| service.is_none_or(|s| c.labels.get("service").is_some_and(|l| l == s)))
            .map(|check| {
                let instance = live
                    .instances
                    .values()
                    .find(|i| i.source == Source::Check && i.name == check.name);
                let state = match instance {
                    None => "not_evaluated".to_string(),
                    Some(i) if i.phase == Phase::Inactive => "ok".to_string(),
                    Some(i) => i.phase.as_str().to_string(),
                };
                let history = instance.map(|i| self.timeline(&i.id)).unwrap_or_default();
                CheckView {
                    name: check.name.clone(),
                    kind: check.kind.as_str(),
                    table: check.table.as_str(),
                    state,
                    alert_id: instance.map(|i| i.id.clone()),
                    value: instance.and_then(|i| i.value),
                    threshold: instance.and_then(|i| i.threshold),
                    summary: instance.map(|i| i.summary.clone()).unwrap_or_default(),
                    last_evaluated: instance.map(|i| format_time_ns(i.evaluated_ns)),
                    history,
                    values: instance
                        .and_then(|i| live.samples.get(&i.id))
                        .map(|s| s.iter().copied().collect())
                        .unwrap_or_default(),
                }
            })
            .collect()
    }

    /// Every stretch of `[start_ns, end_ns)` during which an alert of a service was firing, as
    /// `(service, from_ns, to_ns)`, from `alert_events` (an alert still firing runs to `end_ns`).
    /// Tail sampling keeps those services' traces whole.
    pub fn firing_windows(&self, start_ns: i64, end_ns: i64) -> Vec<(String, i64, i64)> {
        crate::events::firing_windows(&self.inner.events.all(), start_ns, end_ns)
    }

    /// The services with a firing alert.
    pub fn firing_services(&self) -> BTreeSet<String> {
        let live = lock(&self.inner.live);
        live.instances
            .values()
            .filter(|i| i.phase == Phase::Firing)
            .filter_map(|i| {
                live.meta
                    .get(&i.id)
                    .and_then(|m| m.service.clone())
                    .or_else(|| i.labels.get("service").cloned())
            })
            .collect()
    }

    /// Adds a silence from now for `duration_ns`, and writes the state.
    pub async fn add_silence(
        &self,
        matchers: Labels,
        duration_ns: i64,
        comment: String,
        created_by: Option<String>,
    ) -> Result<Silence, Error> {
        let notifier = self.inner.notifier.lock().await;
        let now_ns = self.inner.clock.now_ns();
        let silence = lock(&self.inner.live)
            .silences
            .add_by(matchers, duration_ns, comment, created_by, now_ns)
            .map_err(|e| Error::Invalid {
                message: e.to_string(),
            })?;
        self.save(&notifier);
        Ok(silence)
    }

    /// Silences, active and ended in the last day, newest first.
    pub fn silences(&self) -> Vec<ListedSilence> {
        let now_ns = self.inner.clock.now_ns();
        lock(&self.inner.live).silences.list(now_ns)
    }

    /// Ends a silence now, and writes the state.
    pub async fn expire_silence(&self, id: &str) -> Result<(), Error> {
        let notifier = self.inner.notifier.lock().await;
        let now_ns = self.inner.clock.now_ns();
        if !lock(&self.inner.live).silences.expire(id, now_ns) {
            return Err(Error::NotFound {
                what: format!("silence {id}"),
                hint: "GET /api/v1/silences lists them".into(),
            });
        }
        self.save(&notifier);
        Ok(())
    }

    /// Records a deploy told through the API or the CLI, durably.
    pub fn record_deploy(&self, deploy: Deploy) -> Result<Deploy, Error> {
        self.inner.deploys.record(deploy)
    }

    /// The deploys of `service` (or all) at or after `since_ns` (or all), oldest first.
    pub fn deploys(&self, service: Option<&str>, since_ns: Option<i64>) -> Vec<Deploy> {
        self.inner.deploys.list(service, since_ns)
    }

    /// Counters for `/metrics`.
    pub fn stats(&self) -> MonitorStats {
        let inner = &self.inner;
        let now_ns = inner.clock.now_ns();
        let live = lock(&inner.live);
        let mut alerts_by_state = BTreeMap::new();
        for state in ["pending", "firing", "resolved", "no_data"] {
            alerts_by_state.insert(state.to_string(), 0);
        }
        for i in live.instances.values() {
            if let Some(s) = i.phase.alert_state() {
                *alerts_by_state.entry(s.as_str().to_string()).or_default() += 1;
            }
        }
        MonitorStats {
            evaluations: inner.evaluations.load(Ordering::Relaxed),
            evaluation_failures: inner.failures.load(Ordering::Relaxed),
            last_duration_s: inner.last_duration_us.load(Ordering::Relaxed) as f64 / 1e6,
            alerts_by_state,
            silences_active: live
                .silences
                .list(now_ns)
                .iter()
                .filter(|s| s.active)
                .count() as u64,
            notify: lock(&inner.notify_stats).clone(),
            state_write_failures: inner.state_write_failures.load(Ordering::Relaxed),
        }
    }

    /// The last evaluation's error, while the next has not succeeded.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.inner.live).last_error.clone()
    }

    /// When the last evaluation ran (ns).
    pub fn evaluated_ns(&self) -> Option<i64> {
        lock(&self.inner.live).evaluated_ns
    }
}

fn not_found(id: &str) -> Error {
    Error::NotFound {
        what: format!("alert {id}"),
        hint: "GET /api/v1/alerts lists the alerts".into(),
    }
}

fn event(instance: &Instance, now_ns: i64) -> AlertEvent {
    AlertEvent {
        time_ns: now_ns,
        alert_id: instance.id.clone(),
        name: instance.name.clone(),
        source: instance.source.as_str().into(),
        labels: instance.labels.clone(),
        state: instance.phase.as_str().into(),
        value: instance.value.filter(|v| v.is_finite()),
        threshold: instance.threshold,
    }
}

/// Evaluates `monitor` whenever `evaluation_interval` has passed on its clock, until
/// `shutdown`; then waits for notifications in flight and writes the state.
pub async fn run(monitor: Monitor, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut look = tokio::time::interval(LOOK_EVERY);
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = look.tick() => {}
        }
        if monitor.due() {
            let _ = monitor.evaluate().await;
            monitor.refresh_quality_in_background();
        }
    }
    monitor.settle().await;
}

/// The causes an alert carries.
const CAUSES: usize = 3;
/// The longest an alert's explanation may take before the cycle goes on without it.
const EXPLAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// What set the bad requests of `ask` apart over its window ending now; `None` (and a warning)
/// when the question failed or took too long, so an alert still fires without it.
async fn explain(engine: &QueryEngine, ask: &Ask, now_ns: i64) -> Option<Explained> {
    let question = Question {
        service: ask.service.clone(),
        route: ask.route.clone(),
        start_ns: now_ns - ask.window_ns,
        end_ns: now_ns,
        what: ask.what,
        threshold_ns: ask.threshold_ns,
        limit: CAUSES,
    };
    let answer = match tokio::time::timeout(EXPLAIN_TIMEOUT, explain::explain(engine, &question))
        .await
    {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => {
            warn!(service = %ask.service, error = %e, "an alert's explanation failed; it fires without one");
            return None;
        }
        Err(_) => {
            warn!(service = %ask.service, "an alert's explanation took longer than {EXPLAIN_TIMEOUT:?}; it fires without one");
            return None;
        }
    };
    let causes = answer
        .dimensions
        .iter()
        .take(CAUSES)
        .map(|d| Cause {
            key: d.key.clone(),
            value: d.value.clone(),
            selection_share: d.selection_share,
            baseline_share: d.baseline_share,
            risk_ratio: d.risk_ratio,
            p_value: d.p_value,
            grouped: d.grouped,
            summary: Explanation::describe(d, answer.what),
        })
        .collect();
    Some(Explained {
        start_ns: question.start_ns,
        end_ns: question.end_ns,
        what: answer.what.as_str().into(),
        service: answer.service,
        route: answer.route,
        threshold_ms: answer.threshold_ms,
        bad_requests: answer.selection.requests,
        other_requests: answer.baseline.requests,
        causes,
        summary: answer.summary,
    })
}

/// The instance of an alert seen for the first time.
fn new_instance(found: &crate::eval::Found, now_ns: i64) -> Instance {
    Instance::new(
        found.id.clone(),
        found.name.clone(),
        found.source,
        found.labels.clone(),
        now_ns,
    )
}
