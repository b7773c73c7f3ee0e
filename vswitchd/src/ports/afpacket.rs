//! `type=system` ports: an existing interface (the host end of a veth, a
//! NIC) through an AF_PACKET socket, as OVS's `netdev-linux` does.
//!
//! - Received through a PACKET_MMAP ring ([`RxRing`]): no system call per
//!   received batch, and the kernel's copy into the ring happens in the
//!   sender's context. Frames too big for a ring slot (GSO super-frames)
//!   and kernels without rings go through `recvmmsg`.
//! - Sent in batches: `sendmmsg` of up to 32 frames per call.
//! - PACKET_VNET_HDR: every frame comes with a virtio-net header saying
//!   whether its checksum is partial or it is a GSO super-frame, and goes
//!   out with one, so TCP with the veth's default offloads works and stays
//!   fast (64 KiB frames cross the switch as one). Without it, AF_PACKET
//!   hands over frames with unfinished checksums and the receiver drops them.
//! - VLAN tags: the kernel strips the tag of frames from devices with VLAN
//!   acceleration and reports it beside the frame (in the ring's frame
//!   header, or PACKET_AUXDATA for frames read from the socket); it is put
//!   back.
//! - PACKET_IGNORE_OUTGOING, and the packet type in the ring as a fallback,
//!   keep the socket from receiving the frames it sends itself;
//!   PACKET_QDISC_BYPASS hands sent frames straight to the driver.
//! - A socket error (the link went down) makes the socket readable until it
//!   is read; a wake that finds the ring empty reads the socket, which
//!   clears it (and takes any frame left there).
//! - A vanished interface takes the port down, not the daemon: the port
//!   says why in `show` and reopens when an interface of its name returns.
//!
//! Costs: one copy in each direction by the kernel, and a copy of each
//! small frame from its ring slot into the batch being switched. Frames
//! read with `recvmmsg` are received in place into the batch
//! ([`PacketBatch::receive_area`]: 32 slots of up to 64 KiB, which the
//! datapath has once, not per port). The ring is 2 MiB per port.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::rx_ring::RxRing;
use super::sys;
use super::{DeviceDrop, Frames, PacketBatch, PortDevice, BATCH_SIZE};
use crate::core::offload::{Offload, VNET_HDR_LEN};

/// A GSO frame is at most 64 KiB; its VLAN tag may be restored.
const FRAME_MAX: usize = 65_536 + 4;
const SLOT: usize = VNET_HDR_LEN + FRAME_MAX;
const CMSG_SPACE: usize = 64;
const SOCKET_BUFFER: libc::c_int = 8 << 20;

pub struct AfPacket {
    name: String,
    socket: Option<OwnedFd>,
    /// The socket's receive ring; `None` where the kernel offers none.
    ring: Option<RxRing>,
    ifindex: u32,
    error: Option<String>,
    cmsgs: Vec<u8>,
    names: Vec<libc::sockaddr_ll>,
    iovecs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    tx_headers: Vec<[u8; VNET_HDR_LEN]>,
    pub drops: DeviceDrops,
    link_lost: u64,
}

/// Frames the device dropped before the bridge saw them.
#[derive(Debug, Default, Clone, Copy)]
pub struct DeviceDrops {
    pub truncated: u64,
    pub bad_offload: u64,
    pub tx_too_big: u64,
    /// The kernel found the ring, or the socket's queue, full
    /// (PACKET_STATISTICS).
    pub ring_full: u64,
}

// SAFETY: the raw pointers inside `iovecs` and `msgs` are scratch: they
// are rewritten to point into buffers this value owns (or into the batch
// being sent) right before every system call and never read otherwise, so
// moving the value to another thread cannot leave one dangling in use.
unsafe impl Send for AfPacket {}

fn zeroed<T>() -> T {
    // SAFETY: only used for the C structs below, for which all zeroes is valid.
    unsafe { std::mem::zeroed() }
}

