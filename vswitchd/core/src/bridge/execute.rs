//! Carrying out a decision: the datapath actions a cached or translated
//! decision holds, in order, on the frame or on its private copy once an
//! action rewrites it (made at the first rewrite, so frames that are only
//! forwarded are never copied). `ct` sends the packet through the
//! connection tracker and, with `table=`, back through the tables
//! (recirculation, bounded by `MAX_RECIRCULATIONS`). What a frame became
//! is counted by the caller: forwarded to at least one port, parked
//! waiting for ARP, or dropped for one [`DropReason`].

use super::*;

impl Bridge {
    pub(super) fn execute(
        &mut self,
        origin: Origin,
        packet: Packet,
        l2: &L2Header,
        actions: &[DpAction],
        tx: &mut impl Transmit,
    ) -> Result<u16, DropReason> {
        let Origin { now, in_port, .. } = origin;
        if actions.is_empty() {
            return Err(DropReason::FlowDrop);
        }
        // The header of the rewritten copy, once there is one. `l2` is only
        // ever borrowed: copying it whole right after it was built stalled
        // store forwarding on every packet.
        let mut reparsed: Option<L2Header> = None;
        let mut copy: Option<Vec<u8>> = None;
        let mut offload = packet.offload;
        let mut outputs = 0;
        // A routed frame waiting for ARP was neither sent nor dropped.
        let mut parked = false;
        let mut normal_drop = None;
        for action in actions {
            let current = Packet { data: copy.as_deref().unwrap_or(packet.data), offload };
            match action {
                // Tunnel metadata is what tunnel ports send with; nothing
                // in the frame changes.
                DpAction::SetField(Field::TunId, id) => self.tunnel.id = *id,
                DpAction::SetField(Field::TunSrc, ip) => self.tunnel.src = *ip as u32,
                DpAction::SetField(Field::TunDst, ip) => self.tunnel.dst = *ip as u32,
                DpAction::SetField(field, _) if !field.in_frame() => {}
                DpAction::SetField(field, value) => {
                    let frame = own_copy(&mut copy, &mut self.rewritten, packet.data);
                    // A rewrite that does not apply (mod_nw_src on ARP) is
                    // skipped, as OVS skips actions whose prerequisites fail.
                    if rewrite::set_field(frame, &mut offload, *field, *value).is_ok() {
                        reparsed = L2Header::parse(frame).ok();
                    }
                }
                DpAction::Output(port) if *port != in_port => {
                    outputs += u16::from(self.raw_output(*port, &current, tx))
                }
                DpAction::Output(_) => {}
                DpAction::InPort => outputs += u16::from(self.raw_output(in_port, &current, tx)),
                DpAction::Flood | DpAction::All => {
                    for port in 1..self.ports.len() as u16 {
                        if port != in_port {
                            outputs += u16::from(self.raw_output(port, &current, tx));
                        }
                    }
                }
                DpAction::Route => match self.route(now, &current, tx) {
                    Ok(n) => {
                        outputs += n;
                        parked |= n == 0;
                    }
                    Err(reason) => normal_drop = Some(reason),
                },
                DpAction::Normal => {
                    match self.normal(now, in_port, &current, reparsed.as_ref().unwrap_or(l2), tx) {
                        Ok(n) => outputs += n,
                        Err(reason) => normal_drop = Some(reason),
                    }
                }
                DpAction::DecTtl => {
                    let frame = own_copy(&mut copy, &mut self.rewritten, packet.data);
                    if rewrite::dec_ttl(frame) == Ok(false) {
                        self.rewritten = copy.unwrap_or_default();
                        // What was already sent stays sent; the rest is dropped.
                        return if outputs > 0 { Ok(outputs) } else { Err(DropReason::TtlExpired) };
                    }
                }
                DpAction::PushVlan(tpid) => {
                    let frame = own_copy(&mut copy, &mut self.rewritten, packet.data);
                    if rewrite::push_vlan(frame, &mut offload, *tpid).is_ok() {
                        reparsed = L2Header::parse(frame).ok();
                    }
                }
                DpAction::Ct { request, table } => {
                    let frame = own_copy(&mut copy, &mut self.rewritten, packet.data);
                    match self.ct(origin, frame, &mut offload, request, *table, tx) {
                        CtOutcome::Refused(reason) => {
                            self.rewritten = copy.unwrap_or_default();
                            return if outputs > 0 { Ok(outputs) } else { Err(reason) };
                        }
                        CtOutcome::Continue(sent, drop) => {
                            outputs += sent;
                            normal_drop = drop.or(normal_drop);
                        }
                        CtOutcome::Parked => parked = true,
                    }
                    reparsed = copy.as_deref().and_then(|f| L2Header::parse(f).ok());
                }
            }
        }
        if let Some(frame) = copy {
            self.rewritten = frame;
        }
        if outputs == 0 && parked {
            return Ok(0);
        }
        if outputs == 0 {
            return Err(normal_drop.unwrap_or(DropReason::FlowDrop));
        }
        Ok(outputs)
    }

