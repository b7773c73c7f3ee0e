//! One bridge: its ports, its MAC table, and NORMAL forwarding (what OVS's
//! `actions=NORMAL` does: an 802.1D learning switch with VLANs).
//!
//! For each received frame, in order:
//! 1. the L2 header is parsed; a cut-short header is a drop;
//! 2. frames to 01:80:c2:00:00:0x are dropped unless `forward-bpdu` is on;
//! 3. the input port's VLAN policy assigns the frame a VLAN or refuses it;
//! 4. a unicast source is learned on (VLAN, input port);
//! 5. a destination learned in that VLAN gets the frame; an unknown unicast,
//!    multicast or broadcast destination floods to every other port that
//!    carries the VLAN, in port-number order;
//! 6. each output port's policy decides the outer tag it leaves with.
//!
//! Costs: two hash lookups per frame (learn source, find destination), and a
//! copy only for a port whose tagging differs from the frame's. Counters are
//! plain integers: a bridge is owned by one thread.

use super::mac_learning::{MacTable, DEFAULT_AGING_SECS, DEFAULT_CAPACITY};
use super::offload::Offload;
use super::packet::{
    is_multicast, is_reserved_multicast, needs_retag, retag, FlowKey, L2Header, Malformation,
};
use super::vlan::PortVlan;
use super::{DropReason, Timestamp};

/// Where frames leave the core; the shell queues them per port and hands
/// each queue to its device once the batch is done.
pub trait Transmit {
    fn transmit(&mut self, port: u16, frame: &[u8], offload: &Offload);
}

/// A transmit sink that keeps every frame, for tests.
impl Transmit for Vec<(u16, Vec<u8>)> {
    fn transmit(&mut self, port: u16, frame: &[u8], _offload: &Offload) {
        self.push((port, frame.to_vec()));
    }
}

/// A received frame and what its device said about offloads.
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    pub data: &'a [u8],
    pub offload: Offload,
}

impl<'a> From<&'a [u8]> for Packet<'a> {
    fn from(data: &'a [u8]) -> Self {
        Packet { data, offload: Offload::NONE }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortCounters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Frames the port's device failed to send.
    pub tx_dropped: u64,
    pub drops: [u64; DropReason::COUNT],
    /// Frames forwarded although a header above L2 was malformed.
    pub malformed: [u64; Malformation::ALL.len()],
}

impl PortCounters {
    pub fn rx_dropped(&self) -> u64 {
        self.drops.iter().sum()
    }

    pub fn drop_count(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()]
    }
}

#[derive(Debug, Clone)]
pub struct BridgePort {
    pub name: String,
    pub vlan: PortVlan,
    pub counters: PortCounters,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgeSettings {
    pub forward_bpdu: bool,
    pub mac_table_size: usize,
    pub mac_aging_secs: u64,
}

impl Default for BridgeSettings {
    fn default() -> Self {
        BridgeSettings {
            forward_bpdu: false,
            mac_table_size: DEFAULT_CAPACITY,
            mac_aging_secs: DEFAULT_AGING_SECS,
        }
    }
}

/// What became of one received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Forwarded { outputs: u16 },
    Dropped(DropReason),
}

pub struct Bridge {
    /// Indexed by OpenFlow port number; 0 is never used.
    ports: Vec<Option<BridgePort>>,
    mac: MacTable,
    settings: BridgeSettings,
    /// Frames forwarded to at least one port.
    pub forwarded: u64,
    /// The key of the frame being switched, refilled per frame.
    key: FlowKey,
    scratch: Vec<u8>,
}

impl Default for Bridge {
    fn default() -> Self {
        Bridge::new(BridgeSettings::default())
    }
}

impl Bridge {
    pub fn new(settings: BridgeSettings) -> Bridge {
        Bridge {
            ports: Vec::new(),
            mac: MacTable::new(settings.mac_table_size, settings.mac_aging_secs),
            settings,
            forwarded: 0,
            key: FlowKey::default(),
            scratch: Vec::with_capacity(2048),
        }
    }

    pub fn settings(&self) -> BridgeSettings {
        self.settings
    }

    pub fn configure(&mut self, settings: BridgeSettings) {
        self.settings = settings;
        self.mac.set_limits(settings.mac_table_size, settings.mac_aging_secs);
    }

