//! Remote actions (PROTOCOL.md §8) end to end: only what the rig's allow-list names runs,
//! answered with its exit code and capped output, within its timeout with everything it
//! started; a write run's result comes through the outbox once, across a dropped connection,
//! a stalled state disk, kill -9 and restarts; min_interval and the concurrency cap hold
//! across restarts and a clock that was wrong; hostile values are refused and logged escaped;
//! heartbeats keep their schedule; nothing runs with the agent's capabilities. The real
//! binary, a real TLS gateway, real child processes.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// An agent under test with its gateway and its config directory.
struct Rig {
    dir: tempfile::TempDir,
    _pki: Pki,
    gw: Gateway,
    config: PathBuf,
    child: Option<Reaped>,
    conn: usize,
}

impl Rig {
    /// `actions(dir)` returns the `[actions]` section (it may write scripts into `dir`).
    fn start(actions: impl FnOnce(&Path) -> String) -> Rig {
        let mut rig = Rig::configure(actions);
        rig.spawn();
        rig
    }

    /// The rig, its gateway and config, without an agent yet.
    fn configure(actions: impl FnOnce(&Path) -> String) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(&["localhost"]);
        let gw = Gateway::start(&pki, Script::default());
        let mut cfg = AgentConfig::new(gw.url(), &pki.ca_file);
        (cfg.heartbeat_interval, cfg.heartbeat_timeout) = ("200ms", "1s");
        cfg.warning = "resend_after = \"300ms\"\n".into();
        cfg.sections = actions(dir.path());
        let config = cfg.write(dir.path());
        fs::create_dir_all(dir.path().join("state")).unwrap();
        Rig { dir, _pki: pki, gw, config, child: None, conn: 0 }
    }

    fn spawn(&mut self) {
        self.child = Some(spawn_agent(&self.config, &[]));
        self.conn = self.gw.wait_login(10 * SEC).0;
    }

    /// Starts the agent as the old single unit did: user nobody with CAP_SYS_RAWIO and
    /// CAP_SYS_ADMIN ambient (its `AmbientCapabilities=`).
    fn spawn_unprivileged(&mut self, nobody: &nobody::Nobody) {
        fs::set_permissions(&self._pki.ca_file, fs::Permissions::from_mode(0o644)).unwrap();
        let (token, state) = (self.dir.path().join("token"), self.dir.path().join("state"));
        nobody::Nobody::give(&[self.dir.path(), self._pki.dir.path()], &[&token, &state]);
        let mut cmd = nobody.command(&["--inh-caps=+sys_rawio,+sys_admin", "--ambient-caps=+sys_rawio,+sys_admin"]);
        cmd.arg("--config").arg(&self.config).stdout(std::process::Stdio::null());
        self.child = Some(spawn_logged(&mut cmd));
        self.conn = self.gw.wait_login(10 * SEC).0;
    }

    fn ask(&self, mode: &str, code: &str, action: Value) {
        self.gw.send_json(
            self.conn,
            json!({"from":"html","act":"run_action","reqtype":mode,"act_code":code,"client_id":"c-42","action":action}),
        );
    }

    /// The answer to the query with this `act_code`, and when it came.
    fn answer(&mut self, code: &str, limit: Duration) -> (Value, Instant) {
        let e = self.gw.wait_for(
            limit,
            code,
            |e| matches!(e, Event::Received { msg, .. } if msg["act"] == "run_action" && msg["act_code"] == code),
        );
        match e {
            Event::Received { msg, at, .. } => (msg, at),
            _ => unreachable!(),
        }
    }

    fn result(&mut self, limit: Duration) -> Value {
        self.gw.wait_act(limit, "action_result").1
    }

    fn results_seen(&self) -> usize {
        self.gw.seen.iter().filter(|e| e.act() == Some("action_result")).count()
    }

    /// SIGTERM; the agent's log.
    fn stop(&mut self) -> String {
        let (code, log) = stop_agent(self.child.as_mut().unwrap());
        self.child = None;
        assert_eq!(code, Some(0), "{log}");
        log
    }
}

fn enabled(sections: &str) -> String {
    format!("[actions]\nenabled = true\n{sections}")
}

/// Actions enabled with one action `name` running a script of `body` (`PIDFILE` in it
/// stands for a file in the rig's directory), plus `extra` lines for its section.
fn with_script(name: &'static str, body: &'static str, extra: &'static str) -> impl FnOnce(&Path) -> String {
    move |d| {
        let body = body.replace("PIDFILE", &format!("{:?}", d.join("pid").display().to_string()));
        let s = script(d, name, &body);
        enabled(&format!("[actions.{name}]\ncommand = [{s:?}]\n{extra}"))
    }
}

