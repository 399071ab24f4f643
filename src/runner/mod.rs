//! The main loop: the only owner of the gateway socket. Connects (round robin over
//! `gateway.urls`), drives a [`Session`] per connection, hands queries to the probe workers
//! and sends their answers, and waits out the backoff between attempts.

use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use tungstenite::Message;
use tungstenite::error::{Error as WsError, ProtocolError};
use tungstenite::protocol::frame::coding::CloseCode;

use crate::actions::{self, Actions};
use crate::backoff::{self, Backoff};
use crate::config::{Config, ConfigError};
use crate::logging::{Throttle, utc_timestamp};
use crate::net::connection::{Closing, Conn, Lost, Reply};
use crate::net::frames::Kind;
use crate::net::transport::{self, ConnectError, WebSocket};
use crate::net::url::GatewayUrl;
use crate::os::notify::Notifier;
use crate::os::signals::Shutdown;
use crate::os::wake::{self, Interest, WakeReceiver, Waker};
use crate::outbox::resend::Resend;
use crate::outbox::spool::Spool;
use crate::protocol::escape::{escape, escape_bytes};
use crate::protocol::{self, ActIds, Identity, Query, Refusal};
use crate::queries::Catalogue;
use crate::queries::workers::{MAX_IN_FLIGHT, Workers};
use crate::session::{Action, End, Session, SessionConfig};

mod link_log;
use crate::status::AgentStatus;
use link_log::LinkLog;

/// How long the close handshake may take when the agent stops (PROTOCOL.md §5).
const STOP_CLOSE_WAIT: Duration = Duration::from_secs(2);
/// How long other closes (rejected login, oversized message) wait for the gateway's reply.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reload {
    NotAsked,
    /// The new config was invalid; nothing changed.
    Refused,
    /// Taken in without touching the connection.
    Applied,
    /// Taken in; the connection must be made again.
    Reconnect,
}

/// How much of a dropped binary frame its log line shows.
const JUNK_HEAD_CHARS: usize = 80;

/// Frames read before the loop looks at answers, heartbeats and stop requests again.
const MAX_FRAMES_PER_ROUND: usize = 64;

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
    catalogue: Arc<Catalogue>,
    status: Arc<AgentStatus>,
    ids: Arc<ActIds>,
    shutdown: Shutdown,
    waker: Waker,
    wake_rx: WakeReceiver,
    workers: Workers,
    backoff: Backoff,
    spool: Arc<Spool>,
    resend: Resend,
    /// Remote actions (`run_action`): decided here, run on their own threads.
    actions: Actions,
    /// Tags answers with the connection they belong to; answers for an older connection
    /// are dropped (the client that asked is gone with it).
    generation: u64,
    link: LinkLog,
    junk_log: Throttle,
    /// DNS lookups still running on their helper threads (a hung resolver).
    lookups: Arc<AtomicUsize>,
    notifier: Notifier,
    /// Hands a reloaded config to the parts outside the runner (probes, disk monitor).
    on_reload: Box<dyn FnMut(&Config) + Send>,
    /// A config being read on the `reload` thread: loading reads the config, the token and
    /// the PEM files and probes the state directory, none of which may block the socket.
    reloading: Option<mpsc::Receiver<Result<Config, ConfigError>>>,
    /// Another SIGHUP came while `reloading`: read the file again once that one is done,
    /// so the last edit is what runs.
    reload_again: bool,
}

