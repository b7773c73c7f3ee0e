//! A bridge's gateway address (`vsctl set bridge BR gateway=CIDR`), what
//! Docker puts on `docker0`: the switch itself answers ARP requests for it
//! and ICMP echo requests to it, so containers can resolve and ping their
//! default gateway without a kernel interface holding the address.
//!
//! The gateway's MAC is derived from its address (02:76:A:B:C:D, locally
//! administered), so it is stable across restarts and needs no state.
//! Replies leave by the port the request came in on, with the request's
//! VLAN tags, so the gateway answers on every VLAN of the bridge.
//!
//! Costs: nothing for frames not addressed to the gateway's IP (the
//! caller compares the flow key's `nw_dst` first); a copy of the request
//! for a reply.
//!
//! Threads: a [`Gateway`] is plain data (`Send` and `Sync`); answering
//! keeps no state, so it is read from the forwarding thread through `&`.

use std::net::Ipv4Addr;

use crate::packet::{L2Header, Mac};
use crate::wire::{arp, icmp, ip_protocol, ArpPacket, EthernetFrame, Icmpv4Packet, Ipv4Packet};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Gateway {
    pub ip: u32,
    pub prefix: u8,
    pub mac: Mac,
}

impl Gateway {
    pub fn new(ip: u32, prefix: u8) -> Gateway {
        let [a, b, c, d] = ip.to_be_bytes();
        Gateway { ip, prefix, mac: [0x02, 0x76, a, b, c, d] }
    }

    /// `A.B.C.D/N`, the form `set bridge BR gateway=` takes.
    pub fn parse(cidr: &str) -> Result<Gateway, String> {
        let (addr, prefix) = cidr.split_once('/').ok_or_else(|| format!("{cidr:?} is not A.B.C.D/PREFIX"))?;
        let ip: std::net::Ipv4Addr = addr.parse().map_err(|_| format!("{addr:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (1..=30).contains(p))
            .ok_or_else(|| format!("prefix /{prefix} is not 1 to 30"))?;
        let ip = u32::from(ip);
        let host = ip & (u32::MAX >> prefix);
        if host == 0 || host == u32::MAX >> prefix {
            return Err(format!("{cidr} is the subnet's network or broadcast address, not a host"));
        }
        Ok(Gateway::new(ip, prefix))
    }

    pub fn cidr(&self) -> String {
        format!("{}/{}", std::net::Ipv4Addr::from(self.ip), self.prefix)
    }

    /// If `frame` is an ARP request for the gateway's address or an ICMP
    /// echo request to it, writes the reply into `out` and says so.
    pub fn answer(&self, frame: &[u8], l2: &L2Header, out: &mut Vec<u8>) -> bool {
        let at = l2.payload_offset;
        match l2.ether_type {
            0x0806 => self.answer_arp(frame, at, out),
            0x0800 => self.answer_echo(frame, l2, at, out),
            _ => false,
        }
    }

    fn answer_arp(&self, frame: &[u8], at: usize, out: &mut Vec<u8>) -> bool {
        let Some(Ok(arp)) = frame.get(at..).map(ArpPacket::new_checked) else { return false };
        if !arp.is_ethernet_ipv4()
            || arp.operation() != arp::REQUEST
            || arp.target_protocol_addr() != self.ip()
        {
            return false;
        }
        let (sender_mac, sender_ip) = (arp.sender_hardware_addr(), arp.sender_protocol_addr());
        out.clear();
        out.extend_from_slice(frame);
        self.reply_from_gateway(out);
        // A copy of the packet checked above.
        let mut reply = ArpPacket::new_unchecked(&mut out[at..]);
        reply.set_operation(arp::REPLY);
        reply.set_sender_hardware_addr(self.mac);
        reply.set_sender_protocol_addr(self.ip());
        reply.set_target_hardware_addr(sender_mac);
        reply.set_target_protocol_addr(sender_ip);
        true
    }

    fn answer_echo(&self, frame: &[u8], l2: &L2Header, l3: usize, out: &mut Vec<u8>) -> bool {
        if l2.dst != self.mac {
            return false;
        }
        let Some(Ok(ip)) = frame.get(l3..).map(Ipv4Packet::new_checked) else { return false };
        if ip.version() != 4
            || ip.is_fragment()
            || ip.protocol() != ip_protocol::ICMP
            || ip.dst_addr() != self.ip()
        {
            return false;
        }
        let Ok(icmp) = Icmpv4Packet::new_checked(ip.payload()) else { return false };
        if icmp.msg_type() != icmp::ECHO_REQUEST || !icmp.verify_checksum() {
            return false;
        }
        let total = usize::from(ip.total_len());
        out.clear();
        out.extend_from_slice(&frame[..l3 + total]);
        self.reply_from_gateway(out);
        // A copy of the packet checked above, without Ethernet padding.
        let mut ip = Ipv4Packet::new_unchecked(&mut out[l3..]);
        let requester = ip.src_addr();
        ip.set_dst_addr(requester);
        ip.set_src_addr(self.ip());
        ip.set_ttl(64);
        ip.fill_checksum();
        let mut icmp = Icmpv4Packet::new_unchecked(ip.payload_mut());
        icmp.set_msg_type(icmp::ECHO_REPLY);
        icmp.fill_checksum();
        true
    }

    fn ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.ip)
    }

