//! End to end, in real network namespaces: containers attached with
//! add-container-port, a TAP port moved into a namespace, and faults
//! (a container's namespace deleted, a system port's interface deleted and
//! re-created) while other ports keep forwarding. Root only; CI runs them.

use std::time::Duration;

use testkit::lab::*;

#[test]
fn two_containers_ping_each_other_through_the_switch() {
    if !e2e_allowed("two_containers_ping_each_other_through_the_switch") {
        return;
    }
    let mut lab = Lab::new("ping");
    lab.sw.ok(&["add-br", "br0"]);
    let c1 = lab.container("br0", 1, &["--gateway", "198.18.0.254"]);
    let c2 = lab.container("br0", 2, &["--mac", "02:00:00:00:00:02"]);
    assert!(lab.c(c1).pings("198.18.0.2", 3));
    // ARP went through the switch: c1 knows c2's MAC, and the switch
    // learned both containers on their ports.
    let neigh = lab.c(c1).ip(&["neigh", "show", "198.18.0.2"]);
    assert!(neigh.contains("02:00:00:00:00:02"), "{neigh}");
    let fdb = lab.sw.fdb("br0");
    assert!(
        fdb.iter().any(|(p, _, mac)| *p == lab.port_of("br0", c2) && mac == "02:00:00:00:00:02"),
        "{fdb:?}"
    );
    let show = lab.sw.ok(&["show"]);
    assert!(show.contains(&format!("container_netns=\"{}\"", lab.c(c1).name)), "{show}");
    let route = lab.c(c1).ip(&["route", "show", "default"]);
    assert!(route.contains("198.18.0.254"), "{route}");
}

#[test]
fn two_bridges_never_leak_into_each_other() {
    if !e2e_allowed("two_bridges_never_leak_into_each_other") {
        return;
    }
    let mut lab = Lab::new("leak");
    lab.sw.ok(&["add-br", "br0", "--", "add-br", "br1"]);
    let c1 = lab.container("br0", 1, &[]);
    let c2 = lab.container("br0", 2, &[]);
    let c3 = lab.container("br1", 3, &[]);
    let c4 = lab.container("br1", 4, &[]);
    assert!(lab.c(c1).pings("198.18.0.2", 2));
    assert!(lab.c(c1).cannot_reach("198.18.0.3", 3));
    // Nothing from br0 came out of br1's ports.
    for c in [c3, c4] {
        let stats = lab.sw.port_stats("br1", &lab.port_of("br1", c));
        assert_eq!(stats["tx_packets"], 0, "br1 port of container {c} sent {stats}");
    }
    assert!(lab.c(c3).pings("198.18.0.4", 2));
    let _ = c2;
}

#[test]
fn different_vlan_tags_cannot_reach_each_other() {
    if !e2e_allowed("different_vlan_tags_cannot_reach_each_other") {
        return;
    }
    let mut lab = Lab::new("vlan");
    lab.sw.ok(&["add-br", "br0"]);
    let c1 = lab.container("br0", 1, &["--tag", "10"]);
    let _c2 = lab.container("br0", 2, &["--tag", "20"]);
    let _c3 = lab.container("br0", 3, &["--tag", "10"]);
    assert!(lab.c(c1).pings("198.18.0.3", 2));
    assert!(lab.c(c1).cannot_reach("198.18.0.2", 3));
    let fdb = lab.sw.fdb("br0");
    assert!(fdb.iter().all(|(_, vlan, _)| *vlan == 10 || *vlan == 20), "{fdb:?}");
}

#[test]
fn tap_port_moved_into_a_namespace_reaches_a_veth_container() {
    if !e2e_allowed("tap_port_moved_into_a_namespace_reaches_a_veth_container") {
        return;
    }
    let mut lab = Lab::new("tap");
    lab.sw.ok(&["add-br", "br0"]);
    let c1 = lab.container("br0", 1, &[]);
    let tap = format!("{}t", &lab.prefix()[..lab.prefix().len().min(13)]);
    lab.sw.ok(&["add-port", "br0", &tap, "--", "set", "interface", &tap, "type=tap"]);
    let vm = Netns::new(format!("{}-vm", lab.prefix()));
    lab.switch_ns.ip(&["link", "set", &tap, "netns", &vm.name]);
    vm.ip(&["addr", "add", "198.18.0.9/24", "dev", &tap]);
    vm.ip(&["link", "set", &tap, "up"]);
    assert!(vm.pings("198.18.0.1", 3), "the TAP in its namespace cannot reach the container");
    assert!(lab.c(c1).pings("198.18.0.9", 2));
    let stats = lab.sw.port_stats("br0", &tap);
    assert!(
        stats["rx_packets"].as_u64().unwrap() >= 5 && stats["tx_packets"].as_u64().unwrap() >= 5,
        "{stats}"
    );
    // The daemon keeps the descriptor; deleting the port removes the device.
    lab.sw.ok(&["del-port", "br0", &tap]);
    wait_for("the TAP device to vanish", Duration::from_secs(5), || !vm.ip(&["link", "show"]).contains(&tap));
}

