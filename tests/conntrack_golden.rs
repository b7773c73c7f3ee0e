//! Golden tests of the `ct` action through the real daemon: flows that
//! masquerade an inside port behind an uplink address and keep a stateful
//! firewall, frames replayed into pcap ports, what each port sent checked
//! field by field with checksums validated by etherparse, and the
//! connection table seen through `dump-conntrack`.

use testkit::*;

const INSIDE: Mac = mac(0xa);
const OUTSIDE: Mac = mac(0xb);
const CONTAINER: [u8; 4] = [198, 18, 0, 2];
const UPLINK: [u8; 4] = [198, 19, 0, 1];
const SERVER: [u8; 4] = [198, 19, 0, 9];

fn udp(dst: Mac, src: Mac, ip_src: [u8; 4], ip_dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut out = Vec::new();
    etherparse::PacketBuilder::ethernet2(src, dst)
        .ipv4(ip_src, ip_dst, 64)
        .udp(sport, dport)
        .write(&mut out, b"golden conntrack test")
        .unwrap();
    out
}

/// A TCP segment with flags `S` (SYN), `SA` (SYN-ACK) or `A` (ACK).
fn tcp(dst: Mac, src: Mac, ip_src: [u8; 4], ip_dst: [u8; 4], sport: u16, dport: u16, flags: &str) -> Vec<u8> {
    let mut b =
        etherparse::PacketBuilder::ethernet2(src, dst).ipv4(ip_src, ip_dst, 64).tcp(sport, dport, 1, 4096);
    if flags.contains('S') {
        b = b.syn();
    }
    if flags.contains('A') {
        b = b.ack(1);
    }
    let mut out = Vec::new();
    b.write(&mut out, b"").unwrap();
    out
}

/// (src, dst, sport, dport) of an IPv4 TCP or UDP frame, asserting that
/// the IP and transport checksums are right.
fn addresses(frame: &[u8]) -> ([u8; 4], [u8; 4], u16, u16) {
    let p = etherparse::SlicedPacket::from_ethernet(frame).unwrap();
    let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else { panic!("not IPv4") };
    let h = ip.header().to_header();
    assert_eq!(h.calc_header_checksum(), h.header_checksum, "IPv4 header checksum");
    match &p.transport {
        Some(etherparse::TransportSlice::Udp(u)) => {
            assert_eq!(
                u.to_header().calc_checksum_ipv4(&h, u.payload()).unwrap(),
                u.checksum(),
                "UDP checksum"
            );
            (h.source, h.destination, u.source_port(), u.destination_port())
        }
        Some(etherparse::TransportSlice::Tcp(t)) => {
            assert_eq!(
                t.to_header().calc_checksum_ipv4(&h, t.payload()).unwrap(),
                t.checksum(),
                "TCP checksum"
            );
            (h.source, h.destination, t.source_port(), t.destination_port())
        }
        other => panic!("not TCP or UDP: {other:?}"),
    }
}

/// A bridge whose p1 is the inside and p2 the uplink, masquerading p1's
/// traffic behind 198.19.0.1 and letting in only what answers it.
fn masquerading_switch() -> Switch {
    let sw = Switch::start();
    sw.bridge_with_pcap_ports("br0", &["p1", "p2"]);
    let flows = sw.path("nat.txt");
    std::fs::write(
        &flows,
        "table=0,priority=10,in_port=p1,ip,actions=ct(commit,nat(src=198.19.0.1),table=1)\n\
         table=0,priority=10,in_port=p2,ip,actions=ct(nat,table=1)\n\
         table=1,priority=10,in_port=p1,ct_state=+trk,actions=output:p2\n\
         table=1,priority=10,in_port=p2,ct_state=+trk+est,actions=output:p1\n\
         table=1,priority=10,in_port=p2,ct_state=+trk+rel,actions=output:p1\n\
         table=1,priority=20,ct_state=+trk+inv,actions=drop\n",
    )
    .unwrap();
    sw.ok(&["replace-flows", "br0", flows.to_str().unwrap()]);
    sw
}

#[test]
fn masquerade_rewrites_out_and_back_with_valid_checksums() {
    let sw = masquerading_switch();
    sw.replay("br0", "p1", &[udp(OUTSIDE, INSIDE, CONTAINER, SERVER, 5000, 53)]);
    let out = sw.new_tx("p2");
    assert_eq!(out.len(), 1);
    assert_eq!(addresses(&out[0]), (UPLINK, SERVER, 5000, 53), "the server sees the uplink's address");
    sw.replay("br0", "p2", &[udp(INSIDE, OUTSIDE, SERVER, UPLINK, 53, 5000)]);
    let back = sw.new_tx("p1");
    assert_eq!(back.len(), 1);
    assert_eq!(addresses(&back[0]), (SERVER, CONTAINER, 53, 5000), "the reply reaches the container");
    let conns = sw.json(&["dump-conntrack", "br0"]);
    let conn = &conns.as_array().unwrap()[0];
    assert_eq!(conn["proto"], "udp");
    assert_eq!(conn["original"]["src"], "198.18.0.2");
    assert_eq!(conn["reply"]["dst"], "198.19.0.1");
    assert_eq!(conn["state"], "REPLIED");
    let text = sw.ok(&["dump-conntrack", "br0"]);
    assert!(text.starts_with("udp,orig=(src=198.18.0.2,dst=198.19.0.9,sport=5000,dport=53)"), "{text}");
}

