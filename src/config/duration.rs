//! Human durations as operators write them in the config: `"500ms"`, `"30s"`, `"5m"`, `"1h"`,
//! and sums such as `"1m30s"`. A bare number is refused: `interval = "30"` is ambiguous
//! (seconds? milliseconds?) and a fleet config must not guess.
//!
//! Our own parser rather than humantime's: humantime also reads `M` as months and `y` as
//! years (an operator who meant minutes would get a month) and `us`/`ns`, which no interval
//! here wants, and on armv7 ours is smaller where the binary is at its 1.5 MB target.

use std::fmt;
use std::time::Duration;

use crate::config::error::quoted;

/// Why a duration string was refused; the text is shown to the operator after the key name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationError(pub String);

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses `"<number><unit>"` pieces, unit one of `ms`, `s`, `m`, `h`, `d`.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(DurationError("empty duration".into()));
    }
    if s.contains('.') {
        return Err(DurationError(decimal_point(text, s)));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(DurationError(format!("{} is not a duration", quoted(text))));
        }
        let value: u64 = rest[..digits].parse().map_err(|_| DurationError(format!("{} is too large", quoted(text))))?;
        // "5 s" is what people type; accept it like "5s".
        rest = rest[digits..].trim_start();
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = rest[unit_len..].trim_start();
        let piece = match unit {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value.saturating_mul(60)),
            "h" => Duration::from_secs(value.saturating_mul(3600)),
            "d" => Duration::from_secs(value.saturating_mul(86_400)),
            "" => {
                return Err(DurationError(format!(
                    "{} has no unit (write \"{value}s\" or \"{value}ms\")",
                    quoted(text)
                )));
            }
            other => {
                return Err(DurationError(format!(
                    "{} has unknown unit {} (use ms, s, m, h or d)",
                    quoted(text),
                    quoted(other)
                )));
            }
        };
        total = total.saturating_add(piece);
    }
    Ok(total)
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
            "{} has a decimal point; durations are whole numbers of a unit (write \"{}\")",
            quoted(text),
            format_duration(Duration::from_millis(ms as u64))
        ),
        _ => format!("{} has a decimal point; durations are whole numbers of a unit (such as \"500ms\")", quoted(text)),
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
