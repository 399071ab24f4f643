//! The failure monitor: a thread that scans the monitored disks and the rig's GPUs every
//! `disks.scan_interval` (and at once on a kernel event), applies the rules, and for every
//! new failure episode writes a warning to the spool (durably) before it wakes the runner
//! to send it; with `warning.send_cleared`, the end of each warned episode too. Whoever
//! subscribed to the episode [`Feed`] hears of each opening and end.

mod gpu_watch;
mod messages;
mod restart;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::disks::health::DiskHealth;
use crate::disks::inventory::Inventory;
use crate::disks::rules::{self, Seen};
use crate::episodes::condition::{Condition, reconcile};
use crate::episodes::episode::{Closing, Episode};
use crate::episodes::event::{Change, EpisodeEvent, Feed};
use crate::episodes::ledger::Ledger;
use crate::episodes::reason::Reason;
use crate::episodes::subject::SubjectKind;
use crate::events::kernel_event::KernelEvent;
use crate::events::kmsg_job::SAVE_EVERY;
use crate::events::storm::Storms;
use crate::gpus::health::GpuHealth;
use crate::gpus::inventory::GpuInventory;
use crate::gpus::rules::NvidiaSeen;
use crate::kernel_log::cursor::Cursor;
use crate::os::mountinfo;
use crate::outbox::spool::{Durability, Spool};
use crate::probes::disks::{self, Disk};
use crate::probes::gpu::{Gpu, NvidiaError, NvidiaReader};
use crate::probes::smart::SmartReader;
use crate::probes::{Roots, counters, glob_match};
use crate::protocol::{ActIds, Identity};
use crate::status::AgentStatus;
use gpu_watch::GpuWatch;
use messages::Names;

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
    /// Episodes saved as open that ended before this start (their end is in the spool),
    /// published as closed when the thread starts.
    ended_before: Vec<EpisodeEvent>,
    /// Kernel I/O-error storms by disk: each is one `io_errors` episode.
    storms: Storms,
    /// The kernel log position handed over by the sources and not saved yet; saved only
    /// once what the records before it caused is durably recorded, so a crash never
    /// skips an error whose warning was not yet on disk.
    kmsg_read: Option<Cursor>,
    /// A kernel error came since the last save: save the position at the next chance.
    kmsg_errors: bool,
    kmsg_saved: Instant,
    /// The GPUs: their inventory, what the kernel said of them, their storms.
    gpus: GpuWatch,
    /// `warning.send_cleared`.
    send_cleared: bool,
    /// Who hears of episodes opening and ending.
    feed: Arc<Feed>,
    /// nvidia-smi, run on a helper thread whose answer comes back as [`Input::Nvidia`].
    nvidia: Arc<NvidiaReader>,
    /// A run is on its way: its answer (bounded by `nvidia_smi_timeout`) is still to come.
    nvidia_asked: bool,
    /// nvidia-smi was asked at least once (the first look, whatever the inventory holds).
    nvidia_looked: bool,
    nvidia_every: Duration,
    nvidia_next: Instant,
    /// The monitor's own channel, for its helpers' answers (set when it is spawned).
    input: Option<Sender<Input>>,
}

