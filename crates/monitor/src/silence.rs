//! Silences: a time span during which alerts whose labels match are left out of notifications.
//!
//! A silence matches an alert when every one of its matchers (a label name and an exact value)
//! equals the alert's label; a label the alert does not have counts as the empty value, as in
//! Prometheus. Silences mute notifications only: the alert keeps its state, its page and its
//! history. [`Silences`] is the set the API edits and the notifier reads; it serializes so the
//! caller can keep it across restarts.

use serde::{Deserialize, Serialize};
use sightline_model::ErrorCode;

use crate::alert::{Labels, fingerprint};

/// How long an expired silence stays listed (and in the saved set) before [`Silences::prune`]
/// drops it.
pub const EXPIRED_RETENTION_NS: i64 = 24 * 3_600 * 1_000_000_000;

/// Why a silence was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SilenceError {
    /// No matchers: the silence would mute every alert.
    #[error(
        "a silence needs at least one matcher (label name and exact value, like alertname=\"orders-errors\"); without one it would mute every alert"
    )]
    NoMatchers,
    /// A matcher with an empty label name.
    #[error("matcher label names must not be empty; found a matcher with value {value:?}")]
    EmptyLabelName {
        /// The value the nameless matcher had.
        value: String,
    },
    /// Every matcher wants the empty value, so it matches every alert lacking those labels.
    #[error(
        "at least one matcher needs a non-empty value; matchers that all want \"\" mute every alert that lacks those labels"
    )]
    OnlyEmptyValues,
    /// The duration is zero or negative.
    #[error("a silence must last longer than 0 ns, not {duration_ns} ns; use e.g. 2h")]
    NotPositive {
        /// The duration asked for.
        duration_ns: i64,
    },
    /// The end would lie past the year 2262, where nanosecond timestamps end.
    #[error("a silence of {duration_ns} ns ends past the last representable time; ask for less")]
    TooLong {
        /// The duration asked for.
        duration_ns: i64,
    },
}

impl SilenceError {
    /// Every refusal is the request's fault; sending it again unchanged fails again.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::BadRequest
    }
}

/// One silence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Silence {
    /// 16 hex digits, unique within its [`Silences`].
    pub id: String,
    /// Label name to exact value; an alert is muted when all of them match.
    pub matchers: Labels,
    /// When it began muting, ns since the epoch.
    pub starts_at_ns: i64,
    /// When it stops muting (exclusive), ns since the epoch.
    pub ends_at_ns: i64,
    /// Why, for the people who see it.
    pub comment: String,
    /// Who made it, when the API knows.
    #[serde(default)]
    pub created_by: Option<String>,
}

impl Silence {
    /// Whether it mutes at `now_ns`: started and not yet ended.
    pub fn is_active(&self, now_ns: i64) -> bool {
        self.starts_at_ns <= now_ns && now_ns < self.ends_at_ns
    }

    /// Whether every matcher equals the label of the same name in `labels` (a missing label is
    /// the empty value). Says nothing about time.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.matchers
            .iter()
            .all(|(name, value)| labels.get(name).map_or("", String::as_str) == value)
    }
}

/// A silence as listings show it: the silence and whether it mutes now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListedSilence {
    /// The silence.
    #[serde(flatten)]
    pub silence: Silence,
    /// Whether it mutes at the time of the listing.
    pub active: bool,
}

/// Every silence, active and recently expired. Serializes as a JSON array of [`Silence`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Silences {
    silences: Vec<Silence>,
}

impl Silences {
    /// No silences.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a silence muting `matchers` from `now_ns` for `duration_ns`, with no author.
    pub fn add(
        &mut self,
        matchers: Labels,
        duration_ns: i64,
        comment: impl Into<String>,
        now_ns: i64,
    ) -> Result<Silence, SilenceError> {
        self.add_by(matchers, duration_ns, comment, None, now_ns)
    }

    /// Adds a silence muting `matchers` from `now_ns` for `duration_ns`, made by `created_by`.
    /// Refuses matchers that are empty, nameless or all empty-valued, and a duration that is
    /// not positive; nothing is added then.
    pub fn add_by(
        &mut self,
        matchers: Labels,
        duration_ns: i64,
        comment: impl Into<String>,
        created_by: Option<String>,
        now_ns: i64,
    ) -> Result<Silence, SilenceError> {
        if matchers.is_empty() {
            return Err(SilenceError::NoMatchers);
        }
        if let Some(value) = matchers.get("") {
            return Err(SilenceError::EmptyLabelName {
                value: value.clone(),
            });
        }
        if matchers.values().all(String::is_empty) {
            return Err(SilenceError::OnlyEmptyValues);
        }
        if duration_ns <= 0 {
            return Err(SilenceError::NotPositive { duration_ns });
        }
        let ends_at_ns = now_ns
            .checked_add(duration_ns)
            .ok_or(SilenceError::TooLong { duration_ns })?;
        let silence = Silence {
            id: self.unused_id(&matchers, now_ns),
            matchers,
            starts_at_ns: now_ns,
            ends_at_ns,
            comment: comment.into(),
            created_by,
        };
        self.silences.push(silence.clone());
        Ok(silence)
    }