#[test]
fn an_icmp_error_for_a_masqueraded_flow_is_translated_back() {
    let sw = masquerading_switch();
    sw.replay("br0", "p1", &[udp(OUTSIDE, INSIDE, CONTAINER, SERVER, 5000, 53)]);
    let sent = sw.new_tx("p2").remove(0);
    // The server's host says port unreachable to the uplink, quoting what it got.
    let mut error = Vec::new();
    etherparse::PacketBuilder::ethernet2(OUTSIDE, INSIDE)
        .ipv4(SERVER, UPLINK, 64)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::Port,
        ))
        .write(&mut error, &sent[14..14 + 28])
        .unwrap();
    sw.replay("br0", "p2", &[error]);
    let back = sw.new_tx("p1");
    assert_eq!(back.len(), 1, "the related error is let in");
    let p = etherparse::SlicedPacket::from_ethernet(&back[0]).unwrap();
    let Some(etherparse::NetSlice::Ipv4(outer)) = &p.net else { panic!("not IPv4") };
    let h = outer.header().to_header();
    assert_eq!((h.source, h.destination), (SERVER, CONTAINER));
    assert_eq!(h.calc_header_checksum(), h.header_checksum);
    let Some(etherparse::TransportSlice::Icmpv4(icmp)) = &p.transport else { panic!("not ICMP") };
    assert_eq!(icmp.header().icmp_type.calc_checksum(icmp.payload()), icmp.checksum(), "ICMP checksum");
    let quote = etherparse::Ipv4HeaderSlice::from_slice(icmp.payload()).unwrap().to_header();
    assert_eq!(
        (quote.source, quote.destination),
        (CONTAINER, SERVER),
        "the quote is what the container sent"
    );
    assert_eq!(quote.calc_header_checksum(), quote.header_checksum);
}

#[test]
fn ct_state_new_established_and_invalid() {
    let sw = masquerading_switch();
    // Unasked-for traffic from outside is new in table 1: no flow passes it.
    sw.replay("br0", "p2", &[udp(INSIDE, OUTSIDE, SERVER, UPLINK, 53, 7777)]);
    // A TCP packet that is not a SYN cannot start a connection: invalid.
    sw.replay("br0", "p1", &[tcp(OUTSIDE, INSIDE, CONTAINER, SERVER, 40000, 80, "A")]);
    sw.expect_tx(&[("p1", vec![]), ("p2", vec![])]);
    // The SYN starts one; the server's answer is established and let in.
    sw.replay("br0", "p1", &[tcp(OUTSIDE, INSIDE, CONTAINER, SERVER, 40000, 80, "S")]);
    assert_eq!(addresses(&sw.new_tx("p2")[0]), (UPLINK, SERVER, 40000, 80));
    sw.replay("br0", "p2", &[tcp(INSIDE, OUTSIDE, SERVER, UPLINK, 80, 40000, "SA")]);
    assert_eq!(addresses(&sw.new_tx("p1")[0]), (SERVER, CONTAINER, 80, 40000));
    let p2 = sw.port_stats("br0", "p2");
    assert_eq!(p2["drop_reasons"]["flow_drop"], 1, "{p2}");
    let flows = sw.ok(&["dump-flows", "br0"]);
    assert!(flows.contains("n_packets=1, n_bytes=54, idle_age=0, priority=20,ct_state=+trk+inv"), "{flows}");
}

#[test]
fn entries_expire_with_injected_time_and_flush() {
    let sw = masquerading_switch();
    sw.replay("br0", "p1", &[udp(OUTSIDE, INSIDE, CONTAINER, SERVER, 5000, 53)]);
    assert_eq!(sw.json(&["dump-conntrack", "br0"]).as_array().unwrap().len(), 1);
    // Unreplied UDP lives 30 s.
    sw.ok(&["time-warp", "29000"]);
    assert_eq!(sw.json(&["dump-conntrack", "br0"]).as_array().unwrap().len(), 1);
    sw.ok(&["time-warp", "2000"]);
    assert!(sw.json(&["dump-conntrack", "br0"]).as_array().unwrap().is_empty());
    // The late reply finds nothing, so it is new and not let in.
    sw.replay("br0", "p2", &[udp(INSIDE, OUTSIDE, SERVER, UPLINK, 53, 5000)]);
    sw.expect_tx(&[("p1", vec![])]);
    sw.replay("br0", "p1", &[udp(OUTSIDE, INSIDE, CONTAINER, SERVER, 5001, 53)]);
    sw.ok(&["flush-conntrack", "br0"]);
    assert!(sw.json(&["dump-conntrack", "br0"]).as_array().unwrap().is_empty());
}

#[test]
fn a_full_table_drops_new_connections_and_counts_them() {
    let sw = masquerading_switch();
    sw.ok(&["set", "bridge", "br0", "other_config:ct-max=1"]);
    sw.replay(
        "br0",
        "p1",
        &[
            udp(OUTSIDE, INSIDE, CONTAINER, SERVER, 5000, 53),
            udp(OUTSIDE, INSIDE, CONTAINER, SERVER, 5001, 53),
        ],
    );
    assert_eq!(sw.new_tx("p2").len(), 1);
    assert_eq!(sw.port_stats("br0", "p1")["drop_reasons"]["ct_table_full"], 1);
    let err = sw.fails(&["set", "bridge", "br0", "other_config:ct-max=0"]);
    assert!(err.contains("ct-max"), "{err}");
    let err = sw.fails(&["add-flow", "br0", "actions=ct(commit,nat(src=198.19.0))"]);
    assert!(err.contains("not an IPv4 address"), "{err}");
}
