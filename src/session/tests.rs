use super::*;
use serde_json::Value;

const MS: Duration = Duration::from_millis(1);

fn cfg() -> SessionConfig {
    SessionConfig { heartbeat_interval: 30_000 * MS, heartbeat_timeout: 90_000 * MS, login_timeout: 10_000 * MS }
}

struct Clock {
    t0: Instant,
    ids: ActIds,
}

impl Clock {
    fn new() -> Clock {
        Clock { t0: Instant::now(), ids: ActIds::with_prefix("abcd0123") }
    }
    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }
    fn start(&self) -> (Session, Vec<Action>) {
        let id = Identity { hardware_id: "rig-1".into(), name: "rig-1".into() };
        Session::start(cfg(), id, "tok", &self.ids, self.t0)
    }
    fn logged_in(&self) -> Session {
        let (mut s, _) = self.start();
        let a = s.on_text(&ret("start", "abcd0123-1", 0), &self.ids, self.at(5));
        assert_eq!(a[0], Action::LoggedIn);
        s
    }
}

fn ret(action: &str, act_id: &str, code: i64) -> String {
    format!(r#"{{"act":"return","action":"{action}","act_id":"{act_id}","code":{code},"description":"d"}}"#)
}

fn sent(actions: &[Action]) -> Vec<Value> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(t) => Some(serde_json::from_str(t).unwrap()),
            _ => None,
        })
        .collect()
}

#[test]
fn login_is_the_first_message_and_nothing_else_goes_out_before_its_return() {
    let c = Clock::new();
    let (mut s, a) = c.start();
    let out = sent(&a);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["act"], "start");
    assert_eq!(out[0]["act_id"], "abcd0123-1");
    // A query answer and the heartbeat time passing do not send anything yet.
    assert!(s.answer("{\"act\":\"x\"}".into()).is_empty());
    assert!(sent(&s.on_tick(&c.ids, c.at(9_000))).is_empty());
    let a = s.on_text(&ret("start", "abcd0123-1", 0), &c.ids, c.at(9_500));
    assert_eq!(a[0], Action::LoggedIn);
    assert_eq!(sent(&a)[0]["act"], "x", "the held answer goes out after login");
}

#[test]
fn answers_held_before_login_are_bounded_and_a_drop_is_reported() {
    let c = Clock::new();
    let (mut s, _) = c.start();
    for i in 0..MAX_HELD_ANSWERS {
        assert!(s.answer(format!("{{\"n\":{i}}}")).is_empty());
    }
    assert_eq!(s.answer("{\"n\":-1}".into()), vec![Action::DroppedHeldAnswer]);
    let a = s.on_text(&ret("start", "abcd0123-1", 0), &c.ids, c.at(5));
    let out = sent(&a);
    assert_eq!(out.len(), MAX_HELD_ANSWERS);
    assert_eq!(out[0]["n"], 1, "the oldest was dropped");
    assert_eq!(out.last().unwrap()["n"], -1);
}

#[test]
fn answers_held_before_login_are_bounded_in_bytes_keeping_the_newest() {
    let c = Clock::new();
    let (mut s, _) = c.start();
    let answer = |i: usize| format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(100_000));
    let mut drops = 0;
    for i in 0..30 {
        drops += s.answer(answer(i)).len();
    }
    assert_eq!(drops, 30 - 10, "ten answers of ~100 KB fit in 1 MiB");
    let out = sent(&s.on_text(&ret("start", "abcd0123-1", 0), &c.ids, c.at(5)));
    assert_eq!(out.len(), 10);
    assert_eq!((out[0]["n"].as_u64(), out[9]["n"].as_u64()), (Some(20), Some(29)));
    // One answer larger than the cap is still kept: the newest always is.
    let (mut s, _) = c.start();
    assert!(s.answer("y".repeat(2 << 20)).is_empty());
    assert_eq!(s.answer("z".repeat(2 << 20)), vec![Action::DroppedHeldAnswer]);
}

#[test]
fn a_rejected_login_closes_with_1000_and_keeps_the_description() {
    let c = Clock::new();
    let (mut s, _) = c.start();
    let a = s.on_text(&ret("start", "abcd0123-1", 5), &c.ids, c.at(10));
    assert_eq!(
        a,
        vec![Action::Close { code: 1000, end: End::LoginRejected { code: Some(5), description: "d".into() } }]
    );
    assert!(s.is_closed());
}

#[test]
fn a_rejection_description_is_shown_escaped_and_capped() {
    let end = End::LoginRejected { code: Some(4), description: format!("x\n<0>kernel: {}", "z".repeat(500)) };
    let shown = end.to_string();
    assert!(shown.starts_with("login rejected by the gateway (code 4): x\\n<0>kernel: zzz"), "{shown}");
    assert!(!shown.contains('\n'));
    assert!(shown.len() < 300 && shown.ends_with('…'), "{shown}");
}

