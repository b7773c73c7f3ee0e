//! The bridge's gateway address through the real daemon: ARP requests for
//! it and pings to it are answered out of the port they came in on, with
//! their VLAN tag; other traffic is switched as before.

use testkit::*;

const HOST: Mac = mac(0xa);
const GATEWAY_MAC: Mac = [0x02, 0x76, 198, 18, 0, 1];

fn arp_request(target: [u8; 4]) -> Vec<u8> {
    arp(ARP_REQUEST, BROADCAST, (HOST, [198, 18, 0, 2]), ([0; 6], target))
}

fn arp_reply() -> Vec<u8> {
    arp(ARP_REPLY, HOST, (GATEWAY_MAC, [198, 18, 0, 1]), (HOST, [198, 18, 0, 2]))
}

fn ping(ttl: u8, reply: bool) -> Vec<u8> {
    let b = if reply {
        etherparse::PacketBuilder::ethernet2(GATEWAY_MAC, HOST).ipv4([198, 18, 0, 1], [198, 18, 0, 2], ttl)
    } else {
        etherparse::PacketBuilder::ethernet2(HOST, GATEWAY_MAC).ipv4([198, 18, 0, 2], [198, 18, 0, 1], ttl)
    };
    let b = if reply { b.icmpv4_echo_reply(9, 1) } else { b.icmpv4_echo_request(9, 1) };
    let mut out = Vec::new();
    b.write(&mut out, b"are you there").unwrap();
    out
}

#[test]
fn the_gateway_answers_arp_and_ping_on_the_asking_port() {
    let sw = Switch::start();
    sw.bridge_with_pcap_ports("br0", &["p1", "p2"]);
    sw.ok(&["set", "bridge", "br0", "gateway=198.18.0.1/24", "--", "set", "port", "p1", "tag=10"]);
    assert_eq!(sw.ok(&["get", "bridge", "br0", "gateway"]).trim(), "198.18.0.1/24");
    sw.replay("br0", "p1", &[arp_request([198, 18, 0, 1]), ping(64, false)]);
    sw.expect_tx(&[("p1", vec![arp_reply(), ping(64, true)]), ("p2", vec![])]);
    // An ARP for another host is switched as usual (p2 is a trunk: tag 10).
    sw.replay("br0", "p1", &[arp_request([198, 18, 0, 3])]);
    sw.expect_tx(&[("p1", vec![]), ("p2", vec![tagged(&arp_request([198, 18, 0, 3]), 10, 0)])]);
    let err = sw.fails(&["set", "bridge", "br0", "gateway=198.18.0.0/24"]);
    assert!(err.contains("network or broadcast address"), "{err}");
    assert_eq!(
        sw.ok(&["get", "bridge", "br0", "gateway"]).trim(),
        "198.18.0.1/24",
        "a bad value changes nothing"
    );
    sw.ok(&["clear", "bridge", "br0", "gateway"]);
    sw.replay("br0", "p1", &[arp_request([198, 18, 0, 1])]);
    sw.expect_tx(&[("p1", vec![]), ("p2", vec![tagged(&arp_request([198, 18, 0, 1]), 10, 0)])]);
}
