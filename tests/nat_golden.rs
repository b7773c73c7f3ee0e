//! Docker's bridge network through the real daemon with pcap ports: a
//! gateway, an uplink with an address and next hop, `add-nat` masquerade
//! and `add-port-mapping`, compiled into flows `dump-flows` shows. Frames
//! replayed on the container side and the uplink are checked field by
//! field, ARP resolution included.

use testkit::*;

const CONTAINER: Mac = mac(0xa);
const NEXTHOP: Mac = mac(0xfe);
const GATEWAY_MAC: Mac = [0x02, 0x76, 198, 18, 0, 1];
const UPLINK_MAC: Mac = [0x02, 0x76, 198, 19, 0, 1];

fn udp(dst: Mac, src: Mac, ip_src: [u8; 4], ip_dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut out = Vec::new();
    etherparse::PacketBuilder::ethernet2(src, dst)
        .ipv4(ip_src, ip_dst, 64)
        .udp(sport, dport)
        .write(&mut out, b"through the NAT")
        .unwrap();
    out
}

fn arp_reply(sender: Mac, sender_ip: [u8; 4], target: Mac, target_ip: [u8; 4]) -> Vec<u8> {
    arp(ARP_REPLY, target, (sender, sender_ip), (target, target_ip))
}

/// (MAC dst, MAC src, IP src, IP dst, sport, dport, TTL), asserting checksums.
fn fields(frame: &[u8]) -> (Mac, Mac, [u8; 4], [u8; 4], u16, u16, u8) {
    let p = etherparse::SlicedPacket::from_ethernet(frame).unwrap();
    let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else { panic!("not IPv4: {frame:02x?}") };
    let Some(etherparse::TransportSlice::Udp(u)) = &p.transport else { panic!("not UDP") };
    let h = ip.header().to_header();
    assert_eq!(h.calc_header_checksum(), h.header_checksum, "IPv4 checksum");
    assert_eq!(u.to_header().calc_checksum_ipv4(&h, u.payload()).unwrap(), u.checksum(), "UDP checksum");
    let mac = |r: std::ops::Range<usize>| -> Mac { frame[r].try_into().unwrap() };
    (mac(0..6), mac(6..12), h.source, h.destination, u.source_port(), u.destination_port(), h.time_to_live)
}

fn docker_like_switch() -> Switch {
    let sw = Switch::start();
    sw.bridge_with_pcap_ports("br0", &["p1", "up0"]);
    sw.ok(&[
        "set",
        "bridge",
        "br0",
        "gateway=198.18.0.1/24",
        "--",
        "set",
        "port",
        "up0",
        "ip=198.19.0.1/24",
        "nexthop=198.19.0.254",
        "--",
        "add-nat",
        "br0",
        "masquerade",
        "--out-port",
        "up0",
    ]);
    sw
}

#[test]
fn masquerade_through_the_gateway_and_back_resolving_by_arp() {
    let sw = docker_like_switch();
    // Out: the uplink first asks for its next hop; the answer releases the frame.
    sw.replay("br0", "p1", &[udp(GATEWAY_MAC, CONTAINER, [198, 18, 0, 2], [203, 0, 113, 7], 5000, 53)]);
    let asked = sw.new_tx("up0");
    assert_eq!(asked.len(), 1);
    assert_eq!((&asked[0][12..14], &asked[0][38..42]), (&[0x08, 0x06][..], &[198, 19, 0, 254][..]));
    sw.replay("br0", "up0", &[arp_reply(NEXTHOP, [198, 19, 0, 254], UPLINK_MAC, [198, 19, 0, 1])]);
    let out = sw.new_tx("up0");
    assert_eq!(out.len(), 1);
    assert_eq!(fields(&out[0]), (NEXTHOP, UPLINK_MAC, [198, 19, 0, 1], [203, 0, 113, 7], 5000, 53, 63));
    // Back: un-NATed, then the gateway asks the subnet for the container.
    sw.replay("br0", "up0", &[udp(UPLINK_MAC, NEXTHOP, [203, 0, 113, 7], [198, 19, 0, 1], 53, 5000)]);
    let asked = sw.new_tx("p1");
    assert_eq!(asked.len(), 1);
    assert_eq!(&asked[0][38..42], &[198, 18, 0, 2]);
    sw.replay("br0", "p1", &[arp_reply(CONTAINER, [198, 18, 0, 2], GATEWAY_MAC, [198, 18, 0, 1])]);
    let back = sw.new_tx("p1");
    assert_eq!(back.len(), 1);
    assert_eq!(fields(&back[0]), (CONTAINER, GATEWAY_MAC, [203, 0, 113, 7], [198, 18, 0, 2], 53, 5000, 63));
    // The frames that waited for ARP were delayed, not dropped.
    for port in ["p1", "up0"] {
        let stats = sw.port_stats("br0", port);
        assert_eq!(stats["drop_reasons"], serde_json::json!({}), "{port}: {stats}");
    }
    // Unasked traffic to the uplink's address is dropped by the compiled flows.
    sw.replay("br0", "up0", &[udp(UPLINK_MAC, NEXTHOP, [203, 0, 113, 9], [198, 19, 0, 1], 53, 6000)]);
    sw.expect_tx(&[("p1", vec![]), ("up0", vec![])]);
    let flows = sw.ok(&["dump-flows", "br0"]);
    assert!(flows.contains("nat(src=198.19.0.1)") && flows.contains("actions=route"), "{flows}");
}