    /// Adds a port or updates its VLAN policy. A policy change forgets the
    /// MACs learned on the port, since they may now sit in another VLAN.
    pub fn set_port(&mut self, ofport: u16, name: &str, vlan: PortVlan) {
        let index = usize::from(ofport);
        if self.ports.len() <= index {
            self.ports.resize_with(index + 1, || None);
        }
        match &mut self.ports[index] {
            Some(port) => {
                if port.vlan != vlan {
                    port.vlan = vlan;
                    self.mac.flush_port(ofport);
                }
                if port.name != name {
                    port.name = name.to_owned();
                }
            }
            slot @ None => {
                *slot = Some(BridgePort { name: name.to_owned(), vlan, counters: PortCounters::default() });
            }
        }
    }

    pub fn remove_port(&mut self, ofport: u16) {
        if let Some(slot) = self.ports.get_mut(usize::from(ofport)) {
            *slot = None;
            self.mac.flush_port(ofport);
        }
    }

    pub fn port(&self, ofport: u16) -> Option<&BridgePort> {
        self.ports.get(usize::from(ofport))?.as_ref()
    }

    pub fn ports(&self) -> impl Iterator<Item = (u16, &BridgePort)> {
        self.ports.iter().enumerate().filter_map(|(i, p)| Some((i as u16, p.as_ref()?)))
    }

    pub fn mac_table(&self) -> &MacTable {
        &self.mac
    }

    pub fn flush_macs(&mut self) {
        self.mac.flush();
    }

    pub fn count_tx_dropped(&mut self, ofport: u16, frames: u64) {
        if let Some(Some(port)) = self.ports.get_mut(usize::from(ofport)) {
            port.counters.tx_dropped += frames;
        }
    }

    /// Switches a batch of frames received on `in_port`. Aging runs once per
    /// batch; lookups never use an aged entry in between.
    pub fn receive_batch<'a, P: Into<Packet<'a>>>(
        &mut self,
        now: Timestamp,
        in_port: u16,
        packets: impl IntoIterator<Item = P>,
        tx: &mut impl Transmit,
    ) {
        self.mac.expire(now);
        for packet in packets {
            self.receive(now, in_port, packet.into(), tx);
        }
    }

    /// Switches one frame. A frame for a port the bridge does not have is
    /// ignored: the shell only delivers frames from ports it configured.
    pub fn receive(
        &mut self,
        now: Timestamp,
        in_port: u16,
        packet: Packet,
        tx: &mut impl Transmit,
    ) -> Disposition {
        let Some(Some(input)) = self.ports.get_mut(usize::from(in_port)) else {
            return Disposition::Dropped(DropReason::NoDestination);
        };
        input.counters.rx_packets += 1;
        input.counters.rx_bytes += packet.data.len() as u64;
        let disposition = match self.normal(now, in_port, packet, tx) {
            Ok(outputs) => {
                self.forwarded += 1;
                Disposition::Forwarded { outputs }
            }
            Err(reason) => Disposition::Dropped(reason),
        };
        if let Disposition::Dropped(reason) = disposition {
            if let Some(Some(input)) = self.ports.get_mut(usize::from(in_port)) {
                input.counters.drops[reason.index()] += 1;
            }
        }
        disposition
    }

    fn normal(
        &mut self,
        now: Timestamp,
        in_port: u16,
        packet: Packet,
        tx: &mut impl Transmit,
    ) -> Result<u16, DropReason> {
        let l2 = self.key.extract_into(packet.data, in_port)?;
        let input = self.ports[usize::from(in_port)].as_mut().expect("checked by receive");
        if let Some(m) = self.key.malformed {
            input.counters.malformed[m as usize] += 1;
        }
        if !self.settings.forward_bpdu && is_reserved_multicast(&l2.dst) {
            return Err(DropReason::ReservedMulticast);
        }
        let vlan = input.vlan.ingress(l2.outer_vlan().map(|t| t.vid())).ok_or(DropReason::VlanNotAllowed)?;
        self.mac.learn(vlan, &l2.src, in_port, now);

        if !is_multicast(&l2.dst) {
            if let Some(out) = self.mac.lookup(vlan, &l2.dst, now) {
                if out == in_port {
                    return Err(DropReason::SamePort);
                }
                if self.output(out, vlan, &packet, &l2, tx) {
                    return Ok(1);
                }
            }
        }
        let mut outputs = 0;
        for out in 1..self.ports.len() as u16 {
            if out != in_port && self.output(out, vlan, &packet, &l2, tx) {
                outputs += 1;
            }
        }
        if outputs == 0 {
            return Err(DropReason::NoDestination);
        }
        Ok(outputs)
    }