#[test]
fn a_post_action_is_answered_when_it_ends_with_its_exit_code_and_output() {
    let _g = Guard::new(30 * SEC);
    let mut rig = Rig::start(with_script("hello", "echo \"out $LANG\"; echo err >&2; exit 3", ""));
    rig.ask("post", "p1", json!("hello"));
    let (a, _) = rig.answer("p1", 10 * SEC);
    assert_eq!(a["code"], 0, "{a}");
    assert_eq!((a["reqtype"].as_str(), a["client_id"].as_str()), (Some("post"), Some("c-42")));
    let d = &a["data"];
    assert_eq!(d["action"], "hello");
    assert_eq!(d["exit_code"], 3);
    assert_eq!(d["timed_out"], false);
    assert_eq!(d["truncated"], false);
    assert!(d["stdout"].as_str().unwrap().starts_with("out "), "{d}");
    assert_eq!(d["stderr"], "err\n");
    assert!(d["duration_ms"].is_u64());
    let log = rig.stop();
    let line = log.lines().find(|l| l.contains("action request:")).expect("a log line per request");
    assert!(line.contains("client_id=\"c-42\"") && line.contains("action=hello") && line.contains("outcome=exit 3"));
    assert!(line.contains("duration="), "{line}");
}

#[test]
fn a_write_action_is_answered_at_once_and_its_result_comes_through_the_outbox_once_acked() {
    let _g = Guard::new(30 * SEC);
    let mut rig = Rig::start(with_script("slow", "sleep 1; echo done", ""));
    let asked = Instant::now();
    rig.ask("write", "w1", json!("slow"));
    let (a, at) = rig.answer("w1", 10 * SEC);
    assert_eq!(a["code"], 0, "{a}");
    assert!(at - asked < ms(900), "the write answer waited for the action: {:?}", at - asked);
    let run_id = a["data"]["run_id"].as_str().unwrap().to_string();
    assert_eq!(a["data"]["action"], "slow");
    let r = rig.result(10 * SEC);
    assert_eq!(r["run_id"], run_id.as_str());
    assert_eq!(r["act_id"], run_id.as_str());
    assert_eq!((r["act_code"].as_str(), r["client_id"].as_str()), (Some("w1"), Some("c-42")));
    assert_eq!(r["hardware_id"], HARDWARE_ID);
    assert_eq!(r["data"]["exit_code"], 0);
    assert_eq!(r["data"]["stdout"], "done\n");
    assert_eq!(r["data"]["interrupted"], false);
    // Acknowledged at once: no resend after resend_after (300 ms), and nothing left spooled.
    std::thread::sleep(ms(1000));
    while rig.gw.next_event(ms(10)).is_some() {}
    assert_eq!(rig.results_seen(), 1);
    let spool = rig.dir.path().join("state/spool");
    assert_eq!(fs::read_dir(&spool).unwrap().count(), 0, "acknowledged result still spooled");
    assert!(
        fs::read_dir(rig.dir.path().join("state/actions"))
            .unwrap()
            .all(|e| { !e.unwrap().file_name().to_string_lossy().starts_with("run-") })
    );
}

#[test]
fn a_write_result_that_ends_while_the_connection_is_down_is_delivered_once_after_reconnect() {
    let _g = Guard::new(30 * SEC);
    let mut rig = Rig::start(with_script("slow", "sleep 1; echo done", ""));
    rig.ask("write", "w1", json!("slow"));
    let run_id = rig.answer("w1", 10 * SEC).0["data"]["run_id"].as_str().unwrap().to_string();
    // The gateway goes away and refuses every new connection until the action is over.
    rig.gw.script().drop_on_accept = true;
    rig.gw.close_all();
    std::thread::sleep(ms(1800));
    assert_eq!(rig.results_seen(), 0);
    while rig.gw.next_event(ms(10)).is_some() {}
    assert_eq!(rig.results_seen(), 0, "the result went out while the gateway was down?");
    rig.gw.script().drop_on_accept = false;
    let r = rig.result(10 * SEC);
    assert_eq!(r["run_id"], run_id.as_str());
    assert_eq!(r["data"]["stdout"], "done\n");
    std::thread::sleep(ms(1000));
    while rig.gw.next_event(ms(10)).is_some() {}
    assert_eq!(rig.results_seen(), 1, "delivered once");
}

