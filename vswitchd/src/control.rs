//! The control socket: newline-delimited JSON-RPC from `vsctl` and scripts.
//!
//! [`Session`] is the protocol without the socket: it frames nothing and
//! awaits nothing, it turns one received line into either a reply or a
//! method to run, so that every malformed input can be tested (and
//! property-tested) without a daemon. [`serve`] puts it on a Unix socket:
//! one task per client, lines bounded by [`MAX_MESSAGE_BYTES`], at most
//! [`MAX_CLIENTS`] clients at once (the next is told the daemon is busy),
//! each admitted first by the kernel's credentials of the peer, and each
//! transaction's files checked against them (see [`crate::access`]).
//!
//! Transactions are serialized by the lock on the configuration. A
//! transaction's devices are opened, then the new configuration is saved,
//! then the datapath switches to it, and only then is the client answered:
//! an acknowledged change is on disk and in force.

use std::net::Ipv4Addr;
use std::sync::{Arc, Weak};

use base64::Engine;
use proto::{
    Command, CommandResult, ErrorCode, Hello, HelloReply, Method, Replay, Request, Response, RpcError,
    TransactReply, MAX_MESSAGE_BYTES, PROTOCOL_VERSION,
};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Mutex, Semaphore};

use crate::access::{Access, Peer};
use crate::config::{ClusterConfig, Config, Database, LiveQuery, Outcome};
use crate::datapath::{Datapath, DatapathHandle, NewDevices};
use crate::netns;
use crate::overlay::store::{BoxFuture, Cluster, Reconciler};
use crate::overlay::{self, EndpointRecord, NetworkRecord};
use crate::ports;

pub const MAX_CLIENTS: usize = 256;

/// Runs blocking work (files, fsync, netlink threads) off the async workers.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work).await.expect("blocking control-plane work does not panic")
}

fn server_name() -> String {
    format!("vswitchd {}", env!("CARGO_PKG_VERSION"))
}

/// What to do with one received line.
#[derive(Debug)]
pub enum Step {
    Reply(Response),
    Call { id: Value, method: Method },
}

/// One client's protocol state: whether it has said hello.
#[derive(Debug, Default)]
pub struct Session {
    greeted: bool,
}

impl Session {
    pub fn handle_line(&mut self, line: &[u8]) -> Step {
        let fail =
            |id: Value, code, message: String| Step::Reply(Response::err(id, RpcError::new(code, message)));
        let value: Value = match serde_json::from_slice(line) {
            Ok(v) => v,
            Err(e) => {
                return fail(Value::Null, ErrorCode::ParseError, format!("the request is not JSON: {e}"))
            }
        };
        let id = value.get("id").cloned().unwrap_or(Value::Null);
        let request: Request = match serde_json::from_value(value) {
            Ok(r) => r,
            Err(e) => {
                return fail(
                    id,
                    ErrorCode::InvalidRequest,
                    format!("not a JSON-RPC request ({e}): send {{\"jsonrpc\":\"2.0\",\"id\":N,\"method\":...,\"params\":...}}"),
                )
            }
        };
        if request.jsonrpc != "2.0" {
            return fail(
                id,
                ErrorCode::InvalidRequest,
                format!("jsonrpc must be \"2.0\", not {:?}", request.jsonrpc),
            );
        }
        let method = match Method::from_request(&request) {
            Ok(m) => m,
            Err(e) => return Step::Reply(Response::err(id, e)),
        };
        match method {
            Method::Hello(Hello { protocol, .. }) => {
                if protocol != PROTOCOL_VERSION {
                    return fail(
                        id,
                        ErrorCode::VersionMismatch,
                        format!(
                            "this daemon speaks protocol {PROTOCOL_VERSION}, the client {protocol}: use the vsctl that came with this vswitchd"
                        ),
                    );
                }
                self.greeted = true;
                let reply = HelloReply { protocol: PROTOCOL_VERSION, server: server_name() };
                Step::Reply(Response::ok(id, serde_json::to_value(reply).expect("serializes")))
            }
            _ if !self.greeted => fail(
                id,
                ErrorCode::HandshakeRequired,
                "say hello first: {\"method\":\"hello\",\"params\":{\"protocol\":1,\"client\":\"...\"}}"
                    .into(),
            ),
            method => Step::Call { id, method },
        }
    }
}

