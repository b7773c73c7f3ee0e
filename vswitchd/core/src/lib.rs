//! The sans-IO datapath core: frames in, frames out, time passed in.
//!
//! Nothing here touches a socket, a file, a thread or a clock, which is what
//! lets unit tests, golden pcap tests, benches and fuzzers drive the real
//! switching code deterministically. The daemon's shell owns the devices and
//! the clock and calls [`bridge::Bridge::receive_batch`].
//!
//! It is a crate of its own (`vswitch-core`, in `vswitchd/core/`; the
//! daemon re-exports it as `vswitchd::core`) so that Cargo holds that line
//! rather than review alone: it depends only on packet and hashing crates
//! (etherparse to parse, foldhash and hashbrown to hash), so no libc, nix,
//! tokio or device driver is within its reach, and whatever needs a device,
//! a socket or a task lives in the daemon, which depends on this crate and
//! never the other way round. What Cargo cannot refuse is the standard
//! library itself: `std::fs`, `std::net`'s sockets, `std::thread` and
//! `std::time` stay out by review (`std::net` is used for its address types
//! only). The one thing the core takes from its surroundings is the
//! randomness behind its hash seeds (std's and foldhash's `RandomState`),
//! so that crafted traffic cannot aim at one hash bucket.
//!
//! Threads. Nothing here starts a thread, takes a lock or keeps a global;
//! state is changed through `&mut`, so whoever shares a value mutably
//! brings the lock. A [`bridge::Bridge`] is neither `Send` nor `Sync`: its
//! megaflow cache ([`dpif::megaflow::MegaflowCache`]) shares each cached decision
//! between its megaflow and exact-match entries as an `Rc` with `Cell`
//! counters, so that a hit copies nothing and counts without atomics. A
//! bridge is therefore built and used on the one thread that forwards for
//! it (the daemon's datapath thread; each thread of the `scaling` bench
//! builds its own):
//!
//! ```compile_fail,E0277
//! fn moved_to_another_thread<T: Send>() {}
//! moved_to_another_thread::<vswitch_core::bridge::Bridge>();
//! ```
//!
//! Everything else is plain owned data, `Send` and `Sync`: configuration
//! ([`ofproto::ofctl::FlowSpec`], [`ofproto::classifier::Tables`], [`bridge::BridgeSettings`],
//! [`l2::vlan::PortVlan`], [`tunnel::TunnelConfig`], [`l3::gateway::Gateway`]) may
//! be built on one thread and handed to the forwarding one, or read through
//! `&` from many; the state machines that also work on their own
//! ([`conntrack::Conntrack`], [`l2::mac_learning::MacTable`],
//! [`l3::router::Router`], [`tunnel::gro::Gro`]) may move between threads the same way.
//! The test `threads::what_the_crate_documentation_says_may_cross_threads`
//! keeps that list true.

// The layers, as OVS has them: OpenFlow semantics over a fast-path cache,
// with L2, L3, connection tracking and tunnels beside; packet handling
// (parsing, views, checksums, rewrites, offloads) below them all; and the
// bridge, which assembles one switch from them.
pub mod bridge;
pub mod conntrack;
pub mod dpif;
pub mod l2;
pub mod l3;
pub mod ofproto;
pub mod tunnel;

pub mod checksum;
pub mod offload;
pub mod packet;
pub mod rewrite;
pub mod wire;

/// Datapath time in milliseconds from an arbitrary origin. The shell derives
/// it from a monotonic clock; tests make it up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    pub const fn from_millis(ms: u64) -> Timestamp {
        Timestamp(ms)
    }

    pub const fn millis(self) -> u64 {
        self.0
    }
}

/// Why a received frame was not forwarded. Every frame a port receives is
/// either forwarded to at least one port or counted under one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than an Ethernet header.
    Runt,
    /// A VLAN tag cut off by the end of the frame.
    TruncatedVlan,
    /// Sent to 01:80:c2:00:00:0x while `forward-bpdu` is off.
    ReservedMulticast,
    /// The input port does not carry the frame's VLAN.
    VlanNotAllowed,
    /// The destination was learned on the input port itself.
    SamePort,
    /// No other port carries the frame's VLAN.
    NoDestination,
    /// The flow tables said drop (a rule without actions, or no rule).
    FlowDrop,
    /// `dec_ttl` found the TTL (or hop limit) at 1 or 0.
    TtlExpired,
    /// `ct(commit)` found the connection table at its limit (`ct-max`).
    CtTableFull,
    /// `ct(commit,nat(...))` found no free translation in its range.
    NatExhausted,
    /// Recirculation after `ct(table=...)` went deeper than allowed.
    RecirculationLimit,
    /// NORMAL found the destination on another isolated port.
    Isolated,
    /// `route` found no interface or next hop for the destination.
    NoRoute,
}

impl DropReason {
    pub const ALL: [DropReason; 13] = [
        DropReason::Runt,
        DropReason::TruncatedVlan,
        DropReason::ReservedMulticast,
        DropReason::VlanNotAllowed,
        DropReason::SamePort,
        DropReason::NoDestination,
        DropReason::FlowDrop,
        DropReason::TtlExpired,
        DropReason::CtTableFull,
        DropReason::NatExhausted,
        DropReason::RecirculationLimit,
        DropReason::Isolated,
        DropReason::NoRoute,
    ];
    pub const COUNT: usize = Self::ALL.len();

    pub fn name(self) -> &'static str {
        match self {
            DropReason::Runt => "runt",
            DropReason::TruncatedVlan => "truncated_vlan",
            DropReason::ReservedMulticast => "reserved_multicast",
            DropReason::VlanNotAllowed => "vlan_not_allowed",
            DropReason::SamePort => "same_port",
            DropReason::NoDestination => "no_destination",
            DropReason::FlowDrop => "flow_drop",
            DropReason::TtlExpired => "ttl_expired",
            DropReason::CtTableFull => "ct_table_full",
            DropReason::NatExhausted => "nat_exhausted",
            DropReason::RecirculationLimit => "recirculation_limit",
            DropReason::Isolated => "isolated",
            DropReason::NoRoute => "no_route",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod threads {
    fn send_and_sync<T: Send + Sync>() {}

    #[test]
    fn what_the_crate_documentation_says_may_cross_threads() {
        send_and_sync::<crate::ofproto::ofctl::FlowSpec>();
        send_and_sync::<crate::ofproto::classifier::Tables>();
        send_and_sync::<super::bridge::BridgeSettings>();
        send_and_sync::<crate::l2::vlan::PortVlan>();
        send_and_sync::<super::tunnel::TunnelConfig>();
        send_and_sync::<crate::l3::gateway::Gateway>();
        send_and_sync::<super::conntrack::Conntrack>();
        send_and_sync::<crate::l2::mac_learning::MacTable>();
        send_and_sync::<crate::l3::router::Router>();
        send_and_sync::<crate::tunnel::gro::Gro>();
    }
}
