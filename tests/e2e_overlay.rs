//! Overlay networks kept in etcd, end to end, as Docker's classic overlay
//! network runs across machines: a 3-member etcd cluster in a namespace of
//! its own, and three "hosts", each a namespace running its own vswitchd,
//! all on one underlay (a Linux bridge in a namespace of the test's,
//! 198.19.0.0/24). No host is given another host's address: each is told
//! only the store and its own address, and finds the others there.
//!
//! Root only; CI runs them one at a time (see .config/nextest.toml). The
//! figures they print (convergence times, throughput) are reported, never
//! asserted beyond generous bounds.

use std::time::{Duration, Instant};

use testkit::lab::*;
use testkit::overlay::{cluster, vtep, TTL_SECS};

const SUBNET: &str = "198.18.100.0/24";

/// A container namespace on host `h`, attached to `network`; returns its
/// index in the host's containers and the address it was given.
fn attach(lab: &mut Lab, network: &str, name: &str, extra: &[&str]) -> Result<(usize, String), String> {
    let ns = Netns::new(format!("{}-{name}", lab.prefix()));
    let mut args = vec!["--format", "json", "add-container-port", network, "eth0", &ns.name];
    args.extend_from_slice(extra);
    let out = lab.sw.vsctl(&args);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let ip = reply["ip"].as_str().expect("an overlay attachment says its address");
    let ip = ip.split('/').next().unwrap().to_owned();
    lab.containers.push(ns);
    Ok((lab.containers.len() - 1, ip))
}

/// `list-overlays`' record of `network` on this host.
fn overlay(lab: &Lab, network: &str) -> serde_json::Value {
    let list = lab.sw.json(&["list-overlays"]);
    list.as_array().into_iter().flatten().find(|o| o["name"] == network).cloned().unwrap_or_default()
}

fn overlay_peers(lab: &Lab, network: &str) -> Vec<String> {
    let peers = overlay(lab, network)["peers"].as_array().cloned().unwrap_or_default();
    peers.iter().map(|p| p["host"].as_str().unwrap_or_default().to_owned()).collect()
}

fn store_status(lab: &Lab, network: &str) -> String {
    overlay(lab, network)["store"].as_str().unwrap_or_default().to_owned()
}

/// Seconds until `ok` holds, polling every 50 ms; fails after `limit`.
fn time_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) -> f64 {
    let start = Instant::now();
    wait_for(what, limit, &mut ok);
    start.elapsed().as_secs_f64()
}

fn pings_once(from: &Netns, to: &str) -> bool {
    run(from.command("ping").args(["-n", "-q", "-c", "1", "-W", "1", to])).status.success()
}

