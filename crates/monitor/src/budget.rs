//! Error budgets and burn rates.
//!
//! An SLO promises that `objective` percent of requests are good over a rolling `window`. Its
//! error budget is the share that may be bad, `1 - objective / 100`. A burn rate is how fast a
//! span of time spends that budget: the bad share over that span divided by the budget. A burn
//! rate of 1 spends exactly the budget over the window; 14.4 for an hour of a 30-day SLO spends
//! 2 % of the month's budget in that hour (14.4 × 1 h / 720 h).
//!
//! Alerts follow the SRE workbook's multi-window, multi-burn-rate scheme (its chapter "Alerting on
//! SLOs"): for a 30-day window, page when 2 % of the budget burns in an hour (14.4× over 1 h,
//! confirmed over 5 m), page when 5 % burns in six hours (6× over 6 h, confirmed over 30 m), open
//! a ticket when 10 % burns in three days (1× over 3 d, confirmed over 6 h). Both windows of a pair
//! must burn: the long one says the burn is large enough to matter, the short one that it is still
//! happening, so an alert resolves minutes after the burn stops. For other SLO windows the long
//! and short windows scale with the window (the budget shares, and so the burn rates, stay).

use sightline_model::HumanDuration;

const MINUTE_NS: i64 = 60_000_000_000;
const HOUR_NS: i64 = 60 * MINUTE_NS;
const DAY_NS: i64 = 24 * HOUR_NS;

/// The SLO window the workbook's table is written for.
pub const REFERENCE_WINDOW: HumanDuration = HumanDuration::from_nanos(30 * DAY_NS);

/// The windows an SLO's burn rate is reported over: 5m, 30m, 1h, 6h, 1d, 3d.
pub const REPORT_WINDOWS: [HumanDuration; 6] = [
    HumanDuration::from_nanos(5 * MINUTE_NS),
    HumanDuration::from_nanos(30 * MINUTE_NS),
    HumanDuration::from_nanos(HOUR_NS),
    HumanDuration::from_nanos(6 * HOUR_NS),
    HumanDuration::from_nanos(DAY_NS),
    HumanDuration::from_nanos(3 * DAY_NS),
];

/// Good and total requests over some span of time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests that met the indicator (did not fail; for latency, also fast enough).
    pub good: u64,
    /// Every request the indicator looks at.
    pub total: u64,
}

impl Counts {
    /// Requests that did not meet the indicator.
    pub fn bad(&self) -> u64 {
        self.total.saturating_sub(self.good)
    }

    /// The SLI: the share of good requests, from 0 to 1; `None` without requests.
    pub fn sli(&self) -> Option<f64> {
        (self.total > 0).then(|| self.good.min(self.total) as f64 / self.total as f64)
    }
}

/// The error budget of an objective in percent: the share of requests that may be bad.
pub fn error_budget(objective_percent: f64) -> f64 {
    1.0 - objective_percent / 100.0
}

/// How fast `counts` spend the budget of `objective_percent`: the bad share divided by the
/// budget. `None` without requests.
pub fn burn_rate(counts: Counts, objective_percent: f64) -> Option<f64> {
    let budget = error_budget(objective_percent);
    let bad_share = 1.0 - counts.sli()?;
    Some(if bad_share <= 0.0 {
        0.0
    } else if budget > 0.0 {
        bad_share / budget
    } else {
        f64::INFINITY
    })
}

/// The share of the window's budget still unspent by `counts` (the whole window), from 1 (none
/// spent) down; negative once the budget is overspent. `None` without requests.
pub fn budget_remaining(counts: Counts, objective_percent: f64) -> Option<f64> {
    burn_rate(counts, objective_percent).map(|burn| 1.0 - burn)
}

/// How long until the budget is gone if it keeps burning at `burn_rate` (a burn rate of 1 spends
/// the whole budget in one `window`), to the second. `None` when nothing burns; zero when
/// nothing is left ([`budget_remaining`] at or below 0) or the burn is infinite.
pub fn time_to_exhaustion(
    remaining: f64,
    burn_rate: f64,
    window: HumanDuration,
) -> Option<HumanDuration> {
    if remaining <= 0.0 {
        return Some(HumanDuration::ZERO);
    }
    if burn_rate <= 0.0 || !burn_rate.is_finite() {
        return (burn_rate.is_infinite()).then_some(HumanDuration::ZERO);
    }
    // To the second: nobody plans by the nanosecond, and it keeps float noise out.
    let secs = (remaining / burn_rate * window.as_nanos() as f64 / 1e9).round();
    Some(HumanDuration::from_nanos(
        (secs * 1e9).min(i64::MAX as f64) as i64
    ))
}

