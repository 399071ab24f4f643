//! The maintenance thread: it owns the maintenance window. It loads it at start, serves
//! `rig-agent maintenance` on the socket in the state directory, applies the console's
//! `set_maintenance`, ends the window when its time is up (and removes its file), and
//! writes the state file before a change is in force. Never the socket thread: it does
//! disk IO.
//!
//! The local socket is served one connection at a time, each bounded: a peer that is
//! neither root nor the agent's own user is answered with a refusal and closed unread; a
//! request must arrive whole within [`REQUEST_TIMEOUT`] and be at most
//! [`wire::MAX_REQUEST`] bytes; the answer must be taken within [`ANSWER_TIMEOUT`].
//! Refusals are logged at most 20 a minute.

use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use std::io::Write;

use serde_json::Value;

use super::state::{self, StateFile};
use super::wire::{self, Ask};
use crate::jobs::reply::Reply;
use crate::logging::Throttle;
use crate::os::local_socket::{self, UntilDeadline};
use crate::os::wake::{self, Interest, WakeReceiver, Waker};
use crate::protocol::escape::escape;
use crate::protocol::{self, Identity, QueryEcho, Refusal};
use crate::status::{AgentStatus, By, Window};

/// How long a local peer has to send its whole request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a local peer has to take the answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest sleep: the window ends within this of its end even if nothing wakes it.
const TICK: Duration = Duration::from_secs(1);

/// A change asked by the console, answered through its [`Reply`] once it is durable.
pub struct ConsoleAsk {
    pub ask: Ask,
    pub echo: QueryEcho,
    pub id: Identity,
    pub reply: Reply,
}

/// The running maintenance thread; stops when dropped.
pub struct Control {
    stop: Arc<AtomicBool>,
    waker: Waker,
    console: Sender<ConsoleAsk>,
    thread: Option<JoinHandle<()>>,
}

impl Control {
    /// Loads the window kept in `state_dir` (into `status`), binds the socket there and
    /// starts the thread. A socket that cannot be bound is logged: the agent runs on, and
    /// `rig-agent maintenance` says no agent answers.
    pub fn start(state_dir: &Path, status: Arc<AgentStatus>) -> std::io::Result<Control> {
        let file = StateFile::new(state_dir);
        let (window, problem) = file.load(status.clock().unix_secs(), Instant::now());
        if let Some(p) = problem {
            log::error!("{p}");
        }
        if let Some(w) = window {
            log::warn!("in maintenance until Unix time {} (set by {}), as before the restart", w.until, w.by.as_str());
        }
        status.maintenance.set(window);
        let socket = state_dir.join(wire::SOCKET);
        let listener = match local_socket::bind(&socket, "agent") {
            Ok(l) => l.set_nonblocking(true).map(|()| Some(l))?,
            Err(e) => {
                log::error!("{}; `rig-agent maintenance` cannot reach this agent", escape(&e.to_string()));
                None
            }
        };
        let (waker, wake_rx) = wake::pair()?;
        let (console, asks) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let mut worker = Worker {
            file,
            status,
            current: window,
            listener,
            socket,
            own_uid: rustix::process::getuid().as_raw(),
            refusals: Throttle::new(Duration::from_secs(60), 20),
        };
        let flag = Arc::clone(&stop);
        let thread =
            thread::Builder::new().name("maintenance".into()).spawn(move || worker.run(&flag, &wake_rx, &asks))?;
        Ok(Control { stop, waker, console, thread: Some(thread) })
    }

