//! Tunnels as transcripts. Decapsulation: tcpdump's VXLAN and GRE captures
//! (`../shared/pcaps/tcpdump`) are taken apart by the tunnel code and
//! switched through a bridge whose tunnel port has the capture's remote
//! end and VNI, as the datapath does with what its tunnel socket reads.
//! What leaves the bridge's one local port must be exactly the inner
//! frames, cut from the captures at their fixed offsets; packets for no
//! port are counted by reason. Encapsulation: frames leaving tunnel ports
//! carry the key and remote end that the port or the flow says, with the
//! frame intact. (The outer headers the kernel adds are checked on the
//! wire by `e2e_tunnels`.)

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use testkit::*;
use vswitchd::core::bridge::{Bridge, Transmit};
use vswitchd::core::l2::vlan::PortVlan;
use vswitchd::core::offload::Offload;
use vswitchd::core::tunnel::{
    decap_frame, decap_vxlan, encap, TunnelConfig, TunnelDrop, TunnelKind, TunnelMap, TunnelMeta,
};
use vswitchd::core::Timestamp;

const LOCAL: u16 = 1;
const TUNNEL: u16 = 2;

/// Every frame the bridge sent, with its tunnel metadata if it went to a
/// tunnel port.
#[derive(Default)]
struct Sent(Vec<(u16, Vec<u8>, Option<TunnelMeta>)>);

impl Transmit for Sent {
    fn transmit(&mut self, port: u16, frame: &[u8], _offload: &Offload) {
        self.0.push((port, frame.to_vec(), None));
    }

    fn transmit_tunneled(&mut self, port: u16, frame: &[u8], _offload: &Offload, tunnel: &TunnelMeta) {
        self.0.push((port, frame.to_vec(), Some(*tunnel)));
    }
}

fn config(kind: TunnelKind, options: &[(&str, &str)]) -> TunnelConfig {
    let options = options.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    TunnelConfig::from_options(kind, &options).expect("valid tunnel options")
}

fn bridge() -> Bridge {
    let mut br = Bridge::default();
    br.set_port(LOCAL, "p1", PortVlan::default());
    br.set_port(TUNNEL, "tun0", PortVlan::default());
    br.set_tunnel(TUNNEL, true);
    br
}

/// A capture from `../shared/pcaps/tcpdump`, or `None` (saying so) when
/// the directory is not beside this checkout; CI must have it.
fn capture(name: &str) -> Option<Vec<Vec<u8>>> {
    let Some(dir) = shared_pcaps() else {
        assert!(!in_ci(), "../shared/pcaps/tcpdump is missing in CI");
        eprintln!("SKIPPED: ../shared/pcaps/tcpdump is not beside this checkout");
        return None;
    };
    let file = proto::pcap::read_ethernet_file(&dir.join(name)).expect("an Ethernet capture");
    Some(file.records.into_iter().map(|r| r.data).collect())
}

/// What switching a capture's packets through a bridge whose tunnel
/// port has `config` did: the frames out of the local port, and the
/// packets no port took, by reason.
struct Transcript {
    /// Packets the tunnel port took.
    received: u64,
    delivered: Vec<Vec<u8>>,
    dropped: BTreeMap<&'static str, usize>,
}

fn switch_capture(frames: &[Vec<u8>], config: TunnelConfig) -> Transcript {
    let mut br = bridge();
    let mut ports = TunnelMap::default();
    ports.insert(config, TUNNEL);
    let mut sent = Sent::default();
    let mut dropped = BTreeMap::new();
    for frame in frames {
        let found = decap_frame(frame, config.dst_port)
            .and_then(|d| ports.find(d.src, d.key).map(|(_, port)| (d, *port)));
        match found {
            Ok((d, port)) => {
                br.receive_tunneled(Timestamp::from_millis(0), port, d.inner.into(), &d.meta(), &mut sent);
            }
            Err(reason) => *dropped.entry(reason.name()).or_default() += 1,
        }
    }
    assert!(sent.0.iter().all(|(port, _, _)| *port == LOCAL), "nothing goes back into the tunnel");
    let received = br.port(TUNNEL).expect("the tunnel port").counters.rx_packets;
    Transcript { received, delivered: sent.0.into_iter().map(|(_, f, _)| f).collect(), dropped }
}

/// Frames from `src` in `frames`, cut at `offset` (where the inner frame
/// starts after the outer headers).
fn inner_frames_from(frames: &[Vec<u8>], src: [u8; 4], offset: usize) -> Vec<Vec<u8>> {
    frames.iter().filter(|f| f[26..30] == src).map(|f| f[offset..].to_vec()).collect()
}

// Outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8.
const VXLAN_INNER_OFFSET: usize = 50;

