//! The forwarding thread: it owns every bridge's core state and every port
//! device, and is the only thread that touches them, so nothing on the
//! per-packet path takes a lock.
//!
//! The loop waits in epoll on every device that can receive and on an
//! eventfd that the control plane signals after queueing a [`Request`]:
//! work the thread runs on the datapath, built by
//! [`DatapathHandle::run`] (a new configuration with the devices opened
//! and the flows compiled for it, frames to inject, or a [`LiveQuery`],
//! which [`Datapath::answer`] turns into the command's result; a new
//! read-only command is one more arm there). Flows are not parsed here:
//! the control plane sends the flows it parsed, its own compiled ones (NAT,
//! an overlay's ARP responder) included. It wakes only when there is work: an idle switch
//! costs nothing. Under load, epoll is level-triggered, so a port with more
//! waiting is reported again at once; each wake takes a few batches from
//! each ready port, round-robin, so no port starves the others. About once
//! a second devices are maintained (a vanished interface goes down, a
//! returning one is reopened).
//!
//! Tunnel sockets are receive sources of their own, not ports: one socket
//! serves every tunnel port of its endpoint, in any bridge. The thread
//! reads the socket and hands the messages to the core's
//! [`TunnelReceiver`], which decapsulates them, finds each packet's port by
//! its source and key, merges TCP segments again, and delivers the frames
//! to their bridges.
//!
//! Requests are handled between batches, in order, which is what makes a
//! replay acknowledged only once every frame has been switched.
//!
//! The clock is a monotonic clock plus a warp offset that only grows
//! (`vsctl time-warp`), so aging can be tested without waiting.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, Sender, TryRecvError};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use proto::{
    BridgeMemory, CommandResult, ConnView, ErrorCode, FdbEntry, FdbStats, FlowView, MegaflowView, MemoryView,
    PortStats, ReplayReply, RpcError, TupleView,
};
use tokio::sync::oneshot;

use crate::config::{CompiledFlows, Config, FlowOp, InterfaceConfig, LiveQuery};
use crate::core::bridge::{Bridge, Packet};
use crate::core::conntrack::{Tuple, PROTO_TCP, PROTO_UDP};
use crate::core::ofproto::flow::format_masked;
use crate::core::ofproto::ofctl::FlowSpec;
use crate::core::packet::{format_mac, Malformation};
use crate::core::tunnel::receive::{Received, TunnelDelivery, TunnelReceiver};
use crate::core::tunnel::{Endpoint, TunnelDrop, TunnelMap, TunnelMeta};
use crate::core::{DropReason, Timestamp};
use crate::ports::tunnel::{TunnelRx, TunnelSocket};
use crate::ports::{PacketBatch, PortDevice, TxQueues, BATCH_SIZE};

/// Devices opened for a new configuration, by (bridge, port).
pub type NewDevices = HashMap<(String, String), Box<dyn PortDevice>>;

/// Each port's error, by (bridge, port); absent while it works.
pub type PortErrors = HashMap<(String, String), String>;

/// Batches taken from one ready port per wake, before the others get a turn.
const BATCHES_PER_WAKE: usize = 4;
/// After traffic, keep polling this long before sleeping: a reply or the
/// next packet arriving meanwhile is taken without a thread wake-up, which
/// on a VM costs 50-60 us (waking a halted vCPU). 5 ms covers traffic as
/// sparse as a ping every 2 ms (peers.sh: ping average 93 us with 200 us
/// of polling, 40 us with 5 ms; the Linux bridge 32 us). Idle, the thread
/// sleeps: 0.1% of a core with ports configured.
///
/// A poll that finds nothing yields the CPU: the threads that make the
/// traffic (a container's TCP stack, iperf3, the kernel's softirq work)
/// often wait for the same core, and spinning past them slows the very
/// flow being polled for. On 2 cores, VXLAN TCP between two vswitchds went
/// from 4.5 to 6.1-6.5 Gbit/s with the yield (benches/tunnels.sh, 2 runs).
///
/// And a yield that took longer than [`CONTENDED_YIELD`] ends the polling
/// until the next traffic: another thread ran meanwhile, so the core is
/// contended, a wake-up costs little (no halted vCPU to wake), and every
/// further poll takes a share of the core from the threads making the
/// traffic (a yield only moves this thread back in the queue). Idle, a
/// yield returns within a few microseconds and polling goes on as before.
/// VXLAN between two vswitchds, three labs, each switching between the
/// rules at run time (3-4 tests of 6 s per rule), medians: TCP 4 streams
/// 6.31, 5.98 and 7.65 Gbit/s always polling, 8.83, 7.36 and 7.88 stopping
/// on a 20 us yield; TCP 1 stream 7.59, 5.79 and 5.40 against 7.12, 6.45
/// and 6.88. With 50 us, the third lab gave 7.44 and 6.86. Never polling
/// did about as well under load, but gives up the latency polling buys
/// on an idle machine.
const POLL_AFTER_TRAFFIC: Duration = Duration::from_millis(5);
/// Longer than a yield with nothing else to run (about 1 us here), and
/// than the brief turn of a thread that wakes and blocks again, such as
/// the ping waiting for the very reply being polled for: with 20 us, ping
/// through the bridge (peers.sh) had a median of 36 us against 20 us
/// before; 50 us kept it near 20 (3 runs each, noisy). Any thread that
/// does real work runs longer.
const CONTENDED_YIELD: Duration = Duration::from_micros(50);
/// Under load (a wake brought at least [`COALESCE_ABOVE`] frames), pause
/// this long before the next wait so that frames gather into bigger
/// batches: fewer system calls per frame, and the CPU saved goes to the
/// hosts on the same cores. A lone frame (a ping) never waits for this.
const COALESCE_PAUSE: Duration = Duration::from_micros(50);
const COALESCE_ABOVE: usize = 8;
const MAINTAIN_EVERY: Duration = Duration::from_secs(1);
const WAKE_TOKEN: u64 = u64::MAX;