impl AfPacket {
    /// Opens the port; if the interface cannot be opened the port exists
    /// but is down, and says why.
    pub fn open(name: &str) -> AfPacket {
        let mut port = AfPacket {
            name: name.to_owned(),
            socket: None,
            ring: None,
            ifindex: 0,
            error: None,
            cmsgs: vec![0; BATCH_SIZE * CMSG_SPACE],
            names: (0..BATCH_SIZE).map(|_| zeroed()).collect(),
            iovecs: (0..BATCH_SIZE * 2).map(|_| zeroed()).collect(),
            msgs: (0..BATCH_SIZE).map(|_| zeroed()).collect(),
            tx_headers: vec![[0; VNET_HDR_LEN]; BATCH_SIZE],
            drops: DeviceDrops::default(),
            link_lost: 0,
        };
        port.reopen();
        port
    }

    fn reopen(&mut self) {
        match sys::ifindex(&self.name) {
            None => self.go_down(format!("no interface named {} (waiting for it to appear)", self.name)),
            Some(index) => match Self::socket_for(index) {
                Ok((socket, ring)) => {
                    let ring = ring
                        .inspect_err(|e| {
                            tracing::warn!(port = %self.name, "no PACKET_MMAP receive ring ({e}); receiving with recvmmsg")
                        })
                        .ok();
                    if self.socket.is_some() && index != self.ifindex {
                        // Replaced by another interface of the same name
                        // between two looks: the old one was lost all the same.
                        self.link_lost += 1;
                    }
                    self.ring = ring;
                    self.socket = Some(socket);
                    self.ifindex = index;
                    self.error = None;
                }
                Err(e) => self.go_down(format!("cannot open {} with AF_PACKET: {e}", self.name)),
            },
        }
    }

    fn go_down(&mut self, reason: String) {
        if self.error.as_deref() != Some(&reason) {
            tracing::warn!(port = %self.name, "{reason}");
        }
        if self.socket.is_some() {
            self.link_lost += 1;
        }
        self.ring = None;
        self.socket = None;
        self.error = Some(reason);
    }

    fn socket_for(ifindex: u32) -> io::Result<(OwnedFd, io::Result<RxRing>)> {
        let protocol = (libc::ETH_P_ALL as u16).to_be();
        // Protocol 0: the socket receives nothing until `bind` names the
        // interface (with ETH_P_ALL it would take every interface's frames
        // in between, and switch them as this port's).
        // SAFETY: a plain socket call; the result is checked.
        let fd = unsafe {
            libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0)
        };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return Err(if e.raw_os_error() == Some(libc::EPERM) {
                io::Error::new(e.kind(), "permission denied (AF_PACKET needs root or CAP_NET_RAW)")
            } else {
                e
            });
        }
        // SAFETY: `fd` is a fresh descriptor owned from here on.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        let raw = socket.as_raw_fd();
        sys::setsockopt_int(raw, libc::SOL_PACKET, libc::PACKET_VNET_HDR, 1)?;
        sys::setsockopt_int(raw, libc::SOL_PACKET, libc::PACKET_AUXDATA, 1)?;
        // Older kernels lack it; the packet type check below still filters.
        let _ = sys::setsockopt_int(raw, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1);
        // Sent frames go straight to the driver: the switch does its own
        // queueing, and the qdisc layer costs per frame.
        let _ = sys::setsockopt_int(raw, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, 1);
        for (force, plain) in
            [(libc::SO_RCVBUFFORCE, libc::SO_RCVBUF), (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF)]
        {
            if sys::setsockopt_int(raw, libc::SOL_SOCKET, force, SOCKET_BUFFER).is_err() {
                let _ = sys::setsockopt_int(raw, libc::SOL_SOCKET, plain, SOCKET_BUFFER);
            }
        }
        let ring = RxRing::attach(raw);
        let mut addr: libc::sockaddr_ll = zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = protocol;
        addr.sll_ifindex = ifindex as i32;
        // SAFETY: binds to a sockaddr_ll we own, with its exact size.
        let rc = unsafe {
            libc::bind(
                raw,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut mreq: libc::packet_mreq = zeroed();
        mreq.mr_ifindex = ifindex as i32;
        mreq.mr_type = libc::PACKET_MR_PROMISC as u16;
        sys::setsockopt(raw, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq)?;
        Ok((socket, ring))
    }

    fn handle_io_error(&mut self, e: &io::Error) {
        if sys::device_gone(e) {
            self.go_down(format!("interface {} vanished (waiting for it to return)", self.name));
        }
    }

    /// The VLAN tag the kernel stripped from message `i`, if any.
    fn stripped_tag(&self, i: usize) -> Option<(u16, u16)> {
        let hdr = &self.msgs[i].msg_hdr;
        // SAFETY: walks the control buffer the kernel filled for this
        // message with the CMSG_* macros, within msg_controllen.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_PACKET && (*cmsg).cmsg_type == libc::PACKET_AUXDATA {
                    let aux: libc::tpacket_auxdata = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                    if aux.tp_status & libc::TP_STATUS_VLAN_VALID != 0 {
                        let tpid = if aux.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                            aux.tp_vlan_tpid
                        } else {
                            0x8100
                        };
                        return Some((tpid, aux.tp_vlan_tci));
                    }
                }
                cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
            }
        }
        None
    }
}

