//! The one path every query takes, and the one way background work answers: a registry of
//! act name → [`Handler`], and one kind of finished-job message, [`Finished`].
//!
//! # How a query is answered
//!
//! The runner (the socket thread, which owns the gateway socket) hands every query to
//! [`Registry::dispatch`]. The registry answers what no handler needs to see (code 2 for a
//! malformed envelope, code 1 for an act nobody registered) and gives the rest to the
//! handler registered for the act. The handler decides at once, on the socket thread, and
//! says how with its [`Decision`]:
//!
//! - [`Decision::Answer`]: the answer is ready now (a refusal with code 4 or 5, a bad
//!   parameter); the runner sends it.
//! - [`Decision::Busy`]: refused because the handler's queue is full; answered now (code 3,
//!   "try again"), and its log line goes through the runner's flood throttle, so a flood
//!   of queries is a few lines, not one per query.
//! - [`Decision::Started`]: background work took the query. It runs on a thread of the
//!   handler's own and holds the [`Reply`] it got from [`Context::reply`]; it sends exactly
//!   one answer through it (a probe's `data`, a `write` acknowledgement once the run is
//!   recorded, a `post` run's result). That answer reaches the runner as a [`Finished`] on
//!   the registry's one channel, and wakes it.
//!
//! The runner drains finished jobs in one place ([`Registry::try_finished`]) every round of
//! its loop and between connections. A [`Finished`] carries the `generation` of the
//! connection the query came on: the runner sends it only on that connection and drops it
//! otherwise (the client that asked is gone with the connection).
//!
//! # What a handler keeps to
//!
//! - [`Handler::handle`] runs on the socket thread: no disk IO, no child process, no lock
//!   another thread holds for long, nothing that blocks. Whatever needs those runs in the
//!   background and answers through its [`Reply`]; a write acknowledgement that must come
//!   after a durable record is such an answer.
//! - What must not be lost (an `action_result`, an update's outcome, a recovery report) goes
//!   through the durable outbox (`Spool::push`) from the job's thread, never through a
//!   [`Reply`]: the outbox keeps it and resends it until the gateway acknowledges it; an
//!   answer is lost with its connection, by design.
//! - Work is bounded: a handler with a queue takes a [`Slot`](slots::Slot) from its own
//!   [`Slots`](slots::Slots) per job, moves it into the reply ([`Reply::holding`]) and
//!   answers [`Decision::Busy`] when none is left. A slot is free again once the runner
//!   has taken the job's answer, so the bound covers jobs waiting, running and answered
//!   but not yet sent.
//! - Answers are encoded with the rig's identity of the moment ([`Context::answer`],
//!   [`Context::id`]); a reload that changes it reconnects, and older answers are dropped.
//! - A reloaded config reaches every handler through [`Handler::reconfigure`] (on the
//!   socket thread: it only takes the new values in). When the agent stops,
//!   [`Handler::stop`] ends what must not outlive it (the child processes of actions).
//!
//! # Adding a kind of background work
//!
//! Say `update_agent`: its part (a folder of its own, below `runner/` and `agent.rs`)
//! defines a type implementing [`Handler`] that holds what it needs (its config, the
//! outbox, its own worker thread or a thread per job). Then in `agent.rs`, where the other
//! handlers are registered, one line:
//!
//! ```text
//! jobs.add(["update_agent"], Updates::new(&cfg, Arc::clone(&spool))?);
//! ```
//!
//! Nothing in `runner/` changes. An act registered twice is a wiring mistake and panics at
//! start-up, in every test that builds an agent.
//!
//! Work that no query starts (automatic recovery, fed by the disk monitor) answers nobody:
//! it reports through the outbox, which wakes the runner itself. When it must hear of
//! reloads or end with the agent, register it under no act, `jobs.add::<&str>([], …)`: its
//! [`Handler::reconfigure`] and [`Handler::stop`] are called like every handler's.

pub mod reply;
pub mod slots;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};

use serde_json::Value;

use crate::config::Config;
use crate::os::wake::Waker;
use crate::protocol::escape::escape;
use crate::protocol::{self, Identity, Query, QueryEcho, Refusal};
use reply::{Finished, Reply};

