//! Notifications: alerts grouped, deduplicated and delivered as Alertmanager does it.
//!
//! Every `[[notify]]` target groups the alerts sent to it (those naming it in `notify`) by the
//! values of its `group_by` labels (`["..."]`: every label). A new group waits `group_wait`,
//! then is looked at every `group_interval` on that grid. A look sends one notification — every
//! firing alert of the group, and with `send_resolved` those resolved since the last one — when
//! an alert fires that the last notification did not hold, when (with `send_resolved`) one
//! resolved that was not told as resolved, or when `repeat_interval` has passed since the last
//! delivery and something still fires; otherwise it sends nothing. Resolved alerts leave the
//! group once told (or once a look found nothing to tell); an empty group goes. Silenced alerts
//! stay in their group but are left out of what a look sees, so one that still fires when its
//! silence ends is new to the receiver and told at the next look. `group.rs` holds that rule.
//!
//! [`Notifier::tick`] is called once per evaluation cycle with the time, every alert and the
//! silences. It is synchronous and cheap: it applies the outcomes of finished posts, folds the
//! alerts into groups, decides what is due and hands each post to a spawned task, one in flight
//! per group. A post answered 5xx or 429, or not answered within 10 s, is attempted again after
//! 1 s, 2 s, 4 s … (at most `group_interval`), at the first tick after that, until it is
//! delivered or the group's next look replaces it; any other refusal is not retried until the
//! next look. Failures are counted per target ([`Notifier::stats`]) and the last one touching
//! an alert is kept until a delivery clears it ([`Notifier::last_error`]).
//!
//! [`Notifier::state`] is everything needed to go on after a restart (groups, what each last
//! told, notifications not yet delivered); saved after every tick, a restart sends nothing
//! already delivered again and still delivers what was pending. Delivery is at least once: a
//! post in flight when the state was saved is posted again after a restart, so call
//! [`Notifier::settle`] before the last save at shutdown. `payload.rs` writes the bodies.

mod deliver;
mod group;
mod payload;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use sightline_model::{ConfigError, ErrorCode};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::alert::{Alert, AlertState};
use crate::config::NotifyConfig;
use crate::silence::Silences;
use group::{Group, Pending, Sent, group_key, group_labels, needs_update, next_look_after};

/// The last failure of a notification that held an alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryError {
    /// The `[[notify]]` target it was posted to.
    pub target: String,
    /// When the failed attempt started, ns since the epoch.
    pub time_ns: i64,
    /// What went wrong and whether it is retried.
    pub message: String,
}

/// One target's counters since the server started, and its groups now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TargetStats {
    /// The target's name.
    pub target: String,
    /// Notifications delivered.
    pub sent: u64,
    /// Attempts that failed, retried or not.
    pub failed_attempts: u64,
    /// Attempts that were retries of a failed one.
    pub retried: u64,
    /// Notifications given up on because the receiver refused them for good (a 4xx other than
    /// 429); the group's next look decides afresh.
    pub dropped_permanent: u64,
    /// Undelivered notifications replaced at their group's next look.
    pub superseded: u64,
    /// Notifications decided and not yet delivered, now.
    pub pending: u64,
    /// Groups, now.
    pub groups: u64,
}

/// Every target's [`TargetStats`], in config order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NotifyStats {
    /// One per `[[notify]]` target.
    pub targets: Vec<TargetStats>,
}

/// Why a [`Notifier`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// A target's config cannot work (a header that is not HTTP, a name used twice).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The HTTP client could not be set up (the TLS backend); a retry will not help.
    #[error("could not set up the HTTP client for notifications; a retry will not help")]
    Client(#[source] reqwest::Error),
}

impl NotifyError {
    /// A config mistake is the operator's; a client that cannot be built is Sightline's.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Config(_) => ErrorCode::BadRequest,
            Self::Client(_) => ErrorCode::Internal,
        }
    }
}

