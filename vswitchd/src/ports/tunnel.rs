//! `type=vxlan` and `type=gre` ports: frames in a tunnel to another host,
//! through the kernel's sockets, as OVS's userspace tunnels do in spirit
//! (OVS builds the outer headers itself and sends on a NIC; here the
//! kernel does, so the host's routes and ARP reach the remote end and no
//! NIC has to be given to the switch).
//!
//! - One socket per endpoint ([`Endpoint`]: kind, local address, UDP
//!   port), shared by every tunnel port that uses it, in any bridge:
//!   VXLAN is a UDP socket bound to the port (4789), GRE a raw IPv4 socket
//!   for protocol 47. The datapath reads each endpoint's socket and finds
//!   the port a packet belongs to with [`crate::core::tunnel::TunnelMap`]; the ports only send.
//! - Sending: each frame is finished (GSO frames cut into segments,
//!   partial checksums completed, as [`offload::finish`] does for any port
//!   without offloads) straight into the send buffer behind its VXLAN or
//!   GRE header, and the batch goes out in one `sendmmsg`. On VXLAN, the
//!   datagrams one frame was cut into go as one message with
//!   UDP_SEGMENT: the kernel walks its stack once for them and splits
//!   them at the end (a kernel or a path that cannot, and GRE, get them
//!   one by one).
//! - Who sends: each port has a send thread for bulk. A batch of 16 KiB or
//!   more of datagrams (GSO frames) is handed to it, so that the datapath
//!   switches the next batch meanwhile: the system calls are most of a
//!   sending host's work (GRE's one per datagram; on a veth underlay each
//!   also runs the receiving host's side). A smaller batch is sent on the
//!   datapath's own thread when the send thread has nothing in flight, so a
//!   ping pays no hand-over (about 50 us to wake a thread on this VM) and
//!   order is kept. Two jobs (batches) cycle between them; the datapath
//!   waits when both are out, so the thread's pace is the port's. A send
//!   the kernel refuses on the thread is counted as `tx_tunnel_refused`
//!   only, the frames having been counted as sent.
//! - Receiving, VXLAN sockets ask for UDP_GRO: a flow's datagrams arrive
//!   coalesced, and the datapath cuts them apart again (then merges their
//!   TCP segments, [`crate::core::tunnel::gro`]). The sockets say IP_PMTUDISC_DONT: an outer
//!   packet bigger than the path is fragmented by the kernel, never
//!   dropped or sent corrupt. Fragments are slow, so the advice is an
//!   inner MTU of 1450 for VXLAN and 1458 for GRE on a 1500-byte underlay.
//! - Receiving: `recvmmsg` of up to 32 packets; IP_PKTINFO gives VXLAN's
//!   outer destination (`tun_dst`), GRE's comes in the IP header. Packets
//!   for no port, or malformed, are counted per reason on the endpoint and
//!   shown on each of its ports (`rx_tunnel_*` in `dump-ports`).
//!
//! Costs: 2 MiB of receive slots in the datapath (32 datagrams of up to
//! 64 KiB, which is what a reassembled fragmented packet can be); per port
//! a thread, idle but under bulk traffic, and two send buffers of up to a
//! batch each; one copy of each frame into a send buffer with its header.

use std::collections::BTreeMap;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use super::sys;
use super::{device_error, DeviceDrop, Frames, PacketBatch, PortDevice, BATCH_SIZE};
use crate::config::InterfaceConfig;
use crate::core::offload;
use crate::core::tunnel::{encap, Endpoint, TunnelConfig, TunnelDrop, TunnelKind, IPPROTO_GRE};
use proto::RpcError;

const DATAGRAM_MAX: usize = 65_536;
const CMSG_SPACE: usize = 64;
/// Linux's UDP segmentation and coalescing options (`linux/udp.h`), which
/// the libc crate does not define for glibc targets.
const UDP_SEGMENT: libc::c_int = 103;
const UDP_GRO: libc::c_int = 104;
/// Segments one UDP_SEGMENT send may carry (the kernel's UDP_MAX_SEGMENTS).
const GSO_MAX_SEGMENTS: usize = 64;
/// Bytes one UDP_SEGMENT send may carry: a UDP length is 16 bits.
const GSO_MAX_BYTES: usize = 65_000;
const SOCKET_BUFFER: libc::c_int = 8 << 20;
/// Datagrams per `sendmmsg`: a batch of GSO frames becomes many segments.
const SEND_CHUNK: usize = 256;

