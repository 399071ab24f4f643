//! `set_maintenance` (PROTOCOL.md §9): the console turns maintenance on for `minutes` or off,
//! only where the rig's config allows it (`[maintenance] remote = true`, else code 4).
//! Decided on the socket thread; the change itself (a durable write) is made by the
//! maintenance thread, which answers through the query's [`Reply`](crate::jobs::reply::Reply).

use std::sync::mpsc::Sender;
use std::time::Duration;

use serde_json::Value;

use super::control::ConsoleAsk;
use super::wire::Ask;
use crate::config::Config;
use crate::jobs::slots::Slots;
use crate::jobs::{Context, Decision, Handler};
use crate::os::wake::Waker;
use crate::protocol::{Query, Refusal, code};

/// The act.
pub const ACT: &str = "set_maintenance";
/// The bounds of `minutes`: a minute to a week.
pub const MINUTES: std::ops::RangeInclusive<u64> = 1..=7 * 24 * 60;
/// Changes taken and not yet answered; more are answered busy (code 3), so a flood of
/// `set_maintenance` costs a few durable writes at a time, never a queue without end.
const QUEUE: usize = 4;

/// The handler of `set_maintenance`.
pub struct SetMaintenance {
    remote: bool,
    slots: Slots,
    to_control: Sender<ConsoleAsk>,
    waker: Waker,
}

impl SetMaintenance {
    pub fn new(cfg: &Config, (to_control, waker): (Sender<ConsoleAsk>, Waker)) -> SetMaintenance {
        SetMaintenance { remote: cfg.maintenance.remote, slots: Slots::new(QUEUE), to_control, waker }
    }
}

/// What the query asks, or why it is a bad request (code 2).
pub fn decode(query: &Query) -> Result<Ask, Refusal> {
    if query.echo.reqtype != "post" {
        return Err(Refusal::bad_request("`reqtype` must be \"post\" for set_maintenance"));
    }
    match query.body.get("on") {
        Some(Value::Bool(false)) => Ok(Ask::Off),
        Some(Value::Bool(true)) => match query.body.get("minutes").and_then(Value::as_u64) {
            Some(m) if MINUTES.contains(&m) => Ok(Ask::On(Duration::from_secs(m * 60))),
            _ => Err(Refusal::bad_request(format!(
                "`minutes` must be a whole number from {} to {} (a week) when `on` is true",
                MINUTES.start(),
                MINUTES.end()
            ))),
        },
        _ => Err(Refusal::bad_request("`on` must be true or false")),
    }
}

impl Handler for SetMaintenance {
    fn handle(&mut self, query: Query, cx: &Context<'_>) -> Decision {
        if !self.remote {
            let r = Refusal {
                code: code::NOT_ALLOWED,
                description: "maintenance is set on the rig itself here ([maintenance] remote = false)".into(),
            };
            return Decision::Answer(cx.answer(&query.echo, Err(r)));
        }
        let ask = match decode(&query) {
            Ok(a) => a,
            Err(r) => return Decision::Answer(cx.answer(&query.echo, Err(r))),
        };
        let Some(slot) = self.slots.take() else {
            let r = Refusal::probe_failed("set_maintenance requests are already waiting: try again");
            return Decision::Busy {
                answer: cx.answer(&query.echo, Err(r)),
                why: "set_maintenance: queue full, answered busy".into(),
            };
        };
        let echo = query.echo.clone();
        let sent = self.to_control.send(ConsoleAsk {
            ask,
            echo: query.echo,
            id: cx.id().clone(),
            reply: cx.reply().holding(slot),
        });
        if sent.is_err() {
            let r = Refusal::probe_failed("the maintenance thread is not running");
            return Decision::Answer(cx.answer(&echo, Err(r)));
        }
        self.waker.wake();
        Decision::Started
    }

    fn reconfigure(&mut self, cfg: &Config) {
        self.remote = cfg.maintenance.remote;
    }
}
