//! Packet views in the manner of smoltcp's `wire`: each protocol's header
//! is a type wrapping a byte buffer (`Ipv4Packet<T: AsRef<[u8]>>` and so
//! on), with its fields named as byte ranges in a `field` module and read
//! and written through getters and setters, instead of offsets spelled out
//! wherever a header is touched. A view copies nothing and allocates
//! nothing: `T` is `&[u8]`, `&mut [u8]` or anything else that lends bytes,
//! and every accessor is `#[inline]`.
//!
//! The checked/unchecked contract:
//!
//! - `new_checked(buffer)` checks the buffer against the header before it
//!   hands out a view: the fixed header is there, the header's own length
//!   fields make sense (IPv4's IHL is at least 5, TCP's data offset at
//!   least 5, UDP's length at least 8, IPv4's total length at least its
//!   header) and what they say is within the buffer (options, and for IP
//!   and UDP the stated length). After it succeeds, every getter and setter
//!   of a fixed field is in bounds and cannot panic, and neither can
//!   `payload()`, `header()` or `options()`. It does not judge values that
//!   do not decide where bytes are (the IP version, the flags, a checksum):
//!   getters report them and callers decide.
//! - IPv4 and IPv6 also have `new_checked_header(buffer)`, which checks the
//!   header (IPv4: with its options) but not the stated total length, for
//!   what is cut short on purpose or in flight: the packet an ICMP error
//!   quotes, and a GSO frame whose length fields are rewritten when it is
//!   segmented. `payload()` is then cut at the end of the buffer.
//! - `new_unchecked(buffer)` checks nothing and costs nothing. It is for a
//!   caller that has checked what it reads itself, typically that the
//!   buffer holds `HEADER_LEN` bytes: fixed-field accessors are then in
//!   bounds, while `payload()` and whatever depends on a length field may
//!   panic. The datapath uses it where its old checks were exactly that
//!   (so that a conversion changes no verdict), and says so there.
//!
//! Errors are [`WireError`]s that say which header was short and by how
//! much, or which length field was impossible.
//!
//! Checksums are computed by [`crate::checksum`], the one implementation
//! in the core; the views only say which bytes are summed. Transport
//! checksums take the pseudo-header sum from the IP view
//! ([`Ipv4Packet::pseudo_header`], [`Ipv6Packet::pseudo_header`]), so the
//! same TCP and UDP code serves both IP versions.
//!
//! Covered: Ethernet II (tags are [`crate::packet::L2Header`]'s), IPv4,
//! IPv6 (the fixed header; extension headers are not walked), ARP
//! (Ethernet/IPv4 only), ICMPv4 (not ICMPv6), UDP, TCP, VXLAN, GRE.
//! The flow key's extraction in [`crate::packet`] reads etherparse's
//! slices and its own L2 parser, not these views: it is the per-frame hot
//! path and was measured in its present shape.
//!
//! Threads: a view keeps no state of its own; it is `Send` or `Sync`
//! exactly when the buffer it wraps is.

use std::fmt;
use std::ops::Range;

pub mod arp;
pub mod ethernet;
pub mod gre;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod udp;
pub mod vxlan;

pub use arp::ArpPacket;
pub use ethernet::EthernetFrame;
pub use gre::GrePacket;
pub use icmp::Icmpv4Packet;
pub use ipv4::Ipv4Packet;
pub use ipv6::Ipv6Packet;
pub use tcp::TcpPacket;
pub use udp::UdpPacket;
pub use vxlan::VxlanPacket;

/// A header field's bytes.
pub type Field = Range<usize>;

/// IP protocol numbers the core reads.
pub mod ip_protocol {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const GRE: u8 = 47;
}

/// Why a buffer is not a header of the kind asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// `header` needs `need` bytes (its fixed part, or what one of its
    /// length fields says) and the buffer holds `have`.
    Truncated { header: &'static str, need: usize, have: usize },
    /// A length field of `header` says something impossible: `reason`.
    Malformed { header: &'static str, reason: &'static str },
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Truncated { header, need, have } => {
                write!(f, "{header}: {need} bytes needed, {have} there ({} short)", need - have)
            }
            WireError::Malformed { header, reason } => write!(f, "{header}: {reason}"),
        }
    }
}

impl std::error::Error for WireError {}

/// `Ok` if `have` bytes hold the `need` that `header` asks for.
#[inline]
fn need(header: &'static str, need: usize, have: usize) -> Result<(), WireError> {
    if have < need {
        Err(WireError::Truncated { header, need, have })
    } else {
        Ok(())
    }
}

#[inline]
fn get16(data: &[u8], at: Field) -> u16 {
    let b = &data[at];
    u16::from_be_bytes([b[0], b[1]])
}

#[inline]
fn get32(data: &[u8], at: Field) -> u32 {
    let b = &data[at];
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

#[inline]
fn put16(data: &mut [u8], at: Field, value: u16) {
    data[at].copy_from_slice(&value.to_be_bytes());
}

#[inline]
fn put32(data: &mut [u8], at: Field, value: u32) {
    data[at].copy_from_slice(&value.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_what_was_short_and_by_how_much() {
        let e = WireError::Truncated { header: "IPv4", need: 20, have: 13 };
        assert_eq!(e.to_string(), "IPv4: 20 bytes needed, 13 there (7 short)");
        let e = WireError::Malformed { header: "TCP", reason: "data offset below 5" };
        assert_eq!(e.to_string(), "TCP: data offset below 5");
    }
}
