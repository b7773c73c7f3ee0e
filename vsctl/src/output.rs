//! Printing results as ovs-vsctl and ovs-ofctl print them, or as JSON.

use std::fmt::Write;

use proto::{
    BridgeView, CommandResult, ConnView, FdbEntry, FdbStats, FlowView, MegaflowView, MemoryView, OverlayView,
    PortStats, TupleView,
};

fn map(m: &std::collections::BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", pairs.join(", "))
}

pub fn show(bridges: &[BridgeView]) -> String {
    let mut out = String::new();
    for b in bridges {
        let _ = writeln!(out, "Bridge {}", b.name);
        if let Some(gateway) = &b.gateway {
            let _ = writeln!(out, "    gateway: {gateway}");
        }
        if let Some(port) = &b.masquerade {
            let _ = writeln!(out, "    masquerade: out_port={port}");
        }
        for mapping in &b.port_mappings {
            let _ = writeln!(out, "    port_mapping: {mapping}");
        }
        if !b.other_config.is_empty() {
            let _ = writeln!(out, "    other_config: {}", map(&b.other_config));
        }
        if let Some(o) = &b.overlay {
            overlay(&mut out, o, "    overlay: ");
        }
        for p in &b.ports {
            let _ = writeln!(out, "    Port {}", p.name);
            if let Some(tag) = p.tag {
                let _ = writeln!(out, "        tag: {tag}");
            }
            if !p.trunks.is_empty() {
                let trunks: Vec<String> = p.trunks.iter().map(u16::to_string).collect();
                let _ = writeln!(out, "        trunks: [{}]", trunks.join(", "));
            }
            if let Some(mode) = &p.vlan_mode {
                let _ = writeln!(out, "        vlan_mode: {mode}");
            }
            if p.isolated {
                let _ = writeln!(out, "        isolated: true");
            }
            if let Some(ip) = &p.ip {
                let _ = writeln!(out, "        ip: {ip}");
            }
            if let Some(nexthop) = &p.nexthop {
                let _ = writeln!(out, "        nexthop: {nexthop}");
            }
            if !p.external_ids.is_empty() {
                let _ = writeln!(out, "        external_ids: {}", map(&p.external_ids));
            }
            let _ = writeln!(out, "        Interface {}", p.name);
            if p.interface_type != "system" {
                let _ = writeln!(out, "            type: {}", p.interface_type);
            }
            if !p.options.is_empty() {
                let _ = writeln!(out, "            options: {}", map(&p.options));
            }
            if let Some(error) = &p.error {
                let _ = writeln!(out, "            error: {error:?}");
            }
        }
    }
    out
}

/// An overlay network: its settings, the store's state, and its peers.
fn overlay(out: &mut String, o: &OverlayView, lead: &str) {
    let gateway = o.gateway.as_deref().map(|g| format!(" gateway {g}")).unwrap_or_default();
    let _ = writeln!(out, "{lead}{} subnet {} vni {}{gateway} mtu {}", o.name, o.subnet, o.vni, o.mtu);
    let _ = writeln!(out, "        store: {}", o.store);
    if !o.local_bridge {
        let _ = writeln!(out, "        no local bridge (see vswitchd's log)");
    }
    for e in &o.local_endpoints {
        let _ = writeln!(out, "        local endpoint {e}");
    }
    for p in &o.peers {
        let _ = writeln!(out, "        peer {} via {}: {}", p.host, p.port, p.endpoints.join(", "));
    }
}

pub fn overlays(list: &[OverlayView]) -> String {
    let mut out = String::new();
    for o in list {
        overlay(&mut out, o, "");
    }
    out
}

pub fn fdb(entries: &[FdbEntry]) -> String {
    let width = entries.iter().map(|e| e.port.len()).max().unwrap_or(4).max(4);
    let mut out = format!("{:>width$}  VLAN  MAC                Age\n", "port");
    for e in entries {
        if e.is_static {
            let _ = writeln!(out, "{:>width$}  {:>4}  {}  static", e.port, e.vlan, e.mac);
        } else {
            let _ = writeln!(out, "{:>width$}  {:>4}  {}  {:>3}", e.port, e.vlan, e.mac, e.age_secs);
        }
    }
    out
}

/// As `ovs-appctl fdb/stats-show` prints it.
pub fn fdb_stats(s: &FdbStats) -> String {
    format!(
        "Statistics for bridge \"{}\":\n  Current/maximum MAC entries in the table: {}/{}\n  \
         Current static MAC entries in the table : {}\n  Total number of learned MAC entries     : {}\n  \
         Total number of expired MAC entries     : {}\n  Total number of evicted MAC entries     : {}\n  \
         Total number of port moved MAC entries  : {}\n",
        s.bridge, s.entries, s.limit, s.static_entries, s.learned, s.expired, s.evicted, s.moved
    )
}

pub fn ports(stats: &[PortStats]) -> String {
    let mut out = format!("{} ports\n", stats.len());
    for s in stats {
        let _ = writeln!(
            out,
            "  port {} ({}): rx pkts={}, bytes={}, drop={}\n           tx pkts={}, bytes={}, drop={}",
            s.port, s.ofport, s.rx_packets, s.rx_bytes, s.rx_dropped, s.tx_packets, s.tx_bytes, s.tx_dropped
        );
        if !s.drop_reasons.is_empty() {
            let reasons: Vec<String> = s.drop_reasons.iter().map(|(r, n)| format!("{r}={n}")).collect();
            let _ = writeln!(out, "           rx drops: {}", reasons.join(", "));
        }
        if s.link_lost > 0 {
            let _ = writeln!(
                out,
                "           link lost {} time{}",
                s.link_lost,
                if s.link_lost == 1 { "" } else { "s" }
            );
        }
        if !s.malformed.is_empty() {
            let counts: Vec<String> = s.malformed.iter().map(|(r, n)| format!("{r}={n}")).collect();
            let _ = writeln!(out, "           malformed, forwarded: {}", counts.join(", "));
        }
    }
    out
}

