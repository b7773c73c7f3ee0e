//! Port drivers: every kind of port behind one trait, in the manner of OVS's
//! `lib/netdev-provider.h` ([`PortDevice`] documents the contract method by
//! method), found by interface type in one registry ([`DRIVERS`]). A device
//! counts the frames it drops itself by a typed reason ([`DeviceDrop`]),
//! never logs per frame.
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
pub use crate::core::dpif::batch::{Frames, PacketBatch, TxQueues, BATCH_SIZE};
use crate::core::offload::Offload;
use crate::core::tunnel::{TunnelConfig, TunnelDrop};

/// A port's device. Every method is called on the datapath thread, which
/// owns the device, one call at a time; none may block (sockets and
/// descriptors are non-blocking; a pcap's capture file is the one device
/// that writes to a file, buffered). Per method, as OVS's
/// `netdev-provider.h` documents its own:
pub trait PortDevice: Send {
    /// Sends `frames`, a borrowed share of the datapath's transmit queues
    /// (up to a batch's worth of frames per port per received batch, each
    /// with its offload metadata), and returns how many the device took.
    /// The frames are only lent for the call: a device copies what it keeps.
    /// A device that cannot take more (a full socket buffer: EAGAIN or
    /// ENOBUFS) stops and returns the count so far; the datapath counts the
    /// rest as `tx_dropped`. A frame the device drops for a reason of its
    /// own (too big, a bad offload) counts as not taken and under its
    /// [`DeviceDrop`]. Never an error: a device that broke says so through
    /// [`PortDevice::error`].
    fn send_batch(&mut self, frames: Frames<'_>) -> usize;

    /// Appends up to [`BATCH_SIZE`] received frames to `batch`, in place
    /// where it can ([`PacketBatch::receive_area`]), and returns how many
    /// frames it took from the device, including any it dropped itself
    /// (counted under their [`DeviceDrop`]); 0 means nothing is waiting
    /// (EAGAIN), and a full batch means "read again". The batch is the
    /// datapath's and is cleared by it; a device keeps no reference into it.
    fn recv_batch(&mut self, batch: &mut PacketBatch) -> usize;

    /// `None` while the device works; otherwise why it does not, in words
    /// that `vsctl show` prints.
    fn error(&self) -> Option<String>;

    /// The descriptor that becomes readable when frames arrive, which the
    /// datapath waits on in epoll (level-triggered); `None` for devices
    /// that are never read that way (or are down). Still owned by the
    /// device: the datapath neither reads nor closes it.
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

    /// Frames the device itself dropped, by reason, for `dump-ports`.
    fn device_drops(&self) -> Vec<(DeviceDrop, u64)> {
        Vec::new()
    }

    /// Bytes the device holds for frames (receive slots, a capture read
    /// ahead), for `memory-show`.
    fn buffer_bytes(&self) -> usize {
        0
    }

    /// For a tunnel port, the socket the datapath receives its packets
    /// from and its configuration, to tell its packets from others'. A
    /// tunnel port never receives through [`PortDevice::recv_batch`]: one
    /// socket serves every tunnel port of its endpoint, so the datapath
    /// reads the socket as one receive source and hands each packet to the
    /// port its source address and key name.
    fn tunnel(&self) -> Option<(&Arc<tunnel::TunnelSocket>, &TunnelConfig)> {
        None
    }
}

/// Why a device dropped a frame itself: received frames the bridge never
/// saw, or frames it was given and could not send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceDrop {
    /// Received cut short (bigger than the ring slot or buffer).
    RxTruncated,
    /// Received with an offload header this switch cannot honour.
    RxBadOffload,
    /// Received while the device's receive queue was full.
    RxQueueFull,
    /// Too big for the device to send.
    TxTooBig,
    /// An offload (checksum, segmentation) that could not be finished.
    TxBadOffload,
    /// The kernel refused a tunnel send (no route, too big).
    TxTunnelRefused,
    /// A tunnel packet dropped on its way in or out; receive drops belong
    /// to the tunnel's endpoint (a packet for no port is no port's), and
    /// each of its ports shows them.
    Tunnel(TunnelDrop),
}

impl DeviceDrop {
    /// The counter's name in `dump-ports`.
    pub fn name(self) -> &'static str {
        match self {
            DeviceDrop::RxTruncated => "rx_truncated",
            DeviceDrop::RxBadOffload => "rx_bad_offload",
            DeviceDrop::RxQueueFull => "rx_queue_full",
            DeviceDrop::TxTooBig => "tx_too_big",
            DeviceDrop::TxBadOffload => "tx_bad_offload",
            DeviceDrop::TxTunnelRefused => "tx_tunnel_refused",
            DeviceDrop::Tunnel(drop) => drop.name(),
        }
    }

    /// Whether the frame was received by this port, so that it counts in
    /// the port's `rx_packets` and `rx_dropped` as well.
    pub fn is_port_receive(self) -> bool {
        matches!(self, DeviceDrop::RxTruncated | DeviceDrop::RxBadOffload | DeviceDrop::RxQueueFull)
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

/// A kind of port this vswitchd drives: the `type=` values it answers to
/// and how its device is opened. Adding a kind of port is one driver module
/// and one entry here.
pub struct Driver {
    pub types: &'static [&'static str],
    /// Opens the device for `port`. An error fails the transaction that
    /// asked for it; a device that opens but cannot work yet (its interface
    /// is missing) opens down and says why through [`PortDevice::error`].
    pub open: fn(port: &str, interface: &InterfaceConfig) -> Opened,
}

/// A device opened for a port, or why the transaction cannot have it.
pub type Opened = Result<Box<dyn PortDevice>, RpcError>;

/// Every kind of port, in the order `add-port`'s error lists them.
pub const DRIVERS: &[Driver] = &[
    Driver { types: &["system"], open: |port, _| Ok(Box::new(afpacket::AfPacket::open(port))) },
    Driver { types: &["internal"], open: |port, _| Ok(Box::new(tap::Tap::open(port, true))) },
    Driver { types: &["tap"], open: |port, _| Ok(Box::new(tap::Tap::open(port, false))) },
    Driver { types: &["pcap"], open: |port, i| Ok(Box::new(pcap::PcapDevice::open(port, &i.options)?)) },
    Driver { types: &["vxlan", "gre"], open: |_, i| Ok(Box::new(tunnel::TunnelPort::open(i)?)) },
];

/// Every interface type some driver answers to.
pub fn interface_types() -> impl Iterator<Item = &'static str> {
    DRIVERS.iter().flat_map(|d| d.types.iter().copied())
}

/// Opens the device an interface's configuration describes. An error here
/// fails the transaction that asked for it.
pub fn open(port: &str, interface: &InterfaceConfig) -> Opened {
    let kind = interface.kind();
    match DRIVERS.iter().find(|d| d.types.contains(&kind)) {
        Some(driver) => (driver.open)(port, interface),
        None => {
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
