//! Automatic recovery (PROTOCOL.md §9) end to end: the real binary on a fixture rig whose
//! disk goes missing and stays missing, stand-in commands that record their runs, a real
//! TLS gateway: steps taken in order with their wait, reported through the outbox; the
//! budget and the ladder's place kept across restarts (a reboot into the same failure);
//! maintenance honoured; a dry run runs nothing; `gave_up` once; a step whose command hangs
//! is cut at its timeout; an agent update under way is waited out as maintenance is. And
//! `check` refusing each bad ladder, naming file, line, key, fix.

mod common;
#[path = "common/file_server.rs"]
mod file_server;
#[path = "common/release.rs"]
mod release;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use file_server::{FileServer, Serve};
use serde_json::{Value, json};

/// A fixture rig with `restart_miner` and `reboot` stand-ins that append their name to
/// `runs`, and a ladder for `missing` disks.
struct Rig {
    fixture: FixtureRig,
    config: PathBuf,
    runs: PathBuf,
    child: Option<Reaped>,
    /// The gateway's connection to the agent now.
    conn: usize,
    /// The reports seen: one resent after a restart (its acknowledgement not taken in
    /// before the stop) is the same report.
    seen: std::collections::HashSet<String>,
}

impl Rig {
    fn start(ladder: &str, recovery_extra: &str, restart_body: &str) -> Rig {
        Rig::start_for("missing", ladder, recovery_extra, restart_body, |_, _| String::new())
    }

    /// A ladder for `reason`; `more(cfg, dir)` may change the config and returns sections
    /// to add.
    fn start_for(
        reason: &str,
        ladder: &str,
        recovery_extra: &str,
        restart_body: &str,
        more: impl FnOnce(&mut AgentConfig, &FixtureRig) -> String,
    ) -> Rig {
        let fixture = FixtureRig::new(Script::default());
        let dir = fixture.dir.path();
        let runs = dir.join("runs");
        let restart = script(dir, "restart.sh", &format!("echo restart_miner >> {}\n{restart_body}", runs.display()));
        let reboot = script(dir, "reboot.sh", &format!("echo reboot >> {}", runs.display()));
        let mut cfg = AgentConfig::new(fixture.gw.url(), &fixture.pki.ca_file);
        cfg.watch(&fixture.rig, "100ms");
        let more = more(&mut cfg, &fixture);
        cfg.sections = format!(
            "[actions]\nenabled = true\n[actions.restart_miner]\ncommand = [{restart:?}]\ntimeout = \"1s\"\n\
             [actions.reboot]\ncommand = [{reboot:?}]\n\n[maintenance]\nremote = false\n\n\
             [recovery]\nenabled = true\n{recovery_extra}\n[recovery.{reason}]\n{ladder}\n\n{more}"
        );
        let config = cfg.write(dir);
        let mut rig = Rig { fixture, config, runs, child: None, conn: 0, seen: Default::default() };
        rig.spawn();
        rig
    }

    fn spawn(&mut self) {
        self.child = Some(spawn_agent(&self.config, &[]));
        self.conn = self.fixture.gw.wait_login(10 * SEC).0;
    }

    fn restart(&mut self) {
        let (code, _) = stop_agent(&mut self.child.take().unwrap().0);
        assert_eq!(code, Some(0));
        self.spawn();
    }

    /// Restarted as a board without a battery-backed clock comes back: its wall clock at
    /// 1970 and running (`faketime`, the glibc build of the tests), its monotonic clock
    /// left alone.
    fn restart_at_1970(&mut self) {
        let (code, _) = stop_agent(&mut self.child.take().unwrap().0);
        assert_eq!(code, Some(0));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rig-agent"));
        cmd.envs(wall_clock_at("1970-01-02 00:00:00"))
            .arg("--config")
            .arg(&self.config)
            .stdout(Stdio::null())
            .env_remove("JOURNAL_STREAM");
        for var in PROXY_VARS {
            cmd.env_remove(var);
        }
        self.child = Some(spawn_logged(&mut cmd));
        self.conn = self.fixture.gw.wait_login(10 * SEC).0;
    }

    fn runs(&self) -> Vec<String> {
        fs::read_to_string(&self.runs).unwrap_or_default().lines().map(String::from).collect()
    }