#[test]
fn a_write_action_cut_short_by_kill_9_is_reported_interrupted_after_the_restart() {
    let _g = Guard::new(30 * SEC);
    let mut rig = Rig::start(with_script("long", "echo $$ > PIDFILE; exec sleep 30", ""));
    rig.ask("write", "k1", json!("long"));
    let run_id = rig.answer("k1", 10 * SEC).0["data"]["run_id"].as_str().unwrap().to_string();
    // The shell creates the file before it writes the pid into it: wait for the whole line,
    // not for the file (read between the two, it was empty now and then).
    let pid_file = rig.dir.path().join("pid");
    wait_until(10 * SEC, "the command's pid", || fs::read_to_string(&pid_file).is_ok_and(|t| t.ends_with('\n')));
    let child = rig.child.as_mut().unwrap();
    signal(child, Signal::KILL);
    child.wait().unwrap();
    // The orphaned command is not ours to keep.
    let pid: i32 = fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    let _ = rustix::process::kill_process(rustix::process::Pid::from_raw(pid).unwrap(), Signal::KILL);
    rig.spawn();
    let r = rig.result(10 * SEC);
    assert_eq!(r["run_id"], run_id.as_str());
    assert_eq!((r["act_code"].as_str(), r["client_id"].as_str()), (Some("k1"), Some("c-42")));
    assert_eq!(r["data"]["interrupted"], true, "{r}");
    assert_eq!(r["data"]["action"], "long");
    let log = rig.stop();
    assert!(log.contains("was cut short by an agent restart"), "{log}");
}

#[test]
fn a_timeout_kills_the_group_and_answers_within_timeout_plus_one_second_despite_a_grandchild_on_stdout() {
    let _g = Guard::new(30 * SEC);
    // The grandchild inherits stdout and would hold the pipe open for 30 s.
    let mut rig =
        Rig::start(with_script("hang", "sleep 30 & echo $! > PIDFILE; echo started; wait", "timeout = \"500ms\"\n"));
    let asked = Instant::now();
    rig.ask("post", "t1", json!("hang"));
    let (a, at) = rig.answer("t1", 10 * SEC);
    assert!(at - asked < ms(1500), "answered after {:?}", at - asked);
    let d = &a["data"];
    assert_eq!(d["timed_out"], true, "{a}");
    assert_eq!(d["exit_code"], Value::Null);
    assert_eq!(d["stdout"], "started\n");
    let pid: i32 = fs::read_to_string(rig.dir.path().join("pid")).unwrap().trim().parse().unwrap();
    // The group's SIGKILL goes out before the answer, but a killed process leaves /proc only
    // once the kernel has run its exit, which on a busy machine can come after the answer
    // arrived: wait for it, bounded far below the grandchild's own 30 s.
    wait_until(5 * SEC, "the grandchild to be gone after the timeout", || !alive(pid));
    let log = rig.stop();
    assert!(log.contains("outcome=timed out after"), "{log}");
}

#[test]
fn output_over_the_cap_keeps_the_last_64_kib_of_each_stream_and_says_truncated() {
    let _g = Guard::new(30 * SEC);
    let mut rig = Rig::start(with_script(
        "chatty",
        "head -c 300000 /dev/zero | tr '\\0' a; echo END; head -c 70000 /dev/zero >&2",
        "",
    ));
    rig.ask("post", "o1", json!("chatty"));
    let (a, _) = rig.answer("o1", 10 * SEC);
    let d = &a["data"];
    assert_eq!(d["truncated"], true);
    let out = d["stdout"].as_str().unwrap();
    assert_eq!(out.len(), 65536);
    assert!(out.ends_with("aaaEND\n"));
    assert_eq!(d["stderr"].as_str().unwrap().len(), 65536);
}

#[test]
fn an_action_already_running_and_a_fifth_concurrent_run_are_refused_with_code_5() {
    let _g = Guard::new(30 * SEC);
    let mut rig = Rig::start(|d| {
        let s = script(d, "wait", "sleep 2");
        let list: String = (1..=5).map(|i| format!("[actions.a{i}]\ncommand = [{s:?}]\n")).collect();
        enabled(&list)
    });
    rig.ask("write", "b1", json!("a1"));
    assert_eq!(rig.answer("b1", 10 * SEC).0["code"], 0);
    rig.ask("post", "b2", json!("a1"));
    let (a, _) = rig.answer("b2", 10 * SEC);
    assert_eq!(a["code"], 5, "{a}");
    assert!(a["description"].as_str().unwrap().contains("already running"), "{a}");
    assert!(a.get("data").is_none());
    for i in 2..=4 {
        rig.ask("write", &format!("b{i}x"), json!(format!("a{i}")));
        assert_eq!(rig.answer(&format!("b{i}x"), 10 * SEC).0["code"], 0);
    }
    rig.ask("write", "b5", json!("a5"));
    let (a, _) = rig.answer("b5", 10 * SEC);
    assert_eq!(a["code"], 5, "{a}");
    assert!(a["description"].as_str().unwrap().contains("4 actions are already running"), "{a}");
    // Once they end, it runs.
    for _ in 0..4 {
        rig.result(10 * SEC);
    }
    rig.ask("write", "b6", json!("a5"));
    assert_eq!(rig.answer("b6", 10 * SEC).0["code"], 0);
}

