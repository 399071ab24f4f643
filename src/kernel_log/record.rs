//! One `/dev/kmsg` record (Documentation/ABI/testing/dev-kmsg):
//! `prio,seq,usec,flags[,more];message\n` followed by continuation lines ` KEY=VALUE\n`
//! (the dictionary: `SUBSYSTEM=block`, `DEVICE=b8:0`, …). The kernel escapes non-printable
//! bytes in the message as `\xNN`, so a record is text.

/// Longest message kept, in bytes: the kernel's own limit is about 1 KiB per record; a
/// longer line (a file or FIFO in tests, another writer) is cut, never buffered whole.
pub const MAX_MESSAGE: usize = 1024;
/// Longest record (header, message, dictionary) the splitter buffers.
pub const MAX_RECORD: usize = 8192;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// syslog facility (`prio >> 3`): 0 is the kernel; anything else was written to
    /// `/dev/kmsg` by a userspace process and proves nothing about a disk.
    pub facility: u32,
    /// syslog level (`prio & 7`).
    pub level: u8,
    /// The kernel's sequence number, increasing within a boot; gaps mean lost records.
    pub seq: u64,
    /// Microseconds since boot.
    pub usec: u64,
    /// `c`: a continuation fragment of the previous record (printk without a newline).
    pub continuation: bool,
    pub message: String,
    /// `SUBSYSTEM=` from the dictionary (`scsi`, `nvme`, `block`), when given. The kernel
    /// attaches a dictionary to what drivers log through `dev_printk`; no process can.
    pub subsystem: Option<String>,
    /// `DEVICE=` from the dictionary (`b8:0`, `c241:0`, `+block:sda`, `+scsi:2:0:0:0`),
    /// when given.
    pub device: Option<String>,
}

impl Record {
    /// Whether the kernel itself logged this: only those count as evidence.
    pub fn from_kernel(&self) -> bool {
        self.facility == 0
    }

    /// `/dev/kmsg` text for this record, dictionary included, at most [`MAX_RECORD`] bytes.
    pub fn encode(&self) -> Vec<u8> {
        let prio = (self.facility << 3) | u32::from(self.level);
        let flags = if self.continuation { "c" } else { "-" };
        let mut out = format!("{prio},{},{},{flags};{}\n", self.seq, self.usec, self.message).into_bytes();
        for (key, value) in [("SUBSYSTEM", &self.subsystem), ("DEVICE", &self.device)] {
            if let Some(v) = value {
                out.extend_from_slice(format!(" {key}={v}\n").as_bytes());
            }
        }
        out.truncate(MAX_RECORD);
        out
    }

    /// The record with its message and dictionary removed: its header alone (facility,
    /// level, sequence number, time), which keeps the sequence continuous for the reader
    /// (a gap means lost records) and tells nothing of what the kernel said.
    pub fn without_message(&self) -> Record {
        Record { message: String::new(), subsystem: None, device: None, ..self.clone() }
    }
}

/// Parses one record; `None` for text that is not a record (a continuation line alone,
/// a header without `;`, numbers that do not parse).
pub fn parse(text: &str) -> Option<Record> {
    let mut lines = text.split('\n');
    let first = lines.next()?;
    let (header, message) = first.split_once(';')?;
    let mut f = header.split(',');
    let prio: u32 = f.next()?.parse().ok()?;
    let seq: u64 = f.next()?.parse().ok()?;
    let usec: u64 = f.next()?.parse().ok()?;
    let flags = f.next().unwrap_or("-");
    let (mut subsystem, mut device) = (None, None);
    for entry in lines.filter_map(|l| l.strip_prefix(' ')) {
        if let Some(v) = entry.strip_prefix("SUBSYSTEM=") {
            subsystem.get_or_insert_with(|| cap(v, 64).to_string());
        } else if let Some(v) = entry.strip_prefix("DEVICE=") {
            device.get_or_insert_with(|| cap(v, 64).to_string());
        }
    }
    Some(Record {
        facility: prio >> 3,
        level: (prio & 7) as u8,
        seq,
        usec,
        continuation: flags.contains('c'),
        message: cap(message, MAX_MESSAGE).to_string(),
        subsystem,
        device,
    })
}