    /// sda goes missing and stays missing; its warning.
    fn lose_sda(&mut self) -> Value {
        fs::remove_dir_all(self.fixture.rig.join("sys/block/sda")).unwrap();
        self.fixture.gw.wait_warning(10 * SEC, "/dev/sda", "missing")
    }

    /// The next new `recovery` report, and when it came.
    fn report(&mut self, limit: Duration) -> (Value, Instant) {
        let seen = &mut self.seen;
        match self.fixture.gw.wait_for(limit, "a recovery report", |e| {
            matches!(e, Event::Received { msg, .. } if msg["act"] == "recovery"
                && seen.insert(msg["act_id"].as_str().unwrap_or_default().to_string()))
        }) {
            Event::Received { msg, at, .. } => (msg, at),
            _ => unreachable!(),
        }
    }

    fn no_report_for(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            if let Some(Event::Received { msg, .. }) = self.fixture.gw.next_event(left) {
                let new = msg["act"] == "recovery" && !self.seen.contains(msg["act_id"].as_str().unwrap_or_default());
                assert!(!new, "unexpected report {msg}");
            }
        }
    }
}

const LADDER: &str = "steps = [\"restart_miner\", \"reboot\"]\nwait_between = \"2s\"\nbudget = \"3 per 6h\"";

#[test]
fn steps_run_in_order_with_their_wait_are_reported_and_the_ladder_gives_up_once() {
    let _g = Guard::new(60 * SEC);
    let mut rig = Rig::start(LADDER, "", "");
    let w = rig.lose_sda();
    let warned = Instant::now();
    let (first, at1) = rig.report(10 * SEC);
    assert!(at1.duration_since(warned) < 2 * SEC, "the first step is prompt");
    assert_eq!(first["ref_act_id"], w["act_id"]);
    assert_eq!(first["data"]["step"], "restart_miner");
    assert_eq!(first["data"]["budget_left"], 2);
    assert_eq!(first["data"]["result"]["exit_code"], 0);
    assert_eq!(first["data"]["result"]["action"], "restart_miner");
    let (second, at2) = rig.report(10 * SEC);
    assert!(at2.duration_since(at1) >= 2 * SEC - Duration::from_millis(50), "waited {:?}", at2.duration_since(at1));
    assert_eq!((second["data"]["step"].as_str(), second["data"]["budget_left"].as_u64()), (Some("reboot"), Some(1)));
    let (gave_up, at3) = rig.report(10 * SEC);
    assert!(at3.duration_since(at2) >= 2 * SEC - Duration::from_millis(50));
    assert_eq!(gave_up["data"]["step"], "gave_up");
    assert_eq!(gave_up["ref_act_id"], w["act_id"]);
    assert_eq!(rig.runs(), ["restart_miner", "reboot"]);
    rig.no_report_for(3 * SEC);
    assert_eq!(rig.runs().len(), 2);
}

#[test]
fn the_budget_and_the_ladders_place_survive_restarts_and_a_reboot_into_the_same_failure() {
    let _g = Guard::new(90 * SEC);
    let ladder = "steps = [\"restart_miner\", \"reboot\", \"reboot\"]\nwait_between = \"2s\"\nbudget = \"2 per 6h\"";
    let mut rig = Rig::start(ladder, "", "");
    let w = rig.lose_sda();
    let (first, _) = rig.report(10 * SEC);
    assert_eq!(first["data"]["step"], "restart_miner");
    // Restarted before the next step is due: it comes after the restart, once.
    rig.restart();
    let (second, _) = rig.report(15 * SEC);
    assert_eq!(
        (second["data"]["step"].as_str(), second["ref_act_id"].as_str()),
        (Some("reboot"), w["act_id"].as_str())
    );
    assert_eq!(second["data"]["budget_left"], 0);
    // The "reboot" ran: the rig comes back with sda still missing. The budget is spent.
    rig.restart();
    let (gave_up, _) = rig.report(15 * SEC);
    assert_eq!(gave_up["data"]["step"], "gave_up");
    assert_eq!(gave_up["data"]["why"], "budget spent");
    assert_eq!(rig.runs(), ["restart_miner", "reboot"]);
    rig.restart();
    rig.no_report_for(4 * SEC);
    assert_eq!(rig.runs(), ["restart_miner", "reboot"]);
}

