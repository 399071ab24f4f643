//! The main loop: the only owner of the gateway socket. Connects (round robin over
//! `gateway.urls`), drives a [`Session`] per connection, hands queries to the probe workers
//! and sends their answers, and waits out the backoff between attempts.

use std::collections::VecDeque;
use std::io::Read;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use tungstenite::Message;
use tungstenite::error::{Error as WsError, ProtocolError};
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;

use crate::actions::{self, Actions};
use crate::backoff::{self, Backoff};
use crate::config::{Config, ConfigError};
use crate::logging::{Throttle, utc_timestamp};
use crate::net::frames::Kind;
use crate::net::transport::{self, ConnectError, WebSocket};
use crate::net::url::GatewayUrl;
use crate::os::notify::Notifier;
use crate::os::signals::Shutdown;
use crate::os::wake::{self, WakeReceiver, Waker};
use crate::outbox::resend::Resend;
use crate::outbox::spool::Spool;
use crate::protocol::escape::{escape, escape_bytes};
use crate::protocol::{self, ActIds, Identity, Query, Refusal};
use crate::queries::Catalogue;
use crate::queries::workers::{MAX_IN_FLIGHT, Workers};
use crate::session::{Action, End, Session, SessionConfig};
use crate::status::AgentStatus;

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

/// How a connection (or an attempt at one) ended.
#[derive(Debug)]
enum Ended {
    /// Shutdown was requested; the connection, if any, was closed with 1001.
    Stop,
    ConnectFailed(ConnectError),
    Session(End),
    /// IO error, close from the gateway, oversized message, stalled writes.
    Lost(String),
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

/// The open connection and its write state.
struct Conn {
    ws: WebSocket,
    /// Since when the gateway has taken none of our pending output (socket full, no
    /// progress). A gateway that is slow but reading is not stalled.
    write_stalled_since: Option<Instant>,
    /// `Stream::written` when `write_stalled_since` was last set.
    written_at_stall: u64,
    /// The last read round stopped at its cap, not at WouldBlock.
    more_to_read: bool,
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
        let id = Identity { hardware_id: cfg.device.hardware_id.clone(), name: cfg.device.name.clone() };
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
                Ended::Stop => break,
                Ended::Reload => {
                    next = 0;
                    continue;
                }
                Ended::Session(End::LoginRejected { .. }) => self.backoff.after_rejection(),
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
        self.id = Identity { hardware_id: new.device.hardware_id.clone(), name: new.device.name.clone() };
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
    fn wait(&mut self, socket: Option<(std::os::fd::BorrowedFd<'_>, bool)>, deadline: Option<Instant>) {
        let deadline = [deadline, self.notifier.watchdog_due()].into_iter().flatten().min();
        self.wake_rx.wait(socket, deadline.map(|d| d.saturating_duration_since(Instant::now())));
        self.notifier.keep_alive(Instant::now());
    }

    /// Connects on a helper thread so that a stop request is honoured at once even while
    /// DNS, TCP or TLS is stuck. An abandoned attempt is aborted: its socket is shut down,
    /// so its thread ends now, not at its deadline (a reload storm would otherwise leave
    /// one thread and socket per reload behind).
    fn connect(&mut self, url: &GatewayUrl) -> Result<WebSocket, Ended> {
        let (tx, rx) = mpsc::channel();
        let abort = transport::Abort::default();
        let (url2, cfg, lookups, abort2, waker) = (
            url.clone(),
            Arc::clone(&self.cfg),
            Arc::clone(&self.lookups),
            abort.clone(),
            self.waker.try_clone().map_err(|e| Ended::Lost(e.to_string()))?,
        );
        thread::Builder::new()
            .name("connect".into())
            .spawn(move || {
                let _ = tx.send(transport::connect(&url2, &cfg.gateway, &lookups, &abort2));
                waker.wake();
            })
            .map_err(|e| Ended::Lost(format!("cannot start connect thread: {e}")))?;
        loop {
            if self.stop_requested() {
                abort.abort();
                return Err(Ended::Stop);
            }
            if self.reload_if_asked() == Reload::Reconnect {
                abort.abort();
                return Err(Ended::Reload);
            }
            match rx.try_recv() {
                Ok(result) => return result.map_err(Ended::ConnectFailed),
                Err(mpsc::TryRecvError::Disconnected) => return Err(Ended::Lost("connect thread died".into())),
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

    fn run_connection(&mut self, ws: WebSocket, url: &GatewayUrl) -> Ended {
        if let Err(e) = ws.get_ref().tcp().set_nonblocking(true) {
            return Ended::Lost(format!("cannot make the socket non-blocking: {e}"));
        }
        self.generation += 1;
        self.resend.reset();
        debug!("connected to {url}, logging in as {}", self.id.hardware_id);
        let mut conn = Conn { ws, write_stalled_since: None, written_at_stall: 0, more_to_read: false };
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
            if let Some(end) = flush(&mut conn, stall_limit) {
                return end;
            }
            if self.stop_requested() {
                close(&mut conn, &self.wake_rx, CloseCode::Away, "going away", STOP_CLOSE_WAIT, Reply::Await);
                return Ended::Stop;
            }
            match self.reload_if_asked() {
                Reload::Reconnect => {
                    close(&mut conn, &self.wake_rx, CloseCode::Normal, "reloading", CLOSE_WAIT, Reply::Await);
                    return Ended::Reload;
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
                let want_write = conn.write_stalled_since.is_some();
                self.wait(Some((conn.ws.get_ref().tcp().as_fd(), want_write)), deadline);
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
    ) -> Option<Ended> {
        while let Some(action) = pending.pop_front() {
            match action {
                Action::Send(text) => {
                    if let Some(end) = write(conn, text) {
                        return Some(end);
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
                    close(conn, &self.wake_rx, CloseCode::from(code), "", wait, Reply::Await);
                    return Some(Ended::Session(end));
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
    fn read_available(&mut self, conn: &mut Conn, session: &mut Session, url: &GatewayUrl) -> Option<Ended> {
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
                    close(conn, &self.wake_rx, CloseCode::Size, "message too big", CLOSE_WAIT, Reply::Skip);
                    return Some(Ended::Lost(format!(
                        "the gateway sent a message over max_message_bytes ({e}); closed with 1009"
                    )));
                }
                Err(WsError::Utf8(_)) => {
                    session.on_frame(Instant::now());
                    self.log_junk("dropped a text frame that is not UTF-8");
                    continue;
                }
                Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => {
                    return Some(Ended::Lost("the connection was closed".into()));
                }
                Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => {
                    return Some(Ended::Lost("the gateway closed the connection without a close frame".into()));
                }
                Err(e) => return Some(Ended::Lost(escape(&e.to_string()))),
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
                    return Some(Ended::Lost(format!("the gateway closed the connection ({})", why.trim())));
                }
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => session.on_frame(now),
            }
        }
    }
}

/// Queues a text frame and pushes out what the socket takes.
fn write(conn: &mut Conn, text: String) -> Option<Ended> {
    match conn.ws.write(Message::text(text)) {
        Ok(()) => None,
        Err(WsError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
            conn.note_blocked();
            None
        }
        Err(WsError::WriteBufferFull(_)) => Some(Ended::Lost("the gateway is not reading (output buffer full)".into())),
        Err(e) => Some(Ended::Lost(format!("write failed: {}", escape(&e.to_string())))),
    }
}

/// Flushes buffered output; a gateway that takes no byte of it for `stall_limit` is dropped.
fn flush(conn: &mut Conn, stall_limit: Duration) -> Option<Ended> {
    match conn.ws.flush() {
        Ok(()) => {
            conn.write_stalled_since = None;
            None
        }
        Err(WsError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
            let since = conn.note_blocked();
            if since.elapsed() >= stall_limit {
                Some(Ended::Lost(format!("the gateway took no data for {:.1}s", since.elapsed().as_secs_f64())))
            } else {
                None
            }
        }
        Err(e) => Some(Ended::Lost(format!("write failed: {}", escape(&e.to_string())))),
    }
}

impl Conn {
    /// Output is pending. Returns since when no byte has moved: the clock restarts whenever
    /// some output went out since the last look.
    fn note_blocked(&mut self) -> Instant {
        let written = self.ws.get_ref().written();
        match self.write_stalled_since {
            Some(since) if written == self.written_at_stall => since,
            _ => {
                self.written_at_stall = written;
                *self.write_stalled_since.insert(Instant::now())
            }
        }
    }
}

/// Sends a close frame and waits up to `wait` for the gateway's reply.
fn close(conn: &mut Conn, wake: &WakeReceiver, code: CloseCode, reason: &str, wait: Duration, reply: Reply) {
    let frame = CloseFrame { code, reason: reason.to_string().into() };
    let _ = conn.ws.close(Some(frame));
    let deadline = Instant::now() + wait;
    loop {
        let flushed = conn.ws.flush().is_ok();
        if flushed && reply == Reply::Skip {
            return drain_raw(conn, wake, deadline);
        }
        if reply == Reply::Await {
            match conn.ws.read() {
                Ok(_) => continue,
                Err(WsError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return, // the close handshake is complete, or the peer is gone
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        wake.wait(Some((conn.ws.get_ref().tcp().as_fd(), !flushed)), Some(left));
    }
}

/// Ends a connection whose WebSocket reader cannot be used any more: FIN after our close
/// frame, then discard what still arrives. Closing a socket with unread data would send an
/// RST, and an RST makes the peer drop our close frame unread.
fn drain_raw(conn: &mut Conn, wake: &WakeReceiver, deadline: Instant) {
    let tcp = conn.ws.get_ref().tcp();
    let _ = tcp.shutdown(std::net::Shutdown::Write);
    let mut buf = [0u8; 16 * 1024];
    loop {
        match (&mut &*tcp).read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        wake.wait(Some((tcp.as_fd(), false)), Some(left));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    /// Read until the gateway answers our close frame.
    Await,
    /// After an oversized message tungstenite's reader is mid-frame and must not be read
    /// again; we only make sure our close frame goes out.
    Skip,
}

/// Logs connection state changes, not repetitions: a lost connection and the first failure
/// of a kind at warn, the same failure again at debug, and one line when logged in again.
#[derive(Debug, Default)]
struct LinkLog {
    up: bool,
    ever_up: bool,
    failures: u32,
    last_kind: Option<String>,
}

fn attempts(n: u32) -> String {
    if n == 1 { "1 failed attempt".into() } else { format!("{n} failed attempts") }
}

impl LinkLog {
    fn logged_in(&mut self, url: &GatewayUrl) {
        let again = if self.ever_up { "connected again to" } else { "logged in to" };
        match self.failures {
            0 => info!("{again} {url}"),
            n => info!("{again} {url} after {}", attempts(n)),
        }
        (self.up, self.ever_up, self.failures, self.last_kind) = (true, true, 0, None);
    }

    /// Logs how a connection or attempt ended; returns the line for systemd's STATUS.
    fn ended(&mut self, url: &GatewayUrl, ended: &Ended, wait: Duration) -> String {
        let (kind, text) = match ended {
            Ended::Stop => return "stopping".into(),
            Ended::Reload => return "reloading".into(),
            Ended::ConnectFailed(e) => (e.kind().to_string(), e.to_string()),
            Ended::Session(end @ End::LoginRejected { description, .. }) => {
                (format!("rejected:{}", escape(description)), end.to_string())
            }
            Ended::Session(end) => (end.kind().to_string(), end.to_string()),
            Ended::Lost(why) => ("lost".to_string(), why.clone()),
        };
        let next = format!("next attempt in {:.1}s", wait.as_secs_f64());
        if std::mem::take(&mut self.up) {
            warn!("connection to {url} lost: {text}; {next}");
        } else if self.last_kind.as_deref() == Some(kind.as_str()) {
            self.failures += 1;
            debug!("{url}: {text} ({} in a row); {next}", attempts(self.failures));
        } else if kind.starts_with("rejected:") {
            self.failures += 1;
            error!("{url}: {text}; check device.token and device.hardware_id; {next}");
        } else {
            self.failures += 1;
            warn!("{url}: {text}; {next}");
        }
        let status = if kind.starts_with("rejected:") {
            format!("login rejected by {url}, next attempt in {:.0}s: {text}", wait.as_secs_f64().ceil())
        } else {
            format!("gateway unreachable, next attempt in {:.0}s: {text}", wait.as_secs_f64().ceil())
        };
        self.last_kind = Some(kind);
        status
    }
}
