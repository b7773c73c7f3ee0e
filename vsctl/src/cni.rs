//! `vswitch-cni`: a CNI plugin (spec 1.0.0, also answering 0.3.x and
//! 0.4.0) that attaches a container's network namespace to a vswitchd
//! bridge, so Podman, containerd/nerdctl, CRI-O or Kubernetes can put
//! containers on vswitch with `"type": "vswitch-cni"`.
//!
//! - ADD asks the IPAM plugin named in the config (`host-local`, say) for
//!   an address, then vswitchd for what `vsctl add-container-port` does:
//!   a veth pair, its peer moved into `CNI_NETNS` as `CNI_IFNAME` with the
//!   address, MAC and MTU, the host end a port of `bridge` (with `vlan` as
//!   its tag), and `external_ids:container_id=CNI_CONTAINERID`. With
//!   `isGateway` the bridge answers for the IPAM gateway and the container
//!   routes through it; with `ipMasq` the subnet is masqueraded behind the
//!   `uplink` port. If vswitchd refuses, the address is given back.
//! - DEL finds the port by container id (so it works once the namespace
//!   is gone, when the runtime may not even pass `CNI_NETNS`), removes it
//!   and both veth ends if they still exist, and releases the address.
//!   Deleting what is not there succeeds: DEL is idempotent.
//! - CHECK: the port exists, works, and its namespace is still there; the
//!   IPAM plugin checks its part.
//! - Errors are CNI error objects on stdout with the spec's codes, and a
//!   non-zero exit.
//!
//! The container's MAC is derived from its IPv4 address as Docker does
//! (`02:42:` and the four bytes), so it is stable across re-creation.
//!
//! Overlay networks: when `bridge` is an overlay network's bridge (vswitchd's
//! `show` says so), vswitchd itself allocates the address cluster-wide and
//! picks the MAC, the network's gateway and MTU, so no IPAM plugin is run,
//! not on ADD, DEL nor CHECK, and an `ipam` section is ignored. ADD sends
//! `add-container-port` with no address (only `mtu` if the configuration
//! sets one) and builds the result from vswitchd's answer. The bridge
//! already answers for the network's gateway, so `isGateway` adds nothing;
//! `vlan` is refused (the network is one untagged segment). DEL removes the
//! port, and vswitchd releases the address and withdraws the endpoint.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::time::Duration;

use proto::{AttachedView, Command, CommandResult, Method, PortView, Table, Transact, TransactReply};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::client::Client;

pub const SUPPORTED_VERSIONS: [&str; 4] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"];
const DEFAULT_RUN_DIR: &str = "/run/vswitch";
const VSWITCHD_TIMEOUT: Duration = Duration::from_secs(10);

/// The spec's error codes (CNI SPEC.md, "Error").
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const CONTAINER_UNKNOWN: u32 = 3;
    pub const INVALID_ENVIRONMENT: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE_FAILURE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// vswitchd refused the attachment.
    pub const SWITCH_REFUSED: u32 = 100;
    /// The IPAM plugin could not be found or run.
    pub const IPAM_FAILED: u32 = 101;
}

/// A CNI error object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> CniError {
        CniError { code, msg: msg.into(), details: String::new() }
    }

    fn with_details(mut self, details: impl Into<String>) -> CniError {
        self.details = details.into();
        self
    }

    pub fn to_json(&self, cni_version: &str) -> Value {
        json!({ "cniVersion": cni_version, "code": self.code, "msg": self.msg, "details": self.details })
    }
}

/// The `CNI_*` environment variables.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub command: Option<String>,
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    pub path: Vec<PathBuf>,
}

impl Env {
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Env {
        let non_empty = |name: &str| get(name).filter(|v| !v.is_empty());
        Env {
            command: non_empty("CNI_COMMAND"),
            container_id: non_empty("CNI_CONTAINERID"),
            netns: non_empty("CNI_NETNS"),
            ifname: non_empty("CNI_IFNAME"),
            path: non_empty("CNI_PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default(),
        }
    }

    fn require<'a>(&self, value: &'a Option<String>, name: &str) -> Result<&'a str, CniError> {
        value.as_deref().ok_or_else(|| {
            CniError::new(code::INVALID_ENVIRONMENT, format!("{name} is not set; the runtime must pass it"))
        })
    }
}

