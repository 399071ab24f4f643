use super::*;
use serde_json::json;
use std::collections::HashSet;
use std::fs;

const SETTLE: Duration = Duration::from_secs(10);

fn warning(act_id: &str) -> Value {
    warning_of(act_id, "/dev/sdl", "missing")
}

fn warning_of(act_id: &str, disk: &str, reason: &str) -> Value {
    json!({"from":"device","act":"warning","act_id":act_id,"disk":disk,"reason":reason})
}

fn ids(s: &Spool) -> Vec<String> {
    s.unacked().into_iter().map(|e| e.act_id).collect()
}

fn pushed(s: &Spool, v: &Value) -> Durability {
    s.push(v);
    assert!(s.settle(SETTLE));
    s.durability(v["act_id"].as_str().unwrap()).unwrap()
}

#[test]
fn warnings_survive_a_reopen_in_creation_order() {
    let d = tempfile::tempdir().unwrap();
    let (s, p) = Spool::open(d.path()).unwrap();
    assert!(p.is_empty());
    for id in ["a-3", "a-1", "a-2"] {
        assert_eq!(pushed(&s, &warning(id)), Durability::OnDisk);
    }
    drop(s);
    let (s, _) = Spool::open(d.path()).unwrap();
    assert_eq!(ids(&s), ["a-3", "a-1", "a-2"], "creation order, not id order");
    assert_eq!(serde_json::from_str::<Value>(&s.unacked()[0].text).unwrap(), warning("a-3"));
}

#[test]
fn action_results_are_outbox_messages_too() {
    let d = tempfile::tempdir().unwrap();
    let (s, _) = Spool::open(d.path()).unwrap();
    let result = json!({"from":"device","act":"action_result","act_id":"r-1","result":"done"});
    assert_eq!(pushed(&s, &result), Durability::OnDisk);
    drop(s);
    let (s, problems) = Spool::open(d.path()).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(s.unacked()[0].kind, Kind::ActionResult);
    assert_eq!(s.ack("r-1"), Some(Acked { seq: 1, kind: Kind::ActionResult }));
}

#[test]
fn an_action_result_with_two_full_streams_of_control_bytes_is_read_back_after_a_restart() {
    let d = tempfile::tempdir().unwrap();
    let (s, _) = Spool::open(d.path()).unwrap();
    // 64 KiB of \x01 per stream (the actions' cap): each byte is six in the JSON text.
    let out = "\u{1}".repeat(64 << 10);
    let result = json!({"from":"device","act":"action_result","act_id":"r-big",
                        "data": {"stdout": out, "stderr": out, "truncated": true}});
    assert!(result.to_string().len() > 700 << 10);
    assert_eq!(pushed(&s, &result), Durability::OnDisk);
    drop(s);
    let (s, problems) = Spool::open(d.path()).unwrap();
    assert!(problems.is_empty(), "moved aside: {problems:?}");
    assert_eq!(ids(&s), ["r-big"]);
}

#[test]
fn an_ack_deletes_exactly_that_warning() {
    let d = tempfile::tempdir().unwrap();
    let (s, _) = Spool::open(d.path()).unwrap();
    s.push(&warning("x-1"));
    s.push(&warning("x-2"));
    assert!(s.ack("x-1").is_some());
    assert!(s.ack("x-1").is_none(), "a duplicate ack finds nothing");
    assert!(s.ack("unknown").is_none());
    drop(s);
    let (s, _) = Spool::open(d.path()).unwrap();
    assert_eq!(ids(&s), ["x-2"], "the write queued before the ack did not bring x-1 back");
    s.push(&warning("x-3"));
    assert!(s.unacked()[1].seq > s.unacked()[0].seq, "numbering continues after a reopen");
}

#[test]
fn a_message_is_offered_only_once_its_write_is_done_and_in_order() {
    let d = tempfile::tempdir().unwrap();
    let slow = Options { fsync_delay: Duration::from_millis(300), ..Options::default() };
    let (s, _) = Spool::open_with(d.path(), slow).unwrap();
    let first = s.push(&warning("o-1"));
    s.push(&warning("o-2"));
    assert!(s.sendable_from(0, 64).is_empty(), "still being written");
    assert_eq!(s.durability("o-1"), Some(Durability::Writing));
    assert!(s.settle(SETTLE));
    assert_eq!(s.sendable_from(0, 64), [first, first + 1]);
    assert_eq!(s.sendable_from(first + 1, 64), [first + 1]);
    assert_eq!(s.sendable_from(0, 1), [first]);
    assert_eq!(s.texts(&[first, 99]), [(first, Some(s.unacked()[0].text.clone())), (99, None)]);
}

