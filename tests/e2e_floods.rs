//! The switch under attack, end to end: each test floods it from a
//! container of its own while known hosts go on talking, and reports the
//! daemon's memory (VmRSS before and after, VmHWM) and what was forwarded
//! during the flood.
//!
//! - A flood of frames with random source MACs keeps the MAC table at its
//!   limit and memory flat, and known hosts keep forwarding.
//! - A flood of new connections through the masquerade keeps conntrack at
//!   its limit with counted drops, and an established connection keeps
//!   carrying data.
//! - A flood of control requests (100 clients) does not starve forwarding.
//!
//! Root only; CI runs them, one at a time with the other traffic tests (see
//! .config/nextest.toml). Floods are bounded in frames; every other
//! generator in count and time.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use etherparse::PacketBuilder;
use testkit::lab::*;

/// A small, seeded generator: floods are the same on every run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `count` broadcast frames, each from a different random unicast MAC.
fn random_source_frames(count: usize, seed: u64) -> impl Iterator<Item = Vec<u8>> + Send {
    let mut rng = XorShift(seed);
    (0..count).map(move |_| {
        let mut src = rng.next().to_be_bytes()[..6].to_vec();
        src[0] = (src[0] & 0xfc) | 0x02; // locally administered unicast
        let mut frame = vec![0xff; 6];
        frame.extend_from_slice(&src);
        frame.extend_from_slice(&[0x88, 0xb5]); // local experimental ethertype
        frame.resize(60, 0);
        frame
    })
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Pings `addr` `count` times, 20 ms apart, in the background.
fn pinger(from: &Netns, addr: &str, count: u32) -> Guarded {
    from.spawn("ping", &["-n", "-q", "-c", &count.to_string(), "-i", "0.02", "-W", "1", addr])
}

/// (transmitted, received) from ping's summary.
fn ping_counts(out: &std::process::Output) -> (u64, u64) {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains("packets transmitted")).unwrap_or_else(|| panic!("{text}"));
    let numbers: Vec<u64> =
        line.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse().ok()).collect();
    (numbers[0], numbers[1])
}

#[test]
fn random_source_macs_keep_the_table_at_its_limit_and_known_hosts_forwarding() {
    if !e2e_allowed("random_source_macs_keep_the_table_at_its_limit_and_known_hosts_forwarding") {
        return;
    }
    let _one_at_a_time = traffic_lock();
    const LIMIT: usize = 2048;
    const FLOOD: usize = 200_000;
    let mut lab = Lab::new("macfl");
    lab.sw.ok(&[
        "add-br",
        "br0",
        "--",
        "set",
        "bridge",
        "br0",
        &format!("other_config:mac-table-size={LIMIT}"),
    ]);
    let c1 = lab.container("br0", 2, &[]);
    let c2 = lab.container("br0", 3, &[]);
    let attacker = lab.container("br0", 4, &[]);
    assert!(lab.c(c1).pings("198.18.0.3", 2));
    let pid = lab.sw.pid();
    let (before, _) = memory_kib(pid);

    let mut rounds = Vec::new();
    for round in 0..2u64 {
        let ping = pinger(lab.c(c1), "198.18.0.3", 100);
        let start = Instant::now();
        let injected = lab.c(attacker).inject("eth0", random_source_frames(FLOOD, 0x9e37_79b9 + round));
        let took = start.elapsed();
        let ping = ping.wait_output(Duration::from_secs(15));
        let (sent, answered) = ping_counts(&ping);
        let entries = lab.sw.fdb("br0").len();
        let (rss, _) = memory_kib(pid);
        eprintln!(
            "MAC flood round {round}: {injected} frames from random sources in {:.2} s; MAC table {entries}/{LIMIT}; \
             ping c1->c2 during it {answered}/{sent}; VmRSS {:.1} MiB",
            took.as_secs_f64(),
            mib(rss)
        );
        assert_eq!(injected, FLOOD as u64, "the kernel took every flood frame");
        assert_eq!(entries, LIMIT, "the table is full, and no fuller");
        assert_eq!(answered, sent, "known hosts kept forwarding through the flood");
        rounds.push(rss);
    }
    let (after, peak) = memory_kib(pid);
    let stats = lab.sw.port_stats("br0", &lab.port_of("br0", attacker));
    eprintln!(
        "MAC flood: VmRSS {:.1} MiB before, {:.1} / {:.1} MiB after each round, peak {:.1} MiB; attacker port {stats}",
        mib(before),
        mib(rounds[0]),
        mib(rounds[1]),
        mib(peak)
    );
    // A full table costs a few hundred KiB. Between rounds the allocator
    // alone moved VmRSS by up to 2 MiB here; a leak of 20 bytes a frame
    // would add 4 MiB per round.
    assert!(after < before + 16 * 1024, "memory grew by {} KiB", after - before);
    assert!(rounds[1] < rounds[0] + 4 * 1024, "memory not flat: {} then {} KiB", rounds[0], rounds[1]);
    // And the known hosts are still known, or learned again at once.
    assert!(lab.c(c2).pings("198.18.0.2", 2));
}

