//! Wiring: builds the parts from a [`Config`] and starts them (the runner, the handlers of
//! the gateway's queries (the probe workers behind the query catalogue, remote actions),
//! the outbox, the disk monitor, the kernel event sources and maintenance).

use std::sync::Arc;

use crate::clock::Clock;
use crate::config::Config;
use crate::config::sources::SourcesConfig;
use crate::episodes::event::Feed;
use crate::events::kernel_event::Sink;
use crate::events::sources::Sources;
use crate::jobs::Registry;
use crate::kernel_log::feed::KmsgFeed;
use crate::monitor;
use crate::net::address_book::AddressBook;
use crate::os::deferred_write::DeferredWriter;
use crate::os::{signals, wake};
use crate::outbox::spool;
use crate::queries::answers::Probes;
use crate::runner::Runner;
use crate::{actions, maintenance, protocol, queries, recovery, status, update};

/// The whole agent as the binary runs it: the runner (which owns the socket), the probe
/// workers behind the standard query catalogue, the warning spool and the disk monitor.
pub struct Agent {
    runner: Runner,
    /// Failure episodes opening and ending, for whoever acts on them.
    episodes: Arc<Feed>,
    update: Arc<update::Shared>,
    // Dropped before the monitor: the sources hold senders into its channel.
    _events: Sources,
    _monitor: monitor::MonitorHandle,
    _maintenance: maintenance::control::Control,
}

impl Agent {
    /// Opens the spool, builds the catalogue (plus whatever `extend` adds: tests add slow or
    /// panicking probes) and starts the disk monitor. Problems found in the state directory
    /// are logged at error level and the agent goes on.
    pub fn build(cfg: Config, extend: impl FnOnce(&mut queries::Catalogue)) -> std::io::Result<Agent> {
        Agent::build_with(cfg, extend, spool::Options::default())
    }

    /// [`Agent::build`] with the outbox's options: its cap, and for tests a slow state disk.
    pub fn build_with(
        cfg: Config,
        extend: impl FnOnce(&mut queries::Catalogue),
        outbox: spool::Options,
    ) -> std::io::Result<Agent> {
        Agent::build_inner(cfg, extend, outbox, None)
    }

    /// [`Agent::build`] with the kernel log opened by the caller: `main` opens it before it
    /// drops its capabilities, since reading /dev/kmsg is checked at open.
    /// The kernel log may also come from the privileged half ([`KmsgFeed`]).
    pub fn build_with_kmsg(cfg: Config, kmsg: KmsgFeed) -> std::io::Result<Agent> {
        Agent::build_inner(cfg, |_| {}, spool::Options::default(), Some(kmsg))
    }