/// An endpoint's socket and what it dropped on receipt.
pub struct TunnelSocket {
    pub endpoint: Endpoint,
    fd: OwnedFd,
    drops: [AtomicU64; TunnelDrop::ALL.len()],
}

/// Every open endpoint, so that ports on the same one share its socket
/// (a second socket bound to the same UDP port would be refused).
static SOCKETS: Mutex<BTreeMap<Endpoint, Weak<TunnelSocket>>> = Mutex::new(BTreeMap::new());

fn zeroed<T>() -> T {
    // SAFETY: only used for the C structs below, for which all zeroes is valid.
    unsafe { std::mem::zeroed() }
}

fn sockaddr(ip: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    let mut addr: libc::sockaddr_in = zeroed();
    addr.sin_family = libc::AF_INET as libc::sa_family_t;
    addr.sin_port = port.to_be();
    addr.sin_addr.s_addr = u32::from(ip).to_be();
    addr
}

impl TunnelSocket {
    /// The endpoint's socket, opened if no port has it open yet.
    pub fn shared(endpoint: Endpoint) -> io::Result<Arc<TunnelSocket>> {
        let mut sockets = SOCKETS.lock().unwrap_or_else(|e| e.into_inner());
        sockets.retain(|_, s| s.strong_count() > 0);
        if let Some(socket) = sockets.get(&endpoint).and_then(Weak::upgrade) {
            return Ok(socket);
        }
        let socket =
            Arc::new(TunnelSocket { endpoint, fd: Self::open(endpoint)?, drops: Default::default() });
        sockets.insert(endpoint, Arc::downgrade(&socket));
        Ok(socket)
    }

