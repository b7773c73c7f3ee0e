//! The CNI plugin driven directly, as a runtime would: `CNI_*` variables,
//! the network configuration on stdin, `host-local` (from Debian's
//! containernetworking-plugins) for addresses, against a daemon of the
//! test's own. ADD, CHECK and DEL, DEL repeated and after the namespace is
//! gone, and the error objects for malformed configuration, a missing
//! namespace, a missing bridge and a daemon that is not there. On an
//! overlay network's bridge (a one-member etcd beside the daemon) the
//! address comes from vswitchd and the IPAM plugin is never run.
//! Root only (namespaces); CI installs the plugins and etcd and runs them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use testkit::etcd::EtcdCluster;
use testkit::lab::*;
use testkit::*;

const CNI_PATH: &str = "/usr/lib/cni";

fn plugin_bin() -> PathBuf {
    vsctl_bin().with_file_name("vswitch-cni")
}

/// Whether these tests can run: root, and host-local installed (CI
/// installs it, so there it must be).
fn cni_allowed(test: &str) -> bool {
    if !e2e_allowed(test) {
        return false;
    }
    let present = Path::new(CNI_PATH).join("host-local").is_file();
    assert!(present || !in_ci(), "{test}: CI must install containernetworking-plugins");
    if !present {
        eprintln!(
            "SKIPPED {test}: {CNI_PATH}/host-local is missing (apt install containernetworking-plugins)"
        );
    }
    present
}

/// A network configuration for `bridge` of the lab's daemon, with
/// host-local keeping its leases under the test's directory.
fn config(lab: &Lab, bridge: &str) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "vsnet",
        "type": "vswitch-cni",
        "bridge": bridge,
        "runDir": lab.sw.run_dir(),
        "isGateway": true,
        "ipam": {
            "type": "host-local",
            "dataDir": lab.sw.path("ipam"),
            "ranges": [[{ "subnet": "198.18.0.0/24", "gateway": "198.18.0.1" }]],
        },
    })
}

/// The lease file host-local keeps for `ip`.
fn lease_file(lab: &Lab, ip: &str) -> PathBuf {
    lab.sw.path("ipam").join("vsnet").join(ip)
}

/// Runs the plugin: (success, what it printed as JSON, or Null).
fn cni(command: &str, id: &str, netns: Option<&str>, stdin: &[u8]) -> (bool, Value) {
    let mut cmd = Command::new(plugin_bin());
    cmd.env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", CNI_PATH)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(ns) = netns {
        cmd.env("CNI_NETNS", ns);
    }
    let mut child = cmd.spawn().expect("vswitch-cni runs");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    let printed = if out.stdout.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("vswitch-cni printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout))
        })
    };
    (out.status.success(), printed)
}

fn netns_path(ns: &Netns) -> String {
    format!("/run/netns/{}", ns.name)
}

