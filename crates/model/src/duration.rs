//! The duration syntax of flags, config keys and query strings (`500ms`, `30s`, `15m`, `1h`,
//! `7d`, `2w`, and combinations such as `1h30m`), and the serde types that every config key
//! holding a duration uses: [`HumanDuration`], and [`Lifetime`] where `"forever"` is allowed.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::time_range::NS_PER_SECOND;

/// A duration string that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationParseError {
    /// The text as given.
    pub input: String,
}

impl fmt::Display for DurationParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid duration {:?}: expected a number followed by a unit (ms, s, m, h, d or w), e.g. 15m, 1h, 7d",
            self.input
        )
    }
}

impl std::error::Error for DurationParseError {}

/// Parses `500ms`, `30s`, `15m`, `1h`, `7d`, `2w` (and combinations such as `1h30m`) into ns.
pub fn parse_duration_ns(input: &str) -> Result<i64, DurationParseError> {
    let err = || DurationParseError {
        input: input.to_string(),
    };
    let text = input.trim();
    if text.is_empty() {
        return Err(err());
    }
    let mut total: i64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(err());
        }
        let number: i64 = rest[..digits].parse().map_err(|_| err())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale: i64 = match unit {
            "ns" => 1,
            "us" => 1_000,
            "ms" => 1_000_000,
            "s" => NS_PER_SECOND,
            "m" => 60 * NS_PER_SECOND,
            "h" => 3600 * NS_PER_SECOND,
            "d" => 86_400 * NS_PER_SECOND,
            "w" => 7 * 86_400 * NS_PER_SECOND,
            _ => return Err(err()),
        };
        total = number
            .checked_mul(scale)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(err)?;
    }
    Ok(total)
}

/// A duration written as text in config (`"30s"`, `"7d"`); serialized back the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration {
    ns: i64,
}

impl HumanDuration {
    /// No time at all.
    pub const ZERO: HumanDuration = HumanDuration { ns: 0 };

    /// A duration of `secs` seconds.
    pub const fn from_secs(secs: i64) -> Self {
        Self {
            ns: secs * NS_PER_SECOND,
        }
    }

    /// A duration of `ns` nanoseconds (negative values count as zero).
    pub const fn from_nanos(ns: i64) -> Self {
        Self {
            ns: if ns < 0 { 0 } else { ns },
        }
    }

    /// The duration in nanoseconds.
    pub const fn as_nanos(self) -> i64 {
        self.ns
    }

    /// The duration as the standard library's type.
    pub fn as_std(self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.ns as u64)
    }

    /// Whether it is no time at all.
    pub const fn is_zero(self) -> bool {
        self.ns == 0
    }
}

impl fmt::Display for HumanDuration {
    /// The largest unit that divides the duration: `7d`, `12h`, `90s`, `250ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(i64, &str); 6] = [
            (86_400 * NS_PER_SECOND, "d"),
            (3600 * NS_PER_SECOND, "h"),
            (60 * NS_PER_SECOND, "m"),
            (NS_PER_SECOND, "s"),
            (1_000_000, "ms"),
            (1_000, "us"),
        ];
        if self.ns == 0 {
            return f.write_str("0s");
        }
        for (scale, unit) in UNITS {
            if self.ns % scale == 0 {
                return write!(f, "{}{unit}", self.ns / scale);
            }
        }
        write!(f, "{}ns", self.ns)
    }
}

impl std::str::FromStr for HumanDuration {
    type Err = DurationParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse_duration_ns(text).map(Self::from_nanos)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// How long something lasts: a [`HumanDuration`] or `"forever"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Lifetime {
    /// No bound.
    #[default]
    Forever,
    /// Bounded by this duration.
    For(HumanDuration),
}

impl Lifetime {
    /// The bound in nanoseconds; `None` for forever.
    pub fn as_nanos(self) -> Option<i64> {
        match self {
            Self::Forever => None,
            Self::For(d) => Some(d.as_nanos()),
        }
    }

    /// Whether `self` lasts at least as long as `other`.
    pub fn outlasts(self, other: Lifetime) -> bool {
        match (self, other) {
            (Self::Forever, _) => true,
            (Self::For(_), Self::Forever) => false,
            (Self::For(a), Self::For(b)) => a >= b,
        }
    }
}

impl fmt::Display for Lifetime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Forever => f.write_str("forever"),
            Self::For(d) => d.fmt(f),
        }
    }
}

impl<'de> Deserialize<'de> for Lifetime {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.trim() == "forever" {
            return Ok(Self::Forever);
        }
        text.parse()
            .map(Self::For)
            .map_err(|e: DurationParseError| {
                serde::de::Error::custom(format!("{e}, or \"forever\""))
            })
    }
}

impl Serialize for Lifetime {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_duration_reads_units_and_combinations() {
        assert_eq!(parse_duration_ns("15m"), Ok(15 * 60 * NS_PER_SECOND));
        assert_eq!(parse_duration_ns("1h30m"), Ok(5400 * NS_PER_SECOND));
        assert_eq!(parse_duration_ns("7d"), Ok(7 * 86_400 * NS_PER_SECOND));
        assert_eq!(parse_duration_ns("250ms"), Ok(250_000_000));
    }

    #[test]
    fn parse_duration_rejects_missing_unit_and_garbage() {
        assert!(parse_duration_ns("15").is_err());
        assert!(parse_duration_ns("h").is_err());
        assert!(parse_duration_ns("1y").is_err());
        assert!(parse_duration_ns("").is_err());
        assert!(parse_duration_ns("99999999999999999d").is_err());
    }

    #[test]
    fn human_durations_read_and_print_the_same_text() {
        for text in ["7d", "12h", "90s", "250ms", "0s", "15m"] {
            let d: HumanDuration = text.parse().expect("a duration");
            assert_eq!(d.to_string(), text);
        }
        assert_eq!(
            "1h30m".parse::<HumanDuration>().map(|d| d.to_string()),
            Ok("90m".into())
        );
        assert_eq!(
            "2w".parse::<HumanDuration>().map(|d| d.to_string()),
            Ok("14d".into())
        );
        assert!(Lifetime::Forever.outlasts(Lifetime::For(HumanDuration::from_secs(1))));
        assert!(!Lifetime::For(HumanDuration::from_secs(1)).outlasts(Lifetime::Forever));
        assert!(
            Lifetime::For(HumanDuration::from_secs(2))
                .outlasts(Lifetime::For(HumanDuration::from_secs(2)))
        );
    }
}
