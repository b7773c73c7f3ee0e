//! GRE (RFC 2784, with RFC 2890's key and sequence number): flags and
//! version, the protocol carried, then the optional checksum, key and
//! sequence number words, whose presence the flags say.
//!
//! After `new_checked`: the buffer holds the 4-byte fixed header and every
//! optional word the flags announce, so [`GrePacket::key`] and
//! `payload()` cannot panic; the routing flag is clear and the version is
//! 0 (RFC 1701's source routing and version 1, PPTP's, have other layouts).
//! The protocol is not checked.

use super::{get16, get32, need, put16, Field, WireError};

pub mod field {
    use super::Field;
    /// The C, R, K and S flags and the version.
    pub const FLAGS_VERSION: Field = 0..2;
    pub const PROTOCOL: Field = 2..4;
    /// The first optional word.
    pub const OPTIONAL: usize = 4;
}

/// The fixed header.
pub const HEADER_LEN: usize = field::OPTIONAL;

pub const FLAG_CSUM: u16 = 0x8000;
pub const FLAG_ROUTING: u16 = 0x4000;
pub const FLAG_KEY: u16 = 0x2000;
pub const FLAG_SEQ: u16 = 0x1000;
pub const VERSION: u16 = 0x0007;

/// A view of a GRE header and what it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrePacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> GrePacket<T> {
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        GrePacket { buffer }
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
        need("GRE", HEADER_LEN, have)?;
        if self.flags() & (FLAG_ROUTING | VERSION) != 0 {
            return Err(WireError::Malformed { header: "GRE", reason: "routing or a version other than 0" });
        }
        need("GRE optional fields", self.header_len(), have)
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The flags and version word as on the wire ([`FLAG_KEY`], ...).
    #[inline]
    pub fn flags(&self) -> u16 {
        get16(self.buffer.as_ref(), field::FLAGS_VERSION)
    }

    #[inline]
    pub fn version(&self) -> u8 {
        (self.flags() & VERSION) as u8
    }

    #[inline]
    pub fn protocol(&self) -> u16 {
        get16(self.buffer.as_ref(), field::PROTOCOL)
    }

    /// The fixed header and the optional words the flags announce.
    #[inline]
    pub fn header_len(&self) -> usize {
        let flags = self.flags();
        let words = [FLAG_CSUM, FLAG_KEY, FLAG_SEQ].iter().filter(|&&f| flags & f != 0).count();
        HEADER_LEN + 4 * words
    }

    /// Where the key is, if there is one (after the checksum word).
    #[inline]
    fn key_field(&self) -> Option<Field> {
        let flags = self.flags();
        let at = field::OPTIONAL + if flags & FLAG_CSUM != 0 { 4 } else { 0 };
        (flags & FLAG_KEY != 0).then_some(at..at + 4)
    }

    #[inline]
    pub fn key(&self) -> Option<u32> {
        self.key_field().map(|f| get32(self.buffer.as_ref(), f))
    }

    /// What the header carries (Ethernet, for protocol 0x6558).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> GrePacket<T> {
    /// Sets the flags and version word; the optional words move with it,
    /// so set it first when writing a header.
    #[inline]
    pub fn set_flags(&mut self, flags: u16) {
        put16(self.buffer.as_mut(), field::FLAGS_VERSION, flags);
    }

    #[inline]
    pub fn set_protocol(&mut self, protocol: u16) {
        put16(self.buffer.as_mut(), field::PROTOCOL, protocol);
    }

    /// Stores the key; a header whose flags have no K bit has nowhere to
    /// put it, and is left as it is.
    #[inline]
    pub fn set_key(&mut self, key: u32) {
        if let Some(f) = self.key_field() {
            self.buffer.as_mut()[f].copy_from_slice(&key.to_be_bytes());
        }
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
    use etherparse::PacketBuilder;
    use proptest::prelude::*;

    /// GRE with checksum, key and sequence words, carrying a frame built
    /// by etherparse.
    fn built() -> Vec<u8> {
        let mut out = vec![0xb0, 0, 0x65, 0x58, 0xaa, 0xbb, 0, 0, 0, 0, 0, 9, 0, 0, 0, 1];
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1, 2)
            .write(&mut out, b"x")
            .unwrap();
        out
    }

    #[test]
    fn reads_and_writes_a_header() {
        let mut bytes = built();
        let gre = GrePacket::new_checked(&bytes[..]).unwrap();
        assert_eq!((gre.flags(), gre.version(), gre.protocol()), (0xb000, 0, 0x6558));
        assert_eq!((gre.header_len(), gre.key()), (16, Some(9)));
        assert!(etherparse::SlicedPacket::from_ethernet(gre.payload()).is_ok());

        let mut gre = GrePacket::new_checked(&mut bytes[..]).unwrap();
        gre.set_key(0xdead_beef);
        assert_eq!(&bytes[8..12], &0xdead_beefu32.to_be_bytes());
        let mut header = [0u8; 8];
        let mut gre = GrePacket::new_unchecked(&mut header[..]);
        gre.set_flags(FLAG_KEY);
        gre.set_protocol(0x6558);
        gre.set_key(7);
        assert_eq!(header, [0x20, 0, 0x65, 0x58, 0, 0, 0, 7]);
        let keyless = [0, 0, 0x65, 0x58];
        assert_eq!(GrePacket::new_checked(&keyless[..]).unwrap().key(), None);
    }

    #[test]
    fn every_prefix_shorter_than_the_header_is_truncated() {
        let bytes = built();
        for n in 0..HEADER_LEN {
            assert_eq!(
                GrePacket::new_checked(&bytes[..n]),
                Err(WireError::Truncated { header: "GRE", need: HEADER_LEN, have: n })
            );
        }
        for n in HEADER_LEN..16 {
            assert_eq!(
                GrePacket::new_checked(&bytes[..n]),
                Err(WireError::Truncated { header: "GRE optional fields", need: 16, have: n })
            );
        }
        for bad in [[0x40, 0, 0x65, 0x58], [0, 1, 0x65, 0x58]] {
            assert!(matches!(GrePacket::new_checked(&bad[..]), Err(WireError::Malformed { .. })));
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..24)) {
            if let Ok(g) = GrePacket::new_checked(&bytes[..]) {
                let _ = (g.flags(), g.version(), g.protocol(), g.header_len(), g.key(), g.payload().len());
            }
        }
    }
}