/// Work for the forwarding thread, run between batches with the datapath
/// to itself: the one way the control plane reads or changes live state
/// (see [`DatapathHandle::run`]). Requests run in the order they were
/// sent, which is what makes a replay acknowledged only once every frame
/// has been switched.
pub type Request = Box<dyn FnOnce(&mut Datapath) + Send>;

struct PortRuntime {
    ofport: u16,
    device: Box<dyn PortDevice>,
}

struct BridgeRuntime {
    core: Bridge,
    ports: BTreeMap<String, PortRuntime>,
}

/// A tunnel socket and the ports, as (bridge, OpenFlow port), it serves.
struct TunnelEndpoint {
    socket: Arc<TunnelSocket>,
    ports: TunnelMap<(String, u16)>,
}

/// What a descriptor in the epoll set belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Port(String, String),
    Tunnel(Endpoint),
}

/// Frames out of a tunnel this large are sent as soon as they are
/// switched, which spares a 64 KiB copy into the queues per merged frame
/// for one more system call (frames queued before them go first).
const SEND_AT_ONCE_FROM: usize = 16 * 1024;

/// Where frames taken out of tunnels go: their bridge, switched there,
/// each bridge's queues sent before another bridge's frames are queued.
struct TunnelSink<'a> {
    bridges: &'a mut BTreeMap<String, BridgeRuntime>,
    tx: &'a mut TxQueues,
    current: Option<String>,
    now: Timestamp,
    /// Where drops are counted: the endpoint's socket.
    socket: &'a TunnelSocket,
}

impl TunnelDelivery<(String, u16)> for TunnelSink<'_> {
    fn deliver(&mut self, (bridge, ofport): &(String, u16), meta: &TunnelMeta, packet: Packet<'_>) {
        let (bridge, ofport) = (bridge.as_str(), *ofport);
        if self.current.as_deref() != Some(bridge) {
            if let Some(previous) = self.current.take().and_then(|c| self.bridges.get_mut(&c)) {
                Datapath::transmit_queued(previous, self.tx, &[]);
            }
            self.current = Some(bridge.to_owned());
            if let Some(runtime) = self.bridges.get_mut(bridge) {
                runtime.core.tick(self.now);
            }
        }
        if let Some(runtime) = self.bridges.get_mut(bridge) {
            // A large frame (merged by GRO, or a whole super-frame) is sent
            // at once, queued by reference: never copied. It lives only
            // until the next delivery.
            let data = packet.data;
            let large = data.len() >= SEND_AT_ONCE_FROM;
            if large {
                self.tx.lend_bytes(data);
            }
            runtime.core.receive_tunneled(self.now, ofport, packet, meta, self.tx);
            if large {
                Datapath::transmit_queued(runtime, self.tx, data);
            }
        }
    }

    fn dropped(&mut self, reason: TunnelDrop) {
        self.socket.count(reason);
    }
}

impl TunnelSink<'_> {
    fn finish(self) {
        if let Some(runtime) = self.current.and_then(|c| self.bridges.get_mut(&c)) {
            Datapath::transmit_queued(runtime, self.tx, &[]);
        }
    }
}

