//! A cursor over a kernel message for the disk rules: each step consumes what it matched
//! or fails the rule (`?`), so a rule reads as the format it matches.

/// A cursor over a message: each step consumes what it matched or fails the rule.
pub(super) struct Scan<'a>(pub(super) &'a str);

impl<'a> Scan<'a> {
    pub(super) fn lit(&mut self, s: &str) -> Option<()> {
        self.0 = self.0.strip_prefix(s)?;
        Some(())
    }

    /// Consumes `s` when it is next; whether it was.
    pub(super) fn opt(&mut self, s: &str) -> bool {
        self.lit(s).is_some()
    }

    /// The text up to the first of `ends` (not consumed), or to the end.
    pub(super) fn until(&mut self, ends: &[char]) -> &'a str {
        let i = self.0.find(ends).unwrap_or(self.0.len());
        let (head, tail) = self.0.split_at(i);
        self.0 = tail;
        head
    }

    /// One or more decimal digits.
    pub(super) fn number(&mut self) -> Option<u64> {
        let digits = self.0.bytes().take_while(u8::is_ascii_digit).count();
        let (head, tail) = self.0.split_at(digits);
        let n = head.parse().ok()?;
        self.0 = tail;
        Some(n)
    }

    /// Exactly `n` decimal digits, not followed by another.
    pub(super) fn digits(&mut self, n: usize) -> Option<u64> {
        let head = self.0.get(..n).filter(|h| h.bytes().all(|b| b.is_ascii_digit()))?;
        if self.0[n..].starts_with(|c: char| c.is_ascii_digit()) {
            return None;
        }
        self.0 = &self.0[n..];
        head.parse().ok()
    }

    /// An ATA taskfile as libata prints it, `%02x/%02x:%02x:%02x:%02x:%02x/%02x:%02x:%02x:%02x:%02x/%02x`:
    /// twelve bytes in two hexadecimal digits each, with their separators.
    pub(super) fn taskfile(&mut self) -> Option<()> {
        for (i, sep) in ["", "/", ":", ":", ":", ":", "/", ":", ":", ":", ":", "/"].into_iter().enumerate() {
            if i > 0 {
                self.lit(sep)?;
            }
            let byte = self.0.get(..2).filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))?;
            self.0 = &self.0[byte.len()..];
        }
        Some(())
    }

    /// `0x` and one or more hexadecimal digits.
    pub(super) fn hex(&mut self) -> Option<u64> {
        self.lit("0x")?;
        let digits = self.0.bytes().take_while(u8::is_ascii_hexdigit).count();
        let (head, tail) = self.0.split_at(digits);
        let n = u64::from_str_radix(head, 16).ok()?;
        self.0 = tail;
        Some(n)
    }

    /// `host:channel:target:lun`.
    pub(super) fn scsi_address(&mut self) -> Option<String> {
        let start = self.0;
        for i in 0..4 {
            if i > 0 {
                self.lit(":")?;
            }
            self.number()?;
        }
        Some(start[..start.len() - self.0.len()].to_string())
    }

    pub(super) fn rest(&self) -> &'a str {
        self.0
    }
}
