//! OpenFlow semantics, as OVS's `ofproto/` layer: what a user configures
//! and how the pipeline decides for a packet, with no notion of caching.
//!
//! - [`flow`]: the packed flow key every layer matches on, and matches.
//! - [`actions`]: the actions a rule carries, and the datapath actions a
//!   decision holds.
//! - [`classifier`]: the flow tables (tuple space search) and translation,
//!   which runs the pipeline for a key and records what it looked at.
//! - [`masked_map`]: the hash map keyed by a key under one mask, shared by
//!   the tables' subtables and the fast path's megaflows.
//! - [`ofctl`]: `ovs-ofctl`'s flow syntax, parsed and printed.
//!
//! Everything here is plain data, `Send` and `Sync`: the control plane
//! parses and builds it, the forwarding thread reads it.

pub mod actions;
pub mod classifier;
pub mod flow;
pub mod masked_map;
pub mod ofctl;
