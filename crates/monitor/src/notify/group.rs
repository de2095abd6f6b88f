//! One aggregation group: the alerts of one target that share the values of its `group_by`
//! labels, when the group is looked at next, what it last told the receiver, and the
//! notification not yet delivered. The rule deciding whether a look sends anything is
//! Alertmanager's (its dispatcher's flush and its dedup stage's `needsUpdate`), written once
//! here in [`needs_update`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::alert::{Alert, AlertState, Labels};

/// The `group_by` entry that means every label, as in Alertmanager.
pub(crate) const GROUP_BY_ALL: &str = "...";

/// The labels an alert is grouped by under `group_by`: those named (every one for
/// [`GROUP_BY_ALL`]) that the alert has with a non-empty value. A missing label and an empty one
/// are the same, as in Prometheus, so both group together.
pub(crate) fn group_labels(group_by: &[String], labels: &Labels) -> Labels {
    let all = group_by.iter().any(|name| name == GROUP_BY_ALL);
    labels
        .iter()
        .filter(|(name, value)| !value.is_empty() && (all || group_by.contains(name)))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

/// Alertmanager's group key for its root route: `{}:` then the group labels as Go prints a
/// label set — `name="value"` pairs sorted as strings, joined with `", "`, in braces, the
/// value quoted as Go's `strconv.Quote` does.
pub(crate) fn group_key(group_labels: &Labels) -> String {
    let mut pairs: Vec<String> = group_labels
        .iter()
        .map(|(name, value)| format!("{name}={}", go_quote(value)))
        .collect();
    pairs.sort_unstable();
    format!("{{}}:{{{}}}", pairs.join(", "))
}

/// `text` in double quotes with Go's escapes: `\"`, `\\`, the named control escapes, `\xNN`
/// for other ASCII control bytes and `\uNNNN` for other control characters. Go also escapes
/// non-printable Unicode outside the control range; Rust has no `IsPrint` table, so those pass
/// through (label values that hold them are not expected).
fn go_quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{07}' => out.push_str("\\a"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{0b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The first look of a group not yet looked at, or the next one on its grid: `scheduled` moved
/// on by whole `step`s until it lies after `now_ns`. A zero step counts as one nanosecond, so a
/// zero `group_interval` looks at every tick.
pub(crate) fn next_look_after(scheduled_ns: i64, step_ns: i64, now_ns: i64) -> i64 {
    if scheduled_ns > now_ns {
        return scheduled_ns;
    }
    let step_ns = step_ns.max(1);
    let behind = (now_ns - scheduled_ns) / step_ns + 1;
    scheduled_ns.saturating_add(behind.saturating_mul(step_ns))
}

/// What the receiver was last told, successfully: the alert ids it heard of as firing and as
/// resolved, and when (Alertmanager's notification log entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Sent {
    pub(crate) firing: BTreeSet<String>,
    pub(crate) resolved: BTreeSet<String>,
    pub(crate) at_ns: i64,
}

/// Whether a look at a group sends a notification, given what was last sent, the ids firing
/// and resolved now (silenced ones left out) and the target's settings. Alertmanager's
/// `needsUpdate`, except that the repeat is due once `repeat_ns` has fully passed.
pub(crate) fn needs_update(
    sent: Option<&Sent>,
    firing: &BTreeSet<String>,
    resolved: &BTreeSet<String>,
    send_resolved: bool,
    repeat_ns: i64,
    now_ns: i64,
) -> bool {
    // Never told: tell, unless only resolved alerts are left (the receiver never heard of them).
    let Some(sent) = sent else {
        return !firing.is_empty();
    };
    if !firing.is_subset(&sent.firing) {
        return true;
    }
    // Everything resolved: tell once, whatever send_resolved says, so the record of what
    // fires is cleared (the post itself is skipped without send_resolved).
    if firing.is_empty() {
        return !sent.firing.is_empty();
    }
    if send_resolved && !resolved.is_subset(&sent.resolved) {
        return true;
    }
    now_ns.saturating_sub(sent.at_ns) >= repeat_ns
}

