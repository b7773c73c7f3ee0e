//! Network namespaces for end-to-end tests: a switch namespace where the
//! daemon runs, "container" namespaces attached to it, and the real
//! clients (ping, iperf3) run inside them.
//!
//! Lab rules: every namespace is named after the test's pid and a tag, so
//! runs never collide; every namespace is deleted on drop, even on panic;
//! hosts use 198.18.0.0/15 and live only in the test's namespaces; IPv6 is
//! off inside them so counters see only the test's traffic; every traffic
//! generator is bounded in count and time, and killed by pid on drop.

use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::{in_ci, is_root, Switch};

/// Whether end-to-end tests can run here. In CI they must: there a missing
/// privilege is a failure, not a skip. Elsewhere they skip, saying so.
pub fn e2e_allowed(test: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(!in_ci(), "{test}: end-to-end tests need root, and CI must run them");
    eprintln!("SKIPPED {test}: end-to-end tests need root (network namespaces, veth, TAP)");
    false
}

/// Serializes traffic-heavy tests inside one test binary (nextest's
/// `traffic` group does it across processes), so two generators never
/// share the two cores.
pub fn traffic_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Polls `ok` every 50 ms until it holds; fails the test after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "{what} did not happen within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The Mbit/s of each interval of an iperf3 JSON report (`-i 1 -J`).
pub fn iperf3_mbps_per_interval(report: &serde_json::Value) -> Vec<f64> {
    report["intervals"]
        .as_array()
        .map(|intervals| {
            intervals.iter().map(|i| i["sum"]["bits_per_second"].as_f64().unwrap_or(0.0) / 1e6).collect()
        })
        .unwrap_or_default()
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    out
}

/// Runs a command and insists it succeeds.
pub fn must(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn ip(args: &[&str]) -> String {
    must(Command::new("ip").args(args))
}

pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: String) -> Netns {
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ns.sysctl("net.ipv6.conf.all.disable_ipv6=1");
        ns.sysctl("net.ipv6.conf.default.disable_ipv6=1");
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    pub fn sysctl(&self, setting: &str) {
        must(self.command("sysctl").args(["-qw", setting]));
    }

    /// A command that runs inside this namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// `count` pings to `addr`, bounded: 0.2 s apart, 1 s deadline each.
    fn ping(&self, addr: &str, count: u32) -> Output {
        let count = count.to_string();
        run(self.command("ping").args(["-n", "-q", "-c", &count, "-i", "0.2", "-W", "1", addr]))
    }

    /// Whether `count` pings to `addr` all come back.
    pub fn pings(&self, addr: &str, count: u32) -> bool {
        self.ping(addr, count).status.success()
    }

    /// Whether `addr` is unreachable: `count` pings, none answered.
    pub fn cannot_reach(&self, addr: &str, count: u32) -> bool {
        let out = self.ping(addr, count);
        !out.status.success() && String::from_utf8_lossy(&out.stdout).contains(" 0 received")
    }

    /// Starts a long-lived program in the namespace; it is killed on drop.
    pub fn spawn(&self, program: &str, args: &[&str]) -> Guarded {
        let child = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        Guarded(Some(child))
    }
}

impl Netns {
    /// Sends `frames` out of `ifname` in this namespace from a raw
    /// AF_PACKET socket, as fast as the kernel takes them (a flood);
    /// returns how many it took. Runs in a thread of its own, the only one
    /// that enters the namespace.
    pub fn inject(&self, ifname: &str, frames: impl Iterator<Item = Vec<u8>> + Send + 'static) -> u64 {
        use nix::libc;
        let path = format!("/run/netns/{}", self.name);
        let ifname = ifname.to_owned();
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("setns into the test's namespace");
            let ifindex = nix::net::if_::if_nametoindex(ifname.as_str())
                .unwrap_or_else(|e| panic!("{ifname} in {path}: {e}"));
            // SAFETY: plain socket(2); the descriptor is owned below.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
            assert!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
            // SAFETY: `fd` is a fresh descriptor that nothing else owns.
            let socket = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
            // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
            let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = ifindex as i32;
            // SAFETY: `addr` is a valid sockaddr_ll and the length is its size.
            let bound = unsafe {
                libc::bind(
                    std::os::fd::AsRawFd::as_raw_fd(&socket),
                    (&raw const addr).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert_eq!(bound, 0, "bind to {ifname}: {}", std::io::Error::last_os_error());
            let mut sent = 0;
            for frame in frames {
                // SAFETY: the buffer is `frame.len()` readable bytes.
                let n = unsafe {
                    libc::send(
                        std::os::fd::AsRawFd::as_raw_fd(&socket),
                        frame.as_ptr().cast(),
                        frame.len(),
                        0,
                    )
                };
                if n > 0 {
                    sent += 1;
                }
            }
            sent
        })
        .join()
        .expect("the injecting thread does not panic")
    }

