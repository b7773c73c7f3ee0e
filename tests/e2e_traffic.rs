//! Traffic end to end: iperf3 TCP with the veths' default offloads left on,
//! 64-byte UDP whose counts must agree with the switch's counters, TCP
//! through a stateful firewall made of `ct` flows, and Docker's bridge
//! network (masquerade, a port mapping, the hairpin, isolation) against an
//! "outside" namespace on the uplink.
//! Root only; CI runs them, one at a time (see .config/nextest.toml).

use std::time::Duration;

use testkit::lab::*;

/// Runs an iperf3 server in `server` (one test, then it exits) and a
/// client in `client` against 198.18.0.2 with `args`; returns the
/// client's JSON report, insisting it succeeded. Bounded to 20 s.
fn iperf3(server: &Netns, client: &Netns, args: &[&str]) -> serde_json::Value {
    let _server = server.spawn("iperf3", &["-s", "-1", "-B", "198.18.0.2"]);
    std::thread::sleep(Duration::from_millis(300));
    let mut all = vec!["-c", "198.18.0.2", "-J", "--connect-timeout", "3000"];
    all.extend_from_slice(args);
    let out = client.spawn("iperf3", &all).wait_output(Duration::from_secs(20));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("iperf3 printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    assert!(out.status.success(), "iperf3 failed: {report}");
    report
}

fn offloads(ns: &Netns) -> String {
    String::from_utf8_lossy(&run(ns.command("ethtool").args(["-k", "eth0"])).stdout).into_owned()
}

#[test]
fn tcp_iperf3_for_5s_with_offloads_on() {
    if !e2e_allowed("tcp_iperf3_for_5s_with_offloads_on") {
        return;
    }
    let _one_at_a_time = traffic_lock();
    let mut lab = Lab::new("tcp");
    lab.sw.ok(&["add-br", "br0"]);
    let c1 = lab.container("br0", 1, &[]);
    let c2 = lab.container("br0", 2, &[]);
    let features = offloads(lab.c(c1));
    assert!(features.contains("tcp-segmentation-offload: on"), "offloads must stay on: {features}");
    let report = iperf3(lab.c(c2), lab.c(c1), &["-t", "5"]);
    let received = report["end"]["sum_received"]["bytes"].as_u64().unwrap();
    let gbps = report["end"]["sum_received"]["bits_per_second"].as_f64().unwrap() / 1e9;
    let retransmits = report["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0);
    eprintln!("iperf3 TCP through vswitchd, offloads on: {gbps:.2} Gbit/s, {retransmits} retransmits");
    assert!(received > 10_000_000, "only {received} bytes arrived in 5 s");
}

#[test]
fn udp_64_byte_counts_agree_with_the_port_counters() {
    if !e2e_allowed("udp_64_byte_counts_agree_with_the_port_counters") {
        return;
    }
    let _one_at_a_time = traffic_lock();
    let mut lab = Lab::new("udp");
    lab.sw.ok(&["add-br", "br0"]);
    let c1 = lab.container("br0", 1, &[]);
    let c2 = lab.container("br0", 2, &[]);
    // Warm the MAC table so the datagrams are unicast, not flooded.
    assert!(lab.c(c1).pings("198.18.0.2", 1));
    let (p1, p2) = (lab.port_of("br0", c1), lab.port_of("br0", c2));
    let before1 = lab.sw.port_stats("br0", &p1);
    let before2 = lab.sw.port_stats("br0", &p2);
    let report = iperf3(lab.c(c2), lab.c(c1), &["-u", "-l", "64", "-b", "50M", "-t", "3"]);
    let sent = report["end"]["sum_sent"]["packets"].as_u64().unwrap();
    let lost = report["end"]["sum_received"]["lost_packets"].as_u64().unwrap_or(0);
    let received = sent - lost;
    let after1 = lab.sw.port_stats("br0", &p1);
    let after2 = lab.sw.port_stats("br0", &p2);
    let delta = |a: &serde_json::Value, b: &serde_json::Value, k: &str| {
        a[k].as_u64().unwrap() - b[k].as_u64().unwrap()
    };
    let rx = delta(&after1, &before1, "rx_packets");
    let rx_dropped = delta(&after1, &before1, "rx_dropped");
    let tx = delta(&after2, &before2, "tx_packets");
    let tx_dropped = delta(&after2, &before2, "tx_dropped");
    eprintln!(
        "iperf3 UDP 64 B: sent {sent}, received {received} ({:.0} pkt/s); switch: rx {rx} (dropped {rx_dropped}), \
         tx {tx} (dropped {tx_dropped})",
        received as f64 / 3.0
    );
    // The iperf3 control connection adds a few dozen packets each way.
    const CONTROL: u64 = 200;
    assert!(rx >= sent.saturating_sub(lost) && rx <= sent + CONTROL, "port rx {rx} vs iperf3 sent {sent}");
    assert!(
        tx + tx_dropped + rx_dropped + CONTROL >= rx && tx <= rx,
        "switched {tx} + dropped vs received {rx}"
    );
    assert!(tx >= received, "iperf3 received {received} but the port sent only {tx}");
}

/// AF_PACKET ports receive through a ring of 2 KiB slots; a frame that
/// does not fit (here 7 KB datagrams on a 9000-byte MTU) is read from the
/// socket instead. Alternating small and big datagrams must come out whole
/// and in the order they went in.
#[test]
fn frames_too_big_for_a_ring_slot_keep_their_place_among_small_ones() {
    if !e2e_allowed("frames_too_big_for_a_ring_slot_keep_their_place_among_small_ones") {
        return;
    }
    let _one_at_a_time = traffic_lock();
    let mut lab = Lab::new("jumbo");
    lab.sw.ok(&["add-br", "br0"]);
    let c1 = lab.container("br0", 1, &["--mtu", "9000"]);
    let c2 = lab.container("br0", 2, &["--mtu", "9000"]);
    assert!(lab.c(c1).pings("198.18.0.2", 1));
    const COUNT: usize = 300;
    let receive = format!(
        r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
# SO_RCVBUFFORCE (33): room for the whole burst whatever rmem_max says.
s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)
s.bind(("198.18.0.2", 9999))
s.settimeout(5)
got = []
try:
    while len(got) < {COUNT}:
        data = s.recv(65535)
        seq = int.from_bytes(data[:4], "big")
        got.append("%d:%d" % (seq, len(data)) if data[4:] == bytes([seq % 251]) * (len(data) - 4) else "bad%d" % seq)
except socket.timeout:
    pass
print(" ".join(got))
"#
    );
    let receiver = lab.c(c2).spawn("python3", &["-c", &receive]);
    wait_for("the receiver binding its port", Duration::from_secs(10), || {
        let bound = run(lab.c(c2).command("ss").args(["-Hunl", "sport = :9999"]));
        !String::from_utf8_lossy(&bound.stdout).trim().is_empty()
    });
    let send = format!(
        r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for seq in range({COUNT}):
    size = 7000 if seq % 2 else 60
    s.sendto(seq.to_bytes(4, "big") + bytes([seq % 251]) * (size - 4), ("198.18.0.2", 9999))
"#
    );
    must(lab.c(c1).command("python3").args(["-c", &send]));
    let out = receiver.wait_output(Duration::from_secs(10));
    let got = String::from_utf8_lossy(&out.stdout);
    let expected: Vec<String> =
        (0..COUNT).map(|seq| format!("{seq}:{}", if seq % 2 == 1 { 7000 } else { 60 })).collect();
    assert_eq!(got.split_whitespace().collect::<Vec<_>>(), expected, "datagrams lost, cut or reordered");
    let stats = lab.sw.port_stats("br0", &lab.port_of("br0", c1));
    assert!(stats["drop_reasons"].get("rx_truncated").is_none(), "{stats}");
    // Through the ring, not the fallback that reads everything from the socket.
    assert!(!lab.sw.log().contains("no PACKET_MMAP receive ring"), "{}", lab.sw.log());
}

/// A stateful firewall in flows: c1 (198.18.0.1) may open connections to
/// c2 (198.18.0.2), not the other way; what c1 opened is let back in.
/// iperf3 TCP with offloads on runs through conntrack (64 KiB GSO frames
/// included) and completes.
#[test]
fn stateful_firewall_through_ct_with_iperf3() {
    if !e2e_allowed("stateful_firewall_through_ct_with_iperf3") {
        return;
    }
    let _one_at_a_time = traffic_lock();
    let mut lab = Lab::new("ctfw");
    lab.sw.ok(&["add-br", "br0"]);
    let c1 = lab.container("br0", 1, &[]);
    let c2 = lab.container("br0", 2, &[]);
    let p1 = lab.port_of("br0", c1);
    let flows = [
        "table=0,priority=10,ip,actions=ct(table=1)".to_owned(),
        format!("table=1,priority=10,in_port={p1},ip,ct_state=+trk+new,actions=ct(commit),NORMAL"),
        "table=1,priority=10,ip,ct_state=+trk+est,actions=NORMAL".to_owned(),
        "table=1,priority=5,actions=drop".to_owned(),
    ];
    for flow in &flows {
        lab.sw.ok(&["add-flow", "br0", flow]);
    }
    assert!(lab.c(c1).pings("198.18.0.2", 2), "c1 opens, the replies are established");
    assert!(lab.c(c2).cannot_reach("198.18.0.1", 2), "c2 may not open connections to c1");
    let report = iperf3(lab.c(c2), lab.c(c1), &["-t", "3"]);
    let received = report["end"]["sum_received"]["bytes"].as_u64().unwrap();
    let gbps = report["end"]["sum_received"]["bits_per_second"].as_f64().unwrap() / 1e9;
    eprintln!("iperf3 TCP through ct (stateful firewall), offloads on: {gbps:.2} Gbit/s");
    assert!(received > 10_000_000, "only {received} bytes arrived in 3 s");
    let conns = lab.sw.json(&["dump-conntrack", "br0"]);
    let tcp = conns.as_array().unwrap().iter().filter(|c| c["proto"] == "tcp").count();
    assert!(tcp >= 2, "iperf3's control and data connections are tracked: {conns}");
    let flows = lab.sw.ok(&["dump-flows", "br0"]);
    let dropped =
        flows.lines().find(|l| l.contains("priority=5 actions=drop")).expect("the drop rule is listed");
    assert!(!dropped.contains("n_packets=0,"), "c2's attempts were dropped by the last rule: {flows}");
}

/// Runs `iperf3 -s -1` bound to `bind`:`port` in `server` and a client in
/// `client` to `target`:`port`; returns both JSON reports, insisting the
/// client succeeded. Bounded to 20 s.
fn iperf3_pair(
    server: &Netns,
    bind: &str,
    port: u16,
    client: &Netns,
    target: &str,
    target_port: u16,
    args: &[&str],
) -> (serde_json::Value, serde_json::Value) {
    let port = port.to_string();
    let listening = server.spawn("iperf3", &["-s", "-1", "-J", "-B", bind, "-p", &port]);
    std::thread::sleep(Duration::from_millis(300));
    let target_port = target_port.to_string();
    let mut all = vec!["-c", target, "-p", &target_port, "-J", "--connect-timeout", "3000"];
    all.extend_from_slice(args);
    let out = client.spawn("iperf3", &all).wait_output(Duration::from_secs(20));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("iperf3 printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    assert!(out.status.success(), "iperf3 to {target}:{target_port} failed: {report}");
    let served = listening.wait_output(Duration::from_secs(10));
    let server_report = serde_json::from_slice(&served.stdout).unwrap_or(serde_json::Value::Null);
    (report, server_report)
}

/// Docker's default bridge network, done by the switch: containers behind
/// the gateway 198.18.0.1, an "outside" namespace on the uplink, whose
/// address is 198.19.0.1; masquerade, `-p 8080:80` and the hairpin.
#[test]
fn docker_bridge_network_masquerade_port_mapping_and_hairpin() {
    if !e2e_allowed("docker_bridge_network_masquerade_port_mapping_and_hairpin") {
        return;
    }
    let _one_at_a_time = traffic_lock();
    let mut lab = Lab::new("nat");
    let outside = lab.docker_network("br0", &[]);
    lab.sw.ok(&["add-port-mapping", "br0", "tcp", "8080", "198.18.0.2:80"]);
    let c1 = lab.container("br0", 2, &["--gateway", "198.18.0.1"]);
    let c2 = lab.container("br0", 3, &["--gateway", "198.18.0.1"]);

    // Out: a 5 s TCP stream to the outside, which sees the uplink's address.
    let (client, server) =
        iperf3_pair(lab.c(outside), "198.19.0.254", 5201, lab.c(c1), "198.19.0.254", 5201, &["-t", "5"]);
    let gbps = client["end"]["sum_received"]["bits_per_second"].as_f64().unwrap() / 1e9;
    eprintln!("iperf3 TCP through masquerade (route + ct + NAT), offloads on: {gbps:.2} Gbit/s");
    assert!(client["end"]["sum_received"]["bytes"].as_u64().unwrap() > 10_000_000);
    assert_eq!(server["start"]["connected"][0]["remote_host"], "198.19.0.1", "{server}");

    // In: the outside reaches c1's port 80 through the uplink's 8080.
    let (_, server) =
        iperf3_pair(lab.c(c1), "198.18.0.2", 80, lab.c(outside), "198.19.0.1", 8080, &["-t", "1"]);
    assert_eq!(server["start"]["connected"][0]["remote_host"], "198.19.0.254", "{server}");

    // Hairpin: c2 reaches c1 through the uplink's address; c1 sees the gateway.
    let (_, server) = iperf3_pair(lab.c(c1), "198.18.0.2", 80, lab.c(c2), "198.19.0.1", 8080, &["-t", "1"]);
    assert_eq!(server["start"]["connected"][0]["remote_host"], "198.18.0.1", "{server}");

    // UDP through the masquerade.
    let (client, _) = iperf3_pair(
        lab.c(outside),
        "198.19.0.254",
        5202,
        lab.c(c1),
        "198.19.0.254",
        5202,
        &["-u", "-b", "20M", "-t", "2"],
    );
    let sent = client["end"]["sum"]["packets"].as_u64().unwrap();
    let lost = client["end"]["sum"]["lost_packets"].as_u64().unwrap_or(0);
    assert!(sent > 1000 && lost * 10 < sent, "UDP through NAT: {lost} of {sent} lost");

    let conns = lab.sw.json(&["dump-conntrack", "br0"]);
    assert!(
        conns.as_array().unwrap().iter().any(|c| c["reply"]["dst"] == "198.19.0.1" && c["zone"] == 1),
        "masqueraded connections are tracked in zone 1: {conns}"
    );

    // --icc=false: isolated containers cannot reach each other, but both
    // still reach the outside (ping through the masquerade).
    for c in [c1, c2] {
        let port = lab.port_of("br0", c);
        lab.sw.ok(&["set", "port", &port, "isolated=true"]);
    }
    assert!(lab.c(c1).cannot_reach("198.18.0.3", 2));
    assert!(lab.c(c1).pings("198.19.0.254", 2));
    assert!(lab.c(c2).pings("198.19.0.254", 2));
}
