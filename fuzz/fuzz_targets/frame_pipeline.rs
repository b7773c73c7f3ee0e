//! Random frames through a whole bridge with everything configured at
//! once: MAC learning with VLAN policies, an isolated port, a gateway and
//! an uplink for `route`, flows with conntrack, NAT, recirculation,
//! rewrites, VLAN pushes and tunnel metadata, and a tunnel port whose
//! frames arrive with random metadata. The tunnel decapsulators, the
//! offload finisher and software GRO (with what it merges finished again)
//! see the same bytes. Nothing may panic.
//!
//! Input: records of [port/flags byte][length u16][virtio header 12?][frame].

#![no_main]

use libfuzzer_sys::fuzz_target;
use vswitch_core::bridge::{Bridge, BridgeSettings, Packet};
use vswitch_core::l2::vlan::{PortVlan, VlanMode};
use vswitch_core::l3::gateway::Gateway;
use vswitch_core::offload::{self, Offload, VNET_HDR_LEN};
use vswitch_core::tunnel::gro::{self, Gro};
use vswitch_core::tunnel::{decap_frame, decap_gre_packet, decap_vxlan, TunnelMeta};
use vswitch_core::Timestamp;

const FLOWS: &[&str] = &[
    "priority=100,ip,nw_dst=198.19.9.0/24,actions=ct(commit,zone=1,nat(src=198.19.0.1:1024-1100)),output:3",
    "priority=95,ip,in_port=3,actions=ct(table=2,zone=1,nat)",
    "table=2,priority=10,ct_state=+trk+est,actions=NORMAL",
    "table=2,priority=5,ct_state=+trk+new,actions=drop",
    "priority=90,tcp,actions=ct(table=1,zone=2)",
    "table=1,priority=10,ct_state=+trk+est,actions=NORMAL",
    "table=1,priority=5,ct_state=+trk+new,actions=ct(commit,zone=2,exec(set_field:0x5->ct_mark)),resubmit(,3)",
    "table=3,priority=1,actions=load:0x7->NXM_NX_REG0[],move:NXM_OF_IN_PORT[]->NXM_NX_REG1[0..15],NORMAL",
    "priority=80,udp,tp_dst=53,actions=mod_nw_dst:198.18.0.9,mod_tp_dst:5353,dec_ttl,NORMAL",
    "priority=70,in_port=2,dl_vlan=10,actions=strip_vlan,push_vlan:0x88a8,set_field:20->vlan_vid,output:1,IN_PORT",
    "priority=65,icmp,nw_dst=198.19.0.0/16,actions=route",
    "priority=60,arp,actions=FLOOD",
    "priority=55,ipv6,actions=mod_dl_src:02:00:00:00:00:09,ALL",
    "priority=50,in_port=4,actions=set_field:198.19.0.7->tun_dst,set_tunnel:5,NORMAL",
    "priority=45,tun_id=5,tun_src=198.19.0.0/16,actions=output:4,NORMAL",
];

fn bridge() -> Bridge {
    let settings = BridgeSettings {
        gateway: Some(Gateway::new(u32::from_be_bytes([198, 18, 0, 1]), 24)),
        mac_table_size: 64,
        ct_max: 64,
        ..BridgeSettings::default()
    };
    let mut br = Bridge::new(settings);
    br.set_port(1, "p1", PortVlan::default());
    br.set_port(2, "p2", PortVlan::new(None, &[10, 20], Some(VlanMode::Trunk)));
    br.set_port(3, "up", PortVlan::new(Some(10), &[], Some(VlanMode::Access)));
    br.set_port(4, "tun", PortVlan::default());
    br.set_port(5, "iso", PortVlan::default());
    br.set_tunnel(4, true);
    br.set_isolated(5, true);
    br.set_port_address(
        3,
        Some((
            Gateway::new(u32::from_be_bytes([198, 19, 0, 1]), 24),
            Some(u32::from_be_bytes([198, 19, 0, 254])),
        )),
    );
    let ports = |name: &str| match name {
        "p1" => Some(1),
        "p2" => Some(2),
        "up" => Some(3),
        "tun" => Some(4),
        _ => None,
    };
    for flow in FLOWS {
        let spec = vswitch_core::ofproto::ofctl::parse_flow(flow, &ports).expect("the fuzz flows parse");
        br.add_flow(spec, Timestamp::from_millis(0));
    }
    br
}

fuzz_target!(|data: &[u8]| {
    let mut br = bridge();
    let mut gro = Gro::default();
    let mut sent: Vec<(u16, Vec<u8>)> = Vec::new();
    let mut now = 0u64;
    let mut rest = data;
    while rest.len() >= 3 {
        let flags = rest[0];
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]])).min(rest.len() - 3);
        let record = &rest[3..3 + len];
        rest = &rest[3 + len..];
        now += u64::from(flags & 0x0f) * 700;
        let in_port = u16::from(flags >> 5) % 6;
        // With bit 4, the record starts with a virtio-net header.
        let (offload, frame) = if flags & 0x10 != 0 && record.len() >= VNET_HDR_LEN {
            let header: [u8; VNET_HDR_LEN] = record[..VNET_HDR_LEN].try_into().unwrap();
            match Offload::from_virtio(&header) {
                Ok(o) => (o, &record[VNET_HDR_LEN..]),
                Err(_) => (Offload::NONE, record),
            }
        } else {
            (Offload::NONE, record)
        };
        let _ = offload::finish(frame, &offload, &mut |_| {});
        let _ = decap_frame(frame, 4789);
        let _ = decap_gre_packet(frame);
        let _ = decap_vxlan(frame);
        for mss in [Some(usize::from(flags) + 1), None] {
            if let Some(o) = gro::tunnel_super_frame(frame, mss) {
                let _ = offload::finish(frame, &o, &mut |_| {});
            }
        }
        if let Some(o) = gro::partial_checksum(frame) {
            let _ = offload::finish(frame, &o, &mut |_| {});
        }
        gro.push(u64::from(flags & 3), frame);
        if flags & 0x0f == 0 {
            gro.flush_all();
        }
        while let Some(ready) = gro.take_ready() {
            offload::finish(&ready.frame, &ready.offload, &mut |_| {}).expect("GRO makes frames that finish");
            gro.recycle(ready.frame);
        }
        let time = Timestamp::from_millis(now);
        br.tick(time);
        let packet = Packet { data: frame, offload };
        if in_port == 4 {
            let meta =
                TunnelMeta { id: u64::from(flags), src: u32::from_be_bytes([198, 19, 0, flags]), dst: 0 };
            br.receive_tunneled(time, in_port, packet, &meta, &mut sent);
        } else {
            br.receive(time, in_port, packet, &mut sent);
        }
        if sent.len() > 4096 {
            sent.clear();
        }
    }
});
