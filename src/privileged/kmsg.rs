//! The kernel log through the privileged half: `/dev/kmsg` needs CAP_SYSLOG where
//! `kernel.dmesg_restrict=1` and is blocked by `ProtectKernelLogs=`, so it is opened here
//! and never in the process that talks to the gateway.
//!
//! After the `kmsg\n` header the records go out in `/dev/kmsg`'s own text form
//! (`prio,seq,usec,flags;message\n SUBSYSTEM=…\n DEVICE=…\n`), re-encoded from the parsed
//! record: the kernel escapes control bytes in messages, so each record is
//! self-delimiting, and the network half's [`crate::kernel_log::record::Splitter`] already
//! caps each one at `MAX_RECORD` bytes. A length prefix would add a second parser and no
//! bound.
//!
//! Only what the agent needs goes out whole ([`crate::kernel_log::needed`]: the records a
//! disk rule recognises). Every other record goes out as its header alone, message and
//! dictionary removed: the network half counts sequence gaps as lost records and keeps its
//! cursor by sequence number, so a record left out would read as loss there, while a
//! process of this service's uid that asks for the stream (an action's command, say, where
//! `dmesg` is refused to that uid by `dmesg_restrict=1`) reads nothing the agent does not
//! act on.
//!
//! Bounded: the socket is written without blocking; a record that does not fit in the
//! socket's buffer (the network half is not reading) is dropped, which the network half
//! sees as a sequence gap and counts in `kmsg_lost_records`, like an EPIPE overrun. Up to
//! 64 records the agent needs wait for room instead, while the others are dropped.

use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::config::PrivilegedConfig;
use crate::kernel_log::cursor::{self, Cursor, Start};
use crate::kernel_log::needed;
use crate::kernel_log::reader::{self, KmsgReader, Progress};
use crate::kernel_log::record::Record;

use crate::protocol::escape::escape;

/// How often a regular file or a writerless FIFO (tests) is looked at again, and how
/// often a quiet stream checks that its peer is still there.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// Dropped records are said at most this often: a storm is when the journal's own disk
/// may be the one dying.
const SAID_EVERY: Duration = Duration::from_secs(10);

/// Where to start: after the cursor when it names this boot. Where this process cannot
/// read the boot id (`ProcSubset=pid`), the cursor is taken as the asker's own check: a
/// wrong one only costs the asker its own records.
fn start(cfg: &PrivilegedConfig, after: Option<&Cursor>) -> Start {
    match cursor::boot_id(&cfg.paths.procfs) {
        Some(boot) => cursor::start(after, Some(&boot)),
        None => after.map_or(Start::End, |c| Start::After(c.seq)),
    }
}

/// Serves one `kmsg` request on `conn` until the peer goes away or the log fails.
pub fn serve(mut conn: UnixStream, cfg: &PrivilegedConfig, after: Option<Cursor>) -> io::Result<()> {
    let opened = reader::open(&cfg.paths.kmsg);
    let mut reader = match opened.and_then(|f| KmsgReader::new(f, start(cfg, after.as_ref()))) {
        Ok(r) => r,
        Err(e) => {
            let why = escape(&format!("{}: {e}", cfg.paths.kmsg.display()));
            // Once per reason, not once per request.
            static SAID: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
            let mut said = SAID.lock().unwrap_or_else(|p| p.into_inner());
            if said.as_deref() != Some(why.as_str()) {
                log::warn!("privileged: kernel log unreadable: {why}");
                *said = Some(why.clone());
            } else {
                log::debug!("privileged: kernel log unreadable: {why} (as before)");
            }
            drop(said);
            let word: String = why.chars().map(|c| if c.is_ascii_graphic() { c } else { '_' }).take(200).collect();
            return conn.write_all(format!("unreadable {word}\n").as_bytes());
        }
    };
    conn.write_all(b"kmsg\n")?;
    conn.set_nonblocking(true)?;
    let mut out = Outgoing::default();
    let mut dropped = 0u64;
    let mut last_said: Option<std::time::Instant> = None;
    let mut records = Vec::new();
    loop {
        records.clear();
        let progress = reader.read(&mut records)?;
        for r in &records {
            if !out.offer(r) {
                dropped += 1;
            }
            out.flush(&mut conn)?;
        }
        out.flush(&mut conn)?;
        // Counted, and said at most once per SAID_EVERY.
        if dropped > 0 && out.is_empty() && last_said.is_none_or(|t| t.elapsed() >= SAID_EVERY) {
            log::warn!("privileged: kernel log: {dropped} records dropped, the agent was not reading");
            dropped = 0;
            last_said = Some(std::time::Instant::now());
        }
        if progress == Progress::More && !peer_gone(&conn)? {
            continue;
        }
        let waiting_on_log = progress == Progress::Wait;
        let mut wanted = rustix::event::PollFlags::IN;
        if !out.is_empty() {
            wanted |= rustix::event::PollFlags::OUT;
        }
        let mut fds = vec![rustix::event::PollFd::new(&conn, wanted)];
        if waiting_on_log {
            fds.push(rustix::event::PollFd::new(&reader, rustix::event::PollFlags::IN));
        }
        let timeout = rustix::event::Timespec { tv_sec: 0, tv_nsec: IDLE_POLL.as_nanos() as i64 };
        let _ = rustix::event::poll(&mut fds, Some(&timeout));
        if peer_gone(&conn)? {
            return Ok(());
        }
    }
}

