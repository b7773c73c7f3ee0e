//! Connection tracking and NAT, without I/O: the semantics of OVS's `ct`
//! action (its userspace `lib/conntrack.c`, itself modelled on Linux's
//! nf_conntrack) for IPv4 TCP, UDP and ICMP echo.
//!
//! A connection is known by two tuples: the one its first packet carried
//! (original direction) and the one its replies will carry (reply
//! direction). Without NAT the reply tuple is the original reversed; with
//! NAT it is the reversed original after translation, so a reply to a
//! masqueraded connection is found by the address it was sent to. Both
//! tuples index the same entry, per zone.
//!
//! What a packet learns ([`CtResult::state`], OVS's `ct_state` bits):
//! `trk` always; `new` until a reply has been seen (a committed connection
//! is still `new` in its original direction until then, as in OVS); `est`
//! after a reply; `rpl` for the reply direction; `rel` for an ICMP error
//! about a tracked connection; `inv` for what cannot belong to a
//! connection (a TCP first packet that is not a SYN, an echo reply nobody
//! asked for, flags no stack sends, a fragment, a cut header).
//!
//! Invariants: an entry's two tuples are in the index while it lives, and
//! no two live entries share a tuple in a zone (NAT picks a translation
//! whose reply tuple is free). The table never holds more than its limit;
//! a commit beyond it is refused and counted. Nothing is created unless
//! committed. Time is passed in: an entry past its timeout is treated as
//! gone by every lookup, and [`Conntrack::expire`] sweeps them a bounded
//! number at a time.
//!
//! Costs: one hash probe per packet (two for an ICMP error), plus the
//! incremental checksum updates of a translation. An entry is a slot in a
//! vector plus two index entries.
//!
//! An ICMP error about a NATed connection is translated with it: the
//! quoted packet and the error's own address, as Linux does.
//!
//! Not yet: IPv6, fragment reassembly (fragments are `inv`), TCP window
//! tracking (states follow the flags), FTP/TFTP helpers.
//!
//! Threads: a [`Conntrack`] is plain data (`Send` and `Sync`), changed
//! only through `&mut`; each bridge owns one, on its forwarding thread.

use std::collections::HashMap;

use super::offload::Offload;
use super::packet::L2Header;
use super::rewrite;
use super::wire::{icmp, ip_protocol, ipv4, tcp, udp, Icmpv4Packet, Ipv4Packet, TcpPacket, UdpPacket};
use super::Timestamp;
pub use crate::ofproto::actions::{CtRequest, Nat, NatRange};
use crate::ofproto::flow::Field;

/// `ct_state` bits, with OVS's values.
pub mod state {
    pub const NEW: u8 = 0x01;
    pub const EST: u8 = 0x02;
    pub const REL: u8 = 0x04;
    pub const RPL: u8 = 0x08;
    pub const INV: u8 = 0x10;
    pub const TRK: u8 = 0x20;
    pub const SNAT: u8 = 0x40;
    pub const DNAT: u8 = 0x80;
}

pub const PROTO_ICMP: u8 = ip_protocol::ICMP;
pub const PROTO_TCP: u8 = ip_protocol::TCP;
pub const PROTO_UDP: u8 = ip_protocol::UDP;

/// Addresses and ports of one direction. For ICMP echo both ports hold
/// the echo identifier, so the reversed tuple of a request is its reply's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub src: u32,
    pub dst: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
}

impl Tuple {
    pub fn reversed(self) -> Tuple {
        Tuple { src: self.dst, dst: self.src, sport: self.dport, dport: self.sport, proto: self.proto }
    }
}

