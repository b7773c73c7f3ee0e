//! The fast path in front of the OpenFlow tables, as OVS's `dpif-netdev`:
//! frames move in batches ([`batch`]), and each frame's decision comes from
//! a cache ([`megaflow`]: the last megaflow hit, an exact-match cache, the
//! megaflows) before the slow path (translation in
//! [`crate::ofproto::classifier`]) is asked. What a decision says is carried
//! out by the bridge ([`crate::bridge`]), which also runs the per-packet
//! actions the caches keep as actions, not outcomes (NORMAL, routing,
//! `dec_ttl`).
//!
//! Owned by the one thread that forwards: the caches share decisions as
//! `Rc`s (see [`megaflow`]); batches are plain buffers.

pub mod batch;
pub mod megaflow;
