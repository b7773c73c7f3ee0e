//! Ethernet II: destination, source and EtherType, then the payload.
//!
//! VLAN tags are not read here: [`crate::packet::L2Header`] reads up to
//! two on the key-extraction path, and a tagged frame's payload, as this
//! view sees it, starts with the tag's TCI.
//!
//! After `new_checked`: the buffer holds the 14-byte header.

use super::{get16, need, put16, Field, WireError};
use crate::packet::Mac;

pub mod field {
    use super::Field;
    pub const DESTINATION: Field = 0..6;
    pub const SOURCE: Field = 6..12;
    pub const ETHERTYPE: Field = 12..14;
    pub const PAYLOAD: usize = 14;
}

pub const HEADER_LEN: usize = field::PAYLOAD;

/// A view of an Ethernet II frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        EthernetFrame { buffer }
    }

    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        need("Ethernet", HEADER_LEN, self.buffer.as_ref().len())
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn dst_addr(&self) -> Mac {
        self.buffer.as_ref()[field::DESTINATION].try_into().expect("six bytes")
    }

    #[inline]
    pub fn src_addr(&self) -> Mac {
        self.buffer.as_ref()[field::SOURCE].try_into().expect("six bytes")
    }

    #[inline]
    pub fn ethertype(&self) -> u16 {
        get16(self.buffer.as_ref(), field::ETHERTYPE)
    }

    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    #[inline]
    pub fn set_dst_addr(&mut self, mac: Mac) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&mac);
    }

    #[inline]
    pub fn set_src_addr(&mut self, mac: Mac) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&mac);
    }

    #[inline]
    pub fn set_ethertype(&mut self, ethertype: u16) {
        put16(self.buffer.as_mut(), field::ETHERTYPE, ethertype);
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;
    use proptest::prelude::*;

    fn built() -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([198, 18, 0, 1], [198, 18, 0, 2], 64)
            .udp(4000, 53)
            .write(&mut out, b"hello")
            .unwrap();
        out
    }

    #[test]
    fn reads_and_writes_what_etherparse_built() {
        let mut bytes = built();
        let frame = EthernetFrame::new_checked(&bytes[..]).unwrap();
        assert_eq!(frame.src_addr(), [2, 0, 0, 0, 0, 1]);
        assert_eq!(frame.dst_addr(), [2, 0, 0, 0, 0, 2]);
        assert_eq!(frame.ethertype(), 0x0800);
        assert_eq!(frame.payload(), &bytes[14..]);
        let mut frame = EthernetFrame::new_checked(&mut bytes[..]).unwrap();
        frame.set_dst_addr([0xff; 6]);
        frame.set_src_addr([2, 0, 0, 0, 0, 9]);
        frame.set_ethertype(0x86dd);
        frame.payload_mut()[0] = 0x60;
        let h = etherparse::Ethernet2Header::from_slice(&bytes).unwrap().0;
        assert_eq!((h.destination, h.source, h.ether_type.0), ([0xff; 6], [2, 0, 0, 0, 0, 9], 0x86dd));
        assert_eq!(bytes[14], 0x60);
    }

    #[test]
    fn every_prefix_shorter_than_the_header_is_truncated() {
        let bytes = built();
        for n in 0..HEADER_LEN {
            assert_eq!(
                EthernetFrame::new_checked(&bytes[..n]),
                Err(WireError::Truncated { header: "Ethernet", need: HEADER_LEN, have: n })
            );
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(f) = EthernetFrame::new_checked(&bytes[..]) {
                let _ = (f.dst_addr(), f.src_addr(), f.ethertype(), f.payload().len());
            }
        }
    }
}
