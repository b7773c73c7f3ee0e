//! Overlay networks across hosts, kept in etcd: Docker's classic overlay
//! network (KV store) and flannel's model.
//!
//! A network is created once in the cluster store; every host's vswitchd
//! watches the store and makes a local bridge of the network's name. A
//! container attached on any host gets an address allocated cluster-wide
//! (an etcd transaction creates the address's key only if it is absent,
//! so two hosts never get the same one) and is published as an
//! *endpoint* (network, IP, MAC, host VTEP) under the host's lease. Each
//! host turns what it sees into configuration:
//!
//! - one VXLAN port per remote host with endpoints on the network, keyed
//!   by the network's VNI (so networks stay apart even with overlapping
//!   subnets), marked `isolated` so that NORMAL never passes a frame from
//!   one tunnel to another: the mesh has split horizon and floods reach
//!   each host once;
//! - a static MAC entry for every remote endpoint, pointing at its host's
//!   tunnel port: unicast to a known container is never flooded;
//! - an ARP responder flow for every remote endpoint's IP (ARP
//!   suppression, as OVN does it): resolving a remote container costs no
//!   broadcast, and `dump-flows` shows each one under [`COOKIE`];
//! - broadcast and unknown unicast go only to the hosts of that network,
//!   since only they have tunnel ports on its bridge.
//!
//! This module is the part without I/O: the key layout, the records,
//! [`ClusterView`] (what the store holds, fed by list and watch events)
//! and [`reconcile`], which turns a view into the configuration this host
//! should run. [`store`] talks to etcd and drives it.
//!
//! Invariants: [`reconcile`] is a pure function of (configuration, view,
//! local VTEP), idempotent, and touches only what the overlay owns
//! (bridges with an `overlay` binding and their `overlay_peer` tunnel
//! ports); a bridge of the same name that the user made is left alone and
//! reported. Endpoints live under a lease, addresses do not: a host that
//! dies loses its endpoints within the lease TTL but keeps its containers'
//! addresses, which it publishes again when it comes back.
//!
//! Costs: the view holds one small record per endpoint; a reconcile is
//! linear in networks plus endpoints and runs once per batch of watch
//! events, never on the per-packet path.

pub mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::config::{
    BridgeConfig, Config, InterfaceConfig, OverlayBinding, PortConfig, RemoteEndpoint, CONTAINER_IFACE,
};

/// Every key vswitch writes starts with this.
pub const PREFIX: &str = "/vswitch/v1/";
/// Where a tunnel port records the remote host it leads to.
pub const OVERLAY_PEER: &str = "overlay_peer";
/// Where a container port on an overlay records its MAC.
pub const CONTAINER_MAC: &str = "container_mac";
pub const CONTAINER_IP: &str = "container_ip";
/// VNIs chosen for networks created without `--vni` start here, as Docker's do.
pub const FIRST_AUTO_VNI: u32 = 4096;
pub const MAX_VNI: u32 = (1 << 24) - 1;
pub const DEFAULT_MTU: u32 = 1450;
pub const DEFAULT_TTL_SECS: u64 = 10;
/// Cookies of the flows an overlay compiles ("VSOVL"), under [`COOKIE_MASK`].
pub const COOKIE: u64 = 0x5653_4f56_4c00_0000;
pub const COOKIE_MASK: u64 = 0xffff_ffff_ff00_0000;
/// The ARP responder flows' priority in table 0: above NAT's 1000-1100.
pub const ARP_RESPONDER_PRIORITY: u16 = 1500;

pub fn network_key(name: &str) -> String {
    format!("{PREFIX}networks/{name}")
}

pub fn vni_key(vni: u32) -> String {
    format!("{}{vni}", vnis_prefix())
}

pub fn vnis_prefix() -> String {
    format!("{PREFIX}vnis/")
}

/// An address taken on a network: not leased, it lives as long as the
/// container that has it.
pub fn address_key(network: &str, ip: Ipv4Addr) -> String {
    format!("{PREFIX}addresses/{network}/{ip}")
}