/// Everything a [`Notifier`] needs to go on after a restart, as JSON-friendly data: every
/// group with its alerts, what it last told and when, when it is looked at next and the
/// notification not yet delivered with the time of its next attempt; and the last delivery
/// errors. Its shape is this module's business; `Default` is a first start.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NotifierState {
    #[serde(default)]
    groups: Vec<Group>,
    #[serde(default)]
    errors: Vec<AlertError>,
    #[serde(default)]
    next_seq: u64,
}

impl NotifierState {
    /// No groups and no errors: what a first start begins with.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.errors.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct AlertError {
    alert_id: String,
    #[serde(flatten)]
    error: DeliveryError,
}

#[derive(Debug)]
struct Target {
    config: NotifyConfig,
    /// The configured headers and the content type, checked once.
    headers: HeaderMap,
    counters: TargetStats,
}

/// Which notification an attempt carried.
#[derive(Debug)]
struct Attempt {
    target: String,
    group_key: String,
    seq: u64,
    started_ns: i64,
}

#[derive(Debug)]
struct Outcome {
    attempt: Attempt,
    result: Result<(), deliver::Failure>,
}

/// Groups alerts per target and delivers their notifications; see the module's doc.
#[derive(Debug)]
pub struct Notifier {
    targets: Vec<Target>,
    by_name: HashMap<String, usize>,
    external_url: String,
    /// By target name and group key.
    groups: BTreeMap<(String, String), Group>,
    /// The last failure by alert id and target.
    errors: BTreeMap<(String, String), DeliveryError>,
    next_seq: u64,
    client: reqwest::Client,
    outcomes_tx: mpsc::UnboundedSender<Outcome>,
    outcomes_rx: mpsc::UnboundedReceiver<Outcome>,
    /// Attempts spawned whose outcome has not been applied.
    in_flight: usize,
}

/// The configured headers of target `index` and the JSON content type, which always wins.
/// Refuses headers of `notify[index]` that HTTP cannot carry (for the config's checks at start).
pub(crate) fn check_headers(index: usize, config: &NotifyConfig) -> Result<(), ConfigError> {
    headers(index, config).map(drop)
}

fn headers(index: usize, config: &NotifyConfig) -> Result<HeaderMap, ConfigError> {
    let key = format!("notify[{index}].headers");
    let mut map = HeaderMap::new();
    for (name, value) in &config.headers {
        let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            ConfigError::new(
                &key,
                format!("has {name:?}, which is not an HTTP header name (letters, digits, '-')"),
            )
        })?;
        // The value is not quoted back: headers carry tokens.
        let mut value = HeaderValue::from_str(value).map_err(|_| {
            ConfigError::new(
                &key,
                format!("{name:?} must be visible ASCII without line breaks"),
            )
        })?;
        value.set_sensitive(true);
        map.insert(header, value);
    }
    map.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(map)
}

impl Notifier {
    /// A notifier for `targets` whose links start at `external_url`, going on from `state`
    /// (`NotifierState::default()` on a first start). Groups of targets no longer configured
    /// are dropped, and so are groups whose target now groups by other labels (their alerts
    /// form new groups at the next tick).
    pub fn new(
        targets: &[NotifyConfig],
        external_url: &str,
        state: NotifierState,
    ) -> Result<Self, NotifyError> {
        let mut by_name = HashMap::new();
        let mut list = Vec::with_capacity(targets.len());
        for (index, config) in targets.iter().enumerate() {
            if by_name.insert(config.name.clone(), index).is_some() {
                return Err(ConfigError::new(
                    format!("notify[{index}].name"),
                    format!(
                        "{:?} is used twice; every notify needs its own name",
                        config.name
                    ),
                )
                .into());
            }
            list.push(Target {
                headers: headers(index, config)?,
                counters: TargetStats {
                    target: config.name.clone(),
                    ..TargetStats::default()
                },
                config: config.clone(),
            });
        }
        let (outcomes_tx, outcomes_rx) = mpsc::unbounded_channel();
        let mut notifier = Self {
            targets: list,
            by_name,
            external_url: external_url.trim_end_matches('/').to_string(),
            groups: BTreeMap::new(),
            errors: BTreeMap::new(),
            next_seq: 0,
            client: deliver::client().map_err(NotifyError::Client)?,
            outcomes_tx,
            outcomes_rx,
            in_flight: 0,
        };
        notifier.restore(state);
        Ok(notifier)
    }