#[test]
fn an_action_asked_again_within_min_interval_is_refused_with_code_5_even_after_a_restart() {
    let _g = Guard::new(30 * SEC);
    let mut rig = Rig::start(|_| enabled("[actions.reboot]\ncommand = [\"/bin/true\"]\nmin_interval = \"1h\"\n"));
    rig.ask("post", "m1", json!("reboot"));
    assert_eq!(rig.answer("m1", 10 * SEC).0["code"], 0);
    rig.ask("post", "m2", json!("reboot"));
    let (a, _) = rig.answer("m2", 10 * SEC);
    assert_eq!(a["code"], 5);
    let why = a["description"].as_str().unwrap();
    assert!(why.contains("min_interval is 1h") && why.contains("try again in"), "{why}");
    // As after the reboot it asked for: the agent starts afresh and still refuses.
    rig.stop();
    rig.spawn();
    rig.ask("post", "m3", json!("reboot"));
    assert_eq!(rig.answer("m3", 10 * SEC).0["code"], 5);
}

#[test]
fn with_actions_disabled_every_action_is_refused_with_code_4_and_none_is_listed() {
    let _g = Guard::new(30 * SEC);
    let mut rig = Rig::start(|d| {
        let marker = d.join("ran").display().to_string();
        let s = script(d, "touch", &format!("touch {marker:?}"));
        format!("[actions]\n[actions.touch]\ncommand = [{s:?}]\n")
    });
    rig.ask("post", "d1", json!("touch"));
    let (a, _) = rig.answer("d1", 10 * SEC);
    assert_eq!(a["code"], 4);
    assert!(a["description"].as_str().unwrap().contains("disabled"), "{a}");
    assert_eq!(rig.gw.agent_info(rig.conn)["actions"], json!([]));
    assert!(!rig.dir.path().join("ran").exists());
}

#[test]
fn an_action_not_in_the_allow_list_is_refused_with_code_4_and_the_allowed_ones_are_listed() {
    let _g = Guard::new(30 * SEC);
    let mut rig = Rig::start(|_| {
        enabled("[actions.reboot]\ncommand = [\"/bin/true\"]\n[actions.restart_miner]\ncommand = [\"/bin/true\"]\n")
    });
    rig.ask("post", "u1", json!("format_disks"));
    let (a, _) = rig.answer("u1", 10 * SEC);
    assert_eq!(a["code"], 4);
    assert!(a["description"].as_str().unwrap().contains("not in this rig's allow-list"), "{a}");
    let info = rig.gw.agent_info(rig.conn);
    assert_eq!(info["actions"], json!(["reboot", "restart_miner"]));
    assert!(!info.to_string().contains("/bin/true"), "commands are never listed");
}

#[test]
fn heartbeats_keep_their_schedule_during_a_long_action() {
    let _g = Guard::new(30 * SEC);
    let mut rig = Rig::start(|_| enabled("[actions.long]\ncommand = [\"/bin/sleep\", \"3\"]\n"));
    rig.ask("post", "h1", json!("long"));
    let mut beats = Vec::new();
    let answered = loop {
        match rig.gw.next_event(10 * SEC).expect("events") {
            e @ Event::Received { .. } if e.act() == Some("heartbeat") => beats.push(e.at()),
            Event::Received { msg, at, .. } if msg["act_code"] == "h1" => break at,
            _ => {}
        }
    };
    assert!(!rig.gw.dropped(rig.conn));
    // 3 s at 200 ms: about 15 heartbeats, none late by more than an interval.
    assert!(beats.len() >= 12, "{} heartbeats during a 3 s action", beats.len());
    let worst = beats.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(worst < ms(400), "a heartbeat came {worst:?} after the previous one");
    assert!(answered - beats[0] >= ms(2500));
}