#[test]
fn a_corrupt_file_is_moved_aside_and_reported() {
    let d = tempfile::tempdir().unwrap();
    let (s, _) = Spool::open(d.path()).unwrap();
    s.push(&warning("ok-1"));
    drop(s);
    fs::write(d.path().join("spool/w-000000000007.json"), "{\"act\":\"warn").unwrap();
    fs::write(d.path().join("spool/.tmp-w-000000000008.json"), "half").unwrap();
    let (s, problems) = Spool::open(d.path()).unwrap();
    assert_eq!(problems.len(), 1);
    assert!(problems[0].0.contains("moved aside"), "{problems:?}");
    assert!(d.path().join("spool/w-000000000007.json.corrupt").exists());
    assert!(!d.path().join("spool/.tmp-w-000000000008.json").exists(), "half-written temp removed");
    assert_eq!(s.len(), 1);
    let (_, again) = Spool::open(d.path()).unwrap();
    assert!(again.is_empty(), "reported once, not on every start");
}

#[test]
fn an_unwritable_spool_keeps_warnings_in_memory_and_catches_up() {
    let d = tempfile::tempdir().unwrap();
    let (s, _) = Spool::open(d.path()).unwrap();
    // Replace the spool directory with a file: every write now fails.
    let spool = d.path().join("spool");
    fs::remove_dir(&spool).unwrap();
    fs::write(&spool, "not a directory").unwrap();
    assert_eq!(pushed(&s, &warning("m-1")), Durability::MemoryOnly);
    assert_eq!(s.sendable_from(0, 64).len(), 1, "still there to be sent");
    fs::remove_file(&spool).unwrap();
    fs::create_dir(&spool).unwrap();
    s.catch_up();
    assert!(s.settle(SETTLE));
    assert!(s.unacked()[0].on_disk());
    let (reopened, _) = Spool::open(d.path()).unwrap();
    assert_eq!(ids(&reopened), ["m-1"]);
}

#[test]
fn a_warning_acknowledged_while_held_in_memory_is_not_written_out_later() {
    let d = tempfile::tempdir().unwrap();
    let (s, _) = Spool::open(d.path()).unwrap();
    let spool = d.path().join("spool");
    fs::remove_dir(&spool).unwrap();
    fs::write(&spool, "").unwrap();
    assert_eq!(pushed(&s, &warning("m-1")), Durability::MemoryOnly);
    assert!(s.ack("m-1").is_some());
    fs::remove_file(&spool).unwrap();
    s.catch_up();
    assert!(s.settle(SETTLE));
    drop(s);
    assert!(ids(&Spool::open(d.path()).unwrap().0).is_empty());
}

#[test]
fn past_the_cap_the_newest_duplicates_go_first_and_first_warnings_stay() {
    let d = tempfile::tempdir().unwrap();
    let limits = Limits { max_entries: 4, max_bytes: 1 << 20 };
    let (s, _) = Spool::open_with(d.path(), Options { limits, ..Options::default() }).unwrap();
    s.push(&warning_of("sdb-1", "/dev/sdb", "offline"));
    s.push(&warning_of("sdb-2", "/dev/sdb", "offline"));
    s.push(&warning_of("sda-1", "/dev/sda", "missing"));
    s.push(&warning_of("sdb-3", "/dev/sdb", "offline"));
    s.push(&warning_of("sdb-4", "/dev/sdb", "offline"));
    assert_eq!(ids(&s), ["sdb-1", "sdb-2", "sda-1", "sdb-3"], "the newest duplicate itself is dropped");
    s.push(&warning_of("sdc-1", "/dev/sdc", "offline"));
    assert_eq!(ids(&s), ["sdb-1", "sdb-2", "sda-1", "sdc-1"], "a first warning displaces a duplicate");
    s.push(&warning_of("sdd-1", "/dev/sdd", "offline"));
    s.push(&warning_of("sde-1", "/dev/sde", "offline"));
    assert_eq!(ids(&s), ["sdb-1", "sda-1", "sdc-1", "sdd-1", "sde-1"], "never a first warning, even over the cap");
    // Once sdb's first warning is acknowledged, nothing of sdb is a duplicate any more.
    s.ack("sdb-1");
    s.push(&warning_of("sdb-5", "/dev/sdb", "offline"));
    assert_eq!(ids(&s), ["sda-1", "sdc-1", "sdd-1", "sde-1", "sdb-5"]);
    assert!(s.settle(SETTLE));
    drop(s);
    assert_eq!(ids(&Spool::open(d.path()).unwrap().0), ["sda-1", "sdc-1", "sdd-1", "sde-1", "sdb-5"]);
}

