//! IPv6 (RFC 8200): the fixed 40-byte header and what follows it.
//! Extension headers are not walked: `next_header()` says what comes
//! first, and `payload()` starts right after the fixed header.
//!
//! After `new_checked`: the buffer holds the fixed header and the payload
//! length it states. After `new_checked_header`: the fixed header only,
//! and `payload()` is cut at the end of the buffer (a GSO frame, or a
//! jumbogram whose payload length is 0). Neither checks the version.

use std::net::Ipv6Addr;

use super::{get16, need, put16, Field, WireError};
use crate::checksum;

pub mod field {
    use super::Field;
    /// Version, traffic class and flow label.
    pub const VER_TC_FLOW: Field = 0..4;
    pub const PAYLOAD_LEN: Field = 4..6;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC_ADDR: Field = 8..24;
    pub const DST_ADDR: Field = 24..40;
    /// Source and destination back to back, as the pseudo-header sums them.
    pub const ADDRESSES: Field = 8..40;
}

pub const HEADER_LEN: usize = 40;

/// A view of an IPv6 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv6Packet { buffer }
    }

    /// The header and the payload length it states are within `buffer`.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// The fixed header is within `buffer`; the payload length is not
    /// looked at.
    #[inline]
    pub fn new_checked_header(buffer: T) -> Result<Self, WireError> {
        let packet = Self::new_unchecked(buffer);
        need("IPv6", HEADER_LEN, packet.buffer.as_ref().len())?;
        Ok(packet)
    }

    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        let have = self.buffer.as_ref().len();
        need("IPv6", HEADER_LEN, have)?;
        need("IPv6 payload length", HEADER_LEN + usize::from(self.payload_len()), have)
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TC_FLOW.start] >> 4
    }

    #[inline]
    pub fn traffic_class(&self) -> u8 {
        (get16(self.buffer.as_ref(), 0..2) >> 4) as u8
    }

    #[inline]
    pub fn flow_label(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::VER_TC_FLOW];
        u32::from_be_bytes([0, b[1] & 0x0f, b[2], b[3]])
    }

    #[inline]
    pub fn payload_len(&self) -> u16 {
        get16(self.buffer.as_ref(), field::PAYLOAD_LEN)
    }

    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_HEADER]
    }

    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    #[inline]
    pub fn src_addr(&self) -> Ipv6Addr {
        let b: [u8; 16] = self.buffer.as_ref()[field::SRC_ADDR].try_into().expect("16 bytes");
        Ipv6Addr::from(b)
    }

    #[inline]
    pub fn dst_addr(&self) -> Ipv6Addr {
        let b: [u8; 16] = self.buffer.as_ref()[field::DST_ADDR].try_into().expect("16 bytes");
        Ipv6Addr::from(b)
    }

    /// Source and destination, the bytes a transport pseudo-header sums.
    #[inline]
    pub fn addresses(&self) -> &[u8] {
        &self.buffer.as_ref()[field::ADDRESSES]
    }

    /// After the fixed header, up to the payload length or the end of the
    /// buffer, whichever comes first.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let data = self.buffer.as_ref();
        let end = (HEADER_LEN + usize::from(self.payload_len())).min(data.len());
        &data[HEADER_LEN..end]
    }

    /// The unfolded pseudo-header sum (RFC 8200 8.1) of a `protocol`
    /// segment of `l4_len` bytes carried in this packet.
    #[inline]
    pub fn pseudo_header(&self, protocol: u8, l4_len: usize) -> u64 {
        checksum::pseudo_header(self.addresses(), protocol, l4_len)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    #[inline]
    pub fn set_payload_len(&mut self, len: u16) {
        put16(self.buffer.as_mut(), field::PAYLOAD_LEN, len);
    }

    #[inline]
    pub fn set_next_header(&mut self, next: u8) {
        self.buffer.as_mut()[field::NEXT_HEADER] = next;
    }

    /// The traffic class straddles the first two bytes, between the
    /// version and the flow label, which stay as they are.
    #[inline]
    pub fn set_traffic_class(&mut self, class: u8) {
        let word = get16(self.buffer.as_ref(), 0..2);
        put16(self.buffer.as_mut(), 0..2, (word & 0xf00f) | u16::from(class) << 4);
    }

    #[inline]
    pub fn set_hop_limit(&mut self, hops: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = hops;
    }

    #[inline]
    pub fn set_src_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    #[inline]
    pub fn set_dst_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        let data = self.buffer.as_mut();
        let end = end.min(data.len());
        &mut data[HEADER_LEN..end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;
    use proptest::prelude::*;

    const SRC: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const DST: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

    fn built(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ipv6(SRC, DST, 9).tcp(40000, 80, 1, 1000).write(&mut out, payload).unwrap();
        out
    }

    #[test]
    fn reads_and_writes_what_etherparse_built() {
        let mut bytes = built(b"abc");
        let ip = Ipv6Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!((ip.version(), ip.payload_len(), ip.next_header(), ip.hop_limit()), (6, 23, 6, 9));
        assert_eq!((ip.src_addr(), ip.dst_addr()), (Ipv6Addr::from(SRC), Ipv6Addr::from(DST)));
        assert_eq!((ip.traffic_class(), ip.flow_label()), (0, 0));
        let tcp = crate::wire::TcpPacket::new_checked(ip.payload()).unwrap();
        assert!(tcp.verify_checksum(ip.pseudo_header(6, ip.payload().len())));

        let mut ip = Ipv6Packet::new_checked(&mut bytes[..]).unwrap();
        ip.set_hop_limit(1);
        ip.set_dst_addr(Ipv6Addr::LOCALHOST);
        let (h, _) = etherparse::Ipv6Header::from_slice(&bytes).unwrap();
        assert_eq!((h.hop_limit, h.destination), (1, Ipv6Addr::LOCALHOST.octets()));
    }

    #[test]
    fn every_prefix_shorter_than_the_header_is_truncated() {
        let bytes = built(b"abc");
        for n in 0..HEADER_LEN {
            let want = Err(WireError::Truncated { header: "IPv6", need: HEADER_LEN, have: n });
            assert_eq!(Ipv6Packet::new_checked(&bytes[..n]), want);
            assert_eq!(Ipv6Packet::new_checked_header(&bytes[..n]), want);
        }
        for n in HEADER_LEN..bytes.len() {
            assert_eq!(
                Ipv6Packet::new_checked(&bytes[..n]),
                Err(WireError::Truncated { header: "IPv6 payload length", need: bytes.len(), have: n })
            );
            assert_eq!(Ipv6Packet::new_checked_header(&bytes[..n]).unwrap().payload(), &bytes[40..n]);
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            for packet in [Ipv6Packet::new_checked(&bytes[..]), Ipv6Packet::new_checked_header(&bytes[..])] {
                let Ok(ip) = packet else { continue };
                let _ = (ip.version(), ip.traffic_class(), ip.flow_label(), ip.payload_len());
                let _ = (ip.next_header(), ip.hop_limit(), ip.src_addr(), ip.dst_addr());
                let _ = (ip.payload().len(), ip.pseudo_header(17, 8));
                let mut copy = bytes.clone();
                let mut ip = Ipv6Packet::new_unchecked(&mut copy[..]);
                ip.set_hop_limit(1);
                let _ = ip.payload_mut().len();
            }
        }
    }
}
