//! The command line, in ovs-vsctl's shape:
//! `vsctl [OPTIONS] CMD ARGS [-- [CMD-OPTIONS] CMD ARGS]...`.
//! Global options come first; each command may start with its own
//! `--may-exist` / `--if-exists`; `--` separates commands, which run as one
//! transaction. `replay` and `time-warp` act on the datapath and stand alone.

use std::path::PathBuf;
use std::time::Duration;

use proto::{Command, Table};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug)]
pub struct Options {
    pub run_dir: PathBuf,
    pub timeout: Duration,
    pub format: Format,
}

#[derive(Debug)]
pub enum Action {
    Help,
    Version,
    Transact(Vec<Command>),
    Replay { bridge: String, port: String, file: PathBuf },
    TimeWarp { msecs: u64 },
}

pub const DEFAULT_TIMEOUT_SECS: u64 = 5;

pub const USAGE: &str = "\
vsctl: configure and inspect vswitchd

usage: vsctl [OPTIONS] COMMAND [ARG...] [-- [--may-exist|--if-exists] COMMAND [ARG...]]...
Commands joined by -- form one transaction: all of them take effect or none.

Bridges:
  add-br BRIDGE                       create a bridge (--may-exist: no error if it exists)
  del-br BRIDGE                       delete a bridge and its ports (--if-exists)
  list-br                             print the bridges
  br-exists BRIDGE                    exit 0 if BRIDGE exists, 2 if not
Ports:
  add-port BRIDGE PORT [COL[:KEY]=VALUE]...   add a port (--may-exist)
  del-port [BRIDGE] PORT              delete a port (--if-exists)
  list-ports BRIDGE                   print the ports of BRIDGE
  port-to-br PORT                     print the bridge that has PORT
Containers:
  add-container-port BRIDGE IFNAME NETNS [--ip CIDR] [--gateway IP] [--mac MAC] [--mtu N] [--tag VLAN] [--container-id ID]
                                      attach a network namespace (name under /run/netns, path or pid)
                                      through a veth pair whose peer becomes IFNAME inside it
  del-container-port BRIDGE IFNAME NETNS   detach it again (--if-exists)
Overlay networks (a cluster of hosts sharing an etcd store):
  set-cluster etcd://HOST:PORT[,...] --advertise IP [--ttl SECS]
                                      join a cluster (saved); `set-cluster none` leaves it
  add-overlay NAME --subnet CIDR [--vni N] [--gateway IP] [--mtu N]
                                      create a network on every host (--may-exist); attach
                                      containers with add-container-port NAME ... (address allocated)
  del-overlay NAME                    delete it everywhere (--if-exists)
  list-overlays                       networks, their peers and the store's state
Database (TABLE is bridge, port or interface):
  set TABLE RECORD COL[:KEY]=VALUE... e.g. set port p1 tag=10, set interface p1 type=pcap options:tx_pcap=/tmp/p1.pcap
  get TABLE RECORD COL[:KEY]...       print values
  clear TABLE RECORD COL...           empty columns
  remove TABLE RECORD COL KEY...      remove keys from a map column (or VLANs from trunks)
Flows (ovs-ofctl syntax):
  add-flow BRIDGE FLOW                e.g. add-flow br0 'priority=100,ip,nw_src=198.18.1.0/24,actions=drop'
  add-flows BRIDGE FILE               one flow per line, # comments
  replace-flows BRIDGE FILE           swap in a whole new set at once
  mod-flows [--strict] BRIDGE FLOW    change the actions of the flows FLOW's match covers
  del-flows [--strict] BRIDGE [MATCH] delete the flows MATCH covers (all without one)
  dump-flows BRIDGE [MATCH]           flows with n_packets, n_bytes, duration, idle_age
  dpctl-dump-flows BRIDGE             the megaflow cache's entries and their hits
  trace BRIDGE PACKET                 table by table, what the flows do with PACKET (match syntax)
State:
  show                                bridges, ports, interfaces and errors
  fdb-show BRIDGE                     the MAC learning table
  fdb-stats-show BRIDGE               the MAC table's size and what it learned, aged out, evicted
  fdb-flush [BRIDGE]                  forget learned MACs
  add-nat BRIDGE masquerade --out-port PORT
                                      masquerade the gateway's subnet behind PORT's ip
  del-nat BRIDGE                      stop masquerading
  add-port-mapping BRIDGE tcp|udp HOSTPORT IP:PORT
                                      forward the uplink's HOSTPORT to IP:PORT (docker -p)
  del-port-mapping BRIDGE tcp|udp HOSTPORT
  dump-conntrack BRIDGE               tracked connections: tuples both ways, state, timeout
  flush-conntrack BRIDGE              forget every tracked connection
  dump-ports BRIDGE [PORT]            per-port counters and drop reasons
  memory-show                         the daemon's memory, and how full each bridge's tables are
