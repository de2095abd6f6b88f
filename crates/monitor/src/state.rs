//! The life of one alert instance: each evaluation gives a [`Verdict`], and [`Instance::step`]
//! moves the instance along `inactive → pending → firing → resolved`, or into `no_data`, where
//! it stays frozen (it neither fires nor resolves) until data comes back and it carries on
//! from where it was. The rule's `for` keeps a breach pending until it has held that long;
//! `keep_firing_for` keeps a firing instance firing that long after the breach ends, so a
//! flapping value pages once.

use serde::{Deserialize, Serialize};

use crate::alert::{AlertState, Explained, Labels, Source};
use crate::config::NoData;

/// Where an instance is; [`Phase::Inactive`] instances are watched but not listed as alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Evaluated, and fine.
    Inactive,
    /// Breaching, for less than `for`.
    Pending,
    /// Breaching long enough: people are told.
    Firing,
    /// Was firing, and stopped.
    Resolved,
    /// No data: frozen.
    NoData,
}

impl Phase {
    /// The alert state it is listed as (`None` for inactive).
    pub fn alert_state(self) -> Option<AlertState> {
        match self {
            Self::Inactive => None,
            Self::Pending => Some(AlertState::Pending),
            Self::Firing => Some(AlertState::Firing),
            Self::Resolved => Some(AlertState::Resolved),
            Self::NoData => Some(AlertState::NoData),
        }
    }

    /// The name written in `alert_events.state`: the alert states, and `inactive` for a
    /// pending instance whose breach ended before it fired.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inactive => "inactive",
            Self::Pending => "pending",
            Self::Firing => "firing",
            Self::Resolved => "resolved",
            Self::NoData => "no_data",
        }
    }
}

/// What one evaluation found.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The condition holds.
    Breach {
        /// The measured value.
        value: f64,
        /// What it was compared with.
        threshold: f64,
        /// In words, with the numbers.
        summary: String,
    },
    /// The condition does not hold.
    Fine {
        /// The measured value.
        value: f64,
        /// What it was compared with.
        threshold: f64,
        /// In words, with the numbers.
        summary: String,
    },
    /// Too little data to say.
    NoData {
        /// Why, in words.
        summary: String,
    },
}

impl Verdict {
    /// A breach when `breach`, else fine: a measured value against what it was compared with.
    pub fn compared(breach: bool, value: f64, threshold: f64, summary: String) -> Self {
        if breach {
            Self::Breach {
                value,
                threshold,
                summary,
            }
        } else {
            Self::Fine {
                value,
                threshold,
                summary,
            }
        }
    }
}

/// How a rule turns verdicts into states.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// How long a breach must hold before firing.
    pub for_ns: i64,
    /// How long a firing instance keeps firing after the breach ends.
    pub keep_firing_for_ns: i64,
    /// What no data means.
    pub no_data: NoData,
}

/// One alert instance and its history's last steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// The fingerprint of `labels`.
    pub id: String,
    /// The rule's or SLO's name.
    pub name: String,
    /// Rule, SLO or check.
    pub source: Source,
    /// Its labels.
    pub labels: Labels,
    /// Where it is.
    pub phase: Phase,
    /// Where it was when it went to `no_data`.
    pub frozen_phase: Option<Phase>,
    /// When it entered `phase` (ns).
    pub since_ns: i64,
    /// When the current breach began (pending or firing; ns).
    pub active_since_ns: Option<i64>,
    /// When it last began firing (ns).
    pub fired_at_ns: Option<i64>,
    /// When it last resolved (ns).
    pub resolved_at_ns: Option<i64>,
    /// The last evaluation that found the condition holding (ns).
    pub last_breach_ns: Option<i64>,
    /// The last measured value.
    pub value: Option<f64>,
    /// What it was compared with.
    pub threshold: Option<f64>,
    /// The last verdict in words.
    pub summary: String,
    /// The last evaluation (ns).
    pub evaluated_ns: i64,
    /// What set its bad requests apart when it last began firing.
    #[serde(default)]
    pub explained: Option<Explained>,
}