    fn restore(&mut self, state: NotifierState) {
        let (mut unconfigured, mut regrouped) = (0_usize, 0_usize);
        for mut group in state.groups {
            let Some(&index) = self.by_name.get(&group.target) else {
                unconfigured += 1;
                continue;
            };
            let group_by = &self.targets[index].config.group_by;
            if group
                .alerts
                .values()
                .any(|a| group_labels(group_by, &a.labels) != group.labels)
            {
                regrouped += 1;
                continue;
            }
            group.in_flight = false;
            let key = group_key(&group.labels);
            self.groups.insert((group.target.clone(), key), group);
        }
        for AlertError { alert_id, error } in state.errors {
            if self.by_name.contains_key(&error.target) {
                self.errors.insert((alert_id, error.target.clone()), error);
            }
        }
        self.next_seq = state.next_seq;
        if unconfigured + regrouped > 0 {
            info!(
                unconfigured,
                regrouped, "notification groups dropped: their target is gone or groups anew"
            );
        }
    }

    /// One evaluation cycle at `now_ns`: `alerts` is every alert the monitor holds (an alert a
    /// group holds as firing that is missing, or pending again, counts as resolved now; one in
    /// `no_data` stays as it was), `silences` says which are muted. Applies finished posts,
    /// decides what is due and spawns the posts. Never waits; call it inside the Tokio runtime
    /// (outside one, posts wait for a later tick and an error is logged).
    pub fn tick(&mut self, now_ns: i64, alerts: &[Alert], silences: &Silences) {
        self.apply_outcomes();
        self.fold(now_ns, alerts);
        self.look(now_ns, silences);
        self.start_attempts(now_ns);
        self.groups.retain(|_, group| !group.is_spent());
        self.prune_errors();
    }

    /// Waits for every post in flight and applies its outcome; starts none. For tests and for
    /// shutdown, before the last [`Notifier::state`]. Bounded by the 10 s attempt timeout.
    pub async fn settle(&mut self) {
        while self.in_flight > 0 {
            // The notifier holds a sender itself, so the channel never closes under it.
            let Some(outcome) = self.outcomes_rx.recv().await else {
                break;
            };
            self.apply(outcome);
        }
    }

    /// What to save after each tick to go on after a restart.
    pub fn state(&self) -> NotifierState {
        NotifierState {
            groups: self.groups.values().cloned().collect(),
            errors: self
                .errors
                .iter()
                .map(|((alert_id, _), error)| AlertError {
                    alert_id: alert_id.clone(),
                    error: error.clone(),
                })
                .collect(),
            next_seq: self.next_seq,
        }
    }

    /// Counters per target since the start, and pending notifications and groups now.
    pub fn stats(&self) -> NotifyStats {
        NotifyStats {
            targets: self
                .targets
                .iter()
                .map(|target| {
                    let groups = self
                        .groups
                        .iter()
                        .filter(|((name, _), _)| *name == target.config.name);
                    let (mut count, mut pending) = (0, 0);
                    for (_, group) in groups {
                        count += 1;
                        pending += u64::from(group.pending.is_some());
                    }
                    TargetStats {
                        pending,
                        groups: count,
                        ..target.counters.clone()
                    }
                })
                .collect(),
        }
    }

    /// The latest failure of a notification holding `alert_id`, on any target, unless that
    /// target has delivered one holding it since.
    pub fn last_error(&self, alert_id: &str) -> Option<&DeliveryError> {
        self.errors
            .range((alert_id.to_string(), String::new())..)
            .take_while(|((id, _), _)| id == alert_id)
            .map(|(_, error)| error)
            .max_by_key(|error| error.time_ns)
    }

    fn apply_outcomes(&mut self) {
        while let Ok(outcome) = self.outcomes_rx.try_recv() {
            self.apply(outcome);
        }
    }

