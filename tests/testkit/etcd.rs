//! A real etcd cluster for multi-host tests: Debian's `etcd-server`, each
//! member a process of the test's own inside a namespace of the test's
//! (one address each on 198.18.0.0/15), its data in a temporary directory,
//! stopped by pid on drop.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::lab::{Guarded, Netns};

pub struct EtcdCluster {
    /// Members in order; `None` while stopped.
    members: Vec<Option<Guarded>>,
    addresses: Vec<String>,
    netns: String,
    token: String,
    pub dir: tempfile::TempDir,
}

impl EtcdCluster {
    /// Starts one member per address (already configured in `netns`) and
    /// waits until the cluster answers.
    pub fn start(netns: &Netns, addresses: &[&str]) -> EtcdCluster {
        let dir = tempfile::Builder::new().prefix("vswitch-etcd-").tempdir().expect("temp dir");
        let mut cluster = EtcdCluster {
            members: addresses.iter().map(|_| None).collect(),
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
            netns: netns.name.clone(),
            token: format!("vswitch-test-{}", std::process::id()),
            dir,
        };
        for i in 0..addresses.len() {
            cluster.start_member(i, true);
        }
        cluster.wait_healthy(Duration::from_secs(30));
        cluster
    }

    /// `etcd://A:2379,B:2379,...`, what vswitchd takes.
    pub fn url(&self) -> String {
        let list: Vec<String> = self.addresses.iter().map(|a| format!("{a}:2379")).collect();
        format!("etcd://{}", list.join(","))
    }

    fn start_member(&mut self, i: usize, new: bool) {
        let name = format!("m{i}");
        let initial: Vec<String> =
            self.addresses.iter().enumerate().map(|(j, a)| format!("m{j}=http://{a}:2380")).collect();
        let addr = &self.addresses[i];
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log"))).expect("etcd log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.netns, "etcd"])
            .args(["--name", &name, "--logger", "zap", "--log-outputs", "stderr"])
            .arg("--data-dir")
            .arg(self.dir.path().join(&name))
            .args(["--listen-client-urls", &format!("http://{addr}:2379")])
            .args(["--advertise-client-urls", &format!("http://{addr}:2379")])
            .args(["--listen-peer-urls", &format!("http://{addr}:2380")])
            .args(["--initial-advertise-peer-urls", &format!("http://{addr}:2380")])
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--initial-cluster-token", &self.token])
            .args(["--initial-cluster-state", if new { "new" } else { "existing" }])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd starts (apt-get install etcd-server)");
        self.members[i] = Some(Guarded(Some(child)));
    }

    /// Stops member `i` (SIGKILL, by its pid).
    pub fn stop(&mut self, i: usize) {
        self.members[i] = None;
    }

    /// Starts member `i` again on its data.
    pub fn restart(&mut self, i: usize) {
        assert!(self.members[i].is_none(), "member {i} is running");
        self.start_member(i, false);
    }

    /// `--endpoints=...` for etcdctl: the members running now.
    fn running_endpoints(&self) -> String {
        let running: Vec<String> = self
            .addresses
            .iter()
            .zip(&self.members)
            .filter(|(_, m)| m.is_some())
            .map(|(a, _)| format!("http://{a}:2379"))
            .collect();
        format!("--endpoints={}", running.join(","))
    }

    /// Whether `etcdctl endpoint health` passes for the running members.
    pub fn healthy(&self) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.netns, "etcdctl", "--dial-timeout=1s", "--command-timeout=2s"])
            .arg(self.running_endpoints())
            .args(["endpoint", "health"])
            .env("ETCDCTL_API", "3")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    pub fn wait_healthy(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.healthy() {
            if Instant::now() > deadline {
                let logs: Vec<String> = (0..self.members.len())
                    .map(|i| {
                        std::fs::read_to_string(self.dir.path().join(format!("m{i}.log"))).unwrap_or_default()
                    })
                    .map(|l| l.lines().rev().take(10).collect::<Vec<_>>().join("\n"))
                    .collect();
                panic!(
                    "etcd did not become healthy within {limit:?}; last log lines:\n{}",
                    logs.join("\n--\n")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `etcdctl get --prefix KEY --keys-only`: the keys under a prefix.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.netns, "etcdctl"])
            .arg(self.running_endpoints())
            .args(["get", "--prefix", "--keys-only", prefix])
            .env("ETCDCTL_API", "3")
            .stdin(Stdio::null())
            .output()
            .expect("etcdctl runs");
        String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.is_empty()).map(String::from).collect()
    }
}
