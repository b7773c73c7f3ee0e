//! Software GRO: consecutive TCP/IPv4 segments of one flow, as they come
//! out of a tunnel, coalesced back into one large frame with an offload
//! header, so that veth and TAP ports get 64 KiB frames from a remote host
//! as they do from a local one, and the receiving stack walks one frame
//! instead of forty.
//!
//! A segment joins the frame held for its flow (same caller tag, Ethernet
//! header, addresses and ports) only if it is exactly what the Linux stack
//! would have merged: IPv4 without options or fragmentation, TCP with only
//! ACK (and PSH) set, the next sequence number, the same acknowledgement,
//! window, TOS, TTL and options, IP ids counting up, no more payload
//! than the first segment,
//! and valid IP and TCP checksums (VXLAN over IPv4 usually carries no UDP
//! checksum: the inner TCP checksum is the only one, and a merged frame's
//! is recomputed by whoever finishes it, so a corrupt segment must never
//! be merged). A shorter segment or PSH closes the frame. Anything else
//! passes through as it is, after what is held for its flow, so a flow's
//! segments are never reordered.
//!
//! A merged frame leaves with `NEEDS_CSUM` (the checksum field holds the
//! pseudo-header sum, as virtio-net says) and `GSO_TCPV4` with the first
//! segment's payload as the MSS: [`crate::offload::finish`] cuts it back
//! into the very segments it was made of.
//!
//! Costs: one copy of each merged payload and one checksum pass over it;
//! at most [`MAX_FLOWS`] frames held, flushed by the caller at the end of
//! each receive batch, so nothing waits longer than a batch.
//!
//! Threads: a [`Gro`] is plain data (`Send`), owned by the thread that
//! receives from tunnels and changed only through `&mut`.

use crate::checksum::fold;
use crate::offload::{Gso, Offload};
use crate::packet::L2Header;
use crate::wire::{ip_protocol, ipv4, ipv6, tcp, Ipv4Packet, Ipv6Packet, TcpPacket};

/// Flows held at once; the oldest is flushed to make room.
pub const MAX_FLOWS: usize = 8;
/// The inner MTU a VXLAN overlay on a 1500-byte underlay has (Docker's):
/// the size a super-frame that came without its MSS is cut for.
pub const OVERLAY_MTU: usize = 1450;
/// The largest frame's IPv4 total length.
const MAX_IP_LEN: usize = 65_535;

const TCP_ACK: u8 = tcp::ACK;
const TCP_PSH: u8 = tcp::PSH;
/// Source and destination port, what [`same_flow`] compares.
const TCP_PORTS: std::ops::Range<usize> = tcp::field::SRC_PORT.start..tcp::field::DST_PORT.end;

/// What became of a pushed segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Held (merged or starting a frame); it comes out of [`Gro::take_ready`].
    Held,
    /// Not mergeable: the caller delivers it as it is, after taking what
    /// [`Gro::take_ready`] gives first.
    Pass,
}

/// A frame being built, and what a next segment must match.
struct Held {
    tag: u64,
    frame: Vec<u8>,
    l4: usize,
    payload: usize,
    mss: usize,
    next_seq: u32,
    segments: u16,
    /// Sequence of insertion, to flush the oldest first.
    age: u64,
}

/// A frame ready to be delivered: the caller's tag, the bytes and the
/// offload header that goes with them.
pub struct Ready {
    pub tag: u64,
    pub frame: Vec<u8>,
    pub offload: Offload,
}

#[derive(Default)]
pub struct Gro {
    held: Vec<Held>,
    ready: std::collections::VecDeque<Ready>,
    spare: Vec<Vec<u8>>,
    clock: u64,
    /// Segments merged into a frame held before them, for `dump-ports`.
    pub merged: u64,
}

/// Where a mergeable segment's headers are.
struct Parsed {
    l3: usize,
    l4: usize,
    payload: usize,
    seq: u32,
    flags: u8,
}

/// The pseudo-header sum (unfolded) of a TCP/IPv4 segment; the caller
/// checked the IPv4 header at `l3`.
fn pseudo(frame: &[u8], l3: usize, tcp_len: usize) -> u64 {
    Ipv4Packet::new_unchecked(&frame[l3..]).pseudo_header(ip_protocol::TCP, tcp_len)
}

