//! IPv4 (RFC 791): the fixed 20-byte header, options, and the payload up
//! to the total length.
//!
//! After `new_checked`: the buffer holds the fixed header; IHL is at least
//! 5 and the header with its options is within the buffer; the total
//! length is at least the header's and within the buffer (bytes after it,
//! Ethernet padding, are not the payload's). After `new_checked_header`:
//! the same without the total length, and `payload()` is cut at the end
//! of the buffer. Neither checks the version nor the header checksum
//! ([`Ipv4Packet::version`], [`Ipv4Packet::verify_checksum`]).

use std::net::Ipv4Addr;

use super::{get16, get32, need, put16, put32, Field, WireError};
use crate::checksum;

pub mod field {
    use super::Field;
    /// Version (high nibble) and header length in 32-bit words (low).
    pub const VER_IHL: usize = 0;
    /// DSCP and ECN, once the type of service.
    pub const TOS: usize = 1;
    pub const LENGTH: Field = 2..4;
    pub const IDENT: Field = 4..6;
    /// Flags (reserved, DF, MF) and the fragment offset.
    pub const FLAGS_FRAG: Field = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Field = 10..12;
    pub const SRC_ADDR: Field = 12..16;
    pub const DST_ADDR: Field = 16..20;
    /// Source and destination back to back, as the pseudo-header sums them.
    pub const ADDRESSES: Field = 12..20;
}

/// The header without options.
pub const HEADER_LEN: usize = 20;

const DONT_FRAG: u16 = 0x4000;
const MORE_FRAGS: u16 = 0x2000;
const FRAG_OFFSET: u16 = 0x1fff;

