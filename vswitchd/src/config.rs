//! The configuration database: bridges, ports and interfaces, the commands
//! that change them, and the file they persist in.
//!
//! A transaction applies its commands one by one to a copy of the current
//! configuration; only if every command succeeds does the copy replace the
//! original, so a failing command leaves nothing behind (ovs-vsctl's `--`).
//! Commands that read live datapath state (the MAC table, counters, device
//! status) are answered after the commit, by the datapath.
//!
//! Names follow OVSDB: a port has one interface of the same name, and port
//! names are unique across all bridges. OpenFlow port numbers are allocated
//! here, lowest free first, and persisted so they survive restarts.
//!
//! The file is JSON, written to a temporary file, fsynced, renamed over the
//! old one and the directory fsynced: a crash at any point leaves either the
//! old or the new file, whole.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use proto::{BridgeView, Command, CommandResult, ErrorCode, PortView, RpcError, Table};
use serde::{Deserialize, Serialize};

use crate::core::bridge::BridgeSettings;
use crate::core::conntrack;
use crate::core::l2::mac_learning::{DEFAULT_AGING_SECS, DEFAULT_CAPACITY};
use crate::core::l2::vlan::{PortVlan, VlanMode};
use crate::core::l3::gateway::Gateway;
use crate::core::ofproto::ofctl::{parse_flow, parse_match, FlowSpec};
use crate::nat::{Masquerade, PortMapping};
use crate::netns::Attachment;

pub const DB_FORMAT_VERSION: u32 = 1;
/// Where a container port records which namespace and interface it serves.
pub const CONTAINER_NETNS: &str = "container_netns";
pub const CONTAINER_IFACE: &str = "container_iface";
pub const CONTAINER_ID: &str = "container_id";
pub const MAX_OFPORT: u16 = 0xfeff;
const MAX_MAC_TABLE_SIZE: usize = 1 << 20;
const MAX_CT_ENTRIES: usize = 16 << 20;

pub type Map = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    pub format: u32,
    #[serde(default)]
    pub bridges: BTreeMap<String, BridgeConfig>,
    /// The cluster store this host joins for overlay networks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config { format: DB_FORMAT_VERSION, bridges: BTreeMap::new(), cluster: None }
    }
}

/// `vswitchd --cluster-store etcd://... --cluster-advertise IP`, or
/// `vsctl set-cluster`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterConfig {
    /// etcd endpoints, `HOST:PORT`.
    pub store: Vec<String>,
    /// This host's underlay address: where other hosts' tunnels end.
    pub advertise: std::net::Ipv4Addr,
    /// How long this host's endpoints outlive it in the store.
    pub ttl_secs: u64,
}

impl ClusterConfig {
    /// Checks `etcd://HOST:PORT[,HOST:PORT...]` (the scheme may be left
    /// out), the advertised address and the TTL.
    pub fn new(store: &[String], advertise: &str, ttl_secs: Option<u64>) -> Result<ClusterConfig, String> {
        let mut endpoints = Vec::new();
        for item in store.iter().flat_map(|s| s.split(',')) {
            let item = item.trim();
            let hostport = item.strip_prefix("etcd://").unwrap_or(item).trim_end_matches('/');
            match hostport.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0) => {
                    endpoints.push(hostport.to_owned())
                }
                _ => return Err(format!("cluster store {item:?}: write etcd://HOST:PORT[,HOST:PORT...]")),
            }
        }
        if endpoints.is_empty() {
            return Err("no cluster store given: write etcd://HOST:PORT[,HOST:PORT...]".into());
        }
        let advertise: std::net::Ipv4Addr = advertise.parse().map_err(|_| {
            format!("cluster advertise address {advertise:?}: give this host's underlay IPv4 address")
        })?;
        if advertise.is_unspecified() || advertise.is_multicast() || advertise.is_broadcast() {
            return Err(format!("cluster advertise address {advertise} cannot be a tunnel endpoint"));
        }
        let ttl_secs = ttl_secs.unwrap_or(crate::overlay::DEFAULT_TTL_SECS);
        if !(2..=300).contains(&ttl_secs) {
            return Err(format!("cluster TTL {ttl_secs} s: use 2 to 300"));
        }
        Ok(ClusterConfig { store: endpoints, advertise, ttl_secs })
    }

    /// `etcd://A,B`, as the user wrote it.
    pub fn describe(&self) -> String {
        format!("etcd://{}", self.store.join(","))
    }
}

/// What an overlay network's bridge carries besides ordinary columns;
/// [`crate::overlay::reconcile`] owns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayBinding {
    pub subnet: String,
    pub vni: u32,
    #[serde(default)]
    pub gateway: Option<std::net::Ipv4Addr>,
    pub mtu: u32,
    /// Containers on other hosts: a static MAC entry and an ARP responder flow each.
    #[serde(default)]
    pub remote: Vec<RemoteEndpoint>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteEndpoint {
    pub ip: std::net::Ipv4Addr,
    pub mac: String,
    /// The tunnel port to its host.
    pub port: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeConfig {
    /// `A.B.C.D/N`: the address the switch answers ARP and ping for.
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default)]
    pub masquerade: Option<Masquerade>,
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
    #[serde(default)]
    pub other_config: Map,
    #[serde(default)]
    pub external_ids: Map,
    #[serde(default)]
    pub ports: BTreeMap<String, PortConfig>,
    /// Set on an overlay network's bridge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<OverlayBinding>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortConfig {
    pub ofport: u16,
    #[serde(default)]
    pub tag: Option<u16>,
    #[serde(default)]
    pub trunks: Vec<u16>,
    #[serde(default)]
    pub vlan_mode: Option<String>,
    /// Like Docker's `--icc=false` (OVS's `protected`): an isolated port
    /// reaches every port but the other isolated ones.
    #[serde(default)]
    pub isolated: bool,
    /// `A.B.C.D/N`: the port is an uplink with this address (the switch
    /// answers ARP and ping for it there and routes through it).
    #[serde(default)]
    pub ip: Option<String>,
    /// The default route's next hop, on the uplink's subnet.
    #[serde(default)]
    pub nexthop: Option<String>,
    #[serde(default)]
    pub other_config: Map,
    #[serde(default)]
    pub external_ids: Map,
    #[serde(default)]
    pub interface: InterfaceConfig,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceConfig {
    /// Empty means `system`, as in OVSDB.
    #[serde(default)]
    pub r#type: String,
    #[serde(default)]
    pub options: Map,
    #[serde(default)]
    pub external_ids: Map,
}

impl InterfaceConfig {
    pub fn kind(&self) -> &str {
        if self.r#type.is_empty() {
            "system"
        } else {
            &self.r#type
        }
    }
}

impl BridgeConfig {
    /// The datapath settings from `other_config`, which `set` validated.
    pub fn settings(&self) -> BridgeSettings {
        let get = |k: &str| self.other_config.get(k);
        BridgeSettings {
            forward_bpdu: get("forward-bpdu").is_some_and(|v| v == "true"),
            mac_table_size: get("mac-table-size").and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_CAPACITY),
            mac_aging_secs: get("mac-aging-time").and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_AGING_SECS),
            ct_max: get("ct-max").and_then(|v| v.parse().ok()).unwrap_or(conntrack::DEFAULT_LIMIT),
            gateway: self.gateway.as_deref().and_then(|g| Gateway::parse(g).ok()),
        }
    }
}