#[test]
fn vxlan_capture_is_decapsulated_on_the_port_for_its_remote_and_vni() {
    let Some(frames) = capture("vxlan.pcap") else { return };
    // We are 192.168.202.1; 192.168.203.1 is the remote end; VNI 100.
    let port = config(TunnelKind::Vxlan, &[("remote_ip", "192.168.203.1"), ("key", "100")]);
    let t = switch_capture(&frames, port);
    let from_remote = inner_frames_from(&frames, [192, 168, 203, 1], VXLAN_INNER_OFFSET);
    assert_eq!(from_remote.len(), 5);
    assert_eq!(t.delivered, from_remote, "the inner frames, whole and in order");
    // The other half of the capture is our own side's traffic to the remote.
    assert_eq!(t.dropped, BTreeMap::from([("tunnel_wrong_source", 5)]));

    // The same packets on a port with another VNI are refused as such.
    let other_vni = config(TunnelKind::Vxlan, &[("remote_ip", "192.168.203.1"), ("key", "101")]);
    let t = switch_capture(&frames, other_vni);
    assert!(t.delivered.is_empty());
    assert_eq!(t.dropped, BTreeMap::from([("tunnel_unknown_key", 5), ("tunnel_wrong_source", 5)]));

    // A flow-based port takes both directions. NORMAL then learns both
    // hosts behind the tunnel, so only the first frame to each unknown
    // host is flooded to p1; the rest are same-port drops, as in OVS.
    let flow = config(TunnelKind::Vxlan, &[("remote_ip", "flow"), ("key", "flow")]);
    let t = switch_capture(&frames, flow);
    assert_eq!((t.received, t.dropped.len()), (10, 0));
    assert_eq!(
        t.delivered,
        vec![frames[0][VXLAN_INNER_OFFSET..].to_vec(), frames[1][VXLAN_INNER_OFFSET..].to_vec()]
    );
}

#[test]
fn vxlan_on_linux_s_old_port_needs_dst_port_8472() {
    let Some(frames) = capture("vxlan_port_8472.pcap") else { return };
    let on_4789 = config(TunnelKind::Vxlan, &[("remote_ip", "192.168.203.1"), ("key", "100")]);
    let t = switch_capture(&frames, on_4789);
    assert!(t.delivered.is_empty());
    assert_eq!(t.dropped, BTreeMap::from([("tunnel_bad_header", 10)]));
    let on_8472 =
        config(TunnelKind::Vxlan, &[("remote_ip", "192.168.203.1"), ("key", "100"), ("dst_port", "8472")]);
    let t = switch_capture(&frames, on_8472);
    assert_eq!(t.delivered, inner_frames_from(&frames, [192, 168, 203, 1], VXLAN_INNER_OFFSET));
}

#[test]
fn vxlan_gso_captures_over_ipv6_come_out_whole_or_are_counted_truncated() {
    // Outer IPv6 (Ethernet 14 + IPv6 40 + UDP 8 + VXLAN 8); the switch's
    // own tunnels are IPv4, so only a flow-based port (any source) takes them.
    let flow = config(TunnelKind::Vxlan, &[("remote_ip", "flow"), ("key", "flow")]);
    for name in ["gso-ipv6-vxlan-ipv4.pcap", "gso-ipv6-vxlan-ipv6.pcap"] {
        let Some(frames) = capture(name) else { return };
        let t = switch_capture(&frames, flow);
        let inner: Vec<Vec<u8>> = frames.iter().map(|f| f[70..].to_vec()).collect();
        assert!(inner.iter().all(|f| f.len() > 4000), "{name}: GSO super-frames");
        assert_eq!(t.delivered, inner, "{name}");
    }
    // "Big TCP" captures: IPv6 jumbograms cut short by the snap length.
    // Each is taken apart or counted, never lost.
    for name in ["bigtcp-ipv6-vxlan-ipv4.pcap", "bigtcp-ipv6-vxlan-ipv6.pcap"] {
        let Some(frames) = capture(name) else { return };
        let t = switch_capture(&frames, flow);
        let counted: usize = t.dropped.values().sum();
        assert_eq!(t.received as usize + counted, frames.len(), "{name}: {:?}", t.dropped);
    }
}

#[test]
fn gre_captures_carry_no_ethernet_and_are_counted_so() {
    // tcpdump's GRE captures carry protocols other than Ethernet (0x6558):
    // keepalives, WCCP and ERSPAN. A GRE port must count, not deliver, them.
    let keyed = config(TunnelKind::Gre, &[("remote_ip", "flow"), ("key", "flow")]);
    let cases = [
        ("various_gre.pcap", 30usize),
        ("erspan-type-i-1.pcap", 0),
        ("erspan-type-ii-2.pcap", 0),
        ("erspan-type-iii-ft-7.pcap", 0),
    ];
    for (name, gre_expected) in cases {
        let Some(frames) = capture(name) else { return };
        let gre = frames.iter().filter(|f| decap_frame(f, 4789) != Err(TunnelDrop::BadHeader)).count();
        if gre_expected > 0 {
            assert_eq!(gre, gre_expected, "{name}: GRE packets");
        }
        let t = switch_capture(&frames, keyed);
        assert!(t.delivered.is_empty(), "{name}");
        assert!(
            t.dropped.get("tunnel_not_ethernet").copied().unwrap_or(0) >= gre.max(1),
            "{name}: {:?}",
            t.dropped
        );
        assert_eq!(t.dropped.values().sum::<usize>(), frames.len(), "{name}: every packet accounted for");
    }
}

