//! Overlays across "hosts", end to end: hosts A and B are namespaces that
//! each run their own vswitchd, joined by an underlay veth (198.19.0.0/24),
//! with a container each in one subnet (198.18.0.0/24), as Docker's overlay
//! network joins containers on two machines. Host C runs no vswitchd: its
//! container sits behind the kernel's own `vxlan` or `gretap` device, a
//! peer no one here wrote, on a second underlay link to A (198.19.1.0/24).
//! A is the hub: B reaches C through A, as OVS relays between tunnels.
//!
//! Every container has MTU 1450, the overlay MTU Docker uses, so inner
//! frames fit a 1500-byte underlay without fragments.
//! Root only; CI runs them, one at a time (see .config/nextest.toml).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use testkit::lab::*;

const VNI: &str = "42";
/// Figures depend on it: `cargo test --release` measures the real thing.
const BUILD: &str = if cfg!(debug_assertions) { "debug" } else { "release" };

/// Host C: the kernel's tunnel device and its container.
struct Peer {
    /// OVS's daemons, when OVS is the peer; they stop before the
    /// namespaces go.
    _daemons: Vec<Guarded>,
    host: Netns,
    container: Netns,
    _ovs_dir: Option<tempfile::TempDir>,
}

/// What host C runs to end the tunnel.
enum PeerKind<'a> {
    /// A kernel device: the `ip link add ... type ...` tail.
    Kernel(&'a [&'a str]),
    /// Open vSwitch's userspace datapath with its native GRE tunnelling:
    /// a GRE implementation no one here wrote, for kernels without GRE.
    OvsGre,
}

/// The test's hosts; fields drop (and so are deleted) in order.
struct Overlay {
    a: Lab,
    b: Lab,
    c: Option<Peer>,
}

/// Whether this kernel can make a device of `kind` (some kernels are
/// built without GRE); tried in a namespace of the test's own.
fn kernel_has(prefix: &str, kind: &str) -> bool {
    let probe = Netns::new(format!("{prefix}-probe"));
    run(probe.command("ip").args(["link", "add", "probe0", "type", kind])).status.success()
}

/// Builds the hosts with `kind` tunnels (`vxlan` or `gre`) keyed 42, and
/// host C with `peer` if given.
fn overlay(tag: &str, kind: &str, peer: Option<PeerKind>) -> Overlay {
    let mut a = Lab::new(&format!("{tag}a"));
    let mut b = Lab::new(&format!("{tag}b"));
    underlay(&a.switch_ns, "ul-b", "198.19.0.1/24", &b.switch_ns, "ul-a", "198.19.0.2/24");
    for (lab, n) in [(&mut a, 1u8), (&mut b, 2u8)] {
        lab.sw.ok(&["add-br", "br0"]);
        lab.container("br0", n, &["--mtu", "1450"]);
    }
    let tunnel = |lab: &Lab, port: &str, remote: &str| {
        let kind = format!("type={kind}");
        let remote = format!("options:remote_ip={remote}");
        let key = format!("options:key={VNI}");
        lab.sw.ok(&["add-port", "br0", port, "--", "set", "interface", port, &kind, &remote, &key]);
    };
    tunnel(&a, "to-b", "198.19.0.2");
    tunnel(&b, "to-a", "198.19.0.1");
    let c = peer.map(|peer| match peer {
        PeerKind::Kernel(device) => kernel_peer(&a, device),
        PeerKind::OvsGre => ovs_gre_peer(&a),
    });
    if c.is_some() {
        tunnel(&a, "to-c", "198.19.1.3");
    }
    Overlay { a, b, c }
}

/// A veth from `left` to `right` with an address at each end.
fn underlay(left: &Netns, ldev: &str, lcidr: &str, right: &Netns, rdev: &str, rcidr: &str) {
    left.ip(&["link", "add", ldev, "type", "veth", "peer", "name", rdev, "netns", &right.name]);
    for (ns, dev, cidr) in [(left, ldev, lcidr), (right, rdev, rcidr)] {
        ns.ip(&["addr", "add", cidr, "dev", dev]);
        ns.ip(&["link", "set", dev, "up"]);
    }
}

