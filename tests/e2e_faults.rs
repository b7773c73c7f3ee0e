//! Faults, end to end: the daemon killed with SIGKILL under traffic and in
//! the middle of a burst of configuration changes; a database that cannot
//! be written (a full file system, a read-only one); a capture file that
//! stops taking writes; a port's device deleted while it carries a stream.
//! In each, what was acknowledged stays, what failed says why, and the
//! rest keeps forwarding without anyone stepping in.
//!
//! Root only; CI runs them, one at a time with the other traffic tests.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use testkit::lab::*;
use testkit::*;

fn iperf3_report(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("iperf3 printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)))
}

/// TAP devices in the switch's namespace whose names start with `prefix`.
fn devices(lab: &Lab, prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = lab
        .switch_ns
        .ip(&["-br", "link", "show"])
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names
}

#[test]
fn sigkill_under_traffic_and_a_config_burst_then_restart_resumes_everything() {
    if !e2e_allowed("sigkill_under_traffic_and_a_config_burst_then_restart_resumes_everything") {
        return;
    }
    let _one_at_a_time = traffic_lock();
    let mut lab = Lab::new("kill");
    lab.sw.ok(&["add-br", "br0"]);
    let c1 = lab.container("br0", 2, &[]);
    let c2 = lab.container("br0", 3, &[]);
    assert!(lab.c(c1).pings("198.18.0.3", 2));

    // A TCP stream of 10 s that the kill interrupts for a moment.
    let server = lab.c(c2).spawn("iperf3", &["-s", "-1", "-B", "198.18.0.3"]);
    std::thread::sleep(Duration::from_millis(300));
    let stream = lab.c(c1).spawn(
        "iperf3",
        &["-c", "198.18.0.3", "-t", "10", "-i", "1", "-b", "500M", "-J", "--connect-timeout", "3000"],
    );

    // A burst of changes, each creating a device: internal ports t0, t1, ...
    let run_dir = lab.sw.run_dir();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let burst = {
        let acked = acked.clone();
        std::thread::spawn(move || {
            for i in 0..500 {
                let port = format!("t{i}");
                let status = Command::new(vsctl_bin())
                    .arg("--run-dir")
                    .arg(&run_dir)
                    .args(["add-port", "br0", &port, "--", "set", "interface", &port, "type=internal"])
                    .stderr(Stdio::null())
                    .status()
                    .unwrap();
                if !status.success() {
                    return;
                }
                acked.lock().unwrap().push(port);
            }
        })
    };
    std::thread::sleep(Duration::from_millis(2000));
    lab.sw.stop_with(Signal::SIGKILL);
    let killed = Instant::now();
    burst.join().unwrap();
    lab.sw.restart();
    let restarted = killed.elapsed();
    wait_for("ping across the restarted switch", Duration::from_secs(10), || {
        lab.c(c1).pings("198.18.0.3", 1)
    });
    let pinging = killed.elapsed();

    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 3, "the burst barely started: {}", acked.len());
    let ports = lab.sw.ok(&["list-ports", "br0"]);
    for port in &acked {
        assert!(ports.lines().any(|p| p == port), "acknowledged port {port} was lost: {ports}");
    }
    // Every configured internal port has its device again, and no device
    // is left of a change the kill cut short.
    let configured: Vec<String> = ports.lines().filter(|p| p.starts_with('t')).map(str::to_owned).collect();
    let mut configured_sorted = configured.clone();
    configured_sorted.sort();
    assert_eq!(devices(&lab, "t"), configured_sorted, "devices and configuration disagree");
    assert!(!lab.sw.ok(&["show"]).contains("error:"), "{}", lab.sw.ok(&["show"]));

    let out = stream.wait_output(Duration::from_secs(30));
    let _ = server.wait_output(Duration::from_secs(5));
    let report = iperf3_report(&out);
    let rates = iperf3_mbps_per_interval(&report);
    eprintln!(
        "SIGKILL after {} acknowledged port additions: {} configured after restart; daemon answering {:.2} s \
         after the kill, ping through it {:.2} s after; the TCP stream (Mbit/s per second): {rates:.0?}",
        acked.len(),
        configured.len(),
        restarted.as_secs_f64(),
        pinging.as_secs_f64()
    );
    assert!(out.status.success(), "the TCP stream did not survive the restart: {report}");
    assert!(rates.last().is_some_and(|&mbps| mbps > 100.0), "the stream did not resume: {rates:?}");
}