#[test]
fn deleting_a_namespace_removes_its_port_and_the_rest_keeps_forwarding() {
    if !e2e_allowed("deleting_a_namespace_removes_its_port_and_the_rest_keeps_forwarding") {
        return;
    }
    let mut lab = Lab::new("gone");
    lab.sw.ok(&["add-br", "br0"]);
    let c1 = lab.container("br0", 1, &[]);
    let _c2 = lab.container("br0", 2, &[]);
    let c3 = lab.container("br0", 3, &[]);
    let port3 = lab.port_of("br0", c3);
    // Keep traffic flowing between the others while the namespace goes.
    let pinger = lab.c(c1).spawn("ping", &["-n", "-q", "-c", "40", "-i", "0.1", "-W", "1", "198.18.0.2"]);
    let gone = lab.containers.remove(c3);
    drop(gone);
    wait_for("the port of the deleted namespace to go", Duration::from_secs(5), || {
        !lab.sw.ok(&["list-ports", "br0"]).contains(&port3)
    });
    assert!(!lab.switch_ns.ip(&["link", "show"]).contains(&port3), "the host end of the veth leaked");
    let out = pinger.wait_output(Duration::from_secs(15));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("40 received"), "traffic was disturbed: {text}");
    assert!(lab.c(c1).pings("198.18.0.2", 2));
}

#[test]
fn system_port_resumes_when_its_interface_returns() {
    if !e2e_allowed("system_port_resumes_when_its_interface_returns") {
        return;
    }
    let mut lab = Lab::new("back");
    lab.sw.ok(&["add-br", "br0"]);
    let c1 = lab.container("br0", 1, &[]);
    let _c3 = lab.container("br0", 3, &[]);
    let host = Netns::new(format!("{}-h2", lab.prefix()));
    let port = format!("{}s", &lab.prefix()[..lab.prefix().len().min(13)]);
    let plug = |host: &Netns| {
        lab.switch_ns.ip(&["link", "add", &port, "type", "veth", "peer", "name", "h2eth"]);
        lab.switch_ns.ip(&["link", "set", "h2eth", "netns", &host.name]);
        lab.switch_ns.ip(&["link", "set", &port, "up"]);
        // The same MAC each time, as a returning device has: the
        // container's ARP cache stays right.
        host.ip(&["link", "set", "h2eth", "address", "02:00:00:00:00:22"]);
        host.ip(&["addr", "add", "198.18.0.2/24", "dev", "h2eth"]);
        host.ip(&["link", "set", "h2eth", "up"]);
    };
    plug(&host);
    lab.sw.ok(&["add-port", "br0", &port]);
    assert!(lab.c(c1).pings("198.18.0.2", 2));

    lab.switch_ns.ip(&["link", "del", &port]);
    wait_for("the port to say its interface is gone", Duration::from_secs(5), || {
        lab.sw.ok(&["show"]).contains("vanished") || lab.sw.ok(&["show"]).contains("no interface named")
    });
    // The other ports keep forwarding, and the daemon keeps answering.
    assert!(lab.c(c1).pings("198.18.0.3", 2));

    plug(&host);
    wait_for("forwarding through the re-created interface", Duration::from_secs(10), || {
        lab.c(c1).pings("198.18.0.2", 1)
    });
    assert!(!lab.sw.ok(&["show"]).contains("error:"), "{}", lab.sw.ok(&["show"]));
    assert_eq!(lab.sw.port_stats("br0", &port)["link_lost"], 1);
}