/// `count` TCP SYNs from `src` to `dst`:9, each from another source port
/// (and, past 64,000, another source address in the container's /24 — the
/// switch does not check that), so that each is a new connection.
fn syn_flood_frames(
    count: usize,
    (src_mac, dst_mac): ([u8; 6], [u8; 6]),
    src: [u8; 4],
    dst: [u8; 4],
) -> impl Iterator<Item = Vec<u8>> + Send {
    (0..count).map(move |i| {
        let port = 1024 + (i % 64_000) as u16;
        let builder = PacketBuilder::ethernet2(src_mac, dst_mac)
            .ipv4(src, dst, 64)
            .tcp(port, 9, i as u32, 64_240)
            .syn();
        let mut frame = Vec::with_capacity(builder.size(0));
        builder.write(&mut frame, &[]).expect("a SYN serializes");
        frame
    })
}

/// Docker's bridge network (gateway 198.18.0.1, masquerade out of an uplink
/// to an "outside" namespace at 198.19.0.254) with a small conntrack table.
#[test]
fn new_connection_flood_through_nat_keeps_conntrack_at_its_limit() {
    if !e2e_allowed("new_connection_flood_through_nat_keeps_conntrack_at_its_limit") {
        return;
    }
    let _one_at_a_time = traffic_lock();
    const LIMIT: usize = 1000;
    const FLOOD: usize = 50_000;
    let mut lab = Lab::new("ctfl");
    let outside = lab.docker_network("br0", &[&format!("other_config:ct-max={LIMIT}")]);
    let c1 = lab.container("br0", 2, &["--gateway", "198.18.0.1"]);
    let attacker = lab.container("br0", 3, &["--gateway", "198.18.0.1"]);
    assert!(lab.c(attacker).pings("198.19.0.254", 1), "the attacker resolved its gateway");
    let macs = (lab.c(attacker).mac("eth0"), lab.c(attacker).neighbour_mac("198.18.0.1"));
    let pid = lab.sw.pid();
    let (before, _) = memory_kib(pid);

    // The established connection: 8 s of TCP from c1 to the outside, capped
    // so that the flood has CPU to use too, reported every second.
    let server = lab.c(outside).spawn("iperf3", &["-s", "-1", "-B", "198.19.0.254"]);
    std::thread::sleep(Duration::from_millis(300));
    let client = lab.c(c1).spawn(
        "iperf3",
        &["-c", "198.19.0.254", "-t", "8", "-b", "200M", "-i", "1", "-J", "--connect-timeout", "3000"],
    );
    std::thread::sleep(Duration::from_secs(2));
    let start = Instant::now();
    let injected =
        lab.c(attacker).inject("eth0", syn_flood_frames(FLOOD, macs, [198, 18, 0, 3], [198, 19, 0, 254]));
    let took = start.elapsed();
    let tracked = lab.sw.json(&["dump-conntrack", "br0"]).as_array().unwrap().len();
    let stats = lab.sw.port_stats("br0", &lab.port_of("br0", attacker));
    let refused = stats["drop_reasons"]["ct_table_full"].as_u64().unwrap_or(0);

    let out = client.wait_output(Duration::from_secs(20));
    let _ = server.wait_output(Duration::from_secs(5));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("iperf3 printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    assert!(out.status.success(), "the established connection failed: {report}");
    let per_second = iperf3_mbps_per_interval(&report);
    let (after, peak) = memory_kib(pid);
    eprintln!(
        "conntrack flood: {injected} SYNs in {:.2} s; {tracked} connections tracked (limit {LIMIT}); \
         {refused} refused as ct_table_full; established TCP Mbit/s per second: {per_second:.0?}; \
         VmRSS {:.1} -> {:.1} MiB, peak {:.1} MiB",
        took.as_secs_f64(),
        mib(before),
        mib(after),
        mib(peak)
    );
    assert_eq!(injected, FLOOD as u64);
    assert!(tracked <= LIMIT, "the table holds {tracked}, over its limit");
    assert!(tracked >= LIMIT / 2, "the flood filled the table: {tracked}");
    assert!(refused > 0, "new connections beyond the limit are counted: {stats}");
    assert!(
        per_second.len() >= 8 && per_second.iter().all(|&mbps| mbps > 1.0),
        "the established connection stalled"
    );
    assert!(after < before + 16 * 1024, "memory grew by {} KiB", after - before);
}

/// One control client of the flood: hello, then requests back to back
/// (reads of every kind, and a flow added and deleted every tenth) until
/// `until`; returns how many were answered, insisting none failed.
fn control_client(socket: std::path::PathBuf, n: u64, until: Instant) -> u64 {
    let stream = UnixStream::connect(&socket).expect("the control socket accepts");
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut call = |id: u64, method: &str, params: serde_json::Value| {
        let request = serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        writeln!(writer, "{request}").unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).expect("an answer");
        let response: serde_json::Value = serde_json::from_str(&line).expect("the answer is JSON");
        assert!(response.get("result").is_some(), "client {n}, request {id}: {response}");
    };
    call(0, "hello", serde_json::json!({"protocol": proto::PROTOCOL_VERSION, "client": "flood"}));
    let bridge = || "br0".to_owned();
    // Cookie 0 is the default NORMAL flow's: deleting it would stop forwarding.
    let cookie = n + 1;
    let mut id = 0;
    while Instant::now() < until {
        id += 1;
        let command = match id % 10 {
            0 => proto::Command::AddFlow {
                bridge: bridge(),
                flow: format!("cookie={cookie},priority=1,udp,tp_dst={},actions=drop", 10_000 + n),
            },
            1 => proto::Command::DelFlows {
                bridge: bridge(),
                matcher: Some(format!("cookie={cookie}/-1")),
                strict: false,
            },
            2 | 5 => proto::Command::Show,
            3 | 6 => proto::Command::DumpPorts { bridge: bridge(), port: None },
            4 | 7 => proto::Command::FdbShow { bridge: bridge() },
            _ => proto::Command::DumpFlows { bridge: bridge(), matcher: None },
        };
        call(id, "transact", serde_json::json!({ "commands": [command] }));
    }
    id
}

