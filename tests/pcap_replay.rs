//! Captures through the switch: every one of tcpdump's test captures (many
//! malformed on purpose) without a panic or a hang and with every frame
//! accounted for, and clear errors for files that are not Ethernet pcaps.

use testkit::*;

#[test]
fn every_shared_capture_is_switched_or_counted() {
    let Some(dir) = shared_pcaps() else {
        assert!(!in_ci(), "../shared/pcaps/tcpdump is missing in CI");
        eprintln!("SKIPPED: ../shared/pcaps/tcpdump is not beside this checkout");
        return;
    };
    let sw = Switch::start();
    sw.bridge_with_pcap_ports("br0", &["p1", "p2", "p3"]);
    // A trunk in, a trunk and an access port out: tagged captures take
    // both the pass-through and the untagging paths.
    sw.ok(&["set", "port", "p3", "tag=10"]);
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 200, "expected tcpdump's ~210 captures, found {}", files.len());
    let (mut frames, mut forwarded, mut dropped) = (0u64, 0u64, 0u64);
    for file in &files {
        let expected = proto::pcap::read_ethernet_file(file).expect("shared captures are Ethernet pcaps");
        let out = sw
            .vsctl_command()
            .args(["--format", "json", "--timeout", "60", "replay", "br0", "p1"])
            .arg(file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "replay of {} failed: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let n = reply["frames"].as_u64().unwrap();
        assert_eq!(n, expected.records.len() as u64, "{}: frames replayed", file.display());
        let (f, d) = (reply["forwarded"].as_u64().unwrap(), reply["dropped"].as_u64().unwrap());
        assert_eq!(f + d, n, "{}: every frame is forwarded or counted as a drop", file.display());
        frames += n;
        forwarded += f;
        dropped += d;
    }
    // Still answering, and the port's counters agree with the replies.
    let p1 = sw.port_stats("br0", "p1");
    assert_eq!(p1["rx_packets"].as_u64(), Some(frames));
    assert_eq!(p1["rx_dropped"].as_u64(), Some(dropped));
    let by_reason: u64 = p1["drop_reasons"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(by_reason, dropped, "drop reasons account for every drop");
    for port in ["p2", "p3"] {
        let tx = sw.port_stats("br0", port)["tx_packets"].as_u64().unwrap();
        assert_eq!(tx, sw.tx(port).len() as u64, "{port}'s capture holds what it counted");
    }
    eprintln!(
        "{} captures, {frames} frames: {forwarded} forwarded, {dropped} dropped by reason {}",
        files.len(),
        p1["drop_reasons"]
    );
    assert!(forwarded > 0 && frames > 1000);
}

#[test]
fn files_that_are_not_ethernet_pcaps_are_refused_clearly() {
    let sw = Switch::start();
    sw.bridge_with_pcap_ports("br0", &["p1", "p2"]);
    let text = sw.path("notes.txt");
    std::fs::write(&text, "these are not frames\n").unwrap();
    let err = sw.fails(&["replay", "br0", "p1", text.to_str().unwrap()]);
    assert!(err.contains("not a pcap"), "{err}");

    let mut raw_ip = std::fs::read(shared_or_own_capture(&sw)).unwrap();
    raw_ip[20..24].copy_from_slice(&101u32.to_le_bytes());
    let raw_path = sw.path("raw-ip.pcap");
    std::fs::write(&raw_path, raw_ip).unwrap();
    let err = sw.fails(&["replay", "br0", "p1", raw_path.to_str().unwrap()]);
    assert!(err.contains("link type is 101"), "{err}");

    let ng = sw.path("capture.pcapng");
    std::fs::write(
        &ng,
        [
            0x0a, 0x0d, 0x0d, 0x0a, 0x1c, 0, 0, 0, 0x4d, 0x3c, 0x2b, 0x1a, 1, 0, 0, 0, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0xff, 0xff, 0x1c, 0, 0, 0,
        ],
    )
    .unwrap();
    let err = sw.fails(&["replay", "br0", "p1", ng.to_str().unwrap()]);
    assert!(err.contains("editcap"), "{err}");

    let err = sw.fails(&["replay", "br0", "p1", "/nonexistent/capture.pcap"]);
    assert!(err.contains("cannot open"), "{err}");
    let err = sw.fails(&["replay", "br0", "nosuch", text.to_str().unwrap()]);
    assert!(err.contains("not a pcap"), "the file is checked before the port: {err}");

    // As an rx_pcap, a bad file fails the whole transaction.
    let err = sw.fails(&[
        "add-port",
        "br0",
        "p9",
        "--",
        "set",
        "interface",
        "p9",
        "type=pcap",
        &format!("options:rx_pcap={}", text.display()),
    ]);
    assert!(err.contains("rx_pcap"), "{err}");
    assert_eq!(sw.ok(&["list-ports", "br0"]), "p1\np2\n");
}

#[test]
fn truncated_capture_replays_what_it_holds_and_warns() {
    let sw = Switch::start();
    sw.bridge_with_pcap_ports("br0", &["p1", "p2"]);
    let path = sw.path("cut.pcap");
    write_pcap(&path, &[frame(BROADCAST, mac(1)), frame(BROADCAST, mac(2))]);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 7]).unwrap();
    let out = sw.vsctl(&["replay", "br0", "p1", path.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("truncated"));
    assert_eq!(sw.tx("p2"), vec![frame(BROADCAST, mac(1))]);
}