/// `s` cut to at most `max` bytes at a character boundary.
fn cap(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Groups a byte stream (a regular file or FIFO, where reads do not keep record
/// boundaries) into records: a header line and the continuation lines after it. Memory is
/// bounded by [`MAX_RECORD`]: the rest of an overlong line is dropped.
#[derive(Debug, Default)]
pub struct Splitter {
    line: Vec<u8>,
    /// Dropping the rest of an overlong line.
    skipping: bool,
    record: String,
}

impl Splitter {
    /// Takes in `bytes`; returns the records completed by them (a record is complete when
    /// the next header line starts; [`Splitter::flush`] ends the last one).
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Record> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                if !std::mem::take(&mut self.skipping) {
                    let line = String::from_utf8_lossy(&self.line).into_owned();
                    self.take_line(&line, &mut out);
                }
                self.line.clear();
            } else if self.skipping {
            } else if self.line.len() >= MAX_MESSAGE + 64 {
                // Keep what we have as the (cut) line and ignore the rest up to the newline.
                let line = String::from_utf8_lossy(&self.line).into_owned();
                self.take_line(&line, &mut out);
                self.line.clear();
                self.skipping = true;
            } else {
                self.line.push(b);
            }
        }
        out
    }

    fn take_line(&mut self, line: &str, out: &mut Vec<Record>) {
        if line.starts_with(' ') {
            if !self.record.is_empty() && self.record.len() + line.len() < MAX_RECORD {
                self.record.push('\n');
                self.record.push_str(line);
            }
            return;
        }
        out.extend(self.flush());
        self.record.push_str(line);
    }

    /// Ends the record in progress (the source has nothing more for now).
    pub fn flush(&mut self) -> Option<Record> {
        let r = parse(&self.record);
        self.record.clear();
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_record_gives_facility_level_sequence_and_device() {
        let r = parse("3,2451,81723451,-;I/O error, dev sda, sector 8 op 0x0:(READ)\n SUBSYSTEM=block\n DEVICE=b8:0\n")
            .unwrap();
        assert_eq!((r.facility, r.level, r.seq, r.usec), (0, 3, 2451, 81_723_451));
        assert!(r.from_kernel());
        assert!(!r.continuation);
        assert_eq!(r.message, "I/O error, dev sda, sector 8 op 0x0:(READ)");
        assert_eq!(r.subsystem.as_deref(), Some("block"));
        assert_eq!(r.device.as_deref(), Some("b8:0"));
    }

    #[test]
    fn a_record_re_encoded_parses_back_the_same_and_without_its_message_keeps_its_header() {
        for text in [
            "6,812,99,-;sd 2:0:0:0: [sdb] tag#1 Sense Key : Medium Error\n SUBSYSTEM=scsi\n DEVICE=+scsi:2:0:0:0\n",
            "12,5,6,c;hello\n",
        ] {
            let r = parse(text).unwrap();
            assert_eq!(String::from_utf8(r.encode()).unwrap(), text);
            assert_eq!(parse(&String::from_utf8(r.encode()).unwrap()), Some(r.clone()));
            let bare = r.without_message();
            assert_eq!((bare.facility, bare.level, bare.seq, bare.usec), (r.facility, r.level, r.seq, r.usec));
            assert!(bare.message.is_empty() && bare.subsystem.is_none() && bare.device.is_none());
        }
    }

    #[test]
    fn a_record_written_by_userspace_is_not_from_the_kernel() {
        // `echo "I/O error, dev sda" > /dev/kmsg` from a process: facility user (1), prio 12.
        let r = parse("12,2452,81723999,-;I/O error, dev sda, sector 0").unwrap();
        assert_eq!(r.facility, 1);
        assert!(!r.from_kernel());
    }

    #[test]
    fn newer_headers_with_a_caller_field_and_continuations_parse() {
        let r = parse("4,339,5140900,c,caller=T1;nvme nvme0: I/O 12 QID 3 timeout").unwrap();
        assert!(r.continuation);
        assert_eq!(r.seq, 339);
    }

    #[test]
    fn text_that_is_not_a_record_is_refused() {
        assert_eq!(parse(" DEVICE=b8:0"), None);
        assert_eq!(parse("no header here"), None);
        assert_eq!(parse("x,1,2,-;m"), None);
        assert_eq!(parse(""), None);
    }

    #[test]
    fn the_splitter_keeps_records_whole_across_reads_and_caps_long_lines() {
        let mut s = Splitter::default();
        assert!(s.feed(b"6,1,10,-;first\n DEVI").is_empty());
        let out = s.feed(b"CE=b7:0\n6,2,20,-;second\n");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].device.as_deref(), Some("b7:0"));
        assert_eq!(s.flush().unwrap().message, "second");
        let mut long = b"3,3,30,-;".to_vec();
        long.extend(std::iter::repeat_n(b'x', 100_000));
        long.extend(b"\n3,4,40,-;after\n");
        let mut out = s.feed(&long);
        out.extend(s.flush());
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].message.len(), MAX_MESSAGE);
        assert_eq!(out[1].message, "after");
    }
}