/// Flows compiled from a bridge's settings (NAT's, an overlay's ARP
/// responder), parsed by the control plane so that the forwarding thread
/// parses no flow: it installs them in place of the flows under their
/// cookie, and leaves them alone when they are already there.
#[derive(Debug, Clone)]
pub struct CompiledFlows {
    /// The match on the group's cookie (`cookie=C/M`).
    pub owner: (FlowSpec, bool),
    /// The flows, their cookies numbered within the group.
    pub specs: Vec<FlowSpec>,
}

impl Config {
    /// Every bridge's compiled flows, by bridge.
    pub fn compiled_flows(&self) -> BTreeMap<String, Vec<CompiledFlows>> {
        self.bridges.iter().map(|(name, b)| (name.clone(), b.compiled_flows())).collect()
    }
}

impl BridgeConfig {
    /// NAT's flows and the overlay's ARP responder, each group parsed
    /// under its cookie. A flow that does not parse is a bug in its
    /// compiler: it is logged and left out, and the rest still go in.
    pub fn compiled_flows(&self) -> Vec<CompiledFlows> {
        let ports = |name: &str| self.ports.get(name).map(|p| p.ofport);
        let arp = self.overlay.as_ref().map(crate::overlay::arp_responder_flows).unwrap_or_default();
        let groups = [
            ((crate::nat::COOKIE, crate::nat::COOKIE_MASK), self.nat_flows()),
            ((crate::overlay::COOKIE, crate::overlay::COOKIE_MASK), arp),
        ];
        groups
            .into_iter()
            .map(|((cookie, cookie_mask), flows)| {
                let owner = parse_match(&format!("cookie={cookie:#x}/{cookie_mask:#x}"), &ports)
                    .expect("a cookie match parses");
                let specs = flows
                    .iter()
                    .enumerate()
                    .filter_map(|(i, text)| match parse_flow(text, &ports) {
                        Ok(mut spec) => {
                            spec.cookie = cookie | i as u64;
                            Some(spec)
                        }
                        Err(e) => {
                            tracing::error!(flow = %text, error = %e, "a compiled flow does not parse");
                            None
                        }
                    })
                    .collect();
                CompiledFlows { owner, specs }
            })
            .collect()
    }

    /// The flows NAT compiles into; none while the gateway, the out port
    /// or its address is missing.
    pub fn nat_flows(&self) -> Vec<String> {
        let Some(masquerade) = &self.masquerade else { return Vec::new() };
        let gateway = self.gateway.as_deref().and_then(|g| Gateway::parse(g).ok());
        let uplink = self.ports.get(&masquerade.out_port).and_then(|p| p.address());
        match (gateway, uplink) {
            (Some(gateway), Some((uplink, _))) => {
                crate::nat::compile(&gateway, &uplink, masquerade, &self.port_mappings)
            }
            _ => Vec::new(),
        }
    }
}

impl PortConfig {
    pub fn vlan(&self) -> PortVlan {
        PortVlan::new(self.tag, &self.trunks, self.vlan_mode.as_deref().and_then(VlanMode::parse))
    }

    /// The uplink address and next hop, which `set` validated.
    pub fn address(&self) -> Option<(Gateway, Option<u32>)> {
        let address = Gateway::parse(self.ip.as_deref()?).ok()?;
        let nexthop =
            self.nexthop.as_deref().and_then(|n| n.parse::<std::net::Ipv4Addr>().ok()).map(u32::from);
        Some((address, nexthop))
    }
}

/// A change to a bridge's flow tables, parsed and checked against the
/// transaction's configuration, carried out once it commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowOp {
    Add(Vec<FlowSpec>),
    Replace(Vec<FlowSpec>),
    /// Deletes the flows a match covers (all of them without one); strict:
    /// only the flow with exactly this match and priority.
    Delete {
        filter: Option<(FlowSpec, bool)>,
        strict: bool,
    },
    Modify {
        spec: FlowSpec,
        strict: bool,
    },
}

/// A read of live state that the datapath answers once the transaction has
/// committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveQuery {
    Show,
    Flows { bridge: String, op: FlowOp },
    DumpFlows { bridge: String, filter: Option<(FlowSpec, bool)> },
    Megaflows { bridge: String },
    Conntrack { bridge: String },
    FlushConntrack { bridge: String },
    Trace { bridge: String, key: crate::core::ofproto::flow::Words },
    Fdb { bridge: String },
    FdbStats { bridge: String },
    FdbFlush { bridge: Option<String> },
    Stats { bridge: String, port: Option<String> },
    Memory,
}

/// What one command yields: an answer now, or a live query for later.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Done(CommandResult),
    Live(Box<LiveQuery>),
}

impl Outcome {
    fn live(query: LiveQuery) -> Result<Outcome, RpcError> {
        Ok(Outcome::Live(Box::new(query)))
    }
}

fn err(code: ErrorCode, message: impl Into<String>) -> RpcError {
    RpcError::new(code, message)
}

fn no_bridge(name: &str) -> RpcError {
    err(ErrorCode::NotFound, format!("no bridge named {name} (list them with `vsctl list-br`)"))
}

fn no_port(name: &str) -> RpcError {
    err(ErrorCode::NotFound, format!("no port named {name} (list them with `vsctl show`)"))
}

/// A bridge name's check, for names made elsewhere (overlay networks).
pub fn check_bridge_name(name: &str) -> Result<(), RpcError> {
    check_name("network", name)
}

/// A name usable as a bridge or port: what Linux takes as an interface name.
fn check_name(what: &str, name: &str) -> Result<(), RpcError> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b'/' && b != b':' && b != b'=');
    if ok {
        Ok(())
    } else {
        Err(err(
            ErrorCode::InvalidValue,
            format!(
                "invalid {what} name {name:?}: use 1 to 15 printable characters without '/', ':', '=' or spaces"
            ),
        ))
    }
}

impl Config {
    /// The bridge that has port `name`.
    pub fn port_bridge(&self, name: &str) -> Option<&str> {
        self.bridges.iter().find(|(_, b)| b.ports.contains_key(name)).map(|(n, _)| n.as_str())
    }

    fn bridge_mut(&mut self, name: &str) -> Result<&mut BridgeConfig, RpcError> {
        self.bridges.get_mut(name).ok_or_else(|| no_bridge(name))
    }

    fn port_mut(&mut self, name: &str) -> Result<&mut PortConfig, RpcError> {
        self.bridges.values_mut().find_map(|b| b.ports.get_mut(name)).ok_or_else(|| no_port(name))
    }

    fn port(&self, name: &str) -> Result<&PortConfig, RpcError> {
        self.bridges.values().find_map(|b| b.ports.get(name)).ok_or_else(|| no_port(name))
    }