impl AfPacket {
    /// Takes up to a batch from the ring: each frame is copied out of its
    /// slot into the batch and the slot goes back to the kernel at once.
    fn recv_from_ring(&mut self, batch: &mut PacketBatch) -> usize {
        let mut taken = 0;
        while taken < BATCH_SIZE {
            let Some(ring) = &mut self.ring else { break };
            let Some(frame) = ring.peek() else { break };
            taken += 1;
            if frame.pkttype == libc::PACKET_OUTGOING {
                let on_socket = frame.on_socket;
                ring.release();
                if on_socket {
                    self.discard_one_from_socket();
                }
                continue;
            }
            if frame.on_socket {
                // The whole frame is the oldest one queued on the socket.
                // Its successors there (a TCP stream's GSO frames) are read
                // with it, in one call.
                ring.release();
                let mut on_socket = 1;
                while taken < BATCH_SIZE
                    && ring.peek().is_some_and(|next| next.on_socket && next.pkttype != libc::PACKET_OUTGOING)
                {
                    ring.release();
                    on_socket += 1;
                    taken += 1;
                }
                // A pending socket error fails the first read (and is
                // cleared by it): read again so ring and socket stay in step.
                let mut read = self.recv_messages(batch, on_socket);
                if read < on_socket {
                    read += self.recv_messages(batch, on_socket - read);
                }
                self.drops.truncated += (on_socket - read) as u64;
                continue;
            }
            if frame.bytes.len() < VNET_HDR_LEN || frame.bytes.len() - VNET_HDR_LEN < frame.wire_len {
                ring.release();
                self.drops.truncated += 1;
                continue;
            }
            let len = frame.bytes.len();
            let tag = frame.stripped_tag;
            let (slot, room) = batch.receive_area(len);
            room.copy_from_slice(frame.bytes);
            ring.release();
            if !keep_frame(batch, &mut self.drops, slot, slot + len, tag) {
                batch.shrink_area(slot);
            }
        }
        if taken == 0 {
            // Woken with an empty ring: the socket has an error to clear
            // (epoll reports it until it is read) or a frame the ring did
            // not announce. Reading it settles both.
            return self.recv_messages(batch, BATCH_SIZE);
        }
        taken
    }

