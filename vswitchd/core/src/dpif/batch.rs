//! Batches of frames: what a port received, and what the switch queued for
//! each port to send. Frames move 32 at a time (OVS's `NETDEV_MAX_BURST`),
//! so that the cost of a system call, a cache lookup's setup or a wake-up
//! is shared by a batch rather than paid per frame.
//!
//! These are plain buffers with no I/O: port drivers (in the daemon) fill
//! a [`PacketBatch`] and drain their share of [`TxQueues`] as [`Frames`];
//! benches and fuzzers fill and drain them in memory the same way.
//!
//! Invariants: a batch's frames lie back to back in one buffer that only
//! grows and is reused, never zeroed again; a frame queued by reference
//! (see [`TxQueues::lend`]) points into the batch it was received in, which
//! must outlive the queue entries (the datapath sends before it receives
//! again). Costs: pushing a frame copies it once; queueing a received frame
//! unchanged copies nothing.
//!
//! Threads: both are owned by the one thread that forwards; they are
//! `Send` (plain data) but never shared.

use crate::bridge::{Packet, Transmit};
use crate::offload::Offload;
use crate::tunnel::TunnelMeta;

/// Frames move in batches of this many.
pub const BATCH_SIZE: usize = 32;

/// Where one frame lies in a buffer of frames, with its offload metadata.
#[derive(Debug, Clone, Copy)]
pub struct FrameRef {
    start: usize,
    end: usize,
    offload: Offload,
    /// In the receive batch the transmit queues were lent, not in their
    /// own buffer (see [`TxQueues::lend`]).
    lent: bool,
}

/// Frames with their offload metadata in one reusable buffer: what a
/// device received in one batch.
///
/// Devices that receive into memory they choose (TAP, and AF_PACKET for
/// frames it reads from its socket) receive in place:
/// [`PacketBatch::receive_area`] lends them room in the batch's own buffer,
/// and the frames stay where the kernel wrote them, so such a frame is
/// never copied before it is switched (AF_PACKET copies the frames of its
/// ring out of their slots into that room). The datapath has
/// one receive batch, so that room (2 MiB for 32 frames of up to 64 KiB)
/// exists once, not once per port. The buffer's length only grows (`used`
/// is where the next frame goes), so lending room never zeroes it again.
#[derive(Debug, Default)]
pub struct PacketBatch {
    data: Vec<u8>,
    used: usize,
    frames: Vec<FrameRef>,
}

impl PacketBatch {
    pub fn push(&mut self, frame: &[u8], offload: &Offload) {
        let (start, room) = self.receive_area(frame.len());
        room.copy_from_slice(frame);
        self.frames.push(FrameRef { start, end: self.used, offload: *offload, lent: false });
    }

    /// Lends `len` bytes after the frames already in the batch for a device
    /// to receive into; returns where they start in the batch and the room.
    /// Record each frame received there with [`PacketBatch::push_received`];
    /// give back what a receive left unused with [`PacketBatch::shrink_area`].
    pub fn receive_area(&mut self, len: usize) -> (usize, &mut [u8]) {
        let start = self.used;
        let end = start + len;
        if self.data.len() < end {
            self.data.resize(end, 0);
        }
        self.used = end;
        (start, &mut self.data[start..end])
    }

    /// Makes the lent room end at `end` (the end of the last frame kept),
    /// so the next frame follows it.
    pub fn shrink_area(&mut self, end: usize) {
        debug_assert!(end <= self.used);
        self.used = self.used.min(end);
    }

    /// Records a frame a device received at `start..end` of the lent room.
    pub fn push_received(&mut self, start: usize, end: usize, offload: &Offload) {
        debug_assert!(start <= end && end <= self.used);
        self.frames.push(FrameRef { start, end, offload: *offload, lent: false });
    }

    /// The bytes the batch's frames lie in.
    pub fn bytes(&self) -> &[u8] {
        &self.data[..self.used]
    }

    /// The batch's buffer, for a device to move a received frame's bytes
    /// within the room it was lent (to put a stripped VLAN tag back).
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.data[..self.used]
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    pub fn clear(&mut self) {
        self.used = 0;
        self.frames.clear();
    }

    /// All the frames, as a device sends them.
    pub fn frames(&self) -> Frames<'_> {
        Frames { data: &self.data, lent: &[], frames: &self.frames, tunnels: &[] }
    }

    pub fn get(&self, i: usize) -> Option<Packet<'_>> {
        self.frames().get(i)
    }

    pub fn iter(&self) -> impl Iterator<Item = Packet<'_>> {
        self.frames().iter()
    }

    /// Bytes reserved for frames and their metadata.
    pub fn capacity_bytes(&self) -> usize {
        self.data.capacity() + self.frames.capacity() * std::mem::size_of::<FrameRef>()
    }
}

