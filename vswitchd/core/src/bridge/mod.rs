//! One bridge, assembled from the layers: its ports and their counters,
//! its flow tables (`ofproto`) and their bookkeeping (`dump-flows`,
//! timeouts), the fast-path cache in front of them (`dpif`), its MAC table
//! and VLANs (`l2`), its gateway and router (`l3`), its connection tracker
//! and the tunnel metadata of the frame being switched. As OVS's
//! `ofproto-dpif` does for a bridge.
//!
//! Per received frame ([`Bridge::receive_batch`]): the L2 header and the
//! flow key are parsed (a malformed frame is a counted drop); while the
//! bridge has only its default NORMAL flow the tables are skipped;
//! otherwise the cache, or on a miss translation, gives a decision, which
//! `execute.rs` carries out; NORMAL is `normal.rs`, routing `route.rs`.
//!
//! Counters are plain integers: a bridge is owned by one thread (it is not
//! `Send`: its cache shares decisions as `Rc`s).

mod execute;
mod normal;
mod route;

use std::collections::HashMap;

use super::conntrack::{Conntrack, CtDrop, CtRequest};
use super::offload::Offload;
use super::packet::{
    is_multicast, is_reserved_multicast, needs_retag, retag, FlowKey, L2Header, Mac, Malformation,
};
use super::rewrite;
use super::tunnel::TunnelMeta;
use super::{DropReason, Timestamp};
use crate::dpif::megaflow::MegaflowCache;
use crate::l2::mac_learning::{MacTable, DEFAULT_AGING_SECS, DEFAULT_CAPACITY};
use crate::l2::vlan::PortVlan;
use crate::l3::gateway::Gateway;
use crate::l3::router::{Egress, Interface, Routed, Router};
use crate::ofproto::actions::{Action, DpAction};
use crate::ofproto::classifier::{RuleId, Tables};
use crate::ofproto::flow::{format_masked, Field, Words};
use crate::ofproto::ofctl::FlowSpec;

/// Where frames leave the core; the shell queues them per port and hands
/// each queue to its device once the batch is done.
pub trait Transmit {
    fn transmit(&mut self, port: u16, frame: &[u8], offload: &Offload);

    /// A frame for a tunnel port, with the tunnel metadata its
    /// encapsulation may take the key and remote end from.
    fn transmit_tunneled(&mut self, port: u16, frame: &[u8], offload: &Offload, tunnel: &TunnelMeta) {
        let _ = tunnel;
        self.transmit(port, frame, offload);
    }
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
    /// Isolated ports never reach each other through NORMAL.
    pub isolated: bool,
    /// A tunnel port: frames leave it with their tunnel metadata.
    pub tunnel: bool,
    pub counters: PortCounters,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgeSettings {
    pub forward_bpdu: bool,
    pub mac_table_size: usize,
    pub mac_aging_secs: u64,
    /// The connection table's limit (`other_config:ct-max`).
    pub ct_max: usize,
    /// The address the switch answers ARP and ping for (`gateway=CIDR`).
    pub gateway: Option<Gateway>,
}

impl Default for BridgeSettings {
    fn default() -> Self {
        BridgeSettings {
            forward_bpdu: false,
            mac_table_size: DEFAULT_CAPACITY,
            mac_aging_secs: DEFAULT_AGING_SECS,
            ct_max: crate::conntrack::DEFAULT_LIMIT,
            gateway: None,
        }
    }
}

/// What became of one received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Forwarded { outputs: u16 },
    Dropped(DropReason),
}

/// A flow's bookkeeping beside its rule: what `dump-flows` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowEntry {
    pub spec: FlowSpec,
    pub packets: u64,
    pub bytes: u64,
    pub created: Timestamp,
    pub last_used: Timestamp,
}

/// Looked up per frame for its counters: a fast hasher.
type FlowEntries = HashMap<RuleId, FlowEntry, foldhash::fast::RandomState>;

/// What actions run on behalf of: when and where the frame arrived, and
/// how many times it has gone back through the tables.
#[derive(Debug, Clone, Copy)]
struct Origin {
    now: Timestamp,
    in_port: u16,
    recirculations: usize,
}

/// What became of a packet at a `ct` action.
enum CtOutcome {
    /// Conntrack refused it (table full, NAT exhausted): the packet stops.
    Refused(DropReason),
    /// Frames the recirculated pass sent, and why it dropped, if it did;
    /// the action list goes on either way.
    Continue(u16, Option<DropReason>),
    /// The recirculated pass left the packet waiting for ARP: neither sent
    /// nor dropped (yet); the action list goes on.
    Parked,
}

/// How many times a packet may go back through the tables after
/// `ct(table=...)` (OVS allows a few; more is a loop in the flows).
const MAX_RECIRCULATIONS: usize = 4;

/// How often, in datapath time, flows are checked for timeouts.
const FLOW_EXPIRY_EVERY_MS: u64 = 1000;

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
    tables: Tables,
    cache: MegaflowCache,
    flows: FlowEntries,
    /// Each flow by (table, priority, match): OpenFlow allows one per place.
    by_place: HashMap<(u8, u16, crate::ofproto::flow::Match), RuleId, foldhash::fast::RandomState>,
    /// The `priority=0,actions=NORMAL` rule every bridge starts with, while
    /// it exists; when it is the only rule, frames skip the tables.
    default_rule: Option<RuleId>,
    /// The default flow's counters since they were last folded into its
    /// entry: kept in plain fields so the direct path does no lookup.
    default_pending: (u64, u64, Timestamp),
    next_flow_expiry: u64,
    /// Reused per frame: a rewritten copy of the frame.
    rewritten: Vec<u8>,
    conntrack: Conntrack,
    router: Router,
    /// Reused per routed frame: its rewritten copy.
    routed: Vec<u8>,
    /// Uplink ports' addresses and next hops (`set port P ip= nexthop=`).
    port_addresses: std::collections::BTreeMap<u16, (Gateway, Option<u32>)>,
    /// The tunnel metadata of the frame being switched, as received and
    /// then as `set_tunnel`/`set_field` leave it: what tunnel ports send with.
    tunnel: TunnelMeta,
    remote: RemoteEndpoints,
}

