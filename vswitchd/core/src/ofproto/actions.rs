//! The actions a flow rule carries, as users write them (`ovs-ofctl`'s
//! syntax is parsed into these by `ofctl` and printed back by their
//! `Display`), with the arguments of `ct(...)` and its NAT ranges.
//!
//! Two types, as OVS has OpenFlow actions and datapath actions: [`Action`]
//! is what a rule says; [`DpAction`] is what a cached decision holds and
//! the executor applies. Translation (`classifier::Tables::translate`)
//! spends the actions that only steer the pipeline (resubmit, goto_table,
//! register and metadata writes; `load` and `move` become `SetField`) and
//! turns the rest into `DpAction`s, so the executor and the caches never
//! see an action they could not run. Depends only on the flow key
//! ([`Field`]); plain data, `Send` and `Sync`.

use crate::ofproto::flow::Field;

/// What the pipeline does to a packet, in order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    Output(u16),
    /// Switch as a learning L2 bridge (evaluated per packet: the MAC table
    /// changes without the cache being touched).
    Normal,
    /// Route as an IPv4 router between the bridge's gateway subnet and its
    /// uplinks (evaluated per packet: the ARP cache changes on its own).
    Route,
    Flood,
    All,
    InPort,
    SetField(Field, u64),
    /// `load:VALUE->FIELD[a..b]`: the bits of `mask` (in the field's own
    /// positions) take `value`'s. Translation turns it into `SetField`.
    Load {
        field: Field,
        value: u64,
        mask: u64,
    },
    /// `move:SRC[a..b]->DST[c..d]`: `bits` bits copied between fields.
    /// Translation reads the source and turns it into `SetField`.
    Move {
        src: Field,
        src_shift: u32,
        dst: Field,
        dst_shift: u32,
        bits: u32,
    },
    /// Sends the packet through the connection tracker; with `table`, the
    /// packet then goes on from that table with `ct_state`, `ct_zone` and
    /// `ct_mark` set (recirculation), while this action list goes on too.
    Ct {
        request: CtRequest,
        table: Option<u8>,
    },
    /// Pushes an outer VLAN tag with this TPID, copying the VID and
    /// priority of the tag already there (zero if none), as OpenFlow says.
    PushVlan(u16),
    /// Decrements the IPv4 TTL or IPv6 hop limit; a packet whose TTL runs
    /// out is dropped (evaluated per packet, like NORMAL).
    DecTtl,
    Resubmit(u8),
    GotoTable(u8),
}

/// What a cached decision holds and the executor applies to a frame, in
/// order: the actions that touch the frame or its path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DpAction {
    Output(u16),
    /// NORMAL, evaluated per packet (the MAC table changes on its own).
    Normal,
    /// The router, evaluated per packet (the ARP cache changes on its own).
    Route,
    Flood,
    All,
    InPort,
    /// A frame field, or the tunnel metadata a tunnel port sends with,
    /// takes this value.
    SetField(Field, u64),
    PushVlan(u16),
    DecTtl,
    /// Through the connection tracker; with `table`, the packet then goes
    /// on from that table (recirculation) while this list goes on too.
    Ct {
        request: CtRequest,
        table: Option<u8>,
    },
}

impl DpAction {
    /// The datapath action a rule's action becomes, if it is one the
    /// executor runs; `None` for those translation spends (resubmit,
    /// goto_table, `load` and `move`, which it turns into `SetField`).
    pub fn from_rule(action: &Action) -> Option<DpAction> {
        Some(match *action {
            Action::Output(port) => DpAction::Output(port),
            Action::Normal => DpAction::Normal,
            Action::Route => DpAction::Route,
            Action::Flood => DpAction::Flood,
            Action::All => DpAction::All,
            Action::InPort => DpAction::InPort,
            Action::SetField(field, value) => DpAction::SetField(field, value),
            Action::PushVlan(tpid) => DpAction::PushVlan(tpid),
            Action::DecTtl => DpAction::DecTtl,
            Action::Ct { request, table } => DpAction::Ct { request, table },
            Action::Load { .. } | Action::Move { .. } | Action::Resubmit(_) | Action::GotoTable(_) => {
                return None
            }
        })
    }

    /// The same action as a rule would write it.
    pub fn to_rule(&self) -> Action {
        match *self {
            DpAction::Output(port) => Action::Output(port),
            DpAction::Normal => Action::Normal,
            DpAction::Route => Action::Route,
            DpAction::Flood => Action::Flood,
            DpAction::All => Action::All,
            DpAction::InPort => Action::InPort,
            DpAction::SetField(field, value) => Action::SetField(field, value),
            DpAction::PushVlan(tpid) => Action::PushVlan(tpid),
            DpAction::DecTtl => Action::DecTtl,
            DpAction::Ct { request, table } => Action::Ct { request, table },
        }
    }
}

/// A decision reads as the rule actions it runs (`ofproto/trace`'s "Final
/// actions", `dump-megaflows`), and compares equal to them.
impl std::fmt::Display for DpAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.to_rule().fmt(f)
    }
}

impl PartialEq<Action> for DpAction {
    fn eq(&self, other: &Action) -> bool {
        DpAction::from_rule(other).as_ref() == Some(self)
    }
}