    fn open(endpoint: Endpoint) -> io::Result<OwnedFd> {
        let (kind, protocol) = match endpoint.kind {
            TunnelKind::Vxlan => (libc::SOCK_DGRAM, 0),
            TunnelKind::Gre => (libc::SOCK_RAW, libc::c_int::from(IPPROTO_GRE)),
        };
        // SAFETY: a plain socket call; the result is checked.
        let fd =
            unsafe { libc::socket(libc::AF_INET, kind | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, protocol) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return Err(if e.raw_os_error() == Some(libc::EPERM) {
                io::Error::new(e.kind(), "permission denied (a GRE raw socket needs root or CAP_NET_RAW)")
            } else {
                e
            });
        }
        // SAFETY: `fd` is a fresh descriptor owned from here on.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        let raw = socket.as_raw_fd();
        sys::setsockopt_int(raw, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, libc::IP_PMTUDISC_DONT)?;
        if endpoint.kind == TunnelKind::Vxlan {
            sys::setsockopt_int(raw, libc::IPPROTO_IP, libc::IP_PKTINFO, 1)?;
            // Datagrams of one flow arrive coalesced (each read up to 64
            // KiB, cut at the size the kernel says); a kernel without
            // UDP_GRO hands them one by one, which works the same.
            if let Err(e) = sys::setsockopt_int(raw, libc::SOL_UDP, UDP_GRO, 1) {
                tracing::debug!("no UDP_GRO on the VXLAN socket: {e}");
            }
        }
        for (force, plain) in
            [(libc::SO_RCVBUFFORCE, libc::SO_RCVBUF), (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF)]
        {
            if sys::setsockopt_int(raw, libc::SOL_SOCKET, force, SOCKET_BUFFER).is_err() {
                let _ = sys::setsockopt_int(raw, libc::SOL_SOCKET, plain, SOCKET_BUFFER);
            }
        }
        let addr = sockaddr(endpoint.local, endpoint.port);
        // SAFETY: binds to a sockaddr_in we own, with its exact size.
        let rc = unsafe {
            libc::bind(
                raw,
                (&addr as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EADDRINUSE) => io::Error::new(
                    e.kind(),
                    format!(
                        "UDP port {} is already in use on {} (a kernel vxlan device in this namespace?): \
                         choose another options:dst_port or options:local_ip",
                        endpoint.port, endpoint.local
                    ),
                ),
                Some(libc::EADDRNOTAVAIL) => io::Error::new(
                    e.kind(),
                    format!("options:local_ip={} is not an address of this host", endpoint.local),
                ),
                _ => e,
            });
        }
        Ok(socket)
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn count(&self, drop: TunnelDrop) {
        self.drops[drop.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn dropped(&self, drop: TunnelDrop) -> u64 {
        self.drops[drop.index()].load(Ordering::Relaxed)
    }

    /// Receives up to a batch into `rx`; returns how many datagrams.
    pub fn recv_batch(&self, rx: &mut TunnelRx) -> usize {
        for i in 0..BATCH_SIZE {
            rx.iovecs[i] = libc::iovec {
                iov_base: rx.slots[i * DATAGRAM_MAX..].as_mut_ptr().cast(),
                iov_len: DATAGRAM_MAX,
            };
            let msg = &mut rx.msgs[i];
            msg.msg_len = 0;
            msg.msg_hdr = zeroed();
            msg.msg_hdr.msg_name = (&mut rx.names[i] as *mut libc::sockaddr_in).cast();
            msg.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            msg.msg_hdr.msg_iov = &mut rx.iovecs[i];
            msg.msg_hdr.msg_iovlen = 1;
            msg.msg_hdr.msg_control = rx.cmsgs[i * CMSG_SPACE..].as_mut_ptr().cast();
            msg.msg_hdr.msg_controllen = CMSG_SPACE;
        }
        // SAFETY: every message points at buffers owned by `rx` that
        // outlive the call, with their true lengths.
        let n = unsafe {
            libc::recvmmsg(
                self.fd(),
                rx.msgs.as_mut_ptr(),
                BATCH_SIZE as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::WouldBlock {
                tracing::warn!(endpoint = ?self.endpoint, "tunnel socket receive failed: {e}");
            }
            return 0;
        }
        let n = n as usize;
        for i in 0..n {
            if rx.msgs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                self.count(TunnelDrop::Truncated);
                rx.msgs[i].msg_len = 0;
            }
        }
        rx.received = n;
        n
    }
}

/// The datapath's receive slots for tunnel sockets.
pub struct TunnelRx {
    slots: Vec<u8>,
    cmsgs: Vec<u8>,
    names: Vec<libc::sockaddr_in>,
    iovecs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    received: usize,
}

// SAFETY: the raw pointers inside `iovecs` and `msgs` are rewritten to
// point into buffers this value owns right before every receive and are
// only read in between; moving the value between threads leaves none in use.
unsafe impl Send for TunnelRx {}

impl Default for TunnelRx {
    fn default() -> Self {
        TunnelRx {
            slots: vec![0; BATCH_SIZE * DATAGRAM_MAX],
            cmsgs: vec![0; BATCH_SIZE * CMSG_SPACE],
            names: (0..BATCH_SIZE).map(|_| zeroed()).collect(),
            iovecs: (0..BATCH_SIZE).map(|_| zeroed()).collect(),
            msgs: (0..BATCH_SIZE).map(|_| zeroed()).collect(),
            received: 0,
        }
    }
}

impl TunnelRx {
    pub fn buffer_bytes(&self) -> usize {
        self.slots.len() + self.cmsgs.len()
    }

    /// Message `i` of the last receive: outer source, outer destination
    /// (0.0.0.0 if the kernel did not say), the payload (for GRE, the
    /// whole IP packet) and the size its datagrams were coalesced at (with
    /// UDP_GRO, the payload holds several datagrams back to back, each of
    /// that size but the last). `None` past the end or for a truncated one.
    pub fn get(&self, i: usize) -> Option<(Ipv4Addr, Ipv4Addr, &[u8], Option<usize>)> {
        if i >= self.received || self.msgs[i].msg_len == 0 {
            return None;
        }
        let len = self.msgs[i].msg_len as usize;
        let src = Ipv4Addr::from(u32::from_be(self.names[i].sin_addr.s_addr));
        let (dst, segment) = self.control(i);
        Some((src, dst, &self.slots[i * DATAGRAM_MAX..i * DATAGRAM_MAX + len], segment))
    }

    pub fn len(&self) -> usize {
        self.received
    }

    pub fn is_empty(&self) -> bool {
        self.received == 0
    }

    /// The outer destination (IP_PKTINFO) and the coalesced datagrams'
    /// size (UDP_GRO) of message `i`.
    fn control(&self, i: usize) -> (Ipv4Addr, Option<usize>) {
        let hdr = &self.msgs[i].msg_hdr;
        let (mut destination, mut segment) = (Ipv4Addr::UNSPECIFIED, None);
        // SAFETY: walks the control buffer the kernel filled for this
        // message with the CMSG_* macros, within msg_controllen.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
            while !cmsg.is_null() {
                match ((*cmsg).cmsg_level, (*cmsg).cmsg_type) {
                    (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                        let info: libc::in_pktinfo = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                        destination = Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr));
                    }
                    (libc::SOL_UDP, UDP_GRO) => {
                        let size: libc::c_int = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                        segment = usize::try_from(size).ok().filter(|s| *s > 0);
                    }
                    _ => {}
                }
                cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
            }
        }
        (destination, segment)
    }
}