/// The ports of `bridge` whose `external_ids:container_id` is `id`.
fn ports_of(lab: &Lab, bridge: &str, id: &str) -> Vec<String> {
    lab.sw
        .bridge_ports(bridge)
        .iter()
        .filter(|p| p["external_ids"]["container_id"] == id)
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn add_check_del_attach_and_detach_a_namespace() {
    if !cni_allowed("add_check_del_attach_and_detach_a_namespace") {
        return;
    }
    let lab = Lab::new("cni");
    lab.sw.ok(&["add-br", "br0"]);
    let ns = Netns::new(format!("{}-c1", lab.prefix()));
    let conf = serde_json::to_vec(&config(&lab, "br0")).unwrap();
    let path = netns_path(&ns);

    let (ok, result) = cni("ADD", "ctr1", Some(&path), &conf);
    assert!(ok, "ADD failed: {result}");
    assert_eq!(result["cniVersion"], "1.0.0");
    assert_eq!(
        result["ips"],
        json!([{ "address": "198.18.0.2/24", "gateway": "198.18.0.1", "interface": 2 }])
    );
    assert_eq!(
        result["interfaces"][2],
        json!({ "name": "eth0", "mac": "02:42:c6:12:00:02", "sandbox": path })
    );
    assert_eq!(result["routes"], json!([{ "dst": "0.0.0.0/0", "gw": "198.18.0.1" }]));
    let ports = ports_of(&lab, "br0", "ctr1");
    assert_eq!(ports.len(), 1, "one port with the container id in show");
    assert_eq!(result["interfaces"][1]["name"], ports[0].as_str());
    assert!(lease_file(&lab, "198.18.0.2").exists());
    // isGateway: the bridge answers for the gateway, which is the route.
    assert_eq!(lab.sw.ok(&["get", "bridge", "br0", "gateway"]).trim(), "198.18.0.1/24");
    assert!(ns.pings("198.18.0.1", 2), "the container cannot reach its gateway");
    assert!(ns.ip(&["route"]).contains("default via 198.18.0.1"));

    let (ok, printed) = cni("CHECK", "ctr1", Some(&path), &conf);
    assert!(ok && printed.is_null(), "CHECK: {printed}");
    // A second ADD is refused and leaves the first attachment's lease alone.
    let (ok, error) = cni("ADD", "ctr1", Some(&path), &conf);
    assert!(!ok && error["code"] == 100, "a repeated ADD: {error}");
    assert!(lease_file(&lab, "198.18.0.2").exists());
    assert_eq!(ports_of(&lab, "br0", "ctr1").len(), 1);

    let (ok, printed) = cni("DEL", "ctr1", Some(&path), &conf);
    assert!(ok && printed.is_null(), "DEL: {printed}");
    assert!(ports_of(&lab, "br0", "ctr1").is_empty());
    assert!(!ns.ip(&["-br", "link"]).contains("eth0"), "the container's end went with the port");
    assert!(!lease_file(&lab, "198.18.0.2").exists(), "the address was released");
    // Again: nothing to delete is not an error.
    let (ok, printed) = cni("DEL", "ctr1", Some(&path), &conf);
    assert!(ok, "a repeated DEL: {printed}");
    let (ok, error) = cni("CHECK", "ctr1", Some(&path), &conf);
    assert!(!ok);
    assert_eq!(error["code"], 3, "CHECK of a detached container: {error}");
}

#[test]
fn del_works_once_the_namespace_is_gone() {
    if !cni_allowed("del_works_once_the_namespace_is_gone") {
        return;
    }
    let lab = Lab::new("cnigone");
    lab.sw.ok(&["add-br", "br0"]);
    let conf = serde_json::to_vec(&config(&lab, "br0")).unwrap();
    let ns = Netns::new(format!("{}-c1", lab.prefix()));
    let (ok, result) = cni("ADD", "ctr-gone", Some(&netns_path(&ns)), &conf);
    assert!(ok, "ADD failed: {result}");
    drop(ns);
    // The runtime may not pass CNI_NETNS once the namespace is gone.
    let (ok, printed) = cni("DEL", "ctr-gone", None, &conf);
    assert!(ok, "DEL without a namespace: {printed}");
    assert!(ports_of(&lab, "br0", "ctr-gone").is_empty());
    assert!(!lease_file(&lab, "198.18.0.2").exists());
}

#[test]
fn errors_are_cni_error_objects_with_codes() {
    if !cni_allowed("errors_are_cni_error_objects_with_codes") {
        return;
    }
    let lab = Lab::new("cnierr");
    lab.sw.ok(&["add-br", "br0"]);
    let ns = Netns::new(format!("{}-c1", lab.prefix()));
    let path = netns_path(&ns);
    let conf = serde_json::to_vec(&config(&lab, "br0")).unwrap();

    let (ok, version) = cni("VERSION", "", None, br#"{"cniVersion":"0.4.0"}"#);
    assert!(ok);
    assert_eq!(version["supportedVersions"], json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0"]));

    let failure = |stdin: &[u8], netns: Option<&str>| {
        let (ok, error) = cni("ADD", "ctr-err", netns, stdin);
        assert!(!ok, "should have failed: {error}");
        assert!(error["msg"].as_str().is_some_and(|m| !m.is_empty()), "{error}");
        error["code"].as_u64().unwrap()
    };
    assert_eq!(failure(b"{\"cniVersion\": ", Some(&path)), 6, "malformed configuration");
    assert_eq!(failure(br#"{"cniVersion":"1.0.0","type":"vswitch-cni"}"#, Some(&path)), 7, "no bridge");
    assert_eq!(failure(&conf, Some("/run/netns/vswitch-test-no-such-ns")), 3, "a missing namespace");
    assert_eq!(failure(&conf, None), 4, "no CNI_NETNS");
    let mut elsewhere = config(&lab, "br0");
    elsewhere["runDir"] = json!(lab.sw.path("nowhere"));
    assert_eq!(failure(&serde_json::to_vec(&elsewhere).unwrap(), Some(&path)), 11, "no daemon");
    // vswitchd refuses (no such bridge): the address goes back to the pool.
    let nosuch = serde_json::to_vec(&config(&lab, "nosuch")).unwrap();
    assert_eq!(failure(&nosuch, Some(&path)), 100, "a missing bridge");
    let leases: Vec<_> = std::fs::read_dir(lab.sw.path("ipam").join("vsnet"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name())
                .filter(|n| n.to_string_lossy().starts_with("198."))
                .collect()
        })
        .unwrap_or_default();
    assert!(leases.is_empty(), "leases left behind: {leases:?}");
    assert!(ports_of(&lab, "br0", "ctr-err").is_empty());
}

#[test]
fn ip_masq_masquerades_the_subnet_behind_the_uplink() {
    if !cni_allowed("ip_masq_masquerades_the_subnet_behind_the_uplink") {
        return;
    }
    let lab = Lab::new("cnimasq");
    lab.sw.ok(&["add-br", "br0"]);
    let tx = lab.sw.path("up.pcap");
    let tx = format!("options:tx_pcap={}", tx.display());
    lab.sw.ok(&[
        "add-port",
        "br0",
        "up",
        "ip=198.19.5.1/24",
        "--",
        "set",
        "interface",
        "up",
        "type=pcap",
        &tx,
    ]);
    let ns = Netns::new(format!("{}-c1", lab.prefix()));
    let mut conf = config(&lab, "br0");
    conf["ipMasq"] = json!(true);
    conf["uplink"] = json!("up");
    let (ok, result) = cni("ADD", "ctr-masq", Some(&netns_path(&ns)), &serde_json::to_vec(&conf).unwrap());
    assert!(ok, "ADD failed: {result}");
    let show = lab.sw.json(&["show"]);
    assert_eq!(show[0]["masquerade"], "up", "{show}");
    assert!(lab.sw.ok(&["dump-flows", "br0"]).contains("ct(commit"), "masquerade flows installed");
}

/// The address of an overlay result, which must be in 198.18.100.0/24
/// and not the gateway.
fn overlay_ip(result: &Value) -> String {
    let address = result["ips"][0]["address"].as_str().unwrap_or_else(|| panic!("no address: {result}"));
    let ip = address.strip_suffix("/24").unwrap_or_else(|| panic!("not a /24: {address}"));
    let host: u8 = ip
        .strip_prefix("198.18.100.")
        .and_then(|h| h.parse().ok())
        .unwrap_or_else(|| panic!("{ip} is not in the overlay's subnet"));
    assert!((2..255).contains(&host), "{ip} is the gateway or not a host address");
    ip.to_owned()
}

/// Docker's MAC for an IPv4 address: 02:42 and its four bytes.
fn docker_mac(ip: &str) -> String {
    let bytes: Vec<String> = ip.split('.').map(|b| format!("{:02x}", b.parse::<u8>().unwrap())).collect();
    format!("02:42:{}", bytes.join(":"))
}

#[test]
fn overlay_networks_get_their_address_from_vswitchd_not_ipam() {
    if !cni_allowed("overlay_networks_get_their_address_from_vswitchd_not_ipam") {
        return;
    }
    let present = run(Command::new("sh").args(["-c", "command -v etcd"])).status.success();
    assert!(present || !in_ci(), "CI must install etcd-server");
    if !present {
        eprintln!("SKIPPED overlay_networks_get_their_address_from_vswitchd_not_ipam: etcd is missing (apt install etcd-server)");
        return;
    }
    // The store beside the daemon, on the switch namespace's loopback.
    let lab = Lab::with_args(
        "cniovl",
        &["--cluster-store", "etcd://127.0.0.1:2379", "--cluster-advertise", "127.0.0.1"],
    );
    let etcd = EtcdCluster::start(&lab.switch_ns, &["127.0.0.1"]);
    lab.sw.ok(&["add-overlay", "ovl", "--subnet", "198.18.100.0/24", "--gateway", "198.18.100.1"]);
    wait_for("the overlay's bridge", std::time::Duration::from_secs(10), || {
        lab.sw.ok(&["list-br"]).lines().any(|l| l == "ovl")
    });
    let addresses = || etcd.keys("/vswitch/v1/addresses/ovl/");

    // An `ipam` section is ignored on an overlay: its lease directory
    // never appears.
    let conf = serde_json::to_vec(&config(&lab, "ovl")).unwrap();
    let ns = Netns::new(format!("{}-c1", lab.prefix()));
    let path = netns_path(&ns);
    let (ok, result) = cni("ADD", "ctr-ovl", Some(&path), &conf);
    assert!(ok, "ADD failed: {result}");
    // vswitchd picks among the lowest free addresses (hosts rarely race).
    let ip1 = overlay_ip(&result);
    assert_eq!(
        result["ips"],
        json!([{ "address": format!("{ip1}/24"), "gateway": "198.18.100.1", "interface": 2 }])
    );
    assert_eq!(result["interfaces"][2], json!({ "name": "eth0", "mac": docker_mac(&ip1), "sandbox": path }));
    assert_eq!(result["routes"], json!([{ "dst": "0.0.0.0/0", "gw": "198.18.100.1" }]));
    let ports = ports_of(&lab, "ovl", "ctr-ovl");
    assert_eq!(ports.len(), 1, "one port with the container id in show");
    assert_eq!(result["interfaces"][1]["name"], ports[0].as_str());
    assert!(!lab.sw.path("ipam").exists(), "the IPAM plugin was run for an overlay");
    assert_eq!(addresses(), [format!("/vswitch/v1/addresses/ovl/{ip1}")]);
    assert!(ns.ip(&["route"]).contains("default via 198.18.100.1"));
    assert!(ns.pings("198.18.100.1", 2), "the container cannot reach the overlay's gateway");

    // A configuration without `ipam` works the same; `vlan` is refused.
    let mut bare = config(&lab, "ovl");
    bare.as_object_mut().unwrap().remove("ipam");
    bare["mtu"] = json!(1400);
    let bare = serde_json::to_vec(&bare).unwrap();
    let ns2 = Netns::new(format!("{}-c2", lab.prefix()));
    let (ok, result) = cni("ADD", "ctr-ovl2", Some(&netns_path(&ns2)), &bare);
    assert!(ok, "ADD without ipam failed: {result}");
    let ip2 = overlay_ip(&result);
    assert_ne!(ip1, ip2);
    assert!(ns2.ip(&["link", "show", "eth0"]).contains("mtu 1400"), "the configuration's mtu");
    assert!(ns.pings(&ip2, 2), "two containers on the overlay cannot reach each other");
    let mut tagged = config(&lab, "ovl");
    tagged["vlan"] = json!(20);
    let ns3 = Netns::new(format!("{}-c3", lab.prefix()));
    let (ok, error) = cni("ADD", "ctr-ovl3", Some(&netns_path(&ns3)), &serde_json::to_vec(&tagged).unwrap());
    assert!(!ok && error["code"] == 7, "vlan on an overlay: {error}");
    assert!(ports_of(&lab, "ovl", "ctr-ovl3").is_empty());

    let (ok, printed) = cni("CHECK", "ctr-ovl", Some(&path), &conf);
    assert!(ok && printed.is_null(), "CHECK: {printed}");

    // DEL: the port goes and vswitchd gives the address back; no IPAM.
    let (ok, printed) = cni("DEL", "ctr-ovl", Some(&path), &conf);
    assert!(ok && printed.is_null(), "DEL: {printed}");
    assert!(ports_of(&lab, "ovl", "ctr-ovl").is_empty());
    assert!(!ns.ip(&["-br", "link"]).contains("eth0"), "the container's end went with the port");
    wait_for("the address released", std::time::Duration::from_secs(5), || {
        addresses() == [format!("/vswitch/v1/addresses/ovl/{ip2}")]
    });
    assert!(!lab.sw.path("ipam").exists(), "the IPAM plugin was run for an overlay");
    let (ok, printed) = cni("DEL", "ctr-ovl", Some(&path), &conf);
    assert!(ok, "a repeated DEL: {printed}");
    let (ok, error) = cni("CHECK", "ctr-ovl", Some(&path), &conf);
    assert!(!ok && error["code"] == 3, "CHECK of a detached container: {error}");

    // Once the namespace is gone, without CNI_NETNS.
    drop(ns2);
    let (ok, printed) = cni("DEL", "ctr-ovl2", None, &bare);
    assert!(ok, "DEL without a namespace: {printed}");
    assert!(ports_of(&lab, "ovl", "ctr-ovl2").is_empty());
    wait_for("every address released", std::time::Duration::from_secs(5), || addresses().is_empty());
}