Datapath:
  replay BRIDGE PORT FILE.pcap        switch a capture's frames as if received on PORT
  time-warp MSECS                     advance the datapath clock (aging) without waiting

Options:
  --run-dir DIR        where vswitchd's socket is (default $VSWITCH_RUN_DIR or /run/vswitch)
  --timeout SECS       give up after SECS seconds (default 5; 0 waits forever)
  -f, --format FORMAT  table (default) or json
  -h, --help           this text
  -V, --version        the version
";

fn need(args: &[String], n: usize, usage: &str) -> Result<(), String> {
    if args.len() < n {
        Err(format!("too few arguments: usage: {usage}"))
    } else {
        Ok(())
    }
}

fn exactly(args: &[String], n: usize, usage: &str) -> Result<(), String> {
    if args.len() != n {
        Err(format!("expected {n} argument{}: usage: {usage}", if n == 1 { "" } else { "s" }))
    } else {
        Ok(())
    }
}

/// A flow file: one flow per line; blank lines and `#` comments skipped.
fn read_flows(path: &str) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read the flow file {path}: {e}"))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect())
}

/// `--name value` and `--name=value` options, each at most once, from `known`.
fn options(
    args: &[String],
    known: &[&str],
    usage: &str,
) -> Result<std::collections::BTreeMap<String, String>, String> {
    let mut found = std::collections::BTreeMap::new();
    let mut rest = args.iter();
    while let Some(option) = rest.next() {
        let (name, value) = match option.split_once('=') {
            Some((n, v)) => (n, v.to_owned()),
            None => (
                option.as_str(),
                rest.next().cloned().ok_or_else(|| format!("{option} needs a value; usage: {usage}"))?,
            ),
        };
        if !known.contains(&name) {
            return Err(format!("unknown option {name}; usage: {usage}"));
        }
        if found.insert(name.to_owned(), value).is_some() {
            return Err(format!("{name} given twice; usage: {usage}"));
        }
    }
    Ok(found)
}

fn table(name: &str) -> Result<Table, String> {
    Table::parse(name).ok_or_else(|| format!("unknown table {name:?}: use bridge, port or interface"))
}

/// Splits `--name=value` and `--name value`; returns the value and how many
/// arguments it took.
fn option_value(args: &[String], i: usize, name: &str) -> Result<Option<(String, usize)>, String> {
    let arg = &args[i];
    if let Some(v) = arg.strip_prefix(&format!("{name}=")) {
        return Ok(Some((v.to_owned(), 1)));
    }
    if arg == name {
        let v = args.get(i + 1).ok_or_else(|| format!("{name} needs a value"))?;
        return Ok(Some((v.clone(), 2)));
    }
    Ok(None)
}

pub fn parse(args: &[String], env_run_dir: Option<String>) -> Result<(Options, Action), String> {
    let mut options = Options {
        run_dir: PathBuf::from(env_run_dir.unwrap_or_else(|| proto::DEFAULT_RUN_DIR.into())),
        timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECS),
        format: Format::Table,
    };
    let mut i = 0;
    while i < args.len() && args[i].starts_with('-') && args[i] != "--" {
        let arg = args[i].as_str();
        if arg == "-h" || arg == "--help" {
            return Ok((options, Action::Help));
        }
        if arg == "-V" || arg == "--version" {
            return Ok((options, Action::Version));
        }
        if let Some((v, n)) = option_value(args, i, "--run-dir")? {
            options.run_dir = PathBuf::from(v);
            i += n;
        } else if let Some((v, n)) = option_value(args, i, "--timeout")? {
            let secs: f64 = v
                .parse()
                .ok()
                .filter(|s: &f64| s.is_finite() && *s >= 0.0)
                .ok_or_else(|| format!("--timeout takes a number of seconds, not {v:?}"))?;
            options.timeout = if secs == 0.0 { Duration::MAX } else { Duration::from_secs_f64(secs) };
            i += n;
        } else if let Some((v, n)) = option_value(args, i, "--format")?.or(option_value(args, i, "-f")?) {
            options.format = match v.as_str() {
                "table" | "list" => Format::Table,
                "json" => Format::Json,
                _ => return Err(format!("--format takes table or json, not {v:?}")),
            };
            i += n;
        } else if arg == "--may-exist" || arg == "--if-exists" || arg == "--strict" {
            break;
        } else {
            return Err(format!("unknown option {arg}; see vsctl --help"));
        }
    }
    let rest = &args[i..];
    if rest.is_empty() {
        return Err("no command given; see vsctl --help".into());
    }
    // The datapath actions stand alone.
    match rest[0].as_str() {
        "replay" => {
            exactly(&rest[1..], 3, "replay BRIDGE PORT FILE.pcap")?;
            return Ok((
                options,
                Action::Replay {
                    bridge: rest[1].clone(),
                    port: rest[2].clone(),
                    file: PathBuf::from(&rest[3]),
                },
            ));
        }
        "time-warp" => {
            exactly(&rest[1..], 1, "time-warp MSECS")?;
            let msecs =
                rest[1].parse().map_err(|_| format!("time-warp takes milliseconds, not {:?}", rest[1]))?;
            return Ok((options, Action::TimeWarp { msecs }));
        }
        _ => {}
    }
    let mut commands = Vec::new();
    for words in rest.split(|a| a == "--") {
        if words.is_empty() {
            continue;
        }
        commands.push(parse_command(words)?);
    }
    if commands.is_empty() {
        return Err("no command given; see vsctl --help".into());
    }
    Ok((options, Action::Transact(commands)))
}

