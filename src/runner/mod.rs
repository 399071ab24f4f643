//! The main loop: the only owner of the gateway socket. Connects (round robin over
//! `gateway.urls`), drives a [`Session`] per connection, hands queries to their handlers
//! (the [`Registry`] agent.rs wires) and sends their answers, and waits out the backoff
//! between attempts.

use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, info};
use tungstenite::protocol::frame::coding::CloseCode;

use crate::backoff::{self, Backoff};
use crate::clock::ClockNews;
use crate::config::url::GatewayUrl;
use crate::config::{Config, ConfigErrors};
use crate::jobs::Registry;
use crate::logging::Throttle;
use crate::net::abort::Abort;
use crate::net::address_book::AddressBook;
use crate::net::connection::{Closing, Conn, Lost, Reply};
use crate::net::resolve::Resolver;
use crate::net::stream::WebSocket;
use crate::net::transport::{self, ConnectError};
use crate::net::upgrade::Connected;
use crate::os::notify::Notifier;
use crate::os::signals::Shutdown;
use crate::os::wake::{Interest, WakeReceiver, Waker};
use crate::outbox::resend::Resend;
use crate::outbox::spool::Spool;
use crate::protocol::{ActIds, Identity};
use crate::session::{Action, End, Session, SessionConfig};

use crate::status::AgentStatus;

mod inbound;
mod link_log;
mod reload;
use link_log::{Line, LinkLog};
use reload::Reload;

/// How long the close handshake may take when the agent stops (PROTOCOL.md §5).
const STOP_CLOSE_WAIT: Duration = Duration::from_secs(2);
/// How long other closes (rejected login, oversized message) wait for the gateway's reply.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// How a connection (or an attempt at one) came out; the session's own ending is [`End`].
#[derive(Debug)]
enum Outcome {
    /// Shutdown was requested; the connection, if any, was closed with 1001.
    Stop,
    ConnectFailed(ConnectError),
    Session(End),
    /// IO error, close from the gateway, oversized message, stalled writes.
    Lost(Lost),
    /// A reloaded config changed the connection settings: connect again at once.
    Reload,
}

pub struct Runner {
    cfg: Arc<Config>,
    id: Identity,
    status: Arc<AgentStatus>,
    ids: Arc<ActIds>,
    shutdown: Shutdown,
    waker: Waker,
    wake_rx: WakeReceiver,
    /// Act name → handler: every query's one path, and the one channel their answers
    /// come back on.
    jobs: Registry,
    backoff: Backoff,
    spool: Arc<Spool>,
    resend: Resend,
    /// Tags answers with the connection they belong to; answers for an older connection
    /// are dropped (the client that asked is gone with it).
    generation: u64,
    link: LinkLog,
    junk_log: Throttle,
    /// The gateway refusing our warnings: throttled apart from junk.
    refusal_log: Throttle,
    /// DNS lookups still running on their helper threads (a hung resolver), and the
    /// addresses that last worked.
    resolver: Resolver,
    notifier: Notifier,
    /// Hands a reloaded config to the parts outside the runner (probes, disk monitor).
    on_reload: Box<dyn FnMut(&Config) + Send>,
    /// A config being read on the `reload` thread: loading reads the config, the token and
    /// the PEM files and probes the state directory, none of which may block the socket.
    reloading: Option<mpsc::Receiver<Result<Config, ConfigErrors>>>,
    /// Another SIGHUP came while `reloading`: read the file again once that one is done,
    /// so the last edit is what runs.
    reload_again: bool,
}

impl Runner {
    /// `wake` is the pipe the loop sleeps on (its write end given to every part that wakes
    /// it: the outbox, `jobs`); `jobs` answers the queries.
    pub fn new(
        cfg: Arc<Config>,
        (waker, wake_rx): (Waker, WakeReceiver),
        jobs: Registry,
        status: Arc<AgentStatus>,
        spool: Arc<Spool>,
        ids: Arc<ActIds>,
    ) -> std::io::Result<Runner> {
        let id = Identity::from(&cfg.device);
        let backoff = Backoff::new(cfg.reconnect.initial, cfg.reconnect.max, backoff::random_seed());
        Ok(Runner {
            shutdown: Shutdown::new(waker.try_clone()?),
            resend: Resend::new(cfg.warning.resend_after),
            spool,
            cfg,
            id,
            status,
            ids,
            waker,
            wake_rx,
            jobs,
            backoff,
            generation: 0,
            link: LinkLog::default(),
            junk_log: Throttle::new(Duration::from_secs(60), 5),
            refusal_log: Throttle::new(Duration::from_secs(60), 5),
            resolver: Resolver::new(Arc::new(AddressBook::in_memory())),
            notifier: Notifier::from_env(),
            on_reload: Box::new(|_| {}),
            reloading: None,
            reload_again: false,
        })
    }