fn ping_avg_ms(out: &std::process::Output) -> f64 {
    let text = String::from_utf8_lossy(&out.stdout);
    // rtt min/avg/max/mdev = 0.035/0.048/0.102/0.011 ms
    let line = text
        .lines()
        .find(|l| l.contains("min/avg/max"))
        .unwrap_or_else(|| panic!("ping ({}): {text} {}", out.status, String::from_utf8_lossy(&out.stderr)));
    line.split('=').nth(1).and_then(|v| v.trim().split('/').nth(1)).and_then(|v| v.parse().ok()).unwrap()
}

/// Ping and TCP between two containers, returning (pings sent, answered,
/// average ms, TCP Mbit/s per second of 4).
fn forwarding_figures(lab: &Lab, c1: usize, c2: usize) -> (u64, u64, f64, Vec<f64>) {
    let server = lab.c(c2).spawn("iperf3", &["-s", "-1", "-B", "198.18.0.3"]);
    std::thread::sleep(Duration::from_millis(300));
    let ping = pinger(lab.c(c1), "198.18.0.3", 150);
    let tcp = lab
        .c(c1)
        .spawn("iperf3", &["-c", "198.18.0.3", "-t", "4", "-i", "1", "-J", "--connect-timeout", "3000"]);
    let ping = ping.wait_output(Duration::from_secs(20));
    let tcp = tcp.wait_output(Duration::from_secs(20));
    let _ = server.wait_output(Duration::from_secs(5));
    let report: serde_json::Value = serde_json::from_slice(&tcp.stdout)
        .unwrap_or_else(|e| panic!("iperf3 printed no JSON ({e}): {}", String::from_utf8_lossy(&tcp.stderr)));
    assert!(tcp.status.success(), "iperf3 failed: {report}");
    let per_second = iperf3_mbps_per_interval(&report);
    let (sent, answered) = ping_counts(&ping);
    (sent, answered, ping_avg_ms(&ping), per_second)
}