/// The network configuration's fields this plugin reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    /// The bridge to attach to (it must exist: `vsctl add-br`).
    pub bridge: Option<String>,
    /// Where vswitchd's control socket is (default /run/vswitch).
    pub run_dir: Option<String>,
    /// The port's VLAN tag (an access port).
    pub vlan: Option<u16>,
    pub mtu: Option<u32>,
    /// The bridge answers ARP and ping for the IPAM gateway, and the
    /// container routes through it (as the `bridge` plugin's isGateway
    /// and isDefaultGateway together).
    #[serde(default)]
    pub is_gateway: bool,
    #[serde(default)]
    pub is_default_gateway: bool,
    /// Masquerade the subnet behind `uplink`'s address (needs isGateway).
    #[serde(default)]
    pub ip_masq: bool,
    pub uplink: Option<String>,
    pub ipam: Option<Value>,
}

/// Runs one plugin invocation: what to print on success (nothing for DEL
/// and CHECK), or the error object.
pub fn run(env: &Env, stdin: &[u8]) -> Result<Option<Value>, CniError> {
    let command = env.require(&env.command, "CNI_COMMAND")?;
    if command == "VERSION" {
        return Ok(Some(version(stdin)));
    }
    let conf: NetConf = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(code::DECODE_FAILURE, format!("the network configuration on stdin is not valid: {e}"))
    })?;
    if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "cniVersion {} is not supported: use one of {}",
                conf.cni_version,
                SUPPORTED_VERSIONS.join(", ")
            ),
        ));
    }
    let bridge = conf.bridge.clone().ok_or_else(|| {
        CniError::new(
            code::INVALID_CONFIG,
            "the network configuration needs \"bridge\": a vswitchd bridge name",
        )
    })?;
    if conf.ip_masq && conf.uplink.is_none() {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            "\"ipMasq\" needs \"uplink\": the bridge port (with an ip) that leads outside",
        ));
    }
    let plugin = Plugin { env, conf: &conf, stdin, bridge: &bridge };
    match command {
        "ADD" => plugin.add().map(Some),
        "DEL" => plugin.del().map(|()| None),
        "CHECK" => plugin.check().map(|()| None),
        other => Err(CniError::new(
            code::INVALID_ENVIRONMENT,
            format!("CNI_COMMAND={other} is not a CNI command: use ADD, DEL, CHECK or VERSION"),
        )),
    }
}

fn version(stdin: &[u8]) -> Value {
    json!({ "cniVersion": asked_version(stdin), "supportedVersions": SUPPORTED_VERSIONS })
}

/// The `cniVersion` the caller's stdin names, for answers and errors
/// (1.0.0 when it names none or is not JSON).
fn asked_version(stdin: &[u8]) -> String {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v["cniVersion"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "1.0.0".into())
}

struct Plugin<'a> {
    env: &'a Env,
    conf: &'a NetConf,
    stdin: &'a [u8],
    bridge: &'a str,
}

/// What vswitchd's `show` says about the network's bridge.
#[derive(Default)]
struct BridgeState {
    /// The bridge is an overlay network's: vswitchd allocates addresses.
    overlay: bool,
    /// This container's ports on it (with `CNI_IFNAME`).
    ports: Vec<PortView>,
}

/// The address IPAM gave: `A.B.C.D/N` and its gateway.
struct Lease {
    address: String,
    gateway: Option<String>,
    ip: [u8; 4],
}