pub struct Datapath {
    bridges: BTreeMap<String, BridgeRuntime>,
    origin: Instant,
    warp_ms: u64,
    tx: TxQueues,
    rx: PacketBatch,
    tunnels: BTreeMap<Endpoint, TunnelEndpoint>,
    /// Allocated with the first tunnel port.
    tunnel_rx: Option<Box<TunnelRx>>,
    /// Decapsulates and merges what tunnel sockets receive; its ports are
    /// (bridge, OpenFlow port).
    tunnel_receiver: TunnelReceiver<(String, u16)>,
    /// Set when devices came or went, so that the loop brings its epoll
    /// set up to date.
    devices_changed: bool,
    /// The configuration running: the last one [`Datapath::reconfigure`]
    /// was given.
    config: Arc<Config>,
}

impl Default for Datapath {
    fn default() -> Self {
        Datapath {
            bridges: BTreeMap::new(),
            origin: Instant::now(),
            warp_ms: 0,
            tx: TxQueues::default(),
            rx: PacketBatch::default(),
            tunnels: BTreeMap::new(),
            tunnel_rx: None,
            tunnel_receiver: TunnelReceiver::default(),
            devices_changed: false,
            config: Arc::default(),
        }
    }
}

fn not_found(message: String) -> RpcError {
    RpcError::new(ErrorCode::NotFound, message)
}

