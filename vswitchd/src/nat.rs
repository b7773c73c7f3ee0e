//! Docker's bridge-network NAT as flows: `vsctl add-nat BR masquerade
//! --out-port P` and `vsctl add-port-mapping BR tcp|udp HOSTPORT IP:PORT`
//! are kept in the database and compiled here into `ct` and `route` flows,
//! which the datapath installs under [`COOKIE`] (so `dump-flows` shows
//! them and they are replaced, not duplicated, when the settings change).
//!
//! With the gateway G (`gateway=`, subnet S) and the uplink U (`ip=` on
//! the out port), zone 1 holds the uplink's translations and zone 2 the
//! hairpin's:
//! - from S through G: `ct(commit,zone=1,nat(src=U))`, then `route`;
//! - to U on the out port: `ct(zone=1,nat)`, then `route` if it is a reply
//!   (`+est`, `+rel`) or a mapped port (`+dnat`), else drop;
//! - a mapping, from outside: `ct(commit,zone=1,nat(dst=IP:PORT))`;
//! - a mapping, from S to U (hairpin): the same DNAT, then
//!   `ct(commit,zone=2,nat(src=G))` so the reply comes back through the
//!   switch; replies to G undo zone 2 then zone 1.

use serde::{Deserialize, Serialize};

use crate::core::l3::gateway::Gateway;

/// Cookies of compiled flows: this value under [`COOKIE_MASK`].
pub const COOKIE: u64 = 0x5653_4e41_5400_0000;
pub const COOKIE_MASK: u64 = 0xffff_ffff_ff00_0000;

/// Masquerade of the gateway's subnet through `out_port`'s address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Masquerade {
    pub out_port: String,
}

/// `proto HOSTPORT -> container_ip:container_port`, as `docker run -p`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub proto: String,
    pub host_port: u16,
    pub container_ip: String,
    pub container_port: u16,
}

impl PortMapping {
    pub fn describe(&self) -> String {
        format!("{} {} -> {}:{}", self.proto, self.host_port, self.container_ip, self.container_port)
    }
}

/// The tables the compiled flows use beyond table 0.
const OUT: u8 = 250;
const IN: u8 = 251;
const HAIRPIN: u8 = 252;
const HAIRPIN_REPLY: u8 = 253;

/// The flows for a bridge's NAT settings, in ovs-ofctl syntax with port
/// names; `uplink` is the out port's address.
pub fn compile(
    gateway: &Gateway,
    uplink: &Gateway,
    masquerade: &Masquerade,
    mappings: &[PortMapping],
) -> Vec<String> {
    let g_mac = crate::core::packet::format_mac(&gateway.mac);
    let g_ip = std::net::Ipv4Addr::from(gateway.ip);
    let subnet = format!(
        "{}/{}",
        std::net::Ipv4Addr::from(gateway.ip & (u32::MAX << (32 - gateway.prefix))),
        gateway.prefix
    );
    let u_ip = std::net::Ipv4Addr::from(uplink.ip);
    let out = &masquerade.out_port;
    let mut flows = vec![
        format!("table=0,priority=1000,ip,dl_dst={g_mac},nw_src={subnet},actions=ct(commit,zone=1,nat(src={u_ip}),table={OUT})"),
        format!("table={OUT},priority=20,ct_state=+trk+inv,actions=drop"),
        format!("table={OUT},priority=10,actions=route"),
        format!("table=0,priority=1000,ip,in_port={out},nw_dst={u_ip},actions=ct(zone=1,nat,table={IN})"),
        format!("table={IN},priority=10,ct_state=+trk+est,actions=route"),
        format!("table={IN},priority=10,ct_state=+trk+rel,actions=route"),
        format!("table={IN},priority=10,ct_state=+trk+dnat,actions=route"),
        format!("table={IN},priority=0,actions=drop"),
    ];
    if !mappings.is_empty() {
        flows.push(format!(
            "table={HAIRPIN},priority=10,actions=ct(commit,zone=2,nat(src={g_ip}),table={OUT})"
        ));
        flows.push(format!("table=0,priority=1100,ip,dl_dst={g_mac},nw_dst={g_ip},actions=ct(zone=2,nat,table={HAIRPIN_REPLY})"));
        flows.push(format!("table={HAIRPIN_REPLY},priority=10,actions=ct(zone=1,nat,table={OUT})"));
    }
    for m in mappings {
        let (proto, port, target) =
            (&m.proto, m.host_port, format!("{}:{}", m.container_ip, m.container_port));
        flows.push(format!(
            "table=0,priority=1100,{proto},in_port={out},nw_dst={u_ip},tp_dst={port},actions=ct(commit,zone=1,nat(dst={target}),table={IN})"
        ));
        flows.push(format!(
            "table=0,priority=1100,{proto},dl_dst={g_mac},nw_src={subnet},nw_dst={u_ip},tp_dst={port},actions=ct(commit,zone=1,nat(dst={target}),table={HAIRPIN})"
        ));
    }
    flows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ofproto::ofctl::parse_flow;

    #[test]
    fn compiled_flows_parse_and_name_what_they_do() {
        let gateway = Gateway::parse("198.18.0.1/24").unwrap();
        let uplink = Gateway::parse("198.19.0.1/24").unwrap();
        let mapping = PortMapping {
            proto: "tcp".into(),
            host_port: 8080,
            container_ip: "198.18.0.7".into(),
            container_port: 80,
        };
        let flows = compile(&gateway, &uplink, &Masquerade { out_port: "up0".into() }, &[mapping]);
        let ports = |name: &str| (name == "up0").then_some(9);
        for flow in &flows {
            parse_flow(flow, &ports).unwrap_or_else(|e| panic!("{flow}: {e}"));
        }
        assert!(flows[0].contains("nw_src=198.18.0.0/24") && flows[0].contains("nat(src=198.19.0.1)"));
        assert!(flows.iter().any(|f| f.contains("tp_dst=8080") && f.contains("nat(dst=198.18.0.7:80)")));
        assert!(flows.iter().any(|f| f.contains("zone=2,nat(src=198.18.0.1)")), "the hairpin's SNAT");
    }
}
