//! The probe worker threads: one per [`Lane`]. The runner hands them queries; they run the
//! probe, encode the answer (so even a large answer costs the socket loop nothing but the
//! write) and wake the runner.

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;

use crate::logging::escape;
use crate::os::wake::Waker;
use crate::protocol::{self, Identity, Query};
use crate::queries::{Catalogue, LANES, Lane};

/// Queries waiting or running per lane before new ones are refused as busy. Bounds memory
/// under a flood from the gateway.
pub const MAX_IN_FLIGHT: usize = 64;

struct Job {
    generation: u64,
    query: Query,
}

/// A finished answer, tagged with the connection it was asked on.
#[derive(Debug)]
pub struct Done {
    pub generation: u64,
    pub lane: Lane,
    pub text: String,
}

pub struct Workers {
    lanes: Vec<Sender<Job>>,
    in_flight: [usize; 2],
    done: Receiver<Done>,
}

impl Workers {
    pub fn start(catalogue: Arc<Catalogue>, id: Identity, waker: &Waker) -> std::io::Result<Workers> {
        let (done_tx, done) = mpsc::channel();
        let mut lanes = Vec::new();
        for lane in LANES {
            let (tx, rx) = mpsc::channel::<Job>();
            let (catalogue, id, done_tx, waker) =
                (Arc::clone(&catalogue), id.clone(), done_tx.clone(), waker.try_clone()?);
            thread::Builder::new().name(format!("probe-{lane:?}").to_lowercase()).spawn(move || {
                // Ends when the runner drops its sender.
                for job in rx {
                    let started = std::time::Instant::now();
                    let result = catalogue.run(&job.query);
                    let echo = &job.query.echo;
                    log::debug!(
                        "answered {} (client_id {}) with code {} in {:.2} ms",
                        escape(&echo.act),
                        escape(&echo.client_id),
                        result.as_ref().map_or_else(|r| r.code, |_| 0),
                        started.elapsed().as_secs_f64() * 1e3
                    );
                    let text = protocol::encode_answer(&id, echo, result);
                    if done_tx.send(Done { generation: job.generation, lane, text }).is_err() {
                        return;
                    }
                    waker.wake();
                }
            })?;
            lanes.push(tx);
        }
        Ok(Workers { lanes, in_flight: [0; 2], done })
    }

    /// Queues `query`; gives it back when its lane already has [`MAX_IN_FLIGHT`] queries.
    pub fn submit(&mut self, lane: Lane, generation: u64, query: Query) -> Result<(), Box<Query>> {
        let i = lane as usize;
        if self.in_flight[i] >= MAX_IN_FLIGHT {
            return Err(Box::new(query));
        }
        match self.lanes[i].send(Job { generation, query }) {
            Ok(()) => {
                self.in_flight[i] += 1;
                Ok(())
            }
            Err(e) => Err(Box::new(e.0.query)),
        }
    }

    /// The next finished answer, if any; never blocks.
    pub fn try_done(&mut self) -> Option<Done> {
        let done = self.done.try_recv().ok()?;
        self.in_flight[done.lane as usize] -= 1;
        Some(done)
    }
}
