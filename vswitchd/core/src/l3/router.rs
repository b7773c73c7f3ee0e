//! Routing between the bridge's gateway subnet and its uplinks: the
//! `route` action of the flows, and the ARP that goes with it.
//!
//! The router has interfaces: the bridge's gateway (`gateway=CIDR`,
//! reached from every port through NORMAL) and uplink ports with an
//! address (`set port up0 ip=CIDR nexthop=IP`, reached only on that port).
//! Each answers ARP and ping for its address ([`Gateway::answer`]).
//!
//! `route` on an IPv4 frame: decrement the TTL; pick the interface whose
//! subnet holds the destination, else an uplink with a next hop (the
//! default route); rewrite the Ethernet source to the interface's MAC and
//! the destination to the neighbour's, from the ARP cache. On a miss the
//! frame waits (a few per neighbour, bounded in all) while an ARP request
//! goes out; the answer releases it. Neighbours are learned from ARP
//! traffic addressed to an interface. A neighbour in use is asked again
//! (a unicast request, as Linux probes a stale entry) once it is
//! [`NEIGHBOUR_REFRESH_SECS`] old, while frames keep going to the MAC it
//! has: its answer renews the entry before it ages out, so a busy
//! connection never stops to resolve again. A neighbour that does not
//! answer ages out, and the next frame waits for a broadcast request.
//!
//! Invariants: at most [`MAX_PENDING_PER_NEIGHBOUR`] frames wait for one
//! neighbour and [`MAX_PENDING`] in all (the oldest go, counted); the ARP
//! cache holds at most [`MAX_NEIGHBOURS`] entries, each for
//! [`NEIGHBOUR_AGING_SECS`]. Time is passed in.

use std::collections::{HashMap, VecDeque};

use crate::l3::gateway::Gateway;
use crate::offload::Offload;
use crate::packet::{L2Header, Mac};
use crate::rewrite;
use crate::wire::{ipv4, ArpPacket, EthernetFrame, Ipv4Packet};
use crate::Timestamp;

pub const MAX_PENDING_PER_NEIGHBOUR: usize = 8;
pub const MAX_PENDING: usize = 256;
pub const MAX_NEIGHBOURS: usize = 4096;
pub const NEIGHBOUR_AGING_SECS: u64 = 300;
/// From this age on, a neighbour in use is asked to confirm itself.
pub const NEIGHBOUR_REFRESH_SECS: u64 = 240;
/// How long a neighbour has to answer before it is asked again.
pub const ARP_RETRY_MS: u64 = 1000;

/// An address of the router, and where it is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interface {
    pub address: Gateway,
    /// `None`: the bridge's gateway, on every port; `Some`: an uplink port.
    pub port: Option<u16>,
    /// The default route's next hop, on an uplink.
    pub nexthop: Option<u32>,
}

impl Interface {
    fn holds(&self, ip: u32) -> bool {
        let mask = u32::MAX << (32 - u32::from(self.address.prefix));
        ip & mask == self.address.ip & mask
    }

    fn reached_from(&self, port: u16) -> bool {
        self.port.is_none_or(|p| p == port)
    }
}

/// Where a routed frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Egress {
    /// Out of this port.
    Port(u16),
    /// Into the bridge's subnet: wherever the MAC table says.
    Bridge,
}

/// What `route` did with a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routed {
    /// Rewritten in place; send it.
    Send(Egress),
    /// Rewritten in place; send it, and this ARP request that asks the
    /// neighbour to confirm its address before its entry ages out.
    SendAndAsk {
        egress: Egress,
        request: Vec<u8>,
    },
    /// Waiting for the neighbour's MAC; send this ARP request.
    Resolving {
        request: Vec<u8>,
        egress: Egress,
    },
    /// Waiting, and a request for that neighbour is already out.
    Waiting,
    /// Not routable: not IPv4, TTL run out, or no route.
    NoRoute,
    TtlExpired,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouterStats {
    pub routed: u64,
    pub arp_requests: u64,
    pub pending_dropped: u64,
    pub no_route: u64,
}

/// Frames waiting for one neighbour, oldest first, with where they go and
/// their offload metadata (a waiting frame may be a 64 KiB GSO frame).
type Waiting = VecDeque<(Vec<u8>, Egress, Offload)>;