fn parse_command(words: &[String]) -> Result<Command, String> {
    let mut may_exist = false;
    let mut if_exists = false;
    let mut strict = false;
    let mut i = 0;
    while let Some(w) = words.get(i).filter(|w| w.starts_with("--")) {
        match w.as_str() {
            "--may-exist" => may_exist = true,
            "--if-exists" => if_exists = true,
            "--strict" => strict = true,
            other => {
                return Err(format!(
                    "unknown command option {other}; commands take --may-exist, --if-exists or --strict"
                ))
            }
        }
        i += 1;
    }
    let (name, args) = words[i..].split_first().ok_or("an option without a command")?;
    let name = name.as_str();
    let takes_strict = matches!(name, "del-flows" | "mod-flows");
    if strict && !takes_strict {
        return Err(format!("{name} does not take --strict"));
    }
    let allow = |may: bool, ifx: bool| -> Result<(), String> {
        if (may_exist && !may) || (if_exists && !ifx) {
            Err(format!("{name} does not take {}", if may_exist { "--may-exist" } else { "--if-exists" }))
        } else {
            Ok(())
        }
    };
    let command = match name {
        "add-br" => {
            allow(true, false)?;
            exactly(args, 1, "add-br BRIDGE")?;
            Command::AddBr { bridge: args[0].clone(), may_exist }
        }
        "del-br" => {
            allow(false, true)?;
            exactly(args, 1, "del-br BRIDGE")?;
            Command::DelBr { bridge: args[0].clone(), if_exists }
        }
        "list-br" => {
            allow(false, false)?;
            exactly(args, 0, "list-br")?;
            Command::ListBr
        }
        "br-exists" => {
            allow(false, false)?;
            exactly(args, 1, "br-exists BRIDGE")?;
            Command::BrExists { bridge: args[0].clone() }
        }
        "add-port" => {
            allow(true, false)?;
            need(args, 2, "add-port BRIDGE PORT [COLUMN[:KEY]=VALUE]...")?;
            Command::AddPort {
                bridge: args[0].clone(),
                port: args[1].clone(),
                settings: args[2..].to_vec(),
                may_exist,
            }
        }
        "del-port" => {
            allow(false, true)?;
            let (bridge, port) = match args {
                [port] => (None, port.clone()),
                [bridge, port] => (Some(bridge.clone()), port.clone()),
                _ => return Err("usage: del-port [BRIDGE] PORT".into()),
            };
            Command::DelPort { bridge, port, if_exists }
        }
        "list-ports" => {
            allow(false, false)?;
            exactly(args, 1, "list-ports BRIDGE")?;
            Command::ListPorts { bridge: args[0].clone() }
        }
        "port-to-br" => {
            allow(false, false)?;
            exactly(args, 1, "port-to-br PORT")?;
            Command::PortToBr { port: args[0].clone() }
        }
        "show" => {
            allow(false, false)?;
            exactly(args, 0, "show")?;
            Command::Show
        }
        "set" => {
            allow(false, true)?;
            need(args, 3, "set TABLE RECORD COLUMN[:KEY]=VALUE...")?;
            Command::Set {
                table: table(&args[0])?,
                record: args[1].clone(),
                settings: args[2..].to_vec(),
                if_exists,
            }
        }
        "get" => {
            allow(false, true)?;
            need(args, 3, "get TABLE RECORD COLUMN[:KEY]...")?;
            Command::Get {
                table: table(&args[0])?,
                record: args[1].clone(),
                columns: args[2..].to_vec(),
                if_exists,
            }
        }
        "clear" => {
            allow(false, false)?;
            need(args, 3, "clear TABLE RECORD COLUMN...")?;
            Command::Clear { table: table(&args[0])?, record: args[1].clone(), columns: args[2..].to_vec() }
        }
        "remove" => {
            allow(false, false)?;
            need(args, 4, "remove TABLE RECORD COLUMN KEY...")?;
            Command::Remove {
                table: table(&args[0])?,
                record: args[1].clone(),
                column: args[2].clone(),
                keys: args[3..].to_vec(),
            }
        }
        "add-container-port" => {
            allow(false, false)?;
            let usage = "add-container-port BRIDGE IFNAME NETNS [--ip CIDR] [--gateway IP] [--mac MAC] [--mtu N] [--tag VLAN] [--container-id ID]";
            need(args, 3, usage)?;
            let (mut ip, mut gateway, mut mac, mut mtu, mut tag, mut container_id) =
                (None, None, None, None, None, None);
            let mut rest = args[3..].iter();
            while let Some(option) = rest.next() {
                let (name, inline) = match option.split_once('=') {
                    Some((n, v)) => (n, Some(v.to_owned())),
                    None => (option.as_str(), None),
                };
                let value = match inline {
                    Some(v) => v,
                    None => {
                        rest.next().cloned().ok_or_else(|| format!("{name} needs a value; usage: {usage}"))?
                    }
                };
                let number = |what: &str| {
                    value.parse::<u32>().map_err(|_| format!("{what} takes a number, not {value:?}"))
                };
                match name {
                    "--ip" => ip = Some(value.clone()),
                    "--gateway" => gateway = Some(value.clone()),
                    "--mac" => mac = Some(value.clone()),
                    "--container-id" => container_id = Some(value.clone()),
                    "--mtu" => mtu = Some(number("--mtu")?),
                    "--tag" => {
                        tag = Some(
                            u16::try_from(number("--tag")?)
                                .map_err(|_| "--tag takes a VLAN id, 0 to 4095")?,
                        )
                    }
                    other => return Err(format!("unknown option {other}; usage: {usage}")),
                }
            }
            Command::AddContainerPort {
                bridge: args[0].clone(),
                ifname: args[1].clone(),
                netns: args[2].clone(),
                ip,
                gateway,
                mac,
                mtu,
                tag,
                container_id,
            }
        }
        "del-container-port" => {
            allow(false, true)?;
            exactly(args, 3, "del-container-port BRIDGE IFNAME NETNS")?;
            Command::DelContainerPort {
                bridge: args[0].clone(),
                ifname: args[1].clone(),
                netns: args[2].clone(),
                if_exists,
            }
        }
        "add-flow" => {
            allow(false, false)?;
            need(args, 2, "add-flow BRIDGE FLOW")?;
            Command::AddFlow { bridge: args[0].clone(), flow: args[1..].join(" ") }
        }
        "add-flows" | "replace-flows" => {
            allow(false, false)?;
            exactly(args, 2, &format!("{name} BRIDGE FILE (one flow per line, # comments)"))?;
            let flows = read_flows(&args[1])?;
            if name == "add-flows" {
                Command::AddFlows { bridge: args[0].clone(), flows }
            } else {
                Command::ReplaceFlows { bridge: args[0].clone(), flows }
            }
        }
        "mod-flows" => {
            allow(false, false)?;
            need(args, 2, "mod-flows [--strict] BRIDGE FLOW")?;
            Command::ModFlows { bridge: args[0].clone(), flow: args[1..].join(" "), strict }
        }
        "del-flows" => {
            allow(false, false)?;
            need(args, 1, "del-flows [--strict] BRIDGE [MATCH]")?;
            let matcher = (args.len() > 1).then(|| args[1..].join(" "));
            Command::DelFlows { bridge: args[0].clone(), matcher, strict }
        }
        "dump-flows" => {
            allow(false, false)?;
            need(args, 1, "dump-flows BRIDGE [MATCH]")?;
            let matcher = (args.len() > 1).then(|| args[1..].join(" "));
            Command::DumpFlows { bridge: args[0].clone(), matcher }
        }
        "trace" => {
            allow(false, false)?;
            need(args, 2, "trace BRIDGE PACKET (match syntax, e.g. in_port=p1,ip,nw_dst=198.18.0.2)")?;
            Command::Trace { bridge: args[0].clone(), packet: args[1..].join(" ") }
        }
        "dpctl-dump-flows" => {
            allow(false, false)?;
            exactly(args, 1, "dpctl-dump-flows BRIDGE")?;
            Command::DpctlDumpFlows { bridge: args[0].clone() }
        }
        "fdb-show" => {
            allow(false, false)?;
            exactly(args, 1, "fdb-show BRIDGE")?;
            Command::FdbShow { bridge: args[0].clone() }
        }
        "fdb-stats-show" => {
            allow(false, false)?;
            exactly(args, 1, "fdb-stats-show BRIDGE")?;
            Command::FdbStatsShow { bridge: args[0].clone() }
        }
        "add-nat" => {
            allow(false, false)?;
            let usage = "add-nat BRIDGE masquerade --out-port PORT";
            let out_port = match args {
                [_, kind, flag, port] if kind == "masquerade" && flag == "--out-port" => port.clone(),
                [_, kind, flag] if kind == "masquerade" && flag.starts_with("--out-port=") => {
                    flag["--out-port=".len()..].to_owned()
                }
                _ => return Err(format!("usage: {usage}")),
            };
            Command::AddNat { bridge: args[0].clone(), out_port }
        }
        "del-nat" => {
            allow(false, false)?;
            exactly(args, 1, "del-nat BRIDGE")?;
            Command::DelNat { bridge: args[0].clone() }
        }
        "add-port-mapping" => {
            allow(false, false)?;
            exactly(args, 4, "add-port-mapping BRIDGE tcp|udp HOSTPORT IP:PORT")?;
            let host_port =
                args[2].parse().map_err(|_| format!("{:?} is not a port, 1 to 65535", args[2]))?;
            Command::AddPortMapping {
                bridge: args[0].clone(),
                proto: args[1].clone(),
                host_port,
                target: args[3].clone(),
            }
        }
        "del-port-mapping" => {
            allow(false, false)?;
            exactly(args, 3, "del-port-mapping BRIDGE tcp|udp HOSTPORT")?;
            let host_port =
                args[2].parse().map_err(|_| format!("{:?} is not a port, 1 to 65535", args[2]))?;
            Command::DelPortMapping { bridge: args[0].clone(), proto: args[1].clone(), host_port }
        }
        "dump-conntrack" => {
            allow(false, false)?;
            exactly(args, 1, "dump-conntrack BRIDGE")?;
            Command::DumpConntrack { bridge: args[0].clone() }
        }
        "flush-conntrack" => {
            allow(false, false)?;
            exactly(args, 1, "flush-conntrack BRIDGE")?;
            Command::FlushConntrack { bridge: args[0].clone() }
        }
        "fdb-flush" => {
            allow(false, false)?;
            if args.len() > 1 {
                return Err("usage: fdb-flush [BRIDGE]".into());
            }
            Command::FdbFlush { bridge: args.first().cloned() }
        }
        "dump-ports" => {
            allow(false, false)?;
            if args.is_empty() || args.len() > 2 {
                return Err("usage: dump-ports BRIDGE [PORT]".into());
            }
            Command::DumpPorts { bridge: args[0].clone(), port: args.get(1).cloned() }
        }
        "memory-show" => {
            allow(false, false)?;
            exactly(args, 0, "memory-show")?;
            Command::MemoryShow
        }
        "add-overlay" => {
            allow(true, false)?;
            let usage = "add-overlay NAME --subnet CIDR [--vni N] [--gateway IP] [--mtu N]";
            need(args, 1, usage)?;
            let options = options(&args[1..], &["--subnet", "--vni", "--gateway", "--mtu"], usage)?;
            let number = |name: &str| -> Result<Option<u32>, String> {
                options
                    .get(name)
                    .map(|v| v.parse::<u32>().map_err(|_| format!("{name} takes a number, not {v:?}")))
                    .transpose()
            };
            Command::AddOverlay {
                name: args[0].clone(),
                subnet: options
                    .get("--subnet")
                    .cloned()
                    .ok_or_else(|| format!("--subnet is required; usage: {usage}"))?,
                vni: number("--vni")?,
                gateway: options.get("--gateway").cloned(),
                mtu: number("--mtu")?,
                may_exist,
            }
        }
        "del-overlay" => {
            allow(false, true)?;
            exactly(args, 1, "del-overlay NAME")?;
            Command::DelOverlay { name: args[0].clone(), if_exists }
        }
        "list-overlays" => {
            allow(false, false)?;
            exactly(args, 0, "list-overlays")?;
            Command::ListOverlays
        }
        "set-cluster" => {
            allow(false, false)?;
            let usage = "set-cluster etcd://HOST:PORT[,HOST:PORT...] --advertise IP [--ttl SECS], or set-cluster none";
            need(args, 1, usage)?;
            if args[0] == "none" {
                exactly(args, 1, usage)?;
                Command::SetCluster { store: vec![], advertise: None, ttl_secs: None }
            } else {
                let options = options(&args[1..], &["--advertise", "--ttl"], usage)?;
                let ttl_secs = options
                    .get("--ttl")
                    .map(|v| v.parse::<u64>().map_err(|_| format!("--ttl takes seconds, not {v:?}")))
                    .transpose()?;
                Command::SetCluster {
                    store: vec![args[0].clone()],
                    advertise: Some(
                        options
                            .get("--advertise")
                            .cloned()
                            .ok_or_else(|| format!("--advertise is required; usage: {usage}"))?,
                    ),
                    ttl_secs,
                }
            }
        }
        "replay" | "time-warp" => return Err(format!("{name} cannot be joined with other commands by --")),
        other => return Err(format!("unknown command {other:?}; see vsctl --help")),
    };
    Ok(command)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_words(line: &str) -> Result<(Options, Action), String> {
        let args: Vec<String> = line.split_whitespace().map(String::from).collect();
        parse(&args, None)
    }

    #[test]
    fn transaction_of_several_commands() {
        let (opts, action) =
            parse_words("--timeout=2 -f json add-br br0 -- --may-exist add-port br0 p1 tag=10 -- show")
                .unwrap();
        assert_eq!(opts.timeout, Duration::from_secs(2));
        assert_eq!(opts.format, Format::Json);
        let Action::Transact(commands) = action else { panic!("not a transaction") };
        assert_eq!(commands.len(), 3);
        assert_eq!(
            commands[1],
            Command::AddPort {
                bridge: "br0".into(),
                port: "p1".into(),
                settings: vec!["tag=10".into()],
                may_exist: true
            }
        );
    }

    #[test]
    fn container_port_options() {
        let (_, action) =
            parse_words("add-container-port br0 eth0 web1 --ip 198.18.0.2/24 --gateway=198.18.0.1 --tag 10")
                .unwrap();
        let Action::Transact(commands) = action else { panic!("not a transaction") };
        assert!(matches!(
            &commands[0],
            Command::AddContainerPort { ip: Some(ip), gateway: Some(_), tag: Some(10), mtu: None, .. } if ip == "198.18.0.2/24"
        ));
        assert!(parse_words("add-container-port br0 eth0 web1 --ip").is_err());
        assert!(parse_words("add-container-port br0 eth0 web1 --tag 70000").is_err());
        assert!(parse_words("add-container-port br0 eth0 web1 --colour red").is_err());
    }

    #[test]
    fn flow_commands() {
        let (_, action) = parse_words("--strict del-flows br0 priority=5,in_port=1").unwrap();
        let Action::Transact(commands) = action else { panic!("not a transaction") };
        assert_eq!(
            commands[0],
            Command::DelFlows {
                bridge: "br0".into(),
                matcher: Some("priority=5,in_port=1".into()),
                strict: true
            }
        );
        assert!(parse_words("--strict add-br br0").is_err());
        assert!(parse_words("add-flows br0 /nonexistent/flows.txt").unwrap_err().contains("cannot read"));
    }

    #[test]
    fn options_and_arity_are_checked() {
        assert!(parse_words("--if-exists add-br br0").is_err());
        assert!(parse_words("add-br").is_err());
        assert!(parse_words("add-br a b").is_err());
        assert!(parse_words("frobnicate").is_err());
        assert!(parse_words("set colour x a=b").is_err());
        assert!(parse_words("--timeout -1 list-br").is_err());
        assert!(parse_words("list-br -- replay br0 p1 f").is_err());
        assert!(parse_words("").is_err());
        assert!(matches!(parse_words("--if-exists del-br br0").unwrap().1, Action::Transact(_)));
        assert!(matches!(parse_words("time-warp 301000").unwrap().1, Action::TimeWarp { msecs: 301000 }));
    }
}
