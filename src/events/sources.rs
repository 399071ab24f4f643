//! The event sources as threads: the kernel log reader and the uevent listener (block
//! devices, and PCI devices added or removed, for the GPUs). Each hands
//! [`KernelEvent`]s to a sink (the monitor's channel) and says in [`SourcesStatus`] whether
//! it is live; one that cannot start says why once, at start, and the scans go on alone.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};

use super::QUOTE_CHARS;
use super::kernel_event::{KernelEvent, Sink};
use super::kmsg_job::{KmsgJob, privileged_loop};
use super::source_status::set;
use super::source_status::{SourceState, SourcesStatus};
use super::uevent::Action;
use super::uevent_listener::UeventListener;
use crate::config::sources::SourcesConfig;
use crate::kernel_log::cursor;
use crate::kernel_log::feed::KmsgFeed;
use crate::kernel_log::reader::{self, KmsgReader};
use crate::os::wake::{self, Interest, WakeReceiver, Waker};
use crate::protocol::escape::escape_to;

/// The running sources; stopped (and joined) when dropped. Drop this before the monitor:
/// the sources hold senders into its channel.
pub struct Sources {
    stop: Arc<AtomicBool>,
    wakers: Vec<Waker>,
    threads: Vec<JoinHandle<()>>,
    pub status: Arc<SourcesStatus>,
}

impl Sources {
    /// Opens `cfg.kmsg` itself and starts both sources.
    pub fn start(cfg: SourcesConfig, sink: Sink) -> Sources {
        let kmsg = reader::open(&cfg.kmsg);
        Sources::start_with_kmsg(cfg, kmsg, sink)
    }

    /// As [`Sources::start`], with the kernel log from `feed`: opened by the caller, or
    /// streamed by the privileged half at a socket.
    pub fn start_with_feed(cfg: SourcesConfig, feed: KmsgFeed, sink: Sink) -> Sources {
        let status = Arc::new(SourcesStatus::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut s = Sources { stop, wakers: Vec::new(), threads: Vec::new(), status };
        match feed {
            KmsgFeed::Opened(kmsg) => s.start_kmsg(&cfg, kmsg, &sink),
            KmsgFeed::Privileged(socket) => {
                let (job_cfg, sink, status) = (cfg.clone(), Arc::clone(&sink), Arc::clone(&s.status));
                s.spawn("kmsg", move |stop, rx| privileged_loop(&job_cfg, &socket, &sink, &status, &stop, &rx));
            }
        }
        s.start_uevents(sink);
        s
    }

    /// As [`Sources::start`], with the kernel log already opened elsewhere: the hook for
    /// a privileged process, which opens `/dev/kmsg` (or a pipe it writes the
    /// records to, read in stream mode) and hands the fd over. `Err` is reported like an
    /// open that failed here.
    pub fn start_with_kmsg(cfg: SourcesConfig, kmsg: std::io::Result<std::fs::File>, sink: Sink) -> Sources {
        Sources::start_with_feed(cfg, KmsgFeed::Opened(kmsg), sink)
    }

    fn start_kmsg(&mut self, cfg: &SourcesConfig, kmsg: std::io::Result<std::fs::File>, sink: &Sink) {
        let s = self;
        match kmsg {
            Ok(file) => {
                let boot_id = cursor::boot_id(&cfg.procfs);
                let start =
                    cursor::start(cursor::remembered(&cfg.state_dir, boot_id.as_deref()).as_ref(), boot_id.as_deref());
                match KmsgReader::new(file, start) {
                    Ok(reader) => {
                        let job = KmsgJob::new(cfg, reader, boot_id, sink, &s.status);
                        s.spawn("kmsg", move |stop, rx| {
                            job.run(&stop, &rx);
                        });
                    }
                    Err(e) => s.kmsg_off(&cfg.kmsg, &e),
                }
            }
            Err(e) => s.kmsg_off(&cfg.kmsg, &e),
        }
    }

    fn start_uevents(&mut self, sink: Sink) {
        let s = self;
        match UeventListener::open() {
            Ok(listener) => {
                let status = Arc::clone(&s.status);
                s.spawn("uevents", move |stop, rx| uevent_loop(listener, &sink, &status, &stop, &rx));
            }
            Err(e) => {
                let why = escape_to(&e.to_string(), QUOTE_CHARS);
                log::warn!("device events unavailable: {why}; falling back to scans");
                set(&s.status.uevents, SourceState::Off(why));
            }
        }
    }

    fn kmsg_off(&self, path: &Path, e: &std::io::Error) {
        let why = escape_to(&format!("{}: {e}", path.display()), QUOTE_CHARS);
        let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
            " (needs CAP_SYSLOG where kernel.dmesg_restrict=1, and no ProtectKernelLogs=)"
        } else {
            ""
        };
        log::warn!("kernel log unreadable: {why}{hint}; falling back to scans");
        set(&self.status.kmsg, SourceState::Off(why));
    }

