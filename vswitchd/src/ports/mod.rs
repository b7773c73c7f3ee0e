//! Port drivers: every kind of port behind one trait, in the manner of OVS's
//! `lib/netdev-provider.h`.
//!
//! Ownership: a device is opened by the control plane while a transaction is
//! being prepared (so that a bad path or a missing device fails the command
//! and leaves the configuration as it was), then handed to the datapath
//! thread, which owns it from then on and drops it when the port goes away.
//!
//! Batching: the datapath hands a device a whole [`PacketBatch`] per batch and
//! takes received frames up to a batch at a time. Neither call may block:
//! a device that cannot take more frames says how many it took and the rest
//! are counted as `tx_dropped`; a device with nothing to receive returns 0.

pub mod afpacket;
pub mod pcap;
pub mod sys;
pub mod tap;
pub mod tunnel;

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::Arc;

use proto::{ErrorCode, RpcError};

use crate::config::InterfaceConfig;
use crate::core::bridge::Packet;
use crate::core::offload::Offload;
use crate::core::tunnel::{TunnelConfig, TunnelMeta};

/// Frames move in batches of this many.
pub const BATCH_SIZE: usize = 32;

pub trait PortDevice: Send {
    /// Sends the queued frames; returns how many the device took.
    fn send_batch(&mut self, frames: &PacketBatch) -> usize;

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

/// Frames with their offload metadata in one reusable buffer: what a
/// device received in one batch, or what was switched to a port.
#[derive(Debug, Default)]
pub struct PacketBatch {
    data: Vec<u8>,
    ends: Vec<usize>,
    offloads: Vec<Offload>,
    /// Each frame's tunnel metadata, in a tunnel port's queue (where every
    /// frame has one); empty in any other.
    tunnels: Vec<TunnelMeta>,
}

impl PacketBatch {
    pub fn push(&mut self, frame: &[u8], offload: &Offload) {
        self.data.extend_from_slice(frame);
        self.ends.push(self.data.len());
        self.offloads.push(*offload);
    }

    /// Appends a frame for a tunnel port.
    pub fn push_tunneled(&mut self, frame: &[u8], offload: &Offload, tunnel: &TunnelMeta) {
        self.push(frame, offload);
        self.tunnels.push(*tunnel);
    }

    /// Frame `i`'s tunnel metadata (none if it was pushed without).
    pub fn tunnel(&self, i: usize) -> TunnelMeta {
        self.tunnels.get(i).copied().unwrap_or_default()
    }

    /// Appends one frame given in pieces (e.g. with a VLAN tag put back).
    pub fn push_parts(&mut self, parts: &[&[u8]], offload: &Offload) {
        for part in parts {
            self.data.extend_from_slice(part);
        }
        self.ends.push(self.data.len());
        self.offloads.push(*offload);
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Bytes reserved for frames and their metadata.
    pub fn capacity_bytes(&self) -> usize {
        self.data.capacity()
            + self.ends.capacity() * std::mem::size_of::<usize>()
            + self.offloads.capacity() * std::mem::size_of::<Offload>()
            + self.tunnels.capacity() * std::mem::size_of::<TunnelMeta>()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
        self.offloads.clear();
        self.tunnels.clear();
    }

    pub fn get(&self, i: usize) -> Option<Packet<'_>> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(Packet { data: &self.data[start..end], offload: self.offloads[i] })
    }

    pub fn iter(&self) -> impl Iterator<Item = Packet<'_>> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .zip(&self.offloads)
            .map(|((s, e), offload)| Packet { data: &self.data[s..e], offload: *offload })
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
    fn send_batch(&mut self, _frames: &PacketBatch) -> usize {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tx_queue_keeps_frame_boundaries() {
        let mut q = PacketBatch::default();
        let partial = Offload { needs_csum: true, csum_start: 34, csum_offset: 16, ..Offload::NONE };
        q.push(b"one", &Offload::NONE);
        q.push(b"", &partial);
        q.push(b"three", &Offload::NONE);
        assert_eq!(q.iter().map(|p| p.data).collect::<Vec<_>>(), vec![&b"one"[..], b"", b"three"]);
        assert_eq!(q.iter().nth(1).unwrap().offload, partial);
        assert_eq!(q.get(2).unwrap().data, b"three");
        assert!(q.get(3).is_none());
        q.clear();
        assert!(q.is_empty());
    }
}