impl Datapath {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.origin.elapsed().as_millis() as u64 + self.warp_ms)
    }

    /// Makes the running state match `config`, installing the devices that
    /// were opened for it, then receives what new devices already hold.
    pub fn reconfigure(
        &mut self,
        config: Arc<Config>,
        mut compiled: BTreeMap<String, Vec<CompiledFlows>>,
        mut devices: NewDevices,
    ) {
        let now = self.now();
        self.devices_changed = true;
        self.config = config.clone();
        self.bridges.retain(|name, _| config.bridges.contains_key(name));
        for (bname, bconfig) in &config.bridges {
            let runtime = self.bridges.entry(bname.clone()).or_insert_with(|| BridgeRuntime {
                core: Bridge::new(bconfig.settings()),
                ports: BTreeMap::new(),
            });
            runtime.core.configure(bconfig.settings());
            let stale: Vec<String> = runtime
                .ports
                .iter()
                .filter(|(name, p)| bconfig.ports.get(*name).is_none_or(|c| c.ofport != p.ofport))
                .map(|(name, _)| name.clone())
                .collect();
            for name in stale {
                let port = runtime.ports.remove(&name).expect("listed above");
                runtime.core.remove_port(port.ofport);
            }
            for (pname, pconfig) in &bconfig.ports {
                let key = (bname.clone(), pname.clone());
                match (devices.remove(&key), runtime.ports.get_mut(pname)) {
                    (Some(device), Some(port)) => port.device = device,
                    (Some(device), None) => {
                        runtime.ports.insert(pname.clone(), PortRuntime { ofport: pconfig.ofport, device });
                    }
                    (None, Some(_)) => {}
                    (None, None) => {
                        tracing::error!(bridge = %bname, port = %pname, "no device was opened for a new port");
                        continue;
                    }
                }
                runtime.core.set_port(pconfig.ofport, pname, pconfig.vlan());
                runtime.core.set_isolated(pconfig.ofport, pconfig.isolated);
                runtime.core.set_port_address(pconfig.ofport, pconfig.address());
                let is_tunnel = runtime.ports.get(pname).is_some_and(|p| p.device.tunnel().is_some());
                runtime.core.set_tunnel(pconfig.ofport, is_tunnel);
            }
            let remote = bconfig.overlay.iter().flat_map(|o| &o.remote).filter_map(|r| {
                Some((crate::core::packet::parse_mac(&r.mac)?, bconfig.ports.get(&r.port)?.ofport))
            });
            runtime.core.set_remote_endpoints(remote);
            for group in compiled.remove(bname).unwrap_or_default() {
                install_compiled_flows(&mut runtime.core, group, now);
            }
        }
        self.map_tunnels();
        self.drain_all();
    }

    /// Rebuilds which tunnel port each endpoint's packets can be for.
    fn map_tunnels(&mut self) {
        self.tunnels.clear();
        for (bname, runtime) in &self.bridges {
            for port in runtime.ports.values() {
                let Some((socket, config)) = port.device.tunnel() else { continue };
                let endpoint = self.tunnels.entry(socket.endpoint).or_insert_with(|| TunnelEndpoint {
                    socket: socket.clone(),
                    ports: TunnelMap::default(),
                });
                endpoint.ports.insert(*config, (bname.clone(), port.ofport));
            }
        }
        if !self.tunnels.is_empty() && self.tunnel_rx.is_none() {
            self.tunnel_rx = Some(Box::default());
        }
    }

    /// Takes one batch from a tunnel socket and switches each packet on
    /// the port it is for ([`TunnelReceiver`]: datagrams the kernel
    /// coalesced are cut apart, consecutive TCP segments of one flow merged
    /// again); returns how many messages it took.
    fn receive_from_tunnel(&mut self, endpoint: &Endpoint) -> usize {
        let now = self.now();
        let (Some(ep), Some(rx)) = (self.tunnels.get(endpoint), self.tunnel_rx.as_mut()) else { return 0 };
        let n = ep.socket.recv_batch(rx);
        // Frames are queued per bridge; a bridge's queue is sent before
        // another bridge queues into the shared queues.
        let mut sink = TunnelSink {
            bridges: &mut self.bridges,
            tx: &mut self.tx,
            current: None,
            now,
            socket: &ep.socket,
        };
        let messages = (0..n).filter_map(|i| rx.get(i)).map(|(src, dst, payload, segment)| Received {
            src,
            dst,
            payload,
            segment,
        });
        self.tunnel_receiver.receive(endpoint.kind, &ep.ports, messages, &mut sink);
        sink.finish();
        n
    }

    /// Which ports of `new` need a device opened: new ones, and those whose
    /// interface changed.
    pub fn ports_needing_devices(old: &Config, new: &Config) -> Vec<(String, String, InterfaceConfig)> {
        let mut out = Vec::new();
        for (bname, b) in &new.bridges {
            for (pname, p) in &b.ports {
                let before = old.bridges.get(bname).and_then(|ob| ob.ports.get(pname));
                if before.is_none_or(|o| o.interface != p.interface || o.ofport != p.ofport) {
                    out.push((bname.clone(), pname.clone(), p.interface.clone()));
                }
            }
        }
        out
    }

    /// Receives from every device until none has anything waiting.
    fn drain_all(&mut self) {
        let ports: Vec<(String, String)> = self
            .bridges
            .iter()
            .flat_map(|(b, rt)| rt.ports.keys().map(move |p| (b.clone(), p.clone())))
            .collect();
        for (bridge, port) in ports {
            while self.receive_from(&bridge, &port) == BATCH_SIZE {}
        }
    }

    /// Takes one batch from a port's device and switches it; returns how
    /// many frames it took.
    fn receive_from(&mut self, bridge: &str, port: &str) -> usize {
        let now = self.now();
        let Some(runtime) = self.bridges.get_mut(bridge) else { return 0 };
        let Some(input) = runtime.ports.get_mut(port) else { return 0 };
        self.rx.clear();
        let n = input.device.recv_batch(&mut self.rx);
        if n > 0 {
            let ofport = input.ofport;
            self.tx.lend(&self.rx);
            runtime.core.receive_batch(now, ofport, self.rx.iter(), &mut self.tx);
            Self::transmit_queued(runtime, &mut self.tx, self.rx.bytes());
        }
        n
    }

    /// Hands each output port's queue to its device; `lent` is the batch
    /// lent to the queues, if any (see [`TxQueues::lend`]).
    fn transmit_queued(runtime: &mut BridgeRuntime, tx: &mut TxQueues, lent: &[u8]) {
        for port in runtime.ports.values_mut() {
            let queue = tx.port_lent(port.ofport, lent);
            if queue.is_empty() {
                continue;
            }
            let sent = port.device.send_batch(queue);
            let unsent = queue.len().saturating_sub(sent);
            if unsent > 0 {
                runtime.core.count_tx_dropped(port.ofport, unsent as u64);
            }
        }
        // Frames for ports that vanished in between are forgotten.
        tx.clear();
    }

    pub fn inject(
        &mut self,
        bridge: &str,
        port: &str,
        frames: Vec<Vec<u8>>,
    ) -> Result<ReplayReply, RpcError> {
        let runtime =
            self.bridges.get(bridge).ok_or_else(|| not_found(format!("no bridge named {bridge}")))?;
        let ofport = runtime
            .ports
            .get(port)
            .ok_or_else(|| not_found(format!("bridge {bridge} has no port {port}")))?
            .ofport;
        let counters = |dp: &Datapath| {
            let rt = &dp.bridges[bridge];
            (rt.core.forwarded, rt.core.port(ofport).map_or(0, |p| p.counters.rx_dropped()))
        };
        let (forwarded_before, dropped_before) = counters(self);
        for chunk in frames.chunks(BATCH_SIZE) {
            let now = self.now();
            let runtime = self.bridges.get_mut(bridge).expect("checked above");
            runtime.core.receive_batch(now, ofport, chunk.iter().map(Vec::as_slice), &mut self.tx);
            Self::transmit_queued(runtime, &mut self.tx, &[]);
        }
        let (forwarded, dropped) = counters(self);
        Ok(ReplayReply {
            frames: frames.len() as u64,
            forwarded: forwarded - forwarded_before,
            dropped: dropped - dropped_before,
        })
    }

    pub fn time_warp(&mut self, msecs: u64) {
        self.warp_ms = self.warp_ms.saturating_add(msecs);
    }

    pub fn port_errors(&self) -> PortErrors {
        let mut out = HashMap::new();
        for (bname, runtime) in &self.bridges {
            for (pname, port) in &runtime.ports {
                if let Some(e) = port.device.error() {
                    out.insert((bname.clone(), pname.clone()), e);
                }
            }
        }
        out
    }

    pub fn fdb(&self, bridge: &str) -> Vec<FdbEntry> {
        let Some(runtime) = self.bridges.get(bridge) else { return vec![] };
        let now = self.now();
        runtime
            .core
            .mac_table()
            .entries(now)
            .map(|(vlan, mac, entry)| FdbEntry {
                port: runtime
                    .core
                    .port(entry.port)
                    .map_or_else(|| entry.port.to_string(), |p| p.name.clone()),
                vlan,
                mac: format_mac(&mac),
                age_secs: (now.millis().saturating_sub(entry.last_seen.millis())) / 1000,
                is_static: false,
            })
            .chain(runtime.core.static_macs().map(|(mac, port)| FdbEntry {
                port: runtime.core.port(*port).map_or_else(|| port.to_string(), |p| p.name.clone()),
                vlan: 0,
                mac: format_mac(mac),
                age_secs: 0,
                is_static: true,
            }))
            .collect()
    }

    pub fn fdb_stats(&self, bridge: &str) -> FdbStats {
        let Some(core) = self.bridges.get(bridge).map(|rt| &rt.core) else { return FdbStats::default() };
        let (table, totals) = (core.mac_table(), &core.mac_table().stats);
        FdbStats {
            bridge: bridge.to_owned(),
            entries: table.len() as u64,
            limit: table.capacity() as u64,
            static_entries: core.static_macs().count() as u64,
            learned: totals.learned,
            expired: totals.expired,
            evicted: totals.evicted,
            moved: totals.moved,
        }
    }

    pub fn fdb_flush(&mut self, bridge: Option<&str>) {
        for (name, runtime) in &mut self.bridges {
            if bridge.is_none_or(|b| b == name) {
                runtime.core.flush_macs();
            }
        }
    }

    pub fn stats(&self, bridge: &str, port: Option<&str>) -> Vec<PortStats> {
        let Some(runtime) = self.bridges.get(bridge) else { return vec![] };
        runtime
            .core
            .ports()
            .filter(|(_, p)| port.is_none_or(|name| name == p.name))
            .map(|(ofport, p)| {
                let c = &p.counters;
                let mut drop_reasons: BTreeMap<String, u64> = DropReason::ALL
                    .iter()
                    .filter(|r| c.drop_count(**r) > 0)
                    .map(|r| (r.name().to_owned(), c.drop_count(*r)))
                    .collect();
                // What the device dropped: received frames the bridge never
                // saw (added to rx), and the reasons behind some of tx_dropped.
                let device = runtime.ports.get(&p.name).map(|d| &d.device);
                let device_drops = device.map(|d| d.device_drops()).unwrap_or_default();
                let link_lost = device.map_or(0, |d| d.link_lost());
                let mut rx_device_drops = 0;
                for (drop, n) in device_drops.into_iter().filter(|(_, n)| *n > 0) {
                    if drop.is_port_receive() {
                        rx_device_drops += n;
                    }
                    drop_reasons.insert(drop.name().to_owned(), n);
                }
                let malformed = Malformation::ALL
                    .iter()
                    .zip(c.malformed)
                    .filter(|(_, n)| *n > 0)
                    .map(|(m, n)| (m.name().to_owned(), n))
                    .collect();
                PortStats {
                    port: p.name.clone(),
                    ofport,
                    rx_packets: c.rx_packets + rx_device_drops,
                    rx_bytes: c.rx_bytes,
                    rx_dropped: c.rx_dropped() + rx_device_drops,
                    tx_packets: c.tx_packets,
                    tx_bytes: c.tx_bytes,
                    tx_dropped: c.tx_dropped,
                    drop_reasons,
                    malformed,
                    link_lost,
                }
            })
            .collect()
    }

    pub fn flow_op(&mut self, bridge: &str, op: FlowOp) {
        let now = self.now();
        let Some(runtime) = self.bridges.get_mut(bridge) else { return };
        let core = &mut runtime.core;
        match op {
            FlowOp::Add(specs) => {
                for spec in specs {
                    core.add_flow(spec, now);
                }
            }
            FlowOp::Replace(specs) => {
                core.delete_flows(None, false);
                for spec in specs {
                    core.add_flow(spec, now);
                }
            }
            FlowOp::Delete { filter, strict } => {
                core.delete_flows(filter.as_ref(), strict);
            }
            FlowOp::Modify { spec, strict } => core.modify_flows(spec, strict, now),
        }
    }

    pub fn dump_flows(&mut self, bridge: &str, filter: Option<&(FlowSpec, bool)>) -> Vec<FlowView> {
        let now = self.now();
        let Some(runtime) = self.bridges.get_mut(bridge) else { return vec![] };
        runtime.core.expire_flows(now);
        let selected = runtime.core.select(filter, false);
        let secs = |ms: u64| ms as f64 / 1000.0;
        runtime
            .core
            .flows()
            .filter(|(id, _)| selected.contains(id))
            .map(|(_, f)| FlowView {
                cookie: f.spec.cookie,
                duration_secs: secs(now.millis().saturating_sub(f.created.millis())),
                table: f.spec.table,
                n_packets: f.packets,
                n_bytes: f.bytes,
                idle_timeout: f.spec.idle_timeout,
                hard_timeout: f.spec.hard_timeout,
                idle_age_secs: now.millis().saturating_sub(f.last_used.millis()) / 1000,
                priority: f.spec.priority,
                flow: f.spec.text.clone(),
            })
            .collect()
    }

    pub fn conntrack(&self, bridge: &str) -> Vec<ConnView> {
        let Some(runtime) = self.bridges.get(bridge) else { return vec![] };
        let now = self.now();
        let view = |t: &Tuple| TupleView {
            src: std::net::Ipv4Addr::from(t.src).to_string(),
            dst: std::net::Ipv4Addr::from(t.dst).to_string(),
            sport: t.sport,
            dport: t.dport,
        };
        let mut conns: Vec<ConnView> = runtime
            .core
            .conntrack()
            .connections(now)
            .map(|c| ConnView {
                proto: match c.original.proto {
                    PROTO_TCP => "tcp",
                    PROTO_UDP => "udp",
                    _ => "icmp",
                }
                .into(),
                original: view(&c.original),
                reply: view(&c.reply),
                zone: c.zone,
                mark: c.mark,
                state: c.state_name().into(),
                timeout_secs: c.expires().millis().saturating_sub(now.millis()).div_ceil(1000),
            })
            .collect();
        conns.sort_by(|a, b| {
            (a.zone, &a.original.src, a.original.sport).cmp(&(b.zone, &b.original.src, b.original.sport))
        });
        conns
    }

    pub fn megaflows(&self, bridge: &str) -> Vec<MegaflowView> {
        let Some(runtime) = self.bridges.get(bridge) else { return vec![] };
        runtime
            .core
            .megaflows()
            .entries()
            .map(|(mask, key, actions, packets)| MegaflowView {
                matcher: format_masked(&key, mask),
                packets,
                actions: if actions.is_empty() {
                    "drop".into()
                } else {
                    actions.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",")
                },
            })
            .collect()
    }

    /// How full each bridge's tables are and the bytes held for packets;
    /// the process-wide figures are the control plane's to add.
    pub fn memory(&self) -> MemoryView {
        let devices: usize =
            self.bridges.values().flat_map(|rt| rt.ports.values()).map(|p| p.device.buffer_bytes()).sum();
        let queues: usize = self.tx.capacity_bytes()
            + self.rx.capacity_bytes()
            + self.tunnel_rx.as_ref().map_or(0, |rx| rx.buffer_bytes());
        let bridges = self
            .bridges
            .iter()
            .map(|(name, rt)| {
                let core = &rt.core;
                BridgeMemory {
                    name: name.clone(),
                    ports: rt.ports.len(),
                    flows: core.flow_count(),
                    megaflows: core.megaflows().len(),
                    mac_entries: core.mac_table().len(),
                    mac_limit: core.mac_table().capacity(),
                    conntrack: core.conntrack().len(),
                    conntrack_limit: core.conntrack().limit(),
                    neighbours: core.router().neighbour_count(),
                    frames_waiting_for_arp: core.router().frames_waiting(),
                }
            })
            .collect();
        MemoryView { packet_buffers: (devices + queues) as u64, bridges, ..MemoryView::default() }
    }

    /// Answers a live query (what a read of live state or a flow change
    /// asks of the forwarding thread). `show` and `memory-show` also need
    /// the control plane's state, which it adds to this answer.
    pub fn answer(&mut self, query: LiveQuery) -> CommandResult {
        match query {
            LiveQuery::Show => {
                let errors = self.port_errors();
                let mut views = self.config.views();
                for bridge in &mut views {
                    for port in &mut bridge.ports {
                        port.error = errors.get(&(bridge.name.clone(), port.name.clone())).cloned();
                    }
                }
                CommandResult::Show(views)
            }
            LiveQuery::Fdb { bridge } => CommandResult::Fdb(self.fdb(&bridge)),
            LiveQuery::FdbStats { bridge } => CommandResult::FdbStats(self.fdb_stats(&bridge)),
            LiveQuery::FdbFlush { bridge } => {
                self.fdb_flush(bridge.as_deref());
                CommandResult::Done
            }
            LiveQuery::Flows { bridge, op } => {
                self.flow_op(&bridge, op);
                CommandResult::Done
            }
            LiveQuery::DumpFlows { bridge, filter } => {
                CommandResult::Flows(self.dump_flows(&bridge, filter.as_ref()))
            }
            LiveQuery::Trace { bridge, key } => {
                let now = self.now();
                let lines = self.bridges.get(&bridge).map(|rt| rt.core.trace(&key, now)).unwrap_or_default();
                CommandResult::Values(lines)
            }
            LiveQuery::Megaflows { bridge } => CommandResult::Megaflows(self.megaflows(&bridge)),
            LiveQuery::Conntrack { bridge } => CommandResult::Conntrack(self.conntrack(&bridge)),
            LiveQuery::FlushConntrack { bridge } => {
                if let Some(runtime) = self.bridges.get_mut(&bridge) {
                    runtime.core.flush_conntrack();
                }
                CommandResult::Done
            }
            LiveQuery::Stats { bridge, port } => CommandResult::Ports(self.stats(&bridge, port.as_deref())),
            LiveQuery::Memory => CommandResult::Memory(self.memory()),
        }
    }

    fn maintain(&mut self) {
        for runtime in self.bridges.values_mut() {
            for port in runtime.ports.values_mut() {
                port.device.maintain();
            }
        }
    }

    /// Every receiving device's and tunnel socket's descriptor, with what
    /// it belongs to.
    fn rx_fds(&self) -> HashMap<RawFd, Source> {
        let mut fds = HashMap::new();
        for (bname, runtime) in &self.bridges {
            for (pname, port) in &runtime.ports {
                if let Some(fd) = port.device.rx_fd() {
                    fds.insert(fd, Source::Port(bname.clone(), pname.clone()));
                }
            }
        }
        for (endpoint, ep) in &self.tunnels {
            fds.insert(ep.socket.fd(), Source::Tunnel(*endpoint));
        }
        fds
    }
}