/// An overlay's endpoints on other hosts, which the cluster store
/// announced: their MACs (in VLAN 0) point at their host's tunnel port and
/// neither age nor move. (ARP for their addresses is answered by flows.)
/// Empty on every other bridge, where it costs one branch per frame.
#[derive(Debug, Default)]
struct RemoteEndpoints {
    macs: HashMap<Mac, u16, foldhash::fast::RandomState>,
}

impl Default for Bridge {
    fn default() -> Self {
        Bridge::new(BridgeSettings::default())
    }
}

/// Rewrites work on a private copy of the frame, made at the first one in
/// `spare`'s buffer (taken, so frames that are not rewritten cost nothing).
fn own_copy<'a>(copy: &'a mut Option<Vec<u8>>, spare: &mut Vec<u8>, original: &[u8]) -> &'a mut Vec<u8> {
    copy.get_or_insert_with(|| {
        let mut frame = std::mem::take(spare);
        frame.clear();
        frame.extend_from_slice(original);
        frame
    })
}

impl Bridge {
    pub fn new(settings: BridgeSettings) -> Bridge {
        let mut bridge = Bridge {
            ports: Vec::new(),
            mac: MacTable::new(settings.mac_table_size, settings.mac_aging_secs),
            settings,
            forwarded: 0,
            key: FlowKey::default(),
            scratch: Vec::with_capacity(2048),
            tables: Tables::default(),
            cache: MegaflowCache::default(),
            flows: FlowEntries::default(),
            by_place: HashMap::default(),
            default_rule: None,
            default_pending: (0, 0, Timestamp::default()),
            next_flow_expiry: 0,
            remote: RemoteEndpoints::default(),
            rewritten: Vec::new(),
            conntrack: Conntrack::new(settings.ct_max),
            router: Router::default(),
            routed: Vec::new(),
            port_addresses: Default::default(),
            tunnel: TunnelMeta::default(),
        };
        let normal = FlowSpec {
            table: 0,
            priority: 0,
            cookie: 0,
            cookie_mask: 0,
            idle_timeout: 0,
            hard_timeout: 0,
            matcher: Default::default(),
            actions: vec![Action::Normal],
            text: "actions=NORMAL".into(),
        };
        bridge.default_rule = Some(bridge.add_flow(normal, Timestamp::default()));
        bridge.update_router();
        bridge
    }

    /// Adds a flow; an existing flow with the same table, priority and
    /// match is replaced (its counters start over), as OpenFlow's add does.
    pub fn add_flow(&mut self, spec: FlowSpec, now: Timestamp) -> RuleId {
        self.fold_counters();
        let place = (spec.table, spec.priority, spec.matcher.clone());
        if let Some(existing) = self.by_place.get(&place).copied() {
            self.remove_flow(existing);
        }
        let id = self.tables.add(spec.table, spec.priority, spec.matcher.clone(), spec.actions.clone());
        self.by_place.insert(place, id);
        self.flows.insert(id, FlowEntry { spec, packets: 0, bytes: 0, created: now, last_used: now });
        id
    }

    pub fn remove_flow(&mut self, id: RuleId) -> Option<FlowEntry> {
        self.fold_counters();
        self.tables.remove(id)?;
        if self.default_rule == Some(id) {
            self.default_rule = None;
        }
        let entry = self.flows.remove(&id)?;
        self.by_place.remove(&(entry.spec.table, entry.spec.priority, entry.spec.matcher.clone()));
        Some(entry)
    }

    /// Credits the rules with what the caches counted for them.
    fn fold_counters(&mut self) {
        let (packets, bytes, last) = std::mem::take(&mut self.default_pending);
        if packets > 0 {
            if let Some(id) = self.default_rule {
                Self::credit(&mut self.flows, id, packets, bytes, last);
            }
        }
        let flows = &mut self.flows;
        self.cache.fold(|id, packets, bytes, last| Self::credit(flows, id, packets, bytes, last));
    }

    fn credit(flows: &mut FlowEntries, id: RuleId, packets: u64, bytes: u64, last: Timestamp) {
        if let Some(f) = flows.get_mut(&id) {
            f.packets += packets;
            f.bytes += bytes;
            f.last_used = f.last_used.max(last);
        }
    }

    pub fn flow_count(&self) -> usize {
        self.flows.len()
    }

    /// One flow's entry (counters as last folded).
    pub fn flow(&self, id: RuleId) -> Option<&FlowEntry> {
        self.flows.get(&id)
    }

    /// Every flow with its counters, by id (the order they were added).
    pub fn flows(&mut self) -> impl Iterator<Item = (RuleId, &FlowEntry)> {
        self.fold_counters();
        let mut ids: Vec<RuleId> = self.flows.keys().copied().collect();
        ids.sort_unstable();
        let flows = &self.flows;
        ids.into_iter().map(move |id| (id, &flows[&id]))
    }