impl Plugin<'_> {
    fn client(&self) -> Result<Client, CniError> {
        let run_dir = PathBuf::from(self.conf.run_dir.as_deref().unwrap_or(DEFAULT_RUN_DIR));
        Client::connect(&run_dir, VSWITCHD_TIMEOUT).map_err(|e| CniError::new(code::TRY_AGAIN_LATER, e))
    }

    fn transact(&self, client: &mut Client, commands: Vec<Command>) -> Result<Vec<CommandResult>, CniError> {
        let reply: TransactReply = client
            .call(Method::Transact(Transact { commands }))
            .map_err(|e| CniError::new(code::SWITCH_REFUSED, format!("vswitchd: {e}")))?;
        Ok(reply.results)
    }

    /// Whether the bridge is an overlay network's, and this container's
    /// ports on it (with `CNI_IFNAME`). A missing bridge has no ports and
    /// is no overlay.
    fn bridge_state(&self, client: &mut Client) -> Result<BridgeState, CniError> {
        let results = self.transact(client, vec![Command::Show])?;
        let Some(CommandResult::Show(bridges)) = results.into_iter().next() else {
            return Err(CniError::new(code::IO_FAILURE, "vswitchd answered show with something else"));
        };
        let Some(bridge) = bridges.into_iter().find(|b| b.name == self.bridge) else {
            return Ok(BridgeState::default());
        };
        let id = self.env.container_id.as_deref();
        let ifname = self.env.ifname.as_deref();
        let ports = bridge
            .ports
            .into_iter()
            .filter(|p| {
                p.external_ids.get("container_id").map(String::as_str) == id
                    && p.external_ids.get("container_iface").map(String::as_str) == ifname
            })
            .collect();
        Ok(BridgeState { overlay: bridge.overlay.is_some(), ports })
    }

    /// This container's ports on the bridge (with `CNI_IFNAME`).
    fn ports(&self, client: &mut Client) -> Result<Vec<PortView>, CniError> {
        Ok(self.bridge_state(client)?.ports)
    }

    fn ipam(&self, command: &str) -> Result<Option<Value>, CniError> {
        let Some(ipam) = &self.conf.ipam else { return Ok(None) };
        let kind = ipam["type"].as_str().ok_or_else(|| {
            CniError::new(code::INVALID_CONFIG, "\"ipam\" needs a \"type\", e.g. host-local")
        })?;
        let plugin =
            self.env.path.iter().map(|dir| dir.join(kind)).find(|p| p.is_file()).ok_or_else(|| {
                CniError::new(
                    code::IPAM_FAILED,
                    format!("no IPAM plugin {kind} in CNI_PATH ({})", display_paths(&self.env.path)),
                )
            })?;
        let output = run_plugin(&plugin, command, self.stdin)
            .map_err(|e| CniError::new(code::IPAM_FAILED, format!("cannot run {}: {e}", plugin.display())))?;
        let stdout: Option<Value> = serde_json::from_slice(&output.stdout).ok();
        if !output.status.success() {
            // Its own error object, passed on as it is.
            let error = stdout.as_ref().filter(|v| v["code"].is_u64());
            return Err(match error {
                Some(e) => {
                    CniError::new(e["code"].as_u64().unwrap_or(0) as u32, e["msg"].as_str().unwrap_or(""))
                        .with_details(e["details"].as_str().unwrap_or(""))
                }
                None => CniError::new(
                    code::IPAM_FAILED,
                    format!("{kind} failed: {}", String::from_utf8_lossy(&output.stderr).trim()),
                ),
            });
        }
        Ok(stdout)
    }

    fn add(&self) -> Result<Value, CniError> {
        let container_id = self.env.require(&self.env.container_id, "CNI_CONTAINERID")?;
        let netns = self.env.require(&self.env.netns, "CNI_NETNS")?;
        let ifname = self.env.require(&self.env.ifname, "CNI_IFNAME")?;
        if !Path::new(netns).exists() {
            return Err(CniError::new(code::CONTAINER_UNKNOWN, format!("CNI_NETNS {netns} does not exist")));
        }
        let mut client = self.client()?;
        let state = self.bridge_state(&mut client)?;
        // A second ADD for the same attachment must not touch its lease:
        // the clean-up after a refused attach would release it.
        if let Some(port) = state.ports.first() {
            return Err(CniError::new(
                code::SWITCH_REFUSED,
                format!(
                    "container {container_id} already has {ifname} on bridge {} (port {}); DEL it first",
                    self.bridge, port.name
                ),
            ));
        }
        if state.overlay {
            return self.attach_overlay(&mut client, container_id, netns, ifname);
        }
        let ipam = self.ipam("ADD")?;
        let attached = self.attach(&mut client, container_id, netns, ifname, ipam.as_ref());
        match attached {
            Ok(result) => Ok(result),
            Err(e) => {
                // Give the address back; the attach failed as a whole.
                let _ = self.ipam("DEL");
                Err(e)
            }
        }
    }

    fn attach(
        &self,
        client: &mut Client,
        container_id: &str,
        netns: &str,
        ifname: &str,
        ipam: Option<&Value>,
    ) -> Result<Value, CniError> {
        let lease = ipam.map(lease).transpose()?.flatten();
        let gateway_route = self.conf.is_gateway || self.conf.is_default_gateway;
        let mac = match &lease {
            Some(l) => format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", l.ip[0], l.ip[1], l.ip[2], l.ip[3]),
            None => mac_from_id(container_id),
        };
        let mut commands = vec![Command::AddContainerPort {
            bridge: self.bridge.to_owned(),
            ifname: ifname.to_owned(),
            netns: netns.to_owned(),
            ip: lease.as_ref().map(|l| l.address.clone()),
            gateway: lease.as_ref().and_then(|l| l.gateway.clone()).filter(|_| gateway_route),
            mac: Some(mac.clone()),
            mtu: self.conf.mtu,
            tag: self.conf.vlan,
            container_id: Some(container_id.to_owned()),
        }];
        if self.conf.is_gateway {
            if let Some(Lease { address, gateway: Some(gateway), .. }) = &lease {
                let prefix = address.split_once('/').map_or("24", |(_, p)| p);
                commands.push(Command::Set {
                    table: Table::Bridge,
                    record: self.bridge.to_owned(),
                    settings: vec![format!("gateway={gateway}/{prefix}")],
                    if_exists: false,
                });
            }
        }
        if let (true, Some(uplink)) = (self.conf.ip_masq, &self.conf.uplink) {
            commands.push(Command::AddNat { bridge: self.bridge.to_owned(), out_port: uplink.clone() });
        }
        self.transact(client, commands)?;
        let host_port = self.ports(client)?.into_iter().next().map(|p| p.name).unwrap_or_default();

        let mut ips = Vec::new();
        if let Some(l) = &lease {
            ips.push(ip_config(&self.conf.cni_version, &l.address, l.gateway.as_deref()));
        }
        let mut routes: Vec<Value> = ipam.and_then(|v| v["routes"].as_array().cloned()).unwrap_or_default();
        if let (true, Some(g)) = (gateway_route, lease.as_ref().and_then(|l| l.gateway.clone())) {
            if !routes.iter().any(|r| r["dst"] == "0.0.0.0/0") {
                routes.push(json!({ "dst": "0.0.0.0/0", "gw": g }));
            }
        }
        Ok(json!({
            "cniVersion": self.conf.cni_version,
            "interfaces": [
                { "name": self.bridge },
                { "name": host_port },
                { "name": ifname, "mac": mac, "sandbox": netns },
            ],
            "ips": ips,
            "routes": routes,
            "dns": ipam.map(|v| v["dns"].clone()).filter(|d| !d.is_null()).unwrap_or_else(|| json!({})),
        }))
    }

    /// ADD on an overlay network's bridge: vswitchd allocates the address
    /// (cluster-wide), picks MAC, gateway and MTU, and says what it gave.
    fn attach_overlay(
        &self,
        client: &mut Client,
        container_id: &str,
        netns: &str,
        ifname: &str,
    ) -> Result<Value, CniError> {
        if let Some(vlan) = self.conf.vlan {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                format!(
                    "\"vlan\": {vlan} cannot be used on bridge {}: it is an overlay network's, one untagged segment across hosts",
                    self.bridge
                ),
            ));
        }
        let mut commands = vec![Command::AddContainerPort {
            bridge: self.bridge.to_owned(),
            ifname: ifname.to_owned(),
            netns: netns.to_owned(),
            ip: None,
            gateway: None,
            mac: None,
            mtu: self.conf.mtu,
            tag: None,
            container_id: Some(container_id.to_owned()),
        }];
        if let (true, Some(uplink)) = (self.conf.ip_masq, &self.conf.uplink) {
            commands.push(Command::AddNat { bridge: self.bridge.to_owned(), out_port: uplink.clone() });
        }
        let results = self.transact(client, commands)?;
        let result = match results.into_iter().next() {
            Some(CommandResult::Attached(attached)) => {
                overlay_result(&self.conf.cni_version, self.bridge, ifname, netns, &attached)
            }
            other => Err(CniError::new(
                code::IO_FAILURE,
                format!(
                    "vswitchd attached the container to bridge {} but did not say which address it gave \
                     (it answered {}); is the bridge still an overlay network's?",
                    self.bridge,
                    match other {
                        Some(CommandResult::Done) => "done",
                        None => "nothing",
                        Some(_) => "something else",
                    }
                ),
            )),
        };
        if result.is_err() {
            // A failed ADD leaves nothing behind: remove the port, and with
            // it vswitchd's allocation.
            let _ = self.bridge_state(client).and_then(|state| self.detach(client, ifname, state.ports));
        }
        result
    }

    /// Removes `ports` (this container's) and both veth ends if they remain.
    fn detach(&self, client: &mut Client, ifname: &str, ports: Vec<PortView>) -> Result<(), CniError> {
        for port in ports {
            let netns = port.external_ids.get("container_netns").cloned().unwrap_or_default();
            self.transact(
                client,
                vec![Command::DelContainerPort {
                    bridge: self.bridge.to_owned(),
                    ifname: ifname.to_owned(),
                    netns,
                    if_exists: true,
                }],
            )?;
        }
        Ok(())
    }

    fn del(&self) -> Result<(), CniError> {
        self.env.require(&self.env.container_id, "CNI_CONTAINERID")?;
        let ifname = self.env.require(&self.env.ifname, "CNI_IFNAME")?;
        let mut client = self.client()?;
        let state = self.bridge_state(&mut client)?;
        self.detach(&mut client, ifname, state.ports)?;
        // On an overlay vswitchd gave the address, and took it back with the port.
        if !state.overlay {
            self.ipam("DEL")?;
        }
        Ok(())
    }

    fn check(&self) -> Result<(), CniError> {
        let container_id = self.env.require(&self.env.container_id, "CNI_CONTAINERID")?;
        let netns = self.env.require(&self.env.netns, "CNI_NETNS")?;
        self.env.require(&self.env.ifname, "CNI_IFNAME")?;
        if !Path::new(netns).exists() {
            return Err(CniError::new(code::CONTAINER_UNKNOWN, format!("CNI_NETNS {netns} does not exist")));
        }
        let mut client = self.client()?;
        let state = self.bridge_state(&mut client)?;
        let Some(port) = state.ports.first() else {
            return Err(CniError::new(
                code::CONTAINER_UNKNOWN,
                format!("container {container_id} is not attached to bridge {}", self.bridge),
            ));
        };
        if let Some(error) = &port.error {
            return Err(CniError::new(
                code::SWITCH_REFUSED,
                format!("port {} does not work: {error}", port.name),
            ));
        }
        if !state.overlay {
            self.ipam("CHECK")?;
        }
        Ok(())
    }
}

