//! Real containers: Podman (4.3, CNI backend) runs busybox containers on
//! networks whose plugin is `vswitch-cni`, against a daemon of the test's
//! own. Two containers on one network get addresses from host-local and
//! ping each other through vswitchd, `show` lists them with their
//! container ids, a third on a network with another VLAN cannot reach
//! them, and stopping and removing them leaves no port behind.
//!
//! Podman never touches the root namespace here: every container is run
//! with `--network` naming a vswitch network, with a `CONTAINERS_CONF` of
//! the test's own (`netns="none"` by default, the CNI backend with plugin
//! and network directories under the test's temporary directory,
//! cgroupfs, file events), `--root`/`--runroot` in that directory too, and
//! runc with the limits this machine accepts. Root only; CI installs
//! podman, runc, containernetworking-plugins and busybox-static.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::json;
use testkit::lab::*;
use testkit::overlay::cluster;

const CNI_PLUGINS: &str = "/usr/lib/cni";

/// Podman confined to a directory of the test's own.
struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    /// Podman with the two networks on the lab's br0.
    fn new(lab: &Lab) -> Podman {
        let podman = Podman::empty();
        podman.network(lab, "vsnet", None, "198.18.0.2");
        podman.network(lab, "vsnet20", Some(20), "198.18.0.100");
        podman
    }

    /// Podman with no networks yet.
    fn empty() -> Podman {
        let dir = tempfile::Builder::new().prefix("vswitch-podman-").tempdir().unwrap();
        let d = dir.path();
        for sub in
            ["plugins", "net.d", "tmp", "rootfs/bin", "rootfs/etc", "rootfs/proc", "rootfs/sys", "rootfs/dev"]
        {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        std::fs::copy("/bin/busybox", d.join("rootfs/bin/busybox")).unwrap();
        for applet in ["sh", "ping", "ip", "sleep"] {
            std::os::unix::fs::symlink("busybox", d.join("rootfs/bin").join(applet)).unwrap();
        }
        let plugin = testkit::vsctl_bin().with_file_name("vswitch-cni");
        std::os::unix::fs::symlink(plugin, d.join("plugins/vswitch-cni")).unwrap();
        let conf = format!(
            "[containers]\nnetns = \"none\"\n\n[network]\nnetwork_backend = \"cni\"\n\
             cni_plugin_dirs = [\"{plugins}\", \"{CNI_PLUGINS}\"]\nnetwork_config_dir = \"{netd}\"\n\n\
             [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\nevents_logfile_path = \"{events}\"\n\
             runtime = \"runc\"\ntmp_dir = \"{tmp}\"\n",
            plugins = d.join("plugins").display(),
            netd = d.join("net.d").display(),
            events = d.join("events.log").display(),
            tmp = d.join("tmp").display(),
        );
        std::fs::write(d.join("containers.conf"), conf).unwrap();
        Podman { dir }
    }

    /// A network on `lab`'s bridge of overlay network `overlay`: no IPAM,
    /// vswitchd gives the addresses.
    fn overlay_network(&self, lab: &Lab, name: &str, overlay: &str) {
        let plugin = json!({ "type": "vswitch-cni", "bridge": overlay, "runDir": lab.sw.run_dir() });
        let list = json!({ "cniVersion": "1.0.0", "name": name, "plugins": [plugin] });
        std::fs::write(self.dir.path().join(format!("net.d/{name}.conflist")), list.to_string()).unwrap();
    }

    /// A network on the lab's br0 (with VLAN `vlan`), leases from `start`.
    fn network(&self, lab: &Lab, name: &str, vlan: Option<u16>, start: &str) {
        let mut plugin = json!({
            "type": "vswitch-cni",
            "bridge": "br0",
            "runDir": lab.sw.run_dir(),
            "isGateway": true,
            "ipam": {
                "type": "host-local",
                "dataDir": self.dir.path().join("ipam"),
                "ranges": [[{ "subnet": "198.18.0.0/24", "gateway": "198.18.0.1", "rangeStart": start }]],
            },
        });
        if let Some(vlan) = vlan {
            plugin["vlan"] = json!(vlan);
        }
        let list = json!({ "cniVersion": "1.0.0", "name": name, "plugins": [plugin] });
        std::fs::write(self.dir.path().join(format!("net.d/{name}.conflist")), list.to_string()).unwrap();
    }

    fn command(&self) -> Command {
        let d = self.dir.path();
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_CONF", d.join("containers.conf"))
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .args(["--storage-driver", "vfs"]);
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        run(self.command().args(args))
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "podman {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Starts a busybox container on `network` that lives at most 120 s;
    /// returns its id. Every flag comes before `--rootfs DIR`, after which
    /// Podman reads the command.
    fn start(&self, name: &str, network: &str) -> String {
        let rootfs = self.dir.path().join("rootfs");
        self.ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            network,
            "--runtime",
            "runc",
            "--ulimit",
            "nofile=20000:20000",
            "--ulimit",
            "nproc=32768:32768",
            "--rootfs",
            rootfs.to_str().unwrap(),
            "/bin/sleep",
            "120",
        ])
    }

    fn ip_of(&self, name: &str, network: &str) -> String {
        self.ok(&[
            "inspect",
            name,
            "--format",
            &format!("{{{{.NetworkSettings.Networks.{network}.IPAddress}}}}"),
        ])
    }

    /// Whether `name` gets an answer from `ip` (2 pings, 1 s each).
    fn pings(&self, name: &str, ip: &str) -> bool {
        self.run(&["exec", name, "ping", "-c", "2", "-W", "1", ip]).status.success()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Only this test's containers live under this root.
        let _ = self.run(&["rm", "-f", "-t", "0", "-a"]);
    }
}

