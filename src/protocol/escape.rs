//! One way to put text that came from outside (the gateway, a peer's TLS or HTTP error, a
//! query's fields) into a log line or an sd_notify datagram.
//!
//! journald starts a new entry at every newline, and a `<N>` at the start of a line sets its
//! priority; systemd reads every line of a notify datagram as an assignment. So a newline
//! from a gateway (`"bye\nWATCHDOG=trigger"`, `"x\n<0>kernel: ..."`) would forge an entry or
//! a command. Every control character (C0, DEL, C1) and the Unicode line and paragraph
//! separators are written as escapes, and the result is capped so that a peer cannot fill
//! the journal with one message.
//!
//! The backslash itself is not escaped: escaping escaped text again with a cap no smaller
//! then changes nothing (no control character is left), so a caller that escapes text
//! already escaped by another (`Notifier::status`, with a larger cap) does no harm.

use std::fmt::Write;

/// The default cap, in characters of the escaped text (the ellipsis not counted).
pub(crate) const MAX_CHARS: usize = 200;

/// Marks text that was cut at the cap.
pub(crate) const ELLIPSIS: char = '…';

/// `text` with control characters escaped, cut at [`MAX_CHARS`] characters with `…`.
pub fn escape(text: &str) -> String {
    escape_to(text, MAX_CHARS)
}

/// `text` with control characters escaped (`\n`, `\r`, `\t`, `\x1b`, `\u{85}`…), at most
/// `max_chars` characters of escaped text, followed by `…` when it was cut. Cuts fall on
/// character boundaries, and never inside an escape.
pub fn escape_to(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars) + 4);
    let mut used = 0;
    let mut piece = String::new();
    for c in text.chars() {
        escaped_char(c, &mut piece);
        if !push_piece(&mut out, &mut used, max_chars, &piece) {
            break;
        }
    }
    out
}

/// `c` as it may appear in a log line, into `piece` (cleared first).
fn escaped_char(c: char, piece: &mut String) {
    piece.clear();
    match c {
        '\n' => piece.push_str("\\n"),
        '\r' => piece.push_str("\\r"),
        '\t' => piece.push_str("\\t"),
        '\0'..='\x1f' | '\x7f' => {
            let _ = write!(piece, "\\x{:02x}", c as u32);
        }
        // C1, the line and paragraph separators, and the invisible characters that
        // reorder or hide what a log viewer shows ("Trojan Source"): bidi embeddings,
        // overrides and isolates, zero-width characters, the BOM.
        '\u{80}'..='\u{9f}'
        | '\u{2028}'
        | '\u{2029}'
        | '\u{200b}'..='\u{200f}'
        | '\u{202a}'..='\u{202e}'
        | '\u{2060}'..='\u{2069}'
        | '\u{061c}'
        | '\u{feff}'
        | '\u{e0000}'..='\u{e007f}' => {
            let _ = write!(piece, "\\u{{{:x}}}", c as u32);
        }
        c => piece.push(c),
    }
}

/// Appends `piece` whole if it fits in `max` characters (counting `used`), else the ellipsis;
/// `false` once cut. An escape is never cut in half.
fn push_piece(out: &mut String, used: &mut usize, max: usize, piece: &str) -> bool {
    let n = piece.chars().count();
    if *used + n > max {
        out.push(ELLIPSIS);
        return false;
    }
    *used += n;
    out.push_str(piece);
    true
}

