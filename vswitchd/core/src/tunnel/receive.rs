//! Tunnel receive without I/O: what an endpoint's socket handed over, turned
//! into inner frames on the ports they belong to. The daemon reads the
//! socket (one per endpoint, serving every tunnel port of that endpoint, in
//! any bridge) and gives each message here as a [`Received`]; this module
//! decapsulates, finds the port ([`TunnelMap::find`]), and merges the TCP
//! segments of one flow back into large frames ([`Gro`]), so that local
//! ports get from a remote host the 64 KiB frames they get from a local one.
//!
//! A VXLAN message is either one datagram, or several of `segment` bytes
//! each that the kernel coalesced (UDP_GRO), or one tunnel packet a local
//! VXLAN device built around a TSO frame (the kernel gives its MSS as the
//! segment size, or nothing): [`gro::tunnel_super_frame`] tells the last
//! kind, which is delivered whole with an offload header. A GRE message is
//! a whole IPv4 packet.
//!
//! Order: a flow's segments are never reordered (a segment that does not
//! merge first flushes what is held for its flow), and everything held is
//! delivered at the end of the call, so nothing waits past the batch it
//! came in. Drops are the caller's to count, by [`TunnelDrop`].
//!
//! Costs: one pass over each merged payload to check its checksum and one
//! copy into the merged frame; frames that pass are not copied. Owned by
//! the thread that receives; plain data.

use std::net::Ipv4Addr;

use super::gro::{self, Gro, Verdict};
use super::{decap_gre_packet, decap_vxlan, Decapsulated, TunnelDrop, TunnelKind, TunnelMap, TunnelMeta};
use crate::bridge::Packet;
use crate::offload::Offload;

/// One message from a tunnel socket.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    /// The outer source and destination addresses.
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// A UDP payload (VXLAN) or a whole IPv4 packet (GRE).
    pub payload: &'a [u8],
    /// With UDP_GRO: the size of the datagrams coalesced into `payload`,
    /// or a super-frame's MSS.
    pub segment: Option<usize>,
}

/// Where the frames of a tunnel go.
pub trait TunnelDelivery<P> {
    /// `packet` came in on `port`, with `meta` (key, outer addresses).
    fn deliver(&mut self, port: &P, meta: &TunnelMeta, packet: Packet<'_>);
    /// A message or datagram belonged to no port, or did not decapsulate.
    fn dropped(&mut self, reason: TunnelDrop);
}

/// The receive side of a tunnel endpoint: software GRO and what its merged
/// frames belong to. One per receiving thread serves every endpoint.
pub struct TunnelReceiver<P> {
    gro: Gro,
    /// The (port, metadata) each GRO tag of the current call stands for.
    origins: Vec<(P, TunnelMeta)>,
}

impl<P> Default for TunnelReceiver<P> {
    fn default() -> Self {
        TunnelReceiver { gro: Gro::default(), origins: Vec::new() }
    }
}

impl<P: Clone + PartialEq> TunnelReceiver<P> {
    /// Decapsulates `messages` of a `kind` endpoint whose ports are `map`,
    /// and delivers every inner frame, merged where it can be, to `out`.
    pub fn receive<'a>(
        &mut self,
        kind: TunnelKind,
        map: &TunnelMap<P>,
        messages: impl IntoIterator<Item = Received<'a>>,
        out: &mut impl TunnelDelivery<P>,
    ) {
        self.origins.clear();
        for message in messages {
            let whole = match kind {
                TunnelKind::Vxlan => decap_vxlan(message.payload)
                    .ok()
                    .and_then(|(_, inner)| gro::tunnel_super_frame(inner, message.segment)),
                TunnelKind::Gre => None,
            };
            let size = if whole.is_some() {
                message.payload.len()
            } else {
                message.segment.unwrap_or(message.payload.len())
            };
            for datagram in message.payload.chunks(size.max(1)) {
                let decapsulated = match kind {
                    TunnelKind::Vxlan => decap_vxlan(datagram).map(|(vni, inner)| Decapsulated {
                        kind,
                        src: message.src,
                        dst: message.dst,
                        key: Some(vni),
                        inner,
                    }),
                    TunnelKind::Gre => decap_gre_packet(datagram),
                };
                let found = decapsulated.and_then(|d| map.find(d.src, d.key).map(|(_, port)| (d, port)));
                let (packet, port) = match found {
                    Ok(found) => found,
                    Err(drop) => {
                        out.dropped(drop);
                        continue;
                    }
                };
                let meta = packet.meta();
                let tag = self.tag(port, meta);
                if let Some(offload) = whole {
                    self.gro.flush_flow_of(tag, packet.inner);
                    self.deliver_ready(out);
                    out.deliver(port, &meta, Packet { data: packet.inner, offload });
                    continue;
                }
                let verdict = self.gro.push(tag, packet.inner);
                self.deliver_ready(out);
                if verdict == Verdict::Pass {
                    let offload = gro::partial_checksum(packet.inner).unwrap_or(Offload::NONE);
                    out.deliver(port, &meta, Packet { data: packet.inner, offload });
                }
            }
        }
        self.gro.flush_all();
        self.deliver_ready(out);
    }