#[test]
fn container_port_errors_name_the_problem() {
    if !e2e_allowed("container_port_errors_name_the_problem") {
        return;
    }
    let mut lab = Lab::new("err");
    lab.sw.ok(&["add-br", "br0"]);
    let c1 = lab.container("br0", 1, &[]);
    let name = lab.c(c1).name.clone();
    assert!(lab.sw.fails(&["add-container-port", "br0", "eth1", "nosuch-ns"]).contains("ip netns list"));
    assert!(lab.sw.fails(&["add-container-port", "br0", "eth0", &name]).contains("already attached"));
    assert!(lab
        .sw
        .fails(&["add-container-port", "br0", "lo", &name])
        .contains("already has an interface named lo"));
    assert!(lab
        .sw
        .fails(&["add-container-port", "br0", "eth1", &name, "--ip", "300.1.1.1/24"])
        .contains("not an IP"));
    assert!(lab.sw.fails(&["add-container-port", "nobr", "eth1", &name]).contains("no bridge"));
    // Nothing half-made stays behind: one port, one veth on the host side.
    assert_eq!(lab.sw.ok(&["list-ports", "br0"]).lines().count(), 1);
    let links = lab.switch_ns.ip(&["-o", "link", "show", "type", "veth"]);
    assert_eq!(links.lines().count(), 1, "{links}");
    lab.sw.ok(&["del-container-port", "br0", "eth0", &name]);
    assert!(!lab.c(c1).ip(&["link", "show"]).contains("eth0"));
    lab.sw.ok(&["--if-exists", "del-container-port", "br0", "eth0", &name]);
}

#[test]
fn deleting_a_bridge_deletes_its_container_pairs() {
    if !e2e_allowed("deleting_a_bridge_deletes_its_container_pairs") {
        return;
    }
    let mut lab = Lab::new("delbr");
    lab.sw.ok(&["add-br", "br0"]);
    let c1 = lab.container("br0", 1, &[]);
    let c2 = lab.container("br0", 2, &[]);
    let port2 = lab.port_of("br0", c2);
    lab.sw.ok(&["del-port", "br0", &port2]);
    assert!(!lab.c(c2).ip(&["link", "show"]).contains("eth0"), "del-port left the container's end");
    lab.sw.ok(&["del-br", "br0"]);
    assert!(!lab.c(c1).ip(&["link", "show"]).contains("eth0"), "del-br left the container's end");
    let links = lab.switch_ns.ip(&["-o", "link", "show", "type", "veth"]);
    assert!(links.trim().is_empty(), "host ends left behind: {links}");
}

#[test]
fn vlan_tags_stripped_by_the_kernel_are_restored() {
    if !e2e_allowed("vlan_tags_stripped_by_the_kernel_are_restored") {
        return;
    }
    // c1 is on a trunk port and sends ARP requests tagged with VLAN 10. The
    // kernel moves a received tag into metadata, so the switch sees it only
    // through PACKET_AUXDATA. c2, an access port of VLAN 10, must get the
    // requests untagged, and the switch must learn c1 in VLAN 10.
    let mut lab = Lab::new("aux");
    lab.sw.ok(&["add-br", "br0"]);
    let c1 = lab.container("br0", 1, &["--mac", "02:00:00:00:01:01"]);
    let c2 = lab.container("br0", 2, &["--tag", "10"]);
    lab.c(c2).ip(&["addr", "add", "198.18.10.2/24", "dev", "eth0"]);
    let send_tagged_arp = r#"
import socket
mac = bytes.fromhex("020000000101")
arp = bytes([0, 1, 8, 0, 6, 4, 0, 1]) + mac + bytes([198, 18, 10, 1]) + bytes(6) + bytes([198, 18, 10, 2])
frame = b"\xff" * 6 + mac + b"\x81\x00\x00\x0a\x08\x06" + arp
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
for _ in range(3):
    s.send(frame)
"#;
    must(lab.c(c1).command("python3").args(["-c", send_tagged_arp]));
    let trunk_port = lab.port_of("br0", c1);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let fdb = lab.sw.fdb("br0");
        if fdb.iter().any(|(p, vlan, mac)| *p == trunk_port && *vlan == 10 && mac == "02:00:00:00:01:01") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "c1 not learned in VLAN 10: {fdb:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The access port delivered the request untagged: c2's stack answered
    // it, and so learned c1 as a neighbour.
    let neigh = lab.c(c2).ip(&["neigh", "show", "198.18.10.1"]);
    assert!(neigh.contains("02:00:00:00:01:01"), "c2 never saw the request: {neigh:?}");
    let stats = lab.sw.port_stats("br0", &trunk_port);
    assert!(stats["drop_reasons"].get("vlan_not_allowed").is_none(), "{stats}");
}

