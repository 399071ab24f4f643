//! One run of an action: its thread's context, the guard that lets go of its running
//! marker, the result it spools, and the recovery of runs a stop interrupted.

use super::journal::{Journal, RunRecord};
use super::*;
use crate::config::actions::{ActionSpec, MAX_NAME_LEN};
use crate::jobs::reply::Reply;
use crate::outbox::spool::Spool;
use crate::protocol::{self, FROM_DEVICE, Identity, QueryEcho, Refusal};
use log::{error, info, warn};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Instant;

pub(super) struct Run {
    pub(super) name: String,
    pub(super) mode: Mode,
    pub(super) spec: ActionSpec,
    pub(super) run_id: String,
    pub(super) echo: QueryEcho,
    pub(super) received: Instant,
    /// Corrected Unix ms, for the journal; `clock_suspect` when the system clock was wrong.
    pub(super) started_at_ms: u64,
    pub(super) clock_suspect: bool,
    /// This start, on the monotonic clock (`min_interval`).
    pub(super) started: Start,
    /// The action's last start before this one (see [`StartTimes::put_back`]).
    pub(super) previous_start: Option<Start>,
}

pub(super) struct RunCtx {
    pub(super) run: Run,
    pub(super) id: Identity,
    pub(super) journal: Arc<Journal>,
    pub(super) spool: Arc<Spool>,
    /// Taken by the run's one answer: a refusal, a `write` run's acknowledgement or a
    /// `post` run's result.
    pub(super) reply: Option<Reply>,
    pub(super) running: Running,
    pub(super) last_start: StartTimes,
    pub(super) refusal_log: RefusalLog,
    /// `Some` for a `write` run.
    pub(super) in_flight: Option<InFlight>,
    /// The process groups of all runs, killed when the agent stops.
    pub(super) groups: crate::os::child::Groups,
}

/// `write` runs accepted whose result is not in the outbox yet: [`Actions::decide`] counts
/// them as if their results were already there, so that the outbox cap holds exactly. A run
/// holds one (taken when it is accepted) and gives it back when dropped (a panic included).
#[derive(Debug)]
pub(super) struct InFlight(Arc<std::sync::atomic::AtomicUsize>);

impl InFlight {
    pub(super) fn take(count: &Arc<std::sync::atomic::AtomicUsize>) -> InFlight {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        InFlight(Arc::clone(count))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Takes the run out of [`Running`] however its thread ends (a panic included), so the
/// action never stays "already running".
pub(super) struct FinishGuard<'a> {
    pub(super) name: &'a str,
    pub(super) running: &'a Running,
}

impl FinishGuard<'_> {
    pub(super) fn finish(&self) {
        self.running.lock().remove(self.name);
    }
}

impl Drop for FinishGuard<'_> {
    fn drop(&mut self) {
        self.finish();
    }
}

impl RunCtx {
    pub(super) fn run_to_end(mut self) {
        // Counted against the outbox's cap until its result is in the outbox.
        let in_flight = self.in_flight.take();
        let mut reply = self.reply.take();
        let mut send = |text: String| {
            if let Some(reply) = reply.take() {
                // Gone only when the agent stops: nobody is left to answer.
                let _ = reply.send(text);
            }
        };
        let r = &self.run;
        let finished = FinishGuard { name: &r.name, running: &self.running };
        crate::os::child::drop_thread_capabilities();
        if let Err(e) = self.journal.record_start(&r.name, r.started_at_ms, r.clock_suspect) {
            if !r.spec.min_interval.is_zero() {
                // Fail closed: run now, and a restart (kill -9, a crash, the reboot this
                // action asks for) would forget the start and let it run again at once,
                // which min_interval is there to prevent (a console bug reboot-looping a
                // rig whose state card went read-only).
                self.last_start.put_back(&r.name, r.started, r.previous_start);
                finished.finish();
                let refusal = unrecorded(&r.name, r.spec.min_interval, &e);
                self.refusal_log.log(&r.echo.client_id, &Value::String(r.name.clone()), &refusal);
                send(protocol::encode_answer(&self.id, &r.echo, Err(refusal)));
                return;
            }
            // Nothing depends on it: no min_interval to keep.
            log::debug!("action {}: cannot record its start time ({e})", r.name);
        }
        if r.mode == Mode::Write {
            let rec = RunRecord {
                run_id: r.run_id.clone(),
                action: r.name.clone(),
                act_code: r.echo.act_code.clone(),
                client_id: r.echo.client_id.clone(),
                started_at_ms: r.started_at_ms,
            };
            if let Err(e) = self.journal.mark_running(&rec) {
                error!(
                    "action {} (run {}): cannot persist the running marker ({e}); if the agent dies now the run \
                     is not reported",
                    r.name, r.run_id
                );
            }
            send(protocol::encode_answer(&self.id, &r.echo, Ok(json!({"action": r.name, "run_id": r.run_id}))));
        }
        let limits = child::Limits { timeout: r.spec.timeout, max_output: MAX_OUTPUT };
        let result = child::run_in(&r.spec.command, &limits, &self.groups);
        let took = r.received.elapsed();
        let outcome = match &result {
            Ok(o) if o.timed_out => format!("timed out after {}ms, killed", o.duration.as_millis()),
            Ok(o) => match (o.exit_code, o.signal) {
                (Some(c), _) => format!("exit {c}"),
                (None, Some(s)) => format!("killed by signal {s}"),
                (None, None) => "ended".into(),
            },
            Err(e) => format!("failed to start: {e}"),
        };
        info!(
            "action request: client_id={} action={} mode={} run_id={} outcome={} duration={}ms",
            escape_echo(&r.echo.client_id),
            r.name,
            r.mode.as_str(),
            r.run_id,
            escape(&outcome, 200),
            took.as_millis()
        );
        let data = match &result {
            Ok(o) => result_data(&r.name, o),
            Err(e) => start_failed_data(&r.name, e),
        };
        // Over before anyone can see that it is.
        finished.finish();
        match r.mode {
            Mode::Post => send(match result {
                Ok(_) => protocol::encode_answer(&self.id, &r.echo, Ok(data)),
                Err(e) => protocol::encode_answer(
                    &self.id,
                    &r.echo,
                    Err(Refusal::probe_failed(format!("cannot start the action: {e}"))),
                ),
            }),
            Mode::Write => {
                let msg = encode_result(&self.id, &r.run_id, &r.echo.act_code, &r.echo.client_id, data);
                if !self.spool.contains(&r.run_id) {
                    self.spool.push(&msg);
                }
                // The marker stays until the outbox's storage thread says the result is on
                // disk or acknowledged (Actions::new sets that up), however long the disk
                // takes: a crash before then finds the marker and reports the run as
                // interrupted, under the same act_id, instead of losing it; and it is gone
                // before the result's file is, so an acknowledged run is never reported again.
                // The outbox wakes the runner once the result is written.
                drop(in_flight);
            }
        }
    }
}