/// As `ovs-ofctl dump-flows` prints them.
pub fn flows(flows: &[FlowView]) -> String {
    let mut out = String::new();
    for f in flows {
        let timeouts = match (f.idle_timeout, f.hard_timeout) {
            (0, 0) => String::new(),
            (i, 0) => format!("idle_timeout={i}, "),
            (0, h) => format!("hard_timeout={h}, "),
            (i, h) => format!("idle_timeout={i}, hard_timeout={h}, "),
        };
        let sep = if f.flow.starts_with("actions=") { " " } else { "," };
        let _ = writeln!(
            out,
            " cookie={:#x}, duration={:.3}s, table={}, n_packets={}, n_bytes={}, {timeouts}idle_age={}, priority={}{sep}{}",
            f.cookie, f.duration_secs, f.table, f.n_packets, f.n_bytes, f.idle_age_secs, f.priority, f.flow
        );
    }
    out
}

pub fn megaflows(flows: &[MegaflowView]) -> String {
    flows.iter().map(|m| format!("{}, packets:{}, actions:{}\n", m.matcher, m.packets, m.actions)).collect()
}

/// One line per connection, in the manner of `ovs-appctl dpctl/dump-conntrack`.
pub fn conntrack(conns: &[ConnView]) -> String {
    let tuple = |t: &TupleView| format!("src={},dst={},sport={},dport={}", t.src, t.dst, t.sport, t.dport);
    conns
        .iter()
        .map(|c| {
            format!(
                "{},orig=({}),reply=({}),zone={},mark={},state={},timeout={}\n",
                c.proto,
                tuple(&c.original),
                tuple(&c.reply),
                c.zone,
                c.mark,
                c.state,
                c.timeout_secs
            )
        })
        .collect()
}

/// Process figures on one line, then a line per bridge, as
/// `ovs-appctl memory/show` prints `key:value` pairs.
pub fn memory(m: &MemoryView) -> String {
    let mib = |bytes: u64| format!("{:.1}MiB", bytes as f64 / (1 << 20) as f64);
    let mut out = format!(
        "rss:{} peak_rss:{} packet_buffers:{}",
        mib(m.rss_kib * 1024),
        mib(m.peak_rss_kib * 1024),
        mib(m.packet_buffers)
    );
    if let (Some(in_use), Some(free)) = (m.heap_in_use, m.heap_free) {
        let _ = write!(out, " heap_in_use:{} heap_free:{}", mib(in_use), mib(free));
    }
    out.push('\n');
    for b in &m.bridges {
        let _ = writeln!(
            out,
            "{}: ports:{} flows:{} megaflows:{} mac:{}/{} conntrack:{}/{} neighbours:{} waiting_for_arp:{}",
            b.name,
            b.ports,
            b.flows,
            b.megaflows,
            b.mac_entries,
            b.mac_limit,
            b.conntrack,
            b.conntrack_limit,
            b.neighbours,
            b.frames_waiting_for_arp
        );
    }
    out
}

/// The text a command's result prints, if any.
pub fn text(result: &CommandResult) -> String {
    match result {
        CommandResult::Done | CommandResult::Exists(_) => String::new(),
        CommandResult::Names(items) | CommandResult::Values(items) => {
            items.iter().map(|i| format!("{i}\n")).collect()
        }
        CommandResult::Show(bridges) => show(bridges),
        CommandResult::Fdb(entries) => fdb(entries),
        CommandResult::FdbStats(stats) => fdb_stats(stats),
        CommandResult::Ports(stats) => ports(stats),
        CommandResult::Flows(f) => flows(f),
        CommandResult::Megaflows(m) => megaflows(m),
        CommandResult::Conntrack(c) => conntrack(c),
        CommandResult::Memory(m) => memory(m),
        CommandResult::Overlays(o) => overlays(o),
        CommandResult::Attached(a) => {
            let gateway = a.gateway.as_deref().map(|g| format!(" gateway {g}")).unwrap_or_default();
            format!("{} ip {} mac {}{gateway} mtu {}\n", a.port, a.ip, a.mac, a.mtu)
        }
    }
}

/// The JSON a command's result prints: just its value.
pub fn json(result: &CommandResult) -> serde_json::Value {
    match result {
        CommandResult::Done => serde_json::Value::Null,
        CommandResult::Exists(b) => (*b).into(),
        CommandResult::Names(v) | CommandResult::Values(v) => serde_json::json!(v),
        CommandResult::Show(v) => serde_json::json!(v),
        CommandResult::Fdb(v) => serde_json::json!(v),
        CommandResult::FdbStats(v) => serde_json::json!(v),
        CommandResult::Ports(v) => serde_json::json!(v),
        CommandResult::Flows(v) => serde_json::json!(v),
        CommandResult::Megaflows(v) => serde_json::json!(v),
        CommandResult::Conntrack(v) => serde_json::json!(v),
        CommandResult::Memory(v) => serde_json::json!(v),
        CommandResult::Overlays(v) => serde_json::json!(v),
        CommandResult::Attached(v) => serde_json::json!(v),
    }
}