/// The daemon's state as the control plane sees it.
pub struct Control {
    config: Mutex<Config>,
    db: Database,
    datapath: DatapathHandle,
    access: Access,
    /// The cluster this host is a member of, and the task keeping its
    /// session with the store.
    cluster: std::sync::Mutex<Option<(Arc<Cluster>, tokio::task::JoinHandle<()>)>>,
    /// The overlay conflicts last logged, so a watch event does not repeat them.
    conflicts: std::sync::Mutex<Vec<String>>,
    me: Weak<Control>,
}

impl Drop for Control {
    fn drop(&mut self) {
        if let Some((_, task)) = self.cluster.get_mut().ok().and_then(Option::take) {
            task.abort();
        }
    }
}

/// Container ports that left the configuration, whichever change removed
/// them (del-container-port, del-port, del-br, an overlay network deleted
/// on another host): their veth pairs were made by us and go with them.
async fn detach_gone_container_ports(old: &Config, new: &Config) {
    let kept: Vec<String> = new.container_ports().into_iter().map(|(_, port, _)| port).collect();
    let gone = old.container_ports().into_iter().map(|(_, port, _)| port).filter(|port| !kept.contains(port));
    for host in gone.collect::<Vec<_>>() {
        if let Err(e) = blocking(move || netns::detach(&host)).await {
            tracing::warn!("{e}");
        }
    }
}

fn no_cluster() -> RpcError {
    RpcError::new(
        ErrorCode::InvalidValue,
        "this host is in no cluster: start vswitchd with --cluster-store etcd://HOST:PORT --cluster-advertise IP, or run `vsctl set-cluster etcd://HOST:PORT --advertise IP`",
    )
}

/// An overlay container's `--ip`: an address, with the subnet's prefix if any.
fn overlay_address(ip: &str, network: &NetworkRecord) -> Result<Ipv4Addr, RpcError> {
    let bad = |why: String| RpcError::new(ErrorCode::InvalidValue, format!("--ip {ip:?}: {why}"));
    let (addr, prefix) = match ip.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (ip, None),
    };
    let addr: Ipv4Addr = addr.parse().map_err(|_| bad("not an IPv4 address".into()))?;
    if prefix.is_some_and(|p| p.parse::<u8>() != Ok(network.subnet.prefix)) {
        return Err(bad(format!("the network's subnet is {}", network.subnet)));
    }
    Ok(addr)
}

impl Reconciler for Control {
    fn reconcile(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.reconcile_overlays())
    }

    fn local_endpoints(&self) -> BoxFuture<'_, Vec<(String, EndpointRecord)>> {
        Box::pin(async {
            let Some(local) = self.cluster().map(|c| c.local()) else { return Vec::new() };
            overlay::local_endpoints(&*self.config.lock().await, local)
        })
    }
}

impl Control {
    /// Makes the overlay bridges match what the cluster store holds.
    async fn reconcile_overlays(&self) {
        let Some(cluster) = self.cluster() else { return };
        let mut current = self.config.lock().await;
        // The view as it is now, read under the lock: a transaction that
        // held the lock may have changed it meanwhile.
        let (next, conflicts) = overlay::reconcile(&current, &cluster.view(), cluster.local());
        let conflicts: Vec<String> = conflicts.into_iter().map(|c| c.0).collect();
        {
            let mut logged = self.conflicts.lock().expect("conflicts lock");
            for c in conflicts.iter().filter(|c| !logged.contains(c)) {
                tracing::warn!("{c}");
            }
            *logged = conflicts;
        }
        if next == *current {
            return;
        }
        match self.commit(&current, &next).await {
            Ok(()) => {
                let old = std::mem::replace(&mut *current, next);
                detach_gone_container_ports(&old, &current).await;
                self.after_commit(&old, &current).await;
            }
            Err(e) => tracing::warn!("cannot apply the overlay networks from the cluster store: {e}"),
        }
    }
}

