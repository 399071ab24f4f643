//! Reading `/dev/kmsg` (or, for tests, a regular file or FIFO of recorded kernel log), apart
//! from parsing: [`KmsgReader`] turns an open file into [`Record`]s and knows where to
//! start and what was lost. It takes an already-open file, so the read can move into a
//! privileged process that hands over the fd or the records.

use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use super::cursor::Start;
use super::record::{self, MAX_RECORD, Record, Splitter};

/// Opens the kernel log read-only and non-blocking (a FIFO opens without a writer).
pub fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32).open(path)
}

/// What one [`KmsgReader::read`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Records may follow at once: read again.
    More,
    /// Nothing now; wait until the file is readable (`/dev/kmsg`, a FIFO with a writer).
    Wait,
    /// End of a regular file, or a FIFO without a writer: poll(2) would say readable
    /// forever, so wait a while instead.
    Idle,
}

#[derive(Debug)]
pub struct KmsgReader {
    file: File,
    /// `/dev/kmsg`: every read(2) returns exactly one whole record.
    device: bool,
    splitter: Splitter,
    buf: Vec<u8>,
    /// Records at or before this sequence number were handled before a restart.
    skip_through: Option<u64>,
    last_seq: Option<u64>,
    lost: u64,
}

impl KmsgReader {
    /// Takes an open kernel log and positions it: at the end for [`Start::End`] (only
    /// records logged from now on), at the oldest record otherwise (earlier ones are skipped
    /// by sequence number).
    pub fn new(mut file: File, start: Start) -> io::Result<KmsgReader> {
        let device = file.metadata()?.file_type().is_char_device();
        let skip_through = match start {
            Start::End => {
                // A FIFO cannot seek and holds nothing old anyway.
                if device || file.metadata()?.is_file() {
                    file.seek(SeekFrom::End(0))?;
                }
                None
            }
            Start::After(seq) => Some(seq),
        };
        Ok(KmsgReader {
            file,
            device,
            splitter: Splitter::default(),
            buf: vec![0; MAX_RECORD],
            skip_through,
            last_seq: skip_through,
            lost: 0,
        })
    }

    /// Records the kernel overwrote before they were read (sequence gaps and EPIPE).
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// Sequence number of the last record handed out.
    pub fn last_seq(&self) -> Option<u64> {
        self.last_seq
    }

    /// Reads what is there now (at most a buffer's worth) into `out`.
    pub fn read(&mut self, out: &mut Vec<Record>) -> io::Result<Progress> {
        let mut got = Vec::new();
        let progress = match self.file.read(&mut self.buf) {
            Ok(0) => {
                got.extend(self.splitter.flush());
                Progress::Idle
            }
            Ok(n) if self.device => {
                // One read, one record: parse it whole.
                got.extend(record::parse(&String::from_utf8_lossy(&self.buf[..n])));
                Progress::More
            }
            Ok(n) => {
                got = self.splitter.feed(&self.buf[..n]);
                Progress::More
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                got.extend(self.splitter.flush());
                Progress::Wait
            }
            // The ring wrapped past our position; the next read returns the oldest record
            // left. The sequence gap below counts what was lost.
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::PIPE.raw_os_error()) => Progress::More,
            Err(e) if e.kind() == ErrorKind::Interrupted => Progress::More,
            Err(e) => return Err(e),
        };
        for r in got {
            if self.skip_through.is_some_and(|s| r.seq <= s) {
                continue;
            }
            if let Some(last) = self.last_seq
                && r.seq > last + 1
            {
                self.lost += r.seq - last - 1;
            }
            self.skip_through = None;
            self.last_seq = Some(r.seq);
            out.push(r);
        }
        Ok(progress)
    }
}

impl std::os::fd::AsFd for KmsgReader {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.file.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn drain(r: &mut KmsgReader) -> Vec<u64> {
        let mut out = Vec::new();
        while r.read(&mut out).unwrap() == Progress::More {}
        out.iter().map(|r| r.seq).collect()
    }

    #[test]
    fn from_the_end_only_records_written_later_are_read() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("kmsg");
        std::fs::write(&p, "6,1,1,-;old\n6,2,2,-;older\n").unwrap();
        let mut r = KmsgReader::new(open(&p).unwrap(), Start::End).unwrap();
        assert!(drain(&mut r).is_empty());
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"3,3,3,-;I/O error, dev sda, sector 0\n SUBSYSTEM=block\n").unwrap();
        assert_eq!(drain(&mut r), [3]);
        assert_eq!(r.lost(), 0);
    }

    #[test]
    fn a_remembered_sequence_skips_what_was_handled_and_counts_gaps_as_lost() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("kmsg");
        std::fs::write(&p, "6,10,1,-;a\n6,11,2,-;b\n6,12,3,-;c\n6,15,4,-;d\n").unwrap();
        let mut r = KmsgReader::new(open(&p).unwrap(), Start::After(11)).unwrap();
        assert_eq!(drain(&mut r), [12, 15]);
        assert_eq!(r.lost(), 2, "13 and 14 were overwritten");
        assert_eq!(r.last_seq(), Some(15));
    }

    #[test]
    fn the_real_kernel_log_opens_and_reads_one_record_per_read_when_permitted() {
        let Ok(f) = open(Path::new("/dev/kmsg")) else {
            eprintln!("skipped: /dev/kmsg not readable here");
            return;
        };
        let mut r = KmsgReader::new(f, Start::After(0)).unwrap();
        let mut out = Vec::new();
        for _ in 0..5 {
            r.read(&mut out).unwrap();
        }
        assert!(!out.is_empty(), "a booted kernel has records in its ring");
        assert!(out.windows(2).all(|w| w[0].seq < w[1].seq));
    }
}