/// Host C and its container, joined by a veth: `vc` in C, `eth0` with
/// 198.18.0.3/24 and the overlay MTU in the container.
fn host_c(a: &Lab) -> (Netns, Netns) {
    let host = Netns::new(format!("{}-host", a.prefix()));
    let container = Netns::new(format!("{}-kc", a.prefix()));
    host.ip(&[
        "link",
        "add",
        "vc",
        "mtu",
        "1450",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &container.name,
    ]);
    host.ip(&["link", "set", "vc", "up"]);
    container.ip(&["link", "set", "eth0", "mtu", "1450"]);
    container.ip(&["addr", "add", "198.18.0.3/24", "dev", "eth0"]);
    container.ip(&["link", "set", "eth0", "up"]);
    (host, container)
}

/// Host C on a second underlay link to A: the kernel's tunnel device and
/// a veth to its container on a Linux bridge, all inside C's namespace.
fn kernel_peer(a: &Lab, kernel_device: &[&str]) -> Peer {
    let (host, container) = host_c(a);
    underlay(&a.switch_ns, "ul-c", "198.19.1.1/24", &host, "ul-a", "198.19.1.3/24");
    let mut device = vec!["link", "add", "tun0", "type"];
    device.extend_from_slice(kernel_device);
    host.ip(&device);
    host.ip(&["link", "add", "br0", "type", "bridge"]);
    for dev in ["tun0", "vc"] {
        host.ip(&["link", "set", dev, "master", "br0"]);
        host.ip(&["link", "set", dev, "up"]);
    }
    host.ip(&["link", "set", "br0", "up"]);
    Peer { _daemons: Vec::new(), host, container, _ovs_dir: None }
}

/// Whether Open vSwitch is installed (it is not in CI's package list: its
/// package would start a service in the root namespace).
fn ovs_installed() -> bool {
    Path::new("/usr/sbin/ovs-vswitchd").is_file() && Path::new(OVS_SCHEMA).is_file()
}

const OVS_SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

/// Host C as OVS's userspace datapath ends GRE tunnels (OVS's "userspace
/// tunnelling"): `br-phy` holds the underlay link and C's address on its
/// internal port, `br-int` the GRE port and the container's veth. OVS runs
/// inside C's namespace with a database and run directory of the test's own.
fn ovs_gre_peer(a: &Lab) -> Peer {
    let (host, container) = host_c(a);
    a.switch_ns.ip(&["link", "add", "ul-c", "type", "veth", "peer", "name", "ul-a", "netns", &host.name]);
    a.switch_ns.ip(&["addr", "add", "198.19.1.1/24", "dev", "ul-c"]);
    a.switch_ns.ip(&["link", "set", "ul-c", "up"]);
    host.ip(&["link", "set", "ul-a", "up"]);

    let dir = tempfile::Builder::new().prefix("vswitch-ovs-").tempdir().unwrap();
    let d = dir.path().to_str().unwrap().to_owned();
    let with_env = |mut cmd: std::process::Command| {
        for var in ["OVS_RUNDIR", "OVS_LOGDIR", "OVS_DBDIR", "OVS_SYSCONFDIR"] {
            cmd.env(var, &d);
        }
        cmd
    };
    must(with_env(std::process::Command::new("ovsdb-tool")).args([
        "create",
        &format!("{d}/conf.db"),
        OVS_SCHEMA,
    ]));
    let spawn = |program: &str, args: &[String]| -> Guarded {
        let mut cmd = with_env(host.command(program));
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        Guarded(Some(cmd.spawn().unwrap_or_else(|e| panic!("cannot start {program}: {e}"))))
    };
    let mut ovs = vec![spawn(
        "ovsdb-server",
        &[
            format!("{d}/conf.db"),
            format!("--remote=punix:{d}/db.sock"),
            "--no-chdir".into(),
            "-vconsole:off".into(),
            format!("--unixctl={d}/ovsdb-server.ctl"),
        ],
    )];
    wait_for(&format!("{d}/db.sock"));
    let vsctl = |args: &[&str]| {
        let db = format!("--db=unix:{d}/db.sock");
        must(with_env(std::process::Command::new("ovs-vsctl")).arg("--timeout=20").arg(db).args(args))
    };
    vsctl(&["--no-wait", "init"]);
    ovs.insert(
        0,
        spawn(
            "ovs-vswitchd",
            &[
                format!("unix:{d}/db.sock"),
                "--disable-system".into(),
                "--no-chdir".into(),
                "-vconsole:off".into(),
                format!("--log-file={d}/ovs-vswitchd.log"),
                format!("--unixctl={d}/ovs-vswitchd.ctl"),
            ],
        ),
    );
    wait_for(&format!("{d}/ovs-vswitchd.ctl"));
    let mac = mac_of_dev(&host, "ul-a");
    let hwaddr = format!("other_config:hwaddr={mac}");
    vsctl(&["add-br", "br-phy", "--", "set", "bridge", "br-phy", "datapath_type=netdev", &hwaddr]);
    vsctl(&["add-port", "br-phy", "ul-a"]);
    host.ip(&["addr", "add", "198.19.1.3/24", "dev", "br-phy"]);
    host.ip(&["link", "set", "br-phy", "up"]);
    let key = format!("options:key={VNI}");
    vsctl(&["add-br", "br-int", "--", "set", "bridge", "br-int", "datapath_type=netdev"]);
    vsctl(&[
        "add-port",
        "br-int",
        "gre0",
        "--",
        "set",
        "interface",
        "gre0",
        "type=gre",
        "options:remote_ip=198.19.1.1",
        &key,
    ]);
    vsctl(&["add-port", "br-int", "vc"]);
    // OVS's AF_PACKET ports do not take partial checksums (its README's
    // gotcha): the peer's container sends whole ones.
    run(container.command("ethtool").args(["-K", "eth0", "tx", "off"]));
    Peer { _daemons: ovs, host, container, _ovs_dir: Some(dir) }
}