    /// Drops the oldest frame queued on the socket (the copy of a frame the
    /// ring showed as the socket's own, on kernels without
    /// PACKET_IGNORE_OUTGOING).
    fn discard_one_from_socket(&mut self) {
        let Some(socket) = &self.socket else { return };
        let mut byte = 0u8;
        // SAFETY: reads at most one byte into `byte`; MSG_TRUNC drops the rest.
        unsafe {
            libc::recv(socket.as_raw_fd(), (&raw mut byte).cast(), 1, libc::MSG_DONTWAIT | libc::MSG_TRUNC);
        }
    }

    /// One `recvmmsg` of up to `max` frames, in place into the batch's room
    /// (see [`PacketBatch::receive_area`]): each good frame stays where the
    /// kernel wrote it, after its virtio-net header.
    fn recv_messages(&mut self, batch: &mut PacketBatch, max: usize) -> usize {
        let Some(socket) = &self.socket else { return 0 };
        let fd = socket.as_raw_fd();
        let max = max.min(BATCH_SIZE);
        let (area, room) = batch.receive_area(max * SLOT);
        for i in 0..max {
            self.iovecs[i] = libc::iovec { iov_base: room[i * SLOT..].as_mut_ptr().cast(), iov_len: SLOT };
            let msg = &mut self.msgs[i];
            msg.msg_len = 0;
            msg.msg_hdr = zeroed();
            msg.msg_hdr.msg_name = (&mut self.names[i] as *mut libc::sockaddr_ll).cast();
            msg.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            msg.msg_hdr.msg_iov = &mut self.iovecs[i];
            msg.msg_hdr.msg_iovlen = 1;
            msg.msg_hdr.msg_control = self.cmsgs[i * CMSG_SPACE..].as_mut_ptr().cast();
            msg.msg_hdr.msg_controllen = CMSG_SPACE;
        }
        // SAFETY: every message points at buffers owned by `self` or lent
        // by `batch` (the room, untouched until the call returns), all
        // alive for the call, with their true lengths.
        let n = unsafe {
            libc::recvmmsg(fd, self.msgs.as_mut_ptr(), max as u32, libc::MSG_DONTWAIT, std::ptr::null_mut())
        };
        if n < 0 {
            batch.shrink_area(area);
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::WouldBlock {
                self.handle_io_error(&e);
            }
            return 0;
        }
        let mut kept_end = area;
        for i in 0..n as usize {
            let len = self.msgs[i].msg_len as usize;
            if self.names[i].sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            if self.msgs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0 || len < VNET_HDR_LEN {
                self.drops.truncated += 1;
                continue;
            }
            let (slot, end) = (area + i * SLOT, area + i * SLOT + len);
            let tag = self.stripped_tag(i).filter(|_| len - VNET_HDR_LEN >= 12);
            if keep_frame(batch, &mut self.drops, slot, end, tag) {
                kept_end = end;
            }
        }
        batch.shrink_area(kept_end);
        n as usize
    }
}

/// Records the frame received at `slot..end` of the batch's lent room (a
/// virtio-net header, then the frame), putting back the VLAN tag the
/// kernel stripped; false if its offload metadata is unusable.
fn keep_frame(
    batch: &mut PacketBatch,
    drops: &mut DeviceDrops,
    slot: usize,
    end: usize,
    stripped_tag: Option<(u16, u16)>,
) -> bool {
    let bytes = batch.bytes_mut();
    let header: &[u8; VNET_HDR_LEN] = bytes[slot..slot + VNET_HDR_LEN].try_into().expect("sized");
    let Ok(mut offload) = Offload::from_virtio(header) else {
        drops.bad_offload += 1;
        return false;
    };
    let mut start = slot + VNET_HDR_LEN;
    if let Some((tpid, tci)) = stripped_tag.filter(|_| end - start >= 12) {
        // The tag goes back between the addresses and the rest: the
        // addresses move 4 bytes into the header just read.
        offload.shift(4);
        bytes.copy_within(start..start + 12, start - 4);
        start -= 4;
        bytes[start + 12..start + 14].copy_from_slice(&tpid.to_be_bytes());
        bytes[start + 14..start + 16].copy_from_slice(&tci.to_be_bytes());
    }
    batch.push_received(start, end, &offload);
    true
}