/// A tunnel port: it sends through its endpoint's socket; the datapath
/// receives for it.
pub struct TunnelPort {
    config: TunnelConfig,
    socket: Arc<TunnelSocket>,
    /// Sends small batches while the thread has nothing in flight.
    inline: Sender,
    thread: SendThread,
    tx_drops: [u64; TunnelDrop::ALL.len()],
    tx_bad_offload: u64,
    /// Sends the kernel refused; counted by whichever thread sends.
    tx_refused: Arc<AtomicU64>,
}

/// Batches of fewer encapsulated bytes than this go out on the datapath's
/// thread when the send thread has nothing in flight (so order is kept):
/// a ping or a small flood pays no hand-over. Bulk (GSO frames) goes to the
/// send thread: every datagram is a system call (GRE) or a 64 KiB copy
/// (VXLAN), and on a veth underlay each call also carries the receiving
/// host's work (the kernel runs the peer's receive in the sender's
/// context), which the datapath's thread then does not wait for.
const SEND_INLINE_BELOW: usize = 16 * 1024;

/// One batch's datagrams, encapsulated, and the sends they go in.
#[derive(Default)]
struct SendJob {
    /// Encapsulated datagrams, back to back.
    buffer: Vec<u8>,
    /// Each datagram's end in `buffer`, remote end and the frame it came from.
    datagrams: Vec<(usize, libc::sockaddr_in, usize)>,
    /// Runs of datagrams that go in one message.
    sends: Vec<Outgoing>,
    /// Per frame of the batch: whether all of it went out (or, before the
    /// send, whether it made datagrams).
    sent: Vec<bool>,
}

/// Room for one control message, aligned as `cmsghdr` must be.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct ControlBuffer([u8; CMSG_SPACE]);

/// One message of a batch: datagrams `first..last` (indices into
/// `datagrams`, back to back in the buffer), all of `segment` bytes but the
/// last, which may be shorter. More than one datagram: UDP_SEGMENT.
#[derive(Debug, Clone, Copy)]
struct Outgoing {
    first: usize,
    last: usize,
    segment: usize,
    /// The datagrams' bytes together.
    bytes: usize,
    /// Every datagram so far is `segment` long: another may follow.
    full: bool,
}

/// The socket and the kernel's message structures, on the thread that sends.
struct Sender {
    socket: Arc<TunnelSocket>,
    iovecs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    /// One UDP_SEGMENT control message per send.
    controls: Vec<ControlBuffer>,
    /// Whether the socket takes UDP_SEGMENT (VXLAN, and the kernel has it).
    udp_gso: bool,
    refused: Arc<AtomicU64>,
}

// SAFETY: the raw pointers inside `iovecs` and `msgs` are rewritten to
// point into the job being sent and `controls` right before every send and
// never read otherwise; moving the value between threads leaves none in use.
unsafe impl Send for Sender {}