#[test]
fn unwritable_tx_pcap_fails_the_command() {
    let sw = Switch::start();
    sw.ok(&["add-br", "br0"]);
    let err = sw.fails(&[
        "add-port",
        "br0",
        "p1",
        "--",
        "set",
        "interface",
        "p1",
        "type=pcap",
        "options:tx_pcap=/nonexistent-dir/p1.pcap",
    ]);
    assert!(err.contains("cannot create options:tx_pcap"), "{err}");
    assert_eq!(sw.ok(&["list-ports", "br0"]), "");
}

fn shared_or_own_capture(sw: &Switch) -> std::path::PathBuf {
    let path = sw.path("own.pcap");
    write_pcap(&path, &[frame(BROADCAST, mac(1))]);
    path
}

/// The connection tracker (what the `ct` action runs) takes every frame of every
/// shared capture, committing with masquerade and then looking up: no
/// panic, a bounded table, and translated frames whose IPv4 header
/// checksum was right stay right.
#[test]
fn conntrack_takes_every_shared_capture() {
    use vswitchd::core::conntrack::{state, Conntrack, CtRequest, Nat, NatRange};
    let Some(dir) = shared_pcaps() else {
        assert!(!in_ci(), "../shared/pcaps/tcpdump is missing in CI");
        eprintln!("SKIPPED: ../shared/pcaps/tcpdump is not beside this checkout");
        return;
    };
    let header_ok = |frame: &[u8]| {
        let l3 = vswitchd::core::packet::L2Header::parse(frame).ok()?.payload_offset;
        let ip = etherparse::Ipv4HeaderSlice::from_slice(frame.get(l3..)?).ok()?;
        let h = ip.to_header();
        Some(h.calc_header_checksum() == h.header_checksum)
    };
    let mut ct = Conntrack::new(1000);
    let masquerade = NatRange { addr_min: 0xc613_0001, addr_max: 0xc613_0001, port_min: 0, port_max: 0 };
    let commit =
        CtRequest { commit: true, nat: true, nat_range: Some(Nat::Src(masquerade)), ..CtRequest::default() };
    let lookup = CtRequest { nat: true, ..CtRequest::default() };
    let (mut tracked, mut untracked, mut translated) = (0u64, 0u64, 0u64);
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for (n, file) in files.iter().enumerate() {
        let capture = proto::pcap::read_ethernet_file(file).expect("shared captures are Ethernet pcaps");
        for record in capture.records {
            for request in [&commit, &lookup] {
                let mut frame = record.data.clone();
                let before = header_ok(&frame);
                let mut offload = vswitchd::core::offload::Offload::NONE;
                let now = vswitchd::core::Timestamp::from_millis(n as u64 * 1000);
                let result = ct.execute(now, &mut frame, &mut offload, request);
                if result.state & state::TRK == 0 {
                    untracked += 1;
                    continue;
                }
                tracked += 1;
                if result.state & state::SNAT != 0 {
                    translated += 1;
                    if before == Some(true) {
                        assert_eq!(
                            header_ok(&frame),
                            Some(true),
                            "{}: translation broke the checksum",
                            file.display()
                        );
                    }
                }
            }
        }
        assert!(ct.len() <= 1000);
    }
    eprintln!(
        "conntrack over the captures: {tracked} tracked, {untracked} untracked, {translated} translated; {:?}",
        ct.stats
    );
    assert!(tracked > 1000 && untracked > 100 && translated > 100, "the captures exercise every path");
    assert!(ct.stats.created > 0 && ct.stats.invalid > 0);
}

