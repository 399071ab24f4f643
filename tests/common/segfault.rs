//! What the forgery tests need of the real kernel: a program that names itself and
//! segfaults, the kernel log as root reads it, and user segfaults logged for the test.

use std::fs::{self, OpenOptions};
use std::path::Path;
use std::process::Command;

use super::ms;

/// A program that names itself (`prctl(PR_SET_NAME)`, as any process may) and then really
/// faults, in its own code: the kernel logs `<name>[<pid>]: segfault at 0 ip … in
/// <this file's name>[…]` as a kernel record (x86, `debug.exception-trace = 1`). Built with
/// the C compiler `ring` needs anyway.
pub const SEGFAULT_C: &str = "#include <sys/prctl.h>\n\
    int main(int argc, char **argv) {\n\
      if (argc > 1) prctl(PR_SET_NAME, argv[1], 0, 0, 0);\n\
      *(volatile int *)0 = 1;\n\
      return 0;\n\
    }\n";

/// The kernel log as root reads it, from now on: to see that each forged record was
/// really logged (a test whose forgery never reached the log would prove nothing).
pub struct KernelLog(fs::File);

impl KernelLog {
    pub fn from_now() -> KernelLog {
        use std::io::{Seek, SeekFrom};
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
            .open("/dev/kmsg")
            .unwrap();
        f.seek(SeekFrom::End(0)).unwrap();
        KernelLog(f)
    }

    /// Waits up to `limit` for a record whose message contains `needle`; its message.
    pub fn find(&mut self, needle: &str, limit: std::time::Duration) -> Option<String> {
        use std::io::Read;
        let until = std::time::Instant::now() + limit;
        let mut buf = vec![0u8; 8192];
        while std::time::Instant::now() < until {
            match self.0.read(&mut buf) {
                Ok(n) => {
                    let text = String::from_utf8_lossy(&buf[..n]);
                    if let Some((_, message)) = text.lines().next().and_then(|l| l.split_once(';'))
                        && message.contains(needle)
                    {
                        return Some(message.to_string());
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(ms(20)),
                Err(_) => {} // EPIPE: the ring wrapped; read on
            }
        }
        None
    }
}

/// `debug.exception-trace` on for the test (x86 logs user segfaults only then), and back
/// as it was after.
pub struct ExceptionTrace(Option<String>);

impl ExceptionTrace {
    pub fn on() -> ExceptionTrace {
        let path = "/proc/sys/debug/exception-trace";
        let was = fs::read_to_string(path).ok();
        if was.as_deref().map(str::trim) != Some("1") {
            fs::write(path, "1\n").expect("set debug.exception-trace");
        }
        ExceptionTrace(was)
    }
}

impl Drop for ExceptionTrace {
    fn drop(&mut self) {
        if let Some(was) = &self.0 {
            let _ = fs::write("/proc/sys/debug/exception-trace", was);
        }
    }
}

/// Builds [`SEGFAULT_C`] as `dir/segfault` with the system's C compiler; its path.
pub fn build_segfault(dir: &Path) -> std::path::PathBuf {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("segfault.c"), SEGFAULT_C).unwrap();
    let cc = Command::new("cc").arg("-O0").arg("-o").arg(dir.join("segfault")).arg(dir.join("segfault.c")).status();
    assert!(cc.is_ok_and(|s| s.success()), "cc could not build the segfaulting program");
    dir.join("segfault")
}
