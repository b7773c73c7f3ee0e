//! The test kit: start the real `vswitchd`, drive it with the real `vsctl`,
//! craft frames and read what each pcap port sent, so that tests read like
//! transcripts (in the manner of OVS's `tests/ofproto-dpif.at`).
//!
//! Every daemon runs in a temporary directory of its own (run dir, database,
//! captures) and is killed when its [`Switch`] is dropped, even on panic.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use proto::pcap::{read_ethernet_file, PcapWriter};

pub mod etcd;
pub mod lab;
pub mod overlay;

pub type Mac = [u8; 6];

/// Builds the binaries once per test process, so a test never runs a stale
/// daemon: `cargo test` of this package does not rebuild other packages'
/// binaries by itself.
fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Ok(dir) = std::env::var("VSWITCH_BIN_DIR") {
            return PathBuf::from(dir);
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-q", "-p", "vswitchd", "-p", "vsctl", "--bins", "--manifest-path"])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building vswitchd and vsctl failed");
        // target/debug/deps/<test> -> target/debug
        let exe = std::env::current_exe().expect("test executable path");
        exe.parent().and_then(Path::parent).expect("target directory").to_path_buf()
    })
}

pub fn vswitchd_bin() -> PathBuf {
    bin_dir().join("vswitchd")
}

pub fn vsctl_bin() -> PathBuf {
    bin_dir().join("vsctl")
}

/// The shared captures beside the checkout, if they are there.
pub fn shared_pcaps() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/pcaps/tcpdump");
    dir.is_dir().then_some(dir)
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// How the kit starts vswitchd. As root, in a network namespace of its own
/// (`unshare --net` execs, so the pid is the daemon's): the bridge's
/// internal TAP port and anything else the daemon creates stay out of the
/// root namespace and vanish with the daemon. IPv6 is off in there so the
/// kernel sends nothing (router solicitations, MLD) on the internal port.
/// Without root the daemon runs here and its internal ports stay down.
pub fn daemon_command() -> Command {
    if is_root() {
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--net",
            "--",
            "sh",
            "-c",
            "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 && exec \"$0\" \"$@\"",
        ])
        .arg(vswitchd_bin());
        cmd
    } else {
        Command::new(vswitchd_bin())
    }
}

/// A daemon of the test's own.
pub struct Switch {
    pub dir: tempfile::TempDir,
    netns: Option<String>,
    /// Passed to every start of the daemon.
    args: Vec<String>,
    child: Option<Child>,
    seen: std::cell::RefCell<std::collections::HashMap<String, usize>>,
    replays: std::cell::Cell<u32>,
}

impl Switch {
    pub fn start() -> Switch {
        Switch::start_with(None, &[])
    }

    /// A daemon inside the named network namespace (made by the test).
    pub fn start_in(netns: &str) -> Switch {
        Switch::start_with(Some(netns.to_owned()), &[])
    }

    /// A daemon started with these arguments besides the run dir and
    /// database; `{dir}` in them stands for the test's directory.
    pub fn start_with_args(args: &[&str]) -> Switch {
        Switch::start_with(None, args)
    }

    /// A daemon inside the named network namespace, with these arguments.
    pub fn start_in_with_args(netns: &str, args: &[&str]) -> Switch {
        Switch::start_with(Some(netns.to_owned()), args)
    }

    fn start_with(netns: Option<String>, args: &[&str]) -> Switch {
        let dir = tempfile::Builder::new().prefix("vswitch-test-").tempdir().expect("temp dir");
        let base = dir.path().to_str().expect("UTF-8 temp dir").to_owned();
        let args = args.iter().map(|a| a.replace("{dir}", &base)).collect();
        let mut sw =
            Switch { dir, netns, args, child: None, seen: Default::default(), replays: Default::default() };
        sw.restart();
        sw
    }