/// The epoll set of the datapath thread and what each descriptor is.
struct Readiness {
    epoll: Epoll,
    ports: HashMap<RawFd, Source>,
}

impl Readiness {
    fn new(wake: &EventFd) -> nix::Result<Readiness> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        epoll.add(wake.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, WAKE_TOKEN))?;
        Ok(Readiness { epoll, ports: HashMap::new() })
    }

    /// Brings the epoll set in line with the devices' current descriptors.
    /// A descriptor number can be reused by a new device, so survivors are
    /// re-registered rather than trusted.
    fn sync(&mut self, current: HashMap<RawFd, Source>) {
        for fd in self.ports.keys() {
            if !current.contains_key(fd) {
                // SAFETY: only used for the duration of this call; if the fd
                // was already closed the kernel dropped it from the set and
                // EPOLL_CTL_DEL fails harmlessly with EBADF or ENOENT.
                let _ = self.epoll.delete(unsafe { BorrowedFd::borrow_raw(*fd) });
            }
        }
        for fd in current.keys() {
            // SAFETY: the device that owns this descriptor is alive for the
            // duration of the call (it is in `current`, built from the devices).
            let borrowed = unsafe { BorrowedFd::borrow_raw(*fd) };
            let event = EpollEvent::new(EpollFlags::EPOLLIN, *fd as u64);
            if self.epoll.modify(borrowed, &mut event.clone()).is_err() {
                if let Err(e) = self.epoll.add(borrowed, event) {
                    tracing::warn!("cannot watch a port's descriptor: {e}");
                }
            }
        }
        self.ports = current;
    }
}

