//! The disk-failure monitor: a thread that scans the monitored disks every
//! `disks.scan_interval`, applies the rules, and for every new failure episode writes a
//! warning to the spool (durably) before it wakes the runner to send it.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::disks::health::DiskHealth;
use crate::disks::inventory::{Episode, Inventory};
use crate::disks::reason::Reason;
use crate::disks::rules::{self, Seen};
use crate::events::disk_event::DiskEvent;
use crate::events::kmsg_job::SAVE_EVERY;
use crate::events::storm::Storms;
use crate::kernel_log::cursor::Cursor;
use crate::os::mountinfo;
use crate::outbox::spool::{Durability, Spool};
use crate::probes::disks::{self, Disk};
use crate::probes::smart::SmartReader;
use crate::probes::{Roots, counters, glob_match};
use crate::protocol::{self, ActIds, Identity};
use crate::status::AgentStatus;

/// How long a scan that raised warnings waits for the storage thread to write them, so
/// that the same save records them as reported. Bounded: a dying state disk delays the
/// scan by at most this; the episodes are then recorded by a later scan.
const SETTLE_WAIT: Duration = Duration::from_secs(5);

pub struct Monitor {
    roots: Roots,
    include: Vec<String>,
    exclude: Vec<String>,
    scan_interval: Duration,
    ioerr_threshold: u64,
    state_dir: PathBuf,
    inv: Inventory,
    id: Identity,
    ids: Arc<ActIds>,
    spool: Arc<Spool>,
    smart: Arc<SmartReader>,
    health: Arc<DiskHealth>,
    status: Arc<AgentStatus>,
    refresher: Option<JoinHandle<()>>,
    save_failing: bool,
    /// The inventory differs from what is saved in a way a scan cannot see (episodes found
    /// acknowledged through the spool's tombstones at start): the next scan saves.
    unsaved: bool,
    /// Kernel I/O-error storms by disk: each is one `io_errors` episode.
    storms: Storms,
    /// The kernel log position handed over by the sources and not saved yet; saved only
    /// once what the records before it caused is durably recorded, so a crash never
    /// skips an error whose warning was not yet on disk.
    kmsg_read: Option<Cursor>,
    /// A kernel error came since the last save: save the position at the next chance.
    kmsg_errors: bool,
    kmsg_saved: Instant,
}

/// What the monitor thread is told.
#[derive(Debug)]
pub enum Input {
    /// A reloaded config: disk rules take effect at the next scan, which follows at once.
    Reload(Box<Config>),
    /// A kernel event (uevent, kernel log error) from [`crate::events::sources::Sources`].
    Event(DiskEvent),
}

/// Talks to the monitor thread; stops it when dropped.
pub struct MonitorHandle {
    control: Option<Sender<Input>>,
    thread: Option<JoinHandle<()>>,
}

impl MonitorHandle {
    /// Where to send a reloaded config: disk rules take effect at the next scan, which
    /// follows at once.
    pub fn control(&self) -> Option<Sender<Input>> {
        self.control.clone()
    }
}

