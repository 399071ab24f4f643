//! What `rig-agent maintenance` and the running agent say over the maintenance socket: one
//! request line (`status`, `off`, `on <seconds>`) and one JSON answer line, either the
//! state `{"on","until","by"}` or `{"error": "…"}`. Both sides parse here.

use std::io::{self, Read};
use std::time::Duration;

use serde_json::{Value, json};

/// The socket's name in the state directory.
pub const SOCKET: &str = "maintenance.sock";
/// The longest request line, newline included; longer is refused unread.
pub const MAX_REQUEST: usize = 64;
/// The longest answer the client reads.
pub const MAX_ANSWER: usize = 4096;

/// What the client asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    Status,
    Off,
    /// On for this long from now.
    On(Duration),
}

impl Ask {
    pub fn encode(self) -> String {
        match self {
            Ask::Status => "status\n".into(),
            Ask::Off => "off\n".into(),
            Ask::On(d) => format!("on {}\n", d.as_secs()),
        }
    }

    /// The request line (without its newline), strictly: anything else is refused.
    pub fn parse(line: &str) -> Result<Ask, String> {
        match line.split(' ').collect::<Vec<_>>()[..] {
            ["status"] => Ok(Ask::Status),
            ["off"] => Ok(Ask::Off),
            ["on", secs] if !secs.is_empty() && secs.len() <= 12 && secs.bytes().all(|b| b.is_ascii_digit()) => {
                Ok(Ask::On(Duration::from_secs(secs.parse().map_err(|_| "a bad number of seconds")?)))
            }
            _ => Err("the request must be \"status\", \"off\" or \"on <seconds>\"".into()),
        }
    }
}

/// Reads one line of at most `max` bytes (newline included) from `r`: the line without its
/// newline, or an error for a longer one, one cut short, or one that is not UTF-8.
pub fn read_line(r: &mut impl Read, max: usize) -> io::Result<String> {
    let mut buf = Vec::with_capacity(max.min(256));
    let mut byte = [0u8; 256];
    loop {
        let n = r.read(&mut byte)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the line ended without a newline"));
        }
        buf.extend_from_slice(&byte[..n]);
        if let Some(end) = buf.iter().position(|b| *b == b'\n') {
            buf.truncate(end);
            break;
        }
        if buf.len() >= max {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("the line is longer than {max} bytes")));
        }
    }
    String::from_utf8(buf).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "the line is not UTF-8"))
}

/// The answer line for a refusal.
pub fn error(why: &str) -> String {
    format!("{}\n", json!({ "error": why }))
}

/// The answer line for the state `state` (`{"on","until","by"}`).
pub fn state(state: &Value) -> String {
    format!("{state}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_read_back_and_nothing_else_is_a_request() {
        for a in [Ask::Status, Ask::Off, Ask::On(Duration::from_secs(7200))] {
            assert_eq!(Ask::parse(a.encode().trim_end()), Ok(a));
        }
        for bad in ["on", "on -5", "on 2h", "on  5", "on 9999999999999999", "ON 5", "status ", ""] {
            assert!(Ask::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_line_longer_than_its_bound_is_refused_without_reading_on() {
        let mut endless = std::io::repeat(b'o');
        assert_eq!(read_line(&mut endless, MAX_REQUEST).unwrap_err().kind(), io::ErrorKind::InvalidData);
        assert_eq!(read_line(&mut &b"status\nmore"[..], MAX_REQUEST).unwrap(), "status");
        assert!(read_line(&mut &b"stat"[..], MAX_REQUEST).is_err());
    }
}
