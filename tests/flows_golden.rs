//! Golden tests of the flow tables through the real daemon: flows added
//! with vsctl in ovs-ofctl syntax, frames replayed into pcap ports, every
//! port's capture compared with what it must hold.

use testkit::*;

const A: Mac = mac(0xa);
const B: Mac = mac(0xb);

fn switch() -> Switch {
    let sw = Switch::start();
    sw.bridge_with_pcap_ports("br0", &["p1", "p2", "p3"]);
    sw
}

fn udp(dst: Mac, src: Mac, ip_src: [u8; 4], ip_dst: [u8; 4], dport: u16) -> Vec<u8> {
    let mut out = Vec::new();
    etherparse::PacketBuilder::ethernet2(src, dst)
        .ipv4(ip_src, ip_dst, 64)
        .udp(40000, dport)
        .write(&mut out, b"golden flow test")
        .unwrap();
    out
}

/// n_packets of the flow whose text contains `needle`.
fn packets_of(sw: &Switch, needle: &str) -> u64 {
    let flows = sw.json(&["dump-flows", "br0"]);
    let flow = flows.as_array().unwrap().iter().find(|f| f["flow"].as_str().unwrap().contains(needle));
    flow.unwrap_or_else(|| panic!("no flow with {needle:?} in {flows}"))["n_packets"].as_u64().unwrap()
}

#[test]
fn a_new_bridge_switches_with_its_default_flow() {
    let sw = switch();
    let dump = sw.ok(&["dump-flows", "br0"]);
    assert!(dump.contains("table=0") && dump.contains("priority=0 actions=NORMAL"), "{dump}");
    sw.replay("br0", "p1", &[frame(B, A)]);
    sw.expect_tx(&[("p2", vec![frame(B, A)]), ("p3", vec![frame(B, A)])]);
    assert_eq!(packets_of(&sw, "actions=NORMAL"), 1);
}

#[test]
fn acl_drops_one_subnet() {
    let sw = switch();
    sw.ok(&["add-flow", "br0", "priority=100,ip,nw_src=198.18.1.0/24,actions=drop"]);
    let blocked = udp(B, A, [198, 18, 1, 5], [198, 18, 0, 2], 53);
    let allowed = udp(B, A, [198, 18, 0, 5], [198, 18, 0, 2], 53);
    sw.replay("br0", "p1", &[blocked.clone(), allowed.clone(), blocked]);
    sw.expect_tx(&[("p2", vec![allowed.clone()]), ("p3", vec![allowed])]);
    assert_eq!(packets_of(&sw, "nw_src=198.18.1.0/24"), 2);
    assert_eq!(sw.port_stats("br0", "p1")["drop_reasons"]["flow_drop"], 2);
}

#[test]
fn port_to_port_and_vlan_rewrite() {
    let sw = switch();
    sw.ok(&[
        "add-flow",
        "br0",
        "in_port=p1,actions=output:p3",
        "--",
        "add-flow",
        "br0",
        "in_port=p2,actions=mod_vlan_vid:20,output:p3",
    ]);
    sw.replay("br0", "p1", &[frame(B, A)]);
    sw.replay("br0", "p2", &[frame(A, B)]);
    sw.expect_tx(&[("p1", vec![]), ("p2", vec![]), ("p3", vec![frame(B, A), tagged(&frame(A, B), 20, 0)])]);
}

#[test]
fn two_table_pipeline_with_resubmit_and_goto_table() {
    let sw = switch();
    let flows = sw.path("flows.txt");
    std::fs::write(
        &flows,
        "# classify by port, then by destination\n\
         table=0,priority=10,in_port=p1,actions=goto_table:1\n\
         table=0,priority=10,in_port=p2,actions=resubmit(,1),output:p1\n\
         \n\
         table=1,dl_dst=02:00:00:00:00:0b,actions=output:p2\n\
         table=1,dl_dst=02:00:00:00:00:0a,actions=output:p3\n",
    )
    .unwrap();
    sw.ok(&["add-flows", "br0", flows.to_str().unwrap()]);
    sw.replay("br0", "p1", &[frame(B, A)]);
    sw.replay("br0", "p2", &[frame(A, B)]);
    sw.expect_tx(&[("p1", vec![frame(A, B)]), ("p2", vec![frame(B, A)]), ("p3", vec![frame(A, B)])]);
}

