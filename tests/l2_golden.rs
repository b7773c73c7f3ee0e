//! Golden tests of NORMAL switching: the real daemon, pcap ports, frames
//! replayed in, and each port's tx capture compared with what it must hold.

use testkit::*;

const A: Mac = mac(0xa);
const B: Mac = mac(0xb);
const C: Mac = mac(0xc);
const D: Mac = mac(0xd);

fn three_port_switch() -> Switch {
    let sw = Switch::start();
    sw.bridge_with_pcap_ports("br0", &["p1", "p2", "p3"]);
    sw
}

#[test]
fn unknown_destination_floods_to_every_other_port() {
    let sw = three_port_switch();
    sw.replay("br0", "p1", &[frame(B, A)]);
    sw.expect_tx(&[("p1", vec![]), ("p2", vec![frame(B, A)]), ("p3", vec![frame(B, A)])]);
    assert_eq!(sw.fdb("br0"), vec![("p1".into(), 0, "02:00:00:00:00:0a".into())]);
}

#[test]
fn learned_destination_gets_unicast() {
    let sw = three_port_switch();
    sw.replay("br0", "p2", &[frame(BROADCAST, B)]);
    sw.expect_tx(&[("p1", vec![frame(BROADCAST, B)]), ("p3", vec![frame(BROADCAST, B)])]);
    let reply = sw.replay("br0", "p1", &[frame(B, A), frame(B, A)]);
    assert_eq!(reply["forwarded"], 2);
    sw.expect_tx(&[("p1", vec![]), ("p2", vec![frame(B, A), frame(B, A)]), ("p3", vec![])]);
    // And the answer goes straight back, A having been learned on p1.
    sw.replay("br0", "p2", &[frame(A, B)]);
    sw.expect_tx(&[("p1", vec![frame(A, B)]), ("p2", vec![]), ("p3", vec![])]);
}

#[test]
fn learned_entry_ages_out_with_time_warp() {
    let sw = three_port_switch();
    sw.replay("br0", "p2", &[frame(BROADCAST, B)]);
    sw.new_tx("p1");
    sw.new_tx("p3");
    sw.ok(&["time-warp", "299000"]);
    sw.replay("br0", "p1", &[frame(B, A)]);
    sw.expect_tx(&[("p2", vec![frame(B, A)]), ("p3", vec![])]);
    sw.ok(&["time-warp", "2000"]);
    assert!(!sw.fdb("br0").iter().any(|(_, _, m)| m == "02:00:00:00:00:0b"), "B outlived the aging time");
    sw.replay("br0", "p1", &[frame(B, A)]);
    sw.expect_tx(&[("p2", vec![frame(B, A)]), ("p3", vec![frame(B, A)])]);
}

#[test]
fn short_aging_time_from_other_config() {
    let sw = three_port_switch();
    sw.ok(&["set", "bridge", "br0", "other_config:mac-aging-time=10"]);
    sw.replay("br0", "p2", &[frame(BROADCAST, B)]);
    sw.ok(&["time-warp", "10000"]);
    assert!(sw.fdb("br0").is_empty());
}

#[test]
fn mac_move_follows_the_station() {
    let sw = three_port_switch();
    sw.replay("br0", "p2", &[frame(BROADCAST, B)]);
    sw.replay("br0", "p3", &[frame(BROADCAST, B)]);
    assert_eq!(sw.fdb("br0"), vec![("p3".into(), 0, "02:00:00:00:00:0b".into())]);
    sw.new_tx("p2");
    sw.new_tx("p3");
    sw.replay("br0", "p1", &[frame(B, A)]);
    sw.expect_tx(&[("p2", vec![]), ("p3", vec![frame(B, A)])]);
}