#[test]
fn a_flow_drops_tcp_to_one_port_while_ping_passes() {
    if !e2e_allowed("a_flow_drops_tcp_to_one_port_while_ping_passes") {
        return;
    }
    let mut lab = Lab::new("acl");
    lab.sw.ok(&["add-br", "br0"]);
    let c1 = lab.container("br0", 1, &[]);
    let _c2 = lab.container("br0", 2, &[]);
    lab.sw.ok(&["add-flow", "br0", "priority=100,tcp,nw_dst=198.18.0.2,tp_dst=5201,actions=drop"]);
    // A connect attempt, bounded to 3 s: 124 means it timed out.
    let connect = |port: u16| {
        let script = format!("exec 3<>/dev/tcp/198.18.0.2/{port}");
        run(lab.c(c1).command("timeout").args(["3", "bash", "-c", &script])).status.code()
    };
    assert_eq!(connect(5201), Some(124), "TCP to port 5201 should be dropped (no answer at all)");
    assert_ne!(connect(5202), Some(124), "TCP to port 5202 should reach c2 (refused quickly)");
    assert!(lab.c(c1).pings("198.18.0.2", 3));
    let flows = lab.sw.json(&["dump-flows", "br0"]);
    let drop = flows
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["flow"].as_str().unwrap().contains("tp_dst=5201"))
        .expect("the drop flow is listed");
    assert!(drop["n_packets"].as_u64().unwrap() >= 1, "{drop}");
}

#[test]
fn a_container_resolves_and_pings_the_bridge_gateway() {
    if !e2e_allowed("a_container_resolves_and_pings_the_bridge_gateway") {
        return;
    }
    let mut lab = Lab::new("gw");
    lab.sw.ok(&["add-br", "br0", "--", "set", "bridge", "br0", "gateway=198.18.0.1/24"]);
    let c1 = lab.container("br0", 2, &["--gateway", "198.18.0.1"]);
    assert!(lab.c(c1).pings("198.18.0.1", 3), "the switch must answer for its gateway address");
    // The kernel resolved the gateway by ARP to the switch's gateway MAC.
    let neigh = lab.c(c1).ip(&["neigh", "show", "198.18.0.1"]);
    assert!(neigh.contains("02:76:c6:12:00:01"), "{neigh}");
    let show = lab.sw.ok(&["show"]);
    assert!(show.contains("gateway: 198.18.0.1/24"), "{show}");
    // Without a gateway, nothing answers there.
    lab.sw.ok(&["clear", "bridge", "br0", "gateway"]);
    assert!(lab.c(c1).cannot_reach("198.18.0.1", 2));
}

#[test]
fn isolated_containers_reach_the_gateway_and_others_but_not_each_other() {
    if !e2e_allowed("isolated_containers_reach_the_gateway_and_others_but_not_each_other") {
        return;
    }
    let mut lab = Lab::new("iso");
    lab.sw.ok(&["add-br", "br0", "--", "set", "bridge", "br0", "gateway=198.18.0.1/24"]);
    let c1 = lab.container("br0", 2, &[]);
    let c2 = lab.container("br0", 3, &[]);
    let open = lab.container("br0", 4, &[]);
    for c in [c1, c2] {
        let port = lab.port_of("br0", c);
        lab.sw.ok(&["set", "port", &port, "isolated=true"]);
    }
    assert!(lab.c(c1).cannot_reach("198.18.0.3", 2), "isolated containers must not reach each other");
    assert!(lab.c(c1).pings("198.18.0.4", 2));
    assert!(lab.c(c2).pings("198.18.0.4", 2));
    assert!(lab.c(c1).pings("198.18.0.1", 2), "the gateway stays reachable");
    assert!(lab.c(open).pings("198.18.0.2", 2));
    // c1's ARP for c2 never reached c2, so c1 never learned its MAC.
    let neigh = lab.c(c1).ip(&["neigh", "show", "198.18.0.3"]);
    assert!(!neigh.contains("lladdr"), "{neigh}");
    let show = lab.sw.ok(&["show"]);
    assert!(show.contains("isolated: true"), "{show}");
}