#[test]
fn mac_and_address_rewrite_keeps_checksums() {
    let sw = switch();
    sw.ok(&[
        "add-flow",
        "br0",
        "in_port=p1,udp,actions=mod_dl_dst:02:00:00:00:00:0c,mod_nw_dst:198.18.0.9,mod_tp_dst:5353,output:p2",
    ]);
    sw.replay("br0", "p1", &[udp(B, A, [198, 18, 0, 1], [198, 18, 0, 2], 53)]);
    let expected = udp(mac(0xc), A, [198, 18, 0, 1], [198, 18, 0, 9], 5353);
    sw.expect_tx(&[("p2", vec![expected])]);
}

#[test]
fn idle_timeout_expires_with_injected_time() {
    let sw = switch();
    sw.ok(&["add-flow", "br0", "priority=10,in_port=p1,idle_timeout=10,actions=output:p3"]);
    sw.replay("br0", "p1", &[frame(B, A)]);
    sw.expect_tx(&[("p2", vec![]), ("p3", vec![frame(B, A)])]);
    sw.ok(&["time-warp", "11000"]);
    assert!(!sw.ok(&["dump-flows", "br0"]).contains("idle_timeout=10"), "the flow outlived its idle timeout");
    sw.replay("br0", "p1", &[frame(B, A)]);
    sw.expect_tx(&[("p2", vec![frame(B, A)]), ("p3", vec![frame(B, A)])]);
}

#[test]
fn bad_flows_are_refused_naming_the_word_and_nothing_changes() {
    let sw = switch();
    let err = sw.fails(&["add-flow", "br0", "priority=5,ip,nw_srcc=1.2.3.4,actions=drop"]);
    assert!(err.contains("unknown field 'nw_srcc'"), "{err}");
    let err = sw.fails(&["add-br", "brX", "--", "add-flow", "brX", "tcp,tp_dst=80,actions=output:nosuch"]);
    assert!(err.contains("'output:nosuch'"), "{err}");
    assert_eq!(sw.vsctl(&["br-exists", "brX"]).status.code(), Some(2));
    assert_eq!(sw.json(&["dump-flows", "br0"]).as_array().unwrap().len(), 1);
}

#[test]
fn del_flows_strict_and_not_and_the_cache_follows() {
    let sw = switch();
    sw.ok(&["add-flow", "br0", "priority=50,in_port=p1,actions=drop"]);
    sw.ok(&["add-flow", "br0", "priority=60,in_port=p1,ip,actions=drop"]);
    sw.replay("br0", "p1", &[frame(B, A)]);
    sw.expect_tx(&[("p2", vec![]), ("p3", vec![])]);
    let megaflows = sw.ok(&["dpctl-dump-flows", "br0"]);
    let p1: u16 = sw.ok(&["get", "interface", "p1", "ofport"]).trim().parse().unwrap();
    let cached = format!("in_port={p1:#x}/0xffff");
    assert!(megaflows.contains(&cached) && megaflows.contains("actions:drop"), "{megaflows}");
    // Strict deletes only the exact match and priority.
    sw.ok(&["--strict", "del-flows", "br0", "priority=50,in_port=p1"]);
    assert_eq!(sw.json(&["dump-flows", "br0"]).as_array().unwrap().len(), 2);
    // Not strict: every flow at least as specific as in_port=p1.
    sw.ok(&["del-flows", "br0", "in_port=p1"]);
    assert_eq!(sw.json(&["dump-flows", "br0"]).as_array().unwrap().len(), 1);
    sw.replay("br0", "p1", &[frame(B, A)]);
    sw.expect_tx(&[("p2", vec![frame(B, A)]), ("p3", vec![frame(B, A)])]);
    sw.ok(&["del-flows", "br0"]);
    sw.replay("br0", "p1", &[frame(B, A)]);
    sw.expect_tx(&[("p2", vec![]), ("p3", vec![])]);
}

#[test]
fn trace_shows_tables_rules_normal_and_the_megaflow() {
    let sw = switch();
    sw.ok(&["add-flow", "br0", "table=0,priority=10,in_port=p1,actions=resubmit(,1),NORMAL"]);
    sw.ok(&["add-flow", "br0", "table=1,priority=5,ip,nw_dst=198.18.0.9,actions=drop"]);
    // Teach the MAC table where B is, then trace a packet from p1 to B.
    sw.replay("br0", "p2", &[frame(BROADCAST, B)]);
    let trace = sw.ok(&["trace", "br0", "in_port=p1,dl_dst=02:00:00:00:00:0b,ip,nw_dst=198.18.0.2"]);
    let lines: Vec<&str> = trace.lines().collect();
    assert_eq!(lines[0], "table=0: priority=10,in_port=p1 actions=resubmit(,1),NORMAL", "{trace}");
    assert_eq!(lines[1], "    table=1: no flow matches", "{trace}");
    assert!(lines.contains(&"NORMAL: destination learned on p2 in VLAN 0: output there"), "{trace}");
    assert!(lines.contains(&"Final actions: NORMAL"), "{trace}");
    let megaflow = lines.iter().find(|l| l.starts_with("Megaflow: ")).expect("a megaflow line");
    assert!(megaflow.contains("in_port=") && megaflow.contains("nw_dst="), "{megaflow}");
    assert!(!megaflow.contains("nw_src="), "nw_src was never looked at: {megaflow}");
    // Tracing neither learns, counts nor sends.
    sw.expect_tx(&[("p1", vec![frame(BROADCAST, B)]), ("p2", vec![]), ("p3", vec![frame(BROADCAST, B)])]);
    let err = sw.fails(&["trace", "br0", "in_port=nosuch"]);
    assert!(err.contains("no such port"), "{err}");
}