#[test]
fn access_ports_of_different_tags_are_isolated() {
    let sw = three_port_switch();
    sw.ok(&[
        "set", "port", "p1", "tag=10", "--", "set", "port", "p2", "tag=20", "--", "set", "port", "p3",
        "tag=10",
    ]);
    sw.replay("br0", "p1", &[frame(BROADCAST, A), frame(B, A)]);
    sw.expect_tx(&[("p2", vec![]), ("p3", vec![frame(BROADCAST, A), frame(B, A)])]);
    // A tagged frame on an access port is refused, and counted.
    sw.replay("br0", "p2", &[tagged(&frame(BROADCAST, B), 20, 0)]);
    sw.expect_tx(&[("p1", vec![]), ("p3", vec![])]);
    assert_eq!(sw.port_stats("br0", "p2")["drop_reasons"]["vlan_not_allowed"], 1);
}

#[test]
fn trunk_carries_both_tags_and_access_ports_untag() {
    let sw = three_port_switch();
    sw.ok(&[
        "set",
        "port",
        "p1",
        "tag=10",
        "--",
        "set",
        "port",
        "p2",
        "tag=20",
        "--",
        "set",
        "port",
        "p3",
        "trunks=10,20",
    ]);
    sw.replay("br0", "p1", &[frame(BROADCAST, A)]);
    sw.replay("br0", "p2", &[frame(BROADCAST, B)]);
    sw.expect_tx(&[
        ("p1", vec![]),
        ("p2", vec![]),
        ("p3", vec![tagged(&frame(BROADCAST, A), 10, 0), tagged(&frame(BROADCAST, B), 20, 0)]),
    ]);
    // From the trunk, each VLAN reaches its access port untagged; the
    // priority of the tag does not survive on an access port.
    sw.replay("br0", "p3", &[tagged(&frame(A, C), 10, 5), tagged(&frame(B, D), 20, 0)]);
    sw.expect_tx(&[("p1", vec![frame(A, C)]), ("p2", vec![frame(B, D)]), ("p3", vec![])]);
    // A VLAN the trunk does not carry, and an untagged frame (VLAN 0, not
    // in trunks), are dropped.
    sw.replay("br0", "p3", &[tagged(&frame(BROADCAST, C), 30, 0), frame(BROADCAST, C)]);
    sw.expect_tx(&[("p1", vec![]), ("p2", vec![])]);
    assert_eq!(sw.port_stats("br0", "p3")["drop_reasons"]["vlan_not_allowed"], 2);
}

#[test]
fn trunk_to_trunk_keeps_the_tag_and_its_priority() {
    let sw = three_port_switch();
    sw.ok(&["set", "port", "p1", "tag=10"]);
    sw.replay("br0", "p2", &[tagged(&frame(BROADCAST, B), 10, 3)]);
    sw.expect_tx(&[("p1", vec![frame(BROADCAST, B)]), ("p3", vec![tagged(&frame(BROADCAST, B), 10, 3)])]);
}

#[test]
fn native_untagged_sends_its_vlan_untagged_and_others_tagged() {
    let sw = three_port_switch();
    sw.ok(&[
        "set",
        "port",
        "p1",
        "tag=10",
        "--",
        "set",
        "port",
        "p2",
        "tag=20",
        "--",
        "set",
        "port",
        "p3",
        "tag=10",
        "trunks=20",
        "vlan_mode=native-untagged",
    ]);
    sw.replay("br0", "p1", &[frame(BROADCAST, A)]);
    sw.replay("br0", "p2", &[frame(BROADCAST, B)]);
    sw.expect_tx(&[("p3", vec![frame(BROADCAST, A), tagged(&frame(BROADCAST, B), 20, 0)])]);
    // Untagged frames from the native port belong to VLAN 10.
    sw.replay("br0", "p3", &[frame(BROADCAST, C), tagged(&frame(BROADCAST, D), 20, 0)]);
    sw.expect_tx(&[("p1", vec![frame(BROADCAST, C)]), ("p2", vec![frame(BROADCAST, D)])]);
}