#[test]
fn no_login_return_within_login_timeout_ends_the_session() {
    let c = Clock::new();
    let (mut s, _) = c.start();
    assert_eq!(s.next_deadline(), Some(c.at(10_000)));
    assert!(s.on_tick(&c.ids, c.at(9_999)).is_empty());
    assert_eq!(s.on_tick(&c.ids, c.at(10_000)), vec![Action::Close { code: 1000, end: End::LoginTimeout }]);
}

#[test]
fn heartbeats_go_out_every_interval_on_schedule() {
    let c = Clock::new();
    let mut s = c.logged_in();
    let mut times = Vec::new();
    let mut t = 5;
    while t < 200_000 {
        for m in sent(&s.on_tick(&c.ids, c.at(t))) {
            assert_eq!(m["act"], "heartbeat");
            assert_eq!(m["hardware_id"], "rig-1");
            times.push(t);
            // The gateway answers, keeping the connection alive.
            s.on_text(&ret("heartbeat", m["act_id"].as_str().unwrap(), 0), &c.ids, c.at(t + 1));
        }
        t += 7; // ticks at odd times: the schedule must not drift with them
    }
    assert_eq!(times.len(), 6);
    for (i, t) in times.iter().enumerate() {
        let due = 5 + 30_000 * (i as u64 + 1);
        assert!(*t >= due && *t < due + 7, "heartbeat {i} at {t}, due {due}");
    }
}

#[test]
fn the_first_answered_heartbeat_establishes_the_session_once() {
    let c = Clock::new();
    let mut s = c.logged_in();
    let hb = sent(&s.on_tick(&c.ids, c.at(30_005)));
    let id = hb[0]["act_id"].as_str().unwrap().to_string();
    assert_eq!(s.on_text(&ret("heartbeat", &id, 0), &c.ids, c.at(30_010)), vec![Action::Established]);
    assert!(s.on_text(&ret("heartbeat", &id, 0), &c.ids, c.at(30_011)).is_empty());
}

#[test]
fn silence_for_heartbeat_timeout_means_dead() {
    let c = Clock::new();
    let mut s = c.logged_in();
    // Heartbeats go out but nothing comes back.
    let mut t = 5;
    let end = loop {
        t += 100;
        if let Some(Action::Close { end, .. }) =
            s.on_tick(&c.ids, c.at(t)).into_iter().find(|a| matches!(a, Action::Close { .. }))
        {
            break end;
        }
    };
    assert!(matches!(end, End::Dead { .. }));
    assert!((90_005..=90_105).contains(&t), "declared dead at {t}");
}

#[test]
fn pings_and_answered_heartbeats_keep_the_connection_alive() {
    let c = Clock::new();
    let mut s = c.logged_in();
    for t in (0..300_000).step_by(1_000) {
        s.on_frame(c.at(t)); // pings, say
        let a = s.on_tick(&c.ids, c.at(t));
        assert!(!a.iter().any(|a| matches!(a, Action::Close { .. })), "closed at {t}");
        for hb in sent(&a) {
            s.on_text(&ret("heartbeat", hb["act_id"].as_str().unwrap(), 0), &c.ids, c.at(t + 500));
        }
    }
}

#[test]
fn heartbeats_unanswered_for_heartbeat_timeout_end_the_session_though_pings_arrive() {
    let c = Clock::new();
    let mut s = c.logged_in();
    // A gateway whose WebSocket layer pings every 2 s while its application never answers.
    let mut t = 5;
    let end = loop {
        t += 2_000;
        s.on_frame(c.at(t));
        if let Some(Action::Close { code, end }) =
            s.on_tick(&c.ids, c.at(t)).into_iter().find(|a| matches!(a, Action::Close { .. }))
        {
            assert_eq!(code, 1000);
            break end;
        }
        assert!(t < 200_000, "never closed");
    };
    // The first heartbeat went out at 30 005 ms; it and the two after it were never answered.
    let End::HeartbeatsUnanswered { unanswered_for, sent } = end else { panic!("{end:?}") };
    assert_eq!(t, 120_005, "given up heartbeat.timeout after the first unanswered heartbeat");
    assert!(unanswered_for >= Duration::from_secs(90));
    assert_eq!(sent, 3);
    assert!(end.to_string().contains("the gateway's application is gone"), "{end}");
}

#[test]
fn queries_from_the_gateway_show_its_application_alive_while_heartbeat_answers_queue() {
    let c = Clock::new();
    let mut s = c.logged_in();
    // A flood of queries for 300 s: the gateway answers no heartbeat in all that time (its
    // answers wait behind the flood), yet it is plainly alive.
    let query = r#"{"act":"get_agent_info","act_code":"q","client_id":"c","reqtype":"post"}"#;
    for t in (5..300_000).step_by(500) {
        s.on_text(query, &c.ids, c.at(t));
        let a = s.on_tick(&c.ids, c.at(t));
        assert!(!a.iter().any(|a| matches!(a, Action::Close { .. })), "closed at {t}: {a:?}");
    }
    // Once the flood stops and heartbeats still go unanswered, the rule applies again.
    let mut t = 300_000;
    let end = loop {
        t += 1_000;
        s.on_frame(c.at(t));
        if let Some(Action::Close { end, .. }) =
            s.on_tick(&c.ids, c.at(t)).into_iter().find(|a| matches!(a, Action::Close { .. }))
        {
            break end;
        }
        assert!(t < 500_000, "never closed");
    };
    assert!(matches!(end, End::HeartbeatsUnanswered { .. }), "{end:?}");
}