    /// Applies one command to this (working) configuration.
    pub fn apply(&mut self, command: &Command) -> Result<Outcome, RpcError> {
        use CommandResult::*;
        let done = |r| Ok(Outcome::Done(r));
        match command {
            Command::AddBr { bridge, may_exist } => {
                check_name("bridge", bridge)?;
                if self.bridges.contains_key(bridge) {
                    return if *may_exist {
                        done(Done)
                    } else {
                        Err(err(ErrorCode::AlreadyExists, format!("a bridge named {bridge} already exists")))
                    };
                }
                if let Some(owner) = self.port_bridge(bridge) {
                    return Err(err(
                        ErrorCode::AlreadyExists,
                        format!("{bridge} is already a port on bridge {owner}; pick another bridge name"),
                    ));
                }
                // Like OVS, every bridge has an internal port of its own name:
                // the host's leg on the bridge.
                let local = PortConfig {
                    ofport: 1,
                    interface: InterfaceConfig { r#type: "internal".into(), ..InterfaceConfig::default() },
                    ..PortConfig::default()
                };
                let ports = BTreeMap::from([(bridge.clone(), local)]);
                self.bridges.insert(bridge.clone(), BridgeConfig { ports, ..BridgeConfig::default() });
                done(Done)
            }
            Command::DelBr { bridge, if_exists } => {
                if self.bridges.remove(bridge).is_none() && !if_exists {
                    return Err(no_bridge(bridge));
                }
                done(Done)
            }
            Command::ListBr => done(Names(self.bridges.keys().cloned().collect())),
            Command::BrExists { bridge } => done(Exists(self.bridges.contains_key(bridge))),
            Command::AddPort { bridge, port, settings, may_exist } => {
                self.add_port(bridge, port, settings, *may_exist)?;
                done(Done)
            }
            Command::DelPort { bridge, port, if_exists } => {
                let owner = self.port_bridge(port).map(str::to_owned);
                match (owner, bridge) {
                    (None, _) if *if_exists => {}
                    (None, _) => return Err(no_port(port)),
                    (Some(owner), Some(bridge)) if owner != *bridge => {
                        if !self.bridges.contains_key(bridge) {
                            return Err(no_bridge(bridge));
                        }
                        return Err(err(
                            ErrorCode::NotFound,
                            format!("bridge {bridge} does not have a port {port} (it is on {owner})"),
                        ));
                    }
                    (Some(owner), _) if owner == *port => {
                        return Err(err(
                            ErrorCode::InvalidValue,
                            format!("{port} is the internal port of bridge {owner}; delete the bridge to remove it"),
                        ));
                    }
                    (Some(owner), _) => {
                        let b = self.bridges.get_mut(&owner).expect("owner exists");
                        if b.masquerade.as_ref().is_some_and(|m| m.out_port == *port) {
                            return Err(err(
                                ErrorCode::InvalidValue,
                                format!("{port} is {owner}'s NAT out port; remove the NAT first (vsctl del-nat {owner})"),
                            ));
                        }
                        b.ports.remove(port);
                    }
                }
                done(Done)
            }
            Command::ListPorts { bridge } => {
                // As ovs-vsctl does, the bridge's own internal port is not listed.
                let b = self.bridges.get(bridge).ok_or_else(|| no_bridge(bridge))?;
                done(Names(b.ports.keys().filter(|p| *p != bridge).cloned().collect()))
            }
            Command::PortToBr { port } => match self.port_bridge(port) {
                Some(b) => done(Names(vec![b.to_owned()])),
                None => Err(no_port(port)),
            },
            Command::Show => Outcome::live(LiveQuery::Show),
            Command::Set { table, record, settings, if_exists } => {
                if *if_exists && !self.record_exists(*table, record) {
                    return done(Done);
                }
                for setting in settings {
                    self.set(*table, record, setting)?;
                }
                done(Done)
            }
            Command::Get { table, record, columns, if_exists } => {
                if *if_exists && !self.record_exists(*table, record) {
                    return done(Values(vec![]));
                }
                let values = columns.iter().map(|c| self.get(*table, record, c)).collect::<Result<_, _>>()?;
                done(Values(values))
            }
            Command::Clear { table, record, columns } => {
                for column in columns {
                    self.clear(*table, record, column)?;
                }
                done(Done)
            }
            Command::Remove { table, record, column, keys } => {
                self.remove(*table, record, column, keys)?;
                done(Done)
            }
            Command::AddFlow { bridge, flow } => {
                let specs = self.parse_flows(bridge, std::slice::from_ref(flow), true)?;
                Outcome::live(LiveQuery::Flows { bridge: bridge.clone(), op: FlowOp::Add(specs) })
            }
            Command::AddFlows { bridge, flows } => {
                let specs = self.parse_flows(bridge, flows, true)?;
                Outcome::live(LiveQuery::Flows { bridge: bridge.clone(), op: FlowOp::Add(specs) })
            }
            Command::ReplaceFlows { bridge, flows } => {
                let specs = self.parse_flows(bridge, flows, true)?;
                Outcome::live(LiveQuery::Flows { bridge: bridge.clone(), op: FlowOp::Replace(specs) })
            }
            Command::ModFlows { bridge, flow, strict } => {
                let spec = self.parse_flows(bridge, std::slice::from_ref(flow), false)?.remove(0);
                Outcome::live(LiveQuery::Flows {
                    bridge: bridge.clone(),
                    op: FlowOp::Modify { spec, strict: *strict },
                })
            }
            Command::DelFlows { bridge, matcher, strict } => {
                let filter = self.parse_filter(bridge, matcher.as_deref())?;
                Outcome::live(LiveQuery::Flows {
                    bridge: bridge.clone(),
                    op: FlowOp::Delete { filter, strict: *strict },
                })
            }
            Command::DumpFlows { bridge, matcher } => {
                let filter = self.parse_filter(bridge, matcher.as_deref())?;
                Outcome::live(LiveQuery::DumpFlows { bridge: bridge.clone(), filter })
            }
            Command::Trace { bridge, packet } => {
                let (spec, _) = self.parse_filter(bridge, Some(packet))?.ok_or_else(|| {
                    err(ErrorCode::InvalidValue, "trace needs a packet, e.g. in_port=p1,ip,nw_dst=198.18.0.2")
                })?;
                Outcome::live(LiveQuery::Trace { bridge: bridge.clone(), key: spec.matcher.value })
            }
            Command::DpctlDumpFlows { bridge } => {
                self.bridges.get(bridge).ok_or_else(|| no_bridge(bridge))?;
                Outcome::live(LiveQuery::Megaflows { bridge: bridge.clone() })
            }
            Command::AddContainerPort { .. }
            | Command::DelContainerPort { .. }
            | Command::AddOverlay { .. }
            | Command::DelOverlay { .. }
            | Command::ListOverlays => Err(err(
                ErrorCode::Internal,
                "container ports and overlays are handled by the control plane, not by Config::apply",
            )),
            Command::SetCluster { store, advertise, ttl_secs } => {
                self.cluster = if store.is_empty() {
                    None
                } else {
                    let advertise = advertise.as_deref().ok_or_else(|| {
                        err(
                            ErrorCode::InvalidValue,
                            "set-cluster needs --advertise IP: this host's underlay address",
                        )
                    })?;
                    Some(
                        ClusterConfig::new(store, advertise, *ttl_secs)
                            .map_err(|e| err(ErrorCode::InvalidValue, e))?,
                    )
                };
                done(Done)
            }
            Command::FdbShow { bridge } => {
                self.bridges.get(bridge).ok_or_else(|| no_bridge(bridge))?;
                Outcome::live(LiveQuery::Fdb { bridge: bridge.clone() })
            }
            Command::FdbStatsShow { bridge } => {
                self.bridges.get(bridge).ok_or_else(|| no_bridge(bridge))?;
                Outcome::live(LiveQuery::FdbStats { bridge: bridge.clone() })
            }
            Command::AddNat { bridge, out_port } => {
                let b = self.bridges.get_mut(bridge).ok_or_else(|| no_bridge(bridge))?;
                if b.gateway.is_none() {
                    return Err(err(
                        ErrorCode::InvalidValue,
                        format!("{bridge} has no gateway: set one first (vsctl set bridge {bridge} gateway=198.18.0.1/24)"),
                    ));
                }
                let port = b.ports.get(out_port).ok_or_else(|| {
                    err(
                        ErrorCode::NotFound,
                        format!(
                            "{bridge} has no port {out_port} (list them with `vsctl list-ports {bridge}`)"
                        ),
                    )
                })?;
                if port.ip.is_none() {
                    return Err(err(
                        ErrorCode::InvalidValue,
                        format!("port {out_port} has no address: set one first (vsctl set port {out_port} ip=198.19.0.1/24 nexthop=198.19.0.254)"),
                    ));
                }
                b.masquerade = Some(Masquerade { out_port: out_port.clone() });
                done(Done)
            }
            Command::DelNat { bridge } => {
                let b = self.bridges.get_mut(bridge).ok_or_else(|| no_bridge(bridge))?;
                if !b.port_mappings.is_empty() {
                    return Err(err(
                        ErrorCode::InvalidValue,
                        format!("{bridge} still maps ports; delete them first (vsctl del-port-mapping ...)"),
                    ));
                }
                if b.masquerade.take().is_none() {
                    return Err(err(ErrorCode::NotFound, format!("{bridge} has no NAT")));
                }
                done(Done)
            }
            Command::AddPortMapping { bridge, proto, host_port, target } => {
                let b = self.bridges.get_mut(bridge).ok_or_else(|| no_bridge(bridge))?;
                let bad = |what: String| err(ErrorCode::InvalidValue, what);
                if b.masquerade.is_none() {
                    return Err(bad(format!(
                        "{bridge} has no NAT: add it first (vsctl add-nat {bridge} masquerade --out-port PORT)"
                    )));
                }
                if proto != "tcp" && proto != "udp" {
                    return Err(bad(format!("protocol {proto:?}: use tcp or udp")));
                }
                if *host_port == 0 {
                    return Err(bad("the host port is 1 to 65535".into()));
                }
                let (ip, port) =
                    target.rsplit_once(':').ok_or_else(|| bad(format!("{target:?} is not IP:PORT")))?;
                let ip: std::net::Ipv4Addr =
                    ip.parse().map_err(|_| bad(format!("{ip:?} is not an IPv4 address")))?;
                let port: u16 = port
                    .parse()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| bad(format!("{port:?} is not a port")))?;
                let gateway =
                    b.gateway.as_deref().and_then(|g| Gateway::parse(g).ok()).expect("add-nat checked it");
                let mask = u32::MAX << (32 - gateway.prefix);
                if u32::from(ip) & mask != gateway.ip & mask {
                    return Err(bad(format!("{ip} is not in {bridge}'s subnet {}", gateway.cidr())));
                }
                if b.port_mappings.iter().any(|m| m.proto == *proto && m.host_port == *host_port) {
                    return Err(bad(format!("{proto} port {host_port} is already mapped")));
                }
                b.port_mappings.push(PortMapping {
                    proto: proto.clone(),
                    host_port: *host_port,
                    container_ip: ip.to_string(),
                    container_port: port,
                });
                done(Done)
            }
            Command::DelPortMapping { bridge, proto, host_port } => {
                let b = self.bridges.get_mut(bridge).ok_or_else(|| no_bridge(bridge))?;
                let before = b.port_mappings.len();
                b.port_mappings.retain(|m| !(m.proto == *proto && m.host_port == *host_port));
                if b.port_mappings.len() == before {
                    return Err(err(
                        ErrorCode::NotFound,
                        format!("{bridge} does not map {proto} port {host_port}"),
                    ));
                }
                done(Done)
            }
            Command::DumpConntrack { bridge } => {
                self.bridges.get(bridge).ok_or_else(|| no_bridge(bridge))?;
                Outcome::live(LiveQuery::Conntrack { bridge: bridge.clone() })
            }
            Command::FlushConntrack { bridge } => {
                self.bridges.get(bridge).ok_or_else(|| no_bridge(bridge))?;
                Outcome::live(LiveQuery::FlushConntrack { bridge: bridge.clone() })
            }
            Command::FdbFlush { bridge } => {
                if let Some(b) = bridge {
                    self.bridges.get(b).ok_or_else(|| no_bridge(b))?;
                }
                Outcome::live(LiveQuery::FdbFlush { bridge: bridge.clone() })
            }
            Command::DumpPorts { bridge, port } => {
                let b = self.bridges.get(bridge).ok_or_else(|| no_bridge(bridge))?;
                if let Some(p) = port {
                    if !b.ports.contains_key(p) {
                        return Err(err(ErrorCode::NotFound, format!("bridge {bridge} has no port {p}")));
                    }
                }
                Outcome::live(LiveQuery::Stats { bridge: bridge.clone(), port: port.clone() })
            }
            Command::MemoryShow => Outcome::live(LiveQuery::Memory),
        }
    }