impl Control {
    /// Starts with `config` in force: opens its devices (a device that fails
    /// to open becomes an unavailable port that says why) and hands them to
    /// the datapath.
    pub async fn start(
        config: Config,
        db: Database,
        datapath: DatapathHandle,
        access: Access,
    ) -> Result<Arc<Control>, RpcError> {
        let mut devices = NewDevices::new();
        for (bridge, port, interface) in Datapath::ports_needing_devices(&Config::default(), &config) {
            let device = ports::open(&port, &interface).unwrap_or_else(|e| {
                tracing::warn!("{}", e.message);
                Box::new(ports::Unavailable::new(e.message))
            });
            devices.insert((bridge, port), device);
        }
        datapath.reconfigure(&config, devices).await?;
        let cluster = config.cluster.clone();
        let control = Arc::new_cyclic(|me| Control {
            config: Mutex::new(config),
            db,
            datapath,
            access,
            cluster: std::sync::Mutex::new(None),
            conflicts: std::sync::Mutex::new(Vec::new()),
            me: me.clone(),
        });
        control.join_cluster(cluster).await;
        Ok(control)
    }

    fn cluster(&self) -> Option<Arc<Cluster>> {
        self.cluster.lock().expect("cluster lock").as_ref().map(|(c, _)| c.clone())
    }

    /// Leaves the current cluster, if any, and joins `settings`' one.
    async fn join_cluster(&self, settings: Option<ClusterConfig>) {
        let previous = self.cluster.lock().expect("cluster lock").take();
        if let Some((_, task)) = previous {
            task.abort();
        }
        let Some(settings) = settings else { return };
        let store = settings.describe();
        match Cluster::connect(settings).await {
            Ok(cluster) => {
                tracing::info!(%store, advertise = %cluster.local(), "joining the cluster");
                let task = tokio::spawn(cluster.clone().run(self.me.clone()));
                *self.cluster.lock().expect("cluster lock") = Some((cluster, task));
            }
            Err(e) => tracing::error!("{e}"),
        }
    }

    /// What a committed change means outside this host: endpoints of
    /// overlay containers that came are published, those that went are
    /// withdrawn and their addresses given back; a changed cluster
    /// setting is joined.
    async fn after_commit(&self, old: &Config, new: &Config) {
        if old.cluster != new.cluster {
            self.join_cluster(new.cluster.clone()).await;
            return;
        }
        let Some(cluster) = self.cluster() else { return };
        let before = overlay::local_endpoints(old, cluster.local());
        let after = overlay::local_endpoints(new, cluster.local());
        for (network, endpoint) in after.iter().filter(|e| !before.contains(e)) {
            if let Err(e) = cluster.publish(network, endpoint).await {
                tracing::warn!(%network, ip = %endpoint.ip, "endpoint not published yet (it will be when the store is back): {e}");
            }
        }
        for (network, endpoint) in before.iter().filter(|e| !after.contains(e)) {
            if let Err(e) = cluster.release(network, endpoint.ip).await {
                tracing::warn!(%network, ip = %endpoint.ip, "cannot give the address back: {e}");
            }
        }
    }