#[test]
fn a_hundred_control_clients_do_not_starve_forwarding() {
    if !e2e_allowed("a_hundred_control_clients_do_not_starve_forwarding") {
        return;
    }
    let _one_at_a_time = traffic_lock();
    const CLIENTS: u64 = 100;
    let mut lab = Lab::new("ctlfl");
    lab.sw.ok(&["add-br", "br0"]);
    let c1 = lab.container("br0", 2, &[]);
    let c2 = lab.container("br0", 3, &[]);
    assert!(lab.c(c1).pings("198.18.0.3", 2));
    let pid = lab.sw.pid();

    let (_, _, quiet_ms, quiet_tcp) = forwarding_figures(&lab, c1, c2);
    let (before, _) = memory_kib(pid);
    let socket = lab.sw.run_dir().join(proto::SOCKET_NAME);
    let until = Instant::now() + Duration::from_secs(6);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let socket = socket.clone();
            std::thread::spawn(move || control_client(socket, n, until))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let (sent, answered, flood_ms, flood_tcp) = forwarding_figures(&lab, c1, c2);
    let served: Vec<u64> = clients.into_iter().map(|c| c.join().expect("a client failed")).collect();
    let (after, peak) = memory_kib(pid);
    let total: u64 = served.iter().sum();
    eprintln!(
        "control flood: {CLIENTS} clients, {total} requests answered in 6 s (fewest for one client {}); \
         ping during it {answered}/{sent}, avg {flood_ms:.3} ms (quiet {quiet_ms:.3} ms); \
         TCP Mbit/s per second {flood_tcp:.0?} (quiet {quiet_tcp:.0?}); VmRSS {:.1} -> {:.1} MiB, peak {:.1} MiB",
        served.iter().min().unwrap(),
        mib(before),
        mib(after),
        mib(peak)
    );
    assert!(served.iter().all(|&n| n > 0), "every client was served");
    assert_eq!(answered, sent, "every ping was answered during the flood");
    assert!(flood_tcp.len() >= 4 && flood_tcp.iter().all(|&mbps| mbps > 1.0), "TCP stalled: {flood_tcp:?}");
    // The flows the clients added are gone again, and the table is intact.
    assert!(lab.c(c2).pings("198.18.0.2", 2));
}