#[derive(Debug, Default)]
pub struct Router {
    interfaces: Vec<Interface>,
    neighbours: HashMap<u32, (Mac, Timestamp)>,
    /// When a neighbour in use was last asked to confirm itself.
    confirming: HashMap<u32, Timestamp>,
    /// Frames waiting for a neighbour's MAC, with where they go, and when
    /// the neighbour was last asked for.
    pending: HashMap<u32, (Waiting, Timestamp)>,
    pending_total: usize,
    pub stats: RouterStats,
}

impl Router {
    pub fn set_interfaces(&mut self, interfaces: Vec<Interface>) {
        if interfaces != self.interfaces {
            self.interfaces = interfaces;
            self.neighbours.clear();
            self.pending.clear();
            self.pending_total = 0;
        }
    }

    pub fn interfaces(&self) -> &[Interface] {
        &self.interfaces
    }

    /// Entries in the ARP cache, aged out or not.
    pub fn neighbour_count(&self) -> usize {
        self.neighbours.len()
    }

    /// Frames waiting for a neighbour to answer.
    pub fn frames_waiting(&self) -> usize {
        self.pending_total
    }

    /// The interface whose address is `ip`, if it is reached from `port`.
    pub fn interface_at(&self, ip: u32, port: u16) -> Option<&Interface> {
        self.interfaces.iter().find(|i| i.address.ip == ip && i.reached_from(port))
    }

    pub fn neighbour(&self, ip: u32, now: Timestamp) -> Option<Mac> {
        let (mac, seen) = self.neighbours.get(&ip)?;
        (now.millis().saturating_sub(seen.millis()) < NEIGHBOUR_AGING_SECS * 1000).then_some(*mac)
    }

    /// Learns from an ARP frame addressed to one of the interfaces (a
    /// request for it or a reply to it) who its sender is; returns the
    /// frames that were waiting for that sender, ready to send.
    pub fn learn_arp(
        &mut self,
        now: Timestamp,
        frame: &[u8],
        l2: &L2Header,
        in_port: u16,
    ) -> Vec<(Vec<u8>, Egress, Offload)> {
        let at = l2.payload_offset;
        let Some(Ok(arp)) = frame.get(at..).map(ArpPacket::new_checked) else { return Vec::new() };
        if !arp.is_ethernet_ipv4() {
            return Vec::new();
        }
        let sender_mac = arp.sender_hardware_addr();
        let (sender_ip, target_ip) =
            (u32::from(arp.sender_protocol_addr()), u32::from(arp.target_protocol_addr()));
        let Some(interface) = self.interface_at(target_ip, in_port) else { return Vec::new() };
        if !interface.holds(sender_ip) || sender_mac[0] & 1 != 0 {
            return Vec::new();
        }
        if self.neighbours.len() >= MAX_NEIGHBOURS && !self.neighbours.contains_key(&sender_ip) {
            let oldest = self.neighbours.iter().min_by_key(|(_, (_, seen))| *seen).map(|(ip, _)| *ip);
            if let Some(ip) = oldest {
                self.neighbours.remove(&ip);
            }
        }
        self.neighbours.insert(sender_ip, (sender_mac, now));
        self.confirming.remove(&sender_ip);
        let Some((waiting, _)) = self.pending.remove(&sender_ip) else { return Vec::new() };
        self.pending_total -= waiting.len();
        waiting
            .into_iter()
            .map(|(mut frame, egress, offload)| {
                EthernetFrame::new_unchecked(&mut frame[..]).set_dst_addr(sender_mac);
                (frame, egress, offload)
            })
            .collect()
    }