/// Every shared capture through a bridge set up as Docker's network (a
/// gateway, an uplink with an address, masquerade and a port mapping
/// compiled into ct and route flows), into the container side and the
/// uplink in turn: no panic, and every frame forwarded or counted.
#[test]
fn every_shared_capture_through_the_nat_and_the_router() {
    use vswitchd::core::bridge::{Bridge, BridgeSettings};
    use vswitchd::core::l2::vlan::PortVlan;
    use vswitchd::core::l3::gateway::Gateway;
    use vswitchd::core::ofproto::ofctl::parse_flow;
    use vswitchd::core::Timestamp;
    use vswitchd::nat::{compile, Masquerade, PortMapping};
    let Some(dir) = shared_pcaps() else {
        assert!(!in_ci(), "../shared/pcaps/tcpdump is missing in CI");
        eprintln!("SKIPPED: ../shared/pcaps/tcpdump is not beside this checkout");
        return;
    };
    let gateway = Gateway::parse("198.18.0.1/24").unwrap();
    let uplink = Gateway::parse("198.19.0.1/24").unwrap();
    let mut br = Bridge::new(BridgeSettings { gateway: Some(gateway), ..BridgeSettings::default() });
    br.set_port(1, "p1", PortVlan::default());
    br.set_port(2, "up0", PortVlan::default());
    br.set_port_address(2, Some((uplink, Some(u32::from_be_bytes([198, 19, 0, 254])))));
    let mapping = PortMapping {
        proto: "tcp".into(),
        host_port: 80,
        container_ip: "198.18.0.7".into(),
        container_port: 80,
    };
    let ports = |name: &str| ["", "p1", "up0"].iter().position(|p| *p == name).map(|p| p as u16);
    for flow in compile(&gateway, &uplink, &Masquerade { out_port: "up0".into() }, &[mapping]) {
        br.add_flow(parse_flow(&flow, &ports).unwrap(), Timestamp::from_millis(0));
    }
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let mut received = 0u64;
    let mut sent = Vec::new();
    for (n, file) in files.iter().enumerate() {
        let capture = proto::pcap::read_ethernet_file(file).expect("shared captures are Ethernet pcaps");
        let now = Timestamp::from_millis(n as u64 * 100);
        for (i, record) in capture.records.iter().enumerate() {
            let port = 1 + (i % 2) as u16;
            let frame = aim_at_the_router(&record.data, port == 1, &gateway, &uplink);
            br.receive_batch(now, port, [frame.as_slice()], &mut sent);
            received += 1;
        }
    }
    let dropped: u64 = br.ports().map(|(_, p)| p.counters.rx_dropped()).sum();
    let rx: u64 = br.ports().map(|(_, p)| p.counters.rx_packets).sum();
    assert_eq!(rx, received);
    assert!(
        br.router().stats.arp_requests > 0 && br.conntrack().stats.created > 0,
        "the captures reached the router and conntrack"
    );
    assert_eq!(
        br.forwarded + dropped,
        received,
        "every frame is forwarded, answered, waiting or a counted drop"
    );
    eprintln!(
        "{received} frames through the NAT bridge: {} forwarded, {dropped} dropped, {} sent; router {:?}; conntrack {:?}",
        br.forwarded,
        sent.len(),
        br.router().stats,
        br.conntrack().stats
    );
}

/// The frame readdressed so the router sees it: to the gateway's MAC with
/// a source in its subnet (from inside), or to the uplink's MAC and
/// address (from outside); ARP is aimed at the router's address. What
/// follows the addresses is left as the capture has it, damage included.
fn aim_at_the_router(
    frame: &[u8],
    inside: bool,
    gateway: &vswitchd::core::l3::gateway::Gateway,
    uplink: &vswitchd::core::l3::gateway::Gateway,
) -> Vec<u8> {
    let mut f = frame.to_vec();
    let router = if inside { gateway } else { uplink };
    if f.len() >= 14 {
        f[0..6].copy_from_slice(&router.mac);
    }
    match f.get(12..14) {
        Some([0x08, 0x00]) if f.len() >= 34 => {
            if inside {
                f[26..30].copy_from_slice(&[198, 18, 0, 2]);
            } else {
                f[30..34].copy_from_slice(&router.ip.to_be_bytes());
            }
        }
        Some([0x08, 0x06]) if f.len() >= 42 => f[38..42].copy_from_slice(&router.ip.to_be_bytes()),
        _ => {}
    }
    f
}
