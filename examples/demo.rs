//! `cargo run --release --example demo`: the real agent against a local demo gateway.
//!
//! The gateway is the one the integration tests use (TLS with a CA generated for this run,
//! 127.0.0.1, a random port). You see the login, heartbeats, a query and its answer, a
//! gateway restart with the agent coming back, and a clean stop with close 1001. The agent's
//! own log lines are interleaved on stderr.

#[path = "../tests/common/agent_config.rs"]
mod agent_config;
#[path = "../tests/common/gateway.rs"]
mod gateway;

use std::thread;
use std::time::{Duration, Instant};

use agent_config::AgentConfig;
use gateway::{Event, Gateway, Pki, Script};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

fn main() {
    let t0 = Instant::now();
    rig_agent::logging::init();
    run(&mut |line| println!("[{:5.2}s] {line}", t0.elapsed().as_secs_f64()));
}

/// The demo, every line it shows given to `say`: what a gateway sees and does, as
/// PROTOCOL.md asks of one (the login `return` echoing `act_id`, a restart closing with
/// 1012).
fn run(say: &mut dyn FnMut(&str)) {
    let pki = Pki::new(&["localhost", "127.0.0.1"]);
    let mut gw = Gateway::start(&pki, Script::default());
    say(&format!("demo gateway listening on {} (TLS, CA generated for this run)", gw.url()));

    let dir = tempfile::tempdir().expect("temp dir");
    let mut agent_config = AgentConfig::new(gw.url(), &pki.ca_file);
    agent_config.hardware_id = "demo-rig-0001".into();
    agent_config.token = "demo-token-0123456789abcdef".into();
    (agent_config.heartbeat_interval, agent_config.heartbeat_timeout) = ("1s", "3s");
    (agent_config.reconnect_initial, agent_config.reconnect_max) = ("500ms", "5s");
    let config = agent_config.write(dir.path());
    say(&format!("agent config written to {}", config.display()));

    let cfg = rig_agent::config::Config::load(&config).unwrap_or_else(|e| panic!("{e}"));
    let mut agent = rig_agent::agent::Agent::build(cfg, |_| {}).expect("agent");
    let stop = agent.shutdown();
    let agent = thread::spawn(move || agent.run());

    let (conn, mut login) = gw.wait_login(WAIT);
    login["token"] = json!("*** (hidden here; the gateway checks it)");
    say(&format!("gateway <- login   {login}"));
    // The return as the gateway sent it: its act_id echoes the login's.
    let answer = match gw.wait_for(WAIT, "login return", |e| matches!(e, Event::Sent { .. })) {
        Event::Sent { msg, .. } => msg,
        _ => unreachable!(),
    };
    say(&format!("gateway -> return  {answer}"));

    for _ in 0..2 {
        let (_, hb, _) = gw.wait_act(WAIT, "heartbeat");
        say(&format!("gateway <- heartbeat {hb}"));
    }

    let query = json!({"from":"html","act":"get_agent_info","reqtype":"post","act_code":"codeNew","client_id":"c-42"});
    say(&format!("gateway -> query   {query}"));
    gw.send_json(conn, query);
    let answer =
        match gw.wait_for(WAIT, "answer", |e| matches!(e, Event::Received { msg, .. } if msg["act_code"] == "codeNew"))
        {
            Event::Received { msg, .. } => msg,
            _ => unreachable!(),
        };
    say(&format!("gateway <- answer\n{}", serde_json::to_string_pretty(&answer).unwrap()));

    say("gateway restarts: it closes every connection with 1012 (service restart), as PROTOCOL.md §5 asks");
    gw.close_all();
    say("gateway -> close 1012 service restart");
    let reply = match gw.wait_for(WAIT, "close reply", |e| matches!(e, Event::Closed { conn: c, .. } if *c == conn)) {
        Event::Closed { code, .. } => code,
        _ => unreachable!(),
    };
    say(&format!(
        "gateway <- close {} (the agent's reply); it backs off (jittered) and logs in again",
        reply.map_or(Value::Null, Value::from)
    ));
    let (again, _) = gw.wait_login(WAIT);
    let (_, hb, _) = gw.wait_act(WAIT, "heartbeat");
    say(&format!("gateway <- login again on connection {again}, then heartbeat {}", hb["act_id"]));

    say("stopping the agent, as SIGTERM would");
    stop.stop();
    let code = match gw.wait_for(WAIT, "close", |e| matches!(e, Event::Closed { conn: c, .. } if *c == again)) {
        Event::Closed { code, .. } => code,
        _ => unreachable!(),
    };
    agent.join().expect("agent thread");
    say(&format!("gateway <- close {}; the agent has returned. Demo done.", code.map_or(Value::Null, Value::from)));
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_demo_echoes_the_login_act_id_and_restarts_with_close_1012() {
        let mut lines = Vec::new();
        super::run(&mut |l| lines.push(l.to_string()));
        let find = |start: &str| {
            lines.iter().find(|l| l.starts_with(start)).unwrap_or_else(|| panic!("no {start:?} in {lines:#?}")).clone()
        };
        let json_in =
            |line: String| -> serde_json::Value { serde_json::from_str(&line[line.find('{').unwrap()..]).unwrap() };
        let (login, ret) = (json_in(find("gateway <- login ")), json_in(find("gateway -> return")));
        assert_eq!(ret["act_id"], login["act_id"], "the login return echoes act_id");
        assert_eq!(ret["code"], 0);
        find("gateway -> close 1012");
        assert!(find("gateway <- close 1012").contains("logs in again"), "the agent replied to the restart's close");
        assert!(find("gateway <- close 1001").contains("Demo done"));
    }
}