    /// The overlay part of `show` and `list-overlays`: every network the
    /// store has or this host still runs (the store may be out of reach),
    /// with the peers installed here.
    fn overlay_views(&self, config: &Config) -> Vec<proto::OverlayView> {
        let Some(cluster) = self.cluster() else { return Vec::new() };
        let (view, status, local) = (cluster.view(), cluster.status(), cluster.local());
        let local_endpoints = overlay::local_endpoints(config, local);
        let mut names: std::collections::BTreeSet<&String> = view.networks.keys().collect();
        names.extend(config.bridges.iter().filter(|(_, b)| b.overlay.is_some()).map(|(n, _)| n));
        names
            .into_iter()
            .filter_map(|name| {
                let bridge = config.bridges.get(name).filter(|b| b.overlay.is_some());
                let binding = bridge.and_then(|b| b.overlay.as_ref());
                let (subnet, vni, gateway, mtu) = match (view.networks.get(name), binding) {
                    (Some(n), _) => (n.subnet.to_string(), n.vni, n.gateway, n.mtu),
                    (None, Some(b)) => (b.subnet.clone(), b.vni, b.gateway, b.mtu),
                    (None, None) => return None,
                };
                let mut peers: std::collections::BTreeMap<&str, proto::OverlayPeer> = Default::default();
                for remote in binding.iter().flat_map(|b| &b.remote) {
                    let host = bridge
                        .and_then(|b| b.ports.get(&remote.port))
                        .and_then(|p| p.external_ids.get(overlay::OVERLAY_PEER))
                        .cloned()
                        .unwrap_or_default();
                    let peer = peers.entry(remote.port.as_str()).or_insert_with(|| proto::OverlayPeer {
                        host,
                        port: remote.port.clone(),
                        endpoints: Vec::new(),
                    });
                    peer.endpoints.push(format!("{} {}", remote.ip, remote.mac));
                }
                Some(proto::OverlayView {
                    name: name.clone(),
                    subnet,
                    vni,
                    gateway: gateway.map(|g| g.to_string()),
                    mtu,
                    local_bridge: bridge.is_some(),
                    store: status.clone(),
                    local_endpoints: local_endpoints
                        .iter()
                        .filter(|(n, _)| n == name)
                        .map(|(_, e)| format!("{} {}", e.ip, e.mac))
                        .collect(),
                    peers: peers.into_values().collect(),
                })
            })
            .collect()
    }

    /// Whether `peer` may use the control socket.
    pub fn admit(&self, peer: &Peer) -> Result<(), RpcError> {
        self.access.admit(peer)
    }

    pub async fn execute(&self, method: Method, peer: &Peer) -> Result<Value, RpcError> {
        let value = match method {
            Method::Hello(_) => unreachable!("the session answers hello"),
            Method::Transact(t) => serde_json::to_value(self.transact(t.commands, peer).await?),
            Method::Replay(r) => serde_json::to_value(self.replay(r).await?),
            Method::TimeWarp(w) => {
                let msecs = w.msecs;
                self.datapath.run(move |dp| dp.time_warp(msecs)).await?;
                Ok(Value::Null)
            }
        };
        Ok(value.expect("results serialize"))
    }

    async fn transact(&self, commands: Vec<Command>, peer: &Peer) -> Result<TransactReply, RpcError> {
        let mut current = self.config.lock().await;
        let mut working = current.clone();
        let mut attached = Vec::new();
        let mut allocated = Vec::new();
        let mut created = Vec::new();
        let prepared = self
            .prepare(&mut working, &commands, &mut attached, &mut allocated, &mut created)
            .await
            .and_then(|outcomes| self.access.check_devices(peer, &current, &working).map(|()| outcomes));
        let committed = match prepared {
            Ok(outcomes) if working == *current => Ok(outcomes),
            Ok(outcomes) => self.commit(&current, &working).await.map(|()| outcomes),
            Err(e) => Err(e),
        };
        let outcomes = match committed {
            Ok(outcomes) => outcomes,
            Err(e) => {
                // Undo what the transaction created outside the configuration.
                for host in attached {
                    let _ = blocking(move || netns::detach(&host)).await;
                }
                if let Some(cluster) = self.cluster() {
                    for (network, ip) in allocated {
                        let _ = cluster.release(&network, ip).await;
                    }
                    for network in created {
                        let _ = cluster.delete_network(&network, true).await;
                    }
                }
                return Err(e);
            }
        };
        let old = std::mem::replace(&mut *current, working);
        detach_gone_container_ports(&old, &current).await;
        self.after_commit(&old, &current).await;
        let mut results = Vec::with_capacity(outcomes.len());
        for outcome in outcomes {
            results.push(match outcome {
                Outcome::Done(result) => result,
                Outcome::Live(query) => self.live(&current, *query).await?,
            });
        }
        Ok(TransactReply { results })
    }