/// The segment's headers if it may be merged at all; `None`: pass it.
fn parse(frame: &[u8]) -> Option<Parsed> {
    let l2 = L2Header::parse(frame).ok()?;
    if l2.ether_type != 0x0800 {
        return None;
    }
    let l3 = l2.payload_offset;
    let ip = Ipv4Packet::new_checked(&frame[l3..]).ok()?;
    // Version 4, no options, TCP, not a fragment, and no Ethernet padding.
    if ip.version() != 4
        || ip.header_len() != ipv4::HEADER_LEN
        || ip.protocol() != ip_protocol::TCP
        || ip.is_fragment()
        || frame.len() != l3 + usize::from(ip.total_len())
    {
        return None;
    }
    let l4 = l3 + ipv4::HEADER_LEN;
    let tcp = TcpPacket::new_checked(&frame[l4..]).ok()?;
    let payload = l4 + tcp.header_len();
    let flags = tcp.flags();
    if tcp.payload().is_empty() || flags & !(TCP_ACK | TCP_PSH) != 0 || flags & TCP_ACK == 0 {
        return None;
    }
    if !ip.verify_checksum() || !tcp_checksum_ok(frame, l3, l4) {
        return None;
    }
    Some(Parsed { l3, l4, payload, seq: tcp.seq_number(), flags })
}

/// Whether a TCP/IPv4 segment's checksum is right, or is a partial one:
/// the pseudo-header sum that a previous hop left for offload to finish.
/// The kernel's VXLAN device sends such inner segments when the underlay
/// (a veth) takes checksum offload; Linux trusts them on receipt, and a
/// merged frame's checksum is computed afresh anyway. (A corrupted segment
/// whose checksum field happened to equal the pseudo-header sum, 1 in
/// 65,536 of them, would be taken for partial.)
fn tcp_checksum_ok(frame: &[u8], l3: usize, l4: usize) -> bool {
    let pseudo = pseudo(frame, l3, frame.len() - l4);
    // The caller checked the fixed TCP header.
    let tcp = TcpPacket::new_unchecked(&frame[l4..]);
    tcp.verify_checksum(pseudo) || tcp.checksum() == fold(pseudo)
}

/// The offload header for a segment passed through whose TCP checksum is
/// partial (see `tcp_checksum_ok`): the output port, or the software
/// that finishes frames for ports without offloads, completes it. `None`:
/// the frame is what it says it is.
pub fn partial_checksum(frame: &[u8]) -> Option<Offload> {
    let l2 = L2Header::parse(frame).ok()?;
    if l2.ether_type != 0x0800 {
        return None;
    }
    let l3 = l2.payload_offset;
    let ip = Ipv4Packet::new_checked(&frame[l3..]).ok()?;
    let l4 = l3 + ip.header_len();
    if ip.version() != 4 || ip.protocol() != ip_protocol::TCP || ip.is_fragment() {
        return None;
    }
    // The data offset is not looked at: only the checksum is read.
    if frame.len() != l3 + usize::from(ip.total_len()) || frame.len() < l4 + tcp::HEADER_LEN {
        return None;
    }
    let pseudo = pseudo(frame, l3, frame.len() - l4);
    let tcp = TcpPacket::new_unchecked(&frame[l4..]);
    let partial = tcp.checksum() == fold(pseudo) && !tcp.verify_checksum(pseudo);
    partial.then_some(Offload {
        needs_csum: true,
        csum_start: l4 as u16,
        csum_offset: tcp::field::CHECKSUM.start as u16,
        ..Offload::NONE
    })
}

