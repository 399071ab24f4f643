//! The agent updates itself from the console (PROTOCOL.md §9), end to end with the real
//! binary, a real TLS gateway and a real HTTPS (or HTTP) server in the test process, and a
//! second version of the agent made by patching the version slot of a copy of the binary
//! under test and signing it with a key made per run by Debian's `minisign`. No systemd:
//! the test plays the supervisor where one is needed (starting the agent again after a
//! `kill -9`).

mod common;
#[path = "common/file_server.rs"]
mod file_server;
#[path = "common/release.rs"]
mod release;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{AgentConfig, Gateway, Guard, Pki, Reaped, SEC, Script, Signal, signal, spawn_agent, take_log};
use file_server::{FileServer, Serve};
use release::Key;
use serde_json::{Value, json};

/// A rig with updates on, logged in, and a signed 0.2.0 of itself ready to serve.
struct Rig {
    gw: Gateway,
    child: Reaped,
    conn: usize,
    config: PathBuf,
    update_dir: PathBuf,
    key: Key,
    build: PathBuf,
    signature: String,
    pki: Pki,
    dir: tempfile::TempDir,
}

const FROM: &str = env!("CARGO_PKG_VERSION");

impl Rig {
    fn start(confirm_after: &str, confirm_within: &str, extra: &str) -> Rig {
        Rig::start_with_env(confirm_after, confirm_within, extra, &[])
    }

    /// As [`Rig::start`], the agent started with `envs` added to its environment.
    fn start_with_env(confirm_after: &str, confirm_within: &str, extra: &str, envs: &[(&str, &str)]) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(&["localhost"]);
        let mut gw = Gateway::start(&pki, Script::default());
        let key = Key::new(dir.path(), "op");
        let update_dir = dir.path().join("update");
        fs::create_dir(&update_dir).unwrap();
        let mut cfg = AgentConfig::new(gw.url(), &pki.ca_file);
        cfg.paths_extra = format!("update_dir = {:?}\n", update_dir.display().to_string());
        // The build offered is this test's debug binary, far larger than a release one:
        // the cap is raised to take it (its refusal is tested with an offer over it).
        cfg.sections = format!(
            "\n[update]\nenabled = true\nkeys = [{:?}]\nconfirm_after = \"{confirm_after}\"\nconfirm_within = \"{confirm_within}\"\nmax_bytes = 1073741824\n{extra}",
            key.public
        );
        let config = cfg.write(dir.path());
        let build =
            release::patched(Path::new(env!("CARGO_BIN_EXE_rig-agent")), &dir.path().join("rig-agent-0.2.0"), "0.2.0");
        let signature = key.sign(&build, &release::comment("0.2.0"));
        let child = spawn_agent(&config, envs);
        let (conn, login) = gw.wait_login(10 * SEC);
        assert_eq!(login["version"], format!("rig-agent {FROM}"));
        Rig { gw, child, conn, config, update_dir, key, build, signature, pki, dir }
    }

    /// Makes the signed 0.2.0 a script that passes the smoke test (says its version,
    /// accepts the config) and otherwise runs `then`.
    fn use_script(&mut self, then: &str) {
        let body = format!(
            "case \"$1\" in --version) echo 'rig-agent 0.2.0'; exit 0;; esac\n[ \"$3\" = check ] && exit 0\n{then}"
        );
        self.build = release::script_build(&self.dir.path().join("script-0.2.0"), &body);
        self.signature = self.key.sign(&self.build, &release::comment("0.2.0"));
    }

    fn serve(&self, serve: Serve) -> FileServer {
        FileServer::start(Some(self.pki.server_config()), fs::read(&self.build).unwrap(), serve)
    }

    /// The offer of `build` at `url`, as the console sends it.
    fn offer(&self, url: &str, change: impl FnOnce(&mut Value)) -> Value {
        let mut v = json!({"from":"html","act":"update_agent","reqtype":"write","act_code":"u1","client_id":"c-42",
            "version":"0.2.0","target":rig_agent::TARGET,"url":url,
            "size":fs::metadata(&self.build).unwrap().len(),"sha256":release::sha256_hex(&self.build),
            "signature":self.signature});
        change(&mut v);
        v
    }

    /// Sends an offer and returns its answer.
    fn ask(&mut self, offer: Value) -> Value {
        self.gw.send_json(self.conn, offer);
        self.gw.wait_act(10 * SEC, "update_agent").1
    }

    /// The next login (the agent started again), whose connection offers go to from now on.
    fn relogin(&mut self, within: Duration) -> Value {
        let (conn, login) = self.gw.wait_login(within);
        self.conn = conn;
        login
    }

    fn result(&mut self, within: Duration) -> Value {
        self.gw.wait_act(within, "update_result").1
    }

    fn state(&self) -> Value {
        serde_json::from_slice(&fs::read(self.update_dir.join("state.json")).unwrap_or_default()).unwrap_or(Value::Null)
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        // The watcher passes SIGTERM on to a build on trial; then whatever is left goes.
        kill_tree(self.child.id());
        // Shown only when the test fails.
        eprintln!("agent log:\n{}", take_log(&mut self.child));
    }
}

/// SIGKILLs `pid` and every process below it.
fn kill_tree(pid: u32) {
    let children = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    for c in children.split_whitespace().filter_map(|c| c.parse().ok()) {
        kill_tree(c);
    }
    if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(p, Signal::KILL);
    }
}