#[test]
fn overlay_across_three_hosts_with_faults() {
    if !e2e_allowed("overlay_across_three_hosts_with_faults") {
        return;
    }
    let _serial = traffic_lock();
    let mut c = cluster("ov", 3);

    // The network is made once, on host 0; every host gets its bridge.
    c.hosts[0].sw.ok(&["add-overlay", "red", "--subnet", SUBNET, "--gateway", "198.18.100.1"]);
    for lab in &c.hosts {
        wait_for("every host makes the red bridge", Duration::from_secs(10), || {
            lab.sw.ok(&["list-br"]).lines().any(|l| l == "red")
        });
    }
    assert!(c.hosts[1].sw.fails(&["add-overlay", "red", "--subnet", SUBNET]).contains("already exists"));

    // A container on each host; addresses come from the store.
    let mut red = Vec::new();
    for (i, lab) in c.hosts.iter_mut().enumerate() {
        red.push(attach(lab, "red", &format!("r{i}"), &[]).expect("attach"));
    }
    let ips: Vec<&str> = red.iter().map(|(_, ip)| ip.as_str()).collect();
    let mut distinct = ips.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "three distinct addresses: {ips:?}");

    // Every pair pings, both ways, with no host told another's address.
    for (i, a) in c.hosts.iter().enumerate() {
        for (j, _) in c.hosts.iter().enumerate().filter(|(j, _)| *j != i) {
            assert!(a.c(red[i].0).pings(&red[j].1, 3), "red container on host {i} pings host {j}'s");
        }
        assert!(a.c(red[i].0).pings("198.18.100.1", 2), "the gateway answers on every host");
    }

    // What the overlay installed is visible: peers, static MACs, tunnels.
    let peers = overlay_peers(&c.hosts[0], "red");
    assert_eq!(peers, vec![vtep(1), vtep(2)], "host 0's peers");
    let fdb = c.hosts[0].sw.ok(&["fdb-show", "red"]);
    let remote_mac = testkit_mac(&red[1].1);
    assert!(
        fdb.lines().any(|l| l.contains(&remote_mac) && l.trim_end().ends_with("static")),
        "host 1's container is a static entry on host 0:\n{fdb}"
    );
    let show = c.hosts[0].sw.ok(&["show"]);
    assert!(show.contains("overlay: red subnet 198.18.100.0/24"), "{show}");
    assert!(show.contains(&format!("peer {} via", vtep(1))), "{show}");

    // ARP for a remote container is answered on the host: it never crosses the underlay.
    // Host 0's tunnel to host 2 carries nothing while host 0's container
    // resolves and pings host 1's.
    let to_host2 = tunnel_port(vni_of(&c.hosts[0], "red"), &vtep(2));
    let sent_to_host2 = || c.hosts[0].sw.port_stats("red", &to_host2)["tx_packets"].as_u64().unwrap();
    let before = sent_to_host2();
    let c0 = c.hosts[0].c(red[0].0);
    run(c0.command("ip").args(["neigh", "flush", "dev", "eth0"]));
    assert!(c0.pings(&red[1].1, 1));
    assert_eq!(sent_to_host2(), before, "ARP for a known remote endpoint is answered on host 0, not flooded");
    // ... by its ARP responder flow, which dump-flows shows with its hits.
    let flows = c.hosts[0].sw.ok(&["dump-flows", "red", "cookie=0x56534f564c000000/0xffffffffff000000"]);
    let responder = flows.lines().find(|l| l.contains(&format!("arp_tpa={} ", red[1].1)));
    let responder =
        responder.unwrap_or_else(|| panic!("an ARP responder flow for host 1's container:\n{flows}"));
    assert!(!responder.contains("n_packets=0,"), "it answered: {responder}");
    assert_eq!(
        flows.lines().filter(|l| l.contains("arp_tpa=")).count(),
        2,
        "one per remote container:\n{flows}"
    );

    // 5 s of TCP across hosts.
    let server = c.hosts[1].c(red[1].0).spawn("iperf3", &["-s", "-1"]);
    std::thread::sleep(Duration::from_millis(300));
    let client = c.hosts[0]
        .c(red[0].0)
        .spawn("iperf3", &["-c", &red[1].1, "-t", "5", "-J", "--connect-timeout", "2000"])
        .wait_output(Duration::from_secs(20));
    drop(server);
    let report: serde_json::Value = serde_json::from_slice(&client.stdout).expect("iperf3 JSON");
    let mbps = report["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0) / 1e6;
    eprintln!("overlay TCP host 0 -> host 1: {mbps:.0} Mbit/s over 5 s");
    assert!(mbps > 1.0, "TCP crossed the overlay: {report}");

    // A second network with the same subnet stays apart: blue's containers
    // take red's addresses of hosts 1 and 0 (an exact overlap).
    c.hosts[2].sw.ok(&["add-overlay", "blue", "--subnet", SUBNET]);
    for lab in &c.hosts {
        wait_for("every host makes the blue bridge", Duration::from_secs(10), || {
            lab.sw.ok(&["list-br"]).lines().any(|l| l == "blue")
        });
    }
    let blue0 = attach(&mut c.hosts[0], "blue", "b0", &["--ip", &red[1].1]).expect("attach blue");
    let blue1 = attach(&mut c.hosts[1], "blue", "b1", &["--ip", &red[0].1]).expect("attach blue");
    assert_ne!(vni_of(&c.hosts[0], "red"), vni_of(&c.hosts[0], "blue"), "each network has its own VNI");
    // Red's container at the same address goes down: blue still reaches blue.
    c.hosts[0].c(red[0].0).ip(&["link", "set", "eth0", "down"]);
    assert!(c.hosts[0].c(blue0.0).pings(&blue1.1, 3), "blue host 0 pings blue host 1");
    assert!(c.hosts[0].c(blue0.0).cannot_reach(&red[2].1, 2), "blue never reaches red's host 2 container");
    c.hosts[0].c(red[0].0).ip(&["link", "set", "eth0", "up"]);
    assert!(c.hosts[1]
        .sw
        .fails(&["add-container-port", "blue", "eth1", &c.hosts[1].c(blue1.0).name, "--ip", &blue0.1])
        .contains("already taken"));

    // Convergence: a container attached on host 2 until host 0 pings it.
    let start = Instant::now();
    let late = attach(&mut c.hosts[2], "red", "r2b", &[]).expect("attach");
    let c0 = c.hosts[0].c(red[0].0);
    wait_for("host 0 reaches a new container on host 2", Duration::from_secs(10), || pings_once(c0, &late.1));
    eprintln!("convergence: attach on host 2 until host 0 pings it: {:.2} s", start.elapsed().as_secs_f64());

    // Host 2 dies: the others drop its endpoints and tunnel within the TTL.
    let killed = Instant::now();
    c.hosts[2].sw.stop_with(nix::sys::signal::Signal::SIGKILL);
    let gone =
        time_until("host 2 disappears from host 0's peers", Duration::from_secs(TTL_SECS + 10), || {
            !overlay_peers(&c.hosts[0], "red").contains(&vtep(2))
        });
    eprintln!("convergence: host 2 SIGKILLed until host 0 dropped it: {gone:.2} s (TTL {TTL_SECS} s)");
    assert!(gone <= (TTL_SECS + 3) as f64, "dropped within the TTL (plus a watch round trip): {gone:.2} s");
    let fdb = c.hosts[0].sw.ok(&["fdb-show", "red"]);
    assert!(!fdb.contains(&testkit_mac(&red[2].1)), "host 2's endpoints are gone:\n{fdb}");
    assert!(c.hosts[0].c(red[0].0).pings(&red[1].1, 2), "hosts 0 and 1 go on");

    // It comes back by itself: its container ports, endpoints and tunnels.
    c.hosts[2].sw.restart();
    let back = time_until("host 0 pings host 2's container again", Duration::from_secs(20), || {
        pings_once(c.hosts[0].c(red[0].0), &red[2].1)
    });
    eprintln!(
        "convergence: host 2 restarted until host 0 pings it: {back:.2} s ({:.2} s since the kill)",
        killed.elapsed().as_secs_f64()
    );

    // One etcd member stops: everything keeps working, changes included.
    c.etcd.stop(0);
    let (one_down, one_down_ip) =
        attach(&mut c.hosts[1], "red", "r1b", &[]).expect("attach with a member down");
    let _ = one_down;
    let c0 = c.hosts[0].c(red[0].0);
    wait_for("host 0 reaches a container attached with a member down", Duration::from_secs(15), || {
        pings_once(c0, &one_down_ip)
    });

    // Every member stops: what is known keeps forwarding, changes fail
    // saying why, and show says the store is unreachable.
    c.etcd.stop(1);
    c.etcd.stop(2);
    assert!(c.hosts[0].c(red[0].0).pings(&red[1].1, 3), "existing traffic flows without the store");
    let refused = attach(&mut c.hosts[0], "red", "r0b", &[]).expect_err("an attachment needs the store");
    assert!(refused.contains("unreachable"), "a clear error: {refused}");
    wait_for("show says the store is unreachable", Duration::from_secs(15), || {
        store_status(&c.hosts[0], "red").starts_with("unreachable")
    });
    assert!(c.hosts[2].c(red[2].0).pings(&red[0].1, 2), "host 2 still reaches host 0 without the store");

    // The store returns: the hosts reconcile and changes work again.
    let returned = Instant::now();
    for i in 0..3 {
        c.etcd.restart(i);
    }
    c.etcd.wait_healthy(Duration::from_secs(30));
    for lab in &c.hosts {
        wait_for("the store is reachable again", Duration::from_secs(20), || {
            store_status(lab, "red") == "reachable"
        });
    }
    eprintln!(
        "convergence: store back until every host reconciled: {:.2} s",
        returned.elapsed().as_secs_f64()
    );
    let (_, after) = attach(&mut c.hosts[0], "red", "r0c", &[]).expect("attach after the store returned");
    let c2 = c.hosts[2].c(red[2].0);
    wait_for("host 2 reaches a container attached after the outage", Duration::from_secs(10), || {
        pings_once(c2, &after)
    });

    // del-overlay removes the network everywhere.
    c.hosts[1].sw.ok(&["del-overlay", "blue"]);
    for lab in &c.hosts {
        wait_for("every host removes the blue bridge", Duration::from_secs(10), || {
            !lab.sw.ok(&["list-br"]).lines().any(|l| l == "blue")
        });
    }
    assert!(c.etcd.keys("/vswitch/v1/endpoints/blue/").is_empty());
    let _ = &c.underlay;
}

