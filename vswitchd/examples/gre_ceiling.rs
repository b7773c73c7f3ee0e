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
//! ```
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
        _ => {
            eprintln!("usage: gre_ceiling recv SECS | send DST SECS | packet-send IFACE MAC SRC DST SECS");
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
    let bytes: Vec<u8> = text.split(':').filter_map(|b| u8::from_str_radix(b, 16).ok()).collect();
    bytes.try_into().map_err(|_| invalid(format!("{text} is not a MAC address")))
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

/// Sends `BATCH` copies of `packets[i]` per `sendmmsg` until `secs` pass.
fn send_loop(
    fd: &OwnedFd,
    packets: &mut [[u8; PACKET]],
    len: usize,
    to: Option<&libc::sockaddr_ll>,
    secs: Duration,
    what: &str,
) {
    // SAFETY: iovec and mmsghdr are plain C structs for which zeroes are valid.
    let mut iovs: Vec<libc::iovec> =
        packets.iter_mut().map(|p| libc::iovec { iov_base: p.as_mut_ptr().cast(), iov_len: len }).collect();
    let mut msgs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
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
        .collect();
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

fn send_packet(iface: &str, mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr, secs: Duration) -> io::Result<()> {
    let name = CString::new(iface).map_err(|_| invalid(format!("{iface} is not an interface name")))?;
    // SAFETY: name is a NUL-terminated string alive for the call.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(invalid(format!("no interface {iface} in this namespace")));
    }
    let fd = socket(libc::AF_PACKET, libc::SOCK_DGRAM, libc::c_int::from(ETH_P_IP.to_be()))?;
    set_option(&fd, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, 1 as libc::c_int)?;
    // SAFETY: all zeroes is a valid sockaddr_ll; the fields are set below.
    let mut to: libc::sockaddr_ll = unsafe { zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_protocol = ETH_P_IP.to_be();
    to.sll_ifindex = ifindex as i32;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&mac);
    let mut packets = vec![[0u8; PACKET]; BATCH];
    for (id, p) in packets.iter_mut().enumerate() {
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(PACKET as u16).to_be_bytes());
        p[4..6].copy_from_slice(&(id as u16).to_be_bytes());
        p[8] = 64;
        p[9] = IPPROTO_GRE as u8;
        p[12..16].copy_from_slice(&src.octets());
        p[16..20].copy_from_slice(&dst.octets());
        let checksum = ipv4_checksum(&p[..IP_HEADER]);
        p[10..12].copy_from_slice(&checksum.to_be_bytes());
        p[IP_HEADER..IP_HEADER + GRE_WITH_KEY.len()].copy_from_slice(&GRE_WITH_KEY);
    }
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
    let mut iovs: Vec<libc::iovec> = buffers
        .iter_mut()
        .map(|b| libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: PACKET })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .map(|iov| {
            // SAFETY: all zeroes is a valid mmsghdr.
            let mut m: libc::mmsghdr = unsafe { zeroed() };
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
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