#[test]
fn a_board_that_comes_back_at_1970_goes_on_with_its_ladder_at_the_agents_corrected_time() {
    let _g = Guard::new(60 * SEC);
    let ladder = "steps = [\"restart_miner\", \"reboot\"]\nwait_between = \"2s\"\nbudget = \"3 per 6h\"";
    let mut rig = Rig::start(ladder, "", "");
    let w = rig.lose_sda();
    let (first, _) = rig.report(10 * SEC);
    assert_eq!(first["data"]["step"], "restart_miner");
    // The step's record and the next one's due time are wall times from before the
    // reboot; the system clock now reads 1970, the agent's corrected clock its floor. The
    // ladder goes on from there, and the budget taken before is not counted as spent
    // forever.
    rig.restart_at_1970();
    let (second, _) = rig.report(15 * SEC);
    assert_eq!(
        (second["data"]["step"].as_str(), second["ref_act_id"].as_str()),
        (Some("reboot"), w["act_id"].as_str()),
        "{second}"
    );
    assert_eq!(second["data"]["budget_left"], 1, "{second}");
    assert_eq!(rig.runs(), ["restart_miner", "reboot"]);
}

#[test]
fn no_step_runs_in_maintenance_and_the_ladder_stops_at_once_when_it_goes_on() {
    let _g = Guard::new(60 * SEC);
    let mut rig = Rig::start(LADDER, "", "");
    let cli = |rig: &Rig, args: &[&str]| {
        let out = agent_command().arg("--config").arg(&rig.config).arg("maintenance").args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    };
    wait_until(10 * SEC, "the maintenance socket", || {
        rig.config.parent().unwrap().join("state/maintenance.sock").exists()
    });
    cli(&rig, &["on", "1h"]);
    rig.lose_sda();
    rig.no_report_for(3 * SEC);
    assert!(rig.runs().is_empty());
    cli(&rig, &["off"]);
    let (first, _) = rig.report(5 * SEC);
    assert_eq!(first["data"]["step"], "restart_miner");
    cli(&rig, &["on", "1h"]);
    rig.no_report_for(4 * SEC);
    assert_eq!(rig.runs(), ["restart_miner"]);
}

/// An agent update under way is a pause, as maintenance is: a step due meanwhile is not
/// taken, counted, refused nor reported, and runs once the update is over (here refused
/// after its download, the offer's sha256 not the build's), the next one `wait_between`
/// after it.
#[test]
fn a_ladder_due_while_an_update_downloads_waits_and_runs_after_it() {
    let _g = Guard::new(90 * SEC);
    let mut key = None;
    let mut rig = Rig::start_for("missing", LADDER, "", "", |cfg, f| {
        let update_dir = f.dir.path().join("update");
        fs::create_dir(&update_dir).unwrap();
        cfg.paths_extra += &format!("update_dir = {:?}\n", update_dir.display().to_string());
        let k = release::Key::new(f.dir.path(), "op");
        let section = format!("[update]\nenabled = true\nkeys = [{:?}]\n", k.public);
        key = Some(k);
        section
    });
    let key = key.unwrap();
    let dir = rig.fixture.dir.path().to_path_buf();
    // A signed build of 200 bytes, served one byte every 30 ms: the download takes 6 s.
    let build = release::script_build(&dir.join("build-0.2.0"), &format!("exec sleep 1000\n#{}", "x".repeat(172)));
    assert_eq!(fs::metadata(&build).unwrap().len(), 200);
    let signature = key.sign(&build, &release::comment("0.2.0"));
    let server = FileServer::start(
        Some(rig.fixture.pki.server_config()),
        fs::read(&build).unwrap(),
        Serve::Trickle(Duration::from_millis(30)),
    );
    let offer = json!({"from":"html","act":"update_agent","reqtype":"write","act_code":"u1","client_id":"c-42",
        "version":"0.2.0","target":rig_agent::TARGET,"url":server.url,"size":200,"sha256":"00".repeat(32),
        "signature":signature});
    rig.fixture.gw.send_json(rig.conn, offer);
    let answer = rig.fixture.gw.wait_act(10 * SEC, "update_agent").1;
    assert_eq!(answer["code"], 0, "{answer}");
    wait_until(10 * SEC, "the download to start", || !server.requests().is_empty());

    let w = rig.lose_sda();
    let mut update_over = None;
    let seen = &mut rig.seen;
    let first = rig.fixture.gw.wait_for(30 * SEC, "the first recovery report", |e| match e {
        Event::Received { msg, at, .. } if msg["act"] == "update_result" => {
            update_over.get_or_insert((msg.clone(), *at));
            false
        }
        Event::Received { msg, .. } => {
            msg["act"] == "recovery" && seen.insert(msg["act_id"].as_str().unwrap_or_default().to_string())
        }
        _ => false,
    });
    let Event::Received { msg: first, at: at1, .. } = first else { unreachable!() };
    let (result, over) = update_over.unwrap_or_else(|| panic!("a step reported during the update: {first}"));
    assert_ne!(result["data"]["outcome"], "installed", "{result}");
    assert!(at1 >= over, "the step came before the update was over");
    assert_eq!(first["ref_act_id"], w["act_id"]);
    assert_eq!(first["data"]["step"], "restart_miner", "{first}");
    assert_eq!(first["data"]["result"]["exit_code"], 0, "{first}");
    assert_eq!(first["data"]["budget_left"], 2, "the wait counted as a step: {first}");
    let (second, at2) = rig.report(10 * SEC);
    assert_eq!((second["data"]["step"].as_str(), second["data"]["budget_left"].as_u64()), (Some("reboot"), Some(1)));
    assert!(at2.duration_since(at1) >= 2 * SEC - Duration::from_millis(50), "waited {:?}", at2.duration_since(at1));
    assert_eq!(rig.runs(), ["restart_miner", "reboot"]);
}