/// One entry of a result's `ips` (with `version`, which 0.3.x and 0.4.0
/// results carry).
fn ip_config(cni_version: &str, address: &str, gateway: Option<&str>) -> Value {
    let mut ip = json!({ "address": address, "interface": 2 });
    if let Some(g) = gateway {
        ip["gateway"] = json!(g);
    }
    if cni_version != "1.0.0" {
        ip["version"] = json!("4");
    }
    ip
}

/// The CNI result for a container that vswitchd attached to an overlay
/// network's `bridge`, from what it answered: the bridge, the host end and
/// the container's interface; its address with the gateway, and the default
/// route through the gateway when the network has one (vswitchd made it in
/// the container). An answer that is not `A.B.C.D/N` and an IPv4 gateway is
/// an error, not a result.
fn overlay_result(
    cni_version: &str,
    bridge: &str,
    ifname: &str,
    netns: &str,
    attached: &AttachedView,
) -> Result<Value, CniError> {
    let bad = |what: &str| {
        CniError::new(code::IO_FAILURE, format!("vswitchd answered add-container-port with {what}"))
    };
    let valid_address = attached.ip.split_once('/').is_some_and(|(addr, prefix)| {
        addr.parse::<std::net::Ipv4Addr>().is_ok() && prefix.parse::<u8>().is_ok_and(|p| p <= 32)
    });
    if !valid_address {
        return Err(bad(&format!("the address {:?}, not A.B.C.D/N", attached.ip)));
    }
    let gateway = match attached.gateway.as_deref() {
        Some(g) => Some(
            g.parse::<std::net::Ipv4Addr>()
                .map_err(|_| bad(&format!("the gateway {g:?}, not an IPv4 address")))?
                .to_string(),
        ),
        None => None,
    };
    if attached.port.is_empty() {
        return Err(bad("no port name"));
    }
    let routes: Vec<Value> = gateway.iter().map(|g| json!({ "dst": "0.0.0.0/0", "gw": g })).collect();
    Ok(json!({
        "cniVersion": cni_version,
        "interfaces": [
            { "name": bridge },
            { "name": attached.port },
            { "name": ifname, "mac": attached.mac, "sandbox": netns },
        ],
        "ips": [ip_config(cni_version, &attached.ip, gateway.as_deref())],
        "routes": routes,
        "dns": {},
    }))
}