    /// Segments merged into a frame held before them, for `dump-ports`.
    pub fn merged(&self) -> u64 {
        self.gro.merged
    }

    /// The GRO tag of frames from `port` with `meta`: frames of different
    /// ports or tunnel metadata are never merged.
    fn tag(&mut self, port: &P, meta: TunnelMeta) -> u64 {
        let found = self.origins.iter().position(|(p, m)| p == port && *m == meta);
        found.unwrap_or_else(|| {
            self.origins.push((port.clone(), meta));
            self.origins.len() - 1
        }) as u64
    }

    /// Delivers the frames GRO finished, each on the port it came in by.
    fn deliver_ready(&mut self, out: &mut impl TunnelDelivery<P>) {
        while let Some(ready) = self.gro.take_ready() {
            if let Some((port, meta)) = self.origins.get(ready.tag as usize) {
                out.deliver(port, meta, Packet { data: &ready.frame, offload: ready.offload });
            }
            self.gro.recycle(ready.frame);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::{finish, Gso};
    use crate::tunnel::{encap, TunnelConfig};

    /// What a delivery saw: (port, key, frame, offload) and drops.
    #[derive(Default)]
    struct Seen {
        frames: Vec<(&'static str, u64, Vec<u8>, Offload)>,
        drops: Vec<TunnelDrop>,
    }

    impl TunnelDelivery<&'static str> for Seen {
        fn deliver(&mut self, port: &&'static str, meta: &TunnelMeta, packet: Packet<'_>) {
            self.frames.push((port, meta.id, packet.data.to_vec(), packet.offload));
        }
        fn dropped(&mut self, reason: TunnelDrop) {
            self.drops.push(reason);
        }
    }

    const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);
    const LOCAL: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);

    fn port(kind: TunnelKind, key: &str) -> TunnelConfig {
        let options = [("remote_ip".to_owned(), REMOTE.to_string()), ("key".to_owned(), key.to_owned())];
        TunnelConfig::from_options(kind, &options.into_iter().collect()).unwrap()
    }