    /// Addresses a copy of a received frame back to its sender, from the
    /// gateway's MAC.
    fn reply_from_gateway(&self, out: &mut [u8]) {
        // The frame passed L2Header::parse: its Ethernet header is there.
        let mut eth = EthernetFrame::new_unchecked(out);
        let requester = eth.src_addr();
        eth.set_dst_addr(requester);
        eth.set_src_addr(self.mac);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{Icmpv4Type, NetSlice, PacketBuilder, SlicedPacket, TransportSlice};

    const HOST: Mac = [0x02, 0, 0, 0, 0, 0x0a];

    fn gateway() -> Gateway {
        Gateway::parse("198.18.0.1/24").unwrap()
    }

    fn arp_request(target: [u8; 4], tagged: bool) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&HOST);
        if tagged {
            f.extend_from_slice(&[0x81, 0x00, 0x00, 0x0a]);
        }
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
        f.extend_from_slice(&HOST);
        f.extend_from_slice(&[198, 18, 0, 2]);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&target);
        f.resize(f.len().max(60), 0);
        f
    }

    fn answer(frame: &[u8]) -> Option<Vec<u8>> {
        let l2 = L2Header::parse(frame).unwrap();
        let mut out = Vec::new();
        gateway().answer(frame, &l2, &mut out).then_some(out)
    }

    #[test]
    fn answers_arp_for_its_address_only_keeping_the_tag() {
        let reply = answer(&arp_request([198, 18, 0, 1], true)).unwrap();
        let gw = gateway();
        assert_eq!(
            (&reply[0..6], &reply[6..12], &reply[12..16]),
            (&HOST[..], &gw.mac[..], &[0x81, 0, 0, 0x0a][..])
        );
        let arp = &reply[18..46];
        assert_eq!(&arp[6..8], &[0, 2], "a reply");
        assert_eq!((&arp[8..14], &arp[14..18]), (&gw.mac[..], &[198, 18, 0, 1][..]));
        assert_eq!((&arp[18..24], &arp[24..28]), (&HOST[..], &[198, 18, 0, 2][..]));
        assert!(answer(&arp_request([198, 18, 0, 3], false)).is_none());
        assert!(answer(&arp_request([198, 18, 0, 1], false)).is_some());
    }

    #[test]
    fn answers_echo_to_its_address_with_valid_checksums() {
        let gw = gateway();
        let mut ping = Vec::new();
        PacketBuilder::ethernet2(HOST, gw.mac)
            .ipv4([198, 18, 0, 2], [198, 18, 0, 1], 63)
            .icmpv4_echo_request(0x1234, 7)
            .write(&mut ping, b"abcdefgh")
            .unwrap();
        let reply = answer(&ping).unwrap();
        let p = SlicedPacket::from_ethernet(&reply).unwrap();
        let Some(NetSlice::Ipv4(ip)) = &p.net else { panic!() };
        let h = ip.header().to_header();
        assert_eq!((h.source, h.destination, h.time_to_live), ([198, 18, 0, 1], [198, 18, 0, 2], 64));
        assert_eq!(h.calc_header_checksum(), h.header_checksum);
        let Some(TransportSlice::Icmpv4(icmp)) = &p.transport else { panic!() };
        assert!(matches!(icmp.icmp_type(), Icmpv4Type::EchoReply(e) if e.id == 0x1234 && e.seq == 7));
        assert_eq!(icmp.payload(), b"abcdefgh");
        assert_eq!(icmp.header().icmp_type.calc_checksum(icmp.payload()), icmp.checksum());
        assert_eq!(&reply[0..6], &HOST);
        // Not to its MAC, to another address, or with a bad checksum: not for it.
        let mut other_mac = ping.clone();
        other_mac[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
        assert!(answer(&other_mac).is_none());
        let mut corrupt = ping.clone();
        *corrupt.last_mut().unwrap() ^= 0xff;
        assert!(answer(&corrupt).is_none());
        let mut cut = ping.clone();
        cut.truncate(14 + 20 + 4);
        assert!(answer(&cut).is_none());
    }

    #[test]
    fn parses_host_addresses_only() {
        assert_eq!(gateway().cidr(), "198.18.0.1/24");
        assert_eq!(gateway().mac, [0x02, 0x76, 198, 18, 0, 1]);
        for bad in ["198.18.0.0/24", "198.18.0.255/24", "198.18.0.1", "198.18.0.1/31", "nope/24"] {
            assert!(Gateway::parse(bad).is_err(), "{bad}");
        }
    }
}
