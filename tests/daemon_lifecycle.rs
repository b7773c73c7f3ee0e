//! The daemon as a process: transactions, persistence across SIGKILL, one
//! daemon per run directory, socket permissions, clean shutdown, and
//! clients that never hang.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use testkit::*;

#[test]
fn failing_command_rolls_back_the_whole_transaction() {
    let sw = Switch::start();
    let err = sw.fails(&["add-br", "brX", "--", "add-port", "nosuch", "p1"]);
    assert!(err.contains("no bridge named nosuch"), "{err}");
    assert_eq!(sw.ok(&["list-br"]), "");
    assert_eq!(sw.vsctl(&["br-exists", "brX"]).status.code(), Some(2));
    // Nothing reached the database either.
    let db = std::fs::read_to_string(sw.db()).unwrap_or_default();
    assert!(!db.contains("brX"), "{db}");
    // Errors say what to do next.
    assert!(sw.fails(&["add-br", "br0", "--", "add-br", "br0"]).contains("already exists"));
    assert!(sw.fails(&["set", "port", "nope", "tag=1"]).contains("vsctl show"));
    assert!(sw.fails(&["frobnicate"]).contains("--help"));
}

#[test]
fn may_exist_and_if_exists() {
    let sw = Switch::start();
    sw.ok(&["add-br", "br0", "--", "--may-exist", "add-br", "br0"]);
    sw.ok(&["--if-exists", "del-br", "nosuch", "--", "--if-exists", "del-port", "nosuch"]);
    sw.ok(&["add-port", "br0", "p1", "--", "--may-exist", "add-port", "br0", "p1"]);
    sw.ok(&["add-br", "br1"]);
    assert!(sw.fails(&["--may-exist", "add-port", "br1", "p1"]).contains("on bridge br0"));
    assert_eq!(sw.ok(&["port-to-br", "p1"]), "br0\n");
}

#[test]
fn acknowledged_changes_survive_sigkill() {
    let mut sw = Switch::start();
    for round in 0..3u64 {
        let run_dir = sw.run_dir();
        let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let writer = {
            let acked = acked.clone();
            std::thread::spawn(move || {
                for i in 0..10_000u64 {
                    let name = format!("r{round}b{i}");
                    let aging = (i % 600 + 1).to_string();
                    let status = std::process::Command::new(vsctl_bin())
                        .arg("--run-dir")
                        .arg(&run_dir)
                        .args(["add-br", &name, "--", "set", "bridge", &name])
                        .arg(format!("other_config:mac-aging-time={aging}"))
                        .stderr(std::process::Stdio::null())
                        .status()
                        .unwrap();
                    if !status.success() {
                        return;
                    }
                    acked.lock().unwrap().push((name, aging));
                }
            })
        };
        std::thread::sleep(Duration::from_millis(300 + round * 170));
        sw.stop_with(Signal::SIGKILL);
        writer.join().unwrap();
        sw.restart();
        let acked = acked.lock().unwrap();
        assert!(acked.len() > 3, "the burst barely started: {}", acked.len());
        let bridges = sw.ok(&["list-br"]);
        for (name, aging) in acked.iter() {
            assert!(bridges.lines().any(|b| b == name), "acknowledged {name} was lost");
            assert_eq!(sw.ok(&["get", "bridge", name, "other_config:mac-aging-time"]).trim(), aging);
        }
        eprintln!("round {round}: {} acknowledged changes survived SIGKILL", acked.len());
    }
}

#[test]
fn configuration_and_ports_come_back_after_restart() {
    let mut sw = Switch::start();
    sw.bridge_with_pcap_ports("br0", &["p1", "p2"]);
    sw.ok(&["set", "port", "p2", "tag=7", "--", "set", "bridge", "br0", "other_config:mac-table-size=99"]);
    let before = sw.ok(&["show"]);
    assert_eq!(sw.stop_with(Signal::SIGTERM).code(), Some(0));
    sw.restart();
    assert_eq!(sw.ok(&["show"]), before);
    // Port 1 is the bridge's internal port.
    assert_eq!(sw.ok(&["get", "interface", "p2", "ofport"]), "3\n");
    // p2 is still an access port of VLAN 7 behind the trunk p1.
    sw.replay("br0", "p1", &[tagged(&frame(BROADCAST, mac(1)), 7, 0), frame(BROADCAST, mac(2))]);
    assert_eq!(sw.tx("p2"), vec![frame(BROADCAST, mac(1))]);
}

#[test]
fn second_daemon_on_the_same_run_dir_refuses() {
    let sw = Switch::start();
    let out = daemon_command()
        .arg("--run-dir")
        .arg(sw.run_dir())
        .arg("--db")
        .arg(sw.path("other.db"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already running") && err.contains(&sw.pid().to_string()), "{err}");
    // The first one is undisturbed.
    sw.ok(&["list-br"]);
}

#[test]
fn socket_is_group_only_and_sigterm_cleans_up() {
    let mut sw = Switch::start();
    let socket = sw.run_dir().join(proto::SOCKET_NAME);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    assert_eq!(sw.stop_with(Signal::SIGTERM).code(), Some(0));
    assert!(!socket.exists(), "the socket outlived the daemon");
    let err = sw.fails(&["list-br"]);
    assert!(err.contains("is vswitchd running"), "{err}");
}

#[test]
fn clients_of_a_stuck_daemon_time_out() {
    let sw = Switch::start();
    let pid = nix::unistd::Pid::from_raw(sw.pid() as i32);
    nix::sys::signal::kill(pid, Signal::SIGSTOP).unwrap();
    let start = Instant::now();
    let out = sw.vsctl(&["--timeout", "1", "list-br"]);
    let took = start.elapsed();
    nix::sys::signal::kill(pid, Signal::SIGCONT).unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("did not answer within"));
    assert!(took < Duration::from_secs(5), "took {took:?}");
    sw.ok(&["list-br"]);
}

#[test]
fn detach_returns_once_ready() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let status = daemon_command()
        .arg("--detach")
        .arg("--run-dir")
        .arg(&run_dir)
        .arg("--db")
        .arg(dir.path().join("conf.db"))
        .status()
        .unwrap();
    assert!(status.success());
    let vsctl = |args: &[&str]| {
        std::process::Command::new(vsctl_bin()).arg("--run-dir").arg(&run_dir).args(args).output().unwrap()
    };
    let out = vsctl(&["add-br", "br0", "--", "list-br"]);
    let pid: i32 = std::fs::read_to_string(run_dir.join("vswitchd.pid")).unwrap().trim().parse().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGTERM).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "br0\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    while run_dir.join(proto::SOCKET_NAME).exists() {
        assert!(Instant::now() < deadline, "detached daemon did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn damaged_database_stops_the_start_instead_of_being_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("conf.db");
    std::fs::write(&db, "{ torn").unwrap();
    let out =
        daemon_command().arg("--run-dir").arg(dir.path().join("run")).arg("--db").arg(&db).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("move it aside"));
    assert_eq!(std::fs::read_to_string(&db).unwrap(), "{ torn");
}
