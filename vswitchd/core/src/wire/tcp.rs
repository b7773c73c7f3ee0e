//! TCP (RFC 9293): ports, sequence and acknowledgement numbers, data
//! offset, flags, window, checksum, options and payload.
//!
//! After `new_checked`: the buffer holds the 20-byte header, and the data
//! offset is at least 5 and within the buffer, so `options()` and
//! `payload()` cannot panic. The payload runs to the end of the buffer:
//! the caller cuts the buffer at the IP packet's end. The checksum is not
//! checked; [`TcpPacket::verify_checksum`] does that given the IP view's
//! pseudo-header sum.

use super::{get16, get32, need, put16, put32, Field, WireError};
use crate::checksum;

pub mod field {
    use super::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const SEQ_NUM: Field = 4..8;
    pub const ACK_NUM: Field = 8..12;
    /// Data offset (high nibble), reserved bits and the AE flag.
    pub const DATA_OFFSET: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: Field = 14..16;
    pub const CHECKSUM: Field = 16..18;
    pub const URGENT: Field = 18..20;
    pub const OPTIONS: usize = 20;
}

pub const HEADER_LEN: usize = field::OPTIONS;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;
pub const URG: u8 = 0x20;
pub const ECE: u8 = 0x40;
pub const CWR: u8 = 0x80;

/// A view of a TCP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        TcpPacket { buffer }
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
        need("TCP", HEADER_LEN, have)?;
        if self.header_len() < HEADER_LEN {
            return Err(WireError::Malformed { header: "TCP", reason: "data offset below 5" });
        }
        need("TCP options", self.header_len(), have)
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

    #[inline]
    pub fn seq_number(&self) -> u32 {
        get32(self.buffer.as_ref(), field::SEQ_NUM)
    }

    #[inline]
    pub fn ack_number(&self) -> u32 {
        get32(self.buffer.as_ref(), field::ACK_NUM)
    }

    /// The header's length in bytes, options included (data offset * 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFFSET] >> 4) * 4
    }

    /// The eight flag bits, CWR to FIN ([`FIN`], [`SYN`], ...).
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    #[inline]
    pub fn window_len(&self) -> u16 {
        get16(self.buffer.as_ref(), field::WINDOW)
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        get16(self.buffer.as_ref(), field::CHECKSUM)
    }

    #[inline]
    pub fn urgent_at(&self) -> u16 {
        get16(self.buffer.as_ref(), field::URGENT)
    }

    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[field::OPTIONS..self.header_len()]
    }

    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }

    /// Whether the checksum over the whole buffer is right, given the IP
    /// header's `pseudo_header` sum.
    #[inline]
    pub fn verify_checksum(&self, pseudo_header: u64) -> bool {
        checksum::checksum(self.buffer.as_ref(), pseudo_header) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    #[inline]
    pub fn set_src_port(&mut self, port: u16) {
        put16(self.buffer.as_mut(), field::SRC_PORT, port);
    }

    #[inline]
    pub fn set_dst_port(&mut self, port: u16) {
        put16(self.buffer.as_mut(), field::DST_PORT, port);
    }

    #[inline]
    pub fn set_seq_number(&mut self, seq: u32) {
        put32(self.buffer.as_mut(), field::SEQ_NUM, seq);
    }

    #[inline]
    pub fn set_ack_number(&mut self, ack: u32) {
        put32(self.buffer.as_mut(), field::ACK_NUM, ack);
    }

    #[inline]
    pub fn set_flags(&mut self, flags: u8) {
        self.buffer.as_mut()[field::FLAGS] = flags;
    }

    #[inline]
    pub fn set_window_len(&mut self, window: u16) {
        put16(self.buffer.as_mut(), field::WINDOW, window);
    }

    #[inline]
    pub fn set_checksum(&mut self, checksum: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, checksum);
    }

    /// Computes the checksum over the whole buffer with the IP header's
    /// `pseudo_header` sum and stores it.
    #[inline]
    pub fn fill_checksum(&mut self, pseudo_header: u64) {
        self.set_checksum(0);
        let sum = checksum::checksum(self.buffer.as_ref(), pseudo_header);
        self.set_checksum(sum);
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        &mut self.buffer.as_mut()[start..]
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
            .tcp(40000, 80, 7, 1000)
            .syn()
            .ack(99)
            .options(&[etherparse::TcpOptionElement::MaximumSegmentSize(1400)])
            .unwrap()
            .write(&mut out, payload)
            .unwrap();
        out
    }

    #[test]
    fn reads_and_writes_what_etherparse_built() {
        let mut bytes = built(b"GET /");
        let ip = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        let pseudo = ip.pseudo_header(6, ip.payload().len());
        let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!((tcp.src_port(), tcp.dst_port(), tcp.seq_number(), tcp.ack_number()), (40000, 80, 7, 99));
        assert_eq!((tcp.header_len(), tcp.flags(), tcp.window_len()), (24, SYN | ACK, 1000));
        assert_eq!(tcp.options(), &[2, 4, 0x05, 0x78]);
        assert_eq!(tcp.payload(), b"GET /");
        assert!(tcp.verify_checksum(pseudo));

        let mut tcp = TcpPacket::new_checked(&mut bytes[20..]).unwrap();
        tcp.set_dst_port(8080);
        tcp.set_seq_number(0xdead_beef);
        tcp.set_flags(ACK | PSH);
        tcp.fill_checksum(pseudo);
        let ip = etherparse::Ipv4Header::from_slice(&bytes).unwrap().0;
        let (h, payload) = etherparse::TcpHeader::from_slice(&bytes[20..]).unwrap();
        assert_eq!((h.destination_port, h.sequence_number, h.psh, h.syn), (8080, 0xdead_beef, true, false));
        assert_eq!(h.checksum, h.calc_checksum_ipv4(&ip, payload).unwrap());
    }

    #[test]
    fn every_prefix_shorter_than_the_header_is_truncated() {
        let bytes = built(b"GET /");
        let tcp = &bytes[20..];
        for n in 0..HEADER_LEN {
            assert_eq!(
                TcpPacket::new_checked(&tcp[..n]),
                Err(WireError::Truncated { header: "TCP", need: HEADER_LEN, have: n })
            );
        }
        for n in HEADER_LEN..24 {
            assert_eq!(
                TcpPacket::new_checked(&tcp[..n]),
                Err(WireError::Truncated { header: "TCP options", need: 24, have: n })
            );
        }
        let mut bad = tcp.to_vec();
        bad[12] = 0x40;
        assert_eq!(
            TcpPacket::new_checked(&bad[..]),
            Err(WireError::Malformed { header: "TCP", reason: "data offset below 5" })
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(tcp) = TcpPacket::new_checked(&bytes[..]) {
                let _ = (tcp.src_port(), tcp.dst_port(), tcp.seq_number(), tcp.ack_number());
                let _ = (tcp.header_len(), tcp.flags(), tcp.window_len(), tcp.checksum(), tcp.urgent_at());
                let _ = (tcp.options().len(), tcp.payload().len(), tcp.verify_checksum(0));
                let mut copy = bytes.clone();
                let mut tcp = TcpPacket::new_checked(&mut copy[..]).unwrap();
                tcp.fill_checksum(0);
                let _ = tcp.payload_mut().len();
                prop_assert!(TcpPacket::new_checked(&copy[..]).unwrap().verify_checksum(0));
            }
        }
    }
}
