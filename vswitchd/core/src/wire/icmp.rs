//! ICMPv4 (RFC 792): type, code, checksum, the four bytes that depend on
//! the type (an echo's identifier and sequence number), then the rest: an
//! echo's data, or the packet an error quotes. ICMPv6 is not covered: the
//! core answers and translates ICMP for IPv4 only.
//!
//! After `new_checked`: the buffer holds the 8-byte header. The buffer is
//! the whole message (the caller cuts it at the IP packet's end): the
//! checksum covers all of it.

use super::{get16, need, put16, Field, WireError};
use crate::checksum;

pub mod field {
    use super::Field;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
    /// An echo's identifier and sequence number.
    pub const ECHO_IDENT: Field = 4..6;
    pub const ECHO_SEQ_NO: Field = 6..8;
    /// An echo's data; the quoted packet of an error.
    pub const PAYLOAD: usize = 8;
}

pub const HEADER_LEN: usize = field::PAYLOAD;

pub const ECHO_REPLY: u8 = 0;
pub const DEST_UNREACHABLE: u8 = 3;
pub const ECHO_REQUEST: u8 = 8;
pub const TIME_EXCEEDED: u8 = 11;
pub const PARAM_PROBLEM: u8 = 12;

/// A view of an ICMPv4 message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmpv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Icmpv4Packet { buffer }
    }

    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        need("ICMPv4", HEADER_LEN, self.buffer.as_ref().len())
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    #[inline]
    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        get16(self.buffer.as_ref(), field::CHECKSUM)
    }

    #[inline]
    pub fn echo_ident(&self) -> u16 {
        get16(self.buffer.as_ref(), field::ECHO_IDENT)
    }

    #[inline]
    pub fn echo_seq_no(&self) -> u16 {
        get16(self.buffer.as_ref(), field::ECHO_SEQ_NO)
    }

    /// An error about a packet, which it quotes (unreachable, time
    /// exceeded, parameter problem).
    #[inline]
    pub fn is_error(&self) -> bool {
        matches!(self.msg_type(), DEST_UNREACHABLE | TIME_EXCEEDED | PARAM_PROBLEM)
    }

    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }

    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::internet_checksum(self.buffer.as_ref()) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv4Packet<T> {
    #[inline]
    pub fn set_msg_type(&mut self, msg_type: u8) {
        self.buffer.as_mut()[field::TYPE] = msg_type;
    }

    #[inline]
    pub fn set_msg_code(&mut self, code: u8) {
        self.buffer.as_mut()[field::CODE] = code;
    }

    #[inline]
    pub fn set_checksum(&mut self, checksum: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, checksum);
    }

    #[inline]
    pub fn set_echo_ident(&mut self, ident: u16) {
        put16(self.buffer.as_mut(), field::ECHO_IDENT, ident);
    }

    #[inline]
    pub fn set_echo_seq_no(&mut self, seq: u16) {
        put16(self.buffer.as_mut(), field::ECHO_SEQ_NO, seq);
    }

    /// Computes the checksum over the whole buffer afresh and stores it.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let sum = checksum::internet_checksum(self.buffer.as_ref());
        self.set_checksum(sum);
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{Icmpv4Slice, Icmpv4Type, PacketBuilder};
    use proptest::prelude::*;

    fn built() -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ipv4([198, 18, 0, 2], [198, 18, 0, 1], 64)
            .icmpv4_echo_request(0x1234, 7)
            .write(&mut out, b"abcdefgh")
            .unwrap();
        out.split_off(20)
    }

    #[test]
    fn reads_and_writes_what_etherparse_built() {
        let mut bytes = built();
        let icmp = Icmpv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!((icmp.msg_type(), icmp.msg_code(), icmp.is_error()), (ECHO_REQUEST, 0, false));
        assert_eq!((icmp.echo_ident(), icmp.echo_seq_no()), (0x1234, 7));
        assert_eq!(icmp.payload(), b"abcdefgh");
        assert!(icmp.verify_checksum());

        let mut icmp = Icmpv4Packet::new_checked(&mut bytes[..]).unwrap();
        icmp.set_msg_type(ECHO_REPLY);
        icmp.set_echo_seq_no(8);
        assert!(!icmp.verify_checksum());
        icmp.fill_checksum();
        assert!(icmp.verify_checksum());
        let parsed = Icmpv4Slice::from_slice(&bytes).unwrap();
        assert!(matches!(parsed.icmp_type(), Icmpv4Type::EchoReply(e) if e.id == 0x1234 && e.seq == 8));
        assert_eq!(parsed.header().icmp_type.calc_checksum(parsed.payload()), parsed.checksum());
    }

    #[test]
    fn every_prefix_shorter_than_the_header_is_truncated() {
        let bytes = built();
        for n in 0..HEADER_LEN {
            assert_eq!(
                Icmpv4Packet::new_checked(&bytes[..n]),
                Err(WireError::Truncated { header: "ICMPv4", need: HEADER_LEN, have: n })
            );
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(icmp) = Icmpv4Packet::new_checked(&bytes[..]) {
                let _ = (icmp.msg_type(), icmp.msg_code(), icmp.checksum(), icmp.echo_ident());
                let _ = (icmp.echo_seq_no(), icmp.is_error(), icmp.payload().len(), icmp.verify_checksum());
                let mut copy = bytes.clone();
                let mut icmp = Icmpv4Packet::new_checked(&mut copy[..]).unwrap();
                icmp.fill_checksum();
                prop_assert!(icmp.verify_checksum());
            }
        }
    }
}