    fn add_port(
        &mut self,
        bridge: &str,
        port: &str,
        settings: &[String],
        may_exist: bool,
    ) -> Result<(), RpcError> {
        check_name("port", port)?;
        if !self.bridges.contains_key(bridge) {
            return Err(no_bridge(bridge));
        }
        if let Some(owner) = self.port_bridge(port) {
            if may_exist && owner == bridge {
                return Ok(());
            }
            let hint = if owner == bridge { String::new() } else { format!(" (on bridge {owner})") };
            return Err(err(ErrorCode::AlreadyExists, format!("a port named {port} already exists{hint}")));
        }
        if self.bridges.contains_key(port) {
            return Err(err(
                ErrorCode::AlreadyExists,
                format!("{port} is a bridge; a port cannot share its name"),
            ));
        }
        let b = self.bridge_mut(bridge)?;
        let used: Vec<u16> = b.ports.values().map(|p| p.ofport).collect();
        let ofport = (1..=MAX_OFPORT).find(|n| !used.contains(n)).ok_or_else(|| {
            err(ErrorCode::InvalidValue, format!("bridge {bridge} has no free port numbers"))
        })?;
        b.ports.insert(port.to_owned(), PortConfig { ofport, ..PortConfig::default() });
        for setting in settings {
            self.set(Table::Port, port, setting)?;
        }
        Ok(())
    }

    /// Parses flows against the bridge's ports (names become numbers).
    /// Flows being added cannot carry a cookie mask: it only selects.
    fn parse_flows(&self, bridge: &str, flows: &[String], adding: bool) -> Result<Vec<FlowSpec>, RpcError> {
        let b = self.bridges.get(bridge).ok_or_else(|| no_bridge(bridge))?;
        let ports = |name: &str| b.ports.get(name).map(|p| p.ofport);
        flows
            .iter()
            .map(|text| {
                let bad = |e: String| err(ErrorCode::InvalidValue, format!("bad flow {text:?}: {e}"));
                let spec = parse_flow(text, &ports).map_err(bad)?;
                if adding && spec.cookie_mask != 0 {
                    return Err(bad(
                        "a cookie mask selects flows (del-flows, dump-flows, mod-flows); write cookie=VALUE to add"
                            .into(),
                    ));
                }
                Ok(spec)
            })
            .collect()
    }