fn wait_for(path: &str) {
    for _ in 0..100 {
        if Path::new(path).exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{path} did not appear within 5 s");
}

fn mac_of_dev(ns: &Netns, dev: &str) -> String {
    let link = ns.ip(&["-br", "link", "show", dev]);
    link.split_whitespace().nth(2).expect("ip -br prints the MAC").to_owned()
}

/// iperf3 TCP for 5 s from `client` to `server_ip` (served in `server`);
/// returns Gbit/s, insisting the run succeeded and carried data.
fn iperf3_gbps(server: &Netns, server_ip: &str, client: &Netns) -> f64 {
    let _server = server.spawn("iperf3", &["-s", "-1", "-B", server_ip]);
    std::thread::sleep(Duration::from_millis(300));
    let out = client
        .spawn("iperf3", &["-c", server_ip, "-J", "--connect-timeout", "3000", "-t", "5"])
        .wait_output(Duration::from_secs(20));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("iperf3 printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    assert!(out.status.success(), "iperf3 failed: {report}");
    let received = report["end"]["sum_received"]["bytes"].as_u64().unwrap();
    assert!(received > 10_000_000, "only {received} bytes crossed the overlay in 5 s");
    report["end"]["sum_received"]["bits_per_second"].as_f64().unwrap() / 1e9
}

/// Two namespaces joined by an underlay veth, each with a kernel `kind`
/// device (198.18.9.1 and .2) over it: the kernel's own overlay, for the
/// figure next to ours.
fn kernel_to_kernel_gbps(prefix: &str, kind: &[&str]) -> f64 {
    let k1 = Netns::new(format!("{prefix}-k1"));
    let k2 = Netns::new(format!("{prefix}-k2"));
    k1.ip(&["link", "add", "ul", "type", "veth", "peer", "name", "ul", "netns", &k2.name]);
    for (ns, me, peer, host) in
        [(&k1, "198.19.2.1", "198.19.2.2", "198.18.9.1"), (&k2, "198.19.2.2", "198.19.2.1", "198.18.9.2")]
    {
        ns.ip(&["addr", "add", &format!("{me}/24"), "dev", "ul"]);
        ns.ip(&["link", "set", "ul", "up"]);
        let mut device = vec!["link", "add", "tun0", "type"];
        device.extend_from_slice(kind);
        device.extend_from_slice(&["remote", peer, "local", me]);
        ns.ip(&device);
        ns.ip(&["link", "set", "tun0", "mtu", "1450"]);
        ns.ip(&["addr", "add", &format!("{host}/24"), "dev", "tun0"]);
        ns.ip(&["link", "set", "tun0", "up"]);
    }
    assert!(k1.pings("198.18.9.2", 2), "the kernel's own overlay does not work here");
    iperf3_gbps(&k2, "198.18.9.2", &k1)
}

/// Everything both kinds must do: containers on A and B ping each other
/// (and the kernel's container on C, when there is one), TCP crosses A-B
/// for 5 s, and the tunnel ports learn MACs and count what they carried.
fn overlay_works(o: &Overlay, kind: &str) -> f64 {
    let (ca, cb) = (o.a.c(0), o.b.c(0));
    assert!(ca.pings("198.18.0.2", 3), "A's container cannot reach B's over {kind}");
    assert!(cb.pings("198.18.0.1", 3), "B's container cannot reach A's over {kind}");
    let mut learned = vec![(mac_of(cb), "to-b")];
    if let Some(c) = &o.c {
        assert!(ca.pings("198.18.0.3", 3), "A's container cannot reach the kernel {kind} peer's");
        assert!(cb.pings("198.18.0.3", 3), "B's container cannot reach the kernel {kind} peer's through A");
        assert!(c.container.pings("198.18.0.1", 2), "the kernel {kind} peer's container cannot reach A's");
        learned.push((mac_of(&c.container), "to-c"));
    }
    // MACs behind a tunnel port are learned like any other port's.
    let fdb = o.a.sw.fdb("br0");
    for (mac, port) in learned {
        assert!(
            fdb.iter().any(|(p, _, m)| p == port && *m == mac),
            "A did not learn {mac} on {port}: {fdb:?}"
        );
    }

    encapsulation_on_the_wire(o, kind);
    let gbps = iperf3_gbps(cb, "198.18.0.2", ca);
    let stats = o.a.sw.port_stats("br0", "to-b");
    // Frames are counted as the switch saw them: TCP's are 64 KiB GSO
    // frames, cut into segments only as they enter the tunnel.
    assert!(stats["tx_bytes"].as_u64().unwrap() > 10_000_000, "{stats}");
    assert!(stats["rx_packets"].as_u64().unwrap() > 1_000, "{stats}");
    assert_eq!(stats["tx_dropped"], 0, "frames were lost encapsulating: {stats}");
    gbps
}

/// A ping from A's container to B's, captured on A's underlay link and
/// at B's container: the outer packet goes from 198.19.0.1 to 198.19.0.2
/// with key 42 (VXLAN to UDP port 4789), and what it carries is, byte for
/// byte, the frame B's container receives.
fn encapsulation_on_the_wire(o: &Overlay, kind: &str) {
    let outer_file = o.a.sw.path("outer.pcap");
    let inner_file = o.a.sw.path("inner.pcap");
    let filter = if kind == "vxlan" { "udp dst port 4789" } else { "ip proto 47" };
    let outer =
        o.a.switch_ns
            .spawn("tcpdump", &["-i", "ul-b", "-U", "-c", "20", "-w", outer_file.to_str().unwrap(), filter]);
    let inner =
        o.b.c(0)
            .spawn("tcpdump", &["-i", "eth0", "-U", "-c", "4", "-w", inner_file.to_str().unwrap(), "icmp"]);
    std::thread::sleep(Duration::from_secs(1));
    assert!(o.a.c(0).pings("198.18.0.2", 2));
    // Two requests and two replies end the inner capture; the outer one
    // is stopped with it.
    let inner = inner.wait_output(Duration::from_secs(5));
    assert!(inner.status.success(), "tcpdump at B's container: {}", String::from_utf8_lossy(&inner.stderr));
    drop(outer);
    let read = |file: &std::path::Path| -> Vec<Vec<u8>> {
        let capture =
            proto::pcap::read_ethernet_file(file).unwrap_or_else(|e| panic!("tcpdump wrote no capture: {e}"));
        capture.records.into_iter().map(|r| r.data).collect()
    };
    let (outer, inner) = (read(&outer_file), read(&inner_file));
    let echo_requests: Vec<&Vec<u8>> = inner.iter().filter(|f| f.len() > 34 && f[34] == 8).collect();
    assert_eq!(echo_requests.len(), 2, "B's container saw {} frames", inner.len());
    for request in echo_requests {
        let carried = outer
            .iter()
            .filter_map(|f| vswitchd::core::tunnel::decap_frame(f, 4789).ok())
            .find(|d| d.inner == &request[..])
            .unwrap_or_else(|| {
                panic!("no {kind} packet on the underlay carried the echo request B received")
            });
        assert_eq!(carried.kind.name(), kind);
        assert_eq!(
            (carried.src.to_string(), carried.dst.to_string()),
            ("198.19.0.1".into(), "198.19.0.2".into())
        );
        assert_eq!(carried.key, Some(42));
    }
}

fn mac_of(ns: &Netns) -> String {
    mac_of_dev(ns, "eth0")
}

fn counter(stats: &serde_json::Value, reason: &str) -> u64 {
    stats["drop_reasons"][reason].as_u64().unwrap_or(0)
}

#[test]
fn vxlan_overlay_across_two_switches_and_a_kernel_vxlan_peer() {
    if !e2e_allowed("vxlan_overlay_across_two_switches_and_a_kernel_vxlan_peer") {
        return;
    }
    let _one_at_a_time = traffic_lock();
    let kernel_vxlan = ["vxlan", "id", VNI, "remote", "198.19.1.1", "local", "198.19.1.3", "dstport", "4789"];
    let o = overlay("vx", "vxlan", Some(PeerKind::Kernel(&kernel_vxlan)));
    let ours = overlay_works(&o, "vxlan");

    // A VNI that A has no port for is counted and dropped, not delivered.
    let c = &o.c.as_ref().expect("host C").host;
    c.ip(&[
        "link",
        "add",
        "vx43",
        "type",
        "vxlan",
        "id",
        "43",
        "remote",
        "198.19.1.1",
        "local",
        "198.19.1.3",
        "dstport",
        "4789",
    ]);
    c.ip(&["addr", "add", "198.18.43.3/24", "dev", "vx43"]);
    c.ip(&["link", "set", "vx43", "up"]);
    assert!(c.cannot_reach("198.18.43.1", 2));
    let stats = o.a.sw.port_stats("br0", "to-c");
    assert!(counter(&stats, "tunnel_unknown_key") >= 2, "unknown VNI not counted: {stats}");

    let kernel = kernel_to_kernel_gbps(o.a.prefix(), &["vxlan", "id", VNI, "dstport", "4789"]);
    eprintln!(
        "iperf3 TCP 5 s across VXLAN: vswitchd to vswitchd {ours:.2} Gbit/s; kernel vxlan to kernel vxlan \
         {kernel:.2} Gbit/s (ratio {:.3}; vswitchd {BUILD} build)",
        ours / kernel
    );
}

#[test]
fn gre_overlay_across_two_switches_and_a_kernel_gretap_peer() {
    if !e2e_allowed("gre_overlay_across_two_switches_and_a_kernel_gretap_peer") {
        return;
    }
    let _one_at_a_time = traffic_lock();
    let kernel_gre = kernel_has(&format!("vs{}gr", std::process::id()), "gretap");
    let gretap = ["gretap", "key", VNI, "remote", "198.19.1.1", "local", "198.19.1.3"];
    let peer = if kernel_gre {
        Some(PeerKind::Kernel(&gretap[..]))
    } else {
        eprintln!(
            "NOT TESTED HERE: interop with the kernel's gretap, which this kernel cannot make (built without \
             CONFIG_NET_IPGRE); {}",
            if ovs_installed() { "Open vSwitch's userspace GRE is the peer instead" } else { "nor is OVS installed" }
        );
        ovs_installed().then_some(PeerKind::OvsGre)
    };
    let o = overlay("gr", "gre", peer);
    let ours = overlay_works(&o, "gre");
    if !kernel_gre {
        eprintln!("iperf3 TCP 5 s across GRE: vswitchd to vswitchd {ours:.2} Gbit/s ({BUILD} build)");
        return;
    }
    let kernel = kernel_to_kernel_gbps(o.a.prefix(), &["gretap", "key", VNI]);
    eprintln!(
        "iperf3 TCP 5 s across GRE: vswitchd to vswitchd {ours:.2} Gbit/s; kernel gretap to kernel gretap \
         {kernel:.2} Gbit/s (ratio {:.3}; vswitchd {BUILD} build)",
        ours / kernel
    );
}

/// Copies `file` from `from` to `to_ip` (in namespace `to`) over one TCP
/// connection (Python's sendfile and a plain receiver), into `copy`.
fn send_file(from: &Netns, to: &Netns, to_ip: &str, file: &Path, copy: &Path) {
    let receiver = "import socket,sys\n\
        s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
        s.bind((sys.argv[1], 9000)); s.listen(1); s.settimeout(60)\n\
        c,_=s.accept(); c.settimeout(60)\n\
        with open(sys.argv[2], 'wb') as f:\n    for b in iter(lambda: c.recv(1 << 20), b''): f.write(b)\n";
    let sender = "import socket,sys\n\
        s=socket.create_connection((sys.argv[1], 9000), timeout=60)\n\
        s.sendfile(open(sys.argv[2], 'rb')); s.close()\n";
    let server = to.spawn("python3", &["-c", receiver, to_ip, copy.to_str().unwrap()]);
    std::thread::sleep(Duration::from_millis(500));
    let sent = from
        .spawn("python3", &["-c", sender, to_ip, file.to_str().unwrap()])
        .wait_output(Duration::from_secs(120));
    assert!(sent.status.success(), "the sender failed: {}", String::from_utf8_lossy(&sent.stderr));
    let received = server.wait_output(Duration::from_secs(60));
    assert!(received.status.success(), "the receiver failed: {}", String::from_utf8_lossy(&received.stderr));
}

fn sha256(file: &Path) -> String {
    let out = must(std::process::Command::new("sha256sum").arg(file));
    out.split_whitespace().next().unwrap_or_default().to_owned()
}

#[test]
fn a_200_mb_file_crosses_vxlan_intact_and_tcp_to_the_kernels_vxlan_flows_both_ways() {
    if !e2e_allowed("a_200_mb_file_crosses_vxlan_intact_and_tcp_to_the_kernels_vxlan_flows_both_ways") {
        return;
    }
    let _one_at_a_time = traffic_lock();
    let kernel_vxlan = ["vxlan", "id", VNI, "remote", "198.19.1.1", "local", "198.19.1.3", "dstport", "4789"];
    let o = overlay("vf", "vxlan", Some(PeerKind::Kernel(&kernel_vxlan)));
    let dir = tempfile::tempdir().unwrap();
    let (file, copy) = (dir.path().join("in"), dir.path().join("out"));
    must(
        std::process::Command::new("head")
            .args(["-c", "200M", "/dev/urandom"])
            .stdout(std::fs::File::create(&file).unwrap()),
    );
    // A to B: both vswitchds, segmentation and UDP_SEGMENT on A, UDP_GRO
    // and software GRO on B.
    let started = std::time::Instant::now();
    send_file(o.a.c(0), o.b.c(0), "198.18.0.2", &file, &copy);
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(std::fs::metadata(&copy).unwrap().len(), 200 << 20, "every byte arrived");
    assert_eq!(sha256(&copy), sha256(&file), "the copy is the file, byte for byte");
    eprintln!("200 MiB over VXLAN, vswitchd to vswitchd: {secs:.1} s including set-up ({BUILD} build)");
    let received = o.b.sw.port_stats("br0", "to-a")["rx_packets"].as_u64().unwrap_or(0);
    eprintln!("host B's tunnel port took the copy as {received} frames (software GRO)");
    assert!(received < 20_000, "segments were merged: {received} frames for 200 MiB");

    // The kernel's VXLAN device on host C, both ways through host A: it
    // receives our UDP_SEGMENT sends, and hands us whole TSO frames in one
    // tunnel packet (UDP_GRO) with partial checksums.
    let c = &o.c.as_ref().expect("host C").container;
    let to_kernel = iperf3_gbps(c, "198.18.0.3", o.a.c(0));
    let from_kernel = iperf3_gbps(o.a.c(0), "198.18.0.1", c);
    eprintln!(
        "iperf3 TCP 5 s: vswitchd to the kernel's vxlan {to_kernel:.2} Gbit/s, the kernel's vxlan to vswitchd \
         {from_kernel:.2} Gbit/s ({BUILD} build)"
    );
    let too_big = o.a.sw.json(&["dump-ports", "br0"]);
    assert!(!too_big.to_string().contains("tx_too_big\":1"), "nothing was too big for a port: {too_big}");
}
