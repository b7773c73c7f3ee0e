//! Per-port VLAN policy, with OVS's semantics (vswitch.xml, Port `vlan_mode`).
//!
//! Every frame is switched within one VLAN, decided at ingress from the
//! port's mode and the frame's outer tag; VLAN 0 is the untagged network of
//! trunk ports. A frame is only ever sent to ports that carry its VLAN, and
//! egress decides whether it leaves tagged:
//!
//! | mode | ingress untagged / VID 0 | ingress tagged VID v | egress VLAN v |
//! |---|---|---|---|
//! | access (tag t) | VLAN t | dropped | untagged, only if v = t |
//! | trunk (trunks T) | VLAN 0, if 0 in T | VLAN v, if v in T | tagged v (untagged if v = 0) |
//! | native-tagged (tag t, trunks T) | VLAN t | VLAN v, if v = t or v in T | tagged v |
//! | native-untagged (tag t, trunks T) | VLAN t | VLAN v, if v = t or v in T | untagged if v = t, else tagged |
//!
//! An empty trunk list means every VLAN. Without `vlan_mode`, a port with a
//! tag is an access port (its trunks are ignored) and one without is a trunk.
//!
//! Threads: a [`PortVlan`] is plain data (`Send` and `Sync`): the control
//! plane builds it from the configuration, the forwarding thread reads it.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VlanMode {
    Access,
    Trunk,
    NativeTagged,
    NativeUntagged,
}

impl VlanMode {
    pub fn parse(s: &str) -> Option<VlanMode> {
        match s {
            "access" => Some(VlanMode::Access),
            "trunk" => Some(VlanMode::Trunk),
            "native-tagged" => Some(VlanMode::NativeTagged),
            "native-untagged" => Some(VlanMode::NativeUntagged),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            VlanMode::Access => "access",
            VlanMode::Trunk => "trunk",
            VlanMode::NativeTagged => "native-tagged",
            VlanMode::NativeUntagged => "native-untagged",
        }
    }
}

impl fmt::Display for VlanMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of the 4096 VLAN ids.
#[derive(Clone, PartialEq, Eq)]
pub struct VlanSet([u64; 64]);

impl VlanSet {
    pub fn from_ids(ids: &[u16]) -> VlanSet {
        let mut set = VlanSet([0; 64]);
        for &id in ids {
            let id = usize::from(id & 0x0fff);
            set.0[id / 64] |= 1 << (id % 64);
        }
        set
    }

    pub fn contains(&self, vid: u16) -> bool {
        let id = usize::from(vid & 0x0fff);
        self.0[id / 64] & (1 << (id % 64)) != 0
    }
}

impl fmt::Debug for VlanSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries((0..4096u16).filter(|&v| self.contains(v))).finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortVlan {
    mode: VlanMode,
    /// The access or native VLAN.
    tag: u16,
    /// `None`: every VLAN.
    trunks: Option<VlanSet>,
}

impl Default for PortVlan {
    fn default() -> Self {
        PortVlan { mode: VlanMode::Trunk, tag: 0, trunks: None }
    }
}

impl PortVlan {
    pub fn new(tag: Option<u16>, trunks: &[u16], mode: Option<VlanMode>) -> PortVlan {
        let mode = mode.unwrap_or(if tag.is_some() { VlanMode::Access } else { VlanMode::Trunk });
        let trunks = (!trunks.is_empty()).then(|| VlanSet::from_ids(trunks));
        PortVlan { mode, tag: tag.unwrap_or(0), trunks }
    }

    pub fn mode(&self) -> VlanMode {
        self.mode
    }

    fn trunks_vlan(&self, vlan: u16) -> bool {
        self.mode != VlanMode::Access && self.trunks.as_ref().is_none_or(|t| t.contains(vlan))
    }

    /// Whether frames of `vlan` may enter or leave through this port.
    pub fn carries(&self, vlan: u16) -> bool {
        match self.mode {
            VlanMode::Access => vlan == self.tag,
            VlanMode::Trunk => self.trunks_vlan(vlan),
            VlanMode::NativeTagged | VlanMode::NativeUntagged => vlan == self.tag || self.trunks_vlan(vlan),
        }
    }

    /// The VLAN a frame received with outer VID `vid` (0 or `None`: untagged
    /// or priority-tagged) belongs to, or `None` if the port refuses it.
    pub fn ingress(&self, vid: Option<u16>) -> Option<u16> {
        let vid = vid.unwrap_or(0);
        match self.mode {
            VlanMode::Access => (vid == 0).then_some(self.tag),
            VlanMode::Trunk => self.carries(vid).then_some(vid),
            VlanMode::NativeTagged | VlanMode::NativeUntagged => {
                if vid == 0 {
                    Some(self.tag)
                } else {
                    self.carries(vid).then_some(vid)
                }
            }
        }
    }

    /// The outer VID a frame of `vlan` leaves with; `None` means untagged.
    /// Only meaningful where [`PortVlan::carries`] holds.
    pub fn egress(&self, vlan: u16) -> Option<u16> {
        let vid = match self.mode {
            VlanMode::Access => 0,
            VlanMode::Trunk | VlanMode::NativeTagged => vlan,
            VlanMode::NativeUntagged => {
                if vlan == self.tag {
                    0
                } else {
                    vlan
                }
            }
        };
        (vid != 0).then_some(vid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_port_takes_untagged_and_priority_tagged_only() {
        let p = PortVlan::new(Some(10), &[], None);
        assert_eq!(p.mode(), VlanMode::Access);
        assert_eq!(p.ingress(None), Some(10));
        assert_eq!(p.ingress(Some(0)), Some(10));
        assert_eq!(p.ingress(Some(10)), None);
        assert!(p.carries(10) && !p.carries(20));
        assert_eq!(p.egress(10), None);
    }

    #[test]
    fn tag_wins_over_trunks_without_a_mode() {
        let p = PortVlan::new(Some(10), &[20], None);
        assert_eq!(p.mode(), VlanMode::Access);
        assert!(!p.carries(20));
    }

    #[test]
    fn trunk_with_list_and_without() {
        let all = PortVlan::new(None, &[], None);
        assert_eq!(all.ingress(None), Some(0));
        assert_eq!(all.ingress(Some(4000)), Some(4000));
        assert_eq!(all.egress(0), None);
        assert_eq!(all.egress(30), Some(30));
        let some = PortVlan::new(None, &[10, 20], None);
        assert_eq!(some.ingress(None), None);
        assert_eq!(some.ingress(Some(20)), Some(20));
        assert_eq!(some.ingress(Some(30)), None);
    }

    #[test]
    fn native_modes_differ_only_at_egress_of_the_native_vlan() {
        let tagged = PortVlan::new(Some(5), &[10], Some(VlanMode::NativeTagged));
        let untagged = PortVlan::new(Some(5), &[10], Some(VlanMode::NativeUntagged));
        for p in [&tagged, &untagged] {
            assert_eq!(p.ingress(None), Some(5));
            assert_eq!(p.ingress(Some(5)), Some(5));
            assert_eq!(p.ingress(Some(10)), Some(10));
            assert_eq!(p.ingress(Some(11)), None);
            assert_eq!(p.egress(10), Some(10));
        }
        assert_eq!(tagged.egress(5), Some(5));
        assert_eq!(untagged.egress(5), None);
    }
}
