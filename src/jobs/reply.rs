//! The one kind of finished-job message, and the handle a job sends it through.

use std::sync::Arc;
use std::sync::mpsc::Sender;

use crate::os::wake::Waker;

use super::slots::Slot;

/// A job's answer, ready to go to the gateway on the connection its query came on.
#[derive(Debug)]
pub struct Finished {
    /// The connection the query came on (the runner counts them); an answer for an older
    /// one is dropped.
    pub generation: u64,
    /// The whole answer message, encoded on the job's thread.
    pub text: String,
    /// The job's place in its handler's queue, given back when the runner is done with
    /// this message.
    _slot: Option<Slot>,
}

/// Where a job sends its one answer: to the runner, tagged with the query's connection,
/// waking the runner. Dropped without an answer (a job that panicked), the query goes
/// unanswered, as a gateway must expect of a rig anyway.
#[derive(Debug)]
pub struct Reply {
    generation: u64,
    finished: Sender<Finished>,
    waker: Arc<Waker>,
    slot: Option<Slot>,
}

/// The runner is gone (the agent is stopping): nothing will take answers any more.
#[derive(Debug)]
pub struct RunnerGone;

impl Reply {
    pub(super) fn new(generation: u64, finished: Sender<Finished>, waker: Arc<Waker>) -> Reply {
        Reply { generation, finished, waker, slot: None }
    }

    /// Keeps `slot` taken until the runner has taken the answer.
    pub fn holding(mut self, slot: Slot) -> Reply {
        self.slot = Some(slot);
        self
    }

    /// Sends the answer and wakes the runner.
    pub fn send(self, text: String) -> Result<(), RunnerGone> {
        let finished = Finished { generation: self.generation, text, _slot: self.slot };
        self.finished.send(finished).map_err(|_| RunnerGone)?;
        self.waker.wake();
        Ok(())
    }
}