/// Bytes that may not be UTF-8 (a binary frame, a raw peer error): the UTF-8 parts as
/// [`escape_to`] writes text, every byte that is not part of valid UTF-8 as `\xNN`, so
/// the log shows which bytes came, not replacement characters.
pub(crate) fn escape_bytes(bytes: &[u8], max_chars: usize) -> String {
    // Only what can show: a megabyte frame is not looked at whole to log 200 characters.
    let head = &bytes[..bytes.len().min(max_chars.saturating_mul(4).saturating_add(4))];
    let (mut out, mut used, mut piece) = (String::with_capacity(head.len().min(max_chars) + 4), 0, String::new());
    for chunk in head.utf8_chunks() {
        for c in chunk.valid().chars() {
            escaped_char(c, &mut piece);
            if !push_piece(&mut out, &mut used, max_chars, &piece) {
                return out;
            }
        }
        for b in chunk.invalid() {
            piece.clear();
            let _ = write!(piece, "\\x{b:02x}");
            if !push_piece(&mut out, &mut used, max_chars, &piece) {
                return out;
            }
        }
    }
    if head.len() < bytes.len() {
        out.push(ELLIPSIS);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newlines_and_other_control_characters_are_escaped() {
        assert_eq!(escape("bye\nWATCHDOG=trigger"), "bye\\nWATCHDOG=trigger");
        assert_eq!(escape("x\r\n<0>kernel: \t"), "x\\r\\n<0>kernel: \\t");
        assert_eq!(escape("\x1b[31mred\x7f\0"), "\\x1b[31mred\\x7f\\x00");
        assert_eq!(escape("a\u{85}b\u{2028}c\u{9b}"), "a\\u{85}b\\u{2028}c\\u{9b}");
        assert_eq!(escape("操作成功 ok"), "操作成功 ok");
    }

    #[test]
    fn long_text_is_cut_at_the_cap_on_a_character_boundary_with_an_ellipsis() {
        let s = escape(&"é".repeat(500));
        assert_eq!(s.chars().count(), MAX_CHARS + 1);
        assert!(s.ends_with(ELLIPSIS));
        assert_eq!(escape(&"a".repeat(MAX_CHARS)), "a".repeat(MAX_CHARS), "exactly at the cap is not cut");
        // An escape is never cut in half.
        assert_eq!(escape_to("ab\ncd", 3), "ab…");
        assert_eq!(escape_to("ab\ncd", 4), "ab\\n…");
    }

    #[test]
    fn escaping_twice_with_a_cap_no_smaller_changes_nothing() {
        let once = escape("a\nb\\nc\x1b");
        assert_eq!(escape(&once), once);
        let cut = escape(&"\n".repeat(300));
        assert_eq!(escape_to(&cut, 1024), cut);
    }

    #[test]
    fn bytes_that_are_not_utf8_are_shown_as_hex_escapes_and_only_their_head_is_decoded() {
        assert_eq!(escape_bytes(b"ok\xff\n", 20), "ok\\xff\\n");
        // A binary frame: control bytes and bytes that are not UTF-8 alike, as \xNN; the
        // valid UTF-8 in between (é) as itself.
        assert_eq!(escape_bytes(b"\x00\x01\x80\xc3\xa9\xfe\x7f", 40), "\\x00\\x01\\x80é\\xfe\\x7f");
        let big = vec![b'a'; 1 << 20];
        let s = escape_bytes(&big, 10);
        assert_eq!(s, format!("{}…", "a".repeat(10)));
    }

    /// Bidirectional controls (U+202A..U+202E, U+2066..U+2069) reorder how a log line is
    /// displayed (journalctl, terminals, web log viewers): a gateway's close reason or a
    /// kernel line could make a line read as something else ("Trojan Source").
    #[test]
    fn bidirectional_controls_from_outside_are_escaped() {
        for c in ['\u{202e}', '\u{2066}', '\u{2069}', '\u{200b}', '\u{feff}'] {
            let out = escape_to(&format!("ok{c}kb"), 100);
            assert!(!out.contains(c), "U+{:04X} passed through: {out:?}", c as u32);
        }
    }

    /// Every character of Unicode's Bidi_Control property (U+061C with U+200E/F, U+202A..
    /// U+202E, U+2066..U+2069), and the invisible tag characters that hide a second text
    /// inside a line ("ASCII smuggling": U+E0041 is read as "A" by text tools).
    #[test]
    fn every_bidi_control_and_invisible_tag_character_from_outside_is_escaped() {
        for c in ['\u{061c}', '\u{e0041}', '\u{e0001}', '\u{e007f}'] {
            let out = escape_to(&format!("ok{c}kb"), 100);
            assert!(!out.contains(c), "U+{:04X} passed through: {out:?}", c as u32);
        }
    }
}
