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
