//! Port drivers: every kind of port behind one trait, in the manner of OVS's
//! `lib/netdev-provider.h`.
//!
//! Ownership: a device is opened by the control plane while a transaction is
//! being prepared (so that a bad path or a missing device fails the command
//! and leaves the configuration as it was), then handed to the datapath
//! thread, which owns it from then on and drops it when the port goes away.
//!
//! Batching: the datapath hands a device its share of the transmit queues
//! ([`Frames`], borrowed from [`TxQueues`]) and takes received frames up to
//! a batch at a time into a [`PacketBatch`], in place where the device can
//! (see [`PacketBatch::receive_area`]). Neither call may
//! block: a device that cannot take more frames says how many it took and
//! the rest are counted as `tx_dropped`; a device with nothing to receive
//! returns 0.
//!
//! Memory: packet buffers belong to the datapath's one receive batch and
//! one set of transmit queues, not to ports, so they are bounded by what a
//! batch holds whatever the number of ports. The exception is AF_PACKET's
//! receive ring (2 MiB per port, shared with the kernel).

pub mod afpacket;
pub mod pcap;
pub mod rx_ring;
pub mod sys;
pub mod tap;
pub mod tunnel;

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::Arc;

use proto::{ErrorCode, RpcError};

use crate::config::InterfaceConfig;
pub use crate::core::batch::{Frames, PacketBatch, TxQueues, BATCH_SIZE};
use crate::core::offload::Offload;
use crate::core::tunnel::TunnelConfig;

pub trait PortDevice: Send {
    /// Sends the frames; returns how many the device took.
    fn send_batch(&mut self, frames: Frames<'_>) -> usize;

    /// Appends up to [`BATCH_SIZE`] received frames to `batch`; returns
    /// how many frames it took from the device, including any it dropped
    /// itself (0: nothing waiting), so that a full batch means "read again".
    fn recv_batch(&mut self, batch: &mut PacketBatch) -> usize;

    /// `None` while the device works; otherwise why it does not, in words
    /// that `vsctl show` prints.
    fn error(&self) -> Option<String>;

    /// The descriptor that becomes readable when frames arrive; `None` for
    /// devices that are never read that way (or are down).
    fn rx_fd(&self) -> Option<RawFd> {
        None
    }

    /// Called about once a second: a device that vanished notices here and
    /// goes down, one that is down reopens when its interface is back. The
    /// datapath re-reads [`PortDevice::rx_fd`] afterwards.
    fn maintain(&mut self) {}

    /// How often the device went away while the port was up.
    fn link_lost(&self) -> u64 {
        0
    }

    /// Frames the device itself dropped, by reason (the bridge never saw
    /// them), for `dump-ports`.
    fn device_drops(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }

    /// Bytes the device holds for frames (receive slots, a capture read
    /// ahead), for `memory-show`.
    fn buffer_bytes(&self) -> usize {
        0
    }

    /// For a tunnel port, the socket the datapath receives its packets
    /// from and its configuration, to tell its packets from others'.
    fn tunnel(&self) -> Option<(&Arc<tunnel::TunnelSocket>, &TunnelConfig)> {
        None
    }
}

/// A port whose type this build cannot drive yet, or whose device could not
/// be opened: it exists in the configuration, forwards nothing, and says why.
pub struct Unavailable {
    reason: String,
}

impl Unavailable {
    pub fn new(reason: impl Into<String>) -> Unavailable {
        Unavailable { reason: reason.into() }
    }
}

impl PortDevice for Unavailable {
    fn send_batch(&mut self, _frames: Frames<'_>) -> usize {
        0
    }

    fn recv_batch(&mut self, _batch: &mut PacketBatch) -> usize {
        0
    }

    fn error(&self) -> Option<String> {
        Some(self.reason.clone())
    }
}

/// Opens the device an interface's configuration describes. An error here
/// fails the transaction that asked for it.
pub fn open(port: &str, interface: &InterfaceConfig) -> Result<Box<dyn PortDevice>, RpcError> {
    match interface.kind() {
        "pcap" => Ok(Box::new(pcap::PcapDevice::open(port, &interface.options)?)),
        "system" => Ok(Box::new(afpacket::AfPacket::open(port))),
        "tap" => Ok(Box::new(tap::Tap::open(port, false))),
        "internal" => Ok(Box::new(tap::Tap::open(port, true))),
        "vxlan" | "gre" => Ok(Box::new(tunnel::TunnelPort::open(interface)?)),
        kind => {
            Ok(Box::new(Unavailable::new(format!("interface type {kind} is not supported by this vswitchd"))))
        }
    }
}

pub(crate) fn device_error(message: String) -> RpcError {
    RpcError::new(ErrorCode::InvalidValue, message)
}

/// Received frames waiting for the datapath, for devices that are fed all
/// at once (a pcap's rx file).
#[derive(Debug, Default)]
pub struct RxQueue(VecDeque<Vec<u8>>);

impl RxQueue {
    pub fn extend(&mut self, frames: impl IntoIterator<Item = Vec<u8>>) {
        self.0.extend(frames);
    }

    /// Bytes held by the frames waiting.
    pub fn bytes(&self) -> usize {
        self.0.iter().map(Vec::capacity).sum()
    }

    pub fn drain_into(&mut self, batch: &mut PacketBatch) -> usize {
        let n = BATCH_SIZE.min(self.0.len());
        for frame in self.0.drain(..n) {
            batch.push(&frame, &Offload::NONE);
        }
        n
    }
}