    fn parse_filter(
        &self,
        bridge: &str,
        matcher: Option<&str>,
    ) -> Result<Option<(FlowSpec, bool)>, RpcError> {
        let b = self.bridges.get(bridge).ok_or_else(|| no_bridge(bridge))?;
        let ports = |name: &str| b.ports.get(name).map(|p| p.ofport);
        match matcher.map(str::trim).filter(|m| !m.is_empty()) {
            None => Ok(None),
            Some(m) => parse_match(m, &ports)
                .map(Some)
                .map_err(|e| err(ErrorCode::InvalidValue, format!("bad match {m:?}: {e}"))),
        }
    }

    /// The port through which IFNAME of namespace NETNS is attached to BRIDGE.
    pub fn container_port(&self, bridge: &str, ifname: &str, netns: &str) -> Option<&str> {
        let b = self.bridges.get(bridge)?;
        b.ports.iter().find_map(|(name, p)| {
            let ids = &p.external_ids;
            (ids.get(CONTAINER_IFACE).map(String::as_str) == Some(ifname)
                && ids.get(CONTAINER_NETNS).map(String::as_str) == Some(netns))
            .then_some(name.as_str())
        })
    }

    /// Checks an `add-container-port` before anything is created.
    pub fn check_container_port(&self, command: &Command) -> Result<(Attachment, Option<u16>), RpcError> {
        let Command::AddContainerPort { bridge, ifname, netns, ip, gateway, mac, mtu, tag, .. } = command
        else {
            return Err(err(ErrorCode::Internal, "not an add-container-port"));
        };
        self.bridges.get(bridge).ok_or_else(|| no_bridge(bridge))?;
        check_name("interface", ifname)?;
        if let Some(port) = self.container_port(bridge, ifname, netns) {
            return Err(err(
                ErrorCode::AlreadyExists,
                format!("{ifname} of namespace {netns} is already attached to {bridge} (port {port})"),
            ));
        }
        crate::netns::resolve_netns(netns).map_err(|e| err(ErrorCode::NotFound, e))?;
        let invalid = |what: String| err(ErrorCode::InvalidValue, what);
        let ip = match ip {
            None => None,
            Some(cidr) => {
                let (addr, prefix) = cidr.split_once('/').ok_or_else(|| {
                    invalid(format!("--ip {cidr:?}: write ADDRESS/PREFIX, e.g. 198.18.0.2/24"))
                })?;
                let addr: std::net::IpAddr = addr
                    .parse()
                    .map_err(|_| invalid(format!("--ip {cidr:?}: {addr:?} is not an IP address")))?;
                let max = if addr.is_ipv4() { 32 } else { 128 };
                let prefix: u8 = prefix
                    .parse()
                    .ok()
                    .filter(|p| *p <= max)
                    .ok_or_else(|| invalid(format!("--ip {cidr:?}: the prefix length is 0 to {max}")))?;
                Some((addr, prefix))
            }
        };
        let gateway = match gateway {
            None => None,
            Some(g) => Some(g.parse().map_err(|_| invalid(format!("--gateway {g:?} is not an IP address")))?),
        };
        let mac = match mac {
            None => None,
            Some(m) => Some(
                crate::core::packet::parse_mac(m)
                    .filter(|m| !crate::core::packet::is_multicast(m))
                    .ok_or_else(|| {
                        invalid(format!("--mac {m:?}: write a unicast MAC such as 02:00:00:00:00:01"))
                    })?,
            ),
        };
        if let Some(mtu) = mtu {
            if !(68..=65535).contains(mtu) {
                return Err(invalid(format!("--mtu {mtu}: use 68 to 65535")));
            }
        }
        if let Some(tag) = tag {
            parse_vlan_id("--tag", &tag.to_string())?;
        }
        let attachment =
            Attachment { netns: netns.clone(), ifname: ifname.clone(), ip, gateway, mac, mtu: *mtu };
        Ok((attachment, *tag))
    }

    /// Adds the host end `host` of an attached pair as a system port.
    pub fn add_container_port(
        &mut self,
        bridge: &str,
        host: &str,
        attachment: &Attachment,
        tag: Option<u16>,
        container_id: Option<&str>,
    ) -> Result<(), RpcError> {
        self.add_port(bridge, host, &[], false)?;
        let port = self.port_mut(host)?;
        port.tag = tag;
        if let Some(id) = container_id {
            port.external_ids.insert(CONTAINER_ID.into(), id.to_owned());
        }
        port.external_ids.insert(CONTAINER_NETNS.into(), attachment.netns.clone());
        port.external_ids.insert(CONTAINER_IFACE.into(), attachment.ifname.clone());
        if let Some((ip, prefix)) = attachment.ip {
            port.external_ids.insert(crate::overlay::CONTAINER_IP.into(), format!("{ip}/{prefix}"));
        }
        if let Some(mac) = attachment.mac {
            port.external_ids
                .insert(crate::overlay::CONTAINER_MAC.into(), crate::core::packet::format_mac(&mac));
        }
        Ok(())
    }

