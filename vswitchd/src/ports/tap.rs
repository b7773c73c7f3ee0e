//! `type=tap` and `type=internal` ports: a TAP device the daemon creates.
//!
//! The device is opened with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR and told
//! (TUNSETOFFLOAD) that the daemon takes partial checksums and TSO, so the
//! host stack hands it 64 KiB frames as veths do, with the same virtio-net
//! header; frames sent to it carry their header too. The daemon keeps the
//! descriptor: the device may be moved into another namespace (how a VM or
//! a container uses it) and keeps working, and it disappears when the port
//! is deleted. `internal` differs only in intent: the daemon's namespace's
//! own leg on the bridge, named like the port, brought up at creation.
//!
//! TAP has no batched read or write; a batch is up to 32 reads or writes.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::{sys, DeviceDrop, Frames, PacketBatch, PortDevice, BATCH_SIZE};
use crate::core::offload::{Offload, VNET_HDR_LEN};

const SLOT: usize = VNET_HDR_LEN + 65_536;

pub struct Tap {
    fd: Option<OwnedFd>,
    error: Option<String>,
    bad_offload: u64,
}

fn open_tap(name: &str) -> io::Result<OwnedFd> {
    let path = c"/dev/net/tun";
    // SAFETY: opening a path given as a NUL-terminated string.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("cannot open /dev/net/tun ({e}); load the tun module")));
    }
    // SAFETY: `fd` is a fresh descriptor owned from here on.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = sys::ifreq(name)?;
    req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes the ifreq we own.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req) } < 0 {
        let e = io::Error::last_os_error();
        let hint = match e.raw_os_error() {
            Some(libc::EPERM) => "creating TAP devices needs root (CAP_NET_ADMIN)",
            Some(libc::EBUSY) | Some(libc::EINVAL) => {
                "an interface of that name exists and is not a free TAP"
            }
            _ => "TUNSETIFF failed",
        };
        return Err(io::Error::new(e.kind(), format!("{hint}: {e}")));
    }
    let offloads = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;
    // SAFETY: TUNSETOFFLOAD takes its flags by value.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETOFFLOAD, offloads as libc::c_ulong) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

impl Tap {
    /// Creates the device. If that fails, the port exists but is down and
    /// says why: a bridge of pcap ports still works without privileges.
    pub fn open(name: &str, bring_up: bool) -> Tap {
        let (fd, error) = match open_tap(name) {
            Ok(fd) => {
                if bring_up {
                    if let Err(e) = sys::set_up(name) {
                        tracing::warn!(port = name, "cannot bring the TAP device up: {e}");
                    }
                }
                (Some(fd), None)
            }
            Err(e) => {
                let reason = format!("cannot create TAP device {name}: {e}");
                tracing::warn!("{reason}");
                (None, Some(reason))
            }
        };
        Tap { fd, error, bad_offload: 0 }
    }
}

impl PortDevice for Tap {
    fn recv_batch(&mut self, batch: &mut PacketBatch) -> usize {
        let Some(fd) = &self.fd else { return 0 };
        let mut taken = 0;
        while taken < BATCH_SIZE {
            // In place, into room the batch lends (see PacketBatch::receive_area).
            let (slot, room) = batch.receive_area(SLOT);
            // SAFETY: reads into the lent room, at most its true length.
            let n = unsafe { libc::read(fd.as_raw_fd(), room.as_mut_ptr().cast(), room.len()) };
            if n <= 0 {
                batch.shrink_area(slot);
                break;
            }
            taken += 1;
            let n = n as usize;
            let offload = (n >= VNET_HDR_LEN)
                .then(|| Offload::from_virtio(room[..VNET_HDR_LEN].try_into().expect("sized")));
            match offload {
                Some(Ok(offload)) => {
                    batch.push_received(slot + VNET_HDR_LEN, slot + n, &offload);
                    batch.shrink_area(slot + n);
                }
                Some(Err(_)) => {
                    self.bad_offload += 1;
                    batch.shrink_area(slot);
                }
                None => batch.shrink_area(slot),
            }
        }
        taken
    }

    fn send_batch(&mut self, frames: Frames<'_>) -> usize {
        let Some(fd) = &self.fd else { return 0 };
        let mut sent = 0;
        for packet in frames.iter() {
            let header = packet.offload.to_virtio();
            let iov = [
                libc::iovec { iov_base: header.as_ptr() as *mut _, iov_len: VNET_HDR_LEN },
                libc::iovec { iov_base: packet.data.as_ptr() as *mut _, iov_len: packet.data.len() },
            ];
            // SAFETY: both iovecs point at memory alive for the call; the
            // kernel only reads it.
            let n = unsafe { libc::writev(fd.as_raw_fd(), iov.as_ptr(), 2) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    break;
                }
                // EIO: the device is down; that frame is lost, try the next.
                continue;
            }
            sent += 1;
        }
        sent
    }

    fn error(&self) -> Option<String> {
        self.error.clone()
    }

    fn rx_fd(&self) -> Option<RawFd> {
        self.fd.as_ref().map(AsRawFd::as_raw_fd)
    }

    fn device_drops(&self) -> Vec<(DeviceDrop, u64)> {
        vec![(DeviceDrop::RxBadOffload, self.bad_offload)]
    }
}