/// The ports of br0 that carry `external_ids:container_id`, as (id, tag).
fn container_ports(lab: &Lab) -> Vec<(String, Option<u64>)> {
    lab.sw
        .bridge_ports("br0")
        .iter()
        .filter_map(|p| Some((p["external_ids"]["container_id"].as_str()?.to_owned(), p["tag"].as_u64())))
        .collect()
}

fn tools_present() -> bool {
    let mut missing: Vec<String> = ["podman", "runc"]
        .into_iter()
        .filter(|tool| !run(Command::new("sh").args(["-c", &format!("command -v {tool}")])).status.success())
        .map(str::to_owned)
        .collect();
    for file in ["/bin/busybox", "/usr/lib/cni/host-local"] {
        if !Path::new(file).is_file() {
            missing.push(file.to_owned());
        }
    }
    assert!(
        missing.is_empty() || !testkit::in_ci(),
        "CI must install podman runc containernetworking-plugins busybox-static: {missing:?}"
    );
    if !missing.is_empty() {
        eprintln!("SKIPPED podman test: missing {missing:?} (apt install podman runc containernetworking-plugins busybox-static)");
    }
    missing.is_empty()
}

/// What Podman leaves in the root filesystem: libcni's result cache
/// (`/var/lib/cni`, not configurable in Podman 4.3) and container storage
/// (`/var/lib/containers`, which `--root` keeps it out of).
fn system_state() -> Vec<PathBuf> {
    let mut found = Vec::new();
    for dir in ["/var/lib/containers", "/var/lib/cni/results"] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            found.extend(entries.filter_map(|e| e.ok()).map(|e| e.path()));
        }
    }
    found.sort();
    found
}

#[test]
fn podman_containers_on_a_vswitch_network() {
    if !e2e_allowed("podman_containers_on_a_vswitch_network") || !tools_present() {
        return;
    }
    // Podman's result cache is the machine's: the other podman test must not run meanwhile.
    let _serial = traffic_lock();
    let state_before = system_state();
    let lab = Lab::new("pod");
    lab.sw.ok(&["add-br", "br0"]);
    let podman = Podman::new(&lab);

    let id1 = podman.start("web1", "vsnet");
    let id2 = podman.start("web2", "vsnet");
    let id3 = podman.start("other", "vsnet20");
    let (ip1, ip2, ip3) =
        (podman.ip_of("web1", "vsnet"), podman.ip_of("web2", "vsnet"), podman.ip_of("other", "vsnet20"));
    assert_eq!((ip1.as_str(), ip2.as_str(), ip3.as_str()), ("198.18.0.2", "198.18.0.3", "198.18.0.100"));

    let mut ports = container_ports(&lab);
    ports.sort();
    let mut expected = vec![(id1.clone(), None), (id2.clone(), None), (id3.clone(), Some(20))];
    expected.sort();
    assert_eq!(ports, expected, "show lists each container's port with its id (and VLAN)");

    assert!(podman.pings("web1", &ip2), "web1 cannot reach web2 through vswitchd");
    assert!(podman.pings("web2", &ip1), "web2 cannot reach web1");
    assert!(podman.pings("web1", "198.18.0.1"), "web1 cannot reach the bridge's gateway");
    assert!(!podman.pings("other", &ip1), "a container on VLAN 20 reached one on the untagged network");

    podman.ok(&["stop", "-t", "0", "web1", "web2", "other"]);
    podman.ok(&["rm", "web1", "web2", "other"]);
    assert!(container_ports(&lab).is_empty(), "ports left behind: {:?}", container_ports(&lab));
    let leftovers: Vec<PathBuf> = system_state().into_iter().filter(|p| !state_before.contains(p)).collect();
    assert!(leftovers.is_empty(), "podman left state behind: {leftovers:?}");
}

#[test]
fn podman_on_two_hosts_shares_an_overlay_network() {
    if !e2e_allowed("podman_on_two_hosts_shares_an_overlay_network") || !tools_present() {
        return;
    }
    let _serial = traffic_lock();
    let c = cluster("pdo", 2);
    c.hosts[0].sw.ok(&["add-overlay", "red", "--subnet", "198.18.100.0/24", "--gateway", "198.18.100.1"]);
    for lab in &c.hosts {
        wait_for("both hosts make the red bridge", std::time::Duration::from_secs(10), || {
            lab.sw.ok(&["list-br"]).lines().any(|l| l == "red")
        });
    }
    // One Podman per host, each with the same network name on its own vswitchd.
    let podmen: Vec<Podman> = c
        .hosts
        .iter()
        .map(|lab| {
            let podman = Podman::empty();
            podman.overlay_network(lab, "vsover", "red");
            podman
        })
        .collect();
    podmen[0].start("left", "vsover");
    podmen[1].start("right", "vsover");
    let (left, right) = (podmen[0].ip_of("left", "vsover"), podmen[1].ip_of("right", "vsover"));
    assert_ne!(left, right, "one network, two addresses");
    for ip in [&left, &right] {
        assert!(ip.starts_with("198.18.100."), "an address of the overlay's subnet: {ip}");
    }
    wait_for("the left container reaches the right one", std::time::Duration::from_secs(10), || {
        podmen[0].pings("left", &right)
    });
    assert!(podmen[1].pings("right", &left), "the right container reaches the left one");
    assert!(podmen[1].pings("right", "198.18.100.1"), "and its gateway, answered on its own host");

    podmen[1].ok(&["rm", "-f", "-t", "0", "right"]);
    wait_for("the right container's address is given back", std::time::Duration::from_secs(10), || {
        c.etcd.keys(&format!("/vswitch/v1/addresses/red/{right}")).is_empty()
    });
    assert!(!podmen[0].pings("left", &right), "nothing answers for a removed container");
}
