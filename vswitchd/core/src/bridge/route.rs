//! The `route` action and the router's own addresses: a frame for the
//! gateway or an uplink address is answered or consumed here (ARP, ping);
//! a routed frame leaves through an uplink, or into the bridge's subnet
//! where the MAC table says, or waits for ARP. The router's state (ARP
//! cache, frames waiting) is [`crate::l3::router`]'s.

use super::*;

impl Bridge {
    /// A frame addressed to one of the router's addresses: ARP teaches the
    /// router a neighbour (releasing what waited for it); an ARP request
    /// or a ping is answered back out of the port it came in on. `Some`:
    /// the router consumed the frame (the number of frames sent).
    pub(super) fn for_router(
        &mut self,
        now: Timestamp,
        interface: &Interface,
        in_port: u16,
        frame: &[u8],
        l2: &L2Header,
        tx: &mut impl Transmit,
    ) -> Option<u16> {
        // The sender is where it is, as NORMAL would have learned.
        let input = self.ports[usize::from(in_port)].as_ref().expect("checked by receive");
        if let Some(vlan) = input.vlan.ingress(l2.outer_vlan().map(|t| t.vid())) {
            self.mac.learn(vlan, &l2.src, in_port, now);
        }
        let mut sent = 0;
        for (released, egress, offload) in self.router.learn_arp(now, frame, l2, in_port) {
            sent += self.send_routed(now, Packet { data: &released, offload }, egress, tx);
        }
        let mut reply = std::mem::take(&mut self.scratch);
        let answered = interface.address.answer(frame, l2, &mut reply);
        if answered {
            sent += u16::from(self.raw_output(in_port, &Packet::from(&reply[..]), tx));
        }
        self.scratch = reply;
        // ARP to the router ends here whether or not it needed an answer.
        (answered || l2.ether_type == 0x0806).then_some(sent)
    }

    /// Sends a routed frame: out of an uplink port, or into the bridge's
    /// subnet where the MAC table says (VLAN 0), flooding to every port
    /// but the uplinks while the destination is unknown.
    pub(super) fn send_routed(
        &mut self,
        now: Timestamp,
        packet: Packet,
        egress: Egress,
        tx: &mut impl Transmit,
    ) -> u16 {
        match egress {
            Egress::Port(port) => u16::from(self.raw_output(port, &packet, tx)),
            Egress::Bridge => {
                let Ok(l2) = L2Header::parse(packet.data) else { return 0 };
                if let Some(out) = self.mac.lookup(0, &l2.dst, now) {
                    return u16::from(self.output(out, 0, &packet, &l2, tx));
                }
                let mut sent = 0;
                for out in 1..self.ports.len() as u16 {
                    let uplink = self.router.interfaces().iter().any(|i| i.port == Some(out));
                    if !uplink && self.output(out, 0, &packet, &l2, tx) {
                        sent += 1;
                    }
                }
                sent
            }
        }
    }

    /// The `route` action on `packet`; `Ok(n)`: n frames sent (0: the
    /// frame waits for ARP).
    pub(super) fn route(
        &mut self,
        now: Timestamp,
        packet: &Packet,
        tx: &mut impl Transmit,
    ) -> Result<u16, DropReason> {
        // A reused buffer: the router takes it only when the frame waits.
        let mut routed = std::mem::take(&mut self.routed);
        routed.clear();
        routed.extend_from_slice(packet.data);
        let result = match self.router.route(now, &mut routed, packet.offload) {
            Routed::Send(egress) => {
                Ok(self.send_routed(now, Packet { data: &routed, offload: packet.offload }, egress, tx))
            }
            Routed::SendAndAsk { egress, request } => {
                let sent =
                    self.send_routed(now, Packet { data: &routed, offload: packet.offload }, egress, tx);
                self.send_routed(now, Packet::from(&request[..]), egress, tx);
                Ok(sent)
            }
            Routed::Resolving { request, egress } => {
                self.send_routed(now, Packet::from(&request[..]), egress, tx);
                Ok(0)
            }
            Routed::Waiting => Ok(0),
            Routed::NoRoute => Err(DropReason::NoRoute),
            Routed::TtlExpired => Err(DropReason::TtlExpired),
        };
        self.routed = routed;
        result
    }
}