/// A change of phase, as written to `alert_events`.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// From.
    pub from: Phase,
    /// To.
    pub to: Phase,
}

impl Instance {
    /// A new, inactive instance.
    pub fn new(id: String, name: String, source: Source, labels: Labels, now_ns: i64) -> Self {
        Self {
            id,
            name,
            source,
            labels,
            phase: Phase::Inactive,
            frozen_phase: None,
            since_ns: now_ns,
            active_since_ns: None,
            fired_at_ns: None,
            resolved_at_ns: None,
            last_breach_ns: None,
            value: None,
            threshold: None,
            summary: String::new(),
            evaluated_ns: now_ns,
            explained: None,
        }
    }

    fn enter(&mut self, to: Phase, now_ns: i64) -> Option<Transition> {
        if self.phase == to {
            return None;
        }
        let from = self.phase;
        self.phase = to;
        self.since_ns = now_ns;
        Some(Transition { from, to })
    }

    /// Applies one evaluation's verdict at `now_ns`; the change of phase, if any.
    pub fn step(&mut self, verdict: Verdict, timing: Timing, now_ns: i64) -> Option<Transition> {
        self.evaluated_ns = now_ns;
        let breach = matches!(verdict, Verdict::Breach { .. });
        let breach = match verdict {
            Verdict::Breach {
                value,
                threshold,
                summary,
            }
            | Verdict::Fine {
                value,
                threshold,
                summary,
            } => {
                self.value = Some(value);
                self.threshold = Some(threshold);
                self.summary = summary;
                breach
            }
            Verdict::NoData { summary } => {
                self.summary = summary;
                match timing.no_data {
                    NoData::Ok => false,
                    NoData::Firing => true,
                    NoData::NoData => {
                        if self.phase == Phase::NoData {
                            return None;
                        }
                        self.frozen_phase = Some(self.phase);
                        return self.enter(Phase::NoData, now_ns);
                    }
                }
            }
        };
        // Data again: carry on from where it froze, reporting the thaw as one transition.
        let thawed_from = (self.phase == Phase::NoData).then_some(Phase::NoData);
        if let Some(frozen) = thawed_from.and(self.frozen_phase.take()) {
            self.phase = frozen;
        }
        let change = if breach {
            self.last_breach_ns = Some(now_ns);
            match self.phase {
                Phase::Firing => None,
                Phase::Pending => {
                    let since = self.active_since_ns.unwrap_or(now_ns);
                    if now_ns - since >= timing.for_ns {
                        self.fired_at_ns = Some(now_ns);
                        self.enter(Phase::Firing, now_ns)
                    } else {
                        None
                    }
                }
                Phase::Inactive | Phase::Resolved | Phase::NoData => {
                    self.active_since_ns = Some(now_ns);
                    self.resolved_at_ns = None;
                    if timing.for_ns <= 0 {
                        self.fired_at_ns = Some(now_ns);
                        self.enter(Phase::Firing, now_ns)
                    } else {
                        self.enter(Phase::Pending, now_ns)
                    }
                }
            }
        } else {
            match self.phase {
                Phase::Firing => {
                    let last = self.last_breach_ns.unwrap_or(now_ns);
                    if now_ns - last >= timing.keep_firing_for_ns {
                        self.resolved_at_ns = Some(now_ns);
                        self.active_since_ns = None;
                        self.enter(Phase::Resolved, now_ns)
                    } else {
                        None
                    }
                }
                Phase::Pending => {
                    self.active_since_ns = None;
                    self.enter(Phase::Inactive, now_ns)
                }
                Phase::Inactive | Phase::Resolved => None,
                Phase::NoData => self.enter(Phase::Inactive, now_ns),
            }
        };
        match (thawed_from, change) {
            (Some(from), Some(t)) => Some(Transition { from, to: t.to }),
            (Some(from), None) if self.phase != from => {
                self.since_ns = now_ns;
                Some(Transition {
                    from,
                    to: self.phase,
                })
            }
            (_, change) => change,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn breach() -> Verdict {
        Verdict::Breach {
            value: 0.2,
            threshold: 0.05,
            summary: "high".into(),
        }
    }
    fn fine() -> Verdict {
        Verdict::Fine {
            value: 0.01,
            threshold: 0.05,
            summary: "low".into(),
        }
    }
    fn none() -> Verdict {
        Verdict::NoData {
            summary: "nothing".into(),
        }
    }
    fn timing(for_s: i64, keep_s: i64, no_data: NoData) -> Timing {
        Timing {
            for_ns: for_s * S,
            keep_firing_for_ns: keep_s * S,
            no_data,
        }
    }
    fn instance() -> Instance {
        Instance::new("a".into(), "r".into(), Source::Rule, Labels::new(), 0)
    }
    fn to(t: Option<Transition>) -> Option<Phase> {
        t.map(|t| t.to)
    }

    #[test]
    fn a_breach_is_pending_for_its_for_then_fires_and_resolves_after_keep_firing_for() {
        let t = timing(120, 300, NoData::NoData);
        let mut i = instance();
        assert_eq!(to(i.step(breach(), t, 0)), Some(Phase::Pending));
        assert_eq!(to(i.step(breach(), t, 60 * S)), None, "still within for");
        assert_eq!(to(i.step(breach(), t, 120 * S)), Some(Phase::Firing));
        assert_eq!(i.fired_at_ns, Some(120 * S));
        assert_eq!(
            to(i.step(fine(), t, 150 * S)),
            None,
            "keep_firing_for holds it"
        );
        assert_eq!(
            to(i.step(breach(), t, 200 * S)),
            None,
            "a flap does not re-fire"
        );
        assert_eq!(to(i.step(fine(), t, 499 * S)), None);
        assert_eq!(to(i.step(fine(), t, 500 * S)), Some(Phase::Resolved));
        assert_eq!(i.resolved_at_ns, Some(500 * S));
        // A new breach starts a new pending period.
        assert_eq!(to(i.step(breach(), t, 600 * S)), Some(Phase::Pending));
        assert_eq!(i.active_since_ns, Some(600 * S));
    }

    #[test]
    fn a_pending_breach_that_ends_goes_back_to_inactive_without_firing() {
        let t = timing(120, 0, NoData::NoData);
        let mut i = instance();
        i.step(breach(), t, 0);
        assert_eq!(to(i.step(fine(), t, 60 * S)), Some(Phase::Inactive));
        assert_eq!(i.fired_at_ns, None);
        // And `for` counts afresh.
        i.step(breach(), t, 100 * S);
        assert_eq!(to(i.step(breach(), t, 180 * S)), None);
        assert_eq!(to(i.step(breach(), t, 220 * S)), Some(Phase::Firing));
    }

    #[test]
    fn no_data_freezes_a_firing_instance_and_it_carries_on_when_data_returns() {
        let t = timing(0, 0, NoData::NoData);
        let mut i = instance();
        assert_eq!(to(i.step(breach(), t, 0)), Some(Phase::Firing));
        assert_eq!(to(i.step(none(), t, 30 * S)), Some(Phase::NoData));
        assert_eq!(to(i.step(none(), t, 60 * S)), None, "frozen");
        assert_eq!(i.resolved_at_ns, None, "no data never resolves");
        let back = i.step(breach(), t, 90 * S).expect("thaws");
        assert_eq!((back.from, back.to), (Phase::NoData, Phase::Firing));
        assert_eq!(i.fired_at_ns, Some(0), "still the same firing");
        i.step(none(), t, 120 * S);
        let fixed = i
            .step(fine(), t, 150 * S)
            .expect("resolves once data says so");
        assert_eq!((fixed.from, fixed.to), (Phase::NoData, Phase::Resolved));
    }

    #[test]
    fn no_data_may_mean_ok_or_firing_when_the_rule_says_so() {
        let mut i = instance();
        let ok = timing(0, 0, NoData::Ok);
        i.step(breach(), ok, 0);
        assert_eq!(to(i.step(none(), ok, 30 * S)), Some(Phase::Resolved));
        let firing = timing(0, 0, NoData::Firing);
        let mut j = instance();
        assert_eq!(to(j.step(none(), firing, 0)), Some(Phase::Firing));
    }
}