/// The first IPv4 address of an IPAM result.
fn lease(result: &Value) -> Result<Option<Lease>, CniError> {
    let Some(ips) = result["ips"].as_array() else { return Ok(None) };
    for ip in ips {
        let Some(address) = ip["address"].as_str() else { continue };
        let Some((addr, _)) = address.split_once('/') else { continue };
        let Ok(v4) = addr.parse::<std::net::Ipv4Addr>() else { continue };
        return Ok(Some(Lease {
            address: address.to_owned(),
            gateway: ip["gateway"].as_str().map(str::to_owned),
            ip: v4.octets(),
        }));
    }
    Err(CniError::new(
        code::UNSUPPORTED_FIELD,
        "the IPAM plugin gave no IPv4 address (IPv6-only is not supported)",
    ))
}

/// A locally administered MAC from the container id, when there is no
/// address to derive one from.
fn mac_from_id(id: &str) -> String {
    let hash =
        id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let b = hash.to_be_bytes();
    format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3])
}

fn display_paths(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        "CNI_PATH is empty".into()
    } else {
        paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":")
    }
}

/// Runs a delegated plugin with our environment, `CNI_COMMAND` replaced,
/// and the configuration on its stdin.
fn run_plugin(plugin: &Path, command: &str, stdin: &[u8]) -> std::io::Result<std::process::Output> {
    let mut child = Process::new(plugin)
        .env("CNI_COMMAND", command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child.stdin.take().expect("piped").write_all(stdin)?;
    child.wait_with_output()
}

/// The plugin's whole life: environment and stdin in, a result or an
/// error object out, and the exit status.
pub fn main() -> std::process::ExitCode {
    let env = Env::from_vars(|name| std::env::var(name).ok());
    let mut stdin = Vec::new();
    if let Err(e) = std::io::Read::read_to_end(&mut std::io::stdin(), &mut stdin) {
        let error = CniError::new(code::IO_FAILURE, format!("cannot read stdin: {e}"));
        println!("{}", error.to_json("1.0.0"));
        return std::process::ExitCode::FAILURE;
    }
    match run(&env, &stdin) {
        Ok(Some(result)) => {
            println!("{result}");
            std::process::ExitCode::SUCCESS
        }
        Ok(None) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            println!("{}", error.to_json(&asked_version(&stdin)));
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(command: &str) -> Env {
        Env { command: Some(command.into()), ..Env::default() }
    }

    #[test]
    fn version_answers_with_every_supported_version() {
        let v = run(&env("VERSION"), br#"{"cniVersion":"0.4.0"}"#).unwrap().unwrap();
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(v["supportedVersions"], json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0"]));
    }

    #[test]
    fn bad_input_gets_the_spec_s_error_codes() {
        let code_of = |e: &Env, stdin: &str| run(e, stdin.as_bytes()).unwrap_err().code;
        assert_eq!(code_of(&Env::default(), "{}"), code::INVALID_ENVIRONMENT);
        assert_eq!(code_of(&env("ADD"), "{not json"), code::DECODE_FAILURE);
        assert_eq!(
            code_of(&env("ADD"), r#"{"cniVersion":"9.9.9","bridge":"br0"}"#),
            code::INCOMPATIBLE_VERSION
        );
        assert_eq!(code_of(&env("ADD"), r#"{"cniVersion":"1.0.0"}"#), code::INVALID_CONFIG);
        let masq = r#"{"cniVersion":"1.0.0","bridge":"br0","ipMasq":true}"#;
        assert_eq!(code_of(&env("ADD"), masq), code::INVALID_CONFIG);
        assert_eq!(
            code_of(&env("ADD"), r#"{"cniVersion":"1.0.0","bridge":"br0"}"#),
            code::INVALID_ENVIRONMENT
        );
        assert_eq!(
            code_of(&env("FROB"), r#"{"cniVersion":"1.0.0","bridge":"br0"}"#),
            code::INVALID_ENVIRONMENT
        );
        let error = CniError::new(code::INVALID_CONFIG, "bad").to_json("1.0.0");
        assert_eq!(error, json!({"cniVersion": "1.0.0", "code": 7, "msg": "bad", "details": ""}));
    }

    #[test]
    fn leases_take_the_first_ipv4_address() {
        let result = json!({"ips": [
            {"address": "fd00::2/64"},
            {"address": "198.18.0.5/24", "gateway": "198.18.0.1"},
        ]});
        let l = lease(&result).unwrap().unwrap();
        assert_eq!(
            (l.address.as_str(), l.gateway.as_deref(), l.ip),
            ("198.18.0.5/24", Some("198.18.0.1"), [198, 18, 0, 5])
        );
        assert!(lease(&json!({"ips": [{"address": "fd00::2/64"}]})).is_err());
        assert!(lease(&json!({})).unwrap().is_none());
        assert_eq!(mac_from_id("abc"), mac_from_id("abc"));
        assert_ne!(mac_from_id("abc"), mac_from_id("abd"));
    }

    fn attached(ip: &str, gateway: Option<&str>) -> AttachedView {
        AttachedView {
            port: "vethc1a2b3".into(),
            ip: ip.into(),
            mac: "02:42:c6:12:64:05".into(),
            gateway: gateway.map(str::to_owned),
            mtu: 1450,
        }
    }

    #[test]
    fn overlay_results_come_from_what_vswitchd_gave() {
        let a = attached("198.18.100.5/24", Some("198.18.100.1"));
        let result = overlay_result("1.0.0", "ovl", "eth0", "/run/netns/c1", &a).unwrap();
        assert_eq!(
            result,
            json!({
                "cniVersion": "1.0.0",
                "interfaces": [
                    { "name": "ovl" },
                    { "name": "vethc1a2b3" },
                    { "name": "eth0", "mac": "02:42:c6:12:64:05", "sandbox": "/run/netns/c1" },
                ],
                "ips": [{ "address": "198.18.100.5/24", "gateway": "198.18.100.1", "interface": 2 }],
                "routes": [{ "dst": "0.0.0.0/0", "gw": "198.18.100.1" }],
                "dns": {},
            })
        );

        // No gateway: no default route; 0.3.x and 0.4.0 name the IP version.
        let a = attached("198.18.100.6/24", None);
        let result = overlay_result("0.4.0", "ovl", "net1", "/proc/42/ns/net", &a).unwrap();
        assert_eq!(result["cniVersion"], "0.4.0");
        assert_eq!(result["ips"], json!([{ "address": "198.18.100.6/24", "interface": 2, "version": "4" }]));
        assert_eq!(result["routes"], json!([]));
        assert_eq!(result["interfaces"][2]["name"], "net1");
        assert_eq!(result["interfaces"][2]["sandbox"], "/proc/42/ns/net");
    }

    #[test]
    fn overlay_results_refuse_an_answer_that_is_not_an_address() {
        for ip in ["198.18.100.5", "x/24", "198.18.100.5/33", "198.18.100.5/", "fd00::5/64", ""] {
            let error = overlay_result("1.0.0", "ovl", "eth0", "/n", &attached(ip, None)).unwrap_err();
            assert_eq!(error.code, code::IO_FAILURE, "{ip:?}");
            assert!(error.msg.contains("A.B.C.D/N"), "{ip:?}: {}", error.msg);
        }
        let error = overlay_result("1.0.0", "ovl", "eth0", "/n", &attached("198.18.100.5/24", Some("gw")))
            .unwrap_err();
        assert_eq!(error.code, code::IO_FAILURE);
        let mut nameless = attached("198.18.100.5/24", None);
        nameless.port.clear();
        assert!(overlay_result("1.0.0", "ovl", "eth0", "/n", &nameless).is_err());
    }

    #[test]
    fn ip_entries_name_the_version_only_before_1_0_0() {
        assert_eq!(
            ip_config("1.0.0", "198.18.0.2/24", Some("198.18.0.1")),
            json!({ "address": "198.18.0.2/24", "gateway": "198.18.0.1", "interface": 2 })
        );
        assert_eq!(
            ip_config("0.3.1", "198.18.0.2/24", None),
            json!({ "address": "198.18.0.2/24", "interface": 2, "version": "4" })
        );
    }
}