    /// Container ports, as (bridge, port, netns) triples.
    pub fn container_ports(&self) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for (bname, b) in &self.bridges {
            for (pname, p) in &b.ports {
                if let Some(netns) = p.external_ids.get(CONTAINER_NETNS) {
                    out.push((bname.clone(), pname.clone(), netns.clone()));
                }
            }
        }
        out
    }

    pub fn remove_port(&mut self, port: &str) {
        for b in self.bridges.values_mut() {
            b.ports.remove(port);
        }
    }

    fn record_exists(&self, table: Table, record: &str) -> bool {
        match table {
            Table::Bridge => self.bridges.contains_key(record),
            Table::Port | Table::Interface => self.port_bridge(record).is_some(),
        }
    }

    fn set(&mut self, table: Table, record: &str, setting: &str) -> Result<(), RpcError> {
        let (column, key, value) = parse_setting(setting)?;
        let unknown = || unknown_column(table, &column);
        match table {
            Table::Bridge => {
                let b = self.bridge_mut(record)?;
                let map = match column.as_str() {
                    "other_config" => &mut b.other_config,
                    "external_ids" => &mut b.external_ids,
                    "gateway" if key.is_none() => {
                        b.gateway = parse_optional(&value, |v| {
                            Gateway::parse(v).map(|g| g.cidr()).map_err(|e| {
                                err(
                                    ErrorCode::InvalidValue,
                                    format!("invalid gateway: {e} (write e.g. gateway=198.18.0.1/24)"),
                                )
                            })
                        })?;
                        return Ok(());
                    }
                    _ => return Err(unknown()),
                };
                set_map(map, &column, key, &value, |k, v| {
                    if column == "other_config" {
                        check_bridge_option(k, v)
                    } else {
                        Ok(())
                    }
                })
            }
            Table::Port => {
                let p = self.port_mut(record)?;
                match (column.as_str(), key) {
                    ("ip", None) => {
                        p.ip = parse_optional(&value, |v| {
                            Gateway::parse(v).map(|g| g.cidr()).map_err(|e| {
                                err(
                                    ErrorCode::InvalidValue,
                                    format!("invalid ip: {e} (write e.g. ip=198.19.0.1/24)"),
                                )
                            })
                        })?;
                        Ok(())
                    }
                    ("nexthop", None) => {
                        p.nexthop = parse_optional(&value, |v| {
                            v.parse::<std::net::Ipv4Addr>().map(|a| a.to_string()).map_err(|_| {
                                err(
                                    ErrorCode::InvalidValue,
                                    format!("invalid nexthop {v:?}: write an IPv4 address"),
                                )
                            })
                        })?;
                        Ok(())
                    }
                    ("isolated", None) => {
                        p.isolated = match unquote(&value).as_str() {
                            "true" => true,
                            "false" => false,
                            other => {
                                return Err(err(
                                    ErrorCode::InvalidValue,
                                    format!("invalid isolated {other:?}: use true or false"),
                                ))
                            }
                        };
                        Ok(())
                    }
                    ("tag", None) => {
                        p.tag = parse_optional(&value, |v| parse_vlan_id("tag", v))?;
                        Ok(())
                    }
                    ("trunks", None) => {
                        p.trunks = parse_list(&value)
                            .iter()
                            .map(|v| parse_vlan_id("trunks", v))
                            .collect::<Result<_, _>>()?;
                        p.trunks.sort_unstable();
                        p.trunks.dedup();
                        Ok(())
                    }
                    ("vlan_mode", None) => {
                        p.vlan_mode = parse_optional(&value, |v| {
                            VlanMode::parse(v).map(|m| m.name().to_owned()).ok_or_else(|| {
                                err(
                                    ErrorCode::InvalidValue,
                                    format!(
                                        "invalid vlan_mode {v:?}: use access, trunk, native-tagged or native-untagged"
                                    ),
                                )
                            })
                        })?;
                        Ok(())
                    }
                    ("other_config", key) => {
                        set_map(&mut p.other_config, &column, key, &value, |_, _| Ok(()))
                    }
                    ("external_ids", key) => {
                        set_map(&mut p.external_ids, &column, key, &value, |_, _| Ok(()))
                    }
                    _ => Err(unknown()),
                }
            }
            Table::Interface => {
                let i = &mut self.port_mut(record)?.interface;
                match (column.as_str(), key) {
                    ("type", None) => {
                        let t = unquote(&value);
                        if !crate::ports::interface_types().any(|known| known == t) {
                            return Err(err(
                                ErrorCode::InvalidValue,
                                format!(
                                    "unknown interface type {t:?}: use one of {}",
                                    crate::ports::interface_types().collect::<Vec<_>>().join(", ")
                                ),
                            ));
                        }
                        i.r#type = if t == "system" { String::new() } else { t };
                        Ok(())
                    }
                    ("options", key) => set_map(&mut i.options, &column, key, &value, check_interface_option),
                    ("external_ids", key) => {
                        set_map(&mut i.external_ids, &column, key, &value, |_, _| Ok(()))
                    }
                    _ => Err(unknown()),
                }
            }
        }
    }

    fn get(&self, table: Table, record: &str, column: &str) -> Result<String, RpcError> {
        let (column, key) = match column.split_once(':') {
            Some((c, k)) => (c, Some(k)),
            None => (column, None),
        };
        let from_map = |map: &Map| -> Result<String, RpcError> {
            match key {
                None => Ok(format_map(map)),
                Some(k) => map.get(k).map(|v| quote_if_needed(v)).ok_or_else(|| {
                    err(
                        ErrorCode::NotFound,
                        format!("no key {k:?} in {table} record {record:?} column {column}"),
                    )
                }),
            }
        };
        let unknown = || unknown_column(table, column);
        match table {
            Table::Bridge => {
                let b = self.bridges.get(record).ok_or_else(|| no_bridge(record))?;
                match column {
                    "name" => Ok(record.to_owned()),
                    "gateway" => Ok(b.gateway.clone().unwrap_or_default()),
                    "other_config" => from_map(&b.other_config),
                    "external_ids" => from_map(&b.external_ids),
                    "ports" => Ok(format_list(b.ports.keys())),
                    _ => Err(unknown()),
                }
            }
            Table::Port => {
                let p = self.port(record)?;
                match column {
                    "name" => Ok(record.to_owned()),
                    "tag" => Ok(p.tag.map_or("[]".into(), |t| t.to_string())),
                    "isolated" => Ok(p.isolated.to_string()),
                    "ip" => Ok(p.ip.clone().unwrap_or_else(|| "[]".into())),
                    "nexthop" => Ok(p.nexthop.clone().unwrap_or_else(|| "[]".into())),
                    "trunks" => Ok(format_list(p.trunks.iter())),
                    "vlan_mode" => Ok(p.vlan_mode.clone().unwrap_or_else(|| "[]".into())),
                    "other_config" => from_map(&p.other_config),
                    "external_ids" => from_map(&p.external_ids),
                    _ => Err(unknown()),
                }
            }
            Table::Interface => {
                let p = self.port(record)?;
                match column {
                    "name" => Ok(record.to_owned()),
                    "type" => Ok(p.interface.r#type.clone()),
                    "ofport" => Ok(p.ofport.to_string()),
                    "options" => from_map(&p.interface.options),
                    "external_ids" => from_map(&p.interface.external_ids),
                    _ => Err(unknown()),
                }
            }
        }
    }

    fn clear(&mut self, table: Table, record: &str, column: &str) -> Result<(), RpcError> {
        let unknown = || unknown_column(table, column);
        match table {
            Table::Bridge => {
                let b = self.bridge_mut(record)?;
                match column {
                    "gateway" => b.gateway = None,
                    "other_config" => b.other_config.clear(),
                    "external_ids" => b.external_ids.clear(),
                    _ => return Err(unknown()),
                }
            }
            Table::Port => {
                let p = self.port_mut(record)?;
                match column {
                    "tag" => p.tag = None,
                    "isolated" => p.isolated = false,
                    "ip" => p.ip = None,
                    "nexthop" => p.nexthop = None,
                    "trunks" => p.trunks.clear(),
                    "vlan_mode" => p.vlan_mode = None,
                    "other_config" => p.other_config.clear(),
                    "external_ids" => p.external_ids.clear(),
                    _ => return Err(unknown()),
                }
            }
            Table::Interface => {
                let i = &mut self.port_mut(record)?.interface;
                match column {
                    "type" => i.r#type.clear(),
                    "options" => i.options.clear(),
                    "external_ids" => i.external_ids.clear(),
                    _ => return Err(unknown()),
                }
            }
        }
        Ok(())
    }

    fn remove(&mut self, table: Table, record: &str, column: &str, keys: &[String]) -> Result<(), RpcError> {
        if table == Table::Port && column == "trunks" {
            let p = self.port_mut(record)?;
            let ids: Vec<u16> = keys.iter().map(|k| parse_vlan_id("trunks", k)).collect::<Result<_, _>>()?;
            p.trunks.retain(|t| !ids.contains(t));
            return Ok(());
        }
        let map = match (table, column) {
            (Table::Bridge, "other_config") => &mut self.bridge_mut(record)?.other_config,
            (Table::Bridge, "external_ids") => &mut self.bridge_mut(record)?.external_ids,
            (Table::Port, "other_config") => &mut self.port_mut(record)?.other_config,
            (Table::Port, "external_ids") => &mut self.port_mut(record)?.external_ids,
            (Table::Interface, "options") => &mut self.port_mut(record)?.interface.options,
            (Table::Interface, "external_ids") => &mut self.port_mut(record)?.interface.external_ids,
            _ => return Err(unknown_column(table, column)),
        };
        for key in keys {
            // `remove ... key=value` removes the key only if it has that value.
            match key.split_once('=') {
                Some((k, v)) if map.get(k).map(String::as_str) == Some(unquote(v).as_str()) => {
                    map.remove(k);
                }
                Some(_) => {}
                None => {
                    map.remove(key);
                }
            }
        }
        Ok(())
    }

    /// What `show` prints, before the datapath adds each port's status.
    pub fn views(&self) -> Vec<BridgeView> {
        self.bridges
            .iter()
            .map(|(name, b)| BridgeView {
                name: name.clone(),
                gateway: b.gateway.clone(),
                masquerade: b.masquerade.as_ref().map(|m| m.out_port.clone()),
                port_mappings: b.port_mappings.iter().map(PortMapping::describe).collect(),
                overlay: None,
                other_config: b.other_config.clone(),
                external_ids: b.external_ids.clone(),
                ports: b
                    .ports
                    .iter()
                    .map(|(pname, p)| PortView {
                        name: pname.clone(),
                        ofport: p.ofport,
                        tag: p.tag,
                        trunks: p.trunks.clone(),
                        vlan_mode: p.vlan_mode.clone(),
                        isolated: p.isolated,
                        ip: p.ip.clone(),
                        nexthop: p.nexthop.clone(),
                        other_config: p.other_config.clone(),
                        external_ids: p.external_ids.clone(),
                        interface_type: p.interface.kind().to_owned(),
                        options: p.interface.options.clone(),
                        error: None,
                    })
                    .collect(),
            })
            .collect()
    }
}

