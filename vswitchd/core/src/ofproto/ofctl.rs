//! ovs-ofctl's flow syntax: `table=0,priority=100,ip,nw_src=198.18.0.0/24,actions=drop`.
//!
//! A flow is a list of `key[=value]` words separated by commas or spaces;
//! `actions=` takes the rest of the line. Matches may carry masks
//! (`dl_dst=01:00:00:00:00:00/01:00:00:00:00:00`, `tp_dst=0x1000/0xf000`)
//! or prefixes (`nw_src=198.18.0.0/15`). Protocol shorthands (`ip`, `tcp`,
//! `arp`, `icmp6`...) set `dl_type` and `nw_proto`. As in OVS, a field
//! needs its protocol: `nw_src` needs `ip` or `arp`, `tp_dst` needs a
//! transport protocol; a flow that breaks this is refused rather than
//! silently matching nothing. Errors quote the offending word.
//!
//! Port names are resolved by the caller's function, so `in_port=p1` and
//! `output:p1` work as they do with ovs-ofctl.
//!
//! Threads: parsing is pure; a [`FlowSpec`] is plain data (`Send` and
//! `Sync`), parsed by the control plane and sent to the forwarding thread.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::ofproto::actions::Action;
use crate::ofproto::flow::{Field, Match};
use crate::packet::parse_mac;

/// A parsed flow: where it goes, what it matches, what it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowSpec {
    pub table: u8,
    pub priority: u16,
    pub cookie: u64,
    /// `cookie=V/M`: which cookie bits a filter (del-flows, dump-flows,
    /// mod-flows) selects on; 0 when no mask was given. A flow added with
    /// a mask is refused by the caller.
    pub cookie_mask: u64,
    pub idle_timeout: u16,
    pub hard_timeout: u16,
    pub matcher: Match,
    pub actions: Vec<Action>,
    /// The match and actions as written, for `dump-flows`: e.g.
    /// `ip,nw_src=198.18.1.0/24 actions=drop`.
    pub text: String,
}

pub const DEFAULT_PRIORITY: u16 = 32768;

/// Words that are the flow's place and bookkeeping, not its match.
fn is_meta_word(word: &str) -> bool {
    ["table=", "priority=", "cookie=", "idle_timeout=", "hard_timeout="].iter().any(|p| word.starts_with(p))
}

/// Parses a match alone, as `del-flows` and `dump-flows` take it
/// (`actions=` is not allowed); also says whether a table was named.
pub fn parse_match(text: &str, ports: &dyn Fn(&str) -> Option<u16>) -> Result<(FlowSpec, bool), String> {
    if find_actions(text).is_some() {
        return Err("a match takes no actions".into());
    }
    let table_given = text.split([',', ' ']).any(|w| w.starts_with("table="));
    parse_flow(&format!("{text},actions=drop"), ports).map(|f| (f, table_given))
}

/// Parses one flow. `ports` turns a port name into its number.
pub fn parse_flow(text: &str, ports: &dyn Fn(&str) -> Option<u16>) -> Result<FlowSpec, String> {
    let (match_part, actions_part) = match find_actions(text) {
        Some(i) => (&text[..i], Some(&text[i + "actions=".len()..])),
        None => (text, None),
    };
    let mut spec = FlowSpec {
        table: 0,
        priority: DEFAULT_PRIORITY,
        cookie: 0,
        cookie_mask: 0,
        idle_timeout: 0,
        hard_timeout: 0,
        matcher: Match::default(),
        actions: Vec::new(),
        text: String::new(),
    };
    let mut dl_type: Option<u16> = None;
    let mut nw_proto: Option<u8> = None;
    let mut pending = Vec::new();
    for word in match_part.split([',', ' ', '\t']).filter(|w| !w.is_empty()) {
        let (key, value) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (word, None),
        };
        let need = || value.ok_or_else(|| format!("{key} needs a value (in '{word}')"));
        let bad = |what: &str| format!("invalid {key} value in '{word}': {what}");
        if let Some((t, p)) = shorthand(key) {
            if value.is_some() {
                return Err(format!("'{key}' takes no value (in '{word}')"));
            }
            dl_type = Some(t);
            if let Some(p) = p {
                nw_proto = Some(p);
            }
            continue;
        }
        match key {
            "table" => {
                spec.table =
                    parse_num(need()?).filter(|t| *t <= 254).ok_or_else(|| bad("a table is 0 to 254"))? as u8
            }
            "priority" => {
                spec.priority =
                    parse_num(need()?).filter(|p| *p <= 65535).ok_or_else(|| bad("0 to 65535"))? as u16
            }
            "cookie" => {
                let (cookie, mask) = match need()?.split_once('/') {
                    // OVS's documents write an exact mask as -1.
                    Some((v, "-1")) => (parse_num(v), Some(u64::MAX)),
                    Some((v, m)) => (parse_num(v), parse_num(m)),
                    None => (parse_num(need()?), Some(0)),
                };
                spec.cookie = cookie.ok_or_else(|| bad("a 64-bit number[/mask]"))?;
                spec.cookie_mask = mask.ok_or_else(|| bad("a 64-bit number[/mask]"))?;
            }
            "idle_timeout" => {
                spec.idle_timeout = parse_num(need()?)
                    .filter(|v| *v <= 65535)
                    .ok_or_else(|| bad("seconds, 0 to 65535"))? as u16
            }
            "hard_timeout" => {
                spec.hard_timeout = parse_num(need()?)
                    .filter(|v| *v <= 65535)
                    .ok_or_else(|| bad("seconds, 0 to 65535"))? as u16
            }
            "dl_type" | "eth_type" => {
                dl_type = Some(
                    parse_num(need()?)
                        .filter(|v| *v <= 0xffff)
                        .ok_or_else(|| bad("an Ethernet type such as 0x0800"))? as u16,
                )
            }
            "nw_proto" | "ip_proto" | "arp_op" => {
                nw_proto =
                    Some(parse_num(need()?).filter(|v| *v <= 255).ok_or_else(|| bad("0 to 255"))? as u8)
            }
            _ => pending.push((key, need()?, word)),
        }
    }
    if let Some(t) = dl_type {
        spec.matcher = spec.matcher.with(Field::DlType, t.into(), u64::MAX);
    }
    if let Some(p) = nw_proto {
        if !matches!(dl_type, Some(0x0800 | 0x86dd | 0x0806)) {
            return Err("nw_proto needs ip, ipv6 or arp (write e.g. 'ip,nw_proto=17')".into());
        }
        spec.matcher = spec.matcher.with(Field::NwProto, p.into(), u64::MAX);
    }
    for (key, value, word) in pending {
        spec.matcher = match_field(spec.matcher, key, value, word, dl_type, nw_proto, ports)?;
    }
    let actions =
        actions_part.ok_or("the flow has no actions: end it with actions=... (actions=drop to drop)")?;
    spec.actions = parse_actions(actions, ports)?;
    let matches: Vec<&str> =
        match_part.split([',', ' ', '\t']).filter(|w| !w.is_empty() && !is_meta_word(w)).collect();
    spec.text = if matches.is_empty() {
        format!("actions={}", actions.trim())
    } else {
        format!("{} actions={}", matches.join(","), actions.trim())
    };
    Ok(spec)
}