/// A daemon whose database lives on a 256 KiB tmpfs of its own mount
/// namespace (and in a network namespace of its own, IPv6 off so that its
/// internal port sends nothing): the test fills the
/// file system, or makes it read-only, through /proc/PID/root.
struct SmallDisk {
    child: Child,
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn start() -> SmallDisk {
        let dir = tempfile::Builder::new().prefix("vswitch-test-").tempdir().unwrap();
        let disk = dir.path().join("disk");
        std::fs::create_dir(&disk).unwrap();
        let log = std::fs::File::create(dir.path().join("vswitchd.log")).unwrap();
        let child = Command::new("unshare")
            .args(["--net", "--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(r#"sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 && mount -t tmpfs -o size=256k vswitch-test "$1" && exec "$0" --run-dir "$2" --db "$1/conf.db""#)
            .arg(vswitchd_bin())
            .arg(&disk)
            .arg(dir.path().join("run"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let sd = SmallDisk { child, dir };
        wait_for("the daemon to answer", Duration::from_secs(20), || sd.vsctl(&["list-br"]).status.success());
        sd
    }

    fn vsctl(&self, args: &[&str]) -> Output {
        Command::new(vsctl_bin())
            .arg("--run-dir")
            .arg(self.dir.path().join("run"))
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.vsctl(args);
        assert!(out.status.success(), "vsctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn fails(&self, args: &[&str]) -> String {
        let out = self.vsctl(args);
        assert!(!out.status.success(), "vsctl {args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// The small file system as the daemon sees it.
    fn disk(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.child.id()))
            .join(self.dir.path().join("disk").strip_prefix("/").unwrap())
    }

    /// The disk's path inside the daemon's mount namespace.
    fn disk_inside(&self) -> PathBuf {
        self.dir.path().join("disk")
    }

    fn fill(&self) -> PathBuf {
        let filler = self.disk().join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 4096];
        while std::io::Write::write_all(&mut file, &chunk).is_ok() {}
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.path().join("vswitchd.log")).unwrap_or_default();
            eprintln!("vswitchd log:\n{log}");
        }
    }
}

#[test]
fn a_full_or_read_only_database_fails_the_change_and_keeps_the_old_configuration() {
    if !e2e_allowed("a_full_or_read_only_database_fails_the_change_and_keeps_the_old_configuration") {
        return;
    }
    let sd = SmallDisk::start();
    sd.ok(&["add-br", "br0", "--", "set", "bridge", "br0", "other_config:mac-aging-time=77"]);
    let saved = std::fs::read_to_string(sd.disk().join("conf.db")).unwrap();

    // Full: the change fails, saying why, and nothing of it stays.
    let filler = sd.fill();
    let err = sd.fails(&["add-br", "br1", "--", "set", "bridge", "br0", "other_config:mac-aging-time=88"]);
    assert!(err.contains("No space left on device") && err.contains("nothing was changed"), "{err}");
    eprintln!("full disk: {}", err.trim());
    assert_eq!(sd.ok(&["list-br"]), "br0\n");
    assert_eq!(sd.ok(&["get", "bridge", "br0", "other_config:mac-aging-time"]), "77\n");
    assert_eq!(std::fs::read_to_string(sd.disk().join("conf.db")).unwrap(), saved, "the file is untouched");
    assert!(!sd.disk().join(".conf.db.tmp").exists(), "a partial temporary file was left");
    // With room again, the same change goes through.
    std::fs::remove_file(filler).unwrap();
    sd.ok(&["add-br", "br1"]);

    // Read-only: likewise.
    let inside = sd.disk_inside();
    let remount = Command::new("nsenter")
        .arg(format!("--mount=/proc/{}/ns/mnt", sd.child.id()))
        .args(["mount", "-o", "remount,ro"])
        .arg(&inside)
        .output()
        .unwrap();
    assert!(remount.status.success(), "{}", String::from_utf8_lossy(&remount.stderr));
    let err = sd.fails(&["add-br", "br2"]);
    assert!(err.contains("Read-only file system") && err.contains("nothing was changed"), "{err}");
    assert_eq!(sd.ok(&["list-br"]), "br0\nbr1\n");
    eprintln!("read-only disk: {}", err.trim());
}

#[test]
fn a_capture_that_stops_taking_writes_fails_its_port_only() {
    if !e2e_allowed("a_capture_that_stops_taking_writes_fails_its_port_only") {
        return;
    }
    let sd = SmallDisk::start();
    let elsewhere = sd.dir.path().join("p3.pcap");
    let on_disk = sd.disk_inside().join("p2.pcap");
    sd.ok(&["add-br", "br0"]);
    for (port, tx) in [("p1", None), ("p2", Some(on_disk.as_path())), ("p3", Some(elsewhere.as_path()))] {
        let mut args = vec!["add-port", "br0", port, "--", "set", "interface", port, "type=pcap"];
        let option = tx.map(|p| format!("options:tx_pcap={}", p.display()));
        if let Some(option) = &option {
            args.push(option);
        }
        sd.ok(&args);
    }
    sd.fill();
    let frames: Vec<Vec<u8>> = (0..200u8).map(|i| frame(BROADCAST, mac(i))).collect();
    let capture = sd.dir.path().join("in.pcap");
    write_pcap(&capture, &frames);
    sd.ok(&["replay", "br0", "p1", capture.to_str().unwrap()]);

    let show = sd.ok(&["show"]);
    let p2_error = show.lines().skip_while(|l| !l.contains("Port p2")).find(|l| l.contains("error:"));
    let p2_error = p2_error.unwrap_or_else(|| panic!("p2 shows no error: {show}"));
    assert!(p2_error.contains("No space left on device") && p2_error.contains("p2.pcap"), "{p2_error}");
    // p3's capture, on another file system, has every frame.
    let sent = proto::pcap::read_ethernet_file(&elsewhere).unwrap().records.len();
    assert_eq!(sent, frames.len());
    assert_eq!(show.matches("error:").count(), 1, "only p2 failed: {show}");
    eprintln!("capture on a full disk: {}", p2_error.trim());
}

#[test]
fn deleting_the_device_that_carries_a_stream_keeps_the_others_forwarding() {
    if !e2e_allowed("deleting_the_device_that_carries_a_stream_keeps_the_others_forwarding") {
        return;
    }
    let _one_at_a_time = traffic_lock();
    let mut lab = Lab::new("vanish");
    lab.sw.ok(&["add-br", "br0"]);
    let c1 = lab.container("br0", 2, &[]);
    let c2 = lab.container("br0", 3, &[]);
    let _c3 = lab.container("br0", 4, &[]);
    let port2 = lab.port_of("br0", c2);
    assert!(lab.c(c1).pings("198.18.0.3", 1));
    let _sink = lab.c(c2).spawn("iperf3", &["-s", "-1", "-B", "198.18.0.3"]);
    std::thread::sleep(Duration::from_millis(300));
    let stream = lab.c(c1).spawn(
        "iperf3",
        &["-c", "198.18.0.3", "-u", "-b", "300M", "-t", "4", "-J", "--connect-timeout", "3000"],
    );
    let pinger = lab.c(c1).spawn("ping", &["-n", "-q", "-c", "60", "-i", "0.05", "-W", "1", "198.18.0.4"]);
    std::thread::sleep(Duration::from_secs(1));
    lab.switch_ns.ip(&["link", "del", &port2]);
    wait_for("the vanished container port to be removed", Duration::from_secs(5), || {
        !lab.sw.ok(&["list-ports", "br0"]).contains(&port2)
    });
    let pings = pinger.wait_output(Duration::from_secs(15));
    // The client waits for its vanished server's report: end it.
    drop(stream);
    let text = String::from_utf8_lossy(&pings.stdout);
    eprintln!("device deleted under a 300 Mbit/s stream; ping to another port meanwhile: {}", text.trim());
    // Once the port is gone its MAC is unknown and the stream is flooded
    // to the other ports, as any learning switch does; pings may queue
    // behind it, but not stop.
    let received: u32 = text
        .split(", ")
        .find_map(|part| part.strip_suffix(" received"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(received >= 57, "the other ports stopped forwarding: {text}");
    assert!(lab.sw.vsctl(&["show"]).status.success(), "the daemon answers");
    assert!(lab.c(c1).pings("198.18.0.4", 2));
}

/// A packet socket on a link that goes down holds an error that epoll
/// reports until the socket is read; with a receive ring the switch read
/// nothing and so spun at a whole core. Down and idle, the switch must
/// stay near idle, and forward again once the link is back.
#[test]
fn a_port_whose_link_goes_down_leaves_the_switch_idle_and_recovers() {
    if !e2e_allowed("a_port_whose_link_goes_down_leaves_the_switch_idle_and_recovers") {
        return;
    }
    let _one_at_a_time = traffic_lock();
    let mut lab = Lab::new("linkdown");
    lab.sw.ok(&["add-br", "br0"]);
    let c1 = lab.container("br0", 1, &[]);
    let _c2 = lab.container("br0", 2, &[]);
    let port1 = lab.port_of("br0", c1);
    assert!(lab.c(c1).pings("198.18.0.2", 1));
    let hz = 100.0; // USER_HZ, what /proc/PID/stat counts in on Linux
    let cpu_seconds = |pid: u32| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("vswitchd is running");
        // Fields after the command name, which ends with ')'.
        let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
        (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / hz
    };
    lab.switch_ns.ip(&["link", "set", &port1, "down"]);
    let pid = lab.sw.pid();
    let before = cpu_seconds(pid);
    std::thread::sleep(Duration::from_secs(3));
    let busy = cpu_seconds(pid) - before;
    eprintln!("vswitchd used {busy:.2} s of CPU in 3 s with {port1} down");
    assert!(busy < 1.0, "the switch kept busy with a link down: {busy:.2} s of CPU in 3 s");
    lab.switch_ns.ip(&["link", "set", &port1, "up"]);
    wait_for("a ping across the port whose link came back", Duration::from_secs(10), || {
        lab.c(c1).pings("198.18.0.2", 1)
    });
}
