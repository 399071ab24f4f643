//! Where the kmsg reader resumes after an agent restart: the boot and the sequence number
//! of the last record it handled, in `<state_dir>/kmsg.cursor`. Within the same boot it
//! resumes after that record (nothing between stop and start is missed, nothing read
//! twice); after a reboot, or without a cursor, it starts at the end of the ring.

use std::path::Path;

use crate::os::durable::write_durably;

const FILE: &str = "kmsg.cursor";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// `/proc/sys/kernel/random/boot_id`.
    pub boot_id: String,
    /// Sequence number of the last record handled.
    pub seq: u64,
}

/// Where to start reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// At the end of the ring: only records logged from now on.
    End,
    /// At the oldest record still in the ring, skipping those up to and including `seq`.
    After(u64),
}

impl Cursor {
    pub fn load(state_dir: &Path) -> Option<Cursor> {
        // Bounded and non-blocking: a FIFO or a link to /dev/zero here must not hold the
        // start-up (it runs before READY=1).
        let text = crate::os::bounded_read::read_string(
            &state_dir.join(FILE),
            4 << 10,
            crate::os::bounded_read::Links::Refuse,
        );
        parse(&text.ok()?)
    }

    pub fn save(&self, state_dir: &Path) -> std::io::Result<()> {
        write_durably(state_dir, FILE, format!("{} {}\n", self.boot_id, self.seq).as_bytes())
    }
}

pub fn parse(text: &str) -> Option<Cursor> {
    let (boot_id, seq) = text.trim().split_once(' ')?;
    let ok = boot_id.len() <= 64 && !boot_id.is_empty() && boot_id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    ok.then_some(Cursor { boot_id: boot_id.to_string(), seq: seq.parse().ok()? })
}

/// This boot's id, under `procfs` (`/proc`): `None` where it cannot be read (the privileged
/// half's unit has `ProcSubset=pid`).
pub fn boot_id(procfs: &Path) -> Option<String> {
    crate::os::sysfs::read_attr(&procfs.join("sys/kernel/random/boot_id"))
}

/// The cursor saved in `state_dir`, when it names this boot (`boot`): where the last run
/// stopped reading. `None` after a reboot, or with no usable cursor.
pub fn remembered(state_dir: &Path, boot: Option<&str>) -> Option<Cursor> {
    Cursor::load(state_dir).filter(|c| Some(c.boot_id.as_str()) == boot)
}

/// Where to start given the remembered cursor and this boot's id.
pub fn start(remembered: Option<&Cursor>, boot_id: Option<&str>) -> Start {
    match (remembered, boot_id) {
        (Some(c), Some(b)) if c.boot_id == b => Start::After(c.seq),
        _ => Start::End,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOT: &str = "4f9c2d1e-7a3b-4c5d-9e8f-0a1b2c3d4e5f";

    #[test]
    fn a_cursor_of_this_boot_resumes_after_its_record_and_any_other_starts_at_the_end() {
        let c = Cursor { boot_id: BOOT.into(), seq: 812 };
        assert_eq!(start(Some(&c), Some(BOOT)), Start::After(812));
        assert_eq!(start(Some(&c), Some("00000000-0000-0000-0000-000000000000")), Start::End, "rebooted");
        assert_eq!(start(None, Some(BOOT)), Start::End);
        assert_eq!(start(Some(&c), None), Start::End, "boot id unknown");
    }

    #[test]
    fn the_cursor_round_trips_and_garbage_is_no_cursor() {
        let d = tempfile::tempdir().unwrap();
        let c = Cursor { boot_id: BOOT.into(), seq: 99 };
        c.save(d.path()).unwrap();
        assert_eq!(Cursor::load(d.path()), Some(c));
        assert_eq!(parse("x y"), None);
        assert_eq!(parse("../etc 5"), None);
        assert_eq!(parse(""), None);
    }
}
