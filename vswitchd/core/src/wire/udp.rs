//! UDP (RFC 768): ports, length, checksum, payload.
//!
//! After `new_checked`: the buffer holds the 8-byte header, and the length
//! field is at least 8 and within the buffer (bytes after it are not the
//! payload's). The checksum is not checked; [`UdpPacket::verify_checksum`]
//! does that given the IP view's pseudo-header sum.

use super::{get16, need, put16, Field, WireError};
use crate::checksum;

pub mod field {
    use super::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const LENGTH: Field = 4..6;
    pub const CHECKSUM: Field = 6..8;
    pub const PAYLOAD: usize = 8;
}

pub const HEADER_LEN: usize = field::PAYLOAD;

/// A view of a UDP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        UdpPacket { buffer }
    }

    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        let have = self.buffer.as_ref().len();
        need("UDP", HEADER_LEN, have)?;
        let len = usize::from(self.length());
        if len < HEADER_LEN {
            return Err(WireError::Malformed { header: "UDP", reason: "length below 8" });
        }
        need("UDP length", len, have)
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn src_port(&self) -> u16 {
        get16(self.buffer.as_ref(), field::SRC_PORT)
    }

    #[inline]
    pub fn dst_port(&self) -> u16 {
        get16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// The length field: header and payload.
    #[inline]
    pub fn length(&self) -> u16 {
        get16(self.buffer.as_ref(), field::LENGTH)
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        get16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// After the header, up to the length field or the end of the buffer.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let data = self.buffer.as_ref();
        let end = usize::from(self.length()).max(HEADER_LEN).min(data.len());
        &data[HEADER_LEN..end]
    }

    /// Whether the checksum over the datagram (up to its length field) is
    /// right, given the IP header's `pseudo_header` sum; a zero checksum
    /// (none sent, allowed over IPv4) passes.
    #[inline]
    pub fn verify_checksum(&self, pseudo_header: u64) -> bool {
        let data = self.buffer.as_ref();
        let end = usize::from(self.length()).max(HEADER_LEN).min(data.len());
        self.checksum() == 0 || checksum::checksum(&data[..end], pseudo_header) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    #[inline]
    pub fn set_src_port(&mut self, port: u16) {
        put16(self.buffer.as_mut(), field::SRC_PORT, port);
    }

    #[inline]
    pub fn set_dst_port(&mut self, port: u16) {
        put16(self.buffer.as_mut(), field::DST_PORT, port);
    }

    #[inline]
    pub fn set_length(&mut self, len: u16) {
        put16(self.buffer.as_mut(), field::LENGTH, len);
    }

    #[inline]
    pub fn set_checksum(&mut self, checksum: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, checksum);
    }

    /// Computes the checksum over the whole buffer with the IP header's
    /// `pseudo_header` sum and stores it; a result of 0 is sent as 0xffff,
    /// since 0 means "no checksum".
    #[inline]
    pub fn fill_checksum(&mut self, pseudo_header: u64) {
        self.set_checksum(0);
        let sum = checksum::checksum(self.buffer.as_ref(), pseudo_header);
        self.set_checksum(if sum == 0 { 0xffff } else { sum });
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.length()).max(HEADER_LEN);
        let data = self.buffer.as_mut();
        let end = end.min(data.len());
        &mut data[HEADER_LEN..end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Ipv4Packet;
    use etherparse::PacketBuilder;
    use proptest::prelude::*;

    fn built(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ipv4([198, 18, 0, 1], [198, 18, 0, 2], 64)
            .udp(4000, 53)
            .write(&mut out, payload)
            .unwrap();
        out
    }

    #[test]
    fn reads_and_writes_what_etherparse_built() {
        let mut bytes = built(b"query");
        let ip = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        let pseudo = ip.pseudo_header(17, 13);
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!((udp.src_port(), udp.dst_port(), udp.length()), (4000, 53, 13));
        assert_eq!(udp.payload(), b"query");
        assert!(udp.verify_checksum(pseudo));

        let mut udp = UdpPacket::new_checked(&mut bytes[20..]).unwrap();
        udp.set_src_port(5000);
        udp.payload_mut()[0] = b'Q';
        assert!(!udp.verify_checksum(pseudo));
        udp.fill_checksum(pseudo);
        let (h, _) = etherparse::UdpHeader::from_slice(&bytes[20..]).unwrap();
        let ip = etherparse::Ipv4Header::from_slice(&bytes).unwrap().0;
        assert_eq!(h.source_port, 5000);
        assert_eq!(h.checksum, h.calc_checksum_ipv4(&ip, b"Query").unwrap());
    }

    #[test]
    fn every_prefix_shorter_than_the_header_is_truncated() {
        let bytes = built(b"query");
        let udp = &bytes[20..];
        for n in 0..HEADER_LEN {
            assert_eq!(
                UdpPacket::new_checked(&udp[..n]),
                Err(WireError::Truncated { header: "UDP", need: HEADER_LEN, have: n })
            );
        }
        for n in HEADER_LEN..udp.len() {
            assert_eq!(
                UdpPacket::new_checked(&udp[..n]),
                Err(WireError::Truncated { header: "UDP length", need: 13, have: n })
            );
        }
        let mut short = udp.to_vec();
        short[4..6].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(
            UdpPacket::new_checked(&short[..]),
            Err(WireError::Malformed { header: "UDP", reason: "length below 8" })
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(udp) = UdpPacket::new_checked(&bytes[..]) {
                let _ = (udp.src_port(), udp.dst_port(), udp.length(), udp.checksum());
                let _ = (udp.payload().len(), udp.verify_checksum(0));
                let mut copy = bytes.clone();
                let mut udp = UdpPacket::new_checked(&mut copy[..]).unwrap();
                udp.fill_checksum(0);
                let _ = udp.payload_mut().len();
            }
        }
    }
}