fn unknown_column(table: Table, column: &str) -> RpcError {
    let known = match table {
        Table::Bridge => "name, other_config, external_ids, ports",
        Table::Port => "name, tag, trunks, vlan_mode, other_config, external_ids",
        Table::Interface => "name, type, ofport, options, external_ids",
    };
    err(ErrorCode::InvalidValue, format!("{table} has no column {column:?}; its columns are {known}"))
}

/// Splits `column[:key]=value`.
fn parse_setting(setting: &str) -> Result<(String, Option<String>, String), RpcError> {
    let (lhs, value) = setting.split_once('=').ok_or_else(|| {
        err(
            ErrorCode::InvalidValue,
            format!("{setting:?} is not a setting: write column=value or column:key=value"),
        )
    })?;
    let (column, key) = match lhs.split_once(':') {
        Some((c, k)) => (c.to_owned(), Some(unquote(k))),
        None => (lhs.to_owned(), None),
    };
    if column.is_empty() || key.as_deref() == Some("") {
        return Err(err(ErrorCode::InvalidValue, format!("{setting:?} has an empty column or key")));
    }
    Ok((column, key, value.to_owned()))
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    s.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap_or(s).to_owned()
}

/// `[a,b]`, `a,b`, `a b` and `[]`.
fn parse_list(value: &str) -> Vec<String> {
    let v = value.trim();
    let v = v.strip_prefix('[').and_then(|v| v.strip_suffix(']')).unwrap_or(v);
    v.split([',', ' ']).map(unquote).filter(|s| !s.is_empty()).collect()
}

fn parse_optional<T>(
    value: &str,
    parse: impl Fn(&str) -> Result<T, RpcError>,
) -> Result<Option<T>, RpcError> {
    let v = unquote(value);
    if v.is_empty() || v == "[]" {
        Ok(None)
    } else {
        parse(&v).map(Some)
    }
}

fn parse_vlan_id(column: &str, value: &str) -> Result<u16, RpcError> {
    value.trim().parse::<u16>().ok().filter(|v| *v <= 4095).ok_or_else(|| {
        err(ErrorCode::InvalidValue, format!("invalid {column} value {value:?}: a VLAN id is 0 to 4095"))
    })
}

/// Sets one key (`column:key=value`) or replaces the whole map
/// (`column={k=v,...}`), validating each pair first.
fn set_map(
    map: &mut Map,
    column: &str,
    key: Option<String>,
    value: &str,
    check: impl Fn(&str, &str) -> Result<(), RpcError>,
) -> Result<(), RpcError> {
    match key {
        Some(k) => {
            let v = unquote(value);
            check(&k, &v)?;
            map.insert(k, v);
        }
        None => {
            let inner =
                value.trim().strip_prefix('{').and_then(|v| v.strip_suffix('}')).ok_or_else(|| {
                    err(
                        ErrorCode::InvalidValue,
                        format!("{column} is a map: write {column}:key=value or {column}={{key=value,...}}"),
                    )
                })?;
            let mut new = Map::new();
            for pair in inner.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').ok_or_else(|| {
                    err(ErrorCode::InvalidValue, format!("{pair:?} in {column} is not key=value"))
                })?;
                let (k, v) = (unquote(k), unquote(v));
                check(&k, &v)?;
                new.insert(k, v);
            }
            *map = new;
        }
    }
    Ok(())
}

fn check_bridge_option(key: &str, value: &str) -> Result<(), RpcError> {
    let bad =
        |what: &str| err(ErrorCode::InvalidValue, format!("invalid other_config:{key} {value:?}: {what}"));
    match key {
        "mac-aging-time" => match value.parse::<u64>() {
            Ok(v) if (1..=86_400 * 365).contains(&v) => Ok(()),
            _ => Err(bad("use a number of seconds, at least 1")),
        },
        "mac-table-size" => match value.parse::<usize>() {
            Ok(v) if (1..=MAX_MAC_TABLE_SIZE).contains(&v) => Ok(()),
            _ => Err(bad(&format!("use a number of entries from 1 to {MAX_MAC_TABLE_SIZE}"))),
        },
        "forward-bpdu" => match value {
            "true" | "false" => Ok(()),
            _ => Err(bad("use true or false")),
        },
        "ct-max" => match value.parse::<usize>() {
            Ok(v) if (1..=MAX_CT_ENTRIES).contains(&v) => Ok(()),
            _ => Err(bad(&format!("use a number of connections from 1 to {MAX_CT_ENTRIES}"))),
        },
        _ => Ok(()),
    }
}

fn check_interface_option(key: &str, value: &str) -> Result<(), RpcError> {
    match key {
        "tx_pcap" | "rx_pcap" if !Path::new(value).is_absolute() => Err(err(
            ErrorCode::InvalidValue,
            format!(
                "options:{key} must be an absolute path (the daemon does not share your working directory): {value:?}"
            ),
        )),
        _ => Ok(()),
    }
}

fn quote_if_needed(v: &str) -> String {
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        v.to_owned()
    } else {
        format!("{v:?}")
    }
}

pub fn format_map(map: &Map) -> String {
    let pairs: Vec<String> =
        map.iter().map(|(k, v)| format!("{}={}", quote_if_needed(k), quote_if_needed(v))).collect();
    format!("{{{}}}", pairs.join(", "))
}