    /// Called with every config a SIGHUP loads successfully, after the runner took it in.
    pub fn set_reload_hook(&mut self, hook: impl FnMut(&Config) + Send + 'static) {
        self.on_reload = Box::new(hook);
    }

    /// The addresses that last worked, kept in the state directory (the agent's wiring
    /// loads it): without it they are kept in memory only.
    pub fn set_address_book(&mut self, book: Arc<AddressBook>) {
        self.resolver = Resolver::new(book);
    }

    /// Wakes the runner from another thread.
    pub fn waker(&self) -> std::io::Result<Waker> {
        self.waker.try_clone()
    }

    /// What the agent knows about itself (its clock included).
    pub fn status(&self) -> &Arc<AgentStatus> {
        &self.status
    }

    /// The handle that stops this runner (signals, tests, the demo).
    pub fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Runs until shutdown is requested. Network trouble is never fatal: it is retried.
    pub fn run(&mut self) {
        // The config is loaded and the state directory open: systemd may go on.
        self.notifier.ready();
        let mut next = 0;
        loop {
            if self.stop_requested() {
                break;
            }
            self.watch_clock();
            let urls = &self.cfg.gateway.urls;
            let url = urls[next % urls.len()].clone();
            next += 1;
            self.notifier.status(&format!("connecting to {url}"));
            let ended = match self.connect(&url) {
                Ok(c) => {
                    Line::say(self.link.upgraded(&url, &c.subprotocol));
                    self.run_connection(c.ws, &url)
                }
                Err(e) => e,
            };
            self.status.disconnected();
            let wait = match &ended {
                Outcome::Stop => break,
                Outcome::Reload => {
                    next = 0;
                    continue;
                }
                Outcome::Session(End::LoginRejected { .. }) => self.backoff.after_rejection(),
                _ => self.backoff.after_failure(),
            };
            let (line, status) = self.link.ended(&url, &ended, wait, Instant::now(), self.status.clock().wall());
            Line::say(line);
            self.notifier.status(&status);
            if !self.sleep(wait) {
                break;
            }
        }
        self.jobs.stop();
        info!("stopped");
    }

    /// Whether a stop was asked for; tells systemd STOPPING=1 the first time.
    fn stop_requested(&mut self) -> bool {
        let stop = self.shutdown.is_requested();
        if stop {
            self.notifier.stopping();
            self.notifier.status("stopping");
        }
        stop
    }