/// Frames for a device to send: a batch, or one port's share of the
/// datapath's transmit queues. Borrowed, so handing them over copies nothing.
#[derive(Debug, Clone, Copy)]
pub struct Frames<'a> {
    data: &'a [u8],
    /// The receive batch, for frames queued by reference.
    lent: &'a [u8],
    frames: &'a [FrameRef],
    tunnels: &'a [TunnelMeta],
}

impl<'a> Frames<'a> {
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<Packet<'a>> {
        let f = self.frames.get(i)?;
        Some(self.packet(f))
    }

    pub fn iter(&self) -> impl Iterator<Item = Packet<'a>> + use<'a> {
        let frames = *self;
        self.frames.iter().map(move |f| frames.packet(f))
    }

    fn packet(&self, f: &FrameRef) -> Packet<'a> {
        let data = if f.lent { self.lent } else { self.data };
        Packet { data: &data[f.start..f.end], offload: f.offload }
    }

    /// Frame `i`'s tunnel metadata (none if it was queued without).
    pub fn tunnel(&self, i: usize) -> TunnelMeta {
        self.tunnels.get(i).copied().unwrap_or_default()
    }
}

/// The frames the bridge switched to each port, until the datapath hands
/// each port its share.
///
/// A frame that leaves as it came in is queued by reference: while the
/// datapath has lent the queues the batch being switched
/// ([`TxQueues::lend`]), a frame lying in that batch is recorded by its
/// place there, not copied (for TCP, a 64 KiB copy per GSO frame; it also
/// serves every port a flooded frame goes to). The datapath sends before
/// it receives the next batch, so the batch outlives the queue entries.
/// A large frame out of a tunnel is lent the same way, alone
/// ([`TxQueues::lend_bytes`]), and sent before the next one is merged.
/// Frames from elsewhere (rewritten by actions, injected, small ones
/// decapsulated) are copied into one buffer shared by every port, so what the queues hold is
/// bounded by what one received batch yields (times its fan-out), not by
/// the number of ports: per-port buffers each grew to the biggest burst
/// that port ever saw and kept it.
#[derive(Debug, Default)]
pub struct TxQueues {
    data: Vec<u8>,
    /// Indexed by OpenFlow port number.
    ports: Vec<PortQueue>,
    /// The address range of the lent batch's bytes.
    lent: Option<std::ops::Range<usize>>,
}

#[derive(Debug, Default)]
struct PortQueue {
    frames: Vec<FrameRef>,
    /// Tunnel metadata, one per frame in a tunnel port's queue.
    tunnels: Vec<TunnelMeta>,
}

impl TxQueues {
    /// Until [`TxQueues::clear`], frames lying in `batch` are queued by
    /// reference; [`TxQueues::port_lent`] must then be given that batch.
    pub fn lend(&mut self, batch: &PacketBatch) {
        self.lend_bytes(batch.bytes());
    }

    /// [`TxQueues::lend`] for frames lying in any buffer: `bytes` must then
    /// be given to [`TxQueues::port_lent`], and outlive the queue entries.
    pub fn lend_bytes(&mut self, bytes: &[u8]) {
        let start = bytes.as_ptr() as usize;
        self.lent = Some(start..start + bytes.len());
    }

    fn queue(&mut self, port: u16, frame: &[u8], offload: &Offload) -> &mut PortQueue {
        let i = usize::from(port);
        if self.ports.len() <= i {
            self.ports.resize_with(i + 1, PortQueue::default);
        }
        let at = frame.as_ptr() as usize;
        let frame_ref = match &self.lent {
            Some(lent) if lent.start <= at && at + frame.len() <= lent.end => {
                let start = at - lent.start;
                FrameRef { start, end: start + frame.len(), offload: *offload, lent: true }
            }
            _ => {
                let start = self.data.len();
                self.data.extend_from_slice(frame);
                FrameRef { start, end: self.data.len(), offload: *offload, lent: false }
            }
        };
        let queue = &mut self.ports[i];
        queue.frames.push(frame_ref);
        queue
    }

    /// The frames queued to `port`, when no batch was lent.
    pub fn port(&self, port: u16) -> Frames<'_> {
        debug_assert!(self.lent.is_none(), "frames queued by reference need their batch: use port_lent");
        self.port_lent(port, &[])
    }

    /// The frames queued to `port`; `lent` is the bytes of the batch lent
    /// with [`TxQueues::lend`] (empty if none was).
    pub fn port_lent<'a>(&'a self, port: u16, lent: &'a [u8]) -> Frames<'a> {
        debug_assert!(self
            .lent
            .as_ref()
            .is_none_or(|r| r.start == lent.as_ptr() as usize && r.end - r.start == lent.len()));
        match self.ports.get(usize::from(port)) {
            Some(q) => Frames { data: &self.data, lent, frames: &q.frames, tunnels: &q.tunnels },
            None => Frames { data: &[], lent: &[], frames: &[], tunnels: &[] },
        }
    }

    /// Forgets every queued frame (sent or not) and the lent batch.
    pub fn clear(&mut self) {
        self.lent = None;
        self.data.clear();
        for q in &mut self.ports {
            q.frames.clear();
            q.tunnels.clear();
        }
    }

    pub fn capacity_bytes(&self) -> usize {
        self.data.capacity()
            + self
                .ports
                .iter()
                .map(|q| {
                    q.frames.capacity() * std::mem::size_of::<FrameRef>()
                        + q.tunnels.capacity() * std::mem::size_of::<TunnelMeta>()
                })
                .sum::<usize>()
    }
}