pub fn addresses_prefix(network: &str) -> String {
    format!("{PREFIX}addresses/{network}/")
}

/// A container's endpoint, under its host's lease.
pub fn endpoint_key(network: &str, ip: Ipv4Addr) -> String {
    format!("{PREFIX}endpoints/{network}/{ip}")
}

pub fn endpoints_prefix(network: &str) -> String {
    format!("{PREFIX}endpoints/{network}/")
}

/// A live host, under its lease.
pub fn host_key(vtep: Ipv4Addr) -> String {
    format!("{PREFIX}hosts/{vtep}")
}

/// A subnet, `A.B.C.D/N` with the host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    pub fn parse(text: &str) -> Result<Subnet, String> {
        let (addr, prefix) = text
            .split_once('/')
            .ok_or_else(|| format!("subnet {text:?}: write A.B.C.D/N, e.g. 198.18.100.0/24"))?;
        let addr: Ipv4Addr =
            addr.parse().map_err(|_| format!("subnet {text:?}: {addr:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (8..=30).contains(p))
            .ok_or_else(|| format!("subnet {text:?}: the prefix length is 8 to 30"))?;
        let network = Ipv4Addr::from(u32::from(addr) & Self::mask_of(prefix));
        if network != addr {
            return Err(format!("subnet {text:?} has host bits set: did you mean {network}/{prefix}?"));
        }
        Ok(Subnet { network, prefix })
    }

    fn mask_of(prefix: u8) -> u32 {
        u32::MAX << (32 - prefix)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & Self::mask_of(self.prefix) == u32::from(self.network)
    }

    /// The usable host addresses, lowest first (network and broadcast excluded).
    pub fn hosts(&self) -> impl Iterator<Item = Ipv4Addr> {
        let first = u32::from(self.network) + 1;
        let last = u32::from(self.network) | !Self::mask_of(self.prefix);
        (first..last).map(Ipv4Addr::from)
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// A network as stored under [`network_key`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub subnet: Subnet,
    pub vni: u32,
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    pub mtu: u32,
}

impl NetworkRecord {
    /// Checks what `add-overlay` was given; the VNI is chosen later when absent.
    pub fn new(
        name: &str,
        subnet: &str,
        vni: Option<u32>,
        gateway: Option<&str>,
        mtu: Option<u32>,
    ) -> Result<NetworkRecord, String> {
        crate::config::check_bridge_name(name).map_err(|e| e.message)?;
        let subnet = Subnet::parse(subnet)?;
        if let Some(vni) = vni {
            if !(1..=MAX_VNI).contains(&vni) {
                return Err(format!("--vni {vni}: a VXLAN network identifier is 1 to {MAX_VNI}"));
            }
        }
        let gateway = match gateway {
            None => None,
            Some(g) => {
                let ip: Ipv4Addr =
                    g.parse().map_err(|_| format!("--gateway {g:?} is not an IPv4 address"))?;
                if !subnet.contains(ip) || !subnet.hosts().any(|h| h == ip) {
                    return Err(format!("--gateway {ip} is not a host address of {subnet}"));
                }
                Some(ip)
            }
        };
        let mtu = mtu.unwrap_or(DEFAULT_MTU);
        if !(576..=9000).contains(&mtu) {
            return Err(format!("--mtu {mtu}: use 576 to 9000 (1450 fits VXLAN on a 1500-byte underlay)"));
        }
        Ok(NetworkRecord { subnet, vni: vni.unwrap_or(0), gateway, mtu })
    }

    /// The gateway as a bridge's `gateway` column takes it.
    pub fn gateway_cidr(&self) -> Option<String> {
        self.gateway.map(|g| format!("{g}/{}", self.subnet.prefix))
    }
}

/// A container on a network, as stored under [`endpoint_key`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub ip: Ipv4Addr,
    pub mac: String,
    /// The host's VTEP: where its tunnels end.
    pub host: Ipv4Addr,
}