#[test]
fn a_dry_run_reports_the_steps_it_would_take_and_runs_none() {
    let _g = Guard::new(60 * SEC);
    let mut rig = Rig::start(LADDER, "dry_run = true", "");
    rig.lose_sda();
    let (first, _) = rig.report(10 * SEC);
    assert_eq!(
        (first["data"]["step"].as_str(), first["data"]["dry_run"].as_bool()),
        (Some("restart_miner"), Some(true))
    );
    assert_eq!(first["data"]["result"], Value::Null);
    let (second, _) = rig.report(10 * SEC);
    assert_eq!(second["data"]["step"], "reboot");
    let (gave_up, _) = rig.report(10 * SEC);
    assert_eq!(gave_up["data"]["step"], "gave_up");
    assert!(rig.runs().is_empty(), "{:?}", rig.runs());
}

#[test]
fn a_step_whose_command_hangs_is_cut_at_its_timeout_and_the_agent_still_stops_at_once() {
    let _g = Guard::new(60 * SEC);
    let mut rig = Rig::start(LADDER, "", "exec sleep 1000");
    rig.lose_sda();
    let (first, _) = rig.report(10 * SEC);
    assert_eq!(first["data"]["result"]["timed_out"], true);
    // The next step is a hang too? No: reboot; then stop while nothing runs, and once more
    // while a hanging step runs (a fresh rig, the step started).
    let (second, _) = rig.report(10 * SEC);
    assert_eq!(second["data"]["step"], "reboot");
    let mut hang = Rig::start("steps = [\"restart_miner\"]\nbudget = \"1 per 1h\"", "", "exec sleep 1000");
    hang.lose_sda();
    wait_until(10 * SEC, "the step to start", || !hang.runs().is_empty());
    let t = Instant::now();
    let (code, _) = stop_agent(&mut hang.child.take().unwrap().0);
    assert_eq!(code, Some(0));
    assert!(t.elapsed() < 5 * SEC, "stopping took {:?}", t.elapsed());
}