#[test]
fn an_update_signed_by_the_rigs_key_is_installed_and_reported_installed_by_the_new_version() {
    let _g = Guard::new(90 * SEC);
    let mut rig = Rig::start("1s", "30s", "");
    let server = rig.serve(Serve::Whole);
    let offered = Instant::now();
    let answer = rig.ask(rig.offer(&server.url, |_| {}));
    assert_eq!(answer["code"], 0, "{answer}");
    let update_id = answer["data"]["update_id"].as_str().unwrap().to_string();
    assert_eq!(
        (answer["data"]["from_version"].as_str(), answer["data"]["to_version"].as_str()),
        (Some(FROM), Some("0.2.0"))
    );
    let login = rig.relogin(60 * SEC);
    assert_eq!(login["version"], "rig-agent 0.2.0", "the new build logged in");
    let result = rig.result(30 * SEC);
    eprintln!("offer to installed: {:?}", offered.elapsed());
    assert_eq!(result["act_id"], update_id.as_str());
    assert_eq!(result["update_id"], update_id.as_str());
    assert_eq!(result["act_code"], "u1");
    assert_eq!(result["client_id"], "c-42");
    assert_eq!(result["data"]["outcome"], "installed", "{result}");
    assert_eq!(result["data"]["from_version"], FROM);
    assert_eq!(result["data"]["to_version"], "0.2.0");
    let st = rig.state();
    assert_eq!(st["newest"], "0.2.0");
    assert!(st["trial"].is_null());
    assert_eq!(st["current"]["version"], "0.2.0");
    // Reported once: nothing more comes for it.
    rig.gw.soak(2 * SEC);
    let again = rig.gw.seen.iter().filter(|e| e.act() == Some("update_result")).count();
    assert_eq!(again, 1, "one update_result");
    // The same offer again is now a downgrade-or-replay.
    let answer = rig.ask(rig.offer(&server.url, |_| {}));
    assert_eq!(answer["code"], 6, "{answer}");
}

#[test]
fn offers_are_answered_at_once_with_codes_2_4_5_and_6_and_no_download() {
    let _g = Guard::new(60 * SEC);
    let mut rig = Rig::start("1s", "30s", "");
    let server = rig.serve(Serve::Trickle(Duration::from_millis(200)));
    let cases: Vec<(Value, i64)> = vec![
        (rig.offer(&server.url, |v| v["reqtype"] = json!("post")), 2),
        (rig.offer(&server.url, |v| drop(v.as_object_mut().unwrap().remove("sha256"))), 2),
        (rig.offer(&server.url, |v| v["size"] = json!("big")), 2),
        (rig.offer(&server.url, |v| v["target"] = json!("aarch64-unknown-linux-musl")), 6),
        (rig.offer(&server.url, |v| v["version"] = json!(FROM)), 6),
        (rig.offer(&server.url, |v| v["version"] = json!("0.0.1")), 6),
        (rig.offer(&server.url, |v| v["size"] = json!(1u64 << 40)), 6),
        (rig.offer("ftp://localhost/x", |_| {}), 6),
    ];
    for (offer, code) in cases {
        let answer = rig.ask(offer.clone());
        assert_eq!(answer["code"], code, "{offer}: {answer}");
        assert!(answer.get("data").is_none());
    }
    assert!(server.requests().is_empty(), "nothing downloaded");
    // Two at once: the second is not now.
    assert_eq!(rig.ask(rig.offer(&server.url, |_| {}))["code"], 0);
    let second = rig.ask(rig.offer(&server.url, |_| {}));
    assert_eq!(second["code"], 5, "{second}");
    // And no action starts while it runs.
    let action = json!({"from":"html","act":"run_action","reqtype":"post","action":"x","act_code":"a","client_id":"c"});
    rig.gw.send_json(rig.conn, action);
    let answer = rig.gw.wait_act(10 * SEC, "run_action").1;
    assert!(answer["code"] == 5 || answer["code"] == 4, "{answer}");
}

#[test]
fn a_flood_of_refused_offers_is_answered_every_time_and_logged_only_a_few_times() {
    let _g = Guard::new(60 * SEC);
    let mut rig = Rig::start("1s", "30s", "");
    let offer = rig.offer("https://localhost:1/x", |_| {});
    for n in 0..100 {
        let mut offer = offer.clone();
        offer["target"] = json!(format!("flood-{n}"));
        assert_eq!(rig.ask(offer)["code"], 6);
    }
    let log = take_log(&mut rig.child);
    let lines = log.lines().filter(|l| l.contains("update offer refused")).count();
    assert!((1..=20).contains(&lines), "{lines} lines for 100 refused offers");
}