/// What the monitor thread is told.
#[derive(Debug)]
pub enum Input {
    /// A reloaded config: disk rules take effect at the next scan, which follows at once.
    Reload(Box<Config>),
    /// A kernel event (uevent, kernel log error) from [`crate::events::sources::Sources`].
    Event(KernelEvent),
    /// nvidia-smi's answer, from a run started at that instant.
    Nvidia(Instant, Result<Vec<Gpu>, NvidiaError>),
    /// The agent is stopping (the monitor holds a sender of its own, so the channel never
    /// disconnects while it runs).
    Stop,
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

/// How long a stop waits for the monitor to end its scan and save.
const STOP_WAIT: Duration = Duration::from_secs(5);

impl Drop for MonitorHandle {
    /// Stops the monitor and waits for it, but not for ever: a scan blocked in a read under
    /// sysfs (a dying disk's attribute can hang for minutes in the kernel) would hold the
    /// stop until systemd's SIGKILL. After [`STOP_WAIT`] the agent stops without it; what
    /// the monitor had not saved is taken over at the next start, as after a kill -9.
    fn drop(&mut self) {
        if let Some(c) = self.control.take() {
            let _ = c.send(Input::Stop);
        }
        if let Some(t) = self.thread.take() {
            let until = Instant::now() + STOP_WAIT;
            while !t.is_finished() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                log::warn!(
                    "stopping without the disk monitor: its scan has not returned in {STOP_WAIT:?} (a read under \
                     sysfs hangs?); the next start takes over from what it saved"
                );
            }
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
    pub gpu_health: Arc<GpuHealth>,
    pub nvidia: Arc<NvidiaReader>,
    /// Episode events go here; subscribe before the monitor is spawned, or read the open
    /// episodes a subscriber is handed first (see [`Feed::subscribe`]).
    pub episodes: Arc<Feed>,
}

/// How often the monitor asks nvidia-smi: every scan (`disks.scan_interval`), and never
/// more often than the query side may (`probes.nvidia_smi_interval`): each run costs the
/// board a process and the driver a round of calls.
fn nvidia_every(cfg: &Config) -> Duration {
    cfg.disks.scan_interval.max(cfg.probes.nvidia_smi_interval)
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
        let (mut gpus, problem) = GpuInventory::load(&state_dir);
        if let Some(p) = problem {
            log::error!("{p}");
        }
        let id = Identity::from(&cfg.device);
        let maintenance = shared.status.maintenance.is_on();
        let taken =
            restart::take_over(&mut inv, &mut gpus, &shared.spool, &id, maintenance, shared.status.clock().stamp());
        let ended_before =
            taken.ended.iter().map(|c| EpisodeEvent::of(Change::Closed, &c.episode, &c.detail, c.time.secs)).collect();
        let mut storms = Storms::new(cfg.disks.io_error_quiet);
        let now = Instant::now();
        // An io_errors episode open before a restart stays open a quiet period more: the
        // restart alone must not end it (and a storm still going would warn again).
        for e in inv.episodes.open.iter().filter(|e| e.reason == Reason::IoErrors) {
            storms.resume(&e.subject, "errors before the agent restarted", now);
        }
        let roots = Roots::from_config(&cfg.paths);
        let gpus = GpuWatch::new(gpus, shared.gpu_health, cfg.gpus.warn, roots.sysfs.clone(), cfg.disks.io_error_quiet);
        Monitor {
            roots,
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
            unsaved: taken.unsaved,
            ended_before,
            storms,
            kmsg_read: None,
            kmsg_errors: false,
            kmsg_saved: Instant::now(),
            gpus,
            send_cleared: cfg.warning.send_cleared,
            feed: shared.episodes,
            nvidia: shared.nvidia,
            nvidia_asked: false,
            nvidia_looked: false,
            nvidia_every: nvidia_every(cfg),
            nvidia_next: now,
            input: None,
        }
    }

    /// Every open episode, as [`Change::Resumed`]: they were open before this start; and
    /// every one saved as open whose end the spool holds, as [`Change::Closed`].
    fn publish_resumed(&mut self) {
        for e in std::mem::take(&mut self.ended_before) {
            self.feed.publish(&e);
        }
        for l in [&self.inv.episodes, &self.gpus.inv.episodes] {
            for e in &l.open {
                self.feed.publish(&EpisodeEvent::of(Change::Resumed, e, &e.detail, e.since.secs));
            }
        }
    }

