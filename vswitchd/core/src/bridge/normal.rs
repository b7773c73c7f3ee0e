//! NORMAL: what OVS's `actions=NORMAL` does, an 802.1D learning switch with
//! VLANs. For each frame, in order:
//! 1. frames to 01:80:c2:00:00:0x are dropped unless `forward-bpdu` is on;
//! 2. the input port's VLAN policy assigns the frame a VLAN or refuses it;
//! 3. a unicast source is learned on (VLAN, input port), unless it is an
//!    overlay's remote endpoint (static);
//! 4. a destination known in that VLAN gets the frame; an unknown unicast,
//!    multicast or broadcast destination floods to every other port that
//!    carries the VLAN, in port-number order (isolated ports skip each
//!    other);
//! 5. each output port's policy decides the outer tag it leaves with.
//!
//! Costs: two hash lookups per frame (learn source, find destination), and
//! a copy only for a port whose tagging differs from the frame's.
//!
//! Runs on the thread that owns the bridge, like the rest of it (a bridge
//! is not `Send`); the MAC table it learns into is the bridge's own.

use super::*;

impl Bridge {
    /// NORMAL: the learning L2 switch with VLANs.
    pub(super) fn normal(
        &mut self,
        now: Timestamp,
        in_port: u16,
        packet: &Packet,
        l2: &L2Header,
        tx: &mut impl Transmit,
    ) -> Result<u16, DropReason> {
        let input = self.ports[usize::from(in_port)].as_ref().expect("checked by receive");
        if !self.settings.forward_bpdu && is_reserved_multicast(&l2.dst) {
            return Err(DropReason::ReservedMulticast);
        }
        let vlan = input.vlan.ingress(l2.outer_vlan().map(|t| t.vid())).ok_or(DropReason::VlanNotAllowed)?;
        let isolated = input.isolated;
        let pinned = !self.remote.macs.is_empty() && vlan == 0 && self.remote.macs.contains_key(&l2.src);
        if !pinned {
            self.mac.learn(vlan, &l2.src, in_port, now);
        }
        // An isolated port's frames skip the other isolated ports.
        let blocked = |ports: &[Option<BridgePort>], out: u16| {
            isolated && ports[usize::from(out)].as_ref().is_some_and(|p| p.isolated)
        };

        if !is_multicast(&l2.dst) {
            let remote = if self.remote.macs.is_empty() || vlan != 0 {
                None
            } else {
                self.remote.macs.get(&l2.dst).copied()
            };
            if let Some(out) = remote.or_else(|| self.mac.lookup(vlan, &l2.dst, now)) {
                if out == in_port {
                    return Err(DropReason::SamePort);
                }
                if blocked(&self.ports, out) {
                    return Err(DropReason::Isolated);
                }
                if self.output(out, vlan, packet, l2, tx) {
                    return Ok(1);
                }
            }
        }
        let (mut outputs, mut skipped) = (0, 0);
        for out in 1..self.ports.len() as u16 {
            if out == in_port {
                continue;
            }
            if blocked(&self.ports, out) {
                skipped += 1;
            } else if self.output(out, vlan, packet, l2, tx) {
                outputs += 1;
            }
        }
        match (outputs, skipped) {
            (0, 0) => Err(DropReason::NoDestination),
            (0, _) => Err(DropReason::Isolated),
            _ => Ok(outputs),
        }
    }

    /// Sends the frame of `vlan` out of `port` if the port carries that
    /// VLAN, tagged as the port wants it.
    pub(super) fn output(
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
        if out.tunnel {
            tx.transmit_tunneled(port, bytes, &offload, &self.tunnel);
        } else {
            tx.transmit(port, bytes, &offload);
        }
        true
    }
}
