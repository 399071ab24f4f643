//! The probe worker threads: one per [`Lane`](crate::queries::Lane), behind one [`Handler`]
//! for every act of the catalogue. They run the probe, encode the answer (so even a large
//! answer costs the socket loop nothing but the write) and answer through the job's
//! [`Reply`].

use std::sync::Arc;
use std::sync::mpsc::{self, Sender};
use std::thread;

use crate::jobs::reply::Reply;
use crate::jobs::slots::Slots;
use crate::jobs::{Context, Decision, Handler};
use crate::logging::escape;
use crate::protocol::{self, Identity, Query, Refusal};
use crate::queries::{Catalogue, LANES};

/// Queries waiting, running or answered but not yet sent, per lane, before new ones are
/// refused as busy. Bounds memory under a flood from the gateway.
pub const MAX_IN_FLIGHT: usize = 64;

struct Job {
    query: Query,
    /// The rig's identity when the query came: a reload may change it (and reconnects).
    id: Identity,
    reply: Reply,
}

pub struct Workers {
    catalogue: Arc<Catalogue>,
    lanes: Vec<(Sender<Job>, Slots)>,
}

impl Workers {
    /// Starts a thread per lane.
    pub fn start(catalogue: Arc<Catalogue>) -> std::io::Result<Workers> {
        let mut lanes = Vec::new();
        for lane in LANES {
            let (tx, rx) = mpsc::channel::<Job>();
            let catalogue2 = Arc::clone(&catalogue);
            thread::Builder::new().name(format!("probe-{lane:?}").to_lowercase()).spawn(move || {
                // Ends when the runner drops its sender.
                for job in rx {
                    let started = std::time::Instant::now();
                    let result = catalogue2.run(&job.query);
                    let echo = &job.query.echo;
                    log::debug!(
                        "answered {} (client_id {}) with code {} in {:.2} ms",
                        escape(&echo.act),
                        escape(&echo.client_id),
                        result.as_ref().map_or_else(|r| r.code, |_| 0),
                        started.elapsed().as_secs_f64() * 1e3
                    );
                    if job.reply.send(protocol::encode_answer(&job.id, echo, result)).is_err() {
                        return;
                    }
                }
            })?;
            lanes.push((tx, Slots::new(MAX_IN_FLIGHT)));
        }
        Ok(Workers { catalogue, lanes })
    }
}

impl Handler for Workers {
    /// Queues `query` on its lane; busy when the lane already has [`MAX_IN_FLIGHT`].
    fn handle(&mut self, query: Query, cx: &Context<'_>) -> Decision {
        let Some(lane) = self.catalogue.lane(&query.echo.act) else {
            return Decision::Answer(cx.answer(&query.echo, Err(Refusal::unknown_act(&query.echo.act))));
        };
        let (tx, slots) = &self.lanes[lane as usize];
        let sent = match slots.take() {
            Some(slot) => {
                let job = Job { query, id: cx.id().clone(), reply: cx.reply().holding(slot) };
                tx.send(job).map_err(|e| e.0.query)
            }
            None => Err(query),
        };
        match sent {
            Ok(()) => Decision::Started,
            Err(query) => Decision::Busy {
                answer: cx.answer(
                    &query.echo,
                    Err(Refusal::probe_failed(format!(
                        "agent busy: {MAX_IN_FLIGHT} queries already waiting; try again"
                    ))),
                ),
                why: format!(
                    "too many queries in flight; refusing {}",
                    crate::protocol::escape::escape(&query.echo.act)
                ),
            },
        }
    }
}