/// A notification decided and not yet delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Pending {
    /// Matches an attempt's outcome to the notification it carried.
    pub(crate) seq: u64,
    /// When it was decided.
    pub(crate) decided_ns: i64,
    /// What [`Sent`] becomes once it is delivered.
    pub(crate) firing: BTreeSet<String>,
    pub(crate) resolved: BTreeSet<String>,
    /// Resolved members (id and end) that leave the group once it is delivered, unless they
    /// changed since.
    pub(crate) clears: BTreeMap<String, Option<i64>>,
    /// The alerts in the body, whose last error a failure sets and a delivery clears.
    pub(crate) alert_ids: Vec<String>,
    /// The request body, kept so every attempt posts the same bytes.
    pub(crate) body: String,
    /// Failed attempts so far.
    pub(crate) attempts: u32,
    /// When the next attempt is due.
    pub(crate) next_attempt_ns: i64,
}

/// One aggregation group. Serialized as part of the notifier's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Group {
    /// The `[[notify]]` target.
    pub(crate) target: String,
    /// The group labels (see [`group_labels`]).
    pub(crate) labels: Labels,
    pub(crate) created_ns: i64,
    /// When it is looked at next.
    pub(crate) next_look_ns: i64,
    /// Whether it has been looked at once (its group_wait is over).
    pub(crate) flushed: bool,
    /// Its alerts by id, as last seen: firing, or resolved and not yet told.
    pub(crate) alerts: BTreeMap<String, Alert>,
    /// What the receiver was last told.
    pub(crate) sent: Option<Sent>,
    /// A notification not yet delivered.
    pub(crate) pending: Option<Pending>,
    /// An attempt is being posted; its outcome is not in yet. Not saved: after a restart the
    /// pending notification is attempted again.
    #[serde(skip)]
    pub(crate) in_flight: bool,
}

impl Group {
    /// A group created at `now_ns`; first looked at after `group_wait_ns`.
    pub(crate) fn new(target: &str, labels: Labels, now_ns: i64, group_wait_ns: i64) -> Self {
        Self {
            target: target.to_string(),
            labels,
            created_ns: now_ns,
            next_look_ns: now_ns.saturating_add(group_wait_ns),
            flushed: false,
            alerts: BTreeMap::new(),
            sent: None,
            pending: None,
            in_flight: false,
        }
    }

    /// The alert fires: it joins the group or is updated. As in Alertmanager, a group not yet
    /// looked at is looked at right away when the alert has been firing longer than
    /// `group_wait_ns` already (say, after a restart without state).
    pub(crate) fn upsert_firing(&mut self, alert: &Alert, group_wait_ns: i64, now_ns: i64) {
        if !self.flushed && alert.starts_at_ns.saturating_add(group_wait_ns) < now_ns {
            self.next_look_ns = self.next_look_ns.min(now_ns);
        }
        let mut member = alert.clone();
        member.state = AlertState::Firing;
        member.ends_at_ns = None;
        self.alerts.insert(alert.id.clone(), member);
    }

    /// The alert `id` no longer fires, since `ends_at_ns`. Only a member can resolve: an alert
    /// the group never held was never told as firing.
    pub(crate) fn resolve(&mut self, id: &str, latest: Option<&Alert>, ends_at_ns: i64) {
        if let Some(member) = self.alerts.get_mut(id) {
            // A member already resolved keeps its end: the end is what tells a resolved alert
            // that was told apart from one that resolved again.
            let previous_end = if member.state == AlertState::Resolved {
                member.ends_at_ns
            } else {
                None
            };
            if let Some(latest) = latest {
                *member = latest.clone();
            }
            member.state = AlertState::Resolved;
            member.ends_at_ns = latest
                .and_then(|l| l.ends_at_ns)
                .or(previous_end)
                .or(Some(ends_at_ns));
        }
    }

    /// The resolved members now (id and end).
    pub(crate) fn resolved_members(&self) -> BTreeMap<String, Option<i64>> {
        self.alerts
            .values()
            .filter(|a| a.state == AlertState::Resolved)
            .map(|a| (a.id.clone(), a.ends_at_ns))
            .collect()
    }

    /// Removes the resolved members in `clears` that have not changed since (an alert that
    /// fired again stays).
    pub(crate) fn remove_cleared(&mut self, clears: &BTreeMap<String, Option<i64>>) {
        self.alerts.retain(|id, alert| {
            !(alert.state == AlertState::Resolved && clears.get(id) == Some(&alert.ends_at_ns))
        });
    }

