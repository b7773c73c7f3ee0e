//! Several "hosts" sharing a real etcd cluster, for overlay tests: a
//! 3-member etcd in a namespace of its own and N hosts, each a namespace
//! running its own vswitchd, all on one underlay (a Linux bridge in a
//! namespace of the test's, 198.19.0.0/24). Each host is told only the
//! store and its own address.

use crate::etcd::EtcdCluster;
use crate::lab::{Lab, Netns};

/// The lease TTL the hosts run with: how long a dead host's endpoints live on.
pub const TTL_SECS: u64 = 6;

/// The test's machines; fields drop in order: daemons and containers
/// first, then etcd, then the underlay.
pub struct Cluster {
    pub hosts: Vec<Lab>,
    pub etcd: EtcdCluster,
    _etcd_ns: Netns,
    pub underlay: Netns,
}

const ETCD: [&str; 3] = ["198.19.0.11", "198.19.0.12", "198.19.0.13"];

pub fn vtep(i: usize) -> String {
    format!("198.19.0.{}", i + 1)
}

/// Joins `ns` to the underlay bridge with `addresses` on its end.
fn wire(underlay: &Netns, ns: &Netns, port: &str, addresses: &[&str]) {
    underlay.ip(&["link", "add", port, "type", "veth", "peer", "name", "ul0", "netns", &ns.name]);
    underlay.ip(&["link", "set", port, "master", "ulbr"]);
    underlay.ip(&["link", "set", port, "up"]);
    for address in addresses {
        ns.ip(&["addr", "add", &format!("{address}/24"), "dev", "ul0"]);
    }
    ns.ip(&["link", "set", "ul0", "up"]);
}

pub fn cluster(tag: &str, hosts: usize) -> Cluster {
    let prefix = format!("vs{}{tag}", std::process::id());
    let underlay = Netns::new(format!("{prefix}-ul"));
    underlay.ip(&["link", "add", "ulbr", "type", "bridge"]);
    underlay.ip(&["link", "set", "ulbr", "up"]);
    let etcd_ns = Netns::new(format!("{prefix}-etcd"));
    wire(&underlay, &etcd_ns, "etcd", &ETCD);
    let etcd = EtcdCluster::start(&etcd_ns, &ETCD);
    let store = etcd.url();
    let ttl = TTL_SECS.to_string();
    let hosts = (0..hosts)
        .map(|i| {
            // The daemon starts before its underlay link is up: it must
            // wait for the store, not fail.
            let vtep = vtep(i);
            let args = ["--cluster-store", &store, "--cluster-advertise", &vtep, "--cluster-ttl", &ttl];
            let lab = Lab::with_args(&format!("{tag}{i}"), &args);
            wire(&underlay, &lab.switch_ns, &format!("h{i}"), &[&vtep]);
            lab
        })
        .collect();
    Cluster { hosts, etcd, _etcd_ns: etcd_ns, underlay }
}