    /// The flows `filter` selects: without `strict`, those whose match is
    /// at least as specific (OVS's del-flows); with it, the one with the
    /// same match and priority. A filter without a table spans all tables.
    pub fn select(&self, filter: Option<&(FlowSpec, bool)>, strict: bool) -> Vec<RuleId> {
        let mut ids: Vec<RuleId> = self
            .flows
            .iter()
            .filter(|(_, f)| match filter {
                None => true,
                Some((m, table_given)) => {
                    let table_ok = !table_given || f.spec.table == m.table;
                    let cookie_ok = f.spec.cookie & m.cookie_mask == m.cookie & m.cookie_mask;
                    let covered = if strict {
                        f.spec.matcher == m.matcher && f.spec.priority == m.priority
                    } else {
                        (0..crate::ofproto::flow::WORDS).all(|i| {
                            f.spec.matcher.mask[i] & m.matcher.mask[i] == m.matcher.mask[i]
                                && f.spec.matcher.value[i] & m.matcher.mask[i] == m.matcher.value[i]
                        })
                    };
                    table_ok && cookie_ok && covered
                }
            })
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Deletes the flows `filter` selects; returns how many.
    pub fn delete_flows(&mut self, filter: Option<&(FlowSpec, bool)>, strict: bool) -> usize {
        let ids = self.select(filter, strict);
        ids.iter().filter(|id| self.remove_flow(**id).is_some()).count()
    }

    /// Gives the flows `spec` selects its actions, keeping their counters;
    /// if it selects none, adds it (as ovs-ofctl mod-flows does).
    pub fn modify_flows(&mut self, spec: FlowSpec, strict: bool, now: Timestamp) {
        let filter = (spec.clone(), true);
        let ids = self.select(Some(&filter), strict);
        if ids.is_empty() {
            self.add_flow(spec, now);
            return;
        }
        for id in ids {
            let Some(mut entry) = self.remove_flow(id) else { continue };
            let new_id = self.tables.add(
                entry.spec.table,
                entry.spec.priority,
                entry.spec.matcher.clone(),
                spec.actions.clone(),
            );
            entry.spec.actions = spec.actions.clone();
            let actions_text = spec.text.split_once("actions=").map_or("", |(_, a)| a);
            let match_text = entry.spec.text.split_once("actions=").map_or("", |(m, _)| m).to_owned();
            entry.spec.text = format!("{match_text}actions={actions_text}");
            self.flows.insert(new_id, entry);
        }
    }

    /// What the tables do with a packet whose fields are `key` (fields not
    /// given are zero), in the manner of `ovs-appctl ofproto/trace`: table
    /// by table, the rule that matched and its actions, what NORMAL would do
    /// with the MAC table as it is, and the megaflow that would be cached.
    /// Nothing is learned, counted or sent.
    pub fn trace(&self, key: &Words, now: Timestamp) -> Vec<String> {
        let (decision, steps) = self.tables.trace(key);
        let mut lines = Vec::new();
        for step in &steps {
            let indent = "    ".repeat(step.depth);
            match step.rule.and_then(|id| self.flows.get(&id).map(|f| (id, f))) {
                Some((_, f)) => {
                    let sep = if f.spec.text.starts_with("actions=") { " " } else { "," };
                    lines.push(format!(
                        "{indent}table={}: priority={}{sep}{}",
                        step.table, f.spec.priority, f.spec.text
                    ));
                }
                None => lines.push(format!("{indent}table={}: no flow matches", step.table)),
            }
        }
        let in_port = Field::InPort.get(key) as u16;
        for action in &decision.actions {
            if *action == DpAction::Normal {
                lines.push(self.explain_normal(key, in_port, now));
            }
        }
        let actions: Vec<String> = decision.actions.iter().map(|a| a.to_string()).collect();
        lines.push(format!(
            "Final actions: {}",
            if actions.is_empty() { "drop".into() } else { actions.join(",") }
        ));
        let masked: Words = std::array::from_fn(|i| key[i] & decision.wildcards[i]);
        lines.push(format!("Megaflow: {}", format_masked(&masked, &decision.wildcards)));
        lines
    }

    fn explain_normal(&self, key: &Words, in_port: u16, now: Timestamp) -> String {
        let Some(input) = self.port(in_port) else {
            return format!("NORMAL: in_port {in_port} is not a port of this bridge: drop");
        };
        let tci = Field::VlanTci.get(key) as u16;
        let vid = (tci & 0x1000 != 0).then_some(tci & 0x0fff);
        let Some(vlan) = input.vlan.ingress(vid) else {
            return format!("NORMAL: port {} does not carry this VLAN: drop", input.name);
        };
        let dst = Field::DlDst.get(key).to_be_bytes();
        let dst: Mac = [dst[2], dst[3], dst[4], dst[5], dst[6], dst[7]];
        if is_reserved_multicast(&dst) && !self.settings.forward_bpdu {
            return "NORMAL: reserved multicast destination: drop".into();
        }
        match (!is_multicast(&dst)).then(|| self.mac.lookup(vlan, &dst, now)).flatten() {
            Some(out) if out == in_port => "NORMAL: destination learned on the input port: drop".into(),
            Some(out) => {
                format!("NORMAL: destination learned on {} in VLAN {vlan}: output there", self.port_name(out))
            }
            None => {
                let ports: Vec<String> = self
                    .ports()
                    .filter(|(n, p)| *n != in_port && p.vlan.carries(vlan))
                    .map(|(_, p)| p.name.clone())
                    .collect();
                format!("NORMAL: destination unknown in VLAN {vlan}: flood to {}", ports.join(", "))
            }
        }
    }

    fn port_name(&self, ofport: u16) -> String {
        self.port(ofport).map_or_else(|| ofport.to_string(), |p| p.name.clone())
    }

    pub fn megaflows(&self) -> &MegaflowCache {
        &self.cache
    }

    /// Removes flows whose idle or hard timeout has passed; returns them.
    pub fn expire_flows(&mut self, now: Timestamp) -> Vec<FlowEntry> {
        self.fold_counters();
        let ms = now.millis();
        let expired: Vec<RuleId> = self
            .flows
            .iter()
            .filter(|(_, f)| {
                let idle = f.spec.idle_timeout != 0
                    && ms.saturating_sub(f.last_used.millis()) >= u64::from(f.spec.idle_timeout) * 1000;
                let hard = f.spec.hard_timeout != 0
                    && ms.saturating_sub(f.created.millis()) >= u64::from(f.spec.hard_timeout) * 1000;
                idle || hard
            })
            .map(|(id, _)| *id)
            .collect();
        expired.into_iter().filter_map(|id| self.remove_flow(id)).collect()
    }

    pub fn settings(&self) -> BridgeSettings {
        self.settings
    }

    pub fn configure(&mut self, settings: BridgeSettings) {
        self.settings = settings;
        self.mac.set_limits(settings.mac_table_size, settings.mac_aging_secs);
        self.conntrack.set_limit(settings.ct_max);
        self.update_router();
    }

    /// Gives an uplink port an address and, optionally, the default
    /// route's next hop (`None`: the port has no address).
    pub fn set_port_address(&mut self, ofport: u16, address: Option<(Gateway, Option<u32>)>) {
        match address {
            Some(a) => self.port_addresses.insert(ofport, a),
            None => self.port_addresses.remove(&ofport),
        };
        self.update_router();
    }

    fn update_router(&mut self) {
        let gateway = self.settings.gateway.map(|address| Interface { address, port: None, nexthop: None });
        let uplinks = self.port_addresses.iter().map(|(port, (address, nexthop))| Interface {
            address: *address,
            port: Some(*port),
            nexthop: *nexthop,
        });
        self.router.set_interfaces(gateway.into_iter().chain(uplinks).collect());
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    pub fn conntrack(&self) -> &Conntrack {
        &self.conntrack
    }

    pub fn flush_conntrack(&mut self) {
        self.conntrack.flush();
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
                *slot = Some(BridgePort {
                    name: name.to_owned(),
                    vlan,
                    isolated: false,
                    tunnel: false,
                    counters: PortCounters::default(),
                });
            }
        }
    }

