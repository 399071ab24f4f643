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
    let say = |line: &str| println!("[{:5.2}s] {line}", t0.elapsed().as_secs_f64());

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

    rig_agent::logging::init();
    let cfg = rig_agent::Config::load(&config).unwrap_or_else(|e| panic!("{e}"));
    let mut agent = rig_agent::Agent::build(cfg, |_| {}).expect("agent");
    let stop = agent.shutdown();
    let agent = thread::spawn(move || agent.run());

    let (conn, mut login) = gw.wait_login(WAIT);
    login["token"] = json!("*** (hidden here; the gateway checks it)");
    say(&format!("gateway <- login   {login}"));
    say("gateway -> return  {\"act\":\"return\",\"action\":\"start\",\"code\":0,\"description\":\"操作成功\"}");

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

    say("gateway restarts: it closes the connection; the agent backs off (jittered) and logs in again");
    gw.send(conn, tungstenite::Message::Close(None));
    let (again, _) = gw.wait_login(WAIT);
    let (_, hb, _) = gw.wait_act(WAIT, "heartbeat");
    say(&format!("gateway <- login again on connection {again}, then heartbeat {}", hb["act_id"]));

    say("stopping the agent, as SIGTERM would");
    stop.stop();
    let code = match gw.wait_for(WAIT, "close", |e| matches!(e, Event::Closed { .. })) {
        Event::Closed { code, .. } => code,
        _ => unreachable!(),
    };
    agent.join().expect("agent thread");
    say(&format!("gateway <- close {}; the agent has returned. Demo done.", code.map_or(Value::Null, Value::from)));
}
