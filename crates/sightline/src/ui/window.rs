//! The time window every page shows, read from and written back to the URL: a preset
//! (`range=1h`) or a custom range (`range=custom&start=..&end=..`, UTC).

use std::collections::HashMap;

use chrono::{DateTime, NaiveDateTime};
use sightline_model::{TimeRange, parse_duration_ns};

use super::UiError;

/// The presets of the time picker.
pub const PRESETS: &[&str] = &["15m", "1h", "6h", "24h", "7d"];

#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// A preset or `custom`.
    pub range: String,
    pub start_ns: i64,
    pub end_ns: i64,
}

impl Window {
    /// The window a page's URL asks for; `default` when it asks for none.
    pub fn from_params(
        params: &HashMap<String, String>,
        now_ns: i64,
        default: &str,
    ) -> Result<Self, UiError> {
        let get = |key: &str| params.get(key).map(|v| v.trim()).filter(|v| !v.is_empty());
        let range = get("range").unwrap_or(default);
        if range == "custom"
            || (get("range").is_none() && (get("start").is_some() || get("end").is_some()))
        {
            let start = get("start")
                .map(|s| parse_time(s, "start"))
                .transpose()?
                .unwrap_or(now_ns - 3_600_000_000_000);
            let end = get("end")
                .map(|s| parse_time(s, "end"))
                .transpose()?
                .unwrap_or(now_ns);
            if start >= end {
                return Err(UiError::bad_request(
                    "the custom range's start must be before its end",
                ));
            }
            return Ok(Self {
                range: "custom".into(),
                start_ns: start,
                end_ns: end,
            });
        }
        let length = parse_duration_ns(range).map_err(|e| {
            UiError::bad_request(format!(
                "range {range:?} is not a time range: {e} (use 15m, 1h, 6h, 24h, 7d or custom)"
            ))
        })?;
        Ok(Self {
            range: range.to_string(),
            start_ns: now_ns.saturating_sub(length),
            end_ns: now_ns,
        })
    }

    pub fn time_range(&self) -> TimeRange {
        TimeRange::new(Some(self.start_ns), Some(self.end_ns))
    }

    pub fn seconds(&self) -> f64 {
        (self.end_ns - self.start_ns) as f64 / 1e9
    }

    /// The URL parameters that give this window back.
    pub fn params(&self) -> Vec<(&'static str, String)> {
        if self.range == "custom" {
            vec![
                ("range", "custom".into()),
                ("start", input_time(self.start_ns)),
                ("end", input_time(self.end_ns)),
            ]
        } else {
            vec![("range", self.range.clone())]
        }
    }

    /// `range=1h` (or the custom range) for a link's query string.
    pub fn query(&self) -> String {
        encode(&self.params())
    }
}

pub use crate::url::{encode_component as percent, encode_query as encode};

/// A time as a `datetime-local` input shows it (UTC, seconds).
pub fn input_time(ns: i64) -> String {
    DateTime::from_timestamp_nanos(ns)
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

/// Reads `2026-11-22T05:30`, `2026-11-22T05:30:15` (UTC), RFC 3339, or nanoseconds.
fn parse_time(text: &str, what: &str) -> Result<i64, UiError> {
    if let Ok(ns) = text.parse::<i64>() {
        return Ok(ns);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return t
            .timestamp_nanos_opt()
            .ok_or_else(|| UiError::bad_request(format!("{what} {text:?} is out of range")));
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return t
                .and_utc()
                .timestamp_nanos_opt()
                .ok_or_else(|| UiError::bad_request(format!("{what} {text:?} is out of range")));
        }
    }
    Err(UiError::bad_request(format!(
        "{what} {text:?} is not a time: expected 2026-11-22T05:30 (UTC), RFC 3339 or nanoseconds"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000_000_000;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn presets_end_now_and_custom_ranges_round_trip() {
        let w = Window::from_params(&params(&[("range", "15m")]), NOW, "1h").expect("preset");
        assert_eq!((w.start_ns, w.end_ns), (NOW - 900_000_000_000, NOW));
        assert_eq!(w.query(), "range=15m");
        let d = Window::from_params(&params(&[]), NOW, "1h").expect("default");
        assert_eq!(d.range, "1h");

        let c = Window::from_params(
            &params(&[
                ("range", "custom"),
                ("start", "2026-11-22T05:30"),
                ("end", "2026-11-22T06:00:30"),
            ]),
            NOW,
            "1h",
        )
        .expect("custom");
        assert_eq!(c.end_ns - c.start_ns, 1_830_000_000_000);
        assert_eq!(
            c.query(),
            "range=custom&start=2026-11-22T05%3A30%3A00&end=2026-11-22T06%3A00%3A30"
        );
        let again = Window::from_params(
            &c.params()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            NOW,
            "1h",
        )
        .expect("round trip");
        assert_eq!(again, c);
    }

    #[test]
    fn bad_windows_say_what_is_expected() {
        let e = Window::from_params(&params(&[("range", "soon")]), NOW, "1h").expect_err("refused");
        assert!(e.message.contains("15m, 1h"), "{}", e.message);
        let e = Window::from_params(
            &params(&[
                ("range", "custom"),
                ("start", "2026-11-22T06:00"),
                ("end", "2026-11-22T05:00"),
            ]),
            NOW,
            "1h",
        )
        .expect_err("refused");
        assert!(e.message.contains("before its end"), "{}", e.message);
        let e = Window::from_params(
            &params(&[("range", "custom"), ("start", "yesterday")]),
            NOW,
            "1h",
        )
        .expect_err("refused");
        assert!(e.message.contains("2026-11-22T05:30"), "{}", e.message);
    }
}