    /// Makes `endpoints` (MAC, tunnel port) the overlay's remote
    /// endpoints: static MAC entries.
    pub fn set_remote_endpoints(&mut self, endpoints: impl IntoIterator<Item = (Mac, u16)>) {
        self.remote.macs.clear();
        self.remote.macs.extend(endpoints);
    }

    /// The static MAC entries, as (MAC, port).
    pub fn static_macs(&self) -> impl Iterator<Item = (&Mac, &u16)> {
        self.remote.macs.iter()
    }

    pub fn set_isolated(&mut self, ofport: u16, isolated: bool) {
        if let Some(Some(port)) = self.ports.get_mut(usize::from(ofport)) {
            port.isolated = isolated;
        }
    }

    pub fn set_tunnel(&mut self, ofport: u16, tunnel: bool) {
        if let Some(Some(port)) = self.ports.get_mut(usize::from(ofport)) {
            port.tunnel = tunnel;
        }
    }

    pub fn remove_port(&mut self, ofport: u16) {
        if self.port_addresses.remove(&ofport).is_some() {
            self.update_router();
        }
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
        self.tick(now);
        for packet in packets {
            self.receive(now, in_port, packet.into(), tx);
        }
    }

    /// Ages MAC entries, and every `FLOW_EXPIRY_EVERY_MS` flows and
    /// connections: once per batch, before its frames.
    pub fn tick(&mut self, now: Timestamp) {
        self.mac.expire(now);
        if now.millis() >= self.next_flow_expiry {
            self.expire_flows(now);
            self.cache.evict_idle(now);
            // A full sweep of the connection table every few seconds.
            self.conntrack.expire(now, self.conntrack.len() / 4 + 64);
            self.next_flow_expiry = now.millis() + FLOW_EXPIRY_EVERY_MS;
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
        self.receive_inner(now, in_port, packet, None, tx)
    }

    /// Switches one frame a tunnel port took out of its tunnel; `tunnel`
    /// becomes its `tun_id`, `tun_src` and `tun_dst`.
    pub fn receive_tunneled(
        &mut self,
        now: Timestamp,
        in_port: u16,
        packet: Packet,
        tunnel: &TunnelMeta,
        tx: &mut impl Transmit,
    ) -> Disposition {
        self.receive_inner(now, in_port, packet, Some(tunnel), tx)
    }

    #[inline(always)]
    fn receive_inner(
        &mut self,
        now: Timestamp,
        in_port: u16,
        packet: Packet,
        tunnel: Option<&TunnelMeta>,
        tx: &mut impl Transmit,
    ) -> Disposition {
        let Some(Some(input)) = self.ports.get_mut(usize::from(in_port)) else {
            return Disposition::Dropped(DropReason::NoDestination);
        };
        input.counters.rx_packets += 1;
        input.counters.rx_bytes += packet.data.len() as u64;
        let disposition = match self.process(now, in_port, packet, tunnel, tx) {
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

    /// Parses the frame and runs it through the flow tables (through the
    /// megaflow cache), executing what they decide.
    fn process(
        &mut self,
        now: Timestamp,
        in_port: u16,
        packet: Packet,
        tunnel: Option<&TunnelMeta>,
        tx: &mut impl Transmit,
    ) -> Result<u16, DropReason> {
        let l2 = self.key.extract_into(packet.data, in_port)?;
        self.tunnel = match tunnel {
            Some(meta) => {
                meta.store(&mut self.key.words);
                *meta
            }
            None => TunnelMeta::default(),
        };
        if let Some(m) = self.key.malformed {
            let input = self.ports[usize::from(in_port)].as_mut().expect("checked by receive");
            input.counters.malformed[m as usize] += 1;
        }
        if !self.router.interfaces().is_empty() {
            let nw_dst = Field::NwDst.get(&self.key.words) as u32;
            if let Some(interface) = self.router.interface_at(nw_dst, in_port).copied() {
                if let Some(sent) = self.for_router(now, &interface, in_port, packet.data, &l2, tx) {
                    return Ok(sent);
                }
            }
        }
        let bytes = packet.data.len() as u64;
        if self.default_rule.is_some() && self.tables.len() == 1 {
            let pending = &mut self.default_pending;
            (pending.0, pending.1, pending.2) = (pending.0 + 1, pending.1 + bytes, now);
            return self.normal(now, in_port, &packet, &l2, tx);
        }
        let decided = self.cache.decide(&self.tables, &self.key.words);
        decided.hit(bytes, now);
        self.execute(Origin { now, in_port, recirculations: 0 }, packet, &l2, &decided.actions, tx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::l2::vlan::VlanMode;
    use crate::packet::Mac;

    const A: Mac = [0x02, 0, 0, 0, 0, 0xa];
    const B: Mac = [0x02, 0, 0, 0, 0, 0xb];
    const C: Mac = [0x02, 0, 0, 0, 0, 0xc];
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
    fn isolated_ports_reach_everyone_but_each_other() {
        let mut br = bridge_with(&[PortVlan::default(), PortVlan::default(), PortVlan::default()]);
        br.set_isolated(1, true);
        br.set_isolated(2, true);
        // Port 3 (the uplink, say) is not isolated: it hears both, and both hear it.
        assert_eq!(ports_of(&send(&mut br, 0, 1, &frame(BROADCAST, A))), vec![3]);
        assert_eq!(ports_of(&send(&mut br, 0, 2, &frame(BROADCAST, B))), vec![3]);
        assert_eq!(ports_of(&send(&mut br, 0, 3, &frame(BROADCAST, C))), vec![1, 2]);
        // A learned unicast to the other isolated port is dropped and counted.
        assert!(send(&mut br, 0, 1, &frame(B, A)).is_empty());
        assert_eq!(br.port(1).unwrap().counters.drop_count(DropReason::Isolated), 1);
        assert_eq!(ports_of(&send(&mut br, 0, 1, &frame(C, A))), vec![3]);
        br.set_isolated(2, false);
        assert_eq!(ports_of(&send(&mut br, 0, 1, &frame(B, A))), vec![2]);
    }

    #[test]
    fn remote_endpoints_are_static_macs() {
        // Ports 2 and 3 are tunnels to two other hosts, split horizon between them.
        let mut br = bridge_with(&[PortVlan::default(), PortVlan::default(), PortVlan::default()]);
        br.set_isolated(2, true);
        br.set_isolated(3, true);
        br.set_remote_endpoints([(B, 2)]);
        // Unicast to the remote MAC goes straight to its host, never flooded.
        assert_eq!(ports_of(&send(&mut br, 0, 1, &frame(B, A))), vec![2]);
        // The MAC does not move when a frame claims it elsewhere.
        send(&mut br, 0, 3, &frame(BROADCAST, B));
        assert_eq!(ports_of(&send(&mut br, 0, 1, &frame(B, A))), vec![2]);
        // A broadcast from one tunnel never goes out of the other.
        assert_eq!(ports_of(&send(&mut br, 0, 2, &frame(BROADCAST, C))), vec![1]);
        br.set_remote_endpoints([]);
        assert_eq!(br.static_macs().count(), 0);
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

    mod flows {
        use super::*;
        use crate::ofproto::ofctl::parse_flow;

        fn ports(name: &str) -> Option<u16> {
            name.strip_prefix('p').and_then(|n| n.parse().ok())
        }

        fn flow(br: &mut Bridge, text: &str) -> RuleId {
            br.add_flow(parse_flow(text, &ports).unwrap(), Timestamp::from_millis(0))
        }

        fn udp(dst: Mac, src: Mac, ip_src: [u8; 4], ip_dst: [u8; 4], dport: u16) -> Vec<u8> {
            let mut out = Vec::new();
            etherparse::PacketBuilder::ethernet2(src, dst)
                .ipv4(ip_src, ip_dst, 64)
                .udp(40000, dport)
                .write(&mut out, b"flow test payload")
                .unwrap();
            out
        }

        fn three_ports() -> Bridge {
            bridge_with(&[PortVlan::default(), PortVlan::default(), PortVlan::default()])
        }

        #[test]
        fn acl_drops_one_subnet_and_normal_switches_the_rest() {
            let mut br = three_ports();
            let acl = flow(&mut br, "priority=100,ip,nw_src=198.18.1.0/24,actions=drop");
            let blocked = udp(B, A, [198, 18, 1, 7], [198, 18, 0, 2], 53);
            let allowed = udp(B, A, [198, 18, 0, 7], [198, 18, 0, 2], 53);
            assert!(send(&mut br, 0, 1, &blocked).is_empty());
            assert_eq!(ports_of(&send(&mut br, 0, 1, &allowed)), vec![2, 3]);
            assert_eq!(br.port(1).unwrap().counters.drop_count(DropReason::FlowDrop), 1);
            let counted: Vec<(RuleId, u64)> = br.flows().map(|(id, f)| (id, f.packets)).collect();
            assert!(counted.contains(&(acl, 1)), "{counted:?}");
            assert!(counted.contains(&(br.default_rule.unwrap(), 1)), "{counted:?}");
        }

        #[test]
        fn port_to_port_and_vlan_rewrite() {
            let mut br = three_ports();
            flow(&mut br, "in_port=1,actions=output:3");
            flow(&mut br, "in_port=2,actions=mod_vlan_vid:20,output:3");
            let f = frame(B, A);
            assert_eq!(send(&mut br, 0, 1, &f), vec![(3, f.clone())]);
            assert_eq!(send(&mut br, 0, 2, &f), vec![(3, tagged(B, A, 20))]);
        }

        #[test]
        fn two_table_pipeline() {
            let mut br = three_ports();
            flow(&mut br, "table=0,priority=10,in_port=1,actions=goto_table:1");
            flow(&mut br, "table=0,priority=10,in_port=2,actions=resubmit(,1),output:3");
            flow(&mut br, "table=1,dl_dst=02:00:00:00:00:0b,actions=output:2");
            flow(&mut br, "table=1,priority=0,actions=drop");
            assert_eq!(ports_of(&send(&mut br, 0, 1, &frame(B, A))), vec![2]);
            assert!(send(&mut br, 0, 1, &frame(A, B)).is_empty());
            // Port 2's frame: table 1 sends nothing back to port 2 (its input), then output:3.
            assert_eq!(ports_of(&send(&mut br, 0, 2, &frame(B, A))), vec![3]);
        }

        #[test]
        fn mac_and_address_rewrites_keep_checksums() {
            let mut br = three_ports();
            flow(&mut br, "in_port=1,udp,actions=mod_dl_dst:02:00:00:00:00:0c,mod_nw_dst:198.18.0.9,mod_tp_dst:5353,output:2");
            let out = send(&mut br, 0, 1, &udp(B, A, [198, 18, 0, 1], [198, 18, 0, 2], 53));
            assert_eq!(out.len(), 1);
            let p = etherparse::SlicedPacket::from_ethernet(&out[0].1).unwrap();
            let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else { panic!() };
            let Some(etherparse::TransportSlice::Udp(u)) = &p.transport else { panic!() };
            let h = ip.header().to_header();
            assert_eq!(&out[0].1[0..6], &C);
            assert_eq!((ip.header().destination(), u.destination_port()), ([198, 18, 0, 9], 5353));
            assert_eq!(h.calc_header_checksum(), h.header_checksum);
            assert_eq!(u.to_header().calc_checksum_ipv4(&h, u.payload()).unwrap(), u.checksum());
        }

        #[test]
        fn dec_ttl_forwards_with_ttl_minus_one_and_drops_at_one() {
            let mut br = three_ports();
            flow(&mut br, "in_port=1,ip,actions=dec_ttl,output:2");
            let out = send(&mut br, 0, 1, &udp(B, A, [198, 18, 0, 1], [198, 18, 0, 2], 53));
            assert_eq!(out.len(), 1);
            let p = etherparse::SlicedPacket::from_ethernet(&out[0].1).unwrap();
            let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else { panic!() };
            let h = ip.header().to_header();
            assert_eq!((h.time_to_live, h.calc_header_checksum()), (63, h.header_checksum));
            let mut last_hop = udp(B, A, [198, 18, 0, 1], [198, 18, 0, 2], 53);
            last_hop[22] = 1;
            assert!(send(&mut br, 0, 1, &last_hop).is_empty());
            assert_eq!(br.port(1).unwrap().counters.drop_count(DropReason::TtlExpired), 1);
        }

        #[test]
        fn idle_timeout_expires_with_injected_time() {
            let mut br = three_ports();
            flow(&mut br, "priority=10,in_port=1,idle_timeout=10,actions=output:3");
            assert_eq!(ports_of(&send(&mut br, 0, 1, &frame(B, A))), vec![3]);
            assert_eq!(ports_of(&send(&mut br, 9_000, 1, &frame(B, A))), vec![3]);
            // Used at 9 s, so alive until 19 s; then NORMAL takes over.
            assert_eq!(ports_of(&send(&mut br, 18_500, 1, &frame(B, A))), vec![3]);
            assert_eq!(ports_of(&send(&mut br, 29_000, 1, &frame(B, A))), vec![2, 3]);
            assert_eq!(br.flows().count(), 1, "only the default flow is left");
        }

        #[test]
        fn idle_megaflows_are_evicted_and_their_counts_kept() {
            let mut br = three_ports();
            let acl = flow(&mut br, "priority=10,in_port=1,actions=output:3");
            send(&mut br, 0, 1, &frame(B, A));
            send(&mut br, 0, 2, &frame(A, B));
            assert_eq!(br.megaflows().len(), 2);
            // Port 2's stream goes on; port 1's stopped at 0 s.
            send(&mut br, 8_000, 2, &frame(A, B));
            br.tick(Timestamp::from_millis(10_000));
            assert_eq!(br.megaflows().len(), 1, "port 1's megaflow was idle for 10 s");
            let counted = br.flows().find(|(id, _)| *id == acl).map(|(_, f)| f.packets);
            assert_eq!(counted, Some(1), "the evicted megaflow's packet still counts");
            br.tick(Timestamp::from_millis(18_000));
            assert!(br.megaflows().is_empty());
            // Traffic that comes back is decided again.
            assert_eq!(ports_of(&send(&mut br, 20_000, 1, &frame(B, A))), vec![3]);
            assert_eq!(br.megaflows().len(), 1);
        }

        #[test]
        fn a_new_rule_overrides_what_was_cached() {
            let mut br = three_ports();
            flow(&mut br, "priority=1,dl_type=0x0800,actions=NORMAL");
            assert_eq!(ports_of(&send(&mut br, 0, 1, &frame(B, A))), vec![2, 3]);
            assert!(!br.megaflows().is_empty());
            flow(&mut br, "priority=50,in_port=1,actions=drop");
            assert!(send(&mut br, 0, 1, &frame(B, A)).is_empty());
        }

        #[test]
        fn push_vlan_stacks_a_tag_and_registers_steer_the_pipeline() {
            let mut br = three_ports();
            // Port 1's frames get an outer tag 0x88a8 VID 100 over their tag.
            flow(&mut br, "in_port=1,actions=push_vlan:0x88a8,set_field:100->vlan_vid,output:2");
            let out = send(&mut br, 0, 1, &tagged(B, A, 10));
            let mut expected = tagged(B, A, 10);
            expected.splice(12..12, [0x88, 0xa8, 0x00, 100]);
            assert_eq!(out, vec![(2, expected)]);
            // Port 2's in_port travels in reg1 to table 1, which picks the output.
            flow(&mut br, "in_port=2,actions=move:NXM_OF_IN_PORT[]->NXM_NX_REG1[0..15],resubmit(,1)");
            flow(&mut br, "table=1,reg1=2,actions=output:3");
            assert_eq!(ports_of(&send(&mut br, 0, 2, &frame(B, A))), vec![3]);
        }

        /// (src, dst, sport, dport) of a UDP frame, and whether both its
        /// checksums are right.
        fn udp_seen(frame: &[u8]) -> ([u8; 4], [u8; 4], u16, u16, bool) {
            let p = etherparse::SlicedPacket::from_ethernet(frame).unwrap();
            let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else { panic!("not IPv4") };
            let Some(etherparse::TransportSlice::Udp(u)) = &p.transport else { panic!("not UDP") };
            let h = ip.header().to_header();
            let ok = h.calc_header_checksum() == h.header_checksum
                && u.to_header().calc_checksum_ipv4(&h, u.payload()).unwrap() == u.checksum();
            (h.source, h.destination, u.source_port(), u.destination_port(), ok)
        }

        #[test]
        fn masquerade_and_a_stateful_firewall_through_ct() {
            let mut br = three_ports();
            // p1 is the inside, p2 the uplink whose address is 198.19.0.1.
            flow(&mut br, "table=0,priority=10,in_port=1,ip,actions=ct(commit,nat(src=198.19.0.1),table=1)");
            flow(&mut br, "table=0,priority=10,in_port=2,ip,actions=ct(nat,table=1)");
            flow(&mut br, "table=1,priority=10,in_port=1,ct_state=+trk,actions=output:2");
            flow(&mut br, "table=1,priority=10,in_port=2,ct_state=+trk+est,actions=output:1");
            flow(&mut br, "table=1,priority=5,in_port=2,ct_state=+trk+new,actions=drop");
            let out = send(&mut br, 0, 1, &udp(B, A, [198, 18, 0, 2], [198, 19, 0, 9], 53));
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].0, 2);
            assert_eq!(udp_seen(&out[0].1), ([198, 19, 0, 1], [198, 19, 0, 9], 40000, 53, true));
            // The reply comes back to the uplink's address and is untranslated.
            let reply = {
                let mut fixed = Vec::new();
                etherparse::PacketBuilder::ethernet2(B, A)
                    .ipv4([198, 19, 0, 9], [198, 19, 0, 1], 64)
                    .udp(53, 40000)
                    .write(&mut fixed, b"flow test payload")
                    .unwrap();
                fixed
            };
            let out = send(&mut br, 1, 2, &reply);
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].0, 1);
            assert_eq!(udp_seen(&out[0].1), ([198, 19, 0, 9], [198, 18, 0, 2], 53, 40000, true));
            // Something the inside never asked for is new, and dropped.
            assert!(send(&mut br, 2, 2, &udp(A, B, [198, 19, 0, 66], [198, 19, 0, 1], 22)).is_empty());
            assert_eq!(br.port(2).unwrap().counters.drop_count(DropReason::FlowDrop), 1);
            assert_eq!(br.conntrack().len(), 1);
            let conn = br.conntrack().connections(Timestamp::from_millis(2)).next().unwrap();
            assert_eq!(conn.state_name(), "REPLIED");
            // The recirculated lookups were cached as megaflows of their own.
            assert!(br
                .megaflows()
                .entries()
                .any(|(mask, key, ..)| Field::Recirc.get(mask) != 0 && Field::Recirc.get(&key) == 2));
        }

        fn arp(
            op: u16,
            dst: Mac,
            src: Mac,
            sender_ip: [u8; 4],
            target_mac: Mac,
            target_ip: [u8; 4],
        ) -> Vec<u8> {
            let mut f = dst.to_vec();
            f.extend_from_slice(&src);
            f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4]);
            f.extend_from_slice(&op.to_be_bytes());
            f.extend_from_slice(&src);
            f.extend_from_slice(&sender_ip);
            f.extend_from_slice(&target_mac);
            f.extend_from_slice(&target_ip);
            f.resize(60, 0);
            f
        }

        #[test]
        fn route_between_the_subnet_and_the_uplink_resolving_by_arp() {
            let mut br = three_ports();
            let gateway = Gateway::parse("198.18.0.1/24").unwrap();
            let uplink = Gateway::parse("198.19.0.1/24").unwrap();
            br.configure(BridgeSettings { gateway: Some(gateway), ..BridgeSettings::default() });
            br.set_port_address(3, Some((uplink, Some(u32::from_be_bytes([198, 19, 0, 254])))));
            flow(&mut br, "priority=100,ip,dl_dst=02:76:c6:12:00:01,actions=route");
            flow(&mut br, "priority=100,ip,in_port=3,dl_dst=02:76:c6:13:00:01,actions=route");
            const NEXTHOP: Mac = [0x02, 0, 0, 0, 0, 0xfe];
            // Out: the first frame waits while the uplink asks for the next hop.
            let out = send(&mut br, 0, 1, &udp(gateway.mac, A, [198, 18, 0, 2], [203, 0, 113, 7], 53));
            assert_eq!(ports_of(&out), vec![3]);
            assert_eq!((&out[0].1[0..6], &out[0].1[38..42]), (&[0xff; 6][..], &[198, 19, 0, 254][..]));
            let answer = arp(2, uplink.mac, NEXTHOP, [198, 19, 0, 254], uplink.mac, [198, 19, 0, 1]);
            let out = send(&mut br, 1, 3, &answer);
            assert_eq!(ports_of(&out), vec![3], "the waiting frame leaves");
            let p = etherparse::SlicedPacket::from_ethernet(&out[0].1).unwrap();
            let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else { panic!() };
            assert_eq!((&out[0].1[0..6], &out[0].1[6..12]), (&NEXTHOP[..], &uplink.mac[..]));
            let h = ip.header().to_header();
            assert_eq!((h.time_to_live, h.calc_header_checksum()), (63, h.header_checksum));
            // Back in: the gateway asks the subnet (not the uplink) for the container.
            let out = send(&mut br, 2, 3, &udp(uplink.mac, NEXTHOP, [203, 0, 113, 7], [198, 18, 0, 2], 5000));
            assert_eq!(ports_of(&out), vec![1, 2]);
            let answer = arp(2, gateway.mac, A, [198, 18, 0, 2], gateway.mac, [198, 18, 0, 1]);
            let out = send(&mut br, 3, 1, &answer);
            assert_eq!(ports_of(&out), vec![1], "delivered where the container answered from");
            assert_eq!((&out[0].1[0..6], &out[0].1[6..12]), (&A[..], &gateway.mac[..]));
            // Nowhere to go without an uplink next hop.
            br.set_port_address(3, Some((uplink, None)));
            assert!(
                send(&mut br, 4, 1, &udp(gateway.mac, A, [198, 18, 0, 2], [203, 0, 113, 7], 53)).is_empty()
            );
            assert_eq!(br.port(1).unwrap().counters.drop_count(DropReason::NoRoute), 1);
        }

        #[test]
        fn a_full_connection_table_drops_commits_with_a_reason() {
            let mut br = three_ports();
            br.configure(BridgeSettings { ct_max: 1, ..BridgeSettings::default() });
            flow(&mut br, "in_port=1,ip,actions=ct(commit),output:2");
            assert_eq!(send(&mut br, 0, 1, &udp(B, A, [198, 18, 0, 2], [198, 19, 0, 9], 53)).len(), 1);
            assert!(send(&mut br, 0, 1, &udp(B, A, [198, 18, 0, 2], [198, 19, 0, 9], 54)).is_empty());
            assert_eq!(br.port(1).unwrap().counters.drop_count(DropReason::CtTableFull), 1);
        }

        #[test]
        fn cookie_masks_select_flows_to_delete() {
            let mut br = three_ports();
            flow(&mut br, "cookie=0x1201,priority=5,in_port=1,actions=output:2");
            flow(&mut br, "cookie=0x1302,priority=5,in_port=2,actions=output:3");
            let filter = crate::ofproto::ofctl::parse_match("cookie=0x1200/0xff00", &ports).unwrap();
            assert_eq!(br.delete_flows(Some(&filter), false), 1);
            let cookies: Vec<u64> = br.flows().map(|(_, f)| f.spec.cookie).collect();
            assert_eq!(cookies, vec![0, 0x1302], "the default flow and the other cookie stay");
        }

        #[test]
        fn same_match_replaces_and_default_flow_can_go() {
            let mut br = three_ports();
            let first = flow(&mut br, "priority=5,in_port=1,actions=output:2");
            flow(&mut br, "priority=5,in_port=1,actions=output:3");
            assert!(br.flows().all(|(id, _)| id != first));
            assert_eq!(ports_of(&send(&mut br, 0, 1, &frame(B, A))), vec![3]);
            let default = br.default_rule.unwrap();
            br.remove_flow(default);
            assert!(send(&mut br, 0, 2, &frame(B, A)).is_empty(), "a table miss drops");
        }
    }
}