    /// Routes `frame` (a private copy): see the module's essay.
    pub fn route(&mut self, now: Timestamp, frame: &mut Vec<u8>, offload: Offload) -> Routed {
        let Ok(l2) = L2Header::parse(frame) else { return self.no_route() };
        // Only the fixed header is needed (as dec_ttl checks it too).
        let ip = &frame[l2.payload_offset..];
        if l2.ether_type != 0x0800 || ip.len() < ipv4::HEADER_LEN {
            return self.no_route();
        }
        let dst = u32::from(Ipv4Packet::new_unchecked(ip).dst_addr());
        // The router's own addresses answer only ARP and ping, before the
        // tables; anything else sent to them has nowhere to go.
        if self.interfaces.iter().any(|i| i.address.ip == dst) {
            return self.no_route();
        }
        let direct = self.interfaces.iter().find(|i| i.holds(dst)).copied();
        let (interface, neighbour) = match direct {
            Some(i) => (i, dst),
            None => match self.interfaces.iter().find(|i| i.nexthop.is_some()) {
                Some(i) => (*i, i.nexthop.expect("found")),
                None => return self.no_route(),
            },
        };
        match rewrite::dec_ttl(frame) {
            Ok(true) => {}
            Ok(false) => return Routed::TtlExpired,
            Err(_) => return self.no_route(),
        }
        // A frame L2Header parsed: its Ethernet header is there.
        EthernetFrame::new_unchecked(&mut frame[..]).set_src_addr(interface.address.mac);
        let egress = interface.port.map_or(Egress::Bridge, Egress::Port);
        if let Some(mac) = self.neighbour(neighbour, now) {
            EthernetFrame::new_unchecked(&mut frame[..]).set_dst_addr(mac);
            self.stats.routed += 1;
            return match self.confirmation_due(neighbour, now) {
                false => Routed::Send(egress),
                true => {
                    self.stats.arp_requests += 1;
                    let mut request = arp_request(&interface.address, neighbour);
                    EthernetFrame::new_unchecked(&mut request[..]).set_dst_addr(mac);
                    Routed::SendAndAsk { egress, request }
                }
            };
        }
        let asked = self.pending.get(&neighbour).map(|(_, at)| *at);
        self.park(now, neighbour, (std::mem::take(frame), egress, offload));
        // Asked less than a second ago: the answer may still come.
        if asked.is_some_and(|at| now.millis().saturating_sub(at.millis()) < ARP_RETRY_MS) {
            return Routed::Waiting;
        }
        if let Some((_, at)) = self.pending.get_mut(&neighbour) {
            *at = now;
        }
        self.stats.arp_requests += 1;
        Routed::Resolving { request: arp_request(&interface.address, neighbour), egress }
    }

    /// Whether a known neighbour is old enough to be asked again, and was
    /// not asked within the last [`ARP_RETRY_MS`]; if so, notes the asking.
    fn confirmation_due(&mut self, neighbour: u32, now: Timestamp) -> bool {
        let Some((_, seen)) = self.neighbours.get(&neighbour) else { return false };
        if now.millis().saturating_sub(seen.millis()) < NEIGHBOUR_REFRESH_SECS * 1000 {
            return false;
        }
        let asked = self.confirming.get(&neighbour);
        if asked.is_some_and(|at| now.millis().saturating_sub(at.millis()) < ARP_RETRY_MS) {
            return false;
        }
        if self.confirming.len() >= MAX_NEIGHBOURS {
            self.confirming.retain(|ip, _| self.neighbours.contains_key(ip));
        }
        self.confirming.insert(neighbour, now);
        true
    }

    fn no_route(&mut self) -> Routed {
        self.stats.no_route += 1;
        Routed::NoRoute
    }

    fn park(&mut self, now: Timestamp, neighbour: u32, waiting: (Vec<u8>, Egress, Offload)) {
        if self.pending_total >= MAX_PENDING {
            // The longest queue gives up its oldest frame.
            if let Some((queue, _)) = self.pending.values_mut().max_by_key(|(q, _)| q.len()) {
                queue.pop_front();
                self.pending_total -= 1;
                self.stats.pending_dropped += 1;
            }
            self.pending.retain(|_, (q, _)| !q.is_empty());
        }
        let (queue, _) = self.pending.entry(neighbour).or_insert_with(|| (VecDeque::new(), now));
        if queue.len() >= MAX_PENDING_PER_NEIGHBOUR {
            queue.pop_front();
            self.pending_total -= 1;
            self.stats.pending_dropped += 1;
        }
        queue.push_back(waiting);
        self.pending_total += 1;
    }
}

