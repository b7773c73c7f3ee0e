//! Layer 3: the bridge's gateway address, answered in the switch (ARP and
//! ICMP echo, [`gateway`]), and the `route` action's router between the
//! gateway's subnet and the uplinks, with its ARP cache and the frames that
//! wait for ARP ([`router`]).
//!
//! Plain data, `Send` and `Sync`; time is passed in.

pub mod gateway;
pub mod router;