/// The offload header of a whole TCP super-frame that came in one
/// datagram: Linux hands a UDP socket with UDP_GRO the tunnel packet a
/// local sender's VXLAN device built before segmentation (one VXLAN
/// header, a 64 KiB inner frame), saying the inner MSS, `mss`, or, as seen
/// on Linux 6.18, nothing. `Some` when `inner` is one TCP frame (IPv4 or
/// IPv6) longer than one segment; it then leaves with the offload a local
/// veth would give it, its MSS the one given or else what fits the
/// overlay MTU of [`OVERLAY_MTU`].
pub fn tunnel_super_frame(inner: &[u8], mss: Option<usize>) -> Option<Offload> {
    let l2 = L2Header::parse(inner).ok()?;
    let l3 = l2.payload_offset;
    let (gso, l4, length) = match l2.ether_type {
        0x0800 => {
            let ip = Ipv4Packet::new_checked_header(&inner[l3..]).ok()?;
            let length = usize::from(ip.total_len());
            (ip.protocol() == ip_protocol::TCP).then_some((Gso::TcpV4, l3 + ip.header_len(), length))?
        }
        0x86dd => {
            let ip = Ipv6Packet::new_checked_header(&inner[l3..]).ok()?;
            let length = ipv6::HEADER_LEN + usize::from(ip.payload_len());
            (ip.next_header() == ip_protocol::TCP).then_some((Gso::TcpV6, l3 + ipv6::HEADER_LEN, length))?
        }
        _ => return None,
    };
    // Only the data offset must be there: the length checks below judge it.
    let segment = inner.get(l4..).filter(|s| s.len() > tcp::field::DATA_OFFSET)?;
    let payload = l4 + TcpPacket::new_unchecked(segment).header_len();
    let mss = mss.unwrap_or(OVERLAY_MTU.saturating_sub(payload - l3));
    if l3 + length != inner.len() || payload > inner.len() || inner.len() - payload <= mss || mss == 0 {
        return None;
    }
    Some(Offload {
        needs_csum: true,
        csum_start: l4 as u16,
        csum_offset: tcp::field::CHECKSUM.start as u16,
        gso,
        gso_size: u16::try_from(mss).ok()?,
        hdr_len: payload as u16,
        ..Offload::NONE
    })
}

/// Whether `a` and `b` (a held frame's start, a new segment) are one flow.
fn same_flow(a: &[u8], b: &[u8], l3: usize, l4: usize) -> bool {
    a.len() >= l4 + TCP_PORTS.end
        && a[..l3] == b[..l3]
        && a[l3..][ipv4::field::ADDRESSES] == b[l3..][ipv4::field::ADDRESSES]
        && a[l4..][TCP_PORTS] == b[l4..][TCP_PORTS]
}

impl Gro {
    /// Offers a received segment tagged `tag` (segments of different tags,
    /// such as different input ports, never merge).
    pub fn push(&mut self, tag: u64, segment: &[u8]) -> Verdict {
        let Some(p) = parse(segment) else {
            self.flush_flow_of(tag, segment);
            return Verdict::Pass;
        };
        let len = segment.len() - p.payload;
        let found = self
            .held
            .iter()
            .position(|h| h.tag == tag && h.l4 == p.l4 && same_flow(&h.frame, segment, p.l3, p.l4));
        if let Some(i) = found {
            if self.fits(&self.held[i], segment, &p, len) {
                let h = &mut self.held[i];
                h.frame.extend_from_slice(&segment[p.payload..]);
                h.next_seq = p.seq.wrapping_add(len as u32);
                h.segments += 1;
                self.merged += 1;
                if len < h.mss || p.flags & TCP_PSH != 0 {
                    // Only the last segment may be short or pushed.
                    let h = &mut self.held[i];
                    let mut tcp = TcpPacket::new_unchecked(&mut h.frame[h.l4..]);
                    tcp.set_flags(tcp.flags() | (p.flags & TCP_PSH));
                    self.flush(i);
                }
                return Verdict::Held;
            }
            self.flush(i);
        }
        if p.flags & TCP_PSH != 0 {
            // Pushed data is delivered now, as the sender asked.
            return Verdict::Pass;
        }
        if self.held.len() == MAX_FLOWS {
            let oldest = (0..self.held.len()).min_by_key(|&i| self.held[i].age).expect("full");
            self.flush(oldest);
        }
        let mut frame = self.spare.pop().unwrap_or_default();
        frame.clear();
        frame.extend_from_slice(segment);
        self.clock += 1;
        self.held.push(Held {
            tag,
            frame,
            l4: p.l4,
            payload: p.payload,
            mss: len,
            next_seq: p.seq.wrapping_add(len as u32),
            segments: 1,
            age: self.clock,
        });
        Verdict::Held
    }

