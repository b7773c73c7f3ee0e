//! How many GRE-sized datagrams the kernel itself can carry between two
//! namespaces, with no switch and no TCP: the ceiling of any GRE port that
//! sends and receives through kernel sockets, as vswitchd's does (issue 19).
//! `benches/gre-ceiling.sh` runs it in namespaces of its own.
//!
//! ```text
//! gre_ceiling recv SECS                      count what a raw IPv4 socket (protocol 47) gets
//! gre_ceiling send DST SECS                  a raw IPv4 socket, sendmmsg of 32 datagrams
//! gre_ceiling packet-send IFACE MAC SRC DST SECS
//!                                            the same datagrams with their IPv4 header,
//!                                            through AF_PACKET with PACKET_QDISC_BYPASS
//!                                            (no IP output path: no route, netfilter or ARP)
//! gre_ceiling xdp-recv IFACE SECS            bypass the receiving stack: an XDP program on
//!                                            IFACE gives every frame to an AF_XDP socket
//! gre_ceiling xdp-send IFACE MAC SRC DST SECS
//!                                            the same frames from an AF_XDP socket's ring
//! ```
//!
//! AF_XDP runs in copy mode (what a veth offers): it shows whether
//! bypassing the kernel's stack on both hosts would lift the ceiling.
//!
//! Every datagram is a 1,500-byte IPv4 packet: a GRE header with a key (8
//! bytes) and 1,472 bytes of carried Ethernet frame, which is what a
//! 1,458-byte-MTU container's full TCP segment (1,406 bytes of payload
//! with timestamps) becomes. Rates are also given as that TCP payload, in
//! Gbit/s, to compare with iperf3 across a GRE overlay.

use std::ffi::CString;
use std::io;
use std::mem::{size_of, zeroed};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const BATCH: usize = 32;
const PACKET: usize = 1500;
const IP_HEADER: usize = 20;
const GRE_WITH_KEY: [u8; 8] = [0x20, 0x00, 0x65, 0x58, 0, 0, 0, 42];
const TCP_PAYLOAD: f64 = 1406.0;
const IPPROTO_GRE: libc::c_int = 47;
const ETH_P_IP: u16 = 0x0800;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["recv", secs] => seconds(secs).and_then(receive),
        ["send", dst, secs] => address(dst).and_then(|dst| send_raw(dst, seconds(secs)?)),
        ["packet-send", iface, mac, src, dst, secs] => {
            (|| send_packet(iface, parse_mac(mac)?, address(src)?, address(dst)?, seconds(secs)?))()
        }
        ["xdp-recv", iface, secs] => (|| xdp::receive(interface(iface)?, seconds(secs)?))(),
        ["xdp-send", iface, mac, src, dst, secs] => {
            (|| xdp::send(interface(iface)?, parse_mac(mac)?, address(src)?, address(dst)?, seconds(secs)?))()
        }
        _ => {
            eprintln!(
                "usage: gre_ceiling recv SECS | send DST SECS | packet-send IFACE MAC SRC DST SECS \
                 | xdp-recv IFACE SECS | xdp-send IFACE MAC SRC DST SECS"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gre_ceiling: {e}");
            ExitCode::FAILURE
        }
    }
}

fn seconds(text: &str) -> io::Result<Duration> {
    text.parse::<f64>()
        .ok()
        .filter(|s| *s > 0.0 && s.is_finite())
        .map(Duration::from_secs_f64)
        .ok_or_else(|| invalid(format!("{text} is not a number of seconds")))
}

fn address(text: &str) -> io::Result<Ipv4Addr> {
    text.parse().map_err(|_| invalid(format!("{text} is not an IPv4 address")))
}

fn parse_mac(text: &str) -> io::Result<[u8; 6]> {
    let bytes: Option<Vec<u8>> = text.split(':').map(|b| u8::from_str_radix(b, 16).ok()).collect();
    bytes.and_then(|b| b.try_into().ok()).ok_or_else(|| invalid(format!("{text} is not a MAC address")))
}