impl Runner {
    pub fn new(
        cfg: Arc<Config>,
        catalogue: Catalogue,
        status: Arc<AgentStatus>,
        spool: Arc<Spool>,
        ids: Arc<ActIds>,
    ) -> std::io::Result<Runner> {
        let (waker, wake_rx) = wake::pair()?;
        let id = Identity::from(&cfg.device);
        let catalogue = Arc::new(catalogue);
        let workers = Workers::start(Arc::clone(&catalogue), id.clone(), &waker)?;
        let backoff = Backoff::new(cfg.reconnect.initial, cfg.reconnect.max, backoff::random_seed());
        // The storage thread wakes the loop when a message is written and ready to send.
        spool.set_waker(waker.try_clone()?);
        status.set_actions(cfg.actions.allowed());
        let actions = Actions::new(
            Arc::new(cfg.actions.clone()),
            id.clone(),
            &cfg.paths.state_dir,
            Arc::clone(&spool),
            Arc::clone(&ids),
            waker.try_clone()?,
        );
        Ok(Runner {
            actions,
            shutdown: Shutdown::new(waker.try_clone()?),
            resend: Resend::new(cfg.warning.resend_after),
            spool,
            cfg,
            id,
            catalogue,
            status,
            ids,
            waker,
            wake_rx,
            workers,
            backoff,
            generation: 0,
            link: LinkLog::default(),
            junk_log: Throttle::new(Duration::from_secs(60), 5),
            lookups: Arc::new(AtomicUsize::new(0)),
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

    /// Wakes the runner from another thread.
    pub fn waker(&self) -> std::io::Result<Waker> {
        self.waker.try_clone()
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
            let urls = &self.cfg.gateway.urls;
            let url = urls[next % urls.len()].clone();
            next += 1;
            self.notifier.status(&format!("connecting to {url}"));
            let ended = match self.connect(&url) {
                Ok(ws) => self.run_connection(ws, &url),
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
            let status = self.link.ended(&url, &ended, wait);
            self.notifier.status(&status);
            if !self.sleep(wait) {
                break;
            }
        }
        info!("stopped");
    }

    /// Starts re-reading the config file (on the `reload` thread) if SIGHUP asked for it,
    /// and takes in the result once it is there. A valid config is taken in at once
    /// (timings, backoff, resend, probes, disk rules) and `true` returned when the
    /// connection must be made again for it (identity, token, URLs, TLS). An invalid one is
    /// refused with the message `check` would print; the agent keeps the running config.
    fn reload_if_asked(&mut self) -> Reload {
        if self.shutdown.take_reload() {
            if self.reloading.is_some() {
                // Says so once: a load stuck on a hung filesystem would otherwise look like
                // SIGHUP being ignored.
                if !std::mem::replace(&mut self.reload_again, true) {
                    warn!("reload: the previous reload is still reading the config; this one follows it");
                }
            } else {
                self.start_reload();
            }
        }
        let Some(rx) = &self.reloading else { return Reload::NotAsked };
        let loaded = match rx.try_recv() {
            Err(mpsc::TryRecvError::Empty) => return Reload::NotAsked,
            Err(mpsc::TryRecvError::Disconnected) => Err(None),
            Ok(result) => result.map_err(Some),
        };
        self.reloading = None;
        if std::mem::take(&mut self.reload_again) {
            self.start_reload();
        }
        let file = self.cfg.file.clone();
        let new = match loaded {
            Ok(c) => c,
            Err(e) => {
                match e {
                    Some(e) => error!("reload refused, still running with the previous config: {e}"),
                    None => error!(
                        "reload refused: reading the config failed unexpectedly; still running with the previous config"
                    ),
                }
                return Reload::Refused;
            }
        };
        if self.cfg.paths_differ(&new) {
            warn!("reload: paths.* changed; restart the agent to use the new paths");
        }
        let reconnect = self.cfg.connection_differs(&new);
        self.backoff.set_bounds(new.reconnect.initial, new.reconnect.max);
        self.resend.set_after(new.warning.resend_after);
        (self.on_reload)(&new);
        self.id = Identity::from(&new.device);
        self.actions.reconfigure(Arc::new(new.actions.clone()), self.id.clone());
        self.status.set_actions(new.actions.allowed());
        self.cfg = Arc::new(new);
        if reconnect {
            info!("configuration reloaded from {}; connecting again with the new gateway settings", file.display());
            Reload::Reconnect
        } else {
            info!("configuration reloaded from {}", file.display());
            Reload::Applied
        }
    }

    /// Reads the config file on a helper thread; the result comes back through a channel
    /// and a wake-up. A read that hangs (a FUSE state directory) leaves that thread behind,
    /// and the runner keeps the running config; later SIGHUPs wait for it.
    fn start_reload(&mut self) {
        let (tx, rx) = mpsc::channel();
        let file = self.cfg.file.clone();
        let waker = match self.waker.try_clone() {
            Ok(w) => w,
            Err(e) => {
                error!("reload refused: cannot start it ({e})");
                return;
            }
        };
        let spawned = thread::Builder::new().name("reload".into()).spawn(move || {
            let _ = tx.send(Config::load(&file));
            waker.wake();
        });
        match spawned {
            Ok(_) => self.reloading = Some(rx),
            Err(e) => error!("reload refused: cannot start its thread ({e})"),
        }
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
    }

    /// Connects on a helper thread so that a stop request is honoured at once even while
    /// DNS, TCP or TLS is stuck. An abandoned attempt is aborted: its socket is shut down,
    /// so its thread ends now, not at its deadline (a reload storm would otherwise leave
    /// one thread and socket per reload behind).
    fn connect(&mut self, url: &GatewayUrl) -> Result<WebSocket, Outcome> {
        let (tx, rx) = mpsc::channel();
        let abort = transport::Abort::default();
        let (url2, cfg, lookups, abort2, waker) = (
            url.clone(),
            Arc::clone(&self.cfg),
            Arc::clone(&self.lookups),
            abort.clone(),
            self.waker.try_clone().map_err(|e| Outcome::Lost(Lost::Local(e.to_string())))?,
        );
        thread::Builder::new()
            .name("connect".into())
            .spawn(move || {
                let _ = tx.send(transport::connect(&url2, &cfg.gateway, &lookups, &abort2));
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
        while self.workers.try_done().is_some() {}
        while self.actions.try_done().is_some() {}
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
            while let Some(done) = self.workers.try_done() {
                if done.generation == self.generation {
                    pending.extend(session.answer(done.text));
                }
            }
            while let Some(done) = self.actions.try_done() {
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

    /// The outbox messages to send now. Reads only the outbox's in-memory view: no disk IO.
    fn outbox_due(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let spool = &self.spool;
            let seqs = self.resend.due(Instant::now(), |from, max| spool.sendable_from(from, max));
            if seqs.is_empty() {
                return out;
            }
            let mut gone = false;
            for (seq, text) in self.spool.texts(&seqs) {
                match text {
                    Some(t) => out.push(t.to_string()),
                    // Acknowledged meanwhile, or dropped by the outbox's cap: make room.
                    None => {
                        self.resend.acked(seq);
                        gone = true;
                    }
                }
            }
            if !gone {
                return out;
            }
        }
    }

    /// Carries out the session's actions; `Some` when the connection is over.
    fn apply(
        &mut self,
        conn: &mut Conn,
        session: &mut Session,
        pending: &mut VecDeque<Action>,
        url: &GatewayUrl,
    ) -> Option<Outcome> {
        while let Some(action) = pending.pop_front() {
            match action {
                Action::Send(text) => {
                    if let Err(lost) = conn.send(text) {
                        return Some(Outcome::Lost(lost));
                    }
                }
                Action::Dispatch(query) => {
                    if let Some(text) = self.dispatch(query) {
                        pending.extend(session.answer(text));
                    }
                }
                Action::Junk(junk, head) => {
                    self.log_junk(&format!("dropped a frame from the gateway: {}: {head}", escape(&junk.to_string())))
                }
                Action::LoggedIn => {
                    self.status.logged_in(url.as_str());
                    self.link.logged_in(url);
                    let since = utc_timestamp(std::time::SystemTime::now());
                    self.notifier.status(&format!("connected to {url} since {since}"));
                }
                Action::Established => self.backoff.reset(),
                Action::DroppedHeldAnswer => self.log_junk(
                    "dropped an answer: the gateway sent more queries than can be held before it answered the login",
                ),
                Action::WarningAcked(act_id) => {
                    if let Some(acked) = self.spool.ack(&act_id) {
                        self.resend.acked(acked.seq);
                        info!("warning {act_id} acknowledged by the gateway");
                    }
                    self.status.set_warnings_pending(self.spool.len() as u64);
                }
                Action::WarningRefused { act_id, code, description } => {
                    if let Some(seq) = self.spool.seq(&act_id) {
                        self.resend.refused(seq, Instant::now());
                    }
                    self.log_junk(&format!(
                        "the gateway refused warning {} (code {}): {}; it stays spooled and is resent",
                        escape(&act_id),
                        code.map_or("missing".into(), |c| c.to_string()),
                        escape(&description)
                    ));
                }
                Action::Close { code, end } => {
                    // A dead peer will not answer a close: do not wait for it.
                    let wait = if matches!(end, End::Dead { .. }) { Duration::ZERO } else { CLOSE_WAIT };
                    conn.close(
                        &self.wake_rx,
                        Closing { code: CloseCode::from(code), reason: "", wait, reply: Reply::Await },
                    );
                    return Some(Outcome::Session(end));
                }
            }
        }
        None
    }

    /// Sends `query` to its worker; answers at once (as text to send) what needs no probe.
    fn dispatch(&mut self, query: Query) -> Option<String> {
        let id = self.id.clone();
        let refuse = move |q: &Query, r: Refusal| Some(protocol::encode_answer(&id, &q.echo, Err(r)));
        if let Some(why) = &query.bad_request {
            return refuse(&query, Refusal::bad_request(why.clone()));
        }
        if query.echo.act == actions::ACT {
            return self.actions.request(&query, self.generation);
        }
        let Some(lane) = self.catalogue.lane(&query.echo.act) else {
            debug!("query for unknown act \"{}\"", escape(&query.echo.act));
            return refuse(&query, Refusal::unknown_act(&query.echo.act));
        };
        match self.workers.submit(lane, self.generation, query) {
            Ok(()) => None,
            Err(query) => {
                self.log_junk(&format!("too many queries in flight; refusing {}", escape(&query.echo.act)));
                refuse(
                    &query,
                    Refusal::probe_failed(format!("agent busy: {MAX_IN_FLIGHT} queries already waiting; try again")),
                )
            }
        }
    }

    fn log_junk(&mut self, line: &str) {
        if let Some(suppressed) = self.junk_log.admit(Instant::now()) {
            if suppressed > 0 {
                warn!("{line} ({suppressed} similar lines suppressed)");
            } else {
                warn!("{line}");
            }
        }
    }

    /// Reads every frame that is already there; stops at WouldBlock. Each frame's actions are
    /// carried out before the next frame is read, so that a heartbeat return followed by a
    /// close still counts as an established session.
    ///
    /// At most [`MAX_FRAMES_PER_ROUND`] frames are read per call, so that a gateway sending
    /// faster than we read cannot starve heartbeats and answers; `conn.more_to_read` then
    /// tells the loop not to sleep.
    fn read_available(&mut self, conn: &mut Conn, session: &mut Session, url: &GatewayUrl) -> Option<Outcome> {
        let mut pending = VecDeque::new();
        conn.more_to_read = false;
        let mut frames = 0;
        loop {
            if let Some(end) = self.apply(conn, session, &mut pending, url) {
                return Some(end);
            }
            if frames == MAX_FRAMES_PER_ROUND {
                conn.more_to_read = true;
                return None;
            }
            frames += 1;
            let msg = match conn.ws.read() {
                Ok(msg) => msg,
                Err(WsError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => return None,
                Err(WsError::Capacity(e)) => {
                    conn.close(
                        &self.wake_rx,
                        Closing {
                            code: CloseCode::Size,
                            reason: "message too big",
                            wait: CLOSE_WAIT,
                            reply: Reply::Skip,
                        },
                    );
                    return Some(Outcome::Lost(Lost::TooBig(e.to_string())));
                }
                Err(WsError::Utf8(_)) => {
                    session.on_frame(Instant::now());
                    self.log_junk("dropped a text frame that is not UTF-8");
                    continue;
                }
                Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => {
                    return Some(Outcome::Lost(Lost::Closed));
                }
                Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => {
                    return Some(Outcome::Lost(Lost::NoCloseFrame));
                }
                Err(e) => return Some(Outcome::Lost(Lost::Read(escape(&e.to_string())))),
            };
            let now = Instant::now();
            match msg {
                Message::Text(text) => pending.extend(session.on_text(text.as_str(), &self.ids, now)),
                // Text arrives as binary (see `frames`): its UTF-8 is checked here, so that a bad
                // message is dropped whole, fragmented or not.
                Message::Binary(b) if conn.ws.get_mut().next_kind() == Kind::Text => match std::str::from_utf8(&b) {
                    Ok(text) => pending.extend(session.on_text(text, &self.ids, now)),
                    Err(_) => {
                        session.on_frame(now);
                        self.log_junk(&format!(
                            "dropped a text message that is not UTF-8: {}",
                            escape_bytes(&b, JUNK_HEAD_CHARS)
                        ));
                    }
                },
                Message::Binary(b) => {
                    session.on_frame(now);
                    self.log_junk(&format!(
                        "dropped a binary frame of {} bytes (the protocol is JSON text): {}",
                        b.len(),
                        escape_bytes(&b, JUNK_HEAD_CHARS)
                    ));
                }
                Message::Close(frame) => {
                    // tungstenite has queued our close reply; send it before going.
                    let _ = conn.ws.flush();
                    let why = frame.map_or_else(
                        || "no code".to_string(),
                        |f| format!("{} {}", u16::from(f.code), escape(&f.reason)),
                    );
                    return Some(Outcome::Lost(Lost::ClosedByGateway(why.trim().to_string())));
                }
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => session.on_frame(now),
            }
        }
    }
}
