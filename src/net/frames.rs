//! A watch over the bytes the gateway sends, below tungstenite, for the two places where
//! tungstenite's UTF-8 checks hurt the agent (tungstenite 0.30, `protocol/mod.rs`):
//!
//! - A close frame whose reason is not UTF-8 fails in `Frame::into_close` *before* the close
//!   is taken in: the error looks like a junk text frame, no close reply is queued, and the
//!   socket stays open. Here the reason is cut to its longest valid UTF-8 prefix (the frame's
//!   length byte adjusted), so the close is a close.
//! - Invalid UTF-8 in a fragment of a text message fails in `IncompleteMessage::extend` and
//!   leaves the partial message in place: the next text frame is then "expected a
//!   continuation" and kills the connection. Here every text message goes on as a binary one
//!   (the opcode rewritten in the first frame's header), so tungstenite never checks it; the
//!   runner asks [`FrameWatch::next_kind`] which binary messages were text and checks their
//!   UTF-8 itself, dropping a bad one as junk with nothing left behind.
//!
//! The HTTP response of the upgrade goes through untouched: the watch starts at the frames
//! after its blank line, so it sees every frame byte in order, whatever tungstenite reads
//! ahead. A frame it does not understand (masked, which tungstenite refuses anyway) stops the
//! watch: bytes then go through unchanged.

use std::collections::VecDeque;

/// What a data message was on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Binary,
}

const OP_TEXT: u8 = 1;
const OP_BINARY: u8 = 2;
const OP_CLOSE: u8 = 8;

#[derive(Debug)]
enum State {
    /// In the HTTP response; `matched` bytes of "\r\n\r\n" seen.
    Http { matched: usize },
    /// Reading a frame header (kept in `head`).
    Header,
    /// Passing on this many more payload bytes.
    Payload { left: u64 },
    /// Collecting a close frame (in `close`) of this total length.
    Close { total: usize },
    /// Not understood: everything goes through unchanged.
    Through,
}

#[derive(Debug)]
pub struct FrameWatch {
    state: State,
    head: Vec<u8>,
    close: Vec<u8>,
    kinds: VecDeque<Kind>,
    /// Frames of the data message being received in fragments (0: none unfinished).
    fragments: u32,
}

/// Most frames one data message may come in. tungstenite's `read()` loops over fragments
/// until a message is whole, so endless (empty) continuations would keep the socket thread
/// inside one read: no heartbeat, no stop. No gateway needs this many.
pub const MAX_FRAGMENTS: u32 = 4096;

impl Default for FrameWatch {
    fn default() -> Self {
        FrameWatch {
            state: State::Http { matched: 0 },
            head: Vec::new(),
            close: Vec::new(),
            kinds: VecDeque::new(),
            fragments: 0,
        }
    }
}

/// The length of a server frame's header once its first two bytes are known.
fn header_len(head: &[u8]) -> Option<usize> {
    let b1 = *head.get(1)?;
    let ext = match b1 & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if b1 & 0x80 != 0 { 4 } else { 0 };
    Some(2 + ext + mask)
}

fn payload_len(head: &[u8]) -> u64 {
    match head[1] & 0x7f {
        126 => u64::from(u16::from_be_bytes([head[2], head[3]])),
        127 => u64::from_be_bytes(head[2..10].try_into().unwrap_or_default()),
        n => u64::from(n),
    }
}