/// Who holds an address, as stored under [`address_key`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressRecord {
    pub host: Ipv4Addr,
}

/// What the store holds, as far as this host has seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterView {
    pub networks: BTreeMap<String, NetworkRecord>,
    /// By network, then IP.
    pub endpoints: BTreeMap<String, BTreeMap<Ipv4Addr, EndpointRecord>>,
    pub hosts: BTreeSet<Ipv4Addr>,
}

/// A key the view does not understand (another version's, or damaged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    pub key: String,
    pub why: String,
}

impl ClusterView {
    /// Applies one key's new value (`None`: deleted).
    pub fn apply(&mut self, key: &str, value: Option<&[u8]>) -> Result<(), Ignored> {
        let ignored = |why: String| Ignored { key: key.to_owned(), why };
        let Some(rest) = key.strip_prefix(PREFIX) else {
            return Err(ignored("not under the vswitch prefix".into()));
        };
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            ["networks", name] => match value {
                None => {
                    self.networks.remove(*name);
                }
                Some(v) => {
                    let record: NetworkRecord =
                        serde_json::from_slice(v).map_err(|e| ignored(e.to_string()))?;
                    // What add-overlay would have refused is refused here
                    // too: one bad record must not stop every host.
                    let gateway = record.gateway.map(|g| g.to_string());
                    let checked = NetworkRecord::new(
                        name,
                        &record.subnet.to_string(),
                        Some(record.vni),
                        gateway.as_deref(),
                        Some(record.mtu),
                    )
                    .map_err(ignored)?;
                    if checked != record {
                        return Err(ignored(format!("not as add-overlay writes it: {record:?}")));
                    }
                    self.networks.insert((*name).to_owned(), record);
                }
            },
            ["endpoints", network, ip] => {
                let ip: Ipv4Addr = ip.parse().map_err(|_| ignored("not an IPv4 address".into()))?;
                match value {
                    None => {
                        if let Some(eps) = self.endpoints.get_mut(*network) {
                            eps.remove(&ip);
                            if eps.is_empty() {
                                self.endpoints.remove(*network);
                            }
                        }
                    }
                    Some(v) => {
                        let record: EndpointRecord =
                            serde_json::from_slice(v).map_err(|e| ignored(e.to_string()))?;
                        self.endpoints.entry((*network).to_owned()).or_default().insert(ip, record);
                    }
                }
            }
            ["hosts", ip] => {
                let ip: Ipv4Addr = ip.parse().map_err(|_| ignored("not an IPv4 address".into()))?;
                match value {
                    None => self.hosts.remove(&ip),
                    Some(_) => self.hosts.insert(ip),
                };
            }
            // Addresses and VNIs are read where they are allocated.
            ["addresses", ..] | ["vnis", ..] => {}
            _ => return Err(ignored("unknown key".into())),
        }
        Ok(())
    }

    /// The remote hosts with endpoints on `network`, and their endpoints.
    pub fn peers(&self, network: &str, local: Ipv4Addr) -> BTreeMap<Ipv4Addr, Vec<&EndpointRecord>> {
        let mut peers: BTreeMap<Ipv4Addr, Vec<&EndpointRecord>> = BTreeMap::new();
        for ep in self.endpoints.get(network).into_iter().flat_map(|e| e.values()) {
            if ep.host != local {
                peers.entry(ep.host).or_default().push(ep);
            }
        }
        peers
    }
}

/// The tunnel port to `vtep` on the network with `vni`: unique across
/// bridges (the VNI is), and at most 15 characters.
pub fn tunnel_port_name(vni: u32, vtep: Ipv4Addr) -> String {
    let name = format!("vx{vni:x}.{:08x}", u32::from(vtep));
    if name.len() <= 15 {
        name
    } else {
        format!("{vni:x}.{:08x}", u32::from(vtep))
    }
}

