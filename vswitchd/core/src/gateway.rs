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

use super::checksum::internet_checksum as checksum;
use super::packet::{L2Header, Mac};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Gateway {
    pub ip: u32,
    pub prefix: u8,
    pub mac: Mac,
}

const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_ECHO_REPLY: u8 = 0;

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
        let Some(arp) = frame.get(at..at + 28) else { return false };
        let is_request = arp[0..8] == [0, 1, 0x08, 0x00, 6, 4, 0, ARP_REQUEST as u8];
        if !is_request || arp[24..28] != self.ip.to_be_bytes() {
            return false;
        }
        out.clear();
        out.extend_from_slice(frame);
        let (sender_mac, sender_ip) = (&frame[at + 8..at + 14], &frame[at + 14..at + 18]);
        out.copy_within(6..12, 0);
        out[6..12].copy_from_slice(&self.mac);
        out[at + 6..at + 8].copy_from_slice(&ARP_REPLY.to_be_bytes());
        out[at + 8..at + 14].copy_from_slice(&self.mac);
        out[at + 14..at + 18].copy_from_slice(&self.ip.to_be_bytes());
        out[at + 18..at + 24].copy_from_slice(sender_mac);
        out[at + 24..at + 28].copy_from_slice(sender_ip);
        true
    }

    fn answer_echo(&self, frame: &[u8], l2: &L2Header, l3: usize, out: &mut Vec<u8>) -> bool {
        if l2.dst != self.mac {
            return false;
        }
        let Some(&first) = frame.get(l3) else { return false };
        let ihl = usize::from(first & 0x0f) * 4;
        let Some(ip) = frame.get(l3..l3 + ihl.max(20)) else { return false };
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        let whole = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff == 0;
        let icmp_at = l3 + ihl;
        if first >> 4 != 4
            || ihl < 20
            || !whole
            || ip[9] != 1
            || ip[16..20] != self.ip.to_be_bytes()
            || total < ihl + 8
            || frame.len() < l3 + total
            || frame[icmp_at] != ICMP_ECHO_REQUEST
            || checksum(&frame[icmp_at..l3 + total]) != 0
        {
            return false;
        }
        out.clear();
        out.extend_from_slice(&frame[..l3 + total]);
        out.copy_within(6..12, 0);
        out[6..12].copy_from_slice(&self.mac);
        out.copy_within(l3 + 12..l3 + 16, l3 + 16);
        out[l3 + 12..l3 + 16].copy_from_slice(&self.ip.to_be_bytes());
        out[l3 + 8] = 64;
        out[l3 + 10..l3 + 12].fill(0);
        let ip_sum = checksum(&out[l3..l3 + ihl]);
        out[l3 + 10..l3 + 12].copy_from_slice(&ip_sum.to_be_bytes());
        out[icmp_at] = ICMP_ECHO_REPLY;
        out[icmp_at + 2..icmp_at + 4].fill(0);
        let icmp_sum = checksum(&out[icmp_at..l3 + total]);
        out[icmp_at + 2..icmp_at + 4].copy_from_slice(&icmp_sum.to_be_bytes());
        true
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