    /// Where the console's changes go; wake the thread with [`Control::waker`] after a send.
    pub fn console(&self) -> (Sender<ConsoleAsk>, Waker) {
        (self.console.clone(), self.waker.try_clone().expect("a wake pipe's write end clones"))
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Worker {
    file: StateFile,
    status: Arc<AgentStatus>,
    /// The window this thread set; `status` reads it as off once it has ended, this
    /// thread removes its file then.
    current: Option<Window>,
    listener: Option<UnixListener>,
    socket: PathBuf,
    own_uid: u32,
    refusals: Throttle,
}

impl Worker {
    fn run(&mut self, stop: &AtomicBool, wake: &WakeReceiver, asks: &Receiver<ConsoleAsk>) {
        loop {
            let sleep = self.current.map_or(TICK, |w| w.ends.saturating_duration_since(Instant::now()).min(TICK));
            wake.wait(self.listener.as_ref().map(|l| (l.as_fd(), Interest::Readable)), Some(sleep));
            if stop.load(Ordering::SeqCst) {
                break;
            }
            self.end_if_due();
            while let Ok(a) = asks.try_recv() {
                let outcome = self.apply(a.ask, By::Console).map_err(Refusal::probe_failed);
                let _ = a.reply.send(protocol::encode_answer(&a.id, &a.echo, outcome));
            }
            // At most a few connections per round, so the window's end and the console are
            // never starved by a flood of local connections.
            for _ in 0..8 {
                let Some(Ok((conn, _))) = self.listener.as_ref().map(UnixListener::accept) else { break };
                self.serve(conn);
                self.end_if_due();
            }
        }
        // The socket this agent bound goes with it: a socket nobody answers reads as a
        // stale one to the next agent, which replaces it anyway.
        if self.listener.is_some() {
            let _ = std::fs::remove_file(&self.socket);
        }
    }

    fn end_if_due(&mut self) {
        let Some(w) = self.current else { return };
        if w.ends > Instant::now() {
            return;
        }
        self.current = None;
        self.status.maintenance.set(None);
        log::warn!("maintenance ended (it was set by {} until Unix time {})", w.by.as_str(), w.until);
        if let Err(e) = self.file.remove() {
            log::error!(
                "cannot remove the ended maintenance state file ({e}); the next start finds it ended and removes it"
            );
        }
    }

    /// Applies `ask`: the state file first, then the window in force. The state after it,
    /// or why nothing changed.
    fn apply(&mut self, ask: Ask, by: By) -> Result<Value, String> {
        match ask {
            Ask::Status => {}
            Ask::On(d) => {
                let d = state::check_length(d)?;
                let w = Window { until: self.status.clock().unix_secs() + d.as_secs(), by, ends: Instant::now() + d };
                self.file.save(&w).map_err(|e| {
                    format!("cannot keep the maintenance window in the state directory ({e}); nothing changed")
                })?;
                self.current = Some(w);
                self.status.maintenance.set(Some(w));
                log::warn!(
                    "maintenance on for {} (until Unix time {}), set by {}: no recovery step or update starts; \
                     warnings are marked",
                    crate::config::duration::format_duration(d),
                    w.until,
                    by.as_str()
                );
            }
            Ask::Off => {
                self.file
                    .remove()
                    .map_err(|e| format!("cannot remove the maintenance state file ({e}); still in maintenance"))?;
                if self.current.take().is_some() {
                    log::warn!("maintenance off, ended by {}", by.as_str());
                }
                self.status.maintenance.set(None);
            }
        }
        Ok(self.status.maintenance.to_json())
    }

    /// One local connection: the peer checked, one request, one answer.
    fn serve(&mut self, conn: UnixStream) {
        let _ = conn.set_nonblocking(false);
        let _ = conn.set_write_timeout(Some(ANSWER_TIMEOUT));
        let answer = match rustix::net::sockopt::socket_peercred(&conn).map(|c| c.uid.as_raw()) {
            Ok(peer) if peer == self.own_uid || peer == 0 => {
                let deadline = Instant::now() + REQUEST_TIMEOUT;
                match wire::read_line(&mut UntilDeadline::new(&conn, deadline), wire::MAX_REQUEST)
                    .map_err(|e| e.to_string())
                    .and_then(|line| Ask::parse(&line))
                {
                    Ok(ask) => match self.apply(ask, By::Local) {
                        Ok(state) => wire::state(&state),
                        Err(why) => wire::error(&why),
                    },
                    Err(why) => {
                        self.refusals.warn(&format!("maintenance socket: refused a request from uid {peer}: {why}"));
                        wire::error(&why)
                    }
                }
            }
            Ok(peer) => {
                let why = format!("uid {peer} may not change maintenance (only root or the agent's user)");
                self.refusals.warn(&format!("maintenance socket: {why}"));
                wire::error(&why)
            }
            Err(e) => {
                self.refusals.warn(&format!("maintenance socket: cannot tell who connected ({e}); closed"));
                return;
            }
        };
        let _ = (&conn).write_all(answer.as_bytes());
    }
}