#[test]
fn updates_off_is_code_4() {
    let _g = Guard::new(60 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let config = AgentConfig::new(gw.url(), &pki.ca_file).write(dir.path());
    let mut child = spawn_agent(&config, &[]);
    let (conn, _) = gw.wait_login(10 * SEC);
    gw.send_json(
        conn,
        json!({"act":"update_agent","reqtype":"write","act_code":"u","client_id":"c","version":"9.0.0"}),
    );
    let answer = gw.wait_act(10 * SEC, "update_agent").1;
    assert_eq!(answer["code"], 4, "{answer}");
    common::stop_agent(&mut child);
}

/// What a refused build leaves: the outcome, and the rig still on the old version.
fn assert_refused(rig: &mut Rig, offer: impl FnOnce(&Rig) -> Value, detail: &str) {
    let offer = offer(rig);
    let answer = rig.ask(offer);
    assert_eq!(answer["code"], 0, "{answer}");
    let result = rig.result(30 * SEC);
    assert_eq!(result["data"]["outcome"], "refused", "{result}");
    let said = result["data"]["detail"].as_str().unwrap();
    assert!(said.contains(detail), "detail {said:?} lacks {detail:?}");
    assert!(rig.state()["current"].is_null(), "nothing switched: {}", rig.state());
    let left: Vec<_> = fs::read_dir(&rig.update_dir).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(!left.iter().any(|n| n.to_string_lossy().starts_with("rig-agent")), "no build kept: {left:?}");
    assert!(!rig.gw.seen.iter().any(|e| e.act() == Some("start") && e.conn() != rig.conn), "no restart");
}

#[test]
fn a_build_not_signed_by_a_key_of_the_rig_or_not_what_was_signed_is_refused_and_never_run() {
    let _g = Guard::new(120 * SEC);
    let mut rig = Rig::start("1s", "30s", "");
    let server = rig.serve(Serve::Whole);
    // Signed by another key.
    let other = Key::new(rig.dir.path(), "other");
    let sig = other.sign(&rig.build, &release::comment("0.2.0"));
    assert_refused(&mut rig, |r| r.offer(&server.url, |v| v["signature"] = json!(sig)), "does not trust");
    // The rig's key, but another trusted comment (a build for another version replayed).
    let sig = rig.key.sign(&rig.build, &format!("version=0.1.9 target={}", rig_agent::TARGET));
    assert_refused(&mut rig, |r| r.offer(&server.url, |v| v["signature"] = json!(sig)), "trusted comment");
    // A legacy signature.
    let sig = rig.key.sign_legacy(&rig.build, &release::comment("0.2.0"));
    assert_refused(&mut rig, |r| r.offer(&server.url, |v| v["signature"] = json!(sig)), "legacy");
    // Not a signature.
    assert_refused(&mut rig, |r| r.offer(&server.url, |v| v["signature"] = json!("hello")), "not a minisign");
    // A tampered byte, with the hash of the tampered file: the hash matches, the signature not.
    let mut bytes = fs::read(&rig.build).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let tampered = rig.dir.path().join("tampered");
    fs::write(&tampered, &bytes).unwrap();
    let sha = release::sha256_hex(&tampered);
    server.body.lock().unwrap().clone_from(&bytes);
    assert_refused(&mut rig, |r| r.offer(&server.url, |v| v["sha256"] = json!(sha)), "bad signature");
    // The tampered file with the offer's original hash.
    assert_refused(&mut rig, |r| r.offer(&server.url, |_| {}), "sha256");
}

#[test]
fn a_download_that_fails_is_refused_and_the_plain_http_mirror_works_too() {
    let _g = Guard::new(120 * SEC);
    let mut rig = Rig::start("1s", "30s", "");
    let server = rig.serve(Serve::Status(404));
    assert_refused(&mut rig, |r| r.offer(&server.url, |_| {}), "404");
    server.set(Serve::CutAlways(1000));
    assert_refused(&mut rig, |r| r.offer(&server.url, |_| {}), "retries");
    // Plain HTTP, cut once and resumed: installed.
    let plain = FileServer::start(None, fs::read(&rig.build).unwrap(), Serve::CutOnce { at: 500_000, ranges: true });
    assert_eq!(rig.ask(rig.offer(&plain.url, |_| {}))["code"], 0);
    rig.relogin(60 * SEC);
    assert_eq!(rig.result(30 * SEC)["data"]["outcome"], "installed");
}

#[test]
fn a_new_version_that_keeps_exiting_is_rolled_back_reported_by_the_old_one_and_not_retried() {
    let _g = Guard::new(120 * SEC);
    let mut rig = Rig::start("1s", "60s", "");
    // Passes the smoke test (says its version, accepts the config), then exits at once.
    rig.use_script("exit 1");
    let server = rig.serve(Serve::Whole);
    let started = Instant::now();
    let answer = rig.ask(rig.offer(&server.url, |_| {}));
    assert_eq!(answer["code"], 0);
    let update_id = answer["data"]["update_id"].as_str().unwrap().to_string();
    let login = rig.relogin(60 * SEC);
    assert_eq!(login["version"], format!("rig-agent {FROM}"), "the old version is back");
    let result = rig.result(30 * SEC);
    assert_eq!(result["update_id"], update_id.as_str());
    assert_eq!(result["data"]["outcome"], "rolled_back", "{result}");
    assert!(result["data"]["detail"].as_str().unwrap().contains("started 3 times"), "{result}");
    assert!(started.elapsed() < 60 * SEC);
    let st = rig.state();
    assert_eq!(st["bad"], json!(["0.2.0"]));
    assert!(st["current"].is_null());
    assert!(!rig.update_dir.join("rig-agent-0.2.0").exists(), "the rolled-back build is not kept");
    // Offered again: not retried.
    let again = rig.ask(rig.offer(&server.url, |_| {}));
    assert_eq!(again["code"], 6, "{again}");
}

#[test]
fn a_new_version_that_never_logs_in_is_rolled_back_within_confirm_within() {
    let _g = Guard::new(120 * SEC);
    let mut rig = Rig::start("1s", "10s", "");
    // Passes the smoke test, then never connects.
    rig.use_script("exec sleep 1000");
    let server = rig.serve(Serve::Whole);
    let switched = Instant::now();
    assert_eq!(rig.ask(rig.offer(&server.url, |_| {}))["code"], 0);
    let login = rig.relogin(40 * SEC);
    assert_eq!(login["version"], format!("rig-agent {FROM}"));
    assert!(switched.elapsed() < 20 * SEC, "within confirm_within + 10 s: {:?}", switched.elapsed());
    let result = rig.result(30 * SEC);
    assert_eq!(result["data"]["outcome"], "rolled_back", "{result}");
    assert!(result["data"]["detail"].as_str().unwrap().contains("confirm_within"), "{result}");
}

/// `libfaketime`'s preload library, as the `faketime` command finds it.
fn libfaketime() -> String {
    let out =
        std::process::Command::new("faketime").args(["-f", "+0", "sh", "-c", "printf %s \"$LD_PRELOAD\""]).output();
    let path = String::from_utf8(out.expect("faketime (Debian's faketime package)").stdout).unwrap();
    assert!(path.contains("libfaketime"), "{path:?}");
    path
}

#[test]
fn a_wall_clock_set_forward_during_the_trial_does_not_roll_back_a_build_that_confirms() {
    let _g = Guard::new(120 * SEC);
    // The rig's wall clock reads a day behind (a board that booted without a battery-backed
    // clock, NTP not yet through); its monotonic clock is left alone. The file is read again
    // at every clock call, so the test sets the clock as NTP would, mid-run.
    let dir = tempfile::tempdir().unwrap();
    let clock = dir.path().join("faketime");
    fs::write(&clock, "-1d\n").unwrap();
    let preload = libfaketime();
    let clock_file = clock.display().to_string();
    let envs = [
        ("LD_PRELOAD", preload.as_str()),
        ("FAKETIME_TIMESTAMP_FILE", clock_file.as_str()),
        ("FAKETIME_NO_CACHE", "1"),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ];
    let mut rig = Rig::start_with_env("3s", "60s", "", &envs);
    let conn = rig.conn;
    let system = rig.gw.agent_info(conn)["clock"]["system_time"].as_u64().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(system + 12 * 3600 < now, "the agent's clock is a day behind: {system} at {now}");
    let server = rig.serve(Serve::Whole);
    assert_eq!(rig.ask(rig.offer(&server.url, |_| {}))["code"], 0);
    let login = rig.relogin(60 * SEC);
    assert_eq!(login["version"], "rig-agent 0.2.0");
    // NTP sets the clock: a day forward, well past the trial's end by the old reading.
    fs::write(&clock, "+0\n").unwrap();
    let result = rig.result(30 * SEC);
    assert_eq!(result["data"]["outcome"], "installed", "{result}");
    assert_eq!(rig.state()["current"]["version"], "0.2.0");
}

#[test]
fn a_kill_during_the_trial_then_a_restart_still_ends_installed_and_reported_once() {
    let _g = Guard::new(120 * SEC);
    let mut rig = Rig::start("3s", "60s", "");
    let server = rig.serve(Serve::Whole);
    assert_eq!(rig.ask(rig.offer(&server.url, |_| {}))["code"], 0);
    let login = rig.relogin(60 * SEC);
    assert_eq!(login["version"], "rig-agent 0.2.0");
    // Power cut before the confirmation: everything dies at once.
    kill_tree(rig.child.id());
    let _ = rig.child.wait();
    assert!(!rig.state()["trial"].is_null(), "still on trial");
    // The supervisor starts the unit's binary again: the trial goes on, and ends installed.
    rig.child = spawn_agent(&rig.config, &[]);
    let login = rig.relogin(60 * SEC);
    assert_eq!(login["version"], "rig-agent 0.2.0");
    let result = rig.result(30 * SEC);
    assert_eq!(result["data"]["outcome"], "installed", "{result}");
    assert_eq!(rig.state()["trial"], Value::Null);
    // Acknowledged (a kill before the ack is processed resends the same message, same
    // act_id, as the outbox does for every message).
    rig.gw.soak(SEC);
    // Killed and started again once confirmed: the new build runs at once, nothing is
    // reported twice.
    kill_tree(rig.child.id());
    let _ = rig.child.wait();
    rig.child = spawn_agent(&rig.config, &[]);
    let login = rig.relogin(30 * SEC);
    assert_eq!(login["version"], "rig-agent 0.2.0");
    rig.gw.soak(3 * SEC);
    let n = rig.gw.seen.iter().filter(|e| e.act() == Some("update_result")).count();
    let log = take_log(&mut rig.child);
    assert_eq!(
        n,
        1,
        "reported once: {:#?}\n{log}",
        rig.gw.seen.iter().filter(|e| e.act() == Some("update_result")).collect::<Vec<_>>()
    );
    assert!(!log.contains("rolled back"), "{log}");
    signal(&rig.child, Signal::TERM);
}

#[test]
fn a_fifo_in_place_of_the_update_lock_is_refused_at_once_and_the_agent_still_starts() {
    let _g = Guard::new(60 * SEC);
    let mut rig = Rig::start("1s", "60s", "");
    signal(&rig.child, Signal::TERM);
    common::wait_exit(&mut rig.child, 10 * SEC);
    rig_agent::update::state::save(&rig.update_dir, &Default::default()).unwrap();
    common::mkfifo(&rig.update_dir.join("lock"));
    rig.child = spawn_agent(&rig.config, &[]);
    let login = rig.relogin(10 * SEC);
    assert_eq!(login["version"], format!("rig-agent {FROM}"));
    signal(&rig.child, Signal::TERM);
    let log = common::wait_exit(&mut rig.child, 10 * SEC).2;
    assert!(log.contains("lock") && log.contains("FIFO"), "the log says what is wrong: {log}");
}

/// Installs 0.2.0, cuts the power, lets `damage` change the installed build, starts the
/// agent again and returns its log: the package's binary must be what runs.
fn installed_build_damaged(damage: impl FnOnce(&Path)) -> String {
    let mut rig = Rig::start("1s", "60s", "");
    let server = rig.serve(Serve::Whole);
    assert_eq!(rig.ask(rig.offer(&server.url, |_| {}))["code"], 0);
    rig.relogin(60 * SEC);
    assert_eq!(rig.result(30 * SEC)["data"]["outcome"], "installed");
    kill_tree(rig.child.id());
    let _ = rig.child.wait();
    let file = rig.update_dir.join("rig-agent-0.2.0");
    // (Once the killed build on trial, reparented, is gone: until then the file is busy.)
    common::wait_until(10 * SEC, "the killed build to be gone", || {
        fs::OpenOptions::new().write(true).open(&file).is_ok()
    });
    damage(&file);
    rig.child = spawn_agent(&rig.config, &[]);
    let login = rig.relogin(30 * SEC);
    assert_eq!(login["version"], format!("rig-agent {FROM}"), "the package's binary runs");
    signal(&rig.child, Signal::TERM);
    common::wait_exit(&mut rig.child, 10 * SEC).2
}

#[test]
fn a_torn_or_replaced_installed_build_is_never_run() {
    let _g = Guard::new(120 * SEC);
    // A power cut left the file half-written (or someone replaced it).
    let log = installed_build_damaged(|file| {
        let len = fs::metadata(file).unwrap().len();
        fs::OpenOptions::new().write(true).open(file).unwrap().set_len(len / 2).unwrap();
    });
    assert!(log.contains("is not run"), "{log}");
}

#[test]
fn a_fifo_in_place_of_the_installed_build_is_refused_at_once_and_the_packages_binary_runs() {
    let _g = Guard::new(120 * SEC);
    let log = installed_build_damaged(|file| {
        fs::remove_file(file).unwrap();
        common::mkfifo(file);
    });
    assert!(log.contains("is not run") && log.contains("not a regular file"), "{log}");
}

#[test]
fn an_update_stopped_or_killed_while_downloading_is_reported_failed_once_after_the_restart() {
    let _g = Guard::new(120 * SEC);
    let mut rig = Rig::start("1s", "30s", "");
    let server = rig.serve(Serve::Trickle(Duration::from_millis(100)));
    let answer = rig.ask(rig.offer(&server.url, |_| {}));
    let update_id = answer["data"]["update_id"].as_str().unwrap().to_string();
    common::wait_until(10 * SEC, "the download to start", || !server.requests().is_empty());
    // systemd's stop: the agent stops at once, and does not start itself again.
    signal(&rig.child, Signal::TERM);
    let (code, took, _) = common::wait_exit(&mut rig.child, 10 * SEC);
    assert_eq!(code, Some(0));
    assert!(took < 5 * SEC, "{took:?}");
    rig.child = spawn_agent(&rig.config, &[]);
    rig.relogin(10 * SEC);
    let result = rig.result(10 * SEC);
    assert_eq!(result["update_id"], update_id.as_str());
    assert_eq!(result["data"]["outcome"], "failed", "{result}");
    assert!(rig.state()["current"].is_null());
    // A second offer, killed -9 this time: the same.
    let answer = rig.ask(rig.offer(&server.url, |_| {}));
    let second = answer["data"]["update_id"].as_str().unwrap().to_string();
    common::wait_until(10 * SEC, "the download to start", || server.requests().len() >= 2);
    kill_tree(rig.child.id());
    let _ = rig.child.wait();
    rig.child = spawn_agent(&rig.config, &[]);
    rig.relogin(10 * SEC);
    let result = rig.result(10 * SEC);
    assert_eq!(
        (result["update_id"].as_str(), result["data"]["outcome"].as_str()),
        (Some(second.as_str()), Some("failed"))
    );
    // And once only, across one more restart.
    rig.gw.soak(SEC);
    signal(&rig.child, Signal::TERM);
    common::wait_exit(&mut rig.child, 10 * SEC);
    rig.child = spawn_agent(&rig.config, &[]);
    rig.relogin(10 * SEC);
    rig.gw.soak(2 * SEC);
    let results = rig.gw.seen.iter().filter(|e| e.act() == Some("update_result")).count();
    assert_eq!(results, 2, "one outcome each");
}

#[test]
fn a_stop_during_the_trial_stops_the_new_build_and_its_watcher() {
    let _g = Guard::new(90 * SEC);
    let mut rig = Rig::start("30s", "60s", "");
    let server = rig.serve(Serve::Whole);
    assert_eq!(rig.ask(rig.offer(&server.url, |_| {}))["code"], 0);
    assert_eq!(rig.relogin(60 * SEC)["version"], "rig-agent 0.2.0");
    let watcher = rig.child.id();
    let children = fs::read_to_string(format!("/proc/{watcher}/task/{watcher}/children")).unwrap();
    let new: i32 =
        children.split_whitespace().next().expect("the build on trial is the watcher's child").parse().unwrap();
    signal(&rig.child, Signal::TERM);
    let (code, took, _) = common::wait_exit(&mut rig.child, 15 * SEC);
    assert_eq!(code, Some(0), "the new build's own exit code");
    assert!(took < 10 * SEC, "{took:?}");
    assert!(!common::alive(new), "the build on trial is gone too");
    assert!(!rig.state()["trial"].is_null(), "a stop is not a failed start: the trial goes on at the next start");
}

#[test]
fn a_full_update_disk_fails_the_update_and_changes_nothing() {
    if !common::root() {
        return;
    }
    let _g = Guard::new(120 * SEC);
    let mut rig = Rig::start("1s", "30s", "");
    // The update directory on a filesystem too small for the build.
    let small = common::storage::LoopFs::new(rig.dir.path(), "upd", 4 << 20, &[]);
    common::storage::mount(&["--bind", &small.mnt.display().to_string(), &rig.update_dir.display().to_string()]);
    let _unmount = common::storage::Unmount(rig.update_dir.clone());
    let server = rig.serve(Serve::Whole);
    let answer = rig.ask(rig.offer(&server.url, |_| {}));
    assert_eq!(answer["code"], 0, "{answer}");
    let result = rig.result(30 * SEC);
    assert_eq!(result["data"]["outcome"], "failed", "{result}");
    assert!(result["data"]["detail"].as_str().unwrap().contains("No space left"), "{result}");
    assert!(rig.state()["current"].is_null() && rig.state()["trial"].is_null(), "no switch: {}", rig.state());
    let names: Vec<_> = fs::read_dir(&rig.update_dir).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(!names.iter().any(|n| n.to_string_lossy().contains("rig-agent")), "nothing left behind: {names:?}");
    // The agent goes on, on its version.
    assert!(!rig.gw.seen.iter().any(|e| e.act() == Some("start") && e.conn() != rig.conn));
}

#[test]
fn an_offer_on_a_read_only_state_directory_is_answered_3_and_nothing_is_downloaded() {
    if !common::root() {
        return;
    }
    let _g = Guard::new(60 * SEC);
    let mut rig = Rig::start("1s", "30s", "");
    // The state directory turns read-only under the running agent.
    let ro = common::storage::LoopFs::new(rig.dir.path(), "ro-state", 8 << 20, &[]);
    ro.remount("ro");
    let state = rig.dir.path().join("state");
    common::storage::mount(&["--bind", &ro.mnt.display().to_string(), &state.display().to_string()]);
    let _unmount = common::storage::Unmount(state);
    let server = rig.serve(Serve::Whole);
    let answer = rig.ask(rig.offer(&server.url, |_| {}));
    assert_eq!(answer["code"], 3, "{answer}");
    assert!(answer["description"].as_str().unwrap().contains("cannot record the update"), "{answer}");
    std::thread::sleep(SEC);
    assert!(server.requests().is_empty(), "nothing downloaded");
    // Not left "under way": the next offer is judged afresh (and refused the same way).
    assert_eq!(rig.ask(rig.offer(&server.url, |_| {}))["code"], 3);
}

/// updates.md §7: "A stop during the trial does not count against the new version." Three
/// ordinary stops (systemctl restart, a reboot) of a healthy build on trial must not roll it
/// back as one that "keeps exiting".
#[test]
fn three_stops_during_the_trial_do_not_roll_back_a_healthy_build() {
    let _g = Guard::new(180 * SEC);
    // Confirmation far off: the trial is still going when the stops land.
    let mut rig = Rig::start("60s", "150s", "");
    let server = rig.serve(Serve::Whole);
    let answer = rig.ask(rig.offer(&server.url, |_| {}));
    assert_eq!(answer["code"], 0, "{answer}");
    assert_eq!(rig.relogin(60 * SEC)["version"], "rig-agent 0.2.0");
    for stop in 1..=3 {
        signal(&rig.child, Signal::TERM);
        let (code, _, _) = common::wait_exit(&mut rig.child, 15 * SEC);
        assert_eq!(code, Some(0), "stop {stop}");
        rig.child = spawn_agent(&rig.config, &[]);
        let login = rig.relogin(60 * SEC);
        assert_eq!(
            login["version"],
            "rig-agent 0.2.0",
            "after stop {stop} the healthy build on trial must still run; state: {}",
            rig.state()
        );
    }
    assert!(
        !rig.gw.seen.iter().any(|e| e.act() == Some("update_result")),
        "no outcome yet: the build on trial never failed"
    );
}

/// PROTOCOL.md §9: "Each update gets exactly one outcome." An operator turns updates off
/// (`[update] enabled = false`, SIGHUP) while an update it had answered 0 is downloading.
/// The update must still end in an outcome (failed/refused, or rolled_back), not be left
/// as a trial no binary ever ends.
#[test]
fn an_update_under_way_when_a_reload_turns_updates_off_still_gets_one_outcome() {
    let _g = Guard::new(120 * SEC);
    let mut rig = Rig::start("1s", "15s", "");
    // A small build, served slowly: the reload lands while it downloads.
    rig.use_script("exec sleep 1000");
    let server = rig.serve(Serve::Trickle(Duration::from_millis(20)));
    let answer = rig.ask(rig.offer(&server.url, |_| {}));
    assert_eq!(answer["code"], 0, "{answer}");
    let update_id = answer["data"]["update_id"].as_str().unwrap().to_string();
    common::wait_until(10 * SEC, "the download to start", || !server.requests().is_empty());
    let text = fs::read_to_string(&rig.config).unwrap();
    assert!(text.contains("[update]\nenabled = true"), "{text}");
    fs::write(&rig.config, text.replace("[update]\nenabled = true", "[update]\nenabled = false")).unwrap();
    signal(&rig.child, Signal::HUP);
    // Whatever the agent does with the update now, it must say how it ended.
    let deadline = Instant::now() + 60 * SEC;
    let mut outcome = None;
    while Instant::now() < deadline && outcome.is_none() {
        if let Some(common::Event::Received { msg, .. }) = rig.gw.next_event(SEC)
            && msg["act"] == "update_result"
        {
            outcome = Some(msg);
        }
    }
    let outcome = outcome.unwrap_or_else(|| {
        panic!("update {update_id}, answered code 0, got no update_result within 60 s; state: {}", rig.state())
    });
    assert_eq!(outcome["update_id"], update_id.as_str(), "{outcome}");
}

/// The smoke test runs the new build as a child with a 20 s timeout. A stop of the agent
/// while that child runs (a build whose `--version` hangs) must not leave it running on,
/// orphaned, past the agent and its timeout (run by hand or from the tarball there is no
/// cgroup kill to clean up).
#[test]
fn a_stop_during_the_smoke_test_leaves_no_build_running() {
    let _g = Guard::new(60 * SEC);
    let mut rig = Rig::start("1s", "30s", "");
    rig.build = release::script_build(&rig.dir.path().join("hang-0.2.0"), "exec sleep 1000");
    rig.signature = rig.key.sign(&rig.build, &release::comment("0.2.0"));
    let server = rig.serve(Serve::Whole);
    assert_eq!(rig.ask(rig.offer(&server.url, |_| {}))["code"], 0);
    let agent = rig.child.id();
    let mut smoke = None;
    common::wait_until(20 * SEC, "the smoke test to run the new build", || {
        let children = fs::read_to_string(format!("/proc/{agent}/task/{agent}/children")).unwrap_or_default();
        // Any thread's children: the smoke test runs on the update thread.
        let all: Vec<i32> = fs::read_dir(format!("/proc/{agent}/task"))
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|t| {
                fs::read_to_string(t.path().join("children"))
                    .unwrap_or_default()
                    .split_whitespace()
                    .filter_map(|c| c.parse().ok())
                    .collect::<Vec<i32>>()
            })
            .chain(children.split_whitespace().filter_map(|c| c.parse().ok()))
            .collect();
        smoke = all
            .into_iter()
            .find(|p| fs::read_to_string(format!("/proc/{p}/cmdline")).unwrap_or_default().starts_with("sleep"));
        smoke.is_some()
    });
    let smoke = smoke.unwrap();
    signal(&rig.child, Signal::TERM);
    let (code, _, _) = common::wait_exit(&mut rig.child, 15 * SEC);
    assert_eq!(code, Some(0));
    std::thread::sleep(SEC);
    let left = common::alive(smoke);
    if left {
        let _ = rustix::process::kill_process(rustix::process::Pid::from_raw(smoke).unwrap(), Signal::KILL);
    }
    assert!(!left, "the smoke test's child (pid {smoke}) outlived the stopped agent");
}

