//! Layer 2, as OVS's NORMAL action does it: which VLANs a port carries and
//! how frames are tagged on the way in and out ([`vlan`]), and the MAC
//! learning table ([`mac_learning`]). The NORMAL decision itself, which
//! needs the bridge's ports, is [`crate::bridge::Bridge`]'s.
//!
//! Plain data, `Send` and `Sync`.

pub mod mac_learning;
pub mod vlan;