    /// Sleeps until woken, `deadline`, or the watchdog keep-alive is due; then sends the
    /// keep-alive if due. Every wait of the main loop goes through here, so a stuck loop
    /// is the only thing that stops the keep-alives.
    fn wait(&mut self, socket: Option<(std::os::fd::BorrowedFd<'_>, Interest)>, deadline: Option<Instant>) {
        let deadline = [deadline, self.notifier.watchdog_due()].into_iter().flatten().min();
        self.wake_rx.wait(socket, deadline.map(|d| d.saturating_duration_since(Instant::now())));
        self.notifier.keep_alive(Instant::now());
        self.watch_clock();
    }

    /// Says once per episode that the system clock is wrong (log and `STATUS=`), or right
    /// again: a wake-up reads it, so a jump is seen within a heartbeat.
    fn watch_clock(&mut self) {
        match self.status.clock().news() {
            Some(ClockNews::Wrong { line, note }) => {
                log::warn!("{line}");
                self.notifier.set_note(Some(note));
            }
            Some(ClockNews::Right { line }) => {
                info!("{line}");
                self.notifier.set_note(None);
            }
            None => {}
        }
    }

    /// Connects on a helper thread so that a stop request is honoured at once even while
    /// DNS, TCP or TLS is stuck. An abandoned attempt is aborted: its socket is shut down,
    /// so its thread ends now, not at its deadline (a reload storm would otherwise leave
    /// one thread and socket per reload behind).
    fn connect(&mut self, url: &GatewayUrl) -> Result<Connected, Outcome> {
        let (tx, rx) = mpsc::channel();
        let abort = Abort::default();
        let (url2, cfg, resolver, clock, abort2, waker) = (
            url.clone(),
            Arc::clone(&self.cfg),
            self.resolver.clone(),
            Arc::clone(self.status.clock()),
            abort.clone(),
            self.waker.try_clone().map_err(|e| Outcome::Lost(Lost::Local(e.to_string())))?,
        );
        thread::Builder::new()
            .name("connect".into())
            .spawn(move || {
                let _ = tx.send(transport::connect(&url2, &cfg.gateway, &resolver, &clock, &abort2));
                waker.wake();
            })
            .map_err(|e| Outcome::Lost(Lost::Local(format!("cannot start connect thread: {e}"))))?;
        loop {
            if self.stop_requested() {
                abort.abort();
                return Err(Outcome::Stop);
            }
            if self.reload_if_asked() == Reload::Reconnect {
                abort.abort();
                return Err(Outcome::Reload);
            }
            match rx.try_recv() {
                Ok(result) => return result.map_err(Outcome::ConnectFailed),
                Err(mpsc::TryRecvError::Disconnected) => {
                    return Err(Outcome::Lost(Lost::Local("connect thread died".into())));
                }
                Err(mpsc::TryRecvError::Empty) => self.wait(None, None),
            }
        }
    }

    /// Waits `d` unless stopped first; `false` when stopped.
    fn sleep(&mut self, d: Duration) -> bool {
        let until = Instant::now() + d;
        loop {
            self.drain_stale_answers();
            if self.stop_requested() {
                return false;
            }
            // New gateway settings are worth trying at once, not after the old backoff.
            if Instant::now() >= until || self.reload_if_asked() == Reload::Reconnect {
                return true;
            }
            self.wait(None, Some(until));
        }
    }

    fn drain_stale_answers(&mut self) {
        while self.jobs.try_finished().is_some() {}
    }

    fn session_config(&self) -> SessionConfig {
        SessionConfig {
            heartbeat_interval: self.cfg.heartbeat.interval,
            heartbeat_timeout: self.cfg.heartbeat.timeout,
            login_timeout: self.cfg.gateway.login_timeout,
        }
    }

    fn run_connection(&mut self, ws: WebSocket, url: &GatewayUrl) -> Outcome {
        if let Err(e) = ws.get_ref().tcp().set_nonblocking(true) {
            return Outcome::Lost(Lost::Local(format!("cannot make the socket non-blocking: {e}")));
        }
        self.generation += 1;
        self.resend.reset();
        debug!("connected to {url}, logging in as {}", self.id.hardware_id);
        let mut conn = Conn::new(ws);
        let (mut session, actions) = Session::start(
            self.session_config(),
            self.id.clone(),
            self.cfg.device.token.expose(),
            &self.ids,
            Instant::now(),
        );
        let stall_limit = self.cfg.heartbeat.timeout;
        let mut pending: VecDeque<Action> = actions.into();
        // Every round carries out what is pending, flushes, honours a stop request, sleeps
        // until there is something to do, then collects frames, answers, timers and
        // warnings. No step can starve another, whatever the gateway sends.
        loop {
            if let Some(end) = self.apply(&mut conn, &mut session, &mut pending, url) {
                return end;
            }
            if let Err(lost) = conn.flush_within(stall_limit) {
                return Outcome::Lost(lost);
            }
            if self.stop_requested() {
                conn.close(
                    &self.wake_rx,
                    Closing { code: CloseCode::Away, reason: "going away", wait: STOP_CLOSE_WAIT, reply: Reply::Await },
                );
                return Outcome::Stop;
            }
            match self.reload_if_asked() {
                Reload::Reconnect => {
                    conn.close(
                        &self.wake_rx,
                        Closing { code: CloseCode::Normal, reason: "reloading", wait: CLOSE_WAIT, reply: Reply::Await },
                    );
                    return Outcome::Reload;
                }
                Reload::Applied => session.reconfigure(self.session_config(), Instant::now()),
                Reload::NotAsked | Reload::Refused => {}
            }
            // Frames may sit decrypted in rustls' or tungstenite's buffers, where poll(2)
            // cannot see them: after a capped read round, read again without sleeping.
            if !conn.more_to_read {
                let next_resend = if session.is_up() { self.resend.next_due() } else { None };
                let mut deadline = [session.next_deadline(), next_resend].into_iter().flatten().min();
                if let Some(since) = conn.write_stalled_since {
                    deadline = Some(deadline.map_or(since + stall_limit, |d| d.min(since + stall_limit)));
                }
                let interest = match conn.write_stalled_since {
                    Some(_) => Interest::ReadableOrWritable,
                    None => Interest::Readable,
                };
                self.wait(Some((conn.ws.get_ref().tcp().as_fd(), interest)), deadline);
            }
            if let Some(end) = self.read_available(&mut conn, &mut session, url) {
                return end;
            }
            // The gateway is still there on a verified connection: the clock's floor, carried
            // on since the handshake, is recorded (at most hourly, off this thread).
            if url.is_tls() && session.is_up() {
                self.status.clock().session_alive();
            }
            while let Some(done) = self.jobs.try_finished() {
                if done.generation == self.generation {
                    pending.extend(session.answer(done.text));
                }
            }
            pending.extend(session.on_tick(&self.ids, Instant::now()));
            // Outbox messages go out only after login, after this round's heartbeat: the
            // backlog in a bounded window after each login, new ones at once while the window
            // has room, unacknowledged ones again every `warning.resend_after`.
            if session.is_up() {
                pending.extend(self.outbox_due().into_iter().map(Action::Send));
            }
        }
    }
}