fn run(inbox: Receiver<Request>, wake: Arc<EventFd>) {
    let mut datapath = Datapath::default();
    let mut readiness = match Readiness::new(&wake) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("the datapath cannot create its epoll set: {e}");
            return;
        }
    };
    let mut events = vec![EpollEvent::empty(); 64];
    let mut next_maintenance = Instant::now() + MAINTAIN_EVERY;
    let mut hot_until = Instant::now();
    loop {
        let mut changed = false;
        loop {
            match inbox.try_recv() {
                Ok(request) => {
                    request(&mut datapath);
                    changed |= std::mem::take(&mut datapath.devices_changed);
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        let now = Instant::now();
        if now >= next_maintenance {
            datapath.maintain();
            next_maintenance = now + MAINTAIN_EVERY;
            changed = true;
        }
        if changed {
            readiness.sync(datapath.rx_fds());
        }
        let now = Instant::now();
        let wait_ms = if now < hot_until {
            0
        } else {
            next_maintenance.saturating_duration_since(now).as_millis().min(1000) as u16
        };
        let n = match readiness.epoll.wait(&mut events, EpollTimeout::from(wait_ms)) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => 0,
            Err(e) => {
                tracing::error!("epoll_wait failed: {e}");
                thread::sleep(Duration::from_millis(10));
                0
            }
        };
        let mut frames_this_wake = 0;
        for event in &events[..n] {
            let token = event.data();
            if token == WAKE_TOKEN {
                let _ = wake.read();
                continue;
            }
            let Some(source) = readiness.ports.get(&(token as RawFd)) else { continue };
            for _ in 0..BATCHES_PER_WAKE {
                let taken = match source {
                    Source::Port(bridge, port) => datapath.receive_from(bridge, port),
                    Source::Tunnel(endpoint) => datapath.receive_from_tunnel(endpoint),
                };
                frames_this_wake += taken;
                if taken > 0 {
                    hot_until = Instant::now() + POLL_AFTER_TRAFFIC;
                }
                if taken < BATCH_SIZE {
                    break;
                }
            }
        }
        if frames_this_wake >= COALESCE_ABOVE {
            thread::sleep(COALESCE_PAUSE);
        } else if frames_this_wake == 0 && wait_ms == 0 {
            let before = Instant::now();
            thread::yield_now();
            if before.elapsed() > CONTENDED_YIELD {
                hot_until = Instant::now();
            }
        }
    }
}

/// The control plane's end of the datapath thread.
#[derive(Clone)]
pub struct DatapathHandle {
    requests: Sender<Request>,
    wake: Arc<EventFd>,
}

impl DatapathHandle {
    /// Starts the forwarding thread; it ends, dropping (and so flushing and
    /// closing) every device, once every handle is gone.
    pub fn spawn() -> std::io::Result<(DatapathHandle, thread::JoinHandle<()>)> {
        let (requests, inbox): (Sender<Request>, Receiver<Request>) = unbounded();
        let wake = Arc::new(EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?);
        let thread_wake = wake.clone();
        let thread = thread::Builder::new().name("datapath".into()).spawn(move || run(inbox, thread_wake))?;
        Ok((DatapathHandle { requests, wake }, thread))
    }

    /// Makes the datapath run `config`, with the devices opened for it; the
    /// flows it compiles into are parsed here, on the caller's thread.
    pub async fn reconfigure(&self, config: &Config, devices: NewDevices) -> Result<(), RpcError> {
        let (snapshot, compiled) = (Arc::new(config.clone()), config.compiled_flows());
        self.run(move |dp| dp.reconfigure(snapshot, compiled, devices)).await
    }

    /// Runs `work` on the forwarding thread, between batches, and awaits
    /// what it returns.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Datapath) -> T + Send + 'static,
    ) -> Result<T, RpcError> {
        let (done, reply) = oneshot::channel();
        let gone = || RpcError::new(ErrorCode::Internal, "the datapath thread has stopped; restart vswitchd");
        let request: Request = Box::new(move |datapath| {
            // A requester that went away no longer wants the answer.
            let _ = done.send(work(datapath));
        });
        self.requests.send(request).map_err(|_| gone())?;
        let _ = self.wake.write(1);
        reply.await.map_err(|_| gone())
    }
}

impl Drop for DatapathHandle {
    fn drop(&mut self) {
        // Wake the thread so it notices the last handle went away.
        if Arc::strong_count(&self.wake) <= 2 {
            let _ = self.wake.write(1);
        }
    }
}

/// Makes the bridge's flows under a compiled group's cookie (NAT's, an
/// overlay's) the group's, touching nothing when they already are, so
/// their counters survive unrelated changes.
fn install_compiled_flows(core: &mut Bridge, group: CompiledFlows, now: Timestamp) {
    let CompiledFlows { owner: filter, specs: wanted } = group;
    let installed: Vec<(u64, String)> = core
        .select(Some(&filter), false)
        .into_iter()
        .filter_map(|id| core.flow(id).map(|f| (f.spec.cookie, f.spec.text.clone())))
        .collect();
    let mut current = installed;
    current.sort();
    let mut target: Vec<(u64, String)> = wanted.iter().map(|s| (s.cookie, s.text.clone())).collect();
    target.sort();
    if current == target {
        return;
    }
    core.delete_flows(Some(&filter), false);
    for spec in wanted {
        core.add_flow(spec, now);
    }
}