/// The refusal of a run with a `min_interval` whose start could not be recorded durably.
pub(super) fn unrecorded(name: &str, min_interval: std::time::Duration, e: &std::io::Error) -> Refusal {
    Refusal {
        code: protocol::code::NOT_NOW,
        description: format!(
            "action \"{name}\" was not run: the state directory is not writable ({e}), so its start cannot be \
             recorded durably and its min_interval of {} would not hold across a restart; try again once the \
             state directory is writable",
            crate::config::duration::format_duration(min_interval)
        ),
    }
}

/// `data` of a finished run, as the post answer and `action_result` carry it.
pub(super) fn result_data(name: &str, o: &child::Outcome) -> Value {
    json!({
        "action": name,
        "exit_code": o.exit_code,
        "timed_out": o.timed_out,
        "duration_ms": o.duration.as_millis() as u64,
        "stdout": String::from_utf8_lossy(&o.stdout),
        "stderr": String::from_utf8_lossy(&o.stderr),
        "truncated": o.truncated,
        "interrupted": false,
    })
}

/// `data` of a run whose command could not be started.
pub(super) fn start_failed_data(name: &str, e: &impl std::fmt::Display) -> Value {
    json!({"action": name, "exit_code": null, "timed_out": false, "duration_ms": 0,
        "stdout": "", "stderr": "", "truncated": false, "interrupted": false, "error": e.to_string()})
}

/// The `action_result` message. Its `act_id` is the `run_id`: a result spooled twice (a
/// crash between spooling and clearing the marker) is the same message to the gateway.
pub fn encode_result(id: &Identity, run_id: &str, act_code: &str, client_id: &str, data: Value) -> Value {
    json!({
        "from": FROM_DEVICE,
        "act": RESULT_ACT,
        "reqtype": "post",
        "act_id": run_id,
        "act_code": act_code,
        "client_id": client_id,
        "hardware_id": id.hardware_id,
        "run_id": run_id,
        "data": data,
    })
}

/// Turns the markers of runs a previous agent lost into `interrupted` results.
pub(super) fn recover(journal: &Journal, spool: &Spool, id: &Identity) {
    for leftover in journal.leftovers() {
        let rec = match leftover {
            Ok(rec) => rec,
            Err(name) => {
                error!("action marker {name} in the state directory is unreadable; removed");
                let _ = journal.remove(&name);
                continue;
            }
        };
        warn!(
            "action {} (run {}) was cut short by an agent restart; reporting it as interrupted",
            escape(&rec.action, MAX_NAME_LEN),
            escape(&rec.run_id, 64)
        );
        let data = json!({"action": rec.action, "exit_code": null, "timed_out": false, "duration_ms": null,
            "stdout": "", "stderr": "", "truncated": false, "interrupted": true});
        if !spool.contains(&rec.run_id) {
            // Its marker goes once this is on disk or acknowledged (the outbox's hook).
            spool.push(&encode_result(id, &rec.run_id, &rec.act_code, &rec.client_id, data));
        } else if let Err(e) = journal.clear_running(&rec.run_id) {
            // Its result is on disk already (a crash before the hook ran).
            warn!("cannot remove the marker of run {} ({e}); it will be looked at again", escape(&rec.run_id, 64));
        }
    }
}

/// Outside text for a log line: the agent's one escaping function, at this cap.
pub(super) fn escape(s: &str, max: usize) -> String {
    crate::protocol::escape::escape_to(s, max)
}

/// An echoed field (`client_id`), quoted and escaped for a log line.
pub(super) fn escape_echo(s: &str) -> String {
    format!("\"{}\"", escape(s, 200))
}

/// The `action` field as the request carried it, for a log line.
pub(super) fn escape_value(v: &Value) -> String {
    match v {
        Value::String(s) => escape_echo(s),
        Value::Null => "none".into(),
        Value::Array(_) | Value::Object(_) => "(not a string)".into(),
        other => escape(&other.to_string(), 40),
    }
}
