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
//! sees as a sequence gap and counts in `kmsg_lost_records`, like an EPIPE overrun.

use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::config::PrivilegedConfig;
use crate::kernel_log::cursor::{self, Cursor, Start};
use crate::kernel_log::needed;
use crate::kernel_log::reader::{self, KmsgReader, Progress};

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
    let mut pending: Vec<u8> = Vec::new();
    let mut dropped = 0u64;
    let mut last_said: Option<std::time::Instant> = None;
    let mut records = Vec::new();
    loop {
        records.clear();
        let progress = reader.read(&mut records)?;
        for r in &records {
            // One record half-written at most: while it waits, newer ones are dropped.
            if pending.is_empty() {
                pending = if needed(r) { r.encode() } else { r.without_message().encode() };
                flush(&mut conn, &mut pending)?;
            } else {
                dropped += 1;
            }
        }
        flush(&mut conn, &mut pending)?;
        // Counted, and said at most once per SAID_EVERY.
        if dropped > 0 && pending.is_empty() && last_said.is_none_or(|t| t.elapsed() >= SAID_EVERY) {
            log::warn!("privileged: kernel log: {dropped} records dropped, the agent was not reading");
            dropped = 0;
            last_said = Some(std::time::Instant::now());
        }
        if progress == Progress::More && !peer_gone(&conn)? {
            continue;
        }
        let waiting_on_log = progress == Progress::Wait;
        let mut fds = vec![rustix::event::PollFd::new(&conn, rustix::event::PollFlags::IN)];
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

/// Writes what the socket takes now of `pending`.
fn flush(conn: &mut UnixStream, pending: &mut Vec<u8>) -> io::Result<()> {
    while !pending.is_empty() {
        match conn.write(pending) {
            Ok(n) => drop(pending.drain(..n)),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
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

    #[test]
    fn an_agent_that_does_not_read_loses_whole_records_and_the_privileged_half_buffers_one_at_most() {
        let d = tempfile::tempdir().unwrap();
        let mut cfg = PrivilegedConfig::from(crate::config::tests::minimal_config(d.path()));
        cfg.paths.kmsg = d.path().join("kmsg");
        cfg.paths.procfs = d.path().join("proc");
        let total: u64 = 4000;
        let line = |i: u64| format!("I/O error, dev sda, sector {i} op 0x0:(READ) {:0>850}", i);
        let text: String = (1..=total).map(|i| format!("3,{i},{i},-;{}\n", line(i))).collect();
        std::fs::write(&cfg.paths.kmsg, text).unwrap();
        let (mut agent, privileged) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || serve(privileged, &cfg, Some(Cursor { boot_id: "ab".into(), seq: 0 })));
        std::thread::sleep(Duration::from_millis(500)); // not reading: the socket's buffer fills
        agent.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let mut bytes = Vec::new();
        let mut buf = [0u8; 65536];
        while let Ok(n @ 1..) = agent.read(&mut buf) {
            bytes.extend_from_slice(&buf[..n]);
        }
        let mut splitter = crate::kernel_log::record::Splitter::default();
        let mut records = splitter.feed(bytes.strip_prefix(b"kmsg\n").unwrap());
        records.extend(splitter.flush());
        assert!(!records.is_empty() && (records.len() as u64) < total, "{} of {total} records came", records.len());
        assert!(records.windows(2).all(|w| w[0].seq < w[1].seq));
        assert!(records.iter().all(|r| r.message == line(r.seq)), "only whole records");
        drop(agent);
        t.join().unwrap().unwrap();
    }
}