#[test]
fn the_cap_counts_bytes_too_and_trims_an_old_spool_at_open() {
    let d = tempfile::tempdir().unwrap();
    let (s, _) = Spool::open(d.path()).unwrap();
    for i in 0..6 {
        s.push(&warning_of(&format!("f-{i}"), "/dev/sdf", "io_errors"));
    }
    let one = s.unacked()[0].text.len();
    assert!(s.settle(SETTLE));
    drop(s);
    let limits = Limits { max_entries: 100, max_bytes: 3 * one };
    let (s, problems) = Spool::open_with(d.path(), Options { limits, ..Options::default() }).unwrap();
    assert_eq!(ids(&s), ["f-0", "f-1", "f-2"]);
    assert_eq!(problems.len(), 1);
    assert!(problems[0].0.contains("dropped the 3 newest duplicate warnings"), "{problems:?}");
    assert!(s.settle(SETTLE));
    assert_eq!(fs::read_dir(d.path().join("spool")).unwrap().count(), 3, "their files are deleted");
}

/// What the settle hook saw: each act_id, and whether the spool then held that message's file.
fn settle_log(s: &Spool, dir: &Path) -> Arc<Mutex<Vec<(String, bool)>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (log, dir) = (Arc::clone(&seen), dir.join("spool"));
    s.set_on_settled(Arc::new(move |act_id: &str| {
        let quoted = format!("\"{act_id}\"");
        let on_disk = fs::read_dir(&dir)
            .is_ok_and(|rd| rd.filter_map(|e| fs::read_to_string(e.ok()?.path()).ok()).any(|t| t.contains(&quoted)));
        log.lock().unwrap().push((act_id.to_string(), on_disk));
    }));
    seen
}

#[test]
fn an_action_result_settles_once_on_disk_and_before_its_file_is_deleted_and_warnings_never_do() {
    let d = tempfile::tempdir().unwrap();
    let slow = Options { fsync_delay: Duration::from_millis(200), ..Options::default() };
    let (s, _) = Spool::open_with(d.path(), slow).unwrap();
    let seen = settle_log(&s, d.path());
    s.push(&warning("w-1"));
    s.push(&json!({"from":"device","act":"action_result","act_id":"r-1"}));
    // Acknowledged as soon as it is on disk: its delete is queued behind the settle.
    while s.durability("r-1") != Some(Durability::OnDisk) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(s.ack("r-1").is_some());
    assert!(s.settle(SETTLE));
    assert_eq!(*seen.lock().unwrap(), [("r-1".to_string(), true)]);
    assert_eq!(ids(&Spool::open(d.path()).unwrap().0), ["w-1"]);
}

#[test]
fn an_action_result_held_in_memory_settles_when_acknowledged_or_written_out() {
    let d = tempfile::tempdir().unwrap();
    let (s, _) = Spool::open(d.path()).unwrap();
    let seen = settle_log(&s, d.path());
    let spool = d.path().join("spool");
    fs::remove_dir(&spool).unwrap();
    fs::write(&spool, "").unwrap();
    for id in ["r-1", "r-2"] {
        let r = json!({"from":"device","act":"action_result","act_id":id});
        assert_eq!(pushed(&s, &r), Durability::MemoryOnly);
    }
    assert!(seen.lock().unwrap().is_empty(), "not settled while only in memory");
    assert!(s.ack("r-1").is_some());
    assert!(s.settle(SETTLE));
    assert_eq!(seen.lock().unwrap().len(), 1, "acknowledged: settled");
    fs::remove_file(&spool).unwrap();
    s.catch_up();
    assert!(s.settle(SETTLE));
    assert_eq!(*seen.lock().unwrap(), [("r-1".to_string(), false), ("r-2".to_string(), true)]);
}