/// `FIELD[a..b]` in ovs-ofctl's notation (`FIELD[]` for all of it).
fn subfield(field: Field, shift: u32, bits: u32) -> String {
    if shift == 0 && bits == field.bits() {
        format!("{}[]", field.name())
    } else if bits <= 1 {
        format!("{}[{shift}]", field.name())
    } else {
        format!("{}[{}..{}]", field.name(), shift, shift + bits - 1)
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Output(p) => write!(f, "output:{p}"),
            Action::Normal => f.write_str("NORMAL"),
            Action::Route => f.write_str("route"),
            Action::Flood => f.write_str("FLOOD"),
            Action::All => f.write_str("ALL"),
            Action::InPort => f.write_str("IN_PORT"),
            Action::SetField(field, v) => write!(f, "set_field:{v:#x}->{}", field.name()),
            Action::Load { field, value, mask } => {
                let shift = mask.trailing_zeros().min(63);
                let bits = (mask >> shift).trailing_ones();
                write!(f, "load:{:#x}->{}", (value & mask) >> shift, subfield(*field, shift, bits))
            }
            Action::Move { src, src_shift, dst, dst_shift, bits } => {
                write!(f, "move:{}->{}", subfield(*src, *src_shift, *bits), subfield(*dst, *dst_shift, *bits))
            }
            Action::PushVlan(tpid) => write!(f, "push_vlan:{tpid:#06x}"),
            Action::Ct { request, table } => {
                let mut args = Vec::new();
                if request.commit {
                    args.push("commit".to_owned());
                }
                if request.zone != 0 {
                    args.push(format!("zone={}", request.zone));
                }
                if let Some(t) = table {
                    args.push(format!("table={t}"));
                }
                if let Some((value, mask)) = request.set_mark {
                    args.push(format!("exec(set_field:{value:#x}/{mask:#x}->ct_mark)"));
                }
                if request.nat {
                    args.push(match request.nat_range {
                        None => "nat".to_owned(),
                        Some(nat) => format!("nat({})", format_nat(&nat)),
                    });
                }
                write!(f, "ct({})", args.join(","))
            }
            Action::DecTtl => f.write_str("dec_ttl"),
            Action::Resubmit(t) => write!(f, "resubmit(,{t})"),
            Action::GotoTable(t) => write!(f, "goto_table:{t}"),
        }
    }
}

/// Addresses `addr_min..=addr_max`, ports `port_min..=port_max` (0..=0:
/// keep the port unless it collides).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NatRange {
    pub addr_min: u32,
    pub addr_max: u32,
    pub port_min: u16,
    pub port_max: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Nat {
    Src(NatRange),
    Dst(NatRange),
}

/// What the `ct` action asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct CtRequest {
    pub zone: u16,
    /// Create the entry if the packet starts a connection.
    pub commit: bool,
    /// `nat`: translate packets of connections that have a translation.
    pub nat: bool,
    /// `nat(src=...)` / `nat(dst=...)`: the translation a committed new
    /// connection gets.
    pub nat_range: Option<Nat>,
    /// `exec(set_field:V/M->ct_mark)` on commit: (value, mask).
    pub set_mark: Option<(u32, u32)>,
}

/// `src=A[-B][:P[-Q]]` or `dst=...`, as ovs-ofctl writes a NAT range.
pub fn format_nat(nat: &Nat) -> String {
    let (dir, r) = match nat {
        Nat::Src(r) => ("src", r),
        Nat::Dst(r) => ("dst", r),
    };
    let addr = |a: u32| std::net::Ipv4Addr::from(a).to_string();
    let mut out = format!("{dir}={}", addr(r.addr_min));
    if r.addr_max != r.addr_min {
        out += &format!("-{}", addr(r.addr_max));
    }
    if r.port_min != 0 {
        out += &format!(":{}", r.port_min);
        if r.port_max != r.port_min {
            out += &format!("-{}", r.port_max);
        }
    }
    out
}

/// Parses what [`format_nat`] writes.
pub fn parse_nat(text: &str) -> Result<Nat, String> {
    let (dir, range) = text.split_once('=').ok_or("write nat(src=IP[-IP][:PORT[-PORT]]) or nat(dst=...)")?;
    let (addrs, ports) = match range.split_once(':') {
        Some((a, p)) => (a, Some(p)),
        None => (range, None),
    };
    let addr = |a: &str| {
        a.trim()
            .parse::<std::net::Ipv4Addr>()
            .map(u32::from)
            .map_err(|_| format!("'{a}' is not an IPv4 address"))
    };
    let (addr_min, addr_max) = match addrs.split_once('-') {
        Some((a, b)) => (addr(a)?, addr(b)?),
        None => (addr(addrs)?, addr(addrs)?),
    };
    let port = |p: &str| {
        p.trim().parse::<u16>().ok().filter(|p| *p != 0).ok_or(format!("'{p}' is not a port 1-65535"))
    };
    let (port_min, port_max) = match ports {
        None => (0, 0),
        Some(p) => match p.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => (port(p)?, port(p)?),
        },
    };
    if addr_min > addr_max || port_min > port_max {
        return Err(format!("the range in '{text}' runs backwards"));
    }
    let range = NatRange { addr_min, addr_max, port_min, port_max };
    match dir.trim() {
        "src" => Ok(Nat::Src(range)),
        "dst" => Ok(Nat::Dst(range)),
        other => Err(format!("nat takes src= or dst=, not '{other}='")),
    }
}