/// Docker's MAC for a container address: 02:42 and the IPv4 address.
pub fn container_mac(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("02:42:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

/// The ARP responder flows for an overlay's remote endpoints: a request
/// for one of their addresses is turned into the reply, in the switch,
/// and sent back out of the port it came in on.
pub fn arp_responder_flows(binding: &OverlayBinding) -> Vec<String> {
    binding
        .remote
        .iter()
        .filter_map(|r| {
            let mac = crate::core::packet::parse_mac(&r.mac)?;
            let mac_value = mac.iter().fold(0u64, |v, b| v << 8 | u64::from(*b));
            Some(format!(
                "table=0,priority={ARP_RESPONDER_PRIORITY},arp,arp_op=1,arp_tpa={ip},actions=\
                 move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],mod_dl_src:{mac},load:0x2->NXM_OF_ARP_OP[],\
                 move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],load:{mac_value:#x}->NXM_NX_ARP_SHA[],\
                 move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],load:{ip_value:#x}->NXM_OF_ARP_SPA[],IN_PORT",
                ip = r.ip,
                mac = r.mac,
                ip_value = u32::from(r.ip),
            ))
        })
        .collect()
}

/// Something [`reconcile`] could not do, reported rather than forced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict(pub String);

/// The configuration this host should run for `view`: `config` with every
/// overlay bridge, tunnel port, static MAC and ARP flow made to match.
/// Everything else in `config` is kept as it is.
pub fn reconcile(config: &Config, view: &ClusterView, local: Ipv4Addr) -> (Config, Vec<Conflict>) {
    reconcile_only(config, view, local, None)
}

/// [`reconcile`] for the network `only` if given, leaving every other
/// overlay bridge as it is: what a command about one network may change,
/// whatever the view knows of the others (before the first list, nothing).
pub fn reconcile_only(
    config: &Config,
    view: &ClusterView,
    local: Ipv4Addr,
    only: Option<&str>,
) -> (Config, Vec<Conflict>) {
    let mut next = config.clone();
    let mut conflicts = Vec::new();
    let in_scope = |name: &str| only.is_none_or(|o| o == name);
    next.bridges.retain(|name, b| b.overlay.is_none() || !in_scope(name) || view.networks.contains_key(name));
    for (name, network) in view.networks.iter().filter(|(name, _)| in_scope(name)) {
        if next.bridges.get(name).is_some_and(|b| b.overlay.is_none()) {
            conflicts.push(Conflict(format!(
                "overlay network {name} has no bridge here: a bridge of that name is already configured (delete it with `vsctl del-br {name}`)"
            )));
            continue;
        }
        if !next.bridges.contains_key(name) {
            if let Some(owner) = next.port_bridge(name) {
                conflicts.push(Conflict(format!(
                    "overlay network {name} has no bridge here: {name} is a port of bridge {owner}"
                )));
                continue;
            }
            if let Err(e) = next.apply(&proto::Command::AddBr { bridge: name.clone(), may_exist: true }) {
                conflicts.push(Conflict(format!("overlay network {name}: {}", e.message)));
                continue;
            }
        }
        let peers = view.peers(name, local);
        let wanted: BTreeMap<String, Ipv4Addr> =
            peers.keys().map(|vtep| (tunnel_port_name(network.vni, *vtep), *vtep)).collect();
        let bridge = next.bridges.get_mut(name).expect("made above");
        bridge.gateway = network.gateway_cidr();
        bridge
            .ports
            .retain(|pname, p| !p.external_ids.contains_key(OVERLAY_PEER) || wanted.contains_key(pname));
        let mut remote = Vec::new();
        let stale: Vec<(&String, &Ipv4Addr)> = wanted
            .iter()
            .filter(|(pname, vtep)| {
                let port = tunnel_port(network.vni, **vtep, local);
                bridge.ports.get(*pname).is_none_or(|p| p.interface != port.interface || !p.isolated)
            })
            .collect();
        for (pname, vtep) in stale {
            if let Err(e) = add_owned_port(&mut next, name, pname, tunnel_port(network.vni, *vtep, local)) {
                conflicts.push(Conflict(format!("overlay network {name}: {e}")));
            }
        }
        let bridge = next.bridges.get_mut(name).expect("made above");
        for (pname, vtep) in &wanted {
            if !bridge.ports.contains_key(pname) {
                continue;
            }
            for ep in &peers[vtep] {
                remote.push(RemoteEndpoint { ip: ep.ip, mac: ep.mac.clone(), port: pname.clone() });
            }
        }
        bridge.overlay = Some(OverlayBinding {
            subnet: network.subnet.to_string(),
            vni: network.vni,
            gateway: network.gateway,
            mtu: network.mtu,
            remote,
        });
    }
    (next, conflicts)
}

fn tunnel_port(vni: u32, vtep: Ipv4Addr, local: Ipv4Addr) -> PortConfig {
    let options = BTreeMap::from([
        ("remote_ip".to_owned(), vtep.to_string()),
        ("local_ip".to_owned(), local.to_string()),
        ("key".to_owned(), vni.to_string()),
    ]);
    PortConfig {
        isolated: true,
        external_ids: BTreeMap::from([(OVERLAY_PEER.to_owned(), vtep.to_string())]),
        interface: InterfaceConfig { r#type: "vxlan".into(), options, ..InterfaceConfig::default() },
        ..PortConfig::default()
    }
}

/// Adds (or replaces) a port the overlay owns, keeping its OpenFlow number
/// when it had one.
fn add_owned_port(config: &mut Config, bridge: &str, name: &str, mut port: PortConfig) -> Result<(), String> {
    if let Some(owner) = config.port_bridge(name).filter(|b| *b != bridge) {
        return Err(format!("a port named {name} already exists on bridge {owner}"));
    }
    let b: &mut BridgeConfig = config.bridges.get_mut(bridge).ok_or("no bridge")?;
    port.ofport = match b.ports.get(name) {
        Some(existing) => existing.ofport,
        None => {
            let used: BTreeSet<u16> = b.ports.values().map(|p| p.ofport).collect();
            (1..=crate::config::MAX_OFPORT).find(|n| !used.contains(n)).ok_or("no free port numbers")?
        }
    };
    b.ports.insert(name.to_owned(), port);
    Ok(())
}

/// The endpoints this host should have published: its container ports on
/// overlay bridges, by network.
pub fn local_endpoints(config: &Config, local: Ipv4Addr) -> Vec<(String, EndpointRecord)> {
    let mut out = Vec::new();
    for (name, b) in &config.bridges {
        if b.overlay.is_none() {
            continue;
        }
        for p in b.ports.values() {
            if !p.external_ids.contains_key(CONTAINER_IFACE) {
                continue;
            }
            let ip = p.external_ids.get(CONTAINER_IP).and_then(|c| c.split('/').next()?.parse().ok());
            let mac = p.external_ids.get(CONTAINER_MAC);
            if let (Some(ip), Some(mac)) = (ip, mac) {
                out.push((name.clone(), EndpointRecord { ip, mac: mac.clone(), host: local }));
            }
        }
    }
    out
}

/// The address to try first for a new container on `network`: the lowest
/// free host address, skipping the gateway and what `taken` holds, or a
/// random one of the first few free ones so that hosts allocating at the
/// same time rarely race for the same key. `None`: the subnet is full.
pub fn pick_address(network: &NetworkRecord, taken: &BTreeSet<Ipv4Addr>, spread: u64) -> Option<Ipv4Addr> {
    const CANDIDATES: usize = 16;
    let free: Vec<Ipv4Addr> = network
        .subnet
        .hosts()
        .filter(|ip| Some(*ip) != network.gateway && !taken.contains(ip))
        .take(CANDIDATES)
        .collect();
    if free.is_empty() {
        return None;
    }
    Some(free[(spread % free.len() as u64) as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);
    const C: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 3);

    fn network(vni: u32) -> NetworkRecord {
        NetworkRecord::new("ovl", "198.18.100.0/24", Some(vni), Some("198.18.100.1"), None).unwrap()
    }

    fn put(view: &mut ClusterView, key: String, value: impl Serialize) {
        view.apply(&key, Some(&serde_json::to_vec(&value).unwrap())).unwrap();
    }

    fn endpoint(view: &mut ClusterView, net: &str, ip: [u8; 4], host: Ipv4Addr) {
        let ip = Ipv4Addr::from(ip);
        put(view, endpoint_key(net, ip), EndpointRecord { ip, mac: container_mac(ip), host });
    }

    #[test]
    fn subnets_are_checked_and_enumerated() {
        let s = Subnet::parse("198.18.100.0/30").unwrap();
        assert_eq!(
            s.hosts().collect::<Vec<_>>(),
            [Ipv4Addr::new(198, 18, 100, 1), Ipv4Addr::new(198, 18, 100, 2)]
        );
        assert!(Subnet::parse("198.18.100.1/24").unwrap_err().contains("did you mean 198.18.100.0/24"));
        assert!(Subnet::parse("198.18.100.0").is_err());
        assert!(Subnet::parse("198.18.100.0/31").is_err());
    }

    #[test]
    fn network_records_refuse_bad_input_with_the_reason() {
        assert!(NetworkRecord::new("ovl", "198.18.100.0/24", Some(0), None, None)
            .unwrap_err()
            .contains("1 to"));
        assert!(NetworkRecord::new("ovl", "198.18.100.0/24", None, Some("198.18.101.1"), None)
            .unwrap_err()
            .contains("not a host address"));
        assert!(NetworkRecord::new("ovl", "198.18.100.0/24", None, None, Some(100))
            .unwrap_err()
            .contains("--mtu"));
        assert!(NetworkRecord::new("a/b", "198.18.100.0/24", None, None, None).is_err());
        assert_eq!(network(7).gateway_cidr().as_deref(), Some("198.18.100.1/24"));
    }

    #[test]
    fn the_view_follows_puts_and_deletes_and_ignores_strangers() {
        let mut view = ClusterView::default();
        put(&mut view, network_key("ovl"), network(42));
        endpoint(&mut view, "ovl", [198, 18, 100, 2], B);
        put(&mut view, host_key(B), serde_json::json!({}));
        assert_eq!(view.networks["ovl"].vni, 42);
        assert_eq!(view.peers("ovl", A).len(), 1);
        assert!(view.peers("ovl", B).is_empty(), "a host is not its own peer");
        view.apply(&endpoint_key("ovl", Ipv4Addr::new(198, 18, 100, 2)), None).unwrap();
        assert!(view.endpoints.is_empty());
        assert!(view.apply("/other/key", Some(b"x")).is_err());
        assert!(view.apply(&network_key("bad"), Some(b"not json")).is_err());
        let mut bad = network(42);
        bad.vni = 1 << 24;
        assert!(view.apply(&network_key("bad"), Some(&serde_json::to_vec(&bad).unwrap())).is_err());
        bad = network(42);
        bad.subnet.network = Ipv4Addr::new(198, 18, 100, 7);
        assert!(view.apply(&network_key("bad"), Some(&serde_json::to_vec(&bad).unwrap())).is_err());
        assert!(view.apply(&format!("{PREFIX}endpoints/ovl/nope"), Some(b"{}")).is_err());
        assert!(!view.networks.contains_key("bad"));
    }

    #[test]
    fn reconcile_makes_a_bridge_a_tunnel_per_peer_static_macs_and_arp_answers() {
        let mut view = ClusterView::default();
        put(&mut view, network_key("ovl"), network(42));
        endpoint(&mut view, "ovl", [198, 18, 100, 2], A);
        endpoint(&mut view, "ovl", [198, 18, 100, 3], B);
        endpoint(&mut view, "ovl", [198, 18, 100, 4], B);
        endpoint(&mut view, "ovl", [198, 18, 100, 5], C);
        let (config, conflicts) = reconcile(&Config::default(), &view, A);
        assert!(conflicts.is_empty(), "{conflicts:?}");
        let bridge = &config.bridges["ovl"];
        assert_eq!(bridge.gateway.as_deref(), Some("198.18.100.1/24"));
        let to_b = &bridge.ports[&tunnel_port_name(42, B)];
        assert!(to_b.isolated, "split horizon between tunnels");
        assert_eq!(to_b.interface.kind(), "vxlan");
        assert_eq!(to_b.interface.options["remote_ip"], "198.19.0.2");
        assert_eq!(to_b.interface.options["key"], "42");
        assert!(bridge.ports.contains_key(&tunnel_port_name(42, C)));
        assert_eq!(bridge.ports.len(), 3, "the internal port and one tunnel per remote host");
        let overlay = bridge.overlay.as_ref().unwrap();
        let remote: Vec<(Ipv4Addr, &str)> = overlay.remote.iter().map(|r| (r.ip, r.port.as_str())).collect();
        assert_eq!(remote.len(), 3, "the local endpoint is not remote");
        assert!(remote.contains(&(Ipv4Addr::new(198, 18, 100, 4), tunnel_port_name(42, B).as_str())));

        // Idempotent; and when C's endpoint goes, so does C's tunnel.
        assert_eq!(reconcile(&config, &view, A).0, config);
        view.apply(&endpoint_key("ovl", Ipv4Addr::new(198, 18, 100, 5)), None).unwrap();
        let (after, _) = reconcile(&config, &view, A);
        assert!(!after.bridges["ovl"].ports.contains_key(&tunnel_port_name(42, C)));
        assert_eq!(
            after.bridges["ovl"].ports[&tunnel_port_name(42, B)].ofport,
            to_b.ofport,
            "a kept tunnel keeps its port number"
        );

        // The network deleted: its bridge goes.
        view.apply(&network_key("ovl"), None).unwrap();
        assert!(reconcile(&after, &view, A).0.bridges.is_empty());
    }

    #[test]
    fn a_command_about_one_network_touches_no_other() {
        let mut view = ClusterView::default();
        put(&mut view, network_key("red"), network(100));
        put(&mut view, network_key("blue"), network(200));
        let (config, _) = reconcile(&Config::default(), &view, A);
        // Before the first list, the view holds only what the command made.
        let mut fresh = ClusterView::default();
        put(&mut fresh, network_key("green"), network(300));
        let (next, _) = reconcile_only(&config, &fresh, A, Some("green"));
        assert!(next.bridges.contains_key("red") && next.bridges.contains_key("blue"));
        assert!(next.bridges.contains_key("green"));
        let (gone, _) = reconcile_only(&next, &ClusterView::default(), A, Some("red"));
        assert!(!gone.bridges.contains_key("red") && gone.bridges.contains_key("blue"));
    }

    #[test]
    fn reconcile_leaves_the_users_bridges_alone() {
        let mut config = Config::default();
        config.apply(&proto::Command::AddBr { bridge: "ovl".into(), may_exist: false }).unwrap();
        config.apply(&proto::Command::AddBr { bridge: "mine".into(), may_exist: false }).unwrap();
        let mut view = ClusterView::default();
        put(&mut view, network_key("ovl"), network(42));
        endpoint(&mut view, "ovl", [198, 18, 100, 3], B);
        let (next, conflicts) = reconcile(&config, &view, A);
        assert_eq!(next, config);
        assert_eq!(conflicts.len(), 1);
        assert!(conflicts[0].0.contains("vsctl del-br ovl"));
    }

    #[test]
    fn two_networks_with_one_subnet_get_their_own_tunnels() {
        let mut view = ClusterView::default();
        put(&mut view, network_key("red"), network(100));
        put(&mut view, network_key("blue"), network(200));
        endpoint(&mut view, "red", [198, 18, 100, 2], B);
        endpoint(&mut view, "blue", [198, 18, 100, 2], B);
        let (config, _) = reconcile(&Config::default(), &view, A);
        assert_eq!(config.bridges["red"].ports[&tunnel_port_name(100, B)].interface.options["key"], "100");
        assert_eq!(config.bridges["blue"].ports[&tunnel_port_name(200, B)].interface.options["key"], "200");
    }

    #[test]
    fn arp_responder_flows_turn_a_request_into_the_reply() {
        use crate::core::bridge::Bridge;
        use crate::core::Timestamp;
        let binding = OverlayBinding {
            subnet: SUBNET_FOR_TESTS.into(),
            vni: 42,
            gateway: None,
            mtu: DEFAULT_MTU,
            remote: vec![RemoteEndpoint {
                ip: Ipv4Addr::new(198, 18, 100, 3),
                mac: container_mac(Ipv4Addr::new(198, 18, 100, 3)),
                port: "vx2a.c6130002".into(),
            }],
        };
        let flows = arp_responder_flows(&binding);
        assert_eq!(flows.len(), 1);
        let mut bridge = Bridge::default();
        for port in 1..=3 {
            bridge.set_port(port, &format!("p{port}"), crate::core::l2::vlan::PortVlan::default());
        }
        let now = Timestamp::from_millis(0);
        let mut spec =
            crate::core::ofproto::ofctl::parse_flow(&flows[0], &|_: &str| None).expect("the flow parses");
        spec.cookie = COOKIE;
        bridge.add_flow(spec, now);

        let asker = [2, 0, 0, 0, 0, 0xa];
        let mut request = vec![0xff; 6];
        request.extend_from_slice(&asker);
        request.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
        request.extend_from_slice(&asker);
        request.extend_from_slice(&[198, 18, 100, 2, 0, 0, 0, 0, 0, 0, 198, 18, 100, 3]);
        request.resize(60, 0);
        let mut out: Vec<(u16, Vec<u8>)> = Vec::new();
        bridge.receive_batch(now, 1, [&request[..]], &mut out);
        assert_eq!(out.len(), 1, "answered, not flooded");
        let (port, reply) = &out[0];
        assert_eq!(*port, 1, "back out of the asking port");
        let remote = [2, 0x42, 198, 18, 100, 3];
        assert_eq!((&reply[0..6], &reply[6..12]), (&asker[..], &remote[..]));
        assert_eq!(&reply[20..22], &[0, 2]);
        assert_eq!(&reply[22..32], &[2, 0x42, 198, 18, 100, 3, 198, 18, 100, 3]);
        assert_eq!(&reply[32..42], &[2, 0, 0, 0, 0, 0xa, 198, 18, 100, 2]);

        // Another address is not answered: the request floods as usual.
        let mut other = request.clone();
        other[38..42].copy_from_slice(&[198, 18, 100, 9]);
        out.clear();
        bridge.receive_batch(now, 1, [&other[..]], &mut out);
        assert_eq!(out.iter().map(|(p, _)| *p).collect::<Vec<_>>(), [2, 3]);
    }

    const SUBNET_FOR_TESTS: &str = "198.18.100.0/24";

    #[test]
    fn tunnel_port_names_fit_an_interface_name() {
        assert_eq!(tunnel_port_name(42, B), "vx2a.c6130002");
        assert!(tunnel_port_name(MAX_VNI, Ipv4Addr::BROADCAST).len() <= 15);
        assert_ne!(tunnel_port_name(MAX_VNI, B), tunnel_port_name(MAX_VNI - 1, B));
    }

    #[test]
    fn addresses_skip_the_gateway_and_what_is_taken() {
        let net = network(1);
        let taken = BTreeSet::from([Ipv4Addr::new(198, 18, 100, 2)]);
        assert_eq!(pick_address(&net, &taken, 0), Some(Ipv4Addr::new(198, 18, 100, 3)));
        let small = NetworkRecord::new("s", "198.18.100.0/30", Some(1), Some("198.18.100.1"), None).unwrap();
        assert_eq!(pick_address(&small, &taken, 5), None);
        assert_eq!(container_mac(Ipv4Addr::new(198, 18, 100, 2)), "02:42:c6:12:64:02");
    }
}