/// A view of an IPv4 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    /// The header and the total length it states are within `buffer`.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// The header (with options) is within `buffer`; the total length is
    /// not looked at (a quoted packet, a GSO frame).
    #[inline]
    pub fn new_checked_header(buffer: T) -> Result<Self, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_header_len()?;
        Ok(packet)
    }

    #[inline]
    pub fn check_header_len(&self) -> Result<(), WireError> {
        let have = self.buffer.as_ref().len();
        need("IPv4", HEADER_LEN, have)?;
        if self.header_len() < HEADER_LEN {
            return Err(WireError::Malformed { header: "IPv4", reason: "IHL below 5" });
        }
        need("IPv4 options", self.header_len(), have)
    }

    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        self.check_header_len()?;
        let total = usize::from(self.total_len());
        if total < self.header_len() {
            return Err(WireError::Malformed {
                header: "IPv4",
                reason: "total length below the header length",
            });
        }
        need("IPv4 total length", total, self.buffer.as_ref().len())
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// The header's length in bytes, options included (IHL * 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    #[inline]
    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[field::TOS]
    }

    #[inline]
    pub fn total_len(&self) -> u16 {
        get16(self.buffer.as_ref(), field::LENGTH)
    }

    #[inline]
    pub fn ident(&self) -> u16 {
        get16(self.buffer.as_ref(), field::IDENT)
    }

    /// The flags and fragment offset as one word, as on the wire.
    #[inline]
    pub fn flags_frag(&self) -> u16 {
        get16(self.buffer.as_ref(), field::FLAGS_FRAG)
    }

    #[inline]
    pub fn dont_frag(&self) -> bool {
        self.flags_frag() & DONT_FRAG != 0
    }

    #[inline]
    pub fn more_frags(&self) -> bool {
        self.flags_frag() & MORE_FRAGS != 0
    }

    /// The fragment offset in 8-byte units, as on the wire.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        self.flags_frag() & FRAG_OFFSET
    }

    /// Part of a datagram rather than a whole one (MF, or an offset).
    #[inline]
    pub fn is_fragment(&self) -> bool {
        self.flags_frag() & (MORE_FRAGS | FRAG_OFFSET) != 0
    }

    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        get16(self.buffer.as_ref(), field::CHECKSUM)
    }

    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(get32(self.buffer.as_ref(), field::SRC_ADDR))
    }

    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(get32(self.buffer.as_ref(), field::DST_ADDR))
    }

    /// Source and destination, the bytes a transport pseudo-header sums.
    #[inline]
    pub fn addresses(&self) -> &[u8] {
        &self.buffer.as_ref()[field::ADDRESSES]
    }

    /// The header with its options.
    #[inline]
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.header_len()]
    }

    /// From the end of the header to the total length, or to the end of
    /// the buffer if that comes first (only after `new_checked_header`).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let data = self.buffer.as_ref();
        let start = self.header_len();
        let end = usize::from(self.total_len()).max(start).min(data.len());
        &data[start..end]
    }

    /// Whether the header checksum is right.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::internet_checksum(self.header()) == 0
    }

    /// The unfolded pseudo-header sum of a `protocol` segment of `l4_len`
    /// bytes carried in this packet, for [`super::TcpPacket`] and
    /// [`super::UdpPacket`]'s checksums.
    #[inline]
    pub fn pseudo_header(&self, protocol: u8, l4_len: usize) -> u64 {
        checksum::pseudo_header(self.addresses(), protocol, l4_len)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    #[inline]
    pub fn set_tos(&mut self, tos: u8) {
        self.buffer.as_mut()[field::TOS] = tos;
    }

    #[inline]
    pub fn set_total_len(&mut self, len: u16) {
        put16(self.buffer.as_mut(), field::LENGTH, len);
    }

    #[inline]
    pub fn set_ident(&mut self, ident: u16) {
        put16(self.buffer.as_mut(), field::IDENT, ident);
    }

    #[inline]
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    #[inline]
    pub fn set_protocol(&mut self, protocol: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = protocol;
    }

    #[inline]
    pub fn set_checksum(&mut self, checksum: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, checksum);
    }

    #[inline]
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        put32(self.buffer.as_mut(), field::SRC_ADDR, addr.into());
    }

    #[inline]
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        put32(self.buffer.as_mut(), field::DST_ADDR, addr.into());
    }

    /// Computes the header checksum afresh and stores it.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let sum = checksum::internet_checksum(self.header());
        self.set_checksum(sum);
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        let end = usize::from(self.total_len()).max(start);
        let data = self.buffer.as_mut();
        let end = end.min(data.len());
        &mut data[start..end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;
    use proptest::prelude::*;

    /// An IPv4/UDP packet, without its Ethernet header.
    fn built(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ipv4([198, 18, 0, 1], [198, 18, 0, 2], 63)
            .udp(4000, 53)
            .write(&mut out, payload)
            .unwrap();
        out
    }

    #[test]
    fn reads_and_writes_what_etherparse_built() {
        let mut bytes = built(b"abc");
        bytes.extend_from_slice(&[0; 6]); // Ethernet padding is not payload.
        let ip = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!((ip.version(), ip.header_len(), ip.total_len()), (4, 20, 31));
        assert_eq!((ip.ttl(), ip.protocol(), ip.is_fragment()), (63, 17, false));
        assert_eq!(ip.src_addr(), Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(ip.dst_addr(), Ipv4Addr::new(198, 18, 0, 2));
        assert!(ip.verify_checksum());
        assert_eq!(ip.payload().len(), 11);
        assert_eq!(&ip.payload()[8..], b"abc");

        let mut ip = Ipv4Packet::new_checked(&mut bytes[..]).unwrap();
        ip.set_src_addr(Ipv4Addr::new(10, 0, 0, 1));
        ip.set_ttl(7);
        ip.set_ident(0x1234);
        assert!(!ip.verify_checksum());
        ip.fill_checksum();
        assert!(ip.verify_checksum());
        let (h, _) = etherparse::Ipv4Header::from_slice(&bytes).unwrap();
        assert_eq!((h.source, h.time_to_live, h.identification), ([10, 0, 0, 1], 7, 0x1234));
        assert_eq!(h.header_checksum, h.calc_header_checksum());
    }

    #[test]
    fn the_pseudo_header_is_what_etherparse_sums() {
        let bytes = built(b"abcde");
        let ip = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        let udp = crate::wire::UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(udp.verify_checksum(ip.pseudo_header(17, ip.payload().len())));
    }

    #[test]
    fn every_prefix_shorter_than_the_header_is_truncated() {
        let bytes = built(b"abc");
        for n in 0..HEADER_LEN {
            let want = Err(WireError::Truncated { header: "IPv4", need: HEADER_LEN, have: n });
            assert_eq!(Ipv4Packet::new_checked(&bytes[..n]), want);
            assert_eq!(Ipv4Packet::new_checked_header(&bytes[..n]), want);
        }
        // Past the header, the total length is what is missing.
        for n in HEADER_LEN..bytes.len() {
            assert_eq!(
                Ipv4Packet::new_checked(&bytes[..n]),
                Err(WireError::Truncated { header: "IPv4 total length", need: bytes.len(), have: n })
            );
            assert_eq!(Ipv4Packet::new_checked_header(&bytes[..n]).unwrap().payload(), &bytes[20..n]);
        }
    }

    #[test]
    fn header_length_fields_are_checked() {
        let mut bytes = built(b"abc");
        bytes[0] = 0x44;
        assert_eq!(
            Ipv4Packet::new_checked(&bytes[..]),
            Err(WireError::Malformed { header: "IPv4", reason: "IHL below 5" })
        );
        bytes[0] = 0x4f; // 60 bytes of header in a 31-byte packet.
        assert_eq!(
            Ipv4Packet::new_checked_header(&bytes[..]),
            Err(WireError::Truncated { header: "IPv4 options", need: 60, have: 31 })
        );
        bytes[0] = 0x45;
        bytes[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert!(matches!(Ipv4Packet::new_checked(&bytes[..]), Err(WireError::Malformed { .. })));
        assert!(Ipv4Packet::new_checked_header(&bytes[..]).unwrap().payload().is_empty());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            for packet in [Ipv4Packet::new_checked(&bytes[..]), Ipv4Packet::new_checked_header(&bytes[..])] {
                let Ok(ip) = packet else { continue };
                let _ = (ip.version(), ip.header_len(), ip.tos(), ip.total_len(), ip.ident());
                let _ = (ip.dont_frag(), ip.more_frags(), ip.frag_offset(), ip.is_fragment());
                let _ = (ip.ttl(), ip.protocol(), ip.checksum(), ip.src_addr(), ip.dst_addr());
                let _ = (ip.header().len(), ip.payload().len(), ip.verify_checksum(), ip.pseudo_header(6, 0));
                let mut copy = bytes.clone();
                let mut ip = Ipv4Packet::new_unchecked(&mut copy[..]);
                ip.fill_checksum();
                let _ = ip.payload_mut().len();
                prop_assert!(ip.verify_checksum());
            }
        }
    }
}