#[test]
fn addresses_allocated_at_once_on_three_hosts_are_distinct() {
    if !e2e_allowed("addresses_allocated_at_once_on_three_hosts_are_distinct") {
        return;
    }
    let c = cluster("ip", 3);
    c.hosts[0].sw.ok(&["add-overlay", "many", "--subnet", "198.18.104.0/22"]);
    for lab in &c.hosts {
        wait_for("every host makes the bridge", Duration::from_secs(10), || {
            lab.sw.ok(&["list-br"]).lines().any(|l| l == "many")
        });
    }
    // Each host attaches 50 interfaces of one namespace (no gateway, so no
    // routes to clash), all three hosts at once.
    let namespaces: Vec<Netns> =
        c.hosts.iter().map(|lab| Netns::new(format!("{}-many", lab.prefix()))).collect();
    let started = Instant::now();
    let addresses: Vec<Vec<String>> = std::thread::scope(|scope| {
        let workers: Vec<_> = c
            .hosts
            .iter()
            .zip(&namespaces)
            .map(|(lab, ns)| {
                // Switch is not Sync: each thread drives its host's vsctl itself.
                let run_dir = lab.sw.run_dir();
                let netns = ns.name.clone();
                scope.spawn(move || {
                    (0..50)
                        .map(|k| {
                            let ifname = format!("eth{k}");
                            let reply = must(
                                std::process::Command::new(testkit::vsctl_bin())
                                    .arg("--run-dir")
                                    .arg(&run_dir)
                                    .args([
                                        "--format",
                                        "json",
                                        "add-container-port",
                                        "many",
                                        &ifname,
                                        &netns,
                                    ]),
                            );
                            let reply: serde_json::Value = serde_json::from_str(&reply).expect("JSON");
                            reply["ip"].as_str().expect("an address").to_owned()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("a host's allocations")).collect()
    });
    let mut all: Vec<&String> = addresses.iter().flatten().collect();
    assert_eq!(all.len(), 150);
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 150, "150 attachments on 3 hosts at once got 150 distinct addresses");
    eprintln!("150 addresses allocated on 3 hosts at once in {:.2} s", started.elapsed().as_secs_f64());
    assert_eq!(c.etcd.keys("/vswitch/v1/addresses/many/").len(), 150);
    drop(c);
    drop(namespaces);
}

/// Docker's MAC for a container address, as `fdb-show` prints it.
fn testkit_mac(ip: &str) -> String {
    let octets: Vec<u8> = ip.split('.').map(|o| o.parse().unwrap()).collect();
    format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", octets[0], octets[1], octets[2], octets[3])
}

fn vni_of(lab: &Lab, network: &str) -> u64 {
    overlay(lab, network)["vni"].as_u64().expect("the network is listed")
}

/// The tunnel port to `vtep` on the network with `vni`, as vswitchd names it.
fn tunnel_port(vni: u64, vtep: &str) -> String {
    let ip: std::net::Ipv4Addr = vtep.parse().unwrap();
    format!("vx{vni:x}.{:08x}", u32::from(ip))
}