/// Disk records that may wait for a reader that is behind, besides the record being
/// written: a flood of other records (which any user can cause, e.g. by creating network
/// interfaces in a namespace of its own) must not push out the one the agent needs.
const MAX_WAITING: usize = 64;

/// What is on its way to the reader: at most one record half-written, and up to
/// [`MAX_WAITING`] records the agent needs behind it. Bounded: a record that finds no room
/// is dropped (the reader sees the gap); while records the agent needs wait, the others
/// are dropped first.
#[derive(Default)]
struct Outgoing {
    writing: Vec<u8>,
    waiting: std::collections::VecDeque<Vec<u8>>,
}

impl Outgoing {
    fn is_empty(&self) -> bool {
        self.writing.is_empty() && self.waiting.is_empty()
    }

    /// Takes `r` on its way, whole when the agent needs it and as its header alone
    /// otherwise; false when it is dropped for want of room.
    fn offer(&mut self, r: &Record) -> bool {
        let need = needed(r);
        if self.is_empty() {
            self.writing = if need { r.encode() } else { r.without_message().encode() };
        } else if need && self.waiting.len() < MAX_WAITING {
            self.waiting.push_back(r.encode());
        } else {
            return false;
        }
        true
    }

    /// Writes what the socket takes now.
    fn flush(&mut self, conn: &mut UnixStream) -> io::Result<()> {
        loop {
            while !self.writing.is_empty() {
                match conn.write(&self.writing) {
                    Ok(n) => drop(self.writing.drain(..n)),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            match self.waiting.pop_front() {
                Some(next) => self.writing = next,
                None => return Ok(()),
            }
        }
    }
}

/// Whether the peer closed its end (it sends nothing after its request).
fn peer_gone(conn: &UnixStream) -> io::Result<bool> {
    let mut byte = [0u8; 1];
    match (&*conn).read(&mut byte) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(false),
        Err(e) if e.kind() == ErrorKind::Interrupted => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A disk's error goes out whole with its dictionary; anything else, the kernel's or a
    /// process's, as its header alone, so the sequence stays continuous.
    #[test]
    fn the_records_are_served_after_the_cursor_whole_only_when_the_agent_needs_them() {
        let d = tempfile::tempdir().unwrap();
        let mut cfg = PrivilegedConfig::from(crate::config::tests::minimal_config(d.path()));
        cfg.paths.kmsg = d.path().join("kmsg");
        cfg.paths.procfs = d.path().join("proc");
        let io_error = "3,3,3,-;I/O error, dev sda, sector 8 op 0x0:(READ) flags 0x0 phys_seg 1 prio class 2\n \
                        SUBSYSTEM=block\n DEVICE=b8:0\n";
        let log = format!(
            "6,1,1,-;a\n6,2,2,-;usb 1-1: new device, SerialNumber: K3Y\n SUBSYSTEM=usb\n DEVICE=c189:1\n{io_error}\
             14,4,4,-;sshd[812]: Accepted password for root\n"
        );
        std::fs::write(&cfg.paths.kmsg, log).unwrap();
        let (mut agent, privileged) = UnixStream::pair().unwrap();
        let cursor = Cursor { boot_id: "ab".into(), seq: 1 };
        let t = std::thread::spawn(move || serve(privileged, &cfg, Some(cursor)));
        agent.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let want = format!("kmsg\n6,2,2,-;\n{io_error}14,4,4,-;\n");
        let want = want.as_bytes();
        let mut got = vec![0; want.len()];
        agent.read_exact(&mut got).unwrap();
        assert_eq!(got, want);
        drop(agent);
        t.join().unwrap().unwrap();
    }

    /// `log` served from its first record to an agent that reads nothing for 500 ms (the
    /// socket's buffer fills), then everything: the records it gets.
    fn served_to_a_slow_agent(log: String) -> Vec<Record> {
        let d = tempfile::tempdir().unwrap();
        let mut cfg = PrivilegedConfig::from(crate::config::tests::minimal_config(d.path()));
        cfg.paths.kmsg = d.path().join("kmsg");
        cfg.paths.procfs = d.path().join("proc");
        std::fs::write(&cfg.paths.kmsg, log).unwrap();
        let (mut agent, privileged) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || serve(privileged, &cfg, Some(Cursor { boot_id: "ab".into(), seq: 0 })));
        // Under qemu-user (the ARM test runs) the server is several times slower to fill
        // the socket: both waits scale with RIG_AGENT_TEST_SLOWDOWN.
        let slowdown = std::env::var("RIG_AGENT_TEST_SLOWDOWN").ok().and_then(|f| f.parse::<u32>().ok());
        let wait = Duration::from_millis(500) * slowdown.unwrap_or(1).clamp(1, 20);
        std::thread::sleep(wait);
        agent.set_read_timeout(Some(wait)).unwrap();
        let mut bytes = Vec::new();
        let mut buf = [0u8; 65536];
        while let Ok(n @ 1..) = agent.read(&mut buf) {
            bytes.extend_from_slice(&buf[..n]);
        }
        drop(agent);
        t.join().unwrap().unwrap();
        let mut splitter = crate::kernel_log::record::Splitter::default();
        let mut records = splitter.feed(bytes.strip_prefix(b"kmsg\n").unwrap());
        records.extend(splitter.flush());
        records
    }

    /// A flood of records the agent does not need (any user can make the kernel log lines
    /// quickly) while the agent is behind: headers are dropped, the disk's errors are not.
    #[test]
    fn a_flood_of_other_records_does_not_push_out_the_records_the_agent_needs() {
        let total: u64 = 20_000;
        let disk = |i: u64| i % 500 == 0;
        let records = served_to_a_slow_agent(
            (1..=total)
                .map(|i| match disk(i) {
                    true => format!("3,{i},{i},-;I/O error, dev sda, sector {i} op 0x0:(READ)\n"),
                    false => format!("6,{i},{i},-;br0: port 1(veth{i}) entered blocking state\n"),
                })
                .collect(),
        );
        assert!((records.len() as u64) < total, "nothing was dropped: the test did not flood");
        let errors: Vec<u64> = records.iter().filter(|r| !r.message.is_empty()).map(|r| r.seq).collect();
        assert_eq!(errors, (1..=total).filter(|i| disk(*i)).collect::<Vec<_>>());
    }

    #[test]
    fn an_agent_that_does_not_read_loses_whole_records_and_what_waits_for_it_is_bounded() {
        let total: u64 = 4000;
        let line = |i: u64| format!("I/O error, dev sda, sector {i} op 0x0:(READ) {:0>850}", i);
        let records = served_to_a_slow_agent((1..=total).map(|i| format!("3,{i},{i},-;{}\n", line(i))).collect());
        assert!(!records.is_empty() && (records.len() as u64) < total, "{} of {total} records came", records.len());
        assert!(records.windows(2).all(|w| w[0].seq < w[1].seq));
        assert!(records.iter().all(|r| r.message == line(r.seq)), "only whole records");
    }
}