/// Who an alert is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    /// Someone is woken: the budget goes fast.
    Page,
    /// Someone looks during working hours: the budget goes, slowly.
    Ticket,
}

impl Severity {
    /// `page` or `ticket`, as the alert's `severity` label says it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Page => "page",
            Self::Ticket => "ticket",
        }
    }
}

/// One row of the alert table: both windows must burn faster than `burn_rate`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BurnWindow {
    /// Page or ticket.
    pub severity: Severity,
    /// The window that says the burn matters.
    pub long: HumanDuration,
    /// The window that says it is still happening (a twelfth of the long one).
    pub short: HumanDuration,
    /// The burn rate both must pass.
    pub burn_rate: f64,
}

/// The alert table for an SLO over `window`: the workbook's three rows, their windows scaled by
/// `window / 30d` (rounded to whole minutes, at least one: rollups are per minute).
pub fn alert_windows(window: HumanDuration) -> [BurnWindow; 3] {
    let scale = window.as_nanos() as f64 / REFERENCE_WINDOW.as_nanos() as f64;
    let scaled = |ns: i64| {
        let minutes = (ns as f64 * scale / MINUTE_NS as f64).round().max(1.0);
        HumanDuration::from_nanos(minutes as i64 * MINUTE_NS)
    };
    let row = |severity, long_ns: i64, short_ns: i64, burn_rate| BurnWindow {
        severity,
        long: scaled(long_ns),
        short: scaled(short_ns),
        burn_rate,
    };
    [
        row(Severity::Page, HOUR_NS, 5 * MINUTE_NS, 14.4),
        row(Severity::Page, 6 * HOUR_NS, 30 * MINUTE_NS, 6.0),
        row(Severity::Ticket, 3 * DAY_NS, 6 * HOUR_NS, 1.0),
    ]
}

/// What one row of the alert table says about the counts of its two windows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Both windows burn faster than the row's rate.
    Burning {
        /// The long window's burn rate.
        long: f64,
        /// The short window's burn rate.
        short: f64,
    },
    /// At least one window does not.
    Fine,
    /// The long window had fewer than `min_requests` requests: too few to judge (one error of
    /// three requests is not an outage), and nothing changes.
    TooFew {
        /// Requests in the long window.
        requests: u64,
    },
    /// No requests at all in the long window: the service stopped sending.
    NoData,
}