    /// Applies the commands to `working`. `add-container-port` acts on the
    /// system too: the pairs it creates are listed in `attached`, to be
    /// deleted if the transaction fails.
    /// Overlay commands also act on the cluster store: the addresses they
    /// take and the networks they create are listed in `allocated` and
    /// `created`, to be given back if the transaction fails. (A network
    /// deleted by `del-overlay` is gone from the store whatever follows.)
    async fn prepare(
        &self,
        working: &mut Config,
        commands: &[Command],
        attached: &mut Vec<String>,
        allocated: &mut Vec<(String, Ipv4Addr)>,
        created: &mut Vec<String>,
    ) -> Result<Vec<Outcome>, RpcError> {
        let mut outcomes = Vec::with_capacity(commands.len());
        for command in commands {
            match command {
                Command::AddOverlay { name, subnet, vni, gateway, mtu, may_exist } => {
                    let cluster = self.cluster().ok_or_else(no_cluster)?;
                    let network = NetworkRecord::new(name, subnet, *vni, gateway.as_deref(), *mtu)
                        .map_err(|e| RpcError::new(ErrorCode::InvalidValue, e))?;
                    if cluster.create_network(name, network, *may_exist).await?.1 {
                        created.push(name.clone());
                    }
                    self.reconcile_working(working, &cluster, name)?;
                    outcomes.push(Outcome::Done(CommandResult::Done));
                }
                Command::DelOverlay { name, if_exists } => {
                    let cluster = self.cluster().ok_or_else(no_cluster)?;
                    cluster.delete_network(name, *if_exists).await?;
                    self.reconcile_working(working, &cluster, name)?;
                    outcomes.push(Outcome::Done(CommandResult::Done));
                }
                Command::ListOverlays => {
                    if self.cluster().is_none() {
                        return Err(no_cluster());
                    }
                    outcomes.push(Outcome::Done(CommandResult::Overlays(self.overlay_views(working))));
                }
                Command::AddContainerPort { bridge, ip, gateway, mac, mtu, container_id, .. }
                    if working.bridges.get(bridge).is_some_and(|b| b.overlay.is_some()) =>
                {
                    let cluster = self.cluster().ok_or_else(no_cluster)?;
                    let binding = working.bridges[bridge].overlay.clone().expect("checked");
                    let network = NetworkRecord {
                        subnet: overlay::Subnet::parse(&binding.subnet)
                            .map_err(|e| RpcError::new(ErrorCode::Internal, e))?,
                        vni: binding.vni,
                        gateway: binding.gateway,
                        mtu: binding.mtu,
                    };
                    let requested = ip.as_deref().map(|ip| overlay_address(ip, &network)).transpose()?;
                    let address = cluster.allocate(bridge, &network, requested).await?;
                    allocated.push((bridge.clone(), address));
                    let mac = mac.clone().unwrap_or_else(|| overlay::container_mac(address));
                    let gateway = gateway.clone().or(network.gateway.map(|g| g.to_string()));
                    let mtu = mtu.unwrap_or(network.mtu);
                    let ip = format!("{address}/{}", network.subnet.prefix);
                    let mut filled = command.clone();
                    if let Command::AddContainerPort { ip: i, gateway: g, mac: m, mtu: t, .. } = &mut filled {
                        (*i, *g, *m, *t) = (Some(ip.clone()), gateway.clone(), Some(mac.clone()), Some(mtu));
                    }
                    let port = self.attach(working, &filled, container_id.as_deref(), attached).await?;
                    outcomes.push(Outcome::Done(CommandResult::Attached(proto::AttachedView {
                        port,
                        ip,
                        mac,
                        gateway,
                        mtu,
                    })));
                }
                Command::AddContainerPort { container_id, .. } => {
                    self.attach(working, command, container_id.as_deref(), attached).await?;
                    outcomes.push(Outcome::Done(CommandResult::Done));
                }
                Command::DelContainerPort { bridge, ifname, netns: ns, if_exists } => {
                    if !working.bridges.contains_key(bridge) {
                        return Err(RpcError::new(ErrorCode::NotFound, format!("no bridge named {bridge}")));
                    }
                    match working.container_port(bridge, ifname, ns).map(str::to_owned) {
                        Some(port) => working.remove_port(&port),
                        None if *if_exists => {}
                        None => {
                            return Err(RpcError::new(
                                ErrorCode::NotFound,
                                format!("no interface {ifname} of namespace {ns} is attached to {bridge}"),
                            ))
                        }
                    }
                    outcomes.push(Outcome::Done(CommandResult::Done));
                }
                _ => outcomes.push(working.apply(command)?),
            }
        }
        Ok(outcomes)
    }