impl Transmit for TxQueues {
    fn transmit(&mut self, port: u16, frame: &[u8], offload: &Offload) {
        self.queue(port, frame, offload);
    }

    fn transmit_tunneled(&mut self, port: u16, frame: &[u8], offload: &Offload, tunnel: &TunnelMeta) {
        self.queue(port, frame, offload).tunnels.push(*tunnel);
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

    #[test]
    fn frames_received_in_place_sit_among_pushed_ones() {
        let mut q = PacketBatch::default();
        q.push(b"first", &Offload::NONE);
        let (start, room) = q.receive_area(64);
        room[..4].copy_from_slice(b"abcd");
        room[10..13].copy_from_slice(b"xyz");
        q.push_received(start, start + 4, &Offload::NONE);
        q.push_received(start + 10, start + 13, &Offload::NONE);
        q.shrink_area(start + 13);
        q.push(b"last", &Offload::NONE);
        let frames: Vec<&[u8]> = q.iter().map(|p| p.data).collect();
        assert_eq!(frames, vec![&b"first"[..], b"abcd", b"xyz", b"last"]);
        // Cleared and refilled, the buffer is reused, not zeroed: the room
        // lent again still holds what was there.
        q.clear();
        let (start, room) = q.receive_area(5);
        assert_eq!((start, &room[..]), (0, &b"first"[..]));
    }

    #[test]
    fn frames_of_the_lent_batch_are_queued_by_reference_and_others_copied() {
        let mut rx = PacketBatch::default();
        rx.push(b"received one", &Offload::NONE);
        rx.push(b"received two", &Offload::NONE);
        let mut tx = TxQueues::default();
        tx.lend(&rx);
        let rewritten = b"rewritten".to_vec();
        for packet in rx.iter() {
            tx.transmit(3, packet.data, &packet.offload);
        }
        tx.transmit(3, &rewritten, &Offload::NONE);
        tx.transmit(4, rx.get(1).unwrap().data, &Offload::NONE);
        assert_eq!(tx.data, b"rewritten", "only the frame from outside the batch was copied");
        let three: Vec<&[u8]> = tx.port_lent(3, rx.bytes()).iter().map(|p| p.data).collect();
        assert_eq!(three, vec![&b"received one"[..], b"received two", b"rewritten"]);
        assert_eq!(tx.port_lent(4, rx.bytes()).get(0).unwrap().data, b"received two");
        // Once cleared, nothing is lent: the batch's frames are copied again.
        tx.clear();
        tx.transmit(3, rx.get(0).unwrap().data, &Offload::NONE);
        assert_eq!(tx.data, b"received one");
        assert_eq!(tx.port(3).get(0).unwrap().data, b"received one");
    }

    #[test]
    fn a_lent_frame_from_any_buffer_goes_by_reference_after_those_queued_before() {
        let mut tx = TxQueues::default();
        tx.transmit(3, b"small, copied", &Offload::NONE);
        let merged = b"a large merged frame".to_vec();
        tx.lend_bytes(&merged);
        tx.transmit(3, &merged, &Offload::NONE);
        assert_eq!(tx.data, b"small, copied", "the lent frame was not copied");
        let three: Vec<&[u8]> = tx.port_lent(3, &merged).iter().map(|p| p.data).collect();
        assert_eq!(three, vec![&b"small, copied"[..], b"a large merged frame"]);
    }

    #[test]
    fn tx_queues_share_one_buffer_and_keep_each_ports_frames() {
        let mut tx = TxQueues::default();
        let tunnel = TunnelMeta { id: 42, ..TunnelMeta::default() };
        tx.transmit(2, b"to two", &Offload::NONE);
        tx.transmit_tunneled(5, b"to five", &Offload::NONE, &tunnel);
        tx.transmit(2, b"two again", &Offload::NONE);
        let two: Vec<&[u8]> = tx.port(2).iter().map(|p| p.data).collect();
        assert_eq!(two, vec![&b"to two"[..], b"two again"]);
        assert_eq!(tx.port(5).get(0).unwrap().data, b"to five");
        assert_eq!(tx.port(5).tunnel(0).id, 42);
        assert_eq!(tx.port(2).tunnel(0), TunnelMeta::default());
        assert!(tx.port(3).is_empty() && tx.port(99).is_empty());
        tx.clear();
        assert!(tx.port(2).is_empty() && tx.port(5).is_empty());
    }
}