    /// Whether `segment` continues the frame `h` holds.
    fn fits(&self, h: &Held, segment: &[u8], p: &Parsed, len: usize) -> bool {
        let (l3, l4) = (p.l3, p.l4);
        // Both parsed (the held frame when it came): headers of the same
        // length, in the same place.
        let (ip_a, ip_b) =
            (Ipv4Packet::new_unchecked(&h.frame[l3..]), Ipv4Packet::new_unchecked(&segment[l3..]));
        let (tcp_a, tcp_b) =
            (TcpPacket::new_unchecked(&h.frame[l4..]), TcpPacket::new_unchecked(&segment[l4..]));
        let offset_byte = |t: &[u8]| t[l4 + tcp::field::DATA_OFFSET];
        p.payload == h.payload
            && p.seq == h.next_seq
            && len <= h.mss
            && h.frame.len() - l3 + len <= MAX_IP_LEN
            // IP ids counting up, as segmentation made them (and makes them again).
            && ip_b.ident() == ip_a.ident().wrapping_add(h.segments)
            // TOS and TTL; DF (neither is a fragment); acknowledgement,
            // offset and reserved bits, flags but PSH, window; options.
            && ip_a.tos() == ip_b.tos()
            && ip_a.ttl() == ip_b.ttl()
            && ip_a.flags_frag() == ip_b.flags_frag()
            && tcp_a.ack_number() == tcp_b.ack_number()
            && offset_byte(&h.frame) == offset_byte(segment)
            && tcp_a.flags() & !TCP_PSH == tcp_b.flags() & !TCP_PSH
            && tcp_a.window_len() == tcp_b.window_len()
            && tcp_a.options() == tcp_b.options()
    }

    /// Flushes what is held for the flow of `segment`, if it has one, so a
    /// segment passed through never overtakes the data before it.
    pub fn flush_flow_of(&mut self, tag: u64, segment: &[u8]) {
        let Ok(l2) = L2Header::parse(segment) else { return };
        let l3 = l2.payload_offset;
        if l2.ether_type != 0x0800 {
            return;
        }
        let Ok(ip) = Ipv4Packet::new_checked_header(&segment[l3..]) else { return };
        let l4 = l3 + ip.header_len();
        if ip.protocol() != ip_protocol::TCP || segment.len() < l4 + TCP_PORTS.end {
            return;
        }
        if let Some(i) =
            self.held.iter().position(|h| h.tag == tag && h.l4 == l4 && same_flow(&h.frame, segment, l3, l4))
        {
            self.flush(i);
        }
    }

    /// Moves held frame `i` to the ready queue, finishing its headers.
    fn flush(&mut self, i: usize) {
        let Held { tag, mut frame, l4, payload, mss, segments, .. } = self.held.swap_remove(i);
        // A lone segment leaves as it came, finished later if its checksum was partial.
        let mut offload = partial_checksum(&frame).unwrap_or(Offload::NONE);
        if segments > 1 {
            let l3 = l4 - ipv4::HEADER_LEN;
            let total = (frame.len() - l3) as u16;
            let mut ip = Ipv4Packet::new_unchecked(&mut frame[l3..]);
            ip.set_total_len(total);
            ip.fill_checksum();
            // NEEDS_CSUM: the field holds the pseudo-header sum, folded.
            let partial = fold(pseudo(&frame, l3, frame.len() - l4));
            TcpPacket::new_unchecked(&mut frame[l4..]).set_checksum(partial);
            offload = Offload {
                needs_csum: true,
                csum_start: l4 as u16,
                csum_offset: tcp::field::CHECKSUM.start as u16,
                gso: Gso::TcpV4,
                gso_size: mss as u16,
                hdr_len: payload as u16,
                ..Offload::NONE
            };
        }
        self.ready.push_back(Ready { tag, frame, offload });
    }

    /// Moves everything held to the ready queue: the end of a batch.
    pub fn flush_all(&mut self) {
        while !self.held.is_empty() {
            let oldest = (0..self.held.len()).min_by_key(|&i| self.held[i].age).expect("not empty");
            self.flush(oldest);
        }
    }

    /// The next frame to deliver, oldest first.
    pub fn take_ready(&mut self) -> Option<Ready> {
        self.ready.pop_front()
    }

