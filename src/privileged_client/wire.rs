//! The privileged socket's encoding. One request per connection, one line of at most
//! [`MAX_REQUEST`] bytes: `smart <disk>\n`, where `<disk>` is a `/sys/block` name of
//! [a-z0-9] only, at most [`MAX_NAME`] bytes. The answer is one header line of at most
//! [`MAX_HEADER`] bytes, then for `smart` exactly the announced number of bytes of
//! smartctl's stdout (at most [`MAX_OUTPUT`]). Data only, never a file descriptor.
//!
//! `kmsg <boot_id> <seq>\n` (or `kmsg end\n` without a cursor for this boot) asks for the
//! kernel log: the answer is `kmsg\n` and then records in `/dev/kmsg`'s own text form for
//! as long as the connection lives (see `privileged::kmsg`), or `unreadable <why>\n`.

use std::io::{self, BufRead, Read};

use crate::kernel_log::cursor::{self, Cursor};

/// The longest request line, newline included.
pub const MAX_REQUEST: usize = 128;
/// The longest disk name: /sys/block names are short (`nvme10n1`, `sdaa`, `mmcblk0`).
pub const MAX_NAME: usize = 32;
/// The longest answer header line, newline included.
pub const MAX_HEADER: usize = 256;
/// smartctl's JSON for one disk is tens of kilobytes; more is not an answer.
pub const MAX_OUTPUT: usize = 1 << 20;

/// The closed set of things the network half may ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Run smartctl for this monitored disk (`sda`, not `/dev/sda`).
    Smart(String),
    /// Stream the kernel log: after this record of this boot, or from now on (`None`).
    Kmsg(Option<Cursor>),
}

/// Why a request was refused; each is logged by the privileged half and answered, and
/// nothing is run. The caller should not retry the same request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("request longer than {MAX_REQUEST} bytes")]
    Oversized,
    #[error("malformed request")]
    Malformed,
    #[error("disk name is not [a-z0-9]{{1,{MAX_NAME}}}")]
    BadName,
    #[error("disk {0} is not monitored (disks.include/exclude, /sys/block)")]
    NotMonitored(String),
    #[error("peer uid {0} is neither this service's user nor root")]
    Peer(u32),
}

impl Refusal {
    /// The single word sent back, so the network half can say which rule refused it.
    pub fn word(&self) -> &'static str {
        match self {
            Refusal::Oversized => "oversized",
            Refusal::Malformed => "malformed",
            Refusal::BadName => "bad-name",
            Refusal::NotMonitored(_) => "not-monitored",
            Refusal::Peer(_) => "peer",
        }
    }
}

/// Whether `name` may be a disk name: [a-z0-9], 1 to [`MAX_NAME`] bytes; no `/`, no `.`,
/// so it cannot leave /sys/block or /dev.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Parses one request line (without reading more than [`MAX_REQUEST`] bytes).
pub fn parse_request(line: &[u8]) -> Result<Request, Refusal> {
    let Some(body) = line.strip_suffix(b"\n") else {
        return Err(if line.len() >= MAX_REQUEST { Refusal::Oversized } else { Refusal::Malformed });
    };
    if line.len() > MAX_REQUEST {
        return Err(Refusal::Oversized);
    }
    let text = std::str::from_utf8(body).map_err(|_| Refusal::Malformed)?;
    match text.split(' ').collect::<Vec<_>>()[..] {
        ["smart", name] if valid_name(name) => Ok(Request::Smart(name.to_string())),
        ["smart", _] => Err(Refusal::BadName),
        ["kmsg", "end"] => Ok(Request::Kmsg(None)),
        // The same strict check as the cursor file: hex and '-' boot id, decimal seq.
        ["kmsg", boot, seq] if !seq.starts_with('+') => {
            cursor::parse(&format!("{boot} {seq}")).map(|c| Request::Kmsg(Some(c))).ok_or(Refusal::Malformed)
        }
        _ => Err(Refusal::Malformed),
    }
}

/// The request line for the kernel log, resuming after `cursor` when given.
pub fn kmsg_request(cursor: Option<&Cursor>) -> String {
    match cursor {
        Some(c) => format!("kmsg {} {}\n", c.boot_id, c.seq),
        None => "kmsg end\n".to_string(),
    }
}

