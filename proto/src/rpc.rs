use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Bumped whenever a request or result changes shape incompatibly.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest request line, newline excluded.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// The largest response line a client accepts: `fdb-show` of a million-entry
/// MAC table is large, but never this large.
pub const MAX_RESPONSE_BYTES: usize = 256 << 20;

/// The socket's file name inside the run directory.
pub const SOCKET_NAME: &str = "vswitchd.sock";

/// The default run directory, overridden by `--run-dir` or `VSWITCH_RUN_DIR`.
pub const DEFAULT_RUN_DIR: &str = "/run/vswitch";

pub const RUN_DIR_ENV: &str = "VSWITCH_RUN_DIR";

/// A request line as it travels. `params` stays untyped here so that a
/// request with bad params still yields its `id` for the error response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub jsonrpc: String,
    pub id: serde_json::Value,
    pub method: String,
    #[serde(default)]
    pub params: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub jsonrpc: String,
    pub id: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RpcError>,
}

impl Response {
    pub fn ok(id: serde_json::Value, result: serde_json::Value) -> Self {
        Response { jsonrpc: "2.0".into(), id, result: Some(result), error: None }
    }

    pub fn err(id: serde_json::Value, error: RpcError) -> Self {
        Response { jsonrpc: "2.0".into(), id, result: None, error: Some(error) }
    }
}

/// Error codes: the JSON-RPC 2.0 ones where they fit, ours above 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    ParseError,
    InvalidRequest,
    MethodNotFound,
    InvalidParams,
    Internal,
    RequestTooLarge,
    HandshakeRequired,
    VersionMismatch,
    NotFound,
    AlreadyExists,
    InvalidValue,
    Io,
    Busy,
    PermissionDenied,
}