#[test]
fn a_mapped_port_is_translated_to_the_container_with_valid_checksums() {
    let sw = docker_like_switch();
    sw.ok(&["add-port-mapping", "br0", "udp", "5353", "198.18.0.7:53"]);
    const SERVICE: Mac = mac(0x7);
    // From outside to the uplink's 5353: the gateway asks for 198.18.0.7 first.
    sw.replay("br0", "up0", &[udp(UPLINK_MAC, NEXTHOP, [203, 0, 113, 7], [198, 19, 0, 1], 40000, 5353)]);
    let asked = sw.new_tx("p1");
    assert_eq!((asked.len(), &asked[0][38..42]), (1, &[198, 18, 0, 7][..]));
    sw.replay("br0", "p1", &[arp_reply(SERVICE, [198, 18, 0, 7], GATEWAY_MAC, [198, 18, 0, 1])]);
    let inside = sw.new_tx("p1");
    assert_eq!(inside.len(), 1);
    assert_eq!(fields(&inside[0]), (SERVICE, GATEWAY_MAC, [203, 0, 113, 7], [198, 18, 0, 7], 40000, 53, 63));
    // The answer leaves from the uplink's address and port (the next hop is
    // asked for first, then the answer released).
    sw.replay("br0", "p1", &[udp(GATEWAY_MAC, SERVICE, [198, 18, 0, 7], [203, 0, 113, 7], 53, 40000)]);
    sw.replay("br0", "up0", &[arp_reply(NEXTHOP, [198, 19, 0, 254], UPLINK_MAC, [198, 19, 0, 1])]);
    let out = sw.new_tx("up0");
    let answer = out.iter().find(|f| f[12..14] == [0x08, 0x00]).expect("the answer left by the uplink");
    assert_eq!(fields(answer), (NEXTHOP, UPLINK_MAC, [198, 19, 0, 1], [203, 0, 113, 7], 5353, 40000, 63));
}

#[test]
fn port_mappings_compile_into_flows_and_go_away() {
    let sw = docker_like_switch();
    sw.ok(&["add-port-mapping", "br0", "tcp", "8080", "198.18.0.7:80"]);
    let flows = sw.ok(&["dump-flows", "br0"]);
    assert!(flows.contains("tp_dst=8080") && flows.contains("nat(dst=198.18.0.7:80)"), "{flows}");
    let show = sw.ok(&["show"]);
    assert!(
        show.contains("masquerade: out_port=up0") && show.contains("port_mapping: tcp 8080 -> 198.18.0.7:80"),
        "{show}"
    );
    let err = sw.fails(&["add-port-mapping", "br0", "tcp", "8080", "198.18.0.8:80"]);
    assert!(err.contains("already mapped"), "{err}");
    let err = sw.fails(&["add-port-mapping", "br0", "tcp", "8081", "10.0.0.1:80"]);
    assert!(err.contains("not in br0's subnet"), "{err}");
    let err = sw.fails(&["del-nat", "br0"]);
    assert!(err.contains("delete them first"), "{err}");
    let err = sw.fails(&["del-port", "br0", "up0"]);
    assert!(err.contains("NAT out port"), "{err}");
    sw.ok(&["del-port-mapping", "br0", "tcp", "8080"]);
    assert!(!sw.ok(&["dump-flows", "br0"]).contains("tp_dst=8080"));
    sw.ok(&["del-nat", "br0"]);
    let flows = sw.json(&["dump-flows", "br0"]);
    assert_eq!(flows.as_array().unwrap().len(), 1, "only the default flow is left: {flows}");
}

#[test]
fn nat_needs_a_gateway_and_an_addressed_out_port() {
    let sw = Switch::start();
    sw.bridge_with_pcap_ports("br0", &["p1", "up0"]);
    let err = sw.fails(&["add-nat", "br0", "masquerade", "--out-port", "up0"]);
    assert!(err.contains("has no gateway") && err.contains("gateway="), "{err}");
    sw.ok(&["set", "bridge", "br0", "gateway=198.18.0.1/24"]);
    let err = sw.fails(&["add-nat", "br0", "masquerade", "--out-port", "up0"]);
    assert!(err.contains("has no address") && err.contains("ip="), "{err}");
    let err = sw.fails(&["add-port-mapping", "br0", "tcp", "80", "198.18.0.7:80"]);
    assert!(err.contains("add-nat"), "{err}");
}