    /// FNV-1a over the matchers' fingerprint and the start, moved on until no silence has it:
    /// two identical silences made in the same nanosecond still get their own ids.
    fn unused_id(&self, matchers: &Labels, now_ns: i64) -> String {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut add = |bytes: &[u8]| {
            for &b in bytes {
                hash ^= u64::from(b);
                hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
            }
            hash
        };
        add(fingerprint(matchers).as_bytes());
        let mut id = add(&now_ns.to_be_bytes());
        loop {
            let text = format!("{id:016x}");
            if self.get(&text).is_none() {
                return text;
            }
            id = add(&[0xff]);
        }
    }

    /// The silence with `id`, active or not.
    pub fn get(&self, id: &str) -> Option<&Silence> {
        self.silences.iter().find(|s| s.id == id)
    }

    /// Ends the silence `id` at `now_ns` (the API's DELETE). `false` when there is no such
    /// silence or it had already ended; nothing changes then.
    pub fn expire(&mut self, id: &str, now_ns: i64) -> bool {
        match self.silences.iter_mut().find(|s| s.id == id) {
            Some(silence) if silence.ends_at_ns > now_ns => {
                silence.ends_at_ns = now_ns.max(silence.starts_at_ns);
                true
            }
            _ => false,
        }
    }

    /// Active silences and those that ended within [`EXPIRED_RETENTION_NS`], newest (latest
    /// start) first, each with whether it mutes at `now_ns`.
    pub fn list(&self, now_ns: i64) -> Vec<ListedSilence> {
        let mut listed: Vec<ListedSilence> = self
            .silences
            .iter()
            .filter(|s| !expired_long_ago(s, now_ns))
            .map(|s| ListedSilence {
                silence: s.clone(),
                active: s.is_active(now_ns),
            })
            .collect();
        listed.sort_by(|a, b| {
            (b.silence.starts_at_ns, &b.silence.id).cmp(&(a.silence.starts_at_ns, &a.silence.id))
        });
        listed
    }

    /// The active silence muting `labels` at `now_ns`; of several, the one that lasts longest
    /// (what "muted until" should say).
    pub fn matching(&self, labels: &Labels, now_ns: i64) -> Option<&Silence> {
        self.silences
            .iter()
            .filter(|s| s.is_active(now_ns) && s.matches(labels))
            .max_by_key(|s| s.ends_at_ns)
    }

    /// Whether an active silence mutes `labels` at `now_ns`.
    pub fn mutes(&self, labels: &Labels, now_ns: i64) -> bool {
        self.matching(labels, now_ns).is_some()
    }

    /// Drops silences that ended more than [`EXPIRED_RETENTION_NS`] before `now_ns`; returns how
    /// many went.
    pub fn prune(&mut self, now_ns: i64) -> usize {
        let before = self.silences.len();
        self.silences.retain(|s| !expired_long_ago(s, now_ns));
        before - self.silences.len()
    }

    /// How many silences are kept, active or not.
    pub fn len(&self) -> usize {
        self.silences.len()
    }

    /// Whether none are kept.
    pub fn is_empty(&self) -> bool {
        self.silences.is_empty()
    }
}