/// PROTOCOL.md §9 "Each update gets exactly one outcome", with the packaged set-up: the
/// update directory is not writable by the agent (updates.md: under the packaged units an
/// update ends `failed`), so the outcome is not kept in the update state. The state card
/// stalls (>10 s, a worn SD card) as the outcome is spooled; it is then written, sent and
/// acknowledged. After the next restart the same update must not get a second
/// `update_result` with another outcome.
#[test]
fn an_outcome_spooled_during_a_stall_is_not_followed_by_a_second_after_a_restart() {
    if !common::root() {
        return;
    }
    let _g = Guard::new(120 * SEC);
    let mut rig = Rig::start("1s", "30s", "");
    // The spool on a filesystem of its own, which the test can freeze.
    signal(&rig.child, Signal::TERM);
    common::wait_exit(&mut rig.child, 10 * SEC);
    let spool_fs = common::storage::LoopFs::new(rig.dir.path(), "spoolfs", 8 << 20, &[]);
    let spool = rig.dir.path().join("state/spool");
    fs::create_dir_all(&spool).unwrap();
    common::storage::mount(&["--bind", &spool_fs.mnt.display().to_string(), &spool.display().to_string()]);
    let _unmount = common::storage::Unmount(spool.clone());
    // The update directory not writable (a file in its place stands for the packaged
    // root-owned one under ProtectSystem=strict).
    fs::remove_dir_all(&rig.update_dir).unwrap();
    fs::write(&rig.update_dir, "").unwrap();
    rig.child = spawn_agent(&rig.config, &[]);
    rig.relogin(10 * SEC);

    let server = rig.serve(Serve::Status(404));
    let answer = rig.ask(rig.offer(&server.url, |_| {}));
    assert_eq!(answer["code"], 0, "{answer}");
    let update_id = answer["data"]["update_id"].as_str().unwrap().to_string();
    spool_fs.freeze();
    // The outcome's write waits; the report gives up waiting after 10 s.
    std::thread::sleep(13 * SEC);
    spool_fs.thaw();
    let first = rig.result(20 * SEC);
    assert_eq!(first["update_id"], update_id.as_str());
    rig.gw.soak(2 * SEC); // acknowledged
    signal(&rig.child, Signal::TERM);
    common::wait_exit(&mut rig.child, 10 * SEC);
    rig.child = spawn_agent(&rig.config, &[]);
    rig.relogin(10 * SEC);
    rig.gw.soak(3 * SEC);
    let results: Vec<Value> = rig
        .gw
        .seen
        .iter()
        .filter_map(|e| match e {
            common::Event::Received { msg, .. } if msg["act"] == "update_result" => Some(msg.clone()),
            _ => None,
        })
        .collect();
    signal(&rig.child, Signal::TERM);
    common::wait_exit(&mut rig.child, 10 * SEC);
    assert_eq!(
        results.len(),
        1,
        "update {update_id} got {} outcomes: {:#?}",
        results.len(),
        results.iter().map(|r| r["data"].clone()).collect::<Vec<_>>()
    );
}