    /// `add-container-port`: a veth pair into the namespace, its host end a
    /// port of the bridge. Returns the port's name.
    async fn attach(
        &self,
        working: &mut Config,
        command: &Command,
        container_id: Option<&str>,
        attached: &mut Vec<String>,
    ) -> Result<String, RpcError> {
        let Command::AddContainerPort { bridge, .. } = command else {
            return Err(RpcError::new(ErrorCode::Internal, "not an add-container-port"));
        };
        let (attachment, tag) = working.check_container_port(command)?;
        let host = netns::host_name(&attachment.netns, &attachment.ifname, |n| {
            working.port_bridge(n).is_some() || working.bridges.contains_key(n)
        });
        let (h, a) = (host.clone(), attachment.clone());
        blocking(move || netns::attach(&h, &a))
            .await
            .map_err(|e| RpcError::new(ErrorCode::InvalidValue, e))?;
        attached.push(host.clone());
        working.add_container_port(bridge, &host, &attachment, tag, container_id)?;
        Ok(host)
    }

    /// Brings `working` in line with the cluster's view after an overlay
    /// command changed it; a conflict about `network` fails the command.
    fn reconcile_working(
        &self,
        working: &mut Config,
        cluster: &Cluster,
        network: &str,
    ) -> Result<(), RpcError> {
        let (next, conflicts) =
            overlay::reconcile_only(working, &cluster.view(), cluster.local(), Some(network));
        if let Some(conflict) = conflicts.into_iter().next() {
            return Err(RpcError::new(ErrorCode::AlreadyExists, conflict.0));
        }
        *working = next;
        Ok(())
    }

    /// Makes `new` the configuration in force: opens the devices it needs,
    /// saves it, and switches the datapath to it. Fails before the switch,
    /// leaving the datapath and the file as they were.
    async fn commit(&self, old: &Config, new: &Config) -> Result<(), RpcError> {
        let needed = Datapath::ports_needing_devices(old, new);
        let db = self.db.clone();
        let saved = new.clone();
        let devices = blocking(move || -> Result<NewDevices, RpcError> {
            let mut devices = NewDevices::new();
            for (bridge, port, interface) in needed {
                let device = ports::open(&port, &interface)?;
                devices.insert((bridge, port), device);
            }
            db.save(&saved).map_err(|e| RpcError::new(ErrorCode::Io, e))?;
            Ok(devices)
        })
        .await?;
        self.datapath.reconfigure(new, devices).await
    }