impl SendJob {
    /// Groups the datagrams into sends: with UDP segmentation, the
    /// datagrams one frame was cut into (same remote end, same size but the
    /// last) go to the kernel as one message, which it splits again on the
    /// way out, after the whole stack was walked once.
    fn plan_sends(&mut self, udp_gso: bool) {
        self.sends.clear();
        let mut start = 0;
        for (k, &(end, _, frame)) in self.datagrams.iter().enumerate() {
            let len = end - start;
            let joins = udp_gso
                && self.sends.last().is_some_and(|last| {
                    // Only the final datagram of a send may be shorter.
                    last.full
                        && self.datagrams[last.first].2 == frame
                        && len <= last.segment
                        && last.last - last.first < GSO_MAX_SEGMENTS
                        && last.bytes + len <= GSO_MAX_BYTES
                });
            match self.sends.last_mut() {
                Some(last) if joins => {
                    last.last = k + 1;
                    last.bytes += len;
                    last.full = len == last.segment;
                }
                _ => {
                    self.sends.push(Outgoing { first: k, last: k + 1, segment: len, bytes: len, full: true })
                }
            }
            start = end;
        }
    }
}

impl Sender {
    fn new(socket: Arc<TunnelSocket>, udp_gso: bool, refused: Arc<AtomicU64>) -> Sender {
        Sender {
            socket,
            iovecs: (0..SEND_CHUNK).map(|_| zeroed()).collect(),
            msgs: (0..SEND_CHUNK).map(|_| zeroed()).collect(),
            controls: vec![ControlBuffer([0; CMSG_SPACE]); SEND_CHUNK],
            udp_gso,
            refused,
        }
    }

    /// Sends the job's datagrams; a frame with a refused send is marked
    /// unsent in `job.sent`.
    fn send(&mut self, job: &mut SendJob) {
        job.plan_sends(self.udp_gso);
        let mut next = 0;
        while next < job.sends.len() {
            let count = (job.sends.len() - next).min(SEND_CHUNK);
            for k in 0..count {
                let send = job.sends[next + k];
                let start = if send.first == 0 { 0 } else { job.datagrams[send.first - 1].0 };
                let end = job.datagrams[send.last - 1].0;
                self.iovecs[k] =
                    libc::iovec { iov_base: job.buffer[start..].as_mut_ptr().cast(), iov_len: end - start };
                let msg = &mut self.msgs[k];
                msg.msg_hdr = zeroed();
                msg.msg_hdr.msg_name = (&mut job.datagrams[send.first].1 as *mut libc::sockaddr_in).cast();
                msg.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
                msg.msg_hdr.msg_iov = &mut self.iovecs[k];
                msg.msg_hdr.msg_iovlen = 1;
                msg.msg_len = 0;
                if send.last - send.first > 1 {
                    let control = &mut self.controls[k];
                    msg.msg_hdr.msg_control = control.0.as_mut_ptr().cast();
                    // SAFETY: CMSG_SPACE of a u16 is well within the
                    // 64-byte, 8-aligned buffer the header points at.
                    unsafe {
                        msg.msg_hdr.msg_controllen = libc::CMSG_SPACE(2) as usize;
                        let cmsg = libc::CMSG_FIRSTHDR(&msg.msg_hdr);
                        (*cmsg).cmsg_level = libc::SOL_UDP;
                        (*cmsg).cmsg_type = UDP_SEGMENT;
                        (*cmsg).cmsg_len = libc::CMSG_LEN(2) as usize;
                        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), send.segment as u16);
                    }
                }
            }
            // SAFETY: the messages point into the job's buffer and
            // datagrams and into `iovecs` and `controls`, all unchanged
            // during the call.
            let n = unsafe {
                libc::sendmmsg(self.socket.fd(), self.msgs.as_mut_ptr(), count as u32, libc::MSG_DONTWAIT)
            };
            if n <= 0 {
                let send = job.sends[next];
                let error = io::Error::last_os_error().raw_os_error();
                if send.last - send.first > 1
                    && matches!(error, Some(libc::EINVAL | libc::EIO | libc::ENOPROTOOPT))
                {
                    // The kernel cannot segment this send (no UDP_SEGMENT,
                    // or segments bigger than the device's MTU, which it
                    // would have to fragment): its datagrams go one by one,
                    // as do all later ones of this port.
                    tracing::debug!("UDP segmentation refused ({error:?}); sending datagrams one by one");
                    self.udp_gso = false;
                    let singles: Vec<Outgoing> = (send.first..send.last)
                        .map(|k| {
                            let start = if k == 0 { 0 } else { job.datagrams[k - 1].0 };
                            let len = job.datagrams[k].0 - start;
                            Outgoing { first: k, last: k + 1, segment: len, bytes: len, full: true }
                        })
                        .collect();
                    job.sends.splice(next..next + 1, singles);
                    continue;
                }
                // The send at `next` is refused (no route, too big,
                // buffers full): count it and go on with the rest.
                self.refused.fetch_add(1, Ordering::Relaxed);
                job.sent[job.datagrams[send.first].2] = false;
                next += 1;
                continue;
            }
            next += n as usize;
        }
    }
}

