//! Attack review 2: outside text in log lines and sd_notify. The escaping catches the
//! bidirectional embeddings and isolates (U+202A..U+202E, U+2066..U+2069) and U+200E/F,
//! but not every character of Unicode's Bidi_Control property, nor the invisible tag
//! characters that hide a second text inside a line ("ASCII smuggling").

use rig_agent::protocol::escape::escape_to;

#[test]
fn every_bidi_control_and_invisible_tag_character_from_outside_is_escaped() {
    // U+061C is in Bidi_Control with U+200E/F and U+202A..U+202E, U+2066..U+2069;
    // U+E0041 is TAG LATIN CAPITAL LETTER A: invisible, and read as "A" by text tools.
    for c in ['\u{061c}', '\u{e0041}', '\u{e0001}', '\u{e007f}'] {
        let out = escape_to(&format!("ok{c}kb"), 100);
        assert!(!out.contains(c), "U+{:04X} passed through: {out:?}", c as u32);
    }
}