    /// Gives a delivered frame's buffer back for reuse.
    pub fn recycle(&mut self, frame: Vec<u8>) {
        if self.spare.len() < MAX_FLOWS * 2 {
            self.spare.push(frame);
        }
    }

    pub fn is_idle(&self) -> bool {
        self.held.is_empty() && self.ready.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::checksum;
    use crate::offload::finish;
    use proptest::prelude::*;

    // The tests poke bytes at offsets of their own making.
    fn get16(b: &[u8], at: usize) -> u16 {
        u16::from_be_bytes([b[at], b[at + 1]])
    }

    /// A TSO super-frame of `payload` from port `sport`, as a veth hands it
    /// over (partial checksum, GSO with `mss`), with TCP timestamps.
    fn super_frame(sport: u16, seq: u32, payload: &[u8], mss: u16, flags: u8) -> (Vec<u8>, Offload) {
        let mut f = vec![2, 0, 0, 0, 0, 0xb, 2, 0, 0, 0, 0, 0xa, 0x08, 0x00];
        let total = (20 + 32 + payload.len()) as u16;
        f.extend_from_slice(&[0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2]);
        f[16..18].copy_from_slice(&total.to_be_bytes());
        let ip_sum = checksum(&f[14..34], 0);
        f[24..26].copy_from_slice(&ip_sum.to_be_bytes());
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&5201u16.to_be_bytes());
        f.extend_from_slice(&seq.to_be_bytes());
        f.extend_from_slice(&7u32.to_be_bytes());
        f.extend_from_slice(&[0x80, flags, 0x01, 0xf5, 0, 0, 0, 0]);
        f.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 4]);
        f.extend_from_slice(payload);
        let partial = fold(pseudo(&f, 14, f.len() - 34));
        f[50..52].copy_from_slice(&partial.to_be_bytes());
        let offload = Offload {
            needs_csum: true,
            csum_start: 34,
            csum_offset: 16,
            gso: if payload.len() > usize::from(mss) { Gso::TcpV4 } else { Gso::None },
            gso_size: mss,
            hdr_len: 66,
            ..Offload::NONE
        };
        (f, offload)
    }

    /// The wire segments the super-frame becomes.
    fn segments(frame: &[u8], offload: &Offload) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        finish(frame, offload, &mut |s| out.push(s.to_vec())).unwrap();
        out
    }

    /// Pushes `input` through, flushing at the end; returns what comes out,
    /// each frame cut back into wire segments.
    fn run(gro: &mut Gro, input: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let drain = |gro: &mut Gro, out: &mut Vec<Vec<u8>>| {
            while let Some(r) = gro.take_ready() {
                out.extend(segments(&r.frame, &r.offload));
                gro.recycle(r.frame);
            }
        };
        for s in input {
            if gro.push(0, s) == Verdict::Pass {
                drain(gro, &mut out);
                out.push(s.clone());
            }
            drain(gro, &mut out);
        }
        gro.flush_all();
        drain(gro, &mut out);
        out
    }

    fn payload(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + 3) as u8).collect()
    }

    #[test]
    fn a_segmented_super_frame_comes_back_whole() {
        let data = payload(20_000);
        let (frame, offload) = super_frame(40000, 1000, &data, 1398, TCP_ACK | TCP_PSH);
        let wire = segments(&frame, &offload);
        assert_eq!(wire.len(), 15);
        let mut gro = Gro::default();
        for s in &wire {
            assert_eq!(gro.push(0, s), Verdict::Held);
        }
        let merged = gro.take_ready().expect("the PSH segment closed the frame");
        assert!(gro.is_idle());
        assert_eq!(merged.frame.len(), frame.len());
        assert_eq!(&merged.frame[66..], &data[..], "the payloads back to back");
        assert_eq!(merged.offload.gso, Gso::TcpV4);
        assert_eq!(merged.offload.gso_size, 1398);
        assert_eq!(merged.frame[47] & TCP_PSH, TCP_PSH);
        assert_eq!(segments(&merged.frame, &merged.offload), wire, "cut again, the same segments");
        assert_eq!(gro.merged, 14);
    }

    #[test]
    fn only_the_next_sequence_number_joins() {
        let (frame, offload) = super_frame(40000, 1000, &payload(5 * 1000), 1000, TCP_ACK);
        let wire = segments(&frame, &offload);
        // Out of order: 0, 2, 1, 3, 4; and a retransmission of 3.
        let input = vec![
            wire[0].clone(),
            wire[2].clone(),
            wire[1].clone(),
            wire[3].clone(),
            wire[3].clone(),
            wire[4].clone(),
        ];
        let mut gro = Gro::default();
        assert_eq!(run(&mut gro, &input), input, "nothing reordered, nothing lost");
        assert_eq!(gro.merged, 1, "only 4 continued the one before it (the retransmitted 3)");
    }

    #[test]
    fn flags_options_and_bad_checksums_are_never_merged() {
        let (frame, offload) = super_frame(40000, 1000, &payload(3000), 1000, TCP_ACK);
        let wire = segments(&frame, &offload);
        let mut gro = Gro::default();
        for flag in [0x01, 0x02, 0x04, 0x20] {
            let mut odd = wire[1].clone();
            odd[47] |= flag;
            let sum = get16(&odd, 50).wrapping_sub(u16::from(flag));
            odd[50..52].copy_from_slice(&sum.to_be_bytes());
            assert_eq!(gro.push(0, &wire[0]), Verdict::Held);
            assert_eq!(gro.push(0, &odd), Verdict::Pass, "flag {flag:#x}");
            assert!(gro.take_ready().is_some(), "what was held for the flow goes first");
        }
        // A corrupt payload byte: the checksum fails, never merged.
        let mut corrupt = wire[1].clone();
        *corrupt.last_mut().unwrap() ^= 1;
        assert_eq!(gro.push(0, &wire[0]), Verdict::Held);
        assert_eq!(gro.push(0, &corrupt), Verdict::Pass);
        // IPv4 options (IHL 6).
        let mut options = wire[1].clone();
        options.splice(34..34, [1, 1, 1, 1]);
        options[14] = 0x46;
        assert_eq!(gro.push(0, &options), Verdict::Pass);
        // Another tag (input port) is another flow.
        gro.flush_all();
        while gro.take_ready().is_some() {}
        assert_eq!(gro.push(0, &wire[0]), Verdict::Held);
        assert_eq!(gro.push(1, &wire[1]), Verdict::Held);
        assert_eq!(gro.merged, 0);
    }

    #[test]
    fn short_and_malformed_frames_pass_without_a_panic() {
        let (frame, offload) = super_frame(40000, 1000, &payload(3000), 1000, TCP_ACK);
        let wire = segments(&frame, &offload);
        let mut gro = Gro::default();
        assert_eq!(gro.push(0, &wire[0]), Verdict::Held);
        // A TCP header cut after its offset byte; an IHL of 0; every prefix of a segment.
        let mut cut = wire[1][..47].to_vec();
        cut[16..18].copy_from_slice(&33u16.to_be_bytes());
        assert_eq!(gro.push(0, &cut), Verdict::Pass);
        let mut no_ihl = wire[1][..18].to_vec();
        no_ihl[14] = 0x40;
        assert_eq!(gro.push(0, &no_ihl), Verdict::Pass);
        for len in 0..wire[1].len() {
            let _ = gro.push(0, &wire[1][..len]);
            let _ = partial_checksum(&wire[1][..len]);
            let _ = tunnel_super_frame(&wire[1][..len], None);
        }
    }

    #[test]
    fn interleaved_flows_are_merged_each_on_its_own() {
        let (a, oa) = super_frame(40000, 1, &payload(4000), 1000, TCP_ACK);
        let (b, ob) = super_frame(40001, 9, &payload(4000), 1000, TCP_ACK);
        let (wa, wb) = (segments(&a, &oa), segments(&b, &ob));
        let input: Vec<Vec<u8>> = wa.iter().zip(&wb).flat_map(|(x, y)| [x.clone(), y.clone()]).collect();
        let mut gro = Gro::default();
        let out = run(&mut gro, &input);
        assert_eq!(gro.merged, 6);
        let of =
            |port: u16| -> Vec<Vec<u8>> { out.iter().filter(|s| get16(s, 34) == port).cloned().collect() };
        assert_eq!((of(40000), of(40001)), (wa, wb));
    }

    #[test]
    fn partial_checksums_are_finished_not_taken_for_corruption() {
        let (frame, offload) = super_frame(40000, 1000, &payload(3000), 1000, TCP_ACK);
        let wire = segments(&frame, &offload);
        // As the kernel's VXLAN hands them over a veth: the field holds the pseudo-header sum.
        let partial: Vec<Vec<u8>> = wire
            .iter()
            .map(|s| {
                let mut p = s.clone();
                let sum = fold(pseudo(&p, 14, p.len() - 34));
                p[50..52].copy_from_slice(&sum.to_be_bytes());
                p
            })
            .collect();
        let offload = partial_checksum(&partial[0]).expect("taken for partial");
        assert_eq!(
            segments(&partial[0], &offload),
            vec![wire[0].clone()],
            "finished, it is the real segment"
        );
        assert_eq!(partial_checksum(&wire[0]), None, "a complete checksum is left alone");
        let mut gro = Gro::default();
        assert_eq!(run(&mut gro, &partial), wire, "merged and finished");
        assert_eq!(gro.merged, 2);
    }

    #[test]
    fn a_tunnel_super_frame_is_told_from_coalesced_datagrams() {
        let (frame, _) = super_frame(40000, 1000, &payload(20_000), 1398, TCP_ACK);
        let offload = tunnel_super_frame(&frame, Some(1398)).expect("one frame over the whole datagram");
        assert_eq!((offload.gso, offload.gso_size, offload.hdr_len), (Gso::TcpV4, 1398, 66));
        assert_eq!(segments(&frame, &offload).len(), 15);
        // A frame that fits one segment, or datagrams back to back, is not one.
        let (small, _) = super_frame(40000, 1000, &payload(1000), 1398, TCP_ACK);
        assert_eq!(tunnel_super_frame(&small, Some(1398)), None);
        let mut two = small.clone();
        two.extend_from_slice(&small);
        assert_eq!(tunnel_super_frame(&two, Some(small.len())), None);
        assert_eq!(tunnel_super_frame(&frame[..100], Some(1398)), None);
        // Without the MSS: segments that fit the overlay's MTU.
        let guessed = tunnel_super_frame(&frame, None).expect("still one frame");
        assert_eq!(guessed.gso_size, 1450 - 52);
    }

    proptest! {
        // Random streams of two flows' segments, in random order, some
        // retransmitted, some with PSH, some corrupt: whatever comes out,
        // cut back into wire segments, is the input, flow by flow, in order.
        #[test]
        fn a_flow_comes_out_as_it_went_in(
            sizes in proptest::collection::vec(1usize..3000, 1..6),
            mss in 200u16..1500,
            order in proptest::collection::vec((0usize..2, any::<bool>(), 0u8..8), 0..80),
        ) {
            let mut wires: Vec<Vec<Vec<u8>>> = Vec::new();
            for (flow, port) in [40000u16, 40001].into_iter().enumerate() {
                let mut seq = 1u32;
                let mut wire = Vec::new();
                for (i, &size) in sizes.iter().enumerate() {
                    let flags = if (i + flow) % 3 == 0 { TCP_ACK | TCP_PSH } else { TCP_ACK };
                    let (f, o) = super_frame(port, seq, &payload(size + flow), mss, flags);
                    wire.extend(segments(&f, &o));
                    seq = seq.wrapping_add((size + flow) as u32);
                }
                wires.push(wire);
            }
            let mut next = [0usize; 2];
            let mut input = Vec::new();
            for (flow, repeat, corrupt) in order {
                let Some(s) = wires[flow].get(next[flow]) else { continue };
                let mut s = s.clone();
                if corrupt == 0 {
                    let last = s.len() - 1;
                    s[last] ^= 0x40;
                }
                input.push(s);
                if !repeat {
                    next[flow] += 1;
                }
            }
            for (flow, wire) in wires.iter().enumerate() {
                input.extend(wire[next[flow]..].iter().cloned());
            }
            let mut gro = Gro::default();
            let out = run(&mut gro, &input);
            for port in [40000u16, 40001] {
                let of = |v: &[Vec<u8>]| v.iter().filter(|s| get16(s, 34) == port).cloned().collect::<Vec<_>>();
                prop_assert_eq!(of(&out), of(&input));
            }
        }
    }
}