#[test]
fn hostile_action_values_are_refused_and_logged_escaped_and_capped() {
    let _g = Guard::new(30 * SEC);
    let mut rig = Rig::start(|_| enabled("[actions.reboot]\ncommand = [\"/bin/true\"]\n"));
    let huge = format!("../../bin/sh\n\u{1b}[31mFAKE LOG LINE {}", "x".repeat(200_000));
    let cases = [
        ("x1", json!(huge), 4),
        ("x2", json!("/usr/bin/systemctl"), 4),
        ("x3", json!("reboot\u{0}"), 4),
        ("x4", json!("../reboot"), 4),
        ("x5", json!({"command": ["/bin/sh"]}), 2),
        ("x6", json!(null), 2),
    ];
    for (code, action, _) in &cases {
        rig.ask("post", code, action.clone());
    }
    for (code, _, want) in &cases {
        let (a, _) = rig.answer(code, 10 * SEC);
        assert_eq!(a["code"], *want, "{a}");
        assert!(a["description"].as_str().unwrap().len() < 300, "the answer echoes the whole value");
    }
    // A bad reqtype is a bad request, not a run.
    rig.gw.send_json(rig.conn, json!({"act":"run_action","reqtype":"get","act_code":"x7","action":"reboot"}));
    assert_eq!(rig.answer("x7", 10 * SEC).0["code"], 2);
    let log = rig.stop();
    assert!(!log.contains("FAKE LOG LINE\n") && !log.contains('\u{1b}'), "raw control characters logged");
    assert!(log.lines().all(|l| l.len() < 2000), "a log line is not capped");
    let refused: Vec<&str> = log.lines().filter(|l| l.contains("outcome=refused")).collect();
    assert_eq!(refused.len(), 7, "{log}");
    assert!(refused[0].contains("\\x1b[31mFAKE LOG LINE"), "{}", refused[0]);
    assert!(!rig.dir.path().join("state/actions").exists(), "nothing ran, nothing was written");
}

/// The capability sets of a `/proc/PID/status`, e.g. ("CapAmb", "0000000000200000").
fn caps(status: &str) -> Vec<(String, String)> {
    status
        .lines()
        .filter(|l| l.starts_with("Cap"))
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.to_string(), v.trim().to_string())))
        .collect()
}

#[test]
fn an_action_runs_without_the_capabilities_the_agent_was_started_with() {
    let _g = Guard::new(30 * SEC);
    let Some(nobody) = nobody::Nobody::new() else { return };
    let mut rig = Rig::configure(|_| enabled("[actions.caps]\ncommand = [\"/bin/cat\", \"/proc/self/status\"]\n"));
    rig.spawn_unprivileged(&nobody);
    // Started with CAP_SYS_RAWIO and CAP_SYS_ADMIN ambient (as the old single unit ran it):
    // the agent drops them at start, and what it runs must not have them either.
    let pid = rig.child.as_ref().unwrap().id();
    let agent = caps(&fs::read_to_string(format!("/proc/{pid}/status")).unwrap());
    for set in ["CapAmb", "CapEff", "CapPrm"] {
        let v = &agent.iter().find(|(k, _)| k == set).unwrap().1;
        assert_eq!(v, "0000000000000000", "{set} of the agent");
    }
    rig.ask("post", "c1", json!("caps"));
    let (a, _) = rig.answer("c1", 10 * SEC);
    let child = caps(a["data"]["stdout"].as_str().expect("stdout"));
    assert!(child.iter().any(|(k, _)| k == "CapAmb"), "{a}");
    for (set, value) in child.iter().filter(|(k, _)| k != "CapBnd") {
        assert_eq!(value, "0000000000000000", "{set} of the action");
    }
}

#[test]
fn an_action_asked_again_as_soon_as_its_answer_arrives_runs_again() {
    let _g = Guard::new(30 * SEC);
    let mut rig = Rig::start(|_| enabled("[actions.t]\ncommand = [\"/bin/true\"]\n"));
    // An answer sent before the run is marked over would have a quick second ask refused
    // as "already running" now and then.
    for i in 0..200 {
        let code = format!("r{i}");
        rig.ask("post", &code, json!("t"));
        let (a, _) = rig.answer(&code, 10 * SEC);
        assert_eq!(a["code"], 0, "run {i}: {a}");
    }
}