/// Reads one request line from `r`: at most [`MAX_REQUEST`] bytes, up to the newline.
pub fn read_request(r: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut line = Vec::with_capacity(MAX_REQUEST);
    io::BufReader::new(r.take(MAX_REQUEST as u64 + 1)).read_until(b'\n', &mut line)?;
    Ok(line)
}

/// The privileged half's answer to `smart`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmartAnswer {
    /// smartctl exited (`None`: by a signal) and printed this (at most [`MAX_OUTPUT`]).
    Output { exit: Option<i32>, stdout: Vec<u8> },
    /// It printed more than [`MAX_OUTPUT`] bytes: not an answer (smartctl's JSON for one
    /// disk is tens of kilobytes).
    Oversized,
    /// It ran over `disks.smart_timeout` and its process group was killed.
    TimedOut,
    /// The last smartctl on this disk was killed but has not ended (D state) these many
    /// seconds; no other was started.
    StillStuck(u64),
    /// `disks.smartctl` is "" in the config.
    Disabled,
    /// The smartctl binary is not installed.
    NotInstalled,
    /// It could not be started (the reason, escaped).
    Spawn(String),
    /// The request was refused (the rule's word).
    Refused(String),
}

impl SmartAnswer {
    /// The bytes sent: header line, then the output for [`SmartAnswer::Output`].
    pub fn encode(&self) -> Vec<u8> {
        let word = |w: &str| w.chars().filter(|c| c.is_ascii_graphic()).take(MAX_HEADER / 2).collect::<String>();
        let mut out = match self {
            SmartAnswer::Output { exit, stdout } => {
                let exit = exit.map_or_else(|| "-".to_string(), |c| c.to_string());
                format!("output {exit} {}\n", stdout.len().min(MAX_OUTPUT)).into_bytes()
            }
            SmartAnswer::Oversized => b"oversized\n".to_vec(),
            SmartAnswer::TimedOut => b"timeout\n".to_vec(),
            SmartAnswer::StillStuck(secs) => format!("stuck {secs}\n").into_bytes(),
            SmartAnswer::Disabled => b"disabled\n".to_vec(),
            SmartAnswer::NotInstalled => b"missing\n".to_vec(),
            SmartAnswer::Spawn(why) => format!("spawn {}\n", word(&why.replace(' ', "_"))).into_bytes(),
            SmartAnswer::Refused(w) => format!("refused {}\n", word(w)).into_bytes(),
        };
        if let SmartAnswer::Output { stdout, .. } = self {
            out.extend_from_slice(&stdout[..stdout.len().min(MAX_OUTPUT)]);
        }
        out
    }

    /// Reads an answer: a header line of at most [`MAX_HEADER`] bytes, then exactly the
    /// announced output, at most [`MAX_OUTPUT`] bytes. Anything else is `InvalidData`.
    pub fn read(r: &mut impl Read) -> io::Result<SmartAnswer> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
        let mut r = io::BufReader::new(r);
        let mut header = Vec::new();
        (&mut r).take(MAX_HEADER as u64).read_until(b'\n', &mut header)?;
        let Some(header) = header.strip_suffix(b"\n") else {
            return Err(bad("answer header missing or too long"));
        };
        let header = std::str::from_utf8(header).map_err(|_| bad("answer header is not UTF-8"))?;
        let answer = match header.split(' ').collect::<Vec<_>>()[..] {
            ["output", exit, len] => {
                let exit = if exit == "-" { None } else { Some(exit.parse().map_err(|_| bad("bad exit status"))?) };
                let len: usize = len.parse().map_err(|_| bad("bad length"))?;
                if len > MAX_OUTPUT {
                    return Err(bad("output longer than the cap"));
                }
                let mut stdout = vec![0; len];
                r.read_exact(&mut stdout)?;
                SmartAnswer::Output { exit, stdout }
            }
            ["oversized"] => SmartAnswer::Oversized,
            ["timeout"] => SmartAnswer::TimedOut,
            ["stuck", secs] => SmartAnswer::StillStuck(secs.parse().map_err(|_| bad("bad seconds"))?),
            ["disabled"] => SmartAnswer::Disabled,
            ["missing"] => SmartAnswer::NotInstalled,
            ["spawn", why] => SmartAnswer::Spawn(why.replace('_', " ")),
            ["refused", word] => SmartAnswer::Refused(word.to_string()),
            _ => return Err(bad("unknown answer")),
        };
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_smart_request_for_a_plain_name_parses() {
        assert_eq!(parse_request(b"smart sda\n"), Ok(Request::Smart("sda".into())));
        assert_eq!(parse_request(b"smart nvme0n1\n"), Ok(Request::Smart("nvme0n1".into())));
    }