/// A thread that sends a port's jobs, in order. Jobs cycle: the datapath
/// fills one while the thread sends another; with every job in flight the
/// datapath waits for one back, so the thread's pace is the port's.
struct SendThread {
    jobs: Option<crossbeam_channel::Sender<SendJob>>,
    spare: crossbeam_channel::Receiver<SendJob>,
    /// Jobs back from the thread or never sent, to fill again.
    kept: Vec<SendJob>,
    /// Jobs handed to the thread and not yet back.
    in_flight: usize,
    /// Jobs made so far (at most [`SEND_JOBS`]).
    made: usize,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// One being filled while another is sent: each holds up to a batch of
/// 64 KiB frames, cut.
const SEND_JOBS: usize = 2;

impl SendThread {
    fn spawn(mut sender: Sender) -> io::Result<SendThread> {
        let (jobs, queued) = crossbeam_channel::bounded::<SendJob>(1);
        let (give_back, spare) = crossbeam_channel::bounded(SEND_JOBS);
        let thread = std::thread::Builder::new().name("tunnel-send".into()).spawn(move || {
            for mut job in queued {
                sender.send(&mut job);
                if give_back.send(job).is_err() {
                    break;
                }
            }
        })?;
        Ok(SendThread {
            jobs: Some(jobs),
            spare,
            kept: Vec::new(),
            in_flight: 0,
            made: 0,
            thread: Some(thread),
        })
    }

    /// Takes in the jobs the thread gave back.
    fn collect(&mut self) {
        while let Ok(job) = self.spare.try_recv() {
            self.in_flight -= 1;
            self.kept.push(job);
        }
    }

    /// Whether every job handed over has been sent.
    fn idle(&mut self) -> bool {
        self.collect();
        self.in_flight == 0
    }

    /// An empty job to fill: one given back, a new one, or the next the
    /// thread gives back.
    fn job(&mut self) -> SendJob {
        self.collect();
        if let Some(job) = self.kept.pop() {
            return job;
        }
        if self.made < SEND_JOBS {
            self.made += 1;
            return SendJob::default();
        }
        match self.spare.recv() {
            Ok(job) => {
                self.in_flight -= 1;
                job
            }
            // The thread is gone: a new job keeps the port going (its
            // sends are then counted as refused).
            Err(_) => SendJob::default(),
        }
    }

    /// Takes back a job that was not handed over.
    fn keep(&mut self, job: SendJob) {
        self.kept.push(job);
    }