    /// Nothing left to hold, tell or deliver.
    pub(crate) fn is_spent(&self) -> bool {
        self.alerts.is_empty() && self.pending.is_none() && !self.in_flight
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn ids(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn group_labels_take_the_named_labels_or_all_and_missing_equals_empty() {
        let by = vec!["alertname".to_string(), "service".to_string()];
        let alert = labels(&[("alertname", "x"), ("service", "a"), ("severity", "page")]);
        assert_eq!(
            group_labels(&by, &alert),
            labels(&[("alertname", "x"), ("service", "a")])
        );
        let missing = labels(&[("alertname", "x")]);
        let empty = labels(&[("alertname", "x"), ("service", "")]);
        assert_eq!(group_labels(&by, &missing), group_labels(&by, &empty));
        assert_eq!(group_labels(&["...".to_string()], &alert), alert);
        assert_eq!(group_labels(&[], &alert), Labels::new());
    }

    #[test]
    fn group_keys_are_written_as_alertmanager_writes_them() {
        assert_eq!(
            group_key(&labels(&[("service", "y"), ("alertname", "x")])),
            r#"{}:{alertname="x", service="y"}"#
        );
        assert_eq!(group_key(&Labels::new()), "{}:{}");
        assert_eq!(
            group_key(&labels(&[("a", "say \"hi\"\\\n\u{1}")])),
            r#"{}:{a="say \"hi\"\\\n\x01"}"#
        );
        // Go sorts the printed pairs, not the names: "a-b=" sorts before "a=".
        assert_eq!(
            group_key(&labels(&[("a", "1"), ("a-b", "2")])),
            r#"{}:{a-b="2", a="1"}"#
        );
        assert_eq!(go_quote("é\u{85}"), "\"é\\u0085\"");
    }

    #[test]
    fn looks_keep_to_their_grid() {
        assert_eq!(next_look_after(100, 10, 50), 100);
        assert_eq!(next_look_after(100, 10, 100), 110);
        assert_eq!(next_look_after(100, 10, 135), 140);
        assert_eq!(next_look_after(100, 0, 100), 101);
        assert_eq!(next_look_after(i64::MAX - 1, 10, i64::MAX), i64::MAX);
    }

    #[test]
    fn needs_update_follows_alertmanagers_dedup_rule() {
        let none = ids(&[]);
        // Never told: only firing alerts are worth a notification.
        assert!(needs_update(None, &ids(&["a"]), &none, true, 100, 0));
        assert!(!needs_update(None, &none, &ids(&["a"]), true, 100, 0));
        let sent = Sent {
            firing: ids(&["a", "b"]),
            resolved: none.clone(),
            at_ns: 1_000,
        };
        // Nothing new, repeat not yet due.
        assert!(!needs_update(
            Some(&sent),
            &ids(&["a", "b"]),
            &none,
            true,
            100,
            1_099
        ));
        assert!(needs_update(
            Some(&sent),
            &ids(&["a", "b"]),
            &none,
            true,
            100,
            1_100
        ));
        // A new firing alert.
        assert!(needs_update(
            Some(&sent),
            &ids(&["a", "c"]),
            &none,
            true,
            100,
            1_001
        ));
        // A resolved one: told with send_resolved, not without.
        assert!(needs_update(
            Some(&sent),
            &ids(&["b"]),
            &ids(&["a"]),
            true,
            100,
            1_001
        ));
        assert!(!needs_update(
            Some(&sent),
            &ids(&["b"]),
            &ids(&["a"]),
            false,
            100,
            1_001
        ));
        // All resolved: always, to clear what is recorded as firing.
        assert!(needs_update(
            Some(&sent),
            &none,
            &ids(&["a", "b"]),
            false,
            100,
            1_001
        ));
        let cleared = Sent {
            firing: none.clone(),
            resolved: ids(&["a", "b"]),
            at_ns: 1_000,
        };
        assert!(!needs_update(
            Some(&cleared),
            &none,
            &ids(&["c"]),
            true,
            100,
            9_999
        ));
    }
}
