use super::*;
use crate::actions::journal::RunRecord;
use serde_json::json;

fn id() -> Identity {
    Identity { hardware_id: "rig-1".into(), name: "rig-1".into() }
}

#[test]
fn a_spooled_result_survives_a_reopen_and_a_lost_run_is_reported_once() {
    let d = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(d.path()).unwrap();
    spool.push(&encode_result(&id(), "ab-7", "c", "u", json!({"exit_code": 0})));
    let j = Journal::new(d.path());
    let rec = RunRecord {
        run_id: "ab-9".into(),
        action: "reboot".into(),
        act_code: "c9".into(),
        client_id: "u".into(),
        started_at_ms: 1,
    };
    j.mark_running(&rec).unwrap();
    // As if the agent died after spooling ab-9's result but before clearing its marker.
    spool.push(&encode_result(&id(), "ab-9", "c9", "u", json!({"exit_code": 0})));
    drop(spool);
    let (spool, problems) = Spool::open(d.path()).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    recover(&j, &spool, &id());
    let ids: Vec<String> = spool.unacked().into_iter().map(|e| e.act_id).collect();
    assert_eq!(ids, ["ab-7", "ab-9"], "the lost run is not reported twice");
    assert!(j.leftovers().is_empty());
    // A marker without a spooled result becomes an interrupted result.
    j.mark_running(&RunRecord { run_id: "ab-10".into(), ..rec }).unwrap();
    recover(&j, &spool, &id());
    let last: Value = serde_json::from_str(&spool.unacked()[2].text).unwrap();
    assert_eq!(last["act"], "action_result");
    assert_eq!(last["act_code"], "c9");
    assert_eq!(last["data"]["interrupted"], true);
}

/// An update under way is "wait", not a refusal, and the step is in the running set while
/// the update's side is asked (so that an offer claiming its phase at the same moment sees
/// it); it leaves the set, and starts nothing, when told to wait.
#[test]
fn a_step_during_an_update_is_told_to_wait_and_is_seen_running_meanwhile() {
    let d = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(d.path()).unwrap();
    let marker = d.path().join("ran");
    let spec = ActionSpec {
        command: vec!["/bin/sh".into(), "-c".into(), format!("touch {}", marker.display())],
        timeout: Duration::from_secs(5),
        min_interval: Duration::ZERO,
    };
    let cfg =
        ActionsConfig { enabled: true, actions: [("restart_miner".to_string(), spec)].into(), ..Default::default() };
    let mut actions = Actions::new(
        Arc::new(cfg),
        &id(),
        d.path(),
        Arc::new(spool),
        Arc::new(ActIds::new()),
        Arc::new(Clock::load(d.path(), crate::os::deferred_write::DeferredWriter::default()).0),
    );
    let running = actions.running_check();
    let updating = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let seen = Arc::new(Mutex::new(None));
    let (flag, saw) = (Arc::clone(&updating), Arc::clone(&seen));
    actions.add_not_now(Arc::new(move || {
        *saw.lock().unwrap() = running();
        flag.load(Ordering::SeqCst).then(|| "an agent update is under way (downloading)".to_string())
    }));
    let steps = actions.steps();
    assert_eq!(steps.wait_reason().as_deref(), Some("an agent update is under way (downloading)"));
    assert_eq!(steps.run("restart_miner"), Err(StepRefusal::Wait("an agent update is under way (downloading)".into())));
    assert_eq!(seen.lock().unwrap().as_deref(), Some("an action is running (restart_miner)"));
    assert!(actions.running_check()().is_none(), "a step told to wait leaves the running set");
    assert!(!marker.exists(), "a step told to wait runs nothing");
    // Not counted as a start either: min_interval does not hold it back afterwards.
    assert!(actions.last_start.lock().is_empty());
    updating.store(false, Ordering::SeqCst);
    assert_eq!(steps.wait_reason(), None);
    assert_eq!(steps.run("restart_miner").unwrap()["exit_code"], 0);
    assert!(marker.exists());
    // A real refusal stays one: not in the allow-list.
    assert!(matches!(steps.run("reboot"), Err(StepRefusal::Refused(r)) if r.code == protocol::code::NOT_ALLOWED));
}
