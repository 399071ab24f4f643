//! Wiring: builds the parts from a [`Config`] and starts them (the runner, the probe workers
//! behind the query catalogue, the outbox, the disk monitor and the kernel event sources).

use std::sync::Arc;

use crate::clock::Clock;
use crate::config::Config;
use crate::config::sources::SourcesConfig;
use crate::disks::monitor;
use crate::events::disk_event::Sink;
use crate::events::sources::Sources;
use crate::kernel_log::feed::KmsgFeed;
use crate::net::address_book::AddressBook;
use crate::os::deferred_write::DeferredWriter;
use crate::os::signals;
use crate::outbox::spool;
use crate::queries::answers::Probes;
use crate::runner::Runner;
use crate::{protocol, queries, status};

/// The whole agent as the binary runs it: the runner (which owns the socket), the probe
/// workers behind the standard query catalogue, the warning spool and the disk monitor.
pub struct Agent {
    runner: Runner,
    // Dropped before the monitor: the sources hold senders into its channel.
    _events: Sources,
    _monitor: monitor::MonitorHandle,
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
        let mut runner =
            Runner::new(Arc::clone(&cfg), catalogue, Arc::clone(&status), Arc::clone(&spool), Arc::clone(&ids))?;
        runner.set_address_book(Arc::new(book));
        let shared = monitor::Shared {
            ids,
            spool,
            smart: Arc::clone(&probes.smart),
            health: Arc::clone(&probes.health),
            status: Arc::clone(&status),
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
        // SIGHUP: the runner re-reads the config and hands it here; probes and disk rules
        // change at once.
        let control = monitor.control();
        runner.set_reload_hook(move |cfg| {
            probes.reconfigure(cfg);
            if let Some(c) = &control {
                let _ = c.send(monitor::Input::Reload(Box::new(cfg.clone())));
            }
        });
        Ok(Agent { runner, _events: sources, _monitor: monitor })
    }

    /// The handle that stops the agent (signals, tests, the demo).
    pub fn shutdown(&self) -> signals::Shutdown {
        self.runner.shutdown()
    }

    /// The agent's clock. Tests move the system clock it sees with [`Clock::skew`] (a board
    /// at 1970, an NTP jump) before and while it runs.
    pub fn clock(&self) -> Arc<Clock> {
        Arc::clone(self.runner.status().clock())
    }

    /// Runs until stopped; the disk monitor stops when the agent is dropped.
    pub fn run(&mut self) {
        self.runner.run();
    }
}