#[test]
fn a_gpu_that_nvidia_smi_reports_lost_gets_its_ladder() {
    let _g = Guard::new(60 * SEC);
    const BUS: &str = "0000:01:00.0";
    let working = format!(
        "0, NVIDIA GeForce RTX 3090, 0000{}, 61, 70, 300.00, 350.00, 100, 24576, 20000, 1695, 9751, GPU-aaaaaaaa-0001\n",
        BUS.to_uppercase()
    );
    let lost = format!(
        "Unable to determine the device handle for GPU {BUS}: GPU is lost.  Reboot the system to recover this GPU\n"
    );
    let answer = |dir: &Path, text: &str| {
        fs::write(dir.join("smi.tmp"), text).unwrap();
        fs::rename(dir.join("smi.tmp"), dir.join("smi.txt")).unwrap();
    };
    let mut rig = Rig::start_for("gpu_lost", LADDER, "", "", |_, f| {
        let gpu = f.rig.join("sys/bus/pci/devices").join(BUS);
        fs::create_dir_all(&gpu).unwrap();
        fs::write(gpu.join("class"), "0x030000\n").unwrap();
        fs::write(gpu.join("vendor"), "0x10de\n").unwrap();
        answer(f.dir.path(), &working);
        let smi = script(f.dir.path(), "nvidia-smi", &format!("cat {:?}", f.dir.path().join("smi.txt")));
        format!("[probes]\nnvidia_smi = {:?}\nnvidia_smi_interval = \"100ms\"\n", smi.display().to_string())
    });
    let state = rig.config.parent().unwrap().join("state/gpus.json");
    wait_until(10 * SEC, "the GPU in the inventory", || fs::read_to_string(&state).unwrap_or_default().contains(BUS));
    answer(rig.fixture.dir.path(), &lost);
    let w = rig.fixture.gw.wait_gpu(10 * SEC, "warning", BUS, "gpu_lost");
    let (first, _) = rig.report(10 * SEC);
    assert_eq!(
        (first["ref_act_id"].clone(), first["data"]["step"].clone()),
        (w["act_id"].clone(), "restart_miner".into())
    );
    // The GPU works again before the next step: the ladder stops there.
    answer(rig.fixture.dir.path(), &working);
    rig.no_report_for(4 * SEC);
    assert_eq!(rig.runs(), ["restart_miner"]);
}

fn broken_ladder(ladder: &str, actions_enabled: bool) -> Broken {
    let b = Broken::new();
    let reboot = script(b.dir.path(), "reboot.sh", "true");
    b.edit(|c| {
        format!(
            "{c}\n[actions]\nenabled = {actions_enabled}\n[actions.reboot]\ncommand = [{reboot:?}]\n\n\
             [recovery]\nenabled = true\n{ladder}\n"
        )
    });
    b
}

#[test]
fn check_refuses_each_bad_ladder_naming_file_line_key_and_fix() {
    let ok = broken_ladder("[recovery.gpu_lost]\nsteps = [\"reboot\"]\nbudget = \"3 per 6h\"", true);
    assert_eq!(ok.check().0, Some(0), "{}", ok.check().1);
    for (ladder, enabled, key) in [
        ("[recovery.gpu_exploded]\nsteps = [\"reboot\"]\nbudget = \"3 per 6h\"", true, "recovery.gpu_exploded"),
        ("[recovery.gpu_lost]\nsteps = [\"reflash\"]\nbudget = \"3 per 6h\"", true, "recovery.gpu_lost.steps"),
        ("[recovery.gpu_lost]\nsteps = [\"reboot\"]\nbudget = \"3 per 6h\"", false, "recovery.gpu_lost.steps"),
        ("[recovery.gpu_lost]\nsteps = [\"reboot\"]", true, "recovery.gpu_lost.budget"),
        ("[recovery.gpu_lost]\nsteps = [\"reboot\"]\nbudget = \"3/6h\"", true, "recovery.gpu_lost.budget"),
        ("[recovery.gpu_lost]\nsteps = [\"reboot\"]\nbudget = \"0 per 6h\"", true, "recovery.gpu_lost.budget"),
        ("[recovery.gpu_lost]\nsteps = [\"reboot\"]\nbudget = \"3 per 90d\"", true, "recovery.gpu_lost.budget"),
        ("[recovery.gpu_lost]\nsteps = []\nbudget = \"3 per 6h\"", true, "recovery.gpu_lost.steps"),
        (
            "[recovery.gpu_lost]\nsteps = [\"reboot\"]\nbudget = \"3 per 6h\"\nwait_between = \"0s\"",
            true,
            "recovery.gpu_lost.wait_between",
        ),
        (
            "[recovery.missing]\nsteps = [\"reboot\"]\nbudget = \"3 per 6h\"\nwait = \"1m\"",
            true,
            "recovery.missing.wait",
        ),
    ] {
        let b = broken_ladder(ladder, enabled);
        assert_config_error(&b, key);
        let (_, err) = b.check();
        assert!(err.contains(", line "), "no line in {err}");
    }
}