fn expired_long_ago(silence: &Silence, now_ns: i64) -> bool {
    silence.ends_at_ns.saturating_add(EXPIRED_RETENTION_NS) < now_ns
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND_NS: i64 = 1_000_000_000;
    const HOUR_NS: i64 = 3_600 * SECOND_NS;
    const T0: i64 = 1_700_000_000 * SECOND_NS;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_silence_mutes_matching_labels_only_while_active() {
        let mut silences = Silences::new();
        let silence = silences
            .add(
                labels(&[("alertname", "orders-errors"), ("service", "orders")]),
                HOUR_NS,
                "deploying",
                T0,
            )
            .expect("valid");
        assert_eq!(silence.id.len(), 16);
        assert!(silence.id.bytes().all(|b| b.is_ascii_hexdigit()));
        let firing = labels(&[
            ("alertname", "orders-errors"),
            ("service", "orders"),
            ("severity", "page"),
        ]);
        assert_eq!(
            silences.matching(&firing, T0).map(|s| &s.id),
            Some(&silence.id)
        );
        assert!(silences.mutes(&firing, T0 + HOUR_NS - 1));
        assert!(
            !silences.mutes(&firing, T0 + HOUR_NS),
            "the end is exclusive"
        );
        assert!(!silences.mutes(&firing, T0 - 1), "not before it starts");
        let other = labels(&[("alertname", "orders-errors"), ("service", "cart")]);
        assert!(!silences.mutes(&other, T0), "every matcher must match");
        let without = labels(&[("alertname", "orders-errors")]);
        assert!(!silences.mutes(&without, T0), "a missing label is empty");
    }

    #[test]
    fn an_empty_value_matches_a_missing_label() {
        let mut silences = Silences::new();
        silences
            .add(
                labels(&[("alertname", "x"), ("service", "")]),
                HOUR_NS,
                "",
                T0,
            )
            .expect("valid");
        assert!(silences.mutes(&labels(&[("alertname", "x")]), T0));
        assert!(!silences.mutes(&labels(&[("alertname", "x"), ("service", "a")]), T0));
    }

    #[test]
    fn what_cannot_work_is_refused_saying_what_was_expected() {
        let mut silences = Silences::new();
        let err = silences
            .add(Labels::new(), HOUR_NS, "", T0)
            .expect_err("no matchers");
        assert_eq!(err, SilenceError::NoMatchers);
        assert!(err.to_string().contains("at least one matcher"), "{err}");
        let err = silences
            .add(labels(&[("", "x")]), HOUR_NS, "", T0)
            .expect_err("nameless");
        assert!(err.to_string().contains("must not be empty"), "{err}");
        let err = silences
            .add(labels(&[("service", "")]), HOUR_NS, "", T0)
            .expect_err("only empty values");
        assert!(err.to_string().contains("non-empty value"), "{err}");
        for duration_ns in [0, -SECOND_NS] {
            let err = silences
                .add(labels(&[("service", "a")]), duration_ns, "", T0)
                .expect_err("not positive");
            assert!(err.to_string().contains("longer than 0"), "{err}");
        }
        let err = silences
            .add(labels(&[("service", "a")]), i64::MAX, "", T0)
            .expect_err("too long");
        assert!(matches!(err, SilenceError::TooLong { .. }), "{err}");
        assert!(silences.is_empty(), "nothing refused was kept");
        assert_eq!(err.code(), ErrorCode::BadRequest);
    }

    #[test]
    fn ids_are_unique_even_for_the_same_matchers_at_the_same_time() {
        let mut silences = Silences::new();
        let m = labels(&[("service", "orders")]);
        let a = silences.add(m.clone(), HOUR_NS, "a", T0).expect("valid");
        let b = silences.add(m.clone(), HOUR_NS, "b", T0).expect("valid");
        let c = silences.add(m, HOUR_NS, "c", T0 + 1).expect("valid");
        assert_ne!(a.id, b.id);
        assert_ne!(a.id, c.id);
        assert_ne!(b.id, c.id);
        assert_eq!(silences.len(), 3);
    }

    #[test]
    fn expire_ends_a_silence_now_and_only_once() {
        let mut silences = Silences::new();
        let m = labels(&[("service", "orders")]);
        let s = silences.add(m.clone(), HOUR_NS, "", T0).expect("valid");
        assert!(silences.mutes(&m, T0 + SECOND_NS));
        assert!(silences.expire(&s.id, T0 + 2 * SECOND_NS));
        assert!(!silences.mutes(&m, T0 + 2 * SECOND_NS));
        assert_eq!(
            silences.get(&s.id).map(|s| s.ends_at_ns),
            Some(T0 + 2 * SECOND_NS)
        );
        assert!(!silences.expire(&s.id, T0 + 3 * SECOND_NS), "already ended");
        assert!(!silences.expire("0000000000000000", T0), "unknown id");
    }

    #[test]
    fn list_shows_active_and_recently_expired_newest_first_and_prune_drops_the_old() {
        let mut silences = Silences::new();
        let m = labels(&[("service", "orders")]);
        let old = silences.add(m.clone(), HOUR_NS, "old", T0).expect("valid");
        let recent = silences
            .add(m.clone(), HOUR_NS, "recent", T0 + 20 * HOUR_NS)
            .expect("valid");
        let now = T0 + 26 * HOUR_NS;
        let active = silences
            .add(m, 2 * HOUR_NS, "active", now - HOUR_NS)
            .expect("valid");
        // `old` ended at T0 + 1h: 25 h ago. `recent` ended 5 h ago.
        let listed = silences.list(now);
        let ids: Vec<(&str, bool)> = listed
            .iter()
            .map(|l| (l.silence.id.as_str(), l.active))
            .collect();
        assert_eq!(
            ids,
            vec![(active.id.as_str(), true), (recent.id.as_str(), false)]
        );
        assert_eq!(silences.prune(now), 1);
        assert!(silences.get(&old.id).is_none());
        assert!(silences.get(&recent.id).is_some());
        let json = serde_json::to_value(&listed[0]).expect("serializes");
        assert_eq!(json["active"], true);
        assert_eq!(json["comment"], "active");
    }

    #[test]
    fn silences_round_trip_through_json() {
        let mut silences = Silences::new();
        silences
            .add_by(
                labels(&[("service", "orders")]),
                HOUR_NS,
                "maintenance",
                Some("ana".into()),
                T0,
            )
            .expect("valid");
        let json = serde_json::to_string(&silences).expect("serializes");
        assert!(json.starts_with('['), "{json}");
        let back: Silences = serde_json::from_str(&json).expect("reads back");
        assert_eq!(back, silences);
    }
}