    fn spawn(&mut self, name: &str, f: impl FnOnce(Arc<AtomicBool>, WakeReceiver) + Send + 'static) {
        let (waker, rx) = match wake::pair() {
            Ok(p) => p,
            Err(e) => {
                log::warn!("cannot start the {name} event source ({e}); falling back to scans");
                return;
            }
        };
        let stop = Arc::clone(&self.stop);
        match thread::Builder::new().name(name.into()).spawn(move || f(stop, rx)) {
            Ok(t) => {
                self.wakers.push(waker);
                self.threads.push(t);
            }
            Err(e) => log::warn!("cannot start the {name} event source ({e}); falling back to scans"),
        }
    }
}

impl Drop for Sources {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for w in &self.wakers {
            w.wake();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn uevent_loop(
    mut listener: UeventListener,
    sink: &Sink,
    status: &SourcesStatus,
    stop: &AtomicBool,
    rx: &WakeReceiver,
) {
    use std::os::fd::AsFd;
    set(&status.uevents, SourceState::Live);
    while !stop.load(Ordering::SeqCst) {
        loop {
            match listener.try_next() {
                Ok(Some(ev)) => {
                    if !matches!(ev.action, Action::Add | Action::Remove | Action::Change) {
                        continue;
                    }
                    let event = match (ev.block_device(), ev.pci_device()) {
                        (Some(dev), _) => KernelEvent::Changed(Some(dev.to_string())),
                        (None, Some(slot)) if ev.action != Action::Change => {
                            KernelEvent::Pci { slot, added: ev.action == Action::Add }
                        }
                        _ => continue,
                    };
                    if !sink(event) {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOBUFS.raw_os_error()) => {
                    status.uevents_dropped.fetch_add(1, Ordering::Relaxed);
                    if !sink(KernelEvent::Changed(None)) {
                        return;
                    }
                }
                Err(e) => {
                    let why = escape_to(&e.to_string(), QUOTE_CHARS);
                    log::warn!("device events failed: {why}; falling back to scans");
                    set(&status.uevents, SourceState::Off(why));
                    return;
                }
            }
        }
        rx.wait(Some((listener.as_fd(), Interest::Readable)), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixStream;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn a_kernel_log_handed_over_as_a_stream_is_read_and_its_errors_attributed() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("sys/block/sda/sda1")).unwrap();
        std::fs::write(d.path().join("sys/block/sda/sda1/partition"), "1\n").unwrap();
        // What a privileged half would pass: one end of a socket it writes records to.
        let (mut writer, reader) = UnixStream::pair().unwrap();
        reader.set_nonblocking(true).unwrap();
        let file = std::fs::File::from(OwnedFd::from(reader));
        let (tx, rx) = mpsc::channel();
        let sink: Sink = Arc::new(move |e| tx.send(e).is_ok());
        let cfg = SourcesConfig {
            kmsg: "/handed-over".into(),
            sysfs: d.path().join("sys"),
            procfs: d.path().join("proc"),
            state_dir: d.path().to_path_buf(),
        };
        let sources = Sources::start_with_kmsg(cfg, Ok(file), sink);
        writer.write_all(b"12,1,1,-;I/O error, dev sda1, sector 0\n").unwrap();
        writer.write_all(b"3,2,2,-;Buffer I/O error on dev sda1, logical block 0, async page read\n").unwrap();
        let got = loop {
            // Anything else is the host's own uevents.
            if let KernelEvent::KernelError { disk, line, lines } =
                rx.recv_timeout(Duration::from_secs(10)).expect("an event within 10 s")
            {
                break (disk, line, lines);
            }
        };
        assert_eq!(got, ("sda".into(), "Buffer I/O error on dev sda1, logical block 0, async page read".into(), 1));
        assert_eq!(sources.status.kmsg(), SourceState::Live);
        drop(sources); // stops and joins both threads
    }
}