impl PortDevice for AfPacket {
    fn recv_batch(&mut self, batch: &mut PacketBatch) -> usize {
        if self.ring.is_some() {
            self.recv_from_ring(batch)
        } else {
            self.recv_messages(batch, BATCH_SIZE)
        }
    }

    fn send_batch(&mut self, frames: Frames<'_>) -> usize {
        let Some(socket) = &self.socket else { return 0 };
        let fd = socket.as_raw_fd();
        let total = frames.len();
        let mut sent = 0;
        let mut next = 0;
        while next < total {
            let count = (total - next).min(BATCH_SIZE);
            for k in 0..count {
                let p = frames.get(next + k).expect("within the batch");
                self.tx_headers[k] = p.offload.to_virtio();
                self.iovecs[2 * k] =
                    libc::iovec { iov_base: self.tx_headers[k].as_mut_ptr().cast(), iov_len: VNET_HDR_LEN };
                self.iovecs[2 * k + 1] =
                    libc::iovec { iov_base: p.data.as_ptr() as *mut _, iov_len: p.data.len() };
                let msg = &mut self.msgs[k];
                msg.msg_hdr = zeroed();
                msg.msg_hdr.msg_iov = &mut self.iovecs[2 * k];
                msg.msg_hdr.msg_iovlen = 2;
                msg.msg_len = 0;
            }
            // SAFETY: the messages point at headers owned by `self` and at
            // frames borrowed from `frames`, all alive for the call; the
            // kernel only reads them.
            let n = unsafe { libc::sendmmsg(fd, self.msgs.as_mut_ptr(), count as u32, libc::MSG_DONTWAIT) };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    // The frame at `next` is refused on its own: skip it.
                    Some(libc::EMSGSIZE) | Some(libc::EINVAL) => {
                        self.drops.tx_too_big += 1;
                        next += 1;
                        continue;
                    }
                    _ => {
                        self.handle_io_error(&e);
                        // Full (EAGAIN, ENOBUFS) or gone: the rest is dropped.
                        return sent;
                    }
                }
            }
            sent += n as usize;
            next += n as usize;
        }
        sent
    }

    fn buffer_bytes(&self) -> usize {
        self.cmsgs.len() + self.ring.as_ref().map_or(0, |_| RxRing::BYTES)
    }

    fn error(&self) -> Option<String> {
        self.error.clone()
    }

    fn rx_fd(&self) -> Option<RawFd> {
        self.socket.as_ref().map(AsRawFd::as_raw_fd)
    }

    fn maintain(&mut self) {
        match (&self.socket, sys::ifindex(&self.name)) {
            (Some(_), Some(index)) if index == self.ifindex => {}
            (Some(_), _) | (None, Some(_)) => self.reopen(),
            (None, None) => {}
        }
        if let Some(socket) = &self.socket {
            let mut stats: libc::tpacket_stats = zeroed();
            let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
            // SAFETY: `stats` is a writable tpacket_stats and `len` its size;
            // reading the statistics also resets them, so each drop is
            // added once.
            let rc = unsafe {
                libc::getsockopt(
                    socket.as_raw_fd(),
                    libc::SOL_PACKET,
                    libc::PACKET_STATISTICS,
                    (&raw mut stats).cast(),
                    &mut len,
                )
            };
            if rc == 0 {
                self.drops.ring_full += u64::from(stats.tp_drops);
            }
        }
    }

    fn link_lost(&self) -> u64 {
        self.link_lost
    }

    fn device_drops(&self) -> Vec<(DeviceDrop, u64)> {
        vec![
            (DeviceDrop::RxTruncated, self.drops.truncated),
            (DeviceDrop::RxBadOffload, self.drops.bad_offload),
            (DeviceDrop::TxTooBig, self.drops.tx_too_big),
            (DeviceDrop::RxQueueFull, self.drops.ring_full),
        ]
    }
}