#[test]
fn with_the_state_filesystem_read_only_an_action_with_a_min_interval_is_refused_not_run_even_after_kill_9() {
    let _g = Guard::new(60 * SEC);
    if !root() {
        return;
    }
    // `reboot` appends a line to `ran` (outside the state directory) each time it runs.
    let mut rig = Rig::configure(|d| {
        let ran = d.join("ran").display().to_string();
        let reboot = script(d, "reboot", &format!("echo run >> {ran:?}"));
        let hello = script(d, "hello", "echo hello");
        enabled(&format!(
            "[actions.reboot]\ncommand = [{reboot:?}]\nmin_interval = \"10m\"\n[actions.hello]\ncommand = [{hello:?}]\n"
        ))
    });
    let state = storage::LoopFs::state(rig.dir.path());
    let ran = rig.dir.path().join("ran");
    let runs = || fs::read_to_string(&ran).map(|t| t.lines().count()).unwrap_or(0);
    rig.spawn();
    // The SD card fails: ext4 remounts it read-only (errors=remount-ro).
    state.remount("ro");
    for (mode, code) in [("post", "r1"), ("write", "r2")] {
        rig.ask(mode, code, json!("reboot"));
        let (a, _) = rig.answer(code, 10 * SEC);
        assert_eq!(a["code"], 5, "{a}");
        let why = a["description"].as_str().unwrap();
        assert!(why.contains("state directory is not writable") && why.contains("min_interval of 10m"), "{why}");
    }
    assert_eq!(runs(), 0, "the reboot ran although its start could not be recorded");
    // An action without a min_interval needs no record: it runs.
    rig.ask("post", "h1", json!("hello"));
    assert_eq!(rig.answer("h1", 10 * SEC).0["data"]["stdout"], "hello\n");
    // A restart (kill -9, as a crash or the reboot itself) changes nothing.
    let child = rig.child.as_mut().unwrap();
    signal(child, Signal::KILL);
    child.wait().unwrap();
    rig.spawn();
    rig.ask("post", "r3", json!("reboot"));
    assert_eq!(rig.answer("r3", 10 * SEC).0["code"], 5);
    assert_eq!(runs(), 0);

    // Writable again: it runs once, and its start holds across kill -9 and a restart.
    state.remount("rw");
    rig.ask("post", "r4", json!("reboot"));
    assert_eq!(rig.answer("r4", 10 * SEC).0["code"], 0);
    assert_eq!(runs(), 1);
    let child = rig.child.as_mut().unwrap();
    signal(child, Signal::KILL);
    child.wait().unwrap();
    rig.spawn();
    rig.ask("post", "r5", json!("reboot"));
    let (a, _) = rig.answer("r5", 10 * SEC);
    assert_eq!(a["code"], 5, "{a}");
    assert!(a["description"].as_str().unwrap().contains("try again in"), "{a}");
    assert_eq!(runs(), 1, "ran again at once after the restart");
    let log = rig.stop();
    drop(state);
    assert!(log.lines().filter(|l| l.contains("outcome=refused")).count() >= 1, "{log}");
}