fn interface(name: &str) -> io::Result<u32> {
    let c_name = CString::new(name).map_err(|_| invalid(format!("{name} is not an interface name")))?;
    // SAFETY: c_name is a NUL-terminated string alive for the call.
    match unsafe { libc::if_nametoindex(c_name.as_ptr()) } {
        0 => Err(invalid(format!("no interface {name} in this namespace"))),
        index => Ok(index),
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

fn socket(domain: libc::c_int, kind: libc::c_int, protocol: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: a plain socket call; the result is checked before it is owned.
    let fd = unsafe { libc::socket(domain, kind | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn set_option<T>(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, value: T) -> io::Result<()> {
    // SAFETY: value lives across the call and its size is passed with it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn report(what: &str, datagrams: u64, elapsed: Duration, note: &str) {
    let secs = elapsed.as_secs_f64();
    let rate = datagrams as f64 / secs;
    println!(
        "{what}: {datagrams} datagrams in {secs:.2} s = {rate:.0} per s = {:.2} Gbit/s of TCP payload{note}",
        rate * TCP_PAYLOAD * 8.0 / 1e9
    );
}

/// The first `len` bytes of each buffer.
fn buffer_iovecs(buffers: &mut [[u8; PACKET]], len: usize) -> Vec<libc::iovec> {
    buffers.iter_mut().map(|b| libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: len }).collect()
}

/// One message per iovec, each to `to` if given: the caller keeps `iovs`
/// and `to` alive while the messages are in use.
fn messages(iovs: &mut [libc::iovec], to: Option<&libc::sockaddr_ll>) -> Vec<libc::mmsghdr> {
    iovs.iter_mut()
        .map(|iov| {
            // SAFETY: all zeroes is a valid mmsghdr.
            let mut m: libc::mmsghdr = unsafe { zeroed() };
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            if let Some(to) = to {
                m.msg_hdr.msg_name = (to as *const libc::sockaddr_ll).cast_mut().cast();
                m.msg_hdr.msg_namelen = size_of::<libc::sockaddr_ll>() as u32;
            }
            m
        })
        .collect()
}

/// Sends the packets, all of them in each `sendmmsg`, until `secs` pass.
fn send_loop(
    fd: &OwnedFd,
    packets: &mut [[u8; PACKET]],
    len: usize,
    to: Option<&libc::sockaddr_ll>,
    secs: Duration,
    what: &str,
) {
    let mut iovs = buffer_iovecs(packets, len);
    let mut msgs = messages(&mut iovs, to);
    let (start, mut sent, mut refused) = (Instant::now(), 0u64, 0u64);
    while start.elapsed() < secs {
        // SAFETY: msgs points at iovs, packets and `to`, all alive for the call.
        let n = unsafe { libc::sendmmsg(fd.as_raw_fd(), msgs.as_mut_ptr(), BATCH as u32, 0) };
        if n < 0 {
            refused += 1;
        } else {
            sent += n as u64;
        }
    }
    report(what, sent, start.elapsed(), &format!("; {refused} batches refused"));
}

fn send_raw(dst: Ipv4Addr, secs: Duration) -> io::Result<()> {
    let fd = socket(libc::AF_INET, libc::SOCK_RAW, IPPROTO_GRE)?;
    // As vswitchd's GRE socket: the kernel fragments rather than refuses.
    set_option(&fd, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, libc::IP_PMTUDISC_DONT)?;
    // SAFETY: all zeroes is a valid sockaddr_in; the fields are set below.
    let mut to: libc::sockaddr_in = unsafe { zeroed() };
    to.sin_family = libc::AF_INET as libc::sa_family_t;
    to.sin_addr.s_addr = u32::from(dst).to_be();
    // SAFETY: `to` is a sockaddr_in of the size given.
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&to as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as u32,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut packets = vec![[0u8; PACKET]; BATCH];
    for p in &mut packets {
        p[..GRE_WITH_KEY.len()].copy_from_slice(&GRE_WITH_KEY);
    }
    send_loop(&fd, &mut packets, PACKET - IP_HEADER, None, secs, "raw socket send");
    Ok(())
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The 1,500-byte IPv4 packet with its GRE header and a zeroed frame.
fn gre_packet(id: u16, src: Ipv4Addr, dst: Ipv4Addr) -> [u8; PACKET] {
    let mut p = [0u8; PACKET];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(PACKET as u16).to_be_bytes());
    p[4..6].copy_from_slice(&id.to_be_bytes());
    p[8] = 64;
    p[9] = IPPROTO_GRE as u8;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let checksum = ipv4_checksum(&p[..IP_HEADER]);
    p[10..12].copy_from_slice(&checksum.to_be_bytes());
    p[IP_HEADER..IP_HEADER + GRE_WITH_KEY.len()].copy_from_slice(&GRE_WITH_KEY);
    p
}

fn send_packet(iface: &str, mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr, secs: Duration) -> io::Result<()> {
    let ifindex = interface(iface)?;
    let fd = socket(libc::AF_PACKET, libc::SOCK_DGRAM, libc::c_int::from(ETH_P_IP.to_be()))?;
    set_option(&fd, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, 1 as libc::c_int)?;
    // SAFETY: all zeroes is a valid sockaddr_ll; the fields are set below.
    let mut to: libc::sockaddr_ll = unsafe { zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_protocol = ETH_P_IP.to_be();
    to.sll_ifindex = ifindex as i32;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&mac);
    let mut packets: Vec<[u8; PACKET]> = (0..BATCH as u16).map(|id| gre_packet(id, src, dst)).collect();
    send_loop(&fd, &mut packets, PACKET, Some(&to), secs, "AF_PACKET send");
    Ok(())
}

/// Counts datagrams from the first one until a second passes without any
/// (or `secs` and 5 more seconds pass).
fn receive(secs: Duration) -> io::Result<()> {
    let fd = socket(libc::AF_INET, libc::SOCK_RAW, IPPROTO_GRE)?;
    set_option(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, (8 << 20) as libc::c_int)?;
    let idle = libc::timeval { tv_sec: 1, tv_usec: 0 };
    set_option(&fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, idle)?;
    let mut buffers = vec![[0u8; PACKET]; BATCH];
    let mut iovs = buffer_iovecs(&mut buffers, PACKET);
    let mut msgs = messages(&mut iovs, None);
    let deadline = Instant::now() + secs + Duration::from_secs(5);
    let (mut first, mut last, mut received) = (None, Instant::now(), 0u64);
    while Instant::now() < deadline {
        // MSG_WAITFORONE: return what is there rather than wait to fill the
        // batch, which would add up to the idle second to the last call.
        // SAFETY: msgs points at iovs and buffers, alive for the call.
        let n = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            if first.is_some() {
                break;
            }
            continue;
        }
        first.get_or_insert_with(Instant::now);
        last = Instant::now();
        received += n as u64;
    }
    match first {
        Some(first) => report("raw socket receive", received, last - first, ""),
        None => println!("raw socket receive: nothing arrived"),
    }
    Ok(())
}

/// AF_XDP in copy mode, by hand (no libbpf): the receiver loads a
/// five-instruction XDP program that redirects every frame of its queue to
/// its socket (an XSKMAP of one entry), and both ends move frames through
/// the shared rings: fill and RX on the receiver, TX and completion on the
/// sender. Probe code: one queue, one socket per side.
mod xdp {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    const FRAMES: usize = 4096;
    const FRAME_SIZE: usize = 2048;
    const RING: u32 = 2048;
    /// An Ethernet header and the 1,500-byte packet.
    const FRAME_LEN: usize = 14 + PACKET;

    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_LINK_CREATE: libc::c_long = 28;
    const BPF_MAP_TYPE_XSKMAP: u32 = 17;
    const BPF_PROG_TYPE_XDP: u32 = 6;
    const BPF_XDP: u32 = 37;
    const BPF_FUNC_REDIRECT_MAP: i32 = 51;
    const BPF_PSEUDO_MAP_FD: u8 = 1;
    const XDP_PASS: i32 = 2;

    /// `union bpf_attr`, as bytes: each command reads its own fields.
    struct Attr([u8; 128]);

    impl Attr {
        fn new() -> Self {
            Attr([0; 128])
        }
        fn u32_at(mut self, at: usize, v: u32) -> Self {
            self.0[at..at + 4].copy_from_slice(&v.to_ne_bytes());
            self
        }
        fn u64_at(mut self, at: usize, v: u64) -> Self {
            self.0[at..at + 8].copy_from_slice(&v.to_ne_bytes());
            self
        }
    }

    fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<libc::c_long> {
        // SAFETY: attr is a 128-byte bpf_attr whose pointers (set by the
        // callers) point at memory alive for the call.
        let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.0.as_mut_ptr(), attr.0.len()) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(rc)
        }
    }

    fn bpf_fd(cmd: libc::c_long, attr: &mut Attr, what: &str) -> io::Result<OwnedFd> {
        let fd = bpf(cmd, attr).map_err(|e| io::Error::new(e.kind(), format!("{what}: {e}")))?;
        // SAFETY: the kernel returned a new descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
        let mut i = [0u8; 8];
        i[0] = code;
        i[1] = dst | (src << 4);
        i[2..4].copy_from_slice(&off.to_ne_bytes());
        i[4..8].copy_from_slice(&imm.to_ne_bytes());
        i
    }

    /// `bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS)`.
    fn redirect_program(map: &OwnedFd) -> Vec<[u8; 8]> {
        vec![
            insn(0x61, 2, 1, 16, 0),                              // r2 = *(u32 *)(r1 + 16)
            insn(0x18, 1, BPF_PSEUDO_MAP_FD, 0, map.as_raw_fd()), // r1 = the map
            insn(0, 0, 0, 0, 0),                                  // (second half of the load)
            insn(0xb7, 3, 0, 0, XDP_PASS),                        // r3 = XDP_PASS
            insn(0x85, 0, 0, 0, BPF_FUNC_REDIRECT_MAP),           // call bpf_redirect_map
            insn(0x95, 0, 0, 0, 0),                               // exit
        ]
    }

    struct Mapping {
        ptr: *mut u8,
        len: usize,
    }

    impl Mapping {
        fn new(fd: libc::c_int, len: usize, offset: u64) -> io::Result<Mapping> {
            let (flags, fd) =
                if fd < 0 { (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1) } else { (libc::MAP_SHARED, fd) };
            // SAFETY: a fresh mapping of len bytes; the result is checked.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    flags | libc::MAP_POPULATE,
                    fd,
                    offset as libc::off_t,
                )
            };
            if ptr == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            Ok(Mapping { ptr: ptr.cast(), len })
        }
    }

    impl Drop for Mapping {
        fn drop(&mut self) {
            // SAFETY: ptr and len are the mapping made in new(), unmapped once.
            unsafe { libc::munmap(self.ptr.cast(), self.len) };
        }
    }

    /// One of the four rings: a producer and a consumer index shared with
    /// the kernel, and RING slots of `T` (a frame address, or a descriptor).
    struct Ring<T> {
        map: Mapping,
        offsets: libc::xdp_ring_offset,
        slot: std::marker::PhantomData<T>,
    }

    impl<T: Copy> Ring<T> {
        fn new(fd: &OwnedFd, offsets: libc::xdp_ring_offset, page_offset: u64) -> io::Result<Ring<T>> {
            let len = offsets.desc as usize + RING as usize * size_of::<T>();
            let map = Mapping::new(fd.as_raw_fd(), len, page_offset)?;
            Ok(Ring { map, offsets, slot: std::marker::PhantomData })
        }
        fn index(&self, at: u64) -> &AtomicU32 {
            // SAFETY: the kernel places an aligned u32 index at this offset
            // of the ring's mapping, which lives as long as self.
            unsafe { &*self.map.ptr.add(at as usize).cast::<AtomicU32>() }
        }
        fn producer(&self) -> &AtomicU32 {
            self.index(self.offsets.producer)
        }
        fn consumer(&self) -> &AtomicU32 {
            self.index(self.offsets.consumer)
        }
        fn slot(&self, i: u32) -> *mut T {
            // SAFETY: (i & mask) < RING slots of T follow desc in the mapping.
            unsafe { self.map.ptr.add(self.offsets.desc as usize).cast::<T>().add((i & (RING - 1)) as usize) }
        }
        fn read(&self, i: u32) -> T {
            // SAFETY: slot() is in the mapping; the consumer owns slots up to
            // the producer index it read with Acquire.
            unsafe { self.slot(i).read_volatile() }
        }
        fn write(&self, i: u32, v: T) {
            // SAFETY: slot() is in the mapping; the producer owns slots up to
            // consumer + RING until it publishes them with Release.
            unsafe { self.slot(i).write_volatile(v) }
        }
    }

    struct Socket {
        fd: OwnedFd,
        umem: Mapping,
        fill: Ring<u64>,
        completion: Ring<u64>,
        rx_or_tx: Ring<libc::xdp_desc>,
    }

    fn open(ifindex: u32, receive: bool) -> io::Result<Socket> {
        let fd = socket(libc::AF_XDP, libc::SOCK_RAW, 0)?;
        let umem = Mapping::new(-1, FRAMES * FRAME_SIZE, 0)?;
        let reg = libc::xdp_umem_reg {
            addr: umem.ptr as u64,
            len: umem.len as u64,
            chunk_size: FRAME_SIZE as u32,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        set_option(&fd, libc::SOL_XDP, libc::XDP_UMEM_REG, reg)?;
        set_option(&fd, libc::SOL_XDP, libc::XDP_UMEM_FILL_RING, RING as libc::c_int)?;
        set_option(&fd, libc::SOL_XDP, libc::XDP_UMEM_COMPLETION_RING, RING as libc::c_int)?;
        let ring = if receive { libc::XDP_RX_RING } else { libc::XDP_TX_RING };
        set_option(&fd, libc::SOL_XDP, ring, RING as libc::c_int)?;
        // SAFETY: all zeroes is a valid xdp_mmap_offsets, filled in below.
        let mut offsets: libc::xdp_mmap_offsets = unsafe { zeroed() };
        let mut len = size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
        // SAFETY: offsets and len describe a buffer of that size.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_XDP,
                libc::XDP_MMAP_OFFSETS,
                (&mut offsets as *mut libc::xdp_mmap_offsets).cast(),
                &mut len,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let fill = Ring::new(&fd, offsets.fr, libc::XDP_UMEM_PGOFF_FILL_RING)?;
        let completion = Ring::new(&fd, offsets.cr, libc::XDP_UMEM_PGOFF_COMPLETION_RING)?;
        let rx_or_tx = if receive {
            Ring::new(&fd, offsets.rx, libc::XDP_PGOFF_RX_RING as u64)?
        } else {
            Ring::new(&fd, offsets.tx, libc::XDP_PGOFF_TX_RING as u64)?
        };
        let address = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: libc::XDP_COPY,
            sxdp_ifindex: ifindex,
            sxdp_queue_id: 0,
            sxdp_shared_umem_fd: 0,
        };
        // The queue of a socket closed just before stays busy a moment.
        let start = Instant::now();
        loop {
            // SAFETY: address is a sockaddr_xdp of the size given.
            let rc = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&address as *const libc::sockaddr_xdp).cast(),
                    size_of::<libc::sockaddr_xdp>() as u32,
                )
            };
            let error = io::Error::last_os_error();
            match rc {
                0 => break,
                _ if error.raw_os_error() == Some(libc::EBUSY)
                    && start.elapsed() < Duration::from_secs(3) =>
                {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => return Err(io::Error::new(error.kind(), format!("binding the AF_XDP socket: {error}"))),
            }
        }
        Ok(Socket { fd, umem, fill, completion, rx_or_tx })
    }

    pub fn receive(ifindex: u32, secs: Duration) -> io::Result<()> {
        let mut attr = Attr::new().u32_at(0, BPF_MAP_TYPE_XSKMAP).u32_at(4, 4).u32_at(8, 4).u32_at(12, 1);
        let map = bpf_fd(BPF_MAP_CREATE, &mut attr, "creating the XSKMAP")?;
        let program = redirect_program(&map);
        let license = c"GPL";
        let mut log = vec![0u8; 64 * 1024];
        let mut attr = Attr::new()
            .u32_at(0, BPF_PROG_TYPE_XDP)
            .u32_at(4, program.len() as u32)
            .u64_at(8, program.as_ptr() as u64)
            .u64_at(16, license.as_ptr() as u64)
            .u32_at(24, 1)
            .u32_at(28, log.len() as u32)
            .u64_at(32, log.as_mut_ptr() as u64);
        let program = bpf_fd(BPF_PROG_LOAD, &mut attr, "loading the XDP program").map_err(|e| {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            io::Error::new(e.kind(), format!("{e}; verifier: {}", String::from_utf8_lossy(&log[..end])))
        })?;
        let socket = open(ifindex, true)?;
        let (key, value) = (0u32, socket.fd.as_raw_fd() as u32);
        let mut attr = Attr::new()
            .u32_at(0, map.as_raw_fd() as u32)
            .u64_at(8, &key as *const u32 as u64)
            .u64_at(16, &value as *const u32 as u64);
        bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map_err(|e| io::Error::new(e.kind(), format!("XSKMAP: {e}")))?;
        let mut attr =
            Attr::new().u32_at(0, program.as_raw_fd() as u32).u32_at(4, ifindex).u32_at(8, BPF_XDP);
        // Closing the link detaches the program.
        let _link = bpf_fd(BPF_LINK_CREATE, &mut attr, "attaching the XDP program")?;

        for i in 0..RING {
            socket.fill.write(i, u64::from(i) * FRAME_SIZE as u64);
        }
        socket.fill.producer().store(RING, Ordering::Release);
        let rx = &socket.rx_or_tx;
        let deadline = Instant::now() + secs + Duration::from_secs(5);
        let (mut first, mut last, mut received) = (None, Instant::now(), 0u64);
        let mut poll = libc::pollfd { fd: socket.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        while Instant::now() < deadline {
            let produced = rx.producer().load(Ordering::Acquire);
            let mut consumed = rx.consumer().load(Ordering::Relaxed);
            if produced == consumed {
                // SAFETY: poll on one pollfd that lives across the call.
                let ready = unsafe { libc::poll(&mut poll, 1, 1000) };
                if ready == 0 && first.is_some() {
                    break;
                }
                continue;
            }
            first.get_or_insert_with(Instant::now);
            let mut filled = socket.fill.producer().load(Ordering::Relaxed);
            while consumed != produced {
                let frame = rx.read(consumed).addr & !(FRAME_SIZE as u64 - 1);
                socket.fill.write(filled, frame);
                consumed = consumed.wrapping_add(1);
                filled = filled.wrapping_add(1);
                received += 1;
            }
            rx.consumer().store(consumed, Ordering::Release);
            socket.fill.producer().store(filled, Ordering::Release);
            last = Instant::now();
        }
        match first {
            Some(first) => report("AF_XDP receive", received, last - first, ""),
            None => println!("AF_XDP receive: nothing arrived"),
        }
        Ok(())
    }

    pub fn send(ifindex: u32, mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr, secs: Duration) -> io::Result<()> {
        let socket = open(ifindex, false)?;
        for id in 0..FRAMES {
            // SAFETY: frame id lies inside the UMEM mapping, which nothing
            // else writes before the first send.
            let frame =
                unsafe { std::slice::from_raw_parts_mut(socket.umem.ptr.add(id * FRAME_SIZE), FRAME_LEN) };
            frame[..6].copy_from_slice(&mac);
            frame[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
            frame[12..14].copy_from_slice(&ETH_P_IP.to_be_bytes());
            frame[14..].copy_from_slice(&gre_packet(id as u16, src, dst));
        }
        let mut free: Vec<u64> = (0..FRAMES as u64).map(|i| i * FRAME_SIZE as u64).collect();
        let (tx, completion) = (&socket.rx_or_tx, &socket.completion);
        let (start, mut sent) = (Instant::now(), 0u64);
        while start.elapsed() < secs {
            let completed = completion.producer().load(Ordering::Acquire);
            let mut reaped = completion.consumer().load(Ordering::Relaxed);
            while reaped != completed {
                free.push(completion.read(reaped));
                reaped = reaped.wrapping_add(1);
                sent += 1;
            }
            completion.consumer().store(reaped, Ordering::Release);
            let mut queued = tx.producer().load(Ordering::Relaxed);
            let room = RING - queued.wrapping_sub(tx.consumer().load(Ordering::Acquire));
            for _ in 0..room.min(64) {
                let Some(addr) = free.pop() else { break };
                tx.write(queued, libc::xdp_desc { addr, len: FRAME_LEN as u32, options: 0 });
                queued = queued.wrapping_add(1);
            }
            tx.producer().store(queued, Ordering::Release);
            // Copy mode sends on this kick; EAGAIN and EBUSY mean "later".
            // SAFETY: a send of nothing on our socket.
            unsafe {
                libc::sendto(
                    socket.fd.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
        }
        report("AF_XDP send", sent, start.elapsed(), "");
        Ok(())
    }
}