#[test]
fn native_tagged_sends_its_vlan_tagged() {
    let sw = three_port_switch();
    sw.ok(&[
        "set",
        "port",
        "p1",
        "tag=10",
        "--",
        "set",
        "port",
        "p3",
        "tag=10",
        "trunks=20",
        "vlan_mode=native-tagged",
        "--",
        "set",
        "port",
        "p2",
        "tag=20",
    ]);
    sw.replay("br0", "p1", &[frame(BROADCAST, A)]);
    sw.expect_tx(&[("p2", vec![]), ("p3", vec![tagged(&frame(BROADCAST, A), 10, 0)])]);
    sw.replay("br0", "p3", &[frame(BROADCAST, C), tagged(&frame(BROADCAST, D), 10, 0)]);
    sw.expect_tx(&[("p1", vec![frame(BROADCAST, C), frame(BROADCAST, D)]), ("p2", vec![])]);
}

#[test]
fn reserved_multicast_is_dropped_unless_forward_bpdu() {
    let sw = three_port_switch();
    let stp = frame_with([0x01, 0x80, 0xc2, 0, 0, 0], A, 0x0026, b"\x42\x42\x03 bpdu");
    let lacp = frame_with([0x01, 0x80, 0xc2, 0, 0, 0x02], A, 0x8809, b"lacp");
    let not_reserved = frame_with([0x01, 0x80, 0xc2, 0, 0, 0x10], A, 0x0800, b"");
    sw.replay("br0", "p1", &[stp.clone(), lacp.clone(), not_reserved.clone()]);
    sw.expect_tx(&[("p2", vec![not_reserved.clone()]), ("p3", vec![not_reserved])]);
    assert_eq!(sw.port_stats("br0", "p1")["drop_reasons"]["reserved_multicast"], 2);
    sw.ok(&["set", "bridge", "br0", "other_config:forward-bpdu=true"]);
    sw.replay("br0", "p1", std::slice::from_ref(&stp));
    sw.expect_tx(&[("p2", vec![stp.clone()]), ("p3", vec![stp])]);
}

#[test]
fn multicast_source_is_not_learned() {
    let sw = three_port_switch();
    let group: Mac = [0x01, 0x00, 0x5e, 0, 0, 1];
    sw.replay("br0", "p2", &[frame(BROADCAST, group), frame(BROADCAST, BROADCAST)]);
    sw.expect_tx(&[("p1", vec![frame(BROADCAST, group), frame(BROADCAST, BROADCAST)])]);
    assert!(sw.fdb("br0").is_empty(), "learned {:?}", sw.fdb("br0"));
}

#[test]
fn full_table_evicts_the_oldest_entry() {
    let sw = three_port_switch();
    sw.ok(&["set", "bridge", "br0", "other_config:mac-table-size=2"]);
    sw.replay("br0", "p2", &[frame(BROADCAST, B)]);
    sw.replay("br0", "p3", &[frame(BROADCAST, C)]);
    sw.replay("br0", "p2", &[frame(BROADCAST, D)]);
    let macs: Vec<String> = sw.fdb("br0").into_iter().map(|(_, _, m)| m).collect();
    assert_eq!(macs, vec!["02:00:00:00:00:0c", "02:00:00:00:00:0d"]);
    for p in ["p1", "p2", "p3"] {
        sw.new_tx(p);
    }
    // B was evicted, so frames for it flood; C is still known. The probes
    // come from D, already in the table, so they evict nothing themselves.
    sw.replay("br0", "p2", &[frame(B, D)]);
    sw.expect_tx(&[("p1", vec![frame(B, D)]), ("p3", vec![frame(B, D)])]);
    sw.replay("br0", "p2", &[frame(C, D)]);
    sw.expect_tx(&[("p1", vec![]), ("p3", vec![frame(C, D)])]);
}

#[test]
fn rx_pcap_frames_are_received_when_the_port_is_created() {
    let sw = Switch::start();
    let input = sw.path("in.pcap");
    write_pcap(&input, &[frame(BROADCAST, A), frame(B, A)]);
    sw.bridge_with_pcap_ports("br0", &["p2"]);
    sw.ok(&[
        "add-port",
        "br0",
        "p1",
        "--",
        "set",
        "interface",
        "p1",
        "type=pcap",
        &format!("options:rx_pcap={}", input.display()),
    ]);
    sw.expect_tx(&[("p2", vec![frame(BROADCAST, A), frame(B, A)])]);
}