    /// The MAC address of `ifname` in this namespace.
    pub fn mac(&self, ifname: &str) -> [u8; 6] {
        let out = self.ip(&["-br", "link", "show", ifname]);
        let text = out.split_whitespace().nth(2).unwrap_or_else(|| panic!("no MAC in {out:?}"));
        parse_mac(text)
    }

    /// The MAC address this namespace has resolved `addr` to.
    pub fn neighbour_mac(&self, addr: &str) -> [u8; 6] {
        let out = self.ip(&["neigh", "show", addr]);
        let text = out.split_whitespace().skip_while(|w| *w != "lladdr").nth(1);
        parse_mac(text.unwrap_or_else(|| panic!("{addr} is not resolved: {out:?}")))
    }
}

fn parse_mac(text: &str) -> [u8; 6] {
    let bytes: Vec<u8> = text.split(':').map(|b| u8::from_str_radix(b, 16).expect("hex MAC")).collect();
    bytes.try_into().unwrap_or_else(|_| panic!("not a MAC: {text}"))
}

/// Resident and peak memory of a process, in KiB (VmRSS, VmHWM).
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// A child process killed (by its pid) when dropped.
pub struct Guarded(pub Option<Child>);

impl Guarded {
    pub fn wait_output(mut self, limit: Duration) -> Output {
        let mut child = self.0.take().expect("running");
        let deadline = Instant::now() + limit;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.wait_with_output().unwrap()
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A switch namespace with a daemon in it, and containers around it.
/// Field order is drop order: the daemon stops before namespaces go.
pub struct Lab {
    pub sw: Switch,
    pub containers: Vec<Netns>,
    pub switch_ns: Netns,
    prefix: String,
}

impl Lab {
    /// `tag` names the test in the namespace names (keep it short).
    pub fn new(tag: &str) -> Lab {
        Lab::with_args(tag, &[])
    }

    /// A lab whose daemon gets `args` besides its run dir and database.
    pub fn with_args(tag: &str, args: &[&str]) -> Lab {
        let prefix = format!("vs{}{tag}", std::process::id());
        let switch_ns = Netns::new(format!("{prefix}-sw"));
        let sw = Switch::start_in_with_args(&switch_ns.name, args);
        Lab { sw, containers: Vec::new(), switch_ns, prefix }
    }

    /// A new container namespace attached to `bridge` as eth0 with
    /// 198.18.0.N/24; returns its index in `containers`.
    pub fn container(&mut self, bridge: &str, n: u8, extra: &[&str]) -> usize {
        self.host(bridge, &format!("c{n}"), &format!("198.18.0.{n}/24"), extra)
    }

    /// A namespace named after `tag` attached to `bridge` as eth0 with the
    /// address `cidr` (in 198.18.0.0/15); returns its index in `containers`.
    pub fn host(&mut self, bridge: &str, tag: &str, cidr: &str, extra: &[&str]) -> usize {
        let ns = Netns::new(format!("{}-{tag}", self.prefix));
        let ip = cidr.to_owned();
        let mut args = vec!["add-container-port", bridge, "eth0", &ns.name, "--ip", &ip];
        args.extend_from_slice(extra);
        self.sw.ok(&args);
        self.containers.push(ns);
        self.containers.len() - 1
    }

    pub fn c(&self, i: usize) -> &Netns {
        &self.containers[i]
    }

    /// The switch port serving container `i`.
    pub fn port_of(&self, bridge: &str, i: usize) -> String {
        let name = &self.containers[i].name;
        self.sw
            .bridge_ports(bridge)
            .iter()
            .find(|p| p["external_ids"]["container_netns"] == name.as_str())
            .and_then(|p| p["name"].as_str())
            .unwrap_or_else(|| panic!("no port for {name} on {bridge}"))
            .to_owned()
    }

    /// Docker's bridge network on `bridge`: the gateway 198.18.0.1/24
    /// (with `settings` for the bridge besides), an "outside" namespace at
    /// 198.19.0.254 on an uplink whose address is 198.19.0.1, and the
    /// masquerade out of it. Returns the outside's index in `containers`.
    pub fn docker_network(&mut self, bridge: &str, settings: &[&str]) -> usize {
        let mut args = vec!["add-br", bridge, "--", "set", "bridge", bridge, "gateway=198.18.0.1/24"];
        args.extend_from_slice(settings);
        self.sw.ok(&args);
        let outside = self.host(bridge, "out", "198.19.0.254/24", &[]);
        let uplink = self.port_of(bridge, outside);
        self.sw.ok(&[
            "set",
            "port",
            &uplink,
            "ip=198.19.0.1/24",
            "nexthop=198.19.0.254",
            "--",
            "add-nat",
            bridge,
            "masquerade",
            "--out-port",
            &uplink,
        ]);
        outside
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}