    fn build_inner(
        cfg: Config,
        extend: impl FnOnce(&mut queries::Catalogue),
        outbox: spool::Options,
        kmsg: Option<KmsgFeed>,
    ) -> std::io::Result<Agent> {
        // The clock's record and the address book: small files the connect thread learns,
        // written by one thread of their own.
        let writer = DeferredWriter::default();
        let (clock, clock_problem) = Clock::load(&cfg.paths.state_dir, writer.clone());
        let (book, book_problem) = AddressBook::load(&cfg.paths.state_dir, writer);
        for p in [clock_problem, book_problem].into_iter().flatten() {
            log::error!("{p}");
        }
        let mut status = status::AgentStatus::new(cfg.file.clone()).with_clock(Arc::new(clock));
        if let Some(url) = cfg.gateway.urls.first() {
            status = status.with_gateway(url.as_str());
        }
        let status = Arc::new(status);
        let probes = Arc::new(Probes::from_config(&cfg));
        let mut catalogue = queries::Catalogue::standard(Arc::clone(&probes), Arc::clone(&status));
        extend(&mut catalogue);
        if let Some(why) = &cfg.paths.state_dir_problem {
            log::error!(
                "the state directory {} is not writable ({why}); disk warnings are kept in memory, still sent, \
                 and written out when it is writable again",
                cfg.paths.state_dir.display()
            );
        }
        let (spool, problems) = spool::Spool::open_with(&cfg.paths.state_dir, outbox)?;
        for p in problems {
            log::error!("{}", p.0);
        }
        let spool = Arc::new(spool);
        let ids = Arc::new(protocol::ActIds::new());
        let cfg = Arc::new(cfg);
        let (waker, wake_rx) = wake::pair()?;
        // The storage thread wakes the loop when a message is written and ready to send.
        spool.set_waker(waker.try_clone()?);
        // Every act the gateway may ask for, and what answers it (see `jobs`).
        let id = protocol::Identity::from(&cfg.device);
        let mut jobs = Registry::new(waker.try_clone()?);
        let catalogue = Arc::new(catalogue);
        jobs.add(catalogue.acts(), queries::workers::Workers::start(Arc::clone(&catalogue))?);
        status.set_actions(cfg.actions.allowed());
        let mut actions = actions::Actions::new(
            Arc::new(cfg.actions.clone()),
            &id,
            &cfg.paths.state_dir,
            Arc::clone(&spool),
            Arc::clone(&ids),
            Arc::clone(status.clock()),
        );
        let steps = actions.steps();
        let mut updates =
            update::Updates::new(Arc::clone(&cfg), &id, Arc::clone(&status), Arc::clone(&spool), Arc::clone(&ids));
        let update = updates.shared();
        // Not both at once: no update starts while an action runs or in maintenance, and
        // no action (nor recovery step) starts while an update is under way (or a new
        // version is on trial).
        updates.add_not_now(actions.running_check());
        let in_maintenance = Arc::clone(&status);
        updates
            .add_not_now(Arc::new(move || in_maintenance.in_maintenance().then(|| "the rig is in maintenance".into())));
        let busy = Arc::clone(&update);
        actions.add_not_now(Arc::new(move || {
            busy.busy().then(|| format!("an agent update is under way ({})", busy.phase().as_str()))
        }));
        jobs.add([actions::ACT], actions);
        jobs.add([update::ACT], updates);
        // Before the monitor: a window kept across a restart marks its first warnings.
        let maintenance = maintenance::control::Control::start(&cfg.paths.state_dir, Arc::clone(&status))?;
        jobs.add([maintenance::console::ACT], maintenance::console::SetMaintenance::new(&cfg, maintenance.console()));
        // Subscribed before the monitor starts: it hears the episodes taken over at start.
        let episodes = Arc::new(Feed::default());
        let parts = recovery::driver::Parts {
            state_dir: cfg.paths.state_dir.clone(),
            steps,
            spool: Arc::clone(&spool),
            ids: Arc::clone(&ids),
            id: id.clone(),
            status: Arc::clone(&status),
        };
        jobs.add::<&str>([], recovery::driver::Recovery::start(&cfg.recovery, parts, episodes.subscribe())?);
        let mut runner = Runner::new(
            Arc::clone(&cfg),
            (waker, wake_rx),
            jobs,
            Arc::clone(&status),
            Arc::clone(&spool),
            Arc::clone(&ids),
        )?;
        runner.set_address_book(Arc::new(book));
        update.set_shutdown(runner.shutdown());
        let shared = monitor::Shared {
            ids,
            spool,
            smart: Arc::clone(&probes.smart),
            health: Arc::clone(&probes.health),
            status: Arc::clone(&status),
            gpu_health: Arc::clone(&probes.gpu_health),
            nvidia: Arc::clone(&probes.nvidia),
            episodes: Arc::clone(&episodes),
        };
        let monitor = monitor::Monitor::new(&cfg, shared).spawn()?;
        // Kernel events go through the monitor's own channel: it wakes for them at once, and
        // takes a burst in before one scan.
        let sink = monitor.control().map(|tx| -> Sink { Arc::new(move |e| tx.send(monitor::Input::Event(e)).is_ok()) });
        let (sources_cfg, sink) = (SourcesConfig::from_config(&cfg), sink.unwrap_or_else(|| Arc::new(|_| false)));
        let sources = match kmsg {
            Some(kmsg) => Sources::start_with_feed(sources_cfg, kmsg, sink),
            None => Sources::start(sources_cfg, sink),
        };
        status.set_event_sources(Arc::clone(&sources.status));
        // SIGHUP: the runner re-reads the config, gives it to the handlers of `jobs` and
        // hands it here; probes, disk rules and the allowed actions shown change at once.
        let control = monitor.control();
        runner.set_reload_hook(move |cfg| {
            probes.reconfigure(cfg);
            status.set_actions(cfg.actions.allowed());
            if let Some(c) = &control {
                let _ = c.send(monitor::Input::Reload(Box::new(cfg.clone())));
            }
        });
        Ok(Agent { runner, episodes, update, _events: sources, _monitor: monitor, _maintenance: maintenance })
    }

    /// The handle that stops the agent (signals, tests, the demo).
    pub fn shutdown(&self) -> signals::Shutdown {
        self.runner.shutdown()
    }

    /// The failure episodes' events: subscribe to hear each one opening and ending, off
    /// the socket thread. A new subscriber is first handed the episodes open now.
    pub fn episodes(&self) -> Arc<Feed> {
        Arc::clone(&self.episodes)
    }

    /// The agent's clock. Tests move the system clock it sees with [`Clock::skew`] (a board
    /// at 1970, an NTP jump) before and while it runs.
    pub fn clock(&self) -> Arc<Clock> {
        Arc::clone(self.runner.status().clock())
    }

    /// Whether the agent stopped because an update was switched to: `main` then starts
    /// the binary again in place (after dropping the agent, which flushes the outbox).
    pub fn restart_for_update(&self) -> bool {
        self.update.restart_requested()
    }

    /// Runs until stopped; the disk monitor stops when the agent is dropped.
    pub fn run(&mut self) {
        self.runner.run();
    }
}