fn udp_frame() -> Vec<u8> {
    let mut frame = Vec::new();
    etherparse::PacketBuilder::ethernet2(mac(1), mac(2))
        .ipv4([198, 18, 0, 1], [198, 18, 0, 2], 64)
        .udp(4000, 5000)
        .write(&mut frame, b"through the tunnel")
        .unwrap();
    frame
}

#[test]
fn encapsulation_takes_key_and_remote_from_the_port_or_the_flow() {
    let now = Timestamp::from_millis(0);
    let mut br = bridge();
    br.set_port(3, "gre0", PortVlan::default());
    br.set_tunnel(3, true);
    let ports = |name: &str| match name {
        "p1" => Some(LOCAL),
        "tun0" => Some(TUNNEL),
        "gre0" => Some(3),
        _ => None,
    };
    let flow = "in_port=p1,actions=set_field:198.19.0.2->tun_dst,set_tunnel:0x1234,output:tun0,output:gre0";
    br.add_flow(vswitchd::core::ofproto::ofctl::parse_flow(flow, &ports).unwrap(), now);
    let mut sent = Sent::default();
    let frame = udp_frame();
    br.receive(now, LOCAL, frame.as_slice().into(), &mut sent);
    let meta = TunnelMeta { id: 0x1234, src: 0, dst: u32::from(Ipv4Addr::new(198, 19, 0, 2)) };
    assert_eq!(
        sent.0,
        vec![(TUNNEL, frame.clone(), Some(meta)), (3, frame.clone(), Some(meta))],
        "both tunnel ports get the frame unchanged, with the flow's metadata"
    );

    // tun0 is flow-based: VNI and remote end from the flow.
    let vxlan = config(TunnelKind::Vxlan, &[("remote_ip", "flow"), ("key", "flow")]);
    let (remote, header) = encap(&vxlan, &meta).unwrap();
    assert_eq!(remote, Ipv4Addr::new(198, 19, 0, 2));
    assert_eq!(hex(header.as_bytes()), hex(&[0x08, 0, 0, 0, 0x00, 0x12, 0x34, 0x00]));
    let payload = [header.as_bytes(), &frame].concat();
    assert_eq!(decap_vxlan(&payload), Ok((0x1234, &frame[..])));

    // gre0 has its own remote end and key, which win over the flow's.
    let gre = config(TunnelKind::Gre, &[("remote_ip", "198.19.0.9"), ("key", "7")]);
    let (remote, header) = encap(&gre, &meta).unwrap();
    assert_eq!(remote, Ipv4Addr::new(198, 19, 0, 9));
    assert_eq!(hex(header.as_bytes()), hex(&[0x20, 0x00, 0x65, 0x58, 0, 0, 0, 7]));

    // Received from a tunnel, a frame keeps its metadata through NORMAL
    // (the default flow) back out of a flow-based port: tun_id and the
    // remote end it came from are what a reply would use.
    let mut br = bridge();
    let mut sent = Sent::default();
    let received = TunnelMeta { id: 77, src: u32::from(Ipv4Addr::new(198, 19, 0, 5)), dst: 0 };
    br.receive_tunneled(now, TUNNEL, frame.as_slice().into(), &received, &mut sent);
    assert_eq!(sent.0, vec![(LOCAL, frame.clone(), None)]);
}

#[test]
fn tunnel_metadata_is_matched_by_flows() {
    let now = Timestamp::from_millis(0);
    let mut br = bridge();
    let ports = |name: &str| match name {
        "p1" => Some(LOCAL),
        "tun0" => Some(TUNNEL),
        _ => None,
    };
    for flow in [
        "priority=10,tun_id=5,tun_src=198.19.0.0/24,actions=output:p1",
        "priority=5,in_port=tun0,actions=drop",
    ] {
        br.add_flow(vswitchd::core::ofproto::ofctl::parse_flow(flow, &ports).unwrap(), now);
    }
    let frame = udp_frame();
    let from = |id: u64, src: [u8; 4]| TunnelMeta { id, src: u32::from(Ipv4Addr::from(src)), dst: 0 };
    for (meta, delivered) in [
        (from(5, [198, 19, 0, 7]), true),
        (from(6, [198, 19, 0, 7]), false),
        (from(5, [198, 19, 1, 7]), false),
    ] {
        let mut sent = Sent::default();
        br.receive_tunneled(now, TUNNEL, frame.as_slice().into(), &meta, &mut sent);
        assert_eq!(!sent.0.is_empty(), delivered, "{meta:?}");
    }
}