#[test]
fn the_session_wakes_to_give_up_on_unanswered_heartbeats_in_time() {
    let c = Clock::new();
    let mut s = c.logged_in();
    s.on_frame(c.at(30_005));
    assert_eq!(sent(&s.on_tick(&c.ids, c.at(30_005))).len(), 1);
    // Frames keep arriving; a late heartbeat (after a stall) puts the next one at 130 000 ms,
    // after the first one's answer is overdue: the loop must wake for that, not sleep past it.
    s.on_frame(c.at(100_000));
    assert_eq!(sent(&s.on_tick(&c.ids, c.at(100_000))).len(), 1);
    assert_eq!(s.next_deadline(), Some(c.at(120_005)));
}

#[test]
fn next_deadline_is_the_earlier_of_heartbeat_and_death() {
    let c = Clock::new();
    let s = c.logged_in();
    assert_eq!(s.next_deadline(), Some(c.at(30_005)));
}

#[test]
fn queries_are_dispatched_and_junk_is_reported_without_closing() {
    let c = Clock::new();
    let mut s = c.logged_in();
    let a = s.on_text(r#"{"act":"get_agent_info","act_code":"q1"}"#, &c.ids, c.at(10));
    assert!(matches!(&a[0], Action::Dispatch(q) if q.echo.act == "get_agent_info"));
    let a = s.on_text("not json", &c.ids, c.at(11));
    assert!(matches!(&a[0], Action::Junk(Junk::NotJson(_), head) if head == "not json"));
    let a = s.on_text("x\n<0>kernel: panic", &c.ids, c.at(12));
    assert!(matches!(&a[0], Action::Junk(_, head) if head == "x\\n<0>kernel: panic"), "{a:?}");
    assert!(s.is_up());
}

#[test]
fn a_warning_return_acknowledges_or_refuses_that_warning() {
    let c = Clock::new();
    let mut s = c.logged_in();
    assert_eq!(s.on_text(&ret("warning", "w-9", 0), &c.ids, c.at(10)), vec![Action::WarningAcked("w-9".into())]);
    assert!(matches!(
        &s.on_text(&ret("warning", "w-9", 5), &c.ids, c.at(11))[0],
        Action::WarningRefused { code: Some(5), .. }
    ));
}

#[test]
fn a_warning_cleared_return_acknowledges_or_refuses_that_message() {
    let c = Clock::new();
    let mut s = c.logged_in();
    let acked = s.on_text(&ret("warning_cleared", "c-3", 0), &c.ids, c.at(10));
    assert_eq!(acked, vec![Action::WarningAcked("c-3".into())]);
    assert!(matches!(
        &s.on_text(&ret("warning_cleared", "c-3", 2), &c.ids, c.at(11))[0],
        Action::WarningRefused { code: Some(2), .. }
    ));
}

#[test]
fn a_shorter_heartbeat_interval_applies_at_once() {
    let c = Clock::new();
    let mut s = c.logged_in();
    assert_eq!(s.next_deadline(), Some(c.at(30_005)));
    s.reconfigure(SessionConfig { heartbeat_interval: Duration::from_secs(5), ..cfg() }, c.at(1_000));
    assert_eq!(s.next_deadline(), Some(c.at(6_000)));
    s.reconfigure(SessionConfig { heartbeat_interval: Duration::from_secs(60), ..cfg() }, c.at(2_000));
    assert_eq!(s.next_deadline(), Some(c.at(6_000)), "a longer one waits for the next heartbeat");
}

#[test]
fn a_refused_heartbeat_closes_so_the_agent_logs_in_again() {
    let c = Clock::new();
    let mut s = c.logged_in();
    let hb = sent(&s.on_tick(&c.ids, c.at(30_005)));
    let a = s.on_text(&ret("heartbeat", hb[0]["act_id"].as_str().unwrap(), 9), &c.ids, c.at(30_010));
    assert!(matches!(&a[0], Action::Close { end: End::HeartbeatRejected { .. }, .. }));
}

#[test]
fn after_a_stall_heartbeats_resume_without_a_burst() {
    let c = Clock::new();
    let mut s = c.logged_in();
    s.on_frame(c.at(80_000));
    let a = sent(&s.on_tick(&c.ids, c.at(80_000)));
    assert_eq!(a.len(), 1, "one heartbeat, not the two that were missed");
    assert!(sent(&s.on_tick(&c.ids, c.at(80_001))).is_empty());
    assert_eq!(s.next_deadline(), Some(c.at(110_000)));
}
