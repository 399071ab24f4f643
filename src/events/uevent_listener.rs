//! The kernel's uevent multicast (`NETLINK_KOBJECT_UEVENT`, group 1): needs `AF_NETLINK`
//! only, no capability. rustix has netlink sockets, so no new dependency.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::net::netlink::{self, SocketAddrNetlink};
use rustix::net::{AddressFamily, RecvFlags, SocketFlags, SocketType, bind, recv, socket_with};

use super::uevent::{self, MAX_DATAGRAM, Uevent};

/// Kernel events; group 2 is udevd's re-broadcast, which we do not want.
const KERNEL_GROUP: u32 = 1;
/// Receive buffer asked for: a burst (a USB hub with many disks, a boot) fits; beyond it
/// the kernel drops datagrams (ENOBUFS) and the periodic scan is the safety net.
const RCVBUF: usize = 256 * 1024;

#[derive(Debug)]
pub struct UeventListener {
    fd: OwnedFd,
    buf: Vec<u8>,
}

impl UeventListener {
    pub fn open() -> io::Result<UeventListener> {
        let fd = socket_with(
            AddressFamily::NETLINK,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            Some(netlink::KOBJECT_UEVENT),
        )?;
        // Not fatal: the default buffer is smaller, that is all.
        let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&fd, RCVBUF);
        bind(&fd, &SocketAddrNetlink::new(0, KERNEL_GROUP))?;
        Ok(UeventListener { fd, buf: vec![0; MAX_DATAGRAM] })
    }

    /// The next datagram if one is waiting: `Ok(None)` when none is. Datagrams that are not
    /// kernel uevents are skipped. ENOBUFS (the kernel dropped some) is returned as an error
    /// the caller counts and goes on from.
    pub fn try_next(&mut self) -> io::Result<Option<Uevent>> {
        loop {
            match recv(&self.fd, &mut self.buf[..], RecvFlags::empty()) {
                Ok((n, _)) => {
                    if let Some(ev) = uevent::parse(&self.buf[..n.min(self.buf.len())]) {
                        return Ok(Some(ev));
                    }
                }
                Err(rustix::io::Errno::AGAIN) => return Ok(None),
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl AsFd for UeventListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