/// What the packet learned, for `ct_state`, `ct_zone` and `ct_mark`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CtResult {
    pub state: u8,
    pub zone: u16,
    pub mark: u32,
    /// Set when the packet must be dropped rather than go on.
    pub drop: Option<CtDrop>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtDrop {
    /// A commit found the table at its limit.
    TableFull,
    /// No translation in the range had a free reply tuple.
    NatExhausted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Tcp(TcpState),
    /// Whether a reply has been seen.
    Udp {
        replied: bool,
    },
    Icmp {
        replied: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TcpState {
    SynSent,
    SynReceived,
    Established,
    /// One side has sent FIN.
    Closing,
    /// Both sides have sent FIN.
    TimeWait,
    /// A RST was seen.
    Closed,
}

/// Timeouts in seconds, after Linux's and OVS's defaults.
pub mod timeout {
    pub const TCP_SYN: u64 = 30;
    pub const TCP_ESTABLISHED: u64 = 24 * 3600;
    pub const TCP_CLOSING: u64 = 120;
    pub const TCP_TIME_WAIT: u64 = 30;
    pub const TCP_CLOSED: u64 = 10;
    pub const UDP_UNREPLIED: u64 = 30;
    pub const UDP_REPLIED: u64 = 120;
    pub const ICMP: u64 = 30;
}

impl Proto {
    fn timeout_secs(self) -> u64 {
        match self {
            Proto::Tcp(TcpState::SynSent | TcpState::SynReceived) => timeout::TCP_SYN,
            Proto::Tcp(TcpState::Established) => timeout::TCP_ESTABLISHED,
            Proto::Tcp(TcpState::Closing) => timeout::TCP_CLOSING,
            Proto::Tcp(TcpState::TimeWait) => timeout::TCP_TIME_WAIT,
            Proto::Tcp(TcpState::Closed) => timeout::TCP_CLOSED,
            Proto::Udp { replied: false } => timeout::UDP_UNREPLIED,
            Proto::Udp { replied: true } => timeout::UDP_REPLIED,
            Proto::Icmp { .. } => timeout::ICMP,
        }
    }

    fn replied(self) -> bool {
        match self {
            Proto::Tcp(TcpState::SynSent) => false,
            Proto::Tcp(_) => true,
            Proto::Udp { replied } | Proto::Icmp { replied } => replied,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Original,
    Reply,
}

/// One tracked connection.
#[derive(Debug, Clone)]
pub struct Connection {
    pub zone: u16,
    pub original: Tuple,
    pub reply: Tuple,
    pub mark: u32,
    /// `SNAT` and/or `DNAT` bits when translated.
    pub nat: u8,
    proto: Proto,
    expires: Timestamp,
    /// TCP: which directions have sent FIN (bit 0 original, bit 1 reply).
    fins: u8,
}

impl Connection {
    /// A short state name, for `dump-conntrack`.
    pub fn state_name(&self) -> &'static str {
        match self.proto {
            Proto::Tcp(TcpState::SynSent) => "SYN_SENT",
            Proto::Tcp(TcpState::SynReceived) => "SYN_RECV",
            Proto::Tcp(TcpState::Established) => "ESTABLISHED",
            Proto::Tcp(TcpState::Closing) => "FIN_WAIT",
            Proto::Tcp(TcpState::TimeWait) => "TIME_WAIT",
            Proto::Tcp(TcpState::Closed) => "CLOSE",
            Proto::Udp { replied: false } | Proto::Icmp { replied: false } => "UNREPLIED",
            Proto::Udp { replied: true } | Proto::Icmp { replied: true } => "REPLIED",
        }
    }

    pub fn expires(&self) -> Timestamp {
        self.expires
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CtStats {
    pub created: u64,
    pub expired: u64,
    pub table_full: u64,
    pub nat_exhausted: u64,
    pub invalid: u64,
}

type Index = HashMap<(u16, Tuple), (u32, Direction), foldhash::fast::RandomState>;

/// The connection table of one datapath.
#[derive(Debug)]
pub struct Conntrack {
    slots: Vec<Option<Connection>>,
    free: Vec<u32>,
    index: Index,
    /// Live and not yet swept entries. (A connection to itself, whose two
    /// tuples are one, has a single index entry.)
    count: usize,
    limit: usize,
    /// Where the next bounded sweep of [`Conntrack::expire`] starts.
    sweep_at: usize,
    pub stats: CtStats,
}

/// How many entries a commit into a full table sweeps for expired ones
/// before giving up; the shell sweeps the rest of the table over time.
const EXPIRE_ON_FULL: usize = 256;

/// The default table limit (`other_config:ct-max`).
pub const DEFAULT_LIMIT: usize = 1_000_000;

/// What parsing found in a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parsed {
    /// A packet conntrack can track: its tuple, TCP flags, ICMP type.
    Tracked { tuple: Tuple, tcp_flags: u8, icmp_type: u8 },
    /// An ICMP error about the packet whose tuple (as that packet carried
    /// it) is given.
    IcmpError { inner: Tuple },
    /// IPv4 that cannot be tracked (fragment, cut header, other ICMP).
    Invalid,
    /// Not IPv4 TCP, UDP or ICMP: conntrack leaves it alone.
    Untracked,
}

/// The tuple of an IPv4 packet starting at `l3`; `inner`: the packet is
/// quoted in an ICMP error, where only 8 bytes of its L4 header are there.
/// The total length is not looked at (a quote is cut short), and of the
/// transport header only what is read must be there: the ports (the
/// first four bytes, in TCP and UDP alike) or the echo identifier, and a
/// whole fixed TCP header outside a quote.
fn ipv4_tuple(frame: &[u8], l3: usize, inner: bool) -> Option<(Tuple, usize)> {
    let ip = Ipv4Packet::new_checked_header(frame.get(l3..)?).ok()?;
    // A fragment other than a whole datagram cannot be tracked unassembled.
    if ip.version() != 4 || ip.is_fragment() {
        return None;
    }
    let proto = ip.protocol();
    let (src, dst) = (u32::from(ip.src_addr()), u32::from(ip.dst_addr()));
    let l4 = l3 + ip.header_len();
    let segment = &frame[l4..];
    let (sport, dport) = match proto {
        PROTO_TCP | PROTO_UDP if segment.len() >= udp::field::DST_PORT.end => {
            let ports = UdpPacket::new_unchecked(segment);
            (ports.src_port(), ports.dst_port())
        }
        PROTO_ICMP if segment.len() >= icmp::field::ECHO_IDENT.end => {
            let id = Icmpv4Packet::new_unchecked(segment).echo_ident();
            (id, id)
        }
        _ => return None,
    };
    if !inner && proto == PROTO_TCP && segment.len() < tcp::HEADER_LEN {
        return None;
    }
    Some((Tuple { src, dst, sport, dport, proto }, l4))
}

fn parse(frame: &[u8], l2: &L2Header) -> Parsed {
    if l2.ether_type != 0x0800 {
        return Parsed::Untracked;
    }
    let l3 = l2.payload_offset;
    match frame[l3..].get(ipv4::field::PROTOCOL) {
        Some(&(PROTO_TCP | PROTO_UDP | PROTO_ICMP)) => {}
        Some(_) => return Parsed::Untracked,
        None => return Parsed::Invalid,
    }
    let Some((tuple, l4)) = ipv4_tuple(frame, l3, false) else {
        return Parsed::Invalid;
    };
    // ipv4_tuple found what is read here: a whole fixed TCP header, or the
    // first six bytes of ICMP.
    match tuple.proto {
        PROTO_TCP => {
            Parsed::Tracked { tuple, tcp_flags: TcpPacket::new_unchecked(&frame[l4..]).flags(), icmp_type: 0 }
        }
        PROTO_UDP => Parsed::Tracked { tuple, tcp_flags: 0, icmp_type: 0 },
        _ => match Icmpv4Packet::new_unchecked(&frame[l4..]) {
            message if matches!(message.msg_type(), icmp::ECHO_REPLY | icmp::ECHO_REQUEST) => {
                Parsed::Tracked { tuple, tcp_flags: 0, icmp_type: message.msg_type() }
            }
            message if message.is_error() => match ipv4_tuple(frame, l4 + icmp::HEADER_LEN, true) {
                Some((inner, _)) => Parsed::IcmpError { inner },
                None => Parsed::Invalid,
            },
            _ => Parsed::Invalid,
        },
    }
}

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

/// Flag combinations no TCP stack sends.
fn tcp_flags_invalid(flags: u8) -> bool {
    flags & (SYN | FIN) == SYN | FIN
        || flags & (SYN | RST) == SYN | RST
        || flags & (SYN | FIN | RST | ACK) == 0
}

impl Default for Conntrack {
    fn default() -> Self {
        Conntrack::new(DEFAULT_LIMIT)
    }
}

impl Conntrack {
    pub fn new(limit: usize) -> Conntrack {
        Conntrack {
            slots: Vec::new(),
            free: Vec::new(),
            index: Index::default(),
            count: 0,
            limit,
            sweep_at: 0,
            stats: CtStats::default(),
        }
    }

    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Live connections (for `dump-conntrack`), in no particular order.
    pub fn connections(&self, now: Timestamp) -> impl Iterator<Item = &Connection> {
        self.slots.iter().flatten().filter(move |c| c.expires > now)
    }

    pub fn flush(&mut self) {
        self.slots.clear();
        self.free.clear();
        self.index.clear();
        self.count = 0;
        self.sweep_at = 0;
    }

    /// The live entry a tuple belongs to, and in which direction.
    fn find(&self, zone: u16, tuple: &Tuple, now: Timestamp) -> Option<(u32, Direction)> {
        let &(id, dir) = self.index.get(&(zone, *tuple))?;
        let conn = self.slots[id as usize].as_ref()?;
        (conn.expires > now).then_some((id, dir))
    }

    fn remove(&mut self, id: u32) {
        if let Some(conn) = self.slots[id as usize].take() {
            self.index.remove(&(conn.zone, conn.original));
            self.index.remove(&(conn.zone, conn.reply));
            self.free.push(id);
            self.count -= 1;
        }
    }

    /// Removes up to `budget` expired entries, continuing where the last
    /// sweep stopped; returns how many were removed.
    pub fn expire(&mut self, now: Timestamp, budget: usize) -> usize {
        let mut removed = 0;
        for _ in 0..budget.min(self.slots.len()) {
            if self.sweep_at >= self.slots.len() {
                self.sweep_at = 0;
            }
            let id = self.sweep_at as u32;
            self.sweep_at += 1;
            if self.slots[id as usize].as_ref().is_some_and(|c| c.expires <= now) {
                self.remove(id);
                removed += 1;
            }
        }
        self.stats.expired += removed as u64;
        removed
    }

    /// Runs the `ct` action on `frame`: finds or (on commit) creates the
    /// connection, advances its state, and translates the frame if asked.
    pub fn execute(
        &mut self,
        now: Timestamp,
        frame: &mut Vec<u8>,
        offload: &mut Offload,
        request: &CtRequest,
    ) -> CtResult {
        let untracked = CtResult { zone: request.zone, ..CtResult::default() };
        let Ok(l2) = L2Header::parse(frame) else { return untracked };
        let mut result = CtResult { state: state::TRK, ..untracked };
        let (tuple, tcp_flags, icmp_type) = match parse(frame, &l2) {
            Parsed::Untracked => return untracked,
            Parsed::Invalid => return self.invalid(result),
            Parsed::IcmpError { inner } => {
                // The quoted packet was sent by the error's recipient, so it
                // carries the recipient's view of the connection reversed.
                return match self.find(request.zone, &inner.reversed(), now) {
                    Some((id, dir)) => {
                        let conn = self.slots[id as usize].as_ref().expect("indexed");
                        result.state |= state::REL | if dir == Direction::Reply { state::RPL } else { 0 };
                        result.mark = conn.mark;
                        if request.nat && conn.nat != 0 {
                            result.state |= conn.nat;
                            // The quoted packet becomes what its sender sent
                            // (or what the far side received), and the error
                            // goes to (or comes from) the real endpoint.
                            let (quoted, outer) = match dir {
                                Direction::Reply => (conn.original, OuterAddress::Dst(conn.original.src)),
                                Direction::Original => (conn.reply, OuterAddress::Src(conn.reply.dst)),
                            };
                            translate_icmp_error(frame, offload, l2.payload_offset, &inner, &quoted, outer);
                        }
                        result
                    }
                    None => self.invalid(result),
                };
            }
            Parsed::Tracked { tuple, tcp_flags, icmp_type } => (tuple, tcp_flags, icmp_type),
        };
        if tuple.proto == PROTO_TCP && tcp_flags_invalid(tcp_flags) {
            return self.invalid(result);
        }
        if tuple.proto == PROTO_TCP && tcp_flags & (SYN | ACK) == SYN {
            self.forget_if_closed(request.zone, &tuple, now);
        }
        let id = match self.find(request.zone, &tuple, now) {
            Some((id, dir)) => {
                self.advance(id, dir, tcp_flags, icmp_type, now, &mut result);
                id
            }
            None => {
                // Only a SYN or an echo request may start a connection.
                let starts = match tuple.proto {
                    PROTO_TCP => tcp_flags & (SYN | ACK) == SYN,
                    PROTO_ICMP => icmp_type == 8,
                    _ => true,
                };
                if !starts {
                    return self.invalid(result);
                }
                result.state |= state::NEW;
                if !request.commit {
                    return result;
                }
                match self.create(now, request, tuple) {
                    Ok(id) => id,
                    Err(drop) => {
                        result.drop = Some(drop);
                        return result;
                    }
                }
            }
        };
        let conn = self.slots[id as usize].as_mut().expect("live");
        if request.commit {
            if let Some((value, mask)) = request.set_mark {
                conn.mark = (conn.mark & !mask) | (value & mask);
            }
        }
        result.mark = conn.mark;
        if request.nat && conn.nat != 0 {
            result.state |= conn.nat;
            let (original, reply) = (conn.original, conn.reply);
            let is_reply = result.state & state::RPL != 0;
            // A packet leaves carrying the other direction's tuple reversed.
            let target = if is_reply { original.reversed() } else { reply.reversed() };
            translate(frame, offload, &tuple, &target);
        }
        result
    }

    /// A new SYN on a connection that has closed starts it over (a port
    /// reused after TIME_WAIT), as in Linux.
    fn forget_if_closed(&mut self, zone: u16, tuple: &Tuple, now: Timestamp) {
        if let Some((id, Direction::Original)) = self.find(zone, tuple, now) {
            let closed = self.slots[id as usize]
                .as_ref()
                .is_some_and(|c| matches!(c.proto, Proto::Tcp(TcpState::TimeWait | TcpState::Closed)));
            if closed {
                self.remove(id);
            }
        }
    }

    fn invalid(&mut self, mut result: CtResult) -> CtResult {
        self.stats.invalid += 1;
        result.state |= state::INV;
        result
    }

    /// Moves a known connection on with a packet seen in direction `dir`.
    fn advance(
        &mut self,
        id: u32,
        dir: Direction,
        flags: u8,
        icmp_type: u8,
        now: Timestamp,
        result: &mut CtResult,
    ) {
        let conn = self.slots[id as usize].as_mut().expect("live");
        let reply = dir == Direction::Reply;
        conn.proto = match conn.proto {
            Proto::Tcp(tcp) => {
                if flags & FIN != 0 {
                    conn.fins |= if reply { 2 } else { 1 };
                }
                Proto::Tcp(match tcp {
                    _ if flags & RST != 0 => TcpState::Closed,
                    _ if conn.fins == 3 => TcpState::TimeWait,
                    _ if conn.fins != 0 => TcpState::Closing,
                    TcpState::SynSent if reply && flags & (SYN | ACK) == SYN | ACK => TcpState::SynReceived,
                    TcpState::SynReceived if !reply && flags & ACK != 0 => TcpState::Established,
                    other => other,
                })
            }
            Proto::Udp { replied } => Proto::Udp { replied: replied || reply },
            Proto::Icmp { replied } => Proto::Icmp { replied: replied || (reply && icmp_type == 0) },
        };
        conn.expires = Timestamp::from_millis(now.millis() + conn.proto.timeout_secs() * 1000);
        result.state |= if conn.proto.replied() { state::EST } else { state::NEW };
        if reply {
            result.state |= state::RPL;
        }
    }

    fn create(&mut self, now: Timestamp, request: &CtRequest, original: Tuple) -> Result<u32, CtDrop> {
        if self.len() >= self.limit {
            // Expired entries not yet swept make room first.
            self.expire(now, EXPIRE_ON_FULL);
        }
        if self.len() >= self.limit {
            self.stats.table_full += 1;
            return Err(CtDrop::TableFull);
        }
        let zone = request.zone;
        let (reply, nat) = match request.nat_range.filter(|_| request.nat) {
            None => (original.reversed(), 0),
            Some(nat) => match self.pick_translation(zone, &original, &nat, now) {
                Some(reply) => (reply, if matches!(nat, Nat::Src(_)) { state::SNAT } else { state::DNAT }),
                None => {
                    self.stats.nat_exhausted += 1;
                    return Err(CtDrop::NatExhausted);
                }
            },
        };
        if self.find(zone, &reply, now).is_some() {
            // Another connection already answers to this reply tuple.
            self.stats.nat_exhausted += 1;
            return Err(CtDrop::NatExhausted);
        }
        let proto = match original.proto {
            PROTO_TCP => Proto::Tcp(TcpState::SynSent),
            PROTO_UDP => Proto::Udp { replied: false },
            _ => Proto::Icmp { replied: false },
        };
        let conn = Connection {
            zone,
            original,
            reply,
            mark: 0,
            nat,
            proto,
            expires: Timestamp::from_millis(now.millis() + proto.timeout_secs() * 1000),
            fins: 0,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = Some(conn);
                id
            }
            None => {
                self.slots.push(Some(conn));
                (self.slots.len() - 1) as u32
            }
        };
        // Expired entries still indexed under these tuples give way.
        for (tuple, dir) in [(original, Direction::Original), (reply, Direction::Reply)] {
            if let Some((old, _)) = self.index.insert((zone, tuple), (id, dir)) {
                if old != id {
                    self.evict_stale(old, id, zone, tuple);
                }
            }
        }
        self.count += 1;
        self.stats.created += 1;
        Ok(id)
    }

    /// `old` lost its index entry for `tuple` to `new`: it was expired
    /// (live entries never share a tuple), so it goes entirely.
    fn evict_stale(&mut self, old: u32, new: u32, zone: u16, tuple: Tuple) {
        if let Some(conn) = self.slots[old as usize].take() {
            for t in [conn.original, conn.reply] {
                if t != tuple && self.index.get(&(zone, t)).is_some_and(|(id, _)| *id == old) {
                    self.index.remove(&(zone, t));
                }
            }
            self.free.push(old);
            self.count -= 1;
            self.stats.expired += 1;
        }
        debug_assert!(self.index.get(&(zone, tuple)).is_some_and(|(id, _)| *id == new));
    }

    /// A reply tuple for `original` translated within `nat` that no live
    /// connection uses. Ports are tried from a point that depends on the
    /// connection, so concurrent connections spread over the range.
    fn pick_translation(&self, zone: u16, original: &Tuple, nat: &Nat, now: Timestamp) -> Option<Tuple> {
        let (range, port) = match nat {
            Nat::Src(r) => (r, original.sport),
            Nat::Dst(r) => (r, original.dport),
        };
        let spread =
            original.src ^ original.dst ^ u32::from(original.sport) << 16 ^ u32::from(original.dport);
        // ICMP identifiers are kept (rewriting one would need the ICMP
        // checksum); without a port range the port is kept if free, else
        // any unprivileged one is taken, as Linux's masquerade does.
        let (lo, hi, first) = if original.proto == PROTO_ICMP {
            (port, port, port)
        } else if range.port_min == 0 {
            (1024, 65535, port)
        } else {
            let hi = range.port_max.max(range.port_min);
            (range.port_min, hi, range.port_min + (spread % (u32::from(hi - range.port_min) + 1)) as u16)
        };
        let span = u32::from(hi - lo) + 1;
        let ports = std::iter::once(first).chain((0..span).map(|i| lo + ((spread + i) % span) as u16));
        for addr in range.addr_min..=range.addr_max.max(range.addr_min) {
            for port in ports.clone() {
                let mut translated = *original;
                match nat {
                    Nat::Src(_) => {
                        translated.src = addr;
                        translated.sport = port;
                    }
                    Nat::Dst(_) => {
                        translated.dst = addr;
                        translated.dport = port;
                    }
                }
                if original.proto == PROTO_ICMP {
                    // Both "ports" are the identifier.
                    (translated.sport, translated.dport) = (port, port);
                }
                let reply = translated.reversed();
                if self.find(zone, &reply, now).is_none() {
                    return Some(reply);
                }
            }
        }
        None
    }
}

/// Which address of an ICMP error's own IP header a translation changes.
#[derive(Debug, Clone, Copy)]
enum OuterAddress {
    Src(u32),
    Dst(u32),
}

/// Translates an ICMP error about a NATed connection: the quoted packet's
/// addresses and ports from `from` to `to` (with its IP header checksum),
/// the error's own source or destination, and the ICMP checksum, which
/// covers the quote. The quoted transport checksum is left as it is: the
/// quote is cut short, so no receiver can check it.
fn translate_icmp_error(
    frame: &mut Vec<u8>,
    offload: &mut Offload,
    l3: usize,
    from: &Tuple,
    to: &Tuple,
    outer: OuterAddress,
) {
    let (field, address) = match outer {
        OuterAddress::Src(a) => (Field::NwSrc, a),
        OuterAddress::Dst(a) => (Field::NwDst, a),
    };
    let _ = rewrite::set_field(frame, offload, field, u64::from(address));
    // parse() found the error's IPv4 header, the quoted one and the quoted
    // ports (or identifier) within the frame.
    let ip = Ipv4Packet::new_unchecked(&frame[l3..]);
    let total = usize::from(ip.total_len()).min(frame.len() - l3);
    let icmp_at = l3 + ip.header_len();
    let mut quoted = Ipv4Packet::new_unchecked(&mut frame[icmp_at + icmp::HEADER_LEN..]);
    quoted.set_src_addr(to.src.into());
    quoted.set_dst_addr(to.dst.into());
    quoted.fill_checksum();
    let quoted_l4 = icmp_at + icmp::HEADER_LEN + quoted.header_len();
    if from.proto == PROTO_ICMP {
        // The identifier stays as it was: only addresses change.
    } else if frame.len() >= quoted_l4 + 4 {
        // TCP and UDP keep their ports in the same place.
        let mut ports = UdpPacket::new_unchecked(&mut frame[quoted_l4..]);
        ports.set_src_port(to.sport);
        ports.set_dst_port(to.dport);
    }
    // The checksum covers the message to the error's total length.
    let end = (l3 + total).max(icmp_at + 4);
    Icmpv4Packet::new_unchecked(&mut frame[icmp_at..end]).fill_checksum();
}

/// Rewrites the frame's addresses and ports from `from` to `to`, fixing
/// checksums incrementally.
fn translate(frame: &mut Vec<u8>, offload: &mut Offload, from: &Tuple, to: &Tuple) {
    let ports = from.proto != PROTO_ICMP;
    let changes = [
        (Field::NwSrc, from.src != to.src, u64::from(to.src)),
        (Field::NwDst, from.dst != to.dst, u64::from(to.dst)),
        (Field::TpSrc, ports && from.sport != to.sport, u64::from(to.sport)),
        (Field::TpDst, ports && from.dport != to.dport, u64::from(to.dport)),
    ];
    for (field, changed, value) in changes {
        if changed {
            // The frame parsed as IPv4 with its L4 header, so this applies.
            let _ = rewrite::set_field(frame, offload, field, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};

    const CLIENT: [u8; 4] = [198, 18, 0, 2];
    const SERVER: [u8; 4] = [198, 19, 0, 9];
    const UPLINK: [u8; 4] = [198, 19, 0, 1];

    fn ip(a: [u8; 4]) -> u32 {
        u32::from_be_bytes(a)
    }

    fn tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, flags: &str) -> Vec<u8> {
        let mut b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(src, dst, 64)
            .tcp(sport, dport, 1000, 4096);
        for f in flags.chars() {
            b = match f {
                'S' => b.syn(),
                'A' => b.ack(1),
                'F' => b.fin(),
                'R' => b.rst(),
                _ => b,
            };
        }
        let mut out = Vec::new();
        b.write(&mut out, b"payload").unwrap();
        out
    }

    fn udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(src, dst, 64)
            .udp(sport, dport)
            .write(&mut out, b"datagram")
            .unwrap();
        out
    }

    fn at(secs: u64) -> Timestamp {
        Timestamp::from_millis(secs * 1000)
    }

    fn run(ct: &mut Conntrack, now: Timestamp, frame: &mut Vec<u8>, request: &CtRequest) -> CtResult {
        let mut offload = Offload::NONE;
        ct.execute(now, frame, &mut offload, request)
    }

    /// (src, dst, sport, dport) and whether every checksum is right.
    fn seen(frame: &[u8]) -> ([u8; 4], [u8; 4], u16, u16, bool) {
        let p = SlicedPacket::from_ethernet(frame).unwrap();
        let Some(NetSlice::Ipv4(ipv4)) = &p.net else { panic!("not IPv4") };
        let h = ipv4.header().to_header();
        let mut ok = h.calc_header_checksum() == h.header_checksum;
        let (sport, dport) = match &p.transport {
            Some(TransportSlice::Tcp(t)) => {
                ok &= t.to_header().calc_checksum_ipv4(&h, t.payload()).unwrap() == t.checksum();
                (t.source_port(), t.destination_port())
            }
            Some(TransportSlice::Udp(u)) => {
                ok &= u.to_header().calc_checksum_ipv4(&h, u.payload()).unwrap() == u.checksum();
                (u.source_port(), u.destination_port())
            }
            _ => (0, 0),
        };
        (h.source, h.destination, sport, dport, ok)
    }

    const COMMIT: CtRequest =
        CtRequest { zone: 0, commit: true, nat: false, nat_range: None, set_mark: None };
    const LOOKUP: CtRequest =
        CtRequest { zone: 0, commit: false, nat: false, nat_range: None, set_mark: None };

    /// `ct(commit,nat(src=UPLINK))`.
    fn masquerade() -> CtRequest {
        let range = NatRange { addr_min: ip(UPLINK), addr_max: ip(UPLINK), port_min: 0, port_max: 0 };
        CtRequest { nat: true, nat_range: Some(Nat::Src(range)), ..COMMIT }
    }

    #[test]
    fn tcp_handshake_goes_new_then_established() {
        let mut ct = Conntrack::default();
        let new = state::TRK | state::NEW;
        assert_eq!(run(&mut ct, at(0), &mut tcp(CLIENT, SERVER, 40000, 80, "S"), &LOOKUP).state, new);
        assert!(ct.is_empty(), "nothing is created without commit");
        assert_eq!(run(&mut ct, at(0), &mut tcp(CLIENT, SERVER, 40000, 80, "S"), &COMMIT).state, new);
        assert_eq!(ct.len(), 1);
        let synack = run(&mut ct, at(0), &mut tcp(SERVER, CLIENT, 80, 40000, "SA"), &LOOKUP);
        assert_eq!(synack.state, state::TRK | state::EST | state::RPL);
        let ack = run(&mut ct, at(1), &mut tcp(CLIENT, SERVER, 40000, 80, "A"), &LOOKUP);
        assert_eq!(ack.state, state::TRK | state::EST);
        let conn = ct.connections(at(1)).next().unwrap();
        assert_eq!(conn.state_name(), "ESTABLISHED");
        assert_eq!(conn.expires(), at(1 + timeout::TCP_ESTABLISHED));
    }

    #[test]
    fn invalid_packets_are_marked_and_not_created() {
        let mut ct = Conntrack::default();
        let inv = state::TRK | state::INV;
        assert_eq!(run(&mut ct, at(0), &mut tcp(CLIENT, SERVER, 1, 80, "A"), &COMMIT).state, inv);
        assert_eq!(run(&mut ct, at(0), &mut tcp(CLIENT, SERVER, 1, 80, "SF"), &COMMIT).state, inv);
        let mut cut = tcp(CLIENT, SERVER, 1, 80, "S");
        cut.truncate(14 + 20 + 10);
        assert_eq!(run(&mut ct, at(0), &mut cut, &COMMIT).state, inv);
        let mut fragment = udp(CLIENT, SERVER, 5000, 53);
        fragment[14 + 6] = 0x20; // more fragments
        assert_eq!(run(&mut ct, at(0), &mut fragment, &COMMIT).state, inv);
        assert!(ct.is_empty());
        assert_eq!(ct.stats.invalid, 4);
        let mut arp = vec![0xff; 12];
        arp.extend_from_slice(&[0x08, 0x06]);
        arp.resize(60, 0);
        assert_eq!(run(&mut ct, at(0), &mut arp, &COMMIT).state, 0, "not IP: untracked");
    }

    #[test]
    fn udp_entries_expire_with_injected_time() {
        let mut ct = Conntrack::default();
        run(&mut ct, at(0), &mut udp(CLIENT, SERVER, 5000, 53), &COMMIT);
        let reply = run(&mut ct, at(10), &mut udp(SERVER, CLIENT, 53, 5000), &LOOKUP);
        assert_eq!(reply.state, state::TRK | state::EST | state::RPL);
        // Replied: alive for UDP_REPLIED from the last packet.
        let alive = at(10 + timeout::UDP_REPLIED - 1);
        assert_eq!(
            run(&mut ct, alive, &mut udp(CLIENT, SERVER, 5000, 53), &LOOKUP).state & state::EST,
            state::EST
        );
        let later = at(10 + 2 * timeout::UDP_REPLIED);
        assert_eq!(
            run(&mut ct, later, &mut udp(CLIENT, SERVER, 5000, 53), &LOOKUP).state,
            state::TRK | state::NEW
        );
        assert_eq!(ct.expire(later, 100), 1);
        assert!(ct.is_empty());
    }

    #[test]
    fn a_full_table_refuses_commits_and_counts_them() {
        let mut ct = Conntrack::new(2);
        for port in 1..=3 {
            let r = run(&mut ct, at(0), &mut udp(CLIENT, SERVER, port, 53), &COMMIT);
            assert_eq!(r.drop, (port == 3).then_some(CtDrop::TableFull));
        }
        assert_eq!((ct.len(), ct.stats.table_full), (2, 1));
        // Once an entry expires, its slot can be taken again.
        let later = at(timeout::UDP_UNREPLIED + 1);
        assert_eq!(run(&mut ct, later, &mut udp(CLIENT, SERVER, 3, 53), &COMMIT).drop, None);
        assert_eq!(ct.connections(later).count(), 1);
    }

    #[test]
    fn masquerade_rewrites_both_ways_with_valid_checksums() {
        let mut ct = Conntrack::default();
        let snat = masquerade();
        let mut syn = tcp(CLIENT, SERVER, 40000, 80, "S");
        let r = run(&mut ct, at(0), &mut syn, &snat);
        assert_eq!(r.state, state::TRK | state::NEW | state::SNAT);
        assert_eq!(seen(&syn), (UPLINK, SERVER, 40000, 80, true));
        // The server answers the uplink; the reply goes back to the client.
        let mut synack = tcp(SERVER, UPLINK, 80, 40000, "SA");
        let nat = CtRequest { nat: true, ..LOOKUP };
        let r = run(&mut ct, at(0), &mut synack, &nat);
        assert_eq!(r.state, state::TRK | state::EST | state::RPL | state::SNAT);
        assert_eq!(seen(&synack), (SERVER, CLIENT, 80, 40000, true));
        // A second client with the same source port gets another port.
        let other = [198, 18, 0, 3];
        let mut syn2 = tcp(other, SERVER, 40000, 80, "S");
        run(&mut ct, at(0), &mut syn2, &snat);
        let (src, _, sport, _, ok) = seen(&syn2);
        assert_eq!((src, ok), (UPLINK, true));
        assert_ne!(sport, 40000, "the reply tuple must stay unique");
        assert_eq!(ct.len(), 2);
    }

    /// An ICMP port unreachable from `from` to `to` quoting `quoted`.
    fn unreachable(from: [u8; 4], to: [u8; 4], quoted: &[u8]) -> Vec<u8> {
        let mut error = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(from, to, 64)
            .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::Port,
            ))
            .write(&mut error, &quoted[14..14 + 28])
            .unwrap();
        error
    }

    #[test]
    fn an_icmp_error_for_a_masqueraded_flow_is_translated_back() {
        let mut ct = Conntrack::default();
        let snat = masquerade();
        let mut out = udp(CLIENT, SERVER, 5000, 53);
        run(&mut ct, at(0), &mut out, &snat);
        // The server's host answers the uplink: port unreachable, quoting what it got.
        let mut error = unreachable(SERVER, UPLINK, &out);
        let r = run(&mut ct, at(0), &mut error, &CtRequest { nat: true, ..LOOKUP });
        assert_eq!(r.state, state::TRK | state::REL | state::RPL | state::SNAT);
        let p = SlicedPacket::from_ethernet(&error).unwrap();
        let Some(NetSlice::Ipv4(outer)) = &p.net else { panic!() };
        let h = outer.header().to_header();
        assert_eq!((h.source, h.destination), (SERVER, CLIENT), "the error goes to the container");
        assert_eq!(h.calc_header_checksum(), h.header_checksum);
        let Some(TransportSlice::Icmpv4(icmp)) = &p.transport else { panic!() };
        assert_eq!(icmp.header().icmp_type.calc_checksum(icmp.payload()), icmp.checksum());
        // The quote is now what the container sent.
        let quote = icmp.payload();
        let inner = etherparse::Ipv4HeaderSlice::from_slice(quote).unwrap().to_header();
        assert_eq!((inner.source, inner.destination), (CLIENT, SERVER));
        assert_eq!(inner.calc_header_checksum(), inner.header_checksum);
        assert_eq!((&quote[20..22], &quote[22..24]), (&5000u16.to_be_bytes()[..], &53u16.to_be_bytes()[..]));
        // Without nat, the error is related but left alone.
        let mut untouched = unreachable(SERVER, UPLINK, &out);
        let before = untouched.clone();
        assert_eq!(run(&mut ct, at(0), &mut untouched, &LOOKUP).state, state::TRK | state::REL | state::RPL);
        assert_eq!(untouched, before);
    }

    #[test]
    fn port_mapping_dnat_and_marks() {
        let mut ct = Conntrack::default();
        let container = [198, 18, 0, 7];
        let dnat = CtRequest {
            nat: true,
            nat_range: Some(Nat::Dst(NatRange {
                addr_min: ip(container),
                addr_max: ip(container),
                port_min: 80,
                port_max: 80,
            })),
            set_mark: Some((0x5, 0xff)),
            ..COMMIT
        };
        let outside = [198, 19, 0, 50];
        let mut syn = tcp(outside, UPLINK, 33000, 8080, "S");
        let r = run(&mut ct, at(0), &mut syn, &dnat);
        assert_eq!((r.state, r.mark), (state::TRK | state::NEW | state::DNAT, 5));
        assert_eq!(seen(&syn), (outside, container, 33000, 80, true));
        let mut synack = tcp(container, outside, 80, 33000, "SA");
        let r = run(&mut ct, at(0), &mut synack, &CtRequest { nat: true, ..LOOKUP });
        assert_eq!(r.mark, 5);
        assert_eq!(seen(&synack), (UPLINK, outside, 8080, 33000, true));
    }

    #[test]
    fn icmp_echo_and_a_related_error() {
        let mut ct = Conntrack::default();
        let echo = |src: [u8; 4], dst: [u8; 4], reply: bool| {
            let mut out = Vec::new();
            let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]).ipv4(src, dst, 64);
            let b = if reply { b.icmpv4_echo_reply(7, 1) } else { b.icmpv4_echo_request(7, 1) };
            b.write(&mut out, b"ping").unwrap();
            out
        };
        let inv = state::TRK | state::INV;
        assert_eq!(run(&mut ct, at(0), &mut echo(SERVER, CLIENT, true), &COMMIT).state, inv, "unasked reply");
        assert_eq!(
            run(&mut ct, at(0), &mut echo(CLIENT, SERVER, false), &COMMIT).state,
            state::TRK | state::NEW
        );
        let r = run(&mut ct, at(0), &mut echo(SERVER, CLIENT, true), &LOOKUP);
        assert_eq!(r.state, state::TRK | state::EST | state::RPL);
        // A router says the UDP flow's destination is unreachable.
        run(&mut ct, at(0), &mut udp(CLIENT, SERVER, 5000, 53), &COMMIT);
        let mut error = unreachable([198, 19, 0, 254], CLIENT, &udp(CLIENT, SERVER, 5000, 53));
        let r = run(&mut ct, at(0), &mut error, &LOOKUP);
        assert_eq!(r.state, state::TRK | state::REL | state::RPL);
    }

    #[test]
    fn fins_close_rst_closes_and_a_new_syn_starts_over() {
        let mut ct = Conntrack::default();
        run(&mut ct, at(0), &mut tcp(CLIENT, SERVER, 40000, 80, "S"), &COMMIT);
        run(&mut ct, at(0), &mut tcp(SERVER, CLIENT, 80, 40000, "SA"), &LOOKUP);
        run(&mut ct, at(0), &mut tcp(CLIENT, SERVER, 40000, 80, "FA"), &LOOKUP);
        assert_eq!(ct.connections(at(0)).next().unwrap().state_name(), "FIN_WAIT");
        run(&mut ct, at(0), &mut tcp(SERVER, CLIENT, 80, 40000, "FA"), &LOOKUP);
        let conn = ct.connections(at(0)).next().unwrap();
        assert_eq!((conn.state_name(), conn.expires()), ("TIME_WAIT", at(timeout::TCP_TIME_WAIT)));
        // The port is reused: the SYN is a new connection, not part of the old one.
        let r = run(&mut ct, at(1), &mut tcp(CLIENT, SERVER, 40000, 80, "S"), &COMMIT);
        assert_eq!(r.state, state::TRK | state::NEW);
        assert_eq!(ct.connections(at(1)).next().unwrap().state_name(), "SYN_SENT");
        run(&mut ct, at(1), &mut tcp(SERVER, CLIENT, 80, 40000, "R"), &LOOKUP);
        assert_eq!(ct.connections(at(1)).next().unwrap().expires(), at(1 + timeout::TCP_CLOSED));
    }

    #[test]
    fn a_connection_to_itself_counts_once() {
        let mut ct = Conntrack::default();
        run(&mut ct, at(0), &mut udp(CLIENT, CLIENT, 53, 53), &COMMIT);
        assert_eq!(ct.len(), 1);
        let r = run(&mut ct, at(0), &mut udp(CLIENT, CLIENT, 53, 53), &LOOKUP);
        assert_eq!(r.state & state::TRK, state::TRK);
        assert_eq!(ct.expire(at(timeout::UDP_REPLIED + 1), 10), 1);
        assert!(ct.is_empty() && ct.index.is_empty());
    }

    #[test]
    fn zones_keep_connections_apart() {
        let mut ct = Conntrack::default();
        run(&mut ct, at(0), &mut udp(CLIENT, SERVER, 5000, 53), &CtRequest { zone: 1, ..COMMIT });
        let other_zone =
            run(&mut ct, at(0), &mut udp(SERVER, CLIENT, 53, 5000), &CtRequest { zone: 2, ..LOOKUP });
        assert_eq!((other_zone.state, other_zone.zone), (state::TRK | state::NEW, 2));
        let same_zone =
            run(&mut ct, at(0), &mut udp(SERVER, CLIENT, 53, 5000), &CtRequest { zone: 1, ..LOOKUP });
        assert_eq!(same_zone.state, state::TRK | state::EST | state::RPL);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            // Whatever arrives, conntrack answers without panicking, never
            // holds more than its limit, and its index matches its entries.
            #[test]
            fn any_frames_keep_the_table_consistent(
                frames in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..80), 0u8..5, any::<bool>(), 0u64..200), 1..60),
            ) {
                let mut ct = Conntrack::new(8);
                let mut now = 0;
                let snat = Nat::Src(NatRange { addr_min: 1, addr_max: 2, port_min: 1000, port_max: 1003 });
                for (tail, kind, commit, dt) in frames {
                    now += dt;
                    let mut frame = match kind {
                        0 => udp(CLIENT, SERVER, u16::from(tail.first().copied().unwrap_or(0)), 53),
                        1 => tcp(CLIENT, SERVER, 40000, 80, ["S", "SA", "A", "F", "R"][tail.len() % 5]),
                        2 => tcp(SERVER, CLIENT, 80, 40000, ["S", "SA", "A", "F", "R"][tail.len() % 5]),
                        3 => {
                            let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
                            f.extend_from_slice(&tail);
                            f
                        }
                        _ => udp(CLIENT, CLIENT, 53, 53),
                    };
                    let translate = commit && tail.len() % 2 == 0;
                    let request = CtRequest { commit, nat: true, nat_range: translate.then_some(snat), ..LOOKUP };
                    run(&mut ct, Timestamp::from_millis(now * 1000), &mut frame, &request);
                    prop_assert!(ct.len() <= 8);
                    let live: Vec<&Connection> = ct.slots.iter().flatten().collect();
                    prop_assert_eq!(ct.len(), live.len());
                    let tuples: usize = live.iter().map(|c| if c.original == c.reply { 1 } else { 2 }).sum();
                    prop_assert_eq!(ct.index.len(), tuples);
                    for (id, conn) in ct.slots.iter().enumerate().filter_map(|(i, c)| Some((i, c.as_ref()?))) {
                        prop_assert_eq!(ct.index.get(&(conn.zone, conn.original)).map(|e| e.0), Some(id as u32));
                        prop_assert_eq!(ct.index.get(&(conn.zone, conn.reply)).map(|e| e.0), Some(id as u32));
                    }
                }
            }
        }
    }
}