/// Judges one row: `long` and `short` are the counts of its two windows.
pub fn judge(
    row: &BurnWindow,
    long: Counts,
    short: Counts,
    objective_percent: f64,
    min_requests: u64,
) -> Verdict {
    if long.total == 0 {
        return Verdict::NoData;
    }
    if long.total < min_requests {
        return Verdict::TooFew {
            requests: long.total,
        };
    }
    let long_burn = burn_rate(long, objective_percent).unwrap_or(0.0);
    // A short window without requests has stopped burning.
    let short_burn = burn_rate(short, objective_percent).unwrap_or(0.0);
    if long_burn >= row.burn_rate && short_burn >= row.burn_rate {
        Verdict::Burning {
            long: long_burn,
            short: short_burn,
        }
    } else {
        Verdict::Fine
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> HumanDuration {
        text.parse().expect("a duration")
    }

    fn counts(good: u64, total: u64) -> Counts {
        Counts { good, total }
    }

    #[test]
    fn the_workbook_table_for_thirty_days_and_scaled_for_other_windows() {
        let table = alert_windows(d("30d"));
        let rows: Vec<_> = table
            .iter()
            .map(|r| (r.severity, r.long, r.short, r.burn_rate))
            .collect();
        assert_eq!(
            rows,
            vec![
                (Severity::Page, d("1h"), d("5m"), 14.4),
                (Severity::Page, d("6h"), d("30m"), 6.0),
                (Severity::Ticket, d("3d"), d("6h"), 1.0),
            ]
        );
        // A week: every window a quarter-ish of the month's, the rates the same.
        let week = alert_windows(d("7d"));
        assert_eq!((week[0].long, week[0].short), (d("14m"), d("1m")));
        assert_eq!((week[1].long, week[1].short), (d("84m"), d("7m")));
        assert_eq!((week[2].long, week[2].short), (d("1008m"), d("84m")));
        assert_eq!(week.map(|r| r.burn_rate), [14.4, 6.0, 1.0]);
        // A day: windows never go below a minute, the rollups' step.
        assert_eq!(alert_windows(d("1d"))[0].short, d("1m"));
        // A page row spends 2 % of the budget in its long window: burn × long / window.
        for window in [d("30d"), d("28d"), d("7d")] {
            let row = alert_windows(window)[0];
            let spent = row.burn_rate * row.long.as_nanos() as f64 / window.as_nanos() as f64;
            assert!((spent - 0.02).abs() < 0.002, "{window}: {spent}");
        }
    }

    #[test]
    fn sli_budget_burn_and_time_to_exhaustion() {
        // 99.9 %: one request in a thousand may fail.
        assert!((error_budget(99.9) - 0.001).abs() < 1e-12);
        let hour = counts(9_928, 10_000); // 0.72 % failed
        assert!((hour.sli().expect("requests") - 0.9928).abs() < 1e-12);
        let burn = burn_rate(hour, 99.9).expect("requests");
        assert!((burn - 7.2).abs() < 1e-9, "{burn}");
        assert_eq!(burn_rate(counts(0, 0), 99.9), None);
        assert_eq!(counts(0, 0).sli(), None);
        // Over a 30-day window, 250 of 1,000,000 failed: a quarter of the budget is spent.
        let month = counts(999_750, 1_000_000);
        let remaining = budget_remaining(month, 99.9).expect("requests");
        assert!((remaining - 0.75).abs() < 1e-9, "{remaining}");
        // Burning at 7.2× the rate the window allows, 75 % lasts 0.75 / 7.2 of 30 days.
        let left = time_to_exhaustion(remaining, burn, d("30d")).expect("burning");
        assert_eq!(left, d("75h"));
        assert_eq!(
            time_to_exhaustion(remaining, 0.0, d("30d")),
            None,
            "nothing burns"
        );
        assert_eq!(
            time_to_exhaustion(-0.2, 3.0, d("30d")),
            Some(HumanDuration::ZERO),
            "overspent"
        );
        // A 100 % objective has no budget: any failure burns it all at once.
        assert_eq!(burn_rate(counts(9, 10), 100.0), Some(f64::INFINITY));
        assert_eq!(burn_rate(counts(10, 10), 100.0), Some(0.0));
    }

    #[test]
    fn both_windows_must_burn_and_too_few_requests_or_none_give_no_verdict() {
        let fast = alert_windows(d("30d"))[0]; // 14.4× over 1h and 5m
        let objective = 99.0; // 1 % budget: 14.4× is 14.4 % failing
        let burning = counts(800, 1_000); // 20 % failed: 20×
        let calm = counts(999, 1_000);
        assert!(matches!(
            judge(&fast, burning, burning, objective, 100),
            Verdict::Burning { long, short } if (long - 20.0).abs() < 1e-9 && (short - 20.0).abs() < 1e-9
        ));
        assert_eq!(
            judge(&fast, burning, calm, objective, 100),
            Verdict::Fine,
            "the burn has stopped: the short window is calm"
        );
        assert_eq!(
            judge(&fast, calm, burning, objective, 100),
            Verdict::Fine,
            "a blip: the long window is calm"
        );
        assert_eq!(
            judge(&fast, counts(2, 3), counts(2, 3), objective, 100),
            Verdict::TooFew { requests: 3 },
            "one error in three requests does not page"
        );
        assert_eq!(
            judge(&fast, counts(0, 0), counts(0, 0), objective, 100),
            Verdict::NoData
        );
        assert_eq!(
            judge(&fast, burning, counts(0, 0), objective, 100),
            Verdict::Fine,
            "nothing in the short window: no longer burning"
        );
    }
}
