//! VXLAN (RFC 7348): flags and a 24-bit VNI in an 8-byte header, then
//! the inner Ethernet frame.
//!
//! After `new_checked`: the buffer holds the 8-byte header. The I flag
//! ([`VxlanPacket::has_vni`]) is not checked: reserved bits are ignored on
//! receipt as the RFC says, and the I flag is the caller's to require.

use super::{need, Field, WireError};

pub mod field {
    use super::Field;
    pub const FLAGS: usize = 0;
    pub const VNI: Field = 4..7;
    pub const PAYLOAD: usize = 8;
}

pub const HEADER_LEN: usize = field::PAYLOAD;

/// The I flag: the VNI is valid.
pub const FLAG_VNI: u8 = 0x08;

/// A view of a VXLAN header and the frame it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VxlanPacket<T> {
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        VxlanPacket { buffer }
    }

    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        need("VXLAN", HEADER_LEN, self.buffer.as_ref().len())
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    #[inline]
    pub fn has_vni(&self) -> bool {
        self.flags() & FLAG_VNI != 0
    }

    #[inline]
    pub fn vni(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::VNI];
        u32::from_be_bytes([0, b[0], b[1], b[2]])
    }

    /// The inner Ethernet frame.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VxlanPacket<T> {
    #[inline]
    pub fn set_flags(&mut self, flags: u8) {
        self.buffer.as_mut()[field::FLAGS] = flags;
    }

    /// Stores the low 24 bits of `vni`.
    #[inline]
    pub fn set_vni(&mut self, vni: u32) {
        self.buffer.as_mut()[field::VNI].copy_from_slice(&vni.to_be_bytes()[1..]);
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

    /// A VXLAN header as etherparse's UDP payload, after an inner frame
    /// that etherparse built.
    fn built() -> Vec<u8> {
        let mut inner = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1, 2)
            .write(&mut inner, b"x")
            .unwrap();
        let mut out = vec![0x08, 0, 0, 0, 0xab, 0xcd, 0xef, 0];
        out.extend_from_slice(&inner);
        out
    }

    #[test]
    fn reads_and_writes_a_header() {
        let mut bytes = built();
        let vxlan = VxlanPacket::new_checked(&bytes[..]).unwrap();
        assert!(vxlan.has_vni());
        assert_eq!(vxlan.vni(), 0xab_cdef);
        assert!(etherparse::SlicedPacket::from_ethernet(vxlan.payload()).unwrap().link.is_some());

        let mut vxlan = VxlanPacket::new_checked(&mut bytes[..]).unwrap();
        vxlan.set_vni(0x1_000_007);
        vxlan.set_flags(0);
        assert_eq!(&bytes[..8], &[0, 0, 0, 0, 0, 0, 7, 0]);
    }

    #[test]
    fn every_prefix_shorter_than_the_header_is_truncated() {
        let bytes = built();
        for n in 0..HEADER_LEN {
            assert_eq!(
                VxlanPacket::new_checked(&bytes[..n]),
                Err(WireError::Truncated { header: "VXLAN", need: HEADER_LEN, have: n })
            );
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..20)) {
            if let Ok(v) = VxlanPacket::new_checked(&bytes[..]) {
                let _ = (v.flags(), v.has_vni(), v.vni(), v.payload().len());
            }
        }
    }
}