/// An operator who turns updates off while a build is on trial (and restarts the agent)
/// gets the package's build back, and the trial an outcome: `rolled_back`, saying why, with
/// the version not remembered as bad.
#[test]
fn updates_turned_off_during_a_trial_end_it_rolled_back_once_and_the_package_build_runs() {
    let _g = Guard::new(120 * SEC);
    let mut rig = Rig::start("60s", "150s", "");
    let server = rig.serve(Serve::Whole);
    let answer = rig.ask(rig.offer(&server.url, |_| {}));
    assert_eq!(answer["code"], 0, "{answer}");
    let update_id = answer["data"]["update_id"].as_str().unwrap().to_string();
    assert_eq!(rig.relogin(60 * SEC)["version"], "rig-agent 0.2.0");
    let text = fs::read_to_string(&rig.config).unwrap();
    fs::write(&rig.config, text.replace("[update]\nenabled = true", "[update]\nenabled = false")).unwrap();
    signal(&rig.child, Signal::TERM);
    let (code, _, _) = common::wait_exit(&mut rig.child, 15 * SEC);
    assert_eq!(code, Some(0));
    rig.child = spawn_agent(&rig.config, &[]);
    assert_eq!(rig.relogin(30 * SEC)["version"], format!("rig-agent {FROM}"));
    let result = rig.result(20 * SEC);
    assert_eq!(result["update_id"], update_id.as_str(), "{result}");
    assert_eq!(result["data"]["outcome"], "rolled_back", "{result}");
    assert!(result["data"]["detail"].as_str().unwrap().contains("updates were turned off"), "{result}");
    let st = rig.state();
    assert!(st["trial"].is_null(), "{st}");
    assert!(!st["bad"].as_array().is_some_and(|b| b.iter().any(|v| v == "0.2.0")), "{st}");
    // One outcome, across another restart: a result the agent had no time to record as
    // reported before the stop may be sent again, but as the same message (same act_id,
    // same outcome), never another.
    signal(&rig.child, Signal::TERM);
    common::wait_exit(&mut rig.child, 15 * SEC);
    rig.child = spawn_agent(&rig.config, &[]);
    rig.relogin(30 * SEC);
    rig.gw.soak(2 * SEC);
    let results: Vec<(Value, Value)> = rig
        .gw
        .seen
        .iter()
        .filter_map(|e| match e {
            common::Event::Received { msg, .. } if msg["act"] == "update_result" => {
                Some((msg["act_id"].clone(), msg["data"]["outcome"].clone()))
            }
            _ => None,
        })
        .collect();
    assert!(results.iter().all(|r| *r == (json!(update_id), json!("rolled_back"))), "{results:?}");
}