    fn apply(&mut self, Outcome { attempt, result }: Outcome) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let key = (attempt.target, attempt.group_key);
        let (Some(group), Some(&index)) = (self.groups.get_mut(&key), self.by_name.get(&key.0))
        else {
            return;
        };
        group.in_flight = false;
        let Some(mut pending) = group.pending.take_if(|p| p.seq == attempt.seq) else {
            return;
        };
        let target = &mut self.targets[index];
        let name = &key.0;
        match result {
            Ok(()) => {
                target.counters.sent += 1;
                debug!(receiver = %name, group = %key.1, attempts = pending.attempts + 1, "notification delivered");
                for id in &pending.alert_ids {
                    self.errors.remove(&(id.clone(), name.clone()));
                }
                group.remove_cleared(&pending.clears);
                group.sent = Some(Sent {
                    firing: pending.firing,
                    resolved: pending.resolved,
                    at_ns: attempt.started_ns,
                });
            }
            Err(failure) => {
                target.counters.failed_attempts += 1;
                pending.attempts += 1;
                let error = DeliveryError {
                    target: name.clone(),
                    time_ns: attempt.started_ns,
                    message: format!("attempt {}: {}", pending.attempts, failure.message),
                };
                warn!(receiver = %name, group = %key.1, error = %error.message, "notification failed");
                for id in &pending.alert_ids {
                    self.errors
                        .insert((id.clone(), name.clone()), error.clone());
                }
                if failure.retryable {
                    let cap_ns = target.config.group_interval.as_nanos();
                    pending.next_attempt_ns = attempt
                        .started_ns
                        .saturating_add(deliver::backoff_ns(pending.attempts, cap_ns));
                    group.pending = Some(pending);
                } else {
                    target.counters.dropped_permanent += 1;
                }
            }
        }
    }

    /// Folds this cycle's alerts into the groups of the targets they name.
    fn fold(&mut self, now_ns: i64, alerts: &[Alert]) {
        let mut seen: HashMap<(String, String), HashSet<&str>> = HashMap::new();
        for alert in alerts {
            if !matches!(
                alert.state,
                AlertState::Firing | AlertState::Resolved | AlertState::NoData
            ) {
                continue;
            }
            let names: BTreeSet<&String> = alert.notify.iter().collect();
            for name in names {
                let Some(&index) = self.by_name.get(name) else {
                    continue;
                };
                let config = &self.targets[index].config;
                let labels = group_labels(&config.group_by, &alert.labels);
                let key = (name.clone(), group_key(&labels));
                match alert.state {
                    AlertState::Firing => {
                        let wait_ns = config.group_wait.as_nanos();
                        self.groups
                            .entry(key.clone())
                            .or_insert_with(|| Group::new(name, labels, now_ns, wait_ns))
                            .upsert_firing(alert, wait_ns, now_ns);
                    }
                    AlertState::Resolved => {
                        if let Some(group) = self.groups.get_mut(&key) {
                            group.resolve(&alert.id, Some(alert), now_ns);
                        }
                    }
                    AlertState::Pending | AlertState::NoData => {}
                }
                seen.entry(key).or_default().insert(alert.id.as_str());
            }
        }
        for (key, group) in &mut self.groups {
            let seen_here = seen.get(key);
            let gone: Vec<String> = group
                .alerts
                .values()
                .filter(|a| a.state == AlertState::Firing)
                .filter(|a| !seen_here.is_some_and(|ids| ids.contains(a.id.as_str())))
                .map(|a| a.id.clone())
                .collect();
            for id in gone {
                group.resolve(&id, None, now_ns);
            }
        }
    }

    /// Looks at every group that is due and not waiting for a post's outcome.
    fn look(&mut self, now_ns: i64, silences: &Silences) {
        for (key, group) in &mut self.groups {
            if group.in_flight || group.next_look_ns > now_ns {
                continue;
            }
            let Some(&index) = self.by_name.get(&key.0) else {
                continue;
            };
            let target = &mut self.targets[index];
            let config = &target.config;
            group.flushed = true;
            group.next_look_ns =
                next_look_after(group.next_look_ns, config.group_interval.as_nanos(), now_ns);
            // A look decides afresh: what was not delivered is replaced by what is due now.
            let replaced = group.pending.take();
            if replaced.is_some() {
                target.counters.superseded += 1;
            }
            let clears = group.resolved_members();
            let visible: Vec<&Alert> = group
                .alerts
                .values()
                .filter(|a| !silences.mutes(&a.labels, now_ns))
                .collect();
            let ids = |state: AlertState| -> BTreeSet<String> {
                visible
                    .iter()
                    .filter(|a| a.state == state)
                    .map(|a| a.id.clone())
                    .collect()
            };
            let (firing, resolved) = (ids(AlertState::Firing), ids(AlertState::Resolved));
            // A look that tells nothing still counts as done, as in Alertmanager: the resolved
            // alerts leave the group.
            if visible.is_empty()
                || !needs_update(
                    group.sent.as_ref(),
                    &firing,
                    &resolved,
                    config.send_resolved,
                    config.repeat_interval.as_nanos(),
                    now_ns,
                )
            {
                group.remove_cleared(&clears);
                continue;
            }
            let told: Vec<&Alert> = visible
                .into_iter()
                .filter(|a| config.send_resolved || a.state == AlertState::Firing)
                .collect();
            if told.is_empty() {
                // All resolved and resolved alerts are not told: recorded as told, not posted.
                group.sent = Some(Sent {
                    firing,
                    resolved,
                    at_ns: now_ns,
                });
                group.remove_cleared(&clears);
                continue;
            }
            let context = payload::Context {
                receiver: &config.name,
                group_labels: &group.labels,
                group_key: &key.1,
                external_url: &self.external_url,
            };
            let body = payload::render(config.kind, &context, &told);
            let alert_ids = told.iter().map(|a| a.id.clone()).collect();
            // A replacement keeps the backoff of the one it replaces: the receiver is the same.
            let (attempts, next_attempt_ns) = replaced.map_or((0, now_ns), |old| {
                (old.attempts, old.next_attempt_ns.max(now_ns))
            });
            self.next_seq += 1;
            group.pending = Some(Pending {
                seq: self.next_seq,
                decided_ns: now_ns,
                firing,
                resolved,
                clears,
                alert_ids,
                body,
                attempts,
                next_attempt_ns,
            });
        }
    }

    /// Spawns the due attempts, one per group at a time.
    fn start_attempts(&mut self, now_ns: i64) {
        for (key, group) in &mut self.groups {
            let Some(pending) = &group.pending else {
                continue;
            };
            if group.in_flight || pending.next_attempt_ns > now_ns {
                continue;
            }
            let Some(&index) = self.by_name.get(&key.0) else {
                continue;
            };
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                error!(
                    "notifier tick outside a Tokio runtime: notifications wait for a tick inside one"
                );
                return;
            };
            let target = &mut self.targets[index];
            if pending.attempts > 0 {
                target.counters.retried += 1;
            }
            let attempt = Attempt {
                target: key.0.clone(),
                group_key: key.1.clone(),
                seq: pending.seq,
                started_ns: now_ns,
            };
            let (client, outcomes) = (self.client.clone(), self.outcomes_tx.clone());
            let (url, headers) = (target.config.url.clone(), target.headers.clone());
            let body = pending.body.clone();
            runtime.spawn(async move {
                let result = deliver::post(&client, &url, headers, body).await;
                // The receiving half lives as long as the notifier; once it is gone nobody
                // waits for the outcome.
                let _ = outcomes.send(Outcome { attempt, result });
            });
            group.in_flight = true;
            self.in_flight += 1;
        }
    }

    /// Keeps the errors of alerts still held by a group of the same target.
    fn prune_errors(&mut self) {
        let held: HashSet<(&str, &str)> = self
            .groups
            .iter()
            .flat_map(|((target, _), group)| {
                group
                    .alerts
                    .keys()
                    .map(move |id| (id.as_str(), target.as_str()))
            })
            .collect();
        self.errors
            .retain(|(id, target), _| held.contains(&(id.as_str(), target.as_str())));
    }
}