#[test]
fn an_ack_of_a_warning_not_yet_saved_as_reported_leaves_a_tombstone_until_the_monitor_has_saved() {
    let d = tempfile::tempdir().unwrap();
    let (s, _) = Spool::open(d.path()).unwrap();
    pushed(&s, &warning("t-1"));
    pushed(&s, &warning("t-2"));
    // The monitor saved t-2's episode as reported (it is on disk), t-1's not yet.
    s.purge_tombstones(HashSet::from(["t-1".to_string()]));
    s.ack("t-1");
    s.ack("t-2");
    assert!(s.settle(SETTLE));
    assert!(s.acked_before("t-1"));
    assert!(!s.acked_before("t-2"), "a reported episode's warning is deleted at once");
    drop(s);
    // A kill -9 here: the restart still knows t-1 was delivered.
    let (s, problems) = Spool::open(d.path()).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    assert!(s.unacked().is_empty());
    assert!(s.acked_before("t-1"));
    // The monitor saved t-1's episode as reported: its tombstone goes.
    s.purge_tombstones(HashSet::new());
    assert!(s.settle(SETTLE));
    assert!(!s.acked_before("t-1"));
    assert_eq!(fs::read_dir(d.path().join("spool")).unwrap().count(), 0);
}

/// The race CI lost: the state disk stalled at detection, so the monitor's save (which
/// hands the spool the list of unreported episodes) was still blocked when the warning was
/// written, sent and acknowledged.
#[test]
fn a_warning_acknowledged_before_the_monitor_saved_at_all_leaves_a_tombstone() {
    let d = tempfile::tempdir().unwrap();
    let (s, _) = Spool::open(d.path()).unwrap();
    s.purge_tombstones(HashSet::new());
    pushed(&s, &warning("t-3"));
    s.ack("t-3");
    assert!(s.settle(SETTLE));
    drop(s);
    let (s, _) = Spool::open(d.path()).unwrap();
    assert!(s.acked_before("t-3"), "a kill -9 before the save must not resend t-3");
}

/// A warning held in memory (its first write failed) is acknowledged while the catch-up
/// writes it: the write's file must become a tombstone like any other such ack, or a
/// kill -9 before the monitor's next save raises it again.
#[test]
fn a_warning_acknowledged_during_its_catch_up_write_leaves_a_tombstone() {
    acknowledged_during_catch_up(&warning("c-1"));
}

/// The same for the end of an episode: without its tombstone, a kill -9 before the
/// monitor's next save would end the episode again and send a second `warning_cleared`.
#[test]
fn a_warning_cleared_acknowledged_during_its_catch_up_write_leaves_a_tombstone() {
    acknowledged_during_catch_up(&json!({"from":"device","act":"warning_cleared","act_id":"c-1",
        "ref_act_id":"w-1","disk":"/dev/sdl","reason":"missing"}));
}

/// `message` (act_id `c-1`), held in memory, is acknowledged during its catch-up write:
/// a tombstone of it is left for the restart.
fn acknowledged_during_catch_up(message: &Value) {
    let d = tempfile::tempdir().unwrap();
    let slow = Options { fsync_delay: Duration::from_millis(500), ..Options::default() };
    let (s, _) = Spool::open_with(d.path(), slow).unwrap();
    let spool = d.path().join("spool");
    // A file in the spool directory's place: the first write fails, the message is kept
    // in memory and still sent.
    fs::remove_dir(&spool).unwrap();
    fs::write(&spool, "in the way").unwrap();
    assert_eq!(pushed(&s, message), Durability::MemoryOnly);
    fs::remove_file(&spool).unwrap();
    s.catch_up();
    let until = std::time::Instant::now() + SETTLE;
    while !fs::read_dir(&spool).is_ok_and(|mut rd| rd.next().is_some()) {
        assert!(std::time::Instant::now() < until, "the catch-up write never started");
        thread::sleep(Duration::from_millis(5));
    }
    // The write is in its (slowed) fsync: the gateway's ack comes now.
    assert!(s.ack("c-1").is_some());
    assert!(s.settle(SETTLE));
    drop(s);
    let (s, _) = Spool::open(d.path()).unwrap();
    assert!(s.unacked().is_empty());
    assert!(s.acked_before("c-1"), "a kill -9 now would send c-1's message again");
}