/// Where `actions=` starts, outside any parentheses.
fn find_actions(text: &str) -> Option<usize> {
    let mut depth = 0i32;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ if depth == 0 && text[i..].starts_with("actions=") => {
                let boundary = i == 0 || text[..i].ends_with([',', ' ', '\t']);
                if boundary {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

fn shorthand(word: &str) -> Option<(u16, Option<u8>)> {
    Some(match word {
        "ip" => (0x0800, None),
        "ipv6" => (0x86dd, None),
        "arp" => (0x0806, None),
        "tcp" => (0x0800, Some(6)),
        "udp" => (0x0800, Some(17)),
        "icmp" => (0x0800, Some(1)),
        "sctp" => (0x0800, Some(132)),
        "tcp6" => (0x86dd, Some(6)),
        "udp6" => (0x86dd, Some(17)),
        "icmp6" => (0x86dd, Some(58)),
        _ => return None,
    })
}

pub(crate) fn parse_num(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// `V` or `V/M`, numbers.
fn num_mask(value: &str, max: u64) -> Option<(u64, u64)> {
    let (v, m) = match value.split_once('/') {
        Some((v, m)) => (parse_num(v)?, parse_num(m)?),
        None => (parse_num(value)?, max),
    };
    (v <= max && m <= max).then_some((v, m))
}

fn mac_mask(value: &str) -> Option<(u64, u64)> {
    let to = |m: [u8; 6]| u64::from_be_bytes([0, 0, m[0], m[1], m[2], m[3], m[4], m[5]]);
    match value.split_once('/') {
        Some((v, m)) => Some((to(parse_mac(v)?), to(parse_mac(m)?))),
        None => Some((to(parse_mac(value)?), 0xffff_ffff_ffff)),
    }
}

fn ipv4_mask(value: &str) -> Option<(u64, u64)> {
    let (addr, mask) = match value.split_once('/') {
        Some((a, m)) => {
            let mask = match m.parse::<u32>() {
                Ok(bits) if bits <= 32 => {
                    if bits == 0 {
                        0
                    } else {
                        u32::MAX << (32 - bits)
                    }
                }
                Ok(_) => return None,
                Err(_) => u32::from(m.parse::<Ipv4Addr>().ok()?),
            };
            (a, mask)
        }
        None => (value, u32::MAX),
    };
    let addr = u32::from(addr.parse::<Ipv4Addr>().ok()?);
    Some((u64::from(addr & mask), u64::from(mask)))
}

fn ipv6_mask(value: &str) -> Option<(u128, u128)> {
    let (addr, bits) = match value.split_once('/') {
        Some((a, b)) => (a, b.parse::<u32>().ok().filter(|b| *b <= 128)?),
        None => (value, 128),
    };
    let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
    Some((u128::from(addr.parse::<Ipv6Addr>().ok()?) & mask, mask))
}

/// `+a-b`-style named flags (value, mask), or a number with a mask up to
/// `max`.
fn named_flags(value: &str, names: &[(&str, u64)], max: u64) -> Option<(u64, u64)> {
    if !value.starts_with(['+', '-']) {
        return num_mask(value, max);
    }
    let (mut v, mut m) = (0, 0);
    let mut rest = value;
    while !rest.is_empty() {
        let set = rest.starts_with('+');
        rest = &rest[1..];
        let end = rest.find(['+', '-']).unwrap_or(rest.len());
        let bit = names.iter().find(|(n, _)| *n == &rest[..end])?.1;
        m |= bit;
        if set {
            v |= bit;
        }
        rest = &rest[end..];
    }
    Some((v, m))
}

/// `+syn-ack`-style TCP flags or a number with a mask.
fn tcp_flags(value: &str) -> Option<(u64, u64)> {
    let names = [
        ("fin", 0x001),
        ("syn", 0x002),
        ("rst", 0x004),
        ("psh", 0x008),
        ("ack", 0x010),
        ("urg", 0x020),
        ("ece", 0x040),
        ("cwr", 0x080),
        ("ns", 0x100),
    ];
    named_flags(value, &names, 0xfff)
}

/// `+trk+est-new`-style connection states, or a number with a mask.
fn ct_state(value: &str) -> Option<(u64, u64)> {
    use crate::conntrack::state;
    let names = [
        ("new", state::NEW.into()),
        ("est", state::EST.into()),
        ("rel", state::REL.into()),
        ("rpl", state::RPL.into()),
        ("inv", state::INV.into()),
        ("trk", state::TRK.into()),
        ("snat", state::SNAT.into()),
        ("dnat", state::DNAT.into()),
    ];
    named_flags(value, &names, 0xff)
}

fn match_field(
    m: Match,
    key: &str,
    value: &str,
    word: &str,
    dl_type: Option<u16>,
    nw_proto: Option<u8>,
    ports: &dyn Fn(&str) -> Option<u16>,
) -> Result<Match, String> {
    let bad = |what: &str| format!("invalid {key} value in '{word}': {what}");
    let needs_l3 = |ok: &[u16], hint: &str| -> Result<(), String> {
        match dl_type {
            Some(t) if ok.contains(&t) => Ok(()),
            _ => Err(format!(
                "{key} needs {hint} (write e.g. '{}{word}')",
                hint.split(' ').next().unwrap_or("ip").to_owned() + ","
            )),
        }
    };
    let needs_l4 = |ok: &[u8], hint: &str| -> Result<(), String> {
        match nw_proto {
            Some(p) if ok.contains(&p) && matches!(dl_type, Some(0x0800 | 0x86dd)) => Ok(()),
            _ => Err(format!(
                "{key} needs {hint} (write e.g. '{},{word}')",
                hint.split(' ').next().unwrap_or("tcp")
            )),
        }
    };
    Ok(match key {
        "in_port" => {
            let port = parse_num(value).filter(|p| *p <= 0xffff).map(|p| p as u16).or_else(|| ports(value));
            m.with(Field::InPort, u64::from(port.ok_or_else(|| bad("no such port"))?), u64::MAX)
        }
        "dl_src" | "eth_src" => {
            let (v, mk) =
                mac_mask(value).ok_or_else(|| bad("a MAC such as 02:00:00:00:00:01[/ff:ff:ff:ff:ff:ff]"))?;
            m.with(Field::DlSrc, v, mk)
        }
        "dl_dst" | "eth_dst" => {
            let (v, mk) =
                mac_mask(value).ok_or_else(|| bad("a MAC such as 02:00:00:00:00:01[/ff:ff:ff:ff:ff:ff]"))?;
            m.with(Field::DlDst, v, mk)
        }
        "dl_vlan" => {
            // 0xffff means "no tag", as in ovs-ofctl.
            let v = parse_num(value)
                .filter(|v| *v <= 4095 || *v == 0xffff)
                .ok_or_else(|| bad("0 to 4095, or 0xffff for untagged"))?;
            if v == 0xffff {
                m.with(Field::VlanTci, 0, 0x1fff)
            } else {
                m.with(Field::VlanTci, 0x1000 | v, 0x1fff)
            }
        }
        "dl_vlan_pcp" => {
            let v = parse_num(value).filter(|v| *v <= 7).ok_or_else(|| bad("0 to 7"))?;
            m.with(Field::VlanTci, 0x1000 | (v << 13), 0xf000)
        }
        "vlan_tci" => {
            let (v, mk) = num_mask(value, 0xffff).ok_or_else(|| bad("a 16-bit value[/mask]"))?;
            m.with(Field::VlanTci, v, mk)
        }
        "nw_src" | "ip_src" | "arp_spa" | "nw_dst" | "ip_dst" | "arp_tpa" => {
            needs_l3(&[0x0800, 0x0806], "ip or arp")?;
            let (v, mk) = ipv4_mask(value).ok_or_else(|| bad("an IPv4 address[/prefix or /mask]"))?;
            let field =
                if matches!(key, "nw_src" | "ip_src" | "arp_spa") { Field::NwSrc } else { Field::NwDst };
            m.with(field, v, mk)
        }
        "ipv6_src" | "ipv6_dst" => {
            needs_l3(&[0x86dd], "ipv6")?;
            let (v, mk) = ipv6_mask(value).ok_or_else(|| bad("an IPv6 address[/prefix]"))?;
            let (hi, lo) = if key == "ipv6_src" {
                (Field::Ipv6SrcHi, Field::Ipv6SrcLo)
            } else {
                (Field::Ipv6DstHi, Field::Ipv6DstLo)
            };
            m.with(hi, (v >> 64) as u64, (mk >> 64) as u64).with(lo, v as u64, mk as u64)
        }
        "nw_tos" => {
            needs_l3(&[0x0800, 0x86dd], "ip or ipv6")?;
            m.with(
                Field::NwTos,
                parse_num(value).filter(|v| *v <= 255).ok_or_else(|| bad("0 to 255"))?,
                u64::MAX,
            )
        }
        "nw_ttl" => {
            needs_l3(&[0x0800, 0x86dd], "ip or ipv6")?;
            m.with(
                Field::NwTtl,
                parse_num(value).filter(|v| *v <= 255).ok_or_else(|| bad("0 to 255"))?,
                u64::MAX,
            )
        }
        "arp_sha" | "arp_tha" => {
            needs_l3(&[0x0806], "arp")?;
            let (v, mk) = mac_mask(value).ok_or_else(|| bad("a MAC address"))?;
            m.with(if key == "arp_sha" { Field::ArpSha } else { Field::ArpTha }, v, mk)
        }
        "tp_src" | "tp_dst" | "tcp_src" | "tcp_dst" | "udp_src" | "udp_dst" => {
            needs_l4(&[6, 17, 132], "tcp, udp or sctp")?;
            let (v, mk) = num_mask(value, 0xffff).ok_or_else(|| bad("a port 0 to 65535[/mask]"))?;
            m.with(if key.ends_with("src") { Field::TpSrc } else { Field::TpDst }, v, mk)
        }
        "tcp_flags" => {
            needs_l4(&[6], "tcp")?;
            let (v, mk) = tcp_flags(value).ok_or_else(|| bad("flags such as +syn-ack, or a value/mask"))?;
            m.with(Field::TcpFlags, v, mk)
        }
        "icmp_type" | "icmp_code" | "icmpv6_type" | "icmpv6_code" => {
            needs_l4(&[1, 58], "icmp or icmp6")?;
            let v = parse_num(value).filter(|v| *v <= 255).ok_or_else(|| bad("0 to 255"))?;
            m.with(if key.ends_with("type") { Field::TpSrc } else { Field::TpDst }, v, u64::MAX)
        }
        "metadata" => {
            let (v, mk) = num_mask(value, u64::MAX).ok_or_else(|| bad("a 64-bit value[/mask]"))?;
            m.with(Field::Metadata, v, mk)
        }
        "tun_id" | "tunnel_id" => {
            let (v, mk) = num_mask(value, u64::MAX).ok_or_else(|| bad("a 64-bit value[/mask]"))?;
            m.with(Field::TunId, v, mk)
        }
        "tun_src" | "tun_dst" => {
            let (v, mk) = ipv4_mask(value).ok_or_else(|| bad("an IPv4 address[/prefix or /mask]"))?;
            m.with(if key == "tun_src" { Field::TunSrc } else { Field::TunDst }, v, mk)
        }
        "ct_state" => {
            let (v, mk) = ct_state(value).ok_or_else(|| {
                bad("flags such as +trk+est-new (new, est, rel, rpl, inv, trk, snat, dnat), or a value/mask")
            })?;
            m.with(Field::CtState, v, mk)
        }
        "ct_zone" => m.with(
            Field::CtZone,
            parse_num(value).filter(|z| *z <= 0xffff).ok_or_else(|| bad("a zone 0 to 65535"))?,
            u64::MAX,
        ),
        "ct_mark" => {
            let (v, mk) = num_mask(value, u64::from(u32::MAX)).ok_or_else(|| bad("a 32-bit value[/mask]"))?;
            m.with(Field::CtMark, v, mk)
        }
        _ if register(key).is_some() => {
            let (v, mk) = num_mask(value, u64::from(u32::MAX)).ok_or_else(|| bad("a 32-bit value[/mask]"))?;
            m.with(register(key).expect("checked"), v, mk)
        }
        _ => return Err(format!("unknown field '{key}' (in '{word}')")),
    })
}

/// Splits the action list on commas outside parentheses.
fn split_actions(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(text[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(text[start..].trim());
    out.into_iter().filter(|a| !a.is_empty()).collect()
}

fn mac_value(s: &str) -> Option<u64> {
    parse_mac(s).map(|m| u64::from_be_bytes([0, 0, m[0], m[1], m[2], m[3], m[4], m[5]]))
}

/// `reg0`..`reg7`, and their NXM names `NXM_NX_REG0`...
fn register(name: &str) -> Option<Field> {
    let n = name.strip_prefix("reg").or_else(|| name.strip_prefix("NXM_NX_REG"))?;
    let n: u8 = n.parse().ok().filter(|n| *n < 8)?;
    Some(Field::Reg(n))
}

/// A field as `load` and `move` name it: its ovs-ofctl name or NXM name.
fn field_by_name(name: &str) -> Option<Field> {
    Some(match name {
        "in_port" | "NXM_OF_IN_PORT" => Field::InPort,
        "eth_src" | "dl_src" | "NXM_OF_ETH_SRC" => Field::DlSrc,
        "eth_dst" | "dl_dst" | "NXM_OF_ETH_DST" => Field::DlDst,
        "eth_type" | "dl_type" | "NXM_OF_ETH_TYPE" => Field::DlType,
        "vlan_tci" | "NXM_OF_VLAN_TCI" => Field::VlanTci,
        "ip_src" | "nw_src" | "NXM_OF_IP_SRC" | "arp_spa" | "NXM_OF_ARP_SPA" => Field::NwSrc,
        "ip_dst" | "nw_dst" | "NXM_OF_IP_DST" | "arp_tpa" | "NXM_OF_ARP_TPA" => Field::NwDst,
        "ip_proto" | "nw_proto" | "NXM_OF_IP_PROTO" | "arp_op" | "NXM_OF_ARP_OP" => Field::NwProto,
        "nw_tos" | "NXM_OF_IP_TOS" => Field::NwTos,
        "nw_ttl" | "NXM_NX_IP_TTL" => Field::NwTtl,
        "tcp_src" | "udp_src" | "tp_src" | "NXM_OF_TCP_SRC" | "NXM_OF_UDP_SRC" => Field::TpSrc,
        "tcp_dst" | "udp_dst" | "tp_dst" | "NXM_OF_TCP_DST" | "NXM_OF_UDP_DST" => Field::TpDst,
        "arp_sha" | "NXM_NX_ARP_SHA" => Field::ArpSha,
        "arp_tha" | "NXM_NX_ARP_THA" => Field::ArpTha,
        "tun_id" | "tunnel_id" | "NXM_NX_TUN_ID" => Field::TunId,
        "tun_src" | "NXM_NX_TUN_IPV4_SRC" => Field::TunSrc,
        "tun_dst" | "NXM_NX_TUN_IPV4_DST" => Field::TunDst,
        "metadata" | "OXM_OF_METADATA" => Field::Metadata,
        _ => register(name)?,
    })
}

/// Fields the switch can write: those it can rewrite in a frame, and the
/// pipeline's own state. `nw_proto` is writable as ARP's opcode only (an
/// IP packet's protocol is never rewritten: the write is skipped).
fn writable(field: Field) -> bool {
    matches!(
        field,
        Field::DlSrc
            | Field::DlDst
            | Field::VlanTci
            | Field::NwSrc
            | Field::NwDst
            | Field::NwProto
            | Field::ArpSha
            | Field::ArpTha
            | Field::TpSrc
            | Field::TpDst
            | Field::TunId
            | Field::TunSrc
            | Field::TunDst
            | Field::Metadata
            | Field::Reg(_)
    )
}

/// `FIELD[]`, `FIELD[n]` or `FIELD[a..b]`: (field, shift, bits).
fn parse_subfield(text: &str) -> Result<(Field, u32, u32), String> {
    let (name, range) =
        text.trim().strip_suffix(']').and_then(|t| t.split_once('[')).ok_or_else(|| {
            format!("'{text}' is not a field with a bit range such as reg0[] or reg0[0..15]")
        })?;
    let field = field_by_name(name).ok_or_else(|| format!("unknown field '{name}' in '{text}'"))?;
    let width = field.bits();
    let (start, end) = if range.is_empty() {
        (0, width - 1)
    } else {
        let parse = |s: &str| s.trim().parse::<u32>().map_err(|_| format!("bad bit range in '{text}'"));
        match range.split_once("..") {
            Some((a, b)) => (parse(a)?, parse(b)?),
            None => (parse(range)?, parse(range)?),
        }
    };
    if start > end || end >= width {
        return Err(format!("bits {start}..{end} do not fit {name}, which has {width} bits (in '{text}')"));
    }
    Ok((field, start, end - start + 1))
}

fn bit_mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

/// `ct(commit,zone=N,table=T,nat[(src|dst=RANGE)],exec(set_field:V[/M]->ct_mark))`.
fn ct(args: &str) -> Result<Action, String> {
    let mut request = crate::conntrack::CtRequest::default();
    let mut table = None;
    for arg in split_actions(args) {
        match arg.split_once(['=', '(']) {
            None if arg == "commit" => request.commit = true,
            None if arg == "nat" => request.nat = true,
            Some(("zone", z)) => {
                request.zone = parse_num(z).filter(|z| *z <= 0xffff).ok_or("zone is 0 to 65535")? as u16
            }
            Some(("table", t)) => {
                table = Some(parse_num(t).filter(|t| *t <= 254).ok_or("table is 0 to 254")? as u8)
            }
            Some(("nat", range)) => {
                request.nat = true;
                let range = range.strip_suffix(')').ok_or("nat( has no closing parenthesis")?;
                request.nat_range = Some(super::actions::parse_nat(range)?);
            }
            Some(("exec", inner)) => {
                let inner = inner.strip_suffix(')').ok_or("exec( has no closing parenthesis")?;
                let (value, _) = inner
                    .strip_prefix("set_field:")
                    .and_then(|a| a.split_once("->"))
                    .filter(|(_, f)| f.trim() == "ct_mark")
                    .ok_or("exec() takes set_field:VALUE[/MASK]->ct_mark")?;
                let (v, m) = num_mask(value.trim(), u64::from(u32::MAX)).ok_or("ct_mark takes 32 bits")?;
                request.set_mark = Some((v as u32, m as u32));
            }
            _ => return Err(format!("unknown ct argument '{arg}'")),
        }
    }
    if request.nat_range.is_some() && !request.commit {
        return Err("nat(src=...) or nat(dst=...) needs commit".into());
    }
    if request.set_mark.is_some() && !request.commit {
        return Err("exec(set_field:...->ct_mark) needs commit".into());
    }
    Ok(Action::Ct { request, table })
}

/// `load:VALUE->DST[a..b]`.
fn load(arg: &str) -> Result<Action, String> {
    let (value, dst) = arg.split_once("->").ok_or("write load:VALUE->FIELD[a..b]")?;
    let (field, shift, bits) = parse_subfield(dst)?;
    if !writable(field) {
        return Err(format!("{} cannot be written", field.name()));
    }
    let value = parse_num(value).ok_or_else(|| format!("'{value}' is not a number"))?;
    if value & !bit_mask(bits) != 0 {
        return Err(format!("{value:#x} does not fit in {bits} bits"));
    }
    Ok(Action::Load { field, value: value << shift, mask: bit_mask(bits) << shift })
}

/// `move:SRC[a..b]->DST[c..d]`.
fn move_bits(arg: &str) -> Result<Action, String> {
    let (src, dst) = arg.split_once("->").ok_or("write move:SRC[a..b]->DST[c..d]")?;
    let (src, src_shift, src_bits) = parse_subfield(src)?;
    let (dst, dst_shift, bits) = parse_subfield(dst)?;
    if !writable(dst) {
        return Err(format!("{} cannot be written", dst.name()));
    }
    if src_bits != bits {
        return Err(format!("the source has {src_bits} bits and the destination {bits}: they must be equal"));
    }
    Ok(Action::Move { src, src_shift, dst, dst_shift, bits })
}

/// Writes the DSCP bits of the TOS byte (`tos`, already in place: a
/// multiple of 4) and keeps its ECN bits, as OVS's `mod_nw_tos` does: the
/// flow key's `nw_tos` is the whole byte, so this is a partial load.
fn dscp_bits(tos: u64) -> Action {
    Action::Load { field: Field::NwTos, value: tos, mask: 0xfc }
}

/// `set_field:VALUE->FIELD` for the fields the switch can rewrite.
fn set_field(value: &str, field: &str) -> Option<Action> {
    let ipv4 = || value.parse::<Ipv4Addr>().ok().map(|a| u64::from(u32::from(a)));
    let port = || parse_num(value).filter(|p| *p <= 0xffff);
    Some(match field {
        "eth_src" | "dl_src" => Action::SetField(Field::DlSrc, mac_value(value)?),
        "eth_dst" | "dl_dst" => Action::SetField(Field::DlDst, mac_value(value)?),
        "ip_src" | "nw_src" => Action::SetField(Field::NwSrc, ipv4()?),
        "ip_dst" | "nw_dst" => Action::SetField(Field::NwDst, ipv4()?),
        "tcp_src" | "udp_src" | "tp_src" => Action::SetField(Field::TpSrc, port()?),
        "tcp_dst" | "udp_dst" | "tp_dst" => Action::SetField(Field::TpDst, port()?),
        // OVS writes vlan_vid with the "present" bit 0x1000; a bare VID means the same.
        "vlan_vid" => {
            Action::SetField(Field::VlanTci, 0x1000 | (parse_num(value).filter(|v| *v <= 0x1fff)? & 0x0fff))
        }
        "nw_tos" => dscp_bits(parse_num(value).filter(|t| *t <= 0xff && t % 4 == 0)?),
        "ip_dscp" => dscp_bits(parse_num(value).filter(|d| *d <= 63)? << 2),
        "nw_ecn" | "ip_ecn" => {
            Action::Load { field: Field::NwTos, value: parse_num(value).filter(|e| *e <= 3)?, mask: 0x03 }
        }
        "nw_ttl" => Action::SetField(Field::NwTtl, parse_num(value).filter(|t| *t <= 255)?),
        "metadata" => Action::SetField(Field::Metadata, parse_num(value)?),
        "tun_id" | "tunnel_id" => Action::SetField(Field::TunId, parse_num(value)?),
        "tun_src" => Action::SetField(Field::TunSrc, ipv4()?),
        "tun_dst" => Action::SetField(Field::TunDst, ipv4()?),
        _ => Action::SetField(register(field)?, parse_num(value).filter(|v| *v <= u64::from(u32::MAX))?),
    })
}

pub fn parse_actions(text: &str, ports: &dyn Fn(&str) -> Option<u16>) -> Result<Vec<Action>, String> {
    let mut actions = Vec::new();
    let items = split_actions(text);
    for item in &items {
        let lower = item.to_ascii_lowercase();
        let (name, arg) = match item.find([':', '(']) {
            // NAME(ARGS): exactly one closing parenthesis ends it.
            Some(i) if item[i..].starts_with('(') => {
                let args = &item[i + 1..];
                (item[..i].to_ascii_lowercase(), Some(args.strip_suffix(')').unwrap_or(args)))
            }
            Some(i) => (item[..i].to_ascii_lowercase(), Some(&item[i + 1..])),
            None => (lower.clone(), None),
        };
        let bad = |what: &str| format!("invalid action '{item}': {what}");
        let port = |p: &str| parse_num(p).filter(|n| *n <= 0xffff).map(|n| n as u16).or_else(|| ports(p));
        let action = match (name.as_str(), arg) {
            ("drop", None) => {
                if items.len() > 1 {
                    return Err("'drop' must be the only action".into());
                }
                continue;
            }
            ("normal", None) => Action::Normal,
            ("route", None) => Action::Route,
            ("flood", None) => Action::Flood,
            ("all", None) => Action::All,
            ("in_port", None) => Action::InPort,
            ("output", Some(p)) => Action::Output(port(p).ok_or_else(|| bad("no such port"))?),
            ("mod_dl_src", Some(v)) => {
                Action::SetField(Field::DlSrc, mac_value(v).ok_or_else(|| bad("a MAC address"))?)
            }
            ("mod_dl_dst", Some(v)) => {
                Action::SetField(Field::DlDst, mac_value(v).ok_or_else(|| bad("a MAC address"))?)
            }
            ("mod_nw_src", Some(v)) => Action::SetField(
                Field::NwSrc,
                u32::from(v.parse::<Ipv4Addr>().map_err(|_| bad("an IPv4 address"))?).into(),
            ),
            ("mod_nw_dst", Some(v)) => Action::SetField(
                Field::NwDst,
                u32::from(v.parse::<Ipv4Addr>().map_err(|_| bad("an IPv4 address"))?).into(),
            ),
            ("mod_tp_src", Some(v)) => Action::SetField(
                Field::TpSrc,
                parse_num(v).filter(|n| *n <= 0xffff).ok_or_else(|| bad("a port"))?,
            ),
            ("mod_tp_dst", Some(v)) => Action::SetField(
                Field::TpDst,
                parse_num(v).filter(|n| *n <= 0xffff).ok_or_else(|| bad("a port"))?,
            ),
            ("mod_vlan_vid", Some(v)) => {
                let vid = parse_num(v).filter(|n| *n <= 4095).ok_or_else(|| bad("a VLAN id, 0 to 4095"))?;
                Action::SetField(Field::VlanTci, 0x1000 | vid)
            }
            ("strip_vlan" | "pop_vlan", None) => Action::SetField(Field::VlanTci, 0),
            ("mod_nw_tos", Some(v)) => {
                dscp_bits(parse_num(v).filter(|t| *t <= 0xff && t % 4 == 0).ok_or_else(|| {
                    bad("a TOS whose two ECN bits are 0: a multiple of 4 from 0 to 252 (DSCP 46 is 184)")
                })?)
            }
            ("mod_nw_ttl", Some(v)) => Action::SetField(
                Field::NwTtl,
                parse_num(v).filter(|t| *t <= 255).ok_or_else(|| bad("a TTL from 0 to 255"))?,
            ),
            ("dec_ttl", None) => Action::DecTtl,
            ("push_vlan", Some(tpid)) => Action::PushVlan(
                parse_num(tpid)
                    .filter(|t| [0x8100, 0x88a8].contains(t))
                    .ok_or_else(|| bad("push_vlan takes 0x8100 or 0x88a8"))? as u16,
            ),
            ("ct", Some(arg)) => ct(arg).map_err(|e| bad(&e))?,
            ("ct", None) => Action::Ct { request: Default::default(), table: None },
            ("load", Some(arg)) => load(arg).map_err(|e| bad(&e))?,
            ("move", Some(arg)) => move_bits(arg).map_err(|e| bad(&e))?,
            ("set_tunnel" | "set_tunnel64", Some(v)) => {
                let id = parse_num(v).ok_or_else(|| bad("a tunnel id"))?;
                if name == "set_tunnel" && id > u64::from(u32::MAX) {
                    return Err(bad("set_tunnel takes 32 bits; use set_tunnel64"));
                }
                Action::SetField(Field::TunId, id)
            }
            ("set_field", Some(arg)) => {
                let (value, field) =
                    arg.split_once("->").ok_or_else(|| bad("write set_field:VALUE->FIELD"))?;
                set_field(value.trim(), field.trim())
                    .ok_or_else(|| bad("an unknown field, or a value that does not fit it"))?
            }
            ("resubmit", Some(arg)) => {
                // resubmit:PORT is not supported; resubmit(,TABLE) is.
                let table = arg.strip_prefix(',').ok_or_else(|| bad("write resubmit(,TABLE)"))?;
                Action::Resubmit(
                    parse_num(table).filter(|t| *t <= 254).ok_or_else(|| bad("a table 0 to 254"))? as u8,
                )
            }
            ("goto_table", Some(t)) => Action::GotoTable(
                parse_num(t).filter(|t| *t <= 254).ok_or_else(|| bad("a table 0 to 254"))? as u8,
            ),
            (n, None) if port(n).is_some() && parse_num(n).is_some() => {
                Action::Output(port(n).expect("checked"))
            }
            _ => return Err(format!("unknown action '{item}'")),
        };
        actions.push(action);
    }
    Ok(actions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::any;

    fn ports(name: &str) -> Option<u16> {
        match name {
            "p1" => Some(1),
            "p2" => Some(2),
            _ => None,
        }
    }

    fn parse(text: &str) -> Result<FlowSpec, String> {
        parse_flow(text, &ports)
    }

    /// Each flow is refused with an error that mentions what it must.
    fn assert_refused(cases: &[(&str, &str)]) {
        for (text, expected) in cases {
            let err = parse(text).unwrap_err();
            assert!(err.contains(expected), "{text:?} gave {err:?}, expected it to mention {expected:?}");
        }
    }

    #[test]
    fn a_typical_acl() {
        let f =
            parse("table=1,priority=100,in_port=p1,tcp,nw_src=198.18.0.0/24,tp_dst=80,actions=drop").unwrap();
        assert_eq!((f.table, f.priority), (1, 100));
        assert!(f.actions.is_empty());
        let expected = Match::default()
            .with(Field::DlType, 0x0800, u64::MAX)
            .with(Field::NwProto, 6, u64::MAX)
            .with(Field::InPort, 1, u64::MAX)
            .with(Field::NwSrc, 0xc612_0000, 0xffff_ff00)
            .with(Field::TpDst, 80, u64::MAX);
        assert_eq!(f.matcher, expected);
    }

    #[test]
    fn actions_parse_in_order() {
        let f = parse("priority=5 dl_vlan=10 actions=mod_vlan_vid:20,mod_dl_src:02:00:00:00:00:01,resubmit(,2),output:p2,NORMAL").unwrap();
        assert_eq!(
            f.actions,
            vec![
                Action::SetField(Field::VlanTci, 0x1014),
                Action::SetField(Field::DlSrc, 0x0200_0000_0001),
                Action::Resubmit(2),
                Action::Output(2),
                Action::Normal,
            ]
        );
        assert_eq!(parse("actions=3").unwrap().actions, vec![Action::Output(3)]);
        assert_eq!(parse("actions=goto_table:4").unwrap().actions, vec![Action::GotoTable(4)]);
        assert_eq!(
            parse("actions=set_field:4196->vlan_vid,set_field:198.18.0.9->ip_dst,dec_ttl").unwrap().actions,
            vec![
                Action::SetField(Field::VlanTci, 0x1064),
                Action::SetField(Field::NwDst, 0xc612_0009),
                Action::DecTtl
            ]
        );
        assert!(parse("actions=set_field:1->reg9").unwrap_err().contains("set_field:1->reg9"));
        assert_eq!(parse("priority=0,actions=NORMAL").unwrap().priority, 0);
        assert_eq!(parse("actions=drop").unwrap().priority, DEFAULT_PRIORITY);
    }

    #[test]
    fn tos_and_ttl_actions_write_dscp_keep_ecn_and_refuse_what_does_not_fit() {
        let f = parse("ip,actions=mod_nw_tos:184,mod_nw_ttl:9,set_field:10->ip_dscp,set_field:1->nw_ecn")
            .unwrap();
        assert_eq!(
            f.actions,
            vec![
                Action::Load { field: Field::NwTos, value: 184, mask: 0xfc },
                Action::SetField(Field::NwTtl, 9),
                Action::Load { field: Field::NwTos, value: 40, mask: 0xfc },
                Action::Load { field: Field::NwTos, value: 1, mask: 0x03 },
            ]
        );
        let bad = parse("ip,actions=mod_nw_tos:3").unwrap_err();
        assert!(bad.contains("multiple of 4"), "{bad}");
        assert!(parse("ip,actions=mod_nw_ttl:256").is_err());
        assert!(parse("ip,actions=set_field:64->ip_dscp").is_err());
    }

    #[test]
    fn registers_tunnel_ids_load_move_and_push_vlan() {
        let f = parse(
            "reg0=5,reg7=0x10/0xf0,tun_id=0x10/0xff,cookie=0x3,actions=load:0x5->NXM_NX_REG0[0..7],\
             move:NXM_OF_IN_PORT[]->reg1[16..31],push_vlan:0x8100,set_field:10->vlan_vid,set_tunnel:42,\
             set_field:7->reg3,load:1->reg2[3]",
        )
        .unwrap();
        assert_eq!(
            (Field::Reg(0).get(&f.matcher.value), Field::Reg(0).get(&f.matcher.mask)),
            (5, 0xffff_ffff)
        );
        assert_eq!((Field::Reg(7).get(&f.matcher.value), Field::Reg(7).get(&f.matcher.mask)), (0x10, 0xf0));
        assert_eq!(Field::TunId.get(&f.matcher.mask), 0xff);
        assert_eq!((f.cookie, f.cookie_mask), (3, 0));
        assert_eq!(
            f.actions,
            vec![
                Action::Load { field: Field::Reg(0), value: 5, mask: 0xff },
                Action::Move {
                    src: Field::InPort,
                    src_shift: 0,
                    dst: Field::Reg(1),
                    dst_shift: 16,
                    bits: 16
                },
                Action::PushVlan(0x8100),
                Action::SetField(Field::VlanTci, 0x100a),
                Action::SetField(Field::TunId, 42),
                Action::SetField(Field::Reg(3), 7),
                Action::Load { field: Field::Reg(2), value: 8, mask: 8 },
            ]
        );
        let f = parse("cookie=0x1200/0xff00,actions=drop").unwrap();
        assert_eq!((f.cookie, f.cookie_mask), (0x1200, 0xff00));
        let f = parse("cookie=0x7/-1,actions=drop").unwrap();
        assert_eq!((f.cookie, f.cookie_mask), (7, u64::MAX), "-1 is the exact mask");
        assert_eq!(
            parse("actions=move:eth_src[]->eth_dst[],set_tunnel64:0x100000000").unwrap().actions,
            vec![
                Action::Move { src: Field::DlSrc, src_shift: 0, dst: Field::DlDst, dst_shift: 0, bits: 48 },
                Action::SetField(Field::TunId, 0x1_0000_0000),
            ]
        );
    }

    #[test]
    fn ct_actions_and_ct_matches() {
        use crate::conntrack::{state, CtRequest, Nat, NatRange};
        let f = parse("table=1,ct_state=+trk+est-new,ct_zone=5,ct_mark=0x1/0xff,actions=ct(commit,zone=5,table=2,nat(src=198.19.0.1-198.19.0.2:1024-2047),exec(set_field:0x7->ct_mark)),output:2").unwrap();
        assert_eq!(
            (Field::CtState.get(&f.matcher.value), Field::CtState.get(&f.matcher.mask)),
            (u64::from(state::TRK | state::EST), u64::from(state::TRK | state::EST | state::NEW))
        );
        assert_eq!((Field::CtZone.get(&f.matcher.value), Field::CtMark.get(&f.matcher.mask)), (5, 0xff));
        let request = CtRequest {
            zone: 5,
            commit: true,
            nat: true,
            nat_range: Some(Nat::Src(NatRange {
                addr_min: 0xc613_0001,
                addr_max: 0xc613_0002,
                port_min: 1024,
                port_max: 2047,
            })),
            set_mark: Some((7, u32::MAX)),
        };
        assert_eq!(f.actions, vec![Action::Ct { request, table: Some(2) }, Action::Output(2)]);
        assert_eq!(
            f.actions[0].to_string(),
            "ct(commit,zone=5,table=2,exec(set_field:0x7/0xffffffff->ct_mark),nat(src=198.19.0.1-198.19.0.2:1024-2047))"
        );
        let plain = parse("actions=ct(nat,table=1)").unwrap();
        let expected = CtRequest { nat: true, ..CtRequest::default() };
        assert_eq!(plain.actions, vec![Action::Ct { request: expected, table: Some(1) }]);
        assert_refused(&[
            ("actions=ct(nat(src=1.2.3.4))", "needs commit"),
            ("actions=ct(commit,nat(src=1.2.3))", "not an IPv4 address"),
            ("actions=ct(commit,nat(dst=1.2.3.4:0))", "port 1-65535"),
            ("actions=ct(commit,bogus)", "unknown ct argument 'bogus'"),
            ("ct_state=+trk+nope,actions=drop", "'ct_state=+trk+nope'"),
        ]);
    }

    #[test]
    fn bad_loads_and_moves_say_why() {
        let cases = [
            ("actions=load:0x100->reg0[0..7]", "does not fit in 8 bits"),
            ("actions=load:1->reg0[30..40]", "do not fit reg0"),
            ("actions=load:1->NXM_OF_ETH_TYPE[]", "dl_type cannot be written"),
            ("actions=load:1->reg9[]", "unknown field 'reg9'"),
            ("actions=load:1->reg0", "bit range"),
            ("actions=move:reg0[0..7]->reg1[0..15]", "must be equal"),
            ("actions=push_vlan:0x0800", "0x8100 or 0x88a8"),
            ("actions=set_tunnel:0x100000000", "set_tunnel64"),
            ("reg8=1,actions=drop", "unknown field 'reg8'"),
            ("reg0=0x100000000,actions=drop", "32-bit"),
        ];
        assert_refused(&cases);
    }

    #[test]
    fn masks_prefixes_and_flags() {
        let f = parse("dl_dst=01:00:00:00:00:00/01:00:00:00:00:00,tcp,tcp_flags=+syn-ack,tp_src=0x1000/0xf000,actions=drop").unwrap();
        assert_eq!(Field::DlDst.get(&f.matcher.mask), 0x0100_0000_0000);
        assert_eq!(
            (Field::TcpFlags.get(&f.matcher.value), Field::TcpFlags.get(&f.matcher.mask)),
            (0x002, 0x012)
        );
        assert_eq!(Field::TpSrc.get(&f.matcher.mask), 0xf000);
        let f = parse("ip,nw_dst=198.18.7.9/255.255.0.0,actions=drop").unwrap();
        assert_eq!(Field::NwDst.get(&f.matcher.value), 0xc612_0000);
        let f = parse("ipv6,ipv6_src=2001:db8::/32,actions=drop").unwrap();
        assert_eq!(Field::Ipv6SrcHi.get(&f.matcher.mask), 0xffff_ffff_0000_0000);
    }

    #[test]
    fn errors_name_the_offending_word() {
        let cases = [
            ("nw_srcc=1.2.3.4,actions=drop", "unknown field 'nw_srcc'"),
            ("nw_src=1.2.3.4,actions=drop", "nw_src needs ip or arp"),
            ("ip,tp_dst=80,actions=drop", "tp_dst needs tcp"),
            ("ip,nw_src=1.2.3,actions=drop", "'nw_src=1.2.3'"),
            ("in_port=nope,actions=drop", "no such port"),
            ("table=300,actions=drop", "'table=300'"),
            ("ip", "no actions"),
            ("actions=output:nope", "'output:nope'"),
            ("actions=frobnicate", "unknown action 'frobnicate'"),
            ("actions=drop,output:1", "only action"),
            ("tcp=1,actions=drop", "takes no value"),
        ];
        assert_refused(&cases);
    }

    #[test]
    fn text_keeps_match_and_actions_and_matches_parse_alone() {
        let f = parse("table=2,priority=7,ip,nw_src=198.18.1.0/24,actions=drop").unwrap();
        assert_eq!(f.text, "ip,nw_src=198.18.1.0/24 actions=drop");
        assert_eq!(parse("priority=0,actions=NORMAL").unwrap().text, "actions=NORMAL");
        let (m, table_given) = parse_match("table=1,in_port=p2", &ports).unwrap();
        assert!(table_given);
        assert_eq!((m.table, Field::InPort.get(&m.matcher.value)), (1, 2));
        assert!(parse_match("in_port=1,actions=drop", &ports).is_err());
    }

    #[test]
    fn untagged_and_priority_matches() {
        let f = parse("dl_vlan=0xffff,actions=drop").unwrap();
        assert_eq!((Field::VlanTci.get(&f.matcher.value), Field::VlanTci.get(&f.matcher.mask)), (0, 0x1fff));
        let f = parse("dl_vlan_pcp=5,actions=drop").unwrap();
        assert_eq!(Field::VlanTci.get(&f.matcher.value), 0x1000 | (5 << 13));
    }

    proptest::proptest! {
        // Whatever a user types, the parser answers with a flow or an error.
        #[test]
        fn any_text_parses_or_errs(text in "[a-zA-Z_0-9=:,./()+\\-\\[\\]> x]{0,80}") {
            let _ = parse(&text);
        }

        // Load and move arguments: bit ranges at and past the edges.
        #[test]
        fn any_load_or_move_parses_or_errs(
            field in "(reg[0-9]|NXM_NX_REG[0-9]|eth_src|in_port|tun_id|vlan_tci|nw_ttl|xx)",
            a in 0u32..70, b in 0u32..70, value in any::<u64>(), move_it in any::<bool>(),
        ) {
            let text = if move_it {
                format!("actions=move:{field}[{a}..{b}]->reg1[{b}..{a}]")
            } else {
                format!("actions=load:{value:#x}->{field}[{a}..{b}]")
            };
            if let Ok(f) = parse(&text) {
                for action in &f.actions {
                    let _ = action.to_string();
                }
            }
        }

        #[test]
        fn any_bytes_as_text_parse_or_err(text in any::<String>()) {
            let _ = parse(&text);
        }
    }
}
