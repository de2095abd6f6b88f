//! Log severities: OTLP severity numbers (1–24) and the level names people write.

/// The severity name of an OTLP severity number (1–24); 0 means "not given".
pub fn severity_name(number: i32) -> &'static str {
    match number {
        1..=4 => "trace",
        5..=8 => "debug",
        9..=12 => "info",
        13..=16 => "warn",
        17..=20 => "error",
        21.. => "fatal",
        _ => "info",
    }
}

/// A severity number from a level name as Python, Logfire and others write it.
pub fn severity_number_from_text(text: &str) -> Option<i32> {
    let number = match text.trim().to_ascii_lowercase().as_str() {
        "trace" => 1,
        "debug" => 5,
        "info" | "information" => 9,
        "notice" => 10,
        "warn" | "warning" => 13,
        "error" | "err" => 17,
        "fatal" | "critical" | "crit" | "emergency" | "alert" => 21,
        _ => return None,
    };
    Some(number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_agree() {
        for name in ["trace", "debug", "info", "warn", "error", "fatal"] {
            let number = severity_number_from_text(name).expect("a known name");
            assert_eq!(severity_name(number), name);
        }
        assert_eq!(severity_number_from_text(" WARNING "), Some(13));
        assert_eq!(severity_number_from_text("loud"), None);
    }
}