    #[test]
    fn path_like_long_and_malformed_requests_are_refused_by_rule() {
        assert_eq!(parse_request(b"smart ../sda\n"), Err(Refusal::BadName));
        assert_eq!(parse_request(b"smart /dev/sda\n"), Err(Refusal::BadName));
        assert_eq!(parse_request(b"smart SDA\n"), Err(Refusal::BadName));
        assert_eq!(parse_request(format!("smart {}\n", "a".repeat(33)).as_bytes()), Err(Refusal::BadName));
        assert_eq!(parse_request(b"smart sda"), Err(Refusal::Malformed));
        assert_eq!(parse_request(b"smart  sda\n"), Err(Refusal::Malformed));
        assert_eq!(parse_request(b"smart sda sdb\n"), Err(Refusal::Malformed));
        assert_eq!(parse_request(b"exec /bin/sh\n"), Err(Refusal::Malformed));
        assert_eq!(parse_request(b"\xff\n"), Err(Refusal::Malformed));
        let long = [b"smart ".as_slice(), &[b'a'; 200]].concat();
        assert_eq!(parse_request(&read_request(&mut long.as_slice()).unwrap()), Err(Refusal::Oversized));
    }

    #[test]
    fn a_kmsg_request_parses_with_a_cursor_or_end_and_anything_else_is_malformed() {
        const BOOT: &str = "4f9c2d1e-7a3b-4c5d-9e8f-0a1b2c3d4e5f";
        let c = Cursor { boot_id: BOOT.into(), seq: 812 };
        assert_eq!(parse_request(kmsg_request(Some(&c)).as_bytes()), Ok(Request::Kmsg(Some(c))));
        assert_eq!(parse_request(kmsg_request(None).as_bytes()), Ok(Request::Kmsg(None)));
        assert_eq!(parse_request(format!("kmsg {BOOT} +1\n").as_bytes()), Err(Refusal::Malformed));
        assert_eq!(parse_request(format!("kmsg {BOOT} -1\n").as_bytes()), Err(Refusal::Malformed));
        assert_eq!(parse_request(b"kmsg ../x 1\n"), Err(Refusal::Malformed));
        assert_eq!(parse_request(b"kmsg\n"), Err(Refusal::Malformed));
        assert_eq!(parse_request(b"kmsg end 5\n"), Err(Refusal::Malformed));
        assert_eq!(parse_request(format!("kmsg {} 1\n", "a".repeat(65)).as_bytes()), Err(Refusal::Malformed));
    }

    #[test]
    fn answers_round_trip_and_an_announced_length_over_the_cap_is_rejected() {
        for a in [
            SmartAnswer::Output { exit: Some(4), stdout: b"{\"x\":1}".to_vec() },
            SmartAnswer::Output { exit: None, stdout: Vec::new() },
            SmartAnswer::Oversized,
            SmartAnswer::TimedOut,
            SmartAnswer::StillStuck(42),
            SmartAnswer::Disabled,
            SmartAnswer::NotInstalled,
            SmartAnswer::Spawn("permission denied".into()),
            SmartAnswer::Refused("not-monitored".into()),
        ] {
            assert_eq!(SmartAnswer::read(&mut a.encode().as_slice()).unwrap(), a);
        }
        let huge = format!("output 0 {}\n", MAX_OUTPUT + 1);
        assert!(SmartAnswer::read(&mut huge.as_bytes()).is_err());
        assert!(SmartAnswer::read(&mut "x".repeat(300).as_bytes()).is_err());
        assert!(SmartAnswer::read(&mut b"output 0 10\nshort".as_slice()).is_err());
    }
}
