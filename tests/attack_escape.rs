//! Attack review: outside text in log lines. Bidirectional controls (U+202A..U+202E,
//! U+2066..U+2069) reorder how a log line is displayed (journalctl, terminals, web log
//! viewers): a gateway's close reason or a kernel line can make a line read as something
//! else ("Trojan Source").

use rig_agent::protocol::escape::escape_to;

#[test]
fn bidirectional_controls_from_outside_are_escaped() {
    for c in ['\u{202e}', '\u{2066}', '\u{2069}', '\u{200b}', '\u{feff}'] {
        let out = escape_to(&format!("ok{c}kb"), 100);
        assert!(!out.contains(c), "U+{:04X} passed through: {out:?}", c as u32);
    }
}