    /// Hands a filled job to the thread; false if the thread is gone.
    fn submit(&mut self, job: SendJob) -> bool {
        let handed = self.jobs.as_ref().is_some_and(|jobs| jobs.send(job).is_ok());
        self.in_flight += usize::from(handed);
        handed
    }
}

impl Drop for SendThread {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it sent what is queued.
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl TunnelPort {
    pub fn open(interface: &InterfaceConfig) -> Result<TunnelPort, RpcError> {
        let kind = TunnelKind::parse(interface.kind()).expect("only called for tunnel types");
        let config = TunnelConfig::from_options(kind, &interface.options).map_err(device_error)?;
        let socket = TunnelSocket::shared(config.endpoint())
            .map_err(|e| device_error(format!("cannot open the {} tunnel socket: {e}", kind.name())))?;
        let tx_refused = Arc::new(AtomicU64::new(0));
        let udp_gso = kind == TunnelKind::Vxlan;
        let thread = SendThread::spawn(Sender::new(socket.clone(), udp_gso, tx_refused.clone()))
            .map_err(|e| device_error(format!("cannot start the tunnel port's send thread: {e}")))?;
        Ok(TunnelPort {
            config,
            inline: Sender::new(socket.clone(), udp_gso, tx_refused.clone()),
            socket,
            thread,
            tx_drops: [0; TunnelDrop::ALL.len()],
            tx_bad_offload: 0,
            tx_refused,
        })
    }

    /// Encapsulates every frame of `frames` into `job`.
    fn encapsulate(&mut self, frames: Frames<'_>, job: &mut SendJob) {
        job.buffer.clear();
        job.datagrams.clear();
        job.sent.clear();
        job.sent.resize(frames.len(), false);
        for i in 0..frames.len() {
            let packet = frames.get(i).expect("within the batch");
            let (remote, header) = match encap(&self.config, &frames.tunnel(i)) {
                Ok(found) => found,
                Err(drop) => {
                    self.tx_drops[drop.index()] += 1;
                    continue;
                }
            };
            let addr = sockaddr(remote, self.config.dst_port);
            let datagrams = &mut job.datagrams;
            // Segments are cut straight into the send buffer behind their
            // tunnel header: one copy of each byte.
            let finished = offload::finish_into(
                packet.data,
                &packet.offload,
                header.as_bytes(),
                &mut job.buffer,
                &mut |buffer| datagrams.push((buffer.len(), addr, i)),
            );
            if finished.is_err() {
                self.tx_bad_offload += 1;
            }
        }
        // A frame counts as sent when it made datagrams and none was refused.
        for &(_, _, frame) in &job.datagrams {
            job.sent[frame] = true;
        }
    }
}

impl PortDevice for TunnelPort {
    /// A frame handed to the send thread counts as taken once encapsulated:
    /// a send the kernel refuses later is counted as `tx_tunnel_refused`
    /// only, not in the port's `tx_dropped`.
    fn send_batch(&mut self, frames: Frames<'_>) -> usize {
        let mut job = self.thread.job();
        self.encapsulate(frames, &mut job);
        let made = job.sent.iter().filter(|sent| **sent).count();
        if made == 0 {
            self.thread.keep(job);
            return 0;
        }
        if job.buffer.len() < SEND_INLINE_BELOW && self.thread.idle() {
            self.inline.send(&mut job);
            let sent = job.sent.iter().filter(|sent| **sent).count();
            self.thread.keep(job);
            return sent;
        }
        if self.thread.submit(job) {
            made
        } else {
            self.tx_refused.fetch_add(1, Ordering::Relaxed);
            0
        }
    }

    fn recv_batch(&mut self, _batch: &mut PacketBatch) -> usize {
        0
    }

    fn error(&self) -> Option<String> {
        None
    }

    fn tunnel(&self) -> Option<(&Arc<TunnelSocket>, &TunnelConfig)> {
        Some((&self.socket, &self.config))
    }

    fn device_drops(&self) -> Vec<(DeviceDrop, u64)> {
        // Receive drops are the endpoint's (a packet for no port belongs to
        // none), shown on each of its ports; they are not in `rx_packets`.
        let mut drops: Vec<(DeviceDrop, u64)> = TunnelDrop::ALL
            .iter()
            .map(|d| match d {
                TunnelDrop::NoRemote | TunnelDrop::KeyTooWide => {
                    (DeviceDrop::Tunnel(*d), self.tx_drops[d.index()])
                }
                _ => (DeviceDrop::Tunnel(*d), self.socket.dropped(*d)),
            })
            .collect();
        drops.push((DeviceDrop::TxBadOffload, self.tx_bad_offload));
        drops.push((DeviceDrop::TxTunnelRefused, self.tx_refused.load(Ordering::Relaxed)));
        drops
    }
}
