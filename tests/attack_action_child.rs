//! Attack review: an action's command that writes without pause.

use std::time::{Duration, Instant};

use rig_agent::actions::child::{Limits, run};

#[test]
fn a_command_writing_without_pause_is_killed_at_its_timeout() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let t = Instant::now();
        let o = run(&["/usr/bin/yes".to_string()], &Limits { timeout: Duration::from_secs(1), max_output: 64 * 1024 });
        let _ = tx.send((t.elapsed(), o.map(|o| (o.timed_out, o.stdout.len()))));
    });
    let got = rx.recv_timeout(Duration::from_secs(20));
    println!("{got:?}");
    assert!(got.is_ok(), "run() of `yes` with a 1 s timeout had not returned after 20 s");
}