impl Drop for MonitorHandle {
    fn drop(&mut self) {
        drop(self.control.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the monitor shares with the rest of the agent.
pub struct Shared {
    pub ids: Arc<ActIds>,
    pub spool: Arc<Spool>,
    pub smart: Arc<SmartReader>,
    pub health: Arc<DiskHealth>,
    pub status: Arc<AgentStatus>,
}

impl Monitor {
    /// Loads the inventory (a corrupt one is moved aside and reported) and takes in the
    /// warnings still in the spool, so a crash between spooling a warning and saving its
    /// episode never yields a second warning for the same failure. An episode whose warning
    /// was never durably spooled nor acknowledged is raised again, with the same `act_id`.
    pub fn new(cfg: &Config, shared: Shared) -> Monitor {
        let state_dir = cfg.paths.state_dir.clone();
        let (mut inv, problem) = Inventory::load(&state_dir);
        if let Some(p) = problem {
            log::error!("{p}");
        }
        let id = Identity::from(&cfg.device);
        let unsaved = crate::disks::restart::take_over(&mut inv, &shared.spool, &id, shared.status.clock().stamp());
        let mut storms = Storms::new(cfg.disks.io_error_quiet);
        let now = Instant::now();
        // An io_errors episode open before a restart stays open a quiet period more: the
        // restart alone must not end it (and a storm still going would warn again).
        for e in inv.episodes.iter().filter(|e| e.reason == Reason::IoErrors) {
            storms.resume(&e.disk, "errors before the agent restarted", now);
        }
        Monitor {
            roots: Roots::from_config(&cfg.paths),
            include: cfg.disks.include.clone(),
            exclude: cfg.disks.exclude.clone(),
            scan_interval: cfg.disks.scan_interval,
            ioerr_threshold: cfg.disks.ioerr_threshold,
            state_dir,
            inv,
            id,
            ids: shared.ids,
            spool: shared.spool,
            smart: shared.smart,
            health: shared.health,
            status: shared.status,
            refresher: None,
            save_failing: false,
            unsaved,
            storms,
            kmsg_read: None,
            kmsg_errors: false,
            kmsg_saved: Instant::now(),
        }
    }

    /// Scans now and then every `scan_interval`, on its own thread, until the handle drops.
    pub fn spawn(mut self) -> std::io::Result<MonitorHandle> {
        let (control, commands) = mpsc::channel::<Input>();
        let thread = thread::Builder::new().name("monitor".into()).spawn(move || {
            let mut scan_now = true;
            let mut next_scan = Instant::now();
            loop {
                let now = Instant::now();
                // A storm whose quiet period just passed ends its episode now, not a scan later.
                if scan_now || now >= next_scan || self.storms.next_end().is_some_and(|t| now >= t) {
                    self.scan();
                    scan_now = false;
                    next_scan = Instant::now() + self.scan_interval;
                }
                // Every event taken in has had its scan (scan_now is false here).
                self.save_kmsg_position(false);
                let until = self.storms.next_end().map_or(next_scan, |t| t.min(next_scan));
                let mut input = commands.recv_timeout(until.saturating_duration_since(Instant::now()));
                // Everything already queued (a burst of uevents) is taken in before one scan.
                loop {
                    match input {
                        Err(RecvTimeoutError::Timeout) => break,
                        Ok(Input::Reload(cfg)) => {
                            self.reconfigure(&cfg);
                            scan_now = true;
                        }
                        Ok(Input::Event(e)) => scan_now |= self.take_event(e),
                        // Every sender is gone: the agent is stopping. The events queued
                        // before have been taken in above; their scan is not skipped.
                        Err(RecvTimeoutError::Disconnected) => {
                            if scan_now {
                                self.scan();
                            }
                            // After the acks are recorded: they may be what makes it durable.
                            self.finish();
                            return self.save_kmsg_position(true);
                        }
                    }
                    input = commands.try_recv().map_err(|e| match e {
                        mpsc::TryRecvError::Empty => RecvTimeoutError::Timeout,
                        mpsc::TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
                    });
                }
            }
        })?;
        Ok(MonitorHandle { control: Some(control), thread: Some(thread) })
    }

    /// Takes in a reloaded config (disk rules, scan interval, identity of new warnings).
    pub fn reconfigure(&mut self, cfg: &Config) {
        self.include = cfg.disks.include.clone();
        self.exclude = cfg.disks.exclude.clone();
        self.scan_interval = cfg.disks.scan_interval;
        self.ioerr_threshold = cfg.disks.ioerr_threshold;
        self.storms.set_quiet(cfg.disks.io_error_quiet);
        self.id = Identity::from(&cfg.device);
    }

    /// Takes in a kernel event; true when it needs a scan now (a block device changed, or
    /// a monitored disk's error storm began).
    pub fn take_event(&mut self, e: DiskEvent) -> bool {
        match e {
            DiskEvent::Changed(_) => true,
            DiskEvent::KernelError { disk, line, .. } => {
                self.kmsg_errors = true;
                self.monitored(&disk) && self.storms.note(&disk, &line, Instant::now())
            }
            DiskEvent::KmsgRead(cursor) => {
                self.kmsg_read = Some(cursor);
                false
            }
        }
    }

    /// Saves the kernel log position handed over, once every episode is durably recorded
    /// (its warning on disk or acknowledged, the inventory saved): a crash before then
    /// reads those records again, and their open episodes keep them from warning twice.
    /// Right after kernel errors, at stop, else at most every [`SAVE_EVERY`] (flash wear).
    fn save_kmsg_position(&mut self, stopping: bool) {
        let Some(cursor) = &self.kmsg_read else { return };
        if !(stopping || self.kmsg_errors || self.kmsg_saved.elapsed() >= SAVE_EVERY) {
            return;
        }
        if self.save_failing || self.inv.episodes.iter().any(|e| !e.reported) {
            return;
        }
        match cursor.save(&self.state_dir) {
            Ok(()) => {
                self.kmsg_read = None;
                self.kmsg_errors = false;
                self.kmsg_saved = Instant::now();
            }
            Err(e) => log::debug!("cannot save the kernel log position ({e})"),
        }
    }

    fn monitored(&self, name: &str) -> bool {
        self.include.iter().any(|g| glob_match(g, name)) && !self.exclude.iter().any(|g| glob_match(g, name))
    }

    /// One scan; returns how many new warnings it raised.
    pub fn scan(&mut self) -> usize {
        let before = self.inv.clone();
        self.forget_unmonitored();
        let names = disks::monitored(&self.roots.sysfs, &self.include, &self.exclude);
        let present: Vec<Disk> = names.iter().filter_map(|n| disks::read(&self.roots.sysfs, n)).collect();
        self.forget_replaced_smart(&present);
        let seen = self.look_at(&present);
        self.refresh_smart(&present);
        let conditions = self.conditions(&present, &seen);
        let (new, closed) = rules::reconcile(&mut self.inv.episodes, &conditions);
        for e in &closed {
            log::info!("disk /dev/{}: {} cleared", e.disk, e.reason);
        }
        let warnings: Vec<serde_json::Value> = new.iter().map(|c| self.open_episode(c)).collect();
        // The verdicts first: whoever hears of a warning finds them in get_disk_info.
        let present_names: Vec<String> = present.iter().map(|d| d.name.clone()).collect();
        self.health.publish(&self.inv, &present_names);
        for w in &warnings {
            // The storage thread writes it durably before the runner offers it to the
            // gateway; the episode counts as reported once that write is done.
            self.spool.push(w);
        }
        self.spool.catch_up();
        if !new.is_empty() {
            // Record the new episodes as reported in this save when their writes are done,
            // so that a stop right after the ack does not raise them again.
            self.spool.settle(SETTLE_WAIT);
        }
        self.record_reported();
        self.save_if_changed(&before);
        self.status.set_warnings_pending(self.spool.len() as u64);
        new.len()
    }

    /// Disks the config no longer covers are forgotten, not reported missing.
    fn forget_unmonitored(&mut self) {
        let dropped: Vec<String> = self.inv.disks.keys().filter(|n| !self.monitored(n)).cloned().collect();
        for n in &dropped {
            self.inv.disks.remove(n);
            self.inv.episodes.retain(|e| &e.disk != n);
        }
    }

    /// A disk replaced under the same name (another serial) must not be judged, or given
    /// a SMART baseline, by the old disk's cached SMART answer: it is dropped, and the new
    /// disk's comes with the next refresh.
    fn forget_replaced_smart(&self, present: &[Disk]) {
        for d in present {
            let known = self.inv.disks.get(&d.name).and_then(|r| r.serial.as_deref());
            if let (Some(was), Some(now)) = (known, d.serial.as_deref())
                && was != now
            {
                log::info!(
                    "disk {}: serial {} where {} was: another disk, its SMART is read afresh",
                    d.device(),
                    crate::protocol::escape::escape(now),
                    crate::protocol::escape::escape(was)
                );
                self.smart.forget(&d.device());
            }
        }
    }

    /// What the rules look at for each present disk: its last SMART verdict (never waited
    /// for) and its mounts.
    fn look_at(&self, present: &[Disk]) -> Vec<Seen> {
        let all_mounts = mountinfo::read(&self.roots.procfs);
        present
            .iter()
            .map(|d| {
                let devs: Vec<&str> = d.devs().collect();
                Seen {
                    smart_passed: self.smart.peek(&d.device()).and_then(Result::ok).and_then(|s| s.passed),
                    mounts: all_mounts
                        .iter()
                        .filter(|m| devs.contains(&m.dev.as_str()))
                        .map(|m| (m.mountpoint.clone(), m.readonly))
                        .collect(),
                    disk: d.clone(),
                }
            })
            .collect()
    }

    /// Every failure condition standing now: the rules over sysfs and mounts, the kernel's
    /// I/O-error storms, and the predictive ones (SMART indicators, ext4 counters, arrays).
    fn conditions(&mut self, present: &[Disk], seen: &[Seen]) -> Vec<rules::Condition> {
        let mut conditions = rules::evaluate(&mut self.inv, seen, self.ioerr_threshold);
        rules::add_kernel_io_errors(&mut conditions, &self.storms.open(Instant::now()));
        let observed = self.observe(present);
        // Arrays over monitored disks (or monitored themselves); not every md on the host.
        let arrays: Vec<_> = counters::md_arrays(&self.roots.sysfs)
            .into_iter()
            .filter(|a| {
                self.monitored(&a.name)
                    || a.members
                        .iter()
                        .any(|m| present.iter().any(|d| &d.name == m || d.partitions.iter().any(|p| &p.name == m)))
            })
            .collect();
        conditions.extend(crate::disks::predictive::evaluate(&mut self.inv, &observed, &arrays));
        conditions
    }

    /// A new failure: logged, recorded as an episode not yet reported, and its warning
    /// returned for the spool.
    fn open_episode(&mut self, c: &rules::Condition) -> serde_json::Value {
        let act_id = self.ids.next();
        let device = format!("/dev/{}", c.disk);
        let serial = self.inv.disks.get(&c.disk).and_then(|r| r.serial.clone());
        let now = self.status.clock().stamp();
        let warning =
            protocol::encode_warning(&self.id, &act_id, &device, serial.as_deref(), c.reason.as_str(), &c.detail, now);
        // The detail quotes outside text (a mount point from mountinfo, a kernel line).
        log::error!(
            "disk {device} failed ({}): {}; warning {act_id}",
            c.reason,
            crate::protocol::escape::escape(&c.detail)
        );
        self.inv.episodes.push(Episode {
            disk: c.disk.clone(),
            reason: c.reason,
            act_id,
            since: now,
            detail: c.detail.clone(),
            reported: false,
        });
        warning
    }

    /// Marks the episodes whose warning is on disk, or no longer in the outbox
    /// (acknowledged, or a duplicate the cap dropped): nothing to raise again after a restart.
    fn record_reported(&mut self) {
        for e in self.inv.episodes.iter_mut().filter(|e| !e.reported) {
            e.reported = matches!(self.spool.durability(&e.act_id), None | Some(Durability::OnDisk));
        }
    }

    /// The agent is stopping: record acks that came in since the last scan.
    fn finish(&mut self) {
        let before = self.inv.clone();
        self.record_reported();
        self.save_if_changed(&before);
    }

    /// Saves the inventory when it changed, or when the last save failed (a full or
    /// read-only state disk: tried again every scan until it succeeds). When what is saved
    /// is already current, the spool's tombstones of reported episodes go.
    fn save_if_changed(&mut self, before: &Inventory) {
        if self.inv != *before || self.save_failing || self.unsaved {
            self.save();
        } else {
            self.spool.purge_tombstones(self.unreported());
        }
    }

    fn unreported(&self) -> std::collections::HashSet<String> {
        self.inv.episodes.iter().filter(|e| !e.reported).map(|e| e.act_id.clone()).collect()
    }

    /// The predictive inputs of the present disks: last SMART answer, ext4 error counts.
    fn observe(&self, present: &[Disk]) -> Vec<crate::disks::predictive::Observed> {
        present
            .iter()
            .map(|d| {
                let mut devs: Vec<&str> = vec![d.name.as_str()];
                devs.extend(d.partitions.iter().map(|p| p.name.as_str()));
                crate::disks::predictive::Observed {
                    disk: d.name.clone(),
                    serial: d.serial.clone(),
                    smart: self.smart.peek(&d.device()).and_then(Result::ok).map(|s| s.indicators),
                    fs_errors: counters::ext4_errors(&self.roots.sysfs, &devs),
                }
            })
            .collect()
    }

    fn save(&mut self) {
        match self.inv.save(&self.state_dir) {
            Ok(()) => {
                self.unsaved = false;
                // Saved: a tombstone is needed only for episodes still not reported.
                self.spool.purge_tombstones(self.unreported());
                if std::mem::take(&mut self.save_failing) {
                    log::info!("disk inventory saved again in {}", self.state_dir.display());
                }
            }
            Err(e) => {
                if !std::mem::replace(&mut self.save_failing, true) {
                    log::error!(
                        "cannot save the disk inventory in {} ({e}); kept in memory, saved when possible",
                        self.state_dir.display()
                    );
                }
            }
        }
    }

    /// Starts smartctl for disks whose SMART result is stale, on a helper thread: a scan
    /// never waits for it and uses the last result it has.
    fn refresh_smart(&mut self, disks: &[Disk]) {
        if self.refresher.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        let stale: Vec<String> = disks.iter().map(Disk::device).filter(|d| !self.smart.is_fresh(d)).collect();
        if stale.is_empty() {
            return;
        }
        let smart = Arc::clone(&self.smart);
        self.refresher = thread::Builder::new()
            .name("smart".into())
            .spawn(move || {
                // In parallel: one hung disk's smartctl does not delay the others'.
                let _ = smart.read_many(&stale);
            })
            .ok();
    }
}