    /// Sends the frame of `vlan` out of `port` if the port carries that
    /// VLAN, tagged as the port wants it.
    fn output(
        &mut self,
        port: u16,
        vlan: u16,
        packet: &Packet,
        l2: &L2Header,
        tx: &mut impl Transmit,
    ) -> bool {
        let Some(Some(out)) = self.ports.get_mut(usize::from(port)) else {
            return false;
        };
        if !out.vlan.carries(vlan) {
            return false;
        }
        let vid = out.vlan.egress(vlan);
        let mut offload = packet.offload;
        let bytes = if needs_retag(l2, vid) {
            retag(packet.data, l2, vid, &mut self.scratch);
            offload.shift(self.scratch.len() as i32 - packet.data.len() as i32);
            &self.scratch[..]
        } else {
            packet.data
        };
        out.counters.tx_packets += 1;
        out.counters.tx_bytes += bytes.len() as u64;
        tx.transmit(port, bytes, &offload);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::packet::Mac;
    use crate::core::vlan::VlanMode;

    const A: Mac = [0x02, 0, 0, 0, 0, 0xa];
    const B: Mac = [0x02, 0, 0, 0, 0, 0xb];
    const BROADCAST: Mac = [0xff; 6];

    fn frame(dst: Mac, src: Mac) -> Vec<u8> {
        let mut f = dst.to_vec();
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x08, 0x00]);
        f.resize(60, 0);
        f
    }

    fn tagged(dst: Mac, src: Mac, vid: u16) -> Vec<u8> {
        let mut f = frame(dst, src);
        f.splice(12..12, [0x81, 0x00, (vid >> 8) as u8, vid as u8]);
        f
    }

    fn bridge_with(ports: &[PortVlan]) -> Bridge {
        let mut br = Bridge::default();
        for (i, vlan) in ports.iter().enumerate() {
            br.set_port(i as u16 + 1, &format!("p{}", i + 1), vlan.clone());
        }
        br
    }

    fn send(br: &mut Bridge, now: u64, port: u16, f: &[u8]) -> Vec<(u16, Vec<u8>)> {
        let mut out = Vec::new();
        br.receive_batch(Timestamp::from_millis(now), port, [f], &mut out);
        out
    }

    fn ports_of(out: &[(u16, Vec<u8>)]) -> Vec<u16> {
        out.iter().map(|(p, _)| *p).collect()
    }

    #[test]
    fn floods_unknown_then_forwards_learned() {
        let mut br = bridge_with(&[PortVlan::default(), PortVlan::default(), PortVlan::default()]);
        assert_eq!(ports_of(&send(&mut br, 0, 1, &frame(B, A))), vec![2, 3]);
        assert_eq!(ports_of(&send(&mut br, 1, 2, &frame(A, B))), vec![1]);
        assert_eq!(ports_of(&send(&mut br, 2, 1, &frame(B, A))), vec![2]);
        assert_eq!(br.forwarded, 3);
    }

    #[test]
    fn learned_entries_age_out_to_flooding() {
        let mut br = bridge_with(&[PortVlan::default(), PortVlan::default(), PortVlan::default()]);
        send(&mut br, 0, 2, &frame(BROADCAST, B));
        assert_eq!(ports_of(&send(&mut br, 299_999, 1, &frame(B, A))), vec![2]);
        assert_eq!(ports_of(&send(&mut br, 300_000, 3, &frame(B, A))), vec![1, 2]);
    }

    #[test]
    fn drops_are_counted_by_reason() {
        let mut br = bridge_with(&[PortVlan::new(Some(10), &[], None), PortVlan::default()]);
        send(&mut br, 0, 1, &[0; 10]);
        send(&mut br, 0, 1, &frame([0x01, 0x80, 0xc2, 0, 0, 0], A));
        send(&mut br, 0, 1, &tagged(B, A, 10));
        send(&mut br, 0, 2, &frame(B, A));
        let c = &br.port(1).unwrap().counters;
        assert_eq!(c.rx_packets, 3);
        assert_eq!(c.drop_count(DropReason::Runt), 1);
        assert_eq!(c.drop_count(DropReason::ReservedMulticast), 1);
        assert_eq!(c.drop_count(DropReason::VlanNotAllowed), 1);
        // Port 2 is a trunk that carries VLAN 0, which no other port does.
        assert_eq!(br.port(2).unwrap().counters.drop_count(DropReason::NoDestination), 1);
    }

    #[test]
    fn destination_on_the_input_port_is_dropped() {
        let mut br = bridge_with(&[PortVlan::default(), PortVlan::default()]);
        send(&mut br, 0, 1, &frame(BROADCAST, B));
        assert!(send(&mut br, 0, 1, &frame(B, A)).is_empty());
        assert_eq!(br.port(1).unwrap().counters.drop_count(DropReason::SamePort), 1);
    }

    #[test]
    fn access_to_trunk_tags_and_back_untags() {
        let trunk = PortVlan::new(None, &[10, 20], Some(VlanMode::Trunk));
        let mut br =
            bridge_with(&[PortVlan::new(Some(10), &[], None), PortVlan::new(Some(20), &[], None), trunk]);
        let out = send(&mut br, 0, 1, &frame(B, A));
        assert_eq!(out, vec![(3, tagged(B, A, 10))]);
        let out = send(&mut br, 0, 3, &tagged(A, B, 10));
        assert_eq!(out, vec![(1, frame(A, B))]);
        let out = send(&mut br, 0, 3, &tagged(A, B, 20));
        assert_eq!(out, vec![(2, frame(A, B))]);
    }

    #[test]
    fn forward_bpdu_lets_reserved_multicast_through() {
        let mut br = bridge_with(&[PortVlan::default(), PortVlan::default()]);
        br.configure(BridgeSettings { forward_bpdu: true, ..BridgeSettings::default() });
        assert_eq!(ports_of(&send(&mut br, 0, 1, &frame([0x01, 0x80, 0xc2, 0, 0, 0], A))), vec![2]);
    }

    #[test]
    fn vlan_change_forgets_the_ports_macs() {
        let mut br = bridge_with(&[PortVlan::default(), PortVlan::default(), PortVlan::default()]);
        send(&mut br, 0, 2, &frame(BROADCAST, B));
        br.set_port(2, "p2", PortVlan::new(Some(0), &[], Some(VlanMode::Access)));
        assert_eq!(ports_of(&send(&mut br, 0, 1, &frame(B, A))), vec![2, 3]);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn vlan_policy() -> impl Strategy<Value = PortVlan> {
            (proptest::option::of(0u16..8), proptest::collection::vec(0u16..8, 0..3), 0u8..5).prop_map(
                |(tag, trunks, mode)| {
                    let mode =
                        [None, Some(VlanMode::Access), Some(VlanMode::Trunk), Some(VlanMode::NativeTagged)]
                            .get(usize::from(mode))
                            .copied()
                            .flatten();
                    PortVlan::new(tag, &trunks, mode)
                },
            )
        }

        /// Frames that are mostly well-formed Ethernet with few MACs (so
        /// learning and lookups hit), tags and IP, and sometimes garbage.
        fn frame() -> impl Strategy<Value = Vec<u8>> {
            let mac = (0u8..4, any::<bool>()).prop_map(|(n, multicast)| [u8::from(multicast), 0, 0, 0, 0, n]);
            let tag = proptest::option::of((prop_oneof![Just(0x8100u16), Just(0x88a8)], 0u16..8));
            let tail = proptest::collection::vec(any::<u8>(), 0..80);
            prop_oneof![
                (mac.clone(), mac, tag, tail).prop_map(|(dst, src, tag, tail)| {
                    let mut f = dst.to_vec();
                    f.extend_from_slice(&src);
                    if let Some((tpid, vid)) = tag {
                        f.extend_from_slice(&tpid.to_be_bytes());
                        f.extend_from_slice(&vid.to_be_bytes());
                    }
                    f.extend_from_slice(&[0x08, 0x00]);
                    f.extend_from_slice(&tail);
                    f
                }),
                proptest::collection::vec(any::<u8>(), 0..40),
            ]
        }

        proptest! {
            #[test]
            fn every_frame_is_forwarded_or_counted(
                policies in proptest::collection::vec(vlan_policy(), 1..5),
                traffic in proptest::collection::vec((0u16..6, frame(), 0u64..400_000), 1..64),
            ) {
                let mut br = bridge_with(&policies);
                let mut out = Vec::new();
                let mut now = 0;
                let mut received = 0;
                for (port, f, dt) in &traffic {
                    now += dt;
                    let port = port % policies.len() as u16 + 1;
                    let before = out.len();
                    br.receive_batch(Timestamp::from_millis(now), port, [f.as_slice()], &mut out);
                    received += 1;
                    prop_assert!(out[before..].iter().all(|(p, _)| *p != port), "a frame went back out of port {}", port);
                }
                let dropped: u64 = br.ports().map(|(_, p)| p.counters.rx_dropped()).sum();
                prop_assert_eq!(br.forwarded + dropped, received);
                let tx: u64 = br.ports().map(|(_, p)| p.counters.tx_packets).sum();
                prop_assert_eq!(tx, out.len() as u64);
                prop_assert!(br.mac_table().len() <= br.mac_table().capacity());
            }
        }
    }
}
