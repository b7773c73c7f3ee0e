//! vswitchd: a userspace virtual switch in the Open vSwitch style.
//!
//! - [`core`]: the sans-IO datapath (parsing, VLANs, MAC learning, bridges),
//!   its own crate (`vswitch-core`, in `vswitchd/core/`) so that Cargo keeps
//!   I/O out of it; re-exported here so that `crate::core::...` and
//!   `vswitchd::core::...` keep naming it.
//! - [`config`]: the configuration database, its commands and its file.
//! - [`ports`]: the port drivers behind one trait.
//! - [`datapath`]: the forwarding thread that owns bridges and devices.
//! - [`nat`]: Docker's masquerade and port mappings, compiled into flows.
//! - [`overlay`]: overlay networks across hosts, kept in etcd.
//! - [`control`]: the control socket and its protocol.
//! - [`access`]: who may use the control socket, and which files they may name.
//! - [`daemon`]: start-up, locking, detaching, signals.
//! - [`memory`]: the process's memory figures for `memory-show`.

pub mod access;
pub mod config;
pub mod control;
pub mod daemon;
pub mod datapath;
pub mod memory;
pub mod nat;
pub mod netns;
pub mod overlay;
pub mod ports;

pub use vswitch_core as core;