    /// Removes, about once a second, container ports whose interface has
    /// gone (their namespace was deleted, or the pair was): nothing stale
    /// stays in `show`, and the kernel already deleted both veth ends.
    pub async fn watch_containers(self: Arc<Self>) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let mut current = self.config.lock().await;
            let gone: Vec<(String, String, String)> = current
                .container_ports()
                .into_iter()
                .filter(|(_, port, _)| ports::sys::ifindex(port).is_none())
                .collect();
            if gone.is_empty() {
                continue;
            }
            let mut working = current.clone();
            for (_, port, _) in &gone {
                working.remove_port(port);
            }
            match self.commit(&current, &working).await {
                Ok(()) => {
                    let old = std::mem::replace(&mut *current, working);
                    for (bridge, port, ns) in gone {
                        tracing::info!("removed port {port} from {bridge}: its container interface (namespace {ns}) is gone");
                    }
                    self.after_commit(&old, &current).await;
                }
                Err(e) => tracing::warn!("cannot remove the ports of vanished containers: {e}"),
            }
        }
    }
    async fn live(&self, config: &Config, query: LiveQuery) -> Result<CommandResult, RpcError> {
        let mut result = self.datapath.run(move |dp| dp.answer(query)).await?;
        // What the datapath cannot know: the overlays' state in the
        // cluster store, and the process's memory.
        match &mut result {
            CommandResult::Show(views) => {
                let mut overlays = self.overlay_views(config);
                for bridge in views {
                    if config.bridges.get(&bridge.name).is_some_and(|b| b.overlay.is_some()) {
                        bridge.overlay = overlays
                            .iter()
                            .position(|o| o.name == bridge.name)
                            .map(|i| overlays.swap_remove(i));
                    }
                }
            }
            CommandResult::Memory(view) => crate::memory::fill_process_figures(view),
            _ => {}
        }
        Ok(result)
    }

    async fn replay(&self, replay: Replay) -> Result<proto::ReplayReply, RpcError> {
        let engine = base64::engine::general_purpose::STANDARD;
        let frames = replay
            .frames
            .iter()
            .enumerate()
            .map(|(i, f)| {
                engine.decode(f).map_err(|e| {
                    RpcError::new(
                        ErrorCode::InvalidParams,
                        format!("frame {} is not valid base64: {e}", i + 1),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (bridge, port) = (replay.bridge, replay.port);
        self.datapath.run(move |dp| dp.inject(&bridge, &port, frames)).await?
    }
}

/// Accepts clients until `shutdown` resolves.
pub async fn serve(
    listener: UnixListener,
    control: Arc<Control>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("accept on the control socket failed: {e}");
                    // EMFILE and friends: give clients time to go away.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let control = control.clone();
        match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                tokio::spawn(async move {
                    serve_client(stream, &control).await;
                    drop(slot);
                });
            }
            Err(_) => {
                tokio::spawn(async move {
                    let busy = RpcError::new(
                        ErrorCode::Busy,
                        format!("vswitchd already serves {MAX_CLIENTS} clients; try again shortly"),
                    );
                    let mut stream = stream;
                    let _ = write_response(&mut stream, &Response::err(Value::Null, busy)).await;
                });
            }
        }
    }
}

async fn write_response(
    stream: &mut (impl AsyncWriteExt + Unpin),
    response: &Response,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(response).expect("responses serialize");
    line.push(b'\n');
    stream.write_all(&line).await
}

async fn serve_client(mut stream: UnixStream, control: &Control) {
    let admitted = Peer::of(&stream)
        .map_err(|e| RpcError::new(ErrorCode::Internal, format!("cannot tell who connected: {e}")))
        .and_then(|peer| control.admit(&peer).map(|()| peer));
    let peer = match admitted {
        Ok(peer) => peer,
        Err(refused) => {
            tracing::warn!("refused a control client: {}", refused.message);
            // The refusal answers the client's first request (bounded in
            // size and time): a client still writing it would otherwise
            // see a broken pipe instead of the reason.
            let mut first = Vec::new();
            let mut reader = BufReader::new(&mut stream).take(4096);
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(2), reader.read_until(b'\n', &mut first))
                    .await;
            let id = serde_json::from_slice::<Value>(&first)
                .ok()
                .and_then(|request| request.get("id").cloned())
                .unwrap_or(Value::Null);
            let _ = write_response(&mut stream, &Response::err(id, refused)).await;
            return;
        }
    };
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut session = Session::default();
    let mut line = Vec::new();
    loop {
        line.clear();
        let limit = MAX_MESSAGE_BYTES as u64 + 1;
        match (&mut reader).take(limit).read_until(b'\n', &mut line).await {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                tracing::debug!("control client read failed: {e}");
                return;
            }
        }
        if line.last() != Some(&b'\n') {
            if line.len() > MAX_MESSAGE_BYTES {
                let error = RpcError::new(
                    ErrorCode::RequestTooLarge,
                    format!("request larger than {MAX_MESSAGE_BYTES} bytes; split it (vsctl replay does)"),
                );
                let _ = write_response(&mut write, &Response::err(Value::Null, error)).await;
            }
            // Too large, or the client left mid-line: nothing more can be framed.
            return;
        }
        line.pop();
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let response = match session.handle_line(&line) {
            Step::Reply(response) => response,
            Step::Call { id, method } => match control.execute(method, &peer).await {
                Ok(result) => Response::ok(id, result),
                Err(error) => Response::err(id, error),
            },
        };
        if write_response(&mut write, &response).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn error_code(step: Step) -> Option<i64> {
        match step {
            Step::Reply(r) => r.error.map(|e| e.code),
            Step::Call { .. } => None,
        }
    }

    #[test]
    fn methods_wait_for_hello() {
        let mut s = Session::default();
        let warp = br#"{"jsonrpc":"2.0","id":1,"method":"time_warp","params":{"msecs":1}}"#;
        assert_eq!(error_code(s.handle_line(warp)), Some(ErrorCode::HandshakeRequired.code()));
        let old = br#"{"jsonrpc":"2.0","id":2,"method":"hello","params":{"protocol":0,"client":"t"}}"#;
        assert_eq!(error_code(s.handle_line(old)), Some(ErrorCode::VersionMismatch.code()));
        let hello = br#"{"jsonrpc":"2.0","id":3,"method":"hello","params":{"protocol":1,"client":"t"}}"#;
        assert_eq!(error_code(s.handle_line(hello)), None);
        assert!(matches!(s.handle_line(warp), Step::Call { .. }));
    }

    #[test]
    fn malformed_lines_get_the_right_errors() {
        let mut s = Session::default();
        assert_eq!(error_code(s.handle_line(b"{nope")), Some(ErrorCode::ParseError.code()));
        assert_eq!(error_code(s.handle_line(b"[1,2]")), Some(ErrorCode::InvalidRequest.code()));
        let v1 = br#"{"jsonrpc":"1.0","id":1,"method":"hello","params":{}}"#;
        assert_eq!(error_code(s.handle_line(v1)), Some(ErrorCode::InvalidRequest.code()));
        let unknown = br#"{"jsonrpc":"2.0","id":1,"method":"reboot"}"#;
        assert_eq!(error_code(s.handle_line(unknown)), Some(ErrorCode::MethodNotFound.code()));
    }

    proptest! {
        // Whatever arrives, the session answers with an error or hands on a
        // well-typed method; it never panics.
        #[test]
        fn any_bytes_get_an_answer(line in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut s = Session::default();
            let _ = s.handle_line(&line);
        }

        #[test]
        fn any_json_request_shape_gets_an_answer(
            method in "(hello|transact|replay|time_warp|[a-z]{0,8})",
            params in prop_oneof![
                Just(serde_json::json!(null)),
                Just(serde_json::json!({"protocol": 1, "client": "x"})),
                Just(serde_json::json!({"commands": [{"command": "add-br", "bridge": "x"}]})),
                Just(serde_json::json!({"commands": [{"command": "nope"}]})),
                Just(serde_json::json!({"bridge": "b", "port": "p", "frames": ["!!"]})),
                any::<i64>().prop_map(|n| serde_json::json!({"msecs": n})),
            ],
        ) {
            let mut s = Session { greeted: true };
            let line = serde_json::to_vec(&serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})).unwrap();
            let _ = s.handle_line(&line);
        }
    }
}