    /// Scans now and then every `scan_interval`, on its own thread, until the handle drops.
    pub fn spawn(mut self) -> std::io::Result<MonitorHandle> {
        let (control, commands) = mpsc::channel::<Input>();
        self.input = Some(control.clone());
        let thread = thread::Builder::new().name("monitor".into()).spawn(move || {
            self.publish_resumed();
            let mut scan_now = true;
            let mut next_scan = Instant::now();
            loop {
                let now = Instant::now();
                // A storm whose quiet period just passed ends its episode now, not a scan later.
                if scan_now || now >= next_scan || self.next_end().is_some_and(|t| now >= t) {
                    self.scan();
                    scan_now = false;
                    next_scan = Instant::now() + self.scan_interval;
                }
                // Every event taken in has had its scan (scan_now is false here).
                self.save_kmsg_position(false);
                // nvidia-smi is asked every `nvidia_smi_interval`, between scans too: its
                // answer wakes the monitor, and a scan follows when it changed.
                self.refresh_nvidia();
                let until = [self.next_end(), self.nvidia_due()].into_iter().flatten().fold(next_scan, Instant::min);
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
                        Ok(Input::Nvidia(at, result)) => scan_now |= self.take_nvidia(at, result),
                        // The agent is stopping. The events queued before have been taken
                        // in above; their scan is not skipped.
                        Ok(Input::Stop) | Err(RecvTimeoutError::Disconnected) => {
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
        self.gpus.set_quiet(cfg.disks.io_error_quiet);
        self.gpus.warn = cfg.gpus.warn;
        self.send_cleared = cfg.warning.send_cleared;
        self.nvidia_every = nvidia_every(cfg);
        self.id = Identity::from(&cfg.device);
    }

    /// When the next kernel storm (a disk's or a GPU's) ends if no line comes.
    fn next_end(&self) -> Option<Instant> {
        [self.storms.next_end(), self.gpus.next_end()].into_iter().flatten().min()
    }

    /// Takes in nvidia-smi's answer; true when it changes what the GPU rules see.
    fn take_nvidia(&mut self, at: Instant, result: Result<Vec<Gpu>, NvidiaError>) -> bool {
        self.nvidia_asked = false;
        let seen = match result {
            Ok(gpus) => NvidiaSeen::Listed(at, gpus),
            Err(NvidiaError::Disabled | NvidiaError::NotInstalled(_)) => NvidiaSeen::Off,
            Err(_) => NvidiaSeen::Silent,
        };
        // Only what the rules judge by: which GPUs, in which state, which cards.
        let view = |s: &NvidiaSeen| match s {
            NvidiaSeen::Listed(_, g) => {
                Some(g.iter().map(|g| (g.bus_id.clone(), g.state, g.uuid.clone())).collect::<Vec<_>>())
            }
            _ => None,
        };
        let changed = view(&seen) != view(&self.gpus.nvidia)
            || std::mem::discriminant(&seen) != std::mem::discriminant(&self.gpus.nvidia)
            || self.gpus.lost_held();
        self.gpus.nvidia = seen;
        changed
    }

    /// When nvidia-smi is to be asked next: `None` while a run is on its way (its answer
    /// wakes the monitor) or when the rig has no NVIDIA GPU to ask about.
    fn nvidia_due(&self) -> Option<Instant> {
        (!self.nvidia_asked && self.gpus.has_nvidia() && self.input.is_some()).then_some(self.nvidia_next)
    }

    /// Starts nvidia-smi on a helper thread when its interval has passed and the rig may
    /// have NVIDIA GPUs (the first look, or one in the inventory): a scan never waits for
    /// it, and a hung driver call holds only that thread.
    fn refresh_nvidia(&mut self) {
        let now = Instant::now();
        if now < self.nvidia_next || self.nvidia_asked || (self.nvidia_looked && !self.gpus.has_nvidia()) {
            return;
        }
        let Some(tx) = self.input.clone() else { return };
        self.nvidia_next = now + self.nvidia_every;
        let reader = Arc::clone(&self.nvidia);
        let spawned = thread::Builder::new().name("nvidia-smi".into()).spawn(move || {
            let (at, result) = reader.read_timed();
            let _ = tx.send(Input::Nvidia(at, result));
        });
        match spawned {
            Ok(_) => (self.nvidia_asked, self.nvidia_looked) = (true, true),
            Err(e) => log::debug!("cannot start nvidia-smi's thread ({e}); tried again later"),
        }
    }

    /// Takes in a kernel event; true when it needs a scan now (a block device changed, or
    /// a monitored disk's error storm began).
    pub fn take_event(&mut self, e: KernelEvent) -> bool {
        match e {
            KernelEvent::Changed(_) => true,
            KernelEvent::KernelError { disk, line, .. } => {
                self.kmsg_errors = true;
                self.monitored(&disk) && self.storms.note(&disk, &line, Instant::now())
            }
            KernelEvent::GpuRecord { gpu, kind, line, lines } => {
                self.kmsg_errors = true;
                self.gpus.take_record(&gpu, kind, &line, lines, Instant::now())
            }
            KernelEvent::Pci { slot, added } => self.gpus.take_pci(&slot, added, Instant::now()),
            KernelEvent::KmsgRead(cursor) => {
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
        if self.save_failing || self.unreported_any() {
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
        let before = (self.inv.clone(), self.gpus.inv.clone());
        self.forget_unmonitored();
        let names = disks::monitored(&self.roots.sysfs, &self.include, &self.exclude);
        let present: Vec<Disk> = names.iter().filter_map(|n| disks::read(&self.roots.sysfs, n)).collect();
        self.forget_replaced_smart(&present);
        let seen = self.look_at(&present);
        self.refresh_smart(&present);
        self.refresh_nvidia();
        let conditions = self.conditions(&present, &seen);
        let gpu_conditions = self.gpus.conditions(Instant::now());
        let (mut new, mut closed) = reconcile(&mut self.inv.episodes.open, &conditions);
        let (gpu_new, gpu_closed) = reconcile(&mut self.gpus.inv.episodes.open, &gpu_conditions);
        new.extend(gpu_new);
        closed.extend(gpu_closed);
        let opened: Vec<Episode> = new.iter().map(|c| self.open_episode(c)).collect();
        // The verdicts first: whoever hears of a warning finds them in get_disk_info.
        let present_names: Vec<String> = present.iter().map(|d| d.name.clone()).collect();
        self.health.publish(&self.inv, &present_names);
        self.gpus.health.publish(&self.gpus.inv.episodes);
        let maintenance = self.status.maintenance.is_on();
        for e in &opened {
            // The storage thread writes it durably before the runner offers it to the
            // gateway; the episode counts as reported once that write is done.
            self.spool.push(&self.names().warning(&self.id, e, maintenance));
            self.feed.publish(&EpisodeEvent::of(Change::Opened, e, &e.detail, e.since.secs));
        }
        // After every warning: an end goes out after its start, in spool order.
        let ends = closed.len();
        for e in closed {
            self.close_episode(e, maintenance);
        }
        self.spool.catch_up();
        if !new.is_empty() || (ends > 0 && self.send_cleared) {
            // Record the new episodes as reported in this save when their writes are done,
            // so that a stop right after the ack does not raise them again.
            self.spool.settle(SETTLE_WAIT);
        }
        self.record_reported();
        self.save_if_changed(&before);
        self.status.set_warnings_pending(self.spool.len() as u64);
        new.len()
    }

    fn names(&self) -> Names<'_> {
        Names { disks: &self.inv, gpus: &self.gpus.inv }
    }

    fn ledgers(&mut self) -> [&mut Ledger; 2] {
        [&mut self.inv.episodes, &mut self.gpus.inv.episodes]
    }

    /// An episode ended: logged, published and, with `warning.send_cleared`, its
    /// `warning_cleared` spooled and the episode kept as closing until that is recorded.
    /// Never for a warning the outbox cap dropped: the gateway never heard of its start.
    fn close_episode(&mut self, e: Episode, maintenance: bool) {
        let what = match e.kind() {
            SubjectKind::Disk => format!("disk /dev/{}", e.subject),
            SubjectKind::Gpu => format!("GPU {}", e.subject),
        };
        log::info!("{what}: {} cleared", e.reason);
        let now = self.status.clock().stamp();
        let detail = format!("{what}: {} no longer holds", e.reason);
        self.feed.publish(&EpisodeEvent::of(Change::Closed, &e, &detail, now.secs));
        if !self.send_cleared || self.spool.dropped(&e.act_id) {
            return;
        }
        let closing = Closing { episode: e, act_id: self.ids.next(), time: now, detail, reported: false };
        self.spool.push(&self.names().cleared(&self.id, &closing, maintenance));
        match closing.episode.kind() {
            SubjectKind::Disk => self.inv.episodes.closing.push(closing),
            SubjectKind::Gpu => self.gpus.inv.episodes.closing.push(closing),
        }
    }

    /// Disks the config no longer covers are forgotten, not reported missing.
    fn forget_unmonitored(&mut self) {
        let dropped: Vec<String> = self.inv.disks.keys().filter(|n| !self.monitored(n)).cloned().collect();
        for n in &dropped {
            self.inv.disks.remove(n);
            let (gone, kept): (Vec<Episode>, Vec<Episode>) =
                self.inv.episodes.open.drain(..).partition(|e| &e.subject == n);
            self.inv.episodes.open = kept;
            for e in gone {
                let detail = format!("disk /dev/{n} is no longer monitored");
                self.feed.publish(&EpisodeEvent::of(Change::Closed, &e, &detail, self.status.clock().unix_secs()));
            }
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
    fn conditions(&mut self, present: &[Disk], seen: &[Seen]) -> Vec<crate::episodes::condition::Condition> {
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

    /// A new failure: logged, recorded as an episode not yet reported, and returned for its
    /// warning.
    fn open_episode(&mut self, c: &Condition) -> Episode {
        let e = Episode {
            subject: c.subject.clone(),
            reason: c.reason,
            act_id: self.ids.next(),
            since: self.status.clock().stamp(),
            detail: c.detail.clone(),
            reported: false,
        };
        // The detail quotes outside text (a mount point from mountinfo, a kernel line).
        let detail = crate::protocol::escape::escape(&c.detail);
        match e.kind() {
            SubjectKind::Disk => {
                log::error!("disk /dev/{} failed ({}): {detail}; warning {}", e.subject, e.reason, e.act_id);
                self.inv.episodes.open.push(e.clone());
            }
            SubjectKind::Gpu => {
                log::error!("GPU {} failed ({}): {detail}; warning {}", e.subject, e.reason, e.act_id);
                self.gpus.inv.episodes.open.push(e.clone());
            }
        }
        e
    }

    /// Marks the messages on disk, or no longer in the outbox (acknowledged, or a duplicate
    /// the cap dropped), as reported: nothing to raise again after a restart. A closing
    /// episode goes once its end is reported and its warning has left the outbox (until
    /// then a restart must know the spooled warning is of an episode that ended).
    fn record_reported(&mut self) {
        let spool = Arc::clone(&self.spool);
        let reported = |act_id: &str| matches!(spool.durability(act_id), None | Some(Durability::OnDisk));
        for l in self.ledgers() {
            for e in l.open.iter_mut().chain(l.closing.iter_mut().map(|c| &mut c.episode)).filter(|e| !e.reported) {
                e.reported = reported(&e.act_id);
            }
            for c in l.closing.iter_mut().filter(|c| !c.reported) {
                c.reported = reported(&c.act_id);
            }
            l.closing.retain(|c| !(c.reported && c.episode.reported && !spool.contains(&c.episode.act_id)));
        }
    }

    /// The agent is stopping: record acks that came in since the last scan.
    fn finish(&mut self) {
        let before = (self.inv.clone(), self.gpus.inv.clone());
        self.record_reported();
        self.save_if_changed(&before);
    }

    /// Saves the inventory when it changed, or when the last save failed (a full or
    /// read-only state disk: tried again every scan until it succeeds). When what is saved
    /// is already current, the spool's tombstones of reported episodes go.
    fn save_if_changed(&mut self, before: &(Inventory, GpuInventory)) {
        if self.inv != before.0 || self.gpus.inv != before.1 || self.save_failing || self.unsaved {
            self.save();
        } else {
            self.spool.purge_tombstones(self.unreported());
        }
    }

    /// The act_ids not yet recorded as reported: warnings (of open and closing episodes)
    /// and the ends of closing ones.
    fn unreported(&self) -> std::collections::HashSet<String> {
        let mut out = std::collections::HashSet::new();
        for l in [&self.inv.episodes, &self.gpus.inv.episodes] {
            out.extend(l.unreported().map(str::to_string));
            out.extend(l.closing.iter().filter(|c| !c.episode.reported).map(|c| c.episode.act_id.clone()));
        }
        out
    }

    fn unreported_any(&self) -> bool {
        !self.unreported().is_empty()
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
        let saved = self.inv.save(&self.state_dir).and_then(|()| self.gpus.inv.save(&self.state_dir));
        match saved {
            Ok(()) => {
                self.unsaved = false;
                // Saved: a tombstone is needed only for episodes still not reported.
                self.spool.purge_tombstones(self.unreported());
                if std::mem::take(&mut self.save_failing) {
                    log::info!("disk and GPU inventories saved again in {}", self.state_dir.display());
                }
            }
            Err(e) => {
                if !std::mem::replace(&mut self.save_failing, true) {
                    log::error!(
                        "cannot save the disk and GPU inventories in {} ({e}); kept in memory, saved when possible",
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