impl FrameWatch {
    /// Takes `input` as read from the socket and appends what tungstenite should read to
    /// `out` (less what is held: a partial header or close frame).
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let mut i = 0;
        while i < input.len() {
            match &mut self.state {
                State::Through => {
                    out.extend_from_slice(&input[i..]);
                    return;
                }
                State::Http { matched } => {
                    let b = input[i];
                    out.push(b);
                    i += 1;
                    *matched = match (b, *matched) {
                        (b'\r', 0 | 2) => *matched + 1,
                        (b'\n', 1 | 3) => *matched + 1,
                        (b'\r', _) => 1,
                        _ => 0,
                    };
                    if *matched == 4 {
                        self.state = State::Header;
                    }
                }
                State::Payload { left } => {
                    let take = (*left).min((input.len() - i) as u64) as usize;
                    out.extend_from_slice(&input[i..i + take]);
                    i += take;
                    *left -= take as u64;
                    if *left == 0 {
                        self.state = State::Header;
                    }
                }
                State::Close { total } => {
                    let take = (*total - self.close.len()).min(input.len() - i);
                    self.close.extend_from_slice(&input[i..i + take]);
                    i += take;
                    if self.close.len() == *total {
                        self.finish_close(out);
                    }
                }
                State::Header => {
                    self.head.push(input[i]);
                    i += 1;
                    if header_len(&self.head) == Some(self.head.len()) {
                        self.header_done(out);
                    }
                }
            }
        }
    }

    fn header_done(&mut self, out: &mut Vec<u8>) {
        let mut head = std::mem::take(&mut self.head);
        let (fin, opcode, masked, len) = (head[0] & 0x80 != 0, head[0] & 0x0f, head[1] & 0x80 != 0, payload_len(&head));
        if masked {
            out.extend_from_slice(&head);
            self.state = State::Through;
            return;
        }
        if opcode == OP_CLOSE && fin && len <= 125 {
            // Kept with the minimal 2-byte header whatever length encoding the gateway used,
            // so that the reason starts at byte 4 and its length fits byte 1.
            self.close = vec![head[0], len as u8];
            self.state = State::Close { total: self.close.len() + len as usize };
            if len == 0 {
                self.finish_close(out);
            }
            return;
        }
        // Control frames (opcode 8 and above) may come between fragments and count for none.
        if opcode < 8 {
            self.fragments = if fin { 0 } else { self.fragments.saturating_add(1) };
        }
        match opcode {
            OP_TEXT => {
                head[0] = (head[0] & 0xf0) | OP_BINARY;
                self.kinds.push_back(Kind::Text);
            }
            OP_BINARY => self.kinds.push_back(Kind::Binary),
            // Continuations belong to the message already counted; control frames are none.
            _ => {}
        }
        out.extend_from_slice(&head);
        self.head = head;
        self.head.clear();
        self.state = if len == 0 { State::Header } else { State::Payload { left: len } };
    }

    /// A whole close frame (2-byte header, payload of at most 125): its reason cut to valid
    /// UTF-8.
    fn finish_close(&mut self, out: &mut Vec<u8>) {
        let valid = self.close.get(4..).map(|reason| match std::str::from_utf8(reason) {
            Ok(_) => reason.len(),
            Err(e) => e.valid_up_to(),
        });
        if let Some(valid) = valid {
            self.close.truncate(4 + valid);
            self.close[1] = (self.close.len() - 2) as u8;
        }
        out.append(&mut self.close);
        self.state = State::Header;
    }

    /// A data message has come in more than [`MAX_FRAGMENTS`] frames: the connection must end.
    pub fn overrun(&self) -> bool {
        self.fragments > MAX_FRAGMENTS
    }

    /// What the oldest data message not yet asked about was; `Binary` if none is known
    /// (the watch stopped).
    pub fn next_kind(&mut self) -> Kind {
        self.kinds.pop_front().unwrap_or(Kind::Binary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![b0];
        match payload.len() {
            n if n < 126 => f.push(n as u8),
            n if n < 65536 => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        f
    }

    /// Feeds `input` in pieces of `step` bytes.
    fn run(input: &[u8], step: usize) -> (Vec<u8>, FrameWatch) {
        let mut w = FrameWatch::default();
        let mut out = Vec::new();
        for piece in input.chunks(step) {
            w.feed(piece, &mut out);
        }
        (out, w)
    }

    const HTTP: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";

    #[test]
    fn text_goes_on_as_binary_and_is_remembered_as_text_in_any_piece_sizes() {
        let mut input = HTTP.to_vec();
        input.extend(frame(0x81, b"{\"act\":1}"));
        input.extend(frame(0x82, &[0xff; 300]));
        input.extend(frame(0x01, b"frag")); // fragmented text: first frame not final
        input.extend(frame(0x89, b"ping"));
        input.extend(frame(0x80, &[0xc3])); // its continuation, invalid UTF-8
        input.extend(frame(0x81, &vec![b'x'; 70_000]));
        for step in [1, 2, 3, 7, 4096, input.len()] {
            let (out, mut w) = run(&input, step);
            let mut want = HTTP.to_vec();
            want.extend(frame(0x82, b"{\"act\":1}"));
            want.extend(frame(0x82, &[0xff; 300]));
            want.extend(frame(0x02, b"frag"));
            want.extend(frame(0x89, b"ping"));
            want.extend(frame(0x80, &[0xc3]));
            want.extend(frame(0x82, &vec![b'x'; 70_000]));
            assert!(out == want, "step {step}");
            let kinds: Vec<Kind> = (0..4).map(|_| w.next_kind()).collect();
            assert_eq!(kinds, [Kind::Text, Kind::Binary, Kind::Text, Kind::Text], "step {step}");
        }
    }

    /// A close frame whose length (at most 125) comes in the 16-bit form: a hostile or
    /// sloppy gateway. Its reason was cut at the wrong offset and its length byte written
    /// over the extended length, so tungstenite saw a protocol error, not a close.
    #[test]
    fn a_close_frame_with_a_non_minimal_length_is_passed_on_as_the_same_close() {
        let mut input = HTTP.to_vec();
        input.extend([0x88, 126, 0, 7]);
        input.extend(b"\x03\xe8bye\xff\xfe");
        for step in [1, 3, input.len()] {
            let (out, _) = run(&input, step);
            assert_eq!(&out[HTTP.len()..], frame(0x88, b"\x03\xe8bye"), "step {step}");
        }
    }

    #[test]
    fn a_close_reason_that_is_not_utf8_is_cut_to_its_valid_prefix() {
        let mut input = HTTP.to_vec();
        input.extend(frame(0x88, b"\x03\xe8bye\xff\xfeend"));
        for step in [1, 5, input.len()] {
            let (out, _) = run(&input, step);
            assert_eq!(&out[HTTP.len()..], frame(0x88, b"\x03\xe8bye"), "step {step}");
        }
        // A valid one, and one without a reason, are unchanged.
        let mut input = HTTP.to_vec();
        input.extend(frame(0x88, &[b"\x03\xe8".as_slice(), "操作".as_bytes()].concat()));
        input.extend(frame(0x88, b""));
        assert_eq!(run(&input, 3).0, input);
    }

    #[test]
    fn a_masked_frame_stops_the_watch_and_everything_goes_through() {
        let mut input = HTTP.to_vec();
        input.extend([0x81, 0x82, 1, 2, 3, 4, b'a', b'b']);
        input.extend(frame(0x81, b"x"));
        let (out, _) = run(&input, 2);
        assert_eq!(out, input);
    }

    #[test]
    fn a_message_in_more_fragments_than_allowed_is_an_overrun() {
        let mut w = FrameWatch { state: State::Header, ..FrameWatch::default() };
        let mut out = Vec::new();
        w.feed(&frame(0x01, b"{"), &mut out);
        for _ in 0..MAX_FRAGMENTS - 1 {
            w.feed(&frame(0x00, b""), &mut out);
        }
        w.feed(&frame(0x89, b""), &mut out); // a ping between fragments counts for none
        assert!(!w.overrun());
        w.feed(&frame(0x00, b""), &mut out);
        assert!(w.overrun());
        let mut w = FrameWatch { state: State::Header, ..FrameWatch::default() };
        w.feed(&frame(0x01, b"{"), &mut out);
        w.feed(&frame(0x80, b"}"), &mut out);
        assert!(!w.overrun(), "a finished message resets the count");
    }
}