#[test]
fn counters_add_up() {
    let sw = three_port_switch();
    sw.replay("br0", "p1", &[frame(BROADCAST, A), vec![0u8; 10], frame(A, B)]);
    let p1 = sw.port_stats("br0", "p1");
    assert_eq!(p1["rx_packets"], 3);
    assert_eq!(p1["rx_bytes"], 130);
    assert_eq!(p1["rx_dropped"], 2);
    assert_eq!(p1["drop_reasons"]["runt"], 1);
    assert_eq!(p1["drop_reasons"]["same_port"], 1);
    let p2 = sw.port_stats("br0", "p2");
    assert_eq!((p2["tx_packets"].as_u64(), p2["tx_bytes"].as_u64()), (Some(1), Some(60)));
}

#[test]
fn memory_show_tells_how_full_the_tables_are() {
    let sw = three_port_switch();
    sw.ok(&["set", "bridge", "br0", "other_config:mac-table-size=2"]);
    let hosts: Vec<Vec<u8>> = (1..=5).map(|i| frame(BROADCAST, mac(i))).collect();
    sw.replay("br0", "p1", &hosts);
    let memory = sw.json(&["memory-show"]);
    let br0 = &memory["bridges"][0];
    assert_eq!(br0["name"], "br0");
    // The bridge's own internal port counts, as in OVS.
    assert_eq!((br0["ports"].as_u64(), br0["flows"].as_u64()), (Some(4), Some(1)), "{memory}");
    assert_eq!((br0["mac_entries"].as_u64(), br0["mac_limit"].as_u64()), (Some(2), Some(2)), "{memory}");
    assert_eq!(br0["conntrack"], 0);
    let (rss, peak) = (memory["rss_kib"].as_u64().unwrap(), memory["peak_rss_kib"].as_u64().unwrap());
    assert!(rss > 0 && peak >= rss, "{memory}");
    // The receive and transmit batches the replay went through.
    assert!(memory["packet_buffers"].as_u64() > Some(0), "{memory}");
    let text = sw.ok(&["memory-show"]);
    assert!(text.contains("br0: ports:4 flows:1") && text.contains("mac:2/2"), "{text}");
}

#[test]
fn fdb_stats_count_what_the_table_learned_evicted_moved_and_aged_out() {
    let sw = three_port_switch();
    sw.ok(&["set", "bridge", "br0", "other_config:mac-table-size=2"]);
    // B and C fill the table; D pushes out B, the least recently seen.
    sw.replay("br0", "p2", &[frame(BROADCAST, B)]);
    sw.replay("br0", "p3", &[frame(BROADCAST, C)]);
    sw.replay("br0", "p2", &[frame(BROADCAST, D)]);
    // C shows up on another port.
    sw.replay("br0", "p1", &[frame(BROADCAST, C)]);
    let stats = sw.json(&["fdb-stats-show", "br0"]);
    assert_eq!(
        (
            &stats["entries"],
            &stats["limit"],
            &stats["learned"],
            &stats["evicted"],
            &stats["moved"],
            &stats["expired"]
        ),
        (&2.into(), &2.into(), &3.into(), &1.into(), &1.into(), &0.into()),
        "{stats}"
    );
    // Past the aging time, a frame from A finds C and D gone.
    sw.ok(&["time-warp", "301000"]);
    sw.replay("br0", "p1", &[frame(BROADCAST, A)]);
    let text = sw.ok(&["fdb-stats-show", "br0"]);
    assert_eq!(
        text,
        "Statistics for bridge \"br0\":\n  Current/maximum MAC entries in the table: 1/2\n  \
         Current static MAC entries in the table : 0\n  Total number of learned MAC entries     : 4\n  \
         Total number of expired MAC entries     : 2\n  Total number of evicted MAC entries     : 1\n  \
         Total number of port moved MAC entries  : 1\n"
    );
    assert!(sw.fails(&["fdb-stats-show", "nobr"]).contains("nobr"), "an unknown bridge is an error");
}