impl ErrorCode {
    pub fn code(self) -> i64 {
        match self {
            ErrorCode::ParseError => -32700,
            ErrorCode::InvalidRequest => -32600,
            ErrorCode::MethodNotFound => -32601,
            ErrorCode::InvalidParams => -32602,
            ErrorCode::Internal => -32603,
            ErrorCode::RequestTooLarge => 1,
            ErrorCode::HandshakeRequired => 2,
            ErrorCode::VersionMismatch => 3,
            ErrorCode::NotFound => 4,
            ErrorCode::AlreadyExists => 5,
            ErrorCode::InvalidValue => 6,
            ErrorCode::Io => 7,
            ErrorCode::Busy => 8,
            ErrorCode::PermissionDenied => 9,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
}

impl RpcError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        RpcError { code: code.code(), message: message.into() }
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RpcError {}

/// The methods with their typed params. [`Method::name`] gives the wire name.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "method", content = "params", rename_all = "snake_case")]
pub enum Method {
    Hello(Hello),
    Transact(Transact),
    Replay(Replay),
    TimeWarp(TimeWarp),
}

impl Method {
    pub fn name(&self) -> &'static str {
        match self {
            Method::Hello(_) => "hello",
            Method::Transact(_) => "transact",
            Method::Replay(_) => "replay",
            Method::TimeWarp(_) => "time_warp",
        }
    }

    pub fn params(&self) -> serde_json::Value {
        let params = match self {
            Method::Hello(p) => serde_json::to_value(p),
            Method::Transact(p) => serde_json::to_value(p),
            Method::Replay(p) => serde_json::to_value(p),
            Method::TimeWarp(p) => serde_json::to_value(p),
        };
        params.expect("protocol params always serialize")
    }

    /// Types a request's method and params; the error is ready to send back.
    pub fn from_request(request: &Request) -> Result<Method, RpcError> {
        if !matches!(request.method.as_str(), "hello" | "transact" | "replay" | "time_warp") {
            return Err(RpcError::new(
                ErrorCode::MethodNotFound,
                format!(
                    "unknown method {:?}: this daemon speaks hello, transact, replay and time_warp",
                    request.method
                ),
            ));
        }
        let tagged = serde_json::json!({ "method": request.method, "params": request.params });
        serde_json::from_value(tagged).map_err(|e| {
            RpcError::new(ErrorCode::InvalidParams, format!("bad params for {}: {e}", request.method))
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    pub client: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HelloReply {
    pub protocol: u32,
    pub server: String,
}

/// Commands applied as one transaction: all of them or none.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Transact {
    pub commands: Vec<Command>,
}

/// One result per command, in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransactReply {
    pub results: Vec<CommandResult>,
}

/// Frames injected into a port as if received there. The reply comes once
/// every frame has been switched, so consecutive replays are ordered.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Replay {
    pub bridge: String,
    pub port: String,
    /// Each frame base64-encoded.
    pub frames: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReplayReply {
    pub frames: u64,
    pub forwarded: u64,
    pub dropped: u64,
}

/// Advances the datapath's clock, as `ovs-appctl time/warp` does, so that
/// aging and timeouts can be observed without waiting.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TimeWarp {
    pub msecs: u64,
}

/// A database table that `set`, `get` and `clear` address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    Bridge,
    Port,
    Interface,
}

impl Table {
    pub fn parse(s: &str) -> Option<Table> {
        match s {
            "bridge" | "Bridge" => Some(Table::Bridge),
            "port" | "Port" => Some(Table::Port),
            "interface" | "Interface" => Some(Table::Interface),
            _ => None,
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Table::Bridge => "bridge",
            Table::Port => "port",
            Table::Interface => "interface",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Command {
    AddBr {
        bridge: String,
        #[serde(default)]
        may_exist: bool,
    },
    DelBr {
        bridge: String,
        #[serde(default)]
        if_exists: bool,
    },
    ListBr,
    BrExists {
        bridge: String,
    },
    AddPort {
        bridge: String,
        port: String,
        /// `column[:key]=value` settings for the new port, as ovs-vsctl takes them.
        #[serde(default)]
        settings: Vec<String>,
        #[serde(default)]
        may_exist: bool,
    },
    DelPort {
        bridge: Option<String>,
        port: String,
        #[serde(default)]
        if_exists: bool,
    },
    ListPorts {
        bridge: String,
    },
    PortToBr {
        port: String,
    },
    Show,
    Set {
        table: Table,
        record: String,
        /// `column[:key]=value`.
        settings: Vec<String>,
        #[serde(default)]
        if_exists: bool,
    },
    Get {
        table: Table,
        record: String,
        /// `column[:key]`.
        columns: Vec<String>,
        #[serde(default)]
        if_exists: bool,
    },
    Clear {
        table: Table,
        record: String,
        columns: Vec<String>,
    },
    /// Removes keys from a map column: `remove bridge br0 other_config mac-aging-time`.
    Remove {
        table: Table,
        record: String,
        column: String,
        keys: Vec<String>,
    },
    /// Attaches a network namespace through a veth pair (`ovs-docker
    /// add-port`): NETNS is a name under /run/netns, a path, or a pid.
    AddContainerPort {
        bridge: String,
        ifname: String,
        netns: String,
        #[serde(default)]
        ip: Option<String>,
        #[serde(default)]
        gateway: Option<String>,
        #[serde(default)]
        mac: Option<String>,
        #[serde(default)]
        mtu: Option<u32>,
        #[serde(default)]
        tag: Option<u16>,
        /// The runtime's id for the container, kept in `external_ids` so
        /// that the port can be found again without its namespace (CNI DEL).
        #[serde(default)]
        container_id: Option<String>,
    },
    DelContainerPort {
        bridge: String,
        ifname: String,
        netns: String,
        #[serde(default)]
        if_exists: bool,
    },
    AddFlow {
        bridge: String,
        flow: String,
    },
    /// Several flows at once (vsctl reads them from a file).
    AddFlows {
        bridge: String,
        flows: Vec<String>,
    },
    ModFlows {
        bridge: String,
        flow: String,
        #[serde(default)]
        strict: bool,
    },
    DelFlows {
        bridge: String,
        #[serde(default)]
        matcher: Option<String>,
        #[serde(default)]
        strict: bool,
    },
    /// Swaps the whole flow table set at once.
    ReplaceFlows {
        bridge: String,
        flows: Vec<String>,
    },
    DumpFlows {
        bridge: String,
        #[serde(default)]
        matcher: Option<String>,
    },
    /// The megaflow cache's entries.
    DpctlDumpFlows {
        bridge: String,
    },
    /// What the tables do with a packet described in match syntax.
    Trace {
        bridge: String,
        packet: String,
    },
    FdbShow {
        bridge: String,
    },
    /// How full the MAC table is and what it learned, expired, evicted and
    /// moved (OVS's `ovs-appctl fdb/stats-show`).
    FdbStatsShow {
        bridge: String,
    },
    FdbFlush {
        bridge: Option<String>,
    },
    /// Masquerade the gateway's subnet through `out_port`'s address.
    AddNat {
        bridge: String,
        out_port: String,
    },
    DelNat {
        bridge: String,
    },
    /// `docker run -p HOSTPORT:PORT`: `proto` is `tcp` or `udp`, `target`
    /// is `IP:PORT` in the gateway's subnet.
    AddPortMapping {
        bridge: String,
        proto: String,
        host_port: u16,
        target: String,
    },
    DelPortMapping {
        bridge: String,
        proto: String,
        host_port: u16,
    },
    /// The connection tracker's entries.
    DumpConntrack {
        bridge: String,
    },
    FlushConntrack {
        bridge: String,
    },
    DumpPorts {
        bridge: String,
        port: Option<String>,
    },
    /// What the daemon's memory holds, as `ovs-appctl memory/show` tells.
    MemoryShow,
    /// Creates a network in the cluster store; every host's vswitchd makes
    /// a bridge of that name for it. `vni` and `gateway` are chosen when
    /// absent (the lowest free VNI from 4096; no gateway).
    AddOverlay {
        name: String,
        subnet: String,
        #[serde(default)]
        vni: Option<u32>,
        #[serde(default)]
        gateway: Option<String>,
        #[serde(default)]
        mtu: Option<u32>,
        #[serde(default)]
        may_exist: bool,
    },
    DelOverlay {
        name: String,
        #[serde(default)]
        if_exists: bool,
    },
    ListOverlays,
    /// Joins (or, with no store, leaves) a cluster: `store` lists etcd
    /// endpoints `HOST:PORT`, `advertise` is this host's underlay address.
    SetCluster {
        #[serde(default)]
        store: Vec<String>,
        #[serde(default)]
        advertise: Option<String>,
        #[serde(default)]
        ttl_secs: Option<u64>,
    },
}

impl Command {
    /// Whether the command changes configuration; a transaction of read-only
    /// commands is never written to the database.
    pub fn is_write(&self) -> bool {
        !matches!(
            self,
            Command::ListBr
                | Command::BrExists { .. }
                | Command::ListPorts { .. }
                | Command::PortToBr { .. }
                | Command::Show
                | Command::Get { .. }
                | Command::FdbShow { .. }
                | Command::FdbStatsShow { .. }
                | Command::DumpPorts { .. }
                | Command::DumpFlows { .. }
                | Command::DpctlDumpFlows { .. }
                | Command::Trace { .. }
                | Command::DumpConntrack { .. }
                | Command::MemoryShow
                | Command::ListOverlays
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "kebab-case")]
pub enum CommandResult {
    Done,
    Names(Vec<String>),
    Exists(bool),
    Values(Vec<String>),
    Show(Vec<BridgeView>),
    Fdb(Vec<FdbEntry>),
    FdbStats(FdbStats),
    Ports(Vec<PortStats>),
    Flows(Vec<FlowView>),
    Megaflows(Vec<MegaflowView>),
    Conntrack(Vec<ConnView>),
    Memory(MemoryView),
    Overlays(Vec<OverlayView>),
    /// What `add-container-port` gave a container on an overlay network.
    Attached(AttachedView),
}

/// An overlay network as this host knows it from the cluster store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayView {
    pub name: String,
    pub subnet: String,
    pub vni: u32,
    #[serde(default)]
    pub gateway: Option<String>,
    pub mtu: u32,
    /// Whether this host has a bridge for it yet.
    pub local_bridge: bool,
    /// The cluster store as this daemon last saw it: `reachable`, or
    /// `unreachable since ...: why`.
    pub store: String,
    /// Endpoints on this host.
    pub local_endpoints: Vec<String>,
    /// The other hosts with endpoints on the network.
    pub peers: Vec<OverlayPeer>,
}

/// Another host on an overlay network: its tunnel port here and its
/// endpoints (`IP MAC`), which this host answers ARP for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayPeer {
    pub host: String,
    pub port: String,
    pub endpoints: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachedView {
    pub port: String,
    /// `A.B.C.D/N`.
    pub ip: String,
    pub mac: String,
    #[serde(default)]
    pub gateway: Option<String>,
    pub mtu: u32,
}

/// The daemon's memory and what fills it, for `memory-show`: enough to
/// tell a table at its limit or a buffer grown by traffic from a leak.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryView {
    /// Resident set size (VmRSS) and its peak (VmHWM), KiB.
    pub rss_kib: u64,
    pub peak_rss_kib: u64,
    /// Bytes allocated and not freed (glibc's `mallinfo2`: in-use chunks
    /// plus mmapped ones); `None` when the allocator cannot say.
    #[serde(default)]
    pub heap_in_use: Option<u64>,
    /// Bytes freed but kept by the allocator for reuse.
    #[serde(default)]
    pub heap_free: Option<u64>,
    /// The datapath's packet buffers: bytes reserved for frames being
    /// received and queued for sending.
    pub packet_buffers: u64,
    pub bridges: Vec<BridgeMemory>,
}

/// How full one bridge's tables are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeMemory {
    pub name: String,
    pub ports: usize,
    pub flows: usize,
    pub megaflows: usize,
    pub mac_entries: usize,
    pub mac_limit: usize,
    pub conntrack: usize,
    pub conntrack_limit: usize,
    /// Gateway ARP neighbours, and frames waiting for one to answer.
    pub neighbours: usize,
    pub frames_waiting_for_arp: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowView {
    pub cookie: u64,
    pub duration_secs: f64,
    pub table: u8,
    pub n_packets: u64,
    pub n_bytes: u64,
    pub idle_timeout: u16,
    pub hard_timeout: u16,
    pub idle_age_secs: u64,
    pub priority: u16,
    /// The match and actions: `ip,nw_src=198.18.1.0/24 actions=drop`.
    pub flow: String,
}

/// One direction of a tracked connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TupleView {
    pub src: String,
    pub dst: String,
    pub sport: u16,
    pub dport: u16,
}

/// One tracked connection, as `dump-conntrack` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnView {
    /// `tcp`, `udp` or `icmp`.
    pub proto: String,
    pub original: TupleView,
    /// What replies carry; differs from the original reversed under NAT.
    pub reply: TupleView,
    pub zone: u16,
    pub mark: u32,
    /// `SYN_SENT`, `ESTABLISHED`, `UNREPLIED`, `REPLIED`...
    pub state: String,
    /// Seconds until the entry expires without more packets.
    pub timeout_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MegaflowView {
    /// The fields the decision looked at, with their values and masks.
    pub matcher: String,
    pub packets: u64,
    pub actions: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BridgeView {
    pub name: String,
    /// The address the switch answers ARP and ping for, `A.B.C.D/N`.
    #[serde(default)]
    pub gateway: Option<String>,
    /// The port whose address the subnet is masqueraded behind.
    #[serde(default)]
    pub masquerade: Option<String>,
    /// `tcp 8080 -> 198.18.0.7:80`, one per mapping.
    #[serde(default)]
    pub port_mappings: Vec<String>,
    /// Set when the bridge is an overlay network's, made from the cluster store.
    #[serde(default)]
    pub overlay: Option<OverlayView>,
    pub other_config: BTreeMap<String, String>,
    pub external_ids: BTreeMap<String, String>,
    pub ports: Vec<PortView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortView {
    pub name: String,
    pub ofport: u16,
    pub tag: Option<u16>,
    pub trunks: Vec<u16>,
    pub vlan_mode: Option<String>,
    /// Isolated ports never exchange frames with each other (NORMAL).
    #[serde(default)]
    pub isolated: bool,
    /// An uplink's address and next hop.
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub nexthop: Option<String>,
    pub other_config: BTreeMap<String, String>,
    pub external_ids: BTreeMap<String, String>,
    pub interface_type: String,
    pub options: BTreeMap<String, String>,
    /// `None` while the port works; otherwise why it does not.
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbEntry {
    pub port: String,
    pub vlan: u16,
    pub mac: String,
    pub age_secs: u64,
    /// Configured rather than learned (an overlay's remote endpoint): it
    /// does not age and learning does not move it.
    #[serde(default)]
    pub is_static: bool,
}

/// A bridge's MAC table in figures. The totals count since the bridge was
/// created; a flush empties the table without counting.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbStats {
    pub bridge: String,
    /// Learned entries now in the table, and how many it may hold.
    pub entries: u64,
    pub limit: u64,
    /// Configured entries (an overlay's remote endpoints), not in `entries`.
    pub static_entries: u64,
    pub learned: u64,
    pub expired: u64,
    /// Pushed out, least recently seen first, to make room.
    pub evicted: u64,
    /// Seen again on another port.
    pub moved: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortStats {
    pub port: String,
    pub ofport: u16,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Received frames the switch did not forward anywhere, by reason.
    pub rx_dropped: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Frames switched to this port that its device failed to take.
    pub tx_dropped: u64,
    pub drop_reasons: BTreeMap<String, u64>,
    /// Received frames forwarded although a header above L2 was malformed,
    /// by the header (flows cannot match the fields that did not parse).
    #[serde(default)]
    pub malformed: BTreeMap<String, u64>,
    /// How often the port's device went away (vanished or became unusable).
    #[serde(default)]
    pub link_lost: u64,
}

/// Reads a daemon response's `result` into its typed form.
pub fn decode_result<T: serde::de::DeserializeOwned>(response: Response) -> Result<T, RpcError> {
    if let Some(error) = response.error {
        return Err(error);
    }
    let value = response.result.unwrap_or(serde_json::Value::Null);
    serde_json::from_value(value).map_err(|e| {
        RpcError::new(ErrorCode::Internal, format!("the daemon sent a result this client cannot read: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_round_trips_through_a_request() {
        let method = Method::TimeWarp(TimeWarp { msecs: 5 });
        let request = Request {
            jsonrpc: "2.0".into(),
            id: 7.into(),
            method: method.name().into(),
            params: method.params(),
        };
        let line = serde_json::to_string(&request).unwrap();
        let back: Request = serde_json::from_str(&line).unwrap();
        match Method::from_request(&back).unwrap() {
            Method::TimeWarp(TimeWarp { msecs }) => assert_eq!(msecs, 5),
            other => panic!("decoded as {other:?}"),
        }
    }

    #[test]
    fn unknown_method_and_bad_params_are_distinct_errors() {
        let mut request =
            Request { jsonrpc: "2.0".into(), id: 1.into(), method: "frobnicate".into(), params: 0.into() };
        assert_eq!(Method::from_request(&request).unwrap_err().code, ErrorCode::MethodNotFound.code());
        request.method = "time_warp".into();
        assert_eq!(Method::from_request(&request).unwrap_err().code, ErrorCode::InvalidParams.code());
    }

    #[test]
    fn commands_use_kebab_case_names() {
        let json = serde_json::to_value(Command::AddBr { bridge: "br0".into(), may_exist: true }).unwrap();
        assert_eq!(json["command"], "add-br");
    }
}
