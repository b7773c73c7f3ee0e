//! ARP (RFC 826) for Ethernet and IPv4, the only kind the switch answers
//! or learns from: operation, sender and target hardware and protocol
//! addresses at their fixed places.
//!
//! After `new_checked`: the buffer holds the 28 bytes of an Ethernet/IPv4
//! ARP packet. Whether it is one (hardware type 1, protocol 0x0800,
//! lengths 6 and 4) is [`ArpPacket::is_ethernet_ipv4`]'s to say: the
//! address getters read their fixed places either way.

use std::net::Ipv4Addr;

use super::{get16, get32, need, put16, put32, Field, WireError};
use crate::packet::Mac;

pub mod field {
    use super::Field;
    pub const HTYPE: Field = 0..2;
    pub const PTYPE: Field = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Field = 6..8;
    /// Hardware type, protocol type and their lengths.
    pub const FORMAT: Field = 0..6;
    pub const SHA: Field = 8..14;
    pub const SPA: Field = 14..18;
    pub const THA: Field = 18..24;
    pub const TPA: Field = 24..28;
}

/// An Ethernet/IPv4 ARP packet's length.
pub const PACKET_LEN: usize = field::TPA.end;

pub const REQUEST: u16 = 1;
pub const REPLY: u16 = 2;

/// The first six bytes of every Ethernet/IPv4 ARP packet.
const ETHERNET_IPV4: [u8; 6] = [0, 1, 0x08, 0x00, 6, 4];

/// A view of an ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        ArpPacket { buffer }
    }

    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        need("ARP", PACKET_LEN, self.buffer.as_ref().len())
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn hardware_type(&self) -> u16 {
        get16(self.buffer.as_ref(), field::HTYPE)
    }

    #[inline]
    pub fn protocol_type(&self) -> u16 {
        get16(self.buffer.as_ref(), field::PTYPE)
    }

    #[inline]
    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }

    #[inline]
    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }

    /// Ethernet addresses for IPv4 ones, the only kind read here.
    #[inline]
    pub fn is_ethernet_ipv4(&self) -> bool {
        self.buffer.as_ref()[field::FORMAT] == ETHERNET_IPV4
    }

    #[inline]
    pub fn operation(&self) -> u16 {
        get16(self.buffer.as_ref(), field::OPER)
    }

    #[inline]
    pub fn sender_hardware_addr(&self) -> Mac {
        self.buffer.as_ref()[field::SHA].try_into().expect("six bytes")
    }

    #[inline]
    pub fn sender_protocol_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(get32(self.buffer.as_ref(), field::SPA))
    }

    #[inline]
    pub fn target_hardware_addr(&self) -> Mac {
        self.buffer.as_ref()[field::THA].try_into().expect("six bytes")
    }

    #[inline]
    pub fn target_protocol_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(get32(self.buffer.as_ref(), field::TPA))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    #[inline]
    pub fn set_operation(&mut self, operation: u16) {
        put16(self.buffer.as_mut(), field::OPER, operation);
    }

    #[inline]
    pub fn set_sender_hardware_addr(&mut self, mac: Mac) {
        self.buffer.as_mut()[field::SHA].copy_from_slice(&mac);
    }

    #[inline]
    pub fn set_sender_protocol_addr(&mut self, addr: Ipv4Addr) {
        put32(self.buffer.as_mut(), field::SPA, addr.into());
    }

    #[inline]
    pub fn set_target_hardware_addr(&mut self, mac: Mac) {
        self.buffer.as_mut()[field::THA].copy_from_slice(&mac);
    }

    #[inline]
    pub fn set_target_protocol_addr(&mut self, addr: Ipv4Addr) {
        put32(self.buffer.as_mut(), field::TPA, addr.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{ArpHardwareId, ArpOperation, ArpPacket as EtherparseArp, EtherType};
    use proptest::prelude::*;

    const SHA: Mac = [2, 0, 0, 0, 0, 0x0a];

    fn built() -> Vec<u8> {
        let arp = EtherparseArp::new(
            ArpHardwareId::ETHERNET,
            EtherType::IPV4,
            ArpOperation::REQUEST,
            &SHA,
            &[198, 18, 0, 2],
            &[0; 6],
            &[198, 18, 0, 1],
        )
        .unwrap();
        arp.to_bytes().to_vec()
    }

    #[test]
    fn reads_and_writes_what_etherparse_built() {
        let mut bytes = built();
        let arp = ArpPacket::new_checked(&bytes[..]).unwrap();
        assert!(arp.is_ethernet_ipv4());
        assert_eq!(
            (arp.hardware_type(), arp.protocol_type(), arp.hardware_len(), arp.protocol_len()),
            (1, 0x0800, 6, 4)
        );
        assert_eq!(arp.operation(), REQUEST);
        assert_eq!(
            (arp.sender_hardware_addr(), arp.sender_protocol_addr()),
            (SHA, Ipv4Addr::new(198, 18, 0, 2))
        );
        assert_eq!(
            (arp.target_hardware_addr(), arp.target_protocol_addr()),
            ([0; 6], Ipv4Addr::new(198, 18, 0, 1))
        );

        let mut arp = ArpPacket::new_checked(&mut bytes[..]).unwrap();
        arp.set_operation(REPLY);
        arp.set_sender_hardware_addr([2, 0, 0, 0, 0, 1]);
        arp.set_sender_protocol_addr(Ipv4Addr::new(198, 18, 0, 1));
        arp.set_target_hardware_addr(SHA);
        arp.set_target_protocol_addr(Ipv4Addr::new(198, 18, 0, 2));
        let parsed = etherparse::ArpPacketSlice::from_slice(&bytes).unwrap();
        assert_eq!(parsed.operation(), ArpOperation::REPLY);
        assert_eq!((parsed.sender_hw_addr(), parsed.target_hw_addr()), (&[2, 0, 0, 0, 0, 1][..], &SHA[..]));
        assert_eq!(
            (parsed.sender_protocol_addr(), parsed.target_protocol_addr()),
            (&[198, 18, 0, 1][..], &[198, 18, 0, 2][..])
        );
    }

    #[test]
    fn every_prefix_shorter_than_the_packet_is_truncated() {
        let bytes = built();
        for n in 0..PACKET_LEN {
            assert_eq!(
                ArpPacket::new_checked(&bytes[..n]),
                Err(WireError::Truncated { header: "ARP", need: PACKET_LEN, have: n })
            );
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(arp) = ArpPacket::new_checked(&bytes[..]) {
                let _ = (arp.hardware_type(), arp.protocol_type(), arp.hardware_len(), arp.protocol_len());
                let _ = (arp.is_ethernet_ipv4(), arp.operation(), arp.sender_hardware_addr());
                let _ = (arp.sender_protocol_addr(), arp.target_hardware_addr(), arp.target_protocol_addr());
            }
        }
    }
}