fn format_list<T: ToString>(items: impl Iterator<Item = T>) -> String {
    let items: Vec<String> = items.map(|i| i.to_string()).collect();
    format!("[{}]", items.join(", "))
}

/// The configuration file.
#[derive(Debug, Clone)]
pub struct Database {
    path: PathBuf,
}

impl Database {
    pub fn new(path: impl Into<PathBuf>) -> Database {
        Database { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the configuration; a missing file is an empty configuration.
    pub fn load(&self) -> Result<Config, String> {
        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(e) => return Err(format!("cannot read the database {}: {e}", self.path.display())),
        };
        let config: Config = serde_json::from_str(&text).map_err(|e| {
            format!(
                "the database {} is not valid ({e}); move it aside to start with an empty configuration",
                self.path.display()
            )
        })?;
        if config.format != DB_FORMAT_VERSION {
            return Err(format!(
                "the database {} has format {}, this vswitchd reads format {DB_FORMAT_VERSION}",
                self.path.display(),
                config.format
            ));
        }
        Ok(config)
    }

    /// Replaces the file atomically and durably.
    pub fn save(&self, config: &Config) -> Result<(), String> {
        let fail = |what: &str, e: std::io::Error| {
            format!(
                "cannot save the configuration to {} ({what}: {e}); nothing was changed: make room on its file system or make it writable, then repeat the command",
                self.path.display()
            )
        };
        let dir = self.path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let name = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = dir.join(format!(".{name}.tmp"));
        let mut text = serde_json::to_string_pretty(config).expect("config serializes");
        text.push('\n');
        let written = (|| {
            let mut file = fs::File::create(&tmp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(fail("writing", e));
        }
        fs::rename(&tmp, &self.path).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            fail("renaming", e)
        })?;
        fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| fail("syncing its directory", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply_all(config: &mut Config, commands: &[Command]) -> Result<Vec<Outcome>, RpcError> {
        commands.iter().map(|c| config.apply(c)).collect()
    }

    fn set(table: Table, record: &str, settings: &[&str]) -> Command {
        Command::Set {
            table,
            record: record.into(),
            settings: settings.iter().map(|s| s.to_string()).collect(),
            if_exists: false,
        }
    }

    fn add_port(bridge: &str, port: &str) -> Command {
        Command::AddPort { bridge: bridge.into(), port: port.into(), settings: vec![], may_exist: false }
    }

    #[test]
    fn ports_get_the_lowest_free_number_and_unique_names() {
        let mut c = Config::default();
        apply_all(
            &mut c,
            &[
                Command::AddBr { bridge: "br0".into(), may_exist: false },
                Command::AddBr { bridge: "br1".into(), may_exist: false },
                add_port("br0", "p1"),
                add_port("br0", "p2"),
                Command::DelPort { bridge: None, port: "p1".into(), if_exists: false },
                add_port("br0", "p3"),
            ],
        )
        .unwrap();
        // Port 1 is the bridge's internal port; p1's 2 was freed.
        assert_eq!(c.bridges["br0"].ports["p3"].ofport, 2);
        let e =
            c.apply(&Command::DelPort { bridge: None, port: "br0".into(), if_exists: false }).unwrap_err();
        assert!(e.message.contains("internal port"), "{}", e.message);
        assert_eq!(
            c.apply(&Command::ListPorts { bridge: "br0".into() }).unwrap(),
            Outcome::Done(CommandResult::Names(vec!["p2".into(), "p3".into()]))
        );
        let e = c.apply(&add_port("br1", "p2")).unwrap_err();
        assert!(e.message.contains("on bridge br0"), "{}", e.message);
        let e = c.apply(&add_port("nosuch", "p9")).unwrap_err();
        assert_eq!(e.code, ErrorCode::NotFound.code());
    }

    #[test]
    fn set_validates_and_get_reads_back() {
        let mut c = Config::default();
        apply_all(
            &mut c,
            &[Command::AddBr { bridge: "br0".into(), may_exist: false }, add_port("br0", "p1")],
        )
        .unwrap();
        apply_all(
            &mut c,
            &[
                set(Table::Port, "p1", &["tag=10", "trunks=[20,30]", "vlan_mode=native-untagged"]),
                set(Table::Interface, "p1", &["type=pcap", "options:tx_pcap=/tmp/x.pcap"]),
                set(Table::Bridge, "br0", &["other_config:mac-aging-time=10"]),
            ],
        )
        .unwrap();
        let p = &c.bridges["br0"].ports["p1"];
        assert_eq!((p.tag, p.trunks.clone()), (Some(10), vec![20, 30]));
        assert_eq!(c.bridges["br0"].settings().mac_aging_secs, 10);
        let get = Command::Get {
            table: Table::Interface,
            record: "p1".into(),
            columns: vec!["options:tx_pcap".into(), "type".into()],
            if_exists: false,
        };
        assert_eq!(
            c.apply(&get).unwrap(),
            Outcome::Done(CommandResult::Values(vec!["\"/tmp/x.pcap\"".into(), "pcap".into()]))
        );
        for bad in [
            set(Table::Port, "p1", &["tag=4096"]),
            set(Table::Port, "p1", &["vlan_mode=sideways"]),
            set(Table::Port, "p1", &["colour=red"]),
            set(Table::Interface, "p1", &["type=warp"]),
            set(Table::Interface, "p1", &["options:tx_pcap=relative.pcap"]),
            set(Table::Bridge, "br0", &["other_config:mac-table-size=0"]),
            set(Table::Bridge, "br0", &["tag"]),
        ] {
            let before = c.clone();
            assert!(c.apply(&bad).is_err(), "{bad:?} was accepted");
            assert_eq!(c, before, "{bad:?} changed the configuration before failing");
        }
    }

    #[test]
    fn maps_take_keys_whole_values_and_removal() {
        let mut c = Config::default();
        c.apply(&Command::AddBr { bridge: "br0".into(), may_exist: false }).unwrap();
        c.apply(&set(Table::Bridge, "br0", &["external_ids={a=1, b=\"two words\"}"])).unwrap();
        assert_eq!(c.bridges["br0"].external_ids["b"], "two words");
        c.apply(&Command::Remove {
            table: Table::Bridge,
            record: "br0".into(),
            column: "external_ids".into(),
            keys: vec!["a".into()],
        })
        .unwrap();
        assert_eq!(format_map(&c.bridges["br0"].external_ids), "{b=\"two words\"}");
    }

    #[test]
    fn names_are_checked() {
        let mut c = Config::default();
        for bad in ["", "a/b", "sixteen-chars-xx", "has space"] {
            assert!(c.apply(&Command::AddBr { bridge: bad.into(), may_exist: false }).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn database_round_trips_and_refuses_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::new(dir.path().join("conf.db"));
        assert_eq!(db.load().unwrap(), Config::default());
        let mut c = Config::default();
        c.apply(&Command::AddBr { bridge: "br0".into(), may_exist: false }).unwrap();
        db.save(&c).unwrap();
        assert_eq!(db.load().unwrap(), c);
        fs::write(db.path(), "{ not json").unwrap();
        assert!(db.load().unwrap_err().contains("move it aside"));
    }
}