/// A broadcast ARP request from `from` for `target`.
pub fn arp_request(from: &Gateway, target: u32) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&from.mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f.extend_from_slice(&from.mac);
    f.extend_from_slice(&from.ip.to_be_bytes());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.to_be_bytes());
    f.resize(60, 0);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTAINER_MAC: Mac = [0x02, 0, 0, 0, 0, 0x0a];
    const NEXTHOP_MAC: Mac = [0x02, 0, 0, 0, 0, 0xfe];

    fn router() -> Router {
        let mut r = Router::default();
        r.set_interfaces(vec![
            Interface { address: Gateway::parse("198.18.0.1/24").unwrap(), port: None, nexthop: None },
            Interface {
                address: Gateway::parse("198.19.0.1/24").unwrap(),
                port: Some(9),
                nexthop: Some(u32::from_be_bytes([198, 19, 0, 254])),
            },
        ]);
        r
    }

    fn ip_frame(src: [u8; 4], dst: [u8; 4], ttl: u8) -> Vec<u8> {
        let mut out = Vec::new();
        etherparse::PacketBuilder::ethernet2(CONTAINER_MAC, [0x02, 0x76, 198, 18, 0, 1])
            .ipv4(src, dst, ttl)
            .udp(5000, 53)
            .write(&mut out, b"routed")
            .unwrap();
        out
    }

    fn arp_reply(sender_mac: Mac, sender_ip: [u8; 4], target: &Gateway) -> Vec<u8> {
        let mut f = target.mac.to_vec();
        f.extend_from_slice(&sender_mac);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 2]);
        f.extend_from_slice(&sender_mac);
        f.extend_from_slice(&sender_ip);
        f.extend_from_slice(&target.mac);
        f.extend_from_slice(&target.ip.to_be_bytes());
        f.resize(60, 0);
        f
    }

    #[test]
    fn off_subnet_goes_to_the_next_hop_after_arp() {
        let mut r = router();
        let now = Timestamp::from_millis(0);
        let uplink = r.interfaces()[1].address;
        let mut frame = ip_frame([198, 18, 0, 2], [203, 0, 113, 7], 64);
        let Routed::Resolving { request, egress } = r.route(now, &mut frame, Offload::NONE) else {
            panic!("must ask first")
        };
        assert_eq!(egress, Egress::Port(9));
        assert_eq!(&request[6..12], &uplink.mac);
        assert_eq!(&request[38..42], &[198, 19, 0, 254], "who has the next hop");
        // A second frame waits without another request; after a second, it asks again.
        let mut second = ip_frame([198, 18, 0, 2], [203, 0, 113, 8], 64);
        assert_eq!(r.route(now, &mut second, Offload::NONE), Routed::Waiting);
        let later = Timestamp::from_millis(ARP_RETRY_MS);
        assert!(matches!(
            r.route(later, &mut ip_frame([198, 18, 0, 2], [203, 0, 113, 8], 64), Offload::NONE),
            Routed::Resolving { .. }
        ));
        // The reply, on the uplink port, releases both with the MACs set and TTL down.
        let reply = arp_reply(NEXTHOP_MAC, [198, 19, 0, 254], &uplink);
        let l2 = L2Header::parse(&reply).unwrap();
        assert!(r.learn_arp(now, &reply, &l2, 3).is_empty(), "not on the uplink's port: ignored");
        let released = r.learn_arp(now, &reply, &l2, 9);
        assert_eq!(released.len(), 3);
        for (f, egress, _) in &released {
            assert_eq!(
                (&f[0..6], &f[6..12], f[22], *egress),
                (&NEXTHOP_MAC[..], &uplink.mac[..], 63, Egress::Port(9))
            );
        }
        // Now known: routed at once.
        let mut third = ip_frame([198, 18, 0, 2], [203, 0, 113, 9], 64);
        assert_eq!(r.route(now, &mut third, Offload::NONE), Routed::Send(Egress::Port(9)));
        assert_eq!(&third[0..6], &NEXTHOP_MAC);
    }

    #[test]
    fn into_the_subnet_resolves_the_host_and_ttl_and_garbage_are_refused() {
        let mut r = router();
        let now = Timestamp::from_millis(0);
        let gw = r.interfaces()[0].address;
        let mut frame = ip_frame([203, 0, 113, 7], [198, 18, 0, 2], 64);
        let Routed::Resolving { egress, .. } = r.route(now, &mut frame, Offload::NONE) else { panic!() };
        assert_eq!(egress, Egress::Bridge);
        let reply = arp_reply(CONTAINER_MAC, [198, 18, 0, 2], &gw);
        let released = r.learn_arp(now, &reply, &L2Header::parse(&reply).unwrap(), 4);
        assert_eq!(released[0].0[0..6], CONTAINER_MAC);
        assert_eq!(
            r.route(now, &mut ip_frame([203, 0, 113, 7], [198, 18, 0, 2], 1), Offload::NONE),
            Routed::TtlExpired
        );
        assert_eq!(r.route(now, &mut vec![0; 30], Offload::NONE), Routed::NoRoute);
        let mut to_gateway = ip_frame([198, 18, 0, 2], [198, 18, 0, 1], 64);
        assert_eq!(r.route(now, &mut to_gateway, Offload::NONE), Routed::NoRoute, "not an ARP for itself");
        // Entries age out.
        assert!(r
            .neighbour(
                u32::from_be_bytes([198, 18, 0, 2]),
                Timestamp::from_millis(NEIGHBOUR_AGING_SECS * 1000)
            )
            .is_none());
    }

    #[test]
    fn a_neighbour_in_use_is_asked_to_confirm_itself_before_it_ages_out() {
        let mut r = router();
        let uplink = r.interfaces()[1].address;
        let at = |secs: f64| Timestamp::from_millis((secs * 1000.0) as u64);
        let route = |r: &mut Router, secs| {
            r.route(at(secs), &mut ip_frame([198, 18, 0, 2], [203, 0, 113, 7], 64), Offload::NONE)
        };
        let reply = arp_reply(NEXTHOP_MAC, [198, 19, 0, 254], &uplink);
        let l2 = L2Header::parse(&reply).unwrap();
        r.learn_arp(at(0.0), &reply, &l2, 9);

        assert_eq!(route(&mut r, 100.0), Routed::Send(Egress::Port(9)));
        // Old enough: the frame still goes, with a unicast request beside it.
        let Routed::SendAndAsk { egress, request } = route(&mut r, NEIGHBOUR_REFRESH_SECS as f64) else {
            panic!("a confirmation is due")
        };
        assert_eq!(egress, Egress::Port(9));
        assert_eq!((&request[0..6], &request[38..42]), (&NEXTHOP_MAC[..], &[198, 19, 0, 254][..]));
        // Asked once a second at most.
        assert_eq!(route(&mut r, NEIGHBOUR_REFRESH_SECS as f64 + 0.5), Routed::Send(Egress::Port(9)));
        assert!(matches!(route(&mut r, NEIGHBOUR_REFRESH_SECS as f64 + 1.0), Routed::SendAndAsk { .. }));
        // The answer renews the entry: past the old aging time, frames go on.
        r.learn_arp(at(NEIGHBOUR_REFRESH_SECS as f64 + 1.1), &reply, &l2, 9);
        assert_eq!(route(&mut r, NEIGHBOUR_AGING_SECS as f64 + 10.0), Routed::Send(Egress::Port(9)));
        // Without an answer the entry ages out, and frames wait again.
        let silent = NEIGHBOUR_REFRESH_SECS as f64 + 1.1 + NEIGHBOUR_AGING_SECS as f64;
        assert!(matches!(route(&mut r, silent), Routed::Resolving { .. }));
    }

    #[test]
    fn waiting_frames_are_bounded() {
        let mut r = router();
        let now = Timestamp::from_millis(0);
        for i in 0..(MAX_PENDING * 2) as u32 {
            let dst = (u32::from_be_bytes([198, 18, 0, 0]) | (i % 200 + 2)).to_be_bytes();
            r.route(now, &mut ip_frame([203, 0, 113, 7], dst, 64), Offload::NONE);
        }
        assert!(r.pending_total <= MAX_PENDING);
        assert_eq!(r.pending.values().map(|(q, _)| q.len()).sum::<usize>(), r.pending_total);
        assert!(r.pending.values().all(|(q, _)| q.len() <= MAX_PENDING_PER_NEIGHBOUR));
        assert!(r.stats.pending_dropped > 0);
    }
}
