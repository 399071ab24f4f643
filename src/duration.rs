//! Human durations as operators write them in the config: `"500ms"`, `"30s"`, `"5m"`, `"1h"`,
//! and sums such as `"1m30s"`. A bare number is refused: `interval = "30"` is ambiguous
//! (seconds? milliseconds?) and a fleet config must not guess.
//!
//! The parsing is humantime's (it also takes `sec`, `min`, `hours`, `days`, `w`); what is
//! ours is the refusals' wording, which names the fix.

use std::fmt;
use std::time::Duration;

/// Why a duration string was refused; the text is shown to the operator after the key name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationError(pub String);

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses `"<number><unit>"` pieces, unit one of `ms`, `s`, `m`, `h`, `d` (or humantime's
/// longer names), whole numbers only.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(DurationError("empty duration".into()));
    }
    if s.contains('.') {
        return Err(DurationError(decimal_point(text, s)));
    }
    // humantime also reads `M` as months and `y` as years (30.44 and 365.25 days): an operator
    // who meant minutes would get a month. Neither is a sensible interval here.
    if let Some(unit) = s
        .split(|c: char| !c.is_ascii_alphabetic())
        .find(|u| matches!(*u, "M" | "month" | "months" | "y" | "year" | "years"))
    {
        return Err(DurationError(format!(
            "\"{text}\" has unit \"{unit}\", which is not allowed (use ms, s, m, h or d)"
        )));
    }
    humantime::parse_duration(s).map_err(|e| {
        DurationError(match e {
            humantime::DurationError::UnknownUnit { unit, value, .. } if unit.is_empty() => {
                format!("\"{text}\" has no unit (write \"{value}s\" or \"{value}ms\")")
            }
            humantime::DurationError::UnknownUnit { unit, .. } => {
                format!("\"{text}\" has unknown unit \"{unit}\" (use ms, s, m, h or d)")
            }
            humantime::DurationError::NumberOverflow => format!("\"{text}\" is too large"),
            _ => format!("\"{text}\" is not a duration"),
        })
    })
}

/// The refusal of `"0.5s"`: the decimal point is the problem, and the same time in a smaller
/// unit is the fix when there is one.
fn decimal_point(text: &str, s: &str) -> String {
    let number_len = s.bytes().take_while(|b| b.is_ascii_digit() || *b == b'.').count();
    let unit_ms = match s[number_len..].trim() {
        "ms" => Some(1.0),
        "s" => Some(1e3),
        "m" => Some(60e3),
        "h" => Some(3600e3),
        "d" => Some(86_400e3),
        _ => None,
    };
    let ms = s[..number_len].parse::<f64>().ok().zip(unit_ms).map(|(n, u)| n * u);
    match ms {
        Some(ms) if ms >= 1.0 && ms.fract() == 0.0 && ms < 1e15 => format!(
            "\"{text}\" has a decimal point; durations are whole numbers of a unit (write \"{}\")",
            format_duration(Duration::from_millis(ms as u64))
        ),
        _ => format!("\"{text}\" has a decimal point; durations are whole numbers of a unit (such as \"500ms\")"),
    }
}

/// Formats a duration the way the config accepts it back (`check` prints these).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        "0s".into()
    } else if ms % 3_600_000 == 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_sums_are_understood() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration(" 2d "), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("5 s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
    }

    #[test]
    fn a_bare_number_is_refused_with_a_hint() {
        let e = parse_duration("30").unwrap_err();
        assert!(e.0.contains("\"30s\""), "{e}");
    }

    #[test]
    fn junk_and_unknown_units_are_refused() {
        assert!(parse_duration("").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("10x").unwrap_err().0.contains("unknown unit"));
        assert!(parse_duration("5M").unwrap_err().0.contains("\"M\""), "months are not minutes");
        assert!(parse_duration("1y").is_err());
        assert!(parse_duration("-5s").is_err());
        assert!(parse_duration("99999999999999999999999s").is_err());
    }

    #[test]
    fn a_decimal_point_is_named_as_the_problem_with_the_same_time_in_a_smaller_unit() {
        let e = parse_duration("0.5s").unwrap_err();
        assert!(e.0.contains("decimal point") && e.0.contains("\"500ms\""), "{e}");
        assert!(!e.0.contains("no unit"), "{e}");
        let e = parse_duration("1.5m").unwrap_err();
        assert!(e.0.contains("\"90s\""), "{e}");
        let e = parse_duration("0.0001ms").unwrap_err();
        assert!(e.0.contains("decimal point"), "{e}");
    }

    #[test]
    fn formatting_round_trips() {
        for s in ["200ms", "30s", "5m", "1h", "1500ms", "0s"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
    }
}