#[test]
fn registers_push_vlan_and_cookie_masks_through_vsctl() {
    let sw = switch();
    let flows = sw.path("pipeline.txt");
    std::fs::write(
        &flows,
        "# table 0 tags each input port's number into reg0, table 1 acts on it\n\
         cookie=0x101,table=0,priority=10,in_port=p1,actions=move:NXM_OF_IN_PORT[]->NXM_NX_REG0[0..15],resubmit(,1)\n\
         cookie=0x102,table=0,priority=10,in_port=p2,actions=load:0x7->reg0[],resubmit(,1)\n\
         cookie=0x201,table=1,priority=5,reg0=0x7,actions=push_vlan:0x8100,set_field:30->vlan_vid,output:p3\n\
         cookie=0x202,table=1,priority=1,actions=output:p2\n",
    )
    .unwrap();
    sw.ok(&["add-flows", "br0", flows.to_str().unwrap()]);
    sw.replay("br0", "p1", &[frame(B, A)]);
    sw.replay("br0", "p2", &[frame(A, B)]);
    sw.expect_tx(&[("p1", vec![]), ("p2", vec![frame(B, A)]), ("p3", vec![tagged(&frame(A, B), 30, 0)])]);
    assert_eq!(packets_of(&sw, "reg0=0x7"), 1);
    // A cookie mask selects the 0x1xx flows only; adding with a mask is refused.
    let err = sw.fails(&["add-flow", "br0", "cookie=0x1/0xf,actions=drop"]);
    assert!(err.contains("cookie mask selects"), "{err}");
    sw.ok(&["del-flows", "br0", "cookie=0x100/0xf00"]);
    let left: Vec<String> =
        sw.json(&["dump-flows", "br0"]).as_array().unwrap().iter().map(|f| f["cookie"].to_string()).collect();
    assert_eq!(left.len(), 3, "the default flow and the two 0x2xx flows stay: {left:?}");
    // Without its port flow, p1's frame falls to the default flow: NORMAL floods it.
    sw.replay("br0", "p1", &[frame(B, A)]);
    sw.expect_tx(&[("p1", vec![]), ("p2", vec![frame(B, A)]), ("p3", vec![frame(B, A)])]);
}

#[test]
fn mod_nw_tos_and_mod_nw_ttl_rewrite_ip_and_leave_other_frames_alone() {
    let sw = switch();
    sw.ok(&["add-flow", "br0", "priority=10,in_port=p1,actions=mod_nw_tos:184,mod_nw_ttl:9,output:p2"]);
    // ECN 01 on the way in: mod_nw_tos writes the DSCP bits only.
    let with_tos_ttl = |tos: u8, ttl: u8| {
        let mut f = udp(B, A, [198, 18, 0, 5], [198, 18, 0, 2], 53);
        (f[15], f[22]) = (tos, ttl);
        let sum =
            etherparse::Ipv4HeaderSlice::from_slice(&f[14..34]).unwrap().to_header().calc_header_checksum();
        f[24..26].copy_from_slice(&sum.to_be_bytes());
        f
    };
    let (sent, expected) = (with_tos_ttl(0x01, 64), with_tos_ttl(0xb9, 9));
    let not_ip = frame(B, A);
    sw.replay("br0", "p1", &[sent, not_ip.clone()]);
    sw.expect_tx(&[("p2", vec![expected, not_ip]), ("p3", vec![])]);
    let dump = sw.ok(&["dump-flows", "br0"]);
    assert!(dump.contains("actions=mod_nw_tos:184,mod_nw_ttl:9,output:p2"), "{dump}");
    let refused = sw.fails(&["add-flow", "br0", "ip,actions=mod_nw_tos:7"]);
    assert!(refused.contains("multiple of 4"), "{refused}");
}