/// One kind of work the gateway can ask for: decides on a query on the socket thread and,
/// when the answer takes IO or time, starts the work that answers later.
pub trait Handler: Send {
    /// Decides on `query` (its act is one this handler was registered for). Runs on the
    /// socket thread: no disk IO, no child process, nothing that blocks.
    fn handle(&mut self, query: Query, cx: &Context<'_>) -> Decision;

    /// A reloaded config, taken in for the next queries; work under way finishes as it
    /// started. Runs on the socket thread.
    fn reconfigure(&mut self, _cfg: &Config) {}

    /// The agent is stopping: end what must not outlive it.
    fn stop(&mut self) {}
}

/// What a handler made of a query.
#[derive(Debug)]
pub enum Decision {
    /// Background work took it; its answer comes as one [`Finished`].
    Started,
    /// The answer to send now (a refusal, or an answer that needed no IO).
    Answer(String),
    /// Refused for want of room: `answer` (code 3) is sent now and `why` logged through the
    /// runner's flood throttle.
    Busy { answer: String, why: String },
}

/// What a handler may use while it decides: the rig's identity now, and the way to answer
/// later.
pub struct Context<'a> {
    id: &'a Identity,
    generation: u64,
    finished: &'a Sender<Finished>,
    waker: &'a Arc<Waker>,
}

impl Context<'_> {
    /// The rig's identity, for answers a job encodes on its own thread.
    pub fn id(&self) -> &Identity {
        self.id
    }

    /// The answer to the query `echo` came with, encoded now.
    pub fn answer(&self, echo: &QueryEcho, outcome: Result<Value, Refusal>) -> String {
        protocol::encode_answer(self.id, echo, outcome)
    }

    /// The handle a job answers through, once, when it is done.
    pub fn reply(&self) -> Reply {
        Reply::new(self.generation, self.finished.clone(), Arc::clone(self.waker))
    }
}

/// Act name → handler, and the channel every job's answer comes back on.
pub struct Registry {
    handlers: Vec<Box<dyn Handler>>,
    /// Index into `handlers`.
    by_act: HashMap<String, usize>,
    finished_tx: Sender<Finished>,
    finished: Receiver<Finished>,
    waker: Arc<Waker>,
}

impl Registry {
    /// An empty registry whose jobs wake the runner through `waker`.
    pub fn new(waker: Waker) -> Registry {
        let (finished_tx, finished) = mpsc::channel();
        Registry { handlers: Vec::new(), by_act: HashMap::new(), finished_tx, finished, waker: Arc::new(waker) }
    }

    /// Makes `handler` answer every act of `acts`.
    ///
    /// # Panics
    ///
    /// When one of `acts` already has a handler: the agent is wired wrongly.
    pub fn add<S: Into<String>>(&mut self, acts: impl IntoIterator<Item = S>, handler: impl Handler + 'static) {
        let index = self.handlers.len();
        for act in acts {
            let act = act.into();
            assert!(!self.by_act.contains_key(&act), "two handlers registered for the act \"{act}\"");
            self.by_act.insert(act, index);
        }
        self.handlers.push(Box::new(handler));
    }

    /// Hands `query`, asked on connection `generation`, to its handler; answers at once
    /// what no handler needs to see.
    pub fn dispatch(&mut self, query: Query, generation: u64, id: &Identity) -> Decision {
        if let Some(why) = &query.bad_request {
            let refusal = Refusal::bad_request(why.clone());
            return Decision::Answer(protocol::encode_answer(id, &query.echo, Err(refusal)));
        }
        let Some(&index) = self.by_act.get(&query.echo.act) else {
            log::debug!("query for unknown act \"{}\"", escape(&query.echo.act));
            let refusal = Refusal::unknown_act(&query.echo.act);
            return Decision::Answer(protocol::encode_answer(id, &query.echo, Err(refusal)));
        };
        let cx = Context { id, generation, finished: &self.finished_tx, waker: &self.waker };
        self.handlers[index].handle(query, &cx)
    }

    /// The next finished job, if any; never blocks.
    pub fn try_finished(&mut self) -> Option<Finished> {
        self.finished.try_recv().ok()
    }

    /// Gives every handler the reloaded config.
    pub fn reconfigure(&mut self, cfg: &Config) {
        for h in &mut self.handlers {
            h.reconfigure(cfg);
        }
    }

    /// Tells every handler that the agent stops.
    pub fn stop(&mut self) {
        for h in &mut self.handlers {
            h.stop();
        }
    }
}

#[cfg(test)]
mod tests;