fn pids_in(file: &Path) -> Vec<i32> {
    fs::read_to_string(file).unwrap_or_default().lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// One write run while the state disk stalls for longer than the 5 s the run waits for its
/// result to be durable, then a restart: the result is sent and acknowledged once the disk is
/// back, and not reported again after the restart.
#[test]
fn a_write_result_spooled_slowly_and_acknowledged_is_not_reported_again_after_a_restart() {
    let _g = Guard::new(120 * SEC);
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let mut cfg = AgentConfig::new(gw.url(), &pki.ca_file);
    let cmd = script(dir.path(), "slow", "sleep 1; echo done");
    cfg.sections = format!("[actions]\nenabled = true\n[actions.slow]\ncommand = [{cmd:?}]\n");
    let config = cfg.write(dir.path());
    let state = storage::LoopFs::state(dir.path());
    let mut child = spawn_agent(&config, &[]);
    let (conn, _) = gw.wait_login(10 * SEC);
    gw.send_json(
        conn,
        json!({"from":"html","act":"run_action","reqtype":"write","act_code":"w1","client_id":"c","action":"slow"}),
    );
    gw.wait_for(10 * SEC, "write answer", |e| matches!(e, Event::Received { msg, .. } if msg["act_code"] == "w1"));
    // The marker is on disk (written before the answer); the stall starts now.
    state.freeze();
    gw.soak(9 * SEC);
    state.thaw();
    // The result goes out and the gateway acknowledges it (Script::warning_ack = Some(0)).
    gw.soak(3 * SEC);
    let results = |gw: &Gateway| -> Vec<Value> {
        gw.seen
            .iter()
            .filter_map(|e| match e {
                Event::Received { msg, .. } if msg["act"] == "action_result" => Some(msg.clone()),
                _ => None,
            })
            .collect()
    };
    let first = results(&gw);
    assert!(first.len() == 1 && first[0]["data"]["interrupted"] == false, "{first:#?}");
    let markers: Vec<String> = fs::read_dir(state.mnt.join("actions"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("run-"))
        .collect();
    let (_, log1) = stop_agent(&mut child);
    // The agent comes back (a restart, a reboot): the run was reported and acknowledged.
    let mut child = spawn_agent(&config, &[]);
    gw.wait_login(10 * SEC);
    gw.soak(3 * SEC);
    let (_, log2) = stop_agent(&mut child);
    let all = results(&gw);
    assert_eq!(
        all.len(),
        1,
        "one run, one result; markers left after the ack: {markers:?}\nresults: {all:#?}\nfirst log:\n{log1}\nsecond log:\n{log2}"
    );
    drop(state);
}

/// The last start of an action with a min_interval, recorded by a clock that was ahead (10
/// days): once the interval has passed since this agent started, the action runs.
#[test]
fn a_start_time_recorded_with_a_clock_that_was_ahead_does_not_lock_the_action_out() {
    let _g = Guard::new(60 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let mut cfg = AgentConfig::new(gw.url(), &pki.ca_file);
    let cmd = script(dir.path(), "tick", "echo ok");
    cfg.sections = format!("[actions]\nenabled = true\n[actions.tick]\ncommand = [{cmd:?}]\nmin_interval = \"2s\"\n");
    let config = cfg.write(dir.path());
    // The last start, as an agent wrote it 10 days "from now" by a clock that was wrong.
    let ahead = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
        + 10 * 24 * 3600 * 1000;
    fs::create_dir_all(dir.path().join("state/actions")).unwrap();
    fs::write(dir.path().join("state/actions/last-tick"), ahead.to_string()).unwrap();
    let mut child = spawn_agent(&config, &[]);
    let (conn, _) = gw.wait_login(10 * SEC);
    // Well past min_interval since this agent started.
    std::thread::sleep(3 * SEC);
    gw.send_json(
        conn,
        json!({"from":"html","act":"run_action","reqtype":"post","act_code":"p2","client_id":"c","action":"tick"}),
    );
    let a = match gw.wait_for(
        10 * SEC,
        "answer",
        |e| matches!(e, Event::Received { msg, .. } if msg["act_code"] == "p2"),
    ) {
        Event::Received { msg, .. } => msg,
        _ => unreachable!(),
    };
    let _ = stop_agent(&mut child);
    assert_eq!(a["code"], 0, "min_interval is 2s and the action is refused: {a}");
}

/// A gateway that never acknowledges results: write runs stop being accepted once their
/// unacknowledged results fill the outbox, which never grows past its cap.
#[test]
fn write_runs_are_refused_once_unacknowledged_results_fill_the_outbox() {
    let _g = Guard::new(60 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script { warning_ack: None, ..Script::default() });
    let mut cfg = AgentConfig::new(gw.url(), &pki.ca_file);
    let cmd = script(dir.path(), "quick", "echo ok");
    cfg.sections = format!("[actions]\nenabled = true\n[actions.quick]\ncommand = [{cmd:?}]\n");
    let config = cfg.write(dir.path());
    let cap = 5;
    let outbox = rig_agent::outbox::spool::Options {
        limits: rig_agent::outbox::spool::Limits { max_entries: cap, max_bytes: 16 << 20 },
        ..Default::default()
    };
    let _agent = Agent::with_outbox(&config, outbox);
    let (conn, _) = gw.wait_login(10 * SEC);
    for i in 0..4 * cap {
        let code = format!("w{i}");
        gw.send_json(
            conn,
            json!({"from":"html","act":"run_action","reqtype":"write","act_code":code,"client_id":"c","action":"quick"}),
        );
        gw.wait_for(10 * SEC, "answer", |e| matches!(e, Event::Received { msg, .. } if msg["act_code"] == code));
        // The run ends before the next request ("already running" is not the point here).
        std::thread::sleep(ms(300));
    }
    gw.soak(2 * SEC);
    let spooled = fs::read_dir(dir.path().join("state/spool")).unwrap().count();
    assert!(spooled <= cap, "{spooled} messages in an outbox capped at {cap}");
}

#[test]
fn forty_runs_of_a_command_that_leaves_a_detached_grandchild_on_stdout_leave_the_thread_count_flat_and_no_grandchild() {
    let _g = Guard::new(60 * SEC);
    // setsid takes the sleep out of the command's process group; it inherits stdout and
    // would hold the pipe for 30 s.
    let mut rig = Rig::start(with_script("detach", "setsid sleep 30 & echo $! >> PIDFILE; echo started", ""));
    let agent = rig.child.as_ref().unwrap().id();
    let run = |rig: &mut Rig, code: &str| {
        rig.ask("post", code, json!("detach"));
        let (a, _) = rig.answer(code, 10 * SEC);
        assert_eq!((a["code"].as_i64(), a["data"]["stdout"].as_str()), (Some(0), Some("started\n")), "{a}");
    };
    run(&mut rig, "warm");
    let before = threads_and_fds(agent).0;
    for i in 0..40 {
        run(&mut rig, &format!("d{i}"));
    }
    // The last run's own thread may still be ending.
    let mut after = threads_and_fds(agent).0;
    let until = Instant::now() + 2 * SEC;
    while after > before && Instant::now() < until {
        std::thread::sleep(ms(20));
        after = threads_and_fds(agent).0;
    }
    assert!(after <= before, "{before} threads before 40 runs, {after} after");
    let pids = pids_in(&rig.dir.path().join("pid"));
    assert_eq!(pids.len(), 41);
    wait_until(5 * SEC, "the detached grandchildren to be gone", || pids.iter().all(|p| !alive(*p)));
}

#[test]
fn a_detached_grandchild_is_gone_after_the_timeout() {
    let _g = Guard::new(60 * SEC);
    let mut rig = Rig::start(with_script(
        "hang",
        "setsid sleep 30 & echo $! > PIDFILE; echo started; sleep 30",
        "timeout = \"300ms\"\n",
    ));
    rig.ask("post", "t1", json!("hang"));
    let (a, _) = rig.answer("t1", 10 * SEC);
    assert_eq!(a["data"]["timed_out"], true, "{a}");
    let grandchild = pids_in(&rig.dir.path().join("pid"))[0];
    wait_until(5 * SEC, "the grandchild to be gone after the timeout", || !alive(grandchild));
}

#[test]
fn a_detached_grandchild_is_gone_after_the_agents_stop() {
    let _g = Guard::new(60 * SEC);
    let mut rig = Rig::start(with_script("long", "setsid sleep 30 & echo $! > PIDFILE; sleep 30", ""));
    rig.ask("write", "t2", json!("long"));
    assert_eq!(rig.answer("t2", 10 * SEC).0["code"], 0);
    let pidfile = rig.dir.path().join("pid");
    wait_until(5 * SEC, "the command to start", || !pids_in(&pidfile).is_empty());
    let grandchild = pids_in(&pidfile)[0];
    assert!(alive(grandchild));
    rig.stop();
    // Killed before the agent exits; gone once the kernel has run its exit (see above).
    wait_until(5 * SEC, "the grandchild to be gone after the agent's stop", || !alive(grandchild));
}

#[test]
fn what_a_running_command_left_outside_its_group_lives_until_that_command_ends_not_another() {
    let _g = Guard::new(60 * SEC);
    let mut rig = Rig::start(|d| {
        let pidfile = d.join("pid").display().to_string();
        // The subshell exits at once: its detached sleep is handed to the agent while the
        // command itself still runs.
        let keeper = script(d, "keeper", &format!("(setsid sleep 30 & echo $! > {pidfile:?}); sleep 30"));
        enabled(&format!(
            "[actions.keeper]\ncommand = [{keeper:?}]\ntimeout = \"2s\"\n[actions.quick]\ncommand = [\"/bin/true\"]\n"
        ))
    });
    rig.ask("write", "k1", json!("keeper"));
    assert_eq!(rig.answer("k1", 10 * SEC).0["code"], 0);
    let pidfile = rig.dir.path().join("pid");
    wait_until(5 * SEC, "the keeper to start", || !pids_in(&pidfile).is_empty());
    let orphan = pids_in(&pidfile)[0];
    // Another command ends meanwhile: what it left (nothing) goes, the keeper's stays.
    rig.ask("post", "q1", json!("quick"));
    assert_eq!(rig.answer("q1", 10 * SEC).0["code"], 0);
    std::thread::sleep(ms(300));
    assert!(alive(orphan), "killed at the end of a run it does not belong to");
    // The keeper's timeout ends it, and what it left with it.
    assert_eq!(rig.result(10 * SEC)["data"]["timed_out"], true);
    wait_until(5 * SEC, "the keeper's orphan to be gone", || !alive(orphan));
}