    fn vxlan_map() -> TunnelMap<&'static str> {
        let mut map = TunnelMap::default();
        map.insert(port(TunnelKind::Vxlan, "42"), "vx42");
        map.insert(port(TunnelKind::Vxlan, "7"), "vx7");
        map
    }

    /// A TCP/IPv4 frame of one flow, `payload` long, at sequence `seq`,
    /// its IP id counting up by one per 1000 bytes, as a sender's does.
    fn tcp_segment(seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([198, 18, 0, 1], [198, 18, 0, 2], 64)
            .tcp(40000, 5201, seq, 1000)
            .ack(1)
            .write(&mut out, payload)
            .unwrap();
        out[18..20].copy_from_slice(&((seq / 1000) as u16).to_be_bytes());
        out[24..26].copy_from_slice(&[0, 0]);
        let sum = crate::checksum::internet_checksum(&out[14..34]);
        out[24..26].copy_from_slice(&sum.to_be_bytes());
        out
    }

    /// The VXLAN datagram (UDP payload) carrying `inner` with `vni`.
    fn vxlan(vni: u32, inner: &[u8]) -> Vec<u8> {
        let config = port(TunnelKind::Vxlan, &vni.to_string());
        let meta = TunnelMeta { id: u64::from(vni), ..TunnelMeta::default() };
        let (_, header) = encap(&config, &meta).unwrap();
        [header.as_bytes(), inner].concat()
    }

    fn received(payload: &[u8], segment: Option<usize>) -> Received<'_> {
        Received { src: REMOTE, dst: LOCAL, payload, segment }
    }

    #[test]
    fn datagrams_go_to_the_port_of_their_key_and_strangers_are_dropped() {
        let (a, b) = (tcp_segment(1, b"to 42"), tcp_segment(1, b"to 7"));
        let (to_42, to_7, to_nobody) = (vxlan(42, &a), vxlan(7, &b), vxlan(9, &a));
        let mut seen = Seen::default();
        let mut receiver = TunnelReceiver::default();
        let messages = [received(&to_42, None), received(&to_7, None), received(&to_nobody, None)];
        receiver.receive(TunnelKind::Vxlan, &vxlan_map(), messages, &mut seen);
        let got: Vec<(&str, u64, &[u8])> = seen.frames.iter().map(|(p, k, f, _)| (*p, *k, &f[..])).collect();
        assert_eq!(got, vec![("vx42", 42, &a[..]), ("vx7", 7, &b[..])]);
        assert_eq!(seen.drops, vec![TunnelDrop::UnknownKey]);
    }

    #[test]
    fn coalesced_segments_of_one_flow_come_out_as_one_frame_that_cuts_back_into_them() {
        // Three full-sized segments, back to back as UDP_GRO hands them
        // over: every datagram the same size, given as `segment`.
        let payload: Vec<u8> = (0..3 * 1000).map(|i| (i % 251) as u8).collect();
        let segments: Vec<Vec<u8>> =
            payload.chunks(1000).enumerate().map(|(i, c)| tcp_segment(1 + 1000 * i as u32, c)).collect();
        let datagrams: Vec<Vec<u8>> = segments.iter().map(|s| vxlan(42, s)).collect();
        let coalesced = datagrams.concat();
        let mut seen = Seen::default();
        let mut receiver = TunnelReceiver::default();
        let message = received(&coalesced, Some(datagrams[0].len()));
        receiver.receive(TunnelKind::Vxlan, &vxlan_map(), [message], &mut seen);
        assert_eq!(seen.frames.len(), 1, "merged into one frame");
        let (port, _, frame, offload) = &seen.frames[0];
        assert_eq!((*port, offload.gso, offload.gso_size), ("vx42", Gso::TcpV4, 1000));
        assert_eq!(receiver.merged(), 2);
        let mut cut = Vec::new();
        finish(frame, offload, &mut |s| cut.push(s.to_vec())).unwrap();
        assert_eq!(cut, segments, "segmenting the merged frame gives back the segments");
    }

    #[test]
    fn a_truncated_datagram_among_good_ones_is_dropped_and_the_rest_delivered() {
        let frame = tcp_segment(1, b"fine");
        let good = vxlan(42, &frame);
        let short = &good[..6];
        let mut seen = Seen::default();
        let mut receiver = TunnelReceiver::default();
        let messages = [received(short, None), received(&good, None)];
        receiver.receive(TunnelKind::Vxlan, &vxlan_map(), messages, &mut seen);
        assert_eq!(seen.drops, vec![TunnelDrop::Truncated]);
        assert_eq!(seen.frames.len(), 1);
        assert_eq!(seen.frames[0].2, frame);
    }

    #[test]
    fn gre_packets_are_read_whole_and_keyed() {
        let inner = tcp_segment(1, b"over gre");
        let config = port(TunnelKind::Gre, "5");
        let (_, header) = encap(&config, &TunnelMeta { id: 5, ..TunnelMeta::default() }).unwrap();
        let mut packet = Vec::new();
        etherparse::PacketBuilder::ipv4(REMOTE.octets(), LOCAL.octets(), 64)
            .write(&mut packet, etherparse::IpNumber(47), &[header.as_bytes(), &inner[..]].concat())
            .unwrap();
        let mut map = TunnelMap::default();
        map.insert(config, "gre5");
        let mut seen = Seen::default();
        TunnelReceiver::default().receive(TunnelKind::Gre, &map, [received(&packet, None)], &mut seen);
        assert!(seen.drops.is_empty(), "{:?}", seen.drops);
        assert_eq!((seen.frames[0].0, seen.frames[0].1, &seen.frames[0].2), ("gre5", 5, &inner));
    }
}