    /// The `ct` action on `frame` (the packet's private copy, which NAT
    /// may rewrite); with `table`, the packet then goes through the tables
    /// again from there (recirculation). Out of line: it recurses, and it
    /// would keep `execute`, which every frame runs, from being inlined.
    #[inline(never)]
    pub(super) fn ct(
        &mut self,
        origin: Origin,
        frame: &mut Vec<u8>,
        offload: &mut Offload,
        request: &CtRequest,
        table: Option<u8>,
        tx: &mut impl Transmit,
    ) -> CtOutcome {
        let result = self.conntrack.execute(origin.now, frame, offload, request);
        if let Some(refused) = result.drop {
            return CtOutcome::Refused(match refused {
                CtDrop::TableFull => DropReason::CtTableFull,
                CtDrop::NatExhausted => DropReason::NatExhausted,
            });
        }
        let Some(table) = table else { return CtOutcome::Continue(0, None) };
        if origin.recirculations >= MAX_RECIRCULATIONS {
            return CtOutcome::Continue(0, Some(DropReason::RecirculationLimit));
        }
        // The packet as conntrack left it goes on from `table`.
        let mut key = FlowKey::default();
        let Ok(header) = key.extract_into(frame, origin.in_port) else { return CtOutcome::Continue(0, None) };
        Field::CtState.set(&mut key.words, result.state.into());
        Field::CtZone.set(&mut key.words, result.zone.into());
        Field::CtMark.set(&mut key.words, result.mark.into());
        Field::Recirc.set(&mut key.words, u64::from(table) + 1);
        self.tunnel.store(&mut key.words);
        let decided = self.cache.decide(&self.tables, &key.words);
        decided.hit(frame.len() as u64, origin.now);
        let recirculated = Packet { data: frame, offload: *offload };
        let origin = Origin { recirculations: origin.recirculations + 1, ..origin };
        match self.execute(origin, recirculated, &header, &decided.actions, tx) {
            // `execute` sends nothing without an error only when the
            // frame waits for ARP.
            Ok(0) => CtOutcome::Parked,
            Ok(sent) => CtOutcome::Continue(sent, None),
            Err(reason) => CtOutcome::Continue(0, Some(reason)),
        }
    }

    /// Sends the frame as it is, with no VLAN policy: what `output:PORT`
    /// and `FLOOD` do in OpenFlow.
    pub(super) fn raw_output(&mut self, port: u16, packet: &Packet, tx: &mut impl Transmit) -> bool {
        let Some(Some(out)) = self.ports.get_mut(usize::from(port)) else {
            return false;
        };
        out.counters.tx_packets += 1;
        out.counters.tx_bytes += packet.data.len() as u64;
        if out.tunnel {
            tx.transmit_tunneled(port, packet.data, &packet.offload, &self.tunnel);
        } else {
            tx.transmit(port, packet.data, &packet.offload);
        }
        true
    }
}
