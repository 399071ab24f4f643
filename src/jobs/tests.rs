use super::slots::Slots;
use super::*;
use crate::os::wake::{self, WakeReceiver};
use crate::protocol::{Inbound, decode};
use serde_json::json;
use std::sync::Mutex;
use std::time::Duration;

fn query(text: &str) -> Query {
    let Ok(Inbound::Query(q)) = decode(text) else { panic!("not a query: {text}") };
    q
}

fn id() -> Identity {
    Identity { hardware_id: "rig-1".into(), name: "rig one".into() }
}

fn registry() -> (Registry, WakeReceiver) {
    let (waker, rx) = wake::pair().unwrap();
    (Registry::new(waker), rx)
}

/// Whether a wake-up is waiting on the pipe, without sleeping.
fn woken(rx: &WakeReceiver) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let mut fds = [PollFd::new(rx, PollFlags::IN)];
    poll(&mut fds, Some(&Timespec { tv_sec: 0, tv_nsec: 0 })).unwrap() == 1
}

fn next_finished(r: &mut Registry) -> Finished {
    for _ in 0..1000 {
        if let Some(f) = r.try_finished() {
            return f;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("no finished job within 5 s");
}

fn code(text: &str) -> i64 {
    serde_json::from_str::<Value>(text).unwrap()["code"].as_i64().unwrap()
}

/// Answers on a thread of its own, holding one of two slots; busy past that.
struct Echo {
    slots: Slots,
    calls: Arc<Mutex<Vec<String>>>,
}

impl Handler for Echo {
    fn handle(&mut self, query: Query, cx: &Context<'_>) -> Decision {
        self.calls.lock().unwrap().push(query.echo.act.clone());
        let Some(slot) = self.slots.take() else {
            let answer = cx.answer(&query.echo, Err(Refusal::probe_failed("busy")));
            return Decision::Busy { answer, why: "full".into() };
        };
        let (reply, text) = (cx.reply().holding(slot), cx.answer(&query.echo, Ok(json!({"ok": true}))));
        std::thread::spawn(move || reply.send(text).unwrap());
        Decision::Started
    }

    fn reconfigure(&mut self, cfg: &Config) {
        self.calls.lock().unwrap().push(format!("reconfigure {}", cfg.device.hardware_id));
    }

    fn stop(&mut self) {
        self.calls.lock().unwrap().push("stop".into());
    }
}

fn echo(max: usize) -> (Echo, Arc<Mutex<Vec<String>>>) {
    let calls = Arc::new(Mutex::new(Vec::new()));
    (Echo { slots: Slots::new(max), calls: Arc::clone(&calls) }, calls)
}

#[test]
fn a_started_job_answers_once_tagged_with_the_connection_it_was_asked_on_and_wakes_the_runner() {
    let (mut r, rx) = registry();
    let (h, _) = echo(2);
    r.add(["get_echo"], h);
    let q = query(r#"{"act":"get_echo","act_code":"a1","client_id":"c","reqtype":"post"}"#);
    assert!(matches!(r.dispatch(q, 7, &id()), Decision::Started));
    let f = next_finished(&mut r);
    assert_eq!(f.generation, 7);
    let answer: Value = serde_json::from_str(&f.text).unwrap();
    assert_eq!((answer["act_code"].as_str(), answer["hardware_id"].as_str()), (Some("a1"), Some("rig-1")));
    assert!(woken(&rx), "the runner was not woken");
    assert!(r.try_finished().is_none(), "answered twice");
}

#[test]
fn a_malformed_query_and_an_unknown_act_are_answered_at_once_without_a_handler() {
    let (mut r, _rx) = registry();
    let (h, calls) = echo(2);
    r.add(["get_echo"], h);
    let bad = query(r#"{"act":"get_echo","act_code":"a1","client_id":5,"reqtype":"post"}"#);
    assert!(bad.bad_request.is_some(), "{bad:?}");
    let Decision::Answer(text) = r.dispatch(bad, 1, &id()) else { panic!("not answered at once") };
    assert_eq!(code(&text), 2);
    let unknown = query(r#"{"act":"get_nothing","act_code":"a2","client_id":"c","reqtype":"post"}"#);
    let Decision::Answer(text) = r.dispatch(unknown, 1, &id()) else { panic!("not answered at once") };
    assert_eq!(code(&text), 1);
    assert!(calls.lock().unwrap().is_empty(), "the handler saw {:?}", calls.lock().unwrap());
}

#[test]
fn a_slot_is_free_again_only_once_the_runner_has_taken_the_answer() {
    let (mut r, _rx) = registry();
    let (h, _) = echo(1);
    let slots = h.slots.clone();
    r.add(["get_echo"], h);
    let ask = |act_code: &str| {
        query(&format!(r#"{{"act":"get_echo","act_code":"{act_code}","client_id":"c","reqtype":"post"}}"#))
    };
    assert!(matches!(r.dispatch(ask("a1"), 1, &id()), Decision::Started));
    let f = next_finished(&mut r);
    // Answered, but not yet sent: still counted.
    let Decision::Busy { answer, .. } = r.dispatch(ask("a2"), 1, &id()) else { panic!("not busy") };
    assert_eq!(code(&answer), 3);
    drop(f);
    assert_eq!(slots.taken(), 0);
    assert!(matches!(r.dispatch(ask("a3"), 1, &id()), Decision::Started));
}

#[test]
fn every_handler_hears_of_a_reload_and_of_the_stop_even_one_registered_under_no_act() {
    let (mut r, _rx) = registry();
    let (a, a_calls) = echo(1);
    let (b, b_calls) = echo(1);
    let (c, c_calls) = echo(1);
    r.add(["get_a"], a);
    r.add(["get_b", "get_c"], b);
    r.add::<&str>([], c);
    let dir = tempfile::tempdir().unwrap();
    let cfg = crate::config::tests::minimal_config(dir.path());
    r.reconfigure(&cfg);
    r.stop();
    let expected = vec![format!("reconfigure {}", cfg.device.hardware_id), "stop".to_string()];
    assert_eq!(*a_calls.lock().unwrap(), expected);
    assert_eq!(*b_calls.lock().unwrap(), expected);
    assert_eq!(*c_calls.lock().unwrap(), expected);
}

#[test]
#[should_panic(expected = "two handlers registered for the act \"get_a\"")]
fn an_act_registered_twice_stops_the_agent_at_start_up() {
    let (mut r, _rx) = registry();
    r.add(["get_a"], echo(1).0);
    r.add(["get_b", "get_a"], echo(1).0);
}