/// The watcher read the config when the unit started (updates on); the build on trial reads
/// it again at each start. Updates turned off in the file (not yet restarted: the operator
/// plans a restart) and a crash of the build on trial: the watcher starts it again, and it
/// must not end its own trial `rolled_back` and run on as if it were the build put back.
/// A `rolled_back` outcome means the build that ran before is what runs.
#[test]
fn a_build_on_trial_restarted_after_updates_were_turned_off_does_not_report_rolled_back_and_run_on() {
    let _g = Guard::new(150 * SEC);
    let mut rig = Rig::start("60s", "150s", "");
    let server = rig.serve(Serve::Whole);
    let answer = rig.ask(rig.offer(&server.url, |_| {}));
    assert_eq!(answer["code"], 0, "{answer}");
    assert_eq!(rig.relogin(60 * SEC)["version"], "rig-agent 0.2.0");
    let text = fs::read_to_string(&rig.config).unwrap();
    fs::write(&rig.config, text.replace("[update]\nenabled = true", "[update]\nenabled = false")).unwrap();
    // The build on trial crashes once (SIGKILL stands for it); the watcher starts it again.
    let watcher = rig.child.id();
    let children = fs::read_to_string(format!("/proc/{watcher}/task/{watcher}/children")).unwrap();
    let new: i32 =
        children.split_whitespace().next().expect("the build on trial is the watcher's child").parse().unwrap();
    let _ = rustix::process::kill_process(rustix::process::Pid::from_raw(new).unwrap(), Signal::KILL);
    let running = rig.relogin(30 * SEC)["version"].as_str().unwrap().to_string();
    rig.gw.soak(5 * SEC);
    let rolled_back: Vec<Value> = rig
        .gw
        .seen
        .iter()
        .filter_map(|e| match e {
            common::Event::Received { msg, .. }
                if msg["act"] == "update_result" && msg["data"]["outcome"] == "rolled_back" =>
            {
                Some(msg["data"].clone())
            }
            _ => None,
        })
        .collect();
    let st = rig.state();
    assert!(
        rolled_back.is_empty() || running != "rig-agent 0.2.0",
        "the gateway was told {rolled_back:?} while {running} runs on, unwatched; state: {st}"
    );
}
