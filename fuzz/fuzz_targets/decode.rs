//! Inbound frames: whatever the gateway sends must decode to a message or a `Junk` reason,
//! and drive a logged-in session without panicking.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use rig_agent::actions::decode_request;
use rig_agent::protocol::{ActIds, Identity, Inbound, decode};
use rig_agent::session::{Session, SessionConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // A run_action query's mode and action name (PROTOCOL.md §8) from any query.
    if let Ok(Inbound::Query(q)) = decode(text) {
        let _ = decode_request(&q);
    }
    let cfg = SessionConfig {
        heartbeat_interval: Duration::from_secs(30),
        heartbeat_timeout: Duration::from_secs(90),
        login_timeout: Duration::from_secs(10),
    };
    let ids = ActIds::with_prefix("fuzz0000");
    let id = Identity { hardware_id: "rig".into(), name: "rig".into() };
    let now = Instant::now();
    let (mut s, _) = Session::start(cfg, id, "token", &ids, now);
    let _ = s.on_text(r#"{"act":"return","action":"start","act_id":"fuzz0000-1","code":0}"#, &ids, now);
    let _ = s.on_text(text, &ids, now);
    let _ = s.on_tick(&ids, now + Duration::from_secs(31));
});