    pub fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("conf.db")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    /// Starts the daemon (again) on the same run dir and database, and
    /// waits until it answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the daemon is still running");
        let log = std::fs::File::create(self.path("vswitchd.log")).expect("log file");
        let mut command = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(vswitchd_bin());
                c
            }
            None => daemon_command(),
        };
        let child = command
            .arg("--run-dir")
            .arg(self.run_dir())
            .arg("--db")
            .arg(self.db())
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("vswitchd starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.vsctl(&["list-br"]).status.success() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("vswitchd exited during start-up ({status}); log:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "vswitchd did not answer within 20 s; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("vswitchd.log")).unwrap_or_default()
    }

    /// Sends a signal to the daemon and waits for it to exit.
    pub fn stop_with(&mut self, signal: nix::sys::signal::Signal) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("daemon running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, signal).expect("signal delivered");
        child.wait().expect("daemon reaped")
    }

    pub fn vsctl_command(&self) -> Command {
        let mut cmd = Command::new(vsctl_bin());
        cmd.arg("--run-dir").arg(self.run_dir()).stdin(Stdio::null());
        cmd
    }

    pub fn vsctl(&self, args: &[&str]) -> Output {
        self.vsctl_command().args(args).output().expect("vsctl runs")
    }

    /// Runs vsctl, expects success, returns its standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.vsctl(args);
        assert!(
            out.status.success(),
            "vsctl {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// Runs vsctl, expects failure, returns its standard error.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.vsctl(args);
        assert!(!out.status.success(), "vsctl {args:?} succeeded but should have failed");
        String::from_utf8(out.stderr).expect("utf-8 output")
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--format", "json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).expect("vsctl printed JSON")
    }

    /// Creates BRIDGE with pcap ports named NAMES, each writing NAME.pcap.
    pub fn bridge_with_pcap_ports(&self, bridge: &str, names: &[&str]) {
        let mut args: Vec<String> = vec!["add-br".into(), bridge.into()];
        for name in names {
            let tx = self.path(&format!("{name}.pcap"));
            args.extend(
                [
                    "--",
                    "add-port",
                    bridge,
                    name,
                    "--",
                    "set",
                    "interface",
                    name,
                    "type=pcap",
                    &format!("options:tx_pcap={}", tx.display()),
                ]
                .map(String::from),
            );
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.ok(&args);
    }

    /// Replays FRAMES into PORT (through a capture file and `vsctl replay`).
    pub fn replay(&self, bridge: &str, port: &str, frames: &[Vec<u8>]) -> serde_json::Value {
        let n = self.replays.get() + 1;
        self.replays.set(n);
        let file = self.path(&format!("replay-{n}.pcap"));
        write_pcap(&file, frames);
        self.json(&["replay", bridge, port, file.to_str().unwrap()])
    }

    /// Every frame PORT has sent so far.
    pub fn tx(&self, port: &str) -> Vec<Vec<u8>> {
        let capture = read_ethernet_file(&self.path(&format!("{port}.pcap"))).expect("tx capture readable");
        assert!(capture.damage.is_none(), "{port}.pcap has a torn record");
        capture.records.into_iter().map(|r| r.data).collect()
    }

    /// The frames PORT sent since the last call for that port.
    pub fn new_tx(&self, port: &str) -> Vec<Vec<u8>> {
        let all = self.tx(port);
        let mut seen = self.seen.borrow_mut();
        let before = seen.insert(port.to_owned(), all.len()).unwrap_or(0);
        all[before..].to_vec()
    }

    /// Asserts what each port sent since the last look, port by port.
    pub fn expect_tx(&self, expected: &[(&str, Vec<Vec<u8>>)]) {
        for (port, frames) in expected {
            let got = self.new_tx(port);
            assert_eq!(
                got.iter().map(|f| hex(f)).collect::<Vec<_>>(),
                frames.iter().map(|f| hex(f)).collect::<Vec<_>>(),
                "frames sent by {port}"
            );
        }
    }

    /// The MAC table as (port, vlan, mac) triples.
    pub fn fdb(&self, bridge: &str) -> Vec<(String, u64, String)> {
        let entries = self.json(&["fdb-show", bridge]);
        entries
            .as_array()
            .expect("fdb-show gives a list")
            .iter()
            .map(|e| {
                (
                    e["port"].as_str().unwrap().to_owned(),
                    e["vlan"].as_u64().unwrap(),
                    e["mac"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// `show`'s records of the ports of `bridge`.
    pub fn bridge_ports(&self, bridge: &str) -> Vec<serde_json::Value> {
        let show = self.json(&["show"]);
        show.as_array()
            .expect("show gives a list")
            .iter()
            .filter(|b| b["name"] == bridge)
            .flat_map(|b| b["ports"].as_array().expect("a bridge has ports").iter().cloned())
            .collect()
    }

    /// One port's counters from `dump-ports`.
    pub fn port_stats(&self, bridge: &str, port: &str) -> serde_json::Value {
        let stats = self.json(&["dump-ports", bridge, port]);
        stats.as_array().and_then(|a| a.first()).cloned().expect("dump-ports lists the port")
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("vswitchd log:\n{}", self.log());
        }
    }
}

pub fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let file = std::fs::File::create(path).expect("create capture");
    let mut writer = PcapWriter::new(std::io::BufWriter::new(file)).expect("pcap header");
    for (i, frame) in frames.iter().enumerate() {
        writer.write(Duration::from_millis(i as u64), frame).expect("pcap record");
    }
    writer.flush().expect("flush capture");
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 02:00:00:00:00:NN, a locally administered unicast MAC.
pub const fn mac(n: u8) -> Mac {
    [0x02, 0, 0, 0, 0, n]
}

pub const BROADCAST: Mac = [0xff; 6];

/// A minimum-size Ethernet frame (60 bytes before the FCS) of type IPv4
/// whose payload says which test frame it is.
pub fn frame(dst: Mac, src: Mac) -> Vec<u8> {
    frame_with(dst, src, 0x0800, b"vswitch test frame")
}

pub fn frame_with(dst: Mac, src: Mac, ether_type: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ether_type.to_be_bytes());
    f.extend_from_slice(payload);
    if f.len() < 60 {
        f.resize(60, 0);
    }
    f
}

pub const ARP_REQUEST: u16 = 1;
pub const ARP_REPLY: u16 = 2;

/// An Ethernet/IPv4 ARP frame from `sender` to `dst`: opcode `op`, the
/// sender's and target's hardware and protocol addresses.
pub fn arp(op: u16, dst: Mac, sender: (Mac, [u8; 4]), target: (Mac, [u8; 4])) -> Vec<u8> {
    let mut body = vec![0, 1, 0x08, 0x00, 6, 4];
    body.extend_from_slice(&op.to_be_bytes());
    body.extend_from_slice(&sender.0);
    body.extend_from_slice(&sender.1);
    body.extend_from_slice(&target.0);
    body.extend_from_slice(&target.1);
    frame_with(dst, sender.0, 0x0806, &body)
}

/// The frame with an 802.1Q tag of VID (priority PCP) after the MACs.
pub fn tagged(frame: &[u8], vid: u16, pcp: u8) -> Vec<u8> {
    let mut f = frame.to_vec();
    let tci = (u16::from(pcp) << 13) | vid;
    f.splice(12..12, [0x81, 0x00, (tci >> 8) as u8, tci as u8]);
    f
}

/// The frame with its outer tag removed.
pub fn untagged(frame: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    f.drain(12..16);
    f
}
